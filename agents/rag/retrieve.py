"""Hybrid retrieval over the knowledge store's facts: FTS5 keywords plus vector similarity, fused by
rank, and a judgement of whether the knowledge answers the question at all.

Keywords catch exact, rare words a caller says ("derailleur", a street name, "Shimano"); vectors catch
paraphrases ("when do you shut on the weekend" vs "Saturday 9 am to 5 pm"). Reciprocal rank fusion
combines the two lists without having to calibrate bm25 scores against cosines. The best cosine of
each fact is kept beside its fused score: it says how close the knowledge comes to the question, so
that a question the knowledge does not answer is declined instead of answered from a stray fact.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.rag.embed import Embedder
from agents.rag.ingest import ingest_dir
from agents.rag.questions import QuestionWriter
from agents.rag.store import KnowledgeStore, top_indices

log = logging.getLogger(__name__)

# Three facts (~300 characters) answer nearly every caller question and keep the prompt, hence the
# LLM's time to first token, small.
DEFAULT_TOP_K = 3
# RRF constant from Cormack et al. (2009); 60 damps the difference between rank 1 and rank 2 so one
# list cannot drown the other, and it is the value that works well across collections without tuning.
RRF_K = 60
# Each retriever proposes this many candidates (at least) for fusion: enough that a fact ranked
# moderately by both lists can overtake one ranked first by only one of them.
CANDIDATES_PER_LIST = 20
# Keywords shorter than this are noise ("s" from "what's"); digits are kept whatever their length
# because "5" in "size 5" or "9" in "open at 9" matters.
MIN_KEYWORD_CHARS = 2
# A question of at most this many words says too little to be searched alone ("Sunday?", "For kids?").
FOLLOW_UP_MAX_WORDS = 2
# A question with at most this many topic words and a word pointing back ("How long does that
# take?") leans on the one before it.
FOLLOW_UP_MAX_KEYWORDS = 4
# Openings that mark a follow-up whatever its length ("and what about the weekly price for kids?").
FOLLOW_UP_OPENERS = ("and ", "what about", "how about", "but ", "also ", "or ", "so ", "then ")
# Words that point back at the previous question's subject.
FOLLOW_UP_POINTERS = frozenset(
    ["it", "that", "those", "them", "they", "there", "this", "these", "one", "ones"]
)

# A fact that both the keyword and the vector search rank this high is about the question, however
# low its cosine ("What's your phone number?" scores 0.15 against "Phone: (555) 014-2290"), and is
# not declined. On the eval bases, 2 keeps 2 of 3 answerable questions that the cosine alone declined
# and lets 3 of 21 out-of-knowledge ones through to the LLM (1: keeps 1, lets none; 3: keeps 3, lets 7);
# on the demo knowledge it keeps "Can I bring something back?" and "What's your phone number?".
AGREEMENT_RANK = 2
# What kind of answer a question asks for, and how a fact that gives one looks (after `to_digits`,
# so figures are digits). "How much is the first assessment?" wants a fact with a price in it, not
# the one that says how long the assessment takes: the facts that have the kind of answer asked for
# are ranked as a list of their own and fused with the other two.
ANSWER_KINDS = {
    "price": (
        re.compile(r"\bhow much\b|\bcosts?\b|\bprices?\b|\bfees?\b|\bcharge|\bexpensive|\bcheap|\brates?\b"),
        re.compile(r"[$£€]\s?\d|\b\d+(?:\.\d+)?\s?(?:dollars?|cents?|pounds?|euros?|pence)\b|\bfree\b", re.I),
    ),
    "time": (
        re.compile(
            r"\bwhat time\b|\bhow (?:late|early)\b|\bhours\b|\bwhen (?:do|does|are|is)\b.*\b(?:open|close)"
        ),
        # "9 am", "7:30", "closed", and an hour said plainly: "opens at 9", "from 10 until 1".
        re.compile(
            r"\b\d{1,2}(?::\d\d)?\s?(?:am|pm)\b|\b\d{1,2}:\d\d\b|\bclosed\b"
            r"|\b(?:at|until|till|from|opens?|closes?)\s+(?:at\s+)?(?:\d{1,2}|one|noon|midday)\b",
            re.I,
        ),
    ),
    "duration": (
        re.compile(r"\bhow long\b"),
        # "20 minutes", "2 working days", "a week", "an hour".
        re.compile(
            r"\b\d+\s?(?:-\s?)?(?:[a-z]+\s)?(?:minutes?|hours?|days?|weeks?|months?|years?)\b"
            r"|\ban? (?:[a-z]+\s)?(?:hour|day|week|month|year)\b",
            re.I,
        ),
    ),
    "count": (
        re.compile(r"\bhow many\b|\bhow old\b|\bwhat age\b"),
        re.compile(r"\b\d+\b"),
    ),
}


def answer_kind(question: str) -> str | None:
    """The kind of answer a question asks for ("price", "time", "duration", "count"), if it says."""
    plain = question.lower()
    return next((kind for kind, (asks, _) in ANSWER_KINDS.items() if asks.search(plain)), None)


def gives(kind: str, text: str) -> bool:
    """Whether a fact's text holds an answer of that kind."""
    return bool(ANSWER_KINDS[kind][1].search(text))


