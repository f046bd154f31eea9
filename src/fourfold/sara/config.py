"""SaRA adapter configuration (``SaraConfig``) and the paper's threshold → learning-rate rule.

Section/equation numbers refer to Hu et al., "SaRA", arXiv 2409.06633 v2.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from fourfold.nn.modeling import config_from_dict, config_to_dict

# App. B, Eq. 12: lr = LR_SCALE · exp(−LR_DECAY · θ)
LR_SCALE = 1e-3
LR_DECAY = 350.0

BACKENDS = ("sparse", "masked_dense")
RANK_SAMPLING = ("one_random", "all")


def learning_rate_for_threshold(threshold: float) -> float:
    """The paper's learning rate for threshold θ (App. B, Eq. 12): ``1e-3 · exp(−350 θ)``.

    θ = 2e-4 → 9.32e-4, 8e-4 → 7.56e-4, 2e-3 → 4.97e-4.
    """
    return LR_SCALE * math.exp(-LR_DECAY * threshold)


@dataclass
class SaraConfig:
    """What to train and how (§4.1–4.4). Give exactly one of ``threshold`` or ``fraction``.

    Defaults follow the paper's SD1.5 recipe except where a field says "our choice".
    """

    threshold: float | None = field(
        default=None, metadata={"help": "θ: entries with |w| < θ (strict) are trainable (§4.1, Eq. 2)"}
    )
    fraction: float | None = field(
        default=None,
        metadata={"help": "our addition: resolve θ so that ≥ fraction·N entries are below it (0 < f < 1)"},
    )
    lambda_rank: float = field(
        default=5e-3, metadata={"help": "λ_rank of the nuclear-norm loss (§4.2, Eq. 5; App. K best VLHI)"}
    )
    progressive_at: float | list[int] | None = field(
        default=0.5,
        metadata={
            "help": "PPA re-selection (§4.3): a fraction of the run (0.5 = paper's 2,500/5,000), "
            "an explicit list of optimizer steps, or None to disable"
        },
    )
    progressive_reset_state: bool = field(
        default=False, metadata={"help": "reset Adam state at PPA (official) instead of slicing it (ours)"}
    )
    rank_min_dim: int = field(
        default=64, metadata={"help": "nuclear norm only on matrices with min(shape) > this (official rule)"}
    )
    rank_conv: bool = field(
        default=False, metadata={"help": "also apply the nuclear norm to convs reshaped to (out, in·kh·kw)"}
    )
    rank_sampling: str = field(
        default="one_random",
        metadata={"help": "'one_random' (official: one eligible tensor per step, uniform) or 'all'"},
    )
    include: list[str] = field(
        default_factory=lambda: [".*"],
        metadata={"help": "regexes (re.search) over parameter names to target"},
    )
    exclude: list[str] = field(default_factory=list, metadata={"help": "regexes of parameter names to skip"})
    backend: str = field(
        default="sparse",
        metadata={
            "help": "'sparse' (memory-lean, §4.4) or 'masked_dense' (reference: dense grads and state)"
        },
    )
    lr: float | None = field(default=None, metadata={"help": "explicit learning rate; None → Eq. 12"})
    seed: int = field(default=0, metadata={"help": "seed of the rank-loss tensor sampler"})

    def __post_init__(self) -> None:
        if (self.threshold is None) == (self.fraction is None):
            raise ValueError("SaraConfig: give exactly one of 'threshold' or 'fraction'")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"SaraConfig.threshold must be a finite number > 0, got {self.threshold}")
        if self.fraction is not None and not (0.0 < self.fraction < 1.0):
            raise ValueError(f"SaraConfig.fraction must be in (0, 1), got {self.fraction}")
        if not (math.isfinite(self.lambda_rank) and self.lambda_rank >= 0):
            raise ValueError(f"SaraConfig.lambda_rank must be ≥ 0, got {self.lambda_rank}")
        p = self.progressive_at
        if isinstance(p, (list, tuple)):
            if not all(isinstance(s, int) and s > 0 for s in p):
                raise ValueError(f"SaraConfig.progressive_at: steps must be positive ints, got {p}")
            self.progressive_at = sorted(set(p))
        elif p is not None and not (0.0 < float(p) < 1.0):
            raise ValueError(f"SaraConfig.progressive_at must be in (0, 1), a list of steps or None, got {p}")
        if self.rank_min_dim < 0:
            raise ValueError(f"SaraConfig.rank_min_dim must be ≥ 0, got {self.rank_min_dim}")
        if self.rank_sampling not in RANK_SAMPLING:
            raise ValueError(
                f"SaraConfig.rank_sampling must be one of {RANK_SAMPLING}, got {self.rank_sampling!r}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"SaraConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.lr is not None and not (self.lr > 0):
            raise ValueError(f"SaraConfig.lr must be > 0, got {self.lr}")
        for name in ("include", "exclude"):
            pats = list(getattr(self, name))
            for pat in pats:
                try:
                    re.compile(pat)
                except re.error as err:
                    raise ValueError(f"SaraConfig.{name}: bad regex {pat!r}: {err}") from err
            setattr(self, name, pats)

    def learning_rate(self, threshold: float | None = None) -> float:
        """The explicit ``lr`` if set, else Eq. 12 at θ (the configured or the given resolved one)."""
        if self.lr is not None:
            return self.lr
        theta = threshold if threshold is not None else self.threshold
        if theta is None:
            raise ValueError(
                "SaraConfig.learning_rate: fraction mode has no θ until wrap() resolves it; "
                "use handle.learning_rate() or pass threshold="
            )
        return learning_rate_for_threshold(theta)

    def ppa_steps(self, total_steps: int) -> list[int]:
        """Optimizer steps (1-based, counted after the step) at which PPA re-selects."""
        p = self.progressive_at
        if p is None:
            return []
        if isinstance(p, list):
            return list(p)
        return [max(1, round(float(p) * total_steps))]

    def targets(self, name: str) -> bool:
        """Whether parameter ``name`` passes the include/exclude regexes."""
        return any(re.search(p, name) for p in self.include) and not any(
            re.search(p, name) for p in self.exclude
        )

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "SaraConfig") -> SaraConfig:
        return config_from_dict(cls, data, source=source)
