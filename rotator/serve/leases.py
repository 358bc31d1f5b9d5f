"""Check-out leases in the daemon: the HTTP API and the intake that turns lease ends into triggers.

    POST /v1/checkout  {"cluster_id": "ehpc-hz-1", "ttl": "2h", "reason": "debug job 4711"}
    POST /v1/renew     {"lease_id": "ehpc-hz-1:9f...", "ttl": "1h"}
    POST /v1/checkin   {"lease_id": "ehpc-hz-1:9f..."}
    GET  /v1/leases
    (each with the caller's own Vault token in X-Vault-Token)

:class:`LeaseIntake` reconciles every lease from Vault at start, on every schedule refresh and
when the next lease expires: an expired lease is ended with a check-and-set write (one replica
wins), and a cluster whose last lease ended is queued with ``not_before`` = the end, through the
same queue and engine as every other trigger. After the batch the debt is cleared in Vault, or
the failure is recorded there (``rotator leases`` shows ``expired, rotation failed``) and retried
with backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiohttp import web

from rotator.config import parse_duration
from rotator.engine.report import RunSummary
from rotator.errors import ConfigError, RotatorError, VaultPermissionError
from rotator.leases.cron import satisfied
from rotator.leases.model import CheckoutPolicy, LeaseDoc, LeaseError
from rotator.leases.service import LeaseService, lease_view
from rotator.secret import Secret
from rotator.serve._aio import wait_event
from rotator.serve._json import loads_bounded
from rotator.serve.metrics import ServeMetrics
from rotator.serve.queue import Batch, QueueFullError, Trigger, TriggerQueue, TriggerSource
from rotator.serve.webhook import BodyError, error_response, new_trigger_id, read_body

__all__ = ["LeaseBackend", "LeaseIntake", "add_lease_routes", "policy_from", "satisfied"]

log = structlog.get_logger("rotator.serve")

_MIN_WAIT = 0.05
_RETRY_RECONCILE = 10.0
_NOT_A_FAILURE = frozenset({"ClaimedElsewhere", "Interrupted"})
_TOKEN_HEADER = "X-Vault-Token"  # noqa: S105 - a header name, not a token


def _utcnow() -> datetime:
    return datetime.now(UTC)


def policy_from(serve: Any) -> CheckoutPolicy:
    """The ``[serve]`` checkout settings as a policy."""
    return CheckoutPolicy(
        mode=serve.checkout_mode,
        default_ttl=serve.checkout_default_ttl,
        max_ttl=serve.checkout_max_ttl,
    )


class LeaseIntake:
    """Lease ends -> triggers; one per daemon, bound to each runtime generation."""

    def __init__(
        self,
        queue: TriggerQueue,
        metrics: ServeMetrics,
        *,
        refresh: Callable[[], float],
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.refresh = refresh
        self.now = now
        self.service: LeaseService | None = None
        self.on_holds: Callable[[Mapping[str, str]], None] = lambda _held: None
        """Told after each reconcile which clusters are checked out (their period rotations
        wait for the lease's end) and why."""
        self._owed: dict[str, datetime] = {}
        """Clusters queued for a lease end -> the end they pay for."""
        self._wake = asyncio.Event()
        self.reconciles = 0
        """Completed reconciles (tests wait on it)."""

    def bind(self, service: LeaseService | None) -> None:
        self.service = service

    def wake(self) -> None:
        """Reconcile soon (a schedule refresh, a check-in)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            wait = self.refresh()
            try:
                wait = min(wait, await self.reconcile())
            except RotatorError as exc:
                log.error("lease_reconcile_failed", code=exc.code, detail=exc.message)
                wait = min(wait, _RETRY_RECONCILE)
            self._wake.clear()
            await wait_event(self._wake, max(_MIN_WAIT, wait))

    async def reconcile(self) -> float:
        """End expired leases, queue what is owed; seconds until something is next due."""
        service = self.service
        if service is None:
            return self.refresh()
        docs = await service.reconcile()
        now = self.now()
        wait = self.refresh()
        open_leases = owed = 0
        held: dict[str, str] = {}
        for doc in docs:
            open_leases += len(doc.leases)
            if (why := doc.held_reason()) is not None:
                held[doc.cluster_id] = why
            expiry = doc.next_expiry()
            if expiry is not None:
                wait = min(wait, (expiry - now).total_seconds())
            if doc.rotation_due is None:
                continue
            owed += 1
            if doc.next_attempt_at is not None and doc.next_attempt_at > now:
                wait = min(wait, (doc.next_attempt_at - now).total_seconds())
                continue
            self._queue(doc)
        self.on_holds(held)
        self.metrics.checkout_leases_open.set(open_leases)
        self.metrics.checkout_leases_overdue.set(owed)
        self.reconciles += 1
        return wait

    def _queue(self, doc: LeaseDoc) -> None:
        if doc.rotation_due is None or self.queue.holds(doc.cluster_id):
            return
        reason = f"lease {doc.ended or 'ended'}"
        trigger = Trigger(
            doc.cluster_id, TriggerSource.CHECKOUT, reason, doc.rotation_due, new_trigger_id("co")
        )
        try:
            queued = self.queue.put(trigger)
        except QueueFullError as exc:
            log.warning("lease_end_deferred", cluster_id=doc.cluster_id, detail=str(exc))
            return
        if queued:
            self._owed[doc.cluster_id] = doc.rotation_due
            self.metrics.trigger(TriggerSource.CHECKOUT.value)
            self.metrics.queue_depth.set(self.queue.depth)
            log.info("lease_end_trigger", cluster_id=doc.cluster_id, ended=doc.ended)

    def lease_ended(self, doc: LeaseDoc) -> None:
        """A check-in ended the last lease: rotate now rather than at the next reconcile."""
        self._queue(doc)

    async def after_batch(self, batch: Batch, summary: RunSummary) -> None:
        """Pay the debts a batch settled; record the failures (retried with backoff)."""
        service = self.service
        if service is None:
            return
        for outcome in summary.outcomes:
            cluster_id = outcome.cluster_id
            if cluster_id not in self._owed:
                continue
            self._owed.pop(cluster_id)
            try:
                if satisfied(outcome.outcome, outcome.code):
                    await service.mark_rotated(cluster_id, not_before=batch.clusters[cluster_id])
                elif outcome.code in _NOT_A_FAILURE:
                    continue  # another replica is on it, or we are stopping: reconcile decides
                else:
                    self.metrics.checkout_rotation_failures.inc()
                    await service.mark_failed(cluster_id, code=outcome.code or "unknown")
            except RotatorError as exc:  # the next reconcile sees the debt again
                log.warning("lease_record_failed", cluster_id=cluster_id, code=exc.code)
        for cluster_id in batch.clusters:
            self._owed.pop(cluster_id, None)  # stopped before it ran: the next reconcile requeues
        self.wake()


# -- HTTP -----------------------------------------------------------------------------------------


class LeaseBackend(Protocol):
    @property
    def lease_service(self) -> LeaseService | None:
        """None until a runtime is up."""

    @property
    def body_timeout(self) -> float: ...

    def lease_ended(self, doc: LeaseDoc) -> None: ...

    def lease_changed(self) -> None:
        """A lease was added or renewed: its expiry needs a timer."""


_LEASES: web.AppKey[LeaseBackend] = web.AppKey("lease_backend", LeaseBackend)


def _token(request: web.Request) -> Secret:
    value = request.headers.get(_TOKEN_HEADER, "").strip()
    if not value or not value.isascii() or not value.isprintable():
        raise LeaseError(
            f"send your own Vault token in {_TOKEN_HEADER} (the one `bao login` gives you)",
            code="TokenRequired",
            status=401,
        )
    return Secret(value)


def _ttl(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise LeaseError("'ttl' must be a duration like \"2h\"", code="InvalidTtl", status=400)
    try:
        return parse_duration(value, key="ttl")
    except ConfigError as exc:
        raise LeaseError(exc.message, code="InvalidTtl", status=400) from None
    except OverflowError:  # a JSON integer too large for a float
        raise LeaseError("'ttl' is out of range", code="InvalidTtl", status=400) from None


async def _json(request: web.Request, backend: LeaseBackend) -> dict[str, Any]:
    body = await read_body(request, limit_s=backend.body_timeout)
    try:
        data = loads_bounded(body) if body else {}
    except ValueError:
        raise LeaseError(
            "the body must be a JSON object", code="InvalidRequest", status=400
        ) from None
    if not isinstance(data, dict):
        raise LeaseError("the body must be a JSON object", code="InvalidRequest", status=400)
    return data


def _field(data: dict[str, Any], name: str, *, required: bool = True, limit: int = 200) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
        raise LeaseError(
            f"'{name}' must be a {'non-empty ' if required else ''}string of at most {limit} "
            "characters",
            code="InvalidRequest",
            status=400,
        )
    return value.strip()


def _refusal(exc: RotatorError) -> web.Response:
    if isinstance(exc, LeaseError):
        if exc.retry_after:
            return error_response(
                exc.status,
                exc.message,
                headers={"Retry-After": f"{exc.retry_after:.0f}"},
                code=exc.code,
                retry_after=exc.retry_after,
            )
        return error_response(exc.status, exc.message, code=exc.code)
    if isinstance(exc, VaultPermissionError):
        return error_response(403, "Vault refused this token for the request", code=exc.code)
    log.error("lease_request_failed", code=exc.code, detail=exc.message)
    return error_response(
        503, f"Vault could not serve the request ({exc.code}); retry", code=exc.code
    )


def _handler(
    work: Callable[[web.Request, LeaseBackend, LeaseService, Secret], Any],
) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        backend = request.app[_LEASES]
        try:
            token = _token(request)
            service = backend.lease_service
            if service is None:
                return error_response(503, "loading: retry shortly", headers={"Retry-After": "5"})
            response: web.StreamResponse = await work(request, backend, service, token)
        except BodyError as exc:
            return exc.response
        except RotatorError as exc:
            return _refusal(exc)
        return response

    return handle


async def _checkout(
    request: web.Request, backend: LeaseBackend, service: LeaseService, token: Secret
) -> web.Response:
    data = await _json(request, backend)
    unknown = sorted(set(data) - {"cluster_id", "ttl", "reason"})
    if unknown:
        raise LeaseError(
            f"unknown field(s): {', '.join(unknown)}", code="InvalidRequest", status=400
        )
    result = await service.checkout(
        token,
        _field(data, "cluster_id", limit=128),
        ttl=_ttl(data.get("ttl")),
        reason=_field(data, "reason", required=False, limit=500),
    )
    backend.lease_changed()
    # The password goes to this caller only: never cached by a proxy.
    return web.json_response(
        result.to_dict(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


async def _renew(
    request: web.Request, backend: LeaseBackend, service: LeaseService, token: Secret
) -> web.Response:
    data = await _json(request, backend)
    lease_id = _field(data, "lease_id")
    lease = await service.renew(token, lease_id, ttl=_ttl(data.get("ttl")))
    backend.lease_changed()
    return web.json_response(lease_view(lease_id.rpartition(":")[0], lease))


async def _checkin(
    request: web.Request, backend: LeaseBackend, service: LeaseService, token: Secret
) -> web.Response:
    data = await _json(request, backend)
    doc = await service.checkin(token, _field(data, "lease_id"))
    rotating = doc.rotation_due is not None
    if rotating:
        backend.lease_ended(doc)
    backend.lease_changed()
    return web.json_response({"cluster_id": doc.cluster_id, "rotating": rotating})


async def _leases(
    _request: web.Request, _backend: LeaseBackend, service: LeaseService, token: Secret
) -> web.Response:
    rows = await service.visible(token)
    return web.json_response({"leases": rows, "at": time.time()})


def add_lease_routes(app: web.Application, backend: LeaseBackend) -> None:
    app[_LEASES] = backend
    app.router.add_post("/v1/checkout", _handler(_checkout))
    app.router.add_post("/v1/renew", _handler(_renew))
    app.router.add_post("/v1/checkin", _handler(_checkin))
    app.router.add_get("/v1/leases", _handler(_leases))
