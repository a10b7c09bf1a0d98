"""``config-network`` as the activator reads it once at start-up (Kubernetes mode)."""

from __future__ import annotations

import pytest

from activator.kube.startup import NetworkError, network_settings
from activator.model import MeshMode, NetworkChanged


def test_defaults_are_knatives() -> None:
    assert network_settings({"_example": "..."}) == NetworkChanged(MeshMode.AUTO, False)


def test_mesh_settings_are_read() -> None:
    settings = network_settings(
        {"mesh-compatibility-mode": "Disabled", "enable-mesh-pod-addressability": "true"}
    )
    assert settings == NetworkChanged(MeshMode.DISABLED, True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mesh-compatibility-mode": "sometimes"}, "mesh-compatibility-mode: invalid value"),
        ({"enable-mesh-pod-addressability": "yes!"}, "enable-mesh-pod-addressability"),
        ({"system-internal-tls": "Enabled"}, "system-internal-tls is enabled"),
        ({"internal-encryption": "true"}, "system-internal-tls is enabled"),
    ],
)
def test_bad_or_unsupported_values_are_one_line_errors(data: dict[str, str], message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        network_settings(data)
