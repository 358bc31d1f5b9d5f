"""The Vault layout rotator reads and writes (KV version 2; every path configurable).

    store = VaultStore(VaultClient(settings))
    root = await store.read_root("ehpc-hz-123")          # secret/ehpc/root/<id>, read-only input
    state = await store.read_vnc("ehpc-hz-123")          # secret/ehpc/vnc/<id>, version v
    state = await store.stage_pending(state, new, region="cn-hangzhou")   # CAS on v
    state = await store.commit(state, request_id=rid, rotated_at=now, region="cn-hangzhou")

``<kv_mount>/<vnc_path>/<ClusterId>`` holds ``password``, ``cluster_id``, ``region``,
``rotated_at`` (ISO 8601 UTC) and ``request_id``; while a rotation is in flight also
``pending_password``, ``pending_since`` and the claim (``claim_owner``, ``claim_until``). Every
write is a check-and-set on the version that was read, so two writers can never both win, and the
KV versions are the audit history. A person reads the current password with
``bao kv get -field=password secret/ehpc/vnc/<ClusterId>``.

Custom metadata on the same secret carries the status for people and ``rotator status``:
``status``, ``last_rotated_at``, ``next_rotation_at``, ``last_error_code``, ``last_request_id``,
``attempts``, and ``rotation_period`` (set by people to override the period of one cluster).
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rotator.errors import VaultError, VaultUnavailableError
from rotator.secret import Secret
from rotator.vault.client import JsonDict, VaultClient, VaultNotFoundError
from rotator.vault.settings import VaultSettings

__all__ = ["RootCredential", "VaultStore", "VncState", "format_time", "parse_time"]

# Re-reads when the secret is created between the data read and the metadata read.
_READ_RACE_RETRIES = 3

_SEGMENT = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # "$" allows a trailing "\n"

_OWNED_KEYS = frozenset(
    {
        "password",
        "cluster_id",
        "region",
        "rotated_at",
        "request_id",
        "pending_password",
        "pending_since",
        "claim_owner",
        "claim_until",
    }
)
"""Data keys rotator manages; any other key a person adds is carried over on every write."""


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


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _secret(value: object) -> Secret | None:
    return Secret(value) if isinstance(value, str) and value else None


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
class VncState:
    """One read of ``<vnc_path>/<ClusterId>``: what the next check-and-set write builds on."""

    cluster_id: str
    version: int = 0
    """KV version read; 0 = the secret does not exist yet (a CAS write of 0 creates it)."""
    password: Secret | None = None
    pending_password: Secret | None = None
    pending_since: datetime | None = None
    region: str | None = None
    rotated_at: datetime | None = None
    request_id: str | None = None
    custom_metadata: dict[str, str] = field(default_factory=dict)
    claim_owner: str | None = None
    """Who is applying ``pending_password`` right now (run or replica id)."""
    claim_until: datetime | None = None
    """Until when the claim protects the apply; a stale claim may be taken over."""
    extra: dict[str, object] = field(default_factory=dict, repr=False)
    """Data keys added by people; preserved on every write."""

    @property
    def exists(self) -> bool:
        return self.version > 0


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

    # -- VNC secret (output) ----------------------------------------------------------------

    async def read_vnc(self, cluster_id: str) -> VncState:
        """One KV read: data, version and custom metadata together.

        A cluster that never had a password may still have status metadata (a failure before
        its first rotation); only then is a second (metadata) read needed.
        """
        mount, path = self.settings.kv_mount, self.vnc_path(cluster_id)
        for _ in range(_READ_RACE_RETRIES):
            entry = await self.client.kv_read(mount, path)
            if entry is not None:
                break
            metadata = await self.client.kv_metadata(mount, path)
            if metadata is None:
                return VncState(cluster_id=cluster_id)
            version = int(metadata.get("current_version") or 0)
            if version == 0:
                entry = {
                    "data": {},
                    "metadata": {"version": 0, "custom_metadata": metadata.get("custom_metadata")},
                }
                break
            # A rival created the first version between our two reads. Returning that version
            # with empty data would let our CAS write succeed over its live claim: read again.
        else:
            raise VaultUnavailableError(
                f"{mount}/{path} kept changing while it was read; try again",
                cluster_id=cluster_id,
            )
        return self._state(cluster_id, entry.get("data") or {}, entry.get("metadata") or {})

    @staticmethod
    def _state(cluster_id: str, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> VncState:
        custom = metadata.get("custom_metadata") or {}
        return VncState(
            cluster_id=cluster_id,
            version=int(metadata.get("version") or 0),
            password=_secret(data.get("password")),
            pending_password=_secret(data.get("pending_password")),
            pending_since=parse_time(data.get("pending_since")),
            region=_text(data.get("region")),
            rotated_at=parse_time(data.get("rotated_at")),
            request_id=_text(data.get("request_id")),
            custom_metadata={str(k): str(v) for k, v in custom.items()},
            claim_owner=_text(data.get("claim_owner")),
            claim_until=parse_time(data.get("claim_until")),
            extra={k: v for k, v in data.items() if k not in _OWNED_KEYS},
        )

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
        if state.request_id:
            data["request_id"] = state.request_id
        return data

    async def _write(self, state: VncState, data: dict[str, object]) -> VncState:
        metadata = await self.client.kv_write(
            self.settings.kv_mount, self.vnc_path(state.cluster_id), data, cas=state.version
        )
        written = {**metadata, "custom_metadata": state.custom_metadata}
        return self._state(state.cluster_id, data, written)

    async def stage_pending(
        self,
        state: VncState,
        pending: Secret,
        *,
        region: str | None,
        owner: str | None = None,
        claim_until: datetime | None = None,
    ) -> VncState:
        """Write ``pending`` next to the current password (CAS on ``state.version``).

        Re-staging the same pending password (a retry, or taking over a stale claim) keeps its
        original ``pending_since``. Raises :class:`VaultConflictError` when somebody wrote first.
        """
        data = self._current(state, region)
        since = state.pending_since if state.pending_password == pending else None
        data["pending_password"] = pending.reveal()
        data["pending_since"] = format_time(since or datetime.now(UTC))
        if owner:
            data["claim_owner"] = owner
        if claim_until is not None:
            data["claim_until"] = format_time(claim_until)
        return await self._write(state, data)

    async def commit(
        self, state: VncState, *, request_id: str, rotated_at: datetime, region: str | None
    ) -> VncState:
        """Make the pending password current and drop the pending fields (CAS)."""
        if state.pending_password is None:
            raise VaultError(
                f"nothing to commit at {self.cli_path(state.cluster_id)}: no pending password",
                code="NothingPending",
                cluster_id=state.cluster_id,
            )
        data: dict[str, object] = dict(state.extra)
        data.update(
            password=state.pending_password.reveal(),
            cluster_id=state.cluster_id,
            rotated_at=format_time(rotated_at),
            request_id=request_id,
        )
        if region or state.region:
            data["region"] = region or state.region
        return await self._write(state, data)

    async def clear_pending(self, state: VncState) -> VncState:
        """Drop the pending password and claim, keep the rest (CAS). No-op when nothing pends."""
        if not state.exists or (state.pending_password is None and state.claim_owner is None):
            return state
        return await self._write(state, self._current(state, None))

    async def update_status(
        self,
        cluster_id: str,
        *,
        status: str,
        last_rotated_at: str | datetime | None = None,
        next_rotation_at: str | datetime | None = None,
        last_error_code: str | None = None,
        last_request_id: str | None = None,
        attempts: int | None = None,
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

    async def list_vnc_metadata(self) -> dict[str, dict[str, str]]:
        """Custom metadata of every VNC secret, by cluster id (for ``rotator status``)."""
        mount, base = self.settings.kv_mount, self.settings.vnc_path
        ids = sorted(k for k in await self.client.kv_list(mount, base) if not k.endswith("/"))
        limit = asyncio.Semaphore(self.settings.max_workers)

        async def one(cluster_id: str) -> tuple[str, dict[str, str]]:
            async with limit:
                metadata = await self.client.kv_metadata(mount, f"{base}/{cluster_id}")
            custom = (metadata or {}).get("custom_metadata") or {}
            return cluster_id, {str(k): str(v) for k, v in custom.items()}

        return dict(await asyncio.gather(*(one(i) for i in ids)))

    # -- run reports ------------------------------------------------------------------------

    async def write_run_report(self, run_id: str, report: Mapping[str, object]) -> None:
        """Store a run's per-cluster outcomes. Refuses anything holding a :class:`Secret`."""
        data = json.loads(json.dumps(dict(report), default=_report_value))
        await self.client.kv_write(self.settings.kv_mount, self.runs_path(run_id), data)

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


def _report_value(value: object) -> object:
    if isinstance(value, Secret):
        raise TypeError("run reports must never contain secrets")
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot store a {type(value).__name__} in a run report")
