/* tests/test_model.c - the MaMA model against the PyTorch reference.
 *
 * 1. Parity: for each fixture case (tests/ref/fixtures, written by
 *    tests/ref/make_fixtures.py from a PyTorch implementation of SPEC A.1-A.4
 *    computed in float64) run `mama_verify_forward` (one forward + backward,
 *    train mode, dropout off) and compare the embeddings, every loss term,
 *    every gradient and the BatchNorm running statistics.  Error of a tensor:
 *    max|c - ref| / max|ref|.  Tensors whose reference is exactly zero (the
 *    bias before a BatchNorm has a zero gradient by construction) are
 *    checked as max|c| / (largest |ref| gradient of the case) instead.
 *    Bar: 1e-4.
 * 2. Finite differences: the whole loss of the C model under central
 *    differences (fp32 forward, differences taken in double) against the
 *    C backward, for the largest-gradient element of a sample of tensors.
 */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_VERIFY_IMPLEMENTATION
#include "mama_verify.h"
#include "test_util.h"
#include <stdlib.h>

static mama_backend *CPU; /* this program's CPU backend (created in main) */

#define FIX "tests/ref/fixtures/"

static const char *const cases[] = {"full_late0", "full_late1", "lora_late0", "lora_late1", "lora_late1_lscale",
                                    "frozen_late1"};

