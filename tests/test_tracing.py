"""Each trace figure runs between the two moments it claims, on a virtual clock."""

from __future__ import annotations

from voice.observability.tracing import STAGES, Moment, TurnTracer

MS = 1_000_000


class VirtualClock:
    def __init__(self) -> None:
        self.ns = 0

    def advance_ms(self, ms: float) -> None:
        self.ns += int(ms * MS)

    def __call__(self) -> int:
        return self.ns


def spoken_turn() -> tuple[TurnTracer, VirtualClock]:
    """A scripted turn: the user stops at t=1000 ms; every stage takes a known time."""
    clock = VirtualClock()
    tracer = TurnTracer(clock)
    clock.advance_ms(1200)  # the VAD speaks after its 200 ms silence window
    tracer.mark_pending(Moment.VAD_STOPPED)
    tracer.mark_pending(Moment.USER_STOPPED, clock() - 200 * MS)
    tracer.mark_pending(Moment.STT_START)
    clock.advance_ms(300)
    tracer.mark_pending(Moment.STT_END)
    clock.advance_ms(300)  # the end-of-turn silence runs out at 1800 ms
    tracer.start_turn(1)
    tracer.mark(Moment.RAG_START)
    clock.advance_ms(5)
    tracer.mark(Moment.RAG_END)
    clock.advance_ms(150)
    tracer.mark(Moment.LLM_FIRST_TOKEN)
    clock.advance_ms(100)
    tracer.mark(Moment.TTS_FIRST_TEXT)
    clock.advance_ms(120)
    tracer.mark(Moment.TTS_FIRST_AUDIO)
    clock.advance_ms(2)
    tracer.mark(Moment.FIRST_AUDIO_SENT)
    clock.advance_ms(400)
    tracer.mark(Moment.LLM_END)
    return tracer, clock


def test_voice_to_voice_runs_from_the_user_really_stopping_to_the_first_audio_sent():
    tracer, _ = spoken_turn()
    stages = tracer.current.stages_ms()
    # user stopped at 1000 ms; first audio left at 1800 + 5 + 150 + 100 + 120 + 2 = 2177 ms
    assert stages["voice_to_voice"] == 1177.0
    assert stages["endpoint"] == 800.0  # 1000 → 1800: VAD window 200 + end-of-turn silence 600
    assert stages["stt"] == 300.0
    assert stages["rag"] == 5.0
    assert stages["llm_ttft"] == 150.0
    assert stages["first_sentence"] == 100.0
    assert stages["tts_ttfa"] == 120.0
    assert stages["send"] == 2.0
    assert stages["response"] == 377.0
    assert stages["llm_total"] == 772.0  # rag end at 1805 → stream end at 2577


def test_the_serial_stages_add_up_to_voice_to_voice():
    stages = spoken_turn()[0].current.stages_ms()
    serial = ("endpoint", "rag", "llm_ttft", "first_sentence", "tts_ttfa", "send")
    assert sum(stages[s] for s in serial) == stages["voice_to_voice"]


def test_the_first_stamp_of_a_moment_wins():
    tracer, clock = spoken_turn()
    first = tracer.current.stages_ms()["tts_ttfa"]
    clock.advance_ms(500)
    tracer.mark(Moment.TTS_FIRST_AUDIO)  # a later sentence's audio
    assert tracer.current.stages_ms()["tts_ttfa"] == first


def test_a_typed_turn_has_no_endpoint_wait():
    clock = VirtualClock()
    tracer = TurnTracer(clock)
    clock.advance_ms(50)
    tracer.start_turn(1, typed=True)
    clock.advance_ms(400)
    tracer.mark(Moment.FIRST_AUDIO_SENT)
    stages = tracer.current.stages_ms()
    assert stages["endpoint"] == 0.0
    assert stages["voice_to_voice"] == 400.0
    assert "stt" not in stages


def test_speech_moments_of_an_earlier_segment_are_replaced_by_the_last_one():
    clock = VirtualClock()
    tracer = TurnTracer(clock)
    tracer.mark_pending(Moment.USER_STOPPED)  # "Hi." … then the user goes on
    clock.advance_ms(900)
    tracer.mark_pending(Moment.USER_STOPPED)
    clock.advance_ms(800)
    record = tracer.start_turn(1)
    assert record.stages_ms()["endpoint"] == 800.0


def test_every_figure_names_two_known_moments():
    known = {v for k, v in vars(Moment).items() if not k.startswith("_")}
    for name, (start, end) in STAGES.items():
        assert start in known and end in known, name
        assert start != end, name
