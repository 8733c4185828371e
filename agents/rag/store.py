"""SQLite storage for the knowledge base: files, passages with their vectors, and an FTS5 index.

One database file holds everything, so the agent starts without any server. Writes happen at ingest
time (startup); during a call the store is only read, from worker threads, so a single connection
guarded by a lock is simpler and fast enough. All vectors are also kept in one in-memory numpy matrix,
reloaded after every write, so a vector search is a single matrix-vector product (a knowledge base of
a small business is hundreds of passages, i.e. well under a megabyte).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agents.rag.ingest import Passage

VECTOR_DTYPE = np.float32
# bm25() column weights for (heading, text): a word in the heading ("Rentals > E-bikes") says more about
# what a passage is about than the same word in passing in its body.
BM25_HEADING_WEIGHT = 2.0
BM25_TEXT_WEIGHT = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path   TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    source  TEXT NOT NULL,
    heading TEXT NOT NULL,
    text    TEXT NOT NULL,
    vector  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_source ON passages(source);
-- Standalone FTS table whose rowid is the passage id. Porter stemming so "opening" matches "open" and
-- "tyres" matches "tyre"; unicode61 folds case and accents.
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
    heading, text, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""


@dataclass(frozen=True)
class StoredPassage:
    """A passage as stored: its id plus where it came from and what it says."""

    id: int
    source: str
    heading: str
    text: str


class KnowledgeStore:
    """Files, passages, vectors and a keyword index in one SQLite database. Safe to read from any thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # One connection shared by threads: sqlite3 objects are not safe for concurrent use, so every
        # access goes through this lock. Reentrant so public methods can call each other.
        self._lock = threading.RLock()
        # (ids, matrix) as one tuple: swapping a single attribute is atomic, so readers need no lock.
        self._vectors: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros((0, 0), VECTOR_DTYPE))
        self._reload_vectors()

    @classmethod
    def open(cls, db_path: Path) -> KnowledgeStore:
        """Open (creating if needed) the database at `db_path`; ":memory:" also works."""
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(db_path), check_same_thread=False)
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
        """Map of every ingested file path (relative to the knowledge dir) to its content sha256."""
        with self._lock:
            return dict(self._conn.execute("SELECT path, sha256 FROM files").fetchall())

    def replace_file(
        self, path: str, sha256: str, passages: Sequence[Passage], vectors: np.ndarray
    ) -> list[int]:
        """Atomically replace everything stored for `path` with `passages` and their `vectors`.

        Returns the new passage ids, in order.
        """
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
        vectors = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)
        with self._lock, self._conn:  # the connection as context manager = one transaction
            self._delete_passages(path)
            ids = []
            for passage, vector in zip(passages, vectors, strict=True):
                cur = self._conn.execute(
                    "INSERT INTO passages (source, heading, text, vector) VALUES (?, ?, ?, ?)",
                    (path, passage.heading, passage.text, vector.tobytes()),
                )
                ids.append(cur.lastrowid)
                self._conn.execute(
                    "INSERT INTO passages_fts (rowid, heading, text) VALUES (?, ?, ?)",
                    (cur.lastrowid, passage.heading, passage.text),
                )
            self._conn.execute(
                "INSERT INTO files (path, sha256) VALUES (?, ?) "
                "ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256",
                (path, sha256),
            )
        self._reload_vectors()
        return ids

    def remove_file(self, path: str) -> None:
        """Forget a file and all its passages."""
        with self._lock, self._conn:
            self._delete_passages(path)
            self._conn.execute("DELETE FROM files WHERE path = ?", (path,))
        self._reload_vectors()

    def _delete_passages(self, path: str) -> None:
        self._conn.execute(
            "DELETE FROM passages_fts WHERE rowid IN (SELECT id FROM passages WHERE source = ?)", (path,)
        )
        self._conn.execute("DELETE FROM passages WHERE source = ?", (path,))

    # ----- passages --------------------------------------------------------------------------------

    def passage_ids(self, source: str | None = None) -> list[int]:
        """Ids of all passages, or of those from one source file, in insertion order."""
        with self._lock:
            if source is None:
                rows = self._conn.execute("SELECT id FROM passages ORDER BY id")
            else:
                rows = self._conn.execute("SELECT id FROM passages WHERE source = ? ORDER BY id", (source,))
            return [r[0] for r in rows.fetchall()]

    def count(self) -> int:
        """Number of passages stored."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]

    def get(self, ids: Sequence[int]) -> list[StoredPassage]:
        """The passages with these ids, in the order asked; unknown ids are skipped."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, source, heading, text FROM passages WHERE id IN ({marks})", list(ids)
            ).fetchall()
        by_id = {r[0]: StoredPassage(*r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    # ----- search ----------------------------------------------------------------------------------

    def keyword_search(self, match: str, k: int) -> list[tuple[int, float]]:
        """Run an FTS5 MATCH expression; returns (passage id, bm25 score) best first.

        The expression must already be safe FTS5 syntax (see `retrieve.fts_query`). Note that SQLite's
        bm25() is negative, lower meaning better; it is returned negated so that higher is better.
        """
        if not match:
            return []
        with self._lock:
            rows = self._conn.execute(
                "SELECT rowid, bm25(passages_fts, ?, ?) AS s FROM passages_fts "
                "WHERE passages_fts MATCH ? ORDER BY s LIMIT ?",
                (BM25_HEADING_WEIGHT, BM25_TEXT_WEIGHT, match, k),
            ).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def vector_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Cosine search (unit vectors, so a dot product); returns (passage id, cosine) best first."""
        ids, matrix = self._vectors  # one snapshot, consistent even if a reload happens meanwhile
        if len(ids) == 0:
            return []
        scores = matrix @ np.asarray(query, dtype=VECTOR_DTYPE).reshape(-1)
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def _reload_vectors(self) -> None:
        with self._lock:
            rows = self._conn.execute("SELECT id, vector FROM passages ORDER BY id").fetchall()
            if rows:
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                matrix = np.stack([np.frombuffer(r[1], dtype=VECTOR_DTYPE) for r in rows])
            else:
                ids, matrix = np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=VECTOR_DTYPE)
            self._vectors = (ids, matrix)
