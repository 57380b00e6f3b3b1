"""The three browser engines behind one small driver interface, and the virtual microphone.

- Chromium: Debian's `chromium`, Playwright; its fake capture device plays a WAV as the microphone.
- Firefox ESR: Debian's `firefox-esr`, puppeteer-core over WebDriver BiDi (firefox_bridge.mjs, npm).
- WebKitGTK (Safari's engine): Debian's MiniBrowser driven by WebKitWebDriver through Selenium,
  on an Xvfb display.
Firefox and WebKit hear a PulseAudio null sink's monitor as their microphone; `speak()` plays a WAV
into that sink. Every process started here is stopped by its context manager.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from browser_env import AXE, AXE_RUN, serious

HERE = Path(__file__).parent
FIREFOX = Path("/usr/bin/firefox-esr")
MINIBROWSER = Path("/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")
WEBKIT_DRIVER = Path("/usr/bin/WebKitWebDriver")
NODE_MODULES = HERE / "node_modules"
SINK = "voicechat_mic"


def missing(engine: str) -> str | None:
    """Why `engine` cannot run on this machine, or None."""
    needs = {
        "firefox": [FIREFOX, NODE_MODULES / "puppeteer-core", Path("/usr/bin/pulseaudio")],
        "webkit": [MINIBROWSER, WEBKIT_DRIVER, Path("/usr/bin/Xvfb"), Path("/usr/bin/pulseaudio")],
    }[engine]
    absent = [str(path) for path in needs if not path.exists()]
    if shutil.which("node") is None and engine == "firefox":
        absent.append("node")
    return f"{engine} needs {', '.join(absent)} (scripts/test.sh installs them)" if absent else None


def _wait_until(check, what: str, timeout_s: float = 20.0) -> None:
    """Poll `check()` for a process's start-up (a socket or a display appearing): no event to await."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not start within {timeout_s:g} s")
        time.sleep(0.05)


@contextlib.contextmanager
def pulse_microphone() -> Iterator[dict[str, str]]:
    """A private PulseAudio daemon whose default source is a null sink's monitor; yields its env."""
    runtime = Path(tempfile.mkdtemp(prefix="voicechat-pulse-"))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime)}
    env.pop("PULSE_SERVER", None)
    daemon = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "-n",
         "--load=module-native-protocol-unix", "--load=module-always-sink", "--log-target=stderr"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    socket = runtime / "pulse" / "native"
    try:
        _wait_until(socket.exists, "pulseaudio")
        env["PULSE_SERVER"] = f"unix:{socket}"
        for command in (
            ["pactl", "load-module", "module-null-sink", f"sink_name={SINK}", "rate=48000", "channels=1"],
            # A real source over the monitor: WebKit's device list leaves monitors out.
            ["pactl", "load-module", "module-remap-source", f"master={SINK}.monitor", f"source_name={SINK}_in",
             "channels=1"],
            ["pactl", "set-default-source", f"{SINK}_in"],
        ):
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=20)
        yield {"XDG_RUNTIME_DIR": env["XDG_RUNTIME_DIR"], "PULSE_SERVER": env["PULSE_SERVER"]}
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        shutil.rmtree(runtime, ignore_errors=True)


def speak(pulse_env: dict[str, str], wav: Path) -> subprocess.Popen:
    """Play `wav` into the virtual microphone (returns the paplay process; it ends with the file)."""
    return subprocess.Popen(["paplay", f"--device={SINK}", str(wav)], env={**os.environ, **pulse_env})


@contextlib.contextmanager
def xvfb_display() -> Iterator[str]:
    """A virtual X display for MiniBrowser (WebKitGTK has no headless mode)."""
    process = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        number = process.stdout.readline().decode().strip()  # Xvfb writes its display number when ready
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield f":{number}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Driver:
    """What the engine-neutral tests need from a browser."""

    name = "?"

    def goto(self, url: str) -> None: ...
    def evaluate(self, expression: str): ...  # noqa: ANN201 - JSON-able result
    def wait(self, expression: str, timeout_s: float = 30) -> None: ...
    def click(self, selector: str) -> None: ...
    def type(self, selector: str, text: str) -> None: ...
    def press(self, selector: str, key: str) -> None: ...  # key: "Enter", "ArrowRight"
    def screenshot(self, path: Path) -> None: ...
    def console_errors(self) -> list[str]: ...
    def axe_problems(self) -> list[dict]: ...  # serious and critical axe-core violations


