"""VNC passwords: the API's rule, and where new passwords come from.

    source = LocalPasswordSource(rule=RULES["current"])  # or VaultPasswordSource(store, name)
    await verify(source)                            # at startup: ConfigError if it cannot comply
    password = await source.generate()              # a Secret, checked against the rule

The ``Passwd`` rule of ``ModifyVisualServicePasswd`` has changed before, so it is a setting
(``passwords.rule``) with the two documented profiles:

* ``current`` (the reference today, the default): exactly 6 ASCII letters and digits, at least
  one of each;
* ``legacy`` (the older reference and the SDK 3.x docs): 8 to 30 characters from at least 3 of
  upper case, lower case, digits and ``()`~!@#$%^&*-+=|{}[]:;'<>,.?/``. Generated at 8
  characters: VNC authentication only uses the first 8 bytes of a password.

Every password is checked against the rule before it is used, so a source that cannot comply
fails once at startup instead of once per cluster at the API.

This module knows nothing about Vault: :class:`VaultPasswordSource` takes any object with an
``async generate_password(name)`` (the real one is :class:`rotator.vault.store.VaultStore`).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Protocol

from rotator.errors import ConfigError
from rotator.secret import Secret

__all__ = [
    "CURRENT_RULE",
    "DIGITS",
    "LEGACY_RULE",
    "LEGACY_SPECIALS",
    "LETTERS",
    "LOOKALIKES",
    "PASSWORD_LENGTH",
    "RULES",
    "InvalidPasswordError",
    "LocalPasswordSource",
    "PasswordGenerator",
    "PasswordRule",
    "PasswordSource",
    "VaultPasswordSource",
    "check_vnc_password",
    "is_valid_vnc_password",
    "rule_named",
    "rule_of",
    "verify",
]

PASSWORD_LENGTH = 6
LETTERS = string.ascii_letters
DIGITS = string.digits
LEGACY_SPECIALS = "()`~!@#$%^&*-+=|{}[]:;'<>,.?/"
LOOKALIKES = "0O1lI"
"""Characters people confuse when they read a password off a screen."""


@dataclass(frozen=True, slots=True)
class PasswordRule:
    """One documented ``Passwd`` rule: a length range and character classes, ``min_classes`` of
    which must appear; ``length`` is what the local generator draws."""

    name: str
    min_length: int
    max_length: int
    classes: tuple[str, ...]
    min_classes: int
    length: int
    policy_file: str
    """The Vault/OpenBao password policy that follows this rule (rotator/data/vault/)."""
    summary: str

    @property
    def alphabet(self) -> str:
        return "".join(self.classes)

    def violation(self, value: str) -> str | None:
        """Why ``value`` breaks the rule, in words that do not reveal it; None when it complies."""
        if not self.min_length <= len(value) <= self.max_length:
            need = (
                f"exactly {self.min_length}"
                if self.min_length == self.max_length
                else f"{self.min_length} to {self.max_length}"
            )
            return f"length is {len(value)}, the API needs {need}"
        chars = set(value)
        if not chars <= set(self.alphabet):
            return f"contains characters outside the {self.name} rule's alphabet"
        present = sum(1 for cls in self.classes if chars & set(cls))
        if present < self.min_classes:
            return f"has {present} of the character classes, the API needs {self.min_classes}"
        return None


CURRENT_RULE = PasswordRule(
    name="current",
    min_length=PASSWORD_LENGTH,
    max_length=PASSWORD_LENGTH,
    classes=(LETTERS, DIGITS),
    min_classes=2,
    length=PASSWORD_LENGTH,
    policy_file="ehpc-vnc-password.hcl",
    summary="exactly 6 ASCII letters and digits, at least one of each",
)
LEGACY_RULE = PasswordRule(
    name="legacy",
    min_length=8,
    max_length=30,
    classes=(string.ascii_uppercase, string.ascii_lowercase, DIGITS, LEGACY_SPECIALS),
    min_classes=3,
    length=8,
    policy_file="ehpc-vnc-legacy-password.hcl",
    summary="8 to 30 characters from at least 3 of upper case, lower case, digits, specials",
)
RULES = {rule.name: rule for rule in (CURRENT_RULE, LEGACY_RULE)}


def rule_named(name: str) -> PasswordRule:
    """The rule profile ``passwords.rule`` names; ConfigError for an unknown one."""
    rule = RULES.get(name)
    if rule is None:
        raise ConfigError(
            f"{name!r} is not a rule; use one of {', '.join(RULES)}", key="passwords.rule"
        )
    return rule


def rule_of(source: object) -> PasswordRule:
    """The rule a password source generates for (a source that does not say: the current one)."""
    rule = getattr(source, "rule", None)
    return rule if isinstance(rule, PasswordRule) else CURRENT_RULE


class InvalidPasswordError(ConfigError):
    """A generated password breaks the API's rule. The message never contains the value."""

    code = "InvalidGeneratedPassword"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, key="passwords")
        self.reason = reason


