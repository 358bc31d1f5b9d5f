"""What the daemon reads from Vault after a batch (issue 14 §2: Vault requests in ``serve``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from rotator.engine.report import ClusterOutcome, Outcome, RunSummary
from rotator.engine.runtime import Runtime
from rotator.secret import Secret
from rotator.serve.intake import Inventory, ScheduleIntake
from rotator.serve.metrics import ServeMetrics
from rotator.serve.queue import Batch, TriggerQueue, TriggerSource
from rotator.serve.schedule import Lease, Schedule, ScheduleSettings
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DAY = 86400.0


async def test_after_a_batch_the_new_due_time_costs_one_read_per_cluster() -> None:
    """The schedule needs the committed record and its custom metadata, which one data read
    returns; the pending record is never needed for a due time."""
    store = MemoryStore()
    store.put_vnc("c-1", Secret("Ab12cd"), staged_at=T0, rotated_at=T0)
    state = await store.read_vnc("c-1", pending=True)
    staged = await store.stage(state, Secret("Ef34gh"), staged_at=T0, region="r")
    await store.commit(
        staged,
        request_id="REQ",
        rotated_at=T0,
        region="r",
        next_rotation_at=T0 + timedelta(days=30),
    )
    schedule = Schedule(ScheduleSettings(period=30 * DAY, jitter=0.0), now=lambda: T0)
    schedule.set_lease(Lease.from_metadata("c-1", {}))
    intake = ScheduleIntake(
        TriggerQueue(batch_delay=60, batch_max=100), ServeMetrics(), schedule, Inventory()
    )
    runtime = SimpleNamespace(
        store=store, settings=SimpleNamespace(vault=SimpleNamespace(max_workers=4))
    )
    batch = Batch("run", {"c-1": T0}, frozenset({TriggerSource.LEASE}), frozenset({"t"}))
    outcome = ClusterOutcome(cluster_id="c-1", region="r", outcome=Outcome.ROTATED)
    summary = RunSummary(run_id="run", started_at=T0, finished_at=T0, outcomes=(outcome,))
    store.calls.clear()

    await intake.after_batch(cast(Runtime, cast(Any, runtime)), batch, summary)

    assert store.calls == ["read_vnc"]
    assert schedule.seconds_until_next_due() == 30 * DAY
