"""Whether an answer is right, whether the agent declined, and speech-to-text word error rate.

Pure functions over text: nothing here loads a model or opens a socket.

Answers are compared as words, not substrings: "5" must not be found in "15" or in "5:30". Both the
answer and each expected string are lowercased, number words become digits (when
`agents.rag.numbers` is there to do it), and cut into tokens: runs of letters, numbers (keeping a
`:` or `.` between digits, so "7:30" and "7.50" stay whole), and currency signs. A whole hour is the
hour: "9:00" counts as "9" and "$10.00" as "$10", but "9:30" is not "9". Negations are spelt out
("can't" is "can not", "don't" is "do not"), so an expected "not" or "do not need" finds either.
A plural in the answer states an expected singular ("board games" states "board game").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

try:
    from agents.rag.numbers import to_digits as _to_digits
except ImportError:  # not written yet: number words are then compared as words
    _to_digits = None

OUT_OF_KNOWLEDGE = "out_of_knowledge"
CURRENCY = "$£€"

# A number (with ":" or "." between digits), a run of letters, or a currency sign.
_TOKEN = re.compile(rf"\d+(?:[:.]\d+)*|[^\W\d_]+|[{CURRENCY}]")
_WHOLE = re.compile(r"^(\d+)[:.]00$")  # "9:00", "10.00": the whole hour, the whole amount
_AM_PM = re.compile(r"\b([ap])\.\s?m\b\.?")  # "a.m." → "am", before the dots become breaks
# Negations said two ways are one: "can't", "cannot" and "can not"; "don't" and "do not".
_IRREGULAR_NEGATIONS = {"can't": "can not", "cannot": "can not", "won't": "will not", "shan't": "shall not"}
_IRREGULAR_NEGATION = re.compile(r"\b(" + "|".join(_IRREGULAR_NEGATIONS) + r")\b")
_NT = re.compile(r"(?<=\w)n't\b")  # "don't" → "do not", "isn't" → "is not"
_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")  # "it's" → "its": one word, as it is said
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # "1,200" → "1200"

# What the agent says when the knowledge does not answer the question. Matched as whole phrases,
# tokenised as answers are ("i don't have" also matches "I do not have").
DECLINE_PHRASES = (
    "i don't have",
    "we don't have any information",
    "i don't know",
    "i'm not sure",
    "i am not sure",
    "i can't find",
    "i couldn't find",
    "i'm unable to",
    "i am unable to",
    "i can't say",
    "i can't tell",
    "no information",
    "not something i can",
    "i'm sorry, i don't",
    "i'm afraid i don't",
    "isn't something i have",
    "not in my information",
)
# Spelt-out numbers that make a sentence state a figure. Not "one": "that one", "no one" state none.
_NUMBER_WORD_TEXT = """
    two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand
    half quarter
"""
NUMBER_WORDS = frozenset(_NUMBER_WORD_TEXT.split())


def _digits(text: str) -> str:
    if _to_digits is None:
        return text
    try:
        return _to_digits(text)
    except Exception:  # noqa: BLE001 - a number-reading bug must not stop an evaluation
        return text


def tokens(text: str, digits: bool = True) -> list[str]:
    """`text` as comparable tokens (see the module docstring); `digits` turns number words to digits."""
    text = text.lower().replace("’", "'")
    if digits:
        text = _digits(text)
    text = _AM_PM.sub(r"\1m", text)
    text = _IRREGULAR_NEGATION.sub(lambda m: _IRREGULAR_NEGATIONS[m.group(1)], text)
    text = _NT.sub(" not", text)
    text = _APOSTROPHE.sub("", text)
    text = _THOUSANDS.sub("", text)
    out = []
    for token in _TOKEN.findall(text):
        whole = _WHOLE.match(token)
        out.append(whole.group(1) if whole else token)
    return out


def contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    """Whether the token sequence `needle` occurs, contiguous, in `haystack`. A word of the haystack
    may be the plural of the needle's: an answer that names "board games" states the expected "board
    game". (Not the other way round: "does not come with" must not state an expected "comes with".)"""
    n = len(needle)
    if n == 0:
        return False
    return any(
        all(_states(said, word) for said, word in zip(haystack[i : i + n], needle, strict=True))
        for i in range(len(haystack) - n + 1)
    )


def _states(said: str, expected: str) -> bool:
    return said == expected or (
        expected.isalpha() and len(expected) >= 3 and said in (expected + "s", expected + "es")
    )


_DECLINES = [tokens(p) for p in DECLINE_PHRASES]


def declines(text: str) -> bool:
    """Whether the agent says it does not have, know or find what was asked."""
    words = tokens(text)
    return any(contains(words, phrase) for phrase in _DECLINES)


