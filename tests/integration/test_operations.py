"""Running rotator on a schedule, as an operator would (issue 10 §1, §3, §6; issue 9 #14).

Real processes against the simulator and a real OpenBao; kill and seal instants are keyed to
observed progress (the simulator's change counts), never to wall-clock guesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.runtime import new_run_id
from rotator.sim import FaultConfig
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, start_openbao
from rotator.vault.setup import vault_setup
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

REGIONS = ("cn-hangzhou", "cn-shanghai")


def _changes(clusters: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {cid: int(c["change_count"]) for cid, c in clusters.items()}


async def _vault_keys(fleet: Fleet, path: str) -> list[str]:
    async with fleet.store() as store:
        return await store.client.kv_list(store.settings.kv_mount, path)


async def test_rotate_rotates_only_what_is_due_and_plan_says_exactly_that(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=12, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    ids = sorted(await fleet.admin_clusters())
    victim = ids[0]
    async with aiohttp.ClientSession() as session:
        await SimAdmin(session, sim).patch_cluster(victim, root_password="changed-by-hand-1")

    first = await fleet.cli("rotate", "--all", "--json")
    assert first.code == 3, first.stderr[-2000:]
    after_first = _changes(await fleet.admin_clusters())

    # The plan for the next scheduled run: only the failed cluster (and any that never got a
    # password, e.g. stopped ones) would rotate; the rest are not due.
    plan = await fleet.cli("plan", "--all", "--json")
    assert plan.code == 0, plan.stderr[-2000:]
    rows = {r["cluster_id"]: r for r in json.loads(plan.stdout)["clusters"]}
    would_rotate = {cid for cid, r in rows.items() if r["action"] == "rotate"}
    assert victim in would_rotate
    assert rows[victim]["code"] is None
    rotated_first = {
        c["cluster_id"] for c in json.loads(first.stdout)["clusters"] if c["outcome"] == "rotated"
    }
    assert rotated_first
    assert not would_rotate & rotated_first
    assert {rows[c]["code"] for c in rotated_first} == {"NotDue"}

    # The scheduled rerun (a CronJob retry, the next night): nothing rotated twice.
    second = await fleet.cli("rotate", "--all", "--json")
    summary = json.loads(second.stdout)
    skipped_as = {"NotDue", "ClusterNotRunning"}
    attempted = {c["cluster_id"] for c in summary["clusters"] if c["code"] not in skipped_as}
    assert attempted == would_rotate  # plan showed exactly what rotate did
    # ListClusters' statuses: what plan skips as not running, rotate skips too.
    assert {c for c, r in rows.items() if r["code"] == "ClusterNotRunning"} == {
        c["cluster_id"] for c in summary["clusters"] if c["code"] == "ClusterNotRunning"
    }
    not_due = [c for c in summary["clusters"] if c["code"] == "NotDue"]
    assert {c["cluster_id"] for c in not_due} == rotated_first
    assert all(c["outcome"] == "skipped" for c in not_due)
    after_second = _changes(await fleet.admin_clusters())
    assert {c: after_second[c] for c in rotated_first} == {c: after_first[c] for c in rotated_first}

    # --force is how to rotate now (an incident); plan --force shows it first.
    one = sorted(rotated_first)[0]
    forced_plan = await fleet.cli("plan", "--cluster", one, "--force", "--json")
    (row,) = json.loads(forced_plan.stdout)["clusters"]
    assert row["action"] == "rotate"
    assert "forced" in row["reason"]
    forced = await fleet.cli("rotate", "--cluster", one, "--force", "--json")
    assert forced.code == 0, forced.stderr[-2000:]
    assert _changes(await fleet.admin_clusters())[one] == after_second[one] + 1
    assert await fleet.vault_mismatches() == {}


async def test_without_credentials_rotate_exits_4_at_once_and_touches_nothing_in_vault(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=20, regions=REGIONS)
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        # Passwords from Vault: even that read comes after the credentials check.
        overrides={"credentials": {"source": "default"}, "passwords": {"source": "vault"}},
    )
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        await vault_setup(admin, settings)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}

    result = await fleet.cli("rotate", "--all", env=env)

    assert result.code == 4, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert "CredentialsUnavailable" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert await _vault_keys(fleet, vault_paths.vnc_path) == []
    assert await _vault_keys(fleet, vault_paths.runs_path) == []
    assert all(c["change_count"] == 0 for c in (await fleet.admin_clusters()).values())


async def test_a_run_that_finds_no_cluster_is_not_a_success_unless_allowed(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=3, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths, seed_roots=False)

    empty = await fleet.cli("rotate", "--all")
    assert empty.code == 4, empty.stderr[-2000:]
    assert "no cluster found" in empty.stderr
    assert vault_paths.root_path in empty.stderr  # where it looked
    assert "Traceback" not in empty.stderr

    allowed = await fleet.cli("rotate", "--all", "--allow-empty", "--json")
    assert allowed.code == 0, allowed.stderr[-2000:]
    assert json.loads(allowed.stdout)["total"] == 0


async def test_unknown_cluster_ids_are_refused_up_front(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=4, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    known = sorted(await fleet.admin_clusters())[0]

    result = await fleet.cli("rotate", "--cluster", known, "--cluster", "ehpc-hz-typo1")

    assert result.code == 2, result.stderr[-2000:]
    assert "ehpc-hz-typo1" in result.stderr
    assert "Traceback" not in result.stderr
    assert all(c["change_count"] == 0 for c in (await fleet.admin_clusters()).values())

    # --region alone chooses every cluster of that region.
    clusters = await fleet.admin_clusters()
    dry = await fleet.cli("rotate", "--region", "cn-hangzhou", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr[-2000:]
    rows = json.loads(dry.stdout)["clusters"]
    assert sorted(r["cluster_id"] for r in rows) == sorted(
        c for c, v in clusters.items() if v["region"] == "cn-hangzhou"
    )


async def test_a_failed_run_says_why_at_warning_level_and_names_the_account_error_once(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=20, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    (tmp_path / "ak-secret").write_text("not-the-secret", encoding="utf-8")

    result = await fleet.cli("rotate", "--all", "--log-level", "warning", "--concurrency", "4")

    assert result.code == 4, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stderr.splitlines()]
    finished = [e for e in events if e["event"] == "run_finished"]
    assert len(finished) == 1
    assert finished[0]["level"] == "error"
    # Counts, readable: the redactor once logged {"IncorrectCredential": "******"}.
    assert finished[0]["failures"]["SignatureDoesNotMatch"] >= 1
    assert all(isinstance(v, int) for v in finished[0]["failures"].values())
    assert any(e["event"] == "cluster_failed" and e["level"] == "warning" for e in events)
    # The table (stdout, not a terminal): what is wrong, once; no wrapped lines, no RequestIds.
    assert result.stdout.count("the AccessKey secret is wrong") == 1
    assert "req " not in result.stdout


def _unseal_key(server: OpenBaoServer) -> str:
    match = re.search(r"Unseal Key: (\S+)", server.log_path.read_text("utf-8", "replace"))
    assert match, "the dev server log shows no unseal key"
    return match.group(1)


@pytest.mark.slow
async def test_a_vault_sealed_mid_run_trips_the_breaker_and_ends_the_run(
    tmp_path: Path, sim_factory: SimFactory, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=60, regions=REGIONS, faults=FaultConfig(latency_ms=80, jitter_ms=40)
    )
    # A server of our own: sealing the session's shared one would break other tests.
    with start_openbao(tmp_path / "bao") as server:
        fleet = await Fleet.create(
            tmp_path,
            sim,
            server,
            vault_paths,
            overrides={
                "rotation": {"concurrency": 4, "vault_failure_limit": 6},
                # Without the breaker each cluster would retry Vault for ~10 s.
                "retry": {"initial_wait": "1s", "max_wait": "5s", "vault_attempts": 6},
            },
        )
        async with fleet.runtime() as runtime:
            targets = await resolve_targets(runtime, Selection(all=True))
            stop = asyncio.Event()  # the caller's (a daemon's) stop: the breaker must not set it
            run = asyncio.create_task(runtime.rotate(targets, run_id=new_run_id(), stop=stop))
            for _ in range(1200):  # until some clusters really changed
                changed = sum(
                    1 for c in (await fleet.admin_clusters()).values() if c["change_count"]
                )
                if changed >= 6 or run.done():
                    break
                await asyncio.sleep(0.05)
            assert not run.done(), "the run finished before Vault could be sealed"
            client = server.client()
            try:
                await asyncio.to_thread(client.sys.seal)
                summary = await asyncio.wait_for(run, 120)
                await asyncio.to_thread(client.sys.submit_unseal_key, _unseal_key(server))
            finally:
                client.adapter.close()

        assert summary.stopped_reason is not None
        assert "Vault failed" in summary.stopped_reason
        assert not stop.is_set()
        assert summary.counts["not_attempted"] >= 30  # it stopped starting clusters
        assert len(summary.outcomes) == 60
        assert summary.exit_code in (3, 4)
        # The invariant held through the seal: every changed cluster's password is in Vault.
        assert await fleet.vault_mismatches() == {}


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_under_a_progress_bar_per_cluster_lines_do_not_redraw_it(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=30, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    primary, terminal = pty.openpty()
    try:
        process = await fleet.start_cli_with_stderr(
            terminal, "rotate", "--all", "--log-level", "info"
        )
        os.close(terminal)
        terminal = -1
        reader = asyncio.create_task(asyncio.to_thread(_read_all, primary))
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        screen = (await asyncio.wait_for(reader, 60)).decode("utf-8", "replace")
    finally:
        os.close(primary)
        if terminal >= 0:
            os.close(terminal)

    assert process.returncode in (0, 3), screen[-2000:]
    assert "rotating" in screen  # the bar was shown
    assert "cluster_done" not in screen  # 30 per-cluster lines would have redrawn it 30 times
    assert "run_started" in screen  # run-level lines still print
    assert "rotated" in out.decode()


async def test_the_due_check_costs_no_extra_vault_read_for_a_cluster_that_rotates(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=6, regions=("cn-hangzhou",), faults=FaultConfig())
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    async with fleet.runtime() as runtime:
        store = runtime.store
        reads: list[str] = []
        real_read = store.read_vnc

        async def counted(cluster_id: str, *, pending: bool = True, migrate: bool = True) -> Any:
            reads.append(cluster_id)
            return await real_read(cluster_id, pending=pending, migrate=migrate)

        store.read_vnc = counted  # type: ignore[method-assign]  # counts calls to real Vault
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id(), skip_not_due=True)
    rotated = [o.cluster_id for o in summary.outcomes if o.outcome.value == "rotated"]
    assert rotated
    # One read per rotated cluster: the due check's read is the one the rotation builds on.
    assert all(reads.count(cid) == 1 for cid in rotated), sorted(reads)
