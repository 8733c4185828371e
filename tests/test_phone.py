"""Phone calls, without models: the webhook and its signature check, the Media Streams messages,
the phone wire (clear, marks, keys, hang-up), and the simulator acting as Twilio against a fake
server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
import warnings
from types import SimpleNamespace
from urllib.parse import urlencode
from xml.etree import ElementTree

import numpy as np
import pytest
import websockets
from fastapi.testclient import TestClient
from pipecat.frames.frames import (
    EndFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    InterruptionWorkerFrame,
    LLMMessagesAppendFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)
from starlette.websockets import WebSocketState

from clients.phone import PhoneCall, call_from_microphone, parse_dtmf, ulaw_decode, ulaw_encode
from clients.phone import main as phone_main
from clients.sound import SoundUnavailable
from voice import protocol
from voice.config import DEFAULT_DTMF_REPLIES, Settings
from voice.conversation import TurnFlow
from voice.observability.metrics import EndReason
from voice.pipeline import ConversationPipeline, needs_full_window, stt_beam_size
from voice.protocol import ProtocolError
from voice.server import create_app
from voice.session import Session
from voice.transports.narrowband import LowDelayResampler
from voice.transports.twilio import (
    HANG_UP_CLOSE_GRACE_S,
    KEYPAD_TURN_TEXT,
    MarkBook,
    StreamStart,
    TwilioWire,
    await_stream_start,
    decode_payload,
    parse_stream_message,
)
from voice.transports.twilio_webhook import (
    STREAM_TOKEN_PARAMETER,
    check_signature,
    stream_token,
    stream_token_ok,
    twilio_signature,
)
from voice.transports.websocket import ParleyWire

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # what pipecat's Twilio serializer encodes with, on the server's side

TOKEN = "12345"
# Twilio's own worked example ("Webhooks security"): this URL, these parameters, this token.
TWILIO_EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_EXAMPLE_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+12349013030"),
    ("Digits", "1234"),
    ("From", "+12349013030"),
    ("To", "+18005551212"),
]
TWILIO_EXAMPLE_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
CALL_PARAMS = [("CallSid", "CA42"), ("From", "+15550100"), ("To", "+15550199"), ("CallStatus", "ringing")]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- μ-law: the simulator and the server agree on every sample ---------------------------------


def test_the_simulators_mu_law_matches_the_servers_for_every_sample():
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert ulaw_encode(every_sample) == audioop.lin2ulaw(every_sample, 2)
    every_code = bytes(range(256))
    assert ulaw_decode(every_code) == audioop.ulaw2lin(every_code, 2)


# --- narrowband audio: the phone band passes, nothing above 4 kHz, 3 ms of delay -------------------


def tone(frequency_hz: float, rate: int, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (10000 * np.sin(2 * np.pi * frequency_hz * t)).astype("<i2").tobytes()


def level_db(pcm: bytes, rate: int, frequency_hz: float | None = None, reference: float = 10000) -> float:
    """The amplitude of one frequency in `pcm` (or of all of it), past its first and last 100 ms,
    in dB re `reference`."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(float)[rate // 10 : -rate // 10]
    if frequency_hz is None:
        amplitude = np.sqrt(2 * np.mean(samples**2))
    else:
        window = np.hanning(len(samples))
        at = np.exp(-2j * np.pi * frequency_hz * np.arange(len(samples)) / rate)
        amplitude = 2 * np.abs(np.sum(window * samples * at)) / np.sum(window)
    return 20 * np.log10(amplitude / reference + 1e-12)


