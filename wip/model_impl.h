/* ==========================================================================
 * 5. TOWERS: ViT (A.1), GPT-2 + LoRA (A.2), heads (A.3)
 * ========================================================================== */

/* ---- 5.1 Configuration presets ---------------------------------------- */

MAMA_API mama_status mama_config_preset(mama_config *c, const char *name) {
    memset(c, 0, sizeof *c);
    c->patch_size = 14;
    c->registers = 4;
    c->in_chans = 3;
    c->lora_rank = 8;
    c->lora_alpha = 32.0f;
    c->lora_dropout = 0.0f;
    c->text_dropout = 0.0f;
    c->embed_dim = 512;
    c->local_hidden = 2048;
    if (!name) return MAMA_FAIL(MAMA_ERR_INVALID, "config preset name is NULL");
    if (!strcmp(name, "tiny")) {
        c->image_size = 112; c->vision_dim = 192; c->vision_depth = 4; c->vision_heads = 3;
        c->text_dim = 192; c->text_depth = 4; c->text_heads = 3; c->vocab_size = 2048; c->context = 128;
        c->embed_dim = 128; c->local_hidden = 512; c->text_mode = MAMA_TEXT_FULL;
        /* from-scratch text tower: pool real tokens only (SPEC A.2) */
        c->text_pool_real_only = 1;
    } else if (!strcmp(name, "small")) {
        c->image_size = 224; c->vision_dim = 384; c->vision_depth = 12; c->vision_heads = 6;
        c->text_dim = 768; c->text_depth = 12; c->text_heads = 12; c->vocab_size = 50263; c->context = 144;
        c->text_mode = MAMA_TEXT_LORA;
    } else if (!strcmp(name, "base")) {
        c->image_size = 518; c->vision_dim = 768; c->vision_depth = 12; c->vision_heads = 12;
        c->text_dim = 2560; c->text_depth = 32; c->text_heads = 20; c->vocab_size = 28902; c->context = 144;
        c->text_attn_layer_scale = 1; c->text_dropout = 0.1f; c->lora_dropout = 0.1f;
        c->text_mode = MAMA_TEXT_LORA;
    } else {
        return MAMA_FAIL(MAMA_ERR_INVALID, "unknown config preset '%s' (expected tiny, small or base)", name);
    }
    /* Special tokens follow the base vocabulary (SPEC A.2): the six added
     * tokens are the last six ids; eos is the base vocabulary's last one. */
    c->bos_id = c->vocab_size - 6;
    c->pad_id = c->vocab_size - 5;
    c->sep_id = c->vocab_size - 3;
    c->eos_id = c->vocab_size - 7;
    return MAMA_OK;
}

MAMA_API mama_status mama_config_validate(const mama_config *c) {
#define MAMA__CHECK(cond, ...) do { if (!(cond)) return MAMA_FAIL(MAMA_ERR_INVALID, __VA_ARGS__); } while (0)
    MAMA__CHECK(c->patch_size > 0 && c->image_size > 0 && c->image_size % c->patch_size == 0,
                "config: image_size %d must be a positive multiple of patch_size %d", c->image_size, c->patch_size);
    MAMA__CHECK(c->vision_dim > 0 && c->vision_heads > 0 && c->vision_dim % c->vision_heads == 0,
                "config: vision_dim %d must be divisible by vision_heads %d", c->vision_dim, c->vision_heads);
    MAMA__CHECK(c->text_dim > 0 && c->text_heads > 0 && c->text_dim % c->text_heads == 0,
                "config: text_dim %d must be divisible by text_heads %d", c->text_dim, c->text_heads);
    MAMA__CHECK(c->vision_dim / c->vision_heads <= 256 && c->text_dim / c->text_heads <= 256,
                "config: head dimension above 256 is not supported");
    MAMA__CHECK(c->vision_depth >= 1 && c->text_depth >= 1, "config: depths must be >= 1");
    MAMA__CHECK(c->registers >= 0, "config: registers must be >= 0");
    MAMA__CHECK(c->in_chans == 1 || c->in_chans == 3, "config: in_chans must be 1 or 3 (got %d)", c->in_chans);
    MAMA__CHECK(c->vocab_size > 0 && c->context > 0, "config: vocab_size and context must be positive");
    MAMA__CHECK(c->embed_dim > 0 && c->local_hidden > 0, "config: embed_dim and local_hidden must be positive");
    MAMA__CHECK(c->text_mode >= MAMA_TEXT_FULL && c->text_mode <= MAMA_TEXT_FROZEN, "config: bad text_mode %d", (int)c->text_mode);
    MAMA__CHECK(c->text_mode != MAMA_TEXT_LORA || c->lora_rank > 0, "config: lora_rank must be positive in lora mode");
    MAMA__CHECK(c->text_dropout >= 0 && c->text_dropout < 1 && c->lora_dropout >= 0 && c->lora_dropout < 1,
                "config: dropout probabilities must be in [0, 1)");
    MAMA__CHECK(c->bos_id >= 0 && c->bos_id < c->vocab_size && c->eos_id >= 0 && c->eos_id < c->vocab_size &&
                c->pad_id >= 0 && c->pad_id < c->vocab_size && c->sep_id >= 0 && c->sep_id < c->vocab_size,
                "config: special token ids (bos %d eos %d pad %d sep %d) must lie in the vocabulary of %d",
                c->bos_id, c->eos_id, c->pad_id, c->sep_id, c->vocab_size);
#undef MAMA__CHECK
    return MAMA_OK;
}

static const char *mama__text_mode_name(mama_text_mode m) {
    return m == MAMA_TEXT_LORA ? "lora" : m == MAMA_TEXT_FROZEN ? "frozen" : "full";
}

MAMA_API mama_status mama_config_to_json(const mama_config *c, char *out, size_t cap) {
    int n = snprintf(out, cap,
        "{\"image_size\":%d,\"patch_size\":%d,\"vision_dim\":%d,\"vision_depth\":%d,\"vision_heads\":%d,"
        "\"registers\":%d,\"in_chans\":%d,\"text_dim\":%d,\"text_depth\":%d,\"text_heads\":%d,\"vocab_size\":%d,"
        "\"context\":%d,\"embed_dim\":%d,\"local_hidden\":%d,\"lora_rank\":%d,\"lora_alpha\":%.9g,"
        "\"lora_dropout\":%.9g,\"text_dropout\":%.9g,\"text_attn_layer_scale\":%d,\"text_mode\":\"%s\","
        "\"text_pool\":\"%s\",\"bos_id\":%d,\"eos_id\":%d,\"pad_id\":%d,\"sep_id\":%d}",
        c->image_size, c->patch_size, c->vision_dim, c->vision_depth, c->vision_heads, c->registers, c->in_chans,
        c->text_dim, c->text_depth, c->text_heads, c->vocab_size, c->context, c->embed_dim, c->local_hidden,
        c->lora_rank, (double)c->lora_alpha, (double)c->lora_dropout, (double)c->text_dropout,
        c->text_attn_layer_scale, mama__text_mode_name(c->text_mode),
        c->text_pool_real_only ? "real" : "all", c->bos_id, c->eos_id, c->pad_id, c->sep_id);
    if (n < 0 || (size_t)n >= cap) return MAMA_FAIL(MAMA_ERR_INVALID, "config JSON does not fit in %zu bytes", cap);
    return MAMA_OK;
}

MAMA_API mama_status mama_config_from_json(mama_config *c, const char *json, const char *source) {
    static const char *const int_keys[] = {"image_size", "patch_size", "vision_dim", "vision_depth", "vision_heads",
        "registers", "in_chans", "text_dim", "text_depth", "text_heads", "vocab_size", "context", "embed_dim",
        "local_hidden", "lora_rank", "text_attn_layer_scale", "bos_id", "eos_id", "pad_id", "sep_id"};
    int *const int_slots[] = {&c->image_size, &c->patch_size, &c->vision_dim, &c->vision_depth, &c->vision_heads,
        &c->registers, &c->in_chans, &c->text_dim, &c->text_depth, &c->text_heads, &c->vocab_size, &c->context,
        &c->embed_dim, &c->local_hidden, &c->lora_rank, &c->text_attn_layer_scale, &c->bos_id, &c->eos_id,
        &c->pad_id, &c->sep_id};
    static const char *const float_keys[] = {"lora_alpha", "lora_dropout", "text_dropout"};
    float *const float_slots[] = {&c->lora_alpha, &c->lora_dropout, &c->text_dropout};
    mama_json *root = NULL;
    const mama_json *v;
    size_t i;
    MAMA_TRY(mama_json_parse(json, strlen(json), source, &root));
    if (root->type != MAMA_JSON_OBJECT) {
        mama_json_free(root);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config is not a JSON object", source ? source : "config");
    }
    for (i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
        v = mama_json_get(root, int_keys[i]);
        if (!v) continue;
        if (v->type != MAMA_JSON_NUMBER && v->type != MAMA_JSON_BOOL) {
            mama_json_free(root);
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config field '%s' is not a number", source ? source : "config", int_keys[i]);
        }
        *int_slots[i] = (int)v->number;
    }
    for (i = 0; i < sizeof float_keys / sizeof float_keys[0]; i++) {
        v = mama_json_get(root, float_keys[i]);
        if (!v) continue;
        if (v->type != MAMA_JSON_NUMBER) {
            mama_json_free(root);
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config field '%s' is not a number", source ? source : "config", float_keys[i]);
        }
        *float_slots[i] = (float)v->number;
    }
    v = mama_json_get(root, "text_mode");
    if (v) {
        if (v->type == MAMA_JSON_STRING && !strcmp(v->string, "full")) c->text_mode = MAMA_TEXT_FULL;
        else if (v->type == MAMA_JSON_STRING && !strcmp(v->string, "lora")) c->text_mode = MAMA_TEXT_LORA;
        else if (v->type == MAMA_JSON_STRING && !strcmp(v->string, "frozen")) c->text_mode = MAMA_TEXT_FROZEN;
        else {
            mama_json_free(root);
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config field 'text_mode' must be \"full\", \"lora\" or \"frozen\"", source ? source : "config");
        }
    }
    v = mama_json_get(root, "text_pool");
    if (v && v->type == MAMA_JSON_STRING) c->text_pool_real_only = !strcmp(v->string, "real");
    mama_json_free(root);
    return mama_config_validate(c);
}

/* ---- 5.2 Parameter pointers.  One struct of pointers for the weights and a
 * second, identical one for the gradients (NULL where a tensor does not
 * train), both carved out of single buffers. */
typedef struct mama__vit_block {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ls1;
    float *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *ls2;
} mama__vit_block;

typedef struct mama__gpt_block {
    float *ln1_w, *ln1_b, *attn_w, *attn_b, *lora_a, *lora_b, *attn_proj_w, *attn_proj_b;
    float *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
} mama__gpt_block;

/* local embedding head: conv1x1 -> BN -> ReLU -> conv1x1 -> BN (no affine) */
typedef struct mama__local_head {
    float *w1, *b1, *bn1_w, *bn1_b, *bn1_mean, *bn1_var, *w2, *b2, *bn2_mean, *bn2_var;
} mama__local_head;

/* SimCLR projection: linear -> BN -> ReLU -> linear -> BN */
typedef struct mama__simclr_head {
    float *w1, *bn1_w, *bn1_b, *bn1_mean, *bn1_var, *w2, *bn2_w, *bn2_b, *bn2_mean, *bn2_var;
} mama__simclr_head;

typedef struct mama__weights {
    /* vision */
    float *cls_token, *register_tokens, *pos_embed, *mask_token, *patch_w, *patch_b;
    mama__vit_block *vit;
    float *norm_w, *norm_b, *img_global_w, *img_global_b;
    mama__local_head img_local;
    /* text */
    float *wte, *wpe;
    mama__gpt_block *gpt;
    float *ln_f_w, *ln_f_b, *txt_global_w, *txt_global_b;
    mama__local_head txt_local;
    /* joint */
    mama__simclr_head simclr;
    float *logit_scale, *local_scale;
} mama__weights;

/* The parameter visitor: the single place that lists every tensor, its
 * A.8 name, shape and group.  It runs three times: to count, to assign
 * offsets, and to bind pointers.  `slot` is the address of the pointer in
 * the weight struct; the gradient struct has the same layout, so its slot is
 * found by the same offset. */
/* Where the visitor binds pointers: the weight struct `w` gets
 * wbase + offset, the gradient struct `g` gets gbase + offset for tensors
 * that train (NULL otherwise; g may be NULL). */
typedef struct mama__bind {
    mama__weights *w, *g;
    float *wbase, *gbase;
} mama__bind;

#define MAMA_MAX_PARAMS_NAME 128
#define MAMA_MAX_SENTENCES 32 /* sentences (sep tokens) per caption */

/* Saved activations of one transformer block (both towers use it; unused
 * fields stay NULL).  With gradient checkpointing every block shares one of
 * these and the backward recomputes the block from its saved input. */
typedef struct mama__block_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *lora_in, *lora_u, *att, *lse, *proj, *xmid;
    float *ln2, *ln2_mean, *ln2_rstd, *fc, *gelu, *fc2;
} mama__block_acts;

/* Everything one step needs, carved from one arena sized at creation. */
typedef struct mama__acts {
    /* vision: Bv = 2 * max_batch images (main + ext) */
    float *images, *cols, *patch_out;
    float **vres;               /* depth+1 residual streams [Bv*Tv, D] */
    mama__block_acts *vblk;     /* depth (or 1 with checkpointing) */
    float *vpooled, *img_g, *img_emb, *img_gnorm;
    float *vnorm, *vnorm_mean, *vnorm_rstd, *patches;
    int *patch_idx;
    /* image local head */
    float *il_h1, *il_bn1, *il_bn1_mean, *il_bn1_rstd, *il_relu, *il_h2, *il_bn2, *il_bn2_mean,
          *il_bn2_rstd, *p_emb, *p_norm;
    /* text */
    int *ids, *pos_ids, *key_valid;
    float *pool_mask;
    float **tres;
    mama__block_acts *tblk;
    float *hidden, *lnf_mean, *lnf_rstd, *tpool, *txt_g, *txt_emb, *txt_gnorm;
    int *sent_idx, *sent_seg, *img_seg;
    float *sent, *tl_h1, *tl_bn1, *tl_bn1_mean, *tl_bn1_rstd, *tl_relu, *tl_h2, *tl_bn2, *tl_bn2_mean,
          *tl_bn2_rstd, *s_emb, *s_norm;
    /* simclr on [image; ext] pooled features */
    float *sc_h1, *sc_bn1, *sc_bn1_mean, *sc_bn1_rstd, *sc_relu, *sc_h2, *sc_z, *sc_bn2_mean,
          *sc_bn2_rstd, *sc_zn, *sc_norm;
    /* losses */
    float *logits, *logits_t, *ce_loss, *ce_probs, *ce_probs_t, *dlogits, *dlogits_t, *ce_dloss;
    int *targets_diag, *targets_ntx;
    float *ntx_sim, *ntx_probs, *ntx_loss, *ntx_dsim, *ntx_dloss;
    float *sla_sim, *sla_simt, *sla_rowmax, *sla_colmax, *sla_avg, *sla_t2i, *sla_t2i_t, *sla_i2t;
    int *sla_rowarg, *sla_colarg;
    float *sla_dsim, *sla_dsimt, *sla_drowmax, *sla_dcolmax, *sla_dt2i, *sla_dt2i_t, *sla_di2t;
    /* gradient scratch */
    float *d_img_emb, *d_img_g, *d_vpooled, *d_vx, *d_vx2, *d_vnorm, *d_patches, *d_patch_out;
    float *d_rows_d, *d_rows_d2, *d_rows_3d, *d_rows_4d, *d_rows_4d2, *d_rows_r;
    float *d_txt_emb, *d_txt_g, *d_tpool, *d_hidden, *d_tx, *d_tx2;
    float *d_il_a, *d_il_b, *d_il_e, *d_il_e2, *d_p_emb;
    float *d_tl_a, *d_tl_b, *d_tl_e, *d_tl_e2, *d_s_emb, *d_sent;
    float *d_sc_zn, *d_sc_z, *d_sc_e, *d_sc_a, *d_sc_b;
} mama__acts;

