"""``python -m bench.hotpath``: the hot path's CPU cost per request, as ratios to nginx.

One invocation, all on 127.0.0.1:

1. A static backend: a dedicated nginx (1 worker, ``return 200 "hello world\\n"``, access log
   off, keep-alive without limit) when nginx is installed, else ``bench.hotpath.backend``
   (uvloop + httptools, same 12-byte answer). Both answer Knative's pod probe
   (``K-Network-Probe: queue`` -> ``200 queue``).
2. Targets, one process each, all started first (idle ones cost nothing measurable) and
   stopped at the end: ``direct``
   (no proxy; the backend's CPU, for context only), ``nginx`` (a second nginx doing
   ``proxy_pass`` with an upstream keep-alive pool: the baseline), ``haproxy`` (if installed),
   ``sluice-engine`` (``python -m proxy.passthrough``), ``queue-proxy-cc0`` / ``-cc10``
   (``python -m queueproxy`` with only Knative's environment), ``activator-cc0`` and
   ``go-queue-proxy-cc0``: Knative's own Go sidecar v1.23.0 (``tests/kube/peers/bin/queue``,
   built by ``tests/kube/peers/build.sh``) under the environment v1.23.0's controller sets,
   request metrics as Knative ships them (``none``). It binds ports 8022 and 9090 whatever its
   environment says, so ``--netns`` runs the whole benchmark on a private loopback, and only
   one Go target runs at a time (``go-queue-proxy-cc10`` on request, instead of cc0). A target
   whose module is missing or that is not ready in time is skipped with a note.
3. A 1 s warm-up per target, then ``--runs`` rounds of wrk (``-t1 -c32 --latency``) at
   saturation and ``--runs`` rounds of hey at a fixed 1000 req/s (``-c 10 -q 100``); each round
   measures every target once, so background load that drifts over minutes (these machines are
   shared) falls on nginx's runs as much as on the others'. queue-proxy-cc10 also gets a wrk
   run with 50 connections in every round, for its p99 (the median of the rounds' p99). CPU per
   request is the target process tree's utime+stime delta (``/proc/<pid>/stat``) over a run
   divided by the requests the tool reports. Each figure is the median over runs; ratios divide
   by nginx's figure at the same load point, and for ``queue-proxy-ccN`` also by
``go-queue-proxy-ccN``'s (its own table). At saturation the best round (each target's lowest
   CPU per request, and its ratio to nginx's lowest) is shown beside the medians: interference
   on a shared host only adds CPU time, so the lowest run is the least disturbed one. Idle RSS
   (VmRSS after readiness, before traffic) and start-up time (exec to the first successful
   readiness probe) are recorded for every started target.

CPU pinning (``taskset``, when installed and there are at least 2 CPUs): the target under test
gets CPU 1 to itself; the load generator gets CPU 0; the backend shares CPU 0 with the load
generator on a 2-CPU machine, or gets CPU 2 when there is one. Sharing is the sensible choice
on 2 CPUs: the proxy's core is then the only one measured and the bottleneck, and the
backend (nginx, ~5 µs/request) plus wrk stay well ahead of any proxy on the other core. For
``direct`` this means wrk and the backend compete for one core, so its req/s is a floor, not
the backend's ceiling. Without taskset nothing is pinned and the report says so.

Results: ``<out>/hotpath.json`` (every run's raw values and the environment) and
``<out>/hotpath.md`` (the tables, also printed to stdout). Benchmarks are not tests; ``--quick``
(one 2 s run) is the CI smoke.
"""
