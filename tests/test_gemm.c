/* tests/test_gemm.c - the CPU backend's gemm / gemm_batched against a naive
 * double-precision triple loop.
 *
 * For every shape (1, primes, non-multiples of the 6x16 / 12x32 tiles, a
 * few larger ones that cross the KC / MC / NC blocks and use threads), all
 * four transpose combinations, leading dimensions larger than the matrix,
 * and three alpha/beta variants:
 *   alpha 1,   beta 0  with C filled with NaN (must be overwritten),
 *   alpha 1,   beta 1  (accumulate),
 *   alpha 0.5, beta -0.75.
 * The error of an element is |C - ref| / (|alpha| sum_k |a_ik b_kj| +
 * |beta c_ij|): a float sum of K products has an error of at most ~K eps
 * of that magnitude (typically sqrt(K) eps), so 2e-5 is loose for K <= 1000
 * and a wrong element gives O(1).  The padding between rows of C (ldc > N)
 * must stay untouched.  Every kernel this CPU runs is tested (forced via
 * mama_cpu_backend_force_kernel), plus the stack fallback used when the
 * instance's slot buffers are busy (same bits as the slots), the batched
 * entry point and the degenerate cases.
 *
 * Build: gcc -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror -fopenmp -I.
 *        tests/test_gemm.c -o build/test_gemm -lm */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include "tests/test_util.h"

#include <stdlib.h>
#include <string.h>

typedef struct { int M, N, K; } shape;

static mama_backend *BE; /* the CPU backend every test uses */

static const shape shapes[] = {
    {1, 1, 1},     {1, 7, 13},     {7, 1, 13},    {13, 7, 1},    {2, 3, 5},
    {6, 16, 64},   {12, 32, 64},   {7, 13, 97},   {97, 13, 7},   {13, 97, 131},
    {131, 97, 13}, {17, 33, 65},   {5, 300, 129}, {37, 41, 43},  {97, 131, 257},
    {64, 64, 64},  {257, 300, 129}, {1, 513, 300}, {300, 1, 513}, {149, 1061, 37},
    {389, 151, 601}, {200, 333, 1000}};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static float urand(mama_rng *r) { return 2.0f * mama_rng_uniform(r) - 1.0f; }

/* element (i, k) of op(X) for X stored with leading dimension ld */
static double at(const float *X, int ld, int trans, int i, int k) {
    return trans ? X[(size_t)k * ld + i] : X[(size_t)i * ld + k];
}

/* One problem: operands with padded leading dimensions, the exact product
 * P = op(A) op(B) and the magnitude |op(A)| |op(B)|, both in double. */
typedef struct {
    int M, N, K, ta, tb, lda, ldb, ldc;
    float *A, *B, *C0, *C;
    double *P, *mag;
} problem;

static void problem_init(problem *p, int M, int N, int K, int ta, int tb, mama_rng *rng) {
    int rows_a = ta ? K : M, cols_a = ta ? M : K, rows_b = tb ? N : K, cols_b = tb ? K : N;
    int i, j, k;
    size_t n;
    p->M = M; p->N = N; p->K = K; p->ta = ta; p->tb = tb;
    p->lda = cols_a + 3; /* leading dimensions larger than the matrix */
    p->ldb = cols_b + 5;
    p->ldc = N + 2;
    p->A = (float *)malloc((size_t)rows_a * p->lda * sizeof(float));
    p->B = (float *)malloc((size_t)rows_b * p->ldb * sizeof(float));
    p->C0 = (float *)malloc((size_t)M * p->ldc * sizeof(float));
    p->C = (float *)malloc((size_t)M * p->ldc * sizeof(float));
    p->P = (double *)malloc((size_t)M * N * sizeof(double));
    p->mag = (double *)malloc((size_t)M * N * sizeof(double));
    for (n = 0; n < (size_t)rows_a * p->lda; n++) p->A[n] = urand(rng);
    for (n = 0; n < (size_t)rows_b * p->ldb; n++) p->B[n] = urand(rng);
    for (n = 0; n < (size_t)M * p->ldc; n++) p->C0[n] = urand(rng);
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double s = 0, m = 0;
            for (k = 0; k < K; k++) {
                double x = at(p->A, p->lda, ta, i, k) * at(p->B, p->ldb, tb, k, j);
                s += x;
                m += fabs(x);
            }
            p->P[(size_t)i * N + j] = s;
            p->mag[(size_t)i * N + j] = m;
        }
}

static void problem_free(problem *p) {
    free(p->A); free(p->B); free(p->C0); free(p->C); free(p->P); free(p->mag);
}

