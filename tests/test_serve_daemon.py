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


@pytest.mark.asyncio
async def test_a_flood_of_vnc_write_events_rereads_each_cluster_once_at_a_time() -> None:
    """Every rotation writes its VNC secret, so a 10,000-cluster batch is 10,000 events: one
    re-read per cluster in flight, none for a cluster our own queue holds (the batch re-reads)."""
    import asyncio

    from rotator.engine.model import VncState
    from rotator.serve.events import SCHEDULE
    from rotator.serve.schedule import Lease

    release = asyncio.Event()
    reads: list[str] = []

    @dataclass
    class _SlowStore(_Store):
        async def read_vnc(self, cluster_id: str) -> VncState:
            reads.append(cluster_id)
            await release.wait()
            return VncState(cluster_id)

    daemon = Daemon(Settings())
    daemon._runtime = cast(Runtime, cast(Any, _Runtime(_SlowStore())))
    daemon.schedule.replace_all([Lease("c-1"), Lease("c-2")])
    event = cast(Any, None)
    for _ in range(1000):
        daemon._vault_changed(SCHEDULE, "c-1", event)
    daemon._vault_changed(SCHEDULE, "c-2", event)
    assert len(daemon._rereads) == 2
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*daemon._rereads)
    assert sorted(reads) == ["c-1", "c-2"]
