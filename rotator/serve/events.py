"""A client of HashiCorp Vault's event stream, turning events into cluster triggers.

    mapper = EventMapper(kv_mount="secret", trigger_path="ehpc/trigger", known=lambda: ids)
    stream = EventStream(addr=..., namespace="", token=client.token, event_types=[...],
                         mapper=mapper, on_trigger=lambda cluster_id, not_before, event: ...)
    await stream.run(stop)

One WebSocket per event type at ``GET /v1/sys/events/subscribe/<type>?json=true`` with the
token in ``X-Vault-Token`` (Vault Enterprise 1.16+). Messages are CloudEvents JSON; the parser
accepts the current snake_case fields and the older camelCase ones, and skips anything else with
one warning. Duplicates (same event id, e.g. replayed after a reconnect) are dropped. A dropped
connection is retried with exponential backoff and jitter. A server without the stream (OpenBao
answers 404) is logged once and the stream stops for good: the lease schedule still runs. A
403 (the token's policy lacks the subscription) is logged once with the policy it needs, then
retried every ``forbidden_backoff`` (a policy may be granted later, no restart needed).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from rotator.engine.retry import exponential
from rotator.secret import Secret
from rotator.serve._aio import wait_event
from rotator.serve._json import JsonTooDeepError, loads_bounded
from rotator.vault.store import parse_time

__all__ = [
    "LEASES",
    "LEASE_EVENT_TYPES",
    "ROTATE",
    "SCHEDULE",
    "ChangeCallback",
    "EventMapper",
    "EventParseError",
    "EventStream",
    "RecentIds",
    "VaultEvent",
    "data_path_filter",
    "parse_event",
    "with_lease_events",
]

log = structlog.get_logger("rotator.serve")

_KV_OPERATIONS = ("data", "metadata", "delete", "undelete", "destroy")


class EventParseError(ValueError):
    """A message that is not a Vault event we can read (the text says why)."""


@dataclass(frozen=True, slots=True)
class VaultEvent:
    id: str
    event_type: str
    """``kv-v2/data-write``, ``lease/expired``..."""
    path: str | None
    """``data.event.metadata.path``, e.g. ``secret/data/ehpc/trigger/ehpc-1``."""
    mount_path: str | None
    """``data.plugin_info.mount_path``, e.g. ``secret/``."""
    time: datetime | None
    metadata: Mapping[str, str]
    """Every string in ``data.event.metadata`` (lease events name the lease here)."""


def _pick(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_event(raw: str | bytes) -> VaultEvent:
    """One WebSocket message -> :class:`VaultEvent`; :class:`EventParseError` if unusable."""
    try:
        message = loads_bounded(raw)
    except JsonTooDeepError as exc:
        raise EventParseError(str(exc)) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise EventParseError("not JSON") from None
    if not isinstance(message, Mapping):
        raise EventParseError("not a JSON object")
    data = _object(message.get("data"))
    event = _object(data.get("event"))
    event_id = _pick(message, "id") or _pick(event, "id")
    if not isinstance(event_id, str) or not event_id:
        raise EventParseError("no event id")
    event_type = _pick(data, "event_type", "eventType") or _pick(message, "type")
    if not isinstance(event_type, str) or not event_type or event_type == "*":
        raise EventParseError("no event type")
    metadata_raw = _object(event.get("metadata"))
    metadata = {str(k): v for k, v in metadata_raw.items() if isinstance(v, str)}
    plugin = _object(_pick(data, "plugin_info", "pluginInfo"))
    mount = _pick(plugin, "mount_path", "mountPath")
    path = metadata.get("path") or metadata.get("data_path") or metadata.get("dataPath")
    return VaultEvent(
        id=event_id,
        event_type=event_type,
        path=path,
        mount_path=mount if isinstance(mount, str) and mount else None,
        time=parse_time(message.get("time")),
        metadata=metadata,
    )


class RecentIds:
    """A bounded LRU of event ids: ``seen(id)`` is True for a repeat."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return False


ROTATE = "rotate"
LEASES = "leases"
SCHEDULE = "schedule"


