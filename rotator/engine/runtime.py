"""Wiring: from :class:`~rotator.config.Settings` to live clients, and one rotation run.

    async with open_runtime(settings) as runtime:
        targets = await resolve_targets(runtime, Selection(all=True))
        summary = await runtime.rotate(targets, run_id=new_run_id(), stop=stop)

Everything that touches the network is created here, once per process: one pooled HTTP session
for the API, one bounded thread pool for Vault.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from rotator.config import Settings
from rotator.ehpc.client import EhpcClient, Endpoints, Timeouts
from rotator.ehpc.credentials import (
    CredentialProvider,
    DefaultChainCredentials,
    FileCredentials,
    StaticCredentials,
)
from rotator.engine.batch import FailureThreshold, run_batch
from rotator.engine.passwd_guard import PasswdRejections
from rotator.engine.ports import Hooks, NoHooks
from rotator.engine.ratelimit import RegionLimiter, limiter_from
from rotator.engine.report import RunSummary
from rotator.engine.retry import RetryPolicy
from rotator.engine.rotation import RotationContext, Target
from rotator.engine.verification import Verification
from rotator.errors import ConfigError, VaultError
from rotator.passwords import (
    LocalPasswordSource,
    PasswordSource,
    VaultPasswordSource,
    rule_named,
    rule_of,
    verify,
)
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.settings import VaultSettings
from rotator.vault.store import VaultStore
from rotator.verify import RfbVerifier

__all__ = ["Runtime", "new_run_id", "open_runtime", "validate_settings"]

log = structlog.get_logger("rotator.engine")


def new_run_id() -> str:
    """Sortable by time, unique across replicas: ``20261129T021500Z-3f9a1c``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def credentials_from(settings: Settings) -> CredentialProvider:
    creds = settings.credentials
    if creds.source == "static":
        return FileCredentials(
            creds.access_key_id, creds.access_key_secret_file, creds.security_token_file
        )
    return DefaultChainCredentials()


def endpoints_from(settings: Settings) -> Endpoints:
    ehpc = settings.ehpc
    endpoints = Endpoints(
        template=ehpc.endpoint_template,
        overrides=dict(ehpc.endpoints),
        single=ehpc.endpoint or None,
        allow_insecure_http=ehpc.allow_insecure_http,
    )
    endpoints.validate(list(ehpc.regions) or ["cn-hangzhou"])
    return endpoints


def verification_from(settings: Settings) -> Verification | None:
    """The VNC check of issue 13, or None when ``verify.enabled`` is off."""
    verify = settings.verify
    if not verify.enabled:
        return None
    ca_bundle = Path(verify.ca_bundle) if verify.ca_bundle else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError(f"{ca_bundle} is not a file", key="verify.ca_bundle")
    try:
        verifier = RfbVerifier(url_template=verify.url, timeout=verify.timeout, ca_bundle=ca_bundle)
    except ValueError as exc:
        raise ConfigError(str(exc), key="verify.url") from None
    hosts = {c.id: c.vnc_host for c in settings.inventory.clusters if c.vnc_host}
    return Verification(verifier, hosts=hosts)


def validate_settings(settings: Settings) -> None:
    """Everything ``open_runtime`` would refuse, checked without touching the network (for a
    config reload that must not replace a working runtime with a broken one)."""
    endpoints_from(settings)
    limiter_from(settings.ehpc)
    FailureThreshold.parse(settings.rotation.max_failures, 1)
    credentials_from(settings)
    verification_from(settings)
    VaultSettings.from_config(settings.vault)
    if settings.ehpc.ca_bundle:
        EhpcClient(  # builds (and so checks) the TLS context; opens no connection
            credentials=StaticCredentials("check", Secret("check")),
            endpoints=Endpoints(),
            ca_bundle=Path(settings.ehpc.ca_bundle),
        )


