"""``rotator vault-setup``: prepare Vault/OpenBao for the rotator, safely on a shared Vault.

    async with VaultClient(settings) as client:                # an admin token, not rotator's
        result = await run_setup(client, settings, force=False, dry_run=True)
        print("\\n".join(result.lines()))                       # the plan; nothing changed

What it sets up, in order (each step reads first, and says what it did or would do):

1. the KV version 2 mount (enabled when missing; KV version 1 is refused),
2. the ACL policies ``rotator`` and ``ehpc-vnc-reader`` and the password policy ``ehpc-vnc`` from
   the canonical HCL in ``rotator/data/vault/`` (templates: the configured mount and paths are
   filled in), and with ``events`` the policy ``rotator-events`` for Vault Enterprise event
   notifications,
3. AppRole auth at its mount and the role ``rotator`` (token TTL 1h, secret_id TTL 24h),
4. with ``kubernetes_host``: Kubernetes auth at its mount, its config, and the role ``rotator``
   (bound to one service account, audience ``vault``),
5. ``max_versions`` (``vault.history_versions``) on every VNC secret, so the history is kept.

A shared Vault belongs to other teams too: an existing auth config, role or policy that differs
from what rotator wants is **left as it is** and reported with the differences, unless ``force``.
A policy that rotator itself wrote (its header carries a digest of its text, still intact) is
rotator's and is updated without ``force``. ``dry_run`` reads everything and writes nothing.

:func:`vault_setup` is the short form for scripts and tests: it applies (converging rotator's
own objects, never overwriting someone else's without ``force``) and returns the lines.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import posixpath
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

from rotator.errors import ConfigError, VaultError
from rotator.vault.client import JsonDict, VaultClient
from rotator.vault.settings import VaultSettings

__all__ = [
    "ACL_POLICIES",
    "EVENTS_POLICY",
    "PASSWORD_POLICY_FILE",
    "SetupResult",
    "Step",
    "default_policy_dir",
    "policy_is_ours",
    "render_policy",
    "run_setup",
    "stored_policy_text",
    "vault_setup",
]

ACL_POLICIES = {
    "rotator": "rotator.hcl",
    "ehpc-vnc-reader": "ehpc-vnc-reader.hcl",
    "ehpc-vnc-checkout": "ehpc-vnc-checkout.hcl",  # check-out leases (rotator.leases)
}
"""Policy name -> template file."""
EVENTS_POLICY = ("rotator-events", "rotator-events.hcl")
"""Granted with ``--events``: what a Vault Enterprise event subscription needs."""
PASSWORD_POLICY_FILE = "ehpc-vnc-password.hcl"  # noqa: S105 - a file name, not a password
"""The current rule's; ``passwords.rule`` picks another (``PasswordRule.policy_file``)."""

_PLACEHOLDER = re.compile(
    r"\{(kv_mount|root_path|vnc_path|runs_path|password_policy|leases_path|checkout_path|trigger_path)\}"
)
_DIGEST = re.compile(r"^# rotator-digest: sha256:([0-9a-f]{64})\n", re.MULTILINE)
_HOUR = 3600
_DAY = 24 * _HOUR
_MAX_DIFF_LINES = 20

Action = Literal["unchanged", "create", "update", "differs", "unsupported"]
"""What a step found: in place already; missing; rotator's own and outdated (or forced);
someone else's and different (left alone); refused by this server."""


@dataclass(frozen=True, slots=True)
class Step:
    """One object of the setup and what happened to it."""

    resource: str
    action: Action
    changes: tuple[str, ...] = ()
    """What differs, one line each (``token_ttl: 7200 -> 3600``, or diff lines of a policy)."""
    note: str = ""
    """Said in a dry run, or why a step was not applied."""
    done: str = ""
    """The line once applied (or found in place), when ``<resource> <action>`` reads badly."""

    def lines(self, *, dry_run: bool) -> list[str]:
        if self.action == "unchanged":
            head = self.done or f"{self.resource} unchanged"
        elif self.action == "unsupported":
            head = f"{self.resource} not written: {self.note}"
        elif self.action == "differs":
            head = (
                f"{self.resource} differs from what rotator wants; left as it is "
                "(rerun with --force to overwrite it):"
            )
        elif dry_run:
            head = f"would {self.action} {self.resource}" + (f" ({self.note})" if self.note else "")
        else:
            head = self.done or f"{self.resource} {_DONE[self.action]}"
        return [head, *(f"    {c}" for c in self.changes)]


