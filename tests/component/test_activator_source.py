"""Sources: the static file is re-read on change and on demand; bad files are refused."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from activator.model import RoutingConfig
from activator.source import PushSource, StaticFileSource
from activator.static_yaml import ConfigError

pytestmark = pytest.mark.timeout(10)

GOOD = """
routes:
  - name: hello
    namespace: default
    traffic: [{revisionName: hello-1, percent: 100}]
revisions:
  - {name: hello-1, namespace: default, endpoints: ["127.0.0.1:1"]}
"""


async def next_snapshot(it: object) -> RoutingConfig:
    return await asyncio.wait_for(it.__anext__(), 3)  # type: ignore[attr-defined]


def test_open_refuses_an_invalid_file_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("routes: [{name: Bad}]")
    with pytest.raises(ConfigError) as err:
        StaticFileSource.open(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


async def test_file_change_is_picked_up_and_bad_change_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(GOOD)
    src = StaticFileSource.open(path, interval=0.02)
    it = src.snapshots()
    first = await next_snapshot(it)
    assert first.revisions[0].endpoints == ("127.0.0.1:1",)

    with caplog.at_level(logging.ERROR, logger="sluice.activator.source"):
        path.write_text(GOOD + "bogus: 1\n")
        async with asyncio.timeout(3):
            while not caplog.records:
                await asyncio.sleep(0.02)
    assert len(caplog.records) == 1
    assert "bogus" in caplog.records[0].getMessage()
    assert "\n" not in caplog.records[0].getMessage()
    assert src.current == first  # the running configuration stays in force

    path.write_text(GOOD.replace("127.0.0.1:1", "127.0.0.1:2"))
    second = await next_snapshot(it)
    assert second.revisions[0].endpoints == ("127.0.0.1:2",)
    await it.aclose()  # type: ignore[attr-defined]


async def test_reload_rereads_at_once(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(GOOD)
    src = StaticFileSource.open(path, interval=3600)
    it = src.snapshots()
    await next_snapshot(it)
    path.write_text(GOOD.replace("127.0.0.1:1", "127.0.0.1:3"))
    src.reload()  # what SIGHUP does
    assert (await next_snapshot(it)).revisions[0].endpoints == ("127.0.0.1:3",)
    await it.aclose()  # type: ignore[attr-defined]


async def test_push_source_coalesces_to_the_newest_snapshot() -> None:
    src = PushSource()
    it = src.snapshots()
    a, b = RoutingConfig(domain="a.example"), RoutingConfig(domain="b.example")
    src.update(a)
    src.update(b)
    assert await next_snapshot(it) == b
    src.update(a)
    assert await next_snapshot(it) == a
