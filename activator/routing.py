"""Host and tag routing: what Knative's ingress does in front of the activator.

``RouteTable.build`` compiles a ``RoutingConfig`` once into a dict from normalised host to a
precomputed entry, so ``resolve`` on the hot path is one dict lookup plus a walk over at most
a few cumulative percents. The table is immutable; a new config means a new table.

Semantics (reference §3):

* A route's traffic is grouped: the default group holds every entry, and each tag gets a
  group holding only its own entry. Within a group, entries naming the same revision are
  merged (percents added); a group that merges down to one revision is forced to 100 %; then
  0 % splits are dropped. Hence a 0 % tagged revision is never picked by the default split yet
  gets 100 % on its tag host.
* Default hosts are ``<route>.<ns>.<domain>``, ``<route>.<ns>``, ``<route>.<ns>.svc`` and
  ``<route>.<ns>.svc.<cluster-domain>``; tag hosts are the same with ``<tag>-<route>`` as the
  first label. Matching ignores case, any ``:port`` and a trailing dot.
* With tag-header routing enabled, a ``Knative-Serving-Tag`` header that exactly names a tag
  of the route selects that tag's group on the route's default hosts; an unknown tag falls
  through to the weighted split. The default path then adds ``Knative-Serving-Default-Route:
  true`` and a tag host adds ``Knative-Serving-Tag: <tag>``. With it disabled the header is
  ignored and neither header is added.
* Each request draws independently: ``r = rand() * total`` over the cumulative percents,
  ``total`` being 100 for any validated route. A route with header rules or stickiness
  (opt-in) has its weighted split's decisions carry an ``activator.affinity.Affinity``, which
  the handler consults after the draw; tag hosts and tag-header paths never carry one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from activator.affinity import Affinity
from activator.model import HostRule, Revision, RevisionKey, Route, RoutingConfig, WeightedTarget

__all__ = [
    "DEFAULT_ROUTE_HEADER",
    "TAG_HEADER",
    "RouteDecision",
    "RouteTable",
    "normalise_host",
]

TAG_HEADER = "Knative-Serving-Tag"
DEFAULT_ROUTE_HEADER = "Knative-Serving-Default-Route"


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request goes, and the headers the ingress would set (overwrite) upstream.

    ``set_headers`` holds only the tag-routing headers; the revision and namespace travel in
    the fields (Knative's ``Knative-Serving-Revision``/``-Namespace`` split headers).
    """

    namespace: str
    revision: str
    set_headers: tuple[tuple[str, str], ...] = ()
    #: The route's header rules and stickiness, on its weighted split's decisions only
    #: (``activator.affinity``); None for every route without them.
    policy: Affinity | None = None


@dataclass(frozen=True, slots=True)
class _Split:
    """A weighted choice among decisions; ``bounds`` are the cumulative percents."""

    decisions: tuple[RouteDecision, ...]
    bounds: tuple[int, ...]

    def pick(self, rand: Callable[[], float]) -> RouteDecision:
        decisions = self.decisions
        if len(decisions) == 1:
            return decisions[0]  # no draw: single-target hosts stay deterministic
        bounds = self.bounds
        r = rand() * bounds[-1]
        for i, bound in enumerate(bounds):
            if r < bound:
                return decisions[i]
        return decisions[-1]  # only reachable if rand() returned 1.0


@dataclass(frozen=True, slots=True)
class _HostEntry:
    default: _Split
    #: Tag-header paths; empty on tag hosts and when tag-header routing is off.
    by_tag: Mapping[str, _Split]


def normalise_host(host: str) -> str:
    """Lower-case ``host`` and strip any ``:port`` and a trailing dot."""
    if host.startswith("["):
        end = host.find("]")
        if end >= 0:
            host = host[: end + 1]
    else:
        colon = host.rfind(":")
        if colon >= 0:
            host = host[:colon]
    return host.rstrip(".").lower()


#: Distinct raw Host values remembered by ``RouteTable.resolve_raw`` before it starts over.
_RAW_CACHE_SIZE = 4096


