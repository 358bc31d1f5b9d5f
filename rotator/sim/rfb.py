"""The simulated clusters' visual service: RFB 3.8 with VNC authentication.

    rfb = RfbService(inventory, max_failures=5, lockout_seconds=10.0)
    app.router.add_get("/_vnc/{cluster_id}", rfb.handle_ws)   # binary WebSocket frames
    port = await rfb.listen_tcp("ehpc-hz-1", "127.0.0.1")       # the same, over raw TCP

Each cluster authenticates against its *current* VNC password (the one the last successful
ModifyVisualServicePasswd set). Like TigerVNC, a source that fails authentication
``max_failures`` times in a row is locked out: for ``lockout_seconds`` every connection from it
is refused before any password is checked ("Too many security failures"); a success clears its
count. The admin API (``GET /_sim/vnc``) shows failed attempts and lockouts per cluster.

The DES check here is written independently of rotator's client (it decrypts the response and
compares it with the challenge), so the two cannot share a bug; an outside client (vncdotool)
proves both in the tests.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiohttp import WSMsgType, web
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from rotator.sim.inventory import Inventory, SimCluster

__all__ = ["RfbService", "VncStats"]

log = structlog.get_logger("rotator.sim")

_VERSIONS = {b"RFB 003.003\n": (3, 3), b"RFB 003.007\n": (3, 7), b"RFB 003.008\n": (3, 8)}
_VNC_AUTH = 2
_LOCKED_REASON = b"Too many security failures"
_FAILED_REASON = b"Authentication failed"
# ServerInit: 1024x768, 32 bpp, depth 24, little endian, true colour, RGB 8-8-8 at 16/8/0.
_PIXEL_FORMAT = struct.pack("!BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
# Client-to-server messages after the handshake: type -> fixed length after the type byte.
_FIXED = {0: 19, 3: 9, 4: 7, 5: 5}
_WS_ENDS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
# Bit-reversal of every byte value, built once (VNC reverses the bits of each key byte).
_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


class _Closed(Exception):  # noqa: N818 - control flow: the client went away
    pass


class _Stream(Protocol):
    async def read_exactly(self, count: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


@dataclass(slots=True)
class VncStats:
    """One cluster's visual-service counters (the admin API's view)."""

    successes: int = 0
    failed_attempts: int = 0
    """Every wrong password, ever (a rotator run must never add to this)."""
    lockouts: int = 0
    refused: int = 0
    """Connections refused because their source was locked out."""
    consecutive: dict[str, int] = field(default_factory=dict)
    locked_until: dict[str, float] = field(default_factory=dict)

    def view(self, now: float) -> dict[str, object]:
        return {
            "successes": self.successes,
            "failed_attempts": self.failed_attempts,
            "lockouts": self.lockouts,
            "refused": self.refused,
            "locked_sources": sorted(s for s, t in self.locked_until.items() if t > now),
        }


def _key(password: str) -> bytes:
    raw = password.encode("latin-1", "replace")[:8].ljust(8, b"\0")
    return raw.translate(_REVERSED)


def _password_matches(password: str, challenge: bytes, response: bytes) -> bool:
    decryptor = Cipher(TripleDES(_key(password) * 3), modes.ECB()).decryptor()  # noqa: S305
    return hmac.compare_digest(decryptor.update(response) + decryptor.finalize(), challenge)


class _WsStream:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._buffer = bytearray()

    async def read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            message = await self._ws.receive()
            if message.type is WSMsgType.BINARY:
                self._buffer += message.data
            elif message.type in _WS_ENDS:
                raise _Closed
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(data)


class _TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read_exactly(self, count: int) -> bytes:
        try:
            return await self._reader.readexactly(count)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _Closed from None

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except ConnectionError:
            raise _Closed from None


class RfbService:
    """VNC authentication for every simulated cluster (single event loop, no locks)."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        max_failures: int = 5,
        lockout_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inventory = inventory
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.clock = clock
        self.stats: dict[str, VncStats] = {}
        self._servers: dict[str, asyncio.Server] = {}
        self._sessions: set[asyncio.Task[None]] = set()

    def stats_for(self, cluster_id: str) -> VncStats:
        return self.stats.setdefault(cluster_id, VncStats())

    def admin_view(self) -> dict[str, dict[str, object]]:
        now = self.clock()
        return {cid: s.view(now) for cid, s in sorted(self.stats.items())}

    # -- transports --------------------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        cluster = self.inventory.get(request.match_info["cluster_id"])
        if cluster is None:
            raise web.HTTPNotFound(text="no such cluster")
        if cluster.status != "running":
            # A stopped cluster's visual service is down: nothing answers the upgrade.
            raise web.HTTPServiceUnavailable(text=f"the cluster is {cluster.status}")
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=1 << 16)
        await ws.prepare(request)
        try:
            await self.session(_WsStream(ws), cluster, request.remote or "unknown")
        finally:
            await ws.close()
        return ws

    async def listen_tcp(self, cluster_id: str, host: str = "127.0.0.1") -> int:
        """Serve ``cluster_id``'s visual service over raw TCP too; returns the port."""
        cluster = self.inventory.get(cluster_id)
        if cluster is None:
            raise KeyError(cluster_id)
        existing = self._servers.get(cluster_id)
        if existing is None:

            async def on_connect(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                peer = writer.get_extra_info("peername")
                source = str(peer[0]) if peer else "unknown"
                task = asyncio.current_task()
                if task is not None:
                    self._sessions.add(task)
                try:
                    await self.session(_TcpStream(reader, writer), cluster, source)
                finally:
                    if task is not None:
                        self._sessions.discard(task)
                    writer.close()

            existing = await asyncio.start_server(on_connect, host, 0)
            self._servers[cluster_id] = existing
        port: int = existing.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()
        for task in list(self._sessions):
            task.cancel()
        for server in servers:
            await server.wait_closed()

    # -- the protocol ------------------------------------------------------------------------

    async def session(self, stream: _Stream, cluster: SimCluster, source: str) -> None:
        try:
            await self._session(stream, cluster, source)
        except _Closed:
            return

    async def _session(self, stream: _Stream, cluster: SimCluster, source: str) -> None:
        stats = self.stats_for(cluster.id)
        await stream.write(b"RFB 003.008\n")
        version = _VERSIONS.get(await stream.read_exactly(12))
        if version is None:
            return  # not an RFB client: hang up, as real servers do
        if stats.locked_until.get(source, 0.0) > self.clock():
            stats.refused += 1
            log.info("sim_vnc_refused", cluster_id=cluster.id, source=source)
            head = struct.pack("!I", 0) if version == (3, 3) else b"\x00"
            await stream.write(head + struct.pack("!I", len(_LOCKED_REASON)) + _LOCKED_REASON)
            return
        if version == (3, 3):
            await stream.write(struct.pack("!I", _VNC_AUTH))
        else:
            await stream.write(bytes([1, _VNC_AUTH]))
            if (await stream.read_exactly(1))[0] != _VNC_AUTH:
                return
        challenge = secrets.token_bytes(16)
        await stream.write(challenge)
        response = await stream.read_exactly(16)
        if not _password_matches(cluster.vnc_password, challenge, response):
            self._failed(stats, cluster.id, source)
            reason = struct.pack("!I", len(_FAILED_REASON)) + _FAILED_REASON
            await stream.write(struct.pack("!I", 1) + (reason if version == (3, 8) else b""))
            return
        stats.successes += 1
        stats.consecutive.pop(source, None)
        await stream.write(struct.pack("!I", 0))
        await stream.read_exactly(1)  # ClientInit (shared flag): every client shares here
        name = f"{cluster.name} (simulated E-HPC visual service)".encode()
        await stream.write(
            struct.pack("!HH", 1024, 768) + _PIXEL_FORMAT + struct.pack("!I", len(name)) + name
        )
        await self._messages(stream)

    def _failed(self, stats: VncStats, cluster_id: str, source: str) -> None:
        stats.failed_attempts += 1
        count = stats.consecutive.get(source, 0) + 1
        stats.consecutive[source] = count
        log.info("sim_vnc_auth_failed", cluster_id=cluster_id, source=source, in_a_row=count)
        if count >= self.max_failures:
            stats.consecutive.pop(source, None)
            stats.lockouts += 1
            stats.locked_until[source] = self.clock() + self.lockout_seconds
            log.warning("sim_vnc_locked_out", cluster_id=cluster_id, source=source)

    @staticmethod
    async def _messages(stream: _Stream) -> None:
        """Read (and ignore) what a client sends after the handshake, until it hangs up."""
        while True:
            kind = (await stream.read_exactly(1))[0]
            if kind in _FIXED:
                await stream.read_exactly(_FIXED[kind])
            elif kind == 2:  # SetEncodings: padding, count, 4 bytes each
                count = struct.unpack("!xH", await stream.read_exactly(3))[0]
                await stream.read_exactly(4 * count)
            elif kind == 6:  # ClientCutText: 3 padding, length, text
                length = struct.unpack("!3xI", await stream.read_exactly(7))[0]
                if length > 1 << 20:
                    return
                await stream.read_exactly(length)
            else:
                return  # an extension we do not speak: hang up
