"""Time-weighted request concurrency and arrival counts, Knative's averaging algorithm.

``RequestStats`` is a pure object: every method takes ``now`` (seconds, any monotonic origin)
and nothing reads a clock or needs an event loop. Before each event or report, the time since
the last change is folded into per-window accumulators, weighted by the concurrency that held
during it. A report divides the weighted sum by the time covered, so the averages are a
time-weighted mean of in-flight requests over the window, then starts a new window. Current
concurrency carries over between windows; only the accumulators reset.

Proxied requests (those the activator forwarded) are a subset of all requests: a proxied
event moves both the total and the proxied figures.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestStats", "StatsReport"]


@dataclass(frozen=True, slots=True)
class StatsReport:
    """One completed window. Averages are 0.0 when the window covered no time."""

    average_concurrency: float
    average_proxied_concurrency: float
    request_count: float
    proxied_request_count: float


class RequestStats:
    """Accumulates request events into windows ended by ``report``.

    Not thread-safe; call from one thread (the event loop's).
    """

    __slots__ = (
        "_computed",
        "_computed_proxied",
        "_concurrency",
        "_last_change",
        "_proxied_concurrency",
        "_proxied_count",
        "_request_count",
        "_seconds_in_use",
    )

    def __init__(self, start: float) -> None:
        self._last_change = start
        self._concurrency = 0
        self._proxied_concurrency = 0
        self._request_count = 0
        self._proxied_count = 0
        self._computed = 0.0
        self._computed_proxied = 0.0
        self._seconds_in_use = 0.0

    def _fold(self, now: float) -> None:
        elapsed = now - self._last_change
        # Events may be stamped slightly out of order by callers; a negative (or zero) gap
        # adds nothing and must not move the reference point backwards.
        if elapsed > 0:
            self._seconds_in_use += elapsed
            self._computed += self._concurrency * elapsed
            self._computed_proxied += self._proxied_concurrency * elapsed
            self._last_change = now

    # req_in/req_out repeat _fold's body inline: they run twice per request on the hot path,
    # and a Python call costs more than the arithmetic.

    def req_in(self, now: float, proxied: bool) -> None:
        """A request arrived (before any queueing)."""
        elapsed = now - self._last_change
        if elapsed > 0:
            self._seconds_in_use += elapsed
            self._computed += self._concurrency * elapsed
            self._computed_proxied += self._proxied_concurrency * elapsed
            self._last_change = now
        self._request_count += 1
        self._concurrency += 1
        if proxied:
            self._proxied_count += 1
            self._proxied_concurrency += 1

    def req_out(self, now: float, proxied: bool) -> None:
        """A request finished (after its response body ended); ``proxied`` as for ``req_in``."""
        elapsed = now - self._last_change
        if elapsed > 0:
            self._seconds_in_use += elapsed
            self._computed += self._concurrency * elapsed
            self._computed_proxied += self._proxied_concurrency * elapsed
            self._last_change = now
        self._concurrency -= 1
        if proxied:
            self._proxied_concurrency -= 1

    def report(self, now: float) -> StatsReport:
        """Close the window at ``now``, return its figures and start a new window."""
        self._fold(now)
        secs = self._seconds_in_use
        result = StatsReport(
            average_concurrency=self._computed / secs if secs > 0 else 0.0,
            average_proxied_concurrency=self._computed_proxied / secs if secs > 0 else 0.0,
            request_count=float(self._request_count),
            proxied_request_count=float(self._proxied_count),
        )
        self._request_count = 0
        self._proxied_count = 0
        self._computed = 0.0
        self._computed_proxied = 0.0
        self._seconds_in_use = 0.0
        return result

    @property
    def concurrency(self) -> int:
        """Requests currently in flight (all, proxied included)."""
        return self._concurrency
