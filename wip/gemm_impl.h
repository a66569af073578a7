/* ---------------------------------------------------------------------------
 * 3.2 GEMM: C = alpha * op(A) op(B) + beta * C, row-major float32.
 *
 * The classic GotoBLAS / BLIS decomposition.  For a C of M x N and an inner
 * dimension K, five loops around a tiny "micro-kernel":
 *
 *   for jc in N step NC:                      (B panel: KC x NC, in L3)
 *     for pc in K step KC:
 *       for ic in M step MC:                  (A block: MC x KC, in L2)
 *         pack alpha*op(A)[ic:ic+mc, pc:pc+kc] -> Ap, MR-row micro-panels
 *         for jr in nc step NR:               (B micro-panel KC x NR, in L1)
 *           if first ic: pack op(B)[pc:pc+kc, jc+jr:+NR] -> Bp_jr
 *           for ir in mc step MR:
 *             C[ir:ir+MR, jr:jr+NR] (+)= Ap_ir (MR x kc) * Bp_jr (kc x NR)
 *
 * The micro-kernel keeps the MR x NR tile of C in vector registers for the
 * whole kc loop: each step loads one row of NR floats of B, broadcasts MR
 * floats of A and does MR*NR/W fused multiply-adds (W = floats per vector).
 * AVX2: 6 x 16 (12 accumulators of 8 floats), AVX-512: 12 x 32 (24
 * accumulators of 16).  Packing makes both operands contiguous in exactly
 * the order the kernel reads them, handles the transposes (op) once per
 * element instead of in the kernel, folds alpha into A, and pads edges with
 * zeros so the kernel always runs a full tile; edge tiles of C (M or N not a
 * multiple of MR / NR) are computed into a small temporary and merged.
 *
 * beta is applied on the first kc block only (later blocks accumulate with
 * beta = 1); beta == 0 stores without reading C, so NaN in C is ignored, as
 * BLAS promises.
 *
 * Threads: C is cut into tm x tn rectangles (tm * tn = threads, chosen to
 * minimise the largest rectangle's work), and every thread runs the blocked
 * algorithm on its own rectangle with its own packing buffers: no barriers,
 * no sharing.  The price, packing B (or A) once per thread, is about one
 * element move per few hundred multiply-adds.  Small products stay on one
 * thread; tiny ones (M*N*K < 32768) skip packing altogether.
 *
 * No allocation: packing buffers are static, one A and one B buffer per
 * thread slot (MAMA_GEMM_MAX_THREADS of them, default 32; more threads are
 * capped).  That is 1.2 MB of .bss per slot, but only the slots that run
 * ever get touched, i.e. backed by memory.  A
 * lock protects them; a GEMM that finds them busy (a call from another
 * thread, or from inside a parallel region of the caller) runs on one
 * thread with small buffers on its own stack instead.  So the GEMM never
 * fails and is safe to call concurrently.
 * ------------------------------------------------------------------------- */

#ifdef MAMA_USE_CBLAS
#include <cblas.h>
#endif

#ifndef MAMA_GEMM_MAX_THREADS
#define MAMA_GEMM_MAX_THREADS 32
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MAMA__GEMM_UNUSED __attribute__((unused))
#else
#define MAMA__GEMM_UNUSED
#endif

/* Largest block sizes of any kernel, in floats (see mama__gemm_kernels). */
#define MAMA__GEMM_ABUF (144 * 256)      /* MC x KC               */
#define MAMA__GEMM_BBUF (256 * 1024)     /* KC x NC               */
#define MAMA__GEMM_PAD 32                /* align to 64 B + spill */
/* Stack fallback blocks: KC_S x (NC_S) of B, one MR x KC_S sliver of A. */
#define MAMA__GEMM_KC_S 64
#define MAMA__GEMM_NC_S 128
#define MAMA__GEMM_MAXTILE (12 * 32)     /* largest MR x NR       */

/* A micro-kernel: c[MR x NR] (row stride ldc) = beta*c + a*b over kc steps,
 * a packed MR-interleaved (a[k*MR + i]), b packed NR-interleaved
 * (b[k*NR + j]).  beta == 0 never reads c. */
typedef void (*mama__gemm_ukernel)(long kc, const float *a, const float *b,
                                   float *c, long ldc, float beta);

/* Packs op(B)[k0:k0+kc, j0:j0+nc] (see mama__gemm_pack_b). */
struct mama__gemm_args;
typedef void (*mama__gemm_packer)(const struct mama__gemm_args *g, int k0, int kc, int j0, int nc,
                                  int nr, float *dst);

typedef struct mama__gemm_kinfo {
    const char *name;
    mama__gemm_ukernel kern;
    mama__gemm_packer pack_b;
    mama__gemm_packer pack_a; /* (g, i0, mc, k0, kc, mr, dst) */
    int mr, nr;     /* register tile                            */
    int mc, kc, nc; /* cache blocks (mc % mr == 0, nc % nr == 0) */
} mama__gemm_kinfo;

/* The arguments of one GEMM, so helpers take one pointer. */
typedef struct mama__gemm_args {
    int ta, tb, M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    ptrdiff_t lda, ldb, ldc;
} mama__gemm_args;

/* ---- packing ---- */

/* Pack alpha * op(A)[i0:i0+mc, k0:k0+kc] into micro-panels of mr rows:
 * dst[p*mr*kc + k*mr + i] = alpha * op(A)[i0 + p*mr + i, k0 + k]; rows
 * past mc are zero. */