def resampled_in_20ms_chunks(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    resampler, step = LowDelayResampler(), from_rate // 50 * 2
    return b"".join(
        resampler.process(pcm[i : i + step], from_rate, to_rate) for i in range(0, len(pcm), step)
    )


@pytest.mark.parametrize("frequency_hz", [300, 1000, 3400])
def test_the_agents_voice_keeps_the_whole_telephone_band(frequency_hz):
    out = resampled_in_20ms_chunks(tone(frequency_hz, 22050), 22050, 8000)
    assert abs(level_db(out, 8000, frequency_hz)) < 0.5


@pytest.mark.parametrize("frequency_hz", [4200, 6000, 9000])
def test_nothing_above_4khz_folds_back_into_the_phone_band(frequency_hz):
    out = resampled_in_20ms_chunks(tone(frequency_hz, 22050), 22050, 8000)
    assert level_db(out, 8000) < -55


def test_the_callers_voice_at_16khz_has_no_images_above_4khz():
    out = resampled_in_20ms_chunks(tone(3000, 8000), 8000, 16000)
    assert abs(level_db(out, 16000, 3000)) < 0.5
    assert level_db(out, 16000, 5000) < -60, "the image of 3 kHz at 5 kHz is gone"


def test_resampling_delays_the_audio_by_3ms_only():
    impulse = np.zeros(22050, dtype="<i2")
    impulse[11025] = 20000  # at 0.5 s
    out = resampled_in_20ms_chunks(impulse.tobytes(), 22050, 8000)
    assert np.argmax(np.abs(np.frombuffer(out, dtype="<i2"))) == 4000, "in place: nothing shifted"
    assert len(out) / 2 >= 8000 - 8000 * 0.004, "all but the last 4 ms is out once the input is in"


# --- the webhook ---------------------------------------------------------------------------------


def webhook(settings: Settings, ready: bool = True) -> TestClient:
    app = create_app(settings)
    if ready:
        app.state.parley.engines = object()  # the route only asks whether the models are loaded
    return TestClient(app)


def post_call(
    client: TestClient, params=CALL_PARAMS, signature: str | None = None, url: str = "/twilio/voice"
):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return client.post(url, content=urlencode(params), headers=headers)


def test_twilios_documented_example_signature_is_reproduced():
    assert twilio_signature(TOKEN, TWILIO_EXAMPLE_URL, TWILIO_EXAMPLE_PARAMS) == TWILIO_EXAMPLE_SIGNATURE
    check_signature(
        TOKEN, TWILIO_EXAMPLE_SIGNATURE, TWILIO_EXAMPLE_URL, list(reversed(TWILIO_EXAMPLE_PARAMS))
    )


def test_an_incoming_call_is_connected_to_the_media_stream_on_the_requests_host():
    response = post_call(webhook(Settings(twilio_auth_token="")))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert (
        '<Response><Connect><Stream url="wss://testserver/twilio/media"></Stream></Connect></Response>'
        in response.text
    ), "without an auth token there is no stream token to hand out"


def test_the_stream_url_follows_the_public_url_behind_a_proxy():
    response = post_call(webhook(Settings(public_url="http://localhost:8000/parley/")))
    assert 'url="ws://localhost:8000/parley/twilio/media"' in response.text
    response = post_call(webhook(Settings(public_url="https://voice.example.com")))
    assert 'url="wss://voice.example.com/twilio/media"' in response.text


def test_a_call_while_the_models_load_is_told_the_lines_are_busy():
    response = post_call(webhook(Settings(), ready=False))
    assert response.status_code == 200
    assert "<Say>" in response.text and "busy" in response.text and "<Hangup/>" in response.text
    assert "<Stream" not in response.text


def test_a_correctly_signed_call_is_answered_with_its_own_stream_token():
    client = webhook(Settings(twilio_auth_token=TOKEN))
    signature = twilio_signature(TOKEN, "http://testserver/twilio/voice", CALL_PARAMS)
    response = post_call(client, signature=signature)
    assert response.status_code == 200
    parameters = {
        p.get("name"): p.get("value") for p in ElementTree.fromstring(response.text).iter("Parameter")
    }
    assert parameters == {STREAM_TOKEN_PARAMETER: stream_token(TOKEN, "CA42")}


def test_only_the_calls_own_token_lets_its_stream_in():
    token = {STREAM_TOKEN_PARAMETER: stream_token(TOKEN, "CA42")}
    assert stream_token_ok(TOKEN, "CA42", token)
    assert not stream_token_ok(TOKEN, "CA43", token)  # another call's token
    assert not stream_token_ok("another", "CA42", token)  # minted with another account's token
    assert not stream_token_ok(TOKEN, "CA42", {})


def test_unsigned_and_tampered_calls_are_refused():
    client = webhook(Settings(twilio_auth_token=TOKEN))
    signature = twilio_signature(TOKEN, "http://testserver/twilio/voice", CALL_PARAMS)
    unsigned = post_call(client)
    tampered = post_call(
        client, params=[*CALL_PARAMS[:-1], ("CallStatus", "in-progress")], signature=signature
    )
    wrong_token = post_call(
        client, signature=twilio_signature("another", "http://testserver/twilio/voice", CALL_PARAMS)
    )

    assert unsigned.status_code == 403 and "X-Twilio-Signature" in unsigned.text
    assert tampered.status_code == 403 and "does not match" in tampered.text
    assert wrong_token.status_code == 403
    assert "PARLEY_PUBLIC_URL" in tampered.text, "the refusal says what to check"
    metrics = client.get("/metrics").text
    assert 'parley_errors_total{code="bad_signature"} 3.0' in metrics


def test_behind_a_proxy_the_signature_is_checked_against_the_public_url():
    client = webhook(Settings(twilio_auth_token=TOKEN, public_url="https://voice.example.com"))
    signed_for_public = twilio_signature(TOKEN, "https://voice.example.com/twilio/voice", CALL_PARAMS)
    signed_for_internal = twilio_signature(TOKEN, "http://testserver/twilio/voice", CALL_PARAMS)
    assert post_call(client, signature=signed_for_public).status_code == 200
    refused = post_call(client, signature=signed_for_internal)
    assert refused.status_code == 403 and "https://voice.example.com/twilio/voice" in refused.text


def test_an_open_webhook_is_warned_about_once_at_start_up(caplog):
    with caplog.at_level(logging.WARNING, logger="voice.server"):
        create_app(Settings(twilio_auth_token=""))
        create_app(Settings(twilio_auth_token=TOKEN))
    warnings_about_it = [r for r in caplog.records if "PARLEY_TWILIO_AUTH_TOKEN" in r.getMessage()]
    assert len(warnings_about_it) == 1 and warnings_about_it[0].levelno == logging.WARNING


def test_keypad_replies_must_be_keypad_keys():
    assert Settings().dtmf_replies == DEFAULT_DTMF_REPLIES
    with pytest.raises(ValueError, match="not a keypad key"):
        Settings(dtmf_replies={"A": "hello"})
    with pytest.raises(ValueError, match="https://parley.example.com"):
        Settings(public_url="parley.example.com")


# --- Media Streams messages ------------------------------------------------------------------------


def start_message(**start) -> str:
    return json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", **start}})


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ('{"event": "dance"}', "unknown_event"),
        ('["media"]', "invalid_message"),
        ('{"event": "media", "media": {}}', "invalid_message"),
        ('{"event": "mark", "mark": {"name": ""}}', "invalid_message"),
        (b"\x00\x01", "invalid_message"),
    ],
)
def test_a_bad_message_is_named_by_its_fault(raw, code):
    with pytest.raises(ProtocolError) as caught:
        parse_stream_message(raw)
    assert caught.value.code == code and not caught.value.fatal


