"""Pure parts of the engine: rate limits, retry schedules, the failure threshold, the summary."""

from __future__ import annotations

import asyncio
import json
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from rotator.config import RetrySettings
from rotator.engine.batch import FailureThreshold
from rotator.engine.ratelimit import RateLimit, RegionLimiter
from rotator.engine.report import ClusterOutcome, Outcome, RunStatus, RunSummary
from rotator.engine.retry import Backoff, RetryPolicy
from rotator.errors import (
    AmbiguousApiError,
    ConfigError,
    RetryableApiError,
    TerminalApiError,
    ThrottledError,
    VaultUnavailableError,
)

# -- RateLimit / RegionLimiter ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "calls", "period"),
    [
        ("200/60s", 200, 60.0),
        ("5/1s", 5, 1.0),
        ("10/s", 10, 1.0),
        (" 3 / 2m ", 3, 120.0),
        ("100/500ms", 100, 0.5),
        ("1000/1h", 1000, 3600.0),
    ],
)
def test_rate_limit_parse(text: str, calls: int, period: float) -> None:
    rate = RateLimit.parse(text)
    assert (rate.calls, rate.period) == (calls, period)
    assert rate.per_second == pytest.approx(calls / period)


@pytest.mark.parametrize("text", ["junk", "", "5", "/1s", "5/1x", "0/1s", "5/0s", "-5/1s"])
def test_rate_limit_parse_rejects_junk_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimit.parse(text, key="ehpc.rate_limits.cn-beijing")
    assert info.value.key == "ehpc.rate_limits.cn-beijing"
    assert "ehpc.rate_limits.cn-beijing" in str(info.value)


def test_rate_limit_default_key() -> None:
    with pytest.raises(ConfigError, match=r"ehpc\.rate_limit\b"):
        RateLimit.parse("fast please")


def test_region_limiter_overrides() -> None:
    limiter = RegionLimiter(RateLimit.parse("5/1s"), {"cn-beijing": "200/60s"})
    assert limiter.rate_for("cn-beijing") == RateLimit(200, 60.0)
    assert limiter.rate_for("cn-hangzhou") == RateLimit(5, 1.0)


def test_region_limiter_bad_override_names_the_region() -> None:
    with pytest.raises(ConfigError) as info:
        RegionLimiter(RateLimit.parse("5/1s"), {"cn-shanghai": "lots"})
    assert info.value.key == "ehpc.rate_limits.cn-shanghai"


@pytest.mark.asyncio
async def test_region_limiter_holds_each_region_to_its_rate() -> None:
    # 2 calls per 100 ms: the 5th call in a region cannot start before ~200 ms; another region
    # has its own budget and is not held up by the first. Virtual time: no wall-clock guesses.
    now = 0.0

    def clock() -> float:
        return now

    async def sleep(seconds: float) -> None:
        nonlocal now
        now += max(seconds, 0.0)
        await asyncio.sleep(0)

    limiter = RegionLimiter(RateLimit.parse("2/100ms"), clock=clock, sleep=sleep)
    for _ in range(5):
        async with limiter.slot("cn-hangzhou"):
            pass
    busy_region = now
    started = now
    await asyncio.gather(limiter.acquire("cn-beijing"), limiter.acquire("cn-beijing"))
    other_region = now - started
    assert busy_region >= 0.2
    assert other_region < 0.1


# -- RetryPolicy ------------------------------------------------------------------------------


class _TopRandom(random.Random):
    """Always draws the top of the range, so a schedule's ceiling is observable."""

    def uniform(self, a: float, b: float) -> float:
        return b


GENERAL = Backoff(attempts=4, initial_wait=1.0, max_wait=5.0)
CONFLICT = Backoff(attempts=3, initial_wait=30.0, max_wait=100.0)
THROTTLE = Backoff(attempts=6, initial_wait=2.0, max_wait=8.0)
VAULT = Backoff(attempts=2, initial_wait=0.25, max_wait=1.0)


def _policy(rng: random.Random | None = None) -> RetryPolicy:
    return RetryPolicy(
        general=GENERAL,
        conflict=CONFLICT,
        throttle=THROTTLE,
        vault=VAULT,
        rng=rng or _TopRandom(),
    )


def test_terminal_errors_are_not_retried() -> None:
    error = TerminalApiError("wrong root password", code="IncorrectCredential")
    assert _policy().delay_after(error, attempt=1) is None


