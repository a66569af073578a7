/* tests/test_bf16.c - frozen weights kept in bf16 / f16 (issue 6, item 2).
 *
 * 1. The CPU backend's gemm_half against a double-precision reference on the widened
 *    half values, for bf16 and f16, every transpose, shapes that hit the
 *    tiny path, edge tiles and several cache blocks, each SIMD and the
 *    scalar kernel.  Bar: max|C - ref| / max|ref| < 1e-5 (float32 sums of
 *    up to ~700 terms; measured errors are ~1e-7).  Also: the result is
 *    bit-identical to its gemm on a float32 copy of B (packing converts
 *    to exactly the floats the float GEMM packs, the kernels are shared).
 * 2. A tiny model whose frozen text matrices are bf16 (text modes lora and
 *    frozen) against the same model with those weights widened to float32
 *    (loaded from the bf16 file with frozen_dtype F32, so the VALUES are
 *    identical): text embeddings, loss and every gradient of one training
 *    step (LoRA, heads, vision).  Tolerance 1e-6 relative: the arithmetic
 *    is float32 in both, on identical values, so only a different order of
 *    operations could make them differ (measured: 0, bit-identical).
 * 3. Storage: no gradient / AdamW state for frozen tensors, half_numel *
 *    2 bytes for the frozen matrices; safetensors round trip keeps BF16
 *    (and F16), mama_model_load keeps the file's dtype, load_as converts;
 *    bad files and arguments fail with messages naming file and tensor.
 */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include "test_util.h"
#include <stdlib.h>
#include <string.h>

static mama_backend *CPU; /* this program's CPU backend (created in main) */

/* ---- 1. GEMM ------------------------------------------------------------ */

static float widen(uint16_t h, int dt) { return dt == MAMA_BF16 ? mama_bf16_to_f32(h) : mama_f16_to_f32(h); }

static void gemm_case(int dt, int ta, int tb, int M, int N, int K, float alpha, float beta, const char *kernel,
                      double *worst, int *bit_same) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc, i;
    float *A = (float *)malloc(sizeof(float) * na), *Bf = (float *)malloc(sizeof(float) * nb);
    float *C = (float *)malloc(sizeof(float) * nc), *C2 = (float *)malloc(sizeof(float) * nc);
    float *C0 = (float *)malloc(sizeof(float) * nc);
    uint16_t *Bh = (uint16_t *)malloc(sizeof(uint16_t) * nb);
    double scale = 0, err = 0;
    mama_rng r;
    int m, n, k;
    mama_rng_seed(&r, (uint64_t)(M * 131 + N * 7 + K + ta * 1000003 + tb * 2000003 + dt));
    for (i = 0; i < na; i++) A[i] = 2 * mama_rng_uniform(&r) - 1;
    for (i = 0; i < nb; i++) {
        float v = 0.1f * mama_rng_normal(&r);
        Bh[i] = dt == MAMA_BF16 ? mama_f32_to_bf16(v) : mama_f32_to_f16(v);
        Bf[i] = widen(Bh[i], dt);
    }
    for (i = 0; i < nc; i++) C0[i] = 2 * mama_rng_uniform(&r) - 1;
    memcpy(C, C0, sizeof(float) * nc);
    memcpy(C2, C0, sizeof(float) * nc);
    mama_cpu_backend_force_kernel(CPU, kernel);
    CPU->gemm_half(CPU, ta, tb, M, N, K, alpha, A, lda, Bh, ldb, dt, beta, C, ldc);
    CPU->gemm(CPU, ta, tb, M, N, K, alpha, A, lda, Bf, ldb, beta, C2, ldc);
    mama_cpu_backend_force_kernel(CPU, "auto");
    for (m = 0; m < M; m++)
        for (n = 0; n < N; n++) {
            double ref = 0;
            for (k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
                double b = tb ? Bf[(size_t)n * ldb + k] : Bf[(size_t)k * ldb + n];
                ref += a * b;
            }
            ref = alpha * ref + (beta != 0.0f ? beta * (double)C0[(size_t)m * ldc + n] : 0.0);
            if (fabs(ref) > scale) scale = fabs(ref);
            if (!(fabs(ref - C[(size_t)m * ldc + n]) <= err)) err = fabs(ref - C[(size_t)m * ldc + n]);
            if (memcmp(&C[(size_t)m * ldc + n], &C2[(size_t)m * ldc + n], sizeof(float))) *bit_same = 0;
        }
    err = scale > 0 ? err / scale : err;
    if (!(err <= *worst)) *worst = err;
    free(A); free(Bf); free(C); free(C2); free(C0); free(Bh);
}

