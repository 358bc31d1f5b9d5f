"""The E-HPC OpenAPI client: one pooled aiohttp session, signed POST requests, typed errors.

    endpoints = Endpoints.from_settings(template="https://ehpc.{region}.aliyuncs.com")
    async with EhpcClient(credentials=DefaultChainCredentials(), endpoints=endpoints) as api:
        for cluster in await api.list_clusters("cn-hangzhou"):
            result = await api.modify_visual_service_passwd(
                region=cluster.region, cluster_id=cluster.id,
                runas_password=root_password, new_password=Secret("a1b2c3"),
            )

Passwords go in the form body of a POST, never in the URL, unless ``method="GET"`` is chosen for
a gateway that refuses POST (then they are query parameters, as every official SDK sends them,
and the URL is never logged or put in an error). Every failure is an
:class:`~rotator.errors.ApiError` whose retry class says what the caller may do: in particular a
timeout or dropped connection after the request was sent is *ambiguous* (the password may have
changed), which the rotation engine answers by re-applying the same password.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

import aiohttp
import structlog
from yarl import URL

from rotator.ehpc import signer
from rotator.ehpc.codes import error_for_code
from rotator.ehpc.credentials import CredentialProvider, RefreshableCredentials
from rotator.ehpc.models import API_VERSION, Cluster, ModifyResult
from rotator.errors import (
    AmbiguousApiError,
    ApiError,
    ConfigError,
    ErrorScope,
    RetryableApiError,
    TerminalApiError,
    ThrottledError,
)
from rotator.netaddr import is_loopback
from rotator.secret import MASK, Secret

__all__ = [
    "DEFAULT_ENDPOINT_TEMPLATE",
    "EhpcClient",
    "Endpoints",
    "Probe",
    "Timeouts",
    "retry_after_from",
    "tls_context",
]

log = structlog.get_logger("rotator.ehpc")

DEFAULT_ENDPOINT_TEMPLATE = "https://ehpc.{region}.aliyuncs.com"
LIST_PAGE_SIZE = 50
# The official SDK caps a server-requested throttling delay at 120 s; so do we.
MAX_RETRY_AFTER_SECONDS = 120.0
STS_EXPIRED = "InvalidSecurityToken.Expired"

ParamValue = str | Secret
_REGION = re.compile(r"\A[a-z0-9][a-z0-9-]{0,63}\Z")  # \Z: "$" would accept a trailing newline


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where each region's API lives.

    ``single`` sends every region to one endpoint (the simulator); ``overrides`` pins some
    regions; everything else comes from ``template``. Plain ``http://`` is refused unless
    ``allow_insecure_http`` is set *and* the host is a loopback address: the requests carry
    passwords.
    """

    template: str = DEFAULT_ENDPOINT_TEMPLATE
    overrides: Mapping[str, str] = field(default_factory=dict)
    single: str | None = None
    allow_insecure_http: bool = False

    def url_for(self, region: str) -> URL:
        if not _REGION.match(region):
            # Regions come from Vault and ListClusters: never let one steer the URL's host.
            raise ConfigError(f"{region!r} is not a region id (like cn-hangzhou)", key="region")
        if self.single:
            raw, key = self.single, "ehpc.endpoint"
        elif region in self.overrides:
            raw, key = self.overrides[region], f"ehpc.endpoints.{region}"
        else:
            key = "ehpc.endpoint_template"
            try:
                raw = self.template.format(region=region)
            except (KeyError, IndexError, ValueError):
                raise ConfigError(
                    f"{self.template!r} must contain only the placeholder {{region}}", key=key
                ) from None
        try:
            url = URL(raw)
            url.port  # noqa: B018 - a bad port only shows when it is read
        except ValueError:
            raise ConfigError(f"{raw!r} is not a valid URL", key=key) from None
        self._check(url, raw)
        return url.with_path("/")

    def validate(self, regions: list[str]) -> None:
        """Check every endpoint up front, so a bad one fails at startup rather than mid-run."""
        for region in regions:
            self.url_for(region)

    def _check(self, url: URL, raw: str) -> None:
        if url.scheme == "https" and url.host:
            return
        if url.scheme == "http" and url.host:
            if not is_loopback(url.host):
                raise ConfigError(
                    f"endpoint {raw!r} uses plain http:// for a non-loopback host; the API "
                    "carries passwords, so only https:// is allowed",
                    key="ehpc.endpoint",
                )
            if not self.allow_insecure_http:
                raise ConfigError(
                    f"endpoint {raw!r} uses plain http://; set ehpc.allow_insecure_http = true "
                    "to allow it for a loopback simulator",
                    key="ehpc.allow_insecure_http",
                )
            return
        raise ConfigError(f"endpoint {raw!r} is not an https:// URL", key="ehpc.endpoint")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    total: float = 30.0


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verification always on; a custom bundle replaces the system CAs. Checked at start-up."""
    try:
        return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError):
        raise ConfigError(
            f"{ca_bundle} is not a readable PEM bundle of CA certificates", key="ehpc.ca_bundle"
        ) from None


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return host if url.is_default_port() else f"{host}:{url.port}"


def _clear(params: Mapping[str, ParamValue]) -> dict[str, str]:
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in params.items()}


def _form_body(params: Mapping[str, ParamValue]) -> bytes:
    return urlencode(sorted(_clear(params).items()), quote_via=quote, safe="~").encode("ascii")


Method = Literal["POST", "GET"]
"""How an RPC action is sent: a form body (default) or query parameters (what the SDKs do)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """What one signed call answered, as it came (:meth:`EhpcClient.probe`)."""

    status: int
    body: Mapping[str, Any]
    """The decoded answer with ``Code``/``Message``/``RequestId`` keys whatever their case; a
    body that cannot be read, or a redirect, reads as ``Code`` ``InvalidResponse``."""
    date: str | None
    """The response's ``Date`` header (whole seconds): the gateway's clock."""

    @property
    def code(self) -> str | None:
        return str(self.body["Code"]) if self.body.get("Code") else None

    @property
    def ok(self) -> bool:
        return self.status < 300 and self.code is None


