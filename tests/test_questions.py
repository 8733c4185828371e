"""The questions the LLM writes for each fact at ingest: parsed from its reply, cached by content, and
indexed as keywords beside the fact. The LLM is a fake OpenAI-compatible endpoint here."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agents.llm import LLMEndpoint
from agents.rag.embed import Embedder
from agents.rag.ingest import ingest_dir
from agents.rag.questions import QuestionWriter, parse_questions
from agents.rag.retrieve import Retriever
from agents.rag.store import KnowledgeStore
from voice.catalogue import ensure

ENDPOINT = LLMEndpoint("http://llm.test/v1", "fake", "")


class FakeLLM:
    """Answers a chat completion about a tune-up with `reply` and any other with `other`, or every one
    with HTTP `status`; counts the requests."""

    def __init__(
        self,
        reply: str = "How much is a tune-up?\nWhat does servicing cost?",
        other: str = "Where do I leave my car?",
        status: int = 200,
    ):
        self.reply, self.other, self.status, self.requests = reply, other, status, 0

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests += 1
            fact = json.loads(request.content)["messages"][-1]["content"]
            content = self.reply if "tune-up" in fact else self.other
            return httpx.Response(self.status, json={"choices": [{"message": {"content": content}}]})

        return httpx.MockTransport(handle)


def writer(llm: FakeLLM, cache: Path) -> QuestionWriter:
    return QuestionWriter(ENDPOINT, "fake-model", cache, transport=llm.transport())


def test_questions_are_read_one_per_line_without_list_marks_or_chatter():
    reply = 'Here are three questions:\n1. How much is it?\n- "Do you rent e-bikes?"\nThanks\n3) Is it open?\n4. More?'
    assert parse_questions(reply) == ["How much is it?", "Do you rent e-bikes?", "Is it open?"]


def test_a_facts_questions_are_written_once_and_found_in_the_cache_after(tmp_path: Path):
    llm = FakeLLM()
    first = writer(llm, tmp_path / "cache.json")
    assert first.questions("Prices", "A tune-up costs $65.") == [
        "How much is a tune-up?",
        "What does servicing cost?",
    ]
    first.save()
    again = writer(llm, tmp_path / "cache.json")  # a new process, the same cache file
    assert again.questions("Prices", "A tune-up costs $65.") == [
        "How much is a tune-up?",
        "What does servicing cost?",
    ]
    assert llm.requests == 1
    again.questions("Prices", "A tune-up costs $70.")  # the fact changed: its questions are written anew
    assert llm.requests == 2


def test_a_failing_llm_leaves_the_fact_without_questions(tmp_path: Path):
    assert (
        writer(FakeLLM(status=500), tmp_path / "cache.json").questions("Prices", "A tune-up costs $65.") == []
    )


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(ensure("minilm-l6-int8"))


def test_a_fact_is_found_by_a_word_only_its_questions_use(tmp_path: Path, embedder: Embedder):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "shop.md").write_text(
        "# Workshop\n\nA tune-up costs $65.\n\n# Parking\n\nThe lot is behind the shop.\n"
    )
    llm = FakeLLM(reply="How much is servicing?")
    store = KnowledgeStore.open(tmp_path / "k.db")
    ingest_dir(kb, store, embedder, writer(llm, tmp_path / "cache.json"))
    assert Retriever(store, embedder).keyword_search("servicing", 1)[0][0] == store.fact_ids()[0]
    assert json.loads((tmp_path / "cache.json").read_text())  # kept for the next start
