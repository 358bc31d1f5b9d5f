"""``rotator serve`` end to end: a real OpenBao, the simulator, real sockets, in-process daemon.

Each trigger path (lease, Vault event, webhook) rotates exactly the clusters it names; the
metrics show it; duplicates collapse; bad webhook input changes nothing; readiness follows Vault.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.config import load_settings
from rotator.secret import Secret, write_secret_file
from rotator.serve import Daemon
from rotator.serve.webhook import sign_request
from rotator.sim import Simulator
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, free_port
from rotator.vault.store import VaultStore
from tests.support.events import FakeEventServer, kv_event
from tests.support.fleet import toml_document
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

WEBHOOK_TOKEN = "webhook-token-4f1c9a"
HMAC_KEY = "webhook-hmac-key-77aa"


# -- helpers (also used by test_serve_replicas.py) -------------------------------------------


def write_config(
    path: Path,
    *,
    sim_url: str,
    access_key_id: str,
    access_key_file: Path,
    server: OpenBaoServer,
    token_file: Path,
    paths: VaultPaths,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """A complete config file for a daemon against this OpenBao and simulator."""
    values: dict[str, dict[str, object]] = {
        "ehpc": {
            "endpoint": sim_url,
            "allow_insecure_http": True,
            "rate_limit": "1000/1s",
            "request_timeout": "3s",
            "connect_timeout": "1s",
        },
        "credentials": {
            "source": "static",
            "access_key_id": access_key_id,
            "access_key_secret_file": str(access_key_file),
        },
        "vault": {
            "addr": server.addr,
            "allow_insecure_http": True,  # a loopback OpenBao dev server
            "token_file": str(token_file),
            "root_path": paths.root_path,
            "vnc_path": paths.vnc_path,
            "runs_path": paths.runs_path,
            "timeout": "3s",
        },
        "retry": {"initial_wait": "10ms", "max_wait": "100ms", "conflict_initial_wait": "50ms"},
        "rotation": {"concurrency": 8, "claim_ttl": "2s"},
        "serve": {
            "listen": "127.0.0.1:0",
            "jitter": "0s",
            "batch_delay": "100ms",
            "event_types": [],
            "webhook_token_file": str(path.parent / "webhook-token"),
            "webhook_hmac_secret_file": str(path.parent / "webhook-hmac"),
        },
        "logging": {"format": "json"},
    }
    write_secret_file(path.parent / "webhook-token", WEBHOOK_TOKEN)
    write_secret_file(path.parent / "webhook-hmac", HMAC_KEY)
    for name, section in (sections or {}).items():
        values.setdefault(name, {}).update(section)
    path.write_text(toml_document(values), encoding="utf-8")
    return path


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 20.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Env:
    tmp: Path
    sim: Simulator
    server: OpenBaoServer
    paths: VaultPaths
    config: Path
    store: VaultStore
    session: aiohttp.ClientSession

    @property
    def admin(self) -> SimAdmin:
        return SimAdmin(self.session, self.sim)

    async def changes(self) -> dict[str, int]:
        return {cid: c["change_count"] for cid, c in (await self.admin.clusters()).items()}

    async def set_due(self, cluster_id: str, when: datetime) -> None:
        await self.store.update_status(cluster_id, status="rotated", next_rotation_at=when)

    async def not_due(self, *cluster_ids: str) -> None:
        later = datetime.now(UTC) + timedelta(days=10)
        for cluster_id in cluster_ids:
            await self.set_due(cluster_id, later)

    def reconfigure(self, **sections: Mapping[str, object]) -> None:
        write_config(
            self.config,
            sim_url=self.sim.base_url,
            access_key_id=self.sim.config.access_key_id,
            access_key_file=self.tmp / "ak",
            server=self.server,
            token_file=self.tmp / "vault-token",
            paths=self.paths,
            sections=sections,
        )

    def daemon(self, **kwargs: Any) -> Daemon:
        return Daemon(load_settings(self.config, environ={}), config_path=self.config, **kwargs)

    async def vault_matches_sim(self) -> dict[str, str]:
        """Changed clusters whose real password is not Vault's current password."""
        wrong = {}
        for cid, cluster in (await self.admin.clusters()).items():
            if cluster["change_count"]:
                state = await self.store.read_vnc(cid)
                if state.password != Secret(cluster["vnc_password"]) or state.pending_password:
                    wrong[cid] = "not committed"
        return wrong


