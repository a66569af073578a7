#!/usr/bin/env python3
"""Tests of the weight converters (weights/) and the dataset converters (tools/).

    python3 tests/test_convert.py                    # from the repository root
    python3 tests/test_convert.py --write-fixtures   # also refresh tests/fixtures/convert/
    python3 tests/test_convert.py --keep DIR         # keep the generated files in DIR

Nothing is downloaded: small random models are built with the same code paths as the
real ones (transformers GPT2LMHeadModel and Dinov2WithRegistersModel, a PEFT LoRA
adapter, a byte-level BPE trained with `tokenizers`, a torch-hub-style DINOv2 state dict
and a fake Lightning checkpoint of tests/ref/mama_ref.py's model), converted with
weights/convert.py, then run through mama.h (build/test_weights, compiled here when
missing or stale) and compared with the PyTorch forward on the same inputs:
relative error = max|C - ref| / max|ref| < 1e-4 (text: real-token positions only, since
padded keys are masked and padded queries differ).  The dataset converters run on small
made-up tables and a synthetic DICOM; their manifests are also loaded by mama.h.

Prints "PASS name: what, worst err" / "FAIL ..." lines, "SKIP ..." when a package is
missing (exit 0 if torch or transformers are not importable), and exits non-zero on a
failure.  Needs: torch, numpy, safetensors, transformers; optional: peft, tokenizers,
pydicom (their tests are skipped without them), gcc (the C comparisons).
"""
import argparse
import csv
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "convert")
EXE = os.path.join(ROOT, "build", "test_weights")

RESULTS = {"pass": 0, "fail": 0, "skip": 0}


def report(ok, name, what, err=None):
    tail = "" if err is None else ", worst err=%.3g" % err
    print("%s %s: %s%s" % ("PASS" if ok else "FAIL", name, what, tail), flush=True)
    RESULTS["pass" if ok else "fail"] += 1
    return ok


def skip(name, why):
    print("SKIP %s: %s" % (name, why), flush=True)
    RESULTS["skip"] += 1


try:
    import numpy as np
    import torch
    import transformers  # noqa: F401
    from safetensors.torch import load_file, save_file
except Exception as e:  # pragma: no cover - environment without the packages
    print("SKIP test_convert: torch/transformers/safetensors not importable (%s)" % e)
    sys.exit(0)


def have(mod):
    try:
        __import__(mod)
        return True
    except Exception:
        return False


sys.path.insert(0, os.path.join(ROOT, "weights"))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import mama_weights as mw  # noqa: E402
import mama_ref  # noqa: E402

SIX = mw.SPECIAL_TOKENS
EOS = mw.EOS_TOKEN

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def run(cmd, **kw):
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return p


def convert(*args):
    return run([sys.executable, os.path.join(ROOT, "weights", "convert.py")] + [str(a) for a in args])


def build_c():
    """build/test_weights, rebuilt when a header or the test is newer; None without gcc."""
    srcs = [os.path.join(ROOT, "tests", "test_weights.c"), os.path.join(ROOT, "mama.h"),
            os.path.join(ROOT, "tests", "test_util.h")]
    if os.path.exists(EXE) and os.path.getmtime(EXE) >= max(os.path.getmtime(s) for s in srcs):
        return EXE
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None
    os.makedirs(os.path.dirname(EXE), exist_ok=True)
    run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fopenmp", "-I.",
         "tests/test_weights.c", "-o", EXE, "-lm"])
    return EXE


def c_encode(model, inputs, out):
    run([EXE, "encode", model, inputs, out])
    return {k: v.double() for k, v in load_file(out).items()}


def rel_err(a, b, mask=None):
    """max|a-b| / max|b| (over positions where mask [B,T] is set, if given)."""
    a, b = a.double(), b.double()
    if mask is not None:
        m = mask.bool()
        a, b = a[m], b[m]
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def randomize(model, seed, lora_std=None):
    """Every tensor non-trivial (HF's init leaves LayerNorms at 1/0, biases at 0 and
    LayerScale at 1, which would hide a swapped tensor)."""
    from transformers.pytorch_utils import Conv1D
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            last = n.rsplit(".", 1)[-1]
            mod = model.get_submodule(n.rsplit(".", 1)[0]) if "." in n else model
            if ".lora_B." in n or ".lora_A." in n:
                std = lora_std if ".lora_B." in n and lora_std else 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif p.dim() == 1 and last == "weight" or "lambda1" in n:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif last == "bias":
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "wte" in n or "wpe" in n:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "token" in n or "position" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                fan_in = p.shape[0] if isinstance(mod, Conv1D) else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


# --------------------------------------------------------------------------------------
# the tiny models
# --------------------------------------------------------------------------------------

WORDS = ("breast mammogram mass calcification density dense fat scattered fibroglandular heterogeneously extremely "
         "benign suspicious malignancy biopsy negative additional imaging left right bilateral view screening "
         "diagnostic patient years old caucasian white african american asian hispanic latino findings impressions "
         "category assessment procedure reported reason composition irregular oval round grouped pleomorphic "
         "amorphous segmental regional linear present shows that the of and with is a an this").split()

AWKWARD = ["", " ", "Hello  world", "tabs\tand\nnewlines", "It's we're they've", "12345 67 8.9 BI-RADS 4A",
           "caf\u00e9 na\u00efve \u00fcber", "\u4e73\u817a\u764c \U0001f600 emoji",
           "<|startoftext|>hi<|separatetext|> there<|endoftext|>", "<<|keytext|>>", "<|padtext|",
           "x<|masktext|>y<|unknowntext|>", " <|endoftext|> ", "mammography" * 20]


def caption(rng):
    d = rng.choice([1, 2, 3, 4])
    dens = ["almost entirely fat", "scattered fibroglandular densities", "heterogeneously dense",
            "extremely dense"][d - 1]
    return ("Procedure reported: MG %s Bilateral; Reason for procedure: %s; Patient info: This patient is %s, "
            "Non-Hispanic or Latino, and %d years old.  Image info: This is a 2D full-field digital mammogram of "
            "the %s breast with %s view.  Breast composition: The breast is %s.  Findings: The mammogram shows "
            "that %s.  Impressions: BI-RADS Category %d: %s. Overall Assessment: %s. " %
            (rng.choice(["Screening", "Diagnostic"]), rng.choice(["screening", "diagnostic"]),
             rng.choice(["Caucasian or White", "African American  or Black", "Asian"]), rng.randint(30, 90),
             rng.choice(["left", "right"]), rng.choice(["CC", "MLO"]), dens,
             " ".join(rng.choice(WORDS) for _ in range(5)), rng.randint(0, 6),
             " ".join(rng.choice(WORDS) for _ in range(3)), rng.choice(WORDS)))


def caption_input(c):
    return "<|startoftext|>" + c.replace(".", "<|separatetext|>").replace(";", "<|separatetext|>") + EOS


def make_tokenizer(d):
    from tokenizers import ByteLevelBPETokenizer
    rng = random.Random(7)
    corpus = [caption(rng) for _ in range(300)] + [" ".join(rng.choice(WORDS) for _ in range(12))
                                                    for _ in range(300)]
    bt = ByteLevelBPETokenizer(add_prefix_space=False)
    bt.train_from_iterator(corpus, vocab_size=300, min_frequency=2, show_progress=False, special_tokens=[EOS])
    bt.save_model(d)
    return corpus


