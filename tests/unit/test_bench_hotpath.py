"""Pure parts of ``bench.hotpath``: tool-output parsing, medians and ratios, rendering.

No load is generated and no process is started here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.hotpath.__main__ import plan_cpus
from bench.hotpath.backends import haproxy_conf, nginx_proxy_conf, nginx_static_conf
from bench.hotpath.loadgen import LoadgenError, parse_hey, parse_wrk
from bench.hotpath.procs import parse_stat_cpu_ticks
from bench.hotpath.report import (
    FIXED_RATE,
    SATURATION,
    Run,
    TargetResult,
    median,
    ratio,
    render_markdown,
    summarise,
    to_json,
    with_ratios,
)
from bench.hotpath.targets import activator_config, queue_proxy_env

WRK_LATENCY = """\
Running 2s test @ http://127.0.0.1:18080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   217.13us  193.42us   4.51ms   96.91%
    Req/Sec   102.23k    15.93k  126.53k    76.19%
  Latency Distribution
     50%  175.00us
     75%  259.00us
     90%    1.31ms
     99%    1.20s
  213369 requests in 2.10s, 32.56MB read
Requests/sec: 101552.59
Transfer/sec:     15.50MB
"""

WRK_ERRORS = """\
Running 5s test @ http://127.0.0.1:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  300.00us   9.00ms   90.00%
    Req/Sec    31.00k     1.00k   33.00k    70.00%
  155000 requests in 1.00m, 20.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 17
Requests/sec:  31000.00
Transfer/sec:      4.00MB
"""

HEY = """\

Summary:
  Total:\t2.0040 secs
  Slowest:\t0.0017 secs
  Fastest:\t0.0000 secs
  Average:\t0.0002 secs
  Requests/sec:\t998.0138

  Total data:\t24000 bytes
  Size/request:\t12 bytes

Response time histogram:
  0.000 [1]\t|
  0.001 [1032]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■


Latency distribution:
  10% in 0.0001 secs
  25% in 0.0001 secs
  50% in 0.0002 secs
  75% in 0.0003 secs
  90% in 0.0005 secs
  95% in 0.0006 secs
  99% in 0.0008 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0000 secs, 0.0000 secs, 0.0017 secs
  resp read:\t0.0000 secs, 0.0000 secs, 0.0003 secs

Status code distribution:
  [200]\t1990 responses
  [503]\t10 responses

Error distribution:
  [3]\tGet "http://127.0.0.1:1/": dial tcp: connection refused