def test_a_start_message_gives_the_stream_the_call_and_the_custom_parameters():
    message = parse_stream_message(start_message(customParameters={"campaign": "spring"}))
    assert message.start.stream_sid == "MZ1" and message.start.call_sid == "CA1"
    assert message.start.custom_parameters == {"campaign": "spring"}


def test_media_that_is_not_base64_is_refused():
    assert decode_payload(b64(b"\xff" * 160)) == b"\xff" * 160
    with pytest.raises(ProtocolError) as caught:
        decode_payload("this is not base64!")
    assert caught.value.code == "invalid_base64"


def test_a_mark_comes_back_with_its_place_in_the_answer_unless_a_clear_dropped_it():
    book = MarkBook()
    first, second = book.add(3, 0.0), book.add(3, 1250.0)
    assert book.echoed(first) == (3, 0.0)
    book.clear()
    assert book.echoed(second) is None, "sent back by the clear: its audio was never played"
    with pytest.raises(ProtocolError) as caught:
        book.echoed("made-up")
    assert caught.value.code == "unknown_mark"


# --- the phone wire, with a fake session -----------------------------------------------------------


class FakeSocket:
    """A WebSocket as the server sees it: what was sent, and a queue of what the client sends."""

    def __init__(self, incoming: list[str] = ()):
        self.client_state = WebSocketState.CONNECTED
        self.sent: list[dict] = []
        self._incoming = list(incoming)

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def receive(self) -> dict:
        if not self._incoming:
            return {"type": "websocket.disconnect"}
        return {"type": "websocket.receive", "text": self._incoming.pop(0)}


