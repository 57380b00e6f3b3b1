"""The session guard's endings: hello deadline, idle timeout, longest session, strikes, LLM rate."""

from __future__ import annotations

import pytest

from voicechat.config import Settings
from voicechat.guard import MAX_STRIKES, MAX_STRIKES_BEFORE_HELLO, SessionGuard

pytestmark = pytest.mark.timeout(30)


def guard(**settings: object) -> SessionGuard:
    return SessionGuard(Settings(_env_file=None, **settings))


async def test_no_hello_in_time() -> None:
    ending = await guard(hello_timeout_s=0.01).watch()
    assert (ending.code, ending.close_code) == ("hello_timeout", 1008)


async def test_idle_after_hello() -> None:
    watched = guard(hello_timeout_s=60, idle_timeout_s=0.02, max_session_s=60)
    watched.hello()
    ending = await watched.watch()
    assert (ending.code, ending.close_code) == ("idle_timeout", 1001)


async def test_longest_session_even_when_active() -> None:
    now = [0.0]
    watched = SessionGuard(Settings(_env_file=None, idle_timeout_s=60, max_session_s=120), clock=lambda: now[0])
    watched.hello()
    now[0] = 119.0
    watched.activity()
    now[0] = 120.0
    ending = await watched.watch()
    assert (ending.code, ending.close_code) == ("session_expired", 1001) and "2 minutes" in ending.message


def test_strikes_before_and_after_hello() -> None:
    watched = guard()
    assert [watched.strike() for _ in range(MAX_STRIKES_BEFORE_HELLO)][-1].close_code == 1008
    watched = guard()
    watched.hello()
    endings = [watched.strike() for _ in range(MAX_STRIKES)]
    assert endings[:-1] == [None] * (MAX_STRIKES - 1) and endings[-1].code == "too_many_errors"


def test_llm_requests_per_minute() -> None:
    now = [0.0]
    watched = SessionGuard(Settings(_env_file=None, llm_requests_per_minute=2), clock=lambda: now[0])
    assert watched.llm_request() is None and watched.llm_request() is None
    refusal = watched.llm_request()
    assert refusal and "wait 60 s" in refusal
    now[0] = 60.0
    assert watched.llm_request() is None
