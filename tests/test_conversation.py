"""The turn flow's state machine (voice/conversation.py), event by event, on a virtual clock.

Each test walks one transition of the diagram in the module's docstring and checks what the
caller would notice: whether the agent's audio goes out, whether it is held, which turn an
answer belongs to, and what a follow-up turn is told.
"""

from __future__ import annotations

import pytest

from voice.conversation import RESUME_WINDOW_TURNS, Interruption, Phase, TurnFlow

MS = 1_000_000


class VirtualClock:
    """Nanoseconds that move only when the test says so."""

    def __init__(self):
        self.ns = 10_000 * MS

    def __call__(self) -> int:
        return self.ns

    def advance(self, ms: float) -> None:
        self.ns += int(ms * MS)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def flow(clock) -> TurnFlow:
    return TurnFlow(clock)


def ask(flow: TurnFlow, text: str = "When do you open on Saturday?") -> int:
    """A spoken turn ends and the LLM starts on its answer; returns the turn id."""
    end = flow.turn_ended(text)
    turn = flow.number_turn(text, merged=False)
    assert not end.typed and not end.repeat
    flow.answer_started()
    return turn


def speaking(flow: TurnFlow, clock: VirtualClock) -> int:
    turn = ask(flow)
    clock.advance(400)
    assert flow.audio_sent()
    return turn


def test_a_new_conversation_listens_with_the_floor_open(flow):
    assert flow.phase is Phase.LISTENING
    assert flow.floor_open.is_set()
    assert not flow.answering and not flow.agent_audible and not flow.cut_off


def test_a_turn_that_ends_starts_an_answer_under_the_next_turn_id(flow):
    assert ask(flow) == 1
    assert flow.phase is Phase.THINKING
    assert flow.answering and not flow.agent_audible, "nothing has been heard yet"
    assert flow.response_in_progress
    flow.audio_done()
    assert ask(flow, "And on Sunday?") == 2


def test_the_first_audio_makes_the_answer_heard_at_the_clock_time(flow, clock):
    ask(flow)
    clock.advance(850)
    assert flow.audio_sent()
    assert flow.phase is Phase.SPEAKING and flow.agent_audible
    assert flow.answer.audible
    assert flow.last_audio_ns == clock.ns


def test_the_end_of_the_audio_returns_to_listening(flow, clock):
    speaking(flow, clock)
    assert flow.audio_done()
    assert flow.phase is Phase.LISTENING and not flow.answering


def test_the_end_of_a_stream_nobody_started_is_not_this_turns(flow):
    flow.turn_ended("Hello?")
    flow.number_turn("Hello?", merged=False)
    # The end of the previous, cancelled answer arrives after this turn began: not its end.
    assert not flow.response_in_progress
    assert not flow.audio_done()
    assert flow.phase is Phase.THINKING


def test_a_sound_over_the_answer_holds_it_and_closes_the_floor(flow, clock):
    speaking(flow, clock)
    last_audio = clock.ns
    clock.advance(300)
    onset = clock.ns - 200 * MS
    assert flow.hold(onset)
    assert flow.phase is Phase.HELD and not flow.floor_open.is_set()
    assert flow.answer.hold.onset_ns == onset
    assert flow.answer.hold.last_audio_ns == last_audio
    assert flow.agent_audible, "paused mid-sentence, the answer is still the one being heard"


def test_nothing_is_held_while_the_agent_is_silent_or_thinking(flow, clock):
    assert not flow.hold(clock.ns)
    ask(flow)
    assert not flow.hold(clock.ns), "nobody hears an answer that has not started playing"
    assert flow.floor_open.is_set()


def test_a_sound_that_was_not_an_interruption_lets_the_answer_go_on(flow, clock):
    speaking(flow, clock)
    flow.hold(clock.ns)
    clock.advance(250)
    assert flow.release()
    assert flow.phase is Phase.SPEAKING and flow.floor_open.is_set()
    assert flow.answer.hold is None
    assert flow.audio_sent(), "the answer's audio goes on where it paused"


def test_an_answer_that_finished_during_the_hold_is_released_into_listening(flow, clock):
    speaking(flow, clock)
    flow.hold(clock.ns)
    assert flow.audio_done(), "its last chunk had gone out before the sound"
    assert flow.phase is Phase.HELD, "the verdict on the sound is still to come"
    assert not flow.audio_done(), "an answer is done once"
    assert flow.release()
    assert flow.phase is Phase.LISTENING and flow.floor_open.is_set()


def test_an_answer_that_finished_during_the_hold_can_still_be_cut_off(flow, clock):
    """The client may still be playing it: taking the floor cuts it off, as the pause promised."""
    speaking(flow, clock)
    flow.hold(clock.ns)
    flow.audio_done()
    assert flow.interrupted() is Interruption.CUT_OFF
    assert flow.answer.done and flow.history_pending


def test_a_release_after_the_answer_was_cut_off_resumes_nothing(flow, clock):
    speaking(flow, clock)
    flow.hold(clock.ns)
    flow.interrupted()  # a typed turn cut in while the sound was being judged
    assert not flow.release()
    assert flow.phase is Phase.CUT_OFF


def test_taking_the_floor_cuts_off_the_heard_answer_and_drops_its_rest(flow, clock):
    turn = speaking(flow, clock)
    last_audio = clock.ns
    clock.advance(300)
    flow.hold(clock.ns - 200 * MS)
    clock.advance(400)
    assert flow.interrupted() is Interruption.CUT_OFF
    assert flow.phase is Phase.CUT_OFF and flow.cut_off
    assert flow.floor_open.is_set(), "audio waiting for the floor must not wait forever"
    assert not flow.audio_sent(), "the rest of the cut-off answer goes nowhere"
    assert flow.answer.barge_in.last_audio_ns == last_audio, "the barge-in is timed from the hold"
    assert flow.answer.hold is None
    assert flow.history_pending and not flow.history_settled.is_set()
    assert flow.interruption_passed.is_set()
    assert flow.turn_id == turn


