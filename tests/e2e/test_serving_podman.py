"""A pod whose container is an image runs through real Podman and leaves nothing behind.

Needs ``podman`` and ``runc`` (Debian packages ``podman runc busybox-static``): the test FAILS,
never skips, when they are missing. The image is built here, ``FROM scratch`` with the host's
static busybox serving HTTP, since no registry is reachable.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.containers import LABEL, ContainerRuntime, detect_runtime
from serving.manifest import Container, RevisionTemplate
from serving.pods import LocalPod, allocate_ports
from serving.podspec import build_pod_plan

pytestmark = pytest.mark.e2e
IMAGE = "localhost/sluice-test-httpd:1"


def leftovers(rt: ContainerRuntime) -> str:
    out = subprocess.run(
        [*rt.base, "ps", "-a", "-q", "--filter", f"label={LABEL}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerRuntime]:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if shutil.which("podman") is None or not Path(busybox).exists():
        pytest.fail(
            "podman and busybox-static are required: apt-get install -y podman runc busybox-static"
        )
    rt = detect_runtime("podman")
    assert rt is not None
    ctx = tmp_path_factory.mktemp("image")
    shutil.copy(busybox, ctx / "busybox")
    (ctx / "www").mkdir()
    (ctx / "www" / "index.html").write_text("hello from busybox\n")
    (ctx / "Containerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n"
        'ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-h", "/www"]\n'
        'CMD ["-p", "8080"]\n'
    )
    subprocess.run(
        [*rt.base, "build", "-q", "-t", IMAGE, str(ctx)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    yield rt
    for cid in leftovers(rt).split():
        subprocess.run([*rt.base, "rm", "-f", cid], timeout=60, capture_output=True)


async def test_image_serves_through_queue_proxy_and_is_removed(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    # The image's CMD hard-codes 8080; args use $(PORT) as seed manifests do.
    template = RevisionTemplate(container=Container(image=IMAGE, args=("-p", "$(PORT)")))
    plan = build_pod_plan(
        template,
        namespace="default",
        service="hello",
        revision="hello-00001",
        pod="hello-00001-deployment-1",
        ports=allocate_ports(),
        workdir=str(tmp_path),
        base_env=dict(os.environ),
        queue_proxy_argv=(sys.executable, "-m", "queueproxy"),
        runtime=runtime,
    )
    changed = asyncio.Event()
    pod = LocalPod(plan, tmp_path, on_change=lambda p: changed.set(), on_event=lambda *a: None)
    pod.start()
    try:
        async with asyncio.timeout(120):
            while not pod.ready:
                changed.clear()
                await changed.wait()
            host, port = plan.endpoint.split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /index.html HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n")
            body = await reader.read()
            writer.close()
        assert b"200 OK" in body.split(b"\r\n", 1)[0] and b"hello from busybox" in body
    finally:
        async with asyncio.timeout(60):
            await pod.stop(grace=10)
    assert leftovers(runtime) == ""


async def test_failed_pull_is_image_pull_backoff_with_the_runtimes_message(
    runtime: ContainerRuntime, tmp_path: Path
) -> None:
    template = RevisionTemplate(container=Container(image="localhost/sluice-absent:1"))
    plan = build_pod_plan(
        template,
        namespace="default",
        service="absent",
        revision="absent-00001",
        pod="absent-00001-deployment-1",
        ports=allocate_ports(),
        workdir=str(tmp_path),
        base_env=dict(os.environ),
        runtime=runtime,
    )
    changed = asyncio.Event()
    pod = LocalPod(plan, tmp_path, on_change=lambda p: changed.set(), on_event=lambda *a: None)
    pod.start()
    try:
        async with asyncio.timeout(120):
            while pod.failure is None:
                changed.clear()
                await changed.wait()
        assert pod.failure.reason == "ImagePullBackOff"
        assert "localhost/sluice-absent" in pod.failure.message
        assert "\n" not in pod.failure.message and not pod.ready
    finally:
        async with asyncio.timeout(60):
            await pod.stop(grace=10)
    assert leftovers(runtime) == ""
