"""OpenBao fixtures: one real dev server per test session, a private KV prefix per test.

async def test_x(openbao: OpenBaoServer, vault_paths: VaultPaths) -> None:
    store = VaultStore(VaultClient(vault_paths.settings(openbao)))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, find_bao, start_openbao
from rotator.vault.settings import VaultSettings

__all__ = ["CliResult", "VaultPaths", "create_token", "openbao", "run_bao", "vault_paths"]


@dataclass(frozen=True, slots=True)
class VaultPaths:
    """A KV prefix of its own (``t-<uuid>/ehpc``) so tests never see each other's secrets."""

    prefix: str

    @property
    def root_path(self) -> str:
        return f"{self.prefix}/root"

    @property
    def vnc_path(self) -> str:
        return f"{self.prefix}/vnc"

    @property
    def runs_path(self) -> str:
        return f"{self.prefix}/runs"

    def settings(self, server: OpenBaoServer, **overrides: object) -> VaultSettings:
        """Token auth with the root token, paths under this test's prefix."""
        values: dict[str, object] = {
            "addr": server.addr,
            # The dev server listens on plain http://127.0.0.1: allowed explicitly.
            "allow_insecure_http": True,
            "token": server.root_token,
            "root_path": self.root_path,
            "vnc_path": self.vnc_path,
            "runs_path": self.runs_path,
            "max_workers": 4,
            "timeout": 5.0,
        }
        values.update(overrides)
        return VaultSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    with start_openbao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


@pytest.fixture
def vault_paths() -> VaultPaths:
    return VaultPaths(prefix=f"t-{uuid.uuid4().hex[:12]}/ehpc")


async def create_token(
    admin: VaultClient, *, policies: list[str], ttl: str = "1h", renewable: bool = True
) -> Secret:
    """A child token with exactly ``policies`` (no default policy unless listed)."""
    body = await admin.write(
        "auth/token/create",
        {
            "policies": policies,
            "ttl": ttl,
            "renewable": renewable,
            "no_default_policy": "default" not in policies,
        },
    )
    return Secret(str(body["auth"]["client_token"]))


@dataclass(frozen=True, slots=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


async def run_bao(server: OpenBaoServer, *args: str, token: Secret | None = None) -> CliResult:
    """The real ``bao`` CLI against ``server``; address and token go in the environment."""
    process = await asyncio.create_subprocess_exec(
        find_bao(),
        *args,
        env=server.env(token),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())
