"""The rate limiter's arithmetic (no time involved) and its waiting (on a virtual clock)."""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.engine.ratelimit import (
    ACCOUNT_SCOPE,
    BUNCH,
    BUNCH_LAG,
    CATCH_UP,
    MAX_TICK,
    WINDOW_GUARD,
    WINDOW_SLACK,
    Adaptive,
    Pace,
    RateLimit,
    RegionLimiter,
    grid_tick,
)
from rotator.errors import RetryableApiError, ThrottledError

T = TypeVar("T")


def most_in_any_window(stamps: list[float], window: float) -> int:
    """The most stamps any half-open window ``[t, t + window)`` holds (sliding)."""
    best = 0
    start = 0
    for end, stamp in enumerate(stamps):
        # A hair of tolerance: a pace of exactly ``window`` must not count twice by rounding.
        while stamp - stamps[start] >= window * (1 - 1e-9):
            start += 1
        best = max(best, end - start + 1)
    return best


def most_in_aligned_window(stamps: list[float], window: float) -> int:
    """The most stamps an aligned window ``[k*window, (k+1)*window)`` holds (the sim's view)."""
    counts: dict[int, int] = {}
    for stamp in stamps:
        key = math.floor(stamp / window)
        counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=0)


# -- per-minute arithmetic ---------------------------------------------------------------------


def test_a_per_minute_quota_is_one_call_every_period_over_n() -> None:
    limit = RateLimit.parse("100/60s")
    pace = Pace(limit)
    assert limit.gap == pytest.approx(0.6)
    wide = WINDOW_GUARD + WINDOW_SLACK / 60.0  # 2% plus 0.1 s over the minute
    assert pace.gap(0.0) == pytest.approx(0.6 * wide)

    stamps = []
    now = 1000.0
    for _ in range(300):  # three minutes of calls, each let go exactly on time
        now = max(now, pace.next_at)
        stamps.append(now)
        pace.stamp(now)

    assert most_in_any_window(stamps, 60.0) == 1 + int(100 / wide)
    assert most_in_aligned_window(stamps, 60.0) <= 100
    # On time, the pace gives up no more than the margin: under 2.2% of the quota.
    per_minute = (len(stamps) - 1) / (stamps[-1] - stamps[0]) * 60.0
    assert per_minute == pytest.approx(100 / wide, rel=1e-6)


@settings(max_examples=300, deadline=None)
@given(
    calls=st.integers(min_value=1, max_value=120),
    period=st.sampled_from([1.0, 2.0, 10.0, 60.0]),
    lateness=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=300),
)
def test_no_window_ever_holds_more_than_the_limit_even_when_calls_go_late(
    calls: int, period: float, lateness: list[float]
) -> None:
    # ``lateness`` is how long after its turn each call actually went (a stalled process), in
    # gaps: whatever it is, no sliding window of ``period`` counts more than ``calls``, and no
    # two calls are closer than half a gap (catching up is not a burst).
    limit = RateLimit(calls, period)
    pace = Pace(limit)
    stamps = []
    now = 0.0
    for late in lateness:
        now = max(now, pace.next_at) + late * limit.gap
        stamps.append(now)
        pace.stamp(now)
    assert most_in_any_window(stamps, period * WINDOW_GUARD + WINDOW_SLACK) <= calls
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(g >= limit.gap * pace.stretch * CATCH_UP * (1 - 1e-9) for g in gaps)


@pytest.mark.parametrize("lag", [0.0005, 0.001, 0.002])
def test_event_loop_lag_costs_no_quota_at_a_fast_rate(lag: float) -> None:
    # 200/1s: a gap of 5.1 ms; waking 0.5-2 ms late on every call must not slow the pace.
    limit = RateLimit(200, 1.0)
    pace = Pace(limit)
    now = 0.0
    stamps = []
    for _ in range(1001):
        now = max(now, pace.next_at) + lag
        stamps.append(now)
        pace.stamp(now)
    achieved = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    # What lag still costs: one lag per period, through the sliding-window bound.
    assert achieved == pytest.approx(200 / pace.stretch, rel=lag * 1.5)


