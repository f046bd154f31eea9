"""IntraGrounder, overlays, the centre prior, training through the shared Trainer, and the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fourfold.data.affordance_shapes import WorldConfig, make_affordance_world, world_labels
from fourfold.data.agd20k import read_exocentric, read_testset
from fourfold.intra.cli import app
from fourfold.intra.dataset import ImageLoadError
from fourfold.intra.pipeline import IntraGrounder, centre_prior, centre_prior_predict, evaluate_items, overlay
from fourfold.intra.relations import RelationshipMap, SynonymTable
from fourfold.intra.train import IntraTrainConfig, train_intra


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_affordance_world(
        tmp_path_factory.mktemp("w"),
        seed=0,
        config=WorldConfig(exo_per_pair=2, ego_per_object=1),
        splits=("Seen",),
    )


def test_grounder_shapes_and_range(tiny_model):
    g = IntraGrounder(tiny_model)
    img = Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8))
    heat = g(img, "hold")
    assert heat.shape == (70, 90) and heat.dtype == np.float32 and heat.min() >= 0 and heat.max() <= 1
    many = g.ground_many(img, ["hold", "cut with", "a text never seen"])
    assert many.shape == (3, 70, 90)
    np.testing.assert_allclose(many[0], heat, atol=1e-6)
    ov = overlay(img, heat)
    assert ov.size == (90, 70)


def test_centre_prior():
    c = centre_prior(9, 9)
    assert c[4, 4] == pytest.approx(1.0) and c[0, 0] < c[2, 2] < c[4, 4]
    assert np.allclose(c, c.T)


def test_training_keeps_encoders_and_saves(tiny_model, world, tmp_path):
    labels = world_labels()
    items = read_exocentric(world / "Seen/trainset/exocentric", labels)
    before = {
        k: v.clone()
        for k, v in tiny_model.state_dict().items()
        if k.startswith(("image_encoder", "text_encoder"))
    }
    head_before = tiny_model.head[0].weight.clone()
    rel = RelationshipMap.load(world / "relationship.csv", labels)
    syn = SynonymTable.load(world / "synonyms.json", labels)
    cfg = IntraTrainConfig(
        output_dir=str(tmp_path / "run"), max_steps=3, batch_size=8, progress=False, log_every=1
    )
    res = train_intra(tiny_model, items, labels, rel, syn, cfg)
    assert res.step == 3 and all(np.isfinite(res.losses))
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, tiny_model.head[0].weight)
    g = IntraGrounder.from_pretrained(tmp_path / "run" / "final")
    assert g.model.labels == labels and g.model.synonyms.synonyms("hold")
    test = read_testset(world, "Seen", labels=labels)
    s = evaluate_items(test, lambda ims, a: g.ground_batch(ims, a)).means()
    c = evaluate_items(test, centre_prior_predict).means()
    assert s["n"] == c["n"] == len(test) and np.isfinite(s["KLD"])


def test_uncached_training_path(tiny_model, world, tmp_path):
    labels = world_labels()
    items = read_exocentric(world / "Seen/trainset/exocentric", labels)[:8]
    used = sorted({i.affordance for i in items})
    cfg = IntraTrainConfig(
        output_dir=str(tmp_path / "r"), max_steps=2, batch_size=4, progress=False, cache_image_features=False
    )
    res = train_intra(tiny_model, items, used, RelationshipMap.identity(used), SynonymTable({}), cfg)
    assert res.step == 2


def test_cli_data_train_infer_eval(world, encoder_dirs, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["data", "procedural", "--out", str(tmp_path / "w"), "--exo-per-pair", "1", "--ego-per-object", "1"],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "w" / "Unseen" / "testset" / "GT").is_dir()
    r = runner.invoke(
        app,
        ["train", "--data", f"folder:{world / 'Seen/trainset/exocentric'}", "--image-encoder", encoder_dirs[0],
         "--text-encoder", encoder_dirs[1], "--out", str(tmp_path / "run"), "--size", "tiny", "--steps", "2",
         "--batch-size", "4", "--relationship", str(world / "relationship.csv"), "--synonyms", str(world / "synonyms.json")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "run" / "final"
    img = next((world / "Seen/testset/egocentric/hold/knife").glob("*.png"))
    r = runner.invoke(app, ["infer", "--ckpt", str(ckpt), "--image", str(img), "--text", "hold", "--text", "cut with",
                            "--out", str(tmp_path / "inf")])  # fmt: skip
    assert r.exit_code == 0, r.output
    heat = np.asarray(Image.open(tmp_path / "inf" / "cut_with_heatmap.png"))
    assert heat.dtype == np.uint8 and heat.max() > 200 and heat.shape == Image.open(img).size[::-1]
    assert (tmp_path / "inf" / "hold_overlay.png").is_file()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    r = runner.invoke(
        app,
        ["infer", "--ckpt", str(ckpt), "--image", str(bad), "--text", "hold", "--out", str(tmp_path / "x")],
    )
    assert r.exit_code != 0 and isinstance(r.exception, ImageLoadError) and "bad.jpg" in str(r.exception)
    assert not (tmp_path / "x").exists()


def test_cli_eval_on_agd20k_layout(world, encoder_dirs, tmp_path, tiny_model):
    labels = world_labels()
    tiny_model.labels = labels
    tiny_model.save_pretrained(tmp_path / "ck")
    r = CliRunner().invoke(
        app, ["eval", "--ckpt", str(tmp_path / "ck"), "--data", f"agd20k:{world}", "--split", "Seen"]
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert m["selection"] == "final" and m["n"] == len(read_testset(world, "Seen", labels=labels))


def _train_args(world, encoder_dirs, out, *extra):
    return ["train", "--data", f"agd20k:{world}", "--split", "Seen", "--image-encoder", encoder_dirs[0],
            "--text-encoder", encoder_dirs[1], "--out", str(out), "--size", "tiny", "--steps", "2",
            "--batch-size", "4", *extra]  # fmt: skip


def test_cli_seeds_mean_std_and_validation_selection(world, encoder_dirs, tmp_path):
    import shutil

    shutil.copytree(world / "Seen" / "testset", tmp_path / "w" / "Seen" / "valset")
    (tmp_path / "w" / "Seen" / "trainset").symlink_to(world / "Seen" / "trainset")
    shutil.copytree(world / "Seen" / "testset", tmp_path / "w" / "Seen" / "testset")
    w, runner = tmp_path / "w", CliRunner()
    r = runner.invoke(app, _train_args(w, encoder_dirs, tmp_path / "run", "--seeds", "2", "--val-dir", "valset",
                                       "--eval-every", "1"))  # fmt: skip
    assert r.exit_code == 0, r.output
    for s in (0, 1):
        assert (tmp_path / "run" / f"seed-{s}" / "final" / "model.safetensors").is_file()
        sel = json.loads((tmp_path / "run" / f"seed-{s}" / "best" / "selection.json").read_text())
        assert sel["selection"] == "validation" and sel["step"] in (1, 2)
    r = runner.invoke(app, ["eval", "--ckpt", str(tmp_path / "run"), "--data", f"agd20k:{w}", "--seeds", "2"])
    assert r.exit_code == 0, r.output and "±" in r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["selection"] == "final" and m["seeds"] == [0, 1] and len(m["per_seed"]) == 2
    kld = [p["KLD"] for p in m["per_seed"]]
    assert m["mean_std"]["KLD"]["mean"] == pytest.approx(np.mean(kld))
    assert m["mean_std"]["KLD"]["std"] == pytest.approx(np.std(kld, ddof=1))
    r = runner.invoke(app, ["eval", "--ckpt", str(tmp_path / "run"), "--data", f"agd20k:{w}", "--seeds", "3"])
    assert r.exit_code != 0 and "seed-2" in r.output


def test_cli_test_set_selection_is_refused_as_validation_and_labelled(world, encoder_dirs, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, _train_args(world, encoder_dirs, tmp_path / "a", "--val-dir", "testset"))
    assert r.exit_code != 0 and "test set" in r.output
    with pytest.warns(UserWarning, match="LOCATE"):
        r = runner.invoke(
            app, _train_args(world, encoder_dirs, tmp_path / "b", "--select-on-test", "--eval-every", "1")
        )
    assert r.exit_code == 0, r.output
    best = json.loads((tmp_path / "b" / "best" / "metrics.json").read_text())
    assert best["selection"] == "test" and "LOCATE" in best["note"]
    r = runner.invoke(app, ["eval", "--ckpt", str(tmp_path / "b" / "best"), "--data", f"agd20k:{world}"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "best" / "metrics.json").read_text())["selection"] == "test"


def test_cli_eval_on_mask_layout(world, tiny_model, tmp_path):
    # IIT-AFF/CAD/UMD prepared layout: images/, masks/<verb>/<stem>.png (binarised), label_map.json
    root = tmp_path / "umd"
    (root / "images").mkdir(parents=True)
    (root / "masks" / "grasp").mkdir(parents=True)
    for p in sorted((world / "Seen/testset/egocentric/hold/knife").glob("*.png")):
        Image.open(p).save(root / "images" / p.name)
        gt = np.asarray(Image.open(world / "Seen/testset/GT/hold/knife" / p.name))
        Image.fromarray(((gt > 128) * 7).astype(np.uint8)).save(root / "masks" / "grasp" / p.name)
    (root / "label_map.json").write_text(json.dumps({"grasp": "hold"}))
    tiny_model.labels = world_labels()
    tiny_model.save_pretrained(tmp_path / "ck")
    r = CliRunner().invoke(app, ["eval", "--ckpt", str(tmp_path / "ck"), "--data", f"masks:{root}"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert m["n"] == len(list((root / "images").iterdir())) and m["data"] == str(root)
    assert set(m["groups"]["affordance"]) == {"hold"}


def test_part_hit_rates_on_gt_and_inverted_gt(world, monkeypatch):
    import fourfold.intra.pipeline as pipeline
    from fourfold.data.agd20k import load_gt

    items = read_testset(world, "Seen", labels=world_labels())
    gt_of = {it.path: load_gt(it.gt_path) for it in items}
    path_of = {}  # the oracle predicts from the GT of the image it is given
    real_load = pipeline.load_image

    def tracking_load(path):
        im = real_load(path)
        path_of[id(im)] = path
        return im

    def oracle(images, _affs, sign=1.0):
        return [sign * gt_of[path_of[id(im)]] for im in images]

    monkeypatch.setattr(pipeline, "load_image", tracking_load)
    good = pipeline.part_hit_rates(items, oracle)
    bad = pipeline.part_hit_rates(items, lambda ims, affs: oracle(ims, affs, -1.0))
    assert good["all"] == 1.0 and good["knife:hold"] == 1.0
    assert bad["all"] == 0.0
