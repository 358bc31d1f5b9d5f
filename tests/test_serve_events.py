"""Parsing Vault's event messages and mapping them to clusters (no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rotator.serve.events import EventMapper, EventParseError, RecentIds, parse_event
from tests.support.events import kv_event, lease_event

KNOWN = {"ehpc-hz-1", "ehpc-hz-2", "ehpc-sh-9"}
mapper = EventMapper(kv_mount="secret", trigger_path="ehpc/trigger", known=lambda: KNOWN)


@pytest.mark.parametrize("camel_case", [False, True])
def test_snake_and_camel_case_messages_parse_the_same(camel_case: bool) -> None:
    when = datetime(2026, 5, 1, 2, 3, 4, tzinfo=UTC)
    message = kv_event(
        "secret/data/ehpc/trigger/ehpc-hz-1", event_id="ev-1", when=when, camel_case=camel_case
    )
    event = parse_event(json.dumps(message))
    assert event.id == "ev-1"
    assert event.event_type == "kv-v2/data-write"
    assert event.path == "secret/data/ehpc/trigger/ehpc-hz-1"
    assert event.mount_path == "secret/"
    assert event.time == when
    assert mapper.clusters(event) == ["ehpc-hz-1"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"data": {"event_type": "kv-v2/data-write"}}), "no event id"),
        (json.dumps({"id": "x", "type": "*", "data": {}}), "no event type"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(raw: str | bytes, why: str) -> None:
    with pytest.raises(EventParseError, match=why):
        parse_event(raw)


def test_a_message_without_time_or_path_still_parses() -> None:
    message = kv_event("secret/data/ehpc/trigger/ehpc-hz-1")
    del message["time"]
    del message["data"]["event"]["metadata"]["path"]
    event = parse_event(json.dumps(message))
    assert event.time is None
    assert event.path == "secret/data/ehpc/trigger/ehpc-hz-1"  # from data_path
    assert mapper.clusters(event) == ["ehpc-hz-1"]


@pytest.mark.parametrize(
    ("path", "mount", "expected"),
    [
        ("secret/data/ehpc/trigger/ehpc-hz-2", "secret/", ["ehpc-hz-2"]),
        ("data/ehpc/trigger/ehpc-hz-2", "secret/", ["ehpc-hz-2"]),  # path without the mount
        ("secret/metadata/ehpc/trigger/new-cluster", "secret/", ["new-cluster"]),
        ("secret/data/ehpc/vnc/ehpc-hz-2", "secret/", []),  # not the trigger path
        ("secret/data/ehpc/trigger/a/b", "secret/", []),  # nested: not a cluster id
        ("secret/data/ehpc/trigger/", "secret/", []),
        ("other/data/ehpc/trigger/ehpc-hz-2", "other/", []),  # another mount
    ],
)
def test_kv_paths_map_to_clusters(path: str, mount: str, expected: list[str]) -> None:
    event = parse_event(json.dumps(kv_event(path, mount=mount)))
    assert mapper.clusters(event) == expected


def test_data_delete_events_map_too() -> None:
    message = kv_event("secret/data/ehpc/trigger/ehpc-sh-9", event_type="kv-v2/data-delete")
    assert mapper.clusters(parse_event(json.dumps(message))) == ["ehpc-sh-9"]


def test_lease_events_map_to_known_clusters_in_the_lease_id() -> None:
    expired = parse_event(json.dumps(lease_event("database/creds/ehpc-sh-9/AbCdEf")))
    assert mapper.clusters(expired) == ["ehpc-sh-9"]
    unrelated = parse_event(json.dumps(lease_event("database/creds/web/AbCdEf")))
    assert mapper.clusters(unrelated) == []


def test_recent_ids_drop_repeats_and_stay_bounded() -> None:
    recent = RecentIds(size=3)
    assert not recent.seen("a")
    assert recent.seen("a")
    for name in ("b", "c", "d"):
        assert not recent.seen(name)
    assert not recent.seen("a")  # evicted: the LRU holds at most 3
    assert recent.seen("d")


def test_deeply_nested_messages_are_refused_not_a_recursion_error() -> None:
    raw = "[" * 100_000 + "]" * 100_000
    with pytest.raises(EventParseError, match="nested deeper"):
        parse_event(raw)
    nested = json.dumps({"id": "e-1", "data": {"event_type": "x", "deep": [[[[[[[[1]]]]]]]]}})
    assert parse_event(nested).id == "e-1"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.0.0+ent", ["kv-v2/data-write", "lease/expired", "lease/revoked"]),
        ("2.1.3+ent.hsm", ["kv-v2/data-write", "lease/expired", "lease/revoked"]),
        ("1.19.2+ent", ["kv-v2/data-write"]),
        ("2.2.0", ["kv-v2/data-write"]),  # OpenBao 2.x / Vault CE: no lease events
        ("", ["kv-v2/data-write"]),
        ("garbage+ent", ["kv-v2/data-write"]),
    ],
)
def test_lease_events_are_subscribed_on_vault_enterprise_2_and_later(
    version: str, expected: list[str]
) -> None:
    from rotator.serve.events import with_lease_events

    assert with_lease_events(["kv-v2/data-write"], version) == expected
    assert with_lease_events([], version) == []  # events switched off stay off
