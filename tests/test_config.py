"""``load_settings``: TOML, environment overrides, and one clear error naming the key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from rotator.config import (
    ClusterEntry,
    Settings,
    load_settings,
    parse_duration,
)
from rotator.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "rotator.example.toml"
DAY = 86400.0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ=environ or {})
    return info.value


# -- defaults and a full file -----------------------------------------------------------------


def test_defaults_without_a_file() -> None:
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert settings.source == "defaults"
    assert settings.rotation.concurrency == 32
    assert settings.rotation.period == 30 * DAY
    assert settings.retry.initial_wait == 0.5
    assert settings.ehpc.endpoint_template == "https://ehpc.{region}.aliyuncs.com"
    assert settings.ehpc.rate_limit == "100/60s"
    assert settings.ehpc.account_rate_limit == ""
    assert settings.passwords.rule == "current"
    assert settings.ehpc.allow_insecure_http is False
    assert settings.inventory.clusters == []


def test_full_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[ehpc]
regions = ["cn-hangzhou", "cn-beijing"]
endpoint_template = "https://ehpc-vpc.{region}.aliyuncs.com"
endpoints = { "cn-beijing" = "https://proxy.example.com" }
ca_bundle = "/etc/ssl/corp.pem"
connect_timeout = "2s"
request_timeout = 45
rate_limit = "200/60s"
rate_limits = { "cn-beijing" = "10/1s" }
max_connections = 20

[credentials]
source = "static"
access_key_id = "LTAI-example"
access_key_secret_file = "/run/secrets/ak"

[vault]
addr = "https://vault.example.com:8200"
auth_method = "approle"
role_id = "r-1"
secret_id_file = "/run/secrets/sid"
timeout = "1500ms"

[passwords]
source = "vault"
exclude_lookalikes = true

[retry]
attempts = 3
initial_wait = "250ms"
max_wait = "1m"

[rotation]
concurrency = 8
period = "7d"
max_failures = "10%"
cluster_deadline = "1h"

[inventory]
source = "config"
exclude = ["ehpc-hz-skipme"]

[[inventory.clusters]]
id = "ehpc-hz-1"
region = "cn-hangzhou"

[[inventory.clusters]]
id = "ehpc-bj-2"
region = "cn-beijing"
period = "12h"

[serve]
listen = "127.0.0.1:9000"
window = "01:00-05:00"

[logging]
level = "debug"
format = "json"
""",
    )
    s = load_settings(path, environ={})
    assert s.source == str(path)
    assert s.ehpc.regions == ["cn-hangzhou", "cn-beijing"]
    assert s.ehpc.endpoints == {"cn-beijing": "https://proxy.example.com"}
    assert s.ehpc.connect_timeout == 2.0
    assert s.ehpc.request_timeout == 45.0
    assert s.ehpc.rate_limits == {"cn-beijing": "10/1s"}
    assert s.ehpc.max_connections == 20
    assert s.credentials.source == "static"
    assert s.vault.auth_method == "approle"
    assert s.vault.timeout == 1.5
    assert s.passwords.exclude_lookalikes is True
    assert (s.retry.attempts, s.retry.initial_wait, s.retry.max_wait) == (3, 0.25, 60.0)
    assert s.retry.conflict_attempts == 8  # untouched keys keep their defaults
    assert s.rotation.concurrency == 8
    assert s.rotation.period == 7 * DAY
    assert s.rotation.max_failures == "10%"
    assert s.rotation.cluster_deadline == 3600.0
    assert s.inventory.clusters == [
        ClusterEntry(id="ehpc-hz-1", region="cn-hangzhou"),
        ClusterEntry(id="ehpc-bj-2", region="cn-beijing", period=12 * 3600.0),
    ]
    assert s.inventory.exclude == ["ehpc-hz-skipme"]
    assert s.serve.listen == "127.0.0.1:9000"
    assert (s.logging.level, s.logging.format) == ("debug", "json")


