"""Run one scripted exchange against both sidecars and compare what each side answered."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tests.conformance.peers import Pair, Sidecar

T = TypeVar("T")


def on_both(pair: Pair, script: Callable[[Sidecar], T]) -> tuple[T, T]:
    """``script`` run against Go's sidecar, then Sluice's: (go's result, sluice's result)."""
    return script(pair.go), script(pair.sluice)


def same(pair: Pair, script: Callable[[Sidecar], T]) -> T:
    """``script``'s result on both sidecars, asserted equal; returns it for further checks."""
    go, sluice = on_both(pair, script)
    assert sluice == go, f"\n  go:     {go!r}\n  sluice: {sluice!r}"
    return go
