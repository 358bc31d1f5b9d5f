"""Fault injection and throttling, reproducible from one seeded ``random.Random``.

faults = FaultInjector(FaultConfig(service_unavailable_rate=0.1), seed=0)
fault = faults.roll()            # Fault.SERVICE_UNAVAILABLE, ..., or None
wait_ms = faults.throttle("ModifyVisualServicePasswd", now=time.time())  # None: go ahead
faults.inject(ErrorInjection("Forbidden.RAM", shape=ErrorShape.XML, count=1))
err = faults.injected_error("ListClusters")  # a SimError to answer with, or None
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rotator.sim.config import ACTIONS, FaultConfig
from rotator.sim.errors import ErrorShape, SimError, message_for, status_for

__all__ = ["ErrorInjection", "Fault", "FaultInjector"]

_CODE = re.compile(r"\A[A-Za-z][A-Za-z0-9]*(\.[A-Za-z0-9]+)*\Z")


class Fault(enum.Enum):
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    AGENT_ERROR = "AgentError"
    UNKNOWN_ERROR = "UnknownError"
    HANG = "Hang"
    DROP = "Drop"
    SILENT_NOOP = "SilentNoop"


@dataclass(frozen=True, slots=True)
class ErrorInjection:
    """Answer the next ``count`` calls (None: every call) of ``actions`` (empty: all) with
    ``code``, at the code's real HTTP status (or ``status``) and in the given body shape.

    It is answered once the signature checks out, the way the gateway answers an account-wide
    refusal (Forbidden.RAM, an inactive key, ...) before the action runs: nothing is applied.
    """

    code: str
    shape: ErrorShape = ErrorShape.JSON
    count: int | None = None
    actions: tuple[str, ...] = ()
    status: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE.match(self.code):
            raise ValueError("code must look like an API error code (e.g. Forbidden.RAM)")
        object.__setattr__(self, "shape", ErrorShape(self.shape))
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1
        ):
            raise ValueError("count must be an integer >= 1 (or null: every call)")
        object.__setattr__(self, "actions", tuple(self.actions))
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"unknown action(s) {unknown} (known: {ACTIONS})")
        if self.status is not None and (
            isinstance(self.status, bool)
            or not isinstance(self.status, int)
            or not 400 <= self.status <= 599
        ):
            raise ValueError("status must be an HTTP error status (400-599)")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorInjection:
        unknown = sorted(set(data) - {"code", "shape", "count", "actions", "status"})
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        if "code" not in data:
            raise ValueError("code is required")
        actions = data.get("actions", ())
        if not isinstance(actions, list | tuple):
            raise TypeError("actions must be a list of action names")
        return cls(
            code=data["code"],
            shape=ErrorShape(data.get("shape", "json")),
            count=data.get("count"),
            actions=tuple(actions),
            status=data.get("status"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "shape": self.shape.value,
            "count": self.count,
            "actions": list(self.actions),
            "status": self.status if self.status is not None else status_for(self.code),
        }


class FaultInjector:
    """Draws the faults of each call; the configuration can be swapped at runtime."""

    __slots__ = ("_config", "_injections", "_rng")

    def __init__(self, config: FaultConfig, *, seed: int) -> None:
        self._injections: list[ErrorInjection] = []
        self._config = config
        # A string seed is hashed deterministically (unlike hash() of a str across processes).
        self._rng = random.Random(f"rotator-sim-faults:{seed}")

    @property
    def config(self) -> FaultConfig:
        return self._config

    @config.setter
    def config(self, value: FaultConfig) -> None:
        self._config = value

    # -- injected error codes ----------------------------------------------------------------

    @property
    def injections(self) -> list[ErrorInjection]:
        return list(self._injections)

    def inject(self, injection: ErrorInjection) -> None:
        """Queue ``injection``; the oldest matching one answers first."""
        self._injections.append(injection)

    def clear_injections(self) -> None:
        self._injections.clear()

    def injected_error(self, action: str) -> SimError | None:
        """The error this call must get, consuming one use of its injection; None: go ahead."""
        for index, injection in enumerate(self._injections):
            if injection.actions and action not in injection.actions:
                continue
            if injection.count is not None:
                left = injection.count - 1
                if left:
                    self._injections[index] = ErrorInjection(
                        injection.code,
                        injection.shape,
                        left,
                        injection.actions,
                        injection.status,
                    )
                else:
                    del self._injections[index]
            return SimError(
                injection.code,
                message_for(injection.code),
                shape=injection.shape,
                status=injection.status,
            )
        return None

    def latency_seconds(self) -> float:
        cfg = self._config
        if cfg.jitter_ms <= 0:
            return cfg.latency_ms / 1000.0
        return (cfg.latency_ms + self._rng.uniform(0.0, cfg.jitter_ms)) / 1000.0

    def roll_conflict(self) -> bool:
        """Whether this call starts a ConflictOpt busy window on its cluster."""
        rate = self._config.conflict_rate
        return rate > 0 and self._rng.random() < rate

    def roll(self) -> Fault | None:
        """At most one fault per call: one draw against the cumulative rates, in a fixed order."""
        cfg = self._config
        rates = (
            (Fault.SERVICE_UNAVAILABLE, cfg.service_unavailable_rate),
            (Fault.AGENT_ERROR, cfg.agent_error_rate),
            (Fault.UNKNOWN_ERROR, cfg.unknown_error_rate),
            (Fault.HANG, cfg.hang_rate),
            (Fault.DROP, cfg.drop_rate),
            (Fault.SILENT_NOOP, cfg.silent_noop_rate),
        )
        if not any(rate for _, rate in rates):
            return None
        draw = self._rng.random()
        edge = 0.0
        for fault, rate in rates:
            edge += rate
            if draw < edge:
                return fault
        return None
