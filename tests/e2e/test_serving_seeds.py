"""Knative's tutorial manifests, unchanged but for the image name, through ``sluice up`` and
real Podman: hello, then a 50/50 split, then envFrom and resources.limits; after a SIGKILL,
the next ``sluice up`` removes what the killed one left and serves again.

Needs ``podman``, ``runc`` and ``busybox-static`` (it FAILS, never skips, without them). The
image is ``examples/images/Containerfile``: busybox httpd answering "Hello $TARGET!".
"""

from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.containers import LABEL, OWNER_LABEL, ContainerRuntime, detect_runtime, owner_id
from tests.e2e.test_serving_podman import leftovers
from tests.e2e.test_serving_support import EXAMPLES, Sluice

pytestmark = pytest.mark.e2e
SEEDS = EXAMPLES / "images"
IMAGE = "localhost/sluice-hello:1"
CONFIGURED = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  TARGET: ConfigMap
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: configured
spec:
  template:
    spec:
      containers:
        - image: localhost/sluice-hello:1
          envFrom:
            - configMapRef:
                name: greeting
          resources:
            limits:
              cpu: 500m
              memory: 128Mi
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerRuntime]:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("podman") is None or not Path(busybox).exists():
        pytest.fail(
            "podman and busybox-static are required: apt-get install -y podman runc busybox-static"
        )
    rt = detect_runtime("podman")
    assert rt is not None
    ctx = tmp_path_factory.mktemp("seed-image")
    shutil.copytree(SEEDS / "www", ctx / "www")
    shutil.copy(SEEDS / "Containerfile", ctx / "Containerfile")
    shutil.copy(busybox, ctx / "busybox")
    subprocess.run([*rt.base, "build", "-q", "-t", IMAGE, str(ctx)], check=True, timeout=300,
                   capture_output=True)  # fmt: skip
    yield rt
    for cid in leftovers(rt).split():
        subprocess.run([*rt.base, "rm", "-f", cid], timeout=60, capture_output=True)


def hello(port: int, service: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/", headers={"Host": f"{service}.default.localhost"})
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        assert resp.status == 200, body
        return body
    finally:
        conn.close()


def podman(rt: ContainerRuntime, *args: str) -> str:
    out = subprocess.run([*rt.base, *args], capture_output=True, text=True, timeout=60,
                         check=True)  # fmt: skip
    return out.stdout.strip()


@pytest.mark.timeout(400)
def test_seed_manifests_serve_through_podman_and_survive_a_sigkill(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    s = Sluice(tmp_path / "state")
    owner = owner_id(s.state_dir)
    s.start(SEEDS / "1-hello.yaml", extra=["--runtime", "podman"])
    try:
        s.wait_ready("hello", "hello-world", timeout=120)
        assert hello(s.port, "hello") == "Hello World! (revision hello-world)"

        s.cli("apply", "-f", str(SEEDS / "2-split.yaml"), "--wait", "--timeout", "120")
        seen = {hello(s.port, "hello") for _ in range(40)}
        assert seen == {"Hello World! (revision hello-world)",
                        "Hello Knative! (revision hello-knative)"}  # fmt: skip

        configured = tmp_path / "configured.yaml"
        configured.write_text(CONFIGURED)
        s.cli("apply", "-f", str(configured), "--wait", "--timeout", "120")
        assert hello(s.port, "configured") == "Hello ConfigMap! (revision configured-00001)"
        name = f"sluice-{owner}-default-configured-00001-deployment-1"
        limits = podman(runtime, "container", "inspect", "--format",
                        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}", name)  # fmt: skip
        assert limits == "134217728 500000000"
    finally:
        s.stop(signal.SIGKILL)

    # A container the killed run might have left, with the name the next run will want.
    planted = f"sluice-{owner}-default-hello-world-deployment-1"
    subprocess.run([*runtime.base, "rm", "-f", planted], capture_output=True, timeout=60)
    podman(runtime, "create", "--name", planted, "--label", f"{LABEL}={planted}",
           "--label", f"{OWNER_LABEL}={owner}", IMAGE)  # fmt: skip
    s.start(extra=["--runtime", "podman"])
    try:
        seen = {hello(s.port, "hello") for _ in range(20)}
        assert "Hello World! (revision hello-world)" in seen
        log = (s.state_dir.parent / f"up-{s.port}.log").read_text()
        assert "container(s) left by a previous run" in log
    finally:
        assert s.stop() == 0
    assert leftovers(runtime) == ""