def test_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    policy = _policy()
    error = RetryableApiError("try later", code="ServiceUnavailable")
    delays = [policy.delay_after(error, attempt=n) for n in range(1, 6)]
    assert delays == [1.0, 2.0, 4.0, None, None]


def test_ambiguous_errors_retry_on_the_general_schedule() -> None:
    error = AmbiguousApiError("dropped", code="ConnectionDropped")
    assert _policy().delay_after(error, attempt=3) == 4.0
    assert _policy().delay_after(error, attempt=4) is None


def test_conflict_opt_uses_the_conflict_schedule() -> None:
    policy = _policy()
    conflict = RetryableApiError("busy", code="ConflictOpt")
    assert policy.delay_after(conflict, attempt=1) == 30.0
    assert policy.delay_after(conflict, attempt=2) == 60.0
    assert policy.delay_after(conflict, attempt=3) is None
    # The general schedule would have allowed a 3rd retry: the schedules are really separate.
    assert policy.delay_after(RetryableApiError("x", code="AgentError"), attempt=3) == 4.0


def test_throttling_uses_its_schedule_without_retry_after() -> None:
    policy = _policy()
    error = ThrottledError("slow down", code="Throttling.User")
    assert [policy.delay_after(error, attempt=n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 8.0]
    assert policy.delay_after(error, attempt=6) is None


def test_throttling_honours_retry_after_with_a_little_jitter() -> None:
    policy = _policy(random.Random(7))
    error = ThrottledError("slow down", code="Throttling.User", retry_after=3.0)
    delays = [policy.delay_after(error, attempt=1) for _ in range(200)]
    assert all(d is not None and 3.0 <= d <= 3.3 for d in delays)
    # Even a huge retry_after is honoured, not cut to the schedule's max_wait.
    long_wait = ThrottledError("slow down", code="Throttling.User", retry_after=60.0)
    delay = policy.delay_after(long_wait, attempt=1)
    assert delay is not None
    assert 60.0 <= delay <= 61.0
    assert policy.delay_after(long_wait, attempt=6) is None


def test_vault_errors_use_the_vault_schedule() -> None:
    policy = _policy()
    error = VaultUnavailableError("sealed")
    assert policy.delay_after(error, attempt=1) == 0.25
    assert policy.delay_after(error, attempt=2) is None


def test_full_jitter_stays_within_the_ceiling() -> None:
    policy = _policy(random.Random(1234))
    error = RetryableApiError("try later", code="ServiceUnavailable")
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0)):
        delays = [policy.delay_after(error, attempt=attempt) for _ in range(500)]
        values = [d for d in delays if d is not None]
        assert len(values) == 500
        assert all(0.0 <= d <= ceiling for d in values)
        # Full jitter: spread over the whole range, not bunched at the ceiling.
        assert min(values) < ceiling * 0.1
        assert max(values) > ceiling * 0.9


def test_seeded_rng_gives_reproducible_delays() -> None:
    error = RetryableApiError("try later", code="ServiceUnavailable")
    first, again = _policy(random.Random(5)), _policy(random.Random(5))
    draws = [first.delay_after(error, attempt=2) for _ in range(20)]
    assert draws == [again.delay_after(error, attempt=2) for _ in range(20)]
    assert len(set(draws)) == 20


def test_policy_from_settings() -> None:
    settings = RetrySettings(
        attempts=3,
        initial_wait=0.1,
        max_wait=0.4,
        conflict_attempts=9,
        conflict_initial_wait=7.0,
        conflict_max_wait=70.0,
        throttle_attempts=4,
        throttle_initial_wait=1.5,
        throttle_max_wait=6.0,
        vault_attempts=2,
    )
    policy = RetryPolicy.from_settings(settings)
    assert policy.general == Backoff(3, 0.1, 0.4)
    assert policy.conflict == Backoff(9, 7.0, 70.0)
    assert policy.throttle == Backoff(4, 1.5, 6.0)
    assert policy.vault.attempts == 2


# -- FailureThreshold -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "total", "limit"),
    [
        ("5", 100, 5),
        ("10%", 37, 4),
        ("10%", 100, 10),
        ("1%", 10, 1),  # at least one
        ("100%", 8, 8),
        (" 25 % ", 10, 3),
        ("", 10, None),
        (None, 10, None),
    ],
)
def test_failure_threshold_parse(text: str | None, total: int, limit: int | None) -> None:
    assert FailureThreshold.parse(text, total).limit == limit


