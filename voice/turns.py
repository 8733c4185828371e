"""Turn-taking policy: when a user turn starts (and interrupts the agent) and when it ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipecat.frames.frames import DataFrame, Frame, TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from voice.vad import make_vad


@dataclass
class SpeechSegmentDoneFrame(DataFrame):
    """Pushed by the STT stage after each speech segment's transcript (or after finding none).

    It travels in order behind that transcript, so when the turn strategy sees it, the
    transcript has already been counted.
    """

    heard_words: bool = False


NothingHeard = Callable[[], Awaitable[None]]


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

    def __init__(self, on_nothing_heard: NothingHeard | None = None, **kwargs):
        super().__init__(**kwargs)
        self._segments_open = 0
        self._on_nothing_heard = on_nothing_heard

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, SpeechSegmentDoneFrame):
            self._segments_open = max(0, self._segments_open - 1)
            if self._segments_open == 0:
                await self._stt_caught_up()
                if not self._text and not self._vad_user_speaking and self._on_nothing_heard:
                    await self._on_nothing_heard()
            return ProcessFrameResult.CONTINUE
        return await super().process_frame(frame)

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._segments_open += 1
        # A transcript of an earlier segment says nothing about this one.
        self._transcript_finalized = False
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _handle_transcription(self, frame: TranscriptionFrame):
        self._text += frame.text
        await self._maybe_trigger_user_turn_stopped()

    async def _stt_timeout_handler(self, timeout: float):  # noqa: ASYNC109 - pipecat's signature
        # pipecat's safety net for streaming STT; here every segment reports done in-band, so
        # completion is known exactly and the net would only cut a slow segment off.
        return

    async def _stt_caught_up(self) -> None:
        self._stt_wait_done = True
        await self._maybe_trigger_user_turn_stopped()


def user_turn_params(
    vad_start_secs: float,
    vad_stop_secs: float,
    turn_pause_secs: float,
    on_nothing_heard: NothingHeard | None = None,
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
            stop=[WholeTurnStopStrategy(on_nothing_heard, user_speech_timeout=turn_pause_secs)],
        ),
        empty_user_turn=None,
    )
