"""VaultSettings from the environment and the config file, token resolution, and TLS against a
real OpenBao serving HTTPS with its own CA (VAULT_CACERT / VAULT_SKIP_VERIFY)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config import VaultConfig
from rotator.errors import ConfigError, RetryClass, VaultError
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import start_openbao
from rotator.vault.settings import VaultSettings

pytestmark = pytest.mark.integration


def test_from_env_reads_the_standard_variables() -> None:
    settings = VaultSettings.from_env(
        {
            "VAULT_ADDR": "https://vault.internal:8200",
            "VAULT_TOKEN": "s.abcdef",
            "VAULT_NAMESPACE": "team-a",
            "VAULT_CACERT": "/etc/ssl/vault-ca.pem",
            "VAULT_SKIP_VERIFY": "false",
        }
    )
    assert settings.addr == "https://vault.internal:8200"
    assert settings.token == Secret("s.abcdef")
    assert (settings.namespace, settings.ca_cert) == ("team-a", "/etc/ssl/vault-ca.pem")
    assert settings.verify == "/etc/ssl/vault-ca.pem"
    assert "s.abcdef" not in repr(settings)


def test_bao_variables_are_a_fallback() -> None:
    settings = VaultSettings.from_env({"BAO_ADDR": "https://127.0.0.1:1", "BAO_TOKEN": "t"})
    assert (settings.addr, settings.token) == ("https://127.0.0.1:1", Secret("t"))
    both = VaultSettings.from_env({"BAO_ADDR": "https://b", "VAULT_ADDR": "https://v"})
    assert both.addr == "https://v"


def test_skip_verify_turns_verification_off_and_bad_values_are_refused() -> None:
    assert VaultSettings.from_env({"VAULT_SKIP_VERIFY": "1"}).verify is False
    with pytest.raises(ConfigError, match="VAULT_SKIP_VERIFY"):
        VaultSettings.from_env({"VAULT_SKIP_VERIFY": "maybe"})


def test_config_file_wins_over_the_environment_where_set() -> None:
    config = VaultConfig(addr="https://from-config:8200", vnc_path="x/vnc", max_workers=3)
    env = {"VAULT_ADDR": "https://from-env:8200", "VAULT_NAMESPACE": "ns"}
    settings = VaultSettings.from_config(config, env)
    assert (settings.addr, settings.namespace) == ("https://from-config:8200", "ns")
    assert (settings.vnc_path, settings.max_workers) == ("x/vnc", 3)


def test_token_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".vault-token").write_text("from-home\n")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert VaultSettings().resolve_token() == Secret("from-home")
    assert VaultSettings(token_file=str(token_file)).resolve_token() == Secret("from-file")
    explicit = VaultSettings(token=Secret("explicit"), token_file=str(token_file))
    assert explicit.resolve_token() == Secret("explicit")


def test_missing_token_says_how_to_provide_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no Vault token: set VAULT_TOKEN"):
        VaultSettings().resolve_token()
    with pytest.raises(ConfigError, match="does not exist"):
        VaultSettings(token_file=str(tmp_path / "nope")).resolve_token()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"auth_method": "approle"}, "needs role_id and secret_id_file"),
        ({"auth_method": "kubernetes"}, "needs kubernetes_role"),
        ({"vnc_path": "/ehpc/vnc"}, "vault.vnc_path"),
        ({"root_path": "ehpc/../x"}, "vault.root_path"),
        ({"max_workers": 0}, "vault.max_workers"),
    ],
)
def test_inconsistent_settings_fail_at_startup(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VaultSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_tls_with_the_right_ca_without_it_and_with_verification_off(
    tmp_path: Path,
) -> None:
    with start_openbao(tmp_path, tls=True) as server:
        assert server.ca_cert is not None
        base = VaultSettings(addr=server.addr, token=server.root_token, timeout=3.0)
        async with VaultClient(base) as untrusted:
            with pytest.raises(VaultError) as caught:
                await untrusted.read("sys/mounts")
        assert caught.value.code == "VaultTlsError"
        assert caught.value.retry_class is RetryClass.TERMINAL
        assert "VAULT_CACERT" in caught.value.message

        env = {"VAULT_ADDR": server.addr, "VAULT_CACERT": str(server.ca_cert)}
        trusted = VaultSettings.from_env(env, token=server.root_token)
        async with VaultClient(trusted) as client:
            assert await client.health()

        insecure = VaultSettings.from_env(
            {"VAULT_ADDR": server.addr, "VAULT_SKIP_VERIFY": "true"}, token=server.root_token
        )
        async with VaultClient(insecure) as client:
            assert await client.health()
