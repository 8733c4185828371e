"""Both wires (`/ws` and a phone call) send the agent's audio and take in the caller's through one
path (voice/transports/wire.AudioPath): held while the user's sound is judged, dropped once the
answer is cut off, and heard by the echo guard exactly as it went out."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, OutputTransportMessageFrame
from starlette.websockets import WebSocketState

from voice.audio import PIPELINE_SAMPLE_RATE
from voice.transports.twilio import StreamStart, TwilioWire
from voice.transports.websocket import ParleyWire

OUTPUT_RATE = 22050
CHUNK = OutputAudioRawFrame(audio=b"\x10\x00" * 441, sample_rate=OUTPUT_RATE, num_channels=1)  # 20 ms


class Socket:
    client_state = WebSocketState.CONNECTED


class Session:
    """What a session tells the wire (voice/transports/wire.WireHooks): whether the floor is open,
    and whether audio may go out."""

    output_sample_rate = OUTPUT_RATE

    def __init__(self, echo=None):
        self.floor = asyncio.Event()
        self.floor.set()
        self.cut_off = False
        self.sent_bytes = 0
        self.echo_guard = echo

    def audio_sent(self, nbytes: int) -> bool:
        if self.cut_off:
            return False
        self.sent_bytes += nbytes
        return True

    async def wait_for_floor(self) -> None:
        await self.floor.wait()

    async def client_error(self, error) -> None:
        raise AssertionError(f"no client mistake here: {error}")

    def playback_position(self) -> tuple[int, float]:
        return 1, 0.0

    def answer_cut_off(self) -> bool:
        return self.cut_off


class RecordingEcho:
    """An echo guard that records what it was told was played, and takes everything for echo."""

    def __init__(self):
        self.recorded: list[bytes] = []

    def played(self, pcm: bytes, _now_ns: int) -> None:
        self.recorded.append(pcm)

    def filter(self, pcm: bytes, _now_ns: int) -> bytes:
        return b"\x00" * len(pcm)


async def make_serializer(kind: str, session: Session):
    if kind == "ws":
        return ParleyWire(Socket(), PIPELINE_SAMPLE_RATE).serializer(session)
    serializer = TwilioWire(Socket(), StreamStart(streamSid="MZ1", callSid="CA1"), {}).serializer(session)
    await serializer.setup(type("Setup", (), {"audio_in_sample_rate": PIPELINE_SAMPLE_RATE})())
    return serializer


WIRES = ["ws", "phone"]


@pytest.mark.parametrize("kind", WIRES)
async def test_the_agents_audio_goes_out_while_the_floor_is_open(kind):
    session = Session()
    serializer = await make_serializer(kind, session)
    assert await serializer.serialize(CHUNK)
    assert session.sent_bytes == len(CHUNK.audio)


@pytest.mark.parametrize("kind", WIRES)
async def test_a_held_agent_goes_quiet_and_carries_on_from_the_same_chunk(kind):
    session = Session()
    serializer = await make_serializer(kind, session)
    session.floor.clear()
    pending = asyncio.create_task(serializer.serialize(CHUNK))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not pending.done(), "while held, the chunk waits"
    assert session.sent_bytes == 0
    session.floor.set()
    assert await pending, "released, the same chunk goes out"
    assert session.sent_bytes == len(CHUNK.audio)


@pytest.mark.parametrize("kind", WIRES)
async def test_the_rest_of_a_cut_off_answer_never_reaches_the_caller(kind):
    echo = RecordingEcho()
    session = Session(echo)
    serializer = await make_serializer(kind, session)
    session.cut_off = True
    assert await serializer.serialize(CHUNK) is None
    assert echo.recorded == [], "audio that did not go out cannot come back as echo"


@pytest.mark.parametrize("kind", WIRES)
async def test_a_sentence_queued_behind_held_audio_is_not_shown_once_the_answer_is_cut_off(kind):
    """The sentence's text waits behind the held audio; the user takes the floor, the floor opens
    so the waiting chunk can be dropped, and the text behind it must be dropped too."""
    session = Session()
    serializer = await make_serializer(kind, session)
    sentence = OutputTransportMessageFrame(
        message={"type": "agent.text", "turn_id": 1, "text": "We close at 6."}
    )
    other = OutputTransportMessageFrame(message={"type": "user.transcript", "turn_id": 2, "text": "Stop."})
    assert await serializer.serialize(sentence), (
        "shown (on the phone: a mark before it) while the answer plays"
    )
    session.cut_off = True
    assert await serializer.serialize(sentence) is None
    if kind == "ws":
        assert await serializer.serialize(other), "other events still go out"


@pytest.mark.parametrize("kind", WIRES)
async def test_the_echo_guard_hears_the_agent_as_sent_at_the_pipeline_rate(kind):
    echo = RecordingEcho()
    session = Session(echo)
    serializer = await make_serializer(kind, session)
    for _ in range(10):
        await serializer.serialize(CHUNK)
    heard = b"".join(echo.recorded)
    sent_ms = 10 * 20
    heard_ms = len(heard) / 2 / PIPELINE_SAMPLE_RATE * 1000
    # The stream resampler holds back its filter's delay (~30 ms); the rest arrives, at 16 kHz.
    assert sent_ms - 50 < heard_ms <= sent_ms


@pytest.mark.parametrize("kind", WIRES)
async def test_the_callers_audio_reaches_the_pipeline_through_the_echo_guard(kind):
    session = Session(RecordingEcho())
    serializer = await make_serializer(kind, session)
    tone = (np.sin(np.arange(320) / 5) * 8000).astype("<i2").tobytes()  # 20 ms at 16 kHz
    if kind == "ws":
        frames = [await serializer.deserialize(tone) for _ in range(5)]
    else:
        from clients.phone import ulaw_encode
        from voice.audio import resample_pcm16

        payload = base64.b64encode(ulaw_encode(resample_pcm16(tone, PIPELINE_SAMPLE_RATE, 8000))).decode()
        media = json.dumps(
            {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": payload}}
        )
        frames = [await serializer.deserialize(media) for _ in range(5)]
    audio = [f for f in frames if isinstance(f, InputAudioRawFrame)]
    assert audio and all(f.sample_rate == PIPELINE_SAMPLE_RATE for f in audio)
    assert all(not any(f.audio) for f in audio), "the guard's verdict (all echo here) is what the VAD hears"
