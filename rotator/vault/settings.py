"""How to reach and authenticate to Vault/OpenBao.

    settings = VaultSettings.from_env()                        # VAULT_ADDR, VAULT_TOKEN, ...
    settings = VaultSettings.from_config(config.vault)         # config file, then environment

Tokens are held as :class:`~rotator.secret.Secret`; files (token file, AppRole secret_id,
Kubernetes service-account JWT) are read when logging in, so a rotated file is picked up on
the next re-authentication.

Token precedence for ``auth_method = "token"``: an explicit token (``VAULT_TOKEN``), then
``token_file``, then ``~/.vault-token`` (what ``vault login`` / ``bao login`` writes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from rotator.config import VaultConfig
from rotator.errors import ConfigError
from rotator.secret import Secret, read_secret_file
from rotator.vault.transport import check_vault_addr

__all__ = ["AuthMethod", "VaultSettings"]

AuthMethod = Literal["token", "approle", "kubernetes"]
"""How the rotator logs in to Vault."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _env_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"expected true or false, got {value!r}", key=name)


@dataclass(frozen=True, slots=True)
class VaultSettings(VaultConfig):
    """The ``[vault]`` config section, plus what only the environment may give (the token)."""

    addr: str = "https://127.0.0.1:8200"
    token: Secret | None = None

    def __post_init__(self) -> None:
        check_vault_addr(self.addr, allow_insecure_http=self.allow_insecure_http)
        if self.max_workers < 1:
            raise ConfigError("must be >= 1", key="vault.max_workers")
        if self.timeout <= 0:
            raise ConfigError("must be longer than 0s", key="vault.timeout")
        if self.auth_method == "approle" and not (self.role_id and self.secret_id_file):
            raise ConfigError(
                "auth_method = 'approle' needs role_id and secret_id_file", key="vault"
            )
        if self.auth_method == "kubernetes" and not self.kubernetes_role:
            raise ConfigError("auth_method = 'kubernetes' needs kubernetes_role", key="vault")
        for key in ("kv_mount", "root_path", "vnc_path", "runs_path"):
            value = getattr(self, key)
            if not value or value.startswith("/") or value.endswith("/") or ".." in value:
                raise ConfigError(
                    f"{value!r} must be a relative path without leading/trailing '/' or '..'",
                    key=f"vault.{key}",
                )

    @property
    def verify(self) -> bool | str:
        """What ``requests``/hvac takes as ``verify``: a CA bundle path, or on/off."""
        if self.skip_verify:
            return False
        return self.ca_cert or True

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> VaultSettings:
        """Settings from the standard Vault variables (``BAO_*`` are accepted as fallbacks)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(f"VAULT_{name}") or env.get(f"BAO_{name}") or ""

        values: dict[str, object] = {}
        if get("ADDR"):
            values["addr"] = get("ADDR")
        if get("NAMESPACE"):
            values["namespace"] = get("NAMESPACE")
        if get("CACERT"):
            values["ca_cert"] = get("CACERT")
        if get("SKIP_VERIFY"):
            values["skip_verify"] = _env_bool(get("SKIP_VERIFY"), "VAULT_SKIP_VERIFY")
        if get("TOKEN"):
            values["token"] = Secret(get("TOKEN"))
        if env.get("ROTATOR_VAULT_ALLOW_INSECURE_HTTP"):
            values["allow_insecure_http"] = _env_bool(
                env["ROTATOR_VAULT_ALLOW_INSECURE_HTTP"], "ROTATOR_VAULT_ALLOW_INSECURE_HTTP"
            )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_config(
        cls, config: VaultConfig, environ: Mapping[str, str] | None = None
    ) -> VaultSettings:
        """The config file's ``[vault]`` section; empty keys fall back to the environment."""
        # The config's switch applies to an address from the environment too.
        allow = {"allow_insecure_http": True} if config.allow_insecure_http else {}
        base = cls.from_env(environ, **allow)
        values = {f.name: getattr(config, f.name) for f in fields(VaultConfig)}
        values["allow_insecure_http"] = config.allow_insecure_http or base.allow_insecure_http
        for key in ("addr", "namespace", "ca_cert"):
            values[key] = values[key] or getattr(base, key)
        values["skip_verify"] = config.skip_verify or base.skip_verify
        return replace(base, **values)

    def resolve_token(self) -> Secret:
        """The token for ``auth_method = "token"``, read now (files may have been rotated)."""
        if self.token is not None and self.token:
            return self.token
        candidates = [Path(self.token_file)] if self.token_file else []
        candidates.append(Path.home() / ".vault-token")
        for path in candidates:
            try:
                value = path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                if path == candidates[0] and self.token_file:
                    raise ConfigError(
                        f"token file {path} does not exist", key="vault.token_file"
                    ) from None
                continue
            except PermissionError:
                raise ConfigError(f"token file {path} is not readable", key="vault") from None
            except IsADirectoryError:
                raise ConfigError(
                    f"token file {path} is a directory, not a file", key="vault.token_file"
                ) from None
            except OSError as exc:
                raise ConfigError(
                    f"cannot read token file {path}: {exc.strerror}", key="vault.token_file"
                ) from None
            except UnicodeDecodeError:
                raise ConfigError(
                    f"token file {path} is not UTF-8 text", key="vault.token_file"
                ) from None
            if value:
                return Secret(value)
        raise ConfigError(
            "no Vault token: set VAULT_TOKEN, vault.token_file, or log in so that "
            "~/.vault-token exists (or use auth_method = 'approle' / 'kubernetes')",
            key="vault",
        )

    def read_secret_file(self, path: str, key: str) -> Secret:
        """A credential file (AppRole secret_id, Kubernetes JWT), stripped."""
        return read_secret_file(path, key=key)
