"""Draw an Audio page API: bundled clips, frame scrubbing, loudness from a reference, generation.

A generation request carries the video's file id and one or more stages, each with a prompt, a mask
(keyframed boxes in ``mask.json`` form, a brushed bitmap, or both: their union), a loudness curve (values
in [0, 1] spread evenly over the clip, as drawn) and a gain. One stage calls ``DrawAudioPipeline(...)``;
several call ``DrawAudioPipeline.compose``. Every denoiser call advances the job's progress and is a
cancellation point.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from fourfold.studio.jobs import Job, progress_hook
from fourfold.studio.plots import save_mel_png

BUNDLED_SEEDS = (3, 11)
DISPLAY_SIDE = 320  # frames served for scrubbing are at most this many pixels on a side
MAX_UNION_PIXELS = 60_000_000  # brush + boxes become one float32 bitmap per frame: cap it at 240 MB  # two BounceFoley clips (fourfold.data.bouncing), written at first use


class StageIn(BaseModel):
    prompt: str = ""
    mask: dict | None = None  # {"frames": [{"t": s, "boxes": [[x0, y0, x1, y1], ...]}, ...]} normalised
    brush: str | None = None  # data:image/png;base64,... of the brush layer (alpha > 0 = inside)
    curve: list[float] | None = None  # values in [0, 1], evenly spread over the clip
    gain_db: float = 0.0


class GenerateIn(BaseModel):
    video: str
    stages: list[StageIn] = Field(min_length=1, max_length=8)
    steps: int = Field(default=20, ge=1, le=200)
    seed: int = 0
    cfg: str = "dual"
    guidance_video: float | None = None
    guidance_text: float | None = None
    negative_prompt: str | None = None


class CurveIn(BaseModel):
    audio: str
    points: int = Field(default=64, ge=4, le=2048)


class _Frames:
    """A small LRU of decoded videos for scrubbing, at display size."""

    def __init__(self, size: int = 4) -> None:
        self.size, self._d, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, path: Path) -> np.ndarray:
        from fourfold.audio import io as aio

        with self._lock:
            if path in self._d:
                self._d.move_to_end(path)
                return self._d[path]
        frames = aio.read_video(path, with_audio=False)[0]
        h, w = frames.shape[1:3]
        if max(h, w) > DISPLAY_SIDE:  # keep only what the page shows: the cache stays small
            from PIL import Image

            size = (max(1, round(w * DISPLAY_SIDE / max(h, w))), max(1, round(h * DISPLAY_SIDE / max(h, w))))
            frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])
        with self._lock:
            self._d[path] = frames
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return frames


def brush_bitmap(data_url: str, height: int, width: int) -> np.ndarray:
    """A brush layer PNG (data URL) -> (H, W) float32 {0, 1} at the video's size (nearest resize)."""
    from PIL import Image

    head, _, payload = data_url.partition(",")
    if not head.startswith("data:image/png;base64"):
        raise ValueError("brush must be a PNG data URL")
    try:
        img = Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGBA")
    except Exception as err:
        raise ValueError(f"cannot decode the brush layer: {err}") from err
    alpha = img.getchannel("A").resize((width, height), Image.NEAREST)
    return (np.asarray(alpha) > 0).astype(np.float32)


def stage_mask(stage: StageIn, n_frames: int, h: int, w: int, fps: float):
    """Boxes (keyframed) and/or brush -> a MaskInput (keyframes alone) or a per-frame bitmap (union)."""
    from fourfold.drawaudio.masks import MaskInput

    boxes = MaskInput.from_dict(stage.mask, "mask") if stage.mask and stage.mask.get("frames") else None
    if stage.brush is None:
        return boxes
    brush = brush_bitmap(stage.brush, h, w)
    if boxes is None:
        return MaskInput.from_array(brush) if brush.any() else None
    if n_frames * h * w > MAX_UNION_PIXELS:
        raise ValueError(
            f"a brush together with boxes needs a per-frame mask of {n_frames}x{h}x{w} pixels; "
            "use the brush or the boxes alone on a video this large, or a shorter/smaller clip"
        )
    bitmap = np.maximum(
        np.broadcast_to(brush, (n_frames, h, w)), boxes.render(np.arange(n_frames) / fps, h, w)
    )
    return MaskInput.from_array(bitmap)


def _windows(total: float, win: float, overlap: float) -> int:
    starts = [0.0]
    while starts[-1] + win < total - 1e-6:
        starts.append(starts[-1] + win - overlap)
    return len(starts)


