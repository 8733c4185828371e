"""CPU seconds by stage: work on a stage's threads (and on native threads they start) counts as
that stage's, a short-lived thread's own count survives it, and the stages add up to the process's
CPU time. The counts are CPU time, not wall time: a loaded machine makes them no less true."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from voice.observability import cpu
from voice.observability.metrics import Metrics

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread counters are Linux's"
)

BURN_S = 0.3  # CPU seconds of work: well above the kernel's 10 ms tick
THREAD_EXIT_TIMEOUT_S = 5.0  # an exited thread leaves /proc within milliseconds, even under load


def burn(seconds: float = BURN_S) -> None:
    """Spend `seconds` of this thread's CPU time."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1


def started_thread_burns() -> None:
    """Start a thread (as a native library starts its pool) and let it do the work, until the
    kernel has let it go: `join` returns when its Python work is done, and on a busy machine the
    thread can still be listed (with its time) a moment after."""
    worker = threading.Thread(target=burn)
    worker.start()
    worker.join()
    deadline = time.monotonic() + THREAD_EXIT_TIMEOUT_S
    while str(worker.native_id) in os.listdir("/proc/self/task") and time.monotonic() < deadline:
        time.sleep(0.01)


async def test_work_on_a_stages_threads_counts_as_that_stage():
    before = cpu.cpu_by_stage()
    await cpu.run_in_stage("stt", burn)
    after = cpu.cpu_by_stage()
    assert after["stt"] - before["stt"] >= 0.8 * BURN_S
    assert after["tts"] - before["tts"] < 0.05, "nothing else was counted as the TTS's"


async def test_a_thread_a_stage_thread_starts_counts_as_that_stage():
    before = cpu.cpu_by_stage()
    await cpu.run_in_stage("tts", started_thread_burns)
    after = cpu.cpu_by_stage()
    # Only while it lives: a pool thread, as the models' are, stays.
    assert after["tts"] - before["tts"] < 0.05, "an exited thread's time is no longer the stage's"
    assert after[cpu.OTHER] - before[cpu.OTHER] >= 0.8 * BURN_S, "it is still counted, as other"

    stop = threading.Event()
    ready = threading.Event()

    def pool_thread() -> None:
        burn()
        ready.set()
        stop.wait()

    def start_pool() -> None:
        threading.Thread(target=pool_thread, daemon=True).start()

    before = cpu.cpu_by_stage()
    await cpu.run_in_stage("tts", start_pool)
    ready.wait(timeout=30)
    after = cpu.cpu_by_stage()
    stop.set()
    assert after["tts"] - before["tts"] >= 0.8 * BURN_S, "a living pool thread named by its starter"


def test_a_short_lived_thread_counts_its_own_time_and_the_count_outlives_it():
    before = cpu.cpu_by_stage()

    def vad_frame() -> None:
        with cpu.ThreadCPU(cpu.VAD):
            burn()

    worker = threading.Thread(target=vad_frame)
    worker.start()
    worker.join()
    after = cpu.cpu_by_stage()
    assert after[cpu.VAD] - before[cpu.VAD] >= 0.8 * BURN_S


def test_the_event_loops_thread_is_the_pipelines_and_the_stages_add_up_to_the_process():
    before = cpu.cpu_by_stage()
    burn()  # on the main thread
    after = cpu.cpu_by_stage()
    assert after[cpu.PIPELINE] - before[cpu.PIPELINE] >= 0.8 * BURN_S
    assert set(after) == set(cpu.STAGES)
    assert sum(after.values()) == pytest.approx(time.process_time(), abs=0.1)


def test_the_llms_cpu_is_split_by_llama_cpps_own_prefill_and_decode_time_reading_by_reading():
    split = cpu.LLMSplit()
    assert split.update(4.0, (1.0, 3.0)) == (1.0, 3.0), "a quarter of its time prefilling"
    # Then a stretch of pure prefill: that stretch's CPU is all prefill, and neither count shrinks
    # (splitting the running totals by the running shares would take decode back down).
    prefill, decode = split.update(8.0, (5.0, 3.0))
    assert (prefill, decode) == (5.0, 3.0)
    assert split.update(8.5, None) == (5.0, 3.5), "without llama.cpp's figures, decode"


def test_metrics_expose_cpu_seconds_by_stage():
    metrics = Metrics(cpu=lambda: {"stt": 1.5, "tts": 0.25})
    lines = metrics.render().decode().splitlines()
    assert 'parley_cpu_seconds_total{stage="stt"} 1.5' in lines
    assert 'parley_cpu_seconds_total{stage="tts"} 0.25' in lines


def test_the_baselines_model_calls_run_on_its_stage_threads_and_stream_as_before():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is a folder of scripts
    from benchmarks.baseline_server import StageCalls

    seen: list[str] = []

    class Model:
        sample_rate = 22050

        def transcribe(self, audio):
            def segments():  # decoded lazily, as faster-whisper's are
                for word in audio.split():
                    seen.append(threading.current_thread().name)
                    yield word

            return segments(), "info"

        def synthesize(self, text):
            for word in text.split():
                seen.append(threading.current_thread().name)
                yield word

    with cpu.stage_executor("stt", workers=2) as pool:
        calls = StageCalls(Model(), pool)
        segments, info = calls.transcribe("open on Sunday")
        assert list(segments) == ["open", "on", "Sunday"] and info == "info"
        assert list(calls.synthesize("we open at nine")) == ["we", "open", "at", "nine"]
        assert calls.sample_rate == 22050, "everything else is the model's own"
    assert len(seen) == 7 and all(name.startswith(cpu.THREAD_NAMES["stt"]) for name in seen)
