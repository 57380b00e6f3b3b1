"""One conversation over one WebSocket: listening, thinking, speaking, barge-in, history.

The life of a turn:
- the Listener hears speech (``speech_started``: status ``hearing``) and may guess the user is done
  (``turn_probably_complete``): a speculative Reply starts, sending nothing;
- ``turn_end`` (or a ``text_message``) makes the turn final: the matching speculation is confirmed, or
  dropped for a new Reply; the user's words enter the history; status ``thinking``;
- the Reply sends partial answers and audio (status ``speaking`` and ``turn_metrics`` at its first
  chunk), then ``tts_end`` and ``final_assistant_answer`` once all is generated;
- it ends *played* once ClientPlayback says the client is silent, or *interrupted* by barge-in
  (bargein.py: the client holds playback at voice onset until words decide), ``interrupt``,
  ``clear_history``, a typed message or a disconnect; either way :meth:`Session._close` writes what the
  user heard of it into the history (``Reply.heard_text``), and status is ``listening``.

Three tasks per connection besides the replies: the receive loop and the audio task (intake.py: taking
in never waits on a model or a turn decision) and the speech task (acts on the Listener's events).
Every message goes out through :meth:`Session.send`. Everything the conversation owns is released in
:meth:`Session.run`'s finally. Resume after a dropped connection (resume.py): a session that ends parks
its conversation for ``resume_grace_s``; a later hello with its token takes it back, and a conversation
still held on a dead socket is handed over at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from voicechat import protocol as p
from voicechat.bargein import BargeIn, words
from voicechat.config import Settings
from voicechat.echo import EchoGate, EchoReference
from voicechat.intake import LISTENER_BACKLOG_S as LISTENER_BACKLOG_S  # re-exported: tests import it from here
from voicechat.intake import AudioIntake, ClientInput
from voicechat.llm import LLM, History
from voicechat.metrics import Metrics
from voicechat.outbox import ERROR_REPEAT_S as ERROR_REPEAT_S  # re-exported: tests import it from here
from voicechat.outbox import Outbox
from voicechat.playback import ClientPlayback, Clock, MonotonicClock
from voicechat.reply import Outlet, Reply
from voicechat.resume import Parked, ResumeStore, Resumption
from voicechat.stt.listener import Listener, SpeechEvent, SpeechModels
from voicechat.tts.engine import TTSEngine, TTSParams

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What every conversation shares: the models, the LLM client, the settings, the metrics."""

    settings: Settings
    tts: TTSEngine
    speech: SpeechModels
    llm: LLM
    metrics: Metrics
    resumes: ResumeStore | None = field(default=None)  # None: conversations are never resumed


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


def _same_words(a: str, b: str) -> bool:
    return words(a) == words(b)


