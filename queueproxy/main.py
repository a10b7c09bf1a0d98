"""``python -m queueproxy``: the sidecar's wiring, start-up and drain.

Start-up (knative-dataplane.md §1.3): read the environment into one ``Config`` (a bad or
missing variable ends the process with one line naming it and exit code 1), build the stats,
breaker, prober and metrics, then serve:

* the serving port (``QUEUE_SERVING_PORT``): probes and traffic, ``queueproxy.handler``;
* the admin port (8022, ``SLUICE_ADMIN_PORT``): ``/wait-for-drain`` only;
* the autoscaler stats port (9090, ``SLUICE_STATS_PORT``): ``/metrics``, protobuf ``Stat``;
* the request metrics port (9091, ``SLUICE_METRICS_PORT``): Prometheus text, when
  ``SERVING_REQUEST_METRICS_BACKEND=prometheus`` (v1.10.2 names, ``queueproxy.metrics``)
  or ``OBSERVABILITY_CONFIG`` asks for ``prometheus`` request metrics (v1.23.0 names,
  ``queueproxy.metrics_otel``).

SIGTERM (or SIGINT) starts the drain: probes fail at once with 503 ``shutting down``, traffic
is served until ``SLUICE_DRAIN_QUIET_SECONDS`` (default 30) pass with no request, then the
servers stop listening and every in-flight request (websockets included) runs to completion,
bounded by the revision timeout each request already carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from proxy.dataplane.autoscaler_stat import Stat, encode_stat
from proxy.dataplane.breaker import Breaker
from proxy.dataplane.concurrency import RequestStats
from proxy.dataplane.deadline import Deadline
from proxy.dataplane.drain import Drainer
from proxy.http1 import Exchange
from proxy.pool import UpstreamPool
from proxy.runner import run, settle_gc
from proxy.server import HttpServer
from queueproxy.config import CONTRACT_V1_10, Config, ConfigError, load_config
from queueproxy.handler import QueueProxyHandler, QueueProxyState
from queueproxy.observability import not_implemented
from queueproxy.readiness import ReadinessProber
from queueproxy.tlsconfig import LEGACY, TlsSettings

if TYPE_CHECKING:
    # The optional parts are imported where the environment turns them on, so that an idle
    # sidecar without them does not carry their code (idle RSS, issue 17).
    from queueproxy.certs import CertReloader
    from queueproxy.metrics import RequestMetrics
    from queueproxy.metrics_otel import OtelRequestMetrics
    from queueproxy.requestlog import RequestLogger

log = logging.getLogger("sluice.queueproxy")

#: How often the stats accumulator is folded into the reported Stat (Knative: 1 s).
REPORTING_PERIOD = 1.0
#: After ``/wait-for-drain`` starts a drain, how long to wait for our own SIGTERM before
#: concluding the preStop came from a liveness-driven restart and resetting (Knative: 1 s).
PRESTOP_RESET_AFTER = 1.0
_NOT_FOUND = b"404 page not found\n"
#: After the drain, how long open websockets may go on before they are cut (Knative HEAD).
TUNNEL_GRACE = 60.0
#: After the quiet period, in-flight requests get the revision timeout (a hard maximum: no
#: request outlives it) and this margin, then what is left is cut, so a drain always ends
#: (issue 15: a stalled reader held one open past the pod's grace period).
DRAIN_MARGIN = 10.0


class StatsReporter:
    """Holds the encoded ``Stat`` of the last completed window; refreshed every period."""

    def __init__(self, stats: RequestStats, pod_name: str, clock_start: float) -> None:
        self._stats = stats
        self._pod = pod_name
        self._start = clock_start
        # Valid before the first report: only the pod name (knative §1.13).
        self.body = encode_stat(Stat(pod_name=pod_name))

    def report(self, now: float) -> None:
        r = self._stats.report(now)
        self.body = encode_stat(
            Stat(
                pod_name=self._pod,
                average_concurrent_requests=r.average_concurrency,
                average_proxied_concurrent_requests=r.average_proxied_concurrency,
                request_count=r.request_count / REPORTING_PERIOD,
                proxied_request_count=r.proxied_request_count / REPORTING_PERIOD,
                process_uptime=now - self._start,
            )
        )

    async def run(self, loop: asyncio.AbstractEventLoop) -> None:
        next_at = loop.time() + REPORTING_PERIOD
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += REPORTING_PERIOD
            self.report(loop.time())


class QueueProxy:
    """The running sidecar: servers, background tasks, and the drain sequence."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        self.drainer = Drainer(cfg.drain_quiet_seconds, self.loop)
        self.stats = RequestStats(self.loop.time())
        self.reporter = StatsReporter(self.stats, cfg.pod_name, self.loop.time())
        settings = cfg.breaker
        breaker = (
            Breaker(settings.queue_depth, settings.max_concurrency, settings.initial_capacity)
            if settings is not None
            else None
        )
        metrics = request_metrics(cfg, queue_depth_enabled=breaker is not None)
        self.metrics = metrics
        request_log = request_logger(cfg)
        self.prober = ReadinessProber(
            cfg.probes,
            user_host=cfg.user_host,
            user_port=cfg.user_port,
            auto_http2=cfg.enable_http2_auto_detection,
        )
        idle = cfg.container_concurrency if cfg.container_concurrency > 0 else 1000
        self.pool = UpstreamPool(max_idle_per_host=idle)
        state = QueueProxyState(
            pool=self.pool,
            user_host=cfg.user_host,
            user_port=cfg.user_port,
            stats=self.stats,
            drainer=self.drainer,
            prober=self.prober,
            breaker=breaker,
            metrics=metrics,
            request_log=request_log,
            log_probes=cfg.enable_probe_request_log,
            kubelet_header_probes=cfg.contract == CONTRACT_V1_10,
            deadline=Deadline(
                float(cfg.revision_timeout_seconds),
                float(cfg.response_start_timeout_seconds),
                float(cfg.idle_timeout_seconds),
            ),
        )
        #: The request path's shared state (breaker, stats, timeouts...), for introspection.
        self.state = state
        self.main = HttpServer(QueueProxyHandler(state))
        self.admin = HttpServer(self._admin)
        self.stats_server = HttpServer(self._stats)
        self.metrics_server = HttpServer(self._metrics) if metrics is not None else None
        self._sigterm = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- handlers

    async def _admin(self, ex: Exchange) -> None:
        if ex.target.split(b"?", 1)[0] != b"/wait-for-drain":
            ex.send(404, _NOT_FOUND)
            return
        # A preStop hook: drain as SIGTERM would. If our own SIGTERM does not follow within
        # a second, the container is being restarted by a liveness failure: undo the drain.
        # Like Knative's goroutine, the check runs even if the drain finished first (a quiet
        # period under a second), or the pod would fail its probes until the next SIGTERM.
        self.loop.call_later(PRESTOP_RESET_AFTER, self._reset_unless_terminating)
        await self.drainer.drain()
        ex.send(200)

    def _reset_unless_terminating(self) -> None:
        if not self._sigterm.is_set():
            self.drainer.reset()

    async def _stats(self, ex: Exchange) -> None:
        if ex.target.split(b"?", 1)[0] != b"/metrics":
            ex.send(404, _NOT_FOUND)
            return
        ex.send(200, self.reporter.body, content_type=b"application/protobuf")

    async def _metrics(self, ex: Exchange) -> None:
        if ex.target.split(b"?", 1)[0] != b"/metrics":
            ex.send(404, _NOT_FOUND)
            return
        assert self.metrics is not None
        body = self.metrics.render()
        ex.send(200, body, content_type=b"text/plain; version=0.0.4; charset=utf-8")

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        cfg = self.cfg
        host = cfg.bind_host
        await _listen(self.main, host, cfg.serving_port)
        tls = tls_context(cfg.certs_dir, cfg.tls)
        if tls is not None:
            # Same handler on QUEUE_SERVING_TLS_PORT; the plain port stays up (knative §1.20).
            # The admin port (8022) stays plain HTTP whatever is mounted (Knative #16163).
            await _listen(self.main, host, cfg.tls_port, tls.context)
            self._tasks.append(self.loop.create_task(tls.run()))
        await _listen(self.admin, host, cfg.admin_port)
        await _listen(self.stats_server, host, cfg.stats_port)
        if self.metrics_server is not None:
            await _listen(self.metrics_server, host, cfg.metrics_port)
        self._tasks.append(self.loop.create_task(self.reporter.run(self.loop)))
        # Start probing the user container now, so the first kubelet probe finds it warm.
        self._tasks.append(self.loop.create_task(self._warm_probe()))
        settle_gc()

    async def _warm_probe(self) -> None:
        with contextlib.suppress(Exception):
            await self.prober.check()

    def terminate(self) -> None:
        self._sigterm.set()

    async def run_until_terminated(self) -> None:
        await self._sigterm.wait()
        log.info("received SIGTERM: draining (quiet period %ss)", self.cfg.drain_quiet_seconds)
        await self.drainer.drain()
        log.info("drained: shutting down servers")
        servers = [self.main, self.admin, self.stats_server]
        if self.metrics_server is not None:
            servers.append(self.metrics_server)
        grace = max(self.cfg.revision_timeout_seconds, 1) + DRAIN_MARGIN
        await asyncio.gather(
            *(server.shutdown(grace=grace, tunnel_grace=TUNNEL_GRACE) for server in servers)
        )
        for task in self._tasks:
            task.cancel()
        self.pool.close()


