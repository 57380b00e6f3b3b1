// Drives Firefox ESR for the Python tests (engines.py): puppeteer-core over WebDriver BiDi, no
// geckodriver. One JSON command per line on stdin, one JSON answer per line on stdout:
//   {"id": 1, "cmd": "goto", "args": {...}}  ->  {"id": 1, "ok": true, "value": ...} or {"id": 1, "ok": false, "error": "..."}
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

let browser = null;
let page = null;
const consoleErrors = [];

const commands = {
  async launch({ executable, width, height }) {
    browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: executable,
      headless: true,
      defaultViewport: { width, height },
      extraPrefsFirefox: {
        "media.navigator.permission.disabled": true,
        "media.autoplay.default": 0,
        "media.autoplay.block-webaudio": false,
        "media.navigator.streams.fake": false,
      },
    });
    page = await browser.newPage();
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(`uncaught: ${error.message}`));
  },
  goto: ({ url }) => page.goto(url).then(() => null),
  evaluate: ({ expression }) => page.evaluate(expression),
  waitFor: ({ expression, timeoutMs }) =>
    page.waitForFunction(expression, { timeout: timeoutMs, polling: 100 }).then(() => null),
  click: ({ selector }) => page.click(selector),
  type: ({ selector, text }) => page.type(selector, text),
  press: async ({ selector, key }) => {
    await page.focus(selector);
    await page.keyboard.press(key);
  },
  viewport: ({ width, height }) => page.setViewport({ width, height }),
  screenshot: ({ path }) => page.screenshot({ path }).then(() => null),
  consoleErrors: () => [...consoleErrors],
  close: async () => {
    await browser?.close();
    browser = null;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { id, cmd, args } = JSON.parse(line);
  try {
    const value = await commands[cmd](args ?? {});
    process.stdout.write(JSON.stringify({ id, ok: true, value: value ?? null }) + "\n");
  } catch (error) {
    process.stdout.write(JSON.stringify({ id, ok: false, error: String(error?.stack ?? error) }) + "\n");
  }
  if (cmd === "close") break;
}
await browser?.close();
