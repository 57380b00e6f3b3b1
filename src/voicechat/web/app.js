// The page: wires the connection, the audio and the transcript to the controls.

import { AudioEngine } from "./audio.js";
import { apiHeaders, Connection } from "./connection.js";
import { encodeAudioFrame, FLAG_PLAYING } from "./protocol.js";
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const SETTING_DEBOUNCE_MS = 200;
const LOG_LIMIT = 300;
const MAX_VOICE_BYTES = 10 * 1024 * 1024;

const STATE_LABELS = {
  connecting: "Connecting…",
  loading: "Starting up…",
  reconnecting: "Reconnecting…",
  ready: "Ready",
  listening: "Listening",
  hearing: "Hearing you",
  thinking: "Thinking…",
  speaking: "Speaking",
  interrupted: "Interrupted",
  error: "Error",
};

const connection = new Connection(socketUrl());
const audio = new AudioEngine();
const transcript = new Transcript($("transcript"), $("empty"));

const page = {
  serverState: "connecting",
  connection: "connecting",
  errorUntil: 0,
  interruptedUntil: 0,
  sessionId: null,
  settings: {}, // the server's view
  chosen: {}, // what the user changed here: sent again after a reconnect
  voices: ["default"],
  stoppedTurns: new Set(), // turns dropped here; their late audio is ignored
  lastTurn: -1, // highest turn id seen in this session
  clearedUpTo: -1, // turns up to this id were wiped by Reset: late messages about them are ignored
  framesSent: 0,
  bytesSent: 0,
  audioWithoutContext: 0,
  sent: [],
  received: [],
};

// --- connection ---------------------------------------------------------------------------------

connection.addEventListener("state", ({ detail }) => {
  page.connection = detail.state;
  if (detail.state === "reconnecting") {
    page.serverState = "connecting";
    audio.resetPlayback(); // turn ids of the old session mean nothing to the next one
    page.stoppedTurns.clear();
    transcript.pruneWaiting();
    const seconds = Math.max(1, Math.round(detail.delayMs / 1000));
    const why = detail.code === 1013 ? "The server is busy." : "The connection to the server was lost.";
    showBanner(`${why} Reconnecting in ${seconds} s… Your conversation stays on screen.`, "warn", true);
  }
  render();
});

connection.addEventListener("hello", ({ detail: hello }) => {
  const resumed = page.sessionId !== null;
  page.sessionId = hello.session_id ?? null;
  audio.setOutputRate(hello.output_sample_rate);
  audio.resetPlayback();
  page.stoppedTurns.clear();
  page.lastTurn = page.clearedUpTo = -1;
  page.serverState = "listening";
  setVoices(hello.voices);
  applySettings(hello.settings);
  // Settings chosen on this page outlive a reconnect (the server starts a fresh session).
  const { speed, ...rest } = page.chosen;
  if (Object.keys(rest).length > 0) send({ type: "set_settings", settings: rest });
  if (speed !== undefined) send({ type: "set_speed", content: speed });
  hideBanner("warn");
  transcript.newSession();
  if (resumed) {
    transcript.note("Reconnected. The assistant starts a fresh memory from here.");
    toast("Reconnected");
  }
  $("session-info").textContent = page.sessionId ? `Session ${String(page.sessionId).slice(0, 8)}` : "";
  render();
});

