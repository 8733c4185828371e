"""Cut parsed documents into self-contained facts: what the agent retrieves and reads.

People write knowledge as prose: a paragraph gives the city bike's price and the e-bike's, a
sentence starts with "It", a table row means nothing without its header. A small LLM given the
whole paragraph takes a figure from the neighbouring sentence. So each fact here is one sentence,
one list item, one table row or one FAQ answer, labelled with the heading path it sits under, and
with its figures in digits (`numbers.to_digits`): the label says what it is about, the text says
one thing about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.rag.numbers import searchable_words, to_digits
from agents.rag.parse import Block, BlockKind, Document

HEADING_SEPARATOR = " > "
# A sentence that opens with one of these leans on the one before it ("It covers ...", "They are
# free"): alone it would not say what it is about, so it joins the previous sentence's fact.
ANAPHORA = frozenset(
    [
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "they",
        "their",
        "them",
        "theirs",
        "he",
        "she",
        "his",
        "her",
        "both",
        "such",
        "each",
        "either",
        "neither",
        "there's",
    ]
)
# A joined fact stops growing at this length (~60 words): past it, the fact is a paragraph again and
# a figure in one sentence can be read as the answer to another's question.
MAX_JOINED_CHARS = 360
# A fact longer than this (a run-on sentence, a long FAQ answer) is cut at clause breaks: a small
# model reads a short fact more reliably than a long one.
MAX_FACT_CHARS = 400
# FAQ answers up to this length stay whole: the answer to one question is one fact.
MAX_FAQ_ANSWER_CHARS = 600
# A paragraph up to this long with at most one figure in it stays one fact: its sentences cannot
# lend each other a wrong figure, and together they say more about their subject than each alone
# ("There is a free lot behind the shop. Street parking is limited. There are bike racks.").
MAX_PLAIN_PARAGRAPH_CHARS = 400
# A list of short items without figures ("We accept: cash, cards, Apple Pay", a list of holidays) is
# one fact: a caller asks for the list, not for one item, and an item alone ("We accept: cash") would
# answer "what do you accept?" with a third of the answer. Items with figures (a price list) stay
# facts of their own, so that no figure is read as another item's.
MAX_LIST_ITEM_CHARS = 80
MAX_LIST_FACT_CHARS = 700
# A sentence that opens with one of these continues the one before it ("Or 3 minutes by bike.",
# "So book ahead."): alone it answers nothing.
CONTINUATIONS = frozenset(["or", "and", "so", "but", "otherwise", "then"])

# Sentence ends, except after abbreviations that end in a full stop inside a sentence.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9$£€])")
_ABBREVIATION_END = re.compile(
    r"(?:\b(?:[ap]\.m|e\.g|i\.e|etc|approx|incl|Mr|Mrs|Ms|Dr|St|Ave|Rd|No|vs|Mon|Tue|Tues|Wed|Thu|Thurs|"
    r"Fri|Sat|Sun|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)|\b[A-Z])\.$"
)
_DIGIT = re.compile(r"\d")
# "A city bike is $25 a day and an e-bike is $45": two figures for two things. Cut into clauses at
# these breaks when every clause has a figure of its own, so that each thing's figure is a fact.
_FIGURE_CLAUSE_BREAK = re.compile(r"(?:,?\s+(?:and|while|whereas)\s+|;\s+|,\s+)")
# A rate after a figure ("$25 a day", "$40 per wheel"): carried to a later clause whose figure has
# none ("... and an e-bike is forty-five" is $45 a day too).
_RATE = re.compile(r"\d\s+((?:a|an|per)\s+[a-z]+|each)\b")
# A figure in digits (after to_digits): a price, a time, a count.
_FIGURE = re.compile(r"[$£€]?\d+(?:[:.,]\d+)*")
_MONEY = re.compile(r"[$£€]\d")
# Words that make a clause lean on the one before it.
_LEANS_BACK = ANAPHORA | {"plus", "including", "which", "except", "but", "extra", "more", "another"}
# Clauses that share a day or a part of it ("we open at 9 am and close at 5 pm on Saturday") say one
# thing together: cut apart, "we open at 9 am" would lose its day.
_SHARED_CONTEXT = re.compile(
    r"\b(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|satur|sun)(?:day)?s?\b|\bweek(?:day|end)s?\b"
    r"|\bmornings?\b|\bafternoons?\b|\bevenings?\b|\bopens?\b|\bcloses?\b",
    re.I,
)
_CLAUSE_BREAK = re.compile(r"(?<=[;,])\s+")
_FIRST_WORD = re.compile(r"[A-Za-z']+")


@dataclass(frozen=True)
class Fact:
    """One retrievable statement, with where it came from."""

    source: str  # file, relative to the knowledge folder
    line: int  # where it starts in that file (a PDF's page)
    heading: str  # the heading path, "Rentals > Prices"; the document's title when it has none
    text: str  # what the LLM reads: the statement, figures in digits
    original: str  # the statement as the document words it
    questions: tuple[str, ...] = ()  # questions the document says it answers (an FAQ's own question)
    written: tuple[str, ...] = ()  # questions the LLM wrote for it at ingest (agents/rag/questions.py)

    def embedding_texts(self) -> list[str]:
        """What is embedded for it: the labelled fact, and each question the document says it answers,
        so a caller's question is matched against questions as well as statements."""
        return [f"{self.heading}: {self.text}", *self.questions]

    def keyword_extra(self) -> str:
        """Words the keyword index should also find it by: the original wording (numbers in words),
        figures spelled out ("45" → "forty-five"), and its questions."""
        extra = [self.original] if self.original != self.text else []
        extra += [searchable_words(self.text), *self.questions, *self.written]
        return " ".join(e for e in extra if e)


