"""Plumbing every test tier shares."""

from __future__ import annotations

from proxy import client, http1

# Every in-process test runs the engine with its state tables enforced (``proxy.states``): a
# transition the table does not allow raises instead of passing silently.
http1.CHECK_TRANSITIONS = True
client.CHECK_TRANSITIONS = True
