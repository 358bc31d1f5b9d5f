"""The VNC check's place in the engine: outcome fields, run status, hooks, metrics, config."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from rotator.config import RetrySettings, load_settings
from rotator.ehpc.client import _first_login_node
from rotator.engine.ports import Hooks, NoHooks, RotationStore
from rotator.engine.ratelimit import RateLimit, RegionLimiter
from rotator.engine.report import ClusterOutcome, Outcome, RunStatus, RunSummary, Verified
from rotator.engine.retry import RetryPolicy
from rotator.engine.rotation import RotationContext, Target
from rotator.engine.runtime import validate_settings, verification_from
from rotator.engine.verification import Verification, VerificationHooks
from rotator.errors import ConfigError, VaultUnavailableError
from rotator.passwords import LocalPasswordSource
from rotator.secret import Secret
from rotator.serve.metrics import ServeMetrics
from rotator.vault.store import RootCredential, VncState
from rotator.verify import VerifyResult, VerifyStatus
from tests.support.fake_api import FakeApi

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _o(
    cluster_id: str, outcome: Outcome, verified: Verified, code: str | None = None
) -> ClusterOutcome:
    return ClusterOutcome(
        cluster_id=cluster_id,
        region="cn-hangzhou",
        outcome=outcome,
        verified=verified,
        verify_code=code,
        verify_message="refused; rotate again" if code else None,
    )


def _summary(*outcomes: ClusterOutcome) -> RunSummary:
    return RunSummary.build(run_id="r", started_at=NOW, finished_at=NOW, outcomes=outcomes)


def test_verify_failed_makes_the_run_part_failure_and_is_grouped_under_its_code() -> None:
    summary = _summary(
        _o("c-1", Outcome.ROTATED, Verified.VERIFIED),
        _o("c-2", Outcome.ROTATED, Verified.VERIFY_FAILED, "VncAuthFailed"),
        _o("c-3", Outcome.SKIPPED, Verified.NOT_CHECKED),
    )
    assert summary.status is RunStatus.PART_FAILURE
    assert summary.exit_code == 3
    assert [o.cluster_id for o in summary.failures_by_code()["VncAuthFailed"]] == ["c-2"]
    data = summary.to_dict()
    assert data["verification"] == {
        "not_checked": 1,
        "verified": 1,
        "unverified": 0,
        "verify_failed": 1,
    }
    assert data["failures"]["VncAuthFailed"][0]["message"] == "refused; rotate again"
    assert [c["verified"] for c in data["clusters"]] == ["verified", "verify_failed", "not_checked"]
    assert "verify_failed=1" in str(summary)


def test_unverified_is_a_warning_only() -> None:
    summary = _summary(_o("c-1", Outcome.ROTATED, Verified.UNVERIFIED, "VncUnreachable"))
    assert summary.status is RunStatus.SUCCESS
    assert summary.failures_by_code() == {}


@dataclass(slots=True)
class _Store:
    """The two reads the check makes, and the status a refused password records."""

    password: Secret | None = field(default_factory=lambda: Secret("ab12cd"))
    fail: bool = False
    reads: int = 0
    with_pending: list[bool] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    async def read_vnc(self, cluster_id: str, *, pending: bool = True) -> VncState:
        self.reads += 1
        self.with_pending.append(pending)
        if self.fail:
            raise VaultUnavailableError("sealed", code="VaultSealed")
        return VncState(cluster_id=cluster_id, version=3, password=self.password)

    async def read_root(self, cluster_id: str) -> RootCredential:
        return RootCredential(cluster_id, "root", Secret("r00tpass"), "cn-hangzhou")

    async def update_status(self, cluster_id: str, **values: Any) -> None:
        self.statuses.append({"cluster_id": cluster_id, **values})


@dataclass(slots=True)
class _Verifier:
    result: VerifyResult | Exception = field(
        default_factory=lambda: VerifyResult(VerifyStatus.VERIFIED)
    )
    calls: list[dict[str, Any]] = field(default_factory=list)
    needs_host: bool = False

    async def verify(
        self, *, cluster_id: str, region: str, host: str | None, password: Secret
    ) -> VerifyResult:
        self.calls.append({"cluster_id": cluster_id, "host": host, "password": password})
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class _Hooks(NoHooks):
    def __init__(self) -> None:
        self.seen: list[ClusterOutcome] = []

    def verification(self, outcome: ClusterOutcome) -> None:
        self.seen.append(outcome)


def _ctx(store: _Store, hooks: Hooks | None = None) -> RotationContext:
    return RotationContext(
        api=FakeApi.with_clusters(1),
        store=cast(RotationStore, store),
        passwords=LocalPasswordSource(),
        limiter=RegionLimiter(RateLimit.parse("5/1s")),
        retry=RetryPolicy.from_settings(RetrySettings()),
        owner="test",
        not_before=NOW,
        hooks=hooks or NoHooks(),
    )


ROTATED = ClusterOutcome(cluster_id="c-1", region="cn-hangzhou", outcome=Outcome.ROTATED)
TARGET = Target("c-1", "cn-hangzhou")


@pytest.mark.asyncio
async def test_only_rotated_clusters_are_checked_with_the_password_vault_holds() -> None:
    store, verifier, hooks = _Store(), _Verifier(), _Hooks()
    check = Verification(verifier)
    skipped = replace(ROTATED, outcome=Outcome.SKIPPED)
    assert await check.check(skipped, TARGET, _ctx(store, hooks)) == skipped
    assert verifier.calls == []
    result = await check.check(ROTATED, TARGET, _ctx(store, hooks))
    assert result.verified is Verified.VERIFIED
    assert verifier.calls == [{"cluster_id": "c-1", "host": None, "password": Secret("ab12cd")}]
    assert hooks.seen == [result]


@pytest.mark.asyncio
async def test_a_crashing_verifier_or_an_unreadable_vault_leaves_the_rotation_unverified() -> None:
    crashing = Verification(_Verifier(result=RuntimeError("bug")))
    result = await crashing.check(ROTATED, TARGET, _ctx(_Store()))
    assert (result.outcome, result.verified, result.verify_code) == (
        Outcome.ROTATED,
        Verified.UNVERIFIED,
        "VerifierError",
    )
    sealed = await Verification(_Verifier()).check(ROTATED, TARGET, _ctx(_Store(fail=True)))
    assert (sealed.verified, sealed.verify_code) == (Verified.UNVERIFIED, "VaultSealed")


@pytest.mark.asyncio
async def test_a_refused_password_is_verify_failed_and_the_metric_counts_it() -> None:
    metrics = ServeMetrics()
    failed = VerifyResult(VerifyStatus.VERIFY_FAILED, "VncAuthFailed", "refused")
    store = _Store()
    result = await Verification(_Verifier(result=failed)).check(
        ROTATED, TARGET, _ctx(store, metrics)
    )
    assert (result.outcome, result.verified) == (Outcome.ROTATED, Verified.VERIFY_FAILED)
    # The next scheduled run must not skip it as rotated: it is recorded as failed.
    assert store.statuses == [
        {"cluster_id": ROTATED.cluster_id, "status": "failed", "last_error_code": "VncAuthFailed"}
    ]
    value = metrics.registry.get_sample_value(
        "rotator_vnc_verifications_total", {"result": "verify_failed", "code": "VncAuthFailed"}
    )
    assert value == 1.0


def _settings(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "rotator.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ={})


def test_verify_settings_and_vnc_host(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        '[verify]\nenabled = true\nurl = "wss://{host}:12016/"\ntimeout = "5s"\n'
        '[inventory]\nclusters = [{ id = "c-1", vnc_host = "10.0.0.5" }]\n',
    )
    assert settings.verify.timeout == 5.0
    verification = verification_from(settings)
    assert verification is not None
    assert dict(verification.hosts) == {"c-1": "10.0.0.5"}
    assert verification_from(_settings(tmp_path, "")) is None  # off by default


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[verify]\nenabled = true\nurl = "https://{host}/"\n', "verify.url"),
        ('[verify]\nenabled = true\nurl = "wss://{node}:1/"\n', "verify.url"),
        ('[verify]\nenabled = true\nca_bundle = "/nonexistent/ca.pem"\n', "verify.ca_bundle"),
        ('[verify]\nenabled = true\ntimeout = "0s"\n', "verify.timeout"),
    ],
)
def test_bad_verify_settings_fail_at_start(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_settings(_settings(tmp_path, text))
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("value", "node"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("login0, login1", "login0"),
        ('["10.0.0.7", "10.0.0.8"]', "10.0.0.7"),
        (["n1", "n2"], "n1"),
        ("", ""),
        (None, ""),
        (7, ""),
    ],
)
def test_first_login_node(value: object, node: str) -> None:
    assert _first_login_node(value) == node


@pytest.mark.asyncio
async def test_the_check_reads_only_the_committed_record() -> None:
    """Review after the wave-2 merge: the check read the pending record too (a second Vault
    request per verified rotation) although it only uses the committed password."""
    store = _Store()
    await Verification(_Verifier()).check(ROTATED, TARGET, _ctx(store))
    assert store.with_pending == [False]


@pytest.mark.asyncio
async def test_a_verify_failed_cluster_is_left_failed_so_the_next_rotate_redoes_it() -> None:
    """Review after the wave-2 merge: a verify_failed cluster (Vault's password does not open
    its VNC) kept status ``rotated``, so the ``rotator rotate --cluster`` its message
    recommends skipped it as NotDue. Its status is now ``failed`` with the check's code:
    due for the next run (tests/integration/test_verify_rotation.py shows it end to end)."""
    store = _Store()
    failed = VerifyResult(VerifyStatus.VERIFY_FAILED, "VncAuthFailed", "refused")
    await Verification(_Verifier(result=failed)).check(ROTATED, TARGET, _ctx(store))
    assert [(s["status"], s["last_error_code"]) for s in store.statuses] == [
        ("failed", "VncAuthFailed")
    ]
    # A verified (or unverified: no answer) rotation keeps the status the commit wrote.
    ok = _Store()
    await Verification(_Verifier()).check(ROTATED, TARGET, _ctx(ok))
    unverified = VerifyResult(VerifyStatus.UNVERIFIED, "VncUnreachable", "no answer")
    await Verification(_Verifier(result=unverified)).check(ROTATED, TARGET, _ctx(ok))
    assert ok.statuses == []


def test_a_batch_passes_verification_results_on_to_the_run_hooks() -> None:
    # run_batch wraps the run's hooks to count Vault failures; the wrapper must still pass the
    # optional verification hook on, or the daemon's rotator_vnc_verifications never counts.
    from rotator.engine.batch import _CountingHooks, _State

    metrics = ServeMetrics()
    hooks = _CountingHooks(metrics, _State(), lambda: None)
    assert isinstance(hooks, VerificationHooks)
    failed = VerifyResult(VerifyStatus.VERIFY_FAILED, "VncAuthFailed", "refused")
    outcome = replace(ROTATED, verified=Verified.VERIFY_FAILED, verify_code=failed.code)
    hooks.verification(outcome)
    value = metrics.registry.get_sample_value(
        "rotator_vnc_verifications_total", {"result": "verify_failed", "code": "VncAuthFailed"}
    )
    assert value == 1.0
