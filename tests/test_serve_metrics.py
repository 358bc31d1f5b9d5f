"""Metric labels stay bounded whatever codes a server sends."""

from __future__ import annotations

from rotator.engine.report import ClusterOutcome, Outcome
from rotator.serve.metrics import ServeMetrics, known_codes


def _label_values(metrics: ServeMetrics, name: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in metrics.registry.collect()
        if family.name == name
        for sample in family.samples
        if label in sample.labels
    }


def test_unknown_codes_are_counted_as_other() -> None:
    metrics = ServeMetrics()
    for n in range(200):
        code = f"Made.Up.{n}"
        metrics.api_call(region="cn-hangzhou", code=code, seconds=0.1)
        metrics.retry(cluster_id="c-1", code=code, delay=1.0)
        metrics.vault_error(code=code)
        metrics.outcome(ClusterOutcome("c-1", "cn-hangzhou", Outcome.FAILED, code=code))
    metrics.api_call(region="cn-hangzhou", code="Throttling.User", seconds=0.1)
    metrics.api_call(region="cn-hangzhou", code=None, seconds=0.1)
    metrics.outcome(ClusterOutcome("c-2", "cn-hangzhou", Outcome.SKIPPED, code="AlreadyRotated"))
    metrics.vault_error(code="VaultCasConflict")
    assert _label_values(metrics, "rotator_api_request_seconds", "code") == {
        "other",
        "Throttling.User",
        "OK",
    }
    assert _label_values(metrics, "rotator_retries", "code") == {"other"}
    assert _label_values(metrics, "rotator_rotations", "code") == {"other", "AlreadyRotated"}
    assert _label_values(metrics, "rotator_vault_errors", "code") == {"other", "VaultCasConflict"}


def test_known_codes_cover_the_error_classes_and_the_api_table() -> None:
    codes = known_codes()
    assert {"VaultUnavailable", "ConfigError", "ConflictOpt", "ClaimedElsewhere"} <= codes
