"""Acceptance tests 2, 3, 4 and 6 (spec §8): sparse update, backend equivalence, accumulation, PPA."""

import torch
from tests.sara.conftest import make_stack, make_unet_cond, stack_batch, unet_cond_inputs

from fourfold import sara


def _loss(model, tokens, target):
    return (model(tokens) - target).pow(2).mean()


def _train(model, handle, steps, accum=1, lr=3e-2, wd=1e-2, rank=True, seed=1):
    opt = torch.optim.AdamW(handle.parameters(), lr=lr, weight_decay=wd)
    for step in range(1, steps + 1):
        for micro in range(accum):
            tokens, target = stack_batch(8 // accum, seed=seed + 100 * step + micro)
            loss = _loss(model, tokens, target) / accum
            if rank and micro == 0:
                loss = loss + handle.rank_loss()
            loss.backward()
        opt.step()
        opt.zero_grad()
        handle.on_step(opt, step, steps)
    return opt


def test_entries_outside_support_stay_bit_identical():
    model = make_stack()
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = sara.SaraConfig(fraction=0.1, lambda_rank=0.05, rank_min_dim=8, progressive_at=0.5)
    h = sara.wrap(model, cfg)
    _train(model, h, steps=20, accum=2)
    assert h.ppa_done == [10]
    h.sync()
    changed = 0
    for e in h.entries:
        now, before = e.base.detach().reshape(-1), p0[e.name].reshape(-1)
        outside = torch.ones_like(before, dtype=torch.bool)
        outside[e.param.indices.long()] = False
        assert torch.equal(now[outside], before[outside]), e.name
        changed += int((now != before).sum())
    assert changed > 0
    untargeted = {n for n in p0} - {e.name for e in h.entries}
    plain = dict(h.merge_and_unload().named_parameters())
    for n in untargeted:
        assert torch.equal(plain[n], p0[n]), n


def _pair(backend, **kw):
    model = make_stack()
    cfg = sara.SaraConfig(
        fraction=0.1, lambda_rank=0.05, rank_min_dim=8, progressive_at=0.5, backend=backend, **kw
    )
    return model, sara.wrap(model, cfg)


def test_sparse_backend_matches_masked_dense_reference():
    ms, hs = _pair("sparse")
    md, hd = _pair("masked_dense")
    tokens, target = stack_batch()
    _loss(ms, tokens, target).backward()
    for e in hs.entries:  # memory-lean invariants after backward
        assert e.base.grad is None and not e.base.requires_grad
        assert e.param.values.grad.shape == (e.param.num_active,)
        assert getattr(e.module, e.attr).data_ptr() == e.base.data_ptr()
    trainable = {n for n, p in ms.named_parameters() if p.requires_grad}
    assert trainable == {
        f"{e.name.rpartition('.')[0]}.parametrizations.{e.attr}.0.values" for e in hs.entries
    }
    ms.zero_grad(set_to_none=True)
    _train(ms, hs, steps=10)
    _train(md, hd, steps=10)
    assert hs.ppa_done == hd.ppa_done == [5]
    for es, ed in zip(hs.entries, hd.entries, strict=True):
        assert torch.equal(es.param.active_indices, ed.param.active_indices), es.name
        torch.testing.assert_close(
            es.param.full_values(es.base), ed.param.full_values(ed.base), rtol=0, atol=1e-6
        )
    assert hs.num_trainable() < hs.num_support()


def _grads(handle):
    return [p.grad.clone() for p in handle.parameters()]


def test_accumulation_equals_big_batch_and_clip_norm_is_masked_norm():
    m1, h1 = _pair("sparse")
    m2, h2 = _pair("sparse")
    tokens, target = stack_batch(8)
    _loss(m1, tokens, target).backward()
    for part in range(4):
        sl = slice(2 * part, 2 * part + 2)
        (_loss(m2, tokens[sl], target[sl]) / 4).backward()
    for a, b in zip(_grads(h1), _grads(h2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    md, hd = _pair("masked_dense")
    _loss(md, tokens, target).backward()
    ref = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in hd.parameters()]))
    norm = torch.nn.utils.clip_grad_norm_(m1.parameters(), 1e9)
    assert float(norm) > 0
    torch.testing.assert_close(norm, ref, rtol=1e-6, atol=0)


