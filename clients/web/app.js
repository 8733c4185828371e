// Parley's browser client: speaks the documented /ws protocol (docs/protocol.md), nothing else.

const FRAME_MS = 20; // what the server expects from a microphone: small frames keep the VAD current
const SEND_RATE = 16000; // what Whisper and the VAD work at: sending more would only cost bandwidth
const JITTER_MS = 60; // playback starts once this much is queued (or it waited this long): no clicks on jitter
const QUIET_LEVEL = 0.01; // RMS below this is "quiet" for the page's own (VAD-free) detector
const QUIET_HOLD_MS = 150; // …for this long: a gap between words doesn't count as the end
const PLAYBACK_REPORT_MS = 250; // how often the server hears how far playback got (for what was heard)
const STAGES = ["endpoint", "stt", "rag", "llm_ttft", "first_sentence", "tts_ttfa", "send"];

const $ = (id) => document.getElementById(id);
const stats = {
  sentFrames: 0,
  receivedAudioMs: 0,
  playedAudioMs: 0,
  droppedAudioMs: 0, // received, then dropped unplayed because the user interrupted
  playbackReports: 0,
  interruptions: 0,
};
window.parley = { stats };

let ws = null;
let capture = null; // { context, source, node, stream }
let playback = null; // { context, node }
let outputRate = 0;
let pending = new Float32Array(0);
let agentItem = null;
let userItem = null;
let agentTurn = -1;
let quietSince = null; // page clock (ms) when the mic went quiet after speech
let spoke = false;
let quietAt = null; // the moment the user went quiet, for the "heard here" figure
let playedSamples = 0;
let turnPlayStartMs = 0; // stats.playedAudioMs at the moment the current agent turn's audio begins
let lastReportAt = 0;

