"""After a rotation: does a VNC client get in with the new password? (issue 13, opt-in)

    verification = Verification(verifier, hosts={"ehpc-hz-1": "10.0.0.5"})
    outcome = await verification.check(outcome, target, ctx)   # sets outcome.verified

The engine knows the check only through :class:`PasswordVerifier` (``rotator.verify`` provides
the RFB one; the runtime wires it in), so the engine core imports no network client for it.

Runs once per rotated cluster, after the commit: the password it checks is the one Vault now
holds as current. Never retried and never rolled back: a refused password stays in Vault
(it is what the API accepted), the outcome says ``verify_failed`` and the run is PartFailure.
Where ``{host}`` comes from, first found wins: the cluster's ``vnc_host`` in the config, then
in its root secret in Vault, then the first login node ListClusters reports for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import structlog

from rotator.engine.report import ClusterOutcome, Outcome, Verified
from rotator.engine.rotation import RotationContext, Target
from rotator.errors import ApiError, VaultError
from rotator.secret import Secret

__all__ = ["PasswordVerifier", "Verification", "VerificationHooks", "VerifyCheck"]

log = structlog.get_logger("rotator.engine")


class VerifyCheck(Protocol):
    """A verifier's answer (``rotator.verify.VerifyResult`` is one)."""

    @property
    def status(self) -> str: ...

    @property
    def code(self) -> str | None: ...

    @property
    def message(self) -> str | None: ...


class PasswordVerifier(Protocol):
    """Checks one password where it is used; one attempt, bounded time, never raises."""

    @property
    def needs_host(self) -> bool: ...

    async def verify(
        self, *, cluster_id: str, region: str, host: str | None, password: Secret
    ) -> VerifyCheck: ...


@runtime_checkable
class VerificationHooks(Protocol):
    """Optional extra of a run's Hooks (the daemon's metrics): told every check's result."""

    def verification(self, outcome: ClusterOutcome) -> None: ...


@dataclass(slots=True)
class Verification:
    verifier: PasswordVerifier
    hosts: Mapping[str, str] = field(default_factory=dict)
    """``vnc_host`` per cluster id, from the config."""
    _login_nodes: dict[str, asyncio.Task[dict[str, str]]] = field(default_factory=dict)

    async def check(
        self, outcome: ClusterOutcome, target: Target, ctx: RotationContext
    ) -> ClusterOutcome:
        """``outcome`` with its ``verified`` field set; only a ``rotated`` cluster is checked."""
        if outcome.outcome is not Outcome.ROTATED:
            return outcome
        with structlog.contextvars.bound_contextvars(cluster_id=outcome.cluster_id):
            result = await self._check(outcome, target, ctx)
            log_level = {
                Verified.VERIFIED: log.info,
                Verified.UNVERIFIED: log.warning,
                Verified.VERIFY_FAILED: log.error,
            }.get(result.verified, log.info)
            log_level(
                "vnc_verification",
                verified=result.verified.value,
                code=result.verify_code,
                detail=result.verify_message,
            )
            if result.verified is Verified.VERIFY_FAILED:
                await _leave_failed(result, ctx)
        if isinstance(ctx.hooks, VerificationHooks):
            ctx.hooks.verification(result)
        return result

    async def _check(
        self, outcome: ClusterOutcome, target: Target, ctx: RotationContext
    ) -> ClusterOutcome:
        try:
            # The committed record only: one Vault request, the password readers now get.
            state = await ctx.store.read_vnc(outcome.cluster_id, pending=False)
        except VaultError as exc:
            return _with(outcome, Verified.UNVERIFIED, exc.code, "cannot read the new password")
        if state.password is None:
            return _with(outcome, Verified.UNVERIFIED, "NoPassword", "Vault holds no password")
        host = await self._host(outcome, target, ctx) if self.verifier.needs_host else None
        try:
            result = await self.verifier.verify(
                cluster_id=outcome.cluster_id,
                region=outcome.region,
                host=host,
                password=state.password,
            )
        except Exception as exc:  # a verifier bug must not turn a rotation into a crash
            log.exception("verifier_crashed")
            return _with(outcome, Verified.UNVERIFIED, "VerifierError", type(exc).__name__)
        return _with(outcome, Verified(result.status), result.code, result.message)

    async def _host(self, outcome: ClusterOutcome, target: Target, ctx: RotationContext) -> str:
        configured = self.hosts.get(outcome.cluster_id)
        if configured:
            return configured
        root = target.root
        if root is None:
            try:
                root = await ctx.store.read_root(outcome.cluster_id)
            except VaultError:
                root = None
        if root is not None and root.vnc_host:
            return root.vnc_host
        return (await self._login_nodes_of(outcome.region, ctx)).get(outcome.cluster_id, "")

    async def _login_nodes_of(self, region: str, ctx: RotationContext) -> dict[str, str]:
        """One ListClusters per region per run, shared by every cluster that needs it."""
        task = self._login_nodes.get(region)
        if task is None:
            task = asyncio.ensure_future(_list_login_nodes(region, ctx))
            self._login_nodes[region] = task
        return await asyncio.shield(task)


async def _leave_failed(result: ClusterOutcome, ctx: RotationContext) -> None:
    """Vault's password does not open the cluster's VNC: mark the cluster ``failed`` so the
    next ``rotate`` (due semantics) and the daemon's schedule rotate it again, as the message
    says. Best effort: the outcome already says verify_failed."""
    try:
        await ctx.store.update_status(
            result.cluster_id,
            status="failed",
            last_error_code=result.verify_code or "VerifyFailed",
        )
    except VaultError as exc:
        log.warning("vault_bookkeeping_failed", code=exc.code)


async def _list_login_nodes(region: str, ctx: RotationContext) -> dict[str, str]:
    try:
        clusters = await ctx.api.list_clusters(region)
    except ApiError as exc:
        log.warning("login_nodes_unknown", region=region, code=exc.code)
        return {}
    return {c.id: c.login_node for c in clusters if c.login_node}


def _with(
    outcome: ClusterOutcome, verified: Verified, code: str | None, message: str | None
) -> ClusterOutcome:
    return replace(outcome, verified=verified, verify_code=code, verify_message=message)