class Session:
    """One conversation: the turns, their replies and the history. What is not about turns lives in
    collaborators, each with one job: taking in (intake.py), sending (outbox.py), barge-in's hold and
    release (bargein.py) and resume (resume.py)."""

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
        self.clock = clock or MonotonicClock()
        self.playback = ClientPlayback(self.clock)
        self.echo = EchoReference(rate=p.OUTPUT_SAMPLE_RATE)  # what was sent and played, for the echo gate
        self.outbox = Outbox(websocket, services.metrics, self.clock, self.echo)
        self.send, self.set_state = self.outbox.send, self.outbox.set_state  # the one way out
        self.barge_in = BargeIn(self.echo, self.playback, self.send)
        self.listener: Listener | None = None
        self.reply: Reply | None = None  # the current assistant turn (speculative until confirmed)
        self._make_listener = make_listener
        self._next_turn_id = 1
        self.resumption = Resumption(services.resumes)
        self.input = ClientInput(  # the receive and audio loops
            websocket, self.clock, self.playback, receive=lambda: self.resumption.receive(self.ws), handle=self._handle,
            send=self.send, tell_mistake=self.outbox.tell_mistake, max_frame_bytes=config.max_frame_bytes,
        )

    @property
    def _audio(self) -> AudioIntake:
        return self.input.audio

    @property
    def _bad_messages(self) -> int:
        return self.input.bad_messages

    @property
    def _last_error_at(self) -> dict[str, float]:
        return self.outbox.last_error_at

    # --- main loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the conversation until the client leaves; always releases everything it started."""
        tasks: list[asyncio.Task[None]] = []
        try:
            hello = await receive_hello(self.ws, self.send)
            if hello is None:
                return
            self.resumption.store = self.services.resumes  # read now: a test may set it after construction
            parked = await self.resumption.take(self.id, hello.resume)
            if parked is not None:
                self.id = hello.resume.session_id  # type: ignore[union-attr]  # a resume was asked for
                self.history, self.settings, self._next_turn_id = parked.history, parked.settings, parked.next_turn_id
            hello_back = p.ServerHello(session_id=self.id, input_sample_rate=hello.sample_rate, settings=self.settings,
                voices=self.services.tts.voices(), resume_token=self.resumption.offered_token, resumed=parked is not None)
            await self.send(hello_back)
            await self.resumption.greeted_as(self.id, hello.resume, parked is not None, self._hand_over, self.send)
            self.listener = self._make_listener(
                self.services.speech, hello, self.settings.speed, self.services.settings.max_utterance_s
            )
            echo_gate = self.listener.echo_gate = EchoGate(self.echo, mic_rate=hello.sample_rate)
            self.input.start(self.id, hello.sample_rate, self.listener, echo_gate)
            tasks = [
                asyncio.create_task(self.input.audio_loop(), name=f"audio-{self.id}"),
                asyncio.create_task(self._speech_loop(), name=f"speech-{self.id}"),
            ]
            await self.set_state("listening")
            await self.input.receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_reply()
            if self.listener is not None:
                await self.listener.aclose()
            self.resumption.park(self.id, Parked(self.history, self.settings, self._next_turn_id), self.ws)
            log.info("session %s closed", self.id)

    async def _hand_over(self) -> Parked:
        """Another connection resumes this conversation: stop the reply (what was heard stays in the
        history), give the conversation to it and end this connection."""
        self.resumption.handed_over.set()
        await self._stop_reply()
        parked = Parked(self.history, self.settings, self._next_turn_id)
        self.history = History(self.history.system_prompt, self.history.max_chars)  # this one keeps nothing
        return parked

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
                    await self.outbox.tell_mistake("internal", "the server failed to handle your speech")

    # --- speech events ---------------------------------------------------------------------------

    async def _on_speech(self, event: SpeechEvent) -> None:
        reply = self.reply
        if reply is not None and reply.confirmed and reply.audible:  # the user speaks over the assistant
            if not await self.barge_in.interrupts(event, reply.turn_id, reply.text):
                return  # the assistant keeps talking (held, or played on)
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
            outlet=Outlet(send=self.send, send_audio=self.outbox.send_audio, on_state=self._on_reply_state),
            playback=self.playback,
            metrics=self.services.metrics,
            clock=self.clock,
        )

    async def _on_reply_state(self, reply: Reply) -> None:
        """What the client is told as a confirmed reply moves on (it runs in the reply's own task)."""
        if reply.state == "speaking":
            await self.set_state("speaking")
            await self.outbox.send_turn_metrics(reply.metrics_message())
        elif reply.state == "generated":
            await self.send(p.FinalAssistantAnswer(content=reply.text.strip(), turn_id=reply.turn_id, interrupted=False))
            if reply.samples_sent == 0:
                await self.outbox.send_turn_metrics(reply.metrics_message())
        elif reply.state == "played" and self.reply is reply:
            self._close(reply)
            self.reply = None
            await self.barge_in.release(reply.turn_id)  # a client that never reported may still hold it
            await self.set_state("listening")

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
        self.barge_in.forget(reply.turn_id)
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
                self.echo.played(0, turn_id, playing=not self.barge_in.holds(turn_id))
            case p.Playback(turn_id=turn_id, played_samples=played):
                self.playback.reported(turn_id, played=played)
                self.echo.played(played, turn_id, playing=not self.barge_in.holds(turn_id))
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
