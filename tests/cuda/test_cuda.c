/* tests/cuda/test_cuda.c - the CUDA backend against an oracle.
 *
 * Built by `make cuda` (build/test_cuda: this file compiled as C with the
 * library implementation, linked with build/mama_cuda.o, cudart, cuBLAS).
 * Not part of `make test`: CI has no GPU.  Without a GPU it prints a SKIP
 * line (with the CUDA error, if the runtime failed) and exits 0, unless
 * MAMA_EXPECT_GPU=1 is set: then a missing or unusable GPU is a FAIL that
 * prints the CUDA error, and the exit status is 1.
 *
 * Sections (--list prints them; --only S[,S...] runs those):
 *   memory, gemm_fp32, gemm_tf32, gemm_bf16, elementwise, norms, attention,
 *   pool_embed, losses, device_scalars, optim: every op of struct
 *   mama_backend on random inputs, forward and backward, against the
 *   REFERENCE backend (mama.h 3.6, the plainest loops: the oracle the CPU
 *   backend is tested against too).  Outputs that accumulate (+=) start from
 *   the same random values on both sides, so the accumulation is checked.
 *   steps_fp32, steps_tf32, steps_bf16: whole tiny training steps (forward,
 *   the four losses, backward, AdamW twice so that the late group's own step
 *   count is exercised) on a CPU model and a CUDA model created with the
 *   same seed (the CPU backend: the reference's naive GEMMs would take
 *   minutes): every loss term, every gradient tensor, the BatchNorm running
 *   statistics and the updated parameters.  A gradient mismatch confined to
 *   the local heads in the all-loss steps, with the CLIP-only step clean,
 *   points at an SLA arg-max that flipped on a near tie (rounding).
 *   host_syncs: host synchronisations of one whole step on the GPU (target
 *   at most 2 with the losses downloaded and the caller's sync).
 * A device fault (a failed allocation or upload in a helper) ends the
 * current section with a FAIL line; the next section starts afresh (a
 * sticky CUDA error then fails it too: bench/gpu_check.sh runs every section
 * in its own process).
 *
 * Error measure (max_rel_err): max_i |gpu_i - ref_i| / max(max_i |ref_i|, 1e-20),
 * i.e. the worst difference relative to the tensor's largest magnitude.
 * Tolerances, each with its reason:
 *   0 (exact): copies, dropout masks, im2col, embedding gather, transpose,
 *     ReLU, scale: the same float operation on the same inputs, no sums.
 *   1e-5 (TOL_EW): elementwise ops with a transcendental (GELU's erf/tanh,
 *     exp) or one multiply-add: a few ulp of float32 (6e-8) times the
 *     condition of the function.
 *   1e-4 (TOL_RED): reductions (row/column sums, LayerNorm, BatchNorm,
 *     attention, FP32 GEMM): float32 sums of up to ~2500 terms in another
 *     order; the error grows like sqrt(n) ulp, ~3e-6, with margin for the
 *     GPU's tree order and fused multiply-adds.
 *   GEMM TF32 5e-3: inputs rounded to 10-bit mantissas (2^-11 = 4.9e-4
 *     each), K up to 257 terms of random sign: ~sqrt(K) * 4.9e-4 / sqrt(K)
 *     relative to the largest output, x10 margin.
 *   GEMM BF16 3e-2: 7-bit mantissas (2^-8 = 3.9e-3), the same argument.
 *   dot, sum_squares, reduce_acc 1e-10: double accumulation on both sides.
 *   whole steps: losses FP32 1e-4 (the forward through 8 blocks of FP32
 *     reductions), TF32 5e-3, BF16 3e-2 (the GEMM tolerances: the loss is
 *     as precise as the forward's products); gradients FP32 2e-3 (the
 *     backward through 8 blocks, the softmax and CE gradients amplify
 *     relative error), TF32 1e-1, BF16 3e-1 (coarse sanity bounds: 10-bit
 *     and 7-bit mantissas through the whole backward); BatchNorm running
 *     statistics are forward quantities (batch means and variances of
 *     activations): the loss tolerance of the precision, NOT 1e-5; the
 *     parameters after two AdamW steps from the SAME gradients (the CPU's,
 *     uploaded to the GPU) 1e-5 at every precision: AdamW is elementwise
 *     float32, and the buffers (running statistics) are left out of that
 *     comparison (they were compared before).
 * Output: one "PASS name max_rel_err=... tol=..." or "FAIL ..." line per check
 * (every PASS line is printed: keep the log), then "N passed, M failed".
 * Exit status 1 if anything failed.
 *
 *   build/test_cuda --list        the sections, one per line
 *   build/test_cuda --only S,S    only those sections
 *   build/test_cuda --timing      GPU time of the hot ops at the base config's shapes
 *   build/test_cuda --cpu-vs-cpu  the harness with the CPU table on both sides
 *                                 (and as the oracle): no GPU, every check exact
 *   build/test_cuda --cpu-vs-ref  the CPU table under test against the reference
 *                                 oracle: the tolerances met by a second real
 *                                 implementation, no GPU */
#define MAMA_IMPLEMENTATION
#include "../../mama.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass = 0, n_fail = 0;
/* cpu: the oracle of the current section (the reference backend for the
 * ops, the CPU backend for whole steps); gpu: the backend under test */
static mama_backend *cpu, *gpu, *ref_be, *cpu_be;
static mama_rng rng;
static jmp_buf section_end; /* a device fault in a helper ends the section */
static const char *section_name = "";

static void check_value(const char *name, double err, double tol) {
    int ok = err <= tol; /* NaN fails */
    printf("%s %s max_rel_err=%.3e tol=%.1e\n", ok ? "PASS" : "FAIL", name, err, tol);
    fflush(stdout);
    if (ok) n_pass++; else n_fail++;
}
static void check_fail(const char *name, const char *why) {
    printf("FAIL %s %s\n", name, why);
    fflush(stdout);
    n_fail++;
}

/* worst |a-b| relative to max|b|; equal values (infinities included) count 0 */
static double rel_err(const float *a, const float *b, size_t n) {
    double mx = 0, worst = 0;
    size_t i;
    for (i = 0; i < n; i++)
        if (isfinite(b[i]) && fabs(b[i]) > mx) mx = fabs(b[i]);
    if (mx < 1e-20) mx = 1e-20;
    for (i = 0; i < n; i++) {
        double d;
        if (a[i] == b[i]) continue;
        d = fabs((double)a[i] - (double)b[i]) / mx;
        if (!(d <= worst)) worst = d; /* NaN or inf mismatch -> NaN/inf */
    }
    return worst;
}
static double int_err(const int *a, const int *b, size_t n) {
    size_t i, bad = 0;
    for (i = 0; i < n; i++) bad += a[i] != b[i];
    return (double)bad;
}

/* ---- buffers: a host copy (CPU side) and a device copy (GPU side) ---- */
typedef struct { float *h, *d; size_t n; } buf;
typedef struct { int *h, *d; size_t n; } ibuf;

static int gpu_ok(const char *name) {
    if (gpu->sync(gpu) != MAMA_OK) {
        check_fail(name, mama_last_error());
        return 0;
    }
    return 1;
}
/* a helper's device failure: FAIL, then leave the section (its buffers
 * leak: the device is not to be trusted after a fault) */
static void section_fault(const char *what) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s_device_fault(%s)", section_name, what);
    check_fail(nm, mama_last_error());
    longjmp(section_end, 1);
}
static buf mk(size_t n, float lo, float hi) {
    buf b;
    size_t i;
    b.n = n;
    b.h = (float *)malloc(sizeof(float) * (n ? n : 1));
    b.d = NULL;
    if (!b.h) section_fault("host malloc");
    for (i = 0; i < n; i++) b.h[i] = lo + (hi - lo) * mama_rng_uniform(&rng);
    if (gpu->alloc(gpu, (void **)&b.d, sizeof(float) * (n ? n : 1)) != MAMA_OK ||
        gpu->to_device(gpu, b.d, b.h, sizeof(float) * n) != MAMA_OK)
        section_fault("device buffer");
    return b;
}
static buf mkr(size_t n) { return mk(n, -1.0f, 1.0f); }
static ibuf mki(const int *vals, size_t n) {
    ibuf b;
    b.n = n;
    b.h = (int *)malloc(sizeof(int) * (n ? n : 1));
    b.d = NULL;
    if (!b.h) section_fault("host malloc");
    memcpy(b.h, vals, sizeof(int) * n);
    if (gpu->alloc(gpu, (void **)&b.d, sizeof(int) * (n ? n : 1)) != MAMA_OK ||
        gpu->to_device(gpu, b.d, b.h, sizeof(int) * n) != MAMA_OK)
        section_fault("device buffer");
    return b;
}
static void rm(buf *b) { free(b->h); gpu->free(gpu, b->d); }
static void rmi(ibuf *b) { free(b->h); gpu->free(gpu, b->d); }

/* compare the device copy with the host copy */
static void cmp(const char *name, const buf *b, double tol) {
    float *tmp = (float *)malloc(sizeof(float) * (b->n ? b->n : 1));
    if (gpu->to_host(gpu, tmp, b->d, sizeof(float) * b->n) != MAMA_OK) check_fail(name, mama_last_error());
    else check_value(name, rel_err(tmp, b->h, b->n), tol);
    free(tmp);
}
static void cmpi(const char *name, const ibuf *b) {
    int *tmp = (int *)malloc(sizeof(int) * (b->n ? b->n : 1));
    if (gpu->to_host(gpu, tmp, b->d, sizeof(int) * b->n) != MAMA_OK) check_fail(name, mama_last_error());
    else check_value(name, int_err(tmp, b->h, b->n), 0);
    free(tmp);
}

