// The conversation on screen: user and assistant bubbles (live partials, then finals), notes, and
// each turn's latency timeline. Text always goes in through textContent, never as HTML.

// turn_metrics: the first four are durations of their stage; first_audio_ms is the whole wait, from
// the end of the user's speech to the first audio frame sent (stages may overlap when the reply was
// started speculatively during the user's pause).
const STAGES = [
  ["endpointing_ms", "Turn end detected"],
  ["stt_ms", "Speech to text"],
  ["llm_first_token_ms", "LLM first token"],
  ["tts_first_chunk_ms", "TTS first chunk"],
];

export class Transcript {
  constructor(list, emptyState) {
    this.list = list;
    this.emptyState = emptyState;
    this.liveUser = null; // the bubble of what the user is saying right now
    this.typed = []; // typed messages waiting for the server's final_user_request
    this.assistant = new Map(); // turn id -> bubble element
    this.pendingMetrics = new Map(); // turn id -> metrics that came before the bubble
  }

  // --- the user ---------------------------------------------------------------------------------
  userPartial(text) {
    if (!text) return;
    // The server echoes a typed message as a partial first: it is already on screen.
    if (this.typed.some((entry) => entry.text.trim() === text.trim())) return;
    if (!this.liveUser) this.liveUser = this.add("user", true);
    this.setText(this.liveUser, text);
  }

  /** The user's speech came to nothing (a cough, noise): its live bubble goes away. */
  dropLiveUser() {
    if (!this.liveUser) return;
    this.liveUser.remove();
    this.liveUser = null;
    this.updateEmpty();
  }

  /** A message the user typed: shown at once, confirmed by the server's final_user_request. */
  userTyped(text) {
    const item = this.add("user", false);
    item.classList.add("pending");
    this.setText(item, text);
    this.typed.push({ item, text });
  }

  userFinal(text, turnId) {
    let item = null;
    const typed = this.typed.findIndex((entry) => entry.text.trim() === (text || "").trim());
    if (typed >= 0) {
      item = this.typed.splice(typed, 1)[0].item;
      item.classList.remove("pending");
    } else {
      item = this.liveUser ?? this.add("user", false);
      this.liveUser = null;
      item.classList.remove("partial");
    }
    this.setText(item, text);
    if (turnId !== undefined && turnId !== null) {
      item.dataset.turn = String(turnId);
      this.assistantBubble(turnId, true); // a "thinking" placeholder until the reply's first words
    }
    this.scroll();
  }

  // --- the assistant ----------------------------------------------------------------------------
  assistantBubble(turnId, create) {
    let item = this.assistant.get(turnId);
    if (!item && create) {
      item = this.add("assistant", true);
      item.dataset.turn = String(turnId);
      item.classList.add("waiting");
      this.assistant.set(turnId, item);
      const metrics = this.pendingMetrics.get(turnId);
      if (metrics) {
        this.pendingMetrics.delete(turnId);
        this.renderMetrics(item, metrics);
      }
    }
    return item;
  }

  assistantPartial(turnId, text) {
    const item = this.assistantBubble(turnId, true);
    item.classList.remove("waiting");
    this.setText(item, text);
  }

  assistantFinal(turnId, text, interrupted) {
    const item = this.assistantBubble(turnId, true);
    item.classList.remove("waiting", "partial");
    this.setText(item, text);
    if (interrupted) this.markInterrupted(turnId);
    if (!text && !interrupted) this.remove(item, turnId);
  }

  markInterrupted(turnId) {
    const item = this.assistantBubble(turnId, false);
    if (!item || item.classList.contains("interrupted")) return;
    item.classList.add("interrupted");
    item.classList.remove("waiting", "speaking");
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "interrupted";
    item.querySelector(".meta").prepend(tag);
  }

  markSpeaking(turnId, speaking) {
    this.assistantBubble(turnId, false)?.classList.toggle("speaking", speaking);
  }

  /** Placeholders of replies that never got a word (cancelled or failed) go away. */
  pruneWaiting() {
    for (const [turnId, item] of this.assistant) {
      if (item.classList.contains("waiting") && !item.classList.contains("interrupted")) {
        this.remove(item, turnId);
      }
    }
  }

  metrics(turnId, metrics) {
    const item = this.assistantBubble(turnId, false);
    if (item) this.renderMetrics(item, metrics);
    else this.pendingMetrics.set(turnId, metrics);
  }

