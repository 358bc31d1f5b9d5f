"""rotator's Vault/OpenBao side: settings, an async client over hvac, the record layout, setup.

settings = VaultSettings.from_env()
async with VaultClient(settings) as client:
    store = VaultStore(client)
    root = await store.read_root("ehpc-hz-123")
"""

from __future__ import annotations

from rotator.vault.client import VaultClient, VaultNotFoundError
from rotator.vault.settings import AuthMethod, VaultSettings
from rotator.vault.setup import vault_setup
from rotator.vault.store import RootCredential, VaultStore, VncState

__all__ = [
    "AuthMethod",
    "RootCredential",
    "VaultClient",
    "VaultNotFoundError",
    "VaultSettings",
    "VaultStore",
    "VncState",
    "vault_setup",
]
