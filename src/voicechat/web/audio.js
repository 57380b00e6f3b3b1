// The page's audio: one AudioContext (created and resumed inside a user gesture, as iOS Safari
// requires), the microphone capture worklet and the playback worklet.

import { DEFAULT_OUTPUT_RATE } from "./protocol.js";

const CAPTURE_FRAME_MS = 32; // 512 samples at 16 kHz: one Silero VAD window per frame
const PREBUFFER_MS = 60;

/** A getUserMedia / AudioContext failure explained in plain words. */
export class MicError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

/**
 * Events: "frame" (Int16Array of 16 kHz PCM), "level" {rms, peak},
 * "playback" {type: start|progress|stop, turnId, played, started}, "playing" (boolean),
 * "contextstate" (AudioContext state string).
 */
export class AudioEngine extends EventTarget {
  constructor() {
    super();
    this.context = null;
    this.ready = null; // promise: worklet modules loaded
    this.playback = null;
    this.playbackBacklog = []; // playback commands sent while the worklet modules still load
    this.outputRate = DEFAULT_OUTPUT_RATE;
    this.capture = null;
    this.stream = null;
    this.source = null;
    this.playbackStats = {};
    this.captureFrames = 0;
    this.playing = false;
    this.micId = ""; // chosen microphone ("" = the system default)
    this.speakerId = ""; // chosen output device ("" = the system default)
    this.analyser = null;
  }

