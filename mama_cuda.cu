/* mama_cuda.cu - the CUDA backend of mama.h: the same function table
 * (struct mama_backend) filled with device kernels and cuBLAS.
 *
 * ===========================================================================
 *  STATUS (read this first)
 * ===========================================================================
 *  Every op of struct mama_backend is implemented here, so
 *  mama_cuda_backend_create() hands out a complete table.  THIS FILE HAS
 *  ONLY BEEN COMPILED (nvcc 13, -arch=sm_90 and the default arch, no
 *  warnings); IT HAS NEVER RUN ON A GPU.  The machine it was written on has
 *  no GPU.  tests/cuda/test_cuda.c compares every op and a whole tiny
 *  training step with the CPU backend; bench/gpu_check.sh builds, runs that
 *  test and the benchmark on a GPU machine.  Until that has been run, treat
 *  every kernel below as unverified.
 *
 *  What exists:
 *  - memory: cudaMalloc'd buffers, copies on one compute stream; to_host
 *    synchronises; to_device from pinned host memory synchronises too (the
 *    table's contract lets the caller reuse `src` on return).
 *  - GEMM: cuBLAS (cublasGemmStridedBatchedEx), row-major through the
 *    column-major API by swapping the operands.  Precision by flag
 *    (mama_cuda_set_precision): MAMA_CUDA_FP32 (exact FP32, the default and
 *    the path the tests hold to CPU tolerances), MAMA_CUDA_TF32 (TF32 tensor
 *    cores, FP32 accumulation) and MAMA_CUDA_BF16 (cuBLAS's
 *    CUBLAS_COMPUTE_32F_FAST_16BF: FP32 matrices rounded to BF16 inside the
 *    GEMM, FP32 accumulation).  Activations and weights stay FP32 in memory
 *    in every mode: BF16 *storage* of activations is not done (see NOT DONE).
 *  - elementwise: bias, add, accumulate, scale, GELU (erf and tanh forms),
 *    ReLU, dropout (the CPU's hash, bit for bit: the same masks), LayerScale.
 *  - column sums (bias, LayerNorm and LayerScale parameter gradients) over
 *    row slices, then an ordered final pass (deterministic).
 *  - LayerNorm (warp per row, FP32 two-pass statistics like the CPU),
 *    BatchNorm (block per 32 channels, statistics in double like the CPU,
 *    running statistics with the unbiased variance, the negated-rstd eval
 *    convention), L2 normalisation.
 *  - attention: fused forward and backward with no T x T matrix in memory
 *    (online softmax; the backward recomputes P from the saved log-sum-exp),
 *    causal and key-padding masks, attention dropout whose mask is the
 *    CPU's hash at index ((b*H + h)*T + i)*T + j, so CPU and GPU drop the
 *    same weights.  Head dim <= 128: blocks of 32 queries (forward, dQ) or
 *    16-32 keys (dK, dV) share 32-row K/V (Q/dO) tiles in shared memory;
 *    larger heads (up to 256): one warp per query or key.  FP32 on CUDA
 *    cores.  Correctness first: not a tensor-core FlashAttention kernel
 *    (see NOT DONE).
 *  - pooling, embedding (atomic scatter-add: exact for unique ids, order-
 *    dependent last bits for repeated token ids), im2col,
 *    ViT token assembly, cross-entropy, segment max, transpose, diagonal
 *    fill, dot and sum of squares (two-stage double reductions, result to
 *    the host through pinned memory), AdamW (the CPU's exact formula with the
 *    bias corrections computed on the host in double, per-group step counts
 *    handled by the caller as on the CPU), SGD with momentum.
 *  - errors: every launch is followed by cudaGetLastError; void ops record
 *    the first failure in the backend ("sticky"), and the next op that
 *    returns a mama_status (sync, copies, to_host, ...) reports it through
 *    MAMA_FAIL.  The library never exits or aborts.  MAMA_CUDA_DEBUG=1 in
 *    the environment synchronises after every launch, so that a kernel that
 *    faults is named in the message.
 *
 *  NOT DONE (known gaps, in order of their effect on speed):
 *  - tensor-core attention (FlashAttention-2/3 style tiles with mma/wgmma);
 *    the warp-per-row kernels here are memory-bound and will dominate the
 *    step time of the 518 px ViT (T = 1374).
 *  - BF16 storage of activations (the table is float-typed; halving the
 *    activation traffic needs typed buffers in mama.h).
 *  - fused epilogues (bias + GELU in the GEMM through cuBLASLt).
 *  - the pinned, asynchronous batch upload on its own stream (the loader
 *    in mama.h hands host batches to mama_model_step, which uploads them
 *    with to_device; see mama_cuda_host_alloc for the pinned buffers a
 *    loader change would use).
 *  - a handful of host round trips per step in mama.h section 6 (loss
 *    values, the learnable temperatures, their gradients): listed in
 *    README.md, "CUDA backend".
 *
 * Build: `make cuda` (nvcc + cuBLAS); builds build/mama_cuda.o,
 * build/test_cuda and build/mama with --device cuda.
 *
 * Row-major GEMM through column-major cuBLAS: a row-major C = A B is the
 * column-major C^T = B^T A^T, so we call cuBLAS with the operands swapped
 * and the same transpose flags. */
#include "mama.h"

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mama_cuda_impl {
    int device;
    int precision;            /* MAMA_CUDA_FP32 / TF32 / BF16 */
    cudaStream_t stream;      /* every op runs here, in order */
    cublasHandle_t blas;
    int debug_sync;           /* MAMA_CUDA_DEBUG=1: synchronise after every launch */
    mama_status err;          /* first recorded failure of a void op */
    char err_msg[512];
    double *red;              /* [MAMA__CU_RED_BLOCKS + 1] partial sums */
    double *red_host;         /* pinned: the reduction's result */
    float *scratch;           /* attention backward: D_i = dO_i . O_i */
    size_t scratch_bytes;
    float *colbuf;            /* column sums: per-row-slice partial sums */
    size_t colbuf_bytes;
    float *scal;              /* device [2]: gemm_exp_alpha's alpha and beta (pointer mode device) */
};

#define MAMA__CU_RED_BLOCKS 256
#define MAMA__CU_THREADS 256
#define MAMA__CU_FULL 0xffffffffu

/* ---- errors ----------------------------------------------------------- */

static mama_cuda_impl *cu_impl(mama_backend *be) { return (mama_cuda_impl *)be->impl; }

/* remember the first failure of a void op; reported by the next status op */
static void cu_note(mama_cuda_impl *c, cudaError_t e, const char *what) {
    if (e == cudaSuccess || c->err != MAMA_OK) return;
    c->err = MAMA_ERR_BACKEND;
    snprintf(c->err_msg, sizeof c->err_msg, "cuda: %s: %s", what, cudaGetErrorString(e));
}
static void cu_note_blas(mama_cuda_impl *c, cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS || c->err != MAMA_OK) return;
    c->err = MAMA_ERR_BACKEND;
    snprintf(c->err_msg, sizeof c->err_msg, "cublas: %s failed with status %d", what, (int)s);
}
/* after every kernel launch; with MAMA_CUDA_DEBUG=1 in the environment also
 * wait for the kernel, so that an execution fault names its kernel */
static void cu_launched(mama_cuda_impl *c, const char *name) {
    cu_note(c, cudaGetLastError(), name);
    if (c->debug_sync) cu_note(c, cudaStreamSynchronize(c->stream), name);
}
#define CU_LAUNCHED(c, name) cu_launched((c), "kernel " name)

static mama_status cu_check(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return MAMA_OK;
    return MAMA_FAIL(MAMA_ERR_BACKEND, "cuda: %s: %s", what, cudaGetErrorString(e));
}
/* report (once) a failure recorded by a void op */
static mama_status cu_pending(mama_cuda_impl *c) {
    if (c->err == MAMA_OK) return MAMA_OK;
    {
        mama_status s = MAMA_FAIL(c->err, "%s (recorded by an earlier op)", c->err_msg);
        c->err = MAMA_OK;
        return s;
    }
}

static unsigned cu_grid(size_t n, int threads) {
    size_t g = (n + (size_t)threads - 1) / (size_t)threads;
    if (g < 1) g = 1;
    if (g > (1u << 20)) g = 1u << 20; /* kernels use grid-stride loops */
    return (unsigned)g;
}
#define CU_FOR(i, n) for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---- device helpers ---------------------------------------------------- */

/* mama_hash_uniform, bit for bit (splitmix64 of seed ^ index * constant) */
__device__ __forceinline__ float d_hash_uniform(uint64_t seed, uint64_t index) {
    uint64_t z = (seed ^ (index * 0xD1B54A32D192ED03ull)) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}
__device__ __forceinline__ float d_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MAMA__CU_FULL, v, o);
    return v;
}
__device__ __forceinline__ double d_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MAMA__CU_FULL, v, o);
    return v;
}
__device__ __forceinline__ float d_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(MAMA__CU_FULL, v, o));
    return v;
}

/* ---- memory ------------------------------------------------------------ */

static mama_status cuda_alloc(mama_backend *be, void **ptr, size_t bytes) {
    mama_status s;
    *ptr = NULL;
    s = cu_check(cudaMalloc(ptr, bytes ? bytes : 1), "cudaMalloc");
    if (s != MAMA_OK) {
        *ptr = NULL;
        cudaGetLastError(); /* an out-of-memory is not sticky: clear it */
        return MAMA_FAIL(MAMA_ERR_NOMEM, "cuda: cudaMalloc of %zu bytes failed (%s)", bytes, mama_last_error());
    }
    (void)be;
    return MAMA_OK;
}
static void cuda_free(mama_backend *be, void *ptr) {
    if (ptr) cu_note(cu_impl(be), cudaFree(ptr), "cudaFree");
}
/* The synchronous upload: the caller may reuse src at once (pinned or
 * pageable), and every op queued before it has run: a host
 * synchronisation (counted, mama.h 1.5).  The step's uploads take
 * to_device_async instead. */
