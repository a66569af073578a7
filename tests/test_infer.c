/* tests/test_infer.c - the inference path (issue 18 item 2):
 *   - be->linear_fused (GEMM with the bias / GELU / LayerScale / residual
 *     epilogue) against its composition from the plain ops, on the CPU
 *     backend (bitwise, sizes through the tiny, one-thread and blocked
 *     paths) and on the reference backend (oracle, relative);
 *   - mama_encode_images (the fused inference blocks, in place) against the
 *     training path's forward (mama_model_forward's image embeddings) on the
 *     tiny and small configs;
 *   - a model created for inference only (mama_config.inference = 1, the
 *     small arena) gives the same embeddings and refuses training;
 *   - bf16 image-tower weights: the widening GEMM (tight), and where the
 *     CPU has AVX512-BF16 the bf16 dot-product kernel against the widening
 *     one and a double reference on odd shapes, and its embedding error. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include "test_util.h"
#include <stdlib.h>
#include <string.h>

static mama_backend *cpu;

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    mama_rng r;
    size_t i;
    mama_rng_seed(&r, seed);
    for (i = 0; i < n; i++) x[i] = scale * (2 * mama_rng_uniform(&r) - 1);
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *amax) {
    double w = 0;
    size_t i;
    *amax = 0;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= w)) w = d;
        if (fabs(b[i]) > *amax) *amax = fabs(b[i]);
    }
    return w;
}

static void test_linear_fused(void) {
    static const int sizes[][3] = {{3, 5, 7}, {21, 48, 144}, {261, 1152, 384}, {130, 200, 96}, {261, 384, 1536}};
    mama_backend *ref = NULL;
    size_t t;
    if (mama_reference_backend_create(&ref) != MAMA_OK) {
        test_report(0, "linear_fused", "reference backend: %s", mama_last_error());
        return;
    }
    for (t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int M = sizes[t][0], N = sizes[t][1], K = sizes[t][2], v;
        float *A = (float *)malloc(sizeof(float) * M * K), *W = (float *)malloc(sizeof(float) * N * K);
        float *b = (float *)malloc(sizeof(float) * N), *g = (float *)malloc(sizeof(float) * N);
        float *r = (float *)malloc(sizeof(float) * M * N), *c1 = (float *)malloc(sizeof(float) * M * N);
        float *c2 = (float *)malloc(sizeof(float) * M * N), *c3 = (float *)malloc(sizeof(float) * M * N);
        fill(A, (size_t)M * K, 1 + t, 1.0f); fill(W, (size_t)N * K, 2 + t, 0.2f);
        fill(b, N, 3 + t, 0.5f); fill(g, N, 4 + t, 1.0f); fill(r, (size_t)M * N, 5 + t, 1.0f);
        for (v = 0; v < 3; v++) { /* qkv-like (bias), fc1-like (bias + GELU), proj-like (bias, gamma, residual) */
            int gelu = v == 1;
            const float *gm = v == 2 ? g : NULL, *rs = v == 2 ? r : NULL;
            double e, amax;
            size_t n = (size_t)M * N, i, same = 0;
            fill(c1, n, 9, 1e3f); fill(c2, n, 10, 1e3f); /* garbage: beta is 0 */
            cpu->linear_fused(cpu, M, N, K, A, W, NULL, MAMA_F32, b, gelu, gm, rs, c1);
            mama__linear_fused_compose(cpu, M, N, K, A, W, NULL, MAMA_F32, b, gelu, gm, rs, c2);
            ref->linear_fused(ref, M, N, K, A, W, NULL, MAMA_F32, b, gelu, gm, rs, c3);
            for (i = 0; i < n; i++) same += memcmp(&c1[i], &c2[i], sizeof(float)) == 0;
            /* bitwise unless GELU's vector groups of 8 fall differently: the
             * composition groups the flat array, the epilogue each row */
            if (gelu && N % 8) {
                e = max_abs_diff(c1, c2, n, &amax);
                test_report(e <= 1e-6 * (amax > 1 ? amax : 1), "linear_fused cpu vs composition",
                            "M=%d N=%d K=%d epilogue bias+gelu (N not a multiple of 8): %zu of %zu values bitwise "
                            "equal, max|diff| %.3g (tolerance 1e-6 relative)", M, N, K, same, n, e);
            } else {
                test_report(same == n, "linear_fused cpu == composition",
                            "M=%d N=%d K=%d epilogue %s: %zu of %zu values bitwise equal", M, N, K,
                            v == 0 ? "bias" : v == 1 ? "bias+gelu" : "bias+gamma+residual", same, n);
            }
            e = max_abs_diff(c1, c3, n, &amax);
            test_report(e <= 1e-5 * (amax > 1 ? amax : 1), "linear_fused cpu vs reference",
                        "M=%d N=%d K=%d: max|diff| %.3g (max|ref| %.3g, tolerance 1e-5 relative)", M, N, K, e, amax);
        }
        free(A); free(W); free(b); free(g); free(r); free(c1); free(c2); free(c3);
    }
    mama_backend_free(ref);
}

