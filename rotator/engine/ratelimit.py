"""Per-region rate limits, written the way the API documents them (``"200/60s"``, ``"5/1s"``).

    limiter = RegionLimiter(default=RateLimit.parse("5/1s"), overrides={"cn-beijing": "10/1s"})
    async with limiter.slot("cn-hangzhou"):
        await api.modify_visual_service_passwd(...)

One ``asyncio_throttle.Throttler`` per region endpoint. The batch engine puts its global
concurrency semaphore in front of these, so at most ``concurrency`` tasks ever wait here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from asyncio_throttle.throttler import Throttler

from rotator.errors import ConfigError

__all__ = ["RateLimit", "RegionLimiter"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# The server counts calls by arrival time, we count them by send time; network jitter can move a
# call across the server's window edge. A 2% longer window keeps us under the limit without
# giving up more than 2% of it.
WINDOW_GUARD = 1.02


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
                f"{text!r} is not a rate; write it as the API documents it, e.g. '200/60s' or "
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

    def __str__(self) -> str:
        return f"{self.calls}/{self.period:g}s"


class RegionLimiter:
    """One throttler per region; a region without an override gets the default rate."""

    def __init__(self, default: RateLimit, overrides: Mapping[str, str] | None = None) -> None:
        self._default = default
        self._rates = {
            region: RateLimit.parse(text, key=f"ehpc.rate_limits.{region}")
            for region, text in (overrides or {}).items()
        }
        self._throttlers: dict[str, Throttler] = {}

    def rate_for(self, region: str) -> RateLimit:
        return self._rates.get(region, self._default)

    def _throttler(self, region: str) -> Throttler:
        throttler = self._throttlers.get(region)
        if throttler is None:
            rate = self.rate_for(region)
            throttler = Throttler(
                rate_limit=rate.calls, period=rate.period * WINDOW_GUARD, retry_interval=0.005
            )
            self._throttlers[region] = throttler
        return throttler

    async def acquire(self, region: str) -> None:
        """Wait for a slot to send one call to ``region``."""
        await self._throttler(region).acquire()  # type: ignore[no-untyped-call]  # untyped lib

    @asynccontextmanager
    async def slot(self, region: str) -> AsyncIterator[None]:
        await self.acquire(region)
        yield
