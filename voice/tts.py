"""Text to speech: one Piper voice per process, shared by every session.

Piper synthesises a sentence at a time, so the pipeline hands it sentences as the LLM streams
them, and the first sentence is heard while the LLM is still writing the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import onnxruntime
from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from voice.observability.cpu import run_in_stage
from voice.observability.tracing import Moment, TurnTracer

log = logging.getLogger(__name__)

# Spoken symbols: the LLM writes "$65" and "9am-5pm"; Piper's phonemiser reads "$" as nothing.
_SPOKEN = [
    (re.compile(r"\$(\d+(?:\.\d\d)?)"), r"\1 dollars"),
    (re.compile(r"(\d)\s*-\s*(\d)"), r"\1 to \2"),
    (re.compile(r"[*_#`]+"), ""),  # Markdown emphasis and headings are not meant to be read aloud
    (re.compile(r"&"), " and "),
    (re.compile(r"%"), " percent"),
]


def speakable(text: str) -> str:
    """Text as it should be read aloud: symbols spelled out, Markdown dropped."""
    for pattern, repl in _SPOKEN:
        text = pattern.sub(repl, text)
    return re.sub(r"\s+", " ", text).strip()


def fetch_piper_voice(name: str, home: Path) -> Path:
    """Download a Piper voice by name into `home/voices` (needs internet; offline users pass a path)."""
    from piper.download_voices import download_voice

    folder = home / "voices"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    if not path.is_file():
        download_voice(name, folder)
    return path


class PiperEngine:
    """A loaded Piper voice; `synthesize` is thread-safe and yields s16le PCM at `sample_rate`."""

    def __init__(self, voice, name: str):
        self._voice = voice
        self.name = name
        self.sample_rate: int = voice.config.sample_rate
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_path: Path, threads: int = 1, use_cuda: bool = False) -> PiperEngine:
        """Load a Piper .onnx voice (its .onnx.json beside it). Blocking: call in a thread."""
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        start = time.monotonic()
        config_path = Path(f"{model_path}.json")
        options = onnxruntime.SessionOptions()
        # PiperVoice.load would use every core; we bound it so TTS doesn't starve the LLM stream.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's pool threads spin between operators by default, burning the core the
        # LLM (streaming the rest of the answer) or Whisper needs; they sleep instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        )
        session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        path = Path(model_path)
        name = path.parent.name if path.stem == "voice" else path.stem  # the catalogue's folder is the name
        engine = cls(PiperVoice(session=session, config=config), name)
        b"".join(engine.synthesize("Ready."))  # warm-up: the first call pays for allocations
        log.info("TTS %s loaded in %.2fs", model_path, time.monotonic() - start)
        return engine

    def synthesize(self, text: str) -> Iterator[bytes]:
        """Yield PCM s16le chunks (one per sentence Piper finds) for `text`."""
        text = speakable(text)
        if not any(ch.isalnum() for ch in text):
            return
        with self._lock:  # held while the caller consumes: consume it whole (one thread does)
            for chunk in self._voice.synthesize(text):
                yield chunk.audio_int16_bytes


# --- the pipeline stage -------------------------------------------------------------------------


# An answer's first words go to Piper at the first clause break ("Based on the facts," "Yes,")
# rather than the end of the first sentence: the LLM writes ~30 tokens/s on 2 cores, so a ten-word
# opening sentence would keep the caller waiting ~0.2 s longer. Later text goes sentence by
# sentence (fewer, longer Piper calls sound more natural).
CLAUSE_BREAKS = ",;:"
# Fewer words than this before the break are too short a phrase to say on its own ("So,", "9,").
MIN_CLAUSE_WORDS = 3
# An opening that only points at the prompt ("Based on the facts provided,", "According to the
# information given,"): the small default model opens some answers with it. The caller never saw the
# facts, and it costs a second of speech before the answer; it is not spoken, and the history (which
# records what was spoken) does not keep it to be imitated.
PROMPT_PREAMBLE = re.compile(
    r"^(?:based on|according to|from|given|using|looking at)\s+(?:the\s+|these\s+|this\s+|your\s+)?"
    r"(?:given\s+|provided\s+|above\s+|available\s+)?(?:facts?|information|info|context|details|data)"
    r"(?:\s+(?:provided|given|above|below|available|you (?:gave|provided)(?: me)?|i have))?\s*[,:]$",
    re.I,
)


class FirstClauseAggregator(SimpleTextAggregator):
    """pipecat's sentence aggregator, except that each answer's first piece ends at the first
    clause break (a comma, semicolon or colon followed by a space, after MIN_CLAUSE_WORDS words)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._new_answer()

    def _new_answer(self) -> None:
        self._first = True
        self._capitalize = False  # set when a preamble was dropped: the next word opens the answer

    async def aggregate(self, text: str):
        for char in text:
            async for aggregation in super().aggregate(char):
                self._first = False
                yield aggregation
            if self._first and char == " " and self._ends_clause():
                clause, self._text = self._text.strip(" "), ""
                if PROMPT_PREAMBLE.match(clause):
                    self._capitalize = True
                    continue
                self._first = False
                yield Aggregation(text=clause, type=TextType.SENTENCE)
            elif self._capitalize and char.isalpha():
                self._text = self._text[:-1] + char.upper()
                self._capitalize = False

    def _ends_clause(self) -> bool:
        body = self._text.rstrip(" ")
        return bool(body) and body[-1] in CLAUSE_BREAKS and len(body.split()) >= MIN_CLAUSE_WORDS

    async def flush(self):  # pipecat calls it when an answer ends: the next one starts afresh
        self._new_answer()
        return await super().flush()

    async def reset(self):
        await super().reset()
        self._new_answer()

    async def handle_interruption(self):
        await super().handle_interruption()
        self._new_answer()