class FakeSession:
    def __init__(self, audio_allowed: bool = True):
        self.errors: list[str] = []
        self.typed: list[tuple[str, str | None]] = []
        self.ending_reasons: list[str] = []
        self.stopped: list[str] = []
        self.played: list[tuple[int, float]] = []
        self.position = (1, 0.0)
        self.audio_allowed = audio_allowed

    # What the wire's serializer tells the session (voice/transports/wire.WireHooks).
    output_sample_rate = 22050
    echo_guard = None

    async def client_error(self, error):
        self.errors.append(error.code)

    async def typed_text(self, text, reply=None):
        assert reply is not None, "a phone call has no typed turns: only keys, each with its reply"
        self.typed.append((text, reply))

    def ending(self, reason):
        self.ending_reasons.append(reason)

    async def stop(self, reason):
        self.stopped.append(reason)

    def audio_sent(self, _nbytes) -> bool:
        return self.audio_allowed

    async def wait_for_floor(self):
        return None

    def playback_reported(self, turn_id, played_ms):
        self.played.append((turn_id, played_ms))

    def playback_position(self):
        return self.position

    def answer_cut_off(self):
        return not self.audio_allowed


async def phone_wire(session: FakeSession, dtmf_replies: dict[str, str] | None = None):
    dtmf_replies = dtmf_replies or {}
    socket = FakeSocket()
    wire = TwilioWire(socket, StreamStart(streamSid="MZ1", callSid="CA1"), dtmf_replies)
    serializer = wire.serializer(session)
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=16000))  # as the transport does
    return wire, serializer, socket


def media(payload: bytes) -> str:
    return json.dumps(
        {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": b64(payload)}}
    )


async def test_the_callers_8khz_mu_law_reaches_the_pipeline_as_16khz_pcm():
    session = FakeSession()
    _wire, serializer, _socket = await phone_wire(session)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype("<i2").tobytes()
    frames = [
        await serializer.deserialize(media(ulaw_encode(tone[i : i + 320]))) for i in range(0, len(tone), 320)
    ]
    audio = b"".join(f.audio for f in frames if f is not None)
    assert all(f is None or (isinstance(f, InputAudioRawFrame) and f.sample_rate == 16000) for f in frames)
    assert 0 <= 16000 - len(audio) / 2 < 80, "1 s at 8 kHz is 1 s at 16 kHz, all but the last 5 ms already"
    spectrum = np.abs(np.fft.rfft(np.frombuffer(audio, dtype="<i2")[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 5, "the same tone came through"


async def test_bad_messages_are_reported_and_the_call_goes_on():
    session = FakeSession()
    _wire, serializer, _socket = await phone_wire(session)
    for raw in ("not json", '{"event": "dance"}', '{"event": "media", "media": {"payload": "***"}}'):
        assert await serializer.deserialize(raw) is None
    frame = await serializer.deserialize(media(b"\x7f" * 1600))
    assert session.errors == ["invalid_json", "unknown_event", "invalid_base64"]
    assert isinstance(frame, InputAudioRawFrame), "audio after the bad messages still gets through"


@pytest.mark.looptime  # the hang-up grace, on a virtual clock
async def test_keys_marks_and_stop_reach_the_session():
    session = FakeSession()
    wire, serializer, _socket = await phone_wire(session, {"*": "Back to the menu."})
    session.position = (2, 0.0)
    mark = json.loads(
        await serializer.serialize(
            OutputTransportMessageFrame(message={"type": "agent.text", "turn_id": 2, "text": "Hi."})
        )
    )
    await serializer.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": "*"}}))
    await serializer.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}}))  # no reply set
    await serializer.deserialize(json.dumps({"event": "mark", "mark": mark["mark"]}))
    await serializer.deserialize(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}}))
    after_stop = await serializer.deserialize(media(b"\x7f" * 160))

    assert mark["event"] == "mark" and mark["streamSid"] == "MZ1"
    assert session.typed == [(KEYPAD_TURN_TEXT.format(digit="*"), "Back to the menu.")], (
        "a key with a reply is a turn answered with it; a key without one changes nothing"
    )
    assert session.played == [(2, 0.0)], "the mark's echo says the caller has heard the answer up to it"
    assert session.ending_reasons == [EndReason.HUNG_UP], "the reason is known before the socket closes"
    assert after_stop is None
    assert session.stopped == [], "the far end's close of the socket ends the session first, if it comes"
    await asyncio.sleep(HANG_UP_CLOSE_GRACE_S + 0.1)
    assert session.stopped == [EndReason.HUNG_UP], "and if it does not, the session stops anyway"


