"""The daemon's HTTP side: probes, metrics and the webhook, on one aiohttp listener.

    app = build_app(probes, metrics, webhook_backend)
    server = await Listener.start(app, "127.0.0.1:0")
    server.address          # "http://127.0.0.1:43117"

``/healthz``: 200 while the process runs. ``/readyz``: 200 only when the inventory and
schedule are loaded, Vault answers, the token is valid and the daemon is not draining; 503 with
``{"ready": false, "reason": ...}`` otherwise. ``/metrics``: Prometheus text format.

With ``serve.tls_cert_file``/``serve.tls_key_file`` the listener speaks HTTPS only. A client
that has not sent its request headers ``header_timeout`` after connecting (or after its last
request on a keep-alive connection) is disconnected; body reads have their own timeout in the
handlers.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from rotator.errors import ConfigError
from rotator.serve.leases import LeaseBackend, add_lease_routes
from rotator.serve.metrics import ServeMetrics
from rotator.serve.webhook import MAX_BODY, WebhookBackend, add_webhook_routes

__all__ = ["Listener", "ReadinessCheck", "build_app", "parse_listen", "tls_context"]

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else the reason it is not."""

_PROBES: web.AppKey[ReadinessCheck] = web.AppKey("readiness", ReadinessCheck)  # type: ignore[arg-type]
_METRICS: web.AppKey[ServeMetrics] = web.AppKey("metrics", ServeMetrics)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def _readyz(request: web.Request) -> web.Response:
    reason = await request.app[_PROBES]()
    request.app[_METRICS].ready.set(0 if reason else 1)
    if reason:
        return web.json_response({"ready": False, "reason": reason}, status=503)
    return web.json_response({"ready": True})


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[_METRICS].render()
    # prometheus-client's type carries "; charset=utf-8", which aiohttp wants separately.
    media_type, _, params = content_type.partition(";")
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type if params else media_type
    return response


def build_app(
    readiness: ReadinessCheck,
    metrics: ServeMetrics,
    backend: WebhookBackend,
    *,
    leases: LeaseBackend | None = None,
) -> web.Application:
    # A little over the webhook limit, so the handler can answer 413 with its own message.
    app = web.Application(client_max_size=MAX_BODY + 1024)
    app[_PROBES] = readiness
    app[_METRICS] = metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    add_webhook_routes(app, backend)
    if leases is not None:
        add_lease_routes(app, leases)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """The listener's TLS context from PEM files; None when neither is set."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise ConfigError(
            "set both serve.tls_cert_file and serve.tls_key_file, or neither",
            key="serve.tls_cert_file",
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc.filename} does not exist", key="serve.tls_cert_file") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the certificate {cert_file} and key {key_file}: "
            f"{getattr(exc, 'reason', None) or exc.strerror or type(exc).__name__}",
            key="serve.tls_cert_file",
        ) from None
    return context


def parse_listen(text: str) -> tuple[str, int]:
    """``"0.0.0.0:8080"``, ``"[::1]:0"``, ``":8080"`` -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{text!r} is not host:port (e.g. 0.0.0.0:8080)", key="serve.listen")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the documented default of a daemon
    return host, int(port_text)


@dataclass(slots=True)
class Listener:
    runner: web.AppRunner
    address: str

    @classmethod
    async def start(
        cls,
        app: web.Application,
        listen: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        header_timeout: float = 10.0,
    ) -> Listener:
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # access_log=None: the webhook's Authorization header must never reach a log.
        # keepalive_timeout: aiohttp closes a connection whose request headers have not all
        # arrived by then (also idle keep-alive ones), so a slow-header client cannot hold a
        # connection open indefinitely.
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=max(0.1, header_timeout),
        )
        await runner.setup()
        try:
            sock = socket.create_server((host, port), family=family, reuse_port=False)
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on {listen}: {exc.strerror}", key="serve.listen"
            ) from None
        bound = int(sock.getsockname()[1])
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        scheme = "https" if ssl_context is not None else "http"
        return cls(runner=runner, address=f"{scheme}://{shown}:{bound}")

    async def stop(self) -> None:
        await self.runner.cleanup()
