"""Rotating one cluster: stage, apply, commit, as a state machine that survives a crash anywhere.

    outcome = await rotate_cluster(Target("ehpc-hz-123", "cn-hangzhou"), context)

The invariant: at every instant Vault holds the cluster's real VNC password, either as the
committed ``password`` or as the pending record's password.

1. Read the root credential and the committed record (version v, and the pending version p it
   came from). Vault unreachable: stop here, the API is never called.
2. Stage and claim: generate a password and write the pending record with check-and-set on p,
   with a short claim (owner + expiry). Losing that CAS means somebody staged since the last
   commit: read the pending record; a password there may already be live, so it is re-applied
   (after waiting out a rival's live claim), never replaced.
3. Apply ``ModifyVisualServicePasswd`` with the pending password, renewing the claim before every
   retry and during long waits.
4. Commit: one new version of the committed record (CAS on v), shielded from cancellation.

A terminal answer clears the pending password only when no attempt can have applied it, and
only if this run staged it and nobody wrote the record since (CAS on the version we wrote); an
ambiguous one (timeout, dropped connection, SIGTERM mid-call) keeps it, so the next try
re-applies the same value.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

import structlog

from rotator.ehpc.codes import info_for
from rotator.ehpc.models import ModifyResult
from rotator.engine.model import STATUS_KEYS, RootCredential, VncState
from rotator.engine.passwd_guard import PasswdRejections
from rotator.engine.ports import ApiClient, Hooks, NoHooks, RotationStore
from rotator.engine.ratelimit import RegionLimiter
from rotator.engine.report import ClusterOutcome, Outcome, OutcomeCode
from rotator.engine.retry import Backoff, RetryPolicy
from rotator.errors import (
    ApiError,
    ErrorScope,
    RetryClass,
    RotatorError,
    VaultConflictError,
    VaultError,
)
from rotator.passwords import (
    InvalidPasswordError,
    PasswordSource,
    is_valid_vnc_password,
    rule_of,
)
from rotator.secret import Secret

__all__ = ["RotationContext", "Target", "not_running_outcome", "rotate_cluster", "rotation_period"]

log = structlog.get_logger("rotator.engine")

T = TypeVar("T")

SleepFn = Callable[[float], Awaitable[None]]

# Lost check-and-set races in a row before we leave the cluster to whoever keeps winning.
_MAX_STAGE_CONFLICTS = 5
# Commits redone on a committed record somebody changed without staging (a person's edit).
_MAX_COMMIT_REBASES = 3

# The client's rule for a region id (it refuses anything else when building the URL); checked
# before staging so a bad region in a root secret fails the cluster cleanly (issue 9, finding 8).
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class Target:
    cluster_id: str
    region: str
    period: float | None = None
    """Rotation period in seconds for this cluster (None: the context default)."""
    status: str | None = None
    """Cluster status when discovered with ListClusters (None: unknown)."""
    root: RootCredential | None = field(default=None, repr=False, compare=False)
    """The root credential when the inventory already read it (saves a Vault read)."""
    not_before: datetime | None = None
    """When this cluster's trigger fired: a rotation committed at or after it (by any replica)
    satisfies the trigger. None: the run's start."""
    held: str = ""
    """Why a due rotation waits (an open check-out lease: its holders keep the password until
    it ends); empty: not held. ``--force``, a trigger (``not_before``) and a pending password
    rotate anyway."""


