"""h2spec, the HTTP/2 conformance tool, against every h2c port: Go's and Sluice's sidecars.

``tests/kube/peers/bin/h2spec`` (pinned in ``tests/kube/peers/h2spec/``, built by
``build.sh``) runs its whole suite (generic, HTTP/2 and HPACK cases; ``-o`` bounds each case)
against the serving port of Knative's Go queue-proxy (v1.23.0) and of Sluice's, both in front
of the same h2c backend: ``nghttpd --no-tls`` (Debian ``nghttp2-server``) serving one
``index.html``, which speaks nothing but HTTP/2 with prior knowledge, so every request h2spec
makes is proxied h2c on both sides. Then again against Sluice's activator's h2c port, with a
static config routing ``hello.default.localhost`` (the ``:authority`` h2spec sends) over h2c
to Sluice's queue-proxy.

Per-case results come from h2spec's JUnit report (``-j``); a case's id is its group's id and
its 1-based place in the group, ``http2/6.9.2/2``, as h2spec's own summary numbers them.
The bars: every case Go passes, Sluice passes too (differential), and Sluice fails nothing
outside ``SLUICE_ALLOWED_FAILURES``, each entry with its reason; an entry Sluice passes is
stale and fails the test too, so the list only ever shrinks. A failed case is run alone
twice more and counts as passed (``flaky``, printed) if it then passes. ``-rP`` prints each
run's summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pytest
import yaml

from tests.conformance.client import get
from tests.conformance.peers import (
    GO_BINARIES,
    GO_PORTS,
    KUBELET_PROBE,
    PEERS_BIN,
    ROOT,
    SLUICE_PORTS,
    V123,
    knative_env,
    port_open,
    stop,
)
from tests.ports import free_port

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(900)]

H2SPEC = PEERS_BIN / "h2spec"
#: h2spec's per-case timeout (``-o``, seconds): how long it waits for an expected frame.
CASE_TIMEOUT_S = 2
#: One whole h2spec run: about 150 cases, most answered at once, a few waiting ``-o``.
RUN_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 20.0
#: How many more times a failed case runs alone before its failure stands.
RERUNS = 2
#: At least this many cases must run, so a run that could not connect cannot pass.
MIN_CASES = 140
#: The host the activator's static config routes; resolved through a private /etc/hosts.
ACTIVATOR_HOST = "hello.default.localhost"

#: Cases Sluice may fail, with the reason; the lead removes an entry when its cause is fixed.
SLUICE_ALLOWED_FAILURES = {
    # The serving port is shared with HTTP/1.1 (as Go's is): a connection that does not open
    # with HTTP/2's preface is read as an HTTP/1.1 request and refused with a 400, where h2spec
    # wants a GOAWAY. Go's queue-proxy fails this case the same way.
    "http2/3.5/2": "invalid connection preface on a port shared with HTTP/1.1",
}

Outcome = Literal["passed", "failed", "skipped"]
_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True, slots=True)
class Case:
    """One h2spec case's result: ``id`` like ``http2/6.9.2/2``, and its description;
    ``flaky`` when it failed in the whole run and then passed alone (``detail`` the failure)."""

    id: str
    desc: str
    outcome: Outcome
    detail: str
    flaky: bool = False


def parse_junit(text: str) -> dict[str, Case]:
    """Cases by id from h2spec's JUnit report (``testsuite@package`` is the group id, each
    ``testcase``'s place in its suite the case number; a ``failure`` or ``error`` child fails
    it, ``skipped`` skips it)."""
    cases: dict[str, Case] = {}
    # h2spec copies frames' payloads into the report raw (a PING's "h2spec\0\0"), and XML 1.0
    # has no NUL or other C0 control characters: they are dropped before parsing.
    text = _XML_INVALID.sub("", text)
    for suite in ET.fromstring(text).iter("testsuite"):
        group = suite.get("package", "")
        for n, tc in enumerate(suite.iter("testcase"), start=1):
            case_id = f"{group}/{n}"
            bad = tc.find("failure")
            if bad is None:
                bad = tc.find("error")
            outcome: Outcome = "passed"
            if bad is not None:
                outcome = "failed"
            elif tc.find("skipped") is not None:
                outcome = "skipped"
            detail = " ".join((bad.text or "").split()) if bad is not None else ""
            assert case_id not in cases, f"h2spec report: duplicate case id {case_id}"
            cases[case_id] = Case(case_id, tc.get("classname", ""), outcome, detail)
    return cases


def failed(cases: dict[str, Case]) -> set[str]:
    return {c.id for c in cases.values() if c.outcome == "failed"}


def passed(cases: dict[str, Case]) -> set[str]:
    return {c.id for c in cases.values() if c.outcome == "passed"}


def describe(cases: dict[str, Case], ids: set[str]) -> str:
    return "; ".join(f"{i} {cases[i].desc} ({cases[i].detail[:160]})" for i in sorted(ids))


def summary(name: str, cases: dict[str, Case]) -> str:
    bad = sorted(failed(cases))
    flaky = sorted(c.id for c in cases.values() if c.flaky)
    return (
        f"{name}: {len(cases)} cases, {len(passed(cases))} passed, {len(bad)} failed {bad}"
        f" (flaky, passed on a rerun: {flaky})"
    )


def h2spec(host: str, port: int, out: Path, *selection: str) -> dict[str, Case]:
    """One h2spec run against ``host:port`` over h2c (``selection``: case ids to run, all by
    default); the per-case results as its report numbers them."""
    assert os.access(H2SPEC, os.X_OK), f"{H2SPEC} missing: run tests/kube/peers/build.sh"
    report, log = out.with_name(f"{out.name}.xml"), out.with_name(f"{out.name}.log")
    report.unlink(missing_ok=True)
    argv = [str(H2SPEC), *selection, "-h", host, "-p", str(port), "-o", str(CASE_TIMEOUT_S)]
    with log.open("wb") as sink:
        proc = subprocess.Popen([*argv, "-j", str(report)], stdout=sink, stderr=sink,
                                start_new_session=True)  # fmt: skip
    try:
        # h2spec exits 1 when any case fails; the report, not the status, is the result.
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        stop(proc)
    tail = log.read_text(errors="replace")[-1500:]
    assert report.exists(), f"h2spec wrote no report (exit {proc.returncode}): {tail}"
    return parse_junit(report.read_text())


def run_h2spec(host: str, port: int, out: Path) -> dict[str, Case]:
    """The whole suite, then each failed case alone up to ``RERUNS`` times more.

    A case that passes on a rerun counts as passed, marked ``flaky`` and printed (``-rP``
    shows it; every failure message's summary names it): a race in a close, say, is a finding
    to report, not a reason to fail the run; a failure that repeats stands.
    """
    cases = h2spec(host, port, out)
    assert len(cases) >= MIN_CASES, f"h2spec ran {len(cases)} cases only: {summary(host, cases)}"
    for case_id in sorted(failed(cases)):
        for attempt in range(1, RERUNS + 1):
            name = f"{out.name}-rerun-{re.sub('[^a-z0-9]', '_', case_id)}-{attempt}"
            (alone,) = h2spec(host, port, out.with_name(name), case_id).values()
            assert alone.desc == cases[case_id].desc, f"rerun of {case_id} ran {alone}"
            if alone.outcome == "passed":
                cases[case_id] = replace(cases[case_id], outcome="passed", flaky=True)
                break
    print(summary(f"h2spec against {out.name}", cases))
    for case in cases.values():
        if case.flaky:
            print(f"  {case.outcome} flaky {case.id} {case.desc}: {case.detail}")
    return cases


# --- the processes -------------------------------------------------------------------------


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:  # the child keeps its own copy of the file
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=sink, stderr=sink, start_new_session=True
        )


def await_ready(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        tail = log.read_text(errors="replace")[-1500:]
        assert proc.poll() is None, f"{log.stem} exited: {tail}"
        assert time.monotonic() < deadline, f"{log.stem} never ready: {tail}"
        time.sleep(0.05)


def probe_ok(port: int, headers: dict[str, str]) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return get(port, "/", headers, timeout=2).status == 200
    return False


@contextlib.contextmanager
def running(
    argv: list[str], log: Path, ready: Callable[[], bool], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` started in its own session, awaited until ``ready``, then SIGKILLed."""
    proc = spawn(argv, log, env)
    try:
        await_ready(proc, log, ready)
        yield proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """nghttpd serving ``index.html`` over h2c (prior knowledge) on a loopback port."""
    nghttpd = shutil.which("nghttpd")
    assert nghttpd, "nghttpd not found (apt install nghttp2-server; .ci/run installs it)"
    tmp = tmp_path_factory.mktemp("h2spec-backend")
    docroot = tmp / "docroot"
    docroot.mkdir()
    (docroot / "index.html").write_text("hello world\n")
    port = free_port()
    argv = [nghttpd, "--no-tls", "-d", str(docroot), "--address=127.0.0.1", str(port)]
    with running(argv, tmp / "nghttpd.log", lambda: port_open(port)):
        yield port


def sidecar_env(kind: str, backend: int) -> dict[str, str]:
    """v1.23.0's env for ``kind``'s sidecar, pointed at ``backend``, on its fixed ports."""
    env = knative_env(V123, backend)
    ports = GO_PORTS if kind == "go" else SLUICE_PORTS
    env["QUEUE_SERVING_PORT"], env["QUEUE_SERVING_TLS_PORT"] = str(ports[0]), str(ports[1])
    if kind == "sluice":
        env["SLUICE_ADMIN_PORT"] = str(ports[2])
        env["SLUICE_STATS_PORT"] = str(ports[3])
        env["SLUICE_METRICS_PORT"] = str(ports[4])
    for port in ports:
        assert not port_open(port), f"{kind}: port {port} is already in use"
    return env


@contextlib.contextmanager
def sidecar(kind: str, backend: int, log_dir: Path) -> Iterator[int]:
    """``kind``'s queue-proxy in front of ``backend`` until the block ends; its serving port."""
    env = sidecar_env(kind, backend)
    argv = [str(GO_BINARIES[V123])] if kind == "go" else [sys.executable, "-m", "queueproxy"]
    port = int(env["QUEUE_SERVING_PORT"])
    with running(argv, log_dir / f"{kind}.log", lambda: probe_ok(port, KUBELET_PROBE), env):
        yield port


@pytest.fixture(scope="module")
def sluice_qp(backend: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with sidecar("sluice", backend, tmp_path_factory.mktemp("h2spec-sluice")) as port:
        yield port


@pytest.fixture(scope="module")
def results(
    backend: int, sluice_qp: int, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Case]]:
    """h2spec's cases against Go's queue-proxy (stopped after its run) and Sluice's."""
    out = tmp_path_factory.mktemp("h2spec-runs")
    with sidecar("go", backend, out) as go_port:
        go = run_h2spec("127.0.0.1", go_port, out / "go")
    sluice = run_h2spec("127.0.0.1", sluice_qp, out / "sluice")
    return {"go": go, "sluice": sluice}


# --- the cases -----------------------------------------------------------------------------


def test_both_ran_the_same_cases(results: dict[str, dict[str, Case]]) -> None:
    go, sluice = results["go"], results["sluice"]
    assert set(go) == set(sluice), f"case ids differ: {sorted(set(go) ^ set(sluice))}"


def test_sluice_passes_what_go_passes(results: dict[str, dict[str, Case]]) -> None:
    go, sluice = results["go"], results["sluice"]
    regressions = passed(go) - passed(sluice) - SLUICE_ALLOWED_FAILURES.keys()
    assert not regressions, (
        f"Go passes, Sluice does not: {describe(sluice, regressions)}\n"
        f"{summary('go', go)}\n{summary('sluice', sluice)}"
    )


def test_sluice_fails_only_the_allowed_cases(results: dict[str, dict[str, Case]]) -> None:
    sluice = results["sluice"]
    unexpected = failed(sluice) - SLUICE_ALLOWED_FAILURES.keys()
    assert not unexpected, (
        f"Sluice fails: {describe(sluice, unexpected)}\n{summary('sluice', sluice)}"
    )
    stale = SLUICE_ALLOWED_FAILURES.keys() - failed(sluice)
    assert not stale, f"allowed failures Sluice now passes (remove them): {sorted(stale)}"


def test_go_fails_the_shared_port_preface_case_too(results: dict[str, dict[str, Case]]) -> None:
    """The allow-list's 3.5/2 is Knative's behaviour, not Sluice's own: Go fails it too."""
    assert "http2/3.5/2" in failed(results["go"]), summary("go", results["go"])


# --- Sluice's activator --------------------------------------------------------------------


@contextlib.contextmanager
def host_alias(name: str, tmp: Path) -> Iterator[None]:
    """``name`` resolves to 127.0.0.1 for this run: /etc/hosts with one more line, bind-mounted
    over the real one in ``run.sh``'s private mount namespace and unmounted after.

    h2spec sends ``<-h>:<port>`` as ``:authority`` and has no flag to send another, and the
    activator routes by it, so the name it dials must be the route's host."""
    if os.environ.get("CONFORMANCE_PRIVATE_VAR_LIB") != "1" or not os.path.ismount("/var/lib"):
        pytest.fail("conformance: /etc/hosts is only changed in run.sh's private mount namespace")
    hosts = tmp / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {name}\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["umount", "/etc/hosts"], check=True, timeout=10)


