"""``rotator vault-setup``: prepare Vault/OpenBao for the rotator, idempotently.

    async with VaultClient(settings) as client:                # an admin token, not rotator's
        for line in await vault_setup(client, settings):
            print(line)

What it does (each step only when something differs, and it says what it did):

1. checks that the KV version 2 mount exists (enables it when missing; refuses KV version 1),
2. writes the ACL policies ``rotator`` and ``ehpc-vnc-reader`` and the password policy
   ``ehpc-vnc`` from the canonical HCL in ``rotator/data/vault/`` (templates: the configured
   mount and paths are filled in),
3. enables AppRole auth and creates the role ``rotator`` (token TTL 1h, secret_id TTL 24h),
4. with ``kubernetes_host``: enables Kubernetes auth and creates the role ``rotator`` bound to
   the service account ``rotator`` in the given namespace.

Run it again after changing mounts or paths: the policies follow the configuration.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from rotator.errors import ConfigError
from rotator.vault.client import JsonDict, VaultClient
from rotator.vault.settings import VaultSettings

__all__ = [
    "ACL_POLICIES",
    "PASSWORD_POLICY_FILE",
    "default_policy_dir",
    "render_policy",
    "vault_setup",
]

ACL_POLICIES = {"rotator": "rotator.hcl", "ehpc-vnc-reader": "ehpc-vnc-reader.hcl"}
"""Policy name -> template file."""
PASSWORD_POLICY_FILE = "ehpc-vnc-password.hcl"  # noqa: S105 - a file name, not a password

_PLACEHOLDER = re.compile(
    r"\{(kv_mount|root_path|vnc_path|runs_path|pending_path|password_policy)\}"
)
_HOUR = 3600
_DAY = 24 * _HOUR


def default_policy_dir() -> Traversable:
    """Where the canonical HCL ships: the package's ``data/vault`` folder."""
    return resources.files("rotator").joinpath("data", "vault")


def render_policy(template: str, settings: VaultSettings, *, password_policy: str) -> str:
    """Fill ``{kv_mount}``, ``{root_path}``, ``{vnc_path}``, ``{runs_path}``,
    ``{password_policy}`` in a policy template. Other braces (HCL blocks) are left alone."""
    values = {
        "kv_mount": settings.kv_mount,
        "root_path": settings.root_path,
        "vnc_path": settings.vnc_path,
        "runs_path": settings.runs_path,
        "pending_path": settings.pending_path,
        "password_policy": password_policy,
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


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


async def _ensure_kv_mount(client: VaultClient, settings: VaultSettings) -> str:
    mount = settings.kv_mount
    mounts = _listing(await client.read("sys/mounts"))
    entry = mounts.get(f"{mount}/")
    if entry is None:
        await client.write(f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})
        return f"enabled KV version 2 at {mount}/"
    kind = entry.get("type")
    version = str((entry.get("options") or {}).get("version") or "1")
    if kind == "kv" and version == "2":
        return f"KV version 2 at {mount}/ exists"
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


async def _ensure_policy(client: VaultClient, kind: str, name: str, text: str) -> str:
    path = f"sys/policies/{kind}/{name}"
    existing = await client.read(path)
    current = ((existing or {}).get("data") or {}).get("policy")
    label = "policy" if kind == "acl" else "password policy"
    if isinstance(current, str) and current.strip() == text.strip():
        return f"{label} {name} unchanged"
    await client.request("PUT" if kind == "acl" else "POST", path, json={"policy": text})
    return f"{label} {name} {'updated' if current else 'written'}"


async def _ensure_auth(client: VaultClient, kind: str, mount: str) -> str:
    methods = _listing(await client.read("sys/auth"))
    entry = methods.get(f"{mount}/")
    if entry is None:
        await client.write(f"sys/auth/{mount}", {"type": kind})
        return f"enabled {kind} auth at auth/{mount}/"
    if entry.get("type") != kind:
        raise ConfigError(
            f"auth/{mount}/ is a {entry.get('type')!r} auth method, not {kind}",
            key=f"vault.{kind}_mount",
        )
    return f"{kind} auth at auth/{mount}/ exists"


async def _ensure_role(client: VaultClient, path: str, desired: dict[str, Any], label: str) -> str:
    existing = await client.read(path)
    data = (existing or {}).get("data") or {}
    if existing is not None and all(data.get(k) == v for k, v in desired.items()):
        return f"{label} unchanged"
    await client.write(path, desired)
    return f"{label} {'updated' if existing is not None else 'created'}"


async def vault_setup(
    client: VaultClient,
    settings: VaultSettings,
    *,
    policy_dir: Path | Traversable | None = None,
    password_policy: str = "ehpc-vnc",  # noqa: S107 - a policy name, not a password
    role_name: str = "rotator",
    kubernetes_host: str | None = None,
    kubernetes_namespace: str = "rotator",
    kubernetes_service_account: str = "rotator",
    kubernetes_ca_cert: str | None = None,
) -> list[str]:
    """Apply mounts, policies and auth roles; returns one line per step saying what happened.

    ``client`` needs an administrator's token (policy and auth writes), not rotator's own.
    ``policy_dir`` overrides the packaged HCL (for a checkout with local edits).
    """
    directory = policy_dir if policy_dir is not None else default_policy_dir()
    done = [await _ensure_kv_mount(client, settings)]

    for name, filename in ACL_POLICIES.items():
        text = render_policy(_read(directory, filename), settings, password_policy=password_policy)
        done.append(await _ensure_policy(client, "acl", name, text))
    done.append(
        await _ensure_policy(
            client, "password", password_policy, _read(directory, PASSWORD_POLICY_FILE)
        )
    )

    done.append(await _ensure_auth(client, "approle", settings.approle_mount))
    done.append(
        await _ensure_role(
            client,
            f"auth/{settings.approle_mount}/role/{role_name}",
            {
                "token_policies": ["rotator"],
                "token_ttl": _HOUR,
                "token_max_ttl": _DAY,
                "secret_id_ttl": _DAY,
                "token_type": "service",
            },
            f"approle role {role_name}",
        )
    )
    if kubernetes_host:
        k8s_mount = settings.kubernetes_mount
        done.append(await _ensure_auth(client, "kubernetes", k8s_mount))
        config: dict[str, Any] = {"kubernetes_host": kubernetes_host}
        if kubernetes_ca_cert:
            config["kubernetes_ca_cert"] = kubernetes_ca_cert
        await client.write(f"auth/{k8s_mount}/config", config)
        done.append(f"kubernetes auth config at auth/{k8s_mount}/config written")
        k8s_role = settings.kubernetes_role or role_name
        done.append(
            await _ensure_role(
                client,
                f"auth/{k8s_mount}/role/{k8s_role}",
                {
                    "bound_service_account_names": [kubernetes_service_account],
                    "bound_service_account_namespaces": [kubernetes_namespace],
                    "token_policies": ["rotator"],
                    "token_ttl": _HOUR,
                    "token_max_ttl": _DAY,
                },
                f"kubernetes role {k8s_role}",
            )
        )
    return done
