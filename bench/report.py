"""The bench's numbers, and the text that prints them as ratios from one run.

print(render(report))

Every contender is measured the same way (bench/procs.py): over the window of its work, from
outside. A contender that died is a row with its error, and the rest still prints.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.procs import Span
from bench.quota import QuotaCheck
from bench.ratecheck import RateCheck

__all__ = [
    "TARGETS",
    "Contender",
    "Report",
    "Round",
    "RoundRatios",
    "render",
    "round_ratios",
    "summarise_rounds",
]

# The share of a 1 s limit rotator's limiter uses on purpose: 1 / (1.02 + 0.1 s / 1 s).
_ONE_SECOND_SHARE = 1 / (1.02 + 0.1)

TARGETS = {
    "cpu_vs_one_cert_sdk": 0.5,
    "vault_requests_per_rotation": 4.0,
    "tty_over_plain_cpu": 1.10,
    "binding_over_free_cpu": 1.10,
    "quota_utilisation": 0.97,
    "limit_fraction": 0.95,
    # rotator spaces calls by period * 1.02 + 0.1 s per N (README, "Rate limits and quotas"): at a
    # 1 s limit it uses at most 1/1.12 of it by design, headroom for a loaded host's jitter.
    "rss_mb_at_10k": 150.0,
}


@dataclass(slots=True)
class Contender:
    """One contender's run: counts, and spans of what it did."""

    label: str
    clusters: int
    """Clusters it was given."""
    done: int = 0
    rotated: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    work: Span | None = None
    """The measured work: rotator from ``run_started`` to ``run_finished``, the SDK scripts
    from creating their clients to closing them."""
    before: Span | None = None
    """Start-up and inventory (rotator), interpreter start and imports (SDK)."""
    after: Span | None = None
    """After the work: the run summary written to Vault, clients closed, exit."""
    whole: Span | None = None
    """The whole process, launch to exit."""
    peak_rss_mb: float = 0.0
    lag_max_ms: float | None = None
    error: str | None = None
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.work is not None and self.done > 0

    @property
    def per_second(self) -> float:
        return self.done / self.work.wall_s if self.work and self.work.wall_s else 0.0

    def per_rotation(self, get: Callable[[Span], float | int | None]) -> float | None:
        if self.work is None or not self.done:
            return None
        value = get(self.work)
        return None if value is None else value / self.done

    @property
    def cpu_ms(self) -> float | None:
        value = self.per_rotation(lambda s: s.client_cpu_s)
        return None if value is None else 1000.0 * value

    @property
    def vault_requests(self) -> float | None:
        return self.per_rotation(lambda s: s.vault_requests)

    @property
    def vault_requests_whole(self) -> float | None:
        """Every request of the process (rotator's inventory included) per rotation."""
        if self.whole is None or self.whole.vault_requests is None or not self.done:
            return None
        return self.whole.vault_requests / self.done

    @property
    def vault_cpu_ms(self) -> float | None:
        value = self.per_rotation(lambda s: s.vault_cpu_s)
        return None if value is None else 1000.0 * value

    @property
    def sim_cpu_ms(self) -> float | None:
        value = self.per_rotation(lambda s: s.sim_cpu_s)
        return None if value is None else 1000.0 * value


@dataclass(slots=True)
class Round:
    """The three rotator runs the two CPU ratios need, measured again (rounds 2..N)."""

    order: tuple[str, ...]
    """The order they ran in ("plain", "tty", "binding"): it alternates from round to round."""
    plain: Contender | None = None
    tty: Contender | None = None
    limited: Contender | None = None


@dataclass(frozen=True, slots=True)
class RoundRatios:
    """One ratio over every round: a round whose runs died (or did not run) is None."""

    per_round: tuple[float | None, ...]

    @property
    def measured(self) -> list[float]:
        return [r for r in self.per_round if r is not None]

    @property
    def median(self) -> float | None:
        values = self.measured
        return statistics.median(values) if values else None

    @property
    def low(self) -> float | None:
        return min(self.measured, default=None)

    @property
    def high(self) -> float | None:
        return max(self.measured, default=None)

    @property
    def over(self) -> str:
        """ "3 rounds", or "2 of 3 rounds" when some round has no ratio."""
        got, total = len(self.measured), len(self.per_round)
        return f"{total} rounds" if got == total else f"{got} of {total} rounds"


