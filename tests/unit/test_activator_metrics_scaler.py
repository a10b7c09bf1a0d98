"""The scaler's connection figures on the activator's metrics port (Kubernetes mode)."""

from __future__ import annotations

from activator.metrics import ActivatorMetrics


def test_reachable_gauge_and_drop_counter_follow_the_scaler() -> None:
    state = {"dropped": 0, "reachable": 0, "errors": 0}
    metrics = ActivatorMetrics("activator-0", process_metrics=False)
    metrics.watch_scaler(
        lambda: state["dropped"], lambda: state["reachable"], lambda: state["errors"]
    )
    text = metrics.render().decode()
    assert 'kn_activator_stats_conn_reachable{peer="autoscaler"} 0\n' in text
    assert 'activator_scaler_dropped{pod_name="activator-0"} 0\n' in text
    state.update(dropped=3, reachable=1, errors=2)
    text = metrics.render().decode()
    assert "# TYPE kn_activator_stats_conn_reachable gauge\n" in text
    assert 'kn_activator_stats_conn_reachable{peer="autoscaler"} 1\n' in text
    assert "# TYPE kn_activator_stats_conn_errors_total counter\n" in text
    assert 'kn_activator_stats_conn_errors_total{peer="autoscaler"} 2\n' in text
    assert 'activator_scaler_dropped{pod_name="activator-0"} 3\n' in text


def test_file_mode_without_a_scaler_connection_exports_no_gauge() -> None:
    assert (
        b"kn_activator_stats_conn_reachable"
        not in ActivatorMetrics("a", process_metrics=False).render()
    )
