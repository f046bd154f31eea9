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

``--size real`` instead measures Auffusion's size in ONE process (random weights; nothing is downloaded):
an SD-1.5-topology UNet (block_out 320/640/1280/1280, 2 layers per block, cross-attention 768, 860M
parameters) on the 4x32x128 latent of a 10.24-s clip, 77 text tokens, 2x82 video tokens (8 fps), the TLM
at T' = 128, DDIM for a few steps. Plain loop first, then the adapter is attached and our sampler runs
joint and dual CFG. Peak memory is the highest RSS (CPU, sampled every 5 ms by a thread, after
``malloc_trim``) or ``torch.cuda.max_memory_allocated`` during each variant; time is the denoising loop
after one untimed warm-up step. Results: ``results/drawaudio_speed_real_<device>.json``.

    python benchmarks/drawaudio_speed.py --size real --steps 3 [--device cpu|cuda]
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


class _RSSPeak:
    """Highest resident set size (MB) of this process while the context is open (CPU), sampled every 5 ms."""

    def __enter__(self):
        import contextlib
        import ctypes
        import gc
        import threading

        gc.collect()
        with contextlib.suppress(OSError):  # give freed heap pages back: one variant's leftovers stay out
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.page = os.sysconf("SC_PAGE_SIZE") / 2**20
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def real_size(steps: int, batch: int, device: str) -> dict:
    """Auffusion-size pipeline vs plain diffusers loop in one process (random weights)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    from fourfold.diffusion import make_scheduler
    from fourfold.drawaudio.base import AudioBase, tiny_scheduler
    from fourfold.drawaudio.config import DrawAudioConfig, VideoConfig
    from fourfold.drawaudio.model import DrawAudioModel
    from fourfold.drawaudio.pipeline import DrawAudioPipeline
    from fourfold.drawaudio.text import ConditionAdapter, TextConditioner, WordEncoder, WordEncoderConfig

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    torch.manual_seed(0)
    cfg = DrawAudioConfig.auffusion()
    # CLIP ViT weights are not reachable here; frame encoding is outside the timed loop, so a TinyFrameCNN
    # gives the same 2x82 tokens of width 768 to the UNet
    cfg.video = VideoConfig(encoder="tiny", fps=8.0, image_size=64, patch_size=16, width=32, embed_dim=768)
    unet = UNet2DConditionModel(sample_size=(32, 128), cross_attention_dim=768)  # SD-1.5 topology defaults
    n_params = sum(p.numel() for p in unet.parameters())
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4)  # fmt: skip
    enc = WordEncoder(WordEncoderConfig(vocab=["<unk>", *VOCAB], max_positions=77))
    text = TextConditioner([enc], [ConditionAdapter(enc.config.dim, 768)], 77)
    base = AudioBase(unet=unet, vae=vae, scheduler=tiny_scheduler("epsilon"), text=text, mel=cfg.mel).freeze()
    base = base.to(device)
    prompts = ["a red ball bounces"] * batch
    emb = base.encode_text(prompts).to(device)
    f = cfg.num_video_frames
    frames = torch.rand(batch, f, 3, cfg.video.image_size, cfg.video.image_size)
    times = torch.arange(f) / cfg.video.fps
    curve = torch.rand(batch, cfg.loudness_frames)
    rows: dict = {}

    def timed(name: str, run) -> None:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with _RSSPeak() as mem:
            run(1)  # warm-up: allocations, kernel selection
            t0 = time.perf_counter()
            run(steps)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else mem.peak
        rows[name] = {"seconds": seconds, "seconds_per_step": seconds / steps, "peak_mb": peak,
                      "rss_before_mb": mem.start if device != "cuda" else None,
                      "rtf_25_steps": 25 * seconds / steps / (cfg.duration * batch)}  # fmt: skip
        print(f"{name:6s} {seconds:8.2f} s for {steps} steps, peak {peak:.0f} MB", flush=True)

    base.unet.set_attn_processor(AttnProcessor2_0())

    def plain(n: int) -> None:
        sched = make_scheduler("ddim", source=base.scheduler)
        sched.set_timesteps(n)
        lat = torch.randn(batch, *cfg.latent_shape, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            for t in sched.timesteps:
                u, c = base.unet(torch.cat([lat] * 2), t, encoder_hidden_states=torch.cat([torch.zeros_like(emb), emb])).sample.chunk(2)  # fmt: skip
                lat = sched.step(u + 7.5 * (c - u), t, lat).prev_sample

    timed("plain", plain)
    model = DrawAudioModel(cfg, base).to(device).eval()  # attaches MAM to every attn2, TLM at conv_in
    adapter_params = sum(p.numel() for p in model.adapter_parameters())
    pipe = DrawAudioPipeline(model)
    conds = pipe.encode_conditions(prompts, None, frames.to(device), None, times, curve.to(device))
    for mode in ("joint", "dual"):
        timed(
            mode,
            lambda n, mode=mode: pipe.denoise(*conds, mode, 7.5, 7.5, n, torch.Generator().manual_seed(0)),
        )
    ratios = {
        "joint_over_plain_time": rows["joint"]["seconds"] / rows["plain"]["seconds"],
        "dual_over_plain_time": rows["dual"]["seconds"] / rows["plain"]["seconds"],
        "joint_over_plain_peak_memory": rows["joint"]["peak_mb"] / rows["plain"]["peak_mb"],
        "dual_over_plain_peak_memory": rows["dual"]["peak_mb"] / rows["plain"]["peak_mb"],
    }
    return {"size": "real (Auffusion: SD-1.5 UNet, 4x32x128 latent, 10.24 s)", "device": device, "steps": steps,
            "batch": batch, "threads": os.environ.get("BENCH_THREADS", "1"), "unet_parameters": n_params,
            "adapter_parameters": adapter_params, "video_tokens": 2 * f, "load_average_1min": os.getloadavg()[0],
            "rows": rows, "ratios": ratios, "one_process": True,
            "bounds": {"joint_over_plain_time": 1.3, "joint_over_plain_peak_memory": 1.2}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--base", help="tiny base directory (default: the shipped asset, else a random one)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--size", choices=("tiny", "real"), default="tiny", help="tiny UNet, or Auffusion's size")
    args = ap.parse_args()
    if args.size == "real":
        result = real_size(args.steps, args.batch, args.device)
        out = args.out or RESULTS.with_name(f"drawaudio_speed_real_{args.device}.json")
        tmp_out = out.with_suffix(".tmp")
        tmp_out.write_text(json.dumps(result, indent=2))
        os.replace(tmp_out, out)
        print(json.dumps(result["ratios"], indent=2))
        return
    args.out = args.out or RESULTS
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
