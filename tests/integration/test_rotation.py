"""The single-cluster state machine against a real OpenBao, with a fake API at the seam."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from rotator.engine.ratelimit import RateLimit, RegionLimiter
from rotator.engine.report import Outcome
from rotator.engine.retry import Backoff, RetryPolicy
from rotator.engine.rotation import RotationContext, Target, rotate_cluster
from rotator.errors import TerminalApiError, ThrottledError, VaultUnavailableError
from rotator.passwords import LocalPasswordSource, is_valid_vnc_password
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.store import VaultStore, VncState
from tests.support.fake_api import FakeApi
from tests.support.vault import VaultPaths, create_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@dataclass
class Env:
    api: FakeApi
    store: VaultStore
    server: OpenBaoServer
    paths: VaultPaths
    sleeps: list[float] = field(default_factory=list)
    clients: list[VaultClient] = field(default_factory=list)

    async def fake_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def context(
        self, *, owner: str = "test-run", store: VaultStore | None = None, **overrides: object
    ) -> RotationContext:
        quick = Backoff(attempts=4, initial_wait=0.01, max_wait=0.05)
        values: dict[str, object] = {
            "api": self.api,
            "store": store or self.store,
            "passwords": LocalPasswordSource(),
            "limiter": RegionLimiter(RateLimit.parse("1000/1s")),
            "retry": RetryPolicy(
                general=quick,
                conflict=Backoff(attempts=3, initial_wait=5.0, max_wait=60.0),
                throttle=quick,
                vault=quick,
            ),
            "owner": owner,
            "not_before": datetime.now(UTC),
            "sleep": self.fake_sleep,
            "claim_ttl": 30.0,
        }
        values.update(overrides)
        return RotationContext(**values)  # type: ignore[arg-type]

    async def vault_password(self, cluster_id: str) -> tuple[str | None, str | None]:
        state = await self.store.read_vnc(cluster_id)
        return (
            state.password.reveal() if state.password else None,
            state.pending_password.reveal() if state.pending_password else None,
        )

    async def assert_invariant(self, cluster_id: str) -> None:
        """Vault holds the cluster's real password as password or pending_password."""
        real = self.api.clusters[cluster_id].vnc_password
        current, pending = await self.vault_password(cluster_id)
        assert real in (current, pending), "the real VNC password is not in Vault"

    def store_with(self, token: Secret) -> VaultStore:
        client = VaultClient(self.paths.settings(self.server, token=token))
        self.clients.append(client)
        return VaultStore(client)


@pytest_asyncio.fixture
async def env(openbao: OpenBaoServer, vault_paths: VaultPaths) -> AsyncIterator[Env]:
    client = VaultClient(vault_paths.settings(openbao))
    store = VaultStore(client)
    api = FakeApi.with_clusters(3)
    for cluster in api.clusters.values():
        await store.write_root(cluster.id, "root", Secret(cluster.root_password), cluster.region)
        # The initial VNC password is known to Vault, as after a first import.
        state = await store.read_vnc(cluster.id)
        staged = await store.stage_pending(
            state, Secret(cluster.vnc_password), region="cn-hangzhou"
        )
        await store.commit(
            staged,
            request_id="import",
            rotated_at=datetime(2020, 1, 1, tzinfo=UTC),
            region="cn-hangzhou",
        )
    environment = Env(api=api, store=store, server=openbao, paths=vault_paths)
    yield environment
    for extra in environment.clients:
        await extra.aclose()
    await client.aclose()


def target(cluster_id: str = "c-1") -> Target:
    return Target(cluster_id=cluster_id, region="cn-hangzhou")


async def test_happy_path_commits_the_new_password_and_records_status(env: Env) -> None:
    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED
    assert outcome.request_id
    assert outcome.request_id.startswith("REQ-")
    real = env.api.clusters["c-1"].vnc_password
    assert is_valid_vnc_password(real)
    assert real != "init00"
    assert await env.vault_password("c-1") == (real, None)
    state = await env.store.read_vnc("c-1")
    assert state.request_id == outcome.request_id
    # The commit's data carries the times; the metadata is written only to clear a failure.
    assert state.status_view["status"] == "rotated"
    assert state.status_view["last_request_id"] == outcome.request_id
    assert state.next_rotation_at is not None
    assert timedelta(days=29) < state.next_rotation_at - datetime.now(UTC) < timedelta(days=31)
    assert state.custom_metadata == {}


