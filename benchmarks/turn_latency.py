"""Per-stage latency and answer accuracy over the spoken question set, one caller at a time.

    python benchmarks/turn_latency.py [--url ws://127.0.0.1:8000/ws] [--runs 1] [--warmup 1]
    python benchmarks/turn_latency.py --path both    # /ws and the phone path, one after the other

Without --url it starts a server with the default embedded models on a free port. Each question
of benchmarks/questions.json is spoken by espeak-ng (a voice other than the agent's), streamed in
real time over /ws as a microphone would, and followed by silence. It prints, per question, the
server's `turn.trace` and the client-side voice-to-voice (the last speech sample sent → the first
agent audio byte received), whether the answer states the expected fact, and then the median and
p95 of every figure over all turns (warm-up turns excluded).

`--path phone` asks the same questions over `/twilio/media` as `parley phone` does: 8 kHz μ-law
in, the answer played in real time; the stages come from the server's trace log, and whether
the answer states the fact is judged on a Whisper transcript of what the caller heard, made after
the last call so it costs the calls nothing. `--path both` measures /ws and then the phone path,
each on a fresh server of its own, so neither finds the other's prompts in llama.cpp's cache.

Quote the first pass: llama.cpp keeps recent prompts in a RAM cache, so a second pass over the
same questions finds its exact prompts cached and its LLM first token comes in ~50 ms, a figure
no real caller would see.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.stats import pct  # noqa: E402
from clients.phone import RATE as PHONE_RATE  # noqa: E402
from clients.phone import PhoneCall  # noqa: E402
from clients.talk import talk  # noqa: E402
from tests.conftest import speak, start_server, stop_server  # noqa: E402

QUESTIONS = json.loads((ROOT / "benchmarks" / "questions.json").read_text())
SILENCE_AFTER_S = 4.0  # longer than any end-of-turn wait, so the turn always ends on its own
IDLE_SESSIONS = 3  # extra sessions opened to measure what one costs (below PARLEY_MAX_SESSIONS)
SETTLE_S = 2.0  # a closed session's socket and pipeline are gone well within this
IDLE_SECONDS = 3.0  # long enough for every pipeline stage to have started and allocated
TRACE_WAIT_S = 1.0  # after the call goes quiet, the turn's trace line is written well within this
PATHS = ("ws", "phone")
FIGURES = ("endpoint", "stt", "rag", "llm_ttft", "first_sentence", "tts_ttfa", "send", "voice_to_voice")


def schedule(runs: int, warmup: int) -> list[tuple[bool, dict]]:
    plan = [(True, QUESTIONS[i % len(QUESTIONS)]) for i in range(warmup)]
    return plan + [(False, q) for _ in range(runs) for q in QUESTIONS]


@functools.cache
def question_audio() -> dict[str, bytes]:
    """Every question spoken by espeak-ng at 16 kHz, once per run however many paths ask it."""
    return {q["id"]: speak(q["question"]) for q in QUESTIONS}


def states_fact(answer: str, question: dict) -> bool:
    return any(e in answer.lower() for e in question["expect_any"])


def says_fact(heard: str, question: dict) -> bool:
    """`states_fact` for an answer known only by ear: Whisper writes a spoken "seven thirty" as
    "730" and a phone number as "55040-2,290", so punctuation is ignored on both sides."""

    def bare(text: str) -> str:
        return re.sub(r"[^a-z0-9 ]", "", text.lower())

    return any(bare(e) in bare(heard) for e in question["expect_any"])


async def run_phone(media_url: str, trace_log: Path, runs: int, warmup: int) -> list[dict]:
    """The questions over /twilio/media; each call hangs up once the agent has answered and gone quiet."""
    rows, heard = [], []
    audio = question_audio()
    plan = schedule(runs, warmup)
    for is_warmup, q in plan:
        lines_before = len(read_lines(trace_log))
        async with PhoneCall(media_url) as phone:
            await phone.say(audio[q["id"]], 16000)
            await phone.wait_until_quiet(phone.log.speech_ends[-1], timeout_s=60)
        await asyncio.sleep(TRACE_WAIT_S)
        traces = [t for t in read_lines(trace_log)[lines_before:] if not t.get("typed")]
        trace = traces[-1]["stages_ms"] if traces else {}
        heard.append(bytes(phone.heard))
        row = {
            "id": q["id"],
            "warmup": is_warmup,
            "client_v2v_ms": phone.client_voice_to_voice_ms(),
            **{f: trace.get(f) for f in FIGURES},
        }
        rows.append(row)
        print(
            f"{q['id']:<22} v2v {row['voice_to_voice'] or 0:6.0f} ms  client {row['client_v2v_ms'] or 0:6.0f} ms",
            flush=True,
        )
    # Judge the answers only now, so this Whisper never competes with a call for the CPU.
    from voice import catalogue
    from voice.audio import resample_pcm16
    from voice.config import Settings
    from voice.stt import WHISPER_SAMPLE_RATE, WhisperEngine

    # The beam the server hears phone audio with: greedy loses words of Piper at 8 kHz too.
    # And Whisper's whole window: the judge of what the caller heard does not change with the server.
    whisper = WhisperEngine.load(
        catalogue.ensure("whisper-base"),
        beam_size=Settings().stt_narrowband_beam_size,
        short_window=False,
    )
    for row, pcm, (_, q) in zip(rows, heard, plan, strict=True):
        row["answer"] = whisper.transcribe_pcm16(resample_pcm16(pcm, PHONE_RATE, WHISPER_SAMPLE_RATE)).text
        row["correct"] = says_fact(row["answer"], q)
        print(f"{row['id']:<22} {'right' if row['correct'] else 'WRONG':<7} heard {row['answer']!r}")
    return rows


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def run(url: str, runs: int, warmup: int) -> list[dict]:
    rows = []
    audio = question_audio()
    for is_warmup, q in schedule(runs, warmup):
        result = await talk(url, audio[q["id"]], 16000, silence_s=SILENCE_AFTER_S, timeout_s=60)
        trace = (result.of("turn.trace") or [{"stages_ms": {}}])[-1]["stages_ms"]
        correct = states_fact(result.agent_text, q)
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


def summarise(rows: list[dict], title: str = "") -> dict[str, tuple[float, float]]:
    """Print the median and p95 of every figure; return them by figure."""
    measured = [r for r in rows if not r["warmup"]]
    print(
        f"\n{title}{len(measured)} turns on {platform.processor() or platform.machine()}, {platform.node()}"
    )
    print(f"{'figure (ms)':<18}{'median':>8}{'p95':>8}{'n':>4}")
    found = {}
    for figure in (*FIGURES, "client_v2v_ms"):
        values = [r[figure] for r in measured if r.get(figure) is not None]
        if values:
            found[figure] = (statistics.median(values), pct(values, 0.95))
            print(f"{figure:<18}{found[figure][0]:>8.0f}{found[figure][1]:>8.0f}{len(values):>4}")
    right = sum(r["correct"] for r in measured)
    print(f"answers right: {right} of {len(measured)}")
    return found


def measure_ws(url: str | None, runs: int, warmup: int) -> list[dict]:
    server = None
    if url is None:
        server = start_server(Path(tempfile.mkdtemp(prefix="parley-bench-")))
        url = server.ws_url
    mem = None
    try:
        rows = asyncio.run(run(url, runs, warmup))
        if server:
            try:
                mem = asyncio.run(memory(url, server.process.pid))
            except Exception as exc:  # noqa: BLE001 - the latency figures stand without it
                print(f"memory measurement failed: {exc}")
    finally:
        if server:
            stop_server(server)
    if mem:
        print(f"memory: server RSS {mem[0]:.0f} MB after the run; +{mem[1]:.1f} MB per extra idle session")
    return rows


def measure_phone(runs: int, warmup: int) -> list[dict]:
    folder = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    trace_log = folder / "traces.jsonl"
    server = start_server(folder, {"PARLEY_TRACE_LOG": str(trace_log)})
    try:
        media_url = server.url.replace("http://", "ws://") + "/twilio/media"
        return asyncio.run(run_phone(media_url, trace_log, runs, warmup))
    finally:
        stop_server(server)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server's /ws (the ws path only); default: start one")
    parser.add_argument("--path", choices=(*PATHS, "both"), default="ws", help="how the questions are asked")
    parser.add_argument("--runs", type=int, default=1, help="passes over the question set")
    parser.add_argument("--warmup", type=int, default=1, help="turns before measuring (excluded)")
    parser.add_argument("--json", help="also write the raw rows here")
    args = parser.parse_args()
    if args.url and args.path != "ws":
        parser.error("--url is for the ws path; the phone path starts a server with a trace log")
    paths = PATHS if args.path == "both" else (args.path,)
    rows = {}
    for path in paths:
        print(f"--- {path} ---", flush=True)
        rows[path] = (
            measure_ws(args.url, args.runs, args.warmup)
            if path == "ws"
            else measure_phone(args.runs, args.warmup)
        )
    figures = {path: summarise(rows[path], f"{path}: ") for path in paths}
    if len(paths) == 2:
        print(f"\n{'median (ms)':<18}{'ws':>8}{'phone':>8}")
        for figure in (*FIGURES, "client_v2v_ms"):
            if all(figure in figures[p] for p in paths):
                print(f"{figure:<18}" + "".join(f"{figures[p][figure][0]:>8.0f}" for p in paths))
    if args.json:
        Path(args.json).write_text(json.dumps(rows if len(paths) == 2 else rows[paths[0]], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
