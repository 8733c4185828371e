"""Turn-taking policy: when a user turn starts (and interrupts the agent) and when it ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pipecat.frames.frames import TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from voice.vad import make_vad


class SegmentTracker:
    """Counts the speech segments of a conversation: one starts at each VAD stop (pipecat's
    segmented STT hands the segment to Whisper then), and the STT stage reports each one done."""

    def __init__(self) -> None:
        self.started = 0
        self.done = 0
        self._listener: Callable[[], Awaitable[None]] | None = None

    @property
    def pending(self) -> int:
        return self.started - self.done

    def listen(self, listener: Callable[[], Awaitable[None]]) -> None:
        self._listener = listener

    async def segment_done(self) -> None:
        self.done += 1
        if self._listener is not None:
            await self._listener()


class WholeTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """pipecat's silence timeout, except that the turn ends only once *every* speech segment in it
    has been transcribed.

    pipecat's strategy takes any transcript as "STT is done". When a question has a pause inside
    it ("I've got a flat tire, … how much to fix it?"), the first half's transcript lands while
    the second half is still being spoken; the turn then ended on the first half and the second
    half's transcript arrived late and was lost. Counting segments fixes it.
    """

    def __init__(self, tracker: SegmentTracker, **kwargs):
        super().__init__(**kwargs)
        self._tracker = tracker
        tracker.listen(self._segment_transcribed)

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._tracker.started += 1
        # A transcript of an earlier segment says nothing about this one.
        self._transcript_finalized = False
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _handle_transcription(self, frame: TranscriptionFrame):
        self._text += frame.text
        if self._tracker.pending <= 0:
            await self._stt_caught_up()

    async def _segment_transcribed(self) -> None:
        if self._tracker.pending <= 0:
            await self._stt_caught_up()

    async def _stt_caught_up(self) -> None:
        self._stt_wait_done = True
        if self._stt_timeout_task:
            await self.task_manager.cancel_task(self._stt_timeout_task)
            self._stt_timeout_task = None
        await self._maybe_trigger_user_turn_stopped()


def user_turn_params(
    tracker: SegmentTracker, vad_start_secs: float, vad_stop_secs: float, turn_pause_secs: float
) -> LLMUserAggregatorParams:
    """A turn starts when the VAD hears speech (interrupting the agent), and ends after
    `turn_pause_secs` of silence once every segment of it is transcribed.

    Only the VAD starts turns: a transcript arriving late must never open a turn of its own and
    make the agent interrupt itself. A pause shorter than vad_stop + turn_pause inside a question
    keeps it one turn (a longer one is merged by the session if no answer was heard yet).
    pipecat's "empty turn" recovery is off: it silently adds messages to the LLM context.
    """
    return LLMUserAggregatorParams(
        vad_analyzer=make_vad(vad_start_secs, vad_stop_secs),
        user_turn_strategies=UserTurnStrategies(
            start=[VADUserTurnStartStrategy()],
            stop=[WholeTurnStopStrategy(tracker, user_speech_timeout=turn_pause_secs)],
        ),
        empty_user_turn=None,
    )
