"""One live studio server and one headless Chromium per test worker; a fresh page per test."""

import os
from pathlib import Path

import pytest
import torch
from tests.studio.helpers import SCREENSHOT_ENV, LiveServer, require_browser

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the studio needs the [ui] extra: pip install 'fourfold[ui]'")
    from fourfold.studio.files import UploadLimits
    from fourfold.studio.server import StudioConfig, create_app

    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("studio-work")
    app = create_app(
        StudioConfig(work=work, limits=UploadLimits(max_video_seconds=5.0, max_audio_seconds=20.0))
    )
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    exe = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=exe,
            headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, studio_server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1050}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    pg.base = studio_server.url
    yield pg
    # Read the errors before closing: closing the context aborts in-flight requests, and an error the
    # teardown itself causes is not the page's error.
    seen = list(errors)
    ctx.close()
    assert not seen, f"JavaScript errors in the page: {seen}"


@pytest.fixture(scope="session")
def screens(tmp_path_factory) -> Path:
    """Screenshots go to $FOURFOLD_STUDIO_SCREENSHOTS (e.g. docs/images) or the test's temp folder."""
    d = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path_factory.mktemp("studio-screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d
