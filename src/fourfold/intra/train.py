"""Training INTRA through the shared ``fourfold.train.Trainer`` (§4.1: Adam 2e-4, no weight decay,
batch 256 images, two views each; τ 0.2, λ_obj 4, synonym p 0.2)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fourfold.data.agd20k import ExoItem
from fourfold.intra.dataset import CachedExoFeatures, ExoImages, synonym_texts
from fourfold.intra.losses import intra_loss
from fourfold.intra.model import IntraModel
from fourfold.intra.relations import RelationshipMap, SynonymTable

__all__ = ["IntraTrainConfig", "train_intra"]


@dataclass
class IntraTrainConfig:
    """Optimisation settings; paper values in comments, ours marked."""

    output_dir: str = "runs/intra"
    max_steps: int = 1000  # the paper trains for an unstated number of epochs (ours: a step budget)
    batch_size: int = 256  # images per step (§4.1); each gives two views
    learning_rate: float = 2e-4  # Adam (§4.1)
    weight_decay: float = 0.0  # none (§4.1)
    seed: int = 0
    cache_image_features: bool = True  # run the frozen encoder once over fixed augmented views (ours, CPU)
    augment: bool = True  # random crop + flip for the two views (flip ours)
    log_every: int = 50
    checkpoint_every: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"IntraTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"IntraTrainConfig.learning_rate must be > 0, got {self.learning_rate}")


def train_intra(
    model: IntraModel,
    items: Sequence[ExoItem],
    labels: Sequence[str],
    relationship: RelationshipMap,
    synonyms: SynonymTable,
    config: IntraTrainConfig,
    *,
    eval_fn=None,
    eval_every: int = 0,
):
    """Train the trainable parts of ``model`` on exocentric ``items``; saves the model to ``output_dir/final``.

    ``relationship`` must cover ``labels`` (its matrix is taken in ``labels`` order). With
    ``model.config.use_relationship=False`` R is replaced by the identity (plain SupCon).
    Returns the Trainer's ``TrainResult``.
    """
    from fourfold.train import Trainer, TrainerConfig

    labels = list(labels)
    rel = relationship.restrict(labels) if tuple(relationship.labels) != tuple(labels) else relationship
    r = rel.matrix() if model.config.use_relationship else torch.eye(len(labels), dtype=torch.bool)
    cfg = model.config
    torch.manual_seed(config.seed)
    if config.cache_image_features:
        data = CachedExoFeatures(
            model,
            items,
            labels,
            resize=cfg.resize_size,
            crop=cfg.image_size,
            augment=config.augment,
            seed=config.seed,
        )
        grid = data.grid
    else:
        data = ExoImages(items, labels, resize=cfg.resize_size, crop=cfg.image_size)
        grid = None
    # every string a view can be conditioned on is encoded once, up front
    model.encode_text(synonyms.all_texts(labels))
    rng = random.Random(config.seed)

    def loss_fn(m: IntraModel, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        y = batch["label"].repeat_interleave(2)  # (2B,): views of one image are adjacent
        o = batch["object"].repeat_interleave(2)
        texts = synonym_texts(labels, y, synonyms, rng, cfg.synonym_p)
        emb = m.encode_text(texts)
        if "feats" in batch:
            out = m(image_features=batch["feats"].flatten(0, 1), grid=grid, text_embeds=emb)
        else:
            out = m(batch["views"].flatten(0, 1), text_embeds=emb)
        return intra_loss(
            out.z, y, o, r.to(out.z.device), temperature=cfg.temperature, lambda_obj=cfg.lambda_obj,
            normalizer=cfg.inter_normalizer,
        )  # fmt: skip

    tcfg = TrainerConfig(
        output_dir=config.output_dir,
        max_steps=config.max_steps,
        batch_size=min(config.batch_size, len(data)),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        lr_schedule="constant",
        max_grad_norm=None,
        save_final_checkpoint=False,  # the model (trainable weights only) is saved below
        seed=config.seed,
        log_every=config.log_every,
        eval_every=eval_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
    )
    trainer = Trainer(
        model,
        tcfg,
        data,
        loss_fn=loss_fn,
        params=model.trainable_parameters(),
        optimizer_fn=lambda params: torch.optim.Adam(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        ),
        eval_fn=eval_fn,
    )
    result = trainer.fit()
    model = trainer.model
    model.labels, model.relationship, model.synonyms = labels, rel, synonyms
    model.save_pretrained(Path(config.output_dir) / "final")
    return result
