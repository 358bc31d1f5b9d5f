"""``ehpc.method``: POST with a form body (default) or GET with query parameters, both signed
the same way, both accepted by the simulator; anything else refused, as the gateway does."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from rotator.config import load_settings
from rotator.ehpc.client import EhpcClient, Endpoints, Method
from rotator.ehpc.credentials import StaticCredentials
from rotator.errors import AmbiguousApiError, ApiError, ConfigError
from rotator.secret import Secret
from rotator.sim import Simulator
from rotator.sim.config import FaultConfig
from tests.support.sim import SimAdmin, SimFactory, send, sign

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client_for(sim: Simulator, method: Method) -> EhpcClient:
    return EhpcClient(
        credentials=StaticCredentials(
            sim.config.access_key_id, Secret(sim.config.access_key_secret)
        ),
        endpoints=Endpoints(single=sim.base_url, allow_insecure_http=True),
        method=method,
    )


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_both_methods_list_and_modify(
    sim_factory: SimFactory, http: aiohttp.ClientSession, method: Method
) -> None:
    sim = await sim_factory(clusters=60, regions=("cn-hangzhou",))
    admin = SimAdmin(http, sim)
    cluster = next(c for c in (await admin.clusters()).values() if c["status"] == "running")
    async with client_for(sim, method) as api:
        clusters = await api.list_clusters("cn-hangzhou")  # two pages
        await api.modify_visual_service_passwd(
            region=cluster["region"],
            cluster_id=cluster["id"],
            runas_password=Secret(cluster["root_password"]),
            new_password=Secret("m3th0d"),
        )
    assert len(clusters) == 60
    assert (await admin.clusters())[cluster["id"]]["vnc_password"] == "m3th0d"


@dataclass
class Capture:
    requests: list[tuple[str, str, bytes, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            (request.method, request.raw_path, await request.read(), dict(request.headers))
        )
        return web.json_response({"RequestId": "CAP-GET", "Message": '{"Msg": "" }'})


ROOT = "R00t p@ss/wörd~*+&="
NEW = "g3t9w8"


async def test_get_puts_the_parameters_in_the_query_and_sends_no_body() -> None:
    capture = Capture()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", capture.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        api = EhpcClient(
            credentials=StaticCredentials("LTAI-get", Secret("get-secret")),
            endpoints=Endpoints(single=str(server.make_url("/")), allow_insecure_http=True),
            method="GET",
        )
        async with api:
            await api.modify_visual_service_passwd(
                region="cn-hangzhou",
                cluster_id="ehpc-hz-get",
                runas_password=Secret(ROOT),
                new_password=Secret(NEW),
            )
    finally:
        await server.close()
    ((method, path_qs, body, headers),) = capture.requests
    assert method == "GET"
    assert body == b""
    assert "content-type" not in {k.lower() for k in headers}
    query = parse_qs(urlsplit(path_qs).query, keep_blank_values=True)
    assert query["RunasUserPassword"] == [ROOT]
    assert query["Passwd"] == [NEW]
    assert query["ClusterId"] == ["ehpc-hz-get"]


async def test_with_get_no_log_line_or_error_carries_the_url_or_a_password(
    sim_factory: SimFactory, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await sim_factory(faults=FaultConfig(drop_rate=1.0))
    admin = SimAdmin(http, sim)
    cluster = next(c for c in (await admin.clusters()).values() if c["status"] == "running")
    root = cluster["root_password"]
    errors: list[ApiError] = []
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        async with client_for(sim, "GET") as api:
            for new, runas in (("bad-pw-7", root), ("n3wp7x", "wrong-root-7"), ("n3wp8x", root)):
                with pytest.raises(ApiError) as caught:
                    await api.modify_visual_service_passwd(
                        region=cluster["region"],
                        cluster_id=cluster["id"],
                        runas_password=Secret(runas),
                        new_password=Secret(new),
                    )
                errors.append(caught.value)
    assert [e.code for e in errors] == ["InvalidParams", "IncorrectCredential", "ConnectionDropped"]
    assert isinstance(errors[-1], AmbiguousApiError)
    rendered = [str(e) for e in errors] + [repr(vars(e)) for e in errors]
    rendered += [repr(entry) for entry in logs] + [caplog.text]
    for secret in (root, "bad-pw-7", "n3wp7x", "wrong-root-7", "n3wp8x", "Passwd="):
        assert all(secret not in text for text in rendered), secret


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_the_simulator_refuses_other_methods(
    sim: Simulator, http: aiohttp.ClientSession, method: str
) -> None:
    reply = await send(http, sign(sim, "ListClusters", {"PageSize": "5"}, method=method))
    assert (reply.status, reply.code) == (404, "InvalidApi.NotFound")
    assert "method" in reply.body["Message"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_simulator_accepts_get_and_post(
    sim: Simulator, http: aiohttp.ClientSession, method: str
) -> None:
    reply = await send(http, sign(sim, "ListClusters", {"PageSize": "5"}, method=method))
    assert reply.status == 200


async def test_the_method_is_a_setting(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).ehpc.method == "POST"
    assert load_settings(None, environ={"ROTATOR_EHPC_METHOD": "GET"}).ehpc.method == "GET"
    with pytest.raises(ConfigError) as refused:
        load_settings(None, environ={"ROTATOR_EHPC_METHOD": "PUT"})
    assert refused.value.key == "ehpc.method"
