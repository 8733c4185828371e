"""WhisperEngine's clean-up of what Whisper says and the window it encodes, with a fake model (the
real one is in the e2e tests)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from voice.stt import (
    FULL_WINDOW_FRAMES,
    MIN_WINDOW_FRAMES,
    WINDOW_MARGIN_FRAMES,
    WhisperEngine,
    trim_window,
)

VOCABULARY = "Opening hours, Weekly hours, Services and prices, E-bike service, Rentals."


class FakeWhisper:
    """Says a line of its prompt back when it has one, like Whisper on a mumble."""

    def __init__(self, with_prompt: str, without_prompt: str):
        self.answers = {True: with_prompt, False: without_prompt}
        self.prompts: list[str | None] = []

    def transcribe(self, _samples, initial_prompt=None, **_options):
        self.prompts.append(initial_prompt)
        return [SimpleNamespace(text=self.answers[initial_prompt is not None])], None


def engine(model: FakeWhisper) -> WhisperEngine:
    whisper = WhisperEngine(model, "fake", "cpu", "int8", beam_size=1, language="en")
    whisper.vocabulary = VOCABULARY
    return whisper


SOUND = np.zeros(16000, dtype=np.float32)


def test_a_line_of_the_prompt_said_back_is_heard_again_without_the_prompt():
    model = FakeWhisper(with_prompt=" E-bike service,", without_prompt=" Uh-huh.")
    assert engine(model).transcribe_samples(SOUND).text == "Uh-huh."
    assert model.prompts == [VOCABULARY, None]


def test_a_real_question_keeps_the_prompts_spelling():
    model = FakeWhisper(
        with_prompt=" How much is an e-bike service?", without_prompt=" How much is a bike serves?"
    )
    assert engine(model).transcribe_samples(SOUND).text == "How much is an e-bike service?"
    assert model.prompts == [VOCABULARY]


def test_sound_labels_and_loops_are_not_words():
    assert engine(FakeWhisper(" [coughing]", "")).transcribe_samples(SOUND).text == ""
    assert engine(FakeWhisper(" Thin Thin Thin Thin Thin Thin", "")).transcribe_samples(SOUND).text == ""
    assert engine(FakeWhisper(" (clears throat) Wait.", "")).transcribe_samples(SOUND).text == "Wait."


def test_a_beam_asked_for_one_call_is_used_for_every_decode_of_it():
    model = FakeWhisper(with_prompt=" E-bike service,", without_prompt=" Uh-huh.")  # decoded twice
    beams: list[int] = []
    recording = model.transcribe
    model.transcribe = lambda samples, beam_size=None, **options: (
        beams.append(beam_size),
        recording(samples, **options),
    )[1]
    whisper = engine(model)
    whisper.transcribe_samples(SOUND, beam_size=5)
    whisper.transcribe_samples(SOUND)
    assert beams == [5, 5, 1, 1], "the override for the call, then the engine's own"


def padded_window(sounding_frames: int) -> np.ndarray:
    """A mel window as faster-whisper pads it: sound (never exactly zero), then zeros to 30 s."""
    window = np.zeros((80, FULL_WINDOW_FRAMES), dtype=np.float32)
    window[:, :sounding_frames] = -0.5
    return window


@pytest.mark.parametrize(
    ("sounding", "kept"),
    [
        (250, MIN_WINDOW_FRAMES),  # a 2.5 s question: the 6 s floor
        (500, 500 + WINDOW_MARGIN_FRAMES),  # 5 s: the speech and 3 s of padding
        (2900, FULL_WINDOW_FRAMES),  # nearly 30 s: never past Whisper's own window
        (0, MIN_WINDOW_FRAMES),  # silence
    ],
)
def test_the_short_window_is_the_speech_and_a_margin_of_the_padding(sounding: int, kept: int):
    window = padded_window(sounding)
    cut = trim_window(window)
    assert cut.shape == (80, kept)
    assert np.array_equal(cut[:, : min(sounding, kept)], window[:, : min(sounding, kept)]), "speech kept"
    assert trim_window(window[None]).shape == (1, 80, kept), "a batch of one, as the encoder takes it"


def test_telephone_audio_keeps_whisper_s_whole_window():
    model = FakeWhisper(with_prompt=" Hello.", without_prompt=" Hello.")
    whisper = engine(model)
    whisper.short_window = True
    whisper.transcribe_samples(SOUND)
    assert model.short is True
    whisper.transcribe_samples(SOUND, full_window=True)
    assert model.short is False, "narrowband audio is encoded over the whole 30 s"
