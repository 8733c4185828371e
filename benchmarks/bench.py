"""The latency benchmark: Parley and a stock-pipecat baseline, side by side, at 1, 2 and 4 callers.

    make bench                       # or: parley bench, or: python benchmarks/bench.py
    python benchmarks/bench.py [--concurrency 1,2,4] [--turns 8] [--device auto|cpu|cuda]
                               [--stt-model DIR] [--url ws://…/ws] [--no-baseline] [--readme]

Simulated callers talk to each server over `/ws` exactly as a client would (clients/talk.py): a
question about the demo knowledge base, synthesised now by espeak-ng (a voice other than the
agent's), streamed in real time in 20 ms frames, then silence until the answer has been spoken.
Each caller asks its questions one after another, each in a new conversation; the callers of a
concurrency level run at once. The levels alternate between the two systems (Parley at 1 caller,
the baseline at 1 caller, Parley at 2, …) so both see the machine in the same state, minutes
apart. Every question is asked once per system: llama.cpp caches recent prompts, and a repeated
question would find its prompt read already, which no real caller's would be.

Per turn it records the client-side voice-to-voice (the last speech sample of the question sent →
the first agent audio byte received: the end of the question is known exactly because the script
made the audio), Parley's server-side stage breakdown (its `turn.trace`), and whether the answer
states the expected fact (a fast wrong answer is not a result). The report, with plots, goes to
benchmarks/results/<timestamp>/ (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.baseline_server import start_baseline, stop_baseline  # noqa: E402
from benchmarks.report import PARLEY, cpu_table, headline_table, summarize, write_report  # noqa: E402
from benchmarks.turn_latency import QUESTIONS, memory, states_fact  # noqa: E402
from clients.talk import talk  # noqa: E402
from tests.conftest import speak, start_server, stop_server  # noqa: E402

BASELINE = "baseline"
DEFAULT_CONCURRENCY = "1,2,4"
# Measured turns per concurrency level and system: 8 × 3 levels uses each of the 24 questions once,
# and the whole run (both systems, start-up included) takes about 8 minutes on 2 cores.
DEFAULT_TURNS = 8
# A question nobody measures, asked once per system first: the first turn of a process pays for
# lazy allocations in every model.
WARMUP_QUESTION = "Hello, is this the bike shop?"
SILENCE_AFTER_S = (
    4.0  # longer than any end-of-turn wait (the baseline's 3 s fallback), so turns end on their own
)
# A turn that has not finished in this long has failed (4 callers on 2 cores: answers take ~15 s).
TURN_TIMEOUT_S = 120.0
DEFAULT_SLOTS = 4  # PARLEY_MAX_SESSIONS and PARLEY_LLM_PARALLEL's defaults
# A conversation that just ended frees its place within a second; past these the server is full.
BUSY_RETRIES = 10
BUSY_RETRY_S = 0.3
RESULTS_DIR = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def parse_levels(text: str) -> list[int]:
    levels = sorted({int(x) for x in text.split(",") if x.strip()})
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("--concurrency takes positive numbers, e.g. 1,2,4")
    return levels


def plan(levels: list[int], turns: int) -> dict[int, list[list[dict]]]:
    """Per level, each caller's questions: `turns` (rounded up to whole rounds) distinct questions,
    none repeated within the run while the corpus lasts."""
    queue = list(QUESTIONS)
    needed = sum(-(-turns // c) * c for c in levels)
    if needed > len(queue):
        print(
            f"note: {needed} turns but {len(queue)} questions: some repeat, and a repeated question may "
            "find its prompt cached by llama.cpp (faster than a real caller's)",
            file=sys.stderr,
        )
    plans, i = {}, 0
    for c in levels:
        rounds = -(-turns // c)
        plans[c] = [[queue[(i + r * c + k) % len(queue)] for r in range(rounds)] for k in range(c)]
        i += rounds * c
    return plans


CPU_METRIC = "parley_cpu_seconds_total"
# A loaded server answers /metrics in milliseconds; it reads llama.cpp's own, with a 1 s bound.
METRICS_TIMEOUT_S = 10.0


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").replace("wss://", "https://").rsplit("/ws", 1)[0]


def cpu_seconds(ws_url: str) -> dict[str, float] | None:
    """The server's CPU seconds by stage so far (its /metrics), or None when it does not say."""
    try:
        text = httpx.get(f"{http_base(ws_url)}/metrics", timeout=METRICS_TIMEOUT_S).text
    except httpx.HTTPError:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith(CPU_METRIC + '{stage="'):
            labels, _, value = line.rpartition(" ")
            out[labels.split('"')[1]] = float(value)
    return out or None


