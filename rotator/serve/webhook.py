"""The webhook: ``POST /v1/rotate`` queues rotations, ``GET /v1/runs/<id>`` reports on them.

    curl -X POST http://rotator:8080/v1/rotate -H "Authorization: Bearer $TOKEN" \\
         -d '{"clusters": ["ehpc-hz-1"], "reason": "offboarding"}'
    -> 202 {"trigger_id": "wh-...", "clusters": 1}
    curl http://rotator:8080/v1/runs/wh-... -H "Authorization: Bearer $TOKEN"

Authentication is a bearer token (``serve.webhook_token_file``) or a signed request
(``serve.webhook_hmac_secret_file``)::

    X-Rotator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<METHOD>.<path>.<body>")>

A signature binds the time, method, path and body, so it cannot be moved to another request; it
is refused when ``t`` is more than :data:`SIGNATURE_TOLERANCE` seconds from now, and when it was
already used inside that window (so a captured request cannot be replayed). Secrets are compared
in constant time. With neither configured the endpoints answer 503. Every refusal says what is
wrong; nothing is queued unless the whole request is valid. The whole body (up to
:data:`MAX_BODY`) is read before it is verified.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from rotator.config import ServeSettings
from rotator.errors import ConfigError
from rotator.secret import Secret
from rotator.serve._json import JsonTooDeepError, loads_bounded
from rotator.serve.queue import QueueFullError

__all__ = [
    "MAX_BODY",
    "SIGNATURE_TOLERANCE",
    "InvalidRequestError",
    "ReplayGuard",
    "RotateRequest",
    "WebhookAuth",
    "WebhookBackend",
    "add_webhook_routes",
    "new_trigger_id",
    "parse_rotate_request",
    "read_body",
    "sign_request",
]

log = structlog.get_logger("rotator.serve")

MAX_BODY = 64 * 1024
SIGNATURE_TOLERANCE = 300.0
"""Seconds a signed request's ``t`` may be away from the server's clock."""
_MAX_REASON = 500
_SIGNATURE_HEADER = "X-Rotator-Signature"
_SIGNATURE_FORMAT = "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<METHOD>.<path>.<body>'>"


def new_trigger_id(prefix: str = "wh") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _read_secret(path: str, key: str) -> Secret:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", key=key) from None
    if not value:
        raise ConfigError(f"{path} is empty", key=key)
    return Secret(value)


def sign_request(secret: str, method: str, path: str, body: bytes, t: int) -> str:
    """The ``X-Rotator-Signature`` value for a request (clients and tests use it)."""
    mac = hmac.new(secret.encode(), f"{t}.{method.upper()}.{path}.".encode() + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


class ReplayGuard:
    """Signatures accepted in the last window; each may be used once.

    Memory is bounded: entries leave when their ``t`` falls out of the window, and past
    ``capacity`` live entries new signatures are refused (never forgotten early, which would
    reopen replay).
    """

    def __init__(self, *, window: float = SIGNATURE_TOLERANCE, capacity: int = 100_000) -> None:
        self.window = window
        self.capacity = capacity
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _prune(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, key = heapq.heappop(self._heap)
            self._expiry.pop(key, None)

    def use(self, key: str, t: float, now: float) -> str | None:
        """Record ``key`` (signed at ``t``); None on first use, else why it is refused."""
        self._prune(now)
        if key in self._expiry:
            return "this signature was already used (replay refused); sign each request anew"
        if len(self._expiry) >= self.capacity:
            return "too many signed requests in the last few minutes; retry later"
        # Usable until t + window (the clock check refuses it after that), so kept that long.
        expiry = t + self.window
        self._expiry[key] = expiry
        heapq.heappush(self._heap, (expiry, key))
        return None


def _ascii(value: str) -> bytes | None:
    """Header text as bytes for a constant-time compare; None when not ASCII (never a match)."""
    return value.encode("ascii") if value.isascii() else None


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    """Who may call the webhook. ``check`` returns None when allowed, else the reason."""

    token: Secret | None = None
    hmac_secret: Secret | None = None
    replay: ReplayGuard = field(default_factory=ReplayGuard, compare=False)
    """Kept across config reloads (see :meth:`from_settings`)."""
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def from_settings(
        cls, serve: ServeSettings, *, replay: ReplayGuard | None = None
    ) -> WebhookAuth:
        return cls(
            token=_read_secret(serve.webhook_token_file, "serve.webhook_token_file")
            if serve.webhook_token_file
            else None,
            hmac_secret=_read_secret(
                serve.webhook_hmac_secret_file, "serve.webhook_hmac_secret_file"
            )
            if serve.webhook_hmac_secret_file
            else None,
            replay=replay or ReplayGuard(),
        )

    @property
    def configured(self) -> bool:
        return self.token is not None or self.hmac_secret is not None

    def check(
        self, headers: Mapping[str, str], body: bytes, *, method: str, path: str
    ) -> str | None:
        """Any one configured method that the request uses and gets right lets it in."""
        problems: list[str] = []
        authorization = headers.get("Authorization", "")
        if self.token is not None and authorization:
            scheme, _, given = authorization.partition(" ")
            given_bytes = _ascii(given.strip())
            expected = self.token.reveal().encode()
            if (
                scheme.lower() == "bearer"
                and given_bytes is not None
                and hmac.compare_digest(given_bytes, expected)
            ):
                return None
            problems.append("wrong bearer token")
        signature = headers.get(_SIGNATURE_HEADER, "")
        if self.hmac_secret is not None and signature:
            problem = self._check_signature(signature, body, method=method, path=path)
            if problem is None:
                return None
            problems.append(problem)
        if problems:
            return "; ".join(problems)
        accepted = []
        if self.token is not None:
            accepted.append("Authorization: Bearer <token>")
        if self.hmac_secret is not None:
            accepted.append(f"{_SIGNATURE_HEADER}: {_SIGNATURE_FORMAT}")
        return "authentication required: " + " or ".join(accepted)

    def _check_signature(self, header: str, body: bytes, *, method: str, path: str) -> str | None:
        if self.hmac_secret is None:  # pragma: no cover - the caller checks
            return "no HMAC secret configured"
        wrong = f"wrong {_SIGNATURE_HEADER} (expected {_SIGNATURE_FORMAT})"
        if not header.isascii():
            return wrong
        fields: dict[str, list[str]] = {}
        for part in header.split(","):
            name, sep, value = part.strip().partition("=")
            if sep:
                fields.setdefault(name.strip(), []).append(value.strip().lower())
        t_text = fields.get("t", [""])[0]
        if not t_text.isdigit() or len(t_text) > 12 or not fields.get("v1"):
            return wrong
        t = int(t_text)
        now = self.clock()
        if abs(now - t) > SIGNATURE_TOLERANCE:
            return (
                f"{_SIGNATURE_HEADER} t={t} is more than {SIGNATURE_TOLERANCE:.0f}s from the "
                "server's time (a stale or replayed request, or a wrong clock)"
            )
        signed = f"{t}.{method.upper()}.{path}.".encode() + body
        expected = hmac.new(self.hmac_secret.reveal().encode(), signed, hashlib.sha256)
        digest = expected.hexdigest().encode()
        for given in fields["v1"]:
            if hmac.compare_digest(given.encode(), digest):
                return self.replay.use(expected.hexdigest(), t, now)
        return wrong


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
        data = loads_bounded(body)
    except JsonTooDeepError as exc:
        raise InvalidRequestError(f"the body is {exc}") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
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

    @property
    def loaded(self) -> bool:
        """False until the inventory and schedule are loaded (the webhook answers 503)."""

    @property
    def body_timeout(self) -> float:
        """Seconds a client has to send its whole body."""

    def known_clusters(self) -> Collection[str]: ...

    def submit(self, cluster_ids: Sequence[str], *, reason: str) -> str | None:
        """Queue the clusters; the trigger id, or None when the daemon is shutting down.
        Raises :class:`~rotator.serve.queue.QueueFullError` when the queue is full."""

    async def run_status(self, run_or_trigger_id: str) -> tuple[int, dict[str, Any]] | None:
        """HTTP status and body for a trigger id or run id (from memory, else the run report
        in Vault); None when nothing is known under that id."""


_BACKEND: web.AppKey[WebhookBackend] = web.AppKey("webhook_backend", WebhookBackend)


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: object
) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


_error = error_response


class BodyError(Exception):
    """The body could not be read whole; ``response`` says why to the client."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def read_body(request: web.Request, *, limit_s: float) -> bytes:
    """The whole raw body, read to its end before anything verifies it.

    Raises :class:`BodyError` (413 over :data:`MAX_BODY`, 408 when the client takes longer
    than ``limit_s``). ``content.read(n)`` alone returns whatever is buffered, so a body sent
    in two writes would be verified truncated.
    """
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BodyError(_error(413, f"the body is larger than {MAX_BODY // 1024} KiB"))
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await request.content.read(MAX_BODY + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:
                    raise BodyError(_error(413, f"the body is larger than {MAX_BODY // 1024} KiB"))
    except TimeoutError:
        raise BodyError(_error(408, f"the body did not arrive within {limit_s:g}s")) from None
    return b"".join(chunks)


def refuse_unauthenticated(
    auth: WebhookAuth, request: web.Request, body: bytes
) -> web.Response | None:
    if not auth.configured:
        return _error(
            503,
            "the webhook is disabled: set serve.webhook_token_file or "
            "serve.webhook_hmac_secret_file",
        )
    problem = auth.check(request.headers, body, method=request.method, path=request.path)
    if problem is not None:
        log.warning("webhook_unauthorized", path=request.path, reason=problem)
        return _error(401, problem)
    return None


def _loading() -> web.Response:
    return _error(
        503,
        "loading: the inventory and schedule are not loaded yet; retry shortly",
        headers={"Retry-After": "5"},
    )


async def _rotate(request: web.Request) -> web.Response:
    backend = request.app[_BACKEND]
    try:
        body = await read_body(request, limit_s=backend.body_timeout)
    except BodyError as exc:
        return exc.response
    if refused := refuse_unauthenticated(backend.auth, request, body):
        return refused
    try:
        wanted = parse_rotate_request(body)
    except InvalidRequestError as exc:
        return _error(400, str(exc))
    if not backend.loaded:
        return _loading()
    known = backend.known_clusters()
    if wanted.clusters is None:
        clusters = sorted(known)
        if not clusters:
            return _error(422, "no clusters are known (the inventory is empty)")
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
    try:
        trigger_id = backend.submit(clusters, reason=wanted.reason)
    except QueueFullError as exc:
        return _error(429, str(exc), headers={"Retry-After": "30"})
    if trigger_id is None:
        return _error(503, "shutting down: not taking triggers")
    log.info("webhook_trigger", trigger_id=trigger_id, clusters=len(clusters), reason=wanted.reason)
    return web.json_response({"trigger_id": trigger_id, "clusters": len(clusters)}, status=202)


async def _run(request: web.Request) -> web.Response:
    backend = request.app[_BACKEND]
    try:
        body = await read_body(request, limit_s=backend.body_timeout)
    except BodyError as exc:
        return exc.response
    if refused := refuse_unauthenticated(backend.auth, request, body):
        return refused
    known = await backend.run_status(request.match_info["run_id"])
    if known is None:
        return _error(404, f"no trigger or run {request.match_info['run_id']!r} is known")
    status, answer = known
    return web.json_response(answer, status=status)


def add_webhook_routes(app: web.Application, backend: WebhookBackend) -> None:
    app[_BACKEND] = backend
    app.router.add_post("/v1/rotate", _rotate)
    app.router.add_get("/v1/runs/{run_id}", _run)