static void mama__gemm_pack_a(const mama__gemm_args *g, int i0, int mc, int k0, int kc,
                              int mr, float *dst) {
    int ir, i, k;
    float alpha = g->alpha;
    for (ir = 0; ir < mc; ir += mr) {
        int m = mc - ir < mr ? mc - ir : mr;
        if (!g->ta) {
            /* A is M x K: row i is contiguous in k */
            for (i = 0; i < m; i++) {
                const float *src = g->A + (ptrdiff_t)(i0 + ir + i) * g->lda + k0;
                for (k = 0; k < kc; k++) dst[k * mr + i] = alpha * src[k];
            }
        } else {
            /* A is K x M: column k of op(A) is contiguous in i */
            for (k = 0; k < kc; k++) {
                const float *src = g->A + (ptrdiff_t)(k0 + k) * g->lda + i0 + ir;
                for (i = 0; i < m; i++) dst[k * mr + i] = alpha * src[i];
            }
        }
        if (m < mr)
            for (k = 0; k < kc; k++)
                for (i = m; i < mr; i++) dst[k * mr + i] = 0.0f;
        dst += (ptrdiff_t)mr * kc;
    }
}

/* Pack op(B)[k0:k0+kc, j0:j0+nc] into micro-panels of nr columns:
 * dst[p*nr*kc + k*nr + j] = op(B)[k0 + k, j0 + p*nr + j]; columns past nc
 * are zero. */
static void mama__gemm_pack_b(const mama__gemm_args *g, int k0, int kc, int j0, int nc,
                              int nr, float *dst) {
    int jr, j, k;
    for (jr = 0; jr < nc; jr += nr) {
        int n = nc - jr < nr ? nc - jr : nr;
        if (!g->tb) {
            /* B is K x N: row k is contiguous in j (the common NN case) */
            for (k = 0; k < kc; k++) {
                const float *src = g->B + (ptrdiff_t)(k0 + k) * g->ldb + j0 + jr;
                float *d = dst + k * nr;
                for (j = 0; j < n; j++) d[j] = src[j];
                for (; j < nr; j++) d[j] = 0.0f;
            }
        } else {
            /* B is N x K (a linear layer's W): row j is contiguous in k.
             * Four rows at a time keeps four read streams going while the
             * writes fill the same cache lines of dst. */
            for (j = 0; j + 4 <= n; j += 4) {
                const float *s0 = g->B + (ptrdiff_t)(j0 + jr + j) * g->ldb + k0;
                const float *s1 = s0 + g->ldb, *s2 = s1 + g->ldb, *s3 = s2 + g->ldb;
                float *d = dst + j;
                for (k = 0; k < kc; k++) {
                    d[k * nr + 0] = s0[k];
                    d[k * nr + 1] = s1[k];
                    d[k * nr + 2] = s2[k];
                    d[k * nr + 3] = s3[k];
                }
            }
            for (; j < n; j++) {
                const float *s = g->B + (ptrdiff_t)(j0 + jr + j) * g->ldb + k0;
                for (k = 0; k < kc; k++) dst[k * nr + j] = s[k];
            }
            if (n < nr)
                for (k = 0; k < kc; k++)
                    for (j = n; j < nr; j++) dst[k * nr + j] = 0.0f;
        }
        dst += (ptrdiff_t)nr * kc;
    }
}

/* ---- portable kernel, 4 x 8, no intrinsics ----
 * With GCC / clang the tile is 8 vectors of 4 floats (GNU vector
 * extensions: SSE2 on any x86-64, NEON on ARM), 11 registers in all; other
 * compilers get plain loops. */
#if defined(__GNUC__) || defined(__clang__)
typedef float mama__v4 __attribute__((vector_size(16)));
#define MAMA__V4_SPLAT(v, x) { float mama__x = (x); mama__v4 mama__t = {mama__x, mama__x, mama__x, mama__x}; v = mama__t; }

static void mama__gemm_v4_store(float *cr, mama__v4 x0, mama__v4 x1, float beta) {
    float t[8];
    int j;
    memcpy(t, &x0, sizeof x0);
    memcpy(t + 4, &x1, sizeof x1);
    if (beta == 0.0f)
        for (j = 0; j < 8; j++) cr[j] = t[j];
    else if (beta == 1.0f)
        for (j = 0; j < 8; j++) cr[j] += t[j];
    else
        for (j = 0; j < 8; j++) cr[j] = beta * cr[j] + t[j];
}

static void mama__gemm_kernel_scalar(long kc, const float *a, const float *b, float *c, long ldc,
                                     float beta) {
    mama__v4 z = {0.0f, 0.0f, 0.0f, 0.0f};
    mama__v4 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    long k;
    for (k = 0; k < kc; k++) {
        mama__v4 b0, b1, av;
        memcpy(&b0, b, sizeof b0);
        memcpy(&b1, b + 4, sizeof b1);
        MAMA__V4_SPLAT(av, a[0]); c00 += av * b0; c01 += av * b1;
        MAMA__V4_SPLAT(av, a[1]); c10 += av * b0; c11 += av * b1;
        MAMA__V4_SPLAT(av, a[2]); c20 += av * b0; c21 += av * b1;
        MAMA__V4_SPLAT(av, a[3]); c30 += av * b0; c31 += av * b1;
        a += 4;
        b += 8;
    }
    mama__gemm_v4_store(c, c00, c01, beta);
    mama__gemm_v4_store(c + ldc, c10, c11, beta);
    mama__gemm_v4_store(c + 2 * ldc, c20, c21, beta);
    mama__gemm_v4_store(c + 3 * ldc, c30, c31, beta);
}
#else
static void mama__gemm_kernel_scalar(long kc, const float *a, const float *b, float *c, long ldc,
                                     float beta) {
    float acc[4][8];
    long k;
    int i, j;
    for (i = 0; i < 4; i++)
        for (j = 0; j < 8; j++) acc[i][j] = 0.0f;
    for (k = 0; k < kc; k++) {
        for (i = 0; i < 4; i++)
            for (j = 0; j < 8; j++) acc[i][j] += a[i] * b[j];
        a += 4;
        b += 8;
    }
    for (i = 0; i < 4; i++) {
        float *cr = c + i * ldc;
        for (j = 0; j < 8; j++)
            cr[j] = beta == 0.0f ? acc[i][j] : beta == 1.0f ? cr[j] + acc[i][j] : beta * cr[j] + acc[i][j];
    }
}
#endif

