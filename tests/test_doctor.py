"""Units of rotator doctor: what it checks and how it reports."""

from __future__ import annotations

import json

from rotator.doctor import Check, DoctorReport, required_capabilities
from rotator.vault.settings import VaultSettings


def test_doctor_checks_every_path_of_the_shipped_rotator_policy() -> None:
    settings = VaultSettings(kv_mount="kv", root_path="a/root", vnc_path="a/vnc")
    local = required_capabilities(settings, password_policy="pp", vault_passwords=False)
    assert local["kv/data/a/root/doctor-probe"] == {"read"}
    assert local["kv/metadata/a/vnc"] == {"list"}
    assert {"create", "update"} <= local["kv/data/a/vnc/doctor-probe"]
    assert not any(path.startswith("sys/policies/password/") for path in local)
    vault = required_capabilities(settings, password_policy="pp", vault_passwords=True)
    assert vault["sys/policies/password/pp/generate"] == {"read"}


def test_the_report_is_a_checklist_with_fixes_and_an_exit_code() -> None:
    report = DoctorReport(
        (
            Check("vault.auth", True, "token auth as root"),
            Check("alibaba.clock cn-hangzhou", False, "20 min behind", "synchronise the clock"),
        )
    )
    assert report.render().splitlines() == [
        "[ok  ] vault.auth: token auth as root",
        "[FAIL] alibaba.clock cn-hangzhou: 20 min behind",
        "       fix: synchronise the clock",
        "doctor: 1 of 2 checks failed",
    ]
    assert report.exit_code == 1
    assert json.loads(report.to_json())["checks"][1] == {
        "name": "alibaba.clock cn-hangzhou",
        "ok": False,
        "detail": "20 min behind",
        "fix": "synchronise the clock",
    }
    assert DoctorReport((Check("x", True, "fine"),)).exit_code == 0