class Bench:
    def __init__(self, urls: dict[str, str], audio: dict[str, bytes], progress):
        self.urls = urls
        self.audio = audio
        self.progress = progress
        self.turns: list[dict] = []
        self.cpu: list[dict] = []  # report.LevelCPU, one per system and level

    async def turn(self, system: str, question: dict, concurrency: int, caller: int, warmup: bool) -> None:
        row = {
            "system": system,
            "concurrency": concurrency,
            "caller": caller,
            "question_id": question["id"],
            "warmup": warmup,
            "correct": False,
            "client_v2v_ms": None,
            "transcript": "",
            "answer": "",
            "stages_ms": {},
        }
        try:
            result = await self.talk(system, question)
            traces = result.of("turn.trace")
            row.update(
                client_v2v_ms=result.client_voice_to_voice_ms,
                transcript=result.transcript,
                answer=result.agent_text,
                correct=states_fact(result.agent_text, question),
                stages_ms=traces[-1]["stages_ms"] if traces else {},
            )
        except Exception as exc:  # noqa: BLE001 - a failed turn is a result: it counts as no answer
            row["error"] = f"{type(exc).__name__}: {exc}"
        self.turns.append(row)
        self.progress.update(1)
        v2v = row["client_v2v_ms"]
        self.progress.set_postfix_str(f"{system} ×{concurrency} {v2v or 0:.0f} ms", refresh=False)

    async def talk(self, system: str, question: dict):
        """One conversation. A server at its session limit says "busy" while a caller's previous
        conversation is still closing: wait a moment and call again, as a client app would."""
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return await talk(
                    self.urls[system],
                    self.audio[question["question"]],
                    16000,
                    silence_s=SILENCE_AFTER_S,
                    timeout_s=TURN_TIMEOUT_S,
                )
            except Exception as exc:  # the refusal comes as an error event or as the close (1013, busy)
                if "busy" not in str(exc) or attempt == BUSY_RETRIES:
                    raise
                await asyncio.sleep(BUSY_RETRY_S)
        raise AssertionError("unreachable")

    async def caller(self, system: str, questions: list[dict], concurrency: int, caller: int) -> None:
        for q in questions:
            await self.turn(system, q, concurrency, caller, warmup=False)

    async def level(self, system: str, callers: list[list[dict]]) -> None:
        c = len(callers)
        before = await asyncio.to_thread(cpu_seconds, self.urls[system])
        await asyncio.gather(*(self.caller(system, qs, c, k) for k, qs in enumerate(callers)))
        after = await asyncio.to_thread(cpu_seconds, self.urls[system])
        if before is not None and after is not None:
            spent = {stage: round(after[stage] - before.get(stage, 0.0), 3) for stage in after}
            turns = sum(len(qs) for qs in callers)
            self.cpu.append({"system": system, "concurrency": c, "turns": turns, "cpu_s": spent})


def machine(health: dict[str, dict], device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.exists():
        for line in with_cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        gpu = ", ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or None
    models = {
        f"{system} {role}": name for system, h in health.items() for role, name in h.get("models", {}).items()
    }
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "models": models,
        "devices": {"requested": device},
    }


