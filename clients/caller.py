"""A simulated caller for scripted conversations: a microphone that never stops (speech, noise or
silence, in real time, 20 ms frames), a loudspeaker that plays the agent as it arrives, and
optionally a speakerphone's echo of that loudspeaker back into the microphone.

Speaks only the documented protocol (docs/protocol.md), including `playback` reports. Used by the
interruption tests and by `benchmarks/interruptions.py`; every time it records is on its own
monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import websockets

from clients.talk import SPEECH_LEVEL

FRAME_MS = 20  # a browser capture's frame: small frames keep the server's VAD current
MIC_RATE = 16000
# How often the loudspeaker tells the server how far it has played (the web page does the same).
PLAYBACK_REPORT_MS = 250


@dataclass
class Echo:
    """A speakerphone without echo cancellation: the loudspeaker comes back `delay_ms` later at `gain`."""

    delay_ms: float = 200.0  # a phone's acoustic path plus device buffers
    gain: float = 0.3  # about -10 dB: a loud speakerphone on a table


@dataclass
class Heard:
    """One event or audio chunk as the caller got it."""

    at: float  # caller's clock, s
    event: dict | None = None  # a JSON event, or None for agent audio
    audio_bytes: int = 0


@dataclass
class CallLog:
    received: list[Heard] = field(default_factory=list)
    speech_onsets: list[float] = field(default_factory=list)  # when each clip's first loud sample went out
    speech_ends: list[float] = field(default_factory=list)  # when each clip's last loud sample went out

    def events(self, kind: str, since: float = 0.0) -> list[dict]:
        return [h.event for h in self.received if h.event and h.event["type"] == kind and h.at >= since]

    def audio_between(self, start: float, end: float = float("inf")) -> int:
        return sum(h.audio_bytes for h in self.received if h.event is None and start <= h.at < end)

    def last_audio_before(self, end: float) -> float | None:
        times = [h.at for h in self.received if h.event is None and h.at < end]
        return times[-1] if times else None

    def first_audio_after(self, start: float) -> float | None:
        return next((h.at for h in self.received if h.event is None and h.at >= start), None)


class Caller:
    """One call. `async with Caller(url) as caller:` then `say`, `wait_for`, `pause`."""

    def __init__(self, url: str, echo: Echo | None = None):
        self._url = url
        self._echo = echo
        self.log = CallLog()
        self.output_rate = 0
        self._mic: deque[np.ndarray] = deque()  # queued clips, each played out in full
        self._clip_done: list[asyncio.Event] = []
        self._speaker = np.zeros(0, dtype=np.float32)  # agent audio waiting to play (at MIC_RATE)
        self._echo_line = np.zeros(0, dtype=np.float32)  # what the mic hears of the speaker, delayed
        self._turn = -1
        self._played_ms = 0.0
        self._reported_at = 0.0
        self._new_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Caller:
        self._ws = await websockets.connect(self._url, max_size=None)
        await self._ws.send(json.dumps({"type": "session.start", "sample_rate": MIC_RATE}))
        ready = json.loads(await self._ws.recv())
        if ready.get("type") != "session.ready":
            raise RuntimeError(f"server refused the session: {ready}")
        self.output_rate = ready["output_sample_rate"]
        if self._echo is not None:
            self._echo_line = np.zeros(int(self._echo.delay_ms * MIC_RATE / 1000), dtype=np.float32)
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._microphone())]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._ws.close()

    # --- the script

    async def say(self, pcm16: bytes, wait: bool = True) -> None:
        """Speak a clip (s16le at 16 kHz) into the microphone, after whatever is queued."""
        done = asyncio.Event()
        self._mic.append(np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0)
        self._clip_done.append(done)
        if wait:
            await done.wait()

    async def type(self, text: str) -> None:
        await self._ws.send(json.dumps({"type": "input_text", "text": text}))

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def ask_and_listen(self, question: str, listen_s: float, timeout_s: float = 90.0) -> float:
        """Type `question`; return (the time it was asked) once its answer has played `listen_s`."""
        asked = time.monotonic()
        await self.type(question)
        started = await self.wait_for_agent_audio(asked, timeout_s=timeout_s)
        await self.pause(listen_s - (time.monotonic() - started))
        return asked

    async def wait_for(self, kind: str, since: float = 0.0, timeout_s: float = 60.0, **match) -> dict:
        """The first event of `kind` received at or after `since` whose fields match."""
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.log.events(kind, since):
                if all(event.get(k) == v for k, v in match.items()):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} {match or ''} within {timeout_s} s; got {self._summary()}")
            self._new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), remaining)

    async def wait_for_agent_audio(self, since: float, timeout_s: float = 60.0) -> float:
        """When the first agent audio at or after `since` arrived."""
        deadline = time.monotonic() + timeout_s
        while (at := self.log.first_audio_after(since)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agent audio within {timeout_s} s; got {self._summary()}")
            await asyncio.sleep(FRAME_MS / 1000)
        return at

    def _summary(self) -> str:
        return ", ".join(h.event["type"] for h in self.log.received if h.event)[-600:]

    # --- the devices

    async def _receive(self) -> None:
        async for message in self._ws:
            now = time.monotonic()
            if isinstance(message, bytes):
                self.log.received.append(Heard(now, audio_bytes=len(message)))
                self._play(message)
                continue
            event = json.loads(message)
            self.log.received.append(Heard(now, event=event))
            kind = event.get("type")
            if kind == "agent.text" and event["turn_id"] != self._turn:
                self._turn, self._played_ms = event["turn_id"], 0.0
            elif kind == "agent.interrupted":
                self._speaker = np.zeros(0, dtype=np.float32)  # a real client drops what it holds
                await self._report(force=True)
            self._new_event.set()

    def _play(self, pcm16: bytes) -> None:
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        if self.output_rate != MIC_RATE:
            import soxr

            samples = soxr.resample(samples, self.output_rate, MIC_RATE).astype(np.float32)
        self._speaker = np.concatenate([self._speaker, samples])

    async def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._turn < 0 or (not force and now - self._reported_at < PLAYBACK_REPORT_MS / 1000):
            return
        self._reported_at = now
        message = {"type": "playback", "turn_id": self._turn, "played_ms": round(self._played_ms, 1)}
        await self._ws.send(json.dumps(message))

    async def _microphone(self) -> None:
        n = MIC_RATE * FRAME_MS // 1000
        start = time.monotonic()
        clip, pos, i = None, 0, 0
        while True:
            # Real time: frame i leaves at start + i·20 ms.
            delay = start + i * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            i += 1
            frame = np.zeros(n, dtype=np.float32)
            if clip is None and self._mic:
                clip, pos = self._mic.popleft(), 0
                loud = np.flatnonzero(np.abs(clip) * 32768 > SPEECH_LEVEL)
                first, last = (int(loud[0]), int(loud[-1])) if loud.size else (-1, -1)
            if clip is not None:
                part = clip[pos : pos + n]
                frame[: len(part)] = part
                if pos <= first < pos + n:
                    self.log.speech_onsets.append(time.monotonic())
                if pos <= last < pos + n:
                    self.log.speech_ends.append(time.monotonic())
                pos += n
                if pos >= len(clip):
                    clip = None
                    self._clip_done.pop(0).set()
            # The loudspeaker plays one frame; the microphone may hear it `delay_ms` later.
            played = self._speaker[:n]
            self._speaker = self._speaker[n:]
            if len(played) and self._turn >= 0:
                self._played_ms += 1000 * len(played) / MIC_RATE
            if self._echo is not None:
                out = np.zeros(n, dtype=np.float32)
                out[: len(played)] = played
                self._echo_line = np.concatenate([self._echo_line, out])
                frame += self._echo.gain * self._echo_line[:n]
                self._echo_line = self._echo_line[n:]
            pcm = (np.clip(frame, -1, 1) * 32767).astype("<i2").tobytes()
            try:
                await self._ws.send(pcm)
                await self._report()
            except websockets.ConnectionClosed:
                return
