"""LLM endpoints: the embedded llama.cpp model, or any OpenAI-compatible server.

The embedded model runs in-process through xllamacpp, which also serves llama.cpp's own
OpenAI-compatible HTTP API on a loopback port. Parley then talks to it exactly as it talks to
vLLM, Ollama or a hosted API, so there is one client code path and switching is configuration.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "parley-embedded"  # llama.cpp ignores the name; it shows in traces
# A new request goes to the slot whose cached prompt shares at least this fraction with it, so a
# conversation comes back to the slot holding its history and each turn prefills only its new
# message (llama.cpp prefills ~160 tokens/s on 2 cores: a 250-token history costs ~1.5 s to redo).
SLOT_PROMPT_SIMILARITY = 0.1
LOAD_TIMEOUT_S = 120  # a 0.5 GB GGUF loads in ~2 s here; a big one from a slow disk may take a while
# llama.cpp's /metrics answers from memory on loopback within milliseconds; past this it is stuck,
# and the CPU figures go without the prefill/decode split rather than hold up a scrape.
METRICS_TIMEOUT_S = 1.0
# Its counters of the time spent reading prompts (prefill) and writing tokens (decode).
PREFILL_SECONDS_METRIC = "llamacpp:prompt_seconds_total"
DECODE_SECONDS_METRIC = "llamacpp:tokens_predicted_seconds_total"


@dataclass(frozen=True)
class LLMEndpoint:
    """Where the chat completions come from."""

    base_url: str  # ends in /v1
    model: str
    api_key: str
    embedded: bool = False


class EmbeddedLLM:
    """llama.cpp in this process, reachable over loopback HTTP with a per-process secret key."""

    def __init__(self, server, endpoint: LLMEndpoint, gguf: Path | str):
        self._server = server  # keeps the native server alive
        self.endpoint = endpoint
        self.gguf = gguf

    def phase_seconds(self) -> tuple[float, float] | None:
        """Seconds llama.cpp has spent prefilling prompts and decoding tokens since it started
        (from its own /metrics), or None when it does not say. Blocking (loopback, milliseconds)."""
        import httpx

        base = self.endpoint.base_url.removesuffix("/v1")
        try:
            response = httpx.get(
                f"{base}/metrics",
                headers={"Authorization": f"Bearer {self.endpoint.api_key}"},
                timeout=METRICS_TIMEOUT_S,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.debug("llama.cpp /metrics unavailable: %s", exc)
            return None
        values = {}
        for line in response.text.splitlines():
            name, _, value = line.partition(" ")
            if name in (PREFILL_SECONDS_METRIC, DECODE_SECONDS_METRIC):
                values[name] = float(value)
        if len(values) < 2:
            return None
        return values[PREFILL_SECONDS_METRIC], values[DECODE_SECONDS_METRIC]

    @classmethod
    def start(
        cls,
        gguf: Path | str,
        threads: int = 2,
        context_tokens: int = 4096,
        parallel: int = 4,
        gpu_layers: int | None = None,
    ) -> EmbeddedLLM:
        """Load the GGUF (a path, or "owner/repo[:file]" fetched by llama.cpp for online users) and
        start serving. Blocking: call in a thread."""
        import xllamacpp

        start = time.monotonic()
        params = xllamacpp.CommonParams()
        if isinstance(gguf, Path):
            params.model.path = str(gguf)
        else:
            repo, _, file = gguf.partition(":")
            params.model.hf_repo = repo
            if file:
                params.model.hf_file = file
        params.n_parallel = parallel
        # n_ctx is shared by the slots: each session's slot gets context_tokens.
        params.n_ctx = context_tokens * parallel
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.port = 0  # any free loopback port
        params.cache_prompt = True
        params.endpoint_metrics = True  # its prefill and decode time, for the CPU figures
        params.slot_prompt_similarity = SLOT_PROMPT_SIMILARITY
        if gpu_layers is None:
            gpu_layers = 999 if _has_gpu(xllamacpp) else 0
        params.n_gpu_layers = gpu_layers
        # The loopback port is reachable by any local process and by browser pages (llama.cpp
        # allows all CORS origins): a random key keeps it ours.
        key = secrets.token_urlsafe(24)
        params.api_keys = [key]
        server = xllamacpp.Server(params)
        base = server.listening_address.rstrip("/")
        endpoint = LLMEndpoint(f"{base}/v1", EMBEDDED_MODEL_NAME, key, embedded=True)
        log.info("embedded LLM %s on %s in %.2fs", gguf, base, time.monotonic() - start)
        return cls(server, endpoint, gguf)


def prime_slots(endpoint: LLMEndpoint, system_prompt: str, slots: int) -> None:
    """Prefill the system prompt into every slot at start-up (blocking), so no caller's first turn
    pays for it. Each request names its slot: identical requests sent at once would otherwise all
    be served, one after another, by the one slot that already holds the prompt."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    body = {
        "model": endpoint.model,
        "messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": "Hello."}],
        "max_tokens": 1,
    }
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}

    def one(slot: int) -> None:
        httpx.post(
            f"{endpoint.base_url}/chat/completions",
            json={**body, "id_slot": slot},  # llama.cpp's own field
            headers=headers,
            timeout=LOAD_TIMEOUT_S,
        )

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        list(pool.map(one, range(slots)))
    log.info("system prompt cached in %d LLM slots in %.2fs", slots, time.monotonic() - start)


