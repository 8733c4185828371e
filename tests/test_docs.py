"""The README documents every setting a user can change, and the project speaks of itself alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

from voice.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_and_every_documented_one_exists():
    settings = {f"PARLEY_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(s for s in settings if f"`{s}`" not in README)
    assert not missing, f"README lacks {missing}"
    documented = set(re.findall(r"`(PARLEY_[A-Z_]+)`", README))
    unknown = sorted(d for d in documented if d not in settings)
    assert not unknown, f"README documents settings that don't exist: {unknown}"


def test_the_readme_states_each_default_the_code_has():
    defaults = Settings()
    rows = re.findall(r"^\| `(PARLEY_[A-Z_]+)` \| `([^`]*)` \|", README, re.M)
    assert len(rows) >= 20, "the settings table lost its defaults"
    for variable, documented in rows:
        actual = getattr(defaults, variable.removeprefix("PARLEY_").lower())
        if isinstance(actual, str | int | float) and not isinstance(actual, bool):
            assert str(actual) == documented, f"{variable}: README says {documented}, the code has {actual}"


# A path that names this machine's layout: a home or cache folder, or an absolute path into one.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:root|home|tmp|work|Users)/[\w.-]+")
PROJECT_TEXT = ("*.py", "*.md", "*.json", "*.toml", "*.html", "*.yaml", "*.yml", "Makefile", "Dockerfile")


def test_no_file_of_the_project_names_a_path_of_the_machine_it_was_made_on():
    """A committed report, doc or script speaks of the project alone (and a report read on
    another machine must not point at folders that are not there)."""
    tracked = subprocess.run(
        ["git", "ls-files", *PROJECT_TEXT, *(f"**/{p}" for p in PROJECT_TEXT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    offenders = [
        f"{name}: {m.group(0)}"
        for name in sorted(set(tracked))
        if name != "tests/test_docs.py"
        for m in MACHINE_PATH.finditer((ROOT / name).read_text(encoding="utf-8", errors="replace"))
    ]
    assert not offenders, offenders


def test_the_baseline_names_its_models_without_their_paths(tmp_path):
    sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    from benchmarks.baseline_server import Shared

    stt = tmp_path / "whisper-base"
    stt.mkdir()
    voice = tmp_path / "piper-joe-medium" / "voice.onnx"
    gguf = tmp_path / "qwen2.5-0.5b-instruct" / "model.gguf"
    shared = Shared(
        settings=None,
        stt_model=str(stt),
        device="cpu",
        compute_type="int8",
        voice=voice,
        output_rate=22050,
        llm=types.SimpleNamespace(gguf=gguf),
        system_instruction="",
        stt_pool=None,
        tts_pool=None,
    )
    described = shared.describe()
    assert str(tmp_path) not in " ".join(described.values())
    assert described["stt"].startswith("whisper-base ")
    assert described["tts"].startswith("piper-joe-medium ")
    assert described["llm"].startswith("qwen2.5-0.5b-instruct ")


# voice/'s layers, lowest first (docs/architecture.md): a module may import its own layer and the
# ones below it, never one above (imports only for type checking do not count).
LAYERS = [
    {"audio", "echo", "protocol", "config", "catalogue", "observability"},
    {"stt", "tts", "engines", "turntaking", "transports"},
    {"conversation", "playback", "watchers", "pipeline", "session"},
    {"server", "cli"},
]


def _runtime_voice_imports(path: Path) -> set[str]:
    """The voice modules `path` imports when it runs, by their first name under voice/."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
        for node in ast.walk(guard)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + (
                [f"{node.module}.{a.name}" for a in node.names] if node.module == "voice" else []
            )
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        names |= {m.split(".")[1] for m in modules if m.startswith("voice.")}
    return names


def _layer(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_voice_imports_run_one_way():
    wrong = []
    for path in sorted((ROOT / "voice").rglob("*.py")):
        rel = path.relative_to(ROOT / "voice")
        if rel.name == "__init__.py":
            continue
        own = rel.parts[0].removesuffix(".py")
        for imported in _runtime_voice_imports(path):
            if _layer(imported) > _layer(own):
                wrong.append(f"voice/{rel} imports voice.{imported}")
    for path in sorted((ROOT / "agents").rglob("*.py")):
        for imported in _runtime_voice_imports(path) & (LAYERS[2] | LAYERS[3]):
            wrong.append(f"{path.relative_to(ROOT)} imports voice.{imported}")
    assert not wrong, wrong
