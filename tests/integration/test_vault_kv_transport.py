"""The KV hot path over both transports (``vault.transport``) on a real OpenBao: reads, the
check-and-set conflict, 404, 403, sealed, TLS, a token that changes under the client, and
that the aiohttp transport really runs on the event loop (not in the hvac pool)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import hvac
import pytest
import trustme

from rotator.errors import (
    RetryClass,
    VaultConflictError,
    VaultError,
    VaultPermissionError,
    VaultUnavailableError,
)
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, free_port, start_openbao
from rotator.vault.settings import VaultSettings
from rotator.vault.store import VaultStore
from tests.integration.test_vault_client import _approle_settings
from tests.support.vault import VaultPaths, create_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

TRANSPORTS = pytest.mark.parametrize("transport", ["hvac", "aiohttp"])


@TRANSPORTS
async def test_kv_round_trip_404_and_soft_delete(
    openbao: OpenBaoServer, vault_paths: VaultPaths, transport: str
) -> None:
    base = vault_paths.vnc_path
    async with VaultClient(vault_paths.settings(openbao, transport=transport)) as client:
        assert await client.kv_read("secret", f"{base}/none") is None
        assert await client.kv_metadata("secret", f"{base}/none") is None
        assert await client.kv_list("secret", f"{base}/nothing-here") == []
        first = await client.kv_write("secret", f"{base}/c-1", {"password": "Ab12cd"}, cas=0)
        assert first["version"] == 1
        entry = await client.kv_read("secret", f"{base}/c-1")
        assert entry is not None
        assert entry["data"] == {"password": "Ab12cd"}
        assert entry["metadata"]["version"] == 1
        await client.kv_patch_custom_metadata("secret", f"{base}/c-1", {"status": "ok"})
        metadata = await client.kv_metadata("secret", f"{base}/c-1")
        assert metadata is not None
        assert metadata["custom_metadata"] == {"status": "ok"}
        assert await client.kv_list("secret", base) == ["c-1"]
        # A soft-deleted latest version: no data, but its metadata (to check-and-set against).
        await client.request("DELETE", f"secret/data/{base}/c-1")
        deleted = await client.kv_read("secret", f"{base}/c-1")
        assert deleted is not None
        assert deleted["data"] is None
        assert deleted["metadata"]["version"] == 1
        second = await client.kv_write("secret", f"{base}/c-1", {"password": "Xy34ef"}, cas=1)
        assert second["version"] == 2


@TRANSPORTS
async def test_a_lost_check_and_set_is_a_conflict(
    openbao: OpenBaoServer, vault_paths: VaultPaths, transport: str
) -> None:
    path = f"{vault_paths.vnc_path}/c-1"
    async with VaultClient(vault_paths.settings(openbao, transport=transport)) as client:
        await client.kv_write("secret", path, {"password": "Ab12cd"}, cas=0)
        with pytest.raises(VaultConflictError) as caught:
            await client.kv_write("secret", path, {"password": "Xy34ef"}, cas=0)
    assert caught.value.code == "VaultCasConflict"
    assert "check-and-set lost" in caught.value.message
    assert "Xy34ef" not in str(caught.value)


@TRANSPORTS
async def test_permission_denied_names_the_path_and_the_policy(
    openbao: OpenBaoServer, vault_paths: VaultPaths, transport: str
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        token = await create_token(admin, policies=["default"])
    settings = vault_paths.settings(openbao, token=token, transport=transport)
    async with VaultClient(settings) as client:
        with pytest.raises(VaultPermissionError) as caught:
            await VaultStore(client).write_root("c-1", "root", Secret("Xy12ab"), None)
        with pytest.raises(VaultPermissionError):
            await client.kv_list("secret", vault_paths.vnc_path)
    error = caught.value
    assert error.retry_class is RetryClass.TERMINAL
    assert f"secret/data/{vault_paths.root_path}/c-1" in error.message
    assert "'rotator' policy" in error.message
    assert "Xy12ab" not in str(error)
    assert token.reveal() not in str(error)


@TRANSPORTS
async def test_sealed_then_stopped_vault_is_unavailable(tmp_path: Path, transport: str) -> None:
    with start_openbao(tmp_path) as server:
        settings = VaultSettings(
            addr=server.addr,
            allow_insecure_http=True,
            token=server.root_token,
            timeout=2.0,
            transport=transport,  # type: ignore[arg-type]
        )
        async with VaultClient(settings) as client:
            store = VaultStore(client)
            await store.write_root("c-1", "root", Secret("Root12"), None)
            await client.request("PUT", "sys/seal")
            with pytest.raises(VaultUnavailableError) as sealed:
                await store.read_root("c-1")
            assert "sealed" in sealed.value.message
            assert sealed.value.retry_class is RetryClass.RETRYABLE
            server.stop()
            with pytest.raises(VaultUnavailableError, match="cannot connect"):
                await store.read_root("c-1")


@TRANSPORTS
async def test_a_closed_port_is_unavailable(transport: str) -> None:
    settings = VaultSettings(
        addr=f"http://127.0.0.1:{free_port()}",
        allow_insecure_http=True,
        token=Secret("t"),
        transport=transport,  # type: ignore[arg-type]
    )
    async with VaultClient(settings) as client:
        # The token is a given one (no lookup), so the KV call itself meets the closed port.
        client._auth = client._new_state(Secret("t"), 0, False)
        with pytest.raises(VaultUnavailableError, match="cannot connect to Vault"):
            await client.kv_read("secret", "ehpc/vnc/c-1")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung Vault)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_a_hung_vault_times_out_retryably_on_the_loop(silent_port: int) -> None:
    settings = VaultSettings(
        addr=f"http://127.0.0.1:{silent_port}",
        allow_insecure_http=True,
        token=Secret("t"),
        timeout=0.3,
        transport="aiohttp",
    )
    async with VaultClient(settings) as client:
        client._auth = client._new_state(Secret("t"), 0, False)
        with pytest.raises(VaultUnavailableError) as caught:
            await client.kv_read("secret", "ehpc/vnc/c-1")
    assert caught.value.retry_class is RetryClass.RETRYABLE
    assert "did not answer" in caught.value.message


@TRANSPORTS
async def test_tls_is_verified_against_the_configured_ca(tmp_path: Path, transport: str) -> None:
    with start_openbao(tmp_path, tls=True) as server:
        good = VaultSettings(
            addr=server.addr,
            ca_cert=str(server.ca_cert),
            token=server.root_token,
            transport=transport,  # type: ignore[arg-type]
        )
        async with VaultClient(good) as client:
            await client.kv_write("secret", "tls/c-1", {"password": "Ab12cd"})
            entry = await client.kv_read("secret", "tls/c-1")
            assert entry is not None
            assert entry["data"] == {"password": "Ab12cd"}
        other_ca = tmp_path / "other-ca.pem"
        other_ca.write_bytes(trustme.CA().cert_pem.bytes())
        bad = VaultSettings(
            addr=server.addr,
            ca_cert=str(other_ca),
            token=server.root_token,
            transport=transport,  # type: ignore[arg-type]
        )
        async with VaultClient(bad) as client:
            client._auth = client._new_state(server.root_token, 0, False)
            with pytest.raises(VaultError) as caught:
                await client.kv_read("secret", "tls/c-1")
    assert caught.value.code == "VaultTlsError"


# -- the token changes under the client ----------------------------------------------------


@TRANSPORTS
async def test_a_revoked_token_is_replaced_from_the_token_file(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path, transport: str
) -> None:
    """A Vault Agent writes a new token to the file; the old one is revoked: the next KV call
    gets a 403, finds its token dead, reads the file again and succeeds."""
    token_file = tmp_path / "token"
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        first = await create_token(admin, policies=["root"])
        second = await create_token(admin, policies=["root"])
        await admin.kv_write("secret", f"{vault_paths.vnc_path}/c-1", {"password": "Ab12cd"})
        token_file.write_text(first.reveal())
        settings = vault_paths.settings(
            openbao, token=None, token_file=str(token_file), transport=transport
        )
        async with VaultClient(settings) as client:
            assert await client.kv_read("secret", f"{vault_paths.vnc_path}/c-1") is not None
            assert client.logins == 1
            await admin.write("auth/token/revoke", {"token": first.reveal()})
            # Same size and (possibly) same mtime tick: the 403 path, not the file stamp, must
            # notice; both lead to reading the file again.
            token_file.write_text(second.reveal())
            entry = await client.kv_read("secret", f"{vault_paths.vnc_path}/c-1")
            assert entry is not None
            assert entry["data"] == {"password": "Ab12cd"}
            assert client.logins == 2
            assert await client.token() == second


@TRANSPORTS
async def test_a_token_revoked_mid_run_logs_in_again_with_approle(
    openbao: OpenBaoServer, vault_paths: VaultPaths, tmp_path: Path, transport: str
) -> None:
    async with VaultClient(vault_paths.settings(openbao)) as admin:
        approle = await _approle_settings(admin, vault_paths.settings(openbao), tmp_path)
        await VaultStore(admin).write_root("c-1", "root", Secret("Root12"), None)
        settings = replace(approle, transport=transport)  # type: ignore[arg-type]
        async with VaultClient(settings) as client:
            store = VaultStore(client)
            await store.read_root("c-1")
            await admin.write("auth/token/revoke", {"token": (await client.token()).reveal()})
            assert (await store.read_root("c-1")).password.reveal() == "Root12"
            assert client.logins == 2


# -- the aiohttp transport runs on the loop ------------------------------------------------


async def test_kv_calls_do_not_wait_for_the_hvac_pool(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """The pool's only worker is held until the KV calls are done: they can only finish if
    they do not need it (with hvac they would wait for it, and this test would time out)."""
    release = threading.Event()
    settings = vault_paths.settings(openbao, transport="aiohttp", max_workers=1)

    def hold(_client: hvac.Client) -> bool:
        return release.wait(timeout=60)

    async with VaultClient(settings) as client:
        await client.token()  # the login lookup uses the pool: do it before it is held
        held = asyncio.create_task(client.call(hold, op="read", path="sys/health"))
        try:
            path = f"{vault_paths.vnc_path}/c-1"
            await asyncio.wait_for(
                client.kv_write("secret", path, {"password": "Ab12cd"}, cas=0), timeout=30
            )
            entry = await asyncio.wait_for(client.kv_read("secret", path), timeout=30)
            assert entry is not None
            assert not held.done()
        finally:
            release.set()
        assert await held


async def test_a_closed_client_refuses_kv_calls(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    client = VaultClient(vault_paths.settings(openbao, transport="aiohttp"))
    await client.token()
    await client.aclose()
    with pytest.raises(VaultError) as caught:
        await client.kv_read("secret", f"{vault_paths.vnc_path}/c-1")
    assert caught.value.code == "VaultClientClosed"
