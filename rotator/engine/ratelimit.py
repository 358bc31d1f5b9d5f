"""Rate limits as the cloud counts them: per region endpoint and per account, smooth and adaptive.

    limiter = RegionLimiter(RateLimit.parse("100/60s"), {"cn-beijing": "20/10s"},
                            account=RateLimit.parse("300/60s"))
    sent_at = await limiter.turn("cn-hangzhou")            # waits for this call's turn
    ...                                                    # send the call right away
    limiter.observe("cn-hangzhou", error, sent_at=sent_at) # Throttling*: slow that scope down

Limits are written the way the API documents them (``"100/60s"``, ``"20/10s"``, ``"5/1s"``). The
gateway counts calls per window and answers ``Throttling.User`` above the quota, so:

* **Smooth, not bursty.** One call every ``period/N`` (times :data:`WINDOW_GUARD`), never ``N`` at
  once: a burst released at a window edge, pushed by a stall into the next window, is how a
  receiver ends up counting more than ``N``. Each call is stamped when it is let go. A call let go
  a little late (event-loop lag) does not push the schedule back, so lag does not eat the quota;
  after a longer stall the schedule catches up at most at twice the rate, and never so that the
  last ``N + 1`` stamps span less than ``period * WINDOW_GUARD + WINDOW_SLACK``: the receiving
  side never counts more than ``N`` in any window of ``period``, sliding or aligned, unless one
  call is delayed by more than that margin (2% of the period plus 0.1 s) relative to another.
* **Two scopes.** A call takes its turn at its region's scope, then at the account's (when an
  account-wide limit is set); both are stamped with the same instant.
* **Adaptive.** A ``Throttling*`` answer means the real quota is lower than configured: the
  scope's rate is multiplied by ``decrease`` (once per burst of answers: only calls sent after the
  last decrease count) and recovers by ``recover`` of the configured rate per configured period
  (additive increase), like the AWS SDKs' adaptive retry mode.
* **Cheap while waiting.** Waiters queue on an :class:`asyncio.Lock` (FIFO); only the head sleeps,
  once, until its turn. The rest never wake up to poll. ``asyncio_throttle.Throttler`` stays behind
  the schedule as a hard sliding-window cap; the schedule keeps it from ever having to poll.
* **Few wake-ups at a binding rate.** A call that has to wait is let go at the next instant of a
  grid shared by every scope; one tick is about :data:`BUNCH` guarded gaps of the fastest
  configured limit, at most :data:`MAX_TICK`, and a whole fraction of its guarded period. The
  calls whose slots fell in one tick go together (at 50/1s: about 4 per region every 86 ms, all
  regions at once) instead of one event-loop wake-up per call: each wake-up from idle, and each
  loop iteration that carries one rotation's step instead of many, costs CPU (spread one by one,
  a run at half its unthrottled throughput took ~1.3x the CPU per rotation). So "smooth" holds
  at the scale of a tick, not of a gap; after a stall, a catch-up may add one tick's worth of
  calls. The hold (under one tick) does not move the schedule, and the window rule is kept
  apart from the schedule, checked on the stamps, so bunching costs no quota. A bunch's calls
  are counted at the bunch's instant when they go within :data:`BUNCH_LAG` of it (so the next
  period's bunch goes together too): the margin above is that much smaller for them. A limit
  far above the traffic has a tick of microseconds.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from asyncio_throttle.throttler import Throttler

from rotator.errors import ApiError, ConfigError, ThrottledError

__all__ = [
    "ACCOUNT_SCOPE",
    "DEFAULT_ADAPTIVE",
    "Adaptive",
    "Pace",
    "RateLimit",
    "RegionLimiter",
    "ScopeRate",
    "grid_tick",
    "stretch",
]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

ACCOUNT_SCOPE = "account"
"""The name of the account-wide scope in :meth:`RegionLimiter.rates`."""

# The server counts calls by arrival time, we stamp them at send time; network jitter can move a
# call across the server's window edge. Spacing calls 2% wider keeps us under the limit without
# giving up more than 2% of it.
WINDOW_GUARD = 1.02
# And at least this much in absolute terms: on a loaded host one call can sit 20-50 ms between
# its stamp and the wire while the next goes at once; 2% of a 1 s window would not cover that.
# (For the documented 100/60s quota it costs 0.17% of the quota.)
WINDOW_SLACK = 0.1
# After a late call the next gap may shrink to this fraction of a gap while the schedule catches
# up: lag costs no quota, and a stall is followed by calls at twice the rate, not a burst.
CATCH_UP = 0.5
# Bunching (see "Few wake-ups" above): a tick spans this many guarded gaps of the fastest limit,
# and never more than MAX_TICK seconds (a per-minute quota's calls are held at most that long).
BUNCH = 4
MAX_TICK = 0.1
# A call let go within this much of its bunch's instant is counted at that instant by the
# window rule (see Pace.stamp): the margin left for network jitter is WINDOW_SLACK minus this.
BUNCH_LAG = 0.01

SleepFn = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RateLimit:
    calls: int
    period: float
    """Seconds."""

    @classmethod
    def parse(cls, text: str, *, key: str = "ehpc.rate_limit") -> RateLimit:
        match = _RATE.match(text)
        if not match:
            raise ConfigError(
                f"{text!r} is not a rate; write it as the API documents it, e.g. '100/60s' or "
                "'5/1s'",
                key=key,
            )
        calls = int(match.group(1))
        period = float(match.group(2) or 1) * _UNITS[match.group(3)]
        if calls < 1 or period <= 0:
            raise ConfigError(f"{text!r} must allow at least one call per period", key=key)
        return cls(calls, period)

    @property
    def per_second(self) -> float:
        return self.calls / self.period

    @property
    def gap(self) -> float:
        """Seconds between two calls when they are spread evenly: ``period / calls``."""
        return self.period / self.calls

    def __str__(self) -> str:
        return f"{self.calls}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class Adaptive:
    """How a scope reacts to ``Throttling*`` (multiplicative decrease, additive increase)."""

    decrease: float = 0.7
    """The rate is multiplied by this on a throttling answer (the AWS SDKs use 0.7)."""
    recover: float = 0.05
    """Fraction of the configured rate regained per configured period (100/60s: +5 per minute)."""
    floor: float = 0.05
    """The rate never drops below this fraction of the configured one."""

    def __post_init__(self) -> None:
        if not 0 < self.decrease < 1 or not 0 <= self.recover <= 1 or not 0 < self.floor <= 1:
            raise ValueError("decrease in (0, 1), recover in [0, 1], floor in (0, 1]")


DEFAULT_ADAPTIVE = Adaptive()


@dataclass(frozen=True, slots=True)
class ScopeRate:
    """What the run summary and the metrics show about one scope."""

    scope: str
    configured: RateLimit
    effective_per_second: float
    lowest_per_second: float
    throttled: int

    @staticmethod
    def _as_limit(per_second: float, period: float) -> str:
        return f"{per_second * period:.3g}/{period:g}s"

    def to_dict(self) -> dict[str, object]:
        period = self.configured.period
        return {
            "configured": str(self.configured),
            "effective": self._as_limit(self.effective_per_second, period),
            "lowest": self._as_limit(self.lowest_per_second, period),
            "throttled": self.throttled,
            "effective_per_second": round(self.effective_per_second, 4),
        }


def stretch(limit: RateLimit) -> float:
    """How much wider than ``period/N`` calls are spaced: :data:`WINDOW_GUARD` plus
    :data:`WINDOW_SLACK` spread over the period."""
    # Scaled down for sub-second periods (a test's 2/100ms), where 0.1 s would double the gap.
    return WINDOW_GUARD + WINDOW_SLACK * min(1.0, limit.period) / limit.period


def grid_tick(fastest: RateLimit) -> float:
    """The bunching grid's tick for a limiter whose fastest limit is ``fastest``: about
    :data:`BUNCH` of its guarded gaps (at most :data:`MAX_TICK`), and a whole fraction of its
    guarded period, so that its window rule, checked on stamps that sit on the grid, always
    finds the same number of ticks in a window and costs that scope no quota."""
    window = fastest.period * stretch(fastest)
    wanted = min(MAX_TICK, BUNCH * window / fastest.calls)
    return window / math.ceil(window / wanted - 1e-9)


class Pace:
    """The arithmetic of one scope, with every instant passed in (so it is tested without time).

    ``next_at`` is the earliest instant the next call may go; :meth:`stamp` records a call let go
    at ``now``; :meth:`throttled` slows the scope down; the rate recovers lazily with time.
    """

    __slots__ = (
        "_changed_at",
        "_decreased_at",
        "_rate",
        "_recent",
        "_slot",
        "_window_at",
        "adaptive",
        "limit",
        "lowest",
        "next_at",
        "stretch",
        "throttles",
        "tick",
    )

    def __init__(
        self, limit: RateLimit, adaptive: Adaptive | None = DEFAULT_ADAPTIVE, *, tick: float = 0.0
    ) -> None:
        self.limit = limit
        self.adaptive = adaptive
        """None: a fixed rate (throttling answers are counted and their retry-after honoured)."""
        self._rate = limit.per_second
        self._changed_at = -math.inf
        self._decreased_at = -math.inf
        self.lowest = limit.per_second
        self.next_at = -math.inf
        """The earliest instant the next call may go: its slot, or later by the window rule."""
        self._slot = -math.inf
        """The next call's slot in the even schedule (never pushed by the window rule: the
        stamps it checks are late by up to a tick, and pushing would add that up)."""
        self._window_at = -math.inf
        """The window rule: the next call not before the call ``N`` back is a guarded period
        old (or -inf while fewer than ``N`` calls went)."""
        self.throttles = 0
        self.stretch = stretch(limit)
        """Calls go this much wider apart than ``period/N`` (guard and slack)."""
        self._recent: deque[float] = deque(maxlen=limit.calls)
        """The last ``N`` stamps."""
        if not 0.0 <= tick <= MAX_TICK * (1 + 1e-9):  # (a grid_tick's rounding)
            raise ValueError(f"tick {tick} must be in [0, {MAX_TICK}] seconds")
        self.tick = tick
        """Calls that wait are let go on multiples of this (0: no grid); see :meth:`release_at`."""

    def aligned(self, instant: float) -> float:
        """The first grid instant at or after ``instant`` (``instant`` itself without a grid)."""
        tick = self.tick
        if tick <= 0.0 or not math.isfinite(instant):
            return instant
        # The tolerance keeps an instant computed as "grid point + tick" on that grid point.
        return math.ceil(instant / tick - 1e-6) * tick

    def release_at(self, now: float) -> float:
        """When a call asking at ``now`` may go: at once if its turn has passed, else at the
        first grid instant at or after its slot (so that scopes sharing the grid go together),
        or later if the window rule says so."""
        if self.next_at <= now:
            return now
        # The slot goes on the grid; the window rule's instant (a stamp N calls back, plus the
        # guarded period) does not: that stamp was late by some loop lag, and rounding the lag
        # up to a whole tick, call after call, would slow the scope down.
        return max(self.next_at, self.aligned(self._slot))

    def rate(self, now: float) -> float:
        """Calls per second allowed at ``now`` (the configured rate unless throttled lately)."""
        ceiling = self.limit.per_second
        if self._rate >= ceiling or self.adaptive is None:
            return ceiling
        regained = ceiling * self.adaptive.recover * (now - self._changed_at) / self.limit.period
        return min(ceiling, self._rate + max(0.0, regained))

    def gap(self, now: float) -> float:
        """Seconds from one call to the next at the current rate, guard included."""
        return self.stretch / self.rate(now)

    def stamp(self, now: float) -> None:
        """A call was let go at ``now``: schedule the next one.

        On time, the next slot is one guarded gap after this one's slot (no drift from loop lag);
        late, at least ``CATCH_UP`` gaps after ``now``; and never before the call ``N`` back is a
        guarded period old (at most ``N`` calls in any window of the period). On a grid, up to
        one tick of lateness is the bunching's own hold, not lag: it does not move the schedule.
        """
        gap = self.stretch / self.rate(now)
        recent = self._recent
        # A bunch's calls go one loop iteration after another: each is counted at the instant
        # the bunch was due (when within BUNCH_LAG of it), so that one period later the window
        # rule lets the next bunch go at one instant too, instead of spread by those lags.
        due = max(self.aligned(self._slot), self._window_at)
        counted = due if self.tick > 0.0 and due <= now <= due + BUNCH_LAG else now
        if recent:
            counted = max(counted, recent[-1])
        scheduled = self._slot if self._slot > -math.inf else now
        self._slot = max(scheduled + gap, now + gap * CATCH_UP - self.tick)
        recent.append(counted)
        if len(recent) == recent.maxlen:
            self._window_at = recent[0] + self.limit.period * self.stretch
        self.next_at = max(self._slot, self._window_at)

    def throttled(self, *, now: float, sent_at: float | None, retry_after: float | None) -> bool:
        """The server throttled a call sent at ``sent_at``; True when the rate was lowered.

        Calls sent before the last decrease were paced at the old rate: their answers say
        nothing new, so one burst of Throttling answers lowers the rate once.
        """
        self.throttles += 1
        lowered = False
        if self.adaptive is not None and (sent_at is None or sent_at >= self._decreased_at):
            floor = self.limit.per_second * self.adaptive.floor
            self._rate = max(floor, self.rate(now) * self.adaptive.decrease)
            self._changed_at = self._decreased_at = now
            self.lowest = min(self.lowest, self._rate)
            lowered = True
        # Leave room before the next call: one gap at the new rate, or what the server asked.
        self._slot = max(self._slot, now + self.gap(now), now + (retry_after or 0.0))
        self.next_at = max(self.next_at, self._slot)
        return lowered


class _Scope:
    """A :class:`Pace` with its FIFO of waiters and the hard cap behind it."""

    __slots__ = ("cap", "lock", "name", "pace")

    def __init__(self, name: str, pace: Pace, *, hard_cap: bool) -> None:
        self.name = name
        self.pace = pace
        self.lock = asyncio.Lock()  # FIFO: waiters sleep in line, only the head is awake
        limit = pace.limit
        self.cap: Throttler | None = (
            Throttler(rate_limit=limit.calls, period=limit.period, retry_interval=limit.gap / 4)
            if hard_cap
            else None
        )

    def rate(self, now: float) -> ScopeRate:
        pace = self.pace
        return ScopeRate(
            scope=self.name,
            configured=pace.limit,
            effective_per_second=pace.rate(now),
            lowest_per_second=pace.lowest,
            throttled=pace.throttles,
        )


class RegionLimiter:
    """One paced scope per region endpoint (default rate or an override), and optionally one for
    the whole account. The batch engine's concurrency semaphore bounds how many tasks wait here.
    """

    def __init__(
        self,
        default: RateLimit,
        overrides: Mapping[str, str] | None = None,
        *,
        account: RateLimit | None = None,
        adaptive: Adaptive | None = DEFAULT_ADAPTIVE,
        clock: Callable[[], float] = time.monotonic,
        sleep: SleepFn = asyncio.sleep,
    ) -> None:
        self._default = default
        self._rates = {
            region: RateLimit.parse(text, key=f"ehpc.rate_limits.{region}")
            for region, text in (overrides or {}).items()
        }
        self._adaptive = adaptive
        self._clock = clock
        self._sleep = sleep
        # The hard cap reads time.monotonic itself: only with the real clock.
        self._hard_cap = clock is time.monotonic
        self._scopes: dict[str, _Scope] = {}
        # One grid for every scope, so that regions at a binding rate go in the same instants.
        limits = [default, *self._rates.values(), *([account] if account is not None else [])]
        self._tick = grid_tick(min(limits, key=lambda limit: stretch(limit) * limit.gap))
        self._account = self._new_scope(ACCOUNT_SCOPE, account) if account is not None else None

    @property
    def account(self) -> RateLimit | None:
        return self._account.pace.limit if self._account is not None else None

    def rate_for(self, region: str) -> RateLimit:
        return self._rates.get(region, self._default)

    def _new_scope(self, name: str, limit: RateLimit) -> _Scope:
        return _Scope(name, Pace(limit, self._adaptive, tick=self._tick), hard_cap=self._hard_cap)

    def _scope(self, region: str) -> _Scope:
        scope = self._scopes.get(region)
        if scope is None:
            scope = self._scopes[region] = self._new_scope(region, self.rate_for(region))
        return scope

    async def _until_ready(self, scope: _Scope) -> None:
        """Sleep (once, normally) until ``scope`` may let a call go."""
        while True:
            now = self._clock()
            if scope.pace.next_at <= now:
                return
            await self._sleep(scope.pace.release_at(now) - now)

    async def acquire(self, region: str) -> None:
        """Wait for this call's turn at ``region`` (and the account); send it right after."""
        await self.turn(region)

    async def turn(self, region: str) -> float:
        """:meth:`acquire`, returning the instant the call was let go (the limiter's clock)."""
        scope = self._scope(region)
        account = self._account
        async with scope.lock:
            while True:
                await self._until_ready(scope)
                if account is None:
                    return await self._let_go(scope)
                async with account.lock:
                    await self._until_ready(account)
                    if scope.pace.next_at <= self._clock():
                        return await self._let_go(scope, account)
                # The region was throttled while we waited for the account: wait again.

    @asynccontextmanager
    async def slot(self, region: str) -> AsyncIterator[float]:
        yield await self.turn(region)

    async def _let_go(self, *scopes: _Scope) -> float:
        for scope in scopes:
            if scope.cap is not None:
                await scope.cap.acquire()  # type: ignore[no-untyped-call]  # untyped lib
        now = self._clock()
        for scope in scopes:
            scope.pace.stamp(now)
        return now

    def observe(self, region: str, error: ApiError, *, sent_at: float | None = None) -> None:
        """Feed back an API error: ``Throttling*`` lowers the rate of the call's scopes."""
        if not error.code.startswith("Throttling"):
            return
        retry_after = error.retry_after if isinstance(error, ThrottledError) else None
        now = self._clock()
        for scope in (self._scope(region), self._account):
            if scope is not None:
                scope.pace.throttled(now=now, sent_at=sent_at, retry_after=retry_after)

    def throttle_counts(self) -> dict[str, int]:
        """Throttling answers so far per scope (pass to :meth:`summary` to count one run's)."""
        return {name: rate.throttled for name, rate in self.rates().items()}

    def summary(self, since: Mapping[str, int] | None = None) -> dict[str, dict[str, object]]:
        """:meth:`rates` as plain values, for the run summary; ``throttled`` counts from
        ``since`` (a :meth:`throttle_counts` taken when the run started: the daemon's limiter
        outlives its runs)."""
        before = since or {}
        summary = {}
        for name, rate in self.rates().items():
            values = rate.to_dict()
            values["throttled"] = rate.throttled - before.get(name, 0)
            summary[name] = values
        return summary

    def rates(self) -> dict[str, ScopeRate]:
        """The configured and effective rate of every scope used so far (account last)."""
        now = self._clock()
        rates = {name: scope.rate(now) for name, scope in sorted(self._scopes.items())}
        if self._account is not None:
            rates[ACCOUNT_SCOPE] = self._account.rate(now)
        return rates
