"""Independent PyTorch reference of MaMA (SPEC A.1-A.4), for the parity tests of mama.h.

Written from /work/shared/SPEC.md part A with plain torch.nn.  Module names follow the
reference checkpoint names of SPEC A.8 exactly, so `model.state_dict()` is interchangeable
with the C side's safetensors files:

  img_encoder_q.model.*                      DINOv2 ViT with registers        (A.1)
  img_encoder_q.global_embed.{weight,bias}   linear D -> E                    (A.1)
  img_encoder_q.local_embed.head.{0,1,3,4}.* 1x1 Conv1d, BN, ReLU, Conv1d, BN (A.3)
  text_encoder_q.model.base_model.model.transformer.*  GPT-2 (+ LoRA on c_attn) (A.2)
  text_encoder_q.global_embed.*, text_encoder_q.local_embed.head.*              (A.2/A.3)
  simclr_proj.layers.{0,1,3,4}.*             Linear, BN, ReLU, Linear, BN     (A.3)
  logit_scale, local_scale                   scalars (shape [])               (A.3)

This file is deliberately straightforward (explicit softmax attention, loops over
captions).  `fast=True` in the config swaps the attention for
F.scaled_dot_product_attention; it is for the benchmark only.
"""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------

CONFIG_FIELDS = [
    "image_size", "patch_size", "vision_dim", "vision_depth", "vision_heads", "registers",
    "text_dim", "text_depth", "text_heads", "vocab_size", "context", "embed_dim",
    "local_hidden", "lora_rank", "lora_alpha", "lora_dropout", "text_dropout",
    "text_attn_layer_scale", "text_mode", "bos_id", "eos_id", "pad_id", "sep_id",
]


def special_ids(vocab_size):
    """Ids of the special tokens when the vocabulary is `base + 6 added tokens` (A.2):
    the added tokens follow the base vocabulary in the order bos, pad, mask, sep, unk,
    extra; eos is the base vocabulary's last token (<|endoftext|>)."""
    base = vocab_size - 6
    return dict(eos_id=base - 1, bos_id=base, pad_id=base + 1, sep_id=base + 3)


def make_config(**kw):
    cfg = dict(image_size=56, patch_size=14, vision_dim=48, vision_depth=2, vision_heads=3,
               registers=4, text_dim=32, text_depth=2, text_heads=2, vocab_size=2048,
               context=32, embed_dim=24, local_hidden=40, lora_rank=4, lora_alpha=16,
               lora_dropout=0.0, text_dropout=0.0, text_attn_layer_scale=0,
               text_mode="full")
    cfg.update(special_ids(kw.get("vocab_size", cfg["vocab_size"])))
    cfg.update(kw)
    assert cfg["text_mode"] in ("full", "lora", "frozen")
    return cfg


PRESETS = {
    # SPEC-free benchmark presets shared with the C benchmark
    "tiny": dict(image_size=112, patch_size=14, vision_dim=192, vision_depth=4, vision_heads=3,
                 registers=4, text_dim=192, text_depth=4, text_heads=3, vocab_size=2048,
                 context=128, embed_dim=128, local_hidden=512, text_mode="full",
                 lora_rank=8, lora_alpha=32),
    "small": dict(image_size=224, patch_size=14, vision_dim=384, vision_depth=12, vision_heads=6,
                  registers=4, text_dim=768, text_depth=12, text_heads=12, vocab_size=50263,
                  context=144, embed_dim=512, local_hidden=2048, text_mode="lora",
                  lora_rank=8, lora_alpha=32),
}


def config_json(cfg):
    """The `mama_config` metadata string: exactly CONFIG_FIELDS, ints as ints."""
    out = {}
    for k in CONFIG_FIELDS:
        v = cfg[k]
        if isinstance(v, bool):
            v = int(v)
        out[k] = v
    return json.dumps(out)


