"""One conversation over one WebSocket: listening, thinking, speaking, barge-in, history.

The life of a turn:
- the Listener hears speech (``speech_started``: status ``hearing``) and may guess the user is done
  (``turn_probably_complete``): a speculative Reply starts, sending nothing;
- ``turn_end`` (or a ``text_message``) makes the turn final: the matching speculation is confirmed, or
  dropped for a new Reply; the user's words enter the history; status ``thinking``;
- the Reply sends partial answers and audio (status ``speaking`` and ``turn_metrics`` at its first
  chunk), then ``tts_end`` and ``final_assistant_answer`` once all is generated;
- it ends *played* once ClientPlayback says the client is silent, or *interrupted* by barge-in,
  ``interrupt``, ``clear_history``, a typed message or a disconnect; either way :meth:`Session._close`
  writes what the user heard of it into the history (``Reply.heard_text``), and status is ``listening``.

Three tasks per connection besides the replies: the receive loop (decodes messages, never waits on a
model), the audio task (hands the Listener all audio waiting, never waiting for a turn decision) and the
speech task (acts on the Listener's events). A backlog because the server is slow is the server's own
(inbox.py): it is never refused nor counted against the client; silence is shed first and the client is
told ``server_busy`` once. Every message goes out through :meth:`Session.send`. Everything the
conversation owns is released in :meth:`Session.run`'s finally.

Resume (resume.py): the server's hello carries a ``resume_token``. A session that ends parks its
conversation (history, settings and voice, the next turn id; a reply in flight is cut at what the client
reported as played) for ``resume_grace_s``; a later hello with ``resume: {session_id, token}`` gets it
back, and a conversation still held on a dead socket is handed over at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicechat import protocol as p
from voicechat.bargein import BargeInPolicy, words
from voicechat.config import Settings
from voicechat.echo import EchoGate, EchoReference
from voicechat.inbox import AudioInbox
from voicechat.llm import LLM, History
from voicechat.metrics import Metrics
from voicechat.playback import ClientPlayback, Clock, MonotonicClock
from voicechat.reply import Outlet, Reply
from voicechat.resume import ResumeStore, new_token
from voicechat.stt.listener import Listener, SpeechEvent, SpeechModels
from voicechat.tts.engine import TTSEngine, TTSParams

log = logging.getLogger(__name__)

BURST_ALLOWANCE_S = 10.0  # how far audio may run ahead of the wall clock before frames are dropped
ERROR_REPEAT_S = 2.0  # the same error code is sent at most this often
MAX_BAD_MESSAGES = 50  # a client that sends this many malformed messages is disconnected
NOT_STRIKES = frozenset({"rate_limited"})  # refused, but not malformed: never counted towards closing
BUSY_MESSAGE = "the server is running behind; what you say is kept and will be answered"
LISTENER_BACKLOG_S = 4.0  # audio taken in while a turn decision waits; more waits in the inbox, which sheds
RESUME_FAILED = (
    "the conversation could not be resumed (it ended more than {grace:g} s ago, or is unknown); "
    "this is a fresh one"
)


@dataclass
class Services:
    """What every conversation shares: the models, the LLM client, the settings, the metrics."""

    settings: Settings
    tts: TTSEngine
    speech: SpeechModels
    llm: LLM
    metrics: Metrics
    resumes: ResumeStore | None = field(default=None)  # None: conversations are never resumed


@dataclass
class Parked:
    """What a conversation is, without its connection: what a resume gives back."""

    history: History
    settings: p.ConversationSettings
    next_turn_id: int


MakeListener = Callable[[SpeechModels, p.Hello, int, float], Listener]  # models, hello, speed, max utterance


def real_listener(models: SpeechModels, hello: p.Hello, speed: int, max_utterance_s: float) -> Listener:
    return Listener(models, speed=speed, max_utterance_s=max_utterance_s, sample_rate=hello.sample_rate)


async def receive_hello(ws: WebSocket, send: Callable[[p.ServerMessage], Awaitable[None]]) -> p.Hello | None:
    """Wait for the client's hello, answering anything else with an error; None if the client leaves
    (or speaks another protocol version: then the socket is closed)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            await send(p.Error(code="hello_required", message="send a hello message before audio"))
            continue
        try:
            parsed = p.parse_client_message(text)
        except p.ProtocolError as error:
            await send(p.Error(code=error.code, message=error.message))
            continue
        if not isinstance(parsed, p.Hello):
            await send(p.Error(code="hello_required", message=f"the first message must be hello, not {parsed.type}"))
            continue
        if parsed.protocol != p.PROTOCOL_VERSION:
            wrong = f"this server speaks protocol {p.PROTOCOL_VERSION}, the client {parsed.protocol}"
            await send(p.Error(code="bad_message", message=wrong, fatal=True))
            await ws.close(p.CLOSE_POLICY)
            return None
        return parsed


