"""Baselines: what a user would write today with the official SDK and hvac.

    python -m bench.contender_sdk SPEC.json      # spec.mode: "loop" or "gather"

``loop``: for each cluster, read the root password with hvac (blocking, on the event loop, as
most scripts do), call ``modify_visual_service_passwd_with_options_async`` of the official
E-HPC SDK, store the new password with hvac. ``gather``: the same per cluster, but all clusters
under ``asyncio.gather`` with a semaphore of rotator's concurrency and the hvac calls in
``asyncio.to_thread``. The SDK trusts the simulator's CA through ``RuntimeOptions(ca=...)``,
hvac OpenBao's through ``verify=<ca>``. Which CA store the SDK's per-call
``ssl.create_default_context()`` loads besides is the orchestrator's choice (``SSL_CERT_FILE``).

Any exception of one cluster (the SDK's ``UnretryableException`` on a connect timeout, a Vault
error) is that cluster's failure, counted by exception name; the run goes on. The measured
window is marked on stderr (:data:`bench.spec.MARK_START`, :data:`bench.spec.MARK_END`) so the
orchestrator measures every contender's CPU the same way, from outside.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hvac
from alibabacloud_ehpc20180412 import models as ehpc_models
from alibabacloud_ehpc20180412.client import Client
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_util.models import RuntimeOptions

from bench.measure import LagProbe, Meter, peak_rss_mb
from bench.spec import MARK_END, MARK_START, Result, Spec

__all__ = ["Baseline", "main", "new_password"]

_ALNUM = string.ascii_letters + string.digits


def new_password() -> str:
    """6 letters and digits with at least one of each: the API's rule."""
    while True:
        value = "".join(secrets.choice(_ALNUM) for _ in range(6))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def _failure_code(exc: Exception) -> str:
    """The API's code when the SDK has one, else the exception's name (never its text)."""
    if isinstance(exc, AlibabaCloudException) and exc.code:
        return str(exc.code)
    return type(exc).__name__


class Baseline:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.sdk = Client(
            Config(
                access_key_id=spec.access_key_id,
                access_key_secret=_read(spec.access_key_secret_file),
                endpoint=spec.sim_base_url.split("://", 1)[1],
                protocol="https",
                connect_timeout=5000,
                read_timeout=15000,
            )
        )
        self.options = RuntimeOptions(ca=spec.sim_ca)
        self.vault = hvac.Client(
            url=spec.vault_addr, token=_read(spec.vault_token_file), verify=spec.vault_ca
        )
        self.vault_ops = 0

    def read_root(self, cluster_id: str) -> tuple[str, str]:
        self.vault_ops += 1
        response: dict[str, Any] = self.vault.secrets.kv.v2.read_secret_version(
            path=f"{self.spec.root_path}/{cluster_id}",
            mount_point="secret",
            raise_on_deleted_version=True,
        )
        data = response["data"]["data"]
        return str(data.get("user") or "root"), str(data["password"])

    def store(self, cluster_id: str, password: str, request_id: str) -> None:
        self.vault_ops += 1
        self.vault.secrets.kv.v2.create_or_update_secret(
            path=f"{self.spec.vnc_path}/{cluster_id}",
            secret={
                "password": password,
                "rotated_at": datetime.now(UTC).isoformat(),
                "request_id": request_id,
            },
            mount_point="secret",
        )

    async def change(self, cluster_id: str, user: str, root: str, password: str) -> str:
        request = ehpc_models.ModifyVisualServicePasswdRequest(
            cluster_id=cluster_id, runas_user=user, runas_user_password=root, passwd=password
        )
        response = await self.sdk.modify_visual_service_passwd_with_options_async(
            request, self.options
        )
        return str(response.body.request_id)

    async def one_blocking(self, cluster_id: str) -> str | None:
        try:
            user, root = self.read_root(cluster_id)
            password = new_password()
            request_id = await self.change(cluster_id, user, root, password)
            self.store(cluster_id, password, request_id)
        except Exception as exc:  # any failure is this cluster's, counted by name
            return _failure_code(exc)
        return None

    async def one_threaded(self, cluster_id: str) -> str | None:
        try:
            user, root = await asyncio.to_thread(self.read_root, cluster_id)
            password = new_password()
            request_id = await self.change(cluster_id, user, root, password)
            await asyncio.to_thread(self.store, cluster_id, password, request_id)
        except Exception as exc:  # any failure is this cluster's, counted by name
            return _failure_code(exc)
        return None

    async def run(self) -> list[str | None]:
        ids = self.spec.cluster_ids
        if self.spec.mode == "loop":
            return [await self.one_blocking(cluster_id) for cluster_id in ids]
        limit = asyncio.Semaphore(self.spec.concurrency)

        async def bounded(cluster_id: str) -> str | None:
            async with limit:
                return await self.one_threaded(cluster_id)

        return list(await asyncio.gather(*(bounded(c) for c in ids)))


def _mark(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(spec: Spec) -> Result:
    probe = LagProbe()
    async with probe.running():
        _mark(MARK_START)
        with Meter() as meter:
            baseline = Baseline(spec)
            codes = await baseline.run()
            baseline.vault.adapter.close()
        _mark(MARK_END)
    tally = Counter(code for code in codes if code is not None)
    failed = sum(tally.values())
    return Result(
        name=spec.name,
        clusters=len(codes),
        ok=len(codes) - failed,
        failed=failed,
        codes=dict(tally),
        wall_s=meter.wall_s,
        cpu_s=meter.cpu_s,
        peak_rss_mb=peak_rss_mb(),
        lag_max_ms=probe.worst_ms,
        lag_p99_ms=probe.p99_ms,
        started_at=meter.started_at,
        finished_at=meter.finished_at,
        vault_ops=baseline.vault_ops,
        phases={"rotate": meter.wall_s},
    )


def main() -> int:
    spec = Spec.load(Path(sys.argv[1]))
    print(Result.to_json_line(asyncio.run(run(spec))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
