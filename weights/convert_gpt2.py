#!/usr/bin/env python3
"""GPT-2-family checkpoints (GPT-2, BioMedLM) -> the text tower of mama.h (SPEC A.2, A.8).

Reads a Hugging Face GPT2LMHeadModel / GPT2Model directory (config.json, model.safetensors
or pytorch_model.bin, sharded or not, vocab.json + merges.txt or tokenizer.json):
  * `transformer.*` (or prefix-less GPT2Model) names -> text_encoder_q.model.base_model.model.transformer.*;
    lm_head.* and the attn.bias / attn.masked_bias buffers are dropped;
  * wpe is cut to --context rows (default 144, SPEC A.2);
  * the six special tokens of A.2 (<|startoftext|> <|padtext|> <|masktext|> <|separatetext|>
    <|unknowntext|> <|keytext|>) get the ids base .. base+5 after the base vocabulary
    (base = largest id of vocab.json + 1): the embedding table grows by six rows drawn from
    N(0, 0.02) with --seed;
  * the tokenizer is written to --tokenizer-out: vocab.json and merges.txt copied
    byte for byte, tokenizer_config.json / special_tokens_map.json / added_tokens.json
    listing the added tokens with their ids.  mama.h's mama_tokenizer_load(dir) reads
    vocab.json + merges.txt and appends the six tokens after the largest id in the same
    order, so both sides agree (tests/test_convert.py checks it).

    python3 weights/convert_gpt2.py path/to/BioMedLM -o text.safetensors --tokenizer-out biomedlm_tok
"""
import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mama_weights as mw  # noqa: E402

BLOCK = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
         "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
         "mlp.c_proj.bias"]


def read_vocab(src):
    """(vocab dict, merges text, where) from a directory with vocab.json + merges.txt or a
    tokenizer.json."""
    d = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    v, m = os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")
    if os.path.exists(v) and os.path.exists(m):
        with open(m, encoding="utf-8") as f:
            merges = f.read()
        return mw.read_json(v), merges, (v, m)
    tj = os.path.join(d, "tokenizer.json")
    if os.path.exists(tj):
        j = mw.read_json(tj)
        model = j.get("model", {})
        if model.get("type") != "BPE":
            raise mw.ConvertError("%s: not a BPE tokenizer" % tj)
        merges = ["#version: 0.2"]
        for p in model.get("merges", []):
            merges.append(p if isinstance(p, str) else p[0] + " " + p[1])
        vocab = dict(model["vocab"])
        for t in j.get("added_tokens", []):        # <|endoftext|> lives here in some exports
            vocab.setdefault(t["content"], t["id"])
        return vocab, "\n".join(merges) + "\n", None
    raise mw.ConvertError("%s: no vocab.json + merges.txt or tokenizer.json" % d)


