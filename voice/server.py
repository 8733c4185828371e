"""The HTTP/WebSocket front door: /health, /metrics, /ws, and the phone's /twilio/voice and
/twilio/media. No pipeline logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.websockets import WebSocketState

from voice import protocol
from voice.catalogue import ModelError
from voice.config import Settings
from voice.engines import Engines, ModelPaths, load_engines, resolve_models
from voice.observability.cpu import cpu_by_stage
from voice.observability.metrics import EndReason, Metrics
from voice.observability.otel import SpanRecorder, make_exporter
from voice.session import Session
from voice.transports import twilio_webhook
from voice.transports.twilio import TwilioWire, await_stream_start
from voice.transports.websocket import ParleyWire
from voice.transports.wire import Wire, receive_before

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"
START_TIMEOUT_S = 30.0  # a client that never sends session.start is holding a socket for nothing
MAX_WEBHOOK_BODY_BYTES = 64 * 1024  # Twilio's call webhook is ~1 KiB of form fields


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

    def _cpu() -> dict[str, float]:
        embedded = getattr(state.engines, "embedded_llm", None)  # None: loading, or a remote LLM
        return cpu_by_stage(embedded.phase_seconds() if embedded is not None else None)

    state = ServerState(settings, metrics=Metrics(settings.trace_log, spans, cpu=_cpu))
    if not settings.twilio_auth_token.get_secret_value():
        log.warning(
            "PARLEY_TWILIO_AUTH_TOKEN is not set: POST %s answers anyone, not only Twilio. Set it to your "
            "Twilio account's auth token to accept only signed requests.",
            twilio_webhook.VOICE_PATH,
        )

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
        # Off the event loop: the CPU figures ask llama.cpp for its own (loopback HTTP).
        return Response(await asyncio.to_thread(state.metrics.render), media_type=CONTENT_TYPE_LATEST)

    def _refusal() -> tuple[str, str] | None:
        """Why a new conversation cannot start now (code, message), or None."""
        if state.engines is None:
            return (
                "not_ready",
                state.load_error or "models are still loading; retry when GET /health answers 200",
            )
        if state.connections >= settings.max_sessions:
            return "busy", f"All {settings.max_sessions} sessions are in use; retry later."
        return None

    @contextlib.asynccontextmanager
    async def _place(websocket: WebSocket):
        """One of max_sessions places, taken before the handshake (so simultaneous clients can't
        overfill) and given back, with the socket closed, when the conversation is over."""
        state.connections += 1
        try:
            yield
        finally:
            state.connections -= 1
            if websocket.client_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close()

    async def _converse(wire: Wire) -> None:
        session = Session(wire, state.engines, settings, state.metrics)
        state.sessions[session.id] = session
        state.metrics.session_started(session.id)
        try:
            await session.run()
        except Exception:  # noqa: BLE001 - one session's failure must not reach the others
            log.exception("session %s failed", session.id)
            with contextlib.suppress(Exception):
                await session.send(
                    protocol.ErrorEvent(code="internal", message="The session failed; please reconnect.")
                )
        finally:
            state.metrics.session_ended(session.id, session.end_reason or EndReason.FAILED)
            state.sessions.pop(session.id, None)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        if refusal := _refusal():
            await _refuse(websocket, *refusal, protocol.WS_CLOSE_TRY_AGAIN, state.metrics)
            return
        async with _place(websocket):
            try:
                rate = await _await_session_start(websocket, state.metrics)
            except Exception:  # noqa: BLE001 - one session's failure must not reach the others
                log.exception("session (handshake) failed")
                with contextlib.suppress(Exception):
                    await _send_error(
                        websocket, "internal", "The session failed; please reconnect.", state.metrics
                    )
                return
            if rate is not None:
                await _converse(ParleyWire(websocket, rate))

    @app.post(twilio_webhook.VOICE_PATH)
    async def twilio_voice(request: Request):
        """Twilio's voice webhook for an incoming call: TwiML that connects it to /twilio/media."""
        body = await request.body()
        if len(body) > MAX_WEBHOOK_BODY_BYTES:
            return PlainTextResponse(f"Refused: over {MAX_WEBHOOK_BODY_BYTES} bytes.", status_code=413)
        params = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        token = settings.twilio_auth_token.get_secret_value()
        try:
            if token:
                url = twilio_webhook.signed_url(settings.public_url, str(request.url))
                twilio_webhook.check_signature(
                    token, request.headers.get(twilio_webhook.SIGNATURE_HEADER), url, params
                )
            stream = twilio_webhook.stream_url(settings.public_url, request.headers.get("host"))
        except twilio_webhook.WebhookError as exc:
            log.warning("POST %s refused (%d): %s", twilio_webhook.VOICE_PATH, exc.status, exc.message)
            state.metrics.error("bad_signature" if exc.status == 403 else "bad_webhook")
            return PlainTextResponse(exc.message, status_code=exc.status)
        call_sid = dict(params).get("CallSid", "?")
        if refusal := _refusal():
            log.warning("call %s turned away (%s): %s", call_sid, *refusal)
            state.metrics.error(refusal[0])
            return Response(twilio_webhook.busy_twiml(), media_type=twilio_webhook.TWIML_MEDIA_TYPE)
        log.info("call %s: answering with a media stream at %s", call_sid, stream)
        parameters = (
            {twilio_webhook.STREAM_TOKEN_PARAMETER: twilio_webhook.stream_token(token, call_sid)}
            if token
            else None
        )
        return Response(
            twilio_webhook.connect_stream_twiml(stream, parameters),
            media_type=twilio_webhook.TWIML_MEDIA_TYPE,
        )

    @app.websocket(twilio_webhook.MEDIA_PATH)
    async def twilio_media(websocket: WebSocket):
        """A call's bidirectional Media Stream: the same conversation as /ws, over the phone."""
        await websocket.accept()
        if refusal := _refusal():
            # Twilio has no message for it: the log says why, and the caller hears the call end.
            log.warning("phone stream refused (%s): %s", *refusal)
            state.metrics.error(refusal[0])
            with contextlib.suppress(Exception):
                await websocket.close(code=protocol.WS_CLOSE_TRY_AGAIN, reason=refusal[0])
            return

        def stream_error(exc: protocol.ProtocolError) -> None:
            log.info("phone stream: %s: %s", exc.code, exc.message)
            state.metrics.error(exc.code)

        async with _place(websocket):
            try:
                start = await await_stream_start(websocket, stream_error)
            except Exception:  # noqa: BLE001 - one call's failure must not reach the others
                log.exception("phone stream failed before it started")
                state.metrics.error("internal")
                return
            token = settings.twilio_auth_token.get_secret_value()
            if (
                start is not None
                and token
                and not twilio_webhook.stream_token_ok(token, start.call_sid, start.custom_parameters)
            ):
                log.warning(
                    "phone stream for call %s refused: no valid %s (only calls answered by %s get one)",
                    start.call_sid or "?",
                    twilio_webhook.STREAM_TOKEN_PARAMETER,
                    twilio_webhook.VOICE_PATH,
                )
                state.metrics.error("bad_stream_token")
                with contextlib.suppress(Exception):
                    await websocket.close(code=protocol.WS_CLOSE_POLICY, reason="bad_stream_token")
                return
            if start is not None:
                await _converse(TwilioWire(websocket, start, settings.dtmf_replies))

    @app.get("/phone", include_in_schema=False)
    async def phone_page():
        """The browser phone: a call over /twilio/media, heard as a caller hears it."""
        return FileResponse(WEB_DIR / "phone.html")

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
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        try:
            data = await receive_before(websocket, deadline)
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
        if data is None:
            return None
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
