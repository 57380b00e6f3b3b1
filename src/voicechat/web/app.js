// The page: wires the connection, the audio and the transcript to the controls.

import { AudioEngine } from "./audio.js";
import { apiHeaders, Connection } from "./connection.js";
import { plainError, uploadProblemText } from "./messages.js";
import { encodeAudioFrame, FLAG_PLAYING } from "./protocol.js";
import { loadPrefs, savePrefs } from "./prefs.js";
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const SETTING_DEBOUNCE_MS = 200;
const LOG_LIMIT = 300;

const STATE_LABELS = {
  connecting: "Connecting…",
  loading: "Starting up…",
  reconnecting: "Reconnecting…",
  ready: "Mic off",
  listening: "Listening",
  hearing: "Hearing you",
  thinking: "Thinking…",
  speaking: "Speaking",
  interrupted: "Interrupted",
  error: "Error",
};
// What the live region says when the state changes (the busy in-between states are left out).
const ANNOUNCE = {
  loading: "The server is starting up.",
  reconnecting: "Connection lost; reconnecting.",
  ready: "Connected. Microphone off.",
  listening: "Listening.",
  interrupted: "Reply stopped.",
};

const connection = new Connection(socketUrl());
const audio = new AudioEngine();
const transcript = new Transcript($("transcript"), $("empty"));
const prefs = loadPrefs(); // {chosen: {...server settings}, speak, micId, speakerId}

const page = {
  serverState: "connecting",
  connection: "connecting",
  errorUntil: 0,
  interruptedUntil: 0,
  sessionId: null,
  settings: {}, // the server's view
  chosen: { ...prefs.chosen }, // what the user changed here: kept in the browser, sent after every hello
  speak: prefs.speak, // false: text-only mode, the replies are not played
  voices: ["default"],
  limits: null, // the server's voice upload limits (GET /api/voices)
  loading: [], // the server's model loading progress
  stoppedTurns: new Set(), // turns dropped here; their late audio is ignored
  lastTurn: -1, // highest turn id seen in this session
  clearedUpTo: -1, // turns up to this id were wiped by Reset: late messages about them are ignored
  userText: new Map(), // turn id -> the user's words, for Retry
  outbox: [], // messages typed while offline: {text, item}, sent after the reconnect
  reconnectAt: 0,
  framesSent: 0,
  bytesSent: 0,
  audioWithoutContext: 0,
  sent: [],
  received: [],
};
audio.micId = prefs.micId;
audio.speakerId = prefs.speakerId;

// --- connection ---------------------------------------------------------------------------------

connection.addEventListener("state", ({ detail }) => {
  page.connection = detail.state;
  if (detail.state === "reconnecting") {
    page.serverState = "connecting";
    audio.resetPlayback(); // turn ids of the old session mean nothing to the next one
    page.stoppedTurns.clear();
    transcript.pruneWaiting();
    page.reconnectAt = performance.now() + detail.delayMs;
    page.reconnectWhy = detail.code === 1013 ? "The server is busy." : "The connection to the server was lost.";
    showReconnectBanner();
  }
  render();
});

/** "Reconnecting in N s", counting down each second until the socket opens again. */
let countdownTimer = 0;
function showReconnectBanner() {
  clearTimeout(countdownTimer);
  if (page.connection === "open") return hideBanner("connection");
  const seconds = Math.ceil((page.reconnectAt - performance.now()) / 1000);
  const when = seconds > 0 ? `Reconnecting in ${seconds} s…` : "Reconnecting…";
  const kept = page.outbox.length ? " Your unsent message goes out once it is back." : " Your conversation stays on screen.";
  showBanner(`${page.reconnectWhy} ${when}${kept}`, "connection", true);
  if (seconds > 0) countdownTimer = setTimeout(showReconnectBanner, ((page.reconnectAt - performance.now()) % 1000) + 20);
}

