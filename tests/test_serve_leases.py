"""The lease intake without Vault: what it queues, and what it records after a batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from rotator.engine.report import ClusterOutcome, Outcome, RunSummary
from rotator.leases.model import LeaseDoc
from rotator.leases.service import LeaseService
from rotator.serve.leases import LeaseIntake
from rotator.serve.metrics import ServeMetrics
from rotator.serve.queue import Batch, TriggerQueue, TriggerSource

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeService:
    docs: list[LeaseDoc]
    rotated: list[tuple[str, datetime]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    async def reconcile(self) -> list[LeaseDoc]:
        return self.docs

    async def mark_rotated(self, cluster_id: str, *, not_before: datetime) -> None:
        self.rotated.append((cluster_id, not_before))

    async def mark_failed(self, cluster_id: str, *, code: str) -> None:
        self.failed.append((cluster_id, code))


def intake(service: FakeService) -> tuple[LeaseIntake, TriggerQueue]:
    queue = TriggerQueue(batch_delay=60, batch_max=100)
    lease_intake = LeaseIntake(queue, ServeMetrics(), refresh=lambda: 300.0, now=lambda: T0)
    lease_intake.bind(cast(LeaseService, cast(Any, service)))
    return lease_intake, queue


@pytest.mark.asyncio
async def test_owed_rotations_are_queued_once_and_backoffs_are_respected() -> None:
    owed = LeaseDoc("c-1", rotation_due=T0 - timedelta(minutes=1), ended="expired")
    waiting = LeaseDoc(
        "c-2",
        rotation_due=T0 - timedelta(minutes=5),
        failures=1,
        last_error="AgentError",
        next_attempt_at=T0 + timedelta(seconds=30),
    )
    service = FakeService([owed, waiting, LeaseDoc("c-3")])
    lease_intake, queue = intake(service)
    assert await lease_intake.reconcile() == pytest.approx(30.0)  # wakes for c-2's retry
    assert await lease_intake.reconcile() == pytest.approx(30.0)
    assert queue.depth == 1
    assert queue.holds("c-1")
    assert not queue.holds("c-2")
    status = queue.status(next(iter(queue._triggers)))
    assert status is not None
    assert status.clusters == 1


@pytest.mark.asyncio
async def test_after_a_batch_debts_are_paid_failures_recorded_and_claims_left_alone() -> None:
    docs = [LeaseDoc(c, rotation_due=T0 - timedelta(minutes=1)) for c in ("a", "b", "c", "d")]
    service = FakeService(docs)
    lease_intake, queue = intake(service)
    await lease_intake.reconcile()
    outcomes = [
        ClusterOutcome("a", "r", Outcome.ROTATED),
        ClusterOutcome("b", "r", Outcome.SKIPPED, code="AlreadyRotated"),
        ClusterOutcome("c", "r", Outcome.FAILED, code="AgentError"),
        ClusterOutcome("d", "r", Outcome.SKIPPED, code="ClaimedElsewhere"),
    ]
    not_before = T0 - timedelta(seconds=30)
    batch = Batch(
        "run-1",
        dict.fromkeys("abcd", not_before),
        frozenset({TriggerSource.CHECKOUT}),
        frozenset(),
    )
    summary = RunSummary.build(
        run_id="run-1", started_at=T0, finished_at=T0, outcomes=outcomes, trigger="checkout"
    )
    await lease_intake.after_batch(batch, summary)
    assert service.rotated == [("a", not_before), ("b", not_before)]
    assert service.failed == [("c", "AgentError")]
    assert queue.depth == 4  # untouched by after_batch: the queue's own run would take them


@pytest.mark.asyncio
async def test_reconcile_reports_the_checked_out_clusters_whose_period_rotation_waits() -> None:
    from rotator.leases.model import Holder, Lease

    alice = Holder("oidc-alice", entity_id="e-1")
    open_doc = LeaseDoc(
        "c-1",
        leases=(Lease("c-1:01", alice, "debug", T0, T0 + timedelta(hours=1)),),
    )
    service = FakeService([open_doc, LeaseDoc("c-2")])
    holds: list[dict[str, str]] = []
    lease_intake, _queue = intake(service)
    lease_intake.on_holds = lambda held: holds.append(dict(held))
    await lease_intake.reconcile()
    assert list(holds[-1]) == ["c-1"]
    assert "oidc-alice" in holds[-1]["c-1"]
    assert "2026-05-01T13:00" in holds[-1]["c-1"]
    service.docs = [LeaseDoc("c-1", rotation_due=T0, ended="checked in")]
    await lease_intake.reconcile()
    assert holds[-1] == {}
