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
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from rotator.secret import MASK, Secret, find_known_secrets

__all__ = ["LogFormat", "configure_logging", "redact_event", "scrub"]

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
            k: (MASK if isinstance(k, str) and _sensitive(k) and v else _clean(v, depth + 1))
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
        if _sensitive(key) and value not in (None, "", False):
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


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog for the whole process (idempotent)."""
    out: TextIO = stream or cast(TextIO, _CurrentStderr())
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        # Last before rendering, so it also sees rendered tracebacks.
        redact_event,
        renderer,
    ]
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
