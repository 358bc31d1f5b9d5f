"""A lean HTTP transport under hvac: urllib3 directly instead of requests.

    client = hvac.Client(url=addr, session=Urllib3Session(verify=ca_or_bool, pool_size=16))

hvac talks to Vault through a ``requests.Session``; requests costs about as much CPU again as the
urllib3 pool beneath it, and a rotation makes five Vault calls from a GIL-bound process, so that
overhead capped rotator's throughput (``make bench``, py-spy). This class offers the small part
of the ``requests.Session`` interface hvac uses and raises requests' exception types, so hvac's
error handling and rotator's error mapping work unchanged. With a proxy configured, rotator keeps
plain requests (see :func:`session_for`).

Both sessions keep the token at home: a redirect to another scheme, host or port is refused
with a :class:`~rotator.errors.VaultError` (code ``VaultRedirect``) that names the target, since
following it would send ``X-Vault-Token`` along (urllib3 and requests strip ``Authorization`` on
such a hop, but know nothing of Vault's header). A redirect within the configured origin is
followed, at most five times.
"""

from __future__ import annotations

import json as jsonlib
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError

from rotator.errors import ConfigError, RetryClass, VaultError
from rotator.netaddr import is_loopback

__all__ = [
    "GuardedRequestsSession",
    "Urllib3Response",
    "Urllib3Session",
    "check_vault_addr",
    "origin_of",
    "session_for",
    "ssl_context_for",
]

_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def check_vault_addr(addr: str, *, allow_insecure_http: bool) -> None:
    """The transport rule: https; plain http only to a loopback host, and only when allowed.

    The token (and every password rotator stores) travels in each request.
    """
    try:
        parts = urlsplit(addr)
        host = parts.hostname
        parts.port  # noqa: B018 - a bad port only shows when it is read
    except ValueError:
        raise ConfigError(f"{addr!r} is not a valid URL", key="vault.addr") from None
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host:
        if not is_loopback(host):
            raise ConfigError(
                f"{addr!r} uses plain http:// for a non-loopback host; the Vault token and the "
                "passwords would cross the network in clear, so only https:// is allowed",
                key="vault.addr",
            )
        if not allow_insecure_http:
            raise ConfigError(
                f"{addr!r} uses plain http://; set vault.allow_insecure_http = true to allow "
                "it for a Vault/OpenBao dev server on this machine",
                key="vault.allow_insecure_http",
            )
        return
    raise ConfigError(f"{addr!r} is not an https:// URL", key="vault.addr")


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in: what a redirect may not change."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _refuse_foreign(
    origin: tuple[str, str, int | None], status: int, current: str, loc: str
) -> str:
    """The absolute redirect target, or VaultError when it leaves the configured origin."""
    target = urljoin(current, loc)
    if origin_of(target) != origin:
        shown = target.split("?", 1)[0][:200]  # a query string could carry anything
        raise VaultError(
            f"Vault answered HTTP {status}, a redirect to {shown}; redirects to another host or "
            "scheme are not followed (the Vault token would go with them). Point vault.addr at "
            "the address that serves the API (the active node, or a load balancer that forwards)",
            code="VaultRedirect",
            retry_class=RetryClass.TERMINAL,
        )
    return target


