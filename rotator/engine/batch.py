"""Rotating a fleet: bounded concurrency, a failure threshold, account-wide stops, clean shutdown.

    summary = await run_batch(targets, context, run_id=run_id, concurrency=32,
                              max_failures=FailureThreshold.parse("5%", len(targets)), stop=stop)

At most ``concurrency`` rotations exist at any time (tasks are created as slots free up, so 10,000
clusters cost 10,000 small records, not 10,000 tasks). Once the failure threshold is reached, an
account-wide error comes back (NotAuthorized, InDebt, a bad AccessKey...) or ``stop`` is set (a
signal), no new cluster starts; the ones in flight finish and the rest are ``not_attempted``.

With ``skip_not_due`` (what ``rotator rotate`` does without ``--force``) each cluster's state is
read first and a cluster that is not due (see :mod:`rotator.engine.due`) is ``skipped`` with
code ``NotDue``. The Vault circuit breaker: after ``vault_failure_limit`` Vault failures in a row
(no cluster finished in between) no new cluster starts and rotations waiting to retry park at
once (a commit waiting on Vault parks as ``commit_failed``, its password safe as pending), so a
sealed Vault ends the run in seconds instead of ~10 s of retries per cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import structlog

from rotator.engine.due import decide
from rotator.engine.model import VncState
from rotator.engine.ports import Hooks, RotationStore
from rotator.engine.report import ClusterOutcome, Outcome, RunSummary
from rotator.engine.rotation import (
    RotationContext,
    Target,
    not_running_outcome,
    rotate_cluster,
    with_pending,
)
from rotator.engine.verification import Verification
from rotator.errors import ConfigError, RetryClass, RotatorError, VaultError

__all__ = ["FailureThreshold", "run_batch"]

log = structlog.get_logger("rotator.engine")

_THRESHOLD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")
_FAILED = (Outcome.FAILED, Outcome.COMMIT_FAILED)


@dataclass(frozen=True, slots=True)
class FailureThreshold:
    """Stop starting clusters once this many have failed (like AWS SSM's MaxErrors)."""

    limit: int | None

    @classmethod
    def parse(cls, text: str | None, total: int) -> FailureThreshold:
        """``"5"`` failures, or ``"10%"`` of the clusters in the run (at least one); empty: none."""
        if text is None or not text.strip():
            return cls(None)
        match = _THRESHOLD.match(text)
        if not match:
            raise ConfigError(
                f"{text!r} is not a failure threshold; write a count (5) or a percentage (10%)",
                key="rotation.max_failures",
            )
        number = float(match.group(1))
        if match.group(2):
            if number > 100:
                raise ConfigError("a percentage cannot exceed 100%", key="rotation.max_failures")
            return cls(max(1, math.ceil(total * number / 100)))
        if number < 1 or number != int(number):
            raise ConfigError(
                "must be a whole number of failures >= 1", key="rotation.max_failures"
            )
        return cls(int(number))

    def reached(self, failures: int) -> bool:
        return self.limit is not None and failures >= self.limit


def dedupe(targets: Iterable[Target]) -> list[Target]:
    """One rotation per cluster per run, whatever the inventory repeated."""
    seen: dict[str, Target] = {}
    for target in targets:
        seen.setdefault(target.cluster_id, target)
    return list(seen.values())


def interleave_regions(targets: Iterable[Target]) -> list[Target]:
    """Round-robin over regions, keeping each region's order.

    Rate limits are per region: taken region by region, every concurrency slot would wait on
    one region's throttler while the others sit idle.
    """
    by_region: dict[str, list[Target]] = {}
    for target in targets:
        by_region.setdefault(target.region, []).append(target)
    queues = list(by_region.values())
    mixed: list[Target] = []
    for position in range(max((len(q) for q in queues), default=0)):
        mixed.extend(q[position] for q in queues if position < len(q))
    return mixed


@dataclass(slots=True)
class _State:
    failures: int = 0
    stopped_reason: str | None = None
    vault_failures: int = 0
    """Vault calls that failed since a cluster last finished without a Vault error."""
    last_vault_code: str = ""


def _vault_trouble(outcome: ClusterOutcome) -> bool:
    """Did this cluster end because of Vault (or a stop the breaker caused)?"""
    code = outcome.code or ""
    return code.startswith("Vault") or code == "Interrupted"


class _FirstRead:
    """The rotation store, except that a cluster's first ``read_vnc`` returns the state the due
    check has just read: deciding costs no second Vault GET for a cluster that rotates. (Any
    staleness is what a check-and-set write is for, as with every read.)"""

    def __init__(self, store: RotationStore) -> None:
        self._store = store
        self._states: dict[str, VncState] = {}

    def keep(self, state: VncState) -> None:
        self._states[state.cluster_id] = state

    async def read_vnc(self, cluster_id: str, *, pending: bool = True) -> VncState:
        state = self._states.pop(cluster_id, None)
        # The due check read the committed record only: good for the engine's first read
        # (which wants just that), not for a caller that asks for the pending record too.
        if state is not None and (not pending or state.pending is not None):
            return state
        return await self._store.read_vnc(cluster_id, pending=pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)  # every other call goes to the real store


class _CountingHooks:
    """Passes every hook on, and counts Vault failures for the circuit breaker."""

    def __init__(self, inner: Hooks, state: _State, on_vault_error: Callable[[], None]) -> None:
        self._inner = inner
        self._state = state
        self._on_vault_error = on_vault_error

    def api_call(self, *, region: str, code: str | None, seconds: float) -> None:
        self._inner.api_call(region=region, code=code, seconds=seconds)

    def retry(self, *, cluster_id: str, code: str, delay: float) -> None:
        self._inner.retry(cluster_id=cluster_id, code=code, delay=delay)

    def outcome(self, outcome: ClusterOutcome) -> None:
        if not _vault_trouble(outcome):
            self._state.vault_failures = 0
        self._inner.outcome(outcome)

    def vault_error(self, *, code: str) -> None:
        self._state.vault_failures += 1
        self._state.last_vault_code = code
        self._inner.vault_error(code=code)
        self._on_vault_error()

    def __getattr__(self, name: str) -> Any:
        # Optional hooks the run's observer may have (the daemon's ``verification``) pass on.
        return getattr(self._inner, name)


async def run_batch(
    targets: Iterable[Target],
    ctx: RotationContext,
    *,
    run_id: str,
    concurrency: int,
    max_failures: FailureThreshold | None = None,
    stop: asyncio.Event | None = None,
    trigger: str = "manual",
    verification: Verification | None = None,
    skip_not_due: bool = False,
    vault_failure_limit: int | None = None,
) -> RunSummary:
    """Rotate every target and return the run's summary. Never raises for per-cluster errors."""
    started_at = datetime.now(UTC)
    throttled_before = ctx.limiter.throttle_counts()
    threshold = max_failures or FailureThreshold(None)
    stop = stop or asyncio.Event()
    # The rotations watch ``halt``: the caller's stop (a signal) or the Vault breaker. The
    # caller's own event is never set by us (the daemon's stop means "shut the daemon down").
    halt = asyncio.Event()
    ctx.stop = halt
    state = _State()
    outcomes: list[ClusterOutcome] = []
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    def vault_breaker() -> None:
        if (
            vault_failure_limit
            and state.vault_failures >= vault_failure_limit
            and state.stopped_reason is None
        ):
            state.stopped_reason = (
                f"Vault failed {state.vault_failures} times in a row "
                f"(last: {state.last_vault_code}); stopped starting clusters"
            )
            log.error(
                "vault_breaker_open",
                failures=state.vault_failures,
                code=state.last_vault_code,
                detail="no new cluster starts; rotations waiting on Vault park now; "
                "check that Vault is unsealed and reachable, then run again",
            )
            halt.set()

    inner_hooks = ctx.hooks
    ctx.hooks = _CountingHooks(inner_hooks, state, vault_breaker)
    real_store = ctx.store
    first_read = _FirstRead(real_store)
    if skip_not_due:
        ctx.store = cast(RotationStore, first_read)

    async def relay_stop() -> None:
        await stop.wait()
        halt.set()

    relay = asyncio.create_task(relay_stop(), name="batch:stop")

    def stopping() -> str | None:
        if state.stopped_reason is None:
            if stop.is_set():
                state.stopped_reason = "stop requested (signal or shutdown)"
            elif threshold.reached(state.failures):
                state.stopped_reason = f"failure threshold reached ({state.failures} failed)"
        return state.stopped_reason

    async def read_state(target: Target) -> VncState | ClusterOutcome:
        """The cluster's state for the due decision, with the rotation's Vault retries."""
        attempt = 0
        while True:
            try:
                # The committed record alone, as the engine's own first read: reused by it.
                state = await real_store.read_vnc(target.cluster_id, pending=False)
                if decide(target, state, now=datetime.now(UTC), default_period=ctx.period).rotate:
                    return state
                # About to skip: a crashed run's password in flight lives only in the pending
                # record, and makes the cluster due whatever its status says.
                return await with_pending(real_store, state)
            except VaultError as exc:
                ctx.hooks.vault_error(code=exc.code)
                attempt += 1
                delay = (
                    ctx.retry.delay_on(ctx.retry.vault, attempt=attempt)
                    if exc.retry_class is RetryClass.RETRYABLE
                    else None
                )
                if delay is None or halt.is_set():
                    return ClusterOutcome(
                        cluster_id=target.cluster_id,
                        region=target.region,
                        outcome=Outcome.FAILED,
                        code=exc.code,
                        message=exc.message,
                    )
                with contextlib.suppress(TimeoutError):  # the backoff, cut short by a halt
                    await asyncio.wait_for(halt.wait(), delay)

    async def rotate_if_due(target: Target) -> ClusterOutcome:
        if not skip_not_due:
            return await rotate_cluster(target, ctx)
        read = await read_state(target)
        if isinstance(read, ClusterOutcome):
            ctx.hooks.outcome(read)
            return read
        decision = decide(target, read, now=datetime.now(UTC), default_period=ctx.period)
        if decision.rotate:
            first_read.keep(read)
            return await rotate_cluster(target, ctx)
        skipped = ClusterOutcome(
            cluster_id=target.cluster_id,
            region=target.region,
            outcome=Outcome.SKIPPED,
            code=decision.code,
            message=decision.reason,
        )
        ctx.hooks.outcome(skipped)
        return skipped

    async def one(target: Target) -> None:
        try:
            outcome = await rotate_if_due(target)
            # --- VNC verification (issue 13): once, after the commit; see verification.py
            if verification is not None:
                outcome = await verification.check(outcome, target, ctx)
            # --- end VNC verification
        except Exception as exc:  # one cluster's bug must not sink the run
            log.exception("rotation_crashed", cluster_id=target.cluster_id)
            message = str(exc) if isinstance(exc, RotatorError) else type(exc).__name__
            outcome = ClusterOutcome(
                cluster_id=target.cluster_id,
                region=target.region,
                outcome=Outcome.FAILED,
                code=getattr(exc, "code", "InternalError"),
                message=message,
            )
            ctx.hooks.outcome(outcome)
        finally:
            slots.release()
        outcomes.append(outcome)
        if outcome.outcome in _FAILED:
            state.failures += 1
            log.warning(
                "cluster_failed",
                cluster_id=outcome.cluster_id,
                outcome=outcome.outcome.value,
                code=outcome.code,
                detail=outcome.message,
                request_id=outcome.request_id,
            )
        if outcome.account_wide and state.stopped_reason is None:
            state.stopped_reason = (
                f"{outcome.code} affects every cluster of the account; stopped at once"
            )
            log.error("account_error_stops_run", code=outcome.code)

    def skip(target: Target, outcome: Outcome, code: str, message: str) -> None:
        result = ClusterOutcome(
            cluster_id=target.cluster_id,
            region=target.region,
            outcome=outcome,
            code=code,
            message=message,
        )
        outcomes.append(result)
        ctx.hooks.outcome(result)

    try:
        for target in interleave_regions(dedupe(targets)):
            if reason := stopping():
                skip(target, Outcome.NOT_ATTEMPTED, "RunStopped", reason)
                continue
            if target.status is not None and target.status != "running":
                # Not rotated; but "pending" if an earlier run left a password on it (finding 11).
                result = await not_running_outcome(target, ctx)
                outcomes.append(result)
                ctx.hooks.outcome(result)
                continue
            await slots.acquire()
            if reason := stopping():  # it may have changed while we waited for a slot
                slots.release()
                skip(target, Outcome.NOT_ATTEMPTED, "RunStopped", reason)
                continue
            task = asyncio.create_task(one(target), name=f"rotate:{target.cluster_id}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
        await ctx.drain()
    finally:
        relay.cancel()
        ctx.hooks = inner_hooks
        ctx.store = real_store
    summary = RunSummary.build(
        run_id=run_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        outcomes=outcomes,
        stopped_reason=state.stopped_reason,
        api_calls=ctx.api_calls,
        trigger=trigger,
        rate_limits=ctx.limiter.summary(since=throttled_before),
    )
    # A run that did not succeed says so at warning/error, so --log-level warning still shows why.
    level = {"Success": "info", "PartFailure": "warning"}.get(summary.status.value, "error")
    getattr(log, level)("run_finished", **summary.log_fields())
    return summary
