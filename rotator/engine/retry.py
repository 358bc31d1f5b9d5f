"""Retry schedules as data: exponential backoff with full jitter, one schedule per kind of error.

    policy = RetryPolicy.from_settings(settings.retry)
    delay = policy.delay_after(error, attempt=2)   # None: give up
    await sleep(delay)

``ConflictOpt`` means another operation runs on the cluster, which takes minutes, so it gets its
own long schedule; throttling has its own and honours the server's ``x-acs-retry-after``.
Tests swap the ``sleep`` and the random source, so schedules run without real waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from rotator.ehpc.codes import Schedule, info_for
from rotator.errors import ApiError, RetryClass, RotatorError, ThrottledError

__all__ = ["Backoff", "RetryPolicy", "RetrySettingsLike", "exponential"]


def exponential(retry_number: int, initial: float, maximum: float) -> float:
    """The one backoff curve: ``initial * 2**(n-1)`` capped at ``maximum`` (n >= 1).

    Used by the engine's schedules (under full jitter), the daemon's retry of failed clusters
    and the event stream's reconnects.
    """
    exponent = min(max(retry_number - 1, 0), 60)  # 2**60 s is far past any cap
    return float(min(maximum, initial * (2**exponent)))


class RetrySettingsLike(Protocol):
    """The ``[retry]`` config section as the engine reads it (the config module is not ours)."""

    @property
    def attempts(self) -> int: ...
    @property
    def initial_wait(self) -> float: ...
    @property
    def max_wait(self) -> float: ...
    @property
    def conflict_attempts(self) -> int: ...
    @property
    def conflict_initial_wait(self) -> float: ...
    @property
    def conflict_max_wait(self) -> float: ...
    @property
    def throttle_attempts(self) -> int: ...
    @property
    def throttle_initial_wait(self) -> float: ...
    @property
    def throttle_max_wait(self) -> float: ...
    @property
    def vault_attempts(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """``attempts`` tries in all; the n-th wait is uniform in [0, min(max_wait, initial * 2**n)]."""

    attempts: int
    initial_wait: float
    max_wait: float

    def ceiling(self, retry_number: int) -> float:
        return exponential(retry_number, self.initial_wait, self.max_wait)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    general: Backoff = Backoff(attempts=6, initial_wait=0.5, max_wait=20.0)
    conflict: Backoff = Backoff(attempts=8, initial_wait=5.0, max_wait=60.0)
    throttle: Backoff = Backoff(attempts=10, initial_wait=1.0, max_wait=30.0)
    vault: Backoff = Backoff(attempts=6, initial_wait=0.5, max_wait=10.0)
    rng: random.Random = field(default_factory=random.Random, compare=False)

    @classmethod
    def from_settings(cls, settings: RetrySettingsLike) -> RetryPolicy:
        return cls(
            general=Backoff(settings.attempts, settings.initial_wait, settings.max_wait),
            conflict=Backoff(
                settings.conflict_attempts,
                settings.conflict_initial_wait,
                settings.conflict_max_wait,
            ),
            throttle=Backoff(
                settings.throttle_attempts,
                settings.throttle_initial_wait,
                settings.throttle_max_wait,
            ),
            vault=Backoff(settings.vault_attempts, settings.initial_wait, settings.max_wait),
        )

    def schedule_for(self, error: RotatorError) -> Backoff:
        """The code table says which schedule an API code waits on; Vault errors have theirs."""
        if isinstance(error, ThrottledError):
            return self.throttle
        if isinstance(error, ApiError):
            schedule = info_for(error.code, error.http_status).schedule
            return {
                Schedule.GENERAL: self.general,
                Schedule.CONFLICT: self.conflict,
                Schedule.THROTTLE: self.throttle,
            }[schedule]
        return self.vault

    def delay_after(self, error: RotatorError, *, attempt: int) -> float | None:
        """Seconds to wait before the next try after ``attempt`` tries of this kind failed.

        ``None`` when the error is terminal or its schedule is used up. Ambiguous errors are
        retried (with the *same* password, which the caller guarantees) on the general schedule.
        """
        if error.retry_class is RetryClass.TERMINAL:
            return None
        retry_after = error.retry_after if isinstance(error, ThrottledError) else None
        return self.delay_on(self.schedule_for(error), attempt=attempt, retry_after=retry_after)

    def delay_on(
        self, schedule: Backoff, *, attempt: int, retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait on ``schedule`` after ``attempt`` failed tries; None when spent."""
        if attempt >= schedule.attempts:
            return None
        if retry_after is not None:
            # The server said how long; add a little jitter so a crowd does not return at once.
            return retry_after + self.rng.uniform(0, min(1.0, retry_after * 0.1))
        return self.rng.uniform(0, schedule.ceiling(attempt))
