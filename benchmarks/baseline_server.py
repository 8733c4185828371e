"""A stock pipecat voice bot with Parley's models, behind enough of Parley's `/ws` protocol that
Parley's own benchmark client (`clients.talk.talk`) drives it unchanged.

    python benchmarks/baseline_server.py [--host 127.0.0.1] [--port 8100] [--device auto]

This is the baseline the latency benchmark measures Parley against, side by side in the same
run. It is deliberately *stock*: every pipeline choice is the one a pipecat 1.14 user gets by
following pipecat's own examples, and none of Parley's tuning is applied. Only the models are
Parley's, so the comparison is between two pipelines, not between two sets of weights.

Per conversation, the pipeline a stock bot builds:

    FastAPIWebsocketTransport input → WhisperSTTService → LLMContextAggregatorPair.user()
      (SileroVADAnalyzer, default user-turn strategies) → OpenAILLMService → PiperTTSService
      → FastAPIWebsocketTransport output (real-time pacing) → LLMContextAggregatorPair.assistant()

- STT: `WhisperSTTService` on the same local CTranslate2 Whisper folder Parley uses, with the
  service's default decoding (beam 5, its default no_speech_prob, no vocabulary prompt, no
  thread setting: pipecat exposes none). CUDA float16 where CTranslate2 sees a GPU, else CPU
  int8 (`--device`). Like every stock bot, each conversation constructs its own service, which
  loads its own copy of the model.
- Turn-taking: `LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())` with pipecat's
  default user-turn strategies (VAD or transcription starts a turn; Smart Turn v3 ends it, with
  its 3 s silence fallback) and Silero's default VAD parameters.
- LLM: the same GGUF Parley serves, in the same embedded llama.cpp (`agents.llm.EmbeddedLLM`,
  Parley's default threads, context and slots, so both servers hold one slot per caller), shared
  by every conversation; pipecat's `OpenAILLMService` streams from its OpenAI-compatible
  endpoint with Parley's max tokens and temperature.
- Knowledge: stock pipecat has no retrieval, so the whole knowledge base is pasted into the
  system instruction after a short instruction worded like Parley's. At start-up that prompt is
  prefilled into every llama.cpp slot, as Parley primes its own system prompt, so no caller's
  first turn pays for a cold cache (13-38 s a slot for this ~1,760-token prompt on 2 cores).
- TTS: `PiperTTSService`, in-process, on Parley's local voice file (it is pointed at the folder
  holding the file, so it never downloads); output at the voice's own rate.
- Transport: pipecat's `FastAPIWebsocketTransport` with its default real-time pacing of output
  audio (40 ms chunks), and a small serializer for Parley's wire format.

What is not stock, and why: CPU is counted by stage as in Parley (voice/observability/cpu.py,
served on `/metrics` as `parley_cpu_seconds_total{stage}`): the LLM starts on threads named for
it, each conversation's Whisper and Piper are built on threads named for theirs and are called
there (`StageCalls`, through a pool as wide as the callers, so no caller waits for another), and
Silero counts its own time; pipecat's Smart Turn, on a thread of its own, counts as `other`. RTVI is off (the client does not speak it, so its ~100 messages a
conversation would be work thrown away); the per-conversation services are constructed off the
event loop (a stock bot constructs them on it, which freezes every other conversation's audio
for the ~1 s the models take to load: that would measure the test harness, not pipecat); and
the events below are produced by an observer, beside the pipeline, not inside it.

The wire: binary frames in are s16le mono PCM at the rate `session.start` declares (resampled to
16 kHz by the serializer, as pipecat's telephony serializers do); binary frames out are s16le PCM
at the voice's rate. Events: `session.ready` (session_id, output_sample_rate), `user.transcript`
(the user turn's text, from the aggregator's `on_user_turn_stopped`), `agent.text` (each sentence
as the transport plays it, from `TTSTextFrame`), `agent.audio_done` and `turn.trace` (when the
response's last audio has been sent; `stages_ms` holds `endpoint` and `voice_to_voice`, on the
same definitions as Parley's, measured from pipecat's frames), `agent.interrupted` and `error`.
Typed input (`input_text`) and `playback` reports are not supported and are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.websockets import WebSocketDisconnect, WebSocketState

if TYPE_CHECKING:
    from agents.llm import EmbeddedLLM, LLMEndpoint
    from voice.config import Settings

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("baseline")

DEFAULT_HOST = "127.0.0.1"  # loopback, like Parley: a benchmark exposes nothing by accident
DEFAULT_PORT = 8100  # beside Parley's 8000, so both can run side by side
# The rates Parley accepts from a client (docs/protocol.md); the same set keeps the comparison
# on equal terms.
WIRE_RATES = (8000, 16000, 24000, 48000)
# pipecat's default pipeline input rate, and what Silero VAD and Whisper both take.
PIPELINE_IN_RATE = 16000
# Whisper's precision per device: what Parley's "auto" picks too (float16 on a GPU; int8 on a CPU,
# fastest there without losing accuracy).
COMPUTE_TYPES = {"cuda": "float16", "cpu": "int8"}
# Worded like Parley's SYSTEM_PROMPT (agents/context.py), which says the facts come with each
# caller message; here they come once, below this, in the system instruction.
INSTRUCTION = (
    "You answer the phone for the business in the facts below. "
    "Reply in one or two short spoken sentences using only those facts. "
    "If the facts do not answer the question, say you are not sure."
)
FACTS_HEADER = "Facts:"
KNOWLEDGE_SUFFIXES = (".md", ".txt")  # what Parley's ingest reads from the knowledge folder
START_TIMEOUT_S = 30.0  # as Parley's server: a client that never sends session.start holds a socket
# The models load in a few seconds, but prefilling the ~1,760-token knowledge prompt into every
# llama.cpp slot runs at ~50-130 tokens/s on 2 cores: about a minute idle, minutes when busy.
READY_TIMEOUT_S = 600.0
# One slot's prefill took 13-38 s here (idle to busy box); a slow disk or CPU gets room to spare.
PRIME_TIMEOUT_S = 300.0
# The user message of the priming request: only the system prompt before it is meant to be cached.
PRIME_USER_MESSAGE = "Hello."
HEALTH_POLL_S = 0.3  # how often start_baseline asks /health; well under the start-up time
STOP_TIMEOUT_S = 15.0  # as tests/conftest.stop_server: then the process is killed
WS_CLOSE_TRY_AGAIN = 1013  # the close code Parley uses for "not ready"


def resolve_device(choice: str) -> tuple[str, str]:
    """(device, compute type) for Whisper: `auto` means CUDA when CTranslate2 sees a GPU."""
    if choice == "auto":
        import ctranslate2

        choice = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return choice, COMPUTE_TYPES[choice]


def knowledge_prompt(folder: Path) -> str:
    """The system instruction: the short instruction, then every knowledge file, whole."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in KNOWLEDGE_SUFFIXES)
    if not files:
        raise RuntimeError(f"no .md or .txt files in the knowledge folder {folder}")
    facts = "\n\n".join(p.read_text(encoding="utf-8").strip() for p in files)
    return f"{INSTRUCTION}\n\n{FACTS_HEADER}\n\n{facts}"


