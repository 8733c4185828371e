"""The few private members of pipecat that Parley relies on are still there, with the same kind.

pipecat is pinned exactly; when the pin moves, these fail first and name what moved, instead of
a turn that never ends in an end-to-end test.
"""

from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import pytest
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

from voice.stt import PIPECAT_SEGMENTED_STT_INTERNALS, WhisperSTTStage
from voice.turntaking.end_of_turn import PIPECAT_STOP_STRATEGY_INTERNALS, WholeTurnStopStrategy
from voice.turntaking.smart_turn import PIPECAT_PREDICT


@pytest.mark.parametrize("name,kind", sorted(PIPECAT_STOP_STRATEGY_INTERNALS.items(), key=str))
def test_the_stop_strategy_internals_parley_uses_are_still_in_pipecat(name, kind):
    strategy = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.5)
    assert hasattr(strategy, name), f"pipecat's SpeechTimeoutUserTurnStopStrategy no longer has {name}"
    member = getattr(strategy, name)
    if kind == "method":
        assert inspect.iscoroutinefunction(member), f"{name} is no longer a coroutine method"
    else:
        assert isinstance(member, kind), f"{name} is no longer a {kind.__name__}"


def test_every_internal_the_turn_strategy_touches_is_on_the_list():
    """A new reach into pipecat must be listed (and so checked above)."""
    ours = WholeTurnStopStrategy(user_speech_timeout=0.5)
    theirs = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.5)
    own = set(vars(WholeTurnStopStrategy)) | (set(vars(ours)) - set(vars(theirs)))
    used = set(re.findall(r"self\.(_[a-z_]+)", inspect.getsource(WholeTurnStopStrategy)))
    unlisted = used - own - set(PIPECAT_STOP_STRATEGY_INTERNALS)
    assert not unlisted, f"add to PIPECAT_STOP_STRATEGY_INTERNALS: {sorted(unlisted)}"


def test_smart_turns_bare_model_call_is_still_in_pipecat():
    assert callable(getattr(LocalSmartTurnAnalyzerV3, PIPECAT_PREDICT, None))


@pytest.mark.parametrize("name,kind", sorted(PIPECAT_SEGMENTED_STT_INTERNALS.items(), key=str))
def test_the_segmented_stt_internals_parley_uses_are_still_in_pipecat(name, kind):
    stage = WhisperSTTStage(SimpleNamespace(name="fake", language="en"), SimpleNamespace())
    assert hasattr(stage, name), f"pipecat's SegmentedSTTService no longer has {name}"
    member = getattr(stage, name)
    if kind == "method":
        assert callable(member), f"{name} is no longer a method"
    else:
        assert isinstance(member, kind), f"{name} is no longer a {kind.__name__}"
