"""VaultClient against a fake Vault (a proxy in front of it) over real sockets: redirects must not
carry the token away, and an answer without the expected shape is an error, not emptiness."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from rotator.errors import RetryClass, VaultError
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.settings import VaultSettings
from rotator.vault.store import VaultStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

TOKEN = "hvs.wire-test-token"
LOOKUP_OK = {"data": {"ttl": 0, "renewable": False, "policies": ["root"]}}


@dataclass
class FakeVault:
    """Answers ``routes[(method, path)]`` as (status, JSON body, headers); records requests.

    A threaded ``http.server``: it takes Vault's ``LIST`` method, which aiohttp's parser refuses.
    """

    routes: dict[tuple[str, str], tuple[int, Any, dict[str, str]]] = field(default_factory=dict)
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def answer(
        self, method: str, path: str, token: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        path = path.split("?", 1)[0]
        self.seen.append((method, path, token))
        status, body, headers = self.routes.get((method, path), (404, {"errors": []}, {}))
        return status, (body if isinstance(body, str) else json.dumps(body)).encode(), headers

    def settings(self) -> VaultSettings:
        return VaultSettings(
            addr=self.url.rstrip("/"), allow_insecure_http=True, token=Secret(TOKEN), timeout=5
        )


def _serve() -> Iterator[FakeVault]:
    fake = FakeVault()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, body, headers = fake.answer(
                self.command, self.path, self.headers.get("X-Vault-Token")
            )
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = _any  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    yield from _serve()


@pytest.fixture
def elsewhere() -> Iterator[FakeVault]:
    yield from _serve()


# -- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307, 308])
async def test_a_redirect_to_another_host_is_an_error_and_the_token_stays(
    vault: FakeVault, elsewhere: FakeVault, status: int
) -> None:
    target = f"{elsewhere.url}v1/auth/token/lookup-self"
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (status, {}, {"Location": target})
    async with VaultClient(vault.settings()) as client:
        with pytest.raises(VaultError) as refused:
            await client.read("secret/data/x")
    assert elsewhere.seen == []
    assert refused.value.code == "VaultRedirect"
    assert refused.value.retry_class is RetryClass.TERMINAL
    assert "redirect" in refused.value.message
    assert target in refused.value.message
    assert TOKEN not in str(refused.value)


async def test_a_redirect_within_vault_is_followed(vault: FakeVault) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    vault.routes[("GET", "/v1/secret/data/old")] = (
        307,
        {},
        {"Location": "/v1/secret/data/new"},
    )
    vault.routes[("GET", "/v1/secret/data/new")] = (
        200,
        {"data": {"data": {"k": "v"}, "metadata": {"version": 1}}},
        {},
    )
    async with VaultClient(vault.settings()) as client:
        body = await client.kv_read("secret", "old")
    assert body == {"data": {"k": "v"}, "metadata": {"version": 1}}
    assert [s[1] for s in vault.seen][-2:] == ["/v1/secret/data/old", "/v1/secret/data/new"]


# -- an answer without the expected shape -----------------------------------------------------

EMPTY_ANSWERS = [
    pytest.param({}, id="empty-object"),
    pytest.param({"data": None}, id="data-null"),
    pytest.param({"data": []}, id="data-list"),
    pytest.param({"warnings": ["proxy"]}, id="no-data"),
]


@pytest.mark.parametrize("answer", EMPTY_ANSWERS)
async def test_lookup_self_without_data_is_an_error(vault: FakeVault, answer: Any) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, answer, {})
    async with VaultClient(vault.settings()) as client:
        with pytest.raises(VaultError) as caught:
            await client.token()
    assert caught.value.code == "VaultInvalidResponse"
    assert "auth/token/lookup-self" in caught.value.message
    assert client.logins == 0


@pytest.mark.parametrize("answer", [*EMPTY_ANSWERS, pytest.param({"data": {}}, id="no-keys")])
async def test_a_list_without_keys_is_an_error_not_an_empty_inventory(
    vault: FakeVault, answer: Any
) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    vault.routes[("LIST", "/v1/secret/metadata/ehpc/root")] = (200, answer, {})
    async with VaultClient(vault.settings()) as client:
        with pytest.raises(VaultError) as caught:
            await VaultStore(client).list_root_clusters()
    assert caught.value.code == "VaultInvalidResponse"
    assert "secret/metadata/ehpc/root" in caught.value.message


async def test_a_list_that_vault_says_is_missing_is_empty(vault: FakeVault) -> None:
    # A 404 on LIST is how Vault says "no keys here": that one really is empty.
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    async with VaultClient(vault.settings()) as client:
        assert await client.kv_list("secret", "ehpc/root") == []


@pytest.mark.parametrize(
    "answer",
    [
        *EMPTY_ANSWERS,
        pytest.param({"data": {"metadata": {"version": 1}}}, id="no-inner-data-key"),
        pytest.param({"data": {"data": {"k": "v"}}}, id="no-metadata"),
        pytest.param("not json at all", id="not-json"),
    ],
)
async def test_a_kv_read_without_data_is_an_error(vault: FakeVault, answer: Any) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    vault.routes[("GET", "/v1/secret/data/ehpc/root/c-1")] = (200, answer, {})
    async with VaultClient(vault.settings()) as client:
        with pytest.raises(VaultError) as caught:
            await client.kv_read("secret", "ehpc/root/c-1")
    assert caught.value.code == "VaultInvalidResponse"
    assert "secret/data/ehpc/root/c-1" in caught.value.message