# --------------------------------------------------------------------------------------
# A.1  vision: DINOv2 ViT with registers
# --------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x):                      # [B,3,H,W] -> [B,N,D], row-major grid
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    def __init__(self, dim, heads, fast=False):
        super().__init__()
        self.heads, self.fast = heads, fast
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        B, T, D = x.shape
        H = self.heads
        hd = D // H
        # qkv features are laid out [q | k | v], each split into H heads of hd
        qkv = self.qkv(x).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                        # [B,H,T,hd]
        if self.fast:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
            o = att.softmax(dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


class ViTMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))                    # exact (erf) GELU


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, fast=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, heads, fast)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViTMlp(dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x


class DinoViT(nn.Module):
    def __init__(self, cfg, fast=False):
        super().__init__()
        D, P = cfg["vision_dim"], cfg["patch_size"]
        g = cfg["image_size"] // P
        self.R = cfg["registers"]
        self.N = g * g
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_tokens = nn.Parameter(torch.zeros(1, self.R, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.N, D))
        self.mask_token = nn.Parameter(torch.zeros(1, D))      # stored, unused, frozen
        self.patch_embed = PatchEmbed(P, D)
        self.blocks = nn.ModuleList([ViTBlock(D, cfg["vision_heads"], fast)
                                     for _ in range(cfg["vision_depth"])])
        self.norm = nn.LayerNorm(D, eps=1e-6)                   # frozen: feeds local branch only

    def forward(self, img):
        """Returns (x_prenorm [B,1+R+N,D], x_norm_patchtokens [B,N,D])."""
        B = img.shape[0]
        x = self.patch_embed(img)                                # [B,N,D]
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + self.pos_embed                                  # pos added to [cls, patches]
        x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return x, self.norm(x)[:, 1 + self.R:]


# --------------------------------------------------------------------------------------
# A.3  local embedding head (1x1 Conv1d - BN - ReLU - 1x1 Conv1d - BN(no affine))
# --------------------------------------------------------------------------------------

class LocalEmbed(nn.Module):
    def __init__(self, din, hidden, dout):
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv1d(din, hidden, kernel_size=1, bias=True),    # weight [hidden, din, 1]
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Conv1d(hidden, dout, kernel_size=1, bias=True),   # weight [dout, hidden, 1]
            nn.BatchNorm1d(dout, affine=False),
        )

    def forward(self, x):
        """x [G, L, din] -> L2-normalised [G, L, dout]; in train mode the BN statistics run
        over all G*L tokens of this call."""
        y = self.head(x.transpose(1, 2)).transpose(1, 2)
        return F.normalize(y, dim=-1)


# --------------------------------------------------------------------------------------
# A.2  text: GPT-2 with LoRA on c_attn
# --------------------------------------------------------------------------------------

class Conv1D(nn.Module):
    """GPT-2 linear: weight stored [in, out]; y = x W + b."""

    def __init__(self, nin, nout):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(nin, nout))
        self.bias = nn.Parameter(torch.zeros(nout))

    def forward(self, x):
        return x @ self.weight + self.bias


class LoraConv1D(Conv1D):
    """c_attn with an optional LoRA pair (PEFT 0.6 names: lora_A.default / lora_B.default).
    y = x W + b + (alpha / r) * (dropout(x) A^T) B^T, A [r, in], B [out, r]."""

    def __init__(self, nin, nout, rank=0, alpha=1.0, dropout=0.0):
        super().__init__(nin, nout)
        self.rank = rank
        if rank > 0:
            self.lora_A = nn.ModuleDict({"default": nn.Linear(nin, rank, bias=False)})
            self.lora_B = nn.ModuleDict({"default": nn.Linear(rank, nout, bias=False)})
            self.scaling = alpha / rank
            self.lora_dropout = dropout

    def forward(self, x):
        y = x @ self.weight + self.bias
        if self.rank > 0:
            xd = F.dropout(x, self.lora_dropout, self.training)
            y = y + self.scaling * self.lora_B["default"](self.lora_A["default"](xd))
        return y


class GPT2Attention(nn.Module):
    def __init__(self, cfg, layer_idx, fast=False):
        super().__init__()
        D = cfg["text_dim"]
        self.H = cfg["text_heads"]
        self.fast = fast
        self.p = cfg["text_dropout"]
        r = cfg["lora_rank"] if cfg["text_mode"] == "lora" else 0
        self.c_attn = LoraConv1D(D, 3 * D, r, cfg["lora_alpha"], cfg["lora_dropout"])
        self.c_proj = Conv1D(D, D)
        # scale_attn_by_inverse_layer_idx: scores further divided by (layer_idx + 1)
        self.layer_div = float(layer_idx + 1) if cfg["text_attn_layer_scale"] else 1.0

    def forward(self, x, allowed):
        """allowed [B,1,T,T] bool: key j visible to query i (causal and not padding)."""
        B, T, D = x.shape
        H = self.H
        hd = D // H
        q, k, v = self.c_attn(x).split(D, dim=2)
        q = q.reshape(B, T, H, hd).transpose(1, 2)
        k = k.reshape(B, T, H, hd).transpose(1, 2)
        v = v.reshape(B, T, H, hd).transpose(1, 2)
        scale = 1.0 / (math.sqrt(hd) * self.layer_div)
        if self.fast:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                               dropout_p=self.p if self.training else 0.0,
                                               scale=scale)
        else:
            att = (q @ k.transpose(-2, -1)) * scale
            att = att.masked_fill(~allowed, float("-inf"))
            att = F.dropout(att.softmax(dim=-1), self.p, self.training)
            o = att @ v
        o = self.c_proj(o.transpose(1, 2).reshape(B, T, D))
        return F.dropout(o, self.p, self.training)


