"""The latency benchmark's report (benchmarks/report.py) from synthetic results: no server, no models.

The data set is small enough to work out by hand: the expected figures below are the arithmetic of
linear-interpolation percentiles on the listed values.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
from PIL import Image

from voice.observability import tracing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package

from benchmarks import report  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WARMUP_V2V_MS = 9999.0  # a figure no measured turn has: if it shows up, warm-up leaked in
WARMUP_LLM_TTFT_MS = 8888.0


def turn(system: str, concurrency: int, v2v: float | None, correct: bool = True, **extra) -> dict:
    stages = {}
    if system == "parley" and v2v is not None:
        stages = {
            "endpoint": 200.0,
            "stt": 150.0,
            "rag": 10.0,
            "llm_ttft": extra.pop("llm_ttft", 400.0),
            "first_sentence": 50.0,
            "tts_ttfa": 100.0,
            "send": None,  # a figure the trace did not stamp
            "voice_to_voice": v2v - 20,
        }
    return {
        "system": system,
        "concurrency": concurrency,
        "caller": 0,
        "question_id": "saturday-open",
        "warmup": extra.pop("warmup", False),
        "correct": correct,
        "client_v2v_ms": v2v,
        "transcript": "What time do you open on Saturday?",
        "answer": "" if v2v is None else "We open at 9 am.",
        "stages_ms": stages,
    }


def synthetic_results() -> dict:
    turns = [turn("parley", 1, WARMUP_V2V_MS, correct=False, warmup=True, llm_ttft=WARMUP_LLM_TTFT_MS)]
    # parley, 1 caller: 5 answered (p50 900), 4 right, one with no answer at all.
    for v2v, ttft, correct in [(700, 300, True), (800, 400, True), (900, 500, True), (1000, 600, True)]:
        turns.append(turn("parley", 1, v2v, correct, llm_ttft=ttft))
    turns.append(turn("parley", 1, 1100, correct=False, llm_ttft=700))
    turns.append(turn("parley", 1, None, correct=False))
    turns += [turn("baseline", 1, v2v) for v2v in (1500, 1600, 1700, 1800, 1900)]
    turns += [turn("parley", 2, v2v) for v2v in (1000, 1200, 1400)]
    turns += [turn("baseline", 2, v2v) for v2v in (2000, 2400, 2800)]
    return {
        "started_at": "2026-11-29T10:00:00Z",
        "duration_s": 512.3,
        "rerun": "make bench ARGS='--concurrency 1,2'",
        "machine": {
            "cpu": "Test CPU @ 2.0GHz",
            "cores": 2,
            "gpu": None,
            "python": "3.11.9",
            "models": {"stt": "whisper base", "llm": "qwen2.5 0.5b", "tts": "piper joe"},
            "devices": {"stt": "cpu/int8", "llm": "cpu", "tts": "cpu"},
        },
        "config": {"questions": 12},
        "turns": turns,
        # Parley's 1-caller level: 6 turns; the baseline's: 5. Seconds over the whole level.
        "cpu": [
            {"system": "baseline", "concurrency": 1, "turns": 5, "cpu_s": {"stt": 10.0, "llm_decode": 5.0}},
            {
                "system": "parley",
                "concurrency": 1,
                "turns": 6,
                "cpu_s": {"stt": 3.0, "vad": 0.6, "other": 0.3},
            },
        ],
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return report.write_report(synthetic_results(), tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def summary_md(written: Path) -> str:
    return (written / "summary.md").read_text()


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading."""
    after = markdown.split(heading + "\n", 1)[1]
    return after.split("\n#", 1)[0]