@dataclass(slots=True)
class Report:
    plan: dict[str, Any]
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpus: int = 0
    contenders: dict[str, Contender] = field(default_factory=dict)
    """Unthrottled: ``rotator``, ``sdk_system_ca``, ``sdk_one_cert``, ``sdk_loop``, and
    ``rotator_hvac`` (rotator with ``vault.transport = "hvac"``, in a section of its own)."""
    tty: Contender | None = None
    limited: Contender | None = None
    rate: RateCheck | None = None
    rate_choice: str = ""
    quota_run: Contender | None = None
    quota: QuotaCheck | None = None
    quota_note: str = ""
    big: Contender | None = None
    notes: list[str] = field(default_factory=list)
    more_rounds: list[Round] = field(default_factory=list)
    """Rounds 2..N (``--rounds``) of the runs behind the two CPU ratios; round 1 is above."""

    def rounds(self) -> list[Round]:
        """Every round, round 1 made of the runs the rest of the report shows."""
        ran = {"plain": "rotator" in self.contenders, "tty": self.tty, "binding": self.limited}
        first = Round(
            order=tuple(name for name, there in ran.items() if there),
            plain=self.contenders.get("rotator"),
            tty=self.tty,
            limited=self.limited,
        )
        return [first, *self.more_rounds]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        tty, binding = round_ratios(self)
        data["round_ratios"] = {
            name: {
                "per_round": list(ratios.per_round),
                "median": ratios.median,
                "min": ratios.low,
                "max": ratios.high,
            }
            for name, ratios in (("tty_over_plain_cpu", tty), ("binding_over_free_cpu", binding))
        }
        if self.rate is not None:
            data["rate"]["aggregate_fraction"] = self.rate.aggregate_fraction
            data["rate"]["max_in_a_second"] = self.rate.max_in_a_second
        if self.quota is not None:
            data["quota"]["utilisation"] = self.quota.utilisation
            data["quota"]["max_in_window"] = self.quota.max_in_window
        return data


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return ours / theirs


def _cpu_ratio(ours: Contender | None, plain: Contender | None) -> float | None:
    if ours is None or plain is None or not ours.ok or not plain.ok:
        return None
    return _ratio(ours.cpu_ms, plain.cpu_ms)


def round_ratios(report: Report) -> tuple[RoundRatios, RoundRatios]:
    """Terminal / plain and binding / unthrottled CPU per rotation, within each round."""
    rounds = report.rounds()
    return (
        RoundRatios(tuple(_cpu_ratio(r.tty, r.plain) for r in rounds)),
        RoundRatios(tuple(_cpu_ratio(r.limited, r.plain) for r in rounds)),
    )


def summarise_rounds(label: str, ratios: RoundRatios) -> str:
    """``LABEL: median 1.12x over 3 rounds, 1.08x-1.20x (round by round: 1.20x, 1.08x, 1.12x)``."""
    if ratios.median is None:
        return f"{label}: no round measured it"
    each = ", ".join("died" if r is None else _times(r) for r in ratios.per_round)
    return (
        f"{label}: median {_times(ratios.median)} over {ratios.over}, "
        f"{_times(ratios.low)}-{_times(ratios.high)} (round by round: {each})"
    )


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _table(columns: list[Contender]) -> list[str]:
    metrics: list[tuple[str, Callable[[Contender], str]]] = [
        ("clusters", lambda c: f"{c.done}"),
        ("rotated / not (skipped, failed)", lambda c: f"{c.rotated} / {c.done - c.rotated}"),
        ("wall time of the work, s", lambda c: _num(c.work.wall_s if c.work else None, "{:.1f}")),
        ("rotations/s", lambda c: _num(c.per_second, "{:.1f}")),
        ("client CPU per rotation, ms", lambda c: _num(c.cpu_ms)),
        ("peak RSS, MB", lambda c: _num(c.peak_rss_mb, "{:.0f}")),
        ("Vault requests per rotation", lambda c: _num(c.vault_requests)),
        ("  same, whole process", lambda c: _num(c.vault_requests_whole)),
        ("OpenBao CPU per rotation, ms", lambda c: _num(c.vault_cpu_ms)),
        ("simulator CPU per rotation, ms", lambda c: _num(c.sim_cpu_ms)),
        ("worst event-loop lag, ms", lambda c: _num(c.lag_max_ms, "{:.0f}")),
    ]
    width, cell = 34, 18
    lines = ["".ljust(width) + "".join(c.label.rjust(cell) for c in columns)]
    for label, value in metrics:
        lines.append(
            label.ljust(width)
            + "".join((value(c) if c.ok else "died").rjust(cell) for c in columns)
        )
    return lines


