"""The simulator's lifecycle: bind, serve (HTTP or HTTPS with a throwaway CA), stop.

async with Simulator(SimConfig(clusters=20, tls=True)) as sim:
    sim.base_url          # "https://127.0.0.1:43117"
    sim.ca_file           # the CA to trust, <state_dir or a temp dir>/sim-ca.pem
    sim.admin_token       # for Authorization: Bearer ... on /_sim/
    sim.inventory         # the clusters, live
    sim.vnc_url           # "ws://127.0.0.1:43118": RFB over WebSocket at /_vnc/<ClusterId>
    sim.endpoints         # {region: url} with SimConfig(region_endpoints=True), else {}
"""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import trustme
from aiohttp import web

from rotator.sim.admin import admin_app
from rotator.sim.config import FaultConfig, SimConfig
from rotator.sim.gateway import SimService
from rotator.sim.inventory import Inventory, build_inventory
from rotator.sim.rfb import RfbService

__all__ = ["Simulator"]

CA_FILE_NAME = "sim-ca.pem"
# In-flight calls get this long to finish on stop; hanging ones are released at once.
_SHUTDOWN_TIMEOUT = 5.0


class Simulator:
    """One running simulator; an async context manager (or ``await start()`` / ``await stop()``)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.inventory: Inventory = build_inventory(
            count=config.clusters, regions=config.regions, seed=config.seed
        )
        self.admin_token: str = config.admin_token or secrets.token_urlsafe(24)
        self.service = SimService(config, self.inventory)
        self.base_url = ""
        self.port = 0
        # The visual service (issue 13): RFB over WebSocket on a port of its own.
        self.rfb = RfbService(
            self.inventory,
            max_failures=config.vnc_max_failures,
            lockout_seconds=config.vnc_lockout_seconds,
        )
        self.vnc_url = ""
        self._vnc_runner: web.AppRunner | None = None
        self.endpoints: dict[str, str] = {}
        self.ca_file: Path | None = None
        self._runner: web.AppRunner | None = None
        self._temp_dir: Path | None = None

    @property
    def faults(self) -> FaultConfig:
        return self.service.faults.config

    @faults.setter
    def faults(self, value: FaultConfig) -> None:
        self.service.faults.config = value

    @property
    def host_header(self) -> str:
        """The ``host`` a client signs for this simulator (``127.0.0.1:PORT``)."""
        return self.base_url.split("://", 1)[1]

    async def start(self) -> Self:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        app = web.Application(client_max_size=1024 * 1024)
        app.add_subapp("/_sim/", admin_app(self.service, self.admin_token, rfb=self.rfb))
        app.router.add_route("*", "/{tail:.*}", self.service.handle)
        # access_log=None: the official SDK puts passwords in the query string; an access log
        # would write them out.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runner = runner
        try:
            ssl_context = self._tls_context() if self.config.tls else None
            family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
            self.port = await self._serve_on(runner, self.config.port, family, ssl_context)
            if self.config.region_endpoints:
                for region in self.config.regions:
                    port = await self._serve_on(runner, 0, family, ssl_context)
                    self.service.region_ports[port] = region
        except BaseException:
            await self.stop()
            raise
        scheme = "https" if self.config.tls else "http"
        host = f"[{self.config.host}]" if family == socket.AF_INET6 else self.config.host
        self.base_url = f"{scheme}://{host}:{self.port}"
        self.endpoints = {
            region: f"{scheme}://{host}:{port}"
            for port, region in self.service.region_ports.items()
        }
        try:
            vnc_port = await self._start_vnc(ssl_context, family)
        except BaseException:
            await self.stop()
            raise
        self.vnc_url = f"{'wss' if self.config.tls else 'ws'}://{host}:{vnc_port}"
        return self

    async def _start_vnc(
        self, ssl_context: ssl.SSLContext | None, family: socket.AddressFamily
    ) -> int:
        """The visual service's WebSocket endpoint, ``/_vnc/<ClusterId>``, on its own port."""
        app = web.Application()
        app.router.add_get("/_vnc/{cluster_id}", self.rfb.handle_ws)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._vnc_runner = runner
        return await self._serve_on(runner, 0, family, ssl_context)

    async def _serve_on(
        self,
        runner: web.AppRunner,
        port: int,
        family: socket.AddressFamily,
        ssl_context: ssl.SSLContext | None,
    ) -> int:
        """Listen on one more port (0: any free one); returns the port."""
        sock = socket.create_server((self.config.host, port), family=family)
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise
        return int(sock.getsockname()[1])

    def _tls_context(self) -> ssl.SSLContext:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        directory = self.config.state_dir
        if directory is None:
            self._temp_dir = directory = Path(tempfile.mkdtemp(prefix="rotator-sim-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / CA_FILE_NAME
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    async def stop(self) -> None:
        """Stop serving: hanging calls are cut off, the others get a moment to finish."""
        self.service.close()
        runner, self._runner = self._runner, None
        vnc_runner, self._vnc_runner = self._vnc_runner, None
        try:
            await self.rfb.close()
            if vnc_runner is not None:
                await self._shutdown(vnc_runner)
            if runner is not None:
                await self._shutdown(runner)
        finally:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None

    @staticmethod
    async def _shutdown(runner: web.AppRunner) -> None:
        server = runner.server
        transports = [h.transport for h in server.connections if h.transport] if server else []
        await runner.cleanup()
        # A closed TLS connection waits up to 30 s for the peer's close_notify; a client that
        # keeps its pooled connection open (the official SDK does) would outlive the event loop
        # and leak the socket. Aborting after the graceful close is a no-op for the others.
        for transport in transports:
            transport.abort()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
