"""The latency benchmark's report: raw sweep results in, a dated folder of figures out.

    python benchmarks/report.py RESULTS.json [--out benchmarks/results]

`benchmarks/bench.py` runs a concurrency sweep of simulated callers against Parley and against a
stock-pipecat baseline and hands the raw results (`Results`, below) to `write_report`, which
creates `<out_root>/<timestamp>/` with:

- `results.json`: the raw results as given, pretty-printed, plus `"summary"` (from `summarize`);
- `summary.md`: the machine, the command that reruns it, a table per concurrency level and
  system (n, p50 / p95 / p99 of the client voice-to-voice and of each server stage, accuracy,
  turns with no answer), the ratio baseline / Parley at p50 and p95 of the client voice-to-voice,
  and Parley's biggest stage at p50 with one caller;
- `waterfall_c{N}.png`, `v2v_cdf.png`, `latency_vs_concurrency.png`, drawn on matplotlib `Figure`
  objects and rendered by Agg: no pyplot, no display, nothing global changed for the caller.

Run as a script, it rebuilds the report from a saved `results.json` (its old summary is dropped
and computed again).

Rules every figure follows:

- Warm-up turns are excluded from everything, counts included.
- A turn whose `client_v2v_ms` is null got no answer: it counts in "turns" and "no answer", never
  as a right answer, and is left out of the latency percentiles (it has no latency); the
  "no answer" column is there so that leaving it out can't flatter the figures.
- Percentiles interpolate linearly between the closest ranks (`percentile`), so p50 is the
  ordinary median.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NotRequired, TypedDict

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# --- the input: what bench.py hands over -------------------------------------------------------


class Machine(TypedDict):
    cpu: str  # CPU model name
    cores: int
    gpu: str | None  # GPU model, or None on a CPU-only machine
    python: str
    models: dict[str, str]  # role (stt, llm, tts, ...) → model name
    devices: dict[str, str]  # role → where it ran ("cpu/int8", "cuda/float16", ...)


class Turn(TypedDict):
    system: str  # "parley" or "baseline"
    concurrency: int  # callers talking at once in this step of the sweep
    caller: int
    question_id: str
    warmup: bool  # True: excluded from every figure
    correct: bool  # the answer stated the expected fact
    client_v2v_ms: float | None  # None: no answer came (a failed turn)
    transcript: str
    answer: str
    # Server `turn.trace` figures (voice/observability/tracing.py); any may be missing or None; {} for baseline.
    stages_ms: dict[str, float | None]


class LevelCPU(TypedDict):
    """The CPU a server spent on one concurrency level: its `parley_cpu_seconds_total{stage}`
    (voice/observability/cpu.py) after the level minus before it."""

    system: str
    concurrency: int
    turns: int  # the turns of the level (every conversation holds one)
    cpu_s: dict[str, float]  # stage → CPU seconds over the whole level


class Results(TypedDict):
    started_at: str  # ISO 8601, e.g. "2026-11-29T10:00:00Z"; names the report folder
    duration_s: float
    rerun: str  # the command that reruns this benchmark
    machine: Machine
    config: dict  # free-form settings of the run, kept as given in results.json
    turns: list[Turn]
    cpu: NotRequired[list[LevelCPU]]  # absent when the servers could not be asked
    summary: NotRequired[dict]  # only in a results.json this module wrote; recomputed


# --- the output: what summarize() computes ------------------------------------------------------


class Stats(TypedDict):
    n: int  # turns the figure was measured on
    p50: float | None  # ms, rounded to MS_DECIMALS; None when n == 0
    p95: float | None
    p99: float | None


class Group(TypedDict):
    system: str
    concurrency: int
    turns: int  # measured (not warm-up) turns, answered or not
    answered: int
    no_answer: int  # turns with client_v2v_ms None
    correct: int
    accuracy: float  # correct / turns
    figures: dict[str, Stats]  # CLIENT_V2V, SERVER_V2V and each of STAGES that was measured


class Ratio(TypedDict):
    concurrency: int
    p50: float | None  # baseline / parley client voice-to-voice p50; > 1: Parley answers sooner
    p95: float | None


class BiggestStage(TypedDict):
    concurrency: int
    stage: str
    p50: float


class TurnCPU(TypedDict):
    system: str
    concurrency: int
    per_turn_s: dict[str, float]  # stage → CPU seconds per turn, rounded to CPU_DECIMALS
    total_s: float  # every stage's, per turn


class Summary(TypedDict):
    percentile_method: str
    warmup_turns_excluded: int
    groups: list[Group]  # ordered by concurrency, then system (SYSTEM_ORDER)
    ratios: list[Ratio]  # one per concurrency level
    biggest_stage: BiggestStage | None  # Parley's largest stage p50 at BIGGEST_STAGE_CONCURRENCY
    cpu: list[TurnCPU]  # ordered as the groups; [] when not measured


# --- constants ---------------------------------------------------------------------------------

# The server stages in pipeline order (voice/observability/tracing.py `STAGES`); the waterfall draws them in
# this order. llm_total and response are left out: they overlap the others rather than follow.
STAGES = ("endpoint", "stt", "rag", "llm_ttft", "first_sentence", "tts_ttfa", "send")
SERVER_V2V = "voice_to_voice"  # the server's own end-to-end figure, from the same trace
CLIENT_V2V = "client_v2v"  # what a caller hears; the figure the comparison is made on
FIGURES = (CLIENT_V2V, SERVER_V2V, *STAGES)

# Which two moments each figure runs between, in the words of voice/observability/tracing.py's `Moment`s.
SPANS = {
    CLIENT_V2V: "the last speech sample of the question sent → the first agent audio byte received",
    SERVER_V2V: "the user really stopped → the first agent audio byte went out on the socket",
    "endpoint": "the user really stopped (VAD stop minus its silence window) → the turn was judged "
    "finished and its transcript went to the agent",
    "stt": "the speech segment handed to Whisper at the VAD's stop → Whisper returned the transcript "
    "(begun early at the pause, only what was left then)",
    "rag": "retrieval started → facts found",
    "llm_ttft": "facts found (the LLM request is sent right after) → the first text token streamed back",
    "first_sentence": "the first text token → the first sentence handed to TTS",
    "tts_ttfa": "the first sentence handed to TTS → TTS produced the first audio of the answer",
    "send": "TTS produced the first audio → the first agent audio byte went out on the socket",
}
LABELS = {CLIENT_V2V: "client voice-to-voice", SERVER_V2V: "server voice-to-voice"}

PARLEY, BASELINE = "parley", "baseline"
SYSTEM_ORDER = (PARLEY, BASELINE)  # Parley first: it is the subject; unknown systems follow
QUANTILES = (50, 95, 99)  # the median, the bad-but-common turn, the worst of a hundred
MS_DECIMALS = 1  # voice/observability/tracing.py rounds its figures to 0.1 ms; more digits would be noise
RATIO_DECIMALS = 3  # enough to tell 1.05x from 1.06x
# One caller at a time: the stages' own cost, without queueing behind other callers.
BIGGEST_STAGE_CONCURRENCY = 1
PERCENTILE_METHOD = (
    "linear interpolation between the closest ranks (numpy's default 'linear', Hyndman & Fan "
    "type 7): p50 is the ordinary median"
)

# voice/observability/cpu.py's stages, in pipeline order, as the CPU table shows them.
CPU_STAGES = ("stt", "vad", "turn", "rag", "llm_prefill", "llm_decode", "tts", "pipeline", "other")
CPU_DECIMALS = 3  # milliseconds of CPU: the kernel counts in 10 ms ticks, over several turns
PLOT_DPI = 120  # sharp enough to read in a browser, small enough to commit
STAGE_COLORS = matplotlib.colormaps["tab10"].colors  # one fixed color per stage, in STAGES order
SYSTEM_COLORMAPS = {PARLEY: "Blues", BASELINE: "Oranges"}  # darker = more callers
OTHER_COLORMAP = "Greens"
SHADE_RANGE = (0.45, 0.95)  # colormap span: light enough to tell apart, never white
SYSTEM_BASE_COLORS = {PARLEY: "tab:blue", BASELINE: "tab:orange"}
OTHER_COLOR = "tab:green"
WATERFALL_ROW_IN = 0.9  # inches per system bar: room for the bar and its value labels
WATERFALL_MIN_HEIGHT_IN = 3.2  # tall enough for the legend of nine entries beside the bars
MIN_LABELLED_SEGMENT = 0.06  # a waterfall segment narrower than this share of the axis has no label


# --- arithmetic --------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (q in percent, 0 to 100) of `values`, by linear interpolation between
    the closest ranks (numpy's default): at rank (n - 1) * q / 100 of the sorted values, counted
    from 0. p0 is the minimum, p100 the maximum, p50 the median.

    Raises ValueError on no values or q outside 0..100.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q is in percent, 0 to 100; got {q}")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stats(values: Sequence[float]) -> Stats:
    """n and the QUANTILES of `values` in ms; the percentiles are None when there are none."""
    out: Stats = {"n": len(values), "p50": None, "p95": None, "p99": None}
    for q in QUANTILES:
        out[f"p{q}"] = round(percentile(values, q), MS_DECIMALS) if values else None
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, RATIO_DECIMALS)


# --- summary -----------------------------------------------------------------------------------


def measured(results: Results) -> list[Turn]:
    return [t for t in results["turns"] if not t.get("warmup")]


def system_key(system: str) -> tuple[int, str]:
    return (SYSTEM_ORDER.index(system) if system in SYSTEM_ORDER else len(SYSTEM_ORDER), system)


def grouped(turns: Iterable[Turn]) -> dict[tuple[int, str], list[Turn]]:
    """Turns by (concurrency, system), ordered by concurrency, then SYSTEM_ORDER."""
    groups: dict[tuple[int, str], list[Turn]] = {}
    for turn in turns:
        groups.setdefault((turn["concurrency"], turn["system"]), []).append(turn)
    return dict(sorted(groups.items(), key=lambda item: (item[0][0], system_key(item[0][1]))))


def figure_values(turns: Iterable[Turn], figure: str) -> list[float]:
    """The figure's value on every turn that measured it (None and missing are left out)."""
    if figure == CLIENT_V2V:
        values = [t.get("client_v2v_ms") for t in turns]
    else:
        values = [(t.get("stages_ms") or {}).get(figure) for t in turns]
    return [float(v) for v in values if v is not None]


