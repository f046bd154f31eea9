"""Sequence layouts of the DSLM streams (spec §2.3 "Layout", "Editing"; *ours* where the paper is silent).

Each stream is ``[prefix] BOS x_0 … x_{T-1}`` as input and ``x_0 … x_{T-1} EOS`` as target (shifted by
one). Prompt prefixes are left-padded with PAD to a common length ``P`` so that position ``i`` is the
same time in both streams; frame ``t`` is the input at position ``P + 1 + t``.

Editing a span ``[s, e)`` of a ``T``-frame track: the tail ``x[e:]`` replaces the prompt and ``EDIT``
replaces BOS: ``x[e:] EDIT x[:s]`` is forced and the model samples the span until EOS; the result is
``x[:s] + new + x[e:]``. A given track keeps the same layout, ``a[e:] EDIT a[:e]``, so positions still align.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.dslm import DSLM
from fourfold.songcreator.generate import GenerationResult, generate_streams
from fourfold.songcreator.tasks import TaskSpec

__all__ = ["DSLMOutput", "GenerationPlan", "plan_generation", "prompt_prefixes", "run_plan"]


def _long(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.long).flatten()


def prompt_prefixes(
    cfg: DSLMConfig, vocal_prompt: torch.Tensor | None, accomp_prompt: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad the two prompts ``(p_v,)``, ``(p_a,)`` with PAD to a common length ``(P,)`` each."""
    vp = _long([]) if vocal_prompt is None else _long(vocal_prompt)
    ap = _long([]) if accomp_prompt is None else _long(accomp_prompt)
    for name, p in (("vocal_prompt", vp), ("accompaniment_prompt", ap)):
        if len(p) > cfg.max_prompt_tokens:
            raise ValueError(f"{name} has {len(p)} tokens > max_prompt_tokens {cfg.max_prompt_tokens}")
        if len(p) and (int(p.min()) < 0 or int(p.max()) >= cfg.codebook_size):
            raise ValueError(f"{name} holds ids outside the codebook [0, {cfg.codebook_size})")
    length = max(len(vp), len(ap))

    def pad(p: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full((length - len(p),), cfg.pad_id, dtype=torch.long), p])

    return pad(vp), pad(ap)


@dataclass
class GenerationPlan:
    """Inputs of one generation request and what is needed to put the outputs back in frame order."""

    task: TaskSpec
    vocal_in: torch.Tensor | None
    accomp_in: torch.Tensor | None
    prefix_len: int  # positions before BOS/EDIT
    span: tuple[int, int] | None  # edit span in frames
    originals: dict[str, torch.Tensor | None]  # vocals / accompaniment / song codes of the edited track
    min_new: int = 0


@dataclass
class DSLMOutput:
    """Codes in frame order, ``(T,)`` each (``None`` where the task leaves a stream out)."""

    vocals: torch.Tensor | None
    accompaniment: torch.Tensor | None
    song: torch.Tensor | None
    result: GenerationResult


def _check_codes(cfg: DSLMConfig, name: str, x: torch.Tensor | None) -> torch.Tensor | None:
    if x is None:
        return None
    x = _long(x)
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    if int(x.min()) < 0 or int(x.max()) >= cfg.codebook_size:
        raise ValueError(f"{name} holds ids outside the codebook [0, {cfg.codebook_size})")
    return x


