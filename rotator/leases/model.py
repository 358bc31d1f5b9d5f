"""Check-out leases as plain values: what a checkout, renewal, check-in or expiry does.

    doc = LeaseDoc.empty("ehpc-hz-1")
    doc, lease = checkout(doc, holder, ttl=3600, reason="debug", policy=policy, now=now)
    doc = checkin(doc, lease.lease_id, holder, now=now)      # the last lease ended:
    doc.rotation_due                                          # -> now: rotate after this
    doc = rotated(doc, not_before=now)                        # a rotation satisfied it

One :class:`LeaseDoc` per cluster is stored in Vault (``<kv_mount>/ehpc/leases/<ClusterId>``) and
every change is a check-and-set on the version read, so replicas and the CLI agree. When the last
open lease of a cluster ends (checked in, or expired) the same write sets ``rotation_due``: until
a rotation committed after that instant clears it, the password counts as seen and no new
checkout is handed the old one. Nothing here does I/O; ``now`` is always passed in.
"""

from __future__ import annotations

import enum
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rotator.errors import RotatorError

__all__ = [
    "CheckoutPolicy",
    "Holder",
    "Lease",
    "LeaseDoc",
    "LeaseError",
    "LeaseState",
    "checkin",
    "checkout",
    "cluster_of",
    "expire",
    "is_cluster_id",
    "new_lease_id",
    "refuse_while_owed",
    "rotated",
    "rotation_failed",
    "valid_cluster_id",
]

_FORMAT = 1

_CLUSTER_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
"""One path segment, as the Vault store accepts. A ``/``, ``..`` or glob character would let a
policy glob on the marker (``ehpc-hz-*`` matches ``ehpc-hz-1/../ehpc-bj-2``) authorize a path
that the HTTP stack then normalizes to another cluster's."""


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class LeaseError(RotatorError):
    """A lease operation refused; ``status`` is the HTTP answer, ``retry_after`` in seconds."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        cluster_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, cluster_id=cluster_id)
        self.status = status
        self.retry_after = retry_after


class LeaseState(enum.StrEnum):
    OPEN = "open"
    ROTATION_PENDING = "ended, rotation pending"
    ROTATION_FAILED = "expired, rotation failed"


def new_lease_id(cluster_id: str) -> str:
    """``<ClusterId>:<random>``: the cluster is found from the id alone (renew, check-in)."""
    return f"{cluster_id}:{secrets.token_hex(8)}"


def is_cluster_id(value: str) -> bool:
    return bool(_CLUSTER_ID.match(value))


def valid_cluster_id(cluster_id: str) -> str:
    """``cluster_id`` when it is one path segment; else LeaseError 400 (nothing asked of Vault)."""
    if not is_cluster_id(cluster_id):
        raise LeaseError(
            f"{cluster_id[:140]!r} is not a cluster id (letters, digits, '.', '_', '-'; at most "
            "128 characters)",
            code="InvalidClusterId",
            status=400,
        )
    return cluster_id


def cluster_of(lease_id: str) -> str:
    cluster_id, sep, suffix = lease_id.rpartition(":")
    if not sep or not cluster_id or not suffix:
        raise LeaseError(
            f"{lease_id!r} is not a lease id (<ClusterId>:<hex>)", code="InvalidLeaseId", status=400
        )
    return valid_cluster_id(cluster_id)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease, from ``auth/token/lookup-self`` of the caller's own token."""

    name: str
    """``display_name`` (e.g. ``oidc-alice``)."""
    entity_id: str = ""
    accessor: str = ""
    """The token's accessor (not a secret): identifies a token without an entity."""

    def same(self, other: Holder) -> bool:
        if self.entity_id and other.entity_id:
            return self.entity_id == other.entity_id
        return bool(self.accessor) and self.accessor == other.accessor

    def to_data(self) -> dict[str, str]:
        return {"name": self.name, "entity_id": self.entity_id, "accessor": self.accessor}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Holder:
        return cls(
            name=str(data.get("name") or ""),
            entity_id=str(data.get("entity_id") or ""),
            accessor=str(data.get("accessor") or ""),
        )


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: str
    holder: Holder
    reason: str
    issued_at: datetime
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now

    def to_data(self) -> dict[str, object]:
        return {
            "holder": self.holder.to_data(),
            "reason": self.reason,
            "issued_at": _time(self.issued_at),
            "expires_at": _time(self.expires_at),
        }

    @classmethod
    def from_data(cls, lease_id: str, data: Mapping[str, Any]) -> Lease | None:
        issued, expires = _parse(data.get("issued_at")), _parse(data.get("expires_at"))
        holder = data.get("holder")
        if issued is None or expires is None or not isinstance(holder, Mapping):
            return None
        reason = str(data.get("reason") or "")
        return cls(lease_id, Holder.from_data(holder), reason, issued, expires)


