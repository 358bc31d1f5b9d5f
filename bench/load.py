"""Putting the clusters' root passwords into Vault, as an operator would before the first run.

    load_roots(vault_addr, ca_file, token, clusters, root_path="ehpc/root")

Written with hvac at the documented layout (``secret/<root_path>/<id>`` =
``{password, user, region}``), not through rotator's own store, so the bench does not depend on
rotator's internals.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions

__all__ = ["load_roots"]


def load_roots(
    addr: str,
    ca_file: Path | None,
    token: str,
    clusters: Sequence[dict[str, Any]],
    *,
    root_path: str,
    threads: int = 16,
) -> None:
    local = threading.local()
    clients: list[hvac.Client] = []
    lock = threading.Lock()

    def client() -> hvac.Client:
        found: hvac.Client | None = getattr(local, "client", None)
        if found is None:
            found = hvac.Client(url=addr, token=token, verify=str(ca_file) if ca_file else True)
            local.client = found
            with lock:
                clients.append(found)
        return found

    def write(cluster: dict[str, Any]) -> None:
        client().secrets.kv.v2.create_or_update_secret(
            path=f"{root_path}/{cluster['id']}",
            secret={
                "password": str(cluster["root_password"]),
                "user": "root",
                "region": str(cluster["region"]),
            },
            mount_point="secret",
        )

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(write, clusters):
                pass
    except hvac.exceptions.VaultError as exc:
        # The bench reports a stage that could not run; hvac's errors are not OSErrors.
        raise RuntimeError(f"Vault refused a root password write: {type(exc).__name__}") from None
    finally:
        for each in clients:
            each.adapter.close()
