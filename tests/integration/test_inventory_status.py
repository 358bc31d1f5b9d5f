"""What ``plan`` and ``rotate`` learn before touching anything: a run over a Vault inventory asks
ListClusters which clusters are running first (``inventory.check_status``): a stopped cluster
costs no API call and no Vault write; when the list is refused, the run goes on as before and
says how to fix it. And ``plan`` never writes, not even to migrate an old-layout secret."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from rotator.sim import FaultConfig
from rotator.vault.devserver import OpenBaoServer
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def _fleet_with_one_stopped(
    tmp_path: Path,
    sim_factory: SimFactory,
    openbao: OpenBaoServer,
    vault_paths: VaultPaths,
    **overrides: dict[str, object],
) -> tuple[Fleet, SimAdmin, aiohttp.ClientSession, str]:
    sim = await sim_factory(clusters=6, regions=("cn-hangzhou",), faults=FaultConfig())
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths, overrides=overrides)
    session = aiohttp.ClientSession()
    admin = SimAdmin(session, sim)
    stopped = sorted(await admin.clusters())[0]
    await admin.set_running_except({stopped})
    await admin.reset_stats()
    return fleet, admin, session, stopped


async def test_a_refused_list_falls_back_to_asking_the_api_and_says_how_to_fix_it(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    fleet, admin, session, stopped = await _fleet_with_one_stopped(
        tmp_path, sim_factory, openbao, vault_paths
    )
    async with session:
        # An AccessKey whose RAM policy allows ModifyVisualServicePasswd only.
        await admin.request(
            "POST", "errors", {"code": "Forbidden.RAM", "actions": ["ListClusters"], "count": 5}
        )
        result = await fleet.cli("rotate", "--all", "--json")
    assert result.code == 0, result.stderr[-2000:]
    rows = {row["cluster_id"]: row for row in json.loads(result.stdout)["clusters"]}
    assert (rows[stopped]["outcome"], rows[stopped]["code"]) == ("skipped", "InvalidClusterStatus")
    assert all(r["outcome"] == "rotated" for i, r in rows.items() if i != stopped)
    assert "cluster_status_unknown" in result.stderr
    assert "Forbidden.RAM" in result.stderr
    assert "inventory.check_status = false" in result.stderr
    assert await fleet.vault_mismatches() == {}


async def test_check_status_off_never_calls_list_clusters(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    fleet, admin, session, stopped = await _fleet_with_one_stopped(
        tmp_path, sim_factory, openbao, vault_paths, inventory={"check_status": False}
    )
    async with session:
        result = await fleet.cli("rotate", "--all", "--json")
        stats = await admin.stats()
    assert result.code == 0, result.stderr[-2000:]
    assert "ListClusters" not in stats["accepted"]
    rows = {row["cluster_id"]: row for row in json.loads(result.stdout)["clusters"]}
    assert (rows[stopped]["outcome"], rows[stopped]["code"]) == ("skipped", "InvalidClusterStatus")


async def test_plan_reads_an_old_layout_secret_without_migrating_it(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    fleet, _admin, session, _stopped = await _fleet_with_one_stopped(
        tmp_path, sim_factory, openbao, vault_paths
    )
    await session.close()
    cluster_id = sorted(await fleet.admin_clusters())[-1]
    vnc = f"{vault_paths.vnc_path}/{cluster_id}"
    async with fleet.store() as store:
        # Written by the first release: the password in flight inside the vnc record.
        old = {"cluster_id": cluster_id, "password": "Cur000", "pending_password": "Old222"}
        await store.client.kv_write("secret", vnc, old)
        before = await store.client.kv_metadata("secret", vnc)

    plan = await fleet.cli("plan", "--cluster", cluster_id, "--json")

    assert plan.code == 0, plan.stderr[-2000:]
    (row,) = json.loads(plan.stdout)["clusters"]
    assert row["action"] == "rotate"
    assert "pending password" in row["reason"]
    async with fleet.store() as store:
        assert await store.client.kv_metadata("secret", vnc) == before  # no new version
        assert await store.read_pending(cluster_id) is None  # nothing moved
