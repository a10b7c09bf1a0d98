"""Readiness of the user container (reference §1.10, §5.6) against loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

import queueproxy.readiness as readiness
from proxy.dataplane.prober import ProbeError
from queueproxy.readiness import (
    HttpGetAction,
    ProbeDecodeError,
    ProbeSpec,
    ReadinessProber,
    TcpSocketAction,
    parse_probe,
)
from tests.ports import closed_port

pytestmark = pytest.mark.timeout(10)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def status_line(code: int) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % code


class HttpUpstream:
    """Answers request ``i`` with ``script(i)``; can hold answers until released."""

    def __init__(self, script: Callable[[int], bytes] = lambda i: OK, delay: float = 0) -> None:
        self.script = script
        self.delay = delay
        self.requests: list[bytes] = []
        self.arrived = asyncio.Event()
        self.release: asyncio.Event | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        #: Connections still being answered: closed on exit, so none outlives its loop (a
        #: probe that timed out leaves its answer pending; the writer would be a
        #: ResourceWarning in a later test, and warnings fail tests).
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HttpUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.release is not None:
            self.release.set()
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            index = len(self.requests)
            self.requests.append(head)
            self.arrived.set()
            if self.release is not None:
                await self.release.wait()
            if self.delay:
                await asyncio.sleep(self.delay)  # the scenario *is* a slow server
            writer.write(self.script(index))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            # Wait for the socket itself to close: a transport merely told to close may
            # outlive the test's event loop and warn (ResourceWarning) in a later test.
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class TcpUpstream:
    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TcpUpstream:
        def accept(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            w.close()

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def http_spec(port: int, *, period: int = 0, timeout: float = 0, threshold: int = 1) -> ProbeSpec:
    get = HttpGetAction(
        host="127.0.0.1",
        port=port,
        path="/health",
        scheme="HTTP",
        headers=(("K-Kubelet-Probe", "queue"),),
    )
    return ProbeSpec(
        http_get=get, period_seconds=period, timeout_seconds=timeout, success_threshold=threshold
    )


def tcp_spec(port: int, *, period: int = 0, timeout: float = 0, threshold: int = 1) -> ProbeSpec:
    return ProbeSpec(
        tcp_socket=TcpSocketAction(host="127.0.0.1", port=port),
        period_seconds=period,
        timeout_seconds=timeout,
        success_threshold=threshold,
    )


class Logs(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


def fast(
    spec: ProbeSpec | None,
    logs: Logs | None = None,
    *,
    attempt_timeout: float = 0.1,
    poll_timeout: float = 0.3,
) -> ReadinessProber:
    """A prober with aggressive timings shrunk so failures take ~0.3 s."""
    return ReadinessProber(
        spec,
        log=logs if logs is not None else Logs(),
        interval=0.01,
        attempt_timeout=attempt_timeout,
        poll_timeout=poll_timeout,
    )


# --- decoding -----------------------------------------------------------------------


def test_parse_probe_decodes_http_get_with_string_port_and_headers() -> None:
    spec = parse_probe(
        '{"httpGet":{"host":"127.0.0.1","port":"8080","path":"/ready","scheme":"HTTPS",'
        '"httpHeaders":[{"name":"K-Kubelet-Probe","value":"queue"}]},'
        '"periodSeconds":5,"timeoutSeconds":2,"successThreshold":3,"failureThreshold":4}'
    )
    assert spec == ProbeSpec(
        http_get=HttpGetAction(
            "127.0.0.1", "8080", "/ready", "HTTPS", (("K-Kubelet-Probe", "queue"),)
        ),
        period_seconds=5,
        timeout_seconds=2,
        success_threshold=3,
        failure_threshold=4,
    )
    assert not spec.aggressive


def test_parse_probe_decodes_knative_default_tcp_probe_as_aggressive() -> None:
    spec = parse_probe('{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}')
    assert spec == ProbeSpec(tcp_socket=TcpSocketAction("127.0.0.1", 8080), success_threshold=1)
    assert spec.aggressive


def test_parse_probe_marks_exec_handler() -> None:
    spec = parse_probe('{"exec":{"command":["true"]},"periodSeconds":1}')
    assert spec is not None and spec.exec_ and spec.http_get is None


def test_parse_probe_defaults_http_scheme() -> None:
    spec = parse_probe('{"httpGet":{"port":8080}}')
    assert spec is not None and spec.http_get is not None
    assert spec.http_get.scheme == "HTTP"


@pytest.mark.parametrize("text", ["", "   "])
def test_parse_probe_empty_means_no_probe(text: str) -> None:
    assert parse_probe(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1,2]",
        '{"httpGet":"x"}',
        '{"httpGet":{"port":true}}',
        '{"tcpSocket":{"port":1.5}}',
        '{"periodSeconds":"1"}',
        '{"httpGet":{"path":3}}',
        '{"httpGet":{"httpHeaders":{"name":"a"}}}',
    ],
)
def test_parse_probe_rejects_invalid_values_with_one_line(text: str) -> None:
    with pytest.raises(ProbeDecodeError) as err:
        parse_probe(text)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


# --- basics ---------------------------------------------------------------------


def test_new_prober_has_zero_success_count() -> None:
    assert ReadinessProber(tcp_spec(1)).success_count == 0


async def test_no_probe_is_always_ready() -> None:
    assert await ReadinessProber(None).check()


async def test_empty_handler_fails_and_logs_no_probe_found() -> None:
    logs = Logs()
    assert not await fast(ProbeSpec(period_seconds=1), logs).check()
    assert logs == ["no probe found"]


async def test_aggressive_empty_handler_fails() -> None:
    logs = Logs()
    assert not await fast(ProbeSpec(), logs).check()
    assert logs == ["no probe found"]


async def test_exec_handler_fails_and_logs_not_supported() -> None:
    logs = Logs()
    assert not await fast(ProbeSpec(exec_=True, period_seconds=1), logs).check()
    assert logs == ["exec probe not supported"]


# --- TCP ------------------------------------------------------------------------


async def test_tcp_success_with_listener() -> None:
    async with TcpUpstream() as up:
        assert await fast(tcp_spec(up.port, period=1, timeout=1)).check()
        assert up.accepted == 1


async def test_tcp_failure_without_listener() -> None:
    assert not await fast(tcp_spec(closed_port(), period=1, timeout=1)).check()


async def test_aggressive_tcp_succeeds_against_listener() -> None:
    async with TcpUpstream() as up:
        assert await fast(tcp_spec(up.port)).check()


async def test_aggressive_tcp_fails_without_listener() -> None:
    assert not await fast(tcp_spec(closed_port())).check()


async def test_aggressive_tcp_needs_success_threshold() -> None:
    async with TcpUpstream() as up:
        assert await fast(tcp_spec(up.port, threshold=3)).check()
        assert up.accepted == 3


async def test_aggressive_tcp_failure_resets_consecutive_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes = iter([True, False, True, True, True])
    calls: list[int] = []

    async def scripted(host: str, port: int, timeout: float) -> None:
        calls.append(port)
        if not next(outcomes):
            raise ProbeError("refused")

    monkeypatch.setattr(readiness, "probe_tcp", scripted)
    prober = fast(tcp_spec(1234, threshold=3))
    assert await prober.check()
    assert len(calls) == 5


async def test_spec_without_host_or_port_uses_user_address() -> None:
    async with TcpUpstream() as up:
        spec = ProbeSpec(tcp_socket=TcpSocketAction(host="", port=0), period_seconds=1)
        prober = ReadinessProber(spec, user_host="127.0.0.1", user_port=up.port)
        assert await prober.check()
        assert up.accepted == 1


async def test_named_port_cannot_be_probed() -> None:
    spec = ProbeSpec(tcp_socket=TcpSocketAction(host="127.0.0.1", port="http"), period_seconds=1)
    assert not await fast(spec).check()


# --- aggressive logging --------------------------------------------------------------


async def test_aggressive_failure_logs_exactly_one_line() -> None:
    logs = Logs()
    assert not await fast(tcp_spec(closed_port()), logs).check()
    assert len(logs) == 1
    assert logs[0].startswith("aggressive probe error (failed ")
    assert "times): dial tcp 127.0.0.1:" in logs[0]


async def test_aggressive_failure_then_success_logs_nothing() -> None:
    logs = Logs()
    async with HttpUpstream(lambda i: status_line(500) if i < 3 else OK) as up:
        assert await fast(http_spec(up.port), logs).check()
        assert len(up.requests) == 4
    assert logs == []


# --- HTTP -----------------------------------------------------------------------


async def test_http_success_sends_path_headers_and_kube_probe_user_agent() -> None:
    async with HttpUpstream() as up:
        assert await fast(http_spec(up.port, period=1, timeout=1)).check()
        lines = up.requests[0].decode().split("\r\n")
    assert lines[0] == "GET /health HTTP/1.1"
    assert "User-Agent: kube-probe//" in lines
    assert "K-Kubelet-Probe: queue" in lines
    assert "Connection: close" in lines


async def test_http_probe_sends_one_request_without_h2c_upgrade() -> None:
    async with HttpUpstream() as up:
        assert await fast(http_spec(up.port, period=1, timeout=1)).check()
        assert len(up.requests) == 1
        head = up.requests[0].lower()
    assert b"upgrade" not in head
    assert b"http2-settings" not in head


async def test_http_failure_to_connect() -> None:
    assert not await fast(http_spec(closed_port(), period=1, timeout=1)).check()


@pytest.mark.parametrize("code", [400, 404, 500, 503, 199])
async def test_http_status_outside_200_399_fails(code: int) -> None:
    async with HttpUpstream(lambda i: status_line(code)) as up:
        assert not await fast(http_spec(up.port, period=1, timeout=1)).check()


@pytest.mark.parametrize("code", [200, 204, 301, 399])
async def test_http_status_200_to_399_passes(code: int) -> None:
    async with HttpUpstream(lambda i: status_line(code)) as up:
        assert await fast(http_spec(up.port, period=1, timeout=1)).check()


async def test_http_normal_mode_timeout_fails() -> None:
    async with HttpUpstream(delay=0.5) as up:
        assert not await fast(http_spec(up.port, period=1, timeout=0.1)).check()


async def test_http_normal_mode_delay_shorter_than_timeout_passes() -> None:
    async with HttpUpstream(delay=0.05) as up:
        assert await fast(http_spec(up.port, period=1, timeout=2)).check()


async def test_parallel_checks_share_one_request_and_later_check_makes_another() -> None:
    async with HttpUpstream() as up:
        up.release = asyncio.Event()
        prober = fast(http_spec(up.port, period=1, timeout=5))
        checks = [asyncio.create_task(prober.check()) for _ in range(10)]
        await up.arrived.wait()
        await asyncio.sleep(0)  # let every caller reach the shared check
        up.release.set()
        assert all(await asyncio.gather(*checks))
        assert len(up.requests) == 1
        assert await prober.check()
        assert len(up.requests) == 2


async def test_check_keeps_running_when_its_caller_is_cancelled() -> None:
    async with HttpUpstream() as up:
        up.release = asyncio.Event()
        prober = fast(http_spec(up.port, period=1, timeout=5))
        first = asyncio.create_task(prober.check())
        await up.arrived.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(prober.check())
        await asyncio.sleep(0)
        up.release.set()
        assert await second
        assert len(up.requests) == 1


async def test_aggressive_http_retries_after_bad_status() -> None:
    async with HttpUpstream(lambda i: status_line(400) if i == 0 else OK) as up:
        assert await fast(http_spec(up.port)).check()
        assert len(up.requests) == 2


async def test_aggressive_http_needs_success_threshold() -> None:
    async with HttpUpstream() as up:
        assert await fast(http_spec(up.port, threshold=3)).check()
        assert len(up.requests) == 3


async def test_aggressive_http_failure_resets_threshold_count() -> None:
    async with HttpUpstream(lambda i: status_line(500) if i == 1 else OK) as up:
        assert await fast(http_spec(up.port, threshold=3)).check()
        assert len(up.requests) == 5


async def test_success_count_survives_overall_success() -> None:
    async with HttpUpstream() as up:
        prober = fast(http_spec(up.port, threshold=3))
        assert await prober.check()
        assert len(up.requests) == 3
        assert await prober.check()
        assert len(up.requests) == 4
        assert prober.success_count == 4


async def test_aggressive_http_slower_than_attempt_timeout_fails() -> None:
    logs = Logs()
    async with HttpUpstream(delay=0.5) as up:
        prober = fast(http_spec(up.port), logs, attempt_timeout=0.05, poll_timeout=0.2)
        assert not await prober.check()
    assert len(logs) == 1 and "timeout" in logs[0]


async def test_aggressive_check_with_real_timings_succeeds_at_once() -> None:
    async with TcpUpstream() as up:
        assert await ReadinessProber(tcp_spec(up.port)).check()


async def test_repr_summarises_state() -> None:
    prober = ReadinessProber(tcp_spec(1))
    assert "successes=0" in repr(prober) and "busy=False" in repr(prober)


async def test_unexpected_error_fails_closed_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(host: str, port: int, timeout: float) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(readiness, "probe_tcp", broken)
    logs = Logs()
    assert not await fast(tcp_spec(1, period=1), logs).check()
    assert logs == ["readiness check failed: RuntimeError('boom')"]


async def test_the_pods_loopback_in_a_probe_means_the_user_host() -> None:
    """Knative writes ``host: 127.0.0.1`` into every probe; with several pods on one machine
    (``SLUICE_USER_HOST``) the pod's loopback is the user host, not this machine's."""
    accepted: list[str] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("sockname")[0])
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.7", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        spec = readiness.ProbeSpec(
            tcp_socket=readiness.TcpSocketAction("127.0.0.1", port),
            period_seconds=1,
            timeout_seconds=1,
            success_threshold=1,
        )
        prober = readiness.ReadinessProber(spec, user_host="127.0.0.7", user_port=port)
        assert await prober.check()
        assert accepted and accepted[0] == "127.0.0.7"
    finally:
        server.close()
        await server.wait_closed()
