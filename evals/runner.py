"""`parley eval`: ask a base's questions, score the answers, write the report.

Three measurements, each optional but the first:

- retrieval: a fresh index of the knowledge folder, searched with each question as the agent does;
  a question is found when a passage among the top k holds all its evidence phrases.
- typed answers: each conversation is one /ws session of a real server; questions are typed.
- spoken answers (`--spoken`): the same conversations, each question spoken by espeak-ng and
  streamed in real time; the transcript is scored against the question (word error rate).

Without `--url`, a server is started for each base, on a free port, with the base's knowledge.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from evals import report
from evals.questions import (
    OUT_OF_KNOWLEDGE,
    Base,
    Question,
    QuestionFileError,
    builtin_bases,
    conversations,
    load_base,
    previous_question,
    select,
)
from evals.scoring import Verdict, declines, holds_evidence, judge, word_errors

RETRIEVAL_K = 3  # what the agent puts in the prompt (PARLEY_RAG_TOP_K's default): the fact must be there
HIT_PREVIEW_CHARS = 160  # of each retrieved passage, in the report: enough to see what it is about
TURN_TIMEOUT_S = 60.0  # a turn with no answer by then failed; a slow answer on 2 cores takes ~10 s
SERVER_START_TIMEOUT_S = 300  # a first run assembles the models before loading them
SERVER_STOP_TIMEOUT_S = 15
HEALTH_POLL_S = 0.5
TYPED_PARALLEL = 2  # conversations at once: the server paces audio in real time, so answers overlap
# Spoken turns run one at a time: the server's Whisper uses both cores, and two callers at once
# would measure the machine's queue, not the agent.
SPOKEN_PARALLEL = 1
# The server refuses sessions past PARLEY_MAX_SESSIONS with `busy`: wait and try again this often.
BUSY_RETRY_S = 2.0
BUSY_ATTEMPTS = 30
POLL_S = 0.05  # how often a turn's events are looked at while waiting for its end
# After `agent.audio_done` the turn's `turn.trace` follows at once; don't wait longer than this for it.
TRACE_GRACE_S = 2.0
# A spoken turn whose last speech segment brought no transcript (Whisper heard no words in it) is
# over once the answer is done and this much silence has passed since that segment.
NO_TRANSCRIPT_SETTLE_S = 3.0
PAUSE_BETWEEN_TURNS_S = 0.5  # a caller's breath before the next question of a conversation
ESPEAK_WORDS_PER_MINUTE = 150  # a calm caller; espeak's default 175 is hurried
SPOKEN_VOICES = ("en-us", "en-gb", "en-us+f3")  # American and British men, an American woman
MIC_RATE = 16000


# --- retrieval ------------------------------------------------------------------------------------


def load_embedder():
    """The embedding model the agent retrieves with (assembled on first use)."""
    from agents.rag.embed import Embedder
    from voice import catalogue

    return Embedder.load(catalogue.ensure("minilm-l6-int8"))


def _search(retriever, question: str, k: int, previous: str) -> list:
    """`retriever.search` as the agent calls it: with the previous question for a follow-up (an older
    retriever without `previous` gets the two questions as one query)."""
    if "previous" in inspect.signature(retriever.search).parameters:
        return retriever.search(question, k, previous=previous)
    return retriever.search(f"{previous} {question}".strip(), k)


def _hit_record(hit, evidence: tuple[str, ...]) -> dict:
    text = f"{getattr(hit, 'original', '')} {hit.text}"
    record = {
        "source": getattr(hit, "source", ""),
        "heading": getattr(hit, "heading", ""),
        "text": " ".join(hit.text.split())[:HIT_PREVIEW_CHARS],
        "score": round(float(hit.score), 5),
        "match": holds_evidence(text, evidence),
    }
    if hasattr(hit, "cosine"):
        record["cosine"] = round(float(hit.cosine), 4)
    return record


def evidence_rank(hits: list, evidence: tuple[str, ...]) -> int | None:
    """The position (1-based) by which the evidence has been retrieved: the first hit that holds all of
    it, or the first by which the hits so far hold it together (an answer cut into two facts, "a city
    bike is $25" and "an e-bike is $45", is found when both are in). None when it is not."""
    seen = ""
    for i, hit in enumerate(hits, start=1):
        text = f"{getattr(hit, 'original', '')} {hit.text}"
        seen = f"{seen} \n {text}"
        if holds_evidence(text, evidence) or holds_evidence(seen, evidence):
            return i
    return None


def retrieve(base: Base, questions: list[Question], retriever, k: int = RETRIEVAL_K) -> dict[str, dict]:
    """For each answerable question: what the top k passages were and the rank of the first that holds
    the evidence (None when none does). Out-of-knowledge questions have nothing to find."""
    found = {}
    for q in questions:
        if q.category == OUT_OF_KNOWLEDGE:
            continue
        previous = previous_question(base, q)
        found_hits = _search(retriever, q.question, k, previous)
        hits = [_hit_record(h, q.evidence) for h in found_hits]
        rank = evidence_rank(found_hits, q.evidence)
        found[q.id] = {"previous": previous, "rank": rank, "hits": hits}
    return found


@dataclass
class Retrieval:
    """A retrieval run: one record per answerable question (by id) and the figures over them."""

    records: dict[str, dict]
    metrics: dict


def retrieval_metrics(
    base: Base, k: int = RETRIEVAL_K, questions: list[Question] | None = None, embedder=None
) -> Retrieval:
    """Index `base`'s knowledge afresh in a temporary folder and measure retrieval over `questions`
    (default: all of them)."""
    questions = base.questions if questions is None else questions
    records = retrieve_all(base, questions, embedder or load_embedder(), k)
    rows = [{"category": q.category, "split": q.split, "retrieval": records.get(q.id)} for q in questions]
    return Retrieval(records, report.metrics(rows, k))


def retrieve_all(base: Base, questions: list[Question], embedder, k: int = RETRIEVAL_K) -> dict[str, dict]:
    """Retrieval records for `questions`, from a fresh index of the base in a temporary folder."""
    from agents.rag.retrieve import open_knowledge

    with tempfile.TemporaryDirectory(prefix="parley-eval-") as tmp:
        retriever = open_knowledge(base.knowledge_dir, Path(tmp) / "kb.sqlite3", embedder)
        try:
            return retrieve(base, questions, retriever, k)
        finally:
            store = getattr(retriever, "store", None)
            if store is not None and hasattr(store, "close"):
                store.close()  # before its folder goes


# --- speech ---------------------------------------------------------------------------------------


class SpeechError(RuntimeError):
    """espeak-ng is missing or has none of the voices."""


def available_voices(wanted: tuple[str, ...] = SPOKEN_VOICES) -> list[str]:
    """The voices of `wanted` this espeak-ng has: "en-gb" by its language, "en-us+f3" by its
    language and variant (espeak-ng silently speaks an unknown voice with its default one)."""
    if shutil.which("espeak-ng") is None:
        raise SpeechError("espeak-ng is not installed: `apt-get install espeak-ng` (it speaks the questions)")

    def column(args: list[str], index: int) -> set[str]:
        out = subprocess.run(["espeak-ng", *args], capture_output=True, text=True, check=True).stdout
        return {line.split()[index] for line in out.splitlines()[1:] if len(line.split()) > index}

    languages = column(["--voices"], 1)
    variants = {name.removeprefix("!v/") for name in column(["--voices=variant"], 4)}
    found = []
    for voice in wanted:
        language, _, variant = voice.partition("+")
        if language in languages and (not variant or variant in variants):
            found.append(voice)
    if not found:
        raise SpeechError(f"espeak-ng has none of the voices {list(wanted)} (`espeak-ng --voices`)")
    return found


def speak(text: str, voice: str) -> bytes:
    """`text` spoken by espeak-ng in `voice`, as mono s16le PCM at 16 kHz."""
    from voice.audio import resample_pcm16

    with tempfile.TemporaryDirectory(prefix="parley-eval-") as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(ESPEAK_WORDS_PER_MINUTE), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(path), "rb") as wav:
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
    return resample_pcm16(pcm, rate, MIC_RATE)


