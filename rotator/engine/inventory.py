"""Which clusters a run covers: from the config file, from Vault, or discovered with ListClusters.

    targets = await resolve_targets(runtime, Selection(all=True, regions=["cn-hangzhou"]))

A cluster that ListClusters reports as not running becomes ``skipped`` in the run, not failed.
With a vault or config inventory, ListClusters is asked too (``inventory.check_status``): a
stopped cluster then costs neither an API call (the quota is per region) nor a Vault write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from rotator.engine.rotation import Target
from rotator.errors import ApiError, ConfigError, RetryClass, VaultError

if TYPE_CHECKING:
    from rotator.engine.runtime import Runtime

__all__ = ["Selection", "resolve_targets"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Selection:
    all: bool = False
    clusters: Sequence[str] = field(default_factory=list)
    regions: Sequence[str] = field(default_factory=list)
    exclude: Sequence[str] = field(default_factory=list)
    discover: bool = False

    def check(self) -> None:
        if not self.all and not self.clusters and not self.regions:
            raise ConfigError(
                "say which clusters: --all, --region REGION or --cluster ID (repeatable)"
            )
        if self.all and self.clusters:
            raise ConfigError("--all and --cluster exclude each other")


async def resolve_targets(
    runtime: Runtime, selection: Selection, *, statuses: bool = True
) -> list[Target]:
    """The targets of a run, in a stable order, filters applied; with ``statuses`` (and
    ``inventory.check_status``) each with its status from ListClusters."""
    settings = runtime.settings
    source = "discover" if selection.discover else settings.inventory.source
    periods: dict[str, float | None] = {
        c.id: c.period for c in settings.inventory.clusters if c.period
    }
    if source == "config":
        found = [
            Target(cluster_id=c.id, region=c.region, period=c.period)
            for c in settings.inventory.clusters
        ]
    elif source == "discover":
        regions = list(selection.regions) or list(settings.ehpc.regions)
        if not regions:
            raise ConfigError("--discover needs regions: set ehpc.regions or pass --region")
        listed = await asyncio.gather(*(runtime.api.list_clusters(r) for r in regions))
        found = [
            Target(cluster_id=c.id, region=c.region, status=c.status, period=periods.get(c.id))
            for clusters in listed
            for c in clusters
        ]
    else:
        found = await _from_vault(runtime, periods)
    wanted = set(selection.clusters)
    if wanted:
        known = {t.cluster_id for t in found}
        missing = sorted(wanted - known)
        # An explicitly named cluster is rotated even if the inventory does not list it; its
        # root credential in Vault says where it lives. One without is refused up front (as
        # the webhook answers 422), before anything rotates: a typo must not look like a failure.
        unknown: list[str] = []
        found += await _from_vault(runtime, periods, only=missing, unknown=unknown)
        if unknown:
            vault = runtime.settings.vault
            raise ConfigError(
                f"unknown cluster(s) {', '.join(sorted(unknown))}: not in the inventory and no "
                f"root credential at {vault.kv_mount}/{vault.root_path}/<id>",
                key="--cluster",
            )
        found = [t for t in found if t.cluster_id in wanted]
    excluded = set(selection.exclude) | set(settings.inventory.exclude)
    only_regions = set(selection.regions)
    chosen = [
        t
        for t in found
        if t.cluster_id not in excluded and (not only_regions or t.region in only_regions)
    ]
    if statuses and source != "discover" and settings.inventory.check_status:
        chosen = await _with_status(runtime, chosen)
    return sorted(chosen, key=lambda t: (t.region, t.cluster_id))


async def _with_status(runtime: Runtime, targets: list[Target]) -> list[Target]:
    """The targets with the status ListClusters gives them, asked once per region. A region
    whose list fails keeps its statuses unknown: those clusters are tried as before, and the
    API refuses a stopped one (``InvalidClusterStatus``), so nothing is lost but a call."""
    regions = sorted({t.region for t in targets if t.region})
    listed = await asyncio.gather(
        *(runtime.api.list_clusters(region) for region in regions), return_exceptions=True
    )
    status: dict[str, str] = {}
    for region, answer in zip(regions, listed, strict=True):
        if isinstance(answer, ApiError):
            log.warning(
                "cluster_status_unknown",
                region=region,
                code=answer.code,
                detail=answer.message,
                hint="grant ehpc:ListClusters, or set inventory.check_status = false",
            )
            continue
        if isinstance(answer, BaseException):
            raise answer
        status.update((c.id, c.status) for c in answer)
    return [replace(t, status=status.get(t.cluster_id)) for t in targets]


async def _from_vault(
    runtime: Runtime,
    periods: Mapping[str, float | None],
    *,
    only: Sequence[str] | None = None,
    unknown: list[str] | None = None,
) -> list[Target]:
    """Clusters with a root credential in Vault; the region comes from that credential.

    With ``unknown``, a cluster that has no root credential at all is listed there instead.
    """
    store = runtime.store
    ids = list(only) if only is not None else await store.list_root_clusters()
    limit = asyncio.Semaphore(runtime.settings.vault.max_workers)

    async def one(cluster_id: str) -> Target | None:
        async with limit:
            try:
                root = await store.read_root(cluster_id)
            except VaultError as exc:
                if exc.retry_class is not RetryClass.TERMINAL:
                    raise  # Vault is down: the run cannot start at all
                if unknown is not None and exc.code == "RootCredentialMissing":
                    unknown.append(cluster_id)
                    return None
                # The rotation reports it for this cluster; the rest of the run goes on.
                return Target(cluster_id=cluster_id, region="", period=periods.get(cluster_id))
        return Target(
            cluster_id=cluster_id,
            region=root.region or "",
            period=periods.get(cluster_id),
            root=root,
        )

    return [t for t in await asyncio.gather(*(one(i) for i in ids)) if t is not None]
