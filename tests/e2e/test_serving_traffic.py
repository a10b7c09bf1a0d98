"""Traffic splitting with real pods: the tutorial's canary, three-way split, tags, refusal.

One ``sluice up`` runs the whole story in order, as a user would type it; each step checks
the split over real requests through the activator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_serving_support import EXAMPLES, run_load, sluice_up, wait_for

HOST = "hello.default.localhost"


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_canary_three_way_tags_and_refusal(tmp_path: Path) -> None:
    with sluice_up(tmp_path, EXAMPLES / "hello.yaml") as s:
        # v1 alone gets everything.
        s.wait_ready("hello", "hello-v1")
        first = run_load(s.port, HOST, 100)
        assert first.revisions == {"hello-v1": 100}, first

        # Canary 50/50 over 2000 requests.
        s.cli("apply", "-f", str(EXAMPLES / "canary" / "1-v2-50-50.yaml"))
        wait_for(lambda: s.route("hello") == [("hello-v1", 50, ""), ("hello-v2", 50, "")],
                 20, "the 50/50 split")  # fmt: skip
        half = run_load(s.port, HOST, 2000, concurrency=32)
        assert not half.failures, half.failures
        assert 0.45 <= half.share("hello-v1") <= 0.55, half
        assert 0.45 <= half.share("hello-v2") <= 0.55, half

        # Then 10/90.
        s.cli("apply", "-f", str(EXAMPLES / "canary" / "2-v2-10-90.yaml"))
        wait_for(lambda: s.route("hello")[0][1] == 10, 10, "the 10/90 split")
        ninety = run_load(s.port, HOST, 1000, concurrency=32)
        assert not ninety.failures, ninety.failures
        assert 0.06 <= ninety.share("hello-v1") <= 0.14, ninety

        # Three-way 40/30/30 with tags, then hello-v4 behind a 0 % `latest` tag.
        s.cli("apply", "-f", str(EXAMPLES / "three-way" / "1-40-30-30.yaml"))
        s.wait_ready("hello", "hello-v3")
        s.cli("apply", "-f", str(EXAMPLES / "three-way" / "2-latest-0.yaml"))
        s.wait_ready("hello", "hello-v4")
        wait_for(lambda: len(s.route("hello")) == 4, 10, "the tagged route")
        split = run_load(s.port, HOST, 2000, concurrency=32)
        assert not split.failures, split.failures
        assert split.revisions["hello-v4"] == 0, split
        for rev, want in (("hello-v1", 0.40), ("hello-v2", 0.30), ("hello-v3", 0.30)):
            assert want - 0.05 <= split.share(rev) <= want + 0.05, split

        # Tag hosts and the Knative-Serving-Tag header (enabled in embedded mode).
        latest = run_load(s.port, "latest-hello.default.localhost", 20)
        assert latest.revisions == {"hello-v4": 20}, latest
        v1 = run_load(s.port, "v1-hello.default.localhost", 20)
        assert v1.revisions == {"hello-v1": 20}, v1
        header = run_load(s.port, HOST, 20, headers={"Knative-Serving-Tag": "v2"})
        assert header.revisions == {"hello-v2": 20}, header
        unknown = run_load(s.port, HOST, 200, headers={"Knative-Serving-Tag": "nope"})
        assert unknown.revisions["hello-v4"] == 0 and len(unknown.revisions) == 3, unknown

        # A manifest whose percents sum to 90 is refused and the route stays as it was.
        before = s.route("hello")
        res = s.cli("apply", "-f", str(EXAMPLES / "three-way" / "bad-sum-90.yaml"), check=False)
        assert res.returncode == 1
        assert "Traffic targets sum to 90, want 100: spec.traffic" in res.stderr
        assert s.route("hello") == before
        after = run_load(s.port, HOST, 300, concurrency=16)
        assert not after.failures and after.revisions["hello-v1"] > 60, after
