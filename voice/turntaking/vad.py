"""Speech detection: pipecat's Silero VAD (its bundled ONNX model, no torch)."""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams

# Silero's speech probability above which a 32 ms frame counts as speech (pipecat's default,
# measured to ignore room noise while catching soft onsets).
VAD_CONFIDENCE = 0.7
# Frames quieter than this (0..1 of full scale, smoothed) are never speech: keeps breath and hum out.
VAD_MIN_VOLUME = 0.6


def make_vad(start_secs: float, stop_secs: float) -> SileroVADAnalyzer:
    """One analyzer per session: Silero keeps per-stream state (cheap: ~2 MB, ~90 ms to create)."""
    return SileroVADAnalyzer(
        params=VADParams(
            confidence=VAD_CONFIDENCE, start_secs=start_secs, stop_secs=stop_secs, min_volume=VAD_MIN_VOLUME
        )
    )