static mama_status cuda_to_device(mama_backend *be, void *dst, const void *src, size_t bytes) {
    mama_cuda_impl *c = cu_impl(be);
    be->host_syncs++;
    MAMA_TRY(cu_pending(c));
    if (bytes) MAMA_TRY(cu_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload"));
    return cu_check(cudaStreamSynchronize(c->stream), "upload sync");
}
/* from pinned memory (host_alloc), queued: no wait */
static mama_status cuda_to_device_async(mama_backend *be, void *dst, const void *src, size_t bytes) {
    mama_cuda_impl *c = cu_impl(be);
    MAMA_TRY(cu_pending(c));
    if (!bytes) return MAMA_OK;
    return cu_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "async upload");
}
static mama_status cuda_host_alloc(mama_backend *be, void **ptr, size_t bytes) {
    (void)be;
    return mama_cuda_host_alloc(ptr, bytes);
}
static void cuda_host_free(mama_backend *be, void *ptr) {
    (void)be;
    mama_cuda_host_free(ptr);
}
static void *cuda_stream(mama_backend *be) { return (void *)cu_impl(be)->stream; }
static mama_status cuda_to_host(mama_backend *be, void *dst, const void *src, size_t bytes) {
    mama_cuda_impl *c = cu_impl(be);
    be->host_syncs++;
    MAMA_TRY(cu_pending(c));
    if (bytes) MAMA_TRY(cu_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download"));
    MAMA_TRY(cu_check(cudaStreamSynchronize(c->stream), "download sync"));
    return cu_pending(c);
}
static mama_status cuda_copy(mama_backend *be, void *dst, const void *src, size_t bytes) {
    mama_cuda_impl *c = cu_impl(be);
    MAMA_TRY(cu_pending(c));
    if (!bytes || dst == src) return MAMA_OK;
    return cu_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream), "device copy");
}
static mama_status cuda_zero(mama_backend *be, void *dst, size_t bytes) {
    mama_cuda_impl *c = cu_impl(be);
    MAMA_TRY(cu_pending(c));
    if (!bytes) return MAMA_OK;
    return cu_check(cudaMemsetAsync(dst, 0, bytes, c->stream), "cudaMemsetAsync");
}
static mama_status cuda_sync(mama_backend *be) {
    mama_cuda_impl *c = cu_impl(be);
    be->host_syncs++;
    MAMA_TRY(cu_check(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize"));
    return cu_pending(c);
}

/* ---- GEMM -------------------------------------------------------------- */

/* C = beta * C for the degenerate K == 0 product (rows M, cols N, stride ldc) */
__global__ void k_scale_matrix(float *C, int M, int N, int ldc, long long sc, int batch, float beta) {
    size_t total = (size_t)M * N * batch;
    CU_FOR(i, total) {
        size_t b = i / ((size_t)M * N), r = (i / N) % M, cc = i % N;
        float *p = C + b * sc + r * (size_t)ldc + cc;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
}

/* alpha and beta are host pointers, or device pointers when `dev` (cuBLAS
 * pointer mode device; beta is then 0 or 1, see gemm_exp_alpha) */
static void cu_gemm(mama_cuda_impl *c, int ta, int tb, int M, int N, int K, const float *alpha, const float *A,
                    int lda, long long sa, const float *B, int ldb, long long sb, const float *beta, float *C,
                    int ldc, long long sc, int batch, int dev, float host_beta) {
    cublasComputeType_t ct = c->precision == MAMA_CUDA_BF16   ? CUBLAS_COMPUTE_32F_FAST_16BF
                             : c->precision == MAMA_CUDA_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                              : CUBLAS_COMPUTE_32F;
    if (M <= 0 || N <= 0 || batch <= 0) return;
    if (K <= 0) {
        k_scale_matrix<<<cu_grid((size_t)M * N * batch, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(
            C, M, N, ldc, sc, batch, host_beta);
        CU_LAUNCHED(c, "gemm (K = 0)");
        return;
    }
    if (dev) cu_note_blas(c, cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_DEVICE), "pointer mode");
    /* row-major C[M,N] = op(A) op(B)  <=>  column-major C^T[N,M] = op(B)^T op(A)^T */
    cu_note_blas(c,
                 cublasGemmStridedBatchedEx(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                                            M, K, alpha, B, CUDA_R_32F, ldb, sb, A, CUDA_R_32F, lda, sa, beta, C,
                                            CUDA_R_32F, ldc, sc, batch, ct, CUBLAS_GEMM_DEFAULT),
                 "gemm");
    if (dev) cu_note_blas(c, cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST), "pointer mode");
}
static void cuda_gemm_batched(mama_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                              int lda, long long sa, const float *B, int ldb, long long sb, float beta, float *C,
                              int ldc, long long sc, int batch) {
    cu_gemm(cu_impl(be), ta, tb, M, N, K, &alpha, A, lda, sa, B, ldb, sb, &beta, C, ldc, sc, batch, 0, beta);
}
static void cuda_gemm(mama_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    cuda_gemm_batched(be, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
/* alpha = expf(log_alpha[0]) read on the device: a one-thread kernel writes
 * alpha and beta into c->scal, cuBLAS reads them there (stream order keeps
 * successive calls apart) */
__global__ void k_exp_alpha(float *scal, const float *log_alpha, float beta) {
    scal[0] = expf(log_alpha[0]);
    scal[1] = beta;
}
static void cuda_gemm_exp_alpha(mama_backend *be, int ta, int tb, int M, int N, int K, const float *log_alpha,
                                const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    mama_cuda_impl *c = cu_impl(be);
    if (M <= 0 || N <= 0) return;
    k_exp_alpha<<<1, 1, 0, c->stream>>>(c->scal, log_alpha, beta);
    CU_LAUNCHED(c, "gemm_exp_alpha");
    cu_gemm(c, ta, tb, M, N, K, c->scal, A, lda, 0, B, ldb, 0, c->scal + 1, C, ldc, 0, 1, 1, beta);
}

/* ---- elementwise ------------------------------------------------------- */

__global__ void k_bias_add(float *y, const float *b, size_t rows, int cols) {
    CU_FOR(i, rows * (size_t)cols) y[i] += b[i % (size_t)cols];
}

/* Column sums out[c] += sum_r f(r, c) (two outputs at once, either may be
 * NULL).  Block (32, 8): 32 columns, 8 row lanes; float accumulation in row
 * order per lane, like the CPU's chunked loops (not bit-identical). */
struct f_bias { const float *dy; int cols;
    __device__ float2 operator()(size_t r, int c) const { return make_float2(dy[r * cols + c], 0.0f); } };
struct f_layerscale { const float *dy, *x; int cols;
    __device__ float2 operator()(size_t r, int c) const { return make_float2(dy[r * cols + c] * x[r * cols + c], 0.0f); } };
struct f_layernorm { const float *dy, *x, *mean, *rstd; int cols;
    __device__ float2 operator()(size_t r, int c) const {
        float d = dy[r * cols + c];
        return make_float2(d * (x[r * cols + c] - mean[r]) * rstd[r], d);
    } };
template <class F>
__global__ void k_colsum2(float *out0, float *out1, int rows, int cols, F f) {
    __shared__ float s0[8][33], s1[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float a0 = 0.0f, a1 = 0.0f;
    if (c < cols)
        for (int r = threadIdx.y; r < rows; r += 8) {
            float2 v = f((size_t)r, c);
            a0 += v.x;
            a1 += v.y;
        }
    s0[threadIdx.y][threadIdx.x] = a0;
    s1[threadIdx.y][threadIdx.x] = a1;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t0 = 0.0f, t1 = 0.0f;
        for (int k = 0; k < 8; k++) { t0 += s0[k][threadIdx.x]; t1 += s1[k][threadIdx.x]; }
        if (out0) out0[c] += t0;
        if (out1) out1[c] += t1;
    }
}
/* Partial column sums over row slices (grid.y), then one pass that adds the
 * slices in order: deterministic, and parallel over rows as well as
 * columns (the ViT's 22k rows x 768 columns would leave most SMs idle). */
template <class F>
__global__ void k_colsum2_part(float *part, int rows, int cols, int slice, F f) {
    __shared__ float s0[8][33], s1[8][33];
    int c = blockIdx.x * 32 + threadIdx.x, r0 = blockIdx.y * slice, r1 = r0 + slice < rows ? r0 + slice : rows;
    float a0 = 0.0f, a1 = 0.0f;
    if (c < cols)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            float2 v = f((size_t)r, c);
            a0 += v.x;
            a1 += v.y;
        }
    s0[threadIdx.y][threadIdx.x] = a0;
    s1[threadIdx.y][threadIdx.x] = a1;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t0 = 0.0f, t1 = 0.0f;
        for (int k = 0; k < 8; k++) { t0 += s0[k][threadIdx.x]; t1 += s1[k][threadIdx.x]; }
        part[((size_t)blockIdx.y * cols + c) * 2] = t0;
        part[((size_t)blockIdx.y * cols + c) * 2 + 1] = t1;
    }
}
__global__ void k_colsum2_final(float *out0, float *out1, const float *part, int nslice, int cols) {
    CU_FOR(c, (size_t)cols) {
        float t0 = 0.0f, t1 = 0.0f;
        for (int k = 0; k < nslice; k++) {
            t0 += part[((size_t)k * cols + c) * 2];
            t1 += part[((size_t)k * cols + c) * 2 + 1];
        }
        if (out0) out0[c] += t0;
        if (out1) out1[c] += t1;
    }
}
/* the column-sum scratch, grown on first use of a shape */
static float *cu_colbuf(mama_cuda_impl *c, size_t bytes) {
    if (c->colbuf_bytes >= bytes) return c->colbuf;
    if (c->colbuf) {
        cudaStreamSynchronize(c->stream);
        cudaFree(c->colbuf);
    }
    c->colbuf = NULL;
    c->colbuf_bytes = 0;
    if (cudaMalloc((void **)&c->colbuf, bytes) != cudaSuccess) {
        cudaGetLastError();
        c->colbuf = NULL;
        return NULL; /* the caller falls back to the one-pass kernel */
    }
    c->colbuf_bytes = bytes;
    return c->colbuf;
}
template <class F>
static void cu_colsum2(mama_cuda_impl *c, float *out0, float *out1, int rows, int cols, F f, const char *name) {
    int nslice = rows / 512, slice;
    float *part;
    if (rows <= 0 || cols <= 0 || (!out0 && !out1)) return;
    if (nslice > 64) nslice = 64;
    part = nslice >= 2 ? cu_colbuf(c, sizeof(float) * 2 * (size_t)nslice * cols) : NULL;
    if (!part) {
        k_colsum2<<<(cols + 31) / 32, dim3(32, 8), 0, c->stream>>>(out0, out1, rows, cols, f);
        cu_launched(c, name);
        return;
    }
    slice = (rows + nslice - 1) / nslice;
    k_colsum2_part<<<dim3((unsigned)(cols + 31) / 32, (unsigned)nslice), dim3(32, 8), 0, c->stream>>>(part, rows, cols,
                                                                                                     slice, f);
    cu_launched(c, name);
    k_colsum2_final<<<cu_grid((size_t)cols, 128), 128, 0, c->stream>>>(out0, out1, part, nslice, cols);
    cu_launched(c, name);
}

static void cuda_bias_add_forward(mama_backend *be, float *y, const float *b, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    size_t n = (size_t)rows * cols;
    if (!n) return;
    k_bias_add<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, b, (size_t)rows, cols);
    CU_LAUNCHED(c, "bias_add_forward");
}
static void cuda_bias_add_backward(mama_backend *be, float *db, const float *dy, int rows, int cols) {
    f_bias f = {dy, cols};
    cu_colsum2(cu_impl(be), db, (float *)NULL, rows, cols, f, "kernel bias_add_backward");
}

__global__ void k_add(float *y, const float *a, const float *b, size_t n) { CU_FOR(i, n) y[i] = a[i] + b[i]; }
__global__ void k_accumulate(float *y, const float *x, float alpha, size_t n) { CU_FOR(i, n) y[i] += alpha * x[i]; }
__global__ void k_scale(float *y, float s, size_t n) { CU_FOR(i, n) y[i] *= s; }

static void cuda_add(mama_backend *be, float *y, const float *a, const float *b, size_t n) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_add<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, a, b, n);
    CU_LAUNCHED(c, "add");
}
static void cuda_accumulate(mama_backend *be, float *y, const float *x, float alpha, size_t n) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_accumulate<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, x, alpha, n);
    CU_LAUNCHED(c, "accumulate");
}
static void cuda_scale(mama_backend *be, float *y, float s, size_t n) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_scale<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, s, n);
    CU_LAUNCHED(c, "scale");
}
__global__ void k_scale_exp(float *y, const float *log_s, size_t n) {
    float s = expf(log_s[0]);
    CU_FOR(i, n) y[i] *= s;
}
static void cuda_scale_exp(mama_backend *be, float *y, const float *log_s, size_t n) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_scale_exp<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, log_s, n);
    CU_LAUNCHED(c, "scale_exp");
}

#define MAMA__CU_SQRT1_2 0.70710678118654752440f
#define MAMA__CU_SQRT_2_OVER_PI 0.79788456080286535588f
#define MAMA__CU_INV_SQRT_2PI 0.39894228040143267794f
#define MAMA__CU_GELU_C 0.044715f

__global__ void k_gelu_fwd(float *y, const float *x, size_t n, int tanh_approx) {
    CU_FOR(i, n) {
        float v = x[i];
        if (tanh_approx) y[i] = 0.5f * v * (1.0f + tanhf(MAMA__CU_SQRT_2_OVER_PI * (v + MAMA__CU_GELU_C * v * v * v)));
        else y[i] = 0.5f * v * (1.0f + erff(v * MAMA__CU_SQRT1_2));
    }
}
__global__ void k_gelu_bwd(float *dx, const float *dy, const float *x, size_t n, int tanh_approx) {
    CU_FOR(i, n) {
        float v = x[i], d;
        if (tanh_approx) {
            float v2 = v * v, t = tanhf(MAMA__CU_SQRT_2_OVER_PI * (v + MAMA__CU_GELU_C * v2 * v));
            float du = MAMA__CU_SQRT_2_OVER_PI * (1.0f + 3.0f * MAMA__CU_GELU_C * v2);
            d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
        } else {
            d = 0.5f * (1.0f + erff(v * MAMA__CU_SQRT1_2)) + v * MAMA__CU_INV_SQRT_2PI * expf(-0.5f * v * v);
        }
        dx[i] += dy[i] * d;
    }
}
static void cuda_gelu_forward(mama_backend *be, float *y, const float *x, size_t n, int tanh_approx) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_gelu_fwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, x, n, tanh_approx);
    CU_LAUNCHED(c, "gelu_forward");
}
static void cuda_gelu_backward(mama_backend *be, float *dx, const float *dy, const float *x, size_t n, int tanh_approx) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_gelu_bwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dx, dy, x, n, tanh_approx);
    CU_LAUNCHED(c, "gelu_backward");
}

__global__ void k_relu_fwd(float *y, const float *x, size_t n) { CU_FOR(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f; }
__global__ void k_relu_bwd(float *dx, const float *dy, const float *y, size_t n) {
    CU_FOR(i, n) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}
static void cuda_relu_forward(mama_backend *be, float *y, const float *x, size_t n) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_relu_fwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, x, n);
    CU_LAUNCHED(c, "relu_forward");
}
static void cuda_relu_backward(mama_backend *be, float *dx, const float *dy, const float *y, size_t n) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_relu_bwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dx, dy, y, n);
    CU_LAUNCHED(c, "relu_backward");
}

