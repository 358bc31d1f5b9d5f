"""One deduplicating queue for every trigger (lease, Vault event, webhook), drained in batches.

    queue = TriggerQueue(batch_delay=2.0, batch_max=500)
    queue.put(Trigger("ehpc-1", source="webhook", reason="audit", not_before=now, trigger_id=tid))
    await queue.run(run_batch)      # run_batch(batch) -> RunSummary, one call per batch

A cluster queued twice before its batch starts is rotated once: the batch carries the latest
``not_before`` of its triggers (a rotation committed after it satisfies all of them) and every
trigger id maps to that one run. A batch starts ``batch_delay`` after its first trigger, or at
once when ``batch_max`` clusters wait. A cluster triggered again while its batch runs goes into
the next batch, where the engine skips it if the running one already satisfied the trigger.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from rotator.engine.report import RunSummary
from rotator.engine.runtime import new_run_id
from rotator.serve._aio import wait_event

__all__ = [
    "Batch",
    "QueueFullError",
    "Trigger",
    "TriggerQueue",
    "TriggerSource",
    "TriggerState",
    "TriggerStatus",
]

log = structlog.get_logger("rotator.serve")

_KEEP_TRIGGERS = 10_000
_KEEP_RUNS = 200
MAX_CLUSTERS = 100_000
"""Distinct clusters waiting at once (events may name clusters the inventory does not know)."""
MAX_ENTRIES = 1_000_000
"""(cluster, trigger id) pairs waiting at once: 100 ``"all"`` triggers at 10,000 clusters."""


class QueueFullError(Exception):
    """The queue holds as much as it may; the trigger was not queued (retry later)."""


class TriggerSource(enum.StrEnum):
    LEASE = "lease"
    EVENT = "event"
    WEBHOOK = "webhook"
    CHECKOUT = "checkout"
    """A check-out lease ended (expired or checked in)."""


class TriggerState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DROPPED = "dropped"
    """The daemon stopped before the trigger's batch started."""


@dataclass(frozen=True, slots=True)
class Trigger:
    cluster_id: str
    source: TriggerSource
    reason: str
    not_before: datetime
    trigger_id: str


@dataclass(slots=True)
class _Pending:
    not_before: datetime
    sources: set[TriggerSource]
    trigger_ids: dict[str, None]
    """An ordered set: membership is O(1) however many triggers name the cluster."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What one engine run rotates: each cluster once, with the latest ``not_before``."""

    run_id: str
    clusters: dict[str, datetime]
    """cluster id -> not_before."""
    sources: frozenset[TriggerSource]
    trigger_ids: frozenset[str]

    @property
    def trigger(self) -> str:
        """For the run report: ``"lease"``, ``"event+webhook"``..."""
        return "+".join(sorted(s.value for s in self.sources))


@dataclass(slots=True)
class TriggerStatus:
    trigger_id: str
    state: TriggerState
    clusters: int
    run_ids: list[str] = field(default_factory=list)
    open_runs: int = 0
    queued: int = 0
    """Clusters of this trigger still waiting for a batch."""


BatchRunner = Callable[[Batch], Awaitable[RunSummary]]
Listener = Callable[[Batch, RunSummary | None], None]


