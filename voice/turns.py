"""Turn-taking policy: when a user turn starts (and interrupts the agent) and when it ends."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipecat.frames.frames import (
    DataFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import BaseUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.string import TextPartForConcatenation, concatenate_aggregated_text

from voice.end_of_turn import TurnCompletionFrame
from voice.vad import make_vad

if TYPE_CHECKING:
    from voice.conversation import TurnFlow
    from voice.turn_events import TurnHooks

log = logging.getLogger(__name__)


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


# A transcript of the agent's own voice coming back (echo) shares nearly all its words with what
# the agent just said; a caller who really interrupts says something else. 0.8 leaves room for
# one or two words Whisper hears differently.
ECHO_WORD_OVERLAP = 0.8
# Fewer words than this are too little evidence of echo ("the", "nine"): judged as speech.
ECHO_MIN_WORDS = 3
# Backchannels are short: a longer run of "yeah okay right sure" is someone taking the floor.
BACKCHANNEL_MAX_WORDS = 4

_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")
# Hums however Whisper spells them ("Mmhm", "Hmmm", "Mhmm", "Uhuh"): acknowledgements, not words.
_HUM = re.compile(r"^[mnhu]+$")


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation ("Mm-hmm." → ["mm-hmm"])."""
    return _WORD.findall(text.lower())


class InterruptionPolicy:
    """Decides whether what the user said while the agent was talking takes the floor.

    Not an interruption: no words at all (a cough, a click: Whisper finds none), a backchannel
    ("mm-hmm", "yeah okay"), or the agent's own words coming back through a speakerphone.
    """

    def __init__(self, backchannel_words: str):
        self.backchannel_words = frozenset(
            w.strip().lower() for w in backchannel_words.split(",") if w.strip()
        )

    def is_backchannel(self, text: str) -> bool:
        words = words_of(text)
        return 0 < len(words) <= BACKCHANNEL_MAX_WORDS and all(
            w in self.backchannel_words
            or w.replace("-", "") in self.backchannel_words
            or _HUM.match(w.replace("-", ""))
            for w in words
        )

    @staticmethod
    def is_echo(text: str, agent_said: str) -> bool:
        words = words_of(text)
        if len(words) < ECHO_MIN_WORDS:
            return False
        said = set(words_of(agent_said))
        return sum(w in said for w in words) / len(words) >= ECHO_WORD_OVERLAP

    def takes_the_floor(self, text: str, agent_said: str) -> bool:
        return bool(words_of(text)) and not self.is_backchannel(text) and not self.is_echo(text, agent_said)