/* inverted dropout with the CPU's mask: keep i iff hash(seed, i) >= p */
__global__ void k_dropout_fwd(float *y, const float *x, size_t n, float p, float s, uint64_t seed) {
    CU_FOR(i, n) y[i] = d_hash_uniform(seed, (uint64_t)i) >= p ? x[i] * s : 0.0f;
}
__global__ void k_dropout_bwd(float *dx, const float *dy, size_t n, float p, float s, uint64_t seed) {
    CU_FOR(i, n) if (d_hash_uniform(seed, (uint64_t)i) >= p) dx[i] += dy[i] * s;
}
static void cuda_dropout_forward(mama_backend *be, float *y, const float *x, size_t n, float p, uint64_t seed) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    if (p <= 0.0f) {
        if (y != x) cu_note(c, cudaMemcpyAsync(y, x, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream), "dropout copy");
        return;
    }
    if (p >= 1.0f) {
        cu_note(c, cudaMemsetAsync(y, 0, n * sizeof(float), c->stream), "dropout zero");
        return;
    }
    k_dropout_fwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, x, n, p, 1.0f / (1.0f - p), seed);
    CU_LAUNCHED(c, "dropout_forward");
}
static void cuda_dropout_backward(mama_backend *be, float *dx, const float *dy, size_t n, float p, uint64_t seed) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n || p >= 1.0f) return;
    if (p <= 0.0f) {
        k_accumulate<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dx, dy, 1.0f, n);
        CU_LAUNCHED(c, "dropout_backward (p = 0)");
        return;
    }
    k_dropout_bwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dx, dy, n, p, 1.0f / (1.0f - p), seed);
    CU_LAUNCHED(c, "dropout_backward");
}

__global__ void k_layerscale_fwd(float *y, const float *x, const float *g, size_t rows, int cols) {
    CU_FOR(i, rows * (size_t)cols) y[i] = x[i] * g[i % (size_t)cols];
}
__global__ void k_layerscale_bwd_dx(float *dx, const float *dy, const float *g, size_t rows, int cols) {
    CU_FOR(i, rows * (size_t)cols) dx[i] += dy[i] * g[i % (size_t)cols];
}
static void cuda_layerscale_forward(mama_backend *be, float *y, const float *x, const float *gamma, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    size_t n = (size_t)rows * cols;
    if (!n) return;
    k_layerscale_fwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, x, gamma, (size_t)rows, cols);
    CU_LAUNCHED(c, "layerscale_forward");
}
static void cuda_layerscale_backward(mama_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                                     const float *gamma, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    size_t n = (size_t)rows * cols;
    if (!n) return;
    if (dx) {
        k_layerscale_bwd_dx<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dx, dy, gamma,
                                                                                             (size_t)rows, cols);
        CU_LAUNCHED(c, "layerscale_backward");
    }
    if (dgamma) {
        f_layerscale f = {dy, x, cols};
        cu_colsum2(c, dgamma, (float *)NULL, rows, cols, f, "kernel layerscale_backward (dgamma)");
    }
}

/* ---- normalisation ----------------------------------------------------- */

#define MAMA__CU_WARPS 8 /* warps per block in the warp-per-row kernels */

/* LayerNorm, one warp per row: mean, then the squared deviations (two
 * passes over the row, as the CPU), y = (x - m) rstd w + b. */
__global__ void k_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                                int rows, int cols, float eps) {
    int row = blockIdx.x * MAMA__CU_WARPS + threadIdx.x / 32, lane = threadIdx.x & 31, c;
    const float *xr;
    float *yr, m = 0.0f, v = 0.0f, rs;
    if (row >= rows) return;
    xr = x + (size_t)row * cols;
    yr = y + (size_t)row * cols;
    for (c = lane; c < cols; c += 32) m += xr[c];
    m = d_warp_sum(m) / (float)cols;
    for (c = lane; c < cols; c += 32) {
        float d = xr[c] - m;
        v += d * d;
    }
    v = d_warp_sum(v) / (float)cols;
    rs = 1.0f / sqrtf(v + eps);
    for (c = lane; c < cols; c += 32) yr[c] = (xr[c] - m) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = rs;
    }
}
/* dx += rstd (g - mean(g) - xhat mean(g xhat)), g = dy w */
__global__ void k_layernorm_bwd_dx(float *dx, const float *dy, const float *x, const float *w, const float *mean,
                                   const float *rstd, int rows, int cols) {
    int row = blockIdx.x * MAMA__CU_WARPS + threadIdx.x / 32, lane = threadIdx.x & 31, c;
    const float *xr, *d;
    float *o, m, rs, gm = 0.0f, gxm = 0.0f;
    if (row >= rows) return;
    xr = x + (size_t)row * cols;
    d = dy + (size_t)row * cols;
    o = dx + (size_t)row * cols;
    m = mean[row];
    rs = rstd[row];
    for (c = lane; c < cols; c += 32) {
        float g = d[c] * (w ? w[c] : 1.0f);
        gm += g;
        gxm += g * (xr[c] - m) * rs;
    }
    gm = d_warp_sum(gm) / (float)cols;
    gxm = d_warp_sum(gxm) / (float)cols;
    for (c = lane; c < cols; c += 32) o[c] += rs * (d[c] * (w ? w[c] : 1.0f) - gm - (xr[c] - m) * rs * gxm);
}
static unsigned cu_row_blocks(int rows) { return (unsigned)((rows + MAMA__CU_WARPS - 1) / MAMA__CU_WARPS); }

static void cuda_layernorm_forward(mama_backend *be, float *y, float *mean, float *rstd, const float *x, const float *w,
                                   const float *b, int rows, int cols, float eps) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    k_layernorm_fwd<<<cu_row_blocks(rows), 32 * MAMA__CU_WARPS, 0, c->stream>>>(y, mean, rstd, x, w, b, rows, cols, eps);
    CU_LAUNCHED(c, "layernorm_forward");
}
static void cuda_layernorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                                    const float *w, const float *mean, const float *rstd, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    if (dx) {
        k_layernorm_bwd_dx<<<cu_row_blocks(rows), 32 * MAMA__CU_WARPS, 0, c->stream>>>(dx, dy, x, w, mean, rstd, rows,
                                                                                       cols);
        CU_LAUNCHED(c, "layernorm_backward");
    }
    if (dw || db) {
        f_layernorm f = {dy, x, mean, rstd, cols};
        cu_colsum2(c, dw, db, rows, cols, f, "kernel layernorm_backward (dw, db)");
    }
}

/* BatchNorm forward: one block per 32 channels (32 x 8 threads).  Batch
 * statistics in double, two passes, like the CPU; running statistics with
 * the unbiased variance; rstd stored negated in eval mode. */
__global__ void k_batchnorm_fwd(float *y, float *mean, float *rstd, float *rmean, float *rvar, const float *x,
                                const float *w, const float *b, int rows, int cols, float eps, float momentum, int train,
                                int use_batch) {
    __shared__ double red[8][33];
    __shared__ double smean[32];
    __shared__ float ssc[32], ssh[32];
    int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * 32 + tx, r, k;
    int ok = c < cols;
    float mu = 0.0f, rs = 0.0f;
    if (use_batch) {
        double s = 0.0, q = 0.0;
        if (ok)
            for (r = ty; r < rows; r += 8) s += x[(size_t)r * cols + c];
        red[ty][tx] = s;
        __syncthreads();
        if (ty == 0) {
            double t = 0.0;
            for (k = 0; k < 8; k++) t += red[k][tx];
            smean[tx] = t / rows;
        }
        __syncthreads();
        if (ok)
            for (r = ty; r < rows; r += 8) {
                double d = x[(size_t)r * cols + c] - smean[tx];
                q += d * d;
            }
        __syncthreads(); /* red is reused */
        red[ty][tx] = q;
        __syncthreads();
        if (ty == 0 && ok) {
            double t = 0.0, var;
            for (k = 0; k < 8; k++) t += red[k][tx];
            var = t / rows;
            mu = (float)smean[tx];
            rs = (float)(1.0 / sqrt(var + eps));
            if (train && rmean && rvar) {
                double unb = rows > 1 ? t / (rows - 1) : var;
                rmean[c] = (float)((1.0 - momentum) * rmean[c] + momentum * smean[tx]);
                rvar[c] = (float)((1.0 - momentum) * rvar[c] + momentum * unb);
            }
        }
    } else if (ty == 0 && ok) {
        mu = rmean[c];
        rs = (float)(1.0 / sqrt((double)rvar[c] + eps));
    }
    if (ty == 0 && ok) {
        float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f;
        ssc[tx] = rs * wc;
        ssh[tx] = bc - mu * ssc[tx];
        if (mean) mean[c] = mu;
        if (rstd) rstd[c] = train ? rs : -rs;
    }
    __syncthreads();
    if (ok)
        for (r = ty; r < rows; r += 8) y[(size_t)r * cols + c] = x[(size_t)r * cols + c] * ssc[tx] + ssh[tx];
}
/* BatchNorm backward (train: through the batch statistics; eval, rstd < 0:
 * constants).  Sums in double like the CPU. */
__global__ void k_batchnorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                                const float *mean, const float *rstd, int rows, int cols) {
    __shared__ double r0[8][33], r1[8][33];
    __shared__ float sk1[32], sk2[32], swr[32];
    int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * 32 + tx, r, k, ok = c < cols;
    float mu = ok ? mean[c] : 0.0f, rsv = ok ? rstd[c] : 0.0f;
    int ev = rsv < 0.0f;
    float rs = ev ? -rsv : rsv;
    double sd = 0.0, sdx = 0.0;
    if (ok)
        for (r = ty; r < rows; r += 8) {
            float d = dy[(size_t)r * cols + c];
            sd += d;
            sdx += (double)d * ((x[(size_t)r * cols + c] - mu) * rs);
        }
    r0[ty][tx] = sd;
    r1[ty][tx] = sdx;
    __syncthreads();
    if (ty == 0 && ok) {
        double t0 = 0.0, t1 = 0.0;
        for (k = 0; k < 8; k++) { t0 += r0[k][tx]; t1 += r1[k][tx]; }
        if (dw) dw[c] += (float)t1;
        if (db) db[c] += (float)t0;
        swr[tx] = (w ? w[c] : 1.0f) * rs;
        sk1[tx] = ev ? 0.0f : (float)(t0 / rows);
        sk2[tx] = ev ? 0.0f : (float)(t1 / rows);
    }
    __syncthreads();
    if (dx && ok)
        for (r = ty; r < rows; r += 8) {
            size_t i = (size_t)r * cols + c;
            dx[i] += swr[tx] * (dy[i] - sk1[tx] - (x[i] - mu) * rs * sk2[tx]);
        }
}
static void cuda_batchnorm_forward(mama_backend *be, float *y, float *mean, float *rstd, float *running_mean,
                                   float *running_var, const float *x, const float *w, const float *b, int rows,
                                   int cols, float eps, float momentum, int train) {
    mama_cuda_impl *c = cu_impl(be);
    int use_batch = train || !running_mean || !running_var;
    if (rows <= 0 || cols <= 0) return;
    k_batchnorm_fwd<<<(cols + 31) / 32, dim3(32, 8), 0, c->stream>>>(y, mean, rstd, running_mean, running_var, x, w, b,
                                                                      rows, cols, eps, momentum, train, use_batch);
    CU_LAUNCHED(c, "batchnorm_forward");
}
static void cuda_batchnorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                                    const float *w, const float *mean, const float *rstd, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    k_batchnorm_bwd<<<(cols + 31) / 32, dim3(32, 8), 0, c->stream>>>(dx, dw, db, dy, x, w, mean, rstd, rows, cols);
    CU_LAUNCHED(c, "batchnorm_backward");
}

