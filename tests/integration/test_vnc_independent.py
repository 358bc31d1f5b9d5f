"""vncdotool, an RFB client no one here wrote, against the simulator's visual service.

vncdotool speaks RFB over raw TCP only (no WebSocket), so it talks to the simulator's TCP
endpoint for one cluster; the protocol code behind it is the same as behind ``/_vnc/<id>``.
It runs in a child process: it drives a Twisted reactor in a thread of its own, and it uses a
``cryptography`` import path that warns (pytest turns warnings into errors). The password goes
to it on stdin, never as an argument.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import pytest

from rotator.sim import Simulator
from tests.support.sim import SimAdmin

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

_CLIENT = """
import sys, warnings
warnings.simplefilter("ignore")
from vncdotool import api
from vncdotool.client import AuthenticationError
server, password = sys.argv[1], sys.stdin.readline().rstrip("\\n")
client = api.connect(server, password=password, timeout=60)
try:
    client.keyPress("shift")  # waits until the handshake is through, then sends a key event
    print("CONNECTED", flush=True)
except AuthenticationError as exc:
    print("AUTH_FAILED", exc, flush=True)
finally:
    api.shutdown()
"""


async def _vncdotool(port: int, password: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        f"127.0.0.1::{port}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(f"{password}\n".encode()), 120)
    return out.decode().strip() or f"no output; stderr: {err.decode()[-1000:]}"


async def _counts(sim: Simulator, cluster_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        result: dict[str, Any] = (await SimAdmin(session, sim).request("GET", "vnc"))[cluster_id]
        return result


async def test_vncdotool_gets_in_with_the_right_password_and_not_with_a_wrong_one(
    sim: Simulator,
) -> None:
    cluster = next(c for c in sim.inventory.clusters if c.status == "running")
    port = await sim.rfb.listen_tcp(cluster.id)

    assert await _vncdotool(port, cluster.vnc_password) == "CONNECTED"
    assert (await _vncdotool(port, "zz99zz")).startswith("AUTH_FAILED")

    counts = await _counts(sim, cluster.id)
    assert counts["successes"] == 1
    assert counts["failed_attempts"] == 1