@dataclass(frozen=True, slots=True)
class CheckoutPolicy:
    mode: str = "shared"
    """``shared``: several holders at once; ``exclusive``: one."""
    default_ttl: float = 3600.0
    max_ttl: float = 8 * 3600.0
    """A lease never lives longer than this from its issue, renewals included."""
    max_leases: int = 100
    """Open leases per cluster (shared mode): the document stays small and reads stay cheap."""


@dataclass(frozen=True, slots=True)
class LeaseDoc:
    """Everything stored for one cluster; ``version`` is the KV version it was read at."""

    cluster_id: str
    version: int = 0
    leases: tuple[Lease, ...] = ()
    rotation_due: datetime | None = None
    """Set when the last lease ended: a rotation committed after this must happen."""
    ended: str = ""
    """How the last lease ended: ``expired`` or ``checked in``."""
    failures: int = 0
    last_error: str = ""
    next_attempt_at: datetime | None = None
    extra: dict[str, object] = field(default_factory=dict, repr=False)

    @classmethod
    def empty(cls, cluster_id: str) -> LeaseDoc:
        return cls(cluster_id)

    @property
    def state(self) -> LeaseState | None:
        """The lease-end state, None when no rotation is owed."""
        if self.rotation_due is None:
            return None
        return LeaseState.ROTATION_FAILED if self.failures else LeaseState.ROTATION_PENDING

    def lease(self, lease_id: str) -> Lease:
        for lease in self.leases:
            if lease.lease_id == lease_id:
                return lease
        raise LeaseError(
            f"no open lease {lease_id!r} (it ended, or never existed)",
            code="LeaseNotFound",
            status=404,
            cluster_id=self.cluster_id,
        )

    def next_expiry(self) -> datetime | None:
        return min((lease.expires_at for lease in self.leases), default=None)

    def held_reason(self) -> str | None:
        """Why a period rotation waits (open leases: holders and the last expiry), else None."""
        if not self.leases:
            return None
        names = sorted({lease.holder.name for lease in self.leases})
        until = max(lease.expires_at for lease in self.leases)
        return (
            f"checked out by {', '.join(names[:5])}"
            + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            + f" until {_time(until)}"
        )

    def to_data(self) -> dict[str, object]:
        data: dict[str, object] = {
            **self.extra,
            "format": _FORMAT,
            "cluster_id": self.cluster_id,
            "leases": {lease.lease_id: lease.to_data() for lease in self.leases},
        }
        if self.rotation_due is not None:
            data["rotation_due"] = _time(self.rotation_due)
            data["ended"] = self.ended
            data["failures"] = self.failures
            data["last_error"] = self.last_error
            if self.next_attempt_at is not None:
                data["next_attempt_at"] = _time(self.next_attempt_at)
        return data

    @classmethod
    def from_data(cls, cluster_id: str, version: int, data: Mapping[str, Any]) -> LeaseDoc:
        raw = data.get("leases")
        leases: list[Lease] = []
        if isinstance(raw, Mapping):
            for lease_id, entry in raw.items():
                lease = (
                    Lease.from_data(str(lease_id), entry) if isinstance(entry, Mapping) else None
                )
                if lease is not None:
                    leases.append(lease)
        known = {"format", "cluster_id", "leases", "rotation_due", "ended", "failures"}
        known |= {"last_error", "next_attempt_at"}
        failures = data.get("failures")
        return cls(
            cluster_id=cluster_id,
            version=version,
            leases=tuple(sorted(leases, key=lambda lease: lease.expires_at)),
            rotation_due=_parse(data.get("rotation_due")),
            ended=str(data.get("ended") or ""),
            failures=failures if isinstance(failures, int) else 0,
            last_error=str(data.get("last_error") or ""),
            next_attempt_at=_parse(data.get("next_attempt_at")),
            extra={k: v for k, v in data.items() if k not in known},
        )