@dataclass(slots=True)
class RotationContext:
    """Everything a rotation needs; shared by all rotations of one run."""

    api: ApiClient
    store: RotationStore
    passwords: PasswordSource
    limiter: RegionLimiter
    retry: RetryPolicy
    owner: str
    """Who claims pending passwords (run id, or replica id in the daemon)."""
    not_before: datetime
    """A cluster rotated at or after this instant counts as done for this trigger."""
    period: float = 30 * 86400.0
    cluster_deadline: float = 900.0
    claim_ttl: float = 90.0
    """How long a claim protects one apply; longer than the API request timeout."""
    stop_grace: float = 10.0
    """After a stop (SIGTERM), how long an API call already on the wire may still finish
    before it is cancelled and its password kept as pending (it may have applied)."""
    hooks: Hooks = field(default_factory=NoHooks)
    stop: asyncio.Event | None = None
    """Set on SIGTERM/SIGINT: rotations waiting to retry park at once instead."""
    sleep: SleepFn = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    api_calls: int = 0
    background: set[asyncio.Task[object]] = field(default_factory=set)
    """Shielded commits still running after their rotation was cancelled."""
    passwd_rejections: PasswdRejections = field(default_factory=PasswdRejections)
    """Clusters whose rule-compliant password the API refused (two: stop the run)."""

    async def drain(self) -> None:
        """Wait for shielded commits that outlived a cancelled rotation."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)


def rotation_period(target: Target, override: float | None, default: float) -> float:
    """Seconds until the next rotation: a person's ``rotation_period`` (parsed by the store),
    the inventory's period for the cluster, the default. One rule for the engine and ``decide``."""
    return override or target.period or default


class _Park(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """Stop working on this cluster with the given outcome."""

    def __init__(
        self,
        outcome: Outcome,
        error: RotatorError | None,
        code: str | None = None,
        *,
        message: str | None = None,
    ):
        super().__init__(code)
        self.outcome = outcome
        self.error = error
        self.code = code or (error.code if error else None)
        self.message = message


@dataclass(slots=True)
class _Run:
    """Mutable bookkeeping of one cluster's rotation."""

    target: Target
    ctx: RotationContext
    started: float
    attempts: int = 0
    request_id: str | None = None
    maybe_applied: bool = False
    """True once the pending password may be live on the cluster (an earlier run or a rival left
    it, or an attempt of ours ended ambiguously): from then on it must never be discarded."""
    failures: dict[int, int] = field(default_factory=dict)
    """Failed tries per retry schedule."""
    stage_conflicts: int = 0
    period_override: float | None = None
    state: VncState | None = None
    """The last state we read or wrote."""
    staged_version: int | None = None
    """Version of the pending record this run wrote last; None when we hold no claim. Only a
    check-and-set on it may clear or release the pending password (issue 9, finding 1)."""
    fresh: Secret | None = field(default=None, repr=False)
    fresh_at: datetime | None = None

    @property
    def period(self) -> float:
        return rotation_period(self.target, self.period_override, self.ctx.period)

    @property
    def not_before(self) -> datetime:
        return self.target.not_before or self.ctx.not_before

    @property
    def deadline(self) -> float:
        return self.started + self.ctx.cluster_deadline

    def holds_claim(self) -> bool:
        state = self.state
        pending = state.pending if state else None
        return (
            pending is not None
            and self.staged_version is not None
            and pending.version == self.staged_version
            and pending.claim_owner == self.ctx.owner
        )

    def outcome(
        self,
        outcome: Outcome,
        *,
        code: str | None = None,
        message: str | None = None,
        account_wide: bool = False,
    ) -> ClusterOutcome:
        return ClusterOutcome(
            cluster_id=self.target.cluster_id,
            region=self.target.region,
            outcome=outcome,
            code=code,
            message=message,
            attempts=self.attempts,
            request_id=self.request_id,
            duration=self.ctx.clock() - self.started,
            account_wide=account_wide,
        )

    async def backoff(self, error: RotatorError, schedule: Backoff | None = None) -> None:
        """Sleep before the next try, or park the cluster when the schedule or deadline is spent."""
        retry = self.ctx.retry
        key = id(schedule or retry.schedule_for(error))
        self.failures[key] = self.failures.get(key, 0) + 1
        attempt = self.failures[key]
        # An explicit schedule overrides the error's own class (a rejected pending password is
        # terminal for that value, not for the rotation).
        delay = (
            retry.delay_on(schedule, attempt=attempt)
            if schedule is not None
            else retry.delay_after(error, attempt=attempt)
        )
        if delay is None or self.ctx.clock() + delay > self.deadline:
            raise _Park(Outcome.FAILED, error)
        self.ctx.hooks.retry(cluster_id=self.target.cluster_id, code=error.code, delay=delay)
        log.info(
            "retrying",
            code=error.code,
            delay_s=round(delay, 3),
            attempt=attempt,
            api_calls=self.attempts,
        )
        if schedule is self.ctx.retry.vault:
            await self.pause(delay, error)  # renewing needs the Vault that just failed
        else:
            await self.wait_holding_claim(delay, error)

    async def wait_holding_claim(self, seconds: float, error: RotatorError | None) -> None:
        """Sleep without letting our claim lapse: a throttled retry-after or a ConflictOpt wait
        can be longer than the claim, and a lapsed claim lets a rival take the password over."""
        end = self.ctx.clock() + seconds
        while (left := end - self.ctx.clock()) > 0:
            state = self.state
            if not self.holds_claim() or state is None or state.pending is None:
                await self.pause(left, error)
                return
            until = state.pending.claim_until
            claim_left = (until - self.ctx.now()).total_seconds() if until else 0.0
            renew_in = claim_left - self.ctx.claim_ttl / 2
            if renew_in >= left:
                await self.pause(left, error)
                return
            if renew_in > 0:
                await self.pause(renew_in, error)
                continue
            await _renew(self)

    async def pause(self, seconds: float, error: RotatorError | None) -> None:
        """Sleep, but give up at once when the run is asked to stop (SIGTERM): a ConflictOpt
        schedule can wait minutes, longer than any shutdown grace period."""
        stop = self.ctx.stop
        if stop is None:
            await self.ctx.sleep(seconds)
            return
        if not stop.is_set():
            sleeper = asyncio.ensure_future(self.ctx.sleep(seconds))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, stopper):
                    task.cancel()
        if stop.is_set():
            raise _Park(Outcome.FAILED, error, code=OutcomeCode.INTERRUPTED)

    async def vault(self, call: Callable[[], Awaitable[T]]) -> T:
        """A Vault call with retries on transient errors; a terminal one parks the cluster."""
        while True:
            try:
                return await call()
            except VaultConflictError:
                raise
            except VaultError as exc:
                self.ctx.hooks.vault_error(code=exc.code)
                if exc.retry_class is not RetryClass.RETRYABLE:
                    raise _Park(Outcome.FAILED, exc) from None
                await self.backoff(exc, self.ctx.retry.vault)


