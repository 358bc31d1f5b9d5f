"""A fake of HashiCorp Vault's event stream, for the daemon's event subscriber.

async def test_x(event_server: FakeEventServer) -> None:
    event_server.token = "the-token"
    ... start a daemon with events_addr=event_server.addr ...
    await event_server.wait_connected("kv-v2/data-write")
    await event_server.send("kv-v2/data-write", kv_event("secret/data/ehpc/trigger/c-1"))
    await event_server.send("kv-v2/data-write", "{not json")       # malformed
    await event_server.drop()                                        # the client must reconnect

It serves ``GET /v1/sys/events/subscribe/{type}?json=true[&filter=...]`` as a WebSocket, checks
``X-Vault-Token`` (403 otherwise), and can answer every handshake with a fixed status (404 is
what OpenBao says). A ``filter`` is applied as Vault would, for the part of go-bexpr rotator uses
(``data_path matches "<regexp>"`` terms joined by ``or``); any other filter is a 400.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest_asyncio
from aiohttp import WSMsgType, web

__all__ = ["FakeEventServer", "event_server", "kv_event", "lease_event"]


def kv_event(
    path: str,
    *,
    event_type: str = "kv-v2/data-write",
    mount: str = "secret/",
    event_id: str | None = None,
    when: datetime | None = None,
    camel_case: bool = False,
) -> dict[str, Any]:
    """A CloudEvents message as Vault sends it (``camel_case``: as older servers did)."""
    event_id = event_id or str(uuid.uuid4())
    plugin = {"mount_class": "secret", "mount_accessor": "kv_1234", "plugin": "kv"}
    data: dict[str, Any] = {
        "event": {
            "id": event_id,
            "metadata": {
                "current_version": "2",
                "data_path": path,
                "modified": "true",
                "oldest_version": "0",
                "operation": event_type.rsplit("/", maxsplit=1)[-1],
                "path": path,
            },
        },
    }
    if camel_case:
        data["eventType"] = event_type
        data["pluginInfo"] = {**plugin, "mountPath": mount}
    else:
        data["event_type"] = event_type
        data["plugin_info"] = {**plugin, "mount_path": mount}
    return {
        "id": event_id,
        "source": "https://vaultproject.io/",
        "specversion": "1.0",
        "type": "*",
        "data": data,
        "datacontentype": "application/cloudevents",
        "time": (when or datetime.now(UTC)).isoformat(),
    }


def lease_event(lease_id: str, *, event_type: str = "lease/expired") -> dict[str, Any]:
    event_id = str(uuid.uuid4())
    return {
        "id": event_id,
        "source": "https://vaultproject.io/",
        "specversion": "1.0",
        "type": "*",
        "data": {
            "event": {"id": event_id, "metadata": {"lease_id": lease_id}},
            "event_type": event_type,
            "plugin_info": {"mount_path": "sys/", "plugin": "system"},
        },
        "time": datetime.now(UTC).isoformat(),
    }


class FakeEventServer:
    def __init__(self, token: str = "") -> None:
        self.token = token
        self.handshake_status: int | None = None
        """Answer every subscribe with this status instead of upgrading (404: OpenBao)."""
        self.handshakes: list[str] = []
        """Event types of the accepted handshakes, in order."""
        self.refused = 0
        self.filters: dict[str, str] = {}
        """The last ``filter`` query parameter seen per event type."""
        self._matchers: dict[int, list[re.Pattern[str]] | None] = {}
        self.addr = ""
        self._sockets: dict[str, list[web.WebSocketResponse]] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeEventServer:
        app = web.Application()
        app.router.add_get("/v1/sys/events/subscribe/{event_type:.+}", self._subscribe)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.addr = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        event_type = request.match_info["event_type"]
        if self.handshake_status is not None:
            self.refused += 1
            return web.json_response({"errors": []}, status=self.handshake_status)
        given = request.headers.get("X-Vault-Token", "").encode()
        if not self.token or not hmac.compare_digest(given, self.token.encode()):
            self.refused += 1
            return web.json_response({"errors": ["permission denied"]}, status=403)
        if request.query.get("json") != "true":
            return web.json_response({"errors": ["this fake speaks json=true only"]}, status=400)
        expression = request.query.get("filter")
        matchers = None
        if expression is not None:
            self.filters[event_type] = expression
            matchers = _parse_filter(expression)
            if matchers is None:
                return web.json_response({"errors": ["unsupported filter"]}, status=400)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._matchers[id(ws)] = matchers
        async with self._changed:
            self._sockets.setdefault(event_type, []).append(ws)
            self.handshakes.append(event_type)
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            async with self._changed:
                if ws in self._sockets.get(event_type, []):
                    self._sockets[event_type].remove(ws)
                self._changed.notify_all()
        return ws

    def connected(self, event_type: str) -> int:
        return len(self._sockets.get(event_type, []))

    async def wait_connected(self, event_type: str, *, handshakes: int = 1) -> None:
        """Until a client is connected for ``event_type`` after at least ``handshakes``."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(
                    lambda: (
                        self.connected(event_type) > 0
                        and self.handshakes.count(event_type) >= handshakes
                    )
                ),
                timeout=10,
            )

    async def send(self, event_type: str, message: dict[str, Any] | str) -> int:
        """Deliver to every subscriber whose filter lets it through; how many got it."""
        text = message if isinstance(message, str) else json.dumps(message)
        data_path: str | None = None  # a raw string (a malformed message) is never filtered
        if isinstance(message, dict):
            metadata = message.get("data", {}).get("event", {}).get("metadata", {})
            data_path = str(metadata.get("data_path") or "")
        sent = 0
        for ws in list(self._sockets.get(event_type, [])):
            matchers = self._matchers.get(id(ws))
            if (
                matchers is not None
                and data_path is not None
                and not any(m.search(data_path) for m in matchers)
            ):
                continue  # Vault filters on its side: the subscriber never sees it
            await ws.send_str(text)
            sent += 1
        return sent

    async def drop(self) -> None:
        """Close every connection, as a restarting Vault would."""
        for sockets in list(self._sockets.values()):
            for ws in list(sockets):
                await ws.close()


_TERM = re.compile(r'\s*data_path\s+matches\s+"((?:[^"\\]|\\.)*)"\s*')


def _parse_filter(expression: str) -> list[re.Pattern[str]] | None:
    """``data_path matches "..." or data_path matches "..."`` -> the regexps; else None."""
    patterns: list[re.Pattern[str]] = []
    for term in expression.split(" or "):
        match = _TERM.fullmatch(term)
        if match is None:
            return None
        patterns.append(re.compile(match.group(1)))
    return patterns


@pytest_asyncio.fixture
async def event_server() -> AsyncIterator[FakeEventServer]:
    server = await FakeEventServer().start()
    yield server
    await server.stop()
