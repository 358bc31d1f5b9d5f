"""The bench's own logic, without servers: failures are counted, never a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

from darabonba.exceptions import UnretryableException
from darabonba.policy.retry import RetryPolicyContext

from bench.contender_sdk import Baseline
from bench.spec import Spec


def _spec(tmp_path: Path) -> Spec:
    secret = tmp_path / "secret"
    secret.write_text("not-a-real-secret", encoding="utf-8")
    return Spec(
        name="sdk",
        vault_addr="https://127.0.0.1:1",
        vault_ca=str(tmp_path / "ca.pem"),
        vault_token_file=str(secret),
        sim_base_url="https://127.0.0.1:1",
        sim_ca=str(tmp_path / "ca.pem"),
        access_key_id="id",
        access_key_secret_file=str(secret),
        regions=["cn-hangzhou"],
        cluster_ids=["c1", "c2"],
        mode="gather",
    )


class _Failing(Baseline):
    """The SDK's connect timeout surfaces as darabonba's UnretryableException."""

    def read_root(self, cluster_id: str) -> tuple[str, str]:
        return "root", "x"

    async def change(self, cluster_id: str, user: str, root: str, password: str) -> str:
        raise UnretryableException(RetryPolicyContext(retries_attempted=1))

    def store(self, cluster_id: str, password: str, request_id: str) -> None:
        raise AssertionError("not reached")


def test_an_sdk_exception_outside_alibabacloud_exception_is_a_failed_rotation(
    tmp_path: Path,
) -> None:
    codes = asyncio.run(_Failing(_spec(tmp_path)).run())
    assert codes == ["UnretryableException", "UnretryableException"]


def test_quota_windows_count_use_and_overruns() -> None:
    from bench.quota import Quota, analyse_quota

    quota = Quota.parse("10/5s")
    # 2 calls a second for 8 s: every full 5-s window holds 10, the quota exactly.
    steady = {str(1000 + s): 2 for s in range(8)}
    # A burst of 10, then 3 more 4 s later: one window holds 13.
    bursty = {"1000": 10, "1004": 3, "1007": 1}
    check = analyse_quota({"a": steady, "b": bursty}, quota=quota, throttled=0)
    a, b = check.regions
    assert (a.busiest_full_window, a.max_in_window, a.over_quota_windows) == (10, 10, 0)
    assert (b.busiest_full_window, b.max_in_window) == (13, 13)
    assert b.over_quota_windows == 1
    assert check.max_in_window == 13
    assert check.utilisation == (10 + 13) / 2 / 10


def test_a_run_shorter_than_one_window_measures_no_utilisation() -> None:
    from bench.quota import Quota, analyse_quota

    check = analyse_quota({"a": {"1000": 3, "1001": 3}}, quota=Quota(100, 60), throttled=0)
    assert check.utilisation is None
    assert check.max_in_window == 6
