"""Driving the demo page in a real headless browser: the server as a subprocess, Debian's Chromium through
Playwright, and the page's selectors (Gradio 6.31; ``elem_id``s set in ``demo/app.py``).

The browser is the system's Chromium (``apt-get install chromium``; ``tests/demo/install_browser.sh``), never
one downloaded by ``playwright install``. Where it, Gradio or Playwright is missing, ``need`` skips the test
with the reason, except in CI (``CI=true``), where it fails: CI must run the browser tests.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")  # the real binary first
AUDIO_INPUT = "#audio-in input[type=file]"  # only in the page while the Audio component is empty
AUDIO_CLEAR = "#audio-in button[aria-label='Clear']"
AUDIO_LOADED = "#audio-in a[download]"  # the player's download link: the upload reached the server
BUTTON = "#caption-btn"
CAPTION = "#caption-out textarea"
ERROR_TEXT = ".toast-body.error [data-testid=toast-text]"
TOAST_CLOSE = "[data-testid=toast-close]"
TIMEOUT_MS = 60_000  # one caption of a tiny model takes well under a second; a loaded CI machine is slow


def need(what: str) -> None:
    """Skip the test for want of ``what``; fail it in CI."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI runs the browser tests, but {what}")
    pytest.skip(what)


def chromium() -> Optional[str]:
    """The system's Chromium: ``$CHROMIUM_PATH``, Debian's binary, or one on PATH."""
    candidates = [os.environ["CHROMIUM_PATH"]] if os.environ.get("CHROMIUM_PATH") else list(CHROMIUM_PATHS)
    for name in candidates:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoServer:
    """``espnet-slam-aac demo ARGS`` (or a packed model's Space ``app_file``) in a subprocess on a free local
    port, its output in ``log``; ``url`` once the page answers."""

    def __init__(self, args: Sequence[str], log: Path, app_file: Optional[Path] = None, startup_s: float = 300.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the app itself must switch analytics off
        if app_file is None:
            cmd = [sys.executable, "-m", "espnet_slam_aac.bin.demo", *args, "--host", "127.0.0.1"]
            cmd += ["--port", str(self.port)]
        else:  # a Space: where to serve comes from the environment, as on the Hub
            cmd = [sys.executable, str(app_file), *args]
            env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(self.port))
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + startup_s
        while not self._answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"the demo exited ({self.proc.returncode}):\n{log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the demo did not answer in {startup_s:.0f} s:\n{log.read_text()}")
            time.sleep(0.5)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_app(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator(BUTTON)).to_be_visible(timeout=TIMEOUT_MS)
    # the button shows before the Audio component is mounted: wait for its file input (or its Clear button)
    page.locator(f"{AUDIO_INPUT}, {AUDIO_CLEAR}").first.wait_for(state="attached", timeout=TIMEOUT_MS)


def upload(page, path: os.PathLike) -> None:
    """Put a file into the Audio component (clearing the last one) and wait until the server has it."""
    from playwright.sync_api import expect

    if page.locator(AUDIO_INPUT).count() == 0:
        page.locator(AUDIO_CLEAR).click()
    page.locator(AUDIO_INPUT).set_input_files(str(path))
    expect(page.locator(AUDIO_LOADED)).to_have_count(1, timeout=TIMEOUT_MS)


def table_rows(page, elem_id: str = "candidates") -> List[List[str]]:
    """The Dataframe's visible rows as text (Gradio 6 draws them as ``div.virtual-row`` > ``gridcell``)."""
    return page.evaluate(
        """id => [...document.querySelectorAll(`#${id} [role=grid] .virtual-row[role=row]`)]
                 .map(r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))""",
        elem_id,
    )


def close_toasts(page) -> None:
    """Close every toast (each X once: a closing toast is inert while it fades) and wait until they are gone."""
    from playwright.sync_api import expect

    for button in page.locator(TOAST_CLOSE).all():
        try:
            button.click(timeout=2_000)
        except Exception:  # the toast is already fading out
            pass
    expect(page.locator(".toast-body")).to_have_count(0, timeout=10_000)
