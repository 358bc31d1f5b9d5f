"""VNC passwords: the API's rule, and where new passwords come from.

    source = LocalPasswordSource()                  # or VaultPasswordSource(store, "ehpc-vnc")
    await verify(source)                            # at startup: ConfigError if it cannot comply
    password = await source.generate()              # a Secret, checked against the rule

``ModifyVisualServicePasswd`` accepts exactly 6 ASCII letters and digits with at least one of each.
Every password is checked against that rule before it is used, so a source that cannot comply
fails once at startup instead of once per cluster at the API.

This module knows nothing about Vault: :class:`VaultPasswordSource` takes any object with an
``async generate_password(name)`` (the real one is :class:`rotator.vault.store.VaultStore`).
"""

from __future__ import annotations

import secrets
import string
from typing import Protocol

from rotator.errors import ConfigError
from rotator.secret import Secret

__all__ = [
    "DIGITS",
    "LETTERS",
    "LOOKALIKES",
    "PASSWORD_LENGTH",
    "InvalidPasswordError",
    "LocalPasswordSource",
    "PasswordGenerator",
    "PasswordSource",
    "VaultPasswordSource",
    "check_vnc_password",
    "is_valid_vnc_password",
    "verify",
]

PASSWORD_LENGTH = 6
LETTERS = string.ascii_letters
DIGITS = string.digits
LOOKALIKES = "0O1lI"
"""Characters people confuse when they read a password off a screen."""

_LETTER_SET = frozenset(LETTERS)
_DIGIT_SET = frozenset(DIGITS)
_ALLOWED = _LETTER_SET | _DIGIT_SET


class InvalidPasswordError(ConfigError):
    """A generated password breaks the API's rule. The message never contains the value."""

    code = "InvalidGeneratedPassword"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, key="passwords")
        self.reason = reason


def _rule_violation(value: str) -> str | None:
    """Why ``value`` breaks the rule, in words that do not reveal it; None when it complies."""
    if len(value) != PASSWORD_LENGTH:
        return f"length is {len(value)}, the API needs exactly {PASSWORD_LENGTH}"
    if not set(value) <= _ALLOWED:
        return "contains characters other than ASCII letters and digits"
    if not _LETTER_SET & set(value):
        return "has no letter"
    if not _DIGIT_SET & set(value):
        return "has no digit"
    return None


def is_valid_vnc_password(value: str) -> bool:
    """Exactly 6 ASCII letters/digits, at least one letter and at least one digit."""
    return _rule_violation(value) is None


def check_vnc_password(secret: Secret) -> None:
    """Raise :class:`InvalidPasswordError` (without the value) unless ``secret`` complies."""
    reason = _rule_violation(secret.reveal())
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

    def __init__(self, *, exclude_lookalikes: bool = False) -> None:
        drop = set(LOOKALIKES) if exclude_lookalikes else set()
        self.alphabet = "".join(c for c in LETTERS + DIGITS if c not in drop)
        self.exclude_lookalikes = exclude_lookalikes

    @property
    def description(self) -> str:
        suffix = " without look-alikes" if self.exclude_lookalikes else ""
        return f"local generator{suffix}"

    def generate_now(self) -> Secret:
        """The synchronous draw behind :meth:`generate` (cheap; no I/O)."""
        while True:
            candidate = "".join(secrets.choice(self.alphabet) for _ in range(PASSWORD_LENGTH))
            if is_valid_vnc_password(candidate):
                return Secret(candidate)

    async def generate(self) -> Secret:
        return self.generate_now()

    def __repr__(self) -> str:
        return f"LocalPasswordSource(exclude_lookalikes={self.exclude_lookalikes})"


class VaultPasswordSource:
    """Passwords from a Vault/OpenBao password policy (``sys/policies/password/<name>``)."""

    def __init__(self, generator: PasswordGenerator, policy_name: str = "ehpc-vnc") -> None:
        self._generator = generator
        self.policy_name = policy_name

    @property
    def description(self) -> str:
        return f"Vault password policy {self.policy_name!r}"

    async def generate(self) -> Secret:
        password = await self._generator.generate_password(self.policy_name)
        reason = _rule_violation(password.reveal())
        if reason is not None:
            raise InvalidPasswordError(
                f"password policy {self.policy_name!r} produced a password the API rejects: "
                f"{reason}; fix the policy (see rotator/data/vault/ehpc-vnc-password.hcl)",
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
    for _ in range(samples):
        try:
            password = await source.generate()
        except InvalidPasswordError as exc:
            reason: str | None = exc.reason
        else:
            reason = _rule_violation(password.reveal())
        if reason is not None:
            raise ConfigError(
                f"{name} produces passwords the API rejects: {reason}", key="passwords"
            )