#define TOL_EXACT 0.0
#define TOL_EW 1e-5
#define TOL_RED 1e-4

/* ---- part 1: the ops ---------------------------------------------------- */

static void test_gemm(int precision, double tol, const char *tag) {
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {64, 48, 80}, {130, 70, 257}, {33, 129, 17}};
    char name[128];
    int s, ta, tb;
    mama_cuda_set_precision(gpu, precision);
    for (s = 0; s < 5; s++)
        for (ta = 0; ta < 2; ta++)
            for (tb = 0; tb < 2; tb++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                buf A = mkr((size_t)(ta ? K : M) * lda), B = mkr((size_t)(tb ? N : K) * ldb), C = mkr((size_t)M * ldc);
                cpu->gemm(cpu, ta, tb, M, N, K, 0.7f, A.h, lda, B.h, ldb, 0.5f, C.h, ldc);
                gpu->gemm(gpu, ta, tb, M, N, K, 0.7f, A.d, lda, B.d, ldb, 0.5f, C.d, ldc);
                snprintf(name, sizeof name, "gemm%s_%s%s_%dx%dx%d", tag, ta ? "T" : "N", tb ? "T" : "N", M, N, K);
                if (gpu_ok(name)) cmp(name, &C, tol);
                rm(&A); rm(&B); rm(&C);
            }
    {   /* batched, and beta = 0 over a garbage C */
        int M = 37, N = 29, K = 41, bt = 3;
        long long sa = (long long)M * K + 5, sb = (long long)K * N + 7, sc = (long long)M * N + 3;
        buf A = mkr((size_t)sa * bt), B = mkr((size_t)sb * bt), C = mkr((size_t)sc * bt);
        cpu->gemm_batched(cpu, 0, 1, M, N, K, 1.0f, A.h, K, sa, B.h, K, sb, 0.0f, C.h, N, sc, bt);
        gpu->gemm_batched(gpu, 0, 1, M, N, K, 1.0f, A.d, K, sa, B.d, K, sb, 0.0f, C.d, N, sc, bt);
        snprintf(name, sizeof name, "gemm_batched%s_NT", tag);
        if (gpu_ok(name)) cmp(name, &C, tol);
        rm(&A); rm(&B); rm(&C);
    }
    mama_cuda_set_precision(gpu, MAMA_CUDA_FP32);
}

static void test_elementwise(void) {
    int rows = 300, cols = 197;
    size_t n = (size_t)rows * cols;
    {
        buf y = mkr(n), b = mkr((size_t)cols), db = mkr((size_t)cols), dy = mkr(n);
        cpu->bias_add_forward(cpu, y.h, b.h, rows, cols);
        gpu->bias_add_forward(gpu, y.d, b.d, rows, cols);
        if (gpu_ok("bias_add_forward")) cmp("bias_add_forward", &y, TOL_EW);
        cpu->bias_add_backward(cpu, db.h, dy.h, rows, cols);
        gpu->bias_add_backward(gpu, db.d, dy.d, rows, cols);
        if (gpu_ok("bias_add_backward")) cmp("bias_add_backward", &db, TOL_RED);
        rm(&y); rm(&b); rm(&db); rm(&dy);
    }
    {
        buf y = mkr(n), a = mkr(n), b = mkr(n);
        cpu->add(cpu, y.h, a.h, b.h, n); gpu->add(gpu, y.d, a.d, b.d, n);
        if (gpu_ok("add")) cmp("add", &y, TOL_EXACT);
        cpu->accumulate(cpu, y.h, a.h, -0.3f, n); gpu->accumulate(gpu, y.d, a.d, -0.3f, n);
        if (gpu_ok("accumulate")) cmp("accumulate", &y, TOL_EW);
        cpu->scale(cpu, y.h, 1.7f, n); gpu->scale(gpu, y.d, 1.7f, n);
        if (gpu_ok("scale")) cmp("scale", &y, TOL_EXACT);
        rm(&y); rm(&a); rm(&b);
    }
    {
        int form;
        for (form = 0; form < 2; form++) {
            buf x = mk(n + 5, -6.0f, 6.0f), y = mkr(n + 5), dx = mkr(n + 5), dy = mkr(n + 5);
            char nm[64];
            cpu->gelu_forward(cpu, y.h, x.h, n + 5, form); gpu->gelu_forward(gpu, y.d, x.d, n + 5, form);
            snprintf(nm, sizeof nm, "gelu_forward_%s", form ? "tanh" : "erf");
            if (gpu_ok(nm)) cmp(nm, &y, TOL_EW);
            cpu->gelu_backward(cpu, dx.h, dy.h, x.h, n + 5, form); gpu->gelu_backward(gpu, dx.d, dy.d, x.d, n + 5, form);
            snprintf(nm, sizeof nm, "gelu_backward_%s", form ? "tanh" : "erf");
            if (gpu_ok(nm)) cmp(nm, &dx, TOL_EW);
            rm(&x); rm(&y); rm(&dx); rm(&dy);
        }
    }
    {
        buf x = mkr(n), y = mkr(n), dx = mkr(n), dy = mkr(n);
        cpu->relu_forward(cpu, y.h, x.h, n); gpu->relu_forward(gpu, y.d, x.d, n);
        if (gpu_ok("relu_forward")) cmp("relu_forward", &y, TOL_EXACT);
        cpu->relu_backward(cpu, dx.h, dy.h, y.h, n); gpu->relu_backward(gpu, dx.d, dy.d, y.d, n);
        if (gpu_ok("relu_backward")) cmp("relu_backward", &dx, TOL_EXACT);
        rm(&x); rm(&y); rm(&dx); rm(&dy);
    }
    {   /* the masks must be the same elements: exact */
        static const float ps[3] = {0.1f, 0.0f, 0.5f};
        int k;
        for (k = 0; k < 3; k++) {
            buf x = mkr(n), y = mkr(n), dx = mkr(n), dy = mkr(n);
            char nm[64];
            uint64_t seed = 0x1234567ull + (uint64_t)k;
            cpu->dropout_forward(cpu, y.h, x.h, n, ps[k], seed); gpu->dropout_forward(gpu, y.d, x.d, n, ps[k], seed);
            snprintf(nm, sizeof nm, "dropout_forward_p%.1f", ps[k]);
            if (gpu_ok(nm)) cmp(nm, &y, TOL_EXACT);
            cpu->dropout_backward(cpu, dx.h, dy.h, n, ps[k], seed); gpu->dropout_backward(gpu, dx.d, dy.d, n, ps[k], seed);
            snprintf(nm, sizeof nm, "dropout_backward_p%.1f", ps[k]);
            if (gpu_ok(nm)) cmp(nm, &dx, TOL_EW);
            /* in place, as the text tower calls it */
            cpu->dropout_forward(cpu, x.h, x.h, n, ps[k], seed + 9); gpu->dropout_forward(gpu, x.d, x.d, n, ps[k], seed + 9);
            snprintf(nm, sizeof nm, "dropout_forward_inplace_p%.1f", ps[k]);
            if (gpu_ok(nm)) cmp(nm, &x, TOL_EXACT);
            rm(&x); rm(&y); rm(&dx); rm(&dy);
        }
    }
    {
        buf x = mkr(n), y = mkr(n), g = mkr((size_t)cols), dx = mkr(n), dg = mkr((size_t)cols), dy = mkr(n);
        cpu->layerscale_forward(cpu, y.h, x.h, g.h, rows, cols); gpu->layerscale_forward(gpu, y.d, x.d, g.d, rows, cols);
        if (gpu_ok("layerscale_forward")) cmp("layerscale_forward", &y, TOL_EXACT);
        cpu->layerscale_backward(cpu, dx.h, dg.h, dy.h, x.h, g.h, rows, cols);
        gpu->layerscale_backward(gpu, dx.d, dg.d, dy.d, x.d, g.d, rows, cols);
        if (gpu_ok("layerscale_backward")) { cmp("layerscale_backward_dx", &dx, TOL_EW); cmp("layerscale_backward_dgamma", &dg, TOL_RED); }
        rm(&x); rm(&y); rm(&g); rm(&dx); rm(&dg); rm(&dy);
    }
}

