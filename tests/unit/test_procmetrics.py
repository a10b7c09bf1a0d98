"""The hand-rolled process metrics carry the same families as prometheus_client's."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from proxy.dataplane.procmetrics import render_process_metrics


def _families(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))


def test_process_metrics_have_prometheus_client_names_and_types() -> None:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    reference = _families(generate_latest(registry).decode())
    ours = _families(render_process_metrics())
    assert ours == reference


def test_process_metrics_values_are_plausible() -> None:
    text = render_process_metrics()
    values = dict(re.findall(r"^(process_\w+) (\S+)$", text, flags=re.M))
    assert float(values["process_resident_memory_bytes"]) > 1_000_000
    assert float(values["process_open_fds"]) >= 3
    assert float(values["process_cpu_seconds_total"]) > 0
    assert float(values["process_start_time_seconds"]) > 1_600_000_000