async def test_the_agents_voice_goes_out_as_8khz_mu_law_media_on_the_stream():
    session = FakeSession()
    _wire, serializer, _socket = await phone_wire(session)
    voice = (8000 * np.sin(2 * np.pi * 300 * np.arange(882) / 22050)).astype("<i2").tobytes()  # 40 ms
    sent = [json.loads(await serializer.serialize(OutputAudioRawFrame(voice, 22050, 1))) for _ in range(10)]
    assert all(m["event"] == "media" and m["streamSid"] == "MZ1" for m in sent), (
        "every chunk goes out at once"
    )
    ulaw = b"".join(base64.b64decode(m["media"]["payload"]) for m in sent)
    assert 0 <= 10 * 320 - len(ulaw) < 40, "400 ms at 8 kHz, one byte a sample, all but the last 5 ms already"
    assert np.abs(np.frombuffer(ulaw_decode(ulaw), dtype="<i2")).max() > 4000


async def test_no_clear_at_every_turn_no_rest_hang_up_and_no_audio_once_cut_off():
    session = FakeSession(audio_allowed=False)
    _wire, serializer, _socket = await phone_wire(session)
    assert await serializer.serialize(InterruptionFrame()) is None
    assert await serializer.serialize(EndFrame()) is None
    assert await serializer.serialize(OutputAudioRawFrame(bytes(1764), 22050, 1)) is None
    other = OutputTransportMessageFrame(message={"type": "turn.trace", "turn_id": 1, "stages_ms": {}})
    assert await serializer.serialize(other) is None, "Parley's own events are not sent to Twilio"


async def test_an_agent_held_or_cut_off_is_cleared_and_an_answers_end_is_marked():
    session = FakeSession()
    wire, _serializer, socket = await phone_wire(session)
    session.position = (4, 3000.0)
    await wire.send(protocol.UserTranscript(turn_id=4, text="hello"))
    await wire.send(protocol.AgentAudioDone(turn_id=4))
    await wire.send(protocol.AgentPaused(turn_id=4))
    await wire.send(protocol.AgentInterrupted(turn_id=4, heard_text="Hi—"))

    assert [m["event"] for m in socket.sent] == ["mark", "clear", "clear"]
    assert all(m["streamSid"] == "MZ1" for m in socket.sent)


async def test_messages_before_start_are_reported_and_the_stream_still_starts():
    socket = FakeSocket(
        [
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            media(b"\xff" * 160),
            "garbage",
            start_message(),
        ]
    )
    errors: list[str] = []
    start = await await_stream_start(socket, lambda exc: errors.append(exc.code))
    assert start is not None and start.stream_sid == "MZ1"
    assert errors == ["not_started", "invalid_json"]


async def test_a_stream_in_another_audio_format_is_refused():
    socket = FakeSocket([start_message(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 16000})])
    errors: list[str] = []
    assert await await_stream_start(socket, lambda exc: errors.append(exc.code)) is None
    assert errors == ["unsupported_media_format"]


# --- the session's side: keys and hanging up, with a fake pipeline ----------------------------------


