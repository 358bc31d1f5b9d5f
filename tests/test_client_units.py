"""Pure helpers of the E-HPC client: the form body, the host header, ``x-acs-retry-after``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from yarl import URL

from rotator.ehpc.client import (
    MAX_RETRY_AFTER_SECONDS,
    EhpcClient,
    Endpoints,
    _canonical_keys,
    _form_body,
    _host_header,
    _xml_error,
    retry_after_from,
)
from rotator.ehpc.codes import info_for
from rotator.ehpc.credentials import (
    DefaultChainCredentials,
    RefreshableCredentials,
    StaticCredentials,
)
from rotator.errors import ConfigError, ErrorScope, RetryClass
from rotator.secret import Secret

# -- _form_body -------------------------------------------------------------------------------


def test_form_body_percent_encodes_like_the_signer_expects() -> None:
    body = _form_body({"B": "a b", "A": "x~y", "C": "p/q+r*s&t=u"}).decode("ascii")
    # Sorted keys; space is %20 (not +), ~ is kept, reserved characters are escaped.
    assert body == "A=x~y&B=a%20b&C=p%2Fq%2Br%2As%26t%3Du"


def test_form_body_encodes_non_ascii_as_utf8() -> None:
    assert _form_body({"Name": "集群"}) == b"Name=%E9%9B%86%E7%BE%A4"


def test_form_body_keeps_empty_values() -> None:
    assert _form_body({"Empty": "", "X": "1"}) == b"Empty=&X=1"


def test_form_body_reveals_secrets_only_there() -> None:
    password = Secret("R00t p@ss~")
    body = _form_body({"ClusterId": "ehpc-hz-1", "RunasUserPassword": password})
    assert body == b"ClusterId=ehpc-hz-1&RunasUserPassword=R00t%20p%40ss~"
    # The server decodes exactly what was meant.
    assert parse_qs(body.decode())["RunasUserPassword"] == ["R00t p@ss~"]


# -- _host_header -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://ehpc.cn-hangzhou.aliyuncs.com/", "ehpc.cn-hangzhou.aliyuncs.com"),
        ("https://ehpc.cn-hangzhou.aliyuncs.com:443/", "ehpc.cn-hangzhou.aliyuncs.com"),
        ("http://127.0.0.1:80/", "127.0.0.1"),
        ("https://proxy.example.com:8443/", "proxy.example.com:8443"),
        ("http://127.0.0.1:43117/", "127.0.0.1:43117"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("https://[::1]/", "[::1]"),
    ],
)
def test_host_header(url: str, host: str) -> None:
    assert _host_header(URL(url)) == host


# -- x-acs-retry-after alone --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1500", 1.5),
        ("1", 0.001),
        ("120000", 120.0),
        ("999999999", MAX_RETRY_AFTER_SECONDS),
        (None, None),
        ("", None),
        ("0", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_from({"x-acs-retry-after": value or ""}) == seconds


def test_retry_after_is_capped_at_two_minutes() -> None:
    assert MAX_RETRY_AFTER_SECONDS == 120.0


# -- Endpoints --------------------------------------------------------------------------------


def test_endpoints_template_and_overrides() -> None:
    endpoints = Endpoints(
        template="https://ehpc.{region}.aliyuncs.com",
        overrides={"cn-beijing": "https://ehpc-vpc.cn-beijing.aliyuncs.com"},
    )
    assert str(endpoints.url_for("cn-hangzhou")) == "https://ehpc.cn-hangzhou.aliyuncs.com/"
    assert str(endpoints.url_for("cn-beijing")) == "https://ehpc-vpc.cn-beijing.aliyuncs.com/"
    endpoints.validate(["cn-hangzhou", "cn-beijing"])


def test_single_endpoint_wins_for_every_region() -> None:
    endpoints = Endpoints(
        overrides={"cn-beijing": "https://bj.example.com"},
        single="http://127.0.0.1:9000",
        allow_insecure_http=True,
    )
    assert str(endpoints.url_for("cn-beijing")) == "http://127.0.0.1:9000/"
    assert str(endpoints.url_for("ap-southeast-1")) == "http://127.0.0.1:9000/"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://ehpc.cn-hangzhou.aliyuncs.com",
        "http://10.0.0.5:8080",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(endpoint: str) -> None:
    # Even with allow_insecure_http: passwords never cross a network in the clear.
    endpoints = Endpoints(single=endpoint, allow_insecure_http=True)
    with pytest.raises(ConfigError, match="non-loopback") as info:
        endpoints.validate(["cn-hangzhou"])
    assert info.value.key == "ehpc.endpoint"


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
)
def test_plain_http_to_loopback_needs_the_explicit_switch(endpoint: str) -> None:
    with pytest.raises(ConfigError) as info:
        Endpoints(single=endpoint).validate(["cn-hangzhou"])
    assert info.value.key == "ehpc.allow_insecure_http"
    Endpoints(single=endpoint, allow_insecure_http=True).validate(["cn-hangzhou"])


def test_override_checked_at_validate_for_its_region_only() -> None:
    endpoints = Endpoints(overrides={"cn-beijing": "http://bj.example.com"})
    endpoints.validate(["cn-hangzhou"])
    with pytest.raises(ConfigError):
        endpoints.validate(["cn-hangzhou", "cn-beijing"])


@pytest.mark.parametrize("endpoint", ["ftp://ehpc.example.com", "ehpc.example.com", "https://"])
def test_non_http_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="not an https:// URL"):
        Endpoints(single=endpoint).validate(["cn-hangzhou"])


def test_bad_template_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Endpoints(template="https://ehpc.{regoin}.aliyuncs.com").validate(["cn-hangzhou"])


@pytest.mark.asyncio
async def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        EhpcClient(
            credentials=StaticCredentials("ak", Secret("sk-unit")),
            endpoints=Endpoints(),
            ca_bundle=tmp_path / "missing-ca.pem",
        )
    assert raised.value.key == "ehpc.ca_bundle"


@pytest.mark.parametrize("region", ["a/b", "x@evil.example", "cn:hangzhou", "", "CN HZ"])
def test_a_region_can_never_steer_the_endpoint_host(region: str) -> None:
    with pytest.raises(ConfigError):
        Endpoints().url_for(region)


# -- error bodies in every shape ---------------------------------------------------------------


def test_lowercase_keys_are_read_like_the_documented_ones() -> None:
    body = _canonical_keys({"code": "Forbidden.RAM", "message": "no", "requestId": "R-1"})
    assert (body["Code"], body["Message"], body["RequestId"]) == ("Forbidden.RAM", "no", "R-1")
    both = _canonical_keys({"Code": "A", "code": "B"})
    assert both["Code"] == "A"  # the documented key wins


def test_an_xml_error_body_is_read() -> None:
    raw = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><RequestId>R-2</RequestId>'
        b"<HostId>ehpc.cn-hangzhou.aliyuncs.com</HostId><Code>NoPermission</Code>"
        b"<Message>You are not authorized &amp; so on.</Message></Error>"
    )
    parsed = _xml_error(raw)
    assert parsed is not None
    assert (parsed["Code"], parsed["RequestId"]) == ("NoPermission", "R-2")
    assert parsed["Message"] == "You are not authorized & so on."


@pytest.mark.parametrize(
    "raw",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b"<Error><Message>no code</Message></Error>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><Error><Code>&a;</Code></Error>',
        b"<Error><Code>unterminated",
        b"plain text",
        b"",
    ],
)
def test_anything_else_is_not_an_xml_error(raw: bytes) -> None:
    assert _xml_error(raw) is None


@pytest.mark.parametrize(
    ("code", "retry_class", "scope"),
    [
        ("MissingClusterId", RetryClass.TERMINAL, ErrorScope.CLUSTER),
        ("MissingParameter", RetryClass.TERMINAL, ErrorScope.CLUSTER),
        ("InvalidSecurityToken.SomethingNew", RetryClass.TERMINAL, ErrorScope.ACCOUNT),
        ("Forbidden.RAM", RetryClass.TERMINAL, ErrorScope.ACCOUNT),
        ("InvalidApi.NotFound", RetryClass.TERMINAL, ErrorScope.ACCOUNT),
    ],
)
def test_code_table_prefixes(code: str, retry_class: RetryClass, scope: ErrorScope) -> None:
    info = info_for(code, 400)
    assert (info.retry_class, info.scope) == (retry_class, scope)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        EhpcClient(
            credentials=StaticCredentials("ak", Secret("sk-unit")),
            endpoints=Endpoints(),
            method="PUT",  # type: ignore[arg-type]
        )
    assert refused.value.key == "ehpc.method"


@dataclass
class _Model:
    access_key_id: str
    access_key_secret: str
    security_token: str


@pytest.mark.asyncio
async def test_the_default_chain_refreshes_by_resolving_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each chain (alibabacloud_credentials.Client) caches what it resolved; a refresh builds a
    # new one. Stand-in chains, since the library reads its environment once, at import.
    chains = iter(["first", "second"])

    class _Chain:
        def __init__(self) -> None:
            self.name = next(chains)

        async def get_credential_async(self) -> _Model:
            return _Model(f"STS.{self.name}", f"{self.name}-secret", f"{self.name}-token")

    monkeypatch.setattr(DefaultChainCredentials, "_new_client", staticmethod(_Chain))
    provider = DefaultChainCredentials()
    assert isinstance(provider, RefreshableCredentials)
    first = await provider.get()
    assert (first.access_key_id, first.security_token) == ("STS.first", Secret("first-token"))
    assert (await provider.get()).access_key_id == "STS.first"
    second = await provider.refresh()
    assert (second.access_key_id, second.security_token) == ("STS.second", Secret("second-token"))
    assert not isinstance(StaticCredentials("ak", Secret("sk-unit")), RefreshableCredentials)
