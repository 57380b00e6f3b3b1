"""The FastAPI app: the web client, one WebSocket conversation per connection, health and metrics.

Models load in the background after start-up, so /healthz answers at once and /readyz tells what the
server is waiting for; conversations that connect meanwhile see the `loading` state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect, WebSocketState
from prometheus_client import CONTENT_TYPE_LATEST

from voicechat import protocol as p
from voicechat.access import AccessMiddleware, AccessPolicy, hide_tokens_in_logs, resolve_token
from voicechat.commands.download_models import CHATTERBOX_REPO
from voicechat.config import Settings
from voicechat.guard import SessionGuard
from voicechat.guarded_socket import GuardedSocket, LimitedLLM
from voicechat.legacy import ClientSocket
from voicechat.llm import LLM, LLMError, create_llm
from voicechat.llm.local import LocalLLM
from voicechat.loading import LoadProgress, hub_cache_folder, report_until_ready, whisper_repo
from voicechat.memory import release_free_memory
from voicechat.metrics import Metrics
from voicechat.resume import ResumeStore, resuming_past_cap
from voicechat.session import Services, Session
from voicechat.stt.listener import SpeechModels
from voicechat.tts.engine import TTSEngine
from voicechat.voices import router as voices_router

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
LLM_CHECK_INTERVAL_S = 5.0
LOCAL_LLM_NAME = "Language model"
MAX_PARKED_CONVERSATIONS = 256  # dropped conversations kept for resuming at once (each is a small history)


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    services: Services | None = None
    stage: str = "starting"
    load_error: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set when loading ends, well or badly
    sessions: int = 0
    progress: LoadProgress = field(default_factory=LoadProgress)  # shown on the page while loading
    sessions_by_address: dict[str, int] = field(default_factory=dict)  # client IP -> open conversations
    llm_error: str | None = "not checked yet"
    llm_checked_at: float = float("-inf")
    voice_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # voice uploads and deletions, one at a time
    resumes: ResumeStore = field(init=False)  # dropped conversations, kept for their page to resume them

    def __post_init__(self) -> None:
        self.resumes = ResumeStore(self.settings.resume_grace_s, MAX_PARKED_CONVERSATIONS)

    async def check_llm(self, llm: LLM) -> None:
        """Ask the LLM server whether it is reachable and has the model (at most every few seconds)."""
        if time.monotonic() - self.llm_checked_at < LLM_CHECK_INTERVAL_S:
            return
        self.llm_checked_at = time.monotonic()
        try:
            await llm.check_ready()
            self.llm_error = None
        except LLMError as error:
            self.llm_error = str(error)
            log.warning("LLM not ready: %s", error)


async def load_local_llm(state: AppState, llm: LocalLLM) -> None:
    """Load the local provider's model. Its failure (offline without a copy, a bad path) leaves the rest
    of the server up: /readyz and every turn then give its one plain sentence, as for a missing server."""
    hub = hub_cache_folder(llm.hub_repo) if llm.hub_repo else None
    try:
        await asyncio.to_thread(state.progress.run, LOCAL_LLM_NAME, hub, llm.load)
    except LLMError as error:
        log.error("language model not loaded: %s", error)


async def load_services(state: AppState) -> None:
    """Load every model once, warm it up, and log how long it took."""
    settings = state.settings
    started = time.monotonic()
    llm: LLM | None = None
    try:
        llm = create_llm(settings)
        local = isinstance(llm, LocalLLM)  # a model in this process loads beside the others
        state.stage = "loading models (Chatterbox, Whisper, VAD, Smart Turn" + (", language model)" if local else ")")
        tts_name, stt_name = "Chatterbox voice", "Whisper speech recognition"
        tts_hub = None if settings.checkpoint else hub_cache_folder(CHATTERBOX_REPO)
        stt_repo = whisper_repo(settings.stt_model)
        stt_hub = hub_cache_folder(stt_repo) if stt_repo else None
        state.progress.pre_register(tts_name, stt_name, *([LOCAL_LLM_NAME] if local else []))
        tts, speech, _ = await asyncio.gather(
            asyncio.to_thread(state.progress.run, tts_name, tts_hub, TTSEngine.load, settings),
            asyncio.to_thread(state.progress.run, stt_name, stt_hub, SpeechModels.load, settings),
            load_local_llm(state, llm) if local else asyncio.sleep(0),
        )
        state.services = Services(
            settings=settings, tts=tts, speech=speech, llm=llm, metrics=state.metrics, resumes=state.resumes
        )
        state.metrics.track_tts_streams(lambda: tts.active_streams)
        state.metrics.track_tts_load(lambda: tts.utilization)
        state.metrics.track_tts_stages(tts.stages.snapshot)
        state.stage = "ready"
        log.info("models loaded and warmed up in %.1f s", time.monotonic() - started)
        await state.check_llm(llm)
    except Exception as error:  # noqa: BLE001 - reported through /readyz and to every client
        log.exception("loading models failed")
        state.load_error = f"{type(error).__name__}: {error}"
        state.stage = "failed"
    finally:
        if state.services is None and llm is not None:
            await llm.aclose()  # a failed or cancelled start leaves no model thread behind
        state.ready.set()


async def converse(websocket: WebSocket, services: Services) -> None:
    """One conversation, inside its limits: a guarded socket, a rate-limited LLM, a watchdog beside it.
    Under the guard, a client of the original app's protocol is translated at the edge (legacy.py)."""
    guard = SessionGuard(services.settings)
    socket = GuardedSocket(ClientSocket(websocket), guard, services.settings.send_timeout_s)  # type: ignore[arg-type]
    watchdog = asyncio.create_task(socket.watch(), name="conversation-watchdog")
    try:
        await Session(socket, replace(services, llm=LimitedLLM(services.llm, guard))).run()  # type: ignore[arg-type]
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
        await asyncio.to_thread(release_free_memory)  # what the conversation freed goes back to the OS (memory.py)


