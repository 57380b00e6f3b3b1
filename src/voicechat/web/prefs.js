// The page's settings kept in the browser (localStorage), so that a reload keeps them: the
// conversation settings chosen here, text-only mode, and the chosen microphone and speaker.

const KEY = "voicechat-prefs";
const DEFAULTS = { chosen: {}, speak: true, micId: "", speakerId: "" };
const SETTINGS = ["speed", "voice", "exaggeration", "cfg_weight", "temperature"];

export function loadPrefs() {
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(KEY) || "{}") ?? {};
  } catch {
    stored = {}; // storage blocked or damaged: start from the defaults
  }
  const chosen = {};
  for (const name of SETTINGS) {
    const value = stored.chosen?.[name];
    if (name === "voice" ? typeof value === "string" : Number.isFinite(value)) chosen[name] = value;
  }
  return {
    chosen,
    speak: typeof stored.speak === "boolean" ? stored.speak : DEFAULTS.speak,
    micId: typeof stored.micId === "string" ? stored.micId : "",
    speakerId: typeof stored.speakerId === "string" ? stored.speakerId : "",
  };
}

export function savePrefs(prefs) {
  try {
    localStorage.setItem(KEY, JSON.stringify(prefs));
  } catch {
    // storage blocked (private mode, quota): the settings last as long as the page
  }
}
