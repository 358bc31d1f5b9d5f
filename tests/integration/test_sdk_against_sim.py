"""The official E-HPC SDK, unchanged, against the simulator: the proof that it is faithful.

The SDK is blocking (requests); it runs in a thread while the simulator serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from alibabacloud_ehpc20180412 import models as ehpc_models
from alibabacloud_ehpc20180412.client import Client
from alibabacloud_tea_openapi.exceptions import (
    ClientException,
    ServerException,
    ThrottlingException,
)
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_util.models import RuntimeOptions
from darabonba.core import DaraCore

from rotator.ehpc import signer
from rotator.ehpc.client import EhpcClient, Endpoints
from rotator.ehpc.credentials import StaticCredentials
from rotator.ehpc.models import API_VERSION
from rotator.secret import Secret
from rotator.sim import FaultConfig, Simulator
from rotator.sim.auth import Credential
from rotator.sim.errors import ErrorShape
from rotator.sim.faults import ErrorInjection
from rotator.sim.inventory import SimCluster
from tests.support.sim import SimFactory

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK sends through HTTP(S)_PROXY when set; the simulator is on loopback.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _close_sdk_sessions() -> Iterator[None]:
    yield
    # The SDK keeps a process-wide requests.Session per endpoint (a private class attribute);
    # close them, or their sockets to the stopped simulator leak as ResourceWarnings.
    for session in DaraCore._sessions.values():
        session.close()
    DaraCore._sessions.clear()


def sdk_client(
    sim: Simulator,
    *,
    secret: str | None = None,
    key_id: str | None = None,
    security_token: str | None = None,
) -> Client:
    # With an explicit endpoint the SDK needs no region_id (it only picks the endpoint), and it
    # builds the URL as <protocol>://<endpoint><path>, so "127.0.0.1:PORT" carries the port.
    return Client(
        Config(
            access_key_id=key_id or sim.config.access_key_id,
            access_key_secret=secret or sim.config.access_key_secret,
            security_token=security_token,
            endpoint=sim.host_header,
            protocol="https" if sim.config.tls else "http",
            read_timeout=5000,
            connect_timeout=5000,
        )
    )


def runtime(ca_file: Path | None = None) -> RuntimeOptions:
    return RuntimeOptions(ca=str(ca_file) if ca_file else None, autoretry=False)


async def list_clusters(
    client: Client, request: ehpc_models.ListClustersRequest, options: RuntimeOptions | None = None
) -> ehpc_models.ListClustersResponse:
    return await asyncio.to_thread(client.list_clusters_with_options, request, options or runtime())


async def modify(
    client: Client, cluster: SimCluster, passwd: str, *, root_password: str | None = None
) -> ehpc_models.ModifyVisualServicePasswdResponse:
    request = ehpc_models.ModifyVisualServicePasswdRequest(
        cluster_id=cluster.id,
        runas_user="root",
        runas_user_password=root_password or cluster.root_password,
        passwd=passwd,
    )
    return await asyncio.to_thread(
        client.modify_visual_service_passwd_with_options, request, runtime()
    )


def first_running(sim: Simulator) -> SimCluster:
    return next(c for c in sim.inventory.clusters if c.status == "running")


async def test_sdk_lists_clusters_page_by_page(sim: Simulator) -> None:
    client = sdk_client(sim)
    ids: list[str] = []
    for page in (1, 2):
        response = await list_clusters(
            client, ehpc_models.ListClustersRequest(page_number=page, page_size=15)
        )
        assert response.status_code == 200
        assert response.body.total_count == 20
        ids += [c.id for c in response.body.clusters.cluster_info_simple]
    assert ids == [c.id for c in sim.inventory.clusters]
    one = response.body.clusters.cluster_info_simple[0]
    assert (one.region_id, one.zone_id) == (
        sim.inventory.get(one.id).region,  # type: ignore[union-attr]
        f"{one.region_id}-a",
    )


async def test_sdk_changes_the_password(sim: Simulator) -> None:
    cluster = first_running(sim)
    response = await modify(sdk_client(sim), cluster, "Sdk4ok")
    assert response.status_code == 200
    assert response.body.message == '{"Msg": "" }'
    assert response.body.request_id
    assert (cluster.vnc_password, cluster.change_count) == ("Sdk4ok", 1)


async def test_sdk_with_a_wrong_secret_gets_signature_does_not_match(sim: Simulator) -> None:
    with pytest.raises(ClientException) as raised:
        await list_clusters(
            sdk_client(sim, secret="wrong-secret"), ehpc_models.ListClustersRequest()
        )
    assert raised.value.code == "SignatureDoesNotMatch"
    assert raised.value.status_code == 400
    assert first_running(sim).change_count == 0


async def test_sdk_sees_the_documented_error_codes(sim_factory: SimFactory) -> None:
    sim = await sim_factory()
    client = sdk_client(sim)
    cluster = first_running(sim)
    with pytest.raises(ClientException) as raised:
        await modify(client, cluster, "Abc123", root_password="wrong-root")
    assert (raised.value.code, raised.value.status_code) == ("IncorrectCredential", 403)
    with pytest.raises(ClientException) as raised:
        await modify(client, cluster, "abcdef")
    assert (raised.value.code, raised.value.status_code) == ("InvalidParams", 400)

    sim.faults = FaultConfig(service_unavailable_rate=1.0)
    with pytest.raises(ServerException) as server_error:
        await modify(client, cluster, "Abc123")
    assert (server_error.value.code, server_error.value.status_code) == ("ServiceUnavailable", 503)

    sim.faults = FaultConfig(qps_limit={"ListClusters": 1})

    async def three_calls() -> None:  # three calls span at most two one-second windows
        for _ in range(3):
            await list_clusters(client, ehpc_models.ListClustersRequest())

    with pytest.raises(ThrottlingException) as throttled:
        await three_calls()
    assert throttled.value.code == "Throttling.User"
    assert 1 <= throttled.value.retry_after <= 1000


async def test_sdk_with_sts_credentials(sim: Simulator) -> None:
    sim.service.credentials.add(Credential("STS.sdk", "sts-sdk-secret", "sts-sdk-token"))
    client = sdk_client(
        sim, key_id="STS.sdk", secret="sts-sdk-secret", security_token="sts-sdk-token"
    )
    response = await list_clusters(client, ehpc_models.ListClustersRequest(page_size=1))
    assert response.status_code == 200
    stale = sdk_client(sim, key_id="STS.sdk", secret="sts-sdk-secret", security_token="old")
    with pytest.raises(ClientException) as raised:
        await list_clusters(stale, ehpc_models.ListClustersRequest())
    assert raised.value.code == "InvalidSecurityToken.Expired"


async def test_sdk_over_tls_trusting_the_sim_ca(sim_factory: SimFactory) -> None:
    sim = await sim_factory(tls=True)
    assert sim.ca_file is not None
    client = sdk_client(sim)
    # Without the CA the SDK refuses the certificate. (First: the SDK adds a CA it was given to
    # its pooled TLS context for good, so the refusal can only be seen before.)
    with pytest.raises(Exception, match=r"(?i)certificate verify failed"):
        await list_clusters(client, ehpc_models.ListClustersRequest(), runtime())
    response = await list_clusters(
        client, ehpc_models.ListClustersRequest(page_size=5), runtime(sim.ca_file)
    )
    assert response.status_code == 200
    assert len(response.body.clusters.cluster_info_simple) == 5


# -- error shapes and STS headers, compared with the SDK ---------------------------------------


@pytest.mark.parametrize("shape", ["json", "json-lowercase", "xml"])
@pytest.mark.parametrize(
    ("code", "status"),
    [("Forbidden.RAM", 403), ("InvalidAccessKeyId.Inactive", 400), ("MissingClusterId", 400)],
)
async def test_sdk_reads_every_injected_error_shape(
    sim: Simulator, code: str, status: int, shape: str
) -> None:
    # The SDK's own parser (JSON with Code or code, XML for text/xml;charset=utf-8) is the
    # reference for what the simulator's shapes must look like.
    sim.service.faults.inject(ErrorInjection(code, shape=ErrorShape(shape), count=1))
    with pytest.raises(ClientException) as raised:
        await list_clusters(sdk_client(sim), ehpc_models.ListClustersRequest())
    assert (raised.value.code, raised.value.status_code) == (code, status)
    assert raised.value.request_id not in (None, "", "None")


@dataclass
class HeaderCapture:
    """A gateway stand-in that records each request's headers and answers an empty page."""

    seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response(
            {
                "RequestId": "CAP-1",
                "TotalCount": 0,
                "PageNumber": 1,
                "PageSize": 10,
                "Clusters": {"ClusterInfoSimple": []},
            }
        )