#ifdef MAMA_X86_SIMD
/* ---- AVX2 + FMA kernel, 6 x 16 ----
 * 12 ymm accumulators c<i>a, c<i>b (row i, columns 0-7 and 8-15), two for
 * the B row, one for the broadcast A value: 15 of the 16 ymm registers. */
#define MAMA__AVX2_DECL(i) __m256 c##i##a = _mm256_setzero_ps(), c##i##b = _mm256_setzero_ps();
#define MAMA__AVX2_FMA(i, u)                                            \
    {                                                                   \
        __m256 av = _mm256_broadcast_ss(a + (u) * 6 + (i));             \
        c##i##a = _mm256_fmadd_ps(av, b0, c##i##a);                     \
        c##i##b = _mm256_fmadd_ps(av, b1, c##i##b);                     \
    }
#define MAMA__AVX2_STEP(u)                                              \
    {                                                                   \
        __m256 b0 = _mm256_loadu_ps(b + (u) * 16);                      \
        __m256 b1 = _mm256_loadu_ps(b + (u) * 16 + 8);                  \
        MAMA__AVX2_FMA(0, u) MAMA__AVX2_FMA(1, u) MAMA__AVX2_FMA(2, u)  \
        MAMA__AVX2_FMA(3, u) MAMA__AVX2_FMA(4, u) MAMA__AVX2_FMA(5, u)  \
    }
#define MAMA__GEMM_PREFETCH_C(i)                                        \
    _mm_prefetch((const char *)(c + (i) * ldc), _MM_HINT_T0);           \
    _mm_prefetch((const char *)(c + (i) * ldc + 15), _MM_HINT_T0);
#define MAMA__AVX2_STORE(i) mama__gemm_avx2_store(c + (i) * ldc, c##i##a, c##i##b, beta);

__attribute__((target("avx2,fma"))) static inline void
mama__gemm_avx2_store(float *cr, __m256 x0, __m256 x1, float beta) {
    if (beta == 0.0f) {
        _mm256_storeu_ps(cr, x0);
        _mm256_storeu_ps(cr + 8, x1);
    } else if (beta == 1.0f) {
        _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), x0));
        _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), x1));
    } else {
        __m256 bv = _mm256_set1_ps(beta);
        _mm256_storeu_ps(cr, _mm256_fmadd_ps(bv, _mm256_loadu_ps(cr), x0));
        _mm256_storeu_ps(cr + 8, _mm256_fmadd_ps(bv, _mm256_loadu_ps(cr + 8), x1));
    }
}

__attribute__((target("avx2,fma"))) static void
mama__gemm_kernel_avx2(long kc, const float *a, const float *b, float *c, long ldc, float beta) {
    long k;
    MAMA__AVX2_DECL(0) MAMA__AVX2_DECL(1) MAMA__AVX2_DECL(2)
    MAMA__AVX2_DECL(3) MAMA__AVX2_DECL(4) MAMA__AVX2_DECL(5)
    /* start fetching the C tile now; it is needed only after the kc loop */
    MAMA__GEMM_PREFETCH_C(0) MAMA__GEMM_PREFETCH_C(1) MAMA__GEMM_PREFETCH_C(2)
    MAMA__GEMM_PREFETCH_C(3) MAMA__GEMM_PREFETCH_C(4) MAMA__GEMM_PREFETCH_C(5)
    /* unrolled by 4: the loop overhead then hides behind 48 FMAs */
    for (k = 0; k + 4 <= kc; k += 4) {
        MAMA__AVX2_STEP(0) MAMA__AVX2_STEP(1) MAMA__AVX2_STEP(2) MAMA__AVX2_STEP(3)
        a += 4 * 6;
        b += 4 * 16;
    }
    for (; k < kc; k++) {
        MAMA__AVX2_STEP(0)
        a += 6;
        b += 16;
    }
    MAMA__AVX2_STORE(0) MAMA__AVX2_STORE(1) MAMA__AVX2_STORE(2)
    MAMA__AVX2_STORE(3) MAMA__AVX2_STORE(4) MAMA__AVX2_STORE(5)
}

/* In-register transpose of the 8 x 8 block whose rows are r0..r7: after
 * it, r<c> holds column c (unpack pairs, shuffle quads, swap 128-bit
 * halves). */
#define MAMA__TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)                                  \
    {                                                                                     \
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);          \
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);          \
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);          \
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);          \
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE); \
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE); \
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE); \
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE); \
        r0 = _mm256_permute2f128_ps(u0, u4, 0x20);                                        \
        r1 = _mm256_permute2f128_ps(u1, u5, 0x20);                                        \
        r2 = _mm256_permute2f128_ps(u2, u6, 0x20);                                        \
        r3 = _mm256_permute2f128_ps(u3, u7, 0x20);                                        \
        r4 = _mm256_permute2f128_ps(u0, u4, 0x31);                                        \
        r5 = _mm256_permute2f128_ps(u1, u5, 0x31);                                        \
        r6 = _mm256_permute2f128_ps(u2, u6, 0x31);                                        \
        r7 = _mm256_permute2f128_ps(u3, u7, 0x31);                                        \
    }

/* alpha * op(A) packing for the 6-row kernel when A is not transposed
 * (rows of A contiguous in k): 6 rows x 8 k are loaded, scaled, padded to
 * 8 rows and transposed; column c (6 values + 2 junk) is stored at
 * dst + (k+c)*6, each store's 2 junk floats being overwritten by the next
 * one (the last store of the buffer may spill 2 floats into
 * MAMA__GEMM_PAD).  Other cases use the portable loop. */
