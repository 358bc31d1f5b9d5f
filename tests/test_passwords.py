"""The API's password rule, the local generator's uniformity, and the startup check."""

from __future__ import annotations

import math
import random
import string
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.errors import ConfigError
from rotator.passwords import (
    DIGITS,
    LETTERS,
    LOOKALIKES,
    PASSWORD_LENGTH,
    InvalidPasswordError,
    LocalPasswordSource,
    VaultPasswordSource,
    check_vnc_password,
    is_valid_vnc_password,
    verify,
)
from rotator.secret import Secret

SAMPLES = 20_000


# -- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc123", "A1b2C3", "zzzzz9", "1aaaaa", "9Z9Z9Z", "Q00000"])
def test_compliant_passwords_are_valid(value: str) -> None:
    assert is_valid_vnc_password(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("abc12", "too short"),
        ("abc1234", "too long"),
        ("", "empty"),
        ("abcdef", "no digit"),
        ("123456", "no letter"),
        ("abc12!", "punctuation"),
        ("abc 12", "space"),
        ("abc12é", "non-ASCII letter"),
        ("abc12٣", "non-ASCII digit"),
        ("\uff21\uff2212cd", "full-width letters"),
    ],
)
def test_non_compliant_passwords_are_invalid(value: str, why: str) -> None:
    assert not is_valid_vnc_password(value), why


def test_check_names_the_broken_rule_but_never_the_value() -> None:
    with pytest.raises(InvalidPasswordError) as caught:
        check_vnc_password(Secret("Kq7!x9"))
    assert "Kq7!x9" not in str(caught.value)
    assert "characters other than ASCII letters and digits" in str(caught.value)
    assert isinstance(caught.value, ConfigError)
    check_vnc_password(Secret("Kq7zx9"))  # compliant: no error


@given(st.text(alphabet=string.ascii_letters + string.digits + "!-_ ", max_size=8))
def test_rule_matches_its_definition(value: str) -> None:
    expected = (
        len(value) == PASSWORD_LENGTH
        and all(c in LETTERS + DIGITS for c in value)
        and any(c in LETTERS for c in value)
        and any(c in DIGITS for c in value)
    )
    assert is_valid_vnc_password(value) is expected


# -- the local generator --------------------------------------------------------------------


@pytest.mark.asyncio
@given(exclude=st.booleans())
async def test_every_generated_password_is_valid(exclude: bool) -> None:
    source = LocalPasswordSource(exclude_lookalikes=exclude)
    for _ in range(50):
        assert is_valid_vnc_password((await source.generate()).reveal())


def test_lookalikes_are_never_generated_when_excluded() -> None:
    source = LocalPasswordSource(exclude_lookalikes=True)
    seen = Counter("".join(source.generate_now().reveal() for _ in range(5_000)))
    assert not set(LOOKALIKES) & set(seen)
    assert set(seen) == set(LETTERS + DIGITS) - set(LOOKALIKES)


def test_lookalikes_are_generated_by_default() -> None:
    source = LocalPasswordSource()
    seen = set("".join(source.generate_now().reveal() for _ in range(5_000)))
    assert set(LOOKALIKES) <= seen


def test_generated_passwords_are_masked() -> None:
    password = LocalPasswordSource().generate_now()
    assert password.reveal() not in repr(password)
    assert password.reveal() not in f"{password}"


# -- uniformity -----------------------------------------------------------------------------
#
# Uniform over all compliant strings does NOT mean uniform per character: requiring a digit makes
# digits more likely at each position. With alphabet size n, d digits and l letters, the number of
# compliant strings with a given letter at one position is n^5 - l^5 (the other five need a digit)
# and with a given digit it is n^5 - d^5. The test compares each position with exactly that.


def _expected(alphabet: str) -> dict[str, float]:
    n = len(alphabet)
    letters = sum(c in LETTERS for c in alphabet)
    digits = n - letters
    rest = PASSWORD_LENGTH - 1
    weight = {
        c: (n**rest - letters**rest) if c in LETTERS else (n**rest - digits**rest) for c in alphabet
    }
    total = sum(weight.values())
    return {c: w / total for c, w in weight.items()}


def _critical_value(df: int, z: float = 4.75) -> float:
    """Chi-square quantile by Wilson-Hilferty; z = 4.75 is p ~ 1e-6, so a correct generator
    fails one run in about a million per position while a biased one fails by orders of
    magnitude."""
    k = 2 / (9 * df)
    return float(df * (1 - k + z * math.sqrt(k)) ** 3)


