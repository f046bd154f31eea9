"""Evaluation on held-out bouncing clips: TLM (loudness following), video (onsets) and MAM (which object).

Each effect is measured against its ablation and next to its oracle ceiling:

- **TLM**: Pearson r of frame loudness (``fourfold.metrics.loudness_metrics``) between the generated audio
  and the reference mix, given the reference's curve vs no curve. Oracle: the reference through the mel
  front end and Griffin-Lim.
- **Video**: CondFoleyGen onset hit accuracy / AP against the true impact times
  (``fourfold.metrics.onset_metrics``), with video vs text only (zero video tokens). Oracle: onsets
  detected on the reference mix.
- **CS-AV** (spec §6, when an audio-visual embedder is given): audio-visual cosine of the video-conditioned
  output vs the text-only one, next to the reference's own audio and another clip's (mismatched) audio.
- **MAM**: neutral caption, mask on object A then on B; a logistic band-energy timbre classifier (fit
  on reference stems) names the object heard. Reports the fraction naming the masked object and the
  fraction whose swap flips the answer; plus hit accuracy on A's onsets vs B's with A masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fourfold.audio.mel import MelConfig, griffin_lim, mel_spectrogram
from fourfold.data.bouncing import BouncingClip
from fourfold.drawaudio.data import NEUTRAL_CAPTION
from fourfold.drawaudio.model import prepare_video
from fourfold.drawaudio.pipeline import DrawAudioPipeline
from fourfold.drawaudio.tlm import curve_from_audio
from fourfold.metrics.audio import loudness_metrics, onset_metrics

__all__ = ["TimbreClassifier", "evaluate_clips"]


def _band_features(wavs: np.ndarray, mel: MelConfig) -> np.ndarray:
    """(B, samples) -> (B, n_mels): mean log-mel over the active frames (within 30 dB of the loudest),
    relative to its own maximum, so level does not matter, only the spectral shape."""
    m = mel_spectrogram(torch.as_tensor(wavs, dtype=torch.float32), mel).numpy()  # (B, n_mels, T)
    energy = m.max(axis=1)  # (B, T)
    feats = []
    for x, e in zip(m, energy, strict=True):
        active = e >= e.max() - np.log(10**1.5)
        f = x[:, active].mean(axis=1)
        feats.append(f - f.max())
    return np.stack(feats)


@dataclass
class TimbreClassifier:
    """Logistic regression from band-energy shape to object kind."""

    mel: MelConfig
    model: object = None
    kinds: tuple[str, ...] = ()

    def fit(self, clips: list[BouncingClip]) -> float:
        """Fit on the clips' stems; returns training accuracy."""
        from sklearn.linear_model import LogisticRegression

        wavs = np.concatenate([c.stems for c in clips])
        labels = [k for c in clips for k in c.kinds]
        x = _band_features(wavs, self.mel)
        self.model = LogisticRegression(max_iter=2000, C=1.0).fit(x, labels)
        self.kinds = tuple(self.model.classes_)
        return float(self.model.score(x, labels))

    def predict(self, wavs: np.ndarray) -> list[str]:
        return list(self.model.predict(_band_features(wavs, self.mel)))


def _prepare(clips: list[BouncingClip], cfg, masks_for: int | None = None):
    xs, ms = [], []
    for c in clips:
        mask = None if masks_for is None else c.masks[masks_for].astype(np.float32)
        x, m, times = prepare_video(c.video, c.fps, cfg, mask)
        xs.append(x)
        ms.append(m)
    return torch.stack(xs), (None if masks_for is None else torch.stack(ms)), times


