"""Tiny-scale pieces of SaRA: the demo's denoiser, prompt encoder, DigitNet and training runs (spec §4
"Tiny"), and random Stable Diffusion pipeline directories plus a captioned style folder for tests and the
studio (``build_tiny_sd_pipeline``, ``build_style_folder``, ``tiny_clip_tokenizer``).

The denoiser is a pixel-space diffusers ``UNet2DConditionModel`` (in/out 1 channel, blocks (32, 64), one
layer per block, cross-attention dim 32, head dim 8, 8 norm groups, ≈0.8M parameters); the "text encoder"
is a frozen seeded token table over ``fourfold.data.digits.TOKENS``; noise is DDPM (1000 linear β
1e-4..0.02, ε-prediction) and sampling is DDIM.
"""

from __future__ import annotations

import json
import string
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fourfold.data.digits import TOKENS

CROSS_DIM = 32
TOKEN_SEED = 1234  # the frozen token table is the same in every run


def tiny_unet(resolution: int = 16, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=resolution,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )


class TokenEncoder(nn.Module):
    """Frozen seeded embedding: ``(batch, 2)`` token ids → ``(batch, 2, 32)`` encoder hidden states."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(TOKEN_SEED)
        self.register_buffer("table", torch.randn(len(TOKENS), CROSS_DIM, generator=g))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]


def ddpm_scheduler():
    from fourfold.diffusion.schedulers import make_scheduler

    return make_scheduler(
        "ddpm",
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="epsilon",
        clip_sample=False,
    )


@torch.no_grad()
def sample_images(
    unet, tokens: torch.Tensor, resolution: int, steps: int, seed: int, batch: int = 250
) -> torch.Tensor:
    """DDIM samples for prompt tokens ``(n, 2)`` → images ``(n, 1, r, r)`` clamped to [−1, 1]."""
    from fourfold.diffusion.guidance import sample
    from fourfold.diffusion.schedulers import make_scheduler

    enc = TokenEncoder()
    ddim = make_scheduler("ddim", source=ddpm_scheduler(), clip_sample=False)
    gen = torch.Generator().manual_seed(seed)
    was = unet.training
    unet.eval()
    out = []
    for lo in range(0, tokens.shape[0], batch):
        tk = tokens[lo : lo + batch]
        x = sample(unet, ddim, [{"encoder_hidden_states": enc(tk)}], (), shape=(tk.shape[0], 1, resolution, resolution),
                   num_inference_steps=steps, generator=gen)  # fmt: skip
        out.append(x.clamp(-1, 1))
    unet.train(was)
    return torch.cat(out)


class DigitNet(nn.Module):
    """Judge network: 64-d penultimate features, heads for the digit (10) and the style (plain/styled)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, 64), nn.ReLU(),
        )  # fmt: skip
        self.digit = nn.Linear(64, 10)
        self.style = nn.Linear(64, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return self.digit(f), self.style(f)


def train_digitnet(
    images: torch.Tensor, digits: torch.Tensor, styles: torch.Tensor, steps: int, seed: int = 0
) -> DigitNet:
    """Fit DigitNet on S ∪ T with a fixed seed (Adam 2e-3, batch 128)."""
    torch.manual_seed(seed)
    net = DigitNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (128,), generator=g)
        ld, ls = net(images[idx])
        loss = F.cross_entropy(ld, digits[idx]) + F.cross_entropy(ls, styles[idx])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return net.eval()


@dataclass
class RunStats:
    """What one training run cost."""

    step_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    state_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def median_step_s(self) -> float:
        return float(np.median(self.step_seconds)) if self.step_seconds else float("nan")


