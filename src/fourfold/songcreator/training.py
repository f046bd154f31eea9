"""DSLM training on cached tokens through the shared :class:`fourfold.train.Trainer` (§3.4, §4.1).

* :class:`TokenSongDataset`: a map-style dataset of training layouts; item ``i`` draws its task, masks and
  prompt crops from a generator seeded by ``(seed, i)``, so runs are reproducible and resumable.
* :func:`noam_factor`: lr = s·d^−0.5·min(n^−0.5, n·w^−1.5) (Vaswani et al. 2017), applied by
  :func:`noam_callback` after the Trainer's own (constant) scheduler.
* :func:`procedural_token_items`: oracle-token items of :class:`~fourfold.data.songs.ProceduralSongs`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from fourfold.data.songs import VOWELS
from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.dslm import DSLM, dslm_loss
from fourfold.songcreator.lyrics import LyricsFrontend
from fourfold.songcreator.recipe import DSLMRecipe, collate_dslm

__all__ = ["TokenSongDataset", "noam_callback", "noam_factor", "procedural_token_items", "train_dslm"]


def noam_factor(step: int, dim: int, warmup: int = 4000, scale: float = 1.0) -> float:
    """Noam learning rate at optimizer step ``step`` (1-based); peaks at step ``warmup``."""
    n = max(1, step)
    return scale * dim**-0.5 * min(n**-0.5, n * warmup**-1.5)


def noam_callback(dim: int, warmup: int = 4000, scale: float = 1.0) -> Callable:
    """Trainer callback setting the lr of the *next* step (the Trainer runs callbacks after its scheduler)."""

    def cb(trainer, step: int) -> None:
        for group in trainer.optimizer.param_groups:
            group["lr"] = noam_factor(step + 1, dim, warmup, scale)

    return cb


class TokenSongDataset(Dataset):
    """``items``: dicts with ``lyrics`` (ids), ``vocals``/``accompaniment``/``song`` codes ``(T,)`` and
    optional ``prompt_vocals``/``prompt_accompaniment``. ``length`` may exceed ``len(items)`` (cycled)."""

    def __init__(
        self, items: Sequence[dict], recipe: DSLMRecipe, *, seed: int = 0, length: int | None = None
    ):
        if not items:
            raise ValueError("TokenSongDataset needs at least one item")
        self.items, self.recipe, self.seed = list(items), recipe, seed
        self.length = length or len(self.items)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(hash((self.seed, i)) & 0xFFFFFFFF)
        return self.recipe.make_example(self.items[i % len(self.items)], rng)


def procedural_token_items(songs, frontend: LyricsFrontend, tokenizer, *, prompts: bool = True) -> list[dict]:
    """Oracle-token training items of every clip in ``songs`` (prompts from ``other_clip``)."""
    items = []
    for i in range(len(songs)):
        clip = songs[i]
        codes = tokenizer.encode_clip(clip)
        item = {
            "lyrics": frontend.encode(clip.lyrics, truncate=True),
            "vocals": codes["vocals"],
            "accompaniment": codes["accompaniment"],
            "song": codes["song"],
            "key": clip.key,
            "bpm": clip.bpm,
            "vowels": [VOWELS.index(s.vowel) for s in clip.syllables],  # for lyric-following checks
        }
        if prompts:
            other = tokenizer.encode_clip(songs.other_clip(i))
            item["prompt_vocals"], item["prompt_accompaniment"] = other["vocals"], other["accompaniment"]
        items.append(item)
    return items


def train_dslm(
    model: DSLM,
    items: Sequence[dict],
    output_dir,
    *,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    warmup_steps: int = 50,
    noam: bool = False,
    seed: int = 0,
    recipe: DSLMRecipe | None = None,
    progress: bool = False,
    checkpoint_every: int = 0,
):
    """Train ``model`` on ``items`` with the multi-task recipe; returns the Trainer's ``TrainResult``.

    Adam(0.9, 0.98, ε 1e-9) as §4.1. ``noam=True`` uses the Noam schedule (w = ``warmup_steps``); otherwise
    a linear warmup to ``learning_rate`` then constant (what the small demos use).
    """
    from fourfold.train import Trainer, TrainerConfig

    cfg: DSLMConfig = model.config
    recipe = recipe or DSLMRecipe(cfg)
    data = TokenSongDataset(items, recipe, seed=seed, length=max(len(items), steps * batch_size))
    tcfg = TrainerConfig(
        output_dir=str(output_dir),
        max_steps=steps,
        batch_size=batch_size,
        learning_rate=noam_factor(1, cfg.dim, warmup_steps) if noam else learning_rate,
        lr_schedule="constant",
        warmup_steps=0 if noam else warmup_steps,
        max_grad_norm=1.0,
        seed=seed,
        log_every=max(1, steps // 20),
        checkpoint_every=checkpoint_every,
        progress=progress,
        cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model,
        tcfg,
        data,
        loss_fn=dslm_loss,
        collate_fn=lambda ex: collate_dslm(ex, cfg),
        optimizer_fn=lambda params: torch.optim.Adam(
            params, lr=tcfg.learning_rate, betas=(0.9, 0.98), eps=1e-9
        ),
        callbacks=[noam_callback(cfg.dim, warmup_steps)] if noam else [],
    )
    return trainer.fit()
