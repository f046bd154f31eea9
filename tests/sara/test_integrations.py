"""SaRA on a transformers model, the one-line SaraAdamW, and training through Accelerate."""

import torch
from tests.sara.conftest import make_stack, stack_batch

from fourfold import sara


def _tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertModel(cfg)


def test_transformers_model_trains_saves_and_loads(tmp_path):
    model = _tiny_bert()
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    h = sara.wrap(model, sara.SaraConfig(fraction=0.05, rank_min_dim=16))
    opt = torch.optim.AdamW(h.parameters(), lr=1e-2)
    before = model(ids).last_hidden_state.detach().clone()
    for step in range(1, 4):
        (model(ids).last_hidden_state.pow(2).mean() + h.rank_loss()).backward()
        opt.step()
        opt.zero_grad()
        h.on_step(opt, step, 3)
    after = model(ids).last_hidden_state.detach()
    assert not torch.allclose(before, after)
    h.save_pretrained(tmp_path / "bert")
    fresh = _tiny_bert()
    sara.load(fresh, tmp_path / "bert")
    assert torch.equal(fresh(ids).last_hidden_state, after)


def test_sara_adamw_one_line_trains_only_small_entries():
    model = make_stack()
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = sara.SaraAdamW(model, threshold=0.02, progressive_iter=3, lambda_rank=0.05, rank_min_dim=8)
    assert opt.param_groups[0]["lr"] == sara.learning_rate_for_threshold(0.02)
    for step in range(6):
        tokens, target = stack_batch(seed=step)
        (model(tokens) - target).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    h = opt.handle
    assert h.ppa_done == [3] and h.num_trainable() <= h.num_support()
    plain = h.merge_and_unload()
    for n, p in plain.named_parameters():
        changed = p.detach() != p0[n]
        assert bool((p0[n].abs()[changed] < 0.02).all()), n


def test_rank_gradient_in_sara_adamw_matches_loss_form():
    runs = []
    for one_line in (True, False):
        model = make_stack()
        if one_line:
            opt = sara.SaraAdamW(model, threshold=0.02, lambda_rank=0.5, rank_min_dim=8, lr=1e-2)
            h = opt.handle
        else:
            h = sara.wrap(
                model, sara.SaraConfig(threshold=0.02, lambda_rank=0.5, rank_min_dim=8, progressive_at=None)
            )
            opt = torch.optim.AdamW(h.parameters(), lr=1e-2, weight_decay=1e-2)
        for step in range(3):
            tokens, target = stack_batch(seed=step)
            loss = (model(tokens) - target).pow(2).mean()
            if not one_line:
                loss = loss + h.rank_loss()
            loss.backward()
            opt.step()
            opt.zero_grad()
        runs.append(torch.cat([p.detach() for p in h.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-6, atol=1e-7)


def test_accelerate_prepare_and_clip():
    from accelerate import Accelerator

    model = make_stack()
    h = sara.wrap(model, sara.SaraConfig(fraction=0.1, progressive_at=[2]))
    acc = Accelerator(cpu=True, gradient_accumulation_steps=2)
    opt = torch.optim.AdamW(h.parameters(), lr=1e-2)
    pmodel, popt = acc.prepare(model, opt)
    step = 0
    for micro in range(8):
        with acc.accumulate(pmodel):
            tokens, target = stack_batch(4, seed=micro)
            loss = (pmodel(tokens) - target).pow(2).mean() + (h.rank_loss() if micro % 2 == 0 else 0.0)
            acc.backward(loss)
            if acc.sync_gradients:
                norm = acc.clip_grad_norm_(pmodel.parameters(), 1.0)
                assert float(norm) > 0
            popt.step()
            popt.zero_grad()
            if acc.sync_gradients:
                step += 1
                h.on_step(popt, step, 4)
    assert step == 4 and h.ppa_done == [2]
    assert all(e.base.grad is None for e in h.entries)
    assert any(p is h.parameters()[0] for g in popt.param_groups for p in g["params"])


def test_sd3_transformer_save_load_and_algebra(tmp_path):
    from diffusers import SD3Transformer2DModel

    def build():
        torch.manual_seed(0)
        return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                     num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                     pooled_projection_dim=8, out_channels=4, pos_embed_max_size=16)  # fmt: skip

    g = torch.Generator().manual_seed(0)
    x, enc, pooled = (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.randn(2, 5, 16, generator=g),
        torch.randn(2, 8, generator=g),
    )
    t = torch.tensor([10.0, 500.0])
    model = build()
    p0 = {k: v.clone() for k, v in model.state_dict().items()}
    h = sara.wrap(model, sara.SaraConfig(fraction=0.05, rank_min_dim=8))
    opt = torch.optim.AdamW(h.parameters(), lr=1e-2)
    for step in range(1, 3):
        out = model(x, encoder_hidden_states=enc, pooled_projections=pooled, timestep=t).sample
        (out.pow(2).mean() + h.rank_loss()).backward()
        opt.step()
        opt.zero_grad()
        h.on_step(opt, step, 2)
    with torch.no_grad():
        y = model(x, encoder_hidden_states=enc, pooled_projections=pooled, timestep=t).sample
    h.save_pretrained(tmp_path / "sd3")
    fresh = build()
    sara.load(fresh, tmp_path / "sd3")
    with torch.no_grad():
        assert torch.equal(
            fresh(x, encoder_hidden_states=enc, pooled_projections=pooled, timestep=t).sample, y
        )
    h.unmerge()
    assert all(torch.equal(e.base, p0[e.name]) for e in h.entries)


def test_train_config_presets_and_json_round_trip():
    from fourfold.sara.train import SaraTrainConfig

    paper = SaraTrainConfig.paper("sd15")
    assert (paper.resolution, paper.steps, paper.batch_size, paper.threshold, paper.progressive_at) == (
        512,
        5000,
        4,
        2e-3,
        0.5,
    )
    assert paper.adapter_config().learning_rate() == sara.learning_rate_for_threshold(2e-3)
    tiny = SaraTrainConfig.tiny()
    assert (tiny.fraction, tiny.threshold, tiny.rank_min_dim, tiny.steps, tiny.batch_size) == (
        0.05,
        None,
        16,
        1000,
        16,
    )
    assert SaraTrainConfig.from_json(tiny.to_json()) == tiny
    import pytest

    with pytest.raises(ValueError, match="method"):
        SaraTrainConfig(method="dora")
