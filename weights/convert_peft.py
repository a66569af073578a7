#!/usr/bin/env python3
"""PEFT LoRA adapters of a GPT-2-family model -> the LoRA tensors of mama.h (SPEC A.2, A.8).

Reads an adapter directory (adapter_config.json + adapter_model.safetensors or
adapter_model.bin) or the weights file itself.  Accepted names (any leading prefix such
as base_model.model. / base_model.model.transformer.):
    h.{i}.attn.c_attn.lora_A.weight            (PEFT >= 0.7 saves without the adapter name)
    h.{i}.attn.c_attn.lora_A.{adapter}.weight  (in-memory / older names, e.g. .default.)
and the same for lora_B.  They become
    text_encoder_q.model.base_model.model.transformer.h.{i}.attn.c_attn.lora_{A,B}.default.weight
mama.h applies LoRA on c_attn only (the paper setting); adapters on other modules,
DoRA, per-module ranks or LoRA biases are refused.  `use_rslora` (scale alpha/sqrt r) is
folded into lora_alpha so that mama.h's alpha/r gives the same scale.

    python3 weights/convert_peft.py path/to/adapter -o lora.safetensors
"""
import argparse
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mama_weights as mw  # noqa: E402

LORA_RE = re.compile(r"(?:^|\.)h\.(\d+)\.attn\.c_attn\.lora_([AB])(?:\.([^.]+))?\.weight$")


def convert(path, adapter=None, trust_pickle=False, alpha=None):
    sd = mw.load_state_dict(path, trust_pickle, names=("adapter_model.safetensors", "adapter_model.bin"))
    conf = mw.dir_json(path, "adapter_config.json") or {}
    if conf:
        if conf.get("use_dora"):
            raise mw.ConvertError("DoRA adapters are not supported by mama.h")
        if conf.get("rank_pattern") or conf.get("alpha_pattern"):
            raise mw.ConvertError("per-module ranks/alphas (rank_pattern/alpha_pattern) are not supported")
        if conf.get("bias", "none") != "none":
            raise mw.ConvertError("LoRA biases (bias=%r) are not supported" % conf.get("bias"))
    out, others, names = {}, [], set()
    for k, v in sd.items():
        m = LORA_RE.search(k)
        if not m:
            others.append(k)
            continue
        i, ab, name = int(m.group(1)), m.group(2), m.group(3)
        if name is not None:
            names.add(name)
            if adapter is not None and name != adapter:
                continue
        out["%sh.%d.attn.c_attn.lora_%s.default.weight" % (mw.TEXT_PREFIX, i, ab)] = v.float()
    if others:
        raise mw.ConvertError("adapter tensors mama.h cannot use (LoRA is on c_attn only): %s" %
                              ", ".join(sorted(others)[:6]))
    if len(names) > 1 and adapter is None:
        raise mw.ConvertError("several adapters (%s): choose one with --adapter" % ", ".join(sorted(names)))
    if not out:
        raise mw.ConvertError("%s: no c_attn LoRA tensors" % path)
    layers = sorted(set(int(k.split(".h.")[1].split(".")[0]) for k in out))
    if layers != list(range(len(layers))):
        raise mw.ConvertError("LoRA covers layers %s; mama.h needs every layer" % layers)
    for i in layers:
        a = "%sh.%d.attn.c_attn.lora_A.default.weight" % (mw.TEXT_PREFIX, i)
        b = a.replace("lora_A", "lora_B")
        if a not in out or b not in out:
            raise mw.ConvertError("layer %d: lora_A or lora_B missing" % i)
        if out[a].shape[0] != out[b].shape[1] or out[b].shape[0] != 3 * out[a].shape[1]:
            raise mw.ConvertError("layer %d: lora_A %s and lora_B %s do not fit c_attn" %
                                  (i, list(out[a].shape), list(out[b].shape)))
    r = out["%sh.0.attn.c_attn.lora_A.default.weight" % mw.TEXT_PREFIX].shape[0]
    if any(v.shape[0] != r for k, v in out.items() if ".lora_A." in k):
        raise mw.ConvertError("LoRA ranks differ between layers")
    if alpha is None:
        alpha = conf.get("lora_alpha")
    if alpha is None:
        alpha = 32.0
        mw.log("no adapter_config.json: lora_alpha %g (--lora-alpha to change)" % alpha)
    alpha = float(alpha)
    if conf.get("use_rslora"):
        alpha = alpha * math.sqrt(r)     # rsLoRA scale alpha/sqrt(r) == (alpha sqrt r)/r
        mw.log("rsLoRA: lora_alpha folded to %g" % alpha)
    cfg = dict(lora_rank=int(r), lora_alpha=alpha, lora_dropout=float(conf.get("lora_dropout", 0.1)),
               text_mode="lora")
    mw.log("LoRA: %d layers, rank %d, alpha %g (scale %g), dropout %g" %
           (len(layers), r, alpha, alpha / r, cfg["lora_dropout"]))
    return out, cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapter", help="PEFT adapter directory or adapter_model.{safetensors,bin}")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--adapter-name", help="which adapter when the file holds several")
    ap.add_argument("--lora-alpha", type=float, help="alpha when there is no adapter_config.json")
    mw.add_common_args(ap)
    args = ap.parse_args(argv)
    tensors, cfg = convert(args.adapter, args.adapter_name, args.trust_pickle, args.lora_alpha)
    mw.save_part(args.output, tensors, "lora", cfg, args.dtype, os.path.basename(os.path.normpath(args.adapter)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except mw.ConvertError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
