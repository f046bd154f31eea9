"""INTRA speed: grounding latency vs the bare DINOv2 forward, train step time, peak memory.

    python benchmarks/intra_speed.py [--size paper|tiny] [--reps 5] [--batch 1]

Random weights at the chosen shapes (paper: DINOv2-B/14 at 336², BERT-base text encoder, 4-layer fusion).
Prints a table and writes benchmarks/results/intra_speed_<size>.json. The text vector is cached per string
(as in training and in IntraGrounder), so grounding = encoder + fusion + head; the uncached text cost is
reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from fourfold.intra.config import IntraConfig
from fourfold.intra.model import IntraModel


def build_encoders(root: Path, size: str) -> tuple[Path, Path]:
    from transformers import BertConfig, BertModel, BertTokenizer, Dinov2Config, Dinov2Model

    if size == "paper":
        img_cfg = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                               patch_size=14, image_size=518)  # fmt: skip
        txt_cfg = BertConfig(
            hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072
        )
    else:
        img_cfg = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                               patch_size=14, image_size=112)  # fmt: skip
        txt_cfg = BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
        )
    Dinov2Model(img_cfg).save_pretrained(root / "img")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hold", "pour", "cut", "with"]
    (root / "txt").mkdir(parents=True)
    (root / "txt" / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(vocab=str(root / "txt" / "vocab.txt")).save_pretrained(root / "txt")
    txt_cfg.vocab_size = len(words)
    BertModel(txt_cfg).save_pretrained(root / "txt")
    return root / "img", root / "txt"


def timed(fn, reps: int) -> float:
    """Median of ``reps`` timed calls after one warm-up; ``reps=0``: one call, no warm-up."""
    if reps == 0:
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired(fn_a, fn_b, reps: int) -> tuple[float, float, float]:
    """Alternate a and b ``reps`` times; (median a, median b, median of the per-pair ratios b/a). Pairing each b
    with the a run just before it cancels most of the drift a shared, busy machine adds to both."""
    fn_a(), fn_b()  # warm-up
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(fn_a, 0))
        tb.append(timed(fn_b, 0))
    ratios = [b / a for a, b in zip(ta, tb, strict=True)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("paper", "tiny"), default="paper")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-train", action="store_true", help="only the grounding vs encoder latency")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        img_dir, txt_dir = build_encoders(Path(tmp), args.size)
        preset = IntraConfig.paper if args.size == "paper" else IntraConfig.tiny
        model = IntraModel(preset(image_encoder=str(img_dir), text_encoder=str(txt_dir))).to(device).eval()
    s = model.config.image_size
    x = torch.rand(args.batch, 3, s, s, device=device)
    texts = ["hold"] * args.batch
    model.encode_text(texts)
    with torch.no_grad():  # as IntraGrounder runs
        t_enc, t_ground, ratio = paired(
            lambda: model.encode_image(x), lambda: model(x, texts=texts), args.reps
        )

        def uncached_text():
            model._text_cache.clear()
            model.encode_text(["cut with"] * args.batch)

        t_text = timed(uncached_text, args.reps)
    t_step_cached = t_step_uncached = None
    if not args.skip_train:
        t_step_cached, t_step_uncached = train_steps(model, args, device, s)
    peak_cpu_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    report(args, model, s, device, t_enc, t_ground, ratio, t_text, t_step_cached, t_step_uncached,
           peak_cpu_mb, peak_gpu_mb)  # fmt: skip


def train_steps(model, args, device, s) -> tuple[float, float]:
    """Median train-step time with cached features and with the frozen encoder in the loop."""
    model.train()
    b = args.train_batch
    views = torch.rand(2 * b, 3, s, s, device=device)
    feats = model.encode_image(views)
    emb = model.encode_text(["hold"] * (2 * b))
    labels = torch.arange(2 * b, device=device) // 4 % 3
    objects = torch.arange(2 * b, device=device) // 2 % 2
    r = torch.eye(3, dtype=torch.bool, device=device)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=2e-4)
    from fourfold.intra.losses import intra_loss

    def step(cached: bool):
        out = model(image_features=feats, text_embeds=emb) if cached else model(views, text_embeds=emb)
        loss, _ = intra_loss(out.z, labels, objects, r)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(lambda: step(True), args.reps), timed(lambda: step(False), args.reps)


def report(args, model, s, device, t_enc, t_ground, ratio, t_text, t_step_cached, t_step_uncached,
           peak_cpu_mb, peak_gpu_mb) -> None:  # fmt: skip
    b = args.train_batch
    result = {
        "size": args.size,
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "image_size": s,
        "grid": s // model.patch_size,
        "batch": args.batch,
        "encoder_forward_s": t_enc,
        "grounding_s": t_ground,
        "grounding_over_encoder": ratio,  # median of paired per-rep ratios
        "reps": args.reps,
        "text_encode_uncached_s": t_text,
        "train_batch_images": b,
        "train_step_cached_s": t_step_cached,
        "train_step_uncached_s": t_step_uncached,
        "peak_cpu_rss_mb": peak_cpu_mb,
        "peak_gpu_mb": peak_gpu_mb,
        "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    rows = [
        ("DINOv2 forward alone", f"{t_enc * 1e3:.1f} ms"),
        ("INTRA grounding (cached text)", f"{t_ground * 1e3:.1f} ms  ({ratio:.3f}x encoder, paired median)"),
        ("text encode, uncached", f"{t_text * 1e3:.1f} ms"),
    ]
    if t_step_cached is not None:
        rows += [
            (f"train step, cached features ({b} images)", f"{t_step_cached * 1e3:.1f} ms"),
            (f"train step, encoder in loop ({b} images)", f"{t_step_uncached * 1e3:.1f} ms"),
        ]
    rows += [
        ("peak CPU RSS", f"{peak_cpu_mb:.0f} MB"),
        ("peak GPU memory", "n/a (no GPU)" if peak_gpu_mb is None else f"{peak_gpu_mb:.0f} MB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"INTRA speed, {args.size} shapes ({s}², {s // model.patch_size}² tokens), batch {args.batch}, {device}"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    out = Path(__file__).parent / "results" / f"intra_speed_{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