def hf_tokenizer(d):
    """The tokenizer the way Hugging Face `tokenizers` reads the converted directory: BPE
    from vocab.json + merges.txt, ByteLevel (no prefix space), <|endoftext|> then the six
    special tokens added."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    tok = Tokenizer(models.BPE.from_file(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SIX])
    return tok


def make_gpt2(d, vocab_size, layer_scale, seed=1):
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=vocab_size, n_positions=64,
                     scale_attn_by_inverse_layer_idx=layer_scale, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = "eager"
    m = GPT2LMHeadModel(cfg)
    randomize(m, seed)
    m.save_pretrained(d)
    return m


def make_dinov2(d, image_size, seed=2):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    cfg = Dinov2WithRegistersConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, image_size=image_size,
                                    patch_size=14, num_register_tokens=4, layerscale_value=1.0)
    cfg._attn_implementation = "eager"
    m = Dinov2WithRegistersModel(cfg)
    randomize(m, seed)
    m.save_pretrained(d)
    return m


def make_lora(base, d, seed=3):
    """A PEFT LoRA adapter on c_attn with random non-zero A and B."""
    import copy
    from peft import LoraConfig, get_peft_model
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"],
                                                        lora_dropout=0.0, fan_in_fan_out=True))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if ".lora_A." in n:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    pm.save_pretrained(d)
    return pm


def text_batch(tok, context, pad_id, B=3, seed=11):
    rng = random.Random(seed)
    ids = torch.full((B, context), pad_id, dtype=torch.int64)
    mask = torch.zeros(B, context, dtype=torch.int64)
    texts = [caption(rng) for _ in range(B)]
    texts[1] = texts[1][:16]          # a short one: padding
    for b, t in enumerate(texts):
        e = tok.encode(caption_input(t), add_special_tokens=False).ids[:context]
        ids[b, :len(e)] = torch.tensor(e)
        mask[b, :len(e)] = 1
    assert mask[1].sum() < context and mask[0].sum() == context
    return ids, mask


def hf_text_hidden(base_model, wte_rows, adapter_dir, ids, mask):
    """transformers (+ PEFT) forward in float64: base GPT-2 with the six added embedding
    rows of the converted file, the adapter loaded by PEFT."""
    import copy
    m = copy.deepcopy(base_model)
    V = m.get_input_embeddings().weight.shape[0]
    m.resize_token_embeddings(V + 6)
    with torch.no_grad():
        m.get_input_embeddings().weight[V:] = wte_rows
    if adapter_dir:
        from peft import PeftModel
        m = PeftModel.from_pretrained(m, adapter_dir)
        tr = m.base_model.model.transformer
    else:
        tr = m.transformer
    tr = tr.double().eval()
    with torch.no_grad():
        return tr(input_ids=ids, attention_mask=mask).last_hidden_state


def hf_vision(model, images):
    m = model.double().eval()
    with torch.no_grad():
        o = m(pixel_values=images.double(), output_hidden_states=True)
    R = model.config.num_register_tokens
    return o.hidden_states[-1], o.last_hidden_state[:, 1 + R:]


def ref_model(path):
    """tests/ref/mama_ref.py's model loaded (strictly) from a converted file."""
    cfg = mama_ref.read_config(path)
    m = mama_ref.MaMARef(cfg, text_pool=cfg.get("text_pool", "all"))
    mama_ref.load_state(m, {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()})
    return m.double().eval()


def ref_forward(m, images, ids, mask):
    with torch.no_grad():
        out = {}
        if images is not None:
            xp, pn = m.img_encoder_q.model(images.double())
            img = m.encode_image(images.double())
            out.update(prenorm=xp, patch_norm=pn, img_emb=img["emb"], pooled=img["pooled"])
        if ids is not None:
            t = m.encode_text(ids, mask)
            out.update(text_hidden=t["hidden"], txt_emb=t["emb"])
        return out


def write_inputs(path, images=None, ids=None, mask=None):
    d = {}
    if images is not None:
        d["images"] = images.float().contiguous()
    if ids is not None:
        d["input_ids"] = ids.contiguous()
        d["attention_mask"] = mask.contiguous()
    save_file(d, path)


def compare(name, what, got, want, mask=None, tol=1e-4):
    e = rel_err(got, want, mask)
    return report(e < tol, name, what, e)


# --------------------------------------------------------------------------------------
# weight tests
# --------------------------------------------------------------------------------------


