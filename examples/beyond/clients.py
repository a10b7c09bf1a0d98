"""Distinct clients against a sticky route: which revision each got first, and how many
requests after that went elsewhere (0 on a sticky route). Standard library only.

``python3 clients.py [URL] [CLIENTS] [REQUESTS]``: each client ``user-<i>`` sends its own
``X-User`` header and keeps the cookies it is given, on one kept-alive connection.
"""

from __future__ import annotations

import http.client
import json
import sys
from collections import Counter
from urllib.parse import urlsplit


def main() -> None:
    url = urlsplit(sys.argv[1] if len(sys.argv) > 1 else "http://shop.default.localhost:8080/")
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    first: Counter[str] = Counter()
    moved = 0
    host = url.hostname or "localhost"
    # As curl does: *.localhost is the loopback, whatever the resolver thinks.
    address = "127.0.0.1" if host.endswith("localhost") else host
    for i in range(clients):
        conn = http.client.HTTPConnection(address, url.port or 80, timeout=30)
        headers = {"Host": url.netloc, "X-User": f"user-{i}"}
        got = None
        for _ in range(requests):
            conn.request("GET", url.path or "/", headers=headers)
            resp = conn.getresponse()
            revision = json.loads(resp.read())["revision"]
            cookie = resp.getheader("Set-Cookie")
            if cookie:
                headers["Cookie"] = cookie.split(";")[0]
            if got is None:
                got = revision
                first[revision] += 1
            moved += revision != got
        conn.close()
    print(dict(sorted(first.items())), "moved:", moved)


if __name__ == "__main__":
    main()
