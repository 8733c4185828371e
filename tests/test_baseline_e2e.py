"""End to end, with the real models: the stock-pipecat baseline (benchmarks/baseline_server.py)
answers a spoken question over Parley's /ws protocol, driven by Parley's own client, unchanged."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.baseline_server import BaselineServer, start_baseline, stop_baseline
from clients.talk import talk
from tests.conftest import speak

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = {q["id"]: q for q in json.loads((ROOT / "benchmarks" / "questions.json").read_text())}
# One caller uses one LLM slot: prefilling the knowledge prompt into the other three would add a
# minute or two of start-up on 2 cores and test nothing more.
PRIME_SLOTS = 1
# Longer than the stock end of turn can take: Whisper (beam 5), then Smart Turn's 3 s silence
# fallback when it judges the question unfinished.
SILENCE_AFTER_S = 6.0
REPLY_TIMEOUT_S = 60.0
MIN_REPLY_AUDIO_S = 0.5  # a spoken answer, not a click


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Iterator[BaselineServer]:
    server = start_baseline(log_dir=tmp_path_factory.mktemp("baseline"), prime_slots=PRIME_SLOTS)
    yield server
    stop_baseline(server)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


async def test_baseline_answers_a_spoken_question(baseline):
    q = QUESTIONS["saturday-open"]
    result = await talk(
        baseline.ws_url, speak(q["question"]), 16000, silence_s=SILENCE_AFTER_S, timeout_s=REPLY_TIMEOUT_S
    )

    assert not result.of("error"), result.of("error")
    assert {"open", "saturday"} <= words(result.transcript), f"transcript was {result.transcript!r}"
    assert result.output_sample_rate > 0
    reply_s = len(result.audio) / 2 / result.output_sample_rate
    assert reply_s >= MIN_REPLY_AUDIO_S, f"only {reply_s:.2f} s of reply audio"
    assert result.agent_text, "the spoken sentences must be announced as agent.text"
    assert result.client_voice_to_voice_ms is not None and result.client_voice_to_voice_ms > 0
    print(
        f"\nbaseline: heard {result.transcript!r}, said {result.agent_text!r}, "
        f"client voice-to-voice {result.client_voice_to_voice_ms:.0f} ms, "
        f"trace {result.of('turn.trace')[-1]['stages_ms']}"
    )
