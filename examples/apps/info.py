"""A tiny Knative-style app: answers every path with JSON about itself.

``GET /service/info`` (or any path) → ``{"name", "version", "revision", "pod", "message"}``;
``HEAD`` answers the same headers.
``?sleep=SECONDS`` (or ``SLEEP_SECONDS`` in the environment) holds each request that long,
which makes concurrency visible in ``sluice top``. Listens on ``$PORT`` (Knative's contract).
Standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = os.environ.get("K_SERVICE", "info")
VERSION = os.environ.get("VERSION", "v1")
REVISION = os.environ.get("K_REVISION", "")
MESSAGE = os.environ.get("MESSAGE", f"Hello from {NAME} {VERSION}")
POD = f"{socket.gethostname()}-{os.getpid()}"
DEFAULT_SLEEP = float(os.environ.get("SLEEP_SECONDS", "0") or 0)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Head and body leave in one write (flushed after each request): unbuffered, they are
    #: two small segments, and Nagle holds the second until the proxy's delayed ACK (~40 ms
    #: per request on a kept-alive connection).
    wbufsize = 1 << 16

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        delay = float(query.get("sleep", [DEFAULT_SLEEP])[0])
        if delay > 0:
            time.sleep(delay)
        body = (
            json.dumps(
                {
                    "name": NAME,
                    "version": VERSION,
                    "revision": REVISION,
                    "pod": POD,
                    "message": MESSAGE,
                }
            ).encode()
            + b"\n"
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        """As GET without the body (``curl -sI``)."""
        self.do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the pod's log


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = Server(("127.0.0.1", port), Handler)
    print(f"{NAME} {VERSION} ({REVISION}) listening on {port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
