"""Per-second counts of accepted calls, throttled calls and injected faults (for rate tests).

stats.accept("ModifyVisualServicePasswd", "cn-hangzhou", now=time.time())
stats.to_json()   # {"accepted": {action: {"<epoch second>": n}}, "throttled": {action: n}, ...}
"""

from __future__ import annotations

import math
from collections import Counter

__all__ = ["Stats"]

# Seconds of history kept per series, so a long-running simulator does not grow without bound.
KEEP_SECONDS = 3600


def _bump(series: dict[int, int], second: int) -> None:
    if second in series:
        series[second] += 1
        return
    series[second] = 1
    while len(series) > KEEP_SECONDS:
        del series[next(iter(series))]


class Stats:
    __slots__ = ("accepted", "by_region", "faults", "throttled", "throttled_by_region")

    def __init__(self) -> None:
        self.accepted: dict[str, dict[int, int]] = {}
        self.by_region: dict[str, dict[str, dict[int, int]]] = {}
        self.throttled: Counter[str] = Counter()
        self.throttled_by_region: dict[str, Counter[str]] = {}
        self.faults: Counter[str] = Counter()

    def accept(self, action: str, region: str, *, now: float) -> None:
        """A call that passed the signature and throttling checks."""
        second = math.floor(now)
        _bump(self.accepted.setdefault(action, {}), second)
        _bump(self.by_region.setdefault(action, {}).setdefault(region, {}), second)

    def throttle(self, action: str, region: str | None = None) -> None:
        """A call refused with Throttling (it does not count as accepted)."""
        self.throttled[action] += 1
        if region is not None:
            self.throttled_by_region.setdefault(action, Counter())[region] += 1

    def fault(self, code: str) -> None:
        self.faults[code] += 1

    def reset(self) -> None:
        self.accepted.clear()
        self.by_region.clear()
        self.throttled.clear()
        self.throttled_by_region.clear()
        self.faults.clear()

    def to_json(self) -> dict[str, object]:
        return {
            "accepted": {
                action: {str(sec): n for sec, n in series.items()}
                for action, series in self.accepted.items()
            },
            "accepted_by_region": {
                action: {
                    region: {str(sec): n for sec, n in series.items()}
                    for region, series in regions.items()
                }
                for action, regions in self.by_region.items()
            },
            "throttled": dict(self.throttled),
            "throttled_by_region": {
                action: dict(regions) for action, regions in self.throttled_by_region.items()
            },
            "faults_injected": dict(self.faults),
        }