def test_weights(tmp, write_fixtures):
    if not (have("tokenizers") and have("peft")):
        skip("weights", "needs the `tokenizers` and `peft` packages (pip install tokenizers peft)")
        return
    c_ok = build_c() is not None
    if not c_ok:
        skip("c_side", "no C compiler: the mama.h comparisons are skipped")
    j = lambda *p: os.path.join(tmp, *p)  # noqa: E731
    # ---- originals
    gpt2_dir, dino_dir, dino84_dir, adapter_dir = j("gpt2"), j("dinov2"), j("dinov2_84"), j("adapter")
    os.makedirs(gpt2_dir)
    make_tokenizer(gpt2_dir)
    V = len(json.load(open(os.path.join(gpt2_dir, "vocab.json"), encoding="utf-8")))
    gpt2 = make_gpt2(gpt2_dir, V, layer_scale=True)
    lora_model = make_lora(gpt2, adapter_dir)
    dino = make_dinov2(dino_dir, 56)
    dino84 = make_dinov2(dino84_dir, 84, seed=5)
    report(True, "originals", "tiny GPT-2 (vocab %d, ctx 64), Dinov2WithRegisters (56 and 84 px), PEFT LoRA r=4 "
           "built and saved with save_pretrained" % V)

    # ---- A: Hugging Face DINOv2 + GPT-2 + PEFT LoRA in one step
    tok_dir, model_a = j("tok"), j("model_a.safetensors")
    convert("model", "--dinov2", dino_dir, "--gpt2", gpt2_dir, "--peft", adapter_dir, "--tokenizer-out", tok_dir,
            "--context", 32, "--embed-dim", 24, "--local-hidden", 40, "-o", model_a)
    sd_a = load_file(model_a)
    cfg_a = mama_ref.read_config(model_a)
    base = V
    ok = (cfg_a["vocab_size"] == base + 6 and cfg_a["bos_id"] == base and cfg_a["pad_id"] == base + 1 and
          cfg_a["sep_id"] == base + 3 and cfg_a["eos_id"] == json.load(open(j("tok", "vocab.json")))[EOS] and
          cfg_a["text_mode"] == "lora" and cfg_a["lora_rank"] == 4 and cfg_a["lora_alpha"] == 16 and
          cfg_a["text_attn_layer_scale"] == 1 and cfg_a["context"] == 32 and cfg_a["registers"] == 4 and
          cfg_a["vision_heads"] == 3 and cfg_a["text_heads"] == 2)
    report(ok, "config_hf", "mama_config of the converted HF model: vocab %d = base %d + 6, bos %d pad %d sep %d "
           "eos %d, lora r4 a16, layer scale, ctx 32" % (cfg_a["vocab_size"], base, cfg_a["bos_id"],
                                                          cfg_a["pad_id"], cfg_a["sep_id"], cfg_a["eos_id"]))
    ref_a = mama_ref.MaMARef(cfg_a).state_dict()
    same = set(ref_a) == set(sd_a) and all(tuple(ref_a[k].shape) == tuple(sd_a[k].shape) for k in ref_a)
    report(same, "names_shapes", "converted tensor names/shapes == mama_ref.MaMARef(config).state_dict() (%d tensors)"
           % len(sd_a))
    # originals vs converted tensors, exactly
    hf = dino.state_dict()
    e = 0.0
    for i in range(2):
        q, k, v = (hf["encoder.layer.%d.attention.%s_proj.weight" % (i, x)] for x in "qkv")
        e = max(e, float((sd_a["img_encoder_q.model.blocks.%d.attn.qkv.weight" % i] - torch.cat([q, k, v])).abs().max()))
        e = max(e, float((sd_a["img_encoder_q.model.blocks.%d.ls2.gamma" % i] -
                          hf["encoder.layer.%d.layer_scale2.lambda1" % i]).abs().max()))
    tp = mw.TEXT_PREFIX
    g = gpt2.state_dict()
    e = max(e, float((sd_a[tp + "wte.weight"][:V] - g["transformer.wte.weight"]).abs().max()))
    e = max(e, float((sd_a[tp + "wpe.weight"] - g["transformer.wpe.weight"][:32]).abs().max()))
    e = max(e, float((sd_a[tp + "h.1.attn.c_attn.weight"] - g["transformer.h.1.attn.c_attn.weight"]).abs().max()))
    new = sd_a[tp + "wte.weight"][V:]
    report(e == 0 and new.shape == (6, 32) and 0.005 < float(new.std()) < 0.05, "tensors_exact",
           "qkv = cat(q,k,v), lambda1 -> ls gamma, wte rows, wpe[:32], c_attn copied exactly; 6 new rows std %.3f"
           % float(new.std()), e)
    heads_ok = (float(sd_a["logit_scale"]) == float(torch.tensor(math.log(1 / 0.07))) and
                bool((sd_a["img_encoder_q.local_embed.head.1.weight"] == 1).all()) and
                bool((sd_a["simclr_proj.layers.4.running_var"] == 1).all()) and
                float(sd_a["img_encoder_q.global_embed.weight"].abs().max()) <= 1 / math.sqrt(48) and
                int(sd_a["text_encoder_q.local_embed.head.4.num_batches_tracked"]) == 0)
    report(heads_ok, "default_heads", "absent heads initialised as PyTorch defaults (BN 1/0/0/1, "
           "logit_scale log(1/0.07), linear U(+-1/sqrt(fan_in)))")

    # tokenizer: C vs tokenizers vs transformers
    tok = hf_tokenizer(tok_dir)
    ids_six = [tok.token_to_id(s) for s in SIX]
    report(ids_six == list(range(base, base + 6)), "tokenizer_added_ids",
           "tokenizers on the converted files: the six tokens take ids %d..%d" % (base, base + 5))
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(tok_dir)
        rng = random.Random(3)
        cap = caption(rng)
        a_ids = at.encode(caption_input(cap), add_special_tokens=False)
        t_ids = tok.encode(caption_input(cap), add_special_tokens=False).ids
        ok = ([at.convert_tokens_to_ids(s) for s in SIX] == ids_six and at.pad_token_id == base + 1 and
              at.bos_token_id == base and at.eos_token_id == cfg_a["eos_id"] and a_ids == t_ids)
        report(ok, "tokenizer_transformers", "AutoTokenizer.from_pretrained(converted dir): special ids, bos/pad/eos "
               "and a caption's ids agree with tokenizers")
    except Exception as ex:
        report(False, "tokenizer_transformers", "AutoTokenizer.from_pretrained failed: %s" % ex)
    rng = random.Random(5)
    lines = [caption_input(caption(rng)) for _ in range(20)] + [caption(rng) for _ in range(5)] + AWKWARD
    want = ["special %s vocab %d" % (" ".join(str(tok.token_to_id(t)) for t in SIX + [EOS]), tok.get_vocab_size())]
    want += [" ".join(str(i) for i in tok.encode(t, add_special_tokens=False).ids) for t in lines]
    with open(j("lines.txt"), "w") as f:
        f.write("\n".join(t.encode("utf-8").hex() for t in lines) + "\n")
    with open(j("ids.txt"), "w") as f:
        f.write("\n".join(want) + "\n")
    if c_ok:
        run([EXE, "tokenize", tok_dir, j("lines.txt"), j("ids_c.txt")])
        got = open(j("ids_c.txt")).read().split("\n")
        bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
        report(not bad and len(got) - 1 == len(want), "tokenizer_c",
               "mama_tokenizer_load(converted dir): special ids (bos..key %d..%d, eos %d) and ids of %d texts equal "
               "Hugging Face tokenizers'%s" % (base, base + 5, cfg_a["eos_id"], len(lines),
                                               "" if not bad else " (first bad line %d)" % bad[0]))

    # forward: C vs transformers / PEFT, and vs mama_ref on the same file
    ids, mask = text_batch(tok, 32, cfg_a["pad_id"])
    images = torch.rand(3, 3, 56, 56, generator=torch.Generator().manual_seed(4)) * 2 - 1
    write_inputs(j("input_a.safetensors"), images, ids, mask)
    pre_hf, pn_hf = hf_vision(dino, images)
    hid_hf = hf_text_hidden(gpt2, sd_a[tp + "wte.weight"][V:].double(), adapter_dir, ids, mask)
    ra = ref_forward(ref_model(model_a), images, ids, mask)
    compare("ref_vs_hf_vision", "mama_ref on the converted file vs transformers Dinov2WithRegisters (prenorm)",
            ra["prenorm"], pre_hf)
    compare("ref_vs_hf_text", "mama_ref on the converted file vs PEFT+transformers GPT-2 (hidden, real tokens)",
            ra["text_hidden"], hid_hf, mask)
    if c_ok:
        ca = c_encode(model_a, j("input_a.safetensors"), j("out_a.safetensors"))
        compare("hf_vision_prenorm", "mama.h x_prenorm vs transformers hidden_states[-1] (HF Dinov2WithRegisters)",
                ca["prenorm"], pre_hf)
        compare("hf_vision_patchnorm", "mama.h normed patch tokens vs transformers last_hidden_state[:, 5:]",
                ca["patch_norm"], pn_hf)
        compare("hf_text_hidden", "mama.h GPT-2+LoRA hidden after ln_f vs PEFT/transformers, real tokens "
                "(layer-index scaling on)", ca["text_hidden"], hid_hf, mask)
        compare("hf_embeddings", "mama.h img_emb / txt_emb (default heads) vs mama_ref on the same file",
                torch.cat([ca["img_emb"], ca["txt_emb"]]), torch.cat([ra["img_emb"], ra["txt_emb"]]))
    if write_fixtures:
        os.makedirs(FIXTURES, exist_ok=True)
        shutil.copyfile(model_a, os.path.join(FIXTURES, "model.safetensors"))
        shutil.copyfile(j("input_a.safetensors"), os.path.join(FIXTURES, "input.safetensors"))
        save_file({"prenorm": pre_hf.float().contiguous(), "patch_norm": pn_hf.float().contiguous(),
                   "text_hidden": hid_hf.float().contiguous()}, os.path.join(FIXTURES, "expected.safetensors"))
        if os.path.isdir(os.path.join(FIXTURES, "tokenizer")):
            shutil.rmtree(os.path.join(FIXTURES, "tokenizer"))
        os.makedirs(os.path.join(FIXTURES, "tokenizer"))
        for n in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
            shutil.copyfile(os.path.join(tok_dir, n), os.path.join(FIXTURES, "tokenizer", n))
        shutil.copyfile(j("lines.txt"), os.path.join(FIXTURES, "lines.txt"))
        shutil.copyfile(j("ids.txt"), os.path.join(FIXTURES, "ids.txt"))
        for dp_, _, fs in os.walk(FIXTURES):
            for n in fs:
                os.chmod(os.path.join(dp_, n), 0o644)
        print("# wrote %s" % FIXTURES)

    # ---- B: torch-hub DINOv2 (.pth) + GPT-2 part, text frozen, bf16 file
    cfg_v = mama_ref.make_config(image_size=56, vision_dim=48, vision_depth=2, vision_heads=3, registers=4)
    vit = mama_ref.DinoViT(cfg_v)
    mama_ref.init_random(vit, torch.Generator().manual_seed(6))
    hub_sd = {k: v.clone() for k, v in vit.state_dict().items()}
    torch.save(hub_sd, j("dinov2_hub.pth"))
    convert("dinov2", j("dinov2_hub.pth"), "-o", j("vision_hub.safetensors"), "--vision-heads", 3)
    convert("gpt2", gpt2_dir, "-o", j("text.safetensors"), "--context", 32)
    model_b = j("model_b.safetensors")
    convert("combine", "--vision", j("vision_hub.safetensors"), "--text", j("text.safetensors"), "--text-mode",
            "frozen", "--dtype", "bf16", "--embed-dim", 24, "--local-hidden", 40, "--seed", 9, "-o", model_b)
    sd_b = load_file(model_b)
    ok = (sd_b["img_encoder_q.model.blocks.0.attn.qkv.weight"].dtype == torch.bfloat16 and
          sd_b["simclr_proj.layers.1.num_batches_tracked"].dtype == torch.int64 and
          mama_ref.read_config(model_b)["text_mode"] == "frozen" and
          not any(".lora_" in k for k in sd_b))
    e = float((sd_b["img_encoder_q.model.pos_embed"].float() - hub_sd["pos_embed"].bfloat16().float()).abs().max())
    report(ok and e == 0, "hub_bf16_file", "torch-hub names -> A.8, combine --dtype bf16 (floats BF16, counters I64, "
           "no LoRA in frozen mode)", e)
    ids_b, mask_b = ids, mask
    write_inputs(j("input_b.safetensors"), images, ids_b, mask_b)
    rb = ref_forward(ref_model(model_b), images, ids_b, mask_b)
    with torch.no_grad():
        pre_hub, _ = vit.double()(images.double())
    # mama_ref on the bf16 file differs from the f32 hub model only by the bf16 rounding
    e = rel_err(rb["prenorm"], pre_hub)
    report(e < 3e-2, "hub_ref_bf16", "mama_ref on the bf16 file vs the f32 hub model (bf16 rounding only)", e)
    if c_ok:
        cb = c_encode(model_b, j("input_b.safetensors"), j("out_b.safetensors"))
        compare("hub_vision_prenorm", "mama.h (bf16 file) x_prenorm vs mama_ref on the same file", cb["prenorm"],
                rb["prenorm"])
        compare("hub_vision_patchnorm", "mama.h (bf16 file) normed patches vs mama_ref", cb["patch_norm"],
                rb["patch_norm"])
        compare("hub_text_hidden", "mama.h (bf16 file, frozen text) hidden vs mama_ref, real tokens",
                cb["text_hidden"], rb["text_hidden"], mask_b)
        compare("hub_embeddings", "mama.h img/txt embeddings (bf16 file) vs mama_ref",
                torch.cat([cb["img_emb"], cb["txt_emb"]]), torch.cat([rb["img_emb"], rb["txt_emb"]]))

    # ---- a DINOv2 without registers (register_tokens absent -> an empty [1, 0, D] tensor)
    if c_ok:
        vit0 = mama_ref.DinoViT(mama_ref.make_config(registers=0))
        mama_ref.init_random(vit0, torch.Generator().manual_seed(15))
        sd0 = {k: v for k, v in vit0.state_dict().items() if k != "register_tokens"}
        torch.save(sd0, j("dinov2_noreg.pth"))
        convert("dinov2", j("dinov2_noreg.pth"), "-o", j("vision_noreg.safetensors"), "--vision-heads", 3)
        convert("combine", "--vision", j("vision_noreg.safetensors"), "--text", j("text.safetensors"), "--text-mode",
                "frozen", "--embed-dim", 24, "--local-hidden", 40, "-o", j("model_noreg.safetensors"))
        write_inputs(j("input_noreg.safetensors"), images)
        c0 = c_encode(j("model_noreg.safetensors"), j("input_noreg.safetensors"), j("out_noreg.safetensors"))
        with torch.no_grad():
            pre0, _ = vit0.double()(images.double())
        compare("hub_no_registers", "DINOv2 without registers: mama.h prenorm vs the torch model", c0["prenorm"], pre0)

    # ---- old Hugging Face names (attention.attention.query/key/value, attention.output.dense)
    old_dir = j("dinov2_old")
    os.makedirs(old_dir)
    shutil.copyfile(os.path.join(dino_dir, "config.json"), os.path.join(old_dir, "config.json"))
    old = {}
    for k, v in dino.state_dict().items():
        k = k.replace("attention.q_proj", "attention.attention.query").replace("attention.k_proj",
                                                                               "attention.attention.key")
        k = k.replace("attention.v_proj", "attention.attention.value").replace("attention.o_proj",
                                                                               "attention.output.dense")
        old["dinov2." + k] = v.float().contiguous()           # with a model prefix, as in *ForImageClassification
    old["classifier.weight"] = torch.zeros(2, 96)
    save_file(old, os.path.join(old_dir, "model.safetensors"))
    convert("dinov2", old_dir, "-o", j("vision_old.safetensors"))
    convert("dinov2", dino_dir, "-o", j("vision_new.safetensors"))
    a, b = load_file(j("vision_old.safetensors")), load_file(j("vision_new.safetensors"))
    report(set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), "hf_old_names",
           "transformers 4.x names (attention.attention.query, output.dense, 'dinov2.' prefix) == 5.x names (q_proj)")

    # ---- C: pos_embed resampling (4x4 grid stored, 6x6 config, and 6x6 -> 4x4)
    if c_ok:
        for src, src_model, size, tag in ((dino_dir, dino, 84, "up"), (dino84_dir, dino84, 56, "down")):
            g0 = src_model.config.image_size // 14
            g = size // 14
            mc, mc2 = j("model_pos_%s.safetensors" % tag), j("model_pos_%s_py.safetensors" % tag)
            common = ["--vision", None, "--text", j("text.safetensors"), "--text-mode", "frozen", "--embed-dim", 24,
                      "--local-hidden", 40]
            convert("dinov2", src, "-o", j("vision_%s.safetensors" % tag), "--image-size", size)
            common[1] = j("vision_%s.safetensors" % tag)
            convert("combine", *common, "-o", mc)
            convert("combine", *common, "--resample-pos", "-o", mc2)
            n_file = load_file(mc)["img_encoder_q.model.pos_embed"].shape[1]
            imgs = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(8)) * 2 - 1
            write_inputs(j("input_pos.safetensors"), imgs)
            c1 = c_encode(mc, j("input_pos.safetensors"), j("out_pos1.safetensors"))
            c2 = c_encode(mc2, j("input_pos.safetensors"), j("out_pos2.safetensors"))
            pre, _ = hf_vision(src_model, imgs)
            ok = n_file == 1 + g0 * g0
            compare("pos_resample_%s_hf" % tag, "file keeps the %dx%d grid (%s), config %dx%d: mama.h's load-time "
                    "resampling vs transformers Dinov2WithRegisters interpolate_pos_encoding (bicubic, antialias) "
                    "forward, prenorm" % (g0, g0, "ok" if ok else "NOT KEPT", g, g), c1["prenorm"], pre)
            compare("pos_resample_%s_py" % tag, "mama.h on the file resampled in Python (--resample-pos, "
                    "F.interpolate bicubic antialias) vs on the file resampled by mama.h", c2["prenorm"], c1["prenorm"])
        # Python resampling == transformers' own interpolation of the table
        with torch.no_grad():
            emb = dino.float().embeddings
            x = torch.zeros(1, 1 + 36, 48)
            hf_pos = emb.interpolate_pos_encoding(x, 84, 84)
        py_pos = mw.resample_pos_embed(dino.state_dict()["embeddings.position_embeddings"].float(), 6)
        compare("pos_resample_table", "weights/mama_weights.resample_pos_embed == transformers "
                "Dinov2WithRegisters.interpolate_pos_encoding (4x4 -> 6x6)", py_pos, hf_pos, tol=1e-6)

    # ---- D: fresh LoRA (no adapter): text equals the base GPT-2
    if c_ok:
        model_e = j("model_e.safetensors")
        convert("combine", "--vision", j("vision_hub.safetensors"), "--text", j("text.safetensors"), "--embed-dim",
                24, "--local-hidden", 40, "-o", model_e)
        sd_e = load_file(model_e)
        zero = all(float(v.abs().max()) == 0 for k, v in sd_e.items() if ".lora_B." in k)
        ce = c_encode(model_e, j("input_b.safetensors"), j("out_e.safetensors"))
        hid_base = hf_text_hidden(gpt2, sd_e[tp + "wte.weight"][V:].double(), None, ids, mask)
        ok = zero and mama_ref.read_config(model_e)["text_mode"] == "lora"
        compare("fresh_lora_text", "no adapter: text_mode lora with a fresh pair (B zero: %s); mama.h hidden vs "
                "transformers GPT-2, real tokens" % ("yes" if ok else "NO"), ce["text_hidden"], hid_base, mask)

    # ---- E: the reference's Lightning checkpoint
    cfg_r = mama_ref.make_config(text_mode="lora", image_size=56)
    mr = mama_ref.MaMARef(cfg_r)
    mama_ref.init_random(mr, torch.Generator().manual_seed(12))
    sd = {}
    for k, v in mr.state_dict().items():
        if v.is_floating_point():
            v = v.bfloat16()                       # the reference trains in pure bf16
        sd[k.replace(".c_attn.weight", ".c_attn.base_layer.weight").replace(".c_attn.bias",
                                                                              ".c_attn.base_layer.bias")] = v
    sd[tp + "h.0.attn.bias"] = torch.ones(1, 1, 32, 32, dtype=torch.bool).tril()
    sd["text_encoder_q.model.base_model.model.lm_head.weight"] = torch.zeros(2048, 32)
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 1234, "hyper_parameters": {"lr": 4e-5}},
               j("ref.ckpt"))
    model_d = j("model_d.safetensors")
    convert("reference", j("ref.ckpt"), "--vision-heads", 3, "--text-heads", 2, "--layer-scale", 0, "--lora-alpha",
            16, "-o", model_d)
    sd_d = load_file(model_d)
    cfg_d = mama_ref.read_config(model_d)
    want = mr.state_dict()
    e = max(float((sd_d[k].double() - want[k].bfloat16().double()).abs().max()) for k in want
            if want[k].is_floating_point())
    ok = (set(sd_d) == set(want) and all(cfg_d[k] == cfg_r[k] for k in ("vocab_size", "bos_id", "eos_id", "pad_id",
                                                                        "sep_id", "lora_rank", "context", "embed_dim",
                                                                        "local_hidden", "registers")) and
          sd_d["img_encoder_q.local_embed.head.0.weight"].dim() == 3 and
          int(sd_d["simclr_proj.layers.1.num_batches_tracked"]) == int(want["simclr_proj.layers.1.num_batches_tracked"]))
    report(ok and e == 0, "reference_ckpt", "Lightning ckpt: base_layer renamed, buffers/lm_head dropped, 1x1 conv "
           "[out,in,1] kept, bf16 widened exactly, config from shapes", e)
    if c_ok:
        md = ref_model(model_d)
        imgs = torch.rand(4, 3, 56, 56, generator=torch.Generator().manual_seed(13)) * 2 - 1
        ids_d = torch.randint(0, 2042, (4, 32), generator=torch.Generator().manual_seed(14))
        mask_d = torch.ones(4, 32, dtype=torch.int64)
        mask_d[2, 20:] = 0
        ids_d[2, 20:] = cfg_d["pad_id"]
        write_inputs(j("input_d.safetensors"), imgs, ids_d, mask_d)
        rd = ref_forward(md, imgs, ids_d, mask_d)
        cd = c_encode(model_d, j("input_d.safetensors"), j("out_d.safetensors"))
        compare("reference_forward", "mama.h vs mama_ref on the converted reference checkpoint: prenorm, normed "
                "patches, hidden (real tokens)", torch.cat([cd["prenorm"].flatten(), cd["patch_norm"].flatten()]),
                torch.cat([rd["prenorm"].flatten(), rd["patch_norm"].flatten()]))
        compare("reference_text", "mama.h LoRA text hidden vs mama_ref, real tokens", cd["text_hidden"],
                rd["text_hidden"], mask_d)
        compare("reference_embeddings", "mama.h img/txt embeddings (trained heads) vs mama_ref",
                torch.cat([cd["img_emb"], cd["txt_emb"]]), torch.cat([rd["img_emb"], rd["txt_emb"]]))

    # ---- errors are reported, not crashes
    bad = j("bad_adapter")
    os.makedirs(bad)
    save_file({"base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight": torch.zeros(4, 32)},
              os.path.join(bad, "adapter_model.safetensors"))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "weights", "convert.py"), "peft", bad, "-o",
                        j("x.safetensors")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report(p.returncode == 1 and "c_attn only" in p.stderr, "peft_refuses_other_targets",
           "an adapter on mlp.c_fc is refused with a message (exit 1)")