@dataclass(frozen=True, slots=True)
class _Reply:
    """A response as received, before it is judged."""

    endpoint: URL
    """Without the query: with ``method="GET"`` the request's URL holds the passwords."""
    status: int
    raw: bytes
    headers: Mapping[str, str]
    elapsed: float


class EhpcClient:
    """An async E-HPC client sharing one pooled, TLS-verifying ``aiohttp.ClientSession``."""

    def __init__(
        self,
        *,
        credentials: CredentialProvider,
        endpoints: Endpoints,
        timeouts: Timeouts | None = None,
        ca_bundle: Path | None = None,
        max_connections: int = 100,
        user_agent: str = "rotator/0.1",
        method: Method = "POST",
    ) -> None:
        if method not in ("POST", "GET"):
            raise ConfigError(f"{method!r} is not POST or GET", key="ehpc.method")
        self._method: Method = method
        self._credentials = credentials
        self._endpoints = endpoints
        self._timeouts = timeouts or Timeouts()
        self._ssl_context = tls_context(ca_bundle)
        self._max_connections = max_connections
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ssl=self._ssl_context, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self._timeouts.total, connect=self._timeouts.connect
                ),
                # Our own headers only: nothing (cookies, proxies' auth) leaks between calls.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # aiohttp silently re-sends an idempotent-looking request (GET) once when the
            # connection drops. A GET ModifyVisualServicePasswd is not idempotent in effect, and
            # the re-send would turn "dropped after sending" (ambiguous) into SignatureNonceUsed
            # (looks retryable). No public switch exists; this private one has been stable
            # since aiohttp 3.9. Retries are the engine's decision.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- actions ---------------------------------------------------------------------------

    async def modify_visual_service_passwd(
        self,
        *,
        region: str,
        cluster_id: str,
        runas_password: Secret,
        new_password: Secret,
        runas_user: str = "root",
    ) -> ModifyResult:
        """Set the VNC password of one cluster. Raises :class:`ApiError` on any failure."""
        body = await self.call(
            region,
            "ModifyVisualServicePasswd",
            {
                "ClusterId": cluster_id,
                "RunasUser": runas_user,
                "RunasUserPassword": runas_password,
                "Passwd": new_password,
            },
            cluster_id=cluster_id,
            mutating=True,
        )
        return ModifyResult(cluster_id=cluster_id, request_id=str(body.get("RequestId", "")))

    async def list_clusters(self, region: str) -> list[Cluster]:
        """Every cluster in a region, following all pages."""
        clusters: list[Cluster] = []
        page = 1
        while True:
            body = await self.call(
                region,
                "ListClusters",
                {"RegionId": region, "PageNumber": str(page), "PageSize": str(LIST_PAGE_SIZE)},
            )
            entries, total = _cluster_page(body, region)
            clusters.extend(entries)
            if not entries or len(clusters) >= (total if total is not None else len(clusters)):
                return clusters
            page += 1

    async def probe(
        self, region: str, params: Mapping[str, str], *, action: str = "ListClusters"
    ) -> Probe:
        """One signed read-only call, answered as it came: a refusal is a value, not an error.

        For ``rotator doctor``: signed and sent exactly as :meth:`call` sends (the method, the
        STS headers), but neither retried nor refreshed. Only a call that got no answer (no
        connection, an untrusted certificate, a timeout) raises :class:`ApiError`.
        """
        reply = await self._exchange(region, action, params, cluster_id=None, mutating=False)
        try:
            if 300 <= reply.status < 400:
                raise _redirect_error(
                    reply.status, reply.headers.get("Location", ""), reply.endpoint, params, None
                )
            body = self._decode(reply.raw, reply.status, cluster_id=None, mutating=False)
        except ApiError as exc:
            body = {"Code": exc.code, "Message": exc.message}
        return Probe(status=reply.status, body=body, date=reply.headers.get("Date"))

    # -- transport -------------------------------------------------------------------------

    async def call(
        self,
        region: str,
        action: str,
        params: Mapping[str, ParamValue],
        *,
        cluster_id: str | None = None,
        mutating: bool = False,
    ) -> dict[str, Any]:
        """Send one signed RPC call and return the decoded JSON body.

        ``InvalidSecurityToken.Expired`` makes a refreshable provider fetch new STS credentials,
        and the call is sent once more: the gateway refused it before E-HPC saw it, so it did
        not apply. A second refusal is raised (account-wide).
        """
        try:
            return await self._call_once(
                region, action, params, cluster_id=cluster_id, mutating=mutating
            )
        except TerminalApiError as exc:
            provider = self._credentials
            if exc.code != STS_EXPIRED or not isinstance(provider, RefreshableCredentials):
                raise
            log.info("ehpc_sts_token_expired_refreshing", action=action, cluster_id=cluster_id)
            await provider.refresh()
        return await self._call_once(
            region, action, params, cluster_id=cluster_id, mutating=mutating
        )

    async def _call_once(
        self,
        region: str,
        action: str,
        params: Mapping[str, ParamValue],
        *,
        cluster_id: str | None,
        mutating: bool,
    ) -> dict[str, Any]:
        reply = await self._exchange(
            region, action, params, cluster_id=cluster_id, mutating=mutating
        )
        status = reply.status
        if 300 <= status < 400:
            raise _redirect_error(
                status, reply.headers.get("Location", ""), reply.endpoint, params, cluster_id
            )
        decoded = self._decode(reply.raw, status, cluster_id=cluster_id, mutating=mutating)
        request_id = str(decoded.get("RequestId", "")) or None
        code = decoded.get("Code")
        log.debug(
            "ehpc_call",
            action=action,
            cluster_id=cluster_id,
            region=region,
            http_status=status,
            code=code,
            request_id=request_id,
            elapsed_ms=round(reply.elapsed * 1000, 1),
        )
        if status < 300 and not code:
            return decoded
        raise error_for_code(
            str(code or f"HTTP{status}"),
            _without_secrets(str(decoded.get("Message", "")), params),
            http_status=status,
            cluster_id=cluster_id,
            request_id=request_id,
            retry_after=retry_after_from(reply.headers),
        )

    async def _exchange(
        self,
        region: str,
        action: str,
        params: Mapping[str, ParamValue],
        *,
        cluster_id: str | None,
        mutating: bool,
    ) -> _Reply:
        """Sign and send one request; a transport failure is an :class:`ApiError`."""
        session = self._open()
        url = endpoint = self._endpoints.url_for(region)
        if self._method == "GET":
            # Query parameters, encoded exactly as they are signed (RFC 3986, sorted). This URL
            # holds the passwords: it goes to aiohttp and nowhere else (no log, no message).
            query = _clear(params)
            body = b""
            url = URL(f"{url}?{signer.canonical_query(query)}", encoded=True)
        else:
            query, body = {}, _form_body(params)
        headers = await self._signed_headers(url, action, body, query)
        started = time.monotonic()
        sent = False
        try:
            # Never follow a redirect: it would carry the passwords to wherever it points.
            async with session.request(
                self._method, url, data=body or None, headers=headers, allow_redirects=False
            ) as response:
                sent = True
                raw = await response.read()
                return _Reply(
                    endpoint=endpoint,
                    status=response.status,
                    raw=raw,
                    headers=response.headers,
                    elapsed=time.monotonic() - started,
                )
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TerminalApiError(
                f"{url.host}: TLS certificate not trusted ({exc.certificate_error}); set "
                "ehpc.ca_bundle if it is signed by a private CA",
                code="TLSError",
                cluster_id=cluster_id,
                scope=ErrorScope.ACCOUNT,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            # Never connected, so nothing was sent: safe to retry.
            raise RetryableApiError(
                f"cannot connect to {url.host}:{url.port}: {exc.os_error.strerror or exc}",
                code="ConnectionFailed",
                cluster_id=cluster_id,
            ) from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            connect_only = isinstance(exc, aiohttp.ConnectionTimeoutError) and not sent
            raise self._lost(
                f"no answer from {url.host} within the timeout",
                "Timeout",
                cluster_id,
                ambiguous=mutating and not connect_only,
            ) from None
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
            raise self._lost(
                f"connection to {url.host} dropped before the answer arrived",
                "ConnectionDropped",
                cluster_id,
                ambiguous=mutating,
            ) from None
        except aiohttp.ClientError as exc:
            raise self._lost(
                f"HTTP client error talking to {url.host}: {type(exc).__name__}",
                "ClientError",
                cluster_id,
                ambiguous=mutating,
            ) from None

    @staticmethod
    def _lost(message: str, code: str, cluster_id: str | None, *, ambiguous: bool) -> ApiError:
        if ambiguous:
            return AmbiguousApiError(
                f"{message}; the change may or may not have been applied",
                code=code,
                cluster_id=cluster_id,
            )
        return RetryableApiError(message, code=code, cluster_id=cluster_id)

    @staticmethod
    def _decode(
        raw: bytes, status: int, *, cluster_id: str | None, mutating: bool
    ) -> dict[str, Any]:
        try:
            decoded = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            decoded = _xml_error(raw)
        if isinstance(decoded, dict):
            return _canonical_keys(decoded)
        what = (
            "an empty body"
            if not raw
            else f"a body that is neither JSON nor XML ({len(raw)} bytes)"
        )
        message = f"HTTP {status} with {what}; a proxy or load balancer may be in the way"
        if status == 429:
            return_error: ApiError = ThrottledError(
                message, code="InvalidResponse", http_status=status, cluster_id=cluster_id
            )
        elif 400 <= status < 500:
            return_error = TerminalApiError(
                message, code="InvalidResponse", http_status=status, cluster_id=cluster_id
            )
        elif mutating:
            # A 2xx/5xx we cannot read may still mean the change went through.
            return_error = AmbiguousApiError(
                message, code="InvalidResponse", http_status=status, cluster_id=cluster_id
            )
        else:
            return_error = RetryableApiError(
                message, code="InvalidResponse", http_status=status, cluster_id=cluster_id
            )
        raise return_error

    async def _signed_headers(
        self, url: URL, action: str, body: bytes, query: Mapping[str, str]
    ) -> dict[str, str]:
        key = await self._credentials.get()
        headers = {
            "host": _host_header(url),
            "x-acs-action": action,
            "x-acs-version": API_VERSION,
            "x-acs-date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "x-acs-content-sha256": signer.sha256_hex(body),
        }
        if self._method == "POST":
            headers["content-type"] = "application/x-www-form-urlencoded"
        if key.security_token is not None and key.security_token:
            # What alibabacloud_tea_openapi sends with STS credentials, both signed.
            headers["x-acs-accesskey-id"] = key.access_key_id
            headers["x-acs-security-token"] = key.security_token.reveal()
        headers["authorization"] = signer.authorization(
            method=self._method,
            path="/",
            query=query,
            headers=headers,
            payload_sha256=headers["x-acs-content-sha256"],
            access_key_id=key.access_key_id,
            access_key_secret=key.access_key_secret.reveal(),
        )
        headers["accept"] = "application/json"
        headers["user-agent"] = self._user_agent
        return headers


def _cluster_page(body: Mapping[str, Any], region: str) -> tuple[list[Cluster], int | None]:
    """One ListClusters page; a body of an unexpected shape is an error, not a crash."""

    def bad(what: str) -> RetryableApiError:
        return RetryableApiError(
            f"ListClusters answered 200 with {what}",
            code="InvalidResponse",
            http_status=200,
            request_id=str(body.get("RequestId", "")) or None,
        )

    wrapper = body.get("Clusters")
    if wrapper is None:
        if body.get("TotalCount") not in (None, 0, "0"):
            raise bad("no Clusters although TotalCount is not 0")
        wrapper = {}
    entries = wrapper.get("ClusterInfoSimple", []) if isinstance(wrapper, Mapping) else None
    if not isinstance(entries, list):
        raise bad("Clusters.ClusterInfoSimple that is not a list")
    clusters = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not entry.get("Id"):
            raise bad("a cluster entry without an Id")
        clusters.append(
            Cluster(
                id=str(entry["Id"]),
                region=str(entry.get("RegionId") or region),
                name=str(entry.get("Name", "")),
                zone=str(entry.get("ZoneId", "")),
                status=str(entry.get("Status", "")),
                login_node=_first_login_node(entry.get("LoginNodes")),
            )
        )
    raw_total = body.get("TotalCount")
    if raw_total is None:
        return clusters, None
    try:
        return clusters, int(raw_total)
    except (TypeError, ValueError):
        raise bad(f"a TotalCount that is not a number ({type(raw_total).__name__})") from None


def _first_login_node(value: object) -> str:
    """``LoginNodes`` is documented only as "the list of logon nodes", a string: take the first
    entry of a comma/space separated list (or of a JSON list, should it be one)."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if not isinstance(value, str):
        return ""
    for part in value.strip("[]").replace(",", " ").split():
        node = part.strip("\"'")
        if node:
            return node
    return ""


_KEY_CASES = (("Code", "code"), ("Message", "message"), ("RequestId", "requestId"))


def _canonical_keys(body: dict[str, Any]) -> dict[str, Any]:
    """The gateway (and the SDK's parser) also use lower-case ``code``/``message``/``requestId``."""
    for upper, lower in _KEY_CASES:
        if upper not in body and lower in body:
            body[upper] = body[lower]
    return body


def _xml_error(raw: bytes) -> dict[str, Any] | None:
    """``<Error><Code>..</Code><Message>..</Message><RequestId>..</RequestId></Error>`` as a dict;
    None for anything else (an HTML page, a document with a DTD, a body without a Code)."""
    text = raw.lstrip()
    if not text.startswith(b"<") or b"<!DOCTYPE" in text.upper() or b"<!ENTITY" in text.upper():
        return None  # no DTDs: entity expansion is a classic XML bomb
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 - DTDs refused above
    except ElementTree.ParseError:
        return None
    error = root if root.tag == "Error" else root.find("Error")
    if error is None:
        return None
    fields = {child.tag: (child.text or "").strip() for child in error}
    return fields if fields.get("Code") else None


def _redirect_error(
    status: int, location: str, url: URL, params: Mapping[str, ParamValue], cluster_id: str | None
) -> TerminalApiError:
    """The gateway never redirects; a 3xx comes from something in between (a proxy, a captive
    portal, a wrong endpoint). The request did not reach E-HPC, so it cannot have applied."""
    # Without its query: a proxy may have copied ours (with the passwords) into it.
    target = _without_secrets(location.split("?", 1)[0][:200], params) or "no Location"
    return TerminalApiError(
        f"HTTP {status} redirect from {url.host} to {target}; redirects are never followed "
        "(they would carry the passwords elsewhere): check ehpc.endpoint and any proxy",
        code="InvalidResponse",
        http_status=status,
        cluster_id=cluster_id,
    )


def _without_secrets(text: str, params: Mapping[str, ParamValue]) -> str:
    """A server (or a proxy) may echo the request: cut our secrets out, raw or form-encoded."""
    for value in params.values():
        if isinstance(value, Secret) and value:
            clear = value.reveal()
            for form in {clear, quote(clear, safe="~"), quote(clear, safe="")}:
                text = text.replace(form, MASK)
    return text


def retry_after_from(headers: Mapping[str, str]) -> float | None:
    """Seconds the gateway asks us to wait, or None; read on any error, capped at 120 s.

    Current SDKs read ``x-acs-retry-after`` (milliseconds, a positive integer). Older ones read
    ``x-ratelimit-user-api`` and ``x-ratelimit-user`` (``Limit:1,Remain:0,TimeLeft:2000,...``)
    and take the larger ``TimeLeft`` (milliseconds); we fall back to that.
    """

    def millis(text: str) -> int:
        try:
            return int(text.strip())
        except ValueError:
            return 0

    wait = millis(headers.get("x-acs-retry-after") or "")
    if wait <= 0:
        for name in ("x-ratelimit-user-api", "x-ratelimit-user"):
            for pair in (headers.get(name) or "").split(","):
                key, sep, value = pair.partition(":")
                if sep and key.strip() == "TimeLeft":
                    wait = max(wait, millis(value))
    return min(wait / 1000.0, MAX_RETRY_AFTER_SECONDS) if wait > 0 else None
