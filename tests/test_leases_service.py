"""LeaseService against a fake Vault client (the transport seam): authorization and inputs.

The fake answers ``sys/capabilities-self`` from a table of glob grants (as a Vault policy
would), ``auth/token/lookup-self`` from a table of tokens, and keeps KV v2 entries with
check-and-set. It records every path asked for, so a test can assert what a refused caller
made rotator look at.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from rotator.errors import VaultConflictError, VaultPermissionError
from rotator.leases.model import CheckoutPolicy, LeaseError
from rotator.leases.service import LeaseService
from rotator.leases.vault import LeaseStore
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.settings import VaultSettings

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ALICE = Secret("tok-alice")
BOB = Secret("tok-bob")
NOBODY = Secret("tok-nobody")


@dataclass
class FakeVault:
    settings: VaultSettings = field(default_factory=VaultSettings)
    grants: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """token -> {path glob: capabilities}"""
    people: dict[str, str] = field(default_factory=dict)
    """token -> entity id"""
    kv: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    """Every path rotator or a caller's token touched."""

    def _caps(self, token: str, path: str) -> list[str]:
        for pattern, caps in self.grants.get(token, {}).items():
            if fnmatch.fnmatchcase(path, pattern):
                return caps
        return ["deny"]

    async def request_as(
        self, token: Secret, method: str, path: str, json: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.asked.append(path)
        who = token.reveal()
        if who not in self.people:
            raise VaultPermissionError("permission denied", code="VaultPermissionDenied")
        if path == "auth/token/lookup-self":
            return {
                "data": {
                    "display_name": who,
                    "entity_id": self.people[who],
                    "accessor": f"acc-{who}",
                }
            }
        if path == "sys/capabilities-self":
            assert json is not None
            return {"data": {p: self._caps(who, p) for p in json["paths"]}}
        if method == "GET" and "read" in self._caps(who, path):
            mount, _, rest = path.partition("/data/")
            entry = self.kv.get(f"{mount}/{rest}")
            if entry is not None:
                return {"data": {"data": entry[1], "metadata": {"version": entry[0]}}}
        raise VaultPermissionError("permission denied", code="VaultPermissionDenied")

    async def kv_read(self, mount: str, path: str) -> dict[str, Any] | None:
        self.asked.append(f"{mount}/{path}")
        entry = self.kv.get(f"{mount}/{path}")
        if entry is None:
            return None
        return {"data": dict(entry[1]), "metadata": {"version": entry[0]}}

    async def kv_write(
        self, mount: str, path: str, data: dict[str, Any], *, cas: int | None = None
    ) -> dict[str, Any]:
        self.asked.append(f"{mount}/{path}")
        key = f"{mount}/{path}"
        version = self.kv.get(key, (0, {}))[0]
        if cas is not None and cas != version:
            raise VaultConflictError("cas mismatch")
        self.kv[key] = (version + 1, dict(data))
        return {"version": version + 1}

    async def kv_list(self, mount: str, path: str) -> list[str]:
        self.asked.append(f"{mount}/{path}/")
        prefix = f"{mount}/{path}/"
        return sorted({k[len(prefix) :] for k in self.kv if k.startswith(prefix)})


def service(vault: FakeVault, **policy: Any) -> LeaseService:
    async def read_password(cluster_id: str) -> Secret | None:
        entry = vault.kv.get(f"secret/ehpc/vnc/{cluster_id}")
        return Secret(entry[1]["password"]) if entry else None

    return LeaseService(
        LeaseStore(cast(VaultClient, cast(Any, vault))),
        read_password,
        CheckoutPolicy(**policy),
        now=lambda: T0,
    )


def fleet() -> FakeVault:
    """hz-1 and bj-2 have passwords; alice may check out ehpc-hz-* only, bob anything."""
    vault = FakeVault(people={"tok-alice": "ent-alice", "tok-bob": "ent-bob", "tok-nobody": ""})
    vault.people["tok-nobody"] = "ent-nobody"
    vault.grants = {
        "tok-alice": {"secret/data/ehpc/checkout/ehpc-hz-*": ["read"]},
        "tok-bob": {"secret/data/ehpc/checkout/*": ["read"]},
        "tok-nobody": {},
    }
    for cluster_id in ("ehpc-hz-1", "ehpc-bj-2"):
        vault.kv[f"secret/ehpc/vnc/{cluster_id}"] = (1, {"password": f"pw-{cluster_id}"})
    return vault


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "cluster_id",
    [
        "ehpc-hz-1/../ehpc-bj-2",
        "ehpc-hz-1/../../vnc/ehpc-bj-2",
        "ehpc-hz-x/%2e%2e/ehpc-bj-2",
        "ehpc-hz-1\n",
        "ehpc-hz-*",
    ],
)
async def test_a_cluster_id_that_is_not_one_path_segment_is_refused_before_vault(
    cluster_id: str,
) -> None:
    """A policy narrowed to ``ehpc-hz-*`` matches ``ehpc-hz-1/../ehpc-bj-2`` (a glob spans
    ``/``), while the HTTP stack under hvac removes the dot segments: the check and the read
    would be about different clusters."""
    vault = fleet()
    with pytest.raises(LeaseError) as caught:
        await service(vault).checkout(ALICE, cluster_id, ttl=60, reason="")
    assert caught.value.status == 400
    assert caught.value.code == "InvalidClusterId"
    assert vault.asked == []
    with pytest.raises(LeaseError) as renewing:
        await service(vault).renew(ALICE, f"{cluster_id}:00ff", ttl=60)
    assert renewing.value.status == 400
    with pytest.raises(LeaseError):
        await service(vault).checkin(ALICE, f"{cluster_id}:00ff")
    assert vault.asked == []


