"""Typed settings. Each is a `PARLEY_*` environment variable (or a `parley serve` flag) with its
default and the reason for that default; README.md lists them all."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice.catalogue import default_home

KNOWLEDGE_DEFAULT = Path(__file__).resolve().parent.parent / "agents" / "knowledge"
# The keys of a telephone keypad, as Twilio names them in its `dtmf` messages.
DTMF_KEYS = "0123456789*#"
# What the demo agent says when a caller presses a key. Generic enough for any knowledge base:
# '*' is the usual "repeat the menu" key, '0' the usual "talk to a person" key.
DEFAULT_DTMF_REPLIES = {
    "*": "Here is the menu. You can ask me about our opening hours, our prices, or anything else about "
    "the shop, and I will answer straight away. Press 0 at any time to speak to a member of staff.",
    "0": "Of course. I am transferring you to a member of staff now. Please hold.",
}


class Settings(BaseSettings):
    """Everything a deployment may tune. Defaults are the embedded, offline, CPU-friendly set."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Cache folder for assembled models and the knowledge index "
        "(default: the user's cache dir, ~/.cache/parley).",
    )

    # --- server
    host: str = Field(
        "127.0.0.1", description="Address `parley serve` binds; loopback so nothing is exposed by accident."
    )
    port: int = Field(8000, description="Port `parley serve` listens on.")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="OpenTelemetry spans (conversation > turn > stage): none, console (stdout), or otlp "
        "(to OTEL_EXPORTER_OTLP_ENDPOINT, the standard variables). Off by default: no side channel unasked.",
    )
    trace_log: Path | None = Field(
        None,
        description="Append one JSON line per turn (the turn.trace figures) to this file; unset: no log.",
    )
    max_sessions: int = Field(
        4,
        description="Concurrent conversations accepted; more get an `error` (busy). Matches llm_parallel, so "
        "each conversation keeps its own llama.cpp slot (and its prompt cache).",
    )

    # --- speech to text
    stt_model: str = Field(
        "",
        description="Whisper model: empty for the embedded whisper base, a local CTranslate2 folder, "
        "or a hub id/size name (e.g. 'small.en') for users who are online.",
    )
    stt_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' picks CUDA when a GPU is visible to CTranslate2, else the CPU."
    )
    stt_compute_type: str = Field(
        "auto", description="'auto' means float16 on CUDA and int8 on CPU (fastest without losing accuracy)."
    )
    stt_beam_size: int = Field(
        1,
        description="Greedy decoding: beam 5 (pipecat's default) costs ~2x time for no gain on short "
        "conversational turns.",
    )
    stt_narrowband_beam_size: int = Field(
        5,
        ge=1,
        description="Beam width for telephone audio (8 kHz, phone calls or an 8 kHz /ws client). On the "
        "24 spoken questions sent as 8 kHz μ-law (benchmarks/phone_accuracy.py), whisper base heard "
        "80% of the words with beam 5 and 71-73% greedy (beam 2: 77%, beam 3: 77%), for 50-180 ms more "
        "decode per turn on 2 cores (median, in three runs); on "
        "16 kHz audio beam 5 gained nothing.",
    )
    stt_language: str = Field("en", description="Fixed language skips Whisper's language detection pass.")
    stt_threads: int = Field(2, description="CPU threads for one transcription: the whole of a 2-core box.")
    stt_short_window: bool = Field(
        True,
        description="Encode the speech plus 3 s of Whisper's silent padding (at least 6 s), not its whole "
        "30 s window: on the 24 spoken questions, 2 cores, 229 ms p50 a transcription instead of 1195, "
        "WER 0.131 (was 0.136). Telephone audio, and sound heard while the agent talks (which may be "
        "its own echo), keep the whole window: without it they lost words, or grew some.",
    )
    stt_early_quiet_secs: float = Field(
        0.1,
        description="Silence after which Whisper starts on the speech so far, before the VAD's stop "
        "(PARLEY_VAD_STOP_SECS) confirms the pause: the transcript is ready that much sooner. Only when no "
        "transcription is queued; if the user speaks on, that one is thrown away. 0: start at the VAD's stop.",
    )

    # --- LLM
    llm_base_url: str = Field(
        "",
        description="An OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server, hosted APIs). "
        "Empty: run the embedded llama.cpp model in-process.",
    )
    llm_model: str = Field("", description="Model name sent to that endpoint (ignored by the embedded one).")
    llm_api_key: str = Field("", description="API key for that endpoint, if it needs one.")
    llm_gguf: str = Field(
        "", description="A local GGUF file for the embedded LLM instead of the default Qwen 0.5B."
    )
    llm_threads: int = Field(
        2, description="llama.cpp threads: all cores; STT and LLM never run at the same time in one turn."
    )
    llm_context_tokens: int = Field(
        4096, description="Per-session slot context: system prompt + facts + ~10 turns of history fit."
    )
    llm_max_tokens: int = Field(
        120,
        description="Cap on one answer: spoken answers should be a few sentences, and this bounds a runaway.",
    )
    llm_temperature: float = Field(
        0.0,
        description="Greedy: factual answers from the knowledge base, the same answer every time (evals agree).",
    )
    llm_parallel: int = Field(
        4, description="Embedded llama.cpp slots; each session keeps its prompt cache in one."
    )

    # --- text to speech
    tts_voice: str = Field(
        "", description="A Piper voice .onnx (its .onnx.json beside it); empty for the embedded joe voice."
    )
    tts_threads: int = Field(
        2,
        description="ONNX threads for one Piper synthesis (syntheses take turns). On 2 cores, with both "
        "cores free a sentence's audio comes ~25% sooner than on one thread (273 ms, was 364), and with "
        "both busy (the LLM streaming) no later; with one busy it is ~15% later.",
    )

    # --- RAG
    embedding_model: str = Field(
        "",
        description="A folder with model.onnx and tokenizer.json (a sentence-transformers ONNX export); empty for MiniLM.",
    )
    knowledge_dir: Path = Field(KNOWLEDGE_DEFAULT, description="Markdown/text files the agent answers from.")
    rag_top_k: int = Field(
        3,
        description="Facts retrieved per turn; those close to the best one go to the LLM: a fact is a "
        "sentence, so three cover a question and its neighbours while the prompt stays short.",
    )
    ingest_questions: Literal["false", "embedded", "any"] = Field(
        "false",
        description="At ingest, have the LLM write a few questions each fact answers, indexed as keywords "
        "beside it (cached by content, ~1 s a new fact on 2 cores). Off by default: the 0.5B default model "
        "writes noisy questions (as vectors they made retrieval worse; as keywords, on one eval base, "
        "+9 points hit@1 before the other preparation landed). 'embedded': with the embedded LLM only; "
        "'any': a remote endpoint too (it then reads your documents, and may bill for it).",
    )

    # --- turn taking
    vad_start_secs: float = Field(
        0.1,
        description="Speech needed before the user counts as speaking. Half Silero's 0.2 s default: a "
        "barge-in stops the agent ~100 ms sooner (p95 248 ms from speech onset, was 354), and what the "
        "VAD catches early is held, not obeyed: coughs, 'uh huh' and echo still never took the floor.",
    )
    vad_stop_secs: float = Field(
        0.2,
        description="Silence after which the VAD says the user stopped; short, because end of turn is decided "
        "by turn_pause_secs, not by this.",
    )
    turn_pause_secs: float = Field(
        0.6,
        description="Silence after speech that ends the turn. Long enough that a pause inside a question "
        "('Hi. ... What time do you open?') stays one turn; short enough to feel prompt.",
    )

    smart_turn: bool = Field(
        True,
        description="Ask Smart Turn v3 (in pipecat, ~50 ms on CPU) at each pause whether the speech sounds "
        "finished, and wait turn_pause_complete_secs or turn_pause_incomplete_secs instead of turn_pause_secs.",
    )
    turn_pause_complete_secs: float = Field(
        0.2,
        description="Silence that ends a turn that sounds finished ('Yes.', a whole question): short, so "
        "the answer comes quickly (on a CPU, Whisper's ~0.9 s is the longer wait anyway).",
    )
    turn_pause_incomplete_secs: float = Field(
        1.5,
        description="Silence that ends a turn that sounds unfinished ('Hi. ...', 'I've got a flat, ...'): "
        "room to go on, so the agent does not answer half a question.",
    )

    speculative_prefill: bool = Field(
        True,
        description="Once every word is transcribed and the end-of-turn pause is running, retrieve and have "
        "the LLM prefill the turn's prompt (one token, thrown away); the turn, when it ends, finds it "
        "cached. Dropped if the user goes on. A hosted API without prompt caching bills it twice: "
        "set false there.",
    )

    # --- interruptions
    interrupt_confirm_secs: float = Field(
        1.2,
        description="While the agent talks, speech pauses it at once; this much more speech (before any "
        "transcript) makes it an interruption. Backchannels are shorter: 'mm hm' and 'yeah, okay' run "
        "0.9-1.1 s, VAD onset included.",
    )
    interrupt_resume_secs: float = Field(
        2.5,
        description="After a sound that paused the agent ends, the longest the agent waits for a verdict "
        "before carrying on. Whisper takes 1.1-2 s on such a segment on a busy 2-core CPU; resuming "
        "before a verdict that then cuts the agent off sounds worse than waiting.",
    )
    echo_guard: bool = Field(
        True,
        description="Remove the agent's own voice from the caller's audio (speakerphones without echo "
        "cancellation); it learns there is no echo on a headset and then costs nothing.",
    )
    backchannel_words: str = Field(
        "mm-hmm,mmhm,mhm,mhmm,mm,hm,hmm,uh-huh,huh,uh,um,ah,aha,ah-ha,ha,oh,ooh,yeah,yes,yep,yup,okay,ok,right,sure,alright,i,see,got,it,"
        "oh,ah,cool,great,nice",
        description="Words that, said alone (up to 4) while the agent talks, acknowledge it rather than "
        "interrupt it. Comma-separated.",
    )

    # --- phone calls (Twilio Media Streams)
    public_url: str = Field(
        "",
        description="The address Twilio reaches this server at, e.g. https://parley.example.com (with a path "
        "prefix if a proxy adds one). /twilio/voice checks signatures against it and builds the media "
        "stream's URL from it (https gives wss). Empty: the request's own URL and Host header, with wss, "
        "which is right only when nothing between Twilio and Parley rewrites the request.",
    )
    twilio_auth_token: SecretStr = Field(
        SecretStr(""),
        description="Your Twilio account's auth token. Set, /twilio/voice refuses requests without a valid "
        "X-Twilio-Signature and /twilio/media refuses streams without the per-call token the webhook "
        "handed out; empty, anyone who finds the URL can start a call (logged at start-up).",
    )
    dtmf_replies: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_DTMF_REPLIES),
        description="What the agent says when a phone caller presses a key, as JSON {key: reply}; keys are "
        "0-9, * and #. Said as written, without the LLM (a keypad menu must say the same thing every "
        "time), cutting the agent off if it is talking. The default reads a menu on * and says it is "
        "transferring the caller on 0.",
    )

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(
                f"PARLEY_PUBLIC_URL={value!r} must be the address Twilio reaches this server at, "
                "like https://parley.example.com (http or https, a host, no query)"
            )
        return value.rstrip("/")

    @field_validator("dtmf_replies")
    @classmethod
    def _check_dtmf_replies(cls, value: dict[str, str]) -> dict[str, str]:
        for key, reply in value.items():
            if len(key) != 1 or key not in DTMF_KEYS:
                raise ValueError(
                    f"PARLEY_DTMF_REPLIES: {key!r} is not a keypad key; use one of {', '.join(DTMF_KEYS)}"
                )
            if not reply.strip():
                raise ValueError(f"PARLEY_DTMF_REPLIES: the reply to {key!r} is empty; write what to say")
        return {key: reply.strip() for key, reply in value.items()}

    def knowledge_db(self) -> Path:
        """One index per knowledge folder, so serving another folder never rewrites this one's."""
        digest = hashlib.sha256(str(Path(self.knowledge_dir).resolve()).encode()).hexdigest()[:12]
        return self.home / f"knowledge-{digest}.sqlite3"
