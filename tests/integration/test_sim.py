"""The simulator over real sockets: every documented answer, faults, admin API, TLS, process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog

from rotator.sim import FaultConfig, SimConfig, Simulator
from rotator.sim.inventory import SimCluster
from tests.support.sim import Reply, SignedCall, SimAdmin, SimFactory, send, sign, stale

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

MODIFY = "ModifyVisualServicePasswd"
REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}")
NEW_PASSWD = "Zq7Wx2"


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def running(sim: Simulator, index: int = 0) -> SimCluster:
    return [c for c in sim.inventory.clusters if c.status == "running"][index]


def not_running(sim: Simulator) -> SimCluster:
    return next(c for c in sim.inventory.clusters if c.status != "running")


def modify_params(cluster: SimCluster, **overrides: str) -> dict[str, str]:
    params = {
        "ClusterId": cluster.id,
        "RunasUser": "root",
        "RunasUserPassword": cluster.root_password,
        "Passwd": NEW_PASSWD,
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v != "<omit>"}


def assert_error(reply: Reply, code: str, status: int) -> None:
    assert (reply.status, reply.code) == (status, code), reply.body
    assert reply.content_type == "application/json"
    assert set(reply.body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert REQUEST_ID.fullmatch(reply.body["RequestId"])
    assert reply.headers["x-acs-request-id"] == reply.body["RequestId"]


async def modify(
    session: aiohttp.ClientSession, sim: Simulator, cluster: SimCluster, **overrides: str
) -> Reply:
    return await send(session, sign(sim, MODIFY, modify_params(cluster, **overrides)))


# --- ListClusters ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_list_clusters_pages_through_the_whole_fleet_in_stable_order(
    sim: Simulator, session: aiohttp.ClientSession, method: str
) -> None:
    seen: list[str] = []
    for page in (1, 2, 3):
        reply = await send(
            session,
            sign(sim, "ListClusters", {"PageNumber": str(page), "PageSize": "8"}, method=method),
        )
        assert reply.status == 200, reply.body
        assert (reply.body["TotalCount"], reply.body["PageNumber"]) == (20, page)
        assert REQUEST_ID.fullmatch(reply.body["RequestId"])
        seen += [c["Id"] for c in reply.body["Clusters"]["ClusterInfoSimple"]]
    assert seen == [c.id for c in sim.inventory.clusters]
    first = await send(session, sign(sim, "ListClusters", {}))
    entry = first.body["Clusters"]["ClusterInfoSimple"][0]
    assert first.body["PageSize"] == 10
    assert len(first.body["Clusters"]["ClusterInfoSimple"]) == 10
    assert {"Id", "Name", "RegionId", "ZoneId", "Status"} <= set(entry)
    assert entry["ZoneId"] == entry["RegionId"] + "-a"


async def test_on_the_shared_endpoint_region_id_stands_for_the_regions_endpoint(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    reply = await send(
        session, sign(sim, "ListClusters", {"RegionId": "cn-shanghai", "PageSize": "50"})
    )
    clusters = reply.body["Clusters"]["ClusterInfoSimple"]
    assert reply.body["TotalCount"] == len(clusters) == 7  # 20 round-robin over 3 regions
    assert {c["RegionId"] for c in clusters} == {"cn-shanghai"}
    assert all(c["Id"].startswith("ehpc-sh-") for c in clusters)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"PageSize": "0"}, "PageSize"),
        ({"PageSize": "51"}, "PageSize"),
        ({"PageSize": "ten"}, "PageSize"),
        ({"PageNumber": "0"}, "PageNumber"),
        ({"PageNumber": "-1"}, "PageNumber"),
    ],
)
async def test_list_clusters_rejects_bad_paging(
    sim: Simulator, session: aiohttp.ClientSession, params: dict[str, str], message: str
) -> None:
    reply = await send(session, sign(sim, "ListClusters", params))
    assert_error(reply, "InvalidParams", 400)
    assert reply.body["Message"] == f"parameter {message} invalid"


# --- ModifyVisualServicePasswd -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_modify_sets_the_password_and_counts_the_change(
    sim: Simulator, session: aiohttp.ClientSession, method: str
) -> None:
    cluster = running(sim)
    reply = await send(session, sign(sim, MODIFY, modify_params(cluster), method=method))
    assert reply.status == 200
    assert reply.body == {"RequestId": reply.body["RequestId"], "Message": '{"Msg": "" }'}
    after = (await SimAdmin(session, sim).clusters())[cluster.id]
    assert (after["vnc_password"], after["change_count"]) == (NEW_PASSWD, 1)


@pytest.mark.parametrize(
    "case",
    [
        ({"Passwd": "<omit>"}, "MissingPasswd", 400, "Passwd is mandatory for this action."),
        (
            {"RunasUserPassword": "<omit>"},
            "MissingRunasUserPassword",
            400,
            "RunasUserPassword is mandatory for this action.",
        ),
        ({"RunasUser": "admin"}, "InvalidParams", 400, "parameter RunasUser invalid"),
        # RunasUser is checked before Passwd and before the cluster is looked up.
        (
            {"RunasUser": "admin", "Passwd": "x", "ClusterId": "ehpc-hz-nope"},
            "InvalidParams",
            400,
            "parameter RunasUser invalid",
        ),
        ({"Passwd": "abc12"}, "InvalidParams", 400, "parameter Passwd invalid"),
        ({"Passwd": "abcdef"}, "InvalidParams", 400, "parameter Passwd invalid"),
        ({"Passwd": "123456"}, "InvalidParams", 400, "parameter Passwd invalid"),
        ({"Passwd": "ab 123"}, "InvalidParams", 400, "parameter Passwd invalid"),
        ({"Passwd": "x", "ClusterId": "ehpc-hz-nope"}, "InvalidParams", 400, "Passwd"),
        ({"ClusterId": "ehpc-hz-nope"}, "ClusterNotFound", 404, "does not exist"),
        ({"RunasUserPassword": "wrong-root-pw"}, "IncorrectCredential", 403, "incorrect"),
    ],
)
async def test_modify_rules(
    sim: Simulator, session: aiohttp.ClientSession, case: tuple[dict[str, str], str, int, str]
) -> None:
    overrides, code, status, message = case
    cluster = running(sim)
    before = cluster.vnc_password
    reply = await modify(session, sim, cluster, **overrides)
    assert_error(reply, code, status)
    assert message in reply.body["Message"]
    assert cluster.vnc_password == before
    assert cluster.change_count == 0
    assert cluster.root_password not in json.dumps(reply.body)


async def test_modify_refuses_a_cluster_that_is_not_running(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    stopped = not_running(sim)
    assert_error(await modify(session, sim, stopped), "InvalidClusterStatus", 403)
    # ... and follows the status the admin API sets.
    admin = SimAdmin(session, sim)
    await admin.patch_cluster(stopped.id, status="running")
    assert (await modify(session, sim, stopped)).status == 200
    await admin.patch_cluster(stopped.id, status="exception")
    assert_error(await modify(session, sim, stopped), "InvalidClusterStatus", 403)


async def test_a_second_modify_while_one_runs_gets_conflict(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(latency_ms=500))
    cluster = running(sim)
    first = asyncio.create_task(modify(session, sim, cluster))
    # Once accepted, the first call is in flight (its 500 ms latency runs while it holds the
    # cluster).
    for _ in range(1000):  # polls the live stats; at most 5 s
        if sim.service.stats.accepted.get(MODIFY):
            break
        await asyncio.sleep(0.005)
    second = await modify(session, sim, cluster, Passwd="Other9")
    assert_error(second, "ConflictOpt", 403)
    assert (await first).status == 200
    assert cluster.vnc_password == NEW_PASSWD
    # Another cluster is not affected by the first one's operation.
    other = await asyncio.gather(
        modify(session, sim, running(sim, 1)), modify(session, sim, running(sim, 2))
    )
    assert [r.status for r in other] == [200, 200]


async def test_busy_window_set_through_admin_api(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    cluster = running(sim)
    admin = SimAdmin(session, sim)
    await admin.patch_cluster(cluster.id, busy_seconds=60)
    assert_error(await modify(session, sim, cluster), "ConflictOpt", 403)
    await admin.patch_cluster(cluster.id, busy_seconds=0)
    assert (await modify(session, sim, cluster)).status == 200


async def test_injected_conflict_opens_a_busy_window(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(conflict_rate=1.0, conflict_seconds=60))
    cluster = running(sim)
    admin = SimAdmin(session, sim)
    assert_error(await modify(session, sim, cluster), "ConflictOpt", 403)
    await admin.set_faults(conflict_rate=0.0)
    # The window outlives the fault setting: the cluster stays busy ...
    assert_error(await modify(session, sim, cluster), "ConflictOpt", 403)
    # ... while the others are free again.
    assert (await modify(session, sim, running(sim, 1))).status == 200
    assert (await admin.stats())["faults_injected"]["ConflictOpt"] == 2


@pytest.mark.parametrize(
    ("knob", "code", "status"),
    [
        ("service_unavailable_rate", "ServiceUnavailable", 503),
        ("agent_error_rate", "AgentError", 403),
        ("unknown_error_rate", "UnknownError", 500),
    ],
)
async def test_injected_errors_leave_the_password_unchanged(
    sim_factory: SimFactory, session: aiohttp.ClientSession, knob: str, code: str, status: int
) -> None:
    sim = await sim_factory(faults=FaultConfig().updated({knob: 1.0}))
    cluster = running(sim)
    before = cluster.vnc_password
    assert_error(await modify(session, sim, cluster), code, status)
    assert cluster.vnc_password == before
    # Validation still comes first: a bad request is told so, not given a random fault.
    assert_error(await modify(session, sim, cluster, Passwd="short"), "InvalidParams", 400)
    assert (await SimAdmin(session, sim).stats())["faults_injected"] == {code: 1}


async def test_fault_draws_are_reproducible_from_the_seed(sim_factory: SimFactory) -> None:
    async def outcomes(seed: int) -> list[int]:
        sim = await sim_factory(
            seed=seed, faults=FaultConfig(service_unavailable_rate=0.3, agent_error_rate=0.3)
        )
        async with aiohttp.ClientSession() as client:
            return [
                (await modify(client, sim, running(sim, i % 5), Passwd=f"ab{i:04d}")).status
                for i in range(30)
            ]

    first = await outcomes(seed=3)
    assert first == await outcomes(seed=3)
    assert {200, 403, 503} <= set(first)
    assert first != await outcomes(seed=4)


async def test_qps_limit_answers_throttling_with_retry_after(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(qps_limit={"ListClusters": 2}))
    # 5 quick calls span at most two one-second windows, so at least one is over the limit.
    replies = [await send(session, sign(sim, "ListClusters", {})) for _ in range(5)]
    throttled = [r for r in replies if r.status != 200]
    assert throttled
    for reply in throttled:
        assert_error(reply, "Throttling.User", 400)
        assert 1 <= int(reply.headers["x-acs-retry-after"]) <= 1000
    stats = await SimAdmin(session, sim).stats()
    assert stats["throttled"] == {"ListClusters": len(throttled)}
    per_second = stats["accepted"]["ListClusters"]
    assert sum(per_second.values()) == 5 - len(throttled)
    assert max(per_second.values()) <= 2
    # Other actions have no limit.
    assert (await modify(session, sim, running(sim))).status == 200


# --- the gateway: signatures, credentials, time, nonces --------------------------------------


async def test_missing_or_malformed_authorization_is_incomplete_signature(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    call = sign(sim, "ListClusters", {})
    del call.headers["authorization"]
    assert_error(await send(session, call), "IncompleteSignature", 400)
    call.headers["authorization"] = "ACS3-HMAC-SHA256 Credential=x"
    assert_error(await send(session, call), "IncompleteSignature", 400)
    call.headers["authorization"] = "Bearer abc"
    assert_error(await send(session, call), "IncompleteSignature", 400)


@pytest.mark.parametrize("header", ["x-acs-signature-nonce", "x-acs-date", "host"])
async def test_a_required_header_left_unsigned_is_incomplete_signature(
    sim: Simulator, session: aiohttp.ClientSession, header: str
) -> None:
    reply = await send(session, sign(sim, "ListClusters", {}, leave_unsigned=(header,)))
    assert_error(reply, "IncompleteSignature", 400)
    assert header in reply.body["Message"]


async def test_wrong_secret_and_tampering_do_not_match(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    cluster = running(sim)
    wrong = sign(sim, MODIFY, modify_params(cluster), access_key_secret="not-the-secret")
    assert_error(await send(session, wrong), "SignatureDoesNotMatch", 400)
    # A proxy that rewrites the body: x-acs-content-sha256 no longer matches it.
    tampered = sign(sim, MODIFY, modify_params(cluster))
    tampered.body = tampered.body.replace(NEW_PASSWD.encode(), b"Evil99")
    assert_error(await send(session, tampered), "SignatureDoesNotMatch", 400)
    # ... or rewrites the body *and* its hash: the signature covers the hash.
    from rotator.ehpc.signer import sha256_hex

    tampered = sign(sim, MODIFY, modify_params(cluster))
    tampered.body = tampered.body.replace(NEW_PASSWD.encode(), b"Evil99")
    tampered.headers["x-acs-content-sha256"] = sha256_hex(tampered.body)
    assert_error(await send(session, tampered), "SignatureDoesNotMatch", 400)
    # A signed header changed in transit.
    changed = sign(sim, "ListClusters", {})
    changed.headers["x-acs-action"] = MODIFY
    assert_error(await send(session, changed), "SignatureDoesNotMatch", 400)
    assert cluster.change_count == 0


async def test_unknown_access_key_is_not_found(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    reply = await send(session, sign(sim, "ListClusters", {}, access_key_id="LTAI-nobody"))
    assert_error(reply, "InvalidAccessKeyId.NotFound", 404)


@pytest.mark.parametrize("minutes", [16, -16])
async def test_a_date_more_than_15_minutes_off_is_expired(
    sim: Simulator, session: aiohttp.ClientSession, minutes: int
) -> None:
    reply = await send(session, sign(sim, "ListClusters", {}, date=stale(minutes)))
    assert_error(reply, "InvalidTimeStamp.Expired", 400)
    # 14 minutes is within the window.
    fine = await send(session, sign(sim, "ListClusters", {}, date=stale(14 * (minutes // 16))))
    assert fine.status == 200


async def test_a_reused_nonce_is_refused(sim: Simulator, session: aiohttp.ClientSession) -> None:
    call = sign(sim, "ListClusters", {}, nonce="fixed-nonce-1")
    assert (await send(session, call)).status == 200
    assert_error(await send(session, call), "SignatureNonceUsed", 400)
    # The same nonce re-signed (a fresh date) is still a replay.
    again = sign(sim, "ListClusters", {"PageSize": "5"}, nonce="fixed-nonce-1")
    assert_error(await send(session, again), "SignatureNonceUsed", 400)


async def test_sts_credentials_need_their_token(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    await SimAdmin(session, sim).add_credential("STS.key", "sts-secret", "token-1")

    def sts_call(token: str | None) -> SignedCall:
        return sign(
            sim,
            "ListClusters",
            {},
            access_key_id="STS.key",
            access_key_secret="sts-secret",
            security_token=token,
        )

    assert (await send(session, sts_call("token-1"))).status == 200
    for token in (None, "token-0"):
        assert_error(await send(session, sts_call(token)), "InvalidSecurityToken.Expired", 400)
    # A refreshed STS credential is accepted as soon as it is registered.
    await SimAdmin(session, sim).add_credential("STS.key2", "sts-secret-2", "token-2")
    refreshed = sign(
        sim,
        "ListClusters",
        {},
        access_key_id="STS.key2",
        access_key_secret="sts-secret-2",
        security_token="token-2",
    )
    assert (await send(session, refreshed)).status == 200
    # A plain AccessKey sending a token it does not have is refused too.
    assert_error(
        await send(session, sign(sim, "ListClusters", {}, security_token="token-1")),
        "InvalidSecurityToken.Expired",
        400,
    )


async def test_unknown_action_and_wrong_version(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    reply = await send(session, sign(sim, "DeleteCluster", {}))
    assert_error(reply, "InvalidApi.NotFound", 404)
    assert reply.body["Message"] == "Specified api is not found, please check your url and method."
    reply = await send(session, sign(sim, "ListClusters", {}, version="2024-07-30"))
    assert_error(reply, "InvalidVersion", 400)


# --- the ambiguous cases: dropped connections and hangs ---------------------------------------


async def test_drop_applies_the_change_then_disconnects(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(drop_rate=1.0))
    cluster = running(sim)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await modify(session, sim, cluster)
    after = (await SimAdmin(session, sim).clusters())[cluster.id]
    assert (after["vnc_password"], after["change_count"]) == (NEW_PASSWD, 1)
    # Retrying with the same password is harmless once the fault is gone.
    await SimAdmin(session, sim).set_faults(drop_rate=0.0)
    assert (await modify(session, sim, cluster)).status == 200
    assert cluster.vnc_password == NEW_PASSWD


async def test_hang_never_answers_and_does_not_block_shutdown(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(hang_rate=1.0))
    cluster = running(sim)
    before = cluster.vnc_password
    hanging = asyncio.create_task(modify(session, sim, cluster))
    with pytest.raises(TimeoutError):
        await send(session, sign(sim, MODIFY, modify_params(running(sim, 1))), timeout_s=0.3)
    assert not hanging.done()
    assert cluster.vnc_password == before
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(aiohttp.ClientError):
        await hanging


# --- admin API ---------------------------------------------------------------------------------


async def test_admin_api_requires_the_token(sim: Simulator, session: aiohttp.ClientSession) -> None:
    url = f"{sim.base_url}/_sim/clusters"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": sim.admin_token}):
        async with session.get(url, headers=headers) as response:
            assert response.status == 401
    async with session.get(url, headers={"Authorization": f"Bearer {sim.admin_token}"}) as ok:
        assert ok.status == 200
        clusters = await ok.json()
    assert len(clusters) == 20
    assert set(clusters[0]) == {
        "id", "name", "region", "zone", "status", "root_password", "vnc_password", "change_count",
    }  # fmt: skip


async def test_admin_api_validates_its_input(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {sim.admin_token}"}
    cluster = running(sim)
    bad: list[tuple[str, str, Any]] = [
        ("PATCH", f"clusters/{cluster.id}", {"status": "melting"}),
        ("PATCH", f"clusters/{cluster.id}", {"busy_seconds": -1}),
        ("PATCH", f"clusters/{cluster.id}", {"root_password": ""}),
        ("PATCH", f"clusters/{cluster.id}", {"vnc_password": "x"}),
        ("PUT", "faults", {"drop_rate": 1.5}),
        ("PUT", "faults", {"latency_ms": "5"}),
        ("PUT", "faults", {"qps_limit": {"NoSuchAction": 5}}),
        ("PUT", "faults", {"qps_limit": {"ListClusters": 0}}),
        ("PUT", "faults", {"teleport_rate": 0.1}),
        ("PUT", "faults", [1, 2]),
        ("POST", "credentials", {"access_key_id": "x"}),
    ]
    for method, path, payload in bad:
        async with session.request(
            method, f"{sim.base_url}/_sim/{path}", headers=headers, json=payload
        ) as response:
            assert response.status == 400, (method, path, payload)
            assert "error" in await response.json()
    async with session.patch(
        f"{sim.base_url}/_sim/clusters/ehpc-hz-nope", headers=headers, json={}
    ) as response:
        assert response.status == 404
    admin = SimAdmin(session, sim)
    updated = await admin.set_faults(latency_ms=5, qps_limit={MODIFY: 7})
    assert updated["latency_ms"] == 5
    assert updated["qps_limit"] == {MODIFY: 7}
    assert (await admin.request("GET", "faults")) == updated
    assert sim.faults.drop_rate == 0.0  # a partial update leaves the rest alone
    old_root = cluster.root_password
    patched = await admin.patch_cluster(cluster.id, root_password="New-root-1")
    assert patched["root_password"] == "New-root-1"
    reply = await modify(session, sim, cluster, RunasUserPassword=old_root)
    assert_error(reply, "IncorrectCredential", 403)
    assert (await modify(session, sim, cluster, RunasUserPassword="New-root-1")).status == 200


async def test_stats_count_accepted_calls_per_second_action_and_region(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    admin = SimAdmin(session, sim)
    hz = [c for c in sim.inventory.clusters if c.region == "cn-hangzhou" and c.status == "running"]
    for cluster in hz[:3]:
        assert (await modify(session, sim, cluster)).status == 200
    await send(session, sign(sim, "ListClusters", {"RegionId": "cn-beijing"}))
    await send(session, sign(sim, "ListClusters", {}, access_key_secret="bad"))  # not accepted
    stats = await admin.stats()
    assert sum(stats["accepted"][MODIFY].values()) == 3
    assert sum(stats["accepted"]["ListClusters"].values()) == 1
    assert list(stats["accepted_by_region"][MODIFY]) == ["cn-hangzhou"]
    assert list(stats["accepted_by_region"]["ListClusters"]) == ["cn-beijing"]
    now = int(time.time())
    assert all(now - 5 <= int(second) <= now for second in stats["accepted"][MODIFY])
    await admin.reset_stats()
    assert (await admin.stats()) == {
        "accepted": {},
        "accepted_by_region": {},
        "throttled": {},
        "throttled_by_region": {},
        "faults_injected": {},
    }


async def test_no_password_in_any_log_event(sim: Simulator, session: aiohttp.ClientSession) -> None:
    cluster = running(sim)
    with structlog.testing.capture_logs() as events:
        await modify(session, sim, cluster)
        await modify(session, sim, cluster, RunasUserPassword="Wrong-root-pw")
        await send(
            session, sign(sim, MODIFY, modify_params(cluster, Passwd="Get9ok"), method="GET")
        )
    assert [e["code"] for e in events] == ["OK", "IncorrectCredential", "OK"]
    assert all(e["cluster_id"] == cluster.id and e["action"] == MODIFY for e in events)
    text = json.dumps(events)
    for secret in (cluster.root_password, NEW_PASSWD, "Wrong-root-pw", "Get9ok"):
        assert secret not in text


async def test_inventory_is_deterministic_from_the_seed() -> None:
    def fleet(seed: int) -> list[tuple[str, str, str, str]]:
        sim = Simulator(SimConfig(clusters=45, seed=seed))
        return [(c.id, c.status, c.root_password, c.vnc_password) for c in sim.inventory.clusters]

    assert fleet(1) == fleet(1)
    assert fleet(1) != fleet(2)
    statuses = [status for _, status, _, _ in fleet(1)]
    assert statuses.count("running") == 43
    assert {"init", "exception"} <= set(statuses)
    assert set(statuses) <= {"uninit", "creating", "init", "running", "exception", "releasing"}
    assert all(len(root) == 16 for _, _, root, _ in fleet(1))


# --- TLS and the process -----------------------------------------------------------------------


async def test_tls_with_the_generated_ca(sim_factory: SimFactory, tmp_path: Path) -> None:
    sim = await sim_factory(tls=True, state_dir=tmp_path / "state")
    assert sim.base_url.startswith("https://127.0.0.1:")
    assert sim.ca_file == tmp_path / "state" / "sim-ca.pem"
    trusting = ssl.create_default_context(cafile=str(sim.ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as client:
        reply = await send(client, sign(sim, "ListClusters", {}))
        assert reply.status == 200
    # A client that trusts only the system CAs refuses the certificate.
    system_only = ssl.create_default_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=system_only)) as client:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await send(client, sign(sim, "ListClusters", {}))


async def _read_ready(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        assert line, "the simulator exited before it was ready"
        if line.startswith(b"{"):
            ready: dict[str, Any] = json.loads(line)
            return ready


async def test_sim_process_prints_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    secret_file = tmp_path / "ak-secret"
    secret_file.write_text("proc-secret-value\n")
    token_file = tmp_path / "admin-token"
    token_file.write_text("admin-token-value\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rotator.sim",
        "--port", "0", "--clusters", "6", "--seed", "5", "--tls",
        "--state-dir", str(tmp_path / "state"),
        "--access-key-id", "proc-key", "--access-key-secret-file", str(secret_file),
        "--admin-token-file", str(token_file), "--log-format", "json",
        "--qps-limit", "ListClusters=100", "--quota", "ModifyVisualServicePasswd@account=50/60s",
        "--region-endpoints", "--passwd-rule", "current",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        ready = await _read_ready(process)
        assert ready["event"] == "sim_ready"
        assert ready["access_key_id"] == "proc-key"
        assert ready["admin_token"] == "admin-token-value"
        assert ready["ca_file"] == str(tmp_path / "state" / "sim-ca.pem")
        base_url = ready["base_url"]
        assert base_url.startswith("https://127.0.0.1:")
        assert set(ready["endpoints"]) == {"cn-hangzhou", "cn-shanghai", "cn-beijing"}

        # Talk to it: the configured credential works, and a change shows in the admin API.
        handle = Simulator(
            SimConfig(access_key_id="proc-key", access_key_secret="proc-secret-value")
        )
        handle.base_url = base_url
        handle.admin_token = ready["admin_token"]
        trusting = ssl.create_default_context(cafile=ready["ca_file"])
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as client:
            clusters = await SimAdmin(client, handle).clusters()
            target = next(c for c in clusters.values() if c["status"] == "running")
            params = {
                "ClusterId": target["id"],
                "RunasUser": "root",
                "RunasUserPassword": target["root_password"],
                "Passwd": NEW_PASSWD,
            }
            assert (await send(client, sign(handle, MODIFY, params))).status == 200
            after = (await SimAdmin(client, handle).clusters())[target["id"]]
            assert after["vnc_password"] == NEW_PASSWD
            faults = await SimAdmin(client, handle).request("GET", "faults")
            assert faults["quotas"] == {"ModifyVisualServicePasswd@account": "50/60s"}

        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    logs = stderr.decode()
    assert '"action": "ModifyVisualServicePasswd"' in logs
    for secret in (NEW_PASSWD, target["root_password"], "proc-secret-value"):
        assert secret not in logs
        assert secret not in stdout.decode()


@pytest.mark.parametrize(
    "flag",
    [
        ["--quota", "DeleteCluster=1/1s"],
        ["--quota", "ListClusters"],
        ["--quota", "ListClusters=fast"],
        ["--passwd-rule", "strict"],
    ],
)
async def test_sim_process_refuses_bad_quota_and_rule_flags(flag: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rotator.sim", *flag,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2, stderr.decode()
    assert flag[0] in stderr.decode()
