"""Rotating a fleet: bounded concurrency, a failure threshold, account-wide stops, clean shutdown.

    summary = await run_batch(targets, context, run_id=run_id, concurrency=32,
                              max_failures=FailureThreshold.parse("5%", len(targets)), stop=stop)

At most ``concurrency`` rotations exist at any time (tasks are created as slots free up, so 10,000
clusters cost 10,000 small records, not 10,000 tasks). Once the failure threshold is reached, an
account-wide error comes back (NotAuthorized, InDebt, a bad AccessKey...) or ``stop`` is set (a
signal), no new cluster starts; the ones in flight finish and the rest are ``not_attempted``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from rotator.engine.report import ClusterOutcome, Outcome, RunSummary
from rotator.engine.rotation import RotationContext, Target, not_running_outcome, rotate_cluster
from rotator.errors import ConfigError, RotatorError

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


async def run_batch(
    targets: Iterable[Target],
    ctx: RotationContext,
    *,
    run_id: str,
    concurrency: int,
    max_failures: FailureThreshold | None = None,
    stop: asyncio.Event | None = None,
    trigger: str = "manual",
) -> RunSummary:
    """Rotate every target and return the run's summary. Never raises for per-cluster errors."""
    started_at = datetime.now(UTC)
    threshold = max_failures or FailureThreshold(None)
    stop = stop or asyncio.Event()
    ctx.stop = stop
    state = _State()
    outcomes: list[ClusterOutcome] = []
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    def stopping() -> str | None:
        if state.stopped_reason is None:
            if stop.is_set():
                state.stopped_reason = "stop requested (signal or shutdown)"
            elif threshold.reached(state.failures):
                state.stopped_reason = f"failure threshold reached ({state.failures} failed)"
        return state.stopped_reason

    async def one(target: Target) -> None:
        try:
            outcome = await rotate_cluster(target, ctx)
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

    for target in interleave_regions(dedupe(targets)):
        if target.status is not None and target.status != "running":
            # Not rotated; but "pending" if an earlier run left a password on it (finding 11).
            result = await not_running_outcome(target, ctx)
            outcomes.append(result)
            ctx.hooks.outcome(result)
            continue
        if reason := stopping():
            skip(target, Outcome.NOT_ATTEMPTED, "RunStopped", reason)
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
    summary = RunSummary.build(
        run_id=run_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        outcomes=outcomes,
        stopped_reason=state.stopped_reason,
        api_calls=ctx.api_calls,
        trigger=trigger,
    )
    log.info("run_finished", **summary.log_fields())
    return summary
