"""The simulated OpenAPI gateway + E-HPC: signature checks, throttling, the two actions, faults.

    service = SimService(config, inventory)
    app.router.add_route("*", "/{tail:.*}", service.handle)

Check order for ModifyVisualServicePasswd (as the real service answers): signature, version and
action, throttling (quotas), required parameters, RunasUser, Passwd, cluster exists, cluster
running, conflict (in flight, busy window, injected window), RunasUserPassword, injected faults,
apply.

The region of a call is the region of the endpoint it arrived at: with ``region_endpoints`` each
region has its own port (ListClusters then ignores any RegionId, as the real endpoint does); on
the single shared endpoint, ``RegionId`` (or the cluster's region) stands in for the endpoint.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import structlog
from aiohttp import web

from rotator.ehpc.models import API_VERSION
from rotator.sim.auth import Credential, CredentialStore, IncomingRequest, NonceCache, verify
from rotator.sim.config import SimConfig
from rotator.sim.errors import SimError, check_method, error_response
from rotator.sim.faults import Fault, FaultInjector
from rotator.sim.inventory import Inventory, SimCluster
from rotator.sim.quotas import QuotaBook, QuotaRule
from rotator.sim.rules import InvalidParam, parse_page, passwd_rule, runas_user_valid
from rotator.sim.stats import Stats

__all__ = ["MODIFY_OK_MESSAGE", "THROTTLED_MESSAGE", "SimService"]

log = structlog.get_logger("rotator.sim")

MODIFY_OK_MESSAGE = '{"Msg": "" }'
THROTTLED_MESSAGE = "Request was denied due to user flow control."
_MODIFY_PARAMS = ("ClusterId", "RunasUser", "RunasUserPassword", "Passwd")
_FORM = "application/x-www-form-urlencoded"
_FAULT_MESSAGES = {
    Fault.SERVICE_UNAVAILABLE: "The request has failed due to a temporary failure of the server.",
    Fault.AGENT_ERROR: "Failed to send the request to the cluster agent.",
    Fault.UNKNOWN_ERROR: "An unknown error occurred.",
}


def _error(code: str, message: str, *, status: int | None = None) -> SimError:
    """A SimError with the gateway's status for codes the shared code table lacks."""
    err = SimError(code, message)
    if status is not None:
        err.status = status
    return err


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


@dataclass(slots=True)
class _Trace:
    """What the per-request log line says (never a parameter value but the cluster id)."""

    action: str = ""
    cluster_id: str | None = None
    endpoint_region: str | None = None
    """The region of the endpoint the call arrived at (None: the shared endpoint)."""


