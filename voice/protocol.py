"""The `/ws` protocol as typed messages (docs/protocol.md is the prose version).

Client → server: text JSON messages below, and binary frames of mono PCM s16le at the rate the
client declared in `session.start`. Server → client: text JSON events below, and binary frames
of the agent's audio, mono PCM s16le at `output_sample_rate`.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

SUPPORTED_SAMPLE_RATES = (8000, 16000, 24000, 48000)  # telephony, wideband, and the two browser rates
MAX_AUDIO_FRAME_BYTES = 64 * 1024  # 64 KiB: ~2 s at 16 kHz; bigger frames would add latency anyway
MAX_MESSAGE_BYTES = 1024 * 1024  # anything over 1 MiB is refused and the socket closed
MAX_INPUT_TEXT_CHARS = 2000  # a typed turn longer than this is not a conversational turn
WS_CLOSE_POLICY = 1008  # RFC 6455: policy violation
WS_CLOSE_TOO_BIG = 1009  # RFC 6455: message too big to process
WS_CLOSE_TRY_AGAIN = 1013  # RFC 6455: try again later (loading, or full)


# --- client → server


class SessionStart(BaseModel):
    type: Literal["session.start"]
    sample_rate: int = 16000


class InputText(BaseModel):
    type: Literal["input_text"]
    text: str = Field(min_length=1, max_length=MAX_INPUT_TEXT_CHARS)

    @field_validator("text", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value


class Playback(BaseModel):
    """How much of a turn's audio the client has played (sent while playing, and when it stops)."""

    type: Literal["playback"]
    turn_id: int = Field(ge=0)
    played_ms: float = Field(ge=0, le=24 * 3600 * 1000)


CLIENT_TYPES = ("session.start", "input_text", "playback")
ClientMessage = Annotated[SessionStart | InputText | Playback, Field(discriminator="type")]
_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


class ProtocolError(Exception):
    """A client mistake: `code` and `message` go out in an `error` event."""

    def __init__(self, code: str, message: str, fatal: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


def parse_client_message(raw: str) -> SessionStart | InputText | Playback:
    """Parse one text frame, or raise ProtocolError with a code the client can act on."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"Text messages must be JSON objects ({exc.msg}).") from None
    except RecursionError:
        raise ProtocolError(
            "invalid_json", "Text messages must be flat JSON objects; this one nests too deep."
        ) from None
    if not isinstance(data, dict) or "type" not in data:
        raise ProtocolError("invalid_message", 'Each text message must be a JSON object with a "type".')
    if data["type"] not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"Unknown message type {data['type']!r}: expected one of {', '.join(CLIENT_TYPES)}.",
        )
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or data["type"]
        raise ProtocolError("invalid_message", f"{data['type']}: {where}: {first['msg']}.") from None


# --- server → client


class SessionReady(BaseModel):
    type: Literal["session.ready"] = "session.ready"
    session_id: str
    output_sample_rate: int


class UserSpeechStarted(BaseModel):
    type: Literal["user.speech_started"] = "user.speech_started"


class UserSpeechStopped(BaseModel):
    type: Literal["user.speech_stopped"] = "user.speech_stopped"


class UserTranscript(BaseModel):
    type: Literal["user.transcript"] = "user.transcript"
    turn_id: int
    text: str
    final: bool = True


class AgentText(BaseModel):
    type: Literal["agent.text"] = "agent.text"
    turn_id: int
    text: str


class AgentAudioDone(BaseModel):
    type: Literal["agent.audio_done"] = "agent.audio_done"
    turn_id: int


class AgentInterrupted(BaseModel):
    type: Literal["agent.interrupted"] = "agent.interrupted"
    turn_id: int
    heard_text: str = ""  # what the user heard of the answer before it stopped


class AgentPaused(BaseModel):
    """The user made a sound while the agent talked: its audio is held until that sound is judged."""

    type: Literal["agent.paused"] = "agent.paused"
    turn_id: int


class AgentResumed(BaseModel):
    """The sound was not an interruption (a cough, "mm-hmm", echo): the agent carries on."""

    type: Literal["agent.resumed"] = "agent.resumed"
    turn_id: int
    reason: str


class TurnTrace(BaseModel):
    type: Literal["turn.trace"] = "turn.trace"
    turn_id: int
    stages_ms: dict[str, float]
    interrupted: bool = False


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str


def stage_failed(error: str) -> ErrorEvent:
    """A stage of the pipeline failed this turn (an unreachable LLM, a TTS error); the session goes on."""
    return ErrorEvent(
        code="stage_failed",
        message=f"The agent could not answer this turn ({error}). Try again; if it persists, "
        "check the server log (and PARLEY_LLM_BASE_URL for a remote LLM).",
    )


ServerEvent = (
    SessionReady
    | UserSpeechStarted
    | UserSpeechStopped
    | UserTranscript
    | AgentText
    | AgentAudioDone
    | AgentInterrupted
    | AgentPaused
    | AgentResumed
    | TurnTrace
    | ErrorEvent
)


def json_dumps(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