static void test_norms(void) {
    static const int shapes[2][2] = {{333, 192}, {70, 2560}};
    int s, aff;
    for (s = 0; s < 2; s++)
        for (aff = 0; aff < 2; aff++) {
            int rows = shapes[s][0], cols = shapes[s][1];
            size_t n = (size_t)rows * cols;
            buf x = mk(n, -2.0f, 3.0f), y = mkr(n), mean = mkr((size_t)rows), rstd = mkr((size_t)rows);
            buf w = mkr((size_t)cols), b = mkr((size_t)cols), dx = mkr(n), dw = mkr((size_t)cols), db = mkr((size_t)cols),
                dy = mkr(n);
            char nm[96];
            const float *wh = aff ? w.h : NULL, *bh = aff ? b.h : NULL, *wd = aff ? w.d : NULL, *bd = aff ? b.d : NULL;
            cpu->layernorm_forward(cpu, y.h, mean.h, rstd.h, x.h, wh, bh, rows, cols, 1e-5f);
            gpu->layernorm_forward(gpu, y.d, mean.d, rstd.d, x.d, wd, bd, rows, cols, 1e-5f);
            snprintf(nm, sizeof nm, "layernorm_forward_%dx%d%s", rows, cols, aff ? "" : "_noaffine");
            if (gpu_ok(nm)) {
                cmp(nm, &y, TOL_RED);
                snprintf(nm, sizeof nm, "layernorm_forward_%dx%d%s_mean", rows, cols, aff ? "" : "_noaffine");
                cmp(nm, &mean, TOL_RED);
                snprintf(nm, sizeof nm, "layernorm_forward_%dx%d%s_rstd", rows, cols, aff ? "" : "_noaffine");
                cmp(nm, &rstd, TOL_RED);
            }
            cpu->layernorm_backward(cpu, dx.h, aff ? dw.h : NULL, aff ? db.h : NULL, dy.h, x.h, wh, mean.h, rstd.h, rows, cols);
            gpu->layernorm_backward(gpu, dx.d, aff ? dw.d : NULL, aff ? db.d : NULL, dy.d, x.d, wd, mean.d, rstd.d, rows,
                                    cols);
            snprintf(nm, sizeof nm, "layernorm_backward_%dx%d%s", rows, cols, aff ? "" : "_noaffine");
            if (gpu_ok(nm)) {
                cmp(nm, &dx, TOL_RED);
                if (aff) {
                    snprintf(nm, sizeof nm, "layernorm_backward_%dx%d_dw", rows, cols); cmp(nm, &dw, TOL_RED);
                    snprintf(nm, sizeof nm, "layernorm_backward_%dx%d_db", rows, cols); cmp(nm, &db, TOL_RED);
                }
            }
            rm(&x); rm(&y); rm(&mean); rm(&rstd); rm(&w); rm(&b); rm(&dx); rm(&dw); rm(&db); rm(&dy);
        }
    {   /* BatchNorm: train (batch stats + running update) then eval; affine and not */
        int train, rows = 700, cols = 100;
        size_t n = (size_t)rows * cols;
        for (aff = 0; aff < 2; aff++)
            for (train = 1; train >= 0; train--) {
                buf x = mk(n, -1.0f, 2.0f), y = mkr(n), mean = mkr((size_t)cols), rstd = mkr((size_t)cols);
                buf rmn = mk((size_t)cols, -0.1f, 0.1f), rv = mk((size_t)cols, 0.5f, 1.5f), w = mkr((size_t)cols),
                    b = mkr((size_t)cols);
                buf dx = mkr(n), dw = mkr((size_t)cols), db = mkr((size_t)cols), dy = mkr(n);
                char nm[96], tag[32];
                const float *wh = aff ? w.h : NULL, *bh = aff ? b.h : NULL, *wd = aff ? w.d : NULL, *bd = aff ? b.d : NULL;
                snprintf(tag, sizeof tag, "%s%s", train ? "train" : "eval", aff ? "" : "_noaffine");
                cpu->batchnorm_forward(cpu, y.h, mean.h, rstd.h, rmn.h, rv.h, x.h, wh, bh, rows, cols, 1e-5f, 0.1f, train);
                gpu->batchnorm_forward(gpu, y.d, mean.d, rstd.d, rmn.d, rv.d, x.d, wd, bd, rows, cols, 1e-5f, 0.1f, train);
                snprintf(nm, sizeof nm, "batchnorm_forward_%s", tag);
                if (gpu_ok(nm)) {
                    cmp(nm, &y, TOL_RED);
                    snprintf(nm, sizeof nm, "batchnorm_forward_%s_mean", tag); cmp(nm, &mean, TOL_RED);
                    snprintf(nm, sizeof nm, "batchnorm_forward_%s_rstd", tag); cmp(nm, &rstd, TOL_RED);
                    snprintf(nm, sizeof nm, "batchnorm_forward_%s_running_mean", tag); cmp(nm, &rmn, TOL_RED);
                    snprintf(nm, sizeof nm, "batchnorm_forward_%s_running_var", tag); cmp(nm, &rv, TOL_RED);
                }
                cpu->batchnorm_backward(cpu, dx.h, aff ? dw.h : NULL, aff ? db.h : NULL, dy.h, x.h, wh, mean.h, rstd.h,
                                        rows, cols);
                gpu->batchnorm_backward(gpu, dx.d, aff ? dw.d : NULL, aff ? db.d : NULL, dy.d, x.d, wd, mean.d, rstd.d,
                                        rows, cols);
                snprintf(nm, sizeof nm, "batchnorm_backward_%s", tag);
                if (gpu_ok(nm)) {
                    cmp(nm, &dx, TOL_RED);
                    if (aff) {
                        snprintf(nm, sizeof nm, "batchnorm_backward_%s_dw", tag); cmp(nm, &dw, TOL_RED);
                        snprintf(nm, sizeof nm, "batchnorm_backward_%s_db", tag); cmp(nm, &db, TOL_RED);
                    }
                }
                rm(&x); rm(&y); rm(&mean); rm(&rstd); rm(&rmn); rm(&rv); rm(&w); rm(&b); rm(&dx); rm(&dw); rm(&db); rm(&dy);
            }
    }
    {   /* L2 norm, with an all-zero row (the clamp) */
        int rows = 57, cols = 130;
        size_t n = (size_t)rows * cols;
        buf x = mkr(n), y = mkr(n), nr = mkr((size_t)rows), dx = mkr(n), dy = mkr(n);
        memset(x.h + 3 * cols, 0, sizeof(float) * (size_t)cols);
        gpu->to_device(gpu, x.d, x.h, sizeof(float) * n);
        cpu->l2norm_forward(cpu, y.h, nr.h, x.h, rows, cols); gpu->l2norm_forward(gpu, y.d, nr.d, x.d, rows, cols);
        if (gpu_ok("l2norm_forward")) { cmp("l2norm_forward", &y, TOL_EW); cmp("l2norm_forward_norm", &nr, TOL_EW); }
        cpu->l2norm_backward(cpu, dx.h, dy.h, y.h, nr.h, rows, cols);
        gpu->l2norm_backward(gpu, dx.d, dy.d, y.d, nr.d, rows, cols);
        if (gpu_ok("l2norm_backward")) cmp("l2norm_backward", &dx, TOL_EW);
        rm(&x); rm(&y); rm(&nr); rm(&dx); rm(&dy);
    }
}

/* attention: B, T, H, hd, causal, padding keys, dropout */
static void test_attention_case(int B, int T, int H, int hd, int causal, int pad, float p) {
    int D = H * hd, b, t;
    size_t nq = (size_t)B * T * 3 * D, no = (size_t)B * T * D, nl = (size_t)B * H * T;
    buf qkv = mk(nq, -1.5f, 1.5f), out = mkr(no), lse = mkr(nl), dout = mkr(no), dqkv = mkr(nq);
    int *valid = (int *)malloc(sizeof(int) * (size_t)B * T);
    ibuf kv;
    char nm[128], tag[96];
    float scale = 1.0f / sqrtf((float)hd);
    uint64_t seed = 0xABCDEFull;
    for (b = 0; b < B; b++)
        for (t = 0; t < T; t++) {
            int len = T - (b * 7) % (T / 2 + 1);
            valid[b * T + t] = pad ? t < len : 1;
            /* batch 1 also hides its first two keys: with the causal mask
             * queries 0 and 1 see nothing (lse = -inf, zero output) */
            if (pad && b == 1 && t < 2) valid[b * T + t] = 0;
        }
    kv = mki(valid, (size_t)B * T);
    snprintf(tag, sizeof tag, "B%d_T%d_H%d_hd%d%s%s_p%.1f", B, T, H, hd, causal ? "_causal" : "", pad ? "_pad" : "", p);
    cpu->attention_forward(cpu, out.h, lse.h, qkv.h, pad ? kv.h : NULL, B, T, H, hd, causal, scale, p, seed);
    gpu->attention_forward(gpu, out.d, lse.d, qkv.d, pad ? kv.d : NULL, B, T, H, hd, causal, scale, p, seed);
    snprintf(nm, sizeof nm, "attention_forward_%s", tag);
    if (gpu_ok(nm)) {
        cmp(nm, &out, TOL_RED);
        snprintf(nm, sizeof nm, "attention_forward_%s_lse", tag);
        cmp(nm, &lse, TOL_RED);
    }
    /* the backward reads the forward's out and lse: give both sides the CPU's */
    gpu->to_device(gpu, out.d, out.h, sizeof(float) * no);
    gpu->to_device(gpu, lse.d, lse.h, sizeof(float) * nl);
    cpu->attention_backward(cpu, dqkv.h, dout.h, out.h, lse.h, qkv.h, pad ? kv.h : NULL, B, T, H, hd, causal, scale, p, seed);
    gpu->attention_backward(gpu, dqkv.d, dout.d, out.d, lse.d, qkv.d, pad ? kv.d : NULL, B, T, H, hd, causal, scale, p,
                            seed);
    snprintf(nm, sizeof nm, "attention_backward_%s", tag);
    if (gpu_ok(nm)) cmp(nm, &dqkv, TOL_RED);
    rm(&qkv); rm(&out); rm(&lse); rm(&dout); rm(&dqkv); rmi(&kv);
    free(valid);
}
static void test_attention(void) {
    test_attention_case(2, 37, 3, 64, 0, 0, 0.0f);     /* ViT-like */
    test_attention_case(2, 50, 2, 32, 1, 1, 0.0f);     /* GPT-2-like with padding */
    test_attention_case(2, 50, 2, 32, 1, 1, 0.1f);     /* + attention dropout */
    test_attention_case(3, 70, 2, 40, 1, 1, 0.1f);     /* head dim not a multiple of 32 */
    test_attention_case(2, 100, 2, 128, 0, 1, 0.0f);   /* text head dim of the base model */
    test_attention_case(2, 144, 2, 128, 1, 1, 0.1f);   /* the base text tower: causal, padded, dropout, hd 128 */
    test_attention_case(2, 61, 2, 65, 1, 1, 0.1f);     /* head dims 65-96: past one 64-wide tile */
    test_attention_case(2, 77, 3, 80, 0, 1, 0.0f);
    test_attention_case(1, 90, 2, 96, 1, 0, 0.2f);
    test_attention_case(1, 129, 1, 256, 1, 0, 0.2f);   /* the largest head dim */
}