/* Fill C for a run: C0, or NaN when beta == 0 (must be overwritten); the
 * row padding gets a sentinel. */
static void problem_reset(problem *p, float beta) {
    int i, j;
    for (i = 0; i < p->M; i++)
        for (j = 0; j < p->ldc; j++)
            p->C[(size_t)i * p->ldc + j] = j >= p->N ? 12345.0f : beta == 0.0f ? NAN : p->C0[(size_t)i * p->ldc + j];
}

/* Worst scaled error of C against alpha P + beta C0; padding changes count
 * as an infinite error, NaN as NaN (which fails every check). */
static double problem_err(const problem *p, float alpha, float beta) {
    double worst = 0;
    int i, j;
    for (i = 0; i < p->M; i++)
        for (j = 0; j < p->ldc; j++) {
            size_t ic = (size_t)i * p->ldc + j;
            double ref, scale, e;
            if (j >= p->N) {
                if (p->C[ic] != 12345.0f) return INFINITY;
                continue;
            }
            ref = alpha * p->P[(size_t)i * p->N + j] + (beta == 0.0f ? 0.0 : beta * (double)p->C0[ic]);
            scale = fabs(alpha) * p->mag[(size_t)i * p->N + j] + fabs(beta * (double)p->C0[ic]) + 1e-30;
            e = fabs((double)p->C[ic] - ref) / scale;
            if (!(e <= worst)) worst = e;
        }
    return worst;
}

static const float alphas[3] = {1.0f, 1.0f, 0.5f};
static const float betas[3] = {0.0f, 1.0f, -0.75f};
static const char *variant_names[3] = {"alpha=1 beta=0 (C=NaN)", "alpha=1 beta=1", "alpha=0.5 beta=-0.75"};

/* All shapes x transposes x variants for the current kernel; one report
 * per (transposes, variant). */
static void test_kernel(const char *kname, problem *probs, double tol) {
    int t, v, s;
    for (t = 0; t < 4; t++)
        for (v = 0; v < 3; v++) {
            double worst = 0;
            int worst_s = 0;
            char name[96];
            for (s = 0; s < NSHAPES; s++) {
                problem *p = &probs[s * 4 + t];
                double e;
                problem_reset(p, betas[v]);
                BE->gemm(BE, p->ta, p->tb, p->M, p->N, p->K, alphas[v], p->A, p->lda, p->B, p->ldb,
                           betas[v], p->C, p->ldc);
                e = problem_err(p, alphas[v], betas[v]);
                if (!(e <= worst)) { worst = e; worst_s = s; }
            }
            snprintf(name, sizeof name, "gemm_%s_%s%s", kname, t & 1 ? "T" : "N", t & 2 ? "T" : "N");
            test_report(worst <= tol, name, "%s, %d shapes 1x1x1..389x151x601 vs double loop, "
                        "worst err=%g (shape %dx%dx%d)", variant_names[v], NSHAPES, worst,
                        shapes[worst_s].M, shapes[worst_s].N, shapes[worst_s].K);
        }
}

/* The fallback taken when the instance's slot buffers are busy: hold the
 * lock and run every problem through the stack path.  It splits K as the
 * slots do, so it must give the very bits of the slot path. */
static void test_stack_path(const char *kname, problem *probs, double tol) {
    int i, diff = 0, held;
    char name[64];
    double worst = 0;
    const mama__cpu_impl *cx = (const mama__cpu_impl *)BE->impl;
    snprintf(name, sizeof name, "gemm_%s_stack_fallback", kname);
    for (i = 0; i < NSHAPES * 4; i++) {
        problem *p = &probs[i];
        size_t bytes = (size_t)p->M * p->ldc * sizeof(float);
        float *slots = (float *)malloc(bytes);
        double e;
        problem_reset(p, 0.5f);
        BE->gemm(BE, p->ta, p->tb, p->M, p->N, p->K, 1.5f, p->A, p->lda, p->B, p->ldb, 0.5f, p->C, p->ldc);
        memcpy(slots, p->C, bytes);
        /* Without GCC/clang atomics the lock is never taken and every
         * call is on the stack path already. */
        held = mama__gemm_trylock(cx);
        problem_reset(p, 0.5f);
        BE->gemm(BE, p->ta, p->tb, p->M, p->N, p->K, 1.5f, p->A, p->lda, p->B, p->ldb, 0.5f, p->C, p->ldc);
        if (held) mama__gemm_unlock(cx);
        diff += memcmp(slots, p->C, bytes) != 0;
        free(slots);
        e = problem_err(p, 1.5f, 0.5f);
        if (!(e <= worst)) worst = e;
    }
    test_report(worst <= tol && diff == 0, name, "slots busy -> stack buffers, all shapes and "
                "transposes, alpha=1.5 beta=0.5, worst err=%g, %d of %d products differ from the "
                "slot path's bits", worst, diff, NSHAPES * 4);
}

