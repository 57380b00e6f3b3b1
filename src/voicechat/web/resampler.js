// Streaming band-limited resampler (windowed sinc), shared by the capture and playback worklets and
// importable from the page for tests. It keeps its state between calls, so audio fed in pieces comes
// out exactly as if it had been fed in one go: no clicks at chunk boundaries.

const TABLE_STEPS = 64; // kernel table entries per input sample; linear interpolation between them

export class Resampler {
  /**
   * @param {number} inRate input sample rate, Hz
   * @param {number} outRate output sample rate, Hz
   * @param {number} zeroCrossings kernel half-width in zero crossings (quality vs. cost)
   */
  constructor(inRate, outRate, zeroCrossings = 8) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError(`bad rates ${inRate} -> ${outRate}`);
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    this.passthrough = inRate === outRate;
    // Cut-off as a fraction of the input Nyquist: below the lower of the two Nyquists, with a margin
    // for the transition band, so downsampling does not alias.
    this.cutoff = Math.min(1, outRate / inRate) * 0.92;
    this.halfWidth = zeroCrossings / this.cutoff; // in input samples
    this.table = buildKernel(this.cutoff, this.halfWidth);
    this.lead = Math.ceil(this.halfWidth) + 1; // zeros of history before the first real sample
    this.buffer = new Float32Array(4096);
    this.reset();
  }

  reset() {
    this.buffer.fill(0, 0, this.lead);
    this.length = this.lead; // valid samples in buffer
    this.position = this.lead; // where the next output sample sits, in input samples from buffer[0]
  }

  /** Output samples that `inputLength` more input samples would produce at most (for sizing). */
  maxOutput(inputLength) {
    return Math.ceil((this.length + inputLength - this.position) / this.step) + 1;
  }

  /**
   * Resample `input` (Float32Array), appending the results to `out` from `outStart`.
   * `out` must have room for maxOutput(input.length) samples. Returns how many were written.
   */
  process(input, out, outStart = 0) {
    if (this.passthrough) {
      out.set(input, outStart);
      return input.length;
    }
    this.append(input);
    const { buffer, table, halfWidth, step } = this;
    const last = this.length - 1;
    let position = this.position;
    let written = 0;
    while (position + halfWidth <= last) {
      const first = Math.ceil(position - halfWidth);
      const end = Math.floor(position + halfWidth);
      let acc = 0;
      for (let i = first; i <= end; i++) {
        const t = (position - i + halfWidth) * TABLE_STEPS;
        const k = t | 0;
        acc += buffer[i] * (table[k] + (table[k + 1] - table[k]) * (t - k));
      }
      out[outStart + written++] = acc;
      position += step;
    }
    // Drop history the next output no longer needs.
    const keepFrom = Math.max(0, Math.floor(position - halfWidth) - 1);
    if (keepFrom > 0) {
      buffer.copyWithin(0, keepFrom, this.length);
      this.length -= keepFrom;
      position -= keepFrom;
    }
    this.position = position;
    return written;
  }

  /** Push the samples still held back for look-ahead out (end of a stream); then reset. */
  flush(out, outStart = 0) {
    const written = this.passthrough ? 0 : this.process(new Float32Array(this.lead + 1), out, outStart);
    this.reset();
    return written;
  }

  append(input) {
    const needed = this.length + input.length;
    if (needed > this.buffer.length) {
      const bigger = new Float32Array(Math.max(needed, this.buffer.length * 2));
      bigger.set(this.buffer.subarray(0, this.length));
      this.buffer = bigger;
    }
    this.buffer.set(input, this.length);
    this.length = needed;
  }
}

/** Blackman-windowed sinc low-pass, tabulated over [-halfWidth, halfWidth] input samples. */
function buildKernel(cutoff, halfWidth) {
  const size = Math.ceil(2 * halfWidth * TABLE_STEPS) + 2;
  const table = new Float32Array(size);
  for (let k = 0; k < size; k++) {
    const d = k / TABLE_STEPS - halfWidth;
    const x = d / halfWidth;
    if (Math.abs(x) >= 1) continue;
    const window = 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
    const arg = Math.PI * cutoff * d;
    const sinc = arg === 0 ? 1 : Math.sin(arg) / arg;
    table[k] = cutoff * sinc * window;
  }
  return table;
}

/** Float samples in [-1, 1] to int16, clipping. */
export function floatToInt16(input, out = new Int16Array(input.length)) {
  for (let i = 0; i < input.length; i++) {
    const s = input[i];
    out[i] = s >= 1 ? 32767 : s <= -1 ? -32768 : Math.round(s * 32767);
  }
  return out;
}

/** int16 samples to floats in [-1, 1). */
export function int16ToFloat(input, out = new Float32Array(input.length)) {
  for (let i = 0; i < input.length; i++) out[i] = input[i] / 32768;
  return out;
}