static void test_pool_embed(void) {
    int B = 3, T = 41, C = 70, b, t;
    size_t n = (size_t)B * T * C;
    {
        buf x = mkr(n), y = mkr((size_t)B * C), dx = mkr(n), dy = mkr((size_t)B * C), mask = mkr((size_t)B * T);
        int m;
        for (b = 0; b < B; b++)
            for (t = 0; t < T; t++) mask.h[b * T + t] = b == 2 ? 0.0f : (t < T - 5 * b ? 1.0f : 0.0f);
        gpu->to_device(gpu, mask.d, mask.h, sizeof(float) * (size_t)B * T);
        for (m = 0; m < 2; m++) {
            char nm[64];
            cpu->meanpool_forward(cpu, y.h, x.h, m ? mask.h : NULL, B, T, C);
            gpu->meanpool_forward(gpu, y.d, x.d, m ? mask.d : NULL, B, T, C);
            snprintf(nm, sizeof nm, "meanpool_forward%s", m ? "_mask" : "");
            if (gpu_ok(nm)) cmp(nm, &y, TOL_EW);
            cpu->meanpool_backward(cpu, dx.h, dy.h, m ? mask.h : NULL, B, T, C);
            gpu->meanpool_backward(gpu, dx.d, dy.d, m ? mask.d : NULL, B, T, C);
            snprintf(nm, sizeof nm, "meanpool_backward%s", m ? "_mask" : "");
            if (gpu_ok(nm)) cmp(nm, &dx, TOL_EW);
        }
        rm(&x); rm(&y); rm(&dx); rm(&dy); rm(&mask);
    }
    {   /* repeated and negative ids */
        int nid = 200, V = 37, i, *ids = (int *)malloc(sizeof(int) * 200);
        ibuf id;
        buf table, y, dtab, dy;
        for (i = 0; i < nid; i++) ids[i] = i % 17 == 5 ? -1 : (int)mama_rng_below(&rng, (uint32_t)V);
        id = mki(ids, (size_t)nid);
        table = mkr((size_t)V * C); y = mkr((size_t)nid * C); dtab = mkr((size_t)V * C); dy = mkr((size_t)nid * C);
        cpu->embedding_forward(cpu, y.h, id.h, table.h, nid, C); gpu->embedding_forward(gpu, y.d, id.d, table.d, nid, C);
        if (gpu_ok("embedding_forward")) cmp("embedding_forward", &y, TOL_EXACT);
        cpu->embedding_backward(cpu, dtab.h, dy.h, id.h, nid, C); gpu->embedding_backward(gpu, dtab.d, dy.d, id.d, nid, C);
        if (gpu_ok("embedding_backward")) cmp("embedding_backward", &dtab, TOL_EW);
        rmi(&id); rm(&table); rm(&y); rm(&dtab); rm(&dy);
        free(ids);
    }
    {   /* im2col with pixels beyond the last whole patch */
        int Bi = 2, Cin = 3, H = 30, W = 31, P = 7, GH = H / P, GW = W / P;
        buf img = mkr((size_t)Bi * Cin * H * W), cols = mkr((size_t)Bi * GH * GW * Cin * P * P);
        cpu->im2col_patches(cpu, cols.h, img.h, Bi, Cin, H, W, P);
        gpu->im2col_patches(gpu, cols.d, img.d, Bi, Cin, H, W, P);
        if (gpu_ok("im2col_patches")) cmp("im2col_patches", &cols, TOL_EXACT);
        rm(&img); rm(&cols);
    }
    {   /* ViT tokens; the backward once with every output, once without dreg */
        int Bt = 3, N = 16, R = 4, D = 24, Tt = 1 + R + N, k;
        buf x = mkr((size_t)Bt * Tt * D), pt = mkr((size_t)Bt * N * D), cls = mkr((size_t)D), reg = mkr((size_t)R * D),
            pos = mkr((size_t)(1 + N) * D);
        buf dpt = mkr((size_t)Bt * N * D), dcls = mkr((size_t)D), dreg = mkr((size_t)R * D), dpos = mkr((size_t)(1 + N) * D),
            dx = mkr((size_t)Bt * Tt * D);
        cpu->vit_tokens_forward(cpu, x.h, pt.h, cls.h, reg.h, pos.h, Bt, N, R, D);
        gpu->vit_tokens_forward(gpu, x.d, pt.d, cls.d, reg.d, pos.d, Bt, N, R, D);
        if (gpu_ok("vit_tokens_forward")) cmp("vit_tokens_forward", &x, TOL_EXACT);
        for (k = 0; k < 2; k++) {
            cpu->vit_tokens_backward(cpu, dpt.h, dcls.h, k ? NULL : dreg.h, dpos.h, dx.h, Bt, N, R, D);
            gpu->vit_tokens_backward(gpu, dpt.d, dcls.d, k ? NULL : dreg.d, dpos.d, dx.d, Bt, N, R, D);
            if (gpu_ok("vit_tokens_backward")) {
                cmp(k ? "vit_tokens_backward_noreg_dpatches" : "vit_tokens_backward_dpatches", &dpt, TOL_EW);
                cmp(k ? "vit_tokens_backward_noreg_dcls" : "vit_tokens_backward_dcls", &dcls, TOL_EW);
                cmp(k ? "vit_tokens_backward_noreg_dreg" : "vit_tokens_backward_dreg", &dreg, TOL_EW);
                cmp(k ? "vit_tokens_backward_noreg_dpos" : "vit_tokens_backward_dpos", &dpos, TOL_EW);
            }
        }
        rm(&x); rm(&pt); rm(&cls); rm(&reg); rm(&pos); rm(&dpt); rm(&dcls); rm(&dreg); rm(&dpos); rm(&dx);
    }
}

