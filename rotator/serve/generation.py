"""The daemon's runtime generations across SIGHUP: which settings and runtime are live.

    generations = Generations(settings, config_path=path)
    async with generations.open(credentials=None, hooks=metrics) as runtime:
        reloading = await generations.wait_for_stop_or_reload(stop)
    if reloading:
        generations.apply()               # the validated new settings become current

A reload re-reads and validates the config file first; a bad one is logged and the running
generation goes on. The swap itself happens between generations (the caller lets the running
batch finish), so no batch ever sees two configurations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog

from rotator.config import Settings, load_settings
from rotator.ehpc.credentials import CredentialProvider
from rotator.engine.ports import Hooks
from rotator.engine.runtime import Runtime, open_runtime, validate_settings
from rotator.errors import ConfigError

__all__ = ["Generations"]

log = structlog.get_logger("rotator.serve")

Validator = Callable[[Settings], None]
"""Raises ConfigError when a runtime of the daemon would reject the settings."""


def _listener_key(settings: Settings) -> tuple[object, ...]:
    serve = settings.serve
    return (serve.listen, serve.tls_cert_file, serve.tls_key_file, serve.header_timeout)


class Generations:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        validators: tuple[Validator, ...] = (),
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.validators = validators
        self.runtime: Runtime | None = None
        """The live runtime, None between generations."""
        self.number = 0
        self._reload = asyncio.Event()
        self._pending: Settings | None = None

    def request_reload(self) -> None:
        """Re-read the config file (SIGHUP)."""
        self._reload.set()

    @contextlib.asynccontextmanager
    async def open(
        self, *, credentials: CredentialProvider | None, hooks: Hooks
    ) -> AsyncIterator[Runtime]:
        async with open_runtime(self.settings, hooks=hooks, credentials=credentials) as runtime:
            self.number += 1
            self.runtime = runtime
            try:
                yield runtime
            finally:
                self.runtime = None

    async def wait_for_stop_or_reload(self, stop: asyncio.Event) -> bool:
        """Until stop (False) or a reload whose config is valid (True)."""
        while True:
            stop_wait = asyncio.create_task(stop.wait())
            reload_wait = asyncio.create_task(self._reload.wait())
            try:
                await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                reload_wait.cancel()
            if stop.is_set():
                return False
            self._reload.clear()
            try:
                fresh = load_settings(self.config_path)
                validate_settings(fresh)
                for validate in self.validators:
                    validate(fresh)
            except ConfigError as exc:
                log.error(
                    "config_reload_failed", error=exc.message, detail="keeping the running config"
                )
                continue
            if _listener_key(fresh) != _listener_key(self.settings):
                log.warning(
                    "config_listen_changed",
                    detail="a new listen address, TLS files or header timeout need a restart",
                )
            self._pending = fresh
            log.info("config_reloading", source=fresh.source)
            return True

    def apply(self) -> Settings | None:
        """Make the validated reload current; None when there is none."""
        fresh, self._pending = self._pending, None
        if fresh is not None:
            self.settings = fresh
        return fresh
