"""The lean Vault transport keeps requests' behaviour where hvac and rotator rely on it."""

from __future__ import annotations

import pytest
import requests

from rotator.vault.devserver import free_port
from rotator.vault.transport import Urllib3Session, session_for


def test_a_configured_proxy_keeps_plain_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    session = session_for("https://vault.example.com:8200", verify=True, pool_size=2)

    assert isinstance(session, requests.Session)
    assert session.proxies["https"] == "http://proxy.internal:3128"
    assert session.trust_env is False


def test_without_a_proxy_the_urllib3_session_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)

    session = session_for("https://vault.example.com:8200", verify=True, pool_size=2)

    assert isinstance(session, Urllib3Session)


def test_a_refused_connection_raises_requests_connection_error() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    session = Urllib3Session(verify=True, pool_size=1, origin=addr)
    with pytest.raises(requests.exceptions.ConnectionError) as raised:
        session.request("GET", f"{addr}/v1/sys/health", timeout=2)
    assert not isinstance(raised.value, requests.exceptions.Timeout)
    session.close()