struct mama_model {
    mama_config cfg;
    mama_backend *be;
    int max_batch;
    int n_vtok, n_patches;       /* Tv = 1 + R + N, N */
    /* parameters */
    int nparams;
    mama_param_info *info;
    size_t group_numel[4], group_offset[4];
    float *params, *grads;
    mama__weights w, g;
    int64_t bn_batches[6];       /* num_batches_tracked of the six BatchNorms */
    /* activations */
    float *arena;
    size_t arena_floats;
    mama__acts a;
    /* host staging for one batch's small index arrays */
    int *h_ints;
    float *h_floats;
    int *h_sent_seg;             /* [max_batch + 1] caption sentence offsets */
    int last_B, last_S, last_late;
};

MAMA_API const mama_config *mama_model_config(const mama_model *m) { return &m->cfg; }
MAMA_API int mama_model_param_count(const mama_model *m) { return m->nparams; }
MAMA_API const mama_param_info *mama_model_param(const mama_model *m, int i) {
    return (i >= 0 && i < m->nparams) ? &m->info[i] : NULL;
}
MAMA_API const mama_param_info *mama_model_find_param(const mama_model *m, const char *name) {
    int i;
    for (i = 0; i < m->nparams; i++)
        if (!strcmp(m->info[i].name, name)) return &m->info[i];
    return NULL;
}
MAMA_API size_t mama_model_numel(const mama_model *m, mama_param_group g) { return m->group_numel[g]; }
MAMA_API float *mama_model_params(mama_model *m) { return m->params; }
MAMA_API float *mama_model_grads(mama_model *m) { return m->grads; }

/* One tensor for the visitor.  Without a bind context (counting pass) it
 * adds up group sizes; with one it records the tensor's info and binds
 * the pointers. */
static void mama__param(mama_model *m, const mama__bind *bind, size_t *cursor, const char *name,
                        mama_param_group group, float **wslot, float **gslot, int ndim,
                        int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    size_t numel = 1;
    int64_t dims[4];
    int i;
    mama_param_info *p;
    dims[0] = d0; dims[1] = d1; dims[2] = d2; dims[3] = d3;
    for (i = 0; i < ndim; i++) numel *= (size_t)dims[i];
    if (!bind) {
        m->group_numel[group] += numel;
        m->nparams++;
        return;
    }
    p = &m->info[m->nparams++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    for (i = 0; i < 4; i++) p->shape[i] = i < ndim ? dims[i] : 1;
    p->numel = numel;
    p->group = group;
    p->offset = m->group_offset[group] + cursor[group];
    cursor[group] += numel;
    *wslot = bind->wbase + p->offset;
    if (gslot) *gslot = (bind->gbase && group <= MAMA_GROUP_LATE) ? bind->gbase + p->offset : NULL;
}

static void mama__visit_local_head(mama_model *m, const mama__bind *bind, size_t *cur, const char *prefix,
                                   int in, mama__local_head *w, mama__local_head *g) {
    char n[MAMA_MAX_PARAMS_NAME];
    int H = m->cfg.local_hidden, E = m->cfg.embed_dim;
    float *unused = NULL;
#define MAMA__P(suffix, grp, field, ...) \
    (snprintf(n, sizeof n, "%s%s", prefix, suffix), \
     mama__param(m, bind, cur, n, grp, &w->field, g ? &g->field : NULL, __VA_ARGS__))
    MAMA__P("head.0.weight", MAMA_GROUP_LATE, w1, 3, H, in, 1, 1);
    MAMA__P("head.0.bias", MAMA_GROUP_LATE, b1, 1, H, 1, 1, 1);
    MAMA__P("head.1.weight", MAMA_GROUP_LATE, bn1_w, 1, H, 1, 1, 1);
    MAMA__P("head.1.bias", MAMA_GROUP_LATE, bn1_b, 1, H, 1, 1, 1);
    MAMA__P("head.1.running_mean", MAMA_GROUP_BUFFER, bn1_mean, 1, H, 1, 1, 1);
    MAMA__P("head.1.running_var", MAMA_GROUP_BUFFER, bn1_var, 1, H, 1, 1, 1);
    MAMA__P("head.3.weight", MAMA_GROUP_LATE, w2, 3, E, H, 1, 1);
    MAMA__P("head.3.bias", MAMA_GROUP_LATE, b2, 1, E, 1, 1, 1);
    MAMA__P("head.4.running_mean", MAMA_GROUP_BUFFER, bn2_mean, 1, E, 1, 1, 1);
    MAMA__P("head.4.running_var", MAMA_GROUP_BUFFER, bn2_var, 1, E, 1, 1, 1);
#undef MAMA__P
    (void)unused;
}

/* Every tensor of the model, in A.8 names.  The order inside a group is the
 * order here; the groups themselves are laid out train | late | frozen |
 * buffers. */
static void mama__visit_params(mama_model *m, const mama__bind *bind) {
    mama_config *c = &m->cfg;
    mama__weights *w = bind ? bind->w : &m->w, *g = bind ? bind->g : NULL;
    size_t cur[4] = {0, 0, 0, 0};
    char n[MAMA_MAX_PARAMS_NAME];
    int D = c->vision_dim, Dt = c->text_dim, E = c->embed_dim, P = c->patch_size;
    int N = m->n_patches, l;
    mama_param_group tg = c->text_mode == MAMA_TEXT_FULL ? MAMA_GROUP_TRAIN : MAMA_GROUP_FROZEN;
    const char *vp = "img_encoder_q.model.";
    const char *tp = "text_encoder_q.model.base_model.model.transformer.";
    m->nparams = 0;
#define MAMA__P(grp, field, ...) mama__param(m, bind, cur, n, grp, &w->field, g ? &g->field : NULL, __VA_ARGS__)
#define MAMA__NAME(...) snprintf(n, sizeof n, __VA_ARGS__)
    MAMA__NAME("%scls_token", vp); MAMA__P(MAMA_GROUP_TRAIN, cls_token, 3, 1, 1, D, 1);
    MAMA__NAME("%sregister_tokens", vp); MAMA__P(MAMA_GROUP_TRAIN, register_tokens, 3, 1, c->registers, D, 1);
    MAMA__NAME("%spos_embed", vp); MAMA__P(MAMA_GROUP_TRAIN, pos_embed, 3, 1, 1 + N, D, 1);
    MAMA__NAME("%smask_token", vp); MAMA__P(MAMA_GROUP_FROZEN, mask_token, 2, 1, D, 1, 1);
    MAMA__NAME("%spatch_embed.proj.weight", vp); MAMA__P(MAMA_GROUP_TRAIN, patch_w, 4, D, c->in_chans, P, P);
    MAMA__NAME("%spatch_embed.proj.bias", vp); MAMA__P(MAMA_GROUP_TRAIN, patch_b, 1, D, 1, 1, 1);
    for (l = 0; l < c->vision_depth; l++) {
        mama__vit_block *wb = &w->vit[l], *gb = g ? &g->vit[l] : NULL;
#define MAMA__B(suffix, field, ...) (MAMA__NAME("%sblocks.%d.%s", vp, l, suffix), \
        mama__param(m, bind, cur, n, MAMA_GROUP_TRAIN, &wb->field, gb ? &gb->field : NULL, __VA_ARGS__))
        MAMA__B("norm1.weight", ln1_w, 1, D, 1, 1, 1);
        MAMA__B("norm1.bias", ln1_b, 1, D, 1, 1, 1);
        MAMA__B("attn.qkv.weight", qkv_w, 2, 3 * D, D, 1, 1);
        MAMA__B("attn.qkv.bias", qkv_b, 1, 3 * D, 1, 1, 1);
        MAMA__B("attn.proj.weight", proj_w, 2, D, D, 1, 1);
        MAMA__B("attn.proj.bias", proj_b, 1, D, 1, 1, 1);
        MAMA__B("ls1.gamma", ls1, 1, D, 1, 1, 1);
        MAMA__B("norm2.weight", ln2_w, 1, D, 1, 1, 1);
        MAMA__B("norm2.bias", ln2_b, 1, D, 1, 1, 1);
        MAMA__B("mlp.fc1.weight", fc1_w, 2, 4 * D, D, 1, 1);
        MAMA__B("mlp.fc1.bias", fc1_b, 1, 4 * D, 1, 1, 1);
        MAMA__B("mlp.fc2.weight", fc2_w, 2, D, 4 * D, 1, 1);
        MAMA__B("mlp.fc2.bias", fc2_b, 1, D, 1, 1, 1);
        MAMA__B("ls2.gamma", ls2, 1, D, 1, 1, 1);
#undef MAMA__B
    }
    /* `norm` only feeds the local branch and is frozen (SPEC A.1) */
    MAMA__NAME("%snorm.weight", vp); MAMA__P(MAMA_GROUP_FROZEN, norm_w, 1, D, 1, 1, 1);
    MAMA__NAME("%snorm.bias", vp); MAMA__P(MAMA_GROUP_FROZEN, norm_b, 1, D, 1, 1, 1);
    MAMA__NAME("img_encoder_q.global_embed.weight"); MAMA__P(MAMA_GROUP_TRAIN, img_global_w, 2, E, D, 1, 1);
    MAMA__NAME("img_encoder_q.global_embed.bias"); MAMA__P(MAMA_GROUP_TRAIN, img_global_b, 1, E, 1, 1, 1);
    mama__visit_local_head(m, bind, cur, "img_encoder_q.local_embed.", D, &w->img_local, g ? &g->img_local : NULL);
    /* text tower */
    MAMA__NAME("%swte.weight", tp); MAMA__P(tg, wte, 2, c->vocab_size, Dt, 1, 1);
    MAMA__NAME("%swpe.weight", tp); MAMA__P(tg, wpe, 2, c->context, Dt, 1, 1);
    for (l = 0; l < c->text_depth; l++) {
        mama__gpt_block *wb = &w->gpt[l], *gb = g ? &g->gpt[l] : NULL;
#define MAMA__B(grp, suffix, field, ...) (MAMA__NAME("%sh.%d.%s", tp, l, suffix), \
        mama__param(m, bind, cur, n, grp, &wb->field, gb ? &gb->field : NULL, __VA_ARGS__))
        MAMA__B(tg, "ln_1.weight", ln1_w, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "ln_1.bias", ln1_b, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "attn.c_attn.weight", attn_w, 2, Dt, 3 * Dt, 1, 1);
        MAMA__B(tg, "attn.c_attn.bias", attn_b, 1, 3 * Dt, 1, 1, 1);
        if (c->text_mode == MAMA_TEXT_LORA) {
            MAMA__B(MAMA_GROUP_TRAIN, "attn.c_attn.lora_A.default.weight", lora_a, 2, c->lora_rank, Dt, 1, 1);
            MAMA__B(MAMA_GROUP_TRAIN, "attn.c_attn.lora_B.default.weight", lora_b, 2, 3 * Dt, c->lora_rank, 1, 1);
        }
        MAMA__B(tg, "attn.c_proj.weight", attn_proj_w, 2, Dt, Dt, 1, 1);
        MAMA__B(tg, "attn.c_proj.bias", attn_proj_b, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "ln_2.weight", ln2_w, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "ln_2.bias", ln2_b, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "mlp.c_fc.weight", fc_w, 2, Dt, 4 * Dt, 1, 1);
        MAMA__B(tg, "mlp.c_fc.bias", fc_b, 1, 4 * Dt, 1, 1, 1);
        MAMA__B(tg, "mlp.c_proj.weight", mlp_proj_w, 2, 4 * Dt, Dt, 1, 1);
        MAMA__B(tg, "mlp.c_proj.bias", mlp_proj_b, 1, Dt, 1, 1, 1);
#undef MAMA__B
    }
    MAMA__NAME("%sln_f.weight", tp); MAMA__P(tg, ln_f_w, 1, Dt, 1, 1, 1);
    MAMA__NAME("%sln_f.bias", tp); MAMA__P(tg, ln_f_b, 1, Dt, 1, 1, 1);
    MAMA__NAME("text_encoder_q.global_embed.weight"); MAMA__P(MAMA_GROUP_TRAIN, txt_global_w, 2, E, Dt, 1, 1);
    MAMA__NAME("text_encoder_q.global_embed.bias"); MAMA__P(MAMA_GROUP_TRAIN, txt_global_b, 1, E, 1, 1, 1);
    mama__visit_local_head(m, bind, cur, "text_encoder_q.local_embed.", Dt, &w->txt_local, g ? &g->txt_local : NULL);
    /* SimCLR projection (multi-view branch) */
    MAMA__NAME("simclr_proj.layers.0.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.w1, 2, D, D, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.bn1_w, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.bias"); MAMA__P(MAMA_GROUP_LATE, simclr.bn1_b, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.running_mean"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn1_mean, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.running_var"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn1_var, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.3.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.w2, 2, E, D, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.bn2_w, 1, E, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.bias"); MAMA__P(MAMA_GROUP_LATE, simclr.bn2_b, 1, E, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.running_mean"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn2_mean, 1, E, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.running_var"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn2_var, 1, E, 1, 1, 1);
    MAMA__NAME("logit_scale"); MAMA__P(MAMA_GROUP_TRAIN, logit_scale, 0, 1, 1, 1, 1);
    MAMA__NAME("local_scale"); MAMA__P(MAMA_GROUP_LATE, local_scale, 0, 1, 1, 1, 1);
#undef MAMA__P
#undef MAMA__NAME
}

/* ---- 5.3 Initialisation (SPEC A.5, training from scratch) -------------- */

static void mama__fill_normal(float *x, size_t n, float std, mama_rng *r) {
    size_t i;
    for (i = 0; i < n; i++) {
        /* timm's trunc_normal_ cuts at the absolute values -2 and 2 */
        float v;
        do { v = std * mama_rng_normal(r); } while (v < -2.0f || v > 2.0f);
        x[i] = v;
    }
}
static void mama__fill_uniform(float *x, size_t n, float bound, mama_rng *r) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = bound * (2.0f * mama_rng_uniform(r) - 1.0f);
}
static void mama__fill_const(float *x, size_t n, float v) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = v;
}
/* PyTorch's default nn.Linear / nn.Conv1d init: kaiming_uniform(a=sqrt 5)
 * gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight, and the same
 * bound for the bias. */
static void mama__torch_default_linear(float *w, float *b, int out, int in, mama_rng *r) {
    float bound = 1.0f / sqrtf((float)in);
    mama__fill_uniform(w, (size_t)out * in, bound, r);
    if (b) mama__fill_uniform(b, (size_t)out, bound, r);
}
static void mama__init_local_head(const mama__local_head *h, int in, int H, int E, mama_rng *r) {
    mama__torch_default_linear(h->w1, h->b1, H, in, r);
    mama__fill_const(h->bn1_w, (size_t)H, 1.0f);
    mama__fill_const(h->bn1_b, (size_t)H, 0.0f);
    mama__fill_const(h->bn1_mean, (size_t)H, 0.0f);
    mama__fill_const(h->bn1_var, (size_t)H, 1.0f);
    mama__torch_default_linear(h->w2, h->b2, E, H, r);
    mama__fill_const(h->bn2_mean, (size_t)E, 0.0f);
    mama__fill_const(h->bn2_var, (size_t)E, 1.0f);
}

