"""Check-out leases as operations with a caller: authorization in Vault, state in Vault.

    service = LeaseService(store, client, read_password, policy)
    result = await service.checkout(token, "ehpc-hz-1", ttl=7200, reason="debug job 4711")
    result.password, result.lease.lease_id
    doc = await service.checkin(token, result.lease.lease_id)   # doc.rotation_due: rotate now
    owed = await service.reconcile()                           # expire; who owes a rotation

Authorization is the caller's own Vault token against the policy ``ehpc-vnc-checkout``:
``read`` on the cluster's marker path (``<mount>/data/ehpc/checkout/<ClusterId>``) lets a
person check it out and manage their own leases; ``update`` there lets them renew or check in
anyone's. The check comes before anything else is looked at, so a token without it learns
nothing (not even whether the cluster exists). The password is read with the caller's token
when its policies allow (Vault's audit log then names them), else with rotator's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from rotator.errors import VaultError, VaultPermissionError
from rotator.leases import model
from rotator.leases.model import CheckoutPolicy, Holder, Lease, LeaseDoc, LeaseError
from rotator.leases.vault import LeaseStore, capabilities, identify
from rotator.secret import Secret

__all__ = ["CheckoutResult", "LeaseService", "PasswordReader", "RotationProbe", "retry_delay"]

log = structlog.get_logger("rotator.leases")

PasswordReader = Callable[[str], Awaitable[Secret | None]]
"""Reads a cluster's current VNC password with rotator's own token (None: none stored yet)."""

RotationProbe = Callable[[str], Awaitable[bool]]
"""True while a rotation of the cluster is queued or in flight (a pending password exists)."""

_IN_FLIGHT_RETRY = 30.0
_MAY_CHECK_OUT = frozenset({"read", "update", "sudo", "root"})
_FIRST_RETRY = 30.0
_MAX_RETRY = 3600.0


def retry_delay(failures: int) -> float:
    """Seconds before a failed lease-end rotation is tried again: 30 s doubling, 1 h at most."""
    return float(min(_MAX_RETRY, _FIRST_RETRY * 2 ** max(0, failures - 1)))


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    lease: Lease
    cluster_id: str
    password: Secret
    mode: str

    def to_dict(self) -> dict[str, object]:
        """For the caller only (it holds the password): never log this."""
        return {
            "cluster_id": self.cluster_id,
            "password": self.password.reveal(),
            **lease_view(self.cluster_id, self.lease),
            "mode": self.mode,
        }


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def lease_view(cluster_id: str, lease: Lease) -> dict[str, object]:
    return {
        "lease_id": lease.lease_id,
        "cluster_id": cluster_id,
        "holder": lease.holder.name,
        "reason": lease.reason,
        "issued_at": _time(lease.issued_at),
        "expires_at": _time(lease.expires_at),
    }


def doc_view(doc: LeaseDoc) -> list[dict[str, object]]:
    """Rows for ``rotator leases``: every open lease, and a row for an owed rotation."""
    rows: list[dict[str, object]] = [
        {**lease_view(doc.cluster_id, lease), "state": model.LeaseState.OPEN.value}
        for lease in doc.leases
    ]
    if doc.rotation_due is not None and doc.state is not None:
        row: dict[str, object] = {
            "cluster_id": doc.cluster_id,
            "state": doc.state.value,
            "ended": doc.ended,
            "ended_at": _time(doc.rotation_due),
            "failures": doc.failures,
        }
        if doc.last_error:
            row["last_error"] = doc.last_error
        if doc.next_attempt_at is not None:
            row["next_attempt_at"] = _time(doc.next_attempt_at)
        rows.append(row)
    return rows


class LeaseService:
    def __init__(
        self,
        store: LeaseStore,
        read_password: PasswordReader,
        policy: CheckoutPolicy,
        *,
        now: Callable[[], datetime] = _utcnow,
        backoff: Callable[[int], float] = retry_delay,
    ) -> None:
        self.backoff = backoff
        """Seconds before the n-th retry of a failed lease-end rotation (a seam for tests)."""
        self.store = store
        self.client = store.client
        self.read_password = read_password
        self.policy = policy
        self.now = now
        self.rotating: RotationProbe | None = None
        """Is a rotation of this cluster queued or in flight? (the daemon sets it)"""

    # -- authorization ----------------------------------------------------------------------

    async def _authorize(self, token: Secret, cluster_id: str) -> tuple[Holder, frozenset[str]]:
        """The caller and their capabilities on the cluster's marker; 403 without ``read``."""
        marker = self.store.marker(cluster_id)
        caps = (await capabilities(self.client, token, [marker]))[marker]
        if not caps & _MAY_CHECK_OUT:
            raise LeaseError(
                f"this token may not check out {cluster_id}: it needs the ehpc-vnc-checkout "
                f"policy (read on {marker})",
                code="CheckoutDenied",
                status=403,
            )
        return await identify(self.client, token), caps

    @staticmethod
    def _manages_others(caps: frozenset[str]) -> bool:
        return bool(caps & {"update", "sudo", "root"})

    # -- operations -------------------------------------------------------------------------

    async def checkout(
        self, token: Secret, cluster_id: str, *, ttl: float | None, reason: str
    ) -> CheckoutResult:
        holder, _caps = await self._authorize(token, model.valid_cluster_id(cluster_id))
        if await self.read_password(cluster_id) is None:
            raise LeaseError(
                f"no VNC password is stored for {cluster_id} yet (it was never rotated)",
                code="NoPassword",
                status=404,
                cluster_id=cluster_id,
            )
        if self.rotating is not None:
            # A lease-end debt answers first (RotationPending, with its own retry time).
            model.refuse_while_owed(await self.store.read(cluster_id), self.now())
        if self.rotating is not None and await self.rotating(cluster_id):
            # The password read now is about to be replaced: hand out the new one instead.
            raise _rotation_in_progress(cluster_id)
        now = self.now()
        _doc, lease = await self.store.update(
            cluster_id,
            lambda doc: model.checkout(
                doc, holder, ttl=ttl, reason=reason, policy=self.policy, now=now
            ),
        )
        password = await self._password(token, cluster_id)
        if self.rotating is not None and await self.rotating(cluster_id):
            # A rotation (another replica's) staged between the first check and the read, before
            # it could see our lease: what we read may be replaced. Nobody saw it; withdraw.
            await self.store.update(
                cluster_id, lambda doc: (model.withdraw(doc, lease.lease_id), None)
            )
            raise _rotation_in_progress(cluster_id)
        log.info(
            "lease_checked_out",
            cluster_id=cluster_id,
            lease_id=lease.lease_id,
            holder=holder.name,
            expires_at=_time(lease.expires_at),
        )
        return CheckoutResult(lease, cluster_id, password, self.policy.mode)

    async def _password(self, token: Secret, cluster_id: str) -> Secret:
        """With the caller's token when it may read the secret (the audit log names them)."""
        path = self.store.vnc_data_path(cluster_id)
        caps = (await capabilities(self.client, token, [path]))[path]
        if "read" in caps:
            try:
                body = await self.client.request_as(token, "GET", path)
                value = (((body or {}).get("data") or {}).get("data") or {}).get("password")
                if isinstance(value, str) and value:
                    return Secret(value)
            except VaultPermissionError:
                pass  # capabilities said yes, the read said no (a policy race): use ours
        password = await self.read_password(cluster_id)
        if password is None:  # pragma: no cover - checked before the lease was written
            raise VaultError(f"the VNC password of {cluster_id} vanished", code="NoPassword")
        return password

    async def renew(self, token: Secret, lease_id: str, *, ttl: float | None) -> Lease:
        cluster_id = model.cluster_of(lease_id)
        holder, caps = await self._authorize(token, cluster_id)
        now = self.now()
        _doc, lease = await self.store.update(
            cluster_id,
            lambda doc: model.renew(
                doc,
                lease_id,
                holder,
                ttl=ttl,
                policy=self.policy,
                now=now,
                manage_others=self._manages_others(caps),
            ),
        )
        log.info("lease_renewed", cluster_id=cluster_id, lease_id=lease_id, holder=holder.name)
        return lease

    async def checkin(self, token: Secret, lease_id: str) -> LeaseDoc:
        cluster_id = model.cluster_of(lease_id)
        holder, caps = await self._authorize(token, cluster_id)
        now = self.now()
        doc, _ = await self.store.update(
            cluster_id,
            lambda doc: (
                model.checkin(
                    doc, lease_id, holder, now=now, manage_others=self._manages_others(caps)
                ),
                None,
            ),
        )
        log.info(
            "lease_checked_in",
            cluster_id=cluster_id,
            lease_id=lease_id,
            holder=holder.name,
            rotate=doc.rotation_due is not None,
        )
        return doc

    async def visible(self, token: Secret) -> list[dict[str, object]]:
        """Rows for the clusters this caller may check out."""
        # The caller first: a token Vault refuses costs one call, not a read of every lease.
        await identify(self.client, token)
        clusters = await self.store.list_clusters()
        markers = {self.store.marker(c): c for c in clusters}
        caps = await capabilities(self.client, token, list(markers))
        allowed = [c for m, c in markers.items() if caps.get(m, frozenset()) & _MAY_CHECK_OUT]
        rows: list[dict[str, object]] = []
        for cluster_id in allowed:  # only the documents this caller may see are read
            rows.extend(doc_view(await self.store.read(cluster_id)))
        return rows

    # -- rotator's side ---------------------------------------------------------------------

    async def all_docs(self) -> list[LeaseDoc]:
        return [await self.store.read(c) for c in await self.store.list_clusters()]

    async def reconcile(self, cluster_ids: list[str] | None = None) -> list[LeaseDoc]:
        """End expired leases (CAS: one writer wins); every doc, with what it owes."""
        now = self.now()
        docs: list[LeaseDoc] = []
        for cluster_id in (
            cluster_ids if cluster_ids is not None else await self.store.list_clusters()
        ):
            doc, _ = await self.store.update(cluster_id, lambda d: (model.expire(d, now), None))
            docs.append(doc)
        return docs

    async def mark_rotated(self, cluster_id: str, *, not_before: datetime) -> LeaseDoc:
        doc, _ = await self.store.update(
            cluster_id, lambda d: (model.rotated(d, not_before=not_before), None)
        )
        if doc.rotation_due is None:
            log.info("lease_end_rotated", cluster_id=cluster_id)
        return doc

    async def mark_failed(self, cluster_id: str, *, code: str) -> LeaseDoc:
        now = self.now()

        def change(doc: LeaseDoc) -> tuple[LeaseDoc, None]:
            delay = self.backoff(doc.failures + 1)
            return model.rotation_failed(
                doc, code=code, retry_at=now + timedelta(seconds=delay)
            ), None

        doc, _ = await self.store.update(cluster_id, change)
        log.warning(
            "lease_end_rotation_failed",
            cluster_id=cluster_id,
            code=code,
            failures=doc.failures,
            next_attempt_at=_time(doc.next_attempt_at) if doc.next_attempt_at else None,
        )
        return doc


def _rotation_in_progress(cluster_id: str) -> LeaseError:
    return LeaseError(
        f"{cluster_id}'s password is being rotated right now; retry after the rotation",
        code="RotationInProgress",
        status=409,
        cluster_id=cluster_id,
        retry_after=_IN_FLIGHT_RETRY,
    )
