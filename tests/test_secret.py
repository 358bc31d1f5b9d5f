"""``Secret``: a password never shows itself, except through ``reveal()``."""

from __future__ import annotations

import copy
import pickle
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from rotator.errors import ConfigError
from rotator.secret import MASK, Secret, find_known_secrets, read_secret_file


def _value() -> str:
    # Unique per test, so the process-wide registry of known secrets cannot make a test pass.
    return "pw-" + uuid.uuid4().hex[:12]


def test_repr_str_and_format_are_masked() -> None:
    value = _value()
    secret = Secret(value)
    renderings = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        "%s" % secret,  # noqa: UP031 - the old formatting path must be masked too
        "%r" % secret,  # noqa: UP031
        "{}".format(secret),  # noqa: UP032
        repr([secret, {"k": secret}]),
    ]
    for text in renderings:
        assert value not in text
        assert MASK in text
    assert secret.reveal() == value


def test_masked_inside_a_dataclass_repr() -> None:
    @dataclass
    class Login:
        user: str
        password: Secret

    value = _value()
    assert value not in repr(Login("root", Secret(value)))


def test_equality_and_hash_follow_the_value() -> None:
    value = _value()
    assert Secret(value) == Secret(value)
    assert Secret(value) != Secret(value + "x")
    assert hash(Secret(value)) == hash(Secret(value))
    assert len({Secret(value), Secret(value)}) == 1
    # A Secret never equals its clear text: comparing by accident must not "work".
    assert Secret(value) != value


def test_len_and_truthiness() -> None:
    assert len(Secret("a1b2c3")) == 6
    assert Secret("x")
    assert not Secret("")


def test_cannot_be_pickled_or_copied() -> None:
    secret = Secret(_value())
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        pickle.dumps({"password": secret})
    with pytest.raises(TypeError):
        copy.deepcopy(secret)


def test_find_known_secrets_finds_registered_values_inside_text() -> None:
    value = _value()
    never_wrapped = _value()
    Secret(value)
    text = f"server echoed: Passwd={value}; other={never_wrapped}"
    assert find_known_secrets(text) == {value}
    assert find_known_secrets("nothing to see here") == set()
    assert find_known_secrets("") == set()


def test_find_known_secrets_finds_several_and_overlapping_lengths() -> None:
    short, long = "k" + uuid.uuid4().hex[:5], "L" + uuid.uuid4().hex[:20]
    Secret(short)
    Secret(long)
    assert find_known_secrets(f"{long} and {short}") == {short, long}
    assert find_known_secrets(f"prefix{short}suffix") == {short}


def test_very_short_values_are_not_scrubbed() -> None:
    # Cutting "ab" out of every log line would mangle ordinary text.
    Secret("zq")
    assert find_known_secrets("zq zq zq") == set()


def test_read_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "ak-secret"
    value = _value()
    path.write_text(f"  {value}\n", encoding="utf-8")
    secret = read_secret_file(path, key="credentials.access_key_secret_file")
    assert secret.reveal() == value


def test_read_secret_file_errors_name_the_key_not_the_content(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="does not exist") as missing_info:
        read_secret_file(missing, key="vault.token_file")
    assert missing_info.value.key == "vault.token_file"

    empty = tmp_path / "empty"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty") as empty_info:
        read_secret_file(empty, key="vault.token_file")
    assert "vault.token_file" in str(empty_info.value)

    with pytest.raises(ConfigError) as dir_info:
        read_secret_file(tmp_path, key="serve.webhook_token_file")
    assert dir_info.value.key == "serve.webhook_token_file"
