"""Leases in Vault, and who the caller is according to Vault.

    store = LeaseStore(client)                         # rotator's own token
    doc, lease = await store.update("ehpc-hz-1", lambda d: checkout(d, ...))   # CAS, retried
    caller = await identify(client, token)             # the caller's token: lookup-self
    caps = await capabilities(client, token, [path])   # the caller's token: capabilities-self

Paths sit next to the VNC secrets: ``<vnc_path>/../leases/<ClusterId>`` holds the
:class:`~rotator.leases.model.LeaseDoc` (written by rotator only), and
``<vnc_path>/../checkout/<ClusterId>`` is the *marker* a policy grants to say who may check a
cluster out (nothing needs to be stored there).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from typing import TypeVar

from rotator.errors import VaultConflictError, VaultError, VaultPermissionError
from rotator.leases.model import Holder, LeaseDoc, LeaseError, is_cluster_id, valid_cluster_id
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.settings import VaultSettings

__all__ = ["LeaseStore", "capabilities", "identify", "lease_paths"]

R = TypeVar("R")
_CAS_ATTEMPTS = 8


def lease_paths(settings: VaultSettings) -> tuple[str, str]:
    """``(leases_path, checkout_path)`` under the KV mount, siblings of ``vnc_path``.

    ``rotator vault-setup`` renders the same paths into the policies (keep them in step).
    """
    base = posixpath.dirname(settings.vnc_path.strip("/"))
    prefix = f"{base}/" if base else ""
    return f"{prefix}leases", f"{prefix}checkout"


class LeaseStore:
    def __init__(self, client: VaultClient) -> None:
        self.client = client
        self.settings = client.settings
        self.mount = self.settings.kv_mount
        self.leases_path, self.checkout_path = lease_paths(self.settings)

    def _path(self, cluster_id: str) -> str:
        return f"{self.leases_path}/{valid_cluster_id(cluster_id)}"

    def marker(self, cluster_id: str) -> str:
        """The API path whose capabilities decide who may check ``cluster_id`` out."""
        return f"{self.mount}/data/{self.checkout_path}/{valid_cluster_id(cluster_id)}"

    def vnc_data_path(self, cluster_id: str) -> str:
        return f"{self.mount}/data/{self.settings.vnc_path}/{valid_cluster_id(cluster_id)}"

    async def read(self, cluster_id: str) -> LeaseDoc:
        entry = await self.client.kv_read(self.mount, self._path(cluster_id))
        if entry is None:
            return LeaseDoc.empty(cluster_id)
        version = int((entry.get("metadata") or {}).get("version") or 0)
        return LeaseDoc.from_data(cluster_id, version, entry.get("data") or {})

    async def list_clusters(self) -> list[str]:
        keys = await self.client.kv_list(self.mount, self.leases_path)
        # Only rotator writes there; a key that is no cluster id is someone else's: skip it.
        return sorted(k for k in keys if not k.endswith("/") and is_cluster_id(k))

    async def update(
        self, cluster_id: str, change: Callable[[LeaseDoc], tuple[LeaseDoc, R]]
    ) -> tuple[LeaseDoc, R]:
        """Read, apply ``change`` (pure; may raise LeaseError), write with check-and-set on the
        version read; on a lost race read again and re-apply. Unchanged docs are not written."""
        for _ in range(_CAS_ATTEMPTS):
            current = await self.read(cluster_id)
            changed, result = change(current)
            if changed == current:
                return current, result
            try:
                written = await self.client.kv_write(
                    self.mount, self._path(cluster_id), changed.to_data(), cas=current.version
                )
            except VaultConflictError:
                continue
            version = int(written.get("version") or current.version + 1)
            return LeaseDoc.from_data(cluster_id, version, changed.to_data()), result
        raise VaultConflictError(
            f"the leases of {cluster_id} kept changing while they were updated; try again",
            cluster_id=cluster_id,
        )


async def identify(client: VaultClient, token: Secret) -> Holder:
    """Who the caller's token belongs to; LeaseError 401 for a token Vault does not accept."""
    try:
        body = await client.request_as(token, "GET", "auth/token/lookup-self")
    except VaultPermissionError:
        raise LeaseError(
            "Vault does not accept this token (expired, revoked or wrong): log in again "
            "(bao login / vault login)",
            code="VaultTokenInvalid",
            status=401,
        ) from None
    data = (body or {}).get("data")
    if not isinstance(data, dict):
        raise VaultError("auth/token/lookup-self returned no data", code="InvalidResponse")
    return Holder(
        name=str(data.get("display_name") or data.get("path") or "unknown"),
        entity_id=str(data.get("entity_id") or ""),
        accessor=str(data.get("accessor") or ""),
    )


async def capabilities(
    client: VaultClient, token: Secret, paths: Sequence[str]
) -> dict[str, frozenset[str]]:
    """The caller's capabilities on each path (``sys/capabilities-self``, in one call)."""
    if not paths:
        return {}
    try:
        body = await client.request_as(
            token, "POST", "sys/capabilities-self", json={"paths": list(paths)}
        )
    except VaultPermissionError:
        raise LeaseError(
            "Vault does not accept this token for sys/capabilities-self (the default policy "
            "grants it): log in again",
            code="VaultTokenInvalid",
            status=401,
        ) from None
    answer = body or {}
    data = answer.get("data") if isinstance(answer.get("data"), dict) else answer
    found: dict[str, frozenset[str]] = {}
    for path in paths:
        caps = data.get(path) if isinstance(data, dict) else None
        if caps is None and len(paths) == 1 and isinstance(data, dict):
            caps = data.get("capabilities")
        found[path] = frozenset(str(c) for c in caps) if isinstance(caps, list) else frozenset()
    return found
