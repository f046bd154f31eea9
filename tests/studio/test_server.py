"""Studio server without a browser: uploads, errors, folder confinement, jobs, CLI defaults."""

import threading
import time

import pytest

fastapi = pytest.importorskip("fastapi", reason="the studio needs the [ui] extra: pip install 'fourfold[ui]'")
from fastapi.testclient import TestClient  # noqa: E402
from tests.studio.helpers import png_bytes, video_file, wav_bytes  # noqa: E402

from fourfold.studio.files import FileStore, UploadError, UploadLimits  # noqa: E402
from fourfold.studio.jobs import Busy, Cancelled, Job, JobManager, progress_hook  # noqa: E402
from fourfold.studio.server import StudioConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    work = tmp_path_factory.mktemp("studio")
    app = create_app(StudioConfig(work=work, limits=UploadLimits(max_bytes=200_000, max_video_seconds=3.0)))
    return TestClient(app)


def test_uploads_are_checked_and_served_by_id_only(client, tmp_path):
    ok = client.post(
        "/api/upload", files={"file": ("a b/../c.png", png_bytes())}, data={"kind": "image"}
    ).json()
    assert ok["width"] == 96 and ok["url"].endswith("/c.png")
    assert client.get(ok["url"]).headers["content-type"] == "image/png"
    bad = [
        (("x.exe", b"MZ"), "image", "not an image file"),
        (("x.png", b"\x89PNG\r\n"), "image", "not a readable image"),
        (("x.wav", b""), "audio", "is empty"),
        (("x.wav", b"RIFF0000WAVE"), "audio", "not a readable audio"),
        (("big.wav", b"\0" * 300_000), "audio", "larger than"),
        (("x.png", png_bytes()), "pdf", "unknown upload kind"),
    ]
    for file, kind, message in bad:
        r = client.post("/api/upload", files={"file": file}, data={"kind": kind})
        assert r.status_code == 400 and message in r.json()["detail"], (file[0], r.json())
    long = video_file(tmp_path / "long.mp4", seconds=4.0)
    r = client.post("/api/upload", files={"file": ("long.mp4", long.read_bytes())}, data={"kind": "video"})
    assert r.status_code == 400 and "up to 3 s" in r.json()["detail"]
    # nothing of a refused upload is kept
    store = client.app.state.studio.files
    assert len(list((store.root / "uploads").iterdir())) == 1


def test_no_path_reaches_the_filesystem(client):
    for url in ("/api/files/../../etc/passwd", "/api/files/nope/passwd", "/static/../server.py",
                "/static/%2e%2e/server.py", "/api/waveform/..%2f..%2fetc%2fpasswd"):  # fmt: skip
        r = client.get(url)
        assert r.status_code in (400, 404), url
        assert "root:" not in r.text
    up = client.post("/api/upload", files={"file": ("v.wav", wav_bytes(1.0))}, data={"kind": "audio"}).json()
    assert client.get(f"/api/files/{up['id']}/other.wav").status_code == 404  # id and name must match
    r = client.post("/api/sara/start", json={"base": "/etc", "folder": "stripes (procedural)"})
    assert r.status_code == 400 and "unknown base model" in r.json()["detail"]
    r = client.post("/api/drawaudio/generate", json={"video": up["id"], "stages": [{"prompt": "x"}]})
    assert r.status_code == 400 and "is an audio file; this needs video" in r.json()["detail"]


def test_inside_resolves_symlinks(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert FileStore.inside(root / "a", [root]) and not FileStore.inside(root / "link", [root])


def test_jobs_progress_cancel_and_one_per_kind():
    import torch

    jobs = JobManager()
    layer = torch.nn.Linear(2, 2)
    started = threading.Event()

    def work(job):
        with progress_hook(layer, job, 1000):
            for _ in range(1000):
                layer(torch.zeros(1, 2))
                started.set()
                time.sleep(0.001)
        return {"ok": True}

    job = jobs.start("x", work)
    started.wait(5)
    with pytest.raises(Busy):
        jobs.start("x", work)
    assert job.progress > 0 and job.message.startswith("step ")
    jobs.cancel(job.id)
    assert jobs.wait(job.id, 10).status == "cancelled" and job.result == {}
    failing = jobs.wait(jobs.start("x", lambda j: 1 / 0).id, 10)
    assert failing.status == "error" and "ZeroDivisionError" in failing.error
    assert jobs.wait(jobs.start("x", lambda j: {"v": 1}).id, 10).result == {"v": 1}
    j = Job("y")
    j.check()
    j.cancel_event.set()
    with pytest.raises(Cancelled):
        j.check()


def test_store_refuses_unknown_ids(tmp_path):
    store = FileStore(tmp_path)
    with pytest.raises(UploadError, match="unknown file id"):
        store.get("0123")


def test_cli_binds_localhost_by_default(monkeypatch):
    from typer.testing import CliRunner

    from fourfold.studio import cli, server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda cfg, host, port: seen.update(host=host, port=port, cfg=cfg))
    res = CliRunner().invoke(cli.app, ["--port", "7999"])
    assert res.exit_code == 0, res.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999 and seen["cfg"].models is None
    res = CliRunner().invoke(cli.app, ["--models", "/definitely/not/here"])
    assert res.exit_code != 0 and "not a folder" in res.output


