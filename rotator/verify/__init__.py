"""VNC (RFB) verification of a freshly rotated password.

    verifier = RfbVerifier(url_template="wss://{host}:12016/", timeout=10.0)
    result = await verifier.verify(cluster_id=..., region=..., host=..., password=...)

A leaf package: it imports nothing of rotator's but :mod:`rotator.secret`; the engine uses it
through its ``PasswordVerifier`` protocol.
"""

from __future__ import annotations

from rotator.verify.check import (
    PLACEHOLDERS,
    RfbVerifier,
    VerifyResult,
    VerifyStatus,
    check_url_template,
)
from rotator.verify.des import vnc_des_key, vnc_response
from rotator.verify.rfb import RfbProtocolError, RfbRefusedError, RfbRejectedError, authenticate

__all__ = [
    "PLACEHOLDERS",
    "RfbProtocolError",
    "RfbRefusedError",
    "RfbRejectedError",
    "RfbVerifier",
    "VerifyResult",
    "VerifyStatus",
    "authenticate",
    "check_url_template",
    "vnc_des_key",
    "vnc_response",
]