def write_tokenizer(out_dir, vocab, merges, files, base, eos_id, context):
    """The converted tokenizer: the base files plus the added tokens at base .. base+5."""
    os.makedirs(out_dir, exist_ok=True)
    if files:
        shutil.copyfile(files[0], os.path.join(out_dir, "vocab.json"))
        shutil.copyfile(files[1], os.path.join(out_dir, "merges.txt"))
    else:
        with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
            f.write(merges)
    added = {mw.EOS_TOKEN: eos_id}
    for i, t in enumerate(mw.SPECIAL_TOKENS):
        added[t] = base + i

    def entry(t):
        return dict(content=t, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)

    bos, pad, mask, sep, unk, key = mw.SPECIAL_TOKENS
    special = dict(bos_token=bos, eos_token=mw.EOS_TOKEN, pad_token=pad, mask_token=mask, sep_token=sep,
                   unk_token=unk, additional_special_tokens=[key])
    cfg = dict(special)
    cfg.update(tokenizer_class="GPT2Tokenizer", add_prefix_space=False, add_bos_token=False,
               model_max_length=context, errors="replace", clean_up_tokenization_spaces=False,
               added_tokens_decoder={str(i): entry(t) for t, i in sorted(added.items(), key=lambda x: x[1])})
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
    with open(os.path.join(out_dir, "added_tokens.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for t, i in added.items() if t != mw.EOS_TOKEN}, f, indent=2)
    mw.log("wrote tokenizer to %s (added tokens at ids %d..%d, eos %d)" % (out_dir, base, base + 5, eos_id))


def convert(path, context=144, heads=None, seed=0, tokenizer_out=None, vocab_src=None, trust_pickle=False,
            text_dropout=None):
    """Returns (tensors with A.8 names, config part)."""
    sd = mw.load_state_dict(path, trust_pickle)
    hf = mw.dir_json(path, "config.json") or {}
    sd, _ = mw.strip_prefix(sd, r"wte\.weight$")
    wte = sd["wte.weight"].float()
    Dt = wte.shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
    if heads is None:
        heads = hf.get("n_head")
    if heads is None:
        heads = Dt // 64
        mw.log("text heads not given and no config.json: %d (64-wide; --text-heads to change)" % heads)
    if hf:
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise mw.ConvertError("activation_function %r: mama.h uses GPT-2's tanh GELU" % act)
        if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
            mw.log("warning: layer_norm_epsilon %g; mama.h uses 1e-5" % hf["layer_norm_epsilon"])
        if not hf.get("scale_attn_weights", True):
            raise mw.ConvertError("scale_attn_weights false is not supported")
    layer_scale = int(bool(hf.get("scale_attn_by_inverse_layer_idx", False)))
    if text_dropout is None:
        text_dropout = hf.get("resid_pdrop", 0.1)
    n_pos = sd["wpe.weight"].shape[0]
    if context > n_pos:
        raise mw.ConvertError("context %d exceeds the checkpoint's %d positions" % (context, n_pos))

    # ---- vocabulary: base ids, then the six added tokens (SPEC A.2)
    vocab, merges, files = read_vocab(vocab_src or path)
    base = max(vocab.values()) + 1
    if mw.EOS_TOKEN not in vocab:
        raise mw.ConvertError("the vocabulary has no %s" % mw.EOS_TOKEN)
    eos_id = vocab[mw.EOS_TOKEN]
    present = [t for t in mw.SPECIAL_TOKENS if t in vocab]
    if present:
        raise mw.ConvertError("the vocabulary already holds %s: convert the original tokenizer, not a converted one"
                              % ", ".join(present))
    rows = wte.shape[0]
    if rows < base:
        raise mw.ConvertError("wte has %d rows but the vocabulary uses ids up to %d" % (rows, base - 1))
    if rows > base:
        mw.log("wte has %d rows, the vocabulary %d ids: dropping the %d unused rows" % (rows, base, rows - base))
        wte = wte[:base]
    g = torch.Generator().manual_seed(seed)
    wte = torch.cat([wte, torch.randn(6, Dt, generator=g) * 0.02], dim=0)

    out = {mw.TEXT_PREFIX + "wte.weight": wte, mw.TEXT_PREFIX + "wpe.weight": sd["wpe.weight"][:context]}
    for i in range(depth):
        for n in BLOCK:
            k = "h.%d.%s" % (i, n)
            if k not in sd:
                raise mw.ConvertError("%s: tensor '%s' missing" % (path, k))
            out[mw.TEXT_PREFIX + k] = sd[k]
    out[mw.TEXT_PREFIX + "ln_f.weight"] = sd["ln_f.weight"]
    out[mw.TEXT_PREFIX + "ln_f.bias"] = sd["ln_f.bias"]
    dropped = sorted(k for k in sd if mw.TEXT_PREFIX + k not in out and k != "wte.weight")
    if dropped:
        kinds = sorted(set(k.split(".")[-1] if k.startswith("h.") else k for k in dropped))
        mw.log("dropped %d tensors (%s)" % (len(dropped), ", ".join(kinds[:6])))
    cfg = dict(text_dim=Dt, text_depth=depth, text_heads=int(heads), context=context,
               text_attn_layer_scale=layer_scale, text_dropout=float(text_dropout))
    cfg.update(mw.special_ids_after(base, eos_id))
    if tokenizer_out:
        write_tokenizer(tokenizer_out, vocab, merges, files, base, eos_id, context)
    mw.log("GPT-2: D %d, depth %d, heads %d, vocab %d + 6, context %d, layer-idx scaling %d" %
           (Dt, depth, heads, base, context, layer_scale))
    return {k: v.float() for k, v in out.items()}, cfg


def add_args(ap):
    ap.add_argument("--context", type=int, default=144, help="token positions kept (default 144)")
    ap.add_argument("--text-heads", type=int, help="attention heads (default: config.json n_head)")
    ap.add_argument("--tokenizer-out", help="write the converted tokenizer files into this directory")
    ap.add_argument("--vocab", help="directory with vocab.json + merges.txt if not beside the weights")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="Hugging Face GPT-2 directory (or a weights file with config.json beside it)")
    ap.add_argument("-o", "--output", required=True)
    add_args(ap)
    ap.add_argument("--seed", type=int, default=0, help="seed of the six new embedding rows (default 0)")
    mw.add_common_args(ap)
    args = ap.parse_args(argv)
    tensors, cfg = convert(args.checkpoint, args.context, args.text_heads, args.seed, args.tokenizer_out, args.vocab,
                           args.trust_pickle)
    mw.save_part(args.output, tensors, "text", cfg, args.dtype, os.path.basename(os.path.normpath(args.checkpoint)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except mw.ConvertError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
