"""End to end, with the real default models: a caller asks the demo business a question over
/ws, by voice and by text, and gets the right fact back, spoken."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import websockets

from clients.talk import talk
from tests.conftest import speak
from voice import catalogue
from voice.audio import resample_pcm16
from voice.stt import WHISPER_SAMPLE_RATE, WhisperEngine

pytestmark = pytest.mark.e2e

QUESTIONS = {
    q["id"]: q
    for q in json.loads((Path(__file__).parent.parent / "benchmarks" / "questions.json").read_text())
}
EVERY_STAGE = ("endpoint", "stt", "rag", "llm_ttft", "tts_ttfa", "voice_to_voice")


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    """A second Whisper in the test process, to hear what the agent really said: with its whole
    window, as before the server's short one (the judge does not change with the server)."""
    return WhisperEngine.load(catalogue.ensure("whisper-base"), short_window=False)


def question(fragment: str) -> dict:
    return next(q for q in QUESTIONS.values() if fragment.lower() in q["question"].lower())


def states_fact(text: str, q: dict) -> bool:
    lowered = text.lower()
    return any(expected in lowered for expected in q["expect_any"])


def heard(whisper: WhisperEngine, pcm: bytes, rate: int) -> str:
    return whisper.transcribe_pcm16(resample_pcm16(pcm, rate, WHISPER_SAMPLE_RATE)).text


async def test_spoken_question_gets_the_right_fact_spoken_back(server, whisper):
    q = question("open on Saturday")
    result = await talk(server.ws_url, speak(q["question"]), 16000, silence_s=4.0, timeout_s=60)

    assert not result.of("error"), result.of("error")
    assert "saturday" in result.transcript.lower(), f"transcript was {result.transcript!r}"
    assert states_fact(result.agent_text, q), f"agent said {result.agent_text!r}"
    assert len(result.of("user.transcript")) == 1, "the question must be one turn"
    assert result.of("agent.audio_done"), "the answer's audio must be announced as complete"

    spoken = heard(whisper, bytes(result.audio), result.output_sample_rate)
    assert states_fact(spoken, q), f"the reply audio says {spoken!r}"

    (trace,) = result.of("turn.trace")
    for stage in EVERY_STAGE:
        assert trace["stages_ms"].get(stage, -1) >= 0, f"{stage} missing from {trace}"
    assert trace["stages_ms"]["voice_to_voice"] >= trace["stages_ms"]["endpoint"]


async def test_typed_question_gets_the_right_fact_spoken_back(server, whisper):
    q = question("basic tune-up")
    result = await talk(server.ws_url, b"", 16000, text=q["question"], timeout_s=60)

    assert not result.of("error"), result.of("error")
    assert result.transcript == q["question"]
    assert states_fact(result.agent_text, q), f"agent said {result.agent_text!r}"
    spoken = heard(whisper, bytes(result.audio), result.output_sample_rate)
    assert states_fact(spoken, q), f"the reply audio says {spoken!r}"
    (trace,) = result.of("turn.trace")
    for stage in ("rag", "llm_ttft", "tts_ttfa", "voice_to_voice"):
        assert trace["stages_ms"].get(stage, -1) >= 0, f"{stage} missing from {trace}"


async def test_a_short_pause_inside_a_question_keeps_it_one_turn(server):
    pcm = speak("Hi there.") + bytes(int(0.45 * 16000) * 2) + speak("What time do you open on Saturday?")
    result = await talk(server.ws_url, pcm, 16000, silence_s=4.0, timeout_s=60)

    transcripts = result.of("user.transcript")
    assert {t["turn_id"] for t in transcripts} == {1}, f"split into turns: {transcripts}"
    final = transcripts[-1]["text"].lower()
    # The greeting's words (however Whisper hears them: "hi there", "hi, mayor") come before the
    # question in the one turn's text.
    greeting, _, question = final.partition("what time")
    assert greeting.strip(" ,.!") and "saturday" in question, f"the turn's text is {final!r}"
    assert not result.of("agent.interrupted"), "nothing was said yet, so nothing was interrupted"
    assert len(result.of("agent.audio_done")) == 1, (
        "one question, one answer: the greeting got no answer of its own"
    )
    assert result.agent_text, "the whole question was answered"


async def test_audio_at_48khz_is_understood(server):
    result = await talk(
        server.ws_url, speak("What time do you open on Saturday?", 48000), 48000, silence_s=4.0, timeout_s=60
    )
    assert "saturday" in result.transcript.lower(), f"transcript was {result.transcript!r}"
    assert np.frombuffer(bytes(result.audio), dtype="<i2").size > 0


