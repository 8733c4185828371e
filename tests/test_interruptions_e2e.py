"""Scripted conversations through the real pipeline and the real models: a simulated caller
(clients/caller.py) talks over the agent, coughs, says "mm-hmm", hears its own echo, and asks the
agent to go on. Each test asserts what the caller would notice.

The long answer to LONG_QUESTION (about 20 s of speech: the week's opening hours) gives room to
cut in. Speech is synthesised by espeak-ng, a voice other than the agent's.
"""

from __future__ import annotations

import time

import pytest

from clients.caller import Caller, Echo
from tests.conftest import cough, silence, speak
from voice.playback import CUT_OFF_MARK

pytestmark = pytest.mark.e2e

LONG_QUESTION = "What are your opening hours during the week?"
CUT_IN_AFTER_S = 2.5  # into the agent's answer: past its first words, well before its end
ANSWER_TIMEOUT_S = 90  # model turns on a shared 2-core CI machine
# Audio the agent may still send after the caller starts speaking over it: what is already on the
# way plus the time to hear that it is speech. Far below the seconds of answer left to speak.
STOPPED_WITHIN_AUDIO_MS = 1000
# The agent pauses within ~0.25 s of the caller's speech onset (barge-in p95 231 ms, client side):
# a sentence whose audio began before then was on its way, and its text with it. Any later one is
# the cut-off answer going on.
PAUSED_WITHIN_S = 0.5


def plain(text: str) -> str:
    """`text` with every run of white space (line breaks included) one space."""
    return " ".join(text.split())


def audio_ms(caller: Caller, nbytes: int) -> float:
    return 1000 * nbytes / 2 / caller.output_rate


async def test_barge_in_stops_the_agent_and_the_new_question_is_answered(server):
    async with Caller(server.ws_url) as caller:
        asked = await caller.ask_and_listen(LONG_QUESTION, CUT_IN_AFTER_S, ANSWER_TIMEOUT_S)
        cut_in = time.monotonic()
        await caller.say(speak("Wait. Are you open on Sunday?"))
        interrupted = await caller.wait_for("agent.interrupted", since=asked, timeout_s=30)
        new_turn = await caller.wait_for("user.transcript", since=cut_in, timeout_s=ANSWER_TIMEOUT_S)
        await caller.wait_for("agent.audio_done", turn_id=new_turn["turn_id"], timeout_s=ANSWER_TIMEOUT_S)
        trace = await caller.wait_for("turn.trace", turn_id=interrupted["turn_id"])

    said_before = " ".join(
        e["text"] for e in caller.log.events("agent.text") if e["turn_id"] == interrupted["turn_id"]
    )
    heard = interrupted["heard_text"]
    assert heard, "the caller heard the start of the answer"
    assert heard.removesuffix(CUT_OFF_MARK).split()[:3] == said_before.split()[:3]
    assert len(heard.removesuffix(CUT_OFF_MARK)) < len(said_before) or heard.endswith(CUT_OFF_MARK)
    assert trace["interrupted"] and "barge_in" in trace["stages_ms"]
    assert "sunday" in new_turn["text"].lower()
    answer = [e for e in caller.log.events("agent.text") if e["turn_id"] == new_turn["turn_id"]]
    assert answer, "the new question got a spoken answer"


async def test_the_agent_stops_sending_audio_when_cut_off(server):
    async with Caller(server.ws_url) as caller:
        await caller.ask_and_listen(LONG_QUESTION, CUT_IN_AFTER_S, ANSWER_TIMEOUT_S)
        await caller.say(speak("Stop, stop. How much is a tune-up?"))
        interrupted = await caller.wait_for("agent.interrupted", timeout_s=30)
        turn = interrupted["turn_id"]
        await caller.pause(2)
        onset = caller.log.speech_onsets[0]
        # Up to the caller's next turn: a fact the agent is sure of is said within the 2 s pause.
        next_turn_at = next(
            (
                h.at
                for h in caller.log.received
                if h.at >= onset
                and h.event
                and h.event["type"] == "user.transcript"
                and h.event["turn_id"] != turn
            ),
            float("inf"),
        )
        heard_after = caller.log.audio_between(onset, next_turn_at)
        next_text = caller.log.events("agent.text", since=onset + PAUSED_WITHIN_S)
    # Nothing more of the cut-off answer comes: only what was in flight when the caller began.
    assert audio_ms(caller, heard_after) < STOPPED_WITHIN_AUDIO_MS, f"{audio_ms(caller, heard_after):.0f} ms"
    assert all(e["turn_id"] != turn for e in next_text), "no sentence of the cut-off answer after it"


