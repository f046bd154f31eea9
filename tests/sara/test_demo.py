"""The digits demo: plumbing at micro scale (default run) and the quick demo's must-hold checks (slow)."""

import json

import pytest

from fourfold.sara.cli import run_demo
from fourfold.sara.demo import DemoConfig, run


def test_demo_plumbing_micro(tmp_path):
    cfg = DemoConfig(resolution=8, pretrain_steps=3, pretrain_batch=8, finetune_steps=2, finetune_batch=4,
                     samples_per_class=2, ddim_steps=2, digitnet_steps=3)  # fmt: skip
    res = run(tmp_path, cfg)
    rows = res.metrics["methods"]
    assert set(rows) == {
        "full FT",
        "LoRA",
        "SaRA",
        "SaRA w/o PPA",
        "SaRA w/o L_rank",
        "largest |w|",
        "random entries",
    }
    sara_k = rows["SaRA"]["trainable"]
    assert abs(rows["LoRA"]["trainable"] - sara_k) <= 0.1 * sara_k  # equal budget (spec §8)
    assert rows["largest |w|"]["trainable"] == rows["random entries"]["trainable"] == sara_k
    assert min(r["vlhi"] for r in rows.values()) >= 0.0 and max(r["vlhi"] for r in rows.values()) <= 2.0
    for fig in res.figures:
        assert (tmp_path / fig.path).is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["support"] == sara_k
    assert all("fd_fit_heldout" in r for r in rows.values())


def test_full_form_keeps_the_spec_recipe_on_the_shipped_base():
    from diffusers import UNet2DConditionModel

    full, quick = DemoConfig.full(), DemoConfig.quick()
    # spec §4 tiny fine-tuning recipe: 1,000 steps at batch 16 (PPA at half is SaraConfig's default 0.5)
    assert (full.finetune_steps, full.finetune_batch, full.finetune_images) == (1000, 16, 200)
    assert (full.fraction, full.lambda_rank, full.ddim_steps) == (0.05, 5e-3, 50)
    assert full.base_dir is not None and full.base_dir == quick.base_dir
    assert UNet2DConditionModel.load_config(full.base_dir)["sample_size"] == full.resolution
    with pytest.raises(ValueError, match="finetune_images"):
        DemoConfig(finetune_images=0)


@pytest.mark.slow
def test_quick_demo_every_method_fits_the_style(tmp_path):
    res = run_demo(tmp_path, quick=True)
    assert res.checks and all(res.checks.values()), res.checks


def test_fine_tune_style_must_be_new_to_the_base():
    with pytest.raises(ValueError, match="style"):
        DemoConfig(style="bold", known_styles=("bold", "inverse"))
    assert DemoConfig.quick().style not in DemoConfig.quick().known_styles