@dataclass(frozen=True, slots=True)
class EventMapper:
    """Which clusters an event is about, and what it asks for.

    KV events: a write, patch or delete at ``<kv_mount>/data/<trigger_path>/<ClusterId>`` rotates
    that cluster; at ``<leases_path>/<ClusterId>`` (a checkout, renewal or check-in, maybe by
    another replica) the leases are reconciled; at ``<vnc_path>/<ClusterId>`` (a rotation by
    another replica, a person's edit) that cluster's due time is re-read. Other events
    (``lease/expired``, ``lease/revoked``): any known cluster id that is a segment of the path,
    the lease id or another metadata value is rotated.
    """

    kv_mount: str
    trigger_path: str
    known: Callable[[], Collection[str]]
    vnc_path: str = ""
    leases_path: str = ""

    def clusters(self, event: VaultEvent) -> list[str]:
        """The clusters the event asks to rotate."""
        return [cluster_id for kind, cluster_id in self.route(event) if kind == ROTATE]

    def kv_paths(self) -> list[str]:
        """The KV paths (under the mount's ``data/``) whose events matter, for the filter."""
        return [p for p in (self.trigger_path, self.leases_path, self.vnc_path) if p]

    def route(self, event: VaultEvent) -> list[tuple[str, str]]:
        """``(kind, cluster_id)`` pairs: kind is :data:`ROTATE`, :data:`LEASES` or
        :data:`SCHEDULE`."""
        if event.event_type.startswith("kv"):
            for kind, base in (
                (ROTATE, self.trigger_path),
                (LEASES, self.leases_path),
                (SCHEDULE, self.vnc_path),
            ):
                found = self._kv_cluster(event, base) if base else None
                if found:
                    return [(kind, found)]
            return []
        known = self.known()
        hits: list[str] = []
        for value in event.metadata.values():
            for segment in value.split("/"):
                if segment in known and segment not in hits:
                    hits.append(segment)
        return [(ROTATE, cluster_id) for cluster_id in hits]

    def _kv_cluster(self, event: VaultEvent, base: str) -> str | None:
        if not event.path:
            return None
        mount = self.kv_mount.strip("/")
        if event.mount_path is not None and event.mount_path.strip("/") != mount:
            return None
        path = event.path.strip("/")
        if path.startswith(mount + "/"):
            path = path[len(mount) + 1 :]
        operation, _, rest = path.partition("/")
        if operation not in _KV_OPERATIONS:
            rest = path  # a server that reports the path without the API segment
        prefix = base.strip("/") + "/"
        if not rest.startswith(prefix):
            return None
        cluster_id = rest[len(prefix) :]
        return cluster_id if cluster_id and "/" not in cluster_id else None


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-")
_BRACKETED = frozenset(".+*?()|{}$^ ")


def data_path_filter(kv_mount: str, paths: Iterable[str]) -> str | None:
    """A Vault event filter (go-bexpr) that lets through KV v2 events for a secret directly
    under one of ``paths``: ``data_path matches "^<mount>/data/<path>/[^/]+$" or ...``.

    Regexp metacharacters are bracketed (``.`` -> ``[.]``) so no backslash has to survive two
    levels of quoting; None (subscribe unfiltered, map on our side) for a path with a quote,
    bracket or backslash.
    """
    terms: list[str] = []
    for path in paths:
        full = f"{kv_mount.strip('/')}/data/{path.strip('/')}"
        pattern = ""
        for char in full:
            if char in _PLAIN:
                pattern += char
            elif char in _BRACKETED:
                pattern += f"[{char}]"
            else:
                return None
        terms.append(f'data_path matches "^{pattern}/[^/]+$"')
    return " or ".join(terms) if terms else None


LEASE_EVENT_TYPES = ("lease/expired", "lease/revoked")
"""Vault Enterprise 2.0+ only."""


def with_lease_events(event_types: Sequence[str], version: str) -> list[str]:
    """``event_types`` plus the lease events when ``version`` (``sys/seal-status``) is Vault
    Enterprise 2.0 or later; an empty list (events off) stays empty."""
    wanted = list(event_types)
    numbers, _, build = version.partition("+")
    major = numbers.split(".", 1)[0]
    if wanted and build.startswith("ent") and major.isdigit() and int(major) >= 2:
        wanted += [t for t in LEASE_EVENT_TYPES if t not in wanted]
    return wanted


TriggerCallback = Callable[[str, datetime, VaultEvent], None]
ChangeCallback = Callable[[str, str, VaultEvent], None]
"""``(kind, cluster_id, event)`` for an event that asks for no rotation (:data:`LEASES`,
:data:`SCHEDULE`)."""
TokenSource = Callable[[], Awaitable[Secret]]


class _NoEventStream(Exception):  # noqa: N818 - internal signal, never escapes this module
    """The server has no event stream (404 on subscribe)."""


class _Forbidden(Exception):  # noqa: N818 - internal signal, never escapes this module
    """The token may not subscribe (403 on subscribe)."""


def forbidden_fix(event_type: str, kv_mount: str, trigger_path: str) -> str:
    """What a Vault policy must grant for the subscription (Vault Enterprise 1.16+)."""
    mount = kv_mount.strip("/")
    return (
        f'grant the rotator token: path "sys/events/subscribe/{event_type}" '
        '{ capabilities = ["read"] } and path '
        f'"{mount}/data/{trigger_path.strip("/")}/*" (and the leases and VNC paths) '
        f'{{ capabilities = ["list", "subscribe"], subscribe_event_types = ["{event_type}"] }} '
        "(rotator vault-setup --events installs the policy rotator-events)"
    )


