"""One-shot TCP and HTTP probes on raw asyncio, shared by the queue-proxy and the activator.

The queue-proxy uses them to check the user container (kubelet-style readiness), the
activator to probe pods with ``K-Network-Probe: queue``. Each call opens one connection,
does one exchange and closes it: probes must never reuse a connection, because a probe
answer that rode on a stale keep-alive connection would say nothing about the peer now.

Contract shared by both functions: success returns, every failure (refused, reset, DNS,
TLS, timeout, malformed or truncated response) raises ``ProbeError`` with a one-line
reason. ``CancelledError`` is never swallowed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import httptools

#: Probe answers are small (``queue``, ``activator``); more than this is cut off, not an error.
MAX_BODY_BYTES = 64 * 1024
_READ_CHUNK = 16 * 1024


class ProbeError(Exception):
    """A probe failed; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class HttpProbeResponse:
    """The status and (at most ``MAX_BODY_BYTES`` of) the body of a probe answer."""

    status: int
    body: bytes


class _NullProtocol(asyncio.Protocol):
    """Ignores everything: a TCP probe only needs the handshake to complete."""


async def probe_tcp(host: str, port: int, timeout: float) -> None:
    """Open a TCP connection to ``host:port`` within ``timeout`` seconds, then close it.

    Raises ``ProbeError`` if the connection cannot be established in time.
    """
    loop = asyncio.get_running_loop()
    target = _hostport(host, port)
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(_NullProtocol, host, port)
    except TimeoutError:
        raise ProbeError(f"dial tcp {target}: i/o timeout") from None
    except OSError as exc:
        raise ProbeError(f"dial tcp {target}: {_os_reason(exc)}") from None
    transport.close()


_unverified_ctx: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    # Like the kubelet, probes check liveness, not identity: certificates are not verified.
    global _unverified_ctx
    if _unverified_ctx is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _unverified_ctx = ctx
    return _unverified_ctx


class _ResponseSink:
    """httptools callbacks: collect the status and up to ``MAX_BODY_BYTES`` of body."""

    __slots__ = ("body", "complete", "framed", "headers_done", "truncated")

    def __init__(self) -> None:
        self.body = bytearray()
        self.framed = False
        self.headers_done = False
        self.complete = False
        self.truncated = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        room = MAX_BODY_BYTES - len(self.body)
        if len(data) >= room:
            self.body += data[:room]
            self.truncated = True
        else:
            self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


def _build_request(host: str, port: int, path: str, headers: Sequence[tuple[str, str]]) -> bytes:
    if not path.startswith("/"):
        path = "/" + path
    lines = [f"GET {path} HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: {_hostport(host, port)}")
    for name, value in headers:
        if name.lower() in ("connection", "content-length", "transfer-encoding"):
            continue  # the probe owns framing and connection handling
        lines.append(f"{name}: {value}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


async def probe_http(
    host: str,
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]],
    timeout: float,
    scheme: str = "http",
) -> HttpProbeResponse:
    """Send one HTTP/1.1 ``GET`` with ``Connection: close`` and return the answer.

    ``headers`` are sent as given (a ``Host`` among them replaces the default
    ``host:port``). ``scheme`` is ``http`` or ``https`` (case-insensitive); HTTPS does not
    verify the certificate. ``timeout`` bounds the whole exchange, connect included. Any
    status is returned; judging it is the caller's business. Raises ``ProbeError`` on a
    transport error, timeout, or a malformed or incomplete response.
    """
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise ProbeError(f"unsupported probe scheme {scheme!r}")
    url = f"{scheme}://{_hostport(host, port)}{path if path.startswith('/') else '/' + path}"
    request = _build_request(host, port, path, headers)
    ctx = _ssl_context() if scheme == "https" else None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
            writer.write(request)
            return await _read_response(reader)
    except TimeoutError:
        raise ProbeError(f"GET {url}: timeout after {timeout:g}s") from None
    except httptools.HttpParserError as exc:
        raise ProbeError(f"GET {url}: malformed response: {exc}") from None
    except (OSError, EOFError) as exc:
        raise ProbeError(f"GET {url}: {_os_reason(exc)}") from None
    finally:
        if writer is not None:
            # abort, not close: the answer is in hand and a TLS close_notify could stall.
            writer.transport.abort()


