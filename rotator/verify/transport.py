"""Opening the byte stream to a VNC server: ``tcp://``, ``ws://`` or ``wss://`` (TLS verified).

    async with open_stream("wss://10.0.0.5:12016/", ssl_context=context) as stream:
        await authenticate(stream, password)

The E-HPC visual service is reached through a WebSocket (port 12016 once
``StartVisualService`` ran); a VNC server in the VPC may also be reached over raw TCP. Over a
WebSocket the RFB bytes travel in binary frames, offered with the ``binary`` subprotocol that
websockify and noVNC use.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from yarl import URL

from rotator.verify.stream import ByteStream, StreamClosedError

__all__ = ["SCHEMES", "open_stream"]

SCHEMES = ("tcp", "ws", "wss")
_MAX_FRAME = 1 << 20  # an RFB handshake is a few hundred bytes; a ServerInit name at most 4 KiB


class TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read_exactly(self, count: int) -> bytes:
        try:
            return await self._reader.readexactly(count)
        except asyncio.IncompleteReadError:
            raise StreamClosedError("the VNC server closed the connection") from None

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:  # already reset by the peer: closed either way
            return


class WebSocketStream:
    """RFB over binary WebSocket frames: frame boundaries are ignored, bytes are buffered."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._buffer = bytearray()

    async def read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                self._buffer += message.data
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                raise StreamClosedError("the VNC WebSocket was closed by the server")
            # text, ping and pong frames carry no RFB bytes
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def write(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def close(self) -> None:
        await self._ws.close()


@asynccontextmanager
async def open_stream(
    url: str, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[ByteStream]:
    """A connected stream to ``url``; closed on exit. The caller bounds the time it takes."""
    parsed = URL(url)
    if parsed.scheme not in SCHEMES or not parsed.host:
        raise ValueError(f"a VNC URL is tcp://, ws:// or wss://host[:port][/path], not {url!r}")
    if parsed.scheme == "tcp":
        if parsed.explicit_port is None:
            raise ValueError("a tcp:// VNC URL needs a port (VNC display :1 is port 5901)")
        reader, writer = await asyncio.open_connection(parsed.host, parsed.explicit_port)
        stream: TcpStream | WebSocketStream = TcpStream(reader, writer)
        try:
            yield stream
        finally:
            await stream.close()
        return
    tls: ssl.SSLContext | bool = True
    if parsed.scheme == "wss":
        tls = ssl_context or ssl.create_default_context()
    timeout = aiohttp.ClientTimeout(total=None)  # the caller's asyncio.timeout bounds it all
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(
            parsed,
            protocols=("binary",),
            ssl=tls,
            max_msg_size=_MAX_FRAME,
            autoping=True,
        ) as ws,
    ):
        stream = WebSocketStream(ws)
        try:
            yield stream
        finally:
            await stream.close()