__attribute__((target("avx2,fma"))) static void
mama__gemm_pack_a_avx2(const mama__gemm_args *g, int i0, int mc, int k0, int kc, int mr,
                       float *dst) {
    int ir, k, i;
    if (g->ta || mr != 6) {
        mama__gemm_pack_a(g, i0, mc, k0, kc, mr, dst);
        return;
    }
    for (ir = 0; ir + 6 <= mc; ir += 6) {
        const float *s = g->A + (ptrdiff_t)(i0 + ir) * g->lda + k0;
        ptrdiff_t ld = g->lda;
        __m256 al = _mm256_set1_ps(g->alpha);
        for (k = 0; k + 8 <= kc; k += 8) {
            __m256 r0 = _mm256_mul_ps(al, _mm256_loadu_ps(s + k));
            __m256 r1 = _mm256_mul_ps(al, _mm256_loadu_ps(s + ld + k));
            __m256 r2 = _mm256_mul_ps(al, _mm256_loadu_ps(s + 2 * ld + k));
            __m256 r3 = _mm256_mul_ps(al, _mm256_loadu_ps(s + 3 * ld + k));
            __m256 r4 = _mm256_mul_ps(al, _mm256_loadu_ps(s + 4 * ld + k));
            __m256 r5 = _mm256_mul_ps(al, _mm256_loadu_ps(s + 5 * ld + k));
            __m256 r6 = _mm256_setzero_ps(), r7 = _mm256_setzero_ps();
            float *d = dst + (ptrdiff_t)k * 6;
            MAMA__TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)
            _mm256_storeu_ps(d + 0, r0);
            _mm256_storeu_ps(d + 6, r1);
            _mm256_storeu_ps(d + 12, r2);
            _mm256_storeu_ps(d + 18, r3);
            _mm256_storeu_ps(d + 24, r4);
            _mm256_storeu_ps(d + 30, r5);
            _mm256_storeu_ps(d + 36, r6);
            _mm256_storeu_ps(d + 42, r7);
        }
        for (; k < kc; k++)
            for (i = 0; i < 6; i++) dst[(ptrdiff_t)k * 6 + i] = g->alpha * s[i * ld + k];
        dst += (ptrdiff_t)6 * kc;
    }
    if (ir < mc) mama__gemm_pack_a(g, i0 + ir, mc - ir, k0, kc, mr, dst);
}

/* op(B) packing with AVX2: full panels (nc a multiple of nr, nr a multiple
 * of 8) by vectors, anything else by the portable loop.  NN: each k row of
 * the panel is nr contiguous floats; the rows are ldb apart, so the
 * hardware prefetcher cannot follow them: we prefetch the same rows' next
 * nr floats, which the next panel will need.  NT: 8 x 8 blocks are loaded
 * along k (contiguous) and transposed in registers. */
__attribute__((target("avx2,fma"))) static void
mama__gemm_pack_b_avx2(const mama__gemm_args *g, int k0, int kc, int j0, int nc, int nr,
                       float *dst) {
    int jr, j, k, v;
    if (nr % 8) {
        mama__gemm_pack_b(g, k0, kc, j0, nc, nr, dst);
        return;
    }
    for (jr = 0; jr + nr <= nc; jr += nr) {
        if (!g->tb) {
            const float *src = g->B + (ptrdiff_t)k0 * g->ldb + j0 + jr;
            for (k = 0; k < kc; k++) {
                float *d = dst + (ptrdiff_t)k * nr;
                _mm_prefetch((const char *)(src + nr), _MM_HINT_T0);
                _mm_prefetch((const char *)(src + 2 * nr - 1), _MM_HINT_T0);
                for (v = 0; v < nr; v += 8) _mm256_storeu_ps(d + v, _mm256_loadu_ps(src + v));
                src += g->ldb;
            }
        } else {
            for (j = 0; j < nr; j += 8) {
                const float *s = g->B + (ptrdiff_t)(j0 + jr + j) * g->ldb + k0;
                ptrdiff_t ld = g->ldb;
                for (k = 0; k + 8 <= kc; k += 8) {
                    __m256 r0 = _mm256_loadu_ps(s + k), r1 = _mm256_loadu_ps(s + ld + k);
                    __m256 r2 = _mm256_loadu_ps(s + 2 * ld + k), r3 = _mm256_loadu_ps(s + 3 * ld + k);
                    __m256 r4 = _mm256_loadu_ps(s + 4 * ld + k), r5 = _mm256_loadu_ps(s + 5 * ld + k);
                    __m256 r6 = _mm256_loadu_ps(s + 6 * ld + k), r7 = _mm256_loadu_ps(s + 7 * ld + k);
                    float *d = dst + (ptrdiff_t)k * nr + j;
                    MAMA__TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)
                    /* column c of the 8 x 8 block = row k+c of the panel */
                    _mm256_storeu_ps(d + 0 * nr, r0);
                    _mm256_storeu_ps(d + 1 * nr, r1);
                    _mm256_storeu_ps(d + 2 * nr, r2);
                    _mm256_storeu_ps(d + 3 * nr, r3);
                    _mm256_storeu_ps(d + 4 * nr, r4);
                    _mm256_storeu_ps(d + 5 * nr, r5);
                    _mm256_storeu_ps(d + 6 * nr, r6);
                    _mm256_storeu_ps(d + 7 * nr, r7);
                }
                for (; k < kc; k++)
                    for (v = 0; v < 8; v++) dst[(ptrdiff_t)k * nr + j + v] = s[v * ld + k];
            }
        }
        dst += (ptrdiff_t)nr * kc;
    }
    if (jr < nc) mama__gemm_pack_b(g, k0, kc, j0 + jr, nc - jr, nr, dst);
}

