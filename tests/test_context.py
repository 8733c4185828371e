"""What the LLM is told: passages ride in the user's message, are never repeated in one
conversation, and a turn the caller continued is folded into one question."""

from __future__ import annotations

from agents.context import FACTS_HEADER, NO_NEW_FACTS, merge_continued_turn, user_message
from agents.rag.retrieve import Hit

SATURDAY = Hit("hours.md", "Opening hours > Weekly hours", "On Saturday we are open\nfrom 9 am to 5 pm.", 1.0)
TUNE_UP = Hit("prices.md", "Services > Tune-ups", "A basic tune-up costs $65.", 0.9)


def test_the_question_carries_its_passages_unwrapped_and_labelled():
    text, keys = user_message("When do you open on Saturday?", [SATURDAY], set())
    assert text.startswith(FACTS_HEADER)
    assert "[Opening hours > Weekly hours]\nOn Saturday we are open from 9 am to 5 pm." in text
    assert text.endswith("When do you open on Saturday?")
    assert len(keys) == 1


def test_a_passage_already_given_is_not_repeated():
    _, keys = user_message("Saturday?", [SATURDAY], set())
    text, new_keys = user_message("And on Saturday again?", [SATURDAY, TUNE_UP], set(keys))
    assert "Saturday we are open" not in text and "tune-up costs $65" in text
    again, _ = user_message("Saturday?", [SATURDAY], set(keys))
    assert NO_NEW_FACTS in again


def test_a_continued_turn_becomes_one_question():
    history = [
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": f"{FACTS_HEADER}\n[x]\nfacts\n\nQuestion: Hi there."},
        {"role": "user", "content": "What time do you open on Saturday?"},
    ]
    merged = merge_continued_turn(history, "Hi there.")
    assert merged == "Hi there. What time do you open on Saturday?"
    assert history[-1] == {"role": "user", "content": merged}
    assert [m["role"] for m in history] == ["assistant", "user"]


def test_nothing_is_merged_when_the_history_does_not_end_in_two_user_messages():
    history = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}]
    assert merge_continued_turn(history, "Hi.") is None
    assert len(history) == 2
