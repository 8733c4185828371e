"""What the LLM is told: a stable system prompt, and per turn the passages retrieved for the
user's words.

Cache-friendly by construction: the system prompt never changes within a process, and each
turn only *appends* to the conversation (the passages ride in the user's message, and a passage
already given earlier in the conversation is not repeated). The embedded llama.cpp then reuses
its KV cache for everything before the new message and prefills only the new tokens.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from agents.rag.retrieve import Hit, Retriever, format_context
from agents.speculation import PREFILL_WAIT_S, Speculation, same_words

log = logging.getLogger(__name__)

# Short and positive: the 0.5B default model parrots long lists of don'ts back to the caller
# ("No lists, no markdown."), and answers better when told where the facts are.
SYSTEM_PROMPT = (
    "You answer the phone for the business in the facts below each caller message. "
    "Reply in one or two short spoken sentences using only those facts. "
    "If the facts do not answer the question, say you are not sure."
)
FACTS_HEADER = "Facts from the knowledge base:"
NO_NEW_FACTS = "(No new facts: use the ones given earlier in this conversation.)"
QUESTION_HEADER = "Question:"


def user_message(question: str, hits: list[Hit], already_given: set[str]) -> tuple[str, list[str]]:
    """The user message for one turn and the keys of the passages it adds."""
    new = [h for h in hits if passage_key(h) not in already_given]
    facts = format_context(new) if new else NO_NEW_FACTS
    return f"{FACTS_HEADER}\n{facts}\n\n{QUESTION_HEADER} {question}", [passage_key(h) for h in new]


def passage_key(hit: Hit) -> str:
    return f"{hit.source}#{hit.heading}#{hash(hit.text)}"


class KnowledgeContextProcessor(FrameProcessor):
    """Between the user aggregator and the LLM: retrieves passages for the user's latest words
    and writes them into that message, so the LLM answers from the knowledge base.

    With `prefill` (agents/speculation.py), `speculate` starts the coming turn's retrieval and
    LLM prefill during the end-of-turn pause; the turn, when it ends with the same words, uses
    those passages and waits for that prefill instead of doing both again.
    """

    def __init__(
        self,
        retriever: Retriever,
        top_k: int,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
        prefill: Callable[[list[dict]], Awaitable[None]] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._retriever = retriever
        self._top_k = top_k
        self._given: set[str] = set()
        self._last_added: list[str] = []
        self._on_start = on_start
        self._on_end = on_end
        self._prefill = prefill
        self._speculation: Speculation | None = None

    # --- speculation ---------------------------------------------------------------------------

    async def speculate(self, history: list[dict], question: str) -> None:
        """The user seems to be done (every word transcribed, the end-of-turn pause running):
        retrieve for `question` and have the LLM prefill the prompt it will get. Nothing is
        stored: the history and the passages given so far stay as they are."""
        await self.cancel_speculation()
        if self._prefill is None or not question.strip():
            return
        spec = Speculation(question.strip())
        spec.task = self.create_task(self._run_speculation(spec, copy.deepcopy(history)), "speculation")
        self._speculation = spec

    async def cancel_speculation(self) -> None:
        """The user spoke again: the speculative prompt is not this turn's."""
        spec, self._speculation = self._speculation, None
        if spec is not None and spec.task is not None and not spec.task.done():
            log.debug("speculative prefill for %r dropped", spec.question)
            await self.cancel_task(spec.task)

    async def _run_speculation(self, spec: Speculation, history: list[dict]) -> None:
        try:
            spec.hits = await asyncio.to_thread(self._retriever.search, spec.question, self._top_k)
        except Exception:  # noqa: BLE001 - the real turn retrieves again
            log.exception("speculative retrieval failed")
            return
        finally:
            spec.retrieved.set()
        text, _keys = user_message(spec.question, spec.hits, self._given)
        spec.prompt = [*history, {"role": "user", "content": text}]
        try:
            await self._prefill(spec.prompt)
            log.debug("speculative prefill for %r done", spec.question)
        except Exception as exc:  # noqa: BLE001 - a failed prefill only loses its head start
            log.info("speculative prefill failed (%s); the turn prefills as usual", exc)

    async def _take_speculation(self, question: str) -> Speculation | None:
        """The speculation made for this question, if any; another one is dropped."""
        spec = self._speculation
        if spec is None:
            return None
        if not same_words(spec.question, question):
            await self.cancel_speculation()
            return None
        self._speculation = None
        return spec

    async def cleanup(self):
        await self.cancel_speculation()
        await super().cleanup()

    def forget_last(self) -> None:
        """The last grounded message was withdrawn: its passages count as not given."""
        self._given.difference_update(self._last_added)
        self._last_added = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._ground(frame)
        await self.push_frame(frame, direction)

    async def _ground(self, frame: LLMContextFrame) -> None:
        messages = frame.context.get_messages()
        if not messages or messages[-1].get("role") != "user":
            return
        last = messages[-1]
        content = last.get("content")
        if not isinstance(content, str) or content.startswith(FACTS_HEADER):
            log.debug("not grounding a message of type %s: %r", type(content).__name__, content)
            return  # already grounded (e.g. a re-run of the same turn)
        self._last_added = []  # set again below; stale keys must not be forgotten if this is cancelled
        spec = await self._take_speculation(content)
        try:
            await self._ground_with(messages, content, spec)
        finally:
            if spec is not None and spec.task is not None and not spec.task.done():
                spec.task.cancel()  # not this prompt, too slow, or this turn was cancelled

    async def _ground_with(self, messages: list[dict], content: str, spec: Speculation | None) -> None:
        if self._on_start:
            self._on_start()
        if spec is not None and spec.task is not None:
            retrieved = asyncio.ensure_future(spec.retrieved.wait())
            await asyncio.wait([retrieved, spec.task], timeout=PREFILL_WAIT_S, return_when=FIRST_COMPLETED)
            retrieved.cancel()
        if spec is not None and spec.hits is not None:
            hits = spec.hits
        else:
            try:
                hits = await asyncio.to_thread(self._retriever.search, content, self._top_k)
            except Exception:  # noqa: BLE001 - an answer without facts beats no answer
                log.exception("retrieval failed; answering without passages")
                hits = []
        text, keys = user_message(content, hits, self._given)
        self._given.update(keys)
        self._last_added = keys
        # In place: the stored history keeps the facts, so the next turn's prompt extends this one.
        messages[-1]["content"] = text
        log.debug(
            "grounded %r with %d new passages (%d messages in history)", content, len(keys), len(messages)
        )
        if self._on_end:
            self._on_end()
        if spec is not None and spec.task is not None and spec.prompt == messages:
            # The prefill of this very prompt may be under way: sent now, the real request would
            # read it again in another slot, beside it, on the same cores. (Counted in llm_ttft.)
            ahead_ms = (time.monotonic_ns() - spec.started_ns) / 1e6
            log.debug("turn %r was prefilled speculatively, from %.0f ms before it ended", content, ahead_ms)
            await asyncio.wait([spec.task], timeout=PREFILL_WAIT_S)
        elif spec is not None:
            log.debug("speculative prefill for %r was not this turn's prompt; dropped", spec.question)


