"""Speculative prefill with fakes: when the turn's prompt is started early, that the turn which
really ends uses it, that one which doesn't leaves nothing behind, and that nothing speculative is
stored. (What it saves on the real pipeline is measured by benchmarks/turn_latency.py.)"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    TextFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.asyncio.task_manager import TaskManager

from agents.context import FACTS_HEADER, KnowledgeContextProcessor
from agents.llm import LLMEndpoint, make_llm_stage, shared_http_client
from agents.rag.retrieve import Hit
from voice.turntaking.end_of_turn import SpeechSegmentDoneFrame, WholeTurnStopStrategy
from voice.turntaking.smart_turn import TurnCompletionFrame

# The fake LLM's prefill and the end-of-turn pauses run on the event loop's virtual clock
# (looptime): what overlaps what is set by the test, not by how loaded the machine is.
pytestmark = pytest.mark.looptime

TUNE_UP = Hit("prices.md", "Services > Tune-ups", "A basic tune-up costs $65.", 0.9, cosine=0.7)
HISTORY = [
    {"role": "user", "content": f"{FACTS_HEADER}\n[x]\nfacts\n\nQuestion: Hi."},
    {"role": "assistant", "content": "Hello! How can I help?"},
]
QUESTION = "How much is a basic tune-up?"
PREFILL_S = 0.2  # the fake LLM's prefill: long enough that the turn ends while it runs


class FakeRetriever:
    def __init__(self, hit: Hit = TUNE_UP):
        self.searches: list[str] = []
        self.hit = hit

    def search(self, text: str, top_k: int, previous: str = "") -> list[Hit]:
        self.searches.append(text)
        return [self.hit]

    def topics(self) -> list[str]:
        return ["Prices"]


class FakePrefill:
    """An LLM server's prefill: takes PREFILL_S, and records what it read and how it ended."""

    def __init__(self):
        self.prompts: list[list[dict]] = []
        self.log: list[str] = []

    async def __call__(self, messages: list[dict]) -> None:
        self.prompts.append(copy.deepcopy(messages))
        try:
            await asyncio.sleep(PREFILL_S)
        except asyncio.CancelledError:
            self.log.append("prefill cancelled")
            raise
        self.log.append("prefill done")


class Speculator(FrameProcessor):
    """Before the knowledge stage: a TextFrame "speculate: …" / "cancel" drives its speculation,
    as the session does when the end-of-turn pause starts or the user speaks again."""

    def __init__(self, knowledge: KnowledgeContextProcessor, history: list[dict], log: list[str]):
        super().__init__()
        self._knowledge = knowledge
        self._history = history
        self._log = log

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame) and frame.text.startswith("speculate: "):
            await self._knowledge.speculate(self._history, frame.text.removeprefix("speculate: "))
        elif isinstance(frame, TextFrame) and frame.text == "cancel":
            await self._knowledge.cancel_speculation()
        elif isinstance(frame, LLMContextFrame):
            self._log.append("turn ended")
        await self.push_frame(frame, direction)


class Recorder(FrameProcessor):
    """After the knowledge stage: when the turn's context reached the LLM."""

    def __init__(self, log: list[str]):
        super().__init__()
        self._log = log

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self._log.append("request sent")
        await self.push_frame(frame, direction)


async def run_turn(
    speculated: str | None,
    said: str,
    cancel_first: bool = False,
    history_sent: list[dict] | None = None,
    hit: Hit = TUNE_UP,
):
    retriever, prefill = FakeRetriever(hit), FakePrefill()
    knowledge = KnowledgeContextProcessor(retriever, top_k=2, prefill=prefill)
    history = copy.deepcopy(HISTORY)
    sent = copy.deepcopy(HISTORY if history_sent is None else history_sent)
    context = LLMContext([*sent, {"role": "user", "content": said}])
    frames: list[Frame] = []
    if speculated is not None:
        # The pause runs a moment: the speculation gets as far as its prefill.
        frames += [TextFrame(f"speculate: {speculated}"), SleepFrame(sleep=PREFILL_S / 4)]
    if cancel_first:
        frames.append(TextFrame("cancel"))
    frames.append(LLMContextFrame(context))
    pipeline = Pipeline([Speculator(knowledge, history, prefill.log), knowledge, Recorder(prefill.log)])
    await run_test(pipeline, frames_to_send=frames)
    return SimpleNamespace(
        retriever=retriever, prefill=prefill, sent=context.get_messages(), history=history, log=prefill.log
    )


async def test_the_turn_that_ends_as_speculated_waits_for_its_prefill_and_sends_the_same_prompt():
    turn = await run_turn(speculated=QUESTION, said=QUESTION)
    assert turn.log == ["turn ended", "prefill done", "request sent"]
    assert turn.prefill.prompts == [turn.sent]  # the cached prompt is exactly what the LLM is asked
    assert turn.retriever.searches == [QUESTION]  # retrieved once, ahead of time


async def test_a_prefill_of_another_prompt_is_not_waited_for():
    # Same words, but the history changed before the turn ended (a cut-off answer rewritten to
    # what was heard): the cached prompt is not the one sent, so waiting for it would only delay.
    turn = await run_turn(speculated=QUESTION, said=QUESTION, history_sent=[HISTORY[0]])
    assert turn.log == ["turn ended", "prefill cancelled", "request sent"]
    assert turn.prefill.prompts[0] != turn.sent


