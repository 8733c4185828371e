"""The `parley` command: serve, talk, phone, models, ingest, eval."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from voice import catalogue


def _cmd_models(args: argparse.Namespace) -> int:
    if args.ensure:
        try:
            for key in catalogue.CATALOGUE:
                catalogue.ensure(key, progress=sys.stderr.isatty())
        except catalogue.ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    rows = catalogue.status()
    print(f"{'model':<24}{'role':<12}{'size':>9}  {'state':<14}{'licence':<12}  path")
    for row in rows:
        if args.verify and row.verified:
            ok = catalogue.verify(row.key)
            state = "verified" if ok else "CORRUPT"
        elif row.verified:
            state = "ready"
        elif row.carriers_installed:
            state = "not assembled"
        else:
            state = "carrier missing"
        licence = row.licence.split(" ")[0]
        print(
            f"{row.key:<24}{row.role:<12}{row.size_bytes / 1e6:>7.0f}MB  {state:<14}{licence:<12}  {row.path}"
        )
    for key, rel in (("silero-vad", "audio/vad/data/silero_vad.onnx"),):
        try:
            path = catalogue.bundled_pipecat_file(rel)
            print(
                f"{key:<24}{'vad':<12}{path.stat().st_size / 1e6:>7.1f}MB  {'bundled':<14}{'MIT':<12}  {path}"
            )
        except catalogue.ModelError as exc:
            print(f"{key:<24}{'vad':<12}{'-':>9}  {'missing':<14}  {exc}")
    missing = [r.key for r in rows if not r.verified]
    if missing and not args.ensure:
        print(f"\n{len(missing)} model(s) not ready: run `parley models --ensure` (or `make setup`).")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from voice.config import Settings
    from voice.server import create_app

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    if args.knowledge:
        overrides["knowledge_dir"] = Path(args.knowledge)
    try:
        settings = Settings(**overrides)
    except (ValidationError, SettingsError) as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        print(f"error: a setting is not valid: {exc}{cause}", file=sys.stderr)
        return 2
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level.lower(),
        ws_max_size=None,
        # No permessage-deflate: PCM audio hardly compresses, and deflating every 20 ms frame out
        # was ~8% of the event loop's CPU in a conversation (py-spy, 2 cores); events are small.
        ws_per_message_deflate=False,
    )
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from agents.rag.embed import Embedder
    from agents.rag.ingest import ingest_dir, shipped_entries
    from agents.rag.questions import SHIPPED_CACHE, write_cache
    from agents.rag.store import KnowledgeStore
    from voice.config import Settings

    folder = Path(args.dir)
    if not folder.is_dir():
        print(
            f"error: {folder} is not a folder; give the folder that holds your knowledge files "
            "(.md, .txt, .html, .pdf, FAQ files)",
            file=sys.stderr,
        )
        return 2
    overrides = {"knowledge_dir": folder}
    if args.questions is not None:
        overrides["ingest_questions"] = "any" if args.questions else "false"
    settings = Settings(**overrides)
    try:
        embedder = Embedder.load(catalogue.ensure("minilm-l6-int8", settings.home))
        writer, llm = _question_writer(settings)
    except catalogue.ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    db = Path(args.db) if args.db else settings.knowledge_db()
    store = KnowledgeStore.open(db)
    try:
        report = ingest_dir(folder, store, embedder, writer, progress=sys.stderr.isatty())
        if args.ship_questions and writer is not None:
            write_cache(folder / SHIPPED_CACHE, shipped_entries(folder, writer))
            print(
                f"wrote {folder / SHIPPED_CACHE}: ship it with the folder, and a fresh install skips the LLM"
            )
    finally:
        if writer is not None:
            writer.close()
        del llm
    print(
        f"{folder}: {len(report.files_added)} added, {len(report.files_updated)} updated, "
        f"{len(report.files_unchanged)} unchanged, {len(report.files_removed)} removed; "
        f"{report.facts} facts ({report.facts_embedded} prepared now"
        + (f", {writer.written} with questions written by the LLM" if writer else ", no questions")
        + f") in {db}"
    )
    for source, why in report.files_failed.items():
        print(f"skipped {source}: {why}", file=sys.stderr)
    for source in report.files_empty:
        print(
            f"warning: {source} has no text to answer from (a scanned PDF needs OCR first)", file=sys.stderr
        )
    return 1 if report.files_failed else 0


def _question_writer(settings):
    """The LLM that writes each fact's questions, as `serve` would have it: (writer, the embedded
    LLM to keep alive while it writes), or (None, None)."""
    from agents.llm import EmbeddedLLM, LLMEndpoint
    from voice.engines import model_name, question_writer, resolve_models

    if settings.ingest_questions == "false":
        return None, None
    if settings.llm_base_url:
        endpoint = LLMEndpoint(settings.llm_base_url.rstrip("/"), settings.llm_model, settings.llm_api_key)
        return question_writer(settings, endpoint, endpoint.model), None
    gguf = resolve_models(settings).llm_gguf
    llm = EmbeddedLLM.start(gguf, settings.llm_threads, settings.llm_context_tokens, parallel=1)
    return question_writer(settings, llm.endpoint, model_name(gguf)), llm


def _cmd_talk(args: argparse.Namespace) -> int:
    from clients.talk import main as talk_main

    return talk_main(args)


def _cmd_phone(args: argparse.Namespace) -> int:
    from clients.phone import main as phone_main

    return phone_main(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from evals.runner import main as eval_main

    return eval_main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    """The benchmark lives beside the code (benchmarks/bench.py): it needs a source checkout."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    if not script.exists():
        print("parley bench runs from a source checkout: clone the repository, then `make bench`.")
        return 2
    return subprocess.call([sys.executable, str(script), *args.bench_args])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="A real-time voice agent.")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the agent over WebSocket at /ws")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1, or PARLEY_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000, or PARLEY_PORT)")
    p.add_argument(
        "--knowledge", default=None, help="folder of knowledge files (.md, .txt, .html, .pdf) to answer from"
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("models", help="list the models, where they are and whether they are verified")
    p.add_argument("--ensure", action="store_true", help="assemble and verify any model that is not ready")
    p.add_argument("--verify", action="store_true", help="rehash every file (slow)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser(
        "ingest", help="prepare a folder of knowledge files (.md, .txt, .html, .pdf, FAQ) for retrieval"
    )
    p.add_argument("dir", help="the knowledge folder")
    p.add_argument("--db", default=None, help="index file (default: the one `serve` uses for this folder)")
    p.add_argument(
        "--questions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="have the LLM (embedded, or PARLEY_LLM_BASE_URL) write the questions each fact answers "
        "(default: PARLEY_INGEST_QUESTIONS)",
    )
    p.add_argument(
        "--ship-questions",
        action="store_true",
        help="also write the folder's questions to DIR/.parley-questions.json, so that a fresh "
        "install finds them instead of asking the LLM again",
    )
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("talk", help="ask a spoken question from a WAV file over /ws")
    p.add_argument("wav", help="a WAV file: mono or stereo, 16-bit, any of 8/16/24/48 kHz")
    p.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    p.add_argument("--out", default=None, help="save the agent's reply audio to this WAV")
    p.add_argument("--silence", type=float, default=3.0, help="seconds of silence sent after the speech")
    p.add_argument("--timeout", type=float, default=30.0, help="give up waiting for the reply after this")
    p.set_defaults(func=_cmd_talk)

    p = sub.add_parser(
        "phone", help="a phone call as Twilio would make it (Media Streams), without a Twilio account"
    )
    p.add_argument(
        "--wav", default=None, help="the question: a 16-bit WAV file (any rate; sent as 8 kHz μ-law)"
    )
    p.add_argument("--url", default="ws://127.0.0.1:8000/twilio/media")
    p.add_argument("--out", default=None, help="save what the caller heard to this WAV (8 kHz)")
    p.add_argument("--dtmf", default=None, help="keys to press and when, in s from the start: '*@2,0@9'")
    p.add_argument("--keys", action="store_true", help="press keys typed on the keyboard (Enter sends them)")
    p.add_argument(
        "--mic",
        action="store_true",
        help="a live call: talk into this computer's microphone, hear the agent on its speaker, "
        "type keys to press them, q and Enter to hang up (needs PortAudio: libportaudio2)",
    )
    p.add_argument(
        "--quiet", type=float, default=3.0, help="hang up once the agent has been silent this long"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="give up waiting for the agent after this")
    p.add_argument(
        "--auth-token",
        default=None,
        help="ring the voice webhook first, signed with this Twilio auth token, as Twilio does "
        "(needed when the server has PARLEY_TWILIO_AUTH_TOKEN)",
    )
    p.set_defaults(func=_cmd_phone)

    p = sub.add_parser(
        "eval",
        help="how well the agent answers from a knowledge base: retrieval, typed and spoken answers "
        "(the built-in bases of evals/data, or your own with --kb and --questions)",
    )
    p.add_argument("--kb", default=None, help="your own knowledge folder (needs --questions)")
    p.add_argument(
        "--questions",
        default=None,
        help='the question file (JSON; README, "Your own knowledge"); alone, its own knowledge folder',
    )
    p.add_argument(
        "--typed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="type the questions to a server and score the answers (default on; --no-typed: not)",
    )
    p.add_argument(
        "--spoken",
        action="store_true",
        help="also speak the questions (espeak-ng, in real time) and score transcript and answers",
    )
    p.add_argument("--url", default=None, help="a running server's /ws (default: start one per base)")
    p.add_argument("--split", choices=("dev", "heldout", "all"), default="all", help="which questions")
    p.add_argument("--only", default=None, help="only these question ids, comma-separated")
    p.add_argument(
        "--out", default="eval-results", help="reports go to OUT/<base>/<UTC time>/ (default eval-results)"
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="conversations at once (default 2 typed, 1 spoken: the speech-to-text uses both cores)",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "bench",
        help="latency benchmark: Parley and a stock-pipecat baseline at 1, 2, 4 callers "
        "(options: python benchmarks/bench.py --help)",
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to benchmarks/bench.py")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
