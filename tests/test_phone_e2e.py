"""End to end over the phone path, with the real default models: the simulator (clients/phone.py)
calls the server as Twilio would, and what the caller hears is transcribed back.

One server for the module, with a Twilio auth token set, so the webhook's signature check is the
real one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from urllib.parse import urlencode

import httpx
import numpy as np
import pytest
import websockets

from clients.phone import RATE, PhoneCall, new_call_sid, ring
from tests.conftest import silence, speak, start_server, stop_server
from voice import catalogue
from voice.audio import resample_pcm16
from voice.stt import WHISPER_SAMPLE_RATE, WhisperEngine
from voice.transports.twilio_webhook import twilio_signature

pytestmark = pytest.mark.e2e

TOKEN = "e2e-test-auth-token"
ANSWER_TIMEOUT_S = 90  # model turns on a shared 2-core machine
QUESTIONS = {
    q["id"]: q
    for q in json.loads((pathlib.Path(__file__).parent.parent / "benchmarks" / "questions.json").read_text())
}
LONG_QUESTION = "What are your opening hours during the week?"  # the week's hours: room to cut in
# Into the agent's answer: past its first words, well before its end. The answer is the few facts
# that answer (two or three sentences, ~6-8 s), not a whole passage read out, so the cut comes early.
CUT_IN_AFTER_S = 1.5
# How long the caller stays on the line for the server to decide the words cut the agent off.
VERDICT_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def phone_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phone")
    running = start_server(folder, {"PARLEY_TWILIO_AUTH_TOKEN": TOKEN})
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def media_url(phone_server) -> str:
    return phone_server.url.replace("http://", "ws://") + "/twilio/media"


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    """A second Whisper in the test process, to hear what the caller heard (its whole window: the
    judge does not change with the server)."""
    return WhisperEngine.load(catalogue.ensure("whisper-base"), short_window=False)


async def answered_call(
    media_url: str, custom_parameters: dict[str, str] | None = None, **kwargs
) -> PhoneCall:
    """A call as Twilio makes it: the signed webhook answers it, then its stream opens with the
    parameters the TwiML gave (the server has an auth token, so it lets only such streams in)."""
    call_sid = new_call_sid()
    given = await ring(media_url, TOKEN, call_sid)
    return PhoneCall(
        media_url, custom_parameters={**(custom_parameters or {}), **given}, call_sid=call_sid, **kwargs
    )


def heard(whisper: WhisperEngine, pcm8k: bytes) -> str:
    return whisper.transcribe_pcm16(resample_pcm16(pcm8k, RATE, WHISPER_SAMPLE_RATE)).text


def states_fact(text: str, question: dict) -> bool:
    return any(expected in text.lower() for expected in question["expect_any"])


async def sessions(server) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{server.url}/health", timeout=5)).json()["sessions"]


async def wait_for_no_sessions(server, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while await sessions(server) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await sessions(server) == 0, "the call's session is still open"


async def test_a_caller_asks_by_phone_and_hears_the_right_fact(phone_server, media_url, whisper):
    question = QUESTIONS["saturday-open"]
    async with await answered_call(media_url) as phone:
        # A caller draws breath once the call connects; Silero needs a few frames to settle.
        await phone.say(silence(0.5, RATE) + speak(question["question"], RATE))
        await phone.wait_until_quiet(phone.log.speech_ends[-1], timeout_s=ANSWER_TIMEOUT_S)
    said = heard(whisper, bytes(phone.heard))
    assert states_fact(said, question), f"the caller heard {said!r}"
    assert not phone.log.events("clear"), "nobody talked over the agent"
    print(f"\nphone voice-to-voice (client): {phone.client_voice_to_voice_ms():.0f} ms")


# ALSA's `file` plugin as this machine's sound card: the microphone reads a file, the speaker
# writes one; both stand in front of the `null` device, so PortAudio sees ordinary ALSA devices.
ASOUNDRC = """
pcm.!default {{ type asym capture.pcm "mic" playback.pcm "speaker" }}
pcm.mic {{ type file slave.pcm "null" file "/dev/null" infile "{mic}" format "raw" }}
pcm.speaker {{ type file slave.pcm "null" file "{speaker}" format "raw" }}
"""
# The agent has finished once its speaker has been silent this long: longer than the pause between
# two of its sentences on a busy 2-core machine.
QUIET_AFTER_S = 4.0
LOUD = 500  # a sample above this (of 32767) is the agent speaking, not silence
SPEAKER_POLL_S = 0.5  # how often the test looks at what the speaker has played
HANG_UP_WITHIN_S = 15  # `q` typed → the command has exited, even on a loaded machine


def sound_card(home) -> tuple[dict[str, str], int, pathlib.Path, pathlib.Path]:
    """An ALSA configuration in `home` whose default devices are files; returns the environment
    that selects it, the rate PortAudio opens them at, and the two files."""
    mic, speaker = home / "mic.raw", home / "speaker.raw"
    (home / ".asoundrc").write_text(ASOUNDRC.format(mic=mic, speaker=speaker))
    env = {**os.environ, "HOME": str(home)}
    probe = (
        "import sounddevice as sd; "
        "print(*(int(sd.query_devices(kind=k)['default_samplerate']) for k in ('input', 'output')))"
    )
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    input_rate, output_rate = map(int, found.stdout.split())
    assert input_rate == output_rate, "the test reads both files at one rate"
    return env, input_rate, mic, speaker


def read_if_there(path: pathlib.Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


async def wait_for_speaker_to_answer(speaker: pathlib.Path, rate: int, after: int, timeout_s: float) -> int:
    """Once the speaker has played something loud past sample `after` and then been quiet for
    QUIET_AFTER_S, return where its audio now ends (in samples)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(SPEAKER_POLL_S)
        played = np.frombuffer(await asyncio.to_thread(read_if_there, speaker), dtype="<i2")
        loud = np.flatnonzero(np.abs(played[after:].astype(np.int32)) > LOUD)
        if loud.size and len(played) - (after + loud[-1]) > QUIET_AFTER_S * rate:
            return len(played)
    raise TimeoutError(f"the speaker played no answer within {timeout_s} s")