connection.addEventListener("hello", ({ detail: hello }) => {
  const resumed = page.sessionId !== null;
  page.sessionId = hello.session_id ?? null;
  audio.setOutputRate(hello.output_sample_rate);
  audio.resetPlayback();
  page.stoppedTurns.clear();
  page.userText.clear();
  page.lastTurn = page.clearedUpTo = -1;
  page.serverState = "listening";
  page.loading = [];
  setVoices(hello.voices);
  applySettings(hello.settings);
  // Settings chosen on this page outlive a reconnect and a reload (the server starts a fresh session).
  const { speed, ...rest } = page.chosen;
  if (Object.keys(rest).length > 0) send({ type: "set_settings", settings: rest });
  if (speed !== undefined) send({ type: "set_speed", content: speed });
  clearTimeout(countdownTimer);
  hideBanner("connection");
  transcript.newSession();
  if (resumed) {
    transcript.note(hello.resumed ? "Reconnected. The conversation goes on." : "Reconnected. The assistant starts a fresh memory from here.");
    toast("Reconnected");
  }
  // Messages typed while offline go out now, in order.
  for (const { text, item } of page.outbox.splice(0)) {
    if (send({ type: "text_message", content: text })) transcript.queuedSent(item, text);
  }
  $("session-info").textContent = page.sessionId ? `Session ${String(page.sessionId).slice(0, 8)}` : "";
  refreshVoices().catch(() => {}); // the upload limits, and voices added by others
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
    case "loading":
      page.serverState = "loading";
      page.loading = Array.isArray(msg.models) ? msg.models : [];
      break;
    case "partial_user_request":
      transcript.userPartial(msg.content);
      break;
    case "final_user_request":
      page.userText.set(msg.turn_id, msg.content);
      transcript.userFinal(msg.content, msg.turn_id);
      break;
    case "partial_assistant_answer":
      if (!page.stoppedTurns.has(msg.turn_id)) transcript.assistantPartial(msg.turn_id, msg.content);
      break;
    case "final_assistant_answer":
      transcript.assistantFinal(msg.turn_id, msg.content, Boolean(msg.interrupted), !page.speak);
      if (!msg.interrupted && msg.content) announce(`Assistant: ${msg.content}`);
      break;
    case "tts_end":
      audio.endTurn(msg.turn_id);
      break;
    case "stop_tts":
      stopTurn(msg.turn_id);
      break;
    case "tts_interruption":
      stopTurn(msg.turn_id);
      page.interruptedUntil = performance.now() + 1200;
      break;
    case "tts_pause": // voice started over the assistant: hold it until words decide
      audio.pauseTurn(msg.turn_id);
      break;
    case "tts_resume": // it was a cough or a backchannel: play on
      audio.resumeTurn(msg.turn_id);
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
  if (page.stoppedTurns.has(frame.turnId) || !page.speak) return;
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

/** Errors in plain words (messages.js): what happened and what the user can do, never internals. */
function showServerError(msg) {
  const { text, kind } = plainError(msg);
  page.errorUntil = performance.now() + 4000;
  if (kind === "toast") return toast(text);
  if (kind === "banner") return showBanner(text, "error", false);
  if (kind === "turn") {
    const turnId = transcript.activeTurn;
    const words = page.userText.get(turnId);
    if (turnId !== null) {
      transcript.markFailed(turnId, text, words ? () => retry(words) : null);
      announce(text);
      return;
    }
  }
  transcript.pruneWaiting();
  // A reply that failed before its first word has no bubble: the note offers Retry of the newest words.
  const newest = kind === "turn" ? [...page.userText.values()].pop() : undefined;
  transcript.note(text, "error", newest ? () => retry(newest) : null);
  announce(text);
}

function retry(words) {
  if (!send({ type: "text_message", content: words })) return toast("Not connected: try again once the page is back.");
  unlockAudio();
  transcript.userTyped(words);
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

// The voices visual: the user's level (from the capture worklet) and the assistant's (an analyser on
// the output), drawn once per animation frame while either is live.
let micLevel = 0;
audio.addEventListener("level", ({ detail }) => {
  micLevel = toUnit(detail.rms);
  wakeVisual();
});

let visualFrame = 0;
function wakeVisual() {
  if (!visualFrame) visualFrame = requestAnimationFrame(drawVisual);
}

function drawVisual() {
  visualFrame = 0;
  const you = audio.micOn ? micLevel : 0;
  const assistant = toUnit(audio.outputLevel());
  const root = document.documentElement.style;
  root.setProperty("--you", you.toFixed(3));
  root.setProperty("--assistant", assistant.toFixed(3));
  if (audio.playing) wakeVisual(); // the analyser has no events: poll it while the reply plays
}

/** RMS in dBFS, -60..-6 dB mapped onto 0..1. */
function toUnit(rms) {
  const db = 20 * Math.log10(Math.max(rms, 1e-6));
  return Math.min(1, Math.max(0, (db + 60) / 54));
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

audio.addEventListener("playing", () => {
  wakeVisual();
  render();
});
audio.addEventListener("micended", () => {
  stopMic();
  showBanner("The microphone was disconnected. Press the microphone button to use it again.", "mic", false);
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

// --- microphone: on and muted are two looks of one button; it never touches the reply --------------

let micStarting = false;
$("mic").addEventListener("click", async () => {
  if (audio.micOn) return stopMic();
  const blocked = micBlockedReason();
  if (blocked) {
    showMicReason(blocked, true);
    return;
  }
  if (micStarting) return;
  micStarting = true;
  render();
  try {
    if (!unlockAudio()) return;
    await audio.startMic();
    hideBanner("mic");
    refreshDevices(); // device names become readable once the microphone is allowed
  } catch (err) {
    showBanner(err.message || String(err), "mic", false);
    $("text").focus();
  } finally {
    micStarting = false;
    render();
  }
});

/** Why the microphone cannot start yet (the server could not hear it), or "". */
function micBlockedReason() {
  if (connection.ready) return "";
  if (page.serverState === "loading") return "The microphone turns on once the server has loaded its speech models.";
  if (page.connection === "reconnecting") return "The microphone turns on once the connection is back.";
  return "The microphone turns on once the page is connected.";
}

function showMicReason(text, emphasise = false) {
  const reason = $("mic-reason");
  reason.hidden = !text;
  reason.textContent = text;
  reason.classList.toggle("emphasis", emphasise && Boolean(text));
}

function stopMic() {
  audio.stopMic();
  micLevel = 0;
  wakeVisual();
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
  if (send({ type: "text_message", content: text })) {
    transcript.userTyped(text);
  } else {
    // Offline: keep it on screen, marked, and send it once the connection is back.
    page.outbox.push({ text, item: transcript.userTyped(text, true) });
    if (page.connection === "reconnecting") showReconnectBanner();
    announce("Not connected: your message will be sent when the connection is back.");
  }
  textBox.value = "";
  autosize();
});

function autosize() {
  textBox.style.height = "auto";
  textBox.style.height = `${Math.min(textBox.scrollHeight, 160)}px`;
}

// --- reset (asks first) and copy ------------------------------------------------------------------

$("reset").addEventListener("click", async () => {
  if (transcript.messageCount > 0) {
    const ok = await confirmDialog({
      title: "Clear the conversation?",
      text: "The messages on screen and the assistant's memory of this conversation are cleared. This cannot be undone.",
      action: "Clear",
    });
    if (!ok) return;
  }
  send({ type: "clear_history" });
  audio.stopAll();
  page.clearedUpTo = page.lastTurn;
  page.outbox = [];
  transcript.clear();
  toast("Conversation cleared");
  announce("Conversation cleared.");
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

/** A modal question (a native <dialog>: focus trapped, Escape cancels). Resolves true for the action. */
function confirmDialog({ title, text, action }) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  dialog.returnValue = "";
  const opener = document.activeElement;
  dialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        opener?.focus?.();
        resolve(dialog.returnValue === "ok");
      },
      { once: true },
    );
  });
}

// Clicking the backdrop of a dialog (outside its box) cancels it.
for (const dialog of document.querySelectorAll("dialog")) {
  dialog.addEventListener("click", (event) => {
    if (event.target !== dialog) return;
    const box = dialog.getBoundingClientRect();
    const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) dialog.close("cancel");
  });
}

// --- settings (kept in the browser: prefs.js) -----------------------------------------------------

function remember() {
  savePrefs({ chosen: page.chosen, speak: page.speak, micId: audio.micId, speakerId: audio.speakerId });
}

const speed = $("speed");
speed.addEventListener("input", () => {
  $("speed-value").textContent = speed.value;
  page.chosen.speed = Number(speed.value);
  remember();
  debounce("speed", () => send({ type: "set_speed", content: Number(speed.value) }));
});

for (const input of document.querySelectorAll("input[data-setting]")) {
  input.addEventListener("input", () => {
    const name = input.dataset.setting;
    const value = Number(input.value);
    $(`${name}-value`).textContent = value.toFixed(2);
    page.chosen[name] = value;
    remember();
    debounce(name, () => send({ type: "set_settings", settings: { [name]: value } }));
  });
}

$("voice").addEventListener("change", () => chooseVoice($("voice").value));

function chooseVoice(voice) {
  page.chosen.voice = voice;
  remember();
  send({ type: "set_settings", settings: { voice } });
}

const speakBox = $("speak-replies");
speakBox.checked = page.speak;
speakBox.addEventListener("change", () => {
  page.speak = speakBox.checked;
  remember();
  if (!page.speak) audio.stopAll(); // text only from now on: what is playing stops too
  announce(page.speak ? "Replies will be spoken." : "Text only: replies will not be spoken.");
  render();
});

$("mic-device").addEventListener("change", async () => {
  audio.micId = $("mic-device").value;
  remember();
  if (audio.micOn) {
    // Switch at once: close the old microphone and open the chosen one.
    audio.stopMic();
    try {
      await audio.startMic();
    } catch (err) {
      showBanner(err.message || String(err), "mic", false);
    }
    render();
  }
});

$("speaker-device").addEventListener("change", async () => {
  try {
    await audio.setSpeaker($("speaker-device").value);
  } catch {
    toast("That speaker could not be used; the system's output is used instead.");
    await audio.setSpeaker("").catch(() => {});
    $("speaker-device").value = "";
  }
  remember();
});

/** Fill the microphone and speaker lists (the speaker list only where the browser can switch). */
async function refreshDevices() {
  const { inputs, outputs } = await AudioEngine.devices().catch(() => ({ inputs: [], outputs: [] }));
  fillDevices($("mic-device"), inputs, audio.micId, "Microphone");
  const canChoose = AudioEngine.canChooseSpeaker;
  $("speaker-field").hidden = !canChoose;
  $("speaker-note").hidden = canChoose;
  if (canChoose) fillDevices($("speaker-device"), outputs, audio.speakerId, "Speaker");
}

function fillDevices(select, devices, chosen, noun) {
  const options = [new Option("System default", "")];
  devices.forEach((device, i) => options.push(new Option(device.label || `${noun} ${i + 1}`, device.deviceId)));
  if (chosen && !devices.some((d) => d.deviceId === chosen)) options.push(new Option(`${noun} chosen earlier`, chosen));
  select.replaceChildren(...options);
  select.value = chosen || "";
}
navigator.mediaDevices?.addEventListener?.("devicechange", refreshDevices);

function applySettings(settings) {
  if (!settings || typeof settings !== "object") return;
  page.settings = { ...page.settings, ...settings };
  showSettings({ ...settings, ...page.chosen });
}

/** Put values on the controls (not the one being dragged). */
function showSettings(values) {
  const active = document.activeElement;
  if (typeof values.speed === "number" && active !== speed) {
    speed.value = String(values.speed);
    $("speed-value").textContent = String(values.speed);
  }
  for (const input of document.querySelectorAll("input[data-setting]")) {
    const value = values[input.dataset.setting];
    if (typeof value !== "number" || active === input) continue;
    input.value = String(value);
    $(`${input.dataset.setting}-value`).textContent = value.toFixed(2);
  }
  if (typeof values.voice === "string") {
    if (!page.voices.includes(values.voice)) setVoices([...page.voices, values.voice]);
    $("voice").value = values.voice;
  }
}

function setVoices(voices) {
  if (!Array.isArray(voices) || voices.length === 0) return;
  page.voices = voices.map(String);
  const select = $("voice");
  const current = page.chosen.voice ?? page.settings.voice ?? select.value;
  select.replaceChildren(
    ...page.voices.map((name) => new Option(name === "default" ? "Default voice" : name, name)),
  );
  if (page.voices.includes(current)) select.value = current;
}

async function refreshVoices() {
  const response = await fetch(apiUrl("api/voices"), { cache: "no-store", headers: apiHeaders() });
  const body = await response.json().catch(() => ({}));
  if (body.limits) showLimits(body.limits);
  if (!response.ok) throw new Error(`the voice list could not be loaded (HTTP ${response.status})`);
  setVoices(body.voices);
}

const timers = new Map();
function debounce(key, fn) {
  clearTimeout(timers.get(key));
  timers.set(key, setTimeout(fn, SETTING_DEBOUNCE_MS));
}

// --- voice upload ---------------------------------------------------------------------------------

// The recording formats the page recognises by their first bytes; the server's limits say which it takes.
const FORMATS = {
  WAV: { ext: [".wav"], mime: ["audio/wav", "audio/x-wav", "audio/wave"], magic: (b) => tag(b, 0) === "RIFF" && tag(b, 8) === "WAVE" },
  FLAC: { ext: [".flac"], mime: ["audio/flac"], magic: (b) => tag(b, 0) === "fLaC" },
  OGG: { ext: [".ogg", ".oga"], mime: ["audio/ogg"], magic: (b) => tag(b, 0) === "OggS" },
};
const tag = (bytes, at) => String.fromCharCode(...bytes.subarray(at, at + 4));

function uploadLimits() {
  return page.limits ?? { max_bytes: 10 * 1024 * 1024, min_seconds: 1, max_seconds: 60, formats: ["WAV"] };
}

/** The hint and the file picker follow the server's limits, so the numbers always match. */
function showLimits(limits) {
  page.limits = limits;
  const formats = (limits.formats ?? ["WAV"]).filter((name) => FORMATS[name]);
  const names = formats.length > 1 ? `${formats.slice(0, -1).join(", ")} or ${formats.at(-1)}` : formats[0];
  $("upload-hint").textContent =
    `A clean ${names} recording of one person speaking, ${limits.min_seconds} to ${limits.max_seconds} seconds long, ` +
    `up to ${megabytes(limits.max_bytes)}.`;
  $("voice-file").accept = formats.flatMap((name) => [...FORMATS[name].ext, ...FORMATS[name].mime]).join(",");
}

function megabytes(bytes) {
  return `${Math.round((bytes / (1024 * 1024)) * 10) / 10} MB`;
}

$("voice-file").addEventListener("change", () => {
  const file = $("voice-file").files[0];
  if (file && !$("voice-name").value) $("voice-name").value = voiceNameFrom(file.name);
});

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = $("upload-status");
  const file = $("voice-file").files[0];
  const name = voiceNameFrom($("voice-name").value || file?.name || "");
  const limits = uploadLimits();
  status.classList.remove("error");
  status.textContent = "";
  if (!file) return uploadProblem("Choose a recording first.");
  if (file.size > limits.max_bytes) {
    return uploadProblem(`That file is over ${megabytes(limits.max_bytes)}; use a shorter recording.`);
  }
  if (!name) return uploadProblem("Give the voice a name (letters, digits, - or _).");
  const head = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const formats = limits.formats ?? ["WAV"];
  if (!formats.some((format) => FORMATS[format]?.magic(head))) {
    return uploadProblem(`That file is not a ${formats.join(", ")} recording. Choose an audio recording in one of those formats.`);
  }
  let replace = false;
  if (page.voices.includes(name)) {
    replace = await confirmDialog({
      title: `Replace the voice “${name}”?`,
      text: `A voice named “${name}” exists. Replacing it changes how it sounds in every conversation that uses it.`,
      action: "Replace",
    });
    if (!replace) return uploadProblem("Nothing was changed. Choose another name to keep both voices.");
  }
  await upload(file, name, replace);
});