async def probe_h2c(
    host: str,
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]],
    timeout: float,
) -> HttpProbeResponse:
    """``probe_http`` over HTTP/2 with prior knowledge (h2c), on a connection of its own:
    one ``GET`` on stream 1, the answer's status and (at most ``MAX_BODY_BYTES`` of) its
    body. A ``Host`` among ``headers`` becomes ``:authority``. Raises ``ProbeError`` as
    ``probe_http`` does, also when the peer does not speak HTTP/2."""
    from proxy.h2frames import H2Error  # loaded only when a probe speaks HTTP/2

    hostport = _hostport(host, port)
    target = path if path.startswith("/") else "/" + path
    url = f"http://{hostport}{target}"
    authority = hostport
    fields: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name.lower() == "host":
            authority = value
        else:
            fields.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    head = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", authority.encode("latin-1")),
        (b":path", target.encode("latin-1")),
    ]
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            answer = await h2c_call(reader, writer, head + fields)
    except TimeoutError:
        raise ProbeError(f"GET {url} (h2c): timeout after {timeout:g}s") from None
    except (H2Error, ValueError) as exc:
        raise ProbeError(f"GET {url} (h2c): malformed response: {exc}") from None
    except (OSError, EOFError) as exc:
        raise ProbeError(f"GET {url} (h2c): {_os_reason(exc)}") from None
    finally:
        if writer is not None:
            writer.transport.abort()
    if answer.reset is not None or answer.goaway:
        raise ProbeError(f"GET {url} (h2c): the server reset the stream")
    return HttpProbeResponse(status=answer.status, body=bytes(answer.body))


class H2Answer:
    """The answer ``h2c_call`` waits for (a ``proxy.h2codec.H2Handler``): its status, body
    (at most ``limit`` bytes; ``overflow`` says more came), whether it ended, and how it
    failed (``reset``: the RST_STREAM code; ``goaway``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.status = 0
        self.body = bytearray()
        self.overflow = False
        self.ended = False
        self.reset: int | None = None
        self.goaway = False

    def on_headers(self, sid: int, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.status = int(dict(fields).get(b":status", b"0"))
        self.ended = ended

    def on_informational(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        """A 1xx before the answer: nothing to keep."""

    def on_trailers(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        """Trailers are not part of a probe's answer."""

    def on_data(self, sid: int, data: bytes, flow: int, ended: bool) -> None:
        room = self.limit - len(self.body)
        self.overflow = self.overflow or len(data) > room
        self.body += data[:room]
        self.ended = ended

    def on_reset(self, sid: int, code: int) -> None:
        self.reset = code

    def on_window(self, sid: int) -> None:
        """Nothing waits to be sent."""

    def on_settings(self, changed: dict[int, int]) -> None:
        """Applied by the codec."""

    def on_ping(self) -> None:
        """Answered by the codec."""

    def on_goaway(self, last_sid: int, code: int) -> None:
        self.goaway = True


async def h2c_call(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    fields: list[tuple[bytes, bytes]],
    body: bytes | None = None,
    limit: int = MAX_BODY_BYTES,
) -> H2Answer:
    """One request (``fields``, then ``body`` if any) on a fresh h2c connection, prior
    knowledge, through the engine's codec; returns once the answer ended, the stream was
    reset or the server said GOAWAY. Raises ``EOFError`` if the connection closes first,
    ``proxy.h2codec.H2Error`` on a protocol error; the caller bounds the time."""
    from proxy.h2codec import H2Codec

    answer = H2Answer(limit)
    conn = H2Codec(answer, client_side=True)
    sid = conn.new_stream()
    conn.send_headers(sid, fields, end=body is None)
    if body is not None:
        conn.send_data(sid, body, end=True)
    writer.write(conn.data_to_send())
    while not answer.ended and answer.reset is None and not answer.goaway:
        data = await reader.read(_READ_CHUNK)
        if not data:
            raise EOFError("connection closed before the response was complete")
        conn.receive(data)
        writer.write(conn.data_to_send())
    return answer


async def _read_response(reader: asyncio.StreamReader) -> HttpProbeResponse:
    sink = _ResponseSink()
    parser = httptools.HttpResponseParser(sink)
    while not sink.complete and not sink.truncated:
        data = await reader.read(_READ_CHUNK)
        if not data:
            # Without a length, a Connection: close response ends at EOF; otherwise
            # EOF before the end of the message means a truncated answer.
            if sink.headers_done and not sink.framed:
                break
            raise EOFError("connection closed before the response was complete")
        parser.feed_data(data)
    return HttpProbeResponse(status=parser.get_status_code(), body=bytes(sink.body))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or exc}"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text or type(exc).__name__
