"""The simulator's flow control, as arithmetic: windows of any length, per action/region/account."""

from __future__ import annotations

import pytest

from rotator.sim.config import ACTIONS, FaultConfig
from rotator.sim.quotas import QuotaBook, parse_quotas

MODIFY = "ModifyVisualServicePasswd"


def test_a_per_minute_window_counts_100_calls_then_refuses_until_the_minute_ends() -> None:
    book = QuotaBook()
    quota = parse_quotas({MODIFY: "100/60s"}, actions=ACTIONS)
    start = 1_800_000_000.0  # a multiple of 60: a window starts here
    for call in range(100):
        assert book.admit(quota, MODIFY, "cn-hangzhou", now=start + call * 0.5) is None
    refusal = book.admit(quota, MODIFY, "cn-hangzhou", now=start + 50.25)
    assert refusal is not None
    assert refusal.retry_after_ms == 9750
    assert refusal.reset == start + 60
    assert refusal.headers() == {
        "x-acs-retry-after": "9750",
        "x-ratelimit-user-api": f"Limit:100,Remain:0,TimeLeft:9750,Reset:{int(start) + 60}",
        "x-ratelimit-user": f"Limit:100,Remain:0,TimeLeft:9750,Reset:{int(start) + 60}",
    }
    # Another region endpoint has its own count; the next minute starts afresh.
    assert book.admit(quota, MODIFY, "cn-beijing", now=start + 59.0) is None
    assert book.admit(quota, MODIFY, "cn-hangzhou", now=start + 60.0) is None


def test_an_account_rule_counts_every_region_together_and_a_region_rule_one_region() -> None:
    book = QuotaBook()
    quota = parse_quotas({f"{MODIFY}@account": "3/10s", "*@cn-beijing": "1/10s"}, actions=ACTIONS)
    now = 1_800_000_000.0
    assert book.admit(quota, MODIFY, "cn-beijing", now=now) is None
    refused = book.admit(quota, "ListClusters", "cn-beijing", now=now)
    assert refused is not None
    assert refused.rule.key == "*@cn-beijing"
    assert book.admit(quota, MODIFY, "cn-hangzhou", now=now) is None
    assert book.admit(quota, MODIFY, "cn-shanghai", now=now) is None
    refused = book.admit(quota, MODIFY, "cn-hangzhou", now=now + 1)
    assert refused is not None
    assert refused.rule.key == f"{MODIFY}@account"
    assert book.admit(quota, "ListClusters", "cn-hangzhou", now=now + 1) is None


def test_a_refused_call_does_not_count() -> None:
    book = QuotaBook()
    quota = parse_quotas({"*": "1/1s", MODIFY: "5/1s"}, actions=ACTIONS)
    now = 1_800_000_000.0
    assert book.admit(quota, MODIFY, "r", now=now) is None
    for _ in range(10):
        assert book.admit(quota, MODIFY, "r", now=now + 0.1) is not None
    assert book.admit(quota, MODIFY, "r", now=now + 1.0) is None


@pytest.mark.parametrize(
    ("key", "rate", "message"),
    [
        ("DeleteCluster", "1/1s", "expected ACTION"),
        (f"{MODIFY}@", "1/1s", "expected ACTION"),
        (f"{MODIFY}@Bad Region", "1/1s", "expected ACTION"),
        (MODIFY, "fast", "is not a rate"),
        (MODIFY, "0/1s", "at least one call"),
    ],
)
def test_bad_quotas_are_refused_naming_the_rule(key: str, rate: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultConfig(quotas={key: rate})


def test_qps_limit_is_the_older_form_of_an_account_quota_per_second() -> None:
    config = FaultConfig(qps_limit={"ListClusters": 2}, quotas={MODIFY: "20/10s"})
    assert {(r.key, r.rate) for r in config.quota_rules()} == {
        ("ListClusters@account", "2/1s"),
        (MODIFY, "20/10s"),
    }
    assert hash(config) == hash(
        FaultConfig(qps_limit={"ListClusters": 2}, quotas={MODIFY: "20/10s"})
    )
    assert config.to_json()["quotas"] == {MODIFY: "20/10s"}
