"""SQLite storage for the knowledge base: files, facts with their vectors, and an FTS5 index.

One database file holds everything, so the agent starts without any server. Writes happen at ingest
time (startup); during a call the store is only read, from worker threads, so a single connection
guarded by a lock is simpler and fast enough. All vectors are also kept in one in-memory numpy matrix,
reloaded after every write, so a vector search is a single matrix-vector product (10,000 facts with a
question each are 20,000 × 384 floats, 30 MB, searched in a few milliseconds).

A fact has one or more vectors: its labelled statement, and each question it answers (an FAQ's own
question). A search scores a fact by its best vector.

The database is a cache of the knowledge folder: when its schema changes, it is rebuilt from the files.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agents.rag.facts import Fact

VECTOR_DTYPE = np.float32
# bm25() column weights for (heading, text, extra): a word in the heading ("Rentals > E-bikes") says
# more about what a fact is about than the same word in passing in its text; the extra words (the
# original wording, figures spelled out, questions) only help find it, so they weigh least.
BM25_HEADING_WEIGHT = 2.0
BM25_TEXT_WEIGHT = 1.0
BM25_EXTRA_WEIGHT = 0.5
# Bump when the tables change: an older index is dropped and rebuilt from the knowledge files.
SCHEMA_VERSION = 2

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (
    path   TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS facts (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    source    TEXT NOT NULL,
    line      INTEGER NOT NULL,
    heading   TEXT NOT NULL,
    text      TEXT NOT NULL,
    original  TEXT NOT NULL,
    questions TEXT NOT NULL  -- newline-separated
);
CREATE INDEX IF NOT EXISTS facts_source ON facts(source);
CREATE TABLE IF NOT EXISTS vectors (
    fact_id INTEGER NOT NULL,
    vector  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_fact ON vectors(fact_id);
-- Standalone FTS table whose rowid is the fact id. Porter stemming so "opening" matches "open" and
-- "tyres" matches "tyre"; unicode61 folds case and accents.
CREATE VIRTUAL TABLE IF NOT EXISTS facts_fts USING fts5(
    heading, text, extra, tokenize = 'porter unicode61 remove_diacritics 2'
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_OLD_TABLES = ("files", "facts", "vectors", "facts_fts", "passages", "passages_fts")


_INDEXED_WORD = re.compile(r"\w+")


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` highest scores, highest first (a partial sort: the store may be large)."""
    if len(scores) <= n:
        return np.argsort(-scores, kind="stable")
    top = np.argpartition(-scores, n - 1)[:n]
    return top[np.argsort(-scores[top], kind="stable")]


@dataclass(frozen=True)
class StoredFact:
    """A fact as stored: its id plus where it came from and what it says."""

    id: int
    source: str
    line: int
    heading: str
    text: str
    original: str
    questions: tuple[str, ...]