def test_cluster_entries_as_strings(tmp_path: Path) -> None:
    path = _write(tmp_path, '[inventory]\nclusters = ["cn-hangzhou/ehpc-hz-1", "ehpc-bare"]\n')
    clusters = load_settings(path, environ={}).inventory.clusters
    assert clusters == [
        ClusterEntry(id="ehpc-hz-1", region="cn-hangzhou"),
        ClusterEntry(id="ehpc-bare", region=""),
    ]


# -- environment overrides --------------------------------------------------------------------


def test_environment_overrides_typed_values() -> None:
    settings = load_settings(
        None,
        environ={
            "ROTATOR_ROTATION_CONCURRENCY": "16",
            "ROTATOR_ROTATION_PERIOD": "7d",
            "ROTATOR_EHPC_ALLOW_INSECURE_HTTP": "true",
            "ROTATOR_EHPC_REGIONS": "cn-hangzhou, cn-shanghai,,",
            "ROTATOR_EHPC_REQUEST_TIMEOUT": "250ms",
            "ROTATOR_PASSWORDS_EXCLUDE_LOOKALIKES": "no",
            "ROTATOR_LOGGING_FORMAT": "json",
            "ROTATOR_INVENTORY_CLUSTERS": "cn-hangzhou/ehpc-hz-1,ehpc-x",
        },
    )
    assert settings.rotation.concurrency == 16
    assert settings.rotation.period == 7 * DAY
    assert settings.ehpc.allow_insecure_http is True
    assert settings.ehpc.regions == ["cn-hangzhou", "cn-shanghai"]
    assert settings.ehpc.request_timeout == 0.25
    assert settings.passwords.exclude_lookalikes is False
    assert settings.logging.format == "json"
    assert [c.id for c in settings.inventory.clusters] == ["ehpc-hz-1", "ehpc-x"]


def test_environment_beats_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[rotation]\nconcurrency = 4\nperiod = '1d'\n")
    settings = load_settings(path, environ={"ROTATOR_ROTATION_CONCURRENCY": "64"})
    assert settings.rotation.concurrency == 64
    assert settings.rotation.period == DAY  # the file still counts for the rest


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "[rotation]\nconcurrency = 5\n")
    settings = load_settings(None, environ={"ROTATOR_CONFIG": str(path)})
    assert settings.rotation.concurrency == 5
    assert settings.source == str(path)


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("ROTATOR_ROTATION_CONCURRENCY", "lots", "rotation.concurrency"),
        ("ROTATOR_ROTATION_CONCURRENCY", "2.5", "rotation.concurrency"),
        ("ROTATOR_EHPC_ALLOW_INSECURE_HTTP", "maybe", "ehpc.allow_insecure_http"),
        ("ROTATOR_ROTATION_PERIOD", "a month", "rotation.period"),
        ("ROTATOR_LOGGING_FORMAT", "xml", "logging.format"),
        ("ROTATOR_EHPC_ENDPOINTS", "https://x", "ehpc.endpoints"),
    ],
)
def test_bad_environment_value_names_the_key(name: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={name: value})
    assert info.value.key == key
    assert str(info.value).startswith(f"ConfigError: {key}: ")