def document_facts(document: Document) -> list[Fact]:
    """Every fact in a parsed document, in reading order."""
    facts: list[Fact] = []
    for block in join_short_lists(document.blocks):
        heading = HEADING_SEPARATOR.join(block.headings) or document.title
        for original in _statements(block):
            facts.append(
                Fact(
                    source=document.source,
                    line=block.line,
                    heading=heading,
                    text=to_digits(original),
                    original=original,
                    questions=(block.question,) if block.kind == BlockKind.FAQ and block.question else (),
                )
            )
    return facts


def join_short_lists(blocks: list[Block]) -> list[Block]:
    """Each run of list items under one lead whose items are all short and carry no figure, as one
    block ("We accept: cash; cards; Apple Pay")."""
    out: list[Block] = []
    run: list[Block] = []

    def flush() -> None:
        joined = "; ".join(b.text.rstrip(".;,") for b in run)
        plain = all(len(b.text) <= MAX_LIST_ITEM_CHARS and not _DIGIT.search(to_digits(b.text)) for b in run)
        if len(run) > 1 and plain and len(joined) <= MAX_LIST_FACT_CHARS:
            out.append(
                Block(BlockKind.LIST_ITEM, joined + ".", run[0].headings, run[0].line, lead=run[0].lead)
            )
        else:
            out.extend(run)
        run.clear()

    for block in blocks:
        same_list = run and (block.headings, block.lead) == (run[0].headings, run[0].lead)
        if run and not (block.kind == BlockKind.LIST_ITEM and same_list):
            flush()
        if block.kind == BlockKind.LIST_ITEM:
            run.append(block)
        else:
            out.append(block)
    if run:
        flush()
    return out