def request_metrics(
    cfg: Config, *, queue_depth_enabled: bool
) -> RequestMetrics | OtelRequestMetrics | None:
    """The request metrics the environment asks for (v1.10.2 or v1.23.0 names), or None."""
    if not cfg.request_metrics_enabled:
        return None
    if cfg.otel_metrics:
        from queueproxy.metrics_otel import OtelRequestMetrics

        family: type[RequestMetrics | OtelRequestMetrics] = OtelRequestMetrics
    else:
        from queueproxy.metrics import RequestMetrics

        family = RequestMetrics
    return family(
        namespace=cfg.namespace,
        service=cfg.service,
        configuration=cfg.configuration,
        revision=cfg.revision,
        pod_name=cfg.pod_name,
        queue_depth_enabled=queue_depth_enabled,
    )


def request_logger(cfg: Config) -> RequestLogger | None:
    """The request log writer when the environment enables it, else None."""
    if not cfg.enable_request_log:
        return None
    from queueproxy.requestlog import RequestLogger, RevisionInfo

    revision = RevisionInfo(
        name=cfg.revision,
        namespace=cfg.namespace,
        service=cfg.service,
        configuration=cfg.configuration,
        pod_name=cfg.pod_name,
        pod_ip=cfg.pod_ip,
    )
    return RequestLogger(cfg.request_log_template, revision)


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) TCP sockets for ``host:port``; every interface, IPv4 and
    IPv6 each on its own socket, when ``host`` is empty. Raises ``OSError``.

    The event loop would resolve the address itself, but uvloop does that on libuv's
    thread pool, whose four threads and their malloc arenas then stay for the life of the
    process (about 0.5 MiB of idle RSS, issue 17). A passive or numeric address needs no
    lookup, so resolving it here does not block. Options as asyncio's ``create_server``:
    ``SO_REUSEADDR``, and ``IPV6_V6ONLY`` so that IPv4 peers keep their IPv4 addresses.
    """
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this host does not have (no IPv6), as asyncio skips it
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                where = f"{address[0]}:{port}"
                raise OSError(exc.errno, f"cannot bind {where}: {exc.strerror}") from exc
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _listen(
    server: HttpServer, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> None:
    socks = listen_sockets(host, port)
    for i, sock in enumerate(socks):
        try:
            await server.start(None, port, sock=sock, ssl_context=ssl_context)
        except BaseException:
            for rest in socks[i:]:
                rest.close()
            raise


def tls_context(certs_dir: str, settings: TlsSettings = LEGACY) -> CertReloader | None:
    """The TLS port's certificate from ``tls.crt``/``tls.key`` in ``certs_dir``, kept fresh
    by a ``CertReloader``; None if the files are absent. Raises ``ssl.SSLError`` if they do
    not load.

    ``settings`` bounds the versions and ciphers (``QUEUE_PROXY_TLS_*`` under v1.23.0;
    v1.10.2: TLS 1.2 and up).
    """
    cert = os.path.join(certs_dir, "tls.crt")
    key = os.path.join(certs_dir, "tls.key")
    if not (os.path.isfile(cert) and os.path.isfile(key)):
        return None

    def build(cert: str, key: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        settings.apply(context)
        context.load_cert_chain(cert, key)
        # Go's server confirms "http/1.1" when a client offers it; a client that insists on
        # ALPN would otherwise drop the connection. h2 is not offered: HTTP/1.1 only.
        context.set_alpn_protocols(["http/1.1"])
        return context

    from queueproxy.certs import CertReloader  # only when a certificate is mounted

    return CertReloader(cert, key, build)


async def serve(cfg: Config) -> int:
    qp = QueueProxy(cfg)
    try:
        await qp.start()
    except ssl.SSLError as exc:
        print(f"queue-proxy: cannot load TLS certificate from {cfg.certs_dir}: {exc}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1
    except OSError as exc:
        print(f"queue-proxy: cannot listen: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qp.terminate)
    log.info(
        "queue-proxy for %s/%s serving on :%d (user port %d, containerConcurrency %d)",
        cfg.namespace,
        cfg.revision,
        cfg.serving_port,
        cfg.user_port,
        cfg.container_concurrency,
    )
    await qp.run_until_terminated()
    return 0


def _setup_logging(level: str) -> None:
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
    logging.basicConfig(
        stream=sys.stderr,
        level=levels.get(level.lower(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.Formatter.converter = time.gmtime


USAGE = """usage: python -m queueproxy