class PlaywrightDriver(Driver):
    name = "chromium"

    def __init__(self, page) -> None:  # noqa: ANN001 - browser_env.Page
        self.page = page

    def goto(self, url: str) -> None:
        self.page.goto(url)

    def evaluate(self, expression: str):  # noqa: ANN201
        return self.page.evaluate(expression)

    def wait(self, expression: str, timeout_s: float = 30) -> None:
        self.page.wait_for_function(expression, timeout=timeout_s * 1000, polling=100)

    def click(self, selector: str) -> None:
        self.page.click(selector)

    def type(self, selector: str, text: str) -> None:
        self.page.click(selector)
        self.page.keyboard.type(text)

    def press(self, selector: str, key: str) -> None:
        self.page.press(selector, key)

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))

    def console_errors(self) -> list[str]:
        return list(self.page.console_errors)

    def axe_problems(self) -> list[dict]:
        return self.page.axe_problems()


class FirefoxDriver(Driver):
    """Firefox ESR through firefox_bridge.mjs (puppeteer-core, WebDriver BiDi)."""

    name = "firefox"

    def __init__(self, pulse_env: dict[str, str], width: int = 1280, height: int = 800) -> None:
        env = {**os.environ, **pulse_env, "MOZ_HEADLESS": "1"}
        self.process = subprocess.Popen(
            ["node", str(HERE / "firefox_bridge.mjs")], cwd=HERE, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.ids = itertools.count(1)
        self.call("launch", executable=str(FIREFOX), width=width, height=height)

    def call(self, cmd: str, **args):  # noqa: ANN201
        request_id = next(self.ids)
        self.process.stdin.write(json.dumps({"id": request_id, "cmd": cmd, "args": args}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline() or '{"ok": false, "error": "the bridge exited"}')
        if not answer["ok"]:
            raise RuntimeError(f"firefox {cmd}: {answer['error']}")
        return answer["value"]

    def goto(self, url: str) -> None:
        self.call("goto", url=url)

    def evaluate(self, expression: str):  # noqa: ANN201
        return self.call("evaluate", expression=expression)

    def wait(self, expression: str, timeout_s: float = 30) -> None:
        self.call("waitFor", expression=expression, timeoutMs=int(timeout_s * 1000))

    def click(self, selector: str) -> None:
        self.call("click", selector=selector)

    def type(self, selector: str, text: str) -> None:
        self.call("type", selector=selector, text=text)

    def press(self, selector: str, key: str) -> None:
        self.call("press", selector=selector, key=key)

    def screenshot(self, path: Path) -> None:
        self.call("screenshot", path=str(path))

    def console_errors(self) -> list[str]:
        return self.call("consoleErrors")

    def axe_problems(self) -> list[dict]:
        self.call("evaluate", expression=AXE.read_text() + "\n;0")
        return serious(self.call("evaluate", expression=AXE_RUN))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("close")
        self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WebKitDriver(Driver):
    """WebKitGTK's MiniBrowser through WebKitWebDriver and Selenium."""

    name = "webkit"

    def __init__(self, display: str, pulse_env: dict[str, str]) -> None:
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.service import Service

        options = webdriver.WebKitGTKOptions()
        options.binary_location = str(MINIBROWSER)
        for argument in (
            "--automation", "--enable-media-stream=true", "--enable-webaudio=true",
            "--autoplay-policy=allow", "--javascript-can-access-clipboard=true",
        ):  # fmt: skip
            options.add_argument(argument)
        env = {**os.environ, **pulse_env, "DISPLAY": display}
        service = Service(executable_path=str(WEBKIT_DRIVER), env=env)
        self.driver = webdriver.WebKitGTK(options=options, service=service)
        self.driver.set_window_size(1280, 800)
        self.errors: list[str] = []

    def goto(self, url: str) -> None:
        self.driver.get(url)
        # WebKitWebDriver has no console log: the page's uncaught errors are collected by the page.
        self.driver.execute_script(
            "window.__errors = []; window.addEventListener('error', (e) => window.__errors.push(String(e.message)));"
            "window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason)));"
        )

    def evaluate(self, expression: str):  # noqa: ANN201
        return self.driver.execute_script(f"return ({expression});")

    def wait(self, expression: str, timeout_s: float = 30) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout_s, poll_frequency=0.1).until(
            lambda driver: driver.execute_script(f"return Boolean({expression});")
        )

    def element(self, selector: str):  # noqa: ANN201
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def click(self, selector: str) -> None:
        self.element(selector).click()

    def type(self, selector: str, text: str) -> None:
        self.element(selector).send_keys(text)

    def press(self, selector: str, key: str) -> None:
        from selenium.webdriver.common.keys import Keys

        keys = {"Enter": Keys.ENTER, "ArrowRight": Keys.ARROW_RIGHT}
        self.element(selector).send_keys(keys[key])

    def screenshot(self, path: Path) -> None:
        self.driver.save_screenshot(str(path))

    def console_errors(self) -> list[str]:
        return self.driver.execute_script("return window.__errors || [];")

    def axe_problems(self) -> list[dict]:
        self.driver.execute_script(AXE.read_text())
        return serious(self.driver.execute_async_script(f"const done = arguments[0]; ({AXE_RUN}).then(done);"))

    def close(self) -> None:
        self.driver.quit()