def _span_line(name: str, span: Span | None) -> str:
    if span is None:
        return f"  {name}: -"
    requests = "-" if span.vault_requests is None else str(span.vault_requests)
    return (
        f"  {name:<28} {span.wall_s:6.2f} s wall, {span.client_cpu_s:6.2f} s CPU, "
        f"{requests} Vault requests"
    )


def _header(report: Report) -> list[str]:
    plan = report.plan
    before = ", ".join(f"{x:.1f}" for x in report.load_before)
    after = ", ".join(f"{x:.1f}" for x in report.load_after)
    return [
        "",
        f"rotator bench: {plan['clusters']} clusters over {len(plan['regions'])} regions for "
        f"every contender; simulator over TLS with {plan['latency_ms']:g} ms latency; OpenBao "
        "dev over TLS; certificates verified on every side.",
        f"machine: {report.cpus} CPUs; load average (1, 5, 15 min) {before} before, {after} "
        "after: other processes competed for the CPU, so absolute numbers are pessimistic; "
        "ratios come from one run.",
        "Each contender ran in its own process, measured from outside over the window of its "
        "work (rotator: run_started..run_finished, after start-up and inventory; the SDK "
        "scripts: clients created..closed). 1 in 20 simulated clusters is not running, the "
        "same for every contender: the SDK scripts make one API call for it, then skip it; "
        "rotator learns it from ListClusters before the run and skips it with no call.",
        "",
    ]


_COLUMNS = ("rotator", "sdk_system_ca", "sdk_one_cert", "sdk_loop")


def _unthrottled(report: Report) -> list[str]:
    # A fixed order of columns, whatever order the contenders ran in.
    columns = [report.contenders[k] for k in _COLUMNS if k in report.contenders]
    if not columns:
        return []
    out = ["unthrottled (rate limit far above what anything reaches):", *_table(columns)]
    rotator = report.contenders.get("rotator")
    if rotator is not None and rotator.ok:
        out += [
            "",
            "rotator's own phases:",
            _span_line("start-up + inventory", rotator.before),
            _span_line("rotation (the measured work)", rotator.work),
            _span_line("summary to Vault + exit", rotator.after),
        ]
        others = [c for c in columns if c is not rotator and c.ok]
        if others:
            out += ["", "ratios, rotator / each (same run):"]
            ratios: list[tuple[str, Callable[[Contender], float | None], str]] = [
                ("rotations/s", lambda c: c.per_second, "higher is better"),
                ("client CPU per rotation", lambda c: c.cpu_ms, "lower is better"),
                (
                    "Vault requests per rotation",
                    lambda c: c.vault_requests_whole,
                    "lower is better",
                ),
                ("OpenBao CPU per rotation", lambda c: c.vault_cpu_ms, "lower is better"),
                ("peak RSS", lambda c: c.peak_rss_mb, "lower is better"),
            ]
            for label, get, better in ratios:
                parts = [f"{_num(_ratio(get(rotator), get(c)))}x vs {c.label}" for c in others]
                out.append(f"  {label:<28} {', '.join(parts)}   ({better})")
    return out


