"""What Piper is handed, and when: an answer's opening clause goes on its own, so the caller hears
the agent start sooner; after that, whole sentences."""

from __future__ import annotations

import pytest
from pipecat.utils.text.base_text_aggregator import TextType

from voice.tts import FirstClauseAggregator


async def pieces(answers: list[str], token_chars: int = 3) -> list[list[str]]:
    """The pieces Piper gets for each answer, streamed a few characters at a time like LLM tokens."""
    aggregator = FirstClauseAggregator(aggregation_type=TextType.SENTENCE, language="en")
    spoken = []
    for answer in answers:
        out = []
        for i in range(0, len(answer), token_chars):
            out += [a.text async for a in aggregator.aggregate(answer[i : i + token_chars])]
        rest = await aggregator.flush()  # pipecat flushes at the end of each answer
        spoken.append(out + ([rest.text] if rest else []))
    return spoken


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "Well, as it happens, on Saturday, we are open from 9 am to 5 pm. On Sunday we are closed.",
            [
                "Well, as it happens,",
                "on Saturday, we are open from 9 am to 5 pm.",
                "On Sunday we are closed.",
            ],
        ),
        # Too short an opening to say alone; a comma inside a number is no break.
        ("Yes, we are open. It costs $9,000 a day.", ["Yes, we are open.", "It costs $9,000 a day."]),
        ("It costs $65. Anything else?", ["It costs $65.", "Anything else?"]),
    ],
)
async def test_the_opening_clause_goes_first_then_whole_sentences(answer, expected):
    assert await pieces([answer]) == [expected]


async def test_every_answer_gets_its_own_opening_clause():
    first = "Well, as it happens, we open at nine."
    second = "Sure thing, my friend, a tune-up is $65."
    assert await pieces([first, second]) == [
        ["Well, as it happens,", "we open at nine."],
        ["Sure thing, my friend,", "a tune-up is $65."],
    ]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "Based on the facts provided, on Saturday, we are open from 9 am to 5 pm.",
            ["On Saturday, we are open from 9 am to 5 pm."],
        ),
        ("According to the information given, a tune-up is $65.", ["A tune-up is $65."]),
        (
            "Based on the given facts, yes, we rent e-bikes. They are $45.",
            ["Yes, we rent e-bikes.", "They are $45."],
        ),
        # Only an opening that points at the prompt goes: an answer that uses the words stays whole.
        ("Based on your age, the discount is 10%.", ["Based on your age,", "the discount is 10%."]),
    ],
)
async def test_an_opening_that_points_at_the_facts_is_not_spoken(answer, expected):
    assert await pieces([answer]) == [expected]


async def test_the_next_answer_is_not_changed_by_a_preamble_before_it():
    assert await pieces(["Based on the facts, we open at 9.", "Well, as it happens, we open at nine."]) == [
        ["We open at 9."],
        ["Well, as it happens,", "we open at nine."],
    ]
