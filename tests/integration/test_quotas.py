"""Quotas over real sockets: the simulator's flow control, the client's reading of it, and whole
runs that stay under a quota (smooth) or find a lower one (adaptive)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from rotator.ehpc.client import EhpcClient, Endpoints
from rotator.ehpc.credentials import StaticCredentials
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.report import Outcome, RunSummary
from rotator.engine.runtime import new_run_id
from rotator.errors import ThrottledError
from rotator.secret import Secret
from rotator.sim import FaultConfig, Simulator
from rotator.vault.devserver import OpenBaoServer
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory, send, sign
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

MODIFY = "ModifyVisualServicePasswd"
REGIONS = ("cn-hangzhou", "cn-shanghai", "cn-beijing")


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def most_in_any_window(per_second: Mapping[str, int], seconds: int) -> int:
    """The most calls any ``seconds`` consecutive whole seconds hold (sliding by one second)."""
    counts = {int(second): n for second, n in per_second.items()}
    if not counts:
        return 0
    first, last = min(counts), max(counts)
    return max(
        sum(counts.get(s, 0) for s in range(start, start + seconds))
        for start in range(first - seconds + 1, last + 1)
    )


def api_for(sim: Simulator) -> EhpcClient:
    return EhpcClient(
        credentials=StaticCredentials(
            sim.config.access_key_id, Secret(sim.config.access_key_secret)
        ),
        endpoints=Endpoints(single=sim.base_url, allow_insecure_http=True),
    )


# -- the simulator ------------------------------------------------------------------------------


async def test_a_quota_over_a_2s_window_answers_throttling_with_both_headers(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(quotas={"ListClusters": "3/2s"}))
    replies = [
        await send(session, sign(sim, "ListClusters", {"RegionId": "cn-hangzhou"}))
        for _ in range(8)
    ]
    # 8 quick calls span at most two 2-second windows: at most 6 pass.
    throttled = [r for r in replies if r.status != 200]
    assert len(throttled) >= 2
    for reply in throttled:
        assert (reply.status, reply.code) == (400, "Throttling.User")
        assert reply.body["Message"] == "Request was denied due to user flow control."
        wait = int(reply.headers["x-acs-retry-after"])
        assert 1 <= wait <= 2000
        for name in ("x-ratelimit-user-api", "x-ratelimit-user"):
            fields = dict(pair.split(":") for pair in reply.headers[name].split(","))
            assert fields["Limit"] == "3"
            assert fields["Remain"] == "0"
            assert fields["TimeLeft"] == str(wait)
    # Another region endpoint counts on its own.
    other = await send(session, sign(sim, "ListClusters", {"RegionId": "cn-beijing"}))
    assert other.status == 200
    stats = await SimAdmin(session, sim).stats()
    assert stats["throttled_by_region"] == {"ListClusters": {"cn-hangzhou": len(throttled)}}
    assert most_in_any_window(stats["accepted_by_region"]["ListClusters"]["cn-hangzhou"], 2) <= 6


async def test_a_per_minute_quota_refuses_until_the_minute_ends(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(quotas={MODIFY: "3/60s"}))
    cluster = next(c for c in sim.inventory.clusters if c.status == "running")
    params = {
        "ClusterId": cluster.id,
        "RunasUser": "root",
        "RunasUserPassword": cluster.root_password,
        "Passwd": "Zq7Wx2",
    }
    replies = [await send(session, sign(sim, MODIFY, params)) for _ in range(7)]
    # 7 quick calls span at most two minute-windows: at most 6 pass, and one is refused with
    # the time left to the end of its minute.
    refused = [r for r in replies if r.status != 200]
    assert refused
    for reply in refused:
        assert reply.code == "Throttling.User"
        assert 1 <= int(reply.headers["x-acs-retry-after"]) <= 60_000
        reset = int(
            dict(p.split(":") for p in reply.headers["x-ratelimit-user"].split(","))["Reset"]
        )
        assert reset % 60 == 0


async def test_quotas_change_at_runtime_through_the_admin_api(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    admin = SimAdmin(session, sim)
    updated = await admin.set_faults(quotas={"*@account": "1/60s"})
    assert updated["quotas"] == {"*@account": "1/60s"}
    assert (await send(session, sign(sim, "ListClusters", {}))).status == 200
    assert (await send(session, sign(sim, "ListClusters", {}))).code == "Throttling.User"
    async with session.put(
        f"{sim.base_url}/_sim/faults",
        headers={"Authorization": f"Bearer {sim.admin_token}"},
        json={"quotas": {"DeleteCluster": "1/1s"}},
    ) as response:
        assert response.status == 400
        assert "expected ACTION" in (await response.json())["error"]


@pytest.mark.parametrize("which", ["both", "retry-after", "ratelimit"])
async def test_the_client_reads_the_wait_from_either_header(
    sim_factory: SimFactory, which: str
) -> None:
    sim = await sim_factory(
        faults=FaultConfig(quotas={"ListClusters": "1/2s"}, throttle_headers=which)
    )
    api = api_for(sim)
    try:
        errors: list[ThrottledError] = []
        for _ in range(3):
            try:
                await api.list_clusters("cn-hangzhou")
            except ThrottledError as exc:
                errors.append(exc)
        assert errors
        for error in errors:
            assert error.code == "Throttling.User"
            assert error.retry_after is not None
            assert 0 < error.retry_after <= 2.0
    finally:
        await api.aclose()


async def test_each_region_endpoint_sets_the_region_and_list_clusters_has_no_filter(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(region_endpoints=True, clusters=30)
    assert set(sim.endpoints) == set(sim.config.regions)
    reply = await send(
        session,
        sign(
            sim,
            "ListClusters",
            {"RegionId": "cn-beijing", "PageSize": "50"},
            endpoint=sim.endpoints["cn-hangzhou"],
        ),
    )
    clusters = reply.body["Clusters"]["ClusterInfoSimple"]
    assert reply.body["TotalCount"] == len(clusters) == 10
    assert {c["RegionId"] for c in clusters} == {"cn-hangzhou"}


async def test_the_simulator_can_enforce_the_legacy_passwd_rule(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(passwd_rule="legacy")
    cluster = next(c for c in sim.inventory.clusters if c.status == "running")

    def params(passwd: str) -> dict[str, str]:
        return {
            "ClusterId": cluster.id,
            "RunasUser": "root",
            "RunasUserPassword": cluster.root_password,
            "Passwd": passwd,
        }

    refused = await send(session, sign(sim, MODIFY, params("Zq7Wx2")))
    assert (refused.status, refused.code) == (400, "InvalidParams")
    assert refused.body["Message"] == "parameter Passwd invalid"
    assert (await send(session, sign(sim, MODIFY, params("Legacy-Pass1")))).status == 200


# -- whole runs ---------------------------------------------------------------------------------


async def run_fleet(fleet: Fleet) -> RunSummary:
    async with fleet.runtime() as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        return await runtime.rotate(targets, run_id=new_run_id())


async def sim_stats(sim: Simulator) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        return await SimAdmin(session, sim).stats()


def assert_all_running_rotated(summary: RunSummary) -> None:
    for outcome in summary.outcomes:
        if outcome.code == "ClusterNotRunning":
            assert outcome.outcome is Outcome.SKIPPED
        else:
            assert outcome.outcome is Outcome.ROTATED, outcome


async def test_a_run_at_the_quota_is_smooth_and_never_throttled(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    # The same quota on both sides, per region endpoint, over 2-second windows.
    sim = await sim_factory(
        clusters=60,
        regions=REGIONS,
        faults=FaultConfig(quotas={MODIFY: "10/2s"}, latency_ms=2, jitter_ms=10),
    )
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides={"ehpc": {"rate_limit": "10/2s"}}
    )
    summary = await run_fleet(fleet)

    assert_all_running_rotated(summary)
    stats = await sim_stats(sim)
    assert stats["throttled"] == {}
    for region, per_second in stats["accepted_by_region"][MODIFY].items():
        # Sliding by whole seconds, any two consecutive seconds hold at most the quota...
        assert most_in_any_window(per_second, 2) <= 10, region
        # ...and no second more than its share plus one: spread out, not a burst.
        assert max(per_second.values()) <= 6, region
    rate = summary.to_dict()["rate_limits"]["cn-hangzhou"]
    assert (rate["configured"], rate["effective"], rate["throttled"]) == ("10/2s", "10/2s", 0)


async def test_an_account_quota_across_regions_is_kept(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(
        clusters=40, regions=REGIONS, faults=FaultConfig(quotas={f"{MODIFY}@account": "8/1s"})
    )
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides={"ehpc": {"rate_limit": "100/1s", "account_rate_limit": "8/1s"}},
    )
    summary = await run_fleet(fleet)

    assert_all_running_rotated(summary)
    stats = await sim_stats(sim)
    assert stats["throttled"] == {}
    assert max(stats["accepted"][MODIFY].values()) <= 8
    assert summary.to_dict()["rate_limits"]["account"]["configured"] == "8/1s"


async def test_a_quota_lower_than_configured_is_found_with_few_throttling_answers(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    # Configured at 20/1s per region; the gateway allows 8/1s. Adaptive pacing must finish the
    # run with every cluster rotated, after a handful of Throttling answers, not a storm.
    sim = await sim_factory(
        clusters=60, regions=REGIONS, faults=FaultConfig(quotas={MODIFY: "8/1s"})
    )
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides={"ehpc": {"rate_limit": "20/1s"}, "retry": {"throttle_attempts": 10}},
    )
    summary = await run_fleet(fleet)

    assert_all_running_rotated(summary)
    stats = await sim_stats(sim)
    throttled = stats["throttled"].get(MODIFY, 0)
    accepted = sum(stats["accepted"][MODIFY].values())
    # Measured: 6 Throttling answers for 60 calls (2 per region), rate settling near 11/1s.
    assert throttled <= accepted // 4, f"{throttled} Throttling answers for {accepted} calls"
    rates = summary.to_dict()["rate_limits"]
    lowered = [r for r in rates.values() if r["throttled"]]
    assert lowered, rates
    for rate in lowered:
        assert float(rate["lowest"].split("/")[0]) < 20
