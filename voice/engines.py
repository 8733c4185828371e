"""The models a server process loads once and every session shares."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from agents.context import SYSTEM_PROMPT
from agents.llm import EmbeddedLLM, LLMEndpoint, llm_stage_class, prime_slots, shared_http_client
from agents.rag.embed import Embedder
from agents.rag.questions import SHIPPED_CACHE, QuestionWriter
from agents.rag.retrieve import Retriever, open_knowledge
from voice import catalogue
from voice.config import Settings
from voice.observability.cpu import run_in_stage
from voice.stt import WhisperEngine
from voice.tts import PiperEngine, fetch_piper_voice
from voice.turntaking.smart_turn import SmartTurnEngine

log = logging.getLogger(__name__)


# role (as the error messages name it) → the stage whose threads load it and run it.
LOADER_STAGES = {"STT": "stt", "TTS": "tts", "embedding": "rag", "LLM": "llm", "end-of-turn": "turn"}
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(?::[\w./-]+)?$")  # owner/repo, or owner/repo:file.gguf
PIPER_VOICE_NAME = re.compile(r"^[a-z]{2,3}_[A-Z]{2}-[\w]+-(x_low|low|medium|high)$")  # en_US-lessac-medium


@dataclass
class ModelPaths:
    """Where each model comes from, resolved from settings before anything loads."""

    stt: str  # a CTranslate2 folder, or a hub id for users who are online
    tts: Path | str  # a Piper .onnx, or a Piper voice name to download (online users)
    llm_gguf: Path | str | None  # a GGUF file, "owner/repo[:file]" on the hub, or None for a remote endpoint
    embeddings: Path


def resolve_models(settings: Settings) -> ModelPaths:
    """Assemble (once) and verify the embedded defaults that settings don't replace.

    Each model can be replaced by a local path; STT, TTS and the LLM also by a hub id or voice
    name, fetched by their own libraries for users who are online. Raises catalogue.ModelError with
    what to do when something is missing or damaged.
    """
    home = settings.home
    stt = settings.stt_model or str(catalogue.ensure("whisper-base", home))
    tts: Path | str
    if not settings.tts_voice:
        tts = catalogue.ensure("piper-joe-medium", home) / "voice.onnx"
    elif PIPER_VOICE_NAME.match(settings.tts_voice) and not Path(settings.tts_voice).exists():
        tts = settings.tts_voice
    else:
        tts = Path(settings.tts_voice)
        if not tts.is_file() or not Path(f"{tts}.json").is_file():
            raise catalogue.ModelError(
                f"PARLEY_TTS_VOICE={tts}: need the .onnx file and its .onnx.json beside it "
                "(or a Piper voice name such as en_US-lessac-medium, if you are online)."
            )
    gguf: Path | str | None = None
    if not settings.llm_base_url:
        if not settings.llm_gguf:
            gguf = catalogue.ensure("qwen2.5-0.5b-instruct", home) / "model.gguf"
        elif Path(settings.llm_gguf).is_file():
            gguf = Path(settings.llm_gguf)
        elif HUB_ID.match(settings.llm_gguf):
            gguf = settings.llm_gguf
        else:
            raise catalogue.ModelError(
                f"PARLEY_LLM_GGUF={settings.llm_gguf} is not a file (nor a hub id such as owner/repo:file.gguf)."
            )
    if settings.embedding_model:
        embeddings = Path(settings.embedding_model)
        if not (embeddings / "model.onnx").is_file() or not (embeddings / "tokenizer.json").is_file():
            raise catalogue.ModelError(
                f"PARLEY_EMBEDDING_MODEL={embeddings}: need a folder with model.onnx and tokenizer.json."
            )
    else:
        embeddings = catalogue.ensure("minilm-l6-int8", home)
    return ModelPaths(stt=stt, tts=tts, llm_gguf=gguf, embeddings=embeddings)


def question_writer(settings: Settings, endpoint: LLMEndpoint, model_id: str) -> QuestionWriter | None:
    """The LLM that writes each fact's questions at ingest, if settings allow it for this endpoint."""
    if settings.ingest_questions == "false":
        return None
    if settings.ingest_questions == "embedded" and not endpoint.embedded:
        log.info(
            "facts are indexed without the questions they answer: the LLM is a remote endpoint; "
            "set PARLEY_INGEST_QUESTIONS=any to let it write them (once per fact, cached)"
        )
        return None
    shipped = Path(settings.knowledge_dir) / SHIPPED_CACHE
    return QuestionWriter(endpoint, model_id, settings.home / "questions-cache.json", [shipped])


