"""Self-supervised pre-training of the tiny image encoder on procedural renders (DINO + iBOT, no labels).

INTRA freezes a *pretrained* DINOv2 (supp. B.1), whose patch features already say which part of which object a
patch shows. A random tiny ``Dinov2Model`` does not (docs/intra.md, "Why the maps barely follow the text"), so
the CPU world needs a pretrained stand-in. It is trained here with DINOv2's two self-distillation objectives
at tiny scale (Caron et al. 2021, DINO; Zhou et al. 2022, iBOT; Oquab et al. 2023, DINOv2 §4):

- image level (DINO): an EMA teacher sees two global crops, the student sees those plus ``n_local`` small
  crops; the student's CLS prototype distribution of every view predicts the teacher's (centred, sharpened)
  distribution of every *other* global view;
- patch level (iBOT): the student's global crops have a random share of patch tokens replaced by the mask
  token; at those positions the student's patch prototypes predict the teacher's on the unmasked crop.

Images: exocentric and egocentric renders of the procedural part world's *training* objects, drawn from a seed
of their own (never the demo's world or test images); labels, masks and affordances are not used.
Augmentation is geometric only (random resized crop, flip): in this world part type is a colour and object
identity a tint and stripe pattern, so DINO's colour jitter would teach invariance to the very semantics the
features must keep (on photos colour is mostly a nuisance, here it is the content).

``pretrain_image_encoder(out_dir, PretrainConfig())`` trains through ``fourfold.train.Trainer`` and writes the
teacher backbone with ``Dinov2Model.save_pretrained`` plus ``TRAINING.json``; ``probe_encoder`` measures
linear probes of part type and object identity on part-pooled patch features.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fourfold.intra.model import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DinoPretrainer",
    "PretrainConfig",
    "pretrain_image_encoder",
    "probe_encoder",
    "render_pretraining_images",
]


@dataclass
class PretrainConfig:
    # backbone: the same shape as IntraConfig.tiny()'s encoder (build_tiny_image_encoder), so it drops in
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    patch: int = 14
    global_size: int = 112  # global crop side (8×8 tokens), INTRA's tiny input size
    local_size: int = 56  # local crop side (4×4 tokens)
    n_local: int = 4  # local crops per image (DINO: 8 at 96² for 224² globals; ours fewer, CPU)
    global_scale: tuple[float, float] = (0.35, 1.0)  # crop area share (DINO: 0.32-1)
    local_scale: tuple[float, float] = (0.08, 0.35)  # (DINO: 0.05-0.32)
    # heads: MLP → L2-normalised bottleneck → cosine against L2-normalised prototypes (DINO's weight-normed
    # last layer with g fixed to 1); separate heads for CLS and patches as DINOv2
    head_hidden: int = 256
    bottleneck: int = 64
    prototypes: int = 512  # DINO 65536 on ImageNet; a small world needs few
    student_temp: float = 0.1  # DINO
    teacher_temp: float = 0.04  # DINO's starting value
    center_momentum: float = 0.9  # DINO
    teacher_momentum: tuple[float, float] = (0.99, 1.0)  # cosine from start to end (DINO 0.996; shorter run)
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # iBOT's share of masked patches per global crop
    ibot_weight: float = 1.0  # iBOT / DINOv2
    # optimisation and data
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.04  # DINO's starting value
    warmup_steps: int = 100
    seed: int = 0
    world_seed: int = 1000  # the renders' seed, distinct from every world the demo and tests write
    exo_per_pair: int = 6  # exocentric renders per (affordance, training object) pair
    ego_per_object: int = 100  # egocentric renders per training object

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "patch", "n_local", "prototypes", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("global_size", "local_size"):
            if getattr(self, name) % self.patch:
                raise ValueError(f"PretrainConfig.{name}={getattr(self, name)} is not a multiple of patch")
        if self.hidden % self.heads:
            raise ValueError(f"PretrainConfig.hidden={self.hidden} is not divisible by heads={self.heads}")
        if not 0.0 <= self.mask_ratio[0] <= self.mask_ratio[1] < 1.0:
            raise ValueError(
                f"PretrainConfig.mask_ratio must satisfy 0 <= lo <= hi < 1, got {self.mask_ratio}"
            )


def render_pretraining_images(cfg: PretrainConfig) -> torch.Tensor:
    """Unlabelled renders (N, 3, 128, 128) uint8: exocentric and egocentric views of the training objects."""
    from fourfold.data.affordance_shapes import (
        TRAIN_OBJECTS,
        WorldConfig,
        affordances_of,
        egocentric_image,
        exocentric_image,
    )

    rng, world = random.Random(f"pretrain-{cfg.world_seed}"), WorldConfig()
    images = [
        exocentric_image(rng, world, aff, obj)
        for obj in TRAIN_OBJECTS
        for aff in affordances_of(obj)
        for _ in range(cfg.exo_per_pair)
    ]
    images += [
        egocentric_image(rng, world, obj)[0] for obj in TRAIN_OBJECTS for _ in range(cfg.ego_per_object)
    ]
    array = np.clip(np.round(np.stack(images)), 0, 255).astype(np.uint8)
    return torch.from_numpy(rearrange(array, "n h w c -> n c h w").copy())


class _Head(nn.Module):
    """(…, d) → (…, prototypes) cosine logits: 3-layer MLP, L2-normalised bottleneck, normalised prototypes."""

    def __init__(self, d: int, hidden: int, bottleneck: int, prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


class _Branch(nn.Module):
    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        self.backbone = Dinov2Model(
            Dinov2Config(
                hidden_size=cfg.hidden,
                num_hidden_layers=cfg.layers,
                num_attention_heads=cfg.heads,
                intermediate_size=4 * cfg.hidden,
                patch_size=cfg.patch,
                image_size=cfg.global_size,
            )
        )
        self.cls_head = _Head(cfg.hidden, cfg.head_hidden, cfg.bottleneck, cfg.prototypes)
        self.patch_head = _Head(cfg.hidden, cfg.head_hidden, cfg.bottleneck, cfg.prototypes)

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor | None = None):
        """pixels (B,3,H,W) normalised → CLS logits (B,K), patch logits (B,N,K)."""
        hidden = self.backbone(pixel_values=pixels, bool_masked_pos=mask).last_hidden_state
        return self.cls_head(hidden[:, 0]), self.patch_head(hidden[:, 1:])


def _crops(images: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
    """Random resized crops with flips, one per image: (B,3,H,W) → (B,3,size,size), via an affine grid."""
    b = images.shape[0]
    area = torch.empty(b).uniform_(*scale)
    ratio = torch.exp(torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3)))
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # half-extents in [-1, 1] grid units
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(b) * 2 - 1) * (1 - w)
    cy = (torch.rand(b) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _soft_ce(teacher_probs: torch.Tensor, student_logits: torch.Tensor, temp: float) -> torch.Tensor:
    return -(teacher_probs * F.log_softmax(student_logits / temp, dim=-1)).sum(-1)


class DinoPretrainer(nn.Module):
    """Student + EMA teacher; ``forward(images uint8 (B,3,H,W))`` → (loss, logs). Teacher steps via
    :meth:`update_teacher` after each optimiser step (a Trainer callback)."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.cfg = cfg
        self.student = _Branch(cfg)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("cls_center", torch.zeros(1, cfg.prototypes))
        self.register_buffer("patch_center", torch.zeros(1, cfg.prototypes))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        x = (images.float() / 255.0 - self.pixel_mean) / self.pixel_std
        globals_ = [_crops(x, cfg.global_size, cfg.global_scale) for _ in range(2)]
        locals_ = [_crops(x, cfg.local_size, cfg.local_scale) for _ in range(cfg.n_local)]
        b, n = x.shape[0], (cfg.global_size // cfg.patch) ** 2
        with torch.no_grad():
            self.teacher.eval()
            t_out = [self.teacher(g) for g in globals_]
            t_cls = [F.softmax((c - self.cls_center) / cfg.teacher_temp, dim=-1) for c, _ in t_out]
            t_patch = [F.softmax((p - self.patch_center) / cfg.teacher_temp, dim=-1) for _, p in t_out]
        # iBOT masking: per crop a ratio in mask_ratio, positions uniformly at random (iBOT uses blocks)
        ratios = torch.empty(2, b, 1).uniform_(*cfg.mask_ratio)
        masks = [torch.rand(b, n) < ratios[i] for i in range(2)]
        s_global = [self.student(g, m) for g, m in zip(globals_, masks, strict=True)]
        s_cls = [c for c, _ in s_global] + [self.student(v)[0] for v in locals_]
        dino, pairs = 0.0, 0
        for ti, probs in enumerate(t_cls):
            for si, logits in enumerate(s_cls):
                if si != ti:  # never the same view
                    dino = dino + _soft_ce(probs, logits, cfg.student_temp).mean()
                    pairs += 1
        dino = dino / pairs
        ibot = (
            sum(
                (_soft_ce(t_patch[i], s_global[i][1], cfg.student_temp) * masks[i]).sum()
                / masks[i].sum().clamp(min=1)
                for i in range(2)
            )
            / 2
        )
        self._update_centers(torch.cat([c for c, _ in t_out]), torch.cat([p for _, p in t_out]).flatten(0, 1))
        loss = dino + cfg.ibot_weight * ibot
        return loss, {"dino": float(dino.detach()), "ibot": float(ibot.detach())}

    @torch.no_grad()
    def _update_centers(self, cls_logits: torch.Tensor, patch_logits: torch.Tensor) -> None:
        cls_mean, patch_mean = cls_logits.mean(0, keepdim=True), patch_logits.mean(0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (cls_mean, patch_mean):  # DINO centres on the global batch
                torch.distributed.all_reduce(t)
                t /= torch.distributed.get_world_size()
        m = self.cfg.center_momentum
        self.cls_center.mul_(m).add_(cls_mean, alpha=1 - m)
        self.patch_center.mul_(m).add_(patch_mean, alpha=1 - m)

    @torch.no_grad()
    def update_teacher(self, step: int) -> None:
        """EMA of the student, momentum on a cosine from teacher_momentum[0] to [1] over the run (DINO)."""
        lo, hi = self.cfg.teacher_momentum
        m = hi - (hi - lo) * (math.cos(math.pi * step / self.cfg.steps) + 1) / 2
        for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            t.mul_(m).add_(s.detach(), alpha=1 - m)


def pretrain_image_encoder(
    out_dir: str | Path, cfg: PretrainConfig | None = None, *, run_dir: str | Path | None = None
) -> Path:
    """Train the tiny encoder self-supervised and save the teacher backbone to ``out_dir`` (a ``Dinov2Model``
    directory with ``TRAINING.json``). Returns ``out_dir``. ``run_dir`` keeps the Trainer's checkpoints and JSONL
    log (a temporary directory, removed afterwards, when not given)."""
    import tempfile

    from torch.utils.data import TensorDataset

    from fourfold.nn import atomic_write_dir
    from fourfold.train import Trainer, TrainerConfig

    if run_dir is None:  # the Trainer's checkpoints and log are only needed while training
        with tempfile.TemporaryDirectory(prefix="intra-pretrain-") as tmp:
            return pretrain_image_encoder(out_dir, cfg, run_dir=tmp)
    cfg = cfg or PretrainConfig()
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    images = render_pretraining_images(cfg)
    model = DinoPretrainer(cfg)
    tcfg = TrainerConfig(
        output_dir=str(run_dir),
        max_steps=cfg.steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, lr_schedule="cosine", warmup_steps=cfg.warmup_steps,
        max_grad_norm=3.0, seed=cfg.seed, log_every=50, progress=False,
    )  # fmt: skip
    trainer = Trainer(
        model,
        tcfg,
        TensorDataset(images),
        lambda m, batch: m(batch[0]),
        params=list(model.student.parameters()),
        callbacks=[lambda trainer, step: model.update_teacher(step)],
    )
    result = trainer.fit()
    out_dir = Path(out_dir)
    record = {
        "method": "DINO (CLS self-distillation, multi-crop) + iBOT (masked patch self-distillation), no labels",
        "config": asdict(cfg),
        "images": int(images.shape[0]),
        "final_loss": result.losses[-1],
        "first_loss": result.losses[0],
        "seconds": round(time.time() - t0, 1),
        "saved": "teacher backbone (EMA), transformers Dinov2Model",
    }

    def write(tmp: Path) -> None:
        model.teacher.backbone.save_pretrained(tmp)
        (tmp / "TRAINING.json").write_text(json.dumps(record, indent=2) + "\n")

    atomic_write_dir(out_dir, write)
    return out_dir


@torch.no_grad()
def probe_encoder(encoder: nn.Module, *, images_per_object: int = 40, seed: int = 7, size: int = 112) -> dict:
    """Linear probes on part-pooled patch features of a frozen ``Dinov2Model``.

    Renders egocentric views of the training objects (seed of its own), averages the last-layer patch tokens
    under each part's mask (area-weighted on the patch grid), and fits logistic regression for the part type
    and for the object on the first half of the images, scored on the second half. ``object | part`` is the
    object probe's accuracy on parts shared by several objects (handle, blade, ...): the object identity
    *within* one part type that L_obj needs. Returns accuracies and chance levels (majority share).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.preprocessing import StandardScaler

    from fourfold.data.affordance_shapes import OBJECTS, TRAIN_OBJECTS, WorldConfig, egocentric_image

    rng, world = random.Random(f"probe-{seed}"), WorldConfig()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    feats, parts, objs, half = [], [], [], []
    shared = {
        p
        for p in {q for o in TRAIN_OBJECTS for q in OBJECTS[o]}
        if sum(p in OBJECTS[o] for o in TRAIN_OBJECTS) > 1
    }
    encoder.eval()
    for i in range(images_per_object):
        for obj in TRAIN_OBJECTS:
            img, masks = egocentric_image(rng, world, obj)
            x = torch.from_numpy(rearrange(img, "h w c -> 1 c h w").copy()) / 255.0
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            tokens = encoder(pixel_values=(x - mean) / std).last_hidden_state[0, 1:]  # (N, d)
            g = math.isqrt(tokens.shape[0])
            for part, m in masks.items():
                w = F.adaptive_avg_pool2d(torch.from_numpy(m.astype(np.float32))[None, None], g).flatten()
                if w.sum() < 0.5:  # smaller than half a patch: no feature of its own
                    continue
                feats.append((w[:, None] * tokens).sum(0) / w.sum())
                parts.append(part)
                objs.append(obj)
                half.append(i >= images_per_object // 2)
    x_all = torch.stack(feats).numpy()
    test = np.array(half)
    scaler = StandardScaler().fit(x_all[~test])
    x_tr, x_te = scaler.transform(x_all[~test]), scaler.transform(x_all[test])
    out = {}
    for name, labels in (("part", np.array(parts)), ("object", np.array(objs))):
        clf = LogisticRegression(max_iter=3000, C=1.0).fit(x_tr, labels[~test])
        pred = clf.predict(x_te)
        out[name] = float((pred == labels[test]).mean())
        # nearest class mean on the raw features: is the label a *dominant* direction, not just a decodable one
        centroid = NearestCentroid().fit(x_all[~test], labels[~test])
        out[f"{name} (nearest centroid)"] = float((centroid.predict(x_all[test]) == labels[test]).mean())
        _, counts = np.unique(labels[test], return_counts=True)
        out[f"{name} chance"] = float(counts.max() / counts.sum())
        if name == "object":
            part_te = np.array(parts)[test]
            keep = np.isin(part_te, sorted(shared))
            out["object | part"] = float((pred[keep] == labels[test][keep]).mean())
            # chance within a part type: always answer the part's most frequent object
            best = sum(np.unique(labels[test][part_te == p], return_counts=True)[1].max() for p in shared)
            out["object | part chance"] = float(best / keep.sum())
    out["n_parts"] = len(parts)
    return out
