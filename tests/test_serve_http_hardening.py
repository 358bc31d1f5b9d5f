"""Serve's HTTP surface under hostile clients: replay, split bodies, slow headers, TLS, junk.

Real sockets against a real :class:`Listener`; a fake daemon behind the webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import trustme

from rotator.config import ServeSettings
from rotator.errors import ConfigError
from rotator.secret import Secret
from rotator.serve.app import Listener, build_app, tls_context
from rotator.serve.metrics import ServeMetrics
from rotator.serve.webhook import SIGNATURE_TOLERANCE, ReplayGuard, WebhookAuth, sign_request
from tests.test_serve_webhook import KEY, TOKEN, FakeDaemon

BODY = b'{"clusters": ["c-1"], "reason": "leaver"}'


async def _ready() -> str | None:
    return None


@pytest_asyncio.fixture
async def daemon() -> FakeDaemon:
    return FakeDaemon(WebhookAuth(token=Secret(TOKEN), hmac_secret=Secret(KEY)))


@pytest_asyncio.fixture
async def listener(daemon: FakeDaemon) -> AsyncIterator[Listener]:
    server = await Listener.start(
        build_app(_ready, ServeMetrics(), daemon), "127.0.0.1:0", header_timeout=0.5
    )
    yield server
    await server.stop()


def _port(listener: Listener) -> int:
    return int(listener.address.rsplit(":", 1)[1])


async def raw_request(listener: Listener, parts: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Send ``parts`` as separate writes (draining between them); the status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(listener))
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0)  # let the server see each write on its own
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), 30)
        return status, json.loads(body)
    finally:
        writer.close()


def _head(body_length: int, **headers: str) -> bytes:
    lines = [
        "POST /v1/rotate HTTP/1.1",
        "Host: x",
        "Content-Type: application/json",
        f"Content-Length: {body_length}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- finding 5: replay --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_signed_request_replayed_is_refused(listener: Listener, daemon: FakeDaemon) -> None:
    signature = sign_request(KEY, "POST", "/v1/rotate", BODY, int(time.time()))
    head = _head(len(BODY), **{"X-Rotator-Signature": signature})
    first = await raw_request(listener, [head + BODY])
    assert first[0] == 202
    for _ in range(3):
        status, answer = await raw_request(listener, [head + BODY])
        assert status == 401
        assert "already used" in answer["error"]
    assert len(daemon.submitted) == 1


@pytest.mark.asyncio
async def test_a_signature_is_bound_to_method_path_and_time(
    listener: Listener, daemon: FakeDaemon
) -> None:
    now = int(time.time())
    # The old scheme (HMAC of the body only) and a signature made for another path are refused.
    old = "sha256=" + hmac.new(KEY.encode(), BODY, hashlib.sha256).hexdigest()
    other_path = sign_request(KEY, "POST", "/v1/other", BODY, now)
    stale = sign_request(KEY, "POST", "/v1/rotate", BODY, now - int(SIGNATURE_TOLERANCE) - 60)
    future = sign_request(KEY, "POST", "/v1/rotate", BODY, now + int(SIGNATURE_TOLERANCE) + 60)
    for signature, message in [
        (old, "wrong X-Rotator-Signature"),
        (other_path, "wrong X-Rotator-Signature"),
        (stale, "from the server's time"),
        (future, "from the server's time"),
    ]:
        status, answer = await raw_request(
            listener, [_head(len(BODY), **{"X-Rotator-Signature": signature}) + BODY]
        )
        assert (status, message in answer["error"]) == (401, True), answer
    assert daemon.submitted == []


@pytest.mark.asyncio
async def test_bearer_tokens_keep_working_and_may_repeat(
    listener: Listener, daemon: FakeDaemon
) -> None:
    for _ in range(2):
        status, _ = await raw_request(
            listener, [_head(len(BODY), Authorization=f"Bearer {TOKEN}") + BODY]
        )
        assert status == 202
    assert len(daemon.submitted) == 2


def test_the_replay_guard_forgets_only_what_has_expired_and_is_bounded() -> None:
    guard = ReplayGuard(window=300, capacity=3)
    assert guard.use("a", t=1000, now=1000) is None
    assert guard.use("a", t=1000, now=1200) is not None  # still inside the window
    assert guard.use("b", t=1000, now=1000) is None
    assert guard.use("c", t=1000, now=1000) is None
    assert "too many" in (guard.use("d", t=1000, now=1000) or "")  # full: refused, not evicted
    assert guard.use("a", t=1000, now=1200) is not None
    # Past t + window the clock check refuses them anyway; the guard lets them go.
    assert guard.use("e", t=1400, now=1400) is None
    assert len(guard) == 1


# -- finding 6: the whole body is read before it is verified ------------------------------------


@pytest.mark.asyncio
async def test_a_body_sent_in_two_writes_authenticates(
    listener: Listener, daemon: FakeDaemon
) -> None:
    signature = sign_request(KEY, "POST", "/v1/rotate", BODY, int(time.time()))
    head = _head(len(BODY), **{"X-Rotator-Signature": signature})
    status, answer = await raw_request(listener, [head + BODY[:10], BODY[10:]])
    assert status == 202, answer
    assert daemon.submitted == [(["c-1"], "leaver")]


@pytest.mark.asyncio
async def test_a_signed_prefix_is_never_accepted(listener: Listener, daemon: FakeDaemon) -> None:
    prefix = BODY[:10]
    signature = sign_request(KEY, "POST", "/v1/rotate", prefix, int(time.time()))
    head = _head(len(BODY), **{"X-Rotator-Signature": signature})
    status, _ = await raw_request(listener, [head + prefix, BODY[10:]])
    assert status == 401
    assert daemon.submitted == []


# -- finding 7: timeouts, junk headers and bodies, TLS ------------------------------------------


@pytest.mark.asyncio
async def test_a_slow_header_client_is_disconnected(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(listener))
    try:
        writer.write(b"POST /v1/rotate HTTP/1.1\r\nHost: x\r\n")  # ...and never the rest
        await writer.drain()
        # The server closes the connection (header_timeout=0.5 s); the bound is only a backstop.
        assert await asyncio.wait_for(reader.read(), timeout=60) == b""
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_a_slow_body_gets_408(daemon: FakeDaemon) -> None:
    daemon.body_timeout = 0.2
    server = await Listener.start(build_app(_ready, ServeMetrics(), daemon), "127.0.0.1:0")
    try:
        head = _head(len(BODY), Authorization=f"Bearer {TOKEN}")
        status, answer = await raw_request(server, [head + BODY[:5]])  # the rest never comes
        assert status == 408
        assert "did not arrive" in answer["error"]
    finally:
        await server.stop()
    assert daemon.submitted == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer \xff\xfe\xc3\x28",
        b"X-Rotator-Signature: t=1,v1=\xff\xfe",
        b"Authorization: B\xe9arer x",
    ],
)
async def test_non_utf8_auth_headers_get_401(listener: Listener, header: bytes) -> None:
    head = _head(len(BODY)).replace(b"Connection: close", b"Connection: close\r\n" + header)
    status, answer = await raw_request(listener, [head + BODY])
    assert status == 401, answer


@pytest.mark.asyncio
async def test_deeply_nested_json_gets_400(listener: Listener, daemon: FakeDaemon) -> None:
    body = b"[" * 60_000 + b"]" * 60_000
    body = body[: 64 * 1024]
    status, answer = await raw_request(
        listener, [_head(len(body), Authorization=f"Bearer {TOKEN}") + body]
    )
    assert status == 400
    assert "nested deeper" in answer["error"]
    assert daemon.submitted == []


@pytest.mark.asyncio
async def test_loading_daemon_answers_503_not_unknown_cluster(
    listener: Listener, daemon: FakeDaemon
) -> None:
    daemon.loaded = False
    daemon.known = set()
    status, answer = await raw_request(
        listener, [_head(len(BODY), Authorization=f"Bearer {TOKEN}") + BODY]
    )
    assert status == 503
    assert answer["error"].startswith("loading")
    assert daemon.submitted == []


@pytest.mark.asyncio
async def test_tls_listener_serves_https_only(tmp_path: Path, daemon: FakeDaemon) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = tls_context(str(cert_file), str(key_file))
    server = await Listener.start(
        build_app(_ready, ServeMetrics(), daemon), "127.0.0.1:0", ssl_context=context
    )
    try:
        assert server.address.startswith("https://")
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{server.address}/v1/rotate",
                data=BODY,
                headers={"Authorization": f"Bearer {TOKEN}"},
                ssl=client_context,
            ) as response:
                assert response.status == 202
            with pytest.raises(aiohttp.ClientError):
                async with session.get(
                    server.address.replace("https", "http") + "/healthz"
                ) as plain:
                    await plain.read()
    finally:
        await server.stop()


def test_tls_settings_need_both_files_that_load(tmp_path: Path) -> None:
    assert tls_context("", "") is None
    with pytest.raises(ConfigError, match="both"):
        tls_context(str(tmp_path / "cert.pem"), "")
    with pytest.raises(ConfigError, match="does not exist"):
        tls_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load"):
        tls_context(str(tmp_path / "junk.pem"), str(tmp_path / "junk.pem"))
    assert ServeSettings().header_timeout > 0
