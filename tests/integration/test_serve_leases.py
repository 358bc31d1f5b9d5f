"""Check-out leases against a real OpenBao and the simulator: the done-when of issue 12.

Checkout returns the current password; a check-in and an expiry each cause exactly one
rotation; a token without the policy is refused and learns nothing; a lease that expired while
no daemon ran is rotated at start; two replica processes, one SIGKILLed, rotate each lease end
exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rotator.leases import model
from rotator.leases.model import CheckoutPolicy, Holder, LeaseDoc
from rotator.leases.vault import LeaseStore
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.setup import default_policy_dir, render_policy
from tests.integration.test_serve import Env, eventually, make_env, metric, running, scrape
from tests.integration.test_serve_replicas import Replica, import_passwords, start_replica
from tests.support.events import FakeEventServer, event_server, kv_event  # noqa: F401 - fixture
from tests.support.sim import SimFactory
from tests.support.vault import VaultPaths, create_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def install_checkout_policy(env: Env, admin: VaultClient) -> str:
    """The shipped ehpc-vnc-checkout policy for this test's paths, under a name of its own."""
    name = "checkout-" + hashlib.sha256(env.paths.prefix.encode()).hexdigest()[:10]
    template = default_policy_dir().joinpath("ehpc-vnc-checkout.hcl").read_text(encoding="utf-8")
    text = render_policy(template, admin.settings, password_policy="unused")
    await admin.request("PUT", f"sys/policies/acl/{name}", json={"policy": text})
    return name


