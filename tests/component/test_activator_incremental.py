"""Incremental updates applied by the activator's writer: one revision at a time."""

from __future__ import annotations

import pytest

from activator.app import Activator, Settings
from activator.model import (
    ActivatorsChanged,
    HostRule,
    IngressChanged,
    IngressRemoved,
    PodsChanged,
    PodsRemoved,
    Revision,
    RevisionChanged,
    RevisionRemoved,
    RoutingConfig,
    WeightedTarget,
)
from activator.scaler import NullScaler
from activator.source import PushSource

pytestmark = pytest.mark.timeout(10)


def activator(workers: int = 1, index: int = 0) -> Activator:
    settings = Settings(
        host="127.0.0.1", port=0, metrics_port=0, workers=workers, worker_index=index
    )
    return Activator(settings, PushSource(RoutingConfig()), scaler=NullScaler())


async def test_activator_share_is_multiplied_by_the_worker_count() -> None:
    act = activator(workers=2, index=1)
    rev = Revision("hello-00001", "default", container_concurrency=10)
    act.apply(RevisionChanged(rev))
    act.apply(ActivatorsChanged(rev.key, 3, 1))
    throttler = act.handler.snapshot.throttlers[rev.key]
    # Three activator pods of two workers each: this worker is the fourth of six.
    assert (throttler.activators, throttler.activator_index) == (6, 3)
    await act.close()


async def test_a_revision_change_keeps_its_throttler_unless_cc_changes() -> None:
    act = activator()
    rev = Revision("hello-00001", "default", container_concurrency=10)
    act.apply(RevisionChanged(rev))
    first = act.handler.snapshot.throttlers[rev.key]
    act.apply(RevisionChanged(Revision("hello-00001", "default", 10, timeout_seconds=60)))
    assert act.handler.snapshot.throttlers[rev.key] is first
    assert first.revision.timeout_seconds == 60
    act.apply(RevisionChanged(Revision("hello-00001", "default", container_concurrency=5)))
    assert act.handler.snapshot.throttlers[rev.key] is not first and first.retired
    act.apply(RevisionRemoved(rev.key))
    assert rev.key not in act.handler.snapshot.throttlers
    assert act.handler.snapshot.table.lookup_revision(*rev.key) is None
    await act.close()


async def test_pods_before_their_revision_are_kept_for_it() -> None:
    act = activator()
    key = ("default", "hello-00001")
    act.apply(PodsChanged(key, frozenset({"10.0.0.5:8012"}), frozenset()))
    assert act.backends.watched(key)
    act.apply(PodsRemoved(key))
    assert not act.backends.watched(key)
    await act.close()


async def test_ingress_rules_change_only_their_own_hosts() -> None:
    act = activator()
    act.apply(RevisionChanged(Revision("a-00001", "default")))
    rule = HostRule(("a.default.example.com",), (WeightedTarget("default", "a-00001", 100),))
    act.apply(IngressChanged(("default", "a"), (rule,)))
    table = act.handler.snapshot.table
    decision = table.resolve("a.default.example.com", None, lambda: 0.5)
    assert decision is not None and decision.revision == "a-00001"
    act.apply(IngressRemoved(("default", "a")))
    assert table.resolve("a.default.example.com", None, lambda: 0.5) is None
    await act.close()
