"""Quota use at a per-minute (any-period) limit, from the simulator's per-second counts.

    check = analyse_quota(stats["accepted_by_region"][MODIFY], quota=Quota.parse("100/60s"),
                          throttled=stats["throttled"].get(MODIFY, 0))
    check.utilisation, check.max_in_window, check.over_quota_windows

For each region, every window of ``period`` whole seconds is counted: the busiest window lying
wholly inside the region's active span, over the quota, is the utilisation (a run shorter than
one window cannot measure it: None); the busiest window anywhere (edges included) must never
hold more than the quota, which is what a gateway counting in such windows would throttle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Quota", "QuotaCheck", "RegionQuota", "analyse_quota"]

_QUOTA = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*s\s*$")


@dataclass(frozen=True, slots=True)
class Quota:
    calls: int
    period_s: int

    @classmethod
    def parse(cls, text: str) -> Quota:
        """``"100/60s"``: calls per whole seconds."""
        match = _QUOTA.match(text)
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise ValueError(f"{text!r} is not a quota like 100/60s")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.calls}/{self.period_s}s"


@dataclass(frozen=True, slots=True)
class RegionQuota:
    region: str
    calls: int
    active_s: int
    busiest_full_window: int | None
    """Calls in the busiest window wholly inside the active span; None if the span is shorter."""
    max_in_window: int
    over_quota_windows: int
    max_in_a_second: int
    """A smooth limiter sends about calls/period each second; a bursty one the whole quota."""


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    quota: Quota
    regions: tuple[RegionQuota, ...]
    throttled: int
    """Throttling answers the simulator sent."""

    @property
    def utilisation(self) -> float | None:
        full = [r.busiest_full_window for r in self.regions if r.busiest_full_window is not None]
        if not full or len(full) != len(self.regions):
            return None
        return sum(full) / len(full) / self.quota.calls

    @property
    def max_in_window(self) -> int:
        return max((r.max_in_window for r in self.regions), default=0)

    @property
    def over_quota_windows(self) -> int:
        return sum(r.over_quota_windows for r in self.regions)


def _region(region: str, series: Mapping[int, int], quota: Quota) -> RegionQuota:
    if not series:
        return RegionQuota(region, 0, 0, None, 0, 0, 0)
    first, last = min(series), max(series)
    period = quota.period_s
    counts: dict[int, int] = {}
    for start in range(first - period + 1, last + 1):
        counts[start] = sum(series.get(s, 0) for s in range(start, start + period))
    inside = [n for start, n in counts.items() if start >= first and start + period - 1 <= last]
    return RegionQuota(
        region=region,
        calls=sum(series.values()),
        active_s=last - first + 1,
        busiest_full_window=max(inside) if inside else None,
        max_in_window=max(counts.values()),
        over_quota_windows=sum(1 for n in counts.values() if n > quota.calls),
        max_in_a_second=max(series.values()),
    )


def analyse_quota(
    by_region: Mapping[str, Mapping[str, int]], *, quota: Quota, throttled: int
) -> QuotaCheck:
    """``by_region``: ``{region: {"<epoch second>": accepted calls}}`` as ``/_sim/stats`` gives."""
    regions = tuple(
        _region(region, {int(s): int(n) for s, n in raw.items()}, quota)
        for region, raw in sorted(by_region.items())
    )
    return QuotaCheck(quota=quota, regions=regions, throttled=throttled)
