"""What the LLM is told: a stable system prompt, and per turn the facts retrieved for the
user's words.

Cache-friendly by construction: the system prompt never changes within a process, and each
turn only *appends* to the conversation (the facts ride in the user's message, and a fact
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

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from agents.rag.retrieve import Hit, Retriever, format_context
from agents.replies import knowledge_reply
from agents.speculation import PREFILL_WAIT_S, Speculation, same_words
from voice.observability.cpu import run_in_stage

log = logging.getLogger(__name__)

# Short and positive: the 0.5B default model parrots long lists of don'ts back to the caller
# ("No lists, no markdown."), and answers better when told where the facts are.
SYSTEM_PROMPT = (
    "You answer the phone for the business in the facts below each caller message. "
    "Answer the question first, in one or two short spoken sentences, using only those facts. "
    "If the facts do not answer the question, say you don't have that information."
)
FACTS_HEADER = "Facts:"
NO_NEW_FACTS = "(No new facts: use the ones given earlier in this conversation.)"
NO_FACTS = "(None: the knowledge base does not answer this.)"
QUESTION_HEADER = "Question:"
# A question whose best fact has a cosine below this is not answered by the knowledge. On the eval
# bases (`parley eval`), the best fact of answerable questions scored 0.25-0.95, of questions the
# knowledge does not answer 0.27-0.73: no threshold separates them. 0.4 declines a third of the
# latter and 3 of 107 of the former (0.45: half of the latter, 7 of the former); the rest is the LLM's
# to decline.
MIN_ANSWER_COSINE = 0.4
# Facts this far below the best one's cosine are about something else: left out, so that the LLM
# does not take a figure from a neighbouring fact.
EVIDENCE_MARGIN = 0.15
# A question that asks for an overview ("what are your opening hours?", "tell me about your prices",
# "which holidays are you closed?") is answered by several facts, each a sentence: it gets this many
# times the facts of a question with one answer, so that the week's hours are all there.
OVERVIEW_FACTS_FACTOR = 2
_OVERVIEW = re.compile(
    r"\b(?:tell me (?:about|more)|what (?:are|kinds?|sorts?|types?) (?:of )?(?:your|the)?|which|list|all your|"
    r"overview|options|what (?:do|does|can) (?:you|i)\b.*\b(?:offer|accept|take|borrow|have))|"
    r"\b(?:hours|prices|rates|fees|services|classes|times)\b"
)


def select_evidence(
    hits: list[Hit], min_cosine: float = MIN_ANSWER_COSINE, overview: bool = False
) -> list[Hit]:
    """The retrieved facts that bear on the question, best first; none when the best is not close
    enough to it and keywords and meaning agree on none (the knowledge does not answer it).

    When keywords and meaning both put the best fact at their top, it is the answer: it goes alone
    (unless the question asks for an `overview`), so the LLM cannot take a figure from a neighbour
    (eval bases, in-process loop: 74 → 80 of 128 right on its own)."""
    if not hits:
        return []
    best = max(h.cosine for h in hits)
    if best < min_cosine and not any(h.agreed for h in hits):
        return []
    evidence = [h for h in hits if h.cosine >= best - EVIDENCE_MARGIN]
    return evidence[:1] if evidence[0].agreed and not overview else evidence


def asks_overview(question: str) -> bool:
    """Whether the question asks for several facts at once (hours, prices, a list)."""
    return bool(_OVERVIEW.search(question.lower()))


def user_message(question: str, hits: list[Hit], already_given: set[str]) -> tuple[str, list[str]]:
    """The user message for one turn and the keys of the facts it adds."""
    new = [h for h in hits if fact_key(h) not in already_given]
    # Best fact last, next to the question: the 0.5B model takes its answer from the nearest line
    # more than from the first (eval bases, in-process loop: 74 → 79 of 128 right; figures 22 → 26
    # of 29).
    facts = format_context(new[::-1]) if new else (NO_NEW_FACTS if hits else NO_FACTS)
    return f"{FACTS_HEADER}\n{facts}\n{QUESTION_HEADER} {question}", [fact_key(h) for h in new]


def question_of(message: str) -> str:
    """The caller's words in a user message, grounded or not."""
    if message.startswith(FACTS_HEADER) and f"\n{QUESTION_HEADER} " in message:
        return message.rsplit(f"\n{QUESTION_HEADER} ", 1)[1]
    return message


def previous_question(history: list[dict]) -> str:
    """The caller's last question in `history` (which ends before the current turn)."""
    for message in reversed(history):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return question_of(message["content"])
    return ""