"""


def test_parse_wrk_reads_count_rate_and_latency_distribution() -> None:
    res = parse_wrk(WRK_LATENCY)
    assert res.requests == 213369
    assert res.duration_s == pytest.approx(2.10)
    assert res.rps == pytest.approx(101552.59)
    assert res.latency_ms == pytest.approx({"p50": 0.175, "p75": 0.259, "p90": 1.31, "p99": 1200.0})
    assert (res.errors, res.non_2xx) == (0, 0)


def test_parse_wrk_without_latency_flag_counts_errors_and_minutes() -> None:
    res = parse_wrk(WRK_ERRORS)
    assert res.requests == 155000
    assert res.duration_s == pytest.approx(60.0)
    assert res.latency_ms == {}
    assert res.errors == 10
    assert res.non_2xx == 17


def test_parse_wrk_rejects_output_without_summary() -> None:
    with pytest.raises(LoadgenError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_parse_hey_reads_rate_percentiles_statuses_and_errors() -> None:
    res = parse_hey(HEY)
    assert res.duration_s == pytest.approx(2.004)
    assert res.rps == pytest.approx(998.0138)
    assert res.requests == 2000
    assert res.non_2xx == 10
    assert res.errors == 3
    assert res.latency_ms["p50"] == pytest.approx(0.2)
    assert res.latency_ms["p99"] == pytest.approx(0.8)
    assert set(res.latency_ms) == {"p10", "p25", "p50", "p75", "p90", "p95", "p99"}


def test_parse_hey_rejects_usage_text() -> None:
    with pytest.raises(LoadgenError):
        parse_hey("Usage: hey [options...] <url>\n")


def test_parse_stat_handles_spaces_and_parens_in_comm() -> None:
    line = "1234 (nginx: (worker) x) S 1200 1234 1234 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 1 0"
    assert parse_stat_cpu_ticks(line) == (1200, 300)


def test_median_ignores_none_and_handles_even_counts() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([1.0, 4.0]) == 2.5
    assert median([None]) is None


def _run(rps: float, cpu: float | None, p99: float = 1.0) -> Run:
    latency = {"p50": p99 / 2, "p99": p99}
    return Run(
        rps=rps, requests=int(rps * 5), duration_s=5.0, cpu_us_per_req=cpu, latency_ms=latency
    )


def test_summarise_takes_per_field_medians_and_keeps_raw_runs() -> None:
    runs = [_run(100.0, 30.0, 3.0), _run(300.0, 10.0, 1.0), _run(200.0, 20.0, 2.0)]
    pt = summarise(runs)
    assert pt.rps == 200.0
    assert pt.cpu_us_per_req == 20.0
    assert pt.latency_ms == {"p50": 1.0, "p99": 2.0}
    assert pt.runs == tuple(runs)
    assert pt.ratio_to_nginx is None
    assert pt.best_cpu_us_per_req == 10.0  # the lowest run: interference only adds CPU


def test_best_round_ratio_divides_the_lowest_runs() -> None:
    base = TargetResult(
        "nginx", "ok", points={SATURATION: summarise([_run(1, 20.0), _run(1, 18.0)])}
    )
    target = TargetResult(
        "queue-proxy-cc10",
        "ok",
        points={SATURATION: summarise([_run(1, 50.0), _run(1, 36.0), _run(1, 45.0)])},
    )
    pt = {r.name: r for r in with_ratios([base, target])}["queue-proxy-cc10"].points[SATURATION]
    assert pt.cpu_us_per_req == 45.0 and pt.ratio_to_nginx == 45.0 / 19.0
    assert pt.best_cpu_us_per_req == 36.0 and pt.best_ratio_to_nginx == 2.0


def test_summarise_refuses_no_runs() -> None:
    with pytest.raises(ValueError):
        summarise([])


def test_ratio_is_none_without_a_baseline() -> None:
    assert ratio(30.0, 15.0) == 2.0
    assert ratio(30.0, None) is None
    assert ratio(None, 15.0) is None
    assert ratio(30.0, 0.0) is None


def _results() -> list[TargetResult]:
    def ok(name: str, cpu: float, cpu_of: str = "proxy") -> TargetResult:
        return TargetResult(
            name,
            "ok",
            cpu_of=cpu_of,
            startup_s=0.25 if name.startswith("queue") else None,
            idle_rss_kib=30 * 1024 if name.startswith("queue") else None,
            points={
                SATURATION: summarise([_run(60000.0 / cpu * 15, cpu)]),
                FIXED_RATE: summarise([_run(1000.0, cpu * 3)]),
            },
        )

    return [
        ok("direct", 5.0, cpu_of="backend"),
        ok("nginx", 15.0),
        ok("queue-proxy-cc0", 30.0),
        TargetResult("activator-cc0", "skipped", note="python -m activator: no __main__"),
    ]


def test_with_ratios_divides_by_nginx_per_load_point_and_skips_direct() -> None:
    res = {r.name: r for r in with_ratios(_results())}
    assert res["nginx"].points[SATURATION].ratio_to_nginx == 1.0
    assert res["queue-proxy-cc0"].points[SATURATION].ratio_to_nginx == 2.0
    assert res["queue-proxy-cc0"].points[FIXED_RATE].ratio_to_nginx == 2.0
    assert res["direct"].points[SATURATION].ratio_to_nginx is None


def test_with_ratios_without_nginx_leaves_ratios_empty() -> None:
    res = with_ratios([r for r in _results() if r.name != "nginx"])
    assert all(pt.ratio_to_nginx is None for r in res for pt in r.points.values())


def test_markdown_has_both_tables_footprint_and_skips() -> None:
    md = render_markdown(with_ratios(_results()), {"cpu_count": 2, "pinning": "x", "runs": 3})
    header = (
        "| target | req/s | CPU µs/req | \u00d7 nginx | best round µs/req | \u00d7 nginx | p99 ms |"
    )
    assert header in md
    assert "| queue-proxy-cc0 | 30,000 | 30.0 | 2.00 | 30.0 | 2.00 | 1.00 |" in md
    assert "| direct | 180,000 | 5.0 (backend) | - | 5.0 | - | 1.00 |" in md
    assert "## Fixed rate ~1000 req/s" in md
    assert "| queue-proxy-cc0 | 1,000 | 90.0 | 2.00 | 0.50 | 1.00 |" in md
    assert "| queue-proxy-cc0 | 30.0 | 0.25 |" in md
    assert "- activator-cc0 (skipped): python -m activator: no __main__" in md


def test_json_is_serialisable_and_keeps_runs() -> None:
    doc = json.loads(json.dumps(to_json(with_ratios(_results()), {"cpu_count": 2})))
    qp = doc["targets"]["queue-proxy-cc0"]
    assert qp["points"][SATURATION]["ratio_to_nginx"] == 2.0
    assert len(qp["points"][SATURATION]["runs"]) == 1
    assert doc["targets"]["activator-cc0"]["status"] == "skipped"


def test_cpu_plan_gives_the_target_its_own_core() -> None:
    two = plan_cpus(2, taskset=True)
    assert (two.load, two.backend, two.proxy) == (0, 0, 1)
    assert plan_cpus(4, taskset=True).backend == 2
    assert plan_cpus(2, taskset=False).proxy is None
    assert plan_cpus(1, taskset=True).proxy is None


def test_queue_proxy_env_is_knatives_contract_plus_sluice_ports() -> None:
    env = queue_proxy_env(
        backend_port=9000,
        serving_port=9001,
        tls_port=9002,
        admin_port=9003,
        stats_port=9004,
        metrics_port=9005,
        container_concurrency=10,
        base={"PATH": "/bin", "SLUICE_BIND_HOST": "0.0.0.0", "SECRET": "x"},
    )
    assert env["CONTAINER_CONCURRENCY"] == "10"
    assert env["USER_PORT"] == "9000"
    assert json.loads(env["SERVING_READINESS_PROBE"])["tcpSocket"] == {
        "port": 9000,
        "host": "127.0.0.1",
    }
    assert env["PATH"] == "/bin"
    assert "SLUICE_BIND_HOST" not in env and "SECRET" not in env
    assert {k for k in env if k.startswith("SLUICE_")} == {
        "SLUICE_ADMIN_PORT",
        "SLUICE_STATS_PORT",
        "SLUICE_METRICS_PORT",
    }


def test_activator_config_is_accepted_by_the_activator() -> None:
    yaml = pytest.importorskip("yaml")
    from activator.static_yaml import parse_config

    cfg = parse_config(yaml.safe_load(activator_config(9000)))
    assert [r.name for r in cfg.routes] == ["hello"]


def test_nginx_configs_answer_probe_and_keep_upstreams_alive(tmp_path: Path) -> None:
    static = nginx_static_conf(tmp_path, 8080)
    assert 'if ($http_k_network_probe = "queue") { return 200 "queue"; }' in static
    assert "access_log off;" in static and "worker_processes 1;" in static
    proxy = nginx_proxy_conf(tmp_path, 8081, 8080)
    assert "server 127.0.0.1:8080;" in proxy and "keepalive 128;" in proxy
    assert 'proxy_set_header Connection "";' in proxy
    assert "proxy_http_version 1.1;" in proxy
    assert "server s1 127.0.0.1:8080" in haproxy_conf(8081, 8080)


def test_markdown_warns_when_other_processes_used_the_cpu() -> None:
    noisy = Run(rps=1.0, requests=5, duration_s=5.0, cpu_us_per_req=1.0, foreign_cpu_s=2.0)
    quiet = Run(rps=1.0, requests=5, duration_s=5.0, cpu_us_per_req=1.0, foreign_cpu_s=0.1)
    res = [
        TargetResult("nginx", "ok", points={SATURATION: summarise([noisy])}),
        TargetResult("sluice-engine", "ok", points={SATURATION: summarise([quiet])}),
    ]
    md = render_markdown(res, {})
    assert "Warning: other processes used over 10% of a core during: nginx/saturation_c32" in md
    assert "sluice-engine/" not in md
