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

from pipecat.frames.frames import InterruptionWorkerFrame, LLMRunFrame
from pydantic import BaseModel

from agents.context import RESUME_PREFIX, is_resume_request
from voice import protocol
from voice.config import Settings
from voice.conversation import Interruption, TurnFlow
from voice.echo import EchoGuard
from voice.engines import Engines
from voice.observability.metrics import EndReason, Metrics
from voice.observability.tracing import NS_PER_S, Moment, TurnRecord, TurnTracer
from voice.pipeline import INTERRUPT_SETTLE_TIMEOUT_S, ConversationPipeline, build_pipeline
from voice.playback import PlaybackLedger
from voice.transports.wire import Wire

log = logging.getLogger(__name__)


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

    @property
    def turn_id(self) -> int:
        return self.flow.turn_id

    async def send(self, event: BaseModel) -> None:
        """Deliver one protocol event now (ahead of queued audio), as the wire does it."""
        if isinstance(event, protocol.ErrorEvent) and self._metrics is not None:
            self._metrics.error(event.code)
        await self.wire.send(event)

    # --- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the client leaves or the session is stopped."""
        self._pipeline = await build_pipeline(self)
        try:
            await self._pipeline.run(on_ready=self._ready, on_gone=self._gone)
        except Exception:
            self.ending(EndReason.FAILED)
            raise
        finally:
            self.ending(EndReason.STOPPED)
            log.info(
                "session %s (%s): ended after %d turns: %s",
                self.id,
                self.wire.kind,
                self.turn_id,
                self.end_reason,
            )

    async def _ready(self) -> None:
        # Only now does every stage (the VAD above all) take audio: a client that starts talking
        # the moment it hears "ready" must not lose its first word.
        await self.send(protocol.SessionReady(session_id=self.id, output_sample_rate=self.output_sample_rate))

    async def _gone(self) -> None:
        log.info("session %s: client disconnected", self.id)
        await self.stop(EndReason.DISCONNECTED)

    async def stop(self, reason: str = EndReason.STOPPED) -> None:
        self.ending(reason)
        self.flow.end()
        if self._pipeline is not None:
            await self._pipeline.stop()

    # --- what the wire tells the session (WireHooks) -------------------------------------------

    async def client_error(self, error: protocol.ProtocolError) -> None:
        log.info("session %s: client error %s: %s", self.id, error.code, error.message)
        await self.send(protocol.ErrorEvent(code=error.code, message=error.message))
        if error.fatal:
            await self.wire.close(protocol.WS_CLOSE_TOO_BIG, error.code)
            await self.stop(EndReason.CLIENT_ERROR)

    async def typed_text(self, text: str, reply: str | None = None) -> None:
        self._pipeline.typed_turn(text, reply)

    def ending(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason

    def audio_sent(self, nbytes: int) -> bool:
        if not self.flow.audio_sent():
            return False  # the rest of an interrupted answer, still on its way through the pipeline
        self.playback.sent(nbytes)
        self.tracer.mark(Moment.FIRST_AUDIO_SENT, self.flow.last_audio_ns)
        return True

    async def wait_for_floor(self) -> None:
        await self.flow.floor_open.wait()

    def answer_cut_off(self) -> bool:
        return self.flow.cut_off

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
        self.tracer.speech_stopped(stop_secs)
        await self.send(protocol.UserSpeechStopped())

    async def turn_ended(self, text: str) -> str | None:
        """The user's turn is over. Returns a reply to speak instead of asking the LLM, if any."""
        end = self.flow.turn_ended(text)
        if end.after_cut_off:
            await self._settle_cut_off()
        if end.repeat:
            self._open_answer(typed=True)  # the speech was timed the first time
            return None
        # The user resumed before hearing anything: the same turn, the whole question.
        merged = self._pipeline.merge_continued(end.continues) if end.continues is not None else None
        text = merged or text
        self.flow.number_turn(text, merged=merged is not None)
        self._open_answer(typed=end.typed).text_chars = len(text)
        await self.send(protocol.UserTranscript(turn_id=self.turn_id, text=text))
        if self.flow.user_speaking and not end.typed:
            # The pause ran out just as the user started again: their interruption went by before
            # this turn did, so cancel its answer now; the turn continues with what they say next.
            await self._pipeline.queue(InterruptionWorkerFrame())
            return None
        if (reply := self.flow.answer.reply) is not None:
            return reply  # a keypad press: the deployment's reply, as it is
        if self.flow.resumable() and is_resume_request(text):
            # Said from what the agent had prepared: the small default LLM tends to repeat the
            # question back instead of continuing its own cut-off answer.
            log.info("session %s turn %d: resuming the cut-off answer", self.id, self.turn_id)
            return f"{RESUME_PREFIX} {self.flow.take_unsaid()}"
        return None

    def _open_answer(self, typed: bool) -> TurnRecord:
        self.playback.new_answer(self.turn_id)
        return self.tracer.start_turn(self.turn_id, typed=typed)

    async def _settle_cut_off(self) -> None:
        """The turn before was cut off: its history is corrected to what the user heard."""
        # A barge-in's turn can end moments after it began: let the interruption pass the
        # assistant history first, or its version of the cut-off answer would land after this.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flow.history_settled.wait(), INTERRUPT_SETTLE_TIMEOUT_S)
        self._pipeline.record_heard(self.playback.heard_text())
        self.flow.cut_off_settled(self.playback.unheard_text())

    async def turn_settled(self, text: str) -> None:
        """Every word is in and the pause that ends the turn is running: start on the answer's
        prompt (nothing is said or stored until the turn really ends)."""
        # Not after a cut-off answer: turn_ended rewrites the history to what was heard, so the
        # prompt prefilled now would not be the one sent.
        if not self.flow.answering and not self.flow.history_pending:
            await self._pipeline.speculate(text)

    async def speech_resumed(self) -> None:
        await self._pipeline.cancel_speculation()

    async def nothing_heard(self) -> None:
        """The user's sound had no words (a cough, a door). If it cut off an answer nobody had
        heard yet, ask again: the question still stands."""
        if not self.flow.nothing_heard():
            return
        log.info(
            "session %s: noise interrupted an unheard answer; answering turn %d again", self.id, self.turn_id
        )
        await self._pipeline.queue(LLMRunFrame())

    async def interrupted(self) -> None:
        # pipecat interrupts at every turn start; only an answer the user was hearing is cut off (one
        # nobody heard yet means the user is continuing their turn).
        if self.flow.interrupted() is not Interruption.CUT_OFF:
            return
        self.tracer.cut_off(self.flow.answer.barge_in)
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
        await self.send(protocol.stage_failed(error))

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
