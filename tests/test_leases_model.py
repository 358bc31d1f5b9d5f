"""The check-out lease core, without Vault: every rule as plain values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from rotator.leases import model
from rotator.leases.model import CheckoutPolicy, Holder, LeaseDoc, LeaseError, LeaseState

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ALICE = Holder("oidc-alice", entity_id="e-alice", accessor="a-1")
ALICE_OTHER_TOKEN = Holder("oidc-alice", entity_id="e-alice", accessor="a-2")
BOB = Holder("oidc-bob", entity_id="e-bob", accessor="b-1")
SHARED = CheckoutPolicy(mode="shared", default_ttl=3600, max_ttl=4 * 3600)
EXCLUSIVE = CheckoutPolicy(mode="exclusive", default_ttl=3600, max_ttl=4 * 3600)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_shared_leases_rotate_only_when_the_last_one_ends() -> None:
    doc = LeaseDoc.empty("c-1")
    doc, a = model.checkout(doc, ALICE, ttl=None, reason="debug", policy=SHARED, now=at(0))
    doc, b = model.checkout(doc, BOB, ttl=7200, reason="job", policy=SHARED, now=at(1))
    assert a.expires_at == at(60)
    assert a.lease_id.startswith("c-1:")
    assert model.cluster_of(a.lease_id) == "c-1"
    doc = model.checkin(doc, a.lease_id, ALICE_OTHER_TOKEN, now=at(10))  # same entity
    assert doc.rotation_due is None
    assert [lease.lease_id for lease in doc.leases] == [b.lease_id]
    doc = model.checkin(doc, b.lease_id, BOB, now=at(20))
    assert doc.rotation_due == at(20)
    assert doc.ended == "checked in"
    assert doc.state is LeaseState.ROTATION_PENDING


def test_exclusive_mode_refuses_a_second_holder() -> None:
    doc, _ = model.checkout(
        LeaseDoc.empty("c-1"), ALICE, ttl=600, reason="", policy=EXCLUSIVE, now=at(0)
    )
    with pytest.raises(LeaseError) as info:
        model.checkout(doc, BOB, ttl=600, reason="", policy=EXCLUSIVE, now=at(1))
    assert (info.value.status, info.value.code) == (409, "CheckedOut")
    assert info.value.retry_after == pytest.approx(540)


def test_a_checkout_waits_for_the_lease_end_rotation() -> None:
    doc, lease = model.checkout(
        LeaseDoc.empty("c-1"), ALICE, ttl=600, reason="", policy=SHARED, now=at(0)
    )
    # Expired (nobody checked in): the next checkout ends it, and must not get the old password.
    with pytest.raises(LeaseError) as info:
        model.checkout(doc, BOB, ttl=600, reason="", policy=SHARED, now=at(11))
    assert (info.value.status, info.value.code) == (409, "RotationPending")
    assert info.value.retry_after is not None
    ended = model.expire(doc, at(11))
    assert ended.rotation_due == lease.expires_at == at(10)
    assert ended.ended == "expired"
    # A rotation that was asked before the lease ended does not pay for it; one after does.
    assert model.rotated(ended, not_before=at(5)).rotation_due == at(10)
    cleared = model.rotated(ended, not_before=at(10))
    assert cleared.rotation_due is None
    model.checkout(cleared, BOB, ttl=600, reason="", policy=SHARED, now=at(12))


def test_failed_rotations_stay_visible_until_one_succeeds() -> None:
    doc, _ = model.checkout(
        LeaseDoc.empty("c-1"), ALICE, ttl=60, reason="", policy=SHARED, now=at(0)
    )
    doc = model.expire(doc, at(2))
    doc = model.rotation_failed(doc, code="AgentError", retry_at=at(3))
    doc = model.rotation_failed(doc, code="AgentError", retry_at=at(5))
    assert doc.state is LeaseState.ROTATION_FAILED
    assert (doc.failures, doc.last_error, doc.next_attempt_at) == (2, "AgentError", at(5))
    back = LeaseDoc.from_data("c-1", 7, doc.to_data())
    assert back == dataclasses.replace(doc, version=7)
    assert model.rotated(back, not_before=at(4)).state is None


def test_only_the_holder_or_a_manager_renews_or_checks_in() -> None:
    doc, lease = model.checkout(
        LeaseDoc.empty("c-1"), ALICE, ttl=600, reason="", policy=SHARED, now=at(0)
    )
    for operation in (
        lambda: model.checkin(doc, lease.lease_id, BOB, now=at(1)),
        lambda: model.renew(doc, lease.lease_id, BOB, ttl=600, policy=SHARED, now=at(1)),
    ):
        with pytest.raises(LeaseError) as info:
            operation()
        assert (info.value.status, info.value.code) == (403, "LeaseNotYours")
    assert model.checkin(doc, lease.lease_id, BOB, now=at(1), manage_others=True).rotation_due
    with pytest.raises(LeaseError, match="no open lease"):
        model.checkin(doc, "c-1:nope", ALICE, now=at(1))


def test_ttls_are_bounded_by_the_max_ttl_from_checkout() -> None:
    doc = LeaseDoc.empty("c-1")
    for ttl in (0, -1, 5 * 3600):
        with pytest.raises(LeaseError, match="ttl"):
            model.checkout(doc, ALICE, ttl=ttl, reason="", policy=SHARED, now=at(0))
    doc, lease = model.checkout(doc, ALICE, ttl=3600, reason="", policy=SHARED, now=at(0))
    doc, renewed = model.renew(doc, lease.lease_id, ALICE, ttl=3 * 3600, policy=SHARED, now=at(50))
    assert renewed.expires_at == at(230)
    with pytest.raises(LeaseError, match="renewed until"):
        model.renew(doc, lease.lease_id, ALICE, ttl=3600, policy=SHARED, now=at(200))


def test_holders_without_entity_match_by_token_accessor() -> None:
    anon = Holder("token", accessor="x-1")
    assert anon.same(Holder("token", accessor="x-1"))
    assert not anon.same(Holder("token", accessor="x-2"))
    assert not Holder("token").same(Holder("token"))


def test_lease_ids_must_name_a_cluster() -> None:
    with pytest.raises(LeaseError, match="not a lease id"):
        model.cluster_of("no-colon")
