"""Acceptance tests 7 and 8 (spec §8): save/load bit-exactness, file layout, errors, patch algebra."""

import json

import pytest
import torch
from safetensors import safe_open
from tests.sara.conftest import make_stack, make_unet2d, make_unet_cond, stack_batch, unet_cond_inputs

from fourfold import sara
from fourfold.nn.modeling import CheckpointError

MODELS = {
    "stack": (make_stack, lambda: (stack_batch(4)[0],)),
    "unet2d": (make_unet2d, lambda: unet_cond_inputs()[:2]),
    "unet_cond": (make_unet_cond, lambda: unet_cond_inputs()),
}


def _out(model, inputs):
    with torch.no_grad():
        y = model(*inputs)
    return y if isinstance(y, torch.Tensor) else y.sample


def _finetune(kind, steps=4, seed=0):
    build, inputs = MODELS[kind]
    model = build(seed)
    h = sara.wrap(model, sara.SaraConfig(fraction=0.05, lambda_rank=1e-2, rank_min_dim=8, progressive_at=0.5))
    opt = torch.optim.AdamW(h.parameters(), lr=2e-2, weight_decay=1e-2)
    for step in range(1, steps + 1):
        (_fwd(model, inputs()).pow(2).mean() + h.rank_loss()).backward()
        opt.step()
        opt.zero_grad()
        h.on_step(opt, step, steps)
    h.sync()
    return model, h


def _fwd(model, inputs):
    y = model(*inputs)
    return y if isinstance(y, torch.Tensor) else y.sample


@pytest.mark.parametrize("kind", list(MODELS))
def test_save_load_reproduces_finetuned_model_bit_exactly(kind, tmp_path):
    model, h = _finetune(kind)
    h.save_pretrained(tmp_path / "adapter")
    fresh = MODELS[kind][0](0)
    h2 = sara.load(fresh, tmp_path / "adapter")
    sd1, sd2 = model.state_dict(), fresh.state_dict()
    for e1, e2 in zip(h.entries, h2.entries, strict=True):
        assert e1.name == e2.name
        assert torch.equal(e1.base, e2.base), e1.name
    for k in sd1:
        if k.endswith(".original") or "parametrizations" not in k:
            assert torch.equal(sd1[k], sd2[k]), k
    inputs = MODELS[kind][1]()
    assert torch.equal(_out(model, inputs), _out(fresh, inputs))
    # the file: only indices (int32) and values, plus config/fingerprint metadata; no pickle
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
        for k in keys:
            assert k.startswith("base_model.model.") and k.endswith((".sara_indices", ".sara_values"))
            t = f.get_tensor(k)
            assert t.dtype == (torch.int32 if k.endswith("indices") else torch.float32)
    assert len(keys) == 2 * len(h.entries)
    assert {"sara_config", "fingerprint", "threshold"} <= set(meta)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == "SARA"


def test_wrong_base_and_corrupt_file_errors_leave_model_untouched(tmp_path):
    _, h = _finetune("stack")
    h.save_pretrained(tmp_path / "a")
    other = make_stack(seed=5)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"'(emb|fc1|norm|conv|gn|fc2)\.(weight|bias)'"):
        sara.load(other, tmp_path / "a")
    wrong_shape = torch.nn.Sequential()
    with pytest.raises(CheckpointError, match="no parameter"):
        sara.load(wrong_shape, tmp_path / "a")
    path = tmp_path / "a" / "adapter_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    good = make_stack()
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        sara.load(good, tmp_path / "a")
    for k, v in other.state_dict().items():
        assert torch.equal(v, before[k])
    assert not any("parametrizations" in k for k in good.state_dict())
    with pytest.raises(CheckpointError, match="missing"):
        sara.load(good, tmp_path / "nowhere")


