"""The benchmark's schedule and its README block, without servers: every measured question is asked
once per system (a repeat would find its prompt cached by llama.cpp), and the README states the
ratio the run measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench import QUESTIONS, plan, readme_block  # noqa: E402
from benchmarks.report import summarize  # noqa: E402


def test_the_default_sweep_asks_each_question_once_in_whole_rounds():
    schedule = plan([1, 2, 4], turns=8)
    assert [len(callers) for callers in schedule.values()] == [1, 2, 4]
    assert all(len({len(qs) for qs in callers}) == 1 for callers in schedule.values())  # whole rounds
    asked = [q["id"] for callers in schedule.values() for qs in callers for q in qs]
    assert len(asked) == 24 == len(set(asked)) <= len(QUESTIONS)


def test_a_level_that_does_not_divide_the_turns_rounds_up():
    schedule = plan([3], turns=8)
    assert [len(qs) for qs in schedule[3]] == [3, 3, 3]


def turn(system: str, v2v: float, correct: bool = True) -> dict:
    return {
        "system": system,
        "concurrency": 1,
        "caller": 0,
        "question_id": "q",
        "warmup": False,
        "correct": correct,
        "client_v2v_ms": v2v,
        "stages_ms": {"endpoint": 900.0, "llm_ttft": 1200.0} if system == "parley" else {},
    }


def test_the_readme_block_states_the_measured_ratio_and_the_biggest_stage():
    results = {
        "started_at": "2026-11-29T10:00:00Z",
        "machine": {},
        "rerun": "make bench",
        "turns": [
            turn("parley", 1000.0),
            turn("parley", 1200.0),
            turn("baseline", 3000.0),
            turn("baseline", 3000.0),
        ],
    }
    block = readme_block(summarize(json.loads(json.dumps(results))))
    assert "| parley | 1 | 1100 |" in block
    assert "1 caller: 2.73× at p50" in block
    assert "`llm_ttft`, p50 1200 ms" in block
