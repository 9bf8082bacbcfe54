"""A headless Chromium driven over the W3C WebDriver protocol, with the standard library only.

Debian's `chromium` and `chromium-driver` packages provide the browser and `chromedriver`;
this module speaks chromedriver's HTTP API (https://www.w3.org/TR/webdriver2/) with `urllib`,
enough to open a page, run JavaScript, click or drag with any mouse button, turn the wheel
and take a screenshot.

    with Chromium(width=1400, height=1000) as browser:
        browser.open("http://127.0.0.1:8000/")
        browser.click(200, 150)                 # viewport pixels, left button
        png = browser.screenshot()
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

MISSING = (
    "needs Chromium and chromedriver: install Debian's `chromium` and `chromium-driver` "
    "packages (apt-get install -y chromium chromium-driver)"
)
BUTTONS = {"left": 0, "middle": 1, "right": 2}


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables, or None if either is missing."""
    browser = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium session through a chromedriver child process."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 30):
        found = find_browser()
        if found is None:
            raise WebDriverError(MISSING)
        self.binary, driver = found
        self.width, self.height, self.timeout = width, height, timeout
        port = _free_port()
        self._base = f"http://127.0.0.1:{port}"
        self._driver = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._session = None

    # Protocol ------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._base + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            value = json.loads(e.read() or b"{}").get("value", {})
            raise WebDriverError(f"{method} {path}: {value.get('message', e)}") from None

    def _session_call(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", body)

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        while True:  # chromedriver takes a moment to listen
            try:
                if self._call("GET", "/status").get("ready"):
                    break
            except (urllib.error.URLError, ConnectionError, WebDriverError):
                pass
            if time.monotonic() > deadline or self._driver.poll() is not None:
                self.close()
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        args = [
            "--headless=new",
            "--no-sandbox",  # CI runs as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",  # one screenshot pixel per CSS pixel
            f"--window-size={self.width},{self.height}",
        ]
        capabilities = {"browserName": "chrome",
                        "goog:chromeOptions": {"binary": self.binary, "args": args}}  # fmt: skip
        try:
            created = self._call(
                "POST", "/session", {"capabilities": {"alwaysMatch": capabilities}}
            )
        except BaseException:
            self.close()
            raise
        self._session = created["sessionId"]
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            try:
                self._call("DELETE", f"/session/{self._session}")
            except (urllib.error.URLError, WebDriverError, OSError):
                pass
            self._session = None
        self._driver.terminate()
        try:
            self._driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._driver.kill()

    # Commands ------------------------------------------------------------------------
    def open(self, url: str) -> None:
        self._session_call("POST", "/url", {"url": url})

    def set_viewport(self, width: int, height: int) -> None:
        """Resizes the window so that the page's viewport (`innerWidth x innerHeight`) is
        `width x height`: `--window-size` counts the browser's own bars too."""
        for _ in range(3):
            w, h = self.run("return [window.innerWidth, window.innerHeight]")
            if (w, h) == (width, height):
                return
            rect = self._session_call("GET", "/window/rect")
            self._session_call("POST", "/window/rect", {"width": rect["width"] + width - w,
                                                        "height": rect["height"] + height - h})  # fmt: skip
        raise WebDriverError(f"the viewport stays {w}x{h}, not {width}x{height}")

    def run(self, script: str, *args: Any) -> Any:
        """Runs the body of a JavaScript function (`return ...` gives the value); a returned
        Promise is awaited."""
        return self._session_call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 30, poll: float = 0.02) -> Any:
        """Polls `script` until it returns something truthy; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for: {script}")
            time.sleep(poll)

    def upload(self, css: str, path: str) -> None:
        """Gives the file at `path` to the `<input type=file>` matching `css`."""
        found = self._session_call("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(found.values()))  # {"element-6066-...": id}
        self._session_call("POST", f"/element/{element}/value", {"text": str(path)})

    def pointer(self, steps: list[dict]) -> None:
        """One W3C pointer action sequence (mouse), then releases it."""
        actions = {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                   "actions": steps}  # fmt: skip
        self._session_call("POST", "/actions", {"actions": [actions]})
        self._session_call("DELETE", "/actions")

    def click(self, x: int, y: int, button: str = "left") -> None:
        """A click at viewport pixel (x, y)."""
        b = BUTTONS[button]
        self.pointer([
            {"type": "pointerMove", "duration": 0, "origin": "viewport", "x": x, "y": y},
            {"type": "pointerDown", "button": b},
            {"type": "pointerUp", "button": b},
        ])  # fmt: skip

    def drag(self, x0: int, y0: int, x1: int, y1: int, button: str = "left") -> None:
        """`button` pressed at (x0, y0), moved in a few steps, released at (x1, y1)."""
        b = BUTTONS[button]
        steps = [{"type": "pointerMove", "duration": 0, "origin": "viewport", "x": x0, "y": y0},
                 {"type": "pointerDown", "button": b}]  # fmt: skip
        for t in (0.25, 0.5, 0.75, 1.0):
            steps.append({"type": "pointerMove", "duration": 20, "origin": "viewport",
                          "x": round(x0 + t * (x1 - x0)), "y": round(y0 + t * (y1 - y0))})  # fmt: skip
        steps.append({"type": "pointerUp", "button": b})
        self.pointer(steps)

    def wheel(self, x: int, y: int, delta_y: int) -> None:
        """The mouse wheel turned at viewport pixel (x, y): `delta_y` < 0 away from the user
        (a page scrolls up; 100 is about one notch)."""
        scroll = {"type": "scroll", "x": x, "y": y, "deltaX": 0, "deltaY": delta_y,
                  "duration": 0, "origin": "viewport"}  # fmt: skip
        actions = {"type": "wheel", "id": "wheel", "actions": [scroll]}
        self._session_call("POST", "/actions", {"actions": [actions]})
        self._session_call("DELETE", "/actions")

    def screenshot(self) -> bytes:
        """PNG of the viewport."""
        return base64.b64decode(self._session_call("GET", "/screenshot"))
