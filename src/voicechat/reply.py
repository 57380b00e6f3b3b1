"""One assistant turn: LLM stream -> segmenter -> Chatterbox streams -> audio frames to the client.

The LLM keeps streaming while the first segment is spoken. A reply may start *speculatively* (the user
has probably finished): it then runs LLM and TTS ahead but sends nothing until :meth:`Reply.confirm`;
a reply that is never confirmed is cancelled and nobody hears it. Cancelling is one call that stops the
LLM stream and the TTS stream at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from voicechat.llm import LLM, LLMError
from voicechat.metrics import Metrics
from voicechat.protocol import OUTPUT_SAMPLE_RATE, encode_audio_frame, error_message, server_message
from voicechat.tts.engine import TTSEngine, TTSError, TTSParams
from voicechat.tts.segmenter import Segmenter

log = logging.getLogger(__name__)

SendText = Callable[[str], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]


@dataclass
class SpokenSegment:
    text: str
    start_sample: int
    end_sample: int  # grows while the segment's audio streams


@dataclass
class TurnTimes:
    """What a reply measured for its turn_metrics (None until it happens)."""

    first_audio_sent: float | None = None  # monotonic time of the first audio frame sent
    llm_first_token_s: float | None = None
    tts_first_chunk_s: float | None = None


class Reply:
    def __init__(
        self,
        turn_id: int,
        *,
        messages: list[dict[str, str]],
        llm: LLM,
        tts: TTSEngine,
        params: TTSParams,
        send_text: SendText,
        send_bytes: SendBytes,
        metrics: Metrics,
        on_audio_sent: Callable[[int], None],
    ) -> None:
        self.turn_id = turn_id
        self.text = ""  # the LLM's reply so far
        self.spoken: list[SpokenSegment] = []
        self.samples_sent = 0
        self.finished = False  # all text generated and all audio sent
        self.error: Exception | None = None
        self.times = TurnTimes()
        self._messages = messages
        self._llm = llm
        self._tts = tts
        self._params = params
        self._send_text = send_text
        self._send_bytes = send_bytes
        self._metrics = metrics
        self._on_audio_sent = on_audio_sent
        self._confirmed = asyncio.Event()
        self._audio_started = asyncio.Event()
        self._segments: asyncio.Queue[str | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unreported: list[Exception] = []  # errors of a speculative reply, told once it is confirmed

    # --- life cycle -------------------------------------------------------------------------------

    def start(self, *, confirmed: bool) -> None:
        if confirmed:
            self.confirm()
        self._task = asyncio.create_task(self._run(), name=f"reply-{self.turn_id}")

    def confirm(self) -> None:
        self._confirmed.set()

    @property
    def confirmed(self) -> bool:
        return self._confirmed.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def has_audio(self) -> bool:
        return self.samples_sent > 0

    async def cancel(self) -> None:
        """Stop LLM and TTS now; returns once both have let go of their resources."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_audio_or_end(self) -> None:
        """Return once the first audio frame was sent, or the reply ended without any."""
        if self._task is None:
            return
        waiter = asyncio.ensure_future(self._audio_started.wait())
        try:
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    def heard_text(self, played_samples: int) -> str:
        """The part of the reply whose audio the client played: whole segments, then a share of words."""
        heard: list[str] = []
        for segment in self.spoken:
            if played_samples >= segment.end_sample:
                heard.append(segment.text)
                continue
            length = segment.end_sample - segment.start_sample
            if played_samples > segment.start_sample and length > 0:
                share = (played_samples - segment.start_sample) / length
                segment_words = segment.text.split()
                heard.append(" ".join(segment_words[: int(len(segment_words) * share)]))
            break
        return " ".join(part for part in heard if part).strip()

    # --- the work -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._metrics.replies.inc()
        pump = asyncio.create_task(self._pump_llm(), name=f"reply-{self.turn_id}-llm")
        try:
            await self._speak()
            await pump
            for error in self._unreported:
                await self._report(error)
            await self._send_text(server_message("tts_end", turn_id=self.turn_id, samples=self.samples_sent))
            self.finished = True
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a reply must never take the session down
            log.exception("reply %s failed", self.turn_id)
            self.error = error
            await self._report(error)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self._metrics.replies.dec()

    async def _pump_llm(self) -> None:
        """LLM deltas -> reply text (sent as partial answers) and speakable segments for _speak."""
        segmenter = Segmenter()
        stream = self._llm.stream(self._messages)
        self._metrics.llm_streams.inc()
        try:
            async for delta in stream:
                if not self.text:  # the first token
                    self.times.llm_first_token_s = stream.first_token_s
                    if stream.first_token_s is not None:
                        self._metrics.llm_first_token.observe(stream.first_token_s)
                self.text += delta
                for segment in segmenter.push(delta):
                    self._segments.put_nowait(segment)
                if self.confirmed:
                    await self._send_partial()
            for segment in segmenter.flush():
                self._segments.put_nowait(segment)
        except LLMError as error:
            self.error = error
            await self._report(error)
        finally:
            self._segments.put_nowait(None)
            await stream.aclose()
            self._metrics.llm_streams.dec()

    async def _send_partial(self) -> None:
        await self._send_text(server_message("partial_assistant_answer", content=self.text, turn_id=self.turn_id))

    async def _speak(self) -> None:
        seq = 0
        while (text := await self._segments.get()) is not None:
            segment = SpokenSegment(text, self.samples_sent, self.samples_sent)
            self.spoken.append(segment)
            try:
                stream = self._tts.stream(text, self._params)
            except TTSError as error:
                await self._report(error)
                continue
            try:
                async for chunk in stream:
                    if self.times.tts_first_chunk_s is None:
                        self.times.tts_first_chunk_s = stream.first_chunk_s
                        if stream.first_chunk_s is not None:
                            self._metrics.tts_first_chunk.observe(stream.first_chunk_s)
                    if not self.confirmed:  # speculative: hold the audio until the turn is confirmed
                        await self._confirmed.wait()
                        await self._send_partial()
                    await self._send_bytes(encode_audio_frame(self.turn_id, seq, chunk))
                    if self.times.first_audio_sent is None:
                        self.times.first_audio_sent = time.monotonic()
                        self._audio_started.set()
                    seq += 1
                    self.samples_sent += len(chunk)
                    segment.end_sample = self.samples_sent
                    self._on_audio_sent(len(chunk))
            except TTSError as error:
                await self._report(error)
            finally:
                await stream.aclose()
        await self._confirmed.wait()  # a speculative reply with no audio still waits to be confirmed

    async def _report(self, error: Exception) -> None:
        code = getattr(error, "code", "internal")
        if self.confirmed:
            self._metrics.errors.labels(code).inc()
            await self._send_text(error_message(code, str(error)))
        else:
            self._unreported.append(error)


def audio_seconds(samples: int) -> float:
    return samples / OUTPUT_SAMPLE_RATE
