"""The shipped SaRA base: a small Stable Diffusion trained on coloured digits at 32×32.

It is the default ``--model`` of ``fourfold sara finetune|generate|merge`` and the studio SaRA page's base,
so those run on a fresh clone; a user's own diffusers directory replaces it by path.

SaRA fine-tunes a *pretrained* diffusion model; with a random base its before/after samples are noise. This
module trains, on CPU in minutes, a complete Stable-Diffusion-layout directory (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``model_index.json``) that ``diffusers``'
``StableDiffusionPipeline.from_pretrained`` and ``fourfold sara finetune|generate`` load like any SD 1.x
folder:

- data: scikit-learn's 8×8 digits resized to 32×32, drawn in one of five ink colours on a dark ground,
  captioned ``"<colour> <digit word>"`` (e.g. ``"red three"``);
- VAE: ``AutoencoderKL`` (16/32/32 channels, 4 latent channels, 4× down-sampling → 8×8×4 latents), trained
  on reconstruction (L1) + a small KL term; its ``scaling_factor`` is set to 1/std of the latents as SD does;
- text encoder: a frozen random ``CLIPTextModel`` over ``fourfold.sara.tiny.tiny_clip_tokenizer`` (as SD keeps its
  text encoder frozen; random features still tell the prompts apart);
- UNet: ``UNet2DConditionModel`` (32/64 channels, cross-attention 32), ε-prediction on the DDPM
  ``scaled_linear`` schedule, 10 % empty prompts so classifier-free guidance works.

The matching SaRA style folder (``build_outline_folder``) holds the same digits drawn as outlines and
captioned ``"outline <colour> <digit>"``: a style the base never saw, reachable by re-training its small
weights, as in the paper's style fine-tuning.

The shipped copy (``SHIPPED``) was made with::

    python -m fourfold.sara.sd_digits --out src/fourfold/sara/assets/digits-sd-tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from fourfold.sara.tiny import TINY_SD_MAX_LEN

SHIPPED = Path(__file__).parent / "assets" / "digits-sd-tiny"
RESOLUTION = 32
COLOURS = {
    "red": (235, 64, 52),
    "green": (60, 200, 90),
    "blue": (70, 110, 245),
    "yellow": (245, 215, 60),
    "white": (235, 235, 235),
}
GROUND = (24, 26, 36)
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def coloured_digits(style: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Every digit in every colour: ``(1797 · 5, 32, 32, 3)`` uint8 and captions ``"red three"``.

    ``style="outline"`` draws the digits' morphological gradient instead (the SaRA target style) and
    prefixes the captions with ``"outline "``.
    """
    from fourfold.data.digits import apply_style, load_digit_images

    ink, labels = load_digit_images(RESOLUTION)  # (n, 1, 32, 32) in [-1, 1]
    if style is not None:
        ink = apply_style(ink, style)
    alpha = ((ink[:, 0] + 1) / 2).clamp(0, 1).numpy()[..., None]  # (n, 32, 32, 1)
    ground = np.array(GROUND, dtype=np.float32)
    images, captions = [], []
    for name, rgb in COLOURS.items():
        img = ground + alpha * (np.array(rgb, dtype=np.float32) - ground)
        images.append(img.round().astype(np.uint8))
        prefix = f"{style} " if style else ""
        captions += [f"{prefix}{name} {WORDS[int(d)]}" for d in labels]
    return np.concatenate(images), captions


def build_outline_folder(root: Path, n: int = 20, seed: int = 0) -> Path:
    """``n`` outline-style digits (PNG + ``metadata.jsonl`` captions): the SaRA page's style folder."""
    from PIL import Image

    from fourfold.nn.modeling import atomic_write_dir

    images, captions = coloured_digits("outline")
    pick = np.random.default_rng(seed).choice(len(images), n, replace=False)

    def write(tmp: Path) -> None:
        lines = []
        for k, i in enumerate(pick):
            Image.fromarray(images[i]).save(tmp / f"outline{k:02d}.png")
            lines.append(json.dumps({"file_name": f"outline{k:02d}.png", "text": captions[i]}))
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n")

    return atomic_write_dir(root, write)


def _components(seed: int, tok_dir: Path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from fourfold.sara.tiny import sd_ddpm_scheduler, tiny_clip_text_encoder, tiny_clip_tokenizer

    tok, vocab_size = tiny_clip_tokenizer(tok_dir)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[16, 32, 32], latent_channels=4,
        norm_num_groups=8, sample_size=RESOLUTION,
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 4, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=8,
    )  # fmt: skip
    return vae, unet, tiny_clip_text_encoder(vocab_size), tok, sd_ddpm_scheduler()


