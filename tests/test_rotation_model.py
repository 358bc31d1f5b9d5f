"""A model checker for the rotation protocol: hypothesis explores interleavings of up to three
rotators on one cluster, against the in-memory store (KV v2 check-and-set) and a fake API, in
virtual time.

Steps: start a rotator for the current trigger, alone or as ``run_batch`` does it (the due check's
read reused as the engine's first read, the Vault circuit breaker armed), or with a first read
taken steps earlier (a stale known state); fire a new trigger; script the next API answer
(applies / fails terminally / applies then drops / hangs past the client timeout / throttled with
a retry-after longer than the claim / applies then answers 500 / refuses the value as a Passwd /
cluster stopped); a person edits
the committed record (a new version, same password); advance the
clock (claims expire); SIGTERM a rotator (its stop event, seen at any wait or API call); SIGKILL
one (its tasks cancelled, including a commit in flight, so no cleanup runs); Vault unavailable
for a while, then back.

Invariants after every step:
- the cluster's real password is the committed password or the pending one;
- the passwords generated for one trigger reach the cluster at most once each, and never two
  different ones unless a rotator's claim expired and a rival took the pending password over
  (the store counts those takeovers; the model then allows it).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from rotator.ehpc.codes import error_for_code
from rotator.ehpc.models import Cluster, ModifyResult
from rotator.engine.batch import _FirstRead, run_batch
from rotator.engine.model import RootCredential, VncState
from rotator.engine.ports import RotationStore
from rotator.engine.ratelimit import RateLimit, RegionLimiter
from rotator.engine.retry import Backoff, RetryPolicy
from rotator.engine.rotation import RotationContext, Target, rotate_cluster
from rotator.errors import AmbiguousApiError
from rotator.secret import Secret
from tests.support.memory_store import MemoryStore

CLUSTER = "c-1"
ROOT = Secret("root-pw-1")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
CLAIM_TTL = 10.0
API_TIMEOUT = 4.0
"""The client's request timeout: shorter than the claim, as the runtime guarantees."""