connection.addEventListener("message", ({ detail: msg }) => {
  log(page.received, msg);
  if (typeof msg.turn_id === "number") {
    if (msg.turn_id <= page.clearedUpTo && msg.type !== "stop_tts") return;
    page.lastTurn = Math.max(page.lastTurn, msg.turn_id);
  }
  switch (msg.type) {
    case "status":
      page.serverState = msg.state; // "loading" comes before hello while the server loads its models
      if (msg.state === "interrupted") page.interruptedUntil = performance.now() + 1200;
      if (msg.state === "listening") {
        transcript.pruneWaiting();
        transcript.dropLiveUser();
      }
      break;
    case "partial_user_request":
      transcript.userPartial(msg.content);
      break;
    case "final_user_request":
      transcript.userFinal(msg.content, msg.turn_id);
      break;
    case "partial_assistant_answer":
      if (!page.stoppedTurns.has(msg.turn_id)) transcript.assistantPartial(msg.turn_id, msg.content);
      break;
    case "final_assistant_answer":
      transcript.assistantFinal(msg.turn_id, msg.content, Boolean(msg.interrupted));
      break;
    case "tts_end":
      audio.endTurn(msg.turn_id);
      break;
    case "stop_tts":
      stopTurn(msg.turn_id);
      break;
    case "tts_interruption":
      stopTurn(msg.turn_id);
      transcript.markInterrupted(msg.turn_id);
      page.interruptedUntil = performance.now() + 1200;
      break;
    case "turn_metrics":
      transcript.metrics(msg.turn_id, msg);
      break;
    case "settings":
      applySettings(msg.settings);
      break;
    case "history_cleared":
      break; // the page cleared itself when the user asked
    case "error":
      showServerError(msg);
      break;
  }
  render();
});

connection.addEventListener("audio", ({ detail: frame }) => {
  if (page.stoppedTurns.has(frame.turnId)) return;
  if (!audio.unlocked) {
    // Browsers only allow sound after a tap or key press on the page.
    if (page.audioWithoutContext++ === 0) {
      showBanner("Tap or click anywhere on the page to hear the assistant.", "info", false);
    }
    return;
  }
  audio.chunk(frame.turnId, frame.seq, frame.pcm);
});

function send(message) {
  const ok = connection.send(message);
  if (ok) log(page.sent, message);
  return ok;
}

function stopTurn(turnId) {
  page.stoppedTurns.add(turnId);
  if (page.stoppedTurns.size > 512) page.stoppedTurns.delete(page.stoppedTurns.values().next().value);
  audio.stopTurn(turnId);
}

function showServerError(msg) {
  const text = msg.message || `The server reported a problem (${msg.code}).`;
  page.errorUntil = performance.now() + 4000;
  transcript.pruneWaiting();
  if (msg.code === "unknown_voice" || msg.code === "bad_setting") {
    toast(text);
  } else if (msg.fatal || msg.code === "server_full") {
    showBanner(text, "error", false);
  } else if (!["bad_audio_header", "frame_too_large", "rate_limited"].includes(msg.code)) {
    transcript.note(text, "error");
  }
}

// --- audio ----------------------------------------------------------------------------------------

audio.addEventListener("frame", ({ detail: pcm }) => {
  if (!connection.ready) return;
  const frame = encodeAudioFrame(pcm, audio.playing ? FLAG_PLAYING : 0);
  if (connection.sendBinary(frame)) {
    page.framesSent++;
    page.bytesSent += frame.byteLength;
  }
});

let levelFrame = 0;
let latestLevel = 0;
audio.addEventListener("level", ({ detail }) => {
  // RMS in dBFS, -60..-6 dB mapped onto 0..1.
  const db = 20 * Math.log10(Math.max(detail.rms, 1e-6));
  latestLevel = Math.min(1, Math.max(0, (db + 60) / 54));
  if (!levelFrame) levelFrame = requestAnimationFrame(drawLevel);
});

function drawLevel() {
  levelFrame = 0;
  const level = audio.micOn ? latestLevel : 0;
  document.documentElement.style.setProperty("--level", level.toFixed(3));
  const meter = $("level");
  meter.setAttribute("aria-valuenow", String(Math.round(level * 100)));
  meter.querySelectorAll("span").forEach((bar, i) => bar.classList.toggle("on", level > i / 5 + 0.04));
}

audio.addEventListener("playback", ({ detail: event }) => {
  if (event.type === "start") {
    send({ type: "tts_start", turn_id: event.turnId });
    transcript.markSpeaking(event.turnId, true);
  } else if (event.type === "progress") {
    send({ type: "playback", turn_id: event.turnId, played_samples: event.played });
  } else if (event.type === "stop") {
    if (event.started) send({ type: "tts_stop", turn_id: event.turnId, played_samples: event.played });
    transcript.markSpeaking(event.turnId, false);
  }
  render();
});

