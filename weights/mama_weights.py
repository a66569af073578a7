"""Common pieces of the weight converters: reading checkpoints, the `mama_config`
metadata, the complete list of A.8 tensors a model file must hold, default heads, and
the writer.

A converted model file is a safetensors file with
  * every tensor of SPEC A.8 (vision, text, LoRA in lora mode, heads, BatchNorm buffers,
    `num_batches_tracked` as int64 scalars, `logit_scale` / `local_scale` as scalars);
  * `__metadata__["mama_config"]`: the JSON that mama.h's mama_config_from_json reads
    (`mama_model_load` creates the model from it).
Floating tensors are f32 unless --dtype bf16/f16 is asked for (mama.h converts them to
f32 when loading).

The converters of one tower write *part* files: the same kind of safetensors file with
`__metadata__["mama_part"]` = "vision" | "text" | "lora" | "model" and
`__metadata__["mama_config_part"]` = the config fields that tower determines.  `combine`
merges parts into a complete model, initialising whatever is absent (heads as PyTorch's
defaults, a fresh LoRA pair as SPEC A.5).
"""
import json
import math
import os
import re
import sys

import torch

# The fields of mama.h's mama_config JSON (mama_config_to_json writes exactly these).
CONFIG_FIELDS = [
    "image_size", "patch_size", "vision_dim", "vision_depth", "vision_heads", "registers", "in_chans",
    "text_dim", "text_depth", "text_heads", "vocab_size", "context", "embed_dim", "local_hidden",
    "lora_rank", "lora_alpha", "lora_dropout", "text_dropout", "text_attn_layer_scale", "text_mode",
    "text_pool", "bos_id", "eos_id", "pad_id", "sep_id",
]
FLOAT_FIELDS = ("lora_alpha", "lora_dropout", "text_dropout")
STRING_FIELDS = ("text_mode", "text_pool")

# The paper's settings (SPEC A.1-A.3); a converter overrides what its checkpoint fixes.
PAPER_DEFAULTS = dict(
    image_size=518, patch_size=14, vision_dim=768, vision_depth=12, vision_heads=12, registers=4, in_chans=3,
    text_dim=2560, text_depth=32, text_heads=20, vocab_size=28902, context=144, embed_dim=512,
    local_hidden=2048, lora_rank=8, lora_alpha=32.0, lora_dropout=0.1, text_dropout=0.1,
    text_attn_layer_scale=1, text_mode="lora", text_pool="all",
)

SPECIAL_TOKENS = ["<|startoftext|>", "<|padtext|>", "<|masktext|>", "<|separatetext|>", "<|unknowntext|>",
                  "<|keytext|>"]  # bos, pad, mask, sep, unk, key: ids base .. base+5 (SPEC A.2)
EOS_TOKEN = "<|endoftext|>"

VISION_PREFIX = "img_encoder_q.model."
TEXT_PREFIX = "text_encoder_q.model.base_model.model.transformer."

BN_TRACKED = [
    "img_encoder_q.local_embed.head.1.num_batches_tracked", "img_encoder_q.local_embed.head.4.num_batches_tracked",
    "text_encoder_q.local_embed.head.1.num_batches_tracked", "text_encoder_q.local_embed.head.4.num_batches_tracked",
    "simclr_proj.layers.1.num_batches_tracked", "simclr_proj.layers.4.num_batches_tracked",
]


def log(msg):
    print("mama-convert: " + msg, file=sys.stderr)


class ConvertError(Exception):
    pass


# --------------------------------------------------------------------------------------
# reading checkpoints
# --------------------------------------------------------------------------------------

