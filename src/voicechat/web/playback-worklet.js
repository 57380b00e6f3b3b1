// Assistant speech playback, on the audio thread. Chunks arrive tagged with their turn id; each turn
// plays in order after a short jitter buffer, resampled from the server's rate (24 kHz) to the device
// rate with one continuous resampler per turn, so chunk boundaries are seamless. A stopped turn is
// dropped at once, with a one-block fade so the cut does not click. A held turn (the server's tts_pause,
// when the user starts talking over it) fades out the same way but keeps its audio and its place, and
// plays on, fading in, when resumed. The page is told when a turn starts, how far it has got (about
// every 250 ms) and when it stops, in server-rate samples.

import { Resampler, int16ToFloat } from "./resampler.js";

const PROGRESS_INTERVAL_S = 0.25;
const STATS_INTERVAL_S = 0.1;
const FEED_SLICE = 256; // input samples handed to the resampler at a time
const STOPPED_MEMORY = 256; // how many stopped turn ids are remembered (late chunks are dropped)

class Turn {
  constructor(id) {
    this.id = id;
    this.chunks = []; // Float32Array, oldest first
    this.head = 0; // read offset into chunks[0]
    this.queued = 0; // input samples not yet fed to the resampler
    this.received = 0;
    this.output = 0; // device-rate samples sent to the speaker
    this.ended = false; // no more audio will come (tts_end, or a newer turn began)
    this.flushed = false;
    this.started = false;
    this.playing = false; // false while buffering, at the start or after an underrun
    this.stopping = false;
    this.silenced = false; // held (tts_pause) and faded out
    this.fadeIn = false;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options?.processorOptions ?? {};
    this.inRate = opts.inputRate ?? 24000;
    this.prebuffer = Math.round((this.inRate * (opts.prebufferMs ?? 60)) / 1000);
    this.toInput = this.inRate / sampleRate; // input samples per device sample
    this.resampler = new Resampler(this.inRate, sampleRate);
    this.fifo = new Float32Array(8192); // resampled, device-rate samples waiting for the speaker
    this.fifoLength = 0;
    this.turns = [];
    this.stopped = new Set();
    this.stoppedOrder = [];
    this.progressEvery = Math.round(sampleRate * PROGRESS_INTERVAL_S);
    this.statsEvery = Math.round(sampleRate * STATS_INTERVAL_S);
    this.sinceStats = 0;
    this.statsDirty = false;
    this.playingFlag = false;
    this.held = null; // the turn id on hold (tts_pause), or null
    this.playedBefore = 0; // server-rate samples played of the turns already finished
    this.stats = {
      chunksReceived: 0,
      chunksDropped: 0,
      samplesReceived: 0,
      turnsStarted: 0,
      turnsCompleted: 0,
      turnsDropped: 0,
      underruns: 0,
    };
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    switch (msg.type) {
      case "chunk":
        return this.addChunk(msg.turnId, msg.pcm);
      case "end": {
        const turn = this.find(msg.turnId);
        if (turn) turn.ended = true;
        return;
      }
      case "stop":
        return this.stop(msg.turnId);
      case "pause":
        this.held = msg.turnId;
        return;
      case "resume":
        if (this.held === msg.turnId) this.held = null;
        return;
      case "stopAll":
        for (const turn of [...this.turns]) this.stop(turn.id);
        return;
      case "reset": // a new session: old turn ids mean nothing any more
        for (const turn of this.turns) this.playedBefore += this.played(turn);
        this.turns = [];
        this.stopped.clear();
        this.stoppedOrder = [];
        this.resampler.reset();
        this.fifoLength = 0;
        this.held = null;
        this.setPlaying(false);
        return this.postStats();
      case "stats": // an asked-for report carries the asker's id: it answers that request, not an older one
        return this.postStats(msg.id);
    }
  }

  addChunk(turnId, pcm) {
    if (this.stopped.has(turnId)) {
      this.stats.chunksDropped++;
      this.statsDirty = true;
      return;
    }
    let turn = this.find(turnId);
    if (!turn) {
      // A newer turn means the older ones have all their audio, even if their tts_end was lost.
      for (const older of this.turns) older.ended = true;
      turn = new Turn(turnId);
      this.turns.push(turn);
    }
    const samples = int16ToFloat(pcm);
    if (samples.length === 0) return;
    this.statsDirty = true;
    turn.chunks.push(samples);
    turn.queued += samples.length;
    turn.received += samples.length;
    this.stats.chunksReceived++;
    this.stats.samplesReceived += samples.length;
  }

  stop(turnId) {
    this.rememberStopped(turnId);
    const turn = this.find(turnId);
    if (!turn) return;
    if (turn === this.turns[0] && turn.playing) {
      turn.stopping = true; // faded out in the next block, within ~3 ms
    } else {
      this.finish(turn, "stopped");
    }
  }

  rememberStopped(turnId) {
    if (this.stopped.has(turnId)) return;
    this.stopped.add(turnId);
    this.stoppedOrder.push(turnId);
    if (this.stoppedOrder.length > STOPPED_MEMORY) this.stopped.delete(this.stoppedOrder.shift());
  }

  find(turnId) {
    return this.turns.find((turn) => turn.id === turnId);
  }

  played(turn) {
    return Math.min(turn.received, Math.round(turn.output * this.toInput));
  }