/* The AVX-512 kernel's A packing (12-row panels, vectors) against the
 * portable loop: the same floats, bit for bit, both layouts of A. */
static void test_pack_a12(void) {
#if defined(MAMA_X86_SIMD)
    static const int shapes[][4] = {{144, 256, 0, 0}, {30, 13, 3, 5}, {25, 100, 1, 7}, {12, 8, 0, 0}};
    int ta, t;
    float *A = (float *)malloc(sizeof(float) * 400 * 400), *d1 = (float *)malloc(sizeof(float) * 160 * 260);
    float *d2 = (float *)malloc(sizeof(float) * 160 * 260);
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("SKIP pack_a12: no AVX2\n");
        free(A); free(d1); free(d2);
        return;
    }
    fill(A, 400 * 400, 3, 2.0f);
    for (ta = 0; ta < 2; ta++)
        for (t = 0; t < 4; t++) {
            mama__gemm_args g;
            int mc = shapes[t][0], kc = shapes[t][1], i0 = shapes[t][2], k0 = shapes[t][3], n = mc > 12 ? (mc + 11) / 12 * 12 * kc : 12 * kc;
            memset(&g, 0, sizeof g);
            g.ta = ta; g.A = A; g.lda = 400; g.alpha = 0.7f;
            memset(d1, 0xff, sizeof(float) * 160 * 260); memset(d2, 0xff, sizeof(float) * 160 * 260);
            mama__gemm_pack_a(&g, i0, mc, k0, kc, 12, d1);
            mama__gemm_pack_a12_avx2(&g, i0, mc, k0, kc, d2);
            test_report(memcmp(d1, d2, sizeof(float) * (size_t)n) == 0, "pack_a12 == portable packing",
                        "ta=%d mc=%d kc=%d at (%d,%d), alpha 0.7: %d floats bitwise", ta, mc, kc, i0, k0, n);
        }
    free(A); free(d1); free(d2);
#endif
}

/* The AVX512-BF16 kernel (be->linear_fused, bf16 W, path "dot") against
 * the widening kernel (path "widen", the oracle) on shapes that are not
 * multiples of the 12 x 32 tile, odd K (a half pair), K over one 256 block
 * and N over one 1024 block.  The dot path rounds each activation a to
 * bf16 (nearest even: |bf16(a) - a| <= 2^-8 |a|, 8 significant bits), so
 * with S = sum_k |a_k| |w_k| (double) the two may differ by
 *     2^-8 S   (the rounding)  +  2 (K + 8) 2^-24 S   (float32 sums of both)
 * and no more; that is the bar.  Against a double reference on the
 * ROUNDED activations (mama_f32_to_bf16) only the float32 sums remain,
 * (K + 8) 2^-24 S: this pins the pair layout and the rounding mode.  The
 * dot path must differ from the widening one somewhere (it ran), give the
 * same bits on one thread, and its epilogue (bias, gamma, residual) must
 * be the plain float ops on its product. */