/* ---- AVX-512F kernel, 12 x 32 ----
 * The same scheme with 16-float zmm vectors: 24 accumulators, two B
 * vectors, one broadcast (27 of the 32 zmm registers). */
#define MAMA__AVX512_DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define MAMA__AVX512_FMA(i, u)                                          \
    {                                                                   \
        __m512 av = _mm512_set1_ps(a[(u) * 12 + (i)]);                  \
        c##i##a = _mm512_fmadd_ps(av, b0, c##i##a);                     \
        c##i##b = _mm512_fmadd_ps(av, b1, c##i##b);                     \
    }
#define MAMA__AVX512_STEP(u)                                                     \
    {                                                                            \
        __m512 b0 = _mm512_loadu_ps(b + (u) * 32);                               \
        __m512 b1 = _mm512_loadu_ps(b + (u) * 32 + 16);                          \
        MAMA__AVX512_FMA(0, u) MAMA__AVX512_FMA(1, u) MAMA__AVX512_FMA(2, u)     \
        MAMA__AVX512_FMA(3, u) MAMA__AVX512_FMA(4, u) MAMA__AVX512_FMA(5, u)     \
        MAMA__AVX512_FMA(6, u) MAMA__AVX512_FMA(7, u) MAMA__AVX512_FMA(8, u)     \
        MAMA__AVX512_FMA(9, u) MAMA__AVX512_FMA(10, u) MAMA__AVX512_FMA(11, u)   \
    }
#define MAMA__AVX512_STORE(i) mama__gemm_avx512_store(c + (i) * ldc, c##i##a, c##i##b, beta);

__attribute__((target("avx512f"))) static inline void
mama__gemm_avx512_store(float *cr, __m512 x0, __m512 x1, float beta) {
    if (beta == 0.0f) {
        _mm512_storeu_ps(cr, x0);
        _mm512_storeu_ps(cr + 16, x1);
    } else if (beta == 1.0f) {
        _mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), x0));
        _mm512_storeu_ps(cr + 16, _mm512_add_ps(_mm512_loadu_ps(cr + 16), x1));
    } else {
        __m512 bv = _mm512_set1_ps(beta);
        _mm512_storeu_ps(cr, _mm512_fmadd_ps(bv, _mm512_loadu_ps(cr), x0));
        _mm512_storeu_ps(cr + 16, _mm512_fmadd_ps(bv, _mm512_loadu_ps(cr + 16), x1));
    }
}

__attribute__((target("avx512f"))) static void
mama__gemm_kernel_avx512(long kc, const float *a, const float *b, float *c, long ldc, float beta) {
    long k;
    MAMA__AVX512_DECL(0) MAMA__AVX512_DECL(1) MAMA__AVX512_DECL(2)
    MAMA__AVX512_DECL(3) MAMA__AVX512_DECL(4) MAMA__AVX512_DECL(5)
    MAMA__AVX512_DECL(6) MAMA__AVX512_DECL(7) MAMA__AVX512_DECL(8)
    MAMA__AVX512_DECL(9) MAMA__AVX512_DECL(10) MAMA__AVX512_DECL(11)
    for (k = 0; k + 2 <= kc; k += 2) {
        MAMA__AVX512_STEP(0) MAMA__AVX512_STEP(1)
        a += 2 * 12;
        b += 2 * 32;
    }
    for (; k < kc; k++) {
        MAMA__AVX512_STEP(0)
        a += 12;
        b += 32;
    }
    MAMA__AVX512_STORE(0) MAMA__AVX512_STORE(1) MAMA__AVX512_STORE(2)
    MAMA__AVX512_STORE(3) MAMA__AVX512_STORE(4) MAMA__AVX512_STORE(5)
    MAMA__AVX512_STORE(6) MAMA__AVX512_STORE(7) MAMA__AVX512_STORE(8)
    MAMA__AVX512_STORE(9) MAMA__AVX512_STORE(10) MAMA__AVX512_STORE(11)
}
#endif /* MAMA_X86_SIMD */

/* The kernels and their block sizes.  Cache blocks: the A block mc x kc
 * (x4 bytes) sits in L2, the B micro-panel kc x nr in L1, the B panel
 * kc x nc in L3.  Tuned on AMD Zen 3 (32 KB L1d, 512 KB L2 per core). */
enum { MAMA__GEMM_K_SCALAR = 0, MAMA__GEMM_K_AVX2 = 1, MAMA__GEMM_K_AVX512 = 2 };
static mama__gemm_kinfo mama__gemm_kernels[3] = { /* not const: tuning harnesses adjust it */
    {"scalar", mama__gemm_kernel_scalar, mama__gemm_pack_b, mama__gemm_pack_a, 4, 8, 128, 256, 1024},
#ifdef MAMA_X86_SIMD
    {"avx2", mama__gemm_kernel_avx2, mama__gemm_pack_b_avx2, mama__gemm_pack_a_avx2, 6, 16, 144, 256, 1024},
    {"avx512", mama__gemm_kernel_avx512, mama__gemm_pack_b_avx2, mama__gemm_pack_a_avx2, 12, 32, 144, 256, 1024},
#else
    {"avx2", NULL, NULL, NULL, 0, 0, 0, 0, 0},
    {"avx512", NULL, NULL, NULL, 0, 0, 0, 0, 0},
#endif
};

/* -1: run-time dispatch; otherwise the kernel index forced by a test. */
static int mama__gemm_forced = -1;

