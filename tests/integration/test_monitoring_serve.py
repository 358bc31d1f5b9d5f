"""The live daemon's /metrics: build info and a password age per cluster, from Vault at start
and from each rotation after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.vault.devserver import OpenBaoServer
from tests.integration.test_serve import eventually, make_env, running, scrape
from tests.support.sim import SimFactory
from tests.support.vault import VaultPaths

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_metrics_show_build_info_and_each_clusters_password_age(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with make_env(tmp_path, sim_factory, openbao, vault_paths) as env:
        ids = sorted(await env.changes())
        old, never, *recent = ids
        long_ago = datetime.now(UTC) - timedelta(days=25)
        await env.store.update_status(
            old,
            status="rotated",
            last_rotated_at=long_ago,
            next_rotation_at=datetime.now(UTC) + timedelta(days=5),
        )
        await env.not_due(*recent)  # due later, and no rotation recorded: "never rotated"

        async with running(env.daemon()) as daemon:
            # `never` has no metadata at all, so it is due at once; `old` is not due yet.

            async def rotated() -> bool:
                return (await env.changes())[never] == 1

            await eventually(rotated, what="the never-rotated cluster to rotate", within=60)

            async def both_aged() -> bool:
                found = await scrape(env.session, daemon)
                return ("rotator_password_age_seconds", _labels(never)) in found

            await eventually(both_aged, what="the new password's age in /metrics", within=60)
            samples = await scrape(env.session, daemon)

        assert samples[("rotator_password_age_seconds", _labels(never))] < 600
        age = samples[("rotator_password_age_seconds", _labels(old))]
        assert 25 * 86400 - 60 < age < 25 * 86400 + 600
        assert samples[("rotator_passwords_never_rotated", frozenset())] == len(recent)
        (build,) = [dict(k[1]) for k in samples if k[0] == "rotator_build_info"]
        assert build["version"] == "0.1.0"


def _labels(cluster_id: str) -> frozenset[tuple[str, str]]:
    return frozenset({("cluster_id", cluster_id)})
