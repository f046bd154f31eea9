"""Evaluation helpers around training: checkpoint selection during training and mean ± std over seeds.

Selection (spec §3.1): LOCATE's ``train.py`` scores the *test* set every epoch and keeps the best-mKLD
checkpoint. We report the final step by default. ``selection="validation"`` keeps the best step on a separate
GT folder (a validation split with GT heatmaps, never the test folder); ``selection="test"`` reproduces
LOCATE's practice, is labelled ``"selection": "test"`` in every metrics file it writes, and warns.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fourfold.data.agd20k import EgoItem, label_text
from fourfold.nn import atomic_write_text

__all__ = [
    "SELECTIONS",
    "SELECTION_FILE",
    "TEST_SELECTION_NOTE",
    "best_step_eval_fn",
    "mean_std_over_seeds",
    "run_selection",
    "seed_run_dir",
]

SELECTIONS = ("final", "validation", "test")
METRICS = ("KLD", "SIM", "NSS")
SELECTION_FILE = "selection.json"  # in a selected checkpoint: how it was chosen
TEST_SELECTION_NOTE = (
    "checkpoint chosen by its test-set mKLD, as LOCATE's train.py does; for reproducing that practice only, "
    "not a held-out result"
)


def seed_run_dir(out: str | Path, seed: int) -> Path:
    """Where ``train --seeds N`` writes the run of ``seed``: ``OUT/seed-<seed>``."""
    return Path(out) / f"seed-{seed}"


def best_step_eval_fn(
    items: Sequence[EgoItem], out_dir: str | Path, selection: str
) -> Callable[[object, int], dict[str, float]]:
    """``eval_fn(model, step)`` for the Trainer: scores ``items`` (mKLD/mSIM/mNSS) and saves the model with the
    lowest mKLD so far to ``out_dir/best`` with a ``metrics.json`` that records ``selection`` and the step."""
    from fourfold.intra.pipeline import IntraGrounder, evaluate_items

    if selection not in ("validation", "test"):
        raise ValueError(f"selection must be 'validation' or 'test', got {selection!r}")
    if selection == "test":
        warnings.warn(f"--select-on-test: {TEST_SELECTION_NOTE}", UserWarning, stacklevel=2)
    best = {"KLD": math.inf}
    out_dir = Path(out_dir)

    def eval_fn(model, step: int) -> dict[str, float]:
        g = IntraGrounder(model, device=next(model.parameters()).device)
        scores = evaluate_items(items, lambda ims, a: g.ground_batch(ims, [label_text(x) for x in a]))
        m = {k: float(scores.means()[k]) for k in METRICS}
        if m["KLD"] < best["KLD"]:
            best.update(m)
            model.save_pretrained(out_dir / "best")
            record = {**scores.as_dict(), "selection": selection, "step": step}
            if selection == "test":
                record["note"] = TEST_SELECTION_NOTE
            atomic_write_text(out_dir / "best" / "metrics.json", json.dumps(record, indent=2) + "\n")
            marker = {
                "selection": selection,
                "step": step,
                **({"note": TEST_SELECTION_NOTE} if selection == "test" else {}),
            }
            atomic_write_text(out_dir / "best" / SELECTION_FILE, json.dumps(marker) + "\n")
        return {f"{selection}_{k}": v for k, v in m.items()}

    return eval_fn


def mean_std_over_seeds(per_seed: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std"}} over runs; std is the sample standard deviation (ddof = 1; 0 for one run)."""
    if not per_seed:
        raise ValueError("mean_std_over_seeds needs at least one run")
    out = {}
    for k in METRICS:
        values = np.array([float(r[k]) for r in per_seed], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[k] = {"mean": float(values.mean()), "std": std}
    return out


def run_selection(run: str | Path) -> dict:
    """How a checkpoint directory was chosen: ``{"selection": "final"}`` unless it holds a selection marker."""
    marker = Path(run) / SELECTION_FILE
    return json.loads(marker.read_text()) if marker.is_file() else {"selection": "final"}
