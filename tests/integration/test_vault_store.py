"""VaultStore on a real OpenBao: the layout, check-and-set, status metadata, run reports, and the
password a person reads with the real ``bao`` CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from rotator.errors import RetryClass, VaultConflictError, VaultError
from rotator.passwords import is_valid_vnc_password
from rotator.secret import Secret
from rotator.vault.client import VaultClient
from rotator.vault.devserver import OpenBaoServer
from rotator.vault.setup import vault_setup
from rotator.vault.store import VaultStore, VncState
from tests.support.vault import VaultPaths, create_token, run_bao

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

CLUSTER = "ehpc-hz-0001"
T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest_asyncio.fixture(params=["hvac", "aiohttp"])
async def store(
    openbao: OpenBaoServer, vault_paths: VaultPaths, request: pytest.FixtureRequest
) -> AsyncIterator[VaultStore]:
    """Every store test runs over both KV transports (``vault.transport``)."""
    settings = vault_paths.settings(openbao, transport=request.param)
    async with VaultClient(settings) as client:
        yield VaultStore(client)


async def _rotate(store: VaultStore, state: VncState, password: str, rid: str) -> VncState:
    staged = await store.stage_pending(state, Secret(password), region="cn-hangzhou")
    return await store.commit(staged, request_id=rid, rotated_at=T0, region="cn-hangzhou")


# -- root credentials -----------------------------------------------------------------------


async def test_root_credential_round_trip_and_listing(store: VaultStore) -> None:
    assert await store.list_root_clusters() == []
    await store.write_root("c-b", "root", Secret("Root12"), "cn-hangzhou")
    await store.write_root("c-a", "admin", Secret("Root34"), None)
    assert await store.list_root_clusters() == ["c-a", "c-b"]
    root = await store.read_root("c-b")
    assert (root.user, root.password.reveal(), root.region) == ("root", "Root12", "cn-hangzhou")
    assert "Root12" not in repr(root)


async def test_missing_root_credential_is_terminal_and_says_how_to_add_it(
    store: VaultStore, vault_paths: VaultPaths
) -> None:
    with pytest.raises(VaultError) as caught:
        await store.read_root("c-none")
    error = caught.value
    assert error.code == "RootCredentialMissing"
    assert error.retry_class is RetryClass.TERMINAL
    assert error.cluster_id == "c-none"
    assert f"bao kv put secret/{vault_paths.root_path}/c-none" in error.message


async def test_path_traversal_in_a_cluster_id_is_refused(store: VaultStore) -> None:
    with pytest.raises(VaultError, match="not a valid cluster id") as caught:
        await store.read_root("../vnc/c-1")
    assert caught.value.retry_class is RetryClass.TERMINAL


# -- stage, commit, clear (pending at its own private path) ------------------------------------


async def _versions(store: VaultStore, path: str) -> list[str | None]:
    """The password of every version of a KV path, oldest first (None: no password)."""
    metadata = await store.client.kv_metadata("secret", path) or {}
    out: list[str | None] = []
    for version in range(1, int(metadata.get("current_version") or 0) + 1):
        body = await store.client.request("GET", f"secret/data/{path}?version={version}")
        data = ((body or {}).get("data") or {}).get("data") or {}
        out.append(data.get("password"))
    return out


async def test_first_rotation_stages_privately_then_commits_one_version(
    store: VaultStore, vault_paths: VaultPaths
) -> None:
    state = await store.read_vnc(CLUSTER)
    assert (state.exists, state.version, state.password, state.pending) == (False, 0, None, None)

    staged = await store.stage(
        state, Secret("Ab12cd"), staged_at=T0, region="cn-hangzhou", owner="run-1", claim_until=T0
    )
    assert staged.version == 0, "staging never writes the vnc record"
    assert staged.pending is not None
    assert staged.pending.version == 1
    again = await store.read_vnc(CLUSTER)
    assert again.pending_password == Secret("Ab12cd")
    assert again.password is None
    assert (again.claim_owner, again.claim_until, again.pending_since) == ("run-1", T0, T0)

    committed = await store.commit(again, request_id="req-1", rotated_at=T0, region="cn-hangzhou")
    assert committed.version == 1
    final = await store.read_vnc(CLUSTER)
    assert final.password == Secret("Ab12cd")
    assert final.pending_password is None, "the committed pending record is not in flight"
    assert final.claim_owner is None
    assert (final.rotated_at, final.staged_at, final.request_id) == (T0, T0, "req-1")
    assert final.pending_version == 1
    assert await _versions(store, f"{vault_paths.vnc_path}/{CLUSTER}") == ["Ab12cd"]


async def test_every_vnc_version_is_a_password_the_cluster_had(
    store: VaultStore, vault_paths: VaultPaths
) -> None:
    for i, password in enumerate(("Aa11aa", "Bb22bb", "Cc33cc")):
        lean = await store.read_vnc(CLUSTER, pending=False)
        staged = await store.stage(lean, Secret(password), staged_at=T0, region="r", owner="o")
        if i == 1:  # a failed try in between: staged, never applied, cleared
            cleared = await store.clear_pending(staged)
            staged = await store.stage(cleared, Secret(password), staged_at=T0, region="r")
        await store.commit(staged, request_id=f"req-{i}", rotated_at=T0, region="r")
    vnc = await _versions(store, f"{vault_paths.vnc_path}/{CLUSTER}")
    assert vnc == ["Aa11aa", "Bb22bb", "Cc33cc"], "one version per rotation, nothing else"


async def test_the_next_stage_after_a_commit_needs_no_pending_read(store: VaultStore) -> None:
    """The vnc record remembers which pending version it committed: a CAS on it proves that
    nobody staged since, so the happy path never reads the pending record."""
    current = await _rotate(store, await store.read_vnc(CLUSTER), "Ab12cd", "req-1")
    lean = await store.read_vnc(CLUSTER, pending=False)
    assert lean.pending is None
    assert lean.pending_version == current.pending_version
    staged = await store.stage(lean, Secret("Cd34ef"), staged_at=T0, region="r")
    assert staged.pending is not None
    assert staged.pending.version == current.pending_version + 1


async def test_restaging_the_same_pending_password_keeps_pending_since(store: VaultStore) -> None:
    first = await store.stage_pending(await store.read_vnc(CLUSTER), Secret("Ab12cd"), region="r")
    read = await store.read_vnc(CLUSTER)
    reclaimed = await store.stage_pending(
        read, Secret("Ab12cd"), region="r", owner="run-2", claim_until=T0 + timedelta(minutes=1)
    )
    assert first.pending is not None
    assert reclaimed.pending is not None
    assert reclaimed.pending.version == first.pending.version + 1
    assert (await store.read_vnc(CLUSTER)).pending_since == read.pending_since


async def test_a_lost_check_and_set_raises_conflict_and_changes_nothing(
    store: VaultStore,
) -> None:
    await _rotate(store, await store.read_vnc(CLUSTER), "Ab12cd", "req-1")
    mine = await store.read_vnc(CLUSTER)
    rival = await store.read_vnc(CLUSTER, pending=False)
    await store.stage_pending(rival, Secret("Zz99zz"), region="r", owner="rival")
    with pytest.raises(VaultConflictError) as caught:
        await store.stage_pending(mine, Secret("Qq11qq"), region="r", owner="me")
    assert "Qq11qq" not in str(caught.value)
    after = await store.read_vnc(CLUSTER)
    assert after.pending_password == Secret("Zz99zz")
    assert after.password == Secret("Ab12cd")
    assert after.version == mine.version


async def test_commit_on_a_stale_version_is_a_conflict(store: VaultStore) -> None:
    staged = await store.stage_pending(await store.read_vnc(CLUSTER), Secret("Ab12cd"), region="r")
    await store.commit(staged, request_id="rival", rotated_at=T0, region="r")
    with pytest.raises(VaultConflictError):
        await store.commit(staged, request_id="req", rotated_at=T0, region="r")


async def test_first_stage_loses_to_a_concurrent_creator(store: VaultStore) -> None:
    nothing = await store.read_vnc(CLUSTER)
    await store.stage_pending(nothing, Secret("Ab12cd"), region="r")
    with pytest.raises(VaultConflictError):
        await store.stage_pending(nothing, Secret("Cd34ef"), region="r")


async def test_clear_pending_keeps_the_current_password_and_extra_fields(
    store: VaultStore, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    await _rotate(store, await store.read_vnc(CLUSTER), "Ab12cd", "req-1")
    # A person annotated the secret; rotator must carry that over.
    await store.client.request(
        "PATCH",
        f"secret/data/{vault_paths.vnc_path}/{CLUSTER}",
        json={"data": {"note": "lab cluster"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    staged = await store.stage_pending(await store.read_vnc(CLUSTER), Secret("Xy98wv"), region="r")
    cleared = await store.clear_pending(staged)
    assert cleared.version == staged.version
    final = await store.read_vnc(CLUSTER)
    assert final.password == Secret("Ab12cd")
    assert final.pending_password is None
    assert final.request_id == "req-1"
    assert final.extra == {"note": "lab cluster"}
    assert await store.clear_pending(final) is final  # nothing pending: no write
    # The next rotation keeps the person's note.
    again = await _rotate(store, final, "Mn56op", "req-2")
    assert (await store.read_vnc(CLUSTER)).extra == {"note": "lab cluster"}
    assert again.password == Secret("Mn56op")


async def test_soft_deleted_secret_can_still_be_written_with_cas(
    store: VaultStore, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    await _rotate(store, await store.read_vnc(CLUSTER), "Ab12cd", "req-1")
    await store.client.request("DELETE", f"secret/data/{vault_paths.vnc_path}/{CLUSTER}")
    deleted = await store.read_vnc(CLUSTER)
    assert (deleted.version, deleted.password) == (1, None)
    staged = await store.stage_pending(deleted, Secret("Cd34ef"), region="r")
    committed = await store.commit(staged, request_id="req-2", rotated_at=T0, region="r")
    assert committed.version == 2


async def test_an_old_layout_pending_password_is_migrated_on_first_touch(
    store: VaultStore, vault_paths: VaultPaths
) -> None:
    """Secrets written before the pending path existed kept pending_password (and a claim) in
    the vnc record, where readers could see it. The first read moves it."""
    old = {
        "cluster_id": CLUSTER,
        "password": "Ab12cd",
        "region": "cn-hangzhou",
        "rotated_at": "2026-01-01T00:00:00Z",
        "pending_password": "Zz98yx",
        "pending_since": "2026-01-02T03:04:05.678000Z",
        "claim_owner": "old-run",
        "claim_until": "2026-01-02T03:05:05Z",
        "note": "kept",
    }
    await store.client.kv_write("secret", f"{vault_paths.vnc_path}/{CLUSTER}", old)

    lean = await store.read_vnc(CLUSTER, pending=False)

    vnc = await store.client.kv_read("secret", f"{vault_paths.vnc_path}/{CLUSTER}")
    assert vnc is not None
    assert set(vnc["data"]) == {"cluster_id", "password", "region", "rotated_at", "note"}
    assert lean.password == Secret("Ab12cd")
    state = await store.read_vnc(CLUSTER)
    assert state.pending_password == Secret("Zz98yx")
    assert state.pending_since == T0
    assert state.claim_owner == "old-run"
    # Staging on the lean read cannot overwrite the migrated password: it is in flight.
    with pytest.raises(VaultConflictError):
        await store.stage(lean, Secret("Nn00nn"), staged_at=T0, region="r")
    # A second touch finds nothing left to migrate.
    assert (await store.read_vnc(CLUSTER)).version == state.version


# -- status metadata ------------------------------------------------------------------------


async def test_status_metadata_merges_and_clears(store: VaultStore) -> None:
    await _rotate(store, await store.read_vnc(CLUSTER), "Ab12cd", "req-1")
    await store.update_status(
        CLUSTER,
        status="failed",
        last_error_code="IncorrectCredential",
        last_request_id="req-2",
        attempts=3,
    )
    await store.update_status(
        CLUSTER,
        status="rotated",
        last_rotated_at=T0,
        next_rotation_at="2026-02-01T03:04:05Z",
        last_error_code="",
    )
    state = await store.read_vnc(CLUSTER)  # one read brings data and custom metadata
    assert state.custom_metadata == {
        "status": "rotated",
        "last_rotated_at": "2026-01-02T03:04:05.678000Z",
        "next_rotation_at": "2026-02-01T03:04:05Z",
        "last_request_id": "req-2",
        "attempts": "3",
    }
    assert state.password == Secret("Ab12cd")


async def test_status_before_any_password_then_first_stage(store: VaultStore) -> None:
    await store.update_status(CLUSTER, status="failed", last_error_code="ServiceUnavailable")
    state = await store.read_vnc(CLUSTER)
    assert (state.exists, state.custom_metadata["status"]) == (False, "failed")
    staged = await store.stage_pending(state, Secret("Ab12cd"), region="r")
    committed = await store.commit(staged, request_id="req-1", rotated_at=T0, region="r")
    assert committed.version == 1
    assert (await store.read_vnc(CLUSTER)).custom_metadata["status"] == "failed"


async def test_rotation_period_set_by_a_person_survives_status_updates(
    store: VaultStore, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    await _rotate(store, await store.read_vnc(CLUSTER), "Ab12cd", "req-1")
    path = f"secret/{vault_paths.vnc_path}/{CLUSTER}"
    patched = await run_bao(
        openbao, "kv", "metadata", "patch", "-custom-metadata=rotation_period=7d", path
    )
    assert patched.returncode == 0, patched.stderr
    await store.update_status(CLUSTER, status="rotated", attempts=1)
    metadata = await store.list_vnc_metadata()
    assert metadata == {
        CLUSTER: {
            "rotation_period": "7d",
            "status": "rotated",
            "attempts": "1",
            # From the committed record's data (the same read):
            "last_rotated_at": "2026-01-02T03:04:05.678000Z",
            "last_request_id": "req-1",
        }
    }


async def test_the_commit_records_its_times_in_the_data_and_the_status_view_reads_them(
    store: VaultStore, openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """No metadata write on the happy path: ``bao kv get`` shows when the password was rotated
    and falls due; ``rotator status`` and the daemon read the same from the data."""
    due = T0 + timedelta(days=30)
    staged = await store.stage_pending(
        await store.read_vnc(CLUSTER), Secret("Ab12cd"), region="cn-hangzhou"
    )
    await store.commit(
        staged, request_id="req-1", rotated_at=T0, region="cn-hangzhou", next_rotation_at=due
    )
    path = f"secret/{vault_paths.vnc_path}/{CLUSTER}"
    shown = await run_bao(openbao, "kv", "get", "-format=json", path)
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)["data"]
    assert body["data"]["rotated_at"] == "2026-01-02T03:04:05.678000Z"
    assert body["data"]["next_rotation_at"] == "2026-02-01T03:04:05.678000Z"
    assert not body["metadata"].get("custom_metadata")
    state = await store.read_vnc(CLUSTER)
    assert state.next_rotation_at == due
    expected = {
        "status": "rotated",
        "last_rotated_at": "2026-01-02T03:04:05.678000Z",
        "next_rotation_at": "2026-02-01T03:04:05.678000Z",
        "last_request_id": "req-1",
    }
    assert state.status_view == expected
    assert await store.list_vnc_metadata() == {CLUSTER: expected}
    # A person pulls the next rotation forward in the metadata: the earlier time wins.
    await store.update_status(CLUSTER, status="rotated", next_rotation_at="2026-01-10T00:00:00Z")
    view = (await store.list_vnc_metadata())[CLUSTER]
    assert view["next_rotation_at"] == "2026-01-10T00:00:00Z"


async def test_list_vnc_metadata_covers_every_cluster(store: VaultStore) -> None:
    assert await store.list_vnc_metadata() == {}
    for i in range(6):
        await store.update_status(f"c-{i}", status="pending", attempts=i)
    listed = await store.list_vnc_metadata()
    assert sorted(listed) == [f"c-{i}" for i in range(6)]
    assert listed["c-4"] == {"status": "pending", "attempts": "4"}


# -- run reports, password policy, health ---------------------------------------------------


async def test_run_report_round_trip_and_secrets_refused(store: VaultStore) -> None:
    report = {"run_id": "r-1", "started": T0, "clusters": {"c-1": {"outcome": "rotated"}}}
    await store.write_run_report("r-1", report)
    assert await store.read_run_report("r-1") == {
        "run_id": "r-1",
        "started": "2026-01-02T03:04:05.678000Z",
        "clusters": {"c-1": {"outcome": "rotated"}},
    }
    with pytest.raises(TypeError, match="never contain secrets"):
        await store.write_run_report("r-2", {"oops": {"password": Secret("Ab12cd")}})
    assert await store.read_run_report("r-2") is None


async def test_old_run_reports_are_pruned_to_runs_keep(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    async with VaultClient(vault_paths.settings(openbao, runs_keep=3)) as client:
        store = VaultStore(client)
        run_ids = [f"20260101T0000{i:02d}Z-abc" for i in range(5)]
        for run_id in run_ids:
            await store.write_run_report(run_id, {"run_id": run_id})
        kept = await client.kv_list("secret", vault_paths.runs_path)
    assert sorted(kept) == run_ids[-3:]


async def test_password_policy_generates_compliant_passwords(store: VaultStore) -> None:
    await vault_setup(store.client, store.settings)
    passwords = [await store.generate_password("ehpc-vnc") for _ in range(40)]
    assert all(is_valid_vnc_password(p.reveal()) for p in passwords)
    assert len({p.reveal() for p in passwords}) > 30


async def test_missing_password_policy_is_a_clear_error(store: VaultStore) -> None:
    with pytest.raises(VaultError) as caught:
        await store.generate_password("no-such-policy")
    assert caught.value.code == "PasswordPolicyMissing"
    assert "rotator vault-setup" in caught.value.message


async def test_health(store: VaultStore) -> None:
    assert await store.health()


async def test_a_person_reads_the_password_with_the_bao_cli(
    store: VaultStore, openbao: OpenBaoServer
) -> None:
    await _rotate(store, await store.read_vnc(CLUSTER), "Pq45rs", "req-1")
    result = await run_bao(openbao, "kv", "get", "-field=password", store.cli_path(CLUSTER))
    assert (result.returncode, result.stdout) == (0, "Pq45rs")


async def test_migration_never_overwrites_another_password_in_flight(
    store: VaultStore, vault_paths: VaultPaths
) -> None:
    staged = await store.stage_pending(await store.read_vnc(CLUSTER), Secret("New111"), region="r")
    assert staged.pending is not None
    old = {"cluster_id": CLUSTER, "password": "Cur000", "pending_password": "Old222"}
    await store.client.kv_write("secret", f"{vault_paths.vnc_path}/{CLUSTER}", old)
    with pytest.raises(VaultError) as caught:
        await store.read_vnc(CLUSTER)
    assert caught.value.code == "PendingMigrationConflict"
    assert "Old222" not in str(caught.value)
    assert "New111" not in str(caught.value)
    after = await store.read_pending(CLUSTER)
    assert after is not None
    assert after.password == Secret("New111")


async def test_the_rotator_policy_allows_pruning_run_reports_and_the_pending_path(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    settings = vault_paths.settings(openbao, runs_keep=1)
    async with VaultClient(settings) as admin:
        await vault_setup(admin, settings)
        token = await create_token(admin, policies=["rotator"])
    async with VaultClient(vault_paths.settings(openbao, token=token, runs_keep=1)) as client:
        store = VaultStore(client)
        await _rotate(store, await store.read_vnc(CLUSTER), "Ab12cd", "req-1")
        assert (await store.read_vnc(CLUSTER)).password == Secret("Ab12cd")
        await store.write_run_report("20260101T000000Z-aaa", {"n": 1})
        await store.write_run_report("20260101T000001Z-bbb", {"n": 2})
        assert await store.prune_run_reports() == []  # nothing left to prune: it worked
        assert await store.read_run_report("20260101T000000Z-aaa") is None
        assert await store.read_run_report("20260101T000001Z-bbb") == {"n": 2}


async def test_pruning_touches_only_rotator_run_reports_on_a_shared_path(
    openbao: OpenBaoServer, vault_paths: VaultPaths
) -> None:
    """Review after the wave-2 merge: the runs path may hold keys that are not rotator run ids
    (another team's notes, a hand-made backup). Pruning sorted every key and deleted the oldest
    by name, so ``2019-audit`` went; a key that is not a valid path segment raised mid-loop and
    stopped pruning for good (reports piled up). Only run ids are counted and deleted."""
    async with VaultClient(vault_paths.settings(openbao, runs_keep=2)) as client:
        store = VaultStore(client)
        runs = vault_paths.runs_path
        foreign = ["2019-audit", "a note with spaces", "zz-team-b"]
        for key in foreign:
            await client.kv_write("secret", f"{runs}/{key}", {"owner": "team-b"})
        run_ids = [f"20260101T0000{i:02d}Z-abc" for i in range(4)]
        for run_id in run_ids:
            await store.write_run_report(run_id, {"run_id": run_id})
        kept = await client.kv_list("secret", runs)
    assert sorted(kept) == sorted(foreign + run_ids[-2:])