def _worst_chi_square(samples: Sequence[str], alphabet: str) -> float:
    expected = _expected(alphabet)
    worst = 0.0
    for position in range(PASSWORD_LENGTH):
        counts = Counter(s[position] for s in samples)
        assert set(counts) <= set(alphabet)
        chi2 = sum(
            (counts.get(c, 0) - len(samples) * p) ** 2 / (len(samples) * p)
            for c, p in expected.items()
        )
        worst = max(worst, chi2)
    return worst


@pytest.mark.parametrize("exclude", [False, True])
def test_generator_is_uniform_per_position(exclude: bool) -> None:
    source = LocalPasswordSource(exclude_lookalikes=exclude)
    samples = [source.generate_now().reveal() for _ in range(SAMPLES)]
    alphabet = source.alphabet
    assert _worst_chi_square(samples, alphabet) < _critical_value(len(alphabet) - 1)


def _biased_letters(rng: random.Random) -> str:
    """Letters twice as likely as they should be; still compliant."""
    pool = LETTERS * 2 + DIGITS
    while True:
        value = "".join(rng.choice(pool) for _ in range(PASSWORD_LENGTH))
        if is_valid_vnc_password(value):
            return value


def _digit_at_the_end(rng: random.Random) -> str:
    """The classic shortcut: five characters from anything, then a forced digit."""
    while True:
        value = "".join(rng.choice(LETTERS + DIGITS) for _ in range(5)) + rng.choice(DIGITS)
        if is_valid_vnc_password(value):
            return value


@pytest.mark.parametrize("broken", [_biased_letters, _digit_at_the_end])
def test_uniformity_check_catches_biased_generators(broken: Callable[[random.Random], str]) -> None:
    rng = random.Random(1234)
    samples = [broken(rng) for _ in range(SAMPLES)]
    alphabet = LETTERS + DIGITS
    assert _worst_chi_square(samples, alphabet) > _critical_value(len(alphabet) - 1)


def test_uniformity_check_accepts_a_seeded_uniform_generator() -> None:
    """The statistic itself is right: an exact rejection sampler from a seeded PRNG passes."""
    rng = random.Random(99)
    alphabet = LETTERS + DIGITS
    samples: list[str] = []
    while len(samples) < SAMPLES:
        value = "".join(rng.choice(alphabet) for _ in range(PASSWORD_LENGTH))
        if is_valid_vnc_password(value):
            samples.append(value)
    assert _worst_chi_square(samples, alphabet) < _critical_value(len(alphabet) - 1)


# -- Vault-backed source and the startup check ----------------------------------------------


class _FixedGenerator:
    """Stands in for VaultStore.generate_password (the real one is tested on OpenBao)."""

    def __init__(self, values: list[str]) -> None:
        self.values = values
        self.asked: list[str] = []

    async def generate_password(self, policy_name: str) -> Secret:
        self.asked.append(policy_name)
        return Secret(self.values[(len(self.asked) - 1) % len(self.values)])


@pytest.mark.asyncio
async def test_vault_source_passes_compliant_passwords_through() -> None:
    generator = _FixedGenerator(["Ab12cd"])
    source = VaultPasswordSource(generator, "ehpc-vnc")
    assert (await source.generate()).reveal() == "Ab12cd"
    assert generator.asked == ["ehpc-vnc"]


@pytest.mark.asyncio
async def test_vault_source_rejects_a_non_compliant_password_without_showing_it() -> None:
    source = VaultPasswordSource(_FixedGenerator(["Ab12cdEF"]), "too-long")
    with pytest.raises(InvalidPasswordError) as caught:
        await source.generate()
    assert "Ab12cdEF" not in str(caught.value)
    assert "too-long" in str(caught.value)


@pytest.mark.asyncio
async def test_verify_accepts_compliant_sources() -> None:
    await verify(LocalPasswordSource())
    await verify(VaultPasswordSource(_FixedGenerator(["Ab12cd", "x9y8z7"])))


@pytest.mark.asyncio
async def test_verify_fails_at_startup_for_a_policy_that_sometimes_breaks_the_rule() -> None:
    # One bad password in five (a policy allowing 6-8 characters, say): caught by 20 samples.
    values = ["Ab12cd", "x9y8z7", "Q1w2e3", "zz99zz", "Ab12cdEF"]
    with pytest.raises(ConfigError) as caught:
        await verify(VaultPasswordSource(_FixedGenerator(values), "ehpc-vnc"))
    message = str(caught.value)
    assert "password policy 'ehpc-vnc' produces passwords the API rejects" in message
    assert "length is 8" in message
    assert not any(v in message for v in values)


@pytest.mark.asyncio
async def test_verify_checks_sources_that_do_not_check_themselves() -> None:
    class Sloppy:
        async def generate(self) -> Secret:
            return Secret("nodigit")

    with pytest.raises(ConfigError, match="Sloppy produces passwords the API rejects"):
        await verify(Sloppy())
