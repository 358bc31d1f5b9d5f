"""VaultClient on a real OpenBao: auth methods, token renewal and re-login, the thread pool,
and how failures map to the error hierarchy."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
import trustme

from rotator.errors import RetryClass, VaultPermissionError, VaultUnavailableError
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, free_port, start_openbao
from rotator.vault.settings import VaultSettings
from rotator.vault.setup import vault_setup
from rotator.vault.store import VaultStore
from tests.support.vault import VaultPaths, create_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


class FakeClock:
    """Monotonic time under the test's control: token expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _lookup_self(client: VaultClient) -> dict[str, object]:
    body = await client.request("GET", "auth/token/lookup-self")
    assert body is not None
    data: dict[str, object] = body["data"]
    return data


async def _approle_settings(
    admin: VaultClient, settings: VaultSettings, tmp_path: Path
) -> VaultSettings:
    """vault-setup's AppRole role, with a fresh secret_id in a 0600 file."""
    await vault_setup(admin, settings)
    role = await admin.read("auth/approle/role/rotator/role-id")
    secret = await admin.write("auth/approle/role/rotator/secret-id", {})
    secret_file = tmp_path / "secret-id"
    secret_file.touch(mode=0o600)
    secret_file.write_text(secret["data"]["secret_id"] + "\n")
    assert role is not None
    return VaultSettings(
        addr=settings.addr,
        allow_insecure_http=True,
        auth_method="approle",
        role_id=role["data"]["role_id"],
        secret_id_file=str(secret_file),
        root_path=settings.root_path,
        vnc_path=settings.vnc_path,
        runs_path=settings.runs_path,
        max_workers=2,
    )


# -- authentication -------------------------------------------------------------------------


