"""When a user turn starts, and so when the agent is interrupted: the barge-in strategy, and the
policy that says whether words said over the agent take the floor."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from pipecat.frames.frames import (
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import BaseUserTurnStartStrategy

from voice.turntaking.end_of_turn import SpeechSegmentDoneFrame

if TYPE_CHECKING:
    from voice.conversation import TurnFlow
    from voice.watchers import TurnHooks

log = logging.getLogger(__name__)

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
