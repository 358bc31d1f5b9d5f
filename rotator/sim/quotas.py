"""Flow control as the gateway applies it: quotas of N calls per window of any length.

    rules = parse_quotas({"ModifyVisualServicePasswd": "100/60s", "*@account": "500/60s"})
    book = QuotaBook()
    refusal = book.admit(rules, "ModifyVisualServicePasswd", "cn-hangzhou", now=time.time())
    if refusal is not None:
        headers = refusal.headers()   # x-acs-retry-after, x-ratelimit-user-api, x-ratelimit-user

A rule's key names what it counts:

* ``<Action>``: that action, each region endpoint counted on its own (the documented E-HPC quotas,
  "100 calls per 60 s" per action);
* ``<Action>@account``: that action over every region together;
* ``<Action>@<region>``: that action in one region only;
* ``*`` instead of the action: every action together.

Windows are aligned on the epoch (``[k*period, (k+1)*period)``), like the per-second stats, and
``TimeLeft`` is the time to the end of the current window. A refused call does not count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ACCOUNT",
    "EVERY_ACTION",
    "THROTTLE_HEADERS",
    "QuotaBook",
    "QuotaRule",
    "Refusal",
    "parse_quotas",
]

ACCOUNT = "account"
THROTTLE_HEADERS = ("both", "retry-after", "ratelimit")
EVERY_ACTION = "*"
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_KEY = re.compile(r"^(\*|[A-Za-z][A-Za-z0-9]*)(?:@([a-z0-9][a-z0-9-]*))?$")


@dataclass(frozen=True, slots=True)
class QuotaRule:
    key: str
    """As configured: ``ModifyVisualServicePasswd``, ``*@account``, ``ListClusters@cn-beijing``."""
    action: str
    scope: str | None
    """None: per region endpoint; ``account``: all regions together; else one region."""
    calls: int
    period: float

    @classmethod
    def parse(cls, key: str, rate: str, *, actions: tuple[str, ...]) -> QuotaRule:
        match = _KEY.match(key)
        if match is None or (match.group(1) != EVERY_ACTION and match.group(1) not in actions):
            raise ValueError(
                f"quota {key!r}: expected ACTION, ACTION@account or ACTION@<region> with ACTION "
                f"one of {', '.join(actions)} or *"
            )
        if not isinstance(rate, str) or (found := _RATE.match(rate)) is None:
            raise ValueError(f"quota {key!r}: {rate!r} is not a rate like '100/60s'")
        calls = int(found.group(1))
        period = float(found.group(2) or 1) * _UNITS[found.group(3)]
        if calls < 1 or period <= 0:
            raise ValueError(f"quota {key!r}: must allow at least one call per period")
        return cls(key, match.group(1), match.group(2), calls, period)

    def applies(self, action: str, region: str) -> bool:
        if self.action not in (EVERY_ACTION, action):
            return False
        return self.scope in (None, ACCOUNT, region)

    def counter(self, region: str) -> str:
        """Which count a call goes to: one per region unless the rule spans the account."""
        return self.key if self.scope is not None else f"{self.key}#{region}"

    @property
    def rate(self) -> str:
        return f"{self.calls}/{self.period:g}s"


def parse_quotas(quotas: Mapping[str, str], *, actions: tuple[str, ...]) -> tuple[QuotaRule, ...]:
    return tuple(QuotaRule.parse(key, rate, actions=actions) for key, rate in quotas.items())


@dataclass(frozen=True, slots=True)
class Refusal:
    """A call over quota: which rule, and when its window ends."""

    rule: QuotaRule
    retry_after_ms: int
    reset: float
    """Epoch seconds at which the window ends."""

    def headers(self, which: str = "both") -> dict[str, str]:
        """The wait, in the forms the SDKs read: the current ``x-acs-retry-after`` (``which``
        ``retry-after``), the older rate-limit pair (``ratelimit``), or ``both``."""
        limit = (
            f"Limit:{self.rule.calls},Remain:0,TimeLeft:{self.retry_after_ms},"
            f"Reset:{math.ceil(self.reset)}"
        )
        headers: dict[str, str] = {}
        if which in ("both", "retry-after"):
            headers["x-acs-retry-after"] = str(self.retry_after_ms)
        if which in ("both", "ratelimit"):
            headers["x-ratelimit-user-api"] = limit
            headers["x-ratelimit-user"] = limit
        return headers


class QuotaBook:
    """The counts of the current windows (single event loop, no locks)."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}
        """counter -> (window index, calls counted in it)."""

    def admit(
        self, rules: tuple[QuotaRule, ...], action: str, region: str, *, now: float
    ) -> Refusal | None:
        """Count the call against every rule that applies, or refuse it (counting nothing)."""
        applying = [rule for rule in rules if rule.applies(action, region)]
        counts: list[tuple[str, int, int]] = []
        for rule in applying:
            counter = rule.counter(region)
            window = math.floor(now / rule.period)
            current, count = self._windows.get(counter, (window, 0))
            if current != window:
                count = 0
            if count >= rule.calls:
                reset = (window + 1) * rule.period
                return Refusal(rule, max(1, math.ceil((reset - now) * 1000)), reset)
            counts.append((counter, window, count))
        for counter, window, count in counts:
            self._windows[counter] = (window, count + 1)
        return None

    def reset(self) -> None:
        self._windows.clear()
