import math

import numpy as np
import pytest
import torch

from fourfold.nn.modeling import CheckpointError
from fourfold.songcreator.bestrq import (
    BestRQ,
    BestRQConfig,
    SemanticTokenizer,
    SemanticVQ,
    SemanticVQConfig,
    bestrq_loss,
    span_mask,
)

SR = 16000


def _tones(n, seconds=2.0, seed=0):
    """Clips of harmonic notes (0.2-0.5 s each): structure a masked span can be predicted from."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        wav, t = [], 0
        while t < seconds * SR:
            dur = int(rng.uniform(0.2, 0.5) * SR)
            f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
            tt = np.arange(dur) / SR
            note = sum(np.sin(2 * math.pi * f0 * k * tt) / k for k in range(1, 5)) * np.hanning(dur)
            wav.append(note)
            t += dur
        out.append(np.concatenate(wav)[: int(seconds * SR)])
    return torch.tensor(np.stack(out), dtype=torch.float32) * 0.3


def test_span_mask_statistics():
    m = span_mask(400, 500, prob=0.01, span=20, generator=torch.Generator().manual_seed(0))
    expected = 1 - (1 - 0.01) ** 20  # a frame is masked unless none of the 20 frames before it starts a span
    assert abs(m.float().mean().item() - expected) < 0.02
    # runs are at least a span long (unless cut by the clip end)
    row = m[0].int().tolist()
    runs, cur = [], 0
    for v in [*row, 0]:
        if v:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    assert all(r >= 20 for r in runs[:-1] if r)
    assert span_mask(3, 50, prob=1e-9, span=5).any(dim=1).all()  # every row gets a span


def test_rpq_is_frozen_seeded_and_saved(tmp_path):
    cfg = BestRQConfig.tiny()
    a, b = BestRQ(cfg), BestRQ(cfg)
    assert torch.equal(a.rpq_codebook, b.rpq_codebook) and torch.equal(a.rpq_projection, b.rpq_projection)
    other = BestRQ(BestRQConfig.tiny().__class__(**{**cfg.__dict__, "rpq_seed": 1}))
    assert not torch.equal(a.rpq_codebook, other.rpq_codebook)
    names = {n for n, _ in a.named_parameters()}
    assert not any("rpq" in n for n in names)  # never trained
    feats = a.features(_tones(2))
    labels = a.rpq_labels(feats)
    assert labels.shape == (2, 50) and labels.max() < cfg.codebook_size
    a.fit_normalizer(a.log_mel(_tones(2)))
    a.save_pretrained(tmp_path / "rq")
    back = BestRQ.from_pretrained(tmp_path / "rq")
    f = a.features(_tones(1, seed=3))
    assert torch.equal(a.rpq_labels(f), back.rpq_labels(back.features(_tones(1, seed=3))))
    assert torch.equal(back.feature_mean, a.feature_mean)


def test_labels_use_nearest_normalised_code():
    model = BestRQ(BestRQConfig.tiny())
    feats = torch.randn(1, 7, 64)
    z = torch.nn.functional.normalize(feats @ model.rpq_projection, dim=-1)
    cb = torch.nn.functional.normalize(model.rpq_codebook, dim=-1)
    brute = torch.cdist(z[0], cb).argmin(-1)
    assert torch.equal(model.rpq_labels(feats)[0], brute)


def test_masked_input_is_noise_not_labels():
    model = BestRQ(BestRQConfig.tiny()).eval()
    feats = torch.randn(1, 20, 64)
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, 5:10] = True
    changed = feats.clone()
    changed[0, 5:10] += 10.0  # what is under the mask must not reach the encoder
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(
        model.encode(feats, mask=mask, generator=g()), model.encode(changed, mask=mask, generator=g())
    )
    unmasked = torch.zeros_like(mask)
    assert not torch.allclose(model.encode(feats, mask=unmasked), model.encode(changed, mask=unmasked))


def test_masked_ce_drops_by_a_quarter():
    torch.manual_seed(0)
    model = BestRQ(BestRQConfig.tiny())
    wav = _tones(16)
    model.fit_normalizer(model.log_mel(wav))
    feats = model.features(wav)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(200):
        idx = torch.arange(4) + 4 * (step % 4)
        loss = bestrq_loss(model, feats[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.75 * first, (first, last)


def test_vq_kmeans_ema_and_round_trip(tmp_path):
    torch.manual_seed(0)
    vq = SemanticVQ(SemanticVQConfig.tiny(input_dim=96))
    h = torch.randn(4, 50, 96)
    assert not bool(vq.initialized)
    vq.train()
    opt = torch.optim.Adam(vq.parameters(), 1e-2)
    losses = []
    for _ in range(60):
        _, codes, loss = vq(h)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert bool(vq.initialized) and losses[-1] < losses[0]
    assert codes.shape == (4, 50) and len(codes.unique()) > 20  # no collapse onto a few codes
    vq.save_pretrained(tmp_path / "vq")
    back = SemanticVQ.from_pretrained(tmp_path / "vq")
    assert torch.equal(back.tokens(h), vq.eval().tokens(h))


def test_tokenizer_encode_and_load(tmp_path):
    enc = BestRQ(BestRQConfig.tiny())
    tok = SemanticTokenizer(enc, SemanticVQ(SemanticVQConfig.tiny(input_dim=96)))
    wav = _tones(1)[0]
    codes = tok.encode(wav, SR)
    assert codes.shape == (1, 50) and codes.dtype == torch.long
    assert tok.encode(
        torch.from_numpy(np.interp(np.arange(0, 32000, 2 / 3), np.arange(32000), wav.numpy())).float(), 24000
    ).shape == (1, 50)
    tok.save_pretrained(tmp_path / "tok")
    back = SemanticTokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(back.encode(wav, SR), codes)
    (tmp_path / "tok" / "vq" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError):
        SemanticTokenizer.from_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="input_dim"):
        SemanticTokenizer(enc, SemanticVQ(SemanticVQConfig.tiny(input_dim=32)))


def test_config_validation():
    with pytest.raises(ValueError, match="token_layer"):
        BestRQConfig(layers=2, token_layer=3)
    with torch.device("meta"):
        n = sum(p.numel() for p in BestRQ(BestRQConfig.paper()).parameters())
    assert 0.55e9 < n < 0.62e9  # ≈0.6B (App A.2)