function setStatus(state) {
  $("status").textContent = state;
  $("dot").className = `dot ${state}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function say(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("log").append(item);
  item.scrollIntoView({ block: "nearest" });
  return item;
}

function resample(input, fromRate, toRate) {
  if (fromRate === toRate) return input;
  const ratio = fromRate / toRate;
  const out = new Float32Array(Math.floor(input.length / ratio));
  for (let i = 0; i < out.length; i++) {
    // average the source samples this output sample covers: a cheap anti-aliasing filter
    const start = Math.floor(i * ratio);
    const end = Math.max(start + 1, Math.floor((i + 1) * ratio));
    let sum = 0;
    for (let j = start; j < end; j++) sum += input[j];
    out[i] = sum / (end - start);
  }
  return out;
}

function toPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out.buffer;
}

function onMicQuantum(samples) {
  let energy = 0;
  for (const s of samples) energy += s * s;
  const rms = Math.sqrt(energy / samples.length);
  $("level").value = Math.min(1, rms * 8);
  const now = performance.now();
  if (rms >= QUIET_LEVEL) {
    spoke = true;
    quietSince = null;
  } else if (spoke) {
    quietSince ??= now;
    if (now - quietSince >= QUIET_HOLD_MS) {
      quietAt = quietSince; // the user went quiet at quietSince, not when we became sure of it
      spoke = false;
    }
  }
  const resampled = resample(samples, capture.context.sampleRate, SEND_RATE);
  const joined = new Float32Array(pending.length + resampled.length);
  joined.set(pending);
  joined.set(resampled, pending.length);
  const frame = (SEND_RATE * FRAME_MS) / 1000;
  let offset = 0;
  while (joined.length - offset >= frame) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(toPcm16(joined.subarray(offset, offset + frame)));
      stats.sentFrames++;
    }
    offset += frame;
  }
  pending = joined.slice(offset);
}

function onAgentAudio(buffer) {
  const pcm = new Int16Array(buffer);
  const samples = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 0x8000;
  stats.receivedAudioMs += (1000 * pcm.length) / outputRate;
  playback.node.port.postMessage(samples, [samples.buffer]);
}

function drawWaterfall(stages) {
  const total = stages.voice_to_voice || 1;
  const box = $("waterfall");
  box.replaceChildren();
  for (const name of STAGES) {
    if (stages[name] === undefined) continue;
    const row = document.createElement("div");
    row.className = "bar";
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("span");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.min(100, (100 * stages[name]) / total)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.textContent = `${Math.round(stages[name])} ms`;
    row.append(label, track, value);
    box.append(row);
  }
}

function onEvent(event) {
  switch (event.type) {
    case "session.ready":
      outputRate = event.output_sample_rate;
      startPlayback().then(() => setStatus("listening"));
      break;
    case "user.speech_started":
      setStatus("listening");
      break;
    case "user.transcript":
      if (userItem && userItem.dataset.turn === String(event.turn_id)) userItem.textContent = event.text;
      else {
        userItem = say("user", event.text);
        userItem.dataset.turn = event.turn_id;
      }
      $("user-transcript").textContent = event.text;
      $("agent-text").textContent = "";
      setStatus("thinking");
      break;
    case "agent.text":
      if (agentTurn !== event.turn_id) {
        agentTurn = event.turn_id;
        // This turn's audio plays once everything received before it has played (or was dropped).
        turnPlayStartMs = stats.receivedAudioMs - stats.droppedAudioMs;
        agentItem = say("agent", "");
      }
      agentItem.textContent = `${agentItem.textContent} ${event.text}`.trim();
      $("agent-text").textContent = agentItem.textContent;
      setStatus("speaking");
      break;
    case "agent.interrupted":
      playback?.node.port.postMessage("clear");
      stats.droppedAudioMs = stats.receivedAudioMs - stats.playedAudioMs; // the queue will never play
      reportPlayback(true);
      stats.interruptions++;
      agentItem?.classList.add("cut");
      setStatus("listening");
      break;
    case "agent.paused":
      setStatus("listening");
      break;
    case "agent.resumed":
      setStatus("speaking");
      break;
    case "agent.audio_done":
      // back to listening once the audio still queued here has played out
      setTimeout(
        () => ws && setStatus("listening"),
        Math.max(0, stats.receivedAudioMs - stats.droppedAudioMs - stats.playedAudioMs),
      );
      break;
    case "turn.trace":
      $("turn-latency").textContent = String(Math.round(event.stages_ms.voice_to_voice ?? 0));
      drawWaterfall(event.stages_ms);
      break;
    case "error":
      showError(`The server says: ${event.message}`);
      break;
  }
}

// Tells the server how much of the current turn's audio has really been played, so that after an
// interruption it knows what the user heard (docs/protocol.md, `playback`).
function reportPlayback(now) {
  if (!ws || ws.readyState !== WebSocket.OPEN || agentTurn < 0) return;
  const at = performance.now();
  if (!now && at - lastReportAt < PLAYBACK_REPORT_MS) return;
  lastReportAt = at;
  const playedMs = Math.max(0, stats.playedAudioMs - turnPlayStartMs);
  ws.send(JSON.stringify({ type: "playback", turn_id: agentTurn, played_ms: Math.round(playedMs) }));
  stats.playbackReports++;
}

async function startPlayback() {
  if (playback) return;
  const context = new AudioContext({ sampleRate: outputRate, latencyHint: "interactive" });
  await context.audioWorklet.addModule("playback-worklet.js");
  const node = new AudioWorkletNode(context, "parley-playback", { outputChannelCount: [1] });
  node.port.onmessage = ({ data }) => {
    if (data.type === "started" && quietAt !== null) {
      $("heard-latency").textContent = String(Math.round(performance.now() - quietAt));
      quietAt = null;
    } else if (data.type === "played") {
      const fresh = data.samples - playedSamples;
      playedSamples = data.samples;
      stats.playedAudioMs += (1000 * fresh) / outputRate;
      reportPlayback(false);
    }
  };
  node.port.postMessage({ type: "config", prebufferSamples: Math.round((outputRate * JITTER_MS) / 1000) });
  node.connect(context.destination);
  await context.resume();
  playback = { context, node };
}

async function startCapture() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  const context = new AudioContext({ latencyHint: "interactive" });
  await context.audioWorklet.addModule("capture-worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "parley-capture");
  node.port.onmessage = ({ data }) => onMicQuantum(data);
  source.connect(node);
  await context.resume();
  capture = { context, source, node, stream };
}

async function connect() {
  showError("");
  $("connect").disabled = true;
  try {
    await startCapture();
  } catch (err) {
    showError(`The microphone is not available (${err.name}). Allow it in the address bar, or type below.`);
  }
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "session.start", sample_rate: SEND_RATE }));
    $("connect").textContent = "Disconnect";
    $("connect").disabled = false;
    $("text-input").disabled = false;
    $("text-send").disabled = false;
  };
  ws.onmessage = ({ data }) => (typeof data === "string" ? onEvent(JSON.parse(data)) : onAgentAudio(data));
  ws.onclose = (event) => {
    if (event.code !== 1000 && ws !== null) {
      showError(`Disconnected from the server (${event.code}${event.reason ? `: ${event.reason}` : ""}). Press Connect to try again.`);
    }
    teardown();
  };
  ws.onerror = () => showError("The server can't be reached. Is `parley serve` running? Press Connect to retry.");
}

function teardown() {
  capture?.stream.getTracks().forEach((t) => t.stop());
  capture?.context.close();
  playback?.context.close();
  capture = playback = ws = null;
  pending = new Float32Array(0);
  playedSamples = 0;
  setStatus("disconnected");
  $("connect").textContent = "Connect";
  $("connect").disabled = false;
  $("text-input").disabled = true;
  $("text-send").disabled = true;
}

$("connect").addEventListener("click", () => {
  if (ws) {
    const socket = ws;
    ws = null;
    socket.close(1000);
    teardown();
  } else {
    connect();
  }
});

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text-input").value.trim();
  if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
  quietAt = performance.now();
  ws.send(JSON.stringify({ type: "input_text", text }));
  $("text-input").value = "";
});
