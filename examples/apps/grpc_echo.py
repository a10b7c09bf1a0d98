"""A gRPC app for Knative's h2c contract: serves ``sluice.example.Echo`` on ``$PORT``.

Raw-bytes methods (no generated code): ``Unary`` answers ``echo:<request>`` with the
revision in the ``x-revision`` initial metadata, ``Bidi`` echoes each message as it arrives,
``Fail`` ends with NOT_FOUND. Needs ``grpcio`` (``pip install grpcio``: the dev tools have it).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

REVISION = os.environ.get("K_REVISION", "")


def unary(request: bytes, context: Any) -> bytes:
    context.send_initial_metadata((("x-revision", REVISION),))
    return b"echo:" + request


def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    yield from requests


def fail(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, f"no such thing: {request.decode()}")
    raise AssertionError("abort raises")


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("sluice.example.Echo", handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{os.environ.get('PORT', '8080')}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(5))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
