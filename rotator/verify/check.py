"""Verifying a VNC password where it is used: one RFB authentication, one result.

    verifier = RfbVerifier(url_template="wss://{host}:12016/", timeout=10.0)
    result = await verifier.verify(cluster_id="ehpc-hz-1", region="cn-hangzhou",
                                   host="10.0.0.5", password=Secret("ab12cd"))
    result.status      # VerifyStatus.VERIFIED

Exactly one attempt per call and no retry, ever: VNC servers lock a source out after a few
failed authentications (TigerVNC after 5), and a proxy may put every user behind one source
address, so a retried check could lock people out of their desktops. The result is a value:

- ``verified``: the server accepted the password;
- ``unverified``: no answer about the password (unreachable, timeout, TLS, refused before a
  password was checked); a warning, the rotation stands;
- ``verify_failed``: the server checked the password and refused it; an error.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import string
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from yarl import URL

from rotator.secret import Secret
from rotator.verify.rfb import RfbProtocolError, RfbRefusedError, RfbRejectedError, authenticate
from rotator.verify.transport import SCHEMES, open_stream

__all__ = ["PLACEHOLDERS", "RfbVerifier", "VerifyResult", "VerifyStatus", "check_url_template"]

PLACEHOLDERS = frozenset({"host", "cluster_id", "region"})


class VerifyStatus(enum.StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    VERIFY_FAILED = "verify_failed"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    status: VerifyStatus
    code: str | None = None
    """Why it is not ``verified`` (VncUnreachable, VncTimeout, VncAuthFailed, ...)."""
    message: str | None = None
    """What happened and what to do, for a person; never a password."""


def check_url_template(template: str) -> set[str]:
    """The placeholders ``template`` uses; ValueError if it cannot make a VNC URL."""
    used: set[str] = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise ValueError(
                f"unknown placeholder {{{name}}} (known: "
                + ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
                + ")"
            )
        used.add(name)
    sample = URL(template.format(host="host.example", cluster_id="ehpc-x", region="cn-x"))
    if sample.scheme not in SCHEMES or not sample.host:
        raise ValueError(f"must start with tcp://, ws:// or wss:// and name a host: {template!r}")
    if sample.scheme == "tcp" and sample.explicit_port is None:
        raise ValueError("a tcp:// URL needs a port (VNC display :1 is port 5901)")
    return used


def _tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verified TLS: the system's trust store, or a private CA for an internal proxy."""
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class RfbVerifier:
    """Checks a VNC password with one RFB handshake (an implementation of the engine's
    ``PasswordVerifier``)."""

    def __init__(self, *, url_template: str, timeout: float, ca_bundle: Path | None = None) -> None:
        self.url_template = url_template
        self.timeout = timeout
        self._placeholders = check_url_template(url_template)
        self._tls = _tls_context(ca_bundle) if url_template.startswith("wss:") else None

    @property
    def needs_host(self) -> bool:
        return "host" in self._placeholders

    def url_for(self, *, cluster_id: str, region: str, host: str | None) -> str:
        return self.url_template.format(host=host or "", cluster_id=cluster_id, region=region)

    async def verify(
        self, *, cluster_id: str, region: str, host: str | None, password: Secret
    ) -> VerifyResult:
        if self.needs_host and not host:
            return VerifyResult(
                VerifyStatus.UNVERIFIED,
                "VncHostUnknown",
                "no VNC host for this cluster: set vnc_host in its [[inventory.clusters]] "
                "entry or in its root secret, or make ListClusters report a login node",
            )
        url = self.url_for(cluster_id=cluster_id, region=region, host=host)
        where = _without_credentials(url)
        try:
            async with asyncio.timeout(self.timeout):
                async with open_stream(url, ssl_context=self._tls) as stream:
                    await authenticate(stream, password)
        except RfbRejectedError as exc:
            return VerifyResult(
                VerifyStatus.VERIFY_FAILED,
                "VncAuthFailed",
                f"{where} refused the new password ({exc}): the API answered OK but the VNC "
                "server does not take the password Vault now holds. Vault keeps it (no "
                "rollback); check the cluster's visual service, then rotate it again with "
                f"`rotator rotate --cluster {cluster_id}`",
            )
        except RfbRefusedError as exc:
            return _unverified("VncRefused", f"{where} refused before checking a password: {exc}")
        except RfbProtocolError as exc:
            return _unverified("VncProtocolError", f"{where} does not speak RFB: {exc}")
        except TimeoutError:
            return _unverified(
                "VncTimeout", f"{where} did not finish the RFB handshake in {self.timeout:g}s"
            )
        except aiohttp.ClientConnectorCertificateError:
            return _unverified(
                "VncTlsError",
                f"the TLS certificate of {where} is not trusted: set verify.ca_bundle to the CA "
                "that signed it",
            )
        except aiohttp.WSServerHandshakeError as exc:
            return _unverified(
                "VncUnreachable", f"{where} refused the WebSocket upgrade (HTTP {exc.status})"
            )
        except (OSError, aiohttp.ClientError) as exc:
            # Connection refused, reset, DNS, TLS handshake, a closed stream: no answer at all.
            return _unverified(
                "VncUnreachable",
                f"cannot reach {where} ({type(exc).__name__}): run rotator where it can reach "
                "the visual service (inside the VPC, or over wss://), or turn verify off",
            )
        return VerifyResult(VerifyStatus.VERIFIED)


def _unverified(code: str, message: str) -> VerifyResult:
    return VerifyResult(VerifyStatus.UNVERIFIED, code, message)


def _without_credentials(url: str) -> str:
    """The URL as it may appear in a message (a template could carry user:pass@)."""
    parsed = URL(url)
    return str(parsed.with_user(None).with_password(None)) if parsed.user else url
