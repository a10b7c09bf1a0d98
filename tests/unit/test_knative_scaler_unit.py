"""The Knative scaler's pure parts: the autoscaler's address, back-off, drop accounting."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from activator.knative_scaler import (
    LOG_INTERVAL,
    NOT_CONNECTED,
    Backoff,
    ConnState,
    KnativeScaler,
    Timings,
    autoscaler_url,
    backoff_delay,
    cluster_domain,
)
from activator.stats import StatBatch
from proxy.dataplane.autoscaler_stat_pb import Stat

POKE: StatBatch = [
    ("ns", "rev", Stat(pod_name="a", average_concurrent_requests=1, request_count=1))
]


def test_autoscaler_url_is_knatives_in_cluster_address() -> None:
    assert (
        autoscaler_url("knative-serving", "cluster.local")
        == "ws://autoscaler.knative-serving.svc.cluster.local:8080/"
    )
    assert autoscaler_url("kn", "corp.example.") == "ws://autoscaler.kn.svc.corp.example:8080/"
    assert autoscaler_url("kn", "") == "ws://autoscaler.kn.svc.cluster.local:8080/"
    with pytest.raises(ValueError, match="system_namespace"):
        autoscaler_url("", "cluster.local")


def test_not_connected_is_knatives_error_text() -> None:
    assert NOT_CONNECTED == "connection has not yet been established"


@pytest.mark.parametrize(
    ("resolv", "env", "want"),
    [
        # The kubelet's usual resolv.conf: the svc.<domain> search entry wins over the env.
        (
            "search default.svc.corp.example svc.corp.example corp.example\nnameserver 10.0.0.10\n",
            {"CLUSTER_DOMAIN": "other.example"},
            "corp.example",
        ),
        ("search svc.cluster.local.\n", {}, "cluster.local"),
        # No svc. entry: CLUSTER_DOMAIN, then the default.
        (
            "search example.com\nnameserver 1.1.1.1\n",
            {"CLUSTER_DOMAIN": "env.example"},
            "env.example",
        ),
        ("nameserver 1.1.1.1\n", {}, "cluster.local"),
        # "svc." must start the entry; "mysvc.x" is not the cluster's.
        ("search mysvc.x\n", {}, "cluster.local"),
        # A search word elsewhere on a line is not the search line.
        ("options search svc.nope\n", {}, "cluster.local"),
    ],
)
def test_cluster_domain_follows_knative_network(
    tmp_path: Path, resolv: str, env: dict[str, str], want: str
) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(resolv)
    assert cluster_domain(env, path) == want


def test_cluster_domain_without_resolv_conf(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    assert cluster_domain({"CLUSTER_DOMAIN": "env.example"}, missing) == "env.example"
    assert cluster_domain({}, missing) == "cluster.local"


def test_backoff_grows_by_factor_with_jitter_and_cap() -> None:
    b = Backoff()  # Knative's 100 ms * 1.3, jitter 0.5
    assert backoff_delay(b, 0, 0.0) == pytest.approx(0.1)
    assert backoff_delay(b, 1, 0.0) == pytest.approx(0.13)
    assert backoff_delay(b, 2, 0.0) == pytest.approx(0.169)
    assert backoff_delay(b, 0, 0.999) == pytest.approx(0.1 * 1.4995)
    assert backoff_delay(b, 50, 0.0) == b.cap
    assert backoff_delay(b, 10**9, 1.0) == pytest.approx(b.cap * 1.5)  # no overflow


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": 0}, "initial"),
        ({"initial": 2, "cap": 1}, "initial"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": -1}, "jitter"),
    ],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(**kwargs)


def test_timings_default_to_knatives_and_reject_nonpositive() -> None:
    t = Timings()
    assert (t.handshake_timeout, t.pong_timeout) == (3.0, 10.0)
    assert t.ping_interval == pytest.approx(3.333, abs=1e-3)
    with pytest.raises(ValueError, match="pong_timeout"):
        Timings(pong_timeout=0)


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        KnativeScaler("ws://127.0.0.1:1/", queue_size=0)


def test_unstarted_scaler_drops_and_counts_without_raising() -> None:
    scaler = KnativeScaler("ws://127.0.0.1:1/")
    assert scaler.state is ConnState.IDLE
    assert (scaler.connected, scaler.reachable) == (False, 0)
    scaler.poke(POKE)
    scaler.report(POKE)
    assert (scaler.dropped, scaler.sent, scaler.reconnects, scaler.errors) == (2, 0, 0, 0)
    assert repr(scaler) == (
        "KnativeScaler('ws://127.0.0.1:1/', state=idle, queued=0, sent=0, dropped=2, "
        "reconnects=0, errors=0)"
    )


def test_drop_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    scaler = KnativeScaler("ws://127.0.0.1:1/", clock=lambda: now[0])
    caplog.set_level(logging.ERROR, logger="sluice.activator.knative_scaler")
    for _ in range(50):
        scaler.poke(POKE)
    assert scaler.dropped == 50
    assert len(caplog.records) == 1  # the first drop, at once
    now[0] += LOG_INTERVAL
    scaler.report(POKE)
    assert len(caplog.records) == 2
    # The second line carries the drops since the first: 49 silent ones plus this one.
    assert "50 batch(es)" in caplog.records[1].getMessage()
    assert NOT_CONNECTED in caplog.records[1].getMessage()
