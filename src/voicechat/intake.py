"""The client's side of a conversation coming in: messages decoded and audio on its way to the Listener.

Two loops per connection: the receive loop decodes messages and never waits on a model; the audio loop
hands the Listener all audio waiting and never waits for a turn decision. A backlog because the server
is slow is the server's own (inbox.py): it is never refused nor counted against the client; silence is
shed first and the client is told ``server_busy`` once. Audio far ahead of real time is the client's
doing and is refused (``rate_limited``, not a strike); malformed messages are strikes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from voicechat import protocol as p
from voicechat.echo import EchoGate
from voicechat.inbox import AudioInbox
from voicechat.playback import ClientPlayback, Clock
from voicechat.stt.listener import Listener

log = logging.getLogger(__name__)

BURST_ALLOWANCE_S = 10.0  # how far audio may run ahead of the wall clock before frames are dropped
MAX_BAD_MESSAGES = 50  # a client that sends this many malformed messages is disconnected
NOT_STRIKES = frozenset({"rate_limited"})  # refused, but not malformed: never counted towards closing
BUSY_MESSAGE = "the server is running behind; what you say is kept and will be answered"
LISTENER_BACKLOG_S = 4.0  # audio taken in while a turn decision waits; more waits in the inbox, which sheds


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


class ClientInput:
    """The receive and audio loops of one connection. Kept apart from Session, which only acts on what
    they deliver (a decoded message, the Listener's events), so that taking in never waits on acting."""

    def __init__(
        self,
        ws: WebSocket,
        clock: Clock,
        playback: ClientPlayback,
        *,
        receive: Callable[[], Awaitable[dict[str, Any]]],
        handle: Callable[[p.ClientMessage], Awaitable[None]],
        send: Callable[[p.ServerMessage], Awaitable[None]],
        tell_mistake: Callable[[str, str], Awaitable[None]],
        max_frame_bytes: int,
    ) -> None:
        self.audio = AudioIntake(clock)
        self.bad_messages = 0
        self._ws, self._clock, self._playback = ws, clock, playback
        self._receive, self._handle, self._send, self._tell_mistake = receive, handle, send, tell_mistake
        self._max_frame_bytes = max_frame_bytes
        self._session_id = "-"
        self._listener: Listener | None = None
        self._echo_gate: EchoGate | None = None

    def start(self, session_id: str, sample_rate: int, listener: Listener, echo_gate: EchoGate) -> None:
        """The hello is in: audio at its rate goes to this Listener, past this echo gate."""
        self._session_id = session_id
        self.audio = AudioIntake(self._clock, sample_rate)
        self._listener, self._echo_gate = listener, echo_gate

    async def receive_loop(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            try:
                if message.get("bytes") is not None:
                    frame = p.decode_audio_frame(message["bytes"], max_bytes=self._max_frame_bytes)
                    if self.audio.accept(frame):
                        await self._say_busy()
                    if self._echo_gate is not None:
                        self._echo_gate.arrived(len(frame.pcm))  # where playback was as this audio came in
                elif message.get("text") is not None:
                    await self._handle(p.parse_client_message(message["text"]))
            except p.ProtocolError as error:
                if error.code not in NOT_STRIKES:
                    self.bad_messages += 1
                if self.bad_messages >= MAX_BAD_MESSAGES:
                    await self._send(p.Error(code=error.code, message="too many malformed messages; closing", fatal=True))
                    await self._ws.close(p.CLOSE_POLICY)
                    return
                await self._tell_mistake(error.code, error.message)

    async def _say_busy(self) -> None:
        inbox = self.audio.inbox
        log.info("session %s: the listener is %.1f s behind; silence is shed", self._session_id, inbox.backlog_s)
        await self._send(p.Error(code="server_busy", message=BUSY_MESSAGE))

    async def audio_loop(self) -> None:
        """All audio waiting goes to the Listener in one piece; a turn decision never holds this up."""
        assert self._listener is not None
        while True:
            await self._listener.walked_to(LISTENER_BACKLOG_S)  # a decision waiting long: the inbox sheds
            pcm, playing = await self.audio.inbox.get()
            self._playback.uplink_playing = playing
            await self._listener.push(pcm)  # decoded frames are always int16 mono: no ValueError here
