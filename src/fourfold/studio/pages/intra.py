"""INTRA page API: ground several action texts on one object image; score every action at a pixel.

``IntraGrounder.ground_many`` gives one (H, W) map per text at the image's size; overlays use the
pipeline's own ``overlay`` (jet, LOCATE style). Maps stay in memory (a few per session) so a click asks
for the values at one pixel without running the model again.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

import numpy as np
from pydantic import BaseModel, Field

MAX_ACTIONS = 12


class GroundIn(BaseModel):
    image: str
    actions: list[str] = Field(min_length=1, max_length=MAX_ACTIONS)


def parse_actions(actions: list[str]) -> list[str]:
    """Strip, drop empties and duplicates (order kept); refuse an empty list."""
    seen: list[str] = []
    for a in actions:
        a = " ".join(a.split())
        if a and a not in seen:
            seen.append(a)
    if not seen:
        raise ValueError("type at least one action (e.g. 'hold', 'cut with')")
    return seen


def router(studio):
    from fastapi import APIRouter, HTTPException

    r = APIRouter(prefix="/api/intra")
    results: OrderedDict[str, tuple[list[str], np.ndarray]] = OrderedDict()
    lock = threading.Lock()
    bundled: list = []

    @r.get("/bundled")
    def list_bundled():
        with lock:
            if not bundled:
                path = studio.work / "bundled" / "mug.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                _draw_mug(path)
                bundled.append(
                    studio.files.add(
                        path, "bundled", name="mug (drawn)", media="image", width=160, height=160
                    )
                )
        return [f.to_dict() for f in bundled]

    @r.post("/ground")
    def ground(req: GroundIn):
        grounder = studio.models.get("intra")[0]
        f = studio.files.get(req.image, "image")
        actions = parse_actions(req.actions)
        heats = grounder.ground_many(str(f.path), actions)  # (K, H, W) in [0, 1]
        d = studio.files.new_output_dir("intra")
        overlays = []
        for k, (action, heat) in enumerate(zip(actions, heats, strict=True)):
            path = d / f"overlay{k}.png"
            grounder.overlay(str(f.path), heat).save(path)
            overlays.append({"action": action, **studio.files.output(path, "image").to_dict(),
                             "peak": [float(v) for v in np.unravel_index(np.argmax(heat), heat.shape)]})  # fmt: skip
        rid = uuid.uuid4().hex[:12]
        with lock:
            results[rid] = (actions, heats)
            while len(results) > 16:
                results.popitem(last=False)
        return {
            "result": rid,
            "overlays": overlays,
            "height": int(heats.shape[1]),
            "width": int(heats.shape[2]),
        }

    @r.get("/score/{result_id}")
    def score(result_id: str, x: float, y: float):
        """Scores at the normalised point (x, y) in [0, 1] of every action of a grounding result."""
        if result_id not in results:
            raise HTTPException(404, "unknown grounding result: ground the image again")
        if not (0 <= x <= 1 and 0 <= y <= 1):
            raise ValueError(f"x and y are normalised to [0, 1], got ({x}, {y})")
        actions, heats = results[result_id]
        h, w = heats.shape[1:]
        row, col = min(int(y * h), h - 1), min(int(x * w), w - 1)
        return {"row": row, "col": col, "scores": [{"action": a, "score": float(heats[k, row, col])}
                                                   for k, a in enumerate(actions)]}  # fmt: skip

    return r


def _draw_mug(path) -> None:
    """A simple drawn mug (body + handle) for trying the page without an image of one's own."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160, 160), (236, 232, 224))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((40, 40, 110, 130), radius=8, fill=(40, 90, 170), outline=(20, 40, 90), width=3)
    d.arc((95, 60, 140, 110), start=270, end=90, fill=(20, 40, 90), width=8)
    d.ellipse((40, 32, 110, 48), fill=(70, 120, 200), outline=(20, 40, 90), width=3)
    img.save(path)


__all__ = ["GroundIn", "parse_actions", "router"]
