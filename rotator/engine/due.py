"""Is a cluster due? The one decision shared by ``rotate`` and ``plan``.

    decision = decide(target, state, now=now, default_period=30 * 86400, force=False)
    decision.rotate, decision.code, decision.reason   # False, "NotDue", "not due until ..."

A scheduled ``rotate --all`` (CronJob, systemd timer) rotates only what is due: never rotated,
past ``next_rotation_at`` (or past its period, if the period was shortened since), or left
``pending``/``failed`` by an earlier run. Everything else is skipped with code ``NotDue``.
A cluster whose password is checked out (``Target.held``) is skipped with ``CheckedOut`` until
the lease ends, unless a pending password or a lease end needs it. ``force`` rotates regardless
(an incident, someone left the team).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.engine.model import VncState, parse_time
from rotator.engine.rotation import Target, rotation_period

__all__ = ["CHECKED_OUT", "NOT_DUE", "Decision", "decide"]

NOT_DUE = "NotDue"
NOT_RUNNING = "ClusterNotRunning"
CHECKED_OUT = "CheckedOut"
# Statuses an earlier run leaves when the cluster still needs a rotation.
_UNFINISHED = frozenset({"pending", "failed"})


@dataclass(frozen=True, slots=True)
class Decision:
    rotate: bool
    reason: str
    code: str | None = None
    """Why a cluster is skipped (``NotDue``, ``ClusterNotRunning``); None when it rotates."""

    @property
    def action(self) -> str:
        return "rotate" if self.rotate else "skip"


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M}Z"


def due_at(target: Target, state: VncState, default_period: float) -> datetime | None:
    """When the current password falls due: the ``next_rotation_at`` the commit recorded (or a
    person set earlier in the custom metadata), or earlier if the period was shortened since it
    was recorded. None: nothing recorded."""
    meta = state.custom_metadata
    recorded = [state.next_rotation_at, parse_time(meta.get("next_rotation_at"))]
    last = state.rotated_at or parse_time(meta.get("last_rotated_at"))
    by_period = (
        last + timedelta(seconds=rotation_period(target, state.period_override, default_period))
        if last
        else None
    )
    candidates = [t for t in (*recorded, by_period) if t is not None]
    return min(candidates) if candidates else None


def decide(
    target: Target,
    state: VncState,
    *,
    now: datetime,
    default_period: float,
    force: bool = False,
) -> Decision:
    if target.status not in (None, "running"):
        return Decision(False, f"cluster is {target.status}", NOT_RUNNING)
    if state.pending_password is not None:
        return Decision(True, "a pending password from an earlier run (re-applied as is)")
    if state.password is None:
        return Decision(True, "never rotated")
    # When the current password was generated: a holder may have seen anything staged before
    # the lease ended (the engine judges a trigger the same way).
    generated = (
        state.staged_at
        or state.rotated_at
        or parse_time(state.custom_metadata.get("last_rotated_at"))
    )
    if target.not_before is not None and (generated is None or generated < target.not_before):
        # A check-out lease ended (or a trigger fired) after the current password was made.
        return Decision(True, f"a check-out lease ended at {_when(target.not_before)}")
    if target.held and not force:
        # Not under a holder's feet: the lease's end rotates it (as Vault's LDAP library does).
        return Decision(False, f"held: {target.held}", CHECKED_OUT)
    status = state.custom_metadata.get("status", "")
    if status in _UNFINISHED:
        code = state.custom_metadata.get("last_error_code")
        return Decision(True, f"the last run left it {status}" + (f" ({code})" if code else ""))
    due = due_at(target, state, default_period)
    if due is None:
        return Decision(True, "no due time recorded")
    if due <= now:
        return Decision(True, f"due since {_when(due)}")
    if force:
        return Decision(True, f"not due until {_when(due)}; forced (--force)")
    return Decision(False, f"not due until {_when(due)}", NOT_DUE)