def create_app(settings: Settings) -> FastAPI:
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        loader = asyncio.create_task(load_services(state))
        try:
            yield
        finally:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            state.resumes.close()
            if state.services is not None:
                await state.services.llm.aclose()
                await asyncio.to_thread(state.services.tts.close)
                await asyncio.to_thread(state.services.speech.close)

    docs = settings.api_docs  # off unless asked for: they map the whole API for a visitor
    app = FastAPI(
        title="RealtimeVoiceChat, Chatterbox edition",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.voicechat = state
    app.add_middleware(AccessMiddleware, policy=AccessPolicy.from_settings(settings, resolve_token(settings)))
    hide_tokens_in_logs()
    app.include_router(voices_router)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'][1:]) or 'request'}: {issue['msg']}" for issue in error.errors()
        )
        return JSONResponse({"error": "bad_request", "message": problems}, 400)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.load_error is not None:
            return JSONResponse({"ready": False, "reason": f"model loading failed: {state.load_error}"}, 503)
        if state.services is None:
            return JSONResponse({"ready": False, "reason": state.stage}, 503)
        await state.check_llm(state.services.llm)
        if state.llm_error is not None:
            return JSONResponse({"ready": False, "reason": f"language model: {state.llm_error}"}, 503)
        tts = state.services.tts
        full = state.sessions >= session_cap() or tts.full
        return JSONResponse({"ready": True, "full": full, "sessions": state.sessions, "max_sessions": session_cap(),
                             "tts_streams": tts.active_streams, "tts_max_streams": tts.max_streams})

    def session_cap() -> int:
        """Conversations served at once: VOICECHAT_MAX_SESSIONS, and no more than the speech engine keeps
        in real time (each conversation speaks one stream at a time)."""
        tts = state.services.tts if state.services is not None else None
        return settings.max_sessions if tts is None else min(settings.max_sessions, tts.max_streams)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def refuse(websocket: WebSocket, code: str, message: str) -> None:
        state.metrics.sessions_refused.inc()
        if websocket.client_state == WebSocketState.DISCONNECTED:  # it left while the door read its hello
            return
        await websocket.send_text(p.error_message(code, message, fatal=True))
        await websocket.close(p.CLOSE_SERVER_FULL)

    def over_cap(address: str) -> tuple[str, str] | None:
        """Why the door is shut to a new conversation from ``address`` (a code and its message), or None."""
        if state.sessions >= session_cap():
            return "server_full", f"the server is busy with {session_cap()} conversations; try again later"
        if state.sessions_by_address.get(address, 0) >= settings.max_sessions_per_ip:
            many = f"{settings.max_sessions_per_ip} conversations are already open from your address; close one first"
            return "too_many_connections", many
        return None

    @app.websocket("/ws")
    async def conversation(websocket: WebSocket) -> None:
        await websocket.accept()
        address = websocket.client.host if websocket.client else "unknown"
        if (refusal := over_cap(address)) is not None:
            # A page resuming a conversation whose dropped socket still counts takes that conversation's
            # place, so the cap it meets is its own: its hello, with a valid token, lets it in (resume.py).
            resuming = await resuming_past_cap(websocket, state.resumes, settings.hello_timeout_s)
            if resuming is None:
                return await refuse(websocket, *refusal)
            websocket = resuming
        state.sessions += 1
        state.sessions_by_address[address] = state.sessions_by_address.get(address, 0) + 1
        state.metrics.sessions.inc()
        try:
            if not state.ready.is_set():
                await websocket.send_text(p.encode(p.Status(state="loading")))
                await report_until_ready(websocket.send_text, state.progress, state.ready)
            if state.services is None:
                await websocket.send_text(
                    p.error_message("internal", f"the server could not load its models: {state.load_error}", fatal=True)
                )
                await websocket.close(p.CLOSE_INTERNAL)
                return
            await converse(websocket, state.services)
        except WebSocketDisconnect as gone:  # an ordinary end: the client left while we were sending
            log.info("conversation ended: the client left (close code %s)", gone.code)
        except Exception:  # noqa: BLE001 - one conversation's failure must not reach the server
            log.exception("conversation failed")
            try:
                await websocket.close(p.CLOSE_INTERNAL)
            except Exception:  # noqa: BLE001 - already gone
                pass
        finally:
            state.sessions -= 1
            if (left := state.sessions_by_address.pop(address) - 1) > 0:
                state.sessions_by_address[address] = left
            state.metrics.sessions.dec()

    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