  renderMetrics(item, metrics) {
    const known = (value) => typeof value === "number" && Number.isFinite(value) && value >= 0;
    const stages = STAGES.map(([key, label], index) => ({ label, value: metrics[key], index })).filter((stage) =>
      known(stage.value),
    );
    const total = known(metrics.first_audio_ms) ? metrics.first_audio_ms : null;
    if (stages.length === 0 && total === null) return;
    const sum = stages.reduce((acc, stage) => acc + stage.value, 0);
    if (total !== null && total > sum) {
      stages.push({ label: "Queue and sending", value: total - sum, index: 4 });
    }
    const scale = Math.max(total ?? 0, sum, 1);

    const details = document.createElement("details");
    details.className = "timeline";
    const summary = document.createElement("summary");
    summary.textContent = total !== null ? `${formatMs(total)} to first audio` : `${formatMs(sum)} latency`;
    summary.title = "Latency of this turn, from the end of your speech";
    const bar = document.createElement("div");
    bar.className = "timeline-bar";
    bar.setAttribute("aria-hidden", "true");
    const rows = document.createElement("dl");
    for (const stage of stages) {
      const segment = document.createElement("span");
      segment.className = `seg seg-${stage.index}`;
      segment.style.width = `${(stage.value / scale) * 100}%`;
      segment.title = `${stage.label}: ${formatMs(stage.value)}`;
      bar.append(segment);
      const term = document.createElement("dt");
      const swatch = document.createElement("span");
      swatch.className = `swatch seg-${stage.index}`;
      term.append(swatch, document.createTextNode(stage.label));
      const data = document.createElement("dd");
      data.textContent = formatMs(stage.value);
      rows.append(term, data);
    }
    if (total !== null) {
      const term = document.createElement("dt");
      term.className = "total";
      term.textContent = "First audio, in all";
      const data = document.createElement("dd");
      data.className = "total";
      data.textContent = formatMs(total);
      rows.append(term, data);
    }
    details.append(summary, bar, rows);
    const stick = this.nearBottom();
    const meta = item.querySelector(".meta");
    meta.querySelector(".timeline")?.remove();
    meta.append(details);
    this.scroll(stick);
  }

  // --- notes (errors, "conversation cleared") ---------------------------------------------------
  note(text, kind = "info") {
    const item = document.createElement("li");
    item.className = `note note-${kind}`;
    item.setAttribute("role", kind === "error" ? "alert" : "note");
    item.textContent = text;
    this.list.append(item);
    this.updateEmpty();
    this.scroll(true);
  }

  // --- the whole ----------------------------------------------------------------------------------
  /** A new server session: its turn ids start again, so forget the old ones (the bubbles stay). */
  newSession() {
    this.pruneWaiting();
    for (const item of this.list.querySelectorAll("[data-turn]")) delete item.dataset.turn;
    for (const { item } of this.typed) item.classList.remove("pending");
    for (const item of this.assistant.values()) item.classList.remove("partial", "speaking");
    this.liveUser?.classList.remove("partial");
    this.liveUser = null;
    this.typed = [];
    this.assistant.clear();
    this.pendingMetrics.clear();
  }

  clear() {
    this.list.replaceChildren();
    this.liveUser = null;
    this.typed = [];
    this.assistant.clear();
    this.pendingMetrics.clear();
    this.updateEmpty();
  }

  /** Plain text of the conversation, for the clipboard. */
  toText() {
    const lines = [];
    for (const item of this.list.querySelectorAll(".msg")) {
      const text = item.querySelector(".text").textContent.trim();
      if (!text) continue;
      const who = item.classList.contains("user") ? "You" : "Assistant";
      const cut = item.classList.contains("interrupted") ? " [interrupted]" : "";
      lines.push(`${who}: ${text}${cut}`);
    }
    return lines.join("\n\n");
  }

  get messageCount() {
    return this.list.querySelectorAll(".msg").length;
  }

  // --- helpers ------------------------------------------------------------------------------------
  add(role, partial) {
    const item = document.createElement("li");
    item.className = `msg ${role}`;
    if (partial) item.classList.add("partial");
    const who = document.createElement("span");
    who.className = "sr-only";
    who.textContent = role === "user" ? "You said: " : "Assistant said: ";
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    const text = document.createElement("p");
    text.className = "text";
    bubble.append(who, text);
    const meta = document.createElement("div");
    meta.className = "meta";
    item.append(bubble, meta);
    this.list.append(item);
    this.updateEmpty();
    return item;
  }

  setText(item, text) {
    const stick = this.nearBottom();
    item.querySelector(".text").textContent = text ?? "";
    this.scroll(stick);
  }

  remove(item, turnId) {
    item.remove();
    this.assistant.delete(turnId);
    this.updateEmpty();
  }

  updateEmpty() {
    this.emptyState.hidden = this.list.childElementCount > 0;
  }

  nearBottom() {
    const scroller = this.list.parentElement;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  }

  scroll(force = true) {
    if (!force) return;
    const scroller = this.list.parentElement;
    scroller.scrollTop = scroller.scrollHeight;
  }
}

export function formatMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
