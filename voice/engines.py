"""The models a server process loads once and every session shares."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from agents.context import SYSTEM_PROMPT
from agents.llm import EmbeddedLLM, LLMEndpoint, prime_slots
from agents.rag.embed import Embedder
from agents.rag.retrieve import Retriever, open_knowledge
from voice import models
from voice.config import Settings
from voice.stt import WhisperEngine
from voice.tts import PiperEngine

log = logging.getLogger(__name__)


@dataclass
class ModelPaths:
    """Where each model comes from, resolved from settings before anything loads."""

    stt: str  # a CTranslate2 folder, or a hub id for users who are online
    tts: Path
    llm_gguf: Path | None  # None when a remote OpenAI-compatible endpoint is configured
    embeddings: Path


def resolve_models(settings: Settings) -> ModelPaths:
    """Assemble (once) and verify the embedded defaults that settings don't replace.

    Raises models.ModelError with what to run when a carrier is missing or a file is damaged.
    """
    home = settings.home
    stt = settings.stt_model or str(models.ensure("whisper-base", home))
    if settings.tts_voice:
        tts = Path(settings.tts_voice)
        if not tts.is_file() or not Path(f"{tts}.json").is_file():
            raise models.ModelError(
                f"PARLEY_TTS_VOICE={tts}: need the .onnx file and its .onnx.json beside it."
            )
    else:
        tts = models.ensure("piper-joe-medium", home) / "voice.onnx"
    gguf: Path | None = None
    if not settings.llm_base_url:
        gguf = (
            Path(settings.llm_gguf)
            if settings.llm_gguf
            else models.ensure("qwen2.5-0.5b-instruct", home) / "model.gguf"
        )
        if not gguf.is_file():
            raise models.ModelError(f"PARLEY_LLM_GGUF={gguf} is not a file.")
    return ModelPaths(stt=stt, tts=tts, llm_gguf=gguf, embeddings=models.ensure("minilm-l6-int8", home))


@dataclass
class Engines:
    stt: WhisperEngine
    tts: PiperEngine
    llm: LLMEndpoint
    retriever: Retriever
    embedded_llm: EmbeddedLLM | None = None

    def describe(self) -> dict[str, str]:
        return {
            "stt": f"{self.stt.name} ({self.stt.device}/{self.stt.compute_type}, beam {self.stt.beam_size})",
            "tts": self.tts.name,
            "llm": self.llm.model
            if not self.llm.embedded
            else f"{self.embedded_llm.gguf.name} (embedded llama.cpp)",
        }


async def _load(role: str, what: object, hint: str, fn, *args):
    """Run a blocking loader in a thread; a failure names the model and what to do."""
    try:
        return await asyncio.to_thread(fn, *args)
    except models.ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear message
        raise models.ModelError(
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
    )
    tts = await _load(
        "TTS", paths.tts, verify_hint, PiperEngine.load, paths.tts, settings.tts_threads, stt.device == "cuda"
    )
    embedder = await _load("embedding", paths.embeddings, verify_hint, Embedder.load, paths.embeddings)
    settings.home.mkdir(parents=True, exist_ok=True)
    retriever = await asyncio.to_thread(
        open_knowledge, Path(settings.knowledge_dir), settings.knowledge_db(), embedder
    )
    stt.vocabulary = retriever.vocabulary()
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
        await asyncio.to_thread(prime_slots, endpoint, SYSTEM_PROMPT, settings.llm_parallel)
    else:
        endpoint = LLMEndpoint(settings.llm_base_url.rstrip("/"), settings.llm_model, settings.llm_api_key)
    return Engines(stt=stt, tts=tts, llm=endpoint, retriever=retriever, embedded_llm=embedded)
