"""Simulator fixtures, a hand-made signed request, and a small admin client.

async def test_x(sim: Simulator) -> None:                 # 20 clusters, no faults, http
    async with aiohttp.ClientSession() as session:
        reply = await send(session, sign(sim, "ListClusters", {"PageSize": "5"}))
        assert reply.status == 200
        clusters = await SimAdmin(session, sim).clusters()

async def test_y(sim_factory: SimFactory) -> None:
    sim = await sim_factory(tls=True, faults=FaultConfig(drop_rate=1.0))
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest_asyncio
from yarl import URL

from rotator.ehpc import signer
from rotator.ehpc.models import API_VERSION
from rotator.sim import SimConfig, Simulator

__all__ = [
    "Reply",
    "SignedCall",
    "SimAdmin",
    "SimFactory",
    "send",
    "sign",
    "sim",
    "sim_factory",
    "stale",
]

SimFactory = Callable[..., Awaitable[Simulator]]
"""``await sim_factory(**SimConfig overrides)``: a started simulator, stopped at teardown."""


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(clusters=20)) as started:
        yield started


@pytest_asyncio.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    started: list[Simulator] = []

    async def make(**overrides: Any) -> Simulator:
        values: dict[str, Any] = {"clusters": 20}
        values.update(overrides)
        simulator = await Simulator(SimConfig(**values)).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        await simulator.stop()


@dataclass(slots=True)
class SignedCall:
    """A signed request, ready to send; tests may tamper with it after signing."""

    method: str
    url: URL
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: dict[str, Any] = field(repr=False)
    content_type: str

    @property
    def code(self) -> str | None:
        code = self.body.get("Code")
        return str(code) if code is not None else None


def sign(
    target: Simulator,
    action: str,
    params: Mapping[str, str],
    *,
    method: str = "POST",
    access_key_id: str | None = None,
    access_key_secret: str | None = None,
    security_token: str | None = None,
    version: str = API_VERSION,
    date: datetime | None = None,
    nonce: str | None = None,
    leave_unsigned: tuple[str, ...] = (),
    endpoint: str | None = None,
) -> SignedCall:
    """Sign like our client (POST: form body) or like the official SDK (GET: query string).

    ``leave_unsigned`` names headers sent but left out of SignedHeaders; ``endpoint`` is another
    base URL of the simulator (a region's own, ``sim.endpoints[region]``).
    """
    key_id = access_key_id or target.config.access_key_id
    secret = access_key_secret or target.config.access_key_secret
    base_url = endpoint or target.base_url
    url = URL(base_url + "/")
    query: dict[str, str] = {}
    body = b""
    if method == "GET":
        query = dict(params)
        url = URL(f"{base_url}/?{urlencode(query, quote_via=quote)}", encoded=True)
    else:
        body = urlencode(params).encode()
    headers = {
        "host": base_url.split("://", 1)[1],
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": (date or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": signer.sha256_hex(body),
    }
    if body:
        headers["content-type"] = "application/x-www-form-urlencoded"
    if security_token is not None:
        headers["x-acs-security-token"] = security_token
    signed = {k: v for k, v in headers.items() if k not in leave_unsigned}
    headers["authorization"] = signer.authorization(
        method=method,
        path="/",
        query=query,
        headers=signed,
        payload_sha256=headers["x-acs-content-sha256"],
        access_key_id=key_id,
        access_key_secret=secret,
    )
    return SignedCall(method=method, url=url, headers=headers, body=body)


def stale(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def send(
    session: aiohttp.ClientSession, call: SignedCall, *, timeout_s: float = 10.0
) -> Reply:
    async with session.request(
        call.method,
        call.url,
        headers=call.headers,
        data=call.body or None,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        skip_auto_headers=("content-type",),
    ) as response:
        text = await response.text()
        return Reply(
            status=response.status,
            headers=dict(response.headers),
            body=json.loads(text),
            content_type=response.content_type,
        )


@dataclass(frozen=True, slots=True)
class SimAdmin:
    """The ``/_sim/`` admin API (raises for any non-2xx answer)."""

    session: aiohttp.ClientSession
    target: Simulator

    async def request(self, method: str, path: str, payload: object = None) -> Any:
        async with self.session.request(
            method,
            f"{self.target.base_url}/_sim/{path}",
            headers={"Authorization": f"Bearer {self.target.admin_token}"},
            json=payload,
        ) as response:
            response.raise_for_status()
            return await response.json()

    async def clusters(self) -> dict[str, dict[str, Any]]:
        """Every cluster by id: name, region, zone, status, passwords, change_count."""
        return {c["id"]: c for c in await self.request("GET", "clusters")}

    async def patch_cluster(self, cluster_id: str, **fields: object) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("PATCH", f"clusters/{cluster_id}", fields)
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "stats")
        return result

    async def set_running_except(self, stopped: Collection[str] = ()) -> None:
        """Every cluster ``running`` but those in ``stopped`` (``exception``, a documented
        status), whatever the seed made of them."""
        for cluster_id, cluster in (await self.clusters()).items():
            wanted = "exception" if cluster_id in stopped else "running"
            if cluster["status"] != wanted:
                await self.patch_cluster(cluster_id, status=wanted)

    async def reset_stats(self) -> None:
        await self.request("POST", "stats/reset")

    async def set_faults(self, **patch: object) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("PUT", "faults", patch)
        return result

    async def add_credential(
        self, access_key_id: str, access_key_secret: str, security_token: str | None = None
    ) -> None:
        await self.request(
            "POST",
            "credentials",
            {
                "access_key_id": access_key_id,
                "access_key_secret": access_key_secret,
                "security_token": security_token,
            },
        )
