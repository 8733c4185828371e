"""Small pipeline stages that turn what happens in the pipeline into protocol events and trace
moments. They watch frames and pass every frame on unchanged.

Every stage reaches the session one way: what it *saw* goes to the session's `TurnHooks` (the
session does what it means: events to the client, frames, the history); where the conversation
*is*, it reads from (and, for facts with no I/O, notes in) the session's `TurnFlow`.
"""

from __future__ import annotations

from typing import Protocol

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
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from voice import protocol
from voice.conversation import TurnFlow
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


class LLMWatcher(FrameProcessor):
    """Between the LLM and TTS: stamps the first token and the end of the stream."""

    def __init__(self, tracer: TurnTracer, flow: TurnFlow, **kwargs):
        super().__init__(**kwargs)
        self._tracer = tracer
        self._flow = flow

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseStartFrame):
            self._flow.answer_started()
        elif isinstance(frame, LLMTextFrame) and frame.text.strip() and self._flow.response_in_progress:
            self._tracer.mark(Moment.LLM_FIRST_TOKEN)
        elif isinstance(frame, LLMFullResponseEndFrame) and self._flow.response_in_progress:
            # The end of a cancelled answer can arrive after the next turn began: not this turn's.
            self._tracer.mark(Moment.LLM_END)
        await self.push_frame(frame, direction)


class SpokenTextEmitter(FrameProcessor):
    """Before the output transport: each sentence about to be spoken becomes an `agent.text` event,
    and the playback ledger learns each sentence with the audio it takes.

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
        if isinstance(frame, TTSAudioRawFrame):
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
