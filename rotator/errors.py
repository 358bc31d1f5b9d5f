"""The one error hierarchy of rotator.

Every error is a value: a stable ``code``, a ``retry_class`` saying what a caller may do about it,
and a message a person can act on. None of them ever holds a password.

    RotatorError
    ├── ConfigError                  bad configuration or usage (exit code 2)
    ├── ApiError                     the E-HPC OpenAPI answered with an error, or did not answer
    │   ├── RetryableApiError        try again with backoff (ServiceUnavailable, ConflictOpt, ...)
    │   │   └── ThrottledError       flow control; may carry the server's retry-after delay
    │   ├── TerminalApiError         retrying cannot help (IncorrectCredential, ...)
    │   └── AmbiguousApiError        sent, but no answer: the password may or may not have changed
    └── VaultError                   Vault refused or could not be reached
        ├── VaultUnavailableError    sealed, 5xx, connection errors: retryable
        ├── VaultPermissionError     403: the token lacks a policy; terminal
        └── VaultConflictError       a check-and-set lost: somebody else wrote first
"""

from __future__ import annotations

import enum

__all__ = [
    "AmbiguousApiError",
    "ApiError",
    "ConfigError",
    "ErrorScope",
    "RetryClass",
    "RetryableApiError",
    "RotatorError",
    "TerminalApiError",
    "ThrottledError",
    "VaultConflictError",
    "VaultError",
    "VaultPermissionError",
    "VaultUnavailableError",
]


class RetryClass(enum.StrEnum):
    """What a caller may do after an error."""

    RETRYABLE = "retryable"
    """Transient: the same call may succeed later."""
    TERMINAL = "terminal"
    """Retrying the same call cannot succeed; a person must act."""
    AMBIGUOUS = "ambiguous"
    """The request was sent but its outcome is unknown; re-apply the *same* change."""


class ErrorScope(enum.StrEnum):
    """How far an error reaches: one cluster, or everything behind the same account/endpoint."""

    CLUSTER = "cluster"
    ACCOUNT = "account"


class RotatorError(Exception):
    """Base of every error rotator raises on purpose."""

    code: str = "RotatorError"
    retry_class: RetryClass = RetryClass.TERMINAL

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_class: RetryClass | None = None,
        cluster_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retry_class is not None:
            self.retry_class = retry_class
        self.cluster_id = cluster_id
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [f"{self.code}: {self.message}"]
        if self.cluster_id:
            parts.append(f"cluster={self.cluster_id}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigError(RotatorError):
    """The configuration or the command line is wrong; nothing was changed."""

    code = "ConfigError"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class ApiError(RotatorError):
    """An error from (or on the way to) the E-HPC OpenAPI."""

    code = "ApiError"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        cluster_id: str | None = None,
        request_id: str | None = None,
        scope: ErrorScope = ErrorScope.CLUSTER,
        retry_class: RetryClass | None = None,
    ) -> None:
        super().__init__(
            message,
            code=code,
            cluster_id=cluster_id,
            request_id=request_id,
            retry_class=retry_class,
        )
        self.http_status = http_status
        self.scope = scope

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} http_status={self.http_status}" if self.http_status else base


class RetryableApiError(ApiError):
    retry_class = RetryClass.RETRYABLE


class ThrottledError(RetryableApiError):
    """Flow control. ``retry_after`` is the server's requested wait in seconds, when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class TerminalApiError(ApiError):
    retry_class = RetryClass.TERMINAL


class AmbiguousApiError(ApiError):
    retry_class = RetryClass.AMBIGUOUS


class VaultError(RotatorError):
    code = "VaultError"


class VaultUnavailableError(VaultError):
    code = "VaultUnavailable"
    retry_class = RetryClass.RETRYABLE


class VaultPermissionError(VaultError):
    code = "VaultPermissionDenied"
    retry_class = RetryClass.TERMINAL


class VaultConflictError(VaultError):
    """A check-and-set write lost: another writer changed the secret since we read it."""

    code = "VaultCasConflict"
    retry_class = RetryClass.TERMINAL
