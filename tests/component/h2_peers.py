"""Real HTTP/2 peers for the engine's HTTP/2 tests.

* ``GrpcEcho``: a grpcio server (its own threads, its own HTTP/2 stack) with the four call
  shapes over raw bytes (no generated code): ``Unary`` echoes, ``Server`` streams N
  messages, ``Client`` joins what it got, ``Bidi`` echoes each message as it arrives,
  ``Fail`` ends with NOT_FOUND and a message, ``Hold`` waits until cancelled.
* ``RawH2``: the ``h2`` library as a client over a socket, for what no polite client sends
  (resets in a loop, floods, bad frames); it returns the events the server caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions

HOST = "127.0.0.1"
SERVICE = "sluice.test.Echo"


class GrpcEcho:
    """A grpcio server on 127.0.0.1; ``cancelled`` is set when a ``Hold`` call is cancelled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = self.max_active = 0
        self.cancelled = threading.Event()
        self.started = threading.Event()
        #: ``Gate`` calls wait for it (``started`` is set when one arrives).
        self.gate = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Server": grpc.unary_stream_rpc_method_handler(self._server),
            "Client": grpc.stream_unary_rpc_method_handler(self._client),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(self._fail),
            "Hold": grpc.unary_unary_rpc_method_handler(self._hold),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
            "Gate": grpc.unary_unary_rpc_method_handler(self._gate),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.port = self.server.add_insecure_port(f"{HOST}:0")

    def __enter__(self) -> GrpcEcho:
        self.server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.stop(grace=None).wait(5)

    @staticmethod
    def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"echo:" + request

    def _gate(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.started.set()
        self.gate.wait(10)
        return b"through:" + request

    def _slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.02)
        with self.lock:
            self.active -= 1
        return b"slow:" + request

    @staticmethod
    def _server(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield b"%d" % i

    @staticmethod
    def _client(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return b"|".join(requests)

    @staticmethod
    def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from requests

    @staticmethod
    def _fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())
        raise AssertionError("abort returns only by raising")

    def _hold(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.started.set()
        done = threading.Event()
        context.add_callback(done.set)
        done.wait(10)
        if not context.is_active():
            self.cancelled.set()
        return b"late"


def channel(port: int) -> grpc.Channel:
    """A plaintext (h2c) channel to ``127.0.0.1:port``, no proxy from the environment."""
    return grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.enable_http_proxy", 0)])


def method(ch: grpc.Channel, name: str, shape: str) -> grpc.UnaryUnaryMultiCallable:
    make = {
        "uu": ch.unary_unary,
        "us": ch.unary_stream,
        "su": ch.stream_unary,
        "ss": ch.stream_stream,
    }[shape]
    return make(f"/{SERVICE}/{name}")


class RawH2:
    """An HTTP/2 client that sends what the test says and reports what came back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: list[h2.events.Event] = []
        self.closed = False

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        reader, writer = await asyncio.open_connection(HOST, port)
        client = cls(reader, writer)
        client.h2.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def request(
        self, path: str, end: bool = True, extra: list[tuple[str, str]] | None = None
    ) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "GET" if end else "POST"),
            (":scheme", "http"),
            (":authority", "h"),
            (":path", path),
            *(extra or []),
        ]
        self.h2.send_headers(sid, headers, end_stream=end)
        return sid

    async def read_events(self, timeout: float = 2.0) -> list[h2.events.Event]:
        """Events from whatever arrives within ``timeout`` (stops early at EOF)."""
        got: list[h2.events.Event] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except (TimeoutError, ConnectionError):
                break
            if not data:
                self.closed = True
                break
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            for event in events:
                if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                    # The connection's window is given back, never a stream's: a stream
                    # this client does not read stays stalled, the others go on.
                    self.h2.increment_flow_control_window(event.flow_controlled_length)
            got += events
            await self.flush()
        self.events += got
        return got

    async def until(self, kind: type, timeout: float = 5.0) -> list[h2.events.Event]:
        """Read until an event of ``kind`` arrives (or EOF, or ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        got: list[h2.events.Event] = []
        while not self.closed and loop.time() < deadline:
            got += await self.read_events(min(0.2, deadline - loop.time()))
            if any(isinstance(e, kind) for e in got):
                break
        return got

    async def close(self) -> None:
        self.closed = True
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class GoawayOnce:
    """An h2c upstream (the h2 library as a server) whose first connection answers its first
    request with GOAWAY(last_stream_id=0): "never processed". Later connections answer 200.
    ``connections`` counts the connections, ``served`` the requests answered."""

    def __init__(self) -> None:
        self.connections = 0
        self.served = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, HOST, 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await asyncio.wait_for(reader.read(65536), 10):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        if first:
                            conn.close_connection(last_stream_id=0)
                        else:
                            self.served += 1
                            conn.send_headers(event.stream_id, [(":status", "200")])
                            conn.send_data(event.stream_id, b"second try", end_stream=True)
                writer.write(conn.data_to_send())
                if first and conn.state_machine.state.name == "CLOSED":
                    break
        except (TimeoutError, ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()
