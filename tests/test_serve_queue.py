"""The trigger queue: one rotation per cluster however often it is triggered; batching."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from rotator.engine.report import ClusterOutcome, Outcome, RunSummary
from rotator.serve.queue import (
    Batch,
    QueueFullError,
    Trigger,
    TriggerQueue,
    TriggerSource,
    TriggerState,
)

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def trigger(cluster_id: str, source: TriggerSource, trigger_id: str, minutes: int = 0) -> Trigger:
    return Trigger(cluster_id, source, "test", T0 + timedelta(minutes=minutes), trigger_id)


class Runner:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()

    async def __call__(self, batch: Batch) -> RunSummary:
        self.batches.append(batch)
        self.started.set()
        await self.release.wait()
        now = datetime.now(UTC)
        return RunSummary.build(
            run_id=batch.run_id,
            started_at=now,
            finished_at=now,
            outcomes=[ClusterOutcome(c, "cn-hangzhou", Outcome.ROTATED) for c in batch.clusters],
            trigger=batch.trigger,
        )


def finished(queue: TriggerQueue, count: int) -> asyncio.Event:
    """Set once ``count`` batches have finished."""
    done = asyncio.Event()

    def listener(_batch: Batch, _summary: RunSummary | None) -> None:
        if len(queue.summaries) >= count:
            done.set()

    queue.listeners.append(listener)
    return done


async def drain(queue: TriggerQueue, runner: Runner, until: int) -> None:
    done = finished(queue, until)
    task = asyncio.create_task(queue.run(runner))
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        queue.close()
        await task


async def test_a_cluster_triggered_three_ways_is_rotated_once() -> None:
    queue = TriggerQueue(batch_delay=0.05, batch_max=100)
    queue.put(trigger("c-1", TriggerSource.LEASE, "lease-1", minutes=-60))
    queue.put(trigger("c-1", TriggerSource.EVENT, "ev-1", minutes=5))
    queue.put(trigger("c-1", TriggerSource.WEBHOOK, "wh-1", minutes=1))
    queue.put(trigger("c-2", TriggerSource.WEBHOOK, "wh-1", minutes=1))
    assert queue.depth == 2
    runner = Runner()

    await drain(queue, runner, until=1)

    assert len(runner.batches) == 1
    batch = runner.batches[0]
    assert batch.clusters == {"c-1": T0 + timedelta(minutes=5), "c-2": T0 + timedelta(minutes=1)}
    assert batch.trigger == "event+lease+webhook"
    for trigger_id in ("lease-1", "ev-1", "wh-1"):
        status = queue.status(trigger_id)
        assert status is not None
        assert status.state is TriggerState.DONE
        assert status.run_ids == [batch.run_id]
    assert queue.summaries[batch.run_id].counts["rotated"] == 2


async def test_batches_wait_for_the_delay_or_start_at_batch_max() -> None:
    queue = TriggerQueue(batch_delay=30.0, batch_max=2)
    runner = Runner()
    for i in range(5):
        queue.put(trigger(f"c-{i}", TriggerSource.WEBHOOK, "wh"))
    done = finished(queue, 2)
    task = asyncio.create_task(queue.run(runner))
    try:
        await asyncio.wait_for(done.wait(), 5)
        # Two full batches went at once; the last cluster waits for the 30 s delay.
        assert [len(b.clusters) for b in runner.batches] == [2, 2]
        assert queue.depth == 1
        status = queue.status("wh")
        assert status is not None
        assert status.state is TriggerState.QUEUED or status.state is TriggerState.RUNNING
    finally:
        queue.close()
        await task


async def test_a_trigger_during_a_running_batch_goes_into_the_next() -> None:
    queue = TriggerQueue(batch_delay=0.01, batch_max=10)
    runner = Runner()
    runner.release.clear()
    queue.put(trigger("c-1", TriggerSource.LEASE, "lease-1"))
    done = finished(queue, 2)
    task = asyncio.create_task(queue.run(runner))
    try:
        await asyncio.wait_for(runner.started.wait(), 5)
        status = queue.status("lease-1")
        assert status is not None
        assert status.state is TriggerState.RUNNING
        queue.put(trigger("c-1", TriggerSource.WEBHOOK, "wh-2", minutes=10))
        runner.release.set()
        await asyncio.wait_for(done.wait(), 5)
        assert [list(b.clusters) for b in runner.batches] == [["c-1"], ["c-1"]]
        assert runner.batches[1].clusters["c-1"] == T0 + timedelta(minutes=10)
    finally:
        queue.close()
        await task


async def test_close_refuses_triggers_and_drops_the_queued_ones() -> None:
    queue = TriggerQueue(batch_delay=60.0, batch_max=10)
    queue.put(trigger("c-1", TriggerSource.WEBHOOK, "wh-1"))
    assert queue.close() == ["c-1"]
    assert not queue.put(trigger("c-2", TriggerSource.WEBHOOK, "wh-2"))
    status = queue.status("wh-1")
    assert status is not None
    assert status.state is TriggerState.DROPPED
    runner = Runner()
    await asyncio.wait_for(queue.run(runner), 1)
    assert runner.batches == []


async def test_a_failing_runner_does_not_stop_the_queue() -> None:
    queue = TriggerQueue(batch_delay=0.01, batch_max=10)
    calls: list[Batch] = []
    failed = finished(queue, 0)  # set after the first (failed) batch
    succeeded = finished(queue, 1)

    async def flaky(batch: Batch) -> RunSummary:
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return await Runner()(batch)

    queue.put(trigger("c-1", TriggerSource.WEBHOOK, "wh-1"))
    task = asyncio.create_task(queue.run(flaky))
    try:
        await asyncio.wait_for(failed.wait(), 5)
        queue.put(trigger("c-2", TriggerSource.WEBHOOK, "wh-2"))
        await asyncio.wait_for(succeeded.wait(), 5)
    finally:
        queue.close()
        await task
    first = queue.status("wh-1")
    assert first is not None
    assert first.state is TriggerState.DONE
    assert first.run_ids[0] not in queue.summaries  # no summary: the run itself failed


class CountingId(str):
    """A trigger id that counts how often it is compared: a list scan compares every element,
    a set lookup (almost) none."""

    __slots__ = ()
    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountingId.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


async def test_membership_checks_do_not_scan_the_triggers_of_a_cluster() -> None:
    """400 ``"all"`` triggers over many clusters: comparisons stay O(1) per (cluster, trigger)."""
    queue = TriggerQueue(batch_delay=0.0, batch_max=10_000)
    clusters = [f"c-{i}" for i in range(50)]
    CountingId.comparisons = 0
    for n in range(400):
        trigger_id = CountingId(f"wh-{n}")
        queue.put_many(trigger(c, TriggerSource.WEBHOOK, trigger_id) for c in clusters)
        queue.put_many(trigger(c, TriggerSource.WEBHOOK, trigger_id) for c in clusters)
    entries = 2 * 400 * len(clusters)
    assert CountingId.comparisons < entries  # a list scan would need ~entries * 200
    runner = Runner()
    await drain(queue, runner, until=1)
    assert CountingId.comparisons < 2 * entries
    statuses = [queue.status(f"wh-{n}") for n in range(400)]
    assert all(s is not None and s.state is TriggerState.DONE for s in statuses)
    assert all(s is not None and s.clusters == len(clusters) for s in statuses)


async def test_the_queue_is_bounded_and_refuses_whole_triggers() -> None:
    queue = TriggerQueue(batch_delay=60.0, batch_max=10_000)
    queue.max_clusters = 5
    queue.max_entries = 12
    assert queue.put_many(trigger(f"c-{i}", TriggerSource.WEBHOOK, "t1") for i in range(5))
    with pytest.raises(QueueFullError, match="full"):
        queue.put(trigger("c-new", TriggerSource.EVENT, "t2"))
    assert queue.put_many(trigger(f"c-{i}", TriggerSource.WEBHOOK, "t3") for i in range(5))
    with pytest.raises(QueueFullError):  # 10 + 5 > 12 entries: nothing of it is queued
        queue.put_many(trigger(f"c-{i}", TriggerSource.WEBHOOK, "t4") for i in range(5))
    assert queue.status("t4") is None
    assert queue.depth == 5
    assert queue.holds("c-1")
    assert not queue.holds("c-new")
