"""Real-scale SaRA fine-tuning of a diffusers text-to-image model directory (spec §2 "Training loss", §4).

As diffusers' ``train_text_to_image.py``: latents = VAE(x)·scaling_factor, t ~ U{0..T−1}, target ε or v per
the scheduler's ``prediction_type``, MSE (mean, fp32); the text encoder is frozen; caption = prefix +
caption; only the denoiser is wrapped. SD1.x/2.x, SDXL and SD3 directories (:mod:`fourfold.sara.pipelines`);
DreamBooth with an instance prompt and optional prior preservation (class images, ``prior_loss_weight``). Runs through the shared :class:`fourfold.train.Trainer`
(AdamW, cosine, clipping, atomic checkpoints, exact resume).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fourfold.nn.modeling import atomic_write_text, config_from_dict, config_to_dict
from fourfold.sara.config import SaraConfig

METHODS = ("sara", "lora", "full")
PAPER_RESOLUTION = {"sd15": 512, "sd20": 768, "sdxl": 1024, "sd3": 1024}
FULL_LORA_LR = 1e-4  # diffusers script default for full FT and LoRA (our choice, spec §8)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # diffusers LoRA script


@dataclass
class SaraTrainConfig:
    """One fine-tuning run: data, schedule, model dir, adapter."""

    model_dir: str = field(default="", metadata={"help": "diffusers text-to-image model directory (local)"})
    data_dir: str = field(default="", metadata={"help": "image folder with metadata.jsonl or .txt captions"})
    output_dir: str = field(
        default="runs/sara", metadata={"help": "adapter/, checkpoint-*/, train_log.jsonl"}
    )
    method: str = field(default="sara", metadata={"help": "sara | lora | full"})
    threshold: float | None = field(
        default=2e-3, metadata={"help": "θ (paper: 2e-4 / 8e-4 / 2e-3 ≈ 5M/20M/50M)"}
    )
    fraction: float | None = field(
        default=None, metadata={"help": "budget as a share of all entries (our addition)"}
    )
    lambda_rank: float = 5e-3  # App. K
    progressive_at: float | None = 0.5  # §4.3: 2,500 of 5,000 steps
    rank_min_dim: int = 64
    steps: int = 5000  # App. B
    batch_size: int = 4  # App. B
    grad_accum: int = 1
    lr: float | None = field(default=None, metadata={"help": "None: Eq. 12 for SaRA, 1e-4 for LoRA/full"})
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    prefix: str = field(default="", metadata={"help": 'prepended to every caption, e.g. "<name> style, "'})
    resolution: int | None = field(
        default=None, metadata={"help": "None: the UNet's sample_size × VAE factor"}
    )
    instance_prompt: str | None = field(
        default=None, metadata={"help": "DreamBooth: one prompt for every image"}
    )
    class_data_dir: str | None = field(
        default=None,
        metadata={"help": "DreamBooth prior preservation: folder of class images (e.g. made by `generate`)"},
    )
    class_prompt: str | None = field(
        default=None, metadata={"help": "prompt of every class image (e.g. 'a photo of a dog')"}
    )
    prior_loss_weight: float = 1.0  # weight of the class-image loss (diffusers train_dreambooth.py default)
    random_crop: bool = False
    flip: bool = False
    mixed_precision: str = "no"
    lora_rank: int = 4
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"SaraTrainConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.method == "sara":
            if self.fraction is not None:
                self.threshold = None
            self.adapter_config()  # validates threshold/fraction/λ/PPA
        if self.class_data_dir is not None and (self.instance_prompt is None or self.class_prompt is None):
            raise ValueError(
                "SaraTrainConfig.class_data_dir needs instance_prompt and class_prompt (DreamBooth)"
            )
        if self.prior_loss_weight < 0:
            raise ValueError(f"SaraTrainConfig.prior_loss_weight must be ≥ 0, got {self.prior_loss_weight}")
        for name in ("steps", "batch_size", "grad_accum", "lora_rank"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SaraTrainConfig.{name} must be ≥ 1, got {getattr(self, name)}")

    def adapter_config(self) -> SaraConfig:
        return SaraConfig(
            threshold=self.threshold,
            fraction=self.fraction,
            lambda_rank=self.lambda_rank,
            progressive_at=self.progressive_at,
            rank_min_dim=self.rank_min_dim,
            lr=self.lr,
        )

    @classmethod
    def paper(cls, model: str = "sd15", **overrides: Any) -> SaraTrainConfig:
        """The paper's recipe (App. B): θ=2e-3 (50M), 5,000 steps, batch 4, cosine, Eq. 12 lr, PPA at 2,500."""
        if model not in PAPER_RESOLUTION:
            raise ValueError(f"model must be one of {sorted(PAPER_RESOLUTION)}, got {model!r}")
        return cls(resolution=PAPER_RESOLUTION[model], **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> SaraTrainConfig:
        """Spec §4 tiny: fraction 0.05, rank_min_dim 16, 1,000 steps, batch 16, PPA at 500."""
        base = {"threshold": None, "fraction": 0.05, "rank_min_dim": 16, "steps": 1000, "batch_size": 16}
        return cls(**{**base, **overrides})

    def to_json(self) -> str:
        return json.dumps(config_to_dict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SaraTrainConfig:
        return config_from_dict(cls, json.loads(text), source="SaraTrainConfig")


def load_components(model_dir: str | Path):
    """(unet, vae, text_encoder, tokenizer, ddpm scheduler) of an SD1.x/2.x diffusers directory, fp32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from fourfold.diffusion.schedulers import make_scheduler

    root = Path(model_dir)
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root}: not a Stable Diffusion 1.x/2.x model directory (no {sub}/)")
    unet = UNet2DConditionModel.from_pretrained(root / "unet", dtype=torch.float32)
    if unet.config.addition_embed_type is not None:
        raise ValueError(
            f"{root}: SDXL-style UNets (addition_embed_type) are not supported by this command yet"
        )
    vae = AutoencoderKL.from_pretrained(root / "vae", dtype=torch.float32)
    text = CLIPTextModel.from_pretrained(root / "text_encoder", dtype=torch.float32)
    tok = CLIPTokenizer.from_pretrained(root / "tokenizer")
    sched = make_scheduler("ddpm", source=root / "scheduler")
    return unet, vae, text, tok, sched


def finetune(cfg: SaraTrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``cfg.model_dir``'s UNet on ``cfg.data_dir``; writes ``output_dir/adapter`` (SaRA),
    ``lora/`` or ``unet/``, plus the Trainer's checkpoints and ``train_log.jsonl``. Returns a summary."""
    from fourfold.sara.data import CaptionedImages, WithPriorImages
    from fourfold.sara.handle import wrap
    from fourfold.sara.pipelines import load_parts
    from fourfold.train import Trainer, TrainerConfig

    parts = load_parts(cfg.model_dir)
    unet = parts.denoiser  # a UNet2DConditionModel (SD, SDXL) or SD3Transformer2DModel (SD3)
    resolution = cfg.resolution or parts.resolution
    data = CaptionedImages(cfg.data_dir, resolution, prefix=cfg.prefix, random_crop=cfg.random_crop, flip=cfg.flip,
                           instance_prompt=cfg.instance_prompt)  # fmt: skip
    if cfg.class_data_dir is not None:
        prior = CaptionedImages(cfg.class_data_dir, resolution, random_crop=cfg.random_crop, flip=cfg.flip,
                                instance_prompt=cfg.class_prompt)  # fmt: skip
        data = WithPriorImages(data, prior)

    handle, lr = None, cfg.lr or FULL_LORA_LR
    if cfg.method == "sara":
        handle = wrap(unet, cfg.adapter_config())
        params, lr = handle.parameters(), handle.learning_rate()
    elif cfg.method == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS))  # fmt: skip
        params = [p for p in unet.parameters() if p.requires_grad]
    else:
        params = list(unet.parameters())

    holder: dict[str, Trainer] = {}

    def denoising_loss(model, pixels, texts) -> torch.Tensor:
        return parts.loss(model, pixels, texts)

    def loss_fn(model, batch):
        loss = denoising_loss(model, batch["pixel_values"], batch["text"])
        logs = {"diffusion_loss": float(loss.detach())}
        if "class_pixel_values" in batch:  # DreamBooth: instance loss + w · class (prior) loss
            prior = denoising_loss(model, batch["class_pixel_values"], batch["class_text"])
            logs["prior_loss"] = float(prior.detach())
            loss = loss + cfg.prior_loss_weight * prior
        if handle is not None and cfg.lambda_rank > 0:
            rank = handle.rank_loss(draw=holder["t"].step)  # same tensor for every micro-batch of a step
            logs["rank_loss"] = float(rank.detach())
            loss = loss + rank
        return loss, logs

    callbacks = []
    if handle is not None:
        callbacks.append(lambda trainer, step: handle.on_step(trainer.optimizer, step, cfg.steps))
    tcfg = TrainerConfig(
        output_dir=cfg.output_dir, max_steps=cfg.steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
        learning_rate=lr, weight_decay=cfg.weight_decay, lr_schedule="cosine", max_grad_norm=cfg.max_grad_norm,
        mixed_precision=cfg.mixed_precision, seed=cfg.seed, checkpoint_every=cfg.checkpoint_every,
        progress=progress, log_every=max(1, min(50, cfg.steps // 10)), extra={"sara_train_config": config_to_dict(cfg)},
    )  # fmt: skip
    trainer = Trainer(unet, tcfg, data, loss_fn, params=params, callbacks=callbacks)
    holder["t"] = trainer
    result = trainer.fit(resume=resume)

    out = Path(cfg.output_dir)
    summary: dict[str, Any] = {"method": cfg.method, "kind": parts.kind, "steps": result.step, "lr": lr, "resolution": resolution,
                               "final_loss": result.losses[-1] if result.losses else None}  # fmt: skip
    if handle is not None:
        handle.save_pretrained(out / "adapter")
        summary.update(
            threshold=handle.threshold, support=handle.num_support(), active=handle.num_trainable()
        )
    elif cfg.method == "lora":
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        (out / "lora").mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()},
                  str(out / "lora" / "adapter_model.safetensors"))  # fmt: skip
    else:
        unet.save_pretrained(out / ("transformer" if parts.kind == "sd3" else "unet"))
    atomic_write_text(out / "sara_train_config.json", cfg.to_json())
    return summary