@pytest.mark.parametrize("text", ["0", "abc", "150%", "2.5", "-3", "5 failures", "%"])
def test_failure_threshold_rejects_bad_values(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        FailureThreshold.parse(text, 37)
    assert info.value.key == "rotation.max_failures"


def test_failure_threshold_reached() -> None:
    threshold = FailureThreshold.parse("10%", 37)
    assert not threshold.reached(3)
    assert threshold.reached(4)
    assert threshold.reached(5)
    unlimited = FailureThreshold.parse("", 37)
    assert not unlimited.reached(10_000)


# -- RunSummary -------------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def _o(cluster_id: str, outcome: Outcome, code: str | None = None, **kw: Any) -> ClusterOutcome:
    return ClusterOutcome(
        cluster_id=cluster_id, region="cn-hangzhou", outcome=outcome, code=code, **kw
    )


def _summary(*outcomes: ClusterOutcome, seconds: float = 10.0, **kw: Any) -> RunSummary:
    return RunSummary.build(
        run_id="run-42",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=seconds),
        outcomes=outcomes,
        **kw,
    )


def test_summary_success() -> None:
    summary = _summary(_o("c-1", Outcome.ROTATED), _o("c-2", Outcome.SKIPPED, "NotRunning"))
    assert summary.status is RunStatus.SUCCESS
    assert summary.exit_code == 0
    assert summary.counts == {
        "rotated": 1,
        "skipped": 1,
        "failed": 0,
        "commit_failed": 0,
        "not_attempted": 0,
        "pending": 0,
    }
    assert summary.failures_by_code() == {}


def test_summary_part_failure() -> None:
    summary = _summary(_o("c-1", Outcome.ROTATED), _o("c-2", Outcome.FAILED, "AgentError"))
    assert summary.status is RunStatus.PART_FAILURE
    assert summary.exit_code == 3


@pytest.mark.parametrize("bad", [Outcome.FAILED, Outcome.COMMIT_FAILED, Outcome.NOT_ATTEMPTED])
def test_summary_failure_when_nothing_rotated(bad: Outcome) -> None:
    summary = _summary(_o("c-1", bad, "X"), _o("c-2", Outcome.SKIPPED, "NotRunning"))
    assert summary.status is RunStatus.FAILURE
    assert summary.exit_code == 4


def test_empty_run_is_a_success() -> None:
    assert _summary().status is RunStatus.SUCCESS


def _mixed() -> RunSummary:
    return _summary(
        _o("c-1", Outcome.ROTATED, request_id="R-1"),
        _o("c-2", Outcome.ROTATED),
        _o("c-3", Outcome.FAILED, "ConflictOpt", attempts=8, request_id="R-3"),
        _o("c-4", Outcome.FAILED, "IncorrectCredential", attempts=1, request_id="R-4"),
        _o("c-5", Outcome.NOT_ATTEMPTED, "ThresholdReached"),
        _o("c-6", Outcome.NOT_ATTEMPTED, "ThresholdReached"),
        _o("c-7", Outcome.NOT_ATTEMPTED, "ThresholdReached"),
        _o("c-8", Outcome.COMMIT_FAILED, "VaultUnavailable", attempts=6),
        _o("c-9", Outcome.FAILED, "ConflictOpt", attempts=8),
        _o("c-10", Outcome.SKIPPED, "NotRunning"),
        stopped_reason="failure threshold 4 reached",
        api_calls=25,
    )


def test_failures_grouped_by_code_largest_first() -> None:
    groups = _mixed().failures_by_code()
    assert list(groups) == [
        "ThresholdReached",
        "ConflictOpt",
        "IncorrectCredential",
        "VaultUnavailable",
    ]
    assert [o.cluster_id for o in groups["ConflictOpt"]] == ["c-3", "c-9"]
    # Skipped clusters are not failures.
    assert all("c-10" not in [o.cluster_id for o in g] for g in groups.values())


def test_to_dict_counts_failures_and_rate() -> None:
    data = _mixed().to_dict()
    assert data["status"] == "PartFailure"
    assert data["exit_code"] == 3
    assert data["total"] == 10
    assert data["counts"]["not_attempted"] == 3
    assert data["rotations_per_second"] == 0.2
    assert data["stopped_reason"] == "failure threshold 4 reached"
    assert data["failures"]["IncorrectCredential"][0]["request_id"] == "R-4"
    assert data["failures"]["ConflictOpt"][0]["attempts"] == 8
    json.dumps(data)  # serialisable as is


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value} | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_report_has_no_password_like_key() -> None:
    summary = _mixed()
    for document in (summary.to_dict(), summary.to_vault_record(), summary.log_fields()):
        keys = _keys(document)
        assert keys  # the walk found something
        assert not [k for k in keys if re.search(r"pass|secret|token", k, re.IGNORECASE)]


