"""The bench's own logic, without servers: failures are counted, never a crash."""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from pathlib import Path

import pytest
from darabonba.exceptions import UnretryableException
from darabonba.policy.retry import RetryPolicyContext

from bench.contender_rotator import RotatorConfig
from bench.contender_sdk import Baseline
from bench.procs import Probe, Span, run_child
from bench.report import Contender, Report, Round, RoundRatios, render, summarise_rounds
from bench.run import round_order
from bench.spec import Spec
from bench.vaultcount import parse_request_count


def _spec(tmp_path: Path) -> Spec:
    secret = tmp_path / "secret"
    secret.write_text("not-a-real-secret", encoding="utf-8")
    return Spec(
        name="sdk",
        vault_addr="https://127.0.0.1:1",
        vault_ca=str(tmp_path / "ca.pem"),
        vault_token_file=str(secret),
        sim_base_url="https://127.0.0.1:1",
        sim_ca=str(tmp_path / "ca.pem"),
        access_key_id="id",
        access_key_secret_file=str(secret),
        regions=["cn-hangzhou"],
        cluster_ids=["c1", "c2"],
        mode="gather",
    )


class _Failing(Baseline):
    """The SDK's connect timeout surfaces as darabonba's UnretryableException."""

    def read_root(self, cluster_id: str) -> tuple[str, str]:
        return "root", "x"

    async def change(self, cluster_id: str, user: str, root: str, password: str) -> str:
        raise UnretryableException(RetryPolicyContext(retries_attempted=1))

    def store(self, cluster_id: str, password: str, request_id: str) -> None:
        raise AssertionError("not reached")


def test_an_sdk_exception_outside_alibabacloud_exception_is_a_failed_rotation(
    tmp_path: Path,
) -> None:
    codes = asyncio.run(_Failing(_spec(tmp_path)).run())
    assert codes == ["UnretryableException", "UnretryableException"]


def test_quota_windows_count_use_and_overruns() -> None:
    from bench.quota import Quota, analyse_quota

    quota = Quota.parse("10/5s")
    # 2 calls a second for 8 s: every full 5-s window holds 10, the quota exactly.
    steady = {str(1000 + s): 2 for s in range(8)}
    # A burst of 10, then 3 more 4 s later: one window holds 13.
    bursty = {"1000": 10, "1004": 3, "1007": 1}
    check = analyse_quota({"a": steady, "b": bursty}, quota=quota, throttled=0)
    a, b = check.regions
    assert (a.busiest_full_window, a.max_in_window, a.over_quota_windows) == (10, 10, 0)
    assert (b.busiest_full_window, b.max_in_window) == (13, 13)
    assert b.over_quota_windows == 1
    assert (a.max_in_a_second, b.max_in_a_second) == (2, 10)  # smooth vs a burst
    assert check.max_in_window == 13
    assert check.utilisation == (10 + 13) / 2 / 10


def test_a_run_shorter_than_one_window_measures_no_utilisation() -> None:
    from bench.quota import Quota, analyse_quota

    check = analyse_quota({"a": {"1000": 3, "1001": 3}}, quota=Quota(100, 60), throttled=0)
    assert check.utilisation is None
    assert check.max_in_window == 6


def _probe() -> Probe:
    return Probe(sim_pid=os.getpid(), vault_pid=os.getpid(), vault_requests=lambda: 7)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_contender_that_dies_before_its_work_is_a_result_with_an_error(tmp_path: Path) -> None:
    run = run_child(
        _python("import sys; print('half-way', file=sys.stderr); sys.exit(3)"),
        name="dies",
        workdir=tmp_path,
        probe=_probe(),
        markers=["start", "end"],
    )
    assert run.exit_code == 3
    assert run.error is not None
    assert "start, end" in run.error
    assert run.span("start", "end") is None
    assert "half-way" in run.log_tail()


def test_markers_are_sampled_on_pipes_and_on_a_terminal(tmp_path: Path) -> None:
    code = (
        "import sys, time; "
        "print('ready' if sys.stderr.isatty() else 'piped', file=sys.stderr, flush=True); "
        "print('mark:one', file=sys.stderr, flush=True); "
        "sum(range(2_000_000)); "
        "print('mark:two', file=sys.stderr, flush=True); print('out')"
    )
    for use_pty, seen in ((False, "piped"), (True, "ready")):
        run = run_child(
            _python(code),
            name=f"marks-{use_pty}",
            workdir=tmp_path,
            probe=_probe(),
            markers=["mark:one", "mark:two"],
            use_pty=use_pty,
        )
        assert run.error is None, run.error
        span = run.span("mark:one", "mark:two")
        assert span is not None
        assert span.vault_requests == 0
        assert span.wall_s >= 0
        assert run.peak_rss_mb > 0
        assert seen in run.log_path.read_text(encoding="utf-8")


