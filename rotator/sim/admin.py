"""The admin API under ``/_sim/``, guarded by ``Authorization: Bearer <admin token>``.

GET   /_sim/clusters              every cluster, passwords included
PATCH /_sim/clusters/{id}         {"status"?, "root_password"?, "busy_seconds"?}
GET   /_sim/stats                 per-second accepted calls, throttled, faults injected
POST  /_sim/stats/reset
GET   /_sim/faults                the fault configuration
PUT   /_sim/faults                a partial update of it (validated; 400 on bad input)
POST  /_sim/credentials           {"access_key_id", "access_key_secret", "security_token"?}
GET   /_sim/vnc                   per cluster: VNC successes, failed attempts, lockouts, refused
GET   /_sim/errors                queued error-code injections
POST  /_sim/errors                {"code", "shape"?: json|json-lowercase|xml, "count"?, "actions"?,
                                   "status"?}: answer calls with that code (real status and shape)
DELETE /_sim/errors               drop every injection
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rotator.sim.auth import Credential
from rotator.sim.faults import ErrorInjection
from rotator.sim.gateway import SimService
from rotator.sim.inventory import STATUSES
from rotator.sim.rfb import RfbService

__all__ = ["admin_app"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SERVICE: web.AppKey[SimService] = web.AppKey("service", SimService)
_TOKEN: web.AppKey[str] = web.AppKey("admin_token", str)
_RFB: web.AppKey[RfbService] = web.AppKey("rfb", RfbService)


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be JSON"}), content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return data


@web.middleware
async def _require_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
    expected = f"Bearer {request.app[_TOKEN]}".encode()
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        return _bad("admin token required: Authorization: Bearer <token>", 401)
    return await handler(request)


async def _clusters(request: web.Request) -> web.Response:
    inventory = request.app[_SERVICE].inventory
    return web.json_response([c.admin_view() for c in inventory.clusters])


async def _patch_cluster(request: web.Request) -> web.Response:
    cluster = request.app[_SERVICE].inventory.get(request.match_info["cluster_id"])
    if cluster is None:
        return _bad("no such cluster", 404)
    patch = await _json_object(request)
    unknown = sorted(set(patch) - {"status", "root_password", "busy_seconds"})
    if unknown:
        return _bad(f"unknown field(s): {', '.join(unknown)}")
    status = patch.get("status", cluster.status)
    if status not in STATUSES:
        return _bad(f"status must be one of {', '.join(STATUSES)}")
    root_password = patch.get("root_password", cluster.root_password)
    if not isinstance(root_password, str) or not root_password:
        return _bad("root_password must be a non-empty string")
    busy = patch.get("busy_seconds")
    if busy is not None and (
        isinstance(busy, bool)
        or not isinstance(busy, int | float)
        or not math.isfinite(busy)
        or busy < 0
    ):
        return _bad("busy_seconds must be a number >= 0")
    cluster.status = status
    cluster.root_password = root_password
    if busy is not None:
        cluster.busy_until = time.monotonic() + busy
    return web.json_response(cluster.admin_view())


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[_SERVICE].stats.to_json())


async def _reset_stats(request: web.Request) -> web.Response:
    request.app[_SERVICE].stats.reset()
    return web.json_response({"reset": True})


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[_SERVICE].faults.config.to_json())


async def _put_faults(request: web.Request) -> web.Response:
    faults = request.app[_SERVICE].faults
    patch = await _json_object(request)
    try:
        faults.config = faults.config.updated(patch)
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    return web.json_response(faults.config.to_json())


async def _add_credential(request: web.Request) -> web.Response:
    data = await _json_object(request)
    key_id = data.get("access_key_id")
    secret = data.get("access_key_secret")
    token = data.get("security_token")
    if not isinstance(key_id, str) or not key_id or not isinstance(secret, str) or not secret:
        return _bad("access_key_id and access_key_secret must be non-empty strings")
    if token is not None and (not isinstance(token, str) or not token):
        return _bad("security_token must be a non-empty string when given")
    request.app[_SERVICE].credentials.add(Credential(key_id, secret, token))
    return web.json_response({"access_key_id": key_id}, status=201)


async def _get_errors(request: web.Request) -> web.Response:
    injections = request.app[_SERVICE].faults.injections
    return web.json_response([i.to_json() for i in injections])


async def _add_error(request: web.Request) -> web.Response:
    data = await _json_object(request)
    try:
        injection = ErrorInjection.from_json(data)
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    request.app[_SERVICE].faults.inject(injection)
    return web.json_response(injection.to_json(), status=201)


async def _clear_errors(request: web.Request) -> web.Response:
    request.app[_SERVICE].faults.clear_injections()
    return web.json_response({"cleared": True})


async def _vnc(request: web.Request) -> web.Response:
    rfb = request.app.get(_RFB)
    return web.json_response(rfb.admin_view() if rfb is not None else {})


def admin_app(service: SimService, token: str, *, rfb: RfbService | None = None) -> web.Application:
    """The ``/_sim/`` sub-application (mounted by the simulator with ``add_subapp``)."""
    app = web.Application(middlewares=[_require_token])
    app[_SERVICE] = service
    app[_TOKEN] = token
    if rfb is not None:
        app[_RFB] = rfb
    app.router.add_get("/clusters", _clusters)
    app.router.add_patch("/clusters/{cluster_id}", _patch_cluster)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/stats/reset", _reset_stats)
    app.router.add_get("/faults", _get_faults)
    app.router.add_put("/faults", _put_faults)
    app.router.add_post("/credentials", _add_credential)
    app.router.add_get("/vnc", _vnc)
    app.router.add_get("/errors", _get_errors)
    app.router.add_post("/errors", _add_error)
    app.router.add_delete("/errors", _clear_errors)
    return app
