"""Multi-task training examples for the DSLM (§3.4, §4.1; the ratios are *ours*, spec §2.4).

Per example: 50% lyrics→song (BCA BR with p = 0.8, None otherwise), 30% one given stream (A2V or V2A),
20% edits (edit_song / edit_vocals / edit_vocals_in_song). A given stream has full SA, 20% of its input
tokens replaced by MASK, and its loss covers all of its tokens. Prompts: each present with p = 0.5, a
3–10 s crop of another clip of the same song. Lyrics are dropped (NULL) with p = 0.2.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.dslm import IGNORE_INDEX
from fourfold.songcreator.layout import prompt_prefixes
from fourfold.songcreator.lyrics import NULL
from fourfold.songcreator.tasks import BCA_STRATEGIES, TASKS

__all__ = ["DSLMRecipe", "collate_dslm"]


@dataclass
class DSLMRecipe:
    """Samples one training layout per call. ``p_*`` are probabilities; seconds are converted with the
    config's token rate."""

    config: DSLMConfig
    p_lyrics_to_song: float = 0.5
    p_given_stream: float = 0.3  # the rest (0.2) are edits
    p_bca_br: float = 0.8  # else None, within lyrics→song
    p_lyrics_dropout: float = 0.2
    p_mask: float = 0.2
    p_prompt: float = 0.5
    prompt_seconds: tuple[float, float] = (3.0, 10.0)

    def __post_init__(self) -> None:
        for name in (
            "p_lyrics_to_song",
            "p_given_stream",
            "p_bca_br",
            "p_lyrics_dropout",
            "p_mask",
            "p_prompt",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DSLMRecipe.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.p_lyrics_to_song + self.p_given_stream > 1.0:
            raise ValueError(
                "DSLMRecipe: p_lyrics_to_song + p_given_stream must be <= 1 (the rest are edits)"
            )

    def choose_task(self, rng: random.Random) -> str:
        u = rng.random()
        if u < self.p_lyrics_to_song:
            return "lyrics_to_song" if rng.random() < self.p_bca_br else "lyrics_to_song_none"
        if u < self.p_lyrics_to_song + self.p_given_stream:
            return rng.choice(["accompaniment_to_song", "vocals_to_song"])
        return rng.choice(["edit_song", "edit_vocals", "edit_vocals_in_song"])

    def _crop(self, x: torch.Tensor, rng: random.Random) -> torch.Tensor:
        lo, hi = (int(s * self.config.token_rate) for s in self.prompt_seconds)
        hi = min(hi, self.config.max_prompt_tokens, len(x))
        if hi < 1:
            return x[:0]
        n = rng.randint(min(lo, hi), hi)
        start = rng.randint(0, len(x) - n)
        return x[start : start + n]

    def make_example(self, item: dict, rng: random.Random) -> dict:
        """``item``: ``lyrics`` (ids), ``vocals``, ``accompaniment``, ``song`` (codes ``(T,)``), optional
        ``prompt_vocals`` / ``prompt_accompaniment`` (codes of another clip of the same song)."""
        cfg = self.config
        v, a, song = (torch.as_tensor(item[k], dtype=torch.long) for k in ("vocals", "accompaniment", "song"))
        T = len(v)
        if not (len(a) == T == len(song)) or T == 0:
            raise ValueError(
                f"vocals/accompaniment/song must share a positive length, got {len(v)}, {len(a)}, {len(song)}"
            )
        name = self.choose_task(rng)
        task = TASKS["lyrics_to_song"] if name == "lyrics_to_song_none" else TASKS[name]
        bca = "None" if name == "lyrics_to_song_none" else task.bca
        lyrics = list(item["lyrics"])
        dropped = rng.random() < self.p_lyrics_dropout
        if dropped or not lyrics:
            lyrics = [NULL]
        tracks = {"vocal": v, "accomp": a}
        modes = {"vocal": task.vocal, "accomp": task.accomp}
        special = torch.tensor
        if task.name.startswith("edit_"):
            e = rng.randint(1, T)
            prefix_len = T - e
            seqs = {s: torch.cat([x[e:], special([cfg.edit_id]), x[:e]]) for s, x in tracks.items()}
            frame_pos = torch.cat([torch.arange(prefix_len + 1, prefix_len + 1 + e), torch.arange(0, T - e)])
            song_target = torch.cat([song[:e], song[e:]])
        else:
            pv = (
                self._crop(torch.as_tensor(item["prompt_vocals"]), rng)
                if "prompt_vocals" in item and rng.random() < self.p_prompt
                else None
            )
            pa = (
                self._crop(torch.as_tensor(item["prompt_accompaniment"]), rng)
                if "prompt_accompaniment" in item and rng.random() < self.p_prompt
                else None
            )
            pre = dict(zip(("vocal", "accomp"), prompt_prefixes(cfg, pv, pa), strict=True))
            prefix_len = len(pre["vocal"])
            seqs = {s: torch.cat([pre[s], special([cfg.bos_id]), x]) for s, x in tracks.items()}
            frame_pos = torch.arange(prefix_len + 1, prefix_len + 1 + T)
            song_target = song
        out: dict = {
            "lyrics": torch.tensor(lyrics),
            "frame_pos": frame_pos,
            "task": name,
            "lyrics_dropped": dropped,
        }
        masked = given = 0
        for s, seq in seqs.items():
            target = torch.full_like(seq, IGNORE_INDEX)
            target[prefix_len:-1] = seq[prefix_len + 1 :]
            target[-1] = cfg.eos_class
            if modes[s] is None:  # unused decoder: all PAD, no loss
                seq = torch.full_like(seq, cfg.pad_id)
                target = torch.full_like(seq, IGNORE_INDEX)
            elif modes[s] == "full":
                body = torch.arange(len(seq)) > prefix_len
                mask = body & (torch.rand(len(seq), generator=_torch_gen(rng)) < self.p_mask)
                seq = seq.masked_fill(mask, cfg.mask_id)
                masked += int(mask.sum())
                given += int(body.sum())
            out[s] = seq
            out[f"{s}_target"] = target
            out[f"{s}_causal"] = modes[s] != "full"
        out["bca"] = BCA_STRATEGIES.index(bca)
        has_song = task.vocal is not None and task.accomp is not None
        out["song_target"] = song_target if has_song else torch.full_like(song_target, IGNORE_INDEX)
        out["masked_tokens"], out["given_tokens"] = masked, given
        return out


def _torch_gen(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(62))


def collate_dslm(examples: list[dict], config: DSLMConfig) -> dict[str, torch.Tensor]:
    """Right-pad a list of :meth:`DSLMRecipe.make_example` outputs into a batch for :class:`DSLM`."""
    L = max(len(x["lyrics"]) for x in examples)
    S = max(len(x["vocal"]) for x in examples)
    T = max(len(x["frame_pos"]) for x in examples)
    B = len(examples)
    batch = {
        "lyrics": torch.zeros(B, L, dtype=torch.long),
        "vocal": torch.full((B, S), config.pad_id, dtype=torch.long),
        "accomp": torch.full((B, S), config.pad_id, dtype=torch.long),
        "vocal_target": torch.full((B, S), IGNORE_INDEX, dtype=torch.long),
        "accomp_target": torch.full((B, S), IGNORE_INDEX, dtype=torch.long),
        "frame_pos": torch.zeros(B, T, dtype=torch.long),
        "frame_valid": torch.zeros(B, T, dtype=torch.bool),
        "song_target": torch.full((B, T), IGNORE_INDEX, dtype=torch.long),
        "vocal_causal": torch.tensor([bool(x["vocal_causal"]) for x in examples]),
        "accomp_causal": torch.tensor([bool(x["accomp_causal"]) for x in examples]),
        "bca": torch.tensor([int(x["bca"]) for x in examples]),
    }
    for i, x in enumerate(examples):
        batch["lyrics"][i, : len(x["lyrics"])] = x["lyrics"]
        for k in ("vocal", "accomp", "vocal_target", "accomp_target"):
            batch[k][i, : len(x[k])] = x[k]
        t = len(x["frame_pos"])
        batch["frame_pos"][i, :t] = x["frame_pos"]
        batch["frame_valid"][i, :t] = True
        batch["song_target"][i, :t] = x["song_target"]
    return batch
