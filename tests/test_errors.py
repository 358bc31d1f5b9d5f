"""The error hierarchy: every code reaches the class its retry class promises."""

from __future__ import annotations

import pytest

from rotator.ehpc.codes import CODES, error_for_code, info_for
from rotator.errors import (
    AmbiguousApiError,
    ApiError,
    ConfigError,
    ErrorScope,
    RetryableApiError,
    RetryClass,
    RotatorError,
    TerminalApiError,
    ThrottledError,
    VaultConflictError,
    VaultError,
    VaultPermissionError,
    VaultUnavailableError,
)

_CLASS_FOR = {
    RetryClass.RETRYABLE: RetryableApiError,
    RetryClass.TERMINAL: TerminalApiError,
    RetryClass.AMBIGUOUS: AmbiguousApiError,
}


@pytest.mark.parametrize(
    ("cls", "retry_class"),
    [
        (RotatorError, RetryClass.TERMINAL),
        (ConfigError, RetryClass.TERMINAL),
        (RetryableApiError, RetryClass.RETRYABLE),
        (ThrottledError, RetryClass.RETRYABLE),
        (TerminalApiError, RetryClass.TERMINAL),
        (AmbiguousApiError, RetryClass.AMBIGUOUS),
        (VaultUnavailableError, RetryClass.RETRYABLE),
        (VaultPermissionError, RetryClass.TERMINAL),
        (VaultConflictError, RetryClass.TERMINAL),
    ],
)
def test_each_class_has_its_retry_class(cls: type[RotatorError], retry_class: RetryClass) -> None:
    error = cls("boom")
    assert error.retry_class is retry_class
    assert isinstance(error, RotatorError)


def test_hierarchy_shape() -> None:
    assert issubclass(ThrottledError, RetryableApiError)
    for api_cls in (RetryableApiError, TerminalApiError, AmbiguousApiError):
        assert issubclass(api_cls, ApiError)
    for vault_cls in (VaultUnavailableError, VaultPermissionError, VaultConflictError):
        assert issubclass(vault_cls, VaultError)
    assert not issubclass(ConfigError, ApiError)


@pytest.mark.parametrize("code", sorted(CODES))
def test_error_for_every_documented_code(code: str) -> None:
    info = CODES[code]
    error = error_for_code(
        code,
        "server says no",
        http_status=info.http_status,
        cluster_id="ehpc-hz-abc",
        request_id="REQ-1",
    )
    assert isinstance(error, _CLASS_FOR[info.retry_class])
    assert error.retry_class is info.retry_class
    assert error.code == code
    assert error.http_status == info.http_status
    assert error.scope is info.scope
    assert error.cluster_id == "ehpc-hz-abc"
    assert error.request_id == "REQ-1"
    # The server's message and the hint for a person both survive.
    assert "server says no" in error.message
    assert info.hint in error.message
    assert isinstance(error, ThrottledError) == code.startswith("Throttling")


def test_account_wide_codes_have_account_scope() -> None:
    for code in (
        "NotEnabled",
        "InDebt",
        "NotAuthorized",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
    ):
        assert CODES[code].scope is ErrorScope.ACCOUNT, code
    for code in ("ConflictOpt", "IncorrectCredential", "ClusterNotFound", "ServiceUnavailable"):
        assert CODES[code].scope is ErrorScope.CLUSTER, code


def test_documented_statuses_and_classes() -> None:
    # The table in shared/ehpc-api.md, spot-checked: what a caller may do depends on it.
    expected = {
        "InvalidParams": (400, RetryClass.TERMINAL),
        "IncorrectCredential": (403, RetryClass.TERMINAL),
        "ConflictOpt": (403, RetryClass.RETRYABLE),
        "AgentError": (403, RetryClass.RETRYABLE),
        "InvalidClusterStatus": (403, RetryClass.TERMINAL),
        "ClusterNotFound": (404, RetryClass.TERMINAL),
        "NotAuthorized": (407, RetryClass.TERMINAL),
        "UnknownError": (500, RetryClass.RETRYABLE),
        "ServiceUnavailable": (503, RetryClass.RETRYABLE),
        "Throttling.User": (400, RetryClass.RETRYABLE),
    }
    for code, (status, retry_class) in expected.items():
        assert (CODES[code].http_status, CODES[code].retry_class) == (status, retry_class), code


def test_unknown_5xx_code_is_retryable() -> None:
    error = error_for_code("Gateway.Oops", "", http_status=502)
    assert isinstance(error, RetryableApiError)
    assert not isinstance(error, ThrottledError)
    assert error.http_status == 502
    assert error.code == "Gateway.Oops"
    assert error.message  # the hint stands in for an empty server message


def test_unknown_4xx_code_is_terminal() -> None:
    error = error_for_code("Some.NewCode", "nope", http_status=400)
    assert isinstance(error, TerminalApiError)
    assert info_for("Some.NewCode", None).retry_class is RetryClass.TERMINAL


def test_unknown_throttling_variant_is_throttled_with_retry_after() -> None:
    error = error_for_code("Throttling.Region", "slow down", http_status=400, retry_after=2.5)
    assert isinstance(error, ThrottledError)
    assert error.retry_after == 2.5


def test_str_names_code_cluster_request_and_status() -> None:
    error = error_for_code(
        "ClusterNotFound", "gone", http_status=404, cluster_id="ehpc-sh-1", request_id="RID-9"
    )
    text = str(error)
    assert text.startswith("ClusterNotFound: gone")
    assert "cluster=ehpc-sh-1" in text
    assert "request_id=RID-9" in text
    assert "http_status=404" in text
    assert repr(error).startswith("TerminalApiError(")
    assert "ClusterNotFound" in repr(error)


def test_str_leaves_out_what_is_unknown() -> None:
    text = str(RetryableApiError("no route", code="ConnectionFailed"))
    assert text == "ConnectionFailed: no route"


def test_config_error_names_its_key() -> None:
    error = ConfigError("must be >= 1", key="rotation.concurrency")
    assert error.key == "rotation.concurrency"
    assert str(error) == "ConfigError: rotation.concurrency: must be >= 1"
    assert ConfigError("plain").key is None


def test_explicit_retry_class_overrides_the_default() -> None:
    error = ApiError("x", code="CredentialsUnavailable", retry_class=RetryClass.TERMINAL)
    assert error.retry_class is RetryClass.TERMINAL
    assert error.scope is ErrorScope.CLUSTER
