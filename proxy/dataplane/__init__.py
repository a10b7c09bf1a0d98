"""The data-plane toolbox the components build on, beside the HTTP engine in ``proxy``.

The breaker, the request deadlines, the drainer, request concurrency statistics, the
autoscaler's ``Stat`` value and its encodings, the readiness probers, Prometheus text and
process metrics. These may use the engine (``proxy.exchange``...); the engine never imports
them (``tests/test_layering.py``).
"""
