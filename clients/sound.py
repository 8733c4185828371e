"""This computer's sound card as a phone's mouthpiece and earpiece, for `parley phone --mic`.

`Microphone` turns the default input device into 20 ms frames of 8 kHz s16le; `Speaker` plays
8 kHz s16le on the default output device. Both run PortAudio (through `sounddevice`) in a thread
of their own, at the device's own rate, resampled with soxr, so any sound card works.

PortAudio is a system library (Debian: `libportaudio2`); `sounddevice` is imported only here, when
a microphone call starts, so everything else in Parley runs without it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

import numpy as np
import soxr

RATE = 8000  # what a phone line carries
FRAME_SAMPLES = RATE // 50  # 20 ms, the frame Twilio sends
FRAME_BYTES = FRAME_SAMPLES * 2
# The most microphone audio waiting to go down the line: the caller sends 20 ms every 20 ms, so a
# sound card that keeps time leaves this nearly empty, and one that runs fast (or a device that does
# not keep time at all) is held back here rather than piling up delay.
MIC_BACKLOG_FRAMES = 5
# The most agent audio waiting for the sound card. The earpiece hands over 20 ms every 20 ms, so
# this only fills if the device stalls; beyond half a second, audio is dropped rather than delayed.
SPEAKER_BACKLOG_FRAMES = 25
# Ask PortAudio for its low-latency buffer sizes: this is a conversation, not music playback.
DEVICE_LATENCY = "low"
# How often a blocked thread looks up to see whether the call has ended.
POLL_S = 0.1
# How long stopping waits for a device thread: a read or write returns within one 20 ms block,
# so a thread still busy after this is stuck in the driver, and its stream is left to the OS.
STOP_WAIT_S = 2.0


class SoundUnavailable(RuntimeError):
    """No way to use the sound card here; the message says what to install or choose."""


def _sounddevice():
    try:
        import sounddevice
    except ImportError as exc:
        raise SoundUnavailable(
            "the microphone needs the sounddevice package: pip install sounddevice (`make setup` installs it)"
        ) from exc
    except OSError as exc:  # sounddevice is there, the PortAudio library it loads is not
        raise SoundUnavailable(
            "the microphone needs the PortAudio library: apt-get install libportaudio2 "
            f"(Debian/Ubuntu) or brew install portaudio (macOS) ({exc})"
        ) from exc
    return sounddevice


def _device_rate(sd, kind: str) -> int:
    try:
        info = sd.query_devices(kind=kind)
    except sd.PortAudioError as exc:
        raise SoundUnavailable(
            f"no sound {kind} device: {exc} (plug one in, or check `python -m sounddevice`)"
        ) from exc
    return int(info["default_samplerate"])


class _DeviceThread:
    """A PortAudio stream served by a thread of its own. A device that fails mid-call (unplugged)
    leaves its error in `error` rather than dying silently."""

    _stream = None
    _thread: threading.Thread

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self.error: Exception | None = None
        self.on_error: Callable[[], None] | None = None  # called from the device's thread

    def start(self) -> None:
        try:
            self._stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudio's errors, whatever the host API
            raise SoundUnavailable(f"cannot start the sound device: {exc}") from exc
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_WAIT_S)
        if self._thread.is_alive():
            return  # never close a stream another thread is still inside
        with contextlib.suppress(Exception):  # the device may already be gone (unplugged)
            self._stream.stop()
            self._stream.close()

    def _serve(self, work) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - reported to the call through `error`
            self.error = exc
            if self.on_error is not None:
                self.on_error()


class Microphone(_DeviceThread):
    """The default input device, read in a thread; `frame()` gives the next 20 ms, or None."""

    def __init__(self) -> None:
        super().__init__()
        sd = _sounddevice()
        self.device_rate = _device_rate(sd, "input")
        self._block = self.device_rate // 50  # read 20 ms at a time
        try:
            self._stream = sd.RawInputStream(
                samplerate=self.device_rate,
                channels=1,
                dtype="int16",
                blocksize=self._block,
                latency=DEVICE_LATENCY,
            )
        except sd.PortAudioError as exc:
            raise SoundUnavailable(f"cannot open the microphone: {exc}") from exc
        self._frames: queue.Queue[bytes] = queue.Queue(maxsize=MIC_BACKLOG_FRAMES)
        self._thread = threading.Thread(
            target=self._serve, args=(self._run,), name="parley-microphone", daemon=True
        )
        self.overflows = 0  # times the sound card had to drop input because we read too late

    def frame(self) -> bytes | None:
        """The next 20 ms of the caller (8 kHz s16le), or None when none is ready yet."""
        try:
            return self._frames.get_nowait()
        except queue.Empty:
            return None

    def _run(self) -> None:
        resampler = soxr.ResampleStream(self.device_rate, RATE, 1, dtype="int16")
        pending = bytearray()
        while not self._stopping.is_set():
            data, overflowed = self._stream.read(self._block)
            self.overflows += bool(overflowed)
            pending += resampler.resample_chunk(np.frombuffer(data, dtype="<i2")).tobytes()
            while len(pending) >= FRAME_BYTES:
                frame = bytes(pending[:FRAME_BYTES])
                del pending[:FRAME_BYTES]
                while not self._stopping.is_set():
                    try:
                        self._frames.put(frame, timeout=POLL_S)
                        break
                    except queue.Full:
                        continue


class Speaker(_DeviceThread):
    """The default output device, written in a thread; `play()` hands it 8 kHz s16le."""

    def __init__(self) -> None:
        super().__init__()
        sd = _sounddevice()
        self.device_rate = _device_rate(sd, "output")
        try:
            self._stream = sd.RawOutputStream(
                samplerate=self.device_rate, channels=1, dtype="int16", latency=DEVICE_LATENCY
            )
        except sd.PortAudioError as exc:
            raise SoundUnavailable(f"cannot open the speaker: {exc}") from exc
        self._chunks: queue.Queue[bytes] = queue.Queue(maxsize=SPEAKER_BACKLOG_FRAMES)
        self._thread = threading.Thread(
            target=self._serve, args=(self._run,), name="parley-speaker", daemon=True
        )
        self.dropped_ms = 0.0  # agent audio the device could not take in time

    def play(self, pcm8k: bytes) -> None:
        """Queue audio for the device; called every 20 ms, with silence when the agent is quiet."""
        try:
            self._chunks.put_nowait(pcm8k)
        except queue.Full:
            self.dropped_ms += 1000 * len(pcm8k) / 2 / RATE

    def _run(self) -> None:
        resampler = soxr.ResampleStream(RATE, self.device_rate, 1, dtype="int16")
        while not self._stopping.is_set():
            try:
                chunk = self._chunks.get(timeout=POLL_S)
            except queue.Empty:
                continue
            self._stream.write(resampler.resample_chunk(np.frombuffer(chunk, dtype="<i2")).tobytes())
