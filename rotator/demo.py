"""``rotator demo``: the whole product on one machine, with nothing to set up.

Starts a real OpenBao dev server and the E-HPC simulator (with faults on), loads the clusters'
root passwords into Vault, rotates every VNC password with progress and a summary, then checks
that Vault holds exactly the password each cluster now has. Stops everything it started.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from rotator.commands import ProgressHooks
from rotator.commands import console as make_console
from rotator.config import (
    CredentialsSettings,
    EhpcSettings,
    InventorySettings,
    RetrySettings,
    RotationSettings,
    Settings,
    VaultConfig,
    VerifySettings,
)
from rotator.engine.inventory import Selection, resolve_targets
from rotator.engine.report import Outcome, RunSummary
from rotator.engine.runtime import new_run_id, open_runtime
from rotator.secret import Secret, write_secret_file
from rotator.sim import FaultConfig, SimConfig, Simulator
from rotator.vault.devserver import start_openbao
from rotator.vault.store import VaultStore

__all__ = ["run_demo"]

REGIONS = ("cn-hangzhou", "cn-shanghai", "cn-beijing")


async def _sim_clusters(base_url: str, admin_token: str) -> list[dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{base_url}/_sim/clusters", headers={"Authorization": f"Bearer {admin_token}"}
        ) as response,
    ):
        response.raise_for_status()
        clusters: list[dict[str, object]] = await response.json()
        return clusters


async def run_demo(*, clusters: int = 200, keep: bool = False, stop: asyncio.Event) -> int:
    console = make_console()  # off a terminal: no colour, nothing wrapped at 80 columns
    workdir = Path(tempfile.mkdtemp(prefix="rotator-demo-"))
    try:
        return await _demo(console, workdir, clusters=clusters, keep=keep, stop=stop)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _heading(console: Console, text: str) -> None:
    """A rule across a terminal; off one the console has no width, so a short plain line."""
    if console.is_terminal:
        console.rule(f"[bold]{text}")
    else:
        console.print(f"== {text} ==")


async def _demo(
    console: Console, workdir: Path, *, clusters: int, keep: bool, stop: asyncio.Event
) -> int:
    _heading(console, "rotator demo")
    console.print("Starting a real OpenBao dev server and the E-HPC simulator ...")
    secret_key = secrets.token_urlsafe(24)
    with start_openbao(workdir / "openbao") as bao:
        token_file = write_secret_file(workdir / "vault-token", bao.root_token.reveal())
        key_file = write_secret_file(workdir / "access-key-secret", secret_key)
        sim_config = SimConfig(
            clusters=clusters,
            regions=REGIONS,
            seed=7,
            access_key_id="demo-access-key",
            access_key_secret=secret_key,
            faults=FaultConfig(
                service_unavailable_rate=0.05,
                agent_error_rate=0.01,
                conflict_rate=0.02,
                conflict_seconds=0.5,
                drop_rate=0.01,
                latency_ms=5,
                jitter_ms=10,
            ),
        )
        async with Simulator(sim_config) as sim:
            console.print(f"  OpenBao   {bao.addr}")
            console.print(
                f"  simulator {sim.base_url}  ({clusters} clusters over {len(REGIONS)} regions; "
                "faults: 5% ServiceUnavailable, 1% AgentError, ConflictOpt windows, 1% dropped "
                "connections after applying, 5-15 ms latency)"
            )
            settings = Settings(
                ehpc=EhpcSettings(
                    regions=list(REGIONS),
                    endpoint=sim.base_url,
                    allow_insecure_http=True,
                    rate_limit="150/1s",
                    request_timeout=5.0,
                ),
                credentials=CredentialsSettings(
                    source="static",
                    access_key_id="demo-access-key",
                    access_key_secret_file=str(key_file),
                ),
                vault=VaultConfig(
                    addr=bao.addr, allow_insecure_http=True, token_file=str(token_file)
                ),
                retry=RetrySettings(
                    initial_wait=0.05,
                    max_wait=0.5,
                    conflict_initial_wait=0.2,
                    conflict_max_wait=1.0,
                    throttle_initial_wait=0.2,
                ),
                rotation=RotationSettings(concurrency=32, claim_ttl=10.0),
                inventory=InventorySettings(source="vault"),
                # Each rotated password is checked with one VNC login (issue 13).
                verify=VerifySettings(enabled=True, url=f"{sim.vnc_url}/_vnc/{{cluster_id}}"),
                source="demo",
            )
            inventory = await _sim_clusters(sim.base_url, sim.admin_token)
            async with open_runtime(settings) as runtime:
                console.print(f"Loading {len(inventory)} root passwords into Vault ...")
                await asyncio.gather(
                    *(
                        runtime.store.write_root(
                            str(c["id"]), "root", Secret(str(c["root_password"])), str(c["region"])
                        )
                        for c in inventory
                    )
                )
                targets = await resolve_targets(runtime, Selection(all=True))
                run_id = new_run_id()
                with ProgressHooks(len(targets), enabled=sys.stderr.isatty()) as progress:
                    runtime.hooks = progress
                    summary = await runtime.rotate(targets, run_id=run_id, stop=stop)
                console.print(summary.table(root_path="secret/ehpc/root"))
                console.print(_verified_table(summary))
                ok = await _verify(console, runtime.store, sim.base_url, sim.admin_token)
            sample = next(
                (o.cluster_id for o in summary.outcomes if o.outcome is Outcome.ROTATED), None
            )
            _heading(console, "where to look")
            console.print(
                f"Run report:  bao kv get secret/ehpc/runs/{run_id}\n"
                + (
                    f"A password:  bao kv get -field=password secret/ehpc/vnc/{sample}\n"
                    f"Its history: bao kv metadata get secret/ehpc/vnc/{sample}\n"
                    if sample
                    else ""
                )
                + (
                    f"with BAO_ADDR={bao.addr} and BAO_TOKEN=$(cat {token_file})"
                    if keep
                    else "Run `rotator demo --keep` to keep both servers up and try these."
                )
            )
            if keep:
                console.print("Both servers stay up until Ctrl-C.")
                await stop.wait()
    console.print("Stopped OpenBao and the simulator.")
    return 0 if ok else 1


async def _verify(console: Console, store: VaultStore, base_url: str, admin_token: str) -> bool:
    """Every cluster's real password must be in Vault, as ``password`` or ``pending_password``."""
    clusters = await _sim_clusters(base_url, admin_token)
    states = await asyncio.gather(*(store.read_vnc(str(c["id"])) for c in clusters))
    current = pending = lost = 0
    for cluster, state in zip(clusters, states, strict=True):
        real = Secret(str(cluster["vnc_password"]))
        if state.password == real:
            current += 1
        elif state.pending_password == real:
            pending += 1
        elif int(str(cluster.get("change_count", 0))) > 0:
            lost += 1
    changed = sum(1 for c in clusters if int(str(c.get("change_count", 0))) > 0)
    _heading(console, "check: Vault against the simulator")
    console.print(
        f"{changed} clusters had their password changed; Vault holds it as the current password "
        f"for {current}, as a pending password for {pending}; lost: {lost}"
    )
    if lost:
        console.print("[red bold]FAILED: some changed passwords are not in Vault")
        return False
    console.print("[green bold]OK: Vault holds every password the simulator has")
    return True


def _verified_table(summary: RunSummary, *, rows: int = 8) -> Table:
    """A sample of clusters with the VNC check's result: the ``verified`` column."""
    table = Table(title="VNC login with the new password (first clusters)")
    for column in ("cluster", "region", "outcome", "verified"):
        table.add_column(column)
    for outcome in summary.outcomes[:rows]:
        colour = {"verified": "green", "verify_failed": "red", "unverified": "yellow"}.get(
            outcome.verified.value, "dim"
        )
        table.add_row(
            outcome.cluster_id,
            outcome.region,
            outcome.outcome.value,
            f"[{colour}]{outcome.verified.value}[/{colour}]",
        )
    table.caption = ", ".join(f"{k}: {v}" for k, v in summary.verification.items() if v)
    return table
