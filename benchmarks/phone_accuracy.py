"""Speech-to-text accuracy over the phone path: the benchmark questions as a browser sends them
(16 kHz) and as a phone call delivers them (8 kHz μ-law), heard by the same Whisper as the server.

    python benchmarks/phone_accuracy.py

Each question of benchmarks/questions.json is spoken by espeak-ng (tests.conftest.speak) and
transcribed four ways:

- `16k`: as /ws gets it from the web page, with the server's beam (PARLEY_STT_BEAM_SIZE);
- `phone`: band-limited to 8 kHz as a phone's codec does, μ-law encoded and decoded, then
  resampled to 16 kHz the way /twilio/media does (voice/transports/narrowband.py, in 20 ms pieces), and
  decoded with the beam the server uses on phone audio (PARLEY_STT_NARROWBAND_BEAM_SIZE);
- `phone-greedy`: the same audio decoded with the 16 kHz path's beam (what the phone path did
  before it had a beam of its own);
- `phone-pipecat`: the `phone` way, resampled to 16 kHz by pipecat's own soxr stream instead
  (what Parley replaced, for its delay; this shows whether that costs any accuracy).

It prints each transcript that differs from the question, then the word accuracy of each way:
1 - word error rate, over all the questions' words (lower case, punctuation and hyphens aside).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler  # noqa: E402

from agents.rag.embed import Embedder  # noqa: E402
from agents.rag.retrieve import open_knowledge  # noqa: E402
from benchmarks.stats import pct  # noqa: E402
from benchmarks.turn_latency import QUESTIONS  # noqa: E402
from clients.phone import ulaw_decode, ulaw_encode  # noqa: E402
from tests.conftest import speak  # noqa: E402
from voice import catalogue  # noqa: E402
from voice.audio import resample_pcm16  # noqa: E402
from voice.config import Settings  # noqa: E402
from voice.stt import WHISPER_SAMPLE_RATE, WhisperEngine  # noqa: E402
from voice.transports.narrowband import LowDelayResampler  # noqa: E402

PHONE_RATE = 8000
FRAME_BYTES = PHONE_RATE // 50 * 2  # 20 ms at 8 kHz, what Twilio sends
WAYS = ("16k", "phone", "phone-greedy", "phone-pipecat")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def edits(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level edit distance."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


def phone_line(pcm16k: bytes) -> bytes:
    """What a phone sends: 8 kHz μ-law, decoded back to PCM."""
    return ulaw_decode(ulaw_encode(resample_pcm16(pcm16k, WHISPER_SAMPLE_RATE, PHONE_RATE)))


async def upsampled(pcm8k: bytes, resampler) -> bytes:
    pieces = [
        await resampler.resample(pcm8k[i : i + FRAME_BYTES], PHONE_RATE, WHISPER_SAMPLE_RATE)
        for i in range(0, len(pcm8k), FRAME_BYTES)
    ]
    # What the resampler still holds when the speech is over: a phone line's silence pushes it out.
    tail = bytes(FRAME_BYTES * 10)
    pieces.append(await resampler.resample(tail, PHONE_RATE, WHISPER_SAMPLE_RATE))
    return b"".join(pieces)


async def main() -> int:
    settings = Settings()
    # The whole window, as the server reads telephone audio (voice/pipeline.py, needs_full_window).
    whisper = WhisperEngine.load(
        catalogue.ensure("whisper-base"), beam_size=settings.stt_beam_size, short_window=False
    )
    retriever = open_knowledge(
        Path(settings.knowledge_dir),
        settings.knowledge_db(),
        Embedder.load(catalogue.ensure("minilm-l6-int8")),
    )
    whisper.vocabulary = retriever.vocabulary()  # as the server's Whisper has it
    beams = {
        "16k": settings.stt_beam_size,
        "phone": settings.stt_narrowband_beam_size,
        "phone-greedy": settings.stt_beam_size,
        "phone-pipecat": settings.stt_narrowband_beam_size,
    }
    totals = {way: [0, 0, []] for way in WAYS}  # edits, reference words, decode times (ms)
    start = time.monotonic()
    for q in QUESTIONS:
        reference = words(q["question"])
        pcm = speak(q["question"])
        line = phone_line(pcm)
        phone = await upsampled(line, LowDelayResampler())
        audio = {
            "16k": pcm,
            "phone": phone,
            "phone-greedy": phone,
            "phone-pipecat": await upsampled(line, SOXRStreamAudioResampler()),
        }
        for way in WAYS:
            heard = whisper.transcribe_pcm16(audio[way], beams[way])
            text = heard.text
            wrong = edits(reference, words(text))
            totals[way][0] += wrong
            totals[way][1] += len(reference)
            totals[way][2].append(heard.elapsed_ms)
            if wrong:
                print(f"{q['id']:<18} {way:<14} {text!r}")
    print(
        f"\n{len(QUESTIONS)} questions, {time.monotonic() - start:.0f} s, Whisper {whisper.name} "
        f"({whisper.device}/{whisper.compute_type}), with the knowledge base's vocabulary"
    )
    print(f"{'way':<14} {'beam':>4} {'word accuracy':>13}  {'word errors':>11}  {'decode p50/p95 (ms)':>19}")
    for way in WAYS:
        wrong, total, times = totals[way]
        p50, p95 = pct(times, 0.5), pct(times, 0.95)
        print(
            f"{way:<14} {beams[way]:>4} {100 * (1 - wrong / total):>12.1f}%  {wrong:>5} / {total}  {p50:>9.0f} / {p95:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
