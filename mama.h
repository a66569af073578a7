/* mama.h - MaMA: multi-view, multi-scale contrastive language-image
 *          pre-training for mammography, as a single-header C library.
 *
 * ===========================================================================
 *  WHAT IT IS
 * ===========================================================================
 *  A CLIP-style model for mammograms (SPEC: MaMA, "Multi-View and Multi-Scale
 *  Alignment for Contrastive Language-Image Pre-training in Mammography"):
 *  a DINOv2-style ViT image tower, a GPT-2-style text tower with LoRA, the
 *  heads and the four MaMA losses, written in plain C99 so that it can be
 *  dropped into any C or C++ project.  Everything the model needs runs
 *  through a table of function pointers (the backend, section 3); this file
 *  carries the CPU backend, mama_cuda.cu fills the same table on NVIDIA GPUs.
 *
 * ===========================================================================
 *  USAGE
 * ===========================================================================
 *  In exactly one C or C++ file:
 *
 *      #define MAMA_IMPLEMENTATION
 *      #include "mama.h"
 *
 *  everywhere else just #include "mama.h".  Build with -fopenmp for threads
 *  (optional), link -lm.  Every function that can fail returns a
 *  mama_status; on failure mama_last_error() says what went wrong and where:
 *
 *      mama_backend *cpu = mama_cpu_backend();
 *      float *buf;
 *      if (cpu->alloc(cpu, (void **)&buf, 1024 * sizeof(float)) != MAMA_OK) {
 *          fprintf(stderr, "mama: %s\n", mama_last_error());
 *          return 1;
 *      }
 *      cpu->gemm(cpu, 0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
 *      cpu->free(cpu, buf);
 *
 *  The library never exits or aborts on bad input or on a failed allocation.
 *
 * ===========================================================================
 *  CONFIGURATION MACROS (define before including)
 * ===========================================================================
 *  MAMA_MALLOC(sz), MAMA_REALLOC(p,sz), MAMA_FREE(p)
 *        allocation hooks (default: malloc/realloc/free).  Every allocation
 *        of the library goes through them, so a test can make any one fail.
 *  MAMA_ASSERT(x)      internal invariants only (default: assert).  Never
 *                      used on user input.
 *  MAMA_API            decoration of every public function (default: extern;
 *                      e.g. define as `static` to keep the library private
 *                      to one translation unit).
 *  MAMA_NO_STB_IMAGE   do not include <stb/stb_image.h>; image decoding then
 *                      reports MAMA_ERR_UNSUPPORTED (raw arrays still work).
 *  MAMA_NO_SIMD        compile only the portable scalar kernels.
 *  MAMA_USE_CBLAS      route large GEMMs to a CBLAS (e.g. OpenBLAS) instead
 *                      of the built-in kernels (link -lopenblas).
 *
 * ===========================================================================
 *  TABLE OF CONTENTS
 * ===========================================================================
 *   1. Public API: status codes, errors, allocation, RNG, the backend table
 *   2. Utilities: errors and messages, allocation hooks, RNG, timing, threads
 *   3. Backend table and its CPU implementation
 *      3.1 memory          3.2 GEMM (packed, blocked, AVX2/AVX-512 kernels)
 *      3.3 elementwise, normalisation, attention, loss kernels
 *      3.4 optimisers and schedules
 *   4. Layers (forward beside backward)
 *   5. Towers: ViT, GPT-2 + LoRA, heads
 *   6. Losses and the training step
 *   7. Formats: JSON, safetensors, checkpoints
 *   8. Text: BPE tokenizer, captions
 *   9. Images: decoding, Otsu crop, resize, augmentation
 *  10. Data: manifest, splits, studies, loader, synthetic phantoms
 *  11. Loops: pretraining, zero-shot, linear probe, metrics
 *
 *  Conventions used throughout:
 *  - Matrices are row-major float32.  An activation of T tokens with C
 *    channels is a [T, C] matrix; a batch is [B*T, C].
 *  - Every *_backward ACCUMULATES (+=) into the gradients it writes, both of
 *    parameters and of inputs, as in llm.c: a residual stream's gradient is
 *    the sum of its branches' gradients, so accumulation is what the math
 *    wants.  Callers zero gradient buffers once per step.
 *
 *  LICENSE: MIT (see README.md).
 */
