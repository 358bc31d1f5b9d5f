"""An in-memory :class:`~rotator.engine.ports.RotationStore` with the semantics of KV version 2.

    store = MemoryStore(now=clock.now)
    store.put_root(RootCredential("c-1", "root", Secret("root-pw"), "cn-hangzhou"))
    store.put_vnc("c-1", Secret("init00"), staged_at=..., rotated_at=...)
    store.unavailable = True        # every call raises VaultUnavailableError until reset

Two records per cluster, as :class:`~rotator.vault.store.VaultStore` keeps them: the committed
record and the pending record. Each keeps every version; a write names the version it builds on
(check-and-set: 0 = the record must not exist) and loses with :class:`VaultConflictError`
otherwise. Every call yields to the event loop first, so concurrent rotations interleave at
each Vault call as they do against a real server. Used by the model checker and engine units;
integration tests use the real OpenBao.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from rotator.engine.model import PendingState, RootCredential, VncState
from rotator.errors import VaultConflictError, VaultError, VaultUnavailableError
from rotator.secret import Secret

__all__ = ["MemoryStore", "Record"]


@dataclass(slots=True)
class Record:
    """One KV path: every version's data (index 0 = version 1) and the custom metadata."""

    versions: list[dict[str, object]] = field(default_factory=list)
    custom_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return len(self.versions)

    @property
    def data(self) -> dict[str, object] | None:
        return self.versions[-1] if self.versions else None

    def write(self, data: dict[str, object], cas: int, what: str) -> int:
        if cas != self.version:
            raise VaultConflictError(f"check-and-set on {what}: version {self.version}, not {cas}")
        self.versions.append(dict(data))
        return self.version


