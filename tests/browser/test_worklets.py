"""The audio worklets in Chromium, rendered offline at device rates other than the wire rates.

The page's files are served from src/voicechat/web by a plain static HTTP server on loopback
(AudioWorklet needs a secure context; 127.0.0.1 is one): no app server is needed here.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser_env import CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

WEB_DIR = Path(__file__).resolve().parents[2] / "src" / "voicechat" / "web"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page(playwright_driver) -> Iterator[object]:
    static = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(WEB_DIR)))
    thread = threading.Thread(target=static.serve_forever, daemon=True)
    thread.start()
    browser = playwright_driver.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
    )
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{static.server_address[1]}/resampler.js")  # any same-origin document
        yield page
    finally:
        browser.close()
        static.shutdown()
        static.server_close()
        thread.join(timeout=5)


PLAYBACK = """
async ({ rate, stopAt, holdAt = null, resumeAt = null }) => {
  const seconds = 1.6;
  const ctx = new OfflineAudioContext(1, Math.round(rate * seconds), rate);
  await ctx.audioWorklet.addModule("/playback-worklet.js");
  const node = new AudioWorkletNode(ctx, "voicechat-playback", {
    numberOfInputs: 0, outputChannelCount: [1], processorOptions: { inputRate: 24000, prebufferMs: 60 },
  });
  node.connect(ctx.destination);
  const events = [];
  let stats = null;
  // A round trip waits for the answer to its own request: a periodic report already on its way would
  // otherwise resolve it before the worklet has read the messages sent just before.
  let asked = 0;
  let waiting = null;
  node.port.onmessage = (e) => {
    if (e.data.type !== "stats") return events.push(e.data);
    stats = e.data.stats;
    if (waiting && e.data.id === waiting.id) waiting.resolve();
  };
  const roundTrip = () => new Promise((resolve) => {
    waiting = { id: ++asked, resolve };
    node.port.postMessage({ type: "stats", id: asked });
  });
  // One second of a 440 Hz tone at 24 kHz, cut into uneven chunks as the network would deliver it.
  const total = 24000;
  const tone = new Int16Array(total);
  for (let i = 0; i < total; i++) tone[i] = Math.round(16000 * Math.sin((2 * Math.PI * 440 * i) / 24000));
  const sizes = [1000, 2400, 137, 4800, 331, 7000, 5000];
  let at = 0, seq = 0;
  for (const size of sizes.concat([total])) {
    if (at >= total) break;
    const pcm = tone.slice(at, Math.min(total, at + size));
    at += pcm.length; // before the transfer empties it
    node.port.postMessage({ type: "chunk", turnId: 7, seq: seq++, pcm }, [pcm.buffer]);
  }
  node.port.postMessage({ type: "end", turnId: 7 });
  // A chunk of a turn that is stopped before it plays is dropped.
  node.port.postMessage({ type: "stop", turnId: 8 });
  node.port.postMessage({ type: "chunk", turnId: 8, seq: 0, pcm: new Int16Array(2400).fill(9000) });
  await roundTrip();
  if (stopAt !== null) {
    ctx.suspend(stopAt).then(async () => {
      node.port.postMessage({ type: "stop", turnId: 7 });
      await roundTrip();
      ctx.resume();
    });
  }
  // The server's tts_pause / tts_resume, as app.js passes them on.
  const atTime = (at, message) => ctx.suspend(at).then(async () => {
    node.port.postMessage(message);
    await roundTrip();
    ctx.resume();
  });
  if (holdAt !== null) atTime(holdAt, { type: "pause", turnId: 7 });
  if (resumeAt !== null) atTime(resumeAt, { type: "resume", turnId: 7 });
  const out = (await ctx.startRendering()).getChannelData(0);
  await new Promise((r) => setTimeout(r, 300)); // the worklet's last messages are still on their way
  await roundTrip();
  return { out: Array.from(out), events, stats };
}
"""


def analyse(out: list[float], end: int | None = None) -> tuple[int, int, float]:
    """First and last non-silent sample, and the largest jump between neighbouring samples before `end`."""
    loud = [i for i, s in enumerate(out) if abs(s) > 1e-4]
    end = len(out) - 1 if end is None else end
    jumps = max(abs(out[i + 1] - out[i]) for i in range(end))
    return loud[0], loud[-1], jumps


def tone_step(rate: int) -> float:
    """The most a 440 Hz tone of amplitude 0.49 moves between two samples at `rate`, with 5% slack."""
    return 2 * math.pi * 440 / rate * 0.49 * 1.05


@pytest.mark.parametrize("rate", [44100, 48000, 22050])
def test_playback_is_seamless_across_chunks(page, rate):
    result = page.evaluate(PLAYBACK, {"rate": rate, "stopAt": None})
    out = result["out"]
    end_of_tone = round(rate * 1.0)  # the test tone itself stops dead after one second
    first, last, jump = analyse(out, end=end_of_tone - 64)
    # Any seam between the seven uneven chunks would show up as a jump bigger than the tone's own.
    assert jump <= tone_step(rate)
    assert first <= 1 and abs(last - end_of_tone) < 64  # played from the first sample, all of it, once
    # It is the tone, resampled and on time: compare with the ideal sine (after the 128-sample fade-in).
    errors = [abs(out[i] - 16000 / 32768 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(128, end_of_tone - 64)]
    assert max(errors) < 0.01
    events = result["events"]
    assert [e["type"] for e in events if e["type"] in ("start", "stop")] == ["start", "stop"]
    stop = next(e for e in events if e["type"] == "stop")
    assert stop == {"type": "stop", "turnId": 7, "reason": "done", "started": True, "played": 24000}
    progress = [e["played"] for e in events if e["type"] == "progress"]
    assert len(progress) == 3 and progress == sorted(progress)  # every ~250 ms (the last is the stop)
    stats = result["stats"]
    assert stats["chunksReceived"] == 8 and stats["chunksDropped"] == 1
    assert stats["samplesPlayed"] == 24000 and stats["turnsCompleted"] == 1 and stats["underruns"] == 0


def test_stop_drops_the_turn_at_once_with_a_short_fade(page):
    rate = 48000
    result = page.evaluate(PLAYBACK, {"rate": rate, "stopAt": 0.5})
    out = result["out"]
    first, last, jump = analyse(out)
    stopped_at = math.ceil(0.5 * rate / 128) * 128  # suspend() lands on a render quantum
    assert stopped_at <= last < stopped_at + 128  # silent within one quantum (2.7 ms)
    assert jump <= tone_step(rate) + 0.49 / 128 * 1.5  # faded out over that quantum, not cut
    stop = next(e for e in result["events"] if e["type"] == "stop")
    assert stop["reason"] == "stopped" and stop["turnId"] == 7
    heard_s = (last - first) / rate
    assert abs(stop["played"] / 24000 - heard_s) < 0.01  # played_samples matches what was heard
    assert result["stats"]["turnsDropped"] == 1 and result["stats"]["playing"] is False


CAPTURE = """
async ({ rate }) => {
  const seconds = 2;
  const ctx = new OfflineAudioContext(1, rate * seconds, rate);
  await ctx.audioWorklet.addModule("/capture-worklet.js");
  const node = new AudioWorkletNode(ctx, "voicechat-capture", {
    numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: "explicit",
    processorOptions: { frameMs: 32 },
  });
  const osc = new OscillatorNode(ctx, { frequency: 1000 });
  const gain = new GainNode(ctx, { gain: 0.5 });
  osc.connect(gain).connect(node).connect(ctx.destination);
  osc.start();
  const frames = [];
  const levels = [];
  node.port.onmessage = (e) => (e.data.type === "frame" ? frames.push(Array.from(e.data.pcm)) : levels.push(e.data.rms));
  await ctx.startRendering();
  await new Promise((r) => setTimeout(r, 300));  // let the last posted frames arrive
  return { frames, levels };
}
"""


@pytest.mark.parametrize("rate", [44100, 48000, 32000])
def test_capture_resamples_any_device_rate_to_16k_frames(page, rate):
    result = page.evaluate(CAPTURE, {"rate": rate})
    frames = result["frames"]
    assert all(len(frame) == 512 for frame in frames)  # 32 ms at 16 kHz
    assert len(frames) == 2 * 16000 // 512  # all of the two seconds, nothing more
    pcm = [s for frame in frames for s in frame]
    # A 1 kHz tone at 16 kHz: compare with the ideal (the resampler keeps time exactly).
    errors = [abs(pcm[i] / 32767 - 0.5 * math.sin(2 * math.pi * 1000 * i / 16000)) for i in range(200, len(pcm) - 200)]
    assert max(errors) < 0.01
    levels = result["levels"]
    assert levels and all(abs(level - 0.5 / math.sqrt(2)) < 0.02 for level in levels[1:])


def test_a_held_turn_falls_silent_at_once_and_plays_on_from_where_it_was(page):
    rate = 48000
    result = page.evaluate(PLAYBACK, {"rate": rate, "stopAt": None, "holdAt": 0.3, "resumeAt": 0.7})
    out = result["out"]
    held = math.ceil(0.3 * rate / 128) * 128  # suspend() lands on a render quantum
    resumed = math.ceil(0.7 * rate / 128) * 128
    loud = [i for i, s in enumerate(out) if abs(s) > 1e-4]
    assert not [i for i in loud if held + 128 <= i < resumed]  # silent within one quantum of the hold
    first, last, jump = analyse(out)
    assert jump <= tone_step(rate) + 0.49 / 128 * 1.5  # faded out and back in, never cut
    # Nothing was lost or skipped: the tone goes on from where it stopped, so it ends the hold later.
    assert abs(last - (round(rate * 1.0) + resumed - held - 128)) < 64
    shift = resumed - held - 128  # the 128 samples of the fade-out block were played (faded)
    errors = [abs(out[i] - 16000 / 32768 * math.sin(2 * math.pi * 440 * (i - shift) / rate)) for i in range(resumed + 128, last - 64)]
    assert max(errors) < 0.01
    stop = next(e for e in result["events"] if e["type"] == "stop")
    assert stop["reason"] == "done" and stop["played"] == 24000  # all of it, once
    flags = [e["value"] for e in result["events"] if e["type"] == "playing"]
    assert flags == [True, False, True, False]  # the microphone's flag says "not playing" while held
