"""Readiness of the user container, checked the way Knative's queue-proxy checks it.

Theory of operation:

* The probe comes from ``SERVING_READINESS_PROBE``: one JSON ``corev1.Probe`` that the
  controller already rewrote (host 127.0.0.1, port filled in, exec turned into TCP).
  ``parse_probe`` turns it into a frozen ``ProbeSpec``; an empty value means "no probe"
  and the container is always ready.
* **Aggressive mode** (``periodSeconds == 0``, the default for revisions without a
  probe): poll at once and then every 50 ms for up to 10 s, 100 ms per attempt, until
  ``successThreshold`` consecutive attempts pass. The consecutive-pass counter lives on
  the prober; only a failed attempt resets it, so after one overall success later
  checks pass on their first good attempt. A check that runs out of time writes one
  ``aggressive probe error`` line; one that succeeds writes nothing.
* **Normal mode** (``periodSeconds > 0``): a single attempt bounded by
  ``timeoutSeconds``; the kubelet supplies the periodicity.
* **Coalescing:** at most one check runs at a time. Callers that arrive while it runs
  share its result; a caller after it finished starts a new one. The check is shielded,
  so a caller that goes away (its HTTP request closed) does not cancel it for the rest.

Only ``ReadinessProber`` mutates its counter and in-flight task, from the event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.prober import ProbeError, probe_http, probe_tcp

#: Aggressive-mode timing (Knative's values); ``ReadinessProber`` takes overrides for tests.
AGGRESSIVE_INTERVAL = 0.05
AGGRESSIVE_ATTEMPT_TIMEOUT = 0.1
AGGRESSIVE_POLL_TIMEOUT = 10.0
#: Kubernetes' default probe timeout, used when a normal-mode probe says 0.
DEFAULT_TIMEOUT_SECONDS = 1
#: In v1.10.2 the kubelet version fields are empty, so this really is the whole UA.
PROBE_USER_AGENT = "kube-probe//"


class ProbeDecodeError(ValueError):
    """``SERVING_READINESS_PROBE`` is not a decodable probe; the message is one line."""


@dataclass(frozen=True, slots=True)
class HttpGetAction:
    host: str
    port: int | str
    path: str
    scheme: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TcpSocketAction:
    host: str
    port: int | str


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A decoded ``corev1.Probe``. At most one of the handlers is set in practice."""

    http_get: HttpGetAction | None = None
    tcp_socket: TcpSocketAction | None = None
    exec_: bool = False
    period_seconds: int = 0
    #: Seconds per normal-mode attempt (an int in JSON; a float is allowed for tests).
    timeout_seconds: float = 0
    success_threshold: int = 0
    failure_threshold: int = 0

    @property
    def aggressive(self) -> bool:
        return self.period_seconds == 0


def parse_probe(text: str) -> ProbeSpec | None:
    """Decode ``SERVING_READINESS_PROBE``. Empty means no probe (``None``).

    Raises ``ProbeDecodeError`` when the value is not JSON or does not have the
    ``corev1.Probe`` shape (wrong field types, a port that is neither int nor string).
    """
    if not text.strip():
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeDecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProbeDecodeError("a probe must be a JSON object")
    http_get = tcp = None
    if (h := raw.get("httpGet")) is not None:
        h = _obj(h, "httpGet")
        headers = tuple(
            (_str(hd, "name", "httpGet.httpHeaders"), _str(hd, "value", "httpGet.httpHeaders"))
            for hd in _list(h.get("httpHeaders"), "httpGet.httpHeaders")
        )
        http_get = HttpGetAction(
            host=_str(h, "host", "httpGet"),
            port=_port(h.get("port"), "httpGet.port"),
            path=_str(h, "path", "httpGet"),
            scheme=_str(h, "scheme", "httpGet") or "HTTP",
            headers=headers,
        )
    if (t := raw.get("tcpSocket")) is not None:
        t = _obj(t, "tcpSocket")
        tcp = TcpSocketAction(
            host=_str(t, "host", "tcpSocket"), port=_port(t.get("port"), "tcpSocket.port")
        )
    return ProbeSpec(
        http_get=http_get,
        tcp_socket=tcp,
        exec_=raw.get("exec") is not None,
        period_seconds=_int(raw, "periodSeconds"),
        timeout_seconds=_int(raw, "timeoutSeconds"),
        success_threshold=_int(raw, "successThreshold"),
        failure_threshold=_int(raw, "failureThreshold"),
    )


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProbeDecodeError(f"{where} must be an object")
    return v


