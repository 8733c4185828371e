"""The user aggregator's turn-taking, put together: Silero VAD, the barge-in strategy (when a turn
starts) and the end-of-turn strategy (when it ends)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from voice.turntaking.barge_in import BargeInStrategy, InterruptionPolicy
from voice.turntaking.end_of_turn import WholeTurnStopStrategy

if TYPE_CHECKING:
    from pipecat.audio.vad.vad_analyzer import VADAnalyzer

    from voice.conversation import TurnFlow
    from voice.watchers import TurnHooks

# pipecat ends a turn on its own when no stop strategy has for this long after the user went
# quiet (its default: 5 s). WholeTurnStopStrategy always ends the turn once its segments are
# transcribed, and with four callers on 2 cores a segment can wait more than 5 s for Whisper:
# pipecat's early end came with no words, and the transcript that followed was never answered.
# So this is only the guard against a transcription that never returns.
TURN_STOP_FALLBACK_S = 30.0


def user_turn_params(
    hooks: TurnHooks,
    flow: TurnFlow,
    vad: VADAnalyzer,
    turn_pause_secs: float,
    policy: InterruptionPolicy,
    confirm_secs: float,
    resume_secs: float,
    pause_complete_secs: float | None = None,
    pause_incomplete_secs: float | None = None,
) -> LLMUserAggregatorParams:
    """A turn starts when `vad` (voice/turntaking/vad.py: one per session) hears speech, or, while the agent is heard, when that speech
    proves to be an interruption (BargeInStrategy); it ends after `turn_pause_secs` of silence
    once every segment of it is transcribed (or the pause Smart Turn's verdict picks, when the
    pauses are given).

    A transcript arriving late never opens a turn of its own (that would make the agent interrupt
    itself). A pause shorter than vad_stop + turn_pause inside a question keeps it one turn (a
    longer one is merged by the session if no answer was heard yet). pipecat's "empty turn"
    recovery is off: it silently adds messages to the LLM context.
    """
    return LLMUserAggregatorParams(
        vad_analyzer=vad,
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
        user_turn_stop_timeout=TURN_STOP_FALLBACK_S,
    )
