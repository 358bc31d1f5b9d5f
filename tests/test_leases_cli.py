"""``rotator checkout`` and friends: what the CLI sends, and where it refuses to send it."""

from __future__ import annotations

import argparse

import pytest

from rotator.leases import cli


def _args(server: str) -> argparse.Namespace:
    return argparse.Namespace(
        command="checkout",
        cluster_id="ehpc-hz-1",
        ttl=None,
        reason="",
        server=server,
        ca_cert=None,
        json=False,
    )


@pytest.mark.parametrize(
    "server",
    ["http://rotator.example.com:8080", "http://10.0.0.5:8080", "http://[2001:db8::1]:8080"],
)
def test_a_vault_token_never_crosses_the_network_in_clear(
    server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The person's own Vault token goes out in X-Vault-Token and the password comes back:
    over plain http:// only to this machine."""
    monkeypatch.setenv("VAULT_TOKEN", "hvs.personal-token")

    async def never(*_args: object) -> tuple[int, dict[str, object]]:
        raise AssertionError("nothing may be sent")

    monkeypatch.setattr(cli, "_call", never)
    assert cli.run(_args(server)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "https://" in err
    assert "hvs.personal-token" not in err


@pytest.mark.parametrize(
    "server", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
)
def test_plain_http_to_this_machine_is_allowed(server: str) -> None:
    assert cli.insecure_server(server) is None


def test_https_anywhere_is_allowed() -> None:
    assert cli.insecure_server("https://rotator.example.com") is None
    assert cli.insecure_server("ftp://rotator.example.com") is not None
