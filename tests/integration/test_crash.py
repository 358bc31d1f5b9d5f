"""Crash injection: SIGKILL a rotating process at random instants; nothing may ever be lost.

The invariant is checked right after every kill (Vault holds each cluster's real VNC password
as ``password`` or ``pending_password``), and a final clean rerun must leave every cluster with
simulator password == Vault password.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from rotator.sim import FaultConfig
from rotator.vault.devserver import OpenBaoServer
from tests.support.fleet import Fleet
from tests.support.sim import SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio, pytest.mark.slow]

KILLS = 50


async def test_sigkill_at_random_points_never_loses_a_password(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=24,
        regions=("cn-hangzhou", "cn-shanghai"),
        seed=5,
        # Latency spreads each rotation over time, so kills land in every phase: start-up,
        # inventory, staging, waiting for the API, committing, bookkeeping.
        faults=FaultConfig(latency_ms=20, jitter_ms=60, drop_rate=0.05),
    )
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides={
            "rotation": {"concurrency": 8, "claim_ttl": "1s", "cluster_deadline": "30s"},
            "ehpc": {"request_timeout": "1s"},
        },
    )
    rng = random.Random(1234)
    kills = runs = 0
    while kills < KILLS:
        runs += 1
        assert runs <= 2 * KILLS, "runs keep finishing before the kill; slow the simulator"
        process = await fleet.start_cli("rotate", "--all")
        await asyncio.sleep(rng.uniform(0.2, 1.4))
        if process.returncode is None:
            process.kill()
        await process.wait()
        if process.returncode == -9:
            kills += 1
        mismatches = await fleet.vault_mismatches()
        assert mismatches == {}, f"after run {runs} ({kills} kills): {mismatches}"
    changed = sum(1 for c in (await fleet.admin_clusters()).values() if c["change_count"])
    assert changed > 0, "the killed runs must have reached the API sometimes"

    # A clean rerun converges: claims of the dead runs expire, pending passwords are re-applied.
    final = await fleet.cli("rotate", "--all", "--json")
    assert final.code == 0, final.stderr[-3000:]
    assert json.loads(final.stdout)["status"] == "Success"
    assert await fleet.committed_mismatches() == {}
    clusters = await fleet.admin_clusters()
    async with fleet.store() as store:
        for cluster_id, cluster in clusters.items():
            state = await store.read_vnc(cluster_id)
            if cluster["status"] == "running":
                assert state.password is not None
                assert state.password.reveal() == cluster["vnc_password"]
                assert state.pending_password is None
