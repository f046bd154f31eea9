"""Self-supervised encoder pre-training (DINO + iBOT): mechanics on tiny sizes, and the shipped encoder."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from fourfold.intra.pretrain_encoder import DinoPretrainer, PretrainConfig, pretrain_image_encoder

TINY = PretrainConfig(
    hidden=16, layers=1, heads=2, head_hidden=32, bottleneck=8, prototypes=16, n_local=2,
    steps=4, batch_size=4, warmup_steps=1, exo_per_pair=1, ego_per_object=1,
)  # fmt: skip


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 128, 128), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize(
    "field,value", [("hidden", 0), ("global_size", 100), ("heads", 3), ("mask_ratio", (0.5, 0.2))]
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    name = "hidden" if field == "heads" else field
    with pytest.raises(ValueError, match=name):
        replace(TINY, **{field: value})


def test_only_the_student_gets_gradients_and_the_teacher_follows_by_ema():
    torch.manual_seed(0)
    model = DinoPretrainer(TINY)
    loss, logs = model(_images())
    assert torch.isfinite(loss) and set(logs) == {"dino", "ibot"}
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.backbone.parameters())
    before = [t.clone() for t in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    model.update_teacher(0)  # momentum = teacher_momentum[0] at step 0
    m = TINY.teacher_momentum[0]
    for b, t, s in zip(before, model.teacher.parameters(), model.student.parameters(), strict=True):
        torch.testing.assert_close(t, m * b + (1 - m) * s)


def test_centers_move_towards_the_teacher_batch_mean():
    torch.manual_seed(0)
    model = DinoPretrainer(TINY)
    assert model.cls_center.abs().sum() == 0
    model(_images())
    assert model.cls_center.abs().sum() > 0 and model.patch_center.abs().sum() > 0


def test_a_masked_patch_has_no_influence_on_the_student():
    """iBOT masking replaces the patch embedding by the mask token: its pixels then change nothing."""
    torch.manual_seed(0)
    model = DinoPretrainer(TINY).eval()
    x = torch.randn(1, 3, 112, 112)
    mask = torch.zeros(1, 64, dtype=torch.bool)
    mask[0, 9] = True  # row 1, column 1 of the 8×8 grid: pixels 14..27
    y = x.clone()
    y[..., 14:28, 14:28] += 5.0
    a, b = model.student(x, mask), model.student(y, mask)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(model.student(x)[1], model.student(y)[1])  # unmasked, the patch matters


def test_pretraining_writes_a_loadable_dinov2_directory(tmp_path):
    from fourfold.intra.encoders import load_image_encoder

    torch.set_num_threads(1)
    out = pretrain_image_encoder(tmp_path / "enc", TINY, run_dir=tmp_path / "run")
    record = json.loads((out / "TRAINING.json").read_text())
    assert record["config"]["steps"] == 4 and record["images"] > 0
    enc = load_image_encoder(out)
    assert enc.config.hidden_size == 16
    assert enc(pixel_values=torch.randn(1, 3, 112, 112)).last_hidden_state.shape == (1, 65, 16)


def test_cli_pretrain_encoder(tmp_path):
    from fourfold.intra.cli import app

    result = CliRunner().invoke(
        app,
        ["pretrain-encoder", "--out", str(tmp_path / "enc"), "--steps", "2", "--batch-size", "4",
         "--exo-per-pair", "1", "--ego-per-object", "1", "--no-probe"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "enc" / "config.json").is_file() and (tmp_path / "enc" / "TRAINING.json").is_file()


def test_shipped_pretrained_encoder_decodes_part_and_object_better_than_a_random_one(tmp_path):
    """The shipped self-supervised encoder: a loadable tiny Dinov2Model whose part-pooled features carry part
    type and object identity (linear probes, held-out renders) better than the random encoder it replaces."""
    from fourfold.intra.demo import PRETRAINED_IMAGE_ENCODER
    from fourfold.intra.encoders import build_tiny_image_encoder, load_image_encoder
    from fourfold.intra.pretrain_encoder import probe_encoder

    torch.set_num_threads(1)
    record = json.loads((PRETRAINED_IMAGE_ENCODER / "TRAINING.json").read_text())
    assert record["config"]["steps"] >= 1000 and record["final_loss"] < record["first_loss"]
    pretrained = load_image_encoder(PRETRAINED_IMAGE_ENCODER)
    assert pretrained.config.hidden_size == 64 and pretrained.config.patch_size == 14
    random_dir = build_tiny_image_encoder(tmp_path / "random", image_size=112)
    ours, base = probe_encoder(pretrained), probe_encoder(load_image_encoder(random_dir))
    for key in ("part", "object", "object | part"):
        assert ours[key] > base[key], (key, ours, base)
    assert ours["object | part"] > ours["object | part chance"] + 0.2


def test_fixed_map_diagnostic_is_equal_for_part_and_object_maps_when_they_pool_the_same_feature(encoder_dirs):
    """object_context = 1 makes the part-pooled feature the object's: both fixed maps must then reach the same loss."""
    from fourfold.data.affordance_shapes import world_labels
    from fourfold.intra.diagnostics import oracle_map_losses
    from fourfold.intra.encoders import load_image_encoder

    eye = torch.eye(len(world_labels()), dtype=torch.bool)
    enc = load_image_encoder(encoder_dirs[0])
    same = oracle_map_losses(enc, eye, steps=5, per_pair=2, object_context=1.0)
    assert same["part"] == pytest.approx(same["object"])
    differ = oracle_map_losses(enc, eye, steps=5, per_pair=2)
    assert differ["part"]["loss"] != pytest.approx(differ["object"]["loss"])
    assert all(v > 0 for r in differ.values() for v in r.values())
    with pytest.raises(ValueError, match="dominant_factor"):
        oracle_map_losses(enc, eye, dominant_factor=0)
