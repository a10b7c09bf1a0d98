"""Server TLS settings from ``QUEUE_PROXY_TLS_*`` (Knative 1.15+; ``knative.dev/pkg/network/tls``).

The v1.23 controller always sets the four variables, usually empty (``config-deployment``
``queue-sidecar-tls-*``):

* ``QUEUE_PROXY_TLS_MIN_VERSION`` / ``_MAX_VERSION``: ``1.2`` or ``1.3``; empty means a
  minimum of 1.3 and no maximum;
* ``QUEUE_PROXY_TLS_CIPHER_SUITES``: comma-separated Go names (``crypto/tls``
  ``CipherSuites()``: the TLS 1.3 suites and the ECDHE suites for 1.2); blanks ignored;
* ``QUEUE_PROXY_TLS_CURVE_PREFERENCES``: comma-separated names (``X25519``,
  ``X25519MLKEM768``, ``CurveP256`` or ``P-256``, and the 384/521 variants).

Go's sidecar reads them only when a certificate is mounted; Sluice checks them at start-up
in any case, so a typo is found before the day certificates arrive. A value outside those
sets, or a minimum above the maximum, is a ``TlsSettingsError`` naming the variable.

Applied to the ``ssl.SSLContext`` of the TLS serving port: the version bounds exactly, the
cipher suites as their OpenSSL equivalents (like Go, the list restricts TLS 1.2 only: TLS 1.3
suites are not configurable). Curve preferences are validated but not applied: Python's
``ssl`` can pin only one group (``set_ecdh_curve``), which would refuse clients that Go's
preference list accepts, so OpenSSL's default group list stays in force.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "QUEUE_PROXY_"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
#: Go's secure suites and their OpenSSL names; ``None``: a TLS 1.3 suite (not settable).
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
CURVES = frozenset(
    {"CurveP256", "CurveP384", "CurveP521", "X25519", "X25519MLKEM768", "P-256", "P-384", "P-521"}
)


class TlsSettingsError(ValueError):
    """A ``QUEUE_PROXY_TLS_*`` value is invalid; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Version bounds, cipher suites (Go names) and curve names for the TLS port."""

    min_version: str = "1.3"
    #: "" means no maximum (the newest the library speaks).
    max_version: str = ""
    cipher_suites: tuple[str, ...] = ()
    curve_preferences: tuple[str, ...] = ()

    def apply(self, context: ssl.SSLContext) -> None:
        """Restrict ``context`` to these settings (see the module docstring for curves)."""
        context.minimum_version = _VERSIONS[self.min_version]
        if self.max_version:
            context.maximum_version = _VERSIONS[self.max_version]
        tls12 = [name for s in self.cipher_suites if (name := CIPHER_SUITES[s]) is not None]
        if tls12:
            context.set_ciphers(":".join(tls12))


#: What Knative v1.10.2's sidecar did before these variables existed.
LEGACY = TlsSettings(min_version="1.2")


def parse_tls_settings(environ: Mapping[str, str], prefix: str = PREFIX) -> TlsSettings:
    """Read ``<prefix>TLS_*`` from ``environ``; raises ``TlsSettingsError``."""

    def version(key: str, default: str) -> str:
        var = prefix + key
        raw = environ.get(var, "")
        if raw == "":
            return default
        if raw not in _VERSIONS:
            raise TlsSettingsError(f"invalid value for {var}: {raw!r} (want 1.2 or 1.3)")
        return raw

    def names(key: str, known: Mapping[str, object] | frozenset[str], what: str) -> tuple[str, ...]:
        var = prefix + key
        out = []
        for part in environ.get(var, "").split(","):
            name = part.strip()
            if not name:
                continue
            if name not in known:
                raise TlsSettingsError(f"invalid value for {var}: unknown {what} {name!r}")
            out.append(name)
        return tuple(out)

    low = version("TLS_MIN_VERSION", "1.3")
    high = version("TLS_MAX_VERSION", "")
    if high and _VERSIONS[high] < _VERSIONS[low]:
        raise TlsSettingsError(
            f"invalid value for {prefix}TLS_MAX_VERSION: {high!r} is below the minimum {low!r}"
        )
    return TlsSettings(
        min_version=low,
        max_version=high,
        cipher_suites=names("TLS_CIPHER_SUITES", CIPHER_SUITES, "cipher suite"),
        curve_preferences=names("TLS_CURVE_PREFERENCES", CURVES, "curve"),
    )