async def test_a_caller_on_the_computers_sound_card_talks_and_types_keys(
    phone_server, media_url, whisper, tmp_path
):
    """`parley phone --mic`: the question comes from the microphone through PortAudio, the answer
    reaches the speaker, a key typed on the keyboard is pressed, and `q` hangs up."""
    env, rate, mic, speaker = sound_card(tmp_path)
    question = QUESTIONS["saturday-open"]
    mic.write_bytes(bytes(rate * 2) + speak(question["question"], rate))  # 1 s of quiet, then the question
    parley = pathlib.Path(sys.executable).parent / "parley"
    command = [str(parley), "phone", "--mic", "--url", media_url, "--auth-token", TOKEN]
    log = tmp_path / "phone.log"  # a file, not a pipe: nothing the command prints can block it
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        answered = await wait_for_speaker_to_answer(speaker, rate, 0, ANSWER_TIMEOUT_S)
        process.stdin.write(b"*\n")
        menu_read = await wait_for_speaker_to_answer(speaker, rate, answered, ANSWER_TIMEOUT_S)
        process.stdin.write(b"q\n")
        await asyncio.wait_for(process.wait(), HANG_UP_WITHIN_S)
        assert process.returncode == 0, log.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    played = await asyncio.to_thread(speaker.read_bytes)
    answer = whisper.transcribe_pcm16(resample_pcm16(played[: 2 * answered], rate, WHISPER_SAMPLE_RATE)).text
    menu = whisper.transcribe_pcm16(
        resample_pcm16(played[2 * answered : 2 * menu_read], rate, WHISPER_SAMPLE_RATE)
    ).text
    # Whisper hears the 8 kHz speaker audio imperfectly ("open for my name to 5pm" for "open from 9
    # am to 5 pm"): the Saturday hours sentence is known by its day and closing time as well.
    saturday_hours = "saturday" in answer.lower() and re.search(r"\b(?:5|five)(?:\b|pm)", answer.lower())
    assert states_fact(answer, question) or saturday_hours, f"the speaker played {answer!r}"
    assert "menu" in menu.lower(), f"after * the speaker played {menu!r}"
    print(f"\nthe speaker played {answer!r}, then after * {menu!r}")
    await wait_for_no_sessions(phone_server)


async def test_talking_over_the_agent_makes_twilio_drop_its_audio(phone_server, media_url):
    async with await answered_call(media_url) as phone:
        await phone.say(speak(LONG_QUESTION, RATE))
        first = await phone.wait_for("media", phone.log.speech_ends[-1], ANSWER_TIMEOUT_S)
        await phone.pause(CUT_IN_AFTER_S - (time.monotonic() - first.at))
        cut_in = time.monotonic()
        await phone.say(speak("Wait, stop please.", RATE))
        clear = await phone.wait_for("clear", since=cut_in, timeout_s=30)
        await phone.pause(1.0)
        after = [h for h in phone.log.events("media", clear.at) if h.at < clear.at + 1.0]
        audio_after_ms = sum(len(base64.b64decode(h.message["media"]["payload"])) for h in after) / 8
        # The clear holds the agent at once; the cut-off is decided when Whisper has heard the words,
        # which takes seconds while the LLM is still writing the answer on the same two cores.
        for _ in range(int(VERDICT_TIMEOUT_S / 0.25)):
            if "cut off; the caller heard" in phone_server.log():
                break
            await phone.pause(0.25)

    assert clear.at - cut_in < 1.5, f"the clear came {clear.at - cut_in:.1f} s after the caller began"
    assert clear.message["streamSid"] == phone.stream_sid
    # At most the one 40 ms piece that was on its way as the clear went out.
    assert audio_after_ms <= 40, f"{audio_after_ms:.0f} ms of the agent after the clear"
    cut = re.search(r"cut off; the caller heard '([^']*)'", phone_server.log())
    assert cut, "the server knows the agent was cut off"
    # The caller heard ~2.5 s of the answer: a few words, not the whole week's hours.
    assert 1 <= len(cut[1].split()) <= 15, f"heard_text {cut[1]!r}"