TRANSPORT_THRESHOLD = 0.20
"""issue 14: aiohttp stays the default only while it saves more than this share of client CPU."""


def _transport(report: Report) -> list[str]:
    """rotator with ``vault.transport = "hvac"`` next to its default (aiohttp), same fleet."""
    hvac, default = report.contenders.get("rotator_hvac"), report.contenders.get("rotator")
    if hvac is None:
        return []
    head = 'Vault transport: vault.transport = "hvac" (KV calls in a thread pool) vs the default'
    if not hvac.ok or default is None or not default.ok:
        reason = hvac.error if not hvac.ok else "no default rotator run to compare with"
        return ["", f"{head}: {reason or 'no rotations'}"]
    out = [
        "",
        f"{head} (aiohttp on the event loop), the same fleet, hvac first, then the default:",
        *_table([default, hvac]),
    ]
    out.append("  hvac / aiohttp (same run):")
    ratios: list[tuple[str, Callable[[Contender], float | None], str]] = [
        ("client CPU per rotation", lambda c: c.cpu_ms, "lower is better"),
        # The whole process: the edges of the work window cut a few requests either way.
        ("Vault requests per rotation", lambda c: c.vault_requests_whole, "lower is better"),
        ("OpenBao CPU per rotation", lambda c: c.vault_cpu_ms, "lower is better"),
        ("rotations/s", lambda c: c.per_second, "higher is better"),
    ]
    for label, get, better in ratios:
        out.append(f"    {label:<28} {_times(_ratio(get(hvac), get(default)))}   ({better})")
    saved = _ratio(default.cpu_ms, hvac.cpu_ms)
    if saved is not None:
        share = 1.0 - saved
        keep = "holds" if share > TRANSPORT_THRESHOLD else "does not hold in this run"
        out.append(
            f"  aiohttp saves {share:.1%} of hvac's client CPU per rotation; the rule for the "
            f"default (more than {TRANSPORT_THRESHOLD:.0%}) {keep}"
        )
    return out


def _tty(report: Report) -> list[str]:
    plain, tty = report.contenders.get("rotator"), report.tty
    if tty is None:
        return []
    if not tty.ok or plain is None or not plain.ok:
        return ["", f"terminal run: {tty.error or 'no plain run to compare with'}"]
    return [
        "",
        "on a terminal (pseudo-terminal, progress bar, console logs) vs plain (pipes, JSON logs):",
        f"  rotations/s {tty.per_second:.1f} vs {plain.per_second:.1f}: "
        f"{_num(_ratio(tty.per_second, plain.per_second))}x; client CPU per rotation "
        f"{_num(tty.cpu_ms)} vs {_num(plain.cpu_ms)} ms: {_num(_ratio(tty.cpu_ms, plain.cpu_ms))}x",
    ]


def _rate(report: Report) -> list[str]:
    rate, limited = report.rate, report.limited
    if limited is not None and not limited.ok:
        return ["", f"binding rate limit: the run died: {limited.error}"]
    if rate is None or limited is None:
        return []
    out = [
        "",
        f"binding rate limit: {rate.limit}/1s per region ({report.rate_choice})",
        "  region          calls  active (s from start)  full s  mean/s (full s)  max in a second",
    ]
    for r in rate.regions:
        window = f"{r.first_second - rate.run_start}..{r.last_second - rate.run_start}"
        out.append(
            f"  {r.region:<14}{r.calls:>7}{window:>23}{r.full_seconds:>8}"
            f"{r.mean_per_second:>17.1f}{r.max_in_a_second:>17}"
        )
    out.append(
        f"  whole run: {rate.aggregate_per_second:.1f}/s over {rate.aggregate_full_seconds} full "
        f"seconds = {rate.aggregate_fraction:.2f} of {rate.limit * len(rate.regions)}/s allowed"
    )
    free = report.contenders.get("rotator")
    if free is not None and free.ok:
        out.append(
            f"  client CPU per rotation at the binding limit {_num(limited.cpu_ms)} ms vs "
            f"{_num(free.cpu_ms)} ms unthrottled: {_num(_ratio(limited.cpu_ms, free.cpu_ms))}x"
        )
        # The same requests spread out cost OpenBao more too: what the host charges for
        # wake-ups from idle, which no client can remove, shows here.
        out.append(
            f"  OpenBao CPU per rotation {_num(limited.vault_cpu_ms)} ms vs "
            f"{_num(free.vault_cpu_ms)} ms ({_num(limited.vault_requests)} vs "
            f"{_num(free.vault_requests)} requests): "
            f"{_num(_ratio(limited.vault_cpu_ms, free.vault_cpu_ms))}x"
        )
    return out


