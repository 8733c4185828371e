"""What watches the pipeline's frames: small stages that turn what happens into protocol events
and trace moments (they pass every frame on unchanged), and an observer for what needs no place
in the pipeline.

A watcher is a stage only where its place matters: after the user aggregator (a turn is handed to
the agent there, and a prepared reply can stand in for the LLM), before the output transport (a
sentence's text goes out just before its audio), after it (the audio before a frame has been
sent), and last (an interruption has passed the history). The LLM's moments need no place: pipecat
tells `AnswerTimingObserver` of each frame as it is pushed, stamped on the pipeline's clock, which
is the session's (`SessionClock`). The STT and TTS stages stamp their own work's moments.

Every stage reaches the session one way: what it *saw* goes to the session's `TurnHooks` (the
session does what it means: events to the client, frames, the history); where the conversation
*is*, it reads from (and, for facts with no I/O, notes in) the session's `TurnFlow`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pipecat.clocks.base_clock import BaseClock
from pipecat.frames.frames import (
    AggregatedTextFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputTransportMessageFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voice import protocol
from voice.conversation import Answer, TurnFlow
from voice.observability.tracing import Moment, TurnTracer
from voice.playback import PlaybackLedger


class TurnHooks(Protocol):
    """What the pipeline's stages tell the session (implemented by Session)."""

    # The watchers below.
    async def user_speech_started(self) -> None: ...
    async def user_speech_stopped(self, stop_secs: float) -> None: ...
    async def turn_ended(self, text: str) -> str | None:
        """The user's turn is over; returns a reply to say instead of asking the LLM, if any."""

    async def interrupted(self) -> None: ...
    async def audio_done(self) -> None: ...
    async def stage_failed(self, error: str) -> None: ...

    # The barge-in strategy (voice/turntaking/barge_in.py).
    def agent_recent_text(self) -> str:
        """What the agent said in the last few seconds (to recognise its own echo)."""

    async def hold_agent(self) -> None:
        """Pause the agent's audio: the user may be taking the floor."""

    async def release_agent(self, reason: str) -> None:
        """Resume the agent's audio: the sound was not an interruption."""

    # The end-of-turn strategy (voice/turntaking/end_of_turn.py).
    async def nothing_heard(self) -> None:
        """The user's sound had no words (a cough, a door)."""

    async def turn_settled(self, text: str) -> None:
        """Every segment is transcribed and the user is silent, but the pause that ends the turn
        is still running: the words so far, for speculative work."""

    async def speech_resumed(self) -> None:
        """The user speaks again (speculative work is void)."""


class UserTurnWatcher(FrameProcessor):
    """After the user aggregator: speech start/stop events, and the moment a turn is handed to the agent."""

    def __init__(self, hooks: TurnHooks, **kwargs):
        super().__init__(**kwargs)
        self._hooks = hooks

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, VADUserStartedSpeakingFrame):
                await self._hooks.user_speech_started()
            elif isinstance(frame, VADUserStoppedSpeakingFrame):
                await self._hooks.user_speech_stopped(frame.stop_secs)
            elif isinstance(frame, InterruptionFrame):
                await self._hooks.interrupted()
            elif isinstance(frame, LLMContextFrame):
                messages = frame.context.get_messages()
                text = messages[-1].get("content", "") if messages else ""
                reply = await self._hooks.turn_ended(text if isinstance(text, str) else "")
                if reply is not None:
                    # Spoken as if the LLM had said it (same events, trace and history), without
                    # retrieval or the LLM: the context frame stops here.
                    for answer in (
                        LLMFullResponseStartFrame(),
                        LLMTextFrame(reply),
                        LLMFullResponseEndFrame(),
                    ):
                        await self.push_frame(answer)
                    return
        elif isinstance(frame, ErrorFrame):
            # Stages report failures upstream (an unreachable LLM, a TTS error): tell the caller.
            await self._hooks.stage_failed(frame.error)
        await self.push_frame(frame, direction)


