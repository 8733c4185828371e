"""Turn-taking policy: when a user turn starts (and interrupts the agent) and when it ends."""

from __future__ import annotations

from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from voice.vad import make_vad


def user_turn_params(
    vad_start_secs: float, vad_stop_secs: float, turn_pause_secs: float
) -> LLMUserAggregatorParams:
    """A turn starts when the VAD hears speech (interrupting the agent), and ends after
    `turn_pause_secs` of silence once a transcript is in.

    Only the VAD starts turns: a transcript arriving late must never open a turn of its own and
    make the agent interrupt itself. A pause shorter than vad_stop + turn_pause inside a question
    keeps it one turn. pipecat's "empty turn" recovery is off: it silently adds messages to the
    LLM context.
    """
    return LLMUserAggregatorParams(
        vad_analyzer=make_vad(vad_start_secs, vad_stop_secs),
        user_turn_strategies=UserTurnStrategies(
            start=[VADUserTurnStartStrategy()],
            stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=turn_pause_secs)],
        ),
        empty_user_turn=None,
    )