def test_a_short_lag_does_not_drift_the_schedule() -> None:
    # Lagging 0.5% of a gap on every call costs (nearly) nothing: the next slot is fixed by the
    # last slot, not by when the call went.
    pace = Pace(RateLimit(10, 1.0))
    now = 0.0
    stamps = []
    for _ in range(101):
        now = max(now, pace.next_at) + 0.0005
        stamps.append(now)
        pace.stamp(now)
    assert stamps[-1] - stamps[0] == pytest.approx(100 * 0.1 * pace.stretch, abs=0.01)


# -- adaptive ----------------------------------------------------------------------------------


def test_throttling_lowers_the_rate_once_per_burst_and_it_recovers_additively() -> None:
    limit = RateLimit(100, 60.0)
    pace = Pace(limit, Adaptive(decrease=0.7, recover=0.05))
    full = limit.per_second

    assert pace.throttled(now=10.0, sent_at=9.0, retry_after=None)
    assert pace.rate(10.0) == pytest.approx(0.7 * full)
    # Answers to calls sent before the decrease were paced at the old rate: no second cut.
    assert not pace.throttled(now=10.5, sent_at=9.5, retry_after=None)
    assert pace.rate(10.5) == pytest.approx(0.7 * full + full * 0.05 * 0.5 / 60)
    # A call sent after the decrease and throttled again: cut again.
    assert pace.throttled(now=11.0, sent_at=10.6, retry_after=None)
    lowered = pace.rate(11.0)
    assert lowered == pytest.approx(0.7 * (0.7 * full + full * 0.05 * 1.0 / 60))
    assert pace.throttles == 3
    assert pace.lowest == pytest.approx(lowered)

    # Additive increase: 5% of the configured rate per configured period, capped at it.
    assert pace.rate(11.0 + 60.0) == pytest.approx(lowered + 0.05 * full)
    regain = (full - lowered) / (0.05 * full) * 60.0
    assert pace.rate(11.0 + regain - 1.0) < full
    assert pace.rate(11.0 + regain + 1.0) == pytest.approx(full)


def test_throttling_never_drops_below_the_floor_and_honours_retry_after() -> None:
    pace = Pace(RateLimit(10, 1.0), Adaptive(decrease=0.5, recover=0.0, floor=0.1))
    for step in range(20):
        pace.throttled(now=float(step), sent_at=float(step), retry_after=None)
    assert pace.rate(20.0) == pytest.approx(1.0)

    pace.throttled(now=30.0, sent_at=None, retry_after=7.5)
    assert pace.next_at == pytest.approx(37.5)


def test_adaptive_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="decrease"):
        Adaptive(decrease=1.5)


# -- waiting, on a virtual clock ----------------------------------------------------------------


