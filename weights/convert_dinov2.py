#!/usr/bin/env python3
"""DINOv2 (with registers) -> the vision tower of mama.h (SPEC A.1, names of A.8).

Reads
  * torch-hub checkpoints of facebookresearch/dinov2 (e.g. dinov2_vitb14_reg4_pretrain.pth):
    cls_token, register_tokens, pos_embed, mask_token, patch_embed.proj.*,
    blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma},
    norm.*  (chunked "blocks.{c}.{i}." names are flattened);
  * Hugging Face Dinov2Model / Dinov2WithRegistersModel checkpoints (a directory with
    config.json and model.safetensors / pytorch_model.bin, or the file itself):
    embeddings.{cls_token, register_tokens, position_embeddings, mask_token,
    patch_embeddings.projection.*}, encoder.layer.{i}.{norm1, norm2, mlp.fc1, mlp.fc2,
    layer_scale1.lambda1, layer_scale2.lambda1} and the attention either as
    attention.attention.{query,key,value} + attention.output.dense (transformers 4.x) or
    attention.{q,k,v,o}_proj (transformers 5.x); layernorm.*.
    q, k, v are concatenated (rows) into qkv.
and writes a vision part (convert.py combine) or, with --text, a complete model.

    python3 weights/convert_dinov2.py dinov2_vitb14_reg4_pretrain.pth -o vision.safetensors
"""
import argparse
import math
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mama_weights as mw  # noqa: E402

HUB_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
             "mlp.fc2.bias", "ls2.gamma"]