class RouteTable:
    """Host → split table compiled from one ``RoutingConfig``.

    The hosts never change after ``build``; revisions may be added and removed in place by
    the activator's single writer (``put_revision``), for sources that follow a cluster one
    object at a time.
    """

    __slots__ = (
        "_by_raw",
        "_hosts",
        "_owned",
        "_revisions",
        "cluster_domain",
        "domain",
        "tag_header_routing",
    )

    def __init__(
        self,
        hosts: Mapping[str, _HostEntry],
        revisions: Mapping[RevisionKey, Revision],
        *,
        domain: str,
        cluster_domain: str,
        tag_header_routing: bool,
    ) -> None:
        self._hosts = dict(hosts)
        # Host header bytes as clients send them → entry (or None): skips decoding and
        # normalising on every request. Bounded, since clients choose the bytes.
        self._by_raw: dict[bytes, _HostEntry | None] = {}
        self._revisions = dict(revisions)
        #: Hosts added by ``put_rules``, by owner (an ingress object), for in-place changes.
        self._owned: dict[tuple[str, str], list[str]] = {}
        self.domain = domain
        self.cluster_domain = cluster_domain
        self.tag_header_routing = tag_header_routing

    @classmethod
    def build(cls, cfg: RoutingConfig, cluster_domain: str = "cluster.local") -> RouteTable:
        """Compile ``cfg``. When two routes claim one host the first in ``cfg.routes`` wins
        (``parse_config`` rejects such files; other sources should too)."""
        domain = cfg.domain.strip(".").lower()
        cluster_domain = cluster_domain.strip(".").lower()
        hosts: dict[str, _HostEntry] = {}
        for route in cfg.routes:
            for host, entry in _compile_route(
                route, domain, cluster_domain, cfg.tag_header_routing
            ):
                hosts.setdefault(host, entry)
        return cls(
            hosts,
            {rev.key: rev for rev in cfg.revisions},
            domain=domain,
            cluster_domain=cluster_domain,
            tag_header_routing=cfg.tag_header_routing,
        )

    def resolve(
        self, host: str, tag_header: str | None, rand: Callable[[], float]
    ) -> RouteDecision | None:
        """Pick the revision for a request to ``host``; None means no route owns it (404).

        ``tag_header`` is the request's ``Knative-Serving-Tag`` value, if any; ``rand`` returns
        a float in [0, 1) and is called at most once, only when there is a real split.
        """
        entry = self._hosts.get(normalise_host(host))
        if entry is None:
            return None
        if tag_header is not None and entry.by_tag:
            split = entry.by_tag.get(tag_header)
            if split is not None:
                return split.pick(rand)
        return entry.default.pick(rand)

    def resolve_raw(
        self, host: bytes, tag_header: bytes | None, rand: Callable[[], float]
    ) -> RouteDecision | None:
        """``resolve`` for header bytes as received, memoising the host lookup."""
        cache = self._by_raw
        try:
            entry = cache[host]
        except KeyError:
            entry = self._hosts.get(normalise_host(host.decode("latin-1")))
            if len(cache) >= _RAW_CACHE_SIZE:
                cache.clear()
            cache[host] = entry
        if entry is None:
            return None
        if tag_header is not None and entry.by_tag:
            split = entry.by_tag.get(tag_header.decode("latin-1"))
            if split is not None:
                return split.pick(rand)
        return entry.default.pick(rand)

    def lookup_revision(self, namespace: str, name: str) -> Revision | None:
        return self._revisions.get((namespace, name))

    def put_revision(self, revision: Revision) -> None:
        """Add or replace one revision in place (incremental sources; hosts unchanged)."""
        self._revisions[revision.key] = revision

    def remove_revision(self, key: RevisionKey) -> None:
        self._revisions.pop(key, None)

    def put_rules(self, owner: tuple[str, str], rules: tuple[HostRule, ...]) -> None:
        """Make ``rules`` the hosts of ``owner`` (one ingress object), in place.

        Only that owner's hosts change; a host another owner already serves keeps its
        first owner, as ``build`` keeps the first route.
        """
        self.remove_rules(owner)
        hosts: list[str] = []
        for rule in rules:
            default = _split_of(rule.default)
            by_tag = {tag: _split_of(targets) for tag, targets in rule.by_tag}
            if not default.decisions:
                continue  # nothing to route to (every split at 0 %): such hosts answer 404
            if rule.sticky is not None or rule.header_rules:
                default = _rule_affinity(rule, default, by_tag)
            entry = _HostEntry(default, by_tag)
            for host in rule.hosts:
                name = normalise_host(host)
                if name not in self._hosts:
                    self._hosts[name] = entry
                    hosts.append(name)
        self._owned[owner] = hosts
        self._by_raw.clear()

    def remove_rules(self, owner: tuple[str, str]) -> None:
        for host in self._owned.pop(owner, ()):
            self._hosts.pop(host, None)
        self._by_raw.clear()

    @property
    def hosts(self) -> frozenset[str]:
        """Every host the table answers for (normalised)."""
        return frozenset(self._hosts)

    def __repr__(self) -> str:
        return (
            f"RouteTable(hosts={len(self._hosts)}, revisions={len(self._revisions)}, "
            f"domain={self.domain!r}, tag_header_routing={self.tag_header_routing})"
        )