def figures(text: str) -> list[str]:
    """The numbers `text` states, in digits or words (checked on the words as said, not converted:
    a converter may read "that one" as "that 1")."""
    return [t for t in tokens(text, digits=False) if t[0].isdigit() or t in NUMBER_WORDS]


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is right, and why, in words for the report."""

    right: bool
    reason: str


def _get(question: object, name: str, default: object = None) -> object:
    """A field of a `Question` or of its JSON dict: tests and callers may hold either."""
    if isinstance(question, Mapping):
        return question.get(name, default)
    return getattr(question, name, default)


def judge(answer: str, question: object) -> Verdict:
    """Whether `answer` is right for `question` (an `evals.questions.Question` or its dict), and why.

    Out of knowledge: right when the agent declines and states no figure (a made-up price is the
    failure this category is for). Otherwise: right when at least `expect_min` distinct expected
    strings are stated, no `reject_any` phrase is, and the agent does not decline.
    """
    if not answer.strip():
        return Verdict(False, "no answer")
    words = tokens(answer)
    rejected = [r for r in _get(question, "reject_any", ()) or () if contains(words, tokens(r))]
    if _get(question, "category") == OUT_OF_KNOWLEDGE:
        if not declines(answer):
            return Verdict(False, "did not decline")
        stated = figures(answer)
        if stated:
            return Verdict(False, f"declined but stated a figure ({', '.join(dict.fromkeys(stated))})")
        if rejected:
            return Verdict(False, f"declined but said {rejected[0]!r}")
        return Verdict(True, "declined")
    if declines(answer):
        return Verdict(False, "declined")
    if rejected:
        return Verdict(False, f"said {rejected[0]!r}")
    found: dict[tuple[str, ...], str] = {}
    for expected in _get(question, "expect_any", ()) or ():
        key = tuple(tokens(expected))
        if key not in found and contains(words, key):
            found[key] = expected
    need = int(_get(question, "expect_min", 1) or 1)
    if len(found) >= need:
        return Verdict(True, "states " + ", ".join(repr(s) for s in found.values()))
    if not found:
        return Verdict(False, "states none of the expected")
    return Verdict(
        False, f"states {len(found)} of the {need} needed: " + ", ".join(map(repr, found.values()))
    )


def answer_is_right(answer: str, question: object) -> bool:
    """Whether `answer` is right for `question` (see `judge`)."""
    return judge(answer, question).right


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits from `reference` to `hypothesis`, words in `reference`): word-level Levenshtein
    after lowercasing, dropping punctuation and turning number words into digits on both sides."""
    ref = [t for t in tokens(reference) if t not in CURRENCY]
    hyp = [t for t in tokens(hypothesis) if t not in CURRENCY]
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits over reference words (0.0 is perfect; above 1.0 when words were added). An empty
    reference gives 0.0 for an empty hypothesis and 1.0 otherwise."""
    errors, n = word_errors(reference, hypothesis)
    if n == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / n


def rank_metrics(ranks: Sequence[int | None], k: int) -> dict[str, float | int | None]:
    """hit@1, hit@k and mean reciprocal rank over `ranks` (1-based rank of the first passage holding
    the evidence, None when none of the top k did). Figures are None when there are no ranks."""
    n = len(ranks)
    if n == 0:
        return {"n": 0, "hit@1": None, f"hit@{k}": None, "mrr": None}
    return {
        "n": n,
        "hit@1": sum(r == 1 for r in ranks) / n,
        f"hit@{k}": sum(r is not None and r <= k for r in ranks) / n,
        "mrr": sum(1 / r for r in ranks if r is not None and r <= k) / n,
    }


# --- retrieval evidence ----------------------------------------------------------------------------

_HTML_TAG = re.compile(r"<[^>]+>")
_MARKUP = re.compile(r"[*_|`]")  # Markdown emphasis, table bars and code marks: not words


def plain(text: str) -> str:
    """`text` for finding an evidence phrase in a passage: lowercase, HTML tags and Markdown marks
    removed, whitespace collapsed."""
    text = _MARKUP.sub(" ", _HTML_TAG.sub(" ", text.lower()))
    return " ".join(text.split())


def holds_evidence(passage: str, evidence: Sequence[str]) -> bool:
    """Whether every evidence phrase occurs in `passage` (compared `plain`, and also with number
    words turned into digits on both sides, so "sixty-five" in a passage matches "65")."""
    if not evidence:
        return False
    text = plain(passage)
    if all(plain(e) in text for e in evidence):
        return True
    if _to_digits is None:
        return False
    text = plain(_digits(text))
    return all(plain(_digits(plain(e))) in text for e in evidence)