#define MAMA__CU_L2_EPS 1e-12f
__global__ void k_l2norm_fwd(float *y, float *norm, const float *x, int rows, int cols) {
    int row = blockIdx.x * MAMA__CU_WARPS + threadIdx.x / 32, lane = threadIdx.x & 31, c;
    float s = 0.0f, n, inv;
    if (row >= rows) return;
    for (c = lane; c < cols; c += 32) s += x[(size_t)row * cols + c] * x[(size_t)row * cols + c];
    n = sqrtf(d_warp_sum(s));
    inv = 1.0f / (n > MAMA__CU_L2_EPS ? n : MAMA__CU_L2_EPS);
    for (c = lane; c < cols; c += 32) y[(size_t)row * cols + c] = x[(size_t)row * cols + c] * inv;
    if (lane == 0 && norm) norm[row] = n;
}
__global__ void k_l2norm_bwd(float *dx, const float *dy, const float *y, const float *norm, int rows, int cols) {
    int row = blockIdx.x * MAMA__CU_WARPS + threadIdx.x / 32, lane = threadIdx.x & 31, c;
    float n, dot = 0.0f, inv;
    const float *d, *yr;
    if (row >= rows) return;
    d = dy + (size_t)row * cols;
    yr = y + (size_t)row * cols;
    n = norm[row];
    if (n > MAMA__CU_L2_EPS) {
        for (c = lane; c < cols; c += 32) dot += d[c] * yr[c];
        dot = d_warp_sum(dot);
        inv = 1.0f / n;
    } else {
        inv = 1.0f / MAMA__CU_L2_EPS;
    }
    for (c = lane; c < cols; c += 32) dx[(size_t)row * cols + c] += (d[c] - yr[c] * dot) * inv;
}
static void cuda_l2norm_forward(mama_backend *be, float *y, float *norm, const float *x, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    k_l2norm_fwd<<<cu_row_blocks(rows), 32 * MAMA__CU_WARPS, 0, c->stream>>>(y, norm, x, rows, cols);
    CU_LAUNCHED(c, "l2norm_forward");
}
static void cuda_l2norm_backward(mama_backend *be, float *dx, const float *dy, const float *y, const float *norm,
                                 int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    k_l2norm_bwd<<<cu_row_blocks(rows), 32 * MAMA__CU_WARPS, 0, c->stream>>>(dx, dy, y, norm, rows, cols);
    CU_LAUNCHED(c, "l2norm_backward");
}

/* ---- attention ----------------------------------------------------------
 * qkv [B*T, 3D] rows (q | k | v), head h at columns h*hd.  KC = ceil(hd/32)
 * head-dim values per lane (hd <= 256).  Per-warp shared memory holds the
 * warp's own q (forward), q and dO (dQ) or k and v (dK, dV) rows. */
#define MAMA__CU_ATT_WARPS 4

__device__ __forceinline__ int d_key_visible(const int *kv, int b, int T, int i, int j, int causal) {
    return (!kv || kv[(size_t)b * T + j]) && (!causal || j <= i);
}
/* dot of a shared row with a global row of hd values, by one lane */
__device__ __forceinline__ float d_row_dot(const float *s, const float *g, int hd) {
    float acc = 0.0f;
    for (int d = 0; d < hd; d++) acc += s[d] * g[d];
    return acc;
}

template <int KC>
__global__ void k_attn_fwd(float *out, float *lse, const float *qkv, const int *kv, int B, int T, int H, int hd,
                           int causal, float scale, float p, uint64_t seed) {
    extern __shared__ float sm[];
    int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    long long qi = (long long)blockIdx.x * MAMA__CU_ATT_WARPS + warp;
    if (qi >= (long long)B * H * T) return;
    int i = (int)(qi % T), bh = (int)(qi / T), h = bh % H, b = bh / H, D = H * hd, ld = 3 * D;
    const float *Q = qkv + ((size_t)b * T + i) * ld + (size_t)h * hd;
    const float *K = qkv + (size_t)b * T * ld + D + (size_t)h * hd, *V = K + D;
    float *qs = sm + warp * hd, o[KC], m = -INFINITY, l = 0.0f, zs = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int kend = causal ? i + 1 : T, k;
    uint64_t drop_row = ((uint64_t)bh * (uint64_t)T + (uint64_t)i) * (uint64_t)T;
    for (int d = lane; d < hd; d += 32) qs[d] = Q[d];
    __syncwarp();
    for (k = 0; k < KC; k++) o[k] = 0.0f;
    for (int j0 = 0; j0 < kend; j0 += 32) {
        int j = j0 + lane, nk = kend - j0 < 32 ? kend - j0 : 32;
        float s = -INFINITY, bmax, mnew, alpha, e, pw;
        if (j < kend && d_key_visible(kv, b, T, i, j, causal)) s = d_row_dot(qs, K + (size_t)j * ld, hd) * scale;
        bmax = d_warp_max(s);
        if (bmax == -INFINITY) continue; /* uniform: nothing visible in this block */
        mnew = fmaxf(m, bmax);
        alpha = expf(m - mnew); /* 0 on the first visible block */
        e = s == -INFINITY ? 0.0f : expf(s - mnew);
        l = l * alpha + d_warp_sum(e);
        for (k = 0; k < KC; k++) o[k] *= alpha;
        m = mnew;
        pw = e;
        if (p > 0.0f && e != 0.0f) pw = d_hash_uniform(seed, drop_row + (uint64_t)j) >= p ? e * zs : 0.0f;
        for (int jj = 0; jj < nk; jj++) {
            float pj = __shfl_sync(MAMA__CU_FULL, pw, jj);
            if (pj != 0.0f) {
                const float *vr = V + (size_t)(j0 + jj) * ld;
                for (k = 0; k < KC; k++) {
                    int d = lane + 32 * k;
                    if (d < hd) o[k] += pj * vr[d];
                }
            }
        }
    }
    {
        float *orow = out + ((size_t)b * T + i) * D + (size_t)h * hd, inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (k = 0; k < KC; k++) {
            int d = lane + 32 * k;
            if (d < hd) orow[d] = o[k] * inv;
        }
        if (lane == 0) lse[qi] = l > 0.0f ? m + logf(l) : -INFINITY;
    }
}

/* D_i = dO_i . O_i per (b, h, i) */
__global__ void k_attn_rowdot(float *Dv, const float *dout, const float *out, int B, int T, int H, int hd) {
    int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    long long qi = (long long)blockIdx.x * MAMA__CU_WARPS + warp;
    if (qi >= (long long)B * H * T) return;
    int i = (int)(qi % T), bh = (int)(qi / T), h = bh % H, b = bh / H, D = H * hd;
    const float *g = dout + ((size_t)b * T + i) * D + (size_t)h * hd, *o = out + ((size_t)b * T + i) * D + (size_t)h * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32) s += g[d] * o[d];
    s = d_warp_sum(s);
    if (lane == 0) Dv[qi] = s;
}

__device__ __forceinline__ int d_finite(float x) { return x > -3.402823466e38f && x < 3.402823466e38f; }

/* dQ_i += scale * sum_j P_ij (z_ij dP_ij - D_i) K_j, one warp per query */
template <int KC>
__global__ void k_attn_bwd_dq(float *dqkv, const float *dout, const float *lse, const float *Dv, const float *qkv,
                              const int *kv, int B, int T, int H, int hd, int causal, float scale, float p,
                              uint64_t seed) {
    extern __shared__ float sm[];
    int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    long long qi = (long long)blockIdx.x * MAMA__CU_ATT_WARPS + warp;
    if (qi >= (long long)B * H * T) return;
    int i = (int)(qi % T), bh = (int)(qi / T), h = bh % H, b = bh / H, D = H * hd, ld = 3 * D, k;
    float Li = lse[qi], Di = Dv[qi], dq[KC], zs = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    if (!d_finite(Li)) return; /* no visible key: no gradient */
    const float *Q = qkv + ((size_t)b * T + i) * ld + (size_t)h * hd;
    const float *K = qkv + (size_t)b * T * ld + D + (size_t)h * hd, *V = K + D;
    const float *dO = dout + ((size_t)b * T + i) * D + (size_t)h * hd;
    float *qs = sm + warp * 2 * hd, *gs = qs + hd;
    int kend = causal ? i + 1 : T;
    uint64_t drop_row = ((uint64_t)bh * (uint64_t)T + (uint64_t)i) * (uint64_t)T;
    for (int d = lane; d < hd; d += 32) { qs[d] = Q[d]; gs[d] = dO[d]; }
    __syncwarp();
    for (k = 0; k < KC; k++) dq[k] = 0.0f;
    for (int j0 = 0; j0 < kend; j0 += 32) {
        int j = j0 + lane, nk = kend - j0 < 32 ? kend - j0 : 32;
        float ds = 0.0f;
        if (j < kend && d_key_visible(kv, b, T, i, j, causal)) {
            float P = expf(d_row_dot(qs, K + (size_t)j * ld, hd) * scale - Li);
            float dp = d_row_dot(gs, V + (size_t)j * ld, hd), z = 1.0f;
            if (p > 0.0f) z = d_hash_uniform(seed, drop_row + (uint64_t)j) >= p ? zs : 0.0f;
            ds = P * (dp * z - Di) * scale;
        }
        for (int jj = 0; jj < nk; jj++) {
            float dsj = __shfl_sync(MAMA__CU_FULL, ds, jj);
            if (dsj != 0.0f) {
                const float *kr = K + (size_t)(j0 + jj) * ld;
                for (k = 0; k < KC; k++) {
                    int d = lane + 32 * k;
                    if (d < hd) dq[k] += dsj * kr[d];
                }
            }
        }
    }
    {
        float *dQ = dqkv + ((size_t)b * T + i) * ld + (size_t)h * hd;
        for (k = 0; k < KC; k++) {
            int d = lane + 32 * k;
            if (d < hd) dQ[d] += dq[k];
        }
    }
}

/* dK_j += scale sum_i dS_ij Q_i;  dV_j += sum_i P_ij z_ij dO_i; one warp per key */
template <int KC>
__global__ void k_attn_bwd_dkv(float *dqkv, const float *dout, const float *lse, const float *Dv, const float *qkv,
                               const int *kv, int B, int T, int H, int hd, int causal, float scale, float p,
                               uint64_t seed) {
    extern __shared__ float sm[];
    int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    long long kj = (long long)blockIdx.x * MAMA__CU_ATT_WARPS + warp;
    if (kj >= (long long)B * H * T) return;
    int j = (int)(kj % T), bh = (int)(kj / T), h = bh % H, b = bh / H, D = H * hd, ld = 3 * D, k;
    if (kv && !kv[(size_t)b * T + j]) return; /* a padding key gets no gradient */
    const float *Qb = qkv + (size_t)b * T * ld + (size_t)h * hd;
    const float *Kj = Qb + (size_t)j * ld + D, *Vj = Kj + D;
    const float *dOb = dout + (size_t)b * T * D + (size_t)h * hd;
    const float *Lb = lse + (size_t)bh * T, *Db = Dv + (size_t)bh * T;
    float *ks = sm + warp * 2 * hd, *vs = ks + hd, dk[KC], dv[KC], zs = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    for (int d = lane; d < hd; d += 32) { ks[d] = Kj[d]; vs[d] = Vj[d]; }
    __syncwarp();
    for (k = 0; k < KC; k++) { dk[k] = 0.0f; dv[k] = 0.0f; }
    for (int i0 = causal ? j : 0; i0 < T; i0 += 32) {
        int i = i0 + lane, ni = T - i0 < 32 ? T - i0 : 32;
        float ds = 0.0f, pz = 0.0f;
        if (i < T && d_finite(Lb[i])) {
            float P = expf(d_row_dot(ks, Qb + (size_t)i * ld, hd) * scale - Lb[i]);
            float dp = d_row_dot(vs, dOb + (size_t)i * D, hd), z = 1.0f;
            if (p > 0.0f)
                z = d_hash_uniform(seed, ((uint64_t)bh * (uint64_t)T + (uint64_t)i) * (uint64_t)T + (uint64_t)j) >= p
                        ? zs : 0.0f;
            ds = P * (dp * z - Db[i]) * scale;
            pz = P * z;
        }
        for (int ii = 0; ii < ni; ii++) {
            float dsi = __shfl_sync(MAMA__CU_FULL, ds, ii), pzi = __shfl_sync(MAMA__CU_FULL, pz, ii);
            const float *qr = Qb + (size_t)(i0 + ii) * ld, *gr = dOb + (size_t)(i0 + ii) * D;
            if (dsi != 0.0f)
                for (k = 0; k < KC; k++) {
                    int d = lane + 32 * k;
                    if (d < hd) dk[k] += dsi * qr[d];
                }
            if (pzi != 0.0f)
                for (k = 0; k < KC; k++) {
                    int d = lane + 32 * k;
                    if (d < hd) dv[k] += pzi * gr[d];
                }
        }
    }
    {
        float *dK = dqkv + ((size_t)b * T + j) * ld + D + (size_t)h * hd, *dV = dK + D;
        for (k = 0; k < KC; k++) {
            int d = lane + 32 * k;
            if (d < hd) { dK[d] += dk[k]; dV[d] += dv[k]; }
        }
    }
}

