"""Every error shape and account-wide code the gateway sends, injected by the simulator at its
real HTTP status and body shape, read by EhpcClient over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from rotator.ehpc.client import EhpcClient, Endpoints
from rotator.ehpc.credentials import AccessKey, FileCredentials, StaticCredentials
from rotator.errors import ApiError, ErrorScope, RetryClass, TerminalApiError
from rotator.secret import Secret, write_secret_file
from rotator.sim import Simulator
from tests.support.sim import SimAdmin

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SHAPES = ["json", "json-lowercase", "xml"]

# (code, HTTP status, scope, a phrase the message must contain)
ACCOUNT_CODES = [
    ("Forbidden.RAM", 403, "grant"),
    ("NoPermission", 403, "grant"),
    ("InvalidAccessKeyId.Inactive", 400, "disabled"),
    ("InvalidAccessKeyId.NotFound", 404, "does not exist"),
    ("InvalidSecurityToken.Expired", 400, "STS"),
    ("InvalidSecurityToken.Malformed", 400, "malformed"),
    ("InvalidSecurityToken.MismatchWithAccessKey", 400, "another AccessKey"),
    ("InvalidTimeStamp.Expired", 400, "check the clock"),
    ("InvalidTimeStamp.Format", 400, "check the clock"),
    ("SignatureDoesNotMatch", 400, "secret"),
    ("IncompleteSignature", 400, "malformed"),
    ("InvalidApi.NotFound", 404, "ehpc.endpoint"),
]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client_for(sim: Simulator, credentials: object = None) -> EhpcClient:
    return EhpcClient(
        credentials=credentials  # type: ignore[arg-type]
        or StaticCredentials(sim.config.access_key_id, Secret(sim.config.access_key_secret)),
        endpoints=Endpoints(single=sim.base_url, allow_insecure_http=True),
    )


async def inject(admin: SimAdmin, code: str, shape: str, count: int | None = 1) -> None:
    await admin.request("POST", "errors", {"code": code, "shape": shape, "count": count})


async def api_error(api: EhpcClient) -> ApiError:
    with pytest.raises(ApiError) as info:
        await api.list_clusters("cn-hangzhou")
    return info.value


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("expected", ACCOUNT_CODES, ids=[c[0] for c in ACCOUNT_CODES])
async def test_account_wide_codes_in_every_shape(
    sim: Simulator, http: aiohttp.ClientSession, expected: tuple[str, int, str], shape: str
) -> None:
    code, status, phrase = expected
    admin = SimAdmin(http, sim)
    await inject(admin, code, shape)
    async with client_for(sim) as api:
        error = await api_error(api)
        # The injection was used up: the next call goes through (nothing else was wrong).
        assert await api.list_clusters("cn-hangzhou")
    assert type(error) is TerminalApiError, repr(error)
    assert error.code == code
    assert error.http_status == status
    assert error.retry_class is RetryClass.TERMINAL
    assert error.scope is ErrorScope.ACCOUNT, "it would fail every cluster: stop the run"
    assert error.request_id, "the RequestId is the audit trail, in every shape"
    assert phrase in error.message


@pytest.mark.parametrize("shape", SHAPES)
async def test_missing_name_is_terminal_with_the_gateways_message(
    sim: Simulator, http: aiohttp.ClientSession, shape: str
) -> None:
    await inject(SimAdmin(http, sim), "MissingClusterId", shape)
    async with client_for(sim) as api:
        error = await api_error(api)
    assert type(error) is TerminalApiError
    assert (error.code, error.http_status) == ("MissingClusterId", 400)
    assert "ClusterId is mandatory for this action." in error.message
    assert "missing" in error.message


@pytest.mark.parametrize("shape", SHAPES)
async def test_server_codes_keep_their_retry_class_in_every_shape(
    sim: Simulator, http: aiohttp.ClientSession, shape: str
) -> None:
    await inject(SimAdmin(http, sim), "ServiceUnavailable", shape)
    async with client_for(sim) as api:
        error = await api_error(api)
    assert (error.code, error.http_status) == ("ServiceUnavailable", 503)
    assert error.retry_class is RetryClass.RETRYABLE


async def test_injections_are_listed_and_cleared(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    admin = SimAdmin(http, sim)
    await inject(admin, "Forbidden.RAM", "xml", count=None)
    assert await admin.request("GET", "errors") == [
        {"code": "Forbidden.RAM", "shape": "xml", "count": None, "actions": [], "status": 403}
    ]
    async with client_for(sim) as api:
        assert (await api_error(api)).code == "Forbidden.RAM"
        assert (await api_error(api)).code == "Forbidden.RAM"  # every call, until cleared
        await admin.request("DELETE", "errors")
        assert await api.list_clusters("cn-hangzhou")
    assert (await admin.stats())["faults_injected"]["Forbidden.RAM"] == 2


@pytest.mark.parametrize(
    "payload",
    [
        {"code": "not a code"},
        {"code": "Forbidden.RAM", "shape": "yaml"},
        {"code": "Forbidden.RAM", "count": 0},
        {"code": "Forbidden.RAM", "actions": ["DeleteCluster"]},
        {"code": "Forbidden.RAM", "status": 200},
        {"code": "Forbidden.RAM", "colour": "red"},
        {},
    ],
)
async def test_bad_injections_are_refused(
    sim: Simulator, http: aiohttp.ClientSession, payload: dict[str, object]
) -> None:
    async with http.post(
        f"{sim.base_url}/_sim/errors",
        json=payload,
        headers={"Authorization": f"Bearer {sim.admin_token}"},
    ) as response:
        assert response.status == 400
    assert await SimAdmin(http, sim).request("GET", "errors") == []


# -- STS: refresh once on InvalidSecurityToken.Expired ------------------------------------------


@dataclass
class RefreshableSts:
    """An STS provider whose token the gateway has stopped accepting until ``refresh()``."""

    keys: list[AccessKey]
    refreshes: int = 0
    handed_out: list[str] = field(default_factory=list)

    async def get(self) -> AccessKey:
        key = self.keys[min(self.refreshes, len(self.keys) - 1)]
        self.handed_out.append(key.security_token.reveal() if key.security_token else "")
        return key

    async def refresh(self) -> AccessKey:
        self.refreshes += 1
        return await self.get()


def sts(token: str) -> AccessKey:
    return AccessKey("STS.refresh", Secret("sts-refresh-secret"), Secret(token))


async def test_an_expired_token_is_refreshed_and_the_call_retried_once(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    await SimAdmin(http, sim).add_credential("STS.refresh", "sts-refresh-secret", "token-new")
    provider = RefreshableSts([sts("token-old"), sts("token-new")])
    async with client_for(sim, provider) as api:
        clusters = await api.list_clusters("cn-hangzhou")
    assert clusters
    assert provider.refreshes == 1
    assert provider.handed_out[0] == "token-old"
    assert set(provider.handed_out[1:]) == {"token-new"}


async def test_a_refresh_that_does_not_help_ends_in_the_error(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    await SimAdmin(http, sim).add_credential("STS.refresh", "sts-refresh-secret", "token-new")
    provider = RefreshableSts([sts("token-old"), sts("token-still-old")])
    async with client_for(sim, provider) as api:
        error = await api_error(api)
    assert error.code == "InvalidSecurityToken.Expired"
    assert error.scope is ErrorScope.ACCOUNT
    assert provider.refreshes == 1, "exactly one refresh and one retry, not a loop"
    assert "token-" not in str(error)


async def test_a_modify_is_retried_after_a_refresh_too(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    admin = SimAdmin(http, sim)
    await admin.add_credential("STS.refresh", "sts-refresh-secret", "token-new")
    cluster = next(c for c in (await admin.clusters()).values() if c["status"] == "running")
    provider = RefreshableSts([sts("token-old"), sts("token-new")])
    async with client_for(sim, provider) as api:
        await api.modify_visual_service_passwd(
            region=cluster["region"],
            cluster_id=cluster["id"],
            runas_password=Secret(cluster["root_password"]),
            new_password=Secret("r3fr5h"),
        )
    after = (await admin.clusters())[cluster["id"]]
    assert (after["vnc_password"], after["change_count"]) == ("r3fr5h", cluster["change_count"] + 1)
    assert provider.refreshes == 1


async def test_a_token_file_renewed_underneath_is_read_again_on_expiry(
    sim: Simulator, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await SimAdmin(http, sim).add_credential("STS.file", "sts-file-secret", "file-token-2")
    secret_file = write_secret_file(tmp_path / "ak", "sts-file-secret")
    token_file = write_secret_file(tmp_path / "sts", "file-token-1")
    provider = FileCredentials("STS.file", str(secret_file), str(token_file))
    write_secret_file(token_file, "file-token-2")  # a sidecar renewed it since start-up
    async with client_for(sim, provider) as api:
        assert await api.list_clusters("cn-hangzhou")
    assert (await provider.get()).security_token == Secret("file-token-2")
