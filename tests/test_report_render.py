"""The run summary as people read it (issue 10 §6): the fix, named once, never cut off."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rotator.commands import console
from rotator.engine.report import ClusterOutcome, Outcome, RunSummary

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
LONG_ID = "ehpc-hz-" + "a1b2c3d4e5" * 4


def _summary(outcomes: list[ClusterOutcome], stopped: str | None = None) -> RunSummary:
    return RunSummary.build(
        run_id="20261201T020000Z-abc123",
        started_at=T0,
        finished_at=T0,
        outcomes=outcomes,
        stopped_reason=stopped,
    )


def _render(summary: RunSummary) -> str:
    out = io.StringIO()  # not a terminal
    console(out).print(summary.table(root_path="secret/ehpc/root"))
    return out.getvalue()


def test_a_wrong_root_password_names_the_real_path_to_fix() -> None:
    text = _render(
        _summary(
            [
                ClusterOutcome(LONG_ID, "cn-hangzhou", Outcome.FAILED, "IncorrectCredential"),
                ClusterOutcome("ehpc-hz-2", "cn-hangzhou", Outcome.ROTATED),
            ]
        )
    )
    assert f"fix secret/ehpc/root/{LONG_ID}" in text


def test_an_account_wide_error_is_reported_once_as_what_is_wrong() -> None:
    failed = [
        ClusterOutcome(
            f"ehpc-hz-{i}",
            "cn-hangzhou",
            Outcome.FAILED,
            "SignatureDoesNotMatch",
            request_id=f"REQ-{i:04d}",
            account_wide=True,
        )
        for i in range(30)
    ]
    text = _render(_summary(failed, stopped="SignatureDoesNotMatch affects every cluster"))
    assert "the AccessKey secret is wrong" in text
    assert text.count("REQ-") == 0


def test_off_a_terminal_nothing_is_truncated_or_wrapped_at_80_columns() -> None:
    outcomes = [
        ClusterOutcome(f"{LONG_ID}-{i}", "cn-hangzhou", Outcome.FAILED, "ServiceUnavailable")
        for i in range(5)
    ]
    text = _render(_summary(outcomes))
    for i in range(5):
        assert f"{LONG_ID}-{i}" in text
    assert "…" not in text
    assert any(len(line) > 80 for line in text.splitlines())  # one long row, not wrapped


def test_server_text_with_brackets_is_shown_as_text() -> None:
    outcome = ClusterOutcome(
        "ehpc-hz-1",
        "cn-hangzhou",
        Outcome.FAILED,
        "Forbidden.SomethingNew",
        message="[/red] denied by [policy] x",
        account_wide=True,
    )
    text = _render(_summary([outcome]))
    assert "[/red] denied by [policy] x" in text
