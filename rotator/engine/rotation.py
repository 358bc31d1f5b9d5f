"""Rotating one cluster: stage, apply, commit, as a state machine that survives a crash anywhere.

    outcome = await rotate_cluster(Target("ehpc-hz-123", "cn-hangzhou"), context)

The invariant: at every instant Vault holds the cluster's real VNC password, either as
``password`` or as ``pending_password``.

1. Read the root credential and the VNC secret (version v). Vault unreachable: stop here, the API
   is never called.
2. Stage and claim: reuse ``pending_password`` if an earlier run left one (it may already be live),
   otherwise generate one; write it with check-and-set on v together with a short claim
   (owner + expiry). A rival rotator loses the CAS, or sees a live claim and waits for it; it
   never applies a second change for the same trigger.
3. Apply ``ModifyVisualServicePasswd`` with the pending password, re-claiming before every retry.
4. Commit: ``password`` := pending, pending cleared (CAS), shielded from cancellation.

A terminal answer clears the pending password only when no attempt can have applied it; an
ambiguous one (timeout, dropped connection) keeps it, so the next try re-applies the same value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

import structlog

from rotator.config import parse_duration
from rotator.engine.passwd_guard import PasswdRejections
from rotator.engine.ports import ApiClient, Hooks, NoHooks, RotationStore
from rotator.engine.ratelimit import RegionLimiter
from rotator.engine.report import ClusterOutcome, Outcome
from rotator.engine.retry import Backoff, RetryPolicy
from rotator.errors import (
    ApiError,
    ConfigError,
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
from rotator.vault.store import RootCredential, VncState, parse_time

__all__ = ["RotationContext", "Target", "rotate_cluster"]

log = structlog.get_logger("rotator.engine")

T = TypeVar("T")

SleepFn = Callable[[float], Awaitable[None]]

# Lost check-and-set races in a row before we leave the cluster to whoever keeps winning.
_MAX_STAGE_CONFLICTS = 5


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
    hooks: Hooks = field(default_factory=NoHooks)
    stop: asyncio.Event | None = None
    """Set on SIGTERM/SIGINT: rotations waiting to retry park at once instead."""
    sleep: SleepFn = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    api_calls: int = 0
    background: set[asyncio.Task[ClusterOutcome]] = field(default_factory=set)
    """Shielded commits still running after their rotation was cancelled."""
    passwd_rejections: PasswdRejections = field(default_factory=PasswdRejections)
    """Clusters whose rule-compliant password the API refused (two: stop the run)."""

    async def drain(self) -> None:
        """Wait for shielded commits that outlived a cancelled rotation."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)


