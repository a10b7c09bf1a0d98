"""The kube tier's user container: a tiny HTTP app run by the fake node.

Listens on ``$SLUICE_BIND_HOST:$PORT`` (the address the fake node chose and the port
Knative's revision reconciler put in the container's env) and answers every GET with
``hello from $K_REVISION in $SLUICE_POD_IP`` so a test can tell which pod answered.
``?sleep=SECONDS`` delays the answer (for concurrency and drain tests). SIGTERM ends it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = self.path.partition("?")[2]
        for part in query.split("&"):
            if part.startswith("sleep="):
                time.sleep(float(part[6:]))
        revision = os.environ.get("K_REVISION", "?")
        body = f"hello from {revision} in {os.environ.get('SLUICE_POD_IP', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    host = os.environ.get("SLUICE_BIND_HOST", "127.0.0.1")
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer((host, port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