class FakeWorker:
    def __init__(self, session: Session | None = None):
        self.queued: list = []
        self.cancelled = False
        self._session = session

    async def queue_frame(self, frame) -> None:
        self.queued.append(frame)
        if isinstance(frame, InterruptionWorkerFrame) and self._session is not None:
            await self._session.interrupted()

    async def cancel(self) -> None:
        self.cancelled = True

    def has_finished(self) -> bool:
        return self.cancelled


def fake_session(**settings) -> tuple[Session, FakeWorker, FakeSocket]:
    socket = FakeSocket()
    config = Settings(**settings)
    wire = TwilioWire(socket, StreamStart(streamSid="MZ1", callSid="CA1"), config.dtmf_replies)
    engines = SimpleNamespace(tts=SimpleNamespace(sample_rate=22050))
    session = Session(wire, engines, config)
    worker = FakeWorker(session)
    session._pipeline = ConversationPipeline(
        worker,
        transport=None,
        context=SimpleNamespace(get_messages=lambda: []),
        knowledge=None,
        prefill=None,
        flow=session.flow,
    )
    return session, worker, socket


def test_whisper_reads_its_whole_window_for_telephone_audio_and_over_the_agents_voice():
    flow = TurnFlow(lambda: 0)
    phone, browser = needs_full_window(8000, flow), needs_full_window(16000, flow)
    assert phone() and not browser(), "a browser's question gets the short window"
    flow.turn_ended("When do you open?")
    flow.audio_sent()  # the agent is heard: a sound now may be its own echo
    assert browser()
    flow.answer_started()
    flow.audio_done()
    assert not browser(), "and once it is quiet, the short window again"


def test_telephone_audio_is_heard_with_the_wider_beam():
    phone = TwilioWire(FakeSocket(), StreamStart(streamSid="MZ1", callSid="CA1"), {})
    browser, narrow_client = ParleyWire(FakeSocket(), 16000), ParleyWire(FakeSocket(), 8000)
    assert stt_beam_size(phone.input_sample_rate, narrowband_beam_size=5) == 5
    assert stt_beam_size(narrow_client.input_sample_rate, 5) == 5, "8 kHz over /ws is the same telephone band"
    assert stt_beam_size(browser.input_sample_rate, 5) is None, "16 kHz keeps the engine's own (greedy) beam"


async def settle(session: Session) -> None:
    await session._pipeline.typed_turns_settled()


async def press(session: Session, digit: str) -> None:
    """A key pressed on the phone, through the wire's serializer, until its turn is queued."""
    serializer = session.wire.serializer(session)
    await serializer.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": digit}}))
    await settle(session)


async def test_a_key_with_a_reply_is_a_turn_answered_with_that_reply_not_by_the_llm():
    session, worker, _socket = fake_session()
    await press(session, "*")
    (appended,) = [f for f in worker.queued if isinstance(f, LLMMessagesAppendFrame)]
    text = appended.messages[0]["content"]
    assert text == KEYPAD_TURN_TEXT.format(digit="*")

    reply = await session.turn_ended(text)  # the turn, as the pipeline hands it to the agent
    assert reply == DEFAULT_DTMF_REPLIES["*"]
    assert session.tracer.current.typed, "a key press has no speech to time"


async def test_a_key_cuts_off_the_agent_and_the_caller_stops_hearing_it():
    session, worker, socket = fake_session(dtmf_replies={"0": "Transferring you."})
    session.flow.turn_ended("What time do you open?")  # the agent is mid-answer, and heard
    session.flow.audio_sent()
    await press(session, "0")
    assert isinstance(worker.queued[0], InterruptionWorkerFrame)
    assert isinstance(worker.queued[1], LLMMessagesAppendFrame)
    assert [m["event"] for m in socket.sent] == ["clear"]


@pytest.mark.looptime  # the hang-up grace, on a virtual clock
async def test_a_hang_up_stops_the_session_with_its_reason():
    session, worker, _socket = fake_session()
    serializer = session.wire.serializer(session)
    await serializer.deserialize(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}}))
    assert session.end_reason == EndReason.HUNG_UP and not worker.cancelled
    await asyncio.sleep(HANG_UP_CLOSE_GRACE_S + 0.1)
    assert worker.cancelled and session.end_reason == EndReason.HUNG_UP