  finish(turn, reason) {
    const index = this.turns.indexOf(turn);
    if (index < 0) return;
    this.turns.splice(index, 1);
    if (index === 0) {
      this.resampler.reset();
      this.fifoLength = 0;
    }
    const done = reason === "done";
    if (this.held === turn.id) this.held = null;
    if (done) this.stats.turnsCompleted++;
    else if (turn.received > 0) this.stats.turnsDropped++;
    const played = done ? turn.received : this.played(turn);
    this.playedBefore += played;
    this.port.postMessage({ type: "stop", turnId: turn.id, reason, started: turn.started, played });
    if (this.turns.length === 0 || !this.turns[0].playing) this.setPlaying(false);
    this.postStats();
  }

  setPlaying(value) {
    if (value === this.playingFlag) return;
    this.playingFlag = value;
    this.port.postMessage({ type: "playing", value });
  }

  /** Fill the device-rate FIFO from the turn's input until it holds `need` samples (or input ends). */
  fill(turn, need) {
    while (this.fifoLength < need) {
      if (turn.queued > 0) {
        const chunk = turn.chunks[0];
        const take = Math.min(FEED_SLICE, chunk.length - turn.head);
        this.ensureRoom(this.resampler.maxOutput(take));
        this.fifoLength += this.resampler.process(
          chunk.subarray(turn.head, turn.head + take),
          this.fifo,
          this.fifoLength,
        );
        turn.head += take;
        turn.queued -= take;
        if (turn.head === chunk.length) {
          turn.chunks.shift();
          turn.head = 0;
        }
      } else if (turn.ended && !turn.flushed) {
        this.ensureRoom(this.resampler.maxOutput(this.resampler.lead + 1));
        this.fifoLength += this.resampler.flush(this.fifo, this.fifoLength);
        turn.flushed = true;
      } else {
        return;
      }
    }
  }

  ensureRoom(extra) {
    if (this.fifoLength + extra <= this.fifo.length) return;
    const bigger = new Float32Array((this.fifoLength + extra) * 2);
    bigger.set(this.fifo.subarray(0, this.fifoLength));
    this.fifo = bigger;
  }

  /** Move up to out.length samples from the FIFO to `out`; returns how many. */
  drain(out) {
    const n = Math.min(out.length, this.fifoLength);
    out.set(this.fifo.subarray(0, n));
    this.fifo.copyWithin(0, n, this.fifoLength);
    this.fifoLength -= n;
    return n;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    out.fill(0);
    this.step(out);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceStats += out.length;
    if (this.sinceStats >= this.statsEvery && (this.turns.length > 0 || this.statsDirty)) this.postStats();
    return true;
  }

  step(out) {
    const turn = this.turns[0];
    if (!turn) return;
    const size = out.length;

    if (turn.stopping && turn.silenced) {
      this.finish(turn, "stopped"); // held and already faded out: nothing more to hear
      return;
    }
    if (turn.stopping) {
      this.fill(turn, size);
      const n = this.drain(out);
      for (let i = 0; i < n; i++) out[i] *= 1 - (i + 1) / n;
      turn.output += n;
      this.finish(turn, "stopped");
      return;
    }

    if (this.held === turn.id) {
      // On hold: fade out over one block (as a stop does), then silence that keeps the turn's place.
      if (turn.playing && !turn.silenced) {
        this.fill(turn, size);
        const n = this.drain(out);
        for (let i = 0; i < n; i++) out[i] *= 1 - (i + 1) / n;
        turn.output += n;
      }
      turn.silenced = true;
      this.setPlaying(false);
      return;
    }
    if (turn.silenced) {
      turn.silenced = false; // resumed: fade back in where it stopped
      turn.fadeIn = true;
      if (turn.playing) this.setPlaying(true);
    }

    if (!turn.playing) {
      if (turn.queued < this.prebuffer && !turn.ended) return; // still buffering
      turn.playing = true;
      turn.fadeIn = true;
      if (!turn.started) {
        turn.started = true;
        turn.lastProgress = 0;
        this.stats.turnsStarted++;
        this.port.postMessage({ type: "start", turnId: turn.id });
      }
      this.setPlaying(true);
    }

    this.fill(turn, size);
    const n = this.drain(out);
    if (turn.fadeIn) {
      const ramp = Math.min(n, size);
      for (let i = 0; i < ramp; i++) out[i] *= (i + 1) / ramp;
      turn.fadeIn = false;
    }
    turn.output += n;

    if (n < size) {
      if (turn.ended && turn.queued === 0 && turn.flushed) {
        this.finish(turn, "done");
        return;
      }
      // Underrun: the network or the generator is behind. Fade out what we have and buffer again.
      for (let i = 0; i < n; i++) out[i] *= 1 - (i + 1) / n;
      turn.playing = false;
      this.stats.underruns++;
      this.setPlaying(false);
    }

    if (turn.output - turn.lastProgress >= this.progressEvery) {
      turn.lastProgress = turn.output;
      this.port.postMessage({ type: "progress", turnId: turn.id, played: this.played(turn) });
    }
  }

  postStats(id) {
    this.sinceStats = 0;
    this.statsDirty = false;
    const current = this.turns[0];
    let queued = 0;
    for (const turn of this.turns) queued += turn.queued;
    this.port.postMessage({
      type: "stats",
      id,
      stats: {
        ...this.stats,
        samplesPlayed: this.playedBefore + (current ? this.played(current) : 0), // server-rate samples
        playing: this.playingFlag,
        currentTurn: current ? current.id : null,
        queuedMs: Math.round((queued / this.inRate) * 1000),
        turnsQueued: this.turns.length,
      },
    });
  }
}

registerProcessor("voicechat-playback", PlaybackProcessor);