@dataclass(slots=True)
class MemoryStore:
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    roots: dict[str, RootCredential] = field(default_factory=dict)
    vnc: dict[str, Record] = field(default_factory=dict)
    pending: dict[str, Record] = field(default_factory=dict)
    unavailable: bool = False
    """While True every call fails as a sealed or unreachable Vault does."""
    calls: list[str] = field(default_factory=list)
    """The name of every call, in order (the request count of the happy path)."""
    takeovers: int = 0
    """Stages over a rival's in-flight pending password whose claim had expired."""

    # -- set-up helpers (not part of the port) ----------------------------------------------

    def put_root(self, root: RootCredential) -> None:
        self.roots[root.cluster_id] = root

    def put_vnc(
        self, cluster_id: str, password: Secret, *, staged_at: datetime, rotated_at: datetime
    ) -> None:
        record = self.vnc.setdefault(cluster_id, Record())
        record.versions.append(
            {"password": password, "staged_at": staged_at, "rotated_at": rotated_at}
        )

    def current(self, cluster_id: str) -> Secret | None:
        data = self._vnc(cluster_id).data or {}
        value = data.get("password")
        return value if isinstance(value, Secret) else None

    def pending_password(self, cluster_id: str) -> Secret | None:
        data = self._pending(cluster_id).data or {}
        value = data.get("password")
        return value if isinstance(value, Secret) else None

    # -- the port ---------------------------------------------------------------------------

    async def _enter(self, name: str) -> None:
        await asyncio.sleep(0)  # another rotation may run between our read and our write
        self.calls.append(name)
        if self.unavailable:
            raise VaultUnavailableError(f"{name}: Vault is sealed")

    def _vnc(self, cluster_id: str) -> Record:
        return self.vnc.setdefault(cluster_id, Record())

    def _pending(self, cluster_id: str) -> Record:
        return self.pending.setdefault(cluster_id, Record())

    async def read_root(self, cluster_id: str) -> RootCredential:
        await self._enter("read_root")
        root = self.roots.get(cluster_id)
        if root is None:
            raise VaultError(f"no root credential for {cluster_id}", code="RootCredentialMissing")
        return root

    async def read_vnc(self, cluster_id: str, *, pending: bool = True) -> VncState:
        await self._enter("read_vnc")
        record = self._vnc(cluster_id)
        data = record.data or {}
        state = VncState(
            cluster_id=cluster_id,
            version=record.version,
            password=_secret(data.get("password")),
            region=_str(data.get("region")),
            rotated_at=_time(data.get("rotated_at")),
            staged_at=_time(data.get("staged_at")),
            request_id=_str(data.get("request_id")),
            next_rotation_at=_time(data.get("next_rotation_at")),
            custom_metadata=dict(record.custom_metadata),
            pending_version=_int(data.get("pending_version")),
        )
        if pending:
            await self._enter("read_pending")
            found = self._read_pending(cluster_id)
            state = replace(state, pending=found, pending_version=found.version if found else 0)
        return state

    async def read_pending(self, cluster_id: str) -> PendingState | None:
        await self._enter("read_pending")
        return self._read_pending(cluster_id)

    def _read_pending(self, cluster_id: str) -> PendingState | None:
        record = self._pending(cluster_id)
        data = record.data
        if data is None:
            return None
        return PendingState(
            cluster_id=cluster_id,
            version=record.version,
            password=_secret(data.get("password")),
            staged_at=_time(data.get("staged_at")),
            claim_owner=_str(data.get("claim_owner")),
            claim_until=_time(data.get("claim_until")),
            region=_str(data.get("region")),
        )

    def _write_pending(self, state: VncState, data: dict[str, object]) -> VncState:
        cas = state.pending.version if state.pending is not None else state.pending_version
        record = self._pending(state.cluster_id)
        before = self._read_pending(state.cluster_id)
        version = record.write(data, cas, f"pending/{state.cluster_id}")
        committed = self.current(state.cluster_id)
        owner = data.get("claim_owner")
        if (
            before is not None
            and before.password is not None
            and before.password != committed
            and before.claim_owner not in (None, owner)
            and before.claim_until is not None
            and before.claim_until <= self.now()
        ):
            self.takeovers += 1
        return replace(state, pending=self._read_pending(state.cluster_id), pending_version=version)

    async def stage(
        self,
        state: VncState,
        pending: Secret,
        *,
        staged_at: datetime,
        region: str | None,
        owner: str | None = None,
        claim_until: datetime | None = None,
    ) -> VncState:
        await self._enter("stage")
        data: dict[str, object] = {"password": pending, "staged_at": staged_at, "region": region}
        if owner:
            data["claim_owner"] = owner
        if claim_until is not None:
            data["claim_until"] = claim_until
        return self._write_pending(state, data)

    async def commit(
        self,
        state: VncState,
        *,
        request_id: str,
        rotated_at: datetime,
        region: str | None,
        next_rotation_at: datetime | None = None,
    ) -> VncState:
        await self._enter("commit")
        pending = state.pending
        if pending is None or pending.password is None:
            raise VaultError("nothing to commit", code="NothingPending")
        data: dict[str, object] = {
            "password": pending.password,
            "staged_at": pending.staged_at,
            "rotated_at": rotated_at,
            "request_id": request_id,
            "next_rotation_at": next_rotation_at,
            "region": region,
            "pending_version": pending.version,
        }
        version = self._vnc(state.cluster_id).write(data, state.version, f"vnc/{state.cluster_id}")
        return replace(
            state,
            version=version,
            password=pending.password,
            staged_at=pending.staged_at,
            rotated_at=rotated_at,
            request_id=request_id,
            next_rotation_at=next_rotation_at,
            pending_version=pending.version,
            # As KV v2 answers a write: with the secret's current custom metadata.
            custom_metadata=dict(self._vnc(state.cluster_id).custom_metadata),
        )

    async def clear_pending(self, state: VncState) -> VncState:
        pending = state.pending
        if pending is None or (pending.password is None and pending.claim_owner is None):
            return state
        await self._enter("clear_pending")
        return self._write_pending(state, {})

    async def release(self, state: VncState) -> VncState:
        pending = state.pending
        if pending is None or pending.password is None:
            return state
        await self._enter("release")
        data: dict[str, object] = {"password": pending.password, "staged_at": pending.staged_at}
        return self._write_pending(state, data)

    async def update_status(
        self,
        cluster_id: str,
        *,
        status: str,
        last_rotated_at: str | None = None,
        next_rotation_at: str | None = None,
        last_error_code: str | None = None,
        last_request_id: str | None = None,
        attempts: int | str | None = None,
    ) -> None:
        await self._enter("update_status")
        given = {
            "status": status,
            "last_rotated_at": last_rotated_at,
            "next_rotation_at": next_rotation_at,
            "last_error_code": last_error_code,
            "last_request_id": last_request_id,
            "attempts": None if attempts is None else str(attempts),
        }
        meta = self._vnc(cluster_id).custom_metadata
        for key, value in given.items():
            if value is None:
                continue
            if value == "":
                meta.pop(key, None)
            else:
                meta[key] = value


def _secret(value: object) -> Secret | None:
    return value if isinstance(value, Secret) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
