"""The figures of an eval run, its report (report.json and report.md), and what changed since the
previous run of the same base.

A run of base B writes OUT/B/<UTC timestamp>/report.json and report.md. The previous run is the
newest earlier report.json in OUT/B/.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

from evals.questions import CATEGORIES, OUT_OF_KNOWLEDGE, SPLITS, Base
from evals.scoring import rank_metrics

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # a run's folder name, UTC: sorts in time order
MD_TEXT_CHARS = 300  # of an answer or transcript in report.md (report.json has them whole)
# PARLEY_* settings are recorded with each run (they change the answers), except anything secret.
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
MODES = ("typed", "spoken")


def parley_env() -> dict[str, str]:
    """The PARLEY_* environment, secrets left out: what the run's server was configured with."""
    return {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith("PARLEY_") and not any(m in k for m in SECRET_MARKERS)
    }


def git_commit() -> str | None:
    """The checkout's commit ("+dirty" when it has changes), or None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --- figures --------------------------------------------------------------------------------------


def _fraction(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def metrics(rows: list[dict], k: int) -> dict:
    """The figures over `rows` (None where nothing was measured): retrieval hit@1, hit@k and MRR,
    typed and spoken answers right, out-of-knowledge questions declined, and the STT word error
    rate (all word edits over all reference words), with how many questions each counts."""
    ranked = rank_metrics([r["retrieval"]["rank"] for r in rows if r.get("retrieval")], k)
    out = {"questions_n": len(rows), "retrieval_n": ranked.pop("n"), **ranked}
    for mode in MODES:
        records = [r[mode] for r in rows if r.get(mode)]
        out[f"{mode}_n"] = len(records)
        out[f"{mode}_right"] = _fraction([rec["right"] for rec in records])
        ook = [r[mode] for r in rows if r.get(mode) and r["category"] == OUT_OF_KNOWLEDGE]
        out[f"ook_{mode}_n"] = len(ook)
        out[f"ook_{mode}_declined"] = _fraction([rec["declined"] for rec in ook])
    spoken = [r["spoken"] for r in rows if r.get("spoken")]
    ref_words = sum(s["ref_words"] for s in spoken)
    out["stt_wer"] = sum(s["word_errors"] for s in spoken) / ref_words if ref_words else None
    return out


def summarise(rows: list[dict], k: int) -> dict:
    """The figures overall, per category and per split."""
    return {
        "overall": metrics(rows, k),
        "by_category": {
            c: metrics([r for r in rows if r["category"] == c], k)
            for c in CATEGORIES
            if any(r["category"] == c for r in rows)
        },
        "by_split": {
            s: metrics([r for r in rows if r["split"] == s], k)
            for s in SPLITS
            if any(r["split"] == s for r in rows)
        },
    }


def _headline(k: int) -> list[tuple[str, str, str | None]]:
    """(metric key, label, the key of its count) for the table at the top of a report."""
    return [
        ("hit@1", "retrieval hit@1", "retrieval_n"),
        (f"hit@{k}", f"retrieval hit@{k}", "retrieval_n"),
        ("mrr", f"retrieval MRR (top {k})", None),
        ("typed_right", "typed answers right", "typed_n"),
        ("spoken_right", "spoken answers right", "spoken_n"),
        ("ook_typed_declined", "out of knowledge: declined (typed)", "ook_typed_n"),
        ("ook_spoken_declined", "out of knowledge: declined (spoken)", "ook_spoken_n"),
        ("stt_wer", "STT word error rate", None),
    ]


def _fmt(key: str, value: float | None, n: int | None = None) -> str:
    if value is None:
        return "–"
    if key == "mrr":
        return f"{value:.3f}"
    text = f"{100 * value:.1f}%" if key == "stt_wer" else f"{100 * value:.0f}%"
    return f"{text} ({round(value * n)}/{n})" if n else text


def _fmt_delta(key: str, delta: float) -> str:
    return f"{delta:+.3f}" if key == "mrr" else f"{100 * delta:+.1f} pts"


# --- change since the previous run ----------------------------------------------------------------


def find_previous(base_dir: Path, stamp: str) -> Path | None:
    """The newest report.json in `base_dir` from a run before `stamp` (the folder names sort by time)."""
    if not base_dir.is_dir():
        return None
    earlier = sorted(p for p in base_dir.glob(f"*/{REPORT_JSON}") if p.parent.name < stamp)
    return earlier[-1] if earlier else None


def _ok(row: dict, mode: str) -> bool | None:
    """Whether a row passed in `mode` ("retrieval": found within k), None when not measured."""
    record = row.get(mode)
    if not record:
        return None
    return record["rank"] is not None if mode == "retrieval" else record["right"]


def compare(previous: dict, rows: list[dict], k: int) -> dict:
    """Against a previous report.json: the figures' changes, and the questions that flipped per mode.
    Both runs' figures are taken over the questions they share, so a run of a few questions (`--only`)
    is not compared with a whole base."""
    old = {r["id"]: r for r in previous.get("rows", [])}
    shared = [r for r in rows if r["id"] in old]
    before, now = metrics([old[r["id"]] for r in shared], k), metrics(shared, k)
    deltas = {
        key: {"before": before[key], "now": now[key], "delta": now[key] - before[key]}
        for key in now
        if not key.endswith("_n") and before[key] is not None and now[key] is not None
    }
    flips = {}
    for mode in ("retrieval", *MODES):
        pairs = [(r["id"], _ok(old[r["id"]], mode), _ok(r, mode)) for r in shared]
        flips[mode] = {
            "right_to_wrong": [i for i, b, n in pairs if b is True and n is False],
            "wrong_to_right": [i for i, b, n in pairs if b is False and n is True],
        }
    return {
        "stamp": previous.get("stamp"),
        "settings": previous.get("settings"),
        "shared": len(shared),
        "only_now": len(rows) - len(shared),
        "only_before": len(old) - len(shared),
        "deltas": deltas,
        "flips": flips,
    }


# --- writing --------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _clip(text: str, n: int = MD_TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _group_table(title: str, groups: dict[str, dict], k: int) -> list[str]:
    lines = [
        f"## {title}",
        "",
        f"| {title.split()[-1]} | n | hit@1 | hit@{k} | MRR | typed right | spoken right | STT WER |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in groups.items():
        lines.append(
            f"| {name} | {m['questions_n']} | {_fmt('hit@1', m['hit@1'])} | {_fmt('hit@k', m[f'hit@{k}'])} | "
            f"{_fmt('mrr', m['mrr'])} | {_fmt('typed_right', m['typed_right'], m['typed_n'])} | "
            f"{_fmt('spoken_right', m['spoken_right'], m['spoken_n'])} | {_fmt('stt_wer', m['stt_wer'])} |"
        )
    return [*lines, ""]


def _expected(row: dict) -> str:
    if row["category"] == OUT_OF_KNOWLEDGE:
        return "a decline, stating no figure"
    text = " or ".join(f'"{e}"' for e in row["expect_any"])
    if row.get("expect_min", 1) > 1:
        text = f"at least {row['expect_min']} of {text}"
    if row.get("reject_any"):
        text += "; not " + ", ".join(f'"{r}"' for r in row["reject_any"])
    return text


def _failure(row: dict, k: int) -> list[str]:
    lines = [f"### `{row['id']}` ({row['category']}, {row['split']})", "", f"> {row['question']}", ""]
    if row.get("follows"):
        lines.append(f"- follows `{row['follows']}`")
    lines.append(f"- expected: {_expected(row)}")
    for mode in MODES:
        record = row.get(mode)
        if record:
            mark = "right" if record["right"] else "**wrong**"
            heard = f'heard "{_clip(record["transcript"])}" ({record["voice"]}), ' if mode == "spoken" else ""
            lines.append(
                f'- {mode}: {mark}: {heard}answered "{_clip(record["answer"])}" ({record["reason"]})'
            )
    found = row.get("retrieval")
    if found:
        where = f"rank {found['rank']}" if found["rank"] else f"**not in the top {k}**"
        evidence = ", ".join(f'"{e}"' for e in row["evidence"])
        lines.append(f"- retrieved (evidence {evidence}: {where}):")
        for i, hit in enumerate(found["hits"], start=1):
            mark = " ✓" if hit["match"] else ""
            lines.append(f'  {i}. `{hit["heading"]}` ({hit["score"]}){mark}: "{_clip(hit["text"])}"')
    return [*lines, ""]


def render_markdown(data: dict) -> str:
    """report.md from the report.json data."""
    k = data["settings"]["k"]
    base, settings, summary = data["base"], data["settings"], data["summary"]
    overall = summary["overall"]
    modes = ", ".join(m for m in MODES if settings[m]) or "retrieval only"
    lines = [
        f"# Parley eval: {base['name']}",
        "",
        base["description"],
        "",
        f"{data['timestamp']} · commit {data['commit'] or 'unknown'} · split {settings['split']}"
        + (f" · only {', '.join(settings['only'])}" if settings["only"] else "")
        + f" · {modes} · {len(data['rows'])} questions",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key, label, n_key in _headline(k):
        lines.append(f"| {label} | {_fmt(key, overall[key], overall[n_key] if n_key else None)} |")
    lines.append("")
    lines += _group_table("By category", summary["by_category"], k)
    lines += _group_table("By split", summary["by_split"], k)
    failures = [r for r in data["rows"] if any(_ok(r, m) is False for m in ("retrieval", *MODES))]
    lines += [f"## Failures ({len(failures)})", ""]
    for row in failures:
        lines += _failure(row, k)
    lines += _change_markdown(data.get("previous"), k)
    return "\n".join(lines).rstrip() + "\n"


def _change_markdown(previous: dict | None, k: int) -> list[str]:
    if previous is None:
        return ["## Change since the previous run", "", "No earlier report of this base in this folder.", ""]
    lines = [f"## Change since {previous['stamp']}", ""]
    scope = f"Over the {previous['shared']} questions both runs asked"
    if previous["only_now"] or previous["only_before"]:
        scope += f" ({previous['only_now']} only in this run, {previous['only_before']} only in that one)"
    lines += [f"{scope}.", ""]
    labels = {key: label for key, label, _ in _headline(k)}
    if previous["deltas"]:
        lines += ["| metric | before | now | change |", "| --- | --- | --- | --- |"]
        for key, d in previous["deltas"].items():
            lines.append(
                f"| {labels.get(key, key)} | {_fmt(key, d['before'])} | {_fmt(key, d['now'])} | "
                f"{_fmt_delta(key, d['delta'])} |"
            )
        lines.append("")
    for mode, flips in previous["flips"].items():
        for direction, label in (("right_to_wrong", "right → wrong"), ("wrong_to_right", "wrong → right")):
            if flips[direction]:
                lines.append(f"- {mode}, {label}: " + ", ".join(f"`{i}`" for i in flips[direction]))
    if not any(f[d] for f in previous["flips"].values() for d in f):
        lines.append("- no question changed between right and wrong")
    return [*lines, ""]


def write(out: Path, base: Base, rows: list[dict], settings: dict, stamp: str, k: int) -> Path:
    """Write OUT/<base>/<stamp>/report.json and report.md; return that folder."""
    base_dir = Path(out) / base.name
    folder = base_dir / stamp
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows, k)
    data = {
        "base": {
            "name": base.name,
            "description": base.description,
            "questions_file": str(base.questions_file),
            "knowledge_dir": str(base.knowledge_dir),
        },
        "stamp": stamp,
        "timestamp": datetime.strptime(stamp, STAMP_FORMAT).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "settings": settings,
        "summary": summary,
        "rows": rows,
        "previous": None,
    }
    previous_path = find_previous(base_dir, stamp)
    if previous_path is not None:
        # An unreadable or older-format report leaves nothing to compare with.
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data["previous"] = compare(json.loads(previous_path.read_text()), rows, k)
    (folder / REPORT_JSON).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    (folder / REPORT_MD).write_text(render_markdown(data))
    return folder


def summary_table(folders: list[Path], k: int) -> str:
    """The headline figures of each written report, one row per base, then where the reports are."""
    lines = [
        f"| base | n | hit@1 | hit@{k} | MRR | typed right | spoken right | OOK declined (typed) | STT WER |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for folder in folders:
        data = json.loads((folder / REPORT_JSON).read_text())
        m = data["summary"]["overall"]
        lines.append(
            f"| {data['base']['name']} | {len(data['rows'])} | {_fmt('hit@1', m['hit@1'])} | "
            f"{_fmt('hit@k', m[f'hit@{k}'])} | {_fmt('mrr', m['mrr'])} | "
            f"{_fmt('typed_right', m['typed_right'], m['typed_n'])} | "
            f"{_fmt('spoken_right', m['spoken_right'], m['spoken_n'])} | "
            f"{_fmt('ook', m['ook_typed_declined'], m['ook_typed_n'])} | {_fmt('stt_wer', m['stt_wer'])} |"
        )
    lines.append("")
    lines += [f"report: {folder / REPORT_MD}" for folder in folders]
    return "\n".join(lines)
