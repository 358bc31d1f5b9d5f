"""The aiohttp KV transport's pieces that need no server: the setting, TLS contexts, how network
failures are named, and that a proxy keeps the KV calls on hvac."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import requests

from rotator.config import load_settings
from rotator.errors import ConfigError
from rotator.secret import Secret
from rotator.vault.client import VaultClient, map_vault_error
from rotator.vault.kv_aio import _as_requests_error
from rotator.vault.settings import VaultSettings
from rotator.vault.transport import ssl_context_for


def test_the_transport_setting_defaults_to_aiohttp_and_is_checked(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).vault.transport == "aiohttp"
    path = tmp_path / "rotator.toml"
    path.write_text('[vault]\ntransport = "hvac"\n')
    assert load_settings(path, environ={}).vault.transport == "hvac"
    path.write_text('[vault]\ntransport = "httpx"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.key == "vault.transport"


def test_tls_contexts_follow_ca_cert_and_skip_verify(tmp_path: Path) -> None:
    assert ssl_context_for(False).verify_mode is ssl.CERT_NONE
    assert ssl_context_for(True).verify_mode is ssl.CERT_REQUIRED
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError) as caught:
        ssl_context_for(str(bogus))
    assert caught.value.key == "vault.ca_cert"


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (TimeoutError(), requests.exceptions.Timeout, "did not answer"),
        (aiohttp.ServerTimeoutError("read"), requests.exceptions.Timeout, "did not answer"),
        (aiohttp.ServerDisconnectedError(), requests.exceptions.ConnectionError, "cannot connect"),
        (ConnectionResetError(), requests.exceptions.ConnectionError, "cannot connect"),
        (aiohttp.ClientPayloadError("cut"), requests.exceptions.ConnectionError, "cannot connect"),
        (ssl.SSLError("bad cert"), requests.exceptions.SSLError, "TLS to"),
        (aiohttp.ClientError("other"), requests.exceptions.RequestException, "failed"),
    ],
)
def test_network_failures_map_as_the_urllib3_session_maps_them(
    raised: BaseException, expected: type[Exception], message: str
) -> None:
    mapped = _as_requests_error(raised)
    assert type(mapped) is expected
    settings = VaultSettings(addr="https://vault.example:8200")
    error = map_vault_error(mapped, op="read", path="secret/data/x", settings=settings)
    assert message in error.message


@pytest.mark.asyncio
async def test_a_proxy_for_vault_keeps_the_kv_calls_on_hvac(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    settings = VaultSettings(
        addr="https://vault.example:8200", token=Secret("t"), transport="aiohttp"
    )
    async with VaultClient(settings) as client:
        assert client._aio is None
    monkeypatch.delenv("https_proxy")
    async with VaultClient(settings) as client:
        assert client._aio is not None