static void test_losses(void) {
    {   /* cross-entropy with an ignored row (-100) and a -1e30 diagonal */
        int rows = 40, cols = 40, i, tg[40];
        buf lg = mk((size_t)rows * cols, -8.0f, 8.0f), loss = mkr((size_t)rows), pr = mkr((size_t)rows * cols),
            dl = mkr((size_t)rows * cols), dloss = mk((size_t)rows, 0.0f, 0.1f);
        ibuf t;
        for (i = 0; i < rows; i++) tg[i] = i == 7 ? -100 : (i * 13) % cols;
        t = mki(tg, (size_t)rows);
        cpu->fill_diagonal(cpu, lg.h, rows, cols, -1e30f); gpu->fill_diagonal(gpu, lg.d, rows, cols, -1e30f);
        if (gpu_ok("fill_diagonal")) cmp("fill_diagonal", &lg, TOL_EXACT);
        cpu->cross_entropy_forward(cpu, loss.h, pr.h, lg.h, t.h, rows, cols);
        gpu->cross_entropy_forward(gpu, loss.d, pr.d, lg.d, t.d, rows, cols);
        if (gpu_ok("cross_entropy_forward")) { cmp("cross_entropy_forward_loss", &loss, TOL_EW); cmp("cross_entropy_forward_probs", &pr, TOL_EW); }
        gpu->to_device(gpu, pr.d, pr.h, sizeof(float) * (size_t)rows * cols);
        cpu->cross_entropy_backward(cpu, dl.h, pr.h, t.h, dloss.h, rows, cols);
        gpu->cross_entropy_backward(gpu, dl.d, pr.d, t.d, dloss.d, rows, cols);
        if (gpu_ok("cross_entropy_backward")) cmp("cross_entropy_backward", &dl, TOL_EW);
        cpu->cross_entropy_backward(cpu, dl.h, pr.h, t.h, NULL, rows, cols);
        gpu->cross_entropy_backward(gpu, dl.d, pr.d, t.d, NULL, rows, cols);
        if (gpu_ok("cross_entropy_backward_nodloss")) cmp("cross_entropy_backward_nodloss", &dl, TOL_EW);
        rm(&lg); rm(&loss); rm(&pr); rm(&dl); rm(&dloss); rmi(&t);
    }
    {   /* segment max with an empty segment */
        int rows = 90, cols = 50, segv[6] = {0, 11, 11, 30, 44, 50}, nseg = 5;
        int *argz = (int *)calloc(450, sizeof(int));
        ibuf seg = mki(segv, 6), arg = mki(argz, (size_t)rows * nseg);
        buf x = mkr((size_t)rows * cols), out = mkr((size_t)rows * nseg), dx = mkr((size_t)rows * cols),
            dout = mkr((size_t)rows * nseg);
        cpu->segment_max_forward(cpu, out.h, arg.h, x.h, rows, cols, seg.h, nseg);
        gpu->segment_max_forward(gpu, out.d, arg.d, x.d, rows, cols, seg.d, nseg);
        if (gpu_ok("segment_max_forward")) { cmp("segment_max_forward", &out, TOL_EXACT); cmpi("segment_max_forward_arg", &arg); }
        gpu->to_device(gpu, arg.d, arg.h, sizeof(int) * (size_t)rows * nseg);
        cpu->segment_max_backward(cpu, dx.h, dout.h, arg.h, rows, cols, nseg);
        gpu->segment_max_backward(gpu, dx.d, dout.d, arg.d, rows, cols, nseg);
        if (gpu_ok("segment_max_backward")) cmp("segment_max_backward", &dx, TOL_EW);
        rmi(&seg); rmi(&arg); rm(&x); rm(&out); rm(&dx); rm(&dout);
        free(argz);
    }
    {
        int rows = 77, cols = 45;
        buf x = mkr((size_t)rows * cols), y = mkr((size_t)rows * cols);
        cpu->transpose(cpu, y.h, x.h, rows, cols); gpu->transpose(gpu, y.d, x.d, rows, cols);
        if (gpu_ok("transpose")) cmp("transpose", &y, TOL_EXACT);
        rm(&x); rm(&y);
    }
    {
        size_t n = 1000003;
        buf a = mkr(n), b = mkr(n);
        double dc = cpu->dot(cpu, a.h, b.h, n), dg = gpu->dot(gpu, a.d, b.d, n);
        double sc = cpu->sum_squares(cpu, a.h, n), sg = gpu->sum_squares(gpu, a.d, n);
        if (gpu_ok("dot")) check_value("dot", fabs(dg - dc) / (fabs(dc) > 1e-20 ? fabs(dc) : 1e-20), 1e-10);
        if (gpu_ok("sum_squares")) check_value("sum_squares", fabs(sg - sc) / sc, 1e-10);
        rm(&a); rm(&b);
    }
}

static void test_optim(void) {
    size_t n = 100001;
    int t;
    buf p = mkr(n), g = mkr(n), m = mk(n, -0.01f, 0.01f), v = mk(n, 0.0f, 0.001f), mom = mkr(n);
    for (t = 1; t <= 5; t += 4) {
        char nm[64];
        cpu->adamw_step(cpu, p.h, g.h, m.h, v.h, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, t);
        gpu->adamw_step(gpu, p.d, g.d, m.d, v.d, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, t);
        snprintf(nm, sizeof nm, "adamw_step_t%d", t);
        if (gpu_ok(nm)) {
            char n2[80];
            cmp(nm, &p, TOL_EW);
            snprintf(n2, sizeof n2, "%s_m", nm); cmp(n2, &m, TOL_EW);
            snprintf(n2, sizeof n2, "%s_v", nm); cmp(n2, &v, TOL_EW);
        }
    }
    for (t = 0; t < 2; t++) {
        cpu->sgd_step(cpu, p.h, g.h, mom.h, n, 1e-2f, 0.9f, 1e-3f, t == 0);
        gpu->sgd_step(gpu, p.d, g.d, mom.d, n, 1e-2f, 0.9f, 1e-3f, t == 0);
        if (gpu_ok("sgd_step")) { cmp(t ? "sgd_step_2" : "sgd_step_1", &p, TOL_EW); cmp(t ? "sgd_step_2_buf" : "sgd_step_1_buf", &mom, TOL_EW); }
    }
    rm(&p); rm(&g); rm(&m); rm(&v); rm(&mom);
}

static void test_memory(void) {
    size_t n = 4097, i;
    buf a = mkr(n), b = mkr(n);
    float *tmp = (float *)malloc(sizeof(float) * n);
    gpu->copy(gpu, b.d, a.d, sizeof(float) * n);
    memcpy(b.h, a.h, sizeof(float) * n);
    if (gpu_ok("copy")) cmp("copy", &b, TOL_EXACT);
    gpu->zero(gpu, b.d, sizeof(float) * 100);
    for (i = 0; i < 100; i++) b.h[i] = 0.0f;
    if (gpu_ok("zero")) cmp("zero", &b, TOL_EXACT);
    free(tmp);
    rm(&a); rm(&b);
}

/* ---- part 2: whole training steps ---------------------------------------- */

static void make_batch(const mama_config *c, int B, float **images, float **ext, int **ids, int **mask) {
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size, i;
    int T = c->context, b, t;
    mama_rng r;
    *images = (float *)malloc(sizeof(float) * img * B);
    *ext = (float *)malloc(sizeof(float) * img * B);
    *ids = (int *)malloc(sizeof(int) * (size_t)B * T);
    *mask = (int *)malloc(sizeof(int) * (size_t)B * T);
    mama_rng_seed(&r, 99);
    for (i = 0; i < img * B; i++) { (*images)[i] = 2 * mama_rng_uniform(&r) - 1; (*ext)[i] = 2 * mama_rng_uniform(&r) - 1; }
    for (b = 0; b < B; b++) {
        int len = T - (9 * b) % (T / 2);
        for (t = 0; t < T; t++) {
            int id;
            if (t == 0) id = c->bos_id;
            else if (t == len - 1) id = c->eos_id;
            else if (t >= len) id = c->pad_id;
            else if (t % 11 == 10 || t == len - 2) id = c->sep_id;
            else id = (int)mama_rng_below(&r, (uint32_t)(c->vocab_size - 7));
            (*ids)[b * T + t] = id;
            (*mask)[b * T + t] = t < len;
        }
    }
}

/* Compare every tensor of a device buffer laid out by the model's parameter
 * table (grads: train and late groups only). */
static void cmp_tensors(const char *tag, mama_model *mc, mama_model *mg, const float *hc, const float *hg, int grads,
                        double tol, int per_tensor) {
    int i, np = mama_model_param_count(mc), count = 0, bad = 0;
    double worst = 0;
    const char *worst_name = "";
    char nm[320];
    for (i = 0; i < np; i++) {
        const mama_param_info *p = mama_model_param(mc, i);
        double e;
        if (grads && p->group != MAMA_GROUP_TRAIN && p->group != MAMA_GROUP_LATE) continue;
        if (!grads && (p->group == MAMA_GROUP_FROZEN || p->group == MAMA_GROUP_BUFFER)) continue; /* buffers: apart */
        e = rel_err(hg + p->offset, hc + p->offset, p->numel);
        count++;
        if (!(e <= tol)) bad++;
        if (!(e <= worst)) { worst = e; worst_name = p->name; }
        if (per_tensor || !(e <= tol)) {
            snprintf(nm, sizeof nm, "%s_%s", tag, p->name);
            check_value(nm, e, tol);
        }
    }
    (void)mg;
    snprintf(nm, sizeof nm, "%s_all_%d_tensors(worst:%s)", tag, count, worst_name);
    check_value(nm, worst, tol);
}

