"""Every model can be replaced from settings: a local path, or (for users who are online) a hub
id or voice name, and a wrong value is named with what to put there instead."""

from __future__ import annotations

import pytest

from voice.catalogue import ModelError
from voice.config import Settings
from voice.engines import resolve_models


def test_the_defaults_resolve_to_the_embedded_models():
    paths = resolve_models(Settings())
    assert paths.stt.endswith("whisper-base")
    assert paths.tts.name == "voice.onnx" and paths.tts.parent.name == "piper-joe-medium"
    assert paths.llm_gguf.name == "model.gguf"
    assert (paths.embeddings / "model.onnx").is_file()


def test_local_files_replace_the_defaults(tmp_path):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    voice = tmp_path / "mine.onnx"
    voice.write_bytes(b"onnx")
    (tmp_path / "mine.onnx.json").write_text("{}")
    paths = resolve_models(Settings(llm_gguf=str(gguf), tts_voice=str(voice), stt_model=str(tmp_path)))
    assert paths.llm_gguf == gguf and paths.tts == voice and paths.stt == str(tmp_path)


def test_hub_ids_pass_through_for_users_who_are_online():
    paths = resolve_models(
        Settings(
            stt_model="small.en",
            llm_gguf="Qwen/Qwen2.5-1.5B-Instruct-GGUF:qwen2.5-1.5b-instruct-q4_k_m.gguf",
            tts_voice="en_US-lessac-medium",
        )
    )
    assert paths.stt == "small.en"
    assert paths.llm_gguf == "Qwen/Qwen2.5-1.5B-Instruct-GGUF:qwen2.5-1.5b-instruct-q4_k_m.gguf"
    assert paths.tts == "en_US-lessac-medium"


def test_a_remote_llm_needs_no_local_model():
    assert resolve_models(Settings(llm_base_url="http://localhost:11434/v1")).llm_gguf is None


@pytest.mark.parametrize(
    ("setting", "value", "hint"),
    [
        ("llm_gguf", "not a file.gguf", "hub id"),
        ("tts_voice", "/nowhere/voice.onnx", ".onnx.json"),
        ("embedding_model", "/nowhere", "tokenizer.json"),
    ],
)
def test_a_wrong_model_setting_says_what_is_expected(setting, value, hint):
    with pytest.raises(ModelError, match=f"PARLEY_{setting.upper()}") as err:
        resolve_models(Settings(**{setting: value}))
    assert hint in str(err.value)