def evaluate_clips(
    pipe: DrawAudioPipeline,
    clips: list[BouncingClip],
    classifier: TimbreClassifier | None = None,
    steps: int | None = None,
    seed: int = 0,
    batch: int = 8,
    keep_audio: int = 0,
    av_embedder=None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """All three comparisons on ``clips`` (plus CS-AV with ``av_embedder``, a
    :class:`fourfold.metrics.csav.AVEmbedder`); returns (metrics, first ``keep_audio`` generated clips per
    condition)."""
    cfg = pipe.cfg
    sr = cfg.mel.sample_rate
    gen: dict[str, list[np.ndarray]] = {k: [] for k in ("tlm", "no_tlm", "text_only", "mask_a", "mask_b")}
    for i in range(0, len(clips), batch):
        part = clips[i : i + batch]
        x, _, times = _prepare(part, cfg)
        caps = [c.caption for c in part]
        curves = np.stack([curve_from_audio(c.audio, cfg, sr).values for c in part])

        def run(frames, masks, prompts, start=seed + i, times=times, **kw):
            # every condition starts from the same noise, so the ablations differ only in the condition
            g = torch.Generator().manual_seed(start)
            return pipe.generate_tensors(frames, masks, times, prompts, steps=steps, generator=g, **kw)[0]

        gen["tlm"].append(run(x, None, caps, loudness=curves))
        gen["no_tlm"].append(run(x, None, caps))
        gen["text_only"].append(run(x, None, caps, use_video=False))
        for key, obj in (("mask_a", 0), ("mask_b", 1)):
            xa, ma, _ = _prepare(part, cfg, masks_for=obj)
            gen[key].append(run(xa, ma, [NEUTRAL_CAPTION] * len(part)))
    out = {k: np.concatenate(v) for k, v in gen.items()}
    refs = [c.audio for c in clips]
    true_onsets = [c.all_onsets for c in clips]
    metrics: dict[str, float] = {}
    metrics["loudness_r_tlm"] = loudness_metrics(list(out["tlm"]), refs, sr, cfg.mel)["loudness_r"]
    metrics["loudness_r_no_tlm"] = loudness_metrics(list(out["no_tlm"]), refs, sr, cfg.mel)["loudness_r"]
    ref_mel = mel_spectrogram(torch.from_numpy(np.stack(refs)), cfg.mel)
    oracle = griffin_lim(ref_mel, cfg.mel, length=cfg.num_samples).numpy()
    metrics["loudness_r_oracle_griffin_lim"] = loudness_metrics(list(oracle), refs, sr, cfg.mel)["loudness_r"]
    for key, name in (("no_tlm", "video"), ("text_only", "text_only")):
        m = onset_metrics(list(out[key]), sr, ref_onsets=true_onsets)
        metrics[f"onset_hit_acc_{name}"], metrics[f"onset_ap_{name}"] = m["onset_hit_acc"], m["onset_ap"]
    m = onset_metrics(refs, sr, ref_onsets=true_onsets)
    metrics["onset_hit_acc_oracle_reference"] = m["onset_hit_acc"]
    if classifier is not None:
        pa, pb = classifier.predict(out["mask_a"]), classifier.predict(out["mask_b"])
        ka, kb = [c.kinds[0] for c in clips], [c.kinds[1] for c in clips]
        hit_a = np.array([p == k for p, k in zip(pa, ka, strict=True)])
        hit_b = np.array([p == k for p, k in zip(pb, kb, strict=True)])
        metrics["mam_names_masked_a"] = float(hit_a.mean())
        metrics["mam_names_masked_b"] = float(hit_b.mean())
        metrics["mam_swap_flips"] = float((hit_a & hit_b).mean())
        metrics["mam_oracle_classifier_on_stems"] = float(
            np.mean(
                [p == k for c in clips for p, k in zip(classifier.predict(c.stems), c.kinds, strict=True)]
            )
        )
    on_a = onset_metrics(list(out["mask_a"]), sr, ref_onsets=[c.onsets[0] for c in clips])
    on_b = onset_metrics(list(out["mask_a"]), sr, ref_onsets=[c.onsets[1] for c in clips])
    metrics["mask_a_hit_acc_on_a"], metrics["mask_a_hit_acc_on_b"] = (
        on_a["onset_hit_acc"],
        on_b["onset_hit_acc"],
    )
    if av_embedder is not None:
        from fourfold.metrics.csav import csav

        videos = [c.video for c in clips]
        for key, name in (("no_tlm", "video"), ("text_only", "text_only")):
            metrics[f"csav_{name}"] = csav(av_embedder, list(out[key]), sr, videos)["csav"]
        metrics["csav_reference"] = csav(av_embedder, refs, sr, videos)["csav"]
        metrics["csav_reference_mismatched"] = csav(av_embedder, refs[1:] + refs[:1], sr, videos)["csav"]
    kept = {k: v[:keep_audio] for k, v in out.items()}
    return metrics, kept
