"""`parley talk QUESTION.wav`: ask a spoken question over /ws, in real time, like a microphone would.

Speaks only the documented protocol (docs/protocol.md); imports nothing from the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets

FRAME_MS = 20  # what a browser's capture sends; small frames keep the VAD's view current
# A sample louder than this (about -36 dBFS) is speech, not the file's trailing silence: the
# client-side clock starts when the last one is sent, not when the WAV file ends.
SPEECH_LEVEL = 500
WIRE_RATES = (8000, 16000, 24000, 48000)
# How often to tell the server how much of the answer has "played" (this client plays it as it
# arrives: the server paces it in real time).
PLAYBACK_REPORT_MS = 250


@dataclass
class TalkResult:
    """What came back for one spoken question."""

    events: list[dict] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    output_sample_rate: int = 0
    session_id: str = ""
    speech_end_s: float = 0.0  # client clock: when the frame holding the last speech sample was sent
    first_audio_s: float | None = None  # client clock: first agent audio byte received

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def transcript(self) -> str:
        return " ".join(e["text"] for e in self.of("user.transcript"))

    @property
    def agent_text(self) -> str:
        return " ".join(e["text"] for e in self.of("agent.text"))

    @property
    def client_voice_to_voice_ms(self) -> float | None:
        """The last speech sample sent → the first agent audio received; None when there is no
        such figure: no answer, the question's end never sent, or an answer that began before
        the question ended (a fragment answer is not a fast one)."""
        if self.first_audio_s is None or not self.speech_end_s or self.first_audio_s < self.speech_end_s:
            return None
        return 1000.0 * (self.first_audio_s - self.speech_end_s)


def read_wav(path: Path) -> tuple[bytes, int]:
    """Mono s16le PCM and its rate, from a 16-bit WAV (stereo is mixed down)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: need 16-bit PCM WAV, got {8 * wav.getsampwidth()}-bit")
        rate, channels = wav.getframerate(), wav.getnchannels()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype("<i2")
    if rate not in WIRE_RATES:
        import soxr

        pcm = np.asarray(soxr.resample(pcm, rate, 16000), dtype="<i2")
        rate = 16000
    return pcm.tobytes(), rate


def last_loud_sample(pcm: bytes) -> int:
    """Index of the last sample of speech (0 when there is none)."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)) > SPEECH_LEVEL)
    return int(loud[-1]) if loud.size else 0


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


async def talk(
    url: str,
    pcm: bytes,
    rate: int,
    silence_s: float = 3.0,
    timeout_s: float = 30.0,
    text: str | None = None,
) -> TalkResult:
    """Send `pcm` in real time (or a typed `text`), then silence; return once the answer's audio is done."""
    result = TalkResult()
    frame_bytes = rate * 2 * FRAME_MS // 1000
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", "sample_rate": rate}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "session.ready":
            raise RuntimeError(f"server refused the session: {ready}")
        result.output_sample_rate = ready["output_sample_rate"]
        result.session_id = ready["session_id"]
        done = asyncio.Event()

        turn, played_bytes, reported_at = -1, 0, 0.0

        async def receive():
            nonlocal turn, played_bytes, reported_at
            async for message in ws:
                if isinstance(message, bytes):
                    if result.first_audio_s is None:
                        result.first_audio_s = time.monotonic()
                    result.audio.extend(message)
                    played_bytes += len(message)
                    if turn >= 0 and time.monotonic() - reported_at >= PLAYBACK_REPORT_MS / 1000:
                        reported_at = time.monotonic()
                        played_ms = 1000 * played_bytes / 2 / result.output_sample_rate
                        await ws.send(
                            json.dumps({"type": "playback", "turn_id": turn, "played_ms": played_ms})
                        )
                    continue
                event = json.loads(message)
                result.events.append(event)
                if event["type"] == "agent.text" and event["turn_id"] != turn:
                    turn, played_bytes = event["turn_id"], 0
                if event["type"] == "turn.trace":
                    done.set()

        receiver = asyncio.create_task(receive())
        try:
            start = time.monotonic()
            if text is not None:
                result.speech_end_s = time.monotonic()
                await ws.send(json.dumps({"type": "input_text", "text": text}))
            else:
                silence = bytes(frame_bytes)
                padded = pcm + bytes((-len(pcm)) % frame_bytes)
                frames = [padded[i : i + frame_bytes] for i in range(0, len(padded), frame_bytes)]
                n_silence = int(silence_s * 1000 / FRAME_MS)
                last_speech_frame = last_loud_sample(pcm) * 2 // frame_bytes
                for i, frame in enumerate(frames + [silence] * n_silence):
                    # Real time: frame i leaves at start + i·20 ms, like a microphone.
                    delay = start + i * FRAME_MS / 1000 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send(frame)
                    if i == last_speech_frame:
                        result.speech_end_s = time.monotonic()
                    if done.is_set():
                        break
            await asyncio.wait_for(done.wait(), timeout=timeout_s)
        finally:
            receiver.cancel()
    return result


def main(args) -> int:
    pcm, rate = read_wav(Path(args.wav))
    try:
        result = asyncio.run(talk(args.url, pcm, rate, args.silence, args.timeout))
    except (OSError, websockets.WebSocketException) as exc:
        print(f"error: cannot reach {args.url}: {exc} (is `parley serve` running?)", file=sys.stderr)
        return 1
    except TimeoutError:
        print("error: no complete answer within the timeout", file=sys.stderr)
        return 1
    for error in result.of("error"):
        print(f"server error {error['code']}: {error['message']}", file=sys.stderr)
    print(f"you:   {result.transcript}")
    print(f"agent: {result.agent_text}")
    for trace in result.of("turn.trace"):
        stages = ", ".join(f"{k} {v:.0f}" for k, v in trace["stages_ms"].items())
        print(f"trace (ms): {stages}")
    if result.client_voice_to_voice_ms is not None:
        print(
            f"client voice-to-voice (end of speech sent → first audio received): {result.client_voice_to_voice_ms:.0f} ms"
        )
    if args.out:
        write_wav(Path(args.out), bytes(result.audio), result.output_sample_rate)
        print(f"reply audio: {args.out} ({len(result.audio) / 2 / result.output_sample_rate:.1f} s)")
    return 0