#ifndef MAMA_H_INCLUDED
#define MAMA_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef MAMA_API
#define MAMA_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==========================================================================
 * 1. PUBLIC API
 * ========================================================================== */

#define MAMA_VERSION_MAJOR 0
#define MAMA_VERSION_MINOR 1

/* 1.1 Status codes.  Zero is success; every failure also leaves a message
 * (mama_last_error) naming the file, line, tensor or field at fault. */
typedef enum mama_status {
    MAMA_OK = 0,
    MAMA_ERR_NOMEM,       /* an allocation failed                       */
    MAMA_ERR_INVALID,     /* a bad argument (shape, range, NULL)        */
    MAMA_ERR_IO,          /* a file could not be opened, read, written  */
    MAMA_ERR_FORMAT,      /* a file's content is malformed              */
    MAMA_ERR_SHAPE,       /* a tensor has the wrong shape or dtype      */
    MAMA_ERR_UNSUPPORTED, /* not built in, or not possible on backend   */
    MAMA_ERR_NUMERIC,     /* a non-finite value where none may be       */
    MAMA_ERR_BACKEND      /* the device reported an error               */
} mama_status;

/* The message of the last failure on this thread ("" when none). */
MAMA_API const char *mama_last_error(void);
/* Name of a status code, e.g. "MAMA_ERR_NOMEM". */
MAMA_API const char *mama_status_name(mama_status s);
/* Record a failure (used by the library; available to backends and users).
 * Returns `s` so that `return mama_fail(...)` reads naturally. */