# The days of the week, as callers and documents name them. A question about one day ("When do you
# close on Fridays?") is not answered by a fact about other days only ("We're closed on Sundays"),
# however alike the two look to keywords and to meaning: such a fact is ranked after every fact that
# is not about other days, and is never taken as the sure answer.
_DAY = r"(mon|tues|wednes|thurs|fri|satur|sun)days?"
_DAY_INDEX = {"mon": 0, "tues": 1, "wednes": 2, "thurs": 3, "fri": 4, "satur": 5, "sun": 6}
_DAY_NAME = re.compile(rf"\b{_DAY}\b")
_DAY_RANGE = re.compile(rf"\b{_DAY}\s*(?:to|through|thru|until|till|-|–)\s*{_DAY}\b")
WEEKDAYS_MASK = 0b0011111
WEEKEND_MASK = 0b1100000
EVERY_DAY_MASK = 0b1111111
_DAY_GROUPS = (
    (re.compile(r"\bweekdays?\b|\bworking days?\b"), WEEKDAYS_MASK),
    (re.compile(r"\bweekends?\b"), WEEKEND_MASK),
    (re.compile(r"\bevery day\b|\bdaily\b|\bseven days a week\b|\b7 days a week\b"), EVERY_DAY_MASK),
)


def days_named(text: str) -> int:
    """The days of the week `text` names, as a bit mask (bit 0 Monday … bit 6 Sunday): day names,
    ranges ("Monday to Friday"), weekdays, weekends, every day. 0: it names none."""
    plain = text.lower()
    mask = 0
    for first, last in _DAY_RANGE.findall(plain):
        start, end = _DAY_INDEX[first], _DAY_INDEX[last]
        for i in range((end - start) % 7 + 1):
            mask |= 1 << ((start + i) % 7)
    for prefix in _DAY_NAME.findall(plain):
        mask |= 1 << _DAY_INDEX[prefix]
    for pattern, days in _DAY_GROUPS:
        if pattern.search(plain):
            mask |= days
    return mask


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
    """One retrieved fact. `score` is its fused RRF score (only for ranking); `cosine` its best vector
    similarity to the question (how close the knowledge comes to it)."""

    source: str
    heading: str
    text: str
    score: float
    original: str = ""  # the fact as the document words it
    line: int = 0  # where it is in its source file (a PDF's page)
    cosine: float = 0.0
    questions: tuple[str, ...] = ()
    agreed: bool = False  # ranked near the top by keywords and by meaning alike: about the question


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