async def test_terminal_error_clears_a_fresh_pending_and_keeps_the_old_password(env: Env) -> None:
    env.api.clusters["c-1"].root_password = "changed-by-someone"

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.FAILED
    assert outcome.code == "IncorrectCredential"
    assert await env.vault_password("c-1") == ("init00", None)
    assert env.api.clusters["c-1"].changes == 0
    state = await env.store.read_vnc("c-1")
    assert state.custom_metadata["status"] == "failed"
    assert state.custom_metadata["last_error_code"] == "IncorrectCredential"


async def test_dropped_answer_is_retried_with_the_same_password(env: Env) -> None:
    env.api.script("c-1", "drop", "ok")

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED
    sent = env.api.sent("c-1")
    assert len(sent) == 2
    assert sent[0] == sent[1], "an ambiguous call must be retried as is"
    await env.assert_invariant("c-1")
    assert (await env.vault_password("c-1"))[1] is None


async def test_ambiguous_until_give_up_keeps_pending_and_the_next_run_converges(env: Env) -> None:
    env.api.script("c-1", "drop", "lost", "lost", "lost")

    first = await rotate_cluster(target(), env.context(owner="run-1"))

    assert first.outcome is Outcome.FAILED
    assert first.code == "Timeout"
    await env.assert_invariant("c-1")
    current, pending = await env.vault_password("c-1")
    assert pending == env.api.clusters["c-1"].vnc_password != current
    assert (await env.store.read_vnc("c-1")).custom_metadata["status"] == "pending"

    second = await rotate_cluster(target(), env.context(owner="run-2"))

    assert second.outcome is Outcome.ROTATED
    # The rerun first re-applies (and commits) the pending password, which may be live; it was
    # generated before the rerun's trigger, so a fresh one follows (finding 4).
    *_, reapplied, fresh = env.api.sent("c-1")
    assert reapplied == pending, "the rerun re-applies the pending password"
    assert fresh != pending
    assert await env.vault_password("c-1") == (fresh, None)
    await env.assert_invariant("c-1")


async def test_terminal_error_after_an_ambiguous_one_keeps_pending(env: Env) -> None:
    not_running = TerminalApiError("cluster stopped", code="InvalidClusterStatus")
    env.api.script("c-1", "drop", not_running)

    outcome = await rotate_cluster(target(), env.context())

    # Left with a password that may be live: "pending", not a quiet "skipped" (finding 11).
    assert outcome.outcome is Outcome.PENDING
    await env.assert_invariant("c-1")
    assert (await env.vault_password("c-1"))[1] == env.api.clusters["c-1"].vnc_password


async def test_a_pending_password_the_api_rejects_is_replaced(env: Env) -> None:
    """This run's own password, which no attempt can have applied, is replaced when refused."""
    env.api.script("c-1", TerminalApiError("parameter Passwd invalid", code="InvalidParams"), "ok")

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED
    first, second = env.api.sent("c-1")
    assert second != first
    assert await env.vault_password("c-1") == (second, None)


async def test_a_refused_pending_password_an_earlier_run_left_is_kept(env: Env) -> None:
    """An earlier run's pending password may be live (it may have applied it before the API's
    rule changed): refused now, it is kept and the cluster fails for a person to decide; it is
    never replaced, which would leave Vault without the cluster's password."""
    state = await env.store.read_vnc("c-1")
    await env.store.stage_pending(state, Secret("abcdef"), region="cn-hangzhou")
    env.api.script("c-1", TerminalApiError("parameter Passwd invalid", code="InvalidParams"), "ok")

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.FAILED
    assert outcome.code == "PendingPasswordRefused"
    assert env.api.sent("c-1") == ["abcdef"]
    assert await env.vault_password("c-1") == ("init00", "abcdef")


async def test_transient_errors_are_retried_then_succeed(env: Env) -> None:
    unavailable = error("ServiceUnavailable", 503)
    env.api.script("c-1", unavailable, error("AgentError", 403), "ok")

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED
    assert outcome.attempts == 3
    assert len(env.sleeps) == 2


