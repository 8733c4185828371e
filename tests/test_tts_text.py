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
            "Based on the given facts, on Saturday, we are open from 9 am to 5 pm. On Sunday we are closed.",
            [
                "Based on the given facts,",
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
