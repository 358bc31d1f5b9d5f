"""The Vault layout rotator reads and writes (KV version 2; every path configurable).

    store = VaultStore(VaultClient(settings))
    root = await store.read_root("ehpc-hz-123")          # secret/ehpc/root/<id>, read-only input
    state = await store.read_vnc("ehpc-hz-123")          # secret/ehpc/vnc/<id> (+ pending)
    state = await store.stage(state, new, staged_at=now, region="cn-hangzhou", owner=run_id,
                              claim_until=now + ttl)     # secret/ehpc/pending/<id>, CAS
    state = await store.commit(state, request_id=rid, rotated_at=now, region="cn-hangzhou")

``<kv_mount>/<vnc_path>/<ClusterId>`` holds what the cluster really had: ``password``,
``cluster_id``, ``region``, ``staged_at`` (when that password was generated), ``rotated_at``
(when it was committed), ``next_rotation_at`` (when it falls due), ``request_id`` and
``pending_version``. One version per rotation, so the KV versions are the password history;
readers see nothing else.

``<kv_mount>/<pending_path>/<ClusterId>`` (private to rotator) holds the rotation in flight:
``password``, ``staged_at``, ``region`` and the claim (``claim_owner``, ``claim_until``). It is
never deleted: a commit records the pending version it made current (``pending_version``), so
afterwards the pending record equals the current password and is recognised as committed; the
next rotation overwrites it with check-and-set on that version, which also proves nobody staged
in between. The real password is always ``vnc.password`` or ``pending.password``.

Every write is a check-and-set on the version that was read, so two writers can never both win.
Secrets written by older versions kept ``pending_password`` inside the vnc record; they are moved
to the pending record on first touch.

Custom metadata on the vnc secret carries the status of a rotation that did not end well:
``status`` (``failed``, ``pending``, ``skipped``), ``last_error_code``, ``last_request_id``,
``attempts``; and ``rotation_period`` (set by people to override the period of one cluster). A
commit writes no metadata (the times are in the data, read in the same request), so a rotation
costs four Vault requests: the root credential, the vnc record, the stage, the commit. The next
successful commit after a failure sets ``status`` back to ``rotated`` and removes the error keys.
:attr:`VncState.status_view` (and :meth:`VaultStore.list_vnc_metadata`) merge both for readers.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from rotator.config import parse_duration
from rotator.engine.model import (
    PendingState,
    RootCredential,
    VncState,
    format_time,
    parse_time,
)
from rotator.errors import ConfigError, VaultError, VaultPermissionError, VaultUnavailableError
from rotator.secret import Secret
from rotator.vault.client import JsonDict, VaultClient, VaultNotFoundError
from rotator.vault.settings import VaultSettings

__all__ = ["RootCredential", "VaultStore", "VncState", "format_time", "parse_time"]

log = structlog.get_logger("rotator.vault")

# Re-reads when the secret is created between the data read and the metadata read.
_READ_RACE_RETRIES = 3

_SEGMENT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # "$" allows a trailing "\n"

# A run id as ``new_run_id`` makes it (``20261129T021500Z-3f9a1c``): the only keys pruning
# counts or deletes, since the runs path may be shared with other teams' keys.
_RUN_ID = re.compile(r"\A\d{8}T\d{6}Z-[0-9a-f]{1,32}\Z")

_OWNED_KEYS = frozenset(
    {
        "password",
        "cluster_id",
        "region",
        "rotated_at",
        "staged_at",
        "request_id",
        "next_rotation_at",
        "pending_version",
        # The old layout's in-flight keys, moved to the pending record on first touch.
        "pending_password",
        "pending_since",
        "claim_owner",
        "claim_until",
    }
)
"""Data keys rotator manages; any other key a person adds is carried over on every write."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _secret(value: object) -> Secret | None:
    return Secret(value) if isinstance(value, str) and value else None


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0


def _period(custom: Mapping[str, str]) -> float | None:
    """A person may set ``rotation_period`` (e.g. ``7d``) in the secret's custom metadata."""
    text = custom.get("rotation_period")
    if not text:
        return None
    try:
        return parse_duration(text, key="rotation_period")
    except ConfigError:
        log.warning("ignored_rotation_period", value=text)
        return None