static void gemm_tests(void) {
    static const int shapes[][3] = {{3, 5, 7},      {17, 33, 9},     {6, 16, 64},   {144, 768, 192},
                                    {37, 100, 300}, {288, 64, 700},  {5, 1030, 40}, {1, 2304, 768},
                                    {200, 19, 513}};
    static const char *const kernels[2] = {"auto", "scalar"};
    int dts[2] = {MAMA_BF16, MAMA_F16}, d, t, s, kk, cases = 0;
    for (d = 0; d < 2; d++) {
        double worst = 0;
        int same = 1;
        cases = 0;
        for (kk = 0; kk < 2; kk++)
            for (t = 0; t < 4; t++)
                for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {
                    float beta = (s % 3 == 0) ? 0.0f : (s % 3 == 1 ? 1.0f : 0.5f);
                    gemm_case(dts[d], t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], s == 4 ? 0.75f : 1.0f,
                              beta, kernels[kk], &worst, &same);
                    cases++;
                }
        test_report(worst < 1e-5 && same, "gemm_half",
                    "%s B: %d products (NN/TN/NT/TT, 9 shapes from 3x5x7 to 288x64x700, beta 0/1/0.5, kernels %s and "
                    "scalar) vs double reference on the widened values: worst rel err %.3g (bar 1e-5); bit-identical "
                    "to gemm on a float32 copy of B: %s",
                    dts[d] == MAMA_BF16 ? "bf16" : "f16", cases, mama_cpu_backend_kernel_name(CPU), worst, same ? "yes" : "NO");
    }
}

/* ---- 2. the model --------------------------------------------------------- */

#define TB 2 /* captions / images per batch */

typedef struct batch_data {
    float *images, *ext;
    int ids[TB * 256], mask[TB * 256];
    mama_batch b;
} batch_data;

static void make_batch(batch_data *bd, const mama_config *c) {
    size_t n = (size_t)TB * c->in_chans * c->image_size * c->image_size, i;
    int s, t;
    mama_rng r;
    mama_rng_seed(&r, 77);
    bd->images = (float *)malloc(sizeof(float) * n);
    bd->ext = (float *)malloc(sizeof(float) * n);
    for (i = 0; i < n; i++) bd->images[i] = 2 * mama_rng_uniform(&r) - 1;
    for (i = 0; i < n; i++) bd->ext[i] = 2 * mama_rng_uniform(&r) - 1;
    for (s = 0; s < TB; s++) {
        int len = 30 + 7 * s;
        for (t = 0; t < c->context; t++) {
            int *id = &bd->ids[s * c->context + t];
            bd->mask[s * c->context + t] = t < len;
            if (t == 0) *id = c->bos_id;
            else if (t == len - 1) *id = c->eos_id;
            else if (t >= len) *id = c->pad_id;
            else if (t % 9 == 0) *id = c->sep_id;
            else *id = (int)mama_rng_below(&r, (uint32_t)(c->vocab_size - 7));
        }
    }
    bd->b.B = TB;
    bd->b.images = bd->images;
    bd->b.ext_images = bd->ext;
    bd->b.input_ids = bd->ids;
    bd->b.attention_mask = bd->mask;
}

static double rel_diff(const float *a, const float *b, size_t n, int *bitsame) {
    double d = 0, s = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (fabs(b[i]) > s) s = fabs(b[i]);
        if (!(fabs((double)a[i] - b[i]) <= d)) d = fabs((double)a[i] - b[i]);
        if (memcmp(&a[i], &b[i], sizeof(float))) *bitsame = 0;
    }
    return s > 0 ? d / s : d;
}

