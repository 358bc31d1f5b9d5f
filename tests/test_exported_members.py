"""The public surface is exactly what rotator/__init__.py lists (as httpx tests its own)."""

from __future__ import annotations

from types import ModuleType

import rotator


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(rotator)
        if not name.startswith("_")
        and not isinstance(getattr(rotator, name), ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }
    assert public == set(rotator.__all__)


def test_every_exported_name_resolves() -> None:
    for name in rotator.__all__:
        assert getattr(rotator, name) is not None, name
