"""structlog set-up, with a redacting processor that runs last before rendering.

    configure_logging(level="info", fmt="auto")   # JSON unless stderr is a terminal
    log = structlog.get_logger("rotator")
    with structlog.contextvars.bound_contextvars(run_id=run_id, cluster_id=cluster_id):
        log.info("rotated")

Redaction is belt and braces: passwords travel as :class:`~rotator.secret.Secret` (masked repr),
values under sensitive keys are masked, and any string that contains a secret value this process
has seen (an echoed error body, an exception text) has that value cut out.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from rotator.errors import ConfigError
from rotator.secret import MASK, Secret, find_known_secrets

__all__ = [
    "LEVELS",
    "LogFormat",
    "colors_wanted",
    "configure_logging",
    "quiet_cluster_events",
    "redact_event",
    "scrub",
]

LEVELS = ("debug", "info", "warning", "error")

LogFormat = Literal["auto", "json", "console"]
"""``auto`` renders for people on a terminal and JSON lines everywhere else."""

_SENSITIVE_KEY = re.compile(
    r"pass(wd|word)?$|password|secret|token$|^token|authorization|credential|api_key|private_key",
    re.IGNORECASE,
)
# Keys that merely *describe* secrets and are safe to show.
_SAFE_KEYS = frozenset({"token_ttl", "secret_id_ttl", "password_policy", "passwords_source"})


def _sensitive(key: str) -> bool:
    return key not in _SAFE_KEYS and bool(_SENSITIVE_KEY.search(key))


def _maskable(value: Any) -> bool:
    """Could ``value`` be a secret? Counts, flags and empty values cannot: a summary's
    ``{"IncorrectCredential": 3}`` stays readable, while every string under such a key is masked."""
    return value not in (None, "", False) and not isinstance(value, bool | int | float)


def scrub(text: str) -> str:
    """Cut every known secret value out of ``text``."""
    for value in sorted(find_known_secrets(text), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if depth > 6:
        return scrub(repr(value))
    if isinstance(value, Mapping):
        return {
            k: (
                MASK
                if isinstance(k, str) and _sensitive(k) and _maskable(v)
                else _clean(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask sensitive keys, Secrets and known secret values."""
    cleaned: MutableMapping[str, Any] = {}
    for key, value in event_dict.items():
        if _sensitive(key) and _maskable(value):
            cleaned[key] = MASK
        else:
            cleaned[key] = _clean(value)
    return dict(cleaned)


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is *now*, so a progress bar that redirects stderr
    keeps log lines above the bar instead of tearing through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    def writable(self) -> bool:
        return True


class _Quiet:
    """While a progress bar is on screen, per-cluster chatter below ``warning`` is not printed:
    each line would make rich re-render the bar (issue 14: 0.61x the throughput of a plain run).
    The summary table says how every cluster ended; ``--log-level debug`` shows them anyway."""

    active = False


@contextmanager
def quiet_cluster_events(enabled: bool = True) -> Iterator[None]:
    previous = _Quiet.active
    _Quiet.active = enabled
    try:
        yield
    finally:
        _Quiet.active = previous


def _drop_quiet(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    if _Quiet.active and method in ("info", "debug") and "cluster_id" in event_dict:
        raise structlog.DropEvent
    return event_dict


class _LibraryBridge(logging.Handler):
    """Third-party stdlib loggers (the Alibaba Cloud credential chain logs a full traceback per
    failed refresh) go to our log at debug, as one redacted line: never a raw traceback on the
    terminal, and never their ``cached value`` text, which may hold a key."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        structlog.get_logger(record.name).debug(
            "library_log",
            library=record.name,
            library_level=record.levelname.lower(),
            error=f"{type(error).__name__}: {scrub(str(error))[:300]}" if error else None,
        )


# Loggers of libraries we call that log on their own.
_LIBRARY_LOGGERS = ("credentials",)


def _bridge_library_logs() -> None:
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [_LibraryBridge()]
        logger.propagate = False


def colors_wanted(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog for the whole process (idempotent)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if level.lower() not in LEVELS or numeric is None:
        raise ConfigError(f"{level!r} is not a log level ({', '.join(LEVELS)})", key="log level")
    out: TextIO = stream or cast(TextIO, _CurrentStderr())
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=colors_wanted(out))
    )
    quiet: list[Processor] = [] if numeric <= logging.DEBUG else [_drop_quiet]
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        *quiet,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        # Last before rendering, so it also sees rendered tracebacks.
        redact_event,
        renderer,
    ]
    _bridge_library_logs()
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