async def test_conflict_has_its_own_longer_schedule(env: Env) -> None:
    env.api.script("c-1", error("ConflictOpt", 403), error("ConflictOpt", 403), "ok")

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED
    assert len(env.sleeps) == 2
    # the general schedule here never waits more than 0.05 s; ConflictOpt's allows up to 10 s
    assert all(0 <= s <= 10.0 for s in env.sleeps)
    assert env.context().retry.schedule_for(error("ConflictOpt", 403)).initial_wait == 5.0


async def test_throttling_honours_the_servers_retry_after(env: Env) -> None:
    throttled = ThrottledError("slow down", code="Throttling.User", retry_after=2.5)
    env.api.script("c-1", throttled, "ok")

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED
    assert 2.5 <= env.sleeps[0] <= 3.0


async def test_vault_unreachable_means_the_api_is_never_called(env: Env) -> None:
    from rotator.vault.devserver import free_port

    client = VaultClient(env.paths.settings(env.server, addr=f"http://127.0.0.1:{free_port()}"))
    env.clients.append(client)

    outcome = await rotate_cluster(target(), env.context(store=VaultStore(client)))

    assert outcome.outcome is Outcome.FAILED
    assert outcome.code == "VaultUnavailable"
    assert env.api.calls == []


async def test_commit_failure_leaves_the_password_pending_and_a_rerun_commits(env: Env) -> None:
    admin = VaultClient(env.paths.settings(env.server))
    env.clients.append(admin)
    token = await create_token(admin, policies=["root"], ttl="1h")
    doomed = env.store_with(token)

    async def revoke_token() -> None:
        await admin.write("auth/token/revoke", {"token": token.reveal()})

    env.api.script("c-1", revoke_token)

    outcome = await rotate_cluster(
        target(), env.context(store=doomed, owner="run-1", claim_ttl=0.5)
    )

    assert outcome.outcome is Outcome.COMMIT_FAILED
    await env.assert_invariant("c-1")
    real = env.api.clusters["c-1"].vnc_password
    assert (await env.vault_password("c-1"))[1] == real

    # run-1 could not even release its claim (its token is gone): the rerun waits it out.
    rerun = await rotate_cluster(target(), env.context(owner="run-2", sleep=asyncio.sleep))
    assert rerun.outcome is Outcome.ROTATED
    assert env.api.sent("c-1")[-2] == real, "the rerun re-applies and commits it first"
    await env.assert_invariant("c-1")
    assert (await env.vault_password("c-1"))[1] is None


async def test_two_rotators_racing_make_exactly_one_change(env: Env) -> None:
    release = asyncio.Event()
    applying = asyncio.Event()

    async def slow_apply() -> None:
        applying.set()
        await release.wait()

    env.api.script("c-1", slow_apply)
    ctx_a = env.context(owner="replica-a", sleep=asyncio.sleep, claim_ttl=1.0)
    ctx_b = env.context(
        owner="replica-b", sleep=asyncio.sleep, claim_ttl=1.0, not_before=ctx_a.not_before
    )

    task_a = asyncio.create_task(rotate_cluster(target(), ctx_a))
    await applying.wait()
    task_b = asyncio.create_task(rotate_cluster(target(), ctx_b))
    await asyncio.sleep(0.2)
    release.set()
    results = await asyncio.gather(task_a, task_b)

    assert sorted(r.outcome for r in results) == [Outcome.ROTATED, Outcome.SKIPPED]
    assert env.api.clusters["c-1"].changes == 1
    await env.assert_invariant("c-1")


async def test_a_dead_rotators_claim_is_taken_over_after_it_expires(env: Env) -> None:
    state = await env.store.read_vnc("c-1")
    await env.store.stage_pending(
        state,
        Secret("dead01"),
        region="cn-hangzhou",
        owner="dead-replica",
        claim_until=datetime.now(UTC) + timedelta(seconds=0.3),
    )

    outcome = await rotate_cluster(target(), env.context(sleep=asyncio.sleep))

    assert outcome.outcome is Outcome.ROTATED
    first, fresh = env.api.sent("c-1")
    assert first == "dead01", "the dead rotator's pending password is reused"
    # It was generated before this run's trigger: a fresh one is committed after it.
    assert await env.vault_password("c-1") == (fresh, None)