/* Initialise every tensor of `w` (host pointers; the caller uploads). */
static void mama__init_weights(const mama_config *c, const mama__weights *w, int N, uint64_t seed) {
    mama_rng r;
    int D = c->vision_dim, Dt = c->text_dim, E = c->embed_dim, H = c->local_hidden, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    float logit0 = logf(1.0f / 0.07f);
    mama_rng_seed(&r, seed);
    mama__fill_normal(w->cls_token, (size_t)D, 1e-6f, &r);
    mama__fill_normal(w->register_tokens, (size_t)c->registers * D, 1e-6f, &r);
    mama__fill_normal(w->pos_embed, (size_t)(1 + N) * D, 0.02f, &r);
    mama__fill_const(w->mask_token, (size_t)D, 0.0f);
    mama__fill_normal(w->patch_w, (size_t)D * pdim, 0.02f, &r);
    mama__fill_const(w->patch_b, (size_t)D, 0.0f);
    for (l = 0; l < c->vision_depth; l++) {
        const mama__vit_block *b = &w->vit[l];
        mama__fill_const(b->ln1_w, (size_t)D, 1.0f); mama__fill_const(b->ln1_b, (size_t)D, 0.0f);
        mama__fill_normal(b->qkv_w, (size_t)3 * D * D, 0.02f, &r); mama__fill_const(b->qkv_b, (size_t)3 * D, 0.0f);
        mama__fill_normal(b->proj_w, (size_t)D * D, 0.02f, &r); mama__fill_const(b->proj_b, (size_t)D, 0.0f);
        mama__fill_const(b->ls1, (size_t)D, 1.0f);
        mama__fill_const(b->ln2_w, (size_t)D, 1.0f); mama__fill_const(b->ln2_b, (size_t)D, 0.0f);
        mama__fill_normal(b->fc1_w, (size_t)4 * D * D, 0.02f, &r); mama__fill_const(b->fc1_b, (size_t)4 * D, 0.0f);
        mama__fill_normal(b->fc2_w, (size_t)4 * D * D, 0.02f, &r); mama__fill_const(b->fc2_b, (size_t)D, 0.0f);
        mama__fill_const(b->ls2, (size_t)D, 1.0f);
    }
    mama__fill_const(w->norm_w, (size_t)D, 1.0f);
    mama__fill_const(w->norm_b, (size_t)D, 0.0f);
    mama__torch_default_linear(w->img_global_w, w->img_global_b, E, D, &r);
    mama__init_local_head(&w->img_local, D, H, E, &r);
    /* GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 depth) */
    mama__fill_normal(w->wte, (size_t)c->vocab_size * Dt, 0.02f, &r);
    mama__fill_normal(w->wpe, (size_t)c->context * Dt, 0.02f, &r);
    for (l = 0; l < c->text_depth; l++) {
        const mama__gpt_block *b = &w->gpt[l];
        float proj_std = 0.02f / sqrtf(2.0f * (float)c->text_depth);
        mama__fill_const(b->ln1_w, (size_t)Dt, 1.0f); mama__fill_const(b->ln1_b, (size_t)Dt, 0.0f);
        mama__fill_normal(b->attn_w, (size_t)3 * Dt * Dt, 0.02f, &r); mama__fill_const(b->attn_b, (size_t)3 * Dt, 0.0f);
        if (b->lora_a) {
            mama__fill_uniform(b->lora_a, (size_t)c->lora_rank * Dt, 1.0f / sqrtf((float)Dt), &r);
            mama__fill_const(b->lora_b, (size_t)3 * Dt * c->lora_rank, 0.0f);
        }
        mama__fill_normal(b->attn_proj_w, (size_t)Dt * Dt, proj_std, &r); mama__fill_const(b->attn_proj_b, (size_t)Dt, 0.0f);
        mama__fill_const(b->ln2_w, (size_t)Dt, 1.0f); mama__fill_const(b->ln2_b, (size_t)Dt, 0.0f);
        mama__fill_normal(b->fc_w, (size_t)4 * Dt * Dt, 0.02f, &r); mama__fill_const(b->fc_b, (size_t)4 * Dt, 0.0f);
        mama__fill_normal(b->mlp_proj_w, (size_t)4 * Dt * Dt, proj_std, &r); mama__fill_const(b->mlp_proj_b, (size_t)Dt, 0.0f);
    }
    mama__fill_const(w->ln_f_w, (size_t)Dt, 1.0f);
    mama__fill_const(w->ln_f_b, (size_t)Dt, 0.0f);
    mama__torch_default_linear(w->txt_global_w, w->txt_global_b, E, Dt, &r);
    mama__init_local_head(&w->txt_local, Dt, H, E, &r);
    mama__torch_default_linear(w->simclr.w1, NULL, D, D, &r);
    mama__fill_const(w->simclr.bn1_w, (size_t)D, 1.0f); mama__fill_const(w->simclr.bn1_b, (size_t)D, 0.0f);
    mama__fill_const(w->simclr.bn1_mean, (size_t)D, 0.0f); mama__fill_const(w->simclr.bn1_var, (size_t)D, 1.0f);
    mama__torch_default_linear(w->simclr.w2, NULL, E, D, &r);
    mama__fill_const(w->simclr.bn2_w, (size_t)E, 1.0f); mama__fill_const(w->simclr.bn2_b, (size_t)E, 0.0f);
    mama__fill_const(w->simclr.bn2_mean, (size_t)E, 0.0f); mama__fill_const(w->simclr.bn2_var, (size_t)E, 1.0f);
    *w->logit_scale = logit0;
    *w->local_scale = logit0;
}

/* ---- 5.4 The activation arena.  One function lays it out; called with
 * base == NULL it only measures, so size and layout cannot disagree. */
static size_t mama__round16(size_t n) { return (n + 15) & ~(size_t)15; }

static size_t mama__layout_acts(mama_model *m, float *base) {
    const mama_config *c = &m->cfg;
    mama__acts *a = &m->a;
    size_t off = 0;
    int B = m->max_batch, Bv = 2 * m->max_batch, Tv = m->n_vtok, N = m->n_patches, T = c->context;
    int D = c->vision_dim, Dt = c->text_dim, E = c->embed_dim, Hd = c->local_hidden;
    int Hv = c->vision_heads, Ht = c->text_heads, r = c->lora_rank;
    int S = B * MAMA_MAX_SENTENCES, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    size_t Rv = (size_t)Bv * Tv, Rt = (size_t)B * T;
    int vblocks = c->grad_checkpoint ? 1 : c->vision_depth;
    int tblocks = c->grad_checkpoint ? 1 : c->text_depth;
    size_t Rmax = Rv > Rt ? Rv : Rt;
    int Dmax = D > Dt ? D : Dt;
#define MAMA__F(ptr, n) do { (ptr) = base ? base + off : NULL; off += mama__round16((size_t)(n)); } while (0)
#define MAMA__I(ptr, n) do { (ptr) = base ? (int *)(void *)(base + off) : NULL; off += mama__round16((size_t)(n)); } while (0)
    MAMA__F(a->images, (size_t)Bv * c->in_chans * c->image_size * c->image_size);
    MAMA__F(a->cols, (size_t)Bv * N * pdim);
    MAMA__F(a->patch_out, (size_t)Bv * N * D);
    for (l = 0; l <= c->vision_depth; l++) MAMA__F(a->vres[l], Rv * D);
    for (l = 0; l < vblocks; l++) {
        mama__block_acts *k = &a->vblk[l];
        MAMA__F(k->ln1, Rv * D); MAMA__F(k->ln1_mean, Rv); MAMA__F(k->ln1_rstd, Rv);
        MAMA__F(k->qkv, Rv * 3 * D); MAMA__F(k->att, Rv * D); MAMA__F(k->lse, (size_t)Bv * Hv * Tv);
        MAMA__F(k->proj, Rv * D); MAMA__F(k->xmid, Rv * D);
        MAMA__F(k->ln2, Rv * D); MAMA__F(k->ln2_mean, Rv); MAMA__F(k->ln2_rstd, Rv);
        MAMA__F(k->fc, Rv * 4 * D); MAMA__F(k->gelu, Rv * 4 * D); MAMA__F(k->fc2, Rv * D);
    }
    MAMA__F(a->vpooled, (size_t)Bv * D); MAMA__F(a->img_g, (size_t)Bv * E); MAMA__F(a->img_emb, (size_t)Bv * E);
    MAMA__F(a->img_gnorm, Bv);
    MAMA__F(a->vnorm, (size_t)B * Tv * D); MAMA__F(a->vnorm_mean, (size_t)B * Tv); MAMA__F(a->vnorm_rstd, (size_t)B * Tv);
    MAMA__F(a->patches, (size_t)B * N * D); MAMA__I(a->patch_idx, (size_t)B * N);
    MAMA__F(a->il_h1, (size_t)B * N * Hd); MAMA__F(a->il_bn1, (size_t)B * N * Hd);
    MAMA__F(a->il_bn1_mean, Hd); MAMA__F(a->il_bn1_rstd, Hd); MAMA__F(a->il_relu, (size_t)B * N * Hd);
    MAMA__F(a->il_h2, (size_t)B * N * E); MAMA__F(a->il_bn2, (size_t)B * N * E);
    MAMA__F(a->il_bn2_mean, E); MAMA__F(a->il_bn2_rstd, E);
    MAMA__F(a->p_emb, (size_t)B * N * E); MAMA__F(a->p_norm, (size_t)B * N);
    /* text */
    MAMA__I(a->ids, Rt); MAMA__I(a->pos_ids, Rt); MAMA__I(a->key_valid, Rt); MAMA__F(a->pool_mask, Rt);
    for (l = 0; l <= c->text_depth; l++) MAMA__F(a->tres[l], Rt * Dt);
    for (l = 0; l < tblocks; l++) {
        mama__block_acts *k = &a->tblk[l];
        MAMA__F(k->ln1, Rt * Dt); MAMA__F(k->ln1_mean, Rt); MAMA__F(k->ln1_rstd, Rt);
        MAMA__F(k->qkv, Rt * 3 * Dt);
        if (c->text_mode == MAMA_TEXT_LORA) { MAMA__F(k->lora_in, Rt * Dt); MAMA__F(k->lora_u, Rt * r); }
        MAMA__F(k->att, Rt * Dt); MAMA__F(k->lse, (size_t)B * Ht * T);
        MAMA__F(k->xmid, Rt * Dt);
        MAMA__F(k->ln2, Rt * Dt); MAMA__F(k->ln2_mean, Rt); MAMA__F(k->ln2_rstd, Rt);
        MAMA__F(k->fc, Rt * 4 * Dt); MAMA__F(k->gelu, Rt * 4 * Dt);
    }
    MAMA__F(a->hidden, Rt * Dt); MAMA__F(a->lnf_mean, Rt); MAMA__F(a->lnf_rstd, Rt);
    MAMA__F(a->tpool, (size_t)B * Dt); MAMA__F(a->txt_g, (size_t)B * E); MAMA__F(a->txt_emb, (size_t)B * E);
    MAMA__F(a->txt_gnorm, B);
    MAMA__I(a->sent_idx, S); MAMA__I(a->sent_seg, B + 1); MAMA__I(a->img_seg, B + 1);
    MAMA__F(a->sent, (size_t)S * Dt);
    MAMA__F(a->tl_h1, (size_t)S * Hd); MAMA__F(a->tl_bn1, (size_t)S * Hd);
    MAMA__F(a->tl_bn1_mean, (size_t)B * Hd); MAMA__F(a->tl_bn1_rstd, (size_t)B * Hd);
    MAMA__F(a->tl_relu, (size_t)S * Hd); MAMA__F(a->tl_h2, (size_t)S * E); MAMA__F(a->tl_bn2, (size_t)S * E);
    MAMA__F(a->tl_bn2_mean, (size_t)B * E); MAMA__F(a->tl_bn2_rstd, (size_t)B * E);
    MAMA__F(a->s_emb, (size_t)S * E); MAMA__F(a->s_norm, S);
    /* simclr */
    MAMA__F(a->sc_h1, (size_t)Bv * D); MAMA__F(a->sc_bn1, (size_t)Bv * D);
    MAMA__F(a->sc_bn1_mean, 2 * D); MAMA__F(a->sc_bn1_rstd, 2 * D); MAMA__F(a->sc_relu, (size_t)Bv * D);
    MAMA__F(a->sc_h2, (size_t)Bv * E); MAMA__F(a->sc_z, (size_t)Bv * E);
    MAMA__F(a->sc_bn2_mean, 2 * E); MAMA__F(a->sc_bn2_rstd, 2 * E);
    MAMA__F(a->sc_zn, (size_t)Bv * E); MAMA__F(a->sc_norm, Bv);
    /* losses */
    MAMA__F(a->logits, B * B); MAMA__F(a->logits_t, B * B); MAMA__F(a->ce_loss, 2 * Bv);
    MAMA__F(a->ce_probs, B * B); MAMA__F(a->ce_probs_t, B * B);
    MAMA__F(a->dlogits, B * B); MAMA__F(a->dlogits_t, B * B); MAMA__F(a->ce_dloss, Bv);
    MAMA__I(a->targets_diag, B); MAMA__I(a->targets_ntx, Bv);
    MAMA__F(a->ntx_sim, Bv * Bv); MAMA__F(a->ntx_probs, Bv * Bv); MAMA__F(a->ntx_loss, Bv);
    MAMA__F(a->ntx_dsim, Bv * Bv); MAMA__F(a->ntx_dloss, Bv);
    MAMA__F(a->sla_sim, (size_t)B * N * S); MAMA__F(a->sla_simt, (size_t)B * N * S);
    MAMA__F(a->sla_rowmax, (size_t)B * N * B); MAMA__I(a->sla_rowarg, (size_t)B * N * B);
    MAMA__F(a->sla_colmax, (size_t)S * B); MAMA__I(a->sla_colarg, (size_t)S * B);
    MAMA__F(a->sla_avg, (size_t)B * S);
    MAMA__F(a->sla_t2i, B * B); MAMA__F(a->sla_t2i_t, B * B); MAMA__F(a->sla_i2t, B * B);
    MAMA__F(a->sla_dsim, (size_t)B * N * S); MAMA__F(a->sla_dsimt, (size_t)B * N * S);
    MAMA__F(a->sla_drowmax, (size_t)B * N * B); MAMA__F(a->sla_dcolmax, (size_t)S * B);
    MAMA__F(a->sla_dt2i, B * B); MAMA__F(a->sla_dt2i_t, B * B); MAMA__F(a->sla_di2t, B * B);
    /* gradient scratch, shared by both towers where shapes allow */
    MAMA__F(a->d_img_emb, (size_t)Bv * E); MAMA__F(a->d_img_g, (size_t)Bv * E); MAMA__F(a->d_vpooled, (size_t)Bv * D);
    MAMA__F(a->d_vx, Rv * D); MAMA__F(a->d_vx2, Rv * D);
    MAMA__F(a->d_vnorm, (size_t)B * Tv * D); MAMA__F(a->d_patches, (size_t)B * N * D);
    MAMA__F(a->d_patch_out, (size_t)Bv * N * D);
    MAMA__F(a->d_rows_d, Rmax * Dmax); MAMA__F(a->d_rows_d2, Rmax * Dmax); MAMA__F(a->d_rows_3d, Rmax * 3 * Dmax);
    MAMA__F(a->d_rows_4d, Rmax * 4 * Dmax); MAMA__F(a->d_rows_4d2, Rmax * 4 * Dmax);
    MAMA__F(a->d_rows_r, Rt * (size_t)(r > 0 ? r : 1) + Rt * Dt);
    MAMA__F(a->d_txt_emb, (size_t)B * E); MAMA__F(a->d_txt_g, (size_t)B * E); MAMA__F(a->d_tpool, (size_t)B * Dt);
    MAMA__F(a->d_hidden, Rt * Dt); MAMA__F(a->d_tx, Rt * Dt); MAMA__F(a->d_tx2, Rt * Dt);
    MAMA__F(a->d_il_a, (size_t)B * N * Hd); MAMA__F(a->d_il_b, (size_t)B * N * Hd);
    MAMA__F(a->d_il_e, (size_t)B * N * E); MAMA__F(a->d_il_e2, (size_t)B * N * E); MAMA__F(a->d_p_emb, (size_t)B * N * E);
    MAMA__F(a->d_tl_a, (size_t)S * Hd); MAMA__F(a->d_tl_b, (size_t)S * Hd);
    MAMA__F(a->d_tl_e, (size_t)S * E); MAMA__F(a->d_tl_e2, (size_t)S * E); MAMA__F(a->d_s_emb, (size_t)S * E);
    MAMA__F(a->d_sent, (size_t)S * Dt);
    MAMA__F(a->d_sc_zn, (size_t)Bv * E); MAMA__F(a->d_sc_z, (size_t)Bv * E); MAMA__F(a->d_sc_e, (size_t)Bv * E);
    MAMA__F(a->d_sc_a, (size_t)Bv * D); MAMA__F(a->d_sc_b, (size_t)Bv * D);
#undef MAMA__F
#undef MAMA__I
    return off;
}

/* ---- 5.5 Creating and freeing a model ---------------------------------- */

MAMA_API void mama_model_free(mama_model *m) {
    if (!m) return;
    if (m->be) {
        if (m->params) m->be->free(m->be, m->params);
        if (m->grads) m->be->free(m->be, m->grads);
        if (m->arena) m->be->free(m->be, m->arena);
    }
    mama_free(m->info);
    mama_free(m->w.vit); mama_free(m->g.vit);
    mama_free(m->w.gpt); mama_free(m->g.gpt);
    mama_free(m->a.vres); mama_free(m->a.tres);
    mama_free(m->a.vblk); mama_free(m->a.tblk);
    mama_free(m->h_ints); mama_free(m->h_floats); mama_free(m->h_sent_seg);
    mama_free(m);
}

