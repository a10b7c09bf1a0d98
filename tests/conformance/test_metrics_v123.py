"""Request metrics on the metrics port (9091) under v1.23.0 with ``requestMetrics: prometheus``.

Both sidecars get ``OBSERVABILITY_CONFIG`` with ``requestMetrics.protocol: prometheus`` (what
``config-observability`` sets), then the same requests; the cases compare the Knative
``kn_*`` names, their labels and their counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance import promtext
from tests.conformance.client import get
from tests.conformance.compare import on_both, same
from tests.conformance.peers import V123, Pair, Sidecar, prometheus_overrides, running_pair

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair(V123, tmp_path_factory.mktemp("prom"), **prometheus_overrides(V123)) as p:
        for s in p.both():
            for path in ("/status/200", "/status/200", "/status/404", "/status/503"):
                get(s.port, path)
            get(s.port, "/status/200", [("Knative-Serving-Tag", "blue")])
            get(s.port, "/", [("User-Agent", "kube-probe/1.30"), ("K-Network-Probe", "queue")])
        yield p


def scrape(s: Sidecar) -> str:
    resp = get(s.metrics_port, "/metrics")
    assert resp.status == 200, resp
    return resp.body.decode()


def test_metrics_content_type(prom: Pair) -> None:
    def script(s: Sidecar) -> str:
        # Go's promhttp adds "; escaping=underscores" (a negotiation detail): compared up to it.
        value = get(s.metrics_port, "/metrics").header("content-type") or ""
        return value.split("; escaping=")[0]

    assert same(prom, script) == "text/plain; version=0.0.4; charset=utf-8"


def test_knative_metric_names(prom: Pair) -> None:
    kn = same(prom, lambda s: sorted(n for n in promtext.names(scrape(s)) if n.startswith("kn_")))
    assert "kn_serving_invocation_duration_seconds_count" in kn


def test_invocation_counts_and_labels(prom: Pair) -> None:
    def script(s: Sidecar) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return promtext.samples(scrape(s), "kn_serving_invocation_duration_seconds_count")

    counts = same(prom, script)
    assert sum(counts.values()) == 5  # the probe is not counted


def test_invocation_histogram_buckets(prom: Pair) -> None:
    def script(s: Sidecar) -> list[str]:
        buckets = promtext.samples(scrape(s), "kn_serving_invocation_duration_seconds_bucket")
        return sorted({dict(labels)["le"] for _, labels in buckets}, key=float)

    assert same(prom, script)[-1] == "+Inf"


def test_target_info_present(prom: Pair) -> None:
    assert same(prom, lambda s: "target_info" in promtext.names(scrape(s))) is True


def test_other_metric_families(prom: Pair) -> None:
    """Deliberate difference: Sluice exports Knative's ``kn_*`` instruments, not Go's own.

    Go's sidecar also serves the Go runtime (``go_*``), the Prometheus client's self metrics
    (``promhttp_*``), two Linux-only process extras and otelhttp's generic
    ``http_server_*``/``http_client_*`` instruments, which the Go HTTP library records for
    any server. They describe Go's implementation, not the revision; Sluice serves the
    ``kn_*`` families, ``target_info`` and the standard ``process_*`` collector subset.
    """
    go, sluice = on_both(prom, lambda s: promtext.names(scrape(s)))
    assert sluice <= go
    go_only = {n.split("_")[0] + "_" for n in go - sluice}
    assert go_only <= {"go_", "promhttp_", "http_", "process_"}, go - sluice
