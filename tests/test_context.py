"""What the LLM is told: the few facts that answer ride in the user's message, are never repeated in
one conversation, a question the knowledge does not answer is declined, and a turn the caller
continued is folded into one question."""

from __future__ import annotations

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from agents.context import (
    FACTS_HEADER,
    MIN_ANSWER_COSINE,
    NO_FACTS,
    NO_NEW_FACTS,
    KnowledgeContextProcessor,
    merge_continued_turn,
    previous_question,
    question_of,
    select_evidence,
    user_message,
)
from agents.rag.retrieve import Hit
from agents.replies import DECLINE_REPLY, FACT_REPLY_MAX_CHARS, decline_reply, fact_reply, is_question

SATURDAY = Hit("hours.md", "Opening hours > Weekly hours", "On Saturday we are open from 9 am to 5 pm.", 1.0)
TUNE_UP = Hit("prices.md", "Services > Tune-ups", "A basic tune-up costs $65.", 0.9)


def hit(text: str, cosine: float) -> Hit:
    return Hit("kb.md", "Prices", text, 0.5, cosine=cosine)


def test_the_question_carries_its_facts_one_per_line_and_labelled_the_best_next_to_it():
    text, keys = user_message("When do you open on Saturday?", [SATURDAY, TUNE_UP], set())
    assert text.splitlines() == [
        FACTS_HEADER,
        "- [Services > Tune-ups] A basic tune-up costs $65.",
        "- [Opening hours > Weekly hours] On Saturday we are open from 9 am to 5 pm.",
        "Question: When do you open on Saturday?",
    ]
    assert len(keys) == 2


def test_a_fact_already_given_is_not_repeated():
    _, keys = user_message("Saturday?", [SATURDAY], set())
    text, new_keys = user_message("And on Saturday again?", [SATURDAY, TUNE_UP], set(keys))
    assert "Saturday we are open" not in text and "tune-up costs $65" in text
    again, _ = user_message("Saturday?", [SATURDAY], set(keys))
    assert NO_NEW_FACTS in again


def test_the_callers_words_are_read_back_out_of_a_grounded_message():
    grounded, _ = user_message("How much is a tune-up?", [TUNE_UP], set())
    assert question_of(grounded) == "How much is a tune-up?"
    assert question_of("Plain words.") == "Plain words."
    history = [
        {"role": "user", "content": grounded},
        {"role": "assistant", "content": "It costs $65."},
    ]
    assert previous_question(history) == "How much is a tune-up?"
    assert previous_question([]) == ""


def test_only_facts_close_to_the_best_one_are_given():
    best, near, far = hit("E-bike: $45 a day.", 0.7), hit("City bike: $25 a day.", 0.6), hit("x", 0.4)
    assert select_evidence([best, near, far]) == [best, near]


def test_nothing_is_given_when_no_fact_comes_close_to_the_question():
    assert select_evidence([hit("Parking is free.", MIN_ANSWER_COSINE - 0.05)]) == []
    assert select_evidence([]) == []


def test_a_declined_question_is_told_what_the_agent_can_help_with():
    reply = decline_reply(["Opening hours", "Rentals", "Juniper Street Bikes"])
    assert reply.startswith(DECLINE_REPLY)
    assert reply.endswith("opening hours, rentals and Juniper Street Bikes.")
    assert decline_reply([]) == DECLINE_REPLY
    assert decline_reply(["FINDING US", "Rentals"]).endswith("about Finding Us and rentals.")


