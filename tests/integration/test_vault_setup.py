"""``rotator vault-setup`` on a Vault shared with other teams, as a real CLI process.

Nothing another team configured is overwritten without --force; --dry-run changes nothing.
Each test uses auth mounts of its own; one that edits the shared ``rotator`` policy or AppRole
role removes them again, so later tests start from a Vault rotator can set up.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme

from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.settings import VaultSettings
from rotator.vault.setup import vault_setup
from tests.support.fleet import Fleet
from tests.support.sim import SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def fleet(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> Fleet:
    """A config with the dev server's root token: an administrator runs vault-setup."""
    sim = await sim_factory(clusters=2)
    return await Fleet.create(tmp_path, sim, openbao, vault_paths, seed_roots=False)


@pytest_asyncio.fixture
async def admin(openbao: OpenBaoServer, vault_paths: VaultPaths) -> AsyncIterator[VaultClient]:
    async with VaultClient(vault_paths.settings(openbao)) as client:
        yield client


def mount_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


async def read_data(admin: VaultClient, path: str) -> dict[str, Any]:
    body = await admin.read(path)
    assert body is not None, path
    data: dict[str, Any] = body["data"]
    return data


async def test_an_existing_kubernetes_config_is_shown_not_overwritten_without_force(
    fleet: Fleet, admin: VaultClient, tmp_path: Path
) -> None:
    mount = mount_name("k8s")
    ca = trustme.CA().cert_pem.bytes().decode()
    await admin.write(f"sys/auth/{mount}", {"type": "kubernetes"})
    theirs = {
        "kubernetes_host": "https://10.0.0.1:6443",
        "kubernetes_ca_cert": ca,
        "issuer": "https://kubernetes.default.svc.cluster.local",
        "disable_local_ca_jwt": True,
    }
    await admin.write(f"auth/{mount}/config", theirs)
    (tmp_path / "ca.pem").write_text(ca, encoding="utf-8")
    args = (
        "vault-setup",
        "--kubernetes-host",
        "https://k8s.example.com:443",
        "--kubernetes-ca-cert",
        str(tmp_path / "ca.pem"),
        "--kubernetes-mount",
        mount,
    )

    shown = await fleet.cli(*args)

    assert shown.code == 3, shown.stdout + shown.stderr[-2000:]
    assert (
        f"kubernetes auth config at auth/{mount}/config differs from what rotator wants; "
        "left as it is (rerun with --force to overwrite it):" in shown.stdout
    )
    assert (
        "    kubernetes_host: https://10.0.0.1:6443 -> https://k8s.example.com:443" in shown.stdout
    )
    config = await read_data(admin, f"auth/{mount}/config")
    assert config["kubernetes_host"] == theirs["kubernetes_host"]
    # The role is rotator's own and did not exist: created, with the audience deploy/ uses.
    role = await read_data(admin, f"auth/{mount}/role/rotator")
    assert role["audience"] == "vault"
    assert role["bound_service_account_names"] == ["rotator"]

    planned = await fleet.cli(*args, "--force", "--dry-run")
    assert planned.code == 0, planned.stdout
    assert f"would update kubernetes auth config at auth/{mount}/config" in planned.stdout
    assert "dry run: nothing was changed" in planned.stdout
    assert (await read_data(admin, f"auth/{mount}/config"))["kubernetes_host"] == (
        theirs["kubernetes_host"]
    )

    forced = await fleet.cli(*args, "--force")
    assert forced.code == 0, forced.stdout + forced.stderr[-2000:]
    config = await read_data(admin, f"auth/{mount}/config")
    assert config["kubernetes_host"] == "https://k8s.example.com:443"
    # What rotator does not manage survives a forced write.
    assert config["issuer"] == theirs["issuer"]
    assert config["disable_local_ca_jwt"] is True


async def test_an_admins_approle_role_and_policy_edits_survive_a_rerun(
    fleet: Fleet, admin: VaultClient
) -> None:
    settings = fleet.paths.settings(fleet.server)
    try:
        await vault_setup(admin, settings)
        await admin.write("auth/approle/role/rotator", {"secret_id_ttl": 7 * 86400})
        policy = await read_data(admin, "sys/policies/acl/rotator")
        edited = policy["policy"] + '\npath "secret/data/extra/*" {\n  capabilities = ["read"]\n}\n'
        await admin.request("PUT", "sys/policies/acl/rotator", json={"policy": edited})

        result = await fleet.cli("vault-setup")

        assert result.code == 3, result.stdout + result.stderr[-2000:]
        assert "approle role rotator differs from what rotator wants" in result.stdout
        assert "    secret_id_ttl: 604800 -> 86400" in result.stdout
        assert "policy rotator differs from what rotator wants" in result.stdout
        assert '-path "secret/data/extra/*" {' in result.stdout
        assert (await read_data(admin, "auth/approle/role/rotator"))["secret_id_ttl"] == 604800
        assert (await read_data(admin, "sys/policies/acl/rotator"))["policy"] == edited

        forced = await fleet.cli("vault-setup", "--force")
        assert forced.code == 0, forced.stdout
        assert "policy rotator updated" in forced.stdout
        assert (await read_data(admin, "auth/approle/role/rotator"))["secret_id_ttl"] == 86400
    finally:
        await admin.request("DELETE", "sys/policies/acl/rotator")
        await admin.request("DELETE", "auth/approle/role/rotator")


