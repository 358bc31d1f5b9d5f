"""What a rotation costs Vault, counted by OpenBao itself (issue 10 §5, issue 14 §2).

``make bench`` divides OpenBao's own request counter by the rotations of ``rotator rotate
--all``, inventory included; this test counts the same way, on a small fleet, for a cluster's
first rotation and for the steady state (a forced re-rotation), through the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from bench.vaultcount import VaultRequests
from rotator.sim import FaultConfig
from rotator.vault.devserver import OpenBaoServer
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

CLUSTERS = 20
# Per run, whatever the fleet size (measured: 5): the token look-up, the inventory's LIST,
# the run report and its pruning.
RUN_OVERHEAD = 5


async def _run(fleet: Fleet, count: VaultRequests, *args: str) -> tuple[int, int]:
    """(Vault requests, clusters rotated) of one ``rotator rotate`` process."""
    before = count()
    result = await fleet.cli("rotate", "--all", "--json", *args)
    after = count()
    assert result.code == 0, result.stderr[-2000:]
    assert before is not None, "OpenBao's request counter is unreadable"
    assert after is not None, "OpenBao's request counter is unreadable"
    outcomes = json.loads(result.stdout)["clusters"]
    rotated = sum(1 for c in outcomes if c["outcome"] == "rotated")
    return after - before, rotated


async def test_a_rotation_costs_at_most_four_vault_requests_end_to_end(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=CLUSTERS, regions=("cn-hangzhou",), faults=FaultConfig())
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    async with aiohttp.ClientSession() as session:
        await SimAdmin(session, sim).set_running_except()  # the seed stops a few
    count = VaultRequests(openbao.addr, None, openbao.root_token.reveal())

    first, rotated = await _run(fleet, count)
    assert rotated == CLUSTERS
    steady, again = await _run(fleet, count, "--force")
    assert again == CLUSTERS
    # The root credential read (it carries RunasUserPassword) is one of the four.
    assert steady <= 4 * CLUSTERS + RUN_OVERHEAD, steady
    assert first <= 4 * CLUSTERS + RUN_OVERHEAD, first
    assert await fleet.vault_mismatches() == {}


async def test_a_stopped_cluster_costs_three_reads_no_write_and_no_api_call(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=CLUSTERS, regions=("cn-hangzhou",), faults=FaultConfig())
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    async with aiohttp.ClientSession() as session:
        admin = SimAdmin(session, sim)
        stopped = sorted(await admin.clusters())[:3]
        await admin.set_running_except(stopped)
        await admin.reset_stats()
        count = VaultRequests(openbao.addr, None, openbao.root_token.reveal())

        before = count()
        result = await fleet.cli("rotate", "--all", "--json")
        after = count()
        stats = await admin.stats()
    assert before is not None, "OpenBao's request counter is unreadable"
    assert after is not None, "OpenBao's request counter is unreadable"
    report = json.loads(result.stdout)
    rows = {row["cluster_id"]: row for row in report["clusters"]}
    for cluster_id in stopped:
        # ListClusters said so before anything was staged: skipped, not an API refusal.
        assert (rows[cluster_id]["outcome"], rows[cluster_id]["code"]) == (
            "skipped",
            "ClusterNotRunning",
        )
    running = CLUSTERS - len(stopped)
    assert sum(1 for row in rows.values() if row["outcome"] == "rotated") == running
    calls = stats["accepted"].get("ModifyVisualServicePasswd", {})
    assert sum(int(n) for n in calls.values()) == running, "a stopped cluster was called"
    async with fleet.store() as store:
        for cluster_id in stopped:
            assert await store.read_pending(cluster_id) is None, "staged for a stopped cluster"
    # Each stopped cluster: its root (inventory), committed and pending records, read only.
    assert after - before <= 4 * running + 3 * len(stopped) + RUN_OVERHEAD, after - before
