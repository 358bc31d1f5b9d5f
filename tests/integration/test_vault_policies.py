"""vault-setup and the shipped policies on a real OpenBao: the rotator's token can do its job and
nothing else; the reader's token reads VNC passwords and nothing under root."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from rotator.errors import VaultPermissionError
from rotator.passwords import is_valid_vnc_password
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.settings import VaultSettings
from rotator.vault.setup import (
    ACL_POLICIES,
    default_policy_dir,
    policy_is_ours,
    render_policy,
    vault_setup,
)
from rotator.vault.store import VaultStore
from tests.support.vault import VaultPaths, create_token, run_bao

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, tzinfo=UTC)


async def _setup(openbao: OpenBaoServer, vault_paths: VaultPaths) -> tuple[Secret, Secret]:
    """Apply vault-setup for this test's paths; a root credential and a VNC secret exist.
    Returns tokens holding only the rotator policy and only the reader policy."""
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        await vault_setup(admin, settings)
        store = VaultStore(admin)
        await store.write_root("c-1", "root", Secret("Root12"), "cn-hangzhou")
        staged = await store.stage_pending(
            await store.read_vnc("c-1"), Secret("Ab12cd"), region="r"
        )
        await store.commit(staged, request_id="req-0", rotated_at=NOW, region="r")
        # A secret outside the rotator's paths, under the same mount.
        await admin.kv_write("secret", f"other-{vault_paths.prefix}/x", {"k": "v"})
        rotator = await create_token(admin, policies=["rotator"])
        reader = await create_token(admin, policies=["ehpc-vnc-reader", "default"])
    return rotator, reader


@pytest.mark.asyncio
async def test_vault_setup_is_idempotent(openbao: OpenBaoServer, vault_paths: VaultPaths) -> None:
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        await vault_setup(admin, settings)
        second = await vault_setup(admin, settings)
        policy = await admin.read("sys/policies/acl/rotator")
    assert second == [
        "KV version 2 at secret/ exists",
        "policy rotator unchanged",
        "policy ehpc-vnc-reader unchanged",
        "policy ehpc-vnc-checkout unchanged",
        "password policy ehpc-vnc unchanged",
        "approle auth at auth/approle/ exists",
        "approle role rotator unchanged",
        f"max_versions 50 on the VNC secrets under secret/{vault_paths.vnc_path}/: all 0 "
        "secrets have it",
    ]
    assert policy is not None
    text = policy["data"]["policy"]
    assert f'path "secret/data/{vault_paths.root_path}/*"' in text
    assert "{kv_mount}" not in _rules(text)


def _rules(text: str) -> str:
    """A policy without its comments."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.asyncio
