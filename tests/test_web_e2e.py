"""The browser page, driven in real headless Chromium with a fake microphone fed from a WAV
file: a spoken question and a typed one are answered on the page, and the reply is played."""

from __future__ import annotations

import re
import shutil
import wave
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.conftest import ROOT, silence, speak

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "test-artifacts"
ANSWER_TIMEOUT_MS = 90_000  # model turns on a shared 2-core CI machine
# Quiet before the question: the page opens its socket while the fake microphone already plays.
LEAD_IN_S = 1.5


def write_wav(path: Path, pcm: bytes, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


async def open_page(playwright, url: str, microphone_wav: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is not installed: run `apt-get install chromium` (.ci/run does it)")
    browser = await playwright.chromium.launch(
        executable_path=chromium,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
        ],
    )
    page = await browser.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    await page.goto(url)
    return browser, page, problems


async def test_a_spoken_question_is_answered_and_played_on_the_page(server, tmp_path):
    mic = write_wav(
        tmp_path / "question.wav",
        silence(LEAD_IN_S) + speak("What time do you open on Saturday?") + silence(8),
    )
    async with async_playwright() as playwright:
        browser, page, problems = await open_page(playwright, server.url, mic)
        try:
            await page.get_by_test_id("connect").click()
            await expect(page.get_by_test_id("user-transcript")).to_contain_text(
                re.compile("saturday", re.I), timeout=ANSWER_TIMEOUT_MS
            )
            await expect(page.get_by_test_id("agent-text")).to_contain_text(
                re.compile(r"9 ?a\.?m|nine", re.I), timeout=ANSWER_TIMEOUT_MS
            )
            await expect(page.get_by_test_id("turn-latency")).to_have_text(
                re.compile(r"^\d+$"), timeout=ANSWER_TIMEOUT_MS
            )
            await page.wait_for_function(
                "window.parley.stats.playedAudioMs > 1000", timeout=ANSWER_TIMEOUT_MS
            )
            stats = await page.evaluate("window.parley.stats")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "web-spoken-exchange.png"), full_page=True)
        finally:
            await browser.close()
    assert stats["sentFrames"] > 100, "the microphone's audio was streamed"
    assert stats["receivedAudioMs"] + 1 >= stats["playedAudioMs"] > 1000, stats  # played what arrived
    # The page tells the server how far it has played (what the user heard, should they cut in).
    assert stats["playbackReports"] > 0, stats
    assert not problems, f"console errors: {problems}"


async def test_a_typed_question_is_answered_on_the_page(server, tmp_path):
    mic = write_wav(tmp_path / "quiet.wav", silence(30))
    async with async_playwright() as playwright:
        browser, page, problems = await open_page(playwright, server.url, mic)
        try:
            await page.get_by_test_id("connect").click()
            await expect(page.get_by_test_id("status")).to_have_text("listening", timeout=30_000)
            await page.get_by_test_id("text-input").fill("How much is a basic tune-up?")
            await page.get_by_test_id("text-send").click()
            await expect(page.get_by_test_id("user-transcript")).to_have_text("How much is a basic tune-up?")
            await expect(page.get_by_test_id("agent-text")).to_contain_text("65", timeout=ANSWER_TIMEOUT_MS)
            await page.wait_for_function("window.parley.stats.playedAudioMs > 500", timeout=ANSWER_TIMEOUT_MS)
        finally:
            await browser.close()
    assert not problems, f"console errors: {problems}"