static void test_bf16_dot_kernel(void) {
    static const int sizes[][3] = {{29, 45, 33}, {131, 97, 301}, {261, 200, 515}, {25, 1030, 7}, {1, 100, 999}, {3, 1100, 11}};
    size_t t;
    if (mama_cpu_backend_force_bf16(cpu, "dot") != 1) {
        printf("SKIP bf16 dot kernel: this CPU (or build) has no AVX512-BF16; the widening kernel runs instead\n");
        return;
    }
    for (t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int M = sizes[t][0], N = sizes[t][1], K = sizes[t][2], i, j, k, nthr = mama_num_threads();
        size_t n = (size_t)M * N, bad1 = 0, bad2 = 0, same = 0, same1 = 0, same_e = 0, q;
        float *A = (float *)malloc(sizeof(float) * M * K), *Wf = (float *)malloc(sizeof(float) * N * K);
        float *cw = (float *)malloc(sizeof(float) * n), *cd = (float *)malloc(sizeof(float) * n);
        float *c1 = (float *)malloc(sizeof(float) * n), *ce = (float *)malloc(sizeof(float) * n);
        float *r = (float *)malloc(sizeof(float) * n), *bias = (float *)malloc(sizeof(float) * N);
        float *gam = (float *)malloc(sizeof(float) * N);
        uint16_t *W = (uint16_t *)malloc(sizeof(uint16_t) * N * K);
        double w1 = 0, w2 = 0;
        fill(A, (size_t)M * K, 31 + t, 1.0f); fill(Wf, (size_t)N * K, 32 + t, 0.2f);
        fill(r, n, 33 + t, 1.0f); fill(bias, N, 34 + t, 0.5f); fill(gam, N, 35 + t, 1.0f);
        for (q = 0; q < (size_t)N * K; q++) W[q] = mama_f32_to_bf16(Wf[q]);
        mama_cpu_backend_force_bf16(cpu, "widen");
        cpu->linear_fused(cpu, M, N, K, A, NULL, W, MAMA_BF16, NULL, 0, NULL, NULL, cw);
        mama_cpu_backend_force_bf16(cpu, "dot");
        cpu->linear_fused(cpu, M, N, K, A, NULL, W, MAMA_BF16, NULL, 0, NULL, NULL, cd);
        cpu->linear_fused(cpu, M, N, K, A, NULL, W, MAMA_BF16, bias, 0, gam, r, ce);
        mama_set_num_threads(1);
        cpu->linear_fused(cpu, M, N, K, A, NULL, W, MAMA_BF16, NULL, 0, NULL, NULL, c1);
        mama_set_num_threads(nthr);
        for (i = 0; i < M; i++)
            for (j = 0; j < N; j++) {
                double ref = 0, s0 = 0, sr = 0, e1, e2;
                size_t o = (size_t)i * N + j;
                float want;
                for (k = 0; k < K; k++) {
                    double a = A[(size_t)i * K + k], ar = mama_bf16_to_f32(mama_f32_to_bf16(A[(size_t)i * K + k]));
                    double w = mama_bf16_to_f32(W[(size_t)j * K + k]);
                    ref += ar * w; s0 += fabs(a * w); sr += fabs(ar * w);
                }
                e1 = fabs((double)cd[o] - cw[o]) / (s0 * (1.0 / 256 + 2.0 * (K + 8) / 16777216.0) + 1e-30);
                e2 = fabs((double)cd[o] - ref) / (sr * (K + 8) / 16777216.0 + 1e-30);
                bad1 += !(e1 <= 1); bad2 += !(e2 <= 1);
                if (e1 > w1) w1 = e1;
                if (e2 > w2) w2 = e2;
                same += memcmp(&cd[o], &cw[o], sizeof(float)) == 0;
                same1 += memcmp(&cd[o], &c1[o], sizeof(float)) == 0;
                want = (cd[o] + bias[j]) * gam[j] + 1.0f * r[o];
                same_e += memcmp(&ce[o], &want, sizeof(float)) == 0;
            }
        test_report(bad1 == 0 && same < n, "bf16 dot kernel vs widening kernel",
                    "M=%d N=%d K=%d: %zu of %zu outside (2^-8 + 2(K+8)2^-24) S (worst at %.2f of it); %zu of %zu "
                    "bitwise equal (not all: the activations were rounded)", M, N, K, bad1, n, w1, same, n);
        test_report(bad2 == 0, "bf16 dot kernel vs double reference on bf16-rounded activations",
                    "M=%d N=%d K=%d: %zu of %zu outside (K+8)2^-24 S (worst at %.2f of it)", M, N, K, bad2, n, w2);
        test_report(same1 == n && same_e == n, "bf16 dot kernel: thread count, epilogue",
                    "M=%d N=%d K=%d: %d threads vs 1: %zu of %zu bitwise equal; with bias, gamma, residual: %zu of %zu "
                    "equal to (C + bias) * gamma + res on its product", M, N, K, nthr, same1, n, same_e, n);
        free(A); free(Wf); free(cw); free(cd); free(c1); free(ce); free(r); free(bias); free(gam); free(W);
    }
    mama_cpu_backend_force_bf16(cpu, "auto");
}