def _quota(report: Report) -> list[str]:
    run, check = report.quota_run, report.quota
    if run is not None and not run.ok:
        return ["", f"quota case: the run died: {run.error}"]
    if check is None or run is None:
        return [] if not report.quota_note else ["", f"quota case: {report.quota_note}"]
    out = [
        "",
        f"quota case: {check.quota} per region at rotator (ehpc.rate_limit); {report.quota_note}",
        "  region          calls  active s  busiest full window  max in any window  over quota"
        "  max in a second",
    ]
    for r in check.regions:
        busiest = "-" if r.busiest_full_window is None else str(r.busiest_full_window)
        out.append(
            f"  {r.region:<14}{r.calls:>7}{r.active_s:>10}{busiest:>21}{r.max_in_window:>19}"
            f"{r.over_quota_windows:>12}{r.max_in_a_second:>17}"
        )
    took = _num(run.work.wall_s if run.work else None, "{:.0f}")
    out.append(
        f"  utilisation {_num(check.utilisation)} of {check.quota}; Throttling answers "
        f"{check.throttled}; rotated {run.rotated} of {run.done} in {took} s"
    )
    return out


def _big(report: Report) -> list[str]:
    big = report.big
    if big is None:
        return []
    if not big.ok:
        return ["", f"RSS check: the run died: {big.error}"]
    return [
        "",
        f"at {big.done} clusters (0-5 ms latency): rotator peak RSS {big.peak_rss_mb:.0f} MB, "
        f"{big.per_second:.0f} rotations/s, {_num(big.cpu_ms)} ms CPU per rotation",
    ]


def _median_target(label: str, ratios: RoundRatios, limit: float) -> tuple[str, str, bool | None]:
    """A target judged on the median of the rounds (one round: that round's ratio)."""
    median = ratios.median
    if len(ratios.per_round) > 1:
        label = f"{label} (median of {ratios.over})"
    return label, _times(median), None if median is None else median <= limit


def _rounds(report: Report) -> list[str]:
    """The two CPU ratios over every round (printed when there is more than one)."""
    if not report.more_rounds:
        return []
    tty, binding = round_ratios(report)
    out = [
        "",
        f"CPU ratios over {len(tty.per_round)} rounds (round 1 is the runs above; then the "
        "plain, terminal and binding-limit runs again, in an order that alternates, at the "
        "same limit):",
    ]
    if report.tty is not None:
        out.append("  " + summarise_rounds("client CPU per rotation on a terminal vs plain", tty))
    if report.limited is not None:
        out.append(
            "  "
            + summarise_rounds(
                "client CPU per rotation at the binding limit vs unthrottled", binding
            )
        )
    for number, each in enumerate(report.more_rounds, start=2):
        out.append(f"  round {number} ran {', '.join(each.order)}")
    return out


