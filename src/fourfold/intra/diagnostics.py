"""Does Eq. 4 prefer text-correct part maps, given a frozen encoder's features? (a diagnostic, no training of maps)

INTRA's map head can only learn part maps if, with the frozen features F, pooling over the text's part gives a
lower L = L_inter + λ_obj·L_obj than pooling over the whole object (a text-independent map). This module fixes
the maps instead of learning them and trains only a projection (the shape of ``IntraConfig.tiny``'s, d → d → 32)
on the Eq. 1 pooled features of procedural egocentric renders:

- ``part``: M = the mask of the part the affordance acts on (the answer INTRA should find);
- ``object``: M = the union of the object's parts, the same for every text (what the trained model does).

The held-out loss each reaches tells whether the loss itself prefers part maps with these features (then a
failure to find them is an optimisation problem of the map head), or prefers object maps (then the features,
the world or the loss weights are the premise to change).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fourfold.intra.losses import intra_loss
from fourfold.intra.model import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["oracle_map_losses"]


@torch.no_grad()
def _pooled_views(encoder: nn.Module, per_pair: int, seed: int, dominant_factor: int = 1, size: int = 112):
    from fourfold.data.affordance_shapes import (
        AFFORDANCE_PART,
        TRAIN_OBJECTS,
        WorldConfig,
        affordances_of,
        egocentric_image,
        world_labels,
    )

    rng, world, labels = random.Random(f"oracle-{seed}"), WorldConfig(), world_labels()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pooled = {"part": [], "object": []}
    y, o = [], []
    for oi, obj in enumerate(TRAIN_OBJECTS):
        for k, aff in enumerate(affordances_of(obj)):
            for _ in range(per_pair * (dominant_factor if k == 0 else 1)):
                img, masks = egocentric_image(rng, world, obj)
                x = torch.from_numpy(rearrange(img, "h w c -> 1 c h w").copy()) / 255.0
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                feats = encoder(pixel_values=(x - mean) / std).last_hidden_state[0, 1:]  # (N, d)
                g = int(feats.shape[0] ** 0.5)

                def grid(mask: np.ndarray, g: int = g) -> torch.Tensor:
                    m = torch.from_numpy(mask.astype(np.float32))[None, None]
                    return F.adaptive_avg_pool2d(m, g).flatten()  # (N,) share of each patch on the mask

                whole = np.any(np.stack(list(masks.values())), axis=0)
                for kind, m in (("part", grid(masks[AFFORDANCE_PART[aff]])), ("object", grid(whole))):
                    m = m / m.max().clamp(min=1e-6)  # min-max-like: the map peaks at 1 as M does
                    pooled[kind].append((feats * m[:, None]).sum(0) / feats.shape[0])  # Eq. 1
                y.append(labels.index(aff))
                o.append(oi)
    return {k: torch.stack(v) for k, v in pooled.items()}, torch.tensor(y), torch.tensor(o)


def oracle_map_losses(
    encoder: nn.Module,
    relation: torch.Tensor,
    *,
    lambda_obj: float = 4.0,
    temperature: float = 0.2,
    proj_dim: int = 32,
    steps: int = 400,
    batch: int = 64,
    per_pair: int = 12,
    seed: int = 0,
    object_context: float = 0.0,
    dominant_factor: int = 1,
) -> dict[str, dict[str, float]]:
    """Held-out Eq. 4 loss (and its L_inter, L_obj parts) reached by a trained projection on fixed ``part`` and
    ``object`` maps. ``relation``: (L, L) bool over ``world_labels()`` (the world's R, or the identity).

    ``object_context`` β mixes the object's pooled feature into the part's, f = (1 − β)·f_part + β·f_object:
    a stand-in for patch features that carry their whole object's identity (as DINOv2's do through attention),
    to find how much object context would make Eq. 4 prefer part maps. ``dominant_factor`` k gives each object's
    first affordance (alphabetical) k times the views of the others: one dominant interaction per object."""
    if dominant_factor < 1:
        raise ValueError(f"dominant_factor must be >= 1, got {dominant_factor}")
    train, y_tr, o_tr = _pooled_views(encoder, per_pair, seed, dominant_factor)
    test, y_te, o_te = _pooled_views(encoder, max(2, per_pair // 2), seed + 1, dominant_factor)
    for pooled in (train, test):
        pooled["part"] = (1 - object_context) * pooled["part"] + object_context * pooled["object"]
    out = {}
    for kind in ("part", "object"):
        torch.manual_seed(seed)
        d = train[kind].shape[1]
        proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, proj_dim))
        opt = torch.optim.Adam(proj.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randperm(len(y_tr), generator=gen)[:batch]
            z = F.normalize(proj(train[kind][idx]), dim=-1)
            loss, _ = intra_loss(
                z, y_tr[idx], o_tr[idx], relation, temperature=temperature, lambda_obj=lambda_obj
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        gen = torch.Generator().manual_seed(seed + 1)
        logs = []
        with torch.no_grad():
            for _ in range(20):
                idx = torch.randperm(len(y_te), generator=gen)[:batch]
                z = F.normalize(proj(test[kind][idx]), dim=-1)
                loss, parts = intra_loss(
                    z, y_te[idx], o_te[idx], relation, temperature=temperature, lambda_obj=lambda_obj
                )
                logs.append([float(loss), parts["l_inter"], parts["l_obj"]])
        mean = np.mean(logs, axis=0)
        out[kind] = {"loss": float(mean[0]), "l_inter": float(mean[1]), "l_obj": float(mean[2])}
    return out