def _ttl(requested: float | None, policy: CheckoutPolicy) -> float:
    ttl = policy.default_ttl if requested is None else requested
    if not math.isfinite(ttl):  # NaN passes both comparisons below, then breaks timedelta
        raise LeaseError("the ttl must be a finite duration", code="InvalidTtl", status=400)
    if ttl <= 0:
        raise LeaseError("the ttl must be longer than 0s", code="InvalidTtl", status=400)
    if ttl > policy.max_ttl:
        raise LeaseError(
            f"the ttl {ttl:g}s is longer than serve.checkout_max_ttl ({policy.max_ttl:g}s)",
            code="InvalidTtl",
            status=400,
        )
    return ttl


def _pending(doc: LeaseDoc, now: datetime) -> LeaseError:
    wait = 30.0
    if doc.next_attempt_at is not None:
        wait = max(1.0, (doc.next_attempt_at - now).total_seconds())
    return LeaseError(
        f"{doc.cluster_id}'s password is being rotated because a lease ended "
        f"({doc.state}); retry after the rotation",
        code="RotationPending",
        status=409,
        cluster_id=doc.cluster_id,
        retry_after=wait,
    )


def refuse_while_owed(doc: LeaseDoc, now: datetime) -> None:
    """LeaseError 409 ``RotationPending`` while a lease-end rotation is owed."""
    doc = expire(doc, now)
    if doc.rotation_due is not None:
        raise _pending(doc, now)


def checkout(
    doc: LeaseDoc,
    holder: Holder,
    *,
    ttl: float | None,
    reason: str,
    policy: CheckoutPolicy,
    now: datetime,
    lease_id: str | None = None,
) -> tuple[LeaseDoc, Lease]:
    """A new lease; refused while a lease-end rotation is owed, or in exclusive mode while
    another lease is open. Expired leases are ended first (see :func:`expire`)."""
    doc = expire(doc, now)
    if doc.rotation_due is not None:
        raise _pending(doc, now)
    if policy.mode == "exclusive" and doc.leases:
        other = doc.leases[0]
        raise LeaseError(
            f"{doc.cluster_id} is checked out exclusively by {other.holder.name} until "
            f"{_time(other.expires_at)}",
            code="CheckedOut",
            status=409,
            cluster_id=doc.cluster_id,
            retry_after=max(1.0, (other.expires_at - now).total_seconds()),
        )
    if len(doc.leases) >= policy.max_leases:
        raise LeaseError(
            f"{doc.cluster_id} already has {len(doc.leases)} open leases (the most allowed); "
            "check one in, or retry when one ends",
            code="TooManyLeases",
            status=409,
            cluster_id=doc.cluster_id,
            retry_after=max(1.0, (doc.leases[0].expires_at - now).total_seconds()),
        )
    seconds = _ttl(ttl, policy)
    lease = Lease(
        lease_id or new_lease_id(doc.cluster_id),
        holder,
        reason,
        issued_at=now,
        expires_at=now + timedelta(seconds=seconds),
    )
    leases = tuple(sorted((*doc.leases, lease), key=lambda item: item.expires_at))
    return replace(doc, leases=leases), lease


