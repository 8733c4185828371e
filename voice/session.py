"""One conversation: builds its pipeline, runs it, and speaks the protocol's events.

The pipeline, top to bottom (audio flows down, the agent's answer comes back out):

    client audio → WebSocket input → Whisper STT → user turns (Silero VAD, end of turn)
      → turn watcher → knowledge (RAG) → LLM → LLM watcher → Piper TTS → spoken-text events
      → WebSocket output (real-time pacing) → playback watcher → assistant history

The same conversation runs over `/ws` and over a phone call: the session's `Wire`
(voice/transports/wire.py) holds what differs, the serializer and where the events go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from pipecat.frames.frames import InterruptionWorkerFrame, LLMMessagesAppendFrame, LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.workers.runner import WorkerRunner
from pydantic import BaseModel

from agents.context import (
    RESUME_PREFIX,
    SYSTEM_PROMPT,
    KnowledgeContextProcessor,
    is_resume_request,
    merge_continued_turn,
    record_heard_answer,
)
from agents.llm import make_llm_stage, prompt_renderer
from agents.speculation import PromptPrefill
from voice import protocol
from voice.audio import PIPELINE_SAMPLE_RATE
from voice.config import Settings
from voice.conversation import Interruption, TurnFlow
from voice.echo import EchoGuard
from voice.engines import Engines
from voice.metrics import Metrics
from voice.playback import PlaybackLedger
from voice.stt import WhisperSTTStage
from voice.tracing import Moment, TurnTracer
from voice.transports.websocket import make_transport
from voice.transports.wire import Wire, WireHooks
from voice.tts import PiperTTSStage
from voice.turn_events import (
    HistoryWatcher,
    LLMWatcher,
    PlaybackWatcher,
    SpokenTextEmitter,
    TurnHooks,
    UserTurnWatcher,
)
from voice.turns import InterruptionPolicy, user_turn_params

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
# How long a typed turn waits for the interruption of the previous answer to pass through the
# pipeline (it takes a few ms; the bound only guards against a stuck stage).
INTERRUPT_SETTLE_TIMEOUT_S = 1.0
# Audio at this rate or below carries only the telephone band (up to 4 kHz): Whisper needs a wider
# beam to hear it well (Settings.stt_narrowband_beam_size).
NARROWBAND_MAX_RATE = 8000
# After a phone caller's `stop`, how long the far end's own close of the socket may take before
# the session stops anyway: it comes within milliseconds; a second is ample.
HANG_UP_CLOSE_GRACE_S = 1.0
# What a keypad press puts in the history as the user's turn: the LLM then knows, on later turns,
# that the caller pressed a key and what the agent said to it.
KEYPAD_TURN_TEXT = "(pressed {digit} on the keypad)"


class EndReason:
    """Why a session ended: in the log and in `parley_sessions_ended_total{reason}`."""

    HUNG_UP = "hung_up"  # the phone caller hung up (Twilio's `stop`)
    DISCONNECTED = "disconnected"  # the socket closed or dropped
    CLIENT_ERROR = "client_error"  # a client mistake the session cannot go on after (a 1 MiB message)
    STOPPED = "stopped"  # the server stopped the session (shutting down)
    FAILED = "failed"  # a bug: the server log has the traceback


class Session(TurnHooks):
    """A conversation over one wire: `/ws` or a phone call."""

    def __init__(
        self,
        wire: Wire,
        engines: Engines,
        settings: Settings,
        metrics: Metrics | None = None,
    ):
        self.id = uuid.uuid4().hex[:12]
        self._wire = wire
        self._engines = engines
        self._settings = settings
        self.end_reason: str | None = None  # the first reason given wins
        self.tracer = TurnTracer(time.monotonic_ns)
        self.flow = TurnFlow(self.tracer.now_ns)  # where the conversation is: every turn-state fact
        self._typed_tasks: set[asyncio.Task] = set()
        self._stop_task: asyncio.Task | None = None
        self._worker: PipelineWorker | None = None
        self._metrics = metrics
        self.playback = PlaybackLedger(engines.tts.sample_rate, time.monotonic_ns)
        self._echo = EchoGuard() if settings.echo_guard else None
        self._prefill: PromptPrefill | None = None

    def _stt_beam_size(self) -> int | None:
        """A wider beam for telephone audio, where greedy decoding loses words; None: the default."""
        if self._wire.input_sample_rate <= NARROWBAND_MAX_RATE:
            return self._settings.stt_narrowband_beam_size
        return None

    @property
    def output_sample_rate(self) -> int:
        return self._engines.tts.sample_rate

    # --- sending -------------------------------------------------------------------------------

    async def send(self, event: BaseModel) -> None:
        """Deliver one protocol event now (ahead of queued audio), as the wire does it."""
        if isinstance(event, protocol.ErrorEvent) and self._metrics is not None:
            self._metrics.error(event.code)
        await self._wire.send(event)

    async def _client_error(self, exc: protocol.ProtocolError) -> None:
        log.info("session %s: client error %s: %s", self.id, exc.code, exc.message)
        await self.send(protocol.ErrorEvent(code=exc.code, message=exc.message))
        if exc.fatal:
            await self._wire.close(protocol.WS_CLOSE_TOO_BIG, exc.code)
            await self.stop(EndReason.CLIENT_ERROR)

    # --- pipeline ------------------------------------------------------------------------------

    def _build(self) -> PipelineWorker:
        s, e = self._settings, self._engines
        serializer = self._wire.serializer(
            WireHooks(
                on_error=self._client_error,
                on_text=self._typed_text,
                on_keypad=self._keypad,
                on_hang_up=self._hang_up,
                on_audio_sent=self._audio_sent,
                wait_for_floor=self.flow.floor_open.wait,
                on_playback=self.playback.report,
                playback_position=lambda: (self.playback.turn_id, self.playback.sent_ms),
                output_sample_rate=self.output_sample_rate,
                echo_guard=self._echo,
            )
        )
        transport = make_transport(self._wire.websocket, serializer, self.output_sample_rate)
        context = LLMContext()
        self._context = context
        user_turns, assistant_history = LLMContextAggregatorPair(
            context,
            user_params=user_turn_params(
                self,
                s.vad_start_secs,
                s.vad_stop_secs,
                s.turn_pause_secs,
                InterruptionPolicy(s.backchannel_words),
                confirm_secs=s.interrupt_confirm_secs,
                resume_secs=s.interrupt_resume_secs,
                on_nothing_heard=self._nothing_heard,
                # With Smart Turn, the pause that ends a turn depends on whether it sounds finished.
                pause_complete_secs=s.turn_pause_complete_secs if e.turn else None,
                pause_incomplete_secs=s.turn_pause_incomplete_secs if e.turn else None,
                on_settled=self._turn_settled,
                on_speech_resumed=self._speech_resumed,
            ),
        )
        llm = make_llm_stage(e.llm, SYSTEM_PROMPT, s.llm_max_tokens, s.llm_temperature)
        if s.speculative_prefill:
            self._prefill = PromptPrefill(e.llm, prompt_renderer(llm, SYSTEM_PROMPT))
        knowledge = KnowledgeContextProcessor(
            e.retriever,
            s.rag_top_k,
            on_start=lambda: self.tracer.mark(Moment.RAG_START),
            on_end=lambda: self.tracer.mark(Moment.RAG_END),
            prefill=self._prefill,
        )
        self._knowledge = knowledge
        pipeline = Pipeline(
            [
                transport.input(),
                WhisperSTTStage(e.stt, self.tracer, e.turn, beam_size=self._stt_beam_size()),
                user_turns,
                UserTurnWatcher(self),
                knowledge,
                llm,
                LLMWatcher(self.tracer, self),
                PiperTTSStage(e.tts, self.tracer),
                SpokenTextEmitter(self, self.playback),
                transport.output(),
                PlaybackWatcher(self),
                assistant_history,
                HistoryWatcher(self),
            ]
        )
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=PIPELINE_SAMPLE_RATE, audio_out_sample_rate=self.output_sample_rate
            ),
            enable_rtvi=False,  # Parley speaks its own protocol; RTVI would add ~100 messages a session
            idle_timeout_secs=None,  # a silent caller is not an error; the socket closing ends the session
            enable_turn_tracking=False,  # turns are traced by voice/tracing.py
        )

        @transport.event_handler("on_client_disconnected")
        async def _gone(_transport, _ws):
            log.info("session %s: client disconnected", self.id)
            await self.stop(EndReason.DISCONNECTED)

        return worker

    async def run(self) -> None:
        """Run until the client leaves or the session is stopped."""
        self._worker = self._build()

        @self._worker.event_handler("on_pipeline_started")
        async def _ready(_worker, _frame):
            # Only now does every stage (the VAD above all) take audio: a client that starts
            # talking the moment it hears "ready" must not lose its first word.
            await self.send(
                protocol.SessionReady(session_id=self.id, output_sample_rate=self.output_sample_rate)
            )

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self._worker)
        try:
            await runner.run()
        except Exception:
            self.end_reason = self.end_reason or EndReason.FAILED
            raise
        finally:
            if self._prefill is not None:
                await self._prefill.close()
            self.end_reason = self.end_reason or EndReason.STOPPED
            log.info(
                "session %s (%s): ended after %d turns: %s",
                self.id,
                self._wire.kind,
                self.flow.turn_id,
                self.end_reason,
            )

    async def stop(self, reason: str = EndReason.STOPPED) -> None:
        self.end_reason = self.end_reason or reason
        self.flow.end()
        for task in list(self._typed_tasks):
            task.cancel()
        if self._worker is not None and not self._worker.has_finished():
            await self._worker.cancel()

    # --- hooks from the pipeline -----------------------------------------------------------------

    async def _typed_text(self, text: str, reply: str | None = None) -> None:
        """A typed turn, handed off so the transport's receive loop keeps reading audio."""
        task = asyncio.create_task(self._typed_turn(text, reply))
        self._typed_tasks.add(task)
        task.add_done_callback(self._typed_tasks.discard)

    async def _keypad(self, digit: str) -> None:
        """A key the caller pressed: its configured reply is spoken without the LLM, cutting the
        agent off if it is talking. A key with no reply is only logged."""
        reply = self._settings.dtmf_replies.get(digit)
        if reply is None:
            log.info(
                "session %s: caller pressed %s; no reply is set for it (PARLEY_DTMF_REPLIES)", self.id, digit
            )
            return
        log.info("session %s: caller pressed %s", self.id, digit)
        await self._typed_text(KEYPAD_TURN_TEXT.format(digit=digit), reply)

    async def _hang_up(self, reason: str) -> None:
        """The far end ended the call. Stopped from a task of its own: this is called from the
        transport's receive loop, which stopping the session cancels."""
        log.info("session %s: %s", self.id, reason)
        self.end_reason = self.end_reason or EndReason.HUNG_UP  # now: the socket closes right after
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop_after_hang_up())

    async def _stop_after_hang_up(self) -> None:
        # Twilio (and the simulator) close the socket right after `stop`, and that close ends the
        # session through the transport. Stopping at once raced it: pipecat then closed a socket
        # the far end was closing too, and logged an error for a normal hang-up.
        await asyncio.sleep(HANG_UP_CLOSE_GRACE_S)
        await self.stop(EndReason.HUNG_UP)

    async def _typed_turn(self, text: str, reply: str | None) -> None:
        """Interrupts the agent like speech would, then goes straight to the agent (or, with a
        `reply`, to that reply)."""
        if self.flow.typed_turn(text, reply):
            # The interruption travels the pipeline on its own; the new turn must start after it,
            # or it would be the one cancelled.
            await self._worker.queue_frame(InterruptionWorkerFrame())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flow.interruption_passed.wait(), INTERRUPT_SETTLE_TIMEOUT_S)
        await self._worker.queue_frame(
            LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)
        )

    def _audio_sent(self, nbytes: int) -> bool:
        """The serializer asks before each agent audio chunk goes out; False drops it."""
        if not self.flow.audio_sent():
            return False  # the rest of an interrupted answer, still on its way through the pipeline
        self.playback.sent(nbytes)
        self.tracer.mark(Moment.FIRST_AUDIO_SENT, self.flow.last_audio_ns)
        return True

    # --- the floor (called by the barge-in strategy) ---------------------------------------------

    def agent_audible(self) -> bool:
        return self.flow.agent_audible

    def agent_recent_text(self) -> str:
        return self.playback.recent_text()

    async def hold_agent(self) -> None:
        # The VAD speaks once it has heard vad_start_secs of speech: the sound began that long ago.
        onset = self.tracer.now_ns() - int(self._settings.vad_start_secs * NS_PER_S)
        if not self.flow.hold(onset):
            return
        log.info("session %s turn %d: user sound while the agent talks; holding", self.id, self.turn_id)
        await self.send(protocol.AgentPaused(turn_id=self.turn_id))

    async def release_agent(self, reason: str) -> None:
        if not self.flow.release():
            return
        log.info("session %s turn %d: not an interruption (%s); resuming", self.id, self.turn_id, reason)
        if self._metrics is not None:
            self._metrics.false_interruption(reason)
        await self.send(protocol.AgentResumed(turn_id=self.turn_id, reason=reason))

    async def user_speech_started(self) -> None:
        self.flow.user_started()
        await self.send(protocol.UserSpeechStarted())

    async def user_speech_stopped(self, stop_secs: float) -> None:
        self.flow.user_stopped()
        now = self.tracer.now_ns()
        self.tracer.mark_pending(Moment.VAD_STOPPED, now)
        # The VAD speaks after stop_secs of silence; the user really stopped that long ago.
        self.tracer.mark_pending(Moment.USER_STOPPED, now - int(stop_secs * NS_PER_S))
        await self.send(protocol.UserSpeechStopped())

    @property
    def turn_id(self) -> int:
        return self.flow.turn_id

    async def turn_ended(self, text: str) -> str | None:
        """The user's turn is over. Returns a reply to speak instead of asking the LLM, if any."""
        end = self.flow.turn_ended(text)
        if end.after_cut_off:
            await self._settle_cut_off()
        if end.repeat:
            self.playback.new_answer(self.turn_id)
            self.tracer.start_turn(self.turn_id, typed=True)  # the speech was timed the first time
            return None
        merged = None
        if end.continues is not None:
            # The user resumed before hearing anything: the same turn, the whole question.
            merged = merge_continued_turn(self._context.get_messages(), end.continues)
            if merged is not None:
                self._knowledge.forget_last()
                text = merged
        self.flow.number_turn(text, merged=merged is not None)
        self.playback.new_answer(self.turn_id)
        record = self.tracer.start_turn(self.turn_id, typed=end.typed)
        record.text_chars = len(text)
        await self.send(protocol.UserTranscript(turn_id=self.turn_id, text=text))
        if self.flow.user_speaking and not end.typed:
            # The pause ran out just as the user started again: their interruption went by before
            # this turn did, so cancel its answer now; the turn continues with what they say next.
            await self._worker.queue_frame(InterruptionWorkerFrame())
            return None
        if (reply := self.flow.answer.reply) is not None:
            return reply  # a keypad press: the deployment's reply, as it is
        if self.flow.resumable() and is_resume_request(text):
            # Said from what the agent had prepared: the small default LLM tends to repeat the
            # question back instead of continuing its own cut-off answer.
            log.info("session %s turn %d: resuming the cut-off answer", self.id, self.turn_id)
            return f"{RESUME_PREFIX} {self.flow.take_unsaid()}"
        return None

    async def _settle_cut_off(self) -> None:
        """The turn before was cut off: its history is corrected to what the user heard."""
        # A barge-in's turn can end moments after it began: let the interruption pass the
        # assistant history first, or its version of the cut-off answer would land after this.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flow.history_settled.wait(), INTERRUPT_SETTLE_TIMEOUT_S)
        record_heard_answer(self._context.get_messages(), self.playback.heard_text())
        self.flow.cut_off_settled(self.playback.unheard_text())

    async def _turn_settled(self, text: str) -> None:
        """Every word is in and the pause that ends the turn is running: start on the answer's
        prompt (nothing is said or stored until the turn really ends)."""
        # Not after a cut-off answer: turn_ended rewrites the history to what was heard, so the
        # prompt prefilled now would not be the one sent.
        if self._prefill is not None and not self.flow.answering and not self.flow.history_pending:
            await self._knowledge.speculate(self._context.get_messages(), text)

    async def _speech_resumed(self) -> None:
        await self._knowledge.cancel_speculation()

    def current_turn_id(self) -> int:
        return self.turn_id

    async def _nothing_heard(self) -> None:
        """The user's sound had no words (a cough, a door). If it cut off an answer nobody had
        heard yet, ask again: the question still stands."""
        if not self.flow.nothing_heard():
            return
        log.info(
            "session %s: noise interrupted an unheard answer; answering turn %d again", self.id, self.turn_id
        )
        await self._worker.queue_frame(LLMRunFrame())

    def llm_response_started(self) -> None:
        self.flow.answer_started()

    def response_in_progress(self) -> bool:
        return self.flow.response_in_progress

    def answer_cut_off(self) -> bool:
        return self.flow.cut_off

    async def interrupted(self) -> None:
        # pipecat interrupts at every turn start; only an answer the user was hearing is cut off (one
        # nobody heard yet means the user is continuing their turn).
        if self.flow.interrupted() is not Interruption.CUT_OFF:
            return
        record = self.tracer.current
        if record is not None:
            record.interrupted = True
            if (hold := self.flow.answer.barge_in) is not None:
                self.tracer.mark(Moment.BARGE_IN_ONSET, hold.onset_ns)
                self.tracer.mark(Moment.BARGE_IN_LAST_AUDIO, hold.last_audio_ns)
        self.playback.stop()
        if self._echo is not None:
            self._echo.reset()  # the client drops the audio it held: that echo will never come
        await self.send(
            protocol.AgentInterrupted(turn_id=self.turn_id, heard_text=self.playback.heard_text())
        )
        await self._send_trace()

    def history_settled(self) -> None:
        self.flow.history_settled.set()

    async def audio_done(self) -> None:
        if not self.flow.audio_done():
            return
        self.tracer.mark(Moment.AUDIO_DONE)
        await self.send(protocol.AgentAudioDone(turn_id=self.turn_id))
        await self._send_trace()

    async def stage_failed(self, error: str) -> None:
        log.error("session %s turn %d: a stage failed: %s", self.id, self.turn_id, error)
        await self.send(
            protocol.ErrorEvent(
                code="stage_failed",
                message=f"The agent could not answer this turn ({error}). Try again; if it persists, "
                "check the server log (and PARLEY_LLM_BASE_URL for a remote LLM).",
            )
        )

    async def _send_trace(self) -> None:
        record = self.tracer.current
        if record is None:
            return
        stages = record.stages_ms()
        log.info("session %s turn %d trace %s", self.id, record.turn_id, stages)
        await self.send(
            protocol.TurnTrace(turn_id=record.turn_id, stages_ms=stages, interrupted=record.interrupted)
        )
        if self._metrics is not None:
            self._metrics.turn(self.id, record)
