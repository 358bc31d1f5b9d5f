"""Small asyncio helpers shared by the daemon's loops."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds``; True when it is set.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives as the
    event is set, and a loop built on it then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
