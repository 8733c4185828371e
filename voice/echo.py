"""Echo guard: removes the agent's own voice from the caller's audio before the VAD hears it.

A caller on a speakerphone without echo cancellation sends the agent's voice back, later and
quieter. The server knows what it sent and when, so it finds the echo path (a delay and a gain)
by cross-correlating what it hears with what it played, refines it into a short filter (the
phone's speaker and mic colour the echo), subtracts the filtered reference, and silences what is
left where it is no louder than the echo expected (a residual-echo suppressor: reverb and misfit
always leave some). The caller's own voice, louder than that, passes.

The gain is stable over a call but the delay is not: the caller's player buffer drifts, steps
when a late chunk starves it, and restarts at a new phase after each pause, by up to tens of ms.
A fraction of a millisecond off is enough for the subtraction to add energy instead of removing
it, so the suppressor does not trust the filter's timing: it expects echo as loud as the
reference anywhere within ECHO_DELAY_SLACK_S of the delay found, and the filter is re-fitted
(searching near that delay) soon after a pause and whenever it stops cancelling. Cost: ~0.1-0.2
ms per 20 ms frame while the agent talks, ~0 otherwise.
"""

from __future__ import annotations

import numpy as np

from voice.audio import INT16_SCALE, pcm16_to_float

SAMPLE_RATE = 16000  # Silero VAD's rate; the constants below were tuned at it
REFERENCE_RING_S = 1.5  # agent audio kept: the longest delay plus the correlation window, with margin
MIN_ECHO_DELAY_S = 0.02  # the fastest real echo (40 ms) less slack for send/receive stamping offsets
MAX_ECHO_DELAY_S = 0.7  # the slowest real echo (600 ms: round trip plus device buffers) with margin
ESTIMATE_WINDOW_S = 0.5  # several syllables, so the true delay beats look-alikes a pitch period away
REESTIMATE_EVERY_S = 0.5  # a path holding still is re-fitted this often; ~1 ms each: ~0.04 ms/frame
SEARCH_EVERY_S = 0.1  # before (and just after) the path is found: lock on within ~0.1 s of the echo
REFINE_FOR_S = 1.0  # fast search after the first lock, whose filter saw only a little of the echo
LOCAL_SEARCH_S = 0.1  # a fast re-fit of a path found searches this far around its delay: half the cost
RESUMED_REFINE_S = 0.5  # fast search after a pause in the agent's audio: the player, so the delay, restarts
MIN_ECHO_EXPLAINED = 0.25  # share of input a filter must cancel to be trusted: echo 0.8-1, unrelated < 0.12
GAIN_FIT_EXPLAINED = 0.8  # input a fit explains this well is echo, so measures the gain; worse fits can't
MISFIT_SHARE = 0.5  # a filter leaving this much of the echo (fits leave < 0.2) slipped off the delay: search
MISFIT_JUDGED_FROM = 0.25  # judged where the filter predicts this share of the input (elsewhere: none)
ECHO_FILTER_S = 0.008  # filter length: the phone's colouring, fractional delay and nearest reflections
ECHO_FILTER_LEAD_S = 0.002  # taps before the delay found: a muffled echo's correlation peaks late
FIT_SEGMENT_S = 0.064  # spectra averaged over segments many filter lengths long, so edges barely matter
FIT_RIDGE = 1e-6  # power floor (of the mean): tiny, so the weak high band (fricatives) is still fitted
PRE_EMPHASIS = 0.95  # whitens speech's heavy low end before correlating, so the delay's peak is sharp
SILENCE_RMS = 1e-3  # ~ -60 dBFS: below it there is nothing to correlate with or to cancel
SUPPRESS_RATIO = 1.0  # residual no louder than the expected echo is echo the filter missed: mute it
ECHO_DELAY_SLACK_S = 0.04  # expected echo: the loudest within this of the delay found (it wanders)
ECHO_LEVEL_MARGIN = 1.25  # input ≤ this × that echo is echo: real echo stays within 0.5 dB of it
ECHO_TAIL_DECAY_DB_PER_S = 300.0  # expected echo falls no faster than a small room's reverb (60 dB/0.2 s)
BLOCK_S = 0.01  # suppression decides per 10 ms: one to two pitch periods, a stable energy
GAIN_RAMP_S = 0.002  # muting and unmuting ramp over this long, so they do not click
UNLOCKED_MAX_ECHO_GAIN = 0.35  # path not yet found: input 9 dB under the reference may be echo (real ones are 10-30 dB down); a caller is louder
NO_ECHO_AFTER_S = 0.5  # no echo found though one was due: a headset; stop muting before much barge-in is lost
INPUT_RESYNC_S = 0.25  # received stamps jitter less than this; more means a gap, so the count re-anchors
REFERENCE_GAP_TOLERANCE_S = 0.02  # a chunk sent this soon after the last one ends continues it (played())


