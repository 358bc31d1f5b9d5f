"""The daemon's readiness without servers: not ready until the schedule is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from rotator.config import ServeSettings, Settings
from rotator.engine.runtime import Runtime
from rotator.errors import ConfigError
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


@pytest.mark.parametrize(
    ("serve", "message"),
    [
        ({"body_timeout": 0.0}, "serve.body_timeout: must be longer than 0s"),
        ({"header_timeout": 0.0}, "serve.header_timeout"),
        ({"checkout_max_ttl": 0.0}, "serve.checkout_max_ttl"),
        ({"checkout_default_ttl": 7200.0, "checkout_max_ttl": 3600.0}, "checkout_default_ttl"),
        ({"tls_cert_file": "/nonexistent/cert.pem"}, "both"),
    ],
)
def test_bad_serve_settings_are_refused_up_front(serve: dict[str, Any], message: str) -> None:
    settings = Settings(serve=ServeSettings(**serve))
    with pytest.raises(ConfigError, match=message):
        Daemon(settings)
