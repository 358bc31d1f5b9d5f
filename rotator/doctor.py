"""``rotator doctor``: a preflight that checks what a rotation needs and changes nothing.

    report = await run_doctor(settings)
    print(report.render())            # a checklist, with a fix under each failure
    sys.exit(report.exit_code)        # 0 when every check holds, 1 otherwise

Each check is a :class:`Check` value (name, ok, detail, fix). Only reads are sent: Vault's
``sys/health``, ``lookup-self``, ``sys/capabilities-self``, a generated password (when Vault
generates them) and the root-credential listing; the API gets one signed ``ListClusters``
(``PageSize`` 1) per region with the configured HTTP method, then the pages needed to compare the
inventory. No password, in Vault or on a cluster, is written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from yarl import URL

from rotator.config import Settings
from rotator.ehpc.client import EhpcClient, Endpoints, Timeouts, tls_context
from rotator.ehpc.codes import info_for
from rotator.ehpc.credentials import AccessKey, FileCredentials, StaticCredentials
from rotator.engine.runtime import endpoints_from
from rotator.errors import ApiError, ConfigError, RotatorError, VaultError
from rotator.netaddr import is_loopback
from rotator.passwords import LocalPasswordSource, PasswordSource, VaultPasswordSource, verify
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.settings import VaultSettings
from rotator.vault.setup import ACL_POLICIES, default_policy_dir, render_policy
from rotator.vault.store import VaultStore

__all__ = ["Check", "DoctorReport", "doctor_command", "required_capabilities", "run_doctor"]

MAX_CLOCK_SKEW = 300.0
"""Seconds. The gateway refuses requests 15 minutes off; warn well before that."""
SHORT_TOKEN_TTL = 900.0
"""A token that cannot be renewed and dies sooner than this cannot finish a rotation."""
_LIST_PAGE = 50
_PROBE_SEGMENT = "doctor-probe"
_MAX_LISTED_IDS = 10
_POLICY_PATH = re.compile(r'^\s*path\s+"([^"]+)"\s*\{(.*?)\}', re.MULTILINE | re.DOTALL)
_CAPABILITIES = re.compile(r"capabilities\s*=\s*\[([^\]]*)\]")


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "failed": len(self.failed),
                "checks": [asdict(c) for c in self.checks],
            },
            indent=2,
        )

    def render(self) -> str:
        """Plain text, no colour and no wrapping: it is read in terminals, CI logs and mail."""
        lines = []
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"[{mark}] {check.name}: {check.detail}")
            if not check.ok and check.fix:
                lines.append(f"       fix: {check.fix}")
        verdict = (
            "all checks passed"
            if self.ok
            else f"{len(self.failed)} of {len(self.checks)} checks failed"
        )
        lines.append(f"doctor: {verdict}")
        return "\n".join(lines)


# -- Vault ----------------------------------------------------------------------------------------


def required_capabilities(
    settings: VaultSettings, *, password_policy: str, vault_passwords: bool
) -> dict[str, set[str]]:
    """Concrete path -> capabilities rotator needs, read from the shipped ``rotator`` policy.

    Globs become a probe name (``ehpc/vnc/*`` -> ``ehpc/vnc/doctor-probe``), which is what
    ``sys/capabilities-self`` evaluates. The password-policy path only matters when Vault
    generates the passwords.
    """
    template = default_policy_dir().joinpath(ACL_POLICIES["rotator"]).read_text(encoding="utf-8")
    text = render_policy(template, settings, password_policy=password_policy)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    wanted: dict[str, set[str]] = {}
    for path, body in _POLICY_PATH.findall(text):
        match = _CAPABILITIES.search(body)
        if match is None:
            continue
        if path.startswith("sys/policies/password/") and not vault_passwords:
            continue
        concrete = path.replace("+", _PROBE_SEGMENT)
        if concrete.endswith("*"):
            concrete = concrete[:-1].rstrip("/") + "/" + _PROBE_SEGMENT
        caps = {c.strip().strip('"') for c in match.group(1).split(",") if c.strip()}
        wanted.setdefault(concrete, set()).update(caps)
    return wanted


def _reachability(settings: VaultSettings) -> tuple[Check, Check]:
    """``sys/health`` without a token: is Vault up, unsealed, and is its TLS verified?"""
    addr = settings.addr
    if addr.startswith("https://"):
        if settings.skip_verify:
            tls = Check(
                "vault.tls",
                False,
                f"{addr}: certificate verification is disabled (vault.skip_verify / "
                "VAULT_SKIP_VERIFY)",
                "remove skip_verify and set vault.ca_cert (or VAULT_CACERT) to the CA bundle "
                "that signed Vault's certificate",
            )
        else:
            trust = settings.ca_cert or "the system trust store"
            tls = Check("vault.tls", True, f"{addr}: certificate verified against {trust}")
    elif is_loopback(urlsplit(addr).hostname or ""):
        tls = Check("vault.tls", True, f"{addr}: plain HTTP to a loopback address (a dev server)")
    else:
        tls = Check(
            "vault.tls",
            False,
            f"{addr}: plain HTTP; tokens and passwords would cross the network in clear",
            "use the https:// address of Vault (vault.addr / VAULT_ADDR)",
        )
    try:
        response = requests.get(
            f"{addr.rstrip('/')}/v1/sys/health",
            verify=settings.verify,
            timeout=settings.timeout,
            allow_redirects=False,
        )
    except requests.exceptions.SSLError:
        return (
            Check("vault.reachable", False, f"{addr}: the TLS handshake failed", ""),
            Check(
                "vault.tls",
                False,
                f"{addr}: the server's certificate is not trusted",
                "set vault.ca_cert (or VAULT_CACERT) to the CA bundle that signed it",
            ),
        )
    except requests.exceptions.RequestException as exc:
        return (
            Check(
                "vault.reachable",
                False,
                f"cannot reach Vault at {addr} ({type(exc).__name__})",
                "check vault.addr / VAULT_ADDR, that Vault runs, and that no firewall or proxy "
                "is in the way",
            ),
            tls,
        )
    status = response.status_code
    states = {
        200: (True, "unsealed, active"),
        429: (True, "unsealed, standby (forwards requests)"),
        472: (True, "disaster-recovery secondary"),
        473: (True, "performance standby"),
        501: (False, "not initialised"),
        503: (False, "sealed"),
    }
    ok, what = states.get(status, (False, f"answered HTTP {status}"))
    fix = "" if ok else "initialise/unseal Vault, or point vault.addr at a healthy node"
    return Check("vault.reachable", ok, f"{addr}: {what}", fix), tls


async def _vault_checks(
    settings: Settings, vault_settings: VaultSettings, client: VaultClient
) -> tuple[list[Check], bool]:
    """The Vault checks, and whether the token works (later checks need it)."""
    reachable, tls = await asyncio.to_thread(_reachability, vault_settings)
    checks = [reachable, tls]
    if not reachable.ok:
        return checks, False
    method = vault_settings.auth_method
    try:
        lookup = await client.request("GET", "auth/token/lookup-self") or {}
    except (VaultError, ConfigError) as exc:  # ConfigError: no token, an unreadable file
        fixes = {
            "token": "log in again (bao login / vault login), refresh vault.token_file, or set "
            "VAULT_TOKEN",
            "approle": "check vault.role_id and the secret_id file: secret_ids expire (the "
            "Vault Agent in deploy/systemd/ keeps a token fresh)",
            "kubernetes": "check vault.kubernetes_role and the role's bound service account "
            "and namespace",
        }
        checks.append(
            Check("vault.auth", False, f"{method} auth failed: {exc.message}", fixes[method])
        )
        return checks, False
    data = lookup.get("data") or {}
    policies = sorted({str(p) for p in data.get("policies") or []})
    checks.append(
        Check(
            "vault.auth",
            True,
            f"{method} auth as {data.get('display_name') or '?'} with policies "
            f"{', '.join(policies) or '-'}",
        )
    )
    checks.append(_ttl_check(vault_settings, data))
    checks.extend(await _capability_checks(settings, vault_settings, client))
    checks.append(await _password_policy_check(settings, client))
    return checks, True


def _ttl_check(settings: VaultSettings, data: Mapping[str, Any]) -> Check:
    ttl = float(data.get("ttl") or 0)
    renewable = bool(data.get("renewable"))
    if ttl <= 0:
        return Check("vault.token_ttl", True, "the token never expires")
    detail = f"{ttl / 60:.0f} min left, {'renewable' if renewable else 'not renewable'}"
    if renewable or settings.auth_method != "token" or ttl >= SHORT_TOKEN_TTL:
        if settings.auth_method != "token":
            detail += f"; rotator logs in again with {settings.auth_method} when it ends"
        elif settings.token_file:
            detail += f"; re-read from {settings.token_file} when it changes"
        return Check("vault.token_ttl", True, detail)
    return Check(
        "vault.token_ttl",
        False,
        detail,
        "use a renewable token with a longer TTL, a token file kept fresh by a Vault Agent "
        "(deploy/systemd/rotator-vault-agent.*), or AppRole/Kubernetes auth",
    )


async def _capability_checks(
    settings: Settings, vault_settings: VaultSettings, client: VaultClient
) -> list[Check]:
    wanted = required_capabilities(
        vault_settings,
        password_policy=settings.passwords.policy,
        vault_passwords=settings.passwords.source == "vault",
    )
    try:
        body = await client.request("POST", "sys/capabilities-self", json={"paths": list(wanted)})
    except VaultError as exc:
        return [
            Check(
                "vault.capabilities",
                False,
                f"cannot ask Vault for the token's capabilities: {exc.message}",
                "attach the 'default' policy (it allows update on sys/capabilities-self)",
            )
        ]
    answer = (body or {}).get("data") or body or {}
    checks = []
    for path, needed in wanted.items():
        have = {str(c) for c in answer.get(path) or []}
        if "root" in have:
            have |= needed
        missing = needed - have
        name = f"vault.capabilities {path}"
        if missing:
            checks.append(
                Check(
                    name,
                    False,
                    f"missing {', '.join(sorted(missing))} (has {', '.join(sorted(have)) or '-'})",
                    "attach the 'rotator' policy (`rotator vault-setup` writes it) or grant "
                    "these capabilities in a policy of your own",
                )
            )
        else:
            checks.append(Check(name, True, ", ".join(sorted(needed))))
    return checks


async def _password_policy_check(settings: Settings, client: VaultClient) -> Check:
    name = settings.passwords.policy
    if settings.passwords.source != "vault":
        return Check(
            "vault.password_policy",
            True,
            "not used: passwords.source = 'local' generates passwords in-process",
        )
    try:
        await client.request("GET", f"sys/policies/password/{name}/generate")
    except VaultError as exc:
        return Check(
            "vault.password_policy",
            False,
            f"password policy {name!r} cannot generate: {exc.message}",
            "run `rotator vault-setup` (it writes the password policy) or set passwords.policy",
        )
    return Check("vault.password_policy", True, f"password policy {name!r} exists and generates")


# -- Alibaba Cloud --------------------------------------------------------------------------------


async def _resolve_credentials(settings: Settings) -> tuple[Check, AccessKey | None]:
    creds = settings.credentials
    try:
        if creds.source == "static":
            # What a rotation reads (engine.runtime.credentials_from), read the same way.
            key = await FileCredentials(
                creds.access_key_id, creds.access_key_secret_file, creds.security_token_file
            ).get()
            provider = f"static (secret from {creds.access_key_secret_file})"
        else:
            key, provider = await _default_chain()
    except ConfigError as exc:
        return (
            Check(
                "alibaba.credentials",
                False,
                exc.message,
                "make the file readable by the rotator user",
            ),
            None,
        )
    except RotatorError as exc:
        return (
            Check(
                "alibaba.credentials",
                False,
                exc.message,
                "set ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET, a profile, an "
                "ECS RAM role or RRSA; or credentials.source = 'static' with a secret file",
            ),
            None,
        )
    shown = key.access_key_id[:6] + "..." if len(key.access_key_id) > 6 else key.access_key_id
    sts = ", with an STS token" if key.security_token is not None else ""
    return Check("alibaba.credentials", True, f"AccessKey {shown} from {provider}{sts}"), key


async def _default_chain() -> tuple[AccessKey, str]:
    """The official default chain, asked directly so the answering provider can be named."""
    from alibabacloud_credentials.client import Client  # noqa: PLC0415 - heavy, rarely used

    try:
        model = await Client().get_credential_async()
    except Exception as exc:  # noqa: BLE001 - the library raises many unrelated types
        raise ConfigError(
            "no Alibaba Cloud credentials could be resolved from the default chain "
            f"({type(exc).__name__})",
            key="credentials",
        ) from None
    token = model.security_token
    key = AccessKey(
        str(model.access_key_id),
        Secret(str(model.access_key_secret)),
        Secret(str(token)) if token else None,
    )
    return key, f"the default chain ({getattr(model, 'provider_name', None) or 'unknown'})"


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _api_fix(code: str, status: int) -> str:
    fixes = {
        "SignatureDoesNotMatch": "the AccessKey secret is wrong: check credentials."
        "access_key_secret_file (or the default chain's secret)",
        "InvalidAccessKeyId.NotFound": "the AccessKey ID does not exist: check "
        "credentials.access_key_id",
        "InvalidAccessKeyId.Inactive": "the AccessKey is disabled: enable it or use another",
        "InvalidTimeStamp.Expired": "the host clock is off: synchronise it (chrony/NTP)",
        "Forbidden.RAM": "grant the RAM policy in deploy/alibaba-cloud/ram-policy.json",
        "NoPermission": "grant the RAM policy in deploy/alibaba-cloud/ram-policy.json",
        "NotAuthorized": "grant the RAM policy in deploy/alibaba-cloud/ram-policy.json",
    }
    if code in fixes:
        return fixes[code]
    if code.startswith("InvalidSecurityToken"):
        return "the STS token is invalid or expired: check the credential provider"
    return info_for(code, status).hint


async def _region_checks(
    api: EhpcClient,
    method: str,
    regions: list[str],
    endpoints: Endpoints,
    *,
    context: ssl.SSLContext,
) -> tuple[list[Check], dict[str, set[str]] | None]:
    """Probe each region; returns the checks and, when every region answered, the listed ids."""

    async def one(region: str) -> tuple[list[Check], set[str] | None]:
        url = endpoints.url_for(region)
        name = f"alibaba.list_clusters {region}"
        sent = time.time()
        try:
            answer = await api.probe(region, {"PageNumber": "1", "PageSize": "1"})
        except ApiError as exc:  # no answer at all
            if exc.code == "TLSError":
                return [
                    Check(
                        f"alibaba.tls {region}",
                        False,
                        exc.message,
                        "set ehpc.ca_bundle to the CA bundle that signed the endpoint's "
                        "certificate",
                    )
                ], None
            return [
                Check(
                    name,
                    False,
                    f"{method} {url}: no answer ({exc.code}: {exc.message})",
                    "check ehpc.endpoint / ehpc.endpoint_template, DNS, proxies and firewalls",
                )
            ], None
        received = time.time()
        checks = [await _tls_check(region, url, context)]
        request_id = answer.body.get("RequestId") or "-"
        if answer.ok:
            total = answer.body.get("TotalCount", "?")
            checks.append(
                Check(
                    name,
                    True,
                    f"{method} {url}: HTTP {answer.status}, {total} clusters, "
                    f"RequestId {request_id}",
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    False,
                    f"{method} {url}: HTTP {answer.status} {answer.code}: "
                    f"{answer.body.get('Message') or ''} (RequestId {request_id})",
                    _api_fix(str(answer.code), answer.status),
                )
            )
        checks.append(_clock_check(region, _clock_skew(answer.date, sent, received)))
        if not checks[-2].ok:
            return checks, None
        try:
            listed = {cluster.id for cluster in await api.list_clusters(region)}
        except ApiError:
            return checks, None
        return checks, listed

    results = await asyncio.gather(*(one(r) for r in regions))
    checks = [c for found, _ in results for c in found]
    if any(listed is None for _, listed in results):
        return checks, None
    return checks, {r: listed or set() for r, (_, listed) in zip(regions, results, strict=True)}


async def _tls_check(region: str, url: URL, context: ssl.SSLContext) -> Check:
    """The call over this URL just verified the certificate; one more handshake of our own
    tells the protocol version and how long the certificate stays valid."""
    name = f"alibaba.tls {region}"
    if url.scheme != "https":
        # Endpoints refuse plain HTTP unless it is a loopback simulator, allowed by name.
        return Check(
            name,
            True,
            f"{url.host}: plain HTTP to a loopback simulator (ehpc.allow_insecure_http)",
        )
    host = url.raw_host or ""
    detail = "HTTPS, certificate verified"
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, url.port, ssl=context, server_hostname=host), 10
        )
    except (OSError, TimeoutError):
        return Check(name, True, f"{host}: {detail}")
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            until = (ssl_object.getpeercert() or {}).get("notAfter")
            detail = f"{ssl_object.version()}, certificate verified" + (
                f", valid until {until}" if until else ""
            )
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return Check(name, True, f"{host}: {detail}")


def _clock_skew(date: str | None, sent: float, received: float) -> float | None:
    """Seconds this host is behind the endpoint (negative: ahead), from its ``Date`` header.

    The header has whole seconds (truncated): compare the middle of that second with the
    middle of the exchange (``sent``/``received``: ``time.time()`` around the call).
    """
    parsed = _parse_date(date)
    return parsed.timestamp() + 0.5 - (sent + received) / 2 if parsed else None


def _clock_check(region: str, skew: float | None) -> Check:
    name = f"alibaba.clock {region}"
    if skew is None:
        return Check(name, True, "the endpoint sent no Date header; skew not measured")
    direction = "behind" if skew > 0 else "ahead of"
    detail = f"this host is {abs(skew):.1f}s {direction} the endpoint's clock"
    if abs(skew) < 1.5:  # the Date header resolves 1s
        detail = "this host's clock agrees with the endpoint's (within the Date header's 1s)"
    if abs(skew) <= MAX_CLOCK_SKEW:
        return Check(name, True, detail)
    return Check(
        name,
        False,
        detail + " (the gateway refuses requests 15 min off)",
        "synchronise the host clock (chrony/systemd-timesyncd)",
    )


async def _inventory_check(
    settings: Settings, store: VaultStore | None, listed: Mapping[str, set[str]]
) -> Check | None:
    """Clusters rotator would rotate that ListClusters does not return (issue: E-HPC 2.0)."""
    source = settings.inventory.source
    if source == "discover":
        return Check(
            "inventory.listed", True, "inventory.source = 'discover': the inventory is ListClusters"
        )
    if source == "config":
        inventory = {c.id for c in settings.inventory.clusters}
        where = "inventory.clusters"
    else:
        if store is None:
            return None
        inventory = set(await store.list_root_clusters())
        where = f"{settings.vault.kv_mount}/{settings.vault.root_path}"
    inventory -= set(settings.inventory.exclude)
    seen = set().union(*listed.values()) if listed else set()
    missing = sorted(inventory - seen)
    regions = ", ".join(listed) or "-"
    if not missing:
        return Check(
            "inventory.listed",
            True,
            f"all {len(inventory)} clusters of {where} are returned by ListClusters ({regions})",
        )
    shown = ", ".join(missing[:_MAX_LISTED_IDS])
    more = f" and {len(missing) - _MAX_LISTED_IDS} more" if len(missing) > _MAX_LISTED_IDS else ""
    return Check(
        "inventory.listed",
        False,
        f"{len(missing)} of {len(inventory)} clusters of {where} are not returned by "
        f"ListClusters in {regions}: {shown}{more}",
        "API 2018-04-12 covers E-HPC 1.0 clusters only (E-HPC 2.0 has no VNC password action); "
        "a released cluster or a region missing from ehpc.regions shows here too: add the "
        f"region, or remove the cluster from {where} / add it to inventory.exclude",
    )


# -- passwords ------------------------------------------------------------------------------------


async def _password_check(settings: Settings, store: VaultStore | None) -> Check | None:
    source: PasswordSource
    if settings.passwords.source == "vault":
        if store is None:
            return None
        source = VaultPasswordSource(store, settings.passwords.policy)
    else:
        source = LocalPasswordSource(exclude_lookalikes=settings.passwords.exclude_lookalikes)
    description = getattr(source, "description", type(source).__name__)
    try:
        await verify(source)
    except ConfigError as exc:
        return Check(
            "passwords.rule",
            False,
            exc.message,
            "fix the password policy (rotator/data/vault/ehpc-vnc-password.hcl) and run "
            "`rotator vault-setup`, or use passwords.source = 'local'",
        )
    except VaultError as exc:
        return Check("passwords.rule", False, f"{description}: {exc.message}", "see vault checks")
    return Check(
        "passwords.rule", True, f"20 sample passwords from the {description} follow the API rule"
    )


# -- the whole run --------------------------------------------------------------------------------


async def run_doctor(settings: Settings) -> DoctorReport:
    """Every check, in checklist order. Never raises for what it checks; reads only."""
    checks: list[Check] = []
    store: VaultStore | None = None
    client: VaultClient | None = None
    try:
        vault_settings = VaultSettings.from_config(settings.vault)
    except ConfigError as exc:
        checks.append(Check("vault.config", False, exc.message, f"fix {exc.key or 'vault'}"))
    else:
        client = VaultClient(vault_settings)
    try:
        if client is not None:
            vault_checks, authenticated = await _vault_checks(settings, client.settings, client)
            checks.extend(vault_checks)
            store = VaultStore(client) if authenticated else None
        checks.extend(await _alibaba_checks(settings, store))
        password = await _password_check(settings, store)
        if password is not None:
            checks.append(password)
    finally:
        if client is not None:
            await client.aclose()
    return DoctorReport(tuple(checks))


async def _alibaba_checks(settings: Settings, store: VaultStore | None) -> list[Check]:
    credentials, key = await _resolve_credentials(settings)
    checks = [credentials]
    regions = list(settings.ehpc.regions) or ["cn-hangzhou"]
    ehpc = settings.ehpc
    ca_bundle = Path(ehpc.ca_bundle) if ehpc.ca_bundle else None
    try:
        endpoints = endpoints_from(settings)
        context = tls_context(ca_bundle)
    except ConfigError as exc:
        checks.append(Check("alibaba.endpoint", False, exc.message, f"fix {exc.key or 'ehpc'}"))
        return checks
    if key is None:
        return checks
    api = EhpcClient(
        credentials=StaticCredentials(key.access_key_id, key.access_key_secret, key.security_token),
        endpoints=endpoints,
        timeouts=Timeouts(connect=ehpc.connect_timeout, total=ehpc.request_timeout),
        ca_bundle=ca_bundle,
        method=ehpc.method,
    )
    async with api:
        region_checks, listed = await _region_checks(
            api, ehpc.method, regions, endpoints, context=context
        )
    checks.extend(region_checks)
    if listed is not None:
        try:
            inventory = await _inventory_check(settings, store, listed)
        except VaultError as exc:
            inventory = Check(
                "inventory.listed",
                False,
                f"cannot list the inventory in Vault: {exc.message}",
                "see the vault checks",
            )
        if inventory is not None:
            checks.append(inventory)
    return checks


async def doctor_command(settings: Settings, args: argparse.Namespace) -> int:
    """``rotator doctor [--json]``: print the checklist (or JSON); exit 0 only if all hold."""
    report = await run_doctor(settings)
    print(report.to_json() if getattr(args, "json", False) else report.render())
    return report.exit_code