# --------------------------------------------------------------------------------------
# dataset converters
# --------------------------------------------------------------------------------------

def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def c_manifest(path, out):
    run([EXE, "manifest", path, out])
    lines = open(out, encoding="utf-8").read().split("\n")
    head = lines[0].split()
    recs = [ln.split("\t") for ln in lines[1:] if ln]
    return int(head[1]), int(head[5]), recs


def test_embed(tmp):
    import embed_to_manifest as em
    j = lambda *p: os.path.join(tmp, *p)  # noqa: E731
    P = "/mnt/NAS2/mammo/anon_dicom/"
    meta_h = ["empi_anon", "acc_anon", "anon_dicom_path", "ImageLateralityFinal", "ViewPosition", "FinalImageType",
              "StudyDescription"]
    meta = [
        ["P1", "A1", P + "p1/1.dcm", "L", "CC", "2D", "MG Screening Bilateral"],     # L findings S,B -> S
        ["P1", "A1", P + "p1/2.dcm", "R", "MLO", "2D", "MG Screening Bilateral"],    # R finding N
        ["P1", "A1", P + "p1/3.dcm", "L", "CC", "cview", "MG Screening Bilateral"],  # not 2D
        ["P2", "A2", P + "p2/4.dcm", "L", "MLO", "2D", "MG Diagnostic Left"],        # bilateral P
        ["P2", "A2", P + "p2/5.dcm", "R", "CC", "2D", "MG Diagnostic Left"],
        ["P3", "A3", P + "p3/6.dcm", "R", "MLO", "2D", "MG Screening Bilateral"],    # N, A -> A
        ["P3", "A3", P + "p3/7.dcm", "L", "CC", "2D", "MG Screening Bilateral"],     # B, A -> A
        ["P4", "A4", P + "p4/8.dcm", "L", "CC", "2D", "Outside film review"],        # no reason
        ["P5", "A5", P + "p5/9.dcm", "R", "CC", "2D", "MG Screening"],               # no density
        ["P6", "A6", P + "p6/10.dcm", "R", "CC", "2D", "MG Screening"],              # no clinical row
        ["P7", "A7", P + "p7/11.dcm", "R", "CC", "2D", "MG Diagnostic Right"],       # A, S -> S
        ["P8", "A8", P + "p8/12.dcm", "L", "CC", "2D", ""],                          # only R findings -> all; desc
    ]
    cl_h = ["empi_anon", "acc_anon", "side", "asses", "tissueden", "age_at_study", "RACE_DESC", "ETHNIC_GROUP_DESC",
            "massshape", "massdens", "calcfind", "calcdistri", "desc", "path_severity"]
    W, NH = "Caucasian or White", "Non-Hispanic or Latino"
    cl = [
        ["P1", "A1", "L", "B", "3", "57.0", W, NH, "", "", "", "", "MG Screen Bilat", ""],
        ["P1", "A1", "L", "S", "3", "57.0", W, NH, "X", "+", "P", "G", "MG Screen Bilat", "0"],
        ["P1", "A1", "R", "N", "3", "57.0", W, NH, "", "", "", "", "MG Screen Bilat", ""],
        ["P2", "A2", "B", "P", "4", "63.6", "Asian", "Hispanic or Latino", "O", "=", "", "", "MG Diag", ""],
        ["P3", "A3", "R", "N", "1", "45", W, NH, "", "", "", "", "", ""],
        ["P3", "A3", "R", "A", "1", "45", W, NH, "", "", "", "", "", ""],
        ["P3", "A3", "L", "B", "1", "45", W, NH, "", "", "", "", "", ""],
        ["P3", "A3", "L", "A", "1", "45", W, NH, "", "", "", "", "", ""],
        ["P4", "A4", "L", "N", "2", "50", W, NH, "", "", "", "", "", ""],
        ["P5", "A5", "R", "B", "", "50", W, NH, "", "", "", "", "", ""],
        ["P7", "A7", "R", "A", "2", "70", W, NH, "", "", "", "", "", "4"],
        ["P7", "A7", "R", "S", "2", "70", W, NH, "R", "Q", "", "", "", "4"],
        ["P8", "A8", "R", "M", "2", "66", W, NH, "", "", "", "", "MG Diagnostic Bilateral", ""],
    ]
    write_csv(j("meta.csv"), meta_h, meta)
    write_csv(j("clinical.csv"), cl_h, cl)
    write_csv(j("legend.csv"), ["Header in export", "Code", "Meaning"],
              [["massshape", "X", "irregular"], ["massshape", "O", "oval"], ["massshape", "R", "round"],
               ["massdens", "+", "high density"], ["massdens", "=", "equal density"],
               ["calcfind", "P", "pleomorphic"], ["calcdistri", "G", "grouped"]])
    run([sys.executable, "tools/embed_to_manifest.py", "--clinical", j("clinical.csv"), "--metadata", j("meta.csv"),
         "--legend", j("legend.csv"), "--path-replace", P + "=images/", "--path-ext", ".png",
         "--cancer-from-path-severity", "-o", j("embed.csv")])
    rows = {r["path"]: r for r in csv.DictReader(open(j("embed.csv"), encoding="utf-8"))}
    exp = {"images/p1/1.png": ("S", "3", "57", "irregular", "high density", "pleomorphic", "grouped", "1"),
           "images/p1/2.png": ("N", "3", "57", "", "", "", "", ""),
           "images/p2/4.png": ("P", "4", "63", "oval", "equal density", "", "", ""),
           "images/p2/5.png": ("P", "4", "63", "oval", "equal density", "", "", ""),
           "images/p3/6.png": ("A", "1", "45", "", "", "", "", ""),
           "images/p3/7.png": ("A", "1", "45", "", "", "", "", ""),
           "images/p7/11.png": ("S", "2", "70", "round", "", "", "", "0"),
           "images/p8/12.png": ("M", "2", "66", "", "", "", "", "")}
    got = {p: (r["birads"], r["density"], r["age"], r["mass_shape"], r["mass_density"], r["calc_type"],
               r["calc_distribution"], r["cancer"]) for p, r in rows.items()}
    bad = [p for p in exp if got.get(p) != exp[p]] + [p for p in got if p not in exp]
    report(not bad, "embed_rows", "EMBED: side > bilateral > all, highest BI-RADS except the 0 rule, 2D only, "
           "incomplete rows dropped, legend codes, path rewrite (%d rows)%s" % (len(got), " bad: %s" % bad if bad else ""))
    r8, r2 = rows.get("images/p8/12.png", {}), rows.get("images/p2/4.png", {})
    report(r8.get("procedure") == "MG Diagnostic Bilateral" and r2.get("ethnicity") == "Hispanic or Latino" and
           r2.get("side") == "L" and r2.get("view") == "MLO" and r2.get("procedure") == "MG Diagnostic Left",
           "embed_fields", "procedure from the image (clinical desc as fallback), side/view from the image, "
                           "race/ethnicity/age from the chosen finding")
    run([sys.executable, "tools/embed_to_manifest.py", "--clinical", j("clinical.csv"), "--metadata",
         j("meta.csv") + ":test", "--keep-incomplete", "--col", "procedure=NoSuchColumn", "-o", j("embed_all.csv")])
    rows2 = list(csv.DictReader(open(j("embed_all.csv"), encoding="utf-8")))
    inc = sorted(r["path"].rsplit("/", 1)[1] for r in rows2 if r["pretrain"] == "0")
    # procedure now from the clinical desc: empty for A3, A4, A7; A5 lacks density, A6 clinical rows
    report(len(rows2) == 11 and all(r["split"] == "test" for r in rows2) and
           inc == sorted("%d.dcm" % i for i in (6, 7, 8, 9, 10, 11)) and
           rows2[0]["mass_shape"] == "irregular" and rows2[0]["procedure"] == "MG Screen Bilat",
           "embed_options", "--keep-incomplete marks pretrain=0 (%s), PATH:SPLIT, --col remaps (procedure from desc), "
                            "built-in code table" % ",".join(inc))
    # the EMBED 0-rule in isolation
    col = em.DEFAULT_COLUMNS
    f = lambda s, a: {"side": s, "asses": a}  # noqa: E731
    cases = [([f("L", "N"), f("L", "A")], "L", "A"), ([f("L", "B"), f("L", "S")], "L", "S"),
             ([f("R", "K"), f("B", "N")], "L", "N"), ([f("R", "K"), f("R", "P")], "L", "K"),
             ([f("L", "x"), f("L", "B")], "L", "B"), ([f("L", "A"), f("L", "P"), f("L", "N")], "L", "P")]
    ok = all(em.choose_finding(fs, side, col)["asses"] == want for fs, side, want in cases)
    report(ok, "embed_choice_rule", "choose_finding on %d hand cases (0 rule, side/bilateral/all fallbacks)"
           % len(cases))
    if EXE and os.path.exists(EXE):
        n, _, recs = c_manifest(j("embed.csv"), j("embed_c.txt"))
        byp = {os.path.relpath(r[0], tmp): r for r in recs}
        r1 = byp.get("images/p1/1.png")
        ok = (n == 8 and r1 is not None and r1[3] == "left" and r1[6] == "57" and r1[10] == "3" and r1[11] == "S" and
              r1[12] == "irregular" and r1[16] == "1" and byp["images/p1/2.png"][16] == "-1")
        report(ok, "embed_c_load", "mama_manifest_load reads the EMBED manifest (%d records, fields of row 1: %s)"
               % (n, "|".join(r1[3:17]) if r1 else "-"))