def test_user_checkpoints_replace_the_tiny_models(tmp_path):
    """--models DIR with intra/ and songcreator/ checkpoints: the pages run them and say so."""
    from fourfold.intra.model import IntraModel
    from fourfold.studio.models import StudioModels

    scratch = StudioModels(None, tmp_path / "scratch")
    tiny_intra = scratch.get("intra")[0].model
    models = tmp_path / "models"
    tiny_intra.save_pretrained(models / "intra")
    scratch._build_tiny_songcreator(models / "songcreator")

    app = create_app(StudioConfig(models=models, work=tmp_path / "work"))
    client = TestClient(app)
    for system in ("intra", "songcreator"):
        info = client.get(f"/api/info/{system}").json()
        assert info == {"system": system, "source": str(models / system), "trained": True, "label": ""}
    grounder = app.state.studio.models.get("intra")[0]
    assert isinstance(grounder.model, IntraModel)
    for a, b in zip(grounder.model.state_dict().values(), tiny_intra.state_dict().values(), strict=True):
        assert (a == b).all()
    assert client.get("/api/info/nosuch").status_code == 404
    # a per-system path overrides --models
    other = StudioModels(models, tmp_path / "work2", paths={"songcreator": models / "songcreator"})
    assert other.get("songcreator")[1].source == str(models / "songcreator")
    with pytest.raises(FileNotFoundError, match="intra checkpoint folder not found"):
        StudioModels(None, tmp_path / "work3", paths={"intra": tmp_path / "missing"}).get("intra")


