"""The browser phone at /phone, driven in real headless Chromium with a fake microphone fed from a
WAV file: it calls /twilio/media as Twilio would, with the page's own μ-law codec both ways.

The codec is checked against the Python ones (the simulator's and audioop's, which the server
uses through pipecat); the call against a real server with the real models.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import warnings

import httpx
import numpy as np
import pytest
from playwright.async_api import async_playwright, expect

from clients.phone import ulaw_decode, ulaw_encode
from tests.conftest import ROOT, silence, speak, start_server, stop_server
from tests.test_web_e2e import ARTIFACTS, open_page, write_wav

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # removed in 3.13; pipecat uses it here
    import audioop

pytestmark = pytest.mark.e2e
ANSWER_TIMEOUT_MS = 90_000  # model turns on a shared 2-core machine
LEAD_IN_S = 1.5  # quiet before the question: the page opens its socket while the fake mic already plays
TAIL_S = 30.0  # quiet after it: the line stays open (silence goes out) while the agent answers
# Enough of the answer to be sure it is being heard: a few words at 8 kHz.
HEARD_MS = 1500
MIC_RATE = 48000  # what a sound card (and Chromium's fake one) usually runs at
SPEECH_HZ = 1000  # in the middle of the telephone band: must come through as it is
ALIAS_HZ = 6000  # above 8 kHz's 4 kHz limit: must be filtered out, not folded back to 2 kHz
SETTLE = 200  # samples skipped before measuring a tone: the filters' start-up
QUESTION = next(
    q for q in json.loads((ROOT / "benchmarks" / "questions.json").read_text()) if q["id"] == "saturday-open"
)


@pytest.fixture(scope="module")
def phone_server(tmp_path_factory):
    """A server of its own, logging at DEBUG: the phone path logs what it heard the caller say there."""
    running = start_server(tmp_path_factory.mktemp("phone-web"), {"PARLEY_LOG_LEVEL": "DEBUG"})
    yield running
    stop_server(running)


def tone(hz: float, rate: int, seconds: float = 1.0, level: float = 0.5) -> list[float]:
    return (level * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).tolist()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples[SETTLE:] ** 2)))


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[SETTLE:]))
    return float(np.fft.rfftfreq(len(samples) - SETTLE, 1 / rate)[np.argmax(spectrum)])


async def sessions(server) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{server.url}/health", timeout=5)).json()["sessions"]


async def stats(page) -> dict:
    return await page.evaluate("({...window.phoneStats})")


async def test_the_pages_mulaw_codec_matches_the_servers(phone_server, tmp_path):
    mic = write_wav(tmp_path / "quiet.wav", silence(2))
    every_sample = np.arange(-32768, 32768, dtype=np.int32)
    every_byte = np.arange(256, dtype=np.uint8)
    async with async_playwright() as playwright:
        browser, page, problems = await open_page(playwright, f"{phone_server.url}/phone", mic)
        try:
            encoded = await page.evaluate("(s) => window.phoneCodec.encode(s)", every_sample.tolist())
            decoded = await page.evaluate("(b) => window.phoneCodec.decode(b)", every_byte.tolist())
            down = {
                hz: np.array(
                    await page.evaluate(
                        "([s, rate]) => window.phoneCodec.downsample(s, rate)", [tone(hz, MIC_RATE), MIC_RATE]
                    )
                )
                for hz in (SPEECH_HZ, ALIAS_HZ)
            }
            up = np.array(
                await page.evaluate(
                    "([s, rate]) => window.phoneCodec.upsample(s, rate)", [tone(SPEECH_HZ, 8000), MIC_RATE]
                )
            )
        finally:
            await browser.close()
    pcm = every_sample.astype("<i2").tobytes()
    assert bytes(encoded) == ulaw_encode(pcm) == audioop.lin2ulaw(pcm, 2)
    ulaw = every_byte.tobytes()
    expected = np.frombuffer(ulaw_decode(ulaw), dtype="<i2")
    assert decoded == expected.tolist()
    assert expected.tobytes() == audioop.ulaw2lin(ulaw, 2)
    # The microphone reaches the line at 8 kHz with speech's band intact and nothing folded back;
    # the line's 8 kHz reaches the speaker at the sound card's rate, the same tone.
    assert len(down[SPEECH_HZ]) == pytest.approx(8000, abs=2)
    assert rms(down[SPEECH_HZ]) == pytest.approx(rms(np.array(tone(SPEECH_HZ, 8000))), rel=0.02)
    assert peak_hz(down[SPEECH_HZ], 8000) == pytest.approx(SPEECH_HZ, abs=2)
    assert rms(down[ALIAS_HZ]) < rms(down[SPEECH_HZ]) / 100, "a tone above 4 kHz would alias into the band"
    assert len(up) == pytest.approx(MIC_RATE, abs=2)
    assert peak_hz(up, MIC_RATE) == pytest.approx(SPEECH_HZ, abs=2)
    # Linear interpolation rolls off gently (sinc²: -0.45 dB at 1 kHz, as a handset's earpiece would).
    assert rms(up) == pytest.approx(rms(np.array(tone(SPEECH_HZ, 8000))), rel=0.06)
    assert not problems, f"console errors: {problems}"


async def test_a_call_from_the_browser_is_answered_and_keys_and_hang_up_reach_the_server(
    phone_server, tmp_path
):
    question = speak(QUESTION["question"])
    mic = write_wav(tmp_path / "question.wav", silence(LEAD_IN_S) + question + silence(TAIL_S))
    async with async_playwright() as playwright:
        browser, page, problems = await open_page(playwright, f"{phone_server.url}/phone", mic)
        try:
            await expect(page.get_by_test_id("status")).to_have_text("idle")
            await page.get_by_test_id("call").click()
            await expect(page.get_by_test_id("status")).to_have_text("connected", timeout=10_000)
            assert await sessions(phone_server) == 1, "the call is a session on the server"

            # The answer comes back as μ-law and plays; the marks before its sentences go back.
            await page.wait_for_function(
                f"window.phoneStats.playedMs > {HEARD_MS} && window.phoneStats.marksSent > 0",
                timeout=ANSWER_TIMEOUT_MS,
            )
            answered = await stats(page)

            # * on the dial pad: the server hears the key and the agent reads out the menu.
            pressed = time.monotonic()
            await page.get_by_test_id("key-star").click()
            await expect(page.get_by_test_id("number")).to_have_text("*")
            while "caller pressed *" not in phone_server.log() and time.monotonic() - pressed < 10:
                await asyncio.sleep(0.1)
            received_at_press = (await stats(page))["receivedMs"]
            await page.wait_for_function(
                f"window.phoneStats.receivedMs > {received_at_press + HEARD_MS}", timeout=ANSWER_TIMEOUT_MS
            )
            await expect(page.get_by_test_id("call-log")).to_contain_text("key * sent")

            await page.get_by_test_id("hangup").click()
            await expect(page.get_by_test_id("status")).to_have_text("ended")
            await expect(page.get_by_test_id("reason")).to_have_text("you hung up")
            ended = await stats(page)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "phone-call.png"), full_page=True)
        finally:
            await browser.close()

    # The microphone went out as 20 ms frames in real time, through the question and the answer.
    assert answered["mediaSent"] > 50 * (LEAD_IN_S + len(question) / 2 / 16000) * 0.8, answered
    assert answered["receivedMs"] + 1 >= answered["playedMs"] > HEARD_MS, answered
    log = phone_server.log()
    assert re.search(r"custom parameters: \['from'\]", log), "the page's start reached the server"
    # The page's 8 kHz μ-law, through Whisper: the agent heard the question as it was asked.
    heard = re.search(r'"type":"user.transcript","turn_id":1,"text":"([^"]*)"', log)
    assert heard and "saturday" in heard[1].lower(), heard and heard[1]
    assert "caller pressed *" in log, "the key reached the server"
    assert ended["keysSent"] == 1
    assert ended["marksSent"] > answered["marksSent"], "the menu's marks came back too"
    deadline = time.monotonic() + 10
    while await sessions(phone_server) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await sessions(phone_server) == 0, "hanging up ended the session"
    assert re.search(r"session \w+ \(phone\): ended after \d+ turns: hung_up", phone_server.log())
    assert not problems, f"console errors: {problems}"


async def refusal_shown(server, tmp_path) -> tuple[str, bool]:
    """Call `server` from the page: the reason it shows, and whether Call works again."""
    mic = write_wav(tmp_path / "quiet.wav", silence(2))
    async with async_playwright() as playwright:
        browser, page, _ = await open_page(playwright, f"{server.url}/phone", mic)
        try:
            await page.get_by_test_id("call").click()
            await expect(page.get_by_test_id("status")).to_have_text("ended", timeout=10_000)
            reason = await page.get_by_test_id("reason").text_content()
            return reason, await page.get_by_test_id("call").is_enabled()
        finally:
            await browser.close()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        # A voice that is not there: the models fail to load at once, and calls are refused.
        ({"PARLEY_TTS_VOICE": "missing.onnx"}, "refused: the agent is not ready"),
        # Only streams the signed webhook answered get in; the page has no stream token.
        (
            {"PARLEY_TWILIO_AUTH_TOKEN": "a-twilio-auth-token"},
            "refused: this server takes only calls that Twilio",
        ),
    ],
    ids=["not-ready", "auth-token"],
)
async def test_a_refused_call_says_why(env, says, tmp_path):
    loads = "PARLEY_TTS_VOICE" not in env  # else /health says "failed" at once: don't wait for ready
    env = {
        name: str(tmp_path / value) if name == "PARLEY_TTS_VOICE" else value for name, value in env.items()
    }
    refusing = start_server(tmp_path, env, wait_ready=loads)
    try:
        reason, call_again = await refusal_shown(refusing, tmp_path)
    finally:
        stop_server(refusing)
    assert reason.startswith(says), reason
    assert call_again, "the Call button works again"