/* Concurrent calls from the caller's own threads (one wins the slots, the
 * others fall back): same answers. */
static void test_concurrent(problem *probs, double tol) {
    double worst = 0;
    int i;
    /* results are per problem, so each iteration owns its C */
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) reduction(max : worst)
#endif
    for (i = 0; i < NSHAPES * 4; i++) {
        problem *p = &probs[i];
        double e;
        problem_reset(p, 0.0f);
        BE->gemm(BE, p->ta, p->tb, p->M, p->N, p->K, 1.0f, p->A, p->lda, p->B, p->ldb, 0.0f, p->C, p->ldc);
        e = problem_err(p, 1.0f, 0.0f);
        if (!(e <= worst)) worst = e != e ? INFINITY : e;
    }
    test_report(worst <= tol, "gemm_concurrent_calls", "BE->gemm from inside an OpenMP parallel "
                "loop (slots busy for all but one thread), worst err=%g", worst);
}

/* Batched: matrices at strides larger than one matrix, batch sizes that use
 * the one-matrix-per-thread path (small) and the per-matrix path (large). */
static void test_batched(mama_rng *rng, double tol) {
    static const int dims[][4] = {{3, 5, 7, 4}, {13, 17, 19, 6}, {33, 65, 31, 5}, {64, 64, 64, 8},
                                  {150, 200, 100, 3}, {1, 1, 1, 3}};
    int d, t;
    for (t = 0; t < 4; t++) {
        double worst = 0;
        char name[64];
        for (d = 0; d < (int)(sizeof dims / sizeof dims[0]); d++) {
            int M = dims[d][0], N = dims[d][1], K = dims[d][2], batch = dims[d][3];
            int ta = t & 1, tb = (t >> 1) & 1;
            int lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
            long long sa = (long long)(ta ? K : M) * lda + 7, sb = (long long)(tb ? N : K) * ldb + 11,
                      sc = (long long)M * ldc + 13;
            float *A = (float *)malloc((size_t)(sa * batch) * sizeof(float));
            float *B = (float *)malloc((size_t)(sb * batch) * sizeof(float));
            float *C = (float *)malloc((size_t)(sc * batch) * sizeof(float));
            float *C0 = (float *)malloc((size_t)(sc * batch) * sizeof(float));
            long long n;
            int b, i, j, k;
            for (n = 0; n < sa * batch; n++) A[n] = urand(rng);
            for (n = 0; n < sb * batch; n++) B[n] = urand(rng);
            for (n = 0; n < sc * batch; n++) C0[n] = C[n] = urand(rng);
            BE->gemm_batched(BE, ta, tb, M, N, K, 0.5f, A, lda, sa, B, ldb, sb, 2.0f, C, ldc, sc, batch);
            for (b = 0; b < batch; b++)
                for (i = 0; i < M; i++)
                    for (j = 0; j < ldc; j++) {
                        size_t ic = (size_t)(b * sc) + (size_t)i * ldc + j;
                        double s = 0, m = 0, e;
                        if (j >= N) {
                            if (C[ic] != C0[ic]) worst = INFINITY;
                            continue;
                        }
                        for (k = 0; k < K; k++) {
                            double x = at(A + b * sa, lda, ta, i, k) * at(B + b * sb, ldb, tb, k, j);
                            s += x;
                            m += fabs(x);
                        }
                        e = fabs(C[ic] - (0.5 * s + 2.0 * C0[ic])) / (0.5 * m + 2.0 * fabs(C0[ic]) + 1e-30);
                        if (!(e <= worst)) worst = e;
                    }
            /* the gaps between matrices are untouched */
            for (b = 0; b < batch; b++)
                for (n = (long long)M * ldc; n < sc; n++)
                    if (C[b * sc + n] != C0[b * sc + n]) worst = INFINITY;
            free(A); free(B); free(C); free(C0);
        }
        snprintf(name, sizeof name, "gemm_batched_%s%s", t & 1 ? "T" : "N", t & 2 ? "T" : "N");
        test_report(worst <= tol, name, "6 batch shapes up to 150x200x100 x3, strides with gaps, "
                    "alpha=0.5 beta=2 vs double loop, worst err=%g", worst);
    }
}

