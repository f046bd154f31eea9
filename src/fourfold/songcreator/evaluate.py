"""Harmony/rhythm agreement of generated oracle tokens (spec §6 proxies, §8.5 BCA ablation).

Works on :class:`~fourfold.songcreator.oracle.ProceduralLabelTokenizer` codes: the vocal key comes from the
sung pitch classes, the accompaniment key from its chord tones, both by Krumhansl–Kessler; onsets are the
vocal syllable starts, the grid the eighth notes between the accompaniment's kick/snare hits.
"""

from __future__ import annotations

import numpy as np
import torch

from fourfold.metrics.music import estimate_key, onsets_on_grid
from fourfold.songcreator.oracle import NO_CHORD, ProceduralLabelTokenizer

__all__ = ["accompaniment_beats", "accompaniment_key", "stream_agreement", "vocal_key"]

_TOK = ProceduralLabelTokenizer


def vocal_key(tokens: torch.Tensor, candidates=None) -> int | None:
    pcs = _TOK.vocal_pitch_classes(tokens)
    pcs = pcs[pcs >= 0]
    if len(pcs) == 0:
        return None
    return estimate_key(np.bincount(pcs.numpy(), minlength=12).astype(float), candidates)


def accompaniment_key(tokens: torch.Tensor, candidates=None) -> int | None:
    chords = _TOK.chords(tokens)
    chords = chords[(chords >= 0) & (chords != NO_CHORD)]
    if len(chords) == 0:
        return None
    hist = np.zeros(12)
    for c in chords.tolist():
        root, minor = c % 12, c >= 12
        for iv in (0, 3 if minor else 4, 7):
            hist[(root + iv) % 12] += 1
    return estimate_key(hist, candidates)


def accompaniment_beats(tokens: torch.Tensor, rate: float = _TOK.token_rate) -> np.ndarray:
    """Times (s) of the kick/snare hits of an accompaniment token sequence."""
    drums = _TOK.drums(tokens)
    return np.nonzero(((drums == 1) | (drums == 2)).numpy())[0] / rate


def stream_agreement(
    vocals: torch.Tensor, accompaniment: torch.Tensor, rate: float = _TOK.token_rate, candidates=None
) -> dict:
    """``key_agree`` (1/0, None if a stream has no key), ``onset_on_grid`` (fraction, None if undefined).
    ``candidates``: the closed set of keys the data uses (None = all 24)."""
    kv, ka = vocal_key(vocals, candidates), accompaniment_key(accompaniment, candidates)
    out = {
        "key_agree": None if kv is None or ka is None else float(kv == ka),
        "vocal_key": kv,
        "accomp_key": ka,
    }
    beats = accompaniment_beats(accompaniment, rate)
    onsets = np.nonzero(_TOK.vocal_onsets(vocals).numpy())[0] / rate
    out["onset_on_grid"] = None if len(beats) < 2 or len(onsets) == 0 else onsets_on_grid(onsets, beats)
    return out