def _rule_violation(value: str, rule: PasswordRule = CURRENT_RULE) -> str | None:
    if rule is CURRENT_RULE:  # the current rule's own words, kept for people who know them
        if len(value) == PASSWORD_LENGTH and not set(value) <= set(LETTERS + DIGITS):
            return "contains characters other than ASCII letters and digits"
        if len(value) == PASSWORD_LENGTH and not set(value) & set(LETTERS):
            return "has no letter"
        if len(value) == PASSWORD_LENGTH and not set(value) & set(DIGITS):
            return "has no digit"
    return rule.violation(value)


def is_valid_vnc_password(value: str, rule: PasswordRule = CURRENT_RULE) -> bool:
    """Whether ``value`` complies with ``rule`` (default: exactly 6 letters/digits, both kinds)."""
    return _rule_violation(value, rule) is None


def check_vnc_password(secret: Secret, rule: PasswordRule = CURRENT_RULE) -> None:
    """Raise :class:`InvalidPasswordError` (without the value) unless ``secret`` complies."""
    reason = _rule_violation(secret.reveal(), rule)
    if reason is not None:
        raise InvalidPasswordError(f"generated password rejected: {reason}", reason=reason)


class PasswordSource(Protocol):
    """Where new VNC passwords come from."""

    async def generate(self) -> Secret: ...


class PasswordGenerator(Protocol):
    """What :class:`VaultPasswordSource` needs: Vault's password-policy endpoint."""

    async def generate_password(self, policy_name: str) -> Secret: ...


class LocalPasswordSource:
    """Passwords from the operating system's CSPRNG, uniform over every compliant string.

    Each character is drawn uniformly from the alphabet and whole candidates that break the rule
    are thrown away (rejection sampling), which keeps every compliant password equally likely;
    forcing "one letter here, one digit there" would not.
    """

    def __init__(
        self, *, exclude_lookalikes: bool = False, rule: PasswordRule = CURRENT_RULE
    ) -> None:
        drop = set(LOOKALIKES) if exclude_lookalikes else set()
        self.alphabet = "".join(c for c in rule.alphabet if c not in drop)
        self.exclude_lookalikes = exclude_lookalikes
        self.rule = rule

    @property
    def description(self) -> str:
        suffix = " without look-alikes" if self.exclude_lookalikes else ""
        return f"local generator{suffix} ({self.rule.name} rule)"

    def generate_now(self) -> Secret:
        """The synchronous draw behind :meth:`generate` (cheap; no I/O)."""
        while True:
            candidate = "".join(secrets.choice(self.alphabet) for _ in range(self.rule.length))
            if is_valid_vnc_password(candidate, self.rule):
                return Secret(candidate)

    async def generate(self) -> Secret:
        return self.generate_now()

    def __repr__(self) -> str:
        return (
            f"LocalPasswordSource(exclude_lookalikes={self.exclude_lookalikes}, "
            f"rule={self.rule.name!r})"
        )


class VaultPasswordSource:
    """Passwords from a Vault/OpenBao password policy (``sys/policies/password/<name>``)."""

    def __init__(
        self,
        generator: PasswordGenerator,
        policy_name: str = "ehpc-vnc",
        *,
        rule: PasswordRule = CURRENT_RULE,
    ) -> None:
        self._generator = generator
        self.policy_name = policy_name
        self.rule = rule

    @property
    def description(self) -> str:
        return f"Vault password policy {self.policy_name!r}"

    async def generate(self) -> Secret:
        password = await self._generator.generate_password(self.policy_name)
        reason = _rule_violation(password.reveal(), self.rule)
        if reason is not None:
            raise InvalidPasswordError(
                f"password policy {self.policy_name!r} produced a password the API rejects: "
                f"{reason}; fix the policy (see rotator/data/vault/{self.rule.policy_file}, "
                f"passwords.rule = {self.rule.name!r})",
                reason=reason,
            )
        return password

    def __repr__(self) -> str:
        return f"VaultPasswordSource(policy_name={self.policy_name!r})"


async def verify(source: PasswordSource, samples: int = 20) -> None:
    """Startup check: ``samples`` passwords from ``source`` all comply, else :class:`ConfigError`.

    A policy that only sometimes breaks the rule (say, one that allows 6-8 characters) is caught
    with high probability by a handful of samples; the per-password check catches the rest.
    """
    name = getattr(source, "description", type(source).__name__)
    rule = rule_of(source)
    for _ in range(samples):
        try:
            password = await source.generate()
        except InvalidPasswordError as exc:
            reason: str | None = exc.reason
        else:
            reason = _rule_violation(password.reveal(), rule)
        if reason is not None:
            raise ConfigError(
                f"{name} produces passwords the API rejects: {reason}", key="passwords"
            )
