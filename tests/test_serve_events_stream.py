"""The event stream against a fake Vault event endpoint: refusals and recovery."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
import structlog

from rotator.secret import Secret
from rotator.serve.events import EventMapper, EventStream, VaultEvent
from tests.support.events import FakeEventServer, event_server  # noqa: F401 - fixture

TOKEN = "events-token"


async def _token() -> Secret:
    return Secret(TOKEN)


@pytest.mark.asyncio
async def test_a_403_is_logged_once_with_the_fix_then_retried_until_granted(
    event_server: FakeEventServer,  # noqa: F811 - the fixture
) -> None:
    event_server.token = TOKEN
    event_server.handshake_status = 403
    seen: list[str] = []

    def on_trigger(cluster_id: str, _when: datetime, _event: VaultEvent) -> None:
        seen.append(cluster_id)

    stream = EventStream(
        addr=event_server.addr,
        token=_token,
        event_types=["kv-v2/data-write"],
        mapper=EventMapper(kv_mount="secret", trigger_path="ehpc/trigger", known=lambda: []),
        on_trigger=on_trigger,
        forbidden_backoff=0.05,  # production: 10 minutes
    )
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(stream.run(stop))
        try:
            async with asyncio.timeout(30):
                while stream.forbidden < 3:  # noqa: ASYNC110 - polls a counter, no event
                    await asyncio.sleep(0.01)
            assert not stream.unavailable  # a 403 is not "no event stream": keep trying
            event_server.handshake_status = None  # the policy was granted
            await event_server.wait_connected("kv-v2/data-write")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    forbidden = [e for e in logs if e["event"] == "vault_events_forbidden"]
    assert len(forbidden) == 1
    assert "sys/events/subscribe/kv-v2/data-write" in forbidden[0]["fix"]
    assert "subscribe_event_types" in forbidden[0]["fix"]
    assert TOKEN not in repr(logs)
