"""The lease schedule: due times, windows, time zones, jitter, catch-up, overrides, backoff."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from rotator.config import ServeSettings, Settings
from rotator.errors import ConfigError
from rotator.serve.schedule import (
    EPOCH,
    Lease,
    Schedule,
    ScheduleSettings,
    Window,
    jitter_for,
)
from rotator.vault.store import format_time

DAY = 86400.0


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def lease(cluster_id: str, **metadata: str) -> Lease:
    return Lease.from_metadata(cluster_id, metadata)


def make(clock: Clock, **settings: object) -> Schedule:
    values: dict[str, object] = {"period": 30 * DAY, "jitter": 0.0}
    values.update(settings)
    return Schedule(ScheduleSettings(**values), now=clock)  # type: ignore[arg-type]


# -- windows ----------------------------------------------------------------------------------


def test_window_across_midnight_contains_both_sides() -> None:
    window = Window.parse("22:00-02:00", "UTC")
    assert window is not None
    assert window.contains(at("2026-05-01T23:30:00"))
    assert window.contains(at("2026-05-02T01:59:00"))
    assert not window.contains(at("2026-05-02T02:00:00"))
    assert not window.contains(at("2026-05-01T12:00:00"))
    assert window.next_open(at("2026-05-01T12:00:00")) == at("2026-05-01T22:00:00")
    assert window.next_open(at("2026-05-02T03:00:00")) == at("2026-05-02T22:00:00")
    assert window.length == timedelta(hours=4)


def test_window_in_a_named_time_zone() -> None:
    window = Window.parse("01:00-05:00", "Asia/Shanghai")  # UTC+8, no DST
    assert window is not None
    assert window.contains(at("2026-05-01T18:00:00"))  # 02:00 in Shanghai
    assert not window.contains(at("2026-05-01T01:00:00"))  # 09:00 in Shanghai
    assert window.next_open(at("2026-05-01T00:00:00")) == at("2026-05-01T17:00:00")


def test_window_follows_daylight_saving_time() -> None:
    window = Window.parse("01:00-05:00", "Europe/Berlin")
    assert window is not None
    # Winter: UTC+1, summer: UTC+2.
    assert window.next_open(at("2026-01-10T12:00:00")) == at("2026-01-11T00:00:00")
    assert window.next_open(at("2026-07-10T12:00:00")) == at("2026-07-10T23:00:00")


@pytest.mark.parametrize(
    ("text", "zone"),
    [("1-5", "UTC"), ("25:00-02:00", "UTC"), ("01:00-01:00", "UTC"), ("01:00-05:00", "Mars/Base")],
)
def test_bad_windows_are_config_errors(text: str, zone: str) -> None:
    with pytest.raises(ConfigError):
        Window.parse(text, zone)


def test_no_window_when_empty_and_settings_validate_the_window() -> None:
    assert Window.parse("", "UTC") is None
    settings = Settings(serve=ServeSettings(window="01:00-99:00"))
    with pytest.raises(ConfigError, match=r"serve\.window"):
        ScheduleSettings.from_settings(settings)


# -- jitter -----------------------------------------------------------------------------------


def test_jitter_is_deterministic_and_bounded() -> None:
    assert jitter_for("ehpc-hz-1", 600) == jitter_for("ehpc-hz-1", 600)
    assert jitter_for("ehpc-hz-1", 600) != jitter_for("ehpc-hz-2", 600)
    assert jitter_for("ehpc-hz-1", 0) == 0.0
    values = [jitter_for(f"ehpc-{i}", 600) for i in range(1000)]
    assert all(0 <= v < 600 for v in values)
    buckets = [0] * 10
    for value in values:
        buckets[int(value // 60)] += 1
    assert min(buckets) > 60, buckets  # roughly uniform: no burst


def test_a_fleet_created_together_is_spread_by_jitter() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock, jitter=3600.0)
    due = "2026-05-02T00:00:00Z"
    schedule.replace_all(lease(f"c-{i}", next_rotation_at=due) for i in range(200))
    fire_times = sorted(schedule.fire_at(f"c-{i}") or EPOCH for i in range(200))
    assert fire_times[0] >= at("2026-05-02T00:00:00")
    assert fire_times[-1] < at("2026-05-02T01:00:00")
    assert fire_times[-1] - fire_times[0] > timedelta(minutes=50)
    clock.now = at("2026-05-02T00:30:00")
    fired = schedule.pop_due()
    assert 60 < len(fired) < 140  # about half, not the whole fleet at once
    assert all(d.not_before == at("2026-05-02T00:00:00") for d in fired)


# -- due times --------------------------------------------------------------------------------


def test_never_rotated_and_pending_clusters_are_due_now() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock, jitter=600.0)
    future = format_time(clock.now + timedelta(days=3))
    schedule.replace_all(
        [
            lease("new"),
            lease("pending", status="pending", next_rotation_at=future),
            lease("fine", next_rotation_at=future),
        ]
    )
    fired = {d.cluster_id: d for d in schedule.pop_due()}
    assert set(fired) == {"new", "pending"}
    assert fired["new"].not_before == EPOCH  # any rotation, by any replica, satisfies it
    assert fired["new"].reason == "never_rotated"
    assert fired["pending"].reason == "pending"
    assert schedule.seconds_until_next_due() == pytest.approx(3 * DAY, abs=601)


def test_a_password_found_in_flight_is_finished_not_satisfied_by_an_older_commit() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock)
    staged = clock.now - timedelta(hours=2)
    future = format_time(clock.now + timedelta(days=3))
    schedule.replace_all(
        [
            lease(
                "killed",
                status="pending",
                pending_since=format_time(staged),
                last_rotated_at=format_time(staged - timedelta(days=1)),
                next_rotation_at=future,
            )
        ]
    )
    (due,) = schedule.pop_due()
    # The committed password (a day older) does not satisfy it; committing the pending one does.
    assert (due.cluster_id, due.reason, due.not_before) == ("killed", "pending", staged)


def test_missed_due_times_are_caught_up_at_start() -> None:
    clock = Clock(at("2026-05-01T12:00:00"))
    schedule = make(clock, jitter=600.0)
    schedule.replace_all([lease("late", next_rotation_at="2026-04-20T00:00:00Z")])
    fired = schedule.pop_due()
    assert [(d.cluster_id, d.reason) for d in fired] == [("late", "catch_up")]
    assert fired[0].not_before == at("2026-04-20T00:00:00")


def test_catch_up_waits_for_the_window_and_spreads_inside_it() -> None:
    clock = Clock(at("2026-05-01T12:00:00"))
    window = Window.parse("01:00-05:00", "UTC")
    schedule = make(clock, jitter=7200.0, window=window)
    schedule.replace_all(
        lease(f"c-{i}", next_rotation_at="2026-04-20T00:00:00Z") for i in range(50)
    )
    assert schedule.pop_due() == []
    fire_times = [schedule.fire_at(f"c-{i}") or EPOCH for i in range(50)]
    assert min(fire_times) >= at("2026-05-02T01:00:00")
    assert max(fire_times) < at("2026-05-02T03:00:00")  # at most half the window
    assert schedule.seconds_until_next_due() == pytest.approx(13 * 3600, abs=7200)
    clock.now = at("2026-05-02T03:00:00")
    assert len(schedule.pop_due()) == 50


def test_inside_the_window_overdue_clusters_fire_at_once() -> None:
    clock = Clock(at("2026-05-01T02:00:00"))
    schedule = make(clock, jitter=600.0, window=Window.parse("01:00-05:00", "UTC"))
    schedule.replace_all([lease("late", next_rotation_at="2026-04-30T00:00:00Z")])
    assert [d.cluster_id for d in schedule.pop_due()] == ["late"]


def test_period_overrides_from_config_and_metadata() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock)
    ten_days_ago = format_time(clock.now - timedelta(days=10))
    schedule.replace_all(
        [
            Lease.from_metadata("default", {"last_rotated_at": ten_days_ago}),
            Lease.from_metadata(
                "config-7d", {"last_rotated_at": ten_days_ago}, config_period=7 * DAY
            ),
            Lease.from_metadata(
                "meta-7d",
                {"last_rotated_at": ten_days_ago, "rotation_period": "7d"},
                config_period=60 * DAY,
            ),
            Lease.from_metadata(
                "bad-meta",
                {"last_rotated_at": ten_days_ago, "rotation_period": "soon"},
                config_period=60 * DAY,
            ),
        ]
    )
    assert {d.cluster_id for d in schedule.pop_due()} == {"config-7d", "meta-7d"}
    assert schedule.fire_at("default") == clock.now + timedelta(days=20)
    assert schedule.fire_at("bad-meta") == clock.now + timedelta(days=50)


def test_an_earlier_next_rotation_at_pulls_the_due_time_forward() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock)
    schedule.set_lease(
        lease(
            "c",
            last_rotated_at=format_time(clock.now - timedelta(days=1)),
            next_rotation_at=format_time(clock.now + timedelta(hours=2)),
        )
    )
    assert schedule.fire_at("c") == clock.now + timedelta(hours=2)


# -- life of a trigger -----------------------------------------------------------------------


def test_fired_clusters_wait_for_their_result_and_failures_back_off() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock, retry_initial=60.0, retry_max=300.0)
    schedule.replace_all([lease("c")])
    assert [d.cluster_id for d in schedule.pop_due()] == ["c"]
    assert schedule.pop_due() == []  # in flight
    assert schedule.seconds_until_next_due() is None

    schedule.finished("c", rotated=False)
    schedule.set_lease(lease("c"))  # a refresh with the same lease keeps the backoff
    assert schedule.pop_due() == []
    clock.advance(60)
    assert [d.cluster_id for d in schedule.pop_due()] == ["c"]
    schedule.finished("c", rotated=False)
    clock.advance(60)
    assert schedule.pop_due() == []  # doubled: 120 s
    clock.advance(60)
    assert [d.cluster_id for d in schedule.pop_due()] == ["c"]
    for _ in range(6):
        schedule.finished("c", rotated=False)
        clock.advance(300)  # capped
        assert [d.cluster_id for d in schedule.pop_due()] == ["c"]

    schedule.finished("c", rotated=True)
    schedule.set_lease(lease("c", last_rotated_at=format_time(clock.now)))
    assert schedule.pop_due() == []
    assert schedule.seconds_until_next_due() == pytest.approx(30 * DAY)


def test_released_triggers_fire_again() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock)
    schedule.replace_all([lease("c")])
    schedule.pop_due()
    schedule.release("c")
    assert [d.cluster_id for d in schedule.pop_due()] == ["c"]


def test_refresh_adds_new_clusters_and_drops_removed_ones() -> None:
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock)
    future = format_time(clock.now + timedelta(days=1))
    schedule.replace_all([lease("a", next_rotation_at=future), lease("b", next_rotation_at=future)])
    schedule.replace_all([lease("b", next_rotation_at=future), lease("c")])
    assert schedule.cluster_ids == ["b", "c"]
    assert [d.cluster_id for d in schedule.pop_due()] == ["c"]


def test_a_checked_out_cluster_is_held_until_its_lease_ends() -> None:
    """Vault's LDAP library and CyberArk do not rotate a checked-out password under its holder."""
    clock = Clock(at("2026-05-01T00:00:00"))
    schedule = make(clock)
    past = format_time(clock.now - timedelta(days=1))
    schedule.replace_all(
        [
            lease("held", next_rotation_at=past),
            lease("free", next_rotation_at=past),
            lease("stuck", status="pending", next_rotation_at=past),
        ]
    )
    schedule.hold({"held": "checked out by alice", "stuck": "checked out by bob"})
    # A pending password is finished even under a lease: the cluster's password is unknown.
    assert sorted(d.cluster_id for d in schedule.pop_due()) == ["free", "stuck"]
    assert schedule.held_reason("held") == "checked out by alice"
    assert schedule.pop_due() == []
    assert schedule.held_due() == ["held"]  # due, and waiting for the lease (a metric)
    schedule.hold({})  # the lease ended
    assert [d.cluster_id for d in schedule.pop_due()] == ["held"]
    assert schedule.held_reason("held") is None