class VirtualClock:
    """Time that moves only when the test says so; sleepers wake in order."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(seconds, 0.0), next(self._seq), future))
        await future

    def next_wake(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleeper
        return self._sleepers[0][0] if self._sleepers else None

    def wake_due(self) -> bool:
        woke = False
        while (wake := self.next_wake()) is not None and wake <= self.t:
            _, _, future = heapq.heappop(self._sleepers)
            future.set_result(None)
            woke = True
        return woke


@dataclass
class ModelApi:
    """The cluster behind ``ModifyVisualServicePasswd``; answers follow a script, then "ok"."""

    clock: VirtualClock
    password: str = "init00"
    script: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    running: bool = True

    async def modify_visual_service_passwd(
        self,
        *,
        region: str,
        cluster_id: str,
        runas_password: Secret,
        new_password: Secret,
        runas_user: str = "root",
    ) -> ModifyResult:
        await asyncio.sleep(0)
        step = self.script.pop(0) if self.script else "ok"
        value = new_password.reveal()
        if not self.running or step == "stopped":
            raise error_for_code("InvalidClusterStatus", "stopped", http_status=403)
        if step == "terminal":
            raise error_for_code("ExecFail", "refused", http_status=400)
        if step == "refuse_passwd":  # the API's password rule changed: this value never applies
            raise error_for_code("InvalidParams", "Passwd is invalid", http_status=400)
        if step == "throttled":
            raise error_for_code(
                "Throttling.User", "slow down", http_status=400, retry_after=CLAIM_TTL * 1.5
            )
        if step in ("hang_applies", "hang_lost"):
            await self.clock.sleep(API_TIMEOUT)
            if step == "hang_applies":
                self._apply(value)
            raise AmbiguousApiError("timed out", code="Timeout", cluster_id=cluster_id)
        self._apply(value)
        if step == "drop":
            raise AmbiguousApiError("dropped", code="ConnectionDropped", cluster_id=cluster_id)
        if step == "apply_then_500":
            raise error_for_code("UnknownError", "", http_status=500)
        return ModifyResult(cluster_id=cluster_id, request_id=f"R-{len(self.applied)}")

    def _apply(self, value: str) -> None:
        self.password = value
        self.applied.append(value)

    async def list_clusters(self, region: str) -> list[Cluster]:
        return [Cluster(id=CLUSTER, region=region, status="running")]


class NoLimit(RegionLimiter):
    async def acquire(self, region: str) -> None:
        return None


@dataclass
class Passwords:
    """Hands out distinct passwords and remembers which trigger each was generated for."""

    trigger: int
    born: dict[str, int]
    counter: itertools.count[int]

    async def generate(self) -> Secret:
        value = f"pw{next(self.counter):04d}"
        self.born[value] = self.trigger
        return Secret(value)


@dataclass
class Rotator:
    name: str
    task: asyncio.Task[object]
    ctx: RotationContext
    stop: asyncio.Event
    inner: list[asyncio.Task[Any]] = field(default_factory=list)
    """Tasks a batch started (one per cluster): a SIGKILL ends them too."""


STEPS = (
    "ok",
    "terminal",
    "drop",
    "hang_applies",
    "hang_lost",
    "throttled",
    "apply_then_500",
    "refuse_passwd",
)


class RotationModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = VirtualClock()
        self.store = MemoryStore(now=self.clock.now)
        self.api = ModelApi(self.clock)
        self.store.put_root(RootCredential(CLUSTER, "root", ROOT, "cn-hangzhou"))
        self.store.put_vnc(
            CLUSTER,
            Secret("init00"),
            staged_at=EPOCH - timedelta(days=1),
            rotated_at=EPOCH - timedelta(days=1),
        )
        self.trigger = 0
        self.trigger_at = [EPOCH]
        self.born: dict[str, int] = {}
        self.counter = itertools.count(1)
        self.rotators: list[Rotator] = []
        self.names = itertools.count(1)
        self.snapshot: VncState | None = None
        """A committed record read some steps ago (what a due check or a cache kept)."""

    def teardown(self) -> None:
        async def cancel_all() -> None:
            for rotator in self.rotators:
                rotator.task.cancel()
                for task in [*rotator.inner, *rotator.ctx.background]:
                    task.cancel()
            others = asyncio.all_tasks() - {asyncio.current_task()}
            await asyncio.gather(*others, return_exceptions=True)

        self.loop.run_until_complete(cancel_all())
        self.loop.close()

    # -- driving the loop ------------------------------------------------------------------

    def settle(self) -> None:
        """Run every task until all of them wait for virtual time (or are done)."""

        async def idle() -> None:
            quiet = 0
            while quiet < 3:
                await asyncio.sleep(0)
                ready = len(getattr(self.loop, "_ready", ()))
                quiet = quiet + 1 if ready == 0 else 0

        self.loop.run_until_complete(idle())

    def advance(self, seconds: float) -> None:
        end = self.clock.t + seconds
        while (wake := self.clock.next_wake()) is not None and wake <= end:
            self.clock.t = max(self.clock.t, wake)
            self.clock.wake_due()
            self.settle()
        self.clock.t = end
        self.settle()

    def live(self) -> list[Rotator]:
        return [r for r in self.rotators if not r.task.done()]

    # -- rules -----------------------------------------------------------------------------

    @precondition(lambda self: len(self.live()) < 3)
    @rule(answer=st.sampled_from(STEPS))
    def start_rotator(self, answer: str = "ok") -> None:
        """A rotator starts for the current trigger; its first API call gets ``answer``."""
        self.launch(answer, lambda ctx: rotate_cluster(Target(CLUSTER, "cn-hangzhou"), ctx))

    @precondition(lambda self: len(self.live()) < 3)
    @rule(answer=st.sampled_from(STEPS), breaker=st.booleans())
    def start_batch(self, answer: str, breaker: bool) -> None:
        """A ``rotate --all`` run of one cluster: the due check reads the committed record and
        the engine reuses that read; with ``breaker`` the Vault circuit breaker stops the run
        at the first Vault failure (rotations waiting on Vault park at once)."""

        def run(ctx: RotationContext) -> Any:
            return run_batch(
                [Target(CLUSTER, "cn-hangzhou")],
                ctx,
                run_id=ctx.owner,
                concurrency=1,
                stop=ctx.stop,
                skip_not_due=True,
                vault_failure_limit=1 if breaker else None,
            )

        self.launch(answer, run)

    @rule()
    def take_snapshot(self) -> None:
        """Read the committed record now; a later rotator may start from this (stale) read."""

        async def read() -> VncState:
            return await self.store.read_vnc(CLUSTER, pending=False)

        unavailable, self.store.unavailable = self.store.unavailable, False
        try:
            self.snapshot = self.loop.run_until_complete(read())
        finally:
            self.store.unavailable = unavailable

    @precondition(lambda self: len(self.live()) < 3 and self.snapshot is not None)
    @rule(answer=st.sampled_from(STEPS))
    def start_from_snapshot(self, answer: str) -> None:
        """A rotator whose first read is the snapshot, however stale (a known version)."""
        snapshot = self.snapshot
        assert snapshot is not None

        def run(ctx: RotationContext) -> object:
            first = _FirstRead(ctx.store)
            first.keep(snapshot)
            ctx.store = cast(RotationStore, first)
            return rotate_cluster(Target(CLUSTER, "cn-hangzhou"), ctx)

        self.launch(answer, run)

    def launch(self, answer: str, run: Callable[[RotationContext], Any]) -> None:
        self.api.script.insert(0, answer)
        name = f"r{next(self.names)}"
        stop = asyncio.Event()
        quick = Backoff(attempts=4, initial_wait=1.0, max_wait=4.0)
        ctx = RotationContext(
            api=self.api,
            store=self.store,
            passwords=Passwords(self.trigger, self.born, self.counter),
            limiter=NoLimit(RateLimit.parse("1000/1s")),
            retry=RetryPolicy(
                general=quick,
                conflict=Backoff(attempts=3, initial_wait=5.0, max_wait=20.0),
                throttle=Backoff(attempts=3, initial_wait=1.0, max_wait=4.0),
                vault=Backoff(attempts=4, initial_wait=1.0, max_wait=4.0),
                rng=random.Random(name),  # the same jitter on every replay: deterministic
            ),
            owner=name,
            not_before=self.trigger_at[self.trigger],
            claim_ttl=CLAIM_TTL,
            cluster_deadline=120.0,
            stop_grace=2.0,
            stop=stop,
            sleep=self.clock.sleep,
            clock=self.clock.monotonic,
            now=self.clock.now,
        )
        before = asyncio.all_tasks(self.loop)
        task = self.loop.create_task(run(ctx))
        rotator = Rotator(name, task, ctx, stop)
        self.rotators.append(rotator)
        self.settle()
        rotator.inner = [
            t
            for t in asyncio.all_tasks(self.loop) - before
            if t is not task and t.get_name().startswith("rotate:")
        ]

    @rule()
    def new_trigger(self) -> None:
        self.trigger += 1
        self.trigger_at.append(self.clock.now())

    @rule(step=st.sampled_from(STEPS))
    def script_api(self, step: str) -> None:
        """The answer to a later call (a retry)."""
        self.api.script.append(step)

    @rule(running=st.booleans())
    def cluster_running(self, running: bool) -> None:
        self.api.running = running

    @rule(seconds=st.sampled_from([1.0, 6.0, CLAIM_TTL + 2]))
    def advance_clock(self, seconds: float) -> None:
        self.advance(seconds)

    @precondition(lambda self: bool(self.live()))
    @rule(index=st.integers(0, 2))
    def sigterm(self, index: int) -> None:
        live = self.live()
        self.sigterm_one(live[index % len(live)])

    def sigterm_one(self, rotator: Rotator) -> None:
        rotator.stop.set()
        self.settle()

    @precondition(lambda self: bool(self.live()))
    @rule(index=st.integers(0, 2))
    def sigkill(self, index: int) -> None:
        live = self.live()
        rotator = live[index % len(live)]
        rotator.task.cancel()
        for task in [*rotator.inner, *rotator.ctx.background]:
            task.cancel()  # the process is gone: its shielded commit dies with it
        self.settle()

    @rule()
    def person_edits_the_vnc_record(self) -> None:
        """A person adds a key to the VNC secret: a new version, same password."""
        record = self.store.vnc[CLUSTER]
        record.versions.append({**(record.data or {}), "note": f"edit {record.version}"})

    @rule(down=st.booleans())
    def vault_availability(self, down: bool) -> None:
        self.store.unavailable = down
        self.settle()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def the_real_password_is_in_the_store(self) -> None:
        real = Secret(self.api.password)
        known = (self.store.current(CLUSTER), self.store.pending_password(CLUSTER))
        assert real in known, (
            f"the cluster has {self.api.password!r}; the store has "
            f"current={_show(known[0])} pending={_show(known[1])}"
        )

    @invariant()
    def one_password_per_trigger_unless_a_claim_expired(self) -> None:
        by_trigger: dict[int, set[str]] = {}
        for value in self.api.applied:
            by_trigger.setdefault(self.born.get(value, -1), set()).add(value)
        for trigger, values in by_trigger.items():
            if trigger >= 0 and len(values) > 1:
                assert self.store.takeovers > 0, (
                    f"trigger {trigger} applied {sorted(values)} without an expired claim"
                )


def _show(value: Secret | None) -> str | None:
    return value.reveal() if value else None


RotationModel.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_rotation_model = RotationModel.TestCase


def test_finding_1_a_stop_never_clears_a_rivals_pending_password() -> None:
    """Issue 9, finding 1, replayed on the model: A is throttled past its claim, B takes A's
    password over, the API applies it and drops the answer, B is stopped (keeping it, no owner),
    then A is stopped and must not clear it."""
    model = RotationModel()
    try:
        model.start_rotator("throttled")  # A: stages P_A, throttled for 1.5 claims
        model.advance(CLAIM_TTL + 2)  # A's claim has expired; A still waits
        model.start_rotator("drop")  # B: takes P_A over; applied, answer lost
        model.the_real_password_is_in_the_store()
        b = model.rotators[1]
        model.sigterm_one(b)  # B keeps P_A, releases its claim
        model.the_real_password_is_in_the_store()
        model.sigterm_one(model.rotators[0])  # A stops: P_A must survive
        model.the_real_password_is_in_the_store()
        model.advance(60)
        model.the_real_password_is_in_the_store()
    finally:
        model.teardown()