class PiperTTSStage(TTSService):
    """Speaks each sentence the LLM streams with the process's shared PiperEngine.

    pipecat's TTSService aggregates the LLM's tokens into sentences and calls `run_tts` once per
    sentence; the output transport paces the audio and drops it on interruption.
    """

    def __init__(self, engine: PiperEngine, tracer: TurnTracer, **kwargs):
        super().__init__(
            sample_rate=engine.sample_rate,
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=engine.name, voice=engine.name, language="en"),
            **kwargs,
        )
        self._engine = engine
        self._tracer = tracer
        # pipecat builds its sentence aggregator in the constructor and takes no other (pinned
        # version, see pyproject.toml): the first clause goes to Piper on its own.
        self._text_aggregator = FirstClauseAggregator(aggregation_type=TextType.SENTENCE, language="en")

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str):
        self._tracer.mark(Moment.TTS_FIRST_TEXT)
        try:
            await self.start_tts_usage_metrics(text)
            if not any(ch.isalnum() for ch in speakable(text)):
                # Nothing to say ("—", a stray bullet): a moment of silence, so pipecat does not
                # report the sentence as a TTS failure.
                yield self._audio_frame(bytes(self._engine.sample_rate // 50 * 2), context_id)
                return
            async for pcm in self._stream(text):
                self._tracer.mark(Moment.TTS_FIRST_AUDIO)
                await self.stop_ttfb_metrics()
                yield self._audio_frame(pcm, context_id)
        except Exception as exc:  # noqa: BLE001 - a failed sentence must not end the session
            log.exception("TTS failed for %r", text)
            yield ErrorFrame(error=f"TTS failed: {exc}")
        finally:
            await self.stop_ttfb_metrics()

    async def _stream(self, text: str):
        """Piper's audio for `text`, chunk by chunk as it is made (Piper splits long text into its
        own sentences): a long LLM "sentence" (a list on several lines) starts playing after its
        first part, instead of after all of it, past pipecat's 3 s wait for a sentence's audio."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

        def work() -> None:
            try:
                for pcm in self._engine.synthesize(text):
                    loop.call_soon_threadsafe(chunks.put_nowait, pcm)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the event loop below
                loop.call_soon_threadsafe(chunks.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, None)

        worker = asyncio.ensure_future(run_in_stage("tts", work))
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not worker.done():
                # Cancelled mid-sentence: the thread finishes its sentence unobserved.
                worker.add_done_callback(lambda _f: None)

    def _audio_frame(self, pcm: bytes, context_id: str) -> TTSAudioRawFrame:
        return TTSAudioRawFrame(pcm, self._engine.sample_rate, 1, context_id=context_id)