class _Park(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """Stop working on this cluster with the given outcome."""

    def __init__(self, outcome: Outcome, error: RotatorError | None, code: str | None = None):
        super().__init__(code)
        self.outcome = outcome
        self.error = error
        self.code = code or (error.code if error else None)


@dataclass(slots=True)
class _Run:
    """Mutable bookkeeping of one cluster's rotation."""

    target: Target
    ctx: RotationContext
    started: float
    attempts: int = 0
    request_id: str | None = None
    maybe_applied: bool = False
    """True once the pending password may be live on the cluster (an earlier run left it, or an
    attempt of ours ended ambiguously): from then on it must never be discarded."""
    failures: dict[int, int] = field(default_factory=dict)
    """Failed tries per retry schedule."""
    stage_conflicts: int = 0
    period_override: float | None = None

    @property
    def period(self) -> float:
        """Seconds until the next rotation: a person's override, the inventory's, the default."""
        return self.period_override or self.target.period or self.ctx.period

    @property
    def not_before(self) -> datetime:
        return self.target.not_before or self.ctx.not_before

    @property
    def deadline(self) -> float:
        return self.started + self.ctx.cluster_deadline

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
        log.info("retrying", code=error.code, delay_s=round(delay, 3), attempt=self.attempts)
        await self.pause(delay, error)

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
            raise _Park(Outcome.FAILED, error, code="Interrupted")

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


async def _rotate(run: _Run) -> ClusterOutcome:
    ctx = run.ctx
    root = run.target.root
    if root is None:
        root = await run.vault(partial(ctx.store.read_root, run.target.cluster_id))
    if not run.target.region:
        if not root.region:
            raise _Park(Outcome.FAILED, None, code="RegionUnknown")
        run.target = replace(run.target, region=root.region)
    target = run.target
    state = await run.vault(lambda: ctx.store.read_vnc(target.cluster_id))
    run.period_override = _period_override(state)
    if _already_rotated(state, run.not_before):
        await _repair_status(run, state)
        return run.outcome(Outcome.SKIPPED, code="AlreadyRotated")
    run.maybe_applied = state.pending_password is not None
    while True:
        state = await _claim(run, state)
        if state.pending_password is not None:
            await ctx.limiter.acquire(target.region)
            if _claim_running_out(state, ctx):
                # The rate limiter kept us waiting: renew the claim so no rival starts an
                # apply of its own while ours is on the wire.
                state = await _claim(run, state)
        pending = state.pending_password
        if pending is None:  # a rival finished the rotation while we waited
            return run.outcome(Outcome.SKIPPED, code="AlreadyRotated")
        run.attempts += 1
        ctx.api_calls += 1
        sent_at = ctx.clock()
        try:
            result = await ctx.api.modify_visual_service_passwd(
                region=target.region,
                cluster_id=target.cluster_id,
                runas_user=root.user,
                runas_password=root.password,
                new_password=pending,
            )
        except ApiError as exc:
            ctx.hooks.api_call(region=target.region, code=exc.code, seconds=ctx.clock() - sent_at)
            ctx.limiter.observe(target.region, exc, sent_at=sent_at)  # Throttling: slow down
            run.request_id = exc.request_id or run.request_id
            state = await _after_api_error(run, state, exc)
            continue
        ctx.hooks.api_call(region=target.region, code=None, seconds=ctx.clock() - sent_at)
        run.request_id = result.request_id
        return await _commit(run, state, result.request_id)


async def _repair_status(run: _Run, state: VncState) -> None:
    """The status metadata is written after the commit, best effort; if that write was lost,
    the daemon's schedule would keep firing on a stale due time. Rewrite it from the data."""
    rotated_at = state.rotated_at
    if rotated_at is None:
        return
    meta = state.custom_metadata
    same_time = parse_time(meta.get("last_rotated_at")) == rotated_at
    if meta.get("status") == "rotated" and same_time and meta.get("next_rotation_at"):
        return
    await _write_rotated_status(run, rotated_at, state.request_id or "")


def _claim_running_out(state: VncState, ctx: RotationContext) -> bool:
    """Less than half the claim is left: not enough to cover one API call for sure."""
    if state.claim_until is None:
        return True
    left = (state.claim_until - ctx.now()).total_seconds()
    return left < ctx.claim_ttl / 2


def _period_override(state: VncState) -> float | None:
    """A person may set ``rotation_period`` (e.g. ``7d``) in the secret's custom metadata."""
    text = state.custom_metadata.get("rotation_period")
    if not text:
        return None
    try:
        return parse_duration(text, key="rotation_period")
    except ConfigError:
        log.warning("ignored_rotation_period", value=text)
        return None


def _already_rotated(state: VncState, not_before: datetime) -> bool:
    return (
        state.pending_password is None
        and state.rotated_at is not None
        and state.rotated_at >= not_before
    )


async def _claim(run: _Run, state: VncState) -> VncState:
    """Stage (or re-stage) the pending password under our claim, with check-and-set."""
    ctx, target = run.ctx, run.target
    while True:
        now = ctx.now()
        if (
            state.pending_password is not None
            and state.claim_owner not in (None, ctx.owner)
            and state.claim_until is not None
            and state.claim_until > now
        ):
            # A rival holds a live claim: wait for it to commit, retry, or expire.
            wait = (state.claim_until - now).total_seconds() + 0.05
            if ctx.clock() + wait > run.deadline:
                raise _Park(Outcome.SKIPPED, None, code="ClaimedElsewhere")
            log.info("claimed_elsewhere", owner=state.claim_owner, wait_s=round(wait, 3))
            await run.pause(wait, None)
            state = await run.vault(lambda: ctx.store.read_vnc(target.cluster_id))
            if _already_rotated(state, run.not_before):
                return state
            continue
        pending = state.pending_password or await _fresh_password(run)
        try:
            return await run.vault(partial(_stage, ctx, target, state, pending))
        except VaultConflictError as exc:
            # Somebody wrote since we read: look again rather than overwrite their work.
            log.info("stage_conflict")
            run.stage_conflicts += 1
            if run.stage_conflicts > _MAX_STAGE_CONFLICTS:
                raise _Park(Outcome.SKIPPED, exc) from None
            state = await run.vault(lambda: ctx.store.read_vnc(target.cluster_id))
            if _already_rotated(state, run.not_before):
                return state
            run.maybe_applied = run.maybe_applied or state.pending_password is not None


async def _stage(
    ctx: RotationContext, target: Target, state: VncState, pending: Secret
) -> VncState:
    return await ctx.store.stage_pending(
        state,
        pending,
        region=target.region,
        owner=ctx.owner,
        claim_until=ctx.now() + timedelta(seconds=ctx.claim_ttl),
    )


async def _fresh_password(run: _Run) -> Secret:
    try:
        password = await run.vault(run.ctx.passwords.generate)
    except InvalidPasswordError:
        password = None
    if password is None or not is_valid_vnc_password(password.reveal(), rule_of(run.ctx.passwords)):
        # The startup check makes this unreachable unless the policy changed mid-run.
        raise _Park(Outcome.FAILED, None, code="InvalidGeneratedPassword")
    return password


# Answers that come from behind the gateway, after the cluster may have acted on the request.
_MAY_HAVE_APPLIED_CODES = frozenset({"AgentError", "ExecFail", "UnknownError", "AliyunError"})
# Answers given before the request reached the cluster.
_NOT_APPLIED_CODES = frozenset({"ConflictOpt", "ConnectionFailed", "SignatureNonceUsed"})


def _may_have_applied(error: ApiError) -> bool:
    """Could the cluster have taken the password although the answer was an error?

    Throttling and ConflictOpt are refused up front; a server error (5xx) or an agent failure
    may come after the change happened, so the pending password must then be kept.
    """
    if error.code.startswith("Throttling") or error.code in _NOT_APPLIED_CODES:
        return False
    return error.code in _MAY_HAVE_APPLIED_CODES or (error.http_status or 500) >= 500


def _rejects_passwd(error: ApiError) -> bool:
    return error.code == "InvalidParams" and "Passwd" in error.message


async def _after_api_error(run: _Run, state: VncState, error: ApiError) -> VncState:
    """Decide what an API error means for the pending password; returns the state to go on."""
    ctx = run.ctx
    log.info("api_error", code=error.code, retry_class=error.retry_class.value)
    if error.retry_class is RetryClass.AMBIGUOUS:
        run.maybe_applied = True
        await run.backoff(error)
        return state
    if _rejects_passwd(error):
        # The API will never take this value (the rule or policy changed): drop it and generate
        # another. Retrying it forever is the bug Vault's static roles once had.
        if (stop := ctx.passwd_rejections.record(run.target.cluster_id, error)) is not None:
            raise _Park(Outcome.FAILED, stop)  # on a second cluster: our rule is out of date
        state = await run.vault(lambda: ctx.store.clear_pending(state))
        run.maybe_applied = False
        await run.backoff(error, ctx.retry.general)
        return state
    if error.retry_class is RetryClass.RETRYABLE:
        if _may_have_applied(error):
            run.maybe_applied = True
        await run.backoff(error)
        return state
    if error.code in _MAY_HAVE_APPLIED_CODES:
        run.maybe_applied = True
    if error.code == "InvalidClusterStatus":
        raise _Park(Outcome.SKIPPED, error)
    raise _Park(Outcome.FAILED, error)


async def _commit(run: _Run, state: VncState, request_id: str) -> ClusterOutcome:
    """Record the new password as current. Shielded: a cancelled run still finishes this write."""
    ctx, target = run.ctx, run.target
    rotated_at = ctx.now()

    async def write() -> ClusterOutcome:
        try:
            await run.vault(
                lambda: ctx.store.commit(
                    state, request_id=request_id, rotated_at=rotated_at, region=target.region
                )
            )
        except (_Park, VaultConflictError) as exc:
            error = exc.error if isinstance(exc, _Park) else exc
            if await _commit_landed(run, state):
                return await _record_rotated(run, request_id, rotated_at)
            log.error(
                "commit_failed",
                code=error.code if error else None,
                detail="the new password is safe in Vault as pending_password; "
                "the next run commits it",
            )
            await _best_effort_status(run, "pending", error.code if error else "CommitFailed")
            return run.outcome(
                Outcome.COMMIT_FAILED,
                code=error.code if error else "CommitFailed",
                message="password changed; still pending in Vault",
            )
        return await _record_rotated(run, request_id, rotated_at)

    task: asyncio.Task[ClusterOutcome] = asyncio.create_task(write())
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)
    return await asyncio.shield(task)


