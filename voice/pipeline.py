"""One conversation's pipecat pipeline, stage by stage, top to bottom.

Audio flows down, the agent's answer comes back out:

    client audio → wire input → Whisper STT → user turns (Silero VAD, end of turn)
      → turn watcher → knowledge (RAG) → LLM → Piper TTS → spoken-text events
      → wire output (real-time pacing) → playback watcher → assistant history → history watcher

An observer stamps the LLM's moments. The stages reach the session through its `TurnHooks` and
`WireHooks` (what they saw) and its `TurnFlow` (where the conversation is); see voice/watchers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipecat.frames.frames import Frame, InterruptionWorkerFrame, LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.workers.runner import WorkerRunner

from agents.context import SYSTEM_PROMPT, KnowledgeContextProcessor, merge_continued_turn, record_heard_answer
from agents.llm import make_llm_stage, prompt_renderer
from agents.speculation import PromptPrefill
from voice.audio import PIPELINE_SAMPLE_RATE
from voice.conversation import TurnFlow
from voice.observability.tracing import Moment
from voice.stt import WhisperSTTStage
from voice.transports.websocket import make_transport
from voice.tts import PiperTTSStage
from voice.turntaking.barge_in import InterruptionPolicy
from voice.turntaking.user_turns import user_turn_params
from voice.turntaking.vad import make_vad
from voice.watchers import (
    AnswerTimingObserver,
    HistoryWatcher,
    PlaybackWatcher,
    SessionClock,
    SpokenTextEmitter,
    UserTurnWatcher,
)

if TYPE_CHECKING:
    from voice.session import Session

# Audio at this rate or below carries only the telephone band (up to 4 kHz): Whisper needs a wider
# beam to hear it well (Settings.stt_narrowband_beam_size), and its whole 30 s window.
NARROWBAND_MAX_RATE = 8000
# How long a typed turn waits for the interruption of the previous answer to pass through the
# pipeline (it takes a few ms; the bound only guards against a stuck stage).
INTERRUPT_SETTLE_TIMEOUT_S = 1.0


@dataclass
class ConversationPipeline:
    """What the session keeps of its pipeline: the worker that runs it, and the stages it talks to."""

    worker: PipelineWorker
    transport: object  # pipecat's FastAPI WebSocket transport (its disconnect event ends the session)
    context: LLMContext  # the conversation's history, as the LLM sees it
    knowledge: KnowledgeContextProcessor
    prefill: PromptPrefill | None  # speculative prefill, when it is on
    flow: TurnFlow
    _typed: set[asyncio.Task] = field(default_factory=set)  # typed turns on their way in

    async def run(
        self, on_ready: Callable[[], Awaitable[None]], on_gone: Callable[[], Awaitable[None]]
    ) -> None:
        """Run until the client leaves or the worker is cancelled. `on_ready` once every stage takes
        audio; `on_gone` when the client disconnects."""

        @self.worker.event_handler("on_pipeline_started")
        async def _ready(_worker, _frame):
            await on_ready()

        @self.transport.event_handler("on_client_disconnected")
        async def _gone(_transport, _ws):
            await on_gone()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        try:
            await runner.run()
        finally:
            if self.prefill is not None:
                await self.prefill.close()

    async def queue(self, frame: Frame) -> None:
        await self.worker.queue_frame(frame)

    def typed_turn(self, text: str, reply: str | None = None) -> None:
        """A typed turn (or a key press with its `reply`), put in from a task of its own, so the
        transport's receive loop that hands it over keeps reading audio."""
        task = asyncio.create_task(self._put_typed_turn(text, reply))
        self._typed.add(task)
        task.add_done_callback(self._typed.discard)

    async def _put_typed_turn(self, text: str, reply: str | None) -> None:
        """Interrupts the agent like speech would, then goes straight to the agent."""
        if self.flow.typed_turn(text, reply):
            # The interruption travels the pipeline on its own; the new turn must start after it,
            # or it would be the one cancelled.
            await self.queue(InterruptionWorkerFrame())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flow.interruption_passed.wait(), INTERRUPT_SETTLE_TIMEOUT_S)
        await self.queue(LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True))

    async def typed_turns_settled(self) -> None:
        """Returns once every typed turn handed over has gone into the pipeline (for tests)."""
        while self._typed:
            await asyncio.gather(*self._typed, return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._typed):
            task.cancel()
        if not self.worker.has_finished():
            await self.worker.cancel()

    def merge_continued(self, first_text: str) -> str | None:
        """The user went on before hearing an answer: their turn and this one as one question in the
        history (the merged text), or None when there is nothing to merge."""
        merged = merge_continued_turn(self.context.get_messages(), first_text)
        if merged is not None:
            self.knowledge.forget_last()  # the facts given for the fragment count as not given
        return merged

    def record_heard(self, heard_text: str) -> None:
        """A cut-off answer stands in the history as what the user heard of it."""
        record_heard_answer(self.context.get_messages(), heard_text)

    async def speculate(self, text: str) -> None:
        """Start on the prompt for a question that is probably complete (nothing is said or stored)."""
        if self.prefill is not None:
            await self.knowledge.speculate(self.context.get_messages(), text)

    async def cancel_speculation(self) -> None:
        await self.knowledge.cancel_speculation()


