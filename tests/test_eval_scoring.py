"""`parley eval`'s pure parts: the question file's validation, conversations, answer scoring, WER.

No model, no server: these run in a blink.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals import report
from evals.questions import (
    Question,
    QuestionFileError,
    builtin_bases,
    conversations,
    load_base,
    select,
    validate,
)
from evals.scoring import (
    answer_is_right,
    declines,
    judge,
    rank_metrics,
    tokens,
    word_error_rate,
    word_errors,
)
from evals.scoring import (
    holds_evidence as holds,
)


def q(id: str = "q", category: str = "figures", **fields) -> dict:
    """A valid question object, with `fields` changed."""
    return {
        "id": id,
        "question": f"Question {id}?",
        "category": category,
        "split": "dev",
        "expect_any": ["15"],
        "evidence": ["fifteen dollars"],
        **fields,
    }


def base_file(tmp_path: Path, questions: list[dict], **top) -> Path:
    (tmp_path / "knowledge").mkdir(exist_ok=True)
    (tmp_path / "knowledge" / "a.md").write_text("# Prices\n\nA flat is fifteen dollars.\n")
    path = tmp_path / "questions.json"
    data = {"name": "tiny", "description": "a test base", "knowledge": "knowledge", "questions": questions}
    path.write_text(json.dumps(data | top))
    return path


def Q(**fields) -> Question:
    return Question.from_dict(q(**fields))


# --- the question file ----------------------------------------------------------------------------


def test_a_valid_file_loads_with_its_knowledge_folder(tmp_path):
    path = base_file(tmp_path, [q("a"), q("b", "follow_up", follows="a", expect_min=1)])
    base = load_base(path)
    assert base.name == "tiny"
    assert base.knowledge_dir == (tmp_path / "knowledge").resolve()
    assert [x.id for x in base.questions] == ["a", "b"]
    assert base.questions[1].follows == "a"
    assert load_base(tmp_path).questions == base.questions  # a folder holding questions.json


def test_kb_replaces_the_files_knowledge_folder(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    assert load_base(base_file(tmp_path, [q()]), other).knowledge_dir == other.resolve()


def errors(questions: list[dict], **top) -> str:
    data = {"name": "tiny", "description": "", "knowledge": "knowledge", "questions": questions} | top
    return "\n".join(validate(data))


def test_a_bad_category_is_named_with_its_question():
    problems = errors([q("price", category="prices")])
    assert 'question "price"' in problems
    assert "'prices' is not one of" in problems and "figures" in problems


def test_follows_an_unknown_id():
    assert "follows 'nope', which is not a question of this file" in errors([q("a", follows="nope")])


def test_a_duplicate_id():
    assert 'question "a": the id is used more than once' in errors([q("a"), q("a")])


def test_other_mistakes_are_each_reported():
    problems = errors(
        [
            q("a", split="test"),
            q("b", expect_any=[]),
            q("c", evidence="fifteen"),
            q("d", expect_min=3),
            q("e", reject=["no"]),
            {"question": "no id?"},
        ]
    )
    assert "split 'test' is not one of" in problems
    assert "question \"b\": 'expect_any' is empty" in problems
    assert "'evidence' must be a list of non-empty strings" in problems
    assert "'expect_min' is 3 but 'expect_any' has only 1" in problems
    assert "unknown field(s) ['reject']" in problems
    assert "questions[5]: missing 'id'" in problems


def test_out_of_knowledge_needs_no_expected_answer_or_evidence():
    assert errors([q("a", "out_of_knowledge", expect_any=[], evidence=[])]) == ""


def test_follow_up_links_that_cannot_be_one_conversation():
    assert "follows itself" in errors([q("a", follows="a")])
    assert 'as "b" already does' in errors([q("a"), q("b", follows="a"), q("c", follows="a")])
    assert "goes round in a loop" in errors([q("a", follows="b"), q("b", follows="a")])


def test_top_level_mistakes():
    assert "missing 'questions'" in "\n".join(validate({"name": "x", "description": "", "knowledge": "k"}))
    assert "'name' must be a plain name" in errors([q()], name="../escape")
    assert "'questions' must be a non-empty list" in errors([])


def test_load_errors_name_the_file_and_point_at_the_format(tmp_path):
    path = base_file(tmp_path, [q("a", category="prices"), q("a")])
    with pytest.raises(QuestionFileError) as caught:
        load_base(path)
    message = str(caught.value)
    assert str(path) in message and 'question "a"' in message and "Your own knowledge" in message


def test_bad_json_and_a_missing_knowledge_folder(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text('{"name": "x",')
    with pytest.raises(QuestionFileError, match="not valid JSON"):
        load_base(path)
    path = base_file(tmp_path, [q()], knowledge="missing")
    with pytest.raises(QuestionFileError, match="is not a folder"):
        load_base(path)


def test_the_builtin_bases_are_valid():
    for base in builtin_bases():  # none yet is fine; each there must load
        assert base.questions and base.knowledge_dir.is_dir()


# --- conversations and selection ------------------------------------------------------------------


def ids(chains: list[list[Question]]) -> list[list[str]]:
    return [[x.id for x in chain] for chain in chains]


def test_a_follow_up_joins_the_conversation_of_the_question_it_follows():
    questions = [
        Question.from_dict(raw)
        for raw in [
            q("c", "follow_up", follows="b"),
            q("a"),
            q("b", "follow_up", follows="a"),
            q("x"),
            q("y", "follow_up", follows="x"),
            q("z"),
        ]
    ]
    assert ids(conversations(questions)) == [["a", "b", "c"], ["x", "y"], ["z"]]


def test_a_selected_follow_up_brings_the_questions_before_it():
    questions = [Q(id="a"), Q(id="b", category="follow_up", follows="a"), Q(id="c", follows="b"), Q(id="z")]
    assert ids(conversations(questions, {"b"})) == [["a", "b"]]
    assert ids(conversations(questions, {"a", "z"})) == [["a"], ["z"]]


def test_select_by_split_and_ids():
    questions = [Q(id="a"), Q(id="b", split="heldout"), Q(id="c")]
    assert [x.id for x in select(questions, "heldout")] == ["b"]
    assert [x.id for x in select(questions, "dev", ["a", "b"])] == ["a"]
    assert [x.id for x in select(questions)] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        select(questions, "test")


# --- answers --------------------------------------------------------------------------------------


def test_tokens_keep_times_and_amounts_whole():
    assert tokens("We open at 9:00 a.m., it's $10.00!") == ["we", "open", "at", "9", "am", "its", "$", "10"]
    assert tokens("We don’t, can't") == ["we", "do", "not", "can", "not"]
    assert tokens("7:30 or 7.50, 1,200") == ["7:30", "or", "7.50", "1200"]
    assert tokens("9am") == ["9", "am"]


def test_a_figure_is_matched_as_a_whole_number():
    question = Q(expect_any=["5"])
    assert answer_is_right("That's 5 dollars.", question)
    assert not answer_is_right("That's 15 dollars.", question)
    assert not answer_is_right("We close at 5:30.", question)
    assert not answer_is_right("It costs 5.50.", question)
    assert not answer_is_right("Call 555-0123.", question)


def test_a_whole_hour_counts_as_the_hour():
    question = Q(expect_any=["9 am"])
    assert answer_is_right("We open at 9 a.m. on Saturday.", question)
    assert answer_is_right("We open at 9am.", question)
    assert answer_is_right("Saturday from 9:00 am to 5 pm.", question)
    assert not answer_is_right("Saturday from 9:30 am.", question)
    assert answer_is_right("From 9:00.", Q(expect_any=["9"]))


def test_money_and_phrases():
    assert answer_is_right("It's $45 a day.", Q(expect_any=["45"]))
    assert answer_is_right("It's $45 a day.", Q(expect_any=["$45"]))
    assert answer_is_right("Returns within 30 days.", Q(expect_any=["30 days"]))
    assert not answer_is_right("Returns within 30 working days.", Q(expect_any=["30 days"]))
    assert answer_is_right("Returns are fine within thirty days.", Q(expect_any=["thirty days"]))


def test_number_words_match_digits_when_the_converter_is_there():
    pytest.importorskip("agents.rag.numbers")
    assert answer_is_right("A basic tune-up is sixty-five dollars.", Q(expect_any=["65"]))
    assert answer_is_right("It's 65 dollars.", Q(expect_any=["sixty-five"]))
    assert not answer_is_right("It's sixty-five dollars.", Q(expect_any=["5"]))


def test_negations_said_either_way_are_the_same():
    question = Q(category="yes_no", expect_any=["not", "do not need"])
    assert answer_is_right("No, you can't pay with a check.", question)
    assert answer_is_right("You don't need an appointment.", question)
    assert answer_is_right("You cannot book.", Q(expect_any=["can't book"]))
    assert declines("I do not have that information.") and declines("I am not sure.")


def test_reject_any_makes_an_answer_wrong():
    question = Q(category="yes_no", expect_any=["credit card"], reject_any=["yes, you can"])
    assert answer_is_right("It has to be a credit card, not a debit card.", question)
    verdict = judge("Yes, you can, or a credit card.", question)
    assert not verdict.right and "yes, you can" in verdict.reason


def test_expect_min_counts_distinct_expected_strings():
    question = Q(category="lists", expect_any=["visa", "mastercard", "amex"], expect_min=2)
    assert answer_is_right("We take Visa and Mastercard.", question)
    assert not answer_is_right("We take Visa, and Visa only.", question)
    assert "1 of the 2" in judge("We take Visa.", question).reason


def test_a_plural_in_the_answer_states_the_expected_singular():
    question = Q(category="lists", expect_any=["board game", "hotspot", "telescope"], expect_min=2)
    assert answer_is_right("We lend board games and Wi-Fi hotspots.", question)
    assert answer_is_right("It costs $15.", Q(expect_any=["15"]))
    # Not the other way round: a verb's "s" is no plural.
    assert not answer_is_right(
        "No, a helmet does not come with it.", Q(category="yes_no", expect_any=["comes with"])
    )
    assert not answer_is_right("It costs $150.", Q(expect_any=["15"]))


def test_a_declined_answer_is_wrong_for_a_question_the_knowledge_answers():
    question = Q(expect_any=["65"])
    assert not answer_is_right("I'm sorry, I don't have that information. Maybe 65?", question)
    assert judge("", question).reason == "no answer"


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, I don't have that information.",
        "I don't know, I'm afraid.",
        "I’m not sure about that.",
        "I can't find anything about skateboards.",
        "There's no information about that in what I have.",
        "That's not something I can help with, sorry.",
        "I'm sorry, I don't see parking listed.",
    ],
)
def test_declines(answer):
    assert declines(answer)


@pytest.mark.parametrize("answer", ["We're closed on Sundays.", "Yes, we do.", "A tune-up is $65.", ""])
def test_not_declines(answer):
    assert not declines(answer)


def test_out_of_knowledge_is_right_only_when_declining_without_a_figure():
    question = Q(category="out_of_knowledge", expect_any=[], evidence=[])
    assert answer_is_right("I'm sorry, I don't have that information.", question)
    assert answer_is_right("I don't know about that one, sorry.", question)  # "one" is not a figure
    assert not answer_is_right("Skateboards are $80.", question)
    verdict = judge("I'm not sure, but it's probably 80 dollars.", question)
    assert not verdict.right and "figure" in verdict.reason
    assert not answer_is_right("I'm not sure, maybe twenty dollars.", question)
    assert not answer_is_right("", question)


def test_a_question_may_be_its_json_dict():
    assert answer_is_right("It's 15.", q(expect_any=["15"]))


# --- word error rate, retrieval figures, evidence --------------------------------------------------


def test_word_error_rate():
    assert word_error_rate("What time do you open?", "what time do you open") == 0.0
    assert word_error_rate("how much is a tune-up", "how much is the tune up") == pytest.approx(1 / 6)
    assert word_errors("open on saturday", "open saturday") == (1, 3)  # a deletion
    assert word_errors("open saturday", "we open on saturday") == (2, 2)  # two insertions
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "uh") == 1.0


def test_word_error_rate_reads_numbers_as_digits_when_it_can():
    pytest.importorskip("agents.rag.numbers")
    assert word_error_rate("Is it forty-five dollars?", "is it 45 dollars") == 0.0


def test_rank_metrics():
    m = rank_metrics([1, 2, None, 3], 3)
    assert m["n"] == 4 and m["hit@1"] == 0.25 and m["hit@3"] == 0.75
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)
    assert rank_metrics([], 3)["mrr"] is None


def test_evidence_is_found_through_markup():
    passage = "| Service | Price |\n| **Basic  tune-up** | <b>$65</b> |"
    assert holds(passage, ["basic tune-up", "$65"])
    assert not holds(passage, ["full overhaul"])
    assert not holds(passage, [])


def test_report_compares_with_the_previous_run():
    def row(id: str, right: bool, rank: int | None) -> dict:
        return {
            "id": id,
            "category": "figures",
            "split": "dev",
            "retrieval": {"rank": rank},
            "typed": {"right": right, "declined": False},
            "spoken": None,
        }

    before = [row("a", True, 1), row("b", False, None)]
    now = [row("a", False, 1), row("b", True, 2)]
    previous = {"stamp": "20261130T000000Z", "rows": [*before, row("gone", True, 1)]}
    change = report.compare(previous, now, 3)
    assert (change["shared"], change["only_before"]) == (2, 1)
    assert change["flips"]["typed"] == {"right_to_wrong": ["a"], "wrong_to_right": ["b"]}
    assert change["flips"]["retrieval"] == {"right_to_wrong": [], "wrong_to_right": ["b"]}
    assert change["deltas"]["hit@3"]["delta"] == pytest.approx(0.5)
