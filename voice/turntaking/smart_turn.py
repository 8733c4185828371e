"""Smart Turn v3: does the user's speech sound finished? ("Yes." does; "Hi, I've got a flat tyre
and…" does not.) The ONNX model ships inside pipecat (no torch); one copy per process.

The end-of-turn strategy (voice/turntaking/end_of_turn.py) waits a short silence after speech judged finished and
a longer one after speech judged unfinished; the STT stage asks the model at each pause, in
parallel with Whisper.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from pipecat.frames.frames import DataFrame

from voice.audio import pcm16_to_float
from voice.observability.cpu import run_in_stage

log = logging.getLogger(__name__)

# The model's own threshold: it is trained with sigmoid outputs, 0.5 meaning "as likely as not".
COMPLETE_PROBABILITY = 0.5
# The bare model call of pipecat's analyzer (not public; see tests/test_pipecat_internals.py).
PIPECAT_PREDICT = "_predict_endpoint"
# Smart Turn looks at the last 8 s of a turn; a pause inside a question can be a couple of seconds
# from its start, so recent segments are judged together with the new one.
TURN_CONTEXT_S = 8.0


@dataclass
class TurnCompletionFrame(DataFrame):
    """Pushed by the STT stage at a pause, before that segment's transcript: whether the speech
    so far sounds like a finished turn. It must reach the turn strategy, so an interruption may
    not drop it."""

    complete: bool = True
    probability: float = 1.0
    interruptible: bool = field(default=False, init=False)


class SmartTurnEngine:
    """pipecat's LocalSmartTurnAnalyzerV3 model, shared: `complete_probability` is thread-safe."""

    def __init__(self, analyzer):
        self._analyzer = analyzer
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> SmartTurnEngine:
        from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

        start = time.monotonic()
        # One thread: it runs beside Whisper at every pause, and 2 cores are all there is.
        engine = cls(LocalSmartTurnAnalyzerV3(cpu_count=1, sample_rate=16000))
        engine.complete_probability(bytes(16000))  # warm-up: the first run pays for allocations
        log.info("Smart Turn v3 loaded in %.2fs", time.monotonic() - start)
        return engine

    def complete_probability(self, pcm16k: bytes) -> float:
        samples = pcm16_to_float(pcm16k)[-int(TURN_CONTEXT_S * 16000) :]
        with self._lock:
            # pipecat's analyzer keeps its per-stream buffering elsewhere; this is the bare model
            # call (pinned pipecat version, see pyproject.toml).
            result = getattr(self._analyzer, PIPECAT_PREDICT)(np.asarray(samples, dtype=np.float32))
        return float(result["probability"])

    async def judge(self, pcm16k: bytes) -> TurnCompletionFrame:
        probability = await run_in_stage("turn", self.complete_probability, pcm16k)
        return TurnCompletionFrame(complete=probability > COMPLETE_PROBABILITY, probability=probability)