/* ---- tiled attention (head dim <= 128) ------------------------------------
 * The kernels above make every warp read every K/V row from L2; at the
 * ViT's T = 1374 that is ~100x more traffic than the math.  These share
 * 32-key (or 32-query) tiles in shared memory between the 4R rows of a
 * block (4 warps x R rows).  Lanes own keys (scores) or head-dim columns
 * (accumulators); padded strides (hd + 1) keep the lane-per-row reads free
 * of bank conflicts.  Same math and masks as above; FP32 on CUDA cores. */
#define MAMA__CU_BK 32

template <int KC, int R>
__global__ void __launch_bounds__(128) k_attn_fwd_t(float *out, float *lse, const float *qkv, const int *kv, int B,
                                                    int T, int H, int hd, int causal, float scale, float p,
                                                    uint64_t seed) {
    extern __shared__ float sm[];
    const int BQ = 4 * R, ldk = hd + 1;
    float *Qs = sm, *Ks = Qs + BQ * hd, *Vs = Ks + MAMA__CU_BK * ldk, *Ps = Vs + MAMA__CU_BK * hd;
    int ntile = (T + BQ - 1) / BQ, tile = blockIdx.x % ntile, bh = blockIdx.x / ntile, h = bh % H, b = bh / H;
    int i0 = tile * BQ, D = H * hd, ld = 3 * D, warp = threadIdx.x / 32, lane = threadIdx.x & 31, r, k;
    const float *Qg = qkv + (size_t)b * T * ld + (size_t)h * hd, *Kg = Qg + D, *Vg = Kg + D;
    float m[R], l[R], o[R][KC], zs = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int qend = i0 + BQ < T ? i0 + BQ : T, kend = causal ? qend : T;
    (void)B;
    for (int e = threadIdx.x; e < BQ * hd; e += 128) {
        int rr = e / hd, d = e % hd;
        Qs[e] = i0 + rr < T ? Qg[(size_t)(i0 + rr) * ld + d] : 0.0f;
    }
    for (r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (k = 0; k < KC; k++) o[r][k] = 0.0f;
    }
    for (int j0 = 0; j0 < kend; j0 += MAMA__CU_BK) {
        int j = j0 + lane, nk = T - j0 < MAMA__CU_BK ? T - j0 : MAMA__CU_BK, kvis;
        float s[R];
        __syncthreads(); /* the previous tile is no longer read (and Qs is loaded) */
        for (int e = threadIdx.x; e < MAMA__CU_BK * hd; e += 128) {
            int jj = e / hd, d = e % hd, ok = j0 + jj < T;
            Ks[jj * ldk + d] = ok ? Kg[(size_t)(j0 + jj) * ld + d] : 0.0f;
            Vs[jj * hd + d] = ok ? Vg[(size_t)(j0 + jj) * ld + d] : 0.0f;
        }
        __syncthreads();
        kvis = j < T && (!kv || kv[(size_t)b * T + j]);
        for (r = 0; r < R; r++) s[r] = 0.0f;
        for (int d = 0; d < hd; d++) {
            float kd = Ks[lane * ldk + d];
            for (r = 0; r < R; r++) s[r] += Qs[(warp * R + r) * hd + d] * kd;
        }
        for (r = 0; r < R; r++) {
            int i = i0 + warp * R + r;
            float sv = (kvis && i < T && (!causal || j <= i)) ? s[r] * scale : -INFINITY;
            float bmax = d_warp_max(sv), pw = 0.0f;
            if (bmax != -INFINITY) { /* uniform across the warp */
                float mnew = fmaxf(m[r], bmax), alpha = expf(m[r] - mnew);
                float e = sv == -INFINITY ? 0.0f : expf(sv - mnew);
                l[r] = l[r] * alpha + d_warp_sum(e);
                for (k = 0; k < KC; k++) o[r][k] *= alpha;
                m[r] = mnew;
                pw = e;
                if (p > 0.0f && e != 0.0f)
                    pw = d_hash_uniform(seed, ((uint64_t)bh * (uint64_t)T + (uint64_t)i) * (uint64_t)T + (uint64_t)j) >= p
                             ? e * zs : 0.0f;
            }
            Ps[(warp * R + r) * MAMA__CU_BK + lane] = pw;
        }
        __syncwarp();
        for (int jj = 0; jj < nk; jj++) {
            float vv[KC];
            for (k = 0; k < KC; k++) {
                int d = lane + 32 * k;
                vv[k] = d < hd ? Vs[jj * hd + d] : 0.0f;
            }
            for (r = 0; r < R; r++) {
                float pj = Ps[(warp * R + r) * MAMA__CU_BK + jj];
                for (k = 0; k < KC; k++) o[r][k] += pj * vv[k];
            }
        }
    }
    for (r = 0; r < R; r++) {
        int i = i0 + warp * R + r;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f, *orow;
        if (i >= T) continue;
        orow = out + ((size_t)b * T + i) * D + (size_t)h * hd;
        for (k = 0; k < KC; k++) {
            int d = lane + 32 * k;
            if (d < hd) orow[d] = o[r][k] * inv;
        }
        if (lane == 0) lse[(size_t)bh * T + i] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
    }
}

template <int KC, int R>
__global__ void __launch_bounds__(128) k_attn_bwd_dq_t(float *dqkv, const float *dout, const float *lse, const float *Dv,
                                                       const float *qkv, const int *kv, int B, int T, int H, int hd,
                                                       int causal, float scale, float p, uint64_t seed) {
    extern __shared__ float sm[];
    const int BQ = 4 * R, ldk = hd + 1;
    float *Qs = sm, *Gs = Qs + BQ * hd, *Ks = Gs + BQ * hd, *Vs = Ks + MAMA__CU_BK * ldk, *Ds = Vs + MAMA__CU_BK * ldk;
    int ntile = (T + BQ - 1) / BQ, tile = blockIdx.x % ntile, bh = blockIdx.x / ntile, h = bh % H, b = bh / H;
    int i0 = tile * BQ, D = H * hd, ld = 3 * D, warp = threadIdx.x / 32, lane = threadIdx.x & 31, r, k;
    const float *Qg = qkv + (size_t)b * T * ld + (size_t)h * hd, *Kg = Qg + D, *Vg = Kg + D;
    const float *Gg = dout + (size_t)b * T * D + (size_t)h * hd;
    float Li[R], Di[R], dq[R][KC], zs = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int fin[R], qend = i0 + BQ < T ? i0 + BQ : T, kend = causal ? qend : T;
    (void)B;
    for (int e = threadIdx.x; e < BQ * hd; e += 128) {
        int rr = e / hd, d = e % hd, ok = i0 + rr < T;
        Qs[e] = ok ? Qg[(size_t)(i0 + rr) * ld + d] : 0.0f;
        Gs[e] = ok ? Gg[(size_t)(i0 + rr) * D + d] : 0.0f;
    }
    for (r = 0; r < R; r++) {
        int i = i0 + warp * R + r;
        Li[r] = i < T ? lse[(size_t)bh * T + i] : INFINITY;
        Di[r] = i < T ? Dv[(size_t)bh * T + i] : 0.0f;
        fin[r] = d_finite(Li[r]);
        for (k = 0; k < KC; k++) dq[r][k] = 0.0f;
    }
    for (int j0 = 0; j0 < kend; j0 += MAMA__CU_BK) {
        int j = j0 + lane, nk = T - j0 < MAMA__CU_BK ? T - j0 : MAMA__CU_BK, kvis;
        float s[R], dp[R];
        __syncthreads();
        for (int e = threadIdx.x; e < MAMA__CU_BK * hd; e += 128) {
            int jj = e / hd, d = e % hd, ok = j0 + jj < T;
            Ks[jj * ldk + d] = ok ? Kg[(size_t)(j0 + jj) * ld + d] : 0.0f;
            Vs[jj * ldk + d] = ok ? Vg[(size_t)(j0 + jj) * ld + d] : 0.0f;
        }
        __syncthreads();
        kvis = j < T && (!kv || kv[(size_t)b * T + j]);
        for (r = 0; r < R; r++) { s[r] = 0.0f; dp[r] = 0.0f; }
        for (int d = 0; d < hd; d++) {
            float kd = Ks[lane * ldk + d], vd = Vs[lane * ldk + d];
            for (r = 0; r < R; r++) {
                s[r] += Qs[(warp * R + r) * hd + d] * kd;
                dp[r] += Gs[(warp * R + r) * hd + d] * vd;
            }
        }
        for (r = 0; r < R; r++) {
            int i = i0 + warp * R + r;
            float ds = 0.0f;
            if (fin[r] && kvis && (!causal || j <= i)) {
                float P = expf(s[r] * scale - Li[r]), z = 1.0f;
                if (p > 0.0f)
                    z = d_hash_uniform(seed, ((uint64_t)bh * (uint64_t)T + (uint64_t)i) * (uint64_t)T + (uint64_t)j) >= p
                            ? zs : 0.0f;
                ds = P * (dp[r] * z - Di[r]) * scale;
            }
            Ds[(warp * R + r) * MAMA__CU_BK + lane] = ds;
        }
        __syncwarp();
        for (int jj = 0; jj < nk; jj++) {
            float kk[KC];
            for (k = 0; k < KC; k++) {
                int d = lane + 32 * k;
                kk[k] = d < hd ? Ks[jj * ldk + d] : 0.0f;
            }
            for (r = 0; r < R; r++) {
                float dsj = Ds[(warp * R + r) * MAMA__CU_BK + jj];
                for (k = 0; k < KC; k++) dq[r][k] += dsj * kk[k];
            }
        }
    }
    for (r = 0; r < R; r++) {
        int i = i0 + warp * R + r;
        float *dQ;
        if (i >= T || !fin[r]) continue;
        dQ = dqkv + ((size_t)b * T + i) * ld + (size_t)h * hd;
        for (k = 0; k < KC; k++) {
            int d = lane + 32 * k;
            if (d < hd) dQ[d] += dq[r][k];
        }
    }
}

