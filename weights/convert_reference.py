#!/usr/bin/env python3
"""The MaMA reference implementation's Lightning checkpoint -> a mama.h model file.

The checkpoint is a dict whose "state_dict" already uses the names of SPEC A.8.  This
script
  * renames newer PEFT's `c_attn.base_layer.{weight,bias}` to `c_attn.{weight,bias}`;
  * keeps the local heads' 1x1 Conv1d weights as [out, in, 1];
  * drops what mama.h does not hold (GPT-2 attn.bias / masked_bias buffers, lm_head,
    anything outside the A.8 names, e.g. optimizer-only or momentum copies), listing it;
  * derives the config from the shapes (widths, depths, grid, registers, vocab, context,
    LoRA rank); what shapes cannot tell comes from options with the paper's defaults
    (vision heads D/64, text heads 20 for a 2560-wide tower else D/64, LoRA alpha 32,
    layer-index attention scaling on for a BioMedLM-shaped tower);
  * special ids: from --tokenizer (a converted tokenizer directory, convert_gpt2.py
    --tokenizer-out) when given, else the six added tokens are the last six ids and eos is
    the id before them;
  * initialises heads the checkpoint lacks (PyTorch's defaults) and says so.
Tensors stay f32 (bf16 checkpoints are widened exactly) unless --dtype asks otherwise.

    python3 weights/convert_reference.py mama_checkpoint.ckpt -o mama_base.safetensors \
        --tokenizer biomedlm_tok --trust-pickle
"""
import argparse
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mama_weights as mw  # noqa: E402


def _rename(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace(".c_attn.base_layer.", ".c_attn.")
        out[k] = v
    return out


def infer_config(sd, vision_heads=None, text_heads=None, lora_alpha=None, layer_scale=None, tok_ids=None):
    vp, tp = mw.VISION_PREFIX, mw.TEXT_PREFIX
    D = sd[vp + "cls_token"].shape[-1]
    P = sd[vp + "patch_embed.proj.weight"].shape[-1]
    n0 = sd[vp + "pos_embed"].shape[1] - 1
    g0 = int(round(math.sqrt(n0)))
    vdepth = 1 + max(int(k[len(vp):].split(".")[1]) for k in sd if k.startswith(vp + "blocks."))
    Dt = sd[tp + "wte.weight"].shape[1]
    tdepth = 1 + max(int(k[len(tp):].split(".")[1]) for k in sd if k.startswith(tp + "h."))
    lora = any(".lora_A." in k for k in sd)
    cfg = dict(image_size=g0 * P, patch_size=P, vision_dim=D, vision_depth=vdepth,
               vision_heads=vision_heads or D // 64,
               registers=sd[vp + "register_tokens"].shape[1] if vp + "register_tokens" in sd else 0, in_chans=3,
               text_dim=Dt, text_depth=tdepth, text_heads=text_heads or (20 if Dt == 2560 else max(1, Dt // 64)),
               vocab_size=sd[tp + "wte.weight"].shape[0], context=sd[tp + "wpe.weight"].shape[0],
               text_attn_layer_scale=int(layer_scale if layer_scale is not None else (Dt == 2560 and tdepth == 32)),
               text_mode="lora" if lora else "full")
    if "img_encoder_q.global_embed.weight" in sd:
        cfg["embed_dim"] = sd["img_encoder_q.global_embed.weight"].shape[0]
    if "img_encoder_q.local_embed.head.0.weight" in sd:
        cfg["local_hidden"] = sd["img_encoder_q.local_embed.head.0.weight"].shape[0]
    if lora:
        cfg["lora_rank"] = sd[tp + "h.0.attn.c_attn.lora_A.default.weight"].shape[0]
        cfg["lora_alpha"] = float(lora_alpha if lora_alpha is not None else 32.0)
    if tok_ids:
        cfg.update(tok_ids)
        if cfg["vocab_size"] != tok_ids["vocab_size"]:
            raise mw.ConvertError("the tokenizer has %d ids, wte %d rows" % (tok_ids["vocab_size"], cfg["vocab_size"]))
    else:
        base = cfg["vocab_size"] - 6
        cfg.update(mw.special_ids_after(base, base - 1))
    return cfg


def tokenizer_ids(tok_dir):
    """Special ids of a converted tokenizer directory (added_tokens.json + vocab.json)."""
    vocab = mw.read_json(os.path.join(tok_dir, "vocab.json"))
    base = max(vocab.values()) + 1
    added = mw.read_json(os.path.join(tok_dir, "added_tokens.json")) if \
        os.path.exists(os.path.join(tok_dir, "added_tokens.json")) else {}
    for i, t in enumerate(mw.SPECIAL_TOKENS):
        if t in added and added[t] != base + i:
            raise mw.ConvertError("%s: %s has id %d, expected %d" % (tok_dir, t, added[t], base + i))
    return mw.special_ids_after(base, vocab[mw.EOS_TOKEN])


def convert(path, trust_pickle=False, **kw):
    sd = mw.load_state_dict(path, trust_pickle)
    if not any(k.startswith("img_encoder_q.") for k in sd):
        # a wrapper module: find the prefix in front of img_encoder_q.
        sd, prefix = mw.strip_prefix(sd, r"img_encoder_q\.model\.cls_token$")
        mw.log("stripped the prefix '%s'" % prefix)
    sd = _rename(sd)
    cfg = infer_config(sd, **kw)
    want = set(n for n, _ in mw.model_shapes(mw.full_config(cfg))) | set(mw.BN_TRACKED)
    kept = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items() if k in want}
    dropped = sorted(k for k in sd if k not in want)
    if dropped:
        kinds = sorted(set(re.sub(r"\.\d+\.", ".N.", k) for k in dropped))
        mw.log("dropped %d tensors: %s%s" % (len(dropped), ", ".join(kinds[:8]), " ..." if len(kinds) > 8 else ""))
    if mw.VISION_PREFIX + "mask_token" not in kept:
        import torch
        kept[mw.VISION_PREFIX + "mask_token"] = torch.zeros(1, cfg["vision_dim"])
    return kept, cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="Lightning .ckpt (or any file with an A.8 state dict)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--tokenizer", help="converted tokenizer directory (special ids)")
    ap.add_argument("--vision-heads", type=int)
    ap.add_argument("--text-heads", type=int)
    ap.add_argument("--layer-scale", type=int, choices=[0, 1],
                    help="divide text attention scores by layer index + 1 (default: 1 for BioMedLM shapes)")
    mw.add_common_args(ap)
    mw.add_model_args(ap)
    args = ap.parse_args(argv)
    tok = tokenizer_ids(args.tokenizer) if args.tokenizer else None
    tensors, cfg = convert(args.checkpoint, args.trust_pickle, vision_heads=args.vision_heads,
                           text_heads=args.text_heads, lora_alpha=args.lora_alpha, layer_scale=args.layer_scale,
                           tok_ids=tok)
    over = mw.model_overrides(args)
    over.pop("lora_rank", None)
    t, c = mw.assemble(base=(tensors, cfg), overrides=over, seed=args.seed)
    mw.finish_model(args.output, t, c, args, source=os.path.basename(args.checkpoint))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except mw.ConvertError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