def ssl_context_for(verify: bool | str) -> ssl.SSLContext:
    """What ``vault.ca_cert`` / ``skip_verify`` mean (``VaultSettings.verify``), for both
    transports: a CA bundle path, the system store (True), or no verification (False)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    except (OSError, ssl.SSLError):
        raise ConfigError(
            f"{verify} is not a readable PEM bundle of CA certificates", key="vault.ca_cert"
        ) from None


class Urllib3Response:
    """What hvac reads of a ``requests.Response``."""

    __slots__ = ("content", "headers", "reason", "status_code", "url")

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str) -> None:
        self.status_code = raw.status
        self.reason = raw.reason or ""
        self.headers = raw.headers
        self.content = raw.data
        self.url = url

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Urllib3Session:
    """The slice of ``requests.Session`` hvac uses, on one thread-safe urllib3 pool."""

    def __init__(self, *, verify: bool | str, pool_size: int, origin: str) -> None:
        self._origin = origin_of(origin)
        self.verify = verify
        self.cert = None
        self.proxies: dict[str, str] = {}
        context = ssl_context_for(verify)
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, ssl_context=context)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        timeout: float | None = None,
        allow_redirects: bool = True,
        **_ignored: Any,
    ) -> Urllib3Response:
        sent_headers = dict(headers or {})
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            sent_headers.setdefault("Content-Type", "application/json")
        elif data is not None:
            body = data if isinstance(data, bytes) else str(data).encode("utf-8")
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"
        method = method.upper()
        if origin_of(url) != self._origin:
            raise _refusal_for(url)
        # Redirects are followed here, not by urllib3, so that each hop is checked first.
        for _ in range(_MAX_REDIRECTS + 1):
            raw = self._send(method, url, body, sent_headers, timeout)
            location = raw.headers.get("Location")
            if not (allow_redirects and raw.status in _REDIRECTS and location):
                return Urllib3Response(raw, url)
            url = _refuse_foreign(self._origin, raw.status, url, location)
            if raw.status == 303 or (raw.status in (301, 302) and method == "POST"):
                method, body = "GET", None  # what requests (and browsers) do
                sent_headers.pop("Content-Type", None)
        raise requests.exceptions.TooManyRedirects(f"more than {_MAX_REDIRECTS} redirects")

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float | None,
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                method,
                url,
                body=body,
                headers=dict(headers),
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
            )
        except MaxRetryError as exc:
            raise _as_requests_error(exc.reason or exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _as_requests_error(exc) from None

    def close(self) -> None:
        self._pool.clear()


def _as_requests_error(exc: BaseException) -> requests.exceptions.RequestException:
    """The requests exception hvac users (and rotator's error mapping) expect."""
    text = type(exc).__name__
    if isinstance(exc, Urllib3SSLError):
        return requests.exceptions.SSLError(text)
    if isinstance(exc, NewConnectionError):  # a subclass of ConnectTimeoutError in urllib3
        return requests.exceptions.ConnectionError(text)
    if isinstance(exc, ConnectTimeoutError):
        return requests.exceptions.ConnectTimeout(text)
    if isinstance(exc, ReadTimeoutError):
        return requests.exceptions.ReadTimeout(text)
    if isinstance(exc, ProtocolError | OSError):
        return requests.exceptions.ConnectionError(text)
    return requests.exceptions.RequestException(text)


def _refusal_for(url: str) -> VaultError:
    return VaultError(
        f"refusing to send a Vault request to {url.split('?', 1)[0][:200]}: it is not the "
        "configured vault.addr",
        code="VaultRedirect",
        retry_class=RetryClass.TERMINAL,
    )


class GuardedRequestsSession(requests.Session):
    """Plain requests (used behind a proxy) with the same redirect rule as the lean session."""

    def __init__(self, *, origin: str, verify: bool | str, proxies: Mapping[str, str]) -> None:
        super().__init__()
        self._origin = origin_of(origin)
        self.verify = verify
        self.proxies.update(proxies)
        self.trust_env = False  # resolved once by the caller; requests re-reads them per call
        self.max_redirects = _MAX_REDIRECTS

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests asks this before every hop: refuse one that leaves the origin.
        target = super().get_redirect_target(resp)
        if target:
            try:
                _refuse_foreign(self._origin, resp.status_code, resp.url, target)
            except VaultError:
                resp.close()  # hand the connection back before giving up
                raise
        return target


def session_for(addr: str, *, verify: bool | str, pool_size: int) -> Any:
    """The lean session, or plain requests when a proxy applies to Vault's address."""
    proxies = requests.utils.get_environ_proxies(addr)
    if proxies:
        return GuardedRequestsSession(origin=addr, verify=verify, proxies=proxies)
    return Urllib3Session(verify=verify, pool_size=pool_size, origin=addr)


# The same rules for the aiohttp transport (rotator.vault.kv_aio).
MAX_REDIRECTS = _MAX_REDIRECTS
REDIRECT_STATUSES = _REDIRECTS
refuse_foreign = _refuse_foreign
refusal_for = _refusal_for
