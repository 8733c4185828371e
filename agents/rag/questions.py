"""Questions a caller might ask that a fact answers, written by the LLM at ingest and cached.

A caller says "how many things can I check out at once?"; the document says "up to fifteen items".
The two share no word and MiniLM scores them far apart. A question written for the fact ("How many
items can I borrow?") sits close to the caller's, so each fact is indexed with a few of them beside
it (`Fact.embedding_texts`). Writing them takes the LLM about a second a fact, so they are cached by
the fact's content and the model: a knowledge base is prepared once, and only changed facts again.

The cache is a JSON file in PARLEY_HOME; a knowledge folder may also ship one (`SHIPPED_CACHE`, a
hidden file ingest does not read as knowledge), so a fresh install answers as well as a warm one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from pathlib import Path

import httpx

from agents.llm import LLMEndpoint

log = logging.getLogger(__name__)

# Bump when the prompt or the parsing changes: cached questions of another version are not reused.
PROMPT_VERSION = 1
SYSTEM = (
    "You write the questions customers ask a business on the phone. Each question is short, in "
    "everyday words, and answered by the fact."
)
# Two worked examples: without them the 0.5B model writes "What is the name of ...?" for every fact.
# They come first in every request, so the LLM server's prompt cache reads them once.
EXAMPLES = (
    (
        "[Rentals > Prices] Renting an e-bike costs $45 a day.",
        "How much is it to rent an e-bike?\nWhat does an electric bike cost for a day?\nDo you rent e-bikes?",
    ),
    (
        "[Hours] On Sunday we are closed.",
        "Are you open on Sundays?\nWhat are your hours on Sunday?\nCan I come in on a Sunday?",
    ),
)
# Three questions of ~12 words each; a cap so a model that rambles costs a bounded time.
MAX_TOKENS = 60
QUESTIONS_PER_FACT = 3
# One fact's questions take ~1 s on 2 cores; a server that takes this long is stuck.
REQUEST_TIMEOUT_S = 60.0
# The cache file beside the knowledge, shipped with a knowledge folder.
SHIPPED_CACHE = ".parley-questions.json"
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


def cache_key(model: str, heading: str, text: str) -> str:
    """The cache key of one fact's questions: its content, the model and the prompt version."""
    return hashlib.sha256(f"v{PROMPT_VERSION}\n{model}\n{heading}\n{text}".encode()).hexdigest()[:32]


def parse_questions(reply: str) -> list[str]:
    """The questions in the LLM's reply: one per line, list marks and quotes dropped, each ending in
    "?", at most QUESTIONS_PER_FACT."""
    out: list[str] = []
    for line in reply.splitlines():
        question = _LIST_MARK.sub("", line).strip().strip('"').strip()
        if question.endswith("?") and len(question.split()) >= 2 and question not in out:
            out.append(question)
    return out[:QUESTIONS_PER_FACT]


class QuestionWriter:
    """Writes (or finds in its cache) the questions each fact answers."""

    def __init__(
        self,
        endpoint: LLMEndpoint,
        model_id: str,
        cache_path: Path,
        shipped: list[Path] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        """`model_id` names the model behind `endpoint` (the GGUF's name for the embedded one):
        questions written by another model are not taken from the cache."""
        self._endpoint = endpoint
        self.model = model_id
        self._cache_path = Path(cache_path)
        self._cache: dict[str, list[str]] = {}
        for path in [*(shipped or []), self._cache_path]:
            self._cache.update(_read(path))
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=REQUEST_TIMEOUT_S, transport=transport)
        self.written = 0  # questions written by the LLM (not found in a cache) by this writer

    def questions(self, heading: str, text: str) -> list[str]:
        """Questions that `text` (under `heading`) answers; [] when the LLM fails (logged)."""
        key = cache_key(self.model, heading, text)
        with self._lock:
            if key in self._cache:
                return list(self._cache[key])
        try:
            found = parse_questions(self._ask(heading, text))
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            log.warning("no questions written for %r: %s", text[:60], exc)
            return []
        with self._lock:
            self._cache[key] = found
            self.written += 1
        return found

    def entries(self, keys: set[str]) -> dict[str, list[str]]:
        """The cached questions under these keys (to ship a folder's own cache with it)."""
        with self._lock:
            return {k: self._cache[k] for k in sorted(keys) if k in self._cache}

    def save(self) -> None:
        """Write the cache file (after an ingest that wrote new questions)."""
        with self._lock:
            data = dict(sorted(self._cache.items()))
        write_cache(self._cache_path, data)

    def close(self) -> None:
        self._client.close()

    def _ask(self, heading: str, text: str) -> str:
        body = {
            "model": self._endpoint.model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                *[
                    message
                    for fact, questions in EXAMPLES
                    for message in (
                        {"role": "user", "content": fact},
                        {"role": "assistant", "content": questions},
                    )
                ],
                {"role": "user", "content": f"[{heading}] {text}"},
            ],
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,  # the same fact gets the same questions: ingest is reproducible
        }
        headers = {"Authorization": f"Bearer {self._endpoint.api_key}"} if self._endpoint.api_key else {}
        response = self._client.post(
            f"{self._endpoint.base_url}/chat/completions", json=body, headers=headers
        )
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]


def write_cache(path: Path, data: dict[str, list[str]]) -> None:
    """Write a questions cache atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("questions cache %s unreadable (%s); questions will be written again", path, exc)
        return {}
    return {k: [q for q in v if isinstance(q, str)] for k, v in data.items() if isinstance(v, list)}
