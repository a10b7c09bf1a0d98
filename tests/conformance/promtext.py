"""Reading Prometheus text exposition for the metric cases: names, samples, label sets."""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def names(text: str) -> set[str]:
    return {m.group(1) for m in _SAMPLE.finditer(text)}


def samples(text: str, prefix: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample whose name starts with ``prefix``: (name, labels) → value."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for m in _SAMPLE.finditer(text):
        if m.group(1).startswith(prefix):
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out
