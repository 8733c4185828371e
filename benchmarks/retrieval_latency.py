"""Retrieval latency on a large knowledge base: one `Retriever.search` call, the way a turn makes it.

    python benchmarks/retrieval_latency.py [--facts 10000] [--queries 300]

It writes a synthetic knowledge base of `--facts` facts (Markdown documents of a made-up chain of
shops: prices, opening hours, policies, each sentence about one thing), ingests it with the real
MiniLM embedder into a fresh store, and then times `search()` for questions of every kind
(figures, hours, yes/no, follow-ups with the question before). Each time runs from the call to
`search()` to its return: the query's embedding, the keyword and vector searches, the fusion and
the facts read back. It prints the median, p95 and max, and the same for the search without the
embedding (the part that grows with the knowledge base).

The target (issue 12): p95 <= 15 ms per query on 10,000 facts, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.rag.ingest import ingest_dir  # noqa: E402
from agents.rag.retrieve import Retriever  # noqa: E402
from agents.rag.store import KnowledgeStore  # noqa: E402
from benchmarks.stats import pct  # noqa: E402
from evals.runner import load_embedder  # noqa: E402

FACTS_PER_DOCUMENT = 50  # a long page of a real site; documents × this = the facts asked for
SEED = 12  # the same knowledge base and questions on every run, so runs compare
WARMUP_QUERIES = 10  # the first searches page in the index and warm numpy: not a caller's figure

THINGS = [
    "city bike",
    "e-bike",
    "kids' bike",
    "tandem",
    "cargo bike",
    "road bike",
    "helmet",
    "lock",
    "tune-up",
    "overhaul",
    "flat repair",
    "brake bleed",
    "chain",
    "wheel truing",
    "bike fit",
    "massage",
    "physio visit",
    "Pilates class",
    "library card",
    "DVD loan",
    "meeting room",
    "room service",
    "late checkout",
    "parking space",
    "locker",
    "gift card",
    "delivery",
]
PLACES = [
    f"the {name} branch"
    for name in (
        "Alder",
        "Birch",
        "Cedar",
        "Dogwood",
        "Elm",
        "Fir",
        "Gum",
        "Hazel",
        "Ivy",
        "Juniper",
        "Kauri",
        "Larch",
        "Maple",
        "Nutmeg",
        "Oak",
        "Pine",
        "Quince",
        "Rowan",
        "Spruce",
        "Teak",
        "Upas",
        "Vine",
        "Walnut",
        "Yew",
        "Zelkova",
    )
]
QUARTERS = ["North", "South", "East", "West", "Central", "Upper", "Lower", "Old", "New", "Riverside"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def fact_sentence(rng: random.Random, place: str, n: int) -> str:
    thing = rng.choice(THINGS)
    kind = n % 5
    if kind == 0:
        return f"At {place}, a {thing} costs ${rng.randint(5, 400)} a day."
    if kind == 1:
        day = rng.choice(DAYS)
        return f"On {day}, {place} opens at {rng.randint(6, 10)} am and closes at {rng.randint(4, 9)} pm."
    if kind == 2:
        return f"{place.capitalize()} can have a {thing} ready within {rng.randint(1, 10)} working days."
    if kind == 3:
        return f"Members of {place} get {rng.choice([5, 10, 15, 20])}% off every {thing}."
    return f"{place.capitalize()} {'does' if n % 2 else 'does not'} take bookings for a {thing} by phone."


def write_knowledge(folder: Path, facts: int, rng: random.Random) -> None:
    documents = max(1, facts // FACTS_PER_DOCUMENT)
    for d in range(documents):
        # No digits in a place's name: they would read as figures and change how facts are cut.
        place = f"{PLACES[d % len(PLACES)]} {QUARTERS[d // len(PLACES) % len(QUARTERS)]}"
        lines = [f"# {place.capitalize()}", ""]
        for section in range(FACTS_PER_DOCUMENT // 5):
            lines += [f"## Part {section + 1}", ""]
            # One sentence per paragraph: each becomes exactly one fact.
            lines += [fact_sentence(rng, place, section * 5 + i) + "\n" for i in range(5)]
        (folder / f"doc-{d:04d}.md").write_text("\n".join(lines))


def questions(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(question, the question before it) pairs; a third are follow-ups."""
    out = []
    for i in range(count):
        thing, place, day = rng.choice(THINGS), rng.choice(PLACES), rng.choice(DAYS)
        asked = [
            f"How much is a {thing} at {place}?",
            f"What time does {place} close on {day}?",
            f"Can I book a {thing} by phone?",
            f"How long does a {thing} take?",
            f"Is there a discount on a {thing} for members?",
        ][i % 5]
        previous = ""
        if i % 3 == 2:
            previous, asked = (
                asked,
                rng.choice(["And on Sunday?", "What about a tandem?", "How long does that take?"]),
            )
        out.append((asked, previous))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--facts", type=int, default=10_000, help="facts in the knowledge base")
    parser.add_argument("--queries", type=int, default=300, help="searches timed")
    parser.add_argument("--k", type=int, default=3, help="facts returned per search (the agent's top_k)")
    args = parser.parse_args()

    rng = random.Random(SEED)
    embedder = load_embedder()
    with tempfile.TemporaryDirectory(prefix="parley-retrieval-bench-") as tmp:
        knowledge = Path(tmp) / "knowledge"
        knowledge.mkdir()
        write_knowledge(knowledge, args.facts, rng)
        store = KnowledgeStore.open(Path(tmp) / "knowledge.db")
        started = time.perf_counter()
        report = ingest_dir(knowledge, store, embedder, progress=True)
        print(f"ingested {report.facts} facts in {time.perf_counter() - started:.1f} s")
        retriever = Retriever(store, embedder)
        asked = questions(rng, args.queries + WARMUP_QUERIES)
        total, search_only = [], []
        for n, (question, previous) in enumerate(asked):
            t0 = time.perf_counter()
            retriever.search(question, args.k, previous=previous)
            elapsed = (time.perf_counter() - t0) * 1000
            t1 = time.perf_counter()
            embedder.embed([question] + ([f"{previous} {question}"] if previous else []))
            embedding = (time.perf_counter() - t1) * 1000
            if n >= WARMUP_QUERIES:
                total.append(elapsed)
                search_only.append(max(0.0, elapsed - embedding))
        store.close()

    print(f"\n{len(total)} searches over {report.facts} facts (k={args.k}), call to return, ms:")
    for name, values in (("search", total), ("without embedding", search_only)):
        print(
            f"  {name:<18} p50 {statistics.median(values):6.1f}   p95 {pct(values, 0.95):6.1f}"
            f"   max {max(values):6.1f}"
        )
    print("target: p95 <= 15 ms on 10,000 facts")


if __name__ == "__main__":
    main()
