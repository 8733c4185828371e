"""Speech detection: pipecat's Silero VAD (its bundled ONNX model, no torch)."""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams

from voice.observability.cpu import VAD, ThreadCPU

# Silero's speech probability above which a 32 ms frame counts as speech (pipecat's default,
# measured to ignore room noise while catching soft onsets).
VAD_CONFIDENCE = 0.7
# Frames quieter than this (0..1 of full scale, smoothed) are never speech: keeps breath and hum out.
VAD_MIN_VOLUME = 0.6


class CountedSileroVAD(SileroVADAnalyzer):
    """Silero, counting the CPU of each frame's model run as the VAD's: it runs on a thread pipecat
    starts per session (and stops with it), on one ONNX Runtime thread, the calling one.

    It also keeps `quiet_s`, how long since the last frame it heard as speech, which the STT stage
    reads to start on a pause before the VAD's stop confirms it (voice/stt.py)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._quiet_s = 0.0

    @property
    def quiet_s(self) -> float:
        """Seconds since the last frame heard as speech (0 while speech goes on). Written by the
        VAD's thread, read on the event loop: a float, replaced whole."""
        return self._quiet_s

    @property
    def stop_secs(self) -> float:
        return self.params.stop_secs

    def voice_confidence(self, buffer) -> float:
        with ThreadCPU(VAD):
            confidence = super().voice_confidence(buffer)
        if confidence >= self.params.confidence:
            self._quiet_s = 0.0
        elif self.sample_rate:
            self._quiet_s += len(buffer) / 2 / self.sample_rate  # s16le mono
        return confidence


def make_vad(start_secs: float, stop_secs: float) -> SileroVADAnalyzer:
    """One analyzer per session: Silero keeps per-stream state (cheap: ~2 MB, ~90 ms to create)."""
    return CountedSileroVAD(
        params=VADParams(
            confidence=VAD_CONFIDENCE, start_secs=start_secs, stop_secs=stop_secs, min_volume=VAD_MIN_VOLUME
        )
    )