# --- the simulator, acting as Twilio, against a fake server ------------------------------------------


async def fake_parley(script):
    """A server on a free port that runs `script(ws, received)` for one call."""
    received: list[dict] = []

    async def handler(ws):
        async def read():
            async for raw in ws:
                received.append({**json.loads(raw), "_at": time.monotonic()})

        reader = asyncio.create_task(read())
        try:
            await script(ws, received)
        finally:
            reader.cancel()

    server = await websockets.serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/twilio/media", received


async def test_the_simulator_opens_like_twilio_and_sends_20ms_mu_law_frames_in_real_time():
    async def listen(ws, received):
        await asyncio.sleep(1.0)

    server, url, received = await fake_parley(listen)
    async with server, PhoneCall(url, custom_parameters={"demo": "yes"}) as phone:
        await phone.press("#")
        await phone.pause(0.6)
    kinds = [m["event"] for m in received]
    assert kinds[:2] == ["connected", "start"]
    start = received[1]["start"]
    assert start["streamSid"] == phone.stream_sid and start["customParameters"] == {"demo": "yes"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    frames = [m for m in received if m["event"] == "media"]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in frames)
    span_s = frames[-1]["_at"] - frames[0]["_at"]
    assert abs(span_s - 0.02 * (len(frames) - 1)) < 0.1, "one frame every 20 ms"
    assert {"event": "dtmf"}.items() <= next(m for m in received if m["event"] == "dtmf").items()
    assert next(m for m in received if m["event"] == "dtmf")["dtmf"]["digit"] == "#"
    assert kinds[-1] == "stop"


async def test_the_simulator_plays_in_real_time_answers_marks_and_drops_audio_on_clear():
    second = ulaw_encode((6000 * np.sin(np.arange(8000) / 3)).astype("<i2").tobytes())

    async def speak_then_clear(ws, received):
        while not any(m["event"] == "start" for m in received):
            await asyncio.sleep(0.01)
        sid = next(m for m in received if m["event"] == "start")["start"]["streamSid"]
        for i in range(0, 2400, 160):  # 300 ms, then a mark, then 1 s more, then a clear at 600 ms
            await ws.send(
                json.dumps(
                    {"event": "media", "streamSid": sid, "media": {"payload": b64(second[i : i + 160])}}
                )
            )
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "after-300ms"}}))
        for i in range(2400, 8000, 160):
            await ws.send(
                json.dumps(
                    {"event": "media", "streamSid": sid, "media": {"payload": b64(second[i : i + 160])}}
                )
            )
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "end"}}))
        await asyncio.sleep(0.6)
        await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
        await asyncio.sleep(0.5)

    server, url, received = await fake_parley(speak_then_clear)
    async with server, PhoneCall(url) as phone:
        await phone.pause(1.3)
    marks = [m for m in received if m["event"] == "mark"]
    first_audio = phone.log.first_audio_after(0)
    assert [m["mark"]["name"] for m in marks] == ["after-300ms", "end"]
    assert 0.2 < marks[0]["_at"] - first_audio < 0.45, "sent back once the 300 ms before it had played"
    assert marks[1]["_at"] - first_audio < 0.8, "the clear sent the last mark back at once"
    heard_ms = 1000 * len(phone.heard) / 2 / 8000
    assert 450 < heard_ms < 750, f"{heard_ms:.0f} ms played: only what came before the clear"
    assert phone.log.dropped_by_clear_ms > 250


def test_keys_are_scheduled_from_the_command_line():
    assert parse_dtmf("0@9.5, *@2") == [("*", 2.0), ("0", 9.5)]
    with pytest.raises(ValueError, match="KEY@SECONDS"):
        parse_dtmf("star@2")


def _phone_args(**given) -> SimpleNamespace:
    defaults = dict(
        wav=None, url="ws://127.0.0.1:9/twilio/media", out=None, dtmf=None, keys=False, mic=False,
        quiet=3.0, timeout=5.0, auth_token=None,
    )  # fmt: skip
    return SimpleNamespace(**{**defaults, **given})


