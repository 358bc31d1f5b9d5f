"""``rotator serve``: lease schedule + Vault events + webhook -> one queue -> the batch engine.

    daemon = Daemon(settings, config_path=Path("rotator.toml"))
    code = await daemon.run(stop)          # until stop is set; 0 after a clean drain
    daemon.address                          # "http://127.0.0.1:8080" once daemon.listening is set
    daemon.request_reload()                 # what SIGHUP does

Life cycle: the HTTP listener starts first (``/healthz`` answers even while Vault is down), then
a *generation* runs: a runtime built from the settings, the schedule loop, the event stream,
the queue drainer and a Vault health loop. SIGHUP re-reads the config file; a valid one replaces
the generation once the running batch is done (queued triggers carry over), a bad one is logged
and the old one stays. On stop the daemon turns not-ready, refuses triggers, lets the running
batch finish (the engine starts no new cluster and parks the others safely) and returns 0.

Several replicas may run against one Vault: they compute the same schedule and the engine's
check-and-set plus claims make sure a trigger is satisfied by exactly one change.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from rotator.config import Settings, load_settings
from rotator.ehpc.credentials import CredentialProvider
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.report import Outcome, RunSummary
from rotator.engine.rotation import Target
from rotator.engine.runtime import Runtime, open_runtime, validate_settings
from rotator.errors import ConfigError, RotatorError, VaultError
from rotator.serve._aio import wait_event
from rotator.serve.app import Listener, build_app
from rotator.serve.events import EventMapper, EventStream, VaultEvent
from rotator.serve.metrics import ServeMetrics
from rotator.serve.queue import Batch, Trigger, TriggerQueue, TriggerSource, TriggerState
from rotator.serve.schedule import Lease, Schedule, ScheduleSettings
from rotator.serve.webhook import WebhookAuth, new_trigger_id

__all__ = ["Daemon", "run_daemon"]

log = structlog.get_logger("rotator.serve")

_HEALTH_INTERVAL = 30.0
_REFRESH_RETRY = 10.0
_MIN_WAIT = 0.05


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _satisfied(outcome: Outcome, code: str | None) -> bool:
    """The cluster's trigger is done: rotated here, or by another replica."""
    return outcome is Outcome.ROTATED or (outcome is Outcome.SKIPPED and code == "AlreadyRotated")


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        credentials: CredentialProvider | None = None,
        events_addr: str | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        """``credentials`` and ``events_addr`` (the event stream's base URL, default the Vault
        address) are seams for tests."""
        self.settings = settings
        self.config_path = config_path
        self.credentials = credentials
        self.events_addr = events_addr
        self.now = now
        self.metrics = ServeMetrics()
        self.schedule = Schedule(ScheduleSettings.from_settings(settings), now=now)
        self._auth = WebhookAuth.from_settings(settings.serve)
        self.queue = TriggerQueue(
            batch_delay=settings.serve.batch_delay, batch_max=settings.serve.batch_max
        )
        self.address = ""
        self.listening = asyncio.Event()
        self.draining = False
        self.events: EventStream | None = None
        self.schedule_loaded = asyncio.Event()
        self._targets: dict[str, Target] = {}
        self._runtime: Runtime | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._schedule_changed = asyncio.Event()
        self._pending_settings: Settings | None = None

    # -- life cycle -------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Re-read the config file (SIGHUP)."""
        self._reload.set()

    async def run(self, stop: asyncio.Event) -> int:
        self._stop = stop
        listener = await Listener.start(
            build_app(self._readiness, self.metrics, self), self.settings.serve.listen
        )
        self.address = listener.address
        log.info("serve_listening", address=self.address)
        self.listening.set()
        try:
            while True:
                async with open_runtime(
                    self.settings, hooks=self.metrics, credentials=self.credentials
                ) as runtime:
                    self._runtime = runtime
                    reloading = await self._generation(runtime)
                    self._runtime = None
                if not reloading or self._pending_settings is None:
                    break
                self._apply(self._pending_settings)
        finally:
            self.draining = True
            for cluster_id in self.queue.close():
                self.schedule.release(cluster_id)
            await listener.stop()
        log.info("serve_stopped")
        return 0

    async def _generation(self, runtime: Runtime) -> bool:
        """Run until stop (False) or a valid reload (True)."""
        self.queue.resume()
        tasks = [
            self._spawn(self.queue.run(self._run_batch), "queue"),
            self._spawn(self._schedule_loop(runtime), "schedule"),
            self._spawn(self._health_loop(runtime), "health"),
            self._spawn(self._events(runtime), "events"),
        ]
        try:
            reloading = await self._wait_for_stop_or_reload()
            if reloading:
                self.queue.pause()
            else:
                self.draining = True
                log.info("serve_draining", queued=self.queue.depth)
                for cluster_id in self.queue.close():
                    self.schedule.release(cluster_id)
            # The running batch finishes (on stop the engine starts no new cluster).
            await self.queue.wait_idle()
            return reloading
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=f"serve:{name}")

    async def _wait_for_stop_or_reload(self) -> bool:
        while True:
            stop_wait = asyncio.create_task(self._stop.wait())
            reload_wait = asyncio.create_task(self._reload.wait())
            try:
                await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                reload_wait.cancel()
            if self._stop.is_set():
                return False
            self._reload.clear()
            try:
                fresh = load_settings(self.config_path)
                validate_settings(fresh)
                ScheduleSettings.from_settings(fresh)
                WebhookAuth.from_settings(fresh.serve)
            except ConfigError as exc:
                log.error(
                    "config_reload_failed", error=exc.message, detail="keeping the running config"
                )
                continue
            if fresh.serve.listen != self.settings.serve.listen:
                log.warning("config_listen_changed", detail="a new listen address needs a restart")
            self._pending_settings = fresh
            log.info("config_reloading", source=fresh.source)
            return True

    def _apply(self, settings: Settings) -> None:
        self.settings = settings
        self._pending_settings = None
        self.schedule.settings = ScheduleSettings.from_settings(settings)
        self._auth = WebhookAuth.from_settings(settings.serve)
        self.queue.batch_delay = settings.serve.batch_delay
        self.queue.batch_max = max(1, settings.serve.batch_max)
        # Leases are recomputed with the new periods, window and jitter on the next refresh.
        log.info("config_reloaded", source=settings.source)

    # -- readiness and Vault health ---------------------------------------------------------

    async def _readiness(self) -> str | None:
        if self.draining:
            return "shutting down"
        runtime = self._runtime
        if runtime is None:
            return "starting"
        try:
            healthy = await runtime.store.health()
        except RotatorError as exc:
            return f"Vault check failed: {exc.code}"
        if not healthy:
            return "Vault is unreachable or sealed, or the token is not valid"
        return None

    async def _health_loop(self, runtime: Runtime) -> None:
        """Use the token regularly, so the client renews it before it expires."""
        while True:
            try:
                healthy = await runtime.store.health()
            except RotatorError as exc:
                log.warning("vault_health_failed", code=exc.code)
                healthy = False
            self.metrics.ready.set(1 if healthy and not self.draining else 0)
            await asyncio.sleep(_HEALTH_INTERVAL)

    # -- leases -----------------------------------------------------------------------------

    async def _inventory(self, runtime: Runtime) -> dict[str, Target]:
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
        targets = await resolve_targets(runtime, Selection(all=True))
        return {t.cluster_id: replace(t, root=None) for t in targets}

    async def refresh(self, runtime: Runtime) -> None:
        """Reload the inventory and every lease from Vault."""
        inventory = await self._inventory(runtime)
        metadata = await runtime.store.list_vnc_metadata()
        self.schedule.replace_all(
            Lease.from_metadata(cid, metadata.get(cid, {}), config_period=target.period)
            for cid, target in inventory.items()
        )
        self._targets = inventory
        self.metrics.load_password_ages({cid: metadata.get(cid, {}) for cid in inventory})
        self.schedule_loaded.set()
        log.info(
            "schedule_refreshed",
            clusters=len(inventory),
            next_due_s=self.schedule.seconds_until_next_due(),
        )

    async def _schedule_loop(self, runtime: Runtime) -> None:
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
            self._fire_due()
            until_due = self.schedule.seconds_until_next_due()
            self.metrics.seconds_until_next_due.set(-1 if until_due is None else until_due)
            wait = next_refresh - time.monotonic()
            if until_due is not None:
                wait = min(wait, until_due)
            self._schedule_changed.clear()
            await wait_event(self._schedule_changed, max(_MIN_WAIT, wait))

    def _fire_due(self) -> None:
        due = self.schedule.pop_due()
        if not due:
            return
        trigger_id = new_trigger_id("lease")
        accepted = self.queue.put_many(
            Trigger(d.cluster_id, TriggerSource.LEASE, d.reason, d.not_before, trigger_id)
            for d in due
        )
        if not accepted:
            for d in due:
                self.schedule.release(d.cluster_id)
            return
        self.metrics.trigger(TriggerSource.LEASE.value, len(due))
        self.metrics.queue_depth.set(self.queue.depth)
        log.info("lease_triggers", clusters=len(due), trigger_id=trigger_id)

    # -- events -----------------------------------------------------------------------------

    async def _events(self, runtime: Runtime) -> None:
        settings = runtime.settings
        if not settings.serve.event_types:
            return
        vault = runtime.vault.settings
        context: ssl.SSLContext | bool = True
        if vault.skip_verify:
            context = False
        elif vault.ca_cert:
            context = ssl.create_default_context(cafile=vault.ca_cert)
        self.events = EventStream(
            addr=self.events_addr or vault.addr,
            token=runtime.vault.token,
            event_types=settings.serve.event_types,
            namespace=vault.namespace,
            ssl_context=context,
            mapper=EventMapper(
                kv_mount=vault.kv_mount,
                trigger_path=settings.serve.trigger_path,
                known=self.known_clusters,
            ),
            on_trigger=self._on_event,
            now=self.now,
        )
        try:
            await self.events.run(self._stop)
        except RotatorError as exc:  # no token: the health check reports it too
            log.error("vault_events_stopped", code=exc.code, detail=exc.message)

    def _on_event(self, cluster_id: str, when: datetime, event: VaultEvent) -> None:
        if cluster_id in self.settings.inventory.exclude:
            return
        # Never in the future: a Vault clock ahead of ours must not make a rotation count as old.
        not_before = min(when, self.now())
        trigger = Trigger(
            cluster_id, TriggerSource.EVENT, event.event_type, not_before, f"ev-{event.id}"
        )
        if self.queue.put(trigger):
            self.metrics.trigger(TriggerSource.EVENT.value)
            self.metrics.queue_depth.set(self.queue.depth)

    # -- webhook backend --------------------------------------------------------------------

    @property
    def auth(self) -> WebhookAuth:
        return self._auth

    def known_clusters(self) -> Collection[str]:
        return self._targets.keys()

    def submit(self, cluster_ids: Sequence[str], *, reason: str) -> str | None:
        if self.draining:
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
        if status.state in (TriggerState.QUEUED, TriggerState.RUNNING):
            return 202, {**head, "status": status.state.value, "clusters": status.clusters}
        if status.state is TriggerState.DROPPED:
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
        runtime = self._runtime
        if runtime is None:
            return None
        try:
            return await runtime.store.read_run_report(run_id)
        except VaultError as exc:
            log.info("run_report_unreadable", run_id=run_id, code=exc.code)
            return None

    # -- batches ----------------------------------------------------------------------------

    def _target(self, cluster_id: str) -> Target:
        # Unknown to the inventory (an event for a new cluster): the engine finds the region in
        # the cluster's root credential.
        return self._targets.get(cluster_id) or Target(cluster_id=cluster_id, region="")

    async def _run_batch(self, batch: Batch) -> RunSummary:
        runtime = self._runtime
        if runtime is None:  # pragma: no cover - the queue runs only inside a generation
            raise RuntimeError("no runtime")
        self.metrics.queue_depth.set(self.queue.depth)
        targets = [
            replace(self._target(cid), not_before=not_before)
            for cid, not_before in batch.clusters.items()
        ]
        try:
            summary = await runtime.rotate(
                targets, run_id=batch.run_id, stop=self._stop, trigger=batch.trigger
            )
        except BaseException:
            for cluster_id in batch.clusters:
                self.schedule.release(cluster_id)
            raise
        self.metrics.run_finished(summary.status.value)
        await self._after_batch(runtime, batch, summary)
        return summary

    async def _after_batch(self, runtime: Runtime, batch: Batch, summary: RunSummary) -> None:
        """Tell the schedule how the lease-fired clusters went, then re-read their leases."""
        for outcome in summary.outcomes:
            if outcome.cluster_id in self.schedule:
                self.schedule.finished(
                    outcome.cluster_id, rotated=_satisfied(outcome.outcome, outcome.code)
                )
        for cluster_id in batch.clusters:
            if cluster_id in self.schedule and cluster_id not in {
                o.cluster_id for o in summary.outcomes
            }:
                self.schedule.release(cluster_id)
        limit = asyncio.Semaphore(runtime.settings.vault.max_workers)

        async def reread(cluster_id: str) -> None:
            async with limit:
                try:
                    state = await runtime.store.read_vnc(cluster_id)
                except VaultError as exc:
                    log.info("lease_reread_failed", code=exc.code)
                    return
            target = self._targets.get(cluster_id)
            self.schedule.set_lease(
                Lease.from_metadata(
                    cluster_id,
                    state.custom_metadata,
                    config_period=target.period if target else None,
                )
            )

        await asyncio.gather(*(reread(c) for c in batch.clusters if c in self.schedule))
        self.metrics.queue_depth.set(self.queue.depth)
        self._schedule_changed.set()


async def run_daemon(
    settings: Settings, *, stop: asyncio.Event, config_path: Path | None = None
) -> int:
    """``rotator serve``: run until ``stop`` is set (SIGINT/SIGTERM); SIGHUP reloads."""
    daemon = Daemon(settings, config_path=config_path)
    loop = asyncio.get_running_loop()
    hup = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
        hup = True
    try:
        return await daemon.run(stop)
    finally:
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
