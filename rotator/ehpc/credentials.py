"""Alibaba Cloud credentials for signing.

provider = DefaultChainCredentials()          # env, profile, ECS RAM role, RRSA/OIDC
provider = StaticCredentials("LTAI...", Secret(secret))
provider = FileCredentials("STS.x", "/run/secrets/ak", "/run/secrets/sts")  # re-read on refresh
key = await provider.get()   # per request, so refreshed STS keys apply at once
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rotator.errors import ApiError, ErrorScope, RetryClass
from rotator.secret import Secret, read_secret_file

__all__ = [
    "AccessKey",
    "CredentialProvider",
    "DefaultChainCredentials",
    "FileCredentials",
    "RefreshableCredentials",
    "StaticCredentials",
]


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    access_key_secret: Secret
    security_token: Secret | None = None


class CredentialProvider(Protocol):
    """Anything that can hand out the current AccessKey (it may rotate underneath us)."""

    async def get(self) -> AccessKey: ...


@runtime_checkable
class RefreshableCredentials(Protocol):
    """A provider that can be told its STS token was refused (InvalidSecurityToken.Expired)."""

    async def get(self) -> AccessKey: ...

    async def refresh(self) -> AccessKey:
        """Fetch new credentials now, whatever the cached expiry says."""
        ...


class StaticCredentials:
    """A fixed AccessKey pair (plus an optional STS token)."""

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: Secret,
        security_token: Secret | None = None,
    ) -> None:
        self._key = AccessKey(access_key_id, access_key_secret, security_token)

    async def get(self) -> AccessKey:
        return self._key


class FileCredentials:
    """An AccessKey whose secret (and STS token) live in files, read now and on every refresh.

    Whatever renews the token file (a sidecar, a cron job) is picked up when the gateway says
    ``InvalidSecurityToken.Expired``. Unreadable files are :class:`ConfigError` naming the key.
    """

    def __init__(self, access_key_id: str, secret_file: str, token_file: str = "") -> None:
        self._id = access_key_id
        self._secret_file = secret_file
        self._token_file = token_file
        self._key = self._read()

    def _read(self) -> AccessKey:
        secret = read_secret_file(self._secret_file, key="credentials.access_key_secret_file")
        token = (
            read_secret_file(self._token_file, key="credentials.security_token_file")
            if self._token_file
            else None
        )
        return AccessKey(self._id, secret, token)

    async def get(self) -> AccessKey:
        return self._key

    async def refresh(self) -> AccessKey:
        self._key = await asyncio.to_thread(self._read)
        return self._key


class DefaultChainCredentials:
    """The official ``alibabacloud-credentials`` default chain, which also refreshes STS tokens.

    The library caches and refreshes internally, so asking it per request costs a dict lookup and
    a credential rotated by RRSA or the ECS metadata service is picked up without a restart.
    """

    def __init__(self) -> None:
        self._client = self._new_client()

    @staticmethod
    def _new_client() -> Any:
        # Imported here: it is heavy and only needed when the default chain is used.
        from alibabacloud_credentials.client import Client  # noqa: PLC0415

        return Client()

    async def refresh(self) -> AccessKey:
        """A fresh chain: its providers fetch again instead of trusting their cached expiry."""
        self._client = self._new_client()
        return await self.get()

    async def get(self) -> AccessKey:
        try:
            model = await self._client.get_credential_async()
        except Exception as exc:  # noqa: BLE001 - the library raises many unrelated types
            raise ApiError(
                "no Alibaba Cloud credentials could be resolved from the default chain "
                "(ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET, profile, ECS RAM role, RRSA); "
                f"the provider said: {type(exc).__name__}",
                code="CredentialsUnavailable",
                # Nothing was sent, and a metadata or OIDC endpoint may just be slow: retry; if it
                # stays down, the outcome still stops the run as account-wide.
                retry_class=RetryClass.RETRYABLE,
                scope=ErrorScope.ACCOUNT,
            ) from None
        token = model.security_token
        return AccessKey(
            access_key_id=str(model.access_key_id),
            access_key_secret=Secret(str(model.access_key_secret)),
            security_token=Secret(str(token)) if token else None,
        )
