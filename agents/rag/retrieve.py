"""Hybrid retrieval over the knowledge store: FTS5 keywords plus vector similarity, fused by rank.

Keywords catch exact, rare words a caller says ("derailleur", a street name, "Shimano"); vectors catch
paraphrases ("when do you shut on the weekend" vs "Saturday 9 am to 5 pm"). Reciprocal rank fusion
combines the two lists without having to calibrate bm25 scores against cosines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agents.rag.embed import Embedder
from agents.rag.ingest import ingest_dir
from agents.rag.store import KnowledgeStore

# Three passages (~1,500 chars) answer nearly every caller question and keep the prompt, hence the
# LLM's time to first token, small.
DEFAULT_TOP_K = 3
# RRF constant from Cormack et al. (2009); 60 damps the difference between rank 1 and rank 2 so one
# list cannot drown the other, and it is the value that works well across collections without tuning.
RRF_K = 60
# Each retriever proposes this many candidates (at least) for fusion: enough that a passage ranked
# moderately by both lists can overtake one ranked first by only one of them.
CANDIDATES_PER_LIST = 20
# Keywords shorter than this are noise ("s" from "what's"); digits are kept whatever their length
# because "5" in "size 5" or "9" in "open at 9" matters.
MIN_KEYWORD_CHARS = 2

# Function words, the conversational filler of spoken questions, and the leftovers of contractions
# ("doesn" from "doesn't"). They carry no topic, and in an OR query they would match nearly every passage.
_STOPWORD_TEXT = """
    a about after again all also am an and any are as at be because been before being but by can
    could did do does doing for from get got had has have having he her here hers him his how i if in
    into is it its just let me might more most much my need no nor not of off on once only or other
    our ours out over own please same she should so some such than that the their theirs them then
    there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself hi hello hey okay ok um uh er like yeah
    yes thanks thank tell know want wanted wondering wonder guys anyone someone something possible
    anything anywhere somewhere kind sort really actually usually exactly maybe go going
    don doesn didn isn aren wasn weren won wouldn couldn shouldn haven hasn hadn ll ve re
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"\w+(?:-\w+)*", re.UNICODE)  # words, keeping hyphenated compounds whole


@dataclass(frozen=True)
class Hit:
    """One retrieved passage. `score` is its fused RRF score (higher is better, only for ranking)."""

    source: str
    heading: str
    text: str
    score: float


def keywords(query: str) -> list[str]:
    """The topic words of a query, lowercased, de-duplicated, stopwords dropped, in order of appearance.

    Hyphenated compounds stay whole ("e-bike", "tune-up"): split up, "e" would be dropped as noise and
    "up" as a stopword, losing exactly the word that says what the caller wants.
    """
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        parts = [p for p in word.replace("_", "-").split("-") if p]
        if not parts:
            continue
        if len(parts) == 1:
            word = parts[0]
            if word in STOPWORDS or (len(word) < MIN_KEYWORD_CHARS and not word.isdigit()):
                continue
        elif all(p in STOPWORDS for p in parts):
            continue
        seen.setdefault("-".join(parts), None)
    return list(seen)


def fts_query(query: str) -> str:
    """Make a safe FTS5 MATCH expression from free text: each keyword double-quoted, OR-ed together.

    Quoting makes every keyword a literal string (a compound like "e-bike" becomes the phrase "e bike"),
    so the caller's words can never be read as FTS5 syntax (AND, NEAR, column:, *, ^, unbalanced quotes).
    Keywords hold only word characters and hyphens, so there is no double quote to escape.
    Returns "" when nothing searchable is left.
    """
    return " OR ".join(f'"{word.replace("-", " ")}"' for word in keywords(query))


# Whisper reads at most 224 prompt tokens; ~640 characters of headings is ~140 tokens, enough to
# teach it the business's words ("tune-up", "e-bike") without slowing decoding.
VOCABULARY_MAX_CHARS = 640


class Retriever:
    """Hybrid keyword + vector search over a `KnowledgeStore`."""

    def __init__(self, store: KnowledgeStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder

    def search(self, query: str, k: int = DEFAULT_TOP_K) -> list[Hit]:
        """Return up to `k` passages for `query`, best first. Never raises on odd user text."""
        if not query.strip() or k <= 0:
            return []
        n = max(CANDIDATES_PER_LIST, 4 * k)
        keyword_ranked = self.keyword_search(query, n)
        vector_ranked = self.vector_search(query, n)
        fused: dict[int, float] = {}
        for ranked in (keyword_ranked, vector_ranked):
            for rank, (pid, _) in enumerate(ranked, start=1):
                fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(fused, key=lambda pid: fused[pid], reverse=True)[:k]
        return [Hit(p.source, p.heading, p.text, fused[p.id]) for p in self.store.get(best)]

    def vocabulary(self, max_chars: int = VOCABULARY_MAX_CHARS) -> str:
        """The knowledge base's headings as one line, in order: the words callers will use."""
        seen: list[str] = []
        for passage in self.store.get(self.store.passage_ids()):
            for part in passage.heading.split(" > "):
                if part not in seen:
                    seen.append(part)
        line = ""
        for term in seen:
            candidate = f"{line}, {term}" if line else term
            if len(candidate) > max_chars:
                break
            line = candidate
        return f"{line}." if line else ""

    def keyword_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """FTS5 bm25 search alone: (passage id, score) best first."""
        return self.store.keyword_search(fts_query(query), k)

    def vector_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Cosine search alone: (passage id, cosine) best first."""
        return self.store.vector_search(self.embedder.embed([query])[0], k)


def unwrap(text: str) -> str:
    """Join hard-wrapped lines inside paragraphs: a small model reads a line break as a new fact."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n".join(" ".join(p.split()) for p in paragraphs)


def format_context(hits: list[Hit]) -> str:
    """Render hits for an LLM prompt: one block per passage, labelled with its heading path."""
    return "\n\n".join(f"[{hit.heading}]\n{unwrap(hit.text)}" for hit in hits)


def open_knowledge(knowledge_dir: Path, db_path: Path, embedder: Embedder) -> Retriever:
    """Open the store at `db_path`, bring it up to date with `knowledge_dir`, and return a retriever."""
    store = KnowledgeStore.open(db_path)
    ingest_dir(knowledge_dir, store, embedder)
    return Retriever(store, embedder)