class SessionClock(BaseClock):
    """The pipeline's clock, reading the session's: the time pipecat stamps on each frame it tells
    an observer of is then on the tracer's clock (pipecat's own clock counts from the start)."""

    def __init__(self, now_ns: Callable[[], int]):
        self._now_ns = now_ns

    def get_time(self) -> int:
        return self._now_ns()

    def start(self) -> None:
        pass  # the session's clock is already running


class AnswerTimingObserver(BaseObserver):
    """Stamps the answer's first token and the end of its stream, at the moment the LLM (or a
    prepared reply) pushed them. pipecat tells it of each push from a queue, later: which turn a
    frame belongs to is judged by when it was pushed, against when the turn ended."""

    def __init__(self, tracer: TurnTracer, flow: TurnFlow):
        super().__init__(observe_every_push=False)  # a frame's moment is when it is first pushed
        self._tracer = tracer
        self._flow = flow
        self._answer: Answer | None = None  # the answer the stream being pushed belongs to

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if data.direction != FrameDirection.DOWNSTREAM:
            return
        record = self._tracer.current
        if record is None or data.timestamp < record.moments.get(Moment.TURN_END, 0):
            # Pushed before the current turn ended (this runs later, from pipecat's queue): the
            # tail of a cancelled answer, or a stream started after a cancel. Not this turn's.
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            self._answer = self._flow.answer if self._flow.answering else None
        elif self._answer is None or self._answer is not self._flow.answer:
            return  # a stream that began when no answer was asked for (or for the one before)
        elif isinstance(frame, LLMTextFrame) and frame.text.strip():
            self._tracer.mark(Moment.LLM_FIRST_TOKEN, data.timestamp)
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._tracer.mark(Moment.LLM_END, data.timestamp)


class SpokenTextEmitter(FrameProcessor):
    """Before the output transport: the answer starts here (for the flow), each sentence about to
    be spoken becomes an `agent.text` event, and the playback ledger learns each sentence with the
    audio it takes.

    The event is queued with the audio (not urgent), so it reaches the client just before the
    sentence's audio, and it is dropped with that audio when the user interrupts.
    """

    def __init__(self, flow: TurnFlow, ledger: PlaybackLedger, **kwargs):
        super().__init__(**kwargs)
        self._flow = flow
        self._ledger = ledger

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            # Here, not where the LLM pushes it: the audio of a cancelled answer still between the
            # LLM and this stage then cannot count as the new answer's.
            self._flow.answer_started()
        elif isinstance(frame, TTSAudioRawFrame):
            if self._flow.response_in_progress:
                self._ledger.queue_audio(len(frame.audio))
        elif (
            isinstance(frame, AggregatedTextFrame)
            and not isinstance(frame, TTSTextFrame)  # the same sentence again, after its audio
            and frame.text.strip()
        ):
            if self._flow.cut_off:
                # A sentence the TTS finished just after the user cut in: its audio is dropped,
                # so the caller must not be shown it either.
                return
            text = frame.text.strip()
            if self._flow.response_in_progress:
                self._ledger.queue_sentence(text)
            event = protocol.AgentText(turn_id=self._flow.turn_id, text=text)
            await self.push_frame(OutputTransportMessageFrame(message=event.model_dump()))


class PlaybackWatcher(FrameProcessor):
    """After the output transport: frames arrive here once the audio before them has been sent,
    so the end of the LLM response marks the end of the turn's audio."""

    def __init__(self, hooks: TurnHooks, **kwargs):
        super().__init__(**kwargs)
        self._hooks = hooks

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._hooks.audio_done()
        await self.push_frame(frame, direction)


class HistoryWatcher(FrameProcessor):
    """Last in the pipeline: an interruption that reaches it has passed the assistant history, which
    has recorded its version of the cut-off answer (for the session to correct)."""

    def __init__(self, flow: TurnFlow, **kwargs):
        super().__init__(**kwargs)
        self._flow = flow

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._flow.history_settled.set()
        await self.push_frame(frame, direction)
