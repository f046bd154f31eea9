"""SaRA memory/time benchmark (spec §8 "Benchmarks"): full FT vs masked_dense vs SaRA vs LoRA, same model/batch.

Each method runs in a fresh child process (so its peak RSS is its own) on the same randomly initialised
UNet2DConditionModel: one training step = forward, ε-MSE backward, clip, AdamW step. Reported per method:
exact training-state bytes by category (``fourfold.metrics.state_bytes``), peak RSS (CPU) or
``max_memory_allocated`` (CUDA), median step time, trainable count; then the ratios the spec gates.

    python benchmarks/sara_memory.py                 # SD1.5 topology at half width (≈200M), CPU
    python benchmarks/sara_memory.py --scale tiny    # a few-second smoke run
    python benchmarks/sara_memory.py --scale sd15 --device cuda   # 860M, GPU

Writes ``benchmarks/results/sara_memory_<scale>_<device>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

SCALES = {
    # SD1.5 UNet topology (block widths 320/640/1280/1280, cross-attn 768) at full, half and tiny width
    "sd15": {"widths": (320, 640, 1280, 1280), "latent": 64, "cross": 768, "heads": 8},
    "half": {"widths": (160, 320, 640, 640), "latent": 32, "cross": 768, "heads": 8},
    "tiny": {"widths": (32, 64, 64, 64), "latent": 16, "cross": 64, "heads": 4},
}


def build_unet(scale: str):
    import torch
    from diffusers import UNet2DConditionModel

    s = SCALES[scale]
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=s["latent"],
        block_out_channels=s["widths"],
        cross_attention_dim=s["cross"],
        attention_head_dim=s["heads"],
        norm_num_groups=32 if min(s["widths"]) >= 64 else 16,
    )


def run_method(method: str, scale: str, fraction: float, steps: int, batch: int, device: str, queue) -> None:
    import torch

    from fourfold import sara
    from fourfold.metrics.memory import peak_rss_bytes, state_bytes

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    unet = build_unet(scale).to(device)
    n = sum(p.numel() for p in unet.parameters())
    largest = max(p.numel() * p.element_size() for p in unet.parameters())
    if method in ("sara", "masked_dense"):
        h = sara.wrap(unet, sara.SaraConfig(fraction=fraction, progressive_at=None, lambda_rank=5e-3,
                                            backend="sparse" if method == "sara" else "masked_dense"))  # fmt: skip
        params, k = h.parameters(), h.num_support()
    elif method == "lora":
        from fourfold.sara.baselines import inject_lora_at_budget

        budget = int(os.environ["SARA_BUDGET"])
        inject_lora_at_budget(unet, budget)
        params = [p for p in unet.parameters() if p.requires_grad]
        k = sum(p.numel() for p in params)
        assert abs(k - budget) <= 0.1 * budget, (k, budget)
        h = None
    else:
        h, params, k = None, list(unet.parameters()), n
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    s = SCALES[scale]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, s["latent"], s["latent"], generator=g).to(device)
    cond = torch.randn(batch, 77, s["cross"], generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, sb = [], {}
    for i in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = (unet(x, t, cond).sample.float() - x).pow(2).mean()
        if h is not None:
            loss = loss + h.rank_loss(draw=i)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i == steps - 1:
            sb = state_bytes(unet, opt)  # grads still present: the step's peak state
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_rss_bytes()
    queue.put({"method": method, "num_params": n, "trainable": k, "largest_tensor_bytes": largest,
               "state_bytes": sb, "peak_bytes": peak, "step_s_median": statistics.median(times[1:] or times),
               "step_s_all": times})  # fmt: skip


def measure(method: str, args, env: dict[str, str]) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    os.environ.update(env)
    proc = ctx.Process(
        target=run_method,
        args=(method, args.scale, args.fraction, args.steps, args.batch, args.device, queue),
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="half")
    ap.add_argument("--fraction", type=float, default=0.058, help="SaRA budget (0.058 ≈ 50M of 860M)")
    ap.add_argument("--steps", type=int, default=4, help="training steps per method (first is warm-up)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--methods", default="full,masked_dense,sara,lora")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = {}
    for method in args.methods.split(","):
        env = {"SARA_BUDGET": str(rows["sara"]["trainable"])} if "sara" in rows else {}
        if method == "lora" and not env:
            raise SystemExit("lora needs the sara row first (equal budget)")
        rows[method] = measure(method, args, env)
        r = rows[method]
        print(f"{method:>13}: trainable {r['trainable']:>12,}  state {r['state_bytes']['total'] / 2**20:9.1f} MiB  "
              f"peak {r['peak_bytes'] / 2**20:9.1f} MiB  step {r['step_s_median']:.3f} s", flush=True)  # fmt: skip
    ratios = {}
    if "sara" in rows and "full" in rows:
        sa, fu = rows["sara"], rows["full"]
        ratios.update(sara_over_full_state=sa["state_bytes"]["total"] / fu["state_bytes"]["total"],
                      sara_over_full_peak=sa["peak_bytes"] / fu["peak_bytes"],
                      sara_over_full_step_time=sa["step_s_median"] / fu["step_s_median"])  # fmt: skip
        n, k = sa["num_params"], sa["trainable"]
        ratios["sara_state_bound_ok"] = (
            sa["state_bytes"]["total"] <= 4 * n + 24 * k + sa["largest_tensor_bytes"]
        )
    if "sara" in rows and "lora" in rows:
        ratios.update(sara_over_lora_state=rows["sara"]["state_bytes"]["total"] / rows["lora"]["state_bytes"]["total"],
                      sara_over_lora_peak=rows["sara"]["peak_bytes"] / rows["lora"]["peak_bytes"],
                      sara_over_lora_step_time=rows["sara"]["step_s_median"] / rows["lora"]["step_s_median"])  # fmt: skip
    if "sara" in rows and "masked_dense" in rows:
        sa, md = rows["sara"], rows["masked_dense"]
        saving = md["peak_bytes"] - sa["peak_bytes"]
        ratios.update(peak_saving_vs_masked_dense_bytes=saving,
                      paper_saving_estimate_bytes=(sa["num_params"] - sa["trainable"]) * 12,
                      saving_over_estimate=saving / max(1, (sa["num_params"] - sa["trainable"]) * 12))  # fmt: skip
    for key, value in ratios.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sara_memory_{args.scale}_{args.device}.json"
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "ratios": ratios},
                               indent=2))  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
