"""The VNC flavour of DES: the one cipher RFB security type 2 uses, from ``cryptography``.

    response = vnc_response(Secret("ab12cd"), challenge)   # 16 bytes back to the server

VNC takes the first 8 bytes of the password, NUL-padded, reverses the bits of every byte, and
encrypts the server's 16-byte challenge with single DES in ECB mode under that key. Single DES
is weak and VNC authentication can be brute-forced offline from one captured exchange, which is
why the README asks for ``wss://`` or a path inside the VPC.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from rotator.secret import Secret

__all__ = ["CHALLENGE_SIZE", "vnc_des_key", "vnc_response"]

CHALLENGE_SIZE = 16
_KEY_SIZE = 8


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_des_key(password: bytes) -> bytes:
    """The 8-byte DES key VNC derives from a password (longer passwords are cut, as VNC does)."""
    padded = password[:_KEY_SIZE].ljust(_KEY_SIZE, b"\0")
    return bytes(_reverse_bits(b) for b in padded)


def vnc_response(password: Secret, challenge: bytes) -> bytes:
    """The client's answer to a VNC authentication challenge."""
    if len(challenge) != CHALLENGE_SIZE:
        raise ValueError(f"a VNC challenge has {CHALLENGE_SIZE} bytes, not {len(challenge)}")
    key = vnc_des_key(password.reveal().encode("latin-1", "replace"))
    # Triple DES with one key repeated three times is single DES; the 24-byte form is the one
    # cryptography supports without a deprecation warning (8-byte keys are deprecated).
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 - RFB mandates ECB
    return encryptor.update(challenge) + encryptor.finalize()
