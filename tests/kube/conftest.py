"""Fixtures of the ``kube`` tier: one real control plane and one fake node per session.

* ``kube_cluster`` (session): :class:`tests.kube.cluster.KubeCluster`: etcd, kube-apiserver,
  Knative v1.23's CRDs/RBAC/ConfigMaps, Knative's controller and autoscaler. Fails (does not
  skip) with one line when the Go peers are not built.
* ``fake_node`` (session): :class:`tests.kube.kubelet.FakeNode` running revision pods; the
  queue-proxy is Knative's Go ``queue`` unless ``SLUICE_KUBE_QUEUE_PROXY=sluice``; a test
  may pick another for its namespace with ``fake_node.set_queue_proxy(namespace, qp)``.
  Image ``dev.local/sluice-test-app`` runs ``tests/kube/apps/hello.py``.
* ``kube_namespace`` (function): a fresh namespace (named after the test) with the
  ``default`` ServiceAccount a namespace controller would have created.

A failing test that used the cluster gets the tail of every control-plane and pod log in
its report.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.kube.cluster import KubeCluster, PeersMissing, peer
from tests.kube.kubelet import FakeNode, QueueProxy

HERE = Path(__file__).resolve().parent
TEST_APP_IMAGE = "dev.local/sluice-test-app"
TEST_APP = (sys.executable, str(HERE / "apps" / "hello.py"))


def queue_proxy_from_env() -> QueueProxy:
    """The session's queue-proxy: ``SLUICE_KUBE_QUEUE_PROXY`` = ``go`` (default) or ``sluice``."""
    choice = os.environ.get("SLUICE_KUBE_QUEUE_PROXY", "go")
    if choice == "go":
        return QueueProxy.go(peer("queue"))
    if choice == "sluice":
        return QueueProxy.sluice()
    raise pytest.UsageError(f"SLUICE_KUBE_QUEUE_PROXY={choice!r}: expected 'go' or 'sluice'")


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest stops the session, runs finalizers


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    # A SIGTERM (CI cancelling the job) would end pytest without finalizers or atexit, and
    # the control plane runs in its own sessions: make it an interrupt so both run.
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        try:
            cluster = KubeCluster.up(tmp_path_factory.mktemp("kube"))
        except PeersMissing as err:
            pytest.fail(str(err), pytrace=False)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def fake_node(kube_cluster: KubeCluster) -> Iterator[FakeNode]:
    try:
        qp = queue_proxy_from_env()
    except PeersMissing as err:
        pytest.fail(str(err), pytrace=False)
    node = FakeNode(kube_cluster.api, kube_cluster.workdir, qp, {TEST_APP_IMAGE: TEST_APP})
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for one test.

    At the end the fake node (if the test used it) stops the namespace's pods and ignores it
    from then on, so no test's pods, addresses or ports outlive it. The namespace and its
    objects stay (no namespace controller or garbage collector runs).
    """
    # Readable prefix + hash of the full test id: two long test names never share one.
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"
    api = kube_cluster.api
    if api.get_or_none("Namespace", None, name) is None:
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        api.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name},
            }
        )
    yield name
    if "fake_node" in request.fixturenames:
        node = request.getfixturevalue("fake_node")
        assert isinstance(node, FakeNode)
        node.evict_namespace(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run this directory's infrastructure tests (test_cluster.py) before its other tests.

    A broken fixture then shows first, and the Go-queue-proxy test runs while nothing else
    listens on 8012/8022/9090/9091: Knative's Go queue binds those on every address, so it
    cannot start next to a session-long listener such as another module's activator. Only
    the positions of this directory's tests are permuted; other tests keep their places.
    """
    slots = [i for i, item in enumerate(items) if item.path.parent == HERE]
    ours = sorted((items[i] for i in slots), key=lambda item: item.path.name != "test_cluster.py")
    for slot, item in zip(slots, ours, strict=True):
        items[slot] = item


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        cluster = funcargs.get("kube_cluster")
        node = funcargs.get("fake_node")
        if isinstance(cluster, KubeCluster):
            report.sections.append(("kube control plane logs", cluster.log_tails()))
        if isinstance(node, FakeNode):
            report.sections.append(("fake node pod logs", node.log_tails()))
    return report
