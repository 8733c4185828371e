"""Shared fixtures: a real Parley server in a subprocess, and speech synthesised with espeak-ng
(a voice other than the agent's Piper voice)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from voice.audio import resample_pcm16

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 180  # models assemble on a first run; loading alone takes ~10 s here
ESPEAK_WORDS_PER_MINUTE = 150  # a calm caller; espeak's default 175 is hurried


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speak(text: str, rate: int = 16000) -> bytes:
    """`text` spoken by espeak-ng, as mono s16le PCM at `rate`."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run `apt-get install espeak-ng` (.ci/run does it)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", str(ESPEAK_WORDS_PER_MINUTE), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(path), "rb") as wav:
            src_rate = wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    return resample_pcm16(pcm, src_rate, rate)


def cough(seconds: float = 0.35, seed: int = 7) -> bytes:
    """A cough-like burst at 16 kHz: loud, broadband, fast attack, quick decay, no words."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    envelope = np.minimum(1, t / 0.01) * np.exp(-t / 0.08)
    burst = rng.standard_normal(n) + 0.5 * np.sin(2 * np.pi * 180 * t)
    return (np.clip(0.6 * envelope * burst / np.abs(burst).max(), -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(int(seconds * rate) * 2)


@dataclass
class RunningServer:
    url: str
    ws_url: str
    process: subprocess.Popen
    log_path: Path
    trace_log: Path | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    tmp: Path, env_extra: dict[str, str] | None = None, wait_ready: bool = True
) -> RunningServer:
    port = free_port()
    env = dict(os.environ)
    env.update(env_extra or {})
    log_path = tmp / f"server-{port}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voice.cli",
            "--log-level",
            env.get("PARLEY_LOG_LEVEL", "INFO"),
            "serve",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    trace_log = env.get("PARLEY_TRACE_LOG")
    server = RunningServer(
        f"http://127.0.0.1:{port}",
        f"ws://127.0.0.1:{port}/ws",
        process,
        log_path,
        Path(trace_log) if trace_log else None,
    )
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()[-3000:]}")
        try:
            response = httpx.get(f"{server.url}/health", timeout=2)
            if response.status_code == 200 or (not wait_ready and response.status_code == 503):
                if not wait_ready and response.json().get("status") == "loading":
                    time.sleep(0.3)
                    continue
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"server not ready in {SERVER_START_TIMEOUT_S}s:\n{server.log()[-3000:]}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    """One real server with the default embedded models, shared by the end-to-end tests."""
    folder = tmp_path_factory.mktemp("server")
    running = start_server(folder, {"PARLEY_TRACE_LOG": str(folder / "traces.jsonl")})
    yield running
    stop_server(running)