@pytest.mark.parametrize("kind", list(MODELS))
def test_patch_algebra(kind, tmp_path):
    p0 = {k: v.clone() for k, v in MODELS[kind][0](0).state_dict().items()}
    _, h = _finetune(kind)
    tuned = {e.name: e.base.detach().clone() for e in h.entries}
    h.unmerge()
    for e in h.entries:
        assert torch.equal(e.base, p0[e.name]), e.name
    h.merge()
    for e in h.entries:
        assert torch.equal(e.base, tuned[e.name])
    h.scale(0.0)
    for e in h.entries:
        assert torch.equal(e.base, p0[e.name])
    h.scale(0.5)
    for e in h.entries:
        expect = p0[e.name] + 0.5 * (tuned[e.name] - p0[e.name])
        torch.testing.assert_close(e.base.detach(), expect, rtol=0, atol=1e-7)
    h.scale(1.0)
    for e in h.entries:
        assert torch.equal(e.base, tuned[e.name])
    delta = h.delta()
    plain = h.merge_and_unload()
    assert list(plain.state_dict()) == list(p0)
    assert all(p.requires_grad and p.grad is None for p in plain.parameters())
    for name, t in tuned.items():
        assert torch.equal(plain.state_dict()[name], t)
    if kind != "stack":  # diffusers round trip of the merged model
        plain.save_pretrained(tmp_path / "merged")
        again = type(plain).from_pretrained(tmp_path / "merged")
        for k, v in plain.state_dict().items():
            assert torch.equal(again.state_dict()[k], v), k
    # a delta applies to a fresh base exactly
    fresh = MODELS[kind][0](0)
    delta.apply_to(fresh)
    for name, t in tuned.items():
        assert torch.equal(dict(fresh.named_parameters())[name], t)


def test_combine_matches_formula(tmp_path):
    _, ha = _finetune("stack", seed=0)
    ha.save_pretrained(tmp_path / "a")
    mb = make_stack(0)
    hb = sara.wrap(mb, sara.SaraConfig(fraction=0.08, progressive_at=None))
    opt = torch.optim.AdamW(hb.parameters(), lr=3e-2)
    for step in range(3):
        tokens, target = stack_batch(seed=50 + step)
        (mb(tokens) - target).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    da, db = sara.SaraDelta.from_pretrained(tmp_path / "a"), hb.delta()
    base = make_stack(0)
    p0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    sara.combine([da, db], weights=[0.6, 0.6]).apply_to(base)
    va = {e.name: e.base.detach() for e in ha.entries}
    vb = {e.name: e.base.detach() for e in hb.entries}
    for n, p in base.named_parameters():
        expect = p0[n].clone()
        if n in va:
            expect = expect + 0.6 * (va[n] - p0[n])
        if n in vb:
            expect = expect + 0.6 * (vb[n] - p0[n])
        torch.testing.assert_close(p.detach(), expect, rtol=0, atol=1e-6)
    with pytest.raises(CheckpointError, match="does not match"):
        da.apply_to(base)  # already patched: not the base any more


def test_import_official_checkpoint(tmp_path):
    base = make_stack(0)
    theta = 0.02
    saved, expect = {}, {}
    g = torch.Generator().manual_seed(3)
    for pos, (name, p) in enumerate(base.named_parameters()):
        mask = p.detach().abs() < theta
        vals = (
            torch.randn(int(mask.sum()), generator=g) * 0.01
        )  # official format: {position: values at |P0| < θ}
        saved[pos] = vals
        w = p.detach().clone()
        w[mask] = vals
        expect[name] = w
    torch.save(saved, tmp_path / "unet.pt")
    sara.import_official(base, tmp_path / "unet.pt", theta)
    for e_name, w in expect.items():
        assert torch.equal(_weight(base, e_name), w), e_name
    saved[0] = saved[0][:-1]
    torch.save(saved, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"tensor 0 \(emb.weight\)"):
        sara.import_official(make_stack(0), tmp_path / "bad.pt", theta)


def _weight(model, name):
    module, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(module), attr)
