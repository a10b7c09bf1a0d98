"""Whose ``Knative-Serving-Namespace`` / ``-Revision`` headers the activator believes.

Those headers pick any revision in any namespace, even one no route exposes. Knative's
ingress sets them on the requests it sends to the activator, so in Kubernetes mode behind
such an ingress they are trusted, as Knative's activator trusts them. Where Sluice's
activator faces clients itself (embedded mode, the static file source, or its own ingress
class) they come from the internet: there they are ignored (and, as everywhere, never passed
to a pod) unless the request comes from a network configured as an ingress
(``--trust-routing-headers-from``).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

__all__ = ["ANYONE", "NOBODY", "RoutingTrust"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RoutingTrust:
    """The client networks whose routing headers are believed; empty: nobody's."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> RoutingTrust:
        """``"10.0.0.0/8,fd00::/8"`` (comma-separated CIDRs or addresses; empty: nobody).
        Raises ``ValueError`` naming ``--trust-routing-headers-from`` and the bad entry."""
        networks = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"--trust-routing-headers-from: invalid network {item!r}"
                ) from None
        return cls(tuple(networks))

    def trusts(self, peer: str) -> bool:
        """Whether routing headers from the client address ``peer`` are believed."""
        return bool(self.networks) and _trusted(self.networks, peer)


@functools.lru_cache(maxsize=1024)
def _trusted(networks: tuple[Network, ...], peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False  # a Unix socket or an unknown peer: not an ingress we know
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


#: Nobody's routing headers are believed (a gateway facing clients).
NOBODY = RoutingTrust()
#: Everyone's (Kubernetes mode behind Knative's ingress, as Knative's activator).
ANYONE = RoutingTrust.parse("0.0.0.0/0,::/0")
