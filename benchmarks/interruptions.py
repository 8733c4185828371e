"""Interruption and turn-taking figures from scripted calls through the real pipeline.

    python benchmarks/interruptions.py [--url ws://127.0.0.1:8000/ws] [--repeats 5]

Without --url it starts a server with the default embedded models. A simulated caller
(clients/caller.py) asks a question with a long answer and then, 2.5 s into the answer:

- barge-in: says "Wait. Are you open on Sunday?" (or another cut-in). Barge-in latency runs from
  the caller's first loud sample sent to the last agent audio byte received before the agent
  stopped (client clock, which a listener hears), next to the server's `barge_in` figure (the
  VAD's speech start minus its window → the last agent audio byte sent before it paused);
- cough, "uh huh", "yeah, okay": false interruptions are the calls where the agent was cut off
  (`agent.interrupted`); a pause is when it only held its audio, and for how long;
- echo: the agent's own voice comes back 200 ms later at -10 dB for the whole call.

End of turn: spoken questions with and without a pause inside, and a short "Yes.": the wait runs
from the end of the caller's last loud sample to the `user.transcript` event (client clock) and,
on the server, `endpoint` (the user really stopped → the turn was handed to the agent). A
question split in two turns would be a fragment answer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.stats import pct  # noqa: E402
from clients.caller import Caller, Echo  # noqa: E402
from tests.conftest import cough, silence, speak, start_server, stop_server  # noqa: E402

LONG_QUESTION = "What are your opening hours during the week?"
CUT_IN_AFTER_S = 2.5  # into the answer: past its first words, well before its end
TIMEOUT_S = 90
CUT_INS = ("Wait. Are you open on Sunday?", "Stop, stop. How much is a tune-up?", "Hold on a second.")
END_OF_TURN = (
    "What time do you open on Saturday?",
    "Hi. ... What time do you open on Saturday?",  # a pause inside: one turn, not two
    "I have a flat tire, ... how much does it cost to fix?",
    "Yes.",
)
LEAD_IN_S = 0.5  # silence before a caller speaks (Silero settles on its first frames)


def line(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<48} (none)"
    return f"{name:<48} p50 {statistics.median(values):6.0f}  p95 {pct(values, 0.95):6.0f}  n {len(values)}"


async def barge_in(url: str, text: str) -> dict:
    async with Caller(url) as caller:
        asked = await caller.ask_and_listen(LONG_QUESTION, CUT_IN_AFTER_S, TIMEOUT_S)
        await caller.say(speak(text))
        interrupted = await caller.wait_for("agent.interrupted", since=asked, timeout_s=30)
        trace = await caller.wait_for("turn.trace", turn_id=interrupted["turn_id"], timeout_s=30)
        onset = caller.log.speech_onsets[0]
        last = caller.log.last_audio_before(onset + 1.5)
    return {"client_ms": 1000 * (last - onset), "server_ms": trace["stages_ms"].get("barge_in")}


async def not_an_interruption(url: str, sound: bytes, echo: Echo | None = None) -> dict:
    async with Caller(url, echo=echo) as caller:
        asked = await caller.ask_and_listen(LONG_QUESTION, CUT_IN_AFTER_S, TIMEOUT_S)
        if sound:
            await caller.say(sound)
        await caller.wait_for("agent.audio_done", since=asked, timeout_s=TIMEOUT_S)
        paused = [h.at for h in caller.log.received if h.event and h.event["type"] == "agent.paused"]
        resumed = [h.at for h in caller.log.received if h.event and h.event["type"] == "agent.resumed"]
    return {
        "interrupted": bool(caller.log.events("agent.interrupted")),
        "pauses": len(paused),
        "pause_ms": [1000 * (r - p) for p, r in zip(paused, resumed, strict=False)],
    }


async def end_of_turn(url: str, text: str) -> dict:
    pcm = silence(LEAD_IN_S)
    for i, part in enumerate(text.split("...")):
        pcm += (silence(0.6) if i else b"") + speak(part.strip())
    async with Caller(url) as caller:
        await caller.say(pcm)
        first = await caller.wait_for("user.transcript", timeout_s=TIMEOUT_S)
        trace = await caller.wait_for("turn.trace", timeout_s=TIMEOUT_S)
        await caller.pause(1.5)  # a fragment answer would show up as a second turn here
        spoke_until = caller.log.speech_ends[-1]
    turns = {e["turn_id"] for e in caller.log.events("user.transcript")}
    return {
        "client_ms": 1000 * (first_at(caller, first) - spoke_until),
        "server_ms": trace["stages_ms"].get("endpoint"),
        "turns": len(turns),
        "transcript": caller.log.events("user.transcript")[-1]["text"],
    }


def first_at(caller: Caller, event: dict) -> float:
    return next(h.at for h in caller.log.received if h.event is event)


SCENARIOS = ("barge-in", "false", "end-of-turn")


async def run(url: str, repeats: int, scenarios: tuple[str, ...] = SCENARIOS) -> None:
    print("barge-in (3 cut-ins, repeated):", flush=True)
    barge = []
    for i in range(repeats if "barge-in" in scenarios else 0):
        row = await barge_in(url, CUT_INS[i % len(CUT_INS)])
        barge.append(row)
        print(f"  client {row['client_ms']:.0f} ms, server {row['server_ms']} ms", flush=True)

    print("not interruptions:", flush=True)
    sounds = {
        "cough": lambda: cough() + silence(0.3) + cough(seed=8),
        "uh huh": lambda: speak("uh huh"),
        "yeah, okay": lambda: speak("yeah, okay"),
        "echo (200 ms, -10 dB)": lambda: b"",
    }
    false_rows: dict[str, list[dict]] = {}
    for name, make in sounds.items() if "false" in scenarios else ():
        echo = Echo(200, 0.3) if name.startswith("echo") else None
        false_rows[name] = [await not_an_interruption(url, make(), echo) for _ in range(repeats)]
        rows = false_rows[name]
        print(
            f"  {name:<24} interrupted {sum(r['interrupted'] for r in rows)}/{len(rows)}, "
            f"paused {sum(r['pauses'] for r in rows)}x",
            flush=True,
        )

    print("end of turn:", flush=True)
    eot = []
    for _ in range(max(1, repeats // 2) if "end-of-turn" in scenarios else 0):
        for text in END_OF_TURN:
            row = await end_of_turn(url, text)
            eot.append(row)
            print(f"  {row['client_ms']:5.0f} ms, {row['turns']} turn(s): {row['transcript']!r}", flush=True)

    print("\nsummary (ms)")
    print(line("barge-in, client: speech onset → last audio", [r["client_ms"] for r in barge]))
    print(
        line(
            "barge-in, server trace `barge_in`", [r["server_ms"] for r in barge if r["server_ms"] is not None]
        )
    )
    for name, rows in false_rows.items():
        pauses = [ms for r in rows for ms in r["pause_ms"]]
        print(
            f"{'false interruptions: ' + name:<48} {sum(r['interrupted'] for r in rows)}/{len(rows)}"
            f"  (paused {sum(r['pauses'] for r in rows)}x{', ' + line('', pauses).strip() if pauses else ''})"
        )
    print(line("end of turn, client: speech end → transcript", [r["client_ms"] for r in eot]))
    print(line("end of turn, server `endpoint`", [r["server_ms"] for r in eot if r["server_ms"] is not None]))
    fragments = sum(r["turns"] > 1 for r in eot)
    print(f"{'fragment answers (a question split in turns)':<48} {fragments}/{len(eot)}")
    print(
        "speculative prefill: compare `benchmarks/turn_latency.py` with PARLEY_SPECULATIVE_PREFILL=true "
        "and false (it only acts while an end-of-turn pause is still running)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server's /ws; default: start one")
    parser.add_argument("--repeats", type=int, default=5, help="calls per scenario")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = start_server(Path(tempfile.mkdtemp(prefix="parley-bench-")))
        url = server.ws_url
    try:
        asyncio.run(run(url, args.repeats, tuple(args.only.split(","))))
    finally:
        if server:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