def summarize_group(system: str, concurrency: int, turns: list[Turn]) -> Group:
    no_answer = sum(t.get("client_v2v_ms") is None for t in turns)
    correct = sum(bool(t.get("correct")) for t in turns)
    figures = {f: stats(figure_values(turns, f)) for f in FIGURES}
    return {
        "system": system,
        "concurrency": concurrency,
        "turns": len(turns),
        "answered": len(turns) - no_answer,
        "no_answer": no_answer,
        "correct": correct,
        "accuracy": round(correct / len(turns), RATIO_DECIMALS),
        # The client figure always; a server figure only where some turn measured it.
        "figures": {f: s for f, s in figures.items() if f == CLIENT_V2V or s["n"]},
    }


def find_group(groups: Iterable[Group], system: str, concurrency: int) -> Group | None:
    return next((g for g in groups if g["system"] == system and g["concurrency"] == concurrency), None)


def client_p(group: Group | None, q: int) -> float | None:
    return group["figures"][CLIENT_V2V][f"p{q}"] if group else None


def ratios(groups: list[Group]) -> list[Ratio]:
    """baseline / parley client voice-to-voice, at p50 and p95, per concurrency level."""
    out: list[Ratio] = []
    for concurrency in sorted({g["concurrency"] for g in groups}):
        parley = find_group(groups, PARLEY, concurrency)
        baseline = find_group(groups, BASELINE, concurrency)
        out.append(
            {
                "concurrency": concurrency,
                "p50": ratio(client_p(baseline, 50), client_p(parley, 50)),
                "p95": ratio(client_p(baseline, 95), client_p(parley, 95)),
            }
        )
    return out


