"""The daemon's trigger sources, one object each, all feeding the one :class:`TriggerQueue`.

    schedule = ScheduleIntake(queue, metrics, Schedule(...))   # due periods -> "lease" triggers
    events = EventIntake(queue, metrics, inventory)              # Vault events -> "event"
    webhook = WebhookIntake(queue, metrics, inventory, auth)     # POST /v1/rotate -> "webhook"
    (check-out leases: :class:`rotator.serve.leases.LeaseIntake` -> "checkout")

Each owns its loop (if any) and what it learns after a batch; the daemon owns the life cycle.
:class:`Inventory` is the one view of the known clusters they share.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from rotator.config import Settings
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.report import RunSummary
from rotator.engine.rotation import Target
from rotator.engine.runtime import Runtime
from rotator.errors import RotatorError, VaultError
from rotator.leases.vault import lease_paths
from rotator.serve._aio import wait_event
from rotator.serve.events import (
    ChangeCallback,
    EventMapper,
    EventStream,
    VaultEvent,
    with_lease_events,
)
from rotator.serve.leases import satisfied
from rotator.serve.metrics import ServeMetrics
from rotator.serve.queue import Batch, QueueFullError, Trigger, TriggerQueue, TriggerSource
from rotator.serve.queue import TriggerState as _State
from rotator.serve.schedule import Lease, Schedule
from rotator.serve.webhook import WebhookAuth, new_trigger_id

__all__ = ["EventIntake", "Inventory", "ScheduleIntake", "WebhookIntake"]

log = structlog.get_logger("rotator.serve")

_REFRESH_RETRY = 10.0
_MIN_WAIT = 0.05


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Inventory:
    """The clusters the daemon knows, loaded from Vault (or the config / discovery)."""

    def __init__(self) -> None:
        self.targets: dict[str, Target] = {}
        self.loaded = asyncio.Event()

    def known(self) -> Collection[str]:
        return self.targets.keys()

    def target(self, cluster_id: str) -> Target:
        # Unknown (an event for a new cluster): the engine finds the region in the root secret.
        return self.targets.get(cluster_id) or Target(cluster_id=cluster_id, region="")

    async def load(self, runtime: Runtime) -> dict[str, Target]:
        settings = runtime.settings
        if settings.inventory.source == "vault":
            # Ids only: the engine reads each root credential when it rotates that cluster.
            periods = {c.id: c.period for c in settings.inventory.clusters if c.period}
            excluded = set(settings.inventory.exclude)
            ids = await runtime.store.list_root_clusters()
            return {
                i: Target(cluster_id=i, region="", period=periods.get(i))
                for i in ids
                if i not in excluded
            }
        # No statuses: kept until the next refresh, one would go stale (a trigger for a cluster
        # started since must rotate it); the API refuses a stopped cluster when it is called.
        targets = await resolve_targets(runtime, Selection(all=True), statuses=False)
        return {t.cluster_id: replace(t, root=None) for t in targets}


class ScheduleIntake:
    """Rotation periods: reloads inventory and due times, fires what is due."""

    def __init__(
        self,
        queue: TriggerQueue,
        metrics: ServeMetrics,
        schedule: Schedule,
        inventory: Inventory,
        *,
        on_refresh: Callable[[], None] = lambda: None,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.schedule = schedule
        self.inventory = inventory
        self.on_refresh = on_refresh
        self.changed = asyncio.Event()
        self._next_pending_scan = 0.0  # the first refresh scans

    async def refresh(self, runtime: Runtime) -> None:
        """Reload the inventory and every period's due time from Vault."""
        inventory = await self.inventory.load(runtime)
        # A replica SIGKILLed after it staged (maybe after the API applied it) leaves a pending
        # password no schedule would finish before the cluster falls due again: found at start
        # and every serve.pending_scan, it makes its cluster due now ("pending").
        scan = time.monotonic() >= self._next_pending_scan
        metadata = await runtime.store.list_vnc_metadata(in_flight=scan)
        if scan:
            self._next_pending_scan = time.monotonic() + runtime.settings.serve.pending_scan
        self.schedule.replace_all(
            Lease.from_metadata(cid, metadata.get(cid, {}), config_period=target.period)
            for cid, target in inventory.items()
        )
        self.inventory.targets = inventory
        self.metrics.load_password_ages({cid: metadata.get(cid, {}) for cid in inventory})
        self.inventory.loaded.set()
        log.info(
            "schedule_refreshed",
            clusters=len(inventory),
            next_due_s=self.schedule.seconds_until_next_due(),
        )
        self.on_refresh()

    async def run(self, runtime: Runtime) -> None:
        next_refresh = 0.0
        while True:
            if time.monotonic() >= next_refresh:
                try:
                    await self.refresh(runtime)
                    next_refresh = time.monotonic() + runtime.settings.serve.schedule_refresh
                except RotatorError as exc:
                    log.error("schedule_refresh_failed", code=exc.code, detail=exc.message)
                    next_refresh = time.monotonic() + min(
                        _REFRESH_RETRY, runtime.settings.serve.schedule_refresh
                    )
            self.fire_due()
            self.metrics.checkout_rotations_held.set(len(self.schedule.held_due()))
            until_due = self.schedule.seconds_until_next_due()
            self.metrics.seconds_until_next_due.set(-1 if until_due is None else until_due)
            wait = next_refresh - time.monotonic()
            if until_due is not None:
                wait = min(wait, until_due)
            self.changed.clear()
            await wait_event(self.changed, max(_MIN_WAIT, wait))

    def fire_due(self) -> None:
        due = self.schedule.pop_due()
        if not due:
            return
        trigger_id = new_trigger_id("lease")
        try:
            accepted = self.queue.put_many(
                Trigger(d.cluster_id, TriggerSource.LEASE, d.reason, d.not_before, trigger_id)
                for d in due
            )
        except QueueFullError as exc:
            log.warning("lease_triggers_deferred", clusters=len(due), detail=str(exc))
            accepted = False
        if not accepted:
            for d in due:
                self.schedule.release(d.cluster_id)
            return
        self.metrics.trigger(TriggerSource.LEASE.value, len(due))
        self.metrics.queue_depth.set(self.queue.depth)
        log.info("lease_triggers", clusters=len(due), trigger_id=trigger_id)

    async def reread(self, runtime: Runtime, cluster_id: str) -> None:
        """One cluster's due time from Vault (its VNC secret changed, e.g. another replica
        rotated it)."""
        if cluster_id not in self.schedule:
            return
        try:
            state = await runtime.store.read_vnc(cluster_id)
        except VaultError as exc:
            log.info("lease_reread_failed", code=exc.code)
            return
        target = self.inventory.targets.get(cluster_id)
        self.schedule.set_lease(
            Lease.from_metadata(
                cluster_id,
                state.custom_metadata,
                config_period=target.period if target else None,
            )
        )
        self.changed.set()

    def hold(self, held: Mapping[str, str]) -> None:
        """Checked-out clusters (from the lease intake): their period rotations wait."""
        before = {c for c in self.schedule.cluster_ids if self.schedule.held_reason(c)}
        self.schedule.hold(held)
        for cluster_id in sorted(held.keys() - before):
            if (why := self.schedule.held_reason(cluster_id)) is not None:
                log.info("period_rotation_held", cluster_id=cluster_id, reason=why)
        self.changed.set()  # a hold lifted: its cluster may be due now

    def release(self, cluster_ids: Collection[str]) -> None:
        for cluster_id in cluster_ids:
            self.schedule.release(cluster_id)

    async def after_batch(self, runtime: Runtime, batch: Batch, summary: RunSummary) -> None:
        """Tell the schedule how the period-fired clusters went, then re-read their due times."""
        for outcome in summary.outcomes:
            if outcome.cluster_id in self.schedule:
                self.schedule.finished(
                    outcome.cluster_id, rotated=satisfied(outcome.outcome, outcome.code)
                )
        reported = {o.cluster_id for o in summary.outcomes}
        for cluster_id in batch.clusters:
            if cluster_id in self.schedule and cluster_id not in reported:
                self.schedule.release(cluster_id)
        limit = asyncio.Semaphore(runtime.settings.vault.max_workers)

        async def reread(cluster_id: str) -> None:
            async with limit:
                try:
                    # One data read: the due time needs the committed record and its metadata.
                    state = await runtime.store.read_vnc(cluster_id, pending=False)
                except VaultError as exc:
                    log.info("lease_reread_failed", code=exc.code)
                    return
            target = self.inventory.targets.get(cluster_id)
            self.schedule.set_lease(
                Lease.from_metadata(
                    cluster_id,
                    state.status_view,  # the commit's times are in the data, not the metadata
                    config_period=target.period if target else None,
                )
            )

        await asyncio.gather(*(reread(c) for c in batch.clusters if c in self.schedule))
        self.changed.set()


