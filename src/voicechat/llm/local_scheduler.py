"""One owner thread runs the local model for every conversation, one token each in turn.

Why interleaving rather than batching (docs/llm.md): each conversation keeps its own KV cache
(``DynamicCache``), so a new request starts at once instead of waiting for a batch to form, a finished
or cancelled one leaves without touching the others, and no padding or cache surgery is needed. The
round-robin over active replies is fair by construction (every reply advances one step per round; a
long prompt is read in chunks of ``PREFILL_CHUNK`` tokens, so it cannot hold the others up for long),
and a cancel takes effect before the reply's next token. The price is throughput: N conversations
cost N forward passes per round instead of one batched pass.

The thread never touches the event loop's objects: results go back through ``deliver``, which the
caller makes thread-safe (``loop.call_soon_threadsafe``). Nothing polls: the thread sleeps on a
condition while there is no work.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voicechat.llm.errors import LLMContextOverflow, LLMStreamError
from voicechat.llm.local_model import LoadedModel

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # prompt tokens read per turn of the round-robin
DONE = object()  # delivered after the last text of a reply


class OutOfMemory(Exception):
    """Delivered when a step ran out of device memory (the provider trims and retries once)."""


@dataclass
class Reply:
    """One reply in progress. ``deliver`` gets text deltas, then DONE or an exception (thread side)."""

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    deliver: Callable[[object], None]
    cancelled: bool = False
    prompt_tokens: int = 0
    trimmed_turns: int = 0
    _pending: Any = None  # token ids not yet read by the model (the prompt, then the last sampled token)
    _cache: Any = None
    _generated: list[int] = field(default_factory=list)
    _sent: str = ""
    _rng: Any = None

    def cancel(self) -> None:
        """Stop before the next token (a plain flag: the owner thread reads it before each step)."""
        self.cancelled = True


class Scheduler:
    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._replies: list[Reply] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="local-llm", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        with self._wake:
            return len(self._replies)

    def submit(self, reply: Reply) -> Reply:
        with self._wake:
            if self._closed:
                raise LLMStreamError("the language model is shutting down")
            self._replies.append(reply)
            self._wake.notify()
        return reply

    def wait_idle(self, timeout: float) -> bool:
        """Block until no reply is in progress (True) or ``timeout`` passes (False)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._replies, timeout)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._replies and not self._closed:
                        self._wake.wait()
                    if self._closed:
                        for reply in self._replies:  # nobody waits forever for a reply that will not come
                            self._send(reply, LLMStreamError("the language model was shut down mid-reply"))
                        self._replies.clear()
                        return
                    round_ = list(self._replies)
                for reply in round_:
                    if reply.cancelled or self._step_safely(reply):
                        reply._cache = None  # frees its KV cache now
                        with self._wake:
                            self._replies.remove(reply)
                            self._wake.notify_all()  # wait_idle()

    def _step_safely(self, reply: Reply) -> bool:
        """One step of ``reply``; True when it is finished (done, failed or its consumer is gone)."""
        import torch

        try:
            return self._step(reply)
        except LLMContextOverflow as error:
            self._send(reply, error)
        except torch.OutOfMemoryError:
            reply._cache = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._send(reply, OutOfMemory())
        except Exception as error:  # noqa: BLE001 - a bug must end this reply, not the thread
            log.exception("the local language model failed")
            self._send(reply, LLMStreamError(f"the language model failed: {type(error).__name__}: {error}"))
        return True

    def _send(self, reply: Reply, item: object) -> bool:
        try:
            reply.deliver(item)
            return True
        except RuntimeError:  # the consumer's event loop is closed: nobody is listening any more
            reply.cancelled = True
            return False

    def _step(self, reply: Reply) -> bool:
        import torch
        from transformers import DynamicCache

        model, device = self.loaded.model, self.loaded.device
        if reply._cache is None:
            ids = self._prompt_ids(reply)
            reply._pending = torch.tensor([ids], device=device)
            reply._cache = DynamicCache()
            reply._rng = torch.Generator(device=device)
            reply._rng.manual_seed(secrets.randbits(63))
        if reply._pending.shape[1] > PREFILL_CHUNK:  # a long prompt: read part of it, let the others go
            model(input_ids=reply._pending[:, :PREFILL_CHUNK], past_key_values=reply._cache, use_cache=True)
            reply._pending = reply._pending[:, PREFILL_CHUNK:]
            return False
        logits = model(input_ids=reply._pending, past_key_values=reply._cache, use_cache=True).logits[0, -1]
        token = self._sample(logits, reply)
        if token in self.loaded.eos_ids:
            self._send(reply, DONE)
            return True
        reply._generated.append(token)
        text = self.loaded.tokenizer.decode(
            reply._generated, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        if not text.endswith("\ufffd") and text.startswith(reply._sent) and len(text) > len(reply._sent):
            if not self._send(reply, text[len(reply._sent) :]):
                return True
            reply._sent = text  # (a character split across tokens waits for its last byte)
        if len(reply._generated) >= reply.max_tokens:
            self._send(reply, DONE)
            return True
        reply._pending = torch.tensor([[token]], device=device)
        return False

    def _sample(self, logits: Any, reply: Reply) -> int:
        import torch

        if reply.temperature <= 0:
            return int(logits.argmax())
        logits = logits.float() / reply.temperature
        if self.loaded.top_k:
            kth = torch.topk(logits, min(self.loaded.top_k, logits.shape[-1])).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self.loaded.top_p and self.loaded.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > self.loaded.top_p  # keeps at least one
            probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
        return int(torch.multinomial(probs, 1, generator=reply._rng))

    def _prompt_ids(self, reply: Reply) -> list[int]:
        """The prompt's tokens; a conversation too long for the context loses its oldest turns first
        (the latest user turn always stays), and is an error only if that turn alone is too long."""
        tokenizer, limit = self.loaded.tokenizer, self.loaded.context_tokens - reply.max_tokens
        system = [m for m in reply.messages[:1] if m["role"] == "system"]
        turns = reply.messages[len(system) :]
        while True:
            ids = tokenizer.apply_chat_template(system + turns, add_generation_prompt=True, tokenize=True)
            if len(ids) <= limit:
                break
            later = [i for i, m in enumerate(turns) if m["role"] == "user" and i > 0]
            if not later:
                raise LLMContextOverflow(
                    f"your message is too long for the language model: {len(ids)} tokens with the system "
                    f"prompt, and it takes {limit} (its context of {self.loaded.context_tokens} less room for "
                    f"a reply of {reply.max_tokens}). Say it in shorter parts."
                )
            reply.trimmed_turns += later[0]
            turns = turns[later[0] :]
        if reply.trimmed_turns:
            log.info("history trimmed by %d turns to fit the model's context", reply.trimmed_turns)
        reply.prompt_tokens = len(ids)
        return list(ids)
