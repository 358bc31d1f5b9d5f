"""The simulator's settings: what it serves (:class:`SimConfig`) and how it misbehaves
(:class:`FaultConfig`).

    cfg = SimConfig(clusters=200, seed=7, faults=FaultConfig(service_unavailable_rate=0.05))
    hotter = cfg.faults.updated({"latency_ms": 20, "quotas": {"*@account": "10/1s"}})
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotator.sim.quotas import THROTTLE_HEADERS, QuotaRule, parse_quotas
from rotator.sim.rules import passwd_rule

__all__ = ["ACTIONS", "DEFAULT_REGIONS", "FaultConfig", "SimConfig"]

ACTIONS = ("ListClusters", "ModifyVisualServicePasswd")
DEFAULT_REGIONS = ("cn-hangzhou", "cn-shanghai", "cn-beijing")

_RATES = (
    "service_unavailable_rate",
    "agent_error_rate",
    "unknown_error_rate",
    "conflict_rate",
    "hang_rate",
    "drop_rate",
    "silent_noop_rate",
)
_DURATIONS = ("conflict_seconds", "latency_ms", "jitter_ms")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Per-``ModifyVisualServicePasswd`` fault probabilities, throttling and latency.

    Rates are probabilities in [0, 1]. ``conflict_rate`` starts a busy window of
    ``conflict_seconds`` on the cluster (that call and every call in the window get ConflictOpt).
    ``quotas`` maps a rule (``ModifyVisualServicePasswd``: per region endpoint, ``...@account``,
    ``...@<region>``, ``*`` for every action) to ``"N/period"`` (see :mod:`rotator.sim.quotas`);
    above it: ``Throttling.User``. ``qps_limit`` (action -> calls per second over all regions) is
    the older form of ``{"<action>@account": "N/1s"}``.
    Latency (``latency_ms`` + uniform ``[0, jitter_ms]``) applies to every accepted call.
    """

    service_unavailable_rate: float = 0.0
    agent_error_rate: float = 0.0
    unknown_error_rate: float = 0.0
    conflict_rate: float = 0.0
    conflict_seconds: float = 2.0
    qps_limit: Mapping[str, int] = field(default_factory=dict)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    hang_rate: float = 0.0
    drop_rate: float = 0.0
    silent_noop_rate: float = 0.0
    """The API answers OK without changing the password (only a VNC check can catch it)."""
    quotas: Mapping[str, str] = field(default_factory=dict)
    throttle_headers: str = "both"
    """Which wait headers a Throttling answer carries: ``both``, ``retry-after`` (the current
    ``x-acs-retry-after``) or ``ratelimit`` (the older ``x-ratelimit-user-api``/``-user``)."""

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number between 0 and 1")
        for name in _DURATIONS:
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        if not isinstance(self.qps_limit, Mapping):
            raise TypeError("qps_limit must map an action name to calls per second")
        for action, limit in self.qps_limit.items():
            if action not in ACTIONS:
                raise ValueError(f"qps_limit: unknown action {action!r} (known: {ACTIONS})")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"qps_limit[{action}] must be an integer >= 1")
        if not isinstance(self.quotas, Mapping):
            raise TypeError("quotas must map a rule (ACTION[@account|@region]) to 'N/period'")
        parse_quotas(self.quotas, actions=ACTIONS)  # ValueError naming the bad rule
        if self.throttle_headers not in THROTTLE_HEADERS:
            raise ValueError(f"throttle_headers must be one of {', '.join(THROTTLE_HEADERS)}")
        # Private copies, so the caller's dict cannot change a frozen config behind its back.
        object.__setattr__(self, "qps_limit", dict(self.qps_limit))
        object.__setattr__(self, "quotas", dict(self.quotas))

    def __hash__(self) -> int:  # the generated one would fail on the dicts
        return hash(
            tuple(
                tuple(sorted(value.items())) if isinstance(value, Mapping) else value
                for value in (getattr(self, f.name) for f in dataclasses.fields(self))
            )
        )

    def quota_rules(self) -> tuple[QuotaRule, ...]:
        """``quotas`` and the older ``qps_limit``, as rules."""
        legacy = {f"{action}@account": f"{n}/1s" for action, n in self.qps_limit.items()}
        return parse_quotas({**legacy, **self.quotas}, actions=ACTIONS)

    def updated(self, patch: Mapping[str, Any]) -> FaultConfig:
        """A copy with the fields in ``patch`` replaced; ValueError on unknown or bad fields."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(patch) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **dict(patch))

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["qps_limit"] = dict(self.qps_limit)
        data["quotas"] = dict(self.quotas)
        return data


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Where the simulator listens, what it holds, and the credential it accepts.

    ``port=0`` picks a free port; ``admin_token=None`` generates one per start; ``tls`` serves
    HTTPS with a throwaway CA written to ``<state_dir or a temp dir>/sim-ca.pem``.
    """

    host: str = "127.0.0.1"
    port: int = 0
    clusters: int = 20
    regions: tuple[str, ...] = DEFAULT_REGIONS
    seed: int = 0
    access_key_id: str = "sim-access-key-id"
    access_key_secret: str = field(default="sim-access-key-secret", repr=False)
    admin_token: str | None = field(default=None, repr=False)
    tls: bool = False
    state_dir: Path | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    vnc_max_failures: int = 5
    """Failed VNC authentications in a row from one source before it is locked out."""
    vnc_lockout_seconds: float = 10.0
    """How long a locked-out source is refused (TigerVNC's BlacklistTimeout default)."""
    passwd_rule: str = "current"  # noqa: S105 - the name of a rule, not a password
    """Which documented Passwd rule the simulated API enforces: ``current`` or ``legacy``."""
    region_endpoints: bool = False
    """Also serve one endpoint (port) per region; there the endpoint sets the region."""

    def __post_init__(self) -> None:
        if self.clusters < 0:
            raise ValueError("clusters must be >= 0")
        if not self.regions or any(not r for r in self.regions):
            raise ValueError("regions must be a non-empty list of region names")
        object.__setattr__(self, "regions", tuple(self.regions))
        if not self.access_key_id or not self.access_key_secret:
            raise ValueError("access_key_id and access_key_secret must not be empty")
        passwd_rule(self.passwd_rule)  # ValueError naming the known rules
