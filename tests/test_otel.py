"""OpenTelemetry spans: conversation → turn → one span per stage, each stage span lasting exactly
its turn.trace figure (the scripted turn of test_tracing, on a virtual clock)."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.test_tracing import spoken_turn
from voice.observability.metrics import Metrics
from voice.observability.otel import SpanRecorder

NS_PER_MS = 1_000_000


def test_a_turn_becomes_a_turn_span_with_a_span_per_stage_under_its_conversation():
    exporter = InMemorySpanExporter()
    spans = SpanRecorder(exporter, batch=False)
    spans.models = {"stt": "whisper-base", "llm": "qwen2.5-0.5b"}
    metrics = Metrics(spans=spans)
    tracer, _ = spoken_turn()
    tracer.current.text_chars = 34

    metrics.session_started("s1")
    metrics.turn("s1", tracer.current)
    metrics.session_ended("s1")

    by_name = {span.name: span for span in exporter.get_finished_spans()}
    conversation, turn = by_name["conversation"], by_name["turn"]
    assert turn.parent.span_id == conversation.context.span_id
    assert turn.attributes["parley.turn_id"] == 1
    assert turn.attributes["parley.transcript_chars"] == 34
    assert turn.attributes["parley.interrupted"] is False
    assert turn.attributes["parley.model.stt"] == "whisper-base"
    figures = tracer.current.stages_ms()
    assert set(figures) <= set(by_name)
    for name, ms in figures.items():
        stage = by_name[name]
        assert stage.parent.span_id == turn.context.span_id
        assert (stage.end_time - stage.start_time) / NS_PER_MS == ms, name
    # The turn spans its moments, from the user stopping to the LLM's last token.
    assert (turn.end_time - turn.start_time) / NS_PER_MS == 2577 - 1000
    assert by_name["voice_to_voice"].start_time == turn.start_time


def test_without_an_exporter_turns_are_still_measured_in_metrics():
    metrics = Metrics()
    tracer, _ = spoken_turn()
    metrics.session_started("s1")
    metrics.turn("s1", tracer.current)
    metrics.session_ended("s1")
    assert metrics.spans is None, "no exporter is set up unless one is configured"
    text = metrics.render().decode()
    assert "parley_voice_to_voice_seconds_count 1.0" in text.splitlines(), "the turn still counts"
