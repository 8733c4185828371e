"""Does the transcript read as a finished turn? The second opinion beside Smart Turn's, which
hears only the audio.

Smart Turn judges from prosody, and a flat, even voice (synthesised speech, a tired caller, a
phone line) reads as unfinished: on the 24 spoken questions of benchmarks/questions.json it
called 14 whole questions unfinished, and each then waited the long pause (1.5 s) before its
answer. Whisper's punctuation says what the words are: a transcript that ends in a question mark
is a question asked. Words that trail off (a comma, an ellipsis, "and", "the") are a turn not
done, whatever the voice did.

The words decide where they are clear; elsewhere the audio does (`combine`).
"""

from __future__ import annotations

import re

# Whisper ends a question it heard whole with "?"; nothing else it writes is as sure a sign.
FINISHED_ENDINGS = ("?",)
# Punctuation Whisper writes where the speaker paused mid-thought ("I've got a flat tyre, ...").
TRAILING_ENDINGS = (",", ";", ":", "-", "\u2014", "\u2026", "...")
# Words nobody ends a turn on: a conjunction, an article, a preposition or a filler left hanging
# ("I need a new chain and", "How much is the"). Only a turn's last word counts, and only when it
# is not a question (which "What are you looking for?" would be).
DANGLING_WORDS = frozenset(
    [
        "and",
        "or",
        "but",
        "so",
        "because",
        "if",
        "then",
        "than",
        "the",
        "a",
        "an",
        "to",
        "of",
        "for",
        "with",
        "at",
        "in",
        "on",
        "from",
        "my",
        "your",
        "our",
        "their",
        "um",
        "uh",
        "er",
        "erm",
        "like",
        "also",
        "plus",
    ]
)
_CLOSING_QUOTES = "\"')]\u201d\u2019 "
_LAST_WORD = re.compile(r"([A-Za-z']+)\W*$")


def text_verdict(text: str) -> bool | None:
    """True: the words end a turn (a question); False: they trail off; None: they cannot tell
    ("Hi." may be all, or the start of more)."""
    words = text.rstrip(_CLOSING_QUOTES)
    if not words:
        return None
    if words.endswith(TRAILING_ENDINGS):
        return False
    if words.endswith(FINISHED_ENDINGS):
        return True
    last = _LAST_WORD.search(words)
    if last is not None and last.group(1).lower() in DANGLING_WORDS:
        return False
    return None


def combine(audio_complete: bool | None, text: str) -> bool | None:
    """The verdict that sets the end-of-turn pause: the words' where they are clear, else the
    audio's (None: no verdict either way)."""
    words = text_verdict(text)
    return audio_complete if words is None else words
