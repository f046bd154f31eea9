"""Trainer configuration: one dataclass, validated on construction, JSON round-trip."""

from __future__ import annotations

from dataclasses import dataclass, field

LR_SCHEDULES = ("constant", "cosine", "linear")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainerConfig:
    """What the shared :class:`~fourfold.train.Trainer` needs to run a job.

    Step counts are optimizer steps; ``batch_size`` is the *global* micro-batch (split evenly across
    processes), so one optimizer step sees ``batch_size * grad_accum`` samples whatever the launch.
    """

    output_dir: str = "runs/default"  # checkpoints, train_log.jsonl
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # global micro-batch; must divide by the number of processes
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    lr_schedule: str = "constant"  # one of LR_SCHEDULES, applied after warmup
    warmup_steps: int = 0  # linear warmup from 0
    min_lr_ratio: float = 0.0  # floor of cosine/linear decay, as a fraction of learning_rate
    max_grad_norm: float | None = 1.0  # None or <= 0 disables clipping (the norm is still logged)
    mixed_precision: str = "no"  # one of MIXED_PRECISION; fp16 needs a GPU
    seed: int = 0
    ema_decay: float | None = None  # e.g. 0.999; None disables the EMA copy
    log_every: int = 10  # steps between JSONL log lines
    eval_every: int = 0  # steps between eval_fn calls; 0 = only at the end (if eval_fn given)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only the final one
    keep_last: int = 2  # checkpoints kept on disk
    save_final_checkpoint: bool = True
    shuffle: bool = True
    drop_last: bool = True  # a ragged last batch would change the global batch across launches
    num_workers: int = 0
    progress: bool = True  # tqdm bar on the main process
    cpu: bool = False  # force CPU even when a GPU is present
    extra: dict[str, object] = field(default_factory=dict)  # free-form, recorded in trainer_state.json

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        positive = ("max_steps", "batch_size", "grad_accum", "log_every", "keep_last")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "warmup_steps", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainerConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"TrainerConfig.mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"TrainerConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainerConfig.ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainerConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