class BargeInStrategy(BaseUserTurnStartStrategy):
    """When a user turn starts, and so when the agent is interrupted.

    While the agent is silent, the VAD hearing speech starts a turn at once (as pipecat's
    VADUserTurnStartStrategy does). While the agent is being heard, speech first *holds* the
    agent (its audio pauses within one audio chunk: that is the barge-in as the user hears it),
    and then either
      - takes the floor: the transcript has words that are not a backchannel nor the agent's own
        echo, or the user has kept speaking for `confirm_secs` → the turn starts, the agent is
        interrupted and its answer cancelled;
      - or gives it back: no words (a cough), a backchannel, echo, or no verdict within
        `resume_secs` of the sound ending → the agent carries on where it paused, and what was
        heard is dropped from the user's side of the conversation.
    """

    def __init__(
        self,
        hooks: TurnHooks,
        flow: TurnFlow,
        policy: InterruptionPolicy,
        confirm_secs: float,
        resume_secs: float,
    ):
        super().__init__()
        self._hooks = hooks
        self._flow = flow
        self._policy = policy
        self._confirm_secs = confirm_secs
        self._resume_secs = resume_secs
        self._holding = False
        # From a hold until the sound's transcript is in: a verdict that comes after the agent
        # resumed (Whisper slow under load) still counts, so real words are never dropped.
        self._awaiting_transcript = False
        self._user_speaking = False
        self._timer: asyncio.Task | None = None

    async def handle_user_turn_started(self):
        self._holding = False
        self._awaiting_transcript = False
        await self._cancel_timer()

    async def cleanup(self):
        await super().cleanup()
        await self._cancel_timer()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._user_speaking = True
            if not self._holding and not self._flow.agent_audible:
                await self.trigger_user_turn_started()
                return ProcessFrameResult.STOP
            if not self._holding:
                self._holding = True
                await self._hooks.hold_agent()
            self._awaiting_transcript = True
            self._start_timer(self._confirm_after_speech())
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._user_speaking = False
            if self._holding:
                self._start_timer(self._release_after_silence())
        elif isinstance(frame, TranscriptionFrame) and (self._holding or self._awaiting_transcript):
            takes = self._policy.takes_the_floor(frame.text, self._hooks.agent_recent_text())
            log.debug("heard over the agent: %r → %s", frame.text, "takes the floor" if takes else "not")
            if takes:
                await self.trigger_user_turn_started()
                return ProcessFrameResult.STOP
            # Not for the conversation: the user aggregator must not keep it as the user's words.
            await self.trigger_reset_aggregation()
        elif isinstance(frame, SpeechSegmentDoneFrame) and not self._user_speaking:
            self._awaiting_transcript = False
            if self._holding:
                await self._release("no words" if not frame.heard_words else "backchannel or echo")
        return ProcessFrameResult.CONTINUE

    async def _confirm_after_speech(self) -> None:
        await asyncio.sleep(self._confirm_secs)
        self._timer = None
        if self._holding and self._user_speaking:
            await self.trigger_user_turn_started()

    async def _release_after_silence(self) -> None:
        await asyncio.sleep(self._resume_secs)
        self._timer = None
        if self._holding and not self._user_speaking:
            await self._release("no verdict in time")

    async def _release(self, reason: str) -> None:
        self._holding = False
        await self._cancel_timer()
        await self._hooks.release_agent(reason)

    def _start_timer(self, coro) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.task_manager.create_task(coro, f"{self}::timer")

    async def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            await self.task_manager.cancel_task(timer)


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
                if not self._text and not self._vad_user_speaking and self._hooks is not None:
                    await self._hooks.nothing_heard()
            return ProcessFrameResult.CONTINUE
        return await super().process_frame(frame)

    async def _judged(self, complete: bool) -> None:
        """Smart Turn's verdict on the speech before this pause: the pause that ends the turn is
        now the short or the long one, counted from the VAD's stop."""
        pause = self._pause_complete if complete else self._pause_incomplete
        if pause is None or self._vad_user_speaking or self._vad_stopped_at is None:
            return
        waited = asyncio.get_running_loop().time() - self._vad_stopped_at
        self._user_speech_timeout = max(0.0, pause - waited)
        try:
            await self._restart_user_speech_timer()
        finally:
            self._user_speech_timeout = self._default_pause

    async def _handle_vad_user_started_speaking(self, frame: VADUserStartedSpeakingFrame):
        await super()._handle_vad_user_started_speaking(frame)
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
        await self._maybe_trigger_user_turn_stopped()
        # Still waiting out the pause (a turn that ended has no text and a finished timer).
        pause_running = not self._user_speech_wait_done and not self._vad_user_speaking
        if pause_running and self._text and self._hooks is not None:
            await self._hooks.turn_settled(concatenate_aggregated_text(self._parts))


def user_turn_params(
    hooks: TurnHooks,
    flow: TurnFlow,
    vad_start_secs: float,
    vad_stop_secs: float,
    turn_pause_secs: float,
    policy: InterruptionPolicy,
    confirm_secs: float,
    resume_secs: float,
    pause_complete_secs: float | None = None,
    pause_incomplete_secs: float | None = None,
) -> LLMUserAggregatorParams:
    """A turn starts when the VAD hears speech, or, while the agent is heard, when that speech
    proves to be an interruption (BargeInStrategy); it ends after `turn_pause_secs` of silence
    once every segment of it is transcribed (or the pause Smart Turn's verdict picks, when the
    pauses are given).

    A transcript arriving late never opens a turn of its own (that would make the agent interrupt
    itself). A pause shorter than vad_stop + turn_pause inside a question keeps it one turn (a
    longer one is merged by the session if no answer was heard yet). pipecat's "empty turn"
    recovery is off: it silently adds messages to the LLM context.
    """
    return LLMUserAggregatorParams(
        vad_analyzer=make_vad(vad_start_secs, vad_stop_secs),
        user_turn_strategies=UserTurnStrategies(
            start=[BargeInStrategy(hooks, flow, policy, confirm_secs=confirm_secs, resume_secs=resume_secs)],
            stop=[
                WholeTurnStopStrategy(
                    hooks,
                    pause_complete_secs=pause_complete_secs,
                    pause_incomplete_secs=pause_incomplete_secs,
                    user_speech_timeout=turn_pause_secs,
                )
            ],
        ),
        empty_user_turn=None,
    )
