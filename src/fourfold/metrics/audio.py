"""Audio-generation metrics: FD/FAD, KL, IS, loudness-curve agreement, onset accuracy and AP.

Embedders are the user's (a local PANNs/VGGish or any ``wav -> features`` callable; tests use tiny
random ones). Sources: audioldm_eval (https://github.com/haoheliu/audioldm_eval) for preprocessing, FD,
KL and IS; Fréchet Audio Distance (Kilgour et al. 2019, arXiv 1812.08466); CondFoleyGen
(https://github.com/XYPB/CondFoleyGen, ``predict_onset.py``) for onsets; loudness metrics are ours
(Draw an Audio spec §6). The Fréchet distance itself is :func:`fourfold.metrics.frechet.frechet_distance`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fourfold.metrics.frechet import frechet_distance_from_features

__all__ = [
    "EVAL_MIN_SAMPLES",
    "EVAL_SR",
    "audio_fd",
    "distribution_metrics",
    "embed_clips",
    "fad_from_frames",
    "inception_score",
    "kl_divergence",
    "loudness_metrics",
    "onset_metrics",
    "pair_audio_files",
    "prepare_eval_audio",
]

EVAL_SR = 16000  # audioldm_eval EvaluationHelper(16000)
EVAL_MIN_SAMPLES = 32000  # audioldm_eval pads every clip to at least 2 s
KL_EPS = 1e-6  # audioldm_eval's EPS inside the log
FLAT_DB_STD = 0.1  # a reference whose frame loudness varies less than this (dB std) has no curve to follow


# preprocessing and embedding


def prepare_eval_audio(wav, sr: int) -> np.ndarray:
    """audioldm_eval's loading: first channel, minus its mean, resampled to 16 kHz, zero-padded to ≥ 32000.

    ``wav``: ``(samples,)`` or ``(channels, samples)`` -> ``(samples',)`` float32.
    """
    from fourfold.audio.io import resample

    x = np.asarray(wav.detach().cpu() if isinstance(wav, torch.Tensor) else wav, dtype=np.float32)
    x = x[0] if x.ndim == 2 else x
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty waveform (samples,) or (channels, samples), got {x.shape}")
    x = x - x.mean()
    x = resample(x, sr, EVAL_SR)
    return np.pad(x, (0, max(0, EVAL_MIN_SAMPLES - x.size)))


def pair_audio_files(
    gen_dir: str | os.PathLike, ref_dir: str | os.PathLike, suffixes=(".wav", ".flac")
) -> list[tuple[Path, Path]]:
    """Pair generated and reference files by basename (audioldm_eval's paired mode).

    Raises ``ValueError`` listing the unpaired names instead of silently evaluating a subset.
    """

    def index(d):
        d = Path(d)
        if not d.is_dir():
            raise ValueError(f"audio folder not found: {d}")
        return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in suffixes}

    gen, ref = index(gen_dir), index(ref_dir)
    missing_ref, missing_gen = sorted(set(gen) - set(ref)), sorted(set(ref) - set(gen))
    if missing_ref or missing_gen or not gen:
        raise ValueError(
            f"cannot pair {gen_dir} with {ref_dir}: {len(gen)} vs {len(ref)} files; "
            f"no reference for {missing_ref[:10]}, no generated file for {missing_gen[:10]}"
        )
    return [(gen[k], ref[k]) for k in sorted(gen)]


@torch.no_grad()
def embed_clips(
    embedder: Callable[[torch.Tensor], torch.Tensor | dict],
    clips: Iterable[np.ndarray],
    key: str | None = None,
    batch_size: int = 1,
) -> list[np.ndarray]:
    """Run a local embedder over clips, one output per clip.

    ``embedder((batch, samples)) -> (batch, dim)`` or ``(batch, frames, dim)`` or a dict of such (pick
    ``key``, e.g. PANNs' ``"2048"`` or ``"logits"``). Clips of unequal length are embedded one at a time.
    Returns a list of float64 arrays ``(dim,)`` or ``(frames, dim)``.
    """
    clips = [np.asarray(c, dtype=np.float32) for c in clips]
    out: list[np.ndarray] = []
    i = 0
    while i < len(clips):
        group = [clips[i]]
        while (
            len(group) < batch_size
            and i + len(group) < len(clips)
            and clips[i + len(group)].shape == clips[i].shape
        ):
            group.append(clips[i + len(group)])
        result = embedder(torch.from_numpy(np.stack(group)))
        if isinstance(result, dict):
            if key is None or key not in result:
                raise KeyError(f"embedder returned keys {sorted(result)}; pass key= one of them")
            result = result[key]
        out.extend(np.asarray(r, dtype=np.float64) for r in torch.as_tensor(result).detach().cpu())
        i += len(group)
    return out


# distribution metrics


def audio_fd(gen_features, ref_features) -> float:
    """FD between per-clip embeddings ``(clips, dim)`` (audioldm_eval "FD" on PANNs ``"2048"``).

    FD = ‖μ_g − μ_r‖² + Tr Σ_g + Tr Σ_r − 2 Tr (Σ_g Σ_r)^½, Σ = ``np.cov(rowvar=False)``; sqrtm fallback
    and imaginary-part check as :func:`fourfold.metrics.frechet.frechet_distance`.
    """
    return frechet_distance_from_features(np.asarray(gen_features), np.asarray(ref_features))


def fad_from_frames(gen_frames: Sequence[np.ndarray], ref_frames: Sequence[np.ndarray]) -> float:
    """FAD (Kilgour et al. 2019): the same Fréchet distance on frame embeddings pooled over all clips.

    Each element is one clip's ``(frames, dim)`` embeddings (VGGish: 0.96 s frames, 128-d, no PCA).
    """
    g = np.concatenate([np.atleast_2d(f) for f in gen_frames], axis=0)
    r = np.concatenate([np.atleast_2d(f) for f in ref_frames], axis=0)
    return frechet_distance_from_features(g, r)


def kl_divergence(gen_logits, ref_logits) -> dict[str, float]:
    """Paired KL of classifier outputs (audioldm_eval ``calculate_kl``), KL(ref ‖ gen) summed over classes
    and averaged over the N pairs::

        kl_softmax = Σ_i Σ_c p_r(c|i) · (log p_r(c|i) − log(p_g(c|i) + 1e-6)) / N,  p = softmax(logits)
        kl_sigmoid = the same with element-wise sigmoid probabilities (multi-label variant)

    ``gen_logits``, ``ref_logits``: ``(N, classes)``, row i of each from the same clip name.
    "KL" in reports is ``kl_softmax``.
    """
    g = torch.as_tensor(np.asarray(gen_logits), dtype=torch.float64)
    r = torch.as_tensor(np.asarray(ref_logits), dtype=torch.float64)
    if g.shape != r.shape or g.ndim != 2:
        raise ValueError(
            f"kl_divergence needs paired (N, classes) logits, got {tuple(g.shape)} and {tuple(r.shape)}"
        )
    n = g.shape[0]
    soft = F.kl_div((g.softmax(dim=1) + KL_EPS).log(), r.softmax(dim=1), reduction="sum") / n
    sig = F.kl_div((g.sigmoid() + KL_EPS).log(), r.sigmoid(), reduction="sum") / n
    return {"kl_softmax": float(soft), "kl_sigmoid": float(sig)}


def inception_score(logits, splits: int = 10, seed: int = 2020, shuffle: bool = True) -> tuple[float, float]:
    """Inception score (Salimans et al. 2016) as audioldm_eval ``calculate_isc`` computes it.

    float64 softmax of ``logits`` ``(N, classes)``; rows permuted by ``RandomState(seed)``; for each of
    ``splits`` chunks ``[i·N//splits, (i+1)·N//splits)``: ``exp(mean_x Σ_c p(c|x)(log p(c|x) − log p̄(c)))``
    with p̄ the chunk mean. Returns (mean, std) over chunks (``np.std``, population).
    """
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < splits:
        raise ValueError(f"inception_score needs (N ≥ splits={splits}, classes) logits, got {tuple(x.shape)}")
    n = x.shape[0]
    if shuffle:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p, log_p = x.softmax(dim=1), x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(dim=0, keepdim=True)
        scores.append(float((p[lo:hi] * (log_p[lo:hi] - q.log())).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def distribution_metrics(
    gen_wavs: Sequence,
    ref_wavs: Sequence,
    sr: int,
    which: Iterable[str] = ("fd", "fad", "kl", "is"),
    panns: Callable | None = None,
    vggish: Callable | None = None,
) -> dict[str, float]:
    """FD, KL, IS (PANNs CNN14) and FAD (VGGish) of paired clips, audioldm_eval style.

    Every clip goes through :func:`prepare_eval_audio` (16 kHz, mean removed, ≥ 2 s). ``panns(wav)``
    must return ``{"2048": (B, D), "logits": (B, classes)}`` (e.g. :class:`fourfold.audio.embedders.PANNsCnn14`);
    ``vggish(wav)`` ``(B, examples, D)``. Keys: ``fd`` (per-clip "2048"), ``kl_softmax`` / ``kl_sigmoid``
    (paired, "KL" = softmax), ``is_mean`` / ``is_std`` (generated logits, 10 splits: ≥ 10 clips), ``fad``
    (VGGish examples pooled over all clips).
    """
    which = set(which)
    unknown = which - {"fd", "fad", "kl", "is"}
    if unknown:
        raise ValueError(f"unknown distribution metrics {sorted(unknown)}; choose from fd, fad, kl, is")
    if len(gen_wavs) != len(ref_wavs) or len(gen_wavs) < 2:
        raise ValueError(
            f"need ≥ 2 paired clips, got {len(gen_wavs)} generated and {len(ref_wavs)} reference"
        )
    if which & {"fd", "kl", "is"} and panns is None:
        raise ValueError("FD, KL and IS need a PANNs CNN14 embedder")
    if "fad" in which and vggish is None:
        raise ValueError("FAD needs a VGGish embedder")
    gen = [prepare_eval_audio(w, sr) for w in gen_wavs]
    ref = [prepare_eval_audio(w, sr) for w in ref_wavs]
    out: dict[str, float] = {}
    if which & {"fd", "kl", "is"}:
        g_emb, r_emb = embed_clips(panns, gen, key="2048"), embed_clips(panns, ref, key="2048")
        g_log = np.stack(embed_clips(panns, gen, key="logits"))
        if "fd" in which:
            out["fd"] = audio_fd(np.stack(g_emb), np.stack(r_emb))
        if "kl" in which:
            out.update(kl_divergence(g_log, np.stack(embed_clips(panns, ref, key="logits"))))
        if "is" in which:
            out["is_mean"], out["is_std"] = inception_score(g_log)
    if "fad" in which:
        out["fad"] = fad_from_frames(embed_clips(vggish, gen), embed_clips(vggish, ref))
    return out


# loudness


def loudness_metrics(gen_wavs: Sequence, ref_wavs: Sequence, sr: int, cfg=None) -> dict[str, float]:
    """Loudness agreement of paired clips (ours, Draw an Audio spec §6), on L of spec §2.4 steps 1-3
    (frame RMS in dB, unsmoothed):

    - ``loudness_r``: Pearson r(L_gen, L_ref) per clip, averaged; clips whose reference L is flat
      (std < 0.1 dB: a steady tone's frame RMS wobbles ~0.01 dB) are skipped and counted in
      ``loudness_r_skipped``;
    - ``loudness_db_mae``: mean |(L_gen − mean L_gen) − (L_ref − mean L_ref)| in dB (level-free);
    - ``loudness_energy_mae``: mean |ℓ_gen − ℓ_ref| with ℓ = clip((L + 80)/80, 0, 1).

    Clips are resampled to ``cfg.sample_rate`` (default ``MelConfig.auffusion()``) and cut to the
    shorter of each pair.
    """
    from fourfold.audio.io import resample
    from fourfold.audio.loudness import loudness_db, normalize_db
    from fourfold.audio.mel import MelConfig

    cfg = cfg or MelConfig.auffusion()
    if len(gen_wavs) != len(ref_wavs) or not gen_wavs:
        raise ValueError(f"loudness_metrics needs paired clips, got {len(gen_wavs)} and {len(ref_wavs)}")
    rs, maes, energies, skipped = [], [], [], 0
    for g, r in zip(gen_wavs, ref_wavs, strict=True):
        g = resample(np.asarray(g, np.float32), sr, cfg.sample_rate)
        r = resample(np.asarray(r, np.float32), sr, cfg.sample_rate)
        n = min(g.size, r.size)
        lg = loudness_db(torch.from_numpy(g[:n]), cfg).double().numpy()
        lr = loudness_db(torch.from_numpy(r[:n]), cfg).double().numpy()
        maes.append(np.abs((lg - lg.mean()) - (lr - lr.mean())).mean())
        energies.append(np.abs(normalize_db(lg) - normalize_db(lr)).mean())
        if lr.std() < FLAT_DB_STD or lg.std() < 1e-12:
            skipped += 1
        else:
            rs.append(np.corrcoef(lg, lr)[0, 1])
    return {
        "loudness_r": float(np.mean(rs)) if rs else float("nan"),
        "loudness_r_skipped": float(skipped),
        "loudness_db_mae": float(np.mean(maes)),
        "loudness_energy_mae": float(np.mean(energies)),
    }


# onsets


def onset_metrics(
    gen_wavs: Sequence,
    sr: int,
    *,
    ref_wavs: Sequence | None = None,
    ref_onsets: Sequence | None = None,
    delta: float = 0.3,
) -> dict[str, float]:
    """CondFoleyGen onset accuracy and AP over paired clips (Draw an Audio spec §6).

    1. Onsets of each generated clip (and of each reference clip when ``ref_wavs`` is given: the
       paper's "detected" convention) by :func:`fourfold.audio.onset.detect_onsets` at 22.05 kHz,
       ``delta=0.3``; or ``ref_onsets`` in seconds (procedural ground truth, "true").
    2. :func:`fourfold.audio.onset.match_onsets`: confidence, NMS 0.05 s, matching within 0.1 s.
    3. Per clip: count acc = [#ref == #gen] (raw detections), hit acc = hits/#ref,
       AP = ``sklearn.metrics.average_precision_score(labels, scores)``; averaged over clips. Hit acc and
       AP are undefined for a clip with no reference onset: such clips are excluded from both and
       counted in ``onset_ap_excluded`` (count acc still includes them).
    """
    from sklearn.metrics import average_precision_score

    from fourfold.audio.onset import ONSET_SR, detect_onsets, match_onsets

    if (ref_wavs is None) == (ref_onsets is None):
        raise ValueError(
            "give exactly one of ref_wavs (detected reference onsets) or ref_onsets (true onsets)"
        )
    refs = ref_onsets if ref_onsets is not None else ref_wavs
    if len(refs) != len(gen_wavs) or not gen_wavs:
        raise ValueError(
            f"onset_metrics needs paired clips, got {len(gen_wavs)} generated and {len(refs)} references"
        )
    from fourfold.audio.io import resample

    count_acc, hit_acc, aps, excluded = [], [], [], 0
    for i, g in enumerate(gen_wavs):
        g22 = resample(np.asarray(g, np.float32), sr, ONSET_SR)
        gen_on = detect_onsets(g22, ONSET_SR, delta=delta)
        if ref_onsets is not None:
            ref_on = np.asarray(ref_onsets[i], dtype=np.float64)
        else:
            ref_on = detect_onsets(np.asarray(ref_wavs[i], np.float32), sr, delta=delta)
        m = match_onsets(gen_on, ref_on, g22, ONSET_SR)
        count_acc.append(float(m.num_ref == m.num_gen))
        if m.num_ref == 0:
            excluded += 1
        else:
            hit_acc.append(m.hits / m.num_ref)
            aps.append(float(average_precision_score(m.labels, m.scores)))
    return {
        "onset_count_acc": float(np.mean(count_acc)),
        "onset_hit_acc": float(np.mean(hit_acc)) if hit_acc else float("nan"),
        "onset_ap": float(np.mean(aps)) if aps else float("nan"),
        "onset_ap_excluded": float(excluded),
    }
