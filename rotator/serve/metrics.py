"""Prometheus metrics of the daemon, in a registry of its own (tests run many daemons).

    metrics = ServeMetrics()
    async with open_runtime(settings, hooks=metrics) as runtime: ...   # the engine's Hooks
    metrics.trigger("webhook")
    body, content_type = metrics.render()

Labels carry error codes, regions and outcomes, never secrets; cluster ids only on the
password-age series, which the inventory bounds (one per cluster, dropped when it leaves).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rotator.ehpc.codes import CODES
from rotator.engine.report import ClusterOutcome, Outcome
from rotator.errors import RotatorError
from rotator.vault.store import parse_time

__all__ = ["PasswordAges", "ServeMetrics", "bounded_code", "known_codes"]

# Codes the engine and clients set on outcomes without an exception class of their own.
_ENGINE_CODES = frozenset(
    {
        "AlreadyRotated",
        "ClaimedElsewhere",
        "ConnectionFailed",
        "CredentialsUnavailable",
        "Interrupted",
        "InvalidGeneratedPassword",
        "InvalidPathSegment",
        "InvalidResponse",
        "NotDue",
        "NothingPending",
        "PasswordPolicyBroken",
        "PasswordPolicyMissing",
        "RegionUnknown",
        "RootCredentialInvalid",
        "RootCredentialMissing",
        "TLSError",
        "VaultAuthFailed",
        "VaultClientClosed",
        "VaultClientError",
        "VaultInvalidRequest",
        "VaultTlsError",
        "VaultTokenInvalid",
    }
)


def _error_class_codes() -> set[str]:
    found: set[str] = set()
    todo: list[type[RotatorError]] = [RotatorError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo.extend(cls.__subclasses__())
    return found


def known_codes() -> frozenset[str]:
    """Every code a metric label may carry; anything else is counted as ``other``."""
    return frozenset(CODES) | _ENGINE_CODES | _error_class_codes()


def bounded_code(code: str | None, known: frozenset[str], *, empty: str) -> str:
    """A server-chosen code must not grow a label's cardinality without bound."""
    if not code:
        return empty
    return code if code in known else "other"


_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServeMetrics:
    """Implements :class:`rotator.engine.ports.Hooks`; also counts triggers and runs."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._codes = known_codes()
        r = self.registry
        self._init_operations(clock)
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
        self.verifications = Counter(
            "rotator_vnc_verifications",
            "VNC checks of new passwords (verify.enabled) by result and code",
            ["result", "code"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "rotator_queue_depth", "Clusters waiting for the next batch", registry=r
        )
        self.seconds_until_next_due = Gauge(
            "rotator_seconds_until_next_due",
            "Seconds until the next lease expires (-1: nothing scheduled)",
            registry=r,
        )
        self.ready = Gauge("rotator_ready", "1 when /readyz answers 200", registry=r)
        self.checkout_leases_open = Gauge(
            "rotator_checkout_leases_open", "Open check-out leases (all clusters)", registry=r
        )
        self.checkout_leases_overdue = Gauge(
            "rotator_checkout_leases_overdue",
            "Clusters whose last lease ended and whose password is not rotated yet",
            registry=r,
        )
        self.checkout_rotations_held = Gauge(
            "rotator_checkout_rotations_held",
            "Clusters whose due period rotation waits for an open check-out lease to end",
            registry=r,
        )
        self.checkout_rotation_failures = Counter(
            "rotator_checkout_rotation_failures",
            "Lease-end rotations that failed (each is retried with backoff)",
            registry=r,
        )
        self.rate_limit = Gauge(
            "rotator_rate_limit_calls_per_second",
            "Effective API rate per rate scope (region or account), lowered after Throttling",
            ["scope"],
            registry=r,
        )

    # -- engine hooks -----------------------------------------------------------------------

    def api_call(self, *, region: str, code: str | None, seconds: float) -> None:
        label = bounded_code(code, self._codes, empty="OK")
        self.api_latency.labels(region=region or "unknown", code=label).observe(seconds)

    def retry(self, *, cluster_id: str, code: str, delay: float) -> None:
        self.retries.labels(code=bounded_code(code, self._codes, empty="")).inc()

    def outcome(self, outcome: ClusterOutcome) -> None:
        code = bounded_code(outcome.code, self._codes, empty="")
        self.rotations.labels(outcome=outcome.outcome.value, code=code).inc()
        if outcome.outcome is Outcome.ROTATED:
            self.password_ages.rotated(outcome.cluster_id)

    def vault_error(self, *, code: str) -> None:
        self.vault_errors.labels(code=bounded_code(code, self._codes, empty="")).inc()

    def verification(self, outcome: ClusterOutcome) -> None:
        """The engine's optional VerificationHooks: one VNC check's result."""
        self.verifications.labels(
            result=outcome.verified.value, code=outcome.verify_code or ""
        ).inc()

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

    # -- operations: build info and password age (deploy/kubernetes/prometheusrule.yaml) -------

    def _init_operations(self, clock: Callable[[], float]) -> None:
        try:
            release = version("rotator")
        except PackageNotFoundError:  # a source tree that was never installed
            release = "unknown"
        self.build_info = Gauge(
            "rotator_build_info",
            "Always 1; the labels say which rotator and Python run",
            ["version", "python"],
            registry=self.registry,
        )
        self.build_info.labels(version=release, python=platform.python_version()).set(1)
        self.password_ages = PasswordAges(clock)
        self.registry.register(self.password_ages)

    def load_password_ages(self, metadata: Mapping[str, Mapping[str, str]]) -> None:
        """Every inventory cluster's ``last_rotated_at`` (the vnc secret's status view), replacing
        what was known: called when the daemon reloads its schedule."""
        self.password_ages.load(metadata)


class PasswordAges(Collector):
    """``rotator_password_age_seconds{cluster_id}``, computed at scrape time so an alert sees
    a password grow old even when nothing happens; the last-rotation timestamps and a count of
    clusters never rotated go with it. (No region label: the daemon's inventory does not always
    know it, and a label that appears later would split a cluster's series in two.)"""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._rotated: dict[str, float] = {}
        self._never: set[str] = set()

    def load(self, metadata: Mapping[str, Mapping[str, str]]) -> None:
        rotated: dict[str, float] = {}
        never: set[str] = set()
        for cluster_id, meta in metadata.items():
            when = parse_time(meta.get("last_rotated_at"))
            if when is None:
                never.add(cluster_id)
            else:
                rotated[cluster_id] = when.timestamp()
        self._rotated, self._never = rotated, never

    def rotated(self, cluster_id: str) -> None:
        self._rotated[cluster_id] = self._clock()
        self._never.discard(cluster_id)

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        age = GaugeMetricFamily(
            "rotator_password_age_seconds",
            "Seconds since the cluster's VNC password was last rotated",
            labels=["cluster_id"],
        )
        last = GaugeMetricFamily(
            "rotator_password_last_rotated_timestamp_seconds",
            "Unix time of the cluster's last rotation",
            labels=["cluster_id"],
        )
        for cluster_id, when in sorted(self._rotated.items()):
            age.add_metric([cluster_id], max(0.0, now - when))
            last.add_metric([cluster_id], when)
        yield age
        yield last
        yield GaugeMetricFamily(
            "rotator_passwords_never_rotated",
            "Inventory clusters with no rotation recorded in Vault",
            value=len(self._never),
        )
