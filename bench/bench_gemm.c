/* bench/bench_gemm.c - GFLOP/s of the CPU backend's gemm on the model's GEMM shapes,
 * optionally against OpenBLAS in the same run.
 *
 * `build/mama bench gemm [--reps=N] [--threads=N] [--kernel=scalar|avx2|avx512]`
 * (this file is #included by the CLI, which provides mama.h), or
 * standalone:
 *
 *   gcc -std=c99 -O2 -fopenmp -I. -DMAMA_BENCH_GEMM_STANDALONE \
 *       -DMAMA_BENCH_OPENBLAS bench/bench_gemm.c -o build/bench_gemm \
 *       -lopenblas -lm
 *   OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=2 ./build/bench_gemm
 *
 * Shapes are (M, N, K) of C[M,N] = A[M,K] B[K,N]: the ViT's qkv / proj /
 * fc1 / fc2 at 1374 tokens, the text tower's logits-like 144 x 7680 x
 * 2560, and 1152 x 768 x 768.  Each is timed in three layouts: NN (B stored
 * K x N), NT (B stored N x K, i.e. y = x W^T as the linear layers call
 * it) and TN (A stored K x M: the weight gradients dW = dY^T X).  Both libraries get the same data and the same thread count; their
 * repetitions are interleaved so that noise from other processes hits both,
 * and each reports the best repetition after a warm-up.  The last line is
 * gemm_min_ratio_vs_openblas=<min over shapes and layouts of mama/OpenBLAS>
 * (nan without OpenBLAS). */
#ifdef MAMA_BENCH_GEMM_STANDALONE
#define MAMA_IMPLEMENTATION
#endif
#include "mama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#ifdef MAMA_BENCH_OPENBLAS
#include <cblas.h>
#endif

static const int bench_gemm_shapes[][3] = {
    {1374, 2304, 768}, {1374, 768, 768}, {1374, 3072, 768}, {1374, 768, 3072},
    {144, 7680, 2560}, {1152, 768, 768}};

static const char *bench_gemm_layout_names[3] = {"NN", "NT", "TN"};

/* Seconds of one call; layout 0 NN, 1 NT (B transposed), 2 TN (A transposed). */
static double bench_gemm_time_mama(mama_backend *be, int layout, int M, int N, int K, const float *A,
                                   const float *B, float *C) {
    int ta = layout == 2, tb = layout == 1;
    double t0 = mama_time_seconds();
    be->gemm(be, ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C, N);
    return mama_time_seconds() - t0;
}

#ifdef MAMA_BENCH_OPENBLAS
static double bench_gemm_time_blas(int layout, int M, int N, int K, const float *A, const float *B,
                                   float *C) {
    int ta = layout == 2, tb = layout == 1;
    double t0 = mama_time_seconds();
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A,
                ta ? M : K, B, tb ? K : N, 0.0f, C, N);
    return mama_time_seconds() - t0;
}
#endif

static int bench_gemm_arg(const char *arg, const char *key, const char **val) {
    size_t n = strlen(key);
    if (strncmp(arg, key, n) == 0 && arg[n] == '=') {
        *val = arg + n + 1;
        return 1;
    }
    return 0;
}

