"""The bench's numbers, and the table that prints them as ratios from one run.

print(render(report))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.ratecheck import RateCheck
from bench.spec import Result

__all__ = ["TARGETS", "Measured", "Report", "render"]

TARGETS = {
    "rotations_per_s": 200.0,
    "limit_fraction": 0.95,
    "rss_mb_at_10k": 150.0,
}


@dataclass(slots=True)
class Measured:
    result: Result
    sim_cpu_s: float
    """CPU the simulator spent while this contender ran."""
    vault_cpu_s: float
    """CPU OpenBao spent while this contender ran."""
    outside_s: float
    """Wall time of the whole subprocess, interpreter start and imports included."""

    def per_rotation_ms(self, seconds: float) -> float:
        done = self.result.done
        return 1000.0 * seconds / done if done else 0.0


@dataclass(slots=True)
class Report:
    plan: dict[str, Any]
    rotator: Measured | None = None
    sdk_loop: Measured | None = None
    sdk_gather: Measured | None = None
    limited: Measured | None = None
    rate: RateCheck | None = None
    big: Measured | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.rate is not None:
            data["rate"]["aggregate_fraction"] = self.rate.aggregate_fraction
            data["rate"]["region_fraction"] = self.rate.region_fraction
            data["rate"]["max_in_a_second"] = self.rate.max_in_a_second
        return data


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _rows(columns: list[tuple[str, Measured]]) -> list[str]:
    metrics: list[tuple[str, Any]] = [
        ("clusters", lambda m: f"{m.result.done}"),
        ("rotated / skipped or failed", lambda m: f"{m.result.ok} / {m.result.failed}"),
        ("wall time, s", lambda m: f"{m.result.wall_s:.1f}"),
        ("rotations/s", lambda m: f"{m.result.per_second:.1f}"),
        ("client CPU per rotation, ms", lambda m: f"{m.result.cpu_ms_per_rotation:.2f}"),
        ("peak RSS, MB", lambda m: f"{m.result.peak_rss_mb:.0f}"),
        ("worst event-loop lag, ms", lambda m: f"{m.result.lag_max_ms:.1f}"),
        ("p99 event-loop lag, ms", lambda m: f"{m.result.lag_p99_ms:.1f}"),
        (
            "Vault requests per rotation",
            lambda m: f"{m.result.vault_ops / m.result.done:.1f}" if m.result.done else "-",
        ),
        ("simulator CPU per rotation, ms", lambda m: f"{m.per_rotation_ms(m.sim_cpu_s):.2f}"),
        ("OpenBao CPU per rotation, ms", lambda m: f"{m.per_rotation_ms(m.vault_cpu_s):.2f}"),
    ]
    width = 32
    lines = ["".ljust(width) + "".join(name.rjust(14) for name, _ in columns)]
    for label, value in metrics:
        lines.append(label.ljust(width) + "".join(value(m).rjust(14) for _, m in columns))
    return lines


def render(report: Report) -> str:
    plan = report.plan
    out = [
        "",
        f"rotator bench: {plan['clusters']} clusters over 3 regions; simulator over TLS with "
        f"{plan['latency_ms']:g} ms latency; OpenBao dev over TLS; certificates verified on "
        "every side.",
        "Each contender ran in its own process; 1 in 20 simulated clusters is not running "
        "(one API call, then skipped), the same for every contender.",
        "",
    ]
    columns = [
        (name, m)
        for name, m in (
            ("rotator", report.rotator),
            ("SDK loop", report.sdk_loop),
            ("SDK gather", report.sdk_gather),
        )
        if m is not None
    ]
    out += _rows(columns)
    rotator, loop, gather = report.rotator, report.sdk_loop, report.sdk_gather
    if rotator is not None:
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in rotator.result.phases.items())
        out.append(f"rotator's wall time by phase: {phases}")
    if rotator is not None and len(columns) > 1:
        out.append("")
        out.append("ratios (rotator / baseline, same run):")
        ratios: list[tuple[str, Callable[[Measured], float], str]] = [
            ("rotations/s", lambda m: m.result.per_second, "higher is better"),
            ("client CPU per rotation", lambda m: m.result.cpu_ms_per_rotation, "lower"),
            ("peak RSS", lambda m: m.result.peak_rss_mb, "lower"),
            ("worst event-loop lag", lambda m: m.result.lag_max_ms, "lower"),
        ]
        for label, get, better in ratios:
            parts = [
                f"{_ratio(get(rotator), get(m))} {name}" for name, m in columns if m is not rotator
            ]
            out.append(f"  {label:<26} = {', '.join(parts)}   ({better})")
        if loop is not None:
            per = loop.result.wall_s / loop.result.done if loop.result.done else 0.0
            out.append(
                f"  (SDK loop measured over {loop.result.done} clusters, SDK gather over "
                f"{gather.result.done if gather else 0}; per-rotation numbers carry over: the "
                f"loop would take ~{per * plan['clusters']:.0f} s for all {plan['clusters']}, "
                f"rotator took {rotator.result.wall_s:.0f} s)"
            )
    rate = report.rate
    if rate is not None:
        out += ["", f"binding rate limit: {rate.limit}/1s per region (rotator, ehpc.rate_limit)"]
        out.append(
            "  region          calls  active (s from start)  full s  mean/s (full s)  "
            "max in a second"
        )
        for r in rate.regions:
            window = f"{r.first_second - rate.run_start}..{r.last_second - rate.run_start}"
            out.append(
                f"  {r.region:<14}{r.calls:>7}{window:>23}{r.full_seconds:>8}"
                f"{r.mean_per_second:>17.1f}{r.max_in_a_second:>17}"
            )
        out.append(
            f"  whole run: {rate.aggregate_per_second:.1f}/s over {rate.aggregate_full_seconds} "
            f"full seconds = {rate.aggregate_fraction:.2f} of {rate.limit * len(rate.regions)}/s "
            f"allowed; each region while it was being rotated: {rate.region_fraction:.2f} of "
            f"{rate.limit}/s"
        )
    big = report.big
    if big is not None:
        out += [
            "",
            f"at {big.result.done} clusters (0-5 ms latency): rotator peak RSS "
            f"{big.result.peak_rss_mb:.0f} MB, {big.result.per_second:.0f} rotations/s, "
            f"{big.result.cpu_ms_per_rotation:.2f} ms CPU per rotation",
        ]
    out += ["", "targets (issue 4):"]
    if rotator is not None:
        value = rotator.result.per_second
        out.append(
            f"  >= {TARGETS['rotations_per_s']:.0f} rotations/s unthrottled, end to end"
            f"{value:>14.1f}/s  {_verdict(value >= TARGETS['rotations_per_s'])}"
        )
    if rate is not None:
        fraction = rate.aggregate_fraction
        out.append(
            f"  >= {TARGETS['limit_fraction']} of a binding limit (whole run)"
            f"{fraction:>17.2f}  {_verdict(fraction >= TARGETS['limit_fraction'])}"
        )
        out.append(
            f"  never above the limit in any second       max {rate.max_in_a_second}/"
            f"{rate.limit}  {_verdict(rate.never_above)}"
        )
    if big is not None:
        rss = big.result.peak_rss_mb
        out.append(
            f"  peak RSS < {TARGETS['rss_mb_at_10k']:.0f} MB at {big.result.done} clusters"
            f"{rss:>16.0f} MB  {_verdict(rss < TARGETS['rss_mb_at_10k'])}"
        )
    out += report.notes
    return "\n".join(out)
