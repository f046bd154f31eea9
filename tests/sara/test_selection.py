"""Acceptance test 1 (spec §8): global threshold selection, fraction mode, empty supports."""

import math

import pytest
import torch
from tests.sara.conftest import make_stack
from torch import nn

from fourfold import sara
from fourfold.sara.selection import resolve_fraction, select_indices


def test_selection_is_strict_less_than_per_tensor():
    w = torch.tensor([[0.5, -0.001, 0.002], [0.0, -0.002, 0.0019999]])
    idx = select_indices(w, 0.002)
    assert idx.dtype == torch.int32
    assert torch.equal(idx.long(), (w.abs() < 0.002).reshape(-1).nonzero().reshape(-1))
    assert idx.tolist() == [1, 3, 5]  # |w| == θ is not selected


def test_wrap_selects_every_parameter_kind_globally():
    model = make_stack()
    theta = 0.02
    expect = {
        n: (p.detach().abs() < theta).reshape(-1).nonzero().reshape(-1) for n, p in model.named_parameters()
    }
    h = sara.wrap(model, sara.SaraConfig(threshold=theta))
    got = {e.name: e.param.indices.long() for e in h.entries}
    assert set(got) == {n for n, i in expect.items() if i.numel()}
    for n, idx in got.items():
        assert torch.equal(idx, expect[n]), n
    kinds = {n.split(".")[0] for n in got}
    assert {"emb", "fc1", "norm", "conv", "gn", "fc2"} <= kinds or {"emb", "fc1", "conv", "fc2"} <= kinds


@pytest.mark.parametrize("fraction", [0.01, 0.058, 0.3])
def test_fraction_hits_ceil_f_n_up_to_ties(fraction):
    model = make_stack()
    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)
    theta = resolve_fraction(params, fraction)
    count = sum(int((p.detach().abs() < theta).sum()) for p in params)
    k = math.ceil(fraction * n)
    flat = torch.cat([p.detach().reshape(-1).abs() for p in params])
    kth = torch.sort(flat).values[k - 1]
    assert count >= k
    assert count == int((flat <= kth).sum())  # exactly the k smallest plus their ties
    below = float(torch.nextafter(torch.tensor(theta, dtype=torch.float32), torch.tensor(0.0)))
    assert sum(int((p.detach().abs() < below).sum()) for p in params) < k  # θ is the smallest such value


def test_fraction_with_ties_selects_whole_tie_group():
    t = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    theta = resolve_fraction([t], 0.25)  # k = 2 lands inside the four zeros
    assert int((t.abs() < theta).sum()) == 4


def test_empty_support_gets_no_parametrization_and_no_grad():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(1.0)
        model[1].weight.fill_(1.0)
        model[1].bias[:] = torch.tensor([0.0, 1.0, 1.0, 1.0])
    h = sara.wrap(model, sara.SaraConfig(threshold=0.5))
    assert [e.name for e in h.entries] == ["1.bias"]
    assert not hasattr(model[0], "parametrizations")
    model(torch.randn(2, 4)).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.endswith(".values"))
    assert h.parameters()[0].grad.shape == (1,)


def test_include_exclude_and_validation():
    model = make_stack()
    h = sara.wrap(model, sara.SaraConfig(threshold=0.05, include=[r"^fc"], exclude=[r"bias$"]))
    assert {e.name for e in h.entries} == {"fc1.weight", "fc2.weight"}
    with pytest.raises(ValueError, match="threshold"):
        sara.SaraConfig()
    with pytest.raises(ValueError, match="fraction"):
        sara.SaraConfig(fraction=1.5)
    with pytest.raises(ValueError, match="backend"):
        sara.SaraConfig(threshold=1e-3, backend="dense")
    with pytest.raises(ValueError, match="progressive_at"):
        sara.SaraConfig(threshold=1e-3, progressive_at=2.0)
    with pytest.raises(ValueError, match="already"):
        sara.wrap(model, sara.SaraConfig(threshold=0.05))


def test_wrap_error_leaves_model_untouched():
    model = make_stack()
    with pytest.raises(ValueError, match="raise the threshold"):
        sara.wrap(model, sara.SaraConfig(threshold=1e-30, include=[r"^fc1\.weight$"]))
    with pytest.raises(ValueError, match="sorted and unique"):
        sara.wrap(
            model,
            sara.SaraConfig(threshold=1e-3, progressive_at=None),
            indices={"fc1.weight": torch.tensor([3, 1])},
        )
    assert all(p.requires_grad for p in model.parameters())
    assert not any("parametrizations" in n for n in model.state_dict())
