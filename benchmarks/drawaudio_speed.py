"""Draw an Audio sampling speed and peak memory vs a plain diffusers denoising loop (same UNet, steps, scheduler).

Variants (each measured in its own subprocess so peak RSS is per variant):

- ``plain``: diffusers loop on the base UNet (default SDPA processors), joint CFG (2B batch);
- ``joint``: our sampler with the adapter attached (video tokens, TLM curve), joint CFG (2B);
- ``dual``: our sampler, dual CFG (3B batch);
- ``train_adapter`` / ``train_full``: one optimizer step of the adapter only vs the adapter + UNet.

Reports seconds per run, real-time factor (generation seconds / audio seconds; the VAE decode and
Griffin-Lim are timed separately), peak RSS (CPU) or ``torch.cuda.max_memory_allocated`` (GPU), and the
ratios the spec bounds (joint/plain <= 1.3x time, <= 1.2x memory; adapter/full step < 1x).

    python benchmarks/drawaudio_speed.py [--steps 25] [--batch 1] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "drawaudio_speed.json"
VOCAB = ["a", "red", "ball", "bounces"]


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_variant(variant: str, base_dir: str, steps: int, batch: int, repeats: int, device: str) -> dict:
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    from fourfold.diffusion import make_scheduler
    from fourfold.drawaudio.base import load_base
    from fourfold.drawaudio.config import DrawAudioConfig
    from fourfold.drawaudio.model import DrawAudioModel
    from fourfold.drawaudio.pipeline import DrawAudioPipeline

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    cfg = DrawAudioConfig.tiny()
    cfg.base.path = base_dir
    base = load_base(base_dir, cfg)
    text = base.encode_text(["a red ball bounces"] * batch)
    f = cfg.num_video_frames
    frames = torch.rand(batch, f, 3, cfg.video.image_size, cfg.video.image_size)
    times = torch.arange(f) / cfg.video.fps
    curve = torch.rand(batch, cfg.loudness_frames)
    timings = []
    if variant == "plain":
        unet = base.unet.to(device)
        unet.set_attn_processor(AttnProcessor2_0())
        sched = make_scheduler("ddim", source=base.scheduler)
        text = text.to(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                sched.set_timesteps(steps)
                lat = torch.randn(batch, *cfg.latent_shape, generator=torch.Generator().manual_seed(0)).to(
                    device
                )
                for t in sched.timesteps:
                    inp = torch.cat([lat] * 2)
                    u, c = unet(
                        inp, t, encoder_hidden_states=torch.cat([torch.zeros_like(text), text])
                    ).sample.chunk(2)
                    lat = sched.step(u + 3.0 * (c - u), t, lat).prev_sample
            if device == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - t0)
    elif variant in ("joint", "dual"):
        model = DrawAudioModel(cfg, base).to(device).eval()
        pipe = DrawAudioPipeline(model)
        conds = pipe.encode_conditions(["a red ball bounces"] * batch, None, frames, None, times, curve)
        for _ in range(repeats):
            t0 = time.perf_counter()
            lat = pipe.denoise(*conds, variant, 3.0, 3.0, steps, torch.Generator().manual_seed(0))
            if device == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pipe.decode(lat)
        decode_s = time.perf_counter() - t0
    else:
        model = DrawAudioModel(cfg, base).to(device)
        model.set_param_policy("full" if variant == "train_full" else "adapters")
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        b = {"latents": torch.randn(16, *cfg.latent_shape), "text": base.encode_text(["a red ball"] * 16),
             "frames": torch.rand(16, f, 3, 64, 64), "masks": None, "times": times, "loudness": torch.rand(16, 64)}  # fmt: skip
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            loss = model(batch=b)[0]
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i:  # the first step warms up allocations
                timings.append(time.perf_counter() - t0)
    timings.sort()
    out = {"variant": variant, "seconds": timings[len(timings) // 2], "peak_mb": _peak_mb(device)}
    if variant in ("joint", "dual", "plain"):
        out["rtf"] = out["seconds"] / (cfg.duration * batch)
    if variant in ("joint", "dual"):
        out["decode_seconds"] = decode_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--base", help="tiny base directory (default: the shipped asset, else a random one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.variant:
        print(
            json.dumps(
                run_variant(args.variant, args.base, args.steps, args.batch, args.repeats, args.device)
            )
        )
        return
    from fourfold.drawaudio.base import build_tiny_base
    from fourfold.drawaudio.config import DrawAudioConfig
    from fourfold.drawaudio.demo import ASSET_BASE

    tmp = tempfile.mkdtemp()
    base = args.base or (str(ASSET_BASE) if (ASSET_BASE / "unet").is_dir() else None)
    if base is None:
        base = str(build_tiny_base(Path(tmp) / "base", DrawAudioConfig.tiny(), VOCAB))
    rows = {}
    for v in ("plain", "joint", "dual", "train_adapter", "train_full"):
        cmd = [sys.executable, __file__, "--variant", v, "--base", base, "--steps", str(args.steps), "--batch",
               str(args.batch), "--repeats", str(args.repeats), "--device", args.device]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            raise SystemExit(f"variant {v} failed:\n{res.stderr[-3000:]}")
        rows[v] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{v:14s} {rows[v]['seconds']:.3f} s  peak {rows[v]['peak_mb']:.0f} MB", flush=True)
    ratios = {
        "joint_over_plain_time": rows["joint"]["seconds"] / rows["plain"]["seconds"],
        "dual_over_plain_time": rows["dual"]["seconds"] / rows["plain"]["seconds"],
        "joint_over_plain_peak_memory": rows["joint"]["peak_mb"] / rows["plain"]["peak_mb"],
        "adapter_over_full_step_time": rows["train_adapter"]["seconds"] / rows["train_full"]["seconds"],
    }
    result = {"device": args.device, "steps": args.steps, "batch": args.batch, "threads": os.environ.get("BENCH_THREADS", "1"),
              "load_average_1min": os.getloadavg()[0], "rows": rows, "ratios": ratios,
              "bounds": {"joint_over_plain_time": 1.3, "joint_over_plain_peak_memory": 1.2, "adapter_over_full_step_time": 1.0}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