async function upload(file, name, replace) {
  const status = $("upload-status");
  status.classList.remove("error");
  status.textContent = `Uploading “${name}”…`;
  $("upload-button").disabled = true;
  try {
    const query = `api/voices?name=${encodeURIComponent(name)}${replace ? "&replace=1" : ""}`;
    const response = await fetch(apiUrl(query), {
      method: "POST",
      headers: apiHeaders({ "Content-Type": file.type || "application/octet-stream" }),
      body: file,
    });
    const body = await response.json().catch(() => ({}));
    if (response.status === 409 && !replace) {
      // Someone else added a voice of that name meanwhile: ask, as for a known one.
      await refreshVoices().catch(() => setVoices([...page.voices, name]));
      const ok = await confirmDialog({
        title: `Replace the voice “${name}”?`,
        text: `A voice named “${name}” was just added. Replace it with your recording?`,
        action: "Replace",
      });
      if (ok) return upload(file, name, true);
      return uploadProblem("Nothing was changed. Choose another name to keep both voices.");
    }
    if (!response.ok) return uploadProblem(uploadProblemText(response.status, body));
    const voice = body.voice || name;
    await refreshVoices().catch(() => setVoices([...page.voices, voice]));
    $("voice").value = voice;
    chooseVoice(voice);
    status.textContent = `Voice “${voice}” ${replace ? "replaced" : "added"} and selected.`;
    $("upload-form").reset();
  } catch {
    uploadProblem("The upload did not reach the server. Check the connection and try again.");
  } finally {
    $("upload-button").disabled = false;
  }
}

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

