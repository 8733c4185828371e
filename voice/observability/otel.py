"""OpenTelemetry spans: a span per conversation, a child span per turn, and under each turn one
span per stage, made from the same `TurnRecord` as the `turn.trace` event (so the same moments
and figures, `voice/observability/tracing.py`).

Turn and stage spans are written when the turn is over, with the start and end times of the
moments they run between: a stage span lasts exactly its `turn.trace` figure. The exporter comes
from `PARLEY_OTEL_EXPORTER` (none, console, otlp); OTLP takes its endpoint and headers from the
standard `OTEL_EXPORTER_OTLP_*` variables.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from voice.observability.tracing import STAGES, TurnRecord

log = logging.getLogger(__name__)

Exporter = Literal["none", "console", "otlp"]
SERVICE_NAME = "parley"


def make_exporter(kind: Exporter) -> SpanExporter | None:
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, ... as the standard says


class SpanRecorder:
    """Writes one server's conversations and turns as spans."""

    def __init__(self, exporter: SpanExporter, batch: bool = True):
        self._provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        if batch:
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
        else:  # tests: each span is exported as it ends
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("parley.voice")
        # Moments are stamped on the monotonic clock; spans want Unix-epoch nanoseconds.
        self._epoch_offset_ns = time.time_ns() - time.monotonic_ns()
        self._conversations: dict[str, trace.Span] = {}
        self.models: dict[str, str] = {}

    def conversation_started(self, session_id: str) -> None:
        span = self._tracer.start_span("conversation", attributes={"parley.session_id": session_id})
        self._conversations[session_id] = span

    def conversation_ended(self, session_id: str) -> None:
        span = self._conversations.pop(session_id, None)
        if span is not None:
            span.end()

    def turn(self, session_id: str, record: TurnRecord) -> None:
        if not record.moments:
            return
        parent = self._conversations.get(session_id)
        context = trace.set_span_in_context(parent) if parent is not None else None
        attributes = {
            "parley.session_id": session_id,
            "parley.turn_id": record.turn_id,
            "parley.typed": record.typed,
            "parley.interrupted": record.interrupted,
            "parley.transcript_chars": record.text_chars,
            **{f"parley.model.{role}": name for role, name in self.models.items()},
        }
        turn_span = self._tracer.start_span(
            "turn",
            context=context,
            start_time=self._epoch(min(record.moments.values())),
            attributes=attributes,
        )
        turn_context = trace.set_span_in_context(turn_span)
        for name, (start, end) in STAGES.items():
            if start in record.moments and end in record.moments:
                stage = self._tracer.start_span(
                    name,
                    context=turn_context,
                    start_time=self._epoch(record.moments[start]),
                    attributes={"parley.from": start, "parley.to": end},
                )
                stage.end(end_time=self._epoch(record.moments[end]))
        turn_span.end(end_time=self._epoch(max(record.moments.values())))

    def shutdown(self) -> None:
        for session_id in list(self._conversations):
            self.conversation_ended(session_id)
        self._provider.shutdown()

    def _epoch(self, monotonic_ns: int) -> int:
        return monotonic_ns + self._epoch_offset_ns
