"""The webhook: ``POST /v1/rotate`` queues rotations, ``GET /v1/runs/<id>`` reports on them.

    curl -X POST http://rotator:8080/v1/rotate -H "Authorization: Bearer $TOKEN" \\
         -d '{"clusters": ["ehpc-hz-1"], "reason": "offboarding"}'
    -> 202 {"trigger_id": "wh-...", "clusters": 1}
    curl http://rotator:8080/v1/runs/wh-... -H "Authorization: Bearer $TOKEN"

Authentication is a bearer token (``serve.webhook_token_file``) or an HMAC-SHA256 of the raw
body in ``X-Rotator-Signature: sha256=<hex>`` (``serve.webhook_hmac_secret_file``); both
compared in constant time. With neither configured the endpoints answer 503. Every refusal
says what is wrong; nothing is queued unless the whole request is valid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from rotator.config import ServeSettings
from rotator.errors import ConfigError
from rotator.secret import Secret

__all__ = [
    "MAX_BODY",
    "InvalidRequestError",
    "RotateRequest",
    "WebhookAuth",
    "WebhookBackend",
    "add_webhook_routes",
    "new_trigger_id",
    "parse_rotate_request",
]

log = structlog.get_logger("rotator.serve")

MAX_BODY = 64 * 1024
_MAX_REASON = 500
_SIGNATURE_HEADER = "X-Rotator-Signature"


def new_trigger_id(prefix: str = "wh") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _read_secret(path: str, key: str) -> Secret:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
    if not value:
        raise ConfigError(f"{path} is empty", key=key)
    return Secret(value)


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    """Who may call the webhook. ``check`` returns None when allowed, else the reason."""

    token: Secret | None = None
    hmac_secret: Secret | None = None

    @classmethod
    def from_settings(cls, serve: ServeSettings) -> WebhookAuth:
        return cls(
            token=_read_secret(serve.webhook_token_file, "serve.webhook_token_file")
            if serve.webhook_token_file
            else None,
            hmac_secret=_read_secret(
                serve.webhook_hmac_secret_file, "serve.webhook_hmac_secret_file"
            )
            if serve.webhook_hmac_secret_file
            else None,
        )

    @property
    def configured(self) -> bool:
        return self.token is not None or self.hmac_secret is not None

    def check(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """Any one configured method that the request uses and gets right lets it in."""
        problems: list[str] = []
        authorization = headers.get("Authorization", "")
        if self.token is not None and authorization:
            scheme, _, given = authorization.partition(" ")
            expected = self.token.reveal().encode()
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
                return None
            problems.append("wrong bearer token")
        signature = headers.get(_SIGNATURE_HEADER, "")
        if self.hmac_secret is not None and signature:
            algorithm, _, digest = signature.partition("=")
            expected_mac = hmac.new(self.hmac_secret.reveal().encode(), body, hashlib.sha256)
            if algorithm == "sha256" and hmac.compare_digest(
                digest.strip().lower().encode(), expected_mac.hexdigest().encode()
            ):
                return None
            problems.append(f"wrong {_SIGNATURE_HEADER} (sha256=<hex HMAC-SHA256 of the raw body>)")
        if problems:
            return "; ".join(problems)
        accepted = []
        if self.token is not None:
            accepted.append("Authorization: Bearer <token>")
        if self.hmac_secret is not None:
            accepted.append(f"{_SIGNATURE_HEADER}: sha256=<hex HMAC of the body>")
        return "authentication required: " + " or ".join(accepted)


class InvalidRequestError(ValueError):
    """The webhook body is not what ``POST /v1/rotate`` takes (the text says what is wrong)."""


@dataclass(frozen=True, slots=True)
class RotateRequest:
    clusters: Sequence[str] | None
    """None means every known cluster (``"all"``)."""
    reason: str


def parse_rotate_request(body: bytes) -> RotateRequest:
    """The JSON body of ``POST /v1/rotate``; InvalidRequestError with a message for the caller."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequestError("the body must be JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequestError('the body must be a JSON object: {"clusters": [...] | "all"}')
    unknown = sorted(set(data) - {"clusters", "reason"})
    if unknown:
        raise InvalidRequestError(
            f"unknown field(s): {', '.join(unknown)} (allowed: clusters, reason)"
        )
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > _MAX_REASON:
        raise InvalidRequestError(f"'reason' must be a string of at most {_MAX_REASON} characters")
    clusters = data.get("clusters")
    if clusters == "all":
        return RotateRequest(None, reason)
    if not isinstance(clusters, list) or not clusters:
        raise InvalidRequestError("'clusters' must be \"all\" or a non-empty list of cluster ids")
    if not all(isinstance(c, str) and c.strip() for c in clusters):
        raise InvalidRequestError("every entry of 'clusters' must be a non-empty string")
    return RotateRequest(list(dict.fromkeys(c.strip() for c in clusters)), reason)


