"""A whole fleet for end-to-end tests: a simulator, a real OpenBao, a config file, the CLI.

fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
result = await fleet.cli("rotate", "--all", "--report", str(tmp_path / "r.json"))
await fleet.assert_vault_holds_every_password()
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from rotator.config import Settings, load_settings
from rotator.engine.runtime import Runtime, open_runtime
from rotator.secret import Secret, write_secret_file
from rotator.sim import Simulator
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.store import VaultStore
from tests.support.sim import SimAdmin
from tests.support.vault import VaultPaths

__all__ = ["CliResult", "Fleet", "rotator_bin", "toml_document", "toml_value"]

ROTATOR = Path(sys.executable).parent / "rotator"


def rotator_bin() -> str:
    return str(ROTATOR)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def toml_document(sections: Mapping[str, Mapping[str, object]]) -> str:
    """A config file from ``{section: {key: value}}`` (flat values and lists)."""
    return "\n".join(
        f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
        for name, values in sections.items()
    )


@dataclass(frozen=True, slots=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


@dataclass(slots=True)
class Fleet:
    tmp: Path
    sim: Simulator
    server: OpenBaoServer
    paths: VaultPaths
    config: Path

    @classmethod
    async def create(
        cls,
        tmp: Path,
        sim: Simulator,
        server: OpenBaoServer,
        paths: VaultPaths,
        *,
        overrides: Mapping[str, Mapping[str, object]] | None = None,
        seed_roots: bool = True,
    ) -> Fleet:
        token_file = write_secret_file(tmp / "vault-token", server.root_token.reveal())
        key_file = write_secret_file(tmp / "ak-secret", sim.config.access_key_secret)
        sections: dict[str, dict[str, object]] = {
            "ehpc": {
                "regions": list(sim.config.regions),
                "endpoint": sim.base_url,
                "allow_insecure_http": True,
                "rate_limit": "1000/1s",
                "request_timeout": "3s",
                "connect_timeout": "1s",
            },
            "credentials": {
                "source": "static",
                "access_key_id": sim.config.access_key_id,
                "access_key_secret_file": str(key_file),
            },
            "vault": {
                "addr": server.addr,
                "allow_insecure_http": True,  # a loopback OpenBao dev server
                "token_file": str(token_file),
                "root_path": paths.root_path,
                "vnc_path": paths.vnc_path,
                "runs_path": paths.runs_path,
            },
            "retry": {
                "initial_wait": "10ms",
                "max_wait": "100ms",
                "conflict_initial_wait": "50ms",
                "conflict_max_wait": "300ms",
                "throttle_initial_wait": "50ms",
                "throttle_max_wait": "500ms",
            },
            "rotation": {"concurrency": 16, "claim_ttl": "1s", "cluster_deadline": "60s"},
            "logging": {"format": "json"},
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        config = tmp / "rotator.toml"
        config.write_text(toml_document(sections), encoding="utf-8")
        fleet = cls(tmp=tmp, sim=sim, server=server, paths=paths, config=config)
        if seed_roots:
            await fleet.seed_roots()
        return fleet

    def settings(self) -> Settings:
        return load_settings(self.config, environ={})

    @asynccontextmanager
    async def store(self) -> AsyncIterator[VaultStore]:
        client = VaultClient(self.paths.settings(self.server))
        try:
            yield VaultStore(client)
        finally:
            await client.aclose()

    @asynccontextmanager
    async def runtime(self) -> AsyncIterator[Runtime]:
        async with open_runtime(self.settings()) as runtime:
            yield runtime

    async def admin_clusters(self) -> dict[str, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            return await SimAdmin(session, self.sim).clusters()

    async def seed_roots(self) -> None:
        clusters = await self.admin_clusters()
        async with self.store() as store:
            await asyncio.gather(
                *(
                    store.write_root(cid, "root", Secret(c["root_password"]), c["region"])
                    for cid, c in clusters.items()
                )
            )

    async def cli(
        self, *args: str, env: Mapping[str, str] | None = None, config: Path | None = None
    ) -> CliResult:
        process = await self.start_cli(*args, env=env, config=config)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return CliResult(process.returncode, out.decode(), err.decode())

    async def start_cli_with_stderr(self, stderr: int, *args: str) -> asyncio.subprocess.Process:
        """The CLI with its stderr on ``stderr`` (e.g. a pseudo-terminal, as a person sees it)."""
        return await self.start_cli(*args, stderr=stderr)

    async def start_cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        config: Path | None = None,
        stderr: int = asyncio.subprocess.PIPE,
    ) -> asyncio.subprocess.Process:
        # Nothing from the developer's own Vault or Alibaba Cloud account leaks into a test.
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VAULT_", "BAO_", "ALIBABA_CLOUD_", "ROTATOR_"))
        }
        environment.update(env or {})
        return await asyncio.create_subprocess_exec(
            rotator_bin(),
            *args,
            "--config",
            str(config or self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=environment,
        )

    async def vault_mismatches(self) -> dict[str, str]:
        """Clusters whose real VNC password Vault holds neither as password nor as pending."""
        clusters = await self.admin_clusters()
        async with self.store() as store:
            states = await asyncio.gather(*(store.read_vnc(cid) for cid in clusters))
        wrong: dict[str, str] = {}
        for (cid, cluster), state in zip(clusters.items(), states, strict=True):
            if cluster["change_count"] == 0:
                continue
            real = Secret(cluster["vnc_password"])
            if real not in (state.password, state.pending_password):
                wrong[cid] = f"changed {cluster['change_count']}x, not in Vault"
        return wrong

    async def committed_mismatches(self) -> dict[str, str]:
        """Changed clusters whose real password is not Vault's *current* password."""
        clusters = await self.admin_clusters()
        async with self.store() as store:
            states = await asyncio.gather(*(store.read_vnc(cid) for cid in clusters))
        return {
            cid: "not committed"
            for (cid, cluster), state in zip(clusters.items(), states, strict=True)
            if cluster["change_count"] and Secret(cluster["vnc_password"]) != state.password
        }

    async def all_secret_values(self) -> set[str]:
        """Every password and credential a log or report must never show."""
        clusters = await self.admin_clusters()
        values = {self.sim.config.access_key_secret, self.server.root_token.reveal()}
        for cluster in clusters.values():
            values.add(cluster["root_password"])
            values.add(cluster["vnc_password"])
        return values
