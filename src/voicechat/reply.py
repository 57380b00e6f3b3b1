"""One assistant turn, and its handle: LLM stream -> segmenter -> Chatterbox streams -> audio to the client.

A :class:`Reply` is created for the user's text and lives until the client has played it to the end or
it is interrupted; its ``state`` moves only along ``TRANSITIONS``:

    speculative -> thinking -> speaking -> generated -> played
         |             \\___________\\___________\\________> interrupted
         +--> dropped

A reply may start *speculatively* (the user has probably finished): it runs LLM and TTS ahead but sends
nothing until :meth:`Reply.confirm`; one never confirmed is dropped and nobody hears it. The LLM keeps
streaming while the first segment is spoken. Cancelling is one call that stops LLM and TTS at once.
``played`` and ``interrupted`` are futures; :meth:`heard_text` is the one rule for what the user got.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from starlette.websockets import WebSocketDisconnect

from voicechat import protocol as p
from voicechat.llm import LLM, LLMError
from voicechat.metrics import Metrics
from voicechat.playback import ClientPlayback, Clock
from voicechat.stt.listener import SpeechEvent
from voicechat.tts.engine import TTSEngine, TTSError, TTSParams
from voicechat.tts.segmenter import Segmenter

log = logging.getLogger(__name__)

_WORD = re.compile(r"\S+")

ReplyState = Literal["speculative", "thinking", "speaking", "generated", "played", "interrupted", "dropped"]
TRANSITIONS: dict[ReplyState, frozenset[ReplyState]] = {
    "speculative": frozenset({"thinking", "dropped"}),
    "thinking": frozenset({"speaking", "generated", "interrupted"}),
    "speaking": frozenset({"generated", "interrupted"}),
    "generated": frozenset({"played", "interrupted"}),
    "played": frozenset(),
    "interrupted": frozenset(),
    "dropped": frozenset(),
}


@dataclass
class Outlet:
    """Where a reply's output goes: the session's one sender, and the hook that hears its state changes."""

    send: Callable[[p.ServerMessage], Awaitable[None]]
    send_audio: Callable[[int, int, np.ndarray], Awaitable[None]]  # turn id, seq, int16 PCM
    on_state: Callable[[Reply], Awaitable[None]]  # thinking, speaking, generated, played


@dataclass
class _Spoken:
    raw_start: int  # the segment was made from self.text[raw_start:raw_end]
    raw_end: int
    start_sample: int
    end_sample: int  # grows while the segment's audio streams


class Reply:
    def __init__(
        self,
        turn_id: int,
        user_text: str,
        *,
        event: SpeechEvent | None,
        messages: list[dict[str, str]],
        llm: LLM,
        tts: TTSEngine,
        params: TTSParams,
        outlet: Outlet,
        playback: ClientPlayback,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.turn_id = turn_id
        self.user_text = user_text
        self.event = event  # the turn_end (or, while speculative, turn_probably_complete) that started it
        self.state: ReplyState = "speculative"
        self.text = ""  # the LLM's reply so far
        self.samples_sent = 0
        self.played: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.interrupted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._messages = messages
        self._llm, self._tts, self._params = llm, tts, params
        self._out = outlet
        self._playback = playback
        self._metrics = metrics
        self._clock = clock
        self._spoken: list[_Spoken] = []
        self._confirmed = asyncio.Event()
        self._confirmed_at: float | None = None
        self._first_audio_at: float | None = None
        self._llm_first_token_s: float | None = None
        self._tts_first_chunk_s: float | None = None
        self._segments: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self._held_errors: list[Exception] = []  # errors of a speculative reply, told once it is confirmed
        playback.track(turn_id)
        self._task = asyncio.create_task(self._run(), name=f"reply-{turn_id}")

    # --- the handle ---------------------------------------------------------------------------------

    @property
    def confirmed(self) -> bool:
        return self._confirmed.is_set()

    @property
    def audible(self) -> bool:
        """Thinking or speaking, or generated and still playing on the client."""
        if self.state == "generated":
            return self._playback.audible(self.turn_id)
        return self.state in ("thinking", "speaking")

    def confirm(self, event: SpeechEvent | None) -> None:
        """The user's turn is final: from now on the reply is sent (audio held so far goes first)."""
        self.event = event
        self._confirmed_at = self._clock.now()
        self._to("thinking")
        self._confirmed.set()

    async def cancel(self) -> None:
        """Stop LLM and TTS now; returns once both have let go. Interrupted once confirmed, else dropped."""
        if self.state in ("played", "interrupted", "dropped"):
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self.state == "generated" and not self._playback.audible(self.turn_id):
            self._to("played")  # it had just ended
        elif self.state not in ("played", "interrupted", "dropped"):
            self._to("interrupted" if self.confirmed else "dropped")
        if self.state == "dropped":
            self._playback.forget(self.turn_id)  # nobody heard it: nothing to write, nothing to keep

    def heard_text(self) -> str:
        """What the user got of the reply: all of it once every sample sent was played (a reply without
        audio was read on screen), else the reply's own text up to where playback stopped: whole
        segments, then the played share of the next one's words. Always a prefix of the reply's text."""
        if self.samples_sent == 0:
            return "" if self.state == "interrupted" else self.text.strip()
        played = self._playback.heard_samples(self.turn_id)
        if played >= self.samples_sent and self.state in ("generated", "played"):
            return self.text.strip()
        heard_to = 0
        for segment in self._spoken:
            if played >= segment.end_sample:
                heard_to = segment.raw_end
                continue
            length = segment.end_sample - segment.start_sample
            words = list(_WORD.finditer(self.text, segment.raw_start, segment.raw_end))
            heard_words = int(len(words) * (played - segment.start_sample) / length) if length > 0 else 0
            if heard_words > 0:
                heard_to = words[heard_words - 1].end()
            break
        return self.text[:heard_to].strip()

    def metrics_message(self) -> p.TurnMetrics:
        """Latency of the turn, by stage (docs/protocol.md, turn_metrics)."""
        event = self.event if self.event is not None and self.event.type == "turn_end" else None
        endpointing_ms = stt_ms = first_audio_ms = None
        if event is not None and event.end_of_speech_s is not None:
            endpointing_ms = max(0.0, (event.time_s - event.end_of_speech_s) * 1000)
            stt_ms = event.stt_ms
        if self._first_audio_at is not None and self._confirmed_at is not None:
            after_turn_end = max(0.0, self._first_audio_at - self._confirmed_at) * 1000
            first_audio_ms = (endpointing_ms or 0.0) + (stt_ms or 0.0) + after_turn_end

        def ms(value: float | None, scale: float = 1.0) -> float | None:
            return None if value is None else round(value * scale, 1)

        return p.TurnMetrics(
            turn_id=self.turn_id,
            endpointing_ms=ms(endpointing_ms),
            stt_ms=ms(stt_ms),
            llm_first_token_ms=ms(self._llm_first_token_s, 1000),
            tts_first_chunk_ms=ms(self._tts_first_chunk_s, 1000),
            first_audio_ms=ms(first_audio_ms),
        )

    def _to(self, state: ReplyState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"reply {self.turn_id}: no way from {self.state} to {state}")
        self.state = state
        if state == "played":
            self.played.set_result(None)
        elif state == "interrupted":
            self.interrupted.set_result(None)

    # --- the work -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._generate()
            self._to("generated")
            await self._out.on_state(self)
            await self._playback.wait_silent(self.turn_id)
            self._to("played")
            await self._out.on_state(self)
        except asyncio.CancelledError:
            raise
        except WebSocketDisconnect:  # a send found the client gone: the session is ending, nothing to tell
            log.info("reply %s: the client left", self.turn_id)
        except Exception:  # noqa: BLE001 - never into the event loop
            log.exception("reply %s could not be sent", self.turn_id)

    async def _generate(self) -> None:
        self._metrics.replies.inc()
        pump = asyncio.create_task(self._pump_llm(), name=f"reply-{self.turn_id}-llm")
        try:
            try:
                await self._speak()
                await pump
            except (asyncio.CancelledError, WebSocketDisconnect):
                raise
            except Exception as error:  # noqa: BLE001 - a reply must never take the session down
                log.exception("reply %s failed", self.turn_id)
                await self._report(error)
            await self._confirmed.wait()  # a speculative reply that ended early still waits to be confirmed
            for error in self._held_errors:
                await self._report(error)
            await self._out.send(p.TtsEnd(turn_id=self.turn_id, samples=self.samples_sent))
        finally:
            self._metrics.replies.dec()  # first: a cancel that lands in the await below must not skip it
            if not pump.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)

    async def _pump_llm(self) -> None:
        """LLM deltas -> reply text (sent as partial answers) and speakable segments for _speak."""
        segmenter = Segmenter()
        stream = self._llm.stream(self._messages)
        self._metrics.llm_streams.inc()
        try:
            async for delta in stream:
                if not self.text and stream.first_token_s is not None:  # the first token
                    self._llm_first_token_s = stream.first_token_s
                    self._metrics.llm_first_token.observe(stream.first_token_s)
                self.text += delta
                self._queue(segmenter.push(delta), segmenter)
                if self.confirmed:
                    await self._send_partial()
            self._queue(segmenter.flush(), segmenter)
        except LLMError as error:
            await self._report(error)
        finally:
            self._segments.put_nowait(None)
            self._metrics.llm_streams.dec()
            await stream.aclose()

    def _queue(self, segments: list[str], segmenter: Segmenter) -> None:
        spans = segmenter.spans[len(segmenter.spans) - len(segments) :]
        for text, (_, raw_end) in zip(segments, spans):
            self._segments.put_nowait((text, raw_end))

    async def _send_partial(self) -> None:
        await self._out.send(p.PartialAssistantAnswer(content=self.text, turn_id=self.turn_id))

    async def _speak(self) -> None:
        seq = 0
        while (item := await self._segments.get()) is not None:
            text, raw_end = item
            raw_start = self._spoken[-1].raw_end if self._spoken else 0
            segment = _Spoken(raw_start, raw_end, self.samples_sent, self.samples_sent)
            self._spoken.append(segment)
            try:
                stream = self._tts.stream(text, self._params)
            except TTSError as error:
                await self._report(error)
                continue
            try:
                async for chunk in stream:
                    if self._tts_first_chunk_s is None and stream.first_chunk_s is not None:
                        self._tts_first_chunk_s = stream.first_chunk_s
                        self._metrics.tts_first_chunk.observe(stream.first_chunk_s)
                    if not self.confirmed:  # speculative: hold the audio until the turn is confirmed
                        await self._confirmed.wait()
                        await self._send_partial()
                    await self._out.send_audio(self.turn_id, seq, chunk)
                    seq += 1
                    self.samples_sent += len(chunk)
                    segment.end_sample = self.samples_sent
                    self._playback.sent(self.turn_id, len(chunk))
                    if self._first_audio_at is None:
                        self._first_audio_at = self._clock.now()
                        self._to("speaking")
                        await self._out.on_state(self)
            except TTSError as error:
                await self._report(error)
            finally:
                await stream.aclose()

    async def _report(self, error: Exception) -> None:
        if self.confirmed:
            # The details belong in the server log; the page shows its own plain words for the code.
            log.warning("reply %s: %s: %s", self.turn_id, type(error).__name__, error)
            code = getattr(error, "code", None)  # LLM and TTS errors carry a protocol code
            await self._out.send(p.Error(code=code if isinstance(code, str) else "internal", message=str(error)))
        else:
            self._held_errors.append(error)
