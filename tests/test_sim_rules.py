"""Property tests of the simulator's parameter rules (Passwd, RunasUser, paging)."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rotator.sim.rules import (
    DEFAULT_PAGE_SIZE,
    LEGACY_SPECIALS,
    MAX_PAGE_SIZE,
    InvalidParam,
    legacy_passwd_valid,
    parse_page,
    passwd_rule,
    passwd_valid,
    runas_user_valid,
)

LETTERS = string.ascii_letters
DIGITS = string.digits
ALNUM = LETTERS + DIGITS


@st.composite
def valid_passwords(draw: st.DrawFn) -> str:
    """6 ASCII letters/digits with at least one of each, in any order."""
    chars = [draw(st.sampled_from(LETTERS)), draw(st.sampled_from(DIGITS))]
    chars += draw(st.lists(st.sampled_from(ALNUM), min_size=4, max_size=4))
    return "".join(draw(st.permutations(chars)))


@given(valid_passwords())
def test_six_letters_and_digits_with_both_kinds_are_valid(passwd: str) -> None:
    assert passwd_valid(passwd)


@given(st.text(alphabet=ALNUM))
def test_any_length_but_six_is_invalid(passwd: str) -> None:
    assume(len(passwd) != 6)
    assert not passwd_valid(passwd)


@given(st.text(alphabet=LETTERS, min_size=6, max_size=6))
def test_letters_only_is_invalid(passwd: str) -> None:
    assert not passwd_valid(passwd)


@given(st.text(alphabet=DIGITS, min_size=6, max_size=6))
def test_digits_only_is_invalid(passwd: str) -> None:
    assert not passwd_valid(passwd)


@given(valid_passwords(), st.integers(0, 5), st.characters())
def test_any_other_character_makes_it_invalid(passwd: str, index: int, char: str) -> None:
    assume(char not in ALNUM)
    # Non-ASCII letters and digits (accented, Arabic-Indic, fullwidth) are refused too.
    assert not passwd_valid(passwd[:index] + char + passwd[index + 1 :])


@given(st.text(max_size=12))
def test_passwd_rule_is_exactly_the_documented_one(passwd: str) -> None:
    expected = (
        len(passwd) == 6
        and all(c in ALNUM for c in passwd)
        and any(c in LETTERS for c in passwd)
        and any(c in DIGITS for c in passwd)
    )
    assert passwd_valid(passwd) is expected


@given(st.text())
def test_only_root_may_run_as(user: str) -> None:
    assert runas_user_valid(user) is (user == "root")


@pytest.mark.parametrize("user", ["Root", "root ", " root", "ROOT", "admin", ""])
def test_near_misses_of_root_are_refused(user: str) -> None:
    assert not runas_user_valid(user)


def test_paging_defaults() -> None:
    assert parse_page(None, None) == (1, DEFAULT_PAGE_SIZE)


@given(st.integers(1, 10**6), st.integers(1, MAX_PAGE_SIZE))
def test_paging_accepts_its_range(number: int, size: int) -> None:
    assert parse_page(str(number), str(size)) == (number, size)


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_PAGE_SIZE + 1)))
def test_page_size_outside_1_to_50_is_invalid(size: int) -> None:
    with pytest.raises(InvalidParam) as raised:
        parse_page("1", str(size))
    assert raised.value.name == "PageSize"
    assert str(raised.value) == "parameter PageSize invalid"


@given(st.integers(max_value=0))
def test_page_number_below_1_is_invalid(number: int) -> None:
    with pytest.raises(InvalidParam) as raised:
        parse_page(str(number), None)
    assert raised.value.name == "PageNumber"


@given(st.text())
def test_page_size_that_is_not_a_plain_number_is_invalid(raw: str) -> None:
    assume(not (raw.isascii() and raw.isdigit()))
    with pytest.raises(InvalidParam):
        parse_page(None, raw)


# -- the legacy Passwd rule: 8-30 characters from at least 3 of 4 classes ----------------------

LEGACY_CLASSES = (string.ascii_uppercase, string.ascii_lowercase, DIGITS, LEGACY_SPECIALS)


@st.composite
def legacy_passwords(draw: st.DrawFn) -> str:
    classes = draw(st.permutations(LEGACY_CLASSES))[: draw(st.integers(3, 4))]
    chars = [draw(st.sampled_from(cls)) for cls in classes]
    pool = "".join(classes)
    chars += draw(
        st.lists(st.sampled_from(pool), min_size=8 - len(chars), max_size=30 - len(chars))
    )
    return "".join(draw(st.permutations(chars)))


@given(legacy_passwords())
def test_legacy_rule_accepts_3_of_4_classes(passwd: str) -> None:
    assert passwd_rule("legacy")(passwd)
    assert not passwd_rule("current")(passwd)


@pytest.mark.parametrize(
    "passwd",
    ["Ab1!", "Abcdefg", "abcdefgh12", "ABCDEFGH!!", "Abcdef1" + "x" * 24, "Abcd ef12", "Abcdéf12"],
)
def test_legacy_rule_refuses(passwd: str) -> None:
    assert not legacy_passwd_valid(passwd)


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="current, legacy"):
        passwd_rule("strict")