static void step_case(const char *tag, mama_config cfg, int late, int precision, double tol_loss, double tol_grad,
                      double tol_param, int per_tensor) {
    mama_model *mc = NULL, *mg = NULL;
    mama_adamw oc, og;
    mama_batch batch;
    mama_step_opts so;
    mama_losses Lc, Lg;
    float *images, *ext, *hc, *hg;
    int *ids, *mask, B = 4, k;
    size_t total, ngrad;
    char nm[160];
    double t0, tc, tg;
    memset(&oc, 0, sizeof oc);
    memset(&og, 0, sizeof og);
    if (mama_model_create(&mc, &cfg, cpu, B, 7) != MAMA_OK || mama_model_create(&mg, &cfg, gpu, B, 7) != MAMA_OK) {
        snprintf(nm, sizeof nm, "step_%s_create", tag);
        check_fail(nm, mama_last_error());
        mama_model_free(mc);
        return;
    }
    mama_cuda_set_precision(gpu, precision);
    make_batch(&cfg, B, &images, &ext, &ids, &mask);
    batch.B = B; batch.images = images; batch.ext_images = ext; batch.input_ids = ids; batch.attention_mask = mask;
    mama_step_opts_default(&so);
    so.late = late;
    so.seed = 4242;
    total = mama_model_numel(mc, MAMA_GROUP_TRAIN) + mama_model_numel(mc, MAMA_GROUP_LATE) +
            mama_model_numel(mc, MAMA_GROUP_FROZEN) + mama_model_numel(mc, MAMA_GROUP_BUFFER);
    ngrad = mama_model_numel(mc, MAMA_GROUP_TRAIN) + mama_model_numel(mc, MAMA_GROUP_LATE);
    hc = (float *)malloc(sizeof(float) * total);
    hg = (float *)malloc(sizeof(float) * total);
    t0 = mama_time_seconds();
    if (mama_model_step(mc, &batch, &so, 0, &Lc) != MAMA_OK) { check_fail("cpu step", mama_last_error()); goto done; }
    tc = mama_time_seconds() - t0;
    t0 = mama_time_seconds();
    if (mama_model_step(mg, &batch, &so, 0, &Lg) != MAMA_OK || gpu->sync(gpu) != MAMA_OK) {
        snprintf(nm, sizeof nm, "step_%s", tag);
        check_fail(nm, mama_last_error());
        goto done;
    }
    tg = mama_time_seconds() - t0;
    printf("# step %s: cpu %.1f ms, gpu %.1f ms (first step, untimed warm-up included); loss cpu %.6f gpu %.6f\n", tag,
           1e3 * tc, 1e3 * tg, Lc.loss, Lg.loss);
#define LOSS_CHECK(field) \
    snprintf(nm, sizeof nm, "step_%s_loss_%s", tag, #field); \
    check_value(nm, fabs((double)Lg.field - Lc.field) / (fabs(Lc.field) > 1e-6 ? fabs(Lc.field) : 1e-6), tol_loss)
    LOSS_CHECK(loss); LOSS_CHECK(clip); LOSS_CHECK(mv); LOSS_CHECK(sym); LOSS_CHECK(sla);
#undef LOSS_CHECK
    if (cpu->to_host(cpu, hc, mama_model_grads(mc), sizeof(float) * ngrad) != MAMA_OK ||
        gpu->to_host(gpu, hg, mama_model_grads(mg), sizeof(float) * ngrad) != MAMA_OK) {
        check_fail("download gradients", mama_last_error());
        goto done;
    }
    snprintf(nm, sizeof nm, "step_%s_grad", tag);
    cmp_tensors(nm, mc, mg, hc, hg, 1, tol_grad, per_tensor);
    /* AdamW's normalised step turns the sign of a gradient element that is
     * rounding noise around zero into a whole lr-sized move, so the
     * optimiser is checked from the same gradients: the GPU model gets the
     * CPU's before both apply AdamW (the gradients were compared above). */
    if (gpu->to_device(gpu, mama_model_grads(mg), hc, sizeof(float) * ngrad) != MAMA_OK) {
        check_fail("upload gradients", mama_last_error());
        goto done;
    }
    /* BatchNorm running statistics (buffers) */
    if (gpu->to_host(gpu, hg, mama_model_params(mg), sizeof(float) * total) != MAMA_OK) {
        check_fail("download parameters", mama_last_error());
        goto done;
    }
    memcpy(hc, mama_model_params(mc), sizeof(float) * total);
    {
        int i, np = mama_model_param_count(mc);
        double worst = 0;
        for (i = 0; i < np; i++) {
            const mama_param_info *p = mama_model_param(mc, i);
            double e;
            if (p->group != MAMA_GROUP_BUFFER) continue;
            e = rel_err(hg + p->offset, hc + p->offset, p->numel);
            if (!(e <= worst)) worst = e;
        }
        /* forward quantities: the loss tolerance of the precision */
        snprintf(nm, sizeof nm, "step_%s_batchnorm_running_stats", tag);
        check_value(nm, worst, tol_loss);
    }
    /* AdamW: one step with the late group, one more (its own counts) */
    if (mama_adamw_init(&oc, mc, 0.1f) != MAMA_OK || mama_adamw_init(&og, mg, 0.1f) != MAMA_OK) {
        check_fail("adamw init", mama_last_error());
        goto done;
    }
    for (k = 0; k < 2; k++) {
        mama_adamw_step(&oc, mc, 1e-4f, late && k == 1);
        mama_adamw_step(&og, mg, 1e-4f, late && k == 1);
    }
    if (gpu->to_host(gpu, hg, mama_model_params(mg), sizeof(float) * total) != MAMA_OK) {
        check_fail("download parameters", mama_last_error());
        goto done;
    }
    memcpy(hc, mama_model_params(mc), sizeof(float) * total);
    snprintf(nm, sizeof nm, "step_%s_params_after_adamw", tag);
    cmp_tensors(nm, mc, mg, hc, hg, 0, tol_param, 0);
    /* a second whole step from the updated weights, timed */
    so.seed = 4243;
    t0 = mama_time_seconds();
    if (mama_model_step(mg, &batch, &so, 0, &Lg) != MAMA_OK || gpu->sync(gpu) != MAMA_OK) {
        snprintf(nm, sizeof nm, "step2_%s", tag);
        check_fail(nm, mama_last_error());
        goto done;
    }
    tg = mama_time_seconds() - t0;
    if (mama_model_step(mc, &batch, &so, 0, &Lc) != MAMA_OK) { check_fail("cpu step 2", mama_last_error()); goto done; }
    printf("# step 2 %s: gpu %.2f ms; loss cpu %.6f gpu %.6f\n", tag, 1e3 * tg, Lc.loss, Lg.loss);
    snprintf(nm, sizeof nm, "step2_%s_loss", tag);
    check_value(nm, fabs((double)Lg.loss - Lc.loss) / fabs(Lc.loss), tol_loss);
done:
    mama_cuda_set_precision(gpu, MAMA_CUDA_FP32);
    mama_adamw_free(&oc);
    mama_adamw_free(&og);
    mama_model_free(mc);
    mama_model_free(mg);
    free(images); free(ext); free(ids); free(mask); free(hc); free(hg);
}

static void steps_configs(mama_config *full, mama_config *lora) {
    mama_config_preset(full, "tiny");
    full->text_dropout = 0.1f;                 /* exercise the dropout masks */
    *lora = *full;
    lora->text_mode = MAMA_TEXT_LORA;          /* LoRA with its dropout, BioMedLM's layer scaling, checkpointing */
    lora->lora_dropout = 0.1f;
    lora->text_attn_layer_scale = 1;
    lora->grad_checkpoint = 1;
}
static void test_steps_fp32(void) {
    mama_config full, lora;
    steps_configs(&full, &lora);
    /* CLIP only first: no SLA maxima, whose arg-max could flip on a near
     * tie between CPU and GPU rounding (the all-loss steps below would then
     * show a mismatch confined to the local heads' gradients) */
    step_case("tiny_full_clip_only_fp32", full, 0, MAMA_CUDA_FP32, 1e-4, 2e-3, 1e-5, 0);
    step_case("tiny_full_fp32", full, 1, MAMA_CUDA_FP32, 1e-4, 2e-3, 1e-5, 1);
    step_case("tiny_lora_ckpt_fp32", lora, 1, MAMA_CUDA_FP32, 1e-4, 2e-3, 1e-5, 1);
}
static void test_steps_tf32(void) {
    mama_config full, lora;
    steps_configs(&full, &lora);
    step_case("tiny_full_tf32", full, 1, MAMA_CUDA_TF32, 5e-3, 1e-1, 1e-5, 0);
}
static void test_steps_bf16(void) {
    mama_config full, lora;
    steps_configs(&full, &lora);
    step_case("tiny_full_bf16", full, 1, MAMA_CUDA_BF16, 3e-2, 3e-1, 1e-5, 0);
}

/* The slots that keep a step on the device (mama.h 1.5) */
static void test_device_scalars(void) {
    int M = 33, N = 21, K = 40, ta, tb;
    size_t n = 70001;
    buf a = mkr(n), b = mkr(n), y = mkr(n), ls = mk(1, -0.5f, 2.5f), st = mkr(n);
    double hacc[2], dacc0[2] = {0.25, -1.5}, *dacc = NULL;
    float *pinned = NULL;
    char nm[96];
    /* to_device_async from host_alloc memory, then a synchronising download */
    if (gpu->host_alloc(gpu, (void **)&pinned, sizeof(float) * n) != MAMA_OK) section_fault("host_alloc");
    memcpy(pinned, st.h, sizeof(float) * n);
    if (gpu->to_device_async(gpu, st.d, pinned, sizeof(float) * n) != MAMA_OK) section_fault("to_device_async");
    if (gpu_ok("to_device_async")) cmp("to_device_async", &st, TOL_EXACT);
    gpu->host_free(gpu, pinned);
    /* reduce_acc: a dot and a plain sum, each divided, into existing values */
    if (gpu->alloc(gpu, (void **)&dacc, sizeof dacc0) != MAMA_OK ||
        gpu->to_device(gpu, dacc, dacc0, sizeof dacc0) != MAMA_OK)
        section_fault("device doubles");
    hacc[0] = dacc0[0]; hacc[1] = dacc0[1];
    cpu->reduce_acc(cpu, hacc, a.h, b.h, n, 1.0);
    cpu->reduce_acc(cpu, hacc + 1, a.h, NULL, n, 7.0);
    gpu->reduce_acc(gpu, dacc, a.d, b.d, n, 1.0);
    gpu->reduce_acc(gpu, dacc + 1, a.d, NULL, n, 7.0);
    if (gpu_ok("reduce_acc")) {
        double g[2];
        if (gpu->to_host(gpu, g, dacc, sizeof g) != MAMA_OK) section_fault("download");
        check_value("reduce_acc_dot", fabs(g[0] - hacc[0]) / fabs(hacc[0]), 1e-10);
        check_value("reduce_acc_sum_div7", fabs(g[1] - hacc[1]) / fabs(hacc[1]), 1e-10);
    }
    /* acc_to_scalar: y[0] += (float)acc[0] */
    cpu->acc_to_scalar(cpu, y.h, hacc);
    gpu->acc_to_scalar(gpu, y.d, dacc);
    if (gpu_ok("acc_to_scalar")) cmp("acc_to_scalar", &y, TOL_EW);
    /* scale_exp and gemm_exp_alpha: the temperature read on the device */
    cpu->scale_exp(cpu, y.h, ls.h, n);
    gpu->scale_exp(gpu, y.d, ls.d, n);
    if (gpu_ok("scale_exp")) cmp("scale_exp", &y, TOL_EW);
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++) {
            int lda = ta ? M : K, ldb = tb ? K : N;
            buf A = mkr((size_t)M * K), B = mkr((size_t)K * N), C = mkr((size_t)M * N);
            float beta = ta ? 1.0f : 0.0f;
            cpu->gemm_exp_alpha(cpu, ta, tb, M, N, K, ls.h, A.h, lda, B.h, ldb, beta, C.h, N);
            gpu->gemm_exp_alpha(gpu, ta, tb, M, N, K, ls.d, A.d, lda, B.d, ldb, beta, C.d, N);
            snprintf(nm, sizeof nm, "gemm_exp_alpha_%s%s_beta%.0f", ta ? "T" : "N", tb ? "T" : "N", beta);
            if (gpu_ok(nm)) cmp(nm, &C, TOL_RED);
            rm(&A); rm(&B); rm(&C);
        }
    /* a plain gemm after the device-pointer one: the pointer mode was restored */
    {
        buf A = mkr((size_t)M * K), B = mkr((size_t)K * N), C = mkr((size_t)M * N);
        cpu->gemm(cpu, 0, 0, M, N, K, 0.5f, A.h, K, B.h, N, 1.0f, C.h, N);
        gpu->gemm(gpu, 0, 0, M, N, K, 0.5f, A.d, K, B.d, N, 1.0f, C.d, N);
        if (gpu_ok("gemm_after_exp_alpha")) cmp("gemm_after_exp_alpha", &C, TOL_RED);
        rm(&A); rm(&B); rm(&C);
    }
    gpu->free(gpu, dacc);
    rm(&a); rm(&b); rm(&y); rm(&ls); rm(&st);
}