async def _commit_landed(run: _Run, staged: VncState) -> bool:
    """A commit whose answer was lost may have been written: a retry then loses its CAS to
    our own write. Look before calling it a failure."""
    current = await _best_effort(run, run.ctx.store.read_vnc(run.target.cluster_id))
    return (
        current is not None
        and current.pending_password is None
        and current.password is not None
        and current.password == staged.pending_password
    )


async def _record_rotated(run: _Run, request_id: str, rotated_at: datetime) -> ClusterOutcome:
    await _write_rotated_status(run, rotated_at, request_id, attempts=run.attempts)
    return run.outcome(Outcome.ROTATED)


async def _write_rotated_status(
    run: _Run, rotated_at: datetime, request_id: str, *, attempts: int | None = None
) -> None:
    """Status metadata of a committed password: the daemon's schedule reads next_rotation_at."""
    next_at = rotated_at + timedelta(seconds=run.period)
    await _best_effort(
        run,
        run.ctx.store.update_status(
            run.target.cluster_id,
            status="rotated",
            last_rotated_at=rotated_at.isoformat(),
            next_rotation_at=next_at.isoformat(),
            last_error_code="",
            last_request_id=request_id,
            attempts=attempts,
        ),
    )


async def _park(run: _Run, park: _Park) -> ClusterOutcome:
    """Leave the cluster in a safe state for the next run and report why we stopped."""
    error = park.error
    code = park.code
    account_wide = isinstance(error, ApiError) and error.scope is ErrorScope.ACCOUNT
    message = error.message if error else None
    if code == "ClaimedElsewhere" or isinstance(error, VaultConflictError):
        # Another rotator owns this cluster right now: its bookkeeping, not ours.
        return run.outcome(park.outcome, code=code, message=message)
    status = "failed" if park.outcome is Outcome.FAILED else "skipped"
    if run.maybe_applied:
        status = "pending"  # the pending password may be live: keep it for the next run
    if not isinstance(error, VaultError):
        await _settle_pending(run)
    if not isinstance(error, VaultError):
        await _best_effort_status(run, status, code)
    return run.outcome(park.outcome, code=code, message=message, account_wide=account_wide)


async def _settle_pending(run: _Run) -> None:
    """Drop a pending password no attempt can have applied; otherwise keep it, unclaimed."""
    ctx = run.ctx
    state = await _best_effort(run, ctx.store.read_vnc(run.target.cluster_id))
    if state is None or state.pending_password is None:
        return
    if state.claim_owner not in (None, ctx.owner):
        return  # somebody else's rotation
    if run.maybe_applied:
        # Keep the password but release our claim, so the next run need not wait it out.
        await _best_effort(
            run, ctx.store.stage_pending(state, state.pending_password, region=run.target.region)
        )
    else:
        await _best_effort(run, ctx.store.clear_pending(state))


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
