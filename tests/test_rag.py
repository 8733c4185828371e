"""Specification of the knowledge base (RAG): splitting, incremental ingest, hybrid retrieval.

These tests use the real MiniLM embedding model, so the retrieval eval at the bottom measures what a
caller would actually get from the demo knowledge base in agents/knowledge.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from agents.rag.embed import EMBEDDING_DIM, Embedder
from agents.rag.facts import document_facts, split_sentences
from agents.rag.ingest import ingest_dir
from agents.rag.parse import Block, BlockKind, Document
from agents.rag.retrieve import (
    Retriever,
    days_named,
    format_context,
    fts_query,
    is_follow_up,
    open_knowledge,
)
from agents.rag.store import KnowledgeStore
from voice.catalogue import ensure

ROOT = Path(__file__).resolve().parents[1]
KNOWLEDGE_DIR = ROOT / "agents" / "knowledge"
QUESTIONS = json.loads((ROOT / "benchmarks" / "questions.json").read_text())
EVAL_TOP_K = 3  # what the agent puts in the prompt; the right fact must be among these


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(ensure("minilm-l6-int8"))


@pytest.fixture(scope="module")
def retriever(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    return open_knowledge(KNOWLEDGE_DIR, tmp_path_factory.mktemp("kb") / "knowledge.db", embedder)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----- embeddings ------------------------------------------------------------------------------------


def test_embeddings_are_unit_float32_rows_and_similar_texts_are_closer(embedder: Embedder) -> None:
    vectors = embedder.embed(["When do you open?", "What are your opening hours?", "A flat tyre repair"])
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_embedding_does_not_depend_on_batch_padding(embedder: Embedder) -> None:
    alone = embedder.embed(["Saturday hours"])[0]
    batched = embedder.embed(["Saturday hours", "a much longer sentence that forces padding " * 5])[0]
    np.testing.assert_allclose(alone, batched, atol=1e-4)


# ----- facts -----------------------------------------------------------------------------------------


def doc(*blocks: Block, title: str = "Rentals") -> Document:
    return Document("rentals.md", title, list(blocks))


def para(text: str, *headings: str, line: int = 3) -> Block:
    return Block(BlockKind.PARAGRAPH, text, headings or ("Rentals", "Prices"), line)


def test_each_sentence_of_a_paragraph_is_a_fact_labelled_with_its_heading_path() -> None:
    facts = document_facts(doc(para("A city bike costs $25 a day. An e-bike costs $45 a day.", line=7)))
    assert [(f.heading, f.text, f.line) for f in facts] == [
        ("Rentals > Prices", "A city bike costs $25 a day.", 7),
        ("Rentals > Prices", "An e-bike costs $45 a day.", 7),
    ]


def test_a_sentence_that_leans_on_the_one_before_stays_with_it() -> None:
    text = "Our e-bike service costs $95. It covers a battery check. A tune-up costs $65."
    assert [f.text for f in document_facts(doc(para(text)))] == [
        "Our e-bike service costs $95. It covers a battery check.",
        "A tune-up costs $65.",
    ]


def test_a_question_the_text_asks_itself_and_a_sentence_opening_with_or_stay_with_their_neighbour() -> None:
    text = (
        "Bought a bike online and it came in a box? We put it together for $75. A bike fit is $50. "
        "The station is a 10-minute walk. Or 3 minutes by bike."
    )
    assert [f.text for f in document_facts(doc(para(text)))] == [
        "Bought a bike online and it came in a box? We put it together for $75.",
        "A bike fit is $50.",
        "The station is a 10-minute walk. Or 3 minutes by bike.",
    ]


def test_two_prices_in_one_sentence_are_two_facts_and_the_second_keeps_the_rate_and_subject() -> None:
    text = "A city bike is twenty-five dollars a day and an e-bike is forty-five. A wheel is trued for $28, while a spoke is $32."
    assert [f.text for f in document_facts(doc(para(text)))] == [
        "A city bike is $25 a day.",
        "An e-bike is $45 a day.",
        "A wheel is trued for $28.",
        "A spoke is $32.",
    ]


def test_a_short_paragraph_with_one_figure_at_most_stays_one_fact() -> None:
    text = "There is a free lot behind the shop. Street parking is limited to 2 hours. Racks are outside."
    assert [f.text for f in document_facts(doc(para(text)))] == [text]


def test_abbreviations_and_times_do_not_end_a_sentence() -> None:
    sentences = split_sentences("We open at 8 a.m. on weekdays, e.g. Monday. Dr. Smith sees you at 9.")
    assert sentences == ["We open at 8 a.m. on weekdays, e.g. Monday.", "Dr. Smith sees you at 9."]


def test_numbers_in_words_reach_the_llm_as_digits_and_the_wording_is_kept() -> None:
    fact = document_facts(doc(para("An e-bike costs forty-five dollars a day.")))[0]
    assert "$45" in fact.text
    assert fact.original == "An e-bike costs forty-five dollars a day."
    assert "forty-five" in fact.keyword_extra()


def test_a_list_of_plain_short_items_is_one_fact_and_a_price_list_one_fact_an_item() -> None:
    facts = document_facts(
        doc(
            Block(BlockKind.LIST_ITEM, "cash", ("Payment",), 4, lead="We accept:"),
            Block(BlockKind.LIST_ITEM, "cards", ("Payment",), 5, lead="We accept:"),
            Block(BlockKind.LIST_ITEM, "Flat tyre: $15", ("Repairs",), 8, lead="Our prices:"),
            Block(BlockKind.LIST_ITEM, "Tune-up: sixty-five dollars", ("Repairs",), 9, lead="Our prices:"),
        )
    )
    assert [f.text for f in facts] == [
        "We accept: cash; cards.",
        "Our prices: Flat tyre: $15",
        "Our prices: Tune-up: $65",
    ]


def test_a_table_row_is_a_fact_and_a_row_saying_one_thing_says_it_once() -> None:
    header = ("Day", "Opens", "Closes")
    facts = document_facts(
        doc(
            Block(
                BlockKind.TABLE_ROW,
                "Saturday: Opens 9:00, Closes 13:00",
                ("Hours",),
                9,
                header=header,
                cells=("Saturday", "9:00", "13:00"),
            ),
            Block(
                BlockKind.TABLE_ROW,
                "Sunday: Opens Closed, Closes Closed",
                ("Hours",),
                10,
                header=header,
                cells=("Sunday", "Closed", "Closed"),
            ),
        )
    )
    assert [f.text for f in facts] == ["Saturday: Opens 9:00, Closes 13:00", "Sunday: Closed"]


def test_an_faq_answer_is_one_fact_found_by_its_question_too() -> None:
    block = Block(BlockKind.FAQ, "No, you can book directly.", ("FAQ",), 2, question="Do I need a referral?")
    fact = document_facts(doc(block))[0]
    assert fact.text == "No, you can book directly."
    assert fact.embedding_texts() == ["FAQ: No, you can book directly.", "Do I need a referral?"]


def test_text_under_no_heading_is_labelled_with_the_document_title() -> None:
    block = Block(BlockKind.PARAGRAPH, "We fix bikes.", (), 1)
    assert document_facts(doc(block, title="Juniper Street Bikes"))[0].heading == "Juniper Street Bikes"


# ----- ingest ----------------------------------------------------------------------------------------


def test_ingest_reingest_change_and_delete(tmp_path: Path, embedder: Embedder) -> None:
    kb = tmp_path / "kb"
    write(kb / "hours.md", "# Hours\n## Saturday\n9 am to 5 pm\n## Sunday\nClosed\n")
    write(kb / "sub" / "faq.txt", "We fix bikes.\n\nWe rent bikes.")
    write(kb / "ignored.docx", "not a format ingest reads")
    store = KnowledgeStore.open(tmp_path / "k.db")

    first = ingest_dir(kb, store, embedder)
    assert first.files_added == ["hours.md", "sub/faq.txt"]
    assert first.facts == 4 and first.facts_embedded == 4

    ids_before = store.fact_ids()
    again = ingest_dir(kb, store, embedder)
    assert again.files_unchanged == ["hours.md", "sub/faq.txt"]
    assert not again.changed and again.facts_embedded == 0
    assert store.fact_ids() == ids_before

    write(kb / "hours.md", "# Hours\n## Saturday\n10 am to 4 pm\n")
    (kb / "sub" / "faq.txt").unlink()
    changed = ingest_dir(kb, store, embedder)
    assert changed.files_updated == ["hours.md"] and changed.files_removed == ["sub/faq.txt"]
    assert store.fact_ids("sub/faq.txt") == []
    assert [f.text for f in store.get(store.fact_ids())] == ["10 am to 4 pm"]
    hits = Retriever(store, embedder).search("Saturday hours")
    assert [h.text for h in hits] == ["10 am to 4 pm"]  # nothing stale in the vectors or the FTS index


def test_a_file_that_cannot_be_read_is_reported_and_the_rest_is_ingested(
    tmp_path: Path, embedder: Embedder
) -> None:
    kb = tmp_path / "kb"
    write(kb / "hours.md", "# Hours\nOpen 9 to 5.\n")
    (kb / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a PDF")
    report = ingest_dir(kb, KnowledgeStore.open(tmp_path / "k.db"), embedder)
    assert report.files_added == ["hours.md"]
    assert list(report.files_failed) == ["broken.pdf"] and "broken.pdf" in report.files_failed["broken.pdf"]


def test_store_survives_reopen(tmp_path: Path, embedder: Embedder) -> None:
    write(tmp_path / "kb" / "a.md", "# Parking\nFree lot behind the shop.")
    with KnowledgeStore.open(tmp_path / "k.db") as store:
        ingest_dir(tmp_path / "kb", store, embedder)
    with KnowledgeStore.open(tmp_path / "k.db") as store:
        assert ingest_dir(tmp_path / "kb", store, embedder).files_unchanged == ["a.md"]
        assert Retriever(store, embedder).search("where can I park")[0].heading == "Parking"


def test_an_index_from_an_older_version_is_rebuilt(tmp_path: Path, embedder: Embedder) -> None:
    db = tmp_path / "k.db"
    with sqlite3.connect(db) as old:  # the passage index of Parley before facts
        old.execute("CREATE TABLE files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL)")
        old.execute("INSERT INTO files VALUES ('a.md', 'stale')")
    write(tmp_path / "kb" / "a.md", "# Parking\nFree lot behind the shop.")
    with KnowledgeStore.open(db) as store:
        assert ingest_dir(tmp_path / "kb", store, embedder).files_added == ["a.md"]


# ----- retrieval -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ('What\'s "open" on Sat?!', "Saturday"),
        ("hours AND NEAR(x) OR", "open"),
        ('parking:"unbalanced', "park"),
        ("*^-() tune-up", "tune-up"),
    ],
)
def test_punctuation_quotes_and_fts_syntax_in_a_question_are_read_as_words(
    retriever: Retriever, query: str, found: str
) -> None:
    assert any(found.lower() in f"{h.heading} {h.text}".lower() for h in retriever.search(query))


@pytest.mark.parametrize("query", ["   ", ""])
def test_an_empty_question_finds_nothing(retriever: Retriever, query: str) -> None:
    assert retriever.search(query) == []


def test_fts_query_quotes_keywords_and_drops_stopwords() -> None:
    assert fts_query('What\'s the "price" of a tune-up?') == '"price" OR "tune up"'
    assert fts_query("rent an e-bike") == '"rent" OR "e bike"'
    assert fts_query("is it open at 9") == '"open" OR "9"'
    assert fts_query("and the of") == ""


def test_keyword_search_finds_an_exact_rare_word(retriever: Retriever) -> None:
    query = "Do you work on Bafang motors?"
    top = retriever.store.get([retriever.keyword_search(query, 1)[0][0]])[0]
    assert "Bafang" in top.text
    assert any("Bafang" in hit.text for hit in retriever.search(query))


@pytest.mark.parametrize(
    ("query", "heading"),
    [
        ("is my kid old enough to hire one by himself", "Rentals > Deposit and ID"),
    ],
)
def test_vector_search_finds_a_paraphrase(retriever: Retriever, query: str, heading: str) -> None:
    top = retriever.store.get([retriever.vector_search(query, 1)[0][0]])[0]
    assert top.heading == heading
    # ... which keyword search alone does not rank first
    assert retriever.store.get([retriever.keyword_search(query, 1)[0][0]])[0].heading != heading


def test_search_returns_k_hits_best_first(retriever: Retriever) -> None:
    hits = retriever.search("How much is a basic tune-up?", k=4)
    assert len(hits) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert "$65" in hits[0].text


def test_format_context_gives_each_fact_a_line_labelled_with_its_heading(retriever: Retriever) -> None:
    context = format_context(retriever.search("What time do you open on Saturday?"))
    assert context.startswith("- [Opening hours > Weekly hours] On Saturday we are open from 9 am to 5 pm.")
    assert len(context.splitlines()) == 3


@pytest.mark.parametrize(
    ("question", "follows"),
    [("And on Sunday?", True), ("What about for kids?", True), ("How long does that take?", True)]
    + [("How much is a basic tune-up?", False), ("Where exactly are you located?", False)],
)
def test_a_short_question_leaning_on_the_one_before_is_a_follow_up(question: str, follows: bool) -> None:
    assert is_follow_up(question) is follows


def test_a_follow_up_finds_its_fact_with_the_question_before_it(retriever: Retriever) -> None:
    hits = retriever.search("And on Sunday?", k=1, previous="What time do you open on Saturday?")
    assert "Sunday" in hits[0].text
    alone = retriever.search(
        "How much is a basic tune-up?", k=1, previous="What time do you open on Saturday?"
    )
    assert "$65" in alone[0].text  # a whole question is searched on its own


HOURS_PROSE = (
    "# When we're open\n\nWe open at 8 every weekday morning. On Monday, Tuesday, Wednesday and Friday we "
    "close at 6 pm, but on Thursday we stay open until 7:30. Saturdays are a bit shorter: we open at 9 and "
    "lock up at 5. We're closed on Sundays, which is when we go riding ourselves.\n"
)


def test_a_question_about_one_day_is_not_answered_by_a_fact_about_other_days(
    tmp_path: Path, embedder: Embedder
) -> None:
    write(tmp_path / "kb" / "hours.md", HOURS_PROSE)
    retriever = open_knowledge(tmp_path / "kb", tmp_path / "k.db", embedder)
    hits = retriever.search("When do you close on Fridays?")
    assert "Friday we close at 6 pm" in hits[0].text
    assert not any(h.agreed for h in hits if "Sundays" in h.text)
    follow_up = retriever.search("And what time do you close?", previous="What time do you open on Saturday?")
    assert "lock up at 5" in follow_up[0].text


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("When do you close on Fridays?", {"fri"}),
        ("Monday to Wednesday, 9 to 5", {"mon", "tue", "wed"}),
        ("from Friday through Monday", {"fri", "sat", "sun", "mon"}),
        ("We open at 8 every weekday morning.", {"mon", "tue", "wed", "thu", "fri"}),
        ("weekend hours", {"sat", "sun"}),
        ("open every day of the year", {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}),
        ("What time do you open?", set()),
    ],
)
def test_the_days_a_text_names_are_read_from_names_ranges_and_groups(text: str, days: set[str]) -> None:
    week = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert {day for i, day in enumerate(week) if days_named(text) >> i & 1} == days


def test_an_faq_question_finds_its_answer_when_asked_in_other_words(
    tmp_path: Path, embedder: Embedder
) -> None:
    write(
        tmp_path / "kb" / "faq.md",
        "# FAQ\n\nQ: Do I need a referral from my doctor?\nA: No, you can book with us directly.\n\n"
        "Q: Is there parking?\nA: Yes, behind the building.\n",
    )
    hits = open_knowledge(tmp_path / "kb", tmp_path / "k.db", embedder).search("Does my GP have to send me?")
    assert hits[0].text == "No, you can book with us directly."


def test_searching_from_worker_threads_is_safe(retriever: Retriever) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                assert retriever.search("Where do I park?")
        except BaseException as exc:  # surfaced to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ----- retrieval eval: every benchmark question finds its fact in the top 3 ---------------------------


@pytest.mark.parametrize("item", QUESTIONS, ids=[q["id"] for q in QUESTIONS])
def test_benchmark_question_retrieves_its_fact_in_top_3(retriever: Retriever, item: dict) -> None:
    hits = retriever.search(item["question"], k=EVAL_TOP_K)
    found = " ".join(f"{h.heading}\n{h.text}\n{h.original}" for h in hits).lower()
    assert any(s in found for s in item["expect_any"]), (
        f"{item['question']!r}: none of {item['expect_any']} in {[h.heading for h in hits]}"
    )


def test_a_fact_both_searches_put_on_top_is_marked_as_agreed(retriever: Retriever) -> None:
    hits = retriever.search("What's your phone number?", k=3)
    assert hits[0].agreed and "014-2290" in hits[0].text


def test_a_keyword_in_most_facts_is_left_out_unless_it_is_the_only_one() -> None:
    common = {"branch"}.__contains__
    assert fts_query("How much is a tandem at the Elm branch?", common) == '"tandem" OR "elm"'
    assert fts_query("The branch?", common) == '"branch"'
