// The /phone page: a phone call from the browser over /twilio/media, speaking Twilio's Media
// Streams protocol as clients/phone.py (`parley phone`) does, with the narrowband codec both ways:
// the microphone goes out as 8 kHz G.711 μ-law and the agent is played from 8 kHz μ-law, so what
// you hear is what a caller on a real phone hears (docs/protocol.md, "/twilio/media").

const LINE_RATE = 8000; // Media Streams carry μ-law at 8 kHz, mono: the only format Twilio sends
const FRAME_MS = 20; // what Twilio sends: 160 bytes of μ-law per media message
const FRAME_SAMPLES = (LINE_RATE * FRAME_MS) / 1000;
const KEYS = "0123456789*#"; // a phone's keypad, and every digit Twilio's dtmf event carries
const ACCOUNT_SID = "AC" + "0".repeat(32); // no Twilio account: the simulator sends the same placeholder
const JITTER_MS = 60; // playback starts once this much is queued (or it waited this long): no clicks on jitter
// The microphone's low-pass before it drops to 8 kHz: 3.4 kHz is the top of the telephone band
// (ITU G.712), below the 4 kHz Nyquist limit so that little folds back as aliasing.
const MIC_CUTOFF_HZ = 3400;
// Windowed-sinc (Blackman) length: at 48 kHz, flat to 2.4 kHz, -1 dB at 3 kHz, -28 dB at 4 kHz and
// -67 dB from 4.4 kHz (what would alias); it costs ~2 M multiply-adds a second (two per 8 kHz sample).
const MIC_FILTER_TAPS = 127;
// What the server's close reason means: voice/server.py refuses a call by closing the socket with
// one of these codes as the reason (Twilio has no message for it).
const REFUSALS = {
  busy: "all lines are busy (every session is in use); call again later",
  not_ready: "the agent is not ready (its models are loading or failed to load; see GET /health)",
  bad_stream_token: "this server takes only calls that Twilio placed (an auth token is set)",
};
const WS_CLOSE_NORMAL = 1000; // RFC 6455: the page hung up
const WS_CLOSE_TRY_AGAIN = 1013; // RFC 6455: "try again later", the server's answer when busy or loading

// --- G.711 μ-law, as the ITU defines it (the same tables as clients/phone.py and audioop) ------
const SEG_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const CLIP = 8159; // the largest 14-bit magnitude μ-law represents
const BIAS = 0x84; // added before the segment search so that every segment's steps line up

function encodeSample(pcm) {
  const x = pcm >> 2; // 16-bit to the 14-bit range μ-law covers
  const negative = x < 0;
  const magnitude = Math.min(negative ? -x : x, CLIP) + (BIAS >> 2);
  let segment = 0;
  while (segment < SEG_END.length && SEG_END[segment] < magnitude) segment++;
  const code = segment >= SEG_END.length ? 0x7f : (segment << 4) | ((magnitude >> (segment + 1)) & 0x0f);
  return code ^ (negative ? 0x7f : 0xff);
}

function decodeByte(byte) {
  const u = ~byte & 0xff;
  const t = (((u & 0x0f) << 3) + BIAS) << ((u & 0x70) >> 4);
  return u & 0x80 ? BIAS - t : t - BIAS;
}

const ENCODE = new Uint8Array(65536).map((_, i) => encodeSample(i - 32768));
const DECODE = Int16Array.from({ length: 256 }, (_, i) => decodeByte(i));

/** Signed 16-bit samples (any array of integers) → μ-law bytes. */
function ulawEncode(pcm) {
  const out = new Uint8Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = ENCODE[pcm[i] + 32768];
  return out;
}

/** μ-law bytes → signed 16-bit samples. */
function ulawDecode(bytes) {
  const out = new Int16Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = DECODE[bytes[i]];
  return out;
}

function toPcm16(sample) {
  const s = Math.max(-1, Math.min(1, sample));
  return s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
}

// --- resampling ---------------------------------------------------------------------------------

/** The microphone (the AudioContext's rate) down to 8 kHz: a windowed-sinc low-pass, then linear
 * interpolation at the 8 kHz instants, one render quantum at a time. */