def test_the_report_prints_when_a_contender_died() -> None:
    report = Report(plan={"clusters": 10, "regions": ["a"], "latency_ms": 20, "rss_clusters": 1})
    report.contenders["rotator"] = Contender(label="rotator", clusters=10)
    report.contenders["sdk_one_cert"] = Contender(
        label="SDK, one-cert CA", clusters=10, error="killed after 600 s", log_tail="boom"
    )
    text = render(report)
    assert "SDK, one-cert CA died: killed after 600 s" in text
    assert "n/a" in text  # the targets that cannot be judged say so


def test_openbao_request_counters_are_summed() -> None:
    page = (
        "# TYPE vault_core_handle_request summary\n"
        'vault_core_handle_request{quantile="0.5"} 1.3\n'
        "vault_core_handle_request_count 8\n"
        "vault_core_handle_login_request_count 2\n"
    )
    assert parse_request_count(page) == 10
    assert parse_request_count("go_goroutines 5\n") is None


def _config(**extra: str) -> RotatorConfig:
    return RotatorConfig(
        vault_addr="https://127.0.0.1:1",
        vault_ca="ca.pem",
        vault_token_file="token",
        sim_base_url="https://127.0.0.1:2",
        sim_ca="ca.pem",
        access_key_id="id",
        access_key_secret_file="secret",
        regions=("cn-hangzhou",),
        root_path="ehpc/root",
        vnc_path="bench/x/vnc",
        runs_path="bench/x/runs",
        **extra,  # type: ignore[arg-type]
    )


def test_the_rotator_config_sets_the_vault_transport_only_when_asked(tmp_path: Path) -> None:
    default = tomllib.loads(_config().write(tmp_path / "a.toml").read_text(encoding="utf-8"))
    assert "transport" not in default["vault"]  # rotator's own default is what is measured
    hvac = _config(vault_transport="hvac").write(tmp_path / "b.toml")
    assert tomllib.loads(hvac.read_text(encoding="utf-8"))["vault"]["transport"] == "hvac"


def _span(*, wall_s: float, cpu_s: float, requests: int, vault_cpu_s: float) -> Span:
    return Span(
        wall_s=wall_s,
        client_cpu_s=cpu_s,
        vault_cpu_s=vault_cpu_s,
        sim_cpu_s=0.1,
        vault_requests=requests,
    )


def test_the_report_compares_the_hvac_transport_with_the_default() -> None:
    report = Report(plan={"clusters": 100, "regions": ["a"], "latency_ms": 20, "rss_clusters": 1})
    default = Contender(label="rotator", clusters=100, done=100, rotated=95)
    default.work = _span(wall_s=1.0, cpu_s=0.4, requests=500, vault_cpu_s=0.4)
    hvac = Contender(label="rotator, hvac", clusters=100, done=100, rotated=95)
    hvac.work = _span(wall_s=0.8, cpu_s=0.6, requests=450, vault_cpu_s=0.3)
    # Requests are compared over the whole process (the work window's edges cut a few).
    default.whole = _span(wall_s=2.0, cpu_s=1.0, requests=600, vault_cpu_s=0.5)
    hvac.whole = _span(wall_s=2.0, cpu_s=1.0, requests=600, vault_cpu_s=0.5)
    report.contenders["rotator"] = default
    report.contenders["rotator_hvac"] = hvac
    text = render(report)
    section = text[text.index("Vault transport") :]
    assert "client CPU per rotation" in section
    assert "1.50x" in section  # hvac / aiohttp client CPU: 6.00 / 4.00 ms
    assert "1.25x" in section  # rotations/s: 125 / 100
    assert "0.75x" in section  # OpenBao CPU per rotation: 3.00 / 4.00 ms
    assert "Vault requests per rotation  1.00x" in section
    assert "saves 33.3%" in section
    # The hvac run is not one of the unthrottled table's columns (it has its own section).
    assert text.index("rotator, hvac") > text.index("Vault transport")


def test_the_report_says_when_the_hvac_run_died() -> None:
    report = Report(plan={"clusters": 10, "regions": ["a"], "latency_ms": 20, "rss_clusters": 1})
    report.contenders["rotator_hvac"] = Contender(
        label="rotator, hvac", clusters=10, error="exit code 1 and no run summary"
    )
    text = render(report)
    assert "Vault transport" in text
    assert "rotator, hvac died: exit code 1" in text


def _run(label: str, cpu_s: float) -> Contender:
    """100 rotations at ``cpu_s`` of client CPU: ``10 * cpu_s`` ms per rotation."""
    run = Contender(label=label, clusters=100, done=100, rotated=95)
    run.work = _span(wall_s=1.0, cpu_s=cpu_s, requests=400, vault_cpu_s=0.2)
    return run


