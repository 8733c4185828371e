"""WhisperEngine's clean-up of what Whisper says, with a fake model (the real one is in the e2e tests)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from voice.stt import WhisperEngine

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
