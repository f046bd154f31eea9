"""INTRA, SongCreator and SaRA pages in a real browser: what a person does, and what they should see."""

import io
import zipfile

from tests.studio.helpers import canvas_pixels, drag, png_bytes, wav_bytes


def test_intra_heatmaps_and_pixel_scores(page, screens, studio_server):
    page.goto(page.base + "/#intra")
    # with no --models the page runs the shipped procedural-tiny checkpoint, a trained model
    page.wait_for_function(
        "() => document.querySelector('#intra-model').textContent.includes('procedural-tiny')"
    )
    assert "untrained" not in (page.get_attribute("#intra-model", "class") or "")
    page.set_input_files(
        "#intra-upload", files=[{"name": "cup.png", "mimeType": "image/png", "buffer": png_bytes()}]
    )
    page.wait_for_function("() => document.querySelector('#intra-image').src.includes('cup.png')")
    page.fill("#intra-actions", "hold\ncut with, pour\nhold")
    page.click("#intra-ground")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.intra-overlay')].filter(i => i.naturalWidth === 96).length === 3"
    )
    captions = page.locator("#intra-overlays figcaption").all_inner_texts()
    assert captions == ["hold", "cut with", "pour"]  # duplicates dropped, order kept
    img = page.locator(".intra-overlay").nth(1)
    box = img.bounding_box()
    page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.75 * box["height"])
    page.wait_for_function("() => document.querySelectorAll('#intra-scores tbody tr').length === 3")
    rows = [r.split("\t") for r in page.locator("#intra-scores tbody tr").all_inner_texts()]
    # the page shows the model's own map values at that pixel
    studio = studio_server.app.state.studio
    grounder = studio.models.get("intra")[0]
    upload = next(f for f in studio.files._files.values() if f.name == "cup.png")
    heats = grounder.ground_many(str(upload.path), ["hold", "cut with", "pour"])
    x, y = (int(v.split("=")[1].strip(",")) for v in page.inner_text("#intra-pixel").split()[-2:])
    assert abs(x - 24) <= 1 and abs(y - 72) <= 1  # the clicked point, in image pixels
    for (action, score), heat in zip(rows, heats, strict=True):
        assert abs(float(score) - heat[y, x]) < 1e-3, (action, score, heat[y, x])
    assert page.locator(".marker").count() == 3
    page.screenshot(path=str(screens / "studio-intra.png"), full_page=True)

    page.set_input_files(
        "#intra-upload", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"\x89PNG broken"}]
    )
    page.wait_for_function(
        "() => document.querySelector('#intra-error').textContent.includes('not a readable image')"
    )


def test_songcreator_generate_and_edit_a_span(page, screens):
    page.goto(page.base + "/#songcreator")
    page.wait_for_function("() => document.querySelector('#sc-task').options.length === 9")
    # with no --models the page runs the shipped trained pipeline
    page.wait_for_function(
        "() => document.querySelector('#songcreator-model').textContent.includes('procedural-tiny')"
    )
    assert page.is_hidden("[data-input=vocals]")  # lyrics-to-song needs no stem
    page.fill("#sc-seconds", "2")

    # an edit task without its inputs, then with an uploaded recording the shipped pipeline cannot read
    page.select_option("#sc-task", "edit_vocals")
    assert page.is_visible("[data-input=vocals]") and page.is_hidden("[data-input=accompaniment]")
    page.click("#sc-generate")  # no vocals yet: a clear message, nothing crashes
    page.wait_for_function(
        "() => document.querySelector('#songcreator-error').textContent.includes('needs vocals')"
    )
    blank = canvas_pixels(page, "#sc-wave-vocals")
    page.set_input_files(
        "#sc-vocals", files=[{"name": "vox.wav", "mimeType": "audio/wav", "buffer": wav_bytes(2.0)}]
    )
    page.wait_for_function(f"() => document.querySelector('#sc-wave-vocals').toDataURL() !== {blank!r}")
    drag(page, "#sc-wave-vocals", [(0.25, 0.5), (0.5, 0.5)])
    span = page.inner_text("#sc-span")
    assert span.startswith("span: 0.50") and span.endswith("1.00 s"), span
    page.click("#sc-generate")
    page.wait_for_function(
        "() => document.querySelector('#songcreator-error').textContent.includes('cannot read an uploaded recording')"
    )

    # make a song, then edit a span of its vocals
    page.select_option("#sc-task", "lyrics_to_song")
    page.click("#sc-generate")
    page.wait_for_selector("#sc-results:not([hidden])")
    for kind in ("song", "vocals", "accompaniment"):
        page.wait_for_function(f"() => document.querySelector('#sc-out-{kind}').duration > 0")
        assert abs(page.eval_on_selector(f"#sc-out-{kind}", "a => a.duration") - 2.0) < 0.05
    before = canvas_pixels(page, "#sc-wave-vocals")
    page.click("#sc-use-vocals")
    page.wait_for_function(f"() => document.querySelector('#sc-wave-vocals').toDataURL() !== {before!r}")
    page.select_option("#sc-task", "edit_vocals")
    drag(page, "#sc-wave-vocals", [(0.25, 0.5), (0.5, 0.5)])
    with page.expect_request("**/api/songcreator/generate") as req:
        page.click("#sc-generate")
    assert [round(v, 2) for v in req.value.post_data_json["span"]] == [0.5, 1.0]
    page.wait_for_function(
        "() => document.querySelector('#sc-out-vocals') && document.querySelector('#sc-out-vocals').duration > 0"
    )
    assert page.locator("#sc-out-song").count() == 0  # edit_vocals returns vocals only
    assert page.inner_text("#songcreator-error") == ""
    # the edited vocals can go back in as the input for the next edit
    before = canvas_pixels(page, "#sc-wave-vocals")
    page.click("#sc-use-vocals")
    page.wait_for_function(f"() => document.querySelector('#sc-wave-vocals').toDataURL() !== {before!r}")
    assert page.evaluate("() => sc.files.vocals.name") == "vocals.wav"
    assert page.inner_text("#sc-span").startswith("span: none")
    drag(page, "#sc-wave-vocals", [(0.1, 0.5), (0.3, 0.5)])
    page.screenshot(path=str(screens / "studio-songcreator.png"), full_page=True)


