"""The run summary: partial failure as a value.

    summary = RunSummary.build(run_id=..., started_at=..., finished_at=..., outcomes=outcomes)
    summary.status            # RunStatus.PART_FAILURE
    summary.exit_code         # 3
    print(summary.to_json())  # for --report and Vault ehpc/runs/<run_id>
    console.print(summary.table())

Nothing in here ever holds a password: outcomes carry codes, counts and RequestIds only.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["ClusterOutcome", "Outcome", "OutcomeCode", "RunStatus", "RunSummary", "Verified"]


class Outcome(enum.StrEnum):
    ROTATED = "rotated"
    SKIPPED = "skipped"
    FAILED = "failed"
    COMMIT_FAILED = "commit_failed"
    """The API changed the password but Vault could not record it as current; it is safe in
    Vault as ``pending_password`` and the next run finishes the job."""
    NOT_ATTEMPTED = "not_attempted"
    PENDING = "pending"
    """Stopped with a password that may be live on the cluster but is not committed (e.g. the
    cluster stopped, or the run was interrupted mid-call); it is kept in Vault's pending record
    and the next run re-applies and commits it."""


class OutcomeCode(enum.StrEnum):
    """The engine's own reasons (API and Vault error codes are reported as they come)."""

    ALREADY_ROTATED = "AlreadyRotated"
    """A password generated after this trigger is already committed (by us or a rival)."""
    CLAIMED_ELSEWHERE = "ClaimedElsewhere"
    """Another rotator holds a live claim on the cluster past our deadline."""
    INTERRUPTED = "Interrupted"
    """SIGTERM/SIGINT (the run's stop event) ended the rotation."""
    NOT_DUE = "NotDue"
    CHECKED_OUT = "CheckedOut"
    """Due, but held: the password is checked out (a lease is open) until the lease ends."""
    CLUSTER_NOT_RUNNING = "ClusterNotRunning"
    REGION_UNKNOWN = "RegionUnknown"
    INVALID_REGION = "InvalidRegion"
    INVALID_GENERATED_PASSWORD = "InvalidGeneratedPassword"  # noqa: S105 - a code, not a secret
    COMMIT_FAILED = "CommitFailed"
    STAGE_CONFLICTS = "StageConflicts"
    """Lost check-and-set races again and again: somebody else keeps rotating this cluster."""
    PENDING_PASSWORD_REFUSED = "PendingPasswordRefused"  # noqa: S105 - a code, not a secret
    """The API refuses a pending password that an earlier attempt may have applied: kept, and
    a person checks which password the cluster has."""


class Verified(enum.StrEnum):
    """Whether a VNC client authenticated with the new password (``verify.enabled``)."""

    NOT_CHECKED = "not_checked"
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    """No answer about the password (unreachable, timeout, refused first): a warning."""
    VERIFY_FAILED = "verify_failed"
    """The VNC server refused the password the API accepted: an error (run PartFailure)."""


class RunStatus(enum.StrEnum):
    SUCCESS = "Success"
    PART_FAILURE = "PartFailure"
    FAILURE = "Failure"

    @property
    def exit_code(self) -> int:
        return {"Success": 0, "PartFailure": 3, "Failure": 4}[self.value]


@dataclass(frozen=True, slots=True)
class ClusterOutcome:
    cluster_id: str
    region: str
    outcome: Outcome
    code: str | None = None
    """The last error code (or the reason a cluster was skipped)."""
    message: str | None = None
    attempts: int = 0
    request_id: str | None = None
    duration: float = 0.0
    account_wide: bool = False
    """The error would fail every cluster of the account (NotAuthorized, InDebt, bad AccessKey)."""
    verified: Verified = Verified.NOT_CHECKED
    verify_code: str | None = None
    """Why the VNC check did not say ``verified`` (VncAuthFailed, VncUnreachable, ...)."""
    verify_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "region": self.region,
            "outcome": self.outcome.value,
            "code": self.code,
            "message": self.message,
            "attempts": self.attempts,
            "request_id": self.request_id,
            "duration_s": round(self.duration, 3),
            "account_wide": self.account_wide,
            "verified": self.verified.value,
            "verify_code": self.verify_code,
            "verify_message": self.verify_message,
        }


