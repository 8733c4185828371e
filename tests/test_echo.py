"""The echo guard: the agent's own voice, coming back from a speakerphone, is silenced before the
VAD hears it, while the caller's voice (even over the echo) gets through.

Everything runs on a simulated clock: the agent's speech is "sent" in 40 ms chunks, and the
caller's microphone (the echo, delayed and scaled, plus the caller) is "received" in 20 ms
frames, each stamped with the time its last sample was captured.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

import numpy as np
import pytest

from voice.audio import resample_pcm16
from voice.echo import EchoGuard

RATE = 16000
NS_PER_S = 1_000_000_000
# A 32 ms window quieter than this is not speech to the session's VAD: its volume gate
# (VAD_MIN_VOLUME 0.6 on pipecat's -110..-10 LUFS scale) sits at about -50 LUFS.
SPEECH_LEVEL_DBFS = -50.0
VAD_WINDOW = 512  # Silero's window at 16 kHz
AGENT_STARTS_S = 0.5
AGENT_TEXT = (
    "Hello, thanks for calling the bike shop. We are open from nine to five on weekdays, "
    "and on Saturday from ten until four. How can I help you today?"
)
CALLER_TEXT = "Hi, I would like to book a repair for my bike on Saturday morning please."
CALLER_PEAK_DBFS = -12.0  # a caller at a normal level
CALLER_STARTS_S = 2.0  # barging in while the agent is mid-sentence


@functools.cache
def speech(text: str, voice: str) -> np.ndarray:
    """`text` spoken by espeak-ng in `voice`, as float samples at RATE (or, without espeak, a
    speech-like stand-in: voiced syllables with a gliding pitch)."""
    if shutil.which("espeak-ng") is None:
        return _speech_like(len(text) * 0.06, pitch=120.0 if "+f" not in voice else 210.0)
    wav_bytes = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "160", "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
    return np.frombuffer(resample_pcm16(pcm, rate, RATE), dtype="<i2").astype(np.float32) / 32768


def _speech_like(seconds: float, pitch: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = pitch * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (0.3 * voiced * syllables).astype(np.float32)


def agent() -> np.ndarray:
    return speech(AGENT_TEXT, "en-us")


def caller() -> np.ndarray:
    voice = speech(CALLER_TEXT, "en-us+f3")
    return voice * (10 ** (CALLER_PEAK_DBFS / 20) / np.abs(voice).max())


def muffle(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone speaker heard across a room: low-passed at ~2.5 kHz, two early reflections and a
    decaying 30 ms diffuse tail, scaled back to the signal's RMS."""
    n = int(0.03 * RATE)
    t = np.arange(n) / RATE
    response = 0.1 * rng.standard_normal(n) * np.exp(-t / 0.008)
    response[0] = 1.0
    response[int(0.0025 * RATE)] += 0.4
    response[int(0.006 * RATE)] -= 0.25
    pole = np.exp(-2 * np.pi * 2500 / RATE)
    for i in range(1, n):  # one-pole low-pass, applied to the short response rather than the signal
        response[i] = (1 - pole) * response[i] + pole * response[i - 1]
    out = np.convolve(signal, response)[: len(signal)]
    return (out * np.sqrt(np.mean(signal**2) / np.mean(out**2))).astype(np.float32)


