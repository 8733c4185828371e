// Agent playback with a small jitter buffer. "clear" drops everything queued at once: that is
// what makes a barge-in feel instant. Reports how much it has played so the page can measure
// what the listener really hears.
const REPORT_EVERY_QUANTA = 8; // ~46 ms at 22,050 Hz: fine-grained enough for a latency figure

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.played = 0;
    this.quanta = 0;
    this.wasPlaying = false;
    this.reported = 0;
    this.prebuffer = 0; // samples to hold before a talk spurt starts (set by the page)
    this.firstQueuedAt = null; // when the oldest waiting audio arrived, in seconds of audio time
    this.port.onmessage = (event) => {
      if (event.data === "clear") {
        this.queue = [];
        this.offset = 0;
        this.firstQueuedAt = null;
      } else if (event.data.type === "config") {
        this.prebuffer = event.data.prebufferSamples;
      } else {
        if (!this.queue.length) this.firstQueuedAt = currentTime;
        this.queue.push(event.data);
      }
    };
  }

  queuedSamples() {
    return this.queue.reduce((n, chunk) => n + chunk.length, 0) - this.offset;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    let written = 0;
    if (!this.wasPlaying && this.queue.length) {
      // A new talk spurt: wait for a little cushion, but never longer than the cushion's duration.
      const waited = currentTime - this.firstQueuedAt;
      if (this.queuedSamples() < this.prebuffer && waited * sampleRate < this.prebuffer) {
        out.fill(0);
        return true;
      }
    }
    while (written < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - written, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), written);
      written += n;
      this.offset += n;
      if (this.offset >= head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    out.fill(0, written);
    if (written > 0 && !this.wasPlaying) this.port.postMessage({ type: "started", frame: currentFrame });
    this.wasPlaying = written > 0;
    this.played += written;
    if (++this.quanta % REPORT_EVERY_QUANTA === 0 && this.played !== this.reported) {
      this.reported = this.played;
      this.port.postMessage({ type: "played", samples: this.played });
    }
    return true;
  }
}
registerProcessor("parley-playback", PlaybackProcessor);
