"""The lease schedule: when each cluster's VNC password is next due, as pure logic.

    schedule = Schedule(ScheduleSettings.from_settings(settings), now=clock)
    schedule.replace_all({"ehpc-1": Lease.from_metadata("ehpc-1", metadata, config_period=None)})
    for due in schedule.pop_due():          # fire these as ``lease_expired`` triggers
        queue.put(...)
    schedule.finished("ehpc-1", rotated=True)
    schedule.seconds_until_next_due()       # for the wait, and a gauge

A cluster's due time comes from the vnc secret's status view (``VncState.status_view``: the
committed record's times with its custom metadata): ``last_rotated_at`` + its period (a
period override in the metadata ``rotation_period`` or the config, else the global one), or
``next_rotation_at`` when that is earlier (a person pulled it forward), or *now* when neither is
known or a password is still pending. The fire time adds a deterministic per-cluster jitter (a
hash of the id, so every replica computes the same one) and moves into the rotation window.
Due times missed while the daemon was down fire at start (inside the window).

Nothing here does I/O or reads the wall clock directly: ``now`` is injected.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rotator.config import ServeSettings, Settings, parse_duration
from rotator.engine.retry import exponential
from rotator.errors import ConfigError
from rotator.vault.store import parse_time

__all__ = ["EPOCH", "Due", "Lease", "Schedule", "ScheduleSettings", "Window", "jitter_for"]

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (UTC)."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""``not_before`` of a cluster that was never rotated: any committed rotation satisfies it."""

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """A daily rotation window in a named time zone; ``end`` before ``start`` spans midnight.

    Window.parse("22:00-02:00", "Asia/Shanghai").contains(when)
    """

    start: time
    end: time
    tz: ZoneInfo

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC") -> Window | None:
        """``"01:00-05:00"``; empty text means no window (any time)."""
        if not text.strip():
            return None
        match = _WINDOW.match(text)
        if not match:
            raise ConfigError(
                f"{text!r} is not a window; write HH:MM-HH:MM, e.g. 01:00-05:00", key="serve.window"
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ConfigError(f"{text!r} has an impossible time of day", key="serve.window")
        start, end = time(h1, m1), time(0, 0) if h2 == 24 else time(h2, m2)
        if start == end:
            raise ConfigError(f"{text!r} is an empty window", key="serve.window")
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{timezone!r} is not a known time zone (e.g. UTC, Asia/Shanghai)",
                key="serve.timezone",
            ) from None
        return cls(start=start, end=end, tz=tz)

    @property
    def length(self) -> timedelta:
        minutes = (self.end.hour * 60 + self.end.minute) - (
            self.start.hour * 60 + self.start.minute
        )
        return timedelta(minutes=minutes % (24 * 60))

    def contains(self, when: datetime) -> bool:
        local = when.astimezone(self.tz).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_open(self, when: datetime) -> datetime:
        """``when`` itself inside the window, else the next time the window opens (UTC)."""
        if self.contains(when):
            return when
        local = when.astimezone(self.tz)
        for days in (0, 1, 2):
            day = (local + timedelta(days=days)).date()
            opening = datetime.combine(day, self.start, tzinfo=self.tz)
            if opening > local:
                # Round-trip through UTC: a start inside a DST gap lands just after it.
                return opening.astimezone(UTC)
        raise AssertionError("unreachable: a window opens at least once a day")  # pragma: no cover