class WebhookBackend(Protocol):
    """What the webhook needs from the daemon."""

    @property
    def auth(self) -> WebhookAuth: ...

    def known_clusters(self) -> Collection[str]: ...

    def submit(self, cluster_ids: Sequence[str], *, reason: str) -> str | None:
        """Queue the clusters; the trigger id, or None when the daemon is shutting down."""

    async def run_status(self, run_or_trigger_id: str) -> tuple[int, dict[str, Any]] | None:
        """HTTP status and body for a trigger id or run id (from memory, else the run report
        in Vault); None when nothing is known under that id."""


_BACKEND: web.AppKey[WebhookBackend] = web.AppKey("webhook_backend", WebhookBackend)


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _read_body(request: web.Request) -> bytes | None:
    """The raw body, or None when it is over :data:`MAX_BODY`."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return None
    body = await request.content.read(MAX_BODY + 1)
    return None if len(body) > MAX_BODY else body


def _refuse_auth(backend: WebhookBackend, request: web.Request, body: bytes) -> web.Response | None:
    auth = backend.auth
    if not auth.configured:
        return _error(
            503,
            "the webhook is disabled: set serve.webhook_token_file or "
            "serve.webhook_hmac_secret_file",
        )
    problem = auth.check(request.headers, body)
    if problem is not None:
        log.warning("webhook_unauthorized", path=request.path, reason=problem)
        return _error(401, problem)
    return None


async def _rotate(request: web.Request) -> web.Response:
    backend = request.app[_BACKEND]
    body = await _read_body(request)
    if body is None:
        return _error(413, f"the body is larger than {MAX_BODY // 1024} KiB")
    if refused := _refuse_auth(backend, request, body):
        return refused
    try:
        wanted = parse_rotate_request(body)
    except InvalidRequestError as exc:
        return _error(400, str(exc))
    known = backend.known_clusters()
    if wanted.clusters is None:
        clusters = sorted(known)
        if not clusters:
            return _error(422, "no clusters are known yet (the inventory is empty or loading)")
    else:
        clusters = list(wanted.clusters)
        unknown = [c for c in clusters if c not in known]
        if unknown:
            return _error(
                422,
                f"unknown cluster id(s): {', '.join(unknown[:20])}"
                + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
                + "; nothing was queued",
                unknown=unknown,
            )
    trigger_id = backend.submit(clusters, reason=wanted.reason)
    if trigger_id is None:
        return _error(503, "shutting down: not taking triggers")
    log.info("webhook_trigger", trigger_id=trigger_id, clusters=len(clusters), reason=wanted.reason)
    return web.json_response({"trigger_id": trigger_id, "clusters": len(clusters)}, status=202)


async def _run(request: web.Request) -> web.Response:
    backend = request.app[_BACKEND]
    if refused := _refuse_auth(backend, request, b""):
        return refused
    known = await backend.run_status(request.match_info["run_id"])
    if known is None:
        return _error(404, f"no trigger or run {request.match_info['run_id']!r} is known")
    status, body = known
    return web.json_response(body, status=status)


def add_webhook_routes(app: web.Application, backend: WebhookBackend) -> None:
    app[_BACKEND] = backend
    app.router.add_post("/v1/rotate", _rotate)
    app.router.add_get("/v1/runs/{run_id}", _run)