_DONE = {"create": "created", "update": "updated"}


@dataclass(frozen=True, slots=True)
class SetupResult:
    steps: tuple[Step, ...]
    dry_run: bool

    @property
    def left_alone(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action in ("differs", "unsupported"))

    @property
    def exit_code(self) -> int:
        """0: Vault is (or, in a dry run, would be) as rotator wants; 3: something was left."""
        return 3 if self.left_alone else 0

    def lines(self) -> list[str]:
        out = [line for step in self.steps for line in step.lines(dry_run=self.dry_run)]
        if self.dry_run:
            out.append("dry run: nothing was changed")
        return out


def default_policy_dir() -> Traversable:
    """Where the canonical HCL ships: the package's ``data/vault`` folder."""
    return resources.files("rotator").joinpath("data", "vault")


def render_policy(
    template: str,
    settings: VaultSettings,
    *,
    password_policy: str,
    trigger_path: str = "ehpc/trigger",
) -> str:
    """Fill ``{kv_mount}``, ``{root_path}``, ``{vnc_path}``, ``{runs_path}``,
    ``{password_policy}``, ``{trigger_path}`` in a policy template. Other braces (HCL blocks)
    are left alone, and so are comment lines: they explain the template (a ``sed`` recipe with
    the placeholders), which a substitution would garble into ``s|secret|secret|g``."""
    values = {
        "kv_mount": settings.kv_mount,
        "root_path": settings.root_path,
        "vnc_path": settings.vnc_path,
        "runs_path": settings.runs_path,
        "password_policy": password_policy,
        # Check-out leases live next to the VNC secrets (rotator.leases.vault.lease_paths).
        "leases_path": posixpath.join(posixpath.dirname(settings.vnc_path.strip("/")), "leases"),
        "checkout_path": posixpath.join(
            posixpath.dirname(settings.vnc_path.strip("/")), "checkout"
        ),
        "trigger_path": trigger_path,
    }
    return "".join(
        line
        if line.lstrip().startswith("#")
        else _PLACEHOLDER.sub(lambda m: values[m.group(1)], line)
        for line in template.splitlines(keepends=True)
    )


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def stored_policy_text(rendered: str, values: Mapping[str, str]) -> str:
    """What vault-setup stores: a header naming the values used and a digest of the text, so
    a later run can tell its own unedited policy from one an administrator changed."""
    settings = " ".join(f"{k}={v}" for k, v in values.items())
    return (
        f"# Written by `rotator vault-setup` ({settings}).\n"
        f"# rotator-digest: sha256:{_digest(rendered)}\n"
        f"{rendered}"
    )


def policy_is_ours(text: str) -> bool:
    """Written by vault-setup and unedited since: the digest in its header still matches."""
    match = _DIGEST.search(text)
    return match is not None and _digest(text[match.end() :]) == match.group(1)


def _read(directory: Traversable | Path, name: str) -> str:
    try:
        return directory.joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"policy file {name} not found in {directory}") from None


def _listing(body: JsonDict | None) -> dict[str, Any]:
    """``sys/mounts`` and ``sys/auth`` answer with the table under ``data`` (and, for old
    clients, also at the top level)."""
    body = body or {}
    data = body.get("data")
    return data if isinstance(data, dict) else body


def _same(current: object, wanted: object) -> bool:
    if isinstance(wanted, list) and isinstance(current, list):
        return sorted(map(str, current)) == sorted(map(str, wanted))
    if isinstance(wanted, str) and isinstance(current, str):
        return current.strip() == wanted.strip()
    return current == wanted


def _show(value: object) -> str:
    text = str(value)
    if "\n" in text or len(text) > 60:  # a CA certificate, say
        return f"<{len(text)} characters>"
    return text


