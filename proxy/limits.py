"""Limits and timeouts of the server side (HTTP/1.1 and HTTP/2), with each default's reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds on what one client may make the server hold. Validated at construction."""

    #: Request line (method + target + version). nginx and Envoy default to about 8 KiB.
    max_request_line: int = 8192
    #: One header line, name plus value; the same 8 KiB that nginx uses per buffer.
    max_header_bytes: int = 8192
    #: All header bytes of one request; 64 KiB bounds memory per connection (catalogue B3).
    max_total_header_bytes: int = 65536
    #: Header lines per request; Go, nginx and Envoy all land near 100.
    max_header_count: int = 100
    #: Request body bytes; None means no limit (Knative sets none on the data path).
    max_body_bytes: int | None = None
    #: Seconds from the first byte of a request head to its end (slowloris).
    head_timeout: float = 10.0
    #: Seconds a request body may go without new bytes while someone waits for it.
    body_idle_timeout: float = 60.0
    #: Seconds an idle keep-alive connection stays open between requests.
    keepalive_timeout: float = 75.0
    #: Seconds bytes may wait in a connection's write buffer without the client taking any
    #: (a client that stopped reading); the connection is then cut. 300 s: Knative's default
    #: revision timeout and Envoy's stream idle timeout, as Knative's ingresses run it.
    #: Without it, one stalled reader would hold a graceful drain open for ever.
    write_idle_timeout: float = 300.0
    #: Open client connections per server; more are answered 503 and closed.
    max_connections: int = 10000
    #: Bytes buffered from a request body before reading from the client pauses.
    body_high_water: int = 65536
    #: HTTP/2: whether a connection may speak h2c (prior knowledge or ``Upgrade: h2c``),
    #: as Knative's serving ports all do.
    h2c: bool = True
    #: HTTP/2: concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS); Go's
    #: server default. A stream opened beyond it is refused with REFUSED_STREAM.
    h2_max_streams: int = 250
    #: HTTP/2: request body bytes a stream (and, separately, the whole connection) may have
    #: in flight unread: the flow-control windows, Go's 1 MiB upload buffers.
    h2_window: int = 1 << 20
    #: HTTP/2: streams the client may reset while they are served, and control frames
    #: (PING, SETTINGS) it may send, per second, before the connection is closed with
    #: ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487; ping and settings floods).
    h2_max_abuse_per_second: int = 200

    def __post_init__(self) -> None:
        for name in (
            "max_request_line",
            "max_header_bytes",
            "max_total_header_bytes",
            "max_header_count",
            "max_connections",
            "body_high_water",
            "h2_max_streams",
            "h2_max_abuse_per_second",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerLimits.{name} must be positive")
        for name in (
            "head_timeout",
            "body_idle_timeout",
            "keepalive_timeout",
            "write_idle_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerLimits.{name} must be positive seconds")
        if not 65535 <= self.h2_window < 1 << 31:
            raise ValueError("ServerLimits.h2_window must be in [65535, 2**31)")
        if self.max_body_bytes is not None and self.max_body_bytes < 0:
            raise ValueError("ServerLimits.max_body_bytes must be >= 0 or None")
