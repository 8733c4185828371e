"""Prometheus metrics and the JSON-lines trace log, both fed from the one per-turn record
(`voice.observability.tracing.TurnRecord`), so they carry the same figures as the `turn.trace` event."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from voice.observability.otel import SpanRecorder
from voice.observability.tracing import STAGES, TurnRecord

log = logging.getLogger(__name__)


class EndReason:
    """Why a session ended: in the log and in `parley_sessions_ended_total{reason}`."""

    HUNG_UP = "hung_up"  # the phone caller hung up (Twilio's `stop`)
    DISCONNECTED = "disconnected"  # the socket closed or dropped
    CLIENT_ERROR = "client_error"  # a client mistake the session cannot go on after (a 1 MiB message)
    STOPPED = "stopped"  # the server stopped the session (shutting down)
    FAILED = "failed"  # a bug: the server log has the traceback


# Seconds. Dense from 50 ms to 2 s, where the stages of a turn live on CPU and GPU alike, with a
# tail to 10 s so a stalled stage still lands in a bucket of its own.
LATENCY_BUCKETS_S = (
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.8,
    1.0,
    1.25,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
)
MS_PER_S = 1000.0


class Metrics:
    """One registry per server (tests start several in one process)."""

    def __init__(
        self,
        trace_log: Path | None = None,
        spans: SpanRecorder | None = None,
        cpu: Callable[[], dict[str, float]] | None = None,
    ):
        self.registry = CollectorRegistry()
        if cpu is not None:
            self.registry.register(_CPUCollector(cpu))
        self.spans = spans
        self.stage_seconds = Histogram(
            "parley_stage_seconds",
            "Time per turn stage; each stage runs between the two moments docs/protocol.md names.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.voice_to_voice_seconds = Histogram(
            "parley_voice_to_voice_seconds",
            "User really stopped speaking → first agent audio byte sent.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.barge_in_seconds = Histogram(
            "parley_barge_in_seconds",
            "User began speaking over the agent → last agent audio byte sent before it paused for them.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.false_interruptions = Counter(
            "parley_false_interruptions_total",
            "Sounds that paused the agent but did not take the floor (a cough, a backchannel, echo), by verdict.",
            ["reason"],
            registry=self.registry,
        )
        self.active_sessions = Gauge(
            "parley_active_sessions", "Conversations open now.", registry=self.registry
        )
        self.turns = Counter(
            "parley_turns_total",
            "User turns answered (or cut off).",
            ["interrupted", "typed"],
            registry=self.registry,
        )
        self.errors = Counter(
            "parley_errors_total",
            "Client mistakes and failures, by code: error events sent on /ws; on a phone call, where Twilio "
            "can't be told, the ones logged.",
            ["code"],
            registry=self.registry,
        )
        self.sessions_ended = Counter(
            "parley_sessions_ended_total",
            "Conversations ended, by why (EndReason: hung_up, disconnected, ...).",
            ["reason"],
            registry=self.registry,
        )
        self._trace_log = trace_log
        self._log_lock = threading.Lock()

    def session_started(self, session_id: str) -> None:
        self.active_sessions.inc()
        if self.spans is not None:
            self.spans.conversation_started(session_id)

    def session_ended(self, session_id: str, reason: str = "disconnected") -> None:
        self.active_sessions.dec()
        self.sessions_ended.labels(reason=reason).inc()
        if self.spans is not None:
            self.spans.conversation_ended(session_id)

    def turn(self, session_id: str, record: TurnRecord) -> None:
        """Record one finished (or interrupted) turn everywhere: histograms, the trace log, spans."""
        stages = record.stages_ms()
        if self.spans is not None:
            try:
                self.spans.turn(session_id, record)
            except Exception:  # noqa: BLE001 - tracing must never cost a caller their turn
                log.exception("could not record the turn's spans")
        for name, value_ms in stages.items():
            if name == "voice_to_voice":
                self.voice_to_voice_seconds.observe(value_ms / MS_PER_S)
            elif name == "barge_in":
                self.barge_in_seconds.observe(max(0.0, value_ms) / MS_PER_S)
            elif name in STAGES:
                self.stage_seconds.labels(stage=name).observe(value_ms / MS_PER_S)
        self.turns.labels(interrupted=str(record.interrupted).lower(), typed=str(record.typed).lower()).inc()
        if self._trace_log is not None:
            line = {
                "time": time.time(),
                "session_id": session_id,
                "turn_id": record.turn_id,
                "typed": record.typed,
                "interrupted": record.interrupted,
                "text_chars": record.text_chars,
                "stages_ms": stages,
            }
            try:
                with self._log_lock, self._trace_log.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(line) + "\n")
            except OSError as exc:  # a full disk must not end the conversation
                log.warning("cannot append to the trace log %s: %s", self._trace_log, exc)

    def false_interruption(self, reason: str) -> None:
        self.false_interruptions.labels(reason=reason).inc()

    def error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CPUCollector:
    """`parley_cpu_seconds_total{stage}`, read from the threads' counters at each scrape
    (voice/observability/cpu.py)."""

    def __init__(self, read: Callable[[], dict[str, float]]):
        self._read = read

    def collect(self):
        family = CounterMetricFamily(
            "parley_cpu_seconds",
            "CPU seconds this process has spent, by stage (voice/observability/cpu.py says how each is counted).",
            labels=["stage"],
        )
        for stage, seconds in self._read().items():
            family.add_metric([stage], seconds)
        yield family
