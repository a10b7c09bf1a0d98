"""Go's ``time.ParseDuration``, for the settings Knative writes as Go durations.

Knative's environment (``PROBE_TIMEOUT=300ms``) and ConfigMaps (``stable-window: 60s``) hold
durations in Go's syntax: an optional sign, then one or more decimal numbers each with a
unit (``ns``, ``us``, ``µs``, ``ms``, ``s``, ``m``, ``h``), as in ``1h2m0.5s``; a bare ``0``
is allowed. ``parse_duration`` accepts exactly that and returns seconds as a float.
"""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """``"300ms"`` → 0.3, ``"1m30s"`` → 90.0, ``"-1.5h"`` → -5400.0, ``"0"`` → 0.0.

    Raises ``ValueError`` naming the text for anything Go would refuse (no unit, unknown
    unit, empty string, stray characters).
    """
    body = text.strip()
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f'invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f'invalid duration "{text}"')
    return sign * total
