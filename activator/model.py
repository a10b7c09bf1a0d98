"""Value objects describing what the activator routes to.

Every source (static YAML file, the embedded control plane, Kubernetes) produces these same
frozen values; the router and the throttler consume nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.deadline import Deadline

DEFAULT_DOMAIN = "localhost"
DEFAULT_QUEUE_DEPTH = 10000
DEFAULT_TIMEOUT_SECONDS = 300
#: The 504 body when one of a revision's timeouts expires in the activator.
TIMEOUT_MESSAGE = "activator request timeout"


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    """One entry of a Route's ``traffic`` list, already resolved to a revision name."""

    revision_name: str
    percent: int
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    namespace: str
    traffic: tuple[TrafficTarget, ...]


@dataclass(frozen=True, slots=True)
class Revision:
    """A revision as the data plane needs it. ``endpoints`` are queue-proxy ``host:port``."""

    name: str
    namespace: str
    container_concurrency: int = 0
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    response_start_timeout_seconds: int = 0
    idle_timeout_seconds: int = 0
    endpoints: tuple[str, ...] = ()
    service: str = ""
    configuration: str = ""
    #: ``(namespace, name)``: the revision's identity everywhere in the activator.
    key: tuple[str, str] = field(init=False, repr=False, compare=False)
    #: The three timeouts above as the policy every request to this revision is watched by.
    deadline: Deadline = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: the request path uses them on every request.
        object.__setattr__(self, "key", (self.namespace, self.name))
        deadline = Deadline(
            float(self.timeout_seconds),
            float(self.response_start_timeout_seconds),
            float(self.idle_timeout_seconds),
            TIMEOUT_MESSAGE,
        )
        object.__setattr__(self, "deadline", deadline)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Everything the activator needs to route: the whole state of one source at one time."""

    domain: str = DEFAULT_DOMAIN
    tag_header_routing: bool = False
    queue_depth: int = DEFAULT_QUEUE_DEPTH
    routes: tuple[Route, ...] = ()
    revisions: tuple[Revision, ...] = ()
    scaler_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)
