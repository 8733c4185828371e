"""Whisper starts on a pause before the VAD's stop confirms it (voice/stt.py, WhisperSTTStage), with
a fake model and a scripted VAD (the real ones are in the e2e tests)."""

from __future__ import annotations

from types import SimpleNamespace

from pipecat.frames.frames import (
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from voice.stt import WhisperEngine, WhisperSTTStage

EARLY_QUIET_S = 0.1
FRAME = bytes(640)  # 20 ms of 16 kHz s16le


class CountingWhisper:
    """Hears "What time do you open?" in anything, and counts the samples of each call."""

    def __init__(self):
        self.calls: list[int] = []
        self.frames_unread: list[int] = []  # the VAD readings still to come at each call
        self.vad: ScriptedVAD | None = None

    def transcribe(self, samples, **_options):
        self.calls.append(len(samples))
        return [SimpleNamespace(text="What time do you open?")], None


class ScriptedVAD:
    """The silence so far, one reading per audio frame while the user speaks."""

    stop_secs = 0.2

    def __init__(self, readings: list[float]):
        self.readings = list(readings)

    @property
    def quiet_s(self) -> float:
        return self.readings.pop(0) if self.readings else 0.0


async def segment(
    quiet_readings: list[float], busy: bool = False, full_window: bool = False
) -> tuple[CountingWhisper, list]:
    """One speech segment, its audio frames read against `quiet_readings`, then the VAD's stop."""
    model = CountingWhisper()
    model.vad = ScriptedVAD(quiet_readings)
    engine = WhisperEngine(model, "fake", "cpu", "int8", beam_size=1, language="en")
    if busy:
        engine._in_flight = 1  # another session's segment is queued
    asked = engine.transcribe

    async def asked_when(pcm, *args):
        # Noted on the event loop as the transcription is asked for (the model's thread may run
        # later on a busy machine).
        model.frames_unread.append(len(model.vad.readings))
        return await asked(pcm, *args)

    engine.transcribe = asked_when
    stage = WhisperSTTStage(
        engine,
        SimpleNamespace(mark_pending=lambda _moment: None),
        pause=model.vad,
        full_window=lambda: full_window,
        early_quiet_s=EARLY_QUIET_S,
    )
    frames = [VADUserStartedSpeakingFrame()]
    for _ in quiet_readings:
        frames += [InputAudioRawFrame(FRAME, 16000, 1), SleepFrame(0.01)]
    frames += [VADUserStoppedSpeakingFrame(stop_secs=0.2), SleepFrame(0.3)]
    down, _ = await run_test(stage, frames_to_send=frames)
    return model, [f.text for f in down if isinstance(f, TranscriptionFrame)]


async def test_whisper_starts_at_the_pause_and_its_transcript_is_the_segment_s():
    model, words = await segment([0, 0, 0, 0.04, 0.08, 0.12, 0.16])
    assert words == ["What time do you open?"]
    assert len(model.calls) == 1, "the segment was not transcribed a second time at the VAD's stop"
    assert model.frames_unread[0] > 0, "Whisper began before the last frames of the pause came in"
    trailing = int(0.5 * 16000)  # pipecat's trailing silence, which the segment would have had
    assert model.calls[0] >= 6 * 320 + trailing, "Whisper heard the speech with the silence still to come"


async def test_speech_after_the_early_start_is_transcribed_again_whole():
    model, words = await segment([0, 0.12, 0, 0, 0.04, 0.08])
    assert words == ["What time do you open?"]
    assert len(model.calls) == 2
    assert model.frames_unread == [4, 0], "the second transcription came at the VAD's stop, after the words"


async def test_no_early_start_while_another_segment_waits_for_whisper():
    model, words = await segment([0, 0, 0.12, 0.16], busy=True)
    assert model.frames_unread == [0], "one transcription, at the VAD's stop"


async def test_no_early_start_for_whisper_s_whole_window():
    """Telephone audio, or a sound over the agent's voice: a run thrown away would hold the engine
    for a second."""
    model, words = await segment([0, 0, 0.12, 0.16], full_window=True)
    assert words == ["What time do you open?"]
    assert model.frames_unread == [0], "one transcription, at the VAD's stop"
