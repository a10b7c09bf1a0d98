"""A tiny load generator for the tutorial: counts answers per revision and per status.

    python examples/load.py [-c CLIENTS] [-n REQUESTS | -z SECONDS] [-H 'Name: value'] URL

The URL's host picks the route (``http://hello.default.localhost:8080/``), as curl does;
``*.localhost`` names are sent to 127.0.0.1. Needs only aiohttp (a Sluice dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp


async def run(url: str, clients: int, requests: int, seconds: float, headers: list[str]) -> None:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    target = url
    if host.endswith(".localhost"):
        target = url.replace(host, "127.0.0.1", 1)
    extra = {"Host": parts.netloc}
    for h in headers:
        name, _, value = h.partition(":")
        extra[name.strip()] = value.strip()
    revisions: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    left = [requests]
    start = time.monotonic()
    deadline = start + seconds if seconds else None
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def client() -> None:
            while (deadline and time.monotonic() < deadline) or (not deadline and left[0] > 0):
                left[0] -= 1
                try:
                    async with session.get(target, headers=extra) as resp:
                        body = await resp.read()
                        statuses[str(resp.status)] += 1
                        if resp.status == 200:
                            revisions[json.loads(body).get("revision", "?")] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - start
    total = sum(statuses.values())
    print(f"{total} requests in {elapsed:.1f}s ({total / elapsed:.0f}/s), status: {dict(statuses)}")
    for name, count in sorted(revisions.items()):
        print(f"  {name:<16} {count:>6}  {100 * count / max(1, total):5.1f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("-c", type=int, default=10, help="concurrent clients (10)")
    p.add_argument("-n", type=int, default=200, help="requests in total (200)")
    p.add_argument("-z", type=float, default=0, help="run for this many seconds instead")
    p.add_argument("-H", action="append", default=[], help="extra header 'Name: value'")
    a = p.parse_args()
    asyncio.run(run(a.url, a.c, a.n, a.z, a.H))


if __name__ == "__main__":
    main()