def biggest_stage(groups: list[Group]) -> BiggestStage | None:
    """Parley's stage with the largest p50 at BIGGEST_STAGE_CONCURRENCY, if it has a trace."""
    group = find_group(groups, PARLEY, BIGGEST_STAGE_CONCURRENCY)
    medians = {s: group["figures"][s]["p50"] for s in STAGES if group and s in group["figures"]}
    if not medians:
        return None
    stage = max(medians, key=medians.get)
    return {"concurrency": BIGGEST_STAGE_CONCURRENCY, "stage": stage, "p50": medians[stage]}


def cpu_per_turn(results: Results) -> list[TurnCPU]:
    """Each level's CPU by stage, divided by its turns."""
    rows = []
    for level in sorted(results.get("cpu") or [], key=lambda r: (r["concurrency"], system_key(r["system"]))):
        if not level["turns"]:
            continue
        per_turn = {s: round(level["cpu_s"].get(s, 0.0) / level["turns"], CPU_DECIMALS) for s in CPU_STAGES}
        total = round(sum(level["cpu_s"].values()) / level["turns"], CPU_DECIMALS)
        rows.append(
            {
                "system": level["system"],
                "concurrency": level["concurrency"],
                "per_turn_s": per_turn,
                "total_s": total,
            }
        )
    return rows


