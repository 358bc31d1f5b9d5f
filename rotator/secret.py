"""A string that refuses to be printed.

Retry libraries log call arguments, tracebacks show locals, structlog renders whatever it is
given. A password therefore only ever travels as a :class:`Secret`, whose ``repr``/``str`` are
masked; code that really needs the value calls :meth:`Secret.reveal` at the last moment (building
a request body, writing to Vault).

Every live secret value is also registered so that the log redactor can scrub it from any string
that somehow picked it up (an error body echoed by a server, say).
"""

from __future__ import annotations

import errno
import hmac
import os
import threading
from collections import Counter, OrderedDict
from pathlib import Path

from rotator.errors import ConfigError

__all__ = ["MASK", "Secret", "find_known_secrets", "read_secret_file", "write_secret_file"]

MASK = "******"

# Bounded so that a daemon running for months does not grow without limit; the newest values
# are the ones still in flight, so evicting the oldest is safe.
_REGISTRY_LIMIT = 200_000
_registry: OrderedDict[str, None] = OrderedDict()
_length_counts: Counter[int] = Counter()
_registry_lock = threading.Lock()
_MIN_SCRUB_LENGTH = 4  # shorter values cannot be cut out without mangling ordinary text


def _register(value: str) -> None:
    if len(value) < _MIN_SCRUB_LENGTH:
        return
    with _registry_lock:
        if value in _registry:
            _registry.move_to_end(value)
            return
        _registry[value] = None
        _length_counts[len(value)] += 1
        while len(_registry) > _REGISTRY_LIMIT:
            old, _ = _registry.popitem(last=False)
            _length_counts[len(old)] -= 1
            if not _length_counts[len(old)]:
                del _length_counts[len(old)]


def find_known_secrets(text: str) -> set[str]:
    """The secret values seen by this process that occur in ``text`` (for the log redactor).

    Slides a window of each known secret length over the text, so the cost grows with the
    text and the number of distinct lengths, not with the number of secrets in flight.
    """
    found: set[str] = set()
    if len(text) < _MIN_SCRUB_LENGTH:
        return found
    with _registry_lock:
        lengths = list(_length_counts)
        for length in lengths:
            for start in range(len(text) - length + 1):
                window = text[start : start + length]
                if window in _registry:
                    found.add(window)
    return found


class Secret:
    """An opaque secret string. ``str()``/``repr()`` never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):  # pragma: no cover - defensive against double wrapping
            value = value.reveal()
        self._value = value
        _register(value)

    def reveal(self) -> str:
        """The clear value. Call only where it is sent to its destination."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would carry the clear value to wherever it is unpickled (queues, caches).
        raise TypeError("Secret values cannot be pickled")


def read_secret_file(path: str | Path, *, key: str) -> Secret:
    """A secret kept in a file (AccessKey secret, AppRole secret_id, webhook token), stripped.

    Every problem is a :class:`ConfigError` naming the setting ``key`` and the path, never the
    content.
    """
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", key=key) from None
    except PermissionError:
        raise ConfigError(f"{path} is not readable", key=key) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a file", key=key) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=key) from None
    except UnicodeDecodeError:
        # The message names the file, never the bytes: they are the secret.
        raise ConfigError(f"{path} is not UTF-8 text", key=key) from None
    if not value:
        raise ConfigError(f"{path} is empty", key=key)
    return Secret(value)


def write_secret_file(path: Path, value: str) -> Path:
    """Create or replace ``path`` readable by its owner only (0600 from the first byte).

    An existing file gets mode 0600 before the secret is written into it; a symbolic link is
    refused (it could point the secret anywhere, e.g. into a world-readable file).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symbolic link; refusing to write a secret through it"
            ) from None
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through os.open
        handle.truncate()  # only after the mode is fixed: never a window with the old mode
        handle.write(value)
    return path
