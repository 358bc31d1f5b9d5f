"""Configuration errors on the wire side: zero timeouts, unreadable secret files, ids with a
trailing newline. Each is a ConfigError naming the key (the CLI exits 2, no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.cli import main
from rotator.config import load_settings
from rotator.ehpc.client import Endpoints
from rotator.errors import ConfigError, VaultError
from rotator.vault.settings import VaultSettings
from rotator.vault.store import VaultStore

TIMEOUTS = [
    ("ehpc", "connect_timeout"),
    ("ehpc", "request_timeout"),
    ("vault", "timeout"),
    ("rotation", "cluster_deadline"),
    ("rotation", "claim_ttl"),
]


@pytest.mark.parametrize(("section", "key"), TIMEOUTS)
@pytest.mark.parametrize("value", ["0s", "0", "0ms"])
def test_a_zero_timeout_is_a_config_error(section: str, key: str, value: str) -> None:
    env = {f"ROTATOR_{section}_{key}".upper(): value}
    with pytest.raises(ConfigError) as refused:
        load_settings(None, environ=env)
    assert refused.value.key == f"{section}.{key}"
    assert "0s" in refused.value.message


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_cli_exits_2_on_a_zero_request_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, '[ehpc]\nrequest_timeout = "0s"\n')
    assert main(["plan", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ehpc.request_timeout" in err
    assert "Traceback" not in err


def test_the_cli_exits_2_on_a_non_utf8_access_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "ak-secret"
    secret.write_bytes(b"\xffsecret-bytes\xfe")
    path = _config(
        tmp_path,
        f"""
[credentials]
source = "static"
access_key_id = "LTAI-x"
access_key_secret_file = "{secret}"
[vault]
addr = "https://127.0.0.1:1"
""",
    )
    assert main(["rotate", "--all", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "credentials.access_key_secret_file" in err
    assert "UTF-8" in err
    assert "Traceback" not in err
    assert "secret-bytes" not in err


def test_a_directory_as_token_file_is_a_config_error(tmp_path: Path) -> None:
    settings = VaultSettings(token_file=str(tmp_path))
    with pytest.raises(ConfigError) as refused:
        settings.resolve_token()
    assert refused.value.key == "vault.token_file"
    assert "directory" in refused.value.message


def test_a_non_utf8_token_file_is_a_config_error(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfehvs.bytes")
    with pytest.raises(ConfigError) as refused:
        VaultSettings(token_file=str(token_file)).resolve_token()
    assert refused.value.key == "vault.token_file"
    assert "hvs.bytes" not in str(refused.value)


@pytest.mark.parametrize("region", ["cn-hangzhou\n", "cn-hangzhou\nevil", "\ncn-hangzhou"])
def test_a_region_with_a_newline_is_refused(region: str) -> None:
    with pytest.raises(ConfigError):
        Endpoints().url_for(region)


@pytest.mark.parametrize("cluster_id", ["ehpc-hz-1\n", "ehpc-hz-1\n/../x"])
def test_a_cluster_id_with_a_newline_is_refused(cluster_id: str) -> None:
    class _Client:
        settings = VaultSettings()

    store = VaultStore(_Client())  # type: ignore[arg-type]
    with pytest.raises(VaultError) as refused:
        store.root_path(cluster_id)
    assert refused.value.code == "InvalidPathSegment"
