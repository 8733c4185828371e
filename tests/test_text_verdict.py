"""The transcript's verdict on whether a turn is finished (voice/turntaking/text_verdict.py)."""

import pytest

from voice.turntaking.text_verdict import combine, text_verdict


@pytest.mark.parametrize(
    "words",
    [
        "What time do you open on Saturday?",
        "Can I bring something back if it doesn't fit?",
        "What are you looking for?",  # a preposition last, in a question
        'Did you say "Tuesday?"',
    ],
)
def test_a_question_reads_finished(words):
    assert text_verdict(words) is True


@pytest.mark.parametrize(
    "words",
    [
        "I've got a flat tyre,",
        "What's your phone? Um, er...",
        "So the thing is\u2026",
        "I need a new chain and",
        "How much is the",
        "I was wondering um.",
    ],
)
def test_words_that_trail_off_read_unfinished(words):
    assert text_verdict(words) is False


@pytest.mark.parametrize("words", ["Hi.", "Thanks", "I'd like to book a service.", "", "   "])
def test_words_that_could_be_all_or_a_beginning_leave_it_to_the_audio(words):
    assert text_verdict(words) is None
    assert combine(True, words) is True
    assert combine(False, words) is False


def test_clear_words_overrule_the_audio():
    assert combine(False, "How much is a basic tune-up?") is True
    assert combine(True, "I've got a flat tyre,") is False
    assert combine(None, "Hi.") is None
