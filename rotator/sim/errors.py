"""Error answers of the simulated gateway and E-HPC, in the gateway's JSON shape.

raise SimError("ClusterNotFound", "The specified cluster does not exist.")
response = error_response(err, request_id=rid, host_id="127.0.0.1:8080")
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from rotator.ehpc.codes import CODES

__all__ = ["SimError", "error_body", "error_response", "status_for"]

# Gateway codes outside rotator.ehpc.codes (the client never needs to tell these apart).
_EXTRA_STATUS = {"InvalidAction.NotFound": 404, "InvalidVersion": 400}


def status_for(code: str) -> int:
    info = CODES.get(code)
    if info is not None:
        return info.http_status
    return _EXTRA_STATUS.get(code, 400)


class SimError(Exception):
    """An error answer: code, message, HTTP status (from the code table) and extra headers."""

    def __init__(
        self, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status_for(code)
        self.headers = dict(headers or {})


def error_body(err: SimError, *, request_id: str, host_id: str) -> dict[str, str]:
    return {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": err.code,
        "Message": err.message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={err.code}&product=EHPC",
    }


def error_response(err: SimError, *, request_id: str, host_id: str) -> web.Response:
    return web.json_response(
        error_body(err, request_id=request_id, host_id=host_id),
        status=err.status,
        headers={"x-acs-request-id": request_id, **err.headers},
    )