static int mama__gemm_cpu_runs(int k) {
    if (k == MAMA__GEMM_K_SCALAR) return 1;
#ifdef MAMA_X86_SIMD
    if (k == MAMA__GEMM_K_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (k == MAMA__GEMM_K_AVX512) return __builtin_cpu_supports("avx512f") ? 1 : 0;
#endif
    return 0;
}

static const mama__gemm_kinfo *mama__gemm_pick(void) {
    if (mama__gemm_forced >= 0) return &mama__gemm_kernels[mama__gemm_forced];
    if (mama__gemm_cpu_runs(MAMA__GEMM_K_AVX512)) return &mama__gemm_kernels[MAMA__GEMM_K_AVX512];
    if (mama__gemm_cpu_runs(MAMA__GEMM_K_AVX2)) return &mama__gemm_kernels[MAMA__GEMM_K_AVX2];
    return &mama__gemm_kernels[MAMA__GEMM_K_SCALAR];
}

MAMA_API const char *mama_gemm_kernel_name(void) {
#ifdef MAMA_USE_CBLAS
    return "cblas";
#else
    return mama__gemm_pick()->name;
#endif
}

MAMA_API int mama_gemm_force_kernel(const char *name) {
    int k;
    if (!name || !name[0] || strcmp(name, "auto") == 0) {
        mama__gemm_forced = -1;
        return 1;
    }
    for (k = 0; k < 3; k++)
        if (strcmp(name, mama__gemm_kernels[k].name) == 0 && mama__gemm_kernels[k].kern &&
            mama__gemm_cpu_runs(k)) {
            mama__gemm_forced = k;
            return 1;
        }
    return 0;
}

/* ---- the macro-kernel: one packed A block times one packed B panel ---- */

/* C[ic:ic+mc, jc:jc+nc] = beta*C + Ap * Bp.  Full tiles go straight to C;
 * edge tiles are computed into tmp (beta 0) and merged.  With pack_b set
 * (the first A block of a B panel), each B micro-panel op(B)[pc:pc+kc,
 * jc+jr:jc+jr+nr] is packed just before its first use: it is then still in
 * L1/L2 for the kernel, and the memory traffic of packing overlaps the
 * arithmetic instead of preceding it (this matters when M is small and the
 * panel would otherwise be written to L3 and read back once). */
static void mama__gemm_macro(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int ic, int mc,
                             int jc, int nc, int pc, int kc, const float *ap, float *bp,
                             float beta, int pack_b) {
    float tmp[MAMA__GEMM_MAXTILE];
    int mr = ki->mr, nr = ki->nr, ir, jr, i, j;
    for (jr = 0; jr < nc; jr += nr) {
        int n = nc - jr < nr ? nc - jr : nr;
        float *b = bp + (ptrdiff_t)jr * kc;
        if (pack_b) ki->pack_b(g, pc, kc, jc + jr, n, nr, b);
        for (ir = 0; ir < mc; ir += mr) {
            int m = mc - ir < mr ? mc - ir : mr;
            const float *a = ap + (ptrdiff_t)ir * kc;
            float *c = g->C + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr;
            if (m == mr && n == nr) {
                ki->kern(kc, a, b, c, (long)g->ldc, beta);
                continue;
            }
            ki->kern(kc, a, b, tmp, nr, 0.0f);
            for (i = 0; i < m; i++) {
                float *cr = c + (ptrdiff_t)i * g->ldc;
                const float *t = tmp + i * nr;
                if (beta == 0.0f)
                    for (j = 0; j < n; j++) cr[j] = t[j];
                else
                    for (j = 0; j < n; j++) cr[j] = beta * cr[j] + t[j];
            }
        }
    }
}

/* Split `total` into `parts` nearly equal pieces, each a multiple of `unit`
 * except the last; returns the piece size. */
static int mama__gemm_even(int total, int cap, int unit) {
    int parts = (total + cap - 1) / cap, size;
    if (parts < 1) parts = 1;
    size = (total + parts - 1) / parts;
    size = (size + unit - 1) / unit * unit;
    return size < cap ? size : cap;
}

/* The blocked algorithm on C[m0:m1, n0:n1] with the given buffers and block
 * sizes (one thread). */
static void mama__gemm_blocked(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int m0, int m1,
                               int n0, int n1, float *abuf, float *bbuf, int MC, int KC,
                               int NC) {
    int jc, pc, ic;
    /* even out the blocks so the last one is not a sliver */
    int nc_blk = mama__gemm_even(n1 - n0, NC, ki->nr);
    int kc_blk = mama__gemm_even(g->K, KC, 1);
    int mc_blk = mama__gemm_even(m1 - m0, MC, ki->mr);
    for (jc = n0; jc < n1; jc += nc_blk) {
        int nc = n1 - jc < nc_blk ? n1 - jc : nc_blk;
        for (pc = 0; pc < g->K; pc += kc_blk) {
            int kc = g->K - pc < kc_blk ? g->K - pc : kc_blk;
            float beta = pc == 0 ? g->beta : 1.0f;
            for (ic = m0; ic < m1; ic += mc_blk) {
                int mc = m1 - ic < mc_blk ? m1 - ic : mc_blk;
                ki->pack_a(g, ic, mc, pc, kc, ki->mr, abuf);
                mama__gemm_macro(ki, g, ic, mc, jc, nc, pc, kc, abuf, bbuf, beta, ic == m0);
            }
        }
    }
}

/* Align a static buffer to 64 bytes (they are declared MAMA__GEMM_PAD
 * floats larger). */
static float *mama__gemm_align(float *p) {
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* Static per-slot packing buffers (zero-initialised: .bss, so untouched
 * slots cost address space only). */
static float mama__gemm_abuf[MAMA_GEMM_MAX_THREADS][MAMA__GEMM_ABUF + MAMA__GEMM_PAD];
static float mama__gemm_bbuf[MAMA_GEMM_MAX_THREADS][MAMA__GEMM_BBUF + MAMA__GEMM_PAD];

/* One thread's part of a GEMM on slot `slot`. */
static void mama__gemm_slot(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int slot,
                            int m0, int m1, int n0, int n1) {
    mama__gemm_blocked(ki, g, m0, m1, n0, n1, mama__gemm_align(mama__gemm_abuf[slot]),
                       mama__gemm_align(mama__gemm_bbuf[slot]), ki->mc, ki->kc, ki->nc);
}

/* The fallback when the slots are busy: one thread, buffers on the stack
 * (~36 KB), A packed one mr-row sliver at a time. */
static void mama__gemm_stack(const mama__gemm_kinfo *ki, const mama__gemm_args *g) {
    float abuf[12 * MAMA__GEMM_KC_S + MAMA__GEMM_PAD];
    float bbuf[MAMA__GEMM_KC_S * MAMA__GEMM_NC_S + MAMA__GEMM_PAD];
    mama__gemm_blocked(ki, g, 0, g->M, 0, g->N, mama__gemm_align(abuf), mama__gemm_align(bbuf),
                       ki->mr, MAMA__GEMM_KC_S, MAMA__GEMM_NC_S);
}

/* The slot lock: a spin-free try-lock (GCC/clang atomics).  Other
 * compilers always take the stack path. */
static int mama__gemm_lock_word = 0;
static int mama__gemm_trylock(void) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_exchange_n(&mama__gemm_lock_word, 1, __ATOMIC_ACQUIRE) == 0;
#else
    return 0;
#endif
}
static void mama__gemm_unlock(void) {
#if defined(__GNUC__) || defined(__clang__)
    __atomic_store_n(&mama__gemm_lock_word, 0, __ATOMIC_RELEASE);
#endif
}

/* ---- small and degenerate cases ---- */

/* C = beta * C (K == 0 or alpha == 0); beta == 0 writes zeros. */
static void mama__gemm_scale_c(const mama__gemm_args *g) {
    int i, j;
    if (g->beta == 1.0f) return;
    for (i = 0; i < g->M; i++) {
        float *c = g->C + (ptrdiff_t)i * g->ldc;
        if (g->beta == 0.0f)
            for (j = 0; j < g->N; j++) c[j] = 0.0f;
        else
            for (j = 0; j < g->N; j++) c[j] *= g->beta;
    }
}

/* Tiny products: plain loops, no packing.  Row i of C is built 64 columns
 * at a time in a local accumulator. */
static void mama__gemm_tiny(const mama__gemm_args *g) {
    float acc[64];
    int i, j0, j, k;
    for (i = 0; i < g->M; i++) {
        float *c = g->C + (ptrdiff_t)i * g->ldc;
        for (j0 = 0; j0 < g->N; j0 += 64) {
            int nb = g->N - j0 < 64 ? g->N - j0 : 64;
            for (j = 0; j < nb; j++) acc[j] = 0.0f;
            if (!g->tb) {
                for (k = 0; k < g->K; k++) {
                    float a = g->ta ? g->A[(ptrdiff_t)k * g->lda + i] : g->A[(ptrdiff_t)i * g->lda + k];
                    const float *b = g->B + (ptrdiff_t)k * g->ldb + j0;
                    for (j = 0; j < nb; j++) acc[j] += a * b[j];
                }
            } else {
                for (j = 0; j < nb; j++) {
                    const float *b = g->B + (ptrdiff_t)(j0 + j) * g->ldb;
                    float s = 0.0f;
                    if (g->ta)
                        for (k = 0; k < g->K; k++) s += g->A[(ptrdiff_t)k * g->lda + i] * b[k];
                    else
                        for (k = 0; k < g->K; k++) s += g->A[(ptrdiff_t)i * g->lda + k] * b[k];
                    acc[j] = s;
                }
            }
            for (j = 0; j < nb; j++)
                c[j0 + j] = g->beta == 0.0f ? g->alpha * acc[j] : g->alpha * acc[j] + g->beta * c[j0 + j];
        }
    }
}

/* ---- threading ---- */

/* How many threads a product of this size deserves: about 256k
 * multiply-adds (a few microseconds) per thread at least. */
static int mama__gemm_threads_for(const mama__gemm_args *g) {
    double work = (double)g->M * g->N * g->K;
    int nt = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) nt = omp_get_max_threads();
#endif
    if (nt > MAMA_GEMM_MAX_THREADS) nt = MAMA_GEMM_MAX_THREADS;
    if (work / 262144.0 < nt) nt = (int)(work / 262144.0);
    return nt < 1 ? 1 : nt;
}

