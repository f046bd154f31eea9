"""The shipped procedural-tiny INTRA checkpoint loads and grounds through `fourfold intra infer`."""

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from fourfold.intra.cli import SHIPPED_CHECKPOINT, app


def test_infer_uses_the_shipped_checkpoint(tmp_path):
    assert (SHIPPED_CHECKPOINT / "model.safetensors").is_file()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(tmp_path / "obj.png")
    result = CliRunner().invoke(
        app,
        [
            "infer",
            "--image",
            str(tmp_path / "obj.png"),
            "--text",
            "hold",
            "--text",
            "cut with",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    heat = np.asarray(Image.open(tmp_path / "out" / "cut_with_heatmap.png"))
    assert heat.shape[:2] == (96, 80) and heat.max() > heat.min()
    assert (tmp_path / "out" / "hold_overlay.png").is_file()