/* Host copies of the tiny constant index arrays (targets, positions). */
static mama_status mama__upload_constants(mama_model *m) {
    mama_backend *be = m->be;
    int B = m->max_batch, T = m->cfg.context, i;
    int *tmp;
    MAMA_TRY(mama_alloc((void **)&tmp, sizeof(int) * (size_t)(B * T > 2 * B ? B * T : 2 * B), "model constants"));
    for (i = 0; i < B * T; i++) tmp[i] = i % T;
    if (be->to_device(be, m->a.pos_ids, tmp, sizeof(int) * (size_t)B * T) != MAMA_OK) goto fail;
    mama_free(tmp);
    return MAMA_OK;
fail:
    mama_free(tmp);
    return MAMA_ERR_BACKEND;
}

static mama_status mama__model_alloc(mama_model **out, const mama_config *c, mama_backend *be, int max_batch) {
    mama_model *m;
    mama__bind bind;
    size_t total = 0;
    int g;
    *out = NULL;
    MAMA_TRY(mama_config_validate(c));
    if (!be) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_create: backend is NULL");
    if (max_batch < 1 || max_batch > 4096)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_create: max_batch %d out of range 1..4096", max_batch);
    MAMA_TRY(mama_calloc((void **)&m, sizeof *m, "model"));
    m->cfg = *c;
    m->be = be;
    m->max_batch = max_batch;
    m->n_patches = (c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    m->n_vtok = 1 + c->registers + m->n_patches;
#define MAMA__ALLOC(ptr, n, what) \
    if (mama_calloc((void **)&(ptr), sizeof(*(ptr)) * (size_t)(n), what) != MAMA_OK) goto fail
    MAMA__ALLOC(m->w.vit, c->vision_depth, "vision block table");
    MAMA__ALLOC(m->g.vit, c->vision_depth, "vision block table");
    MAMA__ALLOC(m->w.gpt, c->text_depth, "text block table");
    MAMA__ALLOC(m->g.gpt, c->text_depth, "text block table");
    MAMA__ALLOC(m->a.vres, c->vision_depth + 1, "vision residual table");
    MAMA__ALLOC(m->a.tres, c->text_depth + 1, "text residual table");
    MAMA__ALLOC(m->a.vblk, c->vision_depth, "vision activation table");
    MAMA__ALLOC(m->a.tblk, c->text_depth, "text activation table");
    MAMA__ALLOC(m->h_sent_seg, max_batch + 1, "sentence offsets");
    /* pass 0: count tensors and group sizes */
    mama__visit_params(m, NULL);
    MAMA__ALLOC(m->info, m->nparams, "parameter table");
    for (g = 0; g < 4; g++) { m->group_offset[g] = total; total += m->group_numel[g]; }
    if (be->alloc(be, (void **)&m->params, sizeof(float) * total) != MAMA_OK) goto fail;
    if (be->alloc(be, (void **)&m->grads, sizeof(float) * (total - m->group_numel[2] - m->group_numel[3] + 1)) != MAMA_OK) goto fail;
    /* pass 1: record names and offsets, bind pointers */
    bind.w = &m->w; bind.g = &m->g; bind.wbase = m->params; bind.gbase = m->grads;
    m->nparams = 0;
    mama__visit_params(m, &bind);
    m->arena_floats = mama__layout_acts(m, NULL);
    if (be->alloc(be, (void **)&m->arena, sizeof(float) * m->arena_floats) != MAMA_OK) goto fail;
    if (be->zero(be, m->arena, sizeof(float) * m->arena_floats) != MAMA_OK) goto fail;
    mama__layout_acts(m, m->arena);
    if (c->grad_checkpoint) {
        int l;
        for (l = 1; l < c->vision_depth; l++) m->a.vblk[l] = m->a.vblk[0];
        for (l = 1; l < c->text_depth; l++) m->a.tblk[l] = m->a.tblk[0];
    }
    MAMA__ALLOC(m->h_ints, (size_t)max_batch * c->context * 4 + 8 * (size_t)max_batch * m->n_patches, "host staging");
    MAMA__ALLOC(m->h_floats, (size_t)max_batch * c->context + (size_t)max_batch * max_batch * MAMA_MAX_SENTENCES, "host staging");
#undef MAMA__ALLOC
    if (mama__upload_constants(m) != MAMA_OK) goto fail;
    *out = m;
    return MAMA_OK;
fail:
    mama_model_free(m);
    return mama_last_error()[0] ? MAMA_ERR_NOMEM : MAMA_FAIL(MAMA_ERR_NOMEM, "mama_model_create failed");
}

/* Host-side view of the weights: the same visitor bound to a host buffer,
 * so initialisation and loading can work on host memory and upload once
 * (the backend may be a GPU). */
typedef struct mama__host_weights {
    float *data;
    size_t numel;
    mama__weights w;
} mama__host_weights;

static void mama__host_weights_free(mama__host_weights *h) {
    mama_free(h->data);
    mama_free(h->w.vit);
    mama_free(h->w.gpt);
    memset(h, 0, sizeof *h);
}
static mama_status mama__host_weights_init(mama_model *m, mama__host_weights *h) {
    mama__bind bind;
    int saved = m->nparams;
    memset(h, 0, sizeof *h);
    h->numel = m->group_offset[3] + m->group_numel[3];
    if (mama_calloc((void **)&h->data, sizeof(float) * h->numel, "host weights") != MAMA_OK ||
        mama_calloc((void **)&h->w.vit, sizeof(mama__vit_block) * (size_t)m->cfg.vision_depth, "host weights") != MAMA_OK ||
        mama_calloc((void **)&h->w.gpt, sizeof(mama__gpt_block) * (size_t)m->cfg.text_depth, "host weights") != MAMA_OK) {
        mama__host_weights_free(h);
        return MAMA_ERR_NOMEM;
    }
    bind.w = &h->w; bind.g = NULL; bind.wbase = h->data; bind.gbase = NULL;
    m->nparams = 0;
    mama__visit_params(m, &bind); /* rewrites the same info again */
    m->nparams = saved;
    return MAMA_OK;
}

MAMA_API mama_status mama_model_create(mama_model **out, const mama_config *c, mama_backend *be, int max_batch,
                                       uint64_t seed) {
    mama_model *m;
    mama__host_weights h;
    mama_status s;
    MAMA_TRY(mama__model_alloc(&m, c, be, max_batch));
    if (mama__host_weights_init(m, &h) != MAMA_OK) {
        mama_model_free(m);
        return MAMA_ERR_NOMEM;
    }
    mama__init_weights(c, &h.w, m->n_patches, seed);
    s = be->to_device(be, m->params, h.data, sizeof(float) * h.numel);
    mama__host_weights_free(&h);
    if (s != MAMA_OK) { mama_model_free(m); return s; }
    *out = m;
    return MAMA_OK;
}

/* ==========================================================================
 * 4. LAYERS (forward beside backward).  Thin compositions of backend ops.
 * ========================================================================== */

/* Linear in PyTorch's layout, W [out, in]:  y = x W^T + b.
 * Backward: dx += dy W,  dW += dy^T x,  db += sum_rows dy.  Any of dx, dW,
 * db may be NULL (frozen weights still pass gradient to their input). */
static void mama__linear_forward(mama_backend *be, float *y, const float *x, const float *W, const float *b,
                                 int M, int in, int out) {
    be->gemm(be, 0, 1, M, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    if (b) be->bias_add_forward(be, y, b, M, out);
}
static void mama__linear_backward(mama_backend *be, float *dx, float *dW, float *db, const float *dy,
                                  const float *x, const float *W, int M, int in, int out) {
    if (dx) be->gemm(be, 0, 0, M, in, out, 1.0f, dy, out, W, in, 1.0f, dx, in);
    if (dW) be->gemm(be, 1, 0, out, in, M, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) be->bias_add_backward(be, db, dy, M, out);
}
/* GPT-2's Conv1D stores W as [in, out]:  y = x W + b.
 * Backward: dx += dy W^T,  dW += x^T dy. */
static void mama__conv1d_forward(mama_backend *be, float *y, const float *x, const float *W, const float *b,
                                 int M, int in, int out) {
    be->gemm(be, 0, 0, M, out, in, 1.0f, x, in, W, out, 0.0f, y, out);
    if (b) be->bias_add_forward(be, y, b, M, out);
}
static void mama__conv1d_backward(mama_backend *be, float *dx, float *dW, float *db, const float *dy,
                                  const float *x, const float *W, int M, int in, int out) {
    if (dx) be->gemm(be, 0, 1, M, in, out, 1.0f, dy, out, W, out, 1.0f, dx, in);
    if (dW) be->gemm(be, 1, 0, in, out, M, 1.0f, x, in, dy, out, 1.0f, dW, out);
    if (db) be->bias_add_backward(be, db, dy, M, out);
}
static void mama__zero(mama_backend *be, float *x, size_t n) { be->zero(be, x, n * sizeof(float)); }

/* A distinct dropout seed per (step, layer, site), so masks never repeat
 * across sites and the backward regenerates exactly the forward's mask. */
static uint64_t mama__dropout_seed(uint64_t step_seed, int layer, int site) {
    uint64_t x = step_seed ^ ((uint64_t)(layer + 1) << 32) ^ (uint64_t)(site + 1);
    return mama__splitmix64(&x);
}

/* ---- 4.1 ViT block (pre-norm, LayerScale; SPEC A.1) -------------------
 *   xmid = x + ls1 * proj(attn(LN1(x)));   out = xmid + ls2 * fc2(gelu(fc1(LN2(xmid)))) */
static void mama__vit_block_forward(mama_model *m, const mama__vit_block *w, mama__block_acts *k,
                                    const float *x, float *out, int Bv) {
    mama_backend *be = m->be;
    int D = m->cfg.vision_dim, H = m->cfg.vision_heads, hd = D / H, T = m->n_vtok, rows = Bv * T;
    size_t n = (size_t)rows * D;
    be->layernorm_forward(be, k->ln1, k->ln1_mean, k->ln1_rstd, x, w->ln1_w, w->ln1_b, rows, D, 1e-6f);
    mama__linear_forward(be, k->qkv, k->ln1, w->qkv_w, w->qkv_b, rows, D, 3 * D);
    be->attention_forward(be, k->att, k->lse, k->qkv, NULL, Bv, T, H, hd, 0, 1.0f / sqrtf((float)hd), 0.0f, 0);
    mama__linear_forward(be, k->proj, k->att, w->proj_w, w->proj_b, rows, D, D);
    be->layerscale_forward(be, k->xmid, k->proj, w->ls1, rows, D);
    be->accumulate(be, k->xmid, x, 1.0f, n);
    be->layernorm_forward(be, k->ln2, k->ln2_mean, k->ln2_rstd, k->xmid, w->ln2_w, w->ln2_b, rows, D, 1e-6f);
    mama__linear_forward(be, k->fc, k->ln2, w->fc1_w, w->fc1_b, rows, D, 4 * D);
    be->gelu_forward(be, k->gelu, k->fc, (size_t)rows * 4 * D, 0);
    mama__linear_forward(be, k->fc2, k->gelu, w->fc2_w, w->fc2_b, rows, 4 * D, D);
    be->layerscale_forward(be, out, k->fc2, w->ls2, rows, D);
    be->accumulate(be, out, k->xmid, 1.0f, n);
}

/* dout -> dx (dx is overwritten); parameter gradients accumulate into gw. */
static void mama__vit_block_backward(mama_model *m, const mama__vit_block *w, const mama__vit_block *gw,
                                     const mama__block_acts *k, const float *x, const float *dout, float *dx, int Bv) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int D = m->cfg.vision_dim, H = m->cfg.vision_heads, hd = D / H, T = m->n_vtok, rows = Bv * T;
    size_t n = (size_t)rows * D, n4 = (size_t)rows * 4 * D;
    float *d_a = a->d_rows_d, *d_b = a->d_rows_d2, *d_4a = a->d_rows_4d, *d_4b = a->d_rows_4d2, *d_qkv = a->d_rows_3d;
    /* MLP branch: out = xmid + ls2 * fc2 */
    mama__zero(be, d_a, n);
    be->layerscale_backward(be, d_a, gw->ls2, dout, k->fc2, w->ls2, rows, D);
    mama__zero(be, d_4a, n4);
    mama__linear_backward(be, d_4a, gw->fc2_w, gw->fc2_b, d_a, k->gelu, w->fc2_w, rows, 4 * D, D);
    mama__zero(be, d_4b, n4);
    be->gelu_backward(be, d_4b, d_4a, k->fc, n4, 0);
    mama__zero(be, d_b, n);
    mama__linear_backward(be, d_b, gw->fc1_w, gw->fc1_b, d_4b, k->ln2, w->fc1_w, rows, D, 4 * D);
    be->copy(be, dx, dout, n * sizeof(float));
    be->layernorm_backward(be, dx, gw->ln2_w, gw->ln2_b, d_b, k->xmid, w->ln2_w, k->ln2_mean, k->ln2_rstd, rows, D);
    /* attention branch: xmid = x + ls1 * proj */
    mama__zero(be, d_a, n);
    be->layerscale_backward(be, d_a, gw->ls1, dx, k->proj, w->ls1, rows, D);
    mama__zero(be, d_b, n);
    mama__linear_backward(be, d_b, gw->proj_w, gw->proj_b, d_a, k->att, w->proj_w, rows, D, D);
    mama__zero(be, d_qkv, 3 * n);
    be->attention_backward(be, d_qkv, d_b, k->att, k->lse, k->qkv, NULL, Bv, T, H, hd, 0,
                           1.0f / sqrtf((float)hd), 0.0f, 0);
    mama__zero(be, d_a, n);
    mama__linear_backward(be, d_a, gw->qkv_w, gw->qkv_b, d_qkv, k->ln1, w->qkv_w, rows, D, 3 * D);
    be->layernorm_backward(be, dx, gw->ln1_w, gw->ln1_b, d_a, x, w->ln1_w, k->ln1_mean, k->ln1_rstd, rows, D);
}

/* ---- 4.2 GPT-2 block with LoRA on c_attn (SPEC A.2) -------------------
 *   qkv = LN1(x) W + b + (alpha/r) drop(LN1(x)) A^T B^T
 *   xmid = x + drop(c_proj(attn(qkv)));  out = xmid + drop(mlp(LN2(xmid))) */
typedef struct mama__text_step {
    int train_dropout;         /* dropout active this step */
    uint64_t seed;
    int pool_masked;           /* pool with pool_mask (real tokens, or a one-hot position) */
} mama__text_step;

static float mama__text_attn_scale(const mama_config *c, int layer) {
    float s = 1.0f / sqrtf((float)(c->text_dim / c->text_heads));
    return c->text_attn_layer_scale ? s / (float)(layer + 1) : s;
}

static void mama__gpt_block_forward(mama_model *m, int l, const mama__block_acts *k, const float *x, float *out,
                                    int B, const mama__text_step *ts) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    const mama__gpt_block *w = &m->w.gpt[l];
    int D = c->text_dim, H = c->text_heads, hd = D / H, T = c->context, rows = B * T, r = c->lora_rank;
    size_t n = (size_t)rows * D;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    be->layernorm_forward(be, k->ln1, k->ln1_mean, k->ln1_rstd, x, w->ln1_w, w->ln1_b, rows, D, 1e-5f);
    mama__conv1d_forward(be, k->qkv, k->ln1, w->attn_w, w->attn_b, rows, D, 3 * D);
    if (w->lora_a) {
        float lp = ts->train_dropout ? c->lora_dropout : 0.0f;
        be->dropout_forward(be, k->lora_in, k->ln1, n, lp, mama__dropout_seed(ts->seed, l, 0));
        be->gemm(be, 0, 1, rows, r, D, 1.0f, k->lora_in, D, w->lora_a, D, 0.0f, k->lora_u, r);
        be->gemm(be, 0, 1, rows, 3 * D, r, c->lora_alpha / (float)r, k->lora_u, r, w->lora_b, r, 1.0f, k->qkv, 3 * D);
    }
    be->attention_forward(be, k->att, k->lse, k->qkv, m->a.key_valid, B, T, H, hd, 1, mama__text_attn_scale(c, l),
                          p, mama__dropout_seed(ts->seed, l, 1));
    mama__conv1d_forward(be, k->xmid, k->att, w->attn_proj_w, w->attn_proj_b, rows, D, D);
    if (p > 0) be->dropout_forward(be, k->xmid, k->xmid, n, p, mama__dropout_seed(ts->seed, l, 2));
    be->accumulate(be, k->xmid, x, 1.0f, n);
    be->layernorm_forward(be, k->ln2, k->ln2_mean, k->ln2_rstd, k->xmid, w->ln2_w, w->ln2_b, rows, D, 1e-5f);
    mama__conv1d_forward(be, k->fc, k->ln2, w->fc_w, w->fc_b, rows, D, 4 * D);
    be->gelu_forward(be, k->gelu, k->fc, (size_t)rows * 4 * D, 1);
    mama__conv1d_forward(be, out, k->gelu, w->mlp_proj_w, w->mlp_proj_b, rows, 4 * D, D);
    if (p > 0) be->dropout_forward(be, out, out, n, p, mama__dropout_seed(ts->seed, l, 3));
    be->accumulate(be, out, k->xmid, 1.0f, n);
}