@pytest.mark.asyncio
async def test_a_token_without_the_policy_learns_nothing_and_costs_no_lease_reads() -> None:
    vault = fleet()
    svc = service(vault)
    await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="debug")
    vault.asked.clear()
    assert await svc.visible(NOBODY) == []
    # Refused callers do not make rotator read every lease document first.
    assert [p for p in vault.asked if p.startswith("secret/ehpc/leases/ehpc")] == []
    with pytest.raises(LeaseError) as caught:
        await svc.visible(Secret("tok-unknown"))
    assert caught.value.status == 401
    with pytest.raises(LeaseError) as denied:
        await svc.checkout(NOBODY, "ehpc-bj-2", ttl=60, reason="")
    assert denied.value.status == 403
    assert "pw-" not in str(denied.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("ttl", [math.nan, math.inf, -math.inf, 1e300])
async def test_a_ttl_that_is_not_a_finite_duration_is_a_400(ttl: float) -> None:
    vault = fleet()
    with pytest.raises(LeaseError) as caught:
        await service(vault).checkout(BOB, "ehpc-bj-2", ttl=ttl, reason="")
    assert caught.value.status == 400
    assert caught.value.code == "InvalidTtl"


@pytest.mark.asyncio
async def test_a_cluster_holds_a_bounded_number_of_open_leases() -> None:
    vault = fleet()
    svc = service(vault, max_leases=3)
    for _ in range(3):
        await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    with pytest.raises(LeaseError) as caught:
        await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    assert caught.value.status == 409
    assert caught.value.code == "TooManyLeases"


@pytest.mark.asyncio
async def test_holders_renew_and_check_in_only_their_own_leases() -> None:
    vault = fleet()
    vault.grants["tok-alice"]["secret/data/ehpc/checkout/*"] = ["read"]
    svc = service(vault)
    bobs = await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    for attempt in (
        svc.renew(ALICE, bobs.lease.lease_id, ttl=60),
        svc.checkin(ALICE, bobs.lease.lease_id),
    ):
        with pytest.raises(LeaseError) as caught:
            await attempt
        assert caught.value.code == "LeaseNotYours"
    doc = await svc.store.read("ehpc-bj-2")
    assert [lease.lease_id for lease in doc.leases] == [bobs.lease.lease_id]
    assert doc.leases[0].expires_at == T0 + timedelta(seconds=600)


@dataclass
class Backend:
    lease_service: LeaseService
    body_timeout: float = 5.0
    ended: list[str] = field(default_factory=list)

    def lease_ended(self, doc: Any) -> None:
        self.ended.append(doc.cluster_id)

    def lease_changed(self) -> None:
        pass


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"cluster_id": "ehpc-bj-2", "ttl": 1' + b"0" * 400 + b"}", "InvalidTtl"),
        (b'{"cluster_id": "ehpc-bj-2", "ttl": NaN}', "InvalidTtl"),
        (b'{"cluster_id": "ehpc-bj-2", "ttl": "1e999h"}', "InvalidTtl"),
        (b'{"cluster_id": "ehpc-hz-1/../ehpc-bj-2"}', "InvalidClusterId"),
    ],
)
async def test_hostile_checkout_bodies_get_400_not_500(body: bytes, code: str) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from rotator.serve.leases import add_lease_routes

    app = web.Application()
    add_lease_routes(app, Backend(service(fleet())))
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/v1/checkout", data=body, headers={"X-Vault-Token": BOB.reveal()}
        )
        assert response.status == 400
        assert (await response.json())["code"] == code


