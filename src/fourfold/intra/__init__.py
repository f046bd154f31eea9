"""INTRA (Jang, Seo, Chun, ECCV 2024, arXiv 2409.06210): weakly supervised affordance grounding from
exocentric images, with an interaction-relationship-guided contrastive loss.

See docs/intra.md. Public names are re-exported lazily so ``import fourfold.intra`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IntraConfig": "fourfold.intra.config",
    "IntraModel": "fourfold.intra.model",
    "IntraOutput": "fourfold.intra.model",
    "IntraGrounder": "fourfold.intra.pipeline",
    "IntraTrainConfig": "fourfold.intra.train",
    "train_intra": "fourfold.intra.train",
    "run_demo": "fourfold.intra.demo",
    "intra_loss": "fourfold.intra.losses",
    "relation_contrastive_loss": "fourfold.intra.losses",
    "object_variance_loss": "fourfold.intra.losses",
    "RelationshipMap": "fourfold.intra.relations",
    "SynonymTable": "fourfold.intra.relations",
    "RelationError": "fourfold.intra.relations",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fourfold.intra' has no attribute {name!r}")