class GPT2Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D = cfg["text_dim"]
        self.p = cfg["text_dropout"]
        self.c_fc = Conv1D(D, 4 * D)
        self.c_proj = Conv1D(4 * D, D)

    def forward(self, x):
        h = F.gelu(self.c_fc(x), approximate="tanh")
        return F.dropout(self.c_proj(h), self.p, self.training)


class GPT2Block(nn.Module):
    def __init__(self, cfg, i, fast=False):
        super().__init__()
        D = cfg["text_dim"]
        self.ln_1 = nn.LayerNorm(D, eps=1e-5)
        self.attn = GPT2Attention(cfg, i, fast)
        self.ln_2 = nn.LayerNorm(D, eps=1e-5)
        self.mlp = GPT2Mlp(cfg)

    def forward(self, x, allowed):
        x = x + self.attn(self.ln_1(x), allowed)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT2(nn.Module):
    def __init__(self, cfg, fast=False):
        super().__init__()
        D = cfg["text_dim"]
        self.p = cfg["text_dropout"]
        self.wte = nn.Embedding(cfg["vocab_size"], D)
        self.wpe = nn.Embedding(cfg["context"], D)
        self.h = nn.ModuleList([GPT2Block(cfg, i, fast) for i in range(cfg["text_depth"])])
        self.ln_f = nn.LayerNorm(D, eps=1e-5)

    def forward(self, ids, mask):
        B, T = ids.shape
        pos = torch.arange(T, device=ids.device)
        x = F.dropout(self.wte(ids) + self.wpe(pos)[None], self.p, self.training)
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        allowed = (causal[None] & mask.bool()[:, None, :])[:, None]    # [B,1,T,T]
        for blk in self.h:
            x = blk(x, allowed)
        return self.ln_f(x)                                    # features after ln_f


class _Holder(nn.Module):
    """Empty container, only to reproduce PEFT's `model.base_model.model.` name path."""


# --------------------------------------------------------------------------------------
# encoders and the full model
# --------------------------------------------------------------------------------------

class ImageEncoder(nn.Module):
    def __init__(self, cfg, fast=False):
        super().__init__()
        D, E = cfg["vision_dim"], cfg["embed_dim"]
        self.model = DinoViT(cfg, fast)
        self.global_embed = nn.Linear(D, E)
        self.local_embed = LocalEmbed(D, cfg["local_hidden"], E)


class TextEncoder(nn.Module):
    def __init__(self, cfg, fast=False):
        super().__init__()
        D, E = cfg["text_dim"], cfg["embed_dim"]
        self.model = _Holder()
        self.model.base_model = _Holder()
        self.model.base_model.model = _Holder()
        self.model.base_model.model.transformer = GPT2(cfg, fast)
        self.global_embed = nn.Linear(D, E)
        self.local_embed = LocalEmbed(D, cfg["local_hidden"], E)

    @property
    def transformer(self):
        return self.model.base_model.model.transformer


class SimCLRProj(nn.Module):
    def __init__(self, D, E):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(D, D, bias=False), nn.BatchNorm1d(D), nn.ReLU(),
                                    nn.Linear(D, E, bias=False), nn.BatchNorm1d(E))

    def forward(self, x):
        return self.layers(x)


def clip_loss(S):
    """Symmetric CE over a BxB logit matrix (diagonal = positives), mean over batch each."""
    t = torch.arange(S.shape[0], device=S.device)
    return F.cross_entropy(S, t) + F.cross_entropy(S.t(), t)