def summarize(results: Results) -> Summary:
    """The figures of the report, computed from the measured (non-warm-up) turns."""
    by_group = grouped(measured(results))
    groups = [
        summarize_group(system, concurrency, turns) for (concurrency, system), turns in by_group.items()
    ]
    return {
        "percentile_method": PERCENTILE_METHOD,
        "warmup_turns_excluded": len(results["turns"]) - len(measured(results)),
        "groups": groups,
        "ratios": ratios(groups),
        "biggest_stage": biggest_stage(groups),
        "cpu": cpu_per_turn(results),
    }


# --- Markdown ----------------------------------------------------------------------------------


def callers(n: int) -> str:
    return f"{n} caller" if n == 1 else f"{n} callers"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def share(group: Group) -> str:
    return f"{group['correct']}/{group['turns']} ({100 * group['accuracy']:.0f}%)"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def headline_table(summary: Summary) -> str:
    """One row per system × concurrency: client voice-to-voice p50 and p95, right answers, and
    the turns that got no answer (left out of the percentiles). Markdown, for the README."""
    rows = [
        (
            g["system"],
            g["concurrency"],
            ms(client_p(g, 50)),
            ms(client_p(g, 95)),
            share(g),
            g["no_answer"],
        )
        for g in summary["groups"]
    ]
    header = ("system", "callers", "p50 v2v (ms)", "p95 v2v (ms)", "right answers", "no answer")
    return table(header, rows)


def cpu_table(summary: Summary) -> str:
    """CPU seconds per turn by stage, per system and level (Markdown, for the README too)."""
    if not summary.get("cpu"):
        return ""
    rows = [
        (
            r["system"],
            r["concurrency"],
            *(f"{r['per_turn_s'][s]:.2f}" for s in CPU_STAGES),
            f"{r['total_s']:.2f}",
        )
        for r in summary["cpu"]
    ]
    return table(("system", "callers", *CPU_STAGES, "total"), rows)