class _Hang(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


class _Drop(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


def _secrets_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class SimService:
    """State and request handling of one simulator instance (single event loop, no locks)."""

    def __init__(self, config: SimConfig, inventory: Inventory) -> None:
        self.inventory = inventory
        self.credentials = CredentialStore(
            [Credential(config.access_key_id, config.access_key_secret)]
        )
        self.nonces = NonceCache()
        self.faults = FaultInjector(config.faults, seed=config.seed)
        self.stats = Stats()
        self.quotas = QuotaBook()
        self._rules: tuple[object, tuple[QuotaRule, ...]] = (None, ())
        self.passwd_valid = passwd_rule(config.passwd_rule)
        self.region_ports: dict[int, str] = {}
        """Local port -> region, when each region has an endpoint of its own."""
        self._inflight: set[str] = set()
        self._closing = asyncio.Event()
        self._actions: dict[str, Callable[[Mapping[str, str], _Trace], Awaitable[dict[str, Any]]]]
        self._actions = {
            "ListClusters": self._list_clusters,
            "ModifyVisualServicePasswd": self._modify,
        }

    def close(self) -> None:
        """Release hanging requests (their connections are aborted) before the server stops."""
        self._closing.set()

    # -- request handling ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        trace = _Trace(action=request.headers.get("x-acs-action", ""))
        try:
            body = await self._process(request, trace)
        except SimError as err:
            self._log(trace, err.code, err.status, request_id)
            return error_response(err, request_id=request_id, host_id=request.host)
        except _Hang:
            self._log(trace, "Hang", 0, request_id)
            await self._closing.wait()
            self._abort(request)
        except _Drop:
            self._log(trace, "Drop", 0, request_id)
            self._abort(request)
        except Exception:  # a simulator bug must still answer in the gateway's shape
            log.exception("sim_internal_error", action=trace.action, request_id=request_id)
            internal = SimError("UnknownError", "The simulator failed internally.")
            return error_response(internal, request_id=request_id, host_id=request.host)
        body["RequestId"] = request_id
        self._log(trace, "OK", 200, request_id)
        return web.json_response(body, headers={"x-acs-request-id": request_id})

    @staticmethod
    def _abort(request: web.Request) -> None:
        # The client must see a disconnect, not a response: abort the transport and end the
        # handler without one (aiohttp treats CancelledError as "no response to send").
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError

    @staticmethod
    def _log(trace: _Trace, code: str, status: int, request_id: str) -> None:
        log.info(
            "sim_request",
            action=trace.action,
            cluster_id=trace.cluster_id,
            code=code,
            status=status,
            request_id=request_id,
        )

    async def _process(self, request: web.Request, trace: _Trace) -> dict[str, Any]:
        check_method(request.method)  # GET and POST only, like the gateway
        body = await request.read()
        raw_query = request.raw_path.partition("?")[2]
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        incoming = IncomingRequest(
            method=request.method, path=request.path, query=query, headers=headers, body=body
        )
        now = time.time()
        verify(incoming, self.credentials, self.nonces, now=now)
        injected = self.faults.injected_error(incoming.header("x-acs-action") or "")
        if injected is not None:  # an account-wide refusal set up through /_sim/errors
            self.stats.fault(injected.code)
            raise injected

        version = incoming.header("x-acs-version")
        if version != API_VERSION:
            raise SimError("InvalidVersion", "Specified parameter Version is not valid.")
        action = incoming.header("x-acs-action") or ""
        handler = self._actions.get(action)
        if handler is None:
            raise _error(
                "InvalidApi.NotFound",
                "Specified api is not found, please check your url and method.",
                status=404,
            )

        params = dict(query)
        if request.content_type == _FORM and body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        trace.cluster_id = params.get("ClusterId")
        trace.endpoint_region = self._endpoint_region(request)
        region = trace.endpoint_region or self._region_of(action, params)
        refusal = self.quotas.admit(self._quota_rules(), action, region, now=now)
        if refusal is not None:
            self.stats.throttle(action, region)
            waits = refusal.headers(self.faults.config.throttle_headers)
            raise SimError("Throttling.User", THROTTLED_MESSAGE, headers=waits)
        self.stats.accept(action, region, now=now)
        return await handler(params, trace)

    def _quota_rules(self) -> tuple[QuotaRule, ...]:
        config = self.faults.config
        if self._rules[0] is not config:  # parsed once per configuration
            self._rules = (config, config.quota_rules())
        return self._rules[1]

    def _endpoint_region(self, request: web.Request) -> str | None:
        if not self.region_ports or request.transport is None:
            return None
        sockname = request.transport.get_extra_info("sockname")
        return self.region_ports.get(sockname[1]) if sockname else None

    def _region_of(self, action: str, params: Mapping[str, str]) -> str:
        """The shared endpoint's stand-in for the region of a call."""
        if action == "ModifyVisualServicePasswd":
            cluster = self.inventory.get(params.get("ClusterId", ""))
            if cluster is not None:
                return cluster.region
            return params.get("RegionId") or "unknown"
        return params.get("RegionId") or "all"

    async def _delay(self) -> None:
        seconds = self.faults.latency_seconds()
        if seconds > 0:
            await asyncio.sleep(seconds)

    # -- actions ---------------------------------------------------------------------------

    async def _list_clusters(self, params: Mapping[str, str], trace: _Trace) -> dict[str, Any]:
        await self._delay()
        try:
            number, size = parse_page(params.get("PageNumber"), params.get("PageSize"))
        except InvalidParam as exc:
            raise SimError("InvalidParams", str(exc)) from None
        # No RegionId filter: the endpoint sets the region. The shared endpoint has none, so
        # there RegionId says which region's endpoint the call stands for.
        region = trace.endpoint_region or params.get("RegionId") or None
        clusters = self.inventory.in_region(region)
        start = (number - 1) * size
        return {
            "TotalCount": len(clusters),
            "PageNumber": number,
            "PageSize": size,
            "Clusters": {
                "ClusterInfoSimple": [c.api_view() for c in clusters[start : start + size]]
            },
        }

    def _modify_target(self, params: Mapping[str, str]) -> SimCluster:
        for name in _MODIFY_PARAMS:
            if not params.get(name):
                raise _error(f"Missing{name}", f"{name} is mandatory for this action.", status=400)
        if not runas_user_valid(params["RunasUser"]):
            raise SimError("InvalidParams", "parameter RunasUser invalid")
        if not self.passwd_valid(params["Passwd"]):
            raise SimError("InvalidParams", "parameter Passwd invalid")
        cluster = self.inventory.get(params["ClusterId"])
        if cluster is None:
            raise SimError("ClusterNotFound", "The specified cluster does not exist.")
        if cluster.status != "running":
            raise SimError(
                "InvalidClusterStatus",
                f"The cluster status ({cluster.status}) does not allow the operation.",
            )
        return cluster

    def _conflict(self, cluster: SimCluster) -> SimError | None:
        conflict = SimError(
            "ConflictOpt", "A conflicting operation is running on the cluster. Retry later."
        )
        if cluster.id in self._inflight:
            return conflict
        now = time.monotonic()
        if cluster.busy_until > now:
            self.stats.fault("ConflictOpt")
            return conflict
        if self.faults.roll_conflict():
            cluster.busy_until = now + self.faults.config.conflict_seconds
            self.stats.fault("ConflictOpt")
            return conflict
        return None

    async def _modify(self, params: Mapping[str, str], trace: _Trace) -> dict[str, Any]:
        try:
            cluster = self._modify_target(params)
        except SimError:
            await self._delay()
            raise
        conflict = self._conflict(cluster)
        if conflict is not None:
            await self._delay()
            raise conflict

        fault: Fault | None = None
        self._inflight.add(cluster.id)
        try:
            await self._delay()
            if not _secrets_equal(params["RunasUserPassword"], cluster.root_password):
                raise SimError(
                    "IncorrectCredential", "The RunasUser or RunasUserPassword is incorrect."
                )
            fault = self.faults.roll()
            message = _FAULT_MESSAGES.get(fault) if fault is not None else None
            if fault is not None and message is not None:
                self.stats.fault(fault.value)
                raise SimError(fault.value, message)
            if fault is Fault.SILENT_NOOP:
                self.stats.fault(fault.value)
                return {"Message": MODIFY_OK_MESSAGE}  # OK, and nothing changed
            if fault is not Fault.HANG:
                cluster.vnc_password = params["Passwd"]
                cluster.change_count += 1
        finally:
            self._inflight.discard(cluster.id)
        if fault is not None:
            self.stats.fault(fault.value)
            raise _Hang if fault is Fault.HANG else _Drop
        return {"Message": MODIFY_OK_MESSAGE}
