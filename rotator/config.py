"""Configuration: a TOML file, overridden by ``ROTATOR_<SECTION>_<KEY>`` environment variables.

    settings = load_settings(Path("config/rotator.toml"))     # or None: defaults + environment
    settings.rotation.concurrency                              # 32

Every key is documented in ``config/rotator.example.toml``. A bad value fails at startup with
one :class:`~rotator.errors.ConfigError` naming the key (``rotation.concurrency: must be >= 1``);
secrets are never config values, only paths to files that hold them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rotator.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "ClusterEntry",
    "CredentialsSettings",
    "EhpcSettings",
    "InventorySettings",
    "LoggingSettings",
    "PasswordSettings",
    "RetrySettings",
    "RotationSettings",
    "ServeSettings",
    "Settings",
    "VaultConfig",
    "VerifySettings",
    "load_settings",
    "parse_duration",
]

CONFIG_ENV = "ROTATOR_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/rotator/rotator.toml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str | float, *, key: str = "duration") -> float:
    """``"30d"``, ``"15m"``, ``"1.5s"``, ``"250ms"`` or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError("must not be negative", key=key)
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(
            f"{value!r} is not a duration (examples: 250ms, 10s, 15m, 2h, 30d)", key=key
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(default: str) -> Any:
    """A field written as a duration string in TOML and held as seconds."""
    return field(default=parse_duration(default), metadata={"duration": True})


@dataclass(frozen=True, slots=True)
class ClusterEntry:
    id: str
    region: str = ""
    period: float | None = None
    """Rotation period override in seconds (``period = "7d"`` in TOML)."""
    vnc_host: str = ""
    """Where the VNC check connects (``{host}`` of ``verify.url``); empty: Vault, then the API."""


@dataclass(frozen=True, slots=True)
class EhpcSettings:
    regions: list[str] = field(default_factory=list)
    endpoint_template: str = "https://ehpc.{region}.aliyuncs.com"
    endpoint: str = ""
    endpoints: dict[str, str] = field(default_factory=dict)
    allow_insecure_http: bool = False
    method: Literal["POST", "GET"] = "POST"
    """POST with a form body (no password in a URL); GET with query parameters, as the SDKs."""
    ca_bundle: str = ""
    connect_timeout: float = _duration("5s")
    request_timeout: float = _duration("30s")
    rate_limit: str = "100/60s"
    rate_limits: dict[str, str] = field(default_factory=dict)
    account_rate_limit: str = ""
    """Empty: no account-wide limit (the documented quotas are per region endpoint)."""
    adaptive_rate: bool = True
    max_connections: int = 100


@dataclass(frozen=True, slots=True)
class CredentialsSettings:
    source: Literal["default", "static"] = "default"
    access_key_id: str = ""
    access_key_secret_file: str = ""
    security_token_file: str = ""


@dataclass(frozen=True, slots=True)
class VaultConfig:
    addr: str = ""
    allow_insecure_http: bool = False
    """Plain ``http://`` for a loopback Vault (a dev server); https is required otherwise."""
    namespace: str = ""
    ca_cert: str = ""
    skip_verify: bool = False
    auth_method: Literal["token", "approle", "kubernetes"] = "token"
    token_file: str = ""
    role_id: str = ""
    secret_id_file: str = ""
    approle_mount: str = "approle"
    kubernetes_role: str = ""
    kubernetes_jwt_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    kubernetes_mount: str = "kubernetes"
    kv_mount: str = "secret"
    root_path: str = "ehpc/root"
    vnc_path: str = "ehpc/vnc"
    runs_path: str = "ehpc/runs"
    pending_path: str = ""
    """The rotation in flight; "" = ``pending`` next to ``vnc_path`` (ehpc/vnc -> ehpc/pending)."""
    runs_keep: int = 200
    max_workers: int = 16
    timeout: float = _duration("10s")
    history_versions: int = 50
    """VNC password versions Vault keeps per cluster (``vault-setup`` sets ``max_versions``)."""
    transport: Literal["hvac", "aiohttp"] = "aiohttp"
    """How KV reads and writes travel: aiohttp on the event loop, or hvac in a thread pool
    (login, renewal and the other calls, such as ``vault-setup``'s policies, use hvac)."""


@dataclass(frozen=True, slots=True)
class PasswordSettings:
    source: Literal["local", "vault"] = "local"
    policy: str = "ehpc-vnc"
    exclude_lookalikes: bool = False
    rule: Literal["current", "legacy"] = "current"
    """Which documented Passwd rule the API enforces (rotator.passwords.RULES)."""


@dataclass(frozen=True, slots=True)
class RetrySettings:
    attempts: int = 6
    initial_wait: float = _duration("500ms")
    max_wait: float = _duration("20s")
    conflict_attempts: int = 8
    conflict_initial_wait: float = _duration("5s")
    conflict_max_wait: float = _duration("60s")
    throttle_attempts: int = 10
    throttle_initial_wait: float = _duration("1s")
    throttle_max_wait: float = _duration("30s")
    vault_attempts: int = 6


@dataclass(frozen=True, slots=True)
class RotationSettings:
    concurrency: int = 32
    period: float = _duration("30d")
    max_failures: str = ""
    cluster_deadline: float = _duration("15m")
    claim_ttl: float = _duration("90s")
    vault_failure_limit: int = 10
    """Vault circuit breaker: failures in a row that end a run early (0: never)."""


@dataclass(frozen=True, slots=True)
class InventorySettings:
    source: Literal["vault", "config", "discover"] = "vault"
    clusters: list[ClusterEntry] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    check_status: bool = True
    """Before a run over a vault or config inventory, ask ListClusters (one call per region and
    page) which clusters are running: the others are skipped with no API call and no Vault write."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    listen: str = "0.0.0.0:8080"
    webhook_token_file: str = ""
    webhook_hmac_secret_file: str = ""
    event_types: list[str] = field(default_factory=lambda: ["kv-v2/data-write", "kv-v2/data-patch"])
    trigger_path: str = "ehpc/trigger"
    schedule_refresh: float = _duration("5m")
    pending_scan: float = _duration("1h")
    """How often a refresh also reads the pending records (at start, then at most this often)."""
    window: str = ""
    timezone: str = "UTC"
    jitter: float = _duration("10m")
    batch_delay: float = _duration("2s")
    batch_max: int = 500
    # -- listener hardening (serve branch) --
    tls_cert_file: str = ""
    tls_key_file: str = ""
    header_timeout: float = _duration("10s")
    body_timeout: float = _duration("10s")
    # -- check-out leases (serve branch) --
    checkout_mode: Literal["shared", "exclusive"] = "shared"
    checkout_default_ttl: float = _duration("1h")
    checkout_max_ttl: float = _duration("8h")


@dataclass(frozen=True, slots=True)
class VerifySettings:
    """After each rotation, one VNC (RFB) authentication with the new password (issue 13)."""

    enabled: bool = False
    url: str = "wss://{host}:12016/"
    """``{host}``, ``{cluster_id}``, ``{region}``; tcp://, ws:// or wss:// (TLS verified)."""
    timeout: float = _duration("10s")
    ca_bundle: str = ""
    """CA file for a wss:// endpoint with a private certificate (default: system trust)."""


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    ehpc: EhpcSettings = field(default_factory=EhpcSettings)
    credentials: CredentialsSettings = field(default_factory=CredentialsSettings)
    vault: VaultConfig = field(default_factory=VaultConfig)
    passwords: PasswordSettings = field(default_factory=PasswordSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    rotation: RotationSettings = field(default_factory=RotationSettings)
    inventory: InventorySettings = field(default_factory=InventorySettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    source: str = "defaults"
    """Where the settings came from (a path), for messages."""


_SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if f.name != "source"
}


def _convert(value: Any, hint: Any, key: str, *, duration: bool) -> Any:
    """Check and convert one value to the field's type; errors name the key."""
    if duration:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return parse_duration(value, key=key)
        raise ConfigError(f"expected a duration like '15m', got {type(value).__name__}", key=key)
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{value!r} is not one of {', '.join(map(repr, allowed))}", key=key)
        return value
    if origin in (types.UnionType, typing.Union):  # e.g. float | None
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return None if value is None else _convert(value, inner, key, duration=False)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"expected true or false, got {value!r}", key=key)
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"expected a whole number, got {value!r}", key=key)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"expected a whole number, got {value!r}", key=key) from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"expected a number, got {value!r}", key=key) from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", key=key)
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):  # environment override: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError("expected a list", key=key)
        if item is ClusterEntry:
            return [_cluster_entry(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return [_convert(v, item, f"{key}[{i}]", duration=False) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError("expected a table of name = value", key=key)
        return {str(k): _convert(v, str, f"{key}.{k}", duration=False) for k, v in value.items()}
    raise ConfigError(f"unsupported setting type {hint!r}", key=key)  # pragma: no cover


def _cluster_entry(value: Any, key: str) -> ClusterEntry:
    if isinstance(value, str):  # "cn-hangzhou/ehpc-hz-xxx" or a bare id
        region, _, cluster_id = value.rpartition("/")
        return ClusterEntry(id=cluster_id, region=region)
    if not isinstance(value, Mapping) or not isinstance(value.get("id"), str):
        raise ConfigError("expected a table with at least id = '...'", key=key)
    unknown = set(value) - {"id", "region", "period", "vnc_host"}
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}", key=key)
    period = value.get("period")
    return ClusterEntry(
        id=value["id"],
        region=str(value.get("region", "")),
        period=None if period is None else parse_duration(period, key=f"{key}.period"),
        vnc_host=str(value.get("vnc_host", "")),
    )


def _build_section(name: str, cls: type[Any], data: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(sorted(unknown))} (see config/rotator.example.toml)",
            key=name,
        )
    values = {
        key: _convert(
            raw, hints[key], f"{name}.{key}", duration=bool(known[key].metadata.get("duration"))
        )
        for key, raw in data.items()
    }
    return cls(**values)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for section, cls in _SECTIONS.items():
        prefix = f"ROTATOR_{section}_".upper()
        known = {f"{prefix}{f.name}".upper(): f.name for f in dataclasses.fields(cls)}
        for name, value in environ.items():
            if not name.startswith(prefix):
                continue
            if name not in known:
                # A typo would otherwise be silently ignored, and the default used.
                raise ConfigError(
                    f"environment variable {name} names no setting of [{section}] "
                    f"(known: {', '.join(sorted(known))})"
                )
            overrides.setdefault(section, {})[known[name]] = value
    return overrides


def _validate(settings: Settings) -> None:
    if settings.rotation.concurrency < 1:
        raise ConfigError("must be >= 1", key="rotation.concurrency")
    if settings.rotation.vault_failure_limit < 0:
        raise ConfigError("must be >= 0 (0: never stop)", key="rotation.vault_failure_limit")
    if settings.ehpc.max_connections < 1:
        raise ConfigError("must be >= 1", key="ehpc.max_connections")
    if settings.vault.max_workers < 1:
        raise ConfigError("must be >= 1", key="vault.max_workers")
    if settings.vault.history_versions < 1:
        raise ConfigError("must be >= 1", key="vault.history_versions")
    for key in ("attempts", "conflict_attempts", "throttle_attempts", "vault_attempts"):
        if getattr(settings.retry, key) < 1:
            raise ConfigError("must be >= 1", key=f"retry.{key}")
    if settings.rotation.period <= 0:
        raise ConfigError("must be longer than 0s", key="rotation.period")
    for key in (
        "ehpc.connect_timeout",
        "ehpc.request_timeout",
        "vault.timeout",
        "rotation.cluster_deadline",
        "rotation.claim_ttl",
    ):
        section, name = key.split(".")
        # 0 would mean "no timeout" to aiohttp and requests: a hung call would never end.
        if getattr(getattr(settings, section), name) <= 0:
            raise ConfigError("must be longer than 0s", key=key)
    if settings.credentials.source == "static" and not (
        settings.credentials.access_key_id and settings.credentials.access_key_secret_file
    ):
        raise ConfigError(
            "source = 'static' needs access_key_id and access_key_secret_file", key="credentials"
        )
    if settings.verify.enabled and settings.verify.timeout <= 0:
        raise ConfigError("must be longer than 0s", key="verify.timeout")
    if settings.inventory.source == "discover" and not settings.ehpc.regions:
        raise ConfigError(
            "inventory.source = 'discover' needs at least one region", key="ehpc.regions"
        )


def load_settings(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any), apply environment overrides, validate."""
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except PermissionError:
            raise ConfigError(f"config file {path} is not readable") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))} in {path}", key=None)
    for section, values in _env_overrides(env).items():
        base = data.setdefault(section, {})
        if not isinstance(base, dict):
            raise ConfigError("expected a table", key=section)
        base.update(values)
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError("expected a table", key=name)
        sections[name] = _build_section(name, cls, raw)
    settings = Settings(**sections, source=str(path) if path else "defaults")
    _validate(settings)
    return settings