static void mama__gpt_block_backward(mama_model *m, int l, const mama__block_acts *k, const float *x,
                                     const float *dout, float *dx, int B, const mama__text_step *ts) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    const mama__gpt_block *w = &m->w.gpt[l], *gw = &m->g.gpt[l];
    int D = c->text_dim, H = c->text_heads, hd = D / H, T = c->context, rows = B * T, r = c->lora_rank;
    size_t n = (size_t)rows * D, n4 = (size_t)rows * 4 * D;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    float *d_a = a->d_rows_d, *d_b = a->d_rows_d2, *d_4a = a->d_rows_4d, *d_4b = a->d_rows_4d2, *d_qkv = a->d_rows_3d;
    /* MLP branch */
    mama__zero(be, d_a, n);
    be->dropout_backward(be, d_a, dout, n, p, mama__dropout_seed(ts->seed, l, 3));
    mama__zero(be, d_4a, n4);
    mama__conv1d_backward(be, d_4a, gw->mlp_proj_w, gw->mlp_proj_b, d_a, k->gelu, w->mlp_proj_w, rows, 4 * D, D);
    mama__zero(be, d_4b, n4);
    be->gelu_backward(be, d_4b, d_4a, k->fc, n4, 1);
    mama__zero(be, d_b, n);
    mama__conv1d_backward(be, d_b, gw->fc_w, gw->fc_b, d_4b, k->ln2, w->fc_w, rows, D, 4 * D);
    be->copy(be, dx, dout, n * sizeof(float));
    be->layernorm_backward(be, dx, gw->ln2_w, gw->ln2_b, d_b, k->xmid, w->ln2_w, k->ln2_mean, k->ln2_rstd, rows, D);
    /* attention branch */
    mama__zero(be, d_a, n);
    be->dropout_backward(be, d_a, dx, n, p, mama__dropout_seed(ts->seed, l, 2));
    mama__zero(be, d_b, n);
    mama__conv1d_backward(be, d_b, gw->attn_proj_w, gw->attn_proj_b, d_a, k->att, w->attn_proj_w, rows, D, D);
    mama__zero(be, d_qkv, 3 * n);
    be->attention_backward(be, d_qkv, d_b, k->att, k->lse, k->qkv, a->key_valid, B, T, H, hd, 1,
                           mama__text_attn_scale(c, l), p, mama__dropout_seed(ts->seed, l, 1));
    mama__zero(be, d_a, n);
    mama__conv1d_backward(be, d_a, gw->attn_w, gw->attn_b, d_qkv, k->ln1, w->attn_w, rows, D, 3 * D);
    if (w->lora_a) {
        /* qkv += s u B^T with u = drop(ln1) A^T:  dB += s dqkv^T u;
         * du = s dqkv B;  dA += du^T drop(ln1);  d ln1 += drop'(du A) */
        float s = c->lora_alpha / (float)r, lp = ts->train_dropout ? c->lora_dropout : 0.0f;
        float *du = a->d_rows_r, *dlin = a->d_rows_r + (size_t)rows * r;
        be->gemm(be, 1, 0, 3 * D, r, rows, s, d_qkv, 3 * D, k->lora_u, r, 1.0f, gw->lora_b, r);
        be->gemm(be, 0, 0, rows, r, 3 * D, s, d_qkv, 3 * D, w->lora_b, r, 0.0f, du, r);
        be->gemm(be, 1, 0, r, D, rows, 1.0f, du, r, k->lora_in, D, 1.0f, gw->lora_a, D);
        be->gemm(be, 0, 0, rows, D, r, 1.0f, du, r, w->lora_a, D, 0.0f, dlin, D);
        be->dropout_backward(be, d_a, dlin, n, lp, mama__dropout_seed(ts->seed, l, 0));
    }
    be->layernorm_backward(be, dx, gw->ln1_w, gw->ln1_b, d_a, x, w->ln1_w, k->ln1_mean, k->ln1_rstd, rows, D);
}

/* ---- 4.3 BatchNorm heads ------------------------------------------------
 * Local embedding head (A.3): per token, linear -> BN -> ReLU -> linear ->
 * BN (no affine).  `segs` (host, nseg+1 offsets) gives the row groups whose
 * BatchNorm statistics are computed together: all patches of the batch for
 * images (one segment), each caption's sentences for text. */
typedef struct mama__local_acts {
    float *h1, *bn1, *bn1_mean, *bn1_rstd, *relu, *h2, *bn2, *bn2_mean, *bn2_rstd, *emb, *norm;
} mama__local_acts;

static void mama__local_head_forward(mama_model *m, const mama__local_head *w, const mama__local_acts *k,
                                     const float *x, int rows, int in, const int *segs, int nseg, int train,
                                     int64_t *tracked) {
    mama_backend *be = m->be;
    int Hd = m->cfg.local_hidden, E = m->cfg.embed_dim, s;
    mama__linear_forward(be, k->h1, x, w->w1, w->b1, rows, in, Hd);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        be->batchnorm_forward(be, k->bn1 + (size_t)r0 * Hd, k->bn1_mean + (size_t)s * Hd, k->bn1_rstd + (size_t)s * Hd,
                              w->bn1_mean, w->bn1_var, k->h1 + (size_t)r0 * Hd, w->bn1_w, w->bn1_b, nr, Hd,
                              1e-5f, 0.1f, train);
        if (train) tracked[0]++;
    }
    be->relu_forward(be, k->relu, k->bn1, (size_t)rows * Hd);
    mama__linear_forward(be, k->h2, k->relu, w->w2, w->b2, rows, Hd, E);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        be->batchnorm_forward(be, k->bn2 + (size_t)r0 * E, k->bn2_mean + (size_t)s * E, k->bn2_rstd + (size_t)s * E,
                              w->bn2_mean, w->bn2_var, k->h2 + (size_t)r0 * E, NULL, NULL, nr, E, 1e-5f, 0.1f, train);
        if (train) tracked[1]++;
    }
    be->l2norm_forward(be, k->emb, k->norm, k->bn2, rows, E);
}

/* demb -> dx (accumulated); scratch: da, db (rows x Hd), de, de2 (rows x E) */
static void mama__local_head_backward(mama_model *m, const mama__local_head *w, const mama__local_head *gw,
                                      const mama__local_acts *k, const float *x, const float *demb, float *dx,
                                      int rows, int in, const int *segs, int nseg,
                                      float *da, float *db, float *de, float *de2) {
    mama_backend *be = m->be;
    int Hd = m->cfg.local_hidden, E = m->cfg.embed_dim, s;
    mama__zero(be, de, (size_t)rows * E);
    be->l2norm_backward(be, de, demb, k->emb, k->norm, rows, E);
    mama__zero(be, de2, (size_t)rows * E);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        be->batchnorm_backward(be, de2 + (size_t)r0 * E, NULL, NULL, de + (size_t)r0 * E, k->h2 + (size_t)r0 * E,
                               NULL, k->bn2_mean + (size_t)s * E, k->bn2_rstd + (size_t)s * E, nr, E);
    }
    mama__zero(be, da, (size_t)rows * Hd);
    mama__linear_backward(be, da, gw->w2, gw->b2, de2, k->relu, w->w2, rows, Hd, E);
    mama__zero(be, db, (size_t)rows * Hd);
    be->relu_backward(be, db, da, k->relu, (size_t)rows * Hd);
    mama__zero(be, da, (size_t)rows * Hd);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        be->batchnorm_backward(be, da + (size_t)r0 * Hd, gw->bn1_w, gw->bn1_b, db + (size_t)r0 * Hd,
                               k->h1 + (size_t)r0 * Hd, w->bn1_w, k->bn1_mean + (size_t)s * Hd,
                               k->bn1_rstd + (size_t)s * Hd, nr, Hd);
    }
    mama__linear_backward(be, dx, gw->w1, gw->b1, da, x, w->w1, rows, in, Hd);
}

/* ---- 5.6 Tower forward and backward ------------------------------------ */

static mama__local_acts mama__img_local_acts(mama__acts *a) {
    mama__local_acts k;
    k.h1 = a->il_h1; k.bn1 = a->il_bn1; k.bn1_mean = a->il_bn1_mean; k.bn1_rstd = a->il_bn1_rstd;
    k.relu = a->il_relu; k.h2 = a->il_h2; k.bn2 = a->il_bn2; k.bn2_mean = a->il_bn2_mean;
    k.bn2_rstd = a->il_bn2_rstd; k.emb = a->p_emb; k.norm = a->p_norm;
    return k;
}
static mama__local_acts mama__txt_local_acts(mama__acts *a) {
    mama__local_acts k;
    k.h1 = a->tl_h1; k.bn1 = a->tl_bn1; k.bn1_mean = a->tl_bn1_mean; k.bn1_rstd = a->tl_bn1_rstd;
    k.relu = a->tl_relu; k.h2 = a->tl_h2; k.bn2 = a->tl_bn2; k.bn2_mean = a->tl_bn2_mean;
    k.bn2_rstd = a->tl_bn2_rstd; k.emb = a->s_emb; k.norm = a->s_norm;
    return k;
}

/* Vision tower over Bv images in a->images: patch embedding (as a GEMM over
 * im2col rows), tokens, blocks; then the pooled feature (mean of the
 * pre-norm tokens over ALL tokens) and the global embedding. */
static void mama__vision_forward(mama_model *m, int Bv) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, E = c->embed_dim, N = m->n_patches, T = m->n_vtok, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    be->im2col_patches(be, a->cols, a->images, Bv, c->in_chans, c->image_size, c->image_size, c->patch_size);
    mama__linear_forward(be, a->patch_out, a->cols, m->w.patch_w, m->w.patch_b, Bv * N, pdim, D);
    be->vit_tokens_forward(be, a->vres[0], a->patch_out, m->w.cls_token, m->w.register_tokens, m->w.pos_embed,
                           Bv, N, c->registers, D);
    for (l = 0; l < c->vision_depth; l++)
        mama__vit_block_forward(m, &m->w.vit[l], &a->vblk[l], a->vres[l], a->vres[l + 1], Bv);
    be->meanpool_forward(be, a->vpooled, a->vres[c->vision_depth], NULL, Bv, T, D);
    mama__linear_forward(be, a->img_g, a->vpooled, m->w.img_global_w, m->w.img_global_b, Bv, D, E);
    be->l2norm_forward(be, a->img_emb, a->img_gnorm, a->img_g, Bv, E);
}

/* Patch tokens after the (frozen) final norm, for the first B images, and
 * their local embeddings. */
static void mama__vision_local_forward(mama_model *m, int B, int train) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, N = m->n_patches, T = m->n_vtok;
    int segs[2];
    mama__local_acts k = mama__img_local_acts(a);
    be->layernorm_forward(be, a->vnorm, a->vnorm_mean, a->vnorm_rstd, a->vres[c->vision_depth], m->w.norm_w,
                          m->w.norm_b, B * T, D, 1e-6f);
    be->embedding_forward(be, a->patches, a->patch_idx, a->vnorm, B * N, D);
    segs[0] = 0; segs[1] = B * N;
    mama__local_head_forward(m, &m->w.img_local, &k, a->patches, B * N, D, segs, 1, train, &m->bn_batches[0]);
}

/* Backward of the vision tower from d_img_emb (Bv rows), d_vpooled
 * (accumulated by the SimCLR branch) and d_patches (local branch, first B
 * images; may be skipped with has_local = 0). */
static void mama__vision_backward(mama_model *m, int Bv, int B, int has_local) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, E = c->embed_dim, N = m->n_patches, T = m->n_vtok, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    size_t rows = (size_t)Bv * T;
    float *dx = a->d_vx, *dx2 = a->d_vx2, *tmp;
    mama__zero(be, a->d_img_g, (size_t)Bv * E);
    be->l2norm_backward(be, a->d_img_g, a->d_img_emb, a->img_emb, a->img_gnorm, Bv, E);
    mama__linear_backward(be, a->d_vpooled, m->g.img_global_w, m->g.img_global_b, a->d_img_g, a->vpooled,
                          m->w.img_global_w, Bv, D, E);
    mama__zero(be, dx, rows * D);
    be->meanpool_backward(be, dx, a->d_vpooled, NULL, Bv, T, D);
    if (has_local) {
        /* norm is frozen: only the input gradient, scattered back to rows */
        mama__zero(be, a->d_vnorm, (size_t)B * T * D);
        be->embedding_backward(be, a->d_vnorm, a->d_patches, a->patch_idx, B * N, D);
        be->layernorm_backward(be, dx, NULL, NULL, a->d_vnorm, a->vres[c->vision_depth], m->w.norm_w,
                               a->vnorm_mean, a->vnorm_rstd, B * T, D);
    }
    for (l = c->vision_depth - 1; l >= 0; l--) {
        if (c->grad_checkpoint) /* recompute this block's activations */
            mama__vit_block_forward(m, &m->w.vit[l], &a->vblk[l], a->vres[l], a->vres[l + 1], Bv);
        mama__vit_block_backward(m, &m->w.vit[l], &m->g.vit[l], &a->vblk[l], a->vres[l], dx, dx2, Bv);
        tmp = dx; dx = dx2; dx2 = tmp;
    }
    /* tokens -> patch rows, cls, registers, pos_embed; then the patch GEMM */
    mama__zero(be, a->d_patch_out, (size_t)Bv * N * D);
    be->vit_tokens_backward(be, a->d_patch_out, m->g.cls_token, m->g.register_tokens, m->g.pos_embed, dx,
                            Bv, N, c->registers, D);
    mama__linear_backward(be, NULL, m->g.patch_w, m->g.patch_b, a->d_patch_out, a->cols, m->w.patch_w,
                          Bv * N, pdim, D);
}

/* Text tower over B captions (ids, key_valid, pool_mask, sentence indices
 * already uploaded). */
static void mama__text_forward(mama_model *m, int B, int S, const mama__text_step *ts, int train, int with_local) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->text_dim, E = c->embed_dim, T = c->context, rows = B * T, l;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    be->embedding_forward(be, a->tres[0], a->ids, m->w.wte, rows, D);
    be->embedding_forward(be, a->d_tx, a->pos_ids, m->w.wpe, rows, D);
    be->accumulate(be, a->tres[0], a->d_tx, 1.0f, (size_t)rows * D);
    if (p > 0) be->dropout_forward(be, a->tres[0], a->tres[0], (size_t)rows * D, p, mama__dropout_seed(ts->seed, -1, 0));
    for (l = 0; l < c->text_depth; l++) mama__gpt_block_forward(m, l, &a->tblk[l], a->tres[l], a->tres[l + 1], B, ts);
    be->layernorm_forward(be, a->hidden, a->lnf_mean, a->lnf_rstd, a->tres[c->text_depth], m->w.ln_f_w, m->w.ln_f_b,
                          rows, D, 1e-5f);
    be->meanpool_forward(be, a->tpool, a->hidden, ts->pool_masked ? a->pool_mask : NULL, B, T, D);
    mama__linear_forward(be, a->txt_g, a->tpool, m->w.txt_global_w, m->w.txt_global_b, B, D, E);
    be->l2norm_forward(be, a->txt_emb, a->txt_gnorm, a->txt_g, B, E);
    if (with_local && S > 0) {
        mama__local_acts k = mama__txt_local_acts(a);
        be->embedding_forward(be, a->sent, a->sent_idx, a->hidden, S, D);
        mama__local_head_forward(m, &m->w.txt_local, &k, a->sent, S, D, m->h_sent_seg, B, train, &m->bn_batches[2]);
    }
}

