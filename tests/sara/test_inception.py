"""FID InceptionV3 (torch-fidelity layout) from a local weight file; random weights, no download."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from fourfold.metrics.frechet import frechet_distance_from_features
from fourfold.nn.modeling import CheckpointError
from fourfold.sara.inception import (
    FID_FEATURES,
    FidInceptionV3,
    inception_features,
    load_fid_inception,
    resize_bilinear_tf1,
)


def test_tf1_bilinear_resize_has_no_half_pixel_offset():
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]
    y = resize_bilinear_tf1(x, 4)
    # source coordinate i·(2/4): 0, 0.5, 1, 1.5 → the last two rows/cols clamp to the edge
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))
    assert torch.allclose(y[0, 0, :, 0], torch.tensor([0.0, 10.0, 20.0, 20.0]))
    z = torch.rand(1, 3, 7, 7)
    assert torch.equal(resize_bilinear_tf1(z, 7), z)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = FidInceptionV3()
    path = tmp_path_factory.mktemp("inc") / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def _folder(root, seed, n=2):
    root.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


def test_features_of_image_folders(weights, tmp_path):
    torch.set_num_threads(1)
    net = load_fid_inception(weights)
    a = _folder(tmp_path / "a", 0)
    fa = inception_features(net, sorted(a.iterdir()))
    assert fa.shape == (2, FID_FEATURES) and np.isfinite(fa).all() and not np.allclose(fa[0], fa[1])
    single = inception_features(net, sorted(a.iterdir())[:1], batch=1)
    assert np.allclose(single[0], fa[0], rtol=1e-5, atol=1e-6)  # batching does not change a feature
    with pytest.raises(ValueError, match="uint8"):
        net(torch.rand(1, 3, 8, 8))


@pytest.mark.slow  # one 2048-d scipy sqrtm costs ~20-50 CPU seconds
def test_fid_through_the_cli(weights, tmp_path):
    from fourfold.sara.cli import app

    torch.set_num_threads(1)
    net = load_fid_inception(weights)
    a, b = _folder(tmp_path / "a", 0), _folder(tmp_path / "b", 1)
    res = CliRunner().invoke(app, ["eval", "--inception", str(weights), "--images", str(a), "--ref-images", str(b)],
                             catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    fid = json.loads(res.stdout[res.stdout.index("{") :])["fid"]
    fa, fb = (inception_features(net, sorted(d.iterdir())) for d in (a, b))
    assert fid == pytest.approx(frechet_distance_from_features(fa, fb), rel=1e-6) and fid > 0


def test_wrong_weight_file_is_named(tmp_path):
    bad = tmp_path / "bad.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_fid_inception(bad)
    with pytest.raises(FileNotFoundError):
        load_fid_inception(tmp_path / "none.pth")