MAMA_API mama_status mama_fail(mama_status s, const char *file, int line,
                               const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
MAMA_API void mama_clear_error(void);
#define MAMA_FAIL(status, ...) mama_fail((status), __FILE__, __LINE__, __VA_ARGS__)
/* Propagate a failure from a callee without losing its message. */
#define MAMA_TRY(expr) do { mama_status mama__s = (expr); if (mama__s != MAMA_OK) return mama__s; } while (0)

/* 1.2 Allocation through the MAMA_MALLOC hooks.  mama_alloc fails with a
 * message naming `what`; memory is 64-byte aligned (cache line, AVX-512). */
MAMA_API mama_status mama_alloc(void **ptr, size_t bytes, const char *what);
MAMA_API mama_status mama_calloc(void **ptr, size_t bytes, const char *what);
MAMA_API void mama_free(void *ptr);

/* 1.3 Random numbers: a counter-free xoshiro256** stream per seed; the
 * state is four words so checkpoints can store it exactly. */
typedef struct mama_rng { uint64_t s[4]; } mama_rng;
MAMA_API void     mama_rng_seed(mama_rng *r, uint64_t seed);
MAMA_API uint64_t mama_rng_u64(mama_rng *r);
MAMA_API float    mama_rng_uniform(mama_rng *r);           /* [0, 1)        */
MAMA_API float    mama_rng_normal(mama_rng *r);            /* N(0, 1)       */
MAMA_API uint32_t mama_rng_below(mama_rng *r, uint32_t n); /* [0, n)        */
/* A stateless hash of (seed, index) to [0,1): dropout masks are regenerated
 * from it in the backward instead of being stored. */
MAMA_API float    mama_hash_uniform(uint64_t seed, uint64_t index);

/* 1.4 Timing and threads. */
MAMA_API double mama_time_seconds(void);     /* monotonic wall clock */
MAMA_API int    mama_num_threads(void);      /* 1 without OpenMP     */
MAMA_API void   mama_set_num_threads(int n);

/* 1.5 The backend table.  Model code calls only these pointers, so a
 * backend (CPU here, CUDA in mama_cuda.cu) is a filled-in table.  Pointers
 * passed to ops are device pointers of that backend.  All ops are
 * row-major float32; all backward ops accumulate (+=) into their outputs. */
typedef struct mama_backend mama_backend;
struct mama_backend {
    const char *name;
    void *impl; /* backend-private state */

    /* --- memory --- */
    mama_status (*alloc)(mama_backend *be, void **ptr, size_t bytes);
    void        (*free)(mama_backend *be, void *ptr);
    mama_status (*to_device)(mama_backend *be, void *dst, const void *src, size_t bytes);
    mama_status (*to_host)(mama_backend *be, void *dst, const void *src, size_t bytes);
    mama_status (*copy)(mama_backend *be, void *dst, const void *src, size_t bytes);
    mama_status (*zero)(mama_backend *be, void *dst, size_t bytes);
    mama_status (*sync)(mama_backend *be);

    /* --- matrix multiply: C = alpha * op(A) op(B) + beta * C, row-major,
     * op(A) is M x K, op(B) is K x N; trans_a/trans_b non-zero transpose. */
    void (*gemm)(mama_backend *be, int trans_a, int trans_b, int M, int N, int K,
                 float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc);
    /* the same for `batch` matrices at strides sa, sb, sc (in floats) */
    void (*gemm_batched)(mama_backend *be, int trans_a, int trans_b, int M, int N, int K,
                         float alpha, const float *A, int lda, long long sa,
                         const float *B, int ldb, long long sb, float beta,
                         float *C, int ldc, long long sc, int batch);

    /* --- elementwise --- */
    /* y[r, c] += b[c]  /  db[c] += sum_r dy[r, c] */
    void (*bias_add_forward)(mama_backend *be, float *y, const float *b, int rows, int cols);
    void (*bias_add_backward)(mama_backend *be, float *db, const float *dy, int rows, int cols);
    /* y = a + b (residual; its backward is `accumulate` into both inputs) */
    void (*add)(mama_backend *be, float *y, const float *a, const float *b, size_t n);
    /* y += alpha * x */
    void (*accumulate)(mama_backend *be, float *y, const float *x, float alpha, size_t n);
    /* y *= s */
    void (*scale)(mama_backend *be, float *y, float s, size_t n);
    /* GELU: exact erf form (tanh_approx 0) or GPT-2's tanh form (1) */
    void (*gelu_forward)(mama_backend *be, float *y, const float *x, size_t n, int tanh_approx);
    void (*gelu_backward)(mama_backend *be, float *dx, const float *dy, const float *x, size_t n, int tanh_approx);
    void (*relu_forward)(mama_backend *be, float *y, const float *x, size_t n);
    void (*relu_backward)(mama_backend *be, float *dx, const float *dy, const float *y, size_t n);
    /* inverted dropout: y = x * keep / (1-p); keep = hash(seed, i) >= p.
     * The mask is regenerated from (seed, i) in the backward. */
    void (*dropout_forward)(mama_backend *be, float *y, const float *x, size_t n, float p, uint64_t seed);
    void (*dropout_backward)(mama_backend *be, float *dx, const float *dy, size_t n, float p, uint64_t seed);
    /* LayerScale: y[r,c] = x[r,c] * gamma[c] */
    void (*layerscale_forward)(mama_backend *be, float *y, const float *x, const float *gamma, int rows, int cols);
    void (*layerscale_backward)(mama_backend *be, float *dx, float *dgamma, const float *dy,
                                const float *x, const float *gamma, int rows, int cols);

    /* --- normalisation --- */
    /* LayerNorm over the last dim; saves mean and rstd (rows each). */
    void (*layernorm_forward)(mama_backend *be, float *y, float *mean, float *rstd, const float *x,
                              const float *w, const float *b, int rows, int cols, float eps);
    void (*layernorm_backward)(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                               const float *x, const float *w, const float *mean,
                               const float *rstd, int rows, int cols);
    /* BatchNorm per channel over all rows (batch x tokens).  train != 0:
     * batch statistics (biased variance for normalising), running stats
     * updated with momentum using the unbiased variance, as PyTorch does;
     * train == 0: running statistics.  w, b may be NULL (no affine).
     * mean/rstd (cols each) are saved for the backward; in eval mode rstd
     * is stored negated, which tells the backward to treat the statistics
     * as constants (dx = dy w |rstd|) instead of batch statistics. */
    void (*batchnorm_forward)(mama_backend *be, float *y, float *mean, float *rstd,
                              float *running_mean, float *running_var, const float *x,
                              const float *w, const float *b, int rows, int cols,
                              float eps, float momentum, int train);
    void (*batchnorm_backward)(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                               const float *x, const float *w, const float *mean,
                               const float *rstd, int rows, int cols);
    /* y = x / max(||x||, 1e-12) per row; norm (rows) saved */
    void (*l2norm_forward)(mama_backend *be, float *y, float *norm, const float *x, int rows, int cols);
    void (*l2norm_backward)(mama_backend *be, float *dx, const float *dy, const float *y,
                            const float *norm, int rows, int cols);

    /* --- attention ---
     * qkv: [B*T, 3*D] rows of (q | k | v), head h at columns h*hd..; out:
     * [B*T, D]; lse: [B*H*T] log-sum-exp of each query's scores, saved for
     * the backward (which recomputes the probabilities: no T x T matrix is
     * kept).  key_valid: [B*T] non-zero for keys that may be attended
     * (padding masks), or NULL.  causal: key j <= query i only.  scale
     * multiplies q.k.  dropout_p > 0 drops attention probabilities with a
     * mask regenerated from dropout_seed. */
    void (*attention_forward)(mama_backend *be, float *out, float *lse, const float *qkv,
                              const int *key_valid, int B, int T, int H, int hd,
                              int causal, float scale, float dropout_p, uint64_t dropout_seed);
    void (*attention_backward)(mama_backend *be, float *dqkv, const float *dout, const float *out,
                               const float *lse, const float *qkv, const int *key_valid,
                               int B, int T, int H, int hd, int causal, float scale,
                               float dropout_p, uint64_t dropout_seed);

    /* --- pooling, embedding, patches --- */
    /* y[b, c] = sum_t w[b,t] x[b,t,c] / sum_t w[b,t]; mask NULL = all ones */
    void (*meanpool_forward)(mama_backend *be, float *y, const float *x, const float *mask,
                             int B, int T, int C);
    void (*meanpool_backward)(mama_backend *be, float *dx, const float *dy, const float *mask,
                              int B, int T, int C);
    /* y[i, :] = table[ids[i], :];  backward scatter-adds into dtable */
    void (*embedding_forward)(mama_backend *be, float *y, const int *ids, const float *table, int n, int C);
    void (*embedding_backward)(mama_backend *be, float *dtable, const float *dy, const int *ids, int n, int C);
    /* images [B, Cin, H, W] -> patch rows [B*(H/P)*(W/P), Cin*P*P] in the
     * order of a conv weight [D, Cin, P, P] flattened, so that the
     * patch embedding is one GEMM with the weight transposed. */
    void (*im2col_patches)(mama_backend *be, float *cols, const float *images, int B, int Cin,
                           int H, int W, int P);

    /* ViT token assembly (SPEC A.1): x[b] = [cls + pos0, reg_1..reg_R,
     * patch_k + pos_{1+k}] with x [B*(1+R+N), D], patches [B*N, D],
     * pos [(1+N), D].  The backward accumulates into dpatch, dcls, dreg, dpos
     * (any of the last three may be NULL). */
    void (*vit_tokens_forward)(mama_backend *be, float *x, const float *patches, const float *cls,
                               const float *reg, const float *pos, int B, int N, int R, int D);
    void (*vit_tokens_backward)(mama_backend *be, float *dpatches, float *dcls, float *dreg, float *dpos,
                                const float *dx, int B, int N, int R, int D);

    /* --- losses --- */
    /* per-row cross-entropy from logits: loss[r] = logsumexp(l[r]) - l[r, t[r]];
     * probs (rows x cols) saved.  backward: dlogits += dloss[r]*(p - onehot) */
    void (*cross_entropy_forward)(mama_backend *be, float *loss, float *probs, const float *logits,
                                  const int *targets, int rows, int cols);
    void (*cross_entropy_backward)(mama_backend *be, float *dlogits, const float *probs,
                                   const int *targets, const float *dloss, int rows, int cols);
    /* segment max: for each row r and each of nseg column segments
     * [seg[s], seg[s+1]), out[r*nseg+s] = max, arg[...] = column index. */
    void (*segment_max_forward)(mama_backend *be, float *out, int *arg, const float *x, int rows,
                                int cols, const int *seg, int nseg);

    /* backward of segment_max: dx[r, arg[r*nseg+s]] += dout[r*nseg+s] */
    void (*segment_max_backward)(mama_backend *be, float *dx, const float *dout, const int *arg,
                                 int rows, int cols, int nseg);
    /* y = x^T for a rows x cols matrix x (y is cols x rows) */
    void (*transpose)(mama_backend *be, float *y, const float *x, int rows, int cols);
    /* x[i, i] = value for i < n (row stride ld): masks self-similarity */
    void (*fill_diagonal)(mama_backend *be, float *x, int n, int ld, float value);
    /* sum_i a[i] b[i] in double (host result) */
    double (*dot)(mama_backend *be, const float *a, const float *b, size_t n);

    /* --- optimisers (one call over a whole contiguous buffer) ---
     * AdamW with decoupled weight decay (PyTorch's AdamW):
     *   p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
     *   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)      (t >= 1) */
    void (*adamw_step)(mama_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                       float lr, float beta1, float beta2, float eps, float weight_decay, int t);
    /* SGD with momentum (PyTorch): g += wd p; buf = mu buf + g (buf = g on
     * the first step, first != 0); p -= lr buf */
    void (*sgd_step)(mama_backend *be, float *p, const float *g, float *buf, size_t n, float lr,
                     float momentum, float weight_decay, int first);
    /* sum of squares of x (double accumulation); NaN/Inf propagate */
    double (*sum_squares)(mama_backend *be, const float *x, size_t n);
};

/* The CPU backend (a static table; never NULL). */
MAMA_API mama_backend *mama_cpu_backend(void);

/* 1.6 Schedules and clipping (host-side arithmetic). */
/* Linear warm-up from lr_floor to lr_peak over warmup steps (step 0 uses
 * lr_floor), then half-cosine from lr_peak down to lr_floor at total. */
MAMA_API float mama_lr_cosine(long step, long warmup, long total, float lr_peak, float lr_floor);
/* Clip the gradient buffer to max_norm (no-op when max_norm <= 0); returns
 * the norm before clipping (NaN/Inf if the gradient is not finite). */
MAMA_API double mama_clip_grad_norm(mama_backend *be, float *grad, size_t n, float max_norm);

#include "wip/gemm_api.h"
#include "wip/text_api.h"
#include "wip/image_api.h"
#include "wip/plot_api.h"
#include "wip/formats_api.h"
#include "wip/model_api.h"
#include "wip/train_api.h"

#ifdef __cplusplus
}
#endif
#endif /* MAMA_H_INCLUDED */

