"""The official E-HPC SDK, unchanged, against the simulator: the proof that it is faithful.

The SDK is blocking (requests); it runs in a thread while the simulator serves on the test's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
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

from rotator.sim import FaultConfig, Simulator
from rotator.sim.auth import Credential
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
