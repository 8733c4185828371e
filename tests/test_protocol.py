"""Client messages are parsed strictly, and every mistake has a code and a message that says what to do."""

from __future__ import annotations

import pytest

from voice.protocol import InputText, Playback, ProtocolError, SessionStart, parse_client_message


def test_session_start_and_typed_text_parse():
    assert parse_client_message('{"type": "session.start", "sample_rate": 8000}') == SessionStart(
        type="session.start", sample_rate=8000
    )
    assert parse_client_message('{"type": "input_text", "text": "hi"}') == InputText(
        type="input_text", text="hi"
    )
    assert parse_client_message('{"type": "playback", "turn_id": 3, "played_ms": 1250.5}') == Playback(
        type="playback", turn_id=3, played_ms=1250.5
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{oops", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"no_type": 1}', "invalid_message"),
        ('{"type": "hello"}', "unknown_type"),
        ('{"type": "session.start", "sample_rate": "fast"}', "invalid_message"),
        ('{"type": "input_text"}', "invalid_message"),
        ('{"type": "input_text", "text": ""}', "invalid_message"),
        ('{"type": "input_text", "text": "   "}', "invalid_message"),
        ('{"type": "playback", "turn_id": 1}', "invalid_message"),
        ('{"type": "playback", "turn_id": 1, "played_ms": -5}', "invalid_message"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    ],
)
def test_mistakes_get_a_code(raw, code):
    with pytest.raises(ProtocolError) as err:
        parse_client_message(raw)
    assert err.value.code == code
    assert err.value.message
