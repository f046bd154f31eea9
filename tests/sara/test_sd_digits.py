"""The SaRA page's small Stable Diffusion: data, training entry point, and the shipped copy's behaviour."""

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fourfold.sara.sd_digits import (
    COLOURS,
    SHIPPED,
    WORDS,
    build_outline_folder,
    coloured_digits,
    train,
)


def test_coloured_digits_and_outline_folder(tmp_path):
    images, captions = coloured_digits()
    assert images.shape == (1797 * len(COLOURS), 32, 32, 3) and images.dtype == np.uint8
    assert len(captions) == len(images) and captions[0].split()[0] in COLOURS
    assert captions[0].split()[1] in WORDS
    red = [i for i, c in enumerate(captions) if c.startswith("red ")]
    ink = images[red].reshape(-1, 3)[images[red].reshape(-1, 3).max(1) > 150]
    assert (ink[:, 0] > ink[:, 2]).all()  # red ink is red
    outline, oc = coloured_digits("outline")
    assert oc[0].startswith("outline ") and (outline > 100).mean() < (images > 100).mean()
    folder = build_outline_folder(tmp_path / "outline", n=6)
    lines = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all((folder / x["file_name"]).is_file() for x in lines)
    assert all(x["text"].startswith("outline ") for x in lines)


def test_train_writes_a_loadable_sd_directory(tmp_path):
    from fourfold.sara.train import load_components

    torch.set_num_threads(1)
    summary = train(tmp_path / "sd", vae_steps=2, unet_steps=2, batch_size=4, vae_batch_size=4,
                    n_images=16, progress=False)  # fmt: skip
    assert summary["unet_steps"] == 2 and np.isfinite(summary["unet_final_loss"])
    unet, vae, *_ = load_components(tmp_path / "sd")
    assert vae.config.scaling_factor == pytest.approx(summary["scaling_factor"])
    assert unet.config.sample_size * 4 == 32
    assert json.loads((tmp_path / "sd" / "TRAINING.json").read_text())["command"].startswith("python -m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sd"
    ]  # the trainers' checkpoints are not left behind


@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="shipped base not built")
def test_shipped_base_draws_the_prompted_colour():
    """The shipped base learned its prompts: "red …" samples have red ink, "blue …" samples blue ink."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(
        SHIPPED, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def ink(prompt):
        out = pipe(prompt, num_inference_steps=15, guidance_scale=3.0, height=32, width=32, num_images_per_prompt=6,
                   generator=torch.Generator().manual_seed(1), output_type="np").images  # fmt: skip
        px = out.reshape(-1, 3)
        return px[px.max(1) > 0.5].mean(0)  # mean colour of the bright (ink) pixels

    red, blue = ink("red five"), ink("blue five")
    assert red[0] > red[2] + 0.2 and blue[2] > blue[0] + 0.2, (red, blue)


@pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason="shipped base not built")
def test_cli_defaults_to_the_shipped_base(tmp_path):
    """`fourfold sara finetune|generate` run on a fresh clone with no --model: the shipped base is used."""
    from typer.testing import CliRunner

    from fourfold.sara.cli import SHIPPED_BASE, app

    assert SHIPPED_BASE.resolve() == SHIPPED.resolve()
    folder = build_outline_folder(tmp_path / "outline", n=4)
    run = CliRunner().invoke(app, ["finetune", "--data", str(folder), "--out", str(tmp_path / "run"),
                                   "--steps", "2", "--batch-size", "2", "--fraction", "0.05", "--no-progress"])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    (tmp_path / "p.txt").write_text("outline red three\n")
    run = CliRunner().invoke(app, ["generate", "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "img"),
                                   "--adapter", str(tmp_path / "run" / "adapter"), "--steps", "2"])  # fmt: skip
    assert run.exit_code == 0, run.output
    from PIL import Image

    assert Image.open(tmp_path / "img" / "0000.png").size == (32, 32)
