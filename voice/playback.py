"""What the agent said out loud: each sentence of the current answer with the audio it took, how
much of that audio went out, and so what the user heard before an interruption.

The TTS side queues sentences and their audio as they are made; the socket side counts the bytes
actually sent (the transport paces them in real time). Clients that play the audio report how
far they got (`playback` messages); without reports, what was sent is taken as heard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voice.audio import BYTES_PER_SAMPLE

NS_PER_MS = 1_000_000
# The text the echo check compares a transcript with: about the last two sentences spoken.
RECENT_TEXT_MS = 6000
# Marks an assistant message that was cut off, so the LLM sees the sentence did not finish.
CUT_OFF_MARK = "—"


@dataclass
class _Sentence:
    text: str
    start_byte: int  # where its audio starts, counted from the start of the answer
    nbytes: int = 0


class PlaybackLedger:
    """One session's record of the current answer's speech."""

    def __init__(self, sample_rate: int, now_ns: Callable[[], int]):
        self._bytes_per_ms = sample_rate * BYTES_PER_SAMPLE / 1000
        self._now_ns = now_ns
        self.turn_id = 0
        self._sentences: list[_Sentence] = []
        self._queued_bytes = 0
        self._sent_bytes = 0
        self._report: tuple[float, int] | None = None  # (played_ms, received at ns)
        self._stopped_ms: float | None = None  # where playback stopped, once the answer was cut off

    def new_answer(self, turn_id: int) -> None:
        self.turn_id = turn_id
        self._sentences = []
        self._queued_bytes = 0
        self._sent_bytes = 0
        self._report = None
        self._stopped_ms = None

    # --- producer side (TTS)

    def queue_sentence(self, text: str) -> None:
        self._sentences.append(_Sentence(text, self._queued_bytes))

    def queue_audio(self, nbytes: int) -> None:
        if self._sentences:
            self._sentences[-1].nbytes += nbytes
        self._queued_bytes += nbytes

    # --- socket side

    def sent(self, nbytes: int) -> None:
        self._sent_bytes += nbytes

    def report(self, turn_id: int, played_ms: float) -> None:
        """The client says it has played `played_ms` of turn `turn_id`'s audio."""
        if turn_id != self.turn_id:
            return
        if self._stopped_ms is not None:
            # The client's word on where it stopped beats the server's estimate.
            self._stopped_ms = min(played_ms, self.sent_ms)
        else:
            self._report = (played_ms, self._now_ns())

    def stop(self) -> None:
        """The answer was cut off: playback stops where it is now."""
        self._stopped_ms = self.heard_ms()

    @property
    def sent_ms(self) -> float:
        return self._sent_bytes / self._bytes_per_ms

    def heard_ms(self) -> float:
        """How much of the answer the user has heard by now.

        A client report is carried forward at real time from when it arrived (playback goes on
        between reports), and never past what was sent.
        """
        if self._stopped_ms is not None:
            return self._stopped_ms
        if self._report is None:
            return self.sent_ms
        played_ms, at_ns = self._report
        return min(self.sent_ms, played_ms + (self._now_ns() - at_ns) / NS_PER_MS)

    def heard_text(self, heard_ms: float | None = None) -> str:
        """The words heard: whole sentences, then the share of the next one's words its played
        audio stands for (speech runs at a near-even pace within a sentence)."""
        heard_bytes = (self.heard_ms() if heard_ms is None else heard_ms) * self._bytes_per_ms
        said: list[str] = []
        for sentence in self._sentences:
            if heard_bytes >= sentence.start_byte + sentence.nbytes:
                said.append(sentence.text)
                continue
            if sentence.nbytes and heard_bytes > sentence.start_byte:
                words = sentence.text.split()
                share = (heard_bytes - sentence.start_byte) / sentence.nbytes
                if part := words[: int(len(words) * share)]:
                    said.append(" ".join(part) + CUT_OFF_MARK)
            break
        return " ".join(said)

    def unheard_text(self) -> str:
        """The answer from the first sentence not wholly heard: what is left to say if the user
        asks the agent to go on (a cut-off sentence is said again whole, as a person would)."""
        heard_bytes = self.heard_ms() * self._bytes_per_ms
        return " ".join(s.text for s in self._sentences if s.start_byte + s.nbytes > heard_bytes)

    def recent_text(self) -> str:
        """What the agent said over the last RECENT_TEXT_MS of sent audio."""
        since = self._sent_bytes - RECENT_TEXT_MS * self._bytes_per_ms
        return " ".join(
            s.text
            for s in self._sentences
            if s.start_byte < self._sent_bytes and s.start_byte + s.nbytes > since
        )