def cpu_section(summary: Summary) -> str:
    if not summary.get("cpu"):
        return "## CPU per turn\n\nNot measured (a server did not answer `/metrics`)."
    return (
        "## CPU per turn, by stage (seconds)\n\n"
        "Each server's `parley_cpu_seconds_total{stage}` after a level minus before it, over the level's "
        "turns: everything the server did while those calls lasted, set up and silence included. "
        "Stages are counted by the threads that did the work (voice/observability/cpu.py); the "
        "baseline's Smart Turn counts in `other`, and both systems' LLM split into prefill and decode "
        "by llama.cpp's own time in each.\n\n" + cpu_table(summary)
    )


def machine_section(machine: Machine) -> str:
    facts = table(
        ("", ""),
        [
            ("CPU", machine.get("cpu") or "unknown"),
            ("cores", machine.get("cores", "unknown")),
            ("GPU", machine.get("gpu") or "none"),
            ("Python", machine.get("python") or "unknown"),
        ],
    )
    models, devices = machine.get("models") or {}, machine.get("devices") or {}
    roles = list(dict.fromkeys([*models, *devices]))
    model_rows = [(role, models.get(role, "–"), devices.get(role, "–")) for role in roles]
    return "## Machine\n\n" + facts + "\n\n" + table(("role", "model", "device"), model_rows)


def memory_section(memory: dict | None) -> str:
    if not memory:
        return "## Memory\n\nNot measured (the benchmark did not start Parley itself)."
    return (
        "## Memory\n\n"
        f"Parley's resident memory with its models loaded, after the run: {memory['parley_rss_mb']} MB; "
        f"each extra idle session adds {memory['parley_mb_per_idle_session']} MB."
    )


def turns_section(summary: Summary) -> str:
    rows = [
        (g["system"], g["concurrency"], g["turns"], g["answered"], g["no_answer"], share(g))
        for g in summary["groups"]
    ]
    header = ("system", "callers", "turns", "answered", "no answer", "right answers")
    return (
        "## Turns\n\n"
        + f"Warm-up turns excluded: {summary['warmup_turns_excluded']}. A turn with no answer counts "
        "in turns and never as right, and is left out of the latency percentiles.\n\n" + table(header, rows)
    )


def group_section(group: Group) -> str:
    rows = [
        (LABELS.get(f, f), s["n"], ms(s["p50"]), ms(s["p95"]), ms(s["p99"]))
        for f, s in group["figures"].items()
    ]
    note = "" if len(group["figures"]) > 1 else "\n\nNo server trace: only the client figure."
    return (
        f"### {group['system']}, {callers(group['concurrency'])}\n\n"
        + f"turns {group['turns']}, no answer {group['no_answer']}, right answers {share(group)}\n\n"
        + table(("figure (ms)", "n", "p50", "p95", "p99"), rows)
        + note
    )


def figures_section() -> str:
    rows = [(LABELS.get(f, f), SPANS[f]) for f in FIGURES]
    return (
        "## Per concurrency level and system\n\n"
        "Each figure runs between two moments; the server ones are `turn.trace` (voice/observability/tracing.py).\n\n"
        + table(("figure", "from → to"), rows)
    )


def ratio_section(summary: Summary) -> str:
    groups = summary["groups"]
    rows = []
    for r in summary["ratios"]:
        parley = find_group(groups, PARLEY, r["concurrency"])
        baseline = find_group(groups, BASELINE, r["concurrency"])
        rows.append(
            (
                r["concurrency"],
                ms(client_p(baseline, 50)),
                ms(client_p(parley, 50)),
                times(r["p50"]),
                ms(client_p(baseline, 95)),
                ms(client_p(parley, 95)),
                times(r["p95"]),
            )
        )
    header = ("callers", "baseline p50", "parley p50", "ratio p50", "baseline p95", "parley p95", "ratio p95")
    return (
        "## Baseline / Parley, client voice-to-voice\n\n"
        "Both systems measured in this run; above 1× Parley answers sooner.\n\n" + table(header, rows)
    )


