"""Vault's HTTP API on the event loop: one pooled aiohttp session, no threads (``vault.transport =
"aiohttp"``).

    http = AioVaultHttp(settings)
    body = await http.request("GET", "secret/data/ehpc/vnc/c-1", token=token)   # {} for 204
    await http.aclose()

Only the KV calls go through here (``VaultClient.request(kv=True)``); logging in, token
renewal and the other calls (``vault-setup``'s policies, mounts, auth methods) stay on hvac.
The point is CPU: hvac over urllib3 parses every response in ``http.client`` and hands every
call to a worker thread and back.

It keeps the rules of :class:`~rotator.vault.transport.Urllib3Session` and behaves as hvac's
``JSONAdapter`` does, so that :func:`rotator.vault.client.map_vault_error` is the one error
mapping for both transports:

- requests go to the configured origin only; a redirect is followed by hand within it (at most
  five), and one to another scheme, host or port is refused (``VaultRedirect``) before the
  token could travel with it;
- TLS is verified against ``vault.ca_cert`` (or the system store), unless ``skip_verify``;
- the headers hvac sends: ``X-Vault-Token``, ``X-Vault-Namespace``, ``X-Vault-Request``;
- a status >= 400 raises the :mod:`hvac.exceptions` type hvac raises for it (with Vault's
  ``errors`` and the JSON body, which a soft-deleted KV version's metadata is read from);
- a network failure raises the :mod:`requests` exception the lean urllib3 session raises;
- a 200 answers its JSON object; anything else that succeeds answers ``{}`` (so a 200 that is
  not JSON reads as empty and the client's shape checks reject it).

The session belongs to the event loop that first used it; connections are bounded by
``vault.max_workers`` like the thread pool they replace, and a request waiting for a free
connection does not count against ``vault.timeout`` (only connecting and reading do).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import hvac.exceptions
import requests

from rotator.vault.settings import VaultSettings
from rotator.vault.transport import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    origin_of,
    refusal_for,
    refuse_foreign,
    ssl_context_for,
)

__all__ = ["AioVaultHttp"]


def _as_requests_error(exc: BaseException) -> requests.exceptions.RequestException:
    """The requests exception the urllib3 session raises for the same failure."""
    text = type(exc).__name__
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors
        return requests.exceptions.Timeout(text)
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return requests.exceptions.SSLError(text)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | OSError):
        return requests.exceptions.ConnectionError(text)
    return requests.exceptions.RequestException(text)


def _raise_for_status(method: str, url: str, status: int, content_type: str, body: bytes) -> None:
    """hvac's ``RawAdapter._raise_for_error``: the exception type by status, Vault's errors."""
    text = body.decode("utf-8", errors="replace")
    decoded: Any = None
    errors: Any = None
    if content_type == "application/json":
        try:
            decoded = jsonlib.loads(body)
        except ValueError:
            decoded = None
        else:
            errors = decoded.get("errors") if isinstance(decoded, dict) else None
    raise hvac.exceptions.VaultError.from_status(
        status,
        text if errors is None else None,
        errors=errors,
        method=method,
        url=url,
        text=text,
        json=decoded,
    )


class AioVaultHttp:
    """Vault requests on the running event loop over one pooled aiohttp session."""

    def __init__(self, settings: VaultSettings) -> None:
        self._settings = settings
        self._base = settings.addr.rstrip("/")
        self._origin = origin_of(settings.addr)
        self._ssl = ssl_context_for(settings.verify) if self._origin[0] == "https" else False
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=settings.timeout, sock_read=settings.timeout
        )
        headers = {"X-Vault-Request": "true"}
        if settings.namespace:
            headers["X-Vault-Namespace"] = settings.namespace
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._settings.max_workers,
                limit_per_host=self._settings.max_workers,
                ssl=self._ssl,
            )
            # trust_env=False: a proxy for Vault makes the client keep hvac (requests knows it).
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=False,
                auto_decompress=True,
                # Small JSON bodies: compressing them costs both sides more CPU than it saves.
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str,
        json: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call (``path`` without ``/v1/``); the decoded JSON object, ``{}`` for no body."""
        if self._closed:
            raise requests.exceptions.ConnectionError("the Vault HTTP session is closed")
        while "//" in path:
            path = path.replace("//", "/")  # what hvac (and the Vault CLI) do
        url = f"{self._base}/v1/{path.lstrip('/')}"
        sent = dict(self._headers)
        if token:
            sent["X-Vault-Token"] = token
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(dict(json)).encode("utf-8")
            sent["Content-Type"] = "application/json"
        if headers:
            sent.update(headers)  # an explicit Content-Type (merge patch) wins
        method = method.upper()
        if origin_of(url) != self._origin:
            raise refusal_for(url)
        session = self._session_now()
        for _ in range(MAX_REDIRECTS + 1):
            status, location, content_type, content = await self._send(
                session, method, url, body, sent
            )
            if status in REDIRECT_STATUSES and location:
                url = refuse_foreign(self._origin, status, url, location)
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method, body = "GET", None  # what requests (and browsers) do
                    sent.pop("Content-Type", None)
                continue
            if status >= 400:
                _raise_for_status(method, url, status, content_type, content)
            if status != 200:
                return {}
            try:
                decoded = jsonlib.loads(content)
            except ValueError:
                return {}
            return decoded if isinstance(decoded, dict) else {}
        raise requests.exceptions.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> tuple[int, str | None, str, bytes]:
        try:
            async with session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as response:
                content = await response.read()
                return (
                    response.status,
                    response.headers.get("Location"),
                    response.headers.get("Content-Type", ""),
                    content,
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _as_requests_error(exc) from None

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # Let the transports' close callbacks run before the loop may end.
            await asyncio.sleep(0)