audio.addEventListener("playing", render);
audio.addEventListener("micended", () => {
  stopMic();
  showBanner("The microphone was disconnected. Press the microphone button to use it again.", "warn", false);
});

/** First tap or key press anywhere: make the page able to play sound (iOS Safari rules). */
let audioUnavailable = false;
function unlockAudio() {
  try {
    return audio.unlock();
  } catch (err) {
    audioUnavailable = true;
    showBanner(err.message, "error", false);
    return null;
  }
}

for (const type of ["pointerdown", "keydown"]) {
  document.addEventListener(type, () => {
    if (!audioUnavailable && (!audio.unlocked || audio.context.state !== "running")) unlockAudio();
    if (page.audioWithoutContext > 0) {
      page.audioWithoutContext = 0;
      hideBanner("info");
    }
  }, { capture: true });
}

// --- microphone button ---------------------------------------------------------------------------

let micStarting = false;
$("mic").addEventListener("click", async () => {
  if (audio.micOn) {
    stopMic();
    interruptReply();
    return;
  }
  if (micStarting) return;
  micStarting = true;
  render();
  try {
    if (!unlockAudio()) return;
    await audio.startMic();
    hideBanner("mic");
  } catch (err) {
    showBanner(err.message || String(err), "mic", false);
    $("text").focus();
  } finally {
    micStarting = false;
    render();
  }
});

function stopMic() {
  audio.stopMic();
  render();
}

$("interrupt").addEventListener("click", interruptReply);

function interruptReply() {
  if (!isAssistantActive()) return;
  send({ type: "interrupt" });
  audio.stopAll();
}

function isAssistantActive() {
  if (!connection.ready) return false;
  return audio.playing || page.serverState === "thinking" || page.serverState === "speaking";
}

// --- typing ---------------------------------------------------------------------------------------

const textBox = $("text");
textBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
textBox.addEventListener("input", autosize);

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textBox.value.trim();
  if (!text) return;
  unlockAudio();
  if (!send({ type: "text_message", content: text })) {
    toast("Not connected yet: your message was kept. Send it again when the status says Ready.");
    return;
  }
  transcript.userTyped(text);
  textBox.value = "";
  autosize();
});

function autosize() {
  textBox.style.height = "auto";
  textBox.style.height = `${Math.min(textBox.scrollHeight, 160)}px`;
}

// --- reset and copy -------------------------------------------------------------------------------

$("reset").addEventListener("click", () => {
  send({ type: "clear_history" });
  audio.stopAll();
  page.clearedUpTo = page.lastTurn;
  transcript.clear();
  toast("Conversation cleared");
});

$("copy").addEventListener("click", async () => {
  const text = transcript.toText();
  if (!text) {
    toast("Nothing to copy yet");
    return;
  }
  if (await copyText(text)) {
    toast("Conversation copied");
  } else {
    const dialog = $("copy-dialog");
    $("copy-text").value = text;
    dialog.showModal();
    $("copy-text").select();
  }
});