def merge_continued_turn(messages: list[dict], first_text: str) -> str | None:
    """The user went on speaking before hearing any answer: fold the turn they continued and the
    new words into one user message, so the agent answers the whole question, not the fragment.

    `messages` is the live history; its last two entries are the earlier (grounded) user message and
    the new one. Returns the merged text, or None when the history doesn't end that way.
    """
    if len(messages) < 2 or messages[-1].get("role") != "user" or messages[-2].get("role") != "user":
        return None
    new_text = messages[-1].get("content")
    if not isinstance(new_text, str):
        return None
    merged = f"{first_text.strip()} {new_text.strip()}".strip()
    del messages[-2:]
    messages.append({"role": "user", "content": merged})
    return merged


def record_heard_answer(messages: list[dict], heard_text: str) -> None:
    """An answer was cut off: make the assistant message before the new user message exactly what
    the user heard (pipecat keeps the sentences whose audio was queued, heard or not).

    `messages` is the live history ending with the new user message. With nothing heard, the
    assistant message goes: the agent never said it.
    """
    if not messages or messages[-1].get("role") != "user":
        return
    has_answer = len(messages) >= 2 and messages[-2].get("role") == "assistant"
    if has_answer and heard_text:
        messages[-2] = {"role": "assistant", "content": heard_text}
    elif has_answer:
        del messages[-2]
    elif heard_text:
        messages.insert(len(messages) - 1, {"role": "assistant", "content": heard_text})


# What callers say to have a cut-off answer carried on ("sorry, what were you saying?").
RESUME_PHRASES = (
    "were you saying",
    "you were saying",
    "what was that",
    "go on",
    "go ahead",
    "carry on",
    "continue",
    "keep going",
)
# Said before the rest of a cut-off answer, so it is heard as a continuation.
RESUME_PREFIX = "As I was saying:"


def is_resume_request(text: str) -> bool:
    """The caller asks the agent to carry on with what it was saying when they cut in."""
    plain = " ".join(re.findall(r"[a-z']+", text.lower()))
    return any(re.search(rf"\b{phrase}\b", plain) for phrase in RESUME_PHRASES)