# -- bad input: one ConfigError naming the key --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "detail"),
    [
        ("[rotation]\nconcurrency = 0\n", "rotation.concurrency", ">= 1"),
        ("[rotation]\nconcurrency = -3\n", "rotation.concurrency", ">= 1"),
        ("[rotation]\nconcurrency = 'many'\n", "rotation.concurrency", "whole number"),
        ("[rotation]\nconcurrency = true\n", "rotation.concurrency", "whole number"),
        ("[rotation]\nperiod = 'a month'\n", "rotation.period", "not a duration"),
        ("[rotation]\nperiod = '0s'\n", "rotation.period", "longer than 0s"),
        ("[rotation]\nperiod = -5\n", "rotation.period", "negative"),
        ("[rotation]\nperiod = [1]\n", "rotation.period", "duration"),
        ("[retry]\nmax_wait = '5 minutes'\n", "retry.max_wait", "not a duration"),
        ("[retry]\nconflict_attempts = 0\n", "retry.conflict_attempts", ">= 1"),
        ("[logging]\nformat = 'xml'\n", "logging.format", "'xml' is not one of"),
        ("[vault]\nauth_method = 'ldap'\n", "vault.auth_method", "'ldap'"),
        ("[ehpc]\nallow_insecure_http = 'sure'\n", "ehpc.allow_insecure_http", "true or false"),
        ("[ehpc]\nregions = 5\n", "ehpc.regions", "expected a list"),
        ("[ehpc]\nregions = ['cn-hangzhou', 7]\n", "ehpc.regions[1]", "string"),
        ("[ehpc]\nendpoints = 'https://x'\n", "ehpc.endpoints", "table"),
        ("[ehpc]\nrate_limits = { cn-beijing = 5 }\n", "ehpc.rate_limits.cn-beijing", "string"),
        ("[ehpc]\nmax_connections = 0\n", "ehpc.max_connections", ">= 1"),
        ("[ehpc]\nregion = ['cn-hangzhou']\n", "ehpc", "unknown key(s) region"),
        ("ehpc = 5\n", "ehpc", "expected a table"),
        ("[credentials]\nsource = 'static'\n", "credentials", "access_key_id"),
        ("[inventory]\nsource = 'discover'\n", "ehpc.regions", "at least one region"),
        ("[[inventory.clusters]]\nregion = 'cn-hangzhou'\n", "inventory.clusters[0]", "id"),
        (
            "[[inventory.clusters]]\nid = 'a'\n"
            "[[inventory.clusters]]\nid = 'b'\nperiod = 'often'\n",
            "inventory.clusters[1].period",
            "not a duration",
        ),
        (
            "[[inventory.clusters]]\nid = 'a'\nperiode = '7d'\n",
            "inventory.clusters[0]",
            "unknown key(s) periode",
        ),
    ],
)
def test_bad_value_gives_one_error_naming_the_key(
    tmp_path: Path, text: str, key: str, detail: str | None
) -> None:
    error = _error(tmp_path, text)
    assert error.key == key
    assert str(error).startswith(f"ConfigError: {key}: ")
    if detail is not None:
        assert detail in str(error)
    assert "\n" not in str(error)  # one line an operator can read


def test_unknown_section_is_named(tmp_path: Path) -> None:
    error = _error(tmp_path, "[rotaton]\nconcurrency = 4\n")
    assert "rotaton" in str(error)
    assert "unknown section" in str(error)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(missing, environ={})
    assert str(missing) in str(info.value)


def test_bad_toml_is_named_with_its_position(tmp_path: Path) -> None:
    error = _error(tmp_path, "[rotation]\nconcurrency = = 4\n")
    assert "not valid TOML" in str(error)
    assert "rotator.toml" in str(error)
    assert "line 2" in str(error)


def test_fractional_number_for_a_whole_number_key_is_refused(tmp_path: Path) -> None:
    error = _error(tmp_path, "[rotation]\nconcurrency = 2.5\n")
    assert error.key == "rotation.concurrency"


def test_unknown_log_level_is_refused(tmp_path: Path) -> None:
    error = _error(tmp_path, "[logging]\nlevel = 'verbose'\n")
    assert error.key == "logging.level"


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("30d", 30 * DAY),
        ("42", 42.0),
        (7, 7.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten seconds", "5 weeks", "-1s", "1e3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, key="serve.jitter")
    assert info.value.key == "serve.jitter"


# -- the example config -----------------------------------------------------------------------


def _example() -> Path:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} not written yet")
    return EXAMPLE


def test_example_config_loads() -> None:
    settings = load_settings(_example(), environ={})
    assert settings.source == str(EXAMPLE)


def test_example_config_documents_every_setting() -> None:
    data = tomllib.loads(_example().read_text(encoding="utf-8"))
    defaults = Settings()
    sections = [f.name for f in dataclasses.fields(Settings) if f.name != "source"]
    expected = [
        f"{name}.{f.name}" for name in sections for f in dataclasses.fields(getattr(defaults, name))
    ]
    assert len(expected) > 50  # the walk really saw every section's fields
    missing = [key for key in expected if key.split(".")[1] not in data.get(key.split(".")[0], {})]
    assert missing == []
    assert set(data) == {f.name for f in dataclasses.fields(Settings)} - {"source"}
