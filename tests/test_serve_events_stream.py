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


@pytest.mark.asyncio
async def test_kv_subscriptions_are_filtered_by_data_path_and_routed_by_path(
    event_server: FakeEventServer,  # noqa: F811 - the fixture
) -> None:
    """Vault sends only the writes and patches rotator needs (the filter is applied on Vault's
    side); a trigger write rotates, a lease document's write reconciles leases, a VNC secret's
    write re-reads that cluster's due time."""
    from tests.support.events import kv_event

    event_server.token = TOKEN
    triggered: list[str] = []
    changes: list[tuple[str, str]] = []
    mapper = EventMapper(
        kv_mount="secret",
        trigger_path="ehpc/trigger",
        known=lambda: [],
        vnc_path="ehpc/vnc",
        leases_path="ehpc/leases",
    )
    stream = EventStream(
        addr=event_server.addr,
        token=_token,
        event_types=["kv-v2/data-write", "kv-v2/data-patch"],
        mapper=mapper,
        on_trigger=lambda cluster_id, _when, _event: triggered.append(cluster_id),
        on_change=lambda kind, cluster_id, _event: changes.append((kind, cluster_id)),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        for event_type in ("kv-v2/data-write", "kv-v2/data-patch"):
            await event_server.wait_connected(event_type)
            assert "data_path matches" in event_server.filters[event_type]
        send = event_server.send
        assert await send("kv-v2/data-write", kv_event("secret/data/other/ehpc-1")) == 0
        assert await send("kv-v2/data-write", kv_event("secret/data/ehpc/trigger/a/b")) == 0
        assert await send("kv-v2/data-write", kv_event("secret/data/ehpc/triggerX/c-0")) == 0
        patch = kv_event("secret/data/ehpc/trigger/c-1", event_type="kv-v2/data-patch")
        assert await send("kv-v2/data-patch", patch) == 1
        assert await send("kv-v2/data-write", kv_event("secret/data/ehpc/leases/c-2")) == 1
        assert await send("kv-v2/data-write", kv_event("secret/data/ehpc/vnc/c-3")) == 1
        async with asyncio.timeout(30):
            while len(changes) < 2 or not triggered:  # noqa: ASYNC110 - polls what arrived
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert triggered == ["c-1"]
    assert sorted(changes) == [("leases", "c-2"), ("schedule", "c-3")]


def test_the_data_path_filter_quotes_paths_and_skips_what_it_cannot_express() -> None:
    from rotator.serve.events import data_path_filter

    expression = data_path_filter("secret", ["ehpc/trigger", "team.a/vnc"])
    assert expression == (
        'data_path matches "^secret/data/ehpc/trigger/[^/]+$" or '
        'data_path matches "^secret/data/team[.]a/vnc/[^/]+$"'
    )
    assert data_path_filter("secret", ['we"ird']) is None