class VirtualTime:
    """A clock that jumps forward when somebody sleeps; counts the sleeps (the wake-ups)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_only_the_head_of_the_line_wakes_up() -> None:
    # 64 waiters on one region at a binding rate: one wake-up per call, not one per waiter per
    # poll (asyncio-throttle alone polls every waiter every retry_interval).
    time = VirtualTime()
    limiter = RegionLimiter(RateLimit(10, 1.0), clock=time.clock, sleep=time.sleep)
    stamps = await asyncio.gather(*(limiter.turn("cn-hangzhou") for _ in range(64)))

    assert time.sleeps <= 64
    assert sorted(stamps) == list(stamps), "FIFO: the line is served in order"
    assert most_in_any_window(list(stamps), 1.0) <= 10


@pytest.mark.asyncio
async def test_the_account_scope_paces_every_region_together() -> None:
    time = VirtualTime()
    limiter = RegionLimiter(
        RateLimit(100, 1.0), account=RateLimit(10, 1.0), clock=time.clock, sleep=time.sleep
    )
    regions = ["cn-hangzhou", "cn-shanghai", "cn-beijing"]
    stamps = await asyncio.gather(*(limiter.turn(regions[i % 3]) for i in range(60)))

    assert most_in_any_window(sorted(stamps), 1.0) <= 10
    assert set(limiter.rates()) == {*regions, ACCOUNT_SCOPE}
    assert limiter.account == RateLimit(10, 1.0)


@pytest.mark.asyncio
async def test_regions_without_an_account_limit_do_not_wait_for_each_other() -> None:
    time = VirtualTime()
    limiter = RegionLimiter(RateLimit(1, 10.0), clock=time.clock, sleep=time.sleep)
    await limiter.turn("cn-hangzhou")
    await limiter.turn("cn-beijing")
    assert time.sleeps == 0


@pytest.mark.asyncio
async def test_throttling_feedback_slows_the_scope_and_shows_in_rates() -> None:
    time = VirtualTime()
    limiter = RegionLimiter(
        RateLimit(10, 1.0), account=RateLimit(50, 1.0), clock=time.clock, sleep=time.sleep
    )
    sent_at = await limiter.turn("cn-hangzhou")
    throttled = ThrottledError("slow down", code="Throttling.User", retry_after=2.0)
    limiter.observe("cn-hangzhou", throttled, sent_at=sent_at)
    limiter.observe("cn-hangzhou", RetryableApiError("x", code="ServiceUnavailable"))

    rates = limiter.summary()
    assert rates["cn-hangzhou"] == {
        "configured": "10/1s",
        "effective": "7/1s",
        "lowest": "7/1s",
        "throttled": 1,
        "effective_per_second": 7.0,
    }
    assert rates[ACCOUNT_SCOPE]["effective"] == "35/1s"
    before = time.now
    await limiter.turn("cn-hangzhou")
    assert time.now - before >= 2.0, "the server's retry-after holds the scope"


@pytest.mark.asyncio
async def test_a_cancelled_waiter_leaves_the_line() -> None:
    limiter = RegionLimiter(RateLimit(1, 3600.0))
    await limiter.turn("cn-hangzhou")
    waiter = asyncio.ensure_future(limiter.turn("cn-hangzhou"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not limiter._scope("cn-hangzhou").lock.locked()


def test_a_fixed_rate_counts_throttling_but_keeps_its_pace() -> None:
    pace = Pace(RateLimit(10, 1.0), adaptive=None)
    assert not pace.throttled(now=1.0, sent_at=1.0, retry_after=0.5)
    assert pace.rate(1.0) == pytest.approx(10.0)
    assert pace.throttles == 1
    assert pace.next_at == pytest.approx(1.5)


def test_the_limiter_follows_the_ehpc_settings() -> None:
    from rotator.config import EhpcSettings
    from rotator.engine.runtime import limiter_from
    from rotator.errors import ConfigError

    limiter = limiter_from(EhpcSettings())
    assert limiter.rate_for("cn-hangzhou") == RateLimit(100, 60.0)
    assert limiter.account is None

    limiter = limiter_from(
        EhpcSettings(rate_limits={"cn-beijing": "20/10s"}, account_rate_limit="300/60s")
    )
    assert limiter.rate_for("cn-beijing") == RateLimit(20, 10.0)
    assert limiter.account == RateLimit(300, 60.0)

    with pytest.raises(ConfigError) as info:
        limiter_from(EhpcSettings(account_rate_limit="lots"))
    assert info.value.key == "ehpc.account_rate_limit"


# -- wake-ups: one per instant, shared by every scope ---------------------------------------------


class SharedTimeline:
    """A virtual clock that sleepers share, as an event loop's: every sleeper due at one instant
    wakes in one loop iteration. Counts those iterations (``wakeups``): each costs the process a
    wake-up from idle, which on a quiet host is the price of a spread-out run."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wakeups = 0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + max(0.0, seconds), next(self._seq), future))
        await future

    async def run(self, work: asyncio.Future[T]) -> T:
        while not work.done():
            for _ in range(20):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            pending = [s for s in self._sleepers if not s[2].done()]
            if not pending:
                continue
            self.now = max(self.now, min(s[0] for s in pending))
            self.wakeups += 1
            for entry in pending:
                if entry[0] <= self.now:
                    self._sleepers.remove(entry)
                    entry[2].set_result(None)
        return work.result()


