"""Vault's transport rule: https, plain http only for an allowed loopback host, and no redirect
that would carry the token to another origin. Real local HTTP servers, both transports."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from rotator.config import VaultConfig
from rotator.errors import ConfigError, RetryClass, VaultError
from rotator.vault.settings import VaultSettings
from rotator.vault.transport import GuardedRequestsSession, Urllib3Session

TOKEN = "hvs.transport-rule-token"


# -- the address rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "addr",
    ["https://vault.example.com:8200", "https://127.0.0.1:8200", "https://[::1]:8200"],
)
def test_https_is_always_accepted(addr: str) -> None:
    assert VaultSettings(addr=addr).addr == addr


@pytest.mark.parametrize(
    "addr", ["http://127.0.0.1:8200", "http://localhost:8200", "http://[::1]:8200"]
)
def test_plain_http_to_loopback_needs_the_explicit_switch(addr: str) -> None:
    with pytest.raises(ConfigError) as refused:
        VaultSettings(addr=addr)
    assert refused.value.key == "vault.allow_insecure_http"
    assert VaultSettings(addr=addr, allow_insecure_http=True).addr == addr


@pytest.mark.parametrize(
    "addr",
    [
        "http://vault.example.com:8200",
        "http://10.0.0.5:8200",
        "http://localhost.evil.example:8200",
        "http://127.0.0.1.nip.io:8200",
    ],
)
def test_plain_http_to_another_host_is_refused_even_when_allowed(addr: str) -> None:
    with pytest.raises(ConfigError) as refused:
        VaultSettings(addr=addr, allow_insecure_http=True)
    assert refused.value.key == "vault.addr"
    assert "https://" in refused.value.message


@pytest.mark.parametrize("addr", ["ftp://vault:21", "vault.example.com:8200", "https://", "x"])
def test_anything_else_is_not_a_vault_address(addr: str) -> None:
    with pytest.raises(ConfigError) as refused:
        VaultSettings(addr=addr, allow_insecure_http=True)
    assert refused.value.key == "vault.addr"


def test_the_switch_comes_from_the_config_file_or_the_environment() -> None:
    env = {"VAULT_ADDR": "http://127.0.0.1:8200"}
    with pytest.raises(ConfigError):
        VaultSettings.from_env(env)
    with pytest.raises(ConfigError):
        VaultSettings.from_config(VaultConfig(), env)
    allowed = VaultSettings.from_config(VaultConfig(allow_insecure_http=True), env)
    assert allowed.addr == "http://127.0.0.1:8200"
    from_env = VaultSettings.from_env({**env, "ROTATOR_VAULT_ALLOW_INSECURE_HTTP": "true"})
    assert from_env.allow_insecure_http


# -- redirects: real servers ------------------------------------------------------------------


@dataclass
class Recorder:
    """A tiny HTTP server that records every request and answers what it is told."""

    status: int = 200
    location: str = ""
    then_ok: bool = False
    """Answer the status once, then 200 (a redirect that is followed lands on a 200)."""
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _serve(recorder: Recorder) -> Iterator[Recorder]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorder.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length) if length else b"",
                }
            )
            body = b'{"data": {"ok": true}}'
            self.send_response(recorder.status)
            if recorder.location:
                self.send_header("Location", recorder.location)
            if recorder.then_ok:
                recorder.status, recorder.location = 200, ""
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _any  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def vault_like() -> Iterator[Recorder]:
    yield from _serve(Recorder())


@pytest.fixture
def elsewhere() -> Iterator[Recorder]:
    yield from _serve(Recorder())


def _sessions(origin: str) -> list[Any]:
    return [
        Urllib3Session(verify=True, pool_size=1, origin=origin),
        GuardedRequestsSession(origin=origin, verify=True, proxies={}),
    ]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("transport", ["urllib3", "requests"])
def test_a_redirect_to_another_origin_is_refused_and_the_token_stays_home(
    vault_like: Recorder, elsewhere: Recorder, status: int, transport: str
) -> None:
    vault_like.status = status
    vault_like.location = f"{elsewhere.url}/v1/secret/data/stolen"
    session = _sessions(vault_like.url)[0 if transport == "urllib3" else 1]
    with pytest.raises(VaultError) as refused:
        session.request(
            "POST",
            f"{vault_like.url}/v1/secret/data/x",
            headers={"X-Vault-Token": TOKEN},
            json={"data": {"password": "p4ss"}},
            timeout=5,
        )
    session.close()
    assert elsewhere.seen == [], "the redirect carried the token to another origin"
    assert len(vault_like.seen) == 1
    error = refused.value
    assert error.code == "VaultRedirect"
    assert error.retry_class is RetryClass.TERMINAL
    assert "redirect" in error.message
    assert f"{elsewhere.url}/v1/secret/data/stolen" in error.message
    assert TOKEN not in str(error)


@pytest.mark.parametrize("transport", ["urllib3", "requests"])
def test_a_redirect_to_another_scheme_on_the_same_host_is_refused(
    vault_like: Recorder, transport: str
) -> None:
    port = vault_like.url.rsplit(":", 1)[1]
    vault_like.status = 307
    vault_like.location = f"https://127.0.0.1:{port}/v1/sys/health"
    session = _sessions(vault_like.url)[0 if transport == "urllib3" else 1]
    with pytest.raises(VaultError, match="redirect"):
        session.request("GET", f"{vault_like.url}/v1/sys/health", timeout=5)
    session.close()
    assert len(vault_like.seen) == 1


@pytest.mark.parametrize("transport", ["urllib3", "requests"])
def test_a_redirect_within_the_origin_is_followed(
    vault_like: Recorder, elsewhere: Recorder, transport: str
) -> None:
    vault_like.status = 307
    vault_like.location = "/v1/secret/data/moved"  # relative: the same origin
    vault_like.then_ok = True
    session = _sessions(vault_like.url)[0 if transport == "urllib3" else 1]
    response = session.request(
        "GET", f"{vault_like.url}/v1/secret/data/x", headers={"X-Vault-Token": TOKEN}, timeout=5
    )
    session.close()
    assert response.status_code == 200
    assert [s["path"] for s in vault_like.seen] == ["/v1/secret/data/x", "/v1/secret/data/moved"]
    assert vault_like.seen[1]["headers"]["x-vault-token"] == TOKEN
    assert elsewhere.seen == []


def test_the_requests_session_raises_requests_errors_for_transport_failures() -> None:
    session = GuardedRequestsSession(origin="http://127.0.0.1:1", verify=True, proxies={})
    with pytest.raises(requests.exceptions.ConnectionError):
        session.request("GET", "http://127.0.0.1:1/v1/sys/health", timeout=2)
    session.close()