def _brush_png(w, h, box):
    import base64
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle(box, fill=(255, 255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_stage_mask_is_the_union_of_moving_boxes_and_brush():
    import numpy as np

    from fourfold.studio.pages.drawaudio import StageIn, stage_mask

    keys = {
        "frames": [
            {"t": 0.0, "boxes": [[0.0, 0.0, 0.25, 0.25]]},
            {"t": 1.0, "boxes": [[0.75, 0.0, 1.0, 0.25]]},
        ]
    }
    brush = _brush_png(160, 160, (0, 120, 159, 159))  # bottom quarter, drawn at display size
    only_boxes = stage_mask(StageIn(mask=keys), 11, 16, 16, 10.0)
    assert only_boxes.bitmap is None and len(only_boxes.keyframes) == 2
    only_brush = stage_mask(StageIn(brush=brush), 11, 16, 16, 10.0)
    assert (
        only_brush.bitmap.shape == (16, 16)
        and only_brush.bitmap[12:].all()
        and not only_brush.bitmap[:12].any()
    )
    both = stage_mask(StageIn(mask=keys, brush=brush), 11, 16, 16, 10.0).bitmap
    assert both.shape == (11, 16, 16)
    assert both[0, :4, :4].all() and not both[0, :4, 12:].any()  # the box starts top-left...
    assert both[10, :4, 12:].all() and not both[10, :4, :4].any()  # ...and ends top-right
    assert both[:, 12:].all()  # the brush holds in every frame
    assert np.array_equal(both[5, :4, 6:10], np.ones((4, 4)))  # halfway: interpolated
    with pytest.raises(ValueError, match="use the brush or the boxes alone"):
        stage_mask(StageIn(mask=keys, brush=brush), 1000, 1080, 1920, 25.0)


def test_large_video_refused_from_its_header(tmp_path):
    store = FileStore(tmp_path / "s", UploadLimits(max_video_megapixels=0.05))
    data = video_file(tmp_path / "v.mp4", seconds=2.0, size=64).read_bytes()
    with pytest.raises(UploadError, match="Mpx decoded"):
        store.save_upload("v.mp4", iter([data]), "video")


def test_sara_offers_only_image_folders_inside_data_roots(tmp_path):
    from tests.studio.helpers import png_bytes as png

    root, outside = tmp_path / "data", tmp_path / "outside"
    for d in (root / "style-a", outside):
        d.mkdir(parents=True)
        (d / "x.png").write_bytes(png())
        (d / "x.txt").write_text("a caption")
    (root / "escape").symlink_to(outside)
    app = create_app(StudioConfig(work=tmp_path / "work", data=[root]))
    names = [f["name"] for f in TestClient(app).get("/api/sara/options").json()["folders"]]
    assert "style-a" in names and "escape" not in names and "stripes (procedural)" in names


def _sara_values(app, sid):
    from fourfold.studio.pages.sara import _sara_state

    return {k: v.clone() for k, v in _sara_state(app.state.studio.sara_sessions[sid].unet)[0].items()}


def _sara_run(client, body):
    r = client.post("/api/sara/start", json=body)
    assert r.status_code == 200, r.text
    sid = r.json()["session"]
    job = client.app.state.studio.jobs.wait(r.json()["job"]["id"], 120)
    assert job.status == "done", job.error
    return sid


def test_sara_session_survives_a_studio_restart(tmp_path):
    """Stop a 30-step run early, close the studio, open a new one on the same --work: the session is listed,
    resumes where it stopped and ends bit-identical to an uninterrupted run; a changed base is refused."""
    import json

    import torch

    from fourfold.sara.tiny import build_tiny_sd_pipeline

    models = tmp_path / "models"
    build_tiny_sd_pipeline(
        models / "sara" / "mybase"
    )  # a user's base (the shipped one must not be altered below)
    body = {"base": "mybase", "folder": "stripes (procedural)", "steps": 30, "batch_size": 2}
    straight = TestClient(create_app(StudioConfig(work=tmp_path / "a", models=models)))
    sid = _sara_run(straight, body)
    expected = _sara_values(straight.app, sid)

    work = tmp_path / "b"
    first = TestClient(create_app(StudioConfig(work=work, models=models)))
    r = first.post("/api/sara/start", json=body)
    sid, job_id = r.json()["session"], r.json()["job"]["id"]
    jobs = first.app.state.studio.jobs
    while (jobs.get(job_id).live or {}).get("step", 0) < 16:  # past progressive re-selection (step 15)
        time.sleep(0.01)
    jobs.cancel(job_id)  # the page's Stop button
    assert jobs.wait(job_id, 60).status == "cancelled"
    meta = json.loads((work / "sara-sessions" / sid / "session.json").read_text())
    stopped = meta["step"]
    assert 16 <= stopped < 30 and len(meta["losses"]) == stopped and meta["handle"]["ppa_done"] == [15]
    del first

    second = TestClient(create_app(StudioConfig(work=work, models=models)))
    listed = second.get("/api/sara/sessions").json()["sessions"]
    assert [(m["session"], m["step"], m["total_steps"]) for m in listed] == [(sid, stopped, 30)]
    live = second.get(f"/api/sara/session/{sid}").json()
    assert live["step"] == stopped and live["losses"] == meta["losses"]
    r = second.post(f"/api/sara/resume/{sid}")
    assert r.status_code == 200, r.text
    job = second.app.state.studio.jobs.wait(r.json()["job"]["id"], 120)
    assert job.status == "done", job.error
    assert job.result["step"] == 30
    resumed = _sara_values(second.app, sid)
    assert set(resumed) == set(expected)
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key
    # bad ids never reach the filesystem; a base whose weights changed is refused by name
    assert second.get("/api/sara/session/..%2f..%2fetc").status_code == 404
    assert second.post("/api/sara/resume/0123456789").status_code == 404
    from safetensors.torch import load_file, save_file

    unet = models / "sara" / "mybase" / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(unet)
    weights = {k: v * 1.5 if v.ndim > 1 else v for k, v in weights.items()}
    save_file(weights, unet)
    third = TestClient(create_app(StudioConfig(work=work, models=models)))
    r = third.get(f"/api/sara/session/{sid}")
    assert r.status_code == 400 and "changed since it was saved" in r.json()["detail"], r.text


@pytest.mark.parametrize("kind", ["sdxl", "sd3"])
def test_sara_page_fine_tunes_sdxl_and_sd3_bases(tmp_path, kind):
    """--models DIR/sara/<name> may hold SDXL or SD3 directories too: the page trains and samples them."""
    from fourfold.sara import tiny

    models = tmp_path / "models"
    getattr(tiny, f"build_tiny_{kind}_pipeline")(models / "sara" / f"my{kind}")
    client = TestClient(create_app(StudioConfig(work=tmp_path / "work", models=models)))
    bases = {b["name"]: b["trained"] for b in client.get("/api/sara/options").json()["bases"]}
    assert bases[f"my{kind}"] is True
    sid = _sara_run(
        client, {"base": f"my{kind}", "folder": "stripes (procedural)", "steps": 2, "batch_size": 2}
    )
    live = client.get(f"/api/sara/session/{sid}").json()
    assert live["step"] == 2 and len(live["losses"]) == 2 and live["trainable"] > 0
    res = client.post(
        "/api/sara/compare", json={"session": sid, "prompt": "stripes", "alphas": [0, 1], "steps": 2}
    )
    assert res.status_code == 200, res.text
    assert [s["alpha"] for s in res.json()["samples"]] == [0, 1]
