"""passwords.rule end to end: the legacy profile through OpenBao's password policy and the
simulator, and a run stopped account-wide when the API's rule is not the configured one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.passwd_guard import PASSWD_RULE_MISMATCH
from rotator.engine.report import Outcome, RunStatus
from rotator.engine.runtime import new_run_id
from rotator.passwords import LEGACY_RULE, is_valid_vnc_password
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.setup import default_policy_dir
from rotator.vault.store import VaultStore
from tests.support.fleet import Fleet
from tests.support.sim import SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

REGIONS = ("cn-hangzhou", "cn-shanghai")


async def write_legacy_policy(openbao: OpenBaoServer, vault_paths: VaultPaths) -> str:
    name = "ehpc-vnc-legacy-" + vault_paths.prefix.replace("/", "-")
    text = default_policy_dir().joinpath(LEGACY_RULE.policy_file).read_text(encoding="utf-8")
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        await admin.request("POST", f"sys/policies/password/{name}", json={"policy": text})
    return name


async def test_the_legacy_policy_generates_passwords_the_legacy_rule_accepts(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    name = await write_legacy_policy(openbao, vault_paths)
    async with VaultClient(vault_paths.settings(openbao)) as client:
        store = VaultStore(client)
        passwords = [(await store.generate_password(name)).reveal() for _ in range(40)]
    assert all(is_valid_vnc_password(p, LEGACY_RULE) for p in passwords)
    assert not any(is_valid_vnc_password(p) for p in passwords)
    assert len(set(passwords)) > 30


@pytest.mark.parametrize("source", ["local", "vault"])
async def test_a_run_under_the_legacy_rule_rotates_every_cluster(
    tmp_path: Path,
    sim_factory: SimFactory,
    openbao: OpenBaoServer,
    vault_paths: VaultPaths,
    source: str,
) -> None:
    sim = await sim_factory(clusters=12, regions=REGIONS, passwd_rule="legacy")
    passwords: dict[str, object] = {"rule": "legacy", "source": source}
    if source == "vault":
        passwords["policy"] = await write_legacy_policy(openbao, vault_paths)
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides={"passwords": passwords}
    )
    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id())

    assert summary.status is RunStatus.SUCCESS, summary.to_json()
    clusters = await fleet.admin_clusters()
    changed = [c for c in clusters.values() if c["change_count"]]
    assert changed
    assert all(is_valid_vnc_password(c["vnc_password"], LEGACY_RULE) for c in changed)
    assert await fleet.committed_mismatches() == {}


async def test_an_api_enforcing_another_rule_stops_the_run_naming_the_setting(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    # The API went back to the legacy rule; rotator still follows the current one.
    sim = await sim_factory(clusters=30, regions=REGIONS, passwd_rule="legacy")
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides={"rotation": {"concurrency": 2}}
    )
    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id())

    mismatch = [o for o in summary.outcomes if o.code == PASSWD_RULE_MISMATCH]
    assert mismatch
    assert all(o.account_wide for o in mismatch)
    assert "passwords.rule" in (mismatch[0].message or "")
    assert "affects every cluster" in (summary.stopped_reason or "")
    assert summary.counts["not_attempted"] >= 20
    assert summary.counts["rotated"] == 0
    # Few calls were spent finding out: not every cluster's whole retry schedule.
    assert summary.api_calls <= 10
    assert all(c["change_count"] == 0 for c in (await fleet.admin_clusters()).values())
    assert not [o for o in summary.outcomes if o.outcome is Outcome.COMMIT_FAILED]
