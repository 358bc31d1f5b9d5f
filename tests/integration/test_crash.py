"""Crash injection: SIGKILL a rotating process at varied points; nothing may ever be lost.

Each kill lands after a chosen number of API calls of that run, as the simulator counts them
(0: during start-up), so the kills are spread over the phases whatever the machine's load. The
invariant is checked right after every kill (Vault holds each cluster's real VNC password as
the committed one or the pending one), and a final clean rerun must leave every cluster with
simulator password == Vault password.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import aiohttp
import pytest

from rotator.sim import FaultConfig
from rotator.vault.devserver import OpenBaoServer
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio,
    pytest.mark.slow,
    # About 100 s on a quiet 2-core machine, most of it waiting for dead runs' claims to
    # expire; until_calls guards against a hang far sooner than this.
    pytest.mark.timeout(600),
]

# Kills that leave a claim make the next run wait for it to expire (about 2 x (request +
# connect timeout + 5 s)), so each costs seconds; the model checker (test_rotation_model.py)
# covers the interleavings exhaustively in virtual time, these kills prove the real process.
KILLS = 20


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
            "ehpc": {"request_timeout": "1s", "connect_timeout": "0.5s"},
        },
    )
    rng = random.Random(1234)
    kills = runs = 0
    while kills < KILLS:
        runs += 1
        assert runs <= 2 * KILLS, "runs keep finishing before the kill; slow the simulator"
        before = await api_calls(fleet)
        process = await fleet.start_cli("rotate", "--all", "--force")
        drains = [asyncio.create_task(_drain(s)) for s in (process.stdout, process.stderr)]
        # The kill instant is keyed to observed progress, not to a guessed delay: a loaded
        # machine may take seconds just to import (issue 9, finding 13). 0 calls: kill during
        # start-up; otherwise after the k-th API call of this run, wherever the run then is.
        # --force: after the first runs nothing is due, and only runs that call the API can be
        # killed mid-rotation.
        wanted = rng.choice([0, 1, 2, 3, 5, 8, 13])
        await until_calls(fleet, process, before + wanted)
        if process.returncode is None:
            process.kill()
        await process.wait()
        await asyncio.gather(*drains)
        if process.returncode == -9:
            kills += 1
        mismatches = await fleet.vault_mismatches()
        assert mismatches == {}, f"after run {runs} ({kills} kills): {mismatches}"
    changed = sum(1 for c in (await fleet.admin_clusters()).values() if c["change_count"])
    assert changed > 0, "the killed runs must have reached the API"

    # A clean rerun converges: claims of the dead runs expire, pending passwords are re-applied.
    final = await fleet.cli("rotate", "--all", "--force", "--json")
    clusters = await fleet.admin_clusters()
    report = json.loads(final.stdout)
    # A stopped cluster may keep a dead run's pending password (it may have been applied before
    # the cluster stopped): reported as "pending", which makes the run PartFailure (finding 11).
    for row in report["clusters"]:
        if clusters[row["cluster_id"]]["status"] == "running":
            assert row["outcome"] == "rotated", row
        else:
            assert row["outcome"] in ("skipped", "pending"), row
    pending = report["counts"]["pending"]
    assert (final.code, report["status"]) == ((3, "PartFailure") if pending else (0, "Success"))
    assert await fleet.vault_mismatches() == {}
    assert await fleet.committed_mismatches() == {}
    async with fleet.store() as store:
        for cluster_id, cluster in clusters.items():
            state = await store.read_vnc(cluster_id)
            if cluster["status"] == "running":
                assert state.password is not None
                assert state.password.reveal() == cluster["vnc_password"]
                assert state.pending_password is None


async def api_calls(fleet: Fleet) -> int:
    """ModifyVisualServicePasswd calls the simulator accepted so far (its admin API)."""
    async with aiohttp.ClientSession() as session:
        stats = await SimAdmin(session, fleet.sim).stats()
    per_second = stats.get("accepted", {}).get("ModifyVisualServicePasswd", {})
    return sum(int(n) for n in per_second.values())


async def until_calls(
    fleet: Fleet, process: asyncio.subprocess.Process, count: int, *, within: float = 120.0
) -> None:
    """Return once the simulator saw ``count`` calls or the process ended; a generous overall
    timeout only guards against a hang."""
    deadline = asyncio.get_running_loop().time() + within
    while process.returncode is None and await api_calls(fleet) < count:
        assert asyncio.get_running_loop().time() < deadline, "no progress for 120 s"
        await asyncio.sleep(0.01)


async def _drain(stream: asyncio.StreamReader | None) -> None:
    """Read a child's output so a full pipe never blocks it."""
    if stream is not None:
        while await stream.read(65536):
            pass
