"""Turn a folder of knowledge files into prepared, embedded facts in the store.

Each file is parsed (`parse.py`: Markdown, text, HTML, PDF, FAQ pairs), cut into self-contained
facts (`facts.py`: a sentence, a list item, a table row or an FAQ answer each, labelled with its
heading path, figures in digits), embedded, and indexed. Ingest is incremental: a file whose digest
matches the stored one is not re-read or re-embedded, a changed file is replaced, and a file gone
from the folder is forgotten. A file that cannot be read is reported and skipped; the rest goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from agents.rag.embed import Embedder
from agents.rag.facts import Fact, document_facts
from agents.rag.parse import SUFFIXES, parse_file
from agents.rag.questions import QuestionWriter, cache_key
from agents.rag.store import KnowledgeStore

log = logging.getLogger(__name__)

# Bump when parsing or fact-cutting changes in a way the file contents don't show: every file's
# digest changes with it, so every file is prepared again.
PREPARATION_VERSION = 3
PREPARATION_SIGNATURE = f"parley-facts-v{PREPARATION_VERSION}\n".encode()


@dataclass
class IngestReport:
    """What an `ingest_dir` run did. File lists hold paths relative to the knowledge dir."""

    files_added: list[str] = field(default_factory=list)
    files_updated: list[str] = field(default_factory=list)
    files_unchanged: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_failed: dict[str, str] = field(default_factory=dict)  # file → why it could not be read
    files_empty: list[str] = field(default_factory=list)  # read, but no text in it (a scanned PDF)
    facts: int = 0  # facts in the store after the run
    facts_embedded: int = 0  # facts (re-)embedded by this run; 0 when nothing changed

    @property
    def changed(self) -> bool:
        """True if the run wrote anything."""
        return bool(self.files_added or self.files_updated or self.files_removed)


def file_facts(path: Path, knowledge_dir: Path) -> list[Fact]:
    """The prepared facts of one knowledge file."""
    return document_facts(parse_file(path, knowledge_dir))


def ingest_dir(
    knowledge_dir: Path,
    store: KnowledgeStore,
    embedder: Embedder,
    questions: QuestionWriter | None = None,
    progress: bool = False,
) -> IngestReport:
    """Bring `store` in line with the knowledge files under `knowledge_dir` (recursively). With
    `questions`, each fact is indexed with the questions it answers (written by the LLM, cached)."""
    knowledge_dir = Path(knowledge_dir)
    report = IngestReport()
    known = store.file_hashes()
    present: set[str] = set()
    paths = knowledge_files(knowledge_dir)
    # Facts indexed with questions and without are different indexes: switching re-prepares.
    signature = PREPARATION_SIGNATURE + (f"questions:{questions.model}\n" if questions else "").encode()
    for path in _progress(paths, progress):
        source = path.relative_to(knowledge_dir).as_posix()
        present.add(source)
        digest = hashlib.sha256(signature + path.read_bytes()).hexdigest()
        if known.get(source) == digest:
            report.files_unchanged.append(source)
            continue
        try:
            facts = file_facts(path, knowledge_dir)
        except (ValueError, OSError) as exc:
            log.warning("knowledge file %s skipped: %s", source, exc)
            report.files_failed[source] = str(exc)
            present.discard(source)  # what an earlier, readable version held is stale now
            continue
        if not facts:
            log.warning("knowledge file %s has no text to answer from (a scanned PDF?)", source)
            report.files_empty.append(source)
        if questions is not None:
            facts = [with_questions(fact, questions) for fact in facts]
        store.replace_file(source, digest, facts, embed_facts(embedder, facts))
        report.facts_embedded += len(facts)
        (report.files_updated if source in known else report.files_added).append(source)
    for source in sorted(set(known) - present):
        store.remove_file(source)
        report.files_removed.append(source)
    report.facts = store.count()
    if questions is not None and questions.written:
        questions.save()
    return report


def with_questions(fact: Fact, writer: QuestionWriter) -> Fact:
    """The fact with the questions the LLM wrote for it."""
    written = [q for q in writer.questions(fact.heading, fact.text) if q not in fact.questions]
    return dataclasses.replace(fact, written=tuple(written))


def embed_facts(embedder: Embedder, facts: list[Fact]) -> list:
    """Each fact's vectors (its statement, then its questions), embedded in one batched run."""
    texts = [fact.embedding_texts() for fact in facts]
    flat = embedder.embed([t for group in texts for t in group])
    out, start = [], 0
    for group in texts:
        out.append(flat[start : start + len(group)])
        start += len(group)
    return out


def knowledge_files(knowledge_dir: Path) -> list[Path]:
    """The files ingest reads, sorted so that ingest order (and hence fact ids) is reproducible;
    hidden files (editor swap files, .DS_Store) are skipped."""
    return sorted(
        p
        for p in knowledge_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(knowledge_dir).parts)
    )


def _progress(paths: list[Path], enabled: bool):
    if not enabled:
        return paths
    from tqdm import tqdm

    return tqdm(paths, desc="preparing knowledge", unit="file")


def shipped_entries(knowledge_dir: Path, writer: QuestionWriter) -> dict[str, list[str]]:
    """The cached questions of this folder's facts: what a folder ships so that a fresh install
    finds them without the LLM."""
    keys = {
        cache_key(writer.model, fact.heading, fact.text)
        for path in knowledge_files(knowledge_dir)
        for fact in _readable_facts(path, knowledge_dir)
    }
    return writer.entries(keys)


def _readable_facts(path: Path, knowledge_dir: Path) -> list[Fact]:
    try:
        return file_facts(path, knowledge_dir)
    except (ValueError, OSError):
        return []
