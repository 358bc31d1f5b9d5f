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
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def answer(
        self, method: str, path: str, token: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        path = path.split("?", 1)[0]
        self.seen.append((method, path, token))
        status, body, headers = self.routes.get((method, path), (404, {"errors": []}, {}))
        return status, (body if isinstance(body, str) else json.dumps(body)).encode(), headers

    def settings(self, **overrides: Any) -> VaultSettings:
        values: dict[str, Any] = {
            "addr": self.url.rstrip("/"),
            "allow_insecure_http": True,
            "token": Secret(TOKEN),
            "timeout": 5,
        }
        return VaultSettings(**{**values, **overrides})


def _serve() -> Iterator[FakeVault]:
    fake = FakeVault()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            fake.headers.append(dict(self.headers.items()))
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


# -- both KV transports: the same rules, the same errors -------------------------------------

TRANSPORTS = pytest.mark.parametrize("transport", ["hvac", "aiohttp"])


@TRANSPORTS
@pytest.mark.parametrize("status", [302, 307, 308])
async def test_a_kv_redirect_to_another_host_is_refused_and_the_token_stays(
    vault: FakeVault, elsewhere: FakeVault, status: int, transport: str
) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    target = f"{elsewhere.url}v1/secret/data/x"
    vault.routes[("GET", "/v1/secret/data/x")] = (status, {}, {"Location": target})
    vault.routes[("POST", "/v1/secret/data/x")] = (status, {}, {"Location": target})
    async with VaultClient(vault.settings(transport=transport)) as client:
        with pytest.raises(VaultError) as read:
            await client.kv_read("secret", "x")
        with pytest.raises(VaultError) as written:
            await client.kv_write("secret", "x", {"password": "Ab12cd"}, cas=3)
    assert elsewhere.seen == []
    for refused in (read.value, written.value):
        assert refused.code == "VaultRedirect"
        assert refused.retry_class is RetryClass.TERMINAL
        assert target in refused.message
        assert TOKEN not in str(refused)
        assert "Ab12cd" not in str(refused)


@TRANSPORTS
async def test_a_kv_redirect_within_vault_is_followed(vault: FakeVault, transport: str) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    vault.routes[("GET", "/v1/secret/data/old")] = (307, {}, {"Location": "/v1/secret/data/new"})
    vault.routes[("GET", "/v1/secret/data/new")] = (
        200,
        {"data": {"data": {"k": "v"}, "metadata": {"version": 1}}},
        {},
    )
    async with VaultClient(vault.settings(transport=transport)) as client:
        body = await client.kv_read("secret", "old")
    assert body == {"data": {"k": "v"}, "metadata": {"version": 1}}
    assert [s[1] for s in vault.seen][-2:] == ["/v1/secret/data/old", "/v1/secret/data/new"]
    assert vault.seen[-1][2] == TOKEN


@TRANSPORTS
async def test_kv_requests_carry_the_token_namespace_and_request_header(
    vault: FakeVault, transport: str
) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    vault.routes[("PATCH", "/v1/secret/metadata/x")] = (204, "", {})
    settings = vault.settings(transport=transport, namespace="team-a")
    async with VaultClient(settings) as client:
        await client.kv_patch_custom_metadata("secret", "x", {"status": "ok"})
    sent = {k.lower(): v for k, v in vault.headers[-1].items()}
    assert vault.seen[-1] == ("PATCH", "/v1/secret/metadata/x", TOKEN)
    assert sent["x-vault-namespace"] == "team-a"
    assert sent["x-vault-request"] == "true"
    assert sent["content-type"] == "application/merge-patch+json"
    # Small JSON bodies: asking Vault to compress them costs both sides CPU for nothing.
    assert sent.get("accept-encoding", "identity") == "identity"


ANSWERS = [
    pytest.param(400, {"errors": ["check-and-set parameter did not match"]}, id="400-cas"),
    pytest.param(400, {"errors": ["bad input"]}, id="400"),
    pytest.param(401, {"errors": ["unauthorized"]}, id="401"),
    pytest.param(403, {"errors": ["permission denied"]}, id="403"),
    pytest.param(404, {"errors": []}, id="404"),
    pytest.param(412, {"errors": ["precondition"]}, id="412"),
    pytest.param(429, {"errors": ["rate limited"]}, id="429"),
    pytest.param(500, {"errors": ["internal"]}, id="500"),
    pytest.param(502, "<html>bad gateway</html>", id="502-html"),
    pytest.param(503, {"errors": ["Vault is sealed"]}, id="503-sealed"),
    pytest.param(418, {"errors": ["teapot"]}, id="418-unexpected"),
    pytest.param(200, "not json", id="200-not-json"),
    pytest.param(204, "", id="204"),
]


@pytest.mark.parametrize(("status", "answer"), ANSWERS)
async def test_both_transports_map_every_answer_to_the_same_error(
    vault: FakeVault, status: int, answer: Any
) -> None:
    vault.routes[("GET", "/v1/auth/token/lookup-self")] = (200, LOOKUP_OK, {})
    vault.routes[("POST", "/v1/secret/data/x")] = (status, answer, {})
    vault.routes[("GET", "/v1/secret/metadata/x")] = (status, answer, {})
    outcomes = []
    for transport in ("hvac", "aiohttp"):
        async with VaultClient(vault.settings(transport=transport)) as client:
            seen: list[object] = []
            for call in (
                client.kv_write("secret", "x", {"password": "Ab12cd"}, cas=1),
                client.kv_metadata("secret", "x"),
            ):
                try:
                    seen.append(("ok", await call))
                except VaultError as exc:
                    seen.append((type(exc), exc.code, exc.retry_class, exc.message))
            outcomes.append(seen)
    assert outcomes[0] == outcomes[1]