def _targets(report: Report) -> list[str]:
    rotator = report.contenders.get("rotator")
    one_cert = report.contenders.get("sdk_one_cert")
    rows: list[tuple[str, str, bool | None]] = []

    def alive(c: Contender | None) -> Contender | None:
        return c if c is not None and c.ok else None

    r, o = alive(rotator), alive(one_cert)
    cpu_ratio = _ratio(r.cpu_ms, o.cpu_ms) if r and o else None
    rows.append(
        (
            f"client CPU per rotation <= {TARGETS['cpu_vs_one_cert_sdk']}x the one-cert SDK's",
            _times(cpu_ratio),
            None if cpu_ratio is None else cpu_ratio <= TARGETS["cpu_vs_one_cert_sdk"],
        )
    )
    requests = r.vault_requests_whole if r else None
    rows.append(
        (
            f"Vault requests per rotation <= {TARGETS['vault_requests_per_rotation']:g} "
            "(whole run, inventory included)",
            _num(requests),
            None if requests is None else requests <= TARGETS["vault_requests_per_rotation"],
        )
    )
    tty_ratios, bind_ratios = round_ratios(report)
    rows.append(
        _median_target(
            "terminal run's CPU per rotation at most 10% above a plain run's",
            tty_ratios,
            TARGETS["tty_over_plain_cpu"],
        )
    )
    rows.append(
        _median_target(
            "CPU per rotation at a binding limit at most 10% above unthrottled",
            bind_ratios,
            TARGETS["binding_over_free_cpu"],
        )
    )
    lim = alive(report.limited)
    quota = report.quota if alive(report.quota_run) else None
    use = quota.utilisation if quota else None
    rows.append(
        (
            f"quota use >= {TARGETS['quota_utilisation']} at a per-minute quota, 0 Throttling, "
            "no window over",
            f"{_num(use)}, {quota.throttled if quota else '-'}, "
            f"{quota.over_quota_windows if quota else '-'}",
            None
            if quota is None or use is None
            else use >= TARGETS["quota_utilisation"]
            and quota.throttled == 0
            and quota.over_quota_windows == 0,
        )
    )
    rate = report.rate if lim else None
    rows.append(
        (
            f">= {TARGETS['limit_fraction']} of what a binding 1 s limit leaves by design "
            f"({_ONE_SECOND_SHARE:.3f}), never above it in any second",
            f"{_num(rate.aggregate_fraction)}, max {rate.max_in_a_second}/{rate.limit}"
            if rate
            else "-",
            None
            if rate is None
            else rate.aggregate_fraction >= TARGETS["limit_fraction"] * _ONE_SECOND_SHARE
            and rate.never_above,
        )
    )
    big = alive(report.big)
    rows.append(
        (
            f"peak RSS < {TARGETS['rss_mb_at_10k']:.0f} MB at {report.plan['rss_clusters']} "
            "clusters",
            f"{big.peak_rss_mb:.0f} MB" if big else "-",
            None if big is None else big.peak_rss_mb < TARGETS["rss_mb_at_10k"],
        )
    )
    out = ["", "targets (issue 14; a miss is reported, not an error):"]
    width = max(len(label) for label, _, _ in rows)
    out += [f"  {label:<{width}} {value:>16}  {_verdict(ok)}" for label, value, ok in rows]
    return out


def _failures(report: Report) -> list[str]:
    everyone = [
        *report.contenders.values(),
        report.tty,
        report.limited,
        report.quota_run,
        report.big,
    ]
    # A run of a later round that died is reported too (its clusters' codes repeat round 1's).
    later = [c for r in report.more_rounds for c in (r.plain, r.tty, r.limited)]
    dead = [c for c in [*everyone, *later] if c is not None and c.error is not None]
    out: list[str] = []
    for c in dead:
        out += ["", f"{c.label} died: {c.error}"]
        if c.log_tail:
            out += [f"    {line}" for line in c.log_tail.splitlines()]
    for each in everyone:
        if each is not None and each.ok and each.codes:
            codes = ", ".join(f"{k} x{n}" for k, n in sorted(each.codes.items()))
            out.append(f"{each.label}: not rotated: {codes}")
    return out


def render(report: Report) -> str:
    out = _header(report)
    out += _unthrottled(report)
    out += _transport(report)
    out += _tty(report)
    out += _rate(report)
    out += _rounds(report)
    out += _quota(report)
    out += _big(report)
    out += _targets(report)
    out += _failures(report)
    out += report.notes
    return "\n".join(out)
