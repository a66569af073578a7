"""PyTorch baseline for the MaMA training step (forward + backward + AdamW), to compare
with mama.h's CPU training step on the same model.

    python3 bench/bench_train_torch.py [--preset tiny|small|base] [--threads 2] [--steps N]
                                       [--batch 8] [--warmup 2] [--dropout 0]
                                       [--device cpu|cuda] [--bf16] [--peak-tflops X]

Model: tests/ref/mama_ref.py (SPEC A.1-A.4) with F.scaled_dot_product_attention, float32,
train mode, late losses on (CLIP + multi-view NT-Xent + symmetric CLIP + SLA), ext images
present, text local head per caption.  Presets (mama_ref.PRESETS):
  tiny : image 112/14 (64 patches), ViT D=192 depth 4 heads 3, 4 registers; GPT-2 D=192
         depth 4 heads 3, vocab 2048, context 128; E=128; local hidden 512; text full
  small: image 224/14 (256 patches), ViT D=384 depth 12 heads 6; GPT-2 D=768 depth 12
         heads 12, vocab 50263, context 144; E=512; local hidden 2048; LoRA r=8 alpha 32
Captions: bos + random tokens with ~11 sep tokens + eos, right-padded; lengths vary
between about 60% and 100% of the context.  Dropouts off by default (--dropout sets the
text dropouts, LoRA dropout included).  AdamW lr 4e-5, betas (0.9, 0.999), eps 1e-8,
wd 0.1 over the trainable set of SPEC A.5.  Prints the median step time; last line
`torch_train_step_ms=<number>`.

GPU (--device cuda): the model is built on the GPU and initialised there (normal 0.02 on
every matrix; values do not change the timing), each step ends with
torch.cuda.synchronize(); --bf16 runs forward and loss under torch.autocast(bfloat16)
with fp32 master weights and AdamW(fused=True), the usual mixed-precision recipe; the
attention is F.scaled_dot_product_attention (flash / memory-efficient kernels).  Also
prints images/s, the model FLOPs per step (the formula of bench/bench_train.c,
bench_step_flops) and, with --peak-tflops, the model FLOPs utilisation.
  base : image 518/14 (1369 patches), ViT-B D=768 depth 12 heads 12; GPT-2 D=2560
         depth 32 heads 20 (BioMedLM 2.7B), vocab 28902, context 144, BioMedLM's
         attention scaling; E=512; local hidden 2048; LoRA r=8 alpha 32
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import mama_ref as M  # noqa: E402


BASE = dict(image_size=518, patch_size=14, vision_dim=768, vision_depth=12, vision_heads=12,
            registers=4, text_dim=2560, text_depth=32, text_heads=20, vocab_size=28902,
            context=144, embed_dim=512, local_hidden=2048, text_mode="lora",
            lora_rank=8, lora_alpha=32, text_attn_layer_scale=1)


def step_flops(cfg, B, late=True):
    """Model FLOPs of one step: the formula of bench/bench_train.c (bench_step_flops)."""
    N = (cfg["image_size"] // cfg["patch_size"]) ** 2
    Bv = 2 * B if late else B
    Tv, D, L = 1 + cfg["registers"] + N, cfg["vision_dim"], cfg["vision_depth"]
    Tt, Dt, Lt = cfg["context"], cfg["text_dim"], cfg["text_depth"]
    fv = Bv * (L * (24 * Tv * D * D + 4 * Tv * Tv * D) + 2 * N * cfg["patch_size"] ** 2 * 3 * D)
    flin, fatt = B * Lt * 24 * Tt * Dt * Dt, B * Lt * 4 * Tt * Tt * Dt
    mode = cfg["text_mode"]
    ft = 3 * (flin + fatt) if mode == "full" else (2 * flin + 3 * fatt if mode == "lora" else flin + fatt)
    return 3 * fv + ft


def make_batch(cfg, B, gen):
    H, T = cfg["image_size"], cfg["context"]
    images = torch.rand(B, 3, H, H, generator=gen) * 2 - 1
    ext = (images.flip(-1) + 0.1 * torch.randn(B, 3, H, H, generator=gen)).clamp(-1, 1)
    eos, bos, pad, sep = cfg["eos_id"], cfg["bos_id"], cfg["pad_id"], cfg["sep_id"]
    ids = torch.full((B, T), pad, dtype=torch.int64)
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):
        L = T if b == 0 else int(T * (0.6 + 0.4 * torch.rand(1, generator=gen).item()))
        n = L - 2
        content = torch.randint(0, eos, (n,), generator=gen)
        nsep = max(3, min(11, n // 8))
        pos = torch.linspace(n / nsep, n - 1, nsep).long()     # evenly spread, last at end
        content[pos] = sep
        ids[b, 0], ids[b, 1:L - 1], ids[b, L - 1] = bos, content, eos
        mask[b, :L] = 1
    return images, ext, ids, mask


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(list(M.PRESETS) + ["base"]), default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (tiny 10, small 3)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--bf16", action="store_true", help="autocast bfloat16 (GPU)")
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    args = ap.parse_args()
    steps = args.steps or (10 if args.preset == "tiny" else 3)
    dev = torch.device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch: CUDA is not available to this PyTorch build")
        sys.exit(1)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = BASE if args.preset == "base" else M.PRESETS[args.preset]
    cfg = M.make_config(**{**preset, "text_dropout": args.dropout, "lora_dropout": args.dropout})
    if args.device == "cuda":
        with torch.device(dev):
            model = M.MaMARef(cfg, fast=True)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.02)
    else:
        model = M.MaMARef(cfg, fast=True)
        M.init_random(model, torch.Generator().manual_seed(0))
    model.train()
    model.set_trainable(late=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=4e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
                            **({"fused": True} if args.device == "cuda" else {}))
    ntrain = sum(p.numel() for p in params)
    ntotal = sum(p.numel() for p in model.parameters())
    images, ext, ids, mask = (t.to(dev) for t in make_batch(cfg, args.batch, torch.Generator().manual_seed(1)))
    flops = step_flops(cfg, args.batch)
    print(f"preset {args.preset}: {ntotal / 1e6:.2f} M params, {ntrain / 1e6:.2f} M trainable; "
          f"batch {args.batch}; device {args.device}{' bf16 autocast' if args.bf16 else ''}; "
          f"threads {torch.get_num_threads()}; torch {torch.__version__}; "
          f"{flops / 1e12:.3f} TFLOP model FLOPs per step")

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    times, cpus = [], []
    for it in range(args.warmup + steps):
        sync()
        t0 = time.perf_counter()
        c0 = time.process_time()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(images, ids, mask, ext, late=True)
        out["loss"].backward()
        opt.step()
        sync()
        dt = (time.perf_counter() - t0) * 1e3
        dc = (time.process_time() - c0) * 1e3
        if it >= args.warmup:
            times.append(dt)
            cpus.append(dc)
        print(f"  step {it:3d}{' (warm-up)' if it < args.warmup else '':10s} {dt:9.1f} ms "
              f"(cpu {dc:9.1f} ms)  "
              f"loss {out['loss'].item():.4f} (clip {out['loss_clip'].item():.3f} "
              f"mv {out['loss_mv'].item():.3f} sym {out['loss_sym'].item():.3f} "
              f"sla {out['loss_sla'].item():.3f})", flush=True)
    med = statistics.median(times)
    print(f"median of {len(times)} steps: {med:.1f} ms (min {min(times):.1f}, max {max(times):.1f}); "
          f"process cpu time per step (all threads) median {statistics.median(cpus):.1f} ms; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    if args.device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"images_per_s={1e3 * args.batch / med:.2f}")
    print(f"model_tflops_per_s={flops / (med * 1e-3) / 1e12:.2f}")
    if args.peak_tflops > 0:
        print(f"mfu={flops / (med * 1e-3) / (args.peak_tflops * 1e12):.4f} (of {args.peak_tflops} TFLOP/s peak)")
    print(f"torch_train_step_ms={med:.1f}")


if __name__ == "__main__":
    main()
