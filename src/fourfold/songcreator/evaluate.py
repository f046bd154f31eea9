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

__all__ = ["accompaniment_beats", "accompaniment_key", "song_key", "stream_agreement", "vocal_key"]

_TOK = ProceduralLabelTokenizer


def _vocal_histogram(tokens: torch.Tensor) -> np.ndarray:
    pcs = _TOK.vocal_pitch_classes(tokens)
    pcs = pcs[pcs >= 0]
    return np.bincount(pcs.numpy(), minlength=12).astype(float)


def _chord_histogram(tokens: torch.Tensor) -> np.ndarray:
    """Pitch classes of the chord tones (root, third, fifth) of every chord frame."""
    chords = _TOK.chords(tokens)
    chords = chords[(chords >= 0) & (chords != NO_CHORD)]
    hist = np.zeros(12)
    for c in chords.tolist():
        root, minor = c % 12, c >= 12
        for iv in (0, 3 if minor else 4, 7):
            hist[(root + iv) % 12] += 1
    return hist


def vocal_key(tokens: torch.Tensor, candidates=None) -> int | None:
    hist = _vocal_histogram(tokens)
    return estimate_key(hist, candidates) if hist.any() else None


def accompaniment_key(tokens: torch.Tensor, candidates=None) -> int | None:
    hist = _chord_histogram(tokens)
    return estimate_key(hist, candidates) if hist.any() else None


def song_key(vocals: torch.Tensor, accompaniment: torch.Tensor, candidates=None) -> int | None:
    """Key of a whole song: Krumhansl–Kessler on the sung pitch classes plus the chord tones (one count
    per frame each). A short melody alone uses few scale tones and is often ambiguous between keys that
    share them; the chords add the missing ones."""
    hist = _vocal_histogram(vocals) + _chord_histogram(accompaniment)
    return estimate_key(hist, candidates) if hist.any() else None


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


def _load_vggish(path):
    from pathlib import Path

    from fourfold.metrics.song_models import VGGish

    p = Path(path)
    return VGGish.from_pretrained(p) if p.is_dir() else VGGish.from_torch_state(p)


def _load_speaker(path):
    from pathlib import Path

    from fourfold.metrics.song_models import SpeakerEncoder

    p = Path(path)
    return SpeakerEncoder.from_pretrained(p) if p.is_dir() else SpeakerEncoder.from_torch_state(p)


def audio_metrics(
    pipe,
    songs,
    tokenizer,
    wanted: set[str],
    *,
    n: int = 8,
    vggish=None,
    speaker_encoder=None,
    phoneme_model=None,
    seconds: float = 4.0,
) -> dict:
    """FAD / MCD / SECS / PER of a pipeline on procedural songs (spec §6), generated with held-out lyrics.

    * ``fad``: generated songs vs the true mixtures, VGGish from ``vggish`` (a directory or torchvggish
      ``.pth``), otherwise the ``mfcc_stats`` fallback embedder (named in the result).
    * ``mcd``: ``mcd_mel`` between each generated song and the true mixture of the same lyrics.
    * ``secs``: vocal prompt (2 s of another clip of the song) vs vocals continued from it; needs
      ``speaker_encoder`` (a directory or Resemblyzer ``pretrained.pt``).
    * ``per``: phones recognised in the generated vocals vs the lyrics' CMUdict phones; needs
      ``phoneme_model`` (a local ``Wav2Vec2ForCTC`` directory).
    """
    from fourfold.audio.mel import mel_spectrogram
    from fourfold.metrics.frechet import frechet_distance_from_features
    from fourfold.metrics.music import log_mel_100hz_config, mcd_mel, mfcc_stats_frames

    if pipe.renderer is None:
        raise ValueError("audio metrics need a pipeline with a renderer")
    need = {"secs": speaker_encoder, "per": phoneme_model}
    for name, path in need.items():
        if name in wanted and path is None:
            raise ValueError(
                f"metric {name} needs a local model path (--{'speaker-encoder' if name == 'secs' else 'phoneme-model'})"
            )
    sr = pipe.sample_rate
    gens, refs, out = [], [], {}
    for i in range(n):
        clip = songs[i]
        res = pipe.lyrics_to_song(clip.lyrics, seed=i, max_seconds=seconds)
        gens.append(res.song)
        refs.append(np.asarray(clip.mixture, np.float32))
    if "fad" in wanted:
        if vggish is not None:
            from fourfold.metrics.song_models import fad_vggish

            out["fad"] = {"embedder": "vggish", "value": fad_vggish(gens, refs, sr, _load_vggish(vggish))}
        else:
            frames = lambda ws: np.concatenate([mfcc_stats_frames(w, sr) for w in ws])  # noqa: E731
            out["fad"] = {
                "embedder": "mfcc_stats",
                "value": frechet_distance_from_features(frames(gens), frames(refs)),
            }
    if "mcd" in wanted:
        cfg = log_mel_100hz_config(sr)
        mel = lambda w: mel_spectrogram(torch.as_tensor(w, dtype=torch.float32), cfg).numpy()  # noqa: E731
        out["mcd"] = {
            "variant": "mcd_mel",
            "value": float(np.mean([mcd_mel(mel(r), mel(g)) for r, g in zip(refs, gens, strict=True)])),
        }
    if "secs" in wanted:
        from fourfold.metrics.song_models import secs

        enc, vals = _load_speaker(speaker_encoder), []
        for i in range(n):
            other = songs.other_clip(i)
            prompt = tokenizer.encode_clip(other)["vocals"][: int(2 * pipe.token_rate)]
            res = pipe.continue_vocals(songs[i].lyrics, prompt, seed=i, max_seconds=seconds)
            prompt_audio = np.asarray(other.vocals[: int(2 * other.sample_rate)], np.float32)
            vals.append(secs(prompt_audio, res.vocals, sr, enc))
        out["secs"] = {"value": float(np.mean(vals))}
    if "per" in wanted:
        from fourfold.metrics.song_models import PhonemeRecognizer, phoneme_error_rate
        from fourfold.songcreator.lyrics import cmudict_phones

        rec, hyps, refs_ph = PhonemeRecognizer.from_pretrained(phoneme_model), [], []
        for i in range(n):
            clip = songs[i]
            res = pipe.lyrics_to_vocals(clip.lyrics, seed=i, max_seconds=seconds)
            hyps.append(rec.transcribe(res.vocals, sr))
            refs_ph.append([p for w in clip.lyrics.split() for p in (cmudict_phones(w) or list(w))])
        out["per"] = {"value": phoneme_error_rate(refs_ph, hyps)}
    return out
