"""Fault injection and throttling, reproducible from one seeded ``random.Random``.

faults = FaultInjector(FaultConfig(service_unavailable_rate=0.1), seed=0)
fault = faults.roll()            # Fault.SERVICE_UNAVAILABLE, ..., or None
wait_ms = faults.throttle("ModifyVisualServicePasswd", now=time.time())  # None: go ahead
"""

from __future__ import annotations

import enum
import math
import random

from rotator.sim.config import FaultConfig

__all__ = ["Fault", "FaultInjector"]


class Fault(enum.Enum):
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    AGENT_ERROR = "AgentError"
    UNKNOWN_ERROR = "UnknownError"
    HANG = "Hang"
    DROP = "Drop"
    SILENT_NOOP = "SilentNoop"


class FaultInjector:
    """Draws the faults of each call; the configuration can be swapped at runtime."""

    __slots__ = ("_config", "_rng", "_windows")

    def __init__(self, config: FaultConfig, *, seed: int) -> None:
        self._config = config
        # A string seed is hashed deterministically (unlike hash() of a str across processes).
        self._rng = random.Random(f"rotator-sim-faults:{seed}")
        self._windows: dict[str, tuple[int, int]] = {}

    @property
    def config(self) -> FaultConfig:
        return self._config

    @config.setter
    def config(self, value: FaultConfig) -> None:
        self._config = value

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

    def throttle(self, action: str, *, now: float) -> int | None:
        """None if the call fits the action's QPS limit, else the milliseconds to the next second.

        Counts calls in fixed one-second windows (wall-clock seconds, like the per-second stats).
        """
        limit = self._config.qps_limit.get(action)
        if limit is None:
            return None
        second = math.floor(now)
        window_second, count = self._windows.get(action, (second, 0))
        if window_second != second:
            count = 0
        if count >= limit:
            self._windows[action] = (second, count)
            return max(1, math.ceil((second + 1 - now) * 1000))
        self._windows[action] = (second, count + 1)
        return None
