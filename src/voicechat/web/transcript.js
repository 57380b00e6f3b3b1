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
    this.closed = new Set(); // turns whose reply is settled (final, failed or removed): never re-created
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

  /**
   * A message the user typed: shown at once, confirmed by the server's final_user_request. A queued
   * one (typed while offline) waits, marked, until queuedSent() after the reconnect.
   */
  userTyped(text, queued = false) {
    const item = this.add("user", false);
    item.classList.add(queued ? "queued" : "pending");
    this.setText(item, text);
    if (queued) this.tag(item, "queued", "sends when reconnected");
    else this.typed.push({ item, text });
    return item;
  }

  queuedSent(item, text) {
    item.classList.replace("queued", "pending");
    item.querySelector(".tag-queued")?.remove();
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
    if (!item && create && !this.closed.has(turnId)) {
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
    if (!item || item.classList.contains("interrupted")) return;
    item.classList.remove("waiting");
    this.setText(item, text);
  }

  /**
   * The reply as the server keeps it. Interrupted: `text` is what the user heard; the rest of what
   * was on screen stays, dimmed and marked as not spoken. A reply that never spoke is removed.
   * `textOnly`: nothing was meant to be spoken, so what was on screen counts as read.
   */
  assistantFinal(turnId, text, interrupted, textOnly = false) {
    const item = this.assistantBubble(turnId, !this.closed.has(turnId));
    if (!item) return;
    this.closed.add(turnId);
    item.classList.remove("waiting", "partial");
    const shown = item.querySelector(".heard").textContent;
    if (item.classList.contains("failed")) {
      if ((text || "").length > shown.length) this.setText(item, text);
      return;
    }
    if (!interrupted) {
      if (!text) return this.remove(item, turnId);
      this.setText(item, text);
      return;
    }
    if (textOnly) {
      if (!shown && !text) return this.remove(item, turnId);
      this.setText(item, shown.length >= (text || "").length ? shown : text);
    } else {
      if (!item.classList.contains("spoke")) return this.remove(item, turnId);
      const heard = text || "";
      const rest = shown.startsWith(heard) ? shown.slice(heard.length) : "";
      if (!heard && !rest) return this.remove(item, turnId);
      this.setText(item, heard, rest);
    }
    item.classList.add("interrupted");
    this.tag(item, "interrupted", "interrupted");
    if (item.querySelector(".unheard").dataset.rest) {
      const why = document.createElement("span");
      why.className = "why";
      why.textContent = "grey words were not spoken";
      item.querySelector(".tag-interrupted").after(why);
    }
  }

  /** The reply failed (the language model or the voice broke down): say so, and offer a retry. */
  markFailed(turnId, message, retry) {
    this.closed.add(turnId);
    const item = this.assistant.get(turnId);
    const hasText = item && item.querySelector(".heard").textContent.trim();
    if (item && !hasText) this.remove(item, turnId);
    if (!hasText) {
      this.note(message, "error", retry);
      return;
    }
    item.classList.add("failed");
    item.classList.remove("waiting", "partial", "speaking");
    this.tag(item, "failed", "failed");
    const why = document.createElement("span");
    why.className = "why";
    why.textContent = message;
    const meta = item.querySelector(".meta");
    meta.append(why);
    if (retry) meta.append(retryButton(retry));
    this.scroll(true);
  }

  markSpeaking(turnId, speaking) {
    const item = this.assistantBubble(turnId, false);
    if (!item) return;
    item.classList.toggle("speaking", speaking);
    if (speaking) item.classList.add("spoke");
  }

  /** Placeholders of replies that never got a word (cancelled or failed) go away. */
  pruneWaiting() {
    for (const [turnId, item] of this.assistant) {
      if (item.classList.contains("waiting")) this.remove(item, turnId);
    }
  }

  /** The turn id of the newest reply still in progress (no final yet), or null. */
  get activeTurn() {
    let active = null;
    for (const turnId of this.assistant.keys()) if (!this.closed.has(turnId)) active = turnId;
    return active;
  }

  tag(item, kind, label) {
    if (item.querySelector(`.tag-${kind}`)) return;
    const tag = document.createElement("span");
    tag.className = `tag tag-${kind}`;
    tag.textContent = label;
    item.querySelector(".meta").prepend(tag);
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
  note(text, kind = "info", retry = null) {
    const item = document.createElement("li");
    item.className = `note note-${kind}`;
    const body = document.createElement("span");
    body.className = "note-text";
    body.textContent = text;
    item.append(body);
    if (retry) item.append(retryButton(retry));
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
    this.closed.clear();
  }

  clear() {
    this.list.replaceChildren();
    this.liveUser = null;
    this.typed = [];
    this.assistant.clear();
    this.pendingMetrics.clear();
    this.closed.clear();
    this.updateEmpty();
  }

  /** Plain text of the conversation as it is on screen, for the clipboard. */
  toText() {
    const lines = [];
    for (const item of this.list.children) {
      if (item.classList.contains("note")) {
        lines.push(`[${item.querySelector(".note-text").textContent.trim()}]`);
        continue;
      }
      const heard = item.querySelector(".heard").textContent.trim();
      const rest = (item.querySelector(".unheard").dataset.rest ?? "").trim();
      if (!heard && !rest) continue;
      const who = item.classList.contains("user") ? "You" : "Assistant";
      let line = `${who}: ${heard}`;
      if (rest) line += `${heard ? " " : ""}[not spoken: ${rest}]`;
      if (item.classList.contains("failed")) line += " [failed]";
      else if (item.classList.contains("interrupted")) line += " [interrupted]";
      lines.push(line);
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
    const heard = document.createElement("span");
    heard.className = "heard";
    // The part of an interrupted reply that was never spoken: dimmed, and named for screen readers.
    const unheard = document.createElement("span");
    unheard.className = "unheard";
    text.append(heard, unheard);
    bubble.append(who, text);
    const meta = document.createElement("div");
    meta.className = "meta";
    item.append(bubble, meta);
    this.list.append(item);
    this.updateEmpty();
    return item;
  }

  setText(item, text, rest = "") {
    const stick = this.nearBottom();
    item.querySelector(".heard").textContent = text ?? "";
    const unheard = item.querySelector(".unheard");
    unheard.replaceChildren();
    unheard.dataset.rest = rest;
    if (rest) {
      const label = document.createElement("span");
      label.className = "sr-only";
      label.textContent = " (not spoken:) ";
      unheard.append(label, document.createTextNode(rest));
    }
    this.scroll(stick);
  }

  remove(item, turnId) {
    item.remove();
    this.assistant.delete(turnId);
    this.closed.add(turnId);
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

function retryButton(retry) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "retry";
  button.textContent = "Retry";
  button.addEventListener("click", () => {
    button.disabled = true;
    retry();
  });
  return button;
}

export function formatMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
