"""Self-checks of the PyTorch reference (tests/ref/mama_ref.py); prints a summary.

    python3 tests/ref/selfcheck.py

1. finite differences (float64, central) of the total loss vs autograd, a few entries of
   many parameters, for text modes full / lora (+ layer scale) / frozen, late 0 and 1;
2. text local head: BatchNorm statistics per caption (manual recomputation), and proof
   that this differs from batch-wide statistics;
3. masks: text features of real tokens do not depend on padding; causal attention;
4. SLA scores and NT-Xent against naive loops; CLIP loss against a hand formula;
5. fast path (SDPA, used by the benchmark) equals the straightforward path;
6. fixtures: reload weights/batch, recompute, compare with expected_*.safetensors.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mama_ref as M  # noqa: E402
import make_fixtures as MF  # noqa: E402

torch.set_default_dtype(torch.float64)
RESULTS = []


def report(ok, name, detail):
    RESULTS.append(ok)
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}")


def build(over, seed=1):
    cfg = M.make_config(**{**MF.FIXTURE, **over})
    g = torch.Generator().manual_seed(seed)
    model = M.MaMARef(cfg)
    M.init_random(model, g)
    model = model.double().train()
    batch = MF.make_batch(cfg, torch.Generator().manual_seed(seed + 7))
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    return cfg, model, batch


def loss_of(model, batch, late):
    return model(batch["images"], batch["input_ids"], batch["attention_mask"],
                 batch["ext_images"], late=late)["loss"]


def fd_check(over, late, names_frac, nper=3, seed=1):
    cfg, model, batch = build(over, seed)
    model.set_trainable(late=bool(late))
    model.zero_grad()
    loss_of(model, batch, late).backward()
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(99)
    worst = worst_abs = worst_raw = 0.0
    count = 0
    eps = 1e-6
    for n in model.trainable_names(late=True):
        if not any(s in n for s in names_frac):
            continue
        p = params[n]
        ag = p.grad if p.grad is not None else torch.zeros_like(p)
        flat = p.data.view(-1)
        agf = ag.reshape(-1)
        if "wte" in n:   # rows of tokens that occur (others are exactly zero)
            ids = batch["input_ids"].unique()
            D = p.shape[1]
            cand = torch.cat([ids[torch.randint(len(ids), (nper,), generator=g)] * D +
                              torch.randint(D, (nper,), generator=g)])
        else:
            cand = torch.randint(flat.numel(), (nper,), generator=g)
        for idx in cand.tolist():
            old = flat[idx].item()
            with torch.no_grad():
                flat[idx] = old + eps
                lp = loss_of(model, batch, late).item()
                flat[idx] = old - eps
                lm = loss_of(model, batch, late).item()
                flat[idx] = old
            fd = (lp - lm) / (2 * eps)
            a = agf[idx].item()
            # abs floor 1e-8: FD round-off (~1e-9 here); some grads are exactly 0 (a bias
            # followed by train-mode BN), where only the floor applies
            err = max(0.0, abs(fd - a) - 1e-8) / max(1e-4, abs(fd), abs(a))
            worst = max(worst, err)
            worst_abs = max(worst_abs, abs(fd - a))
            worst_raw = max(worst_raw, abs(fd - a) / max(1e-4, abs(fd), abs(a)))
            count += 1
            if err > 1e-5:
                print(f"    mismatch {n}[{idx}]: autograd {a:.8e} fd {fd:.8e}")
    report(worst < 1e-5, f"finite differences {over} late={late}",
           f"{count} entries, worst |fd-autograd| {worst_abs:.1e}, worst rel (floor 1e-4) "
           f"{worst_raw:.1e}")


def check_text_bn_per_caption():
    cfg, model, batch = build(dict(text_mode="lora"))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        h = model.encode_text(ids, mask)["hidden"]
        sents = model.text_local(ids, h)
        head = model.text_encoder_q.local_embed.head
        worst, worst_batched = 0.0, 0.0
        allx = []
        for j in range(ids.shape[0]):
            x = h[j, ids[j] == cfg["sep_id"]]                       # [S_j, Dt]
            allx.append(x)

        def manual(x):
            y = x @ head[0].weight[:, :, 0].t() + head[0].bias
            y = (y - y.mean(0)) / torch.sqrt(y.var(0, unbiased=False) + 1e-5)
            y = torch.relu(y * head[1].weight + head[1].bias)
            y = y @ head[3].weight[:, :, 0].t() + head[3].bias
            y = (y - y.mean(0)) / torch.sqrt(y.var(0, unbiased=False) + 1e-5)
            return F.normalize(y, dim=-1)
        batched = manual(torch.cat(allx)).split([len(x) for x in allx])
        for j, x in enumerate(allx):
            worst = max(worst, (manual(x) - sents[j]).abs().max().item())
            worst_batched = max(worst_batched, (batched[j] - sents[j]).abs().max().item())
    report(worst < 1e-12 and worst_batched > 1e-2, "text local head BN per caption",
           f"manual per-caption max err {worst:.1e}; batch-wide BN would differ by "
           f"{worst_batched:.2f}; sentences per caption {[len(x) for x in allx]}")
    # running statistics: updated once per caption
    nbt = model.text_encoder_q.local_embed.head[1].num_batches_tracked.item()
    model.text_local(ids, h)
    nbt2 = model.text_encoder_q.local_embed.head[1].num_batches_tracked.item()
    report(nbt2 - nbt == ids.shape[0], "text local head BN running stats per caption",
           f"num_batches_tracked +{nbt2 - nbt} for B={ids.shape[0]}")


def check_masks():
    cfg, model, batch = build(dict(text_mode="full", text_attn_layer_scale=1))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        h0 = model.encode_text(ids, mask)["hidden"]
        ids2 = ids.clone()
        ids2[mask == 0] = 5                                          # change padding tokens
        h1 = model.encode_text(ids2, mask)["hidden"]
        real = mask.bool()
        d_real = (h0 - h1)[real].abs().max().item()
        d_pad = (h0 - h1)[~real].abs().max().item()
        ids3 = ids.clone()
        ids3[:, 6] = 7                                               # change token 6
        h3 = model.encode_text(ids3, mask)["hidden"]
        d_before = (h0 - h3)[:, :6].abs().max().item()
        d_after = (h0 - h3)[:, 6:].abs().max().item()
    report(d_real < 1e-12 and d_pad > 1e-3, "text padding keys masked",
           f"real-token change {d_real:.1e}, pad-position change {d_pad:.2f}")
    report(d_before < 1e-12 and d_after > 1e-3, "text causal attention",
           f"positions < t change {d_before:.1e}, >= t change {d_after:.2f}")


def check_losses():
    g = torch.Generator().manual_seed(3)
    B, N, E = 3, 5, 4
    p = F.normalize(torch.randn(B, N, E, generator=g), dim=-1)
    sents = [F.normalize(torch.randn(s, E, generator=g), dim=-1) for s in (2, 4, 3)]
    model = M.MaMARef(M.make_config(**MF.FIXTURE)).double()
    t2i, i2t = model.sla_scores(p, sents)
    worst = 0.0
    for i in range(B):
        for j in range(B):
            sim = [[float(p[i, a] @ sents[j][b]) for b in range(len(sents[j]))] for a in range(N)]
            t = sum(max(sim[a][b] for a in range(N)) for b in range(len(sents[j]))) / len(sents[j])
            u = sum(max(sim[a]) for a in range(N)) / N
            worst = max(worst, abs(t - t2i[i, j].item()), abs(u - i2t[i, j].item()))
    report(worst < 1e-12, "SLA scores vs naive loops", f"max err {worst:.1e}")

    a, b = torch.randn(B, E, generator=g), torch.randn(B, E, generator=g)
    z = F.normalize(torch.cat([a, b]), dim=1)
    tot = 0.0
    for i in range(2 * B):
        pos = (i + B) % (2 * B)
        den = sum(math.exp(float(z[i] @ z[k]) / 0.5) for k in range(2 * B) if k != i)
        tot += -(float(z[i] @ z[pos]) / 0.5 - math.log(den))
    ref = tot / (2 * B)
    got = M.nt_xent(a, b, 0.5).item()
    report(abs(ref - got) < 1e-12, "NT-Xent vs naive formula", f"{got:.10f} vs {ref:.10f}")

    S = torch.randn(B, B, generator=g)
    ref = 0.0
    for i in range(B):
        ref += -(S[i, i] - torch.logsumexp(S[i], 0)).item() / B
        ref += -(S[i, i] - torch.logsumexp(S[:, i], 0)).item() / B
    got = M.clip_loss(S).item()
    report(abs(ref - got) < 1e-12, "CLIP loss vs hand formula", f"{got:.10f} vs {ref:.10f}")


def check_numpy_towers():
    """Both towers recomputed with numpy from the state dict (explicit per-head loops)."""
    import numpy as np
    from math import erf, sqrt
    cfg, model, batch = build(dict(text_mode="lora", text_attn_layer_scale=1))
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    with torch.no_grad():
        img = model.encode_image(batch["images"])
        txt = model.encode_text(batch["input_ids"], batch["attention_mask"])

    def ln(x, w, b, eps):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * w + b

    def softmax(a):
        a = a - a.max(-1, keepdims=True)
        e = np.exp(a)
        return e / e.sum(-1, keepdims=True)

    # vision, image 1
    P, D, R, H = cfg["patch_size"], cfg["vision_dim"], cfg["registers"], cfg["vision_heads"]
    v = "img_encoder_q.model."
    x = batch["images"][1].numpy()
    g = cfg["image_size"] // P
    W = sd[v + "patch_embed.proj.weight"].reshape(D, -1)
    patches = [x[:, r * P:(r + 1) * P, c * P:(c + 1) * P].reshape(-1) for r in range(g) for c in range(g)]
    pt = np.stack(patches) @ W.T + sd[v + "patch_embed.proj.bias"]
    pos = sd[v + "pos_embed"][0]
    t = np.concatenate([sd[v + "cls_token"][0] + pos[:1], sd[v + "register_tokens"][0], pt + pos[1:]])
    gelu = np.vectorize(lambda u: 0.5 * u * (1 + erf(u / sqrt(2))))
    hd = D // H
    for i in range(cfg["vision_depth"]):
        b = f"{v}blocks.{i}."
        h = ln(t, sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
        qkv = h @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]
        o = np.zeros_like(h)
        for hh in range(H):
            q = qkv[:, hh * hd:(hh + 1) * hd]
            k = qkv[:, D + hh * hd:D + (hh + 1) * hd]
            vv = qkv[:, 2 * D + hh * hd:2 * D + (hh + 1) * hd]
            o[:, hh * hd:(hh + 1) * hd] = softmax(q @ k.T / sqrt(hd)) @ vv
        t = t + sd[b + "ls1.gamma"] * (o @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"])
        h = ln(t, sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
        m = gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        t = t + sd[b + "ls2.gamma"] * (m @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"])
    e1 = np.abs(t.mean(0) - img["pooled"][1].numpy()).max()
    pn = ln(t, sd[v + "norm.weight"], sd[v + "norm.bias"], 1e-6)[1 + R:]
    e2 = np.abs(pn - img["patch_norm"][1].numpy()).max()
    ge = t.mean(0) @ sd["img_encoder_q.global_embed.weight"].T + sd["img_encoder_q.global_embed.bias"]
    e3 = np.abs(ge / np.linalg.norm(ge) - img["emb"][1].numpy()).max()
    report(max(e1, e2, e3) < 1e-10, "vision tower vs numpy",
           f"pooled {e1:.1e}, patch tokens after norm {e2:.1e}, embedding {e3:.1e}")

    # text, caption 2 (padded), LoRA and inverse-layer-index scaling on
    tp = "text_encoder_q.model.base_model.model.transformer."
    D, H = cfg["text_dim"], cfg["text_heads"]
    hd = D // H
    ids = batch["input_ids"][2].numpy()
    msk = batch["attention_mask"][2].numpy()
    T = len(ids)
    x = sd[tp + "wte.weight"][ids] + sd[tp + "wpe.weight"][:T]
    sc = cfg["lora_alpha"] / cfg["lora_rank"]

    def gelu_tanh(u):
        return 0.5 * u * (1 + np.tanh(sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
    for i in range(cfg["text_depth"]):
        b = f"{tp}h.{i}."
        h = ln(x, sd[b + "ln_1.weight"], sd[b + "ln_1.bias"], 1e-5)
        qkv = (h @ sd[b + "attn.c_attn.weight"] + sd[b + "attn.c_attn.bias"]
               + sc * (h @ sd[b + "attn.c_attn.lora_A.default.weight"].T)
               @ sd[b + "attn.c_attn.lora_B.default.weight"].T)
        o = np.zeros_like(h)
        for hh in range(H):
            q = qkv[:, hh * hd:(hh + 1) * hd]
            k = qkv[:, D + hh * hd:D + (hh + 1) * hd]
            vv = qkv[:, 2 * D + hh * hd:2 * D + (hh + 1) * hd]
            a = q @ k.T / sqrt(hd) / (i + 1)
            for qi in range(T):
                for kj in range(T):
                    if kj > qi or msk[kj] == 0:
                        a[qi, kj] = -np.inf
            o[:, hh * hd:(hh + 1) * hd] = softmax(a) @ vv
        x = x + o @ sd[b + "attn.c_proj.weight"] + sd[b + "attn.c_proj.bias"]
        h = ln(x, sd[b + "ln_2.weight"], sd[b + "ln_2.bias"], 1e-5)
        x = x + gelu_tanh(h @ sd[b + "mlp.c_fc.weight"] + sd[b + "mlp.c_fc.bias"]) @ \
            sd[b + "mlp.c_proj.weight"] + sd[b + "mlp.c_proj.bias"]
    x = ln(x, sd[tp + "ln_f.weight"], sd[tp + "ln_f.bias"], 1e-5)
    e1 = np.abs(x - txt["hidden"][2].numpy()).max()
    ge = x.mean(0) @ sd["text_encoder_q.global_embed.weight"].T + sd["text_encoder_q.global_embed.bias"]
    e2 = np.abs(ge / np.linalg.norm(ge) - txt["emb"][2].numpy()).max()
    report(max(e1, e2) < 1e-10, "text tower (LoRA, layer scale, padding) vs numpy",
           f"hidden {e1:.1e}, embedding {e2:.1e} (caption of {int(msk.sum())}/{T} tokens)")


def check_fast_path():
    cfg = M.make_config(**{**MF.FIXTURE, "text_mode": "lora", "text_attn_layer_scale": 1})
    g = torch.Generator().manual_seed(5)
    slow = M.MaMARef(cfg)
    M.init_random(slow, g)
    fast = M.MaMARef(cfg, fast=True)
    fast.load_state_dict(slow.state_dict())
    slow, fast = slow.double().train(), fast.double().train()
    batch = MF.make_batch(cfg, torch.Generator().manual_seed(6))
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    ls = loss_of(slow, batch, 1)
    lf = loss_of(fast, batch, 1)
    ls.backward()
    lf.backward()
    gs = dict(slow.named_parameters())
    worst = 0.0
    for n, p in fast.named_parameters():
        if p.grad is not None:
            worst = max(worst, (p.grad - gs[n].grad).abs().max().item())
    report(abs(ls.item() - lf.item()) < 1e-10 and worst < 1e-10, "SDPA fast path == reference",
           f"loss diff {abs(ls.item() - lf.item()):.1e}, grad max diff {worst:.1e}")


def check_fixtures():
    from safetensors.torch import load_file
    d = os.path.join(HERE, "fixtures")
    if not os.path.isdir(d):
        report(False, "fixtures", "tests/ref/fixtures missing: run make_fixtures.py")
        return
    for name, (over, late) in MF.CASES.items():
        cfg = M.read_config(os.path.join(d, f"weights_{name}.safetensors"))
        w = load_file(os.path.join(d, f"weights_{name}.safetensors"))
        if cfg["text_mode"] == "lora":   # exercise the newer-PEFT base_layer name too
            w = {k.replace(".c_attn.weight", ".c_attn.base_layer.weight"): v for k, v in w.items()}
        b = load_file(os.path.join(d, f"batch_{name}.safetensors"))
        e = load_file(os.path.join(d, f"expected_{name}.safetensors"))
        worsts = {}
        for dt in (torch.float64, torch.float32):
            model = M.MaMARef(cfg)
            M.load_state(model, w)
            model = model.to(dt).train()
            model.set_trainable(late=bool(late))
            o = model(b["images"].to(dt), b["input_ids"], b["attention_mask"],
                      b["ext_images"].to(dt), late=bool(late))
            o["loss"].backward()
            params = dict(model.named_parameters())
            worst, wname, zabs = 0.0, "", 0.0
            for k, v in e.items():
                if k.startswith("grad."):
                    g = params[k[5:]].grad
                    got = torch.zeros_like(v) if g is None else g.float()
                elif k in o:
                    got = o[k].float().reshape(v.shape)
                else:
                    continue
                if v.abs().max() == 0:     # exact-zero grads: judged in absolute terms
                    zabs = max(zabs, got.abs().max().item())
                    continue
                err = ((got - v).abs().max() / v.abs().max()).item()
                if err > worst:
                    worst, wname = err, k
            worsts[dt] = (worst, wname, zabs)
        ngrad = sum(k.startswith("grad.") for k in e)
        w64, w32 = worsts[torch.float64], worsts[torch.float32]
        report(w64[0] < 1e-6 and w64[2] < 1e-9, f"fixture {name} reproduces",
               f"{len(e)} tensors ({ngrad} grads), worst norm-rel err {w64[0]:.1e}; "
               f"torch float32 would be off by {w32[0]:.1e} ({w32[1]}; exact-zero grads "
               f"within {w32[2]:.0e}); "
               f"loss {float(e['loss'][0]):.6f}")


def main():
    torch.manual_seed(0)
    groups = ["patch_embed", "blocks.0.attn.qkv", "blocks.1.ls1", "blocks.0.norm2", "cls_token",
              "register_tokens", "pos_embed", "img_encoder_q.global_embed", "head.0.weight",
              "head.1.", "head.3.bias", "wte", "wpe", "h.0.attn.c_attn", "h.1.mlp.c_proj",
              "ln_f", "lora_A", "lora_B", "text_encoder_q.global_embed", "simclr_proj.layers.0",
              "simclr_proj.layers.4", "logit_scale", "local_scale"]
    fd_check(dict(text_mode="full"), 1, groups, nper=2)
    fd_check(dict(text_mode="lora", text_attn_layer_scale=1), 1, groups, nper=2)
    fd_check(dict(text_mode="lora"), 0, groups, nper=2)
    fd_check(dict(text_mode="frozen"), 1, groups, nper=1)
    check_text_bn_per_caption()
    check_masks()
    check_losses()
    check_numpy_towers()
    check_fast_path()
    # trainable sets
    for mode in ("full", "lora", "frozen"):
        model = M.MaMARef(M.make_config(**{**MF.FIXTURE, "text_mode": mode}))
        t1, t0 = model.trainable_names(True), model.trainable_names(False)
        txt = [n for n in t1 if n.startswith("text_encoder_q.model.")]
        print(f"  trainable ({mode}): late {len(t1)} tensors, early {len(t0)}, "
              f"text-tower {len(txt)}")
    check_fixtures()
    npass = sum(RESULTS)
    print(f"{npass} passed, {len(RESULTS) - npass} failed")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
