"""Phone calls: Twilio's bidirectional Media Streams protocol on `/twilio/media`.

Twilio opens the socket and sends `connected`, then `start` (the stream's and the call's ids, and
any custom parameters), then the caller's audio as `media` messages (base64 μ-law at 8 kHz, 20 ms
each), `dtmf` for each key pressed, `mark` when audio Parley sent before a mark of its own has been
played, and `stop` when the call ends. Parley sends `media` (the agent's voice), `mark` before each
sentence and after each answer, and `clear` when the caller starts talking over the agent, so the
caller stops hearing it at once.

pipecat's `TwilioFrameSerializer` does the audio: μ-law to PCM and back, resampled between 8 kHz
and the pipeline's rates (16 kHz in, for the VAD and Whisper; the voice's rate out), here with
Parley's low-delay resampler (voice/transports/narrowband.py: pipecat's own holds back up to 200 ms). This
module adds what a conversation needs around it: every message checked (a bad one is logged and
counted, and the call goes on), keys and marks handed to the session, and Twilio's REST API never
called (pipecat would hang the call up through it, which needs account credentials).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import WebSocket
from pipecat.audio.utils import ulaw_to_pcm
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.serializers.twilio import TwilioFrameSerializer
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from voice import protocol
from voice.audio import PIPELINE_SAMPLE_RATE
from voice.config import DTMF_KEYS
from voice.observability.metrics import EndReason
from voice.protocol import ProtocolError
from voice.transports.narrowband import LowDelayResampler
from voice.transports.wire import AudioPath, Wire, WireHooks, receive_before

log = logging.getLogger(__name__)

TWILIO_SAMPLE_RATE = 8000  # μ-law at 8 kHz, mono: the only format Media Streams carries
TWILIO_ENCODING = "audio/x-mulaw"
# Twilio sends `start` right after `connected`; a socket that sends neither is not a call.
STREAM_START_TIMEOUT_S = 10.0
# Twilio's media messages hold 20 ms (160 bytes); 8 s of μ-law in one would only add latency.
MAX_MEDIA_PAYLOAD_BYTES = 64 * 1024
EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")
# What a keypad press puts in the history as the user's turn: the LLM then knows, on later turns,
# that the caller pressed a key and what the agent said to it.
KEYPAD_TURN_TEXT = "(pressed {digit} on the keypad)"
# After the caller's `stop`, how long the far end's own close of the socket may take before the
# session stops anyway: it comes within milliseconds; a second is ample.
HANG_UP_CLOSE_GRACE_S = 1.0


# --- Twilio → Parley


class _TwilioModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class MediaFormat(_TwilioModel):
    encoding: str = TWILIO_ENCODING
    sample_rate: int = Field(TWILIO_SAMPLE_RATE, alias="sampleRate")
    channels: int = 1


class StreamStart(_TwilioModel):
    """What `start` says about the stream and the call."""

    stream_sid: str = Field(alias="streamSid", min_length=1, max_length=64)
    account_sid: str = Field("", alias="accountSid")
    call_sid: str = Field("", alias="callSid")
    tracks: list[str] = Field(default_factory=lambda: ["inbound"])
    custom_parameters: dict[str, str] = Field(default_factory=dict, alias="customParameters")
    media_format: MediaFormat = Field(default_factory=MediaFormat, alias="mediaFormat")


class Connected(_TwilioModel):
    event: Literal["connected"]
    protocol: str = ""
    version: str = ""


class Start(_TwilioModel):
    event: Literal["start"]
    start: StreamStart


class MediaChunk(_TwilioModel):
    track: str = "inbound"
    payload: str


class Media(_TwilioModel):
    event: Literal["media"]
    media: MediaChunk


class Digit(_TwilioModel):
    digit: str


class Dtmf(_TwilioModel):
    event: Literal["dtmf"]
    dtmf: Digit


class MarkName(_TwilioModel):
    name: str = Field(min_length=1)


class Mark(_TwilioModel):
    event: Literal["mark"]
    mark: MarkName


class Stop(_TwilioModel):
    event: Literal["stop"]


StreamMessage = Annotated[Connected | Start | Media | Dtmf | Mark | Stop, Field(discriminator="event")]
_adapter: TypeAdapter[StreamMessage] = TypeAdapter(StreamMessage)


def parse_stream_message(raw: str | bytes) -> Connected | Start | Media | Dtmf | Mark | Stop:
    """One message from Twilio, checked; a mistake raises ProtocolError with a code and what to do."""
    if isinstance(raw, bytes):
        raise ProtocolError(
            "invalid_message", "Media Streams messages are JSON text; a binary frame was dropped."
        )
    if len(raw.encode("utf-8", errors="replace")) > protocol.MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "message_too_big", f"Messages are limited to {protocol.MAX_MESSAGE_BYTES} bytes.", fatal=True
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("invalid_json", f"Not a JSON message, dropped: {raw[:80]!r}.") from None
    if not isinstance(data, dict) or "event" not in data:
        raise ProtocolError("invalid_message", 'Each message must be a JSON object with an "event".')
    if data["event"] not in EVENTS:
        raise ProtocolError(
            "unknown_event", f"Unknown event {data['event']!r}, dropped: expected one of {', '.join(EVENTS)}."
        )
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or data["event"]
        raise ProtocolError(
            "invalid_message", f"{data['event']}: {where}: {first['msg']}; dropped."
        ) from None


def decode_payload(payload: str) -> bytes:
    """The μ-law bytes of a media payload (strict base64)."""
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "invalid_base64", "media.payload is not base64: that frame was dropped."
        ) from None
    if len(audio) > MAX_MEDIA_PAYLOAD_BYTES:
        raise ProtocolError(
            "audio_frame_too_big",
            f"media.payload is over {MAX_MEDIA_PAYLOAD_BYTES} bytes; send 20 ms frames. Dropped.",
        )
    return audio


def check_media_format(start: StreamStart) -> None:
    fmt = start.media_format
    if (fmt.encoding, fmt.sample_rate, fmt.channels) != (TWILIO_ENCODING, TWILIO_SAMPLE_RATE, 1):
        raise ProtocolError(
            "unsupported_media_format",
            f"The stream's audio is {fmt.encoding} at {fmt.sample_rate} Hz, {fmt.channels} channel(s); "
            f"Parley takes {TWILIO_ENCODING} at {TWILIO_SAMPLE_RATE} Hz, mono (what Twilio sends).",
            fatal=True,
        )


# --- Parley → Twilio


def mark_message(stream_sid: str, name: str) -> str:
    return protocol.json_dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return protocol.json_dumps({"event": "clear", "streamSid": stream_sid})


class MarkBook:
    """The marks sent on one stream, each with where it stands in the agent's audio.

    Twilio sends a mark back once the audio before it has been played, so an echoed mark says how
    much of that turn's answer the caller has heard. A `clear` makes Twilio send back every mark
    still pending although their audio was dropped: those say nothing and are forgotten.
    """

    def __init__(self):
        self._pending: dict[str, tuple[int, float]] = {}  # name → (turn id, ms of its audio before it)
        self._cleared: set[str] = set()
        self._count = 0

    def add(self, turn_id: int, sent_ms: float) -> str:
        self._count += 1
        name = f"t{turn_id}-m{self._count}"
        self._pending[name] = (turn_id, sent_ms)
        return name

    def echoed(self, name: str) -> tuple[int, float] | None:
        """(turn id, ms played) for a mark Twilio sent back; None for one sent back by a clear."""
        if name in self._pending:
            return self._pending.pop(name)
        if name in self._cleared:
            self._cleared.discard(name)
            return None
        raise ProtocolError("unknown_mark", f"Mark {name!r} was never sent on this stream; ignored.")

    def clear(self) -> None:
        self._cleared.update(self._pending)
        self._pending.clear()


class TwilioWireSerializer(TwilioFrameSerializer):
    """pipecat's Twilio serializer for the audio, with each message checked and the session told
    of keys, marks and the end of the call. Never raises: a bad message must not end the call."""

    def __init__(
        self,
        start: StreamStart,
        hooks: WireHooks,
        marks: MarkBook,
        dtmf_replies: dict[str, str],
    ):
        super().__init__(
            start.stream_sid,
            call_sid=start.call_sid or None,
            # No hang-up through Twilio's REST API: the call ends when the stream does (Twilio's
            # `stop`, or the socket closing), and Parley holds no account credentials.
            params=TwilioFrameSerializer.InputParams(
                twilio_sample_rate=TWILIO_SAMPLE_RATE, sample_rate=PIPELINE_SAMPLE_RATE, auto_hang_up=False
            ),
        )
        # Both directions resampled with 3 ms of delay instead of pipecat's block-wise soxr stream,
        # which holds back 60 ms of the caller and up to 200 ms of the agent (voice/transports/narrowband.py).
        self._input_resampler = LowDelayResampler()
        self._output_resampler = LowDelayResampler()
        self.stream_sid = start.stream_sid
        self._hooks = hooks
        self._marks = marks
        self._dtmf_replies = dtmf_replies  # key → what the agent says to it
        self._stopped = False
        self._stop_task: asyncio.Task | None = None
        self._audio_path = AudioPath(hooks)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            if not await self._audio_path.outgoing(frame.audio):
                return None
            return await super().serialize(frame)  # μ-law at 8 kHz in a `media` message
        if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            if frame.message.get("type") == "agent.text" and self._audio_path.shown(frame.message):
                # A sentence's audio comes next: a mark here comes back once the caller has heard
                # everything before it.
                turn_id, sent_ms = self._hooks.playback_position()
                return mark_message(self.stream_sid, self._marks.add(turn_id, sent_ms))
            return None  # Parley's other events mean nothing to Twilio (the wire logs them)
        # Interruptions: the session sends `clear` when the agent is really cut off (pipecat's
        # serializer would send one at every turn). Ends: no REST hang-up (see __init__).
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            message = parse_stream_message(data)
            if self._stopped:
                return None  # the call is over; Twilio closes the socket next
            if isinstance(message, Media):
                return await self._media(message)
            if isinstance(message, Dtmf):
                if len(message.dtmf.digit) != 1 or message.dtmf.digit not in DTMF_KEYS:
                    raise ProtocolError(
                        "invalid_message", f"dtmf: {message.dtmf.digit!r} is not a keypad key."
                    )
                await self._keypad(message.dtmf.digit)
            elif isinstance(message, Mark):
                if (heard := self._marks.echoed(message.mark.name)) is not None:
                    self._hooks.playback_reported(*heard)
            elif isinstance(message, Stop):
                self._stopped = True
                log.info("stream %s: the caller hung up (Twilio sent stop)", self.stream_sid)
                self._hooks.ending(EndReason.HUNG_UP)  # now: the socket closes right after
                # Kept only so it is not garbage-collected mid-sleep; when the socket's close has
                # ended the session first, its stop finds the session over and does nothing.
                self._stop_task = asyncio.create_task(self._stop_after_hang_up())
            elif isinstance(message, Start):
                raise ProtocolError("already_started", "A second start on one stream was ignored.")
            return None  # `connected` again says nothing new
        except ProtocolError as exc:
            await self._hooks.client_error(exc)
            return None
        except Exception:  # noqa: BLE001 - a bug here must not end the call: report and read on
            log.exception("could not handle a message from Twilio")
            await self._hooks.client_error(
                ProtocolError("internal", "That message could not be handled (server bug, logged).")
            )
            return None

    async def _keypad(self, digit: str) -> None:
        """A key the caller pressed: its configured reply is spoken without the LLM, cutting the
        agent off if it is talking. A key with no reply is only logged."""
        reply = self._dtmf_replies.get(digit)
        if reply is None:
            log.info(
                "stream %s: caller pressed %s; no reply is set for it (PARLEY_DTMF_REPLIES)",
                self.stream_sid,
                digit,
            )
            return
        log.info("stream %s: caller pressed %s", self.stream_sid, digit)
        await self._hooks.typed_text(KEYPAD_TURN_TEXT.format(digit=digit), reply)

    async def _stop_after_hang_up(self) -> None:
        """Stops the session from a task of its own: this serializer runs in the transport's
        receive loop, which stopping the session cancels."""
        # Twilio (and the simulator) close the socket right after `stop`, and that close ends the
        # session through the transport. Stopping at once raced it: pipecat then closed a socket
        # the far end was closing too, and logged an error for a normal hang-up.
        await asyncio.sleep(HANG_UP_CLOSE_GRACE_S)
        await self._hooks.stop(EndReason.HUNG_UP)

    async def _media(self, message: Media) -> InputAudioRawFrame | None:
        if message.media.track != "inbound":
            return None  # only the caller's side is heard
        ulaw = decode_payload(message.media.payload)
        # μ-law at 8 kHz → PCM at 16 kHz, as pipecat's own deserialize does, without parsing the
        # message and its base64 a second time.
        audio = (
            await ulaw_to_pcm(ulaw, TWILIO_SAMPLE_RATE, PIPELINE_SAMPLE_RATE, self._input_resampler)
            if ulaw
            else b""
        )
        if not audio:
            return None
        return InputAudioRawFrame(
            audio=self._audio_path.incoming(audio), num_channels=1, sample_rate=PIPELINE_SAMPLE_RATE
        )


class TwilioWire(Wire):
    """A phone call: the agent's audio and marks go to Twilio; of the session's events, an agent
    held or cut off becomes `clear` and an answer's end a `mark`; the rest are only logged."""

    kind = "phone"
    input_sample_rate = TWILIO_SAMPLE_RATE

    def __init__(self, websocket: WebSocket, start: StreamStart, dtmf_replies: dict[str, str]):
        super().__init__(websocket)
        self.start = start
        self._dtmf_replies = dtmf_replies  # key → what the agent says to it (Settings.dtmf_replies)
        self._marks = MarkBook()
        self._hooks: WireHooks | None = None

    def serializer(self, hooks: WireHooks) -> TwilioWireSerializer:
        self._hooks = hooks
        return TwilioWireSerializer(self.start, hooks, self._marks, self._dtmf_replies)

    async def send(self, event: BaseModel) -> None:
        sid = self.start.stream_sid
        if isinstance(event, protocol.AgentPaused | protocol.AgentInterrupted):
            # The caller talks over the agent: Twilio drops what it still holds of the answer.
            self._marks.clear()
            await self.send_text(clear_message(sid))
            if isinstance(event, protocol.AgentInterrupted):
                log.info(
                    "stream %s turn %d: cut off; the caller heard %r", sid, event.turn_id, event.heard_text
                )
        elif isinstance(event, protocol.AgentAudioDone) and self._hooks is not None:
            turn_id, sent_ms = self._hooks.playback_position()
            await self.send_text(mark_message(sid, self._marks.add(turn_id, sent_ms)))
        elif isinstance(event, protocol.SessionReady):
            log.info(
                "call %s (stream %s) answered by session %s; custom parameters: %s",
                self.start.call_sid or "?",
                sid,
                event.session_id,
                sorted(self.start.custom_parameters) or "none",
            )
        if not isinstance(event, protocol.SessionReady):
            # Twilio has no message for the rest: the log keeps them (errors are logged by the session).
            log.debug("stream %s: %s", sid, event.model_dump_json())


async def await_stream_start(
    websocket: WebSocket, on_error: Callable[[ProtocolError], None]
) -> StreamStart | None:
    """Read Twilio's opening messages up to `start`. Mistakes go to `on_error` and are dropped;
    None: the call ended (or never began) before its stream started."""
    deadline = asyncio.get_running_loop().time() + STREAM_START_TIMEOUT_S
    while True:
        try:
            data = await receive_before(websocket, deadline)
        except TimeoutError:
            on_error(
                ProtocolError("start_timeout", f"No start within {STREAM_START_TIMEOUT_S:.0f} s; hanging up.")
            )
            return None
        if data is None:
            return None
        try:
            message = parse_stream_message(data)
            if isinstance(message, Start):
                check_media_format(message.start)
                return message.start
            if isinstance(message, Stop):
                log.info("a phone stream stopped before it started")
                return None
            if not isinstance(message, Connected):
                raise ProtocolError(
                    "not_started", f"{message.event} before start: dropped (Twilio sends start first)."
                )
        except ProtocolError as exc:
            on_error(exc)
            if exc.fatal:
                return None
