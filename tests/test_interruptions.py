"""Interruption logic with fakes: when a sound takes the floor from the agent, what the user heard
of a cut-off answer, and how the history records it. (The real pipeline with real models is in
test_interruptions_e2e.py.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import (
    AggregatedTextFrame,
    OutputTransportMessageFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import run_test
from pipecat.turns.user_turn_controller import UserTurnController
from pipecat.utils.asyncio.task_manager import TaskManager

from agents.context import is_resume_request, record_heard_answer
from voice.config import Settings
from voice.conversation import TurnFlow
from voice.playback import CUT_OFF_MARK, PlaybackLedger
from voice.turntaking.barge_in import BargeInStrategy, InterruptionPolicy
from voice.turntaking.end_of_turn import SpeechSegmentDoneFrame, WholeTurnStopStrategy
from voice.turntaking.smart_turn import TurnCompletionFrame
from voice.turntaking.user_turns import user_turn_params
from voice.turntaking.vad import make_vad
from voice.watchers import SpokenTextEmitter

# Every sleep and timer here runs on the event loop's virtual clock (looptime): the strategies'
# timers fire in the order and at the virtual moments the test sets, however loaded the machine.
pytestmark = pytest.mark.looptime

POLICY = InterruptionPolicy(Settings().backchannel_words)
AGENT_SAID = "On Monday, Tuesday, Wednesday and Friday we are open from 8 am to 6 pm."


@pytest.mark.parametrize(
    "heard", ["Mm-hmm.", "MMHM", "Hmmm.", "Uh uh", "Yeah, okay.", "Right.", "I see.", "Okay"]
)
def test_backchannels_do_not_take_the_floor(heard):
    assert POLICY.is_backchannel(heard)
    assert not POLICY.takes_the_floor(heard, AGENT_SAID)


@pytest.mark.parametrize(
    "heard", ["Wait.", "Stop, stop.", "Are you open on Sunday?", "Yeah, but what about Sunday?"]
)
def test_words_of_their_own_take_the_floor(heard):
    assert POLICY.takes_the_floor(heard, AGENT_SAID)


def test_the_agents_own_words_coming_back_are_echo():
    assert POLICY.is_echo("we are open from 8 am", AGENT_SAID)
    assert not POLICY.takes_the_floor("Wednesday and Friday we are open", AGENT_SAID)
    assert POLICY.takes_the_floor("are you open on Sunday", AGENT_SAID)  # shares words, says something else


def test_no_words_never_take_the_floor():
    assert not POLICY.takes_the_floor("", AGENT_SAID)
    assert not POLICY.takes_the_floor("...", AGENT_SAID)


# --- what was heard -----------------------------------------------------------------------------

RATE = 1000  # 1000 Hz s16le: 2 bytes per ms, easy arithmetic


class Clock:
    def __init__(self):
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def advance_ms(self, ms: float) -> None:
        self.ns += int(ms * 1_000_000)


def ledger_with_two_sentences(clock: Clock) -> PlaybackLedger:
    ledger = PlaybackLedger(RATE, clock)
    ledger.new_answer(1)
    ledger.queue_sentence("We open at nine on Saturday.")  # 6 words, 1200 ms
    ledger.queue_audio(2400)
    ledger.queue_sentence("On Sunday we are closed all day.")  # 7 words, 1400 ms
    ledger.queue_audio(2800)
    return ledger


def test_heard_text_is_whole_sentences_then_the_share_of_words_played():
    ledger = ledger_with_two_sentences(Clock())
    ledger.sent(2 * 1900)  # 1900 ms: the first sentence and half of the second
    assert ledger.heard_text() == f"We open at nine on Saturday. On Sunday we{CUT_OFF_MARK}"
    assert ledger.unheard_text() == "On Sunday we are closed all day."
    assert ledger.heard_text(0) == ""
    assert ledger.heard_text(1200) == "We open at nine on Saturday."


def test_client_reports_carry_forward_in_real_time_but_never_past_what_was_sent():
    clock = Clock()
    ledger = ledger_with_two_sentences(clock)
    ledger.sent(2 * 1500)
    ledger.report(1, played_ms=900)  # the client is 600 ms behind what was sent
    assert ledger.heard_ms() == 900
    clock.advance_ms(300)
    assert ledger.heard_ms() == 1200
    clock.advance_ms(1000)
    assert ledger.heard_ms() == 1500  # capped: it cannot have played what it was not sent


def test_a_cut_off_answer_stops_where_it_was_and_the_clients_last_word_wins():
    clock = Clock()
    ledger = ledger_with_two_sentences(clock)
    ledger.sent(2 * 1500)
    ledger.stop()
    clock.advance_ms(5000)
    assert ledger.heard_ms() == 1500
    ledger.report(1, played_ms=1000)  # the client says where it really stopped
    assert ledger.heard_text() == f"We open at nine on{CUT_OFF_MARK}"
    ledger.report(7, played_ms=0)  # another turn's report changes nothing
    assert ledger.heard_ms() == 1000


def test_the_history_holds_only_what_was_heard():
    question = {"role": "user", "content": "hours?"}
    queued = {"role": "assistant", "content": "We open at nine on Saturday. On Sunday we are closed all day."}
    new = {"role": "user", "content": "Wait, and Monday?"}
    messages = [question, queued, new]
    record_heard_answer(messages, "We open at nine on Saturday. On Sunday we—")
    assert messages == [
        question,
        {"role": "assistant", "content": "We open at nine on Saturday. On Sunday we—"},
        new,
    ]

    messages = [question, new]  # pipecat had recorded nothing yet
    record_heard_answer(messages, "We open at—")
    assert messages == [question, {"role": "assistant", "content": "We open at—"}, new]

    messages = [question, queued, new]  # nothing heard: the agent never said it
    record_heard_answer(messages, "")
    assert messages == [question, new]


@pytest.mark.parametrize(
    ("text", "resume"),
    [
        ("Sorry, what were you saying?", True),
        ("Okay, go on.", True),
        ("You were saying?", True),
        ("Please continue.", True),
        ("What time do you open?", False),
        ("Are you going on holiday?", False),
    ],
)
def test_resume_requests(text, resume):
    assert is_resume_request(text) is resume


# --- the barge-in strategy, with a fake session -------------------------------------------------

CONFIRM_S = 0.2  # short stand-ins for the settings: the test is about order, not duration
RESUME_S = 0.2


class FakeSession:
    """The turn strategies' side of the session's TurnHooks, over a real TurnFlow."""

    def __init__(self, audible: bool = True):
        self.flow = TurnFlow(lambda: 0)
        if audible:  # an answer is being heard
            self.flow.turn_ended("When do you open?")
            self.flow.audio_sent()
        self.log: list[str] = []

    def agent_recent_text(self) -> str:
        return AGENT_SAID

    async def hold_agent(self) -> None:
        self.log.append("hold")

    async def release_agent(self, reason: str) -> None:
        self.log.append(f"release: {reason}")

    # The end-of-turn strategy's side.
    async def speech_resumed(self) -> None:
        self.log.append("speech resumed")

    async def turn_settled(self, text: str) -> None:
        self.log.append(f"settled: {text}")

    async def nothing_heard(self) -> None:
        self.log.append("nothing heard")


async def strategy_with(floor: FakeSession) -> BargeInStrategy:
    strategy = BargeInStrategy(floor, floor.flow, POLICY, confirm_secs=CONFIRM_S, resume_secs=RESUME_S)
    await strategy.setup(SimpleNamespace(task_manager=TaskManager()))

    async def started(_strategy, _params):
        floor.log.append("turn started")
        await strategy.handle_user_turn_started()  # as pipecat's controller does

    async def reset(_strategy):
        floor.log.append("user words dropped")

    strategy.add_event_handler("on_user_turn_started", started)
    strategy.add_event_handler("on_reset_aggregation", reset)
    return strategy


def transcript(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "user", "2026-01-01T00:00:00")


async def test_speech_while_the_agent_is_silent_starts_a_turn_at_once():
    floor = FakeSession(audible=False)
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    assert floor.log == ["turn started"]


async def test_a_backchannel_holds_the_agent_then_gives_the_floor_back():
    floor = FakeSession()
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame())
    await strategy.process_frame(transcript("Mm-hmm."))
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=True))
    assert floor.log == ["hold", "user words dropped", "release: backchannel or echo"]
    await asyncio.sleep(RESUME_S * 2)  # no late timer fires a second release
    assert floor.log[-1] == "release: backchannel or echo" and len(floor.log) == 3


async def test_a_cough_holds_the_agent_then_gives_the_floor_back():
    floor = FakeSession()
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame())
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=False))
    assert floor.log == ["hold", "release: no words"]


async def test_words_take_the_floor():
    floor = FakeSession()
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame())
    await strategy.process_frame(transcript("Wait, are you open on Sunday?"))
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=True))
    assert floor.log == ["hold", "turn started"]


async def test_long_speech_takes_the_floor_before_its_transcript():
    floor = FakeSession()
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await asyncio.sleep(CONFIRM_S * 2)
    assert floor.log == ["hold", "turn started"]


async def test_no_verdict_in_time_gives_the_floor_back():
    floor = FakeSession()
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame())
    await asyncio.sleep(RESUME_S * 2)  # the transcript never came
    assert floor.log == ["hold", "release: no verdict in time"]


async def test_words_that_come_after_the_agent_resumed_still_take_the_floor():
    floor = FakeSession()
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame())
    await asyncio.sleep(RESUME_S * 2)  # Whisper is slow today
    await strategy.process_frame(transcript("Hold on a second."))
    assert floor.log == ["hold", "release: no verdict in time", "turn started"]


async def test_a_backchannel_that_comes_late_is_still_dropped():
    floor = FakeSession()
    strategy = await strategy_with(floor)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame())
    await asyncio.sleep(RESUME_S * 2)
    await strategy.process_frame(transcript("Yeah."))
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=True))
    assert floor.log == ["hold", "release: no verdict in time", "user words dropped"]


# --- end of turn, with Smart Turn's verdict ------------------------------------------------------

PAUSE_COMPLETE_S = 0.05
PAUSE_INCOMPLETE_S = 0.4
DEFAULT_PAUSE_S = 0.2
WHISPER_QUEUE_S = 8.0  # what a segment waited for Whisper at four callers on 2 cores (bench, 2026-12-02)


async def stop_strategy(stopped: list[str]) -> WholeTurnStopStrategy:
    strategy = WholeTurnStopStrategy(
        pause_complete_secs=PAUSE_COMPLETE_S,
        pause_incomplete_secs=PAUSE_INCOMPLETE_S,
        user_speech_timeout=DEFAULT_PAUSE_S,
    )
    await strategy.setup(SimpleNamespace(task_manager=TaskManager()))

    async def on_stopped(_strategy, _params):
        stopped.append("turn ended")

    strategy.add_event_handler("on_user_turn_stopped", on_stopped)
    return strategy


async def a_pause_judged(complete: bool, wait_s: float, words: str = "Hi.") -> list[str]:
    stopped: list[str] = []
    strategy = await stop_strategy(stopped)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await strategy.process_frame(TurnCompletionFrame(complete=complete))
    await strategy.process_frame(transcript(words))
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=True))
    await asyncio.sleep(wait_s)
    await strategy.cleanup()
    return stopped


async def test_speech_that_sounds_finished_ends_the_turn_after_the_short_pause():
    assert await a_pause_judged(complete=True, wait_s=(PAUSE_COMPLETE_S + DEFAULT_PAUSE_S) / 2) == [
        "turn ended"
    ]


async def test_speech_that_sounds_unfinished_waits_for_the_long_pause():
    assert await a_pause_judged(complete=False, wait_s=(DEFAULT_PAUSE_S + PAUSE_INCOMPLETE_S) / 2) == []
    assert await a_pause_judged(complete=False, wait_s=PAUSE_INCOMPLETE_S * 2) == ["turn ended"]


async def test_a_question_in_a_flat_voice_ends_after_the_short_pause():
    """Smart Turn hears an even voice as unfinished; the words say a question was asked."""
    words = "How much is it to rent a bike for the day?"
    short_wait = (PAUSE_COMPLETE_S + DEFAULT_PAUSE_S) / 2
    assert await a_pause_judged(complete=False, wait_s=short_wait, words=words) == ["turn ended"]


async def test_words_that_trail_off_wait_for_the_long_pause_whatever_the_voice_did():
    long_wait = (DEFAULT_PAUSE_S + PAUSE_INCOMPLETE_S) / 2
    for words in ("I've got a flat tyre,", "I need a new chain and"):
        assert await a_pause_judged(complete=True, wait_s=long_wait, words=words) == [], words
    assert await a_pause_judged(complete=True, wait_s=PAUSE_INCOMPLETE_S * 2, words="My bike is,") == [
        "turn ended"
    ]


async def test_a_question_after_a_pause_inside_the_turn_ends_it_after_the_short_pause():
    """'I've got a flat tyre, ... how much to fix it?': the first half waits, the question ends
    the turn once its own words are in, counted from its own pause."""
    stopped: list[str] = []
    strategy = await stop_strategy(stopped)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await strategy.process_frame(TurnCompletionFrame(complete=False))
    await strategy.process_frame(transcript("I've got a flat tyre,"))
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=True))
    await asyncio.sleep((DEFAULT_PAUSE_S + PAUSE_INCOMPLETE_S) / 2)
    assert stopped == [], "the first half does not end the turn"
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    # Smart Turn's verdict on the second pause does not see the old words: it hears the question.
    await strategy.process_frame(TurnCompletionFrame(complete=False))
    await strategy.process_frame(transcript(" How much to fix it?"))
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=True))
    await asyncio.sleep((PAUSE_COMPLETE_S + DEFAULT_PAUSE_S) / 2)
    await strategy.cleanup()
    assert stopped == ["turn ended"]


async def turn_controller(session: FakeSession) -> UserTurnController:
    """pipecat's user-turn controller with Parley's strategies and settings, as the session's user
    aggregator runs them (voice/turntaking/user_turns.py)."""
    params = user_turn_params(
        session,
        session.flow,
        vad=make_vad(0.1, 0.2),
        turn_pause_secs=DEFAULT_PAUSE_S,
        policy=POLICY,
        confirm_secs=CONFIRM_S,
        resume_secs=RESUME_S,
    )
    controller = UserTurnController(
        user_turn_strategies=params.user_turn_strategies, user_turn_stop_timeout=params.user_turn_stop_timeout
    )
    await controller.setup(SimpleNamespace(task_manager=TaskManager()))
    return controller


async def test_a_transcript_that_waits_long_for_whisper_still_ends_the_turn_with_its_words():
    """Four callers on 2 cores: a segment can wait seconds behind the others' in Whisper's queue.
    The turn must end when its words arrive, with them, not at pipecat's own 5 s fallback with none."""
    session = FakeSession(audible=False)
    controller = await turn_controller(session)
    stopped: list[object] = []

    async def on_stopped(_controller, strategy, _params):
        stopped.append(strategy)

    controller.add_event_handler("on_user_turn_stopped", on_stopped)
    await controller.start()
    await controller.process_frame(VADUserStartedSpeakingFrame())
    await controller.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await asyncio.sleep(WHISPER_QUEUE_S)  # the segment waits behind the other callers'
    assert stopped == [], "no turn ends before its words are in"
    await controller.process_frame(TurnCompletionFrame(complete=True))
    await controller.process_frame(transcript("What time do you open on Saturday?"))
    await controller.process_frame(SpeechSegmentDoneFrame(heard_words=True))
    await asyncio.sleep(1.0)
    await controller.cleanup()
    assert len(stopped) == 1 and isinstance(stopped[0], WholeTurnStopStrategy), "ended by its words"


