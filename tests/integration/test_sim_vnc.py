"""The simulator's visual service against rotator's RFB client, over real sockets.

(tests/integration/test_vnc_independent.py proves the same server with a client no one here
wrote; tests/test_verify_*.py cover the client's units.)
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rotator.secret import Secret
from rotator.sim import Simulator
from rotator.verify import RfbVerifier, VerifyStatus
from tests.support.sim import SimAdmin, SimFactory, send, sign

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def _verifier(sim: Simulator, timeout: float = 30.0) -> RfbVerifier:
    return RfbVerifier(url_template=sim.vnc_url + "/_vnc/{cluster_id}", timeout=timeout)


async def _running(sim: Simulator) -> Any:
    return next(c for c in sim.inventory.clusters if c.status == "running")


async def _vnc(sim: Simulator) -> dict[str, Any]:
    tls = ssl.create_default_context(cafile=str(sim.ca_file)) if sim.ca_file else None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls or True)) as session:
        result: dict[str, Any] = await SimAdmin(session, sim).request("GET", "vnc")
        return result


async def test_the_current_password_is_verified_and_a_wrong_one_fails(sim: Simulator) -> None:
    cluster = await _running(sim)
    verifier = _verifier(sim)
    good = await verifier.verify(
        cluster_id=cluster.id,
        region=cluster.region,
        host=None,
        password=Secret(cluster.vnc_password),
    )
    assert good.status is VerifyStatus.VERIFIED, good
    bad = await verifier.verify(
        cluster_id=cluster.id, region=cluster.region, host=None, password=Secret("zz99zz")
    )
    assert bad.status is VerifyStatus.VERIFY_FAILED
    assert bad.code == "VncAuthFailed"
    assert "zz99zz" not in (bad.message or "")
    assert cluster.vnc_password not in (bad.message or "")
    counts = (await _vnc(sim))[cluster.id]
    assert counts["successes"] == 1
    assert counts["failed_attempts"] == 1
    assert counts["lockouts"] == 0


async def test_five_failures_lock_the_source_out_and_refuse_even_the_right_password(
    sim_factory: SimFactory,
) -> None:
    sim = await sim_factory(vnc_lockout_seconds=3600.0)
    cluster = await _running(sim)
    verifier = _verifier(sim)
    for _ in range(5):
        result = await verifier.verify(
            cluster_id=cluster.id, region=cluster.region, host=None, password=Secret("zz99zz")
        )
        assert result.status is VerifyStatus.VERIFY_FAILED
    locked = await verifier.verify(
        cluster_id=cluster.id,
        region=cluster.region,
        host=None,
        password=Secret(cluster.vnc_password),
    )
    assert locked.status is VerifyStatus.UNVERIFIED
    assert locked.code == "VncRefused"
    assert "Too many security failures" in (locked.message or "")
    counts = (await _vnc(sim))[cluster.id]
    assert counts["failed_attempts"] == 5
    assert counts["lockouts"] == 1
    assert counts["refused"] == 1
    assert counts["locked_sources"] == ["127.0.0.1"]


async def test_a_success_clears_the_failure_count(sim: Simulator) -> None:
    cluster = await _running(sim)
    verifier = _verifier(sim)
    right = Secret(cluster.vnc_password)
    for _ in range(3):
        for password in (Secret("zz99zz"), Secret("yy88yy"), right):
            await verifier.verify(
                cluster_id=cluster.id, region=cluster.region, host=None, password=password
            )
    counts = (await _vnc(sim))[cluster.id]
    assert counts["failed_attempts"] == 6
    assert counts["lockouts"] == 0


async def test_unknown_and_stopped_clusters_are_unverified_not_failed(sim: Simulator) -> None:
    verifier = _verifier(sim)
    missing = await verifier.verify(
        cluster_id="ehpc-hz-nope", region="cn-hangzhou", host=None, password=Secret("ab12cd")
    )
    assert missing.status is VerifyStatus.UNVERIFIED
    assert missing.code == "VncUnreachable"
    stopped = next(c for c in sim.inventory.clusters if c.status != "running")
    down = await verifier.verify(
        cluster_id=stopped.id, region=stopped.region, host=None, password=Secret("ab12cd")
    )
    assert down.status is VerifyStatus.UNVERIFIED


async def test_nothing_listening_is_unverified(sim: Simulator) -> None:
    cluster = await _running(sim)
    port = await sim.rfb.listen_tcp(cluster.id)
    await sim.rfb.close()  # the port is now closed: connection refused
    verifier = RfbVerifier(url_template=f"tcp://127.0.0.1:{port}", timeout=30.0)
    result = await verifier.verify(
        cluster_id=cluster.id, region=cluster.region, host=None, password=Secret("ab12cd")
    )
    assert result.status is VerifyStatus.UNVERIFIED
    assert result.code == "VncUnreachable"


async def test_raw_tcp_transport(sim: Simulator) -> None:
    cluster = await _running(sim)
    port = await sim.rfb.listen_tcp(cluster.id)
    verifier = RfbVerifier(url_template="tcp://{host}:" + str(port), timeout=30.0)
    ok = await verifier.verify(
        cluster_id=cluster.id,
        region=cluster.region,
        host="127.0.0.1",
        password=Secret(cluster.vnc_password),
    )
    assert ok.status is VerifyStatus.VERIFIED
    bad = await verifier.verify(
        cluster_id=cluster.id, region=cluster.region, host="127.0.0.1", password=Secret("zz99zz")
    )
    assert bad.status is VerifyStatus.VERIFY_FAILED


async def test_wss_is_verified_against_the_given_ca_and_refused_without_it(
    sim_factory: SimFactory,
) -> None:
    sim = await sim_factory(tls=True)
    assert sim.vnc_url.startswith("wss://")
    assert sim.ca_file is not None
    cluster = await _running(sim)
    template = sim.vnc_url + "/_vnc/{cluster_id}"
    trusted = RfbVerifier(url_template=template, timeout=30.0, ca_bundle=sim.ca_file)
    ok = await trusted.verify(
        cluster_id=cluster.id,
        region=cluster.region,
        host=None,
        password=Secret(cluster.vnc_password),
    )
    assert ok.status is VerifyStatus.VERIFIED
    untrusted = RfbVerifier(url_template=template, timeout=30.0)
    refused = await untrusted.verify(
        cluster_id=cluster.id,
        region=cluster.region,
        host=None,
        password=Secret(cluster.vnc_password),
    )
    assert refused.status is VerifyStatus.UNVERIFIED
    assert refused.code == "VncTlsError"
    assert (await _vnc(sim))[cluster.id]["failed_attempts"] == 0


async def test_the_silent_no_op_fault_answers_ok_and_changes_nothing(sim: Simulator) -> None:
    cluster = await _running(sim)
    before = cluster.vnc_password
    async with aiohttp.ClientSession() as session:
        admin = SimAdmin(session, sim)
        faults = await admin.set_faults(silent_noop_rate=1.0)
        assert faults["silent_noop_rate"] == 1.0
        call = sign(
            sim,
            "ModifyVisualServicePasswd",
            {
                "ClusterId": cluster.id,
                "RunasUser": "root",
                "RunasUserPassword": cluster.root_password,
                "Passwd": "new123",
            },
        )
        reply = await send(session, call)
        assert reply.status == 200, reply.body
        assert reply.code is None
        stats = await admin.stats()
    assert cluster.vnc_password == before
    assert cluster.change_count == 0
    assert "SilentNoop" in json.dumps(stats)
    # Only a VNC login can tell: the "new" password is refused, the old one still works.
    verifier = _verifier(sim)
    new = await verifier.verify(
        cluster_id=cluster.id, region=cluster.region, host=None, password=Secret("new123")
    )
    assert new.status is VerifyStatus.VERIFY_FAILED


async def _serve_ws(handler: Any) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


async def test_rfb_bytes_split_across_websocket_frames_are_reassembled(sim: Simulator) -> None:
    """websockify and noVNC cut the byte stream anywhere; frame boundaries mean nothing."""
    cluster = await _running(sim)

    async def one_byte_per_frame(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",))
        await ws.prepare(request)

        class Split:
            def __init__(self) -> None:
                self.buffer = bytearray()

            async def read_exactly(self, count: int) -> bytes:
                while len(self.buffer) < count:
                    message = await ws.receive()
                    assert message.type is aiohttp.WSMsgType.BINARY
                    self.buffer += message.data
                data = bytes(self.buffer[:count])
                del self.buffer[:count]
                return data

            async def write(self, data: bytes) -> None:
                for byte in data:
                    await ws.send_bytes(bytes([byte]))

        await sim.rfb.session(Split(), cluster, "split")
        await ws.close()
        return ws

    runner, port = await _serve_ws(one_byte_per_frame)
    try:
        verifier = RfbVerifier(url_template=f"ws://127.0.0.1:{port}/", timeout=30.0)
        result = await verifier.verify(
            cluster_id=cluster.id,
            region=cluster.region,
            host=None,
            password=Secret(cluster.vnc_password),
        )
    finally:
        await runner.cleanup()
    assert result.status is VerifyStatus.VERIFIED, result


async def test_a_server_that_never_answers_is_a_timeout() -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        verifier = RfbVerifier(url_template=f"tcp://127.0.0.1:{port}", timeout=0.5)
        result = await verifier.verify(
            cluster_id="c-1", region="cn-hangzhou", host=None, password=Secret("ab12cd")
        )
    finally:
        server.close()
        await server.wait_closed()
    assert accepted.is_set()
    assert (result.status, result.code) == (VerifyStatus.UNVERIFIED, "VncTimeout")
