"""Where the conversation is: the turn flow as one state machine, and the answer's own state.

`Session` (voice/session.py) builds the pipeline and feeds what the pipeline sees to a `TurnFlow`;
the flow says where the conversation now stands and what each event means. It does no I/O: the
session sends the events and queues the frames the flow's answers call for. Times come from the
clock it is given, so every transition is tested on a virtual clock (tests/test_conversation.py).

The agent's side of the conversation is one `Phase`:

```
                 turn ended                first audio sent
   LISTENING ─────────────────► THINKING ──────────────────► SPEAKING ◄──┐
      ▲                           ▲  │                         │   │     │ released: a cough,
      │                next turn  │  │ interrupted before      │   │hold │ a backchannel, echo
      │                    ended  │  ▼ any audio: the user     │   ▼     │
      │                         CUT_OFF  continues their turn  │  HELD ──┘
      │                           ▲                            │   │
      │                           └────────────────────────────┼───┘ interrupted: the user
      │                                                        │     took the floor
      └──────────────────── audio done ────────────────────────┘
```

A held answer whose last audio goes out during the hold stays HELD until the verdict: released, it
goes to LISTENING; cut off, to CUT_OFF (the client may still have been playing it). Any phase goes
to ENDED when the session stops. Whether the *user* is speaking is a separate fact
(`user_speaking`): they may speak in any phase, and whether that takes the floor is the barge-in
strategy's verdict (voice/turntaking/barge_in.py), which arrives here as `hold`, `release` or
`interrupted`.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass

# A cut-off answer can be resumed ("what were you saying?") for this many turns after it: enough
# for a "hold on" and its reply, not so many that the old answer comes back out of the blue.
RESUME_WINDOW_TURNS = 3


class Phase(enum.Enum):
    LISTENING = "listening"  # no answer in flight: the agent waits for the user
    THINKING = "thinking"  # a turn ended; its answer is being prepared, and nobody has heard it yet
    SPEAKING = "speaking"  # the answer's audio is going out
    HELD = "held"  # the user made a sound over the answer: its audio waits for the verdict
    CUT_OFF = "cut_off"  # the user took the floor: the rest of the answer goes nowhere
    ENDED = "ended"  # the session stopped


# The phases in which an answer is being prepared or played.
ANSWERING = frozenset({Phase.THINKING, Phase.SPEAKING, Phase.HELD})


@dataclass(frozen=True)
class Hold:
    """A sound from the user that paused the answer: when it began (the VAD's onset, which is
    `vad_start_secs` before the VAD said so) and when the agent's audio last went out."""

    onset_ns: int
    last_audio_ns: int


@dataclass
class Answer:
    """One answer's life, from the turn that asked for it to its last audio or its cut-off (its
    turn is the flow's `turn_id`)."""

    typed: bool = False  # the turn was typed (or a key press): it has no speech to time
    started: bool = False  # its start (the LLM's, or a prepared reply's) reached the TTS's output
    audible: bool = False  # its first audio went out
    done: bool = False  # its last audio went out (the client may still be playing it)
    hold: Hold | None = None  # the sound holding it, while held
    barge_in: Hold | None = None  # the held sound that then cut it off
    reply: str | None = None  # said as it is, without the LLM (a key press's reply)


class Interruption(enum.Enum):
    """What an interruption did to the answer in flight."""

    NOTHING = "nothing"  # no answer was in flight (pipecat interrupts at every turn start)
    CONTINUED = "continued"  # nobody had heard the answer: the user is continuing their turn
    CUT_OFF = "cut_off"  # the user cut off an answer they were hearing


@dataclass(frozen=True)
class TurnEnd:
    """What the end of a user turn asks of the session, before the turn is numbered."""

    typed: bool
    # The same question again, after noise cut off an answer nobody heard: same turn, same text.
    repeat: bool
    # The turn before was cut off: its history must settle and record what was heard first.
    after_cut_off: bool
    # The user went on with the turn before, whose answer nobody heard: its text, to merge.
    continues: str | None


