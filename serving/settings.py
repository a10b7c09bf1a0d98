"""``sluice up`` settings: one frozen value built from flags and the environment in one place."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from activator.model import DEFAULT_DOMAIN
from serving.autoscaling_config import AutoscalerConfig, parse_autoscaler_overrides
from serving.podspec import DRAIN_QUIET_SECONDS

DEFAULT_PORT = 8080
#: The API listens next to the activator's port, on loopback only: it can apply manifests
#: that run commands, so it must never be reachable from another machine.
DEFAULT_API = "127.0.0.1:8081"
API_ENV = "SLUICE_API"
QUEUE_PROXY_ENV = "SLUICE_QUEUE_PROXY_COMMAND"
#: Knative scrapes each pod every second and decides every two seconds.
SCRAPE_INTERVAL = 1.0
DECIDE_INTERVAL = 2.0


def default_state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_DATA_HOME/sluice``, else ``~/.local/share/sluice``."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sluice"


def api_address(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The ``--api`` flag, else ``$SLUICE_API``, else ``127.0.0.1:8081``."""
    return flag or environ.get(API_ENV) or DEFAULT_API


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or a bare port) → ``(host, port)``; ``ValueError`` if malformed."""
    address = address.removeprefix("http://").rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", address
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"invalid address {address!r}: want host:port") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid address {address!r}: port out of range")
    return host.strip("[]") or "127.0.0.1", number


@dataclass(frozen=True, slots=True)
class UpSettings:
    state_dir: Path
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    api: str = DEFAULT_API
    domain: str = DEFAULT_DOMAIN
    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    queue_proxy_argv: tuple[str, ...] = (sys.executable, "-m", "queueproxy")
    drain_quiet_seconds: float = DRAIN_QUIET_SECONDS
    scrape_interval: float = SCRAPE_INTERVAL
    decide_interval: float = DECIDE_INTERVAL
    #: Apply the manifests given to ``up`` even though the state is not fresh (``--reapply``).
    reapply: bool = False
    #: Clear the state before starting (``--fresh``), as ``sluice reset`` does.
    fresh: bool = False
    #: ``--server-timing``: every cold start answers with its ``Server-Timing`` breakdown.
    server_timing: bool = False

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def revision_log_dir(self, namespace: str, revision: str) -> Path:
        """Where a revision's pods log: keyed by namespace, as revision names are per
        namespace."""
        return self.log_dir / namespace / revision


def queue_proxy_argv(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The queue-proxy command: ``$SLUICE_QUEUE_PROXY_COMMAND`` (shell words) if set, else
    ``python -m queueproxy`` with Sluice's interpreter."""
    raw = environ.get(QUEUE_PROXY_ENV, "").strip()
    return tuple(shlex.split(raw)) if raw else (sys.executable, "-m", "queueproxy")


def autoscaler_from_flags(pairs: Sequence[str]) -> AutoscalerConfig:
    """``--autoscaler KEY=VALUE`` flags → config; ``ValueError`` naming the bad flag."""
    return parse_autoscaler_overrides(list(pairs))