async def test_a_cluster_rotated_since_the_trigger_is_skipped(env: Env) -> None:
    ctx = env.context()
    assert (await rotate_cluster(target(), ctx)).outcome is Outcome.ROTATED

    again = await rotate_cluster(target(), env.context(not_before=ctx.not_before))

    assert again.outcome is Outcome.SKIPPED
    assert again.code == "AlreadyRotated"
    assert env.api.clusters["c-1"].changes == 1


def error(code: str, status: int) -> TerminalApiError:
    from rotator.ehpc.codes import error_for_code

    return error_for_code(code, "injected", http_status=status)  # type: ignore[return-value]


async def test_a_rival_creating_the_secret_between_our_two_reads_is_seen(env: Env) -> None:
    """Status metadata may exist before a cluster's first version; a rival may create that
    version between our data read and our metadata read. We must see its pending claim."""
    await env.store.update_status("c-2", status="failed", last_error_code="Earlier")

    class RivalFirst(VaultClient):
        armed = True

        async def kv_metadata(self, mount: str, path: str) -> dict[str, object] | None:
            if self.armed and path.endswith("/c-2"):
                self.armed = False
                rival = await env.store.read_vnc("c-2")
                await env.store.stage_pending(
                    rival,
                    Secret("rival1"),
                    region="cn-hangzhou",
                    owner="rival",
                    claim_until=datetime.now(UTC) + timedelta(minutes=5),
                )
            return await super().kv_metadata(mount, path)

    client = RivalFirst(env.paths.settings(env.server))
    env.clients.append(client)
    # A fresh secret: drop the imported version so c-2 has metadata but no data yet.
    await client.request("DELETE", f"secret/metadata/{env.paths.vnc_path}/c-2")
    await env.store.update_status("c-2", status="failed", last_error_code="Earlier")

    state = await VaultStore(client).read_vnc("c-2")

    assert state.custom_metadata["last_error_code"] == "Earlier"
    assert state.pending_password == Secret("rival1")
    assert state.claim_owner == "rival"


async def test_a_long_rate_limit_wait_renews_the_claim_before_applying(env: Env) -> None:
    class SlowLimiter(RegionLimiter):
        async def acquire(self, region: str) -> None:
            await asyncio.sleep(0.6)  # longer than half the claim

    claim_left: list[float] = []

    async def look_at_the_claim() -> None:
        state = await env.store.read_vnc("c-1")
        assert state.claim_until is not None
        claim_left.append((state.claim_until - datetime.now(UTC)).total_seconds())

    env.api.script("c-1", look_at_the_claim)
    ctx = env.context(limiter=SlowLimiter(RateLimit.parse("1000/1s")), claim_ttl=1.0)

    outcome = await rotate_cluster(target(), ctx)

    assert outcome.outcome is Outcome.ROTATED
    assert claim_left[0] > 0.5, "the apply went out under a claim about to expire"


async def test_a_server_error_after_applying_never_loses_the_password(env: Env) -> None:
    stopped = TerminalApiError("cluster stopped", code="InvalidClusterStatus")
    env.api.script("c-1", "apply_then_500", stopped)

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.PENDING
    assert env.api.clusters["c-1"].changes == 1
    await env.assert_invariant("c-1")


async def test_a_commit_whose_answer_was_lost_counts_as_rotated(env: Env) -> None:
    class LostAnswer(VaultStore):
        lost = False

        async def commit(self, state: VncState, **kwargs: Any) -> VncState:
            written = await super().commit(state, **kwargs)
            if not self.lost:
                self.lost = True
                raise VaultUnavailableError("answer lost after the write")
            return written

    store = LostAnswer(env.store.client)

    outcome = await rotate_cluster(target(), env.context(store=store))

    assert outcome.outcome is Outcome.ROTATED
    real = env.api.clusters["c-1"].vnc_password
    assert await env.vault_password("c-1") == (real, None)
    assert (await env.store.read_vnc("c-1")).status_view["status"] == "rotated"


async def test_stale_status_metadata_is_repaired_when_a_trigger_finds_the_work_done(
    env: Env,
) -> None:
    first = env.context()
    assert (await rotate_cluster(target(), first)).outcome is Outcome.ROTATED
    await env.store.update_status(
        "c-1", status="pending", next_rotation_at="2020-01-01T00:00:00+00:00"
    )

    again = await rotate_cluster(target(), env.context(not_before=first.not_before))

    assert again.code == "AlreadyRotated"
    state = await env.store.read_vnc("c-1")
    assert state.custom_metadata == {"status": "rotated"}  # the stale keys are gone
    meta = state.status_view
    assert meta["status"] == "rotated"
    assert datetime.fromisoformat(meta["next_rotation_at"]) > datetime.now(UTC)
    assert env.api.clusters["c-1"].changes == 1