def biggest_stage_line(summary: Summary) -> str:
    big = summary["biggest_stage"]
    if big is None:
        return f"No Parley turns with a server trace with {callers(BIGGEST_STAGE_CONCURRENCY)}."
    return (
        f"Parley's biggest stage at p50 with {callers(big['concurrency'])}: **{big['stage']}**, "
        f"{ms(big['p50'])} ms — {SPANS[big['stage']]}."
    )


def plots_section(concurrencies: Iterable[int]) -> str:
    waterfalls = "\n".join(f"![waterfall, {callers(c)}](waterfall_c{c}.png)" for c in concurrencies)
    return (
        "## Plots\n\n"
        "Waterfalls: the median of each stage, drawn end to end in pipeline order. The stages overlap "
        "in time (STT runs during the end-of-turn wait), so the bar can be longer than the "
        "voice-to-voice medians marked on it.\n\n"
        + waterfalls
        + "\n\n![client voice-to-voice CDF](v2v_cdf.png)\n\n"
        + "![client voice-to-voice against callers](latency_vs_concurrency.png)"
    )


def markdown(results: Results, summary: Summary) -> str:
    concurrencies = sorted({g["concurrency"] for g in summary["groups"]})
    parts = [
        f"# Latency benchmark, {results['started_at']}",
        f"Ran {results.get('duration_s', 0):.0f} s. Percentiles: {summary['percentile_method']}; "
        "each over the turns that measured the figure (n). The full configuration and every turn "
        "are in `results.json`.",
        headline_table(summary),
        machine_section(results["machine"]),
        memory_section(results.get("memory")),
        "## Rerun\n\n```\n" + results["rerun"] + "\n```",
        turns_section(summary),
        figures_section(),
        *(group_section(g) for g in summary["groups"]),
        ratio_section(summary),
        cpu_section(summary),
        biggest_stage_line(summary),
        plots_section(concurrencies),
    ]
    return "\n\n".join(parts) + "\n"


# --- plots -------------------------------------------------------------------------------------


def system_color(system: str) -> str:
    return SYSTEM_BASE_COLORS.get(system, OTHER_COLOR)


def shade(system: str, index: int, count: int) -> tuple[float, ...]:
    """The system's color, darker with each concurrency level."""
    low, high = SHADE_RANGE
    where = high if count == 1 else low + (high - low) * index / (count - 1)
    return matplotlib.colormaps[SYSTEM_COLORMAPS.get(system, OTHER_COLORMAP)](where)


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=PLOT_DPI, format="png")


