"""Readiness of the user container, checked the way Knative's queue-proxy checks it.

Theory of operation:

* The probes come from ``SERVING_READINESS_PROBE``: one JSON ``corev1.Probe``, or an
  array of them when multi-container probing is on (``queueproxy.probe_spec``). No probe
  means the pod is always ready; several run side by side and must all pass.
* **Aggressive mode** (``periodSeconds == 0``, the default for revisions without a
  probe): poll at once and then every 50 ms for up to 10 s, 100 ms per attempt, until
  ``successThreshold`` consecutive attempts pass. Each probe's consecutive-pass counter
  lives on the prober; only a failed attempt of that probe resets it, so after one
  overall success later checks pass on their first good attempt. A check that runs out
  of time writes one ``aggressive probe error`` line; one that succeeds writes nothing.
* Attempts: TCP connect, HTTP ``GET`` (200-399 passes), or a gRPC health check over h2c
  (``SERVING`` passes; ``queueproxy.grpc_health``).
* **Normal mode** (``periodSeconds > 0``): a single attempt bounded by
  ``timeoutSeconds``; the kubelet supplies the periodicity.
* **Coalescing:** at most one check runs at a time. Callers that arrive while it runs
  share its result; a caller after it finished starts a new one. The check is shielded,
  so a caller that goes away (its HTTP request closed) does not cancel it for the rest.

Only ``ReadinessProber`` mutates its counters and in-flight task, from the event loop.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence

from proxy.dataplane.prober import HttpProbeResponse, ProbeError, probe_h2c, probe_http, probe_tcp
from queueproxy.probe_spec import (
    GrpcAction,
    HttpGetAction,
    ProbeDecodeError,
    ProbeSpec,
    TcpSocketAction,
    parse_probe,
    parse_probes,
)

__all__ = [
    "GrpcAction",
    "HttpGetAction",
    "ProbeDecodeError",
    "ProbeSpec",
    "ReadinessProber",
    "TcpSocketAction",
    "parse_probe",
    "parse_probes",
]

#: Aggressive-mode timing (Knative's values); ``ReadinessProber`` takes overrides for tests.
AGGRESSIVE_INTERVAL = 0.05
AGGRESSIVE_ATTEMPT_TIMEOUT = 0.1
AGGRESSIVE_POLL_TIMEOUT = 10.0
#: Kubernetes' default probe timeout, used when a normal-mode probe says 0.
DEFAULT_TIMEOUT_SECONDS = 1
#: In v1.10.2 the kubelet version fields are empty, so this really is the whole UA.
PROBE_USER_AGENT = "kube-probe//"


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ReadinessProber:
    """Checks the pod per ``spec``: one probe, several (every one must pass), or none.

    ``spec`` is a ``ProbeSpec``, a sequence of them (the user container's first, then the
    sidecars'), or ``None``/empty: always ready. Several probes run side by side in each
    check, each with its own consecutive-pass counter; the check passes only if all pass.
    ``host``/``port`` left empty or 0 in a spec fall back to ``user_host``/``user_port``, and
    so does the pod's loopback (``127.0.0.1``, which Knative's controller writes into every
    probe): ``user_host`` is where the pod's loopback is (``SLUICE_USER_HOST`` when several
    pods share one machine). ``log`` receives the one-line diagnostics (default: stderr).
    The aggressive-mode timings and the clock are injectable so tests run in milliseconds.
    """

    def __init__(
        self,
        spec: ProbeSpec | Sequence[ProbeSpec] | None,
        *,
        user_host: str = "127.0.0.1",
        user_port: int = 8080,
        log: Callable[[str], None] = _stderr_line,
        interval: float = AGGRESSIVE_INTERVAL,
        attempt_timeout: float = AGGRESSIVE_ATTEMPT_TIMEOUT,
        poll_timeout: float = AGGRESSIVE_POLL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        auto_http2: bool = False,
    ) -> None:
        if spec is None:
            self.specs: tuple[ProbeSpec, ...] = ()
        elif isinstance(spec, ProbeSpec):
            self.specs = (spec,)
        else:
            self.specs = tuple(spec)
        self._user_host = user_host
        self._user_port = user_port
        self._log = log
        #: Probe hosts that name the pod's loopback, hence ``user_host``.
        self._loopback = frozenset({"", "127.0.0.1", "localhost", "::1"})
        self._interval = interval
        self._attempt_timeout = attempt_timeout
        self._poll_timeout = poll_timeout
        self._clock = clock
        #: ``ENABLE_HTTP2_AUTO_DETECTION``: HTTP probes try h2c first (``_http_attempt``).
        self._auto_http2 = auto_http2
        #: Consecutive passing attempts in aggressive mode, one per probe; reset only by
        #: a failure of that probe.
        self._counts = [0] * len(self.specs)
        self._inflight: asyncio.Future[bool] | None = None

    @property
    def spec(self) -> ProbeSpec | None:
        """The user container's probe (the first), or ``None`` when there is none."""
        return self.specs[0] if self.specs else None

    @property
    def success_count(self) -> int:
        """The first probe's consecutive-pass counter (0 without probes)."""
        return self._counts[0] if self._counts else 0

    def _host(self, host: str) -> str:
        return self._user_host if host in self._loopback else host

    def __repr__(self) -> str:
        busy = self._inflight is not None and not self._inflight.done()
        counts = ",".join(map(str, self._counts)) or "0"
        return f"<ReadinessProber specs={self.specs!r} successes={counts} busy={busy}>"

    async def check(self) -> bool:
        """Whether the pod is ready now; concurrent callers share one check."""
        if not self.specs:
            return True
        task = self._inflight
        if task is None or task.done():
            task = asyncio.ensure_future(self._guarded())
            self._inflight = task
            task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Future[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _guarded(self) -> bool:
        # The task may outlive every caller (it is shielded), so it must never end in an
        # exception nobody retrieves: anything unexpected fails closed, with one line.
        try:
            if len(self.specs) == 1:
                return await self._run(0, self.specs[0])
            # Like Knative's errgroup: every probe runs to its end; all must pass.
            results = await asyncio.gather(
                *(self._run(i, spec) for i, spec in enumerate(self.specs))
            )
            return all(results)
        except Exception as exc:
            self._log(f"readiness check failed: {exc!r}")
            return False

    async def _run(self, index: int, spec: ProbeSpec) -> bool:
        if spec.http_get is None and spec.tcp_socket is None and spec.grpc is None:
            self._log("exec probe not supported" if spec.exec_ else "no probe found")
            return False
        if spec.aggressive:
            return await self._poll(index, spec)
        timeout = spec.timeout_seconds if spec.timeout_seconds > 0 else DEFAULT_TIMEOUT_SECONDS
        try:
            await self._attempt(spec, timeout)
        except ProbeError:
            return False
        return True

    async def _poll(self, index: int, spec: ProbeSpec) -> bool:
        threshold = max(spec.success_threshold, 1)
        deadline = self._clock() + self._poll_timeout
        failures = 0
        last_error: ProbeError | None = None
        counts = self._counts
        while True:
            started = self._clock()
            try:
                await self._attempt(spec, self._attempt_timeout)
            except ProbeError as exc:
                counts[index] = 0
                failures += 1
                last_error = exc
            else:
                counts[index] += 1
                if counts[index] >= threshold:
                    return True
            now = self._clock()
            if now >= deadline:
                break
            # Attempts start on a fixed cadence; a slow attempt is followed at once.
            pause = min(self._interval - (now - started), deadline - now)
            if pause > 0:
                await asyncio.sleep(pause)
        reason = "<nil>" if last_error is None else str(last_error)
        self._log(f"aggressive probe error (failed {failures} times): {reason}")
        return False

    async def _attempt(self, spec: ProbeSpec, timeout: float) -> None:
        """One probe attempt; raises ``ProbeError`` unless it passed."""
        get = spec.http_get
        if get is None:
            if spec.tcp_socket is not None:
                tcp = spec.tcp_socket
                await probe_tcp(self._host(tcp.host), self._resolve(tcp.port), timeout)
            elif spec.grpc is not None:
                await self._probe_grpc(spec.grpc, timeout)
            return
        headers = list(get.headers)
        if not any(name.lower() == "user-agent" for name, _ in headers):
            headers.insert(0, ("User-Agent", PROBE_USER_AGENT))
        host, port = self._host(get.host), self._resolve(get.port)
        # Knative >= 1.13 accepts a path without its leading slash.
        path = "/" + get.path.removeprefix("/")
        scheme = get.scheme or "http"
        if self._auto_http2 and scheme.lower() == "http":
            resp = await self._detect_http2(host, port, path, headers, timeout)
            if resp is None:
                return  # ready over HTTP/1.1 during detection, as Knative returns early
        else:
            resp = await probe_http(host, port, path, headers, timeout, scheme=scheme)
        if not 200 <= resp.status < 400:
            raise ProbeError(f"HTTP probe did not respond Ready, got status code: {resp.status}")

    async def _detect_http2(
        self, host: str, port: int, path: str, headers: list[tuple[str, str]], timeout: float
    ) -> HttpProbeResponse | None:
        """Knative's HTTP/2 auto-detection (v1.21+, ``pkg/queue/health/probe.go``), done
        again at every attempt as Knative does: a bare h2c ``GET`` (User-Agent only); if
        that is ready, the probe itself over h2c (returned); else a bare HTTP/1.1 ``GET``,
        which passing means ready (None) and failing fails the attempt."""
        bare = [(name, value) for name, value in headers if name.lower() == "user-agent"]
        try:
            detect = await probe_h2c(host, port, path, bare, timeout)
        except ProbeError:
            detect = None
        if detect is not None and 200 <= detect.status < 400:
            return await probe_h2c(host, port, path, headers, timeout)
        fallback = await probe_http(host, port, path, bare, timeout)
        if 200 <= fallback.status < 400:
            return None
        raise ProbeError(f"HTTP probe did not respond Ready, got status code: {fallback.status}")

    async def _probe_grpc(self, action: GrpcAction, timeout: float) -> None:
        # Imported on first use: most revisions never declare a gRPC probe, and the idle
        # sidecar's memory is a goal (issue 17).
        from queueproxy.grpc_health import probe_grpc_health

        port = action.port if action.port > 0 else self._user_port
        await probe_grpc_health(
            self._user_host, port, action.service, timeout, user_agent=PROBE_USER_AGENT
        )

    def _resolve(self, port: int | str) -> int:
        if isinstance(port, int):
            return port if port > 0 else self._user_port
        if not port:
            return self._user_port
        if port.isdigit():
            return int(port)
        # Named ports cannot be resolved inside the pod; the controller sends numbers.
        raise ProbeError(f"cannot resolve named port {port!r}")
