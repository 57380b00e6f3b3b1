"""An autouse fixture for asyncio test areas: fail a test if an exception reached the event loop."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(autouse=True)
async def no_loop_exceptions():  # type: ignore[no-untyped-def]
    """Fails a test if anything reached the event loop's exception handler (e.g. an unretrieved task error)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    await asyncio.sleep(0)
    assert not seen, f"exceptions escaped into the event loop: {seen}"
