// Problems in plain words: what happened and what the user can do. The server's own text can name
// internal addresses or settings (the server log has the details), so for the codes below the page
// says its own sentence and never shows the server's.

const TURN_FAILURES = {
  llm_unreachable: "The assistant's language model cannot be reached right now. Try again in a moment; if it keeps happening, tell whoever runs this server.",
  llm_model_not_found: "The assistant's language model is not installed on the server. Tell whoever runs this server.",
  llm_auth: "The server was refused access to its language model. Tell whoever runs this server.",
  llm_rate_limited: "The language model is busy. Wait a few seconds and try again.",
  llm_timeout: "The language model took too long to answer. Try again.",
  llm_error: "The language model failed to answer. Try again.",
  tts_error: "The assistant's voice failed for this reply. Try again, or choose another voice in Settings.",
  internal: "Something went wrong on the server while answering. Try again.",
};

const NOTES = {
  stt_error: "Your speech could not be turned into text. Please say it again, or type it.",
  rate_limited: "The microphone sent audio faster than the server could take it. Turn the microphone off and on again.",
  server_busy: "The server is running behind. What you say is kept and will be answered.",
};

const BANNERS = {
  server_full: "The server is busy with other conversations. The page tries again by itself.",
};

/**
 * {text, kind}: kind "turn" (the reply in progress failed), "note" (in the conversation), "toast"
 * (a refused setting) or "banner" (the connection ends).
 */
export function plainError(msg) {
  const code = msg.code;
  if (code === "unknown_voice") return { text: "That voice is not on the server any more. Choose another one in Settings.", kind: "toast" };
  if (code === "bad_setting") return { text: "The server did not accept that setting.", kind: "toast" };
  if (BANNERS[code]) return { text: BANNERS[code], kind: "banner" };
  if (msg.fatal) {
    const text = code === "internal"
      ? "The server could not start its speech models. Tell whoever runs this server; its log says why."
      : "The server ended the conversation. Reload the page to start again.";
    return { text, kind: "banner" };
  }
  if (TURN_FAILURES[code]) return { text: TURN_FAILURES[code], kind: "turn" };
  if (NOTES[code]) return { text: NOTES[code], kind: "note" };
  return { text: "The page and the server did not understand each other. Reloading the page may help.", kind: "note" };
}

const UPLOAD = {
  voice_quota: null, // the server's words say which limit: shown as they are
  bad_voice: null,
  upload_timeout: "The upload took too long. Check the connection and try again, or use a shorter recording.",
  not_ready: "The server is still starting up. Try again in a moment.",
  unauthorized: "This page is not allowed to add voices. Open the address the server printed, with its token.",
  forbidden: "This page is not allowed to add voices. Open the address the server printed, with its token.",
};

/** A refused voice upload in plain words. */
export function uploadProblemText(status, body) {
  const own = UPLOAD[body.error];
  if (own) return own;
  if (own === null && body.message) return sentence(body.message);
  return `The server did not accept the recording (HTTP ${status}). Try another recording.`;
}

function sentence(text) {
  const plain = text.replace(/\s*\(VOICECHAT_[A-Z_]+\)/g, "").trim();
  const first = plain.charAt(0).toUpperCase() + plain.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}