static double max_abs(const float *x, size_t n) {
    double m = 0;
    size_t i;
    for (i = 0; i < n; i++) if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

static void parity_case(const char *name) {
    char w[256], b[256], e[256], o[256], worst_name[256] = "";
    mama_safetensors exp_st, out_st;
    int late = strstr(name, "late1") != NULL, i, compared = 0, missing = 0;
    double worst = 0, grad_scale = 0;
    float *x = NULL, *y = NULL;
    snprintf(w, sizeof w, FIX "weights_%s.safetensors", name);
    snprintf(b, sizeof b, FIX "batch_%s.safetensors", name);
    snprintf(e, sizeof e, FIX "expected_%s.safetensors", name);
    snprintf(o, sizeof o, "build/test_model_out_%s.safetensors", name);
    memset(&exp_st, 0, sizeof exp_st);
    memset(&out_st, 0, sizeof out_st);
    if (mama_verify_forward(w, b, o, late, NULL) != MAMA_OK || mama_st_open(&exp_st, e) != MAMA_OK ||
        mama_st_open(&out_st, o) != MAMA_OK) {
        test_report(0, "model_parity", "%s: %s", name, mama_last_error());
        mama_st_close(&exp_st); mama_st_close(&out_st);
        return;
    }
    /* the scale of the case's gradients, for mathematically-zero tensors */
    for (i = 0; i < exp_st.count; i++) {
        const mama_st_tensor *t = &exp_st.tensors[i];
        if (strncmp(t->name, "grad.", 5) || t->dtype != MAMA_F32) continue;
        x = (float *)realloc(x, sizeof(float) * t->numel);
        mama_st_read_f32(&exp_st, t->name, x, t->numel);
        if (max_abs(x, t->numel) > grad_scale) grad_scale = max_abs(x, t->numel);
    }
    for (i = 0; i < exp_st.count; i++) {
        const mama_st_tensor *t = &exp_st.tensors[i], *u;
        double err, ref, diff = 0;
        size_t k;
        if (!strncmp(t->name, "dbg.", 4) || t->dtype != MAMA_F32) continue; /* intermediates, counters */
        u = mama_st_find(&out_st, t->name);
        if (!u || u->numel != t->numel) { missing++; printf("  missing or misshapen in C output: %s\n", t->name); continue; }
        x = (float *)realloc(x, sizeof(float) * t->numel);
        y = (float *)realloc(y, sizeof(float) * t->numel);
        mama_st_read_f32(&exp_st, t->name, x, t->numel);
        mama_st_read_f32(&out_st, t->name, y, t->numel);
        for (k = 0; k < t->numel; k++) if (fabs((double)x[k] - y[k]) > diff || y[k] != y[k]) diff = fabs((double)x[k] - y[k]);
        ref = max_abs(x, t->numel);
        err = ref > 0 ? diff / ref : diff / grad_scale;
        if (!(err <= worst)) { worst = err; snprintf(worst_name, sizeof worst_name, "%s%s", t->name, ref > 0 ? "" : " (zero reference)"); }
        compared++;
    }
    test_report(worst < 1e-4 && missing == 0 && compared > 10, "model_parity",
                "%s: %d tensors (embeddings, 5 losses, gradients, BN stats) vs PyTorch float64; worst rel err=%.3g in %s",
                name, compared, worst, worst_name);
    free(x); free(y);
    mama_st_close(&exp_st); mama_st_close(&out_st);
}

/* Loss at the current weights (train-mode statistics, no dropout). */
static double loss_now(mama_model *m, const mama_batch *b, int late) {
    mama_step_opts o;
    mama_losses L;
    mama_step_opts_default(&o);
    o.late = late; o.dropout = MAMA_OFF;
    if (mama__step(m, b, &o, 0, 0, &L) != MAMA_OK) return NAN;
    return L.loss;
}

static void finite_differences(const char *name) {
    char w[256], bp[256];
    mama_model *m = NULL;
    mama_safetensors st;
    mama_batch b;
    mama_step_opts o;
    mama_losses L;
    static const char *const probe[] = {
        "img_encoder_q.model.blocks.0.attn.qkv.weight", "img_encoder_q.model.pos_embed",
        "img_encoder_q.model.blocks.1.ls2.gamma", "img_encoder_q.model.patch_embed.proj.weight",
        "text_encoder_q.model.base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight",
        "text_encoder_q.model.base_model.model.transformer.h.1.attn.c_attn.lora_B.default.weight",
        "img_encoder_q.local_embed.head.1.weight", "text_encoder_q.local_embed.head.3.weight",
        "simclr_proj.layers.0.weight", "logit_scale", "local_scale", "text_encoder_q.global_embed.weight"};
    size_t np = sizeof probe / sizeof probe[0], i, img;
    float *images, *ext, *grads, *params;
    int *ids, *mask, B, T, ok = 1, checked = 0;
    double worst = 0;
    snprintf(w, sizeof w, FIX "weights_%s.safetensors", name);
    snprintf(bp, sizeof bp, FIX "batch_%s.safetensors", name);
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, bp) != MAMA_OK) { test_report(0, "model_fd", "%s", mama_last_error()); return; }
    B = (int)mama_st_find(&st, "images")->shape[0];
    img = mama_st_find(&st, "images")->numel / B;
    if (mama_model_load(&m, w, CPU, B) != MAMA_OK) { test_report(0, "model_fd", "%s", mama_last_error()); return; }
    T = m->cfg.context;
    images = (float *)malloc(sizeof(float) * img * B); ext = (float *)malloc(sizeof(float) * img * B);
    ids = (int *)malloc(sizeof(int) * B * T); mask = (int *)malloc(sizeof(int) * B * T);
    mama_st_read_f32(&st, "images", images, img * B);
    mama_st_read_f32(&st, "ext_images", ext, img * B);
    mama_st_read_i32(&st, "input_ids", ids, (size_t)B * T);
    mama_st_read_i32(&st, "attention_mask", mask, (size_t)B * T);
    mama_st_close(&st);
    b.B = B; b.images = images; b.ext_images = ext; b.input_ids = ids; b.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = 1; o.dropout = MAMA_OFF;
    mama_model_step(m, &b, &o, 0, &L);
    grads = m->grads;
    params = m->params;
    for (i = 0; i < np; i++) {
        const mama_param_info *p = mama_model_find_param(m, probe[i]);
        size_t k, best = 0;
        double g, fd, h, lp, lm, err;
        float saved;
        if (!p) continue;
        for (k = 0; k < p->numel; k++) if (fabs(grads[p->offset + k]) > fabs(grads[p->offset + best])) best = k;
        g = grads[p->offset + best];
        saved = params[p->offset + best];
        h = 1e-2 * (fabs(saved) > 0.1 ? fabs(saved) : 0.1);
        params[p->offset + best] = (float)(saved + h); lp = loss_now(m, &b, 1);
        params[p->offset + best] = (float)(saved - h); lm = loss_now(m, &b, 1);
        params[p->offset + best] = saved;
        /* the perturbed values are rounded to float: use the real step */
        fd = (lp - lm) / ((double)(float)(saved + h) - (double)(float)(saved - h));
        err = fabs(fd - g) / (fabs(g) > 1e-2 ? fabs(g) : 1e-2);
        printf("  fd %-90s analytic %+.6e numeric %+.6e rel %.2e\n", p->name, g, fd, err);
        if (!(err <= worst)) worst = err;
        if (!(err < 2e-2)) ok = 0;
        checked++;
    }
    test_report(ok && checked >= 8, "model_fd",
                "%s: %d parameters, central differences of the whole loss (4 terms) vs backward; worst rel err=%.3g (bar 2e-2: fp32 forward)",
                name, checked, worst);
    mama_model_free(m);
    free(images); free(ext); free(ids); free(mask);
}