/* Host synchronisations of whole steps on the backend under test (mama.h
 * 1.5): with the losses downloaded, step + AdamW + the caller's sync must
 * take at most 2 (the download and the sync); without, at most 2 (a
 * staging wait at most, and the sync). */
static void test_host_syncs(void) {
    mama_config c;
    mama_model *m = NULL;
    mama_adamw opt;
    mama_batch batch;
    mama_step_opts so;
    mama_losses L;
    float *images, *ext;
    int *ids, *mask, B = 4, s;
    unsigned long long per[4] = {0, 0, 0, 0};
    mama_config_preset(&c, "tiny");
    if (mama_model_create(&m, &c, gpu, B, 7) != MAMA_OK || mama_adamw_init(&opt, m, 0.1f) != MAMA_OK) {
        check_fail("host_syncs_create", mama_last_error());
        mama_model_free(m);
        return;
    }
    make_batch(&c, B, &images, &ext, &ids, &mask);
    batch.B = B; batch.images = images; batch.ext_images = ext; batch.input_ids = ids; batch.attention_mask = mask;
    mama_step_opts_default(&so);
    so.late = 1;
    for (s = 0; s < 4; s++) { /* steps 0, 1 logged; 2, 3 not */
        unsigned long long h0 = gpu->host_syncs;
        so.seed = (uint64_t)s + 11;
        if (mama_model_step(m, &batch, &so, 0, s < 2 ? &L : NULL) != MAMA_OK) {
            check_fail("host_syncs_step", mama_last_error());
            break;
        }
        mama_adamw_step(&opt, m, 1e-4f, 1);
        if (gpu->sync(gpu) != MAMA_OK) {
            check_fail("host_syncs_sync", mama_last_error());
            break;
        }
        per[s] = gpu->host_syncs - h0;
    }
    printf("# host_syncs: per step (step + AdamW + sync): logged %llu %llu, not logged %llu %llu\n", per[0], per[1],
           per[2], per[3]);
    check_value("host_syncs_per_logged_step_le_2", per[1] <= 2 ? 0.0 : (double)per[1], 0);
    check_value("host_syncs_per_unlogged_step_le_2", per[3] <= 2 ? 0.0 : (double)per[3], 0);
    free(images); free(ext); free(ids); free(mask);
    mama_adamw_free(&opt);
    mama_model_free(m);
}

/* ---- --timing: GPU time of the hot ops at the base config's shapes -------
 * (no comparison; for judging where a step's time goes).  Each op runs once
 * to warm up, then `reps` times between two syncs. */
#define TIME_OP(label, flop, reps, call) \
    do { \
        int rep_; \
        double t_; \
        call; \
        if (gpu->sync(gpu) != MAMA_OK) { printf("# timing %s: failed: %s\n", label, mama_last_error()); break; } \
        t_ = mama_time_seconds(); \
        for (rep_ = 0; rep_ < (reps); rep_++) call; \
        if (gpu->sync(gpu) != MAMA_OK) { printf("# timing %s: failed: %s\n", label, mama_last_error()); break; } \
        t_ = (mama_time_seconds() - t_) / (reps); \
        printf("# timing %-48s %9.3f ms", label, 1e3 * t_); \
        if ((flop) > 0) printf("  %8.1f TFLOP/s", (double)(flop) / t_ / 1e12); \
        printf("\n"); \
        fflush(stdout); \
    } while (0)

static void run_timing(void) {
    int Bv = 16, Tv = 1374, D = 768, Hv = 12, rows = Bv * Tv, Bt = 8, Tt = 144, Dt = 2560, Ht = 20, i;
    size_t nq = (size_t)rows * 3 * D, nqt = (size_t)Bt * Tt * 3 * Dt;
    float *qkv, *out, *lse, *dqkv, *x, *y, *w, *b, *mean, *rstd, *big, *big2;
    int *kv, *hkv = (int *)malloc(sizeof(int) * (size_t)Bt * Tt);
    double fa = 4.0 * Bv * Hv * (double)Tv * Tv * (D / Hv), fat = 4.0 * Bt * Ht * (double)Tt * Tt * (Dt / Ht);
    static const char *const pn[3] = {"fp32", "tf32", "bf16"};
    char label[96];
    printf("# --timing: base-config shapes on the GPU (vision: %d images x %d tokens, D %d; text: %d x %d, D %d)\n", Bv,
           Tv, D, Bt, Tt, Dt);
    if (gpu->alloc(gpu, (void **)&qkv, sizeof(float) * (nq > nqt ? nq : nqt)) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&dqkv, sizeof(float) * (nq > nqt ? nq : nqt)) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&out, sizeof(float) * (size_t)rows * 4 * D) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&lse, sizeof(float) * (size_t)Bv * Hv * Tv) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&x, sizeof(float) * (size_t)rows * D) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&y, sizeof(float) * (size_t)rows * D) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&w, sizeof(float) * (size_t)4 * D * D) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&b, sizeof(float) * (size_t)4 * D) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&mean, sizeof(float) * (size_t)rows) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&rstd, sizeof(float) * (size_t)rows) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&big, sizeof(float) * (size_t)rows * 4 * D) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&big2, sizeof(float) * (size_t)rows * 4 * D) != MAMA_OK ||
        gpu->alloc(gpu, (void **)&kv, sizeof(int) * (size_t)Bt * Tt) != MAMA_OK) {
        printf("# timing: allocation failed: %s\n", mama_last_error());
        return;
    }
    /* values: small, finite (zeros would do for timing, but keep exp() sane) */
    gpu->zero(gpu, qkv, sizeof(float) * (nq > nqt ? nq : nqt));
    gpu->zero(gpu, dqkv, sizeof(float) * (nq > nqt ? nq : nqt));
    gpu->zero(gpu, out, sizeof(float) * (size_t)rows * 4 * D);
    gpu->zero(gpu, x, sizeof(float) * (size_t)rows * D);
    gpu->zero(gpu, w, sizeof(float) * (size_t)4 * D * D);
    gpu->zero(gpu, b, sizeof(float) * (size_t)4 * D);
    gpu->zero(gpu, big, sizeof(float) * (size_t)rows * 4 * D);
    gpu->zero(gpu, big2, sizeof(float) * (size_t)rows * 4 * D);
    for (i = 0; i < Bt * Tt; i++) hkv[i] = i % Tt < Tt - (i / Tt) * 9;
    gpu->to_device(gpu, kv, hkv, sizeof(int) * (size_t)Bt * Tt);
    for (i = 0; i < 3; i++) {
        mama_cuda_set_precision(gpu, i);
        snprintf(label, sizeof label, "gemm %dx%dx%d (fc1 fwd) %s", rows, 4 * D, D, pn[i]);
        TIME_OP(label, 2.0 * rows * 4 * D * D, 5, gpu->gemm(gpu, 0, 1, rows, 4 * D, D, 1.0f, x, D, w, D, 0.0f, big, 4 * D));
        snprintf(label, sizeof label, "gemm %dx%dx%d (fc1 dW) %s", 4 * D, D, rows, pn[i]);
        TIME_OP(label, 2.0 * rows * 4 * D * D, 5, gpu->gemm(gpu, 1, 0, 4 * D, D, rows, 1.0f, big, 4 * D, x, D, 1.0f, w, D));
    }
    mama_cuda_set_precision(gpu, MAMA_CUDA_FP32);
    TIME_OP("attention_forward vit (16x12 heads, T 1374, hd 64)", fa, 3,
            gpu->attention_forward(gpu, out, lse, qkv, NULL, Bv, Tv, Hv, D / Hv, 0, 0.125f, 0.0f, 0));
    TIME_OP("attention_backward vit", 2.0 * fa, 3,
            gpu->attention_backward(gpu, dqkv, out, out, lse, qkv, NULL, Bv, Tv, Hv, D / Hv, 0, 0.125f, 0.0f, 0));
    TIME_OP("attention_forward text (8x20 heads, T 144, hd 128, p 0.1)", fat, 3,
            gpu->attention_forward(gpu, out, lse, qkv, kv, Bt, Tt, Ht, Dt / Ht, 1, 0.088f, 0.1f, 7));
    TIME_OP("attention_backward text", 2.0 * fat, 3,
            gpu->attention_backward(gpu, dqkv, out, out, lse, qkv, kv, Bt, Tt, Ht, Dt / Ht, 1, 0.088f, 0.1f, 7));
    TIME_OP("layernorm_forward 21984x768", 0, 5,
            gpu->layernorm_forward(gpu, y, mean, rstd, x, w, b, rows, D, 1e-6f));
    TIME_OP("layernorm_backward 21984x768 (dx, dw, db)", 0, 5,
            gpu->layernorm_backward(gpu, y, w + D, b + D, x, x, w, mean, rstd, rows, D));
    TIME_OP("gelu_forward 21984x3072", 0, 5, gpu->gelu_forward(gpu, big2, big, (size_t)rows * 4 * D, 0));
    TIME_OP("gelu_backward 21984x3072", 0, 5, gpu->gelu_backward(gpu, big2, big, big, (size_t)rows * 4 * D, 0));
    TIME_OP("bias_add_backward 21984x3072", 0, 5, gpu->bias_add_backward(gpu, b, big, rows, 4 * D));
    TIME_OP("layerscale_backward 21984x768", 0, 5, gpu->layerscale_backward(gpu, y, b, x, x, b, rows, D));
    TIME_OP("accumulate 21984x768", 0, 5, gpu->accumulate(gpu, y, x, 1.0f, (size_t)rows * D));
    TIME_OP("meanpool_forward 16x1374x768", 0, 5, gpu->meanpool_forward(gpu, b, x, NULL, Bv, Tv, D));
    TIME_OP("sum_squares 100M", 0, 3, gpu->sum_squares(gpu, big, (size_t)100000000 < (size_t)rows * 4 * D ? (size_t)100000000 : (size_t)rows * 4 * D));
    gpu->free(gpu, qkv); gpu->free(gpu, dqkv); gpu->free(gpu, out); gpu->free(gpu, lse); gpu->free(gpu, x);
    gpu->free(gpu, y); gpu->free(gpu, w); gpu->free(gpu, b); gpu->free(gpu, mean); gpu->free(gpu, rstd);
    gpu->free(gpu, big); gpu->free(gpu, big2); gpu->free(gpu, kv);
    free(hkv);
}