def test_table_renders_counts_and_failures() -> None:
    console = Console(record=True, width=200, color_system=None)
    console.print(_mixed().table(max_rows_per_code=2))
    text = console.export_text()
    assert "Run run-42: PartFailure" in text
    assert "rotated" in text
    assert "IncorrectCredential" in text
    assert "fix secret/ehpc/root/c-4" in text  # the fix, with the real path (issue 10 §6)
    assert "+1 more" in text  # three ThresholdReached, two shown
    assert "10 clusters in 10.0s" in text
    assert "stopped early: failure threshold 4 reached" in text


def test_vault_record_is_compact() -> None:
    record = _mixed().to_vault_record()
    assert isinstance(record["clusters"], str)
    rows = json.loads(record["clusters"])
    assert (
        record["clusters_columns"] == "cluster_id,region,outcome,code,attempts,request_id,verified"
    )
    assert ["c-3", "cn-hangzhou", "failed", "ConflictOpt", 8, "R-3", "not_checked"] in rows
    assert len(rows) == 10
    assert " " not in record["clusters"]
    assert record["failures"] == {
        "ThresholdReached": 3,
        "ConflictOpt": 2,
        "IncorrectCredential": 1,
        "VaultUnavailable": 1,
    }
    # Flat: Vault refuses bodies with too many strings, so no per-cluster objects here.
    assert all(not isinstance(v, list) for v in record.values())


def test_str_is_one_readable_line() -> None:
    assert str(_mixed()) == (
        "PartFailure (rotated=2, skipped=1, failed=3, commit_failed=1, not_attempted=3) "
        "in run run-42"
    )


def test_regions_are_interleaved_so_every_regions_rate_limit_is_used() -> None:
    from rotator.engine.batch import interleave_regions
    from rotator.engine.rotation import Target

    targets = [Target(f"{r}-{i}", r) for r in ("a", "b", "c") for i in range(3)] + [
        Target("a-3", "a")
    ]

    mixed = [t.cluster_id for t in interleave_regions(targets)]

    assert mixed == ["a-0", "b-0", "c-0", "a-1", "b-1", "c-1", "a-2", "b-2", "c-2", "a-3"]


# -- one backoff curve, the code table, the engine's dependencies ----------------------------


def test_one_exponential_curve_capped() -> None:
    from rotator.engine.retry import exponential

    assert [exponential(n, 0.5, 3.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert exponential(10_000, 1.0, 30.0) == 30.0  # no overflow for a long outage
    assert exponential(0, 1.0, 30.0) == 1.0


@pytest.mark.parametrize(
    ("code", "status", "applied", "schedule"),
    [
        ("AgentError", 403, True, "general"),
        ("ExecFail", 403, True, "general"),
        ("UnknownError", 500, True, "general"),
        ("SomethingNew", 502, True, "general"),  # an unknown 5xx may come after the change
        ("ConflictOpt", 403, False, "conflict"),
        ("Throttling.User", 400, False, "throttle"),
        ("Throttling.Brand.New", 400, False, "throttle"),
        ("ConnectionFailed", None, False, "general"),  # never connected: nothing sent
        ("SignatureNonceUsed", 400, False, "general"),
    ],
)
def test_the_code_table_says_what_may_have_applied_and_which_schedule(
    code: str, status: int | None, applied: bool, schedule: str
) -> None:
    from rotator.ehpc.codes import info_for

    info = info_for(code, status)
    assert (info.may_have_applied, info.schedule.value) == (applied, schedule)


def test_the_engine_imports_neither_vault_nor_config() -> None:
    import ast
    from pathlib import Path

    import rotator.engine

    folder = Path(rotator.engine.__file__).parent
    # runtime.py is the wiring: it builds the Vault store and reads the config for the rest.
    for path in sorted(folder.glob("*.py")):
        name = path.name
        if name == "runtime.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        bad = {m for m in imported if m.startswith(("rotator.vault", "rotator.config"))}
        assert not bad, f"engine/{name} imports {bad}"