def row(text: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def test_percentile_interpolates_linearly_between_ranks():
    values = [50, 15, 40, 20, 35]  # sorted: 15 20 35 40 50
    assert report.percentile(values, 0) == 15
    assert report.percentile(values, 50) == 35
    assert report.percentile(values, 40) == pytest.approx(29)  # rank 1.6: 20 + 0.6 * 15
    assert report.percentile(values, 100) == 50
    assert report.percentile([1, 2, 3, 4], 50) == statistics.median([1, 2, 3, 4]) == 2.5
    assert report.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        report.percentile([], 50)
    with pytest.raises(ValueError):
        report.percentile([1, 2], 0.95 * 1000)  # q is in percent, not a fraction of 1


def test_the_folder_is_named_after_the_start_time_and_holds_every_file(written: Path):
    assert written.name == "20261129T100000Z"
    names = {p.name for p in written.iterdir()}
    plots = {"waterfall_c1.png", "waterfall_c2.png", "v2v_cdf.png", "latency_vs_concurrency.png"}
    assert names == {"results.json", "summary.md"} | plots
    for name in plots:
        data = (written / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(written / name) as image:
            image.verify()
            assert image.width > 100 and image.height > 100, name


def test_folder_name_is_utc():
    assert report.folder_name("2026-11-29T11:30:05+01:00") == "20261129T103005Z"


def test_results_json_keeps_the_raw_data_and_adds_the_summary(written: Path):
    saved = json.loads((written / "results.json").read_text())
    raw = synthetic_results()
    assert {k: v for k, v in saved.items() if k != "summary"} == raw
    assert saved["summary"] == json.loads(json.dumps(report.summarize(raw)))


def test_the_table_gives_the_client_and_stage_percentiles(summary_md: str):
    parley_1 = section(summary_md, "### parley, 1 caller")
    # client voice-to-voice over the 5 answered turns 700..1100: p50 900, p95 1080, p99 1096
    assert row(parley_1, "client voice-to-voice")[1:] == ["5", "900", "1080", "1096"]
    assert row(parley_1, "llm_ttft")[1:3] == ["5", "500"]
    assert row(parley_1, "server voice-to-voice")[2] == "880"
    assert "send" not in [line.split("|")[1].strip() for line in parley_1.splitlines() if "|" in line]
    assert row(section(summary_md, "### baseline, 1 caller"), "client voice-to-voice")[2] == "1700"
    assert "No server trace" in section(summary_md, "### baseline, 1 caller")


def test_warmup_turns_are_excluded(written: Path, summary_md: str):
    summary = report.summarize(synthetic_results())
    assert summary["warmup_turns_excluded"] == 1
    assert report.find_group(summary["groups"], "parley", 1)["turns"] == 6
    assert str(int(WARMUP_V2V_MS)) not in summary_md
    assert str(int(WARMUP_LLM_TTFT_MS)) not in summary_md


def test_a_turn_with_no_answer_is_counted_not_dropped(summary_md: str):
    group = report.find_group(report.summarize(synthetic_results())["groups"], "parley", 1)
    assert (group["turns"], group["answered"], group["no_answer"], group["correct"]) == (6, 5, 1, 4)
    turns = section(summary_md, "## Turns")
    header = row(turns, "system")
    parley_1 = dict(zip(header, row(turns, "parley"), strict=True))
    assert parley_1["no answer"] == "1"
    assert parley_1["right answers"] == "4/6 (67%)"


def test_the_ratio_is_baseline_over_parley_per_concurrency(summary_md: str):
    ratios = {r["concurrency"]: r for r in report.summarize(synthetic_results())["ratios"]}
    assert ratios[1]["p50"] == pytest.approx(1700 / 900, abs=1e-3)
    assert ratios[1]["p95"] == pytest.approx(1880 / 1080, abs=1e-3)
    assert ratios[2]["p50"] == pytest.approx(2.0)
    cells = row(section(summary_md, "## Baseline / Parley, client voice-to-voice"), "1")
    assert cells[1:4] == ["1700", "900", "1.89×"]


def test_each_figure_says_which_two_moments_it_runs_between(summary_md: str):
    definitions = section(summary_md, "## Per concurrency level and system")
    assert row(definitions, "client voice-to-voice")[1] == (
        "the last speech sample of the question sent → the first agent audio byte received"
    )
    assert row(definitions, "endpoint")[1].startswith("the user really stopped")
    for figure in report.STAGES:
        assert "→" in row(definitions, figure)[1]


def test_the_biggest_stage_is_named(summary_md: str):
    assert "biggest stage at p50 with 1 caller: **llm_ttft**, 500 ms" in summary_md


def test_headline_table_has_a_row_per_system_and_concurrency():
    headline = report.headline_table(report.summarize(synthetic_results()))
    lines = headline.splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].startswith("| system | callers | p50 v2v")
    assert [c.strip() for c in lines[2].strip("|").split("|")] == [
        "parley",
        "1",
        "900",
        "1080",
        "4/6 (67%)",
        "1",
    ]


def test_a_saved_results_json_rebuilds_the_same_report(written: Path, tmp_path: Path):
    assert report.main([str(written / "results.json"), "--out", str(tmp_path)]) == 0
    again = tmp_path / written.name
    assert (again / "summary.md").read_text() == (written / "summary.md").read_text()


def test_stage_names_match_the_server_trace():
    assert set(report.STAGES) | {report.SERVER_V2V} <= set(tracing.STAGES)


def test_cpu_per_turn_is_each_levels_cpu_over_its_turns(written: Path, summary_md: str):
    summary = json.loads((written / "results.json").read_text())["summary"]
    parley, baseline = summary["cpu"]  # Parley first, as in every table
    assert parley["system"] == "parley" and parley["per_turn_s"]["stt"] == 0.5
    assert parley["per_turn_s"]["vad"] == 0.1 and parley["per_turn_s"]["tts"] == 0.0
    assert parley["total_s"] == pytest.approx(0.65)
    assert baseline["per_turn_s"]["stt"] == 2.0 and baseline["total_s"] == 3.0
    assert "| parley | 1 | 0.50 | 0.10 |" in summary_md
    assert "## CPU per turn, by stage (seconds)" in summary_md


def test_cpu_stages_match_the_servers():
    from voice.observability import cpu

    assert report.CPU_STAGES == cpu.STAGES
