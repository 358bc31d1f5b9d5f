"""The hook that makes ``rotator rotate`` (the CronJob, the timer) honour check-out leases.

    owed = await lease_ends_owed(runtime.vault)        # ends expired leases in Vault (CAS)
    targets = with_lease_ends(targets, owed)            # those clusters: rotate unless done since
    summary = await runtime.rotate(targets, ...)
    await settle_lease_ends(runtime.vault, summary, owed)

So leases work without the daemon too, at the schedule's granularity: a cluster whose last lease
ended is rotated by the next run unless a rotation committed after the lease's end already
happened, and the debt recorded in Vault is cleared once paid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog

from rotator.engine.report import Outcome, RunSummary
from rotator.engine.rotation import Target
from rotator.errors import VaultError, VaultPermissionError
from rotator.leases import model
from rotator.leases.vault import LeaseStore
from rotator.vault.client import VaultClient

__all__ = [
    "LeaseState",
    "lease_ends_owed",
    "lease_state",
    "satisfied",
    "settle_lease_ends",
    "with_lease_ends",
]

log = structlog.get_logger("rotator.leases")


def satisfied(outcome: Outcome, code: str | None) -> bool:
    """A cluster's trigger is done: rotated by this run, or by another since the trigger."""
    return outcome is Outcome.ROTATED or (outcome is Outcome.SKIPPED and code == "AlreadyRotated")


@dataclass(frozen=True, slots=True)
class LeaseState:
    """What check-out leases ask of a run."""

    owed: dict[str, datetime] = field(default_factory=dict)
    """Clusters whose last lease ended -> since when: rotate unless done since."""
    held: dict[str, str] = field(default_factory=dict)
    """Clusters with an open lease -> why: their period rotation waits (``--force`` does not)."""


async def lease_state(
    vault: VaultClient, *, now: datetime | None = None, write: bool = True
) -> LeaseState:
    """Every cluster's lease state; with ``write`` expired leases are ended in Vault (CAS),
    without (``plan``) they are only ended in what is returned."""
    store = LeaseStore(vault)
    when = now or datetime.now(UTC)
    try:
        cluster_ids = await store.list_clusters()
    except VaultPermissionError:
        log.warning(
            "leases_unreadable",
            detail=f"the token may not list {store.mount}/{store.leases_path}: re-run "
            "`rotator vault-setup` to update the rotator policy; check-out leases are ignored",
        )
        return LeaseState()
    owed: dict[str, datetime] = {}
    held: dict[str, str] = {}
    for cluster_id in cluster_ids:
        if write:
            doc, _ = await store.update(cluster_id, lambda d: (model.expire(d, when), None))
        else:
            doc = model.expire(await store.read(cluster_id), when)
        if doc.rotation_due is not None:
            owed[cluster_id] = doc.rotation_due
        if (why := doc.held_reason()) is not None:
            held[cluster_id] = why
    if owed:
        log.info("lease_ends_due", clusters=len(owed))
    return LeaseState(owed, held)


async def lease_ends_owed(
    vault: VaultClient, *, now: datetime | None = None
) -> dict[str, datetime]:
    """End expired leases; every cluster that owes a lease-end rotation -> since when."""
    return (await lease_state(vault, now=now)).owed


def with_lease_ends(
    targets: Iterable[Target], owed: dict[str, datetime], held: dict[str, str] | None = None
) -> list[Target]:
    """Each owed cluster's trigger instant is its lease's end (not the run's start); each
    checked-out cluster is held (skipped ``CheckedOut`` unless ``--force``)."""
    held = held or {}
    found: list[Target] = []
    for target in targets:
        changed = target
        if target.cluster_id in owed:
            changed = replace(changed, not_before=owed[target.cluster_id])
        if target.cluster_id in held:
            changed = replace(changed, held=held[target.cluster_id])
        found.append(changed)
    return found


async def settle_lease_ends(
    vault: VaultClient, summary: RunSummary, owed: dict[str, datetime]
) -> None:
    store = LeaseStore(vault)
    for outcome in summary.outcomes:
        due = owed.get(outcome.cluster_id)
        if due is None or not satisfied(outcome.outcome, outcome.code):
            continue

        def paid(doc: model.LeaseDoc, due: datetime = due) -> tuple[model.LeaseDoc, None]:
            return model.rotated(doc, not_before=due), None

        try:
            await store.update(outcome.cluster_id, paid)
        except VaultError as exc:  # the next run sees the debt again and skips as AlreadyRotated
            log.warning("lease_settle_failed", cluster_id=outcome.cluster_id, code=exc.code)