template <int KC, int R>
__global__ void __launch_bounds__(128) k_attn_bwd_dkv_t(float *dqkv, const float *dout, const float *lse,
                                                        const float *Dv, const float *qkv, const int *kv, int B, int T,
                                                        int H, int hd, int causal, float scale, float p, uint64_t seed) {
    extern __shared__ float sm[];
    const int BKk = 4 * R, ldk = hd + 1;
    float *Ks = sm, *Vs = Ks + BKk * hd, *Qs = Vs + BKk * hd, *Gs = Qs + MAMA__CU_BK * ldk, *Ls = Gs + MAMA__CU_BK * ldk;
    float *Dl = Ls + MAMA__CU_BK, *DSs = Dl + MAMA__CU_BK, *PZs = DSs + BKk * MAMA__CU_BK;
    int ntile = (T + BKk - 1) / BKk, tile = blockIdx.x % ntile, bh = blockIdx.x / ntile, h = bh % H, b = bh / H;
    int j0 = tile * BKk, D = H * hd, ld = 3 * D, warp = threadIdx.x / 32, lane = threadIdx.x & 31, r, k;
    const float *Qg = qkv + (size_t)b * T * ld + (size_t)h * hd, *Kg = Qg + D, *Vg = Kg + D;
    const float *Gg = dout + (size_t)b * T * D + (size_t)h * hd;
    float dk[R][KC], dv[R][KC], zs = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    int kvalid[R];
    (void)B;
    for (int e = threadIdx.x; e < BKk * hd; e += 128) {
        int rr = e / hd, d = e % hd, ok = j0 + rr < T;
        Ks[e] = ok ? Kg[(size_t)(j0 + rr) * ld + d] : 0.0f;
        Vs[e] = ok ? Vg[(size_t)(j0 + rr) * ld + d] : 0.0f;
    }
    for (r = 0; r < R; r++) {
        int j = j0 + warp * R + r;
        kvalid[r] = j < T && (!kv || kv[(size_t)b * T + j]);
        for (k = 0; k < KC; k++) { dk[r][k] = 0.0f; dv[r][k] = 0.0f; }
    }
    for (int q0 = causal ? j0 : 0; q0 < T; q0 += MAMA__CU_BK) {
        int i = q0 + lane, ni = T - q0 < MAMA__CU_BK ? T - q0 : MAMA__CU_BK, fin;
        float s[R], dp[R], Li, Dq;
        __syncthreads();
        for (int e = threadIdx.x; e < MAMA__CU_BK * hd; e += 128) {
            int ii = e / hd, d = e % hd, ok = q0 + ii < T;
            Qs[ii * ldk + d] = ok ? Qg[(size_t)(q0 + ii) * ld + d] : 0.0f;
            Gs[ii * ldk + d] = ok ? Gg[(size_t)(q0 + ii) * D + d] : 0.0f;
        }
        if (threadIdx.x < MAMA__CU_BK) {
            int ii = q0 + threadIdx.x;
            Ls[threadIdx.x] = ii < T ? lse[(size_t)bh * T + ii] : INFINITY;
            Dl[threadIdx.x] = ii < T ? Dv[(size_t)bh * T + ii] : 0.0f;
        }
        __syncthreads();
        Li = Ls[lane];
        Dq = Dl[lane];
        fin = i < T && d_finite(Li);
        for (r = 0; r < R; r++) { s[r] = 0.0f; dp[r] = 0.0f; }
        for (int d = 0; d < hd; d++) {
            float qd = Qs[lane * ldk + d], gd = Gs[lane * ldk + d];
            for (r = 0; r < R; r++) {
                s[r] += qd * Ks[(warp * R + r) * hd + d];
                dp[r] += gd * Vs[(warp * R + r) * hd + d];
            }
        }
        for (r = 0; r < R; r++) {
            int j = j0 + warp * R + r;
            float ds = 0.0f, pz = 0.0f;
            if (fin && kvalid[r] && (!causal || j <= i)) {
                float P = expf(s[r] * scale - Li), z = 1.0f;
                if (p > 0.0f)
                    z = d_hash_uniform(seed, ((uint64_t)bh * (uint64_t)T + (uint64_t)i) * (uint64_t)T + (uint64_t)j) >= p
                            ? zs : 0.0f;
                ds = P * (dp[r] * z - Dq) * scale;
                pz = P * z;
            }
            DSs[(warp * R + r) * MAMA__CU_BK + lane] = ds;
            PZs[(warp * R + r) * MAMA__CU_BK + lane] = pz;
        }
        __syncwarp();
        for (int ii = 0; ii < ni; ii++) {
            float qq[KC], gg[KC];
            for (k = 0; k < KC; k++) {
                int d = lane + 32 * k;
                qq[k] = d < hd ? Qs[ii * ldk + d] : 0.0f;
                gg[k] = d < hd ? Gs[ii * ldk + d] : 0.0f;
            }
            for (r = 0; r < R; r++) {
                float a = DSs[(warp * R + r) * MAMA__CU_BK + ii], c = PZs[(warp * R + r) * MAMA__CU_BK + ii];
                for (k = 0; k < KC; k++) {
                    dk[r][k] += a * qq[k];
                    dv[r][k] += c * gg[k];
                }
            }
        }
    }
    for (r = 0; r < R; r++) {
        int j = j0 + warp * R + r;
        float *dK;
        if (!kvalid[r]) continue;
        dK = dqkv + ((size_t)b * T + j) * ld + D + (size_t)h * hd;
        for (k = 0; k < KC; k++) {
            int d = lane + 32 * k;
            if (d < hd) { dK[d] += dk[r][k]; dK[D + d] += dv[r][k]; }
        }
    }
}

/* shared memory of the tiled kernels, in floats */
static size_t cu_att_shm_fwd(int hd, int R) { return (size_t)4 * R * hd + MAMA__CU_BK * (hd + 1) + MAMA__CU_BK * hd + 4 * R * MAMA__CU_BK; }
static size_t cu_att_shm_dq(int hd, int R) { return (size_t)2 * 4 * R * hd + 2 * MAMA__CU_BK * (hd + 1) + 4 * R * MAMA__CU_BK; }
static size_t cu_att_shm_dkv(int hd, int R) {
    return (size_t)2 * 4 * R * hd + 2 * MAMA__CU_BK * (hd + 1) + 2 * MAMA__CU_BK + 2 * 4 * R * MAMA__CU_BK;
}

/* device scratch that grows on demand (first use of a shape only) */
static float *cu_scratch(mama_cuda_impl *c, size_t bytes) {
    if (c->scratch_bytes >= bytes) return c->scratch;
    if (c->scratch) {
        cu_note(c, cudaStreamSynchronize(c->stream), "scratch sync");
        cu_note(c, cudaFree(c->scratch), "scratch free");
    }
    c->scratch = NULL;
    c->scratch_bytes = 0;
    if (cudaMalloc((void **)&c->scratch, bytes) != cudaSuccess) {
        cudaGetLastError();
        c->scratch = NULL;
        if (c->err == MAMA_OK) {
            c->err = MAMA_ERR_NOMEM;
            snprintf(c->err_msg, sizeof c->err_msg, "cuda: attention scratch of %zu bytes: out of device memory", bytes);
        }
        return NULL;
    }
    c->scratch_bytes = bytes;
    return c->scratch;
}

#define MAMA__CU_ATT_DISPATCH(KCV, ...) \
    switch (KCV) { \
    case 1: __VA_ARGS__(1); break; case 2: __VA_ARGS__(2); break; case 3: __VA_ARGS__(3); break; \
    case 4: __VA_ARGS__(4); break; case 5: __VA_ARGS__(5); break; case 6: __VA_ARGS__(6); break; \
    case 7: __VA_ARGS__(7); break; default: __VA_ARGS__(8); break; }

static void cuda_attention_forward(mama_backend *be, float *out, float *lse, const float *qkv, const int *key_valid,
                                   int B, int T, int H, int hd, int causal, float scale, float dropout_p,
                                   uint64_t dropout_seed) {
    mama_cuda_impl *c = cu_impl(be);
    long long rows = (long long)B * H * T;
    unsigned grid;
    size_t shm;
    if (B <= 0 || T <= 0 || H <= 0 || hd <= 0) return;
    if (hd > 256) {
        if (c->err == MAMA_OK) {
            c->err = MAMA_ERR_UNSUPPORTED;
            snprintf(c->err_msg, sizeof c->err_msg, "cuda attention_forward: head dim %d > 256", hd);
        }
        return;
    }
    if (hd <= 128) { /* tiled kernels: R = 8 rows per warp, 32 per block */
        int ntile = (T + 31) / 32, kc = (hd + 31) / 32;
        unsigned g = (unsigned)((long long)B * H * ntile);
        shm = sizeof(float) * cu_att_shm_fwd(hd, 8);
#define MAMA__CU_LAUNCH_FWDT(KCV) \
    do { \
        cu_note(c, cudaFuncSetAttribute((const void *)k_attn_fwd_t<KCV, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                                        (int)shm), "attention shared memory"); \
        k_attn_fwd_t<KCV, 8><<<g, 128, shm, c->stream>>>(out, lse, qkv, key_valid, B, T, H, hd, causal, scale, \
                                                        dropout_p, dropout_seed); \
    } while (0)
        switch (kc) {
        case 1: MAMA__CU_LAUNCH_FWDT(1); break;
        case 2: MAMA__CU_LAUNCH_FWDT(2); break;
        case 3: MAMA__CU_LAUNCH_FWDT(3); break;
        default: MAMA__CU_LAUNCH_FWDT(4); break;
        }
#undef MAMA__CU_LAUNCH_FWDT
        CU_LAUNCHED(c, "attention_forward (tiled)");
        return;
    }
    grid = (unsigned)((rows + MAMA__CU_ATT_WARPS - 1) / MAMA__CU_ATT_WARPS);
    shm = sizeof(float) * (size_t)MAMA__CU_ATT_WARPS * hd;
#define MAMA__CU_LAUNCH_FWD(KCV) \
    k_attn_fwd<KCV><<<grid, 32 * MAMA__CU_ATT_WARPS, shm, c->stream>>>(out, lse, qkv, key_valid, B, T, H, hd, causal, \
                                                                       scale, dropout_p, dropout_seed)
    MAMA__CU_ATT_DISPATCH((hd + 31) / 32, MAMA__CU_LAUNCH_FWD)
#undef MAMA__CU_LAUNCH_FWD
    CU_LAUNCHED(c, "attention_forward");
}

static void cuda_attention_backward(mama_backend *be, float *dqkv, const float *dout, const float *out, const float *lse,
                                    const float *qkv, const int *key_valid, int B, int T, int H, int hd, int causal,
                                    float scale, float dropout_p, uint64_t dropout_seed) {
    mama_cuda_impl *c = cu_impl(be);
    long long rows = (long long)B * H * T;
    unsigned grid, grid_rd;
    size_t shm;
    float *Dv;
    if (B <= 0 || T <= 0 || H <= 0 || hd <= 0 || dropout_p >= 1.0f) return;
    if (hd > 256) {
        if (c->err == MAMA_OK) {
            c->err = MAMA_ERR_UNSUPPORTED;
            snprintf(c->err_msg, sizeof c->err_msg, "cuda attention_backward: head dim %d > 256", hd);
        }
        return;
    }
    Dv = cu_scratch(c, sizeof(float) * (size_t)rows);
    if (!Dv) return;
    grid_rd = (unsigned)((rows + MAMA__CU_WARPS - 1) / MAMA__CU_WARPS);
    k_attn_rowdot<<<grid_rd, 32 * MAMA__CU_WARPS, 0, c->stream>>>(Dv, dout, out, B, T, H, hd);
    CU_LAUNCHED(c, "attention_backward (D)");
    if (hd <= 128) { /* tiled: dQ with 32 queries per block, dK/dV with 32 (hd <= 64) or 16 keys */
        int kc = (hd + 31) / 32;
        unsigned gq = (unsigned)((long long)B * H * ((T + 31) / 32));
        unsigned gk8 = gq, gk4 = (unsigned)((long long)B * H * ((T + 15) / 16));
        size_t shq = sizeof(float) * cu_att_shm_dq(hd, 8), shk8 = sizeof(float) * cu_att_shm_dkv(hd, 8),
               shk4 = sizeof(float) * cu_att_shm_dkv(hd, 4);
#define MAMA__CU_LAUNCH_BWDT(KCV, RK, GK, SHK) \
    do { \
        cu_note(c, cudaFuncSetAttribute((const void *)k_attn_bwd_dq_t<KCV, 8>, \
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shq), "attention shared memory"); \
        cu_note(c, cudaFuncSetAttribute((const void *)k_attn_bwd_dkv_t<KCV, RK>, \
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SHK), "attention shared memory"); \
        k_attn_bwd_dq_t<KCV, 8><<<gq, 128, shq, c->stream>>>(dqkv, dout, lse, Dv, qkv, key_valid, B, T, H, hd, causal, \
                                                            scale, dropout_p, dropout_seed); \
        k_attn_bwd_dkv_t<KCV, RK><<<GK, 128, SHK, c->stream>>>(dqkv, dout, lse, Dv, qkv, key_valid, B, T, H, hd, \
                                                              causal, scale, dropout_p, dropout_seed); \
    } while (0)
        switch (kc) {
        case 1: MAMA__CU_LAUNCH_BWDT(1, 8, gk8, shk8); break;
        case 2: MAMA__CU_LAUNCH_BWDT(2, 8, gk8, shk8); break;
        case 3: MAMA__CU_LAUNCH_BWDT(3, 4, gk4, shk4); break;
        default: MAMA__CU_LAUNCH_BWDT(4, 4, gk4, shk4); break;
        }
#undef MAMA__CU_LAUNCH_BWDT
        CU_LAUNCHED(c, "attention_backward (tiled)");
        return;
    }
    grid = (unsigned)((rows + MAMA__CU_ATT_WARPS - 1) / MAMA__CU_ATT_WARPS);
    shm = sizeof(float) * (size_t)MAMA__CU_ATT_WARPS * 2 * hd;
#define MAMA__CU_LAUNCH_BWD(KCV) \
    do { \
        k_attn_bwd_dq<KCV><<<grid, 32 * MAMA__CU_ATT_WARPS, shm, c->stream>>>(dqkv, dout, lse, Dv, qkv, key_valid, B, \
                                                                              T, H, hd, causal, scale, dropout_p, \
                                                                              dropout_seed); \
        k_attn_bwd_dkv<KCV><<<grid, 32 * MAMA__CU_ATT_WARPS, shm, c->stream>>>(dqkv, dout, lse, Dv, qkv, key_valid, \
                                                                               B, T, H, hd, causal, scale, \
                                                                               dropout_p, dropout_seed); \
    } while (0)
    MAMA__CU_ATT_DISPATCH((hd + 31) / 32, MAMA__CU_LAUNCH_BWD)
#undef MAMA__CU_LAUNCH_BWD
    CU_LAUNCHED(c, "attention_backward");
}

/* ---- pooling, embedding, patches --------------------------------------- */

