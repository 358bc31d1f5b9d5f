"""The rotation protocol's findings (issue 9) as unit tests: the engine against the in-memory
store and the fake API, no servers, no real sleeping."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from rotator.ehpc.codes import error_for_code
from rotator.engine.batch import run_batch
from rotator.engine.model import RootCredential
from rotator.engine.ratelimit import RateLimit, RegionLimiter
from rotator.engine.report import ClusterOutcome, Outcome, RunStatus, RunSummary
from rotator.engine.retry import Backoff, RetryPolicy
from rotator.engine.rotation import RotationContext, Target, not_running_outcome, rotate_cluster
from rotator.errors import TerminalApiError, VaultUnavailableError
from rotator.passwords import LocalPasswordSource
from rotator.secret import Secret
from tests.support.fake_api import FakeApi
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Env:
    def __init__(self, region: str = "cn-hangzhou") -> None:
        self.api = FakeApi.with_clusters(1)
        self.store = MemoryStore(now=lambda: T0)
        cluster = self.api.clusters["c-1"]
        self.root = RootCredential("c-1", "root", Secret(cluster.root_password), region)
        self.store.put_root(self.root)
        self.store.put_vnc(
            "c-1",
            Secret(cluster.vnc_password),
            staged_at=T0 - timedelta(days=40),
            rotated_at=T0 - timedelta(days=40),
        )
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def context(self, **overrides: Any) -> RotationContext:
        quick = Backoff(attempts=4, initial_wait=0.01, max_wait=0.05)
        values: dict[str, Any] = {
            "api": self.api,
            "store": self.store,
            "passwords": LocalPasswordSource(),
            "limiter": RegionLimiter(RateLimit.parse("1000/1s")),
            "retry": RetryPolicy(
                general=quick, conflict=quick, throttle=quick, vault=quick, rng=random.Random(1)
            ),
            "owner": "run-1",
            "not_before": T0,
            "sleep": self.sleep,
            "now": lambda: T0,
            "claim_ttl": 30.0,
        }
        values.update(overrides)
        return RotationContext(**values)

    def real(self) -> Secret:
        return Secret(self.api.clusters["c-1"].vnc_password)

    def assert_invariant(self) -> None:
        assert self.real() in (self.store.current("c-1"), self.store.pending_password("c-1"))


def target(**kw: Any) -> Target:
    return Target("c-1", kw.pop("region", "cn-hangzhou"), **kw)


async def test_the_happy_path_costs_three_vault_calls_besides_the_root_read() -> None:
    """Read, stage, commit: the commit records the times in the data, so the status metadata
    is written only when a failure left something to clear (issue 10 §5, issue 14 §2)."""
    env = Env()
    outcome = await rotate_cluster(target(root=env.root), env.context())
    assert outcome.outcome is Outcome.ROTATED
    assert env.store.calls == ["read_vnc", "stage", "commit"]
    # The next rotation stages with check-and-set on the pending version the commit recorded:
    # still no read of the pending record.
    env.store.calls.clear()
    later = env.context(not_before=T0 + timedelta(seconds=1), now=lambda: T0 + timedelta(1))
    assert (await rotate_cluster(target(root=env.root), later)).outcome is Outcome.ROTATED
    assert env.store.calls == ["read_vnc", "stage", "commit"]
    assert env.api.clusters["c-1"].changes == 2
    env.assert_invariant()
    state = await env.store.read_vnc("c-1")
    assert state.next_rotation_at == state.rotated_at + timedelta(days=30)  # type: ignore[operator]
    assert state.status_view["status"] == "rotated"


async def test_a_success_after_a_failure_clears_the_failure_status_once() -> None:
    env = Env()
    await env.store.update_status("c-1", status="failed", last_error_code="Boom", attempts=3)
    env.store.calls.clear()
    outcome = await rotate_cluster(target(root=env.root), env.context())
    assert outcome.outcome is Outcome.ROTATED
    assert env.store.calls == ["read_vnc", "stage", "commit", "update_status"]
    assert env.store.vnc["c-1"].custom_metadata == {"status": "rotated"}


async def test_finding_4_a_password_staged_before_the_trigger_does_not_satisfy_it() -> None:
    """Committed after the trigger, but generated before it (it sat pending): not enough."""
    env = Env()
    trigger = T0 - timedelta(minutes=5)
    env.store.put_vnc(
        "c-1",
        Secret(env.api.clusters["c-1"].vnc_password),
        staged_at=trigger - timedelta(minutes=1),
        rotated_at=trigger + timedelta(minutes=1),
    )
    outcome = await rotate_cluster(target(), env.context(not_before=trigger))
    assert outcome.outcome is Outcome.ROTATED
    assert env.api.clusters["c-1"].changes == 1
    # A password staged after the trigger does satisfy it.
    again = await rotate_cluster(target(), env.context(not_before=trigger, owner="run-2"))
    assert again.code == "AlreadyRotated"


async def test_finding_8_a_bad_region_fails_the_cluster_before_anything_is_staged() -> None:
    env = Env(region="CN_Hangzhou")
    outcome = await rotate_cluster(target(region=""), env.context())
    assert (outcome.outcome, outcome.code) == (Outcome.FAILED, "InvalidRegion")
    assert outcome.message is not None
    assert "CN_Hangzhou" in outcome.message
    assert env.api.calls == []
    assert env.store.pending.get("c-1") is None or env.store.pending["c-1"].version == 0
    assert env.store.vnc["c-1"].custom_metadata["status"] == "failed"


async def test_finding_9_sigterm_cancels_a_hung_call_after_the_grace_and_keeps_pending() -> None:
    env = Env()
    on_the_wire = asyncio.Event()
    never = asyncio.Event()

    async def hang() -> None:
        on_the_wire.set()
        await never.wait()

    env.api.script("c-1", hang)
    stop = asyncio.Event()
    grace: list[float] = []

    async def sleep(seconds: float) -> None:
        grace.append(seconds)
        await asyncio.sleep(0)

    task = asyncio.create_task(
        rotate_cluster(target(), env.context(stop=stop, stop_grace=7.0, sleep=sleep))
    )
    await asyncio.wait_for(on_the_wire.wait(), 5)
    stop.set()
    outcome = await asyncio.wait_for(task, 5)

    assert (outcome.outcome, outcome.code) == (Outcome.FAILED, "Interrupted")
    assert grace == [7.0]
    sent = Secret(env.api.sent("c-1")[0])
    assert env.store.pending_password("c-1") == sent, "it may have applied: kept"
    assert env.store.vnc["c-1"].custom_metadata["status"] == "pending"
    pending = env.store._read_pending("c-1")
    assert pending is not None
    assert pending.claim_owner is None, "the claim is released for the next run"


async def test_finding_9_a_call_that_finishes_within_the_grace_is_committed() -> None:
    env = Env()
    stop = asyncio.Event()

    async def slow() -> None:
        stop.set()  # SIGTERM arrives while the call is on the wire
        await asyncio.sleep(0)

    env.api.script("c-1", slow)
    outcome = await rotate_cluster(target(), env.context(stop=stop, sleep=asyncio.sleep))
    assert outcome.outcome is Outcome.ROTATED
    assert env.store.current("c-1") == env.real()


async def test_finding_11_a_stopped_cluster_left_pending_is_pending_and_part_failure() -> None:
    env = Env()
    stopped = TerminalApiError("cluster stopped", code="InvalidClusterStatus")
    env.api.script("c-1", "drop", stopped)

    outcome = await rotate_cluster(target(), env.context())

    assert (outcome.outcome, outcome.code) == (Outcome.PENDING, "InvalidClusterStatus")
    env.assert_invariant()
    assert env.store.pending_password("c-1") == env.real()
    summary = RunSummary.build(run_id="r", started_at=T0, finished_at=T0, outcomes=[outcome])
    assert summary.status is RunStatus.PART_FAILURE
    assert summary.exit_code == 3


async def test_finding_11_a_stopped_cluster_without_pending_is_skipped() -> None:
    env = Env()
    env.api.script("c-1", TerminalApiError("cluster stopped", code="InvalidClusterStatus"))
    outcome = await rotate_cluster(target(), env.context())
    assert outcome.outcome is Outcome.SKIPPED
    assert env.store.pending_password("c-1") is None, "never applied: cleared"


async def test_a_run_of_only_pending_clusters_is_part_failure_not_failure() -> None:
    outcomes = [ClusterOutcome("c-1", "r", Outcome.PENDING, "InvalidClusterStatus")]
    summary = RunSummary.build(run_id="r", started_at=T0, finished_at=T0, outcomes=outcomes)
    assert summary.status is RunStatus.PART_FAILURE
    failed = [*outcomes, ClusterOutcome("c-2", "r", Outcome.FAILED, "ExecFail")]
    assert (
        RunSummary.build(run_id="r", started_at=T0, finished_at=T0, outcomes=failed).status
        is RunStatus.FAILURE
    )


async def test_retry_log_lines_carry_the_real_attempt_number() -> None:
    env = Env()
    env.api.script("c-1", "lost", "lost", "ok")
    with structlog.testing.capture_logs() as events:
        outcome = await rotate_cluster(target(), env.context())
    assert outcome.outcome is Outcome.ROTATED
    retries = [e for e in events if e["event"] == "retrying"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert [e["api_calls"] for e in retries] == [1, 2]


async def test_vault_retry_log_lines_count_their_attempts_too() -> None:
    """They all said "attempt": 0 (the API call count) while Vault was down (issue 10, 3)."""
    env = Env()

    class FlakyStore(MemoryStore):
        failures = 2

        async def _enter(self, name: str) -> None:
            await super()._enter(name)
            if self.failures:
                self.failures -= 1
                raise VaultUnavailableError("sealed")

    flaky = FlakyStore(now=lambda: T0, roots=env.store.roots, vnc=env.store.vnc)
    with structlog.testing.capture_logs() as events:
        outcome = await rotate_cluster(target(), env.context(store=flaky))
    assert outcome.outcome is Outcome.ROTATED
    retries = [e for e in events if e["event"] == "retrying"]
    assert [(e["code"], e["attempt"], e["api_calls"]) for e in retries] == [
        ("VaultUnavailable", 1, 0),
        ("VaultUnavailable", 2, 0),
    ]


async def test_a_pending_record_equal_to_the_current_password_is_recognised_as_committed() -> None:
    """A crash between commit and cleanup (or a migrated secret) leaves the pending record
    holding the current password, unknown to the vnc record: not in flight, just overwritten."""
    env = Env()
    current = env.real()
    record = env.store._pending("c-1")
    record.versions.append({"password": current, "staged_at": T0, "claim_owner": "dead"})
    outcome = await rotate_cluster(target(), env.context())
    assert outcome.outcome is Outcome.ROTATED
    assert env.api.sent("c-1") != [current.reveal()], "the old value is not re-applied"
    assert len(env.api.sent("c-1")) == 1
    env.assert_invariant()


async def test_a_leftover_pending_password_is_applied_first_then_a_fresh_one() -> None:
    env = Env()
    record = env.store._pending("c-1")
    record.versions.append({"password": Secret("left01"), "staged_at": T0 - timedelta(hours=1)})
    outcome = await rotate_cluster(target(), env.context())
    assert outcome.outcome is Outcome.ROTATED
    first, fresh = env.api.sent("c-1")
    assert first == "left01", "it may be live: re-applied and committed before anything else"
    assert fresh != first
    assert env.store.current("c-1") == Secret(fresh)
    versions = [v.get("password") for v in env.store.vnc["c-1"].versions]
    assert versions[-2:] == [Secret("left01"), Secret(fresh)], "one version per password"


async def test_finding_11_a_cluster_listed_as_stopped_with_a_pending_password_is_pending() -> None:
    """ListClusters says the cluster is stopped, so the batch does not rotate it; but an earlier
    run left a password that may be live: the summary must say so, not 'skipped'."""
    env = Env()
    record = env.store._pending("c-1")
    record.versions.append({"password": Secret("left01"), "staged_at": T0})
    outcome = await not_running_outcome(target(status="Stopped"), env.context())
    assert (outcome.outcome, outcome.code) == (Outcome.PENDING, "ClusterNotRunning")
    assert outcome.message is not None
    assert "Stopped" in outcome.message
    assert env.store.pending_password("c-1") == Secret("left01"), "kept"
    assert env.api.calls == []


async def test_a_cluster_listed_as_stopped_with_nothing_pending_is_skipped() -> None:
    env = Env()
    outcome = await not_running_outcome(target(status="Stopped"), env.context())
    assert (outcome.outcome, outcome.code) == (Outcome.SKIPPED, "ClusterNotRunning")


async def test_a_refused_password_that_may_be_live_is_kept_not_cleared() -> None:
    """Review after the wave-2 merge: an attempt applied P1 and lost the answer, then the API
    refused P1 as a Passwd (its rule changed in between). The engine cleared the pending P1 and
    staged a fresh one, so until that one landed the cluster had P1 and Vault had neither.
    A refused value that may be live is kept (pending, claim released) and the cluster fails
    with a code that says a person must look."""
    env = Env()
    seen: list[bool] = []

    async def check_invariant() -> None:  # before the next value is applied
        seen.append(env.real() in (env.store.current("c-1"), env.store.pending_password("c-1")))

    refused = error_for_code("InvalidParams", "Passwd is invalid", http_status=400)
    env.api.script("c-1", "drop", refused, check_invariant)
    outcome = await rotate_cluster(target(root=env.root), env.context())
    env.assert_invariant()
    assert seen in ([], [True])
    assert outcome.outcome is Outcome.FAILED
    assert outcome.code == "PendingPasswordRefused"
    assert env.store.pending_password("c-1") == Secret(env.api.sent("c-1")[0])
    assert env.store.vnc["c-1"].custom_metadata["status"] == "pending"


async def test_clusters_missing_a_root_credential_do_not_trip_the_vault_breaker() -> None:
    """A cluster without a root credential is a per-cluster data problem (Vault answered):
    each such failure is followed by its outcome, which resets the breaker's count, so six in
    a row with a limit of 3 do not stop the run (checked in review; it held)."""
    api = FakeApi.with_clusters(8)
    store = MemoryStore(now=lambda: T0)
    for cluster in list(api.clusters.values())[6:]:  # only the last two have one
        store.put_root(RootCredential(cluster.id, "root", Secret(cluster.root_password), "r"))
    env = Env()
    ctx = env.context(api=api, store=store)
    targets = [Target(c, "cn-hangzhou") for c in api.clusters]
    summary = await run_batch(
        targets, ctx, run_id="r", concurrency=4, vault_failure_limit=3, stop=asyncio.Event()
    )
    by_code = {o.cluster_id: o.code for o in summary.outcomes}
    assert summary.stopped_reason is None
    assert [by_code[f"c-{i}"] for i in range(1, 7)] == ["RootCredentialMissing"] * 6
    assert (by_code["c-7"], by_code["c-8"]) == (None, None)


async def test_a_stop_while_waiting_out_a_rivals_claim_leaves_the_rivals_status_alone() -> None:
    """Review after the wave-2 merge: r2 waited out r1's live claim; r1 committed and wrote
    ``rotated``; then r2 got SIGTERM and wrote ``failed``/``Interrupted`` over it, so the next
    ``rotate`` (and the daemon's schedule) saw a failed cluster and rotated it again. A run that
    holds no claim and never called the API has no status to write."""
    env = Env()
    entered, release, sleeping = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def r1_applies_slowly() -> None:
        entered.set()
        await release.wait()

    async def sleep_until_stopped(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    env.api.script("c-1", r1_applies_slowly)
    r1 = asyncio.create_task(rotate_cluster(target(root=env.root), env.context(owner="r1")))
    await asyncio.wait_for(entered.wait(), 10)
    stop = asyncio.Event()
    r2_ctx = env.context(owner="r2", stop=stop, sleep=sleep_until_stopped)
    r2 = asyncio.create_task(rotate_cluster(target(root=env.root), r2_ctx))
    await asyncio.wait_for(sleeping.wait(), 10)  # r2 waits out r1's claim
    release.set()
    assert (await asyncio.wait_for(r1, 10)).outcome is Outcome.ROTATED
    stop.set()
    interrupted = await asyncio.wait_for(r2, 10)

    assert interrupted.code == "Interrupted"
    # A rotation that went well keeps its status in the data; nobody wrote "failed" over it.
    assert env.store.vnc["c-1"].custom_metadata.get("status", "rotated") == "rotated"
    assert env.api.clusters["c-1"].changes == 1
    env.assert_invariant()
