"""/metrics and the trace log carry the same per-turn figures as the turn.trace event."""

from __future__ import annotations

import json

import httpx
import pytest

from clients.talk import talk
from tests.test_tracing import spoken_turn
from voice.observability.metrics import Metrics


def sample(text: str, name: str) -> float:
    """The value of one exposition line, e.g. 'parley_turns_total{interrupted="false",typed="true"}'."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_turn_lands_in_every_stage_histogram_and_the_trace_log(tmp_path):
    log = tmp_path / "traces.jsonl"
    metrics = Metrics(log)
    tracer, _ = spoken_turn()
    metrics.turn("s1", tracer.current)
    text = metrics.render().decode()

    assert sample(text, "parley_voice_to_voice_seconds_count") == 1
    assert sample(text, "parley_voice_to_voice_seconds_sum") == pytest.approx(1.177)
    assert sample(text, 'parley_stage_seconds_sum{stage="llm_ttft"}') == pytest.approx(0.150)
    assert sample(text, 'parley_turns_total{interrupted="false",typed="false"}') == 1
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["stages_ms"] == tracer.current.stages_ms()


def test_errors_are_counted_by_code():
    metrics = Metrics()
    metrics.error("odd_audio_bytes")
    metrics.error("odd_audio_bytes")
    assert sample(metrics.render().decode(), 'parley_errors_total{code="odd_audio_bytes"}') == 2


@pytest.mark.e2e
async def test_a_served_turn_shows_in_metrics_and_in_the_trace_log(server):
    result = await talk(server.ws_url, b"", 16000, text="Where are you located?", timeout_s=60)
    (trace,) = result.of("turn.trace")
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{server.url}/metrics", timeout=5)).text

    assert sample(text, 'parley_turns_total{interrupted="false",typed="true"}') >= 1
    assert sample(text, "parley_voice_to_voice_seconds_count") >= 1
    assert "parley_active_sessions" in text
    lines = [json.loads(line) for line in server.trace_log.read_text().splitlines()]
    mine = [line for line in lines if line["session_id"] == result.session_id]
    assert [line["stages_ms"] for line in mine] == [trace["stages_ms"]]