class TriggerQueue:
    def __init__(
        self,
        *,
        batch_delay: float,
        batch_max: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batch_delay = batch_delay
        self.batch_max = max(1, batch_max)
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._entries = 0
        self.max_clusters = MAX_CLUSTERS
        self.max_entries = MAX_ENTRIES
        self._first_at: float | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self._paused = False
        self._running: Batch | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._triggers: OrderedDict[str, TriggerStatus] = OrderedDict()
        self.summaries: OrderedDict[str, RunSummary] = OrderedDict()
        """Finished runs by run id (the latest few)."""
        self.listeners: list[Listener] = []
        """Called after every batch (with None when the runner raised)."""

    # -- intake -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Clusters waiting for a batch (not counting the running one)."""
        return len(self._pending)

    @property
    def accepting(self) -> bool:
        return not self._closed

    def put(self, trigger: Trigger) -> bool:
        """Queue one cluster trigger; False once the queue is closed (shutting down)."""
        return self.put_many([trigger])

    def put_many(self, triggers: Iterable[Trigger]) -> bool:
        """False once the queue is closed; :class:`QueueFullError` (nothing queued) when full."""
        if self._closed:
            return False
        wanted = list(triggers)
        new_clusters = len({t.cluster_id for t in wanted} - self._pending.keys())
        if len(self._pending) + new_clusters > self.max_clusters or (
            self._entries + len(wanted) > self.max_entries
        ):
            raise QueueFullError(
                f"the trigger queue is full ({len(self._pending)} clusters and "
                f"{self._entries} triggers waiting); nothing was queued, retry later"
            )
        for trigger in wanted:
            pending = self._pending.get(trigger.cluster_id)
            if pending is None:
                pending = _Pending(trigger.not_before, set(), {})
                self._pending[trigger.cluster_id] = pending
            else:
                pending.not_before = max(pending.not_before, trigger.not_before)
            pending.sources.add(trigger.source)
            status = self._triggers.get(trigger.trigger_id)
            if status is None:
                status = TriggerStatus(trigger.trigger_id, TriggerState.QUEUED, 0)
                self._remember(status)
            if trigger.trigger_id not in pending.trigger_ids:
                pending.trigger_ids[trigger.trigger_id] = None
                self._entries += 1
                status.clusters += 1
                status.queued += 1
        if self._pending and self._first_at is None:
            self._first_at = self._clock()
        self._wakeup.set()
        return True

    def _remember(self, status: TriggerStatus) -> None:
        self._triggers[status.trigger_id] = status
        while len(self._triggers) > _KEEP_TRIGGERS:
            self._triggers.popitem(last=False)

    def status(self, trigger_id: str) -> TriggerStatus | None:
        return self._triggers.get(trigger_id)

    def queued_clusters(self) -> set[str]:
        return set(self._pending)

    def holds(self, cluster_id: str) -> bool:
        """The cluster waits for a batch or is in the running one."""
        running = self._running
        return cluster_id in self._pending or (
            running is not None and cluster_id in running.clusters
        )

    # -- draining ---------------------------------------------------------------------------

    def _take(self) -> Batch:
        chosen = list(itertools.islice(self._pending, self.batch_max))
        clusters: dict[str, datetime] = {}
        sources: set[TriggerSource] = set()
        trigger_ids: set[str] = set()
        run_id = new_run_id()
        for cluster_id in chosen:
            pending = self._pending.pop(cluster_id)
            self._entries -= len(pending.trigger_ids)
            clusters[cluster_id] = pending.not_before
            sources |= pending.sources
            for trigger_id in pending.trigger_ids:
                status = self._triggers.get(trigger_id)
                if status is not None:
                    status.queued -= 1
                trigger_ids.add(trigger_id)
        self._first_at = self._clock() if self._pending else None
        batch = Batch(run_id, clusters, frozenset(sources), frozenset(trigger_ids))
        for trigger_id in trigger_ids:
            status = self._triggers.get(trigger_id)
            if status is not None:
                status.state = TriggerState.RUNNING
                status.run_ids.append(batch.run_id)
                status.open_runs += 1
        return batch

    def _ready_in(self) -> float | None:
        """Seconds until the next batch may start; None with nothing queued."""
        if not self._pending or self._first_at is None or self._paused:
            return None
        if len(self._pending) >= self.batch_max:
            return 0.0
        return max(0.0, self._first_at + self.batch_delay - self._clock())

    async def run(self, runner: BatchRunner) -> None:
        """Drain batches through ``runner`` until :meth:`close`; one batch at a time."""
        while True:
            wait = self._ready_in()
            if self._closed:
                return
            if wait is None or wait > 0:
                self._wakeup.clear()
                await wait_event(self._wakeup, wait)
                continue
            batch = self._take()
            self._running = batch
            self._idle.clear()
            summary: RunSummary | None = None
            try:
                summary = await runner(batch)
            except asyncio.CancelledError:
                self._finish(batch, None)
                raise
            except Exception as exc:  # noqa: BLE001 - one broken batch must not end the daemon
                log.error("batch_failed", run_id=batch.run_id, error=type(exc).__name__)
            self._finish(batch, summary)

    def _finish(self, batch: Batch, summary: RunSummary | None) -> None:
        if summary is not None:
            self.summaries[batch.run_id] = summary
            while len(self.summaries) > _KEEP_RUNS:
                self.summaries.popitem(last=False)
        for trigger_id in batch.trigger_ids:
            status = self._triggers.get(trigger_id)
            if status is not None:
                status.open_runs -= 1
                if status.open_runs <= 0 and status.queued <= 0:
                    status.state = TriggerState.DONE
        self._running = None
        self._idle.set()
        for listener in self.listeners:
            listener(batch, summary)

    def pause(self) -> None:
        """Start no new batch (a config reload swaps the runtime); triggers still queue."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until no batch is running."""
        await self._idle.wait()

    def close(self) -> list[str]:
        """Refuse new triggers and start no new batch; returns the clusters dropped."""
        self._closed = True
        dropped = list(self._pending)
        for pending in self._pending.values():
            for trigger_id in pending.trigger_ids:
                status = self._triggers.get(trigger_id)
                if status is not None:
                    status.queued = 0
                    if status.state is TriggerState.QUEUED:
                        status.state = TriggerState.DROPPED
        self._pending.clear()
        self._entries = 0
        self._wakeup.set()
        return dropped