async def test_token_auth_reads_and_logs_in_once(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as client:
        store = VaultStore(client)
        await store.write_root("c-1", "root", Secret("Root12"), "cn-hangzhou")
        root = await store.read_root("c-1")
        assert root.password.reveal() == "Root12"
        await store.read_root("c-1")
        assert client.logins == 1


async def test_token_from_a_file(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(openbao.root_token.reveal() + "\n")
    settings = vault_paths.settings(openbao, token=None, token_file=str(token_file))
    async with VaultClient(settings) as client:
        assert await client.health()


async def test_approle_login_with_secret_id_from_a_file(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        await VaultStore(admin).write_root("c-1", "root", Secret("Root12"), None)
        settings = await _approle_settings(admin, vault_paths.settings(openbao), tmp_path)
    async with VaultClient(settings) as client:
        assert (await VaultStore(client).read_root("c-1")).password.reveal() == "Root12"
        info = await _lookup_self(client)
        assert info["policies"] == ["default", "rotator"]
        assert client.logins == 1


async def test_approle_with_a_wrong_secret_id_is_a_clear_permission_error(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        settings = await _approle_settings(admin, vault_paths.settings(openbao), tmp_path)
    await asyncio.to_thread(Path(settings.secret_id_file).write_text, "not-the-secret-id")
    async with VaultClient(settings) as client:
        with pytest.raises(VaultPermissionError) as caught:
            await client.read(f"secret/data/{vault_paths.root_path}/c-1")
    assert caught.value.code == "VaultAuthFailed"
    assert "approle login failed: Vault refused the login at auth/approle/login" in str(
        caught.value
    )
    assert "secret_id file" in caught.value.message
    assert "not-the-secret-id" not in str(caught.value)


async def test_kubernetes_login_reads_the_jwt_file_and_reports_a_refusal(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    """No Kubernetes here: OpenBao refuses a JWT for a service account the role does not bind
    before it would ask the API server, which proves the login request is right."""
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        await vault_setup(
            admin,
            settings,
            kubernetes_host="https://127.0.0.1:1",
            kubernetes_ca_cert=trustme.CA().cert_pem.bytes().decode(),
        )
    claims = {
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "rotator",
        "kubernetes.io/serviceaccount/service-account.name": "intruder",
        "sub": "system:serviceaccount:rotator:intruder",
    }
    jwt = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "RS256"}, claims)
    )
    jwt_file = tmp_path / "jwt"
    jwt_file.write_text(jwt + ".c2lnbmF0dXJl")
    k8s = vault_paths.settings(
        openbao,
        token=None,
        auth_method="kubernetes",
        kubernetes_role="rotator",
        kubernetes_jwt_file=str(jwt_file),
    )
    async with VaultClient(k8s) as client:
        with pytest.raises(VaultPermissionError) as caught:
            await client.read("auth/token/lookup-self")
    assert caught.value.code == "VaultAuthFailed"
    assert "kubernetes login failed: Vault refused the login at auth/kubernetes/login" in str(
        caught.value
    )
    assert "service account" in caught.value.message
    assert "c2lnbmF0dXJl" not in str(caught.value)


async def test_token_is_renewed_when_a_third_of_its_ttl_is_left(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        token = await create_token(admin, policies=["default"], ttl="1h")
    clock = FakeClock()
    settings = vault_paths.settings(openbao, token=token)
    async with VaultClient(settings, clock=clock) as client:
        first = await _lookup_self(client)
        assert not first.get("last_renewal_time")
        clock.now += 1800  # half the TTL left: no renewal yet
        await _lookup_self(client)
        assert client.renewals == 0
        clock.now += 1500  # 300 s of 3600 left
        renewed = await _lookup_self(client)
        assert client.renewals == 1
        assert renewed.get("last_renewal_time")
        assert client.logins == 1


async def test_approle_logs_in_again_when_its_token_expired(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        settings = await _approle_settings(admin, vault_paths.settings(openbao), tmp_path)
    clock = FakeClock()
    async with VaultClient(settings, clock=clock) as client:
        before = (await _lookup_self(client))["accessor"]
        clock.now += 3601  # past the role's 1h token TTL
        after = (await _lookup_self(client))["accessor"]
        assert client.logins == 2
        assert after != before


async def test_approle_logs_in_again_when_renewal_fails(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        settings = await _approle_settings(admin, vault_paths.settings(openbao), tmp_path)
        clock = FakeClock()
        async with VaultClient(settings, clock=clock) as client:
            await _lookup_self(client)
            await admin.write("auth/token/revoke", {"token": (await client.token()).reveal()})
            clock.now += 3000  # renewal due; renew-self fails on the revoked token
            await _lookup_self(client)
            assert client.logins == 2


async def test_a_token_revoked_mid_run_triggers_one_fresh_login(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        settings = await _approle_settings(admin, vault_paths.settings(openbao), tmp_path)
        await VaultStore(admin).write_root("c-1", "root", Secret("Root12"), None)
        async with VaultClient(settings) as client:
            store = VaultStore(client)
            await store.read_root("c-1")
            await admin.write("auth/token/revoke", {"token": (await client.token()).reveal()})
            assert (await store.read_root("c-1")).password.reveal() == "Root12"
            assert client.logins == 2


async def test_a_revoked_plain_token_says_what_to_do(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        token = await create_token(admin, policies=["default"])
        async with VaultClient(vault_paths.settings(openbao, token=token)) as client:
            assert await client.health()
            await admin.write("auth/token/revoke", {"token": token.reveal()})
            with pytest.raises(VaultPermissionError) as caught:
                await client.read("auth/token/lookup-self")
            assert not await client.health()
    assert caught.value.code == "VaultTokenInvalid"
    assert "invalid, expired or revoked" in caught.value.message
    assert token.reveal() not in str(caught.value)


# -- the thread pool ------------------------------------------------------------------------


async def test_event_loop_runs_while_a_vault_call_blocks(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """The blocked call only returns once the ticker, on the loop, released it: were the call
    running on the loop, the ticker could never run and the wait would time out."""
    released = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1
            if ticks >= 3:
                released.set()

    def blocked(client: hvac.Client) -> bool:
        assert client.sys.read_health_status(method="GET")["initialized"]
        return released.wait(timeout=10)

    async with VaultClient(vault_paths.settings(openbao)) as client:
        task = asyncio.create_task(ticker())
        try:
            assert await client.call(blocked, op="read", path="sys/health")
        finally:
            task.cancel()
    assert ticks >= 3


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung Vault)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_event_loop_ticks_while_vault_hangs_and_the_timeout_is_retryable(
    silent_port: int,
) -> None:
    settings = VaultSettings(
        addr=f"http://127.0.0.1:{silent_port}",
        allow_insecure_http=True,
        token=Secret("t"),
        timeout=0.3,
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with VaultClient(settings) as client:
        task = asyncio.create_task(ticker())
        try:
            with pytest.raises(VaultUnavailableError) as caught:
                await client.read("secret/data/x")
        finally:
            task.cancel()
    assert ticks > 0
    assert caught.value.retry_class is RetryClass.RETRYABLE
    assert "did not answer" in caught.value.message


async def test_pool_bounds_concurrent_calls(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    lock = threading.Lock()
    active = peak = 0
    done = threading.Event()

    def slow(client: hvac.Client) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        done.wait(timeout=0.05)
        with lock:
            active -= 1

    async with VaultClient(vault_paths.settings(openbao, max_workers=2)) as client:
        await asyncio.gather(*(client.call(slow, op="read", path="x") for _ in range(8)))
    assert peak == 2


# -- error mapping --------------------------------------------------------------------------


async def test_closed_port_is_unavailable() -> None:
    settings = VaultSettings(
        addr=f"http://127.0.0.1:{free_port()}", allow_insecure_http=True, token=Secret("t")
    )
    async with VaultClient(settings) as client:
        with pytest.raises(VaultUnavailableError, match="cannot connect to Vault"):
            await client.read("secret/data/x")
        assert not await client.health()


async def test_sealed_then_stopped_server_is_unavailable(tmp_path: Path) -> None:
    with start_openbao(tmp_path) as server:
        settings = VaultSettings(
            addr=server.addr, allow_insecure_http=True, token=server.root_token, timeout=2.0
        )
        async with VaultClient(settings) as client:
            await VaultStore(client).write_root("c-1", "root", Secret("Root12"), None)
            await client.request("PUT", "sys/seal")
            with pytest.raises(VaultUnavailableError) as sealed:
                await VaultStore(client).read_root("c-1")
            assert "sealed" in sealed.value.message
            assert not await client.health()
            server.stop()
            with pytest.raises(VaultUnavailableError, match="cannot connect"):
                await VaultStore(client).read_root("c-1")


async def test_permission_denied_names_the_path_and_the_policy(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        token = await create_token(admin, policies=["default"])
    async with VaultClient(vault_paths.settings(openbao, token=token)) as client:
        with pytest.raises(VaultPermissionError) as caught:
            await VaultStore(client).write_root("c-1", "root", Secret("Xy12ab"), None)
    error = caught.value
    assert error.retry_class is RetryClass.TERMINAL
    assert f"secret/data/{vault_paths.root_path}/c-1" in error.message
    assert "'rotator' policy" in error.message
    assert "Xy12ab" not in str(error)
