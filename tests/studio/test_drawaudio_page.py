"""Draw an Audio page in a real browser: draw a moving box + brush + loudness curve, generate, listen."""

import json

from tests.studio.helpers import canvas_pixels, drag


def _open(page):
    page.goto(page.base + "/#drawaudio")
    page.wait_for_function("() => document.querySelector('#da-bundled').options.length >= 2")
    page.wait_for_function("() => document.querySelector('#da-frame').naturalWidth > 0")
    return page


def test_draw_mask_curve_generate_and_play(page, screens, studio_server):
    _open(page)
    # with no --models the page runs the shipped tiny adapter (trained by the Draw an Audio demo)
    page.wait_for_function(
        "() => document.querySelector('#drawaudio-model').textContent.includes('tiny_adapter')"
    )
    frames = int(page.get_attribute("#da-scrub", "max")) + 1
    assert frames == 64  # the bundled clip: 2.56 s at 25 fps

    # a moving object: a box at t = 0 and another at the last frame (two keyframes, interpolated)
    drag(page, "#da-mask", [(0.05, 0.30), (0.45, 0.90)])
    page.locator("#da-scrub").fill(str(frames - 1))
    drag(page, "#da-mask", [(0.30, 0.20), (0.70, 0.80)])
    page.locator("#da-scrub").fill(str(frames // 2))
    assert page.inner_text("#da-keyframes").count(" s (1 box)") == 2
    # brush a stroke too (union with the boxes)
    page.check("input[name=da-tool][value=brush]")
    drag(page, "#da-mask", [(0.8, 0.1), (0.9, 0.3)])
    # loudness: quiet, loud in the middle, quiet again
    drag(page, "#da-curve", [(0.0, 0.9), (0.25, 0.9), (0.5, 0.1), (0.75, 0.9), (1.0, 0.9)], steps=12)
    page.fill("#da-prompt", "a red ball bounces")
    page.fill("#da-steps", "4")

    with page.expect_request("**/api/drawaudio/generate") as req:
        page.click("#da-generate")
    body = json.loads(req.value.post_data)
    stage = body["stages"][0]
    keys = stage["mask"]["frames"]
    assert [round(k["t"], 2) for k in keys] == [0.0, round((frames - 1) / 25, 2)]
    assert abs(keys[0]["boxes"][0][0] - 0.05) < 0.02 and abs(keys[0]["boxes"][0][3] - 0.90) < 0.02
    assert abs(keys[1]["boxes"][0][2] - 0.70) < 0.02
    assert stage["brush"].startswith("data:image/png;base64,")
    curve = stage["curve"]
    assert len(curve) == 64 and curve[32] > 0.8 and curve[2] < 0.2 and curve[-2] < 0.2
    assert stage["prompt"] == "a red ball bounces"
    assert body["negative_prompt"] is None and body["guidance_video"] is None and body["cfg"] == "dual"

    page.wait_for_selector("#da-results:not([hidden])")
    page.wait_for_function("() => document.querySelector('#da-audio').duration > 0")
    duration = page.eval_on_selector("#da-audio", "a => a.duration")
    assert abs(duration - 2.56) < 0.05
    page.wait_for_function("() => document.querySelector('#da-mel').naturalWidth > 0")
    assert page.get_attribute("#da-dl-wav", "href").endswith(".wav?download=true")
    assert page.get_attribute("#da-dl-mp4", "href").endswith(".mp4?download=true")
    # the muxed video is served as mp4 with the right length (codec support of the browser aside)
    mp4 = page.request.get(page.base + page.get_attribute("#da-video", "src"))
    assert mp4.ok and mp4.headers["content-type"] == "video/mp4" and len(mp4.body()) > 1000
    # drawn vs achieved loudness, on the same grid
    job = _last_job(studio_server, "drawaudio")
    drawn, achieved = job.result["loudness"]["drawn"][0], job.result["loudness"]["achieved"]
    assert len(drawn) == len(achieved) == 64 and max(drawn) > 0.8
    page.screenshot(path=str(screens / "studio-drawaudio.png"), full_page=True)


def test_multistage_reference_curve_and_cancel(page, studio_server):
    _open(page)
    page.click("#da-extract")  # curve of the bundled reference recording
    page.wait_for_function("() => da.curve.values && da.curve.values.length === 64")
    assert page.evaluate("() => Math.max(...da.curve.values)") > 0.3
    before = canvas_pixels(page, "#da-curve")
    drag(page, "#da-curve", [(0.1, 0.1), (0.3, 0.1)], steps=6)  # edit the extracted curve
    assert canvas_pixels(page, "#da-curve") != before
    page.fill("#da-prompt", "a red ball")
    page.click("#da-add-stage")
    page.fill("#da-prompt", "a blue square")
    drag(page, "#da-mask", [(0.5, 0.0), (1.0, 1.0)])
    page.fill("#da-gain", "-6")
    page.fill("#da-steps", "3")
    page.fill("#da-gt", "2.5")
    page.select_option("#da-cfg", "joint")
    assert page.locator("#da-stage-tabs button").count() == 2
    with page.expect_request("**/api/drawaudio/generate") as req:
        page.click("#da-generate")
    body = json.loads(req.value.post_data)
    assert body["cfg"] == "joint" and body["guidance_text"] == 2.5
    first, second = body["stages"]
    assert first["prompt"] == "a red ball" and first["mask"] is None and len(first["curve"]) == 64
    assert second["prompt"] == "a blue square" and second["gain_db"] == -6 and second["curve"] is None
    assert second["mask"]["frames"][0]["boxes"][0][0] > 0.45
    page.wait_for_selector("#da-results:not([hidden])")
    page.wait_for_function("() => document.querySelectorAll('#da-stems audio').length === 2")
    job = _last_job(studio_server, "drawaudio")
    assert len(job.result["stems"]) == 2 and job.result["loudness"]["drawn"][1] is None

    # long work shows progress and can be cancelled
    page.fill("#da-steps", "200")
    page.click("#da-generate")
    page.wait_for_function("() => document.querySelector('#da-progress').value > 0")
    page.click("#da-cancel")
    page.wait_for_function("() => document.querySelector('#da-status').textContent.startsWith('cancelled')")
    assert page.is_enabled("#da-generate")
    assert _last_job(studio_server, "drawaudio").status == "cancelled"


def test_touch_draws_box_brush_and_curve(browser, studio_server):
    """A finger on a tablet draws the same box, brush stroke and loudness curve as the mouse does."""
    from tests.studio.helpers import touch_drag

    ctx = browser.new_context(viewport={"width": 1024, "height": 1300}, has_touch=True, is_mobile=True)
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.base = studio_server.url
    try:
        _open(page)
        touch_drag(page, "#da-mask", [(0.2, 0.2), (0.6, 0.7)])
        boxes = page.evaluate("() => da.mask.maskJson().frames[0].boxes")
        assert len(boxes) == 1
        assert all(abs(a - b) < 0.03 for a, b in zip(boxes[0], [0.2, 0.2, 0.6, 0.7], strict=True))
        page.check("input[name=da-tool][value=brush]")
        blank = canvas_pixels(page, "#da-mask")
        touch_drag(page, "#da-mask", [(0.8, 0.1), (0.9, 0.4)])
        assert canvas_pixels(page, "#da-mask") != blank
        # a finger dragged across the curve canvas draws the curve instead of scrolling the page
        scroll = page.evaluate("() => window.scrollY")
        touch_drag(page, "#da-curve", [(0.0, 0.9), (0.5, 0.1), (1.0, 0.9)], steps=12)
        values = page.evaluate("() => da.curve.values")
        assert values is not None and len(values) == 64
        assert values[32] > 0.8 and values[1] < 0.2 and values[-2] < 0.2
        assert page.evaluate("() => window.scrollY") == scroll
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def test_bad_uploads_show_a_message(page, tmp_path):
    from tests.studio.helpers import video_file

    _open(page)
    page.set_input_files(
        "#da-upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}]
    )
    page.wait_for_function(
        "() => document.querySelector('#drawaudio-error').textContent.includes('not a video file')"
    )
    page.set_input_files(
        "#da-upload", files=[{"name": "broken.mp4", "mimeType": "video/mp4", "buffer": b"\x00" * 4096}]
    )
    page.wait_for_function(
        "() => document.querySelector('#drawaudio-error').textContent.includes('not a readable video')"
    )
    assert "/" not in page.inner_text("#drawaudio-error").split("video:")[-1].split("'")[0]
    long = video_file(tmp_path / "long.mp4", seconds=6.0)
    page.set_input_files("#da-upload", str(long))
    page.wait_for_function(
        "() => document.querySelector('#drawaudio-error').textContent.includes('up to 5 s')"
    )
    wide = video_file(tmp_path / "wide.mp4", seconds=2.0, size=32, width=48)
    page.set_input_files("#da-upload", str(wide))
    page.wait_for_function("() => document.querySelector('#da-bundled').value.startsWith('u')")
    assert page.inner_text("#drawaudio-error") == ""
    assert int(page.get_attribute("#da-scrub", "max")) == 19
    # the frame view keeps the video's 3:2 aspect ratio, boxes stay normalised, keyframes can be deleted
    assert page.eval_on_selector("#da-mask", "c => [c.width, c.height]") == [320, 213]
    drag(page, "#da-mask", [(0.5, 0.5), (1.0, 1.0)])
    page.locator("#da-scrub").fill("10")
    drag(page, "#da-mask", [(0.0, 0.0), (0.5, 0.5)])
    frames = page.evaluate("() => da.mask.maskJson().frames")
    assert [f["t"] for f in frames] == [0, 1.0]
    assert all(abs(a - b) < 0.01 for a, b in zip(frames[0]["boxes"][0], [0.5, 0.5, 1.0, 1.0], strict=True))
    page.click("#da-del-key")
    assert page.evaluate("() => da.mask.maskJson().frames.length") == 1
    page.set_input_files(
        "#da-ref-upload", files=[{"name": "ref.wav", "mimeType": "audio/wav", "buffer": b"RIFF1234"}]
    )
    page.wait_for_function(
        "() => document.querySelector('#drawaudio-error').textContent.includes('not a readable audio')"
    )


def _last_job(server, kind):
    jobs = server.app.state.studio.jobs
    job = max((j for j in jobs._jobs.values() if j.kind == kind), key=lambda j: j.started)
    return jobs.wait(job.id, 60)
