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