def plot_waterfall(groups: list[Group], concurrency: int, path: Path) -> None:
    """Per system, the stage medians as consecutive segments, with the v2v medians marked."""
    rows = [g for g in groups if g["concurrency"] == concurrency]
    height = max(WATERFALL_MIN_HEIGHT_IN, 1.5 + WATERFALL_ROW_IN * len(rows))
    fig = Figure(figsize=(10, height), layout="constrained")
    ax = fig.add_subplot()
    extent = max(
        [sum(g["figures"].get(s, {}).get("p50") or 0 for s in STAGES) for g in rows]
        + [client_p(g, 50) or 0 for g in rows]
        + [1.0]
    )
    for y, group in enumerate(rows):
        left = 0.0
        for stage, color in zip(STAGES, STAGE_COLORS, strict=False):
            width = group["figures"].get(stage, {}).get("p50")
            if not width:
                continue
            ax.barh(y, width, left=left, color=color, label=None if stage in seen(ax) else stage)
            if width / extent >= MIN_LABELLED_SEGMENT:
                ax.text(left + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=8)
            left += width
        if left == 0:
            ax.text(0, y, "  no server trace", va="center", fontsize=8)
        mark(ax, y, client_p(group, 50), "black", "-", "client v2v p50")
        mark(ax, y, group["figures"].get(SERVER_V2V, {}).get("p50"), "dimgray", "--", "server v2v p50")
    ax.set_yticks(range(len(rows)), [g["system"] for g in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms after the user stopped speaking (stage medians, end to end)")
    ax.set_title(f"Where the time goes, {callers(concurrency)}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    save(fig, path)


def seen(ax: Axes) -> set[str]:
    return set(ax.get_legend_handles_labels()[1])


def mark(ax: Axes, y: int, x: float | None, color: str, style: str, label: str) -> None:
    if x is not None:
        ax.vlines(
            x, y - 0.45, y + 0.45, colors=color, linestyles=style, label=None if label in seen(ax) else label
        )


def plot_cdf(results: Results, groups: list[Group], path: Path) -> None:
    """Share of all measured turns answered within x ms: a failed turn keeps its line below 1."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    turns = grouped(measured(results))
    for (concurrency, system), group_turns in turns.items():
        levels = sorted({c for c, s in turns if s == system})
        values = sorted(figure_values(group_turns, CLIENT_V2V))
        if not values:
            continue
        ys = [(i + 1) / len(group_turns) for i in range(len(values))]
        group = find_group(groups, system, concurrency)
        label = f"{system}, {callers(concurrency)} ({group['answered']}/{group['turns']} answered)"
        color = shade(system, levels.index(concurrency), len(levels))
        ax.step([values[0], *values], [0.0, *ys], where="post", color=color, label=label)
    ax.set_xlabel("client voice-to-voice (ms): last speech sample sent → first agent audio received")
    ax.set_ylabel("share of turns answered within")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Client voice-to-voice, empirical CDF")
    save(fig, path)


def plot_vs_concurrency(groups: list[Group], path: Path) -> None:
    """p50 (solid) and p95 (dashed) client voice-to-voice against callers, per system."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    systems = sorted({g["system"] for g in groups}, key=system_key)
    for system in systems:
        mine = [g for g in groups if g["system"] == system and client_p(g, 50) is not None]
        xs = [g["concurrency"] for g in mine]
        color = system_color(system)
        ax.plot(xs, [client_p(g, 50) for g in mine], "o-", color=color, label=f"{system} p50")
        ax.plot(xs, [client_p(g, 95) for g in mine], "s--", color=color, label=f"{system} p95")
    ax.set_xticks(sorted({g["concurrency"] for g in groups}))
    ax.set_xlabel("callers at once")
    ax.set_ylabel("client voice-to-voice (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Client voice-to-voice against concurrency")
    save(fig, path)


# --- the folder --------------------------------------------------------------------------------


def folder_name(started_at: str) -> str:
    """The report folder's name: 2026-11-29T10:00:00Z → 20261129T100000Z, in UTC (a time
    without a zone is taken as UTC)."""
    when = datetime.fromisoformat(started_at)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_report(results: Results, out_root: Path) -> Path:
    """Write results.json, summary.md and the plots into `out_root/<timestamp>/`; return it.

    An existing folder of the same timestamp (a report rebuilt) is written over."""
    raw = {k: v for k, v in results.items() if k != "summary"}
    summary = summarize(raw)
    folder = Path(out_root) / folder_name(raw["started_at"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({**raw, "summary": summary}, indent=2) + "\n")
    (folder / "summary.md").write_text(markdown(raw, summary))
    groups = summary["groups"]
    for concurrency in sorted({g["concurrency"] for g in groups}):
        plot_waterfall(groups, concurrency, folder / f"waterfall_c{concurrency}.png")
    plot_cdf(raw, groups, folder / "v2v_cdf.png")
    plot_vs_concurrency(groups, folder / "latency_vs_concurrency.png")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, help="a results.json (bench.py's, or a report's)")
    default_out = Path(__file__).resolve().parent / "results"
    parser.add_argument("--out", type=Path, default=default_out, help="folder for the dated report")
    args = parser.parse_args(argv)
    folder = write_report(json.loads(args.results.read_text()), args.out)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