def test_sara_finetune_stop_resume_compare_download(page, screens):
    page.goto(page.base + "/#sara")
    page.wait_for_function("() => document.querySelector('#sara-base').options.length >= 1")
    page.fill("#sara-steps", "400")
    page.fill("#sara-batch", "2")
    empty = canvas_pixels(page, "#sara-loss")
    page.click("#sara-start")
    page.wait_for_function("() => parseInt(document.querySelector('#sara-step').textContent) >= 3")
    first = canvas_pixels(page, "#sara-loss")
    assert first != empty
    page.wait_for_function("() => parseInt(document.querySelector('#sara-step').textContent) >= 8")
    assert canvas_pixels(page, "#sara-loss") != first  # the curve updates while training
    assert "of 832,613 UNet weights" in page.inner_text("#sara-trainable")  # the shipped digits-sd-tiny
    assert "MB" in page.inner_text("#sara-memory")
    page.click("#sara-stop")
    page.wait_for_function("() => !document.querySelector('#sara-resume').disabled")
    stopped = int(page.inner_text("#sara-step").split("/")[0])
    assert page.inner_text("#sara-status").startswith(f"stopped at step {stopped}")
    assert 8 <= stopped < 400
    page.click("#sara-resume")
    page.wait_for_function(
        f"() => parseInt(document.querySelector('#sara-step').textContent) >= {stopped + 3}"
    )
    page.click("#sara-stop")
    page.wait_for_function("() => !document.querySelector('#sara-compare').disabled")
    page.click("#sara-compare")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.sara-sample')].filter(i => i.naturalWidth > 0).length === 4"
    )
    labels = page.locator("#sara-samples figcaption").all_inner_texts()
    assert labels[0].startswith("α = 0 (before)") and labels[2].startswith("α = 1 (after)")
    page.click("#sara-delta")
    page.wait_for_selector("#sara-dl-delta:not([hidden])")
    with page.expect_download() as dl:
        page.click("#sara-dl-delta")
    names = zipfile.ZipFile(io.BytesIO(dl.value.path().read_bytes())).namelist()
    assert {"sara-adapter/adapter_config.json", "sara-adapter/adapter_model.safetensors"} <= set(names)
    page.screenshot(path=str(screens / "studio-sara.png"), full_page=True)
    # the session was saved to the work folder: a reloaded page lists it and opens it where it stopped
    step = page.inner_text("#sara-step")
    page.reload()
    page.wait_for_selector("#sara-saved-row:not([hidden])")
    label = page.locator("#sara-saved option").first.inner_text()
    assert "digits-sd-tiny on outline digits (procedural), step " in label and label.split(", step ")[
        1
    ].startswith(step.replace(" ", ""))
    page.click("#sara-open")
    page.wait_for_function("() => document.querySelector('#sara-status').textContent.startsWith('session ')")
    assert page.inner_text("#sara-step") == step
    assert page.is_enabled("#sara-resume") and page.is_enabled("#sara-compare")
