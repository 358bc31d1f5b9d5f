"""The daemon's readiness without servers: not ready until the schedule is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from rotator.config import Settings
from rotator.engine.runtime import Runtime
from rotator.serve.daemon import Daemon


@dataclass
class _Store:
    async def health(self) -> bool:
        return True


@dataclass
class _Runtime:
    store: _Store


@pytest.mark.asyncio
async def test_not_ready_and_not_taking_webhooks_until_the_schedule_is_loaded() -> None:
    daemon = Daemon(Settings())
    assert await daemon._readiness() == "starting"
    daemon._runtime = cast(Runtime, cast(Any, _Runtime(_Store())))
    reason = await daemon._readiness()
    assert reason is not None
    assert "loading" in reason
    assert not daemon.loaded
    daemon.schedule_loaded.set()
    assert await daemon._readiness() is None
    assert daemon.loaded