int mama_bench_gemm_main(int argc, char **argv) {
    int reps = 7, threads = mama_num_threads(), s, i, layout;
    double min_ratio = INFINITY;
    const char *val, *kernel = NULL;
    mama_backend *be = NULL;
    float *A = NULL, *B = NULL, *C = NULL, *C2 = NULL;
    size_t max_a = 0, max_b = 0, max_c = 0;
    mama_rng rng;

    /* argv[0] may be the program name (standalone), "gemm", or already the
     * first option (the CLI passes what follows "bench gemm"). */
    for (i = 0; i < argc; i++) {
        if ((i == 0 && argv[i][0] != '-') || strcmp(argv[i], "gemm") == 0) continue;
        if (bench_gemm_arg(argv[i], "--reps", &val)) reps = atoi(val) > 0 ? atoi(val) : reps;
        else if (bench_gemm_arg(argv[i], "--threads", &val)) threads = atoi(val) > 0 ? atoi(val) : threads;
        else if (bench_gemm_arg(argv[i], "--kernel", &val)) kernel = val;
        else {
            fprintf(stderr, "usage: bench gemm [--reps=N] [--threads=N] [--kernel=scalar|avx2|avx512]\n");
            return 1;
        }
    }
    mama_set_num_threads(threads);
    threads = mama_num_threads();
    /* the backend after the thread count: its scratch has one slot per thread */
    if (mama_cpu_backend_create(&be) != MAMA_OK) {
        fprintf(stderr, "bench gemm: %s\n", mama_last_error());
        return 1;
    }
    if (kernel && !mama_cpu_backend_force_kernel(be, kernel)) {
        fprintf(stderr, "bench gemm: kernel '%s' not available here\n", kernel);
        mama_backend_free(be);
        return 1;
    }
#ifdef MAMA_BENCH_OPENBLAS
    openblas_set_num_threads(threads);
#endif

    for (s = 0; s < (int)(sizeof bench_gemm_shapes / sizeof bench_gemm_shapes[0]); s++) {
        size_t M = (size_t)bench_gemm_shapes[s][0], N = (size_t)bench_gemm_shapes[s][1],
               K = (size_t)bench_gemm_shapes[s][2];
        if (M * K > max_a) max_a = M * K;
        if (K * N > max_b) max_b = K * N;
        if (M * N > max_c) max_c = M * N;
    }
    if (mama_alloc((void **)&A, max_a * sizeof(float), "bench A") != MAMA_OK ||
        mama_alloc((void **)&B, max_b * sizeof(float), "bench B") != MAMA_OK ||
        mama_alloc((void **)&C, max_c * sizeof(float), "bench C") != MAMA_OK ||
        mama_alloc((void **)&C2, max_c * sizeof(float), "bench C2") != MAMA_OK) {
        fprintf(stderr, "bench gemm: %s\n", mama_last_error());
        mama_free(A); mama_free(B); mama_free(C); mama_free(C2);
        mama_backend_free(be);
        return 1;
    }
    mama_rng_seed(&rng, 42);
    for (i = 0; i < (int)max_a; i++) A[i] = mama_rng_uniform(&rng) - 0.5f;
    for (i = 0; i < (int)max_b; i++) B[i] = mama_rng_uniform(&rng) - 0.5f;

    printf("# mama gemm kernel: %s, threads: %d, best of %d reps after warm-up\n",
           mama_cpu_backend_kernel_name(be), threads, reps);
#ifdef MAMA_BENCH_OPENBLAS
    {
        const char *ct = getenv("OPENBLAS_CORETYPE");
        printf("# OpenBLAS: %s, core %s (OPENBLAS_CORETYPE=%s), threads: %d\n", openblas_get_config(),
               openblas_get_corename(), ct ? ct : "unset", threads);
    }
#endif
    printf("%-18s %-6s %12s %14s %8s %10s\n", "M x N x K", "layout", "mama GF/s", "openblas GF/s",
           "ratio", "max|diff|");
    for (layout = 0; layout < 3; layout++)
        for (s = 0; s < (int)(sizeof bench_gemm_shapes / sizeof bench_gemm_shapes[0]); s++) {
            int M = bench_gemm_shapes[s][0], N = bench_gemm_shapes[s][1], K = bench_gemm_shapes[s][2];
            double flops = 2.0 * M * N * K, best_m = INFINITY, best_b = INFINITY, diff = 0, t;
            char dims[32];
            int r;
            snprintf(dims, sizeof dims, "%dx%dx%d", M, N, K);
            /* warm-up: page in the buffers, wake the thread pools */
            bench_gemm_time_mama(be, layout, M, N, K, A, B, C);
#ifdef MAMA_BENCH_OPENBLAS
            bench_gemm_time_blas(layout, M, N, K, A, B, C2);
#endif
            for (r = 0; r < reps; r++) {
                t = bench_gemm_time_mama(be, layout, M, N, K, A, B, C);
                if (t < best_m) best_m = t;
#ifdef MAMA_BENCH_OPENBLAS
                t = bench_gemm_time_blas(layout, M, N, K, A, B, C2);
                if (t < best_b) best_b = t;
#endif
            }
#ifdef MAMA_BENCH_OPENBLAS
            for (i = 0; i < M * N; i++)
                if (fabs((double)C[i] - C2[i]) > diff) diff = fabs((double)C[i] - C2[i]);
            if (best_m / best_b < INFINITY && best_b / best_m < min_ratio) min_ratio = best_b / best_m;
            printf("%-18s %-6s %12.1f %14.1f %8.3f %10.2g\n", dims, bench_gemm_layout_names[layout],
                   flops / best_m * 1e-9, flops / best_b * 1e-9, best_b / best_m, diff);
#else
            (void)best_b;
            (void)diff;
            printf("%-18s %-6s %12.1f %14s %8s %10s\n", dims, bench_gemm_layout_names[layout],
                   flops / best_m * 1e-9, "-", "-", "-");
#endif
            fflush(stdout);
        }
    mama_free(A); mama_free(B); mama_free(C); mama_free(C2);
    mama_backend_free(be);
#ifdef MAMA_BENCH_OPENBLAS
    printf("gemm_min_ratio_vs_openblas=%.3f\n", min_ratio);
#else
    (void)min_ratio;
    printf("# not built with -DMAMA_BENCH_OPENBLAS (and -lopenblas): no OpenBLAS to compare against\n");
    printf("gemm_min_ratio_vs_openblas=nan\n");
#endif
    return 0;
}

#ifdef MAMA_BENCH_GEMM_STANDALONE
int main(int argc, char **argv) { return mama_bench_gemm_main(argc, argv); }
#endif
