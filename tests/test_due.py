"""The due decision shared by ``rotate`` and ``plan`` (issue 10 §1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.config import parse_duration
from rotator.engine.due import decide
from rotator.engine.model import PendingState, VncState
from rotator.engine.rotation import Target
from rotator.secret import Secret

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DAY = 86400.0
TARGET = Target("ehpc-hz-1", "cn-hangzhou")


def _state(
    *,
    rotated_days_ago: float | None = 1,
    next_in_days: float | None = 29,
    status: str = "rotated",
    pending: bool = False,
    **meta: str,
) -> VncState:
    custom = {"status": status, **meta}
    rotated = NOW - timedelta(days=rotated_days_ago) if rotated_days_ago is not None else None
    if next_in_days is not None:
        custom["next_rotation_at"] = (NOW + timedelta(days=next_in_days)).isoformat()
    return VncState(
        cluster_id=TARGET.cluster_id,
        version=3,
        password=Secret("Ab12cd") if rotated else None,
        pending=PendingState(TARGET.cluster_id, version=1, password=Secret("Zz98yy"))
        if pending
        else None,
        rotated_at=rotated,
        custom_metadata=custom,
        # The store parses a person's rotation_period into the state it returns.
        period_override=parse_duration(meta["rotation_period"])
        if "rotation_period" in meta
        else None,
    )


def _decide(
    state: VncState, *, force: bool = False, target: Target = TARGET
) -> tuple[bool, str | None]:
    decision = decide(target, state, now=NOW, default_period=30 * DAY, force=force)
    return decision.rotate, decision.code


def test_a_recently_rotated_cluster_is_not_due() -> None:
    assert _decide(_state()) == (False, "NotDue")


def test_force_rotates_a_cluster_that_is_not_due() -> None:
    assert _decide(_state(), force=True) == (True, None)


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (VncState(cluster_id="ehpc-hz-1"), "never rotated"),
        (_state(next_in_days=-1), "past next_rotation_at"),
        (_state(pending=True), "a pending password"),
        (_state(status="failed", last_error_code="IncorrectCredential"), "left failed"),
        (_state(status="pending"), "left pending"),
        (_state(rotated_days_ago=31, next_in_days=None), "past its period, no due time"),
        (_state(rotated_days_ago=8, rotation_period="7d"), "period shortened to 7d"),
    ],
)
def test_due_clusters_rotate(state: VncState, why: str) -> None:
    assert _decide(state) == (True, None), why


def test_a_cluster_that_is_not_running_is_skipped_even_when_forced() -> None:
    stopped = Target("ehpc-hz-1", "cn-hangzhou", status="stopped")
    assert _decide(_state(next_in_days=-1), target=stopped, force=True) == (
        False,
        "ClusterNotRunning",
    )


def test_the_reason_names_the_due_time() -> None:
    decision = decide(TARGET, _state(), now=NOW, default_period=30 * DAY)
    assert decision.action == "skip"
    assert decision.reason == "not due until 2026-12-30 02:00Z"


def test_a_checked_out_cluster_is_held_unless_forced_or_triggered() -> None:
    from dataclasses import replace

    held = replace(TARGET, held="checked out by alice until 2026-12-01 04:00Z")
    due = _state(rotated_days_ago=40, next_in_days=-10)
    decision = decide(held, due, now=NOW, default_period=30 * DAY)
    assert (decision.rotate, decision.code) == (False, "CheckedOut")
    assert "alice" in decision.reason
    assert decide(held, due, now=NOW, default_period=30 * DAY, force=True).rotate
    # A lease that ended (not_before) or a pending password still rotate.
    ended = replace(held, not_before=NOW - timedelta(minutes=1))
    assert decide(ended, due, now=NOW, default_period=30 * DAY).rotate
    assert decide(held, _state(pending=True), now=NOW, default_period=30 * DAY).rotate


def test_a_trigger_is_satisfied_only_by_a_password_generated_after_it() -> None:
    """Review after the wave-2 merge: the engine judges a trigger by when the committed password
    was generated (``staged_at``, issue 9 finding 4), ``decide`` by when it was committed; a
    password staged before a lease ended and committed after it made ``plan``/``rotate`` say
    "not due" while the engine would rotate. Both now use the generation time."""
    ended = NOW - timedelta(hours=1)
    state = VncState(
        cluster_id=TARGET.cluster_id,
        version=3,
        password=Secret("Ab12cd"),
        staged_at=NOW - timedelta(hours=2),
        rotated_at=NOW - timedelta(minutes=30),
        custom_metadata={
            "status": "rotated",
            "next_rotation_at": (NOW + timedelta(days=29)).isoformat(),
        },
    )
    target = Target(TARGET.cluster_id, TARGET.region, not_before=ended)
    assert decide(target, state, now=NOW, default_period=30 * DAY).rotate
    later = VncState(
        cluster_id=state.cluster_id,
        version=4,
        password=Secret("Cd34ef"),
        staged_at=NOW - timedelta(minutes=20),
        rotated_at=NOW - timedelta(minutes=19),
        custom_metadata=state.custom_metadata,
    )
    assert not decide(target, later, now=NOW, default_period=30 * DAY).rotate