@asynccontextmanager
async def make_env(
    tmp_path: Path,
    sim_factory: SimFactory,
    server: OpenBaoServer,
    paths: VaultPaths,
    *,
    clusters: int = 4,
    **sections: Mapping[str, object],
) -> AsyncIterator[Env]:
    sim = await sim_factory(clusters=clusters, regions=("cn-hangzhou", "cn-shanghai"))
    write_secret_file(tmp_path / "ak", sim.config.access_key_secret)
    write_secret_file(tmp_path / "vault-token", server.root_token.reveal())
    client = VaultClient(paths.settings(server))
    async with aiohttp.ClientSession() as session:
        try:
            env = Env(
                tmp=tmp_path,
                sim=sim,
                server=server,
                paths=paths,
                config=tmp_path / "rotator.toml",
                store=VaultStore(client),
                session=session,
            )
            env.reconfigure(**sections)
            for cid, cluster in (await env.admin.clusters()).items():
                if cluster["status"] != "running":  # every cluster is a rotation target here
                    await env.admin.patch_cluster(cid, status="running")
                await env.store.write_root(
                    cid, "root", Secret(cluster["root_password"]), cluster["region"]
                )
            yield env
        finally:
            await client.aclose()


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.listening.wait(), 10)
        await asyncio.wait_for(daemon.schedule_loaded.wait(), 10)
        yield daemon
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            for other in asyncio.all_tasks():
                other.print_stack()
        assert await asyncio.wait_for(task, 1) == 0


def sign(body: bytes, path: str = "/v1/rotate") -> str:
    return sign_request(HMAC_KEY, "POST", path, body, int(time.time()))


