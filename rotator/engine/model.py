"""The records the rotation protocol reasons about, owned by the engine; stores adapt to them.

    state = await store.read_vnc("ehpc-hz-123")   # a VncState
    state.password                                # what the cluster had at the last commit
    state.pending                                 # the rotation in flight, if any (PendingState)

The protocol's invariant: the cluster's real VNC password is ``state.password`` or
``state.pending.password``. Nothing here talks to Vault; :mod:`rotator.vault.store` maps these
records to KV v2 paths and the in-memory store of the tests holds them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from rotator.secret import Secret

__all__ = [
    "STATUS_KEYS",
    "PendingState",
    "RootCredential",
    "VncState",
    "format_time",
    "parse_time",
]


STATUS_KEYS = (
    "status",
    "last_rotated_at",
    "next_rotation_at",
    "last_error_code",
    "last_request_id",
    "attempts",
)
"""Custom metadata keys rotator writes, only when a rotation did not end well (or to clear what
such a rotation left): on the happy path the times live in the committed record's data."""


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: object) -> datetime | None:
    """The inverse of :func:`format_time`; None for absent or unreadable values."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RootCredential:
    """The cluster's root login, which authorises ``ModifyVisualServicePasswd``."""

    cluster_id: str
    user: str
    password: Secret
    region: str | None
    vnc_host: str | None = None
    """Where the VNC check connects (``{host}`` of verify.url), if set in the secret."""


@dataclass(frozen=True, slots=True)
class PendingState:
    """A rotation in flight: a password that may be on the cluster but is not committed yet."""

    cluster_id: str
    version: int = 0
    """Version of the pending record read; the next write is a check-and-set on it."""
    password: Secret | None = None
    """None: the record exists but holds no password (cleared)."""
    staged_at: datetime | None = None
    """When this password was generated and staged (kept when a rival takes it over)."""
    claim_owner: str | None = None
    """Who is applying it right now (run or replica id)."""
    claim_until: datetime | None = None
    """Until when the claim protects the apply; a stale claim may be taken over."""
    region: str | None = None


@dataclass(frozen=True, slots=True)
class VncState:
    """One read of a cluster's VNC record: what the next check-and-set write builds on."""

    cluster_id: str
    version: int = 0
    """Version of the committed record; 0 = it does not exist yet (a CAS write of 0 creates it)."""
    password: Secret | None = None
    region: str | None = None
    rotated_at: datetime | None = None
    """When the password was committed."""
    staged_at: datetime | None = None
    """When the committed password was generated: a trigger is satisfied only by a password
    generated after it (one staged earlier may have been seen by somebody)."""
    request_id: str | None = None
    next_rotation_at: datetime | None = None
    """When the committed password falls due, recorded with it by the commit."""
    custom_metadata: dict[str, str] = field(default_factory=dict)
    period_override: float | None = None
    """A person's ``rotation_period`` for this cluster, in seconds (parsed by the store)."""
    pending: PendingState | None = None
    """The rotation in flight; None when there is none or it was not read."""
    pending_version: int = 0
    """Version of the pending record that was committed last (0: none known). Staging with
    check-and-set on it proves nobody staged since that commit."""
    extra: dict[str, object] = field(default_factory=dict, repr=False)
    """Data keys added by people; preserved on every write."""

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def status_view(self) -> dict[str, str]:
        """The status keys as people and the daemon read them: the custom metadata (a failed
        run's status, a person's ``rotation_period`` or pulled-forward ``next_rotation_at``)
        with the committed record's times filled in. A commit writes no metadata, so a cluster
        with a committed password and no status is ``rotated``. A record committed without a
        ``next_rotation_at`` (an older rotator, an import) keeps the times its metadata has."""
        view = dict(self.custom_metadata)
        if self.rotated_at is not None:
            view.setdefault("status", "rotated")
            recorded = "last_rotated_at" in view or "next_rotation_at" in view
            if self.next_rotation_at is not None or not recorded:
                view["last_rotated_at"] = format_time(self.rotated_at)
        if self.next_rotation_at is not None:
            person = parse_time(view.get("next_rotation_at"))
            if person is None or person > self.next_rotation_at:
                view["next_rotation_at"] = format_time(self.next_rotation_at)
        if self.request_id:
            view.setdefault("last_request_id", self.request_id)
        return view

    def with_pending(self, found: PendingState | None) -> VncState:
        """This committed state with the pending record as read (None: there is none, and a
        stage creates it with check-and-set 0)."""
        return replace(self, pending=found, pending_version=found.version if found else 0)

    @property
    def in_flight(self) -> PendingState | None:
        """The pending record when it holds a password that is not the committed one (after a
        commit the record still holds the password it made current: that is not in flight)."""
        pending = self.pending
        if pending is None or pending.password is None:
            return None
        if pending.password == self.password:
            return None
        return pending

    # Shortcuts to the rotation in flight, for readers that only want the values.
    @property
    def pending_password(self) -> Secret | None:
        pending = self.in_flight
        return pending.password if pending else None

    @property
    def pending_since(self) -> datetime | None:
        pending = self.in_flight
        return pending.staged_at if pending else None

    @property
    def claim_owner(self) -> str | None:
        pending = self.in_flight
        return pending.claim_owner if pending else None

    @property
    def claim_until(self) -> datetime | None:
        pending = self.in_flight
        return pending.claim_until if pending else None