@dataclass(slots=True)
class Runtime:
    settings: Settings
    api: EhpcClient
    vault: VaultClient
    store: VaultStore
    passwords: PasswordSource
    limiter: RegionLimiter
    retry: RetryPolicy
    hooks: Hooks = field(default_factory=NoHooks)
    owner: str = field(default_factory=lambda: f"rotator-{secrets.token_hex(4)}")
    verification: Verification | None = None
    """The VNC check after each rotation (``verify.enabled``)."""
    credentials: CredentialProvider | None = None
    """What signs the API calls (None: not known here, nothing to check)."""

    async def check_credentials(self) -> None:
        """Resolve the Alibaba Cloud credentials once, before any cluster is staged.

        Without them every cluster would stage a pending password that no API call can apply;
        this raises the :class:`~rotator.errors.ApiError` (``CredentialsUnavailable``) instead,
        with nothing written to Vault.
        """
        if self.credentials is not None:
            await self.credentials.get()

    def context(self, *, run_id: str, not_before: datetime | None = None) -> RotationContext:
        rotation = self.settings.rotation
        return RotationContext(
            api=self.api,
            store=self.store,
            passwords=self.passwords,
            limiter=self.limiter,
            retry=self.retry,
            owner=f"{self.owner}/{run_id}",
            not_before=not_before or datetime.now(UTC),
            period=rotation.period,
            cluster_deadline=rotation.cluster_deadline,
            # Renewed when half is gone, so half must still cover one whole API call.
            claim_ttl=max(
                rotation.claim_ttl,
                2 * (self.settings.ehpc.request_timeout + self.settings.ehpc.connect_timeout + 5.0),
            ),
            hooks=self.hooks,
            passwd_rejections=PasswdRejections(rule_of(self.passwords)),
        )

    async def rotate(
        self,
        targets: Iterable[Target],
        *,
        run_id: str,
        stop: asyncio.Event | None = None,
        max_failures: str | None = None,
        concurrency: int | None = None,
        trigger: str = "manual",
        not_before: datetime | None = None,
        skip_not_due: bool = False,
    ) -> RunSummary:
        """One batch run; the report is stored in Vault at ``<runs_path>/<run_id>``.

        ``skip_not_due``: rotate only clusters that are due (``rotator rotate`` without
        ``--force``); the others are ``skipped`` with code ``NotDue``.
        """
        chosen = list(targets)
        threshold = FailureThreshold.parse(
            self.settings.rotation.max_failures if max_failures is None else max_failures,
            len(chosen),
        )
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            log.info("run_started", clusters=len(chosen), trigger=trigger)
            context = self.context(run_id=run_id, not_before=not_before)
            try:
                summary = await run_batch(
                    chosen,
                    context,
                    run_id=run_id,
                    concurrency=concurrency or self.settings.rotation.concurrency,
                    max_failures=threshold,
                    stop=stop,
                    trigger=trigger,
                    verification=self.verification,
                    skip_not_due=skip_not_due,
                    vault_failure_limit=self.settings.rotation.vault_failure_limit or None,
                )
            finally:
                # Shielded commits outlive a cancelled run: let them land before the clients
                # are closed under them.
                await context.drain()
        try:
            await self.store.write_run_report(run_id, summary.to_vault_record())
        except VaultError as exc:
            log.error("run_report_not_stored", code=exc.code, detail=exc.message, run_id=run_id)
        return summary


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    credentials: CredentialProvider | None = None,
    check_passwords: bool = True,
    hooks: Hooks | None = None,
) -> AsyncIterator[Runtime]:
    """Build every client from the settings; fail fast on configuration errors."""
    ehpc = settings.ehpc
    endpoints = endpoints_from(settings)
    FailureThreshold.parse(settings.rotation.max_failures, 1)  # a typo fails now, not mid-run
    limiter = limiter_from(ehpc)
    verification = verification_from(settings)
    vault = VaultClient(VaultSettings.from_config(settings.vault))
    provider = credentials or credentials_from(settings)
    api = EhpcClient(
        credentials=provider,
        endpoints=endpoints,
        timeouts=Timeouts(connect=ehpc.connect_timeout, total=ehpc.request_timeout),
        ca_bundle=Path(ehpc.ca_bundle) if ehpc.ca_bundle else None,
        max_connections=ehpc.max_connections,
        method=ehpc.method,
    )
    try:
        store = VaultStore(vault)
        rule = rule_named(settings.passwords.rule)
        source: PasswordSource = (
            VaultPasswordSource(store, settings.passwords.policy, rule=rule)
            if settings.passwords.source == "vault"
            else LocalPasswordSource(
                exclude_lookalikes=settings.passwords.exclude_lookalikes, rule=rule
            )
        )
        if check_passwords:
            await verify(source)
        yield Runtime(
            settings=settings,
            api=api,
            vault=vault,
            store=store,
            passwords=source,
            limiter=limiter,
            retry=RetryPolicy.from_settings(settings.retry),
            hooks=hooks or NoHooks(),
            verification=verification,
            credentials=provider,
        )
    finally:
        await api.aclose()
        await vault.aclose()
