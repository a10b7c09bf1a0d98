"""The queue-proxy's idle footprint (issue 17: idle RSS no more than Go's sidecar).

What is checked is the mechanism, not a number of MiB (which depends on the host): optional
parts are not imported unless the environment turns them on, and listening on every
interface starts no resolver threads.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from queueproxy.main import listen_sockets
from tests.e2e.test_qp_v123_process import env_for, start_app
from tests.e2e.test_queueproxy_process import kill, start_queue_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
#: Modules only some environments need: request metrics (v1.10.2 and v1.23.0 names), the
#: request log's template engine, the gRPC health client, certificate reloading, and what
#: only they pull in.
OPTIONAL = (
    "queueproxy.metrics",
    "queueproxy.metrics_otel",
    "queueproxy.requestlog",
    "queueproxy.grpc_health",
    "queueproxy.certs",
    "proxy.dataplane.promtext",
    "proxy.dataplane.procmetrics",
    "decimal",
)


@pytest.fixture(scope="module")
def tcp_app_port() -> Iterator[int]:
    proc, port = start_app("echo_app.py")
    try:
        yield port
    finally:
        kill(proc)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_entry_point_imports_no_optional_part() -> None:
    code = (
        "import sys, queueproxy.main\n"
        f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_started_sidecar_on_every_interface_runs_one_thread(
    tcp_app_port: int, tmp_path: Path
) -> None:
    # The env Knative v1.23.0 writes: request metrics "none", no request log, a TCP probe.
    # SLUICE_BIND_HOST="" is the production default: every interface, v4 and v6.
    env = env_for(tcp_app_port, SLUICE_BIND_HOST="")
    qp = start_queue_proxy(env, tmp_path)
    try:
        assert _threads(qp.pid) == 1
    finally:
        kill(qp.proc)


def test_listen_sockets_binds_a_numeric_address() -> None:
    socks = listen_sockets("127.0.0.1", 0)
    try:
        assert [s.family for s in socks] == [socket.AF_INET]
        assert socks[0].getsockname()[0] == "127.0.0.1"
    finally:
        for s in socks:
            s.close()


def test_listen_sockets_names_the_address_it_cannot_bind() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            listen_sockets("127.0.0.1", port)
    assert caught.value.errno == errno.EADDRINUSE
    assert f"cannot bind 127.0.0.1:{port}" in str(caught.value)
