"""The client side of an RFB (VNC) handshake with VNC authentication, over any byte stream.

    await authenticate(stream, Secret("ab12cd"))   # returns the desktop name, or raises

Follows RFC 6143: ProtocolVersion (3.8, or 3.7/3.3 with an older server), the security
handshake with type 2 (VNC authentication: a 16-byte challenge answered with DES), the
SecurityResult, then ClientInit with the *shared* flag set (so that checking the password never
disconnects a person already at the desktop) and the ServerInit. It sends nothing after that:
one authentication per call, nothing that could change the desktop.

Errors say which side is at fault:

- :class:`RfbRejectedError`: the server checked the password and refused it (the only proof that the
  password is wrong);
- :class:`RfbRefusedError`: the server refused before checking a password (too many failures, a
  connection limit, no VNC authentication offered);
- :class:`RfbProtocolError`: the peer does not speak RFB as expected.
"""

from __future__ import annotations

import re
import struct

from rotator.secret import Secret
from rotator.verify.des import CHALLENGE_SIZE, vnc_response
from rotator.verify.stream import ByteStream

__all__ = [
    "SECURITY_NONE",
    "SECURITY_VNC",
    "RfbError",
    "RfbProtocolError",
    "RfbRefusedError",
    "RfbRejectedError",
    "authenticate",
]

SECURITY_INVALID = 0
SECURITY_NONE = 1
SECURITY_VNC = 2
_RESULT_OK = 0
_RESULT_FAILED = 1
_RESULT_TOO_MANY = 2  # sent by older servers (3.3/3.7) that lock a source out
_VERSION = re.compile(rb"^RFB (\d{3})\.(\d{3})\n$")
_MAX_REASON = 4096
_MAX_NAME = 4096
_SERVER_INIT_SIZE = 24


class RfbError(Exception):
    """Base of the handshake's errors; the message is the server's reason, never a secret."""


class RfbRejectedError(RfbError):
    """The server checked the password and said no (SecurityResult failed)."""


class RfbRefusedError(RfbError):
    """The server refused before a password was checked (lockout, limits, no VNC auth)."""


class RfbProtocolError(RfbError):
    """The peer's bytes are not the RFB handshake we expect."""


async def _u8(stream: ByteStream) -> int:
    return (await stream.read_exactly(1))[0]


async def _u32(stream: ByteStream) -> int:
    value: int = struct.unpack("!I", await stream.read_exactly(4))[0]
    return value


async def _reason(stream: ByteStream) -> str:
    length = await _u32(stream)
    if length > _MAX_REASON:
        raise RfbProtocolError(f"the server sent a {length}-byte reason string")
    return (await stream.read_exactly(length)).decode("utf-8", "replace").strip()


async def _version(stream: ByteStream) -> tuple[int, int]:
    """Read the server's ProtocolVersion and answer with the highest one we both speak."""
    raw = await stream.read_exactly(12)
    match = _VERSION.match(raw)
    if match is None:
        raise RfbProtocolError("the server did not open with an RFB ProtocolVersion")
    server = (int(match.group(1)), int(match.group(2)))
    if server < (3, 3):
        raise RfbProtocolError(f"RFB {server[0]}.{server[1]} is older than 3.3")
    # 3.8 and later (and the 3.889 Apple variant) talk 3.8; 3.4 to 3.6 are 3.3 (RFC 6143 A.).
    ours = (3, 8) if server >= (3, 8) else (3, 7) if server == (3, 7) else (3, 3)
    await stream.write(b"RFB %03d.%03d\n" % ours)
    return ours


async def _choose_vnc_auth(stream: ByteStream, version: tuple[int, int]) -> None:
    if version == (3, 3):
        chosen = await _u32(stream)  # the server decides
        if chosen == SECURITY_INVALID:
            raise RfbRefusedError(await _reason(stream) or "the server refused the connection")
        if chosen != SECURITY_VNC:
            raise RfbRefusedError(f"the server uses security type {chosen}, not VNC authentication")
        return
    count = await _u8(stream)
    if count == 0:
        raise RfbRefusedError(await _reason(stream) or "the server refused the connection")
    offered = set(await stream.read_exactly(count))
    if SECURITY_VNC not in offered:
        raise RfbRefusedError(
            f"the server does not offer VNC authentication (offers {sorted(offered)})"
        )
    await stream.write(bytes([SECURITY_VNC]))


async def authenticate(stream: ByteStream, password: Secret) -> str:
    """One RFB handshake with VNC authentication; the server's desktop name on success."""
    version = await _version(stream)
    await _choose_vnc_auth(stream, version)
    challenge = await stream.read_exactly(CHALLENGE_SIZE)
    await stream.write(vnc_response(password, challenge))
    result = await _u32(stream)
    if result == _RESULT_TOO_MANY:
        raise RfbRefusedError("the server reports too many authentication failures")
    if result not in (_RESULT_OK, _RESULT_FAILED):
        raise RfbProtocolError(f"the server sent SecurityResult {result}")
    if result == _RESULT_FAILED:
        reason = await _reason(stream) if version >= (3, 8) else ""
        raise RfbRejectedError(reason or "authentication failed")
    await stream.write(b"\x01")  # ClientInit, shared: never kick a person off the desktop
    init = await stream.read_exactly(_SERVER_INIT_SIZE)
    name_length: int = struct.unpack("!I", init[20:24])[0]
    if name_length > _MAX_NAME:
        raise RfbProtocolError(f"the server sent a {name_length}-byte desktop name")
    return (await stream.read_exactly(name_length)).decode("utf-8", "replace")