/* bf16 (or f16) model vs the same values in float32, in one text mode */
static void model_case(mama_text_mode mode, int dt, const char *path) {
    mama_config c;
    mama_model *h = NULL, *f = NULL, *h2 = NULL;
    batch_data bd;
    mama_step_opts o;
    mama_losses lh, lf;
    float eh[TB * 128], ef[TB * 128];
    size_t ng, half_n;
    mama_dtype hd;
    double e_emb, e_grad, e_loss;
    int same = 1, ok_layout, i, n_half_info = 0, no_grad_frozen = 1;
    const char *mode_name = mode == MAMA_TEXT_LORA ? "lora" : "frozen";
    const char *dt_name = dt == MAMA_BF16 ? "bf16" : "f16";
    mama_config_preset(&c, "tiny");
    c.text_mode = mode;
    c.frozen_dtype = (mama_dtype)dt;
    make_batch(&bd, &c);
    if (mama_model_create(&h, &c, CPU, TB, 5) != MAMA_OK || mama_model_save(h, path) != MAMA_OK ||
        mama_model_load_as(&f, path, CPU, TB, MAMA_F32) != MAMA_OK ||
        mama_model_load(&h2, path, CPU, TB) != MAMA_OK) {
        test_report(0, "model_half", "%s %s: %s", mode_name, dt_name, mama_last_error());
        mama_model_free(h); mama_model_free(f); mama_model_free(h2);
        free(bd.images); free(bd.ext);
        return;
    }
    /* layout: the half model keeps 4 matrices per block + wte in half
     * precision, the f32 one none; both have the same trainable groups */
    half_n = mama_model_half_numel(h, &hd);
    for (i = 0; i < mama_model_param_count(h); i++) {
        const mama_param_info *p = mama_model_param(h, i);
        if (p->dtype != MAMA_F32) n_half_info++;
        if (p->group == MAMA_GROUP_FROZEN && h->g.gpt[0].attn_w) no_grad_frozen = 0;
    }
    ok_layout = hd == (mama_dtype)dt && n_half_info == 1 + 4 * c.text_depth &&
                half_n == (size_t)c.vocab_size * c.text_dim + (size_t)c.text_depth * 12 * c.text_dim * c.text_dim &&
                mama_model_half_numel(f, NULL) == 0 && mama_model_config(h)->frozen_dtype == (mama_dtype)dt &&
                mama_model_numel(h, MAMA_GROUP_TRAIN) == mama_model_numel(f, MAMA_GROUP_TRAIN) &&
                mama_model_numel(h, MAMA_GROUP_LATE) == mama_model_numel(f, MAMA_GROUP_LATE) &&
                mama_model_numel(h, MAMA_GROUP_FROZEN) == mama_model_numel(f, MAMA_GROUP_FROZEN) &&
                h->group_numel[MAMA_GROUP_FROZEN] + half_n == f->group_numel[MAMA_GROUP_FROZEN] && no_grad_frozen &&
                mama_model_half_numel(h2, &hd) == half_n && hd == (mama_dtype)dt &&
                !memcmp(h->params_half, h2->params_half, sizeof(uint16_t) * half_n);
    test_report(ok_layout, "model_half_layout",
                "%s %s: %d tensors (%zu values, %.2f MB) kept in %s, none in the f32 model; frozen group %zu f32 + %zu "
                "half values, train/late groups (the only ones with gradients and AdamW moments) equal; reloaded "
                "with mama_model_load: dtype kept, values bit-identical",
                mode_name, dt_name, n_half_info, half_n, half_n * 2.0 / 1e6, dt_name,
                (size_t)h->group_numel[MAMA_GROUP_FROZEN], half_n);
    /* text embeddings (eval mode) */
    mama_encode_texts(h, bd.ids, bd.mask, TB, eh);
    mama_encode_texts(f, bd.ids, bd.mask, TB, ef);
    e_emb = rel_diff(eh, ef, (size_t)TB * c.embed_dim, &same);
    /* one full training step (late losses on, dropout off): every gradient */
    mama_step_opts_default(&o);
    o.late = 1;
    o.dropout = MAMA_OFF;
    mama_model_step(h, &bd.b, &o, 0, &lh);
    mama_model_step(f, &bd.b, &o, 0, &lf);
    ng = mama_model_numel(h, MAMA_GROUP_TRAIN) + mama_model_numel(h, MAMA_GROUP_LATE);
    e_grad = rel_diff(mama_model_grads(h), mama_model_grads(f), ng, &same);
    e_loss = fabs((double)lh.loss - lf.loss) / fabs((double)lf.loss);
    if (lh.loss != lf.loss) same = 0;
    test_report(e_emb <= 1e-6 && e_grad <= 1e-6 && e_loss <= 1e-6 && lh.loss == lh.loss, "model_half",
                "tiny %s, text weights in %s vs the same values in f32: text embeddings rel diff %.3g, loss %.6f vs "
                "%.6f, %zu gradients (LoRA%s, heads, vision) rel diff %.3g (bar 1e-6: same values, float32 "
                "arithmetic in both); bit-identical: %s",
                mode_name, dt_name, e_emb, lh.loss, lf.loss, ng, mode == MAMA_TEXT_LORA ? "" : ": none in frozen mode",
                e_grad, same ? "yes" : "no");
    mama_model_free(h); mama_model_free(f); mama_model_free(h2);
    free(bd.images); free(bd.ext);
}

