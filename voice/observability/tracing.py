"""Per-turn latency trace: the moments of a turn, stamped on one clock, and the figures computed
from them in one place.

Every stage stamps a named moment with `TurnTracer.mark` on the session's pipeline clock (a
monotonic nanosecond clock). `TurnRecord.stages_ms` turns moments into figures; each figure's
docstring-like comment in `STAGES` says which two moments it runs between. The `turn.trace`
event, the logs and the benchmark all read this one record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


class Moment:
    """Names of the moments a turn can stamp."""

    USER_STOPPED = "user_stopped"  # the user really stopped: VAD stop time minus its silence window
    VAD_STOPPED = "vad_stopped"  # the VAD said the user stopped (after its silence window)
    STT_START = "stt_start"  # the speech segment handed to Whisper
    STT_END = "stt_end"  # Whisper returned the transcript
    TURN_END = "turn_end"  # the turn was judged finished; the transcript went to the agent
    RAG_START = "rag_start"  # retrieval started
    RAG_END = "rag_end"  # facts found; the LLM request is sent right after
    LLM_FIRST_TOKEN = "llm_first_token"  # first text token streamed back
    LLM_END = "llm_end"  # the LLM stream ended
    TTS_FIRST_TEXT = "tts_first_text"  # the first sentence handed to TTS
    TTS_FIRST_AUDIO = "tts_first_audio"  # TTS produced the first audio of the answer
    FIRST_AUDIO_SENT = "first_audio_sent"  # the first agent audio byte went out on the socket
    AUDIO_DONE = "audio_done"  # the last agent audio byte of the turn went out
    BARGE_IN_ONSET = "barge_in_onset"  # the user began speaking over the agent: VAD start minus its window
    BARGE_IN_LAST_AUDIO = "barge_in_last_audio"  # the last agent audio byte sent before it paused for them


# figure name → (from moment, to moment). The single source of truth for what each figure means.
STAGES: dict[str, tuple[str, str]] = {
    "endpoint": (Moment.USER_STOPPED, Moment.TURN_END),
    "stt": (Moment.STT_START, Moment.STT_END),
    "rag": (Moment.RAG_START, Moment.RAG_END),
    "llm_ttft": (Moment.RAG_END, Moment.LLM_FIRST_TOKEN),
    "llm_total": (Moment.RAG_END, Moment.LLM_END),
    "first_sentence": (Moment.LLM_FIRST_TOKEN, Moment.TTS_FIRST_TEXT),
    "tts_ttfa": (Moment.TTS_FIRST_TEXT, Moment.TTS_FIRST_AUDIO),
    "send": (Moment.TTS_FIRST_AUDIO, Moment.FIRST_AUDIO_SENT),
    "voice_to_voice": (Moment.USER_STOPPED, Moment.FIRST_AUDIO_SENT),
    "response": (Moment.TURN_END, Moment.FIRST_AUDIO_SENT),
    # Only on an interrupted turn. Negative would mean the last chunk went out before the user
    # began; it is at most one audio chunk (40 ms) early.
    "barge_in": (Moment.BARGE_IN_ONSET, Moment.BARGE_IN_LAST_AUDIO),
}


class BargeIn(Protocol):
    """The user's sound that paused the agent, then cut it off (voice/conversation.py's `Hold`)."""

    onset_ns: int  # when the sound began
    last_audio_ns: int  # when the agent's audio last went out before it paused


@dataclass
class TurnRecord:
    """The moments of one turn, in nanoseconds on the session clock."""

    turn_id: int
    moments: dict[str, int] = field(default_factory=dict)
    typed: bool = False
    interrupted: bool = False
    text_chars: int = 0

    def stages_ms(self) -> dict[str, float]:
        """Every figure whose two moments were both stamped, in ms (rounded to 0.1 ms)."""
        out: dict[str, float] = {}
        for name, (start, end) in STAGES.items():
            if start in self.moments and end in self.moments:
                out[name] = round((self.moments[end] - self.moments[start]) / NS_PER_MS, 1)
        return out


class TurnTracer:
    """Collects one session's moments. The first stamp of a moment in a turn wins."""

    def __init__(self, now_ns: Callable[[], int]):
        self._now_ns = now_ns
        self.current: TurnRecord | None = None
        # Moments that happen before a turn id exists (VAD, STT) wait here.
        self._pending: dict[str, int] = {}

    def now_ns(self) -> int:
        return self._now_ns()

    def mark_pending(self, moment: str, at_ns: int | None = None, overwrite: bool = True) -> None:
        """Stamp a moment of the user's speech, before the turn it belongs to is known."""
        if overwrite or moment not in self._pending:
            self._pending[moment] = self._now_ns() if at_ns is None else at_ns

    def speech_stopped(self, silence_secs: float) -> None:
        """The VAD says the user stopped, after `silence_secs` of silence: they really stopped
        that long ago."""
        now = self._now_ns()
        self.mark_pending(Moment.VAD_STOPPED, now)
        self.mark_pending(Moment.USER_STOPPED, now - int(silence_secs * NS_PER_S))

    def start_turn(self, turn_id: int, typed: bool = False) -> TurnRecord:
        """A turn ended on the user's side: open its record with the pending speech moments."""
        record = TurnRecord(turn_id=turn_id, typed=typed)
        now = self._now_ns()
        if typed:
            # A typed turn has no speech: it "stops" when the text arrives, so endpoint is 0.
            record.moments[Moment.USER_STOPPED] = now
        else:
            record.moments.update(self._pending)
        self._pending = {}
        record.moments[Moment.TURN_END] = now
        self.current = record
        return record

    def mark(self, moment: str, at_ns: int | None = None) -> None:
        """Stamp a moment of the current turn (ignored when there is none)."""
        if self.current is not None and moment not in self.current.moments:
            self.current.moments[moment] = self._now_ns() if at_ns is None else at_ns

    def cut_off(self, barge_in: BargeIn | None) -> None:
        """The user cut the current turn's answer off, with the sound that held it first (None: no
        hold came first)."""
        if self.current is None:
            return
        self.current.interrupted = True
        if barge_in is not None:
            self.mark(Moment.BARGE_IN_ONSET, barge_in.onset_ns)
            self.mark(Moment.BARGE_IN_LAST_AUDIO, barge_in.last_audio_ns)
