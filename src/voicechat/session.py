"""One conversation over one WebSocket: listening, thinking, speaking, barge-in, history.

Three tasks per connection: the receive loop (decodes messages, never waits on a model), the audio
task (feeds the speech-input Listener from a bounded queue) and, while the assistant answers, one
Reply. Everything the conversation owns lives here and is released in :meth:`Session.run`'s finally.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicechat import protocol as p
from voicechat.bargein import BargeInPolicy, words
from voicechat.config import Settings
from voicechat.llm import LLM, History
from voicechat.metrics import Metrics
from voicechat.reply import Reply
from voicechat.stt.listener import Listener, SpeechEvent, SpeechModels
from voicechat.tts.engine import TTSEngine, TTSParams

log = logging.getLogger(__name__)

AUDIO_QUEUE_FRAMES = 256  # frames waiting for the Listener; more means the client floods us
BURST_ALLOWANCE_S = 10.0  # how far audio may run ahead of the wall clock before frames are dropped
ERROR_REPEAT_S = 2.0  # the same error code is sent at most this often
MAX_BAD_MESSAGES = 50  # a client that sends this many malformed messages is disconnected
PLAYBACK_SLACK_S = 0.5  # after the estimated end of playback, the assistant counts as silent


@dataclass
class Services:
    """What every conversation shares: the models, the LLM client, the settings, the metrics."""

    settings: Settings
    tts: TTSEngine
    speech: SpeechModels
    llm: LLM
    metrics: Metrics


@dataclass
class ConversationSettings:
    speed: int
    voice: str
    exaggeration: float
    cfg_weight: float
    temperature: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationSettings:
        return cls(
            speed=settings.speed,
            voice="default",
            exaggeration=settings.exaggeration,
            cfg_weight=settings.cfg_weight,
            temperature=settings.temperature,
        )


def _normalise(text: str) -> str:
    return " ".join(words(text))


class Session:
    def __init__(self, websocket: WebSocket, services: Services) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.ws = websocket
        self.services = services
        self.settings = ConversationSettings.from_settings(services.settings)
        self.history = History(services.settings.effective_system_prompt(), services.settings.history_max_chars)
        self.policy = BargeInPolicy()
        self.listener: Listener | None = None
        self.reply: Reply | None = None  # the current (possibly speculative) assistant turn
        self._unclosed: Reply | None = None  # a finished reply whose history entry waits for playback
        self._speculative_text = ""
        self._next_turn_id = 1
        self._played: dict[int, int] = {}  # turn id -> samples the client reports as played
        self._client_playing = False
        self._playback_end = 0.0  # monotonic estimate of when the client finishes playing
        self._audio: asyncio.Queue[p.AudioFrame] = asyncio.Queue(AUDIO_QUEUE_FRAMES)
        self._audio_s = 0.0
        self._audio_clock_start: float | None = None
        self._sample_rate = 16000
        self._send_lock = asyncio.Lock()
        self._last_error_at: dict[str, float] = {}
        self._bad_messages = 0
        self._state = ""
        self._turn_end_at: float | None = None
        self._turn_event: SpeechEvent | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # follow-ups of confirmed replies

    # --- sending ---------------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            await self.ws.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def send_error(self, code: str, message: str, *, fatal: bool = False) -> None:
        now = time.monotonic()
        if not fatal and now - self._last_error_at.get(code, -1e9) < ERROR_REPEAT_S:
            return  # a flood of the same mistake gets one answer every few seconds
        self._last_error_at[code] = now
        self.services.metrics.errors.labels(code).inc()
        await self.send_text(p.error_message(code, message, fatal=fatal))

    async def set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            await self.send_text(p.server_message("status", state=state))

    # --- main loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the conversation until the client leaves; always releases everything it started."""
        audio_task: asyncio.Task[None] | None = None
        try:
            hello = await self._handshake()
            if hello is None:
                return
            self._sample_rate = hello.sample_rate
            self.listener = Listener(
                self.services.speech,
                speed=self.settings.speed,
                max_utterance_s=self.services.settings.max_utterance_s,
                sample_rate=hello.sample_rate,
            )
            audio_task = asyncio.create_task(self._audio_loop(), name=f"audio-{self.id}")
            await self.set_state("listening")
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            if audio_task is not None:
                audio_task.cancel()
                await asyncio.gather(audio_task, return_exceptions=True)
            if self.reply is not None:
                await self.reply.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.listener is not None:
                await self.listener.aclose()
            log.info("session %s closed", self.id)

    async def _handshake(self) -> p.Hello | None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            if text is None:
                await self.send_error("hello_required", "send a hello message before audio")
                continue
            try:
                parsed = p.parse_client_message(text)
            except p.ProtocolError as error:
                await self.send_error(error.code, error.message)
                continue
            if not isinstance(parsed, p.Hello):
                await self.send_error("hello_required", f"the first message must be hello, not {parsed.type}")
                continue
            if parsed.protocol != p.PROTOCOL_VERSION:
                await self.send_error(
                    "bad_message",
                    f"this server speaks protocol {p.PROTOCOL_VERSION}, the client {parsed.protocol}",
                    fatal=True,
                )
                await self.ws.close(p.CLOSE_POLICY)
                return None
            await self.send_text(
                p.server_message(
                    "hello",
                    protocol=p.PROTOCOL_VERSION,
                    session_id=self.id,
                    input_sample_rate=parsed.sample_rate,
                    output_sample_rate=p.OUTPUT_SAMPLE_RATE,
                    settings=dataclasses.asdict(self.settings),
                    voices=self.services.tts.voices(),
                )
            )
            return parsed

    async def _receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            try:
                if message.get("bytes") is not None:
                    self._accept_audio(message["bytes"])
                elif message.get("text") is not None:
                    await self._handle(p.parse_client_message(message["text"]))
            except p.ProtocolError as error:
                self._bad_messages += 1
                if self._bad_messages >= MAX_BAD_MESSAGES:
                    await self.send_error(error.code, "too many malformed messages; closing", fatal=True)
                    await self.ws.close(p.CLOSE_POLICY)
                    return
                await self.send_error(error.code, error.message)

    # --- audio in --------------------------------------------------------------------------------

    def _accept_audio(self, data: bytes) -> None:
        frame = p.decode_audio_frame(data, max_bytes=self.services.settings.max_frame_bytes)
        now = time.monotonic()
        if self._audio_clock_start is None:
            self._audio_clock_start = now
        ahead = self._audio_s - (now - self._audio_clock_start)
        if ahead > BURST_ALLOWANCE_S or self._audio.full():
            raise p.ProtocolError("rate_limited", "audio is arriving faster than real time; frames dropped")
        self._audio_s += len(frame.pcm) / self._sample_rate
        self._audio.put_nowait(frame)

    async def _audio_loop(self) -> None:
        assert self.listener is not None
        while True:
            frame = await self._audio.get()
            self._client_playing = frame.client_playing
            try:
                events = await self.listener.feed(frame.pcm)
            except ValueError as error:
                await self.send_error("bad_audio_header", str(error))
                continue
            for event in events:
                try:
                    await self._on_speech(event)
                except Exception:  # noqa: BLE001 - one bad event must not end the conversation
                    log.exception("session %s: speech event %s failed", self.id, event.type)
                    await self.send_error("internal", "the server failed to handle your speech")

    # --- assistant state -------------------------------------------------------------------------

    def _assistant_active(self) -> bool:
        """The assistant is thinking (confirmed) or speaking, or its audio is still playing."""
        if self.reply is not None and self.reply.confirmed and self.reply.running:
            return True
        return self._client_playing or time.monotonic() < self._playback_end + PLAYBACK_SLACK_S

    def _assistant_text(self) -> str:
        reply = self.reply if self.reply is not None and self.reply.confirmed else self._unclosed
        return reply.text if reply is not None else ""

    def _on_audio_sent(self, samples: int) -> None:
        now = time.monotonic()
        self._playback_end = max(self._playback_end, now) + samples / p.OUTPUT_SAMPLE_RATE

    # --- speech events ---------------------------------------------------------------------------

    async def _on_speech(self, event: SpeechEvent) -> None:
        active = self._assistant_active()
        if active and event.type in ("partial", "turn_end"):
            if not self.policy.should_interrupt(
                event.text, event.speech_s, self._assistant_text(), client_playing=self._client_playing
            ):
                return  # echo, a cough or a backchannel: the assistant keeps talking
            await self.interrupt(barge_in=True)
            active = False
        if active:
            return
        if event.type == "speech_started":
            if self.reply is not None and not self.reply.confirmed:
                await self._drop_speculation()  # the user goes on talking
            await self.set_state("hearing")
        elif event.type == "partial":
            await self.send_text(p.server_message("partial_user_request", content=event.text))
        elif event.type == "turn_probably_complete":
            await self._speculate(event.text)
        elif event.type == "turn_end":
            await self._end_user_turn(event)

    async def _speculate(self, text: str) -> None:
        if not text.strip():
            return
        if self.reply is not None and not self.reply.confirmed:
            if _normalise(text) == _normalise(self._speculative_text):
                return
            await self._drop_speculation()
        self._speculative_text = text
        self.reply = self._new_reply(text, confirmed=False)

    async def _drop_speculation(self) -> None:
        if self.reply is not None and not self.reply.confirmed:
            await self.reply.cancel()
            self.reply = None

    async def _end_user_turn(self, event: SpeechEvent) -> None:
        text = event.text.strip()
        if not text:
            await self._drop_speculation()
            await self.set_state("listening")
            return
        self._turn_event = event
        self._turn_end_at = time.monotonic()
        if event.stt_ms is not None:
            self.services.metrics.stt.observe(event.stt_ms / 1000)
        await self.start_turn(text, spoken=True)

    async def start_turn(self, text: str, *, spoken: bool) -> None:
        """The user's turn is final: confirm the matching speculation or start a new reply."""
        if not spoken:
            self._turn_event = None
            self._turn_end_at = time.monotonic()
        self._close_unclosed()
        reply = self.reply
        if reply is None or reply.confirmed or _normalise(text) != _normalise(self._speculative_text):
            await self._drop_speculation()
            reply = self.reply = self._new_reply(text, confirmed=False)
        self.history.add_user(text)
        await self.send_text(p.server_message("final_user_request", content=text, turn_id=reply.turn_id))
        await self.set_state("thinking")
        reply.confirm()
        self.services.metrics.turns.inc()
        task = asyncio.create_task(self._follow(reply), name=f"follow-{reply.turn_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_reply(self, text: str, *, confirmed: bool) -> Reply:
        turn_id = self._next_turn_id
        self._next_turn_id += 1
        messages = [*self.history.messages(), {"role": "user", "content": text}]
        reply = Reply(
            turn_id,
            messages=messages,
            llm=self.services.llm,
            tts=self.services.tts,
            params=TTSParams(
                voice=self.settings.voice,
                exaggeration=self.settings.exaggeration,
                cfg_weight=self.settings.cfg_weight,
                temperature=self.settings.temperature,
                chunk_size=self.services.settings.chunk_size,
            ),
            send_text=self.send_text,
            send_bytes=self.send_bytes,
            metrics=self.services.metrics,
            on_audio_sent=self._on_audio_sent,
        )
        reply.start(confirmed=confirmed)
        return reply

    async def _follow(self, reply: Reply) -> None:
        """Status, metrics and the final answer of a confirmed reply, as it progresses."""
        try:
            await reply.wait_audio_or_end()
            if reply.has_audio and self.reply is reply:
                await self.set_state("speaking")
                await self._send_metrics(reply)
            await reply.wait()
            if self.reply is not reply or not reply.finished:
                return  # cancelled: interrupt() has told the client
            self.reply = None
            self._unclosed = reply
            await self.send_text(
                p.server_message(
                    "final_assistant_answer", content=reply.text.strip(), turn_id=reply.turn_id, interrupted=False
                )
            )
            if not reply.has_audio:
                await self._send_metrics(reply)
            # Speaking lasts until the client has played the audio; then we listen again.
            while self.reply is None and self._assistant_active():
                await asyncio.sleep(max(0.05, self._playback_end + PLAYBACK_SLACK_S - time.monotonic()))
            if self.reply is None:
                await self.set_state("listening")
        except Exception:  # noqa: BLE001
            log.exception("session %s: follow-up of turn %s failed", self.id, reply.turn_id)

    async def _send_metrics(self, reply: Reply) -> None:
        times = reply.times
        event = self._turn_event
        endpointing_ms = None
        stt_ms = None
        if event is not None and event.end_of_speech_s is not None:
            endpointing_ms = max(0.0, (event.time_s - event.end_of_speech_s) * 1000)
            stt_ms = event.stt_ms
        first_audio_ms = None
        if times.first_audio_sent is not None and self._turn_end_at is not None:
            after_turn_end = max(0.0, times.first_audio_sent - self._turn_end_at) * 1000
            first_audio_ms = (endpointing_ms or 0.0) + (stt_ms or 0.0) + after_turn_end
            self.services.metrics.first_audio.observe(first_audio_ms / 1000)

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 1)

        await self.send_text(
            p.server_message(
                "turn_metrics",
                turn_id=reply.turn_id,
                endpointing_ms=None if endpointing_ms is None else round(endpointing_ms, 1),
                stt_ms=None if stt_ms is None else round(stt_ms, 1),
                llm_first_token_ms=ms(times.llm_first_token_s),
                tts_first_chunk_ms=ms(times.tts_first_chunk_s),
                first_audio_ms=None if first_audio_ms is None else round(first_audio_ms, 1),
            )
        )

    def _close_unclosed(self) -> None:
        """Write the previous reply into the history: all of it, or what was heard of it."""
        reply, self._unclosed = self._unclosed, None
        if reply is None:
            return
        played = self._played.get(reply.turn_id)
        if played is not None and reply.has_audio and played < reply.samples_sent:
            self.history.add_assistant(reply.heard_text(played), interrupted=True)
        elif reply.text.strip():
            self.history.add_assistant(reply.text.strip())

    async def interrupt(self, *, barge_in: bool) -> None:
        """Cancel the assistant's turn: LLM, TTS and the client's playback of it; keep what was heard."""
        if self.reply is not None and self.reply.confirmed:
            reply = self.reply
        elif self._assistant_active():
            reply = self._unclosed  # generated in full, still playing
        else:
            reply = None
            self._close_unclosed()  # played in full: nothing to stop
        if self.reply is not None:
            await self.reply.cancel()
            self.reply = None
        self._unclosed = None
        self._playback_end = 0.0
        if reply is None:
            return
        if barge_in:
            self.services.metrics.barge_ins.inc()
            await self.send_text(p.server_message("tts_interruption", turn_id=reply.turn_id))
        await self.send_text(p.server_message("stop_tts", turn_id=reply.turn_id))
        heard = reply.heard_text(self._played.get(reply.turn_id, 0)) if reply.has_audio else ""
        if heard or reply.has_audio:
            self.history.add_assistant(heard, interrupted=True)
        await self.send_text(
            p.server_message("final_assistant_answer", content=heard, turn_id=reply.turn_id, interrupted=True)
        )
        await self.set_state("interrupted")

    # --- client messages -------------------------------------------------------------------------

    async def _handle(self, message: p.ClientMessage) -> None:
        match message:
            case p.Hello():
                raise p.ProtocolError("bad_message", "hello was already received")
            case p.TtsStart():
                self._client_playing = True
            case p.Playback(turn_id=turn_id, played_samples=played):
                self._played[turn_id] = played
            case p.TtsStop(turn_id=turn_id, played_samples=played):
                self._played[turn_id] = played
                self._client_playing = False
                if self.reply is None or self.reply.turn_id != turn_id:
                    self._playback_end = 0.0
            case p.ClearHistory():
                await self.interrupt(barge_in=False)
                await self._drop_speculation()
                self.history.clear()
                if self.listener is not None:
                    self.listener.reset()
                await self.send_text(p.server_message("history_cleared"))
                await self.set_state("listening")
            case p.SetSpeed(speed=speed):
                await self._apply_settings(p.SettingsPatch(speed=speed))
            case p.SetSettings(settings=patch):
                await self._apply_settings(patch)
            case p.TextMessage(content=text):
                if self._assistant_active():
                    await self.interrupt(barge_in=False)
                await self._drop_speculation()
                await self.send_text(p.server_message("partial_user_request", content=text))
                await self.start_turn(text, spoken=False)
            case p.Interrupt():
                await self.interrupt(barge_in=False)
                await self.set_state("listening")

    async def _apply_settings(self, patch: p.SettingsPatch) -> None:
        changes = patch.model_dump(exclude_none=True)
        if "voice" in changes and changes["voice"] not in self.services.tts.voices():
            raise p.ProtocolError("unknown_voice", f"no voice named {changes['voice']!r}")
        for name, value in changes.items():
            setattr(self.settings, name, value)
        if "speed" in changes and self.listener is not None:
            self.listener.set_speed(changes["speed"])
        await self.send_text(p.server_message("settings", settings=dataclasses.asdict(self.settings)))
