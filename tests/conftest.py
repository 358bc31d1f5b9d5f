"""Shared fixtures: each tests/support module owns one kind of fixture."""

from __future__ import annotations

# fixture imports (one line per support module):
from tests.support.events import event_server  # noqa: F401
from tests.support.sim import sim, sim_factory  # noqa: F401
from tests.support.vault import openbao, vault_paths  # noqa: F401