def _statements(block: Block) -> list[str]:
    """The block's text cut into statements that each stand on their own."""
    text = " ".join(block.text.split())
    if not text:
        return []
    if block.kind == BlockKind.TABLE_ROW:
        values = {c.strip().lower() for c in block.cells[1:] if c.strip()}
        if len(block.cells) > 2 and len(values) == 1:
            # "Sunday: Open Closed, Close Closed" says "Sunday: Closed".
            return [f"{block.cells[0]}: {block.cells[1]}"]
        return [text]
    if block.kind == BlockKind.LIST_ITEM:
        lead = " ".join(block.lead.split())
        return [f"{lead} {text}" if lead else text]
    if block.kind == BlockKind.FAQ and len(text) <= MAX_FAQ_ANSWER_CHARS:
        return [text]
    sentences = [s for s in split_sentences(text) if not s.endswith(":")]  # a list's lead: its items carry it
    whole = " ".join(sentences)
    if whole and len(whole) <= MAX_PLAIN_PARAGRAPH_CHARS and len(_FIGURE.findall(to_digits(whole))) <= 1:
        return [whole]
    return [
        piece
        for sentence in join_anaphora(sentences)
        for clause in split_figures(sentence)
        for piece in _shorten(clause)
    ]


def split_sentences(text: str) -> list[str]:
    """Split prose at sentence ends, not at "8 a.m." or "e.g."."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_BREAK.finditer(text):
        candidate = text[start : match.start()].rstrip()
        if _ABBREVIATION_END.search(candidate.rstrip("\"')]")):
            continue
        sentences.append(text[start : match.start()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def join_anaphora(sentences: list[str]) -> list[str]:
    """Join each sentence that opens with a pronoun or a conjunction to the sentence it leans back
    on, and a question the text asks itself ("Bought a bike online?") to the sentence answering it."""
    joined: list[str] = []
    for sentence in sentences:
        first = _FIRST_WORD.match(sentence)
        leans = first is not None and first.group(0).lower() in ANAPHORA | CONTINUATIONS
        leans = leans or bool(joined and joined[-1].rstrip().endswith("?"))
        if joined and leans and len(joined[-1]) + 1 + len(sentence) <= MAX_JOINED_CHARS:
            joined[-1] = f"{joined[-1]} {sentence}"
        else:
            joined.append(sentence)
    return joined


def split_figures(sentence: str) -> list[str]:
    """A sentence that gives a figure for each of several things, as one clause per thing; any other
    sentence as it is. A bare number beside a price ("... and an e-bike is 45") is a price too."""
    digits = to_digits(sentence)
    if len(_FIGURE.findall(digits)) < 2 or _SHARED_CONTEXT.search(digits):
        return [sentence]
    clauses = [c.strip() for c in _FIGURE_CLAUSE_BREAK.split(sentence.rstrip(".")) if c.strip()]
    if len(clauses) < 2 or not all(_FIGURE.search(to_digits(c)) for c in clauses):
        return [sentence]
    if any(_LEANS_BACK & set(re.findall(r"[a-z']+", c.lower())) for c in clauses[1:]):
        return [sentence]  # "plus $9 if ...", "up to 5 of those": the clause means nothing alone
    currency = _MONEY.search(digits)
    rate = _RATE.search(to_digits(clauses[0]))
    out = []
    for clause in clauses:
        if currency and not _MONEY.search(to_digits(clause)):
            clause = re.sub(
                r"(?<![\d.,:$£€])(\d+(?:\.\d+)?)\b(?!\s*(?:%|am|pm|minutes?|hours?|days?|weeks?))",
                currency.group(0)[0] + r"\1",
                to_digits(clause),
                count=1,
            )
        if rate and re.search(r"\d\s*$", to_digits(clause)):
            clause = f"{to_digits(clause)} {rate.group(1)}"
        out.append(clause[:1].upper() + clause[1:] + ".")
    return out


def _shorten(sentence: str) -> list[str]:
    """A sentence over MAX_FACT_CHARS cut at clause breaks (commas, semicolons) into pieces under it."""
    if len(sentence) <= MAX_FACT_CHARS:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for clause in _CLAUSE_BREAK.split(sentence):
        if current and len(current) + 1 + len(clause) > MAX_FACT_CHARS:
            pieces.append(current)
            current = clause
        else:
            current = f"{current} {clause}".strip()
    if current:
        pieces.append(current)
    return pieces