async def call(  # noqa: PLR0917 - reads like the HTTP request it makes
    session: aiohttp.ClientSession,
    base: str,
    method: str,
    path: str,
    token: Secret,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.request(
        method, f"{base}{path}", json=body, headers={"X-Vault-Token": token.reveal()}
    ) as response:
        headers = {str(k): v for k, v in response.headers.items()}
        return response.status, await response.json(), headers


async def lease_doc(env: Env, cluster_id: str) -> LeaseDoc:
    return await LeaseStore(env.store.client).read(cluster_id)


async def sim_password(env: Env, cluster_id: str) -> str:
    return str((await env.admin.clusters())[cluster_id]["vnc_password"])


async def settled(env: Env, cluster_id: str) -> bool:
    doc = await lease_doc(env, cluster_id)
    return not doc.leases and doc.rotation_due is None


async def test_checkout_checkin_and_expiry_each_rotate_once(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(
        tmp_path,
        sim_factory,
        openbao,
        vault_paths,
        clusters=3,
        # The default refresh (5m): expiries must be acted on by the lease timers, not polls.
        serve={"checkout_max_ttl": "1h"},
    ) as env:
        ids = sorted(await env.changes())
        await import_passwords(env)
        await env.not_due(*ids)
        admin = env.store.client
        policy = await install_checkout_policy(env, admin)
        alice = await create_token(admin, policies=[policy, "default"])
        bob = await create_token(admin, policies=[policy, "default"])
        nobody = await create_token(admin, policies=["default"])
        first, second, _third = ids
        async with running(env.daemon()) as daemon:
            base, session = daemon.address, env.session

            # A token without the policy is refused, for a real cluster or a made-up one alike.
            for cluster_id in (first, "no-such-cluster"):
                status, answer, _ = await call(
                    session, base, "POST", "/v1/checkout", nobody, {"cluster_id": cluster_id}
                )
                assert (status, answer["code"]) == (403, "CheckoutDenied")
                assert "password" not in answer
            status, answer, _ = await call(session, base, "GET", "/v1/leases", nobody)
            assert (status, answer["leases"]) == (200, [])
            async with session.post(f"{base}/v1/checkout", json={"cluster_id": first}) as r:
                assert r.status == 401  # no token at all

            # Checkout hands out the cluster's real, current password.
            before = await sim_password(env, first)
            status, mine, headers = await call(
                session,
                base,
                "POST",
                "/v1/checkout",
                alice,
                {"cluster_id": first, "ttl": "1h", "reason": "debug job 4711"},
            )
            assert status == 200, mine
            assert mine["password"] == before
            assert headers["Cache-Control"] == "no-store"
            status, theirs, _ = await call(
                session, base, "POST", "/v1/checkout", bob, {"cluster_id": first, "ttl": 600}
            )
            assert status == 200
            status, listing, _ = await call(session, base, "GET", "/v1/leases", alice)
            assert {row["lease_id"] for row in listing["leases"]} == {
                mine["lease_id"],
                theirs["lease_id"],
            }
            assert all("password" not in row for row in listing["leases"])

            # Only the holder checks a lease in; shared mode rotates when the last one ends.
            status, answer, _ = await call(
                session, base, "POST", "/v1/checkin", bob, {"lease_id": mine["lease_id"]}
            )
            assert (status, answer["code"]) == (403, "LeaseNotYours")
            status, answer, _ = await call(
                session, base, "POST", "/v1/renew", alice, {"lease_id": mine["lease_id"]}
            )
            assert (status, answer["code"]) == (400, "InvalidTtl")  # past max_ttl from checkout
            status, answer, _ = await call(
                session,
                base,
                "POST",
                "/v1/renew",
                alice,
                {"lease_id": mine["lease_id"], "ttl": "30m"},
            )
            assert status == 200
            status, answer, _ = await call(
                session, base, "POST", "/v1/checkin", alice, {"lease_id": mine["lease_id"]}
            )
            assert (status, answer["rotating"]) == (200, False)
            assert (await env.changes())[first] == 0  # one lease is still open
            status, answer, _ = await call(
                session, base, "POST", "/v1/checkin", bob, {"lease_id": theirs["lease_id"]}
            )
            assert (status, answer["rotating"]) == (200, True)
            # A checkout now never gets the old password: refused until the rotation is done.
            status, answer, headers = await call(
                session, base, "POST", "/v1/checkout", alice, {"cluster_id": first}
            )
            if status == 409:
                assert answer["code"] == "RotationPending"
                assert int(headers["Retry-After"]) >= 1
            else:
                assert status == 200
                assert answer["password"] != before
                await call(
                    session, base, "POST", "/v1/checkin", alice, {"lease_id": answer["lease_id"]}
                )
            await eventually(lambda: settled(env, first), what="the check-in's rotation")

            # An expiry rotates too, without anyone checking in.
            status, short, _ = await call(
                session, base, "POST", "/v1/checkout", alice, {"cluster_id": second, "ttl": "1s"}
            )
            assert status == 200
            await eventually(lambda: settled(env, second), what="the expiry's rotation")

            # Exactly once each, also after more reconciles have looked at them.
            await daemon.leases.reconcile()
            await daemon.leases.reconcile()
            await eventually(lambda: _idle(daemon), what="the queue to be idle")
            changes = await env.changes()
            assert changes[second] == 1
            assert changes[first] in (1, 2)  # 2 only when the racing checkout above got in
            assert await sim_password(env, second) != short["password"]
            assert await env.vault_matches_sim() == {}
            samples = await scrape(session, daemon)
            assert metric(samples, "rotator_checkout_leases_open") == 0
            assert metric(samples, "rotator_checkout_leases_overdue") == 0
            assert metric(samples, "rotator_triggers_total", source="checkout") >= 2


async def _idle(daemon: Any) -> bool:
    return bool(daemon.queue.depth == 0 and daemon.queue._idle.is_set())


def _true_when(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def test_a_lease_that_expired_while_no_daemon_ran_is_rotated_at_start(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths, clusters=2) as env:
        ids = sorted(await env.changes())
        await import_passwords(env)
        await env.not_due(*ids)
        # Checked out after the passwords were imported, and expired while nothing was running.
        await expired_lease(env, ids[0], Holder("oidc-carol", entity_id="e-carol"))
        async with running(env.daemon()):
            await eventually(lambda: settled(env, ids[0]), what="the rotation at start")
        assert await env.changes() == {ids[0]: 1, ids[1]: 0}


async def expired_lease(env: Env, cluster_id: str, holder: Holder) -> None:
    """A lease checked out now (after the import: a password staged before a lease's end does
    not pay for it) that has expired by the time this returns."""
    _doc, lease = await LeaseStore(env.store.client).update(
        cluster_id,
        lambda doc: model.checkout(
            doc, holder, ttl=0.05, reason="", policy=CheckoutPolicy(), now=datetime.now(UTC)
        ),
    )
    await eventually(
        _true_when(lambda: datetime.now(UTC) > lease.expires_at), what="the lease to expire"
    )


async def _address(replica: Replica) -> str:
    await eventually(
        _true_when(lambda: replica.seen("serve_listening") > 0), within=60, what="listening"
    )
    return str(next(e for e in replica.events if e.get("event") == "serve_listening")["address"])


@pytest.mark.slow
async def test_two_replicas_one_killed_rotate_each_lease_end_once(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(
        tmp_path,
        sim_factory,
        openbao,
        vault_paths,
        clusters=2,
        serve={"schedule_refresh": "1s", "batch_delay": "50ms"},
    ) as env:
        ids = sorted(await env.changes())
        await import_passwords(env)
        await env.not_due(*ids)
        admin = env.store.client
        alice = await create_token(admin, policies=[await install_checkout_policy(env, admin)])
        replicas = [await start_replica(f"r{i}", env.config) for i in range(2)]
        try:
            addresses = [await _address(r) for r in replicas]
            await eventually(
                _true_when(lambda: all(r.seen("schedule_refreshed") for r in replicas)),
                within=60,
                what="both replicas to load",
            )
            # Both alive: both see the expiry, one rotation.
            status, answer, _ = await call(
                env.session,
                addresses[0],
                "POST",
                "/v1/checkout",
                alice,
                {"cluster_id": ids[0], "ttl": "1s"},
            )
            assert status == 200, answer
            await eventually(lambda: settled(env, ids[0]), within=60, what="first lease end")

            # The replica that handed out the lease dies at once; the other rotates at expiry.
            status, answer, _ = await call(
                env.session,
                addresses[0],
                "POST",
                "/v1/checkout",
                alice,
                {"cluster_id": ids[1], "ttl": "2s"},
            )
            assert status == 200, answer
            replicas[0].process.send_signal(signal.SIGKILL)
            await replicas[0].process.wait()
            await eventually(lambda: settled(env, ids[1]), within=60, what="second lease end")
            survivor = replicas[1]
            reconciled = survivor.seen("schedule_refreshed")
            await eventually(
                _true_when(lambda: survivor.seen("schedule_refreshed") >= reconciled + 2),
                within=60,
                what="two more refreshes",
            )
            assert await env.changes() == {ids[0]: 1, ids[1]: 1}
            assert await env.vault_matches_sim() == {}
            survivor.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(survivor.process.wait(), 30) == 0
        finally:
            for replica in replicas:
                if replica.process.returncode is None:
                    replica.process.kill()
                    await replica.process.wait()
                if replica.reader is not None:
                    await replica.reader
                print(f"--- {replica.name} ({replica.process.returncode})")
                print("\n".join(replica.lines[-40:]))
        secrets = {c["vnc_password"] for c in (await env.admin.clusters()).values()}
        for replica in replicas:
            assert not any(s in "\n".join(replica.lines) for s in secrets)


async def rotator_cli(*args: str, token: Secret | None, home: Path) -> tuple[int, str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
    if token is not None:
        env["VAULT_TOKEN"] = token.reveal()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rotator.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_checks_out_lists_and_checks_in(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths, clusters=1) as env:
        (cluster_id,) = sorted(await env.changes())
        await import_passwords(env)
        await env.not_due(cluster_id)
        admin = env.store.client
        dave = await create_token(admin, policies=[await install_checkout_policy(env, admin)])
        nobody = await create_token(admin, policies=["default"])
        async with running(env.daemon()) as daemon:
            server = ("--server", daemon.address)
            code, out, err = await rotator_cli(
                "checkout", cluster_id, "--ttl", "2h", "--reason", "job 4711", *server,
                token=dave, home=tmp_path,
            )  # fmt: skip
            assert code == 0, err
            assert out.strip() == await sim_password(env, cluster_id)
            lease_id = err.split()[1]
            code, out, _ = await rotator_cli("leases", *server, token=dave, home=tmp_path)
            assert code == 0
            assert lease_id in out
            assert "job 4711" in out
            code, out, _ = await rotator_cli(
                "renew", lease_id, "--ttl", "1h", "--json", *server, token=dave, home=tmp_path
            )
            assert (code, json.loads(out)["lease_id"]) == (0, lease_id)
            code, _, err = await rotator_cli(
                "checkout", cluster_id, *server, token=nobody, home=tmp_path
            )
            assert code == 1
            assert "ehpc-vnc-checkout" in err
            code, out, _ = await rotator_cli(
                "checkin", lease_id, *server, token=dave, home=tmp_path
            )
            assert code == 0
            assert "rotated" in out
            await eventually(lambda: settled(env, cluster_id), what="the check-in's rotation")
        assert await env.changes() == {cluster_id: 1}


async def test_rotate_runs_rotate_clusters_whose_lease_expired(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """Without any daemon: the nightly ``rotator rotate`` pays a lease-end debt and clears it."""
    async with make_env(tmp_path, sim_factory, openbao, vault_paths, clusters=2) as env:
        ids = sorted(await env.changes())
        await import_passwords(env)
        await env.not_due(*ids)
        await expired_lease(env, ids[0], Holder("oidc-erin", entity_id="e-erin"))
        code, out, err = await rotator_cli(
            "rotate", "--cluster", ids[0], "--dry-run", "--config", str(env.config), "--json",
            token=None, home=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["clusters"][0]["action"] == "rotate"
        unchanged = await lease_doc(env, ids[0])
        assert (len(unchanged.leases), unchanged.rotation_due) == (1, None)  # a plan writes nothing
        # plan shows what rotate will do: the lease end makes the cluster due.
        code, out, err = await rotator_cli(
            "plan", "--cluster", ids[0], "--config", str(env.config), "--json",
            token=None, home=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        (row,) = json.loads(out)["clusters"]
        assert (row["action"], "check-out lease ended" in row["reason"]) == ("rotate", True), row
        code, out, err = await rotator_cli(
            "rotate", "--cluster", ids[0], "--config", str(env.config), "--json",
            token=None, home=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["counts"]["rotated"] == 1, out
        assert await settled(env, ids[0])
        assert await env.changes() == {ids[0]: 1, ids[1]: 0}


async def test_a_failed_lease_end_rotation_stays_visible_and_is_retried(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths, clusters=1) as env:
        (cluster_id,) = sorted(await env.changes())
        await import_passwords(env)
        await env.not_due(cluster_id)
        admin = env.store.client
        frank = await create_token(admin, policies=[await install_checkout_policy(env, admin)])
        async with running(env.daemon()) as daemon:
            assert daemon.leases.service is not None
            retries = asyncio.Event()

            def backoff(_failures: int) -> float:
                retries.set()
                return 0.5  # production: 30 s doubling

            daemon.leases.service.backoff = backoff
            status, lease, _ = await call(
                env.session,
                daemon.address,
                "POST",
                "/v1/checkout",
                frank,
                {"cluster_id": cluster_id},
            )
            assert status == 200
            await env.admin.patch_cluster(cluster_id, status="exception")  # the API refuses now
            status, _, _ = await call(
                env.session, daemon.address, "POST", "/v1/checkin", frank, lease
            )
            assert status == 200

            rows: list[dict[str, Any]] = []

            async def failure_shown() -> bool:
                _, answer, _ = await call(env.session, daemon.address, "GET", "/v1/leases", frank)
                rows[:] = answer["leases"]
                return any(r.get("state") == "expired, rotation failed" for r in rows)

            await eventually(failure_shown, what="the failed rotation in GET /v1/leases")
            assert rows[0]["last_error"] == "InvalidClusterStatus"
            assert "next_attempt_at" in rows[0]
            status, answer, _ = await call(
                env.session,
                daemon.address,
                "POST",
                "/v1/checkout",
                frank,
                {"cluster_id": cluster_id},
            )
            assert (status, answer["code"]) == (409, "RotationPending")  # never the old password
            samples = await scrape(env.session, daemon)
            assert metric(samples, "rotator_checkout_rotation_failures_total") >= 1
            assert metric(samples, "rotator_checkout_leases_overdue") == 1

            await env.admin.patch_cluster(cluster_id, status="running")
            await eventually(lambda: settled(env, cluster_id), what="the retried rotation")
            assert retries.is_set()
        assert await env.changes() == {cluster_id: 1}


async def test_a_checked_out_cluster_that_falls_due_is_held_until_forced(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """A period rotation does not change a checked-out password under its holder; --force does."""
    async with make_env(tmp_path, sim_factory, openbao, vault_paths, clusters=2) as env:
        ids = sorted(await env.changes())
        await import_passwords(env)
        past = datetime.now(UTC) - timedelta(days=1)
        for cluster_id in ids:
            await env.set_due(cluster_id, past)
        await LeaseStore(env.store.client).update(
            ids[0],
            lambda doc: model.checkout(
                doc,
                Holder("oidc-erin", entity_id="e-erin"),
                ttl=3600,
                reason="",
                policy=CheckoutPolicy(),
                now=datetime.now(UTC),
            ),
        )
        config = str(env.config)
        code, out, err = await rotator_cli(
            "plan", "--config", config, "--json", token=None, home=tmp_path
        )
        assert code == 0, err
        rows = {row["cluster_id"]: row for row in json.loads(out)["clusters"]}
        assert rows[ids[0]]["action"] == "skip"
        assert rows[ids[0]]["code"] == "CheckedOut"
        assert "oidc-erin" in rows[ids[0]]["reason"]
        assert rows[ids[1]]["action"] == "rotate"
        code, out, err = await rotator_cli(
            "rotate", "--all", "--config", config, "--json", token=None, home=tmp_path
        )
        assert code == 0, err
        assert await env.changes() == {ids[0]: 0, ids[1]: 1}
        held = [o for o in json.loads(out)["clusters"] if o["cluster_id"] == ids[0]]
        assert held[0]["code"] == "CheckedOut", held
        code, out, err = await rotator_cli(
            "rotate", "--cluster", ids[0], "--force", "--config", config, "--json",
            token=None, home=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        assert await env.changes() == {ids[0]: 1, ids[1]: 1}


async def test_a_lease_written_elsewhere_holds_the_schedule_at_once_on_a_vault_event(
    tmp_path: Path,
    sim_factory: SimFactory,
    openbao: OpenBaoServer,
    vault_paths: VaultPaths,
    event_server: FakeEventServer,  # noqa: F811 - the fixture
) -> None:
    """Vault Enterprise push: another replica's checkout (a write to the lease document) is
    seen at once, not at the next schedule refresh; without it, the reconcile poll remains."""
    event_server.token = openbao.root_token.reveal()
    kind = "kv-v2/data-write"
    async with make_env(tmp_path, sim_factory, openbao, vault_paths, clusters=1) as env:
        (cluster_id,) = sorted(await env.changes())
        await import_passwords(env)
        await env.not_due(cluster_id)
        env.reconfigure(serve={"event_types": [kind], "schedule_refresh": "1h"})
        async with running(env.daemon(events_addr=event_server.addr)) as daemon:
            await event_server.wait_connected(kind)
            await eventually(
                _true_when(lambda: daemon.leases.reconciles >= 1), what="the first reconcile"
            )
            assert daemon.schedule.held_reason(cluster_id) is None
            store = LeaseStore(env.store.client)
            await store.update(
                cluster_id,
                lambda doc: model.checkout(
                    doc,
                    Holder("oidc-erin", entity_id="e-erin"),
                    ttl=3600,
                    reason="",
                    policy=CheckoutPolicy(),
                    now=datetime.now(UTC),
                ),
            )
            mount = env.store.client.settings.kv_mount
            leases_path = store.leases_path
            delivered = await event_server.send(
                kind, kv_event(f"{mount}/data/{leases_path}/{cluster_id}")
            )
            assert delivered == 1  # the subscription's data_path filter lets it through
            await eventually(
                _true_when(lambda: daemon.schedule.held_reason(cluster_id) is not None),
                what="the schedule to hold the checked-out cluster",
            )
            assert "data_path matches" in event_server.filters[kind]
