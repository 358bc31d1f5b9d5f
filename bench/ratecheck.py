"""The achieved rate against a configured limit, from the simulator's per-second counts.

    check = analyse(stats["accepted_by_region"]["ModifyVisualServicePasswd"], limit=50)
    check.aggregate_fraction, check.max_in_a_second, check.never_above

The simulator counts accepted calls per calendar second of their arrival. The first and last
seconds of a run are partial, so rates are taken over the full seconds between them; the
"never above" check looks at every second, partial ones included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RateCheck", "RegionRate", "analyse"]


@dataclass(frozen=True, slots=True)
class RegionRate:
    region: str
    calls: int
    first_second: int
    """Epoch second of this region's first accepted call (0 if none)."""
    last_second: int
    active_seconds: int
    """Seconds from this region's first call to its last, both ends included."""
    full_seconds: int
    """Seconds strictly between the first and the last: the ones a rate is taken over."""
    mean_per_second: float
    max_in_a_second: int


@dataclass(frozen=True, slots=True)
class RateCheck:
    limit: int
    """Configured calls per second for each region."""
    regions: tuple[RegionRate, ...]
    aggregate_per_second: float
    """All regions together, over the full seconds of the whole run."""
    aggregate_full_seconds: int

    @property
    def run_start(self) -> int:
        return min((r.first_second for r in self.regions if r.calls), default=0)

    @property
    def max_in_a_second(self) -> int:
        return max((r.max_in_a_second for r in self.regions), default=0)

    @property
    def never_above(self) -> bool:
        return self.max_in_a_second <= self.limit

    @property
    def region_fraction(self) -> float:
        """The mean, over regions, of each region's rate while it was being rotated / limit."""
        rates = [r.mean_per_second for r in self.regions if r.full_seconds]
        return sum(rates) / len(rates) / self.limit if rates else 0.0

    @property
    def aggregate_fraction(self) -> float:
        """The whole run's rate / (limit x regions): what the operator waits for."""
        allowed = self.limit * len(self.regions)
        return self.aggregate_per_second / allowed if allowed else 0.0


def _full_second_mean(series: Mapping[int, int]) -> tuple[float, int]:
    if not series:
        return 0.0, 0
    first, last = min(series), max(series)
    inner = range(first + 1, last)
    if not inner:
        return 0.0, 0
    return sum(series.get(s, 0) for s in inner) / len(inner), len(inner)


def analyse(by_region: Mapping[str, Mapping[str, int]], *, limit: int) -> RateCheck:
    """``by_region``: ``{region: {"<epoch second>": accepted calls}}`` as ``/_sim/stats`` gives."""
    regions: list[RegionRate] = []
    total: dict[int, int] = {}
    for region, raw in sorted(by_region.items()):
        series = {int(second): int(n) for second, n in raw.items()}
        for second, n in series.items():
            total[second] = total.get(second, 0) + n
        mean, full = _full_second_mean(series)
        regions.append(
            RegionRate(
                region=region,
                calls=sum(series.values()),
                first_second=min(series, default=0),
                last_second=max(series, default=0),
                active_seconds=(max(series) - min(series) + 1) if series else 0,
                full_seconds=full,
                mean_per_second=mean,
                max_in_a_second=max(series.values(), default=0),
            )
        )
    aggregate, full = _full_second_mean(total)
    return RateCheck(
        limit=limit,
        regions=tuple(regions),
        aggregate_per_second=aggregate,
        aggregate_full_seconds=full,
    )
