"""Acceptance test 5 (spec §8): the nuclear-norm loss really reaches the trainable values (§4.2)."""

import torch
from tests.sara.conftest import make_stack, stack_batch
from torch import nn

from fourfold import sara


def test_rank_gradient_is_lambda_uvt_on_support():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 24, bias=False))
    lam = 0.3
    h = sara.wrap(
        model, sara.SaraConfig(threshold=0.15, lambda_rank=lam, rank_min_dim=8, rank_sampling="all")
    )
    (e,) = h.entries
    ps = h.masked_matrix(e.name).detach()
    sv = torch.linalg.svdvals(ps)
    assert bool((sv[:-1] - sv[1:] > 1e-4).all())  # distinct singular values: the subgradient is unique
    h.rank_loss().backward()
    u, _, vh = torch.linalg.svd(ps.double(), full_matrices=False)
    expect = (lam * (u @ vh)).reshape(-1)[e.param.active_indices.long()].float()
    torch.testing.assert_close(e.param.values.grad, expect, rtol=0, atol=1e-5)


def _run(lam, steps=6):
    model = make_stack()
    h = sara.wrap(model, sara.SaraConfig(fraction=0.1, lambda_rank=lam, rank_min_dim=8, progressive_at=None))
    opt = torch.optim.AdamW(h.parameters(), lr=1e-2)
    for step in range(1, steps + 1):
        tokens, target = stack_batch(seed=step)
        ((model(tokens) - target).pow(2).mean() + h.rank_loss()).backward()
        opt.step()
        opt.zero_grad()
        h.on_step(opt, step, steps)
    return torch.cat([p.detach() for p in h.parameters()])


def test_lambda_changes_the_run():
    assert not torch.allclose(_run(0.0), _run(0.1))  # official defect 1: identical runs


def test_rank_only_training_lowers_nuclear_norm():
    model = make_stack()
    h = sara.wrap(model, sara.SaraConfig(fraction=0.2, lambda_rank=1.0, rank_min_dim=8, rank_sampling="all"))
    names = h.rank_eligible()
    assert names

    def nuc():
        with torch.no_grad():
            return sum(float(torch.linalg.matrix_norm(h.masked_matrix(n), ord="nuc")) for n in names)

    before = nuc()
    opt = torch.optim.SGD(h.parameters(), lr=1e-3)
    for _ in range(20):
        h.rank_loss().backward()
        opt.step()
        opt.zero_grad()
    assert nuc() < 0.9 * before


def test_one_random_draws_one_eligible_tensor_per_call():
    model = make_stack()
    h = sara.wrap(model, sara.SaraConfig(fraction=0.2, lambda_rank=1.0, rank_min_dim=4, rank_conv=True))
    names = h.rank_eligible()
    assert "conv.weight" in names and len(names) >= 3
    norms = {n: float(torch.linalg.matrix_norm(h.masked_matrix(n).detach(), ord="nuc")) for n in names}
    seen = set()
    for _ in range(30):
        value = float(h.rank_loss().detach())
        match = [n for n, v in norms.items() if abs(v - value) < 1e-5 * max(1.0, v)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(names)
