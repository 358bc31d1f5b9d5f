"""Measuring a contender from inside its own process: wall time, CPU time, peak RSS, loop lag.

probe = LagProbe()
with Meter() as meter, probe.running():
    await work()
meter.wall_s, meter.cpu_s, peak_rss_mb(), probe.worst_ms
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

__all__ = ["LagProbe", "Meter", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Meter:
    """Wall and process CPU time (all threads) of a ``with`` block."""

    def __init__(self) -> None:
        self.started_at = 0.0
        self.finished_at = 0.0
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self._wall0 = 0.0
        self._cpu0 = 0.0

    def __enter__(self) -> Self:
        self.started_at = time.time()
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wall_s = time.perf_counter() - self._wall0
        self.cpu_s = time.process_time() - self._cpu0
        self.finished_at = time.time()


class LagProbe:
    """Sleeps ``interval`` seconds in a loop and records how late each wake-up was."""

    def __init__(self, interval: float = 0.010) -> None:
        self.interval = interval
        self.lags: list[float] = []

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - before - self.interval))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        task = asyncio.create_task(self._run(), name="lag-probe")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def worst_ms(self) -> float:
        return 1000.0 * max(self.lags, default=0.0)

    @property
    def p99_ms(self) -> float:
        if not self.lags:
            return 0.0
        ordered = sorted(self.lags)
        return 1000.0 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