async function copyText(text) {
  try {
    if (navigator.clipboard?.writeText) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // denied or unavailable: fall through to the old way
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

// --- settings -------------------------------------------------------------------------------------

const speed = $("speed");
speed.addEventListener("input", () => {
  $("speed-value").textContent = speed.value;
  page.chosen.speed = Number(speed.value);
  debounce("speed", () => send({ type: "set_speed", content: Number(speed.value) }));
});

for (const input of document.querySelectorAll("input[data-setting]")) {
  input.addEventListener("input", () => {
    const name = input.dataset.setting;
    const value = Number(input.value);
    $(`${name}-value`).textContent = value.toFixed(2);
    page.chosen[name] = value;
    debounce(name, () => send({ type: "set_settings", settings: { [name]: value } }));
  });
}

$("voice").addEventListener("change", () => chooseVoice($("voice").value));

function chooseVoice(voice) {
  page.chosen.voice = voice;
  send({ type: "set_settings", settings: { voice } });
}

function applySettings(settings) {
  if (!settings || typeof settings !== "object") return;
  page.settings = { ...page.settings, ...settings };
  const active = document.activeElement;
  if (typeof settings.speed === "number" && active !== speed) {
    speed.value = String(settings.speed);
    $("speed-value").textContent = String(settings.speed);
  }
  for (const input of document.querySelectorAll("input[data-setting]")) {
    const value = settings[input.dataset.setting];
    if (typeof value !== "number" || active === input) continue;
    input.value = String(value);
    $(`${input.dataset.setting}-value`).textContent = value.toFixed(2);
  }
  if (typeof settings.voice === "string") {
    if (!page.voices.includes(settings.voice)) setVoices([...page.voices, settings.voice]);
    $("voice").value = settings.voice;
  }
}

function setVoices(voices) {
  if (!Array.isArray(voices) || voices.length === 0) return;
  page.voices = voices.map(String);
  const select = $("voice");
  const current = page.settings.voice ?? select.value;
  select.replaceChildren(
    ...page.voices.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name === "default" ? "Default voice" : name;
      return option;
    }),
  );
  if (page.voices.includes(current)) select.value = current;
}

async function refreshVoices() {
  const response = await fetch(apiUrl("api/voices"), { cache: "no-store", headers: apiHeaders() });
  if (!response.ok) throw new Error(`the voice list could not be loaded (HTTP ${response.status})`);
  const body = await response.json();
  setVoices(body.voices);
}

const timers = new Map();
function debounce(key, fn) {
  clearTimeout(timers.get(key));
  timers.set(key, setTimeout(fn, SETTING_DEBOUNCE_MS));
}

// --- voice upload ---------------------------------------------------------------------------------

$("voice-file").addEventListener("change", () => {
  const file = $("voice-file").files[0];
  if (file && !$("voice-name").value) $("voice-name").value = voiceNameFrom(file.name);
});

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = $("upload-status");
  const file = $("voice-file").files[0];
  const name = voiceNameFrom($("voice-name").value || file?.name || "");
  status.classList.remove("error");
  if (!file) return uploadProblem("Choose a WAV file first.");
  if (file.size > MAX_VOICE_BYTES) return uploadProblem("That file is over 10 MB; use a shorter recording.");
  if (!name) return uploadProblem("Give the voice a name (letters, digits, - or _).");
  status.textContent = `Uploading “${name}”…`;
  $("upload-button").disabled = true;
  try {
    const response = await fetch(apiUrl(`api/voices?name=${encodeURIComponent(name)}`), {
      method: "POST",
      headers: apiHeaders({ "Content-Type": "audio/wav" }),
      body: file,
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      return uploadProblem(body.message || `The server refused the file (HTTP ${response.status}).`);
    }
    const voice = body.voice || name;
    await refreshVoices().catch(() => setVoices([...page.voices, voice]));
    $("voice").value = voice;
    chooseVoice(voice);
    status.textContent = `Voice “${voice}” added and selected.`;
    $("upload-form").reset();
  } catch (err) {
    uploadProblem(`The upload failed: ${err.message || err}`);
  } finally {
    $("upload-button").disabled = false;
  }
});

function uploadProblem(text) {
  const status = $("upload-status");
  status.textContent = text;
  status.classList.add("error");
}

function voiceNameFrom(text) {
  return text
    .replace(/\.[a-z0-9]+$/i, "")
    .trim()
    .replace(/\s+/g, "-")
    .replace(/[^A-Za-z0-9_-]/g, "")
    .replace(/^[-_]+/, "") // the server wants a letter or digit first
    .slice(0, 40);
}

// --- settings panel (a side column on wide screens, a sheet on phones) ----------------------------