async def test_a_turn_that_ends_with_other_words_drops_the_speculation():
    turn = await run_turn(speculated="How much is a", said=QUESTION)
    assert turn.log == ["turn ended", "prefill cancelled", "request sent"]
    assert turn.retriever.searches == ["How much is a", QUESTION]
    assert turn.sent[-1]["content"].endswith(QUESTION)


async def test_speaking_again_drops_the_speculation_and_nothing_of_it_is_stored():
    turn = await run_turn(speculated="How much is a", said=QUESTION, cancel_first=True)
    assert "prefill done" not in turn.log
    assert turn.history == HISTORY  # the live history the speculation read is untouched
    assert [m["role"] for m in turn.sent] == ["user", "assistant", "user"]


async def test_a_turn_the_fact_itself_answers_prefills_nothing():
    sure = dataclasses.replace(TUNE_UP, agreed=True)  # both searches rank it first: said as written
    turn = await run_turn(speculated=QUESTION, said=QUESTION, hit=sure)
    assert turn.prefill.prompts == []
    assert "request sent" not in turn.log  # answered without the LLM
    assert turn.retriever.searches == [QUESTION]  # and the speculation's retrieval was used


async def test_without_a_prefill_the_turn_is_grounded_as_before():
    retriever = FakeRetriever()
    knowledge = KnowledgeContextProcessor(retriever, top_k=2)
    context = LLMContext([{"role": "user", "content": QUESTION}])
    log: list[str] = []
    pipeline = Pipeline([Speculator(knowledge, [], log), knowledge, Recorder(log)])
    await run_test(pipeline, frames_to_send=[TextFrame(f"speculate: {QUESTION}"), LLMContextFrame(context)])
    assert log == ["turn ended", "request sent"]
    assert retriever.searches == [QUESTION]
    assert context.get_messages()[-1]["content"].startswith(FACTS_HEADER)


# --- when the end-of-turn strategy says the words are settled -----------------------------------

PAUSE_COMPLETE_S = 0.05
PAUSE_INCOMPLETE_S = 0.4


class TurnProgress:
    """The part of the session's TurnHooks the end-of-turn strategy reports to."""

    def __init__(self, events: list[str]):
        self.events = events

    async def turn_settled(self, text: str) -> None:
        self.events.append(f"settled: {text}")

    async def speech_resumed(self) -> None:
        self.events.append("speech resumed")

    async def nothing_heard(self) -> None:
        pass  # not what these tests are about (tests/test_interruptions.py is)


async def turn_strategy(events: list[str]) -> WholeTurnStopStrategy:
    strategy = WholeTurnStopStrategy(
        TurnProgress(events),
        pause_complete_secs=PAUSE_COMPLETE_S,
        pause_incomplete_secs=PAUSE_INCOMPLETE_S,
        user_speech_timeout=0.2,
    )
    await strategy.setup(SimpleNamespace(task_manager=TaskManager()))

    async def stopped(_strategy, _params):
        events.append("turn ended")
        await strategy.handle_user_turn_stopped()  # as pipecat's controller does

    strategy.add_event_handler("on_user_turn_stopped", stopped)
    return strategy


async def a_segment(strategy: WholeTurnStopStrategy, complete: bool, whisper_s: float, text: str) -> None:
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await strategy.process_frame(TurnCompletionFrame(complete=complete))
    await asyncio.sleep(whisper_s)
    await strategy.process_frame(TranscriptionFrame(text, "user", "2026-01-01T00:00:00"))
    await strategy.process_frame(SpeechSegmentDoneFrame(heard_words=True))


async def test_words_settled_during_a_long_pause_are_speculated_on_before_the_turn_ends():
    events: list[str] = []
    strategy = await turn_strategy(events)
    await a_segment(strategy, complete=False, whisper_s=0.0, text=QUESTION)
    await asyncio.sleep(PAUSE_INCOMPLETE_S * 2)
    await strategy.cleanup()
    assert events == ["speech resumed", f"settled: {QUESTION}", "turn ended"]


async def test_the_user_going_on_tells_the_speculation_to_stop():
    events: list[str] = []
    strategy = await turn_strategy(events)
    await a_segment(strategy, complete=False, whisper_s=0.0, text="Hi.")
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.cleanup()
    assert events == ["speech resumed", "settled: Hi.", "speech resumed"]


async def test_the_words_of_several_segments_are_joined_as_the_user_message_will_be():
    events: list[str] = []
    strategy = await turn_strategy(events)
    await a_segment(strategy, complete=False, whisper_s=0.0, text="Hi.")
    await a_segment(strategy, complete=False, whisper_s=0.0, text="How much is a tune-up?")
    await strategy.cleanup()
    assert events[-1] == "settled: Hi. How much is a tune-up?"


async def test_no_speculation_when_the_transcript_itself_ends_the_turn():
    # The usual case on a CPU: Whisper is slower than the short pause after finished speech.
    events: list[str] = []
    strategy = await turn_strategy(events)
    await a_segment(strategy, complete=True, whisper_s=PAUSE_COMPLETE_S * 3, text=QUESTION)
    await strategy.cleanup()
    assert events == ["speech resumed", "turn ended"]


async def test_every_session_s_llm_requests_share_one_http_client():
    """A client per session built an SSL context on the event loop (~0.1 s while other callers'
    audio waited) and was never closed; sessions now share the loop's one."""
    endpoint = LLMEndpoint("http://127.0.0.1:9/v1", "m", "")
    first = make_llm_stage(endpoint, "system", 64, 0.2)
    second = make_llm_stage(endpoint, "system", 64, 0.2)
    assert first._client._client is second._client._client is shared_http_client()
