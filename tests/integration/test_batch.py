"""Fleet runs end to end: the simulator and a real OpenBao over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.ratelimit import RegionLimiter
from rotator.engine.report import Outcome, RunStatus
from rotator.engine.runtime import new_run_id
from rotator.sim import FaultConfig
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.setup import vault_setup
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths, create_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

REGIONS = ("cn-hangzhou", "cn-shanghai", "cn-beijing")


@pytest.mark.slow
async def test_fault_storm_over_1000_clusters_loses_nothing(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=1000,
        regions=REGIONS,
        seed=11,
        faults=FaultConfig(
            service_unavailable_rate=0.3,
            conflict_rate=0.03,
            conflict_seconds=0.2,
            drop_rate=0.02,
            latency_ms=2,
            jitter_ms=8,
            qps_limit={"ModifyVisualServicePasswd": 400},
        ),
    )
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides={"rotation": {"concurrency": 48}, "retry": {"attempts": 10}},
    )
    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id())

    clusters = await fleet.admin_clusters()
    assert len(summary.outcomes) == 1000
    not_running = {cid for cid, c in clusters.items() if c["status"] != "running"}
    for outcome in summary.outcomes:
        if outcome.cluster_id in not_running:
            assert outcome.outcome is Outcome.SKIPPED
            assert outcome.code == "ClusterNotRunning"  # ListClusters said so: no API call
        elif outcome.outcome is not Outcome.ROTATED:
            # Only a transient code may be left over once retries ran out.
            assert outcome.code in {"ServiceUnavailable", "ConflictOpt", "ConnectionDropped"}
    rotated = [o for o in summary.outcomes if o.outcome is Outcome.ROTATED]
    assert len(rotated) >= 900
    assert await fleet.vault_mismatches() == {}
    committed = await fleet.committed_mismatches()
    assert not committed.keys() & {o.cluster_id for o in rotated}


async def test_the_simulators_counts_never_exceed_the_configured_rate(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=150, regions=REGIONS, faults=FaultConfig(latency_ms=5, jitter_ms=20)
    )
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides={"ehpc": {"rate_limit": "20/1s"}, "rotation": {"concurrency": 32}},
    )
    async with fleet.runtime() as runtime:
        watcher = WatchingLimiter(runtime.limiter)
        runtime.limiter = watcher
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id())
    assert summary.counts["failed"] == 0

    async with aiohttp.ClientSession() as session:
        stats = await SimAdmin(session, sim).stats()
    per_region = stats["accepted_by_region"]["ModifyVisualServicePasswd"]
    assert set(per_region) == set(REGIONS)
    for region, seconds in per_region.items():
        busiest = max(seconds.values())
        assert busiest <= 20, f"{region} got {busiest} calls in one second; the limit is 20/1s"
        # And the limit was actually used, not merely respected: the limiter held calls back
        # (its window was full). Observed, not guessed from a busy second's count, which a
        # loaded machine may never reach (issue 9, finding 13).
        assert watcher.held_back[region] > 0, f"{region}: the limiter never held a call back"


class WatchingLimiter(RegionLimiter):
    """Counts the acquires that had to wait for the window (the inner acquire yielded: the
    throttler only sleeps when ``calls`` were sent within the last period)."""

    def __init__(self, inner: RegionLimiter) -> None:
        self.inner = inner
        self.held_back: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        # Everything but acquire (feedback, rates, the summary) is the inner limiter's.
        return getattr(self.inner, name)

    async def acquire(self, region: str) -> None:
        yielded = False

        def mark() -> None:
            nonlocal yielded
            yielded = True

        handle = asyncio.get_running_loop().call_soon(mark)
        try:
            await self.inner.acquire(region)
        finally:
            handle.cancel()
        if yielded:
            self.held_back[region] += 1


async def test_failure_threshold_stops_starting_new_clusters(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=20, regions=("cn-hangzhou",))
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    clusters = sorted(await fleet.admin_clusters())
    async with aiohttp.ClientSession() as session:
        admin = SimAdmin(session, sim)
        for cid in clusters[:6]:  # Vault's root password is now wrong for these
            await admin.patch_cluster(cid, root_password="changed-out-of-band-1")

    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(
            targets, run_id=new_run_id(), max_failures="3", concurrency=1
        )

    assert summary.counts["failed"] == 3
    assert summary.counts["not_attempted"] == len(clusters) - 3
    assert summary.status is RunStatus.FAILURE
    assert "failure threshold" in (summary.stopped_reason or "")
    assert [o.code for o in summary.outcomes if o.outcome is Outcome.FAILED] == [
        "IncorrectCredential"
    ] * 3


async def test_an_account_wide_error_stops_the_run_at_once(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=30, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    (tmp_path / "ak-secret").write_text("not-the-secret", encoding="utf-8")

    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id(), concurrency=2)

    failed = [o for o in summary.outcomes if o.outcome is Outcome.FAILED]
    assert 1 <= len(failed) <= 2  # only what was already in flight
    assert {o.code for o in failed} == {"SignatureDoesNotMatch"}
    assert summary.counts["not_attempted"] == 30 - len(failed)
    assert summary.status is RunStatus.FAILURE
    assert summary.exit_code == 4
    assert all(c["change_count"] == 0 for c in (await fleet.admin_clusters()).values())


async def test_cli_rotate_writes_report_status_and_plan_and_logs_no_secret(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=40,
        regions=REGIONS,
        faults=FaultConfig(service_unavailable_rate=0.2, drop_rate=0.05),
    )
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    (tmp_path / "out").mkdir()  # --report never creates folders
    report = tmp_path / "out" / "report.json"

    result = await fleet.cli(
        "rotate", "--all", "--report", str(report), "--log-level", "debug", "--json"
    )

    assert result.code == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "Success"
    assert summary["counts"]["rotated"] + summary["counts"]["skipped"] == 40
    assert json.loads(report.read_text()) == summary
    for line in result.stderr.splitlines():  # one JSON object per log line
        event = json.loads(line)
        if event.get("event") == "cluster_done":
            assert event["run_id"] == summary["run_id"]
            assert event["cluster_id"]
    assert await fleet.committed_mismatches() == {}

    status = await fleet.cli("status", "--json")
    assert status.code == 0, status.stderr
    rows = {r["cluster_id"]: r for r in json.loads(status.stdout)["clusters"]}
    rotated = [c["cluster_id"] for c in summary["clusters"] if c["outcome"] == "rotated"]
    assert all(rows[c]["status"] == "rotated" for c in rotated)
    assert all(rows[c]["next_rotation_at"] for c in rotated)

    plan = await fleet.cli("plan", "--json")
    assert plan.code == 0, plan.stderr
    assert len(json.loads(plan.stdout)["clusters"]) == 40

    async with fleet.store() as store:
        stored = await store.read_run_report(summary["run_id"])
    assert stored is not None
    assert stored["status"] == "Success"

    everything = result.stdout + result.stderr + report.read_text() + json.dumps(stored)
    everything += status.stdout + status.stderr + plan.stdout + plan.stderr
    leaked = {v for v in await fleet.all_secret_values() if v in everything}
    assert not leaked, f"{len(leaked)} secret values appear in logs or reports"


async def test_cli_exit_codes_for_part_failure_and_bad_config(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=10, regions=("cn-hangzhou",))
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    victim = sorted(await fleet.admin_clusters())[0]
    async with aiohttp.ClientSession() as session:
        await SimAdmin(session, sim).patch_cluster(victim, root_password="rotated-by-hand-1")

    result = await fleet.cli("rotate", "--all", "--json")

    assert result.code == 3, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "PartFailure"
    assert [f["cluster_id"] for f in summary["failures"]["IncorrectCredential"]] == [victim]

    bad = tmp_path / "bad.toml"
    bad.write_text("[rotation]\nconcurrency = 0\n", encoding="utf-8")
    result = await fleet.cli("rotate", "--all", config=bad)
    assert result.code == 2
    assert "rotation.concurrency" in result.stderr
    assert "Traceback" not in result.stderr


async def test_sigterm_mid_run_finishes_in_flight_writes_the_report_and_loses_nothing(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=120, regions=REGIONS, faults=FaultConfig(latency_ms=150, jitter_ms=100)
    )
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides={"rotation": {"concurrency": 6}}
    )
    report = tmp_path / "report.json"
    process = await fleet.start_cli("rotate", "--all", "--report", str(report))
    await _wait_for_changes(fleet, at_least=6)
    process.terminate()
    _, err = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 143, err.decode()[-2000:]
    summary = json.loads(report.read_text())
    assert summary["counts"]["not_attempted"] > 0
    assert summary["counts"]["rotated"] > 0
    assert "stop requested" in summary["stopped_reason"]
    assert await fleet.vault_mismatches() == {}
    assert await fleet.committed_mismatches() == {}


async def _wait_for_changes(fleet: Fleet, *, at_least: int) -> None:
    for _ in range(600):
        clusters = await fleet.admin_clusters()
        if sum(1 for c in clusters.values() if c["change_count"]) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the rotator made no progress")


async def test_a_token_with_only_the_shipped_rotator_policy_can_rotate_the_fleet(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=12, regions=REGIONS)
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides={"passwords": {"source": "vault"}}
    )
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        await vault_setup(admin, settings)
        token = await create_token(admin, policies=["rotator"])
    (tmp_path / "vault-token").write_text(token.reveal(), encoding="utf-8")

    result = await fleet.cli("rotate", "--all", "--json")

    assert result.code == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["status"] == "Success"
    assert await fleet.committed_mismatches() == {}
    assert (await fleet.cli("status", "--json")).code == 0


async def test_discovery_and_filters_choose_the_right_clusters(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=30, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    clusters = await fleet.admin_clusters()
    in_hangzhou = sorted(c for c, v in clusters.items() if v["region"] == "cn-hangzhou")
    excluded = in_hangzhou[0]

    plan = await fleet.cli(
        "rotate",
        "--all",
        "--discover",
        "--region",
        "cn-hangzhou",
        "--exclude",
        excluded,
        "--dry-run",
        "--json",
    )
    assert plan.code == 0, plan.stderr[-2000:]
    rows = json.loads(plan.stdout)["clusters"]
    assert sorted(r["cluster_id"] for r in rows) == in_hangzhou[1:]
    stopped = {c for c, v in clusters.items() if v["status"] != "running"}
    assert {r["cluster_id"] for r in rows if r["action"] == "skip"} == stopped & set(
        in_hangzhou[1:]
    )
    assert all(v["change_count"] == 0 for v in (await fleet.admin_clusters()).values())

    one = next(c for c in in_hangzhou[1:] if c not in stopped)
    result = await fleet.cli("rotate", "--cluster", one, "--json")
    assert result.code == 0, result.stderr[-2000:]
    assert [c["cluster_id"] for c in json.loads(result.stdout)["clusters"]] == [one]
    after = await fleet.admin_clusters()
    assert [c for c, v in after.items() if v["change_count"]] == [one]

    usage = await fleet.cli("rotate")
    assert usage.code == 2
    assert "--all" in usage.stderr