class Downsampler {
  constructor(fromRate) {
    this.step = fromRate / LINE_RATE;
    const fc = MIC_CUTOFF_HZ / fromRate;
    const middle = (MIC_FILTER_TAPS - 1) / 2;
    const taps = Float32Array.from({ length: MIC_FILTER_TAPS }, (_, k) => {
      const n = k - middle;
      const sinc = n === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * n) / (Math.PI * n);
      const blackman =
        0.42 - 0.5 * Math.cos((2 * Math.PI * k) / (MIC_FILTER_TAPS - 1)) +
        0.08 * Math.cos((4 * Math.PI * k) / (MIC_FILTER_TAPS - 1));
      return sinc * blackman;
    });
    const gain = taps.reduce((a, b) => a + b, 0);
    this.taps = taps.map((t) => t / gain); // unity gain at 0 Hz
    this.buffer = new Float32Array(MIC_FILTER_TAPS - 1); // history: the filter's first outputs see silence
    this.position = MIC_FILTER_TAPS - 1; // the next 8 kHz instant, in input samples into the buffer
  }

  filtered(n) {
    let sum = 0;
    for (let k = 0; k < MIC_FILTER_TAPS; k++) sum += this.taps[k] * this.buffer[n - k];
    return sum;
  }

  process(input) {
    const joined = new Float32Array(this.buffer.length + input.length);
    joined.set(this.buffer);
    joined.set(input, this.buffer.length);
    this.buffer = joined;
    const out = [];
    while (Math.floor(this.position) + 1 < joined.length) {
      const i = Math.floor(this.position);
      const f = this.position - i;
      out.push(this.filtered(i) * (1 - f) + this.filtered(i + 1) * f);
      this.position += this.step;
    }
    const drop = Math.max(0, Math.floor(this.position) - (MIC_FILTER_TAPS - 1));
    this.buffer = joined.slice(drop);
    this.position -= drop;
    return Float32Array.from(out);
  }
}

/** The agent's 8 kHz audio up to the AudioContext's rate, by linear interpolation (the line's
 * own band stays as it is: nothing above 4 kHz is added back). */
class Upsampler {
  constructor(toRate) {
    this.step = LINE_RATE / toRate;
    this.reset();
  }

  reset() {
    this.previous = 0;
    this.phase = 0; // the next output instant, in 8 kHz samples after `previous`
  }

  process(input) {
    const out = [];
    const at = (i) => (i === 0 ? this.previous : input[i - 1]);
    let t = this.phase;
    while (t < input.length) {
      const i = Math.floor(t);
      const f = t - i;
      out.push(at(i) + (at(i + 1) - at(i)) * f);
      t += this.step;
    }
    this.phase = t - input.length;
    if (input.length) this.previous = input[input.length - 1];
    return Float32Array.from(out);
  }
}

// --- the page -----------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const stats = {
  state: "idle", // idle → ringing → connected → ended
  reason: "",
  mediaSent: 0,
  mediaReceived: 0,
  receivedMs: 0, // the agent's audio that arrived
  playedMs: 0, // …and what of it has played
  droppedMs: 0, // …and what a clear dropped before it played
  marksReceived: 0,
  marksSent: 0,
  clears: 0,
  keysSent: 0,
};
window.phoneStats = stats;
// For tests and the curious: the page's codec and resamplers, on plain arrays.
window.phoneCodec = {
  encode: (samples) => Array.from(ulawEncode(samples)),
  decode: (bytes) => Array.from(ulawDecode(bytes)),
  downsample: (samples, fromRate) => Array.from(new Downsampler(fromRate).process(Float32Array.from(samples))),
  upsample: (samples, toRate) => Array.from(new Upsampler(toRate).process(Float32Array.from(samples))),
};

let call = null; // the call in progress, or null

