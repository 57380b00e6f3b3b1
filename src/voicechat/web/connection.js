// The WebSocket to the server: hello handshake, JSON and audio frames in both directions, and
// reconnection with exponential backoff (with jitter) whenever the socket drops.

import { decodeAudioFrame, helloMessage } from "./protocol.js";

const MAX_BUFFERED_BYTES = 256 * 1024; // ~8 s of 16 kHz audio; beyond that, drop frames, not memory
const HELLO_TIMEOUT_MS = 10000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const TOKEN_KEY = "voicechat-access-token";
const RESUME_KEY = "voicechat-resume"; // {session_id, token} of this tab's conversation

// The access token (docs/deployment.md): taken once from the address the server printed
// (?token=...), kept in localStorage, and removed from the address bar so that it is not bookmarked,
// shared in a screenshot or sent as a Referer.
const ACCESS_TOKEN = takeToken();

function takeToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl === null) {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return ""; // storage blocked: the page works without a token on a loopback server
    }
  }
  try {
    localStorage.setItem(TOKEN_KEY, fromUrl);
  } catch {
    // storage blocked: the token lives as long as this page
  }
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  return fromUrl;
}

/** Headers for an API request: the token as Bearer, and the header that marks a change as the page's own. */
export function apiHeaders(extra = {}) {
  const auth = ACCESS_TOKEN ? { Authorization: `Bearer ${ACCESS_TOKEN}` } : {};
  return { "X-Voicechat-Client": "web", ...auth, ...extra };
}

// The conversation to resume after a dropped socket or a reload of this tab (docs/protocol.md, "Resume").
function savedResume() {
  try {
    return JSON.parse(sessionStorage.getItem(RESUME_KEY) || "null");
  } catch {
    return null;
  }
}

function saveResume(resume) {
  try {
    sessionStorage.setItem(RESUME_KEY, JSON.stringify(resume));
  } catch {
    // storage blocked: resuming still works for drops while this page lives
  }
}

/** The WebSocket URL with the token as a query parameter: browsers cannot set headers on a WebSocket. */
function withToken(url) {
  if (!ACCESS_TOKEN) return url;
  const withQuery = new URL(url);
  withQuery.searchParams.set("token", ACCESS_TOKEN);
  return withQuery.href;
}

/**
 * Events: "state" {state: connecting|open|reconnecting, attempt, delayMs, code},
 * "hello" (the server's hello), "message" (every other JSON message), "audio" {turnId, seq, pcm}.
 */
export class Connection extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.socket = null;
    this.ready = false; // hello received
    this.attempt = 0;
    this.retryTimer = 0;
    this.helloTimer = 0;
    this.stopped = false;
    this.reconnects = 0; // hellos after the first
    this.everOpened = false;
    this.framesDropped = 0;
    this.resume = savedResume(); // sent in the next hello; the server answers resumed: true or false
  }

  start() {
    this.stopped = false;
    this.open();
  }

  open() {
    clearTimeout(this.retryTimer);
    this.emit("state", { state: "connecting", attempt: this.attempt });
    let socket;
    try {
      socket = new WebSocket(withToken(this.url));
    } catch (err) {
      this.scheduleRetry(0, String(err));
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      const hello = helloMessage();
      if (this.resume) hello.resume = this.resume;
      socket.send(JSON.stringify(hello));
      this.helloTimer = setTimeout(() => socket.close(4000, "no hello"), HELLO_TIMEOUT_MS);
    };
    socket.onmessage = (event) => this.onMessage(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      clearTimeout(this.helloTimer);
      this.socket = null;
      this.ready = false;
      if (!this.stopped) this.scheduleRetry(event.code, event.reason);
    };
    // Errors are always followed by close, which handles them.
    socket.onerror = () => {};
  }

  onMessage(data) {
    if (typeof data !== "string") {
      const frame = decodeAudioFrame(data);
      if (frame) this.emit("audio", frame);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // the server only sends JSON; ignore anything else
    }
    if (!msg || typeof msg.type !== "string") return;
    // Any message means the server is alive (it says "loading" while its models load): no timeout.
    clearTimeout(this.helloTimer);
    if (msg.type === "hello") {
      this.ready = true;
      if (msg.resume_token) {
        this.resume = { session_id: msg.session_id, token: msg.resume_token };
        saveResume(this.resume);
      }
      if (this.everOpened) this.reconnects++;
      this.everOpened = true;
      this.attempt = 0;
      this.emit("state", { state: "open" });
      this.emit("hello", msg);
      return;
    }
    this.emit("message", msg);
  }

  scheduleRetry(code, reason) {
    const serverFull = code === 1013;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delayMs = Math.round(Math.max(serverFull ? 3000 : 0, base) * (0.75 + Math.random() * 0.5));
    this.attempt++;
    this.emit("state", { state: "reconnecting", attempt: this.attempt, delayMs, code, reason });
    this.retryTimer = setTimeout(() => this.open(), delayMs);
  }

  /** Try again right away (the user pressed "retry now", or the network came back). */
  retryNow() {
    if (this.socket || this.stopped) return;
    this.open();
  }

  send(message) {
    if (!this.ready) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  sendBinary(frame) {
    if (!this.ready) return false;
    if (this.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.framesDropped++;
      return false;
    }
    this.socket.send(frame);
    return true;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.helloTimer);
    if (this.socket) this.socket.close(1000);
    this.socket = null;
    this.ready = false;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