def _hub_names(sd):
    """torch-hub names (possibly chunked) -> flat hub names."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.*)$", k)        # BlockChunk: blocks.{chunk}.{i}.
        if m:
            k = "blocks.%s.%s" % (m.group(2), m.group(3))
        out[k] = v
    return out


def _hf_to_hub(sd):
    """Hugging Face Dinov2 names -> torch-hub names."""
    out = {}
    emb = {"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "register_tokens",
           "embeddings.position_embeddings": "pos_embed", "embeddings.mask_token": "mask_token",
           "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
    blk = {"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
           "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
           "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}
    qkv = {}
    for k, v in sd.items():
        if k in emb:
            out[emb[k]] = v
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.*)$", k)
        if not m:
            if k.startswith("pooler.") or k.startswith("classifier."):
                continue
            raise mw.ConvertError("unknown Hugging Face Dinov2 tensor '%s'" % k)
        i, rest = int(m.group(1)), m.group(2)
        mq = re.match(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$", rest)
        if mq:
            which = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}[mq.group(1)]
            qkv.setdefault((i, mq.group(2)), [None, None, None])[which] = v
            continue
        if rest.startswith("mlp.weights_in") or rest.startswith("mlp.weights_out") or "w12" in rest:
            raise mw.ConvertError("SwiGLU MLP (ViT-g) is not supported by mama.h (tensor '%s')" % k)
        for src, dst in blk.items():
            if rest == src or rest.startswith(src + "."):
                out["blocks.%d.%s%s" % (i, dst, rest[len(src):])] = v
                break
        else:
            raise mw.ConvertError("unknown Hugging Face Dinov2 tensor '%s'" % k)
    for (i, kind), parts in qkv.items():
        if any(p is None for p in parts):
            raise mw.ConvertError("layer %d: query/key/value %s incomplete" % (i, kind))
        out["blocks.%d.attn.qkv.%s" % (i, kind)] = torch.cat(parts, dim=0)   # rows [q | k | v]
    return out


def convert(path, heads=None, trust_pickle=False):
    """Returns (tensors with A.8 names, config part)."""
    sd = mw.load_state_dict(path, trust_pickle)
    if any(re.search(r"(^|\.)embeddings\.cls_token$", k) for k in sd):
        sd, prefix = mw.strip_prefix(sd, r"embeddings\.cls_token$")
        sd = _hf_to_hub(sd)
        hf_cfg = mw.dir_json(path, "config.json")
        if hf_cfg:
            if hf_cfg.get("use_swiglu_ffn"):
                raise mw.ConvertError("SwiGLU MLP (ViT-g) is not supported by mama.h")
            if hf_cfg.get("hidden_act", "gelu") != "gelu":
                raise mw.ConvertError("hidden_act %r: mama.h uses exact (erf) GELU" % hf_cfg.get("hidden_act"))
            eps = hf_cfg.get("layer_norm_eps", 1e-6)
            if abs(eps - 1e-6) > 1e-12:
                mw.log("warning: layer_norm_eps %g in config.json; mama.h uses 1e-6" % eps)
            if heads is None:
                heads = hf_cfg.get("num_attention_heads")
        kind = "Hugging Face Dinov2"
    else:
        sd, prefix = mw.strip_prefix(sd, r"cls_token$")
        sd = _hub_names(sd)
        kind = "torch-hub DINOv2"
    if any(k.startswith("blocks.") and ("w12" in k or "w3" in k) for k in sd):
        raise mw.ConvertError("SwiGLU MLP (ViT-g) is not supported by mama.h")
    D = sd["cls_token"].shape[-1]
    pw = sd["patch_embed.proj.weight"]
    P = pw.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    R = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    pos = sd["pos_embed"]
    n0 = pos.shape[1] - 1
    g0 = int(round(math.sqrt(n0)))
    if g0 * g0 != n0:
        raise mw.ConvertError("pos_embed has %d patch positions, not a square grid" % n0)
    if heads is None:
        if D % 64:
            raise mw.ConvertError("width %d is not a multiple of 64: give the number of heads (--vision-heads)" % D)
        heads = D // 64          # every DINOv2 model has 64-wide heads (S 6, B 12, L 16, g 24)
        mw.log("vision heads not given: %d (DINOv2's 64-wide heads; --vision-heads to change)" % heads)
    if pw.shape[1] != 3:
        raise mw.ConvertError("patch embedding has %d input channels; DINOv2 has 3" % pw.shape[1])
    out = {}
    vp = mw.VISION_PREFIX
    out[vp + "cls_token"] = sd["cls_token"].reshape(1, 1, D)
    out[vp + "register_tokens"] = sd["register_tokens"].reshape(1, R, D) if R else torch.zeros(1, 0, D)
    out[vp + "pos_embed"] = pos.reshape(1, n0 + 1, D)
    out[vp + "mask_token"] = sd["mask_token"].reshape(1, D) if "mask_token" in sd else torch.zeros(1, D)
    out[vp + "patch_embed.proj.weight"] = pw
    out[vp + "patch_embed.proj.bias"] = sd["patch_embed.proj.bias"]
    for i in range(depth):
        for n in HUB_BLOCK:
            k = "blocks.%d.%s" % (i, n)
            if k not in sd:
                raise mw.ConvertError("%s: tensor '%s' missing" % (path, k))
            out[vp + k] = sd[k]
    out[vp + "norm.weight"] = sd["norm.weight"]
    out[vp + "norm.bias"] = sd["norm.bias"]
    used = set(k[len(vp):] for k in out)
    ignored = sorted(k for k in sd if k not in used and k not in ("register_tokens", "mask_token"))
    if ignored:
        mw.log("ignored %d tensors: %s" % (len(ignored), ", ".join(ignored[:6])))
    cfg = dict(image_size=g0 * P, patch_size=P, vision_dim=D, vision_depth=depth, vision_heads=int(heads),
               registers=R, in_chans=3)
    mw.log("%s: D %d, depth %d, heads %d, patch %d, registers %d, pos grid %dx%d" %
           (kind, D, depth, heads, P, R, g0, g0))
    return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}, cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="torch-hub .pth, or a Hugging Face Dinov2 directory / weights file")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--vision-heads", type=int, help="attention heads (default: config.json, else D/64)")
    ap.add_argument("--text", help="a text part: write a complete model instead of a vision part")
    ap.add_argument("--lora", help="a LoRA part (with --text)")
    mw.add_common_args(ap)
    mw.add_model_args(ap)
    args = ap.parse_args(argv)
    tensors, cfg = convert(args.checkpoint, args.vision_heads, args.trust_pickle)
    if args.text:
        text = mw.load_part(args.text, "text")[:2]
        lora = mw.load_part(args.lora, "lora")[:2] if args.lora else None
        t, c = mw.assemble((tensors, cfg), text, lora, None, mw.model_overrides(args), args.seed)
        mw.finish_model(args.output, t, c, args, source=os.path.basename(args.checkpoint))
        return 0
    if args.image_size:
        cfg["image_size"] = args.image_size
        if args.resample_pos:
            g = args.image_size // cfg["patch_size"]
            tensors[mw.VISION_PREFIX + "pos_embed"] = mw.resample_pos_embed(tensors[mw.VISION_PREFIX + "pos_embed"], g)
    mw.save_part(args.output, tensors, "vision", cfg, args.dtype, os.path.basename(args.checkpoint))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except mw.ConvertError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