def _legacy_fields(cluster_id: str, data: Mapping[str, Any]) -> dict[str, object]:
    """An old-layout vnc record's password in flight (and claim), as pending-record data."""
    moved: dict[str, object] = {"cluster_id": cluster_id}
    if password := _secret(data.get("pending_password")):
        moved["password"] = password.reveal()
        # Of unknown age, it counts as older than any trigger: the old layout let readers see
        # it, so it must never satisfy one (issue 9, finding 4).
        staged = parse_time(data.get("pending_since")) or _UNKNOWN_AGE
        moved["staged_at"] = format_time(staged)
    for key in ("claim_owner", "claim_until", "region"):
        if _text(data.get(key)):
            moved[key] = data[key]
    return moved


class VaultStore:
    """rotator's records in Vault. All methods are coroutines; errors are :class:`VaultError`."""

    def __init__(self, client: VaultClient) -> None:
        self.client = client
        self.settings: VaultSettings = client.settings

    # -- paths ------------------------------------------------------------------------------

    @staticmethod
    def _segment(value: str, what: str) -> str:
        if not _SEGMENT.match(value):
            # A VaultError (terminal), so the engine parks this one cluster and goes on.
            raise VaultError(
                f"{value!r} is not a valid {what} (letters, digits, '.', '_', '-'; "
                "at most 128 characters)",
                code="InvalidPathSegment",
            )
        return value

    def root_path(self, cluster_id: str) -> str:
        return f"{self.settings.root_path}/{self._segment(cluster_id, 'cluster id')}"

    def vnc_path(self, cluster_id: str) -> str:
        return f"{self.settings.vnc_path}/{self._segment(cluster_id, 'cluster id')}"

    def pending_path(self, cluster_id: str) -> str:
        return f"{self.settings.pending_path}/{self._segment(cluster_id, 'cluster id')}"

    def runs_path(self, run_id: str) -> str:
        return f"{self.settings.runs_path}/{self._segment(run_id, 'run id')}"

    def cli_path(self, cluster_id: str) -> str:
        """What a person types: ``bao kv get -field=password <this>``."""
        return f"{self.settings.kv_mount}/{self.vnc_path(cluster_id)}"

    # -- root credentials (input, read-only) ------------------------------------------------

    async def read_root(self, cluster_id: str) -> RootCredential:
        mount, path = self.settings.kv_mount, self.root_path(cluster_id)
        entry = await self.client.kv_read(mount, path)
        data = (entry or {}).get("data")
        if not data:
            raise VaultError(
                f"no root credential at {mount}/{path}: store it with "
                f"`bao kv put {mount}/{path} user=root password=<root password> region=<region>`",
                code="RootCredentialMissing",
                cluster_id=cluster_id,
            )
        password = _secret(data.get("password"))
        if password is None:
            raise VaultError(
                f"the root credential at {mount}/{path} has no 'password' field",
                code="RootCredentialInvalid",
                cluster_id=cluster_id,
            )
        return RootCredential(
            cluster_id=cluster_id,
            user=_text(data.get("user")) or "root",
            password=password,
            region=_text(data.get("region")),
            vnc_host=_text(data.get("vnc_host")),
        )

    async def write_root(
        self, cluster_id: str, user: str, password: Secret, region: str | None
    ) -> None:
        """Store a root credential (for the demo and for tests; the rotator never does this)."""
        data: dict[str, object] = {"user": user, "password": password.reveal()}
        if region:
            data["region"] = region
        await self.client.kv_write(self.settings.kv_mount, self.root_path(cluster_id), data)

    async def list_root_clusters(self) -> list[str]:
        """Cluster ids that have a root credential (the default inventory)."""
        keys = await self.client.kv_list(self.settings.kv_mount, self.settings.root_path)
        return sorted(k for k in keys if not k.endswith("/"))

    # -- VNC secret (output) and the pending record (private) -------------------------------

    async def read_vnc(
        self, cluster_id: str, *, pending: bool = True, migrate: bool = True
    ) -> VncState:
        """The committed record with its custom metadata and, unless ``pending`` is False, the
        pending record too (a second read). The engine's happy path reads only the first: its
        check-and-set stage finds out whether anything is in flight.

        An old-layout password in flight (in the vnc record) is moved to the pending record;
        with ``migrate=False`` (``plan``, which changes nothing) it is only shown as pending.
        """
        mount, path = self.settings.kv_mount, self.vnc_path(cluster_id)
        entry = await self.client.kv_read(mount, path)
        if entry is None and pending:
            entry = await self._metadata_only(cluster_id)
        if entry is None:
            state = VncState(cluster_id=cluster_id)
        else:
            state = self._state(cluster_id, entry.get("data") or {}, entry.get("metadata") or {})
        data = (entry or {}).get("data") or {}
        legacy: PendingState | None = None
        if data.get("pending_password") or data.get("claim_owner"):
            if migrate:
                state = await self._migrate(state, data)
            else:
                legacy = self._pending(cluster_id, 0, _legacy_fields(cluster_id, data))
        if pending:
            state = state.with_pending(await self.read_pending(cluster_id))
        if legacy is not None and state.in_flight is None:
            state = replace(state, pending=legacy)
        return state

    async def _metadata_only(self, cluster_id: str) -> JsonDict | None:
        """A cluster that never had a password may still have status metadata (a failure before
        its first rotation); people read it with ``rotator status``."""
        mount, path = self.settings.kv_mount, self.vnc_path(cluster_id)
        for _ in range(_READ_RACE_RETRIES):
            metadata = await self.client.kv_metadata(mount, path)
            if metadata is None:
                return None
            if int(metadata.get("current_version") or 0) == 0:
                return {
                    "data": {},
                    "metadata": {"version": 0, "custom_metadata": metadata.get("custom_metadata")},
                }
            # A rival created the first version between our two reads: read it.
            entry = await self.client.kv_read(mount, path)
            if entry is not None:
                return entry
        raise VaultUnavailableError(
            f"{mount}/{path} kept changing while it was read; try again", cluster_id=cluster_id
        )

    async def read_pending(self, cluster_id: str) -> PendingState | None:
        """The pending record, or None when there never was one."""
        entry = await self.client.kv_read(self.settings.kv_mount, self.pending_path(cluster_id))
        if entry is None:
            return None
        data: Mapping[str, Any] = entry.get("data") or {}
        version = int((entry.get("metadata") or {}).get("version") or 0)
        return self._pending(cluster_id, version, data)

    @staticmethod
    def _pending(cluster_id: str, version: int, data: Mapping[str, Any]) -> PendingState:
        return PendingState(
            cluster_id=cluster_id,
            version=version,
            password=_secret(data.get("password")),
            staged_at=parse_time(data.get("staged_at")),
            claim_owner=_text(data.get("claim_owner")),
            claim_until=parse_time(data.get("claim_until")),
            region=_text(data.get("region")),
        )

    @staticmethod
    def _state(cluster_id: str, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> VncState:
        custom = {str(k): str(v) for k, v in (metadata.get("custom_metadata") or {}).items()}
        return VncState(
            cluster_id=cluster_id,
            version=int(metadata.get("version") or 0),
            password=_secret(data.get("password")),
            region=_text(data.get("region")),
            rotated_at=parse_time(data.get("rotated_at")),
            staged_at=parse_time(data.get("staged_at")),
            request_id=_text(data.get("request_id")),
            next_rotation_at=parse_time(data.get("next_rotation_at")),
            custom_metadata=custom,
            period_override=_period(custom),
            pending_version=_int(data.get("pending_version")),
            extra={k: v for k, v in data.items() if k not in _OWNED_KEYS},
        )

    async def _migrate(self, state: VncState, data: Mapping[str, Any]) -> VncState:
        """Move an old-layout ``pending_password`` (and its claim) to the pending record, then
        drop it from the vnc record. Both writes are check-and-set; a pending record already in
        flight with another password is never overwritten (the cluster may have either)."""
        cluster_id = state.cluster_id
        pending_path = self.pending_path(cluster_id)
        moved = _legacy_fields(cluster_id, data)
        legacy = _secret(data.get("pending_password"))
        existing = await self.read_pending(cluster_id)
        if existing is not None and existing.password not in (None, state.password, legacy):
            # Two different passwords in flight: only a mix of rotator versions can do this.
            # Keep both and let a person decide which one the cluster has.
            raise VaultError(
                f"{self.cli_path(cluster_id)} has an old-layout pending_password and "
                f"{self.settings.kv_mount}/{pending_path} holds another one; check which one "
                "the cluster has, keep it in one place and delete the other",
                code="PendingMigrationConflict",
                cluster_id=cluster_id,
            )
        if existing is None or existing.password != legacy or legacy is None:
            cas = existing.version if existing is not None else 0
            await self.client.kv_write(self.settings.kv_mount, pending_path, moved, cas=cas)
        log.info("migrated_pending_password", cluster_id=cluster_id)
        migrated = await self._write_vnc(state, self._current(state, None))
        return replace(migrated, pending_version=0)

    @staticmethod
    def _current(state: VncState, region: str | None) -> dict[str, object]:
        """The committed fields of ``state`` (what survives a write), as KV data."""
        data: dict[str, object] = dict(state.extra)
        data["cluster_id"] = state.cluster_id
        if state.password is not None:
            data["password"] = state.password.reveal()
        if region or state.region:
            data["region"] = region or state.region
        if state.rotated_at is not None:
            data["rotated_at"] = format_time(state.rotated_at)
        if state.staged_at is not None:
            data["staged_at"] = format_time(state.staged_at)
        if state.request_id:
            data["request_id"] = state.request_id
        if state.next_rotation_at is not None:
            data["next_rotation_at"] = format_time(state.next_rotation_at)
        if state.pending_version:
            data["pending_version"] = state.pending_version
        return data

    async def _write_vnc(self, state: VncState, data: dict[str, object]) -> VncState:
        metadata = await self.client.kv_write(
            self.settings.kv_mount, self.vnc_path(state.cluster_id), data, cas=state.version
        )
        # KV v2 answers a write with the secret's current custom metadata: fresher than what
        # was read (and known even when the read found no version, e.g. a first commit after
        # a failure's status), so the engine knows for free whether the status needs a write.
        custom = metadata.get("custom_metadata", state.custom_metadata)
        written = {**metadata, "custom_metadata": custom if isinstance(custom, dict) else {}}
        return replace(
            self._state(state.cluster_id, data, written),
            pending=state.pending,
            pending_version=_int(data.get("pending_version")) or state.pending_version,
        )

    async def _write_pending(self, state: VncState, data: dict[str, object]) -> VncState:
        """CAS on the pending record read (or, unread, on the version the last commit took)."""
        cas = state.pending.version if state.pending is not None else state.pending_version
        metadata = await self.client.kv_write(
            self.settings.kv_mount, self.pending_path(state.cluster_id), data, cas=cas
        )
        version = int(metadata.get("version") or 0)
        return replace(state, pending=self._pending(state.cluster_id, version, data))

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
        """Write ``pending`` to the pending record under a claim (CAS). Raises
        :class:`VaultConflictError` when somebody staged since ``state`` was read."""
        data: dict[str, object] = {
            "cluster_id": state.cluster_id,
            "password": pending.reveal(),
            "staged_at": format_time(staged_at),
        }
        if region or state.region:
            data["region"] = region or state.region
        if owner:
            data["claim_owner"] = owner
        if claim_until is not None:
            data["claim_until"] = format_time(claim_until)
        return await self._write_pending(state, data)

    async def stage_pending(
        self,
        state: VncState,
        pending: Secret,
        *,
        region: str | None,
        owner: str | None = None,
        claim_until: datetime | None = None,
    ) -> VncState:
        """:meth:`stage`, keeping ``staged_at`` when re-staging the password already pending."""
        current = state.in_flight
        same = current is not None and current.password == pending
        staged_at = (current.staged_at if same and current else None) or _now()
        return await self.stage(
            state, pending, staged_at=staged_at, region=region, owner=owner, claim_until=claim_until
        )

    async def commit(
        self,
        state: VncState,
        *,
        request_id: str,
        rotated_at: datetime,
        region: str | None,
        next_rotation_at: datetime | None = None,
    ) -> VncState:
        """Make the pending password current: one new version of the vnc record (CAS), which
        also records when it falls due. The pending record is left as it is;
        ``pending_version`` marks it committed. No metadata is written (see the module doc)."""
        pending = state.pending
        if pending is None or pending.password is None:
            raise VaultError(
                f"nothing to commit at {self.cli_path(state.cluster_id)}: no pending password",
                code="NothingPending",
                cluster_id=state.cluster_id,
            )
        committed = replace(
            state,
            password=pending.password,
            staged_at=pending.staged_at,
            rotated_at=rotated_at,
            request_id=request_id,
            next_rotation_at=next_rotation_at,
            pending_version=pending.version,
        )
        return await self._write_vnc(committed, self._current(committed, region))

    async def clear_pending(self, state: VncState) -> VncState:
        """Drop the pending password and claim (CAS on the pending version in ``state``): the
        record stays, empty, so the next stage is again a check-and-set on it."""
        pending = state.pending
        if pending is None or (pending.password is None and pending.claim_owner is None):
            return state
        return await self._write_pending(state, {"cluster_id": state.cluster_id})

    async def release(self, state: VncState) -> VncState:
        """Keep the pending password but end the claim (CAS), so the next run need not wait."""
        pending = state.pending
        if pending is None or pending.password is None:
            return state
        data: dict[str, object] = {
            "cluster_id": state.cluster_id,
            "password": pending.password.reveal(),
            "staged_at": format_time(pending.staged_at or _now()),
        }
        if pending.region or state.region:
            data["region"] = pending.region or state.region
        return await self._write_pending(state, data)

    async def update_status(
        self,
        cluster_id: str,
        *,
        status: str,
        last_rotated_at: str | datetime | None = None,
        next_rotation_at: str | datetime | None = None,
        last_error_code: str | None = None,
        last_request_id: str | None = None,
        attempts: int | str | None = None,
    ) -> None:
        """Merge status keys into the custom metadata. None leaves a key, ``""`` removes it."""
        given: dict[str, str | datetime | int | None] = {
            "status": status,
            "last_rotated_at": last_rotated_at,
            "next_rotation_at": next_rotation_at,
            "last_error_code": last_error_code,
            "last_request_id": last_request_id,
            "attempts": attempts,
        }
        values: dict[str, str | None] = {}
        for key, value in given.items():
            if value is None:
                continue
            text = format_time(value) if isinstance(value, datetime) else str(value)
            values[key] = text or None
        await self.client.kv_patch_custom_metadata(
            self.settings.kv_mount, self.vnc_path(cluster_id), values
        )

    async def list_vnc_metadata(self, *, in_flight: bool = False) -> dict[str, dict[str, str]]:
        """The status of every VNC secret, by cluster id (``rotator status``, the daemon's
        schedule): :attr:`VncState.status_view`, from one data read per secret (it returns the
        custom metadata too); a metadata read only for a secret with no version yet.

        With ``in_flight``, also one LIST of the pending records and a read of each: a cluster
        whose pending password is not the committed one (a run killed after it staged, maybe
        after the API applied it) has status ``pending``, whatever its metadata says.
        """
        mount, base = self.settings.kv_mount, self.settings.vnc_path
        ids = {k for k in await self.client.kv_list(mount, base) if not k.endswith("/")}
        staged: set[str] = set()
        if in_flight:
            try:
                listed = await self.client.kv_list(mount, self.settings.pending_path)
            except VaultPermissionError as exc:
                # A policy from before this scan (vault-setup not rerun since the upgrade): the
                # status still loads, without the passwords in flight.
                log.warning("pending_scan_denied", detail=exc.message, fix="rerun vault-setup")
                listed = []
            staged = {k for k in listed if not k.endswith("/")}
        limit = asyncio.Semaphore(self.settings.max_workers)

        async def one(cluster_id: str) -> tuple[str, dict[str, str]] | None:
            entry: JsonDict = {}
            async with limit:
                if cluster_id in ids:
                    entry = (
                        await self.client.kv_read(mount, f"{base}/{cluster_id}")
                        or await self._metadata_only(cluster_id)
                        or {}
                    )
                state = self._state(
                    cluster_id, entry.get("data") or {}, entry.get("metadata") or {}
                )
                if cluster_id in staged:
                    state = state.with_pending(await self.read_pending(cluster_id))
            view = state.status_view
            if (pending := state.in_flight) is not None:
                view["status"] = "pending"
                if pending.staged_at is not None:
                    view["pending_since"] = format_time(pending.staged_at)
            elif cluster_id not in ids:
                return None  # an emptied pending record of a cluster never committed
            return cluster_id, view

        found = await asyncio.gather(*(one(i) for i in sorted(ids | staged)))
        return dict(item for item in found if item is not None)

    # -- run reports ------------------------------------------------------------------------

    async def write_run_report(self, run_id: str, report: Mapping[str, object]) -> None:
        """Store a run's per-cluster outcomes. Refuses anything holding a :class:`Secret`."""
        data = json.loads(json.dumps(dict(report), default=_report_value))
        await self.client.kv_write(self.settings.kv_mount, self.runs_path(run_id), data)
        await self.prune_run_reports()

    async def prune_run_reports(self) -> list[str]:
        """Delete all but the newest ``vault.runs_keep`` reports (run ids sort by time).

        Only keys shaped like a rotator run id are counted or deleted: anything else under the
        runs path (another team's key, a hand-made copy) is left alone. Best effort: a report
        that cannot be deleted now is deleted after a later run.
        """
        keep = self.settings.runs_keep
        if keep <= 0:
            return []
        mount = self.settings.kv_mount
        try:
            runs = sorted(
                k
                for k in await self.client.kv_list(mount, self.settings.runs_path)
                if _RUN_ID.match(k)
            )
            old = runs[: max(0, len(runs) - keep)]
            for run_id in old:
                # The metadata DELETE removes every version: nothing of the report is left.
                await self.client.request("DELETE", f"{mount}/metadata/{self.runs_path(run_id)}")
        except VaultError as exc:
            log.warning("run_reports_not_pruned", code=exc.code, detail=exc.message)
            return []
        return old

    async def read_run_report(self, run_id: str) -> dict[str, object] | None:
        entry = await self.client.kv_read(self.settings.kv_mount, self.runs_path(run_id))
        data = (entry or {}).get("data")
        return dict(data) if data else None

    # -- misc -------------------------------------------------------------------------------

    async def generate_password(self, policy_name: str) -> Secret:
        """A password from the Vault/OpenBao password policy ``policy_name``."""
        name = self._segment(policy_name, "password policy")
        path = f"sys/policies/password/{name}/generate"
        try:
            body: JsonDict = await self.client.request("GET", path) or {}
        except VaultNotFoundError:
            raise VaultError(
                f"password policy {name!r} does not exist: run `rotator vault-setup` or set "
                "passwords.source = 'local'",
                code="PasswordPolicyMissing",
            ) from None
        value = (body.get("data") or {}).get("password")
        if not isinstance(value, str) or not value:
            raise VaultError(f"{path} returned no password", code="PasswordPolicyBroken")
        return Secret(value)

    async def health(self) -> bool:
        return await self.client.health()


def _now() -> datetime:
    return datetime.now(UTC)


_UNKNOWN_AGE = datetime(1970, 1, 1, tzinfo=UTC)
"""``staged_at`` of a migrated old-layout pending password that had no ``pending_since``."""


def _report_value(value: object) -> object:
    if isinstance(value, Secret):
        raise TypeError("run reports must never contain secrets")
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot store a {type(value).__name__} in a run report")