/* 1 / sum_t mask[b, t] (double sum, as the CPU), 1/T without a mask */
__device__ float d_pool_inv(const float *mask, int b, int T) {
    double s = 0.0;
    if (!mask) return T > 0 ? 1.0f / (float)T : 0.0f;
    for (int t = 0; t < T; t++) s += mask[(size_t)b * T + t];
    return s != 0.0 ? (float)(1.0 / s) : 0.0f;
}
__global__ void k_meanpool_fwd(float *y, const float *x, const float *mask, int B, int T, int C) {
    CU_FOR(i, (size_t)B * C) {
        int b = (int)(i / C), c = (int)(i % C);
        float inv = d_pool_inv(mask, b, T), acc = 0.0f;
        for (int t = 0; t < T; t++) {
            float wt = mask ? mask[(size_t)b * T + t] : 1.0f;
            if (wt != 0.0f) acc += wt * x[((size_t)b * T + t) * C + c];
        }
        y[i] = acc * inv;
    }
}
/* one block per row (b, t) */
__global__ void k_meanpool_bwd(float *dx, const float *dy, const float *mask, int B, int T, int C) {
    __shared__ float sk;
    size_t row = blockIdx.x;
    int b = (int)(row / T);
    if (threadIdx.x == 0) sk = (mask ? mask[row] : 1.0f) * d_pool_inv(mask, b, T);
    __syncthreads();
    if (sk == 0.0f) return;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dx[row * C + c] += sk * dy[(size_t)b * C + c];
}
static void cuda_meanpool_forward(mama_backend *be, float *y, const float *x, const float *mask, int B, int T, int C) {
    mama_cuda_impl *c = cu_impl(be);
    if (B <= 0 || C <= 0) return;
    k_meanpool_fwd<<<cu_grid((size_t)B * C, 128), 128, 0, c->stream>>>(y, x, mask, B, T, C);
    CU_LAUNCHED(c, "meanpool_forward");
}
static void cuda_meanpool_backward(mama_backend *be, float *dx, const float *dy, const float *mask, int B, int T, int C) {
    mama_cuda_impl *c = cu_impl(be);
    if (B <= 0 || T <= 0 || C <= 0) return;
    k_meanpool_bwd<<<(unsigned)((size_t)B * T), 256, 0, c->stream>>>(dx, dy, mask, B, T, C);
    CU_LAUNCHED(c, "meanpool_backward");
}

__global__ void k_embedding_fwd(float *y, const int *ids, const float *table, int n, int C) {
    CU_FOR(i, (size_t)n * C) {
        int id = ids[i / C];
        y[i] = id < 0 ? 0.0f : table[(size_t)id * C + i % C];
    }
}
/* scatter-add over (row, column) with atomicAdd: every element of dy is
 * one thread.  Where ids are unique (patch and sentence gathers) each
 * output gets one add and the result is exact; repeated ids (the token and
 * position tables of a fully trained text tower) sum in an unspecified
 * order, so those gradients can differ in the last bits from run to run. */
__global__ void k_embedding_bwd(float *dtable, const float *dy, const int *ids, int n, int C) {
    CU_FOR(e, (size_t)n * C) {
        int id = ids[e / C];
        if (id >= 0) atomicAdd(dtable + (size_t)id * C + e % C, dy[e]);
    }
}
static void cuda_embedding_forward(mama_backend *be, float *y, const int *ids, const float *table, int n, int C) {
    mama_cuda_impl *c = cu_impl(be);
    if (n <= 0 || C <= 0) return;
    k_embedding_fwd<<<cu_grid((size_t)n * C, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(y, ids, table, n, C);
    CU_LAUNCHED(c, "embedding_forward");
}
static void cuda_embedding_backward(mama_backend *be, float *dtable, const float *dy, const int *ids, int n, int C) {
    mama_cuda_impl *c = cu_impl(be);
    if (n <= 0 || C <= 0) return;
    k_embedding_bwd<<<cu_grid((size_t)n * C, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dtable, dy, ids, n, C);
    CU_LAUNCHED(c, "embedding_backward");
}

__global__ void k_im2col(float *cols, const float *images, int B, int Cin, int H, int W, int P) {
    int GH = H / P, GW = W / P, K = Cin * P * P;
    CU_FOR(i, (size_t)B * GH * GW * K) {
        size_t row = i / K;
        int col = (int)(i % K), b = (int)(row / ((size_t)GH * GW)), g = (int)(row % ((size_t)GH * GW));
        int gy = g / GW, gx = g % GW, ch = col / (P * P), py = (col / P) % P, px = col % P;
        cols[i] = images[(((size_t)b * Cin + ch) * H + (size_t)gy * P + py) * W + (size_t)gx * P + px];
    }
}
static void cuda_im2col_patches(mama_backend *be, float *cols, const float *images, int B, int Cin, int H, int W, int P) {
    mama_cuda_impl *c = cu_impl(be);
    size_t n;
    if (P <= 0 || B <= 0) return;
    n = (size_t)B * (H / P) * (W / P) * Cin * P * P;
    if (!n) return;
    k_im2col<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(cols, images, B, Cin, H, W, P);
    CU_LAUNCHED(c, "im2col_patches");
}

__global__ void k_vit_tokens_fwd(float *x, const float *patches, const float *cls, const float *reg, const float *pos,
                                 int B, int N, int R, int D) {
    int T = 1 + R + N;
    CU_FOR(i, (size_t)B * T * D) {
        int c = (int)(i % D), t = (int)((i / D) % T), b = (int)(i / ((size_t)T * D));
        float v;
        if (t == 0) v = cls[c] + pos[c];
        else if (t <= R) v = reg[(size_t)(t - 1) * D + c];
        else v = patches[((size_t)b * N + (t - 1 - R)) * D + c] + pos[(size_t)(t - R) * D + c];
        x[i] = v;
    }
}
/* one thread per (token, channel): walks the batch in order (as the CPU) */
__global__ void k_vit_tokens_bwd(float *dpatches, float *dcls, float *dreg, float *dpos, const float *dx, int B, int N,
                                 int R, int D) {
    int T = 1 + R + N;
    CU_FOR(i, (size_t)T * D) {
        int c = (int)(i % D), t = (int)(i / D);
        float acc = 0.0f;
        for (int b = 0; b < B; b++) {
            float g = dx[((size_t)b * T + t) * D + c];
            acc += g;
            if (t > R) dpatches[((size_t)b * N + (t - 1 - R)) * D + c] += g;
        }
        if (t == 0) {
            if (dcls) dcls[c] += acc;
            if (dpos) dpos[c] += acc;
        } else if (t <= R) {
            if (dreg) dreg[(size_t)(t - 1) * D + c] += acc;
        } else if (dpos) {
            dpos[(size_t)(t - R) * D + c] += acc;
        }
    }
}
static void cuda_vit_tokens_forward(mama_backend *be, float *x, const float *patches, const float *cls, const float *reg,
                                    const float *pos, int B, int N, int R, int D) {
    mama_cuda_impl *c = cu_impl(be);
    size_t n = (size_t)B * (1 + R + N) * D;
    if (!n) return;
    k_vit_tokens_fwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(x, patches, cls, reg, pos, B, N,
                                                                                     R, D);
    CU_LAUNCHED(c, "vit_tokens_forward");
}
static void cuda_vit_tokens_backward(mama_backend *be, float *dpatches, float *dcls, float *dreg, float *dpos,
                                     const float *dx, int B, int N, int R, int D) {
    mama_cuda_impl *c = cu_impl(be);
    size_t n = (size_t)(1 + R + N) * D;
    if (!n || B <= 0) return;
    k_vit_tokens_bwd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dpatches, dcls, dreg, dpos, dx,
                                                                                     B, N, R, D);
    CU_LAUNCHED(c, "vit_tokens_backward");
}

/* ---- losses ------------------------------------------------------------- */

/* one warp per row: max, exp, double sum, normalise; loss in double */
__global__ void k_ce_fwd(float *loss, float *probs, const float *logits, const int *targets, int rows, int cols) {
    int row = blockIdx.x * MAMA__CU_WARPS + threadIdx.x / 32, lane = threadIdx.x & 31, c, t;
    const float *l;
    float *pr, mx = -INFINITY, inv;
    double sum = 0.0;
    if (row >= rows) return;
    l = logits + (size_t)row * cols;
    pr = probs + (size_t)row * cols;
    t = targets[row];
    for (c = lane; c < cols; c += 32) mx = fmaxf(mx, l[c]);
    mx = d_warp_max(mx);
    for (c = lane; c < cols; c += 32) {
        float e = expf(l[c] - mx);
        pr[c] = e;
        sum += e;
    }
    sum = d_warp_sum_d(sum);
    inv = (float)(1.0 / sum);
    for (c = lane; c < cols; c += 32) pr[c] *= inv;
    if (lane == 0 && loss) loss[row] = (t >= 0 && t < cols) ? (float)(log(sum) + mx - l[t]) : 0.0f;
}
__global__ void k_ce_bwd(float *dlogits, const float *probs, const int *targets, const float *dloss, int rows, int cols) {
    CU_FOR(i, (size_t)rows * cols) {
        int r = (int)(i / cols), c = (int)(i % cols), t = targets[r];
        if (t >= 0 && t < cols) {
            float g = dloss ? dloss[r] : 1.0f, v = dlogits[i] + g * probs[i];
            if (c == t) v -= g;
            dlogits[i] = v;
        }
    }
}
static void cuda_cross_entropy_forward(mama_backend *be, float *loss, float *probs, const float *logits,
                                       const int *targets, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    k_ce_fwd<<<cu_row_blocks(rows), 32 * MAMA__CU_WARPS, 0, c->stream>>>(loss, probs, logits, targets, rows, cols);
    CU_LAUNCHED(c, "cross_entropy_forward");
}
static void cuda_cross_entropy_backward(mama_backend *be, float *dlogits, const float *probs, const int *targets,
                                        const float *dloss, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    k_ce_bwd<<<cu_grid((size_t)rows * cols, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dlogits, probs, targets,
                                                                                               dloss, rows, cols);
    CU_LAUNCHED(c, "cross_entropy_backward");
}

__global__ void k_segmax_fwd(float *out, int *arg, const float *x, int rows, int cols, const int *seg, int nseg) {
    CU_FOR(i, (size_t)rows * nseg) {
        int r = (int)(i / nseg), s = (int)(i % nseg);
        int a = seg[s] < 0 ? 0 : seg[s], e = seg[s + 1] > cols ? cols : seg[s + 1], best = -1;
        float mx = 0.0f;
        const float *xr = x + (size_t)r * cols;
        for (int c = a; c < e; c++)
            if (best < 0 || xr[c] > mx) { mx = xr[c]; best = c; }
        out[i] = mx;
        if (arg) arg[i] = best;
    }
}
/* distinct (row, segment) pairs own distinct columns: no races */
__global__ void k_segmax_bwd(float *dx, const float *dout, const int *arg, int rows, int cols, int nseg) {
    CU_FOR(i, (size_t)rows * nseg) {
        int r = (int)(i / nseg), c = arg[i];
        if (c >= 0 && c < cols) dx[(size_t)r * cols + c] += dout[i];
    }
}
static void cuda_segment_max_forward(mama_backend *be, float *out, int *arg, const float *x, int rows, int cols,
                                     const int *seg, int nseg) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || nseg <= 0) return;
    k_segmax_fwd<<<cu_grid((size_t)rows * nseg, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(out, arg, x, rows,
                                                                                                   cols, seg, nseg);
    CU_LAUNCHED(c, "segment_max_forward");
}
static void cuda_segment_max_backward(mama_backend *be, float *dx, const float *dout, const int *arg, int rows, int cols,
                                      int nseg) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || nseg <= 0) return;
    k_segmax_bwd<<<cu_grid((size_t)rows * nseg, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(dx, dout, arg, rows,
                                                                                                   cols, nseg);
    CU_LAUNCHED(c, "segment_max_backward");
}

__global__ void k_transpose(float *y, const float *x, int rows, int cols) {
    __shared__ float tile[32][33];
    int bx = blockIdx.x * 32, by = blockIdx.y * 32, tx = threadIdx.x, ty = threadIdx.y;
    for (int k = ty; k < 32; k += 8) {
        int r = by + k, c = bx + tx;
        if (r < rows && c < cols) tile[k][tx] = x[(size_t)r * cols + c];
    }
    __syncthreads();
    for (int k = ty; k < 32; k += 8) {
        int c = bx + k, r = by + tx; /* y[c, r] */
        if (r < rows && c < cols) y[(size_t)c * rows + r] = tile[tx][k];
    }
}
static void cuda_transpose(mama_backend *be, float *y, const float *x, int rows, int cols) {
    mama_cuda_impl *c = cu_impl(be);
    if (rows <= 0 || cols <= 0) return;
    k_transpose<<<dim3((unsigned)(cols + 31) / 32, (unsigned)(rows + 31) / 32), dim3(32, 8), 0, c->stream>>>(y, x, rows,
                                                                                                           cols);
    CU_LAUNCHED(c, "transpose");
}