/* ---- 3. files --------------------------------------------------------------- */

static void file_tests(void) {
    const char *p32 = "build/test_bf16_f32.safetensors", *p16 = "build/test_bf16_b.safetensors";
    const char *bad = "build/test_bf16_bad.safetensors";
    mama_config c;
    mama_model *m = NULL, *mb = NULL;
    mama_safetensors st;
    const mama_st_tensor *t1, *t2, *t3;
    const mama_param_info *p;
    const char *cfc = "text_encoder_q.model.base_model.model.transformer.h.1.mlp.c_fc.weight";
    const char *lora = "text_encoder_q.model.base_model.model.transformer.h.1.attn.c_attn.lora_A.default.weight";
    const char *wte = "text_encoder_q.model.base_model.model.transformer.wte.weight";
    size_t k, mism = 0;
    int ok;
    mama_config_preset(&c, "tiny");
    c.text_mode = MAMA_TEXT_LORA;
    /* an f32 file loaded as bf16: every value rounded to nearest even */
    memset(&st, 0, sizeof st);
    if (mama_model_create(&m, &c, CPU, 1, 3) != MAMA_OK || mama_model_save(m, p32) != MAMA_OK ||
        mama_model_load_as(&mb, p32, CPU, 1, MAMA_BF16) != MAMA_OK) {
        test_report(0, "load_as_bf16", "%s", mama_last_error());
        mama_model_free(m); mama_model_free(mb);
        return;
    }
    p = mama_model_find_param(mb, cfc);
    {
        const mama_param_info *q = mama_model_find_param(m, cfc);
        for (k = 0; k < p->numel; k++)
            if (mb->params_half[p->offset + k] != mama_f32_to_bf16(m->params[q->offset + k])) mism++;
        test_report(p->dtype == MAMA_BF16 && q->dtype == MAMA_F32 && mism == 0, "load_as_bf16",
                    "f32 file loaded with frozen_dtype BF16: %s is BF16, %zu values equal mama_f32_to_bf16 of the f32 "
                    "model's (%zu mismatches)",
                    cfc, p->numel, mism);
    }
    /* round trip: the saved bf16 model has BF16 frozen matrices, F32 rest */
    ok = mama_model_save(mb, p16) == MAMA_OK && mama_st_open(&st, p16) == MAMA_OK;
    t1 = ok ? mama_st_find(&st, cfc) : NULL;
    t2 = ok ? mama_st_find(&st, lora) : NULL;
    t3 = ok ? mama_st_find(&st, wte) : NULL;
    test_report(t1 && t2 && t3 && t1->dtype == MAMA_BF16 && t3->dtype == MAMA_BF16 && t2->dtype == MAMA_F32,
                "save_bf16", "saved model: %s %s, wte %s, LoRA A %s (trainable stay F32)", cfc,
                t1 ? mama_dtype_name(t1->dtype) : "?", t3 ? mama_dtype_name(t3->dtype) : "?",
                t2 ? mama_dtype_name(t2->dtype) : "?");
    mama_st_close(&st);
    mama_model_free(mb);
    mb = NULL;
    /* bad arguments and files: status + message, never a crash */
    {
        mama_status s1 = mama_model_load_as(&mb, p16, CPU, 1, MAMA_I32);
        int ok1 = s1 == MAMA_ERR_INVALID && mb == NULL && strstr(mama_last_error(), "frozen_dtype");
        mama_st_writer *w = NULL;
        mama_status s2;
        char msg[1100];
        /* a file whose c_fc weight is I32: named in the error */
        mama_safetensors src;
        int i;
        memset(&src, 0, sizeof src);
        mama_st_open(&src, p16);
        mama_st_writer_create(&w);
        mama_st_writer_meta(w, "mama_config", mama_st_meta(&src, "mama_config"));
        for (i = 0; i < src.count; i++) {
            const mama_st_tensor *t = &src.tensors[i];
            mama_dtype d = t->dtype;
            if (!strcmp(t->name, cfc)) d = MAMA_I16; /* same size as BF16, wrong kind */
            mama_st_writer_add(w, t->name, d, t->ndim, t->shape, mama_st_data(&src, t));
        }
        mama_st_writer_write(w, bad);
        mama_st_writer_free(w);
        mama_st_close(&src);
        s2 = mama_model_load(&mb, bad, CPU, 1);
        snprintf(msg, sizeof msg, "%s", mama_last_error());
        test_report(ok1 && s2 == MAMA_ERR_SHAPE && mb == NULL && strstr(msg, bad) && strstr(msg, cfc), "load_bad_dtype",
                    "load_as(frozen_dtype I32) -> %s; a file with an I16 c_fc weight -> %s: \"%s\"",
                    mama_status_name(s1), mama_status_name(s2), msg);
        /* a failed load leaves the model's weights as they were */
        {
            mama_status s3;
            m->params[0] = 123.0f; /* cls_token: a value the file does not hold */
            s3 = mama_model_load_weights(m, bad, 0, NULL);
            test_report(s3 == MAMA_ERR_SHAPE && m->params[0] == 123.0f, "load_bad_untouched",
                        "load_weights of the bad file into a model: %s, and the model is unchanged (the tensors are "
                        "checked before any is copied)", mama_status_name(s3));
        }
    }
    /* an f32 value beyond f16's range: loading as f16 fails, naming it */
    {
        const mama_param_info *q = mama_model_find_param(m, cfc);
        mama_model *m16 = NULL;
        mama_status s4;
        m->params[q->offset + 5] = 1e6f;
        s4 = mama_model_save(m, p32) == MAMA_OK ? mama_model_load_as(&m16, p32, CPU, 1, MAMA_F16)
                                                : MAMA_ERR_IO;
        test_report(s4 == MAMA_ERR_NUMERIC && m16 == NULL && strstr(mama_last_error(), cfc) &&
                        strstr(mama_last_error(), "element 5"),
                    "load_f16_overflow", "f32 weight 1e6 loaded as f16 -> %s: \"%s\"", mama_status_name(s4),
                    mama_last_error());
        mama_model_free(m16);
    }
    mama_model_free(m);
    remove(p32);
    remove(p16);
    remove(bad);
}

static int test_main(void) {
    gemm_tests();
    model_case(MAMA_TEXT_LORA, MAMA_BF16, "build/test_bf16_lora.safetensors");
    model_case(MAMA_TEXT_FROZEN, MAMA_BF16, "build/test_bf16_frozen.safetensors");
    model_case(MAMA_TEXT_LORA, MAMA_F16, "build/test_bf16_lora16.safetensors");
    remove("build/test_bf16_lora.safetensors");
    remove("build/test_bf16_frozen.safetensors");
    remove("build/test_bf16_lora16.safetensors");
    file_tests();
    return test_finish();
}

int main(void) { return test_with_cpu_backend(&CPU, test_main); }
