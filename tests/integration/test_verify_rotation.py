"""Rotation with verify.enabled, end to end: the CLI, the simulator's visual service, OpenBao.

Every rotated cluster must come out ``verified``; a silent no-op (the API says OK and changes
nothing) must come out ``verify_failed``; and no run may ever trip the simulator's lockout.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.report import Outcome, RunStatus, Verified
from rotator.engine.runtime import new_run_id
from rotator.secret import Secret
from rotator.sim import FaultConfig, Simulator
from rotator.vault.devserver import OpenBaoServer
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

REGIONS = ("cn-hangzhou", "cn-shanghai", "cn-beijing")


def _verify(url: str) -> dict[str, dict[str, object]]:
    return {"verify": {"enabled": True, "url": url, "timeout": "20s"}}


async def _vnc_counts(sim: Simulator) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        result: dict[str, Any] = await SimAdmin(session, sim).request("GET", "vnc")
        return result


def _assert_no_lockout(counts: dict[str, Any], *, allowed_failures: int = 0) -> None:
    assert all(c["lockouts"] == 0 and c["refused"] == 0 for c in counts.values()), counts
    assert sum(c["failed_attempts"] for c in counts.values()) == allowed_failures, counts


async def test_cli_rotate_verifies_every_rotated_cluster_through_faults(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=40,
        regions=REGIONS,
        faults=FaultConfig(service_unavailable_rate=0.2, drop_rate=0.05),
    )
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides=_verify(sim.vnc_url + "/_vnc/{cluster_id}")
    )
    report = tmp_path / "report.json"

    result = await fleet.cli("rotate", "--all", "--json", "--report", str(report))

    assert result.code == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "Success"
    rotated = [c for c in summary["clusters"] if c["outcome"] == "rotated"]
    assert len(rotated) == summary["counts"]["rotated"] > 30
    assert {c["verified"] for c in rotated} == {"verified"}
    assert {c["verified"] for c in summary["clusters"] if c["outcome"] != "rotated"} == {
        "not_checked"
    }
    assert summary["verification"]["verified"] == len(rotated)
    counts = await _vnc_counts(sim)
    assert {cid for cid, c in counts.items() if c["successes"]} == {
        c["cluster_id"] for c in rotated
    }
    assert all(c["successes"] == 1 for c in counts.values())  # exactly one check each
    _assert_no_lockout(counts)
    async with fleet.store() as store:
        stored = await store.read_run_report(summary["run_id"])
    assert stored is not None
    assert str(stored["clusters_columns"]).endswith(",verified")
    everything = result.stdout + result.stderr + report.read_text() + json.dumps(stored)
    leaked = {v for v in await fleet.all_secret_values() if v in everything}
    assert not leaked, f"{len(leaked)} secret values appear in logs or reports"


async def test_a_silent_no_op_is_caught_as_verify_failed_and_never_rolled_back(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=6, regions=REGIONS)
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides=_verify(sim.vnc_url + "/_vnc/{cluster_id}")
    )
    running = sorted(c.id for c in sim.inventory.running())
    victims, healthy = running[:2], running[2:4]
    sim.faults = FaultConfig(silent_noop_rate=1.0)
    args = [a for cid in victims for a in ("--cluster", cid)]

    result = await fleet.cli("rotate", *args, "--json")

    assert result.code == 3, result.stderr[-2000:]  # PartFailure
    summary = json.loads(result.stdout)
    assert summary["status"] == "PartFailure"
    assert {c["cluster_id"]: (c["outcome"], c["verified"]) for c in summary["clusters"]} == {
        cid: ("rotated", "verify_failed") for cid in victims
    }
    failed = summary["failures"]["VncAuthFailed"]
    assert sorted(f["cluster_id"] for f in failed) == victims
    assert all("rotator rotate --cluster" in f["message"] for f in failed)
    assert any(
        json.loads(line).get("event") == "vnc_verification"
        and json.loads(line).get("level") == "error"
        for line in result.stderr.splitlines()
    )
    # No rollback: Vault keeps the password the API accepted, although the cluster lacks it.
    assert sorted(await fleet.committed_mismatches()) == []  # change_count stayed 0
    async with fleet.store() as store:
        for cid in victims:
            state = await store.read_vnc(cid)
            assert state.password is not None
            assert state.pending_password is None
            assert state.password != Secret(sim.inventory.get(cid).vnc_password)  # type: ignore[union-attr]
    _assert_no_lockout(await _vnc_counts(sim), allowed_failures=2)  # one attempt each

    # Once the API applies passwords again, the next run fixes and verifies them.
    sim.faults = FaultConfig()
    args = [a for cid in victims + healthy for a in ("--cluster", cid)]
    again = await fleet.cli("rotate", *args, "--json")
    assert again.code == 0, again.stderr[-2000:]
    verified = {c["cluster_id"]: c["verified"] for c in json.loads(again.stdout)["clusters"]}
    assert verified == dict.fromkeys(victims + healthy, "verified")
    _assert_no_lockout(await _vnc_counts(sim), allowed_failures=2)
    assert await fleet.committed_mismatches() == {}


async def test_host_from_the_login_node_listclusters_reports(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=9, regions=REGIONS)
    port = sim.vnc_url.rsplit(":", 1)[1]
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides=_verify("ws://{host}:" + port + "/_vnc/{cluster_id}"),
    )
    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id())
    assert summary.status is RunStatus.SUCCESS
    rotated = [o for o in summary.outcomes if o.outcome is Outcome.ROTATED]
    assert rotated
    assert {o.verified for o in rotated} == {Verified.VERIFIED}
    assert summary.verification["verified"] == len(rotated)


async def test_an_unreachable_visual_service_is_a_warning_not_a_failure(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        closed = sock.getsockname()[1]  # nothing listens there once the block ends
    sim = await sim_factory(clusters=4, regions=REGIONS)
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides=_verify(f"tcp://127.0.0.1:{closed}")
    )

    result = await fleet.cli("rotate", "--all", "--json")

    assert result.code == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    rotated = [c for c in summary["clusters"] if c["outcome"] == "rotated"]
    assert rotated
    assert {(c["verified"], c["verify_code"]) for c in rotated} == {
        ("unverified", "VncUnreachable")
    }
    assert summary["status"] == "Success"
    assert await fleet.committed_mismatches() == {}


async def test_host_comes_from_config_then_root_secret_then_login_node(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    # 127.0.0.2 refuses at once (the simulator binds 127.0.0.1 only): a host that must lose.
    sim = await sim_factory(clusters=5, regions=("cn-hangzhou",))
    port = sim.vnc_url.rsplit(":", 1)[1]
    a, b, c, d = sorted(x.id for x in sim.inventory.running())[:4]
    for cluster in sim.inventory.clusters:
        cluster.login_node = "127.0.0.1" if cluster.id == c else "127.0.0.2"
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides=_verify("ws://{host}:" + port + "/_vnc/{cluster_id}"),
    )
    with fleet.config.open("a", encoding="utf-8") as config:
        config.write(f'[inventory]\nclusters = [{{ id = "{a}", vnc_host = "127.0.0.1" }}]\n')
    async with fleet.store() as store:
        for cluster_id, host in ((a, "127.0.0.2"), (b, "127.0.0.1")):
            root = await store.read_root(cluster_id)
            await store.client.kv_write(
                store.settings.kv_mount,
                store.root_path(cluster_id),
                {
                    "user": root.user,
                    "password": root.password.reveal(),
                    "region": root.region,
                    "vnc_host": host,
                },
            )
    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(clusters=[a, b, c, d]))
        summary = await runtime.rotate(targets, run_id=new_run_id())
    verified = {o.cluster_id: (o.verified, o.verify_code) for o in summary.outcomes}
    assert verified == {
        a: (Verified.VERIFIED, None),  # config beats the root secret
        b: (Verified.VERIFIED, None),  # the root secret beats the login node
        c: (Verified.VERIFIED, None),  # the login node ListClusters reports
        d: (Verified.UNVERIFIED, "VncUnreachable"),
    }
    assert summary.status is RunStatus.SUCCESS
    _assert_no_lockout(await _vnc_counts(sim))