def fts_query(query: str, too_common: Callable[[str], bool] | None = None) -> str:
    """Make a safe FTS5 MATCH expression from free text: each keyword double-quoted, OR-ed together.

    Quoting makes every keyword a literal string (a compound like "e-bike" becomes the phrase "e bike"),
    so the caller's words can never be read as FTS5 syntax (AND, NEAR, column:, *, ^, unbalanced quotes).
    Keywords hold only word characters and hyphens, so there is no double quote to escape.
    Returns "" when nothing searchable is left. Keywords `too_common` says are in so many facts that
    scoring them costs more than they tell are left out, unless every keyword is.
    """
    words = keywords(query)
    if too_common is not None:
        words = [w for w in words if not too_common(w)] or words
    return " OR ".join(f'"{word.replace("-", " ")}"' for word in words)


# A keyword in more facts than this is left out of the keyword search (unless it is the only one):
# bm25 scores every fact a term matches, so on 10,000 facts a word in most of them ("bike" at a bike
# shop) cost ~10 ms a query while telling the facts apart hardly at all. Far above any one
# business's knowledge (the eval bases have under 200 facts), so only large bases are touched.
COMMON_KEYWORD_FACTS = 1000

# Whisper reads at most 224 prompt tokens; ~640 characters of headings is ~140 tokens, enough to
# teach it the business's words ("tune-up", "e-bike") without slowing decoding.
VOCABULARY_MAX_CHARS = 640


def is_follow_up(question: str) -> bool:
    """A question that only makes sense after the one before it ("And on Sunday?")."""
    plain = " ".join(re.findall(r"[\w'-]+", question.lower()))
    if plain.startswith(FOLLOW_UP_OPENERS):
        return True
    words = plain.split()
    if len(words) <= FOLLOW_UP_MAX_WORDS:
        return True
    return len(keywords(question)) <= FOLLOW_UP_MAX_KEYWORDS and bool(FOLLOW_UP_POINTERS & set(words))