def test_the_next_turn_after_a_cut_off_plays_its_answer(flow, clock):
    speaking(flow, clock)
    flow.interrupted()
    end = flow.turn_ended("No, I meant on Sunday.")
    assert end.after_cut_off, "the cut-off answer's history must first say what was heard"
    flow.cut_off_settled("We also open late on Fridays.")
    assert not flow.history_pending
    assert flow.number_turn("No, I meant on Sunday.", merged=False) == 2
    assert flow.phase is Phase.THINKING
    assert flow.audio_sent()


def test_an_interruption_with_no_answer_in_flight_changes_nothing(flow, clock):
    assert flow.interrupted() is Interruption.NOTHING
    assert flow.phase is Phase.LISTENING
    speaking(flow, clock)
    flow.audio_done()
    assert flow.interrupted() is Interruption.NOTHING
    assert flow.phase is Phase.LISTENING and not flow.history_pending


def test_speech_before_anything_was_heard_continues_the_same_turn(flow):
    ask(flow, "I've got a flat tyre,")
    assert flow.interrupted() is Interruption.CONTINUED
    assert flow.phase is Phase.CUT_OFF and not flow.history_pending
    end = flow.turn_ended("how much to fix it?")
    assert end.continues == "I've got a flat tyre,"
    assert flow.number_turn("I've got a flat tyre, how much to fix it?", merged=True) == 1


def test_a_continuation_that_cannot_be_merged_is_a_turn_of_its_own(flow):
    ask(flow, "Hi.")
    flow.interrupted()
    flow.turn_ended("Do you sell helmets?")
    assert flow.number_turn("Do you sell helmets?", merged=False) == 2


def test_a_key_pressed_before_anything_was_heard_is_a_turn_of_its_own(flow):
    ask(flow, "What time do you open?")
    flow.typed_turn("(pressed 0 on the keypad)", "Transferring you.")
    assert flow.interrupted() is Interruption.CONTINUED
    end = flow.turn_ended("(pressed 0 on the keypad)")
    assert end.continues is None, "the key press is not glued onto the question before it"
    assert flow.number_turn("(pressed 0 on the keypad)", merged=False) == 2


def test_noise_that_cut_off_an_unheard_answer_asks_the_same_turn_again(flow):
    ask(flow)
    flow.interrupted()
    assert flow.nothing_heard(), "a cough is no question: the first one still stands"
    end = flow.turn_ended("When do you open on Saturday?")
    assert end.repeat and end.continues is None
    assert flow.turn_id == 1 and flow.phase is Phase.THINKING
    assert not flow.nothing_heard(), "asked again once, not every time"


def test_noise_while_listening_or_answering_asks_nothing_again(flow, clock):
    assert not flow.nothing_heard()
    speaking(flow, clock)
    assert not flow.nothing_heard()


def test_the_rest_of_a_cut_off_answer_can_be_asked_for_within_the_window(flow, clock):
    speaking(flow, clock)
    flow.interrupted()
    flow.turn_ended("Hold on.")
    flow.cut_off_settled("and on Sundays from 10 to 4.")
    for turn in range(RESUME_WINDOW_TURNS):
        flow.number_turn("Okay.", merged=False)
        assert flow.resumable(), f"still resumable {turn + 1} turns after the cut-off"
    flow.number_turn("Okay.", merged=False)
    assert not flow.resumable(), "too long ago: the old answer would come out of the blue"


def test_the_rest_of_a_cut_off_answer_is_said_once(flow, clock):
    speaking(flow, clock)
    flow.interrupted()
    flow.turn_ended("What were you saying?")
    flow.cut_off_settled("and on Sundays from 10 to 4.")
    flow.number_turn("What were you saying?", merged=False)
    assert flow.take_unsaid() == "and on Sundays from 10 to 4."
    assert not flow.resumable()


def test_a_typed_turn_while_the_agent_talks_waits_for_the_interruption_to_pass(flow, clock):
    speaking(flow, clock)
    assert flow.typed_turn("Stop, please.")
    assert not flow.interruption_passed.is_set()
    assert flow.interrupted() is Interruption.CUT_OFF
    assert flow.interruption_passed.is_set()
    end = flow.turn_ended("Stop, please.")
    assert end.typed and flow.answer.typed


def test_a_typed_turn_to_a_silent_agent_goes_straight_in(flow):
    assert not flow.typed_turn("Hello")
    assert flow.turn_ended("Hello").typed
    assert flow.answer.reply is None, "a typed question is the LLM's to answer"


def test_a_key_press_is_answered_with_its_reply_and_only_its_own_turn(flow):
    flow.typed_turn("(pressed 0 on the keypad)", "Transferring you.")
    flow.turn_ended("(pressed 0 on the keypad)")
    assert flow.answer.reply == "Transferring you."
    flow.audio_done()
    flow.turn_ended("(pressed 0 on the keypad)")  # the same words spoken later are not a key press
    assert flow.answer.reply is None and not flow.answer.typed


def test_the_llm_starting_after_a_cut_off_is_no_ones_answer(flow, clock):
    speaking(flow, clock)
    flow.interrupted()
    flow.answer_started()
    assert not flow.response_in_progress
    assert not flow.audio_done()


def test_a_stopped_session_opens_the_floor_so_no_audio_waits_forever(flow, clock):
    speaking(flow, clock)
    flow.hold(clock.ns)
    flow.end()
    assert flow.phase is Phase.ENDED and flow.floor_open.is_set()
    assert not flow.answering
