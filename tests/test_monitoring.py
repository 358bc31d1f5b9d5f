"""Monitoring: build info, per-cluster password age, and the shipped alert rules and
ServiceMonitor, which may only name metrics rotator really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.engine.report import ClusterOutcome, Outcome
from rotator.serve.metrics import ServeMetrics

K8S = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
MONITORING = K8S / "monitoring"
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def samples(metrics: ServeMetrics) -> dict[str, list[Any]]:
    body, _ = metrics.render()
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_build_info_names_the_version() -> None:
    (info,) = samples(ServeMetrics())["rotator_build_info"]
    assert info.value == 1
    assert info.labels["version"] == "0.1.0"
    assert re.fullmatch(r"3\.\d+\.\d+", info.labels["python"])


def test_password_age_per_cluster_from_vault_metadata_and_outcomes() -> None:
    clock = [NOW.timestamp()]
    metrics = ServeMetrics(clock=lambda: clock[0])
    metrics.load_password_ages(
        {
            "c-1": {"last_rotated_at": (NOW - timedelta(days=40)).isoformat()},
            "c-2": {"last_rotated_at": (NOW - timedelta(hours=1)).isoformat()},
            "c-3": {"status": "failed"},
        }
    )
    found = {s.labels["cluster_id"]: s for s in samples(metrics)["rotator_password_age_seconds"]}
    assert found["c-1"].value == pytest.approx(40 * 86400)
    assert found["c-1"].labels == {"cluster_id": "c-1"}
    assert found["c-2"].value == pytest.approx(3600)
    assert "c-3" not in found
    (never,) = samples(metrics)["rotator_passwords_never_rotated"]
    assert never.value == 1

    clock[0] += 60
    metrics.outcome(ClusterOutcome("c-1", "cn-hangzhou", Outcome.ROTATED))
    metrics.outcome(ClusterOutcome("c-3", "cn-hangzhou", Outcome.FAILED, code="AgentError"))
    clock[0] += 30
    found = {s.labels["cluster_id"]: s for s in samples(metrics)["rotator_password_age_seconds"]}
    assert found["c-1"].value == pytest.approx(30)  # measured at scrape time
    assert found["c-2"].value == pytest.approx(3600 + 90)
    last = {
        s.labels["cluster_id"]: s.value
        for s in samples(metrics)["rotator_password_last_rotated_timestamp_seconds"]
    }
    assert last["c-1"] == pytest.approx(NOW.timestamp() + 60)

    # A reload that no longer lists a cluster drops its series.
    metrics.load_password_ages({"c-2": {"last_rotated_at": NOW.isoformat()}})
    left = {s.labels["cluster_id"] for s in samples(metrics)["rotator_password_age_seconds"]}
    assert left == {"c-2"}


# -- the shipped Prometheus objects -------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def exported_metric_names() -> set[str]:
    """Every series name rotator's /metrics can show (counters with their _total etc.)."""
    metrics = ServeMetrics()
    metrics.load_password_ages({"c-1": {"last_rotated_at": NOW.isoformat()}})
    metrics.outcome(ClusterOutcome("c-1", "r", Outcome.ROTATED))
    metrics.api_call(region="r", code=None, seconds=0.1)
    metrics.retry(cluster_id="c-1", code="X", delay=1)
    metrics.vault_error(code="X")
    metrics.trigger("lease")
    metrics.run_finished("Success")
    return set(samples(metrics))


def test_alert_rules_are_well_formed_and_use_only_real_metrics() -> None:
    rule = _load(MONITORING / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    groups = rule["spec"]["groups"]
    known = exported_metric_names()
    alerts = []
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"}
        assert group["name"]
        for entry in group["rules"]:
            assert set(entry) <= {"alert", "expr", "for", "labels", "annotations"}
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", entry["alert"])
            if "for" in entry:
                assert re.fullmatch(r"\d+[smhd]", entry["for"])
            assert entry["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description"} <= set(entry["annotations"])
            names = set(re.findall(r"\b(rotator_[a-z_]+)\b", entry["expr"]))
            assert names, entry["alert"]
            assert names <= known, f"{entry['alert']} names unknown metrics {names - known}"
            _balanced(entry["expr"])
            alerts.append(entry["alert"])
    assert {"RotatorPasswordTooOld", "RotatorDown", "RotatorRunsFailing"} <= set(alerts)


def _balanced(expr: str) -> None:
    depth = 0
    for char in expr:
        depth += {"(": 1, ")": -1, "{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, expr
    assert depth == 0, expr


def test_service_monitor_scrapes_the_serve_service_port() -> None:
    monitor = _load(MONITORING / "servicemonitor.yaml")
    service = _load(K8S / "service.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_the_monitoring_folder_renders_with_kustomize() -> None:
    kustomization = _load(MONITORING / "kustomization.yaml")
    present = {p.name for p in MONITORING.iterdir()} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == present
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: cannot render the monitoring folder")
    result = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    assert kinds == ["PrometheusRule", "ServiceMonitor"]