def nt_xent(a, b, temperature=0.5):
    """Multi-view NT-Xent: z = normalize([a; b]); logits z z^T / T without the diagonal;
    the positive of row i is i+B (and of i+B is i); CE averaged over the 2B rows."""
    B = a.shape[0]
    z = F.normalize(torch.cat([a, b], dim=0), dim=1)
    sim = (z @ z.t()) / temperature
    eye = torch.eye(2 * B, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    t = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(sim, t)


class MaMARef(nn.Module):
    def __init__(self, cfg, fast=False, text_pool="all"):
        super().__init__()
        self.cfg = dict(cfg)
        self.text_pool = text_pool           # "all" (reference default) or "real"
        self.img_encoder_q = ImageEncoder(cfg, fast)
        self.text_encoder_q = TextEncoder(cfg, fast)
        self.simclr_proj = SimCLRProj(cfg["vision_dim"], cfg["embed_dim"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.local_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.set_trainable(late=True)

    # ---- parameter sets ------------------------------------------------------------
    def trainable_names(self, late=True):
        """Names of the parameters that train (SPEC A.2, A.3, A.5)."""
        mode = self.cfg["text_mode"]
        out = []
        for n, _ in self.named_parameters():
            if n.startswith("img_encoder_q.model."):
                if n.startswith("img_encoder_q.model.norm.") or n == "img_encoder_q.model.mask_token":
                    continue
            elif n.startswith("text_encoder_q.model."):
                if mode == "frozen":
                    continue
                if mode == "lora" and ".lora_A." not in n and ".lora_B." not in n:
                    continue
            elif (n.startswith("img_encoder_q.local_embed.") or n.startswith("text_encoder_q.local_embed.")
                  or n.startswith("simclr_proj.") or n == "local_scale"):
                if not late:
                    continue
            out.append(n)
        return out

    def set_trainable(self, late=True):
        keep = set(self.trainable_names(late))
        for n, p in self.named_parameters():
            p.requires_grad_(n in keep)

    # ---- encoders ------------------------------------------------------------------
    def encode_image(self, img):
        """-> dict(emb [B,E] L2-normalised, pooled [B,D], patch_norm [B,N,D])."""
        enc = self.img_encoder_q
        x_prenorm, patch_norm = enc.model(img)
        pooled = x_prenorm.mean(dim=1)                   # mean over ALL tokens
        emb = F.normalize(enc.global_embed(pooled), dim=-1)
        return dict(emb=emb, pooled=pooled, patch_norm=patch_norm)

    def image_local(self, patch_norm):
        """[B,N,D] -> [B,N,E]; BN statistics over all B*N patches."""
        return self.img_encoder_q.local_embed(patch_norm)

    def encode_text(self, ids, mask):
        """-> dict(emb [B,E], hidden [B,T,Dt])."""
        enc = self.text_encoder_q
        h = enc.transformer(ids, mask)
        if self.text_pool == "all":
            feat = h.mean(dim=1)                         # all T positions, padding included
        else:
            m = mask.to(h.dtype)[..., None]
            feat = (h * m).sum(1) / m.sum(1)
        emb = F.normalize(enc.global_embed(feat), dim=-1)
        return dict(emb=emb, hidden=h)

    def text_local(self, ids, hidden):
        """Sentence embeddings: hidden states at sep positions, local head applied to each
        caption separately (BN statistics over that caption's sentences only)."""
        sep = self.cfg["sep_id"]
        out = []
        for j in range(ids.shape[0]):
            pos = (ids[j] == sep).nonzero(as_tuple=True)[0]
            s = hidden[j, pos][None]                     # [1,S_j,Dt]
            out.append(self.text_encoder_q.local_embed(s)[0])
        return out

    # ---- losses --------------------------------------------------------------------
    def sla_scores(self, p, sents):
        """p [B,N,E] patch embeddings; sents list of [S_j,E].
        t2i[i,j] = mean_s max_p (p_i s_j^T);  i2t[i,j] = mean_p max_s (p_i s_j^T)."""
        t2i, i2t = [], []
        for s in sents:
            sim = p @ s.t()                              # [B,N,S_j]
            t2i.append(sim.max(dim=1).values.mean(dim=1))
            i2t.append(sim.max(dim=2).values.mean(dim=1))
        return torch.stack(t2i, dim=1), torch.stack(i2t, dim=1)   # [B(img), B(txt)]

    def forward(self, images, input_ids, attention_mask, ext_images=None, late=True):
        """Full training forward (train mode expected). Returns a dict with the losses and
        intermediate tensors."""
        o = {}
        img = self.encode_image(images)
        txt = self.encode_text(input_ids, attention_mask)
        o["img_emb"], o["txt_emb"] = img["emb"], txt["emb"]
        o["img_pooled"], o["txt_hidden"] = img["pooled"], txt["hidden"]
        S = self.logit_scale.exp() * img["emb"] @ txt["emb"].t()
        o["loss_clip"] = clip_loss(S)
        zero = S.new_zeros(())
        o["loss_mv"] = o["loss_sym"] = o["loss_sla"] = zero
        if late:
            ext = self.encode_image(ext_images)
            o["ext_emb"], o["ext_pooled"] = ext["emb"], ext["pooled"]
            # multi-view: SimCLR head called separately on each batch (own BN statistics)
            za = self.simclr_proj(img["pooled"])
            zb = self.simclr_proj(ext["pooled"])
            o["loss_mv"] = nt_xent(za, zb, 0.5)
            # symmetric CLIP: ext image vs the same text embeddings
            o["loss_sym"] = clip_loss(self.logit_scale.exp() * ext["emb"] @ txt["emb"].t())
            # SLA on the main image's patches
            p = self.image_local(img["patch_norm"])
            sents = self.text_local(input_ids, txt["hidden"])
            t2i, i2t = self.sla_scores(p, sents)
            ls = self.local_scale.exp()
            t2i, i2t = ls * t2i, ls * i2t
            o["img_local"], o["sent_local"] = p, torch.cat(sents, dim=0)
            o["t2i"], o["i2t"] = t2i, i2t
            o["loss_sla"] = clip_loss(t2i) + clip_loss(i2t)
        o["loss"] = o["loss_clip"] + o["loss_mv"] + o["loss_sym"] + o["loss_sla"]
        return o


# --------------------------------------------------------------------------------------
# initialisation and I/O helpers
# --------------------------------------------------------------------------------------

def init_random(model, gen, scale=1.0):
    """Moderate-scale random initialisation for parity fixtures: every tensor non-trivial
    (LoRA B non-zero, LN/BN affine near 1, LayerScale near 1, random running stats)."""
    def rn(t, std, mean=0.0):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32) * std + mean)

    for n, p in model.named_parameters():
        last = n.rsplit(".", 1)[-1]
        dims = p.shape
        if n in ("logit_scale", "local_scale"):
            rn(p, 0.1, math.log(1 / 0.07))
        elif last == "gamma":                               # LayerScale
            rn(p, 0.1, 1.0)
        elif p.dim() == 1 and last == "weight":             # LN / BN affine scale
            rn(p, 0.1, 1.0)
        elif last == "bias":
            rn(p, 0.05)
        elif "token" in last or last == "pos_embed":
            rn(p, 0.1)
        elif last in ("weight",) and p.dim() >= 2:
            if "wte" in n or "wpe" in n:
                rn(p, 0.5)
            elif ".lora_B." in n:                           # keep the LoRA branch ~ base size
                rn(p, 0.25 / math.sqrt(dims[1]))
            else:
                # fan-in: [out,in] for nn.Linear / conv ([out,in,k...]); [in,out] for GPT-2 Conv1D
                if isinstance(model.get_submodule(n.rsplit(".", 1)[0]), Conv1D):
                    fan_in = dims[0]
                else:
                    fan_in = p[0].numel()
                rn(p, scale / math.sqrt(fan_in))
        else:
            rn(p, 0.1)
    for n, b in model.named_buffers():
        with torch.no_grad():
            if n.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.2)
            elif n.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
            elif n.endswith("num_batches_tracked"):
                b.fill_(int(torch.randint(1, 20, (1,), generator=gen)))


def state_for_save(model):
    """state_dict as float32 (num_batches_tracked stays int64), contiguous."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        if v.is_floating_point():
            v = v.float()
        out[k] = v.contiguous().clone()
    return out


def load_state(model, sd):
    """Loads an A.8 state dict; accepts `c_attn.base_layer.weight` (newer PEFT) too."""
    fixed = {}
    for k, v in sd.items():
        fixed[k.replace(".c_attn.base_layer.", ".c_attn.")] = v
    model.load_state_dict(fixed, strict=True)


def read_config(path):
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return json.loads(f.metadata()["mama_config"])
