"""Browser and live-server helpers for the studio tests (import as ``tests.studio.helpers``)."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

BROWSER_ENV = "FOURFOLD_CHROMIUM"
SCREENSHOT_ENV = "FOURFOLD_STUDIO_SCREENSHOTS"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def chromium_path() -> str | None:
    """A Chromium binary: $FOURFOLD_CHROMIUM, else one on PATH (scripts/install-browser.sh installs it)."""
    given = os.environ.get(BROWSER_ENV)
    if given:
        return given if Path(given).is_file() else shutil.which(given)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> str | None:
    """Skip (on a user's machine) or fail (in CI) when Playwright or Chromium is missing.

    Returns the executable path, or None to let Playwright use its own downloaded browser.
    """
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is missing: pip install 'fourfold[ui]'"
    exe = chromium_path()
    if reason is None and exe is None and not _playwright_has_browser():
        reason = f"no Chromium found: run scripts/install-browser.sh (or set {BROWSER_ENV})"
    if reason is not None:
        if in_ci():
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    return exe


def _playwright_has_browser() -> bool:
    cache = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH", Path.home() / ".cache" / "ms-playwright"))
    return any(cache.glob("chromium*/chrome-linux*/chrome")) if cache.is_dir() else False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread of the test process (tests can reach app.state)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        end = time.time() + 30
        while not self.server.started:
            if time.time() > end or not self.thread.is_alive():
                raise RuntimeError("the studio server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wav_bytes(seconds: float = 2.0, sr: int = 16000, freq: float = 220.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    wav = (0.3 * np.sin(2 * np.pi * freq * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV")
    return buf.getvalue()


def png_bytes(size: int = 96) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (230, 230, 220))
    d = ImageDraw.Draw(img)
    d.rectangle((size // 4, size // 3, 3 * size // 4, size - 8), fill=(180, 40, 40))
    d.rectangle((size // 2 - 4, 6, size // 2 + 4, size // 3), fill=(90, 60, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def video_file(
    path: Path, seconds: float, fps: float = 10.0, size: int = 32, width: int | None = None
) -> Path:
    from fourfold.audio import io as aio

    n, width = int(seconds * fps), width or size
    frames = np.zeros((n, size, width, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, :, (i * 2) % width] = 255
    return aio.write_video(path, frames, fps)


def drag(page, selector: str, points: list[tuple[float, float]], steps: int = 4) -> None:
    """Press the mouse at the first point (fractions of the element's box), move through the rest, release."""
    box = page.locator(selector).bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def canvas_pixels(page, selector: str) -> str:
    return page.eval_on_selector(selector, "c => c.toDataURL()")


def touch_drag(page, selector: str, points: list[tuple[float, float]], steps: int = 4) -> None:
    """Drag one finger through ``points`` (fractions of the element's box) with real touch input.

    Chromium's DevTools protocol injects the touches at the input layer, so the page sees the same
    touch -> pointer event sequence a phone or tablet produces (pointerType "touch").
    """
    box = page.locator(selector).bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    cdp = page.context.new_cdp_session(page)

    def touch(kind: str, x: float | None = None, y: float | None = None) -> None:
        pts = [] if x is None else [{"x": x, "y": y, "id": 1}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": pts})

    touch("touchStart", *xy[0])
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        for k in range(1, steps + 1):
            touch("touchMove", x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
    touch("touchEnd")
    cdp.detach()