_BAD = (Outcome.FAILED, Outcome.COMMIT_FAILED, Outcome.NOT_ATTEMPTED, Outcome.PENDING)
_HARD = (Outcome.FAILED, Outcome.COMMIT_FAILED, Outcome.NOT_ATTEMPTED)


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    started_at: datetime
    finished_at: datetime
    outcomes: tuple[ClusterOutcome, ...]
    stopped_reason: str | None = None
    """Why the run stopped early (failure threshold, account error, signal), if it did."""
    api_calls: int = 0
    trigger: str = "manual"
    counts: Mapping[str, int] = field(default_factory=dict)
    verification: Mapping[str, int] = field(default_factory=dict)
    """Clusters per VNC check result (all ``not_checked`` when verify is off)."""
    rate_limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per rate scope (region, ``account``): configured and effective rate, Throttling count."""

    @classmethod
    def build(
        cls,
        *,
        run_id: str,
        started_at: datetime,
        finished_at: datetime,
        outcomes: Iterable[ClusterOutcome],
        stopped_reason: str | None = None,
        api_calls: int = 0,
        trigger: str = "manual",
        rate_limits: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> RunSummary:
        ordered = tuple(sorted(outcomes, key=lambda o: (o.region, o.cluster_id)))
        tally = Counter(o.outcome.value for o in ordered)
        counts = {o.value: tally.get(o.value, 0) for o in Outcome}
        checks = Counter(o.verified.value for o in ordered)
        return cls(
            run_id=run_id,
            started_at=started_at,
            finished_at=finished_at,
            outcomes=ordered,
            stopped_reason=stopped_reason,
            api_calls=api_calls,
            trigger=trigger,
            counts=counts,
            verification={v.value: checks.get(v.value, 0) for v in Verified},
            rate_limits=dict(rate_limits or {}),
        )

    @property
    def status(self) -> RunStatus:
        bad = sum(self.counts.get(o.value, 0) for o in _BAD)
        bad += self.verification.get(Verified.VERIFY_FAILED.value, 0)
        if bad == 0:
            return RunStatus.SUCCESS
        hard = sum(self.counts.get(o.value, 0) for o in _HARD)
        if hard and self.counts.get(Outcome.ROTATED.value, 0) == 0:
            return RunStatus.FAILURE
        return RunStatus.PART_FAILURE

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    @property
    def duration(self) -> float:
        return max(0.0, (self.finished_at - self.started_at).total_seconds())

    @property
    def rotations_per_second(self) -> float:
        rotated = self.counts.get(Outcome.ROTATED.value, 0)
        return rotated / self.duration if self.duration > 0 else 0.0

    def failures_by_code(self) -> dict[str, list[ClusterOutcome]]:
        groups: dict[str, list[ClusterOutcome]] = {}
        for outcome in self.outcomes:
            if outcome.outcome in _BAD:
                groups.setdefault(outcome.code or "Unknown", []).append(outcome)
            elif outcome.verified is Verified.VERIFY_FAILED:
                groups.setdefault(outcome.verify_code or "VerifyFailed", []).append(outcome)
        return dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "status": self.status.value,
            "exit_code": self.exit_code,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round(self.duration, 3),
            "rotations_per_second": round(self.rotations_per_second, 2),
            "api_calls": self.api_calls,
            "stopped_reason": self.stopped_reason,
            "rate_limits": {scope: dict(rate) for scope, rate in self.rate_limits.items()},
            "counts": dict(self.counts),
            "verification": dict(self.verification),
            "total": len(self.outcomes),
            "failures": {
                code: [
                    {
                        "cluster_id": o.cluster_id,
                        "region": o.region,
                        "outcome": o.outcome.value,
                        "attempts": o.attempts,
                        "request_id": o.request_id,
                        "message": o.message
                        if o.verified is not Verified.VERIFY_FAILED
                        else o.verify_message,
                    }
                    for o in group
                ]
                for code, group in self.failures_by_code().items()
            },
            "clusters": [o.to_dict() for o in self.outcomes],
        }

    def to_vault_record(self) -> dict[str, Any]:
        """The report as stored at ``<runs_path>/<run_id>``.

        Vault and OpenBao refuse JSON bodies with too many strings, so the per-cluster list is
        one compact JSON string of ``[cluster_id, region, outcome, code, attempts, request_id]``
        rows rather than thousands of objects.
        """
        record = {k: v for k, v in self.to_dict().items() if k not in ("clusters", "failures")}
        record["failures"] = {code: len(group) for code, group in self.failures_by_code().items()}
        record["clusters_columns"] = "cluster_id,region,outcome,code,attempts,request_id,verified"
        record["clusters"] = json.dumps(
            [
                [
                    o.cluster_id,
                    o.region,
                    o.outcome.value,
                    o.code,
                    o.attempts,
                    o.request_id,
                    o.verified.value,
                ]
                for o in self.outcomes
            ],
            separators=(",", ":"),
        )
        return record

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def log_fields(self) -> dict[str, Any]:
        """The one structured log event of a finished run: counts, not the per-cluster list."""
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "counts": dict(self.counts),
            "verification": dict(self.verification),
            "duration_s": round(self.duration, 3),
            "rotations_per_second": round(self.rotations_per_second, 2),
            "failures": {code: len(group) for code, group in self.failures_by_code().items()},
            "stopped_reason": self.stopped_reason,
        }

    def table(self, *, max_rows_per_code: int = 10, root_path: str = "secret/ehpc/root") -> Table:
        """A terminal table: counts, then failures grouped by code, each with what to do.

        An account-wide error (a wrong AccessKey secret, NotAuthorized...) is one row saying what
        is wrong, not a list of clusters and RequestIds; a per-cluster one names the fix with the
        real path (``fix secret/ehpc/root/ehpc-hz-1``).
        """
        from rich.markup import escape  # noqa: PLC0415 - rich is heavy; only terminals need it
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=f"Run {self.run_id}: {self.status.value}", show_lines=False)
        table.add_column("outcome / code")
        table.add_column("clusters", justify="right")
        table.add_column("detail")
        for name, count in self.counts.items():
            if count:
                table.add_row(name, str(count), "")
        for name, count in self.verification.items():
            if count and name != Verified.NOT_CHECKED.value:
                table.add_row(f"VNC {name}", str(count), "")
        for code, group in self.failures_by_code().items():
            table.add_row(
                f"[red]{escape(code)}[/red]",
                str(len(group)),
                # Messages come from servers: a "[...]" in them is text, never rich markup.
                escape(_detail(code, group, max_rows_per_code, root_path)),
            )
        table.caption = (
            f"{len(self.outcomes)} clusters in {self.duration:.1f}s, "
            f"{self.rotations_per_second:.1f} rotations/s, {self.api_calls} API calls"
            + (f"; stopped early: {self.stopped_reason}" if self.stopped_reason else "")
            + self._throttled_caption()
        )
        return table

    def _throttled_caption(self) -> str:
        """Scopes the server throttled, with the rate the limiter settled on."""
        parts = [
            f"{scope} {rate.get('configured')} -> {rate.get('effective')} "
            f"({rate.get('throttled')} Throttling)"
            for scope, rate in self.rate_limits.items()
            if rate.get("throttled")
        ]
        return f"; rate lowered: {', '.join(parts)}" if parts else ""

    def __str__(self) -> str:
        counts = ", ".join(
            [f"{k}={v}" for k, v in self.counts.items() if v]
            + [
                f"{k}={v}"
                for k, v in self.verification.items()
                if v and k != Verified.NOT_CHECKED.value
            ]
        )
        return f"{self.status.value} ({counts or 'no clusters'}) in run {self.run_id}"


def _state(outcome: ClusterOutcome) -> str:
    if outcome.verified is Verified.VERIFY_FAILED:
        return f"{outcome.outcome.value}, {outcome.verified.value}"
    return outcome.outcome.value


# Per-cluster codes whose fix is an edit of the cluster's root credential in Vault.
_ROOT_FIXES = {
    "IncorrectCredential": "the root password in Vault is wrong: fix {path}",
    "RootCredentialMissing": "no root credential: store it at {path}",
    "RootCredentialInvalid": "fix {path}",
    "RegionUnknown": "add region=<region> to {path}",
}


def _account_hint(code: str, group: list[ClusterOutcome]) -> str | None:
    """What is wrong with the account, once, when the error would fail every cluster."""
    if not any(o.account_wide for o in group):
        return None
    from rotator.ehpc.codes import CODES  # noqa: PLC0415

    info = CODES.get(code)
    hint = info.hint if info else (group[0].message or code)
    ids = ", ".join(o.cluster_id for o in group[:3]) + (", ..." if len(group) > 3 else "")
    return f"{hint} (account-wide: affects every cluster; seen on {ids})"


def _detail(code: str, group: list[ClusterOutcome], limit: int, root_path: str) -> str:
    account = _account_hint(code, group)
    if account:
        return account
    if code == "RunStopped":  # not started: the reason matters, not the list
        return f"not started: {group[0].message}"
    shown = group[:limit]
    fix = _ROOT_FIXES.get(code)
    if fix:
        paths = ", ".join(f"{root_path}/{o.cluster_id}" for o in shown)
        text = fix.format(path=paths)
    else:
        text = ", ".join(
            f"{o.cluster_id} ({_state(o)}, {o.attempts} tries"
            + (f", req {o.request_id}" if o.request_id else "")
            + ")"
            for o in shown
        )
    if len(group) > len(shown):
        text += f", +{len(group) - len(shown)} more (--json lists all)"
    return text
