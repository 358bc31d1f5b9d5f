"""``Secret``: a password never shows itself, except through ``reveal()``."""

from __future__ import annotations

import copy
import pickle
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from rotator.errors import ConfigError
from rotator.secret import (
    MASK,
    Secret,
    find_known_secrets,
    read_secret_file,
    write_secret_file,
)


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


# -- secret files: encodings, directories, modes, symlinks --------------------------------------


def test_a_secret_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "ak-secret"
    path.write_bytes(b"\xff\xfe\x00not-utf8-\x9c")
    with pytest.raises(ConfigError) as refused:
        read_secret_file(path, key="credentials.access_key_secret_file")
    assert refused.value.key == "credentials.access_key_secret_file"
    assert "UTF-8" in refused.value.message
    assert "not-utf8" not in str(refused.value)


def test_write_secret_file_creates_it_owner_only(tmp_path: Path) -> None:
    path = write_secret_file(tmp_path / "new", "s3cr3t-new")
    assert path.read_text(encoding="utf-8") == "s3cr3t-new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_secret_file_fixes_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "loose"
    path.write_text("old value that is longer", encoding="utf-8")
    path.chmod(0o644)
    write_secret_file(path, "s3cr3t-2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == "s3cr3t-2"


def test_write_secret_file_refuses_to_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched", encoding="utf-8")
    target.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as refused:
        write_secret_file(link, "s3cr3t-3")
    assert "symbolic link" in refused.value.message
    assert "s3cr3t-3" not in str(refused.value)
    assert target.read_text(encoding="utf-8") == "untouched"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_secret_file_refuses_a_dangling_symlink_too(tmp_path: Path) -> None:
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "would-be-created")
    with pytest.raises(ConfigError):
        write_secret_file(link, "s3cr3t-4")
    assert not (tmp_path / "would-be-created").exists()
