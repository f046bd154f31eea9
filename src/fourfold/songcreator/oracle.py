"""``ProceduralLabelTokenizer`` (spec §5): 25 Hz "semantic" tokens computed from procedural labels.

Stands in for BEST-RQ in fast DSLM tests and the demo: the tokens carry exactly the musical facts the
BCA ablation measures (pitch class, vowel, onset; chord, drum hit).

* vocals: ``0`` rest, else ``1 + pc + 12·(vowel + 5·onset)`` (121 codes);
* accompaniment: ``chord + 25·drum`` with chord = root + 12·minor (24 = none), drum 0 none / 1 kick /
  2 snare / 3 hat (100 codes);
* song: ``vocal_pc·25 + chord`` with vocal_pc 12 for a rest (325 codes).
"""

from __future__ import annotations

import numpy as np
import torch

from fourfold.data.songs import VOWELS, SongClip

__all__ = ["ProceduralLabelTokenizer"]

NO_CHORD = 24
REST_PC = 12


class ProceduralLabelTokenizer:
    """Labels of a :class:`~fourfold.data.songs.SongClip` -> aligned code sequences ``(T,)``."""

    token_rate = 25.0
    vocal_codes, accomp_codes, song_codes = 121, 100, 325
    codebook_size = 325  # one shared code space large enough for all three streams

    def num_frames(self, seconds: float) -> int:
        return int(seconds * self.token_rate)

    def encode_clip(self, clip: SongClip) -> dict[str, torch.Tensor]:
        T = self.num_frames(clip.seconds)
        centers = (np.arange(T) + 0.5) / self.token_rate
        vpc = np.full(T, REST_PC)
        vowel = np.zeros(T, dtype=int)
        onset = np.zeros(T, dtype=int)
        for s in clip.syllables:
            on = (centers >= s.onset) & (centers < s.onset + s.duration)
            vpc[on] = s.midi % 12
            vowel[on] = VOWELS.index(s.vowel)
            f = int(s.onset * self.token_rate)
            if f < T:
                onset[f] = 1
                vpc[f] = s.midi % 12
                vowel[f] = VOWELS.index(s.vowel)
        vocals = np.where(vpc == REST_PC, 0, 1 + vpc + 12 * (vowel + 5 * onset))
        chord = np.full(T, NO_CHORD)
        for start, root, minor in clip.chords:
            chord[centers >= start] = root + 12 * int(minor)
        drum = np.zeros(T, dtype=int)
        for time, kind in sorted(clip.drums, key=lambda d: -d[1]):  # kick/snare win over a hat
            f = int(time * self.token_rate)
            if f < T:
                drum[f] = kind
        accomp = chord + 25 * drum
        song = vpc * 25 + chord
        return {
            k: torch.as_tensor(v, dtype=torch.long)
            for k, v in (("vocals", vocals), ("accompaniment", accomp), ("song", song))
        }

    # reading tokens back

    @staticmethod
    def vocal_pitch_classes(tokens: torch.Tensor) -> torch.Tensor:
        """``(T,)`` vocal codes -> pitch class 0..11, or -1 for a rest or an out-of-range code."""
        t = torch.as_tensor(tokens)
        pc = (t - 1) % 12
        return torch.where((t >= 1) & (t < 121), pc, torch.full_like(t, -1))

    @staticmethod
    def vocal_vowels(tokens: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(tokens)
        v = ((t - 1) // 12) % 5
        return torch.where((t >= 1) & (t < 121), v, torch.full_like(t, -1))

    @staticmethod
    def vocal_onsets(tokens: torch.Tensor) -> torch.Tensor:
        """Frames that start a syllable (onset flag set)."""
        t = torch.as_tensor(tokens)
        return (t >= 61) & (t < 121)

    @staticmethod
    def chords(tokens: torch.Tensor) -> torch.Tensor:
        """``(T,)`` accompaniment codes -> chord index (root + 12·minor), 24 none, -1 out of range."""
        t = torch.as_tensor(tokens)
        return torch.where(t < 100, t % 25, torch.full_like(t, -1))

    @staticmethod
    def drums(tokens: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(tokens)
        return torch.where(t < 100, t // 25, torch.full_like(t, -1))
