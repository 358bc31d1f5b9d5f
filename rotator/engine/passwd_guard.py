"""Run-level judgement on Passwd rejections: is it this password, or is our rule out of date?

    guard = PasswdRejections(rule)                       # one per run
    error = guard.record("ehpc-hz-1", api_error)         # None: retry with a fresh password
    if error is not None:
        raise error                                      # account-wide: stop the run

Every password we send complies with ``passwords.rule``. When the API still answers
``InvalidParams`` about ``Passwd`` for two different clusters, the API's rule is not the one we
follow (it has changed before: 8-30 characters once, 6 letters and digits now), so every cluster
would fail the same way: better stop the run once, naming the setting, than burn every retry.
"""

from __future__ import annotations

from rotator.errors import ApiError, ErrorScope, TerminalApiError
from rotator.passwords import CURRENT_RULE, LEGACY_RULE, PasswordRule

__all__ = ["PASSWD_RULE_MISMATCH", "PasswdRejections"]

PASSWD_RULE_MISMATCH = "PasswdRuleMismatch"  # noqa: S105 - an error code


class PasswdRejections:
    """The clusters whose rule-compliant password the API refused, in one run."""

    __slots__ = ("_clusters", "rule", "threshold")

    def __init__(self, rule: PasswordRule = CURRENT_RULE, *, threshold: int = 2) -> None:
        self.rule = rule
        self.threshold = threshold
        self._clusters: set[str] = set()

    def record(self, cluster_id: str, error: ApiError) -> ApiError | None:
        """Note one refusal; the account-wide error to stop with once ``threshold`` clusters
        saw one, else None (the caller drops that password and tries a fresh one)."""
        self._clusters.add(cluster_id)
        if len(self._clusters) < self.threshold:
            return None
        other = LEGACY_RULE if self.rule is not LEGACY_RULE else CURRENT_RULE
        return TerminalApiError(
            f"the API refused passwords that follow passwords.rule = {self.rule.name!r} "
            f"({self.rule.summary}) on {len(self._clusters)} clusters: its Passwd rule has "
            f"changed. Set passwords.rule to the rule the API enforces now (e.g. "
            f"passwords.rule = {other.name!r}: {other.summary}; "
            "with passwords.source = 'vault' the password policy too) and run again",
            code=PASSWD_RULE_MISMATCH,
            cluster_id=cluster_id,
            request_id=error.request_id,
            http_status=error.http_status,
            scope=ErrorScope.ACCOUNT,
        )