def _fast_fft_len(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n (pocketfft is fastest on such lengths)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


class _Ring:
    """The newest `size` samples of a stream, addressed by absolute sample position."""

    def __init__(self, size: int):
        self.buf = np.zeros(size, dtype=np.float32)
        self.size = size
        self.end: int | None = None  # position just after the newest sample

    def write(self, start: int, samples: np.ndarray) -> None:
        if self.end is not None and start > self.end:
            self._put(self.end, np.zeros(min(start - self.end, self.size), dtype=np.float32))
        if len(samples) > self.size:
            start += len(samples) - self.size
            samples = samples[-self.size :]
        self._put(start, samples)
        self.end = start + len(samples)

    def _put(self, start: int, samples: np.ndarray) -> None:
        i = start % self.size
        first = min(len(samples), self.size - i)
        self.buf[i : i + first] = samples[:first]
        self.buf[: len(samples) - first] = samples[first:]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop); zeros where nothing (or something too old) is stored."""
        out = np.zeros(stop - start, dtype=np.float32)
        if self.end is None:
            return out
        lo, hi = max(start, self.end - self.size), min(stop, self.end)
        if lo >= hi:
            return out
        i = lo % self.size
        first = min(hi - lo, self.size - i)
        out[lo - start : lo - start + first] = self.buf[i : i + first]
        out[lo - start + first : hi - start] = self.buf[: hi - lo - first]
        return out


class EchoGuard:
    """Removes the agent's own voice from the caller's audio before the VAD hears it.

    Feed it everything sent to the caller (`played`) and every frame received (`filter`), both
    s16le mono at `sample_rate`, stamped with the same monotonic clock. One per session. Audio
    should be reported as it is paced out (about real time): only ~1.5 s of it is kept.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        self.sample_rate = sample_rate
        self._min_lag = round(MIN_ECHO_DELAY_S * sample_rate)
        self._max_lag = round(MAX_ECHO_DELAY_S * sample_rate)
        self._window = round(ESTIMATE_WINDOW_S * sample_rate)
        self._block = max(1, round(BLOCK_S * sample_rate))
        self._ramp = max(1, round(GAIN_RAMP_S * sample_rate))
        self._ramp_kernel = np.full(self._ramp, 1.0 / self._ramp, dtype=np.float32)
        self._slack = round(ECHO_DELAY_SLACK_S * sample_rate)
        self._fft_len = _fast_fft_len(self._window + self._max_lag - self._min_lag)
        self._local = round(LOCAL_SEARCH_S * sample_rate)
        self._local_fft_len = _fast_fft_len(self._window + 2 * self._local)
        self._filter_len = max(1, round(ECHO_FILTER_S * sample_rate))
        self._filter_lead = min(self._filter_len - 1, round(ECHO_FILTER_LEAD_S * sample_rate))
        seg = round(FIT_SEGMENT_S * sample_rate)
        self._hann = np.hanning(seg).astype(np.float32)
        # Half-overlapping, flush with the window's end: the newest echo (just after a pause, the
        # only echo) is always fitted.
        self._segments = np.arange(self._window - seg, -1, -(seg // 2))[::-1, None] + np.arange(seg)
        # The window lets a segment hold only part of the echo of what lies near its edges, so
        # a tap d samples from the delay comes out dimmed by the window's overlap with itself
        # shifted by d; dividing by it undoes that.
        shifts = np.arange(-self._filter_lead, self._filter_len - self._filter_lead)
        hann64 = self._hann.astype(np.float64)
        self._window_overlap = np.array(
            [np.dot(hann64[: seg - abs(d)], hann64[abs(d) :]) for d in shifts]
        ) / np.dot(hann64, hann64)
        # How far back in the reference an echo can reach.
        self._reach = self._max_lag - self._filter_lead + self._filter_len
        self._ref = _Ring(round(REFERENCE_RING_S * sample_rate))
        self._input = _Ring(self._window)
        self._origin_ns: int | None = None
        self._input_end: int | None = None
        self._lag: int | None = None
        self._first_tap = 0
        self._taps: np.ndarray | None = None
        self._gain = 0.0
        self._gain_measured = False  # whether _gain came from a fit good enough to measure it
        self._refine_until: int | None = None
        # Since the last estimate: the energy of input muted as echo that the filter predicted,
        # and what the filter left of it. A filter that leaves much has slipped off the delay.
        self._echo_seen = 0.0
        self._echo_left = 0.0
        self._echo_absent = False
        self._missed = 0
        self._last_estimate: int | None = None
        self._last_full_search: int | None = None
        self.reset()

    @property
    def delay_s(self) -> float | None:
        """The echo delay found (None until found), for logs and metrics."""
        return None if self._lag is None else self._lag / self.sample_rate

    @property
    def gain(self) -> float:
        """The echo's level relative to the agent's audio (0 until found), for logs and metrics."""
        return self._gain

    def reset(self) -> None:
        """Forget the reference, e.g. when the caller's player dropped unplayed agent audio on an
        interruption: subtracting an echo that never comes would add the agent's voice. The echo
        path found is kept, since it is a property of the call (its delay is re-fitted soon after,
        as after any pause)."""
        self._ref = _Ring(self._ref.size)
        self._ref_start: int | None = None
        self._env = 0.0
        self._env_wide = 0.0
        self._last_gain = 1.0

    def played(self, pcm: bytes, at_ns: int) -> None:
        """The agent's audio (s16le mono at sample_rate) was sent to the caller at monotonic
        time `at_ns` (its first sample). Chunks stamped before the previous one ends, or less than
        REFERENCE_GAP_TOLERANCE_S after, are taken to be queued behind it, as the caller's player
        would: a stream resampler between the sender and here hands each chunk's audio over
        unevenly (soxr: 540, 540, 540, 540, 1080 samples for 40 ms chunks, ~25 ms behind at
        worst), and the sender's pacing jitters by a few ms, while the caller has it all."""
        pcm = pcm[: len(pcm) // 2 * 2]
        if not pcm:
            return
        pos = self._position(at_ns)
        end = self._ref.end
        gap = round(REFERENCE_GAP_TOLERANCE_S * self.sample_rate)
        resumed = end is None or pos > end + gap
        start = pos if resumed else end
        self._ref.write(start, pcm16_to_float(pcm))
        if self._ref_start is None:
            self._ref_start = start
        if resumed and self._lag is not None:
            # The caller's player ran dry (or dropped what it held): its buffer, part of the
            # delay, refills from a new point, so the delay found may be tens of ms off now.
            until = start + self._lag + round(RESUMED_REFINE_S * self.sample_rate)
            self._refine_until = max(until, self._refine_until or until)

    def filter(self, pcm: bytes, at_ns: int) -> bytes:
        """Caller audio (s16le mono at sample_rate) received at monotonic time `at_ns` (its last
        sample) → the same audio with the agent's echo removed: silence where it was only echo,
        the caller's own speech kept. Returns `pcm` itself when no agent audio can be echoing."""
        n = len(pcm) // 2
        if n == 0:
            return pcm
        end = self._input_position(at_ns, n)
        start = end - n
        ref_end = self._ref.end
        if (
            ref_end is None
            or self._ref_start is None
            or start - self._reach >= ref_end
            or end - self._min_lag <= self._ref_start
        ):
            self._last_gain, self._env, self._env_wide = 1.0, 0.0, 0.0
            return pcm
        x = pcm16_to_float(pcm[: 2 * n])
        self._input.write(start, x)
        self._maybe_estimate(end)
        if self._taps is not None:
            k, first = len(self._taps), self._first_tap
            y = np.convolve(self._ref.read(start - first - k + 1, end - first), self._taps, mode="valid")
            out = self._suppress(x, x - y, y, start, end)
        elif self._echo_absent:
            self._last_gain = 1.0
            return pcm
        else:
            out = self._mute_possible_echo(x, start, end)
        if out is None:
            return pcm
        return np.clip(np.rint(out * INT16_SCALE), -32768, 32767).astype("<i2").tobytes()

    # Positions: both streams on one sample clock, counted from the first stamp seen.

    def _position(self, at_ns: int) -> int:
        if self._origin_ns is None:
            self._origin_ns = at_ns
        return (at_ns - self._origin_ns) * self.sample_rate // 1_000_000_000

    def _input_position(self, at_ns: int, n: int) -> int:
        # Received stamps jitter but the samples are contiguous, so the count is the truth and
        # the stamp only re-anchors it after a real gap.
        stamped = self._position(at_ns)
        counted = None if self._input_end is None else self._input_end + n
        if counted is None or abs(stamped - counted) > INPUT_RESYNC_S * self.sample_rate:
            counted = stamped
        self._input_end = counted
        return counted

    # Finding the echo path.

    def _maybe_estimate(self, end: int) -> None:
        searching = (
            (self._taps is None and not self._echo_absent)
            or (self._refine_until is not None and end < self._refine_until)
            or self._echo_left > MISFIT_SHARE * self._echo_seen
        )
        interval = round((SEARCH_EVERY_S if searching else REESTIMATE_EVERY_S) * self.sample_rate)
        if self._last_estimate is not None and 0 <= end - self._last_estimate < interval:
            return
        self._last_estimate = end
        self._echo_seen = self._echo_left = 0.0
        x = self._input.read(end - self._window, end)
        # Fast re-fits search near the delay found; one every REESTIMATE_EVERY_S searches the whole
        # range, in case the path moved further.
        since_full = None if self._last_full_search is None else end - self._last_full_search
        if (
            self._lag is None
            or since_full is None
            or not 0 <= since_full < REESTIMATE_EVERY_S * self.sample_rate
        ):
            self._last_full_search = end
            found = self._estimate(x, end, self._min_lag, self._max_lag, self._fft_len)
        else:
            lo, hi = max(self._min_lag, self._lag - self._local), min(self._max_lag, self._lag + self._local)
            found = self._estimate(x, end, lo, hi, self._local_fft_len)
        if found is None:
            if self._taps is None and self._echo_due(end) and float(np.mean(x * x)) < SILENCE_RMS**2:
                # The agent spoke at every delay searched and the line stayed silent: there is no
                # echo path (a headset). Counted too, so the caller's first barge-in is not muted.
                self._missed += interval
                self._echo_absent = self._missed >= NO_ECHO_AFTER_S * self.sample_rate
            return
        lag, first_tap, taps, gain, explained = found
        # Keep the filter that cancels more of this window: the new one is fitted to it, so it
        # loses only when the caller's voice spoilt the fit.
        if explained >= MIN_ECHO_EXPLAINED and (
            self._taps is None or explained > self._fit(x, end, self._first_tap, self._taps)[1]
        ):
            if self._taps is None:
                self._refine_until = end + round(REFINE_FOR_S * self.sample_rate)
            self._lag, self._first_tap, self._taps = lag, first_tap, taps
            if explained >= GAIN_FIT_EXPLAINED or not self._gain_measured:
                self._gain, self._gain_measured = gain, explained >= GAIN_FIT_EXPLAINED
            self._echo_absent, self._missed = False, 0
        elif self._taps is None and self._echo_due(end):
            self._missed += interval
            self._echo_absent = self._missed >= NO_ECHO_AFTER_S * self.sample_rate

    def _echo_due(self, end: int) -> bool:
        """Whether an echo at the shortest and at the longest delay searched would both fall in
        the window ending at `end`, so that finding none is evidence there is none."""
        w, floor = self._window, SILENCE_RMS**2 * self._window
        shortest = self._ref.read(end - w - self._min_lag, end - self._min_lag)
        longest = self._ref.read(end - w - self._max_lag, end - self._max_lag)
        return float(np.dot(shortest, shortest)) >= floor and float(np.dot(longest, longest)) >= floor

    def _estimate(
        self, x: np.ndarray, end: int, lo: int, hi: int, fft_len: int
    ) -> tuple[int, int, np.ndarray, float, float] | None:
        """The echo path for caller audio `x` ending at `end`, its delay searched in [lo, hi] with
        FFTs of `fft_len` (≥ window + hi - lo): (delay, delay of the first filter tap, filter taps,
        broadband gain, share of `x` the filter explains), or None when either side is too quiet
        to tell."""
        w = self._window
        r = self._ref.read(end - w - hi, end - lo)
        floor = SILENCE_RMS**2
        if float(np.dot(x, x)) < floor * w or float(np.dot(r, r)) < floor * len(r):
            return None
        xe = x[1:] - PRE_EMPHASIS * x[:-1]
        re = r[1:] - PRE_EMPHASIS * r[:-1]
        spec = np.fft.rfft(re, fft_len) * np.conj(np.fft.rfft(xe, fft_len))
        corr = np.fft.irfft(spec, fft_len)[: hi - lo + 1]  # corr[m]: reference delayed hi-m
        energy = np.concatenate(([0.0], np.cumsum(re.astype(np.float64) ** 2)))
        ref_energy = energy[len(xe) : len(xe) + hi - lo + 1] - energy[: hi - lo + 1]
        ncc = np.abs(corr) / np.sqrt(np.maximum(ref_energy, floor * w) * float(np.dot(xe, xe)))
        lag = hi - int(np.argmax(ncc))
        aligned = r[hi - lag : hi - lag + w]
        aligned_energy = float(np.dot(aligned, aligned))
        if aligned_energy < floor * w:
            return None
        # Transfer function from averaged cross- and auto-spectra of windowed segments, then
        # back to taps around the delay found.
        xs = np.fft.rfft(x[self._segments] * self._hann, axis=1)
        rs = np.fft.rfft(aligned[self._segments] * self._hann, axis=1)
        power = (rs.real**2 + rs.imag**2).sum(axis=0)
        if not power.any():  # the reference lies only where no segment reaches
            return None
        response = (xs * np.conj(rs)).sum(axis=0) / (power + FIT_RIDGE * power.mean())
        impulse = np.fft.irfft(response, self._hann.size)
        lead = self._filter_lead
        taps = np.concatenate((impulse[-lead:] if lead else impulse[:0], impulse[: self._filter_len - lead]))
        taps = (taps / self._window_overlap).astype(np.float32)
        first_tap = lag - lead
        echo_energy, explained = self._fit(x, end, first_tap, taps)
        if explained >= GAIN_FIT_EXPLAINED:
            # Input the filter explains this well is echo: its own level is the echo's, which a
            # filter slightly off the (drifting) delay under-reads.
            echo_energy = float(np.dot(x, x))
        return lag, first_tap, taps, float(np.sqrt(echo_energy / aligned_energy)), explained

    def _fit(self, x: np.ndarray, end: int, first_tap: int, taps: np.ndarray) -> tuple[float, float]:
        """(energy of the echo the filter predicts, share of the energy of `x` it cancels) for
        caller audio `x` ending at `end`."""
        k = len(taps)
        y = np.convolve(self._ref.read(end - len(x) - first_tap - k + 1, end - first_tap), taps, mode="valid")
        left = x - y
        return float(np.dot(y, y)), 1.0 - float(np.dot(left, left)) / max(float(np.dot(x, x)), 1e-12)

    # Suppression.

    def _blocks(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        count = -(-n // self._block)
        starts = np.arange(count) * n // count
        return starts, np.diff(np.append(starts, n))

    def _suppress(
        self, x: np.ndarray, e: np.ndarray, y: np.ndarray, start: int, end: int
    ) -> np.ndarray | None:
        starts, sizes = self._blocks(len(x))
        ex = np.add.reduceat(x * x, starts) / sizes
        ee = np.add.reduceat(e * e, starts) / sizes
        ey = np.add.reduceat(y * y, starts) / sizes
        near = self._near_echo(start, end, starts, sizes)
        decay = 10 ** (-ECHO_TAIL_DECAY_DB_PER_S * sizes / self.sample_rate / 10)
        gains = np.ones(len(sizes), dtype=np.float32)
        use_residual = np.zeros(len(sizes), dtype=bool)
        env, wide = self._env, self._env_wide
        for i in range(len(sizes)):
            env = max(float(ey[i]), env * float(decay[i]))
            wide = max(float(ey[i]), float(near[i]), wide * float(decay[i]))
            # What the filter left is no louder than the echo it predicted: echo it missed. Or the
            # input is no louder than any echo the reference could send at a delay near the one
            # found: echo the filter cannot cancel, its delay having moved.
            if ee[i] <= SUPPRESS_RATIO * env or ex[i] <= ECHO_LEVEL_MARGIN * wide:
                gains[i] = 0.0
            # A subtraction that adds energy means the reference is not echoing here (the
            # caller's player dropped it, or the delay slipped): keep the audio as it came.
            use_residual[i] = ee[i] < ex[i]
        self._env, self._env_wide = env, wide
        echo = (gains == 0) & (ex > SILENCE_RMS**2) & (ey >= MISFIT_JUDGED_FROM * ex)
        self._echo_seen += float(ex[echo].sum())
        self._echo_left += float(ee[echo].sum())
        if self._last_gain == 1.0 and gains.all() and not use_residual.any():
            return None
        signal = np.where(np.repeat(use_residual, sizes), e, x)
        return signal * self._ramped(gains, sizes)

    def _near_echo(self, start: int, end: int, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Per block of the input [start, end), the energy of the loudest echo the reference
        could send there at a delay within ECHO_DELAY_SLACK_S of the one found."""
        lo = start - self._lag - self._slack
        r = self._ref.read(lo, end - self._lag + self._slack).astype(np.float64)
        cum = np.concatenate(([0.0], np.cumsum(r * r)))
        span = 2 * self._slack + 1
        loudest = [
            (cum[s + z : s + z + span] - cum[s : s + span]).max() / z
            for s, z in zip(starts, sizes, strict=True)
        ]
        return self._gain**2 * np.array(loudest)

    def _mute_possible_echo(self, x: np.ndarray, start: int, end: int) -> np.ndarray | None:
        # The path is not known yet: mute what is no louder than the loudest echo could be.
        r = self._ref.read(start - self._reach, end - self._min_lag)
        whole = len(r) // self._block * self._block
        peak = float((r[:whole].reshape(-1, self._block) ** 2).mean(axis=1).max()) if whole else 0.0
        starts, sizes = self._blocks(len(x))
        ex = np.add.reduceat(x * x, starts) / sizes
        gains = (ex > UNLOCKED_MAX_ECHO_GAIN**2 * peak).astype(np.float32)
        if self._last_gain == 1.0 and gains.all():
            return None
        return x * self._ramped(gains, sizes)

    def _ramped(self, gains: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        per_sample = np.concatenate(
            (np.full(self._ramp - 1, self._last_gain, np.float32), np.repeat(gains, sizes))
        )
        self._last_gain = float(gains[-1])
        return np.convolve(per_sample, self._ramp_kernel, mode="valid")