#ifdef _OPENMP
/* Choose the tm x tn grid of C rectangles for nt threads: the smallest
 * largest-rectangle work, counting packing at ~16 multiply-adds per
 * element moved (A is packed once per NC columns, B once per thread). */
static void mama__gemm_grid(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int nt, int *tm,
                            int *tn) {
    int mt = (g->M + ki->mr - 1) / ki->mr, nt_ = (g->N + ki->nr - 1) / ki->nr, d;
    double best = -1;
    *tm = 1;
    *tn = nt;
    for (d = 1; d <= nt; d++) {
        double ms, ns, cost;
        if (nt % d) continue;
        ms = (double)((mt + d - 1) / d) * ki->mr;
        ns = (double)((nt_ + nt / d - 1) / (nt / d)) * ki->nr;
        cost = ms * ns * g->K + 16.0 * g->K * (ms * ceil(ns / ki->nc) + ns);
        if (best < 0 || cost < best) {
            best = cost;
            *tm = d;
            *tn = nt / d;
        }
    }
}

/* Thread `tid` of a tm x tn grid: its rectangle of C (may be empty). */
static void mama__gemm_part(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int tid, int tm,
                            int tn) {
    int mt = (g->M + ki->mr - 1) / ki->mr, nt_ = (g->N + ki->nr - 1) / ki->nr;
    int im = tid / tn, in = tid % tn;
    int m0 = (int)((long long)mt * im / tm) * ki->mr, m1 = (int)((long long)mt * (im + 1) / tm) * ki->mr;
    int n0 = (int)((long long)nt_ * in / tn) * ki->nr, n1 = (int)((long long)nt_ * (in + 1) / tn) * ki->nr;
    if (m1 > g->M) m1 = g->M;
    if (n1 > g->N) n1 = g->N;
    if (m0 < m1 && n0 < n1) mama__gemm_slot(ki, g, tid, m0, m1, n0, n1);
}
#endif

