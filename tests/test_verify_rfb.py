"""The RFB client's units: the VNC DES key, the handshake against scripted servers, URLs."""

from __future__ import annotations

import struct

import pytest

from rotator.secret import Secret
from rotator.verify import (
    RfbProtocolError,
    RfbRefusedError,
    RfbRejectedError,
    RfbVerifier,
    VerifyStatus,
    authenticate,
    check_url_template,
    vnc_des_key,
    vnc_response,
)
from rotator.verify.stream import StreamClosedError

CHALLENGE = bytes(range(16))


class ScriptedServer:
    """A byte stream whose server side is a fixed script; records what the client sends."""

    def __init__(self, *chunks: bytes) -> None:
        self._incoming = bytearray(b"".join(chunks))
        self.sent = bytearray()

    async def read_exactly(self, count: int) -> bytes:
        if len(self._incoming) < count:
            raise StreamClosedError("script ended")
        data = bytes(self._incoming[:count])
        del self._incoming[:count]
        return data

    async def write(self, data: bytes) -> None:
        self.sent += data

    async def close(self) -> None:
        return None


def _server_init(name: bytes = b"desk") -> bytes:
    return struct.pack("!HH", 800, 600) + bytes(16) + struct.pack("!I", len(name)) + name


def _reason(text: bytes) -> bytes:
    return struct.pack("!I", len(text)) + text


def test_the_des_key_is_the_first_8_bytes_nul_padded_with_each_bytes_bits_reversed() -> None:
    assert vnc_des_key(b"\x01") == b"\x80" + bytes(7)
    assert vnc_des_key(b"a") == b"\x86" + bytes(7)  # 0b01100001 -> 0b10000110
    assert vnc_des_key(b"abcdefghXYZ") == vnc_des_key(b"abcdefgh")  # VNC ignores the rest
    assert len(vnc_des_key(b"")) == 8


def test_des_known_answers() -> None:
    # An empty password is the all-zero key: DES(0, 0) = 8ca64de9c1b123a7, twice (ECB).
    assert vnc_response(Secret(""), bytes(16)).hex() == "8ca64de9c1b123a7" * 2
    # The textbook DES example: key 133457799BBCDFF1, 0123456789ABCDEF -> 85E813540F0AB405.
    # VNC reverses each key byte's bits, so the "password" is the key reversed back.
    key = bytes.fromhex("133457799BBCDFF1")
    password = "".join(chr(int(f"{b:08b}"[::-1], 2)) for b in key)
    block = bytes.fromhex("0123456789ABCDEF")
    assert vnc_response(Secret(password), block * 2).hex() == "85e813540f0ab405" * 2


def test_a_challenge_must_have_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        vnc_response(Secret("ab12cd"), b"short")


@pytest.mark.asyncio
async def test_rfb_38_success_sends_the_response_and_a_shared_client_init() -> None:
    server = ScriptedServer(
        b"RFB 003.008\n", bytes([2, 1, 2]), CHALLENGE, struct.pack("!I", 0), _server_init()
    )
    assert await authenticate(server, Secret("ab12cd")) == "desk"
    expected = b"RFB 003.008\n" + b"\x02" + vnc_response(Secret("ab12cd"), CHALLENGE) + b"\x01"
    assert bytes(server.sent) == expected


@pytest.mark.asyncio
async def test_a_refused_password_is_rejected_with_the_servers_reason() -> None:
    server = ScriptedServer(
        b"RFB 003.008\n", bytes([1, 2]), CHALLENGE, struct.pack("!I", 1), _reason(b"bad pw")
    )
    with pytest.raises(RfbRejectedError, match="bad pw"):
        await authenticate(server, Secret("ab12cd"))


@pytest.mark.asyncio
async def test_a_locked_out_source_is_refused_not_rejected() -> None:
    server = ScriptedServer(b"RFB 003.008\n", b"\x00", _reason(b"Too many security failures"))
    with pytest.raises(RfbRefusedError, match="Too many security failures"):
        await authenticate(server, Secret("ab12cd"))
    assert bytes(server.sent) == b"RFB 003.008\n"  # no password was ever sent


@pytest.mark.asyncio
async def test_no_vnc_authentication_offered_is_refused() -> None:
    server = ScriptedServer(b"RFB 003.008\n", bytes([2, 1, 19]))
    with pytest.raises(RfbRefusedError, match="does not offer VNC authentication"):
        await authenticate(server, Secret("ab12cd"))


@pytest.mark.asyncio
async def test_an_rfb_33_server_chooses_the_type_itself() -> None:
    server = ScriptedServer(
        b"RFB 003.003\n", struct.pack("!I", 2), CHALLENGE, struct.pack("!I", 0), _server_init()
    )
    await authenticate(server, Secret("ab12cd"))
    assert bytes(server.sent).startswith(
        b"RFB 003.003\n" + vnc_response(Secret("ab12cd"), CHALLENGE)
    )


@pytest.mark.asyncio
async def test_an_rfb_33_failure_has_no_reason_and_too_many_is_a_refusal() -> None:
    failed = ScriptedServer(b"RFB 003.003\n", struct.pack("!I", 2), CHALLENGE, struct.pack("!I", 1))
    with pytest.raises(RfbRejectedError):
        await authenticate(failed, Secret("ab12cd"))
    locked = ScriptedServer(b"RFB 003.007\n", bytes([1, 2]), CHALLENGE, struct.pack("!I", 2))
    with pytest.raises(RfbRefusedError):
        await authenticate(locked, Secret("ab12cd"))


@pytest.mark.asyncio
async def test_apple_3889_is_answered_with_38() -> None:
    server = ScriptedServer(
        b"RFB 003.889\n", bytes([1, 2]), CHALLENGE, struct.pack("!I", 0), _server_init()
    )
    await authenticate(server, Secret("ab12cd"))
    assert bytes(server.sent).startswith(b"RFB 003.008\n")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "script",
    [
        b"HTTP/1.1 400\r\n",  # not RFB at all
        b"RFB 003.008\n" + bytes([1, 2]) + CHALLENGE + struct.pack("!I", 7),  # odd result
        b"RFB 003.008\n" + b"\x00" + struct.pack("!I", 1 << 20),  # absurd reason length
    ],
)
async def test_garbage_is_a_protocol_error(script: bytes) -> None:
    with pytest.raises(RfbProtocolError):
        await authenticate(ScriptedServer(script), Secret("ab12cd"))


def test_url_templates_are_checked() -> None:
    assert check_url_template("wss://{host}:12016/") == {"host"}
    assert check_url_template("ws://10.0.0.1:8080/_vnc/{cluster_id}") == {"cluster_id"}
    for bad, message in [
        ("https://{host}/", "tcp://, ws:// or wss://"),
        ("wss://{hostname}:12016/", "unknown placeholder"),
        ("tcp://{host}", "needs a port"),
        ("wss://{host!r}:1/", "unknown placeholder"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_url_template(bad)


@pytest.mark.asyncio
async def test_a_host_template_without_a_host_is_unverified_without_connecting() -> None:
    verifier = RfbVerifier(url_template="wss://{host}:12016/", timeout=1.0)
    assert verifier.needs_host
    result = await verifier.verify(
        cluster_id="ehpc-hz-1", region="cn-hangzhou", host=None, password=Secret("ab12cd")
    )
    assert result.status is VerifyStatus.UNVERIFIED
    assert result.code == "VncHostUnknown"
    assert "vnc_host" in (result.message or "")
