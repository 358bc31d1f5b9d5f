"""ACS3-HMAC-SHA256 verification, as the OpenAPI gateway does it.

    credentials = CredentialStore([Credential("ak", "secret")])
    nonces = NonceCache()
    credential = verify(incoming, credentials, nonces, now=time.time())  # or raises SimError

The request is read as received: method, path, query parameters decoded from the raw query
string, the values of exactly the headers named in ``SignedHeaders``, and the body (its SHA-256
must equal ``x-acs-content-sha256``). The signature is recomputed with the same canonicalisation
as the client (:mod:`rotator.ehpc.signer`) and compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rotator.ehpc import signer
from rotator.sim.errors import SimError

__all__ = [
    "REQUIRED_SIGNED_HEADERS",
    "TIME_WINDOW_SECONDS",
    "Credential",
    "CredentialStore",
    "IncomingRequest",
    "NonceCache",
    "verify",
]

TIME_WINDOW_SECONDS = 15 * 60
REQUIRED_SIGNED_HEADERS = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class Credential:
    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


class CredentialStore:
    """Accepted credentials; one AccessKeyId may have several (an STS refresh adds one)."""

    def __init__(self, credentials: Iterable[Credential] = ()) -> None:
        self._by_id: dict[str, list[Credential]] = {}
        for credential in credentials:
            self.add(credential)

    def add(self, credential: Credential) -> None:
        known = self._by_id.setdefault(credential.access_key_id, [])
        if credential not in known:
            known.append(credential)

    def get(self, access_key_id: str) -> Sequence[Credential]:
        return self._by_id.get(access_key_id, ())


class NonceCache:
    """Nonces seen within the time window; bounded, oldest evicted first.

    A nonce older than the window cannot be replayed anyway: its request's ``x-acs-date`` is
    stale by then. Insertion order is expiry order, so expiring is popping from the front.
    """

    def __init__(self, window: float = TIME_WINDOW_SECONDS, max_entries: int = 1_000_000) -> None:
        self._window = window
        self._max = max_entries
        self._expiry: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def check_and_add(self, nonce: str, now: float) -> bool:
        """Record ``nonce``; False when it was already seen and has not expired."""
        self._expire(now)
        if nonce in self._expiry:
            return False
        self._expiry[nonce] = now + self._window
        if len(self._expiry) > self._max:
            del self._expiry[next(iter(self._expiry))]
        return True

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry:
            oldest = next(iter(expiry))
            if expiry[oldest] > now:
                return
            del expiry[oldest]


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A request as received. ``headers`` maps a lower-case name to all its values."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, Sequence[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


def _incomplete(detail: str) -> SimError:
    return SimError(
        "IncompleteSignature",
        f"The request signature does not conform to Aliyun standards. {detail}",
    )


def _date_ok(raw: str, now: float) -> bool:
    try:
        stamp = datetime.strptime(raw, _DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return False
    return abs(stamp - now) <= TIME_WINDOW_SECONDS


def _signed_values(request: IncomingRequest, names: Sequence[str]) -> dict[str, str]:
    # Several values of one header canonicalise as their sorted, comma-joined stripped values;
    # joining them first gives the signer the same text.
    return {
        name: ",".join(sorted(v.strip() for v in request.headers.get(name, ()))) for name in names
    }


def verify(
    request: IncomingRequest, store: CredentialStore, nonces: NonceCache, *, now: float
) -> Credential:
    """The credential that signed ``request``, or SimError with the gateway's code."""
    raw_auth = request.header("authorization")
    parsed = signer.parse_authorization(raw_auth) if raw_auth else None
    if parsed is None:
        raise _incomplete("The Authorization header is missing or malformed.")
    access_key_id, signed_names, claimed = parsed
    if any(name != name.lower() or not name for name in signed_names):
        raise _incomplete("SignedHeaders must be lower-case header names.")
    for name in REQUIRED_SIGNED_HEADERS:
        if name not in signed_names or not request.header(name):
            raise _incomplete(f"The header {name} must be present and signed.")
    for name in signed_names:
        if request.header(name) is None:
            raise _incomplete(f"The signed header {name} is missing.")

    candidates = store.get(access_key_id)
    if not candidates:
        raise SimError("InvalidAccessKeyId.NotFound", "Specified access key is not found.")

    if not _date_ok(request.header("x-acs-date") or "", now):
        raise SimError("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")

    payload_sha256 = request.header("x-acs-content-sha256") or ""
    if not hmac.compare_digest(payload_sha256.lower(), signer.sha256_hex(request.body)):
        raise SimError(
            "SignatureDoesNotMatch", "The x-acs-content-sha256 header does not match the body."
        )

    canonical, _ = signer.canonical_request(
        method=request.method,
        path=request.path,
        query=request.query,
        headers=_signed_values(request, signed_names),
        payload_sha256=payload_sha256,
    )
    matching = [
        c
        for c in candidates
        if hmac.compare_digest(signer.signature(canonical, c.access_key_secret), claimed)
    ]
    if not matching:
        raise SimError(
            "SignatureDoesNotMatch", "Specified signature does not match our calculation."
        )

    token = request.header("x-acs-security-token")
    claimed_id = request.header("x-acs-accesskey-id")
    if token and claimed_id is not None and claimed_id != access_key_id:
        # The SDK names the STS key beside its token; they must belong together.
        raise SimError(
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )
    credential = next((c for c in matching if c.security_token == token), None)
    if credential is None:
        raise SimError("InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")

    if not nonces.check_and_add(request.header("x-acs-signature-nonce") or "", now):
        raise SimError("SignatureNonceUsed", "Specified signature nonce was used already.")
    return credential