async def rotate_cluster(target: Target, ctx: RotationContext) -> ClusterOutcome:
    """Rotate one cluster's VNC password. Never raises for a per-cluster problem."""
    run = _Run(target=target, ctx=ctx, started=ctx.clock())
    with structlog.contextvars.bound_contextvars(cluster_id=target.cluster_id):
        try:
            outcome = await _rotate(run)
        except _Park as park:
            outcome = await _park(run, park)
        except VaultConflictError as exc:
            outcome = run.outcome(Outcome.SKIPPED, code=exc.code, message=exc.message)
        ctx.hooks.outcome(outcome)
        log.info(
            "cluster_done",
            outcome=outcome.outcome.value,
            code=outcome.code,
            attempts=outcome.attempts,
            request_id=outcome.request_id,
        )
        return outcome


async def not_running_outcome(target: Target, ctx: RotationContext) -> ClusterOutcome:
    """The outcome of a cluster the inventory lists as not running (it is not rotated): pending
    when an earlier run left a password that may be live on it (finding 11), else skipped."""
    run = _Run(target=target, ctx=ctx, started=ctx.clock())
    message = f"status is {target.status}"
    with structlog.contextvars.bound_contextvars(cluster_id=target.cluster_id):
        state = await _best_effort(run, _committed_and_pending(ctx.store, target.cluster_id))
        if state is not None and state.in_flight is not None:
            outcome = run.outcome(
                Outcome.PENDING,
                code=OutcomeCode.CLUSTER_NOT_RUNNING,
                message=f"{message}; a password that may be live is pending and kept",
            )
            await _best_effort_status(run, "pending", OutcomeCode.CLUSTER_NOT_RUNNING)
        else:
            outcome = run.outcome(
                Outcome.SKIPPED, code=OutcomeCode.CLUSTER_NOT_RUNNING, message=message
            )
    return outcome


