// The client's half of docs/protocol.md: binary frame layouts and the hello message.

export const PROTOCOL_VERSION = 1;
export const CLIENT_NAME = "web/1.0";
export const CAPTURE_RATE = 16000; // the page always sends 16 kHz
export const DEFAULT_OUTPUT_RATE = 24000;
export const HEADER_BYTES = 8;
export const FLAG_PLAYING = 1; // uplink flags bit 0: assistant audio is playing right now

export function helloMessage() {
  return { type: "hello", protocol: PROTOCOL_VERSION, sample_rate: CAPTURE_RATE, client: CLIENT_NAME };
}

/** Uplink frame: uint32 BE ms timestamp, uint32 BE flags, then int16 LE PCM. */
export function encodeAudioFrame(pcm, flags, timestampMs = Date.now()) {
  const frame = new ArrayBuffer(HEADER_BYTES + pcm.byteLength);
  const view = new DataView(frame);
  view.setUint32(0, timestampMs % 2 ** 32 >>> 0, false);
  view.setUint32(4, flags >>> 0, false);
  const samples = new Int16Array(frame, HEADER_BYTES, pcm.length);
  if (littleEndian()) {
    samples.set(pcm);
  } else {
    for (let i = 0; i < pcm.length; i++) view.setInt16(HEADER_BYTES + 2 * i, pcm[i], true);
  }
  return frame;
}

/** Downlink frame: uint32 BE turn_id, uint32 BE seq, then int16 LE PCM. Null when malformed. */
export function decodeAudioFrame(buffer) {
  if (buffer.byteLength < HEADER_BYTES || (buffer.byteLength - HEADER_BYTES) % 2 !== 0) return null;
  const view = new DataView(buffer);
  const turnId = view.getUint32(0, false);
  const seq = view.getUint32(4, false);
  const count = (buffer.byteLength - HEADER_BYTES) / 2;
  let pcm;
  if (littleEndian()) {
    pcm = new Int16Array(buffer.slice(HEADER_BYTES)); // own buffer, so it can be transferred
  } else {
    pcm = new Int16Array(count);
    for (let i = 0; i < count; i++) pcm[i] = view.getInt16(HEADER_BYTES + 2 * i, true);
  }
  return { turnId, seq, pcm };
}

let endianness = null;
function littleEndian() {
  if (endianness === null) endianness = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  return endianness;
}