/* The attention forward that packs each head's K^T and V once (no mask,
 * not causal) against the per-block packing (the same call with an
 * all-visible key mask): bitwise equal, and lse too. */
static void test_attention_packed(void) {
    static const int shapes[][4] = {{1, 1374, 12, 64}, {2, 261, 6, 64}, {1, 300, 3, 64}, {3, 21, 3, 16}};
    size_t t;
    for (t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int B = shapes[t][0], T = shapes[t][1], H = shapes[t][2], hd = shapes[t][3], D = H * hd, i;
        size_t nq = (size_t)B * T * 3 * D, no = (size_t)B * T * D, nl = (size_t)B * H * T, same = 0, k;
        float *qkv = (float *)malloc(sizeof(float) * nq), *o1 = (float *)malloc(sizeof(float) * no);
        float *o2 = (float *)malloc(sizeof(float) * no), *l1 = (float *)malloc(sizeof(float) * nl);
        float *l2 = (float *)malloc(sizeof(float) * nl);
        int *kv = (int *)malloc(sizeof(int) * (size_t)B * T);
        fill(qkv, nq, 11 + t, 2.0f);
        for (i = 0; i < B * T; i++) kv[i] = 1;
        cpu->attention_forward(cpu, o1, l1, qkv, NULL, B, T, H, hd, 0, 1.0f / sqrtf((float)hd), 0.0f, 0);
        cpu->attention_forward(cpu, o2, l2, qkv, kv, B, T, H, hd, 0, 1.0f / sqrtf((float)hd), 0.0f, 0);
        for (k = 0; k < no; k++) same += memcmp(&o1[k], &o2[k], sizeof(float)) == 0;
        for (k = 0; k < nl; k++) same += memcmp(&l1[k], &l2[k], sizeof(float)) == 0;
        test_report(same == no + nl, "attention K/V packed once per head == per block",
                    "B=%d T=%d H=%d hd=%d: %zu of %zu outputs and lse bitwise equal", B, T, H, hd, same, no + nl);
        /* the 16-lane row passes (AVX-512 kernel) against the 8-lane ones (AVX2 kernel) */
        if (mama_cpu_backend_force_kernel(cpu, "avx2") == 1) {
            cpu->attention_forward(cpu, o2, l2, qkv, NULL, B, T, H, hd, 0, 1.0f / sqrtf((float)hd), 0.0f, 0);
            mama_cpu_backend_force_kernel(cpu, "auto");
            for (same = 0, k = 0; k < no; k++) same += memcmp(&o1[k], &o2[k], sizeof(float)) == 0;
            for (k = 0; k < nl; k++) same += memcmp(&l1[k], &l2[k], sizeof(float)) == 0;
            test_report(same == no + nl, "attention (kernel auto) == attention (avx2 kernel, 8-lane rows)",
                        "B=%d T=%d H=%d hd=%d: %zu of %zu outputs and lse bitwise equal", B, T, H, hd, same, no + nl);
        }
        free(qkv); free(o1); free(o2); free(l1); free(l2); free(kv);
    }
}

