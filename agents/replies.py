"""Replies the knowledge gives without the LLM: an honest decline, and a fact said as it is written.

The 0.5B default model is the weakest reader in the pipeline. Handed the one fact that answers a
question, it still says "Yes, we can fix a dead e-bike battery." when the fact says "We don't repair
the batteries themselves", or "I don't have that information." with the answer in front of it. When
retrieval is sure of the answer, the fact itself is the better reply, and it costs no LLM time.
"""

from __future__ import annotations

import re

from agents.rag.retrieve import Hit

# What the agent says when the knowledge does not answer: honest, and what it can help with.
DECLINE_REPLY = "I'm sorry, I don't have that information."
DECLINE_TOPICS = " I can help with questions about {topics}."

# A fact longer than this is a paragraph the preparation could not cut into sentences: read out
# whole it would run past what a caller wants to hear, so the LLM says the part that answers. On the
# eval bases every fact that was sure to answer its question was at most 363 characters (median 112).
FACT_REPLY_MAX_CHARS = 400

_QUESTION_START = re.compile(
    r"^(?:\w+,?\s+)?(?:what|when|where|which|who|whom|whose|why|how|do|does|did|is|are|was|were|can|could|"
    r"will|would|should|may|might|have|has)\b"
)


def is_question(text: str) -> bool:
    """Whether the caller asks for information ("When do you open?", "tell me your hours"), rather than
    saying something else ("Wait, stop.", "Thanks!"), which the LLM answers as a person would."""
    plain = text.strip().lower()
    return plain.endswith("?") or bool(_QUESTION_START.match(plain)) or "tell me" in plain


def decline_reply(topics: list[str]) -> str:
    """The honest answer to a question the knowledge does not answer."""
    if not topics:
        return DECLINE_REPLY
    # Spoken in a sentence: "opening hours", but a name ("Juniper Street Bikes") as it is; a title in
    # capitals ("FINDING US") as words, not letters to spell out.
    titles = [t.title() if t.isupper() else t for t in topics]
    said = [t if _is_name(t) else t[:1].lower() + t[1:] for t in titles]
    named = said[0] if len(said) == 1 else f"{', '.join(said[:-1])} and {said[-1]}"
    return DECLINE_REPLY + DECLINE_TOPICS.format(topics=named)


def _is_name(title: str) -> bool:
    words = title.split()
    return len(words) > 1 and all(w[:1].isupper() for w in words)


def fact_reply(question: str, evidence: list[Hit], overview: bool) -> str | None:
    """The fact to say as the answer, when retrieval is sure of it: it is the only evidence, keyword
    and vector search both rank it at their top (`Hit.agreed`), the caller asks a question, and not
    for an overview (which the LLM summarises from several facts). None: the LLM answers.

    On the eval bases (in-process loop, same retrieval and evidence), saying the fact instead of
    the LLM's reading of it took 80 to 88 of 128 answers right: yes/no questions stop getting a "yes"
    against the fact, and figures are said as written. One out-of-knowledge question the LLM had
    declined was answered with its nearest fact instead."""
    if overview or len(evidence) != 1 or not evidence[0].agreed or not is_question(question):
        return None
    text = evidence[0].text.strip()
    return text if 0 < len(text) <= FACT_REPLY_MAX_CHARS else None


def knowledge_reply(question: str, evidence: list[Hit], overview: bool, topics: list[str]) -> str | None:
    """What to say without asking the LLM, if anything: a decline when no fact bears on a question,
    the fact itself when retrieval is sure of it."""
    if not evidence:
        return decline_reply(topics) if is_question(question) else None
    return fact_reply(question, evidence, overview)
