"""The observer that stamps the LLM's moments, fed the pushes pipecat would tell it of."""

from __future__ import annotations

from pipecat.frames.frames import LLMFullResponseEndFrame, LLMFullResponseStartFrame, LLMTextFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection

from tests.test_conversation import MS, VirtualClock
from voice.conversation import TurnFlow
from voice.observability.tracing import Moment, TurnTracer
from voice.watchers import AnswerTimingObserver, SessionClock


def pushed(frame, at_ns: int) -> FramePushed:
    """A frame's first push downstream, stamped by pipecat at `at_ns` on the pipeline's clock."""
    return FramePushed(
        source=None, destination=None, frame=frame, direction=FrameDirection.DOWNSTREAM, timestamp=at_ns
    )


def turn(flow: TurnFlow, tracer: TurnTracer, text: str) -> None:
    """A spoken turn ends and its answer is asked for, as the session does it."""
    flow.turn_ended(text)
    flow.number_turn(text, merged=False)
    tracer.start_turn(flow.turn_id)


def test_the_pipeline_clock_is_the_sessions_clock():
    clock = VirtualClock()
    pipeline_clock = SessionClock(clock)
    pipeline_clock.start()
    clock.ns += 250 * MS
    assert pipeline_clock.get_time() == clock.ns, "frame timestamps and trace moments share one clock"


async def test_the_first_token_and_the_end_are_stamped_when_they_were_pushed_not_when_observed():
    clock = VirtualClock()
    tracer, flow = TurnTracer(clock), TurnFlow(clock)
    observer = AnswerTimingObserver(tracer, flow)
    turn(flow, tracer, "When do you open?")
    start = clock.ns
    await observer.on_push_frame(pushed(LLMFullResponseStartFrame(), start + 100 * MS))
    await observer.on_push_frame(pushed(LLMTextFrame(" "), start + 120 * MS))  # no word yet
    await observer.on_push_frame(pushed(LLMTextFrame("We"), start + 150 * MS))
    await observer.on_push_frame(pushed(LLMTextFrame(" open"), start + 160 * MS))
    await observer.on_push_frame(pushed(LLMFullResponseEndFrame(), start + 900 * MS))
    clock.ns += 5_000 * MS  # observed late: the moments are still when the frames were pushed
    moments = tracer.current.moments
    assert moments[Moment.LLM_FIRST_TOKEN] == start + 150 * MS
    assert moments[Moment.LLM_END] == start + 900 * MS


async def test_the_tail_of_a_cancelled_answer_is_not_stamped_on_the_next_turn():
    clock = VirtualClock()
    tracer, flow = TurnTracer(clock), TurnFlow(clock)
    observer = AnswerTimingObserver(tracer, flow)
    turn(flow, tracer, "When do you open?")
    await observer.on_push_frame(pushed(LLMFullResponseStartFrame(), clock.ns))
    await observer.on_push_frame(pushed(LLMTextFrame("We"), clock.ns))
    flow.audio_sent()
    flow.interrupted()  # the user took the floor
    turn(flow, tracer, "Actually, are you open on Sunday?")
    await observer.on_push_frame(pushed(LLMFullResponseEndFrame(), clock.ns))  # the old stream's end
    assert Moment.LLM_END not in tracer.current.moments
    assert Moment.LLM_FIRST_TOKEN not in tracer.current.moments

    await observer.on_push_frame(pushed(LLMFullResponseStartFrame(), clock.ns + 10 * MS))
    await observer.on_push_frame(pushed(LLMTextFrame("Yes"), clock.ns + 200 * MS))
    assert tracer.current.moments[Moment.LLM_FIRST_TOKEN] == clock.ns + 200 * MS, "the new answer's own"


async def test_a_stream_that_starts_with_no_turn_waiting_is_nobodys():
    clock = VirtualClock()
    tracer, flow = TurnTracer(clock), TurnFlow(clock)
    observer = AnswerTimingObserver(tracer, flow)
    turn(flow, tracer, "When do you open?")
    flow.answer_started()
    flow.audio_sent()
    assert flow.audio_done(), "the answer is over; the agent listens"
    await observer.on_push_frame(pushed(LLMFullResponseStartFrame(), clock.ns))
    await observer.on_push_frame(pushed(LLMTextFrame("stray"), clock.ns + 50 * MS))
    assert Moment.LLM_FIRST_TOKEN not in tracer.current.moments


async def test_a_frame_pushed_before_the_turn_ended_is_not_the_turns_however_late_it_is_observed():
    clock = VirtualClock()
    tracer, flow = TurnTracer(clock), TurnFlow(clock)
    observer = AnswerTimingObserver(tracer, flow)
    turn(flow, tracer, "When do you open?")
    await observer.on_push_frame(pushed(LLMFullResponseStartFrame(), clock.ns + 10 * MS))
    pushed_then = clock.ns + 20 * MS  # the old answer's last words, pushed just before ...
    clock.ns += 500 * MS
    turn(flow, tracer, "Are you open on Sunday?")  # ... the user cut in and this turn ended
    await observer.on_push_frame(pushed(LLMTextFrame("We"), pushed_then))  # observed only now
    await observer.on_push_frame(pushed(LLMFullResponseEndFrame(), pushed_then))
    assert Moment.LLM_FIRST_TOKEN not in tracer.current.moments
    assert Moment.LLM_END not in tracer.current.moments