async def test_the_stored_policy_keeps_a_readable_header(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        await vault_setup(admin, settings)
        text = (await admin.read("sys/policies/acl/rotator") or {})["data"]["policy"]
    first = text.splitlines()[0]
    assert first == (
        f"# Written by `rotator vault-setup` (kv_mount=secret root_path={vault_paths.root_path} "
        f"vnc_path={vault_paths.vnc_path} runs_path={vault_paths.runs_path} "
        "password_policy=ehpc-vnc)."
    )
    assert "s|{kv_mount}|secret|g" in text  # the recipe by hand, as the template says it
    assert "s|secret|secret|g" not in text
    assert policy_is_ours(text)
    assert not policy_is_ours(text.replace('["read"]', '["read", "list"]', 1))


@pytest.mark.asyncio
async def test_vault_setup_enables_a_missing_kv_mount_and_kubernetes_auth(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    mount = f"kv-{vault_paths.prefix.split('/')[0]}"
    settings = vault_paths.settings(openbao, kv_mount=mount, kubernetes_role="rotator-k8s")
    # OpenBao runs outside any cluster here, so it needs the API server's CA explicitly.
    ca = trustme.CA().cert_pem.bytes().decode()
    setup = functools.partial(
        vault_setup,
        settings=settings,
        kubernetes_host="https://127.0.0.1:6443",
        kubernetes_namespace="ops",
        kubernetes_ca_cert=ca,
    )
    async with VaultClient(settings) as admin:
        first = await setup(admin)
        second = await setup(admin)
        role = await admin.read("auth/kubernetes/role/rotator-k8s")
    assert first[0] == f"enabled KV version 2 at {mount}/"
    assert "kubernetes role rotator-k8s created" in first
    assert second[0] == f"KV version 2 at {mount}/ exists"
    assert "kubernetes role rotator-k8s unchanged" in second
    assert role is not None
    assert role["data"]["bound_service_account_names"] == ["rotator"]
    assert role["data"]["bound_service_account_namespaces"] == ["ops"]
    assert role["data"]["token_policies"] == ["rotator"]


@pytest.mark.asyncio
async def test_vault_setup_refuses_kv_version_1(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    mount = f"kv1-{vault_paths.prefix.split('/')[0]}"
    settings = vault_paths.settings(openbao, kv_mount=mount)
    async with VaultClient(settings) as admin:
        await admin.write(f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "1"}})
        with pytest.raises(Exception, match="KV version 1; rotator needs version 2"):
            await vault_setup(admin, settings)


@pytest.mark.asyncio
async def test_rotator_policy_allows_a_whole_rotation(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    rotator, _ = await _setup(openbao, vault_paths)
    settings = vault_paths.settings(openbao, token=rotator)
    async with VaultClient(settings) as client:
        store = VaultStore(client)
        assert await store.list_root_clusters() == ["c-1"]
        assert (await store.read_root("c-1")).password.reveal() == "Root12"
        password = await store.generate_password("ehpc-vnc")
        assert is_valid_vnc_password(password.reveal())
        state = await store.read_vnc("c-1")
        staged = await store.stage_pending(state, password, region="r", owner="o", claim_until=NOW)
        await store.commit(staged, request_id="req-1", rotated_at=NOW, region="r")
        await store.update_status("c-1", status="rotated", attempts=1, last_error_code="")
        await store.update_status("c-new", status="failed", last_error_code="X")  # creates
        cleared = await store.clear_pending(
            await store.stage_pending(await store.read_vnc("c-1"), Secret("Zz12yy"), region="r")
        )
        assert cleared.password == password
        assert (await store.list_vnc_metadata())["c-1"]["status"] == "rotated"
        await store.write_run_report("run-1", {"outcomes": {"c-1": "rotated"}})
        assert await store.read_run_report("run-1") == {"outcomes": {"c-1": "rotated"}}
        assert await store.health()  # lookup-self is in the policy itself


@pytest.mark.asyncio
async def test_a_policy_from_before_the_pending_scan_still_lists_the_status(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """An upgraded rotator under the previous release's policy (no LIST of the pending
    records): status and serve's schedule still load, without the in-flight scan."""
    await _setup(openbao, vault_paths)
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        template = default_policy_dir().joinpath(ACL_POLICIES["rotator"]).read_text("utf-8")
        policy = render_policy(template, settings, password_policy="ehpc-vnc")
        pending_list = f'path "{settings.kv_mount}/metadata/{settings.pending_path}" {{'
        assert pending_list in policy
        head, tail = policy.split(pending_list, 1)
        older = head + tail.split("}", 1)[1]
        await admin.write(f"sys/policies/acl/rotator-older-{vault_paths.prefix}", {"policy": older})
        token = await create_token(admin, policies=[f"rotator-older-{vault_paths.prefix}"])
    async with VaultClient(vault_paths.settings(openbao, token=token)) as client:
        listed = await VaultStore(client).list_vnc_metadata(in_flight=True)
    assert listed["c-1"]["status"] == "rotated"


@pytest.mark.asyncio
async def test_rotator_policy_denies_everything_else(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    rotator, _ = await _setup(openbao, vault_paths)
    settings = vault_paths.settings(openbao, token=rotator)
    async with VaultClient(settings) as client:
        store = VaultStore(client)
        other = f"other-{vault_paths.prefix}"
        vnc = vault_paths.vnc_path
        attempts: dict[str, Callable[[], Awaitable[object]]] = {
            "write root": lambda: store.write_root("c-1", "root", Secret("Evil12"), None),
            "read other": lambda: client.kv_read("secret", f"{other}/x"),
            "list other": lambda: client.kv_list("secret", other),
            "write other": lambda: client.kv_write("secret", f"{other}/y", {"a": "b"}),
            "delete vnc": lambda: client.request("DELETE", f"secret/metadata/{vnc}/c-1"),
            "destroy vnc": lambda: client.write(f"secret/destroy/{vnc}/c-1", {"versions": [1]}),
            "other password policy": lambda: client.read("sys/policies/password/other/generate"),
            "write policy": lambda: client.write("sys/policies/acl/rotator", {"policy": ""}),
            "create token": lambda: client.write("auth/token/create", {}),
        }
        allowed = []
        for what, attempt in attempts.items():
            try:
                await attempt()
            except VaultPermissionError:
                continue
            allowed.append(what)
        assert allowed == []
        assert (await store.read_root("c-1")).password.reveal() == "Root12"


@pytest.mark.asyncio
async def test_reader_policy_reads_vnc_and_is_denied_root(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    _, reader = await _setup(openbao, vault_paths)
    settings = vault_paths.settings(openbao, token=reader)
    async with VaultClient(settings) as client:
        store = VaultStore(client)
        state = await store.read_vnc("c-1", pending=False)
        assert state.password == Secret("Ab12cd")
        assert "c-1" in await store.list_vnc_metadata()
        with pytest.raises(VaultPermissionError):  # the rotation in flight is private
            await store.read_pending("c-1")
        with pytest.raises(VaultPermissionError):
            await store.read_root("c-1")
        with pytest.raises(VaultPermissionError):
            await store.list_root_clusters()
        with pytest.raises(VaultPermissionError):
            await store.stage_pending(state, Secret("Zz12yy"), region="r")
        with pytest.raises(VaultPermissionError):
            await store.update_status("c-1", status="tampered")
    done = await run_bao(
        openbao, "kv", "get", "-field=password", f"secret/{vault_paths.vnc_path}/c-1", token=reader
    )
    assert (done.returncode, done.stdout) == (0, "Ab12cd")
    refused = await run_bao(
        openbao, "kv", "get", f"secret/{vault_paths.root_path}/c-1", token=reader
    )
    assert refused.returncode != 0
    assert "permission denied" in refused.stderr
    assert "Root12" not in refused.stdout + refused.stderr


def test_policy_templates_render_every_placeholder() -> None:
    settings = VaultSettings(
        kv_mount="kv", root_path="a/root", vnc_path="a/vnc", runs_path="a/runs"
    )
    directory = default_policy_dir()
    for filename in ACL_POLICIES.values():
        text = render_policy(
            directory.joinpath(filename).read_text(encoding="utf-8"),
            settings,
            password_policy="pp",
        )
        assert "{kv_mount}" not in _rules(text)
        assert "{root_path}" not in _rules(text)
        assert "{vnc_path}" not in _rules(text)
    rotator = render_policy(
        directory.joinpath("rotator.hcl").read_text(encoding="utf-8"),
        settings,
        password_policy="pp",
    )
    assert 'path "kv/data/a/root/*"' in rotator
    assert 'path "sys/policies/password/pp/generate"' in rotator


def test_deploy_folder_points_at_the_canonical_policies() -> None:
    deploy = Path(__file__).parents[2] / "deploy" / "vault"
    readme = (deploy / "README.md").read_text(encoding="utf-8")
    for filename in [*ACL_POLICIES.values(), "ehpc-vnc-password.hcl"]:
        assert f"rotator/data/vault/{filename}" in readme
        assert not (deploy / filename).exists()  # one source of truth