async def scrape(session: aiohttp.ClientSession, daemon: Daemon) -> dict[Any, float]:
    async with session.get(f"{daemon.address}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        return parse_metrics(await response.text())


# -- tests ------------------------------------------------------------------------------------


async def test_leases_rotate_the_due_clusters_and_metrics_show_it(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(
        tmp_path, sim_factory, openbao, vault_paths, serve={"event_types": ["kv-v2/data-write"]}
    ) as env:
        ids = sorted(await env.changes())
        never, overdue, later_a, later_b = ids
        await env.set_due(overdue, datetime.now(UTC) - timedelta(hours=3))
        await env.not_due(later_a, later_b)

        async with running(env.daemon()) as daemon:

            async def rotated() -> bool:
                changes = await env.changes()
                return changes[never] == 1 and changes[overdue] == 1

            await eventually(rotated, what="the due clusters to rotate")
            await eventually(lambda: _idle(daemon), what="the batch to finish")
            async with env.session.get(f"{daemon.address}/readyz") as ready:
                assert ready.status == 200
            samples = await scrape(env.session, daemon)
            # OpenBao has no event stream: logged once, and the leases carried on.
            assert daemon.events is not None
            assert daemon.events.unavailable

        assert await env.changes() == {never: 1, overdue: 1, later_a: 0, later_b: 0}
        assert await env.vault_matches_sim() == {}
        state = await env.store.read_vnc(never)
        next_due = datetime.fromisoformat(state.status_view["next_rotation_at"])
        assert next_due > datetime.now(UTC) + timedelta(days=29)
        assert metric(samples, "rotator_rotations_total", outcome="rotated", code="") == 2
        assert metric(samples, "rotator_triggers_total", source="lease") == 2
        assert metric(samples, "rotator_runs_total", status="Success") >= 1
        assert metric(samples, "rotator_queue_depth") == 0
        assert 8 * 86400 < metric(samples, "rotator_seconds_until_next_due") < 11 * 86400
        assert (
            metric(samples, "rotator_api_request_seconds_count", region="cn-hangzhou", code="OK")
            + metric(samples, "rotator_api_request_seconds_count", region="cn-shanghai", code="OK")
            == 2
        )


async def _idle(daemon: Daemon) -> bool:
    return daemon.queue.depth == 0 and bool(daemon.queue.summaries) and daemon.queue._idle.is_set()


async def test_vault_events_rotate_the_named_cluster_and_survive_reconnects(
    tmp_path: Path,
    sim_factory: SimFactory,
    openbao: OpenBaoServer,
    vault_paths: VaultPaths,
    event_server: FakeEventServer,
) -> None:
    event_server.token = openbao.root_token.reveal()
    kind = "kv-v2/data-write"
    async with make_env(
        tmp_path, sim_factory, openbao, vault_paths, serve={"event_types": [kind]}
    ) as env:
        ids = sorted(await env.changes())
        await env.not_due(*ids)
        trigger = f"secret/data/{vault_paths.prefix}/trigger"
        env.reconfigure(
            serve={"event_types": [kind], "trigger_path": f"{vault_paths.prefix}/trigger"}
        )
        async with running(env.daemon(events_addr=event_server.addr)) as daemon:
            await event_server.wait_connected(kind)
            first = kv_event(f"{trigger}/{ids[0]}")
            await event_server.send(kind, first)
            await event_server.send(kind, "{this is not an event")
            await event_server.send(kind, kv_event(f"{trigger}/{ids[1]}", camel_case=True))
            await event_server.send(kind, kv_event(f"secret/data/elsewhere/{ids[3]}"))

            async def first_two() -> bool:
                changes = await env.changes()
                return changes[ids[0]] == 1 and changes[ids[1]] == 1

            await eventually(first_two, what="the event-triggered rotations")
            await event_server.send(kind, first)  # a replay after the rotation: dropped by id

            await event_server.drop()
            await event_server.wait_connected(kind, handshakes=2)
            await event_server.send(kind, kv_event(f"{trigger}/{ids[2]}"))
            await eventually(lambda: _changed(env, ids[2]), what="the rotation after the reconnect")
            await eventually(lambda: _idle(daemon), what="the batch to finish")
            samples = await scrape(env.session, daemon)
            assert daemon.events is not None
            assert daemon.events.ignored == 1

        assert await env.changes() == {ids[0]: 1, ids[1]: 1, ids[2]: 1, ids[3]: 0}
        assert metric(samples, "rotator_triggers_total", source="event") == 3
        assert await env.vault_matches_sim() == {}


async def _changed(env: Env, cluster_id: str) -> bool:
    return (await env.changes())[cluster_id] == 1


async def test_webhook_rotates_and_reports_the_run(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths) as env:
        ids = sorted(await env.changes())
        await env.not_due(*ids)
        async with running(env.daemon()) as daemon:
            url = f"{daemon.address}/v1/rotate"
            bad = [
                ({"Authorization": "Bearer wrong"}, b'{"clusters": "all"}', 401),
                ({"X-Rotator-Signature": sign(b"other")}, b'{"clusters": "all"}', 401),
                ({"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, b'{"clusters": [', 400),
                ({"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, b'{"clusters": ["nope-1"]}', 422),
            ]
            for headers, body, status in bad:
                async with env.session.post(url, data=body, headers=headers) as response:
                    assert response.status == status, await response.text()
            await asyncio.sleep(0.3)  # longer than batch_delay: anything queued would run
            assert daemon.queue.depth == 0
            assert await env.changes() == dict.fromkeys(ids, 0)

            body = json.dumps({"clusters": [ids[1]], "reason": "offboarding"}).encode()
            async with env.session.post(
                url, data=body, headers={"X-Rotator-Signature": sign(body)}
            ) as response:
                assert response.status == 202
                accepted = await response.json()
            assert accepted["clusters"] == 1
            run_url = f"{daemon.address}/v1/runs/{accepted['trigger_id']}"
            auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
            report: dict[str, Any] = {}

            async def reported() -> bool:
                async with env.session.get(run_url, headers=auth) as answer:
                    assert answer.status in (200, 202)
                    report.update(await answer.json())
                    return answer.status == 200

            await eventually(reported, what="the run summary")
            assert report["status"] == "Success"
            assert report["counts"]["rotated"] == 1
            assert report["trigger"] == "webhook"
            assert [c["cluster_id"] for c in report["clusters"]] == [ids[1]]

            # Forgotten by this process (a restart, another replica): read back from Vault.
            daemon.queue.summaries.clear()
            async with env.session.get(
                f"{daemon.address}/v1/runs/{report['run_id']}", headers=auth
            ) as answer:
                assert answer.status == 200
                stored = await answer.json()
            assert stored["run_id"] == report["run_id"]
            assert stored["status"] == "Success"
            async with env.session.get(f"{daemon.address}/v1/runs/unknown-1", headers=auth) as a:
                assert a.status == 404
            samples = await scrape(env.session, daemon)

        assert await env.changes() == {i: (1 if i == ids[1] else 0) for i in ids}
        assert metric(samples, "rotator_triggers_total", source="webhook") == 1
        assert metric(samples, "rotator_rotations_total", outcome="rotated", code="") == 1


async def test_the_same_cluster_triggered_three_ways_changes_once(
    tmp_path: Path,
    sim_factory: SimFactory,
    openbao: OpenBaoServer,
    vault_paths: VaultPaths,
    event_server: FakeEventServer,
) -> None:
    event_server.token = openbao.root_token.reveal()
    kind = "kv-v2/data-write"
    async with make_env(tmp_path, sim_factory, openbao, vault_paths) as env:
        ids = sorted(await env.changes())
        target = ids[0]
        await env.not_due(*ids[1:])
        await env.set_due(target, datetime.now(UTC) - timedelta(minutes=5))
        env.reconfigure(
            serve={
                "event_types": [kind],
                "trigger_path": f"{vault_paths.prefix}/trigger",
                "batch_delay": "3s",
            }
        )
        async with running(env.daemon(events_addr=event_server.addr)) as daemon:
            assert daemon.queue.depth == 1  # the lease fired at start
            await event_server.wait_connected(kind)
            await event_server.send(
                kind, kv_event(f"secret/data/{vault_paths.prefix}/trigger/{target}")
            )
            body = json.dumps({"clusters": [target]}).encode()
            async with env.session.post(
                f"{daemon.address}/v1/rotate",
                data=body,
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            ) as response:
                assert response.status == 202
            await eventually(lambda: _idle(daemon), what="the batch to finish")
            samples = await scrape(env.session, daemon)
            runs = list(daemon.queue.summaries.values())

        assert (await env.changes())[target] == 1
        assert len(runs) == 1
        assert runs[0].trigger == "event+lease+webhook"
        assert [o.cluster_id for o in runs[0].outcomes] == [target]
        assert metric(samples, "rotator_rotations_total", outcome="rotated", code="") == 1
        assert (
            sum(
                metric(samples, "rotator_triggers_total", source=s)
                for s in ("lease", "event", "webhook")
            )
            == 3
        )


async def test_readyz_fails_while_vault_is_unreachable(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths) as env:
        env.reconfigure(vault={"addr": f"http://127.0.0.1:{free_port()}", "timeout": "1s"})
        stop = asyncio.Event()
        daemon = env.daemon()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.listening.wait(), 10)
            async with env.session.get(f"{daemon.address}/healthz") as alive:
                assert alive.status == 200
            async with env.session.get(f"{daemon.address}/readyz") as ready:
                assert ready.status == 503
                assert "Vault" in (await ready.json())["reason"]
            async with env.session.get(f"{daemon.address}/metrics") as scraped:
                assert scraped.status == 200
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 20) == 0
        assert not task.cancelled()


async def test_sighup_reload_keeps_a_good_config_and_applies_a_new_one(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths) as env:
        ids = sorted(await env.changes())
        await env.not_due(*ids)
        async with running(env.daemon()) as daemon:
            original = daemon.settings
            env.config.write_text("[serve]\nwindow = 'whenever'\n", encoding="utf-8")
            daemon.request_reload()
            await asyncio.sleep(0.3)
            assert daemon.settings is original  # the bad file was refused

            # Valid TOML and valid [serve], but a runtime that could not be built.
            env.reconfigure(ehpc={"rate_limit": "5 per second"})
            daemon.request_reload()
            await asyncio.sleep(0.3)
            assert daemon.settings is original
            async with env.session.get(f"{daemon.address}/healthz") as response:
                assert response.status == 200

            env.reconfigure(ehpc={"rate_limit": "1000/1s"}, serve={"batch_max": 7})
            daemon.request_reload()

            async def reloaded() -> bool:
                return daemon.settings.serve.batch_max == 7 and daemon.schedule_loaded.is_set()

            await eventually(reloaded, what="the new config")
            body = json.dumps({"clusters": [ids[0]]}).encode()
            async with env.session.post(
                f"{daemon.address}/v1/rotate",
                data=body,
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            ) as response:
                assert response.status == 202
            await eventually(lambda: _changed(env, ids[0]), what="a rotation after the reload")
            assert daemon.queue.batch_max == 7


async def _committed_then_left_pending(env: Env, cluster_id: str, *, claim: bool) -> None:
    """``cluster_id`` committed (not due for ten days), then a newer password left pending by a
    run that died (``claim``: SIGKILLed, its claim run out) or parked it (no claim)."""
    cluster = (await env.admin.clusters())[cluster_id]
    now = datetime.now(UTC)
    region = cluster["region"]
    state = await env.store.read_vnc(cluster_id)
    state = await env.store.stage(
        state, Secret(cluster["vnc_password"]), staged_at=now, region=region
    )
    await env.store.commit(
        state,
        request_id="seed",
        rotated_at=now,
        region=region,
        next_rotation_at=now + timedelta(days=10),
    )
    state = await env.store.read_vnc(cluster_id)
    await env.store.stage(
        state,
        Secret("Kil1ed"),
        staged_at=now + timedelta(seconds=1),
        region=region,
        owner="replica-b/dead" if claim else None,
        claim_until=now - timedelta(seconds=1) if claim else None,
    )


@pytest.mark.parametrize("how", ["sigkilled", "parked"])
async def test_a_password_left_in_flight_is_finished_once_at_start(
    how: str,
    tmp_path: Path,
    sim_factory: SimFactory,
    openbao: OpenBaoServer,
    vault_paths: VaultPaths,
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths) as env:
        left, *others = sorted(await env.changes())
        await env.not_due(*others)
        await _committed_then_left_pending(env, left, claim=how == "sigkilled")
        if how == "parked":
            # A run that stopped after sending it says so in the status (and releases its claim).
            await env.store.update_status(left, status="pending", last_error_code="Interrupted")
        # `rotator status` reads it so: the committed password may not be the live one.
        assert (await env.store.list_vnc_metadata(in_flight=True))[left]["status"] == "pending"

        async with running(env.daemon()) as daemon:

            async def finished() -> bool:
                return (await env.changes())[left] == 1

            await eventually(finished, what="the password in flight to be finished")
            await eventually(lambda: _idle(daemon), what="the batch to finish")

        # Finished, not rotated again on top: one change, to the password that was in flight.
        assert await env.changes() == {left: 1, **dict.fromkeys(others, 0)}
        assert await env.vault_matches_sim() == {}
        assert (await env.store.read_vnc(left)).password == Secret("Kil1ed")
        assert (await env.store.list_vnc_metadata(in_flight=True))[left]["status"] == "rotated"