/* ==========================================================================
 * IMPLEMENTATION
 * ========================================================================== */
#ifdef MAMA_IMPLEMENTATION
#ifndef MAMA_IMPLEMENTATION_DONE
#define MAMA_IMPLEMENTATION_DONE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <math.h>
#include <float.h>
#include <errno.h>
#include <time.h>
#include <limits.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef MAMA_MALLOC
#define MAMA_MALLOC(sz) malloc(sz)
#define MAMA_REALLOC(p, sz) realloc(p, sz)
#define MAMA_FREE(p) free(p)
#endif
#ifndef MAMA_ASSERT
#include <assert.h>
#define MAMA_ASSERT(x) assert(x)
#endif

#if defined(__cplusplus)
#define MAMA_THREAD_LOCAL thread_local
#elif defined(_MSC_VER)
#define MAMA_THREAD_LOCAL __declspec(thread)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define MAMA_THREAD_LOCAL _Thread_local
#else
#define MAMA_THREAD_LOCAL __thread
#endif

#if !defined(MAMA_NO_SIMD) && (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MAMA_X86_SIMD 1
#include <immintrin.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==========================================================================
 * 2. UTILITIES
 * ========================================================================== */

/* 2.1 Errors.  One message per thread, so loader threads and the trainer
 * do not overwrite each other's reasons. */