class TurnFlow:
    """The state of one conversation's turns. Every method is one event; none does I/O."""

    def __init__(self, clock_ns: Callable[[], int]):
        self._clock_ns = clock_ns
        self.phase = Phase.LISTENING
        self.answer: Answer | None = None  # the answer in flight, or the last one
        self.turn_id = 0
        self.user_speaking = False  # between the VAD's speech start and stop
        self.last_audio_ns = 0  # when the agent's audio last went out
        self._last_user_text = ""
        self._continues: str | None = None  # a turn the user is still continuing
        self._repeat = False  # noise cut off an unheard answer: the turn is answered again
        self._cut_off_turn: int | None = None  # a cut-off answer whose history awaits what was heard
        self._unsaid = ""  # the rest of the last cut-off answer, for "what were you saying?"
        self._unsaid_until_turn = 0
        self._typed: dict[str, str | None] = {}  # typed turns on their way: text → prepared reply
        # Open unless the answer is held: audio waiting for it goes out when it opens.
        self.floor_open = asyncio.Event()
        self.floor_open.set()
        # Set when an interruption has passed the session's watcher (a typed turn waits for it).
        self.interruption_passed = asyncio.Event()
        # Set when an interruption has passed the assistant history (which then holds its own
        # version of the cut-off answer, for the session to correct).
        self.history_settled = asyncio.Event()

    # --- what the session asks ---------------------------------------------------------------------

    @property
    def answering(self) -> bool:
        """An answer is being prepared or played."""
        return self.phase in ANSWERING

    @property
    def agent_audible(self) -> bool:
        """The answer is being heard (or held, paused mid-sentence)."""
        return self.phase in (Phase.SPEAKING, Phase.HELD)

    @property
    def response_in_progress(self) -> bool:
        """False for the tail of an answer that was cancelled before the current turn began."""
        return self.answering and self.answer is not None and self.answer.started

    @property
    def history_pending(self) -> bool:
        """An answer was cut off, and its history does not yet say what the user heard."""
        return self._cut_off_turn is not None

    @property
    def cut_off(self) -> bool:
        """From an interruption until the next turn: what is left of the answer goes nowhere."""
        return self.phase is Phase.CUT_OFF

    # --- the user ----------------------------------------------------------------------------------

    def user_started(self) -> None:
        self.user_speaking = True

    def user_stopped(self) -> None:
        self.user_speaking = False

    def typed_turn(self, text: str, reply: str | None = None) -> bool:
        """A typed turn (or a key press with its prepared reply) is on its way. True: an answer is
        in flight, and must be interrupted (and the interruption pass) before the turn goes in."""
        self._typed[text] = reply
        if self.answering:
            self.interruption_passed.clear()
            return True
        return False

    # --- a turn ends, and its answer begins --------------------------------------------------------

    def turn_ended(self, text: str) -> TurnEnd:
        """The user's turn is over: a new answer is being prepared."""
        repeat, self._repeat = self._repeat, False
        typed = text in self._typed
        self.phase = Phase.THINKING
        self.answer = Answer(typed=typed, reply=self._typed.pop(text, None))
        self.floor_open.set()
        # A key press is a turn of its own: it never continues the question before it.
        continues = None if repeat or self.answer.reply is not None else self._continues
        return TurnEnd(typed, repeat, after_cut_off=self._cut_off_turn is not None, continues=continues)

    def cut_off_settled(self, unheard: str) -> None:
        """The cut-off answer's history now says what was heard; `unheard` is the rest of it."""
        if self._cut_off_turn is not None:
            self._unsaid = unheard
            self._unsaid_until_turn = self._cut_off_turn + RESUME_WINDOW_TURNS
            self._cut_off_turn = None

    def number_turn(self, text: str, merged: bool) -> int:
        """The turn's id: the one before when it was merged into it, else the next."""
        if not merged:
            self.turn_id += 1
        self._continues = None
        self._last_user_text = text
        return self.turn_id

    def resumable(self) -> bool:
        """An answer was cut off recently, and the rest of it can still be said."""
        return bool(self._unsaid) and self.turn_id <= self._unsaid_until_turn

    def take_unsaid(self) -> str:
        """The rest of the cut-off answer, to say now (once)."""
        unsaid, self._unsaid = self._unsaid, ""
        return unsaid

    def answer_started(self) -> None:
        """The answer's start came out of the TTS (voice/watchers.py, SpokenTextEmitter): its audio
        follows. A stream's start after a cancel belongs to no answer."""
        if self.answering and self.answer is not None:
            self.answer.started = True

    # --- the answer goes out -----------------------------------------------------------------------

    def audio_sent(self) -> bool:
        """A chunk of the answer's audio is about to go out. False: it is dropped (cut off)."""
        if self.phase is Phase.CUT_OFF:
            return False
        if self.answer is not None:
            self.answer.audible = True
        if self.phase is Phase.THINKING:
            self.phase = Phase.SPEAKING
        self.last_audio_ns = self._clock_ns()
        return True

    def hold(self, onset_ns: int) -> bool:
        """The user made a sound over the answer: pause its audio. False: nothing is playing."""
        if self.phase is not Phase.SPEAKING or self.answer is None:
            return False
        self.phase = Phase.HELD
        self.answer.hold = Hold(onset_ns, self.last_audio_ns)
        self.floor_open.clear()
        return True

    def release(self) -> bool:
        """The sound was not an interruption: the answer goes on. False: nothing was held (an
        interruption came first)."""
        self.floor_open.set()
        if self.answer is None or self.answer.hold is None:
            return False
        if self.phase is Phase.HELD:
            # Its last audio may have gone out before the verdict: then there is nothing to carry on.
            self.phase = Phase.LISTENING if self.answer.done else Phase.SPEAKING
        self.answer.hold = None
        return True

    def interrupted(self) -> Interruption:
        """An interruption passed: the answer in flight, if any, stops here."""
        self.interruption_passed.set()
        if not self.answering or self.answer is None:
            return Interruption.NOTHING
        self.phase = Phase.CUT_OFF
        self.floor_open.set()  # a chunk waiting for the floor now goes nowhere
        self.answer.barge_in, self.answer.hold = self.answer.hold, None
        if not self.answer.audible:
            self._continues = self._last_user_text
            return Interruption.CONTINUED
        self._cut_off_turn = self.turn_id
        self.history_settled.clear()
        return Interruption.CUT_OFF

    def audio_done(self) -> bool:
        """The answer's last audio went out. False: it was not this turn's answer."""
        if not self.response_in_progress or self.answer.done:
            return False
        self.answer.done = True
        if self.phase is not Phase.HELD:
            # Held, it waits for the verdict on the user's sound: they may still cut it off (and
            # the client drop what it holds of it), or give it back.
            self.phase = Phase.LISTENING
        return True

    def nothing_heard(self) -> bool:
        """The user's sound had no words. True: it cut off an answer nobody heard, so the turn is
        answered again (the question still stands)."""
        if self._continues is None or self.answering:
            return False
        self._continues = None
        self._repeat = True
        return True

    def end(self) -> None:
        self.phase = Phase.ENDED
        self.floor_open.set()