Knative's queue-proxy sidecar. It takes no arguments: like Knative's, it is configured by the
environment the revision controller sets (SERVING_NAMESPACE, SERVING_CONFIGURATION,
SERVING_REVISION, SERVING_POD, SERVING_POD_IP, QUEUE_SERVING_PORT, QUEUE_SERVING_TLS_PORT,
USER_PORT, CONTAINER_CONCURRENCY, REVISION_TIMEOUT_SECONDS, SERVING_LOGGING_CONFIG,
SERVING_LOGGING_LEVEL, and the optional ones). Knative v1.23.0's controller also sets
OBSERVABILITY_CONFIG, and its presence selects that contract; without it the v1.10.2
variables (SERVING_REQUEST_METRICS_BACKEND, ...) apply. Sluice-only overrides:
SLUICE_ADMIN_PORT (8022), SLUICE_STATS_PORT (9090), SLUICE_METRICS_PORT (9091),
SLUICE_DRAIN_QUIET_SECONDS (30), SLUICE_BIND_HOST (all interfaces), SLUICE_USER_HOST
(127.0.0.1), SLUICE_CERTS_DIR (/var/lib/knative/certs). A missing or invalid variable ends
it with one line naming it."""


def main(environ: Mapping[str, str] | None = None, argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        if args[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        print(f"queue-proxy: takes no arguments (got {args[0]!r}); see --help", file=sys.stderr)
        return 2
    env = os.environ if environ is None else environ
    try:
        cfg = load_config(env)
    except (ConfigError, ValueError) as exc:
        print(f"queue-proxy: {exc}", file=sys.stderr, flush=True)
        return 1
    _setup_logging(cfg.logging_level)
    if cfg.observability is not None:
        for note in not_implemented(cfg.observability):
            log.warning("%s", note)
    return run(lambda: serve(cfg))
