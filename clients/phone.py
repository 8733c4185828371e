"""`parley phone`: a phone call as Twilio would make it, without a Twilio account.

It opens `/twilio/media` and speaks Twilio's bidirectional Media Streams protocol: `connected`,
`start`, then the caller's audio as 20 ms μ-law frames at 8 kHz in real time (speech from a WAV
file, silence around it, as a phone line never stops), `dtmf` for keys pressed, and `stop` to hang
up. What comes back is played as Twilio would: into a buffer that empties in real time, where
`clear` drops what has not been played yet, and each `mark` is sent back once the audio before it
has been played (or dropped by a `clear`).

With `--auth-token`, the call first rings the voice webhook as Twilio does (a POST to
`/twilio/voice` signed with X-Twilio-Signature) and opens the stream with the parameters the
TwiML gives it: a server with a Twilio auth token lets only such streams in.

Speaks only the documented protocol (docs/protocol.md, "Phone calls"); imports nothing from the
server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import sys
import threading
import time
import uuid
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import httpx
import numpy as np
import websockets

from clients.talk import SPEECH_LEVEL, read_wav, write_wav

RATE = 8000  # Media Streams carry μ-law at 8 kHz, mono
FRAME_MS = 20  # what Twilio sends: 160 bytes of μ-law per media message
FRAME_SAMPLES = RATE * FRAME_MS // 1000
# After the question, the call is over once the agent has said something and then been silent for
# this long: longer than the pause between two of its sentences on a busy CPU.
QUIET_END_S = 3.0
KEYPAD = "0123456789*#"

# --- G.711 μ-law, as the ITU defines it (and Twilio, and Python's audioop, encode it) ---------
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_CLIP = 8159  # the largest 14-bit magnitude μ-law represents
_BIAS = 0x84


def _encode_table() -> np.ndarray:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 16-bit to the 14-bit range μ-law covers
    negative = x < 0
    magnitude = np.minimum(np.where(negative, -x, x), _CLIP) + (_BIAS >> 2)
    segment = np.searchsorted(_SEG_END, magnitude)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


def _decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype("<i2")


_ENCODE = _encode_table()
_DECODE = _decode_table()


def ulaw_encode(pcm16: bytes) -> bytes:
    """Mono s16le PCM → μ-law, one byte per sample."""
    return _ENCODE[np.frombuffer(pcm16, dtype="<i2").astype(np.int32) + 32768].tobytes()


def ulaw_decode(ulaw: bytes) -> bytes:
    """μ-law → mono s16le PCM."""
    return _DECODE[np.frombuffer(ulaw, dtype=np.uint8)].tobytes()


def to_8k(pcm16: bytes, rate: int) -> bytes:
    if rate == RATE:
        return pcm16
    import soxr

    samples = np.frombuffer(pcm16, dtype="<i2")
    return np.asarray(soxr.resample(samples, rate, RATE), dtype="<i2").tobytes()


# --- the call ------------------------------------------------------------------------------------


@dataclass
class Heard:
    """One message from the server, as the phone got it (its own monotonic clock, s)."""

    at: float
    message: dict


@dataclass
class CallLog:
    received: list[Heard] = field(default_factory=list)
    speech_ends: list[float] = field(default_factory=list)  # when each clip's last loud sample went out
    marks_sent_back: list[str] = field(default_factory=list)
    dropped_by_clear_ms: float = 0.0  # agent audio received but never played, because of a clear

    def events(self, kind: str, since: float = 0.0) -> list[Heard]:
        return [h for h in self.received if h.message.get("event") == kind and h.at >= since]

    def first_audio_after(self, start: float) -> float | None:
        return next((h.at for h in self.events("media", start)), None)

    def last_audio_at(self) -> float | None:
        media = self.events("media")
        return media[-1].at if media else None


class PhoneCall:
    """One call. `async with PhoneCall(url) as call:` then `say`, `press`, `wait_for`, `hang_up`.

    `preamble`: raw text messages sent after `connected` and before `start` (to test a server
    with messages Twilio would not send). `microphone` (its `frame()` gives the next 20 ms of
    8 kHz s16le, or None) is heard whenever no clip is being said; `speaker` (its `play()` takes
    8 kHz s16le) gets what the earpiece plays, 20 ms every 20 ms, silence included.
    """

    def __init__(
        self,
        url: str,
        custom_parameters: dict[str, str] | None = None,
        preamble: tuple[str, ...] = (),
        call_sid: str | None = None,
        microphone=None,
        speaker=None,
    ):
        self._url = url
        self._live_mic = microphone
        self._speaker = speaker
        self._custom = custom_parameters or {}
        self._preamble = preamble
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.call_sid = call_sid or new_call_sid()
        self.log = CallLog()
        self.heard = bytearray()  # the agent's audio as played in the earpiece: s16le at 8 kHz
        self._mic: deque[tuple[bytes, asyncio.Event]] = deque()
        self._earpiece: deque[bytes | str] = deque()  # μ-law chunks and mark names, in order
        self._sequence = 0
        self.started_at = 0.0
        self._hung_up = False
        self._new_message = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> PhoneCall:
        self._ws = await websockets.connect(self._url, max_size=None)
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        for raw in self._preamble:
            await self.send_raw(raw)
        await self._send(
            {
                "event": "start",
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self._custom,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                },
            }
        )
        self.started_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._microphone()),
            asyncio.create_task(self._play()),
        ]
        return self

    async def __aexit__(self, *exc) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.hang_up()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._ws.close()

    # --- what the caller does

    async def say(self, pcm16: bytes, rate: int = RATE, wait: bool = True) -> None:
        """Speak a clip (mono s16le at `rate`) into the phone, after whatever is queued."""
        done = asyncio.Event()
        self._mic.append((to_8k(pcm16, rate), done))
        if wait:
            await done.wait()

    async def press(self, digit: str) -> None:
        if len(digit) != 1 or digit not in KEYPAD:
            raise ValueError(f"{digit!r} is not a key on a phone's keypad ({KEYPAD})")
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def send_raw(self, text: str) -> None:
        async with self._send_lock:
            await self._ws.send(text)

    async def hang_up(self) -> None:
        """Twilio's `stop`: the caller put the phone down."""
        if self._hung_up:
            return
        self._hung_up = True
        await self._send(
            {
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
            }
        )

    async def drop(self) -> None:
        """The line goes dead: the socket closes without a `stop`."""
        self._hung_up = True
        for task in self._tasks:
            task.cancel()
        await self._ws.close()

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    # --- waiting for the agent

    async def wait_for(self, kind: str, since: float = 0.0, timeout_s: float = 60.0) -> Heard:
        """The first message of `kind` (media, mark, clear) received at or after `since`."""
        deadline = time.monotonic() + timeout_s
        while True:
            if found := self.log.events(kind, since):
                return found[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kinds = [h.message.get("event") for h in self.log.received[-20:]]
                raise TimeoutError(f"no {kind} within {timeout_s} s; last received: {kinds}")
            self._new_message.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_message.wait(), remaining)

    async def wait_until_quiet(
        self, since: float, quiet_s: float = QUIET_END_S, timeout_s: float = 60.0
    ) -> None:
        """Once the agent has spoken after `since`, wait until it has been silent for `quiet_s`
        and the earpiece has played everything."""
        await self.wait_for("media", since, timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = self.log.last_audio_at() or 0.0
            if time.monotonic() - last >= quiet_s and not any(isinstance(i, bytes) for i in self._earpiece):
                return
            await asyncio.sleep(FRAME_MS / 1000)
        raise TimeoutError(f"the agent did not fall silent within {timeout_s} s")

    def client_voice_to_voice_ms(self) -> float | None:
        """Client-side: the last speech sample sent → the first agent audio received after it."""
        if not self.log.speech_ends:
            return None
        end = self.log.speech_ends[-1]
        first = self.log.first_audio_after(end)
        return None if first is None else 1000 * (first - end)

    # --- the line

    async def _send(self, message: dict) -> None:
        self._sequence += 1
        message = {**message, "sequenceNumber": str(self._sequence)}
        await self.send_raw(json.dumps(message))

    async def _receive(self) -> None:
        async for raw in self._ws:
            now = time.monotonic()
            try:
                message = json.loads(raw)
            except (TypeError, ValueError):
                continue  # Twilio ignores what it can't read; so does this phone
            self.log.received.append(Heard(now, message))
            kind = message.get("event")
            if kind == "media":
                payload = message.get("media", {}).get("payload", "")
                self._earpiece.append(base64.b64decode(payload))
            elif kind == "mark":
                self._earpiece.append(message.get("mark", {}).get("name", ""))
            elif kind == "clear":
                # What has not been played is dropped; its marks come back at once, as Twilio does.
                dropped = sum(len(i) for i in self._earpiece if isinstance(i, bytes))
                self.log.dropped_by_clear_ms += 1000 * dropped / RATE
                marks = [i for i in self._earpiece if isinstance(i, str)]
                self._earpiece.clear()
                for name in marks:
                    await self._send_back(name)
            self._new_message.set()

    async def wait_closed(self) -> None:
        """Until the server closes the line."""
        await asyncio.wait([self._tasks[0]])

    async def _send_back(self, name: str) -> None:
        self.log.marks_sent_back.append(name)
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _play(self) -> None:
        """The earpiece: 20 ms of the agent every 20 ms; a mark goes back once the audio before it is played."""
        tick = 0
        while True:
            delay = self.started_at + tick * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tick += 1
            wanted = FRAME_SAMPLES
            played_now = bytearray()
            while self._earpiece and (wanted > 0 or isinstance(self._earpiece[0], str)):
                item = self._earpiece.popleft()
                if isinstance(item, str):
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await self._send_back(item)
                    continue
                played, rest = item[:wanted], item[wanted:]
                if rest:
                    self._earpiece.appendleft(rest)
                played_now += ulaw_decode(played)
                wanted -= len(played)
            self.heard.extend(played_now)
            if self._speaker is not None:
                self._speaker.play(bytes(played_now) + bytes(2 * wanted))

    async def _microphone(self) -> None:
        """20 ms of μ-law every 20 ms, speech when there is some, silence otherwise."""
        silence = ulaw_encode(bytes(FRAME_SAMPLES * 2))
        clip, pos, last_loud, done, i = b"", 0, -1, None, 0
        while True:
            delay = self.started_at + i * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not clip and self._mic:
                clip, done = self._mic.popleft()
                pos = 0
                loud = np.flatnonzero(
                    np.abs(np.frombuffer(clip, dtype="<i2").astype(np.int32)) > SPEECH_LEVEL
                )
                last_loud = int(loud[-1]) * 2 if loud.size else -1
            if clip:
                pcm = clip[pos : pos + FRAME_SAMPLES * 2]
                frame = ulaw_encode(pcm + bytes(FRAME_SAMPLES * 2 - len(pcm)))
            elif self._live_mic is not None and (pcm := self._live_mic.frame()) is not None:
                frame = ulaw_encode(pcm)
            else:
                frame = silence
            media = {
                "track": "inbound",
                "chunk": str(i + 1),
                "timestamp": str(i * FRAME_MS),
                "payload": base64.b64encode(frame).decode(),
            }
            try:
                await self._send({"event": "media", "streamSid": self.stream_sid, "media": media})
            except websockets.ConnectionClosed:
                return
            if clip:
                if pos <= last_loud < pos + FRAME_SAMPLES * 2:
                    self.log.speech_ends.append(time.monotonic())
                pos += FRAME_SAMPLES * 2
                if pos >= len(clip):
                    clip = b""
                    done.set()
            i += 1


# --- `parley phone` --------------------------------------------------------------------------------


def new_call_sid() -> str:
    return "CA" + uuid.uuid4().hex


def voice_url(media_url: str) -> str:
    """The voice webhook beside a media stream URL (ws://host/twilio/media → http://host/twilio/voice)."""
    scheme, rest = media_url.split("://", 1)
    host = rest.split("/", 1)[0]
    return f"{'https' if scheme == 'wss' else 'http'}://{host}/twilio/voice"


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's X-Twilio-Signature: base64(HMAC-SHA1(token, url + each sorted name and value))."""
    data = url + "".join(name + value for name, value in sorted(params.items()))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


async def ring(media_url: str, auth_token: str, call_sid: str) -> dict[str, str]:
    """Ring the voice webhook as Twilio does for an incoming call, signed with `auth_token`; return
    the stream parameters its TwiML gives (Twilio passes them on in the stream's `start`)."""
    url = voice_url(media_url)
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550100000", "To": "+15550100001"}
    headers = {"X-Twilio-Signature": twilio_signature(auth_token, url, form)}
    async with httpx.AsyncClient() as client:
        response = await client.post(url, data=form, headers=headers, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"the voice webhook refused the call ({response.status_code}): {response.text}")
    root = ElementTree.fromstring(response.text)
    if root.find(".//Stream") is None:
        raise RuntimeError(f"the voice webhook did not connect a stream: {response.text}")
    return {p.get("name", ""): p.get("value", "") for p in root.iter("Parameter")}


def parse_dtmf(spec: str) -> list[tuple[str, float]]:
    """'*@2,0@9.5' → [('*', 2.0), ('0', 9.5)]: keys and when to press them, in s from the call's start."""
    presses = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = re.fullmatch(r"([0-9*#])@(\d+(?:\.\d+)?)", part)
        if not match:
            raise ValueError(
                f"--dtmf {part!r}: write KEY@SECONDS, e.g. '*@2' (press * 2 s into the call); keys are {KEYPAD}"
            )
        presses.append((match[1], float(match[2])))
    return sorted(presses, key=lambda p: p[1])


async def call(
    url: str,
    pcm: bytes,
    rate: int,
    presses: list[tuple[str, float]],
    quiet_s: float = QUIET_END_S,
    timeout_s: float = 60.0,
    keys_from_stdin: bool = False,
    auth_token: str | None = None,
) -> PhoneCall:
    """One scripted call: say `pcm`, press the keys on time, hang up once the agent has answered
    everything and gone quiet (or when the keyboard says so)."""
    call_sid = new_call_sid()
    parameters = await ring(url, auth_token, call_sid) if auth_token else {}
    async with PhoneCall(url, custom_parameters=parameters, call_sid=call_sid) as phone:

        async def press_on_time():
            for digit, at_s in presses:
                await asyncio.sleep(max(0.0, phone.started_at + at_s - time.monotonic()))
                await phone.press(digit)

        presser = asyncio.create_task(press_on_time())
        if pcm:
            await phone.say(pcm, rate)
        await presser
        if keys_from_stdin:
            await _keys_from_stdin(phone)
        elif pcm or presses:
            # The agent answers the last thing the caller did: the end of the question, or a key.
            last_press = phone.started_at + presses[-1][1] if presses else phone.started_at
            since = max([last_press, *phone.log.speech_ends])
            await phone.wait_until_quiet(since, quiet_s, timeout_s)
    return phone


async def call_from_microphone(url: str, auth_token: str | None = None) -> PhoneCall:
    """A live call: this computer's microphone and speaker are the handset, keys typed on the
    keyboard are pressed, and it lasts until `q` (or the end of input), the server hanging up, or
    a sound device failing (raised as SoundUnavailable)."""
    from clients.sound import Microphone, SoundUnavailable, Speaker

    devices = []
    try:
        devices.append(Microphone())  # opened before dialling: no sound card, no call
        devices.append(Speaker())
        call_sid = new_call_sid()
        parameters = await ring(url, auth_token, call_sid) if auth_token else {}
        microphone, speaker = devices
        async with PhoneCall(
            url, custom_parameters=parameters, call_sid=call_sid, microphone=microphone, speaker=speaker
        ) as phone:
            loop, failed = asyncio.get_running_loop(), asyncio.Event()
            for device in devices:  # once the line is open, so no speech piles up before it
                device.on_error = lambda: loop.call_soon_threadsafe(failed.set)
                device.start()
            print("on the line: talk to the agent", file=sys.stderr)
            ended = {
                asyncio.create_task(_keys_from_stdin(phone)): None,
                asyncio.create_task(phone.wait_closed()): "the other end hung up",
                asyncio.create_task(failed.wait()): None,
            }
            done, _ = await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            for task in ended:
                task.cancel()
            for task in done:
                if ended[task]:
                    print(ended[task], file=sys.stderr)
            if failed := next((d.error for d in devices if d.error), None):
                raise SoundUnavailable(f"the sound device failed during the call: {failed}")
    finally:
        for device in devices:
            device.stop()
    if microphone.overflows or speaker.dropped_ms:
        print(
            f"the sound card lost audio: {microphone.overflows} microphone overflows, "
            f"{speaker.dropped_ms:.0f} ms of the agent dropped",
            file=sys.stderr,
        )
    return phone


def _stdin_lines() -> asyncio.Queue[str]:
    """Lines typed on the keyboard ("" at the end of input), read by a daemon thread: a blocked
    read must not keep the program alive once the call is over."""
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read() -> None:
        while True:
            line = sys.stdin.readline()
            with contextlib.suppress(RuntimeError):  # the loop has closed: the call is over
                loop.call_soon_threadsafe(lines.put_nowait, line)
            if not line:
                return

    threading.Thread(target=read, name="parley-keyboard", daemon=True).start()
    return lines


async def _keys_from_stdin(phone: PhoneCall) -> None:
    print("keypad: type keys (0-9 * #) and Enter to press them; q and Enter to hang up", file=sys.stderr)
    lines = _stdin_lines()
    while True:
        line = await lines.get()
        if not line or line.strip().lower() == "q":
            return
        for key in line.strip():
            if key in KEYPAD:
                await phone.press(key)


def main(args) -> int:
    try:
        presses = parse_dtmf(args.dtmf or "")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.mic and (args.wav or presses):
        print("error: --mic is a live call: leave out --wav and --dtmf (type keys instead)", file=sys.stderr)
        return 2
    if args.wav:
        try:
            pcm, rate = read_wav(Path(args.wav))
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            print(f"error: cannot read {args.wav}: {exc}", file=sys.stderr)
            return 2
    elif presses or args.keys or args.mic:
        pcm, rate = b"", RATE
    else:
        print(
            "error: give a question to say (--wav FILE), keys to press (--dtmf '*@1'), --keys, "
            "or --mic to talk yourself",
            file=sys.stderr,
        )
        return 2
    from clients.sound import SoundUnavailable

    try:
        if args.mic:
            phone = asyncio.run(call_from_microphone(args.url, args.auth_token))
        else:
            phone = asyncio.run(
                call(args.url, pcm, rate, presses, args.quiet, args.timeout, args.keys, args.auth_token)
            )
    except SoundUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hung up (Ctrl-C)", file=sys.stderr)
        return 130
    except (OSError, websockets.WebSocketException, httpx.HTTPError) as exc:
        print(f"error: cannot reach {args.url}: {exc} (is `parley serve` running?)", file=sys.stderr)
        return 1
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    heard_s = len(phone.heard) / 2 / RATE
    counts = {kind: len(phone.log.events(kind)) for kind in ("media", "mark", "clear")}
    print(
        f"heard {heard_s:.1f} s of the agent; received {counts['media']} media, {counts['mark']} marks, {counts['clear']} clears"
    )
    if (v2v := phone.client_voice_to_voice_ms()) is not None:
        print(f"client voice-to-voice (last speech sample sent → first agent audio received): {v2v:.0f} ms")
    if args.out:
        write_wav(Path(args.out), bytes(phone.heard), RATE)
        print(f"what the caller heard: {args.out} (8 kHz, {heard_s:.1f} s)")
    return 0