static int images_and_captions(const mama_config *c, int B, float **img, int **ids, int **mask) {
    size_t n = (size_t)B * c->in_chans * c->image_size * c->image_size;
    int i;
    *img = (float *)malloc(sizeof(float) * n);
    *ids = (int *)malloc(sizeof(int) * (size_t)B * c->context);
    *mask = (int *)malloc(sizeof(int) * (size_t)B * c->context);
    if (!*img || !*ids || !*mask) return 1;
    fill(*img, n, 77, 1.0f);
    for (i = 0; i < B * c->context; i++) {
        (*ids)[i] = i % c->context == 0 ? c->bos_id : 5 + i % 50;
        (*mask)[i] = 1;
    }
    return 0;
}

static void test_encode(const char *preset, int B) {
    mama_config c;
    mama_model *m = NULL, *mi = NULL;
    mama_batch b;
    mama_losses L;
    mama_adamw opt;
    float *img, *e_train, *e_inf, *e_only, *tok_train, *tok_inf;
    int *ids, *mask;
    size_t n, nt;
    double d, amax;
    mama_config_preset(&c, preset);
    c.text_depth = 1; /* only the image tower matters here */
    if (mama_model_create(&m, &c, cpu, B, 5) != MAMA_OK || images_and_captions(&c, B, &img, &ids, &mask)) {
        test_report(0, "encode", "%s: %s", preset, mama_last_error());
        return;
    }
    n = (size_t)B * c.embed_dim;
    nt = (size_t)B * (1 + c.registers + (c.image_size / c.patch_size) * (c.image_size / c.patch_size)) * c.vision_dim;
    e_train = (float *)malloc(sizeof(float) * n); e_inf = (float *)malloc(sizeof(float) * n);
    e_only = (float *)malloc(sizeof(float) * n);
    tok_train = (float *)malloc(sizeof(float) * nt); tok_inf = (float *)malloc(sizeof(float) * nt);
    b.B = B; b.images = img; b.ext_images = NULL; b.input_ids = ids; b.attention_mask = mask;
    /* the training path's forward (eval mode) */
    if (mama_model_forward(m, &b, &L) != MAMA_OK || mama_model_embeddings(m, e_train, NULL) != MAMA_OK ||
        mama_model_vision_tokens(m, B, tok_train, NULL) != MAMA_OK) {
        test_report(0, "encode", "%s forward: %s", preset, mama_last_error());
        return;
    }
    mama_encode_images(m, img, B, e_inf, NULL);
    mama_model_vision_tokens(m, B, tok_inf, NULL);
    d = max_abs_diff(e_inf, e_train, n, &amax);
    test_report(d <= 1e-5 * amax, "encode (inference blocks) vs training forward",
                "%s, %d images: embeddings max|diff| %.3g (max %.3g; tolerance 1e-5 relative)", preset, B, d, amax);
    d = max_abs_diff(tok_inf, tok_train, nt, &amax);
    test_report(d <= 1e-5 * amax, "encode (inference blocks) vs training forward",
                "%s, %d images: pre-norm tokens max|diff| %.3g (max %.3g; tolerance 1e-5 relative)", preset, B, d, amax);
    /* the per-call thread choice (all threads / one) changes no bit and
     * leaves the thread count as it was */
    {
        int call, nthr = mama_num_threads(), same = 1;
        for (call = 0; call < 6; call++) {
            mama_encode_images(m, img, B, e_only, NULL);
            same = same && memcmp(e_only, e_inf, sizeof(float) * n) == 0 && mama_num_threads() == nthr;
        }
        test_report(same, "encode thread tuning", "%s: 6 more calls (each on %d or 1 threads, by timing): embeddings "
                    "bitwise equal to the first call's, thread count %d restored", preset, nthr, nthr);
    }
    /* an inference-only model with the same weights (same seed) */
    c.inference = 1;
    if (mama_model_create(&mi, &c, cpu, B, 5) != MAMA_OK || mama_encode_images(mi, img, B, e_only, NULL) != MAMA_OK) {
        test_report(0, "inference-only model", "%s: %s", preset, mama_last_error());
    } else {
        d = max_abs_diff(e_only, e_train, n, &amax);
        test_report(d <= 1e-5 * amax, "inference-only model vs training forward",
                    "%s: embeddings max|diff| %.3g (max %.3g); arena %.1f MB vs %.1f MB of the training model", preset,
                    d, amax, mi->arena_floats * 4e-6, m->arena_floats * 4e-6);
        test_report(mama_model_step(mi, &b, NULL, 0, &L) != MAMA_OK && mama_model_forward(mi, &b, &L) != MAMA_OK &&
                        mama_adamw_init(&opt, mi, 0.1f) != MAMA_OK && mama_model_grads(mi) == NULL,
                    "inference-only model refuses training", "%s: step, forward, adamw_init refused (\"%s\")", preset,
                    mama_last_error());
    }
    mama_model_free(mi);
    mama_model_free(m);
    free(img); free(ids); free(mask); free(e_train); free(e_inf); free(e_only); free(tok_train); free(tok_inf);
}

