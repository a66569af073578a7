/* mama_cuda.cu - the CUDA backend of mama.h: the same function table
 * (struct mama_backend) filled with device kernels and cuBLAS.
 *
 * Status: skeleton.  Memory management, copies and the GEMMs (cuBLAS) are
 * implemented; the remaining ops are not yet, so mama_cuda_backend_create()
 * reports MAMA_ERR_UNSUPPORTED and names the first missing op instead of
 * handing out a table with holes.  Build: `make cuda` (nvcc + cuBLAS).
 *
 * Row-major GEMM through column-major cuBLAS: a row-major C = A B is the
 * column-major C^T = B^T A^T, so we call cuBLAS with the operands swapped
 * and the same transpose flags. */
#include "mama.h"

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <stdio.h>
#include <string.h>

extern "C" {
MAMA_API mama_status mama_cuda_backend_create(mama_backend **out, int device);
MAMA_API void mama_cuda_backend_free(mama_backend *be);
}

struct mama_cuda_impl {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
};

static mama_status mama_cuda_check(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return MAMA_OK;
    return MAMA_FAIL(MAMA_ERR_BACKEND, "cuda: %s: %s", what, cudaGetErrorString(e));
}

static mama_status cuda_alloc(mama_backend *be, void **ptr, size_t bytes) {
    (void)be;
    *ptr = NULL;
    return mama_cuda_check(cudaMalloc(ptr, bytes ? bytes : 1), "cudaMalloc");
}
static void cuda_free(mama_backend *be, void *ptr) { (void)be; if (ptr) cudaFree(ptr); }
static mama_status cuda_copy_kind(mama_backend *be, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    mama_cuda_impl *c = (mama_cuda_impl *)be->impl;
    mama_status s = mama_cuda_check(cudaMemcpyAsync(dst, src, bytes, kind, c->stream), "cudaMemcpyAsync");
    if (s == MAMA_OK && kind == cudaMemcpyDeviceToHost) s = mama_cuda_check(cudaStreamSynchronize(c->stream), "sync");
    return s;
}
static mama_status cuda_to_device(mama_backend *be, void *dst, const void *src, size_t bytes) {
    return cuda_copy_kind(be, dst, src, bytes, cudaMemcpyHostToDevice);
}
static mama_status cuda_to_host(mama_backend *be, void *dst, const void *src, size_t bytes) {
    return cuda_copy_kind(be, dst, src, bytes, cudaMemcpyDeviceToHost);
}
static mama_status cuda_copy(mama_backend *be, void *dst, const void *src, size_t bytes) {
    return cuda_copy_kind(be, dst, src, bytes, cudaMemcpyDeviceToDevice);
}
static mama_status cuda_zero(mama_backend *be, void *dst, size_t bytes) {
    mama_cuda_impl *c = (mama_cuda_impl *)be->impl;
    return mama_cuda_check(cudaMemsetAsync(dst, 0, bytes, c->stream), "cudaMemsetAsync");
}
static mama_status cuda_sync(mama_backend *be) {
    mama_cuda_impl *c = (mama_cuda_impl *)be->impl;
    return mama_cuda_check(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
}

static void cuda_gemm_batched(mama_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                              int lda, long long sa, const float *B, int ldb, long long sb, float beta, float *C,
                              int ldc, long long sc, int batch) {
    mama_cuda_impl *c = (mama_cuda_impl *)be->impl;
    /* row-major C[M,N] = op(A) op(B)  <=>  column-major C^T[N,M] = op(B)^T op(A)^T */
    cublasSgemmStridedBatched(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                              &alpha, B, ldb, sb, A, lda, sa, &beta, C, ldc, sc, batch);
}
static void cuda_gemm(mama_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    cuda_gemm_batched(be, ta, tb, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

extern "C" MAMA_API void mama_cuda_backend_free(mama_backend *be) {
    if (!be) return;
    mama_cuda_impl *c = (mama_cuda_impl *)be->impl;
    if (c) {
        cublasDestroy(c->blas);
        cudaStreamDestroy(c->stream);
        mama_free(c);
    }
    mama_free(be);
}

extern "C" MAMA_API mama_status mama_cuda_backend_create(mama_backend **out, int device) {
    mama_backend *be = NULL;
    mama_cuda_impl *c = NULL;
    *out = NULL;
    MAMA_TRY(mama_calloc((void **)&be, sizeof *be, "cuda backend"));
    if (mama_calloc((void **)&c, sizeof *c, "cuda backend") != MAMA_OK) { mama_free(be); return MAMA_ERR_NOMEM; }
    be->impl = c;
    be->name = "cuda";
    c->device = device;
    if (mama_cuda_check(cudaSetDevice(device), "cudaSetDevice") != MAMA_OK ||
        mama_cuda_check(cudaStreamCreate(&c->stream), "cudaStreamCreate") != MAMA_OK) {
        mama_free(c); mama_free(be);
        return MAMA_ERR_BACKEND;
    }
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(c->stream); mama_free(c); mama_free(be);
        return MAMA_FAIL(MAMA_ERR_BACKEND, "cuda: cublasCreate failed");
    }
    cublasSetStream(c->blas, c->stream);
    be->alloc = cuda_alloc; be->free = cuda_free;
    be->to_device = cuda_to_device; be->to_host = cuda_to_host; be->copy = cuda_copy;
    be->zero = cuda_zero; be->sync = cuda_sync;
    be->gemm = cuda_gemm; be->gemm_batched = cuda_gemm_batched;
    /* Every other op is still missing: refuse rather than crash later. */
    if (!be->layernorm_forward) {
        mama_cuda_backend_free(be);
        return MAMA_FAIL(MAMA_ERR_UNSUPPORTED, "cuda backend: op layernorm_forward and the other non-GEMM ops are "
                         "not implemented yet (mama_cuda.cu is a skeleton); use the CPU backend");
    }
    *out = be;
    return MAMA_OK;
}