__global__ void k_fill_diag(float *x, int n, int ld, float v) { CU_FOR(i, (size_t)n) x[i * (size_t)ld + i] = v; }
static void cuda_fill_diagonal(mama_backend *be, float *x, int n, int ld, float value) {
    mama_cuda_impl *c = cu_impl(be);
    if (n <= 0) return;
    k_fill_diag<<<cu_grid((size_t)n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(x, n, ld, value);
    CU_LAUNCHED(c, "fill_diagonal");
}

/* Two-stage deterministic double reduction: RED_BLOCKS partial sums, then
 * one block adds them; the host reads the result through pinned memory. */
/* mode 0: sum a[i] b[i]; 1: sum a[i]^2; 2: sum a[i] */
__global__ void k_reduce_partial(double *part, const float *a, const float *b, size_t n, int mode) {
    __shared__ double sh[MAMA__CU_THREADS];
    double s = 0.0;
    CU_FOR(i, n) s += (double)a[i] * (mode == 0 ? (double)b[i] : mode == 1 ? (double)a[i] : 1.0);
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = MAMA__CU_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}
__global__ void k_reduce_final(double *part, int nparts) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0.0;
        for (int k = 0; k < nparts; k++) s += part[k];
        part[MAMA__CU_RED_BLOCKS] = s;
    }
}
/* acc[0] += (the sum of the partials) / div: the device-side result */
__global__ void k_reduce_acc(const double *part, int nparts, double *acc, double div) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0.0;
        for (int k = 0; k < nparts; k++) s += part[k];
        acc[0] += s / div;
    }
}
static void cuda_reduce_acc(mama_backend *be, double *acc, const float *a, const float *b, size_t n, double div) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_reduce_partial<<<MAMA__CU_RED_BLOCKS, MAMA__CU_THREADS, 0, c->stream>>>(c->red, a, b, n, b ? 0 : 2);
    CU_LAUNCHED(c, "reduce_acc");
    k_reduce_acc<<<1, 32, 0, c->stream>>>(c->red, MAMA__CU_RED_BLOCKS, acc, div);
    CU_LAUNCHED(c, "reduce_acc (final)");
}
__global__ void k_acc_to_scalar(float *y, const double *acc) { y[0] += (float)acc[0]; }
static void cuda_acc_to_scalar(mama_backend *be, float *y, const double *acc) {
    mama_cuda_impl *c = cu_impl(be);
    k_acc_to_scalar<<<1, 1, 0, c->stream>>>(y, acc);
    CU_LAUNCHED(c, "acc_to_scalar");
}
static double cu_reduce(mama_backend *be, const float *a, const float *b, size_t n) {
    mama_cuda_impl *c = cu_impl(be);
    be->host_syncs++;
    if (!n) return 0.0;
    k_reduce_partial<<<MAMA__CU_RED_BLOCKS, MAMA__CU_THREADS, 0, c->stream>>>(c->red, a, b, n, b ? 0 : 1);
    CU_LAUNCHED(c, "reduction");
    k_reduce_final<<<1, 32, 0, c->stream>>>(c->red, MAMA__CU_RED_BLOCKS);
    CU_LAUNCHED(c, "reduction (final)");
    cu_note(c, cudaMemcpyAsync(c->red_host, c->red + MAMA__CU_RED_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost,
                               c->stream), "reduction download");
    cu_note(c, cudaStreamSynchronize(c->stream), "reduction sync");
    return c->err == MAMA_OK ? *c->red_host : NAN; /* a failed device reads as non-finite */
}
static double cuda_dot(mama_backend *be, const float *a, const float *b, size_t n) {
    return cu_reduce(be, a, b, n);
}
static double cuda_sum_squares(mama_backend *be, const float *x, size_t n) {
    return cu_reduce(be, x, (const float *)NULL, n);
}

/* ---- optimisers ---------------------------------------------------------- */

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float beta1, float beta2, float omb1,
                        float omb2, float eps, float step_size, float bc2_sqrt, float decay) {
    CU_FOR(i, n) {
        float gi = g[i], mi = beta1 * m[i] + omb1 * gi, vi = beta2 * v[i] + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}
/* the CPU's formula; the bias corrections in double on the host */
static void cuda_adamw_step(mama_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                            float beta1, float beta2, float eps, float weight_decay, int t) {
    mama_cuda_impl *c = cu_impl(be);
    double bc1, bc2;
    if (!n) return;
    if (t < 1) t = 1;
    bc1 = 1.0 - pow((double)beta1, (double)t);
    bc2 = 1.0 - pow((double)beta2, (double)t);
    k_adamw<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(
        p, g, m, v, n, beta1, beta2, 1.0f - beta1, 1.0f - beta2, eps, (float)(lr / bc1), (float)sqrt(bc2),
        1.0f - lr * weight_decay);
    CU_LAUNCHED(c, "adamw_step");
}

__global__ void k_sgd(float *p, const float *g, float *buf, size_t n, float lr, float momentum, float wd, int first,
                      int use_buf) {
    CU_FOR(i, n) {
        float d = g[i] + wd * p[i];
        if (use_buf) {
            d = first ? d : momentum * buf[i] + d;
            buf[i] = d;
        }
        p[i] -= lr * d;
    }
}
static void cuda_sgd_step(mama_backend *be, float *p, const float *g, float *buf, size_t n, float lr, float momentum,
                          float weight_decay, int first) {
    mama_cuda_impl *c = cu_impl(be);
    if (!n) return;
    k_sgd<<<cu_grid(n, MAMA__CU_THREADS), MAMA__CU_THREADS, 0, c->stream>>>(p, g, buf, n, lr, momentum, weight_decay,
                                                                          first, momentum != 0.0f && buf != NULL);
    CU_LAUNCHED(c, "sgd_step");
}

/* ---- creation ------------------------------------------------------------ */

extern "C" mama_status mama_cuda_device_query(int *count) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    *count = 0;
    if (e != cudaSuccess) {
        cudaGetLastError();
        return MAMA_FAIL(MAMA_ERR_BACKEND, "cuda: cudaGetDeviceCount failed: %s (%s)", cudaGetErrorString(e),
                         cudaGetErrorName(e));
    }
    *count = n;
    return MAMA_OK;
}
extern "C" int mama_cuda_device_count(void) {
    int n;
    return mama_cuda_device_query(&n) == MAMA_OK ? n : -1;
}

extern "C" mama_status mama_cuda_set_precision(mama_backend *be, int precision) {
    if (!be || !be->name || strcmp(be->name, "cuda") != 0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_cuda_set_precision: not a CUDA backend");
    if (precision != MAMA_CUDA_FP32 && precision != MAMA_CUDA_TF32 && precision != MAMA_CUDA_BF16)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_cuda_set_precision: unknown precision %d", precision);
    cu_impl(be)->precision = precision;
    return MAMA_OK;
}

extern "C" mama_status mama_cuda_host_alloc(void **ptr, size_t bytes) {
    *ptr = NULL;
    if (cudaMallocHost(ptr, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        *ptr = NULL;
        return MAMA_FAIL(MAMA_ERR_NOMEM, "cuda: cudaMallocHost of %zu pinned bytes failed", bytes);
    }
    return MAMA_OK;
}
extern "C" void mama_cuda_host_free(void *ptr) {
    if (ptr) cudaFreeHost(ptr);
}

extern "C" void mama_cuda_backend_free(mama_backend *be) {
    mama_cuda_impl *c;
    if (!be) return;
    c = cu_impl(be);
    if (c) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->scratch) cudaFree(c->scratch);
        if (c->colbuf) cudaFree(c->colbuf);
        if (c->red) cudaFree(c->red);
        if (c->scal) cudaFree(c->scal);
        if (c->red_host) cudaFreeHost(c->red_host);
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        mama_free(c);
    }
    mama_free(be);
}

extern "C" mama_status mama_cuda_backend_create(mama_backend **out, int device) {
    mama_backend *be = NULL;
    mama_cuda_impl *c = NULL;
    int count = 0;
    cudaError_t e;
    *out = NULL;
    e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return MAMA_FAIL(MAMA_ERR_UNSUPPORTED, "cuda: no CUDA device available (%s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    }
    if (device < 0 || device >= count)
        return MAMA_FAIL(MAMA_ERR_INVALID, "cuda: device %d does not exist (%d device%s)", device, count,
                         count == 1 ? "" : "s");
    MAMA_TRY(mama_calloc((void **)&be, sizeof *be, "cuda backend"));
    if (mama_calloc((void **)&c, sizeof *c, "cuda backend") != MAMA_OK) {
        mama_free(be);
        return MAMA_ERR_NOMEM;
    }
    be->impl = c;
    be->name = "cuda";
    c->device = device;
    c->precision = MAMA_CUDA_FP32;
    c->err = MAMA_OK;
    c->debug_sync = getenv("MAMA_CUDA_DEBUG") && atoi(getenv("MAMA_CUDA_DEBUG")) != 0;
    if (cu_check(cudaSetDevice(device), "cudaSetDevice") != MAMA_OK ||
        cu_check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate") != MAMA_OK ||
        cu_check(cudaMalloc((void **)&c->red, sizeof(double) * (MAMA__CU_RED_BLOCKS + 1)), "cudaMalloc") != MAMA_OK ||
        cu_check(cudaMalloc((void **)&c->scal, sizeof(float) * 2), "cudaMalloc") != MAMA_OK ||
        cu_check(cudaMallocHost((void **)&c->red_host, sizeof(double)), "cudaMallocHost") != MAMA_OK) {
        mama_cuda_backend_free(be);
        return MAMA_ERR_BACKEND;
    }
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        mama_cuda_backend_free(be);
        return MAMA_FAIL(MAMA_ERR_BACKEND, "cuda: cublasCreate failed");
    }
    cublasSetStream(c->blas, c->stream);
    be->alloc = cuda_alloc; be->free = cuda_free;
    be->to_device = cuda_to_device; be->to_host = cuda_to_host; be->copy = cuda_copy;
    be->zero = cuda_zero; be->sync = cuda_sync;
    be->gemm = cuda_gemm; be->gemm_batched = cuda_gemm_batched;
    be->bias_add_forward = cuda_bias_add_forward; be->bias_add_backward = cuda_bias_add_backward;
    be->add = cuda_add; be->accumulate = cuda_accumulate; be->scale = cuda_scale;
    be->gelu_forward = cuda_gelu_forward; be->gelu_backward = cuda_gelu_backward;
    be->relu_forward = cuda_relu_forward; be->relu_backward = cuda_relu_backward;
    be->dropout_forward = cuda_dropout_forward; be->dropout_backward = cuda_dropout_backward;
    be->layerscale_forward = cuda_layerscale_forward; be->layerscale_backward = cuda_layerscale_backward;
    be->layernorm_forward = cuda_layernorm_forward; be->layernorm_backward = cuda_layernorm_backward;
    be->batchnorm_forward = cuda_batchnorm_forward; be->batchnorm_backward = cuda_batchnorm_backward;
    be->l2norm_forward = cuda_l2norm_forward; be->l2norm_backward = cuda_l2norm_backward;
    be->attention_forward = cuda_attention_forward; be->attention_backward = cuda_attention_backward;
    be->meanpool_forward = cuda_meanpool_forward; be->meanpool_backward = cuda_meanpool_backward;
    be->embedding_forward = cuda_embedding_forward; be->embedding_backward = cuda_embedding_backward;
    be->im2col_patches = cuda_im2col_patches;
    be->vit_tokens_forward = cuda_vit_tokens_forward; be->vit_tokens_backward = cuda_vit_tokens_backward;
    be->cross_entropy_forward = cuda_cross_entropy_forward; be->cross_entropy_backward = cuda_cross_entropy_backward;
    be->segment_max_forward = cuda_segment_max_forward; be->segment_max_backward = cuda_segment_max_backward;
    be->transpose = cuda_transpose; be->fill_diagonal = cuda_fill_diagonal; be->dot = cuda_dot;
    be->adamw_step = cuda_adamw_step; be->sgd_step = cuda_sgd_step; be->sum_squares = cuda_sum_squares;
    be->destroy = mama_cuda_backend_free;
    be->host_alloc = cuda_host_alloc; be->host_free = cuda_host_free; be->to_device_async = cuda_to_device_async;
    be->reduce_acc = cuda_reduce_acc; be->acc_to_scalar = cuda_acc_to_scalar; be->scale_exp = cuda_scale_exp;
    be->gemm_exp_alpha = cuda_gemm_exp_alpha; be->stream = cuda_stream;
    *out = be;
    return MAMA_OK;
}
