"""Learning on the procedural part world (slow: 3 trainings, about 4-6 minutes on 2 cores)."""

import numpy as np
import pytest
import torch

from fourfold.data.affordance_shapes import world_labels
from fourfold.data.agd20k import label_text, read_testset
from fourfold.intra.demo import DemoSettings, prepare_demo_world, train_variant
from fourfold.intra.pipeline import IntraGrounder, centre_prior_predict, evaluate_items


@pytest.mark.slow
def test_trained_intra_beats_centre_prior_on_all_metrics_mean_of_3_seeds(tmp_path):
    torch.set_num_threads(1)
    settings = DemoSettings(quick=True)
    world, image_dir, text_dir = prepare_demo_world(tmp_path, settings)
    tests = {s: read_testset(world, s, labels=world_labels()) for s in ("Seen", "Unseen")}
    ours = {s: [] for s in tests}
    for seed in (0, 1, 2):
        g = IntraGrounder(
            train_variant(world, image_dir, text_dir, tmp_path / f"run{seed}", settings, seed=seed)
        )
        for split, items in tests.items():
            ours[split].append(
                evaluate_items(
                    items, lambda ims, a, g=g: g.ground_batch(ims, [label_text(x) for x in a])
                ).means()
            )
    for split, items in tests.items():
        centre = evaluate_items(items, centre_prior_predict).means()
        mean = {k: float(np.mean([r[k] for r in ours[split]])) for k in ("KLD", "SIM", "NSS")}
        assert mean["KLD"] < centre["KLD"], (split, mean, centre)
        assert mean["SIM"] > centre["SIM"], (split, mean, centre)
        assert mean["NSS"] > centre["NSS"], (split, mean, centre)
