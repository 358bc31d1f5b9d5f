"""``EhpcClient`` over real sockets: against the simulator, and against a tiny gateway of our own
that answers what a broken proxy would (HTML pages, empty or truncated bodies) and records every
request, so we can prove where passwords travel."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from rotator.ehpc.client import EhpcClient, Endpoints, Timeouts
from rotator.ehpc.credentials import AccessKey, StaticCredentials
from rotator.ehpc.models import Cluster
from rotator.errors import (
    AmbiguousApiError,
    ApiError,
    ErrorScope,
    RetryableApiError,
    RetryClass,
    TerminalApiError,
    ThrottledError,
)
from rotator.secret import Secret
from rotator.sim import Simulator
from rotator.sim.config import FaultConfig
from tests.support.sim import SimAdmin, SimFactory

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

NEW_PASSWORD = "a1b2c3"


# -- helpers ----------------------------------------------------------------------------------


def sim_credentials(sim: Simulator) -> StaticCredentials:
    return StaticCredentials(sim.config.access_key_id, Secret(sim.config.access_key_secret))


def client_for(
    sim: Simulator,
    *,
    credentials: Any = None,
    timeouts: Timeouts | None = None,
    ca_bundle: Any = None,
) -> EhpcClient:
    return EhpcClient(
        credentials=credentials or sim_credentials(sim),
        endpoints=Endpoints(single=sim.base_url, allow_insecure_http=True),
        timeouts=timeouts,
        ca_bundle=ca_bundle,
    )


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def running_cluster(admin: SimAdmin) -> dict[str, Any]:
    return next(c for c in (await admin.clusters()).values() if c["status"] == "running")


async def modify(
    api: EhpcClient,
    cluster: dict[str, Any],
    *,
    root: str | None = None,
    new: str = NEW_PASSWORD,
    runas_user: str = "root",
    cluster_id: str | None = None,
) -> Any:
    return await api.modify_visual_service_passwd(
        region=cluster["region"],
        cluster_id=cluster_id or cluster["id"],
        runas_password=Secret(root or cluster["root_password"]),
        new_password=Secret(new),
        runas_user=runas_user,
    )


async def api_error(call: Awaitable[Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        await call
    return info.value


def assert_error(
    error: ApiError,
    cls: type[ApiError],
    *,
    code: str,
    status: int | None,
    retry_class: RetryClass,
    scope: ErrorScope = ErrorScope.CLUSTER,
    request_id: bool = True,
) -> None:
    assert type(error) is cls, repr(error)
    assert error.code == code
    assert error.http_status == status
    assert error.retry_class is retry_class
    assert error.scope is scope
    if request_id:
        assert error.request_id, "the RequestId is the audit trail of a failed call"
        assert error.request_id in str(error)
    assert code in str(error)


# -- success ----------------------------------------------------------------------------------


async def test_modify_changes_the_password(sim: Simulator, http: aiohttp.ClientSession) -> None:
    admin = SimAdmin(http, sim)
    cluster = await running_cluster(admin)
    async with client_for(sim) as api:
        result = await modify(api, cluster)
    after = (await admin.clusters())[cluster["id"]]
    assert after["vnc_password"] == NEW_PASSWORD
    assert after["change_count"] == cluster["change_count"] + 1
    assert result.cluster_id == cluster["id"]
    assert len(result.request_id) == 36  # the simulator's RequestIds are UUIDs


async def test_one_session_serves_many_calls(sim: Simulator, http: aiohttp.ClientSession) -> None:
    admin = SimAdmin(http, sim)
    clusters = [c for c in (await admin.clusters()).values() if c["status"] == "running"][:5]
    async with client_for(sim) as api:
        results = await asyncio.gather(
            *(modify(api, c, new=f"z{i}y{i}x{i}") for i, c in enumerate(clusters))
        )
    assert len({r.request_id for r in results}) == 5
    after = await admin.clusters()
    assert [after[c["id"]]["vnc_password"] for c in clusters] == [f"z{i}y{i}x{i}" for i in range(5)]


async def test_list_clusters_follows_every_page(
    sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(clusters=120, regions=("cn-hangzhou",))
    admin = SimAdmin(http, sim)
    async with client_for(sim) as api:
        clusters = await api.list_clusters("cn-hangzhou")
    expected = await admin.clusters()
    assert [c.id for c in clusters] == list(expected)  # all 120, in order, no duplicates
    assert all(isinstance(c, Cluster) and c.region == "cn-hangzhou" for c in clusters)
    stopped = [c for c in clusters if not c.is_running]
    assert {c.id for c in stopped} == {i for i, c in expected.items() if c["status"] != "running"}
    stats = await admin.stats()
    assert sum(stats["accepted"]["ListClusters"].values()) == 3  # pages of 50, 50 and 20


async def test_list_clusters_filters_by_region(
    sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(clusters=120, regions=("cn-hangzhou", "cn-shanghai"))
    admin = SimAdmin(http, sim)
    async with client_for(sim) as api:
        shanghai = await api.list_clusters("cn-shanghai")
        nowhere = await api.list_clusters("eu-central-1")
    expected = [i for i, c in (await admin.clusters()).items() if c["region"] == "cn-shanghai"]
    assert len(expected) == 60
    assert [c.id for c in shanghai] == expected
    assert {c.region for c in shanghai} == {"cn-shanghai"}
    assert nowhere == []


# -- E-HPC error codes ------------------------------------------------------------------------


async def test_invalid_passwd_is_invalid_params(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    cluster = await running_cluster(SimAdmin(http, sim))
    async with client_for(sim) as api:
        error = await api_error(modify(api, cluster, new="abc"))
        user_error = await api_error(modify(api, cluster, runas_user="admin"))
    for err in (error, user_error):
        assert_error(
            err, TerminalApiError, code="InvalidParams", status=400, retry_class=RetryClass.TERMINAL
        )
        assert err.cluster_id == cluster["id"]
    assert "Passwd" in error.message
    assert "RunasUser" in user_error.message


async def test_wrong_root_password_is_incorrect_credential(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    admin = SimAdmin(http, sim)
    cluster = await running_cluster(admin)
    async with client_for(sim) as api:
        error = await api_error(modify(api, cluster, root="not-the-root-password"))
    assert_error(
        error,
        TerminalApiError,
        code="IncorrectCredential",
        status=403,
        retry_class=RetryClass.TERMINAL,
    )
    assert (await admin.clusters())[cluster["id"]]["vnc_password"] == cluster["vnc_password"]


async def test_unknown_cluster_is_cluster_not_found(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    cluster = await running_cluster(SimAdmin(http, sim))
    async with client_for(sim) as api:
        error = await api_error(modify(api, cluster, cluster_id="ehpc-hz-doesnotexist"))
    assert_error(
        error, TerminalApiError, code="ClusterNotFound", status=404, retry_class=RetryClass.TERMINAL
    )
    assert error.cluster_id == "ehpc-hz-doesnotexist"


async def test_stopped_cluster_is_invalid_cluster_status(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    clusters = await SimAdmin(http, sim).clusters()
    stopped = next(c for c in clusters.values() if c["status"] != "running")
    async with client_for(sim) as api:
        error = await api_error(modify(api, stopped))
    assert_error(
        error,
        TerminalApiError,
        code="InvalidClusterStatus",
        status=403,
        retry_class=RetryClass.TERMINAL,
    )


async def test_busy_cluster_is_conflict_opt(sim: Simulator, http: aiohttp.ClientSession) -> None:
    admin = SimAdmin(http, sim)
    cluster = await running_cluster(admin)
    await admin.patch_cluster(cluster["id"], busy_seconds=60)
    async with client_for(sim) as api:
        error = await api_error(modify(api, cluster))
    assert_error(
        error, RetryableApiError, code="ConflictOpt", status=403, retry_class=RetryClass.RETRYABLE
    )


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ("service_unavailable_rate", "ServiceUnavailable", 503),
        ("agent_error_rate", "AgentError", 403),
        ("unknown_error_rate", "UnknownError", 500),
    ],
)
async def test_injected_server_faults_are_retryable(
    sim_factory: SimFactory, http: aiohttp.ClientSession, fault: str, code: str, status: int
) -> None:
    sim = await sim_factory(faults=FaultConfig().updated({fault: 1.0}))
    admin = SimAdmin(http, sim)
    cluster = await running_cluster(admin)
    async with client_for(sim) as api:
        error = await api_error(modify(api, cluster))
    assert_error(
        error, RetryableApiError, code=code, status=status, retry_class=RetryClass.RETRYABLE
    )
    assert (await admin.clusters())[cluster["id"]]["change_count"] == cluster["change_count"]


async def test_throttling_carries_the_servers_retry_after(sim_factory: SimFactory) -> None:
    sim = await sim_factory(faults=FaultConfig(qps_limit={"ListClusters": 1}))
    throttled: ThrottledError | None = None
    async with client_for(sim) as api:
        # One call per wall-clock second is accepted; a few quick calls must hit the limit.
        for _ in range(5):
            try:
                await api.list_clusters("cn-hangzhou")
            except ThrottledError as exc:
                throttled = exc
                break
    assert throttled is not None
    assert_error(
        throttled,
        ThrottledError,
        code="Throttling.User",
        status=400,
        retry_class=RetryClass.RETRYABLE,
    )
    # The simulator asks to wait until the next second: between 1 ms and 1 s, in seconds.
    assert throttled.retry_after is not None
    assert 0.0 < throttled.retry_after <= 1.0


# -- gateway (credential) errors --------------------------------------------------------------


async def test_wrong_secret_is_signature_does_not_match(sim: Simulator) -> None:
    wrong = StaticCredentials(sim.config.access_key_id, Secret("wrong-secret-value"))
    async with client_for(sim, credentials=wrong) as api:
        error = await api_error(api.list_clusters("cn-hangzhou"))
    assert_error(
        error,
        TerminalApiError,
        code="SignatureDoesNotMatch",
        status=400,
        retry_class=RetryClass.TERMINAL,
        scope=ErrorScope.ACCOUNT,
    )


async def test_unknown_access_key_is_not_found(sim: Simulator) -> None:
    unknown = StaticCredentials("LTAI-nobody", Secret("whatever-secret"))
    async with client_for(sim, credentials=unknown) as api:
        error = await api_error(api.list_clusters("cn-hangzhou"))
    assert_error(
        error,
        TerminalApiError,
        code="InvalidAccessKeyId.NotFound",
        status=404,
        retry_class=RetryClass.TERMINAL,
        scope=ErrorScope.ACCOUNT,
    )


# -- lost answers -----------------------------------------------------------------------------


async def test_drop_after_apply_is_ambiguous(
    sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(drop_rate=1.0))
    admin = SimAdmin(http, sim)
    cluster = await running_cluster(admin)
    async with client_for(sim) as api:
        error = await api_error(modify(api, cluster))
    assert isinstance(error, AmbiguousApiError)
    assert error.retry_class is RetryClass.AMBIGUOUS
    assert error.cluster_id == cluster["id"]
    assert "may or may not have been applied" in error.message
    # It was applied: exactly why the caller must treat it as "maybe".
    assert (await admin.clusters())[cluster["id"]]["vnc_password"] == NEW_PASSWORD


async def test_hang_is_ambiguous_after_the_timeout(
    sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(hang_rate=1.0))
    cluster = await running_cluster(SimAdmin(http, sim))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client_for(sim, timeouts=Timeouts(connect=1.0, total=0.3)) as api:
        error = await api_error(modify(api, cluster))
    assert loop.time() - started < 3.0
    assert_error(
        error,
        AmbiguousApiError,
        code="Timeout",
        status=None,
        retry_class=RetryClass.AMBIGUOUS,
        request_id=False,
    )


async def test_connection_refused_is_retryable_not_ambiguous() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = EhpcClient(
        credentials=StaticCredentials("ak", Secret("sk-refused")),
        endpoints=Endpoints(single=f"http://127.0.0.1:{port}", allow_insecure_http=True),
    )
    async with api:
        error = await api_error(
            api.modify_visual_service_passwd(
                region="cn-hangzhou",
                cluster_id="ehpc-hz-1",
                runas_password=Secret("root-pw-refused"),
                new_password=Secret(NEW_PASSWORD),
            )
        )
    # Nothing was sent, so nothing can have changed: a plain retry is safe.
    assert_error(
        error,
        RetryableApiError,
        code="ConnectionFailed",
        status=None,
        retry_class=RetryClass.RETRYABLE,
        request_id=False,
    )
    assert str(port) in error.message


# -- TLS --------------------------------------------------------------------------------------


async def test_tls_with_the_simulators_ca(
    sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(tls=True)
    assert sim.base_url.startswith("https://")
    assert sim.ca_file is not None
    endpoints = Endpoints(single=sim.base_url)  # https: no insecure switch needed
    async with EhpcClient(
        credentials=sim_credentials(sim), endpoints=endpoints, ca_bundle=sim.ca_file
    ) as api:
        clusters = await api.list_clusters("cn-hangzhou")
        running = next(c for c in clusters if c.is_running)
        root = sim.inventory.by_id[running.id].root_password
        await api.modify_visual_service_passwd(
            region=running.region,
            cluster_id=running.id,
            runas_password=Secret(root),
            new_password=Secret(NEW_PASSWORD),
        )
    assert clusters
    assert sim.inventory.by_id[running.id].vnc_password == NEW_PASSWORD


async def test_tls_without_the_ca_is_a_tls_error(sim_factory: SimFactory) -> None:
    sim = await sim_factory(tls=True)
    async with EhpcClient(
        credentials=sim_credentials(sim), endpoints=Endpoints(single=sim.base_url)
    ) as api:
        error = await api_error(api.list_clusters("cn-hangzhou"))
    assert_error(
        error,
        TerminalApiError,
        code="TLSError",
        status=None,
        retry_class=RetryClass.TERMINAL,
        scope=ErrorScope.ACCOUNT,
        request_id=False,
    )
    assert "ca_bundle" in error.message  # tells the operator what to set


# -- STS and refreshed credentials ------------------------------------------------------------


async def test_sts_token_is_sent_and_accepted(sim: Simulator, http: aiohttp.ClientSession) -> None:
    admin = SimAdmin(http, sim)
    await admin.add_credential("STS.key-1", "sts-secret-1", "sts-token-1")
    good = StaticCredentials("STS.key-1", Secret("sts-secret-1"), Secret("sts-token-1"))
    stale = StaticCredentials("STS.key-1", Secret("sts-secret-1"), Secret("sts-token-old"))
    async with client_for(sim, credentials=good) as api:
        assert len(await api.list_clusters("cn-hangzhou")) > 0
    async with client_for(sim, credentials=stale) as api:
        error = await api_error(api.list_clusters("cn-hangzhou"))
    assert_error(
        error,
        TerminalApiError,
        code="InvalidSecurityToken.Expired",
        status=400,
        retry_class=RetryClass.TERMINAL,
        scope=ErrorScope.ACCOUNT,
    )


@dataclass
class RefreshingCredentials:
    """Hands out the next key of ``keys`` on each call after the first (then stays on the last),
    like an STS provider that refreshed underneath us."""

    keys: list[AccessKey]
    handed_out: list[str] = field(default_factory=list)

    async def get(self) -> AccessKey:
        key = self.keys[min(len(self.handed_out), len(self.keys) - 1)]
        self.handed_out.append(key.security_token.reveal() if key.security_token else "")
        return key


async def test_refreshed_credentials_apply_without_a_restart(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    admin = SimAdmin(http, sim)

    def sts(n: int) -> AccessKey:
        # Same AccessKeyId, new secret and token: what an STS refresh looks like.
        return AccessKey("STS.rolling", Secret(f"rolling-secret-{n}"), Secret(f"rolling-token-{n}"))

    await admin.add_credential("STS.rolling", "rolling-secret-1", "rolling-token-1")
    await admin.add_credential("STS.rolling", "rolling-secret-2", "rolling-token-2")
    provider = RefreshingCredentials([sts(1), sts(2), sts(3)])
    async with client_for(sim, credentials=provider) as api:
        await api.list_clusters("cn-beijing")  # key 1
        await api.list_clusters("cn-beijing")  # key 2, same client and session
        # Key 3 is not known to the gateway yet: failing proves the client signs with what the
        # provider returns *now*, not with something it cached.
        error = await api_error(api.list_clusters("cn-beijing"))
        assert error.code == "SignatureDoesNotMatch"
        await admin.add_credential("STS.rolling", "rolling-secret-3", "rolling-token-3")
        await api.list_clusters("cn-beijing")
    assert provider.handed_out == [
        "rolling-token-1",
        "rolling-token-2",
        "rolling-token-3",
        "rolling-token-3",
    ]


# -- a gateway of our own: broken proxies, and where the passwords go --------------------------


@dataclass(frozen=True)
class Captured:
    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Canned:
    status: int = 200
    body: bytes = b'{"RequestId": "FAKE-REQ-1", "Message": "ok"}'
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass
class FakeGateway:
    """Answers every request with ``answer`` and records it."""

    answer: Canned = field(default_factory=Canned)
    requests: list[Captured] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Captured(
                method=request.method,
                path_qs=request.raw_path,
                headers=list(request.headers.items()),
                body=await request.read(),
            )
        )
        if self.answer.hang:
            await self.release.wait()
        return web.Response(
            status=self.answer.status,
            body=self.answer.body,
            headers={"Content-Type": self.answer.content_type, **self.answer.headers},
        )

    def client(self, *, timeouts: Timeouts | None = None) -> EhpcClient:
        return EhpcClient(
            credentials=StaticCredentials("LTAI-fake", Secret("fake-gateway-secret")),
            endpoints=Endpoints(single=self.url, allow_insecure_http=True),
            timeouts=timeouts,
        )


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    fake = FakeGateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/"))
    try:
        yield fake
    finally:
        fake.release.set()  # let hanging handlers end so the server stops at once
        await server.close()


HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
HTML_429 = b"<html><body><h1>429 Too Many Requests</h1></body></html>"
HTML_403 = b"<html><body>Forbidden by WAF</body></html>"
TRUNCATED = b'{"RequestId": "TRUNC-1", "Mess'
# An entity in a DTD is how XML bombs start: such a body is not parsed at all.
XML_WITH_DTD = (
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "Forbidden.RAM">]>'
    b"<Error><Code>&a;</Code></Error>"
)
XML_NO_CODE = b"<Error><Message>no code here</Message></Error>"

Call = Callable[[EhpcClient], Awaitable[Any]]


async def _modify_call(api: EhpcClient) -> Any:
    return await api.modify_visual_service_passwd(
        region="cn-hangzhou",
        cluster_id="ehpc-hz-proxy",
        runas_password=Secret("root-pw-proxy-1"),
        new_password=Secret(NEW_PASSWORD),
    )


async def _list_call(api: EhpcClient) -> Any:
    return await api.list_clusters("cn-hangzhou")


@pytest.mark.parametrize(
    ("answer", "call", "cls"),
    [
        (Canned(502, HTML_502, "text/html"), _modify_call, AmbiguousApiError),
        (Canned(502, HTML_502, "text/html"), _list_call, RetryableApiError),
        (Canned(200, b"", "application/json"), _modify_call, AmbiguousApiError),
        (Canned(200, TRUNCATED, "application/json"), _modify_call, AmbiguousApiError),
        (Canned(200, TRUNCATED, "application/json"), _list_call, RetryableApiError),
        (Canned(200, b"[1, 2]", "application/json"), _modify_call, AmbiguousApiError),
        (Canned(200, b"\xff\xfe\x00garbage", "application/json"), _modify_call, AmbiguousApiError),
        (Canned(503, b"", "text/plain"), _modify_call, AmbiguousApiError),
        (Canned(429, HTML_429, "text/html"), _modify_call, ThrottledError),
        (Canned(429, HTML_429, "text/html"), _list_call, ThrottledError),
        (Canned(403, HTML_403, "text/html"), _modify_call, TerminalApiError),
        (Canned(404, b"not found", "text/plain"), _list_call, TerminalApiError),
        (Canned(403, XML_WITH_DTD, "text/xml;charset=utf-8"), _list_call, TerminalApiError),
        (Canned(400, XML_NO_CODE, "text/xml;charset=utf-8"), _list_call, TerminalApiError),
    ],
    ids=[
        "502-html-modify",
        "502-html-list",
        "200-empty-modify",
        "200-truncated-modify",
        "200-truncated-list",
        "200-json-array-modify",
        "200-not-utf8-modify",
        "503-empty-modify",
        "429-html-modify",
        "429-html-list",
        "403-html-modify",
        "404-text-list",
        "403-xml-with-a-dtd-list",
        "400-xml-without-code-list",
    ],
)
async def test_non_json_bodies_become_clear_errors(
    gateway: FakeGateway, answer: Canned, call: Call, cls: type[ApiError]
) -> None:
    gateway.answer = answer
    async with gateway.client() as api:
        error = await api_error(call(api))
    assert type(error) is cls
    assert error.code == "InvalidResponse"
    assert error.http_status == answer.status
    assert f"HTTP {answer.status}" in error.message
    assert ("empty body" in error.message) == (answer.body == b"")
    assert b"nginx" not in str(error).encode()  # the page itself is not dumped into the message


async def test_throttling_retry_after_header_is_milliseconds(gateway: FakeGateway) -> None:
    gateway.answer = Canned(
        400,
        b'{"RequestId": "THR-1", "Code": "Throttling.User", "Message": "flow control"}',
        headers={"x-acs-retry-after": "2500"},
    )
    async with gateway.client() as api:
        error = await api_error(_list_call(api))
    assert isinstance(error, ThrottledError)
    assert error.retry_after == 2.5
    assert error.request_id == "THR-1"
    assert error.http_status == 400


async def test_timeout_of_a_read_only_call_is_plainly_retryable(gateway: FakeGateway) -> None:
    gateway.answer = Canned(hang=True)
    async with gateway.client(timeouts=Timeouts(connect=1.0, total=0.3)) as api:
        error = await api_error(_list_call(api))
    # Nothing changes on a ListClusters, so there is nothing ambiguous about retrying it.
    assert type(error) is RetryableApiError
    assert error.code == "Timeout"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b'{"RequestId": "R", "TotalCount": 1, "Clusters": null}',
            id="clusters-null",
        ),
        pytest.param(
            b'{"RequestId": "R", "TotalCount": 1, "Clusters": {"ClusterInfoSimple": [{}]}}',
            id="entry-without-id",
        ),
        pytest.param(
            b'{"RequestId": "R", "TotalCount": "many", '
            b'"Clusters": {"ClusterInfoSimple": [{"Id": "c-1"}]}}',
            id="total-count-junk",
        ),
    ],
)
async def test_unexpected_json_shape_is_an_api_error_not_a_crash(
    gateway: FakeGateway, body: bytes
) -> None:
    gateway.answer = Canned(200, body)
    async with gateway.client() as api:
        await api_error(_list_call(api))


# -- passwords travel in the form body only ---------------------------------------------------

ROOT = "R00t p@ss/wörd~*+&="
VNC = "q7w8e9"


def _forms(value: str) -> set[str]:
    """Every way a value could show up on the wire."""
    return {value, quote(value, safe=""), quote(value, safe="~"), quote(value).replace("%20", "+")}


async def test_passwords_only_in_the_form_body(gateway: FakeGateway) -> None:
    async with gateway.client() as api:
        await api.modify_visual_service_passwd(
            region="cn-hangzhou",
            cluster_id="ehpc-hz-wire",
            runas_password=Secret(ROOT),
            new_password=Secret(VNC),
        )
    (request,) = gateway.requests
    assert request.method == "POST"
    assert request.path_qs == "/"
    form = parse_qs(request.body.decode("ascii"), keep_blank_values=True)
    assert form["RunasUserPassword"] == [ROOT]
    assert form["Passwd"] == [VNC]
    assert form["ClusterId"] == ["ehpc-hz-wire"]
    for secret in (ROOT, VNC, "fake-gateway-secret"):
        for shown in _forms(secret):
            assert shown not in request.path_qs
            for name, value in request.headers:
                assert shown not in value, f"{secret!r} leaked in header {name}"
    assert "fake-gateway-secret" not in request.body.decode("ascii")


async def test_no_password_in_any_error_text(
    sim_factory: SimFactory, http: aiohttp.ClientSession
) -> None:
    sim = await sim_factory(faults=FaultConfig(drop_rate=1.0))
    admin = SimAdmin(http, sim)
    cluster = await running_cluster(admin)
    root = cluster["root_password"]
    errors: list[ApiError] = []
    async with client_for(sim) as api:
        errors.append(await api_error(modify(api, cluster, new="bad-pw-1")))  # InvalidParams
        errors.append(await api_error(modify(api, cluster, root="wrong-root-9")))  # Incorrect...
        errors.append(await api_error(modify(api, cluster, new="n3wpw9")))  # drop: ambiguous
    wrong = StaticCredentials(sim.config.access_key_id, Secret("wrong-secret-xyz"))
    async with client_for(sim, credentials=wrong) as api:
        errors.append(await api_error(modify(api, cluster, new="n3wpw8")))
    assert [e.code for e in errors] == [
        "InvalidParams",
        "IncorrectCredential",
        "ConnectionDropped",
        "SignatureDoesNotMatch",
    ]
    for error in errors:
        rendered = [str(error), repr(error), repr(vars(error)), repr(error.args)]
        for secret in (root, "bad-pw-1", "wrong-root-9", "n3wpw9", "n3wpw8", "wrong-secret-xyz"):
            assert all(secret not in text for text in rendered), (secret, error.code)


async def test_password_echoed_by_a_server_stays_out_of_the_error(gateway: FakeGateway) -> None:
    gateway.answer = Canned(
        400,
        b'{"RequestId": "ECHO-1", "Code": "InvalidParams", '
        b'"Message": "bad request: RunasUserPassword=echo-root-77&Passwd=e7c8h9"}',
    )
    async with gateway.client() as api:
        error = await api_error(
            api.modify_visual_service_passwd(
                region="cn-hangzhou",
                cluster_id="ehpc-hz-echo",
                runas_password=Secret("echo-root-77"),
                new_password=Secret("e7c8h9"),
            )
        )
    assert error.code == "InvalidParams"
    for secret in ("echo-root-77", "e7c8h9"):
        assert secret not in str(error)
        assert secret not in error.message


# -- redirects are never followed -------------------------------------------------------------


@pytest_asyncio.fixture
async def elsewhere() -> AsyncIterator[FakeGateway]:
    """A second server, the target of a redirect: it must never receive a request."""
    fake = FakeGateway()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/"))
    try:
        yield fake
    finally:
        await server.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", [_modify_call, _list_call], ids=["modify", "list"])
async def test_a_redirect_is_never_followed(
    gateway: FakeGateway, elsewhere: FakeGateway, status: int, call: Call
) -> None:
    gateway.answer = Canned(
        status, b"", "text/plain", headers={"Location": f"{elsewhere.url}stolen"}
    )
    async with gateway.client() as api:
        error = await api_error(call(api))
    assert elsewhere.requests == [], "a redirect carried the request (and passwords) elsewhere"
    assert len(gateway.requests) == 1
    # The gateway never redirects: a 3xx comes from something in the way, and the request was
    # not processed by E-HPC, so it cannot have applied: terminal, not ambiguous.
    assert type(error) is TerminalApiError
    assert error.code == "InvalidResponse"
    assert error.http_status == status
    assert "redirect" in error.message
    assert f"{elsewhere.url}stolen" in error.message


async def test_a_redirect_is_never_followed_with_get_either(
    gateway: FakeGateway, elsewhere: FakeGateway
) -> None:
    # With GET the passwords are in the URL: the Location may echo them; neither the request
    # nor the message may carry them on.
    gateway.answer = Canned(
        307, b"", "text/plain", headers={"Location": f"{elsewhere.url}x?Passwd=q7w8e9"}
    )
    api = EhpcClient(
        credentials=StaticCredentials("LTAI-fake", Secret("fake-gateway-secret")),
        endpoints=Endpoints(single=gateway.url, allow_insecure_http=True),
        method="GET",
    )
    async with api:
        error = await api_error(
            api.modify_visual_service_passwd(
                region="cn-hangzhou",
                cluster_id="ehpc-hz-get",
                runas_password=Secret("root-pw-get-1"),
                new_password=Secret("q7w8e9"),
            )
        )
    assert elsewhere.requests == []
    assert type(error) is TerminalApiError
    assert "redirect" in error.message
    assert "q7w8e9" not in str(error)
