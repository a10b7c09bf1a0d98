"""A raw HTTP/1.1 client for the conformance cases: exact bytes out, every header back.

Each request is one connection with ``Connection: close`` (unless the case writes its own
bytes), read to EOF under a timeout, so both sidecars see byte-identical requests and no
connection reuse blurs a comparison. ``Response.comparable`` is the normalisation every
case uses: header names lower-cased (Go canonicalises them, Sluice keeps the app's case),
``Date`` dropped (a clock), order ignored (Go writes headers sorted; Sluice keeps the
app's order).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HOST = "hello.default.svc.cluster.local"
TIMEOUT_S = 10.0
#: Header names whose values are clocks, dropped before comparing.
VOLATILE = frozenset({"date"})


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    def comparable(self) -> tuple[int, list[tuple[str, str]], bytes]:
        heads = sorted((k.lower(), v) for k, v in self.headers if k.lower() not in VOLATILE)
        return self.status, heads, self.body

    def json(self) -> Any:
        return json.loads(self.body)


def app_saw(resp: Response, drop: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The request headers the app's ``/headers`` route received: lower-cased, sorted."""
    assert resp.status == 200, resp
    seen = resp.json()["headers"]
    return sorted((k.lower(), v) for k, v in seen if k.lower() not in drop)


def build(
    path: str,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    method: str = "GET",
    body: bytes | None = None,
    host: str = HOST,
) -> bytes:
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in items]
    if body is not None and not any(k.lower() == "transfer-encoding" for k, _ in items):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def exchange(port: int, data: bytes, timeout: float = TIMEOUT_S) -> bytes:
    """Send ``data``, half-close nothing, read until the server closes (or ``timeout``)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


def parse(data: bytes, head_only: bool = False) -> Response:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = tuple((k.strip(), v.strip()) for k, v in (f.split(":", 1) for f in fields))
    status = int(status_line.split()[1])
    resp = Response(status, headers, b"")
    if head_only or status in (204, 304) or 100 <= status < 200:
        return resp
    if (resp.header("transfer-encoding") or "").lower() == "chunked":
        return Response(status, headers, dechunk(rest))
    length = resp.header("content-length")
    return Response(status, headers, rest[: int(length)] if length is not None else rest)


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, rest = body.partition(b"\r\n")
        assert sep, "truncated chunked body"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += rest[:size]
        body = rest[size + 2 :]


def get(
    port: int,
    path: str,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = TIMEOUT_S,
    host: str = HOST,
) -> Response:
    data = exchange(port, build(path, headers, method, body, host), timeout)
    return parse(data, head_only=method == "HEAD")
