"""Specification of the knowledge base (RAG): splitting, incremental ingest, hybrid retrieval.

These tests use the real MiniLM embedding model, so the retrieval eval at the bottom measures what a
caller would actually get from the demo knowledge base in agents/knowledge.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from agents.rag.embed import EMBEDDING_DIM, Embedder
from agents.rag.ingest import MAX_PASSAGE_CHARS, ingest_dir, split_markdown, split_text
from agents.rag.retrieve import Retriever, format_context, fts_query, open_knowledge
from agents.rag.store import KnowledgeStore
from voice.models import ensure

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


# ----- splitting -------------------------------------------------------------------------------------


def test_markdown_is_split_along_headings_with_file_and_heading_path() -> None:
    text = (
        "# Opening hours\n\nWe are a shop.\n\n"
        "## Weekdays\n\n8 am to 6 pm.\n\n"
        "## Holidays\n\nClosed at Christmas.\n"
    )
    passages = split_markdown(text, "hours.md", "Hours")
    assert [(p.source, p.heading, p.text) for p in passages] == [
        ("hours.md", "Opening hours", "We are a shop."),
        ("hours.md", "Opening hours > Weekdays", "8 am to 6 pm."),
        ("hours.md", "Opening hours > Holidays", "Closed at Christmas."),
    ]


def test_heading_path_follows_nesting_and_ignores_code_blocks() -> None:
    text = "# A\n## B\n### C\ndeep\n## D\n```\n# not a heading\n```\n"
    passages = split_markdown(text, "x.md", "X")
    assert [p.heading for p in passages] == ["A > B > C", "A > D"]
    assert "# not a heading" in passages[1].text


def test_text_before_any_heading_is_labelled_with_the_file_name() -> None:
    assert split_markdown("Just some notes.\n", "notes.md", "Notes")[0].heading == "Notes"


def test_long_sections_are_split_at_paragraphs_and_short_tails_are_merged() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 60 for i in range(6)]
    passages = split_markdown("# Long\n\n" + "\n\n".join(paragraphs) + "\n\nTiny tail.", "l.md", "L")
    assert len(passages) > 1
    assert all(p.heading == "Long" for p in passages)
    assert all(len(p.text) <= MAX_PASSAGE_CHARS + 200 for p in passages)
    assert passages[-1].text.endswith("Tiny tail.") and passages[-1].text != "Tiny tail."
    # no paragraph is cut in half
    assert all(any(para.strip() in p.text for p in passages) for para in paragraphs)


def test_plain_text_is_split_at_blank_lines_under_the_file_name() -> None:
    passages = split_text("First.\n\nSecond.", "faq.txt", "Faq")
    assert [(p.source, p.heading) for p in passages] == [("faq.txt", "Faq")]
    assert passages[0].text == "First.\n\nSecond."  # short paragraphs are packed together


def test_passages_are_embedded_with_their_heading_as_a_label() -> None:
    passage = split_markdown("# Rentals\n## Prices\nE-bike: $45 per day", "r.md", "R")[0]
    assert passage.embedding_text() == "Rentals > Prices: E-bike: $45 per day"


# ----- ingest ----------------------------------------------------------------------------------------


def test_ingest_reingest_change_and_delete(tmp_path: Path, embedder: Embedder) -> None:
    kb = tmp_path / "kb"
    write(kb / "hours.md", "# Hours\n## Saturday\n9 am to 5 pm\n## Sunday\nClosed\n")
    write(kb / "sub" / "faq.txt", "We fix bikes.\n\nWe rent bikes.")
    write(kb / "ignored.pdf", "not text")
    store = KnowledgeStore.open(tmp_path / "k.db")

    first = ingest_dir(kb, store, embedder)
    assert first.files_added == ["hours.md", "sub/faq.txt"]
    assert first.passages == 3 and first.passages_embedded == 3

    ids_before = store.passage_ids()
    again = ingest_dir(kb, store, embedder)
    assert again.files_unchanged == ["hours.md", "sub/faq.txt"]
    assert not again.changed and again.passages_embedded == 0
    assert store.passage_ids() == ids_before

    write(kb / "hours.md", "# Hours\n## Saturday\n10 am to 4 pm\n")
    (kb / "sub" / "faq.txt").unlink()
    changed = ingest_dir(kb, store, embedder)
    assert changed.files_updated == ["hours.md"] and changed.files_removed == ["sub/faq.txt"]
    assert store.passage_ids("sub/faq.txt") == []
    texts = [p.text for p in store.get(store.passage_ids())]
    assert texts == ["10 am to 4 pm"]
    hits = Retriever(store, embedder).search("Saturday hours")
    assert [h.text for h in hits] == ["10 am to 4 pm"]  # nothing stale in the vectors or the FTS index


def test_store_survives_reopen(tmp_path: Path, embedder: Embedder) -> None:
    write(tmp_path / "kb" / "a.md", "# Parking\nFree lot behind the shop.")
    with KnowledgeStore.open(tmp_path / "k.db") as store:
        ingest_dir(tmp_path / "kb", store, embedder)
    with KnowledgeStore.open(tmp_path / "k.db") as store:
        assert ingest_dir(tmp_path / "kb", store, embedder).files_unchanged == ["a.md"]
        assert Retriever(store, embedder).search("where can I park")[0].heading == "Parking"


# ----- retrieval -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ['What\'s "open" on Sat?!', "hours AND NEAR(x) OR", 'col:"unbalanced', "*^-()", "   ", "", "the of and"],
)
def test_queries_with_punctuation_quotes_or_fts_syntax_never_raise(retriever: Retriever, query: str) -> None:
    retriever.search(query)


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
        ("Can I pay with my phone?", "Store policies > Payment"),
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


def test_format_context_labels_each_passage_with_its_heading(retriever: Retriever) -> None:
    context = format_context(retriever.search("What time do you open on Saturday?"))
    assert context.startswith("[Opening hours > Weekly hours]\n")
    assert "On Saturday we are open from 9 am to 5 pm" in context


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
    found = " ".join(f"{h.heading}\n{h.text}" for h in hits).lower()
    assert any(s in found for s in item["expect_any"]), (
        f"{item['question']!r}: none of {item['expect_any']} in {[h.heading for h in hits]}"
    )
