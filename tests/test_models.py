"""The model catalogue assembles carriers into verified files, once, atomically, and says what
to run when something is missing or damaged."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from voice import catalogue

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_carriers(tmp_path, monkeypatch):
    """Two installed 'carrier packages' holding the halves of a small model file."""
    site = tmp_path / "site"
    half_a, half_b = b"A" * 3000, b"B" * 2000
    (site / "carrier_one" / "data").mkdir(parents=True)
    (site / "carrier_two" / "data").mkdir(parents=True)
    (site / "carrier_one" / "__init__.py").write_text("")
    (site / "carrier_two" / "__init__.py").write_text("")
    (site / "carrier_one" / "data" / "p1").write_bytes(half_a)
    (site / "carrier_two" / "data" / "p2").write_bytes(half_b)
    monkeypatch.syspath_prepend(str(site))
    whole = half_a + half_b
    spec = catalogue.ModelSpec(
        key="tiny",
        role="stt",
        description="test model",
        files=(
            catalogue.ModelFile(
                "model.bin",
                (catalogue.Piece("carrier_one", "data/p1"), catalogue.Piece("carrier_two", "data/p2")),
                hashlib.sha256(whole).hexdigest(),
                len(whole),
            ),
        ),
        carriers=("carrier-one", "carrier-two"),
        licence="MIT",
        upstream="nowhere",
    )
    monkeypatch.setitem(catalogue.CATALOGUE, "tiny", spec)
    return site, whole


def test_carriers_are_assembled_into_one_verified_file(fake_carriers, tmp_path):
    _, whole = fake_carriers
    folder = catalogue.ensure("tiny", tmp_path / "home", progress=False)
    assert (folder / "model.bin").read_bytes() == whole
    assert catalogue.is_verified("tiny", tmp_path / "home")
    assert catalogue.verify("tiny", tmp_path / "home")


def test_a_model_is_assembled_only_once(fake_carriers, tmp_path, monkeypatch):
    home = tmp_path / "home"
    catalogue.ensure("tiny", home, progress=False)
    calls = []
    monkeypatch.setattr(catalogue, "_assemble_file", lambda *args: calls.append(args))
    monkeypatch.setattr(catalogue, "_sha256_file", lambda *args: calls.append(args))
    catalogue.ensure("tiny", home, progress=False)
    assert calls == [], "a verified model was read or rebuilt again"


def test_a_damaged_model_file_is_rebuilt_from_its_carriers(fake_carriers, tmp_path):
    _, whole = fake_carriers
    home = tmp_path / "home"
    folder = catalogue.ensure("tiny", home, progress=False)
    (folder / "model.bin").write_bytes(b"X" * len(whole))
    assert not catalogue.is_verified("tiny", home)
    catalogue.ensure("tiny", home, progress=False)
    assert (folder / "model.bin").read_bytes() == whole


def test_a_damaged_carrier_stops_with_the_command_to_reinstall(fake_carriers, tmp_path):
    site, _ = fake_carriers
    (site / "carrier_two" / "data" / "p2").write_bytes(b"C" * 2000)
    with pytest.raises(catalogue.ModelError, match="requirements-models.txt") as err:
        catalogue.ensure("tiny", tmp_path / "home", progress=False)
    assert "wrong sha256" in str(err.value)
    leftovers = list((tmp_path / "home" / "models" / "tiny").iterdir())
    assert not [p for p in leftovers if p.name != ".verified.json"], f"half-written files left: {leftovers}"


def test_a_missing_carrier_says_what_to_run(fake_carriers, tmp_path):
    site, _ = fake_carriers
    (site / "carrier_two" / "data" / "p2").unlink()
    with pytest.raises(catalogue.ModelError, match="make setup") as err:
        catalogue.ensure("tiny", tmp_path / "home", progress=False)
    assert "carrier-two" in str(err.value)


def test_parley_models_lists_every_default_model_ready_with_its_licence():
    models_out = subprocess.run(
        [sys.executable, "-m", "voice.cli", "models"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for key in ("whisper-base", "qwen2.5-0.5b-instruct", "piper-joe-medium", "minilm-l6-int8", "silero-vad"):
        line = next(line for line in models_out.splitlines() if line.startswith(key))
        assert "ready" in line or "bundled" in line, line
    assert "Apache-2.0" in models_out and "MIT" in models_out