def test_gradient_checkpointing_gives_same_grads_on_unet():
    x, t, c = unet_cond_inputs()
    grads = []
    for ckpt in (False, True):
        unet = make_unet_cond()
        h = sara.wrap(unet, sara.SaraConfig(fraction=0.05))
        if ckpt:
            unet.enable_gradient_checkpointing()
        unet.train()
        unet(x, t, c).sample.pow(2).mean().backward()
        grads.append(_grads(h))
        assert all(e.base.grad is None for e in h.entries)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_ppa_shrinks_support_freezes_dropped_and_keeps_adam_state():
    model = make_stack()
    h = sara.wrap(model, sara.SaraConfig(fraction=0.1, lambda_rank=0.0, progressive_at=[3]))
    opt = torch.optim.AdamW(h.parameters(), lr=5e-2, weight_decay=1e-2)
    params_before = h.parameters()
    s0 = {e.name: e.param.indices.clone() for e in h.entries}
    for step in range(1, 9):
        _loss(model, *stack_batch(seed=step)).backward()
        if step == 4:  # first backward after PPA: frozen entries get no gradient
            for e in h.entries:
                assert not bool(e.param.values.grad[~e.param.active].any())
        opt.step()
        opt.zero_grad()
        if step == 3:
            h.sync()
            before = {
                e.name: (
                    e.param.values.detach().clone(),
                    {k: v.clone() for k, v in opt.state[e.param.values].items()},
                )
                for e in h.entries
            }
        did = h.on_step(opt, step, 8)
        assert did == (step == 3)
        if step == 3:
            h.sync()
            at_ppa = {e.name: e.base.detach().clone() for e in h.entries}
            for e in h.entries:
                vals, state = before[e.name]
                assert torch.equal(e.param.active, vals.abs() < h.threshold)
                st = opt.state[e.param.values]  # survivors' moments are their pre-PPA slices
                for key in ("exp_avg", "exp_avg_sq"):
                    assert torch.equal(st[key][e.param.active], state[key][e.param.active])
    assert all(a is b for a, b in zip(params_before, h.parameters(), strict=True))  # same tensors
    h.sync()
    assert 0 < h.num_trainable() < h.num_support()
    for e in h.entries:
        active = e.param.active_indices.long()
        assert bool(torch.isin(active, s0[e.name].long()).all())  # S_active ⊆ S0
        frozen = e.param.frozen_indices.long()
        now = e.base.detach().reshape(-1)
        assert torch.equal(now[frozen], at_ppa[e.name].reshape(-1)[frozen])  # unchanged from PPA to the end
        assert torch.equal(e.param.full_values(e.base)[~e.param.active], now[frozen])
    stats = h.stats()
    assert stats["active"] < stats["support"]


def test_bf16_autocast_and_bf16_base_keep_fp32_masters():
    model = make_stack()
    h = sara.wrap(model, sara.SaraConfig(fraction=0.1))
    tokens, target = stack_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _loss(model, tokens, target)
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in h.parameters())
    half = make_stack().to(torch.bfloat16)
    hb = sara.wrap(half, sara.SaraConfig(fraction=0.1))
    opt = torch.optim.AdamW(hb.parameters(), lr=1e-2)
    (half(tokens).float() - target).pow(2).mean().backward()
    opt.step()
    hb.sync()
    for e in hb.entries:
        assert e.base.dtype == torch.bfloat16 and e.param.values.dtype == torch.float32
        assert torch.equal(
            e.base.reshape(-1)[e.param.indices.long()], e.param.values.detach().to(torch.bfloat16)
        )
