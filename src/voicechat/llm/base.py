"""The one LLM interface the server uses, and the stream that every provider returns.

A provider supplies ``open_deltas()``: a fresh async generator of raw content deltas for one request,
raising only :class:`LLMError`. :class:`LLMStream` adds what is the same for every provider: thinking
removal, the first-token deadline, retries before the first token, time to first token, and
cancellation at any moment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from voicechat.llm.errors import LLMError, LLMStreamError, LLMTimeout
from voicechat.llm.thinking import ThinkingFilter

log = logging.getLogger(__name__)

RETRY_BASE_DELAY_S = 0.25  # doubled on each retry
_END = object()


class LLMStream:
    """Async iterator of visible text deltas of one reply.

    The request starts on the first ``__anext__``. A background task reads the HTTP stream into a small
    bounded queue, so :meth:`aclose` can stop it from any task at any moment: the task is cancelled,
    which closes the HTTP response (the server sees its connection closed), and a consumer waiting for
    the next delta ends its iteration. Always ``aclose()`` a stream (or use ``async with``).
    """

    def __init__(
        self,
        open_deltas: Callable[[], AsyncGenerator[str, None]],
        *,
        where: str,
        first_token_timeout_s: float,
        retries: int,
        max_chars: int | None = None,
    ) -> None:
        self.first_token_s: float | None = None
        self.cut = False  # the reply reached max_chars and was ended by us, whatever the server meant to send
        self._max_chars = max_chars
        self._chars = 0
        self._open_deltas = open_deltas
        self._where = where
        self._timeout_s = first_token_timeout_s
        self._retries = retries
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=64)
        self._task: asyncio.Task[None] | None = None
        self._finished = False

    def __aiter__(self) -> LLMStream:
        return self

    async def __anext__(self) -> str:
        if self._finished:
            raise StopAsyncIteration
        if self._task is None:
            self._task = asyncio.create_task(self._produce(), name=f"llm-stream {self._where}")
        item = await self._queue.get()
        if isinstance(item, str):
            return item
        self._finished = True
        if isinstance(item, LLMError):
            raise item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._finished = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])  # not `await task`: our own cancellation must still propagate
        # Wake a consumer blocked in __anext__ (in another task): it sees the end of the stream.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    async def __aenter__(self) -> LLMStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _produce(self) -> None:
        item: object = _END
        try:
            await self._run()
        except LLMError as exc:
            item = exc
        except Exception as exc:  # a bug or a reply shape no one foresaw: still a typed error, never a crash
            log.exception("unexpected error in the LLM stream from %s", self._where)
            item = LLMStreamError(f"unexpected error reading the reply from {self._where}: {exc}")
        await self._queue.put(item)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._timeout_s
        attempt = 0
        while True:
            thinking = ThinkingFilter()
            deltas = self._open_deltas()
            try:
                # The deadline covers every attempt up to the first visible token, then is lifted.
                async with asyncio.timeout_at(deadline) as scope:
                    async for raw in deltas:
                        text = thinking.feed(raw)
                        if self.first_token_s is None:
                            text = text.lstrip()  # whitespace is not worth announcing as a first token
                            if not text:
                                continue
                            self.first_token_s = loop.time() - started
                            scope.reschedule(None)
                        if text and not await self._put(text):
                            return
                tail = thinking.flush()
                if self.first_token_s is None:
                    tail = tail.lstrip()
                    if tail:
                        self.first_token_s = loop.time() - started
                if tail:
                    await self._put(tail)
                return
            except TimeoutError:
                raise LLMTimeout(
                    f"{self._where} sent no reply within {self._timeout_s:g} s "
                    "(VOICECHAT_LLM_FIRST_TOKEN_TIMEOUT_S). The model may still be loading, or the server "
                    "is overloaded."
                ) from None
            except LLMError as exc:
                delay = RETRY_BASE_DELAY_S * 2**attempt
                if (
                    self.first_token_s is not None
                    or not exc.retryable
                    or attempt >= self._retries
                    or loop.time() + delay >= deadline
                ):
                    raise
                attempt += 1
                log.warning("LLM request failed (%s); retry %d of %d in %.2f s", exc, attempt, self._retries, delay)
                await asyncio.sleep(delay)
            finally:
                await deltas.aclose()  # closes the HTTP response at once


    async def _put(self, text: str) -> bool:
        """Pass visible text on, up to max_chars in all; False once the cap is reached (the caller stops)."""
        if self._max_chars is not None and self._chars + len(text) > self._max_chars:
            text = text[: self._max_chars - self._chars]
            self.cut = True
            log.info("reply from %s cut at %d characters (VOICECHAT_LLM_MAX_REPLY_CHARS)", self._where, self._max_chars)
        self._chars += len(text)
        if text:
            await self._queue.put(text)
        return not self.cut


class LLM(Protocol):
    name: str  # e.g. "ollama llama3.2:3b at http://localhost:11434"

    def stream(self, messages: list[dict[str, str]]) -> LLMStream:
        """Stream a reply to ``messages`` (system, user and assistant turns, as History.messages())."""
        ...

    async def check_ready(self) -> None:
        """Return when the server is reachable and has the model; raise LLMError otherwise."""
        ...

    async def aclose(self) -> None: ...