@dataclass(slots=True)
class _Run:
    client: VaultClient
    force: bool
    dry_run: bool
    steps: list[Step] = field(default_factory=list)

    async def write(self, do: Callable[[], Awaitable[object]]) -> None:
        if not self.dry_run:
            await do()

    async def ensure_kv_mount(self, mount: str) -> None:
        mounts = _listing(await self.client.read("sys/mounts"))
        entry = mounts.get(f"{mount}/")
        resource = f"KV version 2 at {mount}/"
        if entry is None:
            await self.write(
                lambda: self.client.write(
                    f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}}
                )
            )
            self.steps.append(Step(resource, "create", done=f"enabled KV version 2 at {mount}/"))
            return
        kind = entry.get("type")
        version = str((entry.get("options") or {}).get("version") or "1")
        if kind == "kv" and version == "2":
            self.steps.append(Step(resource, "unchanged", done=f"{resource} exists"))
            return
        if kind == "kv":
            raise ConfigError(
                f"{mount}/ is KV version {version}; rotator needs version 2 (check-and-set, "
                f"versions, metadata). Upgrade it with `bao kv enable-versioning {mount}/` or "
                "choose another vault.kv_mount",
                key="vault.kv_mount",
            )
        raise ConfigError(
            f"{mount}/ is a {kind!r} secrets engine, not KV version 2", key="vault.kv_mount"
        )

    async def ensure_policy(
        self, kind: str, name: str, text: str, *, may_be_unsupported: bool = False
    ) -> bool:
        """Write a policy unless an equal one exists, or someone else's differs (no force).
        Returns whether the policy is (or would be) in place as rotator wants it.

        ``may_be_unsupported``: a server that cannot parse it (the events policy on OpenBao)
        is reported as a step, not raised."""
        path = f"sys/policies/{kind}/{name}"
        existing = await self.client.read(path)
        current = ((existing or {}).get("data") or {}).get("policy")
        label = f"policy {name}" if kind == "acl" else f"password policy {name}"
        method = "PUT" if kind == "acl" else "POST"
        if isinstance(current, str) and current.strip() == text.strip():
            self.steps.append(Step(label, "unchanged"))
            return True
        if isinstance(current, str) and current:
            diff = tuple(
                difflib.unified_diff(
                    current.splitlines(), text.splitlines(), "in Vault", "rotator", lineterm="", n=0
                )
            )
            if len(diff) > _MAX_DIFF_LINES:
                diff = (*diff[:_MAX_DIFF_LINES], f"... {len(diff) - _MAX_DIFF_LINES} more lines")
            if not self.force and not policy_is_ours(current):
                self.steps.append(Step(label, "differs", diff))
                return False
            owner = "forced" if self.force and not policy_is_ours(current) else "rotator's own"
            step = Step(label, "update", diff, note=owner)
        else:
            step = Step(label, "create", done=f"{label} written")
        try:
            await self.write(lambda: self.client.request(method, path, json={"policy": text}))
        except VaultError as exc:
            unparsed = "invalid capability" in exc.message or "invalid key" in exc.message
            if may_be_unsupported and unparsed:
                self.steps.append(Step(label, "unsupported", note=_UNSUPPORTED))
                return False
            raise
        self.steps.append(step)
        return True

    async def ensure_auth(self, kind: str, mount: str) -> None:
        methods = _listing(await self.client.read("sys/auth"))
        entry = methods.get(f"{mount}/")
        resource = f"{kind} auth at auth/{mount}/"
        if entry is None:
            await self.write(lambda: self.client.write(f"sys/auth/{mount}", {"type": kind}))
            self.steps.append(Step(resource, "create", done=f"enabled {resource}"))
            return
        if entry.get("type") != kind:
            raise ConfigError(
                f"auth/{mount}/ is a {entry.get('type')!r} auth method, not {kind}; choose "
                f"another mount path (--{kind}-mount)",
                key=f"vault.{kind}_mount",
            )
        self.steps.append(Step(resource, "unchanged", done=f"{resource} exists"))

    async def ensure_object(
        self,
        path: str,
        desired: Mapping[str, Any],
        label: str,
        *,
        keep_existing: bool = False,
    ) -> None:
        """A role or an auth config: only the keys rotator sets are compared.

        ``keep_existing``: the endpoint replaces the whole object on write (Kubernetes auth
        config), so a forced write carries the existing keys along (issuer, ...).
        """
        existing = await self.client.read(path)
        data: dict[str, Any] = (existing or {}).get("data") or {}
        if existing is None:
            await self.write(lambda: self.client.write(path, desired))
            self.steps.append(Step(label, "create"))
            return
        changes = tuple(
            f"{key}: {_show(data.get(key, '(unset)'))} -> {_show(value)}"
            for key, value in desired.items()
            if not _same(data.get(key), value)
        )
        if not changes:
            self.steps.append(Step(label, "unchanged"))
            return
        if not self.force:
            self.steps.append(Step(label, "differs", changes))
            return
        payload = dict(desired)
        if keep_existing:
            kept = {k: v for k, v in data.items() if not k.endswith("_set") and v not in ("", None)}
            payload = {**kept, **desired}
        await self.write(lambda: self.client.write(path, payload))
        self.steps.append(Step(label, "update", changes))

    async def ensure_history(self, mount: str, vnc_path: str, versions: int, workers: int) -> None:
        """``max_versions`` on each VNC secret: rotator's own data, so no --force needed."""
        keys = [k for k in await self.client.kv_list(mount, vnc_path) if not k.endswith("/")]
        limit = asyncio.Semaphore(workers)

        async def one(key: str) -> bool:
            async with limit:
                meta = await self.client.kv_metadata(mount, f"{vnc_path}/{key}") or {}
                if int(meta.get("max_versions") or 0) == versions:
                    return False
                await self.write(
                    lambda: self.client.write(
                        f"{mount}/metadata/{vnc_path}/{key}", {"max_versions": versions}
                    )
                )
                return True

        changed = sum(await asyncio.gather(*(one(k) for k in keys)))
        resource = f"max_versions {versions} on the VNC secrets under {mount}/{vnc_path}/"
        if changed:
            note = f"{changed} of {len(keys)} secrets"
            self.steps.append(
                Step(resource, "update", note=note, done=f"{resource}: set on {note}")
            )
        else:
            self.steps.append(
                Step(resource, "unchanged", done=f"{resource}: all {len(keys)} secrets have it")
            )


