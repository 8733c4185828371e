"""Speculative prefill: the LLM reads a turn's prompt while the end-of-turn pause is still running.

On a CPU the LLM's time to first token is mostly prefill: reading the retrieved passages and the
question (~160 tokens/s on 2 cores). Once every word the user said is transcribed and they are
silent, the prompt of the coming request is known, but the turn may not have ended yet: Smart
Turn judged the speech unfinished and the strategy waits for more. The prompt is sent now with
one token to generate, so the LLM server (llama.cpp, or any server with prompt caching) prefills
it during the pause; when the turn does end, the real request finds it cached and only reads its
last token.

Nothing speculative reaches the caller: the one generated token is thrown away, nothing is spoken,
nothing is stored in the history. If the user speaks again the request is closed, and the turn
that follows builds its prompt afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agents.llm import LLMEndpoint, shared_http_client
from agents.rag.retrieve import Hit

log = logging.getLogger(__name__)

# The fewest tokens a chat completion can ask for; the one it makes is thrown away.
PREFILL_TOKENS = 1
# A prefill reads at most the context window (4096 tokens at ~160 tokens/s on 2 cores is ~25 s);
# past this the server is stuck, and the real request will report it.
PREFILL_TIMEOUT_S = 30.0

# How long a turn waits for the prefill of its own prompt before sending its request anyway: a
# 1,000-token prompt on 2 cores; a server that takes longer has a problem the request will report.
PREFILL_WAIT_S = 8.0

RenderMessages = Callable[[list[dict]], Awaitable[list[dict]]]


def same_words(a: str, b: str) -> bool:
    """The same question, however the transcripts were joined ("Hi.What" vs "Hi. What")."""
    return "".join(a.split()).lower() == "".join(b.split()).lower()


@dataclass
class Speculation:
    """One speculative prefill: the question it was made for, and the passages found for it."""

    question: str
    started_ns: int = field(default_factory=time.monotonic_ns)
    hits: list[Hit] | None = None
    prompt: list[dict] | None = None  # the conversation as prefilled; reused only if the turn's is the same
    retrieved: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class PromptPrefill:
    """Sends a prompt to an OpenAI-compatible server for one token, so the server caches it.

    `render` turns the conversation into the exact messages the pipeline's LLM stage will send
    (its system instruction first), so the cached prompt is a prefix of the real one.
    """

    def __init__(self, endpoint: LLMEndpoint, render: RenderMessages):
        self._endpoint = endpoint
        self._render = render
        self._closed = False

    async def __call__(self, messages: list[dict]) -> None:
        if self._closed:
            return  # the session is over; a late speculation must not open a new client
        body = {
            "model": self._endpoint.model,
            "messages": await self._render(messages),
            "max_tokens": PREFILL_TOKENS,
            # Streamed, so that closing the request (the user spoke again) tells the server to stop.
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {self._endpoint.api_key}"} if self._endpoint.api_key else {}
        url = f"{self._endpoint.base_url}/chat/completions"
        client = shared_http_client()  # the LLM stage's: no new connection, no new SSL context
        async with client.stream(
            "POST", url, json=body, headers=headers, timeout=PREFILL_TIMEOUT_S
        ) as response:
            response.raise_for_status()
            async for _ in response.aiter_bytes():
                pass

    async def close(self) -> None:
        self._closed = True