def test_rsna(tmp):
    j = lambda *p: os.path.join(tmp, *p)  # noqa: E731
    h = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive", "BIRADS",
         "implant", "density", "machine_id", "difficult_negative_case"]
    rows = [["1", "10006", "462822612", "L", "CC", "61.0", "0", "0", "0", "", "0", "", "29", "False"],
            ["1", "10006", "1459541791", "L", "MLO", "61.0", "0", "0", "0", "", "0", "", "29", "False"],
            ["1", "10011", "220375232", "R", "CC", "55.0", "1", "1", "1", "0", "0", "C", "21", "False"],
            ["1", "10011", "270344397", "R", "MLO", "55.0", "1", "1", "1", "0", "0", "C", "21", "False"],
            ["2", "10025", "562340703", "L", "AT", "79.0", "0", "0", "0", "1", "0", "B", "93", "True"]]
    write_csv(j("train.csv"), h, rows)
    run([sys.executable, "tools/rsna_to_manifest.py", j("train.csv"), "--image-dir", "rsna_png", "-o", j("rsna.csv")])
    out = list(csv.DictReader(open(j("rsna.csv"), encoding="utf-8")))
    ok = (len(out) == 5 and out[0]["path"] == "rsna_png/10006/462822612.png" and out[2]["density"] == "3" and
          out[2]["birads"] == "A" and out[2]["cancer"] == "1" and out[4]["birads"] == "N" and out[4]["density"] == "2"
          and out[0]["density"] == "" and out[0]["cancer"] == "0" and out[0]["age"] == "61" and
          out[0]["study"] == "10006")
    report(ok, "rsna_rows", "RSNA train.csv: density A-D -> 1-4, BIRADS 0/1 -> A/N, cancer, age, path pattern")
    run([sys.executable, "tools/rsna_to_manifest.py", j("train.csv"), "--views", "CC,MLO", "--split", "test", "-o",
         j("rsna2.csv")])
    out2 = list(csv.DictReader(open(j("rsna2.csv"), encoding="utf-8")))
    report(len(out2) == 4 and all(r["split"] == "test" for r in out2), "rsna_options", "--views CC,MLO, --split test")
    if EXE and os.path.exists(EXE):
        n, studies, recs = c_manifest(j("rsna.csv"), j("rsna_c.txt"))
        report(n == 5 and studies == 3 and recs[2][16] == "1" and recs[2][11] == "A" and recs[2][10] == "3",
               "rsna_c_load", "mama_manifest_load reads the RSNA manifest (%d records, %d studies)" % (n, studies))


