"""Pure parts of ``python -m bench``'s tool handling: siege's summary, hey's argv, the CLI.

No load is generated and no process is started here.
"""

from __future__ import annotations

import pytest

from bench.__main__ import parse_args
from bench.hey import hey_argv
from bench.hotpath.loadgen import LoadgenError
from bench.scenarios import SCENARIOS
from bench.scenarios.sla import _steps
from bench.siege import USER_LIMIT, parse_siege, siege_rc

SIEGE_JSON = """\
** SIEGE 4.0.7
** Preparing 500 concurrent users for battle.
The server is now under siege...
{	"transactions":			       23750,
	"availability":			      100.00,
	"elapsed_time":			       59.61,
	"data_transferred":		        2.92,
	"response_time":		        1.24,
	"transaction_rate":		      398.42,
	"throughput":			        0.05,
	"concurrency":			      494.63,
	"successful_transactions":	       23750,
	"failed_transactions":		           0,
	"longest_transaction":		        2.03,
	"shortest_transaction":		        0.20
}
"""

SIEGE_TEXT = """\
Lifting the server siege...
Transactions:		        1,200 hits
Availability:		       99.50 %
Elapsed time:		        5.01 secs
Data transferred:	        0.14 MB
Response time:		        0.21 secs
Transaction rate:	      239.52 trans/sec
Throughput:		        0.03 MB/sec
Concurrency:		       49.80
Successful transactions:        1,200
Failed transactions:	           6
Longest transaction:	        0.90
Shortest transaction:	        0.20
"""


def test_parse_siege_reads_the_json_summary() -> None:
    s = parse_siege(SIEGE_JSON)
    assert s["transactions"] == 23750
    assert s["availability"] == 100.0
    assert s["transaction_rate"] == 398.42
    assert s["longest_transaction"] == 2.03
    assert s["failed_transactions"] == 0


def test_parse_siege_reads_the_text_summary_with_thousands_separators() -> None:
    s = parse_siege(SIEGE_TEXT)
    assert s["transactions"] == 1200
    assert s["availability"] == 99.5
    assert s["failed_transactions"] == 6
    assert s["longest_transaction"] == 0.9


def test_parse_siege_refuses_output_without_a_summary() -> None:
    with pytest.raises(LoadgenError, match="no summary"):
        parse_siege("[error] socket: unable to connect\n")


def test_siege_rc_lifts_the_user_cap_and_asks_for_json() -> None:
    rc = siege_rc()
    assert f"limit = {USER_LIMIT}" in rc and USER_LIMIT >= 500
    assert "json_output = true" in rc
    assert "connection = keep-alive" in rc


def test_hey_argv_sends_host_with_dash_host_and_counts_exactly() -> None:
    argv = hey_argv("http://127.0.0.1:1/", 500, 20, 5.0, {"Host": "h.default.localhost"})
    assert argv[:7] == ["hey", "-n", "500", "-c", "20", "-q", "5"]
    assert argv[argv.index("-host") + 1] == "h.default.localhost"
    assert "-o" in argv and argv[-1] == "http://127.0.0.1:1/"


def test_load_test_steps_climb_to_the_user_count_and_fill_the_duration() -> None:
    steps = _steps(40.0, quick=False, users=None)
    assert [u for u, _ in steps] == [5, 10, 20, 30]
    assert sum(s for _, s in steps) == 40.0
    assert [u for u, _ in _steps(4.0, quick=True, users=12)] == [2, 4]


def test_cli_accepts_all_and_rejects_unknown_scenarios() -> None:
    assert parse_args(["all", "--quick"]).scenarios == list(SCENARIOS)
    with pytest.raises(SystemExit):
        parse_args(["nope"])
    with pytest.raises(SystemExit):
        parse_args(["hotpath", "--duration", "0"])


def test_every_scenario_has_a_quick_run_of_a_few_seconds() -> None:
    for s in SCENARIOS.values():
        assert 0 < s.quick_s <= 5, s.name