def _signed_names(headers: dict[str, str]) -> set[str]:
    parsed = signer.parse_authorization(headers["authorization"])
    assert parsed is not None
    return set(parsed[1])


async def test_sts_headers_match_the_official_sdk() -> None:
    capture = HeaderCapture()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", capture.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        host = f"127.0.0.1:{server.port}"
        sdk = Client(
            Config(
                access_key_id="STS.compare",
                access_key_secret="sts-compare-secret",
                security_token="sts-compare-token",
                endpoint=host,
                protocol="http",
            )
        )
        await asyncio.to_thread(
            sdk.list_clusters_with_options, ehpc_models.ListClustersRequest(), runtime()
        )
        ours = EhpcClient(
            credentials=StaticCredentials(
                "STS.compare", Secret("sts-compare-secret"), Secret("sts-compare-token")
            ),
            endpoints=Endpoints(single=f"http://{host}", allow_insecure_http=True),
        )
        async with ours:
            await ours.list_clusters("cn-hangzhou")
    finally:
        await server.close()
    sdk_headers, our_headers = capture.seen
    for headers in (sdk_headers, our_headers):
        assert headers["x-acs-accesskey-id"] == "STS.compare"
        assert headers["x-acs-security-token"] == "sts-compare-token"
        assert {"x-acs-accesskey-id", "x-acs-security-token"} <= _signed_names(headers)
    # Every x-acs-* header the SDK sends and signs, we send and sign too (the SDK adds only
    # its credential-provider name and retry bookkeeping on top).
    sdk_only = {"x-acs-credentials-provider", "x-acs-retry-attempts", "x-acs-retry-delay"}
    sdk_acs = {n for n in _signed_names(sdk_headers) if n.startswith("x-acs-")} - sdk_only
    assert sdk_acs <= _signed_names(our_headers)


async def test_a_token_sent_for_another_key_is_a_mismatch(sim: Simulator) -> None:
    sim.service.credentials.add(Credential("STS.one", "sts-one-secret", "sts-one-token"))
    headers = {
        "host": sim.host_header,
        "x-acs-action": "ListClusters",
        "x-acs-version": API_VERSION,
        "x-acs-date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": signer.EMPTY_SHA256,
        "x-acs-accesskey-id": "STS.other",  # signed, but not the key that signs
        "x-acs-security-token": "sts-one-token",
    }
    headers["authorization"] = signer.authorization(
        method="GET",
        path="/",
        query={},
        headers=headers,
        payload_sha256=signer.EMPTY_SHA256,
        access_key_id="STS.one",
        access_key_secret="sts-one-secret",
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}/", headers=headers) as response,
    ):
        body = await response.json()
    assert (response.status, body["Code"]) == (400, "InvalidSecurityToken.MismatchWithAccessKey")
