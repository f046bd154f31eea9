"""Learning on the procedural part world (slow: about 2 minutes on 2 free cores)."""

import pytest
import torch

from fourfold.data.affordance_shapes import world_labels
from fourfold.data.agd20k import label_text, read_testset
from fourfold.intra.demo import DemoSettings, prepare_demo_world, train_variant
from fourfold.intra.pipeline import IntraGrounder, centre_prior_predict, evaluate_items


@pytest.mark.slow
def test_trained_intra_beats_centre_prior_on_all_metrics(tmp_path):
    torch.set_num_threads(1)
    settings = DemoSettings(quick=True)
    world, image_dir, text_dir = prepare_demo_world(tmp_path, settings)
    model = train_variant(world, image_dir, text_dir, tmp_path / "run", settings, seed=0)
    g = IntraGrounder(model)
    for split in ("Seen", "Unseen"):
        items = read_testset(world, split, labels=world_labels())
        ours = evaluate_items(items, lambda ims, a: g.ground_batch(ims, [label_text(x) for x in a])).means()
        centre = evaluate_items(items, centre_prior_predict).means()
        assert ours["KLD"] < centre["KLD"], (split, ours, centre)
        assert ours["SIM"] > centre["SIM"], (split, ours, centre)
        assert ours["NSS"] > centre["NSS"], (split, ours, centre)
