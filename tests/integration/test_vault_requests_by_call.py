"""How many Vault requests a rotation costs, counted on a real OpenBao (issue 10 §5, issue 14 §2).

Every HTTP request the client sends is counted (method and path kind), for a fleet already in its
steady state (each cluster rotated once before): what ``rotate --all`` costs on a nightly run
when clusters are due, and what a daemon's rotation costs.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from rotator.engine.batch import run_batch
from rotator.engine.ratelimit import RateLimit, RegionLimiter
from rotator.engine.report import Outcome
from rotator.engine.retry import Backoff, RetryPolicy
from rotator.engine.rotation import RotationContext, Target
from rotator.passwords import LocalPasswordSource
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.store import VaultStore
from tests.support.fake_api import FakeApi
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

CLUSTERS = 4
DUE_AT_ONCE = 1e-6
"""A rotation period so short that every cluster is due again right after its rotation."""


class Counted:
    """Counts the Vault client's HTTP requests as ``METHOD kind`` (kind: the KV path's role)."""

    def __init__(self, client: VaultClient, paths: VaultPaths) -> None:
        self.requests: Counter[str] = Counter()
        self._paths = paths
        request = client.request

        async def counted(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            self.requests[f"{method} {self._kind(path)}"] += 1
            return await request(method, path, *args, **kwargs)

        setattr(client, "request", counted)  # noqa: B010 - instrumentation only

    def _kind(self, path: str) -> str:
        for kind in ("root", "vnc", "pending", "runs"):
            if f"{self._paths.prefix}/{kind}" in path:
                return f"{path.split('/')[1]}/{kind}"
        return path

    def take(self) -> Counter[str]:
        taken, self.requests = self.requests, Counter()
        return taken


@pytest_asyncio.fixture
async def fleet(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> AsyncIterator[tuple[VaultStore, FakeApi, Counted]]:
    async with VaultClient(vault_paths.settings(openbao)) as client:
        store = VaultStore(client)
        api = FakeApi.with_clusters(CLUSTERS)
        for cluster in api.clusters.values():
            await store.write_root(cluster.id, "root", Secret(cluster.root_password), "cn-hangzhou")
        yield store, api, Counted(client, vault_paths)


def _context(api: FakeApi, store: VaultStore, owner: str) -> RotationContext:
    quick = Backoff(attempts=4, initial_wait=0.01, max_wait=0.05)
    return RotationContext(
        api=api,
        store=store,
        passwords=LocalPasswordSource(),
        limiter=RegionLimiter(RateLimit.parse("1000/1s")),
        retry=RetryPolicy(
            general=quick, conflict=quick, throttle=quick, vault=quick, rng=random.Random(1)
        ),
        owner=owner,
        not_before=datetime.now(UTC),
        period=DUE_AT_ONCE,
    )


async def _inventory(store: VaultStore) -> list[Target]:
    """What ``inventory.source = "vault"`` does: LIST the roots, read each (its region)."""
    ids = await store.list_root_clusters()
    roots = await asyncio.gather(*(store.read_root(i) for i in ids))
    return [Target(r.cluster_id, r.region or "", root=r) for r in roots]


async def _batch(
    store: VaultStore, api: FakeApi, targets: list[Target], owner: str, *, due: bool
) -> None:
    summary = await run_batch(
        targets, _context(api, store, owner), run_id=owner, concurrency=2, skip_not_due=due
    )
    assert [o.outcome for o in summary.outcomes] == [Outcome.ROTATED] * CLUSTERS


def _total(counts: Counter[str]) -> int:
    return sum(counts.values())


async def test_rotate_all_costs_three_requests_per_rotation_plus_the_root_read(
    fleet: tuple[VaultStore, FakeApi, Counted],
) -> None:
    store, api, counted = fleet
    await _batch(store, api, await _inventory(store), "first", due=True)  # steady state
    counted.take()

    targets = await _inventory(store)
    inventory = counted.take()
    await _batch(store, api, targets, "nightly", due=True)
    rotation = counted.take()

    # The inventory: one LIST per run, one root read per cluster (it holds the region).
    assert inventory == Counter({"LIST metadata/root": 1, "GET data/root": CLUSTERS})
    # The rotation: the due check's read is the engine's first read; stage, commit (its data
    # carries the status of a rotation that went well: no metadata write).
    assert rotation == Counter(
        {
            "GET data/vnc": CLUSTERS,
            "POST data/pending": CLUSTERS,
            "POST data/vnc": CLUSTERS,
        }
    )
    assert _total(rotation) / CLUSTERS == 3
    assert (_total(rotation) + _total(inventory) - 1) / CLUSTERS == 4


async def test_a_daemon_rotation_costs_four_requests_and_three_with_the_root_known(
    fleet: tuple[VaultStore, FakeApi, Counted],
) -> None:
    """``serve`` hands the engine cluster ids only (its inventory keeps no root credential, so
    a changed root password is picked up), and has no due check: the engine reads the root and
    the committed record (the version its commit's CAS needs), then stages and commits."""
    store, api, counted = fleet
    ids = await store.list_root_clusters()
    targets = [Target(i, "") for i in ids]
    await _batch(store, api, targets, "first", due=False)
    counted.take()

    await _batch(store, api, targets, "webhook", due=False)
    rotation = counted.take()
    assert rotation == Counter(
        {
            "GET data/root": CLUSTERS,
            "GET data/vnc": CLUSTERS,
            "POST data/pending": CLUSTERS,
            "POST data/vnc": CLUSTERS,
        }
    )
    # With the root known (a Vault inventory's read, as rotate --all has it): 3.
    known = await _inventory(store)
    counted.take()
    await _batch(store, api, known, "webhook-2", due=False)
    assert _total(counted.take()) / CLUSTERS == 3
