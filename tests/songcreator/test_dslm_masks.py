"""Mask probes (spec §8.1): each BCA strategy and SA mode lets exactly the paper's information flow."""

import pytest
import torch

from fourfold.songcreator.tasks import BCA_STRATEGIES, bca_masks, get_task

S = 12  # positions: 0 = BOS, input at i + 1 is frame i


def _run(model, vocal, accomp, *, bca, v_causal=True, a_causal=True):
    lyr, lyr_mask = model.encode_lyrics(torch.tensor([[1, 9, 10, 11, 2]]))
    hv, ha = model.decode_streams(
        vocal[None],
        accomp[None],
        lyr,
        lyr_mask,
        vocal_causal=torch.tensor([v_causal]),
        accomp_causal=torch.tensor([a_causal]),
        bca=torch.tensor([BCA_STRATEGIES.index(bca)]),
    )
    assert torch.isfinite(hv).all() and torch.isfinite(ha).all()
    frame_pos = torch.arange(1, S)[None]
    song = model.song_logits(hv, ha, frame_pos)
    return model.stream_logits(hv, "vocal")[0], model.stream_logits(ha, "accomp")[0], song[0]


def _streams(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    v = torch.randint(0, cfg.codebook_size, (S,), generator=g)
    a = torch.randint(0, cfg.codebook_size, (S,), generator=g)
    v[0] = a[0] = cfg.bos_id
    return v, a


def _perturb(x, positions, model):
    y = x.clone()
    for p in positions:
        y[p] = (y[p] + 7) % model.config.codebook_size
    return y


def _same(a, b):
    return torch.allclose(a, b, atol=1e-5)


Q = 5  # probed query position (predicts frame 5; sees inputs 0..5 = BOS + frames 0..4)


def test_causal_self_attention_ignores_later_inputs(tiny_dslm):
    v, a = _streams(tiny_dslm)
    base = _run(tiny_dslm, v, a, bca="BR")
    later = _run(tiny_dslm, _perturb(v, range(Q + 1, S), tiny_dslm), a, bca="BR")
    assert _same(base[0][: Q + 1], later[0][: Q + 1])
    assert not _same(base[0][Q + 1 :], later[0][Q + 1 :])


def test_full_self_attention_sees_later_inputs(tiny_dslm):
    v, a = _streams(tiny_dslm)
    base = _run(tiny_dslm, v, a, bca="A2V", a_causal=False)
    later = _run(tiny_dslm, v, _perturb(a, [S - 1], tiny_dslm), bca="A2V", a_causal=False)
    assert not _same(base[1][0], later[1][0])


@pytest.mark.parametrize("side", ["vocal", "accomp"])
def test_br_sees_only_the_other_streams_past(tiny_dslm, side):
    v, a = _streams(tiny_dslm)
    base = _run(tiny_dslm, v, a, bca="BR")
    own, other = (0, (v, a)) if side == "vocal" else (1, (v, a))

    def perturbed(positions):
        if side == "vocal":  # perturb the accompaniment, watch the vocals
            return _run(tiny_dslm, v, _perturb(a, positions, tiny_dslm), bca="BR")
        return _run(tiny_dslm, _perturb(v, positions, tiny_dslm), a, bca="BR")

    future = perturbed(range(Q + 1, S))  # other stream's frames >= Q
    assert _same(base[own][Q], future[own][Q])
    past = perturbed([Q])  # other stream's frame Q - 1 (input position Q)
    assert not _same(base[own][Q], past[own][Q])
    assert other is not None


def test_none_streams_are_independent(tiny_dslm):
    v, a = _streams(tiny_dslm)
    base = _run(tiny_dslm, v, a, bca="None")
    changed_a = _run(tiny_dslm, v, _perturb(a, range(S), tiny_dslm), bca="None")
    changed_v = _run(tiny_dslm, _perturb(v, range(S), tiny_dslm), a, bca="None")
    assert torch.equal(base[0], changed_a[0])  # vocals bit-identical whatever the accompaniment
    assert torch.equal(base[1], changed_v[1])
    # but BR couples them
    br, br_changed = (
        _run(tiny_dslm, v, a, bca="BR"),
        _run(tiny_dslm, v, _perturb(a, range(S), tiny_dslm), bca="BR"),
    )
    assert not _same(br[0], br_changed[0])


@pytest.mark.parametrize("strategy", ["A2V", "V2A"])
def test_one_way_strategies(tiny_dslm, strategy):
    v, a = _streams(tiny_dslm)
    listener, source = (0, 1) if strategy == "A2V" else (1, 0)
    kw = {"a_causal": False} if strategy == "A2V" else {"v_causal": False}
    base = _run(tiny_dslm, v, a, bca=strategy, **kw)

    def change(stream_idx, positions):
        if stream_idx == 0:
            return _run(tiny_dslm, _perturb(v, positions, tiny_dslm), a, bca=strategy, **kw)
        return _run(tiny_dslm, v, _perturb(a, positions, tiny_dslm), bca=strategy, **kw)

    # the listener depends on every position of the given stream, future included
    for p in (1, Q + 1, S - 1):
        assert not _same(base[listener][0], change(source, [p])[listener][0])
    # the given stream ignores the listener completely
    assert torch.equal(base[source], change(listener, range(S))[source])


def test_song_decoder_depends_on_both_streams(tiny_dslm):
    v, a = _streams(tiny_dslm)
    base = _run(tiny_dslm, v, a, bca="None")
    assert not _same(base[2], _run(tiny_dslm, _perturb(v, [3], tiny_dslm), a, bca="None")[2])
    assert not _same(base[2], _run(tiny_dslm, v, _perturb(a, [3], tiny_dslm), bca="None")[2])


def test_pad_prefix_gives_no_nan_and_hides_pad(tiny_dslm):
    cfg = tiny_dslm.config
    v, a = _streams(tiny_dslm)
    v[:3] = cfg.pad_id  # left-padded prompt region
    v[3] = cfg.bos_id
    a[:3] = cfg.pad_id
    a[3] = cfg.bos_id
    out = _run(tiny_dslm, v, a, bca="BR")
    assert all(torch.isfinite(o).all() for o in out)


def test_bca_mask_table():
    valid = torch.ones(4, 3, dtype=torch.bool)
    m_v, m_a = bca_masks(torch.arange(4), valid, valid)
    tri = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    assert torch.equal(m_v[0, 0], tri) and torch.equal(m_a[0, 0], tri)  # BR
    assert m_v[1].all() and not m_a[1].any()  # A2V
    assert not m_v[2].any() and m_a[2].all()  # V2A
    assert not m_v[3].any() and not m_a[3].any()  # None


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown SongCreator task"):
        get_task("karaoke")
    assert get_task("lyrics-to-song").bca == "BR"