// --- settings panel: a side column on wide screens, a modal sheet on phones -----------------------

const panel = $("settings");
const toggle = $("settings-toggle");
const sheetLayout = window.matchMedia("(max-width: 900px)");
// While the sheet is open, everything else is inert: Tab stays in the sheet, clicks cannot reach behind.
const behindSheet = ["topbar", "banner", "chat-col"];

toggle.addEventListener("click", () => setPanel(!document.body.classList.contains("panel-open")));
$("settings-close").addEventListener("click", () => setPanel(false));
$("backdrop").addEventListener("click", () => setPanel(false));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("panel-open") && !document.querySelector("dialog[open]")) {
    setPanel(false);
  }
});
sheetLayout.addEventListener("change", () => setPanel(false));
// Tab from the sheet's last control wraps to its first (and Shift+Tab the other way), as in a dialog.
panel.addEventListener("keydown", (event) => {
  if (event.key !== "Tab" || panel.getAttribute("aria-modal") !== "true") return;
  const focusable = [...panel.querySelectorAll("button, select, input, summary, [tabindex]")].filter(
    (element) => !element.disabled && element.offsetParent !== null,
  );
  const first = focusable[0];
  const last = focusable.at(-1);
  if (event.shiftKey && document.activeElement === first) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
});

function setPanel(open) {
  const wasOpen = document.body.classList.contains("panel-open");
  const modal = open && sheetLayout.matches;
  document.body.classList.toggle("panel-open", open);
  toggle.setAttribute("aria-expanded", String(open));
  $("backdrop").hidden = !modal;
  if (modal) {
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-modal", "true");
  } else {
    panel.removeAttribute("role");
    panel.removeAttribute("aria-modal");
  }
  for (const id of behindSheet) $(id).inert = modal;
  if (open) {
    refreshDevices();
    (modal ? $("settings-close") : panel.querySelector("input, select, button"))?.focus();
  } else if (wasOpen && sheetLayout.matches) {
    toggle.focus();
  }
}