def train(out: Path, vae_steps: int = 1000, unet_steps: int = 3000, batch_size: int = 32, seed: int = 0,
          progress: bool = True, vae_batch_size: int = 16, n_images: int | None = None) -> dict:  # fmt: skip
    """Train VAE then UNet on the coloured digits and save the pipeline to ``out`` (atomically).

    ``n_images`` trains on a seeded subset (for smoke tests); by default all 8,985 images are used.
    The trainers' checkpoints live in a temporary folder and are removed.
    """
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="fourfold-sd-digits-") as work:
        return _train(
            out, Path(work), vae_steps, unet_steps, batch_size, seed, progress, vae_batch_size, n_images
        )


def _train(out: Path, work: Path, vae_steps: int, unet_steps: int, batch_size: int, seed: int, progress: bool,
           vae_batch_size: int, n_images: int | None) -> dict:  # fmt: skip
    from diffusers import StableDiffusionPipeline

    from fourfold.diffusion.training import training_step
    from fourfold.nn.modeling import atomic_write_dir
    from fourfold.train import Trainer, TrainerConfig

    vae, unet, text, tok, sched = _components(seed, work / "tokenizer-src")
    images, captions = coloured_digits()
    if n_images is not None:
        keep = np.random.default_rng(seed).choice(len(images), n_images, replace=False)
        images, captions = images[keep], [captions[i] for i in keep]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (n, 3, 32, 32)
    t0 = time.time()

    def vae_loss(model, batch):
        (x,) = batch  # (b, 3, 32, 32) in [-1, 1]
        post = model.encode(x).latent_dist
        recon = model.decode(post.sample()).sample
        l1 = F.l1_loss(recon, x)
        kl = post.kl().mean() / x[0].numel()
        return l1 + 1e-4 * kl, {"l1": float(l1.detach()), "kl": float(kl.detach())}

    cfg = TrainerConfig(output_dir=str(work / "vae"), max_steps=vae_steps, batch_size=vae_batch_size,
                        learning_rate=1e-3, lr_schedule="cosine", warmup_steps=50, seed=seed,
                        log_every=100, progress=progress)  # fmt: skip
    vae_result = Trainer(vae, cfg, TensorDataset(pixels), vae_loss).fit()
    vae.eval().requires_grad_(False)

    with torch.no_grad():
        latents = torch.cat([vae.encode(p).latent_dist.mode() for p in pixels.split(256)])
        scaling = float(1.0 / latents.std())
        vae.register_to_config(scaling_factor=scaling)
        ids = tok(
            captions, padding="max_length", max_length=TINY_SD_MAX_LEN, truncation=True, return_tensors="pt"
        )
        empty = tok([""], padding="max_length", max_length=TINY_SD_MAX_LEN, return_tensors="pt").input_ids
        text.eval().requires_grad_(False)
        cond = torch.cat([text(i)[0] for i in ids.input_ids.split(512)])  # (n, 24, 32)
        uncond = text(empty)[0][0]  # (24, 32)
    gen = torch.Generator().manual_seed(seed)

    def unet_loss(model, batch):
        latents, enc = batch  # (b, 4, 8, 8) unscaled VAE means, (b, 24, 32) prompt embeddings
        enc = enc.clone()
        drop = torch.rand(len(enc), generator=gen) < 0.1  # classifier-free guidance dropout
        enc[drop] = uncond
        z0 = latents * scaling
        return training_step(model, sched, z0, {"encoder_hidden_states": enc}, generator=gen).loss

    cfg = TrainerConfig(output_dir=str(work / "unet"), max_steps=unet_steps, batch_size=batch_size,
                        learning_rate=1e-3, lr_schedule="cosine", warmup_steps=100, seed=seed,
                        log_every=100, max_grad_norm=1.0, progress=progress)  # fmt: skip
    unet_result = Trainer(unet, cfg, TensorDataset(latents, cond), unet_loss).fit()
    unet.eval()

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    summary = {"vae_steps": vae_steps, "vae_batch_size": vae_batch_size, "unet_steps": unet_steps,
               "batch_size": batch_size, "seed": seed,
               "vae_final_loss": float(np.mean(vae_result.losses[-50:])),
               "unet_final_loss": float(np.mean(unet_result.losses[-50:])), "scaling_factor": scaling,
               "seconds": round(time.time() - t0, 1),
               "command": f"python -m fourfold.sara.sd_digits --out {out}"}  # fmt: skip

    def write(tmp: Path) -> None:
        pipe.save_pretrained(tmp)
        (tmp / "TRAINING.json").write_text(json.dumps(summary, indent=2) + "\n")

    atomic_write_dir(out, write)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=SHIPPED)
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--unet-steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(train(a.out, a.vae_steps, a.unet_steps, a.batch_size, a.seed), indent=2))


if __name__ == "__main__":
    main()