static void mama__text_backward(mama_model *m, int B, int S, const mama__text_step *ts, int has_local) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->text_dim, E = c->embed_dim, T = c->context, rows = B * T, l;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    float *dx = a->d_tx, *dx2 = a->d_tx2, *tmp;
    mama__zero(be, a->d_txt_g, (size_t)B * E);
    be->l2norm_backward(be, a->d_txt_g, a->d_txt_emb, a->txt_emb, a->txt_gnorm, B, E);
    mama__zero(be, a->d_tpool, (size_t)B * D);
    mama__linear_backward(be, a->d_tpool, m->g.txt_global_w, m->g.txt_global_b, a->d_txt_g, a->tpool,
                          m->w.txt_global_w, B, D, E);
    mama__zero(be, a->d_hidden, (size_t)rows * D);
    be->meanpool_backward(be, a->d_hidden, a->d_tpool, ts->pool_masked ? a->pool_mask : NULL, B, T, D);
    if (has_local && S > 0) {
        mama__local_acts k = mama__txt_local_acts(a);
        mama__zero(be, a->d_sent, (size_t)S * D);
        mama__local_head_backward(m, &m->w.txt_local, &m->g.txt_local, &k, a->sent, a->d_s_emb, a->d_sent, S, D,
                                  m->h_sent_seg, B, a->d_tl_a, a->d_tl_b, a->d_tl_e, a->d_tl_e2);
        be->embedding_backward(be, a->d_hidden, a->d_sent, a->sent_idx, S, D);
    }
    if (c->text_mode == MAMA_TEXT_FROZEN) return; /* nothing below trains */
    mama__zero(be, dx, (size_t)rows * D);
    be->layernorm_backward(be, dx, m->g.ln_f_w, m->g.ln_f_b, a->d_hidden, a->tres[c->text_depth], m->w.ln_f_w,
                           a->lnf_mean, a->lnf_rstd, rows, D);
    for (l = c->text_depth - 1; l >= 0; l--) {
        if (c->grad_checkpoint)
            mama__gpt_block_forward(m, l, &a->tblk[l], a->tres[l], a->tres[l + 1], B, ts);
        mama__gpt_block_backward(m, l, &a->tblk[l], a->tres[l], dx, dx2, B, ts);
        tmp = dx; dx = dx2; dx2 = tmp;
    }
    if (c->text_mode == MAMA_TEXT_FULL) {
        mama__zero(be, dx2, (size_t)rows * D);
        be->dropout_backward(be, dx2, dx, (size_t)rows * D, p, mama__dropout_seed(ts->seed, -1, 0));
        be->embedding_backward(be, m->g.wte, dx2, a->ids, rows, D);
        be->embedding_backward(be, m->g.wpe, dx2, a->pos_ids, rows, D);
    }
}

/* SimCLR projection, called separately on the image half and the ext half
 * of the pooled features (each half its own BatchNorm statistics). */
static void mama__simclr_forward(mama_model *m, int B, int train) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama__simclr_head *w = &m->w.simclr;
    int D = m->cfg.vision_dim, E = m->cfg.embed_dim, h;
    for (h = 0; h < 2; h++) {
        size_t oD = (size_t)h * B * D, oE = (size_t)h * B * E;
        mama__linear_forward(be, a->sc_h1 + oD, a->vpooled + oD, w->w1, NULL, B, D, D);
        be->batchnorm_forward(be, a->sc_bn1 + oD, a->sc_bn1_mean + h * D, a->sc_bn1_rstd + h * D, w->bn1_mean,
                              w->bn1_var, a->sc_h1 + oD, w->bn1_w, w->bn1_b, B, D, 1e-5f, 0.1f, train);
        be->relu_forward(be, a->sc_relu + oD, a->sc_bn1 + oD, (size_t)B * D);
        mama__linear_forward(be, a->sc_h2 + oE, a->sc_relu + oD, w->w2, NULL, B, D, E);
        be->batchnorm_forward(be, a->sc_z + oE, a->sc_bn2_mean + h * E, a->sc_bn2_rstd + h * E, w->bn2_mean,
                              w->bn2_var, a->sc_h2 + oE, w->bn2_w, w->bn2_b, B, E, 1e-5f, 0.1f, train);
        if (train) { m->bn_batches[4]++; m->bn_batches[5]++; }
    }
}

/* d_sc_z (2B x E) -> d_vpooled (accumulated) */
static void mama__simclr_backward(mama_model *m, int B) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama__simclr_head *w = &m->w.simclr, *gw = &m->g.simclr;
    int D = m->cfg.vision_dim, E = m->cfg.embed_dim, h;
    mama__zero(be, a->d_sc_e, (size_t)2 * B * E);
    mama__zero(be, a->d_sc_a, (size_t)2 * B * D);
    mama__zero(be, a->d_sc_b, (size_t)2 * B * D);
    for (h = 0; h < 2; h++) {
        size_t oD = (size_t)h * B * D, oE = (size_t)h * B * E;
        be->batchnorm_backward(be, a->d_sc_e + oE, gw->bn2_w, gw->bn2_b, a->d_sc_z + oE, a->sc_h2 + oE, w->bn2_w,
                               a->sc_bn2_mean + h * E, a->sc_bn2_rstd + h * E, B, E);
        mama__linear_backward(be, a->d_sc_a + oD, gw->w2, NULL, a->d_sc_e + oE, a->sc_relu + oD, w->w2, B, D, E);
        be->relu_backward(be, a->d_sc_b + oD, a->d_sc_a + oD, a->sc_relu + oD, (size_t)B * D);
        mama__zero(be, a->d_sc_a + oD, (size_t)B * D);
        be->batchnorm_backward(be, a->d_sc_a + oD, gw->bn1_w, gw->bn1_b, a->d_sc_b + oD, a->sc_h1 + oD, w->bn1_w,
                               a->sc_bn1_mean + h * D, a->sc_bn1_rstd + h * D, B, D);
        mama__linear_backward(be, a->d_vpooled + oD, gw->w1, NULL, a->d_sc_a + oD, a->vpooled + oD, w->w1, B, D, D);
    }
}

/* ==========================================================================
 * 6. LOSSES AND THE TRAINING STEP (SPEC A.4)
 * ========================================================================== */

static float mama__read_scalar(mama_model *m, const float *dev) {
    float v = 0;
    m->be->to_host(m->be, &v, dev, sizeof v);
    return v;
}
static void mama__add_scalar(mama_model *m, float *dev, double delta) {
    float v = mama__read_scalar(m, dev);
    v += (float)delta;
    m->be->to_device(m->be, dev, &v, sizeof v);
}
static double mama__sum_host(mama_model *m, const float *dev, int n) {
    float buf[256];
    double s = 0;
    int i, done = 0;
    while (done < n) {
        int k = n - done < 256 ? n - done : 256;
        m->be->to_host(m->be, buf, dev + done, sizeof(float) * (size_t)k);
        for (i = 0; i < k; i++) s += buf[i];
        done += k;
    }
    return s;
}

/* The CLIP objective on a B x B logit matrix L (rows: images, columns:
 * texts, matched pairs on the diagonal): CE over rows plus CE over columns,
 * each a mean over the batch.  dL receives the whole gradient (overwritten). */
static double mama__ce_both(mama_model *m, const float *L, float *dL, int B) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    double loss;
    be->transpose(be, a->logits_t, L, B, B);
    be->cross_entropy_forward(be, a->ce_loss, a->ce_probs, L, a->targets_diag, B, B);
    be->cross_entropy_forward(be, a->ce_loss + B, a->ce_probs_t, a->logits_t, a->targets_diag, B, B);
    loss = mama__sum_host(m, a->ce_loss, 2 * B) / B;
    mama__zero(be, dL, (size_t)B * B);
    mama__zero(be, a->dlogits_t, (size_t)B * B);
    be->cross_entropy_backward(be, dL, a->ce_probs, a->targets_diag, a->ce_dloss, B, B);
    be->cross_entropy_backward(be, a->dlogits_t, a->ce_probs_t, a->targets_diag, a->ce_dloss, B, B);
    be->transpose(be, a->logits_t, a->dlogits_t, B, B); /* reuse as scratch */
    be->accumulate(be, dL, a->logits_t, 1.0f, (size_t)B * B);
    return loss;
}

/* Global CLIP loss between image embeddings I and text embeddings Tx
 * (B x E each, L2-normalised): S = exp(logit_scale) I Tx^T.  Gradients
 * accumulate into dI, dT and the log-scale's gradient (if dscale). */
static double mama__clip_loss(mama_model *m, const float *I, const float *Tx, float *dI, float *dT,
                              const float *log_scale, float *dscale, int B) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int E = m->cfg.embed_dim;
    float scale = expf(mama__read_scalar(m, log_scale));
    double loss;
    be->gemm(be, 0, 1, B, B, E, scale, I, E, Tx, E, 0.0f, a->logits, B);
    loss = mama__ce_both(m, a->logits, a->dlogits, B);
    if (!dI) return loss;
    if (dscale) mama__add_scalar(m, dscale, be->dot(be, a->dlogits, a->logits, (size_t)B * B));
    be->gemm(be, 0, 0, B, E, B, scale, a->dlogits, B, Tx, E, 1.0f, dI, E);
    be->gemm(be, 1, 0, B, E, B, scale, a->dlogits, B, I, E, 1.0f, dT, E);
    return loss;
}

/* Multi-view NT-Xent (SimCLR, temperature 0.5) between the projections of
 * the image half and the ext half of sc_z; 2B-2 negatives per anchor. */
static double mama__ntxent_loss(mama_model *m, int B, int backward) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int E = m->cfg.embed_dim, n2 = 2 * B;
    double loss;
    be->l2norm_forward(be, a->sc_zn, a->sc_norm, a->sc_z, n2, E);
    be->gemm(be, 0, 1, n2, n2, E, 2.0f, a->sc_zn, E, a->sc_zn, E, 0.0f, a->ntx_sim, n2);
    be->fill_diagonal(be, a->ntx_sim, n2, n2, -1e30f); /* an anchor is not its own negative */
    be->cross_entropy_forward(be, a->ntx_loss, a->ntx_probs, a->ntx_sim, a->targets_ntx, n2, n2);
    loss = mama__sum_host(m, a->ntx_loss, n2) / n2;
    if (!backward) return loss;
    mama__zero(be, a->ntx_dsim, (size_t)n2 * n2);
    be->cross_entropy_backward(be, a->ntx_dsim, a->ntx_probs, a->targets_ntx, a->ntx_dloss, n2, n2);
    /* sim = 2 zn zn^T  =>  dzn = 2 (dsim + dsim^T) zn */
    be->gemm(be, 0, 0, n2, E, n2, 2.0f, a->ntx_dsim, n2, a->sc_zn, E, 0.0f, a->d_sc_zn, E);
    be->gemm(be, 1, 0, n2, E, n2, 2.0f, a->ntx_dsim, n2, a->sc_zn, E, 1.0f, a->d_sc_zn, E);
    mama__zero(be, a->d_sc_z, (size_t)n2 * E);
    be->l2norm_backward(be, a->d_sc_z, a->d_sc_zn, a->sc_zn, a->sc_norm, n2, E);
    return loss;
}

/* Symmetric local alignment.  sim = p s^T between every patch of every
 * image and every sentence of every caption (one GEMM).  For image i and
 * caption j:  t2i = mean over j's sentences of the max over i's patches;
 * i2t = mean over i's patches of the max over j's sentences.  The maxima
 * are segment maxima (rows of sim grouped by caption, rows of sim^T grouped
 * by image); the sentence mean is a GEMM with an averaging matrix. */
static double mama__sla_loss(mama_model *m, int B, int S, int backward) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int E = m->cfg.embed_dim, N = m->n_patches, BN = B * N;
    float scale = expf(mama__read_scalar(m, m->w.local_scale));
    double loss;
    be->gemm(be, 0, 1, BN, S, E, 1.0f, a->p_emb, E, a->s_emb, E, 0.0f, a->sla_sim, S);
    be->transpose(be, a->sla_simt, a->sla_sim, BN, S);
    be->segment_max_forward(be, a->sla_rowmax, a->sla_rowarg, a->sla_sim, BN, S, a->sent_seg, B);
    be->meanpool_forward(be, a->sla_i2t, a->sla_rowmax, NULL, B, N, B);        /* i2t[i, j] */
    be->segment_max_forward(be, a->sla_colmax, a->sla_colarg, a->sla_simt, S, BN, a->img_seg, B);
    be->gemm(be, 0, 0, B, B, S, 1.0f, a->sla_avg, S, a->sla_colmax, B, 0.0f, a->sla_t2i_t, B); /* t2i[i,j] at [j,i] */
    be->scale(be, a->sla_t2i_t, scale, (size_t)B * B);
    be->scale(be, a->sla_i2t, scale, (size_t)B * B);
    /* CE in both directions is symmetric in the orientation of the matrix */
    loss = mama__ce_both(m, a->sla_t2i_t, a->sla_dt2i_t, B);
    loss += mama__ce_both(m, a->sla_i2t, a->sla_di2t, B);
    if (!backward) return loss;
    if (m->g.local_scale)
        mama__add_scalar(m, m->g.local_scale, be->dot(be, a->sla_dt2i_t, a->sla_t2i_t, (size_t)B * B) +
                                              be->dot(be, a->sla_di2t, a->sla_i2t, (size_t)B * B));
    be->scale(be, a->sla_dt2i_t, scale, (size_t)B * B);
    be->scale(be, a->sla_di2t, scale, (size_t)B * B);
    /* back through the averaging and the maxima to sim and sim^T */
    be->gemm(be, 1, 0, S, B, B, 1.0f, a->sla_avg, S, a->sla_dt2i_t, B, 0.0f, a->sla_dcolmax, B);
    mama__zero(be, a->sla_dsimt, (size_t)S * BN);
    be->segment_max_backward(be, a->sla_dsimt, a->sla_dcolmax, a->sla_colarg, S, BN, B);
    mama__zero(be, a->sla_drowmax, (size_t)BN * B);
    be->meanpool_backward(be, a->sla_drowmax, a->sla_di2t, NULL, B, N, B);
    mama__zero(be, a->sla_dsim, (size_t)BN * S);
    be->segment_max_backward(be, a->sla_dsim, a->sla_drowmax, a->sla_rowarg, BN, S, B);
    /* sim = p s^T, simt = s p^T */
    be->gemm(be, 0, 0, BN, E, S, 1.0f, a->sla_dsim, S, a->s_emb, E, 1.0f, a->d_p_emb, E);
    be->gemm(be, 1, 0, BN, E, S, 1.0f, a->sla_dsimt, BN, a->s_emb, E, 1.0f, a->d_p_emb, E);
    be->gemm(be, 1, 0, S, E, BN, 1.0f, a->sla_dsim, S, a->p_emb, E, 1.0f, a->d_s_emb, E);
    be->gemm(be, 0, 0, S, E, BN, 1.0f, a->sla_dsimt, BN, a->p_emb, E, 1.0f, a->d_s_emb, E);
    return loss;
}

/* ---- 6.1 Uploading a batch --------------------------------------------- */

