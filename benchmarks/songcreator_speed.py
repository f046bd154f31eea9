"""SongCreator generation speed (spec §8 benchmark): KV cache vs full recomputation, and the DSLM vs an
equal-size Hugging Face GPT-2 generating the same number of tokens with its cache.

    python benchmarks/songcreator_speed.py [--config tiny|paper] [--tokens 1000] [--device cpu|cuda]

Prints a table and writes ``benchmarks/results/songcreator_speed_<device>_<config>.json``. One run per
setting (not averaged); compare ratios on the same device only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from fourfold.songcreator.config import DSLMConfig
from fourfold.songcreator.dslm import DSLM
from fourfold.songcreator.generate import generate_streams
from fourfold.songcreator.tasks import TASKS


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def dslm_run(model: DSLM, tokens: int, lyrics_len: int, use_cache: bool, device: str) -> tuple[float, object]:
    cfg = model.config
    g = torch.Generator().manual_seed(0)  # the same lyrics for every run
    lyrics = torch.randint(7, cfg.lyrics_vocab_size, (lyrics_len,), generator=g).to(device)
    bos = torch.tensor([cfg.bos_id], device=device)
    _sync(device)
    t = time.perf_counter()
    # greedy, EOS never allowed before `tokens`: every run makes exactly `tokens` steps
    res = generate_streams(
        model,
        TASKS["lyrics_to_song"],
        lyrics,
        bos,
        bos,
        max_new=tokens,
        min_new=tokens,
        top_k=1,
        use_cache=use_cache,
    )
    _sync(device)
    return time.perf_counter() - t, res


def gpt2_of_equal_size(model: DSLM, device: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.config
    target = sum(p.numel() for p in model.parameters())
    best = None
    for layers in range(1, 80):
        g = GPT2Config(
            vocab_size=cfg.stream_vocab_size,
            n_positions=4 * cfg.max_positions,
            n_embd=cfg.dim,
            n_layer=layers,
            n_head=cfg.heads,
            n_inner=cfg.ffn_dim,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
        with torch.device("meta"):
            n = sum(p.numel() for p in GPT2LMHeadModel(g).parameters())
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (g, n)
    g, n = best
    return GPT2LMHeadModel(g).to(device).eval(), n, target


def gpt2_run(gpt, tokens: int, device: str) -> float:
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    _sync(device)
    t = time.perf_counter()
    gpt.generate(
        prompt,
        max_new_tokens=2 * tokens,
        min_new_tokens=2 * tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
    )
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny", choices=["tiny", "paper"])
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--lyrics", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-nocache", action="store_true", help="skip the quadratic no-cache run")
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU intra-op threads (1 is fastest on a shared box)"
    )
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = DSLMConfig.tiny() if args.config == "tiny" else DSLMConfig.paper()
    cfg.max_stream_tokens = max(cfg.max_stream_tokens, args.tokens)
    model = DSLM(cfg).to(args.device).eval()
    if args.device == "cuda":
        model.half()
    T, L = args.tokens, args.lyrics
    dslm_run(model, 8, L, True, args.device)  # warm-up
    t_cache, r_cache = dslm_run(model, T, L, True, args.device)
    row = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "platform": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "config": args.config,
        "tokens": T,
        "lyrics_tokens": L,
        "dslm_params": sum(p.numel() for p in model.parameters()),
    }
    row["cache_tokens_per_s"] = 2 * T / t_cache  # vocal + accompaniment tokens
    row["cache_elements"] = r_cache.cache_elements
    blocks = cfg.vocal_layers + cfg.accomp_layers
    # SA and BCA K/V grow with the prefix (BOS + T positions), lyrics CA K/V are fixed
    row["cache_elements_expected"] = blocks * (4 * (T + 1) + 2 * L) * cfg.dim
    if not args.skip_nocache:
        t_full, r_full = dslm_run(model, T, L, False, args.device)
        row["nocache_tokens_per_s"] = 2 * T / t_full
        row["cache_speedup"] = t_full / t_cache
        row["identical_tokens"] = bool(
            torch.equal(r_cache.vocal, r_full.vocal) and torch.equal(r_cache.accomp, r_full.accomp)
        )
        assert row["identical_tokens"], "KV-cache decoding diverged from full recomputation"
    gpt, n_gpt, n_dslm = gpt2_of_equal_size(model, args.device)
    if args.device == "cuda":
        gpt.half()
    gpt2_run(gpt, 4, args.device)
    t_gpt = gpt2_run(gpt, T, args.device)
    row["gpt2_params"] = n_gpt
    row["gpt2_param_ratio"] = n_gpt / n_dslm
    row["gpt2_tokens_per_s"] = 2 * T / t_gpt
    row["dslm_vs_gpt2_speed"] = t_gpt / t_cache
    if args.device == "cuda":
        row["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    else:
        row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for k, v in row.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    out = Path(__file__).parent / "results" / f"songcreator_speed_{args.device}_{args.config}_T{T}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