class KnowledgeStore:
    """Files, facts, vectors and a keyword index in one SQLite database. Safe to read from any thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # One connection shared by threads: sqlite3 objects are not safe for concurrent use, so every
        # access goes through this lock. Reentrant so public methods can call each other.
        self._lock = threading.RLock()
        # (fact ids, where each fact's rows start, matrix) as one tuple: swapping a single attribute is
        # atomic, so readers need no lock. A fact owns one row per vector, its rows side by side.
        self._vectors: tuple[np.ndarray, np.ndarray, np.ndarray] = ()
        # Set by every write; the matrix is read back at the next search, once for a whole ingest
        # (reading it after each file made ingesting 10,000 facts quadratic).
        self._stale = True
        self._word_counts: tuple[int, dict[str, int]] = (-1, {})  # (version, counts)
        self.version = 0  # counts the writes: what is derived from the facts is stale when it moves

    @classmethod
    def open(cls, db_path: Path) -> KnowledgeStore:
        """Open (creating, or rebuilding an older schema, if needed) the database at `db_path`;
        ":memory:" also works."""
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db_path), check_same_thread=False)
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            for table in _OLD_TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.executescript(_SCHEMA)
        conn.commit()
        return cls(conn)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> KnowledgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- files -----------------------------------------------------------------------------------

    def file_hashes(self) -> dict[str, str]:
        """Map of every ingested file path (relative to the knowledge dir) to its content digest."""
        with self._lock:
            return dict(self._conn.execute("SELECT path, sha256 FROM files").fetchall())

    def replace_file(
        self,
        path: str,
        sha256: str,
        facts: Sequence[Fact],
        vectors: Sequence[np.ndarray],
    ) -> list[int]:
        """Atomically replace everything stored for `path` with `facts`; `vectors[i]` holds the rows
        of `facts[i]` (its statement, then the questions it answers). Returns the new fact ids, in order."""
        if len(facts) != len(vectors):
            raise ValueError(f"{len(facts)} facts but {len(vectors)} vector groups")
        with self._lock, self._conn:  # the connection as context manager = one transaction
            self._delete_facts(path)
            ids = []
            for fact, rows in zip(facts, vectors, strict=True):
                cur = self._conn.execute(
                    "INSERT INTO facts (source, line, heading, text, original, questions) VALUES (?, ?, ?, ?, ?, ?)",
                    (path, fact.line, fact.heading, fact.text, fact.original, "\n".join(fact.questions)),
                )
                fact_id = cur.lastrowid
                ids.append(fact_id)
                rows = np.ascontiguousarray(np.atleast_2d(rows), dtype=VECTOR_DTYPE)
                self._conn.executemany(
                    "INSERT INTO vectors (fact_id, vector) VALUES (?, ?)",
                    [(fact_id, row.tobytes()) for row in rows],
                )
                self._conn.execute(
                    "INSERT INTO facts_fts (rowid, heading, text, extra) VALUES (?, ?, ?, ?)",
                    (fact_id, fact.heading, fact.text, fact.keyword_extra()),
                )
            self._conn.execute(
                "INSERT INTO files (path, sha256) VALUES (?, ?) "
                "ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256",
                (path, sha256),
            )
            self._written()
        return ids

    def remove_file(self, path: str) -> None:
        """Forget a file and all its facts."""
        with self._lock, self._conn:
            self._delete_facts(path)
            self._conn.execute("DELETE FROM files WHERE path = ?", (path,))
            self._written()

    def _delete_facts(self, path: str) -> None:
        owned = "(SELECT id FROM facts WHERE source = ?)"
        self._conn.execute(f"DELETE FROM facts_fts WHERE rowid IN {owned}", (path,))
        self._conn.execute(f"DELETE FROM vectors WHERE fact_id IN {owned}", (path,))
        self._conn.execute("DELETE FROM facts WHERE source = ?", (path,))

    # ----- facts -----------------------------------------------------------------------------------

    def fact_ids(self, source: str | None = None) -> list[int]:
        """Ids of all facts, or of those from one source file, in insertion order."""
        with self._lock:
            if source is None:
                rows = self._conn.execute("SELECT id FROM facts ORDER BY id")
            else:
                rows = self._conn.execute("SELECT id FROM facts WHERE source = ? ORDER BY id", (source,))
            return [r[0] for r in rows.fetchall()]

    def count(self) -> int:
        """Number of facts stored."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM facts").fetchone()[0]

    def get(self, ids: Sequence[int]) -> list[StoredFact]:
        """The facts with these ids, in the order asked; unknown ids are skipped."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, source, line, heading, text, original, questions FROM facts WHERE id IN ({marks})",
                list(ids),
            ).fetchall()
        by_id = {r[0]: StoredFact(*r[:6], tuple(q for q in r[6].split("\n") if q)) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def word_counts(self) -> dict[str, int]:
        """How many facts each word (lowercased, as written) is indexed in; worked out once per version."""
        version, counts = self._word_counts
        if version != self.version:
            counts = {}
            with self._lock:
                version = self.version
                rows = self._conn.execute(
                    "SELECT heading || ' ' || text || ' ' || extra FROM facts_fts"
                ).fetchall()
            for (indexed,) in rows:
                for word in set(_INDEXED_WORD.findall(indexed.lower())):
                    counts[word] = counts.get(word, 0) + 1
            self._word_counts = (version, counts)
        return counts

    def headings(self) -> list[str]:
        """Every distinct heading path, in the order the facts were stored."""
        with self._lock:
            rows = self._conn.execute("SELECT heading FROM facts GROUP BY heading ORDER BY MIN(id)")
            return [r[0] for r in rows.fetchall()]

    # ----- search ----------------------------------------------------------------------------------

    def keyword_search(self, match: str, k: int) -> list[tuple[int, float]]:
        """Run an FTS5 MATCH expression; returns (fact id, bm25 score) best first.

        The expression must already be safe FTS5 syntax (see `retrieve.fts_query`). Note that SQLite's
        bm25() is negative, lower meaning better; it is returned negated so that higher is better.
        """
        if not match:
            return []
        with self._lock:
            rows = self._conn.execute(
                "SELECT rowid, bm25(facts_fts, ?, ?, ?) AS s FROM facts_fts "
                "WHERE facts_fts MATCH ? ORDER BY s LIMIT ?",
                (BM25_HEADING_WEIGHT, BM25_TEXT_WEIGHT, BM25_EXTRA_WEIGHT, match, k),
            ).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def cosines(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every fact's best cosine with `query` (unit vectors, so a dot product): (fact ids, cosines).
        With several queries (rows), one row of cosines per query, all from one snapshot."""
        ids, starts, matrix = self.vectors()
        query = np.asarray(query, dtype=VECTOR_DTYPE)
        if len(ids) == 0:
            return ids, np.zeros((*query.shape[:-1], 0), dtype=VECTOR_DTYPE)
        scores = query @ matrix.T
        return ids, np.maximum.reduceat(scores, starts, axis=-1)

    def vector_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Cosine search; returns (fact id, best cosine) best first, each fact once."""
        ids, best = self.cosines(query)
        if len(ids) == 0 or k <= 0:
            return []
        return [(int(ids[i]), float(best[i])) for i in top_indices(best, k)]

    def vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fact ids ascending, where each fact's rows start, matrix): one consistent snapshot."""
        if self._stale:
            with self._lock:
                if self._stale:
                    self._reload_vectors()
        return self._vectors

    def _written(self) -> None:
        self._stale = True
        self.version += 1

    def _reload_vectors(self) -> None:
        with self._lock:
            self._stale = False
            rows = self._conn.execute(
                "SELECT fact_id, vector FROM vectors ORDER BY fact_id, rowid"
            ).fetchall()
        if rows:
            owners = np.array([r[0] for r in rows], dtype=np.int64)
            matrix = np.stack([np.frombuffer(r[1], dtype=VECTOR_DTYPE) for r in rows])
            # Rows are grouped by fact: each fact's rows start where its id first appears.
            starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
            ids = owners[starts]
        else:
            ids, starts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            matrix = np.zeros((0, 0), dtype=VECTOR_DTYPE)
        self._vectors = (ids, starts, matrix)