// --- banner, toast and the live region ------------------------------------------------------------

let bannerKind = null;
function showBanner(text, kind, retry) {
  const banner = $("banner");
  const fresh = bannerKind !== kind || banner.hidden;
  bannerKind = kind;
  banner.dataset.kind = kind;
  $("banner-text").textContent = text;
  $("banner-action").hidden = !retry;
  banner.hidden = false;
  // Announced once when it appears, not at every tick of a countdown.
  if (fresh) announce(kind === "connection" ? page.reconnectWhy + " Reconnecting." : text);
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

let announceTimer = 0;
function announce(text) {
  // Cleared first and set a moment later, so the same words twice are announced twice.
  const region = $("announcer");
  region.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    region.textContent = text;
  }, 50);
}

// --- start-up: what the server is loading ---------------------------------------------------------

const STAGE_WORDS = {
  waiting: "waiting",
  downloading: "downloading",
  loading: "loading into memory",
  warming_up: "warming up",
  ready: "ready",
};

function renderStartup() {
  const loading = page.serverState === "loading" && page.connection !== "open";
  $("startup").hidden = !loading;
  if (!loading) return;
  const list = $("startup-models");
  list.replaceChildren(
    ...page.loading.map((model) => {
      const item = document.createElement("li");
      const label = document.createElement("span");
      const done = model.bytes_done ?? null;
      const total = model.bytes_total ?? null;
      let words = STAGE_WORDS[model.stage] ?? model.stage;
      if (model.stage === "downloading" && done !== null) {
        words += total ? `: ${size(done)} of ${size(total)}` : `: ${size(done)} so far`;
      }
      label.textContent = `${model.name}: ${words}`;
      const bar = document.createElement("progress");
      bar.max = 1;
      if (model.stage === "ready") bar.value = 1;
      else if (model.stage === "downloading" && total) bar.value = Math.min(1, done / total);
      else bar.removeAttribute("value"); // indeterminate
      bar.setAttribute("aria-label", `${model.name} progress`);
      item.append(label, bar);
      return item;
    }),
  );
}