@pytest.fixture(scope="module")
def activator_results(sluice_qp: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """h2spec against the activator's h2c port, routing ``ACTIVATOR_HOST`` over h2c to
    Sluice's queue-proxy (and so to nghttpd)."""
    tmp = tmp_path_factory.mktemp("h2spec-activator")
    label, namespace, domain = ACTIVATOR_HOST.split(".", 2)
    revision = f"{label}-00001"
    config = {
        "domain": domain,
        "routes": [
            {
                "name": label,
                "namespace": namespace,
                "traffic": [{"revisionName": revision, "percent": 100}],
            }
        ],
        "revisions": [
            {
                "name": revision,
                "namespace": namespace,
                "protocol": "h2c",
                "endpoints": [f"127.0.0.1:{sluice_qp}"],
            }
        ],
    }
    (tmp / "activator.yaml").write_text(yaml.safe_dump(config))
    port, h2c_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "activator", "--config", str(tmp / "activator.yaml"),
        "--host", "127.0.0.1", "--port", str(port), "--h2c-port", str(h2c_port),
        "--metrics-port", str(free_port()), "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "POD_NAME": "activator-h2spec"}
    ready = lambda: probe_ok(port, {"K-Network-Probe": "activator"})  # noqa: E731
    with running(argv, tmp / "activator.log", ready, env), host_alias(ACTIVATOR_HOST, tmp):
        return run_h2spec(ACTIVATOR_HOST, h2c_port, tmp / "activator")


def test_activator_fails_only_the_allowed_cases(activator_results: dict[str, Case]) -> None:
    cases = activator_results
    unexpected = failed(cases) - SLUICE_ALLOWED_FAILURES.keys()
    assert not unexpected, (
        f"activator fails: {describe(cases, unexpected)}\n{summary('activator', cases)}"
    )
    stale = SLUICE_ALLOWED_FAILURES.keys() - failed(cases)
    assert not stale, f"allowed failures the activator now passes (remove them): {sorted(stale)}"
