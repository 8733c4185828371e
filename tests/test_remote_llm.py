"""PARLEY_LLM_BASE_URL / _MODEL / _API_KEY switch the agent to any OpenAI-compatible server with
no code change. The remote server here is a small stand-in that records what it was asked; STT,
RAG and TTS are the real ones."""

from __future__ import annotations

import json
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from clients.talk import talk
from tests.conftest import free_port, start_server, stop_server

pytestmark = pytest.mark.e2e
REPLY = ["We are open ", "from nine ", "to five on Saturday."]
# An overview goes to the LLM (a question one fact answers for sure is said without it).
QUESTION = "What are your opening hours at the weekend?"


def openai_compatible_stub(seen: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        seen.append({"authorization": request.headers.get("authorization"), **body})

        def chunks():
            for piece in REPLY:
                delta = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
                delta["choices"] = [
                    {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}
                ]
                yield f"data: {json.dumps(delta)}\n\n"
            done = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
            done["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


@pytest.fixture
def remote_llm():
    seen: list[dict] = []
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(openai_compatible_stub(seen), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", seen
    server.should_exit = True
    thread.join(timeout=5)


async def test_an_openai_compatible_endpoint_replaces_the_embedded_llm(remote_llm, tmp_path):
    base_url, seen = remote_llm
    parley = start_server(
        tmp_path,
        {"PARLEY_LLM_BASE_URL": base_url, "PARLEY_LLM_MODEL": "their-model", "PARLEY_LLM_API_KEY": "s3cret"},
    )
    try:
        result = await talk(parley.ws_url, b"", 16000, text=QUESTION, timeout_s=60)
    finally:
        stop_server(parley)

    assert result.agent_text.replace("  ", " ") == "".join(REPLY).strip()
    assert result.audio, "the remote model's words were spoken"
    (request,) = seen
    assert request["authorization"] == "Bearer s3cret"
    assert request["model"] == "their-model"
    assert request["stream"] is True
    system, user = request["messages"][0], request["messages"][-1]
    assert system["role"] == "system"
    assert "9 am to 5 pm" in user["content"], "the retrieved passages went with the question"
    assert user["content"].rstrip().endswith(QUESTION)