def router(studio):
    from fastapi import APIRouter
    from fastapi.responses import Response

    r = APIRouter(prefix="/api/drawaudio")
    frames_cache = _Frames()
    bundled: list = []
    lock = threading.Lock()

    def pipe():
        return studio.models.get("drawaudio")[0]

    @r.get("/bundled")
    def list_bundled():
        from fourfold.data.bouncing import make_clip, write_clip

        with lock:
            if not bundled:
                folder = studio.work / "bundled"
                for seed in BUNDLED_SEEDS:
                    clip = make_clip(seed)
                    paths = write_clip(clip, folder, f"bounce{seed}")
                    info = studio.files._check_video(paths["mp4"], paths["mp4"].name)
                    bundled.append(studio.files.add(paths["mp4"], "bundled", name=f"{clip.caption} (seed {seed})",
                                                    media="video", caption=clip.caption, **info))  # fmt: skip
                    ref = studio.files.add(paths["wav"], "bundled", name=f"bounce{seed}.wav", media="audio",
                                           **studio.files._check_audio(paths["wav"], "wav"))  # fmt: skip
                    bundled[-1].info["reference_audio"] = ref.to_dict()
        return [f.to_dict() for f in bundled]

    @r.get("/frame/{file_id}")
    def frame(file_id: str, i: int = 0):
        from PIL import Image

        f = studio.files.get(file_id, "video")
        frames = frames_cache.get(f.path)
        k = int(np.clip(i, 0, len(frames) - 1))
        buf = io.BytesIO()
        Image.fromarray(frames[k]).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @r.post("/curve_from_audio")
    def curve_from_audio(req: CurveIn):
        from fourfold.audio import io as aio
        from fourfold.audio.loudness import LoudnessCurve

        f = studio.files.get(req.audio, "audio")
        p = pipe()
        wav, sr = aio.load_audio(f.path, sr=p.cfg.mel.sample_rate)
        curve = LoudnessCurve.from_audio(wav, sr, p.cfg.mel, pool=p.cfg.base.vae_factor)
        values = curve.resample(req.points)
        return {"values": [float(v) for v in values], "duration": len(wav) / sr}

    @r.post("/generate")
    def generate(req: GenerateIn):
        from fourfold.drawaudio.pipeline import Stage

        video = studio.files.get(req.video, "video")
        if req.cfg not in ("dual", "joint"):
            raise ValueError(f"cfg must be 'dual' or 'joint', got {req.cfg!r}")
        p = pipe()  # loads the model before the job starts (first call builds the tiny one)
        n, fps, h, w = (video.info[k] for k in ("frames", "fps", "height", "width"))
        stages = []
        for i, st in enumerate(req.stages):  # validate everything before the job starts
            try:
                mask = stage_mask(st, n, h, w, float(fps))
                curve = None if not st.curve else np.asarray(st.curve, dtype=np.float64)
                if curve is not None:
                    from fourfold.audio.loudness import LoudnessCurve

                    LoudnessCurve(curve)
            except ValueError as err:
                raise ValueError(f"stage {i + 1}: {err}") from err
            stages.append(Stage(prompt=st.prompt, mask=mask, loudness=curve, gain_db=st.gain_db))

        def run(job: Job) -> dict:
            g = p.cfg.guidance
            total = n / fps
            n_calls = (
                req.steps
                * _windows(total, p.cfg.duration, min(g.window_overlap, p.cfg.duration / 2))
                * len(stages)
            )
            kw = dict(num_inference_steps=req.steps, seed=req.seed, cfg=req.cfg, guidance_video=req.guidance_video,
                      guidance_text=req.guidance_text, negative_prompt=req.negative_prompt or None)  # fmt: skip
            with progress_hook(p.model, job, n_calls, 0.0, 0.95, "denoising step"):
                if len(stages) == 1:
                    st = stages[0]
                    out = p(str(video.path), prompt=st.prompt, mask=st.mask, loudness=st.loudness, **kw)
                    if st.gain_db:
                        out.audio = np.clip(out.audio * 10 ** (st.gain_db / 20), -1, 1).astype(np.float32)
                else:
                    out = p.compose(str(video.path), stages, **kw)
            job.update(0.96, "writing audio and video")
            return _write_outputs(studio, p, out, stages)

        return studio.jobs.start("drawaudio", run).to_dict()

    return r


def _write_outputs(studio, p, out, stages) -> dict:
    from fourfold.audio.loudness import LoudnessCurve
    from fourfold.audio.mel import mel_spectrogram

    d = studio.files.new_output_dir("drawaudio")
    sr = out.sample_rate
    paths = out.save(d / "drawaudio.wav", mux_video=d / "drawaudio.mp4")
    wav = studio.files.output(paths["wav"], "audio", duration=out.audio.shape[-1] / sr)
    mp4 = studio.files.output(paths["mp4"], "video", duration=out.audio.shape[-1] / sr)
    import torch

    mel = mel_spectrogram(torch.from_numpy(out.audio[0]), p.cfg.mel).numpy()
    mel_png = studio.files.output(
        save_mel_png(mel, d / "mel.png", sr, p.cfg.mel.hop_length, "generated mel spectrogram"), "image"
    )
    pool = p.cfg.base.vae_factor
    achieved = (
        LoudnessCurve.from_audio(out.audio[0], sr, p.cfg.mel, pool=pool).values
        if np.any(out.audio[0])
        else None
    )
    drawn = [None if st.loudness is None else LoudnessCurve(st.loudness).resample(len(achieved) if achieved is not None else 64).tolist()
             for st in stages]  # fmt: skip
    stems = []
    if out.stems is not None:
        from fourfold.audio import io as aio

        for k, stem in enumerate(out.stems):
            path = aio.save_audio(d / f"stage{k + 1}.wav", stem[0], sr)
            stems.append(studio.files.output(path, "audio", duration=stem.shape[-1] / sr).to_dict())
    return {
        "audio": wav.to_dict(), "video": mp4.to_dict(), "mel": mel_png.to_dict(), "stems": stems,
        "duration": out.audio.shape[-1] / sr, "sample_rate": sr,
        "loudness": {"achieved": None if achieved is None else achieved.tolist(), "drawn": drawn},
    }  # fmt: skip


__all__ = ["GenerateIn", "StageIn", "brush_bitmap", "router", "stage_mask"]