static void test_gemm_fp32(void) { test_gemm(MAMA_CUDA_FP32, TOL_RED, ""); }
static void test_gemm_tf32(void) { test_gemm(MAMA_CUDA_TF32, 5e-3, "_tf32"); }
static void test_gemm_bf16(void) { test_gemm(MAMA_CUDA_BF16, 3e-2, "_bf16"); }

/* oracle 0: the reference backend (ops), 1: the CPU backend (whole steps) */
static const struct { const char *name; void (*fn)(void); int oracle; } sections[] = {
    {"memory", test_memory, 0},           {"gemm_fp32", test_gemm_fp32, 0}, {"gemm_tf32", test_gemm_tf32, 0},
    {"gemm_bf16", test_gemm_bf16, 0},     {"elementwise", test_elementwise, 0}, {"norms", test_norms, 0},
    {"attention", test_attention, 0},     {"pool_embed", test_pool_embed, 0}, {"losses", test_losses, 0},
    {"device_scalars", test_device_scalars, 0}, {"optim", test_optim, 0}, {"steps_fp32", test_steps_fp32, 1},
    {"steps_tf32", test_steps_tf32, 1},   {"steps_bf16", test_steps_bf16, 1}, {"host_syncs", test_host_syncs, 1},
};
#define N_SECTIONS (int)(sizeof sections / sizeof sections[0])

/* is `name` in the comma-separated list (NULL: every section)? */
static int selected(const char *only, const char *name) {
    size_t n = strlen(name);
    const char *p = only;
    if (!only) return 1;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static void run_sections(const char *only) {
    int i;
    for (i = 0; i < N_SECTIONS; i++) {
        int fails = n_fail, passes = n_pass;
        double t0;
        if (!selected(only, sections[i].name)) continue;
        cpu = sections[i].oracle ? cpu_be : ref_be;
        section_name = sections[i].name;
        printf("# section %s (oracle: %s)\n", section_name, cpu->name);
        fflush(stdout);
        t0 = mama_time_seconds();
        if (setjmp(section_end) == 0) sections[i].fn();
        else printf("# section %s ended by a device fault\n", section_name);
        mama_cuda_set_precision(gpu, MAMA_CUDA_FP32); /* a fault may leave another precision */
        printf("# section %s: %d passed, %d failed, %.1f s\n", section_name, n_pass - passes, n_fail - fails,
               mama_time_seconds() - t0);
        fflush(stdout);
    }
}

static int finish(void) {
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *only = NULL, *mode = NULL, *expect = getenv("MAMA_EXPECT_GPU");
    int ndev = 0, i, must = expect && atoi(expect) != 0, rc;
    mama_status qs;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            for (i = 0; i < N_SECTIONS; i++) printf("%s\n", sections[i].name);
            return 0;
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--timing") || !strcmp(argv[i], "--cpu-vs-cpu") || !strcmp(argv[i], "--cpu-vs-ref")) {
            mode = argv[i];
        } else {
            fprintf(stderr, "usage: test_cuda [--list | --only S[,S...] | --timing | --cpu-vs-cpu | --cpu-vs-ref]\n");
            return 2;
        }
    }
    if (only)
        for (i = 0; i < N_SECTIONS && !selected(only, sections[i].name); i++) {}
    if (only && i == N_SECTIONS) {
        fprintf(stderr, "test_cuda: --only %s names no section (see --list)\n", only);
        return 2;
    }
    if (mama_cpu_backend_create(&cpu_be) != MAMA_OK || mama_reference_backend_create(&ref_be) != MAMA_OK) {
        printf("FAIL host_backends_create %s\n", mama_last_error());
        n_fail++;
        return finish();
    }
    mama_rng_seed(&rng, 2026);
    if (mode && !strcmp(mode, "--cpu-vs-cpu")) {
        /* checks the harness itself without a GPU: the CPU table on both
         * sides and as the oracle, so every comparison must be exact
         * (precision switches are no-ops that fail quietly) */
        gpu = cpu_be;
        mama_backend_free(ref_be);
        ref_be = cpu_be;
        printf("# test_cuda --cpu-vs-cpu: the CPU backend against itself (harness check, no GPU involved)\n");
        run_sections(only);
        mama_backend_free(gpu);
        return finish();
    }
    if (mode && !strcmp(mode, "--cpu-vs-ref")) {
        /* the tolerances against a second real implementation without a
         * GPU: the CPU backend under test, the reference as the ops' oracle
         * (whole steps: the CPU on both sides, exact) */
        gpu = cpu_be;
        printf("# test_cuda --cpu-vs-ref: the CPU backend against the reference backend (no GPU involved)\n");
        run_sections(only);
        mama_backend_free(gpu);
        mama_backend_free(ref_be);
        return finish();
    }
    qs = mama_cuda_device_query(&ndev);
    if (qs != MAMA_OK || ndev == 0) {
        const char *why = qs != MAMA_OK ? mama_last_error() : "the CUDA runtime reports 0 devices";
        mama_backend_free(cpu_be); mama_backend_free(ref_be);
        if (must) {
            printf("FAIL gpu_present: MAMA_EXPECT_GPU=1 but no usable GPU: %s\n", why);
            n_fail++;
            return finish();
        }
        printf("SKIP test_cuda: no usable CUDA device (%s); nothing was compared (MAMA_EXPECT_GPU=1 makes this a "
               "failure)\n", why);
        return finish();
    }
    if (mama_cuda_backend_create(&gpu, 0) != MAMA_OK) {
        printf("FAIL cuda_backend_create %s\n", mama_last_error());
        n_fail++;
        mama_backend_free(cpu_be); mama_backend_free(ref_be);
        return finish();
    }
    if (mode && !strcmp(mode, "--timing")) {
        run_timing();
        rc = 0;
    } else {
        printf("# test_cuda: CUDA backend vs the oracles (%d device%s); max_rel_err = max|gpu-ref| / max|ref|\n", ndev,
               ndev == 1 ? "" : "s");
        run_sections(only);
        rc = finish();
    }
    mama_cuda_backend_free(gpu);
    mama_backend_free(cpu_be);
    mama_backend_free(ref_be);
    return rc;
}