def torch_load(path, trust_pickle=False):
    """torch.load restricted to tensors and plain containers unless trust_pickle (a
    Lightning checkpoint's hyper_parameters may hold arbitrary objects)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with classes other than tensors/containers
        if not trust_pickle:
            raise ConvertError("%s: cannot be read with weights_only=True (%s); if you trust the file, pass "
                               "--trust-pickle" % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
        return torch.load(path, map_location="cpu", weights_only=False)


def read_safetensors(path):
    from safetensors.torch import load_file
    return load_file(path, device="cpu")


def safetensors_metadata(path):
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def load_state_dict(path, trust_pickle=False, names=("model.safetensors", "pytorch_model.bin")):
    """A state dict from a file (.safetensors, .bin/.pt/.pth/.ckpt) or a directory holding one
    of `names` or a sharded checkpoint (`*.index.json`)."""
    if os.path.isdir(path):
        for n in names:
            p = os.path.join(path, n)
            if os.path.exists(p):
                return load_state_dict(p, trust_pickle)
            idx = p + ".index.json"
            if os.path.exists(idx):
                with open(idx, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
                sd = {}
                for shard in sorted(set(weight_map.values())):
                    sd.update(load_state_dict(os.path.join(path, shard), trust_pickle))
                return sd
        raise ConvertError("%s: no %s (or sharded index) in this directory" % (path, " / ".join(names)))
    if not os.path.exists(path):
        raise ConvertError("%s: no such file" % path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    obj = torch_load(path, trust_pickle)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) and \
            all(torch.is_tensor(v) for v in obj["model"].values()):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ConvertError("%s: not a state dict (got %s)" % (path, type(obj).__name__))
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dir_json(path, name):
    """`name` (e.g. config.json) next to `path` (a directory or a file in it), or None."""
    d = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    p = os.path.join(d, name)
    return read_json(p) if os.path.exists(p) else None


def strip_prefix(sd, anchor_re):
    """Remove the common prefix in front of the first key matching `anchor_re` (a regex
    of what the names look like without a prefix, e.g. r"cls_token$") from every key that
    has it.  Returns (new dict, prefix)."""
    for k in sorted(sd):
        m = re.search(anchor_re, k)
        if m:
            prefix = k[:m.start()]
            if not prefix:
                return dict(sd), ""
            return {kk[len(prefix):]: v for kk, v in sd.items() if kk.startswith(prefix)}, prefix
    raise ConvertError("no tensor named like /%s/ in the checkpoint (first keys: %s)" %
                       (anchor_re, ", ".join(sorted(sd)[:6])))


# --------------------------------------------------------------------------------------
# the config
# --------------------------------------------------------------------------------------

def special_ids_after(base, eos_id):
    """bos, pad, sep ids when the six added tokens follow a base vocabulary of `base` ids."""
    return dict(bos_id=base, pad_id=base + 1, sep_id=base + 3, eos_id=eos_id, vocab_size=base + 6)


def full_config(*parts, **overrides):
    cfg = dict(PAPER_DEFAULTS)
    for p in parts:
        if p:
            cfg.update({k: v for k, v in p.items() if v is not None})
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    if "bos_id" not in cfg:
        base = cfg["vocab_size"] - 6
        cfg.update(special_ids_after(base, base - 1))
    return normalise_config(cfg)


def normalise_config(cfg):
    out = {}
    for k in CONFIG_FIELDS:
        if k not in cfg:
            raise ConvertError("config field '%s' is missing" % k)
        v = cfg[k]
        if k in FLOAT_FIELDS:
            v = float(v)
        elif k in STRING_FIELDS:
            v = str(v)
        else:
            v = int(v)
        out[k] = v
    if out["text_mode"] not in ("full", "lora", "frozen"):
        raise ConvertError("text_mode must be full, lora or frozen (got %r)" % out["text_mode"])
    if out["text_pool"] not in ("all", "real"):
        raise ConvertError("text_pool must be all or real (got %r)" % out["text_pool"])
    for a, b in (("image_size", "patch_size"), ("vision_dim", "vision_heads"), ("text_dim", "text_heads")):
        if out[b] <= 0 or out[a] % out[b]:
            raise ConvertError("%s %d is not a multiple of %s %d" % (a, out[a], b, out[b]))
    for k in ("bos_id", "eos_id", "pad_id", "sep_id"):
        if not 0 <= out[k] < out["vocab_size"]:
            raise ConvertError("%s %d outside the vocabulary of %d" % (k, out[k], out["vocab_size"]))
    return out


def config_json(cfg):
    return json.dumps({k: cfg[k] for k in CONFIG_FIELDS}, separators=(",", ":"))


# --------------------------------------------------------------------------------------
# the tensors of a model (SPEC A.8), in mama.h's order
# --------------------------------------------------------------------------------------

def local_head_shapes(prefix, din, hidden, E):
    return [
        (prefix + "head.0.weight", (hidden, din, 1)), (prefix + "head.0.bias", (hidden,)),
        (prefix + "head.1.weight", (hidden,)), (prefix + "head.1.bias", (hidden,)),
        (prefix + "head.1.running_mean", (hidden,)), (prefix + "head.1.running_var", (hidden,)),
        (prefix + "head.3.weight", (E, hidden, 1)), (prefix + "head.3.bias", (E,)),
        (prefix + "head.4.running_mean", (E,)), (prefix + "head.4.running_var", (E,)),
    ]


def vision_shapes(cfg, grid=None):
    D, P = cfg["vision_dim"], cfg["patch_size"]
    g = grid if grid is not None else cfg["image_size"] // P
    vp = VISION_PREFIX
    out = [(vp + "cls_token", (1, 1, D)), (vp + "register_tokens", (1, cfg["registers"], D)),
           (vp + "pos_embed", (1, 1 + g * g, D)), (vp + "mask_token", (1, D)),
           (vp + "patch_embed.proj.weight", (D, cfg["in_chans"], P, P)), (vp + "patch_embed.proj.bias", (D,))]
    for i in range(cfg["vision_depth"]):
        b = "%sblocks.%d." % (vp, i)
        out += [(b + "norm1.weight", (D,)), (b + "norm1.bias", (D,)),
                (b + "attn.qkv.weight", (3 * D, D)), (b + "attn.qkv.bias", (3 * D,)),
                (b + "attn.proj.weight", (D, D)), (b + "attn.proj.bias", (D,)), (b + "ls1.gamma", (D,)),
                (b + "norm2.weight", (D,)), (b + "norm2.bias", (D,)),
                (b + "mlp.fc1.weight", (4 * D, D)), (b + "mlp.fc1.bias", (4 * D,)),
                (b + "mlp.fc2.weight", (D, 4 * D)), (b + "mlp.fc2.bias", (D,)), (b + "ls2.gamma", (D,))]
    out += [(vp + "norm.weight", (D,)), (vp + "norm.bias", (D,))]
    return out


def text_shapes(cfg):
    Dt, tp = cfg["text_dim"], TEXT_PREFIX
    out = [(tp + "wte.weight", (cfg["vocab_size"], Dt)), (tp + "wpe.weight", (cfg["context"], Dt))]
    for i in range(cfg["text_depth"]):
        b = "%sh.%d." % (tp, i)
        out += [(b + "ln_1.weight", (Dt,)), (b + "ln_1.bias", (Dt,)),
                (b + "attn.c_attn.weight", (Dt, 3 * Dt)), (b + "attn.c_attn.bias", (3 * Dt,))]
        if cfg["text_mode"] == "lora":
            out += [(b + "attn.c_attn.lora_A.default.weight", (cfg["lora_rank"], Dt)),
                    (b + "attn.c_attn.lora_B.default.weight", (3 * Dt, cfg["lora_rank"]))]
        out += [(b + "attn.c_proj.weight", (Dt, Dt)), (b + "attn.c_proj.bias", (Dt,)),
                (b + "ln_2.weight", (Dt,)), (b + "ln_2.bias", (Dt,)),
                (b + "mlp.c_fc.weight", (Dt, 4 * Dt)), (b + "mlp.c_fc.bias", (4 * Dt,)),
                (b + "mlp.c_proj.weight", (4 * Dt, Dt)), (b + "mlp.c_proj.bias", (Dt,))]
    out += [(tp + "ln_f.weight", (Dt,)), (tp + "ln_f.bias", (Dt,))]
    return out


def head_shapes(cfg):
    D, Dt, E, H = cfg["vision_dim"], cfg["text_dim"], cfg["embed_dim"], cfg["local_hidden"]
    out = [("img_encoder_q.global_embed.weight", (E, D)), ("img_encoder_q.global_embed.bias", (E,))]
    out += local_head_shapes("img_encoder_q.local_embed.", D, H, E)
    out += [("text_encoder_q.global_embed.weight", (E, Dt)), ("text_encoder_q.global_embed.bias", (E,))]
    out += local_head_shapes("text_encoder_q.local_embed.", Dt, H, E)
    out += [("simclr_proj.layers.0.weight", (D, D)), ("simclr_proj.layers.1.weight", (D,)),
            ("simclr_proj.layers.1.bias", (D,)), ("simclr_proj.layers.1.running_mean", (D,)),
            ("simclr_proj.layers.1.running_var", (D,)), ("simclr_proj.layers.3.weight", (E, D)),
            ("simclr_proj.layers.4.weight", (E,)), ("simclr_proj.layers.4.bias", (E,)),
            ("simclr_proj.layers.4.running_mean", (E,)), ("simclr_proj.layers.4.running_var", (E,)),
            ("logit_scale", ()), ("local_scale", ())]
    return out


def model_shapes(cfg):
    """Every float tensor of a model with config cfg: [(name, shape)] (mama.h's
    mama_model_param order within each tower)."""
    return vision_shapes(cfg) + text_shapes(cfg) + head_shapes(cfg)


# --------------------------------------------------------------------------------------
# default initialisation of what a checkpoint lacks
# --------------------------------------------------------------------------------------

def default_heads(cfg, seed=0):
    """The heads as PyTorch initialises them (SPEC A.5 "heads as PyTorch's defaults"):
    nn.Linear / 1x1 nn.Conv1d kaiming-uniform(a=sqrt 5) weights and U(+-1/sqrt(fan_in))
    biases, BatchNorm weight 1 bias 0 running mean 0 var 1 (num_batches_tracked 0),
    logit_scale = local_scale = log(1/0.07)."""
    import torch.nn as nn
    torch.manual_seed(seed)
    D, Dt, E, H = cfg["vision_dim"], cfg["text_dim"], cfg["embed_dim"], cfg["local_hidden"]

    def local(din):
        return nn.Sequential(nn.Conv1d(din, H, 1), nn.BatchNorm1d(H), nn.ReLU(), nn.Conv1d(H, E, 1),
                             nn.BatchNorm1d(E, affine=False))

    mods = {"img_encoder_q.global_embed.": nn.Linear(D, E), "img_encoder_q.local_embed.head.": local(D),
            "text_encoder_q.global_embed.": nn.Linear(Dt, E), "text_encoder_q.local_embed.head.": local(Dt),
            "simclr_proj.layers.": nn.Sequential(nn.Linear(D, D, bias=False), nn.BatchNorm1d(D), nn.ReLU(),
                                                 nn.Linear(D, E, bias=False), nn.BatchNorm1d(E))}
    out = {}
    for prefix, m in mods.items():
        for k, v in m.state_dict().items():
            out[prefix + k] = v.detach().clone()
    out["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    out["local_scale"] = torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    return out


def fresh_lora(cfg, seed=0):
    """A new LoRA pair per c_attn (SPEC A.5): A kaiming-uniform(a=sqrt 5) =
    U(+-1/sqrt(in)), B zero, so the adapted model starts equal to the base model."""
    g = torch.Generator().manual_seed(seed + 1)
    Dt, r = cfg["text_dim"], cfg["lora_rank"]
    out = {}
    bound = 1.0 / math.sqrt(Dt)
    for i in range(cfg["text_depth"]):
        b = "%sh.%d.attn.c_attn." % (TEXT_PREFIX, i)
        out[b + "lora_A.default.weight"] = (torch.rand(r, Dt, generator=g) * 2 - 1) * bound
        out[b + "lora_B.default.weight"] = torch.zeros(3 * Dt, r)
    return out


# --------------------------------------------------------------------------------------
# pos_embed resampling (SPEC A.1): bicubic, antialias, no offset
# --------------------------------------------------------------------------------------

def resample_pos_embed(pos, grid):
    """pos [1, 1+g0*g0, D] -> [1, 1+grid*grid, D]; the cls row is kept, the patch part is
    resampled with F.interpolate(bicubic, antialias=True, align_corners=False), the rule
    of SPEC A.1 (and what mama.h does at load time)."""
    import torch.nn.functional as F
    n0 = pos.shape[1] - 1
    g0 = int(round(math.sqrt(n0)))
    if g0 * g0 != n0:
        raise ConvertError("pos_embed has %d patch positions, not a square grid" % n0)
    if g0 == grid:
        return pos
    D = pos.shape[2]
    p = pos[:, 1:].float().reshape(1, g0, g0, D).permute(0, 3, 1, 2)
    p = F.interpolate(p, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    p = p.permute(0, 2, 3, 1).reshape(1, grid * grid, D)
    return torch.cat([pos[:, :1].float(), p], dim=1).to(pos.dtype)


# --------------------------------------------------------------------------------------
# parts and the writer
# --------------------------------------------------------------------------------------

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def _prepare(tensors, dtype):
    out = {}
    dt = DTYPES[dtype]
    for k, v in tensors.items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(dt)
        out[k] = v.contiguous()
    return out


def save_part(path, tensors, part, cfg_part, dtype="f32", source=""):
    from safetensors.torch import save_file
    meta = {"mama_part": part, "mama_config_part": json.dumps(cfg_part, separators=(",", ":"))}
    if source:
        meta["mama_source"] = source
    save_file(_prepare(tensors, dtype), path, metadata=meta)
    log("wrote %s (%s part, %d tensors)" % (path, part, len(tensors)))


def load_part(path, want=None):
    meta = safetensors_metadata(path)
    part = meta.get("mama_part")
    if part is None and "mama_config" in meta:
        part = "model"
    if part is None:
        raise ConvertError("%s: not a part written by weights/convert*.py (no mama_part metadata)" % path)
    if want and part != want and part != "model":
        raise ConvertError("%s: is a %s part, expected %s" % (path, part, want))
    cfg = json.loads(meta.get("mama_config_part") or meta.get("mama_config") or "{}")
    return read_safetensors(path), cfg, part


def check_complete(tensors, cfg, allow_pos_grid=True):
    """Every tensor of model_shapes(cfg) present with its shape (pos_embed may hold
    another square grid when allow_pos_grid: mama.h resamples it at load time); no
    extra tensors besides num_batches_tracked."""
    want = dict(model_shapes(cfg))
    problems = []
    for name, shape in want.items():
        if name not in tensors:
            problems.append("missing %s %s" % (name, list(shape)))
            continue
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            if name == VISION_PREFIX + "pos_embed" and allow_pos_grid and len(got) == 3 and \
                    got[2] == shape[2] and int(round(math.sqrt(got[1] - 1))) ** 2 == got[1] - 1:
                continue
            problems.append("%s has shape %s, the config needs %s" % (name, list(got), list(shape)))
    extra = sorted(set(tensors) - set(want) - set(BN_TRACKED))
    if extra:
        problems.append("unexpected tensors: " + ", ".join(extra[:8]) + (" ..." if len(extra) > 8 else ""))
    if problems:
        raise ConvertError("the assembled model does not match its config:\n  " + "\n  ".join(problems))


def write_model(path, tensors, cfg, dtype="f32", source=""):
    """Write a complete model file (checked against cfg) with the mama_config metadata."""
    from safetensors.torch import save_file
    cfg = normalise_config(cfg)
    tensors = dict(tensors)
    for n in BN_TRACKED:
        if n not in tensors:
            tensors[n] = torch.tensor(0, dtype=torch.int64)
        else:
            tensors[n] = tensors[n].reshape(()).to(torch.int64)
    for n in ("logit_scale", "local_scale"):
        if n in tensors:
            tensors[n] = tensors[n].reshape(())
    check_complete(tensors, cfg)
    meta = {"mama_config": config_json(cfg), "format": "pt"}
    if source:
        meta["mama_source"] = source
    tmp = path + ".tmp"
    save_file(_prepare(tensors, dtype), tmp, metadata=meta)
    os.replace(tmp, path)
    log("wrote %s (%d tensors, %s, text_mode %s)" % (path, len(tensors), dtype, cfg["text_mode"]))
    return cfg


def assemble(vision=None, text=None, lora=None, base=None, overrides=None, seed=0):
    """Merge parts (each (tensors, cfg_part) or None) into (tensors, cfg).  `base` is a
    complete model whose tensors fill whatever the other parts do not give (e.g. heads of
    a trained checkpoint).  Missing heads are initialised as PyTorch's defaults, a
    missing LoRA pair (text_mode lora) as SPEC A.5."""
    overrides = dict(overrides or {})
    tensors, parts = {}, []
    for p in (base, vision, text, lora):
        if p is not None:
            tensors.update(p[0])
            parts.append(p[1])
    cfg = full_config(*parts, **overrides)
    if lora is not None and "text_mode" not in overrides:
        cfg["text_mode"] = "lora"
    if lora is None and cfg["text_mode"] == "lora" and not any(".lora_A." in k for k in tensors):
        log("no LoRA adapter given: starting a fresh LoRA pair (rank %d, A kaiming-uniform, B zero)" %
            cfg["lora_rank"])
        tensors.update(fresh_lora(cfg, seed))
    if cfg["text_mode"] != "lora":
        tensors = {k: v for k, v in tensors.items() if ".lora_A." not in k and ".lora_B." not in k}
    heads = default_heads(cfg, seed)
    missing = [k for k in heads if k not in tensors]
    if missing:
        log("initialising %d head tensors as PyTorch's defaults (seed %d)" % (len(missing), seed))
        for k in missing:
            tensors[k] = heads[k]
    return tensors, cfg


def add_common_args(ap):
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32",
                    help="floating dtype of the output (default f32; mama.h converts bf16/f16 to f32)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="allow torch.load to unpickle arbitrary objects (only for files you trust)")


def add_model_args(ap):
    """Options that shape the complete model (heads, text mode, LoRA hyper-parameters)."""
    ap.add_argument("--embed-dim", type=int, help="E (default 512)")
    ap.add_argument("--local-hidden", type=int, help="local head hidden width (default 2048)")
    ap.add_argument("--text-mode", choices=["full", "lora", "frozen"],
                    help="which text weights train (default: lora, a fresh pair when no adapter is given)")
    ap.add_argument("--text-pool", choices=["all", "real"], help="text pooling (default all, the reference)")
    ap.add_argument("--lora-rank", type=int, help="rank of a fresh LoRA pair (default 8)")
    ap.add_argument("--lora-alpha", type=float, help="LoRA alpha (default 32)")
    ap.add_argument("--lora-dropout", type=float, help="LoRA dropout (default 0.1)")
    ap.add_argument("--text-dropout", type=float, help="GPT-2 dropouts (default: the checkpoint's, else 0.1)")
    ap.add_argument("--image-size", type=int, help="input size (pos_embed is resampled if the grid differs)")
    ap.add_argument("--resample-pos", action="store_true",
                    help="resample pos_embed to the --image-size grid here (default: keep it, mama.h resamples "
                         "it once at load time)")
    ap.add_argument("--seed", type=int, default=0, help="seed for initialised tensors (default 0)")


def model_overrides(args):
    keys = ("embed_dim", "local_hidden", "text_mode", "text_pool", "lora_rank", "lora_alpha", "lora_dropout",
            "text_dropout", "image_size")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def finish_model(path, tensors, cfg, args, source=""):
    if getattr(args, "resample_pos", False):
        name = VISION_PREFIX + "pos_embed"
        grid = cfg["image_size"] // cfg["patch_size"]
        if tensors[name].shape[1] != 1 + grid * grid:
            log("resampling pos_embed %s -> grid %dx%d" % (list(tensors[name].shape), grid, grid))
            tensors[name] = resample_pos_embed(tensors[name], grid)
    return write_model(path, tensors, cfg, getattr(args, "dtype", "f32"), source)


def combine_main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="convert.py combine",
                                 description="Assemble a complete mama.h model file from converted parts.")
    ap.add_argument("--vision", help="vision part (convert.py dinov2)")
    ap.add_argument("--text", help="text part (convert.py gpt2)")
    ap.add_argument("--lora", help="LoRA part (convert.py peft)")
    ap.add_argument("--base", help="a complete model file whose tensors fill the gaps (e.g. trained heads)")
    ap.add_argument("-o", "--output", required=True)
    add_common_args(ap)
    add_model_args(ap)
    args = ap.parse_args(argv)
    parts = {}
    for key in ("vision", "text", "lora", "base"):
        p = getattr(args, key)
        if p:
            t, c, _ = load_part(p, None if key == "base" else key)
            parts[key] = (t, c)
    if "base" not in parts and not ("vision" in parts and "text" in parts):
        raise ConvertError("combine needs --vision and --text (or a --base model)")
    tensors, cfg = assemble(parts.get("vision"), parts.get("text"), parts.get("lora"), parts.get("base"),
                            model_overrides(args), args.seed)
    finish_model(args.output, tensors, cfg, args, source="combine")
    return 0