def scenario(
    delay_s: float,
    gain: float,
    *,
    muffled: bool = False,
    noise_dbfs: float | None = None,
    caller_starts_s: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(what the agent sent, what the caller's microphone picked up, the caller's voice alone),
    on one timeline of RATE samples."""
    rng = np.random.default_rng(seed)
    sent_audio = agent()
    total = int((AGENT_STARTS_S + delay_s + 1.0) * RATE) + len(sent_audio)
    sent = np.zeros(total, np.float32)
    sent[int(AGENT_STARTS_S * RATE) :][: len(sent_audio)] = sent_audio
    echo = np.zeros(total, np.float32)
    d = int(round(delay_s * RATE))
    echo[d:] = gain * sent[: total - d]
    if muffled:
        echo = muffle(echo, rng)
    mic = echo.copy()
    if noise_dbfs is not None:
        mic += (10 ** (noise_dbfs / 20) * rng.standard_normal(total)).astype(np.float32)
    alone = np.zeros(total, np.float32)
    if caller_starts_s is not None:
        voice = caller()
        alone[int(caller_starts_s * RATE) :][: len(voice)] = voice[: total - int(caller_starts_s * RATE)]
        mic += alone
    return sent, mic, alone


def to_pcm(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x * 32768), -32768, 32767).astype("<i2").tobytes()


def from_pcm(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768


def through_guard(
    sent: np.ndarray,
    mic: np.ndarray,
    *,
    frame: int = 320,
    chunk: int = 640,
    jitter_ns: tuple[int, int] = (0, 0),
    guard: EchoGuard | None = None,
) -> tuple[np.ndarray, EchoGuard]:
    """Runs the call through a guard: each agent chunk is sent when its first sample is due (only
    while the agent talks), each microphone frame is filtered when its last sample is in."""
    guard = guard or EchoGuard(RATE)
    rng = np.random.default_rng(1)
    talking = np.flatnonzero(sent)
    chunks = range(talking[0], talking[-1] + 1, chunk) if len(talking) else range(0)
    pending = iter(chunks)
    next_chunk = next(pending, None)
    out = []
    for start in range(0, len(mic) - frame + 1, frame):
        end = start + frame
        while next_chunk is not None and next_chunk <= end:
            stamp = next_chunk * NS_PER_S // RATE + int(rng.integers(0, jitter_ns[0] + 1))
            guard.played(to_pcm(sent[next_chunk : next_chunk + chunk]), stamp)
            next_chunk = next(pending, None)
        stamp = end * NS_PER_S // RATE + int(rng.integers(0, jitter_ns[1] + 1))
        out.append(from_pcm(guard.filter(to_pcm(mic[start:end]), stamp)))
    return np.concatenate(out), guard


def window_dbfs(x: np.ndarray) -> np.ndarray:
    """RMS level of each VAD window, in dBFS."""
    n = len(x) // VAD_WINDOW
    power = (x[: n * VAD_WINDOW].reshape(n, VAD_WINDOW).astype(np.float64) ** 2).mean(axis=1)
    return 10 * np.log10(power + 1e-20)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def assert_echo_silenced(sent: np.ndarray, mic: np.ndarray, out: np.ndarray) -> None:
    mic = mic[: len(out)]
    assert (window_dbfs(mic) > SPEECH_LEVEL_DBFS).sum() > 100, "the echo itself should sound like speech"
    assert rms(out) < 0.05 * rms(mic)
    loudest = window_dbfs(out).max()
    assert loudest < SPEECH_LEVEL_DBFS, f"a window of echo got through at {loudest:.1f} dBFS"


def test_a_plain_echo_is_silenced_and_its_path_found():
    sent, mic, _ = scenario(delay_s=0.25, gain=0.3)
    out, guard = through_guard(sent, mic)
    assert_echo_silenced(sent, mic, out)
    assert guard.delay_s == pytest.approx(0.25, abs=0.001)
    assert guard.gain == pytest.approx(0.3, abs=0.05)


def test_silero_hears_the_echo_but_not_what_the_guard_lets_through():
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    from voice.turntaking.vad import VAD_CONFIDENCE

    vad = SileroVADAnalyzer(sample_rate=RATE)
    vad.set_sample_rate(RATE)

    def confidences(x: np.ndarray) -> np.ndarray:
        vad._model.reset_states()
        pcm = to_pcm(x)
        step = 2 * VAD_WINDOW
        return np.array(
            [
                np.ravel(vad.voice_confidence(pcm[i : i + step]))[0]
                for i in range(0, len(pcm) - step + 1, step)
            ]
        )

    sent, mic, _ = scenario(delay_s=0.25, gain=0.3)
    out, _ = through_guard(sent, mic)
    assert (confidences(mic) >= VAD_CONFIDENCE).sum() > 50
    assert confidences(out).max() < VAD_CONFIDENCE


def test_a_muffled_reverberant_echo_in_noise_stays_below_speech_level():
    # Criterion: no VAD window of output above the VAD's volume gate (the -60 dBFS noise itself
    # passes where the agent is silent, and is far below it).
    sent, mic, _ = scenario(delay_s=0.25, gain=0.3, muffled=True, noise_dbfs=-60)
    out, _ = through_guard(sent, mic)
    assert_echo_silenced(sent, mic, out)


@pytest.mark.parametrize("muffled", [False, True], ids=["plain", "muffled"])
def test_a_caller_talking_over_the_echo_comes_through(muffled: bool):
    sent, mic, alone = scenario(
        delay_s=0.25, gain=0.3, muffled=muffled, noise_dbfs=-60, caller_starts_s=CALLER_STARTS_S
    )
    out, _ = through_guard(sent, mic)
    alone, mic = alone[: len(out)], mic[: len(out)]
    talking = alone != 0
    kept = np.sum(out[talking] ** 2) / np.sum(alone[talking] ** 2)
    assert kept >= 0.5, f"only {kept:.0%} of the caller's speech energy got through"
    # And what got through is the caller, not the echo.
    similarity = np.dot(out[talking], alone[talking]) / np.sqrt(
        np.sum(out[talking] ** 2) * np.sum(alone[talking] ** 2)
    )
    assert similarity > 0.8
    # Before the caller speaks, the echo alone is still silenced.
    before = out[: int(CALLER_STARTS_S * RATE)]
    assert window_dbfs(before).max() < SPEECH_LEVEL_DBFS


@pytest.mark.parametrize(("delay_s", "gain"), [(0.04, 0.3), (0.06, 0.3), (0.5, 0.3), (0.6, 0.1), (0.1, 0.5)])
def test_delays_across_the_range_are_found_and_silenced(delay_s: float, gain: float):
    sent, mic, _ = scenario(delay_s=delay_s, gain=gain)
    out, guard = through_guard(sent, mic)
    assert_echo_silenced(sent, mic, out)
    assert guard.delay_s == pytest.approx(delay_s, abs=0.001)


def test_odd_frame_and_chunk_sizes_and_jittery_stamps_are_handled():
    sent, mic, _ = scenario(delay_s=0.3, gain=0.3, noise_dbfs=-60)
    # Received frames stamped up to 40 ms late (network jitter), sent chunks up to 3 ms.
    out, _ = through_guard(sent, mic, frame=341, chunk=1000, jitter_ns=(3_000_000, 40_000_000))
    assert_echo_silenced(sent, mic, out)


def test_without_agent_audio_the_callers_audio_is_untouched():
    guard = EchoGuard(RATE)
    pcm = to_pcm(caller())
    frame = 2 * 341
    for i, offset in enumerate(range(0, len(pcm) - frame + 1, frame)):
        piece = pcm[offset : offset + frame]
        assert guard.filter(piece, (i + 1) * 341 * NS_PER_S // RATE) == piece
    assert guard.delay_s is None


def test_once_the_echo_has_died_away_the_callers_audio_is_untouched_again():
    sent, mic, _ = scenario(delay_s=0.25, gain=0.3)
    guard = EchoGuard(RATE)
    through_guard(sent, mic, guard=guard)
    later_s = len(mic) / RATE + 1.0
    voice = to_pcm(caller())
    for i, offset in enumerate(range(0, len(voice) - 640 + 1, 640)):
        piece = voice[offset : offset + 640]
        assert guard.filter(piece, int((later_s + (i + 1) * 0.02) * NS_PER_S)) == piece


def test_after_reset_the_reference_is_forgotten_but_the_path_kept():
    sent, mic, _ = scenario(delay_s=0.25, gain=0.3)
    half = len(mic) // 2
    out, guard = through_guard(sent[:half], mic[:half])
    guard.reset()  # say the caller's player dropped the rest of the agent's speech
    voice = to_pcm(caller())
    start_s = half / RATE
    for i, offset in enumerate(range(0, len(voice) - 640 + 1, 640)):
        piece = voice[offset : offset + 640]
        assert guard.filter(piece, int((start_s + (i + 1) * 0.02) * NS_PER_S)) == piece
    assert guard.delay_s == pytest.approx(0.25, abs=0.001)


def test_a_caller_without_echo_is_not_muted_for_long():
    # A headset: the agent talks, no echo comes back, the caller barges in. Until the guard is
    # sure there is no echo it mutes what could be one, but only briefly.
    sent, mic, alone = scenario(delay_s=0.25, gain=0.0, noise_dbfs=-65, caller_starts_s=1.5)
    out, guard = through_guard(sent, mic)
    alone = alone[: len(out)]
    talking = alone != 0
    assert np.sum(out[talking] ** 2) / np.sum(alone[talking] ** 2) >= 0.8
    assert guard.delay_s is None


def test_a_quiet_headset_callers_first_barge_in_is_not_muted():
    # A headset, and a silent line while the agent talks: that silence is evidence enough that
    # there is no echo, so the caller's first words over the agent (here well below the agent's
    # level) come through from their start.
    sent, mic, alone = scenario(delay_s=0.25, gain=0.0, caller_starts_s=2.0)
    mic *= 0.3
    alone *= 0.3
    out, _guard = through_guard(sent, mic)
    alone = alone[: len(out)]
    first = np.flatnonzero(alone)[: RATE // 2]  # the first half second of their speech
    assert np.sum(out[first] ** 2) / np.sum(alone[first] ** 2) >= 0.95


# A live call, as the server and the simulated caller (clients/caller.py) see it: the agent's
# voice is made at the TTS's rate and paced out by pipecat in ~40 ms chunks, a few ms late each and
# now and then 10-20 ms late (the next one then follows close behind). The server resamples them as
# a stream for the guard (which holds back part of each chunk until the next); the caller resamples
# each chunk on its own (a little longer: its loudspeaker drifts behind) into a loudspeaker buffer
# that its 20 ms microphone ticks drain, zero-padded when they catch up with it. So the echo's
# delay, as the guard sees it, wanders by tens of ms: it creeps with the drift, steps when a late
# chunk starves the loudspeaker or leaves a gap in the reference, and restarts at a new tick phase
# after a pause.
TTS_RATE = 22050
CHUNK = int(TTS_RATE / 100) * 4  # pipecat's output chunk: four whole 10 ms (39.9 ms), paced at that
TICK = 320  # the caller's 20 ms microphone frame
LIVE_DELAY_S = 0.2  # the caller's echo line
PAUSE_AT_S, PAUSE_S = 2.3, 0.4  # the TTS not ready between sentences (or the agent held)


def live_call(
    *,
    jump_at_s: float | None = None,
    jump_s: float = 0.0,
    caller_starts_s: float | None = None,
    late_s: tuple[float, float] = (0.01, 0.02),
    late_share: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs such a call through a guard, the echo path's delay jumping by `jump_s` (the caller's
    audio device stalling or skipping) at `jump_at_s`: (microphone, guard output, caller alone)."""
    import soxr

    from voice.audio import StreamResampler

    rng = np.random.default_rng(seed)
    voice = np.frombuffer(resample_pcm16(to_pcm(agent()), RATE, TTS_RATE), dtype="<i2")
    chunks = [voice[i : i + CHUNK] for i in range(0, len(voice), CHUNK)]
    sends: list[float] = []
    for k in range(len(chunks)):
        due = AGENT_STARTS_S + k * CHUNK / TTS_RATE
        due += PAUSE_S if due >= PAUSE_AT_S else 0.0
        late = float(rng.uniform(*late_s)) if rng.random() < late_share else float(rng.uniform(0, 0.005))
        sends.append(max(due + late, sends[-1] if sends else 0.0))
    total_s = sends[-1] + LIVE_DELAY_S + 1.0
    alone = np.zeros(int(total_s * RATE) + TICK, np.float32)
    if caller_starts_s is not None:
        said = caller()
        at = int(caller_starts_s * RATE)
        alone[at : at + len(said)] = said[: len(alone) - at]

    guard = EchoGuard(RATE)
    server_resampler = StreamResampler(TTS_RATE, RATE)
    speaker = np.zeros(0, np.float32)
    line = np.zeros(round(LIVE_DELAY_S * RATE), np.float32)
    phase = float(rng.uniform(0, TICK / RATE))
    mic, out = [], []
    next_send, tick = 0, 0
    while (tick_s := phase + tick * TICK / RATE) < total_s:
        while next_send < len(chunks) and sends[next_send] <= tick_s:
            pcm = chunks[next_send].tobytes()
            guard.played(server_resampler.process(pcm), int(sends[next_send] * NS_PER_S))
            heard = soxr.resample(chunks[next_send], TTS_RATE, RATE).astype(np.float32) / 32768
            speaker = np.concatenate([speaker, heard])
            next_send += 1
        if jump_at_s is not None and tick_s >= jump_at_s:
            shift = round(abs(jump_s) * RATE)
            line = np.concatenate([np.zeros(shift, np.float32), line]) if jump_s > 0 else line[shift:]
            jump_at_s = None
        played = np.zeros(TICK, np.float32)
        played[: min(TICK, len(speaker))] = speaker[:TICK]
        speaker = speaker[TICK:]
        line = np.concatenate([line, played])
        start = tick * TICK
        frame = np.clip(0.3 * line[:TICK] + alone[start : start + TICK], -1, 1)
        line = line[TICK:]
        mic.append(frame)
        received_s = tick_s + float(rng.uniform(0, 0.002))  # the event loops' jitter
        out.append(from_pcm(guard.filter(to_pcm(frame), int(received_s * NS_PER_S))))
        tick += 1
    return np.concatenate(mic), np.concatenate(out), alone[: tick * TICK]


@pytest.mark.parametrize("jump_s", [0.0, 0.03, -0.03], ids=["wandering", "jumping-later", "jumping-earlier"])
def test_a_live_echo_whose_delay_wanders_and_jumps_is_silenced(jump_s: float):
    # A filter fitted a moment ago, a fraction of a ms off, adds as much echo as it removes: the
    # guard must still mute it, and re-fit soon after the delay jumps (here by a further 30 ms).
    mic, out, _ = live_call(jump_at_s=1.8, jump_s=jump_s)
    assert (window_dbfs(mic) > SPEECH_LEVEL_DBFS).sum() > 100, "the echo itself should sound like speech"
    loud = np.flatnonzero(window_dbfs(out) > SPEECH_LEVEL_DBFS)
    assert not len(loud), (
        f"{len(loud)} windows of echo got through, the first at {loud[0] * VAD_WINDOW / RATE:.2f} s, "
        f"up to {window_dbfs(out).max():.1f} dBFS"
    )


def test_a_caller_talking_over_a_live_echo_comes_through():
    # The caller as loud as the echo: muting by the echo's level, wherever its delay may have
    # moved, must still let most of the caller through, and little of the echo under it.
    mic, out, alone = live_call(jump_at_s=1.8, jump_s=0.03, caller_starts_s=CALLER_STARTS_S)
    talking = alone != 0
    kept = np.sum(out[talking] ** 2) / np.sum(alone[talking] ** 2)
    assert kept >= 0.5, f"only {kept:.0%} of the caller's speech energy got through"
    echo = (mic - alone)[talking]
    echo_through = (np.dot(out[talking], echo) / np.sum(echo**2)) ** 2
    assert echo_through < 0.15, f"{echo_through:.0%} of the echo under the caller got through"
    assert window_dbfs(out[: int(CALLER_STARTS_S * RATE)]).max() < SPEECH_LEVEL_DBFS
