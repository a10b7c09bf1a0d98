"""``python -m activator``: flags, environment, start-up checks and signal handling.

Two modes, chosen by ``--config``:

* **Kubernetes** (no ``--config``): the drop-in for Knative's activator Deployment. It reads
  Knative's environment (``POD_NAME``, ``POD_IP``, ``SYSTEM_NAMESPACE`` required;
  ``CONFIG_LOGGING_NAME``, ``CONFIG_OBSERVABILITY_NAME``, ``PROBE_TIMEOUT``,
  ``PROBE_FREQUENCY``, ``MAX_IDLE_PROXY_CONNS``, ``MAX_IDLE_PROXY_CONNS_PER_HOST``,
  ``CLUSTER_DOMAIN`` optional), authenticates in-cluster (service-account token, re-read
  periodically, and the cluster CA) or with ``--kubeconfig``, waits up to 60 s for the API
  server's ``/version``, reads ``config-network`` once, then lists and watches Revisions,
  Endpoints, Services and its ConfigMaps, and reports to Knative's autoscaler over its
  websocket. It serves on 8012 and 8013 and is not ready until the first lists are done and
  the autoscaler socket is up. See ``activator.kube.run`` and docs/kubernetes.md.
* **Static file** (``--config FILE``): routes, revisions and pod addresses from a YAML file,
  re-read when it changes and on SIGHUP; an optional webhook scaler.

Start-up with an invalid flag, variable or file prints one line on stderr and exits 1.
SIGTERM (or SIGINT) fails kubelet probes at once, serves for ``--drain-seconds`` (45), then
waits for in-flight requests and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from activator.app import DRAIN_SECONDS, Activator, Settings
from activator.kubeenv import SLUICE_INGRESS_CLASS, KubeEnv, KubeEnvError, load_kube_env
from activator.source import StaticFileSource
from activator.static_yaml import ConfigError
from activator.workers import supervise
from proxy.runner import run

__all__ = ["main", "parse_settings"]

log = logging.getLogger("sluice.activator")

_LOG_LEVELS = ("debug", "info", "warning", "error")

_EPILOG = """\
Kubernetes mode (no --config) reads Knative's activator environment: POD_NAME, POD_IP and
SYSTEM_NAMESPACE (required), CONFIG_LOGGING_NAME (config-logging), CONFIG_OBSERVABILITY_NAME
(config-observability), PROBE_TIMEOUT (300ms), PROBE_FREQUENCY (200ms), MAX_IDLE_PROXY_CONNS
(1000), MAX_IDLE_PROXY_CONNS_PER_HOST (100), CLUSTER_DOMAIN (else /etc/resolv.conf, else
cluster.local). It authenticates in-cluster (KUBERNETES_SERVICE_HOST/PORT, the service-account
token and CA) unless --kubeconfig (or KUBECONFIG) is given, needs only Knative's activator
RBAC, serves HTTP on 8012 and 8013 (h2c revisions are not supported yet), metrics on 9090,
and reports to ws://autoscaler.<SYSTEM_NAMESPACE>.svc.<cluster-domain>:8080/ unless
--autoscaler-url is given. See docs/kubernetes.md.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit code 1, like every other start-up error.
        self.exit(1, f"activator: {message}\n")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m activator",
        description="Sluice activator: Knative's activator (Kubernetes mode, the default) "
        "or a standalone gateway fed by a YAML file (--config).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=None, help="static source YAML file (file mode)")
    p.add_argument(
        "--kubeconfig",
        default=env.get("KUBECONFIG") or None,
        help="kubeconfig for development (Kubernetes mode; default: in-cluster)",
    )
    p.add_argument(
        "--autoscaler-url",
        default=None,
        help="Knative autoscaler websocket (Kubernetes mode; default from SYSTEM_NAMESPACE)",
    )
    p.add_argument(
        "--ingress-class",
        default=None,
        help="Kubernetes mode: also be the Knative ingress for Ingresses of this class "
        f"(e.g. {SLUICE_INGRESS_CLASS}; needs deploy/kubernetes/ingress RBAC)",
    )
    p.add_argument(
        "--trust-routing-headers-from",
        default=None,
        metavar="CIDR[,CIDR...]",
        help="client networks whose Knative-Serving-Namespace/-Revision headers pick the "
        "revision (default: any client in Kubernetes mode without --ingress-class, as behind "
        "Knative's ingress; none otherwise, where the activator faces clients)",
    )
    p.add_argument("--host", default="", help="listen address (default: all interfaces)")
    p.add_argument("--port", type=int, default=8012)
    p.add_argument(
        "--h2c-port",
        type=int,
        default=None,
        help="second data port, Knative's h2c port (default 8013 in Kubernetes mode, "
        "none in file mode; -1 turns it off)",
    )
    p.add_argument("--metrics-port", type=int, default=9090, help="worker i uses this + i")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    p.add_argument("--worker-index", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--drain-seconds", type=float, default=DRAIN_SECONDS)
    p.add_argument("--pod-name", default=env.get("POD_NAME") or "activator")
    p.add_argument("--scaler-url", default=None, help="file mode: POST stats here")
    p.add_argument("--log-level", default="info", choices=_LOG_LEVELS)
    p.add_argument(
        "--server-timing",
        action="store_true",
        help="answer every request that waited for capacity with a Server-Timing breakdown",
    )
    return p


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Flags (and, in Kubernetes mode, the environment) → ``Settings``.

    Raises ``ValueError`` (one line naming the flag or variable) or exits 1 on a bad flag.
    """
    environ = os.environ if env is None else env
    ns = _parser(environ).parse_args(list(argv))
    index = ns.worker_index
    if ns.workers == 1 and index < 0:
        index = 0
    h2c_port = ns.h2c_port
    extra: dict[str, object] = {}
    if ns.config is None:
        kube = load_kube_env(environ)
        h2c_port = 8013 if h2c_port is None else h2c_port
        extra = {
            "pod_name": kube.pod_name,
            "pod_ip": kube.pod_ip,
            "cluster_domain": kube.cluster_domain,
            "probe_interval": kube.probe_frequency,
            "probe_timeout": kube.probe_timeout,
            "max_idle_conns": kube.max_idle_conns,
            "max_idle_per_host": kube.max_idle_per_host,
        }
    else:
        extra = {"pod_name": ns.pod_name}
    return Settings(
        config=ns.config,
        host=ns.host,
        port=ns.port,
        h2c_port=None if h2c_port is None or h2c_port < 0 else h2c_port,
        metrics_port=ns.metrics_port,
        workers=ns.workers,
        worker_index=index,
        drain_seconds=ns.drain_seconds,
        log_level=ns.log_level,
        scaler_url=ns.scaler_url,
        kubeconfig=ns.kubeconfig,
        autoscaler_url=ns.autoscaler_url,
        ingress_class=ns.ingress_class,
        server_timing=ns.server_timing,
        trust_routing_headers_from=ns.trust_routing_headers_from,
        **extra,  # type: ignore[arg-type]
    )


async def serve(settings: Settings, activator: Activator, reload: bool = False) -> int:
    """Run one started activator until SIGTERM/SIGINT has been handled; returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    source = activator.source
    if reload and isinstance(source, StaticFileSource):
        loop.add_signal_handler(signal.SIGHUP, source.reload)
    try:
        await activator.start(wait_for_config=settings.config is not None)
    except OSError as exc:
        print(f"activator: cannot listen: {exc}", file=sys.stderr)
        await activator.close()
        return 1
    await stop.wait()
    log.info("received SIGTERM")
    # Signals during the drain change nothing: the drain already runs.
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    await activator.drain()
    log.info("drained, exiting")
    return 0


async def _serve_file(settings: Settings, source: StaticFileSource) -> int:
    return await serve(settings, Activator(settings, source), reload=True)


async def _serve_kubernetes(settings: Settings, kube: KubeEnv) -> int:
    # Imported here: file mode never loads the Kubernetes client.
    from activator.kube.run import StartupError, build_activator

    try:
        activator = build_activator(settings, kube)
    except StartupError as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 1
    try:
        return await serve(settings, activator)
    finally:
        await activator.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(args)
    except (ValueError, KubeEnvError) as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}] %(message)s",
        stream=sys.stderr,
    )
    if settings.config is None:
        kube = load_kube_env(os.environ)
        if settings.worker_index < 0:
            return run(lambda: supervise(args, settings.workers))
        return run(lambda: _serve_kubernetes(settings, kube))
    try:
        source = StaticFileSource.open(settings.config)
    except ConfigError as exc:
        print(f"activator: {exc}", file=sys.stderr)
        return 1
    if settings.worker_index < 0:
        return run(lambda: supervise(args, settings.workers))
    return run(lambda: _serve_file(settings, source))
