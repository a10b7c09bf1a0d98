"""locust scenarios for Sluice. ``python -m bench SCENARIO`` runs them; so can you, headless:

    SLUICE_BENCH_HOST_HEADER=hello.default.localhost SLUICE_BENCH_RECORDS=/tmp/rec \\
      locust -f bench/locustfile.py --headless -u 20 -r 20 -t 20s \\
      --host http://127.0.0.1:8080 --csv /tmp/rec/locust --html /tmp/rec/locust.html ServiceUser

User classes (pick one on the command line):

* ``ServiceUser``: GET ``$SLUICE_BENCH_PATH`` with ``Host: $SLUICE_BENCH_HOST_HEADER``, as fast
  as answers come back, or at ``$SLUICE_BENCH_RATE`` requests/s per user
  (``constant_throughput``: a fixed offered rate while latency stays under ``1/rate``). Used
  by hotpath, split, overload, rollout and load-test.
* ``ColdStartUser``: waits until revision ``$SLUICE_BENCH_REVISION`` has no pod (asking the
  API at ``$SLUICE_BENCH_API``), then sends one request and records its time to first byte
  (``stream=True``: locust stops the clock when the headers arrive). Repeats until the run ends.

What matters is recorded through locust's ``request`` event hook, one CSV row per request
(``bench.records.FIELDS``: start time, latency, status, and the revision and pod named by the
app's JSON answer), in ``$SLUICE_BENCH_RECORDS/requests-<pid>.csv``: one file per process, so
``--processes`` works. ``$SLUICE_BENCH_STEPS`` (``users:seconds,...``) turns on a stepped load
shape (load-test). locust's own ``--csv`` and ``--html`` files sit beside.
"""

from __future__ import annotations

import csv
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from locust import FastHttpUser, LoadTestShape, constant, constant_throughput, events, task

from bench.records import FIELDS, NO_ANSWER, Record

HOST_HEADER = os.environ.get("SLUICE_BENCH_HOST_HEADER", "")
PATH = os.environ.get("SLUICE_BENCH_PATH", "/")
RATE = float(os.environ.get("SLUICE_BENCH_RATE", "0") or 0)
RECORDS_DIR = os.environ.get("SLUICE_BENCH_RECORDS", "")
API = os.environ.get("SLUICE_BENCH_API", "")
REVISION = os.environ.get("SLUICE_BENCH_REVISION", "")
STEPS = os.environ.get("SLUICE_BENCH_STEPS", "")
#: Rows are flushed at least this often, so the driver's progress line can count them.
FLUSH_EVERY_S = 0.5
#: How often ColdStartUser asks the API whether the revision is at zero.
ZERO_POLL_S = 0.2


class _Recorder:
    """Buffers rows and appends them to this process's file (opened after any fork)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.rows: list[list[str]] = []
        self.pid = 0
        self.file: IO[str] | None = None
        self.flushed_at = time.monotonic()

    def add(self, record: Record) -> None:
        if not self.directory:
            return
        self.rows.append(record.row())
        if time.monotonic() - self.flushed_at >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        if not self.rows:
            return
        if self.file is None or self.pid != os.getpid():
            self.pid = os.getpid()
            path = Path(self.directory) / f"requests-{self.pid}.csv"
            new = not path.exists()
            self.file = path.open("a", newline="")
            if new:
                csv.writer(self.file).writerow(FIELDS)
        csv.writer(self.file).writerows(self.rows)
        self.file.flush()
        self.rows.clear()


RECORDER = _Recorder(RECORDS_DIR)


def _served_by(response: Any, context: dict[str, Any]) -> tuple[str, str]:
    """The revision and pod the app names in its JSON answer ("" when there is none)."""
    if context.get("stream") or response is None or response.status_code != 200:
        return "", ""
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("revision", "")), str(body.get("pod", ""))


def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any = None,
    context: dict[str, Any] | None = None,
    exception: BaseException | None = None,
    start_time: float | None = None,
    **kwargs: Any,
) -> None:
    status = getattr(response, "status_code", None) or NO_ANSWER
    revision, pod = _served_by(response, context or {})
    error = "" if exception is None or status >= 400 else type(exception).__name__
    RECORDER.add(
        Record(
            t=start_time if start_time is not None else time.time(),
            latency_ms=round(response_time, 3),
            status=int(status),
            revision=revision,
            pod=pod,
            error=error,
            name=name,
        )
    )


def _on_test_stop(**kwargs: Any) -> None:
    RECORDER.flush()


def _on_quitting(**kwargs: Any) -> None:
    RECORDER.flush()


# Registered by call, not as decorators: locust's ``add_listener`` is untyped.
events.request.add_listener(_on_request)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(_on_test_stop)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quitting)  # type: ignore[no-untyped-call]


def _headers() -> dict[str, str]:
    return {"Host": HOST_HEADER} if HOST_HEADER else {}


class ServiceUser(FastHttpUser):
    """Steady GETs at one route: closed loop, or ``RATE`` requests/s per user."""

    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)
    # The activator may hold a request while a revision scales; never cut it short.
    network_timeout = 60.0
    connection_timeout = 10.0

    @task
    def get(self) -> None:
        self.client.get(PATH, headers=_headers(), name="GET " + PATH)


class ColdStartUser(FastHttpUser):
    """One request each time the revision is at zero pods: its time to first byte."""

    fixed_count = 1
    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 10.0

    def _at_zero(self) -> bool:
        url = f"http://{API}/api/v1/revisions"
        with urllib.request.urlopen(url, timeout=5) as resp:  # gevent-patched: cooperative
            items = json.loads(resp.read())["items"]
        for rev in items:
            if rev["name"] == REVISION:
                return int(rev["actual"]) == 0 and int(rev["desired"]) == 0
        return False

    @task
    def cold_request(self) -> None:
        while not self._at_zero():
            time.sleep(ZERO_POLL_S)  # gevent-patched: yields to the other greenlets
        resp = self.client.get(
            PATH, headers=_headers(), name="cold-start", stream=True, context={"stream": True}
        )
        resp.content  # noqa: B018  (read the body so the connection is left clean)


if STEPS:
    # Defined only when asked for: locust uses any shape class it finds in the locustfile.

    class SteppedShape(LoadTestShape):
        """``users:seconds`` steps in order, then stop (``SLUICE_BENCH_STEPS``)."""

        steps = [tuple(float(x) for x in s.split(":")) for s in STEPS.split(",") if s]

        def tick(self) -> tuple[int, float] | None:
            elapsed: float = self.get_run_time()  # type: ignore[no-untyped-call]
            end = 0.0
            for users, seconds in self.steps:
                end += seconds
                if elapsed < end:
                    return int(users), max(1.0, users)
            return None