async def answer_with_interjection(server_url: str, interjection: bytes, echo: Echo | None = None) -> Caller:
    async with Caller(server_url, echo=echo) as caller:
        asked = await caller.ask_and_listen(LONG_QUESTION, CUT_IN_AFTER_S, ANSWER_TIMEOUT_S)
        if interjection:
            await caller.say(interjection)
        await caller.wait_for("agent.audio_done", since=asked, timeout_s=ANSWER_TIMEOUT_S)
        await caller.pause(1)
    return caller


def assert_answered_in_full(caller: Caller) -> None:
    assert not caller.log.events("agent.interrupted"), "the agent did not stop for it"
    assert len(caller.log.events("user.transcript")) == 1, "and it did not become a turn of the conversation"
    sentences = caller.log.events("agent.text")
    assert len(sentences) >= 3, "the whole answer was spoken"
    said_ms = audio_ms(caller, caller.log.audio_between(0))
    assert said_ms > 8000, f"the whole answer was spoken ({said_ms:.0f} ms)"


async def test_a_cough_does_not_stop_the_agent(server):
    caller = await answer_with_interjection(server.ws_url, cough() + silence(0.3) + cough(seed=8))
    assert_answered_in_full(caller)


async def test_uh_huh_does_not_stop_the_agent(server):
    # espeak's "mm-hmm" is not one Whisper recognises ("MMFM", "LMA-CAM"); its "uh huh" is.
    caller = await answer_with_interjection(server.ws_url, speak("uh huh"))
    assert_answered_in_full(caller)


async def test_yeah_okay_does_not_stop_the_agent(server):
    caller = await answer_with_interjection(server.ws_url, speak("yeah, okay"))
    assert_answered_in_full(caller)


async def test_the_agents_own_echo_does_not_interrupt_it(server):
    # A speakerphone: the agent's voice comes back 200 ms later at -10 dB, the whole answer long.
    caller = await answer_with_interjection(server.ws_url, b"", echo=Echo(delay_ms=200, gain=0.3))
    assert_answered_in_full(caller)
    assert not caller.log.events("agent.paused"), "the agent never even paused for its own voice"


async def test_a_short_yes_is_a_whole_turn(server):
    async with Caller(server.ws_url) as caller:
        # A caller draws breath before answering; Silero needs a few frames of audio to settle.
        await caller.say(silence(0.5) + speak("Yes."))
        transcript = await caller.wait_for("user.transcript", timeout_s=ANSWER_TIMEOUT_S)
        await caller.wait_for("agent.audio_done", timeout_s=ANSWER_TIMEOUT_S)
    assert transcript["text"].strip(" .!").lower() == "yes"
    assert caller.log.events("agent.text"), "the agent answered it"


async def test_what_were_you_saying_continues_from_what_was_heard(server):
    async with Caller(server.ws_url) as caller:
        await caller.ask_and_listen(LONG_QUESTION, CUT_IN_AFTER_S, ANSWER_TIMEOUT_S)
        await caller.say(speak("Hold on a second."))
        interrupted = await caller.wait_for("agent.interrupted", timeout_s=30)
        hold_on = await caller.wait_for("user.transcript", turn_id=interrupted["turn_id"] + 1, timeout_s=60)
        await caller.wait_for("turn.trace", turn_id=hold_on["turn_id"], timeout_s=ANSWER_TIMEOUT_S)
        asked_again = time.monotonic()
        await caller.say(speak("Okay, what were you saying?"))
        resumed = await caller.wait_for("user.transcript", since=asked_again, timeout_s=60)
        await caller.wait_for("agent.audio_done", turn_id=resumed["turn_id"], timeout_s=ANSWER_TIMEOUT_S)
    # Compared as spoken: a line break in the LLM's text (a list) is a space in what was heard.
    sentences = [
        plain(e["text"]) for e in caller.log.events("agent.text") if e["turn_id"] == interrupted["turn_id"]
    ]
    heard = plain(interrupted["heard_text"])
    continuation = plain(
        " ".join(e["text"] for e in caller.log.events("agent.text") if e["turn_id"] == resumed["turn_id"])
    )
    assert continuation.startswith("As I was saying"), continuation
    rest = continuation.removeprefix("As I was saying:").strip()
    heard_whole = [s for s in sentences if s in heard]
    assert heard_whole or heard.endswith(CUT_OFF_MARK), heard
    # It picks up at the sentence the caller did not hear whole...
    if heard.endswith(CUT_OFF_MARK):
        cut_sentence_start = heard.removesuffix(CUT_OFF_MARK).removeprefix(" ".join(heard_whole)).strip()
        assert rest.startswith(cut_sentence_start), (heard, rest)
    # ...and does not say again what was heard in full.
    assert not any(s in rest for s in heard_whole), (heard, rest)
