"""When a user turn ends: once every speech segment in it is transcribed and the pause after it
has run (a short one when the turn sounds finished, a long one when not). Smart Turn judges the
audio at each pause; the transcript, once in, can overrule it (voice/turntaking/text_verdict.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipecat.frames.frames import (
    DataFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.utils.string import TextPartForConcatenation, concatenate_aggregated_text

from voice.turntaking.smart_turn import TurnCompletionFrame
from voice.turntaking.text_verdict import combine

if TYPE_CHECKING:
    from voice.watchers import TurnHooks


@dataclass
class SpeechSegmentDoneFrame(DataFrame):
    """Pushed by the STT stage after each speech segment's transcript (or after finding none).

    It travels in order behind that transcript, so when the turn strategy sees it, the
    transcript has already been counted.
    """

    heard_words: bool = False
    # An interruption must not drop it: a barge-in is confirmed by the transcript just before it,
    # and a turn whose segment never reports done would wait for pipecat's 5 s fallback.
    interruptible: bool = field(default=False, init=False)


# What WholeTurnStopStrategy uses of pipecat's SpeechTimeoutUserTurnStopStrategy beyond its public
# API: state it reads or sets, and handlers it overrides or calls. pipecat is pinned exactly
# because of them, and tests/test_pipecat_internals.py fails, naming the member, when an upgrade
# moves one.
PIPECAT_STOP_STRATEGY_INTERNALS = {
    "_user_speech_timeout": float,  # the pause that ends a turn, set per Smart Turn verdict
    "_restart_user_speech_timer": "method",
    "_vad_user_speaking": bool,
    "_text": str,  # the turn's transcript so far
    "_transcript_finalized": bool,
    "_stt_wait_done": bool,
    "_user_speech_wait_done": bool,
    "_handle_vad_user_started_speaking": "method",
    "_handle_vad_user_stopped_speaking": "method",
    "_handle_transcription": "method",
    "_maybe_trigger_user_turn_stopped": "method",
    "_stt_timeout_handler": "method",
}


class WholeTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """pipecat's silence timeout, except that the turn ends only once *every* speech segment in it
    has been transcribed.

    pipecat's strategy takes any transcript as "STT is done", and its STT safety timer gives up
    waiting after a fixed time. When a question has a pause inside it ("I've got a flat tire, …
    how much to fix it?"), the first half's transcript lands while the second half is still
    being spoken; the turn then ended on the first half and the second half was lost. Here each
    VAD stop opens a segment and each SpeechSegmentDoneFrame closes one, and the turn waits for
    all of them.
    """

    def __init__(
        self,
        hooks: TurnHooks | None = None,
        pause_complete_secs: float | None = None,
        pause_incomplete_secs: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._segments_open = 0
        self._hooks = hooks  # told of sounds without words, settled words, and speech resuming
        self._default_pause = self._user_speech_timeout
        self._pause_complete = pause_complete_secs
        self._pause_incomplete = pause_incomplete_secs
        self._vad_stopped_at: float | None = None
        self._audio_complete: bool | None = None  # Smart Turn's verdict on the latest pause
        self._pause_complete_used: bool | None = None  # the verdict whose pause is running
        # This turn's transcripts, to hand speculation the words exactly as pipecat's user
        # aggregator will join them into the user message.
        self._parts: list[TextPartForConcatenation] = []

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, TurnCompletionFrame):
            await self._judged(frame.complete)
            return ProcessFrameResult.CONTINUE
        if isinstance(frame, SpeechSegmentDoneFrame):
            self._segments_open = max(0, self._segments_open - 1)
            if self._segments_open == 0:
                await self._stt_caught_up()
                if not self._text and not self._vad_user_speaking:
                    if not frame.heard_words:
                        # A sound with no words (a cough, a door): the turn it opened is over,
                        # with nothing to answer. Ended now, not at pipecat's fallback: while a
                        # turn is open no other can start, so the user could not cut in.
                        await self.trigger_user_turn_stopped()
                    if self._hooks is not None:
                        await self._hooks.nothing_heard()
            return ProcessFrameResult.CONTINUE
        return await super().process_frame(frame)

    async def _judged(self, complete: bool) -> None:
        """Smart Turn's verdict on the speech before this pause (the words of it are not in yet:
        the transcript so far is of earlier segments, and does not judge this one)."""
        self._audio_complete = complete
        await self._set_pause(complete)

    async def _set_pause(self, complete: bool | None) -> None:
        """The pause that ends the turn is now the short or the long one, counted from the VAD's
        stop."""
        if complete is None or complete == self._pause_complete_used:
            return
        pause = self._pause_complete if complete else self._pause_incomplete
        if pause is None or self._vad_user_speaking or self._vad_stopped_at is None:
            return
        self._pause_complete_used = complete
        waited = asyncio.get_running_loop().time() - self._vad_stopped_at
        self._user_speech_timeout = max(0.0, pause - waited)
        try:
            await self._restart_user_speech_timer()
        finally:
            self._user_speech_timeout = self._default_pause

    async def _handle_vad_user_started_speaking(self, frame: VADUserStartedSpeakingFrame):
        await super()._handle_vad_user_started_speaking(frame)
        self._audio_complete = self._pause_complete_used = None  # the next pause is judged anew
        if self._hooks is not None:
            await self._hooks.speech_resumed()

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._vad_stopped_at = asyncio.get_running_loop().time()
        self._segments_open += 1
        # A transcript of an earlier segment says nothing about this one.
        self._transcript_finalized = False
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _handle_transcription(self, frame: TranscriptionFrame):
        self._text += frame.text
        self._parts.append(TextPartForConcatenation(frame.text, frame.includes_inter_frame_spaces))
        await self._maybe_trigger_user_turn_stopped()

    async def handle_user_turn_started(self):
        # Only the words belong to the turn before it. The silence already timed, and the segments
        # still being transcribed, belong to this one: a barge-in turn starts when its transcript
        # proves it is one, after the user has stopped speaking. (A turn started by the VAD
        # discards them anyway, as the VAD start resets them.)
        self._text = ""
        self._parts = []

    async def handle_user_turn_stopped(self):
        await super().handle_user_turn_stopped()
        self._parts = []

    async def _stt_timeout_handler(self, timeout: float):  # noqa: ASYNC109 - pipecat's signature
        # pipecat's safety net for streaming STT; here every segment reports done in-band, so
        # completion is known exactly and the net would only cut a slow segment off.
        return

    async def _stt_caught_up(self) -> None:
        self._stt_wait_done = True
        if self._text and not self._vad_user_speaking:
            # Every word of the turn is in: they may overrule the audio's verdict ("...to rent a
            # bike for the day?" in a flat voice), or end a pause the audio had no verdict on.
            await self._set_pause(combine(self._audio_complete, self._text))
        await self._maybe_trigger_user_turn_stopped()
        # Still waiting out the pause (a turn that ended has no text and a finished timer).
        pause_running = not self._user_speech_wait_done and not self._vad_user_speaking
        if pause_running and self._text and self._hooks is not None:
            await self._hooks.turn_settled(concatenate_aggregated_text(self._parts))