async def test_star_reads_the_menu_and_zero_says_it_is_transferring(phone_server, media_url, whisper):
    async with await answered_call(media_url) as phone:
        await phone.pause(0.5)
        pressed = time.monotonic()
        await phone.press("*")
        await phone.wait_until_quiet(pressed, timeout_s=ANSWER_TIMEOUT_S)
        menu = bytes(phone.heard)
        pressed = time.monotonic()
        await phone.press("0")
        await phone.wait_until_quiet(pressed, timeout_s=ANSWER_TIMEOUT_S)
        transfer = bytes(phone.heard[len(menu) :])
    assert "menu" in heard(whisper, menu).lower()
    assert "transferring" in heard(whisper, transfer).lower()


async def test_hanging_up_ends_the_session_cleanly(phone_server, media_url):
    await wait_for_no_sessions(phone_server)
    async with await answered_call(media_url, custom_parameters={"test": "hang-up"}) as phone:
        await phone.pause(1.0)
        assert await sessions(phone_server) == 1
        await phone.hang_up()
    await wait_for_no_sessions(phone_server)
    log = phone_server.log()
    assert re.search(r"session \w+ \(phone\): ended after 0 turns: hung_up", log), log[-2000:]
    assert "Traceback" not in log and " ERROR " not in log
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{phone_server.url}/metrics", timeout=5)).text
    assert 'parley_sessions_ended_total{reason="hung_up"}' in metrics


async def test_a_dropped_line_ends_the_session_too(phone_server, media_url):
    await wait_for_no_sessions(phone_server)
    async with await answered_call(media_url) as phone:
        await phone.pause(0.5)
        await phone.drop()  # no stop: the connection just goes
    await wait_for_no_sessions(phone_server)
    assert re.search(r"session \w+ \(phone\): ended after 0 turns: disconnected", phone_server.log())


def signed_post(server, params: list[tuple[str, str]], signature: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/twilio/voice",
        content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
        timeout=5,
    )


def test_the_webhook_answers_a_signed_call_and_refuses_a_tampered_one(phone_server):
    params = [
        ("AccountSid", "AC" + "1" * 32),
        ("CallSid", "CA" + "2" * 32),
        ("From", "+15550100"),
        ("To", "+15550199"),
    ]
    signature = twilio_signature(TOKEN, f"{phone_server.url}/twilio/voice", params)

    answered = signed_post(phone_server, params, signature)
    tampered = signed_post(phone_server, [*params[:-1], ("To", "+15550666")], signature)

    host = phone_server.url.removeprefix("http://")
    assert answered.status_code == 200
    assert f'<Connect><Stream url="wss://{host}/twilio/media">' in answered.text
    assert tampered.status_code == 403 and "X-Twilio-Signature" in tampered.text


async def test_bad_messages_are_logged_and_the_call_goes_on(phone_server, media_url, whisper):
    before_start = (json.dumps({"event": "media", "media": {"payload": "/w=="}}), "{not json")
    async with await answered_call(media_url, preamble=before_start) as phone:
        for raw in (
            json.dumps(
                {"event": "media", "streamSid": phone.stream_sid, "media": {"payload": "%%% not base64"}}
            ),
            json.dumps({"event": "dance", "streamSid": phone.stream_sid}),
            "still not json",
        ):
            await phone.send_raw(raw)
        pressed = time.monotonic()
        await phone.press("0")
        await phone.wait_until_quiet(pressed, timeout_s=ANSWER_TIMEOUT_S)
    assert "transferring" in heard(whisper, bytes(phone.heard)).lower(), "the call went on"
    log = phone_server.log()
    for code in ("not_started", "invalid_json", "invalid_base64", "unknown_event"):
        assert re.search(rf"\b{code}\b", log), f"{code} not logged"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{phone_server.url}/metrics", timeout=5)).text
    assert 'parley_errors_total{code="invalid_base64"} 1.0' in metrics


async def stream_refused(media_url: str, custom_parameters: dict[str, str], call_sid: str) -> int:
    """Open a stream as a stranger would; the close code the server answers with."""
    async with websockets.connect(media_url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "streamSid": "MZ" + "1" * 32,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": custom_parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
        }
        await ws.send(json.dumps({"event": "start", "start": start}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=10)
        return closed.value.rcvd.code


async def test_a_stream_no_signed_webhook_answered_is_refused(phone_server, media_url):
    # No token at all, and another call's token: neither gets a conversation.
    other_call = new_call_sid()
    stolen = await ring(media_url, TOKEN, other_call)
    assert await stream_refused(media_url, {}, new_call_sid()) == 1008
    assert await stream_refused(media_url, stolen, new_call_sid()) == 1008
    assert await sessions(phone_server) == 0
    assert phone_server.log().count("refused: no valid parley_stream_token") == 2