def _authorize(doc: LeaseDoc, lease: Lease, holder: Holder, *, manage_others: bool) -> None:
    if not manage_others and not lease.holder.same(holder):
        raise LeaseError(
            f"lease {lease.lease_id} belongs to {lease.holder.name}; only its holder (or a "
            "policy with update on the checkout path) may renew or check it in",
            code="LeaseNotYours",
            status=403,
            cluster_id=doc.cluster_id,
        )


def renew(
    doc: LeaseDoc,
    lease_id: str,
    holder: Holder,
    *,
    ttl: float | None,
    policy: CheckoutPolicy,
    now: datetime,
    manage_others: bool = False,
) -> tuple[LeaseDoc, Lease]:
    """Extend an open lease to ``now + ttl``, never past ``issued_at + max_ttl``."""
    doc = expire(doc, now)
    lease = doc.lease(lease_id)
    _authorize(doc, lease, holder, manage_others=manage_others)
    seconds = _ttl(ttl, policy)
    limit = lease.issued_at + timedelta(seconds=policy.max_ttl)
    wanted = now + timedelta(seconds=seconds)
    if wanted > limit:
        raise LeaseError(
            f"the lease may not outlive serve.checkout_max_ttl ({policy.max_ttl:g}s) from its "
            f"checkout: it can be renewed until {_time(limit)} at most",
            code="InvalidTtl",
            status=400,
            cluster_id=doc.cluster_id,
        )
    renewed = replace(lease, expires_at=wanted)
    leases = tuple(
        sorted(
            (renewed if item.lease_id == lease_id else item for item in doc.leases),
            key=lambda item: item.expires_at,
        )
    )
    return replace(doc, leases=leases), renewed


def _end(doc: LeaseDoc, ended: list[Lease], how: str, when: datetime) -> LeaseDoc:
    gone = {lease.lease_id for lease in ended}
    remaining = tuple(lease for lease in doc.leases if lease.lease_id not in gone)
    if remaining or not ended:
        return replace(doc, leases=remaining)
    # The last holder is gone: rotate so nobody who saw the password keeps access.
    due = max(when, doc.rotation_due) if doc.rotation_due else when
    return replace(
        doc,
        leases=(),
        rotation_due=due,
        ended=how,
        failures=0,
        last_error="",
        next_attempt_at=None,
    )


def checkin(
    doc: LeaseDoc, lease_id: str, holder: Holder, *, now: datetime, manage_others: bool = False
) -> LeaseDoc:
    """End a lease early; when it was the last one, a rotation is owed from ``now``."""
    doc = expire(doc, now)
    lease = doc.lease(lease_id)
    _authorize(doc, lease, holder, manage_others=manage_others)
    return _end(doc, [lease], "checked in", now)


def withdraw(doc: LeaseDoc, lease_id: str) -> LeaseDoc:
    """Drop a lease whose password was never handed out (the checkout was refused after the
    lease was written): nobody saw anything, so no rotation is owed."""
    return replace(doc, leases=tuple(x for x in doc.leases if x.lease_id != lease_id))


def expire(doc: LeaseDoc, now: datetime) -> LeaseDoc:
    """End every lease past its expiry; a rotation is owed from the last expiry."""
    gone = [lease for lease in doc.leases if lease.expired(now)]
    if not gone:
        return doc
    return _end(doc, gone, "expired", max(lease.expires_at for lease in gone))


def rotated(doc: LeaseDoc, *, not_before: datetime) -> LeaseDoc:
    """A rotation committed after ``not_before`` happened: it pays what is owed up to then."""
    if doc.rotation_due is None or doc.rotation_due > not_before:
        return doc
    return replace(
        doc, rotation_due=None, ended="", failures=0, last_error="", next_attempt_at=None
    )


def rotation_failed(doc: LeaseDoc, *, code: str, retry_at: datetime) -> LeaseDoc:
    """Record a failed lease-end rotation (``rotator leases`` shows it); retried at ``retry_at``."""
    if doc.rotation_due is None:
        return doc
    return replace(
        doc, failures=doc.failures + 1, last_error=code or "unknown", next_attempt_at=retry_at
    )