  /**
   * Create (first time) and resume the one AudioContext. Call it synchronously from a user gesture
   * handler: the context is created and resume() is called before the first await.
   */
  unlock() {
    if (!this.context) {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) throw new MicError("unsupported", "This browser cannot play audio from the page (no Web Audio).");
      this.context = new Context({ latencyHint: "interactive" });
      if (this.speakerId && AudioEngine.canChooseSpeaker) this.context.setSinkId(this.speakerId).catch(() => {});
      this.context.onstatechange = () => this.emit("contextstate", this.context.state);
      if (!this.context.audioWorklet) {
        throw new MicError(
          "insecure",
          "Audio needs a secure page: open it over https (or on localhost).",
        );
      }
      this.ready = Promise.all([
        this.context.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url)),
        this.context.audioWorklet.addModule(new URL("./playback-worklet.js", import.meta.url)),
      ]).then(() => this.createPlayback());
      this.ready.catch(() => (this.playbackBacklog = null)); // no worklet will come: keep nothing
    }
    if (this.context.state !== "running") this.context.resume().catch(() => {});
    return this.ready;
  }

  get unlocked() {
    return this.context !== null;
  }

  /** The server's output rate changed (a new hello): rebuild the playback node if it differs. */
  setOutputRate(rate) {
    if (!rate || rate === this.outputRate) return;
    this.outputRate = rate;
    if (this.playback) {
      this.playback.disconnect();
      this.playback.port.onmessage = null;
      this.createPlayback();
    }
  }

  createPlayback() {
    const node = new AudioWorkletNode(this.context, "voicechat-playback", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { inputRate: this.outputRate, prebufferMs: PREBUFFER_MS },
    });
    node.port.onmessage = (event) => this.onPlaybackMessage(event.data);
    node.connect(this.context.destination);
    // A tap on the output for the page's visual of the assistant's voice.
    this.analyser ??= Object.assign(this.context.createAnalyser(), { fftSize: 512 });
    node.connect(this.analyser);
    this.playback = node;
    for (const [message, transfer] of this.playbackBacklog.splice(0)) node.port.postMessage(message, transfer);
  }

  /**
   * Send a command to the playback worklet. Between unlock() and the worklet modules loading (a few
   * hundred ms in some engines) the first reply's audio already arrives: keep it, in order, not drop it.
   */
  toPlayback(message, transfer = []) {
    if (this.playback) this.playback.port.postMessage(message, transfer);
    else if (this.context && this.playbackBacklog) this.playbackBacklog.push([message, transfer]);
  }

  /** RMS of the assistant's audio leaving for the speaker right now (0 when silent). */
  outputLevel() {
    if (!this.analyser || !this.playing) return 0;
    this.levelBuffer ??= new Float32Array(this.analyser.fftSize);
    this.analyser.getFloatTimeDomainData(this.levelBuffer);
    let sum = 0;
    for (const s of this.levelBuffer) sum += s * s;
    return Math.sqrt(sum / this.levelBuffer.length);
  }

  /** Whether this browser lets a page choose its audio output (Chromium's AudioContext.setSinkId). */
  static get canChooseSpeaker() {
    const Context = window.AudioContext || window.webkitAudioContext;
    return Boolean(Context && "setSinkId" in Context.prototype);
  }

  /** Play through the output device `deviceId` ("" for the system default); no-op before unlock. */
  async setSpeaker(deviceId) {
    this.speakerId = deviceId;
    if (this.context && AudioEngine.canChooseSpeaker) await this.context.setSinkId(deviceId || "");
  }

  /** The microphones and speakers the browser reports (names appear once the mic is allowed). */
  static async devices() {
    if (!navigator.mediaDevices?.enumerateDevices) return { inputs: [], outputs: [] };
    const all = await navigator.mediaDevices.enumerateDevices();
    const pick = (kind) => all.filter((d) => d.kind === kind && d.deviceId && d.deviceId !== "default");
    return { inputs: pick("audioinput"), outputs: pick("audiooutput") };
  }

  onPlaybackMessage(msg) {
    if (msg.type === "stats") {
      this.playbackStats = msg.stats;
    } else if (msg.type === "playing") {
      this.playing = msg.value;
      this.emit("playing", msg.value);
    } else {
      this.emit("playback", msg);
    }
  }

  /** Open the microphone and start sending frames. Must follow unlock() in the same gesture. */
  async startMic() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new MicError(
        "insecure",
        "This page cannot use the microphone here. Open it over https (or on localhost), or type below.",
      );
    }
    await this.ready;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: true,
          noiseSuppression: true,
          autoGainControl: true,
          channelCount: 1,
          // "ideal", not "exact": a microphone that was unplugged falls back to the default one.
          ...(this.micId ? { deviceId: { ideal: this.micId } } : {}),
        },
      });
    } catch (err) {
      throw explainMicError(err);
    }
    if (this.context.state !== "running") await this.context.resume().catch(() => {});
    this.stream = stream;
    this.source = this.context.createMediaStreamSource(stream);
    this.capture = new AudioWorkletNode(this.context, "voicechat-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { frameMs: CAPTURE_FRAME_MS },
    });
    this.capture.port.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === "frame") {
        this.captureFrames++;
        this.emit("frame", msg.pcm);
      } else if (msg.type === "level") {
        this.emit("level", msg);
      }
    };
    // Some engines only run nodes that reach the destination: connect through a muted gain.
    this.mute = this.context.createGain();
    this.mute.gain.value = 0;
    this.source.connect(this.capture).connect(this.mute).connect(this.context.destination);
    for (const track of stream.getAudioTracks()) {
      track.onended = () => this.emit("micended");
    }
  }

  stopMic() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    for (const node of [this.source, this.capture, this.mute]) node?.disconnect();
    if (this.capture) this.capture.port.onmessage = null;
    this.stream = this.source = this.capture = this.mute = null;
    this.emit("level", { rms: 0, peak: 0 });
  }

  get micOn() {
    return this.stream !== null;
  }

  // --- playback commands (no-ops until the context exists) -------------------------------------
  chunk(turnId, seq, pcm) {
    this.toPlayback({ type: "chunk", turnId, seq, pcm }, [pcm.buffer]);
  }

  endTurn(turnId) {
    this.toPlayback({ type: "end", turnId });
  }

  stopTurn(turnId) {
    this.toPlayback({ type: "stop", turnId });
  }

  /** Hold a turn where it is (tts_pause): silence, its audio kept; resumeTurn plays on from there. */
  pauseTurn(turnId) {
    this.toPlayback({ type: "pause", turnId });
  }

  resumeTurn(turnId) {
    this.toPlayback({ type: "resume", turnId });
  }

  stopAll() {
    this.toPlayback({ type: "stopAll" });
  }

  resetPlayback() {
    this.toPlayback({ type: "reset" });
  }

  stats() {
    return {
      ...this.playbackStats,
      contextRate: this.context?.sampleRate ?? null,
      contextState: this.context?.state ?? "none",
      micOn: this.micOn,
      captureFrames: this.captureFrames,
    };
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function explainMicError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return new MicError(
        "denied",
        "Microphone access is blocked. Allow it in your browser's site settings (the icon beside the address), then press the microphone button again. You can type meanwhile.",
      );
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return new MicError("missing", "No microphone was found. Plug one in and press the microphone button again, or type below.");
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return new MicError(
        "busy",
        "The microphone could not be opened; another app may be using it. Close it and try the microphone button again.",
      );
    default:
      return new MicError("other", `The microphone could not be started (${err?.message || err}).`);
  }
}