def _has_gpu(xllamacpp) -> bool:
    try:
        return any(d.get("name", "").upper() != "CPU" for d in xllamacpp.get_device_info())
    except Exception:  # noqa: BLE001 - device probing must never stop start-up
        return False


# Every session's LLM requests (answers and speculative prefills) share one HTTP client per event
# loop. A new client builds an SSL context, ~0.1 s of CPU on the event loop, where every other
# caller's audio waits: pipecat's OpenAI service made one per session (and never closed it), and
# each session's first prefill another, while its user was pausing.
_HTTP_CLIENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_http_client():
    """The running event loop's HTTP client for LLM endpoints (the OpenAI SDK's own kind: its
    connection limits, no overall timeout; a caller that needs one passes it per request)."""
    from openai import DefaultAsyncHttpxClient

    loop = asyncio.get_running_loop()
    client = _HTTP_CLIENTS.get(loop)
    if client is None or client.is_closed:
        client = _HTTP_CLIENTS[loop] = DefaultAsyncHttpxClient()
    return client


@functools.cache
def llm_stage_class():
    """pipecat's OpenAI-compatible service, on the loop's shared HTTP client (pipecat is imported
    only when a pipeline is built)."""
    from openai import AsyncOpenAI
    from pipecat.services.openai.llm import OpenAILLMService

    class SharedClientLLMService(OpenAILLMService):
        def create_client(self, api_key=None, base_url=None, organization=None, project=None, **kwargs):
            return AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                organization=organization,
                project=project,
                http_client=shared_http_client(),
                default_headers=kwargs.get("default_headers"),
            )

    return SharedClientLLMService


def make_llm_stage(endpoint: LLMEndpoint, system_prompt: str, max_tokens: int, temperature: float):
    """The pipeline's LLM stage: pipecat's OpenAI-compatible streaming service on `endpoint`,
    on the loop's shared HTTP client. Call it on the event loop.

    On an interruption pipecat cancels the stage's task, which closes the HTTP stream; llama.cpp
    (and vLLM, Ollama) stop generating when the client goes away.
    """
    service = llm_stage_class()
    return service(
        api_key=endpoint.api_key or "none",  # the SDK insists on a key; local servers ignore it
        base_url=endpoint.base_url,
        settings=service.Settings(
            model=endpoint.model,
            system_instruction=system_prompt,
            temperature=temperature,
            max_completion_tokens=max_tokens,
        ),
    )


def prompt_renderer(llm_stage, system_prompt: str):
    """The messages `llm_stage` (from make_llm_stage) sends for a conversation: its own adapter
    renders them, so a speculative prefill (agents/speculation.py) caches a prefix of the real
    request's prompt."""
    from pipecat.processors.aggregators.llm_context import LLMContext

    adapter = llm_stage.get_llm_adapter()

    async def render(messages: list[dict]) -> list[dict]:
        params = await adapter.get_llm_invocation_params(
            LLMContext(messages),
            system_instruction=system_prompt,
            convert_developer_to_user=not llm_stage.supports_developer_role,
        )
        return list(params["messages"])

    return render
