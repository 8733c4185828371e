"""The browser/CLI WebSocket transport: pipecat's FastAPI WebSocket transport with Parley's wire
format (docs/protocol.md).

The serializer turns client frames into pipeline frames (audio resampled to 16 kHz for the VAD
and Whisper) and pipeline frames into wire messages. Client mistakes go to `on_error` and never
raise: one bad message must not end the session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import WebSocket
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pydantic import BaseModel

from voice import protocol
from voice.audio import StreamResampler
from voice.echo import EchoGuard
from voice.stt import WHISPER_SAMPLE_RATE
from voice.transports.wire import ErrorSink, TextSink, Wire, WireHooks

log = logging.getLogger(__name__)


class ParleyWireSerializer(FrameSerializer):
    """Parley's `/ws` wire format: JSON text events and raw PCM s16le binary frames."""

    def __init__(
        self,
        input_sample_rate: int,
        on_error: ErrorSink,
        on_text: TextSink,
        on_audio_sent: Callable[[int], bool],
        wait_for_floor: Callable[[], Awaitable[object]],
        on_playback: Callable[[int, float], None],
        output_sample_rate: int,
        echo_guard: EchoGuard | None = None,
    ):
        super().__init__()
        self._input_rate = input_sample_rate
        self._resampler = StreamResampler(input_sample_rate, WHISPER_SAMPLE_RATE)
        self._on_error = on_error
        self._on_text = on_text
        self._on_audio_sent = on_audio_sent
        self._wait_for_floor = wait_for_floor
        self._on_playback = on_playback
        # The guard hears both directions at 16 kHz: the caller's audio, and the agent's as sent.
        self._echo = echo_guard
        self._echo_resampler = StreamResampler(output_sample_rate, WHISPER_SAMPLE_RATE)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            # The output transport paces these in real time, one at a time: waiting here pauses the
            # agent's voice (while a user's sound is judged) without losing its place.
            await self._wait_for_floor()
            # This is the moment the bytes go out, unless the session says the answer was cut off.
            if not self._on_audio_sent(len(frame.audio)):
                return None
            if self._echo is not None:
                self._echo.played(self._echo_resampler.process(frame.audio), time.monotonic_ns())
            return frame.audio
        if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            return protocol.json_dumps(frame.message)
        return None  # interruptions are announced by the session, with the turn id

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            if isinstance(data, bytes):
                return self._audio(data)
            return await self._text(data)
        except protocol.ProtocolError as exc:
            await self._on_error(exc)
            return None
        except Exception:  # noqa: BLE001 - a bug here must not end the session: report and read on
            log.exception("could not handle a client message")
            await self._on_error(
                protocol.ProtocolError(
                    "internal", "That message could not be handled (server bug, logged); carry on."
                )
            )
            return None

    def _audio(self, data: bytes) -> InputAudioRawFrame | None:
        if len(data) > protocol.MAX_MESSAGE_BYTES:
            raise protocol.ProtocolError(
                "message_too_big", f"Messages are limited to {protocol.MAX_MESSAGE_BYTES} bytes.", fatal=True
            )
        if len(data) > protocol.MAX_AUDIO_FRAME_BYTES:
            raise protocol.ProtocolError(
                "audio_frame_too_big",
                f"Audio frames are limited to {protocol.MAX_AUDIO_FRAME_BYTES} bytes; send 20 ms frames.",
            )
        if len(data) % 2:
            raise protocol.ProtocolError(
                "odd_audio_bytes",
                "Audio must be PCM s16le: an even number of bytes per frame. This frame was dropped.",
            )
        if not data:
            return None
        pcm = self._resampler.process(data)
        if not pcm:
            return None
        if self._echo is not None:
            pcm = self._echo.filter(pcm, time.monotonic_ns())
        return InputAudioRawFrame(audio=pcm, sample_rate=WHISPER_SAMPLE_RATE, num_channels=1)

    async def _text(self, data: str) -> Frame | None:
        if len(data.encode("utf-8", errors="replace")) > protocol.MAX_MESSAGE_BYTES:
            raise protocol.ProtocolError(
                "message_too_big", f"Messages are limited to {protocol.MAX_MESSAGE_BYTES} bytes.", fatal=True
            )
        message = protocol.parse_client_message(data)
        if isinstance(message, protocol.SessionStart):
            raise protocol.ProtocolError(
                "already_started",
                "The session has already started: send audio or input_text (reconnect to change the sample rate).",
            )
        if isinstance(message, protocol.Playback):
            self._on_playback(message.turn_id, message.played_ms)
        else:
            await self._on_text(message.text)
        return None


class ParleyWire(Wire):
    """`/ws`: every protocol event goes to the client as a JSON text frame."""

    kind = "ws"

    def __init__(self, websocket: WebSocket, input_sample_rate: int):
        super().__init__(websocket)
        self.input_sample_rate = input_sample_rate

    def serializer(self, hooks: WireHooks) -> ParleyWireSerializer:
        return ParleyWireSerializer(
            self.input_sample_rate,
            on_error=hooks.on_error,
            on_text=hooks.on_text,
            on_audio_sent=hooks.on_audio_sent,
            wait_for_floor=hooks.wait_for_floor,
            on_playback=hooks.on_playback,
            output_sample_rate=hooks.output_sample_rate,
            echo_guard=hooks.echo_guard,
        )

    async def send(self, event: BaseModel) -> None:
        await self.send_text(protocol.json_dumps(event.model_dump()))


def make_transport(websocket: WebSocket, serializer: FrameSerializer, output_rate: int):
    """pipecat's FastAPI WebSocket transport, set up for Parley: audio both ways, no trailing silence."""
    return FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            serializer=serializer,
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=WHISPER_SAMPLE_RATE,
            audio_out_sample_rate=output_rate,
            # 2 s of trailing silence at the end would only delay the close.
            audio_out_end_silence_secs=0,
            # Origins are checked by the server, not per transport.
            allowed_origins=[],
        ),
    )
