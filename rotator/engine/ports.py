"""The seams of the engine: what it needs from the API, from Vault and from its observers.

The real implementations are :class:`rotator.ehpc.client.EhpcClient` and
:class:`rotator.vault.store.VaultStore`; tests put fakes behind the same interfaces (a fake at the
transport seam, not patched functions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from rotator.ehpc.models import Cluster, ModifyResult
from rotator.engine.model import PendingState, RootCredential, VncState
from rotator.engine.report import ClusterOutcome
from rotator.secret import Secret

__all__ = ["ApiClient", "Hooks", "NoHooks", "RotationStore"]


class ApiClient(Protocol):
    async def modify_visual_service_passwd(
        self,
        *,
        region: str,
        cluster_id: str,
        runas_password: Secret,
        new_password: Secret,
        runas_user: str = "root",
    ) -> ModifyResult: ...

    async def list_clusters(self, region: str) -> list[Cluster]: ...


class RotationStore(Protocol):
    """Two records per cluster, each written only by check-and-set on the version read: the
    committed password (``VncState``) and the rotation in flight (``PendingState``). A lost CAS
    raises :class:`~rotator.errors.VaultConflictError`; other failures :class:`VaultError`."""

    async def read_root(self, cluster_id: str) -> RootCredential: ...

    async def read_vnc(self, cluster_id: str, *, pending: bool = True) -> VncState:
        """The committed record; with ``pending`` also the pending record (else unread)."""
        ...

    async def read_pending(self, cluster_id: str) -> PendingState | None: ...

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
        """Write the pending record (CAS on ``state.pending`` or ``state.pending_version``)."""
        ...

    async def commit(
        self,
        state: VncState,
        *,
        request_id: str,
        rotated_at: datetime,
        region: str | None,
        next_rotation_at: datetime | None = None,
    ) -> VncState:
        """``state.pending`` becomes the committed password (CAS on ``state.version``), recorded
        with when it falls due; one write, no metadata."""
        ...

    async def clear_pending(self, state: VncState) -> VncState:
        """Empty the pending record (CAS): only for a password no attempt can have applied."""
        ...

    async def release(self, state: VncState) -> VncState:
        """Keep the pending password, end the claim (CAS)."""
        ...

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
        """Merge status keys into the custom metadata: None leaves a key, ``""`` removes it."""
        ...


class Hooks(Protocol):
    """Observers of a run (metrics, progress). Called on the event loop; must not block."""

    def api_call(self, *, region: str, code: str | None, seconds: float) -> None: ...

    def retry(self, *, cluster_id: str, code: str, delay: float) -> None: ...

    def outcome(self, outcome: ClusterOutcome) -> None: ...

    def vault_error(self, *, code: str) -> None: ...


class NoHooks:
    def api_call(self, *, region: str, code: str | None, seconds: float) -> None:
        return None

    def retry(self, *, cluster_id: str, code: str, delay: float) -> None:
        return None

    def outcome(self, outcome: ClusterOutcome) -> None:
        return None

    def vault_error(self, *, code: str) -> None:
        return None
