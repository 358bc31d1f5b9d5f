"""The effective rate reaches the run summary (JSON, table, Vault record) and the metrics."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from rich.console import Console

from rotator.engine.ratelimit import RateLimit, RegionLimiter
from rotator.engine.report import RunSummary
from rotator.errors import ThrottledError
from rotator.serve.metrics import ServeMetrics


def throttled_limiter() -> RegionLimiter:
    limiter = RegionLimiter(RateLimit(100, 60.0))
    limiter.observe("cn-hangzhou", ThrottledError("slow", code="Throttling.User"), sent_at=None)
    limiter.rates()  # a scope that was never used does not show up
    return limiter


def summary_with(limiter: RegionLimiter) -> RunSummary:
    now = datetime.now(UTC)
    return RunSummary.build(
        run_id="r1", started_at=now, finished_at=now, outcomes=[], rate_limits=limiter.summary()
    )


def test_the_summary_shows_configured_and_effective_rates() -> None:
    summary = summary_with(throttled_limiter())
    rate = summary.to_dict()["rate_limits"]["cn-hangzhou"]
    assert rate["configured"] == "100/60s"
    assert rate["effective"] == "70/60s"
    assert rate["throttled"] == 1
    assert summary.to_vault_record()["rate_limits"]["cn-hangzhou"]["effective"] == "70/60s"

    console = Console(width=200, record=True)
    console.print(summary.table())
    text = " ".join(console.export_text().split())  # the caption wraps under a narrow table
    assert "rate lowered: cn-hangzhou 100/60s -> 70/60s (1 Throttling)" in text


def test_the_metrics_gauge_follows_the_summary() -> None:
    metrics = ServeMetrics(CollectorRegistry())
    metrics.rate_limits(summary_with(throttled_limiter()).rate_limits)
    value = metrics.registry.get_sample_value(
        "rotator_rate_limit_calls_per_second", {"scope": "cn-hangzhou"}
    )
    assert value is not None
    assert abs(value - 70 / 60) < 1e-3


def test_a_long_lived_limiter_reports_each_runs_own_throttling() -> None:
    limiter = throttled_limiter()
    start = limiter.throttle_counts()
    assert start == {"cn-hangzhou": 1}
    limiter.observe("cn-hangzhou", ThrottledError("slow", code="Throttling"), sent_at=None)
    limiter.observe("cn-hangzhou", ThrottledError("slow", code="Throttling"), sent_at=None)
    assert limiter.summary(since=start)["cn-hangzhou"]["throttled"] == 2
    assert limiter.summary()["cn-hangzhou"]["throttled"] == 3