def jitter_for(cluster_id: str, spread: float) -> float:
    """A stable offset in ``[0, spread)`` seconds: the same on every replica, every restart."""
    if spread <= 0:
        return 0.0
    digest = hashlib.sha256(cluster_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * spread


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    period: float = 30 * 86400.0
    window: Window | None = None
    jitter: float = 0.0
    retry_initial: float = 60.0
    """After a cluster's lease rotation did not succeed, wait this long before the next try..."""
    retry_max: float = 3600.0
    """...doubling up to this."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ScheduleSettings:
        serve: ServeSettings = settings.serve
        return cls(
            period=settings.rotation.period,
            window=Window.parse(serve.window, serve.timezone),
            jitter=serve.jitter,
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """What Vault (and the config) say about one cluster's rotation period."""

    cluster_id: str
    next_rotation_at: datetime | None = None
    last_rotated_at: datetime | None = None
    status: str | None = None
    period: float | None = None
    """This cluster's own period (metadata ``rotation_period``, else the config), if any."""
    pending_since: datetime | None = None
    """When the password in flight was staged (found by a pending scan): committing it
    satisfies the trigger, a committed password generated before it does not."""

    @classmethod
    def from_metadata(
        cls, cluster_id: str, metadata: Mapping[str, str], *, config_period: float | None = None
    ) -> Lease:
        period = config_period
        text = metadata.get("rotation_period")
        if text:
            try:
                period = parse_duration(text, key="rotation_period") or period
            except ConfigError:
                period = config_period  # the engine logs the bad value when it rotates
        return cls(
            cluster_id=cluster_id,
            next_rotation_at=parse_time(metadata.get("next_rotation_at")),
            last_rotated_at=parse_time(metadata.get("last_rotated_at")),
            status=metadata.get("status") or None,
            period=period,
            pending_since=parse_time(metadata.get("pending_since")),
        )

    def due(self, default_period: float) -> datetime | None:
        """When the lease expires; None = due now (never rotated, or a rotation is pending)."""
        if self.status == "pending":
            return None
        candidates = []
        if self.last_rotated_at is not None:
            candidates.append(
                self.last_rotated_at + timedelta(seconds=self.period or default_period)
            )
        if self.next_rotation_at is not None:
            candidates.append(self.next_rotation_at)
        return min(candidates) if candidates else None


@dataclass(frozen=True, slots=True)
class Due:
    """A cluster whose lease expired: fire a trigger with this ``not_before``."""

    cluster_id: str
    not_before: datetime
    """The lease expiry: a rotation committed at or after it (by any replica) satisfies it."""
    reason: str


@dataclass(slots=True)
class _Entry:
    lease: Lease
    fire_at: datetime
    not_before: datetime
    reason: str
    in_flight: bool = False
    failures: int = 0
    retry_at: datetime | None = None


@dataclass(slots=True)
class Schedule:
    settings: ScheduleSettings
    now: Clock = _utcnow
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _held: dict[str, str] = field(default_factory=dict)
    """Clusters with an open check-out lease -> why: their period rotation waits for its end."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cluster_id: object) -> bool:
        return cluster_id in self._entries

    @property
    def cluster_ids(self) -> list[str]:
        return sorted(self._entries)

    def _fire_time(self, cluster_id: str, due: datetime | None, now: datetime) -> datetime:
        offset = timedelta(seconds=jitter_for(cluster_id, self.settings.jitter))
        # Overdue (or never rotated): now, the catch-up after downtime. Else due + jitter.
        fire = now if due is None else max(due + offset, now)
        window = self.settings.window
        if window is not None and not window.contains(fire):
            opening = window.next_open(fire)
            # Spread the clusters that waited for the window over its first part, not one burst.
            spread = min(self.settings.jitter, window.length.total_seconds() / 2)
            fire = opening + timedelta(seconds=jitter_for(cluster_id, spread))
        return fire

    def set_lease(self, lease: Lease) -> None:
        """Add or update one cluster (after a refresh or a finished rotation)."""
        now = self.now()
        due = lease.due(self.settings.period)
        old = self._entries.get(lease.cluster_id)
        entry = _Entry(
            lease=lease,
            fire_at=self._fire_time(lease.cluster_id, due, now),
            not_before=due or lease.pending_since or EPOCH,
            reason=self._reason(lease, due, now),
        )
        if old is not None:
            entry.in_flight = old.in_flight
            if old.lease.due(self.settings.period) == due:
                # Same lease as before: a failed try keeps backing off, not hammering the API.
                entry.failures, entry.retry_at = old.failures, old.retry_at
        self._entries[lease.cluster_id] = entry

    @staticmethod
    def _reason(lease: Lease, due: datetime | None, now: datetime) -> str:
        if lease.status == "pending":
            return "pending"
        if due is None:
            return "never_rotated"
        return "lease_expired" if due > now else "catch_up"

    def replace_all(self, leases: Iterable[Lease]) -> None:
        """A full refresh: clusters no longer listed are dropped, new ones added."""
        wanted = {lease.cluster_id: lease for lease in leases}
        for cluster_id in list(self._entries):
            if cluster_id not in wanted:
                del self._entries[cluster_id]
        for lease in wanted.values():
            self.set_lease(lease)

    def hold(self, held: Mapping[str, str]) -> None:
        """Replace the clusters whose period rotations wait (open check-out leases); a cluster
        no longer held fires when due, at once if its time has passed."""
        self._held = dict(held)

    def held_reason(self, cluster_id: str) -> str | None:
        entry = self._entries.get(cluster_id)
        if entry is None or not self._is_held(entry):
            return None
        return self._held[cluster_id]

    def held_due(self) -> list[str]:
        """Held clusters whose period rotation is due now (they rotate when the lease ends)."""
        now = self.now()
        return sorted(
            cluster_id
            for cluster_id, entry in self._entries.items()
            if self._is_held(entry) and not entry.in_flight and entry.fire_at <= now
        )

    def _is_held(self, entry: _Entry) -> bool:
        # A pending password is finished even under a lease: the cluster's password is unknown.
        return entry.lease.cluster_id in self._held and entry.lease.status != "pending"

    def _effective(self, entry: _Entry) -> datetime:
        if entry.in_flight or self._is_held(entry):
            return _FAR_FUTURE
        if entry.retry_at is not None and entry.retry_at > entry.fire_at:
            return entry.retry_at
        return entry.fire_at

    def pop_due(self) -> list[Due]:
        """Clusters whose time has come; they stay out of later pops until :meth:`finished`."""
        now = self.now()
        fired: list[Due] = []
        for cluster_id in sorted(self._entries):
            entry = self._entries[cluster_id]
            if self._effective(entry) <= now:
                entry.in_flight = True
                fired.append(Due(cluster_id, entry.not_before, entry.reason))
        return fired

    def finished(self, cluster_id: str, *, rotated: bool) -> None:
        """The rotation a lease fired is over. Failures back off until the lease changes."""
        entry = self._entries.get(cluster_id)
        if entry is None:
            return
        entry.in_flight = False
        if rotated:
            entry.failures, entry.retry_at = 0, None
            return
        entry.failures += 1
        delay = exponential(entry.failures, self.settings.retry_initial, self.settings.retry_max)
        entry.retry_at = self.now() + timedelta(seconds=delay)

    def release(self, cluster_id: str) -> None:
        """The fired trigger was dropped (shutdown, reload): fire again when due."""
        entry = self._entries.get(cluster_id)
        if entry is not None:
            entry.in_flight = False

    def next_fire_at(self) -> datetime | None:
        times = [self._effective(e) for e in self._entries.values()]
        upcoming = [t for t in times if t != _FAR_FUTURE]
        return min(upcoming) if upcoming else None

    def seconds_until_next_due(self) -> float | None:
        """Seconds until the next trigger fires (0 when overdue); None with nothing scheduled."""
        upcoming = self.next_fire_at()
        if upcoming is None:
            return None
        seconds = (upcoming - self.now()).total_seconds()
        return max(0.0, seconds) if math.isfinite(seconds) else None

    def fire_at(self, cluster_id: str) -> datetime | None:
        entry = self._entries.get(cluster_id)
        return None if entry is None else self._effective(entry)
