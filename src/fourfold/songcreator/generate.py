"""Lockstep sampling from the DSLM with per-block KV caches (spec §2.3 "Generation").

One vocal and one accompaniment token per step. Caches per block: SA (grows), lyrics CA (computed once),
BCA (grows in lockstep under BR; fixed when the other stream is a given track; absent when this side
attends to nothing). A given (non-causal) track runs once in full, and its per-layer inputs become the
fixed BCA keys/values of the generated stream. ``use_cache=False`` recomputes the whole forward every
step; it is the reference the cache is tested (and benchmarked) against.

Sampling: top-k 50 at temperature 0.9 (§4.1) from a seeded ``torch.Generator``; ``top_k=1`` is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fourfold.nn.attention import KVCache, causal_mask
from fourfold.songcreator.dslm import DSLM, DSLMBlockCache
from fourfold.songcreator.tasks import TaskSpec

__all__ = ["GenerationResult", "generate_streams", "sample_logits"]


@dataclass
class GenerationResult:
    """Outputs of :func:`generate_streams` (batch 1).

    ``vocal``/``accomp``: complete input sequences ``(s,)`` (forced part + sampled tokens; a given track
    as it was; all PAD for an unused decoder). ``hidden_*``: final normalised states ``(s, c)``.
    ``new_tokens``: frames sampled. ``step_logits``: per step ``{"vocal": (K+1,), "accomp": (K+1,)}``.
    """

    vocal: torch.Tensor
    accomp: torch.Tensor
    hidden_vocal: torch.Tensor
    hidden_accomp: torch.Tensor
    new_tokens: int
    stopped_by_eos: bool
    step_logits: list[dict[str, torch.Tensor]] = field(default_factory=list)
    cache_elements: int = 0  # K+V elements held by all caches at the end (0 without a cache)


def sample_logits(
    logits: torch.Tensor, *, top_k: int, temperature: float, generator: torch.Generator | None
) -> int:
    """Top-k sampling of one token from ``(classes,)`` logits (``-inf`` entries are never drawn)."""
    if top_k == 1 or temperature <= 0:
        return int(logits.argmax())
    k = min(top_k, int(torch.isfinite(logits).sum()))
    vals, idx = logits.float().topk(k)
    probs = torch.softmax(vals / temperature, dim=-1)
    return int(idx[torch.multinomial(probs, 1, generator=generator)])


def _allowed(logits: torch.Tensor, eos_class: int, allow_eos: bool) -> torch.Tensor:
    if allow_eos:
        return logits
    out = logits.clone()
    out[eos_class] = float("-inf")
    return out


@torch.no_grad()
def generate_streams(
    model: DSLM,
    task: TaskSpec,
    lyrics: torch.Tensor,
    vocal: torch.Tensor | None,
    accomp: torch.Tensor | None,
    *,
    max_new: int,
    min_new: int = 0,
    top_k: int = 50,
    temperature: float = 0.9,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    record_logits: bool = False,
) -> GenerationResult:
    """Sample the causal stream(s) of ``task``.

    Args:
        lyrics: ``(l,)`` lyrics ids (``[NULL]`` when absent).
        vocal, accomp: ``(n,)`` stream ids. For a generated stream: the forced part (prompt prefix, BOS or
            EDIT, forced frames); both generated streams must share its length. For a given stream: the
            whole track in the same layout (it fixes the generated length: ``min_new = max_new`` = the
            remaining positions). ``None`` for an unused decoder.
        max_new, min_new: frame budget; EOS of the stopping stream is held back before ``min_new`` and
            generation stops after ``max_new`` frames.
    """
    cfg = model.config
    gen_streams = [s for s, mode in (("vocal", task.vocal), ("accomp", task.accomp)) if mode == "causal"]
    given = {
        s: t
        for s, t, mode in (("vocal", vocal, task.vocal), ("accomp", accomp, task.accomp))
        if mode == "full"
    }
    inputs = {"vocal": vocal, "accomp": accomp}
    if not gen_streams:
        raise ValueError(f"task {task.name} generates no stream")
    forced_len = {len(inputs[s]) for s in gen_streams}
    if len(forced_len) != 1:
        raise ValueError(f"generated streams need forced parts of equal length, got {forced_len}")
    n0 = forced_len.pop()
    if given:
        total = len(next(iter(given.values())))
        min_new = max_new = total - n0
        if max_new < 0:
            raise ValueError("the given track is shorter than the forced part of the generated stream")
    if n0 + max_new > cfg.max_positions:
        raise ValueError(f"{n0 + max_new} positions > max_positions {cfg.max_positions}")
    device = lyrics.device
    seqs = {s: inputs[s].clone().to(device) for s in gen_streams}
    runner = _CachedRunner(model, task, lyrics, seqs, given, n0 + max_new) if use_cache else None

    step_logits: list[dict[str, torch.Tensor]] = []
    logits = runner.prefill() if runner else _full_logits(model, task, lyrics, seqs, given)
    new, stopped = 0, False
    stop = task.stop_stream
    while True:
        if record_logits:
            step_logits.append({s: logits[s].clone() for s in gen_streams})
        if new >= max_new:
            break
        tokens = {}
        for s in gen_streams:
            allow = s == stop and new >= min_new
            tokens[s] = sample_logits(
                _allowed(logits[s], cfg.eos_class, allow),
                top_k=top_k,
                temperature=temperature,
                generator=generator,
            )
        if tokens[stop] == cfg.eos_class:
            stopped = True
            break
        for s in gen_streams:
            seqs[s] = torch.cat([seqs[s], torch.tensor([tokens[s]], device=device)])
        new += 1
        logits = runner.step(tokens) if runner else _full_logits(model, task, lyrics, seqs, given)

    hidden = runner.final_states() if runner else _full_states(model, task, lyrics, seqs, given)
    full = _assemble(cfg, task, seqs, given)
    return GenerationResult(
        vocal=full["vocal"],
        accomp=full["accomp"],
        hidden_vocal=hidden["vocal"],
        hidden_accomp=hidden["accomp"],
        new_tokens=new,
        stopped_by_eos=stopped,
        step_logits=step_logits,
        cache_elements=runner.cache_elements() if runner else 0,
    )


# reference path: the full forward every step


def _assemble(cfg, task: TaskSpec, seqs: dict, given: dict) -> dict[str, torch.Tensor]:
    length = max([len(t) for t in seqs.values()] + [len(t) for t in given.values()])
    out = {}
    for s in ("vocal", "accomp"):
        seq = seqs.get(s, given.get(s))
        if seq is None:
            seq = torch.full((length,), cfg.pad_id, dtype=torch.long)
        seq = seq.to(next(iter(seqs.values())).device)
        if len(seq) < length:  # a generated stream still shorter than the given track: future is PAD
            seq = torch.cat(
                [seq, torch.full((length - len(seq),), cfg.pad_id, device=seq.device, dtype=seq.dtype)]
            )
        out[s] = seq
    return out


def _full_states(model: DSLM, task: TaskSpec, lyrics, seqs, given):
    cfg = model.config
    full = _assemble(cfg, task, seqs, given)
    lyr, lyr_mask = model.encode_lyrics(lyrics[None])
    dev = lyrics.device
    hv, ha = model.decode_streams(
        full["vocal"][None],
        full["accomp"][None],
        lyr,
        lyr_mask,
        vocal_causal=torch.tensor([task.vocal != "full"], device=dev),
        accomp_causal=torch.tensor([task.accomp != "full"], device=dev),
        bca=torch.tensor([task.bca_code], device=dev),
    )
    return {"vocal": hv[0], "accomp": ha[0]}


def _full_logits(model: DSLM, task: TaskSpec, lyrics, seqs, given) -> dict[str, torch.Tensor]:
    states = _full_states(model, task, lyrics, seqs, given)
    n = len(next(iter(seqs.values())))
    return {s: model.stream_logits(states[s][n - 1], s) for s in seqs}


# cached path


class _CachedRunner:
    """Incremental decoding state for the generated stream(s) of one request (batch 1)."""

    def __init__(
        self, model: DSLM, task: TaskSpec, lyrics: torch.Tensor, seqs: dict, given: dict, capacity: int
    ):
        self.model, self.task, self.seqs, self.given = model, task, seqs, given
        cfg = model.config
        self.gen = list(seqs)
        self.blocks = {"vocal": model.vocal_blocks, "accomp": model.accomp_blocks}
        self.norms = {"vocal": model.vocal_norm, "accomp": model.accomp_norm}
        lyr, self.lyr_mask = model.encode_lyrics(lyrics[None])
        self.valid = {s: (seqs[s] != cfg.pad_id)[None] for s in self.gen}  # (1, filled)
        self.states: dict[str, list[torch.Tensor]] = {s: [] for s in self.gen}
        # BCA sources: which side sees which
        sees_other = {"vocal": task.bca in ("BR", "A2V"), "accomp": task.bca in ("BR", "V2A")}
        self.lockstep = task.bca == "BR"
        self.given_states: dict[str, torch.Tensor] = {}
        given_layer_inputs: dict[str, list[torch.Tensor]] = {}
        for s, seq in given.items():
            given_layer_inputs[s], self.given_states[s] = self._run_given(s, seq.to(lyrics.device), lyr)
        self.caches: dict[str, list[DSLMBlockCache]] = {}
        for s in self.gen:
            other = "accomp" if s == "vocal" else "vocal"
            caches = []
            for i, block in enumerate(self.blocks[s]):
                bca = None
                if sees_other[s] and other in given_layer_inputs:
                    bca = KVCache.from_context(*block.bca_kv(given_layer_inputs[other][i]))
                elif sees_other[s] and self.lockstep:
                    bca = block.bca.empty_cache(1, capacity, like=lyr)
                caches.append(
                    DSLMBlockCache(
                        sa=block.self_attn.empty_cache(1, capacity, like=lyr),
                        lyrics=KVCache.from_context(*block.lyrics_attn.project_kv(lyr)),
                        bca=bca,
                    )
                )
            self.caches[s] = caches
        self.given_valid = {
            s: (seq != cfg.pad_id)[None, None, None].to(lyrics.device) for s, seq in given.items()
        }

    def _run_given(self, stream: str, seq: torch.Tensor, lyr: torch.Tensor):
        """Full (non-causal) pass of a given track; returns per-layer inputs and final states ``(s, c)``."""
        m = self.model
        valid = (seq != m.config.pad_id)[None]
        sa_mask = valid[:, None, None, :]
        h = m.embed(seq[None], stream)
        layer_inputs = []
        for block in self.blocks[stream]:
            layer_inputs.append(h)
            # the given side attends to no generated stream (A2V / V2A): no BCA cache, output exactly 0
            cache = DSLMBlockCache(
                sa=block.self_attn.empty_cache(1, seq.shape[0], like=h),
                lyrics=KVCache.from_context(*block.lyrics_attn.project_kv(lyr)),
                bca=None,
            )
            h = block(
                h, None, sa_mask=sa_mask, lyrics=None, lyrics_mask=self.lyr_mask, bca_mask=None, cache=cache
            )
        return layer_inputs, self.norms[stream](h)[0]

    def _advance(self, new: dict[str, torch.Tensor], start: int) -> dict[str, torch.Tensor]:
        """Feed ``new[s]`` ``(n,)`` at positions ``start..`` through all layers; return last-position logits."""
        m, n = self.model, next(iter(new.values())).shape[0]
        end = start + n
        h = {s: m.embed(new[s][None], s, start=start) for s in self.gen}
        tri = causal_mask(n, end, offset=start, device=h[self.gen[0]].device)[None, None]
        for i in range(len(self.blocks[self.gen[0]])):
            out = {}
            for s in self.gen:
                other = "accomp" if s == "vocal" else "vocal"
                cache = self.caches[s][i]
                sa_mask = tri & self.valid[s][:, None, None, :end]
                bca_mask, other_h = None, None
                if cache.bca is not None and cache.bca.static:
                    bca_mask = self.given_valid[other]
                elif cache.bca is not None:
                    bca_mask = tri & self.valid[other][:, None, None, :end]
                    other_h = h[other]
                out[s] = self.blocks[s][i](
                    h[s],
                    other_h,
                    sa_mask=sa_mask,
                    lyrics=None,
                    lyrics_mask=self.lyr_mask,
                    bca_mask=bca_mask,
                    cache=cache,
                )
            h = out
        logits = {}
        for s in self.gen:
            final = self.norms[s](h[s])[0]
            self.states[s].append(final)
            logits[s] = self.model.stream_logits(final[-1], s)
        return logits

    def prefill(self) -> dict[str, torch.Tensor]:
        return self._advance(dict(self.seqs), 0)

    def step(self, tokens: dict[str, int]) -> dict[str, torch.Tensor]:
        pos = self.seqs[self.gen[0]].shape[0] - 1  # the token just appended
        new = {s: self.seqs[s][-1:] for s in self.gen}
        for s in self.gen:
            self.valid[s] = torch.cat(
                [self.valid[s], torch.ones(1, 1, dtype=torch.bool, device=self.valid[s].device)], 1
            )
        return self._advance(new, pos)

    def cache_elements(self) -> int:
        total = 0
        for caches in self.caches.values():
            for c in caches:
                total += (
                    c.sa.num_elements() + c.lyrics.num_elements() + (c.bca.num_elements() if c.bca else 0)
                )
        return total

    def final_states(self) -> dict[str, torch.Tensor]:
        out = {s: torch.cat(self.states[s], 0) for s in self.gen}
        out.update(self.given_states)
        length = max(len(v) for v in out.values())
        dim = self.model.config.dim
        ref = next(iter(out.values()))
        for s in ("vocal", "accomp"):
            if s not in out:  # unused decoder: no states (zeros keep the song decoder's shapes)
                out[s] = torch.zeros(length, dim, device=ref.device, dtype=ref.dtype)
        return out
