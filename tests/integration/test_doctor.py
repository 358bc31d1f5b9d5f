"""``rotator doctor`` as a real process against the simulator and a real OpenBao."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rotator.doctor import _clock_skew
from rotator.ehpc import signer
from rotator.ehpc.client import EhpcClient, Endpoints
from rotator.ehpc.credentials import StaticCredentials
from rotator.secret import Secret, write_secret_file
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer, free_port, start_openbao
from rotator.vault.setup import ACL_POLICIES, default_policy_dir, render_policy, vault_setup
from tests.support.fleet import Fleet
from tests.support.sim import SimAdmin, SimFactory
from tests.support.vault import VaultPaths, create_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

REGIONS = ("cn-hangzhou", "cn-shanghai")


def checks(stdout: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


async def snapshot(fleet: Fleet) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
    """Every cluster's real VNC password and change count; every Vault secret's version."""
    clusters = {
        cid: (c["vnc_password"], c["change_count"])
        for cid, c in (await fleet.admin_clusters()).items()
    }
    versions: dict[str, int] = {}
    async with fleet.store() as store:
        client = store.client
        mount = client.settings.kv_mount
        for base in (fleet.paths.root_path, fleet.paths.vnc_path, fleet.paths.runs_path):
            for key in await client.kv_list(mount, base):
                meta = await client.kv_metadata(mount, f"{base}/{key}") or {}
                versions[f"{base}/{key}"] = int(meta.get("current_version") or 0)
    return clusters, versions


async def test_a_healthy_setup_passes_every_check_and_changes_nothing(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=12, regions=REGIONS)
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides={"passwords": {"source": "vault"}}
    )
    settings = vault_paths.settings(openbao)
    async with VaultClient(settings) as admin:
        await vault_setup(admin, settings)
        token = await create_token(admin, policies=["rotator", "default"])
    (tmp_path / "vault-token").write_text(token.reveal(), encoding="utf-8")
    assert (await fleet.cli("rotate", "--cluster", sim.inventory.in_region(None)[0].id)).code == 0
    before = await snapshot(fleet)

    result = await fleet.cli("doctor", "--json")

    assert result.code == 0, result.stdout + result.stderr[-2000:]
    found = checks(result.stdout)
    for name in (
        "vault.reachable",
        "vault.tls",
        "vault.auth",
        "vault.token_ttl",
        "vault.password_policy",
        "alibaba.credentials",
        "passwords.rule",
        "inventory.listed",
        *(f"alibaba.{what} {r}" for r in REGIONS for what in ("list_clusters", "clock", "tls")),
    ):
        assert found[name]["ok"], found.get(name)
    capabilities = [n for n in found if n.startswith("vault.capabilities ")]
    assert any(f"data/{vault_paths.vnc_path}/" in n for n in capabilities)
    assert "POST" in found["alibaba.list_clusters cn-hangzhou"]["detail"]

    text = await fleet.cli("doctor")
    assert text.code == 0
    assert "[ok  ] vault.auth" in text.stdout
    assert text.stdout.rstrip().endswith("doctor: all checks passed")

    assert await snapshot(fleet) == before, "doctor changed a password or a Vault secret"
    everything = result.stdout + result.stderr + text.stdout + text.stderr
    secrets = await fleet.all_secret_values() | {token.reveal()}
    assert not {v for v in secrets if v in everything}


async def test_a_wrong_accesskey_secret_fails_with_the_fix(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=4, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    wrong = "wrong-" + sim.config.access_key_secret[::-1]
    write_secret_file(tmp_path / "ak-secret", wrong)
    before = await snapshot(fleet)

    result = await fleet.cli("doctor", "--json")

    assert result.code == 1
    found = checks(result.stdout)
    probe = found["alibaba.list_clusters cn-hangzhou"]
    assert not probe["ok"]
    assert "SignatureDoesNotMatch" in probe["detail"]
    assert "access_key_secret_file" in probe["fix"]
    assert found["vault.auth"]["ok"]
    assert "inventory.listed" not in found  # not judged without a working ListClusters
    assert wrong not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert await snapshot(fleet) == before

    text = await fleet.cli("doctor")
    assert text.code == 1
    assert "[FAIL] alibaba.list_clusters cn-hangzhou" in text.stdout
    assert "       fix: the AccessKey secret is wrong" in text.stdout


async def test_a_token_lacking_a_capability_names_the_path(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=4, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    settings = vault_paths.settings(openbao)
    policy = render_policy(
        default_policy_dir().joinpath(ACL_POLICIES["rotator"]).read_text(encoding="utf-8"),
        settings,
        password_policy="ehpc-vnc",
    )
    vnc_data = f'path "secret/data/{vault_paths.vnc_path}/*"'
    assert vnc_data in policy
    head, _, tail = policy.partition(vnc_data)
    partial = head + tail.partition("}")[2]  # the same policy without write access to VNC data
    name = f"partial-{vault_paths.prefix.split('/')[0]}"
    async with VaultClient(settings) as admin:
        await admin.request("PUT", f"sys/policies/acl/{name}", json={"policy": partial})
        token = await create_token(admin, policies=[name, "default"])
    (tmp_path / "vault-token").write_text(token.reveal(), encoding="utf-8")

    result = await fleet.cli("doctor", "--json")

    assert result.code == 1
    found = checks(result.stdout)
    failed = {n: c for n, c in found.items() if not c["ok"]}
    assert list(failed) == [f"vault.capabilities secret/data/{vault_paths.vnc_path}/doctor-probe"]
    only = next(iter(failed.values()))
    assert "missing create, read, update" in only["detail"]
    assert "rotator" in only["fix"]


async def test_an_unreachable_vault_fails_in_one_clear_line(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=4, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    nowhere = f"http://127.0.0.1:{free_port()}"
    config = fleet.config.read_text(encoding="utf-8").replace(openbao.addr, nowhere)
    (tmp_path / "down.toml").write_text(config, encoding="utf-8")

    result = await fleet.cli("doctor", config=tmp_path / "down.toml")

    assert result.code == 1, result.stdout
    assert f"[FAIL] vault.reachable: cannot reach Vault at {nowhere}" in result.stdout
    assert "fix: check vault.addr" in result.stdout
    assert "vault.auth" not in result.stdout
    # The API side is still checked: one run shows every problem.
    assert "[ok  ] alibaba.list_clusters cn-hangzhou" in result.stdout
    assert "Traceback" not in result.stderr


async def test_clusters_listclusters_does_not_return_are_reported(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=4, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths)
    async with fleet.store() as store:
        await store.write_root("ehpc-hz-gone2024", "root", Secret("Abc123"), "cn-hangzhou")

    result = await fleet.cli("doctor", "--json")

    assert result.code == 1
    listed = checks(result.stdout)["inventory.listed"]
    assert not listed["ok"]
    assert "1 of 5 clusters" in listed["detail"]
    assert "ehpc-hz-gone2024" in listed["detail"]
    assert "E-HPC 2.0" in listed["fix"]


async def test_the_endpoints_tls_is_verified_and_an_untrusted_one_fails(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=4, regions=REGIONS, tls=True)
    assert sim.ca_file is not None
    fleet = await Fleet.create(
        tmp_path,
        sim,
        openbao,
        vault_paths,
        overrides={"ehpc": {"allow_insecure_http": False, "ca_bundle": str(sim.ca_file)}},
        seed_roots=False,  # (the admin API is behind the same private CA)
    )

    trusted = await fleet.cli("doctor", "--json")

    assert trusted.code == 0, trusted.stdout
    tls = checks(trusted.stdout)["alibaba.tls cn-hangzhou"]
    assert tls["ok"]
    assert re.search(r"TLSv1\.[23], certificate verified", tls["detail"])

    config = fleet.config.read_text(encoding="utf-8").replace(f'ca_bundle = "{sim.ca_file}"\n', "")
    (tmp_path / "system-cas.toml").write_text(config, encoding="utf-8")
    untrusted = await fleet.cli("doctor", "--json", config=tmp_path / "system-cas.toml")

    assert untrusted.code == 1
    tls = checks(untrusted.stdout)["alibaba.tls cn-hangzhou"]
    assert not tls["ok"]
    assert "certificate not trusted" in tls["detail"]
    assert "ehpc.ca_bundle" in tls["fix"]


async def test_the_default_credential_chain_names_its_provider(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=4, regions=REGIONS)
    fleet = await Fleet.create(
        tmp_path, sim, openbao, vault_paths, overrides={"credentials": {"source": "default"}}
    )
    config = re.sub(r"access_key_(id|secret_file) = .*\n", "", fleet.config.read_text("utf-8"))
    (tmp_path / "chain.toml").write_text(config, encoding="utf-8")
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": sim.config.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": sim.config.access_key_secret,
        "ALIBABA_CLOUD_PROFILE": "none",
        "ALIBABA_CLOUD_CONFIG_FILE": str(tmp_path / "no-profile.ini"),
    }

    result = await fleet.cli("doctor", "--json", env=env, config=tmp_path / "chain.toml")

    assert result.code == 0, result.stdout + result.stderr[-2000:]
    detail = checks(result.stdout)["alibaba.credentials"]["detail"]
    assert "from the default chain (" in detail
    assert "env" in detail.lower()
    assert sim.config.access_key_secret not in result.stdout + result.stderr


async def test_a_get_listclusters_is_signed_as_the_official_sdks_sign_it(
    sim_factory: SimFactory,
) -> None:
    """``ehpc.method = "GET"`` (issue 11) makes doctor probe with GET: the simulator, which
    verifies signatures as the gateway does, accepts it, and its Date header gives the skew."""
    sim = await sim_factory(clusters=3, regions=REGIONS)
    key = StaticCredentials(sim.config.access_key_id, Secret(sim.config.access_key_secret))
    endpoints = Endpoints(single=sim.base_url, allow_insecure_http=True)
    for method in ("GET", "POST"):
        async with EhpcClient(credentials=key, endpoints=endpoints, method=method) as api:
            sent = time.time()
            answer = await api.probe("cn-hangzhou", {"PageNumber": "1", "PageSize": "1"})
            skew = _clock_skew(answer.date, sent, time.time())
        assert answer.status == 200, answer.body
        assert answer.body["TotalCount"] == 3
        assert skew is not None
        assert abs(skew) < 5


async def test_vaults_tls_verified_untrusted_and_switched_off(
    tmp_path: Path, sim_factory: SimFactory, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=2, regions=REGIONS)
    with start_openbao(tmp_path / "bao", tls=True) as server:
        assert server.ca_cert is not None
        fleet = await Fleet.create(
            tmp_path,
            sim,
            server,
            vault_paths,
            overrides={"vault": {"ca_cert": str(server.ca_cert)}},
            seed_roots=False,
        )
        trusted = await fleet.cli("doctor", "--json")
        assert trusted.code == 0, trusted.stdout
        assert checks(trusted.stdout)["vault.tls"]["detail"].endswith(
            f"certificate verified against {server.ca_cert}"
        )

        base = fleet.config.read_text(encoding="utf-8")
        without = base.replace(f'ca_cert = "{server.ca_cert}"\n', "")
        (tmp_path / "untrusted.toml").write_text(without, encoding="utf-8")
        untrusted = await fleet.cli("doctor", "--json", config=tmp_path / "untrusted.toml")
        assert untrusted.code == 1
        found = checks(untrusted.stdout)
        assert not found["vault.reachable"]["ok"]
        assert not found["vault.tls"]["ok"]
        assert "not trusted" in found["vault.tls"]["detail"]
        assert "vault.ca_cert" in found["vault.tls"]["fix"]

        off = without.replace("[vault]\n", "[vault]\nskip_verify = true\n")
        (tmp_path / "off.toml").write_text(off, encoding="utf-8")
        unverified = await fleet.cli("doctor", "--json", config=tmp_path / "off.toml")
        assert unverified.code == 1
        found = checks(unverified.stdout)
        assert found["vault.reachable"]["ok"]
        assert not found["vault.tls"]["ok"]
        assert "verification is disabled" in found["vault.tls"]["detail"]


async def test_a_missing_token_file_is_a_failed_check_not_a_crash(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=2, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths, seed_roots=False)
    (tmp_path / "vault-token").unlink()

    result = await fleet.cli("doctor")

    assert result.code == 1, result.stdout + result.stderr[-2000:]
    assert "[FAIL] vault.auth: token auth failed: vault.token_file: token file" in result.stdout
    assert "fix: log in again" in result.stdout
    assert "[ok  ] alibaba.list_clusters cn-hangzhou" in result.stdout


async def test_sts_credentials_are_probed_as_the_client_signs_them(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """doctor's ListClusters goes through the client's one signing path: with STS credentials
    it sends and signs ``x-acs-accesskey-id`` beside the token, as the official SDK does."""
    sim = await sim_factory(clusters=4, regions=REGIONS)
    async with aiohttp.ClientSession() as http:
        await SimAdmin(http, sim).add_credential("STS.doctor", "sts-doctor-secret", "sts-doc-tok")
    sts = {
        "access_key_id": "STS.doctor",
        "access_key_secret_file": str(write_secret_file(tmp_path / "sts", "sts-doctor-secret")),
        "security_token_file": str(write_secret_file(tmp_path / "sts-token", "sts-doc-tok")),
    }
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths, overrides={"credentials": sts})

    result = await fleet.cli("doctor", "--json")

    assert result.code == 0, result.stdout + result.stderr[-2000:]
    found = checks(result.stdout)
    assert "with an STS token" in found["alibaba.credentials"]["detail"]
    for region in REGIONS:
        assert found[f"alibaba.list_clusters {region}"]["ok"]
    assert "sts-doc-tok" not in result.stdout + result.stderr

    seen: list[dict[str, str]] = []

    async def capture(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response({"RequestId": "CAP-1", "TotalCount": 0, "Clusters": {}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", capture)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        config = fleet.config.read_text(encoding="utf-8").replace(
            sim.base_url, str(server.make_url("")).rstrip("/")
        )
        (tmp_path / "capture.toml").write_text(config, encoding="utf-8")
        await fleet.cli("doctor", "--json", config=tmp_path / "capture.toml")
    finally:
        await server.close()
    assert seen
    for headers in seen:
        parsed = signer.parse_authorization(headers["authorization"])
        assert parsed is not None
        assert headers["x-acs-accesskey-id"] == "STS.doctor"
        assert {"x-acs-accesskey-id", "x-acs-security-token"} <= set(parsed[1])


async def test_an_unreadable_accesskey_secret_file_is_a_failed_check(
    tmp_path: Path, sim_factory: SimFactory, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    sim = await sim_factory(clusters=2, regions=REGIONS)
    fleet = await Fleet.create(tmp_path, sim, openbao, vault_paths, seed_roots=False)
    (tmp_path / "ak-secret").unlink()

    result = await fleet.cli("doctor", "--json")

    assert result.code == 1, result.stdout + result.stderr[-2000:]
    found = checks(result.stdout)["alibaba.credentials"]
    assert not found["ok"]
    assert "credentials.access_key_secret_file" in found["detail"]
    assert "readable" in found["fix"]
    assert "Traceback" not in result.stderr