class StageCalls:
    """A model object whose calls run on a stage's named threads (their CPU is then the stage's):
    `transcribe` whole (its segments decoded there) and `synthesize` item by item (streamed as
    before). Everything else is the object's own."""

    def __init__(self, target, pool: ThreadPoolExecutor):
        self._target = target
        self._pool = pool

    def __getattr__(self, name: str):
        return getattr(self._target, name)

    def transcribe(self, *args, **kwargs):
        def whole():
            segments, info = self._target.transcribe(*args, **kwargs)
            return list(segments), info

        segments, info = self._pool.submit(whole).result()
        return iter(segments), info

    def synthesize(self, *args, **kwargs):
        items = self._pool.submit(lambda: iter(self._target.synthesize(*args, **kwargs))).result()
        try:
            while (item := self._pool.submit(next, items, None).result()) is not None:
                yield item
        finally:
            if hasattr(items, "close"):  # stopped early (an interruption): Piper's generator ends
                self._pool.submit(items.close).result()


@dataclass
class Shared:
    """What every conversation shares: model locations, the LLM process, the system prompt."""

    settings: Settings
    stt_model: str
    device: str
    compute_type: str
    voice: Path
    output_rate: int
    llm: EmbeddedLLM
    system_instruction: str
    # Each conversation's Whisper and Piper work on these (StageCalls); one thread per caller.
    stt_pool: ThreadPoolExecutor
    tts_pool: ThreadPoolExecutor

    def describe(self) -> dict[str, str]:
        """Models by name, as Parley's /health names them: a report must not carry this machine's
        paths (and two machines' reports then compare)."""
        from voice.engines import model_name

        stt = model_name(Path(self.stt_model)) if Path(self.stt_model).exists() else self.stt_model
        return {
            "stt": f"{stt} ({self.device}/{self.compute_type}, WhisperSTTService defaults)",
            "tts": f"{model_name(self.voice)} (PiperTTSService, {self.output_rate} Hz)",
            "llm": f"{model_name(self.llm.gguf)} (embedded llama.cpp, OpenAILLMService)",
        }