def _list(v: Any, where: str) -> list[dict[str, Any]]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ProbeDecodeError(f"{where} must be a list")
    return [_obj(item, where) for item in v]


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ProbeDecodeError(f"{where}.{key} must be a string")
    return v


def _int(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProbeDecodeError(f"{key} must be an integer")
    return v


def _port(v: Any, where: str) -> int | str:
    # intstr.IntOrString: a JSON number or a string (a port name or digits).
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ProbeDecodeError(f"{where} must be an integer or a string")
    return v


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ReadinessProber:
    """Checks the user container per ``spec`` (``None``: always ready).

    ``host``/``port`` left empty or 0 in the spec fall back to ``user_host``/``user_port``.
    ``log`` receives the one-line diagnostics (default: stderr). The aggressive-mode
    timings and the clock are injectable so tests run in milliseconds.
    """

    def __init__(
        self,
        spec: ProbeSpec | None,
        *,
        user_host: str = "127.0.0.1",
        user_port: int = 8080,
        log: Callable[[str], None] = _stderr_line,
        interval: float = AGGRESSIVE_INTERVAL,
        attempt_timeout: float = AGGRESSIVE_ATTEMPT_TIMEOUT,
        poll_timeout: float = AGGRESSIVE_POLL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._user_host = user_host
        self._user_port = user_port
        self._log = log
        self._interval = interval
        self._attempt_timeout = attempt_timeout
        self._poll_timeout = poll_timeout
        self._clock = clock
        #: Consecutive passing attempts in aggressive mode; reset only by a failure.
        self.success_count = 0
        self._inflight: asyncio.Future[bool] | None = None

    def __repr__(self) -> str:
        busy = self._inflight is not None and not self._inflight.done()
        return f"<ReadinessProber spec={self.spec!r} successes={self.success_count} busy={busy}>"

    async def check(self) -> bool:
        """Whether the user container is ready now; concurrent callers share one check."""
        if self.spec is None:
            return True
        task = self._inflight
        if task is None or task.done():
            task = asyncio.ensure_future(self._guarded(self.spec))
            self._inflight = task
            task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Future[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _guarded(self, spec: ProbeSpec) -> bool:
        # The task may outlive every caller (it is shielded), so it must never end in an
        # exception nobody retrieves: anything unexpected fails closed, with one line.
        try:
            return await self._run(spec)
        except Exception as exc:
            self._log(f"readiness check failed: {exc!r}")
            return False

    async def _run(self, spec: ProbeSpec) -> bool:
        if spec.http_get is None and spec.tcp_socket is None:
            self._log("exec probe not supported" if spec.exec_ else "no probe found")
            return False
        if spec.aggressive:
            return await self._poll(spec)
        timeout = spec.timeout_seconds if spec.timeout_seconds > 0 else DEFAULT_TIMEOUT_SECONDS
        try:
            await self._attempt(spec, timeout)
        except ProbeError:
            return False
        return True

    async def _poll(self, spec: ProbeSpec) -> bool:
        threshold = max(spec.success_threshold, 1)
        deadline = self._clock() + self._poll_timeout
        failures = 0
        last_error: ProbeError | None = None
        while True:
            started = self._clock()
            try:
                await self._attempt(spec, self._attempt_timeout)
            except ProbeError as exc:
                self.success_count = 0
                failures += 1
                last_error = exc
            else:
                self.success_count += 1
                if self.success_count >= threshold:
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
                await probe_tcp(tcp.host or self._user_host, self._resolve(tcp.port), timeout)
            return
        headers = list(get.headers)
        if not any(name.lower() == "user-agent" for name, _ in headers):
            headers.insert(0, ("User-Agent", PROBE_USER_AGENT))
        resp = await probe_http(
            get.host or self._user_host,
            self._resolve(get.port),
            get.path or "/",
            headers,
            timeout,
            scheme=get.scheme or "http",
        )
        if not 200 <= resp.status < 400:
            raise ProbeError(f"HTTP probe did not respond Ready, got status code: {resp.status}")

    def _resolve(self, port: int | str) -> int:
        if isinstance(port, int):
            return port if port > 0 else self._user_port
        if not port:
            return self._user_port
        if port.isdigit():
            return int(port)
        # Named ports cannot be resolved inside the pod; the controller sends numbers.
        raise ProbeError(f"cannot resolve named port {port!r}")
