"""Plumbing every test tier shares."""

from __future__ import annotations

from proxy import http1

# Every in-process test runs the engine with its connection-state table enforced: a
# transition ``proxy.http1.TRANSITIONS`` does not allow raises instead of passing silently.
http1.CHECK_TRANSITIONS = True
