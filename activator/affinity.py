"""Per-route choices before and instead of the weighted draw: header rules and stickiness.

Theory of operation. A route with header rules or stickiness compiles (``RouteTable.build``)
into one ``Affinity``, which its default split's decisions carry; every other route's
decisions carry None, so the request path pays one attribute test for the feature being off.
For a request the weighted split picked (the Knative tag header and tag hosts are decided
before and keep their meaning), ``Affinity.choose`` looks, in order:

1. at the header rules: the first ``header: value`` the request carries exactly names the
   revision (or the tag's revision), whatever the split says;
2. at the pin, on a sticky route:

   * *cookie*: a cookie named ``Stickiness.name`` whose value is a revision with a share
     above 0 % of the split keeps the request there; no such cookie, or one naming an
     unknown or 0 % revision, keeps the weighted pick and answers with a ``Set-Cookie``
     naming it (``Max-Age`` the TTL, ``Path=/``, ``HttpOnly``, ``SameSite=Lax``);
   * *header*: the named request header's value is hashed onto the split's cumulative
     percents, so a value lands on the same revision on every request and in every activator
     process, with no state, and distinct values spread as the percents say. A revision
     going to 0 % or away drops its pins because it leaves the split.

3. else the weighted pick stands.

Clients choose only among the revisions a route already sends traffic to: a pin cannot
reach a 0 % revision (rules can, as the operator wrote them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from activator.model import HeaderRule, Stickiness
from proxy.exchange import Exchange
from proxy.headers import Header

if TYPE_CHECKING:
    from activator.routing import RouteDecision

__all__ = ["Affinity", "cookie_value", "hash_fraction"]

_COOKIE = b"cookie"
_NO_REPLY: tuple[Header, ...] = ()


def hash_fraction(value: bytes) -> float:
    """A stable, evenly spread number in [0, 1) for ``value``."""
    digest = hashlib.blake2b(value, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def cookie_value(headers: Sequence[bytes], name: bytes) -> bytes | None:
    """The value of cookie ``name`` in ``Cookie`` header values (the last one wins)."""
    found = None
    for header in headers:
        for part in header.split(b";"):
            key, sep, value = part.strip().partition(b"=")
            if sep and key == name:
                found = value.strip().strip(b'"')
    return found


class Affinity:
    """One route's compiled header rules and stickiness (see the module docstring)."""

    __slots__ = (
        "_bounds",
        "_cookie",
        "_decisions",
        "_header",
        "_live",
        "_max_age",
        "_rules",
        "_wanted",
    )

    def __init__(
        self,
        rules: Sequence[tuple[HeaderRule, RouteDecision]],
        sticky: Stickiness | None,
        split: Sequence[tuple[RouteDecision, int]],
    ) -> None:
        """``rules`` with the decision each one picks; ``split``: the weighted split's
        decisions (above 0 %) with their cumulative percents."""
        self._rules = tuple(
            (rule.header.lower().encode("latin-1"), rule.value.encode("latin-1"), decision)
            for rule, decision in rules
        )
        self._decisions = tuple(d for d, _ in split)
        self._bounds = tuple(b for _, b in split)
        self._live: Mapping[bytes, RouteDecision] = {
            d.revision.encode(): d for d in self._decisions
        }
        self._cookie: bytes | None = None
        self._header: bytes | None = None
        self._max_age = 0
        if sticky is not None:
            name = sticky.name.encode("latin-1")
            if sticky.mode == "cookie":
                self._cookie = name
            else:
                self._header = name.lower()
            self._max_age = sticky.ttl_seconds
        #: Every header name ``choose`` reads (lower-case).
        self._wanted = frozenset(
            [name for name, _, _ in self._rules]
            + ([_COOKIE] if self._cookie is not None else [])
            + ([self._header] if self._header is not None else [])
        )

    def choose(
        self, ex: Exchange, picked: RouteDecision
    ) -> tuple[RouteDecision, tuple[Header, ...]]:
        """The decision for ``ex`` given the weighted ``picked``, and the response headers to
        add (a ``Set-Cookie`` for a new or replaced pin)."""
        # One pass over the request's headers, keeping only the names this route reads.
        wanted = self._wanted
        seen: set[tuple[bytes, bytes]] = set()
        cookies: list[bytes] = []
        key: bytes | None = None
        header = self._header
        headers = ex.headers
        for i, low in enumerate(ex.names):
            if low in wanted:
                value = headers[i][1]
                seen.add((low, value))
                if low == _COOKIE:
                    cookies.append(value)
                elif low == header:
                    key = value  # the last one wins, as for the routing headers
        if seen:
            for name, value, decision in self._rules:
                if (name, value) in seen:
                    return decision, _NO_REPLY
        cookie = self._cookie
        if cookie is not None:
            pinned = cookie_value(cookies, cookie) if cookies else None
            if pinned is not None:
                kept = self._live.get(pinned)
                if kept is not None:
                    return kept, _NO_REPLY
            return picked, (self.set_cookie(picked.revision),)
        if key is not None:
            return self.pick(hash_fraction(key)), _NO_REPLY
        return picked, _NO_REPLY

    def pick(self, fraction: float) -> RouteDecision:
        """The split's decision at ``fraction`` (in [0, 1)) of its cumulative percents."""
        bounds = self._bounds
        r = fraction * bounds[-1]
        for i, bound in enumerate(bounds):
            if r < bound:
                return self._decisions[i]
        return self._decisions[-1]

    def set_cookie(self, revision: str) -> Header:
        assert self._cookie is not None
        return (
            b"Set-Cookie",
            b"%s=%s; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax"
            % (self._cookie, revision.encode(), self._max_age),
        )

    @property
    def pins(self) -> Callable[[bytes], RouteDecision | None]:
        """Which revision a pin value names, if it is still in the split (tests, docs)."""
        return self._live.get