async def with_pending(store: RotationStore, state: VncState) -> VncState:
    """``state`` (read with ``pending=False``) with the pending record read too."""
    return state.with_pending(await store.read_pending(state.cluster_id))


async def _committed_and_pending(store: RotationStore, cluster_id: str) -> VncState:
    # Two reads: a cluster that is not rotated needs no status metadata.
    return await with_pending(store, await store.read_vnc(cluster_id, pending=False))


async def _rotate(run: _Run) -> ClusterOutcome:
    ctx = run.ctx
    root = run.target.root
    if root is None:
        root = await run.vault(partial(ctx.store.read_root, run.target.cluster_id))
    if not run.target.region:
        if not root.region:
            raise _Park(Outcome.FAILED, None, code=OutcomeCode.REGION_UNKNOWN)
        run.target = replace(run.target, region=root.region)
    target = run.target
    if not _REGION.match(target.region):
        # Checked before anything is staged: nothing to clean up, nothing left claimed.
        raise _Park(
            Outcome.FAILED,
            None,
            code=OutcomeCode.INVALID_REGION,
            message=f"{target.region!r} is not a region id (like cn-hangzhou); fix the region "
            "in the cluster's root credential",
        )
    # The committed record only: the stage's check-and-set tells whether anything is in flight.
    state = await run.vault(lambda: ctx.store.read_vnc(target.cluster_id, pending=False))
    run.state = state
    run.period_override = state.period_override
    if _already_rotated(state, run.not_before):
        if state.custom_metadata.get("status") == "pending":
            # A run parked a password that may be live: the trigger is not done until that is
            # committed. One more read, only here, tells whether it still is in flight.
            state = run.state = await run.vault(lambda: with_pending(ctx.store, state))
        if state.in_flight is None:
            await _repair_status(run, state)
            return run.outcome(Outcome.SKIPPED, code=OutcomeCode.ALREADY_ROTATED)
    # At most two rounds: finishing a password an earlier run staged before this trigger (it may
    # be live, so it is applied and committed first), then a fresh one for the trigger.
    for _ in range(2):
        outcome, committed = await _apply_and_commit(run, state, root)
        if committed is None or _already_rotated(committed, run.not_before):
            return outcome
        log.info("committed_an_older_password", detail="rotating again for this trigger")
        state, run.maybe_applied, run.fresh = committed, False, None
    return outcome


async def _apply_and_commit(
    run: _Run, state: VncState, root: RootCredential
) -> tuple[ClusterOutcome, VncState | None]:
    ctx, target = run.ctx, run.target
    while True:
        state = await _claim(run, state)
        if state.in_flight is None or not run.holds_claim():
            # A rival committed a password generated after our trigger while we waited.
            return run.outcome(Outcome.SKIPPED, code=OutcomeCode.ALREADY_ROTATED), None
        await ctx.limiter.acquire(target.region)
        if _claim_running_out(state, ctx):
            # The rate limiter kept us waiting: renew the claim so no rival starts an
            # apply of its own while ours is on the wire.
            state = await _claim(run, state)
            if not run.holds_claim():
                continue
        pending = state.in_flight
        if pending is None or pending.password is None:  # unreachable: _claim returned ours
            continue
        run.attempts += 1
        ctx.api_calls += 1
        sent_at = ctx.clock()
        try:
            result = await _call_api(run, root, pending.password)
        except ApiError as exc:
            ctx.hooks.api_call(region=target.region, code=exc.code, seconds=ctx.clock() - sent_at)
            ctx.limiter.observe(target.region, exc, sent_at=sent_at)  # Throttling: slow down
            run.request_id = exc.request_id or run.request_id
            state = await _after_api_error(run, state, exc)
            continue
        ctx.hooks.api_call(region=target.region, code=None, seconds=ctx.clock() - sent_at)
        run.request_id = result.request_id
        return await _commit(run, state, result.request_id)