async def test_a_bug_in_one_rotation_does_not_sink_the_batch(env: Env) -> None:
    from rotator.engine.batch import run_batch

    async def explode() -> None:
        raise RuntimeError("unexpected")

    env.api.script("c-2", explode)

    summary = await run_batch(
        [target("c-1"), target("c-2"), target("c-3")], env.context(), run_id="r", concurrency=2
    )

    by_id = {o.cluster_id: o for o in summary.outcomes}
    assert by_id["c-2"].outcome is Outcome.FAILED
    assert by_id["c-2"].code == "InternalError"
    assert by_id["c-1"].outcome is by_id["c-3"].outcome is Outcome.ROTATED


async def test_a_stop_request_parks_a_rotation_waiting_on_a_long_retry(env: Env) -> None:
    from rotator.engine.batch import run_batch

    stop = asyncio.Event()

    async def busy_then_stop() -> None:
        stop.set()  # SIGTERM arrives while the cluster is busy
        raise error("ConflictOpt", 403)

    env.api.script("c-1", busy_then_stop)
    ctx = env.context(sleep=asyncio.sleep)  # ConflictOpt waits up to 10 s here

    summary = await asyncio.wait_for(
        run_batch([target("c-1")], ctx, run_id="r", concurrency=1, stop=stop), timeout=3
    )

    (outcome,) = summary.outcomes
    assert outcome.outcome is Outcome.FAILED
    assert outcome.code == "Interrupted"
    await env.assert_invariant("c-1")
    assert (await env.vault_password("c-1"))[1] is None, "nothing was applied: pending cleared"


class CountingClient(VaultClient):
    """Counts the HTTP requests rotator makes to OpenBao (one per ``request``)."""

    requests: list[str]

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.requests.append(f"{method} {path.split('/', 2)[1]}")
        return await super().request(method, path, **kwargs)


async def test_a_rotation_costs_at_most_four_vault_requests(env: Env) -> None:
    """Issue 10, section 5: read the committed record, stage (CAS on the pending version the
    last commit recorded), commit; the root credential comes with the target, as the inventory
    reads it: four with it. No status write: the commit's data holds the times."""
    client = CountingClient(env.paths.settings(env.server))
    client.requests = []
    env.clients.append(client)
    store = VaultStore(client)
    root = await env.store.read_root("c-1")
    for round_ in range(3):
        client.requests.clear()
        ctx = env.context(store=store, owner=f"run-{round_}")
        outcome = await rotate_cluster(Target("c-1", "cn-hangzhou", root=root), ctx)
        assert outcome.outcome is Outcome.ROTATED
        assert len(client.requests) <= 3, client.requests
    assert client.requests == ["GET data", "POST data", "POST data"]
    await env.assert_invariant("c-1")


async def test_an_old_layout_pending_password_is_migrated_and_reapplied(env: Env) -> None:
    """A secret written by an older rotator kept pending_password in the vnc record (maybe
    live on the cluster). The first rotation moves it, re-applies it, then rotates."""
    path = f"{env.paths.vnc_path}/c-1"
    current = await env.store.client.kv_read("secret", path)
    assert current is not None
    old = dict(current["data"])
    old.pop("pending_version", None)
    old.update(pending_password="Old123", pending_since="2025-01-01T00:00:00Z")
    await env.store.client.kv_write("secret", path, old)
    env.api.clusters["c-1"].vnc_password = "Old123"  # the old run's apply went through
    await env.assert_invariant("c-1")

    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED
    first, fresh = env.api.sent("c-1")
    assert first == "Old123"
    assert await env.vault_password("c-1") == (fresh, None)
    data = (await env.store.client.kv_read("secret", path) or {})["data"]
    assert "pending_password" not in data


