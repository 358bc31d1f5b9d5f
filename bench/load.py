"""Putting the clusters' root passwords into Vault, as an operator would before the first run.

asyncio.run(load_roots(vault_settings, clusters, root_path="ehpc/root"))
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.settings import VaultSettings
from rotator.vault.store import VaultStore

__all__ = ["load_roots"]


async def load_roots(
    settings: VaultSettings, clusters: Sequence[dict[str, Any]], *, root_path: str
) -> None:
    """Write ``<root_path>/<id>`` = {user: root, password, region} for every cluster."""
    async with VaultClient(dataclasses.replace(settings, root_path=root_path)) as client:
        store = VaultStore(client)
        await asyncio.gather(
            *(
                store.write_root(
                    str(c["id"]), "root", Secret(str(c["root_password"])), str(c["region"])
                )
                for c in clusters
            )
        )
