"""Turn a folder of Markdown and plain-text files into labelled, embedded passages in the store.

Markdown is split along its headings (#, ##, ###), so each passage is about one thing and carries its
heading path ("Opening hours > Holidays") as a label. Plain text is split at blank-line paragraphs and
labelled with the file name. Ingest is incremental: a file whose sha256 matches the stored one is not
re-read or re-embedded, a changed file is replaced, and a file gone from the folder is forgotten.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from agents.rag.embed import Embedder
from agents.rag.store import KnowledgeStore

# ~600 characters is ~150 word pieces: well inside MiniLM's 256-token window even with the heading
# prepended, focused enough that one vector stands for one topic, and three of them make a compact
# prompt for a voice reply.
MAX_PASSAGE_CHARS = 600
# A trailing scrap shorter than this (e.g. a one-line footnote) says too little to be found on its
# own, so it is folded into the previous passage of the same section. Short sections with their own
# heading are kept: "Opening hours > Sunday: Closed." is short but complete.
MIN_PASSAGE_CHARS = 120
SUFFIXES = (".md", ".markdown", ".txt")
SPLIT_VERSION = 1  # bump when the splitting code changes in a way the constants don't show
HEADING_SEPARATOR = " > "
# Levels that start a new passage; deeper headings (####) are kept as text within their section.
SPLIT_HEADING_LEVELS = 3
SPLIT_SIGNATURE = (
    f"v{SPLIT_VERSION}:{MAX_PASSAGE_CHARS}:{MIN_PASSAGE_CHARS}:{SPLIT_HEADING_LEVELS}\n".encode()
)

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Passage:
    """A piece of a knowledge file: the source file (relative path), its heading path, and its text."""

    source: str
    heading: str
    text: str

    def embedding_text(self) -> str:
        """What gets embedded. Prefixing the heading is deliberate: labelling passages beats tooling.
        "Opening hours > Saturday: 9 am to 5 pm" is found by "when do you open on Saturday" far more
        reliably than the bare "9 am to 5 pm", and it costs nothing at query time."""
        return f"{self.heading}: {self.text}"


@dataclass
class IngestReport:
    """What an `ingest_dir` run did. File lists hold paths relative to the knowledge dir."""

    files_added: list[str] = field(default_factory=list)
    files_updated: list[str] = field(default_factory=list)
    files_unchanged: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    passages: int = 0  # passages in the store after the run
    passages_embedded: int = 0  # passages (re-)embedded by this run; 0 when nothing changed

    @property
    def changed(self) -> bool:
        """True if the run wrote anything."""
        return bool(self.files_added or self.files_updated or self.files_removed)


def split_markdown(text: str, source: str, default_heading: str) -> list[Passage]:
    """Split Markdown along #, ## and ### headings; text before the first heading gets `default_heading`."""
    passages: list[Passage] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the headings enclosing the current line
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        heading = HEADING_SEPARATOR.join(t for _, t in stack) or default_heading
        passages.extend(Passage(source, heading, chunk) for chunk in _chunk("\n".join(body)))
        body.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence  # a "# comment" inside a code block is not a heading
        match = None if in_fence else _HEADING.match(line)
        if match and len(match.group(1)) <= SPLIT_HEADING_LEVELS and match.group(2):
            flush()
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, _plain(match.group(2))))
        else:
            body.append(line)
    flush()
    return passages


def split_text(text: str, source: str, heading: str) -> list[Passage]:
    """Split plain text at blank lines, packing short paragraphs together; every passage gets `heading`."""
    return [Passage(source, heading, chunk) for chunk in _chunk(text)]


def split_file(path: Path, knowledge_dir: Path) -> list[Passage]:
    """Read one knowledge file and split it according to its type."""
    source = path.relative_to(knowledge_dir).as_posix()
    text = path.read_bytes().decode("utf-8", errors="replace")
    stem = path.stem.replace("-", " ").replace("_", " ").strip().capitalize() or path.name
    if path.suffix.lower() == ".txt":
        return split_text(text, source, stem)
    return split_markdown(text, source, stem)


def ingest_dir(knowledge_dir: Path, store: KnowledgeStore, embedder: Embedder) -> IngestReport:
    """Bring `store` in line with the Markdown/text files under `knowledge_dir` (recursively)."""
    knowledge_dir = Path(knowledge_dir)
    report = IngestReport()
    known = store.file_hashes()
    present: set[str] = set()
    for path in _knowledge_files(knowledge_dir):
        source = path.relative_to(knowledge_dir).as_posix()
        present.add(source)
        # The splitting rules are part of the digest: change them and every file is re-split.
        digest = hashlib.sha256(SPLIT_SIGNATURE + path.read_bytes()).hexdigest()
        if known.get(source) == digest:
            report.files_unchanged.append(source)
            continue
        passages = split_file(path, knowledge_dir)
        vectors = embedder.embed([p.embedding_text() for p in passages])
        store.replace_file(source, digest, passages, vectors)
        report.passages_embedded += len(passages)
        (report.files_updated if source in known else report.files_added).append(source)
    for source in sorted(set(known) - present):
        store.remove_file(source)
        report.files_removed.append(source)
    report.passages = store.count()
    return report


def _knowledge_files(knowledge_dir: Path) -> list[Path]:
    # Sorted so ingest order (and hence passage ids) is reproducible; hidden files (editor swap files,
    # .DS_Store) are skipped.
    return sorted(
        p
        for p in knowledge_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(knowledge_dir).parts)
    )


def _plain(title: str) -> str:
    """Drop Markdown emphasis/code marks from a heading so the label reads (and is spoken) cleanly."""
    return re.sub(r"[*_`]", "", title).strip()


def _chunk(text: str) -> list[str]:
    """Pack paragraphs into chunks of at most ~MAX_PASSAGE_CHARS; never split inside a paragraph unless
    the paragraph alone is too long (then at sentence ends). A tiny trailing chunk joins the one before."""
    pieces: list[str] = []
    for para in _PARAGRAPH_BREAK.split(text.strip()):
        para = para.strip()
        if not para:
            continue
        pieces.extend(_split_long(para) if len(para) > MAX_PASSAGE_CHARS else [para])
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 2 + len(piece) <= MAX_PASSAGE_CHARS:
            chunks[-1] += "\n\n" + piece
        else:
            chunks.append(piece)
    if len(chunks) > 1 and len(chunks[-1]) < MIN_PASSAGE_CHARS:
        tail = chunks.pop()
        chunks[-1] += "\n\n" + tail
    return chunks


def _split_long(paragraph: str) -> list[str]:
    """Split an over-long paragraph at sentence ends, or hard at MAX_PASSAGE_CHARS if it has none."""
    out: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > MAX_PASSAGE_CHARS:  # one giant "sentence": cut it, nothing better to do
            if current:
                out.append(current)
                current = ""
            out.append(sentence[:MAX_PASSAGE_CHARS])
            sentence = sentence[MAX_PASSAGE_CHARS:].lstrip()
        if current and len(current) + 1 + len(sentence) > MAX_PASSAGE_CHARS:
            out.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        out.append(current)
    return out
