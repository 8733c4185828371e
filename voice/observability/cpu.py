"""CPU seconds by stage, read from the kernel's own per-thread counters.

Every model runs its work (and its loading) on threads of its own, named after its stage
(`run_in_stage`): Linux gives a new thread the name of the thread that started it, so the native
pools a model starts from there (CTranslate2's, ONNX Runtime's, llama.cpp's) carry the name too,
and the CPU a stage used is the sum over the threads that bear its name, whichever library spent
it. Silero's VAD runs on a thread pipecat starts per session and stops with it: it counts its
own thread time (`add_cpu`). The event loop's thread is the pipeline's: frames, resampling, the
echo guard, the protocol, the HTTP client of the LLM.

What no named thread or counter holds (a thread that has exited, a library's helper thread) is
`other`, so the stages add up to the process's CPU time. Where threads cannot be read (not
Linux), everything is `other`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# stage → the name its threads bear (Linux keeps 15 characters of a thread's name).
THREAD_NAMES = {
    "stt": "parley-stt",
    "turn": "parley-turn",  # Smart Turn, the end-of-turn model
    "rag": "parley-rag",  # embedding the question and searching the knowledge
    "llm": "parley-llm",  # the embedded llama.cpp: prefill and decode, and its HTTP threads
    "tts": "parley-tts",
}
# How many threads each stage's work may use at once. One for each model that serves one call at a
# time anyway (its engine holds a lock: Whisper, Smart Turn, Piper); retrieval takes one per
# caller at the default PARLEY_MAX_SESSIONS, so no search waits behind another caller's, nor
# behind a speculative one that was dropped but runs to its end. The pools last as long as the
# process, as the models do.
STAGE_WORKERS = {"stt": 1, "turn": 1, "rag": 4, "llm": 1, "tts": 1}
VAD = "vad"
PIPELINE = "pipeline"  # the event loop's thread
OTHER = "other"
# The LLM's CPU, split by the share of llama.cpp's own time spent reading prompts and writing tokens.
LLM_PREFILL, LLM_DECODE = "llm_prefill", "llm_decode"
STAGES = ("stt", VAD, "turn", "rag", LLM_PREFILL, LLM_DECODE, "tts", PIPELINE, OTHER)

_PR_SET_NAME = 15  # prctl(2): name the calling thread
_TASKS = Path("/proc/self/task")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_counted: dict[str, float] = {}
_counted_lock = threading.Lock()


@functools.cache
def _libc():
    """The C library, or None (looked up once: find_library runs a program)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def name_this_thread(name: str) -> None:
    """Give the calling OS thread a name (threads it starts from now on inherit it). A no-op
    where the C library cannot."""
    libc = _libc()
    if libc is None:
        return
    with contextlib.suppress(AttributeError):
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def stage_executor(stage: str, workers: int = 1) -> ThreadPoolExecutor:
    """Worker threads for one stage's model, named for it: what they (and the native threads they
    start) spend counts as that stage's CPU."""
    name = THREAD_NAMES[stage]
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix=name, initializer=name_this_thread, initargs=(name,)
    )


_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def _executor(stage: str) -> ThreadPoolExecutor:
    with _executors_lock:
        if stage not in _executors:
            _executors[stage] = stage_executor(stage, STAGE_WORKERS[stage])
        return _executors[stage]


def run_in_stage_blocking(stage: str, fn: Callable[..., T], *args) -> T:
    """`fn(*args)` on the process's threads for `stage`, from a thread that may wait for it."""
    return _executor(stage).submit(fn, *args).result()


async def run_in_stage(stage: str, fn: Callable[..., T], *args) -> T:
    """`fn(*args)` off the event loop, on the process's threads for `stage` (a model's loader
    too: the native threads it starts are then the stage's)."""
    return await asyncio.get_running_loop().run_in_executor(_executor(stage), functools.partial(fn, *args))


def add_cpu(stage: str, seconds: float) -> None:
    """Count CPU a stage measured itself (on a thread that does not last)."""
    with _counted_lock:
        _counted[stage] = _counted.get(stage, 0.0) + seconds


class ThreadCPU:
    """`with ThreadCPU(stage):` counts the calling thread's CPU time inside the block for `stage`."""

    def __init__(self, stage: str):
        self._stage = stage
        self._start = 0.0

    def __enter__(self) -> ThreadCPU:
        self._start = time.thread_time()
        return self

    def __exit__(self, *_exc) -> None:
        add_cpu(self._stage, time.thread_time() - self._start)


def _thread_cpu() -> list[tuple[int, str, float]]:
    """(thread id, name, CPU seconds) of each live thread of this process; [] where unreadable."""
    threads = []
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            stat = (task / "stat").read_text()
        except OSError:
            continue  # it exited while we read
        fields = stat[stat.rindex(")") + 2 :].split()  # the name, in (), may hold spaces
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
        threads.append((int(task.name), name, (utime + stime) / _TICKS_PER_S))
    return threads


class LLMSplit:
    """Splits the LLM threads' CPU into prefill and decode reading by reading: what they spent
    since the last reading goes by llama.cpp's own time in each since then, so both counts only
    grow. (Without its figures, or while it did neither, it counts as decode.) Approximate within
    a reading: llama.cpp adds a request's decode time when the request ends."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cpu = 0.0
        self._phases = (0.0, 0.0)
        self.prefill = 0.0
        self.decode = 0.0

    def update(self, llm_cpu: float, phases: tuple[float, float] | None) -> tuple[float, float]:
        with self._lock:
            spent = max(0.0, llm_cpu - self._cpu)
            self._cpu = max(self._cpu, llm_cpu)
            prefill_s = decode_s = 0.0
            if phases is not None:
                prefill_s = max(0.0, phases[0] - self._phases[0])
                decode_s = max(0.0, phases[1] - self._phases[1])
                # Two scrapes at once may hand in their readings out of order: never go back.
                self._phases = (max(phases[0], self._phases[0]), max(phases[1], self._phases[1]))
            share = prefill_s / (prefill_s + decode_s) if prefill_s + decode_s > 0 else 0.0
            self.prefill += spent * share
            self.decode += spent * (1.0 - share)
            return self.prefill, self.decode


_llm_split = LLMSplit()


def cpu_by_stage(
    llm_phases: tuple[float, float] | None = None, split: LLMSplit | None = None
) -> dict[str, float]:
    """CPU seconds this process has spent, by stage, since it started; they add up to its total.
    `llm_phases`: llama.cpp's own seconds reading prompts and writing tokens so far, to split the
    LLM's CPU by (`split` keeps that split from one reading to the next)."""
    total = time.process_time()
    threads: dict[str, float] = dict.fromkeys((*THREAD_NAMES, VAD, PIPELINE), 0.0)
    by_name = {name: stage for stage, name in THREAD_NAMES.items()}
    main = os.getpid()
    for tid, name, seconds in _thread_cpu():
        if tid == main:
            threads[PIPELINE] += seconds
        elif name in by_name:
            threads[by_name[name]] += seconds
    with _counted_lock:
        for stage, seconds in _counted.items():
            threads[stage] += seconds
    prefill, decode = (split or _llm_split).update(threads.pop("llm"), llm_phases)
    stages = dict.fromkeys(STAGES, 0.0)
    stages.update(threads)
    stages[LLM_PREFILL], stages[LLM_DECODE] = prefill, decode
    stages[OTHER] = max(0.0, total - sum(stages.values()))
    return stages
