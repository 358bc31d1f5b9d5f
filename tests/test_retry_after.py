"""The server's requested wait, read the way the official SDKs read it."""

from __future__ import annotations

import pytest

from rotator.ehpc.client import MAX_RETRY_AFTER_SECONDS, retry_after_from
from rotator.ehpc.codes import error_for_code
from rotator.errors import TerminalApiError, ThrottledError

USER_API = "x-ratelimit-user-api"
USER = "x-ratelimit-user"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"x-acs-retry-after": "1500"}, 1.5),
        ({"x-acs-retry-after": "0"}, None),
        ({"x-acs-retry-after": "-3"}, None),
        ({"x-acs-retry-after": "soon"}, None),
        ({"x-acs-retry-after": ""}, None),
        ({"x-acs-retry-after": "600000"}, MAX_RETRY_AFTER_SECONDS),
        # Older SDKs: the larger TimeLeft of the two rate-limit headers.
        ({USER: "Limit:1,Remain:0,TimeLeft:2000,Reset:1234"}, 2.0),
        ({USER_API: "Limit:1,Remain:0,TimeLeft:2000,Reset:1", USER: "TimeLeft:3000"}, 3.0),
        ({USER_API: "Limit:100,Remain:0,TimeLeft:45000,Reset:1700000000"}, 45.0),
        ({USER_API: "", USER: ""}, None),
        ({USER_API: "Limit:1,Remain:0,TimeLeft:0"}, None),
        ({USER_API: "garbage,TimeLeft:x,:,a:b:c"}, None),
        ({USER: "Limit:1, TimeLeft : 250 ,Reset:9"}, 0.25),
        # x-acs-retry-after wins over the older headers.
        ({"x-acs-retry-after": "100", USER_API: "TimeLeft:9000"}, 0.1),
        ({"x-acs-retry-after": "junk", USER_API: "TimeLeft:900"}, 0.9),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_from(headers) == seconds


def test_a_retry_after_on_a_retryable_or_unknown_code_makes_it_wait_as_asked() -> None:
    for code, status in (("ServiceUnavailable", 503), ("Some.NewCode", 400)):
        error = error_for_code(code, "busy", http_status=status, retry_after=2.0)
        assert isinstance(error, ThrottledError)
        assert error.code == code
        assert error.retry_after == 2.0


def test_a_retry_after_does_not_make_a_known_terminal_code_retryable() -> None:
    error = error_for_code("IncorrectCredential", "no", http_status=403, retry_after=2.0)
    assert isinstance(error, TerminalApiError)
