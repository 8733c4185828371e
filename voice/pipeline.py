"""One conversation's pipecat pipeline, stage by stage, top to bottom.

Audio flows down, the agent's answer comes back out:

    client audio → wire input → Whisper STT → user turns (Silero VAD, end of turn)
      → turn watcher → knowledge (RAG) → LLM → LLM watcher → Piper TTS → spoken-text events
      → wire output (real-time pacing) → playback watcher → assistant history → history watcher

The stages reach the session through its `TurnHooks` and `WireHooks` (what they saw) and its
`TurnFlow` (where the conversation is); see voice/watchers.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair

from agents.context import SYSTEM_PROMPT, KnowledgeContextProcessor
from agents.llm import make_llm_stage, prompt_renderer
from agents.speculation import PromptPrefill
from voice.audio import PIPELINE_SAMPLE_RATE
from voice.observability.tracing import Moment
from voice.stt import WhisperSTTStage
from voice.transports.websocket import make_transport
from voice.tts import PiperTTSStage
from voice.turntaking.barge_in import InterruptionPolicy
from voice.turntaking.user_turns import user_turn_params
from voice.watchers import (
    HistoryWatcher,
    LLMWatcher,
    PlaybackWatcher,
    SpokenTextEmitter,
    UserTurnWatcher,
)

if TYPE_CHECKING:
    from voice.session import Session

# Audio at this rate or below carries only the telephone band (up to 4 kHz): Whisper needs a wider
# beam to hear it well (Settings.stt_narrowband_beam_size).
NARROWBAND_MAX_RATE = 8000


@dataclass
class ConversationPipeline:
    """What the session keeps of its pipeline: the worker that runs it, and the stages it talks to."""

    worker: PipelineWorker
    transport: object  # pipecat's FastAPI WebSocket transport (its disconnect event ends the session)
    context: LLMContext  # the conversation's history, as the LLM sees it
    knowledge: KnowledgeContextProcessor
    prefill: PromptPrefill | None  # speculative prefill, when it is on


def stt_beam_size(input_sample_rate: int, narrowband_beam_size: int) -> int | None:
    """A wider beam for telephone audio, where greedy decoding loses words; None: the default."""
    return narrowband_beam_size if input_sample_rate <= NARROWBAND_MAX_RATE else None


def build_pipeline(session: Session) -> ConversationPipeline:
    s, e, wire = session.settings, session.engines, session.wire
    transport = make_transport(wire.websocket, wire.serializer(session), session.output_sample_rate)
    context = LLMContext()
    user_turns, assistant_history = LLMContextAggregatorPair(
        context,
        user_params=user_turn_params(
            session,
            session.flow,
            s.vad_start_secs,
            s.vad_stop_secs,
            s.turn_pause_secs,
            InterruptionPolicy(s.backchannel_words),
            confirm_secs=s.interrupt_confirm_secs,
            resume_secs=s.interrupt_resume_secs,
            # With Smart Turn, the pause that ends a turn depends on whether it sounds finished.
            pause_complete_secs=s.turn_pause_complete_secs if e.turn else None,
            pause_incomplete_secs=s.turn_pause_incomplete_secs if e.turn else None,
        ),
    )
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
            WhisperSTTStage(e.stt, tracer, e.turn, beam_size=beam),
            user_turns,
            UserTurnWatcher(session),
            knowledge,
            llm,
            LLMWatcher(tracer, session.flow),
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
    )
    return ConversationPipeline(worker, transport, context, knowledge, prefill)
