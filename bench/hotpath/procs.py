"""Processes for the benchmark: start, pin, probe, read CPU and RSS, and always clean up.

Every process is started in its own session (so its whole process group can be signalled) and
registered with a ``ProcGroup``; leaving the group's ``with`` block, normally or through an
exception or Ctrl-C, stops every process it started by process-group id, newest first.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

#: How long a process gets to exit after SIGTERM before it is SIGKILLed.
STOP_GRACE_S = 5.0
#: Set in the child that ``rerun_in_netns`` starts, so that it does not unshare again.
NETNS_MARKER = "SLUICE_BENCH_NETNS"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def in_netns() -> bool:
    """Whether this process is the child that ``rerun_in_netns`` started."""
    return bool(os.environ.get(NETNS_MARKER))


def rerun_in_netns(module: str, args: Sequence[str], cwd: Path) -> int:
    """``python -m module args`` again, alone on a fresh loopback; its exit status.

    For benchmarks with Knative's Go queue-proxy, which binds ports 8022 and 9090 whatever
    its environment says: a private network namespace (``unshare --net``, as root) keeps it
    clear of other sessions' sidecars on the same machine.
    """
    for tool in ("unshare", "ip"):
        if not have(tool):
            print(f"{module}: --netns needs {tool}", file=sys.stderr)
            return 2
    cmd = ["unshare", "--net", "--fork", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    cmd += [sys.executable, "-m", module, *args]
    return subprocess.call(cmd, env={**os.environ, NETNS_MARKER: "1"}, cwd=cwd)


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` prefixed with ``taskset -c CPU`` when ``cpu`` is given.

    taskset execs the command, so the PID of the started process is the command's own PID.
    """
    if cpu is None:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


@dataclass
class ProcGroup:
    """Owns started processes; stops them all on exit from the ``with`` block."""

    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                pinned(argv, cpu),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path, started)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        stop_process(proc.popen)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])

    def __enter__(self) -> ProcGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def stop_process(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group led by ``popen``, then SIGKILL it after a grace period."""
    pgid = popen.pid  # start_new_session=True: the child leads its own group
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        try:
            popen.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Reap any straggler still in the group (an nginx worker outliving its master).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def parse_stat_cpu_ticks(stat_line: str) -> tuple[int, int]:
    """``(ppid, utime + stime)`` in clock ticks from one ``/proc/<pid>/stat`` line."""
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _all_stats() -> dict[int, tuple[int, int]]:
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stats[int(entry)] = parse_stat_cpu_ticks(f.read())
        except (OSError, ValueError):
            continue
    return stats


def _tree(pid: int, stats: Mapping[int, tuple[int, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            found.append(p)
        todo.extend(children.get(p, ()))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and all its live descendants (e.g. nginx's worker), in s."""
    stats = _all_stats()
    return sum(stats[p][1] for p in _tree(pid, stats)) / _CLK_TCK


def tree_rss_kib(pid: int) -> int | None:
    """Summed VmRSS of ``pid`` and its live descendants, in KiB (None if unreadable)."""
    sizes = [rss_kib(p) for p in _tree(pid, _all_stats())]
    known = [s for s in sizes if s is not None]
    return sum(known) if known else None


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent in tasks since boot, plus time stolen by the hypervisor.

    From ``/proc/stat``: user + nice + system + steal. irq and softirq are left out: loopback
    traffic's softirq work may not be charged to any task, and would look like a neighbour.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return (user + nice + system + steal) / _CLK_TCK


def children_cpu_seconds() -> float:
    """utime + stime of our reaped children (the load generators), in s."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def http_get(
    port: int, headers: Mapping[str, str], path: str = "/", timeout: float = 1.0
) -> tuple[int, bytes]:
    """One GET to 127.0.0.1:``port``; returns (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def probe_ok(port: int, headers: Mapping[str, str], want: bytes) -> bool:
    try:
        status, body = http_get(port, headers)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200 and body.strip() == want


def wait_until(proc: Proc, ready: Callable[[], bool], timeout: float) -> float | None:
    """Poll ``ready`` until true; seconds since ``proc`` started, or None on exit/timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return time.monotonic() - proc.started_at
        if not proc.alive():
            return None
        time.sleep(0.01)
    return None
