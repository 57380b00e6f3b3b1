"""The ``local`` provider: a small instruct model run in this process with transformers.

The model loads in the background with the app's other models (:meth:`LocalLLM.load`, blocking); one
copy serves every conversation through one owner thread (:mod:`voicechat.llm.local_scheduler`), and
replies come back through the same :class:`LLMStream` as the servers' (thinking filter, first-token
deadline, cancel, time to first token).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from voicechat.config import Settings
from voicechat.llm.base import LLMStream
from voicechat.llm.errors import LLMError, LLMOutOfMemory, LLMUnreachable
from voicechat.llm.local_model import hub_repo, load_model
from voicechat.llm.local_scheduler import DONE, OutOfMemory, Reply, Scheduler

log = logging.getLogger(__name__)


class LocalLLM:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.source = settings.llm_model()
        self.hub_repo = hub_repo(self.source)  # None for a local directory (nothing to download)
        self.name = f"local {self.source}"
        self._where = f"the local model {self.source}"
        self._scheduler: Scheduler | None = None
        self._error: LLMError = LLMUnreachable(f"the language model {self.source} is still loading", retryable=True)

    def load(self) -> None:
        """Download (if needed) and load the model onto the app's device. Blocking; raises LLMError."""
        from voicechat.tts.engine import detect_device

        try:
            loaded = load_model(self.source, detect_device(self._settings.device))
        except LLMError as error:
            self._error = error
            raise
        self._scheduler = Scheduler(loaded)

    @property
    def active_replies(self) -> int:
        return self._scheduler.active if self._scheduler is not None else 0

    def stream(self, messages: list[dict[str, str]]) -> LLMStream:
        return LLMStream(
            lambda: self._deltas(messages),
            where=self._where,
            first_token_timeout_s=self._settings.llm_first_token_timeout_s,
            retries=0,  # nothing here fails in a way that waiting would mend; memory has its own retry
            max_chars=self._settings.llm_max_reply_chars,
        )

    async def check_ready(self) -> None:
        if self._scheduler is None:
            raise self._error

    async def aclose(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.close)
            self._scheduler = None

    async def _deltas(self, messages: list[dict[str, str]]) -> AsyncGenerator[str, None]:
        if self._scheduler is None:
            raise self._error
        for attempt in (1, 2):
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            reply = self._scheduler.submit(
                Reply(
                    messages=messages,
                    max_tokens=self._settings.llm_max_tokens,
                    temperature=self._settings.llm_temperature,
                    deliver=lambda item: loop.call_soon_threadsafe(queue.put_nowait, item),
                )
            )
            said = False
            try:
                while (item := await queue.get()) is not DONE:
                    if isinstance(item, str):
                        said = True
                        yield item
                    elif isinstance(item, OutOfMemory) and attempt == 1 and not said:
                        messages = _older_half_dropped(messages)
                        log.warning("the language model ran out of memory; retrying with a shorter history")
                        break
                    elif isinstance(item, OutOfMemory):
                        raise LLMOutOfMemory(
                            "the language model ran out of memory on its device. Fewer conversations at once, "
                            "a smaller VOICECHAT_MODEL or a shorter VOICECHAT_HISTORY_MAX_CHARS would help."
                        )
                    else:
                        raise item  # type: ignore[misc]  # a typed LLMError from the owner thread
                else:
                    return
            finally:
                reply.cancel()  # a no-op when it finished; otherwise it stops before its next token


def _older_half_dropped(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The request with the older half of its turns left out (starting at a user turn); the system
    prompt and the latest user turn stay."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    start = len(turns) // 2
    while start > 0 and turns[start]["role"] != "user":
        start -= 1
    users = [i for i, m in enumerate(turns) if m["role"] == "user"]
    start = min(start, users[-1]) if users else start
    return system + turns[start:]