def test_a_continued_turn_becomes_one_question():
    history = [
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": f"{FACTS_HEADER}\n- [x] facts\nQuestion: Hi there."},
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


class StubRetriever:
    """Finds one fact, as close to every question as `cosine` says, and ranked first by both searches
    when `agreed`."""

    def __init__(self, cosine: float, agreed: bool = False):
        self.cosine = cosine
        self.agreed = agreed
        self.searches: list[tuple[str, str]] = []

    def search(self, text: str, top_k: int, previous: str = "") -> list[Hit]:
        self.searches.append((text, previous))
        return [
            Hit(
                "prices.md",
                "Services > Tune-ups",
                "A basic tune-up costs $65.",
                0.5,
                cosine=self.cosine,
                agreed=self.agreed,
            )
        ]

    def topics(self) -> list[str]:
        return ["Opening hours", "Prices"]


async def ground(retriever: StubRetriever, messages: list[dict]) -> tuple[list[Frame], list[dict]]:
    context = LLMContext(messages)
    down, _ = await run_test(
        KnowledgeContextProcessor(retriever, top_k=3), frames_to_send=[LLMContextFrame(context)]
    )
    return list(down), context.get_messages()


async def test_a_question_the_knowledge_answers_goes_to_the_llm_with_its_facts():
    down, messages = await ground(StubRetriever(cosine=0.7), [{"role": "user", "content": "Tune-up price?"}])
    assert [type(f) for f in down] == [LLMContextFrame]
    assert "A basic tune-up costs $65." in messages[-1]["content"]


async def test_a_question_the_knowledge_does_not_answer_is_declined_without_the_llm():
    down, messages = await ground(
        StubRetriever(cosine=0.2), [{"role": "user", "content": "Who is the owner?"}]
    )
    assert [type(f) for f in down] == [LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame]
    assert down[1].text == decline_reply(["Opening hours", "Prices"])
    assert "tune-up" not in messages[-1]["content"]  # no stray fact stays in the history either


async def test_a_fact_both_searches_rank_first_is_said_as_written_without_the_llm():
    down, messages = await ground(
        StubRetriever(cosine=0.7, agreed=True), [{"role": "user", "content": "How much is a tune-up?"}]
    )
    assert [type(f) for f in down] == [LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame]
    assert down[1].text == "A basic tune-up costs $65."
    # The history holds the fact, so a follow-up the LLM answers can build on it.
    assert "A basic tune-up costs $65." in messages[-1]["content"]


async def test_a_fact_both_searches_rank_first_still_goes_to_the_llm_for_words_that_ask_nothing():
    down, _ = await ground(
        StubRetriever(cosine=0.7, agreed=True), [{"role": "user", "content": "Great, thanks."}]
    )
    assert [type(f) for f in down] == [LLMContextFrame]


def test_only_a_sure_fact_is_said_as_written():
    sure = Hit("rentals.md", "Rentals", "An e-bike is $45 a day.", 0.05, cosine=0.8, agreed=True)
    unsure = Hit("rentals.md", "Rentals", "An e-bike is $45 a day.", 0.05, cosine=0.8)
    city = Hit("rentals.md", "Rentals", "A city bike is $25 a day.", 0.04, cosine=0.75)
    assert fact_reply("How much is an e-bike?", [sure], overview=False) == "An e-bike is $45 a day."
    assert fact_reply("How much is an e-bike?", [unsure], overview=False) is None
    assert fact_reply("How much is an e-bike?", [sure, city], overview=False) is None
    assert fact_reply("Tell me about your rental prices.", [sure], overview=True) is None
    paragraph = Hit("rentals.md", "Rentals", "Bikes. " * (FACT_REPLY_MAX_CHARS // 6), 0.05, agreed=True)
    assert fact_reply("What bikes do you have?", [paragraph], overview=False) is None


async def test_a_follow_up_is_searched_with_the_question_before_it():
    retriever = StubRetriever(cosine=0.7)
    earlier, _ = user_message("What time do you open on Saturday?", [SATURDAY], set())
    history = [
        {"role": "user", "content": earlier},
        {"role": "assistant", "content": "At 9 am."},
        {"role": "user", "content": "And on Sunday?"},
    ]
    await ground(retriever, history)
    assert retriever.searches == [("And on Sunday?", "What time do you open on Saturday?")]


async def test_words_that_ask_nothing_go_to_the_llm_even_with_no_fact_near_them():
    down, messages = await ground(
        StubRetriever(cosine=0.2), [{"role": "user", "content": "Wait, stop please."}]
    )
    assert [type(f) for f in down] == [LLMContextFrame]
    assert NO_FACTS in messages[-1]["content"]


def test_a_question_is_told_from_other_words():
    assert is_question("When do you open on Saturday?")
    assert is_question("so how much is a tune-up")
    assert is_question("Okay, can I rent an e-bike")
    assert is_question("Tell me your hours.")
    assert not is_question("Wait, stop please.")
    assert not is_question("Thanks, that's all.")


def test_a_fact_keywords_and_meaning_both_rank_first_is_given_however_low_its_cosine():
    phone = Hit("contact.md", "Contact", "Phone: (555) 014-2290", 0.03, cosine=0.15, agreed=True)
    assert select_evidence([phone]) == [phone]


def test_a_fact_both_searches_put_first_goes_alone_unless_an_overview_is_asked():
    ebike = Hit("rentals.md", "Rentals", "An e-bike is $45 a day.", 0.05, cosine=0.8, agreed=True)
    city = Hit("rentals.md", "Rentals", "A city bike is $25 a day.", 0.04, cosine=0.75)
    assert select_evidence([ebike, city]) == [ebike]
    assert select_evidence([ebike, city], overview=True) == [ebike, city]
    # Agreement on a lower fact does not make the best one the answer.
    assert select_evidence([city, ebike]) == [city, ebike]