def needs_full_window(input_sample_rate: int, flow: TurnFlow) -> Callable[[], bool]:
    """Asked at each speech segment: does Whisper need its whole window (voice/stt.py,
    WINDOW_MARGIN_FRAMES)? For telephone audio, and for a sound heard while the agent talks
    (which may be its own echo)."""
    narrowband = input_sample_rate <= NARROWBAND_MAX_RATE
    return lambda: narrowband or flow.agent_audible


def stt_beam_size(input_sample_rate: int, narrowband_beam_size: int) -> int | None:
    """A wider beam for telephone audio, where greedy decoding loses words; None: the default."""
    return narrowband_beam_size if input_sample_rate <= NARROWBAND_MAX_RATE else None


async def build_pipeline(session: Session) -> ConversationPipeline:
    s, e, wire = session.settings, session.engines, session.wire
    # Silero's ONNX session takes ~0.1 s of CPU to create: not on the event loop, where every other
    # caller's audio would wait for it.
    vad = await asyncio.to_thread(make_vad, s.vad_start_secs, s.vad_stop_secs)
    transport = make_transport(wire.websocket, wire.serializer(session), session.output_sample_rate)
    context = LLMContext()
    user_params = user_turn_params(
        session,
        session.flow,
        vad,
        s.turn_pause_secs,
        InterruptionPolicy(s.backchannel_words),
        confirm_secs=s.interrupt_confirm_secs,
        resume_secs=s.interrupt_resume_secs,
        # With Smart Turn, the pause that ends a turn depends on whether it sounds finished.
        pause_complete_secs=s.turn_pause_complete_secs if e.turn else None,
        pause_incomplete_secs=s.turn_pause_incomplete_secs if e.turn else None,
    )
    user_turns, assistant_history = LLMContextAggregatorPair(context, user_params=user_params)
    llm = make_llm_stage(e.llm, SYSTEM_PROMPT, s.llm_max_tokens, s.llm_temperature)
    prefill = PromptPrefill(e.llm, prompt_renderer(llm, SYSTEM_PROMPT)) if s.speculative_prefill else None
    tracer = session.tracer
    knowledge = KnowledgeContextProcessor(
        e.retriever,
        s.rag_top_k,
        on_start=lambda: tracer.mark(Moment.RAG_START),
        on_end=lambda: tracer.mark(Moment.RAG_END),
        prefill=prefill,
    )
    beam = stt_beam_size(wire.input_sample_rate, s.stt_narrowband_beam_size)
    pipeline = Pipeline(
        [
            transport.input(),
            WhisperSTTStage(
                e.stt,
                tracer,
                e.turn,
                beam_size=beam,
                full_window=needs_full_window(wire.input_sample_rate, session.flow),
                pause=user_params.vad_analyzer,  # the VAD's silence so far: Whisper may start early
                early_quiet_s=s.stt_early_quiet_secs,
            ),
            user_turns,
            UserTurnWatcher(session),
            knowledge,
            llm,
            PiperTTSStage(e.tts, tracer),
            SpokenTextEmitter(session.flow, session.playback),
            transport.output(),
            PlaybackWatcher(session),
            assistant_history,
            HistoryWatcher(session.flow),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=PIPELINE_SAMPLE_RATE, audio_out_sample_rate=session.output_sample_rate
        ),
        enable_rtvi=False,  # Parley speaks its own protocol; RTVI would add ~100 messages a session
        idle_timeout_secs=None,  # a silent caller is not an error; the socket closing ends the session
        enable_turn_tracking=False,  # turns are traced by voice/observability/tracing.py
        clock=SessionClock(tracer.now_ns),  # frames are stamped on the trace's clock
        observers=[AnswerTimingObserver(tracer, session.flow)],
    )
    return ConversationPipeline(worker, transport, context, knowledge, prefill, session.flow)