def _rounds_report(tty_cpu: list[float], binding_cpu: list[float]) -> Report:
    """Plain runs at 4 ms per rotation; terminal and binding runs as given, round by round."""
    report = Report(plan={"clusters": 100, "regions": ["a"], "latency_ms": 20, "rss_clusters": 1})
    report.contenders["rotator"] = _run("rotator", 0.4)
    report.tty = _run("rotator on a terminal", tty_cpu[0])
    report.limited = _run("rotator, binding limit", binding_cpu[0])
    for number, (tty, binding) in enumerate(zip(tty_cpu[1:], binding_cpu[1:], strict=True), 2):
        report.more_rounds.append(
            Round(
                order=round_order(number),
                plain=_run(f"rotator, round {number}", 0.4),
                tty=_run(f"rotator on a terminal, round {number}", tty),
                limited=_run(f"rotator, binding limit, round {number}", binding),
            )
        )
    return report


def _target(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(start))


def test_the_rounds_alternate_their_order() -> None:
    assert round_order(1) == ("plain", "tty", "binding")
    assert round_order(2) == ("binding", "plain", "tty")
    assert round_order(3) == ("tty", "binding", "plain")
    assert round_order(4) == round_order(1)
    assert round_order(2, ("plain", "tty")) == ("tty", "plain")


def test_a_ratio_over_rounds_prints_its_median_range_and_every_round() -> None:
    ratios = RoundRatios((1.20, 1.08, 1.12))
    line = summarise_rounds("client CPU per rotation at the binding limit vs unthrottled", ratios)
    assert line == (
        "client CPU per rotation at the binding limit vs unthrottled: median 1.12x over 3 rounds, "
        "1.08x-1.20x (round by round: 1.20x, 1.08x, 1.12x)"
    )
    died = summarise_rounds("x", RoundRatios((1.0, None, 1.3)))
    assert (
        died
        == "x: median 1.15x over 2 of 3 rounds, 1.00x-1.30x (round by round: 1.00x, died, 1.30x)"
    )
    assert summarise_rounds("x", RoundRatios((None,))) == "x: no round measured it"


def test_the_cpu_ratio_targets_are_judged_on_the_median_of_the_rounds() -> None:
    # Terminal: round 1 alone (1.20x) would fail; the median (1.08x) passes.
    # Binding: round 1 alone (1.05x) would pass; the median (1.15x) fails.
    report = _rounds_report(tty_cpu=[0.48, 0.42, 0.432], binding_cpu=[0.42, 0.46, 0.48])
    text = render(report)
    tty = _target(text, "terminal run's CPU per rotation")
    assert "(median of 3 rounds)" in tty
    assert "1.08x" in tty
    assert tty.endswith("PASS")
    binding = _target(text, "CPU per rotation at a binding limit")
    assert "(median of 3 rounds)" in binding
    assert "1.15x" in binding
    assert binding.endswith("FAIL")
    assert "on a terminal vs plain: median 1.08x over 3 rounds, 1.05x-1.20x" in text
    assert "at the binding limit vs unthrottled: median 1.15x over 3 rounds, 1.05x-1.20x" in text
    # Round 1's own section still prints round 1's ratio.
    assert "4.80 vs 4.00 ms: 1.20x" in text
    data = report.to_json()
    assert data["round_ratios"]["binding_over_free_cpu"]["median"] == pytest.approx(1.15)
    assert data["round_ratios"]["tty_over_plain_cpu"]["per_round"] == pytest.approx(
        [1.2, 1.05, 1.08]
    )
    assert len(data["more_rounds"]) == 2


def test_a_round_whose_run_died_is_reported_and_the_median_uses_the_rest() -> None:
    report = _rounds_report(tty_cpu=[0.4, 0.4, 0.4], binding_cpu=[0.4, 0.4, 0.48])
    report.more_rounds[0].plain = Contender(
        label="rotator, round 2", clusters=100, error="killed after 600 s"
    )
    text = render(report)
    assert "rotator, round 2 died: killed after 600 s" in text
    assert "median 1.10x over 2 of 3 rounds" in text  # binding: 1.00x and 1.20x
    assert "(median of 2 of 3 rounds)" in _target(text, "CPU per rotation at a binding limit")


def test_one_round_keeps_the_single_ratio_and_no_rounds_section() -> None:
    report = _rounds_report(tty_cpu=[0.48], binding_cpu=[0.42])
    text = render(report)
    assert "CPU ratios over" not in text
    tty = _target(text, "terminal run's CPU per rotation")
    assert "median" not in tty
    assert "1.20x" in tty
    assert tty.endswith("FAIL")
