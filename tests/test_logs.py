"""The redacting log processor and ``configure_logging``: no secret reaches a log line."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict

from rotator.errors import ConfigError
from rotator.logs import configure_logging, quiet_cluster_events, redact_event, scrub
from rotator.secret import MASK, Secret


def _value() -> str:
    # Unique per test, so the process-wide registry of known secrets cannot make a test pass.
    return "Pw" + uuid.uuid4().hex[:10]


def _redact(**event: Any) -> EventDict:
    return redact_event(None, "info", dict(event))


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "new_password",
        "Passwd",
        "RunasUserPassword",
        "access_key_secret",
        "security_token",
        "x-acs-security-token",
        "authorization",
        "Authorization",
        "token",
        "vault_token",
        "credential",
        "api_key",
        "private_key",
    ],
)
def test_sensitive_keys_are_masked(key: str) -> None:
    assert _redact(**{key: "hunter2-plain"})[key] == MASK


@pytest.mark.parametrize(
    "key", ["cluster_id", "request_id", "http_status", "token_ttl", "passwords_source", "event"]
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert _redact(**{key: "visible"})[key] == "visible"


def test_empty_sensitive_values_stay_readable() -> None:
    # "password": None says "no password was given", which is safe and useful to see.
    cleaned = _redact(password=None, token="")
    assert cleaned == {"password": None, "token": ""}


def test_secret_objects_are_masked_under_any_key() -> None:
    value = _value()
    cleaned = _redact(event="rotated", note=Secret(value), pair=(Secret(value), "ok"))
    assert cleaned["note"] == MASK
    assert cleaned["pair"] == [MASK, "ok"]
    assert value not in repr(cleaned)


def test_known_secret_cut_out_of_arbitrary_strings() -> None:
    value = _value()
    Secret(value)
    cleaned = _redact(event=f"server echoed {value} back", error=f"InvalidParams: Passwd={value}")
    assert cleaned["event"] == f"server echoed {MASK} back"
    assert cleaned["error"] == f"InvalidParams: Passwd={MASK}"


def test_unknown_strings_are_left_alone() -> None:
    assert scrub("cluster ehpc-hz-1 rotated") == "cluster ehpc-hz-1 rotated"


def test_nested_dicts_and_lists_are_cleaned() -> None:
    value = _value()
    secret = Secret(value)
    cleaned = _redact(
        event="call",
        request={
            "headers": {"Authorization": "ACS3-HMAC-SHA256 Credential=ak", "host": "h"},
            "params": [{"Passwd": "a1b2c3"}, {"ClusterId": "c-1"}],
            "echo": [f"got {value}", secret],
        },
    )
    request = cleaned["request"]
    assert request["headers"] == {"Authorization": MASK, "host": "h"}
    assert request["params"] == [{"Passwd": MASK}, {"ClusterId": "c-1"}]
    assert request["echo"] == [f"got {MASK}", MASK]


def test_deeply_nested_values_are_cleaned_too() -> None:
    value = _value()
    Secret(value)
    deep: Any = f"echo {value}"
    for level in range(9):
        deep = {f"level{level}": deep}
    assert value not in json.dumps(_redact(event="deep", payload=deep))


def test_exception_values_are_rendered_and_scrubbed() -> None:
    value = _value()
    Secret(value)
    cleaned = _redact(event="failed", error=ValueError(f"bad password {value}"))
    assert cleaned["error"] == f"ValueError: bad password {MASK}"


def test_formatted_tracebacks_are_scrubbed() -> None:
    value = _value()
    Secret(value)
    try:
        raise RuntimeError(f"proxy echoed RunasUserPassword={value}")
    except RuntimeError as exc:
        event: EventDict = {"event": "failed", "exc_info": exc}
    rendered = structlog.processors.format_exc_info(None, "error", event)
    assert value in rendered["exception"]  # the precondition: the traceback carries it
    cleaned = redact_event(None, "error", rendered)
    assert value not in cleaned["exception"]
    assert "RuntimeError" in cleaned["exception"]


@pytest.mark.usefixtures("restore_structlog")
def test_configure_logging_json_output_carries_no_secret() -> None:
    value = _value()
    secret = Secret(value)
    out = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=out)
    log = structlog.get_logger("rotator.test")
    with structlog.contextvars.bound_contextvars(run_id="run-1", cluster_id="ehpc-hz-1"):
        log.info("sensitive_key", password=value)
        log.info("secret_object", new=secret)
        log.info(f"event text mentions {value}")
        log.info("positional %s", value)
        log.info("nested", detail={"body": [f"RunasUserPassword={value}"]})
        log.warning("error_value", error=RuntimeError(f"echo {value}"))
        try:
            raise ValueError(f"request failed for {value}")
        except ValueError:
            log.exception("with_traceback")
        with structlog.contextvars.bound_contextvars(note=f"bound {value}"):
            log.info("bound_context")
    lines = out.getvalue().splitlines()
    assert len(lines) == 8
    assert value not in out.getvalue()
    events = [json.loads(line) for line in lines]
    # Redaction must not throw away what an operator needs.
    assert all(e["run_id"] == "run-1" and e["cluster_id"] == "ehpc-hz-1" for e in events)
    assert events[0]["password"] == MASK
    assert events[1]["new"] == MASK
    assert "ValueError" in events[6]["exception"]
    assert events[6]["level"] == "error"


@pytest.mark.usefixtures("restore_structlog")
def test_configure_logging_console_output_carries_no_secret() -> None:
    value = _value()
    Secret(value)
    out = io.StringIO()
    configure_logging(level="info", fmt="console", stream=out)
    log = structlog.get_logger("rotator.test")
    log.info("console_event", secret_value=value, message=f"echo {value}", cluster_id="c-7")
    text = out.getvalue()
    assert "console_event" in text
    assert "c-7" in text
    assert value not in text


@pytest.mark.usefixtures("restore_structlog")
def test_level_filters_events() -> None:
    out = io.StringIO()
    configure_logging(level="warning", fmt="json", stream=out)
    log = structlog.get_logger("rotator.test")
    log.info("hidden")
    log.warning("shown")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["shown"]


# --- issue 10 §6: readable summaries, colour rules, level checks, quiet progress ----------


def test_counts_under_secret_sounding_keys_stay_readable() -> None:
    # The run summary logged {"IncorrectCredential": "******"}: a count is never a secret.
    cleaned = _redact(
        event="run_finished",
        failures={"IncorrectCredential": 3, "InvalidPassword": 1, "SecretMissing": 0},
        credential_errors=2,
    )
    assert cleaned["failures"] == {
        "IncorrectCredential": 3,
        "InvalidPassword": 1,
        "SecretMissing": 0,
    }
    assert cleaned["credential_errors"] == 2


def test_strings_under_secret_sounding_keys_are_still_masked() -> None:
    cleaned = _redact(event="x", detail={"IncorrectCredential": "hunter2-plain"}, token="t0k")
    assert cleaned["detail"] == {"IncorrectCredential": MASK}
    assert cleaned["token"] == MASK


@pytest.mark.parametrize("level", ["verbose", "warn ", "", "trace", "critical"])
def test_an_unknown_log_level_is_refused(level: str) -> None:
    with pytest.raises(ConfigError, match="not a log level"):
        configure_logging(level=level, fmt="json", stream=io.StringIO())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("restore_structlog")
def test_console_log_lines_have_colour_only_on_a_terminal_without_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    tty = _Terminal()
    configure_logging(level="info", fmt="console", stream=tty)
    structlog.get_logger("t").warning("coloured", cluster_id="c-1")
    assert "\x1b[" in tty.getvalue()

    monkeypatch.setenv("NO_COLOR", "1")
    plain_tty = _Terminal()
    configure_logging(level="info", fmt="console", stream=plain_tty)
    structlog.get_logger("t").warning("plain", cluster_id="c-1")
    assert "plain" in plain_tty.getvalue()
    assert "\x1b[" not in plain_tty.getvalue()

    monkeypatch.delenv("NO_COLOR")
    pipe = io.StringIO()
    configure_logging(level="info", fmt="console", stream=pipe)
    structlog.get_logger("t").warning("piped", cluster_id="c-1")
    assert "\x1b[" not in pipe.getvalue()


@pytest.mark.usefixtures("restore_structlog")
def test_while_a_progress_bar_shows_per_cluster_chatter_is_not_printed() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    log = structlog.get_logger("t")
    with quiet_cluster_events():
        log.info("cluster_done", cluster_id="c-1")
        with structlog.contextvars.bound_contextvars(cluster_id="c-2"):
            log.info("retrying")
            log.warning("cluster_failed")
        log.info("run_started")
    log.info("cluster_done", cluster_id="c-3")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["cluster_failed", "run_started", "cluster_done"]


@pytest.mark.usefixtures("restore_structlog")
def test_debug_level_shows_per_cluster_lines_even_under_a_progress_bar() -> None:
    out = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=out)
    with quiet_cluster_events():
        structlog.get_logger("t").info("cluster_done", cluster_id="c-1")
    assert json.loads(out.getvalue())["event"] == "cluster_done"


@pytest.mark.usefixtures("restore_structlog")
def test_library_tracebacks_become_one_debug_line(capsys: pytest.CaptureFixture[str]) -> None:

    out = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=out)
    try:
        raise RuntimeError("metadata service said 404")
    except RuntimeError:
        logging.getLogger("credentials").exception("cached value is AccessKey(secret=...)")
    assert capsys.readouterr().err == ""
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["level"] == "debug"
    assert event["error"] == "RuntimeError: metadata service said 404"
    assert "cached value" not in line
    assert "Traceback" not in line
