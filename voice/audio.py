"""PCM helpers: conversions between s16le bytes and float arrays, resampling, levels."""

from __future__ import annotations

import numpy as np
import soxr

PCM_SAMPLE_WIDTH = 2  # signed 16-bit little-endian, the only wire format
INT16_SCALE = 32768.0
# 'HQ' is transparent for speech and costs ~0.1 ms per 20 ms frame; 'VHQ' buys nothing audible.
RESAMPLE_QUALITY = "HQ"


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    """s16le bytes → float32 samples in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / INT16_SCALE


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] → s16le bytes (clipped, never wrapped)."""
    clipped = np.clip(samples, -1.0, 32767.0 / INT16_SCALE)
    return (clipped * INT16_SCALE).astype("<i2").tobytes()


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole s16le buffer (for streams, use `StreamResampler`)."""
    if from_rate == to_rate or not pcm:
        return pcm
    out = soxr.resample(np.frombuffer(pcm, dtype="<i2"), from_rate, to_rate, quality=RESAMPLE_QUALITY)
    return np.asarray(out, dtype="<i2").tobytes()


class StreamResampler:
    """Resamples a stream chunk by chunk without clicks at chunk borders (soxr keeps the state)."""

    def __init__(self, from_rate: int, to_rate: int):
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream = (
            None
            if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality=RESAMPLE_QUALITY)
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return np.asarray(self._stream.resample_chunk(samples, last=last), dtype="<i2").tobytes()


def duration_ms(pcm: bytes, sample_rate: int) -> float:
    return 1000.0 * len(pcm) / (PCM_SAMPLE_WIDTH * sample_rate)


def rms_dbfs(pcm: bytes) -> float:
    """Level of a chunk in dBFS (-inf for digital silence)."""
    samples = pcm16_to_float(pcm)
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
