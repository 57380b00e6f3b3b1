"""The rate window and the resume store, on their own (no server)."""

from __future__ import annotations

import asyncio

from voicechat.ratelimit import RateWindow
from voicechat.resume import ResumeStore, new_token


def test_rate_window_counts_a_sliding_minute() -> None:
    window = RateWindow(3, 60.0)
    assert [window.allow(now) for now in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert window.retry_after_s(3.0) == 57.0
    assert not window.allow(59.9)
    assert window.allow(60.0)  # the first event has left the window
    assert len(window._times) <= 3  # bounded whatever the caller does


async def test_resume_store_gives_back_once_with_the_right_token() -> None:
    store = ResumeStore(grace_s=60.0, max_parked=2)
    token = new_token()
    store.park("a", token, {"history": [1, 2]})
    assert await store.take("a", "wrong") is None
    assert await store.take("a", token) == {"history": [1, 2]}
    assert await store.take("a", token) is None  # once
    store.park("b", "t", 1)
    store.park("c", "t", 2)
    store.park("d", "t", 3)  # full: the oldest goes
    assert len(store) == 2 and await store.take("b", "t") is None
    store.close()
    assert len(store) == 0


async def test_resume_store_forgets_after_the_grace_period() -> None:
    store = ResumeStore(grace_s=0.01, max_parked=4)
    store.park("a", "t", 1)
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.call_later(0.05, gone.set_result, None)  # the store's own timer fires first (0.01 s)
    await gone
    assert await store.take("a", "t") is None and len(store) == 0


async def test_a_live_conversation_is_handed_over_to_its_token_only() -> None:
    store = ResumeStore(grace_s=60.0, max_parked=2)
    handed: list[str] = []

    async def hand_over() -> str:
        handed.append("a")
        return "state of a"

    store.live("a", "t", hand_over)
    assert await store.take("a", "stolen") is None and handed == []
    assert await store.take("a", "t") == "state of a" and handed == ["a"]
    assert await store.take("a", "t") is None  # once
    store.live("b", "t", hand_over)
    store.gone("b")
    assert await store.take("b", "t") is None