async def test_rotators_own_policy_follows_a_config_change_without_force(
    fleet: Fleet, admin: VaultClient, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    moved = VaultSettings(
        addr=openbao.addr,
        token=openbao.root_token,
        allow_insecure_http=True,  # the local dev server
        root_path=f"{vault_paths.prefix}/elsewhere",
        vnc_path=vault_paths.vnc_path,
        runs_path=vault_paths.runs_path,
    )
    await vault_setup(admin, moved)  # the policy as an earlier config rendered it

    result = await fleet.cli("vault-setup")

    assert result.code == 0, result.stdout
    assert "policy rotator updated" in result.stdout
    text = (await read_data(admin, "sys/policies/acl/rotator"))["policy"]
    assert f'path "secret/data/{vault_paths.root_path}/*"' in text


async def test_dry_run_on_an_empty_vault_changes_nothing(
    fleet: Fleet, admin: VaultClient, tmp_path: Path
) -> None:
    mount = mount_name("kv")
    approle = mount_name("approle")
    config = fleet.config.read_text(encoding="utf-8").replace(
        "[vault]\n", f'[vault]\nkv_mount = "{mount}"\n'
    )
    (tmp_path / "other.toml").write_text(config, encoding="utf-8")
    before = await admin.list_keys("sys/policies/acl")

    result = await fleet.cli(
        "vault-setup", "--dry-run", "--approle-mount", approle, config=tmp_path / "other.toml"
    )

    assert result.code == 0, result.stdout + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert f"would create KV version 2 at {mount}/" in lines
    assert f"would create approle auth at auth/{approle}/" in lines
    assert f"would create approle role rotator at auth/{approle}/" in lines
    assert lines[-1] == "dry run: nothing was changed"
    assert f"{mount}/" not in (await read_data(admin, "sys/mounts"))
    assert f"{approle}/" not in (await read_data(admin, "sys/auth"))
    assert await admin.list_keys("sys/policies/acl") == before


async def test_history_versions_sets_max_versions_on_every_vnc_secret(
    fleet: Fleet, admin: VaultClient, tmp_path: Path
) -> None:
    vnc = fleet.paths.vnc_path
    for cluster in ("c-1", "c-2"):
        await admin.kv_write("secret", f"{vnc}/{cluster}", {"password": "Ab12cd"})
    await admin.kv_patch_custom_metadata("secret", f"{vnc}/c-1", {"status": "rotated"})
    config = fleet.config.read_text(encoding="utf-8").replace(
        "[vault]\n", "[vault]\nhistory_versions = 30\n"
    )
    (tmp_path / "h.toml").write_text(config, encoding="utf-8")

    planned = await fleet.cli("vault-setup", "--dry-run", config=tmp_path / "h.toml")
    assert f"would update max_versions 30 on the VNC secrets under secret/{vnc}/ (2 of 2" in (
        planned.stdout
    )
    assert (await admin.kv_metadata("secret", f"{vnc}/c-1") or {})["max_versions"] == 0

    result = await fleet.cli("vault-setup", config=tmp_path / "h.toml")

    assert result.code in (0, 3), result.stdout + result.stderr[-2000:]
    for cluster in ("c-1", "c-2"):
        meta = await admin.kv_metadata("secret", f"{vnc}/{cluster}") or {}
        assert meta["max_versions"] == 30
    kept = await admin.kv_metadata("secret", f"{vnc}/c-1") or {}
    assert kept["custom_metadata"] == {"status": "rotated"}
    again = await fleet.cli("vault-setup", config=tmp_path / "h.toml")
    assert f"secret/{vnc}/: all 2 secrets have it" in again.stdout


async def test_events_policy_is_refused_by_openbao_with_a_clear_reason(
    fleet: Fleet, admin: VaultClient
) -> None:
    mount = mount_name("approle")
    result = await fleet.cli("vault-setup", "--events", "--approle-mount", mount)

    assert result.code == 3, result.stdout + result.stderr[-2000:]
    assert (
        "policy rotator-events not written: this server does not know the 'subscribe' "
        "capability (OpenBao, or Vault before 1.16)" in result.stdout
    )
    # The roles do not name a policy that is not there.
    role = await read_data(admin, f"auth/{mount}/role/rotator")
    assert role["token_policies"] == ["rotator"]
    assert "Traceback" not in result.stderr


async def test_agent_makes_the_approle_role_issue_periodic_tokens(
    fleet: Fleet, admin: VaultClient
) -> None:
    mount = mount_name("approle")

    result = await fleet.cli("vault-setup", "--agent", "--approle-mount", mount)

    assert result.code == 0, result.stdout + result.stderr[-2000:]
    role = await read_data(admin, f"auth/{mount}/role/rotator")
    assert (role["token_period"], role["token_max_ttl"]) == (3600, 0)
    assert role["secret_id_ttl"] == 86400
