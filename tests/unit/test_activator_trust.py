"""Whose routing headers the activator believes, per mode (issue 15 item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from activator.settings import Settings
from activator.trust import ANYONE, NOBODY, RoutingTrust


def test_parse_and_match_networks() -> None:
    trust = RoutingTrust.parse(" 10.0.0.0/8 , fd00::/8,192.168.1.7")
    assert trust.trusts("10.1.2.3") and trust.trusts("192.168.1.7")
    assert trust.trusts("::ffff:10.9.9.9")  # an IPv4 client on a dual-stack socket
    assert trust.trusts("fd00::1")
    assert not trust.trusts("11.0.0.1") and not trust.trusts("") and not trust.trusts("x")
    assert RoutingTrust.parse("") == NOBODY and not NOBODY.trusts("127.0.0.1")
    assert ANYONE.trusts("203.0.113.9") and ANYONE.trusts("2001:db8::1")


def test_a_bad_network_names_the_flag() -> None:
    with pytest.raises(ValueError, match=r"--trust-routing-headers-from: invalid network 'x/9'"):
        Settings(trust_routing_headers_from="10.0.0.0/8,x/9")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(), ANYONE),  # Kubernetes mode behind Knative's ingress
        (Settings(ingress_class="sluice.ingress.networking.knative.dev"), NOBODY),
        (Settings(config=Path("routes.yaml")), NOBODY),  # file mode: faces clients
        (Settings(config=Path("<embedded>")), NOBODY),  # embedded mode
        (Settings(config=Path("r.yaml"), trust_routing_headers_from="10.0.0.0/8"),
         RoutingTrust.parse("10.0.0.0/8")),
    ],
)  # fmt: skip
def test_each_mode_has_its_default(settings: Settings, expected: RoutingTrust) -> None:
    assert settings.routing_trust == expected
