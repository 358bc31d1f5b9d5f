"""Units of vault-setup: policy templates, the ownership digest, the events policy."""

from __future__ import annotations

import re

import pytest

from rotator.config import load_settings
from rotator.errors import ConfigError
from rotator.vault.settings import VaultSettings
from rotator.vault.setup import (
    EVENTS_POLICY,
    Step,
    default_policy_dir,
    policy_is_ours,
    render_policy,
    stored_policy_text,
)


def test_the_events_policy_grants_what_a_vault_subscription_needs() -> None:
    """Vault Enterprise (1.16+): read on sys/events/subscribe/<type> for exactly the types serve
    subscribes to, and list + subscribe with subscribe_event_types on the paths an event is
    about (the trigger path, the lease documents, the VNC secrets), nothing more."""
    settings = VaultSettings(kv_mount="kv", vnc_path="e/vnc")
    template = default_policy_dir().joinpath(EVENTS_POLICY[1]).read_text(encoding="utf-8")
    text = render_policy(template, settings, password_policy="pp", trigger_path="e/trigger")
    blocks = _blocks(text)
    kv_types = ["kv-v2/data-write", "kv-v2/data-patch"]
    for event_type in (*kv_types, "lease/expired", "lease/revoked"):
        assert blocks.pop(f"sys/events/subscribe/{event_type}") == {"capabilities": ["read"]}
    for path in ("kv/data/e/trigger/*", "kv/data/e/leases/*", "kv/data/e/vnc/*"):
        assert blocks.pop(path) == {
            "capabilities": ["list", "subscribe"],
            "subscribe_event_types": kv_types,
        }
    assert blocks == {}


def _blocks(text: str) -> dict[str, dict[str, list[str]]]:
    """``path "X" { key = [..] }`` blocks of an HCL policy, comments dropped."""
    rules = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    found: dict[str, dict[str, list[str]]] = {}
    for path, body in re.findall(r'path\s+"([^"]+)"\s*\{(.*?)\}', rules, re.DOTALL):
        found[path] = {
            key: re.findall(r'"([^"]*)"', values)
            for key, values in re.findall(r"(\w+)\s*=\s*\[([^\]]*)\]", body)
        }
    return found


def test_only_an_unedited_policy_written_by_vault_setup_counts_as_rotators() -> None:
    text = stored_policy_text('path "a/*" {\n  capabilities = ["read"]\n}\n', {"kv_mount": "a"})
    assert text.startswith("# Written by `rotator vault-setup` (kv_mount=a).\n")
    assert policy_is_ours(text)
    assert not policy_is_ours(text.replace('"read"', '"read", "list"'))
    assert not policy_is_ours('path "a/*" {\n  capabilities = ["read"]\n}\n')


def test_comment_lines_keep_their_placeholders() -> None:
    template = "# sed -e 's|{kv_mount}|secret|g'\npath \"{kv_mount}/data/x\" {}\n"
    text = render_policy(template, VaultSettings(kv_mount="secret"), password_policy="p")
    assert text == "# sed -e 's|{kv_mount}|secret|g'\npath \"secret/data/x\" {}\n"


def test_a_step_says_what_it_did_or_would_do() -> None:
    step = Step("approle role rotator", "differs", ("secret_id_ttl: 604800 -> 86400",))
    assert step.lines(dry_run=False) == [
        "approle role rotator differs from what rotator wants; left as it is "
        "(rerun with --force to overwrite it):",
        "    secret_id_ttl: 604800 -> 86400",
    ]
    assert Step("policy rotator", "create").lines(dry_run=True) == ["would create policy rotator"]
    assert Step("policy rotator", "update").lines(dry_run=False) == ["policy rotator updated"]


def test_history_versions_must_keep_at_least_one_version() -> None:
    assert load_settings(None, environ={}).vault.history_versions == 50
    with pytest.raises(ConfigError, match=r"vault\.history_versions"):
        load_settings(None, environ={"ROTATOR_VAULT_HISTORY_VERSIONS": "0"})
