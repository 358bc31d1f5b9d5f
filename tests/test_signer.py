"""Our ACS3-HMAC-SHA256 signer is byte-identical to the official alibabacloud_tea_openapi one."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from alibabacloud_tea_openapi.utils import Utils
from hypothesis import given
from hypothesis import strategies as st

from rotator.ehpc import signer

AK_ID = "LTAI5tExampleKeyId"
AK_SECRET = "ExampleSecret+/=~with*chars"


@dataclass
class SdkRequest:
    """What ``Utils.get_authorization`` reads from the SDK's DaraRequest."""

    method: str = "POST"
    pathname: str = "/"
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def base_headers(**extra: str) -> dict[str, str]:
    headers = {
        "host": "ehpc.cn-hangzhou.aliyuncs.com",
        "x-acs-action": "ModifyVisualServicePasswd",
        "x-acs-version": "2018-04-12",
        "x-acs-date": "2024-05-01T12:00:00Z",
        "x-acs-signature-nonce": "3f1c6a0e9b2d4b7c8e5f1a2b3c4d5e6f",
    }
    headers.update(extra)
    return headers


FORM_BODY = b"ClusterId=ehpc-hz-jeJki6abcd&Passwd=a1b2c3&RunasUser=root&RunasUserPassword=x%2By"

CASES: dict[str, SdkRequest] = {
    "empty": SdkRequest(headers=base_headers()),
    "rpc query": SdkRequest(
        method="GET",
        query={"ClusterId": "ehpc-hz-jeJki6abcd", "PageNumber": "1", "PageSize": "50"},
        headers=base_headers(),
    ),
    "non-ascii": SdkRequest(query={"Name": "集群-名称", "Emoji": "🔐", "Umlaut": "Grüße"}),
    "spaces": SdkRequest(query={"Description": "a b  c", "Lead": " x", "Trail": "y "}),
    "reserved chars": SdkRequest(
        query={"Tilde": "~a~", "Star": "a*b", "Plus": "1+1", "Slash": "a/b/c", "Eq": "k=v&x"}
    ),
    "percent and unicode keys": SdkRequest(query={"Pct": "100%", "k~ey": "v", "ключ": "знач"}),
    "empty values": SdkRequest(query={"Empty": "", "Other": "x", "": "blank-name"}),
    "sts token": SdkRequest(
        headers=base_headers(
            **{
                "x-acs-accesskey-id": AK_ID,
                "x-acs-security-token": "CAIS+token/with=chars~and spaces",
            }
        )
    ),
    "several headers, mixed case and padding": SdkRequest(
        headers={
            **base_headers(),
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "  AlibabaCloud (Linux) Python/3.11 TeaDSL/2  ",
            "Accept": "application/json",
            "X-Custom-Empty": "",
        }
    ),
    "roa path": SdkRequest(method="PUT", pathname="/api/v1/clusters/abc", headers=base_headers()),
    "empty path": SdkRequest(pathname="", headers=base_headers()),
}


def ours(request: SdkRequest, payload_sha256: str, secret: str = AK_SECRET) -> str:
    return signer.authorization(
        method=request.method,
        path=request.pathname,
        query=request.query,
        headers=request.headers,
        payload_sha256=payload_sha256,
        access_key_id=AK_ID,
        access_key_secret=secret,
    )


def sdk(request: SdkRequest, payload_sha256: str, secret: str = AK_SECRET) -> str:
    result: str = Utils.get_authorization(
        request, "ACS3-HMAC-SHA256", payload_sha256, AK_ID, secret
    )
    return result


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("body", [b"", FORM_BODY], ids=["no-body", "form-body"])
def test_authorization_matches_the_official_sdk(name: str, body: bytes) -> None:
    request = CASES[name]
    payload = signer.sha256_hex(body)
    assert ours(request, payload) == sdk(request, payload)


def test_the_secret_and_every_part_change_the_signature() -> None:
    request = CASES["rpc query"]
    payload = signer.sha256_hex(b"")
    reference = ours(request, payload)
    assert ours(request, payload, secret="other") != reference
    assert ours(request, signer.sha256_hex(b"x"), secret=AK_SECRET) != reference
    changed = SdkRequest(
        method=request.method, query={**request.query, "PageSize": "49"}, headers=request.headers
    )
    assert ours(changed, payload) != reference
    assert reference.startswith(f"ACS3-HMAC-SHA256 Credential={AK_ID},SignedHeaders=host;")


def test_parse_authorization_round_trips() -> None:
    request = CASES["sts token"]
    value = ours(request, signer.EMPTY_SHA256)
    parsed = signer.parse_authorization(value)
    assert parsed is not None
    key_id, names, signature = parsed
    assert key_id == AK_ID
    assert names == sorted(name.lower() for name in request.headers)
    assert value.endswith(signature)


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_header_name = st.text(st.sampled_from("abcxyzABC-"), min_size=1, max_size=8).map(
    lambda name: "x-acs-" + name
)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    query=st.dictionaries(_text, _text, max_size=6),
    headers=st.dictionaries(_header_name, _text, max_size=6),
    body=st.binary(max_size=64),
)
def test_any_request_signs_like_the_official_sdk(
    method: str, query: dict[str, str], headers: dict[str, str], body: bytes
) -> None:
    request = SdkRequest(method=method, query=query, headers={**base_headers(), **headers})
    payload = signer.sha256_hex(body)
    assert ours(request, payload) == sdk(request, payload)