def load_shared(device_choice: str, prime_slots_n: int | None = None) -> Shared:
    """Resolve Parley's models, start the LLM and prefill the system prompt into `prime_slots_n`
    of its slots (all of them by default). Blocking: run in a thread."""
    from agents.llm import EmbeddedLLM
    from voice.config import Settings
    from voice.engines import resolve_models
    from voice.observability.cpu import run_in_stage_blocking, stage_executor

    settings = Settings()  # Parley's defaults (and PARLEY_* overrides): the same models and LLM setup
    paths = resolve_models(settings)
    if paths.llm_gguf is None:
        raise RuntimeError("the baseline runs the embedded LLM: unset PARLEY_LLM_BASE_URL")
    if not isinstance(paths.tts, Path):
        raise RuntimeError(f"the baseline needs a local Piper voice file, not {paths.tts!r}")
    device, compute_type = resolve_device(device_choice)
    voice_config = json.loads(Path(f"{paths.tts}.json").read_text())
    system_instruction = knowledge_prompt(settings.knowledge_dir)
    llm = run_in_stage_blocking(
        "llm",
        EmbeddedLLM.start,
        paths.llm_gguf,
        settings.llm_threads,
        settings.llm_context_tokens,
        settings.llm_parallel,
    )
    slots = settings.llm_parallel if prime_slots_n is None else min(prime_slots_n, settings.llm_parallel)
    start = time.monotonic()
    prime_each_slot(llm.endpoint, system_instruction, slots)
    log.info(
        "knowledge prompt (%d chars) prefilled into %d of %d LLM slots in %.1f s",
        len(system_instruction),
        slots,
        settings.llm_parallel,
        time.monotonic() - start,
    )
    return Shared(
        settings=settings,
        stt_model=str(paths.stt),
        device=device,
        compute_type=compute_type,
        voice=paths.tts,
        output_rate=int(voice_config["audio"]["sample_rate"]),
        llm=llm,
        system_instruction=system_instruction,
        stt_pool=stage_executor("stt", settings.max_sessions),
        tts_pool=stage_executor("tts", settings.max_sessions),
    )