class EventIntake:
    """Vault Enterprise events -> triggers for the named clusters."""

    def __init__(
        self,
        queue: TriggerQueue,
        metrics: ServeMetrics,
        inventory: Inventory,
        *,
        events_addr: str | None = None,
        on_change: ChangeCallback | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.inventory = inventory
        self.events_addr = events_addr
        self.on_change = on_change
        """Events that ask for no rotation: a lease document or a VNC secret changed."""
        self.now = now
        self.stream: EventStream | None = None
        self._excluded: frozenset[str] = frozenset()

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        settings = runtime.settings
        self._excluded = frozenset(settings.inventory.exclude)
        if not settings.serve.event_types:
            return
        vault = runtime.vault.settings
        context: ssl.SSLContext | bool = True
        if vault.skip_verify:
            context = False
        elif vault.ca_cert:
            context = ssl.create_default_context(cafile=vault.ca_cert)
        self.stream = EventStream(
            addr=self.events_addr or vault.addr,
            token=runtime.vault.token,
            event_types=with_lease_events(
                settings.serve.event_types, await self._vault_version(runtime)
            ),
            namespace=vault.namespace,
            ssl_context=context,
            mapper=EventMapper(
                kv_mount=vault.kv_mount,
                trigger_path=settings.serve.trigger_path,
                known=self.inventory.known,
                vnc_path=vault.vnc_path,
                leases_path=lease_paths(vault)[0],
            ),
            on_trigger=self.on_event,
            on_change=self.on_change,
            now=self.now,
        )
        try:
            await self.stream.run(stop)
        except RotatorError as exc:  # no token: the health check reports it too
            log.error("vault_events_stopped", code=exc.code, detail=exc.message)

    @staticmethod
    async def _vault_version(runtime: Runtime) -> str:
        """``sys/seal-status``'s version ("2.0.0+ent"); "" when it cannot be told."""
        try:
            body = await runtime.vault.request("GET", "sys/seal-status")
        except RotatorError as exc:
            log.info("vault_version_unknown", code=exc.code)
            return ""
        version = (body or {}).get("version")
        return version if isinstance(version, str) else ""

    def on_event(self, cluster_id: str, when: datetime, event: VaultEvent) -> None:
        if cluster_id in self._excluded:
            return
        # Never in the future: a Vault clock ahead of ours must not make a rotation count as old.
        not_before = min(when, self.now())
        trigger = Trigger(
            cluster_id, TriggerSource.EVENT, event.event_type, not_before, f"ev-{event.id}"
        )
        try:
            queued = self.queue.put(trigger)
        except QueueFullError as exc:
            log.warning("vault_event_dropped", event_id=event.id, detail=str(exc))
            return
        if queued:
            self.metrics.trigger(TriggerSource.EVENT.value)
            self.metrics.queue_depth.set(self.queue.depth)


class WebhookIntake:
    """``POST /v1/rotate`` and ``GET /v1/runs/<id>``: the :class:`WebhookBackend`."""

    def __init__(
        self,
        queue: TriggerQueue,
        metrics: ServeMetrics,
        inventory: Inventory,
        auth: WebhookAuth,
        *,
        settings: Callable[[], Settings],
        runtime: Callable[[], Runtime | None],
        draining: Callable[[], bool],
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.inventory = inventory
        self._auth = auth
        self._settings = settings
        self._runtime = runtime
        self._draining = draining
        self.now = now

    def reload(self, settings: Settings) -> None:
        # The replay guard carries over: a signature used before the reload stays used.
        self._auth = WebhookAuth.from_settings(settings.serve, replay=self._auth.replay)

    @property
    def auth(self) -> WebhookAuth:
        return self._auth

    @property
    def loaded(self) -> bool:
        return self.inventory.loaded.is_set()

    @property
    def body_timeout(self) -> float:
        return self._settings().serve.body_timeout

    def known_clusters(self) -> Collection[str]:
        return self.inventory.known()

    def submit(self, cluster_ids: Sequence[str], *, reason: str) -> str | None:
        if self._draining():
            return None
        trigger_id = new_trigger_id("wh")
        now = self.now()
        ok = self.queue.put_many(
            Trigger(c, TriggerSource.WEBHOOK, reason or "webhook", now, trigger_id)
            for c in cluster_ids
        )
        if not ok:
            return None
        self.metrics.trigger(TriggerSource.WEBHOOK.value, len(cluster_ids))
        self.metrics.queue_depth.set(self.queue.depth)
        return trigger_id

    async def run_status(self, run_or_trigger_id: str) -> tuple[int, dict[str, Any]] | None:
        status = self.queue.status(run_or_trigger_id)
        if status is None:
            summary = self.queue.summaries.get(run_or_trigger_id)
            if summary is not None:
                return 200, summary.to_dict()
            stored = await self._stored_report(run_or_trigger_id)
            return None if stored is None else (200, stored)
        head: dict[str, Any] = {"trigger_id": status.trigger_id, "run_ids": list(status.run_ids)}
        if status.state in (_State.QUEUED, _State.RUNNING):
            return 202, {**head, "status": status.state.value, "clusters": status.clusters}
        if status.state is _State.DROPPED:
            return 200, {**head, "status": "dropped", "detail": "the daemon stopped first"}
        runs: list[dict[str, Any]] = []
        for run_id in status.run_ids:
            summary = self.queue.summaries.get(run_id)
            report = summary.to_dict() if summary else await self._stored_report(run_id)
            runs.append(report or {"run_id": run_id, "status": "unknown"})
        if len(runs) == 1:
            return 200, {**runs[0], **head}
        return 200, {**head, "status": "done", "runs": runs}

    async def _stored_report(self, run_id: str) -> dict[str, Any] | None:
        runtime = self._runtime()
        if runtime is None:
            return None
        try:
            return await runtime.store.read_run_report(run_id)
        except VaultError as exc:
            log.info("run_report_unreadable", run_id=run_id, code=exc.code)
            return None