/* A GEMM on the slots (lock held) with up to nt threads. */
static void mama__gemm_locked(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int nt) {
    if (nt <= 1) {
        mama__gemm_slot(ki, g, 0, 0, g->M, 0, g->N);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        int team = omp_get_num_threads(), tm, tn;
        if (team > MAMA_GEMM_MAX_THREADS) team = MAMA_GEMM_MAX_THREADS;
        mama__gemm_grid(ki, g, team, &tm, &tn);
        if (omp_get_thread_num() < team) mama__gemm_part(ki, g, omp_get_thread_num(), tm, tn);
    }
#else
    mama__gemm_slot(ki, g, 0, 0, g->M, 0, g->N);
#endif
}

/* Returns 1 when the product is degenerate or tiny and has been done. */
static int mama__gemm_easy(const mama__gemm_args *g) {
    if (g->M <= 0 || g->N <= 0) return 1;
    if (g->K <= 0 || g->alpha == 0.0f) {
        mama__gemm_scale_c(g);
        return 1;
    }
    if ((double)g->M * g->N * g->K < 32768.0) {
        mama__gemm_tiny(g);
        return 1;
    }
    return 0;
}

static void mama__gemm_fill(mama__gemm_args *g, int trans_a, int trans_b, int M, int N, int K,
                            float alpha, const float *A, int lda, const float *B, int ldb,
                            float beta, float *C, int ldc) {
    g->ta = trans_a != 0;
    g->tb = trans_b != 0;
    g->M = M;
    g->N = N;
    g->K = K;
    g->alpha = alpha;
    g->beta = beta;
    g->A = A;
    g->B = B;
    g->C = C;
    g->lda = lda;
    g->ldb = ldb;
    g->ldc = ldc;
}

MAMA_API void mama_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc) {
    mama__gemm_args g;
    const mama__gemm_kinfo *ki;
    mama__gemm_fill(&g, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (mama__gemm_easy(&g)) return;
#ifdef MAMA_USE_CBLAS
    cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
#endif
    ki = mama__gemm_pick();
    if (mama__gemm_trylock()) {
        mama__gemm_locked(ki, &g, mama__gemm_threads_for(&g));
        mama__gemm_unlock();
    } else {
        mama__gemm_stack(ki, &g);
    }
}

MAMA_API void mama_sgemm_batched(int trans_a, int trans_b, int M, int N, int K, float alpha,
                                 const float *A, int lda, long long sa, const float *B, int ldb,
                                 long long sb, float beta, float *C, int ldc, long long sc,
                                 int batch) {
    const mama__gemm_kinfo *ki;
    mama__gemm_args g;
    int b, nt, nt_batch;
    if (batch <= 0 || M <= 0 || N <= 0) return;
    mama__gemm_fill(&g, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    ki = mama__gemm_pick();
    nt = mama__gemm_threads_for(&g); /* threads one matrix deserves */
    /* threads the whole batch deserves */
    g.M = (int)(M * (long long)batch > INT_MAX ? INT_MAX : M * (long long)batch);
    nt_batch = mama__gemm_threads_for(&g);
    g.M = M;
#ifdef MAMA_USE_CBLAS
    nt = nt_batch = 1;
#endif
#ifdef _OPENMP
    if (nt_batch > 1 && nt < nt_batch && batch >= 2 && mama__gemm_trylock()) {
        /* Small matrices: one matrix per thread, each on its own slot. */
        if (nt_batch > batch) nt_batch = batch;
#pragma omp parallel num_threads(nt_batch)
        {
            int tid = omp_get_thread_num(), team = omp_get_num_threads(), i;
            if (team > MAMA_GEMM_MAX_THREADS) team = MAMA_GEMM_MAX_THREADS;
            if (tid < team)
                for (i = tid; i < batch; i += team) {
                    mama__gemm_args gi = g;
                    gi.A = A + i * sa;
                    gi.B = B + i * sb;
                    gi.C = C + i * sc;
                    if (!mama__gemm_easy(&gi)) mama__gemm_slot(ki, &gi, tid, 0, M, 0, N);
                }
        }
        mama__gemm_unlock();
        return;
    }
#else
    (void)ki;
    (void)nt;
    (void)nt_batch;
#endif
    for (b = 0; b < batch; b++)
        mama_sgemm(trans_a, trans_b, M, N, K, alpha, A + b * sa, lda, B + b * sb, ldb, beta,
                   C + b * sc, ldc);
}

/* Backend-table adapters (section 1.5 signatures). */
static MAMA__GEMM_UNUSED void mama__cpu_gemm(mama_backend *be, int trans_a, int trans_b, int M,
                                             int N, int K, float alpha, const float *A, int lda,
                                             const float *B, int ldb, float beta, float *C,
                                             int ldc) {
    (void)be;
    mama_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static MAMA__GEMM_UNUSED void mama__cpu_gemm_batched(mama_backend *be, int trans_a, int trans_b,
                                                     int M, int N, int K, float alpha,
                                                     const float *A, int lda, long long sa,
                                                     const float *B, int ldb, long long sb,
                                                     float beta, float *C, int ldc, long long sc,
                                                     int batch) {
    (void)be;
    mama_sgemm_batched(trans_a, trans_b, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc,
                       batch);
}
