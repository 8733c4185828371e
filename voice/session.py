"""One conversation: runs its pipeline (voice/pipeline.py), feeds what the pipeline sees to its
turn flow (voice/conversation.py), and speaks the protocol's events.

The same conversation runs over `/ws` and over a phone call: the session's `Wire`
(voice/transports/wire.py) holds what differs, the serializer and where the events go. The
session is the one object the pipeline's stages report to: it implements their `TurnHooks`
(voice/watchers.py) and the wire's `WireHooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from pipecat.frames.frames import InterruptionWorkerFrame, LLMMessagesAppendFrame, LLMRunFrame
from pipecat.workers.runner import WorkerRunner
from pydantic import BaseModel

from agents.context import RESUME_PREFIX, is_resume_request, merge_continued_turn, record_heard_answer
from voice import protocol
from voice.config import Settings
from voice.conversation import Interruption, TurnFlow
from voice.echo import EchoGuard
from voice.engines import Engines
from voice.observability.metrics import Metrics
from voice.observability.tracing import Moment, TurnTracer
from voice.pipeline import ConversationPipeline, build_pipeline
from voice.playback import PlaybackLedger
from voice.transports.wire import Wire

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
# How long a typed turn waits for the interruption of the previous answer to pass through the
# pipeline (it takes a few ms; the bound only guards against a stuck stage).
INTERRUPT_SETTLE_TIMEOUT_S = 1.0
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


class Session:
    """A conversation over one wire: `/ws` or a phone call."""

    def __init__(self, wire: Wire, engines: Engines, settings: Settings, metrics: Metrics | None = None):
        self.id = uuid.uuid4().hex[:12]
        self.wire = wire
        self.engines = engines
        self.settings = settings
        self.end_reason: str | None = None  # the first reason given wins
        self.tracer = TurnTracer(time.monotonic_ns)
        self.flow = TurnFlow(self.tracer.now_ns)  # where the conversation is: every turn-state fact
        self.playback = PlaybackLedger(engines.tts.sample_rate, time.monotonic_ns)
        self.echo_guard = EchoGuard() if settings.echo_guard else None
        self.output_sample_rate: int = engines.tts.sample_rate
        self._metrics = metrics
        self._pipeline: ConversationPipeline | None = None
        self._typed_tasks: set[asyncio.Task] = set()
        self._stop_task: asyncio.Task | None = None

    @property
    def turn_id(self) -> int:
        return self.flow.turn_id

    async def send(self, event: BaseModel) -> None:
        """Deliver one protocol event now (ahead of queued audio), as the wire does it."""
        if isinstance(event, protocol.ErrorEvent) and self._metrics is not None:
            self._metrics.error(event.code)
        await self.wire.send(event)

    async def _queue(self, frame) -> None:
        await self._pipeline.worker.queue_frame(frame)

    # --- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the client leaves or the session is stopped."""
        self._pipeline = build_pipeline(self)
        worker = self._pipeline.worker

        @worker.event_handler("on_pipeline_started")
        async def _ready(_worker, _frame):
            # Only now does every stage (the VAD above all) take audio: a client that starts
            # talking the moment it hears "ready" must not lose its first word.
            await self.send(
                protocol.SessionReady(session_id=self.id, output_sample_rate=self.output_sample_rate)
            )

        @self._pipeline.transport.event_handler("on_client_disconnected")
        async def _gone(_transport, _ws):
            log.info("session %s: client disconnected", self.id)
            await self.stop(EndReason.DISCONNECTED)

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        try:
            await runner.run()
        except Exception:
            self.end_reason = self.end_reason or EndReason.FAILED
            raise
        finally:
            if self._pipeline.prefill is not None:
                await self._pipeline.prefill.close()
            self.end_reason = self.end_reason or EndReason.STOPPED
            log.info(
                "session %s (%s): ended after %d turns: %s",
                self.id,
                self.wire.kind,
                self.turn_id,
                self.end_reason,
            )

    async def stop(self, reason: str = EndReason.STOPPED) -> None:
        self.end_reason = self.end_reason or reason
        self.flow.end()
        for task in list(self._typed_tasks):
            task.cancel()
        if self._pipeline is not None and not self._pipeline.worker.has_finished():
            await self._pipeline.worker.cancel()

    # --- what the wire tells the session (WireHooks) -------------------------------------------

    async def client_error(self, error: protocol.ProtocolError) -> None:
        log.info("session %s: client error %s: %s", self.id, error.code, error.message)
        await self.send(protocol.ErrorEvent(code=error.code, message=error.message))
        if error.fatal:
            await self.wire.close(protocol.WS_CLOSE_TOO_BIG, error.code)
            await self.stop(EndReason.CLIENT_ERROR)

    async def typed_text(self, text: str, reply: str | None = None) -> None:
        """A typed turn, handed off so the transport's receive loop keeps reading audio."""
        task = asyncio.create_task(self._typed_turn(text, reply))
        self._typed_tasks.add(task)
        task.add_done_callback(self._typed_tasks.discard)

    async def _typed_turn(self, text: str, reply: str | None) -> None:
        """Interrupts the agent like speech would, then goes straight to the agent (or, with a
        `reply`, to that reply)."""
        if self.flow.typed_turn(text, reply):
            # The interruption travels the pipeline on its own; the new turn must start after it,
            # or it would be the one cancelled.
            await self._queue(InterruptionWorkerFrame())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flow.interruption_passed.wait(), INTERRUPT_SETTLE_TIMEOUT_S)
        await self._queue(LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True))

    async def keypad(self, digit: str) -> None:
        """A key the caller pressed: its configured reply is spoken without the LLM, cutting the
        agent off if it is talking. A key with no reply is only logged."""
        reply = self.settings.dtmf_replies.get(digit)
        if reply is None:
            log.info(
                "session %s: caller pressed %s; no reply is set for it (PARLEY_DTMF_REPLIES)", self.id, digit
            )
            return
        log.info("session %s: caller pressed %s", self.id, digit)
        await self.typed_text(KEYPAD_TURN_TEXT.format(digit=digit), reply)

    async def hang_up(self, reason: str) -> None:
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

    def audio_sent(self, nbytes: int) -> bool:
        if not self.flow.audio_sent():
            return False  # the rest of an interrupted answer, still on its way through the pipeline
        self.playback.sent(nbytes)
        self.tracer.mark(Moment.FIRST_AUDIO_SENT, self.flow.last_audio_ns)
        return True

    async def wait_for_floor(self) -> None:
        await self.flow.floor_open.wait()

    def playback_reported(self, turn_id: int, played_ms: float) -> None:
        self.playback.report(turn_id, played_ms)

    def playback_position(self) -> tuple[int, float]:
        return self.playback.turn_id, self.playback.sent_ms

    # --- what the pipeline's stages tell the session (TurnHooks) -------------------------------

    def agent_recent_text(self) -> str:
        return self.playback.recent_text()

    async def hold_agent(self) -> None:
        # The VAD speaks once it has heard vad_start_secs of speech: the sound began that long ago.
        onset = self.tracer.now_ns() - int(self.settings.vad_start_secs * NS_PER_S)
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
            merged = merge_continued_turn(self._pipeline.context.get_messages(), end.continues)
            if merged is not None:
                self._pipeline.knowledge.forget_last()
                text = merged
        self.flow.number_turn(text, merged=merged is not None)
        self.playback.new_answer(self.turn_id)
        record = self.tracer.start_turn(self.turn_id, typed=end.typed)
        record.text_chars = len(text)
        await self.send(protocol.UserTranscript(turn_id=self.turn_id, text=text))
        if self.flow.user_speaking and not end.typed:
            # The pause ran out just as the user started again: their interruption went by before
            # this turn did, so cancel its answer now; the turn continues with what they say next.
            await self._queue(InterruptionWorkerFrame())
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
        record_heard_answer(self._pipeline.context.get_messages(), self.playback.heard_text())
        self.flow.cut_off_settled(self.playback.unheard_text())

    async def turn_settled(self, text: str) -> None:
        """Every word is in and the pause that ends the turn is running: start on the answer's
        prompt (nothing is said or stored until the turn really ends)."""
        # Not after a cut-off answer: turn_ended rewrites the history to what was heard, so the
        # prompt prefilled now would not be the one sent.
        if self._pipeline.prefill is not None and not self.flow.answering and not self.flow.history_pending:
            await self._pipeline.knowledge.speculate(self._pipeline.context.get_messages(), text)

    async def speech_resumed(self) -> None:
        await self._pipeline.knowledge.cancel_speculation()

    async def nothing_heard(self) -> None:
        """The user's sound had no words (a cough, a door). If it cut off an answer nobody had
        heard yet, ask again: the question still stands."""
        if not self.flow.nothing_heard():
            return
        log.info(
            "session %s: noise interrupted an unheard answer; answering turn %d again", self.id, self.turn_id
        )
        await self._queue(LLMRunFrame())

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
        if self.echo_guard is not None:
            self.echo_guard.reset()  # the client drops the audio it held: that echo will never come
        await self.send(
            protocol.AgentInterrupted(turn_id=self.turn_id, heard_text=self.playback.heard_text())
        )
        if not self.flow.answer.done:
            await self._send_trace()  # (an answer whose audio was all sent had its trace then)

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