def prime_each_slot(endpoint: LLMEndpoint, system_instruction: str, slots: int) -> None:
    """Prefill `system_instruction` into llama.cpp slots 0..slots-1, one request pinned to each
    (`id_slot`). Unpinned requests with the same prompt, sent at once (as agents.llm.prime_slots
    sends them), went to one slot here, one after the other: the other slots stayed cold."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    for slot in range(slots):
        body = {
            "model": endpoint.model,
            "messages": [
                {"role": "system", "content": system_instruction},
                {"role": "user", "content": PRIME_USER_MESSAGE},
            ],
            "max_tokens": 1,
            "id_slot": slot,
        }
        response = httpx.post(
            f"{endpoint.base_url}/chat/completions", json=body, headers=headers, timeout=PRIME_TIMEOUT_S
        )
        response.raise_for_status()


# --- the wire ------------------------------------------------------------------------------------


def make_serializer(input_rate: int):
    """A FrameSerializer for Parley's wire format.

    pipecat is imported inside functions throughout, so that a benchmark importing
    start_baseline/stop_baseline does not load it (and its models' libraries) for nothing."""
    from pipecat.audio.utils import create_stream_resampler
    from pipecat.frames.frames import (
        InputAudioRawFrame,
        OutputAudioRawFrame,
        OutputTransportMessageFrame,
        OutputTransportMessageUrgentFrame,
    )
    from pipecat.serializers.base_serializer import FrameSerializer

    class ParleyWireSerializer(FrameSerializer):
        """Binary frames are s16le mono PCM both ways; transport messages are JSON text."""

        def __init__(self):
            super().__init__()
            self._input_rate = input_rate
            self._pipeline_rate = PIPELINE_IN_RATE
            self._resampler = create_stream_resampler(
                clear_after_secs=self._params.resampler_clear_after_secs
            )

        async def setup(self, setup):
            self._pipeline_rate = setup.audio_in_sample_rate

        async def serialize(self, frame):
            if isinstance(frame, OutputAudioRawFrame):
                return frame.audio
            if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
                if self.should_ignore_frame(frame):
                    return None
                return json.dumps(frame.message)
            return None

        async def deserialize(self, data):
            if isinstance(data, str):
                return None  # input_text and playback reports: not part of the baseline
            if not data or len(data) % 2:
                return None
            audio = data
            if self._input_rate != self._pipeline_rate:
                audio = await self._resampler.resample(data, self._input_rate, self._pipeline_rate)
            if not audio:
                return None
            return InputAudioRawFrame(audio=audio, sample_rate=self._pipeline_rate, num_channels=1)

    return ParleyWireSerializer()


def make_events_observer(send, output_transport):
    """An observer that speaks the protocol's events from the frames the stock pipeline pushes."""
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        InterruptionFrame,
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        TTSTextFrame,
        UserStoppedSpeakingFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.observers.base_observer import BaseObserver
    from pipecat.processors.frame_processor import FrameDirection

    ns_per_ms = 1_000_000

    class WireEvents(BaseObserver):
        """One queue, so events go out in the order their frames were pushed."""

        def __init__(self):
            super().__init__()
            self.turn_id = 0
            self._user_stopped_ns: int | None = None  # the user really stopped: VAD stop − stop_secs
            self._turn_end_ns: int | None = None  # the turn was handed to the LLM
            self._first_audio_ns: int | None = None
            self._answering = False  # between the LLM response's start and its last audio

        def user_turn(self, text: str) -> None:
            """Called by the session at the aggregator's on_user_turn_stopped, before the LLM runs."""
            self.turn_id += 1

        def stages_ms(self) -> dict[str, float]:
            stages = {}
            if self._user_stopped_ns is not None and self._turn_end_ns is not None:
                stages["endpoint"] = (self._turn_end_ns - self._user_stopped_ns) / ns_per_ms
            if self._user_stopped_ns is not None and self._first_audio_ns is not None:
                stages["voice_to_voice"] = (self._first_audio_ns - self._user_stopped_ns) / ns_per_ms
            if self._turn_end_ns is not None and self._first_audio_ns is not None:
                stages["response"] = (self._first_audio_ns - self._turn_end_ns) / ns_per_ms
            return stages

        async def on_push_frame(self, data):
            frame, now = data.frame, data.timestamp
            if data.first_push:
                if isinstance(frame, VADUserStartedSpeakingFrame):
                    self._user_stopped_ns = None
                elif isinstance(frame, VADUserStoppedSpeakingFrame):
                    self._user_stopped_ns = now - int(frame.stop_secs * 1e9)
                elif isinstance(frame, UserStoppedSpeakingFrame):
                    self._turn_end_ns, self._first_audio_ns = now, None
                elif isinstance(frame, LLMFullResponseStartFrame):
                    self._answering = True
            if data.source is not output_transport or data.direction != FrameDirection.DOWNSTREAM:
                return
            if isinstance(frame, BotStartedSpeakingFrame) and self._first_audio_ns is None:
                self._first_audio_ns = now
            elif isinstance(frame, TTSTextFrame) and self._answering and frame.text.strip():
                await send({"type": "agent.text", "turn_id": self.turn_id, "text": frame.text.strip()})
            elif isinstance(frame, LLMFullResponseEndFrame) and self._answering:
                # Queued behind the response's audio by the TTS and the transport: it comes out
                # of the transport once the last chunk has been written.
                self._answering = False
                await send({"type": "agent.audio_done", "turn_id": self.turn_id})
                await self._trace(interrupted=False)
            elif isinstance(frame, InterruptionFrame) and self._answering:
                self._answering = False
                await send({"type": "agent.interrupted", "turn_id": self.turn_id, "heard_text": ""})
                await self._trace(interrupted=True)

        async def _trace(self, interrupted: bool) -> None:
            stages = self.stages_ms()
            log.info("turn %d trace %s", self.turn_id, stages)
            await send(
                {
                    "type": "turn.trace",
                    "turn_id": self.turn_id,
                    "stages_ms": stages,
                    "interrupted": interrupted,
                }
            )

    return WireEvents()


# --- one conversation ----------------------------------------------------------------------------


class BaselineSession:
    """One conversation: the stock pipeline, run until the client leaves."""

    def __init__(self, websocket: WebSocket, shared: Shared, input_rate: int):
        self.id = uuid.uuid4().hex[:12]
        self._ws = websocket
        self._shared = shared
        self._input_rate = input_rate
        self._send_lock = asyncio.Lock()

    async def send(self, event: dict[str, Any]) -> None:
        if self._ws.client_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            with contextlib.suppress(RuntimeError, OSError):
                await self._ws.send_text(json.dumps(event))

    def _services(self):
        """The services a stock bot constructs per connection. Each loads its own models
        (Whisper, the Piper voice, Silero, Smart Turn) in its constructor: blocking."""
        from pipecat.processors.aggregators.llm_context import LLMContext
        from pipecat.processors.aggregators.llm_response_universal import (
            LLMContextAggregatorPair,
            LLMUserAggregatorParams,
        )
        from pipecat.services.piper.tts import PiperTTSService
        from pipecat.services.whisper.stt import WhisperSTTService

        from voice.turntaking.vad import CountedSileroVAD

        s = self._shared
        # Built on their stages' threads, so the native threads each model starts bear the
        # stage's name; then called there (StageCalls), for the CPU figures.
        stt = s.stt_pool.submit(
            lambda: WhisperSTTService(
                device=s.device,
                compute_type=s.compute_type,
                settings=WhisperSTTService.Settings(model=s.stt_model),
            )
        ).result()
        tts = s.tts_pool.submit(
            lambda: PiperTTSService(
                download_dir=s.voice.parent,  # the voice file is already there: nothing is downloaded
                use_cuda=s.device == "cuda",  # as Parley: Piper on the GPU when Whisper is
                settings=PiperTTSService.Settings(voice=s.voice.stem),
            )
        ).result()
        stt._model = StageCalls(stt._model, s.stt_pool)
        tts._voice = StageCalls(tts._voice, s.tts_pool)
        user, assistant = LLMContextAggregatorPair(
            LLMContext(),
            # Silero as pipecat makes it, counting its own CPU time (voice/turntaking/vad.py).
            user_params=LLMUserAggregatorParams(vad_analyzer=CountedSileroVAD()),
        )
        return stt, tts, user, assistant

    async def run(self) -> None:
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineParams, PipelineWorker
        from pipecat.services.openai.llm import OpenAILLMService
        from pipecat.transports.websocket.fastapi import (
            FastAPIWebsocketParams,
            FastAPIWebsocketTransport,
        )
        from pipecat.workers.runner import WorkerRunner

        s = self._shared
        stt, tts, user, assistant = await asyncio.to_thread(self._services)
        transport = FastAPIWebsocketTransport(
            self._ws,
            FastAPIWebsocketParams(
                serializer=make_serializer(self._input_rate),
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_in_sample_rate=PIPELINE_IN_RATE,
                audio_out_sample_rate=s.output_rate,
            ),
        )
        endpoint = s.llm.endpoint
        llm = OpenAILLMService(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            settings=OpenAILLMService.Settings(
                model=endpoint.model,
                system_instruction=s.system_instruction,
                temperature=s.settings.llm_temperature,
                max_completion_tokens=s.settings.llm_max_tokens,
            ),
        )
        pipeline = Pipeline([transport.input(), stt, user, llm, tts, transport.output(), assistant])
        events = make_events_observer(self.send, transport.output())
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=PIPELINE_IN_RATE, audio_out_sample_rate=s.output_rate),
            observers=[events],
            enable_rtvi=False,  # the client does not speak RTVI: its messages would be work thrown away
        )

        @user.event_handler("on_user_turn_stopped")
        async def _turn(_aggregator, _strategy, message):
            events.user_turn(message.content or "")
            text = (message.content or "").strip()
            log.info("session %s turn %d: user said %r", self.id, events.turn_id, text)
            await self.send(
                {"type": "user.transcript", "turn_id": events.turn_id, "text": text, "final": True}
            )

        @transport.event_handler("on_client_disconnected")
        async def _gone(_transport, _ws):
            await worker.cancel()

        @worker.event_handler("on_pipeline_started")
        async def _ready(_worker, _frame):
            await self.send(
                {"type": "session.ready", "session_id": self.id, "output_sample_rate": s.output_rate}
            )

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        try:
            await runner.run()
        finally:
            log.info("session %s ended after %d turns", self.id, events.turn_id)