async def _call_api(run: _Run, root: RootCredential, password: Secret) -> ModifyResult:
    """The API call; on a stop (SIGTERM) it gets ``stop_grace`` seconds to finish, then it is
    cancelled and its password counts as possibly applied (issue 9, finding 9)."""
    ctx, target = run.ctx, run.target
    if ctx.stop is not None and ctx.stop.is_set():
        # Stopping: send nothing new (the password staged for it was never sent).
        raise _Park(Outcome.FAILED, None, code=OutcomeCode.INTERRUPTED)
    call = asyncio.ensure_future(
        ctx.api.modify_visual_service_passwd(
            region=target.region,
            cluster_id=target.cluster_id,
            runas_user=root.user,
            runas_password=root.password,
            new_password=password,
        )
    )
    try:
        stop = ctx.stop
        if stop is not None:
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({call, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not call.done():
                log.warning("stop_during_api_call", grace_s=ctx.stop_grace)
                grace = asyncio.ensure_future(ctx.sleep(ctx.stop_grace))
                try:
                    await asyncio.wait({call, grace}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    grace.cancel()
            if not call.done():
                run.maybe_applied = True
                raise _Park(
                    Outcome.FAILED,
                    None,
                    code=OutcomeCode.INTERRUPTED,
                    message="stopped during the API call; the password is kept as pending "
                    "and the next run re-applies it",
                )
        return await call
    finally:
        call.cancel()


async def _repair_status(run: _Run, state: VncState) -> None:
    """A failure's status left in the metadata after a commit (the clearing write is best
    effort, or a rival failed after we committed) would keep the cluster looking unfinished and
    due: clear it now that the data shows the work done."""
    if state.rotated_at is not None:
        await _write_rotated_status(run, state)


def _claim_running_out(state: VncState, ctx: RotationContext) -> bool:
    """Less than half the claim is left: not enough to cover one API call for sure."""
    until = state.pending.claim_until if state.pending else None
    if until is None:
        return True
    left = (until - ctx.now()).total_seconds()
    return left < ctx.claim_ttl / 2


def _already_rotated(state: VncState, not_before: datetime) -> bool:
    """A password generated at or after the trigger is committed. Judged by when it was staged,
    not committed: one staged earlier may have been seen before the trigger (finding 4)."""
    return state.staged_at is not None and state.staged_at >= not_before


async def _claim(run: _Run, state: VncState) -> VncState:
    """Stage (or re-stage) the pending password under our claim, with check-and-set.

    Returns with our claim held, or with a state where a rival committed for our trigger.
    """
    ctx, target = run.ctx, run.target
    while True:
        now = ctx.now()
        pending = state.in_flight
        if (
            pending is not None
            and pending.claim_owner not in (None, ctx.owner)
            and pending.claim_until is not None
            and pending.claim_until > now
        ):
            # A rival holds a live claim: wait for it to commit, retry, or expire.
            wait = (pending.claim_until - now).total_seconds() + 0.05
            if ctx.clock() + wait > run.deadline:
                raise _Park(Outcome.SKIPPED, None, code=OutcomeCode.CLAIMED_ELSEWHERE)
            log.info("claimed_elsewhere", owner=pending.claim_owner, wait_s=round(wait, 3))
            await run.pause(wait, None)
            state = run.state = await run.vault(lambda: ctx.store.read_vnc(target.cluster_id))
            if _already_rotated(state, run.not_before):
                return state
            continue
        if pending is not None and pending.password is not None:
            password, staged_at = pending.password, pending.staged_at or now
            if pending.version != run.staged_version:
                run.maybe_applied = True  # left by an earlier run or a rival: may be live
        else:
            if run.fresh is None:
                run.fresh, run.fresh_at = await _fresh_password(run), ctx.now()
            password, staged_at = run.fresh, run.fresh_at or now
        try:
            state = await run.vault(
                partial(
                    ctx.store.stage,
                    state,
                    password,
                    staged_at=staged_at,
                    region=target.region,
                    owner=ctx.owner,
                    claim_until=ctx.now() + timedelta(seconds=ctx.claim_ttl),
                )
            )
        except VaultConflictError as exc:
            # Somebody wrote since we read: look again rather than overwrite their work.
            log.info("stage_conflict")
            run.staged_version = None
            run.stage_conflicts += 1
            if run.stage_conflicts > _MAX_STAGE_CONFLICTS:
                raise _Park(Outcome.SKIPPED, exc, code=OutcomeCode.STAGE_CONFLICTS) from None
            state = run.state = await run.vault(lambda: ctx.store.read_vnc(target.cluster_id))
            if _already_rotated(state, run.not_before):
                return state
            continue
        run.state = state
        run.staged_version = state.pending.version if state.pending else None
        return state


async def _renew(run: _Run) -> None:
    """Extend our claim on the pending password during a long wait (CAS on our version)."""
    state = run.state
    pending = state.pending if state else None
    if state is None or pending is None or pending.password is None:
        return
    try:
        state = await run.vault(
            partial(
                run.ctx.store.stage,
                state,
                pending.password,
                staged_at=pending.staged_at or run.ctx.now(),
                region=run.target.region,
                owner=run.ctx.owner,
                claim_until=run.ctx.now() + timedelta(seconds=run.ctx.claim_ttl),
            )
        )
    except VaultConflictError:
        run.staged_version = None  # somebody took it over: the next _claim looks again
        return
    run.state = state
    run.staged_version = state.pending.version if state.pending else None


async def _fresh_password(run: _Run) -> Secret:
    try:
        password = await run.vault(run.ctx.passwords.generate)
    except InvalidPasswordError:
        password = None
    if password is None or not is_valid_vnc_password(password.reveal(), rule_of(run.ctx.passwords)):
        # The startup check makes this unreachable unless the policy changed mid-run.
        raise _Park(Outcome.FAILED, None, code=OutcomeCode.INVALID_GENERATED_PASSWORD)
    return password


def _may_have_applied(error: ApiError) -> bool:
    """Could the cluster have taken the password although the answer was an error? The code
    table says so per code (an answer from behind the gateway, or an unknown 5xx)."""
    return info_for(error.code, error.http_status).may_have_applied


def _rejects_passwd(error: ApiError) -> bool:
    return error.code == "InvalidParams" and "Passwd" in error.message


async def _after_api_error(run: _Run, state: VncState, error: ApiError) -> VncState:
    """Decide what an API error means for the pending password; returns the state to go on."""
    ctx = run.ctx
    log.info("api_error", code=error.code, retry_class=error.retry_class.value)
    if error.retry_class is RetryClass.AMBIGUOUS:
        run.maybe_applied = True
        await run.backoff(error)
        return run.state or state
    if _rejects_passwd(error) and run.holds_claim() and run.maybe_applied:
        # An earlier attempt may have applied this value before the API's rule changed: it may
        # be the cluster's password, so it stays pending (the invariant) and a person decides.
        raise _Park(
            Outcome.FAILED,
            error,
            code=OutcomeCode.PENDING_PASSWORD_REFUSED,
            message="the API now refuses the pending password, which an earlier attempt may "
            "have applied; it is kept in the pending record: check whether the cluster's VNC "
            "accepts it, then commit or delete it by hand",
        )
    if _rejects_passwd(error) and run.holds_claim():
        # The API will never take this value (the rule or policy changed) and no attempt can
        # have applied it: drop it and generate another. Retrying it forever is the bug Vault's
        # static roles once had.
        if (stop := ctx.passwd_rejections.record(run.target.cluster_id, error)) is not None:
            raise _Park(Outcome.FAILED, stop)  # on a second cluster: our rule is out of date
        try:
            state = run.state = await run.vault(lambda: ctx.store.clear_pending(state))
        except VaultConflictError:
            state = run.state = await run.vault(lambda: ctx.store.read_vnc(run.target.cluster_id))
        run.staged_version, run.maybe_applied, run.fresh = None, False, None
        await run.backoff(error, ctx.retry.general)
        return state
    if _may_have_applied(error):
        run.maybe_applied = True
    if error.retry_class is RetryClass.RETRYABLE:
        await run.backoff(error)
        return run.state or state
    if error.code == "InvalidClusterStatus":
        raise _Park(Outcome.SKIPPED, error)
    raise _Park(Outcome.FAILED, error)


async def _commit(
    run: _Run, state: VncState, request_id: str
) -> tuple[ClusterOutcome, VncState | None]:
    """Record the new password as current. Shielded: a cancelled run still finishes this write."""
    ctx, target = run.ctx, run.target
    rotated_at = ctx.now()
    staged = state.in_flight
    password = staged.password if staged else None

    async def write() -> tuple[ClusterOutcome, VncState | None]:
        base = state
        error: RotatorError | None = None
        for rebase in range(_MAX_COMMIT_REBASES + 1):
            try:
                committed = await run.vault(
                    partial(
                        ctx.store.commit,
                        base,
                        request_id=request_id,
                        rotated_at=rotated_at,
                        region=target.region,
                        next_rotation_at=rotated_at + timedelta(seconds=run.period),
                    )
                )
            except VaultConflictError as exc:
                error = exc
                fresh = await _best_effort(run, ctx.store.read_vnc(target.cluster_id))
                if fresh is not None and fresh.password is not None and fresh.password == password:
                    # Our commit landed with its answer lost, or a rival that took our password
                    # over committed it.
                    return await _record_rotated(run, fresh), fresh
                if fresh is None or rebase == _MAX_COMMIT_REBASES or not _still_ours(fresh, base):
                    break
                # The committed record changed but nobody staged since (a person added a key,
                # a rotator migrated an old-layout secret): commit on top of that version.
                log.info("commit_rebased", version=fresh.version)
                base = fresh
                continue
            except _Park as exc:
                error = exc.error
                landed = await _commit_landed(run, password)
                if landed is not None:
                    return await _record_rotated(run, landed), landed
                break
            run.state = committed
            return await _record_rotated(run, committed), committed
        code = error.code if error else OutcomeCode.COMMIT_FAILED
        log.error(
            "commit_failed",
            code=code,
            detail="the new password is safe in Vault's pending record; the next run commits it",
        )
        await _best_effort_status(run, "pending", code)
        return (
            run.outcome(
                Outcome.COMMIT_FAILED, code=code, message="password changed; still pending in Vault"
            ),
            None,
        )

    task: asyncio.Task[tuple[ClusterOutcome, VncState | None]] = asyncio.create_task(write())
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)
    return await asyncio.shield(task)


def _still_ours(fresh: VncState | None, base: VncState) -> bool:
    """Is the pending record exactly as we committed from (same version and password), and the
    committed password unchanged? Then nobody staged since, so no other password can have
    reached the cluster through rotator. A password a person wrote by hand is not overwritten:
    they may have set it on the cluster too."""
    ours, now = base.pending, fresh.pending if fresh else None
    return (
        fresh is not None
        and fresh.password == base.password
        and ours is not None
        and now is not None
        and now.version == ours.version
        and now.password is not None
        and now.password == ours.password
    )


async def _commit_landed(run: _Run, password: Secret | None) -> VncState | None:
    """A commit whose answer was lost may have been written (or a rival that took our password
    over committed it): a retry then loses its CAS. Look before calling it a failure."""
    current = await _best_effort(run, run.ctx.store.read_vnc(run.target.cluster_id, pending=False))
    if current is not None and current.password is not None and current.password == password:
        return current
    return None


async def _record_rotated(run: _Run, committed: VncState) -> ClusterOutcome:
    await _write_rotated_status(run, committed)
    return run.outcome(Outcome.ROTATED)


def _status_is_stale(custom: Mapping[str, str]) -> bool:
    """After a commit, does the custom metadata still say something the data contradicts? Only
    a failure's status and error keys, or times an older rotator kept there, need a write."""
    keys = set(custom) & set(STATUS_KEYS)
    return bool(keys - {"status"}) or custom.get("status", "rotated") != "rotated"


async def _write_rotated_status(run: _Run, state: VncState) -> None:
    """Status metadata of a committed password. The commit recorded the times in the data, so
    on the happy path (metadata already clean) this costs no Vault request; otherwise one
    merge patch sets ``rotated`` and removes what an earlier failure (or rotator) left."""
    if not _status_is_stale(state.custom_metadata):
        return
    await _best_effort(
        run,
        run.ctx.store.update_status(
            run.target.cluster_id,
            status="rotated",
            last_rotated_at="",
            next_rotation_at="",
            last_error_code="",
            last_request_id="",
            attempts="",
        ),
    )


async def _park(run: _Run, park: _Park) -> ClusterOutcome:
    """Leave the cluster in a safe state for the next run and report why we stopped."""
    error = park.error
    code = park.code
    account_wide = isinstance(error, ApiError) and error.scope is ErrorScope.ACCOUNT
    message = park.message or (error.message if error else None)
    if code == OutcomeCode.CLAIMED_ELSEWHERE or isinstance(error, VaultConflictError):
        # Another rotator owns this cluster right now: its bookkeeping, not ours.
        return run.outcome(park.outcome, code=code, message=message)
    if code == OutcomeCode.INTERRUPTED and run.attempts == 0 and not run.holds_claim():
        # Stopped before this run owned or sent anything (e.g. while waiting out a rival's
        # claim): the status belongs to whoever does; ours would overwrite their "rotated".
        return run.outcome(park.outcome, code=code, message=message)
    outcome = park.outcome
    status = "failed" if outcome is Outcome.FAILED else "skipped"
    if run.maybe_applied:
        status = "pending"  # the pending password may be live: keep it for the next run
        if outcome is Outcome.SKIPPED:
            # A stopped cluster with a password maybe on it is not "done" (finding 11).
            outcome = Outcome.PENDING
    if not isinstance(error, VaultError):
        await _settle_pending(run)
        await _best_effort_status(run, status, code)
    return run.outcome(outcome, code=code, message=message, account_wide=account_wide)


async def _settle_pending(run: _Run) -> None:
    """Drop a pending password no attempt can have applied; otherwise keep it, unclaimed.

    Only a pending record this run wrote, at the version it wrote, is touched (check-and-set on
    that version): a record read afresh may hold a rival's password, maybe live, released by
    its owner (issue 9, finding 1: a stop cleared a password the cluster had).
    """
    state = run.state
    if state is None or not run.holds_claim():
        return
    if run.maybe_applied:
        # Keep the password but release our claim, so the next run need not wait it out.
        await _best_effort(run, _conflict_ok(run.ctx.store.release(state)))
    else:
        await _best_effort(run, _conflict_ok(run.ctx.store.clear_pending(state)))


async def _conflict_ok(call: Awaitable[VncState]) -> VncState | None:
    """Somebody took the record over since we wrote it: it is theirs now, leave it."""
    try:
        return await call
    except VaultConflictError:
        return None


async def _best_effort_status(run: _Run, status: str, code: str | None) -> None:
    await _best_effort(
        run,
        run.ctx.store.update_status(
            run.target.cluster_id,
            status=status,
            last_error_code=code or "",
            last_request_id=run.request_id or "",
            attempts=run.attempts,
        ),
    )


async def _best_effort(run: _Run, call: Awaitable[T]) -> T | None:
    """Bookkeeping writes must not turn a clear outcome into a confusing one."""
    try:
        return await call
    except VaultError as exc:
        run.ctx.hooks.vault_error(code=exc.code)
        log.warning("vault_bookkeeping_failed", code=exc.code)
        return None
