"""The webhook: authentication, body validation, answers (a fake daemon behind it)."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from rotator.config import ServeSettings
from rotator.errors import ConfigError
from rotator.secret import Secret
from rotator.serve import webhook
from rotator.serve.app import build_app
from rotator.serve.metrics import ServeMetrics
from rotator.serve.webhook import WebhookAuth, parse_rotate_request, sign_request

TOKEN = "tok-0123456789abcdef"
KEY = "hmac-key-fedcba9876543210"


def sign(
    body: bytes,
    key: str = KEY,
    *,
    method: str = "POST",
    path: str = "/v1/rotate",
    t: int | None = None,
) -> str:
    return sign_request(key, method, path, body, int(time.time()) if t is None else t)


def check(auth: WebhookAuth, headers: dict[str, str], body: bytes) -> str | None:
    return auth.check(headers, body, method="POST", path="/v1/rotate")


@dataclass
class FakeDaemon:
    auth: WebhookAuth
    known: set[str] = field(default_factory=lambda: {"c-1", "c-2", "c-3"})
    submitted: list[tuple[list[str], str]] = field(default_factory=list)
    draining: bool = False
    loaded: bool = True
    body_timeout: float = 10.0

    def known_clusters(self) -> Collection[str]:
        return self.known

    def submit(self, cluster_ids: Sequence[str], *, reason: str) -> str | None:
        if self.draining:
            return None
        self.submitted.append((list(cluster_ids), reason))
        return f"wh-{len(self.submitted)}"

    async def run_status(self, run_or_trigger_id: str) -> tuple[int, dict[str, Any]] | None:
        if run_or_trigger_id == "wh-queued":
            return 202, {"trigger_id": "wh-queued", "status": "queued"}
        if run_or_trigger_id == "wh-done":
            return 200, {"trigger_id": "wh-done", "status": "Success"}
        return None


async def _no_problem() -> str | None:
    return None


@pytest_asyncio.fixture
async def daemon() -> FakeDaemon:
    return FakeDaemon(WebhookAuth(token=Secret(TOKEN), hmac_secret=Secret(KEY)))


@pytest_asyncio.fixture
async def client(daemon: FakeDaemon) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(_no_problem, ServeMetrics(), daemon)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- authentication (no network) --------------------------------------------------------------


def test_bearer_and_hmac_are_checked_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # webhook looks it up per call
    auth = WebhookAuth(token=Secret(TOKEN), hmac_secret=Secret(KEY))
    body = b'{"clusters": "all"}'
    assert check(auth, {"Authorization": f"Bearer {TOKEN}"}, body) is None
    assert check(auth, {"X-Rotator-Signature": sign(body)}, body) is None
    assert len(calls) == 2
    assert check(auth, {"Authorization": "Bearer nope"}, body) == "wrong bearer token"
    assert "wrong X-Rotator-Signature" in (
        check(auth, {"X-Rotator-Signature": sign(body, "other")}, body) or ""
    )
    assert len(calls) == 4


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": f"Token {TOKEN}"},
        {"X-Rotator-Signature": "md5=abc"},
        {"X-Rotator-Signature": "sha256=" + "0" * 64},
        {"X-Rotator-Signature": sign(b"another body")},
    ],
)
def test_missing_or_wrong_credentials_are_refused(headers: dict[str, str]) -> None:
    auth = WebhookAuth(token=Secret(TOKEN), hmac_secret=Secret(KEY))
    assert check(auth, headers, b"{}") is not None


def test_a_valid_signature_wins_over_a_wrong_bearer() -> None:
    auth = WebhookAuth(token=Secret(TOKEN), hmac_secret=Secret(KEY))
    body = b"{}"
    assert (
        check(auth, {"Authorization": "Bearer x", "X-Rotator-Signature": sign(body)}, body) is None
    )


def test_auth_secrets_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "empty").write_text("")
    auth = WebhookAuth.from_settings(ServeSettings(webhook_token_file=str(tmp_path / "token")))
    assert auth.token == Secret(TOKEN)
    assert auth.hmac_secret is None
    assert TOKEN not in repr(auth)
    with pytest.raises(ConfigError, match="empty"):
        WebhookAuth.from_settings(ServeSettings(webhook_hmac_secret_file=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="cannot read"):
        WebhookAuth.from_settings(ServeSettings(webhook_token_file=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nope", "must be JSON"),
        (b"[]", "JSON object"),
        (b'{"cluster": ["c-1"]}', "unknown field(s): cluster"),
        (b'{"clusters": []}', "non-empty list"),
        (b'{"clusters": "some"}', "non-empty list"),
        (b'{"clusters": [1]}', "non-empty string"),
        (b'{"clusters": "all", "reason": 5}', "'reason' must be a string"),
    ],
)
def test_bad_bodies_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(webhook.InvalidRequestError) as info:
        parse_rotate_request(body)
    assert message in str(info.value)


def test_good_bodies_parse() -> None:
    assert parse_rotate_request(b'{"clusters": "all"}').clusters is None
    wanted = parse_rotate_request(b'{"clusters": ["c-1", " c-2", "c-1"], "reason": "audit"}')
    assert wanted.clusters == ["c-1", "c-2"]
    assert wanted.reason == "audit"


# -- over HTTP --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bearer_request_is_queued(client: TestClient[Any, Any], daemon: FakeDaemon) -> None:
    response = await client.post(
        "/v1/rotate", data=b'{"clusters": ["c-1", "c-2"], "reason": "leaver"}', headers=bearer()
    )
    assert response.status == 202
    assert await response.json() == {"trigger_id": "wh-1", "clusters": 2}
    assert daemon.submitted == [(["c-1", "c-2"], "leaver")]


@pytest.mark.asyncio
async def test_signed_request_for_all_is_queued(
    client: TestClient[Any, Any], daemon: FakeDaemon
) -> None:
    body = b'{"clusters": "all"}'
    response = await client.post(
        "/v1/rotate", data=body, headers={"X-Rotator-Signature": sign(body)}
    )
    assert response.status == 202
    assert daemon.submitted == [(["c-1", "c-2", "c-3"], "")]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "case",
    [
        ({}, b'{"clusters": "all"}', 401, "authentication required"),
        (bearer("wrong"), b'{"clusters": "all"}', 401, "wrong bearer token"),
        ({"X-Rotator-Signature": sign(b"{}")}, b'{"clusters": "all"}', 401, "Signature"),
        (bearer(), b"{oops", 400, "must be JSON"),
        (bearer(), b'{"clusters": ["c-1", "zz-9"]}', 422, "zz-9"),
    ],
)
async def test_bad_requests_are_refused_and_nothing_is_queued(
    client: TestClient[Any, Any],
    daemon: FakeDaemon,
    case: tuple[dict[str, str], bytes, int, str],
) -> None:
    headers, body, status, message = case
    response = await client.post("/v1/rotate", data=body, headers=headers)
    assert response.status == status
    assert message in (await response.json())["error"]
    assert daemon.submitted == []


@pytest.mark.asyncio
async def test_a_body_over_64_kib_is_refused(
    client: TestClient[Any, Any], daemon: FakeDaemon
) -> None:
    body = json.dumps({"clusters": ["c-1"], "reason": "x" * (70 * 1024)}).encode()
    response = await client.post("/v1/rotate", data=body, headers={**bearer()})
    assert response.status == 413
    assert daemon.submitted == []


@pytest.mark.asyncio
async def test_without_any_auth_configured_the_webhook_is_disabled(daemon: FakeDaemon) -> None:
    daemon.auth = WebhookAuth()
    app = build_app(_no_problem, ServeMetrics(), daemon)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/v1/rotate", data=b'{"clusters": "all"}', headers=bearer())
        assert response.status == 503
        assert "webhook_token_file" in (await response.json())["error"]
    assert daemon.submitted == []


@pytest.mark.asyncio
async def test_draining_daemon_refuses_triggers(
    client: TestClient[Any, Any], daemon: FakeDaemon
) -> None:
    daemon.draining = True
    response = await client.post("/v1/rotate", data=b'{"clusters": "all"}', headers=bearer())
    assert response.status == 503


@pytest.mark.asyncio
async def test_run_status_needs_auth_and_knows_states(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/runs/wh-done")).status == 401
    queued = await client.get("/v1/runs/wh-queued", headers=bearer())
    assert queued.status == 202
    assert (await queued.json())["status"] == "queued"
    done = await client.get("/v1/runs/wh-done", headers=bearer())
    assert done.status == 200
    assert (await done.json())["status"] == "Success"
    assert (await client.get("/v1/runs/nothing", headers=bearer())).status == 404
    signed = await client.get(
        "/v1/runs/wh-done",
        headers={"X-Rotator-Signature": sign(b"", method="GET", path="/v1/runs/wh-done")},
    )
    assert signed.status == 200