# --- the server ----------------------------------------------------------------------------------


def create_app(host: str, port: int, device: str, prime_slots_n: int | None = None) -> FastAPI:
    state: dict[str, Any] = {"shared": None, "error": None, "sessions": 0}

    async def _load() -> None:
        try:
            state["shared"] = await asyncio.to_thread(load_shared, device, prime_slots_n)
            log.info("models: %s", state["shared"].describe())
            log.info("baseline ready on ws://%s:%d/ws", host, port)
        except Exception as exc:  # noqa: BLE001 - /health reports it
            state["error"] = f"{type(exc).__name__}: {exc}"
            log.exception("the baseline could not load its models")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        loader = asyncio.create_task(_load())
        yield
        loader.cancel()

    app = FastAPI(title="Parley baseline (stock pipecat)", lifespan=lifespan)

    from voice.observability.cpu import cpu_by_stage
    from voice.observability.metrics import Metrics

    def _cpu() -> dict[str, float]:
        shared = state["shared"]
        return cpu_by_stage(shared.llm.phase_seconds() if shared is not None else None)

    metrics = Metrics(cpu=_cpu)

    @app.get("/metrics")
    async def metrics_text():
        """CPU seconds by stage, counted as Parley counts them (for the benchmark)."""
        return Response(await asyncio.to_thread(metrics.render), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health():
        if state["shared"] is not None:
            return {"status": "ok", "sessions": state["sessions"], "models": state["shared"].describe()}
        if state["error"]:
            return JSONResponse({"status": "failed", "error": state["error"]}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        shared = state["shared"]
        if shared is None:
            await _send_error(websocket, "not_ready", state["error"] or "models are still loading")
            with contextlib.suppress(Exception):
                await websocket.close(code=WS_CLOSE_TRY_AGAIN)
            return
        rate = await _await_session_start(websocket)
        if rate is None:
            return
        state["sessions"] += 1
        session = BaselineSession(websocket, shared, rate)
        try:
            await session.run()
        except Exception:  # noqa: BLE001 - one conversation's failure must not end the server
            log.exception("session %s failed", session.id)
        finally:
            state["sessions"] -= 1
            if websocket.client_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close()

    return app


async def _send_error(websocket: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(json.dumps({"type": "error", "code": code, "message": message}))


async def _await_session_start(websocket: WebSocket) -> int | None:
    """The declared input rate of the first valid session.start; None when the client left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=max(0.0, deadline - loop.time()))
        except (TimeoutError, WebSocketDisconnect):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            await _send_error(websocket, "not_started", 'Send {"type": "session.start"} before any audio.')
            continue
        try:
            start = json.loads(text)
        except ValueError:
            await _send_error(websocket, "invalid_json", "Messages must be JSON.")
            continue
        if not isinstance(start, dict) or start.get("type") != "session.start":
            await _send_error(websocket, "not_started", "Send session.start before anything else.")
            continue
        rate = start.get("sample_rate", PIPELINE_IN_RATE)
        if rate not in WIRE_RATES:
            await _send_error(
                websocket,
                "unsupported_sample_rate",
                f"sample_rate {rate} is not supported: use one of {', '.join(map(str, WIRE_RATES))}.",
            )
            continue
        return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A stock pipecat bot with Parley's models and wire format.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--prime-slots",
        type=int,
        default=None,
        help="LLM slots to prefill with the knowledge prompt at start-up (default: all, as Parley does)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.path.insert(0, str(ROOT))  # run as a script: Parley's packages come from the checkout
    import uvicorn

    app = create_app(args.host, args.port, args.device, args.prime_slots)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), ws_max_size=None)
    return 0


# --- for the benchmark: run it as a subprocess -----------------------------------------------------


@dataclass
class BaselineServer:
    """A baseline server running in a subprocess."""

    url: str
    ws_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_baseline(
    port: int | None = None,
    *,
    device: str = "auto",
    log_dir: Path | None = None,
    env_extra: dict[str, str] | None = None,
    prime_slots: int | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> BaselineServer:
    """Start the baseline in a subprocess (a free port when `port` is None) and return once
    /health answers 200; raises RuntimeError, with the end of its log, if it exits or times out.

    `prime_slots`: LLM slots to prefill with the knowledge prompt (None: all of them, which a
    benchmark of concurrent callers needs; a single caller only ever uses one)."""
    import tempfile

    port = port or free_port()
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="parley-baseline-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"baseline-{port}.log"
    env = dict(os.environ)
    env.update(env_extra or {})
    command = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--device", device]
    if prime_slots is not None:
        command += ["--prime-slots", str(prime_slots)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    server = BaselineServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"baseline exited early:\n{server.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{server.url}/health", timeout=2)
            if response.status_code == 200:
                return server
            if response.json().get("status") == "failed":
                stop_baseline(server)
                raise RuntimeError(f"baseline failed to load: {response.json().get('error')}")
        time.sleep(HEALTH_POLL_S)
    stop_baseline(server)
    raise RuntimeError(f"baseline not ready in {timeout_s:.0f} s:\n{server.log()[-3000:]}")


def stop_baseline(server: BaselineServer) -> None:
    """Terminate the baseline (kill it if it lingers)."""
    server.process.terminate()
    try:
        server.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


if __name__ == "__main__":
    sys.exit(main())