class EventStream:
    """Subscribes to every configured event type; reconnects; calls ``on_trigger`` per cluster."""

    def __init__(
        self,
        *,
        addr: str,
        token: TokenSource,
        event_types: Iterable[str],
        mapper: EventMapper,
        on_trigger: TriggerCallback,
        on_change: ChangeCallback | None = None,
        namespace: str = "",
        ssl_context: ssl.SSLContext | bool = True,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        forbidden_backoff: float = 600.0,
        heartbeat: float = 30.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.addr = addr.rstrip("/")
        self.token = token
        self.event_types = list(event_types)
        self.mapper = mapper
        self.on_trigger = on_trigger
        self.on_change = on_change
        paths = mapper.kv_paths() if on_change is not None else [mapper.trigger_path]
        self.kv_filter = data_path_filter(mapper.kv_mount, paths)
        """Sent with every KV subscription: Vault delivers only these paths' events."""
        self.namespace = namespace
        self.ssl_context = ssl_context
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.forbidden_backoff = forbidden_backoff
        self.forbidden = 0
        """403 answers to a subscribe (logged once per event type)."""
        self._forbidden_logged: set[str] = set()
        self.heartbeat = heartbeat
        self.now = now
        self.recent = RecentIds()
        self.unavailable = False
        """True after a 404: the server has no event stream; nothing more is tried."""
        self.connections = 0
        """Successful handshakes (for tests and logs)."""
        self.ignored = 0
        """Malformed messages skipped (each logged once)."""

    def url(self, event_type: str) -> str:
        query = "json=true"
        if event_type.startswith("kv") and self.kv_filter is not None:
            query += "&filter=" + quote(self.kv_filter, safe="")
        return f"{self.addr}/v1/sys/events/subscribe/{event_type}?{query}"

    async def run(self, stop: asyncio.Event) -> None:
        if not self.event_types:
            return
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(self._subscribe(session, t, stop), name=f"events:{t}")
                for t in self.event_types
            ]
            stopped: asyncio.Task[Any] = asyncio.create_task(stop.wait())
            try:
                pending: set[asyncio.Task[Any]] = {*tasks, stopped}
                while stopped in pending and len(pending) > 1 and not self.unavailable:
                    _done, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
            finally:
                for task in (*tasks, stopped):
                    task.cancel()
                await asyncio.gather(*tasks, stopped, return_exceptions=True)

    async def _subscribe(
        self, session: aiohttp.ClientSession, event_type: str, stop: asyncio.Event
    ) -> None:
        failures = 0
        while not stop.is_set() and not self.unavailable:
            try:
                if await self._connect_once(session, event_type):
                    failures = 0  # it worked for a while: start the backoff afresh
            except _Forbidden:
                self.forbidden += 1
                if event_type not in self._forbidden_logged:
                    self._forbidden_logged.add(event_type)
                    log.error(
                        "vault_events_forbidden",
                        event_type=event_type,
                        retry_in_s=self.forbidden_backoff,
                        fix=forbidden_fix(
                            event_type, self.mapper.kv_mount, self.mapper.trigger_path
                        ),
                    )
                failures = 0
                await wait_event(stop, self.forbidden_backoff)
                continue
            except _NoEventStream:
                if not self.unavailable:
                    self.unavailable = True
                    log.warning(
                        "vault_events_unavailable",
                        addr=self.addr,
                        detail="the server has no event stream (OpenBao, Vault community "
                        "edition before 1.16); relying on the lease schedule",
                    )
                return
            failures += 1
            delay = exponential(failures, self.initial_backoff, self.max_backoff)
            delay = random.uniform(delay / 2, delay)  # jitter: replicas do not reconnect in step
            await wait_event(stop, delay)

    async def _connect_once(self, session: aiohttp.ClientSession, event_type: str) -> bool:
        """One connection until it drops; True when it got through the handshake."""
        token = await self.token()
        headers = {"X-Vault-Token": token.reveal()}
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        try:
            async with session.ws_connect(
                self.url(event_type),
                headers=headers,
                heartbeat=self.heartbeat,
                ssl=self.ssl_context,
            ) as ws:
                self.connections += 1
                log.info("vault_events_subscribed", event_type=event_type)
                async for message in ws:
                    if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        self._handle(message.data)
                    elif message.type is aiohttp.WSMsgType.ERROR:
                        break
                log.info("vault_events_disconnected", event_type=event_type)
                return True
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                raise _NoEventStream from None
            if exc.status == 403:
                raise _Forbidden from None
            log.warning("vault_events_refused", event_type=event_type, status=exc.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("vault_events_unreachable", event_type=event_type, error=type(exc).__name__)
        return False

    def _handle(self, raw: str | bytes) -> None:
        try:
            event = parse_event(raw)
        except EventParseError as exc:
            self.ignored += 1
            log.warning("vault_event_ignored", reason=str(exc))
            return
        if self.recent.seen(event.id):
            return
        routed = self.mapper.route(event)
        clusters = [cluster_id for kind, cluster_id in routed if kind == ROTATE]
        for cluster_id in clusters:
            self.on_trigger(cluster_id, event.time or self.now(), event)
        if self.on_change is not None:
            for kind, cluster_id in routed:
                if kind != ROTATE:
                    self.on_change(kind, cluster_id, event)
        if routed:
            log.info(
                "vault_event",
                event_type=event.event_type,
                event_id=event.id,
                clusters=len(routed),
            )
