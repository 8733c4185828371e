"""Speech to text: one faster-whisper model per process, shared by every session.

The model is loaded in a worker thread (never on the event loop) by `WhisperEngine.load`, and
each transcription runs in a thread too. On a 2-core machine two transcriptions at once only
slow each other down, so they take turns on a lock; on a GPU that costs little.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from pipecat.frames.frames import TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

from voice.audio import PIPELINE_SAMPLE_RATE, pcm16_to_float
from voice.observability.cpu import run_in_stage
from voice.observability.tracing import Moment, TurnTracer
from voice.turntaking.end_of_turn import SpeechSegmentDoneFrame
from voice.turntaking.smart_turn import TURN_CONTEXT_S, SmartTurnEngine

log = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE = PIPELINE_SAMPLE_RATE  # Whisper's only input rate
# Whisper's own "no speech" probability above which a segment is dropped: a cough or a click
# then yields no words instead of a hallucinated "Thank you."
NO_SPEECH_THRESHOLD = 0.6
# Speech end → transcript, p99, for whisper base on 2 CPU cores; pipecat's end-of-turn timer waits
# at most this long for a transcript that never comes.
STT_P99_LATENCY_S = 1.5


# Speech runs at ~3 words (~4 tokens) a second; twice that, plus room for a short phrase, bounds a
# real transcript, and cuts off Whisper's rare repetition loops early.
MAX_TOKENS_PER_AUDIO_S = 8
MIN_MAX_TOKENS = 24
FALLBACK_TEMPERATURES = (0.0, 0.4, 0.8)
# A transcript of this many words or fewer that is word for word a piece of the vocabulary prompt
# is suspect: a caller saying just a heading is rare, Whisper echoing its prompt on a mumble is not.
PROMPT_ECHO_MAX_WORDS = 4
# A transcript this long made of this few distinct words is Whisper looping on a non-speech sound.
LOOP_MIN_WORDS = 6
LOOP_MAX_DISTINCT = 2
# Whisper's own sound labels ("[coughing]", "(clears throat)", "*sigh*"): not words anybody said.
_SOUND_LABEL = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")


# Whisper's encoder reads a 30 s window of 10 ms mel frames, padded with silence; faster-whisper
# always pads to it, and encoding it costs ~0.9 s on 2 CPU cores whatever the speech's length.
# CTranslate2 encodes a shorter window too: the speech, then this much of the padding, and at
# least MIN_WINDOW_FRAMES. On the 24 spoken questions (espeak-ng, 16 kHz, 2 cores): WER 0.131 and
# 229 ms p50 a transcription, against 0.136 and 1195 ms for the whole window. Less padding (1-2 s)
# made Whisper loop ("uh uh uh ...") and lose whole questions; 8 kHz telephone audio lost words
# even with 3 s (WER 0.43, whole window 0.30), so narrowband audio keeps the whole window. So does
# a sound heard while the agent talks: with the short window the agent's own faint echo came out
# as words ("The Wings,") and cut it off, once in five scripted calls (none with the whole one).
WINDOW_MARGIN_FRAMES = 300  # 3 s
MIN_WINDOW_FRAMES = 600  # 6 s
FULL_WINDOW_FRAMES = 3000  # 30 s: Whisper's own


def trim_window(features: np.ndarray) -> np.ndarray:
    """A padded mel window (faster-whisper's) cut to the speech plus WINDOW_MARGIN_FRAMES of the
    padding. The padding is exact zeros; a frame of speech or room noise never is."""
    frames = features if features.ndim == 2 else features[0]
    sounding = np.flatnonzero(np.any(frames != 0, axis=0))
    end = int(sounding[-1]) + 1 if len(sounding) else 0
    keep = min(frames.shape[-1], max(end + WINDOW_MARGIN_FRAMES, MIN_WINDOW_FRAMES))
    return features[..., :keep]


def windowed_model_class():
    """faster-whisper's WhisperModel, encoding a short window (`trim_window`) while
    `short` is set. Built on first use: faster-whisper is imported only when a model loads."""
    from faster_whisper import WhisperModel

    class WindowedWhisper(WhisperModel):
        short = False  # set per call, under the engine's lock

        def encode(self, features: np.ndarray):
            return super().encode(trim_window(features) if self.short else features)

    return WindowedWhisper


def max_tokens_for(audio_ms: float) -> int:
    return MIN_MAX_TOKENS + int(MAX_TOKENS_PER_AUDIO_S * audio_ms / 1000)


def pick_device(requested: str) -> tuple[str, str]:
    """(device, compute_type) for 'auto'|'cpu'|'cuda': CUDA float16 when a GPU is visible, else CPU int8."""
    import ctranslate2

    if requested == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    else:
        device = requested
    return device, ("float16" if device == "cuda" else "int8")


@dataclass(frozen=True)
class Transcript:
    text: str
    audio_ms: float
    elapsed_ms: float


class WhisperEngine:
    """A loaded faster-whisper model; `transcribe` is thread-safe."""

    def __init__(
        self,
        model,
        name: str,
        device: str,
        compute_type: str,
        beam_size: int,
        language: str,
        short_window: bool = True,
    ):
        self._model = model
        self.short_window = short_window  # encode the speech plus a margin (WINDOW_MARGIN_FRAMES)
        self.name = name
        self.device = device
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.language = language or None
        # Words the callers will use (the knowledge base's headings): Whisper spells them right
        # when it has seen them in its prompt ("tune-up", not "two-up").
        self.vocabulary: str | None = None
        self._lock = threading.Lock()
        self._in_flight = 0  # transcriptions asked for and not yet returned (queued or running)

    @property
    def busy(self) -> bool:
        """Some session's transcription is queued or running: speculative work waits its turn."""
        return self._in_flight > 0

    @classmethod
    def load(
        cls,
        model: str | Path,
        device: str = "auto",
        compute_type: str = "auto",
        beam_size: int = 1,
        language: str = "en",
        cpu_threads: int = 2,
        short_window: bool = True,
    ) -> WhisperEngine:
        """Load a CTranslate2 folder (or a hub id, for users who are online). Blocking: call in a thread."""
        dev, auto_type = pick_device(device)
        ctype = auto_type if compute_type == "auto" else compute_type
        start = time.monotonic()
        whisper = windowed_model_class()(str(model), device=dev, compute_type=ctype, cpu_threads=cpu_threads)
        engine = cls(whisper, Path(str(model)).name, dev, ctype, beam_size, language, short_window)
        # One short silent pass: the first real call would otherwise pay for lazy allocations.
        engine.transcribe_samples(np.zeros(WHISPER_SAMPLE_RATE // 2, dtype=np.float32))
        log.info("STT %s loaded on %s/%s in %.2fs", model, dev, ctype, time.monotonic() - start)
        return engine

    def transcribe_samples(
        self, samples: np.ndarray, beam_size: int | None = None, full_window: bool = False
    ) -> Transcript:
        """Transcribe 16 kHz float32 mono samples; `beam_size` overrides the engine's own, and
        `full_window` its short window (telephone audio needs the whole one)."""
        audio_ms = 1000.0 * len(samples) / WHISPER_SAMPLE_RATE
        beam = beam_size or self.beam_size
        short = self.short_window and not full_window
        start = time.monotonic()
        text = self._decode(samples, audio_ms, self.vocabulary, beam, short)
        if self.vocabulary and self._copied_from_prompt(text):
            # On a short unclear sound ("uh huh") Whisper may just say a line of its prompt back
            # ("E-bike service,"): heard again without the prompt, it is what it was.
            text = self._decode(samples, audio_ms, None, beam, short)
        return Transcript(text, audio_ms, 1000.0 * (time.monotonic() - start))

    def _copied_from_prompt(self, text: str) -> bool:
        words = re.findall(r"[a-z0-9']+", text.lower())
        prompt = " ".join(re.findall(r"[a-z0-9']+", (self.vocabulary or "").lower()))
        return 0 < len(words) <= PROMPT_ECHO_MAX_WORDS and f" {' '.join(words)} " in f" {prompt} "

    def _decode(
        self, samples: np.ndarray, audio_ms: float, prompt: str | None, beam_size: int, short: bool
    ) -> str:
        with self._lock:
            self._model.short = short  # read by WindowedWhisper.encode (load builds one)
            segments, _info = self._model.transcribe(
                samples,
                language=self.language,
                beam_size=beam_size,
                # Turns are independent utterances: conditioning on a previous one only invites loops.
                condition_on_previous_text=False,
                no_speech_threshold=NO_SPEECH_THRESHOLD,
                # The VAD already cut the speech out; Whisper's own VAD would run a second model.
                vad_filter=False,
                without_timestamps=True,
                initial_prompt=prompt or None,
                # Greedy first; a decode that fails Whisper's own checks is retried at most twice,
                # sampling, and every decode is capped by the audio's length. (Whisper's default
                # six temperatures and 448 tokens ran 18 s on a hum here; greedy alone heard
                # "Hi there" as "High-merror".)
                temperature=FALLBACK_TEMPERATURES,
                max_new_tokens=max_tokens_for(audio_ms),
            )
            text = " ".join(s.text.strip() for s in segments if s.text.strip()).strip()
        text = _SOUND_LABEL.sub("", text).strip()
        words = text.lower().split()
        if len(words) >= LOOP_MIN_WORDS and len(set(words)) <= LOOP_MAX_DISTINCT:
            text = ""  # "Thin Thin Thin Thin Thin Thin": a decoding loop on a hum, not speech
        if not any(ch.isalnum() for ch in text):
            text = ""  # punctuation alone ("...") is what Whisper writes for a breath or a click
        return text

    def transcribe_pcm16(
        self, pcm: bytes, beam_size: int | None = None, full_window: bool = False
    ) -> Transcript:
        """Transcribe 16 kHz s16le bytes."""
        return self.transcribe_samples(pcm16_to_float(pcm), beam_size, full_window)

    async def transcribe(
        self, pcm: bytes, beam_size: int | None = None, full_window: bool = False
    ) -> Transcript:
        """Transcribe 16 kHz s16le bytes off the event loop."""
        self._in_flight += 1
        try:
            return await run_in_stage("stt", self.transcribe_pcm16, pcm, beam_size, full_window)
        finally:
            self._in_flight -= 1


# --- the pipeline stage -------------------------------------------------------------------------


class PauseListener(Protocol):
    """How long the user has been quiet, as the session's VAD hears it (voice/turntaking/vad.py)."""

    @property
    def quiet_s(self) -> float: ...

    @property
    def stop_secs(self) -> float:
        """The silence after which the VAD says the user stopped."""
        ...


@dataclass
class EarlyTranscript:
    """A transcription started at a pause, before the VAD's stop: the segment's, if the segment
    turns out to be this audio plus silence."""

    audio: bytes  # the speech so far, as buffered (Whisper hears it with silence after)
    task: asyncio.Future[Transcript]

    def covers(self, segment: bytes) -> bool:
        # The segment pipecat hands over is the same buffer, grown only by the quiet frames up to
        # the VAD's stop and its trailing silence (speech resuming drops the early one).
        return segment.startswith(self.audio)


# What WhisperSTTStage reads of pipecat's SegmentedSTTService beyond its public API, to start a
# transcription at a pause (tests/test_pipecat_internals.py checks them on each pin).
PIPECAT_SEGMENTED_STT_INTERNALS = {
    "_audio_buffer": bytearray,  # the segment's audio so far
    "_user_speaking": bool,
    "_trailing_silence": "method",  # the silence pipecat appends to each segment
}


class WhisperSTTStage(SegmentedSTTService):
    """Transcribes each VAD speech segment with the process's shared WhisperEngine.

    pipecat's SegmentedSTTService buffers the audio from VAD start to VAD stop (with a short
    pre-roll) and calls `run_stt` once per segment, in order, off the audio path.
    """

    def __init__(
        self,
        engine: WhisperEngine,
        tracer: TurnTracer,
        turn_model: SmartTurnEngine | None = None,
        beam_size: int | None = None,
        full_window: Callable[[], bool] = lambda: False,
        pause: PauseListener | None = None,
        early_quiet_s: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            sample_rate=WHISPER_SAMPLE_RATE,
            ttfs_p99_latency=STT_P99_LATENCY_S,
            settings=STTSettings(model=engine.name, language=engine.language),
            **kwargs,
        )
        self._engine = engine
        self._beam_size = beam_size  # None: the engine's own (a phone call asks for a wider beam)
        # Asked at each segment: does it need Whisper's whole window (short_window)?
        self._full_window = full_window
        self._tracer = tracer
        self._turn_model = turn_model
        self._recent: deque[tuple[float, bytes]] = deque()  # (ended at, audio) of recent segments
        # After this much silence (PARLEY_STT_EARLY_QUIET_SECS, half the VAD's stop window), Whisper
        # starts on the speech so far, before the VAD's stop confirms the pause. A pause shorter
        # than this costs nothing; a longer one that the user speaks through costs one
        # transcription, thrown away, started only on an idle engine. None or 0: at the VAD's stop.
        self._pause = pause
        self._early_quiet_s = early_quiet_s
        self._early: EarlyTranscript | None = None

    @property
    def wants_wav_segments(self) -> bool:
        return False  # raw s16le at 16 kHz: no WAV header to write and parse again

    def can_generate_metrics(self) -> bool:
        return True

    def _turn_so_far(self, audio: bytes) -> bytes:
        """This segment, after the recent ones it may continue ("Hi. ... What time ...")."""
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > TURN_CONTEXT_S:
            self._recent.popleft()
        self._recent.append((now, audio))
        return b"".join(pcm for _, pcm in self._recent)

    async def process_audio_frame(self, frame, direction):
        await super().process_audio_frame(frame, direction)
        if self._pause is None or self._early_quiet_s <= 0 or not self._user_speaking:
            return
        quiet = self._pause.quiet_s
        if quiet < self._early_quiet_s:
            if self._early is not None and quiet == 0:
                self._early = None  # the user spoke on: not this segment's words after all
            return
        if self._early is None and not self._engine.busy and not self._full_window():
            # Only on an idle engine: speculative work never queues ahead of a caller's segment.
            # Not for Whisper's whole window (telephone audio, a sound over the agent's voice): a
            # run thrown away there ("uh … huh" has a gap) holds the engine ~1 s, and the verdict
            # on a backchannel waited behind it while the agent stayed paused.
            audio = bytes(self._audio_buffer)
            # Whisper hears it as it would hear the segment: with the silence still to come before
            # the VAD's stop, and the trailing silence pipecat adds. Its short window follows the
            # audio's length, and a different length can change the words ("Is there anywhere"
            # came out "Disney ran everywhere" with 0.5 s less silence).
            still_quiet = max(0.0, self._pause.stop_secs - quiet)
            tail = bytes(int(still_quiet * self.sample_rate) * 2) + self._trailing_silence()
            task = asyncio.ensure_future(
                self._engine.transcribe(audio + tail, self._beam_size, self._full_window())
            )
            task.add_done_callback(_consume)
            self._early = EarlyTranscript(audio, task)

    def _transcription(self, audio: bytes) -> asyncio.Future[Transcript]:
        """This segment's transcription: the one begun at its pause, or a new one."""
        early, self._early = self._early, None
        if early is not None and early.covers(audio):
            log.debug("STT: the transcription begun at the pause is this segment's")
            return early.task
        return asyncio.ensure_future(self._engine.transcribe(audio, self._beam_size, self._full_window()))

    async def run_stt(self, audio: bytes):
        self._tracer.mark_pending(Moment.STT_START)
        text = ""
        transcription = self._transcription(audio)
        if self._turn_model is not None:
            # While Whisper works: does the speech so far sound finished? Its verdict sets how long
            # the end-of-turn strategy waits, so it goes out first.
            try:
                yield await self._turn_model.judge(self._turn_so_far(audio))
            except Exception:  # noqa: BLE001 - without a verdict the default pause applies
                log.exception("Smart Turn failed; the default pause applies")
        try:
            await self.start_processing_metrics()
            result = await transcription
            await self.stop_processing_metrics()
            text = result.text
            log.debug("STT %.0f ms of audio in %.0f ms: %r", result.audio_ms, result.elapsed_ms, text)
        except Exception:  # noqa: BLE001 - one failed segment must not stall the turn
            log.exception("transcription failed; the segment counts as silence")
        self._tracer.mark_pending(Moment.STT_END)
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language=self._engine.language)
        # Sent even when nothing was heard: the end-of-turn strategy must not wait for this segment.
        yield SpeechSegmentDoneFrame(heard_words=bool(text))


def _consume(task: asyncio.Future) -> None:
    """An early transcription nobody awaits (the user spoke on) must not log an unread error."""
    if not task.cancelled():
        task.exception()