/* pos_embed resampling against PyTorch's bicubic antialiased interpolate */
static void pos_resample(void) {
    mama_safetensors st;
    static const char *const names[2] = {"up", "down"};
    static const int grids[2][2] = {{4, 7}, {6, 4}};
    int k, D = 5;
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, FIX "pos_resample.safetensors") != MAMA_OK) { test_report(0, "pos_resample", "%s", mama_last_error()); return; }
    for (k = 0; k < 2; k++) {
        int g0 = grids[k][0], g = grids[k][1];
        float src[(1 + 36) * 5], got[(1 + 49) * 5], want[(1 + 49) * 5];
        char n1[32], n2[32];
        size_t i, n = (size_t)(1 + g * g) * D;
        double worst = 0, scale = 0;
        snprintf(n1, sizeof n1, "%s.src", names[k]);
        snprintf(n2, sizeof n2, "%s.expected", names[k]);
        mama_st_read_f32(&st, n1, src, (size_t)(1 + g0 * g0) * D);
        mama_st_read_f32(&st, n2, want, n);
        mama__resample_pos_embed(src, g0, got, g, D);
        for (i = 0; i < n; i++) {
            if (fabs(want[i]) > scale) scale = fabs(want[i]);
            if (fabs((double)got[i] - want[i]) > worst) worst = fabs((double)got[i] - want[i]);
        }
        test_report(worst / scale < 1e-5, "pos_resample", "%s %dx%d -> %dx%d vs torch bicubic antialias: max rel err %.3g",
                    names[k], g0, g0, g, g, worst / scale);
    }
    mama_st_close(&st);
}

/* Gradient checkpointing recomputes each block in the backward: the
 * gradients must equal those of the stored-activation run exactly (the same
 * kernels run on the same inputs). */
static void grad_checkpoint(void) {
    mama_safetensors st;
    mama_config c;
    mama_model *a = NULL, *b = NULL;
    mama_batch bt;
    mama_step_opts o;
    mama_losses la, lb;
    float *images, *ext;
    int *ids, *mask, B, T, same = 1;
    size_t img, n, k;
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, FIX "weights_lora_late1.safetensors") != MAMA_OK) { test_report(0, "grad_checkpoint", "%s", mama_last_error()); return; }
    mama_config_preset(&c, "base");
    c.text_pool_real_only = 0;
    mama_config_from_json(&c, mama_st_meta(&st, "mama_config"), "fixture");
    mama_st_close(&st);
    B = 4; T = c.context;
    mama_model_create(&a, &c, CPU, B, 0);
    c.grad_checkpoint = 1;
    mama_model_create(&b, &c, CPU, B, 0);
    if (!a || !b || mama_model_load_weights(a, FIX "weights_lora_late1.safetensors", 0, NULL) != MAMA_OK ||
        mama_model_load_weights(b, FIX "weights_lora_late1.safetensors", 0, NULL) != MAMA_OK ||
        mama_st_open(&st, FIX "batch_lora_late1.safetensors") != MAMA_OK) {
        test_report(0, "grad_checkpoint", "%s", mama_last_error());
        mama_model_free(a); mama_model_free(b);
        return;
    }
    img = mama_st_find(&st, "images")->numel / B;
    images = (float *)malloc(sizeof(float) * img * B); ext = (float *)malloc(sizeof(float) * img * B);
    ids = (int *)malloc(sizeof(int) * B * T); mask = (int *)malloc(sizeof(int) * B * T);
    mama_st_read_f32(&st, "images", images, img * B);
    mama_st_read_f32(&st, "ext_images", ext, img * B);
    mama_st_read_i32(&st, "input_ids", ids, (size_t)B * T);
    mama_st_read_i32(&st, "attention_mask", mask, (size_t)B * T);
    mama_st_close(&st);
    bt.B = B; bt.images = images; bt.ext_images = ext; bt.input_ids = ids; bt.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = 1; o.dropout = MAMA_OFF;
    mama_model_step(a, &bt, &o, 0, &la);
    mama_model_step(b, &bt, &o, 0, &lb);
    n = mama_model_numel(a, MAMA_GROUP_TRAIN) + mama_model_numel(a, MAMA_GROUP_LATE);
    for (k = 0; k < n; k++) if (mama_model_grads(a)[k] != mama_model_grads(b)[k]) { same = 0; break; }
    test_report(same && la.loss == lb.loss, "grad_checkpoint",
                "lora late step with and without recomputing blocks: loss %.6f vs %.6f, %zu gradients bit-identical=%d",
                la.loss, lb.loss, n, same);
    free(images); free(ext); free(ids); free(mask);
    mama_model_free(a); mama_model_free(b);
}

