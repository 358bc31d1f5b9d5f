"""``EhpcClient.probe``: one signed call answered as it came (what ``rotator doctor`` shows),
signed by the same code path as every other call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from rotator.ehpc import signer
from rotator.ehpc.client import EhpcClient, Endpoints, Method
from rotator.ehpc.credentials import StaticCredentials
from rotator.errors import RetryableApiError
from rotator.secret import Secret
from rotator.sim import Simulator
from tests.support.sim import SimAdmin, SimFactory

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PAGE = {"PageNumber": "1", "PageSize": "1"}


def client(url: str, credentials: StaticCredentials, method: Method = "POST") -> EhpcClient:
    return EhpcClient(
        credentials=credentials,
        endpoints=Endpoints(single=url, allow_insecure_http=True),
        method=method,
    )


def sim_key(sim: Simulator, secret: str | None = None) -> StaticCredentials:
    return StaticCredentials(
        sim.config.access_key_id, Secret(secret or sim.config.access_key_secret)
    )


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_probe_returns_the_answer_and_the_date_refusals_included(
    sim_factory: SimFactory, method: Method
) -> None:
    sim = await sim_factory(clusters=3, regions=("cn-hangzhou",))
    async with client(sim.base_url, sim_key(sim), method) as api:
        answer = await api.probe("cn-hangzhou", PAGE)
    assert (answer.status, answer.code, answer.ok) == (200, None, True)
    assert answer.body["TotalCount"] == 3
    assert answer.date is not None
    assert abs((parsedate_to_datetime(answer.date) - datetime.now(UTC)).total_seconds()) < 60

    async with client(sim.base_url, sim_key(sim, "wrong-secret"), method) as api:
        refused = await api.probe("cn-hangzhou", PAGE)  # a value, not an exception
    assert (refused.status, refused.code, refused.ok) == (400, "SignatureDoesNotMatch", False)
    assert refused.body["RequestId"]
    assert "wrong-secret" not in repr(refused)


async def test_a_probe_with_sts_credentials_is_accepted(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as http:
        await SimAdmin(http, sim).add_credential("STS.probe", "sts-probe-secret", "sts-probe-tok")
    sts = StaticCredentials("STS.probe", Secret("sts-probe-secret"), Secret("sts-probe-tok"))
    async with client(sim.base_url, sts) as api:
        answer = await api.probe("cn-hangzhou", PAGE)
    assert answer.ok, answer.body


class Capture:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self.redirect = False

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.redirect:
            raise web.HTTPFound("https://elsewhere.example/login")
        return web.Response(status=502, body=b"<html>bad gateway</html>", content_type="text/html")


@pytest_asyncio.fixture
async def capture() -> AsyncIterator[Capture]:
    found = Capture()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    found.url = str(server.make_url("/"))
    try:
        yield found
    finally:
        await server.close()


async def test_a_probe_signs_sts_headers_as_every_call_does(capture: Capture) -> None:
    sts = StaticCredentials("STS.cap", Secret("sts-cap-secret"), Secret("sts-cap-token"))
    async with client(capture.url, sts) as api:
        answer = await api.probe("cn-hangzhou", PAGE)
        with pytest.raises(RetryableApiError):  # the same 502, raised; its headers captured
            await api.call("cn-hangzhou", "ListClusters", PAGE)
    probe_headers, call_headers = capture.headers
    for headers in (probe_headers, call_headers):
        parsed = signer.parse_authorization(headers["authorization"])
        assert parsed is not None
        assert headers["x-acs-accesskey-id"] == "STS.cap"
        assert headers["x-acs-security-token"] == "sts-cap-token"
        assert {"x-acs-accesskey-id", "x-acs-security-token"} <= set(parsed[1])
    assert set(probe_headers) == set(call_headers)
    # An unreadable body is an answer too, with the code call() would raise.
    assert (answer.status, answer.code) == (502, "InvalidResponse")
    assert "proxy" in answer.body["Message"]


async def test_a_probe_reports_a_redirect_and_raises_only_without_an_answer(
    capture: Capture,
) -> None:
    capture.redirect = True
    async with client(capture.url, sim_free_key()) as api:
        answer = await api.probe("cn-hangzhou", PAGE)
    assert (answer.status, answer.code) == (302, "InvalidResponse")
    assert "redirect" in answer.body["Message"]

    async with client("http://127.0.0.1:9", sim_free_key()) as api:
        with pytest.raises(RetryableApiError) as raised:
            await api.probe("cn-hangzhou", PAGE)
    assert raised.value.code == "ConnectionFailed"


def sim_free_key() -> StaticCredentials:
    return StaticCredentials("LTAI-capture", Secret("capture-secret"))