@pytest.mark.asyncio
async def test_at_a_binding_rate_calls_go_in_bunches_all_regions_at_once() -> None:
    # Three regions each at a binding 50/1s, 300 calls each. Spread evenly that is one wake-up
    # per call (900); bunched on the shared grid, one per tick for all three regions (about 4
    # calls each per tick): the rate and the window rule are the same.
    timeline = SharedTimeline()
    limit = RateLimit(50, 1.0)
    limiter = RegionLimiter(limit, clock=timeline.clock, sleep=timeline.sleep)
    regions = ["cn-hangzhou", "cn-shanghai", "cn-beijing"]
    calls = 300
    gap = Pace(limit).gap(0.0)

    async def region_calls(region: str, delay: float) -> list[float]:
        await timeline.sleep(delay)  # each region's line starts at its own moment
        return [await limiter.turn(region) for _ in range(calls)]

    async def everything() -> list[list[float]]:
        return list(
            await asyncio.gather(
                *(region_calls(r, 0.0037 * (i + 1)) for i, r in enumerate(regions))
            )
        )

    runs = await timeline.run(asyncio.ensure_future(everything()))
    for stamps in runs:
        assert len(stamps) == calls
        assert most_in_any_window(stamps, limit.period * Pace(limit).stretch) <= limit.calls
        # No quota lost: the holds do not add up (the last call is held two ticks at most: its
        # own, and the window rule's check of a stamp that was held itself).
        assert stamps[-1] - stamps[0] <= (calls - 1) * gap + 2 * grid_tick(limit) + 1e-9
    ticks = math.ceil(calls * gap / grid_tick(limit))
    assert timeline.wakeups <= ticks + 3 + 3, f"{timeline.wakeups} wake-ups for {calls * 3} calls"


@pytest.mark.asyncio
async def test_a_limit_far_above_the_traffic_holds_calls_for_microseconds_at_most() -> None:
    timeline = SharedTimeline()
    limiter = RegionLimiter(RateLimit(100_000, 1.0), clock=timeline.clock, sleep=timeline.sleep)
    start = timeline.now

    async def burst() -> list[float]:
        return list(await asyncio.gather(*(limiter.turn("cn-hangzhou") for _ in range(200))))

    stamps = await timeline.run(asyncio.ensure_future(burst()))
    assert len(stamps) == 200
    assert timeline.now - start < 200 * 1.2e-5 + BUNCH * 1.2e-5


@settings(max_examples=200, deadline=None)
@given(
    calls=st.integers(min_value=1, max_value=120),
    period=st.sampled_from([1.0, 2.0, 10.0, 60.0]),
    lateness=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=300),
    on_time=st.lists(st.booleans(), min_size=1, max_size=300),
)
def test_on_a_grid_no_window_holds_more_than_the_limit_and_on_time_costs_no_quota(
    calls: int, period: float, lateness: list[float], on_time: list[bool]
) -> None:
    limit = RateLimit(calls, period)
    tick = grid_tick(limit)
    pace = Pace(limit, tick=tick)
    stamps = []
    now = 0.0
    for late, exact in zip(lateness, itertools.cycle(on_time), strict=False):
        now = pace.release_at(now) + (0.0 if exact else late * limit.gap)
        stamps.append(now)
        pace.stamp(now)
    # A bunch's call may be counted up to BUNCH_LAG before it went.
    assert most_in_any_window(stamps, period * WINDOW_GUARD + WINDOW_SLACK - BUNCH_LAG) <= calls
    # Let go on their grid instants, calls keep the full rate: a tick's hold does not add up.
    punctual = Pace(limit, tick=tick)
    now = 0.0
    stamps = []
    for _ in range(3 * calls + 2):
        now = punctual.release_at(now)
        stamps.append(now)
        punctual.stamp(now)
    assert stamps[-1] - stamps[0] <= (len(stamps) - 1) * punctual.gap(0.0) + 2 * tick + 1e-6


@settings(max_examples=300, deadline=None)
@given(
    calls=st.integers(min_value=1, max_value=100_000),
    period=st.sampled_from([0.1, 0.5, 1.0, 1.2, 2.0, 10.0, 60.0, 3600.0]),
)
def test_the_grid_tick_divides_the_guarded_period_and_fits_every_pace(
    calls: int, period: float
) -> None:
    limit = RateLimit(calls, period)
    tick = grid_tick(limit)
    Pace(limit, tick=tick)  # accepted, whatever rounding did
    window = period * Pace(limit).stretch
    assert window / tick == pytest.approx(round(window / tick), abs=1e-6)
    assert tick <= min(MAX_TICK, BUNCH * window / calls) * (1 + 1e-9)
