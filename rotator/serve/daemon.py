"""``rotator serve``: trigger intakes -> one queue -> the batch engine.

    daemon = Daemon(settings, config_path=Path("rotator.toml"))
    code = await daemon.run(stop)          # until stop is set; 0 after a clean drain
    daemon.address                          # "http://127.0.0.1:8080" once daemon.listening is set
    daemon.request_reload()                 # what SIGHUP does

One intake per trigger source feeds the one deduplicating queue: rotation periods
(:class:`~rotator.serve.intake.ScheduleIntake`), Vault events (``EventIntake``), the webhook
(``WebhookIntake``) and check-out leases (:class:`~rotator.serve.leases.LeaseIntake`).
:class:`~rotator.serve.generation.Generations` owns the settings and runtime across SIGHUP.

Life cycle: the HTTP listener starts first (``/healthz`` answers even while Vault is down), then
a *generation* runs: a runtime built from the settings, each intake's loop, the queue drainer
and a Vault health loop. SIGHUP re-reads the config file; a valid one replaces the generation
once the running batch is done (queued triggers carry over), a bad one is logged and the old one
stays. On stop the daemon turns not-ready, refuses triggers, lets the running batch finish (the
engine starts no new cluster and parks the others safely) and returns 0.

Several replicas may run against one Vault: they compute the same schedule and the engine's
check-and-set plus claims make sure a trigger is satisfied by exactly one change.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Collection, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from rotator.config import Settings
from rotator.ehpc.credentials import CredentialProvider
from rotator.engine.report import RunSummary
from rotator.engine.runtime import Runtime
from rotator.errors import ConfigError, RotatorError
from rotator.leases.model import LeaseDoc
from rotator.leases.service import LeaseService
from rotator.leases.vault import LeaseStore
from rotator.secret import Secret
from rotator.serve.app import Listener, build_app, tls_context
from rotator.serve.events import LEASES, SCHEDULE, EventStream, VaultEvent
from rotator.serve.generation import Generations
from rotator.serve.intake import EventIntake, Inventory, ScheduleIntake, WebhookIntake
from rotator.serve.leases import LeaseIntake, policy_from
from rotator.serve.metrics import ServeMetrics
from rotator.serve.queue import Batch, TriggerQueue
from rotator.serve.schedule import Schedule, ScheduleSettings
from rotator.serve.webhook import WebhookAuth

__all__ = ["Daemon", "check_serve_settings", "run_daemon"]

log = structlog.get_logger("rotator.serve")

_HEALTH_INTERVAL = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_serve_settings(settings: Settings) -> None:
    """Every ``[serve]`` value the daemon would reject, as a ConfigError naming the key."""
    serve = settings.serve
    ScheduleSettings.from_settings(settings)
    WebhookAuth.from_settings(serve)
    tls_context(serve.tls_cert_file, serve.tls_key_file)
    for key in ("header_timeout", "body_timeout", "checkout_default_ttl", "checkout_max_ttl"):
        if getattr(serve, key) <= 0:
            raise ConfigError("must be longer than 0s", key=f"serve.{key}")
    if serve.checkout_default_ttl > serve.checkout_max_ttl:
        raise ConfigError(
            "must not be longer than serve.checkout_max_ttl", key="serve.checkout_default_ttl"
        )


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
        check_serve_settings(settings)
        self.generations = Generations(
            settings, config_path=config_path, validators=(check_serve_settings,)
        )
        self.credentials = credentials
        self.now = now
        self.metrics = ServeMetrics()
        self.queue = TriggerQueue(
            batch_delay=settings.serve.batch_delay, batch_max=settings.serve.batch_max
        )
        self.inventory = Inventory()
        self.schedule = Schedule(ScheduleSettings.from_settings(settings), now=now)
        self.leases = LeaseIntake(
            self.queue,
            self.metrics,
            refresh=lambda: self.settings.serve.schedule_refresh,
            now=now,
        )
        self.schedule_intake = ScheduleIntake(
            self.queue, self.metrics, self.schedule, self.inventory, on_refresh=self.leases.wake
        )
        # Open check-out leases hold their clusters' period rotations until the lease ends.
        self.leases.on_holds = self.schedule_intake.hold
        self.event_intake = EventIntake(
            self.queue,
            self.metrics,
            self.inventory,
            events_addr=events_addr,
            on_change=self._vault_changed,
            now=now,
        )
        self.webhook = WebhookIntake(
            self.queue,
            self.metrics,
            self.inventory,
            WebhookAuth.from_settings(settings.serve),
            settings=lambda: self.settings,
            runtime=lambda: self.generations.runtime,
            draining=lambda: self.draining,
            now=now,
        )
        self.address = ""
        self.listening = asyncio.Event()
        self.draining = False
        self._stop = asyncio.Event()
        self._rereads: set[asyncio.Task[None]] = set()
        """Due-time re-reads started by events (kept so they are not garbage collected)."""
        self._rereading: set[str] = set()

    # -- views ------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.generations.settings

    @property
    def config_path(self) -> Path | None:
        return self.generations.config_path

    @property
    def _runtime(self) -> Runtime | None:
        return self.generations.runtime

    @_runtime.setter
    def _runtime(self, runtime: Runtime | None) -> None:  # tests set a fake
        self.generations.runtime = runtime

    @property
    def schedule_loaded(self) -> asyncio.Event:
        return self.inventory.loaded

    @property
    def loaded(self) -> bool:
        return self.inventory.loaded.is_set()

    @property
    def events(self) -> EventStream | None:
        return self.event_intake.stream

    @property
    def auth(self) -> WebhookAuth:
        return self.webhook.auth

    def known_clusters(self) -> Collection[str]:
        return self.inventory.known()

    # -- lease backend (HTTP) ---------------------------------------------------------------

    @property
    def lease_service(self) -> LeaseService | None:
        return self.leases.service if self.loaded else None

    @property
    def body_timeout(self) -> float:
        return self.settings.serve.body_timeout

    def lease_ended(self, doc: LeaseDoc) -> None:
        self.leases.lease_ended(doc)

    def lease_changed(self) -> None:
        self.leases.wake()  # the reconcile re-arms the timer for the earliest expiry

    def _vault_changed(self, kind: str, cluster_id: str, _event: VaultEvent) -> None:
        """A Vault event about a lease document or a VNC secret (no rotation asked)."""
        if kind == LEASES:
            self.leases.wake()  # another replica's checkout or check-in: reconcile now
            return
        runtime = self._runtime
        if (
            kind != SCHEDULE
            or runtime is None
            or cluster_id not in self.schedule
            or cluster_id in self._rereading  # one re-read per cluster in flight
            or self.queue.holds(cluster_id)  # our own batch re-reads it when done
        ):
            return
        self._rereading.add(cluster_id)
        task = asyncio.create_task(
            self.schedule_intake.reread(runtime, cluster_id), name="serve:reread"
        )
        self._rereads.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._rereads.discard(finished)
            self._rereading.discard(cluster_id)

        task.add_done_callback(done)

    # -- life cycle -------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Re-read the config file (SIGHUP)."""
        self.generations.request_reload()

    async def run(self, stop: asyncio.Event) -> int:
        self._stop = stop
        serve = self.settings.serve
        listener = await Listener.start(
            build_app(self._readiness, self.metrics, self.webhook, leases=self),
            serve.listen,
            ssl_context=tls_context(serve.tls_cert_file, serve.tls_key_file),
            header_timeout=serve.header_timeout,
        )
        self.address = listener.address
        log.info("serve_listening", address=self.address)
        self.listening.set()
        try:
            while True:
                async with self.generations.open(
                    credentials=self.credentials, hooks=self.metrics
                ) as runtime:
                    reloading = await self._generation(runtime)
                if not reloading:
                    break
                fresh = self.generations.apply()
                if fresh is not None:
                    self._apply(fresh)
        finally:
            self.draining = True
            self.schedule_intake.release(self.queue.close())
            await listener.stop()
        log.info("serve_stopped")
        return 0

    def _lease_service(self, runtime: Runtime) -> LeaseService:
        async def read_password(cluster_id: str) -> Secret | None:
            return (await runtime.store.read_vnc(cluster_id)).password

        async def rotating(cluster_id: str) -> bool:
            # Queued or running here, or a password in flight from any replica.
            if self.queue.holds(cluster_id):
                return True
            # The pending record keeps the password it made current after a commit: only one
            # that differs from the committed password is in flight.
            return (await runtime.store.read_vnc(cluster_id)).in_flight is not None

        service = LeaseService(
            LeaseStore(runtime.vault),
            read_password,
            policy_from(runtime.settings.serve),
            now=self.now,
        )
        service.rotating = rotating
        return service

    async def _generation(self, runtime: Runtime) -> bool:
        """Run until stop (False) or a valid reload (True)."""
        self.queue.resume()
        self.leases.bind(self._lease_service(runtime))
        tasks = [
            self._spawn(self.queue.run(self._run_batch), "queue"),
            self._spawn(self.schedule_intake.run(runtime), "schedule"),
            self._spawn(self._health_loop(runtime), "health"),
            self._spawn(self.event_intake.run(runtime, self._stop), "events"),
            self._spawn(self.leases.run(), "leases"),
        ]
        try:
            reloading = await self.generations.wait_for_stop_or_reload(self._stop)
            if reloading:
                self.queue.pause()
            else:
                self.draining = True
                log.info("serve_draining", queued=self.queue.depth)
                self.schedule_intake.release(self.queue.close())
            # The running batch finishes (on stop the engine starts no new cluster).
            await self.queue.wait_idle()
            return reloading
        finally:
            self.leases.bind(None)
            tasks += self._rereads  # they use this generation's runtime, about to close
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=f"serve:{name}")

    def _apply(self, settings: Settings) -> None:
        self.schedule.settings = ScheduleSettings.from_settings(settings)
        self.webhook.reload(settings)
        self.queue.batch_delay = settings.serve.batch_delay
        self.queue.batch_max = max(1, settings.serve.batch_max)
        # Due times are recomputed with the new periods, window and jitter on the next refresh.
        log.info("config_reloaded", source=settings.source)

    # -- readiness and Vault health ---------------------------------------------------------

    async def _readiness(self) -> str | None:
        if self.draining:
            return "shutting down"
        runtime = self._runtime
        if runtime is None:
            return "starting"
        if not self.loaded:
            return "loading the inventory and schedule from Vault"
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

    # -- batches ----------------------------------------------------------------------------

    async def _run_batch(self, batch: Batch) -> RunSummary:
        runtime = self._runtime
        if runtime is None:  # pragma: no cover - the queue runs only inside a generation
            raise RuntimeError("no runtime")
        self.metrics.queue_depth.set(self.queue.depth)
        targets = [
            replace(self.inventory.target(cid), not_before=not_before)
            for cid, not_before in batch.clusters.items()
        ]
        try:
            summary = await runtime.rotate(
                targets, run_id=batch.run_id, stop=self._stop, trigger=batch.trigger
            )
        except BaseException:
            self.schedule_intake.release(list(batch.clusters))
            raise
        self.metrics.run_finished(summary.status.value)
        self.metrics.rate_limits(summary.rate_limits)
        await self.schedule_intake.after_batch(runtime, batch, summary)
        await self.leases.after_batch(batch, summary)
        self.metrics.queue_depth.set(self.queue.depth)
        return summary


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