async def test_the_words_after_a_comma_pause_are_part_of_the_turn(server):
    # espeak pauses at the comma long enough for the VAD to split the question in two segments;
    # the first half's transcript arrives while the second half is still being spoken.
    result = await talk(
        server.ws_url, speak("I've got a flat tire, how much to fix it?"), 16000, silence_s=4.0, timeout_s=60
    )
    assert len(result.of("user.speech_stopped")) >= 2, "the VAD did not split the question: nothing tested"
    transcripts = result.of("user.transcript")
    assert {t["turn_id"] for t in transcripts} == {1}, transcripts
    final = transcripts[-1]["text"].lower()
    assert "flat" in final and "how much" in final, f"the turn's text is {final!r}"


async def test_two_callers_at_once_each_get_their_own_answer(server):
    saturday, tune_up = question("open on Saturday"), question("basic tune-up")
    first, second = await asyncio.gather(
        talk(server.ws_url, b"", 16000, text=saturday["question"], timeout_s=90),
        talk(server.ws_url, b"", 16000, text=tune_up["question"], timeout_s=90),
    )
    assert states_fact(first.agent_text, saturday), f"first caller heard {first.agent_text!r}"
    assert states_fact(second.agent_text, tune_up), f"second caller heard {second.agent_text!r}"
    assert first.audio and second.audio


async def test_speaking_over_the_agent_stops_its_audio(server):
    """Barge-in: the caller talks while the agent is answering; the agent falls silent."""
    # The week's hours: several facts, so several sentences to cut into (a one-fact answer can end
    # before the caller's words are judged).
    long_answer = {"question": "What are your opening hours during the week?"}
    interruption = speak("Wait, stop please.")
    frame = 640  # 20 ms at 16 kHz
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "session.ready"
        await ws.send(json.dumps({"type": "input_text", "text": long_answer["question"]}))

        audio_before = 0
        events: list[dict] = []
        while audio_before < 16000:  # the answer is being heard: ~0.4 s of it has arrived
            message = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(message, bytes):
                audio_before += len(message)
            else:
                events.append(json.loads(message))

        audio_after_interrupt = 0
        interrupted_at = None
        next_turn = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        # The words, then silence while the agent (paused at once) hears them out and decides:
        # Whisper's verdict takes 1-3 s on a busy 2-core machine. A second more after it comes.
        pcm = interruption + bytes(8 * 16000 * 2)
        for i in range(0, len(pcm), frame):
            if interrupted_at is not None and loop.time() - started > interrupted_at + 1:
                break
            await ws.send(pcm[i : i + frame])
            await asyncio.sleep(0.02)
            while True:  # drain what has arrived, without blocking the microphone
                try:
                    message = await asyncio.wait_for(ws.recv(), 0.001)
                except TimeoutError:
                    break
                if isinstance(message, bytes):
                    if interrupted_at is not None and not next_turn:
                        audio_after_interrupt += len(message)  # the cut-off answer's, not the next one's
                    continue
                event = json.loads(message)
                events.append(event)
                next_turn = next_turn or (event["type"] == "user.transcript" and event["turn_id"] > 1)
                if event["type"] == "agent.interrupted" and interrupted_at is None:
                    interrupted_at = loop.time() - started

    assert interrupted_at is not None, f"the agent was never interrupted: {events}"
    (cut,) = [e for e in events if e["type"] == "agent.interrupted"]
    # Cut off well within its first sentence: what was heard is the start of that sentence.
    # Compared as spoken: a line break in the LLM's text (a list) is a space in what was heard.
    said = " ".join(
        " ".join(e["text"].split()) for e in events if e["type"] == "agent.text" and e["turn_id"] == 1
    )
    heard = " ".join(cut["heard_text"].removesuffix("—").split())
    assert cut["turn_id"] == 1 and said.startswith(heard), (cut, said)
    assert not [e for e in events if e["type"] == "agent.audio_done" and e["turn_id"] == 1], (
        "turn 1 can't finish"
    )
    # The output is paced in real time, so at most a chunk or two was already on its way.
    assert audio_after_interrupt <= 2 * 1764 * 2, (
        f"{audio_after_interrupt} bytes of audio after the interruption"
    )
    trace = next(e for e in events if e["type"] == "turn.trace" and e["turn_id"] == 1)
    assert trace["interrupted"] is True
