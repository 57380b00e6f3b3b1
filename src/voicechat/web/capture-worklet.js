// Microphone capture, on the audio thread: resamples from the context's rate (whatever the device
// runs: 44.1 kHz, 48 kHz, ...) to 16 kHz, converts to int16 and posts fixed-size frames to the page,
// together with a level reading for the meter. The page adds the protocol header and sends them.

import { Resampler, floatToInt16 } from "./resampler.js";

const TARGET_RATE = 16000;
const LEVEL_INTERVAL_S = 0.05;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = options?.processorOptions?.frameMs ?? 32;
    this.frameSamples = Math.round((TARGET_RATE * frameMs) / 1000);
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.scratch = new Float32Array(this.resampler.maxOutput(4096));
    this.frame = new Float32Array(this.frameSamples);
    this.filled = 0;
    this.levelSum = 0;
    this.levelPeak = 0;
    this.levelCount = 0;
    this.levelEvery = Math.round(sampleRate * LEVEL_INTERVAL_S);
    this.framesPosted = 0;
    this.port.onmessage = (event) => {
      if (event.data?.type === "reset") this.reset();
    };
  }

  reset() {
    this.resampler.reset();
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected yet
    const input = channels[0]; // echo-cancelled mics are mono; take the first channel
    this.measure(input);
    const count = this.resampler.process(input, this.scratch, 0);
    let offset = 0;
    while (offset < count) {
      const take = Math.min(count - offset, this.frameSamples - this.filled);
      this.frame.set(this.scratch.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
      if (this.filled === this.frameSamples) {
        const pcm = floatToInt16(this.frame);
        this.port.postMessage({ type: "frame", pcm }, [pcm.buffer]);
        this.framesPosted++;
        this.filled = 0;
      }
    }
    return true;
  }

  measure(input) {
    for (let i = 0; i < input.length; i++) {
      const s = input[i];
      this.levelSum += s * s;
      const a = Math.abs(s);
      if (a > this.levelPeak) this.levelPeak = a;
    }
    this.levelCount += input.length;
    if (this.levelCount >= this.levelEvery) {
      const rms = Math.sqrt(this.levelSum / this.levelCount);
      this.port.postMessage({ type: "level", rms, peak: this.levelPeak, frames: this.framesPosted });
      this.levelSum = 0;
      this.levelPeak = 0;
      this.levelCount = 0;
    }
  }
}

registerProcessor("voicechat-capture", CaptureProcessor);
