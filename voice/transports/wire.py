"""The seam between a session and the network it talks over.

A session runs the same pipeline whoever calls: a browser or `parley talk` on `/ws` (Parley's own
protocol), or a phone call through Twilio Media Streams on `/twilio/media`. What differs is the
*wire*: the serializer that turns client messages into pipeline frames and the agent's audio into
messages, and what becomes of the session's protocol events (sent as JSON on `/ws`; on a phone
call, mapped to what Twilio understands, `clear` and `mark`, and otherwise only logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from typing import Protocol

from fastapi import WebSocket
from pipecat.serializers.base_serializer import FrameSerializer
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect, WebSocketState

from voice.audio import PIPELINE_SAMPLE_RATE, StreamResampler
from voice.echo import EchoGuard
from voice.protocol import ProtocolError


async def receive_before(websocket: WebSocket, deadline: float) -> str | bytes | None:
    """The next text or binary message, before `deadline` (event-loop time), for a handshake;
    None once the client has gone. Raises TimeoutError when the deadline passes first."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=max(0.0, deadline - loop.time()))
        except WebSocketDisconnect:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("text") if message.get("text") is not None else message.get("bytes")
        if data is not None:
            return data


class WireHooks(Protocol):
    """What a wire's serializer tells the session, and what it asks of it (implemented by Session)."""

    output_sample_rate: int  # the agent's audio as the pipeline makes it (the TTS voice's rate)
    echo_guard: EchoGuard | None  # hears both directions, takes the agent's voice out of the caller's

    async def client_error(self, error: ProtocolError) -> None:
        """A client mistake: logged, counted, and sent back where the wire can."""

    async def typed_text(self, text: str, reply: str | None = None) -> None:
        """A typed user turn (/ws), or a key the caller pressed (phone) with the `reply` set for it
        (said instead of asking the LLM)."""

    def ending(self, reason: str) -> None:
        """The session is about to end, for this reason (the first one given wins)."""

    async def stop(self, reason: str) -> None:
        """End the session now."""

    def audio_sent(self, nbytes: int) -> bool:
        """Asked just before each chunk of the agent's audio goes out; False drops it."""

    async def wait_for_floor(self) -> None:
        """Returns once the agent may be heard (not held)."""

    def answer_cut_off(self) -> bool:
        """The answer in flight was cut off: what is left of it goes nowhere."""

    def playback_reported(self, turn_id: int, played_ms: float) -> None:
        """How much of a turn's audio the client has played."""

    def playback_position(self) -> tuple[int, float]:
        """(turn id, ms of its audio sent so far)."""


class AudioPath:
    """The audio both wires share, whatever their format: the agent's audio on its way out (it
    waits while the agent is held, is dropped once the answer is cut off, and is heard by the echo
    guard as sent), and the caller's on its way in (the agent's echo taken out), at the pipeline's
    rate in both directions."""

    def __init__(self, hooks: WireHooks):
        self._hooks = hooks
        self._echo = hooks.echo_guard
        self._echo_resampler = StreamResampler(hooks.output_sample_rate, PIPELINE_SAMPLE_RATE)

    async def outgoing(self, audio: bytes) -> bool:
        """Call just before a chunk of the agent's audio goes out. False: drop it."""
        # The output transport paces chunks in real time, one at a time: waiting here pauses the
        # agent's voice (while a caller's sound is judged) without losing its place.
        await self._hooks.wait_for_floor()
        # This is the moment the bytes go out, unless the session says the answer was cut off.
        if not self._hooks.audio_sent(len(audio)):
            return False
        if self._echo is not None:
            self._echo.played(self._echo_resampler.process(audio), time.monotonic_ns())
        return True

    def shown(self, message: dict) -> bool:
        """Asked before an event queued with the audio goes out. A sentence's `agent.text` waits
        behind its answer's held audio; when the user then takes the floor, that audio is dropped
        and the text must be too (the caller never hears the sentence)."""
        return message.get("type") != "agent.text" or not self._hooks.answer_cut_off()

    def incoming(self, pcm: bytes) -> bytes:
        """The caller's audio (at the pipeline's rate), with the agent's own voice taken out."""
        if self._echo is None:
            return pcm
        return self._echo.filter(pcm, time.monotonic_ns())


class Wire(ABC):
    """How one session meets its client: the serializer for pipecat's WebSocket transport, and
    the delivery of the session's protocol events."""

    kind: str  # for logs and metrics: "ws" or "phone"
    input_sample_rate: int  # the caller's audio as it arrives, before it is resampled for the VAD and STT

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket
        self._send_lock = asyncio.Lock()

    @abstractmethod
    def serializer(self, hooks: WireHooks) -> FrameSerializer:
        """The serializer the session's transport uses, calling back into the session through `hooks`."""

    @abstractmethod
    async def send(self, event: BaseModel) -> None:
        """Deliver one protocol event (voice/protocol.py) now, ahead of queued audio."""

    async def send_text(self, text: str) -> None:
        """One text message to the client, unless it has gone (the transport's disconnect handler
        ends the session then)."""
        if self.websocket.client_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            with contextlib.suppress(RuntimeError, OSError):
                await self.websocket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code=code, reason=reason)