def plan_generation(
    cfg: DSLMConfig,
    task: TaskSpec,
    *,
    vocals=None,
    accompaniment=None,
    song=None,
    vocal_prompt=None,
    accompaniment_prompt=None,
    span: tuple[int, int] | None = None,
) -> GenerationPlan:
    """Build the forced/given stream inputs of ``task`` (codes are 1-D int sequences, frames at 50 Hz)."""
    v = _check_codes(cfg, "vocals", vocals)
    a = _check_codes(cfg, "accompaniment", accompaniment)
    s_codes = _check_codes(cfg, "song", song)
    editing = task.name.startswith("edit_")
    given = {"vocal": task.vocal == "full", "accomp": task.accomp == "full"}
    tracks = {"vocal": v, "accomp": a}
    for stream, needed in given.items():
        if needed and tracks[stream] is None:
            raise ValueError(
                f"task {task.name} needs the {'vocals' if stream == 'vocal' else 'accompaniment'}"
            )
    if editing:
        if span is None:
            raise ValueError(f"task {task.name} needs span=(start, end) in frames")
        edited = [st for st, mode in (("vocal", task.vocal), ("accomp", task.accomp)) if mode == "causal"]
        for st in edited:
            if tracks[st] is None:
                raise ValueError(f"task {task.name} needs the original {st} track to edit")
        length = len(tracks[edited[0]])
        if any(t is not None and len(t) != length for t in tracks.values()):
            raise ValueError("vocals and accompaniment must have the same number of frames")
        s, e = span
        if not 0 <= s < e <= length:
            raise ValueError(f"edit span {span} must satisfy 0 <= start < end <= {length} frames")
        edit = torch.tensor([cfg.edit_id])
        ins = {}
        for st, mode in (("vocal", task.vocal), ("accomp", task.accomp)):
            x = tracks[st]
            if mode == "causal":
                ins[st] = torch.cat([x[e:], edit, x[:s]])
            elif mode == "full":
                ins[st] = torch.cat([x[e:], edit, x[:e]])
            else:
                ins[st] = None
        return GenerationPlan(
            task,
            ins["vocal"],
            ins["accomp"],
            length - e,
            (s, e),
            {"vocals": v, "accompaniment": a, "song": s_codes},
        )
    if span is not None:
        raise ValueError(f"span is only for edit tasks, not {task.name}")
    pv, pa = prompt_prefixes(cfg, vocal_prompt, accompaniment_prompt)
    bos = torch.tensor([cfg.bos_id])
    ins = {}
    for st, mode, prefix in (("vocal", task.vocal, pv), ("accomp", task.accomp, pa)):
        if mode == "causal":
            ins[st] = torch.cat([prefix, bos])
        elif mode == "full":
            ins[st] = torch.cat([prefix, bos, tracks[st]])
        else:
            ins[st] = None
    return GenerationPlan(
        task, ins["vocal"], ins["accomp"], len(pv), None, {"vocals": v, "accompaniment": a, "song": None}
    )


@torch.no_grad()
def run_plan(
    model: DSLM,
    plan: GenerationPlan,
    lyrics,
    *,
    max_new: int,
    top_k: int = 50,
    temperature: float = 0.9,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> DSLMOutput:
    """Generate, run the song decoder, and return codes in frame order (edits spliced into the original)."""
    dev = next(model.parameters()).device
    lyr = _long(lyrics).to(dev)
    task = plan.task
    res = generate_streams(
        model,
        task,
        lyr,
        None if plan.vocal_in is None else plan.vocal_in.to(dev),
        None if plan.accomp_in is None else plan.accomp_in.to(dev),
        max_new=max_new,
        min_new=plan.min_new,
        top_k=top_k,
        temperature=temperature,
        generator=generator,
        use_cache=use_cache,
    )
    P = plan.prefix_len
    seqs = {"vocal": res.vocal.cpu(), "accomp": res.accomp.cpu()}
    if plan.span is None:
        n_frames = len(seqs["vocal"]) - P - 1
        frame_pos = torch.arange(P + 1, P + 1 + n_frames)
        frames = {st: seqs[st][P + 1 :] for st in seqs}
    else:
        s, e = plan.span
        total = P + e  # original length T
        head = s + res.new_tokens  # kept head + sampled span (a given track's span is forced: e - s)
        frame_pos = torch.cat([torch.arange(P + 1, P + 1 + head), torch.arange(0, total - e)])
        frames = {st: torch.cat([seqs[st][P + 1 : P + 1 + head], seqs[st][: total - e]]) for st in seqs}
    out = {"vocals": None, "accompaniment": None, "song": None}
    if task.vocal is not None:
        out["vocals"] = frames["vocal"]
    if task.accomp is not None:
        out["accompaniment"] = frames["accomp"]
    if task.vocal is not None and task.accomp is not None and frame_pos.numel() > 0:
        logits = model.song_logits(res.hidden_vocal[None], res.hidden_accomp[None], frame_pos[None].to(dev))
        song = logits[0].argmax(-1).cpu()  # non-autoregressive head: most likely code per frame (ours)
        orig = plan.originals.get("song")
        if plan.span is not None and orig is not None:
            s, e = plan.span
            n_new = len(frame_pos) - (len(orig) - (e - s))
            song = torch.cat([orig[:s], song[s : s + n_new], orig[e:]])
        out["song"] = song
    if plan.span is not None:  # the tokens outside the span are the originals, bit for bit
        s, e = plan.span
        for key in ("vocals", "accompaniment"):
            if out[key] is not None and plan.originals[key] is not None:
                orig = plan.originals[key]
                n_new = len(out[key]) - (len(orig) - (e - s))
                out[key] = torch.cat([orig[:s], out[key][s : s + n_new], orig[e:]])
    return DSLMOutput(out["vocals"], out["accompaniment"], out["song"], res)
