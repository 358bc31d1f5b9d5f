"""Asynchronous access to Vault/OpenBao through hvac, which blocks: every call runs in a pool.

    client = VaultClient(VaultSettings.from_env())
    body = await client.request("GET", "secret/data/ehpc/root/ehpc-hz-1", missing_ok=True)
    entry = await client.kv_read("secret", "ehpc/vnc/ehpc-hz-1")      # None when absent
    await client.aclose()

The pool (``max_workers`` threads, each with its own ``hvac.Client`` and HTTP session) keeps the
event loop free while Vault is slow, and bounds how many requests we have in flight.

With ``vault.transport = "aiohttp"`` (the default) the KV calls (``kv_read``, ``kv_write``,
``kv_metadata``, ``kv_list``, ``kv_patch_custom_metadata``: ``request(kv=True)``) skip the pool
and run on the event loop over one pooled aiohttp session (:mod:`rotator.vault.kv_aio`), with the
same token, transport rules and error mapping; everything else (login, renewal, plain
``request``, and so ``vault-setup``'s policies, mounts and auth methods) stays on hvac. Behind a
proxy, hvac serves the KV calls too.

Authentication is lazy (first call). The token is renewed (``renew-self``) when a third of its
TTL is left; when it cannot be renewed, has expired, or Vault says it is no longer valid, the
client logs in again (AppRole, Kubernetes) or re-reads the token (token file, ~/.vault-token).

Errors become :mod:`rotator.errors` values; none of them carries a secret:

- sealed, 5xx, 429, timeouts, connection errors -> :class:`VaultUnavailableError` (retryable)
- 403 -> :class:`VaultPermissionError`, naming the path and the policy to attach
- a lost check-and-set -> :class:`VaultConflictError`
- 404 -> ``None`` where the caller asked for ``missing_ok``, else :class:`VaultNotFoundError`
- a 200 without the shape Vault gives that answer (no ``data``, no ``keys``: a proxy or a
  misrouted request) -> :class:`VaultInvalidResponseError`, never an empty result
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
import structlog
import urllib3

from rotator.errors import (
    RetryClass,
    VaultConflictError,
    VaultError,
    VaultPermissionError,
    VaultUnavailableError,
)
from rotator.secret import Secret
from rotator.vault.kv_aio import AioVaultHttp
from rotator.vault.settings import VaultSettings
from rotator.vault.transport import GuardedRequestsSession, session_for

__all__ = [
    "JsonDict",
    "VaultClient",
    "VaultInvalidResponseError",
    "VaultNotFoundError",
    "map_vault_error",
]

log = structlog.get_logger("rotator.vault")

T = TypeVar("T")

JsonDict = dict[str, Any]
"""A decoded JSON object from the Vault HTTP API."""

_RENEW_FRACTION = 1 / 3
"""Renew once less than this fraction of the token's TTL is left."""
_MAX_ERROR_TEXT = 300


class VaultNotFoundError(VaultError):
    """404: nothing at that path (or a KV version that was deleted)."""

    code = "VaultNotFound"
    retry_class = RetryClass.TERMINAL

    def __init__(self, message: str, *, body: JsonDict | None = None) -> None:
        super().__init__(message)
        self.body = body or {}


class VaultInvalidResponseError(VaultError):
    """A success status whose body lacks what Vault always sends for that call.

    Something other than Vault answered (a proxy, a captive portal, a wrong path prefix), so an
    empty-looking answer must not be read as "no secrets" or "no clusters".
    """

    code = "VaultInvalidResponse"
    retry_class = RetryClass.RETRYABLE

    def __init__(self, op: str, path: str, what: str) -> None:
        super().__init__(
            f"Vault answered {op} {path} with {what}; is vault.addr pointing at Vault itself "
            "(not a proxy or web server answering 200)?"
        )


def _data_of(body: JsonDict | None, op: str, path: str) -> JsonDict:
    """``body["data"]`` when it is an object, else :class:`VaultInvalidResponseError`."""
    data = (body or {}).get("data")
    if not isinstance(data, dict):
        shown = "no data" if data is None else f"data that is a {type(data).__name__}"
        raise VaultInvalidResponseError(op, path, shown)
    return data


