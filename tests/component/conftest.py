"""Component-test plumbing: the engine's tests run on uvloop, as production does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from tests.component.engine_harness import EngineRig


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name.startswith("test_engine_"):
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def engine() -> AsyncIterator[EngineRig]:
    rig = EngineRig()
    try:
        yield rig
    finally:
        await rig.close()
