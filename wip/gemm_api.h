/* ---------------------------------------------------------------------------
 * 1.7 Matrix multiply (section 3.2 has the implementation).
 *
 * Row-major single precision GEMM, BLAS semantics:
 *
 *     C = alpha * op(A) * op(B) + beta * C
 *
 * op(A) is M x K (A is stored M x K with row stride lda, or K x M when
 * trans_a != 0), op(B) is K x N (B stored K x N with row stride ldb, or
 * N x K when trans_b != 0), C is M x N with row stride ldc.  A linear
 * layer y = x W^T with W stored [out, in] is mama_sgemm(0, 1, ...).
 *
 * beta == 0 overwrites C without reading it (C may hold NaN or garbage).
 * M, N <= 0 is a no-op; K <= 0 or alpha == 0 just scales C by beta.
 * These calls never fail and never allocate: the packing buffers are
 * static (one set per thread slot, MAMA_GEMM_MAX_THREADS slots).
 * ------------------------------------------------------------------------- */
MAMA_API void mama_sgemm(int trans_a, int trans_b, int M, int N, int K,
                         float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta,
                         float *C, int ldc);

/* `batch` independent GEMMs; matrix b uses A + b*sa, B + b*sb, C + b*sc
 * (strides in floats). */
MAMA_API void mama_sgemm_batched(int trans_a, int trans_b, int M, int N, int K,
                                 float alpha, const float *A, int lda, long long sa,
                                 const float *B, int ldb, long long sb, float beta,
                                 float *C, int ldc, long long sc, int batch);

/* The micro-kernel the run-time dispatch picked for this CPU:
 * "avx512", "avx2", "scalar" (or "cblas" when built with MAMA_USE_CBLAS). */
MAMA_API const char *mama_gemm_kernel_name(void);

/* Testing and benchmarking hook: force a kernel by name ("scalar", "avx2",
 * "avx512"); NULL, "" or "auto" restores run-time dispatch.  Returns 1 when
 * the kernel exists in this build and this CPU runs it, 0 otherwise (then
 * nothing changes).  Not thread-safe against concurrent GEMMs. */
MAMA_API int mama_gemm_force_kernel(const char *name);
