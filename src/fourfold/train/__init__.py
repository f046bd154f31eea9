"""One Trainer on Hugging Face Accelerate for every fourfold system (see :mod:`fourfold.train.trainer`)."""

from fourfold.train.config import TrainerConfig
from fourfold.train.ema import EMA
from fourfold.train.trainer import NonFiniteLossError, Trainer, TrainResult, lr_lambda

__all__ = ["EMA", "NonFiniteLossError", "TrainResult", "Trainer", "TrainerConfig", "lr_lambda"]
