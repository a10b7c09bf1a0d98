"""Queue-proxy probe answers under faults (issue 15, item 4)."""

from __future__ import annotations

import asyncio
import json

import pytest

from queueproxy.readiness import parse_probe
from tests.component.test_queueproxy_handler import QpRig, rig
from tests.ports import closed_port

__all__ = ["rig"]

pytestmark = pytest.mark.timeout(20)

ACTIVATOR_PROBE = b"User-Agent: Knative-Activator-Probe\r\nK-Network-Probe: queue\r\n"


async def test_activator_probe_answers_fast_while_the_app_is_down(rig: QpRig) -> None:
    """An aggressive check polls for 10 s while the app is down; the activator, which
    probes every 200 ms with a 300 ms timeout, gets a 503 at once instead."""
    up = await rig.upstream()
    down = parse_probe(json.dumps({"tcpSocket": {"host": "127.0.0.1", "port": closed_port()}}))
    assert down is not None and down.aggressive
    qp = await rig.start(up.port, readiness_probe=down)
    loop = asyncio.get_running_loop()
    for _ in range(3):
        started = loop.time()
        resp = await rig.get(qp.main.port, b"/", ACTIVATOR_PROBE)
        assert (resp.status, resp.body) == (503, b"")
        assert loop.time() - started < 1.0