const panel = $("settings");
const toggle = $("settings-toggle");
toggle.addEventListener("click", () => setPanel(!document.body.classList.contains("panel-open")));
$("settings-close").addEventListener("click", () => setPanel(false));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("panel-open")) {
    setPanel(false);
    toggle.focus();
  }
});

function setPanel(open) {
  document.body.classList.toggle("panel-open", open);
  toggle.setAttribute("aria-expanded", String(open));
  if (open) panel.querySelector("select, input, button")?.focus();
}

// --- banner and toast -----------------------------------------------------------------------------

let bannerKind = null;
function showBanner(text, kind, retry) {
  bannerKind = kind;
  $("banner").dataset.kind = kind;
  $("banner-text").textContent = text;
  $("banner-action").hidden = !retry;
  $("banner").hidden = false;
}

function hideBanner(kind) {
  if (kind && bannerKind !== kind) return;
  $("banner").hidden = true;
  bannerKind = null;
}

$("banner-close").addEventListener("click", () => hideBanner());
$("banner-action").addEventListener("click", () => connection.retryNow());

let toastTimer = 0;
function toast(text) {
  const element = $("toast");
  element.textContent = text;
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    element.hidden = true;
  }, 2600);
}

// --- the state indicator --------------------------------------------------------------------------

function effectiveState() {
  if (page.connection !== "open") {
    if (page.connection === "reconnecting") return "reconnecting";
    return page.serverState === "loading" ? "loading" : "connecting";
  }
  const now = performance.now();
  if (now < page.errorUntil) return "error";
  if (now < page.interruptedUntil) return "interrupted";
  if (audio.playing) return "speaking";
  const state = page.serverState;
  if (state === "listening" && !audio.micOn) return "ready";
  return STATE_LABELS[state] ? state : "listening";
}

let renderTimer = 0;
function render() {
  const state = effectiveState();
  const status = $("status");
  status.dataset.state = state;
  $("status-text").textContent = STATE_LABELS[state];
  document.body.dataset.state = state;

  const mic = $("mic");
  mic.setAttribute("aria-pressed", String(audio.micOn));
  mic.classList.toggle("on", audio.micOn);
  mic.disabled = micStarting;
  $("mic-label").textContent = micStarting ? "Starting…" : audio.micOn ? "Stop" : "Start";
  mic.setAttribute("aria-label", audio.micOn ? "Stop the microphone" : "Start talking");

  $("interrupt").hidden = !isAssistantActive();
  $("send").disabled = !connection.ready;
  // Transient states (interrupted, error) end by themselves: look again when they do.
  clearTimeout(renderTimer);
  const until = Math.max(page.errorUntil, page.interruptedUntil) - performance.now();
  if (until > 0) renderTimer = setTimeout(render, until + 20);
}

// --- for tests and the curious: window.voicechat --------------------------------------------------

function log(list, message) {
  list.push(message);
  if (list.length > LOG_LIMIT) list.shift();
}

window.voicechat = {
  /** Counters of the audio paths and the connection (playback counters are in server-rate samples). */
  stats: () => ({
    ...audio.stats(),
    framesSent: page.framesSent,
    bytesSent: page.bytesSent,
    framesDropped: connection.framesDropped,
    connected: connection.ready,
    reconnects: connection.reconnects,
    sessionId: page.sessionId,
    state: effectiveState(),
    serverState: page.serverState,
    messages: transcript.messageCount,
  }),
  /** Ask the playback worklet for fresh counters (they otherwise arrive every ~100 ms). */
  refreshStats: () => audio.playback?.port.postMessage({ type: "stats" }),
  settings: () => ({ ...page.settings }),
  transcript: () => transcript.toText(),
  sent: () => [...page.sent],
  received: () => [...page.received],
};

// --- start ----------------------------------------------------------------------------------------

function socketUrl() {
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  return url.href;
}

function apiUrl(path) {
  return new URL(path, window.location.href).href;
}

window.addEventListener("online", () => connection.retryNow());
render();
connection.start();