static MAMA_THREAD_LOCAL char mama__error_message[1024];

MAMA_API const char *mama_last_error(void) { return mama__error_message; }
MAMA_API void mama_clear_error(void) { mama__error_message[0] = 0; }

MAMA_API const char *mama_status_name(mama_status s) {
    switch (s) {
    case MAMA_OK: return "MAMA_OK";
    case MAMA_ERR_NOMEM: return "MAMA_ERR_NOMEM";
    case MAMA_ERR_INVALID: return "MAMA_ERR_INVALID";
    case MAMA_ERR_IO: return "MAMA_ERR_IO";
    case MAMA_ERR_FORMAT: return "MAMA_ERR_FORMAT";
    case MAMA_ERR_SHAPE: return "MAMA_ERR_SHAPE";
    case MAMA_ERR_UNSUPPORTED: return "MAMA_ERR_UNSUPPORTED";
    case MAMA_ERR_NUMERIC: return "MAMA_ERR_NUMERIC";
    case MAMA_ERR_BACKEND: return "MAMA_ERR_BACKEND";
    }
    return "MAMA_ERR_?";
}

MAMA_API mama_status mama_fail(mama_status s, const char *file, int line, const char *fmt, ...) {
    /* Strip the directory: "mama.h:123" reads better than a build path. */
    const char *base = file ? strrchr(file, '/') : NULL;
    int n;
    va_list ap;
    base = base ? base + 1 : (file ? file : "?");
    n = snprintf(mama__error_message, sizeof mama__error_message, "%s:%d: ", base, line);
    if (n < 0 || n >= (int)sizeof mama__error_message) n = 0;
    va_start(ap, fmt);
    vsnprintf(mama__error_message + n, sizeof mama__error_message - (size_t)n, fmt, ap);
    va_end(ap);
    return s;
}