def _keys_of(body: JsonDict | None, path: str) -> list[str]:
    """The keys of a LIST answer; Vault's 404 (None here) means nothing under ``path``."""
    if body is None:
        return []
    keys = _data_of(body, "list", path).get("keys")
    if not isinstance(keys, list):
        raise VaultInvalidResponseError("list", path, "data without a list of keys")
    return [str(k) for k in keys]


def _server_errors(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own error strings (they name paths and rules, never request bodies)."""
    errors = exc.errors
    if not isinstance(errors, list):
        return str(errors or "")[:_MAX_ERROR_TEXT]
    return "; ".join(str(e) for e in errors if e)[:_MAX_ERROR_TEXT]


def map_vault_error(
    exc: BaseException, *, op: str, path: str, settings: VaultSettings
) -> VaultError:
    """Translate an hvac/requests exception into the project's hierarchy."""
    where = f"{op} {path}"
    if isinstance(exc, VaultError):
        return exc
    if isinstance(exc, hvac.exceptions.VaultError):
        detail = _server_errors(exc)
        suffix = f" (Vault said: {detail})" if detail else ""
        if op == "login" and isinstance(
            exc,
            hvac.exceptions.Forbidden
            | hvac.exceptions.Unauthorized
            | hvac.exceptions.InvalidRequest
            | hvac.exceptions.InvalidPath,
        ):
            return VaultPermissionError(
                f"Vault refused the login at {path}{suffix}", code="VaultAuthFailed"
            )
        if isinstance(exc, hvac.exceptions.Forbidden):
            return VaultPermissionError(
                f"permission denied for {where}: the token's policies do not allow it. Attach the "
                f"'rotator' policy (`rotator vault-setup` writes it) or grant this path in a "
                f"policy of your own{suffix}"
            )
        if isinstance(exc, hvac.exceptions.Unauthorized):
            return VaultPermissionError(f"Vault refused the credentials for {where}{suffix}")
        if isinstance(exc, hvac.exceptions.InvalidRequest) and "check-and-set" in detail:
            return VaultConflictError(
                f"{where}: another writer changed the secret since it was read "
                "(check-and-set lost); read it again before writing"
            )
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return VaultNotFoundError(f"nothing at {path}", body=exc.json)
        if isinstance(exc, hvac.exceptions.VaultDown):
            return VaultUnavailableError(
                f"Vault at {settings.addr} is sealed or unavailable (503) during {where}{suffix}"
            )
        if isinstance(
            exc,
            hvac.exceptions.InternalServerError
            | hvac.exceptions.BadGateway
            | hvac.exceptions.RateLimitExceeded
            | hvac.exceptions.VaultNotInitialized
            | hvac.exceptions.PreconditionFailed,
        ):
            return VaultUnavailableError(f"Vault could not serve {where} right now{suffix}")
        if isinstance(exc, hvac.exceptions.UnexpectedError):
            # Unknown statuses are mostly proxies and load balancers failing in front of Vault.
            return VaultUnavailableError(f"unexpected answer from Vault for {where}{suffix}")
        return VaultError(f"Vault rejected {where}{suffix}", code="VaultInvalidRequest")
    if isinstance(exc, requests.exceptions.SSLError):
        return VaultError(
            f"TLS to {settings.addr} failed during {where}: check VAULT_CACERT / vault.ca_cert "
            "(the server's certificate is not trusted)",
            code="VaultTlsError",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return VaultUnavailableError(
            f"Vault at {settings.addr} did not answer {where} within {settings.timeout:g}s"
        )
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return VaultUnavailableError(
            f"cannot connect to Vault at {settings.addr} for {where} ({type(exc).__name__})"
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultUnavailableError(f"request to Vault for {where} failed ({type(exc).__name__})")
    return VaultError(f"{where} failed: {type(exc).__name__}", code="VaultClientError")


@dataclass(slots=True)
class _TokenState:
    token: Secret
    ttl: float
    """Seconds the token lived when we got or renewed it; 0 = never expires (root tokens)."""
    expires_at: float | None
    """Monotonic deadline, None = never."""
    renewable: bool


class VaultClient:
    """hvac behind a bounded thread pool, with lazy login, renewal and error mapping."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix="rotator-vault"
        )
        self._local = threading.local()
        # One thread-safe connection pool shared by the per-thread hvac clients.
        self._session = session_for(
            settings.addr, verify=settings.verify, pool_size=settings.max_workers
        )
        self._aio: AioVaultHttp | None = None
        if settings.transport == "aiohttp":
            if isinstance(self._session, GuardedRequestsSession):
                # A proxy applies to Vault's address: requests knows how to use it, keep hvac.
                log.info("vault_transport_hvac_behind_proxy", addr=settings.addr)
            else:
                self._aio = AioVaultHttp(settings)
        self._auth: _TokenState | None = None
        self._token_file_seen: tuple[int, int, int] | None = None
        self._auth_lock: asyncio.Lock | None = None
        self._closed = False
        if settings.skip_verify:
            # The operator chose this; say it once instead of urllib3 warning on every request.
            log.warning("vault_tls_verification_disabled", addr=settings.addr)
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.logins = 0
        """How many times this client logged in (or read its token); for tests and metrics."""
        self.renewals = 0

    # -- plumbing ---------------------------------------------------------------------------

    def _thread_client(self) -> hvac.Client:
        client: hvac.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = hvac.Client(
                url=self.settings.addr,
                token="",
                namespace=self.settings.namespace or None,
                verify=self.settings.verify,
                timeout=self.settings.timeout,
                session=self._session,
            )
            self._local.client = client
        return client

    def _in_thread(self, fn: Callable[[hvac.Client], T], token: str) -> T:
        client = self._thread_client()
        client.token = token  # per-thread client: no other call sees this assignment
        return fn(client)

    async def _run(
        self, fn: Callable[[hvac.Client], T], token: Secret | None, op: str, path: str
    ) -> T:
        """One blocking hvac call in the pool; exceptions mapped, nothing retried."""
        if self._closed:
            raise VaultError("the Vault client is closed", code="VaultClientClosed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, self._in_thread, fn, token.reveal() if token else ""
            )
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException, OSError) as exc:
            raise map_vault_error(exc, op=op, path=path, settings=self.settings) from None

    async def aclose(self) -> None:
        """Wait for calls in flight, stop the pool and close every HTTP session."""
        if self._closed:
            return
        self._closed = True
        if self._aio is not None:
            await self._aio.aclose()
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        self._session.close()

    async def __aenter__(self) -> VaultClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- authentication ---------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        return self._auth_lock

    async def token(self) -> Secret:
        """A valid token: logs in on first use, renews or logs in again near expiry."""
        async with self._lock():
            state = self._auth
            if state is None:
                return (await self._login()).token
            if self._token_file_changed():
                log.info("vault_token_file_changed", path=self.settings.token_file)
                return (await self._login()).token
            if state.expires_at is None:
                return state.token
            remaining = state.expires_at - self._clock()
            if remaining <= 0:
                log.info("vault_token_expired", method=self.settings.auth_method)
                return (await self._login()).token
            if remaining < state.ttl * _RENEW_FRACTION:
                return (await self._renew(state)).token
            return state.token

    async def _login(self) -> _TokenState:
        settings = self.settings
        method = settings.auth_method
        if method == "token":
            # Stamped before reading: a write in between shows as a change on the next call.
            self._token_file_seen = self._token_file_stamp()
            token = await asyncio.to_thread(settings.resolve_token)
            try:
                body = await self._run(
                    lambda c: c.adapter.get("/v1/auth/token/lookup-self"),
                    token,
                    "lookup",
                    "auth/token/lookup-self",
                )
            except VaultPermissionError:
                raise VaultPermissionError(
                    "the Vault token is invalid, expired or revoked (or may not look itself up: "
                    "attach the default or rotator policy): log in again (bao login / vault "
                    "login), refresh the token file, or use AppRole/Kubernetes auth",
                    code="VaultTokenInvalid",
                ) from None
            path = "auth/token/lookup-self"
            data = _data_of(body, "lookup", path)
            if "ttl" not in data:
                # Every lookup-self answer has a ttl (0 for root tokens): without one we would
                # take the token for a non-expiring one.
                raise VaultInvalidResponseError("lookup", path, "data without a ttl")
            state = self._new_state(token, float(data.get("ttl") or 0), bool(data.get("renewable")))
        else:
            if method == "approle":
                secret_id = await asyncio.to_thread(
                    settings.read_secret_file, settings.secret_id_file, "vault.secret_id_file"
                )
                mount = settings.approle_mount
                payload: dict[str, str] = {"role_id": settings.role_id}
                secret_key, secret_value = "secret_id", secret_id
                hint = "check vault.role_id and the secret_id file (secret_ids expire)"
            else:
                jwt = await asyncio.to_thread(
                    settings.read_secret_file,
                    settings.kubernetes_jwt_file,
                    "vault.kubernetes_jwt_file",
                )
                mount = settings.kubernetes_mount
                payload = {"role": settings.kubernetes_role}
                secret_key, secret_value = "jwt", jwt
                hint = "check vault.kubernetes_role and the role's bound service account"
            path = f"auth/{mount}/login"

            def login(client: hvac.Client) -> JsonDict:
                body = {**payload, secret_key: secret_value.reveal()}
                result: JsonDict = client.adapter.post(f"/v1/{path}", json=body)
                return result

            try:
                body = await self._run(login, None, "login", path)
            except VaultUnavailableError:
                raise
            except VaultError as exc:
                raise VaultPermissionError(
                    f"{method} login failed: {exc.message}; {hint}", code="VaultAuthFailed"
                ) from None
            auth = body.get("auth") or {}
            if not auth.get("client_token"):
                raise VaultPermissionError(
                    f"{method} login at {path} returned no token", code="VaultAuthFailed"
                )
            state = self._new_state(
                Secret(str(auth["client_token"])),
                float(auth.get("lease_duration") or 0),
                bool(auth.get("renewable")),
            )
        self.logins += 1
        self._auth = state
        log.info(
            "vault_authenticated",
            method=method,
            token_ttl=state.ttl,
            renewable=state.renewable,
        )
        return state

    def _token_file_stamp(self) -> tuple[int, int, int] | None:
        """Identity of ``vault.token_file`` when the token comes from it (a Vault Agent's sink,
        rewritten on every new login); None otherwise. One ``stat`` per call: cheap."""
        settings = self.settings
        if settings.auth_method != "token" or not settings.token_file or settings.token:
            return None
        try:
            stat = os.stat(settings.token_file)
        except OSError:
            return None  # gone for a moment (an agent replacing it): keep the token we have
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _token_file_changed(self) -> bool:
        if self._token_file_seen is None:
            return False
        stamp = self._token_file_stamp()
        return stamp is not None and stamp != self._token_file_seen

    def _new_state(self, token: Secret, ttl: float, renewable: bool) -> _TokenState:
        expires = self._clock() + ttl if ttl > 0 else None
        return _TokenState(token=token, ttl=ttl, expires_at=expires, renewable=renewable)

    async def _renew(self, state: _TokenState) -> _TokenState:
        """Extend the token; log in again when it cannot be extended far enough."""
        if state.renewable:
            try:
                body = await self._run(
                    lambda c: c.adapter.post("/v1/auth/token/renew-self", json={}),
                    state.token,
                    "renew",
                    "auth/token/renew-self",
                )
                auth = body.get("auth") if isinstance(body, dict) else None
                if not isinstance(auth, dict) or "lease_duration" not in auth:
                    raise VaultInvalidResponseError("renew", "auth/token/renew-self", "no auth")
            except VaultUnavailableError:
                raise
            except VaultError as exc:
                log.info("vault_renew_failed", code=exc.code)
            else:
                ttl = float(auth.get("lease_duration") or 0)
                # Keep the original TTL as the yardstick: a renewal capped by max_ttl returns
                # less, and then renewing again on every call would be pointless.
                renewed = self._new_state(state.token, ttl, bool(auth.get("renewable")))
                renewed.ttl = state.ttl
                self.renewals += 1
                self._auth = renewed
                log.info("vault_token_renewed", token_ttl=ttl)
                if renewed.expires_at is None or (
                    renewed.expires_at - self._clock() >= state.ttl * _RENEW_FRACTION
                ):
                    return renewed
                state = renewed  # capped by its max TTL: a fresh login is the only way on
        if self.settings.auth_method == "token":
            # Nothing to log in with: use this token until it expires, then re-read it (a Vault
            # Agent may have written a new one to the token file by then).
            state.renewable = False
            self._auth = state
            return state
        return await self._login()

    async def _token_is_valid(self, token: Secret) -> bool:
        try:
            await self._run(
                lambda c: c.adapter.get("/v1/auth/token/lookup-self"),
                token,
                "lookup",
                "auth/token/lookup-self",
            )
        except VaultPermissionError:
            return False
        return True

    # -- calls ------------------------------------------------------------------------------

    async def call(self, fn: Callable[[hvac.Client], T], *, op: str, path: str) -> T:
        """Run ``fn(hvac_client)`` in the pool with a valid token; errors mapped.

        A 403 caused by a token that died under us (revoked, expired early) triggers one fresh
        login and one retry; a 403 on a valid token is a policy problem and is raised.
        """
        return await self._with_token(lambda token: self._run(fn, token, op, path))

    async def _with_token(self, attempt: Callable[[Secret], Awaitable[T]]) -> T:
        """``attempt(token)``; on a 403, one fresh login and one retry if the token died."""
        token = await self.token()
        try:
            return await attempt(token)
        except VaultPermissionError:
            if await self._token_is_valid(token):
                raise
            async with self._lock():
                if self._auth is not None and self._auth.token == token:
                    log.info("vault_token_rejected", method=self.settings.auth_method)
                    await self._login()
            return await attempt(await self.token())

    async def _on_loop(
        self,
        aio: AioVaultHttp,
        token: Secret,
        method: str,
        path: str,
        *,
        json: Mapping[str, object] | None,
        headers: Mapping[str, str] | None,
    ) -> JsonDict:
        """One call over the aiohttp transport, errors mapped exactly as :meth:`_run` maps
        hvac's (the transport raises the same hvac/requests exception types)."""
        if self._closed:
            raise VaultError("the Vault client is closed", code="VaultClientClosed")
        op = {"GET": "read", "LIST": "list", "DELETE": "delete"}.get(method, "write")
        try:
            return await aio.request(method, path, token=token.reveal(), json=json, headers=headers)
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException, OSError) as exc:
            raise map_vault_error(exc, op=op, path=path, settings=self.settings) from None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        missing_ok: bool = False,
        kv: bool = False,
    ) -> JsonDict | None:
        """One HTTP API call (``path`` without ``/v1/``). Returns the JSON body, ``{}`` for 204.

        ``missing_ok``: a 404 returns None instead of raising :class:`VaultNotFoundError`.
        ``kv``: a KV call of the hot path, which travels over ``vault.transport`` (aiohttp on the
        event loop, by default); every other call goes through hvac. Same token, same retry on a
        dead token, same errors either way.
        """
        op = {"GET": "read", "LIST": "list", "DELETE": "delete"}.get(method, "write")
        aio = self._aio if kv else None
        if aio is not None:
            try:
                return await self._with_token(
                    lambda token: self._on_loop(
                        aio, token, method, path, json=json, headers=headers
                    )
                )
            except VaultNotFoundError:
                if missing_ok:
                    return None
                raise

        def do(client: hvac.Client) -> JsonDict:
            result = client.adapter.request(
                method,
                f"/v1/{path}",
                json=dict(json) if json is not None else None,
                headers=dict(headers) if headers else None,
            )
            return result if isinstance(result, dict) else {}

        try:
            return await self.call(do, op=op, path=path)
        except VaultNotFoundError:
            if missing_ok:
                return None
            raise

    async def request_as(
        self,
        token: Secret,
        method: str,
        path: str,
        *,
        json: Mapping[str, object] | None = None,
        missing_ok: bool = False,
    ) -> JsonDict | None:
        """One HTTP API call with a caller's own token (check-out leases), not rotator's: no
        login, no retry; a 403 is the caller's policy and is raised as is."""
        op = {"GET": "read", "LIST": "list", "DELETE": "delete"}.get(method, "write")

        def do(client: hvac.Client) -> JsonDict:
            result = client.adapter.request(
                method, f"/v1/{path}", json=dict(json) if json is not None else None
            )
            return result if isinstance(result, dict) else {}

        try:
            return await self._run(do, token, op, path)
        except VaultNotFoundError:
            if missing_ok:
                return None
            raise

    async def read(self, path: str) -> JsonDict | None:
        return await self.request("GET", path, missing_ok=True)

    async def write(self, path: str, data: Mapping[str, object]) -> JsonDict:
        return await self.request("POST", path, json=data) or {}

    async def list_keys(self, path: str) -> list[str]:
        return _keys_of(await self.request("LIST", path, missing_ok=True), path)

    async def health(self) -> bool:
        """True when Vault is unsealed and answers, and our token is valid (readiness)."""

        def probe(client: hvac.Client) -> int:
            response = client.adapter.get("/v1/sys/health", raise_exception=False)
            return 200 if isinstance(response, dict) else int(response.status_code)

        try:
            status = await self._run(probe, None, "read", "sys/health")
            # 429/472/473: standby nodes, which forward requests: still usable.
            if status not in (200, 429, 472, 473):
                return False
            await self.request("GET", "auth/token/lookup-self")
        except VaultError as exc:
            log.info("vault_unhealthy", code=exc.code)
            return False
        return True

    # -- KV version 2 -----------------------------------------------------------------------

    async def kv_read(self, mount: str, path: str) -> JsonDict | None:
        """``{"data": {...} | None, "metadata": {...}}`` of the latest version, None if absent.

        A soft-deleted latest version comes back with ``data`` None but its metadata, so a
        writer can still check-and-set against its version number.
        """
        try:
            body = await self.request("GET", f"{mount}/data/{path}", kv=True)
        except VaultNotFoundError as exc:
            deleted = exc.body.get("data") if exc.body else None
            if isinstance(deleted, dict) and isinstance(deleted.get("metadata"), dict):
                return {"data": None, "metadata": deleted["metadata"]}
            return None
        where = f"{mount}/data/{path}"
        data = _data_of(body, "read", where)
        if not isinstance(data.get("metadata"), dict) or not (
            "data" in data and (data["data"] is None or isinstance(data["data"], dict))
        ):
            raise VaultInvalidResponseError("read", where, "no KV version 2 data and metadata")
        return data

    async def kv_write(
        self, mount: str, path: str, data: Mapping[str, object], *, cas: int | None = None
    ) -> JsonDict:
        """Write a new version; with ``cas`` only if the current version is ``cas`` (0: absent).

        Returns the new version's metadata (``version``, ``created_time``, ...).
        """
        payload: dict[str, object] = {"data": dict(data)}
        if cas is not None:
            payload["options"] = {"cas": cas}
        where = f"{mount}/data/{path}"
        body = await self.request("POST", where, json=payload, kv=True)
        result = _data_of(body, "write", where)
        if "version" not in result:
            raise VaultInvalidResponseError("write", where, "no version of the new secret")
        return result

    async def kv_list(self, mount: str, path: str) -> list[str]:
        where = f"{mount}/metadata/{path}"
        body = await self.request("LIST", where, missing_ok=True, kv=True)
        return _keys_of(body, where)

    async def kv_metadata(self, mount: str, path: str) -> JsonDict | None:
        where = f"{mount}/metadata/{path}"
        body = await self.request("GET", where, missing_ok=True, kv=True)
        return None if body is None else _data_of(body, "read", where)

    async def kv_patch_custom_metadata(
        self, mount: str, path: str, values: Mapping[str, str | None]
    ) -> None:
        """Merge ``values`` into the custom metadata (None deletes a key), atomically on the
        server (JSON merge patch); creates the metadata when the secret has none yet."""
        try:
            await self.request(
                "PATCH",
                f"{mount}/metadata/{path}",
                json={"custom_metadata": dict(values)},
                headers={"Content-Type": "application/merge-patch+json"},
                kv=True,
            )
        except VaultNotFoundError:
            kept = {k: v for k, v in values.items() if v is not None}
            await self.request(
                "POST", f"{mount}/metadata/{path}", json={"custom_metadata": kept}, kv=True
            )
