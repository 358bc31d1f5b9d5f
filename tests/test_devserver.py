"""The OpenBao dev-server helper the tests, the demo and the bench start OpenBao with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rotator.secret import Secret
from rotator.vault.devserver import OpenBaoServer, free_port


def test_a_half_written_ca_file_means_not_ready_yet(tmp_path: Path) -> None:
    # bao -dev-tls writes its CA while it starts; the file can exist and still be empty. The
    # readiness probe must say "not yet", not raise (it crashed a bench run under load).
    ca = tmp_path / "vault-ca.pem"
    ca.write_bytes(b"")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    server = OpenBaoServer(
        addr=f"https://127.0.0.1:{free_port()}",
        root_token=Secret("t"),
        process=process,
        log_path=tmp_path / "log",
        ca_cert=ca,
    )
    assert server.healthy() is False
