"""Writes the parity fixtures of mama.h into tests/ref/fixtures/.

    python3 tests/ref/make_fixtures.py [--out DIR]

For each case: weights_<case>.safetensors (A.8 names, f32; num_batches_tracked int64;
metadata mama_config), batch_<case>.safetensors (images, ext_images, input_ids,
attention_mask) and expected_<case>.safetensors (embeddings, losses, gradients of every
parameter that trains in the late configuration, BN buffers after the step, and a few
intermediates under dbg.*).  The expected values are computed in float64 from the very
f32 weights and inputs that are stored.  Deterministic (fixed seeds).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mama_ref as M  # noqa: E402

B = 4
SEED = 20240611

# case name -> (config overrides, late)
CASES = {
    "full_late0": (dict(text_mode="full"), 0),
    "full_late1": (dict(text_mode="full"), 1),
    "lora_late0": (dict(text_mode="lora"), 0),
    "lora_late1": (dict(text_mode="lora"), 1),
    "lora_late1_lscale": (dict(text_mode="lora", text_attn_layer_scale=1), 1),
    "frozen_late1": (dict(text_mode="frozen"), 1),
}

# fixture config: smaller than tiny; vision and text widths/heads differ on purpose so a
# C side that mixes them up fails.  4x4 patch grid, 4 registers -> 21 vision tokens.
FIXTURE = dict(image_size=56, patch_size=14, vision_dim=48, vision_depth=2, vision_heads=3,
               registers=4, text_dim=32, text_depth=2, text_heads=2, vocab_size=2048,
               context=32, embed_dim=24, local_hidden=40, lora_rank=4, lora_alpha=16,
               lora_dropout=0.0, text_dropout=0.0, text_attn_layer_scale=0)


_DT = {torch.float32: "F32", torch.int64: "I64"}


def save_file(tensors, path, metadata=None):
    """safetensors writer with a deterministic layout (the library orders the metadata
    keys differently from run to run): header keys and data in sorted name order, header
    padded with spaces to a multiple of 8 bytes."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": _DT[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(np.uint64(len(hb)).tobytes())
        f.write(hb)
        for raw in blobs:
            f.write(raw)


def make_batch(cfg, gen):
    H = cfg["image_size"]
    T = cfg["context"]
    images = torch.rand(B, 3, H, H, generator=gen) * 2 - 1
    # ext: a flipped, noisy copy (a "second augmentation"); values stay in [-1, 1]
    ext = (images.flip(-1) + 0.3 * torch.randn(B, 3, H, H, generator=gen)).clamp(-1, 1)
    eos, bos, pad, sep = cfg["eos_id"], cfg["bos_id"], cfg["pad_id"], cfg["sep_id"]
    lengths = [T, 19, 25, 13]            # total tokens incl. bos/eos; caption 0 fills context
    nseps = [5, 3, 4, 3]
    ids = torch.full((B, T), pad, dtype=torch.int64)
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):
        L = lengths[b]
        n = L - 2                         # content tokens between bos and eos
        content = torch.randint(0, eos, (n,), generator=gen)
        # a sep ends the caption (its last '.'); the others at non-adjacent random places
        pos = {n - 1}
        while len(pos) < nseps[b]:
            p = int(torch.randint(1, n - 2, (1,), generator=gen))
            if all(abs(p - q) > 1 for q in pos):
                pos.add(p)
        for p in pos:
            content[p] = sep
        ids[b, 0] = bos
        ids[b, 1:L - 1] = content
        ids[b, L - 1] = eos
        mask[b, :L] = 1
    return dict(images=images.float().contiguous(), ext_images=ext.float().contiguous(),
                input_ids=ids, attention_mask=mask)


def f32(t):
    return t.detach().float().contiguous().clone()


def run_case(name, over, late, outdir, batch):
    cfg = M.make_config(**{**FIXTURE, **over})
    gen = torch.Generator().manual_seed(SEED)   # same weights for late0/late1 of a mode
    model = M.MaMARef(cfg)
    M.init_random(model, gen)
    weights = M.state_for_save(model)
    meta = {"mama_config": M.config_json(cfg)}
    save_file(weights, os.path.join(outdir, f"weights_{name}.safetensors"), metadata=meta)
    # the batch is the same for every case (byte-identical files; git stores one blob)
    save_file(batch, os.path.join(outdir, f"batch_{name}.safetensors"))

    # float64 forward/backward from the stored f32 values
    model = model.double()
    model.train()
    model.set_trainable(late=bool(late))
    o = model(batch["images"].double(), batch["input_ids"], batch["attention_mask"],
              batch["ext_images"].double(), late=bool(late))
    o["loss"].backward()

    exp = {"img_emb": f32(o["img_emb"]), "txt_emb": f32(o["txt_emb"])}
    for k in ("loss", "loss_clip", "loss_mv", "loss_sym", "loss_sla"):
        exp[k] = f32(o[k]).reshape(1)
    params = dict(model.named_parameters())
    for n in model.trainable_names(late=True):
        g = params[n].grad
        exp["grad." + n] = f32(g) if g is not None else torch.zeros(params[n].shape)
        if n.endswith("local_embed.head.0.bias") or n.endswith("local_embed.head.3.bias"):
            # a bias right before a train-mode BatchNorm has an exactly zero gradient (the
            # batch mean removes it); store the exact value instead of float64 round-off
            assert exp["grad." + n].abs().max() < 1e-12
            exp["grad." + n].zero_()
    # BN buffers after this training forward (running stats move only where BN ran)
    for n, b in model.named_buffers():
        exp["buf." + n] = b.detach().clone().contiguous() if not b.is_floating_point() else f32(b)
    # intermediates to help debug the C side
    exp["dbg.img_pooled"] = f32(o["img_pooled"])
    exp["dbg.txt_hidden"] = f32(o["txt_hidden"])
    if late:
        for k in ("ext_emb", "ext_pooled", "img_local", "sent_local", "t2i", "i2t"):
            exp["dbg." + k] = f32(o[k])
    emeta = {"mama_config": M.config_json(cfg), "case": name, "late": str(late),
             "note": "float64 reference (tests/ref/mama_ref.py), stored as f32"}
    save_file(exp, os.path.join(outdir, f"expected_{name}.safetensors"), metadata=emeta)
    return {k: float(o[k].detach()) for k in ("loss", "loss_clip", "loss_mv", "loss_sym", "loss_sla")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    cfg = M.make_config(**FIXTURE)
    batch = make_batch(cfg, torch.Generator().manual_seed(SEED + 1))
    total = 0
    for name, (over, late) in CASES.items():
        losses = run_case(name, over, late, args.out, batch)
        size = sum(os.path.getsize(os.path.join(args.out, f"{p}_{name}.safetensors"))
                   for p in ("weights", "batch", "expected"))
        total += size
        print(f"{name:20s} {size / 1e6:6.2f} MB  " +
              " ".join(f"{k}={v:.6f}" for k, v in losses.items()))
    print(f"total {total / 1e6:.2f} MB in {args.out}")
    print("config:", json.dumps(M.config_json(cfg)))


if __name__ == "__main__":
    main()