/* K = 0 and alpha = 0 scale C by beta; M or N = 0 touch nothing. */
static void test_degenerate(void) {
    float A[4] = {NAN, NAN, NAN, NAN}, B[4] = {1, 2, 3, 4}, C[4];
    int ok = 1, i;
    for (i = 0; i < 4; i++) C[i] = (float)i + 1;
    BE->gemm(BE, 0, 0, 2, 2, 0, 1.0f, A, 1, B, 2, 2.0f, C, 2); /* K = 0: C = 2C */
    for (i = 0; i < 4; i++) ok &= C[i] == 2.0f * ((float)i + 1);
    BE->gemm(BE, 0, 0, 2, 2, 2, 0.0f, A, 2, B, 2, 0.5f, C, 2); /* alpha = 0 */
    for (i = 0; i < 4; i++) ok &= C[i] == (float)i + 1;
    C[0] = NAN;
    BE->gemm(BE, 0, 0, 2, 2, 2, 0.0f, A, 2, B, 2, 0.0f, C, 2); /* beta = 0 zeroes */
    for (i = 0; i < 4; i++) ok &= C[i] == 0.0f;
    C[0] = 7;
    BE->gemm(BE, 0, 0, 0, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    BE->gemm(BE, 0, 0, 2, 0, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    BE->gemm_batched(BE, 0, 0, 2, 2, 2, 1.0f, A, 2, 4, B, 2, 4, 0.0f, C, 2, 4, 0);
    ok &= C[0] == 7.0f;
    test_report(ok, "gemm_degenerate", "K=0 -> beta*C, alpha=0 ignores NaN A, beta=0 zeroes NaN C, "
                "M=0 / N=0 / batch=0 leave C alone");
}

/* The backend table entry points. */
static void test_backend_adapters(void) {
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[4], Cb[8];
    const double want[4] = {4, 5, 10, 11};
    int ok;
    /* [1 2 3; 4 5 6] x [1 0; 0 1; 1 1] = [4 5; 10 11] */
    mama__cpu_gemm(BE, 0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
    ok = test_max_rel_err(C, want, 4, 1.0) == 0.0;
    mama__cpu_gemm_batched(BE, 0, 0, 2, 2, 3, 1.0f, A, 3, 0, B, 2, 0, 0.0f, Cb, 2, 4, 2);
    ok &= Cb[0] == 4 && Cb[3] == 11 && Cb[4] == 4 && Cb[7] == 11;
    test_report(ok, "gemm_backend_adapters", "mama__cpu_gemm / _batched on a hand-computed 2x3x2 product");
}

int main(void) {
    static const char *kernels[3] = {"scalar", "avx2", "avx512"};
    problem *probs = (problem *)malloc(sizeof(problem) * NSHAPES * 4);
    mama_rng rng;
    double tol = 2e-5;
    int s, t, k;
    if (mama_cpu_backend_create(&BE) != MAMA_OK) {
        fprintf(stderr, "mama_cpu_backend_create: %s\n", mama_last_error());
        return 1;
    }
    mama_rng_seed(&rng, 1234);
    printf("# dispatch picked kernel: %s, threads: %d, backend slots: %d\n", mama_cpu_backend_kernel_name(BE),
           mama_num_threads(), mama_cpu_backend_threads(BE));
    for (s = 0; s < NSHAPES; s++)
        for (t = 0; t < 4; t++)
            problem_init(&probs[s * 4 + t], shapes[s].M, shapes[s].N, shapes[s].K, t & 1, (t >> 1) & 1, &rng);

    for (k = 0; k < 3; k++) {
        if (!mama_cpu_backend_force_kernel(BE, kernels[k])) {
            printf("# kernel %s: not available in this build / on this CPU, skipped\n", kernels[k]);
            continue;
        }
        test_kernel(kernels[k], probs, tol);
        test_stack_path(kernels[k], probs, tol);
    }
    mama_cpu_backend_force_kernel(BE, NULL);
    test_concurrent(probs, tol);
    test_batched(&rng, tol);
    test_degenerate();
    test_backend_adapters();
    test_report(mama_cpu_backend_force_kernel(BE, "nonsense") == 0 && mama_cpu_backend_force_kernel(BE, "auto") == 1,
                "gemm_force_kernel", "unknown kernel names are refused, \"auto\" restores dispatch (%s)",
                mama_cpu_backend_kernel_name(BE));

    for (s = 0; s < NSHAPES * 4; s++) problem_free(&probs[s]);
    free(probs);
    mama_backend_free(BE);
    return test_finish();
}
