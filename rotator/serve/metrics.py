"""Prometheus metrics of the daemon, in a registry of its own (tests run many daemons).

    metrics = ServeMetrics()
    async with open_runtime(settings, hooks=metrics) as runtime: ...   # the engine's Hooks
    metrics.trigger("webhook")
    body, content_type = metrics.render()

Labels carry error codes, regions and outcomes, never cluster ids (unbounded) or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rotator.engine.report import ClusterOutcome

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServeMetrics:
    """Implements :class:`rotator.engine.ports.Hooks`; also counts triggers and runs."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rotations = Counter(
            "rotator_rotations",
            "Cluster rotations by outcome and error code",
            ["outcome", "code"],
            registry=r,
        )
        self.api_latency = Histogram(
            "rotator_api_request_seconds",
            "ModifyVisualServicePasswd latency by region and answer code (OK on success)",
            ["region", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "rotator_retries", "Retries of a cluster's rotation by error code", ["code"], registry=r
        )
        self.vault_errors = Counter(
            "rotator_vault_errors", "Vault errors seen by the engine, by code", ["code"], registry=r
        )
        self.triggers = Counter(
            "rotator_triggers", "Triggers received, by source", ["source"], registry=r
        )
        self.runs = Counter("rotator_runs", "Finished batch runs by status", ["status"], registry=r)
        self.queue_depth = Gauge(
            "rotator_queue_depth", "Clusters waiting for the next batch", registry=r
        )
        self.seconds_until_next_due = Gauge(
            "rotator_seconds_until_next_due",
            "Seconds until the next lease expires (-1: nothing scheduled)",
            registry=r,
        )
        self.ready = Gauge("rotator_ready", "1 when /readyz answers 200", registry=r)
        self.rate_limit = Gauge(
            "rotator_rate_limit_calls_per_second",
            "Effective API rate per rate scope (region or account), lowered after Throttling",
            ["scope"],
            registry=r,
        )

    # -- engine hooks -----------------------------------------------------------------------

    def api_call(self, *, region: str, code: str | None, seconds: float) -> None:
        self.api_latency.labels(region=region or "unknown", code=code or "OK").observe(seconds)

    def retry(self, *, cluster_id: str, code: str, delay: float) -> None:
        self.retries.labels(code=code).inc()

    def outcome(self, outcome: ClusterOutcome) -> None:
        self.rotations.labels(outcome=outcome.outcome.value, code=outcome.code or "").inc()

    def vault_error(self, *, code: str) -> None:
        self.vault_errors.labels(code=code).inc()

    # -- daemon -----------------------------------------------------------------------------

    def trigger(self, source: str, count: int = 1) -> None:
        self.triggers.labels(source=source).inc(count)

    def run_finished(self, status: str) -> None:
        self.runs.labels(status=status).inc()

    def rate_limits(self, rates: Mapping[str, Mapping[str, Any]]) -> None:
        """Set the rate gauge from a run summary's ``rate_limits``."""
        for scope, rate in rates.items():
            value = rate.get("effective_per_second")
            if isinstance(value, int | float):
                self.rate_limit.labels(scope=scope).set(value)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
