"""One Trainer on Hugging Face Accelerate for every fourfold system (see :mod:`fourfold.train.trainer`).

Names are imported on first use so that ``fourfold --help`` (which imports ``fourfold.train.cli``) does not
pay for torch and accelerate.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TrainerConfig": "fourfold.train.config",
    "EMA": "fourfold.train.ema",
    "NonFiniteLossError": "fourfold.train.trainer",
    "TrainResult": "fourfold.train.trainer",
    "Trainer": "fourfold.train.trainer",
    "lr_lambda": "fourfold.train.trainer",
}
__all__ = ["EMA", "NonFiniteLossError", "TrainResult", "Trainer", "TrainerConfig", "lr_lambda"]

if TYPE_CHECKING:
    from fourfold.train.config import TrainerConfig
    from fourfold.train.ema import EMA
    from fourfold.train.trainer import NonFiniteLossError, Trainer, TrainResult, lr_lambda


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fourfold.train' has no attribute {name!r}")
