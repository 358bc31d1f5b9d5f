"""The byte stream the RFB code talks through: a TCP connection or a WebSocket, alike.

RFB is a stream protocol; over a WebSocket its bytes travel in binary frames whose boundaries
mean nothing (websockify and noVNC split them freely), so both transports present the same
``read_exactly`` / ``write`` / ``close`` surface and the protocol code never knows which it has.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ByteStream", "StreamClosedError"]


class StreamClosedError(ConnectionError):
    """The peer closed the stream before sending all the bytes the protocol expected."""


class ByteStream(Protocol):
    async def read_exactly(self, count: int) -> bytes:
        """``count`` bytes, or :class:`StreamClosedError` if the peer closes first."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...
