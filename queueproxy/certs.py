"""The TLS port's certificate, re-read when its files change, with no restart.

Knative mounts the revision's certificate at ``/var/lib/knative/certs/tls.{crt,key}`` and
rotates it in place; v1.23's queue-proxy picks a new one up within a minute. ``CertReloader``
does the same: the listener keeps the context it was started with, and each TLS handshake is
handed, through that context's SNI callback (OpenSSL calls it for every ClientHello, with or
without a server name), the context of the newest certificate that loaded. Every
``interval`` it compares the files' (mtime, size, inode); on a change it builds a new context.
A change that does not load (half-written, mismatched key, garbage) leaves the old certificate
in use and logs one line; the next good change is taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable

__all__ = ["RELOAD_INTERVAL", "CertReloader"]

log = logging.getLogger("sluice.queueproxy")

#: Seconds between two looks at the certificate files (Knative's watcher: one minute).
RELOAD_INTERVAL = 60.0

Stamp = tuple[tuple[int, int, int], ...]


def _stamp(*paths: str) -> Stamp | None:
    try:
        stats = [os.stat(p) for p in paths]
    except OSError:
        return None
    return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in stats)


class CertReloader:
    """Serves ``build(cert, key)``'s newest context on a listener that keeps ``context``."""

    def __init__(
        self,
        cert: str,
        key: str,
        build: Callable[[str, str], ssl.SSLContext],
        interval: float = RELOAD_INTERVAL,
    ) -> None:
        self.cert, self.key = cert, key
        self.interval = interval
        self._build = build
        #: The context the listener is started with (raises ``ssl.SSLError`` if unusable).
        self.context = build(cert, key)
        self.context.sni_callback = self._pick
        self.current = self.context
        self.reloads = 0
        self._stamp = _stamp(cert, key)
        self._refused: Stamp | None = None

    def _pick(
        self, sslobj: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        if self.current is not context:
            sslobj.context = self.current

    def check(self) -> bool:
        """Load the files again if they changed; True when a new certificate is in use."""
        stamp = _stamp(self.cert, self.key)
        if stamp is None or stamp == self._stamp or stamp == self._refused:
            return False
        try:
            fresh = self._build(self.cert, self.key)
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._refused = stamp
            log.error(
                "new TLS certificate in %s refused, keeping the one in use: %s",
                os.path.dirname(self.cert),
                exc,
            )
            return False
        self._stamp, self._refused = stamp, None
        self.current = fresh
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", os.path.dirname(self.cert))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def __repr__(self) -> str:
        return f"CertReloader({self.cert!r}, reloads={self.reloads})"
