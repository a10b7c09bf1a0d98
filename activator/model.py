"""Value objects describing what the activator routes to.

Every source (static YAML file, the embedded control plane, Kubernetes) produces these same
frozen values; the router and the throttler consume nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from proxy.dataplane.deadline import Deadline

#: ``(namespace, name)``: a revision's identity everywhere in the activator.
RevisionKey = tuple[str, str]
#: How the activator talks to a revision's pods: HTTP/1.1 (port ``http``, 8012) or h2c
#: (port ``http2``, 8013), from the name of the user container's port.
Protocol = Literal["http1", "h2c"]

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


#: How a sticky route pins a client: by a cookie the activator sets, or by a request header
#: the client sends (its value hashed onto the split).
StickyMode = Literal["cookie", "header"]
DEFAULT_STICKY_TTL_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Stickiness:
    """A route's revision pinning during a split (``activator.affinity``). ``name`` is the
    cookie's name (cookie mode) or the request header's, lower-case (header mode)."""

    mode: StickyMode
    name: str
    ttl_seconds: int = DEFAULT_STICKY_TTL_SECONDS


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """``header: value`` → a revision or a tag of the route (exactly one of them).
    ``header`` is lower-case; ``value`` matches exactly."""

    header: str
    value: str
    revision: str | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    namespace: str
    traffic: tuple[TrafficTarget, ...]
    #: Opt-in stickiness of the weighted split (None: every request draws anew).
    sticky: Stickiness | None = None
    #: Evaluated in order before the weighted pick; the first match wins.
    header_rules: tuple[HeaderRule, ...] = ()


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
    protocol: Protocol = "http1"
    #: Whether a pod may take traffic once its queue-proxy passes the activator's probe,
    #: before Kubernetes calls it ready (off for exec readiness probes and startup probes).
    probe_optimisation: bool = True
    #: ``sluice.dev/server-timing``: cold starts of this revision answer with a
    #: ``Server-Timing`` header (``activator.coldstart``).
    server_timing: bool = False
    #: ``(namespace, name)``: the revision's identity everywhere in the activator.
    key: RevisionKey = field(init=False, repr=False, compare=False)
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


# --------------------------------------------------------------- incremental updates
# Sources that follow a cluster (Kubernetes) change one object at a time; each event becomes
# one of these values on the activator's update queue, and its single writer applies it to
# the one revision it names, never rebuilding the whole routing state.


@dataclass(frozen=True, slots=True)
class RevisionChanged:
    """A revision was added or its spec changed."""

    revision: Revision


@dataclass(frozen=True, slots=True)
class RevisionRemoved:
    key: RevisionKey


@dataclass(frozen=True, slots=True)
class PodsChanged:
    """A revision's pods as its private Endpoints list them (``ip:port``, by readiness)."""

    key: RevisionKey
    ready: frozenset[str]
    not_ready: frozenset[str]


@dataclass(frozen=True, slots=True)
class PodsRemoved:
    """A revision's private Endpoints were deleted: stop watching its pods."""

    key: RevisionKey


@dataclass(frozen=True, slots=True)
class ClusterIPChanged:
    """The private Service's ``ip:port`` for the ClusterIP fallback (None: no Service)."""

    key: RevisionKey
    dest: str | None


@dataclass(frozen=True, slots=True)
class ActivatorsChanged:
    """This activator's share of a revision: how many activators front it and which one
    this process is (from the revision's public Endpoints)."""

    key: RevisionKey
    count: int
    index: int


class MeshMode(enum.Enum):
    """``config-network`` ``mesh-compatibility-mode``."""

    AUTO = "auto"
    ENABLED = "enabled"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class NetworkChanged:
    """``config-network`` as read at start-up: how pods are reached (mesh compatibility) and
    whether requests go through the mesh's pod addressing (``enable-mesh-pod-addressability``)."""

    mesh_mode: MeshMode = MeshMode.AUTO
    passthrough: bool = False


@dataclass(frozen=True, slots=True)
class WeightedTarget:
    """One split of a host rule: a revision, its share, and the headers set on the way."""

    namespace: str
    revision: str
    percent: int
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HostRule:
    """Routing for a set of hosts, already resolved by an ingress controller: the default
    weighted split and the ``Knative-Serving-Tag`` header paths (tag, split)."""

    hosts: tuple[str, ...]
    default: tuple[WeightedTarget, ...]
    by_tag: tuple[tuple[str, tuple[WeightedTarget, ...]], ...] = ()
    #: The route's stickiness and header rules (from the Ingress's ``sluice.dev/``
    #: annotations, which Knative copies from the Route); see ``activator.affinity``.
    sticky: Stickiness | None = None
    header_rules: tuple[HeaderRule, ...] = ()


@dataclass(frozen=True, slots=True)
class IngressChanged:
    """The host rules of one ingress object (``key`` = its namespace and name)."""

    key: tuple[str, str]
    rules: tuple[HostRule, ...]


@dataclass(frozen=True, slots=True)
class IngressRemoved:
    key: tuple[str, str]


IncrementalUpdate = (
    RevisionChanged
    | RevisionRemoved
    | PodsChanged
    | PodsRemoved
    | ClusterIPChanged
    | ActivatorsChanged
    | IngressChanged
    | IngressRemoved
    | NetworkChanged
)