/* 2.2 Allocation.  MAMA_MALLOC gives no alignment promise beyond malloc's,
 * and SIMD kernels want 64 bytes, so we over-allocate and keep the raw
 * pointer just before the aligned block. */
#define MAMA__ALIGN 64
MAMA_API mama_status mama_alloc(void **ptr, size_t bytes, const char *what) {
    unsigned char *raw, *aligned;
    *ptr = NULL;
    if (bytes > SIZE_MAX - MAMA__ALIGN - sizeof(void *))
        return MAMA_FAIL(MAMA_ERR_NOMEM, "allocation of %zu bytes for %s overflows", bytes, what ? what : "?");
    raw = (unsigned char *)MAMA_MALLOC(bytes + MAMA__ALIGN + sizeof(void *));
    if (!raw)
        return MAMA_FAIL(MAMA_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what ? what : "?");
    aligned = (unsigned char *)(((uintptr_t)(raw + sizeof(void *)) + MAMA__ALIGN - 1) & ~(uintptr_t)(MAMA__ALIGN - 1));
    memcpy(aligned - sizeof(void *), &raw, sizeof(void *));
    *ptr = aligned;
    return MAMA_OK;
}
MAMA_API mama_status mama_calloc(void **ptr, size_t bytes, const char *what) {
    MAMA_TRY(mama_alloc(ptr, bytes, what));
    memset(*ptr, 0, bytes);
    return MAMA_OK;
}
MAMA_API void mama_free(void *ptr) {
    void *raw;
    if (!ptr) return;
    memcpy(&raw, (unsigned char *)ptr - sizeof(void *), sizeof(void *));
    MAMA_FREE(raw);
}

/* 2.3 RNG: xoshiro256**, seeded through splitmix64 (the authors' advice). */
static uint64_t mama__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t mama__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
MAMA_API void mama_rng_seed(mama_rng *r, uint64_t seed) {
    int i;
    for (i = 0; i < 4; i++) r->s[i] = mama__splitmix64(&seed);
}
MAMA_API uint64_t mama_rng_u64(mama_rng *r) {
    uint64_t *s = r->s, result = mama__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
    s[3] = mama__rotl(s[3], 45);
    return result;
}
MAMA_API float mama_rng_uniform(mama_rng *r) { return (float)(mama_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }
MAMA_API float mama_rng_normal(mama_rng *r) {
    /* Box-Muller; u1 in (0,1] so the log is finite. */
    double u1 = ((double)(mama_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(mama_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
MAMA_API uint32_t mama_rng_below(mama_rng *r, uint32_t n) {
    return n ? (uint32_t)(((mama_rng_u64(r) >> 32) * (uint64_t)n) >> 32) : 0;
}
MAMA_API float mama_hash_uniform(uint64_t seed, uint64_t index) {
    uint64_t x = seed ^ (index * 0xD1B54A32D192ED03ull);
    return (float)(mama__splitmix64(&x) >> 40) * (1.0f / 16777216.0f);
}

/* 2.4 Timing and threads. */
MAMA_API double mama_time_seconds(void) {
#if defined(CLOCK_MONOTONIC) && !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}
MAMA_API int mama_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
MAMA_API void mama_set_num_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ==========================================================================
 * 3. BACKEND TABLE AND ITS CPU IMPLEMENTATION
 * ========================================================================== */

#include "wip/gemm_impl.h"
#include "wip/ops_impl.h"
#include "wip/ops_extra.h"
#include "wip/cpu_backend.h"

#include "wip/formats_impl.h"
#include "wip/text_impl.h"
#include "wip/image_impl.h"
#include "wip/plot_impl.h"
#include "wip/model_impl.h"
#include "wip/train_impl.h"

#ifdef __cplusplus
}
#endif
#endif /* MAMA_IMPLEMENTATION_DONE */
#endif /* MAMA_IMPLEMENTATION */