async def test_a_first_rotation_after_a_failure_clears_its_status_without_a_metadata_read(
    env: Env,
) -> None:
    """The data read of a cluster never rotated finds nothing (404), not the failure status its
    metadata holds; the commit's answer carries the custom metadata, so the status is still
    cleared, and a rotation that found no status writes none."""
    for path in (env.paths.vnc_path, env.paths.pending_path):  # c-3 was never rotated
        await env.store.client.request("DELETE", f"secret/metadata/{path}/c-3")
    await env.store.update_status("c-3", status="failed", last_error_code="Earlier", attempts=2)
    client = CountingClient(env.paths.settings(env.server))
    client.requests = []
    env.clients.append(client)
    store = VaultStore(client)
    root = await env.store.read_root("c-3")

    outcome = await rotate_cluster(
        Target("c-3", "cn-hangzhou", root=root), env.context(store=store)
    )

    assert outcome.outcome is Outcome.ROTATED
    assert client.requests == ["GET data", "POST data", "POST data", "PATCH metadata"]
    state = await env.store.read_vnc("c-3")
    assert state.custom_metadata == {"status": "rotated"}
    assert state.status_view["next_rotation_at"] > state.status_view["last_rotated_at"]
    await env.assert_invariant("c-3")


async def test_an_old_layout_pending_password_without_its_time_never_satisfies_a_trigger(
    env: Env,
) -> None:
    """Review after the wave-2 merge: an old-layout pending_password without pending_since
    (readers could see it: the old layout exposed it) was migrated with staged_at = now, so
    once re-applied and committed it counted as generated after this run's trigger and no
    fresh password followed. Of unknown age, it is taken as older than any trigger."""
    path = f"{env.paths.vnc_path}/c-1"
    current = await env.store.client.kv_read("secret", path)
    assert current is not None
    old = dict(current["data"])
    old.pop("pending_version", None)
    old.update(pending_password="Old123")
    await env.store.client.kv_write("secret", path, old)
    env.api.clusters["c-1"].vnc_password = "Old123"
    trigger = datetime.now(UTC)  # e.g. someone left the team (after the import)

    outcome = await rotate_cluster(target(), env.context(not_before=trigger))

    assert outcome.outcome is Outcome.ROTATED
    assert env.api.sent("c-1")[0] == "Old123"
    assert len(env.api.sent("c-1")) == 2, "a fresh password must follow the old one"
    fresh = env.api.sent("c-1")[1]
    assert await env.vault_password("c-1") == (fresh, None)


async def test_a_person_editing_the_vnc_record_mid_rotation_does_not_fail_the_commit(
    env: Env,
) -> None:
    """Review after the wave-2 merge: while the API call was on the wire a person added a key to
    the VNC secret (``bao kv patch ... owner=team-a``), a new version. The commit's
    check-and-set lost, the run said commit_failed, and readers kept reading the old password
    although the cluster had the new one (it sat in the private pending record until the next
    run). Nobody staged since (the pending record is still ours), so the commit is redone on
    the person's version, keeping their key."""
    client = env.store.client
    vnc = f"{env.paths.vnc_path}/c-1"

    async def person_edits() -> None:
        entry = await client.kv_read("secret", vnc)
        assert entry is not None
        data = {**(entry.get("data") or {}), "owner": "team-a"}
        await client.kv_write("secret", vnc, data, cas=int(entry["metadata"]["version"]))

    env.api.script("c-1", person_edits)
    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.ROTATED, outcome
    real = env.api.clusters["c-1"].vnc_password
    assert await env.vault_password("c-1") == (real, None)
    state = await env.store.read_vnc("c-1")
    assert state.extra == {"owner": "team-a"}
    assert state.status_view.get("status", "rotated") == "rotated"


async def test_a_password_a_person_wrote_by_hand_mid_rotation_is_not_overwritten(
    env: Env,
) -> None:
    """The same race, but the person wrote another password (they may have set it on the
    cluster by hand): the commit is not redone over it; ours stays pending, commit_failed."""
    client = env.store.client
    vnc = f"{env.paths.vnc_path}/c-1"

    async def person_sets_a_password() -> None:
        entry = await client.kv_read("secret", vnc)
        assert entry is not None
        data = {**(entry.get("data") or {}), "password": "Hand99"}
        await client.kv_write("secret", vnc, data, cas=int(entry["metadata"]["version"]))

    env.api.script("c-1", person_sets_a_password)
    outcome = await rotate_cluster(target(), env.context())

    assert outcome.outcome is Outcome.COMMIT_FAILED
    real = env.api.clusters["c-1"].vnc_password
    assert await env.vault_password("c-1") == ("Hand99", real)