def _compile_route(
    route: Route, domain: str, cluster_domain: str, tag_header_routing: bool
) -> list[tuple[str, _HostEntry]]:
    """Host entries of one route, default hosts first so they win a clash inside the route."""
    ns = route.namespace
    header_paths: dict[str, _Split] = {}
    tag_hosts: list[tuple[str, _HostEntry]] = []
    for target in route.traffic:
        tag = target.tag
        if tag is None or tag in header_paths:
            continue
        # A tag group is one entry, so it is forced to 100 % whatever its percent.
        header_paths[tag] = _make_split(ns, [(target.revision_name, 100)], ())
        headers = ((TAG_HEADER, tag),) if tag_header_routing else ()
        entry = _HostEntry(_make_split(ns, [(target.revision_name, 100)], headers), {})
        tag_hosts += [
            (h, entry) for h in _hosts_for(f"{tag}-{route.name}", ns, domain, cluster_domain)
        ]
    default_headers = ((DEFAULT_ROUTE_HEADER, "true"),) if tag_header_routing else ()
    default = _make_split(
        ns, [(t.revision_name, t.percent) for t in route.traffic], default_headers
    )
    if not default.decisions:
        return tag_hosts  # every split is 0 %: nothing to route to on the default hosts
    if route.sticky is not None or route.header_rules:
        default = _with_affinity(route, default, default_headers, tag_header_routing)
    entry = _HostEntry(default, header_paths if tag_header_routing else {})
    return [(h, entry) for h in _hosts_for(route.name, ns, domain, cluster_domain)] + tag_hosts


def _make_split(
    namespace: str,
    weights: list[tuple[str, int]],
    headers: tuple[tuple[str, str], ...],
) -> _Split:
    merged: dict[str, int] = {}
    for revision, percent in weights:
        merged[revision] = merged.get(revision, 0) + percent
    if len(merged) == 1:
        merged = dict.fromkeys(merged, 100)
    decisions: list[RouteDecision] = []
    bounds: list[int] = []
    cumulative = 0
    for revision, percent in merged.items():
        if percent <= 0:
            continue  # dropped after the 100 % forcing, as the ingress does
        cumulative += percent
        decisions.append(RouteDecision(namespace, revision, headers))
        bounds.append(cumulative)
    return _Split(tuple(decisions), tuple(bounds))


def _with_affinity(
    route: Route, split: _Split, headers: tuple[tuple[str, str], ...], tag_header_routing: bool
) -> _Split:
    """``split`` with the route's ``Affinity`` on each decision (see ``activator.affinity``).
    A rule naming a tag the route lacks is skipped (sources refuse such rules)."""
    ns = route.namespace
    tags = {t.tag: t.revision_name for t in route.traffic if t.tag is not None}
    rules = []
    for rule in route.header_rules:
        if rule.tag is not None:
            revision = tags.get(rule.tag)
            if revision is None:
                continue
            tag_headers = ((TAG_HEADER, rule.tag),) if tag_header_routing else ()
            rules.append((rule, RouteDecision(ns, revision, tag_headers)))
        elif rule.revision is not None:
            rules.append((rule, RouteDecision(ns, rule.revision, headers)))
    policy = Affinity(rules, route.sticky, list(zip(split.decisions, split.bounds, strict=True)))
    decisions = tuple(
        RouteDecision(d.namespace, d.revision, d.set_headers, policy) for d in split.decisions
    )
    return _Split(decisions, split.bounds)


def _split_of(targets: tuple[WeightedTarget, ...]) -> _Split:
    """A split of already-resolved targets (an ingress did the merging); 0 % ones dropped."""
    decisions: list[RouteDecision] = []
    bounds: list[int] = []
    cumulative = 0
    for t in targets:
        if t.percent <= 0 and len(targets) > 1:
            continue
        cumulative += max(t.percent, 1)
        decisions.append(RouteDecision(t.namespace, t.revision, t.headers))
        bounds.append(cumulative)
    return _Split(tuple(decisions), tuple(bounds))


def _hosts_for(label: str, namespace: str, domain: str, cluster_domain: str) -> list[str]:
    base = f"{label}.{namespace}".lower()
    return [f"{base}.{domain}", base, f"{base}.svc", f"{base}.svc.{cluster_domain}"]


def _rule_affinity(rule: HostRule, split: _Split, by_tag: Mapping[str, _Split]) -> _Split:
    """``split`` (an Ingress's default path) with the rule's ``Affinity``: a header rule's tag
    goes where that tag's path goes (its largest share), a revision with the default path's
    headers. A rule naming what the Ingress lacks is skipped (``decode_ingress`` refuses it)."""
    headers = split.decisions[0].set_headers
    namespace = split.decisions[0].namespace
    rules = []
    for header_rule in rule.header_rules:
        if header_rule.tag is not None:
            path = by_tag.get(header_rule.tag)
            if path is None or not path.decisions:
                continue
            widths = [b - a for a, b in zip((0, *path.bounds), path.bounds, strict=False)]
            rules.append((header_rule, path.decisions[widths.index(max(widths))]))
        elif header_rule.revision is not None:
            rules.append((header_rule, RouteDecision(namespace, header_rule.revision, headers)))
    policy = Affinity(rules, rule.sticky, list(zip(split.decisions, split.bounds, strict=True)))
    decisions = tuple(
        RouteDecision(d.namespace, d.revision, d.set_headers, policy) for d in split.decisions
    )
    return _Split(decisions, split.bounds)