@pytest.mark.asyncio
async def test_rotate_and_plan_see_held_and_owed_clusters_and_plan_writes_nothing() -> None:
    from rotator.engine.rotation import Target
    from rotator.leases.cron import lease_state, with_lease_ends

    vault = fleet()
    svc = service(vault)
    await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    short = await svc.checkout(BOB, "ehpc-hz-1", ttl=60, reason="")
    client = cast(VaultClient, cast(Any, vault))
    later = T0 + timedelta(seconds=120)  # hz-1's lease has expired, bj-2's is open
    before = dict(vault.kv)
    planned = await lease_state(client, now=later, write=False)
    assert vault.kv == before
    assert planned.owed == {"ehpc-hz-1": short.lease.expires_at}
    assert list(planned.held) == ["ehpc-bj-2"]
    assert "tok-bob" in planned.held["ehpc-bj-2"]
    targets = with_lease_ends(
        [Target("ehpc-bj-2", ""), Target("ehpc-hz-1", "")], planned.owed, planned.held
    )
    assert targets[0].held
    assert targets[0].not_before is None
    assert targets[1].not_before == short.lease.expires_at
    assert not targets[1].held
    state = await lease_state(client, now=later)
    assert state == planned
    assert (await svc.store.read("ehpc-hz-1")).rotation_due == short.lease.expires_at


@pytest.mark.asyncio
async def test_a_checkout_while_a_rotation_is_in_flight_is_told_to_retry_after_it() -> None:
    """The password read now would be replaced by the one being applied: not handed out."""
    vault = fleet()
    busy: set[str] = {"ehpc-bj-2"}

    async def rotating(cluster_id: str) -> bool:
        return cluster_id in busy

    svc = service(vault)
    svc.rotating = rotating
    with pytest.raises(LeaseError) as caught:
        await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    assert caught.value.status == 409
    assert caught.value.code == "RotationInProgress"
    assert caught.value.retry_after
    assert (await svc.store.read("ehpc-bj-2")).leases == ()
    busy.clear()
    result = await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    assert result.password.reveal() == "pw-ehpc-bj-2"


@pytest.mark.asyncio
async def test_a_rotation_that_starts_while_the_password_is_read_is_not_handed_out() -> None:
    """Another replica stages between the in-flight check and the read: the password read is
    about to be replaced, so the checkout is refused and its lease withdrawn, owing nothing."""
    vault = fleet()
    checks = 0

    async def rotating(_cluster_id: str) -> bool:
        nonlocal checks
        checks += 1
        return checks > 1  # idle at the first check, staged by the time of the second

    svc = service(vault)
    svc.rotating = rotating
    with pytest.raises(LeaseError) as caught:
        await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    assert (caught.value.status, caught.value.code) == (409, "RotationInProgress")
    doc = await svc.store.read("ehpc-bj-2")
    assert doc.leases == ()
    assert doc.rotation_due is None  # never handed out: no lease-end rotation is owed


@pytest.mark.asyncio
async def test_an_owed_lease_end_rotation_answers_rotation_pending_before_in_progress() -> None:
    vault = fleet()
    svc = service(vault)
    lease = (await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")).lease
    await svc.checkin(BOB, lease.lease_id)

    async def rotating(_cluster_id: str) -> bool:
        return True  # the lease-end trigger is queued

    svc.rotating = rotating
    with pytest.raises(LeaseError) as caught:
        await svc.checkout(BOB, "ehpc-bj-2", ttl=600, reason="")
    assert caught.value.code == "RotationPending"
