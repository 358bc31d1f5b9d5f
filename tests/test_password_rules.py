"""passwords.rule: the two documented profiles, the generator and checks that follow them, and the
run-level decision that the API's rule is not ours."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.config import PasswordSettings
from rotator.engine.passwd_guard import PASSWD_RULE_MISMATCH, PasswdRejections
from rotator.errors import ConfigError, ErrorScope, TerminalApiError
from rotator.passwords import (
    CURRENT_RULE,
    LEGACY_RULE,
    LEGACY_SPECIALS,
    RULES,
    InvalidPasswordError,
    LocalPasswordSource,
    VaultPasswordSource,
    check_vnc_password,
    is_valid_vnc_password,
    rule_named,
    rule_of,
    verify,
)
from rotator.secret import Secret

CLASSES = (string.ascii_uppercase, string.ascii_lowercase, string.digits, LEGACY_SPECIALS)


def test_the_setting_names_a_documented_profile_and_defaults_to_the_current_one() -> None:
    assert PasswordSettings().rule == "current"
    assert rule_named("current") is CURRENT_RULE
    assert rule_named("legacy") is LEGACY_RULE
    assert set(RULES) == {"current", "legacy"}
    with pytest.raises(ConfigError) as info:
        rule_named("strong")
    assert info.value.key == "passwords.rule"


@given(st.text(alphabet=string.printable, max_size=34))
def test_legacy_rule_matches_its_definition(value: str) -> None:
    expected = (
        8 <= len(value) <= 30
        and all(any(c in cls for cls in CLASSES) for c in value)
        and sum(1 for cls in CLASSES if any(c in cls for c in value)) >= 3
    )
    assert is_valid_vnc_password(value, LEGACY_RULE) is expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Ab1!", "length is 4, the API needs 8 to 30"),
        ("abcdefgh1", "has 2 of the character classes, the API needs 3"),
        ("Abcdefg h1", "outside the legacy rule's alphabet"),
    ],
)
def test_legacy_violations_are_named_without_the_value(value: str, reason: str) -> None:
    with pytest.raises(InvalidPasswordError) as caught:
        check_vnc_password(Secret(value), LEGACY_RULE)
    assert reason in str(caught.value)
    assert value not in str(caught.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("exclude", [False, True])
async def test_the_local_generator_follows_the_legacy_rule(exclude: bool) -> None:
    source = LocalPasswordSource(rule=LEGACY_RULE, exclude_lookalikes=exclude)
    await verify(source)
    drawn = [(await source.generate()).reveal() for _ in range(300)]
    assert all(len(p) == 8 and is_valid_vnc_password(p, LEGACY_RULE) for p in drawn)
    assert set("".join(drawn)) & set(LEGACY_SPECIALS)
    assert not any(is_valid_vnc_password(p) for p in drawn)
    assert rule_of(source) is LEGACY_RULE
    assert "legacy" in repr(source)


class _Fixed:
    def __init__(self, value: str) -> None:
        self.value = value

    async def generate_password(self, policy_name: str) -> Secret:
        return Secret(self.value)


@pytest.mark.asyncio
async def test_the_vault_source_checks_against_its_rule_and_names_the_policy_file() -> None:
    legacy = VaultPasswordSource(_Fixed("Ab1!efgh"), "ehpc-vnc", rule=LEGACY_RULE)
    await verify(legacy)
    current = VaultPasswordSource(_Fixed("Ab1!efgh"), "ehpc-vnc")
    with pytest.raises(InvalidPasswordError) as caught:
        await current.generate()
    assert "ehpc-vnc-password.hcl" in str(caught.value)
    with pytest.raises(ConfigError, match="produces passwords the API rejects"):
        await verify(VaultPasswordSource(_Fixed("Ab12cd"), rule=LEGACY_RULE))


def _rejected(cluster_id: str) -> TerminalApiError:
    return TerminalApiError(
        "parameter Passwd invalid", code="InvalidParams", cluster_id=cluster_id, request_id="r"
    )


def test_one_cluster_refusing_passwords_is_that_clusters_problem() -> None:
    guard = PasswdRejections(CURRENT_RULE)
    assert guard.record("c-1", _rejected("c-1")) is None
    assert guard.record("c-1", _rejected("c-1")) is None


def test_two_clusters_refusing_compliant_passwords_stop_the_run_naming_the_setting() -> None:
    guard = PasswdRejections(CURRENT_RULE)
    assert guard.record("c-1", _rejected("c-1")) is None
    stop = guard.record("c-2", _rejected("c-2"))
    assert stop is not None
    assert stop.code == PASSWD_RULE_MISMATCH
    assert stop.scope is ErrorScope.ACCOUNT
    assert stop.retry_class.value == "terminal"
    assert "passwords.rule = 'current'" in stop.message
    assert "passwords.rule = 'legacy'" in stop.message
    assert stop.request_id == "r"
