"""Property tests of L_inter and L_obj (Eq. 2–4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fourfold.intra.losses import intra_loss, object_variance_loss, relation_contrastive_loss


def naive_supcon(z, labels, tau):
    n = len(z)
    total, anchors = 0.0, 0
    for i in range(n):
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n) if k != i)
        total += -sum(float(z[i] @ z[j]) / tau - math.log(denom) for j in pos) / len(pos)
        anchors += 1
    return total / anchors


def batch(seed=0, n=12, labels=3, p=8):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, p, generator=g), dim=-1)
    y = torch.arange(n) % labels
    return z, y


def test_identity_relation_equals_naive_supcon():
    z, y = batch()
    got = relation_contrastive_loss(z, y, torch.eye(3, dtype=torch.bool), 0.2)
    assert float(got) == pytest.approx(naive_supcon(z, y, 0.2), rel=1e-5)
    loss, parts = intra_loss(z, y, torch.zeros_like(y), torch.eye(3), lambda_obj=0.0)
    assert float(loss) == pytest.approx(naive_supcon(z, y, 0.2), rel=1e-5) and parts["l_obj"] == 0.0


def test_naive_weighted_loop_with_relation():
    z, y = batch(1)
    r = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    n, tau = len(z), 0.2
    total = 0.0
    for i in range(n):
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n) if k != i)
        cnt = sum(int(y[j] == y[i]) for j in range(n) if j != i)
        s = sum(
            float(r[y[i], y[j]]) * (float(z[i] @ z[j]) / tau - math.log(denom)) for j in range(n) if j != i
        )
        total += -s / cnt
    assert float(relation_contrastive_loss(z, y, r, tau)) == pytest.approx(total / n, rel=1e-5)


def test_flipping_one_relation_entry_changes_loss_and_gradient():
    z, y = batch(2)
    z.requires_grad_(True)
    r = torch.eye(3, dtype=torch.bool)
    r2 = r.clone()
    r2[0, 1] = r2[1, 0] = True
    l1 = relation_contrastive_loss(z, y, r)
    (g1,) = torch.autograd.grad(l1, z)
    l2 = relation_contrastive_loss(z, y, r2)
    (g2,) = torch.autograd.grad(l2, z)
    assert abs(float(l1.detach()) - float(l2.detach())) > 1e-3 and (g1 - g2).abs().max() > 1e-3


def test_permutation_invariant():
    z, y = batch(3)
    o = torch.arange(len(z)) % 4
    r = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))
    a, _ = intra_loss(z, y, o, r)
    b, _ = intra_loss(z[perm], y[perm], o[perm], r)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def optimise(y, r, steps=150, objects=None, lam=0.0):
    torch.manual_seed(0)
    w = torch.randn(len(y), 8, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    objects = objects if objects is not None else torch.full_like(y, -1)
    for _ in range(steps):
        loss, _ = intra_loss(F.normalize(w, dim=-1), y, objects, r, lambda_obj=lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return F.normalize(w.detach(), dim=-1)


def test_relation_positives_pulled_together_negatives_pushed_apart():
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # labels 0 and 1 act on the same part
    r = torch.eye(4, dtype=torch.bool)
    r[0, 1] = r[1, 0] = True
    z = optimise(y, r)
    z_id = optimise(y, torch.eye(4, dtype=torch.bool))
    cross_r = float((z[y == 0] @ z[y == 1].T).mean())
    cross_i = float((z_id[y == 0] @ z_id[y == 1].T).mean())
    neg_r = float((z[y == 0] @ z[y == 2].T).mean())
    assert cross_r > 0.8  # R-positives of different labels end up together
    assert cross_i < 0.2  # without R the same pair is pushed apart
    assert neg_r < 0.0  # R-negatives are pushed apart


def test_object_loss_minimum_when_object_features_agree():
    # Eq. 3 is SupCon-form, so its floor is mean_i log(m(o_i) − 1), reached when views of one object coincide
    # and other objects are far away; with m = 2 views per object that floor is 0.
    objects = torch.tensor([0, 0, 1, 1, 2, 2])
    centres = torch.eye(3, 8) * 1.0
    agree = centres[objects]
    l_agree = object_variance_loss(agree, objects, temperature=0.02)
    assert float(l_agree) < 1e-6
    w = agree.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(object_variance_loss(F.normalize(w, dim=-1), objects, 0.02), w)
    assert g.abs().max() < 1e-6
    spread = F.normalize(agree + 0.8 * torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert float(object_variance_loss(spread, objects, 0.02)) > 1.0


def test_unknown_object_anchors_skipped():
    z, _ = batch(4, n=6)
    objects = torch.tensor([0, 0, -1, -1, 1, 1])
    full = object_variance_loss(z, objects)
    # unknown views stay in the denominators but are never anchors or positives
    keep = objects != -1
    logits = z @ z.T / 0.2
    manual = []
    for i in torch.nonzero(keep).flatten().tolist():
        denom = torch.logsumexp(torch.cat([logits[i, :i], logits[i, i + 1 :]]), 0)
        pos = [j for j in range(6) if j != i and objects[j] == objects[i]]
        manual.append(-sum(float(logits[i, j] - denom) for j in pos) / len(pos))
    assert float(full) == pytest.approx(sum(manual) / len(manual), rel=1e-5)
    assert float(object_variance_loss(z, torch.full((6,), -1))) == 0.0


def test_loss_falls_on_fixed_toy_batch():
    torch.manual_seed(0)
    x = torch.randn(16, 10)
    y = torch.arange(16) % 4
    o = torch.arange(16) % 2
    r = torch.eye(4, dtype=torch.bool)
    r[0, 1] = r[1, 0] = True
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss, _ = intra_loss(F.normalize(net(x), dim=-1), y, o, r)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