static mama_status mama__upload_batch(mama_model *m, const mama_batch *b, int late, int need_sentences, int *S_out) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int B = b->B, T = c->context, N = m->n_patches, Tv = m->n_vtok, i, t, S = 0;
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    int *hi = m->h_ints;
    float *hf = m->h_floats;
    if (B < 1 || B > m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "batch of %d samples; this model was created for 1..%d", B, m->max_batch);
    if (!b->images || !b->input_ids || !b->attention_mask)
        return MAMA_FAIL(MAMA_ERR_INVALID, "batch: images, input_ids and attention_mask are required");
    if (late && !b->ext_images)
        return MAMA_FAIL(MAMA_ERR_INVALID, "batch: ext_images are required for the late losses");
    for (i = 0; i < B * T; i++)
        if (b->input_ids[i] < 0 || b->input_ids[i] >= c->vocab_size)
            return MAMA_FAIL(MAMA_ERR_INVALID, "batch: input_ids[%d][%d] = %d is outside the vocabulary (0..%d)",
                             i / T, i % T, b->input_ids[i], c->vocab_size - 1);
    MAMA_TRY(be->to_device(be, a->images, b->images, sizeof(float) * img * (size_t)B));
    if (late) MAMA_TRY(be->to_device(be, a->images + img * (size_t)B, b->ext_images, sizeof(float) * img * (size_t)B));
    MAMA_TRY(be->to_device(be, a->ids, b->input_ids, sizeof(int) * (size_t)B * T));
    for (i = 0; i < B * T; i++) hi[i] = b->attention_mask[i] != 0;
    MAMA_TRY(be->to_device(be, a->key_valid, hi, sizeof(int) * (size_t)B * T));
    for (i = 0; i < B * T; i++) hf[i] = b->attention_mask[i] != 0 ? 1.0f : 0.0f;
    MAMA_TRY(be->to_device(be, a->pool_mask, hf, sizeof(float) * (size_t)B * T));
    /* sentence rows: every sep position, caption by caption */
    m->h_sent_seg[0] = 0;
    for (i = 0; i < B; i++) {
        int count = 0;
        for (t = 0; t < T; t++)
            if (b->input_ids[i * T + t] == c->sep_id) {
                if (count == MAMA_MAX_SENTENCES)
                    return MAMA_FAIL(MAMA_ERR_INVALID, "batch: caption %d has more than %d sentence separators", i,
                                     MAMA_MAX_SENTENCES);
                hi[S++] = i * T + t;
                count++;
            }
        if (need_sentences && count == 0)
            return MAMA_FAIL(MAMA_ERR_INVALID, "batch: caption %d has no sentence separator (id %d), which the "
                             "local alignment needs", i, c->sep_id);
        m->h_sent_seg[i + 1] = S;
    }
    if (S > 0) MAMA_TRY(be->to_device(be, a->sent_idx, hi, sizeof(int) * (size_t)S));
    MAMA_TRY(be->to_device(be, a->sent_seg, m->h_sent_seg, sizeof(int) * (size_t)(B + 1)));
    for (i = 0; i <= B; i++) hi[i] = i * N;
    MAMA_TRY(be->to_device(be, a->img_seg, hi, sizeof(int) * (size_t)(B + 1)));
    /* patch rows of the first B images inside the token matrix */
    for (i = 0; i < B; i++)
        for (t = 0; t < N; t++) hi[i * N + t] = i * Tv + 1 + c->registers + t;
    MAMA_TRY(be->to_device(be, a->patch_idx, hi, sizeof(int) * (size_t)B * N));
    /* sentence averaging matrix [B captions, S] for t2i */
    if (S > 0) {
        memset(hf, 0, sizeof(float) * (size_t)B * S);
        for (i = 0; i < B; i++)
            for (t = m->h_sent_seg[i]; t < m->h_sent_seg[i + 1]; t++)
                hf[(size_t)i * S + t] = 1.0f / (float)(m->h_sent_seg[i + 1] - m->h_sent_seg[i]);
        MAMA_TRY(be->to_device(be, a->sla_avg, hf, sizeof(float) * (size_t)B * S));
    }
    /* targets and per-row loss weights */
    for (i = 0; i < B; i++) hi[i] = i;
    MAMA_TRY(be->to_device(be, a->targets_diag, hi, sizeof(int) * (size_t)B));
    for (i = 0; i < 2 * B; i++) hi[i] = (i + B) % (2 * B);
    MAMA_TRY(be->to_device(be, a->targets_ntx, hi, sizeof(int) * (size_t)(2 * B)));
    for (i = 0; i < B; i++) hf[i] = 1.0f / (float)B;
    MAMA_TRY(be->to_device(be, a->ce_dloss, hf, sizeof(float) * (size_t)B));
    for (i = 0; i < 2 * B; i++) hf[i] = 1.0f / (float)(2 * B);
    MAMA_TRY(be->to_device(be, a->ntx_dloss, hf, sizeof(float) * (size_t)(2 * B)));
    *S_out = S;
    return MAMA_OK;
}

MAMA_API void mama_step_opts_default(mama_step_opts *o) {
    memset(o, 0, sizeof *o);
    o->use_mv = o->use_sym = o->use_sla = 1;
    o->train = 1;
    o->dropout = 1;
}

/* ---- 6.2 One step: forward, the four losses, backward ------------------ */
static mama_status mama__step(mama_model *m, const mama_batch *b, const mama_step_opts *o, int backward,
                              int accumulate, mama_losses *out) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int B = b->B, S = 0, late = o->late, train = o->train;
    int use_mv = late && o->use_mv, use_sym = late && o->use_sym, use_sla = late && o->use_sla;
    int Bv = (use_mv || use_sym) ? 2 * B : B;
    int E = c->embed_dim, D = c->vision_dim, N = m->n_patches;
    mama__text_step ts;
    mama_losses L;
    size_t ngrad = m->group_numel[MAMA_GROUP_TRAIN] + m->group_numel[MAMA_GROUP_LATE];
    memset(&L, 0, sizeof L);
    MAMA_TRY(mama__upload_batch(m, b, Bv == 2 * B, use_sla, &S));
    ts.train_dropout = train && o->dropout;
    ts.seed = o->seed;
    ts.pool_masked = c->text_pool_real_only;
    /* forward */
    mama__vision_forward(m, Bv);
    if (use_sla) mama__vision_local_forward(m, B, train);
    mama__text_forward(m, B, S, &ts, train, use_sla);
    if (use_mv) mama__simclr_forward(m, B, train);
    if (backward) {
        if (!accumulate) MAMA_TRY(be->zero(be, m->grads, sizeof(float) * ngrad));
        mama__zero(be, a->d_img_emb, (size_t)Bv * E);
        mama__zero(be, a->d_txt_emb, (size_t)B * E);
        mama__zero(be, a->d_vpooled, (size_t)Bv * D);
    }
    /* losses (each also writes its gradients; cheap next to the towers) */
    L.clip = (float)mama__clip_loss(m, a->img_emb, a->txt_emb, backward ? a->d_img_emb : NULL, a->d_txt_emb,
                                    m->w.logit_scale, backward ? m->g.logit_scale : NULL, B);
    if (use_sym)
        L.sym = (float)mama__clip_loss(m, a->img_emb + (size_t)B * E, a->txt_emb,
                                       backward ? a->d_img_emb + (size_t)B * E : NULL, a->d_txt_emb,
                                       m->w.logit_scale, backward ? m->g.logit_scale : NULL, B);
    if (use_mv) L.mv = (float)mama__ntxent_loss(m, B, backward);
    if (use_sla) {
        if (backward) {
            mama__zero(be, a->d_p_emb, (size_t)B * N * E);
            mama__zero(be, a->d_s_emb, (size_t)S * E);
        }
        L.sla = (float)mama__sla_loss(m, B, S, backward);
    }
    L.loss = L.clip + L.mv + L.sym + L.sla;
    if (out) *out = L;
    m->last_B = B; m->last_S = S; m->last_late = late;
    if (!backward) return MAMA_OK;
    /* backward: heads first, then the towers */
    if (use_mv) mama__simclr_backward(m, B);
    if (use_sla) {
        mama__local_acts k = mama__img_local_acts(a);
        int segs[2];
        segs[0] = 0; segs[1] = B * N;
        mama__zero(be, a->d_patches, (size_t)B * N * D);
        mama__local_head_backward(m, &m->w.img_local, &m->g.img_local, &k, a->patches, a->d_p_emb, a->d_patches,
                                  B * N, D, segs, 1, a->d_il_a, a->d_il_b, a->d_il_e, a->d_il_e2);
    }
    mama__vision_backward(m, Bv, B, use_sla);
    mama__text_backward(m, B, S, &ts, use_sla);
    return MAMA_OK;
}

MAMA_API mama_status mama_model_step(mama_model *m, const mama_batch *b, const mama_step_opts *o, int accumulate,
                                     mama_losses *out) {
    mama_step_opts def;
    if (!m || !b) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_step: model and batch are required");
    if (!o) { mama_step_opts_default(&def); o = &def; }
    return mama__step(m, b, o, 1, accumulate, out);
}

MAMA_API mama_status mama_model_forward(mama_model *m, const mama_batch *b, mama_losses *out) {
    mama_step_opts o;
    mama_step_opts_default(&o);
    o.train = 0;
    o.dropout = 0;
    o.late = b && b->ext_images != NULL;
    if (!m || !b) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_forward: model and batch are required");
    return mama__step(m, b, &o, 0, 0, out);
}

MAMA_API mama_status mama_model_embeddings(mama_model *m, float *img_emb, float *txt_emb) {
    size_t n = (size_t)m->last_B * m->cfg.embed_dim * sizeof(float);
    if (img_emb) MAMA_TRY(m->be->to_host(m->be, img_emb, m->a.img_emb, n));
    if (txt_emb) MAMA_TRY(m->be->to_host(m->be, txt_emb, m->a.txt_emb, n));
    return MAMA_OK;
}

/* ---- 6.3 Encoding only (evaluation mode) ------------------------------- */

MAMA_API mama_status mama_encode_images(mama_model *m, const float *images, int B, float *emb, float *pooled) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    if (B < 1 || B > 2 * m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_encode_images: %d images; at most %d per call for this model", B,
                         2 * m->max_batch);
    MAMA_TRY(be->to_device(be, m->a.images, images, sizeof(float) * img * (size_t)B));
    mama__vision_forward(m, B);
    if (emb) MAMA_TRY(be->to_host(be, emb, m->a.img_emb, sizeof(float) * (size_t)B * c->embed_dim));
    if (pooled) MAMA_TRY(be->to_host(be, pooled, m->a.vpooled, sizeof(float) * (size_t)B * c->vision_dim));
    return MAMA_OK;
}

/* ref_feature (SPEC A.7b): the reference's zero-shot text feature, the
 * hidden state at the first padding position (position 0 when the caption
 * fills the context), instead of the training pooling.  Both go through
 * the same masked mean: a one-hot mask picks that single position. */
static mama_status mama__encode_texts_ex(mama_model *m, const int *ids, const int *mask, int B, float *emb,
                                         int ref_feature) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    int T = c->context, i, b;
    mama__text_step ts;
    if (B < 1 || B > m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_encode_texts: %d texts; at most %d per call for this model", B,
                         m->max_batch);
    for (i = 0; i < B * T; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return MAMA_FAIL(MAMA_ERR_INVALID, "mama_encode_texts: ids[%d][%d] = %d outside the vocabulary",
                             i / T, i % T, ids[i]);
        m->h_ints[i] = mask[i] != 0;
        m->h_floats[i] = mask[i] != 0 ? 1.0f : 0.0f;
    }
    if (ref_feature)
        for (b = 0; b < B; b++) {
            int first_pad = 0;
            for (i = 0; i < T; i++) if (!mask[b * T + i]) { first_pad = i; break; }
            for (i = 0; i < T; i++) m->h_floats[b * T + i] = i == first_pad ? 1.0f : 0.0f;
        }
    MAMA_TRY(be->to_device(be, m->a.ids, ids, sizeof(int) * (size_t)B * T));
    MAMA_TRY(be->to_device(be, m->a.key_valid, m->h_ints, sizeof(int) * (size_t)B * T));
    MAMA_TRY(be->to_device(be, m->a.pool_mask, m->h_floats, sizeof(float) * (size_t)B * T));
    ts.train_dropout = 0;
    ts.seed = 0;
    ts.pool_masked = ref_feature || c->text_pool_real_only;
    mama__text_forward(m, B, 0, &ts, 0, 0);
    return be->to_host(be, emb, m->a.txt_emb, sizeof(float) * (size_t)B * c->embed_dim);
}

MAMA_API mama_status mama_encode_texts(mama_model *m, const int *ids, const int *mask, int B, float *emb) {
    return mama__encode_texts_ex(m, ids, mask, B, emb, 0);
}

/* ---- 7.x Model weights in safetensors (names of SPEC A.8) -------------- */

/* BatchNorm step counters, saved as num_batches_tracked (int64). */
static const char *const mama__bn_tracked_names[6] = {
    "img_encoder_q.local_embed.head.1.num_batches_tracked", "img_encoder_q.local_embed.head.4.num_batches_tracked",
    "text_encoder_q.local_embed.head.1.num_batches_tracked", "text_encoder_q.local_embed.head.4.num_batches_tracked",
    "simclr_proj.layers.1.num_batches_tracked", "simclr_proj.layers.4.num_batches_tracked"};

/* Find a tensor under its A.8 name or a known alias: newer PEFT stores the
 * LoRA-wrapped base weight as c_attn.base_layer.weight. */
static const mama_st_tensor *mama__find_tensor(const mama_safetensors *st, const char *name, char *alias, size_t cap) {
    const mama_st_tensor *t = mama_st_find(st, name);
    const char *p;
    if (t) { snprintf(alias, cap, "%s", name); return t; }
    p = strstr(name, "c_attn.");
    if (p && (!strcmp(p, "c_attn.weight") || !strcmp(p, "c_attn.bias"))) {
        snprintf(alias, cap, "%.*sc_attn.base_layer.%s", (int)(p - name), name, p + 7);
        return mama_st_find(st, alias);
    }
    return NULL;
}

/* Shapes agree when the dims match, allowing a 1x1 conv [out,in,1] to be
 * given as [out,in] and a scalar as [] or [1]. */
static int mama__shape_matches(const mama_param_info *p, const mama_st_tensor *t) {
    int i, pd = p->ndim, td = t->ndim;
    while (pd > 0 && p->shape[pd - 1] == 1 && pd > td) pd--;
    while (td > 0 && t->shape[td - 1] == 1 && td > pd) td--;
    if (pd != td) return 0;
    for (i = 0; i < pd; i++)
        if (p->shape[i] != t->shape[i]) return 0;
    return 1;
}

static void mama__shape_string(char *out, size_t cap, int ndim, const int64_t *shape) {
    int i, n = snprintf(out, cap, "[");
    for (i = 0; i < ndim && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n > 0 && (size_t)n < cap) snprintf(out + n, cap - (size_t)n, "]");
}

/* ---- Resampling the position embedding (SPEC A.1, A.7b) ----------------
 * When the stored patch grid differs from the config's, the patch part of
 * pos_embed is resampled once, here, the way DINOv2 does on every forward:
 * PyTorch's F.interpolate(mode="bicubic", antialias=True,
 * align_corners=False) to the target size.  That filter is separable; for
 * output index i with scale = in/out, centre = scale (i + 0.5), support =
 * 2 max(scale, 1); the taps j in [centre - support, centre + support) clipped
 * to the input get weights cubic((j - centre + 0.5) / max(scale, 1)) with
 * Keys' a = -0.5, normalised to sum 1 (so borders need no padding). */
static double mama__cubic_keys(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}
/* Resample along one axis: in [outer, n_in, inner] -> out [outer, n_out, inner]. */
static void mama__resample_axis(const float *in, float *out, int outer, int n_in, int n_out, int inner) {
    double scale = (double)n_in / n_out, support = 2.0 * (scale >= 1 ? scale : 1), inv = scale >= 1 ? 1 / scale : 1;
    int i, j, o, k;
    for (i = 0; i < n_out; i++) {
        double centre = scale * (i + 0.5), w[64], total = 0;
        int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5), nw;
        if (lo < 0) lo = 0;
        if (hi > n_in) hi = n_in;
        nw = hi - lo;
        if (nw > 64) nw = 64;
        for (j = 0; j < nw; j++) { w[j] = mama__cubic_keys((j + lo - centre + 0.5) * inv); total += w[j]; }
        for (j = 0; j < nw; j++) w[j] = total != 0 ? w[j] / total : 0;
        for (o = 0; o < outer; o++)
            for (k = 0; k < inner; k++) {
                double acc = 0;
                for (j = 0; j < nw; j++) acc += w[j] * in[((size_t)o * n_in + lo + j) * inner + k];
                out[((size_t)o * n_out + i) * inner + k] = (float)acc;
            }
    }
}
/* pos [(1 + g0*g0), D] -> [(1 + g*g), D]: the cls row is kept. */
static mama_status mama__resample_pos_embed(const float *src, int g0, float *dst, int g, int D) {
    float *tmp;
    MAMA_TRY(mama_alloc((void **)&tmp, sizeof(float) * (size_t)g0 * g * D, "pos_embed resampling"));
    memcpy(dst, src, sizeof(float) * (size_t)D);
    mama__resample_axis(src + D, tmp, g0, g0, g, D);          /* width:  [g0][g0][D] -> [g0][g][D] */
    mama__resample_axis(tmp, dst + D, 1, g0, g, g * D);       /* height: [g0][g*D]  -> [g][g*D]    */
    mama_free(tmp);
    return MAMA_OK;
}

