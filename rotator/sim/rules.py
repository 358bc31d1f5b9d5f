"""E-HPC's parameter rules, as pure functions (property-tested in tests/test_sim_rules.py).

passwd_valid("a1b2c3")          # True: 6 ASCII letters/digits, at least one of each
passwd_rule("legacy")("Abcdef12")  # True: 8-30 characters from 3 of 4 classes (older reference)
runas_user_valid("root")        # True: only root is supported
parse_page("2", None)           # (2, 10)
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "LEGACY_SPECIALS",
    "MAX_PAGE_SIZE",
    "PASSWD_LENGTH",
    "PASSWD_RULES",
    "RUNAS_USER",
    "InvalidParam",
    "legacy_passwd_valid",
    "parse_page",
    "passwd_rule",
    "passwd_valid",
    "runas_user_valid",
]

RUNAS_USER = "root"
PASSWD_LENGTH = 6
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 50
# ASCII digits only: int() would also accept " 7", "+7", "7_0" and non-ASCII digits.
_UINT = re.compile(r"[0-9]{1,9}")
_ALNUM = re.compile(r"[A-Za-z0-9]+")


class InvalidParam(ValueError):  # noqa: N818 - named after the API's InvalidParams code
    """A parameter broke a rule; ``name`` is the parameter (the message never shows the value)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"parameter {name} invalid")
        self.name = name


def runas_user_valid(value: str) -> bool:
    return value == RUNAS_USER


def passwd_valid(value: str) -> bool:
    """Exactly 6 ASCII letters and digits, with at least one letter and one digit."""
    return (
        len(value) == PASSWD_LENGTH
        and _ALNUM.fullmatch(value) is not None
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


LEGACY_SPECIALS = "()`~!@#$%^&*-+=|{}[]:;'<>,.?/"
_LEGACY_CLASSES = (
    frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    frozenset("abcdefghijklmnopqrstuvwxyz"),
    frozenset("0123456789"),
    frozenset(LEGACY_SPECIALS),
)
_LEGACY_ALLOWED = frozenset().union(*_LEGACY_CLASSES)


def legacy_passwd_valid(value: str) -> bool:
    """The older reference: 8-30 characters, from at least 3 of upper, lower, digit, special."""
    chars = set(value)
    return (
        8 <= len(value) <= 30
        and chars <= _LEGACY_ALLOWED
        and sum(1 for cls in _LEGACY_CLASSES if chars & cls) >= 3
    )


PASSWD_RULES: dict[str, Callable[[str], bool]] = {
    "current": passwd_valid,
    "legacy": legacy_passwd_valid,
}


def passwd_rule(name: str) -> Callable[[str], bool]:
    """The Passwd check of a documented rule profile; ValueError for an unknown name."""
    try:
        return PASSWD_RULES[name]
    except KeyError:
        raise ValueError(
            f"passwd_rule must be one of {', '.join(PASSWD_RULES)}, not {name!r}"
        ) from None


def _page_value(name: str, raw: str | None, default: int, low: int, high: int | None) -> int:
    if raw is None:
        return default
    if _UINT.fullmatch(raw) is None:
        raise InvalidParam(name)
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise InvalidParam(name)
    return value


def parse_page(page_number: str | None, page_size: str | None) -> tuple[int, int]:
    """``(PageNumber, PageSize)``: defaults 1 and 10; PageNumber >= 1, PageSize 1..50.

    Raises :class:`InvalidParam` naming the offending parameter.
    """
    number = _page_value("PageNumber", page_number, 1, 1, None)
    size = _page_value("PageSize", page_size, DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    return number, size