function setState(state, reason = "") {
  stats.state = state;
  stats.reason = reason;
  $("status").textContent = state;
  $("dot").className = `dot ${state}`;
  $("reason").textContent = reason;
  $("call").disabled = state === "ringing" || state === "connected";
  $("hangup").disabled = !(state === "ringing" || state === "connected");
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function note(text) {
  const item = document.createElement("li");
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = call ? `${((performance.now() - call.dialledAt) / 1000).toFixed(1)} s` : "";
  item.append(time, text);
  $("call-log").append(item);
  item.scrollIntoView({ block: "nearest" });
}

function showCounters() {
  $("counters").textContent =
    `sent ${stats.mediaSent} media · received ${stats.mediaReceived} media ` +
    `(${(stats.receivedMs / 1000).toFixed(1)} s, ${(stats.playedMs / 1000).toFixed(1)} s played) · ` +
    `${stats.marksSent} marks sent back · ${stats.clears} clear(s) · ${stats.keysSent} key(s)`;
}

function base64(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function send(message) {
  if (!call || call.ws.readyState !== WebSocket.OPEN) return false;
  call.sequence++;
  call.ws.send(JSON.stringify({ ...message, sequenceNumber: String(call.sequence) }));
  return true;
}

function sendFrame(pcm) {
  const media = {
    track: "inbound",
    chunk: String(call.chunk + 1),
    timestamp: String(call.chunk * FRAME_MS),
    payload: base64(ulawEncode(pcm)),
  };
  if (send({ event: "media", streamSid: call.streamSid, media })) {
    call.chunk++;
    stats.mediaSent++;
  }
}

function onMicQuantum(samples) {
  if (!call || stats.state !== "connected") return;
  for (const s of call.downsampler.process(samples)) {
    call.frame[call.framed++] = toPcm16(s);
    if (call.framed === FRAME_SAMPLES) {
      sendFrame(call.frame);
      call.framed = 0;
    }
  }
}

function sendMarkBack(name) {
  if (send({ event: "mark", streamSid: call.streamSid, mark: { name } })) {
    stats.marksSent++;
    note(`mark ${name} played: sent back`);
  }
}

// Marks go back once the audio queued before them has played (Twilio's rule).
function markPlayed() {
  while (call.marks.length && call.marks[0].at <= call.played) sendMarkBack(call.marks.shift().name);
}

function onMessage(raw) {
  let message;
  try {
    message = JSON.parse(raw);
  } catch {
    return; // Twilio ignores what it can't read; so does this phone
  }
  switch (message.event) {
    case "media": {
      const pcm = ulawDecode(fromBase64(message.media?.payload ?? ""));
      stats.mediaReceived++;
      stats.receivedMs += (1000 * pcm.length) / LINE_RATE;
      const samples = call.upsampler.process(Float32Array.from(pcm, (s) => s / 0x8000));
      call.resyncing = false;
      call.queued += samples.length;
      call.playback.port.postMessage(samples, [samples.buffer]);
      break;
    }
    case "mark":
      stats.marksReceived++;
      call.marks.push({ name: message.mark?.name ?? "", at: call.queued });
      markPlayed();
      break;
    case "clear": {
      // What has not been played is dropped at once; its marks come back now, as Twilio does.
      call.playback.port.postMessage("clear");
      call.upsampler.reset();
      const unplayed = Math.max(0, call.queued - call.played);
      stats.droppedMs += (1000 * unplayed) / call.context.sampleRate;
      stats.clears++;
      // The worklet played a little more than its last report says; its next report, before new
      // audio comes, tells exactly where the queue now ends (see the "played" handler).
      call.queued = call.played;
      call.resyncing = true;
      note(`clear: dropped ${Math.round((1000 * unplayed) / call.context.sampleRate)} ms not yet played`);
      for (const { name } of call.marks.splice(0)) sendMarkBack(name);
      break;
    }
  }
  showCounters();
}

async function startAudio(context) {
  await context.audioWorklet.addModule("playback-worklet.js");
  await context.audioWorklet.addModule("capture-worklet.js");
  const playback = new AudioWorkletNode(context, "parley-playback", { outputChannelCount: [1] });
  playback.port.postMessage({
    type: "config",
    prebufferSamples: Math.round((context.sampleRate * JITTER_MS) / 1000),
  });
  playback.port.onmessage = ({ data }) => {
    if (data.type !== "played" || !call) return;
    stats.playedMs += (1000 * (data.samples - call.played)) / context.sampleRate;
    call.played = data.samples;
    if (call.resyncing) call.queued = Math.max(call.queued, call.played); // nothing queued since a clear
    markPlayed();
    showCounters();
  };
  playback.connect(context.destination);
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const capture = new AudioWorkletNode(context, "parley-capture");
    capture.port.onmessage = ({ data }) => onMicQuantum(data);
    context.createMediaStreamSource(stream).connect(capture);
  } catch (err) {
    showError(`The microphone is not available (${err.name}): the call goes on with silence, and the keys work.`);
  }
  await context.resume();
  return { playback, stream };
}

async function dial() {
  showError("");
  $("call-log").replaceChildren();
  $("number").textContent = "";
  // Created in the click, so the browser lets it play.
  const context = new AudioContext({ latencyHint: "interactive" });
  call = {
    context,
    dialledAt: performance.now(),
    streamSid: "MZ" + crypto.randomUUID().replaceAll("-", ""),
    callSid: "CA" + crypto.randomUUID().replaceAll("-", ""),
    sequence: 0,
    chunk: 0,
    frame: new Int16Array(FRAME_SAMPLES),
    framed: 0,
    downsampler: new Downsampler(context.sampleRate),
    upsampler: new Upsampler(context.sampleRate),
    queued: 0, // output samples handed to the playback worklet (less what a clear dropped)
    played: 0, // output samples it has played
    marks: [], // { name, at: `queued` when it came }, waiting for their audio to play
    resyncing: false, // cleared, and no audio since: `queued` follows the worklet's reports
    silence: null,
    opened: false,
    hungUp: false,
  };
  Object.assign(stats, { mediaSent: 0, mediaReceived: 0, receivedMs: 0, playedMs: 0, droppedMs: 0 });
  Object.assign(stats, { marksReceived: 0, marksSent: 0, clears: 0, keysSent: 0 });
  setState("ringing");
  showCounters();
  const thisCall = call;
  const audio = await startAudio(context);
  if (thisCall !== call) {
    audio.stream?.getTracks().forEach((t) => t.stop()); // hung up while the microphone was opening
    return;
  }
  Object.assign(call, audio);
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/twilio/media`;
  note(`calling ${url}`);
  const ws = new WebSocket(url);
  call.ws = ws;
  ws.onopen = () => {
    call.opened = true;
    send({ event: "connected", protocol: "Call", version: "1.0.0" });
    send({
      event: "start",
      start: {
        streamSid: call.streamSid,
        accountSid: ACCOUNT_SID,
        callSid: call.callSid,
        tracks: ["inbound"],
        customParameters: { from: "browser" },
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: LINE_RATE, channels: 1 },
      },
    });
    setState("connected");
    note(`call started: stream ${call.streamSid}`);
    if (!call.stream) {
      // No microphone: a phone line never stops, so silence goes out every 20 ms.
      call.silence = setInterval(() => sendFrame(new Int16Array(FRAME_SAMPLES)), FRAME_MS);
    }
  };
  ws.onmessage = ({ data }) => thisCall === call && onMessage(data);
  ws.onclose = (event) => {
    if (thisCall !== call) return;
    let reason;
    if (call.hungUp) reason = "you hung up";
    else if (!call.opened) reason = "the server can't be reached (is `parley serve` running?)";
    else if (REFUSALS[event.reason]) reason = `refused: ${REFUSALS[event.reason]}`;
    else if (event.code === WS_CLOSE_TRY_AGAIN) reason = `refused: ${event.reason || "try again later"}`;
    else if (event.code === WS_CLOSE_NORMAL) reason = "the other end hung up";
    else reason = `the line went dead (${event.code}${event.reason ? `: ${event.reason}` : ""})`;
    end(reason);
  };
}

function end(reason) {
  note(`call ended: ${reason}`);
  clearInterval(call.silence);
  call.stream?.getTracks().forEach((t) => t.stop());
  call.context.close();
  call = null;
  setState("ended", reason);
}

function hangUp() {
  if (!call) return;
  call.hungUp = true;
  send({ event: "stop", streamSid: call.streamSid, stop: { accountSid: ACCOUNT_SID, callSid: call.callSid } });
  const ws = call.ws;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(WS_CLOSE_NORMAL);
  else end("you hung up");
}

function press(key) {
  $("number").textContent += key;
  if (!call || stats.state !== "connected") return; // dialling: only the screen shows it
  if (send({ event: "dtmf", streamSid: call.streamSid, dtmf: { track: "inbound_track", digit: key } })) {
    stats.keysSent++;
    note(`key ${key} sent`);
    showCounters();
  }
}

$("keypad").addEventListener("click", (event) => {
  const key = event.target.closest("button")?.dataset.key;
  if (key) press(key);
});
document.addEventListener("keydown", (event) => {
  if (KEYS.includes(event.key) && !event.repeat && !event.ctrlKey && !event.metaKey) press(event.key);
});
$("call").addEventListener("click", () => {
  dial().catch((err) => {
    showError(`The call could not start: ${err.message}`);
    if (call) end("the call could not start");
  });
});
$("hangup").addEventListener("click", hangUp);
window.addEventListener("pagehide", hangUp); // leaving the page puts the phone down, with a stop
setState("idle");
showCounters();