/* bf16 image-tower weights (inference-only model, frozen_dtype BF16): the
 * widening GEMM against an f32 model whose block matrices hold the same
 * bf16-rounded values (tight), and the error against the f32 weights
 * (reported: the price of the halved memory).  Where the CPU has
 * AVX512-BF16, the same for the dot-product kernel (activations rounded to
 * bf16 too): its error against the f32 weights is reported (max relative,
 * cosine); the only bar is a sanity one (cosine >= 0.99: the path is not
 * broken), the kernel's precision is pinned by test_bf16_dot_kernel. */
static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    size_t i;
    for (i = 0; i < n; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
    return ab / sqrt(aa * bb);
}

static void test_bf16(const char *preset, int B) {
    mama_config c;
    mama_model *m = NULL, *mf = NULL, *mr = NULL, *mb = NULL;
    const char *path = "build/test_infer_bf16.safetensors";
    float *img, *e_f, *e_r, *e_b;
    int *ids, *mask, i;
    size_t n, k;
    double d, amax, d2, amax2;
    mama_config_preset(&c, preset);
    c.text_depth = 1;
    if (mama_model_create(&m, &c, cpu, B, 9) != MAMA_OK || mama_model_save(m, path) != MAMA_OK ||
        images_and_captions(&c, B, &img, &ids, &mask)) {
        test_report(0, "bf16 image tower", "%s: %s", preset, mama_last_error());
        mama_model_free(m);
        return;
    }
    mama_model_free(m);
    n = (size_t)B * c.embed_dim;
    e_f = (float *)malloc(sizeof(float) * n); e_r = (float *)malloc(sizeof(float) * n); e_b = (float *)malloc(sizeof(float) * n);
    if (mama_model_load_inference(&mf, path, cpu, B, MAMA_F32) != MAMA_OK ||
        mama_model_load_inference(&mr, path, cpu, B, MAMA_F32) != MAMA_OK ||
        mama_model_load_inference(&mb, path, cpu, B, MAMA_BF16) != MAMA_OK) {
        test_report(0, "bf16 image tower", "%s: load: %s", preset, mama_last_error());
        return;
    }
    /* mr: the block matrices rounded to bf16 in place (the CPU backend's memory is host memory) */
    for (i = 0; i < mama_model_param_count(mr); i++) {
        const mama_param_info *p = mama_model_param(mr, i);
        float *x = mama_model_params(mr) + p->offset;
        if (!strstr(p->name, "img_encoder_q.model.blocks.") || p->ndim != 2) continue;
        for (k = 0; k < p->numel; k++) x[k] = mama_bf16_to_f32(mama_f32_to_bf16(x[k]));
    }
    mama_encode_images(mf, img, B, e_f, NULL);
    mama_encode_images(mr, img, B, e_r, NULL);
    mama_cpu_backend_force_bf16(cpu, "widen");
    mama_encode_images(mb, img, B, e_b, NULL);
    d = max_abs_diff(e_b, e_r, n, &amax);
    d2 = max_abs_diff(e_b, e_f, n, &amax2);
    test_report(mama_model_half_numel(mb, NULL) > 0 && d <= 1e-5 * amax, "bf16 image tower (widening GEMM)",
                "%s: %zu bf16 values; vs f32 weights rounded to bf16: max|diff| %.3g (tolerance 1e-5 relative); "
                "vs the f32 weights: max|diff| %.3g of max %.3g (%.2g relative, reported)", preset,
                mama_model_half_numel(mb, NULL), d, d2, amax2, d2 / amax2);
    if (mama_cpu_backend_force_bf16(cpu, "dot") != 1) {
        printf("SKIP bf16 image tower (dot kernel): this CPU (or build) has no AVX512-BF16\n");
    } else {
        double cf, cw;
        mama_encode_images(mb, img, B, e_r, NULL); /* e_r now: the dot path */
        d = max_abs_diff(e_r, e_f, n, &amax);
        cf = cosine(e_r, e_f, n);
        cw = cosine(e_b, e_f, n);
        test_report(cf >= 0.99, "bf16 image tower (dot kernel) vs f32 weights",
                    "%s, %d images: max|diff| %.3g of max %.3g (%.2g relative), cosine %.7f; the widening path: "
                    "%.2g relative, cosine %.7f (reported; sanity bar cosine >= 0.99)", preset, B, d, amax, d / amax,
                    cf, d2 / amax2, cw);
    }
    mama_cpu_backend_force_bf16(cpu, "auto");
    mama_model_free(mf); mama_model_free(mr); mama_model_free(mb);
    remove(path);
    free(img); free(ids); free(mask); free(e_f); free(e_r); free(e_b);
}