/* The folded patch embedding: a 3-channel checkpoint loaded into an
 * in_chans = 1 model must give the same embeddings on one grey plane as the
 * 3-channel model on the plane replicated three times. */
static void folded_patch(void) {
    mama_safetensors st;
    mama_config c;
    mama_model *m3 = NULL, *m1 = NULL;
    float *img3, *img1, e3[4 * 64], e1[4 * 64];
    int B = 2, S, k, E;
    double worst = 0, scale = 0;
    mama_rng r;
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, FIX "weights_full_late0.safetensors") != MAMA_OK) { test_report(0, "folded_patch", "%s", mama_last_error()); return; }
    mama_config_preset(&c, "base");
    c.text_pool_real_only = 0;
    mama_config_from_json(&c, mama_st_meta(&st, "mama_config"), "fixture");
    mama_st_close(&st);
    S = c.image_size; E = c.embed_dim;
    mama_model_create(&m3, &c, CPU, B, 0);
    c.in_chans = 1;
    mama_model_create(&m1, &c, CPU, B, 0);
    if (!m3 || !m1 || mama_model_load_weights(m3, FIX "weights_full_late0.safetensors", 0, NULL) != MAMA_OK ||
        mama_model_load_weights(m1, FIX "weights_full_late0.safetensors", 0, NULL) != MAMA_OK) {
        test_report(0, "folded_patch", "%s", mama_last_error());
        mama_model_free(m3); mama_model_free(m1);
        return;
    }
    img3 = (float *)malloc(sizeof(float) * 3 * S * S * B);
    img1 = (float *)malloc(sizeof(float) * S * S * B);
    mama_rng_seed(&r, 9);
    for (k = 0; k < S * S * B; k++) img1[k] = 2 * mama_rng_uniform(&r) - 1;
    for (k = 0; k < S * S * B; k++) {
        int b = k / (S * S), q = k % (S * S), ch;
        for (ch = 0; ch < 3; ch++) img3[(size_t)b * 3 * S * S + (size_t)ch * S * S + q] = img1[k];
    }
    mama_encode_images(m3, img3, B, e3, NULL);
    mama_encode_images(m1, img1, B, e1, NULL);
    for (k = 0; k < B * E; k++) {
        if (fabs(e3[k]) > scale) scale = fabs(e3[k]);
        if (fabs((double)e3[k] - e1[k]) > worst) worst = fabs((double)e3[k] - e1[k]);
    }
    test_report(worst / scale < 1e-5, "folded_patch", "in_chans 1 (weights summed over the 3 channels) vs 3 replicated "
                "channels: image embeddings max rel err %.3g", worst / scale);
    free(img3); free(img1);
    mama_model_free(m3); mama_model_free(m1);
}