class AudioIntake:
    """Client audio on its way to the Listener. Audio far ahead of real time is the client's doing and
    is refused (``rate_limited``, not a strike); a backlog because the server is slow is not: the inbox
    keeps it."""

    def __init__(self, clock: Clock, sample_rate: int = 16000) -> None:
        self.inbox = AudioInbox(sample_rate)
        self._clock = clock
        self._seconds = 0.0
        self._started_at: float | None = None

    def accept(self, frame: p.AudioFrame) -> bool:
        """Queue the frame; True when the client should now be told the server is busy (once an episode)."""
        now = self._clock.now()
        if self._started_at is None:
            self._started_at = now
        if self._seconds - (now - self._started_at) > BURST_ALLOWANCE_S:
            raise p.ProtocolError("rate_limited", "audio is arriving faster than real time; frames dropped")
        self._seconds += len(frame.pcm) / self.inbox.sample_rate
        return self.inbox.put(frame.pcm, frame.client_playing)


def _same_words(a: str, b: str) -> bool:
    return words(a) == words(b)


class Session:
    def __init__(
        self,
        websocket: WebSocket,
        services: Services,
        *,
        clock: Clock | None = None,
        make_listener: MakeListener = real_listener,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.ws = websocket
        self.services = services
        config = services.settings
        voice_free = set(p.ConversationSettings.model_fields) - {"voice"}  # Settings.voice is a file, not a name
        self.settings = p.ConversationSettings(**config.model_dump(include=voice_free))
        self.history = History(config.effective_system_prompt(), config.history_max_chars)
        self.policy = BargeInPolicy()
        self.clock = clock or MonotonicClock()
        self.playback = ClientPlayback(self.clock)
        self.echo = EchoReference(rate=p.OUTPUT_SAMPLE_RATE)  # what was sent and played, for the echo gate
        self._held: int | None = None  # the turn whose playback the client holds (tts_pause) until told
        self._held_words = False  # real words were heard during the hold: a pause does not resume it
        self._echo_gate: EchoGate | None = None
        self.listener: Listener | None = None
        self.reply: Reply | None = None  # the current assistant turn (speculative until confirmed)
        self._make_listener = make_listener
        self._next_turn_id = 1
        self._audio = AudioIntake(self.clock)
        self._send_lock = asyncio.Lock()
        self._last_error_at: dict[str, float] = {}
        self._bad_messages = 0
        self._state: p.State | None = None
        self.resume_token = new_token()
        self._greeted = False  # the server's hello was sent: there is a conversation to resume
        self._handed_over = asyncio.Event()  # another connection resumed this conversation

    # --- sending: the one way out ----------------------------------------------------------------

    async def send(self, message: p.ServerMessage) -> None:
        if isinstance(message, p.Error):
            self.services.metrics.errors.labels(message.code).inc()
        await self._send(p.encode(message))

    async def _tell_mistake(self, code: str, message: str) -> None:
        """A problem with what the client sent: a flood of the same one gets one answer every few
        seconds. (A reply's own failure goes through send: each failed turn needs its answer.)"""
        now = self.clock.now()
        if now - self._last_error_at.get(code, -1e9) < ERROR_REPEAT_S:
            return
        self._last_error_at[code] = now
        await self.send(p.Error(code=code, message=message))

    async def _send_audio(self, turn_id: int, seq: int, pcm: np.ndarray) -> None:
        self.echo.sent(pcm, turn_id)
        await self._send(p.encode_audio_frame(turn_id, seq, pcm))

    async def _send(self, data: str | bytes) -> None:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            await (self.ws.send_text(data) if isinstance(data, str) else self.ws.send_bytes(data))

    async def set_state(self, state: p.State) -> None:
        if state != self._state:
            self._state = state
            await self.send(p.Status(state=state))

    # --- main loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the conversation until the client leaves; always releases everything it started."""
        tasks: list[asyncio.Task[None]] = []
        try:
            hello = await receive_hello(self.ws, self.send)
            if hello is None:
                return
            resumed = await self._resume(hello.resume)
            resumes = self.services.resumes
            await self.send(
                p.ServerHello(
                    session_id=self.id,
                    input_sample_rate=hello.sample_rate,
                    settings=self.settings,
                    voices=self.services.tts.voices(),
                    resume_token=self.resume_token if resumes is not None else None,
                    resumed=resumed,
                )
            )
            self._greeted = True
            if resumes is not None:
                resumes.live(self.id, self.resume_token, self._hand_over)
            if hello.resume is not None and not resumed:
                grace = resumes.grace_s if resumes is not None else 0
                await self.send(p.Error(code="resume_failed", message=RESUME_FAILED.format(grace=grace)))
            self._audio = AudioIntake(self.clock, hello.sample_rate)
            self.listener = self._make_listener(
                self.services.speech, hello, self.settings.speed, self.services.settings.max_utterance_s
            )
            self._echo_gate = self.listener.echo_gate = EchoGate(self.echo, mic_rate=hello.sample_rate)
            tasks = [
                asyncio.create_task(self._audio_loop(), name=f"audio-{self.id}"),
                asyncio.create_task(self._speech_loop(), name=f"speech-{self.id}"),
            ]
            await self.set_state("listening")
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_reply()
            if self.listener is not None:
                await self.listener.aclose()
            self._park()
            log.info("session %s closed", self.id)

    # --- resume ----------------------------------------------------------------------------------

    async def _resume(self, request: p.ResumeRequest | None) -> bool:
        """Take back the conversation the hello asks for; False (a fresh one) if it cannot be had."""
        resumes = self.services.resumes
        if request is None or resumes is None:
            return False
        parked = await resumes.take(request.session_id, request.token)
        if not isinstance(parked, Parked):
            log.info("session %s: resume of %s refused (unknown, expired or wrong token)", self.id, request.session_id[:12])
            return False
        self.id = request.session_id
        self.history, self.settings, self._next_turn_id = parked.history, parked.settings, parked.next_turn_id
        log.info("session %s resumed", self.id)
        return True

    def _parked(self) -> Parked:
        return Parked(self.history, self.settings, self._next_turn_id)

    async def _hand_over(self) -> Parked:
        """Another connection resumes this conversation: stop the reply (what was heard stays in the
        history), give the conversation to it and end this connection."""
        self._handed_over.set()
        await self._stop_reply()
        parked = self._parked()
        self.history = History(self.history.system_prompt, self.history.max_chars)  # this one keeps nothing
        return parked

    def _park(self) -> None:
        resumes = self.services.resumes
        if resumes is None or not self._greeted or self._handed_over.is_set():
            return
        resumes.gone(self.id)
        if not self._ended_by_server():
            resumes.park(self.id, self.resume_token, self._parked())

    def _ended_by_server(self) -> bool:
        """The server ended this conversation for a limit (idle, too long, abuse): it is not resumable.
        (A client that stopped reading may be on a bad network: it may resume.)"""
        ending = getattr(self.ws, "ending", None)  # set by GuardedSocket (app.py)
        return ending is not None and ending.code != "send_timeout"

    async def _receive(self) -> dict[str, Any]:
        """The next message from the client, or a disconnect once another connection took over."""
        receiving = asyncio.ensure_future(self.ws.receive())
        handed_over = asyncio.ensure_future(self._handed_over.wait())
        try:
            await asyncio.wait({receiving, handed_over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            handed_over.cancel()
            if not receiving.done():
                receiving.cancel()
        if self._handed_over.is_set() or receiving.cancelled():
            return {"type": "websocket.disconnect", "code": 1000}
        return receiving.result()

    async def _receive_loop(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            try:
                if message.get("bytes") is not None:
                    frame = p.decode_audio_frame(message["bytes"], max_bytes=self.services.settings.max_frame_bytes)
                    if self._audio.accept(frame):
                        await self._say_busy()
                    if self._echo_gate is not None:
                        self._echo_gate.arrived(len(frame.pcm))  # where playback was as this audio came in
                elif message.get("text") is not None:
                    await self._handle(p.parse_client_message(message["text"]))
            except p.ProtocolError as error:
                if error.code not in NOT_STRIKES:
                    self._bad_messages += 1
                if self._bad_messages >= MAX_BAD_MESSAGES:
                    await self.send(p.Error(code=error.code, message="too many malformed messages; closing", fatal=True))
                    await self.ws.close(p.CLOSE_POLICY)
                    return
                await self._tell_mistake(error.code, error.message)

    # --- audio in --------------------------------------------------------------------------------

    async def _say_busy(self) -> None:
        inbox = self._audio.inbox
        log.info("session %s: the listener is %.1f s behind; silence is shed", self.id, inbox.backlog_s)
        await self.send(p.Error(code="server_busy", message=BUSY_MESSAGE))

    async def _audio_loop(self) -> None:
        """All audio waiting goes to the Listener in one piece; a turn decision never holds this up."""
        assert self.listener is not None
        while True:
            await self.listener.walked_to(LISTENER_BACKLOG_S)  # a decision waiting long: the inbox sheds
            pcm, playing = await self._audio.inbox.get()
            self.playback.uplink_playing = playing
            await self.listener.push(pcm)  # decoded frames are always int16 mono: no ValueError here

    async def _speech_loop(self) -> None:
        assert self.listener is not None
        while True:
            for event in await self.listener.next_events():
                try:
                    await self._on_speech(event)
                except WebSocketDisconnect as gone:  # an ordinary end: the receive loop ends the session
                    log.info("session %s: the client left while its speech was answered (close code %s)", self.id, gone.code)
                    return
                except Exception:  # noqa: BLE001 - one bad event must not end the conversation
                    log.exception("session %s: speech event %s failed", self.id, event.type)
                    await self._tell_mistake("internal", "the server failed to handle your speech")

    # --- speech events ---------------------------------------------------------------------------

    def _assistant_audible(self) -> bool:
        return self.reply is not None and self.reply.confirmed and self.reply.audible

    async def _on_speech(self, event: SpeechEvent) -> None:
        if self._assistant_audible():
            assert self.reply is not None
            if event.type == "speech_started":
                await self._hold(self.reply.turn_id)  # at voice onset: the user may be interrupting
                return
            if event.type == "partial" and self.policy.real_words(
                event.text, self.reply.text, client_playing=self.playback.uplink_playing
            ):
                self._held_words = True  # they may interrupt once there is voice enough: hold on
            if event.type == "speech_paused":
                if not self._held_words:  # the voice stopped without real words (LiveKit's false interruption)
                    await self._release(self.reply.turn_id)
                return
            if event.type not in ("partial", "turn_end") or not self.policy.should_interrupt(
                event.text, event.speech_s, self.reply.text, client_playing=self.playback.uplink_playing
            ):
                if event.type == "turn_end":
                    await self._release(self.reply.turn_id)  # a cough or a backchannel: play on
                return  # the assistant keeps talking
            await self.interrupt(barge_in=True)
        if event.type == "speech_started":
            await self._drop_speculation()  # the user goes on talking
            await self.set_state("hearing")
        elif event.type == "partial":
            await self.send(p.PartialUserRequest(content=event.text))
        elif event.type == "turn_probably_complete" and event.text.strip():
            await self._stop_reply(keep_speculation=True)  # a reply played out is in the history first
            speculation = self.reply if self.reply is not None and not self.reply.confirmed else None
            if speculation is None or not _same_words(speculation.user_text, event.text):
                await self._drop_speculation()
                self.reply = self._new_reply(event.text, event)
        elif event.type == "turn_end":
            if not event.text.strip():
                await self._drop_speculation()
                await self.set_state("listening")
                return
            if event.stt_ms is not None:
                self.services.metrics.stt.observe(event.stt_ms / 1000)
            await self.start_turn(event.text.strip(), event)

    async def _hold(self, turn_id: int) -> None:
        """Voice started over the assistant (the echo gate let it through, so it is not its own voice):
        the client holds playback at once, keeping the audio, until words decide (stop or resume)."""
        if self._held != turn_id:
            self._held = turn_id
            self._held_words = False
            self.echo.hold()
            await self.send(p.TtsPause(turn_id=turn_id))

    async def _release(self, turn_id: int) -> None:
        if self._held == turn_id:
            self._held = None
            self.echo.resume()
            await self.send(p.TtsResume(turn_id=turn_id))

    async def _drop_speculation(self) -> None:
        if self.reply is not None and not self.reply.confirmed:
            await self.reply.cancel()
            self.reply = None

    async def start_turn(self, text: str, event: SpeechEvent | None) -> None:
        """The user's turn is final: confirm the matching speculation or start a new reply."""
        await self._stop_reply(keep_speculation=True)
        reply = self.reply
        if reply is None or not _same_words(reply.user_text, text):
            await self._drop_speculation()
            reply = self.reply = self._new_reply(text, event)
        self.history.add_user(text)
        await self.send(p.FinalUserRequest(content=text, turn_id=reply.turn_id))
        await self.set_state("thinking")
        reply.confirm(event)
        self.services.metrics.turns.inc()

    def _new_reply(self, text: str, event: SpeechEvent | None) -> Reply:
        turn_id, self._next_turn_id = self._next_turn_id, self._next_turn_id + 1
        voice = self.settings.model_dump(exclude={"speed"})
        return Reply(
            turn_id,
            text,
            event=event,
            messages=self.history.messages_with_user(text),
            llm=self.services.llm,
            tts=self.services.tts,
            params=TTSParams.from_settings(self.services.settings, **voice),
            outlet=Outlet(send=self.send, send_audio=self._send_audio, on_state=self._on_reply_state),
            playback=self.playback,
            metrics=self.services.metrics,
            clock=self.clock,
        )

    async def _on_reply_state(self, reply: Reply) -> None:
        """What the client is told as a confirmed reply moves on (it runs in the reply's own task)."""
        if reply.state == "speaking":
            await self.set_state("speaking")
            await self._send_metrics(reply)
        elif reply.state == "generated":
            await self.send(p.FinalAssistantAnswer(content=reply.text.strip(), turn_id=reply.turn_id, interrupted=False))
            if reply.samples_sent == 0:
                await self._send_metrics(reply)
        elif reply.state == "played" and self.reply is reply:
            self._close(reply)
            self.reply = None
            await self._release(reply.turn_id)  # a client that never reported may still hold it
            await self.set_state("listening")

    async def _send_metrics(self, reply: Reply) -> None:
        message = reply.metrics_message()
        if message.first_audio_ms is not None:
            self.services.metrics.first_audio.observe(message.first_audio_ms / 1000)
        await self.send(message)

    def _close(self, reply: Reply) -> str:
        """The one place a reply enters the history: what the user heard of it (returned)."""
        heard = reply.heard_text()
        self.history.add_assistant(heard, interrupted=reply.state == "interrupted" or heard != reply.text.strip())
        self.playback.forget(reply.turn_id)
        return heard

    async def _stop_reply(self, *, keep_speculation: bool = False) -> tuple[Reply, str] | None:
        """End the current turn now; returns it and what was heard of it if the user was hearing it."""
        reply = self.reply
        if reply is None or (keep_speculation and not reply.confirmed):
            return None
        self.reply = None
        if self._held == reply.turn_id:
            self._held = None  # a held turn is stopped, not resumed
        audible = reply.audible
        await reply.cancel()
        heard = self._close(reply) if reply.confirmed else ""
        return (reply, heard) if audible else None

    async def interrupt(self, *, barge_in: bool) -> None:
        """Cancel the assistant's turn: LLM, TTS and the client's playback of it; keep what was heard."""
        stopped = await self._stop_reply()
        if stopped is None:
            return
        reply, heard = stopped
        if barge_in:
            self.services.metrics.barge_ins.inc()
            await self.send(p.TtsInterruption(turn_id=reply.turn_id))
        await self.send(p.StopTts(turn_id=reply.turn_id))
        await self.send(p.FinalAssistantAnswer(content=heard, turn_id=reply.turn_id, interrupted=True))
        await self.set_state("interrupted")

    # --- client messages -------------------------------------------------------------------------

    async def _handle(self, message: p.ClientMessage) -> None:
        match message:
            case p.Hello():
                raise p.ProtocolError("bad_message", "hello was already received")
            case p.TtsStart(turn_id=turn_id):
                self.playback.reported(turn_id)
                self.echo.played(0, turn_id, playing=self._held != turn_id)
            case p.Playback(turn_id=turn_id, played_samples=played):
                self.playback.reported(turn_id, played=played)
                self.echo.played(played, turn_id, playing=self._held != turn_id)
            case p.TtsStop(turn_id=turn_id, played_samples=played):
                self.playback.reported(turn_id, played=played, stopped=True)
                self.echo.played(played, turn_id, playing=False)
            case p.ClearHistory():
                await self.interrupt(barge_in=False)
                await self._stop_reply()
                self.history.clear()
                if self.listener is not None:
                    self.listener.reset()
                await self.send(p.HistoryCleared())
                await self.set_state("listening")
            case p.SetSpeed(speed=speed):
                await self._apply_settings(p.SettingsPatch(speed=speed))
            case p.SetSettings(settings=patch):
                await self._apply_settings(patch)
            case p.TextMessage(content=text):
                await self.interrupt(barge_in=False)
                await self.send(p.PartialUserRequest(content=text))
                await self.start_turn(text, None)
            case p.Interrupt():
                await self.interrupt(barge_in=False)
                await self.set_state("listening")

    async def _apply_settings(self, patch: p.SettingsPatch) -> None:
        changes = patch.model_dump(exclude_none=True)
        if "voice" in changes and changes["voice"] not in self.services.tts.voices():
            raise p.ProtocolError("unknown_voice", f"no voice named {changes['voice']!r}")
        self.settings = self.settings.model_copy(update=changes)
        if "speed" in changes and self.listener is not None:
            self.listener.set_speed(changes["speed"])
        await self.send(p.SettingsChanged(settings=self.settings))