function size(bytes) {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${Math.round(bytes / 1e3)} kB`;
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
let lastState = "";
function render() {
  const state = effectiveState();
  const status = $("status");
  status.dataset.state = state;
  $("status-text").textContent = STATE_LABELS[state];
  document.body.dataset.state = state;
  if (state !== lastState && ANNOUNCE[state]) announce(ANNOUNCE[state]);
  lastState = state;

  const mic = $("mic");
  const blocked = !audio.micOn && micBlockedReason();
  mic.setAttribute("aria-pressed", String(audio.micOn));
  mic.classList.toggle("on", audio.micOn);
  mic.classList.toggle("blocked", Boolean(blocked));
  // Never `disabled`: a disabled button drops the keyboard focus to the page.
  mic.setAttribute("aria-disabled", String(micStarting || Boolean(blocked)));
  $("mic-label").textContent = micStarting ? "Starting…" : audio.micOn ? "Mic on" : "Mic off";
  mic.title = audio.micOn ? "Mute the microphone" : "Turn the microphone on";
  showMicReason(blocked || "", $("mic-reason").classList.contains("emphasis"));

  $("interrupt").hidden = !isAssistantActive();
  $("send").setAttribute("aria-disabled", String(!connection.ready));
  renderStartup();
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
    queued: page.outbox.length,
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

showSettings(page.chosen);
refreshDevices();
window.addEventListener("online", () => connection.retryNow());
render();
connection.start();