/* The step keeps its losses on the device (mama.h section 6): with the
 * losses asked for, one host synchronisation (their download) per step,
 * none without; counted by the backend (be->host_syncs).  A model that
 * logs only its last step must end with the same losses and weights bit
 * for bit as one that logs every step (the staging of the uploads is
 * reused only after the copies ran, with or without the download). */
static void host_syncs(void) {
    mama_config c;
    mama_model *m[2] = {NULL, NULL};
    mama_adamw opt[2];
    mama_batch bt;
    mama_step_opts o;
    mama_losses L[2];
    float *images, *ext;
    int *ids, *mask, B = 2, T, i, t, s, k, same = 1;
    unsigned long long per_step[2][3];
    size_t img, j, n;
    mama_rng r;
    mama_config_preset(&c, "tiny");
    c.vision_depth = 1; c.text_depth = 1;
    T = c.context;
    img = (size_t)c.in_chans * c.image_size * c.image_size;
    for (k = 0; k < 2; k++)
        if (mama_model_create(&m[k], &c, CPU, B, 3) != MAMA_OK || mama_adamw_init(&opt[k], m[k], 0.1f) != MAMA_OK) {
            test_report(0, "host_syncs", "%s", mama_last_error());
            return;
        }
    images = (float *)malloc(sizeof(float) * img * B); ext = (float *)malloc(sizeof(float) * img * B);
    ids = (int *)malloc(sizeof(int) * B * T); mask = (int *)malloc(sizeof(int) * B * T);
    mama_rng_seed(&r, 5);
    for (j = 0; j < img * B; j++) { images[j] = 2 * mama_rng_uniform(&r) - 1; ext[j] = 2 * mama_rng_uniform(&r) - 1; }
    for (i = 0; i < B; i++)
        for (t = 0; t < T; t++) {
            int len = T - 3 * i;
            ids[i * T + t] = t == 0 ? c.bos_id : t >= len ? c.pad_id : t % 5 == 4 ? c.sep_id : 10 + (i * 7 + t) % 40;
            mask[i * T + t] = t < len;
        }
    bt.B = B; bt.images = images; bt.ext_images = ext; bt.input_ids = ids; bt.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = 1;
    for (s = 0; s < 3; s++)
        for (k = 0; k < 2; k++) { /* model 0 logs every step, model 1 only the last */
            unsigned long long h0 = CPU->host_syncs;
            o.seed = (uint64_t)s + 1;
            mama_model_step(m[k], &bt, &o, 0, k == 0 || s == 2 ? &L[k] : NULL);
            mama_adamw_step(&opt[k], m[k], 1e-3f, 1);
            per_step[k][s] = CPU->host_syncs - h0;
        }
    n = mama_model_numel(m[0], MAMA_GROUP_TRAIN) + mama_model_numel(m[0], MAMA_GROUP_LATE);
    for (j = 0; j < n; j++) if (mama_model_params(m[0])[j] != mama_model_params(m[1])[j]) { same = 0; break; }
    test_report(per_step[0][1] == 1 && per_step[0][2] == 1 && per_step[1][1] <= 1 && per_step[1][2] == 1,
                "host_syncs", "host synchronisations per step + AdamW on the CPU backend: logging %llu %llu %llu, "
                "logging off %llu %llu then on %llu (want 1 with the loss download; <= 1 without: the staging wait "
                "when nothing synchronised since the last uploads)", per_step[0][0], per_step[0][1], per_step[0][2],
                per_step[1][0], per_step[1][1], per_step[1][2]);
    test_report(same && L[0].loss == L[1].loss && L[0].sla == L[1].sla, "host_syncs",
                "3 steps logging every step vs only the last: last loss %.6f vs %.6f, %zu weights bit-identical=%d",
                L[0].loss, L[1].loss, n, same);
    free(images); free(ext); free(ids); free(mask);
    for (k = 0; k < 2; k++) { mama_adamw_free(&opt[k]); mama_model_free(m[k]); }
}

static int test_main(void) {
    size_t i;
    host_syncs();
    folded_patch();
    grad_checkpoint();
    pos_resample();
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) parity_case(cases[i]);
    finite_differences("lora_late1");
    return test_finish();
}

int main(void) { return test_with_cpu_backend(&CPU, test_main); }
