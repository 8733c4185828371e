"""The browser/CLI WebSocket transport: pipecat's FastAPI WebSocket transport with Parley's wire
format (docs/protocol.md).

The serializer turns client frames into pipeline frames (audio resampled to 16 kHz for the VAD
and Whisper) and pipeline frames into wire messages. Client mistakes go to the session
(`client_error`) and never raise: one bad message must not end the session.
"""

from __future__ import annotations

import logging

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
from voice.audio import PIPELINE_SAMPLE_RATE, StreamResampler
from voice.transports.wire import AudioPath, Wire, WireHooks

log = logging.getLogger(__name__)


class ParleyWireSerializer(FrameSerializer):
    """Parley's `/ws` wire format: JSON text events and raw PCM s16le binary frames."""

    def __init__(self, input_sample_rate: int, hooks: WireHooks):
        super().__init__()
        self._input_rate = input_sample_rate
        self._resampler = StreamResampler(input_sample_rate, PIPELINE_SAMPLE_RATE)
        self._hooks = hooks
        self._audio_path = AudioPath(hooks)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            return frame.audio if await self._audio_path.outgoing(frame.audio) else None
        if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            return protocol.json_dumps(frame.message) if self._audio_path.shown(frame.message) else None
        return None  # interruptions are announced by the session, with the turn id

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            if isinstance(data, bytes):
                return self._audio(data)
            return await self._text(data)
        except protocol.ProtocolError as exc:
            await self._hooks.client_error(exc)
            return None
        except Exception:  # noqa: BLE001 - a bug here must not end the session: report and read on
            log.exception("could not handle a client message")
            await self._hooks.client_error(
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
        return InputAudioRawFrame(
            audio=self._audio_path.incoming(pcm), sample_rate=PIPELINE_SAMPLE_RATE, num_channels=1
        )

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
            self._hooks.playback_reported(message.turn_id, message.played_ms)
        else:
            await self._hooks.typed_text(message.text)
        return None


class ParleyWire(Wire):
    """`/ws`: every protocol event goes to the client as a JSON text frame."""

    kind = "ws"

    def __init__(self, websocket: WebSocket, input_sample_rate: int):
        super().__init__(websocket)
        self.input_sample_rate = input_sample_rate

    def serializer(self, hooks: WireHooks) -> ParleyWireSerializer:
        return ParleyWireSerializer(self.input_sample_rate, hooks)

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
            audio_in_sample_rate=PIPELINE_SAMPLE_RATE,
            audio_out_sample_rate=output_rate,
            # 2 s of trailing silence at the end would only delay the close.
            audio_out_end_silence_secs=0,
            # Origins are checked by the server, not per transport.
            allowed_origins=[],
        ),
    )