def test_dicom(tmp):
    if not have("pydicom"):
        skip("dicom", "needs pydicom (pip install pydicom)")
        return
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    import dicom_to_png as dp
    j = lambda *p: os.path.join(tmp, *p)  # noqa: E731

    def write(path, arr, **kw):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MG"
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.BitsAllocated = 16
        ds.BitsStored = kw.pop("bits", 12)
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        ds.PhotometricInterpretation = kw.pop("photometric", "MONOCHROME2")
        for k, v in kw.items():
            setattr(ds, k, v)
        ds.PixelData = arr.astype("<u2").tobytes()
        ds.save_as(path, enforce_file_format=True)

    rng = np.random.default_rng(0)
    # 1: MONOCHROME1, 12 bit, window 2000/3000 LINEAR, 2048x1536 -> 1024x768 (exact 2x2 area means)
    a1 = rng.integers(0, 4096, size=(2048, 1536))
    a1[:400, :300] = 4095
    write(j("m1.dcm"), a1, photometric="MONOCHROME1", WindowCenter="2000", WindowWidth="3000")
    run([sys.executable, "tools/dicom_to_png.py", j("m1.dcm"), j("m1.png"), "--voi"])
    y = dp.window(a1.astype(np.float64), 2000, 3000)
    y = 1 - y
    y = y.reshape(1024, 2, 768, 2).mean(axis=(1, 3))
    want = np.floor(y * 255 + 0.5)
    got = dp.read_png_grey(j("m1.png")).astype(np.float64)
    e = float(np.abs(got - want).max()) if got.shape == want.shape else 999
    report(e <= 1 and got.shape == (1024, 768) and got[:100, :100].max() == 0, "dicom_window_mono1",
           "--voi: 16-bit MONOCHROME1 with WindowCenter/Width: windowed, inverted, 2048x1536 -> 1024x768 area mean, "
           "8-bit (max diff in grey levels)", e)
    # 2: MONOCHROME2 with a VOI LUT sequence and rescale, 300x200 -> 1024 long side (bilinear)
    a2 = rng.integers(0, 1024, size=(300, 200))
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 12]
    lut = [int(round(4095 * (i / 1023) ** 0.5)) for i in range(1024)]
    item.add_new(0x00283006, "US", lut)
    write(j("m2.dcm"), a2, bits=10, VOILUTSequence=Sequence([item]), RescaleSlope="1", RescaleIntercept="0")
    run([sys.executable, "tools/dicom_to_png.py", j("m2.dcm"), j("m2.png"), "--voi"])
    got2 = dp.read_png_grey(j("m2.png")).astype(np.float64)
    y2 = np.array(lut, dtype=np.float64)[a2] / 4095.0
    y2 = dp.bilinear_weights(300, 1024) @ y2 @ dp.bilinear_weights(200, 683).T
    e2 = float(np.abs(got2 - np.floor(y2 * 255 + 0.5)).max()) if got2.shape == (1024, 683) else 999
    report(e2 <= 1, "dicom_voi_lut", "--voi: VOI LUT Sequence (gamma LUT, 12-bit output), MONOCHROME2, 300x200 -> 1024x683 "
           "bilinear", e2)
    # 3: --voi without a VOI in the file: min..max
    a3 = rng.integers(100, 900, size=(64, 48))
    write(j("m3.dcm"), a3, bits=16)
    run([sys.executable, "tools/dicom_to_png.py", j("m3.dcm"), j("m3.png"), "--size", "0", "--voi"])
    got3 = dp.read_png_grey(j("m3.png")).astype(np.float64)
    want3 = np.floor((a3 - a3.min()) / (a3.max() - a3.min()) * 255 + 0.5)
    e3 = float(np.abs(got3 - want3).max())
    report(e3 == 0, "dicom_minmax", "--voi, no VOI in the file: min..max to 0..255, --size 0 keeps 64x48", e3)
    # 4: the default, SPEC A.5 step 1: x * 255 / max(x) rounded half up, no minimum shift.  Hand values
    # (12-bit, max 4095): 1000 -> 255000/4095 = 62.27 -> 62, 2048 -> 522240/4095 = 127.53 -> 128,
    # 3000 -> 765000/4095 = 186.81 -> 187 (mama.h's decode16_12bit_max gives the same)
    a4 = np.array([[0, 1, 1000], [2048, 3000, 4095]])
    write(j("m4.dcm"), a4, RescaleSlope="2", RescaleIntercept="-100", WindowCenter="10", WindowWidth="5")
    run([sys.executable, "tools/dicom_to_png.py", j("m4.dcm"), j("m4.png"), "--size", "0"])
    got4 = dp.read_png_grey(j("m4.png")).tolist()
    report(got4 == [[0, 0, 62], [128, 187, 255]], "dicom_default_max",
           "stored values * 255 / max (rescale and window in the file ignored): %s" % got4)
    run([sys.executable, "tools/dicom_to_png.py", j("m3.dcm"), j("m3d.png"), "--size", "0"])
    e4 = float(np.abs(dp.read_png_grey(j("m3d.png")) - np.floor(a3 * 255.0 / a3.max() + 0.5)).max())
    report(e4 == 0, "dicom_default_max_random", "64x48 values 100..899: x * 255 / max(x), no minimum shift", e4)
    # 5: MONOCHROME1 inverted first: max(x) - x of {0, 1000, 3000, 4000} is {4000, 3000, 1000, 0}, max 4000:
    # 3000 -> 191.25 -> 191, 1000 -> 63.75 -> 64
    write(j("m5.dcm"), np.array([[0, 1000], [3000, 4000]]), photometric="MONOCHROME1")
    run([sys.executable, "tools/dicom_to_png.py", j("m5.dcm"), j("m5.png"), "--size", "0"])
    got5 = dp.read_png_grey(j("m5.png")).tolist()
    report(got5 == [[255, 191], [64, 0]], "dicom_mono1_default", "MONOCHROME1: max(x) - x, then * 255 / max: %s" % got5)
    # 6: --bit-depth 12 on a max-1000 image: 250 -> 63750/4095 = 15.57 -> 16, 500 -> 31.14 -> 31,
    # 1000 -> 62.27 -> 62 (the per-image max would give 64 128 255)
    write(j("m6.dcm"), np.array([[0, 250], [500, 1000]]))
    run([sys.executable, "tools/dicom_to_png.py", j("m6.dcm"), j("m6.png"), "--size", "0", "--bit-depth", "12"])
    run([sys.executable, "tools/dicom_to_png.py", j("m6.dcm"), j("m6m.png"), "--size", "0"])
    got6, got6m = dp.read_png_grey(j("m6.png")).tolist(), dp.read_png_grey(j("m6m.png")).tolist()
    report(got6 == [[0, 16], [31, 62]] and got6m == [[0, 64], [128, 255]], "dicom_bit_depth",
           "--bit-depth 12: %s, per-image max: %s" % (got6, got6m))
    # 7: --window 1000.5,1001: v <= 500 -> 0, v > 1500 -> 255, else ((v - 1000)/1000 + 0.5) * 255:
    # 750 -> 63.75 -> 64, 1000 -> 127.5 -> 128, 1250 -> 191.25 -> 191
    write(j("m7.dcm"), np.array([[400, 750, 1000], [1250, 1500, 4000]]))
    run([sys.executable, "tools/dicom_to_png.py", j("m7.dcm"), j("m7.png"), "--size", "0", "--window", "1000.5,1001"])
    got7 = dp.read_png_grey(j("m7.png")).tolist()
    report(got7 == [[0, 64, 128], [191, 255, 255]], "dicom_window_option", "--window 1000.5,1001: %s" % got7)
    # 8: all zero: no division by zero
    write(j("m8.dcm"), np.zeros((2, 2), dtype=np.int64))
    run([sys.executable, "tools/dicom_to_png.py", j("m8.dcm"), j("m8.png"), "--size", "0"])
    report(dp.read_png_grey(j("m8.png")).tolist() == [[0, 0], [0, 0]], "dicom_all_zero", "max 0 -> all 0")
    bad = subprocess.run([sys.executable, "tools/dicom_to_png.py", j("m8.dcm"), j("m8b.png"), "--window", "5"],
                         cwd=ROOT, capture_output=True, text=True)
    report(bad.returncode != 0 and "--window" in bad.stderr, "dicom_bad_window", "--window 5 rejected naming the flag")
    os.makedirs(j("tree", "p1"))
    shutil.copyfile(j("m3.dcm"), j("tree", "p1", "x.dcm"))
    run([sys.executable, "tools/dicom_to_png.py", j("tree"), "-o", j("tree_png"), "--size", "128"])
    report(os.path.exists(j("tree_png", "p1", "x.png")) and dp.read_png_grey(j("tree_png", "p1", "x.png")).shape ==
           (128, 96), "dicom_tree", "directory mode mirrors the tree (p1/x.dcm -> p1/x.png, 128x96)")
    if EXE and os.path.exists(EXE):
        p = run([EXE, "image", j("m1.png"), j("m1.raw")])
        raw = np.frombuffer(open(j("m1.raw"), "rb").read(), dtype=np.uint8)
        same = p.stdout.split() == ["768", "1024"] and np.array_equal(raw.reshape(1024, 768), got.astype(np.uint8))
        report(same, "dicom_png_c_load", "mama_image_load decodes the written PNG to the same 1024x768 pixels")
    _ = pydicom


def main():
    global EXE
    ap = argparse.ArgumentParser()
    ap.add_argument("--write-fixtures", action="store_true", help="refresh tests/fixtures/convert/")
    ap.add_argument("--keep", help="keep generated files in this directory")
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = args.keep or tempfile.mkdtemp(prefix="mama_convert_")
    if args.keep:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    try:
        exe = None
        try:
            exe = build_c()
        except Exception as e:
            report(False, "build_test_weights", "gcc build of tests/test_weights.c failed: %s" % e)
        EXE = exe
        for name, fn in (("weights", lambda d: test_weights(d, args.write_fixtures)), ("embed", test_embed),
                         ("rsna", test_rsna), ("dicom", test_dicom)):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            try:
                fn(d)
            except Exception as e:
                import traceback
                traceback.print_exc()
                report(False, name, "raised %s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("# test_convert: %d passed, %d failed, %d skipped" % (RESULTS["pass"], RESULTS["fail"], RESULTS["skip"]))
    return 1 if RESULTS["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