def model_name(source: Path | str) -> str:
    """A readable name: the catalogue folder for embedded models, else the file or hub id."""
    if isinstance(source, Path):
        return source.parent.name if source.stem in ("model", "voice") else source.stem
    return source


@dataclass
class Engines:
    stt: WhisperEngine
    tts: PiperEngine
    llm: LLMEndpoint
    retriever: Retriever
    embedded_llm: EmbeddedLLM | None = None
    turn: SmartTurnEngine | None = None

    def describe(self) -> dict[str, str]:
        return {
            "stt": f"{self.stt.name} ({self.stt.device}/{self.stt.compute_type}, beam {self.stt.beam_size})",
            "tts": self.tts.name,
            "llm": f"{model_name(self.embedded_llm.gguf)} (embedded llama.cpp)"
            if self.embedded_llm
            else self.llm.model,
        }


async def _load(role: str, what: object, hint: str, fn, *args):
    """Run a blocking loader on its stage's threads (voice/observability/cpu.py: the native threads
    the model starts count as that stage's CPU); a failure names the model and what to do."""
    try:
        return await run_in_stage(LOADER_STAGES[role], fn, *args)
    except catalogue.ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear message
        raise catalogue.ModelError(
            f"The {role} model {what} could not be loaded ({type(exc).__name__}: {exc}). {hint}"
        ) from exc


async def load_engines(settings: Settings, paths: ModelPaths) -> Engines:
    """Load every model off the event loop; sessions can start once this returns."""
    verify_hint = "Check the setting that points at it, or run `parley models --verify`."
    stt = await _load(
        "STT",
        paths.stt,
        verify_hint,
        WhisperEngine.load,
        paths.stt,
        settings.stt_device,
        settings.stt_compute_type,
        settings.stt_beam_size,
        settings.stt_language,
        settings.stt_threads,
        settings.stt_short_window,
    )
    voice = paths.tts
    if isinstance(voice, str):  # a voice name: piper fetches it into the cache folder (online users)
        voice = await _load(
            "TTS",
            voice,
            "Check the name, or use a local .onnx file.",
            fetch_piper_voice,
            voice,
            settings.home,
        )
    tts = await _load(
        "TTS", voice, verify_hint, PiperEngine.load, voice, settings.tts_threads, stt.device == "cuda"
    )
    embedder = await _load("embedding", paths.embeddings, verify_hint, Embedder.load, paths.embeddings)
    embedded = None
    if paths.llm_gguf is not None:
        embedded = await _load(
            "LLM",
            paths.llm_gguf,
            verify_hint,
            EmbeddedLLM.start,
            paths.llm_gguf,
            settings.llm_threads,
            settings.llm_context_tokens,
            settings.llm_parallel,
        )
        endpoint = embedded.endpoint
    else:
        endpoint = LLMEndpoint(settings.llm_base_url.rstrip("/"), settings.llm_model, settings.llm_api_key)
    settings.home.mkdir(parents=True, exist_ok=True)
    writer = question_writer(settings, endpoint, model_name(paths.llm_gguf) if embedded else endpoint.model)
    try:
        retriever = await run_in_stage(
            "rag", open_knowledge, Path(settings.knowledge_dir), settings.knowledge_db(), embedder, writer
        )
    finally:
        if writer is not None:
            writer.close()
    stt.vocabulary = retriever.vocabulary()
    if embedded is not None:
        await asyncio.to_thread(prime_slots, endpoint, SYSTEM_PROMPT, settings.llm_parallel)
    turn = None
    if settings.smart_turn:
        turn = await _load(
            "end-of-turn", "Smart Turn v3", "It ships inside pipecat-ai.", SmartTurnEngine.load
        )
    # The OpenAI SDK's import (~0.6 s) and the loop's HTTP client, now rather than in the first
    # call, on the event loop.
    await asyncio.to_thread(llm_stage_class)
    shared_http_client()
    return Engines(stt=stt, tts=tts, llm=endpoint, retriever=retriever, embedded_llm=embedded, turn=turn)
