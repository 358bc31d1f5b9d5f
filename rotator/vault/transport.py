"""A lean HTTP transport under hvac: urllib3 directly instead of requests.

    client = hvac.Client(url=addr, session=Urllib3Session(verify=ca_or_bool, pool_size=16))

hvac talks to Vault through a ``requests.Session``; requests costs about as much CPU again as the
urllib3 pool beneath it, and a rotation makes five Vault calls from a GIL-bound process, so that
overhead capped rotator's throughput (``make bench``, py-spy). This class offers the small part
of the ``requests.Session`` interface hvac uses and raises requests' exception types, so hvac's
error handling and rotator's error mapping work unchanged. With a proxy configured, rotator keeps
plain requests (see :func:`session_for`).
"""

from __future__ import annotations

import json as jsonlib
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

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

from rotator.errors import ConfigError

__all__ = ["Urllib3Response", "Urllib3Session", "session_for"]

# Vault standbys answer 307 to the active node; requests follows redirects, so do we.
_RETRY = urllib3.Retry(
    total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_redirect=True
)


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

    def __init__(self, *, verify: bool | str, pool_size: int) -> None:
        self.verify = verify
        self.cert = None
        self.proxies: dict[str, str] = {}
        if verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = ssl.create_default_context(
                    cafile=verify if isinstance(verify, str) else None
                )
            except (OSError, ssl.SSLError):
                raise ConfigError(
                    f"{verify} is not a readable PEM bundle of CA certificates",
                    key="vault.ca_cert",
                ) from None
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
        try:
            raw = self._pool.request(
                method.upper(),
                url,
                body=body,
                headers=sent_headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=_RETRY if allow_redirects else False,
                redirect=allow_redirects,
            )
        except MaxRetryError as exc:
            raise _as_requests_error(exc.reason or exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _as_requests_error(exc) from None
        return Urllib3Response(raw, url)

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


def session_for(addr: str, *, verify: bool | str, pool_size: int) -> Any:
    """The lean session, or plain requests when a proxy applies to Vault's address."""
    proxies = requests.utils.get_environ_proxies(addr)
    if proxies:
        session = requests.Session()
        session.verify = verify
        session.proxies.update(proxies)
        session.trust_env = False  # resolved once above; requests re-reads them per call
        return session
    return Urllib3Session(verify=verify, pool_size=pool_size)