static mama_status mama__load_pos_embed(mama_model *m, const mama_safetensors *st, const mama_param_info *p,
                                        const mama_st_tensor *t, float *dst) {
    int D = m->cfg.vision_dim, g = m->cfg.image_size / m->cfg.patch_size, g0;
    size_t n0;
    float *src;
    mama_status s;
    if (t->ndim < 2 || t->shape[t->ndim - 1] != D)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' must end in the vision width %d", st->path, p->name, D);
    n0 = t->numel / (size_t)D;
    g0 = (int)(sqrt((double)(n0 - 1)) + 0.5);
    if ((size_t)g0 * g0 + 1 != n0)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: '%s' has %zu positions, not 1 + a square grid", st->path, p->name, n0);
    MAMA_TRY(mama_alloc((void **)&src, sizeof(float) * t->numel, "pos_embed"));
    s = mama_st_read_f32(st, p->name, src, t->numel);
    if (s == MAMA_OK) s = mama__resample_pos_embed(src, g0, dst, g, D);
    mama_free(src);
    return s;
}

static mama_status mama__load_into_host(mama_model *m, const mama_safetensors *st, float *host, int allow_missing,
                                        int *loaded) {
    int i, count = 0;
    char alias[256], s1[96], s2[96];
    for (i = 0; i < m->nparams; i++) {
        const mama_param_info *p = &m->info[i];
        const mama_st_tensor *t = mama__find_tensor(st, p->name, alias, sizeof alias);
        if (!t) {
            if (allow_missing) continue;
            return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' is missing", st->path, p->name);
        }
        if (p->ndim == 3 && !strcmp(p->name, "img_encoder_q.model.pos_embed") && !mama__shape_matches(p, t)) {
            MAMA_TRY(mama__load_pos_embed(m, st, p, t, host + p->offset)); /* another grid: resample once */
            count++;
            continue;
        }
        if (!mama__shape_matches(p, t)) {
            mama__shape_string(s1, sizeof s1, t->ndim, t->shape);
            mama__shape_string(s2, sizeof s2, p->ndim, p->shape);
            return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' has shape %s, the config needs %s", st->path, alias, s1, s2);
        }
        if (t->dtype != MAMA_F32 && t->dtype != MAMA_F16 && t->dtype != MAMA_BF16)
            return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16", st->path,
                             alias, mama_dtype_name(t->dtype));
        MAMA_TRY(mama_st_read_f32(st, alias, host + p->offset, p->numel));
        count++;
    }
    for (i = 0; i < 6; i++) {
        const mama_st_tensor *t = mama_st_find(st, mama__bn_tracked_names[i]);
        int64_t v;
        if (t && t->numel == 1 && (t->dtype == MAMA_I64 || t->dtype == MAMA_I32) &&
            mama_st_read_i64(st, mama__bn_tracked_names[i], &v, 1) == MAMA_OK)
            m->bn_batches[i] = v;
    }
    if (loaded) *loaded = count;
    return MAMA_OK;
}

MAMA_API mama_status mama_model_load_weights(mama_model *m, const char *path, int allow_missing, int *loaded) {
    mama_safetensors st;
    mama__host_weights h;
    mama_status s;
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, path));
    s = mama__host_weights_init(m, &h);
    if (s == MAMA_OK) {
        /* start from the current values so that allow_missing keeps them */
        s = m->be->to_host(m->be, h.data, m->params, sizeof(float) * h.numel);
        if (s == MAMA_OK) s = mama__load_into_host(m, &st, h.data, allow_missing, loaded);
        if (s == MAMA_OK) s = m->be->to_device(m->be, m->params, h.data, sizeof(float) * h.numel);
        mama__host_weights_free(&h);
    }
    mama_st_close(&st);
    return s;
}

MAMA_API mama_status mama_model_load(mama_model **out, const char *path, mama_backend *be, int max_batch) {
    mama_safetensors st;
    mama_config c;
    const char *json;
    mama_status s;
    char src[512];
    *out = NULL;
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, path));
    json = mama_st_meta(&st, "mama_config");
    if (!json) {
        mama_st_close(&st);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: no 'mama_config' in the safetensors metadata (convert the weights "
                         "with weights/convert_*.py, or create the model from a preset and use load_weights)", path);
    }
    /* fields absent from the metadata take the reference's defaults */
    mama_config_preset(&c, "base");
    c.text_pool_real_only = 0;
    snprintf(src, sizeof src, "%s:__metadata__.mama_config", path);
    s = mama_config_from_json(&c, json, src);
    mama_st_close(&st);
    MAMA_TRY(s);
    MAMA_TRY(mama_model_create(out, &c, be, max_batch, 0));
    s = mama_model_load_weights(*out, path, 0, NULL);
    if (s != MAMA_OK) { mama_model_free(*out); *out = NULL; }
    return s;
}

/* Add every tensor of the model (host copy in `host`, which must stay alive
 * until the writer is written) and the config metadata to a writer. */
static mama_status mama__writer_add_model(mama_st_writer *w, const mama_model *m, float *host) {
    char json[2048];
    int i;
    size_t total = m->group_offset[3] + m->group_numel[3];
    MAMA_TRY(mama_config_to_json(&m->cfg, json, sizeof json));
    MAMA_TRY(m->be->to_host(m->be, host, m->params, sizeof(float) * total));
    MAMA_TRY(mama_st_writer_meta(w, "mama_config", json));
    for (i = 0; i < m->nparams; i++) {
        const mama_param_info *p = &m->info[i];
        MAMA_TRY(mama_st_writer_add(w, p->name, MAMA_F32, p->ndim, p->shape, host + p->offset));
    }
    for (i = 0; i < 6; i++) MAMA_TRY(mama_st_writer_add(w, mama__bn_tracked_names[i], MAMA_I64, 0, NULL, &m->bn_batches[i]));
    return MAMA_OK;
}

MAMA_API mama_status mama_model_save(const mama_model *m, const char *path) {
    mama_st_writer *w = NULL;
    float *host = NULL;
    mama_status s;
    MAMA_TRY(mama_alloc((void **)&host, sizeof(float) * (m->group_offset[3] + m->group_numel[3] + 1), "weights for saving"));
    s = mama_st_writer_init(&w);
    if (s == MAMA_OK) s = mama__writer_add_model(w, m, host);
    if (s == MAMA_OK) s = mama_st_writer_write(w, path);
    mama_st_writer_free(w);
    mama_free(host);
    return s;
}

/* ---- 6.4 The verification step (`mama forward`) ------------------------- */

static mama_status mama__read_int_tensor(const mama_safetensors *st, const char *name, int *dst, size_t count) {
    const mama_st_tensor *t = mama_st_find(st, name);
    if (!t) return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' is missing", st->path, name);
    if (t->numel != count)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' has %zu elements, expected %zu", st->path, name, t->numel, count);
    return mama_st_read_i32(st, name, (int32_t *)dst, count);
}

MAMA_API mama_status mama_verify_forward(const char *weights, const char *batch, const char *out, int late,
                                         mama_backend *be) {
    mama_safetensors st;
    const mama_st_tensor *ti;
    mama_model *m = NULL;
    mama_batch b;
    mama_step_opts o;
    mama_losses L;
    mama_st_writer *w = NULL;
    float *images = NULL, *ext = NULL, *host = NULL, *emb = NULL;
    int *ids = NULL, *mask = NULL, B, i, T;
    int64_t shp[2], one = 1;
    float lv[5];
    static const char *const loss_names[5] = {"loss", "loss_clip", "loss_mv", "loss_sym", "loss_sla"};
    char name[256];
    size_t img, total;
    mama_status s;
    if (!be) be = mama_cpu_backend();
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, batch));
    ti = mama_st_find(&st, "images");
    if (!ti || ti->ndim != 4) {
        mama_st_close(&st);
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: 'images' must be a [B, C, H, W] tensor", batch);
    }
    B = (int)ti->shape[0];
    img = ti->numel / (size_t)B;
    s = mama_model_load(&m, weights, be, B);
    if (s != MAMA_OK) { mama_st_close(&st); return s; }
    T = m->cfg.context;
    if ((int)ti->shape[1] != m->cfg.in_chans || (int)ti->shape[2] != m->cfg.image_size || (int)ti->shape[3] != m->cfg.image_size) {
        s = MAMA_FAIL(MAMA_ERR_SHAPE, "%s: 'images' is [%lld, %lld, %lld, %lld]; the model needs [B, %d, %d, %d]", batch,
                      (long long)ti->shape[0], (long long)ti->shape[1], (long long)ti->shape[2], (long long)ti->shape[3],
                      m->cfg.in_chans, m->cfg.image_size, m->cfg.image_size);
        goto done;
    }
#define MAMA__A(p, n) if ((s = mama_alloc((void **)&(p), (n), "verify buffers")) != MAMA_OK) goto done
    MAMA__A(images, sizeof(float) * img * B);
    MAMA__A(ext, sizeof(float) * img * B);
    MAMA__A(ids, sizeof(int) * (size_t)B * T);
    MAMA__A(mask, sizeof(int) * (size_t)B * T);
    MAMA__A(emb, sizeof(float) * (size_t)2 * B * m->cfg.embed_dim);
    total = m->group_offset[3] + m->group_numel[3];
    MAMA__A(host, sizeof(float) * total);
#undef MAMA__A
    if ((s = mama_st_read_f32(&st, "images", images, img * B)) != MAMA_OK) goto done;
    if (late && (s = mama_st_read_f32(&st, "ext_images", ext, img * B)) != MAMA_OK) goto done;
    if ((s = mama__read_int_tensor(&st, "input_ids", ids, (size_t)B * T)) != MAMA_OK) goto done;
    if ((s = mama__read_int_tensor(&st, "attention_mask", mask, (size_t)B * T)) != MAMA_OK) goto done;
    b.B = B; b.images = images; b.ext_images = late ? ext : NULL; b.input_ids = ids; b.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = late;
    o.dropout = 0;
    if ((s = mama_model_step(m, &b, &o, 0, &L)) != MAMA_OK) goto done;
    if ((s = be->to_host(be, host, m->params, sizeof(float) * m->group_offset[2])) != MAMA_OK) goto done;
    if ((s = be->to_host(be, host + m->group_offset[3], m->params + m->group_offset[3],
                         sizeof(float) * m->group_numel[3])) != MAMA_OK) goto done;
    /* gradients reuse the front of `host`'s [train|late] region layout */
    if ((s = mama_st_writer_init(&w)) != MAMA_OK) goto done;
    if ((s = mama_model_embeddings(m, emb, emb + (size_t)B * m->cfg.embed_dim)) != MAMA_OK) goto done;
    shp[0] = B; shp[1] = m->cfg.embed_dim;
    if ((s = mama_st_writer_add(w, "img_emb", MAMA_F32, 2, shp, emb)) != MAMA_OK) goto done;
    if ((s = mama_st_writer_add(w, "txt_emb", MAMA_F32, 2, shp, emb + (size_t)B * m->cfg.embed_dim)) != MAMA_OK) goto done;
    lv[0] = L.loss; lv[1] = L.clip; lv[2] = L.mv; lv[3] = L.sym; lv[4] = L.sla;
    for (i = 0; i < 5; i++)
        if ((s = mama_st_writer_add(w, loss_names[i], MAMA_F32, 1, &one, &lv[i])) != MAMA_OK) goto done;
    /* grads: copy the gradient buffer over the [train|late] part of host */
    if ((s = be->to_host(be, host, m->grads, sizeof(float) * m->group_offset[2])) != MAMA_OK) goto done;
    for (i = 0; i < m->nparams && s == MAMA_OK; i++) {
        const mama_param_info *p = &m->info[i];
        if (p->group == MAMA_GROUP_TRAIN || p->group == MAMA_GROUP_LATE) {
            snprintf(name, sizeof name, "grad.%s", p->name);
            s = mama_st_writer_add(w, name, MAMA_F32, p->ndim, p->shape, host + p->offset);
        } else if (p->group == MAMA_GROUP_BUFFER) {
            snprintf(name, sizeof name, "buf.%s", p->name);
            s = mama_st_writer_add(w, name, MAMA_F32, p->ndim, p->shape, host + p->offset);
        }
    }
    if (s == MAMA_OK) s = mama_st_writer_write(w, out);
done:
    mama_st_writer_free(w);
    mama_st_close(&st);
    mama_model_free(m);
    mama_free(images); mama_free(ext); mama_free(ids); mama_free(mask); mama_free(emb); mama_free(host);
    return s;
}

/* ---- 6.5 AdamW over the parameter groups ------------------------------- */
MAMA_API mama_status mama_adamw_init(mama_adamw *o, mama_model *m, float weight_decay) {
    size_t n;
    memset(o, 0, sizeof *o);
    o->beta1 = 0.9f; o->beta2 = 0.999f; o->eps = 1e-8f; o->weight_decay = weight_decay;
    o->be = m->be;
    o->n_train = m->group_numel[MAMA_GROUP_TRAIN];
    o->n_late = m->group_numel[MAMA_GROUP_LATE];
    n = o->n_train + o->n_late;
    MAMA_TRY(m->be->alloc(m->be, (void **)&o->m, sizeof(float) * (n ? n : 1)));
    if (m->be->alloc(m->be, (void **)&o->v, sizeof(float) * (n ? n : 1)) != MAMA_OK) {
        m->be->free(m->be, o->m);
        o->m = NULL;
        return MAMA_ERR_NOMEM;
    }
    m->be->zero(m->be, o->m, sizeof(float) * n);
    m->be->zero(m->be, o->v, sizeof(float) * n);
    return MAMA_OK;
}
MAMA_API void mama_adamw_free(mama_adamw *o) {
    if (o->be) { o->be->free(o->be, o->m); o->be->free(o->be, o->v); }
    memset(o, 0, sizeof *o);
}
MAMA_API void mama_adamw_step(mama_adamw *o, mama_model *m, float lr, int late) {
    mama_backend *be = m->be;
    /* the [train] group is at offset 0 of params, grads and moments; [late]
     * follows it directly in all four buffers */
    o->step_train++;
    be->adamw_step(be, m->params, m->grads, o->m, o->v, o->n_train, lr, o->beta1, o->beta2, o->eps,
                   o->weight_decay, (int)o->step_train);
    if (late && o->n_late) {
        size_t off = o->n_train;
        o->step_late++;
        be->adamw_step(be, m->params + off, m->grads + off, o->m + off, o->v + off, o->n_late, lr, o->beta1,
                       o->beta2, o->eps, o->weight_decay, (int)o->step_late);
    }
}

MAMA_API mama_status mama_model_vision_tokens(mama_model *m, int B, float *prenorm, float *patch_norm) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, T = m->n_vtok, N = m->n_patches, b;
    const float *x = m->a.vres[c->vision_depth];
    if (B < 1 || B > m->max_batch) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_vision_tokens: B %d out of 1..%d", B, m->max_batch);
    if (prenorm) MAMA_TRY(be->to_host(be, prenorm, x, sizeof(float) * (size_t)B * T * D));
    if (patch_norm) {
        be->layernorm_forward(be, m->a.vnorm, m->a.vnorm_mean, m->a.vnorm_rstd, x, m->w.norm_w, m->w.norm_b, B * T, D, 1e-6f);
        for (b = 0; b < B; b++)
            MAMA_TRY(be->to_host(be, patch_norm + (size_t)b * N * D, m->a.vnorm + ((size_t)b * T + 1 + c->registers) * D,
                                 sizeof(float) * (size_t)N * D));
    }
    return MAMA_OK;
}

MAMA_API mama_status mama_model_text_hidden(mama_model *m, int B, float *hidden) {
    if (B < 1 || B > m->max_batch) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_text_hidden: B %d out of 1..%d", B, m->max_batch);
    return m->be->to_host(m->be, hidden, m->a.hidden, sizeof(float) * (size_t)B * m->cfg.context * m->cfg.text_dim);
}

MAMA_API float mama_model_logit_scale(mama_model *m) { return expf(mama__read_scalar(m, m->w.logit_scale)); }
