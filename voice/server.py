"""The HTTP/WebSocket front door: /health and /ws. No pipeline logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.websockets import WebSocketDisconnect, WebSocketState

from voice import protocol
from voice.config import Settings
from voice.engines import Engines, ModelPaths, load_engines, resolve_models
from voice.metrics import Metrics
from voice.models import ModelError
from voice.otel import SpanRecorder, make_exporter
from voice.session import Session

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"
START_TIMEOUT_S = 30.0  # a client that never sends session.start is holding a socket for nothing


@dataclass
class ServerState:
    settings: Settings
    metrics: Metrics
    engines: Engines | None = None
    load_error: str | None = None
    sessions: dict[str, Session] = field(default_factory=dict)
    connections: int = 0  # sockets holding a session or still in the handshake


def create_app(settings: Settings | None = None, paths: ModelPaths | None = None) -> FastAPI:
    """The app. Models load in the background after start-up; /health says when they are ready."""
    settings = settings or Settings()
    exporter = make_exporter(settings.otel_exporter)
    spans = SpanRecorder(exporter) if exporter is not None else None
    state = ServerState(settings, metrics=Metrics(settings.trace_log, spans))

    async def _load() -> None:
        try:
            resolved = paths or await asyncio.to_thread(resolve_models, settings)
            state.engines = await load_engines(settings, resolved)
            if spans is not None:
                spans.models = state.engines.describe()
            log.info("models ready: %s", state.engines.describe())
        except ModelError as exc:
            state.load_error = str(exc)
            log.error("cannot serve: %s", exc)
        except Exception as exc:  # noqa: BLE001 - keep serving /health with the reason
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the models failed")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        loader = asyncio.create_task(_load())
        yield
        loader.cancel()
        for session in list(state.sessions.values()):
            await session.stop()
        if spans is not None:
            spans.shutdown()  # flushes what the batch exporter still holds

    app = FastAPI(title="Parley", lifespan=lifespan)
    app.state.parley = state

    @app.get("/health")
    async def health():
        if state.engines is not None:
            return {"status": "ok", "sessions": len(state.sessions), "models": state.engines.describe()}
        if state.load_error:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        if state.engines is None:
            reason = state.load_error or "models are still loading; retry when GET /health answers 200"
            await _refuse(websocket, "not_ready", reason, protocol.WS_CLOSE_TRY_AGAIN, state.metrics)
            return
        if state.connections >= settings.max_sessions:
            await _refuse(
                websocket,
                "busy",
                f"All {settings.max_sessions} sessions are in use; retry later.",
                protocol.WS_CLOSE_TRY_AGAIN,
            )
            return
        state.connections += 1  # reserved before the handshake, so simultaneous clients can't overfill
        session = None
        try:
            rate = await _await_session_start(websocket, state.metrics)
            if rate is None:
                return
            session = Session(websocket, state.engines, settings, rate, state.metrics)
            state.sessions[session.id] = session
            state.metrics.session_started(session.id)
            try:
                await session.run()
            finally:
                state.metrics.session_ended(session.id)
        except Exception:  # noqa: BLE001 - one session's failure must not reach the others
            log.exception("session %s failed", session.id if session else "(handshake)")
            with contextlib.suppress(Exception):
                await _send_error(
                    websocket, "internal", "The session failed; please reconnect.", state.metrics
                )
        finally:
            state.connections -= 1
            if session is not None:
                state.sessions.pop(session.id, None)
            if websocket.client_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close()

    # The browser client, last: the routes above take precedence over the static files.
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


async def _send_error(websocket: WebSocket, code: str, message: str, metrics: Metrics) -> None:
    metrics.error(code)
    await websocket.send_text(
        protocol.json_dumps(protocol.ErrorEvent(code=code, message=message).model_dump())
    )


async def _refuse(websocket: WebSocket, code: str, message: str, close_code: int, metrics: Metrics) -> None:
    with contextlib.suppress(Exception):
        await _send_error(websocket, code, message, metrics)
        await websocket.close(code=close_code, reason=code)


async def _await_session_start(websocket: WebSocket, metrics: Metrics) -> int | None:
    """Read messages until a valid session.start; answer mistakes with errors. None: the client left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            await _refuse(
                websocket,
                "start_timeout",
                f'No session.start within {START_TIMEOUT_S:.0f} s: send {{"type": "session.start", "sample_rate": N}} '
                "first when you connect.",
                protocol.WS_CLOSE_POLICY,
                metrics,
            )
            return None
        except WebSocketDisconnect:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
        if data is None:
            continue
        if len(data) > protocol.MAX_MESSAGE_BYTES:
            await _refuse(
                websocket,
                "message_too_big",
                f"Messages are limited to {protocol.MAX_MESSAGE_BYTES} bytes.",
                protocol.WS_CLOSE_TOO_BIG,
                metrics,
            )
            return None
        if isinstance(data, bytes):
            await _send_error(
                websocket,
                "not_started",
                'Send {"type": "session.start", "sample_rate": N} before any audio.',
                metrics,
            )
            continue
        try:
            parsed = protocol.parse_client_message(data)
        except protocol.ProtocolError as exc:
            await _send_error(websocket, exc.code, exc.message, metrics)
            continue
        if not isinstance(parsed, protocol.SessionStart):
            await _send_error(websocket, "not_started", "Send session.start before anything else.", metrics)
            continue
        if parsed.sample_rate not in protocol.SUPPORTED_SAMPLE_RATES:
            rates = ", ".join(str(r) for r in protocol.SUPPORTED_SAMPLE_RATES)
            await _send_error(
                websocket,
                "unsupported_sample_rate",
                f"sample_rate {parsed.sample_rate} is not supported: use one of {rates}.",
                metrics,
            )
            continue
        return parsed.sample_rate
