"""The E-HPC and OpenAPI-gateway error codes, and what each means for a caller.

One table drives both sides: the client turns an error response into the right exception, and the
simulator answers with the documented HTTP status for a code.
"""

from __future__ import annotations

from dataclasses import dataclass

from rotator.errors import (
    ApiError,
    ErrorScope,
    RetryableApiError,
    RetryClass,
    TerminalApiError,
    ThrottledError,
)

__all__ = ["CODES", "CodeInfo", "error_for_code", "info_for"]


@dataclass(frozen=True, slots=True)
class CodeInfo:
    http_status: int
    retry_class: RetryClass
    scope: ErrorScope
    hint: str
    """What a person should do about it."""


_R, _T = RetryClass.RETRYABLE, RetryClass.TERMINAL
_C, _A = ErrorScope.CLUSTER, ErrorScope.ACCOUNT

CODES: dict[str, CodeInfo] = {
    # E-HPC's own codes (see shared/ehpc-api.md).
    "InvalidParams": CodeInfo(400, _T, _C, "a request parameter was rejected"),
    "NotEnabled": CodeInfo(400, _T, _A, "enable the E-HPC service for this account"),
    "InDebt": CodeInfo(400, _T, _A, "the account has overdue payments; settle them"),
    "InvalidClusterStatus": CodeInfo(403, _T, _C, "the cluster is not running; retry when it is"),
    "ConflictOpt": CodeInfo(403, _R, _C, "another operation is running on the cluster"),
    "AgentError": CodeInfo(403, _R, _C, "the cluster-side agent failed; check the cluster"),
    "IncorrectCredential": CodeInfo(
        403, _T, _C, "the root password stored in Vault is wrong; fix ehpc/root/<ClusterId>"
    ),
    "ExecFail": CodeInfo(403, _T, _C, "the command failed on the cluster; check its logs"),
    "ClusterNotFound": CodeInfo(404, _T, _C, "no such cluster; remove it from the inventory"),
    "AliyunError": CodeInfo(406, _R, _C, "an Alibaba Cloud product error"),
    "NotAuthorized": CodeInfo(
        407, _T, _A, "the RAM identity lacks ehpc:ModifyVisualServicePasswd; grant the policy"
    ),
    "PartFailure": CodeInfo(409, _T, _C, "part of a batch operation failed"),
    "UnknownError": CodeInfo(500, _R, _C, "unknown server error"),
    "ServiceUnavailable": CodeInfo(503, _R, _C, "temporary server failure"),
    # Codes of the OpenAPI gateway in front of every product.
    "Throttling": CodeInfo(400, _R, _C, "flow control; lower the configured rate"),
    "Throttling.User": CodeInfo(400, _R, _C, "flow control; lower the configured rate"),
    "Throttling.Api": CodeInfo(400, _R, _C, "flow control; lower the configured rate"),
    # Account-wide gateway codes: every cluster would fail the same way, so the run stops.
    # HTTP statuses as the gateway sends them (shared/ehpc-api.md, the SDK's error handling).
    "SignatureDoesNotMatch": CodeInfo(
        400, _T, _A, "the AccessKey secret is wrong, or a proxy altered the request"
    ),
    "IncompleteSignature": CodeInfo(400, _T, _A, "the request signature is malformed"),
    "InvalidAccessKeyId.NotFound": CodeInfo(
        404, _T, _A, "the AccessKey ID does not exist; check the credentials"
    ),
    "InvalidAccessKeyId.Inactive": CodeInfo(
        400, _T, _A, "the AccessKey is disabled; enable it or configure an active one"
    ),
    "InvalidSecurityToken.Expired": CodeInfo(
        400, _T, _A, "the STS token expired and a refresh did not help; check the provider"
    ),
    "InvalidSecurityToken.Malformed": CodeInfo(
        400, _T, _A, "the STS security token is malformed; check the credential source"
    ),
    "InvalidSecurityToken.MismatchWithAccessKey": CodeInfo(
        400, _T, _A, "the STS token belongs to another AccessKey; check the credential source"
    ),
    "InvalidTimeStamp.Expired": CodeInfo(
        400, _T, _A, "the request time is over 15 min from the server's: check the clock (NTP)"
    ),
    "InvalidTimeStamp.Format": CodeInfo(
        400, _T, _A, "the request timestamp was not understood: check the clock and time zone"
    ),
    "Forbidden.RAM": CodeInfo(
        403,
        _T,
        _A,
        "the RAM identity may not call this action; grant ehpc:ModifyVisualServicePasswd",
    ),
    "NoPermission": CodeInfo(
        403, _T, _A, "the RAM identity lacks the permission; grant the rotator's RAM policy"
    ),
    "InvalidApi.NotFound": CodeInfo(
        404, _T, _A, "the endpoint does not offer this action: check ehpc.endpoint and the region"
    ),
    "MissingParameter": CodeInfo(400, _T, _C, "a required parameter is missing (a client bug)"),
    "SignatureNonceUsed": CodeInfo(400, _R, _C, "the signature nonce was reused"),
}

_MISSING = CodeInfo(400, _T, _C, "a required parameter is missing (a client bug; report it)")
_BAD_TOKEN = CodeInfo(400, _T, _A, "the STS security token was refused; check the provider")
_UNKNOWN_4XX = CodeInfo(400, _T, _C, "unrecognised client error")
_UNKNOWN_5XX = CodeInfo(500, _R, _C, "unrecognised server error")


def info_for(code: str, http_status: int | None = None) -> CodeInfo:
    """What a code means; an unknown code is judged by its HTTP status (5xx retryable)."""
    known = CODES.get(code)
    if known is not None:
        return known
    if code.startswith("Throttling"):
        return CODES["Throttling"]
    if code.startswith("Missing") and len(code) > len("Missing"):
        return _MISSING  # Missing<Name>: "<Name> is mandatory for this action."
    if code.startswith("InvalidSecurityToken."):
        return _BAD_TOKEN
    if http_status is not None and http_status >= 500:
        return _UNKNOWN_5XX
    return _UNKNOWN_4XX


def error_for_code(
    code: str,
    message: str,
    *,
    http_status: int | None,
    cluster_id: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> ApiError:
    """Build the exception for an error response."""
    info = info_for(code, http_status)
    text = f"{message} ({info.hint})" if message else info.hint
    common = {
        "code": code,
        "http_status": http_status,
        "cluster_id": cluster_id,
        "request_id": request_id,
        "scope": info.scope,
    }
    # Like the current SDK, an answer that says when to come back is retried then, whatever its
    # code; only a code we know to be terminal stays terminal.
    waits = retry_after is not None and (code not in CODES or info.retry_class is _R)
    if code.startswith("Throttling") or waits:
        return ThrottledError(text, retry_after=retry_after, **common)
    if info.retry_class is RetryClass.RETRYABLE:
        return RetryableApiError(text, **common)  # type: ignore[arg-type]
    return TerminalApiError(text, **common)  # type: ignore[arg-type]