def fact_key(hit: Hit) -> str:
    return f"{hit.source}#{hit.heading}#{hash(hit.text)}"


class KnowledgeContextProcessor(FrameProcessor):
    """Between the user aggregator and the LLM: retrieves the facts for the user's latest words
    and writes them into that message, so the LLM answers from the knowledge base.

    With `prefill` (agents/speculation.py), `speculate` starts the coming turn's retrieval and
    LLM prefill during the end-of-turn pause; the turn, when it ends with the same words, uses
    those facts and waits for that prefill instead of doing both again.
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
        stored: the history and the facts given so far stay as they are."""
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
            spec.hits = await run_in_stage("rag", self._evidence, spec.question, history)
        except Exception:  # noqa: BLE001 - the real turn retrieves again
            log.exception("speculative retrieval failed")
            return
        finally:
            spec.retrieved.set()
        if knowledge_reply(spec.question, spec.hits, asks_overview(spec.question), []) is not None:
            return  # the turn will be answered without the LLM: nothing to prefill
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
        """The last grounded message was withdrawn: its facts count as not given."""
        self._given.difference_update(self._last_added)
        self._last_added = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            reply = await self._ground(frame)
            if reply is not None:
                # Said as if the LLM had said it (same events, trace and history), without the LLM:
                # a small model invents an answer its facts don't cover, and misreads the one fact
                # that does.
                for answer in (LLMFullResponseStartFrame(), LLMTextFrame(reply), LLMFullResponseEndFrame()):
                    await self.push_frame(answer)
                return
        await self.push_frame(frame, direction)

    def _evidence(self, question: str, history: list[dict]) -> list[Hit]:
        """The facts that answer `question` (a follow-up is searched with the question before it);
        none when the knowledge does not answer it. Blocking: runs in a worker thread."""
        overview = asks_overview(question)
        k = self._top_k * (OVERVIEW_FACTS_FACTOR if overview else 1)
        hits = self._retriever.search(question, k, previous=previous_question(history))
        return select_evidence(hits, overview=overview)

    async def _ground(self, frame: LLMContextFrame) -> str | None:
        """Write the facts into the turn's user message; returns the reply to say instead of asking
        the LLM when the knowledge gives it (a decline, or the one fact that answers: agents/replies.py)."""
        messages = frame.context.get_messages()
        if not messages or messages[-1].get("role") != "user":
            return None
        last = messages[-1]
        content = last.get("content")
        if not isinstance(content, str) or content.startswith(FACTS_HEADER):
            log.debug("not grounding a message of type %s: %r", type(content).__name__, content)
            return None  # already grounded (e.g. a re-run of the same turn)
        self._last_added = []  # set again below; stale keys must not be forgotten if this is cancelled
        spec = await self._take_speculation(content)
        try:
            return await self._ground_with(messages, content, spec)
        finally:
            if spec is not None and spec.task is not None and not spec.task.done():
                spec.task.cancel()  # not this prompt, too slow, or this turn was cancelled

    async def _ground_with(self, messages: list[dict], content: str, spec: Speculation | None) -> str | None:
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
                hits = await run_in_stage("rag", self._evidence, content, messages[:-1])
            except Exception:  # noqa: BLE001 - an answer without facts beats no answer
                log.exception("retrieval failed; answering without facts")
                hits = []
        text, keys = user_message(content, hits, self._given)
        self._given.update(keys)
        self._last_added = keys
        # In place: the stored history keeps the facts, so the next turn's prompt extends this one.
        messages[-1]["content"] = text
        log.info(
            "grounded %r with %s",
            content,
            ", ".join(f"{h.source}:{h.line} ({h.cosine:.2f})" for h in hits) or "no facts",
        )
        if self._on_end:
            self._on_end()
        reply = knowledge_reply(content, hits, asks_overview(content), self._retriever.topics())
        if reply is not None:
            log.info("answered %r from the knowledge without the LLM: %r", content, reply)
            return reply
        if spec is not None and spec.task is not None and spec.prompt == messages:
            # The prefill of this very prompt may be under way: sent now, the real request would
            # read it again in another slot, beside it, on the same cores. (Counted in llm_ttft.)
            ahead_ms = (time.monotonic_ns() - spec.started_ns) / 1e6
            log.debug("turn %r was prefilled speculatively, from %.0f ms before it ended", content, ahead_ms)
            await asyncio.wait([spec.task], timeout=PREFILL_WAIT_S)
        elif spec is not None:
            log.debug("speculative prefill for %r was not this turn's prompt; dropped", spec.question)
        return None


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