_UNSUPPORTED = (
    "this server does not know the 'subscribe' capability (OpenBao, or Vault before 1.16); "
    "event notifications are a Vault Enterprise feature. rotator serve works without them "
    "(lease expiry, schedule and webhooks)"
)


async def run_setup(
    client: VaultClient,
    settings: VaultSettings,
    *,
    force: bool = False,
    dry_run: bool = False,
    policy_dir: Path | Traversable | None = None,
    password_policy: str = "ehpc-vnc",  # noqa: S107 - a policy name, not a password
    role_name: str = "rotator",
    approle_mount: str | None = None,
    kubernetes_host: str | None = None,
    kubernetes_namespace: str = "rotator",
    kubernetes_service_account: str = "rotator",
    kubernetes_ca_cert: str | None = None,
    kubernetes_mount: str | None = None,
    kubernetes_audience: str = "vault",
    events: bool = False,
    trigger_path: str = "ehpc/trigger",
    history_versions: int | None = None,
    approle_token_period: int | None = None,
    password_policy_file: str = PASSWORD_POLICY_FILE,
) -> SetupResult:
    """Read, compare and (unless ``dry_run``) apply, one object at a time.

    ``client`` needs an administrator's token (policy and auth writes), not rotator's own.
    ``policy_dir`` overrides the packaged HCL (for a checkout with local edits).
    ``approle_mount``/``kubernetes_mount`` default to the settings' mounts: a dedicated path
    (``kubernetes-rotator``) keeps rotator away from an auth method other teams configured.
    ``approle_token_period`` (seconds): the AppRole role issues periodic tokens without a
    maximum TTL, which a Vault Agent renews for as long as it runs (``--agent``).
    """
    directory = policy_dir if policy_dir is not None else default_policy_dir()
    run = _Run(client=client, force=force, dry_run=dry_run)
    await run.ensure_kv_mount(settings.kv_mount)

    values = {
        "kv_mount": settings.kv_mount,
        "root_path": settings.root_path,
        "vnc_path": settings.vnc_path,
        "runs_path": settings.runs_path,
        "password_policy": password_policy,
    }

    def text_of(filename: str, **extra: str) -> str:
        rendered = render_policy(
            _read(directory, filename),
            settings,
            password_policy=password_policy,
            trigger_path=trigger_path,
        )
        return stored_policy_text(rendered, {**values, **extra})

    for name, filename in ACL_POLICIES.items():
        await run.ensure_policy("acl", name, text_of(filename))
    await run.ensure_policy("password", password_policy, text_of(password_policy_file))
    policies = ["rotator"]
    if events:
        name, filename = EVENTS_POLICY
        text = text_of(filename, trigger_path=trigger_path)
        if await run.ensure_policy("acl", name, text, may_be_unsupported=True):
            policies.append(name)

    mount = approle_mount or settings.approle_mount
    await run.ensure_auth("approle", mount)
    lifetime: dict[str, int] = (
        {"token_period": approle_token_period, "token_ttl": 0, "token_max_ttl": 0}
        if approle_token_period
        else {"token_ttl": _HOUR, "token_max_ttl": _DAY}
    )
    await run.ensure_object(
        f"auth/{mount}/role/{role_name}",
        {
            "token_policies": policies,
            **lifetime,
            "secret_id_ttl": _DAY,
            "token_type": "service",
        },
        f"approle role {role_name}" + (f" at auth/{mount}/" if mount != "approle" else ""),
    )
    if kubernetes_host:
        k8s_mount = kubernetes_mount or settings.kubernetes_mount
        await run.ensure_auth("kubernetes", k8s_mount)
        config: dict[str, Any] = {"kubernetes_host": kubernetes_host}
        if kubernetes_ca_cert:
            config["kubernetes_ca_cert"] = kubernetes_ca_cert
        await run.ensure_object(
            f"auth/{k8s_mount}/config",
            config,
            f"kubernetes auth config at auth/{k8s_mount}/config",
            keep_existing=True,
        )
        k8s_role = settings.kubernetes_role or role_name
        await run.ensure_object(
            f"auth/{k8s_mount}/role/{k8s_role}",
            {
                "bound_service_account_names": [kubernetes_service_account],
                "bound_service_account_namespaces": [kubernetes_namespace],
                "audience": kubernetes_audience,
                "token_policies": policies,
                "token_ttl": _HOUR,
                "token_max_ttl": _DAY,
            },
            f"kubernetes role {k8s_role}"
            + (f" at auth/{k8s_mount}/" if k8s_mount != "kubernetes" else ""),
        )
    versions = history_versions if history_versions is not None else settings.history_versions
    await run.ensure_history(settings.kv_mount, settings.vnc_path, versions, settings.max_workers)
    return SetupResult(tuple(run.steps), dry_run=dry_run)


async def vault_setup(
    client: VaultClient,
    settings: VaultSettings,
    *,
    policy_dir: Path | Traversable | None = None,
    password_policy: str = "ehpc-vnc",  # noqa: S107 - a policy name, not a password
    password_policy_file: str = PASSWORD_POLICY_FILE,
    role_name: str = "rotator",
    kubernetes_host: str | None = None,
    kubernetes_namespace: str = "rotator",
    kubernetes_service_account: str = "rotator",
    kubernetes_ca_cert: str | None = None,
    force: bool = False,
) -> list[str]:
    """Apply (see :func:`run_setup`); returns one line per step saying what happened."""
    result = await run_setup(
        client,
        settings,
        force=force,
        policy_dir=policy_dir,
        password_policy=password_policy,
        role_name=role_name,
        kubernetes_host=kubernetes_host,
        kubernetes_namespace=kubernetes_namespace,
        kubernetes_service_account=kubernetes_service_account,
        kubernetes_ca_cert=kubernetes_ca_cert,
        password_policy_file=password_policy_file,
    )
    return result.lines()
