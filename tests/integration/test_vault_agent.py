"""A Vault Agent keeps rotator's token fresh: the token file is re-read when it changes.

The real ``bao agent`` (AppRole auto-auth, a file sink) runs against the real OpenBao dev server
with a secret_id that expires within seconds; a long-lived client keeps working across token
changes and after the secret_id is gone. Every wait is keyed to something observed (the token
file changing, the secret_id gone, the token renewed), with a generous overall timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from rotator.secret import write_secret_file
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, find_bao
from tests.support.vault import VaultPaths, create_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
PATIENCE = 60.0
"""Seconds any observed change may take on a loaded machine."""


async def eventually(what: str, probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not observed within {PATIENCE:g}s: {what}")


def policy_for(path: str) -> str:
    return f'path "secret/data/{path}/*" {{\n  capabilities = ["create", "read", "update"]\n}}\n'


async def test_a_changed_token_file_is_read_again_while_the_old_token_is_still_valid(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    admin = VaultClient(vault_paths.settings(openbao))
    first_path, second_path = f"{vault_paths.prefix}/a", f"{vault_paths.prefix}/b"
    name = f"agent-{uuid.uuid4().hex[:8]}"
    await admin.request(
        "PUT", f"sys/policies/acl/{name}-a", json={"policy": policy_for(first_path)}
    )
    await admin.request(
        "PUT", f"sys/policies/acl/{name}-b", json={"policy": policy_for(second_path)}
    )
    first = await create_token(admin, policies=[f"{name}-a", "default"])
    second = await create_token(admin, policies=[f"{name}-b", "default"])
    token_file = write_secret_file(tmp_path / "token", first.reveal())
    client = VaultClient(vault_paths.settings(openbao, token=None, token_file=str(token_file)))
    try:
        await client.kv_write("secret", f"{first_path}/x", {"v": "1"})
        # What an agent does after a re-login: a new file, the old token still valid.
        write_secret_file(tmp_path / "token", second.reveal())

        await client.kv_write("secret", f"{second_path}/x", {"v": "2"})

        assert client.logins == 2
    finally:
        await client.aclose()
        await admin.aclose()


# -- the real agent ---------------------------------------------------------------------------


@dataclass(slots=True)
class Agent:
    process: subprocess.Popen[bytes]
    sink: Path
    log: Path

    def token(self) -> str | None:
        try:
            return self.sink.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def agent_config(template: str, *, addr: str, mount: str, workdir: Path) -> str:
    """The shipped config with this test's address, AppRole mount and file locations."""
    replacements = {
        "https://vault.example.com:8200": addr,
        "auth/approle": f"auth/{mount}",
        "/etc/rotator/vault-role-id": str(workdir / "role-id"),
        "/run/credentials/rotator-vault-agent.service/vault-secret-id": str(workdir / "secret-id"),
        "/run/rotator-vault-agent/token": str(workdir / "sink" / "token"),
    }
    for old, new in replacements.items():
        assert old in template, old
        template = template.replace(old, new)
    return template


@contextlib.contextmanager
def running_agent(config: Path, workdir: Path, env: dict[str, str]) -> Iterator[Agent]:
    log = workdir / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # our own binary and arguments
            [find_bao(), "agent", f"-config={config}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield Agent(process, workdir / "sink" / "token", log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest_asyncio.fixture
async def admin(openbao: OpenBaoServer, vault_paths: VaultPaths) -> AsyncIterator[VaultClient]:
    async with VaultClient(vault_paths.settings(openbao)) as client:
        yield client


async def test_the_shipped_agent_keeps_a_long_lived_rotator_working_past_the_secret_id(
    openbao: OpenBaoServer, vault_paths: VaultPaths, admin: VaultClient, tmp_path: Path
) -> None:
    mount = f"approle-{uuid.uuid4().hex[:8]}"
    await admin.write(f"sys/auth/{mount}", {"type": "approle"})
    name = f"agent-{uuid.uuid4().hex[:8]}"
    data = f"{vault_paths.prefix}/agent"
    await admin.request("PUT", f"sys/policies/acl/{name}", json={"policy": policy_for(data)})
    # What `vault-setup --agent` writes, with seconds instead of hours: periodic tokens the
    # agent renews for ever, and a secret_id that is only good for the agent's first login.
    await admin.write(
        f"auth/{mount}/role/rotator",
        {
            "token_policies": [name],
            "token_period": 4,
            "token_max_ttl": 0,
            "secret_id_ttl": 12,
            "token_type": "service",
        },
    )
    role_id = (await admin.read(f"auth/{mount}/role/rotator/role-id") or {})["data"]["role_id"]
    secret = await admin.write(f"auth/{mount}/role/rotator/secret-id", {})
    secret_id, accessor = secret["data"]["secret_id"], secret["data"]["secret_id_accessor"]
    (tmp_path / "sink").mkdir()
    write_secret_file(tmp_path / "role-id", role_id)
    write_secret_file(tmp_path / "secret-id", secret_id)
    config = tmp_path / "agent.hcl"
    shipped = (DEPLOY / "rotator-vault-agent.hcl").read_text(encoding="utf-8")
    config.write_text(
        agent_config(shipped, addr=openbao.addr, mount=mount, workdir=tmp_path), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}

    with running_agent(config, tmp_path, env) as agent:

        async def sink_written() -> bool:
            assert agent.process.poll() is None, agent.tail()
            return agent.token() is not None

        await eventually("the agent writes its first token", sink_written)
        client = VaultClient(
            vault_paths.settings(
                openbao, token=None, token_file=str(agent.sink), max_workers=2, timeout=10.0
            )
        )
        try:
            await client.kv_write("secret", f"{data}/c-1", {"n": "0"})
            seen = {agent.token()}

            for change in range(1, 3):
                # A token that dies (revoked here; expired or past its max TTL in real life)
                # makes the agent log in again and write the new token to the sink.
                old = agent.token()
                await admin.write("auth/token/revoke", {"token": old})

                async def replaced(old: str | None = old) -> bool:
                    assert agent.process.poll() is None, agent.tail()
                    return agent.token() not in (None, old)

                await eventually(f"token change {change} in the sink", replaced)
                seen.add(agent.token())
                await client.kv_write("secret", f"{data}/c-1", {"n": str(change)})

            async def secret_id_gone() -> bool:
                body = await admin.write(
                    f"auth/{mount}/role/rotator/secret-id-accessor/lookup",
                    {"secret_id_accessor": accessor},
                )
                return not body.get("data")

            await eventually("the secret_id expires", secret_id_gone)
            # Past the secret_id, the token lives on because the agent renews it: wait for two
            # renewals the agent made (its last_renewal_time moves), then use the client.
            token = agent.token()
            assert token is not None
            renewals: set[str] = set()

            async def renewed_twice() -> bool:
                body = await admin.write("auth/token/lookup", {"token": token})
                renewals.add(str(body["data"].get("last_renewal_time")))
                return len(renewals) >= 3  # the first value and two renewals

            await eventually("two renewals by the agent", renewed_twice)
            assert agent.token() == token
            await client.kv_write("secret", f"{data}/c-1", {"n": "done"})
            entry = await client.kv_read("secret", f"{data}/c-1")
            assert entry is not None
            assert entry["data"] == {"n": "done"}
            assert len(seen) == 3  # the first token and two replacements
            assert secret_id not in agent.tail()
        finally:
            await client.aclose()
