"""Error answers of the simulated gateway and E-HPC, in each shape the real gateway sends.

raise SimError("ClusterNotFound", "The specified cluster does not exist.")
raise SimError("Forbidden.RAM", GATEWAY_MESSAGES["Forbidden.RAM"], shape=ErrorShape.XML)
response = error_response(err, request_id=rid, host_id="127.0.0.1:8080")

Shapes: the documented JSON (``RequestId, HostId, Code, Message, Recommend``), the same with
lower-case keys (``requestId``, ``code``, ``message``: some gateways and the SDK accept them),
and XML (``<Error><Code>...``, served as ``text/xml;charset=utf-8``, the type the SDK checks).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from xml.sax.saxutils import escape

from aiohttp import web

from rotator.ehpc.codes import CODES

__all__ = [
    "GATEWAY_MESSAGES",
    "ErrorShape",
    "SimError",
    "check_method",
    "error_body",
    "error_response",
    "message_for",
    "status_for",
]

# Gateway codes outside rotator.ehpc.codes (the client never needs to tell these apart).
_EXTRA_STATUS = {"InvalidAction.NotFound": 404, "InvalidVersion": 400}
_MISSING = re.compile(r"\AMissing([A-Z][A-Za-z0-9]*)\Z")

GATEWAY_MESSAGES: dict[str, str] = {
    "Forbidden.RAM": (
        "User not authorized to operate on the specified resource, or this API doesn't support RAM."
    ),
    "NoPermission": "You are not authorized to perform this operation.",
    "InvalidAccessKeyId.Inactive": "Specified access key is disabled.",
    "InvalidAccessKeyId.NotFound": "Specified access key is not found.",
    "InvalidSecurityToken.Expired": "Specified SecurityToken is expired.",
    "InvalidSecurityToken.Malformed": "Specified SecurityToken is malformed.",
    "InvalidSecurityToken.MismatchWithAccessKey": (
        "Specified SecurityToken mismatch with the AccessKey."
    ),
    "InvalidTimeStamp.Expired": "Specified time stamp or date value is expired.",
    "InvalidTimeStamp.Format": "Specified time stamp or date value is not well formatted.",
    "SignatureDoesNotMatch": "Specified signature does not match our calculation.",
    "IncompleteSignature": "The request signature does not conform to Aliyun standards.",
    "InvalidApi.NotFound": "Specified api is not found, please check your url and method.",
    "SignatureNonceUsed": "Specified signature nonce was used already.",
}


def message_for(code: str) -> str:
    """The gateway's documented text for ``code`` (``<Name> is mandatory...`` for Missing*)."""
    missing = _MISSING.match(code)
    if missing and code != "MissingParameter":
        return f"{missing.group(1)} is mandatory for this action."
    return GATEWAY_MESSAGES.get(code, f"{code} (injected by the simulator)")


class ErrorShape(enum.StrEnum):
    JSON = "json"
    JSON_LOWERCASE = "json-lowercase"
    XML = "xml"


def status_for(code: str) -> int:
    info = CODES.get(code)
    if info is not None:
        return info.http_status
    if code.startswith("Throttling") or _MISSING.match(code):
        return 400
    return _EXTRA_STATUS.get(code, 400)


class SimError(Exception):
    """An error answer: code, message, HTTP status (from the code table) and extra headers."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        shape: ErrorShape = ErrorShape.JSON,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else status_for(code)
        self.headers = dict(headers or {})
        self.shape = shape


def check_method(method: str) -> None:
    """The gateway serves RPC actions over GET (query) and POST (query or form) only."""
    if method not in ("GET", "POST"):
        raise SimError("InvalidApi.NotFound", GATEWAY_MESSAGES["InvalidApi.NotFound"])


def error_body(err: SimError, *, request_id: str, host_id: str) -> dict[str, str]:
    return {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": err.code,
        "Message": err.message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={err.code}&product=EHPC",
    }


def _xml(body: Mapping[str, str]) -> str:
    fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in body.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{fields}</Error>\n'


def error_response(err: SimError, *, request_id: str, host_id: str) -> web.Response:
    body = error_body(err, request_id=request_id, host_id=host_id)
    headers = {"x-acs-request-id": request_id, **err.headers}
    if err.shape is ErrorShape.XML:
        return web.Response(
            text=_xml(body),
            status=err.status,
            headers={**headers, "Content-Type": "text/xml;charset=utf-8"},
        )
    if err.shape is ErrorShape.JSON_LOWERCASE:
        body = {key[0].lower() + key[1:]: value for key, value in body.items()}
    return web.json_response(body, status=err.status, headers=headers)