class Retriever:
    """Hybrid keyword + vector search over a `KnowledgeStore`."""

    def __init__(self, store: KnowledgeStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder
        self._kinds: dict[str, np.ndarray] = {}
        self._days = np.zeros(0, dtype=np.int64)  # each fact's `days_named`, in the store's vector order
        self._derived_version = -1

    def search(self, query: str, k: int = DEFAULT_TOP_K, previous: str = "") -> list[Hit]:
        """Return up to `k` facts for `query`, best first. `previous` is the caller's question before
        this one: a follow-up ("And on Sunday?") is searched both alone and together with it, so its
        own words count twice and the earlier question's once. Never raises on odd user text."""
        if not query.strip() or k <= 0:
            return []
        queries = [query]
        if previous.strip() and is_follow_up(query):
            queries.append(f"{previous.strip()} {query.strip()}")
        n = max(CANDIDATES_PER_LIST, 4 * k)
        fused: dict[int, float] = {}
        cosine_of: dict[int, float] = {}
        agreed: set[int] = set()
        kind = answer_kind(query) or (answer_kind(previous) if len(queries) > 1 else None)
        ids, all_cosines = self.store.cosines(self.embedder.embed(queries))
        kind_mask = self._kind_mask(kind) if kind is not None else None
        of_kind = np.flatnonzero(kind_mask) if kind_mask is not None and len(kind_mask) == len(ids) else None
        for text, cosines in zip(queries, all_cosines, strict=True):
            keyword_ranked = [pid for pid, _ in self.keyword_search(text, n)]
            vector_ranked = [int(ids[i]) for i in top_indices(cosines, n)]
            ranked_lists = [keyword_ranked, vector_ranked]
            if of_kind is not None:
                ranked_lists.append([int(ids[of_kind[i]]) for i in top_indices(cosines[of_kind], n)])
            for ranked in ranked_lists:
                for rank, pid in enumerate(ranked, start=1):
                    fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank)
            agreed |= set(keyword_ranked[:AGREEMENT_RANK]) & set(vector_ranked[:AGREEMENT_RANK])
        # The days asked about; a follow-up ("And when do you close?") asks about the earlier one's.
        asked = days_named(query) or (days_named(previous) if len(queries) > 1 else 0)
        other_days: set[int] = set()
        if len(ids) and fused:
            best_cosine = all_cosines.max(axis=0)
            days = self._day_masks() if asked else None
            # Ids ascend (the store reads them in order): each fused id's position by binary search.
            wanted = np.fromiter(fused, dtype=np.int64, count=len(fused))
            at = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
            for pid, i, found in zip(wanted.tolist(), at.tolist(), (ids[at] == wanted).tolist(), strict=True):
                if found:
                    cosine_of[pid] = float(best_cosine[i])
                    if days is not None and days[i] and not days[i] & asked:
                        other_days.add(pid)
        agreed -= other_days
        best = sorted(fused, key=lambda pid: (pid in other_days, -fused[pid]))[:k]
        return [
            Hit(
                f.source,
                f.heading,
                f.text,
                fused[f.id],
                original=f.original,
                line=f.line,
                cosine=cosine_of.get(f.id, 0.0),
                questions=f.questions,
                agreed=f.id in agreed,
            )
            for f in self.store.get(best)
        ]

    def _kind_mask(self, kind: str) -> np.ndarray:
        """Which facts (in the store's vector order) hold an answer of `kind`."""
        self._derive()
        return self._kinds[kind]

    def _day_masks(self) -> np.ndarray:
        """Which days of the week each fact (in the store's vector order) names."""
        self._derive()
        return self._days

    def _derive(self) -> None:
        """What search reads off each fact's text, worked out once per store version."""
        version = self.store.version
        if self._derived_version == version:
            return
        ids = self.store.vectors()[0]
        facts = {f.id: f.text for f in self.store.get(ids.tolist())}
        texts = [facts.get(int(i), "") for i in ids]
        self._kinds = {k: np.array([gives(k, t) for t in texts], dtype=bool) for k in ANSWER_KINDS}
        self._days = np.array([days_named(t) for t in texts], dtype=np.int64)
        self._derived_version = version

    def vocabulary(self, max_chars: int = VOCABULARY_MAX_CHARS) -> str:
        """The knowledge base's headings as one line, in order: the words callers will use."""
        seen: list[str] = []
        for heading in self.store.headings():
            for part in heading.split(" > "):
                if part not in seen:
                    seen.append(part)
        line = ""
        for term in seen:
            candidate = f"{line}, {term}" if line else term
            if len(candidate) > max_chars:
                break
            line = candidate
        return f"{line}." if line else ""

    def topics(self, limit: int = 4) -> list[str]:
        """What the knowledge is about: its outermost headings (documents' titles), in order."""
        seen: list[str] = []
        for heading in self.store.headings():
            top = heading.split(" > ")[0]
            if top not in seen:
                seen.append(top)
        return seen[:limit]

    def keyword_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """FTS5 bm25 search alone: (fact id, score) best first."""
        return self.store.keyword_search(fts_query(query, self._too_common), k)

    def _too_common(self, keyword: str) -> bool:
        """A keyword found in over COMMON_KEYWORD_FACTS facts ("branch" in a chain's 10,000 facts)."""
        counts = self.store.word_counts()
        return all(counts.get(part, 0) > COMMON_KEYWORD_FACTS for part in keyword.split("-"))

    def vector_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Cosine search alone: (fact id, cosine) best first."""
        return self.store.vector_search(self.embedder.embed([query])[0], k)


def format_context(hits: list[Hit]) -> str:
    """Render facts for an LLM prompt: one line each, labelled with its heading path."""
    return "\n".join(f"- [{hit.heading}] {hit.text}" for hit in hits)


def open_knowledge(
    knowledge_dir: Path, db_path: Path, embedder: Embedder, questions: QuestionWriter | None = None
) -> Retriever:
    """Open the store at `db_path`, bring it up to date with `knowledge_dir` (with the questions each
    fact answers, when a writer is given), and return a retriever."""
    store = KnowledgeStore.open(db_path)
    report = ingest_dir(knowledge_dir, store, embedder, questions)
    if report.changed:
        log.info(
            "knowledge %s: %d facts from %d files (%d prepared now)",
            knowledge_dir,
            report.facts,
            len(report.files_added) + len(report.files_updated) + len(report.files_unchanged),
            report.facts_embedded,
        )
    return Retriever(store, embedder)
