"""Credentials for the API server: a re-reading bearer token source and the TLS context.

Projected service-account tokens rotate (the kubelet rewrites the file well before expiry), so
``TokenSource`` re-reads the token file when its copy is older than ``reread_seconds`` (60 s,
client-go's ``CachedFileTokenSource`` period). A read that fails keeps the last good token and
logs one line per failure streak: a missing file during the kubelet's atomic swap is normal.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable

from activator.kube.config import KubeConfig, KubeConfigError

__all__ = ["TOKEN_REREAD_SECONDS", "TokenSource", "identity_from_token", "ssl_context"]

log = logging.getLogger("sluice.activator.kube")

#: How old a token read from a file may get before it is read again (client-go: 1 minute).
TOKEN_REREAD_SECONDS = 60.0


def identity_from_token(token: str) -> str | None:
    """The ``sub`` claim of a JWT (a service-account token), unverified; None if not a JWT.

    Only used to name ourselves in error messages; the API server does the verifying.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


class TokenSource:
    """The bearer token to send now: a static one, or the file's, re-read when stale."""

    __slots__ = ("_clock", "_failing", "_file", "_read_at", "_reread", "_token")

    def __init__(
        self,
        config: KubeConfig,
        *,
        reread_seconds: float = TOKEN_REREAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = config.token_file
        self._token = config.token
        self._reread = reread_seconds
        self._clock = clock
        self._read_at: float | None = None
        self._failing = False
        if self._file is not None:
            self._read()

    def _read(self) -> None:
        assert self._file is not None
        self._read_at = self._clock()
        try:
            with open(self._file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            if not self._failing:
                log.warning("cannot read the bearer token file %s: %s", self._file, exc)
            self._failing = True
            return
        if self._failing:
            log.info("bearer token file %s readable again", self._file)
        self._failing = False
        if token:
            self._token = token

    def token(self) -> str | None:
        """The current token; reads the file first if the cached copy is stale."""
        if self._file is not None and (
            self._read_at is None or self._clock() - self._read_at >= self._reread
        ):
            self._read()
        return self._token

    def identity(self) -> str | None:
        """Who the token says we are (a service account's ``sub``), if it is a JWT."""
        token = self.token()
        return identity_from_token(token) if token else None


def ssl_context(config: KubeConfig) -> ssl.SSLContext | None:
    """The client TLS context for ``config``, or None for a plain ``http://`` server.

    Certificate and key given as data are written to a private temporary directory just long
    enough for ``load_cert_chain`` (which takes only paths) and removed at once.
    """
    if not config.uses_tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=config.ca_file, cadata=config.ca_data)
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(f"certificate-authority: cannot load: {exc}") from exc
    if config.insecure_skip_tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.client_cert_file or config.client_cert_data:
        try:
            _load_client_cert(ctx, config)
        except (OSError, ssl.SSLError) as exc:
            raise KubeConfigError(f"client-certificate: cannot load: {exc}") from exc
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, config: KubeConfig) -> None:
    with tempfile.TemporaryDirectory(prefix="sluice-kube-") as tmp:
        cert, key = config.client_cert_file, config.client_key_file
        if config.client_cert_data is not None:
            cert = os.path.join(tmp, "cert.pem")
            _write_private(cert, config.client_cert_data)
        if config.client_key_data is not None:
            key = os.path.join(tmp, "key.pem")
            _write_private(key, config.client_key_data)
        assert cert is not None
        ctx.load_cert_chain(cert, key)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