async def test_a_sound_with_no_words_ends_its_turn_at_once_so_the_next_can_start():
    """A cough while the agent is quiet opens a turn; with no words in it, it must close when its
    segment is done, not at pipecat's fallback: while a turn is open, no other can start."""
    session = FakeSession(audible=False)
    controller = await turn_controller(session)
    events: list[str] = []

    async def on_started(_controller, _strategy, _params):
        events.append("started")

    async def on_stopped(_controller, _strategy, _params):
        events.append("stopped")

    controller.add_event_handler("on_user_turn_started", on_started)
    controller.add_event_handler("on_user_turn_stopped", on_stopped)
    await controller.start()
    await controller.process_frame(VADUserStartedSpeakingFrame())
    await controller.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await controller.process_frame(SpeechSegmentDoneFrame(heard_words=False))  # a cough
    await asyncio.sleep(0.1)
    assert events == ["started", "stopped"] and "nothing heard" in session.log
    await controller.process_frame(VADUserStartedSpeakingFrame())  # then the user speaks
    await asyncio.sleep(0.1)
    await controller.cleanup()
    assert events == ["started", "stopped", "started"], "a new turn, for the words"


def _flow(cut_off: bool) -> TurnFlow:
    """Turn 1's answer is being spoken; or it was cut off."""
    flow = TurnFlow(lambda: 0)
    flow.turn_ended("When do you open?")
    flow.number_turn("When do you open?", merged=False)
    flow.answer_started()
    flow.audio_sent()
    if cut_off:
        flow.interrupted()
    return flow


async def _spoken_text_events(cut_off: bool) -> list[dict]:
    ledger = PlaybackLedger(24000, lambda: 0)
    emitter = SpokenTextEmitter(_flow(cut_off), ledger)
    down, _ = await run_test(emitter, frames_to_send=[AggregatedTextFrame("We open at 8 am.", "sentence")])
    return [f.message for f in down if isinstance(f, OutputTransportMessageFrame)]


async def test_each_sentence_about_to_be_spoken_is_shown_to_the_caller():
    events = await _spoken_text_events(cut_off=False)
    assert events == [{"type": "agent.text", "turn_id": 1, "text": "We open at 8 am."}]


async def test_a_sentence_finished_after_the_caller_cut_in_is_not_shown():
    # Its audio is dropped (the session mutes the rest of a cut-off answer); its text must be too,
    # or the caller reads a sentence they never hear.
    assert await _spoken_text_events(cut_off=True) == []