def train_denoiser(
    unet: nn.Module,
    data,
    out_dir: Path,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    params: list[torch.Tensor] | None = None,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    extra_loss: Callable[[int], torch.Tensor] | None = None,
    on_step: Callable[[torch.optim.Optimizer, int], None] | None = None,
    seed: int = 0,
) -> RunStats:
    """ε-prediction MSE on ``data`` items (``image``, ``tokens``) through the shared Trainer."""
    from fourfold.diffusion.training import training_step
    from fourfold.metrics.memory import state_bytes
    from fourfold.train import Trainer, TrainerConfig

    scheduler, enc = ddpm_scheduler(), TokenEncoder()
    stats = RunStats()
    holder: dict[str, Trainer] = {}

    def loss_fn(model, batch):
        loss = training_step(
            model, scheduler, batch["image"], {"encoder_hidden_states": enc(batch["tokens"])}
        ).loss
        if extra_loss is not None:
            loss = loss + extra_loss(holder["t"].step)
        return loss

    last = [time.perf_counter()]

    def callback(trainer, step):
        now = time.perf_counter()
        stats.step_seconds.append(now - last[0])
        if on_step is not None:
            on_step(trainer.optimizer, step)
        last[0] = time.perf_counter()

    cfg = TrainerConfig(
        output_dir=str(out_dir), max_steps=steps, batch_size=batch_size, learning_rate=lr,
        weight_decay=weight_decay, lr_schedule=schedule, max_grad_norm=1.0, seed=seed, log_every=max(1, steps // 10),
        save_final_checkpoint=False, progress=False, cpu=True,
    )  # fmt: skip
    trainer = Trainer(unet, cfg, data, loss_fn, params=params, callbacks=[callback])
    holder["t"] = trainer
    last[0] = time.perf_counter()
    result = trainer.fit()
    stats.losses = result.losses
    stats.state_bytes = state_bytes(unet, trainer.optimizer)
    return stats


def save_grid(images: torch.Tensor, nrow: int, path: Path, scale: int = 4) -> None:
    """Images ``(n, 1, r, r)`` in [−1, 1] → a PNG grid with ``nrow`` images per row (nearest upscaling)."""
    from PIL import Image

    n, _, r, _ = images.shape
    rows = (n + nrow - 1) // nrow
    canvas = np.full((rows * (r + 1) + 1, nrow * (r + 1) + 1), 128, dtype=np.uint8)
    pix = ((images[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    for i in range(n):
        y, x = divmod(i, nrow)
        canvas[1 + y * (r + 1) : 1 + y * (r + 1) + r, 1 + x * (r + 1) : 1 + x * (r + 1) + r] = pix[i]
    img = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# ---- tiny random Stable Diffusion directories (tests, studio; no download) ----

TINY_SD_MAX_LEN = 24  # tokenizer / text-encoder context length of the tiny pipeline
_TOKEN_CHARS = string.ascii_lowercase + string.digits + ",.<>!?'-"


def tiny_clip_tokenizer(folder: Path | None = None):
    """A character-level ``CLIPTokenizer`` (no merges) → ``(tokenizer, vocab_size)``.

    Its vocabulary and merges files are written to ``folder`` (a temporary folder when ``None``); the
    tokenizer keeps what it needs in memory, so the folder may be deleted afterwards.
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in _TOKEN_CHARS:
            vocab[c + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory(prefix="tiny-clip-tok-") as tmp:
        d = Path(folder) if folder is not None else Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        (d / "vocab.json").write_text(json.dumps(vocab))
        (d / "merges.txt").write_text("#version: 0.2\n")
        tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=TINY_SD_MAX_LEN)
    return tok, len(vocab)


def tiny_clip_text_encoder(vocab_size: int):
    """A random 2-layer width-32 ``CLIPTextModel`` over ``tiny_clip_tokenizer``'s vocabulary (uses the RNG)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=TINY_SD_MAX_LEN, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    ))  # fmt: skip


def sd_ddpm_scheduler():
    """SD1.5's training noise schedule: DDPM, 1,000 scaled-linear β from 0.00085 to 0.012, ε-prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False, steps_offset=1)  # fmt: skip


def build_tiny_sd_pipeline(root: Path, seed: int = 0) -> Path:
    """Save a random SD1.x-layout ``StableDiffusionPipeline`` directory at ``root`` (written atomically).

    UNet ``UNet2DConditionModel`` blocks (16, 32) on 4×8×8 latents, cross-attention 32; VAE blocks (8, 16)
    (16 px images); 2-layer width-32 CLIP text encoder with ``tiny_clip_tokenizer``; DDPM scaled-linear
    0.00085..0.012 as SD1.5. Same ``seed`` → identical weights. Returns ``root``.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    from fourfold.nn.modeling import atomic_write_dir

    tok, vocab_size = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], latent_channels=4, norm_num_groups=8,
        sample_size=16,
    )  # fmt: skip
    text = tiny_clip_text_encoder(vocab_size)
    sched = sd_ddpm_scheduler()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    return atomic_write_dir(Path(root), lambda tmp: pipe.save_pretrained(tmp))


def build_style_folder(
    root: Path, n: int = 8, size: int = 32, caption: str = "stripes", seed: int = 0
) -> Path:
    """Save a captioned image folder (image-folder convention, ``metadata.jsonl``) at ``root``, atomically.

    ``n`` RGB ``size``×``size`` PNGs of diagonal stripes in warm colours (random period, phase and hue):
    a consistent "style" to learn. Captions are ``f"{caption} {i}"``. Returns ``root``.
    """
    from PIL import Image

    from fourfold.nn.modeling import atomic_write_dir

    def write(tmp: Path) -> None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size]
        lines = []
        for i in range(n):
            period = rng.integers(4, 9)
            stripes = ((xx + yy + rng.integers(0, 8)) // period) % 2
            colour = np.array([230, rng.integers(60, 160), 40])
            arr = np.where(stripes[..., None] == 1, colour, 255 - colour // 3).astype(np.uint8)
            Image.fromarray(arr).save(tmp / f"stripes{i}.png")
            lines.append(json.dumps({"file_name": f"stripes{i}.png", "text": f"{caption} {i}"}))
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n")

    return atomic_write_dir(Path(root), write)


def _tiny_clip_text(vocab_size: int, with_projection: bool, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=TINY_SD_MAX_LEN, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1, projection_dim=32, hidden_act="gelu",
    )  # fmt: skip
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def _tiny_vae(**kw):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], latent_channels=4, norm_num_groups=8,
        sample_size=16, **kw,
    )  # fmt: skip


def build_tiny_sdxl_pipeline(root: Path, seed: int = 0) -> Path:
    """Save a random SDXL-layout ``StableDiffusionXLPipeline`` directory at ``root`` (atomically).

    Two width-32 CLIP text encoders (the second with a 32-d projection), UNet with ``text_time`` added
    conditioning (cross-attention 64 = both encoders' states concatenated), 4×8×8 latents, 16 px images.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from fourfold.nn.modeling import atomic_write_dir

    tok, vocab_size = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids × 8 + pooled text (32)
    )  # fmt: skip
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   timestep_spacing="leading", steps_offset=1)  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(), text_encoder=_tiny_clip_text(vocab_size, False, seed + 1),
        text_encoder_2=_tiny_clip_text(vocab_size, True, seed + 2), tokenizer=tok, tokenizer_2=tok, unet=unet,
        scheduler=sched,
    )  # fmt: skip
    return atomic_write_dir(Path(root), lambda tmp: pipe.save_pretrained(tmp))


def build_tiny_sd3_pipeline(root: Path, seed: int = 0) -> Path:
    """Save a random SD3-layout ``StableDiffusion3Pipeline`` directory at ``root`` (atomically).

    One-layer ``SD3Transformer2DModel`` (patch 1, 4 heads × 8, joint attention 64), two width-32 CLIP text
    encoders with projections (pooled 64), no T5 (``text_encoder_3=None``, allowed by diffusers), a VAE
    with SD3's shift/scaling factors, flow-matching Euler scheduler; 4×8×8 latents, 16 px images.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from fourfold.nn.modeling import atomic_write_dir

    tok, vocab_size = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=64, pooled_projection_dim=64, out_channels=4,
    )  # fmt: skip
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_vae(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_tiny_clip_text(vocab_size, True, seed + 1), tokenizer=tok,
        text_encoder_2=_tiny_clip_text(vocab_size, True, seed + 2), tokenizer_2=tok,
        text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    return atomic_write_dir(Path(root), lambda tmp: pipe.save_pretrained(tmp))
