"""siege: a resource file that lifts its 255-user cap, a bounded run, and its summary parsed.

siege 4 prints its summary as JSON when ``json_output = true`` (our resource file sets it),
older ones as ``Transactions: 123 hits`` lines; ``parse_siege`` reads both.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.hotpath.loadgen import TOOL_SLACK_S, LoadgenError

#: siege's own default caps concurrent users at 255; the tutorial's run needs 500.
USER_LIMIT = 1000

#: Keys of siege's JSON summary, and the label siege prints for each in text mode.
_TEXT_LABELS = {
    "transactions": "Transactions",
    "availability": "Availability",
    "elapsed_time": "Elapsed time",
    "data_transferred": "Data transferred",
    "response_time": "Response time",
    "transaction_rate": "Transaction rate",
    "throughput": "Throughput",
    "concurrency": "Concurrency",
    "successful_transactions": "Successful transactions",
    "failed_transactions": "Failed transactions",
    "longest_transaction": "Longest transaction",
    "shortest_transaction": "Shortest transaction",
}


def siege_rc(keep_alive: bool = True) -> str:
    """A siege resource file: JSON summary, no per-request lines, the user cap lifted."""
    return (
        "verbose = false\n"
        "quiet = true\n"
        "json_output = true\n"
        "show-logfile = false\n"
        "logging = false\n"
        "protocol = HTTP/1.1\n"
        f"connection = {'keep-alive' if keep_alive else 'close'}\n"
        f"limit = {USER_LIMIT}\n"
        "benchmark = true\n"  # no delay between a user's requests, as with -b
    )


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def parse_siege(text: str) -> dict[str, float]:
    """siege's summary → ``{transactions, availability, ..., longest_transaction}``.

    Raises ``LoadgenError`` when neither form is found.
    """
    start = text.rfind("{")
    if start >= 0:
        end = text.find("}", start)
        try:
            data = json.loads(text[start : end + 1])
            return {k: float(v) for k, v in data.items() if k in _TEXT_LABELS}
        except ValueError:
            pass
    out: dict[str, float] = {}
    for key, label in _TEXT_LABELS.items():
        m = re.search(rf"^\s*{label}:\s+([\d.,]+)", text, re.M)
        if m:
            out[key] = _number(m.group(1))
    if "transactions" not in out:
        raise LoadgenError(f"siege: no summary in output: {text[-300:]!r}")
    return out


def run_siege(
    url: str,
    *,
    users: int,
    duration_s: int,
    headers: Mapping[str, str],
    rc_path: Path,
    log_path: Path,
    reps: int | None = None,
) -> dict[str, Any]:
    """``siege -c USERS -t Ns`` (or ``-r REPS``) with our resource file; the parsed summary.

    siege 4.0 can hang for ever at the end of a timed run with many users, with every
    response already in its sockets (JoeDog/siege#66; seen here with -c 500). A timed run
    that outlives its duration by ``TOOL_SLACK_S`` is therefore killed and tried once more;
    a repetition-count run (``reps``) does not take that path, so the CI smoke uses one.
    """
    rc_path.write_text(siege_rc())
    limit = ["-r", str(reps)] if reps is not None else ["-t", f"{duration_s}S"]
    argv = ["siege", "-R", str(rc_path), "-c", str(users), *limit]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    budget = duration_s + TOOL_SLACK_S
    for attempt in (1, 2):
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=budget,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            break
        except subprocess.TimeoutExpired as exc:
            if attempt == 2:
                raise LoadgenError(
                    f"siege did not exit within {budget:.0f} s twice (siege's end-of-run hang, "
                    "JoeDog/siege#66)"
                ) from exc
    output = done.stdout + done.stderr
    log_path.write_text(output)
    summary: dict[str, Any] = dict(parse_siege(output))
    summary["argv"] = " ".join(argv)
    return summary