def start_servers(args, env: dict[str, str], log_dir: Path) -> tuple[dict[str, str], list]:
    """Start what is not given by URL, in parallel (each loads its models in ~20-40 s)."""
    urls, stops, jobs = {}, [], {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        if args.url is None:
            jobs[PARLEY] = pool.submit(start_server, log_dir, env)
        else:
            urls[PARLEY] = args.url
        if not args.no_baseline:
            if args.baseline_url is None:
                jobs[BASELINE] = pool.submit(
                    start_baseline, device=args.device, log_dir=log_dir, env_extra=env
                )
            else:
                urls[BASELINE] = args.baseline_url
        errors = []
        for system, job in jobs.items():
            try:
                server = job.result()
            except Exception as exc:  # noqa: BLE001 - reported below, after the other has started
                errors.append(f"{system}: {exc}")
                continue
            urls[system] = server.ws_url
            stops.append((stop_server if system == PARLEY else stop_baseline, server))
    if errors:
        for stop, server in stops:
            stop(server)
        raise SystemExit("could not start the servers:\n" + "\n".join(errors))
    return urls, stops


def health_of(ws_url: str) -> dict:
    try:
        return httpx.get(f"{http_base(ws_url)}/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}


def readme_block(summary: dict) -> str:
    """The headline table, how much sooner Parley answers than the baseline, and its biggest stage."""
    speedups = ", ".join(
        f"{r['concurrency']} caller{'s' if r['concurrency'] > 1 else ''}: {r['p50']:.2f}× at p50, {r['p95']:.2f}× at p95"
        for r in summary["ratios"]
        if r["p50"] is not None and r["p95"] is not None
    )
    lines = [headline_table(summary).rstrip()]
    if speedups:
        lines.append(
            f"Baseline ÷ Parley, client voice-to-voice (above 1× Parley answers sooner): {speedups}."
        )
    if summary.get("biggest_stage"):
        big = summary["biggest_stage"]
        lines.append(f"Parley's biggest stage with one caller: `{big['stage']}`, p50 {big['p50']:.0f} ms.")
    if cpu := cpu_table(summary):
        lines.append("CPU seconds per turn, by stage (voice/observability/cpu.py says how each is counted):")
        lines.append(cpu)
    return "\n\n".join(lines)


def update_readme(table: str, folder: Path) -> None:
    text = README.read_text()
    if README_START not in text or README_END not in text:
        print(f"README has no {README_START} … {README_END} block; not updated", file=sys.stderr)
        return
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    where = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    block = f"{README_START}\n{table.rstrip()}\n\nFull report: `{where}/summary.md`.\n{README_END}"
    README.write_text(head + block + tail)


def rerun_command(args) -> str:
    parts = ["python", "benchmarks/bench.py", "--concurrency", ",".join(map(str, args.concurrency))]
    parts += ["--turns", str(args.turns), "--device", args.device]
    if args.stt_model:
        parts += ["--stt-model", args.stt_model]
    if args.no_baseline:
        parts.append("--no-baseline")
    return shlex.join(parts)


async def run_bench(args, urls: dict[str, str]) -> tuple[list[dict], list[dict]]:
    from tqdm import tqdm

    plans = plan(args.concurrency, args.turns)
    texts = {WARMUP_QUESTION} | {q["question"] for callers in plans.values() for qs in callers for q in qs}
    audio = {t: speak(t) for t in texts}
    systems = [s for s in (PARLEY, BASELINE) if s in urls]
    total = len(systems) * (1 + sum(len(qs) for callers in plans.values() for qs in callers))
    with tqdm(total=total, unit="turn", desc="bench", file=sys.stderr) as progress:
        bench = Bench(urls, audio, progress)
        warmup = {"id": "warm-up", "question": WARMUP_QUESTION, "expect_any": []}
        for system in systems:
            await bench.turn(system, warmup, 1, 0, warmup=True)
        for callers in plans.values():
            for system in systems:
                await bench.level(system, callers)
    return bench.turns, bench.cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=parse_levels, default=parse_levels(DEFAULT_CONCURRENCY))
    parser.add_argument(
        "--turns", type=int, default=DEFAULT_TURNS, help="measured turns per level and system"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where Whisper runs"
    )
    parser.add_argument("--stt-model", help="a bigger Whisper (CTranslate2 folder) for a GPU machine")
    parser.add_argument("--url", help="a running Parley's /ws (default: start one)")
    parser.add_argument("--baseline-url", help="a running baseline's /ws (default: start one)")
    parser.add_argument("--no-baseline", action="store_true", help="measure Parley alone")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the report folder goes")
    parser.add_argument("--readme", action="store_true", help="put the headline table in README.md")
    args = parser.parse_args(argv)

    env = {"PARLEY_STT_DEVICE": args.device}
    if max(args.concurrency) > DEFAULT_SLOTS:
        # Both servers take every caller of the biggest level, each in its own LLM slot: a level
        # above the session limit would otherwise measure a full server turning callers away.
        slots = str(max(args.concurrency))
        env.update(PARLEY_MAX_SESSIONS=slots, PARLEY_LLM_PARALLEL=slots)
    if args.stt_model:
        env["PARLEY_STT_MODEL"] = args.stt_model
    started = time.monotonic()
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    log_dir = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    print(f"starting the servers (logs in {log_dir}) …", file=sys.stderr)
    urls, stops = start_servers(args, env, log_dir)
    mem = None
    try:
        health = {system: health_of(url) for system, url in urls.items()}
        turns, cpu = asyncio.run(run_bench(args, urls))
        parley_server = next((s for stop, s in stops if stop is stop_server), None)
        if parley_server is not None:
            try:
                base, per_session = asyncio.run(memory(urls[PARLEY], parley_server.process.pid))
                mem = {"parley_rss_mb": round(base), "parley_mb_per_idle_session": round(per_session, 1)}
            except Exception as exc:  # noqa: BLE001 - the latency figures stand without it
                print(f"memory measurement failed: {exc}", file=sys.stderr)
    finally:
        for stop, server in stops:
            stop(server)
    results = {
        "started_at": started_at,
        "duration_s": round(time.monotonic() - started, 1),
        "rerun": rerun_command(args),
        "machine": machine(health, args.device),
        "config": {
            "concurrency": args.concurrency,
            "turns_per_level": args.turns,
            "silence_after_s": SILENCE_AFTER_S,
        },
        "memory": mem,
        "turns": turns,
        "cpu": cpu,
    }
    folder = write_report(results, args.out)
    summary = summarize(results)
    table = readme_block(summary)
    print(f"\n{table}\nreport: {folder / 'summary.md'}  ({results['duration_s']:.0f} s)")
    if mem:
        print(
            f"memory: Parley {mem['parley_rss_mb']} MB RSS; +{mem['parley_mb_per_idle_session']} MB per idle session"
        )
    print(f"rerun elsewhere: git clone this repository, `make setup`, then: {results['rerun']}")
    if args.readme:
        update_readme(table, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