def test_a_microphone_call_without_portaudio_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if it were not installed
    assert phone_main(_phone_args(mic=True)) == 2
    error = capsys.readouterr().err
    assert "microphone needs the sounddevice package" in error and "pip install sounddevice" in error


def test_a_microphone_call_is_live_so_a_wav_question_is_refused(capsys):
    assert phone_main(_phone_args(mic=True, wav="question.wav")) == 2
    assert "--mic is a live call" in capsys.readouterr().err


# --- `parley phone --mic`, with fake sound devices -------------------------------------------------


class FakeDevice:
    overflows = 0
    dropped_ms = 0.0

    def __init__(self):
        self.error: Exception | None = None
        self.on_error = None
        self.started = self.stopped = False

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True

    def fail(self, error: Exception):
        self.error = error
        self.on_error()


class FakeMicrophone(FakeDevice):
    LOUD = (8000 * np.sin(np.arange(160) / 2)).astype("<i2").tobytes()

    def frame(self):
        return self.LOUD


class FakeSpeaker(FakeDevice):
    def __init__(self):
        super().__init__()
        self.played: list[bytes] = []

    def play(self, pcm):
        self.played.append(pcm)


@pytest.fixture
def sound_card(monkeypatch):
    """Fake devices in place of PortAudio's, and a keyboard nobody types on."""
    import clients.sound

    made: dict[str, FakeDevice] = {}
    monkeypatch.setattr(clients.sound, "Microphone", lambda: made.setdefault("mic", FakeMicrophone()))
    monkeypatch.setattr(clients.sound, "Speaker", lambda: made.setdefault("speaker", FakeSpeaker()))
    read_end, write_end = os.pipe()
    keyboard = os.fdopen(read_end)
    monkeypatch.setattr(sys, "stdin", keyboard)
    yield made
    os.close(write_end)  # the keyboard thread sees the end of input and finishes


async def test_a_live_call_ends_when_the_other_end_hangs_up_though_no_key_was_typed(sound_card):
    async def hang_up_soon(ws, received):
        await asyncio.sleep(0.5)
        await ws.close()

    server, url, received = await fake_parley(hang_up_soon)
    async with server:
        # The whole command, event loop included: a thread still blocked on the keyboard would keep
        # it from returning (a timeout here, not a hung suite).
        done = asyncio.to_thread(phone_main, _phone_args(mic=True, url=url))
        assert await asyncio.wait_for(done, timeout=10) == 0
    mic, speaker = sound_card["mic"], sound_card["speaker"]
    assert mic.started and mic.stopped and speaker.started and speaker.stopped
    sent = [ulaw_decode(base64.b64decode(m["media"]["payload"])) for m in received if m["event"] == "media"]
    assert sent and all(np.abs(np.frombuffer(pcm, "<i2")).max() > 4000 for pcm in sent), (
        "the microphone went out"
    )
    assert speaker.played and all(len(pcm) == 320 for pcm in speaker.played), "20 ms to the speaker each tick"


async def test_a_sound_device_failing_mid_call_ends_it_and_says_so(sound_card):
    async def listen(ws, received):
        await ws.wait_closed()

    server, url, _received = await fake_parley(listen)

    async def unplug_soon():
        await asyncio.sleep(0.5)
        sound_card["mic"].fail(OSError("device unavailable"))

    async with server:
        unplugging = asyncio.create_task(unplug_soon())
        with pytest.raises(SoundUnavailable, match="failed during the call: device unavailable"):
            await asyncio.wait_for(call_from_microphone(url), timeout=10)
        await unplugging
    assert sound_card["mic"].stopped and sound_card["speaker"].stopped


def test_a_microphone_call_without_the_portaudio_library_says_what_to_install(monkeypatch, capsys):
    real_import = __import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")  # what sounddevice raises without it
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr("builtins.__import__", no_portaudio)
    assert phone_main(_phone_args(mic=True)) == 2
    assert "apt-get install libportaudio2" in capsys.readouterr().err
