"""IntraModel: frozen encoders, map range, Eq. 1 pooling, text conditioning, save/load."""

import json

import pytest
import torch

from fourfold.intra.config import IntraConfig
from fourfold.intra.losses import intra_loss
from fourfold.intra.model import IntraModel
from fourfold.intra.relations import RelationshipMap
from fourfold.nn import CheckpointError


def images(n=4, size=56, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_frozen_encoders_get_no_gradient_and_optimizer_holds_only_trainables(tiny_model):
    m = tiny_model.train()
    before = {
        k: v.clone() for k, v in m.state_dict().items() if k.startswith(("image_encoder.", "text_encoder."))
    }
    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-2)
    trainable_ids = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable_ids == {id(p) for g in opt.param_groups for p in g["params"]}
    expect = {
        id(p)
        for name in ("text_adapter", "fusion", "head", "projection")
        for p in getattr(m, name).parameters()
    }
    assert trainable_ids == expect
    out = m(images(), texts=["hold", "carry", "hold", "carry"])
    loss, _ = intra_loss(out.z, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]), torch.eye(2))
    loss.backward()
    opt.step()
    assert not m.image_encoder.training and not m.text_encoder.training
    for name, p in list(m.image_encoder.named_parameters()) + list(m.text_encoder.named_parameters()):
        assert p.grad is None, name
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.head[0].weight.grad is not None


def test_map_range_and_eq1_pooling_loop(tiny_model):
    m = tiny_model.eval()
    x = images()
    out = m(x, texts=["hold", "pour", "sip", "wash"])
    assert out.heatmap.shape == (4, 4, 4)
    flat = out.heatmap.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(4), atol=1e-6)
    assert torch.allclose(flat.max(1).values, torch.ones(4), atol=1e-5)
    feats = m.encode_image(x)
    manual = torch.zeros(4, m.dim)
    for b in range(4):
        for i in range(4):
            for j in range(4):
                manual[b] += feats[b, i * 4 + j] * out.heatmap[b, i, j]
    torch.testing.assert_close(out.pooled, manual / 16, atol=1e-5, rtol=1e-5)
    assert torch.allclose(out.z.norm(dim=-1), torch.ones(4), atol=1e-5)
    cached = m(image_features=feats, texts=["hold", "pour", "sip", "wash"])
    torch.testing.assert_close(cached.heatmap, out.heatmap)


def test_two_texts_give_different_maps(tiny_model):
    m = tiny_model.eval()
    x = images(1).repeat(2, 1, 1, 1)
    same = m(x, texts=["hold", "hold"]).heatmap
    assert torch.equal(same[0], same[1])
    with torch.no_grad():  # a trained adapter is far from its small init; widen it to see the text path
        m.text_adapter.weight.mul_(50.0)
    out = m(x, texts=["hold", "cut with"])
    assert (out.heatmap[0] - out.heatmap[1]).abs().max() > 1e-2


def test_save_load_round_trip_without_encoder_weights(tiny_model, tmp_path, encoder_dirs):
    from safetensors.torch import load_file

    m = tiny_model.eval()
    m.labels = ["hold", "carry"]
    m.relationship = RelationshipMap.identity(m.labels)
    m.save_pretrained(tmp_path / "run")
    keys = load_file(str(tmp_path / "run" / "model.safetensors")).keys()
    assert keys and not any(k.startswith(("image_encoder", "text_encoder")) for k in keys)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["image_encoder_fingerprint"] and cfg["text_encoder"] == encoder_dirs[1]
    back = IntraModel.from_pretrained(tmp_path / "run")
    x = images(2)
    torch.testing.assert_close(back(x, texts=["hold", "x"]).heatmap, m(x, texts=["hold", "x"]).heatmap)
    assert back.labels == ["hold", "carry"] and back.relationship.labels == ("hold", "carry")


def test_missing_encoder_dir_is_named(tmp_path, encoder_dirs):
    with pytest.raises(CheckpointError, match="nowhere"):
        IntraModel(IntraConfig.tiny(image_encoder=str(tmp_path / "nowhere"), text_encoder=encoder_dirs[1]))


def test_fingerprint_mismatch_warns(tiny_model, tmp_path, encoder_dirs):
    tiny_model.save_pretrained(tmp_path / "run")
    cfg_path = tmp_path / "run" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["image_encoder_fingerprint"] = "0" * 16
    cfg_path.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="image_encoder"):
        IntraModel.from_pretrained(tmp_path / "run")


def test_config_validation():
    with pytest.raises(ValueError, match="temperature"):
        IntraConfig(temperature=0)
    with pytest.raises(ValueError, match="inter_normalizer"):
        IntraConfig(inter_normalizer="all")
    with pytest.raises(ValueError, match="resize_size"):
        IntraConfig(image_size=336, resize_size=300)
    p = IntraConfig.paper()
    assert (p.fusion_layers, p.fusion_heads, p.proj_dim, p.temperature, p.lambda_obj, p.synonym_p) == (
        4,
        4,
        128,
        0.2,
        4.0,
        0.2,
    )


@pytest.mark.parametrize("norm_first", [True, False])
def test_inference_fusion_equals_the_transformer_module(encoder_dirs, norm_first):
    # Grounding runs the fusion through scaled_dot_product_attention; it must equal nn.TransformerEncoder.
    torch.manual_seed(0)
    cfg = IntraConfig.tiny(image_encoder=encoder_dirs[0], text_encoder=encoder_dirs[1], image_size=56,
                           resize_size=64, fusion_layers=2, fusion_norm_first=norm_first)  # fmt: skip
    model = IntraModel(cfg).eval()
    tokens = torch.randn(3, 17, model.dim)
    with torch.no_grad():
        torch.testing.assert_close(model._fusion_eval(tokens), model.fusion(tokens), atol=1e-5, rtol=1e-5)
        x = torch.rand(3, 3, 56, 56)
        out = model(x, texts=["hold", "pour", "sip"])
        model.train()
        ref = model(x, texts=["hold", "pour", "sip"])  # dropout is 0 in tiny: the module path, same maps
    torch.testing.assert_close(out.heatmap, ref.heatmap, atol=1e-5, rtol=1e-5)
