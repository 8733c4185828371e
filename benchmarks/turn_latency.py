"""Per-stage latency and answer accuracy over the spoken question set, one caller at a time.

    python benchmarks/turn_latency.py [--url ws://127.0.0.1:8000/ws] [--runs 1] [--warmup 1]

Without --url it starts a server with the default embedded models on a free port. Each question
of benchmarks/questions.json is spoken by espeak-ng (a voice other than the agent's), streamed in
real time over /ws as a microphone would, and followed by silence. It prints, per question, the
server's `turn.trace` and the client-side voice-to-voice (the last speech sample sent → the first
agent audio byte received), whether the answer states the expected fact, and then the median and
p95 of every figure over all turns (warm-up turns excluded).

Quote the first pass: llama.cpp keeps recent prompts in a RAM cache, so a second pass over the
same questions finds its exact prompts cached and its LLM first token comes in ~50 ms, a figure
no real caller would see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clients.talk import talk  # noqa: E402
from tests.conftest import speak, start_server, stop_server  # noqa: E402

QUESTIONS = json.loads((ROOT / "benchmarks" / "questions.json").read_text())
SILENCE_AFTER_S = 4.0  # longer than any end-of-turn wait, so the turn always ends on its own
IDLE_SESSIONS = 3  # extra sessions opened to measure what one costs (below PARLEY_MAX_SESSIONS)
SETTLE_S = 2.0  # a closed session's socket and pipeline are gone well within this
IDLE_SECONDS = 3.0  # long enough for every pipeline stage to have started and allocated
FIGURES = ("endpoint", "stt", "rag", "llm_ttft", "first_sentence", "tts_ttfa", "send", "voice_to_voice")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, runs: int, warmup: int) -> list[dict]:
    rows = []
    audio = {q["id"]: speak(q["question"]) for q in QUESTIONS}
    schedule = [(True, QUESTIONS[i % len(QUESTIONS)]) for i in range(warmup)]
    schedule += [(False, q) for _ in range(runs) for q in QUESTIONS]
    for is_warmup, q in schedule:
        result = await talk(url, audio[q["id"]], 16000, silence_s=SILENCE_AFTER_S, timeout_s=60)
        trace = (result.of("turn.trace") or [{"stages_ms": {}}])[-1]["stages_ms"]
        correct = any(e in result.agent_text.lower() for e in q["expect_any"])
        row = {
            "id": q["id"],
            "warmup": is_warmup,
            "transcript": result.transcript,
            "answer": result.agent_text,
            "correct": correct,
            "client_v2v_ms": result.client_voice_to_voice_ms,
            **{f: trace.get(f) for f in FIGURES},
        }
        rows.append(row)
        mark = "warm-up" if is_warmup else ("right" if correct else "WRONG")
        print(
            f"{q['id']:<22} v2v {row['voice_to_voice'] or 0:6.0f} ms  client {row['client_v2v_ms'] or 0:6.0f} ms  "
            f"{mark:<7} {result.transcript!r} → {result.agent_text!r}",
            flush=True,
        )
    return rows


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def memory(url: str, pid: int, sessions: int = IDLE_SESSIONS) -> tuple[float, float]:
    """(server RSS in MB with its models loaded, RSS in MB added per extra idle session)."""
    import websockets

    await asyncio.sleep(SETTLE_S)  # the last measured turn's session closes first
    base = rss_mb(pid)
    sockets = []
    for _ in range(sessions):
        ws = await websockets.connect(url)
        await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000}))
        await ws.recv()
        sockets.append(ws)
    for _ in range(int(IDLE_SECONDS * 50)):  # everyone streams silence in 20 ms frames
        await asyncio.gather(*(ws.send(bytes(640)) for ws in sockets))
        await asyncio.sleep(0.02)
    loaded = rss_mb(pid)
    for ws in sockets:
        await ws.close()
    return base, (loaded - base) / sessions


def summarise(rows: list[dict]) -> None:
    measured = [r for r in rows if not r["warmup"]]
    print(f"\n{len(measured)} turns on {platform.processor() or platform.machine()}, {platform.node()}")
    print(f"{'figure (ms)':<18}{'median':>8}{'p95':>8}{'n':>4}")
    for figure in (*FIGURES, "client_v2v_ms"):
        values = [r[figure] for r in measured if r.get(figure) is not None]
        if values:
            print(f"{figure:<18}{statistics.median(values):>8.0f}{pct(values, 0.95):>8.0f}{len(values):>4}")
    right = sum(r["correct"] for r in measured)
    print(f"answers right: {right} of {len(measured)}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server's /ws; default: start one")
    parser.add_argument("--runs", type=int, default=1, help="passes over the question set")
    parser.add_argument("--warmup", type=int, default=1, help="turns before measuring (excluded)")
    parser.add_argument("--json", help="also write the raw rows here")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = start_server(Path(tempfile.mkdtemp(prefix="parley-bench-")))
        url = server.ws_url
    mem = None
    try:
        rows = asyncio.run(run(url, args.runs, args.warmup))
        if server:
            try:
                mem = asyncio.run(memory(url, server.process.pid))
            except Exception as exc:  # noqa: BLE001 - the latency figures stand without it
                print(f"memory measurement failed: {exc}")
    finally:
        if server:
            stop_server(server)
    summarise(rows)
    if mem:
        print(f"memory: server RSS {mem[0]:.0f} MB after the run; +{mem[1]:.1f} MB per extra idle session")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
