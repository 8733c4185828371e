// Microphone capture: hands each 128-sample render quantum to the page, which frames it into
// 20 ms PCM packets. Kept tiny: the audio thread must never wait.
class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("parley-capture", CaptureProcessor);