# --- the server -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    """The server did not start; the message ends with its log's tail."""


@contextmanager
def serve(knowledge_dir: Path, log_path: Path) -> Iterator[str]:
    """A `parley serve` for `knowledge_dir` on a free port, for the block's duration; yields its /ws URL.
    It inherits the environment (PARLEY_HOME, model settings) and logs to `log_path`."""
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "voice.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--knowledge", str(knowledge_dir)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)

    def tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise ServerError(f"the server exited (code {process.returncode}):\n{tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise ServerError(f"the server was not ready within {SERVER_START_TIMEOUT_S} s:\n{tail()}")
            time.sleep(HEALTH_POLL_S)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        process.terminate()
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- conversations over /ws -----------------------------------------------------------------------


@dataclass
class Turn:
    """What came back for one question."""

    transcript: str = ""  # what the server heard (a typed turn: the text itself)
    answer: str = ""
    turn_ids: list[int] = field(default_factory=list)
    trace_ms: dict = field(default_factory=dict)  # the last turn's `turn.trace` figures
    error: str = ""  # "timeout", "connection closed", a server error, or a failed session


def _read_turn(events: list[dict], after_turn: int, typed: str | None) -> tuple[Turn, bool]:
    """The question's turn from the events since it was asked, and whether its answer is complete.
    Its turns are those with a transcript numbered after `after_turn` (speech may make several; a
    typed question is the one whose transcript is its text)."""
    transcripts: dict[int, str] = {}
    for e in events:
        mine = typed is None or e.get("text", "").split() == typed.split()
        if e.get("type") == "user.transcript" and e.get("turn_id", -1) > after_turn and mine:
            transcripts[e["turn_id"]] = e["text"]  # the latest text of a turn is the turn's text
    turn = Turn(transcript=" ".join(transcripts.values()), turn_ids=sorted(transcripts))
    turn.answer = " ".join(
        e["text"] for e in events if e.get("type") == "agent.text" and e.get("turn_id") in transcripts
    )
    errors = [e for e in events if e.get("type") == "error"]
    if errors:
        turn.error = f"server error {errors[0].get('code')}: {errors[0].get('message', '')}"
        return turn, True
    if not transcripts:
        return turn, False
    last = turn.turn_ids[-1]
    traces = [e for e in events if e.get("type") == "turn.trace" and e.get("turn_id") == last]
    if traces:
        turn.trace_ms = traces[-1].get("stages_ms", {})
    return turn, bool(traces)


def _audio_done(events: list[dict], turn_id: int) -> bool:
    return any(e.get("type") == "agent.audio_done" and e.get("turn_id") == turn_id for e in events)


def _user_settled(events: list[dict], now: float, stopped_at: float | None) -> bool:
    """Whether the spoken question is over: the caller is not speaking, and the last stretch of
    speech brought its transcript (or enough silence has passed that it never will)."""

    def last(kind: str) -> int:
        return max((i for i, e in enumerate(events) if e.get("type") == kind), default=-1)

    stopped = last("user.speech_stopped")
    if last("user.speech_started") > stopped:
        return False
    if last("user.transcript") > stopped:
        return True
    return stopped_at is not None and now - stopped_at >= NO_TRANSCRIPT_SETTLE_S


def _closed(caller) -> bool:
    """Whether the caller's socket is gone (then no answer will come: don't wait out the timeout)."""
    from websockets.protocol import State

    ws = getattr(caller, "_ws", None)
    return ws is not None and ws.state is State.CLOSED


async def _ask(caller, question: Question, after_turn: int, pcm: bytes | None, timeout_s: float) -> Turn:
    """Ask one question on `caller` (typed when `pcm` is None, else spoken) and wait for its answer."""
    received = caller.log.received
    mark = len(received)
    typed = question.question if pcm is None else None
    if pcm is None:
        await caller.type(question.question)
    else:
        # Returns when the speech's last frame has been sent; never, if the socket closed under it.
        await asyncio.wait_for(caller.say(pcm), len(pcm) / (2 * MIC_RATE) + timeout_s)
    deadline = time.monotonic() + timeout_s
    done_at = None  # when `agent.audio_done` came without its trace
    while True:
        events = [h.event for h in received[mark:] if h.event is not None]
        turn, complete = _read_turn(events, after_turn, typed)
        now = time.monotonic()
        if turn.turn_ids and not complete and _audio_done(events, turn.turn_ids[-1]):
            done_at = done_at or now
            complete = now - done_at >= TRACE_GRACE_S
        if complete and pcm is not None and not turn.error:
            stops = [h.at for h in received[mark:] if h.event and h.event["type"] == "user.speech_stopped"]
            complete = _user_settled(events, now, stops[-1] if stops else None)
        if complete:
            return turn
        if _closed(caller):
            turn.error = "connection closed"
            return turn
        if now > deadline:
            turn.error = "timeout"
            return turn
        await asyncio.sleep(POLL_S)


async def _open_caller(url: str):
    """A `clients.caller.Caller` with its session started, retrying while the server is busy."""
    import websockets

    from clients.caller import Caller

    for attempt in range(BUSY_ATTEMPTS):
        caller = Caller(url)
        try:
            return await caller.__aenter__()
        except (RuntimeError, websockets.ConnectionClosed) as exc:
            if attempt == BUSY_ATTEMPTS - 1 or not any(code in str(exc) for code in ("busy", "not_ready")):
                raise
        await asyncio.sleep(BUSY_RETRY_S)
    raise AssertionError("unreachable")


async def _converse(
    url: str, chain: list[Question], audio: dict[str, bytes] | None, timeout_s: float
) -> dict[str, Turn]:
    """One conversation: the chain's questions in order on one session. `audio` maps ids to speech
    (None: typed)."""
    import websockets

    turns: dict[str, Turn] = {}
    try:
        caller = await _open_caller(url)
    except (OSError, RuntimeError, websockets.WebSocketException) as exc:
        return {q.id: Turn(error=f"no session: {exc}") for q in chain}
    try:
        after_turn = -1
        for i, question in enumerate(chain):
            if i and audio is not None:
                await asyncio.sleep(PAUSE_BETWEEN_TURNS_S)
            turn = await _ask(caller, question, after_turn, audio[question.id] if audio else None, timeout_s)
            turns[question.id] = turn
            after_turn = max([after_turn, *turn.turn_ids])
            if turn.error == "connection closed":
                break
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        for question in chain:
            turns.setdefault(question.id, Turn(error=f"connection lost: {exc or type(exc).__name__}"))
    finally:
        await caller.__aexit__(None, None, None)
    for question in chain:
        turns.setdefault(question.id, Turn(error="connection closed"))
    return turns


def _progress(question: Question, record: dict, mode: str) -> None:
    mark = "right" if record["right"] else "WRONG"
    heard = f" heard {record['transcript']!r}" if mode == "spoken" else ""
    print(
        f"  {mode:<6} {question.id:<28} {mark:<5}{heard} → {record['answer'][:120]!r} ({record['reason']})",
        file=sys.stderr,
        flush=True,
    )


def _record(question: Question, turn: Turn) -> dict:
    """A turn scored: a turn that failed (timeout, error, lost connection) is wrong with answer "",
    whatever part of an answer came (kept as `partial_answer`)."""
    answer = "" if turn.error else turn.answer
    verdict = Verdict(False, turn.error) if turn.error else judge(answer, question)
    record = {
        "answer": answer,
        "right": verdict.right,
        "reason": verdict.reason,
        "declined": declines(answer),
        "turn_ids": turn.turn_ids,
        "trace_ms": turn.trace_ms,
    }
    if turn.error:
        record["error"] = turn.error
        record["partial_answer"] = turn.answer
    return record


async def _run_all(
    base: Base,
    url: str,
    questions: list[Question],
    parallel: int,
    audio: dict[str, bytes] | None,
    timeout_s: float,
) -> dict[str, Turn]:
    wanted = {q.id for q in questions}
    chains = conversations(base.questions, wanted)
    gate = asyncio.Semaphore(max(1, parallel))
    mode = "typed" if audio is None else "spoken"

    async def one(chain: list[Question]) -> dict[str, Turn]:
        async with gate:
            turns = await _converse(url, chain, audio, timeout_s)
        for q in chain:
            if q.id in wanted:
                _progress(q, _record(q, turns[q.id]) | {"transcript": turns[q.id].transcript}, mode)
        return turns

    results: dict[str, Turn] = {}
    for turns in await asyncio.gather(*(one(chain) for chain in chains)):
        results.update(turns)
    return results


def run_typed(
    base: Base,
    url: str,
    parallel: int = TYPED_PARALLEL,
    questions: list[Question] | None = None,
    timeout_s: float = TURN_TIMEOUT_S,
) -> list[dict]:
    """Type `questions` (default: all) to the server at `url`, conversation by conversation; one row
    per question, in file order: id, answer, right, reason, declined (and error when it failed)."""
    questions = base.questions if questions is None else questions
    turns = asyncio.run(_run_all(base, url, questions, parallel, None, timeout_s))
    return [{"id": q.id, **_record(q, turns[q.id])} for q in questions]


def run_spoken(
    base: Base,
    url: str,
    parallel: int = SPOKEN_PARALLEL,
    questions: list[Question] | None = None,
    voices: list[str] | None = None,
    timeout_s: float = TURN_TIMEOUT_S,
) -> list[dict]:
    """Speak `questions` (default: all) to the server at `url`, each in one of `voices` (by its place
    in the file, so a question keeps its voice from run to run); one row per question, in file order:
    id, voice, transcript, word error rate, answer, right, reason."""
    questions = base.questions if questions is None else questions
    voices = voices or available_voices()
    # Questions that open a selected follow-up are asked too, though not scored.
    asked = {q.id for chain in conversations(base.questions, {q.id for q in questions}) for q in chain}
    voice_of = {q.id: voices[i % len(voices)] for i, q in enumerate(base.questions)}
    audio = {q.id: speak(q.question, voice_of[q.id]) for q in base.questions if q.id in asked}
    turns = asyncio.run(_run_all(base, url, questions, parallel, audio, timeout_s))
    rows = []
    for q in questions:
        turn = turns[q.id]
        errors, n = word_errors(q.question, turn.transcript)
        rows.append(
            {
                "id": q.id,
                "voice": voice_of[q.id],
                "transcript": turn.transcript,
                "word_errors": errors,
                "ref_words": n,
                "wer": round(errors / n, 4) if n else 0.0,
                **_record(q, turn),
            }
        )
    return rows


# --- one base, the command ------------------------------------------------------------------------


@dataclass
class Options:
    """What `parley eval` was asked to do."""

    split: str = "all"
    only: list[str] | None = None
    typed: bool = True
    spoken: bool = False
    url: str | None = None
    parallel: int | None = None  # None: TYPED_PARALLEL typed, SPOKEN_PARALLEL spoken
    out: Path = Path("eval-results")
    k: int = RETRIEVAL_K

    def settings(self, voices: list[str] | None) -> dict:
        return {
            "k": self.k,
            "split": self.split,
            "only": self.only,
            "typed": self.typed,
            "spoken": self.spoken,
            "url": self.url or "started per base",
            "parallel_typed": self.parallel or TYPED_PARALLEL,
            "parallel_spoken": self.parallel or SPOKEN_PARALLEL,
            "voices": voices,
            "turn_timeout_s": TURN_TIMEOUT_S,
            "env": report.parley_env(),
        }


def evaluate(base: Base, options: Options, embedder, stamp: str, voices: list[str] | None) -> Path:
    """Every measurement `options` asks for on `base`; writes its report and returns its folder."""
    questions = select(base.questions, options.split, options.only)
    print(
        f"{base.name}: {len(questions)} questions, knowledge {base.knowledge_dir}",
        file=sys.stderr,
        flush=True,
    )
    found = retrieve_all(base, questions, embedder, options.k)
    rows = [{**q.to_dict(), "retrieval": found.get(q.id), "typed": None, "spoken": None} for q in questions]
    by_id = {row["id"]: row for row in rows}
    with tempfile.TemporaryDirectory(prefix="parley-eval-") as tmp:
        log_path = Path(tmp) / "server.log"
        if options.typed or options.spoken:
            with _server_or(options.url, base, log_path) as url:
                if options.typed:
                    for r in run_typed(base, url, options.parallel or TYPED_PARALLEL, questions):
                        by_id[r.pop("id")]["typed"] = r
                if options.spoken:
                    spoken = run_spoken(base, url, options.parallel or SPOKEN_PARALLEL, questions, voices)
                    for r in spoken:
                        by_id[r.pop("id")]["spoken"] = r
        folder = report.write(options.out, base, rows, options.settings(voices), stamp, options.k)
        if log_path.exists():
            shutil.copy(log_path, folder / "server.log")
    return folder


@contextmanager
def _server_or(url: str | None, base: Base, log_path: Path) -> Iterator[str]:
    """`url` when given, else a server of our own for `base`."""
    if url:
        yield url
        return
    print(
        f"{base.name}: starting a server (its log goes into the report folder)", file=sys.stderr, flush=True
    )
    with serve(base.knowledge_dir, log_path) as started:
        yield started


def _bases(args: argparse.Namespace) -> list[Base]:
    if args.questions:
        return [load_base(args.questions, args.kb)]
    bases = builtin_bases()
    if not bases:
        raise QuestionFileError("evals/data", ["no built-in base found: give --kb DIR --questions FILE"])
    return bases


def main(args: argparse.Namespace) -> int:
    """`parley eval`: 0 when it measured (whatever the figures), 2 on bad input, 1 when it could not run."""
    only = [i.strip() for i in args.only.split(",") if i.strip()] if args.only else None
    if args.kb and not args.questions:
        print(
            "error: --kb needs --questions FILE: the questions to ask about that knowledge and what a "
            'right answer says (the format is in the README, section "Your own knowledge")',
            file=sys.stderr,
        )
        return 2
    try:
        bases = _bases(args)
    except QuestionFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if only:
        unknown = sorted(set(only) - {q.id for b in bases for q in b.questions})
        if unknown:
            print(f"error: --only names no question of {[b.name for b in bases]}: {unknown}", file=sys.stderr)
            return 2
    bases = [b for b in bases if select(b.questions, args.split, only)]
    if not bases:
        print(
            f"error: no question is in split {args.split!r}{' and --only' if only else ''}", file=sys.stderr
        )
        return 2
    if args.url and len(bases) > 1:
        print(
            "error: --url is one server with one knowledge folder, and this run has several bases "
            f"({', '.join(b.name for b in bases)}): pick one with --questions FILE",
            file=sys.stderr,
        )
        return 2
    if args.parallel is not None and args.parallel < 1:
        print("error: --parallel must be at least 1", file=sys.stderr)
        return 2
    # The health poll's every request would be logged at INFO, between the answers.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = Options(args.split, only, args.typed, args.spoken, args.url, args.parallel, Path(args.out))
    try:
        voices = available_voices() if options.spoken else None
        embedder = load_embedder()
    except Exception as exc:  # noqa: BLE001 - a missing model or espeak-ng: say which, don't trace back
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stamp = datetime.now(UTC).strftime(report.STAMP_FORMAT)
    written = []
    for base in bases:
        try:
            written.append(evaluate(base, options, embedder, stamp, voices))
        except ServerError as exc:
            print(f"error: {base.name}: {exc}", file=sys.stderr)
            return 1
    print(report.summary_table(written, options.k))
    return 0
