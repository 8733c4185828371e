"""The phone's narrowband audio: resampling between 8 kHz and the pipeline's rates with 3 ms of
delay.

pipecat's Twilio serializer resamples with a soxr stream at its very-high-quality setting, which
works in blocks: measured here, 22.05 kHz to 8 kHz gives nothing for the first 200 ms of an
answer and then 150 ms at a time, and 8 kHz to 16 kHz holds back 60 ms on average. It also
clears that state after 0.2 s without audio, dropping the end of each answer. On a phone call
every one of those milliseconds is heard as the agent being slow.

`LowDelayResampler` computes each output sample directly from the input around its instant, with
a Kaiser-windowed sinc low-pass: its only delay is the half-width of that window.
"""

from __future__ import annotations

import math

import numpy as np
from pipecat.audio.resamplers.base_audio_resampler import BaseAudioResampler

# The middle of the gap between the top of the telephone band (3.4 kHz, which must pass) and
# the Nyquist frequency of 8 kHz audio (4 kHz, above which nothing may remain).
PHONE_CUTOFF_HZ = 3700.0
# Half the filter's span, and so its delay. 3 ms gives a 0.6 kHz transition at STOPBAND_DB: the
# whole 3.4-4 kHz gap, and no more delay than that needs.
HALF_SPAN_S = 0.003
# Aliases and images at least this far down: well below μ-law's own noise (about -38 dB).
STOPBAND_DB = 60.0


def _kaiser_beta(stopband_db: float) -> float:
    """Kaiser's formula for the window parameter that reaches `stopband_db` of attenuation."""
    if stopband_db > 50:
        return 0.1102 * (stopband_db - 8.7)
    return 0.5842 * (stopband_db - 21) ** 0.4 + 0.07886 * (stopband_db - 21)


class LowDelayResampler(BaseAudioResampler):
    """Streaming band-limited resampling of mono s16le between any two rates (fixed at first use).

    Output sample m stands at input time m·in/out; it is the windowed-sinc-weighted sum of the
    input samples within HALF_SPAN_S of that instant, so it is made as soon as those have arrived.
    """

    def __init__(
        self,
        cutoff_hz: float = PHONE_CUTOFF_HZ,
        half_span_s: float = HALF_SPAN_S,
        stopband_db: float = STOPBAND_DB,
    ):
        self._cutoff_hz = cutoff_hz
        self._half_span_s = half_span_s
        self._beta = _kaiser_beta(stopband_db)
        self._rates: tuple[int, int] | None = None

    def _setup(self, in_rate: int, out_rate: int) -> None:
        if self._cutoff_hz >= min(in_rate, out_rate) / 2:
            raise ValueError(
                f"cutoff {self._cutoff_hz} Hz is above the Nyquist frequency of {min(in_rate, out_rate)} Hz"
            )
        self._rates = (in_rate, out_rate)
        g = math.gcd(in_rate, out_rate)
        self._up, self._down = out_rate // g, in_rate // g  # output m is at input sample m·down/up
        half = self._half_span_s * in_rate  # in input samples
        self._taps = math.ceil(half) + 1  # each side of the output instant
        offsets = np.arange(-self._taps + 1, self._taps + 1)  # input index minus floor(instant)
        frac = np.arange(self._up)[:, None] / self._up  # where the instant falls between two inputs
        distance = frac - offsets[None, :]  # instant minus input index, in input samples
        w = 2 * self._cutoff_hz / in_rate
        window = np.i0(self._beta * np.sqrt(np.clip(1 - (distance / half) ** 2, 0, None))) / np.i0(self._beta)
        table = w * np.sinc(w * distance) * np.where(np.abs(distance) <= half, window, 0.0)
        self._table = (table / table.sum(axis=1, keepdims=True)).astype(np.float32)  # unity gain at DC
        self._offsets = offsets
        # Zeros before the stream's first sample, so the first outputs have a full window.
        self._buffer = np.zeros(self._taps, dtype=np.float32)
        self._buffer_start = -self._taps  # input index of _buffer[0]
        self._received = 0
        self._next = 0  # the next output sample to make

    @property
    def delay_s(self) -> float:
        """How long after an input sample arrives the output around it can be made."""
        return self._taps / self._rates[0] if self._rates else self._half_span_s

    def process(self, pcm: bytes, in_rate: int, out_rate: int) -> bytes:
        if in_rate == out_rate:
            return pcm
        if self._rates is None:
            self._setup(in_rate, out_rate)
        elif self._rates != (in_rate, out_rate):
            raise ValueError(f"this resampler converts {self._rates[0]} Hz to {self._rates[1]} Hz only")
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += len(samples)
        # Output m needs input up to floor(m·down/up) + taps.
        last_input = self._received - 1 - self._taps
        if last_input < 0:
            return b""
        last = ((last_input + 1) * self._up - 1) // self._down
        if last < self._next:
            return b""
        m = np.arange(self._next, last + 1, dtype=np.int64)
        base = m * self._down // self._up
        phase = m * self._down % self._up
        index = base[:, None] + self._offsets[None, :] - self._buffer_start
        out = np.einsum("ij,ij->i", self._buffer[index], self._table[phase])
        self._next = last + 1
        keep_from = self._next * self._down // self._up - self._taps + 1  # the next output's first input
        drop = keep_from - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()

    async def resample(self, audio: bytes, in_rate: int, out_rate: int) -> bytes:
        return self.process(audio, in_rate, out_rate)