/* A model created with bf16 block matrices is the float32 one rounded,
 * tensors of 1M values and more (filled in seeded 64K chunks) included:
 * every bf16 value equals mama_f32_to_bf16 of the float32 model's, and
 * every float32 tensor (drawn after them) is bitwise the same. */
static void test_bf16_init(void) {
    mama_config c;
    mama_model *mf = NULL, *mb = NULL;
    size_t k, n3, n4, bad = 0, fbad = 0;
    mama_config_preset(&c, "tiny");
    c.vision_dim = 512; c.vision_heads = 8; c.vision_depth = 1; c.text_depth = 1;
    c.inference = 1;
    if (mama_model_create(&mf, &c, cpu, 1, 3) != MAMA_OK) { test_report(0, "bf16 init", "%s", mama_last_error()); return; }
    c.frozen_dtype = MAMA_BF16;
    if (mama_model_create(&mb, &c, cpu, 1, 3) != MAMA_OK) {
        test_report(0, "bf16 init", "%s", mama_last_error());
        mama_model_free(mf);
        return;
    }
    n3 = (size_t)3 * 512 * 512; n4 = (size_t)4 * 512 * 512;
    for (k = 0; k < n3; k++) bad += mama_f32_to_bf16(mf->w.vit[0].qkv_w[k]) != mb->w.vit[0].qkv_wh[k];
    for (k = 0; k < n4; k++) bad += mama_f32_to_bf16(mf->w.vit[0].fc1_w[k]) != mb->w.vit[0].fc1_wh[k];
    for (k = 0; k < n4; k++) bad += mama_f32_to_bf16(mf->w.vit[0].fc2_w[k]) != mb->w.vit[0].fc2_wh[k];
    {
        int i;
        for (i = 0; i < mama_model_param_count(mb); i++) {
            const mama_param_info *q = mama_model_param(mb, i), *p = mama_model_find_param(mf, q->name);
            if (q->dtype != MAMA_F32 || !p) continue;
            fbad += memcmp(mama_model_params(mf) + p->offset, mama_model_params(mb) + q->offset, sizeof(float) * q->numel) != 0;
        }
    }
    test_report(bad == 0 && fbad == 0, "bf16 model init == float32 init rounded",
                "D=512: qkv (%zu values, one generator), fc1 and fc2 (%zu each, 64K chunks): %zu bf16 values differ "
                "from mama_f32_to_bf16 of the float32 model's; float32 tensors differing: %zu", n3, n4, bad, fbad);
    mama_model_free(mf); mama_model_free(mb);
}

static int body(void) {
    test_pack_a12();
    test_attention_packed();
    test_linear_fused();
    test_bf16_dot_kernel();
    test_bf16_init();
    test_encode("tiny", 3);
    test_encode("small", 2);
    test_bf16("tiny", 3);
    test_bf16("small", 2);
    return test_finish();
}

int main(void) { return test_with_cpu_backend(&cpu, body); }
