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
 *  carries the CPU backend and a plain reference backend, mama_cuda.cu fills
 *  the same table on NVIDIA GPUs.
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
 *  (optional), link -lm; image decoding uses stb_image (Debian: libstb-dev),
 *  compiled here as static functions, so a program with its own stb links.
 *  Every function that can fail returns a mama_status (MAMA_OK is 0); on
 *  failure mama_last_error() names the file, line, tensor or field at fault.
 *  The library never exits or aborts, and keeps no global mutable state:
 *  two models on two backends in two threads share nothing.
 *
 *  A complete program: zero-shot breast density of one mammogram (SPEC A.7).
 *
 *      #define MAMA_IMPLEMENTATION
 *      #include "mama.h"
 *      #include <math.h>
 *      #include <stdlib.h>
 *
 *      int main(int argc, char **argv) {  // density WEIGHTS TOKENIZER_DIR IMAGE
 *          mama_backend *cpu = NULL; mama_model *m = NULL; mama_tokenizer *tok = NULL;
 *          mama_image img = {0, 0, NULL};
 *          mama_caption_fields meta;      // the image's metadata: all unknown
 *          if (argc != 4 || mama_cpu_backend_create(&cpu) || mama_model_load(&m, argv[1], cpu, 4) ||
 *              mama_tokenizer_load(&tok, argv[2]) || mama_image_load(argv[3], &img))
 *              return fprintf(stderr, "density: %s\n", argc != 4 ? "3 arguments" : mama_last_error()), 1;
 *          const mama_config *c = mama_model_config(m);
 *          int E = c->embed_dim, T = c->context, k, e;
 *          float *px = (float *)malloc(sizeof(float) * c->in_chans * c->image_size * c->image_size);
 *          float *emb = (float *)malloc(sizeof(float) * 5 * E), s[4], sum = 0;
 *          int *ids = (int *)malloc(sizeof(int) * 4 * T), *mask = (int *)malloc(sizeof(int) * 4 * T);
 *          char text[1024];
 *          mama_caption_fields_init(&meta);
 *          for (k = 0; k < 4; k++)        // one caption per density class, as the paper's
 *              if (mama_zeroshot_caption(MAMA_ZEROSHOT_DENSITY, k, &meta, text, sizeof text, NULL) ||
 *                  mama_tokenizer_encode_caption(tok, text, T, ids + k * T, mask + k * T, NULL))
 *                  return fprintf(stderr, "density: %s\n", mama_last_error()), 1;
 *          if (mama_model_prepare_image(m, &img, px) ||   // crop, resize, normalise (A.5)
 *              mama_encode_images(m, px, 1, emb, NULL) || mama_encode_texts(m, ids, mask, 4, emb + E))
 *              return fprintf(stderr, "density: %s\n", mama_last_error()), 1;
 *          for (k = 0; k < 4; k++) {      // softmax over temperature * cosine (unit vectors)
 *              for (s[k] = 0, e = 0; e < E; e++) s[k] += emb[e] * emb[(k + 1) * E + e];
 *              sum += s[k] = expf(mama_model_logit_scale(m) * (s[k] - 1));
 *          }
 *          for (k = 0; k < 4; k++) printf("density %d: %.3f\n", k + 1, s[k] / sum);
 *          free(px); free(emb); free(ids); free(mask); mama_image_free(&img);
 *          mama_tokenizer_free(tok); mama_model_free(m); mama_backend_free(cpu);
 *          return 0;
 *      }
 *
 *  (tests/check_dropin.sh compiles this example as C and C++ and runs it.)
 *
 * ===========================================================================
 *  API INDEX (declarations in section 1 with their documentation; the
 *  implementation in the section after the arrow)
 * ===========================================================================
 *  1.1  errors        mama_status, mama_last_error, mama_status_name,
 *                     mama_fail / MAMA_FAIL, MAMA_TRY, mama_clear_error   -> 2.1
 *  1.2  memory        mama_alloc, mama_calloc, mama_free                  -> 2.2
 *  1.3  random        mama_rng_seed/_u64/_uniform/_normal/_below,
 *                     mama_hash_uniform                                   -> 2.3
 *  1.4  threads       mama_time_seconds, mama_num_threads,
 *                     mama_set_num_threads                                -> 2.4
 *  1.5  backends      struct mama_backend (the op table),
 *                     mama_cpu_backend_create, mama_reference_backend_create,
 *                     mama_backend_free; mama_cuda_* (mama_cuda.cu)       -> 3.5, 3.6
 *  1.6  schedules     mama_lr_cosine, mama_clip_grad_norm                 -> 3.3
 *  1.7  GEMM          be->gemm / gemm_batched / gemm_half (BLAS
 *                     semantics); mama_cpu_backend_kernel_name,
 *                     _force_kernel, _force_attention, _threads           -> 3.1, 3.5
 *  1.8  text          mama_caption_fields_init, mama_caption_build(_alloc),
 *                     mama_caption_mask, mama_zeroshot_caption(_alloc),
 *                     mama_tokenizer_load(_files/_memory), _free,
 *                     _encode(_padded/_caption), _decode(_alloc), ids     -> 8
 *  1.9  images        mama_image_alloc/_free/_copy, mama_image_load(_memory)(_opts),
 *                     mama_png_write, mama_image_save_png,
 *                     mama_image_prepare (A.5 steps 1-3), the random steps,
 *                     mama_augment_opts_default, mama_augment_preset
 *                     (paper, light, none), mama_image_pipeline           -> 9
 *  1.10 formats       mama_json_*, mama_buf_*, mama_read_file,
 *                     mama_write_file_atomic, mama_atomic_*, half floats,
 *                     mama_st_* (safetensors read), mama_st_writer_*,
 *                     mama_manifest_* (the CSV, splits, studies)          -> 7
 *  1.11 config        mama_config_preset ("tiny" "small" "base"),
 *                     mama_config_validate, mama_config_to/from_json      -> 4.1
 *  1.12 model         mama_model_create/_free, _load(_as/_inference), _save,
 *                     _arena_bytes,
 *                     _load_weights, _param(_count), _find_param,
 *                     _params, _grads, _numel                             -> 4, 6.4
 *  1.13 step          mama_batch, mama_step_opts_default, mama_model_step,
 *                     mama_model_forward, mama_model_embeddings,
 *                     mama_model_prepare_image, mama_encode_images,
 *                     mama_model_set_thread_tuning, mama_encode_texts     -> 6.1-6.3
 *  1.14 optimiser     mama_adamw_init/_step/_free                         -> 6.5
 *  1.15 data          mama_dataset_opts_default, mama_dataset_create/_free,
 *                     mama_dataset_image, mama_dataset_caption, _split,
 *                     _pretrain_split, _skipped_reasons, _other_view,
 *                     mama_tokenizer_check_config, _fingerprint,
 *                     mama_model_set_tokenizer, _tokenizer, _check_tokenizer -> 10
 *  1.16 pretraining   mama_pretrain_opts_default, mama_pretrain,
 *                     mama_checkpoint_save/_load                          -> 11.1-11.2
 *  1.17 evaluation    mama_metrics_compute, mama_zeroshot(_ex), mama_eval_opts,
 *                     mama_task_class_name, mama_task_parse_classes,
 *                     mama_probe_opts_default, mama_linear_probe,
 *                     mama_finetune, mama_head_save/_load/_apply/_free,
 *                     mama_predict(_file), mama_retrieval_eval,
 *                     mama_metrics_*                                      -> 11.3-11.7
 *  1.18 explaining    mama_sla_maps                                       -> 11.8
 *  1.19 data parallel mama_comm_single, mama_comm_free (MPI: mama_mpi.h),
 *                     mama_model_set_comm, mama_model_allreduce_grads ... -> 12
 *
 *  Companion headers, for what a program that embeds the model does not
 *  need (each: `#include "mama.h"` first, MAMA_<NAME>_IMPLEMENTATION in one
 *  file, same error model):
 *     mama_plot.h             canvas, bitmap font, the report charts (PNG)
 *     mama_synth.h            synthetic mammogram studies
 *     mama_tokenizer_train.h  training a GPT-2 byte-level BPE tokenizer
 *     mama_verify.h           the PyTorch parity step (`mama forward`)
 *     mama_mpi.h              the MPI communicator (data parallelism, 1.19)
 *
 * ===========================================================================
 *  CONFIGURATION MACROS (define before the #include that has
 *  MAMA_IMPLEMENTATION)
 * ===========================================================================
 *  MAMA_MALLOC(sz), MAMA_REALLOC(p,sz), MAMA_FREE(p)
 *        allocation hooks (default: malloc/realloc/free); all three or none
 *        (an #error says so).  Every allocation of the library, stb's
 *        included, goes through them, so a test can make any one fail.
 *  MAMA_ASSERT(x)      internal invariants only (default: assert).  Never
 *                      used on user input.
 *  MAMA_API            decoration of every public function (default: extern;
 *                      e.g. define as `static` to keep the library private
 *                      to one translation unit).
 *  MAMA_NO_STB_IMAGE   do not include <stb/stb_image.h>; image decoding then
 *                      reports MAMA_ERR_UNSUPPORTED (raw arrays still work).
 *  MAMA_STB_IMAGE_EXTERNAL
 *                      the program compiles stb_image and stb_image_write
 *                      itself (or includes them in the same file): only
 *                      their headers are included here.
 *  MAMA_NO_SIMD        compile only the portable scalar kernels.
 *  MAMA_NO_THREADS     no loader thread (pthreads); images are prepared on
 *                      the training thread.  OpenMP is separate: build
 *                      without -fopenmp for a single-threaded library.
 *  MAMA_GEMM_MAX_THREADS
 *                      most thread slots a CPU backend sizes its scratch for
 *                      (default 32).
 *  MAMA_USE_CBLAS      route large GEMMs to a CBLAS (e.g. OpenBLAS) instead
 *                      of the built-in kernels (link -lopenblas).
 *  MAMA_MPI            not read by mama.h: the MPI communicator is mama_mpi.h.
 *  MAMA_NCCL           declare mama_comm_nccl_create (mama_nccl.c).
 *
 * ===========================================================================
 *  BIG FROZEN TEXT TOWERS: BF16 / F16 WEIGHTS
 * ===========================================================================
 *  In text modes lora and frozen the text tower's base weights never train.
 *  With mama_config.frozen_dtype = MAMA_BF16 (or MAMA_F16) its big matrices
 *  (wte and every block's c_attn, attn.c_proj, c_fc, mlp.c_proj weights)
 *  stay in half precision in memory, in their own buffer; the GEMM widens
 *  them to float32 while packing (be->gemm_half), so forward and the
 *  backward's dX = dY W^T run in float32 on exactly the stored values.
 *  Trainable tensors are float32 master weights; frozen ones have no
 *  gradient or AdamW state.  mama_model_load keeps the file's BF16/F16
 *  dtype (mama_model_load_as chooses), saving writes it back, and the CLI
 *  takes --frozen-dtype auto|bf16|f16|f32.  The paper's `base` config (2.7B
 *  BioMedLM tower) then needs ~5.4 GB for the frozen text weights instead
 *  of 10.8 GB, and loading from a memory-mapped file hands each tensor's
 *  file pages back once copied, so it runs on a 24 GB CPU machine.
 *  An inference-only model (mama_config.inference) keeps its image tower's
 *  block matrices so too; there a CPU with AVX512-BF16 can also take a bf16
 *  dot-product path (activations rounded to bf16: mama_cpu_backend_force_bf16).
 *
 * ===========================================================================
 *  TABLE OF CONTENTS (each number is a banner below; search "* N." or
 *  "N.M " to jump)
 * ===========================================================================
 *   1. Public API, by topic: 1.1 errors .. 1.19 data parallelism (the
 *      index above)
 *   2. Utilities: 2.1 errors and messages, 2.2 allocation hooks, 2.3 RNG,
 *      2.4 timing and threads
 *   3. Backends
 *      3.1 GEMM (packed, blocked; portable, AVX2 and AVX-512 kernels)
 *      3.2 CPU kernels: elementwise, normalisation, attention (on the
 *          GEMM micro-kernel), pooling, embedding, patches, losses
 *      3.3 optimisers and schedules   3.4 small ops of the losses
 *      3.5 the CPU table and its scratch
 *      3.6 the reference backend: every op as plain scalar C, forward
 *          beside backward (start reading here)
 *   4. Model state: 4.1 configuration presets, 4.2 parameter pointers (with
 *      shapes), 4.3 initialisation, 4.4 activation arena, 4.5 create/free
 *   5. Layers and towers, forward beside backward: 5.1 ViT block, 5.2 GPT-2
 *      block with LoRA, 5.3 BatchNorm heads, 5.4 towers
 *   6. Losses and the training step: 6.1 batches and options, 6.2 the step,
 *      6.3 encoding, 6.4 weights in safetensors, 6.5 AdamW
 *   7. Formats: 7.1 text buffer, 7.2 JSON, 7.3 files, 7.4 half floats,
 *      7.5 safetensors, 7.6 the manifest CSV
 *   8. Text: 8.1-8.4 pre-tokenizer, byte-level alphabet, hash maps,
 *      8.5-8.7 the tokenizer, encoding, decoding, 8.8 captions, 8.9 zeroshot
 *      caption sets
 *   9. Images: 9.1 the image type, 9.2 decoding, 9.3 resampling, 9.4 the
 *      deterministic steps, 9.5 the random steps
 *  10. Data: datasets, 10.1 training batches and the loader thread
 *  11. Loops: pretraining, 11.1 checkpoints, 11.2 progress, 11.3 metrics,
 *      11.4 zeroshot, 11.5 linear probe and fine-tuning, 11.6 retrieval,
 *      11.7 reporting, 11.8 SLA maps
 *  12. Data parallelism: 12.1 single-process and 12.2 MPI communicators,
 *      12.3 state, 12.4 synchronised BatchNorm, 12.5 losses over the global
 *      batch, 12.6 entry points, 12.7 the overlapped gradient sum, 12.8
 *      BatchNorm statistics in the reference mode
 *
 *  Conventions used throughout:
 *  - Matrices are row-major float32.  An activation of T tokens with C
 *    channels is a [T, C] matrix; a batch is [B*T, C].  Shapes are written
 *    in brackets beside every field and parameter.
 *  - Every backend op's backward (section 1.5) ACCUMULATES (+=) into the
 *    gradients it writes, both of parameters and of inputs, as in llm.c: a
 *    residual stream's gradient is the sum of its branches' gradients, so
 *    accumulation is what the math wants.  The composite layers of section
 *    5 accumulate into their parameters' gradients and write (overwrite)
 *    the gradient of their input, as each says.  Callers zero gradient
 *    buffers once per step.
 *  - Objects the library allocates: mama_T_create (or _load / _parse) and
 *    mama_T_free; options structs: zero means the default (section 1).
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

/* Conventions of the public API.
 *
 * Lifetimes: an object the library allocates and hands back through a
 * `T **` is made by mama_T_create (or mama_T_load* / mama_T_parse when it is
 * read from a file or memory), a struct the caller owns is filled by
 * mama_T_init (or _load / _parse / _alloc), and both are released by
 * mama_T_free (safe on NULL or a zeroed struct); only open file handles pair
 * otherwise (mama_st_open / mama_st_close, mama_atomic_open / _commit /
 * _abort).
 *
 * Options: in every options struct (mama_*_opts) a zero field means "the
 * default", so a zero-initialised struct (`mama_pretrain_opts o = {0};`) or
 * a NULL pointer gives every default, resolved inside the library when the
 * call starts.  The defaults are the MAMA_<STRUCT>_DEFAULT_* macros next to
 * each struct (the paper's values, SPEC A.5 / A.7) and nowhere else;
 * mama_*_opts_default fills a struct with exactly them.  Where zero is itself
 * a value one may want (a probability, a warm-up length, a momentum, a
 * switch that is on by default), a negative value, MAMA_OFF, means zero /
 * off; a positive value is taken as given (1 for a switch). */
#define MAMA_OFF (-1)

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

/* 1.4 Timing and threads.  On a machine shared with busy processes, n
 * OpenMP threads can be far slower than one (libgomp's threads spin up to
 * ~3 ms at each parallel region's end while a team mate waits for a core);
 * mama_model_step and mama_encode_images then run on one thread
 * (mama_model_set_thread_tuning).  OMP_WAIT_POLICY=passive in the
 * environment (read when the program starts) makes the threads sleep
 * instead, but costs 19-29% on a quiet 2-core Xeon (bench_underload.sh). */
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

    /* --- half-precision weights (optional; a backend that leaves these
     * NULL gets its frozen weights in float32, see mama_config.frozen_dtype).
     * b_dtype / dtype is MAMA_BF16 or MAMA_F16 (a mama_dtype value). */
    /* gemm with B in half precision (the weight); A, C float32 */
    void (*gemm_half)(mama_backend *be, int trans_a, int trans_b, int M, int N, int K,
                      float alpha, const float *A, int lda, const uint16_t *B, int ldb, int b_dtype,
                      float beta, float *C, int ldc);
    /* y[i, :] = float(table[ids[i], :]) (ids[i] < 0: zeros) */
    void (*embedding_forward_half)(mama_backend *be, float *y, const int *ids, const uint16_t *table,
                                   int dtype, int n, int C);

    /* --- lifetime --- releases the table, its scratch and `impl`
     * (called by mama_backend_free). */
    void (*destroy)(mama_backend *be);

    /* --- keeping a training step on the device (section 6): no host round
     * trip inside a step; its losses come back in one download.  Every
     * backend of this library fills these slots. --- */
    /* host memory for uploads: pinned on a GPU (plain memory on the CPU) */
    mama_status (*host_alloc)(mama_backend *be, void **ptr, size_t bytes);
    void        (*host_free)(mama_backend *be, void *ptr);
    /* queue a copy from host_alloc memory in order with the ops; src must not
     * change until the next sync or to_host (the CPU copies at once) */
    mama_status (*to_device_async)(mama_backend *be, void *dst, const void *src, size_t bytes);
    /* acc[0] += (b ? sum_i a[i] b[i] : sum_i a[i]) / div, accumulated in
     * double in the order of i; acc is device memory (a double) */
    void (*reduce_acc)(mama_backend *be, double *acc, const float *a, const float *b, size_t n, double div);
    /* y[0] += (float)acc[0], both device scalars */
    void (*acc_to_scalar)(mama_backend *be, float *y, const double *acc);
    /* y[i] *= expf(log_s[0]) / gemm with alpha = expf(log_alpha[0]): a
     * temperature kept as its log in device memory */
    void (*scale_exp)(mama_backend *be, float *y, const float *log_s, size_t n);
    void (*gemm_exp_alpha)(mama_backend *be, int trans_a, int trans_b, int M, int N, int K, const float *log_alpha,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
    /* the queue every op runs on, in order (a cudaStream_t for CUDA), for
     * device collectives to run on the same one (mama_comm_nccl_create);
     * NULL slot: ops finish before they return (CPU, reference) */
    void *(*stream)(mama_backend *be);
    /* Host synchronisations so far: each sync, to_host, to_device, dot and
     * sum_squares waits until every op queued before it has run, and counts
     * one; to_device_async and the device-scalar ops above count none.
     * Exact when one thread uses the backend; `bench train` reports it per
     * step. */
    unsigned long long host_syncs;
    /* --- fused linear layer for inference (optional; NULL: the model
     * composes gemm, bias_add_forward, gelu_forward, layerscale_forward and
     * accumulate, which is what the reference backend does):
     *   C = res + gamma * act(A W^T + bias),  act = exact GELU when gelu != 0
     * A [M, K], W [N, K] (a linear layer's weight) in float32, or in half
     * precision Wh (w_dtype MAMA_BF16 / MAMA_F16; W is then NULL), C and
     * res [M, N], all contiguous; bias, gamma, res may be NULL; res must
     * not alias C.  The CPU backend applies the epilogue to each block of C
     * right after its last K block (while it is in cache) and gives the
     * same bits as the composition, except on the bf16 dot-product path
     * (bf16 Wh, A rounded to bf16: mama_cpu_backend_force_bf16, 1.7). */
    void (*linear_fused)(mama_backend *be, int M, int N, int K, const float *A, const float *W, const uint16_t *Wh,
                         int w_dtype, const float *bias, int gelu, const float *gamma, const float *res, float *C);
};

/* Backends are objects: create one, pass it to mama_model_create, free it
 * after the last model that uses it.  Each instance owns its scratch
 * (GEMM packing and attention buffers, sized once at creation), so two
 * models on two backends in two threads share nothing.  The CPU backend's
 * scratch has one slot per OpenMP thread of the moment it is created
 * (omp_get_max_threads(), at most MAMA_GEMM_MAX_THREADS): set the thread
 * count (mama_set_num_threads) first; its GEMMs and attention use at most
 * that many threads.  Two threads may also share one CPU backend: the
 * second one's GEMMs then run on one thread with stack buffers, its
 * attention waits for the slots, and the results are the same bits.
 * Fails with MAMA_ERR_NOMEM (and a message) when the scratch cannot be
 * allocated (~2.2 MB of address space per slot). */
MAMA_API mama_status mama_cpu_backend_create(mama_backend **out);
/* The reference backend (section 3.6): every op as the plainest correct C
 * (scalar loops, no SIMD, no threads, no blocking), for reading and as the
 * oracle the tests check the CPU and CUDA backends against. */
MAMA_API mama_status mama_reference_backend_create(mama_backend **out);
/* Any backend (CPU, reference, CUDA); NULL is a no-op. */
MAMA_API void mama_backend_free(mama_backend *be);

/* --- CUDA backend (begin) ---------------------------------------------
 * Defined in mama_cuda.cu, not in this header: link build/mama_cuda.o
 * (`make cuda`) to use them.  create fails with MAMA_ERR_UNSUPPORTED when
 * no device is present; free releases the table.  Precision applies to
 * the GEMMs: FP32 (default), TF32 or BF16 tensor cores, FP32 accumulation.
 * host_alloc gives pinned host memory (for asynchronous uploads; the
 * table's host_alloc slot is the same).  be->stream(be) is the backend's
 * cudaStream_t, for mama_comm_nccl_create.  Plain
 * `extern` (not MAMA_API): they live in another translation unit even when
 * MAMA_API makes the library static. */
#define MAMA_CUDA_FP32 0
#define MAMA_CUDA_TF32 1
#define MAMA_CUDA_BF16 2
/* device_query fails (MAMA_ERR_BACKEND, the CUDA error in the message)
 * when the runtime cannot count devices, e.g. a driver older than the
 * toolkit; device_count is its count, or -1 on that failure. */
extern mama_status mama_cuda_device_query(int *count);
extern int         mama_cuda_device_count(void);
extern mama_status mama_cuda_backend_create(mama_backend **out, int device);
extern void        mama_cuda_backend_free(mama_backend *be);
extern mama_status mama_cuda_set_precision(mama_backend *be, int precision);
extern mama_status mama_cuda_host_alloc(void **ptr, size_t bytes);
extern void        mama_cuda_host_free(void *ptr);
/* --- CUDA backend (end) ----------------------------------------------- */

/* 1.6 Schedules and clipping (host-side arithmetic). */
/* Linear warm-up from lr_floor to lr_peak over warmup steps (step 0 uses
 * lr_floor), then half-cosine from lr_peak down to lr_floor at total. */
MAMA_API float mama_lr_cosine(long step, long warmup, long total, float lr_peak, float lr_floor);
/* Clip the gradient buffer to max_norm (no-op when max_norm <= 0); returns
 * the norm before clipping (NaN/Inf if the gradient is not finite). */
MAMA_API double mama_clip_grad_norm(mama_backend *be, float *grad, size_t n, float max_norm);

/* ---------------------------------------------------------------------------
 * 1.7 Matrix multiply (section 3.1 has the implementation).
 *
 * The GEMM is a backend member: be->gemm, be->gemm_batched and
 * be->gemm_half (there is no standalone GEMM: its packing buffers belong to
 * the backend instance).  Row-major single precision, BLAS semantics:
 *
 *     C = alpha * op(A) * op(B) + beta * C
 *
 * op(A) is M x K (A is stored M x K with row stride lda, or K x M when
 * trans_a != 0), op(B) is K x N (B stored K x N with row stride ldb, or
 * N x K when trans_b != 0), C is M x N with row stride ldc.  A linear
 * layer y = x W^T with W stored [out, in] is be->gemm(be, 0, 1, ...).
 *
 * beta == 0 overwrites C without reading it (C may hold NaN or garbage).
 * M, N <= 0 is a no-op; K <= 0 or alpha == 0 just scales C by beta.
 * On the CPU backend these calls never fail and never allocate (the
 * instance's scratch, sized at creation), and the built-in kernels give
 * the same bits whatever the thread count and whether or not another
 * thread shares the backend (a MAMA_USE_CBLAS build: as the BLAS does).
 *
 * gemm_batched: `batch` independent GEMMs; matrix b uses A + b*sa,
 * B + b*sb, C + b*sc (strides in floats).
 *
 * gemm_half: B in half precision: `B` holds raw bf16 (b_dtype MAMA_BF16)
 * or IEEE f16 (MAMA_F16) values, A and C are float32.  On the CPU, B is
 * converted to float32 while it is packed (AVX2 shifts for bf16, F16C for
 * f16, both exact), so the products and sums are the float GEMM's on the
 * widened values: the result equals be->gemm on a float copy of B up to
 * summation order.  For frozen weights kept in bf16/f16 (forward x W and
 * backward dY W^T alike).  Never routed to CBLAS.
 *
 * CPU backend settings (tests and benchmarks; 0 / NULL for other backends):
 * ------------------------------------------------------------------------- */
/* The micro-kernel this CPU backend uses (run-time dispatch unless forced):
 * "avx512", "avx2", "scalar" (or "cblas" when built with MAMA_USE_CBLAS);
 * NULL when `be` is not a CPU backend. */
MAMA_API const char *mama_cpu_backend_kernel_name(const mama_backend *be);

/* Force a kernel by name ("scalar", "avx2", "avx512") on this backend; NULL,
 * "" or "auto" restores run-time dispatch.  Returns 1 when the kernel exists
 * in this build and this CPU runs it, 0 otherwise (then nothing changes).
 * Not thread-safe against concurrent GEMMs on the same backend. */
MAMA_API int mama_cpu_backend_force_kernel(mama_backend *be, const char *name);

/* bf16 weights in the inference path (be->linear_fused with Wh in bf16:
 * an inference-only model's image tower).  "dot": the AVX512-BF16 kernel
 * (VDPBF16PS): the activations are rounded to bf16 (nearest even) while
 * packed, products of bf16 pairs summed in float32; the default on CPUs
 * with AVX512-BF16 other than Intel's (Intel cores issue VDPBF16PS at half
 * the FMA rate: there it measured ~0.5x the widening path end to end).
 * "widen": the weights widened to float32 while packed, float32
 * arithmetic (as gemm_half, which always widens); the default elsewhere,
 * the fallback and the test oracle.  NULL, "" or "auto": the default for
 * this CPU (chosen per backend instance at creation).  Returns
 * 1, or 0 for an unknown name, "dot" on a CPU or build without it, or a
 * backend that is not a CPU backend (then nothing changes).  Products under
 * 32768 multiply-adds take the plain loops (float32) on either path.  Not
 * thread-safe against concurrent GEMMs on the same backend. */
MAMA_API int mama_cpu_backend_force_bf16(mama_backend *be, const char *path);
/* "dot" or "widen" (above) for this CPU backend; NULL for another backend. */
MAMA_API const char *mama_cpu_backend_bf16_path(const mama_backend *be);

/* The attention of this backend: "gemm" (NULL, "" or "auto": the GEMM
 * schedule wherever it applies, the default) or "reference" (always the
 * slow fallback, the reference backend's loops; for tests).  Section 3.2.
 * Returns 1, or 0 for an unknown name or a backend that is not a CPU
 * backend (then nothing changes). */
MAMA_API int mama_cpu_backend_force_attention(mama_backend *be, const char *schedule);

/* Thread slots of this CPU backend (the most threads one of its GEMMs or
 * attention calls uses); 0 when `be` is not a CPU backend. */
MAMA_API int mama_cpu_backend_threads(const mama_backend *be);

/* --------------------------------------------------------------------------
 * 1.8 Text: structured captions (SPEC A.6, A.5 masking, A.7 zeroshot sets),
 * the GPT-2 byte-level BPE tokenizer (its trainer is in the companion
 * header mama_tokenizer_train.h; implementation in section 8)
 * --------------------------------------------------------------------------
 * Strings are UTF-8 bytes.  Functions that write text into a caller's buffer
 * follow one rule: `out` receives at most `cap` bytes including the NUL;
 * `*len` (when not NULL) receives the full length the text needs, without
 * the NUL; `out == NULL && cap == 0` only measures (MAMA_OK); a buffer that
 * is too small is MAMA_ERR_INVALID (out then holds a NUL-terminated prefix). */

/* ---- Captions (A.6) -------------------------------------------------------
 * The metadata of one image.  A NULL or "" string, age < 0, density <= 0
 * or birads == 0 means "missing" and prints as "unknown" (but see
 * ethnicity).  The caption builder copies nothing: the strings only need to
 * live for the call.
 *   procedure        e.g. "MG Screening Bilateral"; the reason is derived:
 *                    "screening" if it contains "screen" (any case), else
 *                    "diagnostic" if it contains "diag", else "".
 *   race             printed as given, e.g. "Caucasian or White".
 *   ethnicity        "Hispanic or Latino" (any case) prints as such; the
 *                    literal "unknown" (what masking writes) stays
 *                    "unknown"; anything else, missing included, prints
 *                    "Non-Hispanic or Latino" (A.6: "otherwise").
 *   image_type       e.g. "2D".
 *   side             "L"/"R"/"B" or left/right/bilateral (any case) print
 *                    as left/right/bilateral; other text is printed as is.
 *   view             e.g. "MLO", "CC".
 *   mass_shape, mass_density      the mass sentence needs both.
 *   calc_type, calc_distribution  the calcification sentence needs both.
 *   birads           BI-RADS letter A N B P S M K (categories 0..6; lower
 *                    case accepted); 0 = missing.
 *   age              years, printed as an integer; -1 = missing.
 *   density          1..4 (A.6 texts) or 5 ("normal male dense"); -1 or 0
 *                    = missing. */
typedef struct mama_caption_fields {
    const char *procedure;
    const char *race;
    const char *ethnicity;
    const char *image_type;
    const char *side;
    const char *view;
    const char *mass_shape;
    const char *mass_density;
    const char *calc_type;
    const char *calc_distribution;
    char birads;
    int age;
    int density;
} mama_caption_fields;

/* All fields missing (NULL strings, birads 0, age -1, density -1). */
MAMA_API void mama_caption_fields_init(mama_caption_fields *f);

/* The A.6 caption, byte for byte (double spaces and the final space
 * included).  MAMA_ERR_INVALID for a density outside {-1, 0..5} or a
 * BI-RADS letter outside A N B P S M K. */
MAMA_API mama_status mama_caption_build(const mama_caption_fields *f, char *out, size_t cap, size_t *len);
/* The same into a mama_alloc'ed string (free with mama_free). */
MAMA_API mama_status mama_caption_build_alloc(const mama_caption_fields *f, char **out);

/* A.5 masking: *out = *in with each of the six fields age, race,
 * ethnicity, image type, side and view replaced by "unknown" (age by -1)
 * independently with probability p.  Exactly six uniforms are drawn from
 * `rng`, in that order, whatever p is (so streams stay aligned); field k is
 * masked when its uniform is < p, hence p >= 1 masks all and p <= 0 none.
 * `out` may equal `in`.  Strings point to static "unknown" or to in's. */
MAMA_API void mama_caption_mask(const mama_caption_fields *in, mama_caption_fields *out, float p, mama_rng *rng);

/* Number of '.' and ';' in a caption = its number of sentences = the
 * number of sep tokens it gets (the SPEC example has 11). */
MAMA_API int mama_caption_count_sentences(const char *caption);

/* The tokenizer input of A.2 as text: "<|startoftext|>" + caption with every
 * '.' and ';' replaced by "<|separatetext|>" + "<|endoftext|>".  Encoding it
 * with mama_tokenizer_encode gives the same ids as
 * mama_tokenizer_encode_caption on the raw caption. */
MAMA_API mama_status mama_caption_tokenizer_input(const char *caption, char *out, size_t cap, size_t *len);

/* ---- Zeroshot caption sets (A.7) ------------------------------------------
 * BIRADS: 7 classes in the letter order A N B P S M K (categories 0 1 2 3 4
 *   5 6); caption = the image's unmasked sections "Procedure reported" ..
 *   "Image info" (with their trailing double space) + "Findings: The
 *   mammogram shows that " + finding(c) + " Impressions: BI-RADS Category c:
 *   description. Overall Assessment: " + assessment(c).
 * DENSITY: 4 classes, densities 1..4; the same prefix + "Breast composition:
 *   The breast is {text}. " (+ "This may lower the sensitivity of
 *   mammography. " for 3 and 4).
 * CANCER (RSNA-Mammo): 2 classes, no (0) and yes (1); no prefix (f may be
 *   NULL); the exact strings of A.7, the assessment without a final period. */
typedef enum mama_zeroshot_task {
    MAMA_ZEROSHOT_BIRADS = 0,
    MAMA_ZEROSHOT_DENSITY = 1,
    MAMA_ZEROSHOT_CANCER = 2
} mama_zeroshot_task;
/* 7, 4, 2 (0 for an unknown task). */
MAMA_API int mama_zeroshot_num_classes(mama_zeroshot_task task);
/* Caption of class `cls` (0-based, in the order above) for an image with
 * metadata f.  MAMA_ERR_INVALID for a bad task or class. */
MAMA_API mama_status mama_zeroshot_caption(mama_zeroshot_task task, int cls, const mama_caption_fields *f,
                                           char *out, size_t cap, size_t *len);
MAMA_API mama_status mama_zeroshot_caption_alloc(mama_zeroshot_task task, int cls, const mama_caption_fields *f,
                                                 char **out);

/* ---- GPT-2 byte-level BPE tokenizer ------------------------------------------
 * Compatible with Hugging Face `tokenizers` (ByteLevel pre-tokenizer without
 * prefix space, BPE model, byte-level decoder), which the tests compare
 * against id for id:
 *  1. added tokens are cut out of the text first (leftmost, then longest
 *     match; special or not, no lstrip/rstrip/single_word handling);
 *  2. each remaining piece is split by the GPT-2 pattern
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     with Unicode 16 letter/number classes and White_Space as \s (bytes
 *     that are not valid UTF-8 count as "other" characters);
 *  3. each word's bytes are merged by rank (lowest rank first, leftmost
 *     first among equal ranks) with a heap, O(n log n) in the word length.
 * Special tokens: the six of A.2 (<|startoftext|> bos, <|padtext|> pad,
 * <|masktext|> mask, <|separatetext|> sep, <|unknowntext|> unk, <|keytext|>
 * key) keep the ids a tokenizer.json gives them, else take the ids after the
 * largest id in that order; eos is <|endoftext|> of the base vocabulary (if
 * the vocabulary lacks it, it is appended after the six).  All seven are
 * matched as added tokens.  A loaded tokenizer is immutable: encoding and
 * decoding from several threads at once is safe. */
typedef struct mama_tokenizer mama_tokenizer;

typedef enum mama_special_token {
    MAMA_TOKEN_BOS = 0,  /* <|startoftext|>  */
    MAMA_TOKEN_PAD = 1,  /* <|padtext|>      */
    MAMA_TOKEN_MASK = 2, /* <|masktext|>     */
    MAMA_TOKEN_SEP = 3,  /* <|separatetext|> */
    MAMA_TOKEN_UNK = 4,  /* <|unknowntext|>  */
    MAMA_TOKEN_KEY = 5,  /* <|keytext|>      */
    MAMA_TOKEN_EOS = 6   /* <|endoftext|>    */
} mama_special_token;
/* The text of a special token, e.g. "<|separatetext|>" (NULL if out of range). */
MAMA_API const char *mama_special_token_text(mama_special_token which);

/* Load from `path`: a directory holding tokenizer.json (preferred) or
 * vocab.json + merges.txt, or a path to a tokenizer.json or a vocab.json
 * (merges.txt then read from the same directory). */
MAMA_API mama_status mama_tokenizer_load(mama_tokenizer **out, const char *path);
/* Load Hugging Face vocab.json + merges.txt files. */
MAMA_API mama_status mama_tokenizer_load_files(mama_tokenizer **out, const char *vocab_json_path,
                                               const char *merges_txt_path);
/* The same from memory.  merges: "#version" first line optional; one
 * "a b" pair per line.  Names only label error messages (may be NULL). */
MAMA_API mama_status mama_tokenizer_load_memory(mama_tokenizer **out, const char *vocab_json, size_t vocab_len,
                                                const char *merges_txt, size_t merges_len,
                                                const char *source_name);
/* A tokenizer.json (model.vocab, model.merges as "a b" strings or [a, b]
 * pairs, added_tokens) from memory. */
MAMA_API mama_status mama_tokenizer_load_json_memory(mama_tokenizer **out, const char *json, size_t len,
                                                     const char *source_name);
MAMA_API void mama_tokenizer_free(mama_tokenizer *t);

/* Number of ids (largest id + 1, special tokens included): the embedding
 * table's rows. */
MAMA_API int mama_tokenizer_vocab_size(const mama_tokenizer *t);
/* Number of merges (ranks 0 .. n-1). */
MAMA_API int mama_tokenizer_num_merges(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_special_id(const mama_tokenizer *t, mama_special_token which);
MAMA_API int mama_tokenizer_bos_id(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_eos_id(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_pad_id(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_sep_id(const mama_tokenizer *t);
/* Id of a token given by its raw bytes ("<|padtext|>", " the"), or -1. */
MAMA_API int mama_tokenizer_token_id(const mama_tokenizer *t, const char *token, size_t len);
/* Raw bytes of token `id` (not NUL-terminated; *len set), NULL if none. */
MAMA_API const char *mama_tokenizer_token_bytes(const mama_tokenizer *t, int id, size_t *len);

/* Encode NUL-terminated text.  Writes min(n, max_ids) ids to `ids` (may be
 * NULL when max_ids is 0) and sets *n_total to the full count n, so a caller
 * can detect truncation (n > max_ids) or measure. */
MAMA_API mama_status mama_tokenizer_encode(const mama_tokenizer *t, const char *text, int *ids, int max_ids,
                                           int *n_total);
/* Encode, keep the first `context` ids (as Hugging Face's truncation does:
 * a final <|endoftext|> may be cut) and right-pad with the pad id.
 * mask[i] = 1 for real tokens, 0 for padding (mask may be NULL).
 * *n_real (may be NULL) = number of real tokens, <= context. */
MAMA_API mama_status mama_tokenizer_encode_padded(const mama_tokenizer *t, const char *text, int context,
                                                  int *ids, int *mask, int *n_real);
/* A.2's caption encoding, straight to ids: bos + caption with each '.'
 * and ';' replaced by sep + eos, truncated to `context` and right-padded
 * (identical to encoding mama_caption_tokenizer_input's text). */
MAMA_API mama_status mama_tokenizer_encode_caption(const mama_tokenizer *t, const char *caption, int context,
                                                   int *ids, int *mask, int *n_real);
/* Decode ids to bytes (the tokens' raw bytes concatenated; with
 * skip_special non-zero the seven special tokens are left out).  The result
 * is NUL-terminated but may be invalid UTF-8 if the ids cut a character.
 * An id out of range or without a token is MAMA_ERR_INVALID. */
MAMA_API mama_status mama_tokenizer_decode(const mama_tokenizer *t, const int *ids, int n, int skip_special,
                                           char *out, size_t cap, size_t *len);
MAMA_API mama_status mama_tokenizer_decode_alloc(const mama_tokenizer *t, const int *ids, int n, int skip_special,
                                                 char **out);

/* Split text with the GPT-2 pattern (step 2 above; no added-token
 * handling): calls fn(piece, len, user) for each piece in order.  Exposed
 * for tests and tools. */
MAMA_API void mama_pretokenize(const char *text, size_t len,
                               void (*fn)(const char *piece, size_t len, void *user), void *user);

/* ---------------------------------------------------------------------------
 * 1.9 Images: grey images, decoding, the A.5 pipeline (implementation in
 * section 9; synthetic mammograms and PNG writing: mama_synth.h).
 *
 * The pipeline works on 8-bit grey images (A.5: "decode to 8-bit grey") and
 * keeps uint8 between steps, as torchvision does on PIL images; only the
 * last step turns pixels into floats.  Every step is a function of its own,
 * so a data loader can cache the deterministic part (steps 1-3,
 * mama_image_prepare) and run only the random part (4-8) per sample.
 * ------------------------------------------------------------------------- */

/* A row-major 8-bit grey image: pixel (x, y) is pix[y * w + x].  pix comes
 * from mama_alloc; mama_image_free releases it (a zeroed struct is empty). */
typedef struct mama_image {
    int w, h;
    uint8_t *pix;
} mama_image;

MAMA_API mama_status mama_image_alloc(mama_image *im, int w, int h); /* zero-filled */
MAMA_API void mama_image_free(mama_image *im);
MAMA_API mama_status mama_image_copy(const mama_image *src, mama_image *dst);

/* --- decoding (stb_image) ------------------------------------------------
 * Loads PNG (8 or 16 bit, grey/grey+alpha/RGB/RGBA/palette), JPEG, PGM/PPM,
 * BMP, TGA.  Colour becomes grey with PIL's convert('L') ITU-R 601 luma,
 * L = (19595 R + 38470 G + 7471 B + 32768) >> 16 (= R*299/1000 + G*587/1000
 * + B*114/1000, rounded); alpha is ignored.  8-bit images are taken as they
 * are (the decode options below do not apply to them).
 * 16-bit images (16-bit colour first becomes 16-bit luma, rounded): by
 * default each sample v becomes v * 255 / max, max = the image's largest
 * sample (SPEC A.5 step 1, the reference's own preprocessing: no rescale, no
 * window, no minimum shift), so a 12-bit mammogram in a 16-bit PNG fills
 * 0..255 instead of the 0..16 that v / 257 would give.  Rounding is half up,
 * floor(v * 255 / max + 1/2), in exact integer arithmetic (as
 * tools/dicom_to_png.py's floor(y * 255 + 0.5)); e.g. max 4095, v 2048 ->
 * 127.53 -> 128.  An image whose max is 0 is all zero.  A full-range image
 * (max 65535) gives round(v / 257).
 * Errors name the file and stb_image's reason.  `name` only labels errors. */
MAMA_API mama_status mama_image_load(const char *path, mama_image *out);
MAMA_API mama_status mama_image_load_memory(const void *data, size_t bytes, const char *name,
                                            mama_image *out);
/* How 16-bit samples become 8 bits.  The options rule of section 1: the zero
 * struct (or NULL) is the default above, the per-image maximum.
 *   bit_depth N (1..16): v * 255 / (2^N - 1), the same for every image
 *     (values above 2^N - 1 give 255), rounded half up as above;
 *   window_width W > 0 (>= 1): DICOM's LINEAR VOI window (PS3.3
 *     C.11.2.1.2) with centre window_center C (taken as given, 0 included;
 *     read only when W > 0): v <= C - 0.5 - (W-1)/2 -> 0,
 *     v > C - 0.5 + (W-1)/2 -> 255, else ((v - (C - 0.5)) / (W-1) + 0.5) *
 *     255 rounded half up (W = 1: v > C - 0.5 -> 255, else 0).
 * bit_depth <= 0 and window_width <= 0 (MAMA_OFF) are the default.  Setting
 * both, bit_depth > 16, 0 < window_width < 1 or a non-finite value is
 * MAMA_ERR_INVALID naming the field.
 * max_side bounds the decoded size (every image, 8-bit too): an image wider
 * or taller is refused from its header, before any pixel is decoded, with
 * MAMA_ERR_FORMAT naming the file, its size and the limit (a 20000 x 20000
 * PNG of 400 KB would otherwise take 1.4 GB).  MAMA_OFF: stb_image's own
 * limit (2^24). */
#define MAMA_DECODE_DEFAULT_MAX_SIDE 16384
typedef struct mama_decode_opts {
    int bit_depth;        /* fixed bit depth (default 0: the image's maximum) */
    float window_center;  /* VOI window centre (used when window_width > 0)   */
    float window_width;   /* VOI window width (default 0: no window)          */
    int max_side;         /* largest width or height decoded (_MAX_SIDE)      */
} mama_decode_opts;
MAMA_API mama_status mama_image_load_opts(const char *path, const mama_decode_opts *o, mama_image *out);
MAMA_API mama_status mama_image_load_memory_opts(const void *data, size_t bytes, const char *name,
                                                 const mama_decode_opts *o, mama_image *out);
/* PNG writing (stb_image_write): 8-bit pixels, `channels` 1 (grey), 3
 * (RGB) or 4 interleaved, rows of w*channels bytes; mama_image_save_png
 * writes a mama_image as grey.  MAMA_ERR_UNSUPPORTED with
 * MAMA_NO_STB_IMAGE. */
MAMA_API mama_status mama_png_write(const char *path, const uint8_t *pix, int w, int h, int channels);
MAMA_API mama_status mama_image_save_png(const mama_image *im, const char *path);
/* Colour to grey as above: `channels` 1..4 interleaved 8-bit samples. */
MAMA_API void mama_rgb_to_grey(const uint8_t *src, int w, int h, int channels, uint8_t *grey);

/* --- resampling -----------------------------------------------------------
 * Area: each output pixel is the mean of the input area it covers, with
 * fractional weights at the cell borders (OpenCV INTER_AREA = PIL BOX on
 * downscale).  Float intermediate between the two separable passes, one
 * rounding at the end (round half up).  An axis that grows uses bilinear
 * (below) instead: area averaging has nothing to average there.
 * Bilinear: PIL's / torchvision's BILINEAR: half-pixel centres
 * (align_corners=False), src = (dst + 0.5) * in/out - 0.5, taps clipped to
 * the box and renormalised at its borders; on downscale the triangle is
 * widened by the factor (PIL's antialias).  Horizontal pass first, rounded
 * to uint8 in between (as PIL), round half up.
 * mama_image_resize_bilinear resamples the box x0,y0,bw,bh of src (pixels
 * outside it never contribute, as crop-then-resize) to w x h. */
MAMA_API mama_status mama_image_resize_area(const mama_image *src, int w, int h, mama_image *dst);
MAMA_API mama_status mama_image_resize_bilinear(const mama_image *src, int x0, int y0, int bw, int bh,
                                                int w, int h, mama_image *dst);

/* --- A.5 steps ------------------------------------------------------------
 * Step 1: letterbox to S x S: long side -> S, short side -> floor(short*S/long)
 *    (at least 1), area resampling, zero padding floor left/top and ceil
 *    right/bottom.  `placed` (may be NULL) receives x0, y0, w, h of the
 *    image inside the square. */
MAMA_API mama_status mama_image_letterbox(const mama_image *src, int S, mama_image *dst, int placed[4]);
/* Step 2: Otsu threshold of the 256-bin histogram: the first t in 0..254 that
 *    maximises the between-class variance w0 w1 (mu0 - mu1)^2 with class 0 =
 *    pixels <= t.  Returns -1 when no t splits the pixels (constant image).
 *    mama_foreground_box: inclusive box x0,y0,x1,y1 of pixels > thr;
 *    returns 0 (box untouched) when there are none. */
MAMA_API int mama_otsu_threshold(const mama_image *im);
MAMA_API int mama_foreground_box(const mama_image *im, int thr, int box[4]);
/*    Crop to that box (a copy of src when nothing is foreground); `box`
 *    (may be NULL) receives the inclusive box used. */
MAMA_API mama_status mama_image_otsu_crop(const mama_image *src, mama_image *dst, int box[4]);
/* 1-3: letterbox, Otsu crop, bilinear stretch to S x S.  Deterministic, so
 *    a loader may cache its result per image. */
MAMA_API mama_status mama_image_prepare(const mama_image *src, int S, mama_image *dst);

/* Step 4: RandomResizedCrop box as torchvision's get_params: up to `attempts`
 *    tries of area = w*h*U(scale) and aspect = exp(U(log ratio)),
 *    cw = round(sqrt(area*aspect)), ch = round(sqrt(area/aspect)) (Python's
 *    round, half to even), accepted when 0 < cw <= w and 0 < ch <= h, then
 *    y0 = below(h-ch+1), x0 = below(w-cw+1); else the centre crop with the
 *    ratio clamped into [ratio0, ratio1].  box = x0, y0, cw, ch. */
MAMA_API void mama_rrc_box(mama_rng *rng, int w, int h, float scale0, float scale1, float ratio0,
                           float ratio1, int attempts, int box[4]);
/* Step 5: flips, in place */
MAMA_API void mama_image_hflip(mama_image *im);
MAMA_API void mama_image_vflip(mama_image *im);
/* Step 6: PIL ImageEnhance, in place.  brightness: blend(black, x, f) = f*x;
 *    contrast: blend(m, x, f) = m + f*(x - m) with m = the image mean
 *    rounded to an integer (PIL's ImageStat); both clipped to 0..255 and
 *    TRUNCATED to integer, as PIL's blend does. */
MAMA_API void mama_image_brightness(mama_image *im, float f);
MAMA_API void mama_image_contrast(mama_image *im, float f);
/* Step 7: Gaussian blur as torchvision: kernel w[i] ~ exp(-x_i^2 / (2 sigma^2)),
 *    x_i = i - (k-1)/2, normalised to sum 1; reflect padding (d c b|a b c d|
 *    c b a); the 2-D kernel is the outer product (applied separably in
 *    float); result rounded half to even (torch.round). */
MAMA_API void mama_gaussian_kernel1d(int k, float sigma, float *w);
MAMA_API mama_status mama_image_gaussian_blur(mama_image *im, int k, float sigma);
/* Step 8: out[c][y][x] = (pix/255 - mean) / std for each of `channels` planes
 *    (3 replicated planes, or 1 for a folded patch embedding). */
MAMA_API void mama_image_to_tensor(const mama_image *im, float mean, float std, int channels, float *out);

/* The training augmentation (SPEC A.5).  The options rule of section 1: a
 * zero field takes its default below; MAMA_OFF (any negative value) turns a
 * switch off or makes a number zero (e.g. hflip_p = MAMA_OFF: never flip,
 * rrc_attempts = MAMA_OFF: always the centre crop).  The values are checked
 * when used (MAMA_ERR_INVALID: probabilities in [0, 1], ranges lo <= hi,
 * ratios and sigmas > 0, an odd blur kernel, std > 0). */
#define MAMA_AUGMENT_DEFAULT_SIZE 518
#define MAMA_AUGMENT_DEFAULT_RRC_SCALE0 0.1f
#define MAMA_AUGMENT_DEFAULT_RRC_SCALE1 1.0f
#define MAMA_AUGMENT_DEFAULT_RRC_RATIO0 (3.0f / 4.0f)
#define MAMA_AUGMENT_DEFAULT_RRC_RATIO1 (4.0f / 3.0f)
#define MAMA_AUGMENT_DEFAULT_RRC_ATTEMPTS 10
#define MAMA_AUGMENT_DEFAULT_FLIP_P 0.5f
#define MAMA_AUGMENT_DEFAULT_JITTER_P 0.8f
#define MAMA_AUGMENT_DEFAULT_BRIGHTNESS0 0.2f
#define MAMA_AUGMENT_DEFAULT_BRIGHTNESS1 1.8f
#define MAMA_AUGMENT_DEFAULT_CONTRAST0 0.2f
#define MAMA_AUGMENT_DEFAULT_CONTRAST1 1.8f
#define MAMA_AUGMENT_DEFAULT_BLUR_P 0.4f
#define MAMA_AUGMENT_DEFAULT_BLUR_KERNEL 7
#define MAMA_AUGMENT_DEFAULT_BLUR_SIGMA0 0.1f
#define MAMA_AUGMENT_DEFAULT_BLUR_SIGMA1 2.0f
#define MAMA_AUGMENT_DEFAULT_MEAN 0.5f
#define MAMA_AUGMENT_DEFAULT_STD 0.5f
typedef struct mama_augment_opts {
    int size;              /* S (MAMA_AUGMENT_DEFAULT_SIZE)                  */
    int rrc;               /* RandomResizedCrop, step 4 (default on)         */
    float rrc_scale[2];    /* area fraction range (_RRC_SCALE0, _RRC_SCALE1) */
    float rrc_ratio[2];    /* aspect range (_RRC_RATIO0, _RRC_RATIO1)        */
    int rrc_attempts;      /* tries before the centre crop (_RRC_ATTEMPTS)   */
    float hflip_p, vflip_p;/* flip probabilities (_FLIP_P each)              */
    int jitter;            /* colour jitter, step 6 (default on)             */
    float jitter_p;        /* probability (_JITTER_P)                        */
    float brightness[2];   /* factor range (_BRIGHTNESS0, _BRIGHTNESS1)      */
    float contrast[2];     /* factor range (_CONTRAST0, _CONTRAST1)          */
    int jitter_random_order; /* torchvision's random order of the two (a fair
                                coin; default on); off: brightness first    */
    int blur;              /* Gaussian blur, step 7 (default on)             */
    float blur_p;          /* probability (_BLUR_P)                          */
    int blur_kernel;       /* kernel size, odd (_BLUR_KERNEL)                */
    float blur_sigma[2];   /* sigma range (_BLUR_SIGMA0, _BLUR_SIGMA1)       */
    float mean, std;       /* (x/255 - mean) / std (_MEAN, _STD)             */
} mama_augment_opts;
/* Every field at its default (the resolved zero struct). */
MAMA_API void mama_augment_opts_default(mama_augment_opts *o);
/* Named sets (o gets the zero struct with the set's fields; size 0):
 *   "paper"  SPEC A.5, the defaults above: tuned for 518 px, 40,000 steps
 *            and ~500k images;
 *   "light"  RandomResizedCrop scale (0.5, 1), both flips; no jitter, no
 *            blur: learns in a few hundred steps on a few hundred images
 *            (where "paper" stays at chance on issue 15's real films;
 *            bench/results/2026-12-07-{aug-sets,demo-aug-seeds}-*.md);
 *   "none"   no random step (the prepared image, as evaluation sees it);
 *   a config preset's name, its set: "tiny" and "small" light, "base" paper.
 * Another name is MAMA_ERR_INVALID listing these. */
MAMA_API mama_status mama_augment_preset(mama_augment_opts *o, const char *name);

/* Steps 4-7 on a prepared S x S image (dst becomes S x S; o NULL: the
 * defaults). */
MAMA_API mama_status mama_image_augment(const mama_image *prepared, const mama_augment_opts *o,
                                        mama_rng *rng, mama_image *dst);
/* The whole pipeline from a decoded image into out [channels, S, S]:
 * train != 0: steps 1-8 (rng required); train == 0: steps 1-3 and 8
 * (o NULL: the defaults). */
MAMA_API mama_status mama_image_pipeline(const mama_image *src, const mama_augment_opts *o, int train,
                                         mama_rng *rng, int channels, float *out);

/* --------------------------------------------------------------------------
 * 1.10 Formats: JSON, string building, atomic files, half floats,
 * safetensors, the manifest CSV (implementation in section 7)
 * --------------------------------------------------------------------------
 * Every parser here treats its input as hostile: malformed, truncated or
 * absurd input is a MAMA_ERR_FORMAT (or _IO, _NOMEM) whose message names the
 * file and the place (line/column, tensor, CSV line), never a crash.  All
 * memory goes through mama_alloc, so a failed allocation is MAMA_ERR_NOMEM
 * with nothing leaked. */

/* ---- JSON (RFC 8259, strict) -------------------------------------------
 * A parsed document is a tree of mama_json nodes.  Strictness: one value
 * with optional surrounding whitespace; no comments, trailing commas,
 * single quotes, NaN/Infinity, leading zeros, "+1", ".5" or "1."; strings
 * must be valid UTF-8 without raw control characters (< 0x20); escapes
 * \" \\ \/ \b \f \n \r \t \uXXXX are decoded, surrogate pairs are joined and
 * a lone surrogate is an error; \u0000 is kept (so `length` may exceed
 * strlen).  Numbers are parsed in the "C" locale whatever the process
 * locale; a number too large for a double (1e400) is an error, a tiny one
 * becomes 0.  Nesting deeper than MAMA_JSON_MAX_DEPTH is an error (the
 * parser is recursive; this bounds its stack).  Duplicate object keys are
 * kept in document order; mama_json_get returns the first.
 * Error messages read "<source_name>:<line>:<column>: <what>", where line and
 * column are 1-based and the column counts bytes. */
#define MAMA_JSON_MAX_DEPTH 512

typedef enum mama_json_type {
    MAMA_JSON_NULL, MAMA_JSON_BOOL, MAMA_JSON_NUMBER, MAMA_JSON_STRING, MAMA_JSON_ARRAY, MAMA_JSON_OBJECT
} mama_json_type;

typedef struct mama_json mama_json;
struct mama_json {
    mama_json_type type;
    double number;          /* NUMBER; BOOL as 0/1 */
    char *string;           /* STRING: UTF-8, NUL-terminated (escapes incl. \uXXXX and surrogate pairs decoded) */
    size_t length;          /* STRING: byte length (may contain NUL); ARRAY/OBJECT: number of children */
    mama_json *children;    /* ARRAY elements / OBJECT values, `length` of them */
    char **keys;            /* OBJECT keys (decoded, NUL-terminated), `length` of them */
};

/* Parse `len` bytes of `text` (need not be NUL-terminated).  On success *out
 * is a tree owned by the caller (free with mama_json_free); on failure *out
 * is NULL.  source_name (may be NULL: "<json>") only labels messages. */
MAMA_API mama_status mama_json_parse(const char *text, size_t len, const char *source_name, mama_json **out);
MAMA_API void mama_json_free(mama_json *j);
/* The value of `key` in an object; NULL if absent or not an object. */
MAMA_API const mama_json *mama_json_get(const mama_json *object, const char *key);

/* ---- Building text (JSON, CSV, reports) ---------------------------------
 * A growable NUL-terminated byte buffer.  Zero-initialise it
 * (mama_buf b = {0}); each append returns MAMA_OK or MAMA_ERR_NOMEM (the
 * buffer is left unchanged and still valid on failure).  Free with
 * mama_buf_free (which re-zeroes it). */
typedef struct mama_buf { char *data; size_t len, cap; } mama_buf;
MAMA_API mama_status mama_buf_append(mama_buf *b, const void *s, size_t n);
MAMA_API mama_status mama_buf_puts(mama_buf *b, const char *s);
MAMA_API mama_status mama_buf_printf(mama_buf *b, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Append `s` as a quoted JSON string: " and \ escaped, \b \f \n \r \t short
 * forms, other bytes < 0x20 and 0x7f as \u00XX, valid UTF-8 copied as is,
 * and each byte of an invalid UTF-8 sequence replaced by U+FFFD (so the
 * output is always valid JSON). */
MAMA_API mama_status mama_buf_json_string(mama_buf *b, const char *s);
/* Append a JSON number: shortest "%.17g"-exact form in the C locale;
 * NaN and +-Inf (not representable in JSON) are written as null. */
MAMA_API mama_status mama_buf_json_number(mama_buf *b, double x);
MAMA_API void mama_buf_free(mama_buf *b);
/* Fixed-buffer form of mama_buf_json_string: writes the quoted, escaped
 * string and a NUL into out[cap]; MAMA_ERR_INVALID if it does not fit
 * (out then holds ""). */
MAMA_API mama_status mama_json_escape(const char *s, char *out, size_t cap);

/* ---- Files ----------------------------------------------------------------
 * Atomic replacement: the data goes to a temporary file in the same
 * directory ("<path>.tmp.<pid>.<n>", created exclusively), which is flushed,
 * fsync'ed (POSIX) and renamed over `path`; on POSIX the directory is then
 * fsync'ed too.  Readers therefore see the old file or the complete new one,
 * never a torn one, even if the process dies mid-write.  On non-POSIX
 * systems the rename is replaced by remove + rename (not atomic there).
 * On any failure the temporary file is removed and `path` is untouched. */
MAMA_API mama_status mama_write_file_atomic(const char *path, const void *data, size_t n);

/* Streaming form: open, write any number of times, then commit or abort.
 * On POSIX each write is one unbuffered write(2) loop, so write in large
 * pieces.  After a failed write the file is poisoned: commit fails (and
 * cleans up).  commit and abort both free the handle's resources; abort on
 * a committed or failed-to-open handle is a no-op (so `abort` in a
 * cleanup path is always safe); a zeroed handle is also fine. */
typedef struct mama_atomic_file {
    int fd;            /* POSIX descriptor of the temporary file (-1 if none) */
    void *fp;          /* non-POSIX: FILE * of the temporary file */
    char *path;        /* final path     */
    char *tmp_path;    /* temporary path */
    int failed;        /* a write failed */
} mama_atomic_file;
MAMA_API mama_status mama_atomic_open(mama_atomic_file *af, const char *path);
MAMA_API mama_status mama_atomic_write(mama_atomic_file *af, const void *data, size_t n);
MAMA_API mama_status mama_atomic_commit(mama_atomic_file *af);
MAMA_API void mama_atomic_abort(mama_atomic_file *af);

/* Read a whole file into a mama_alloc'ed buffer (plus a NUL byte after the
 * data, not counted in *size); free with mama_free.  Works on pipes and
 * files of unknown size; a directory is MAMA_ERR_IO. */
MAMA_API mama_status mama_read_file(const char *path, unsigned char **data, size_t *size);

/* ---- Half precision --------------------------------------------------------
 * IEEE binary16 and bfloat16 (the top half of a float32) as raw uint16_t.
 * Conversions to f32 are exact (subnormals, Inf, NaN included).  f32->bf16
 * and f32->f16 round to nearest, ties to even; NaN stays a (quiet) NaN, and
 * f32->f16 overflows to +-Inf. */
MAMA_API float    mama_f16_to_f32(uint16_t h);
MAMA_API float    mama_bf16_to_f32(uint16_t h);
MAMA_API uint16_t mama_f32_to_bf16(float f);
MAMA_API uint16_t mama_f32_to_f16(float f);

/* ---- safetensors ------------------------------------------------------------
 * File layout: u64 little-endian N, N bytes of JSON header, then the data
 * section.  The header maps tensor names to {"dtype", "shape",
 * "data_offsets": [begin, end]} (offsets relative to the data section) and
 * may hold "__metadata__": {string: string}.  Validation follows the
 * reference implementation: N <= 100,000,000 and 8 + N <= file size; header
 * is a JSON object; each entry has a known dtype, a shape of non-negative
 * integers (at most MAMA_ST_MAX_DIMS; [] is a scalar), begin <= end,
 * end - begin == numel * dtype size; and the tensors, in offset order, tile
 * the data section exactly (no gap, overlap or trailing bytes).  Duplicate
 * tensor names are an error.  Every error names the file and, where it
 * applies, the tensor.  All multi-byte values are little-endian on disk;
 * the typed readers convert on any host. */
#define MAMA_ST_MAX_DIMS 8
typedef enum mama_dtype {
    MAMA_F32, MAMA_F16, MAMA_BF16, MAMA_I32, MAMA_I64, MAMA_U8,
    MAMA_F64, MAMA_I8, MAMA_I16, MAMA_BOOL
} mama_dtype;
/* Bytes per element (F32 4, BF16 2, ...), and the safetensors spelling
 * ("F32", "BF16", ...); mama_dtype_parse returns 0 and sets *dt, or -1. */
MAMA_API size_t      mama_dtype_size(mama_dtype dt);
MAMA_API const char *mama_dtype_name(mama_dtype dt);
MAMA_API int         mama_dtype_parse(const char *name, mama_dtype *dt);

typedef struct mama_st_tensor {
    char *name;
    mama_dtype dtype;
    int ndim;                          /* 0 for a scalar */
    int64_t shape[MAMA_ST_MAX_DIMS];
    size_t numel;                      /* product of shape (1 for a scalar) */
    size_t offset, nbytes;             /* within the data section (data + data_start) */
} mama_st_tensor;

typedef struct mama_safetensors {
    char *path;              /* file name (or the name given to _open_memory) */
    unsigned char *data;     /* the whole file: mmap'ed, read, or borrowed */
    size_t size;             /* bytes in data */
    size_t data_start;       /* 8 + N: where the data section starts */
    int count;               /* tensors, in header order */
    mama_st_tensor *tensors;
    int meta_count;          /* __metadata__ entries, in header order */
    char **meta_keys;
    char **meta_values;
    int *sorted_;            /* internal: tensor indices sorted by name */
    int storage_;            /* internal: 0 borrowed, 1 mama_alloc, 2 mmap */
} mama_safetensors;

/* Open a file: mmap'ed read-only on POSIX (falls back to reading it whole).
 * On failure *st is zeroed and nothing needs closing. */
MAMA_API mama_status mama_st_open(mama_safetensors *st, const char *path);
/* Parse a file image in memory.  The bytes are borrowed (not copied): they
 * must outlive the handle.  `name` labels messages. */
MAMA_API mama_status mama_st_open_memory(mama_safetensors *st, const void *data, size_t size, const char *name);
MAMA_API void mama_st_close(mama_safetensors *st);  /* safe on a zeroed handle */
/* Lookup by exact name (binary search); NULL if absent. */
MAMA_API const mama_st_tensor *mama_st_find(const mama_safetensors *st, const char *name);
MAMA_API const char *mama_st_meta(const mama_safetensors *st, const char *key);
/* Raw bytes of a tensor (little-endian, NO alignment guarantee: copy with
 * memcpy, or use the readers below).  `t` must come from this handle. */
MAMA_API const void *mama_st_data(const mama_safetensors *st, const mama_st_tensor *t);
/* Typed reads by name.  `count` must equal the tensor's numel (a mismatch is
 * MAMA_ERR_SHAPE naming both); an absent name is MAMA_ERR_INVALID.
 * read_f32: from F32, F16, BF16, F64.  read_bf16: from BF16 (copied), or
 * F32/F16/F64 (rounded).  read_i32: from I32, I64 (each value range-checked),
 * I16, I8, U8, BOOL.  read_i64: from any integer dtype. */
MAMA_API mama_status mama_st_read_f32(const mama_safetensors *st, const char *name, float *dst, size_t count);
MAMA_API mama_status mama_st_read_bf16(const mama_safetensors *st, const char *name, uint16_t *dst, size_t count);
MAMA_API mama_status mama_st_read_i32(const mama_safetensors *st, const char *name, int32_t *dst, size_t count);
MAMA_API mama_status mama_st_read_i64(const mama_safetensors *st, const char *name, int64_t *dst, size_t count);

/* Writer: collect entries, then write the file atomically.  The writer
 * copies names, shapes and metadata but NOT the tensor data: each `data`
 * pointer (host memory, numel * dtype size bytes, native byte order) must
 * stay valid until mama_st_writer_write returns.  Layout as the reference
 * writer: tensors ordered by dtype size (largest first) then name, so every
 * tensor is aligned to its element size; header padded with spaces so the
 * data section starts at a multiple of 8.  Keys are emitted as
 * "__metadata__" (if any) then the tensors in that order.  Duplicate names,
 * names starting "__", invalid UTF-8, negative dims or more than
 * MAMA_ST_MAX_DIMS dims are MAMA_ERR_INVALID at add time.  A writer can be
 * written more than once. */
typedef struct mama_st_writer mama_st_writer;
MAMA_API mama_status mama_st_writer_create(mama_st_writer **w);
MAMA_API mama_status mama_st_writer_add(mama_st_writer *w, const char *name, mama_dtype dt, int ndim,
                                        const int64_t *shape, const void *data);
/* Metadata value for `key` (a later call with the same key replaces it). */
MAMA_API mama_status mama_st_writer_meta(mama_st_writer *w, const char *key, const char *value);
MAMA_API mama_status mama_st_writer_write(mama_st_writer *w, const char *path);
/* The whole file image in memory (mama_buf; free with mama_buf_free). */
MAMA_API mama_status mama_st_writer_serialize(mama_st_writer *w, mama_buf *out);
MAMA_API void mama_st_writer_free(mama_st_writer *w);

/* ---- Manifest CSV (one row per image) -----------------------------------------
 * Columns (header row required, any order, names matched case-insensitively
 * with spaces/hyphens read as underscores, unknown columns ignored):
 *   path (required), patient, study, side, view, procedure, age, race,
 *   ethnicity, image_type, density, birads, mass_shape, mass_density,
 *   calc_type, calc_distribution, cancer, split
 * CSV: RFC 4180 -- fields separated by commas, optionally quoted with ""
 * inside quotes standing for one quote; quoted fields may hold commas and
 * newlines; lines end with LF or CRLF; a UTF-8 BOM is skipped; blank lines
 * are ignored.  Every row must have as many fields as the header.
 * Values (each field is read with surrounding spaces trimmed):
 *   strings: empty, "unknown", "nan", "NaN", "NA", "N/A", "none", "null"
 *            (any case) become the string "unknown";
 *   side:    L/left -> "left", R/right -> "right", B/bilateral/both ->
 *            "bilateral" (any case); other text kept;
 *   image_type: "2D" in any case is stored as "2D"; other text kept (the
 *            dataset compares it case-insensitively too, 1.15);
 *   birads:  a letter A N B P S M K (any case, stored upper case) or the
 *            category digit 0..6 (mapped to that letter); else "unknown"
 *            if missing, else a bad row;
 *   age:     a number >= 0 (truncated to whole years; "57.9" -> 57), -1 if missing;
 *   density: 1..5 (integral; "3.0" ok), -1 if missing;
 *   cancer:  0/1/true/false/yes/no, -1 if missing;
 *   split:   train / val / validation / test (any case); missing -> hashed.
 * A value that is present but invalid makes the row bad.  A bad row is
 * MAMA_ERR_FORMAT naming the file and the (1-based, physical) line where
 * the row starts, or with skip_bad_rows it is skipped and counted in
 * `skipped` (an unterminated quote still fails: the rest of the file is
 * unreadable).
 * Paths: a relative path is resolved against the manifest's directory
 * (absolute paths, "/..." or "X:\..." or "\\...", are kept).
 * Splits: rows without a split take it from the patient id: h = FNV-1a-64
 * of the id's bytes (offset 14695981039346656037, prime 1099511628211),
 * mixed with the splitmix64 finaliser; h % 100 < 70 train, < 80 val, else
 * test -- so no patient spans two hashed splits (a row without a patient
 * id hashes its path instead).
 * Studies: rows with the same (patient, study) form a study; a row whose
 * study is unknown is a study of its own. */
typedef enum mama_split { MAMA_SPLIT_TRAIN = 0, MAMA_SPLIT_VAL = 1, MAMA_SPLIT_TEST = 2 } mama_split;

typedef struct mama_record {
    /* strings: never NULL after load/add; "unknown" when missing */
    char *path;              /* resolved image path */
    char *patient, *study;
    char *side;              /* "left", "right", "bilateral", other, "unknown" */
    char *view;              /* e.g. "CC", "MLO" */
    char *procedure;         /* e.g. "MG Screening Bilateral" */
    char *race, *ethnicity;
    char *image_type;        /* e.g. "2D" */
    char *birads;            /* "A" "N" "B" "P" "S" "M" "K" or "unknown" */
    char *mass_shape, *mass_density;
    char *calc_type, *calc_distribution;
    int age;                 /* years, -1 unknown */
    int density;             /* 1..5, -1 unknown */
    int cancer;              /* 0/1, -1 unknown */
    int split;               /* mama_split; -1 (in mama_manifest_add) = hash it */
    int study_index;         /* index into mama_manifest.studies (set by indexing) */
    int line;                /* CSV line of the row (0 if added in memory) */
} mama_record;

typedef struct mama_study {
    int first;               /* into mama_manifest.study_members */
    int count;               /* images in the study (>= 1) */
} mama_study;

typedef struct mama_manifest {
    char *path;              /* manifest file ("" for one built in memory) */
    char *dir;               /* its directory, "" if none */
    int count;               /* records */
    mama_record *records;
    int study_count;
    mama_study *studies;
    int *study_members;      /* record indices, grouped by study, ascending within one */
    int skipped;             /* bad rows skipped (skip_bad_rows) */
    int split_counts[3];     /* records per split */
    int cap_;                /* internal: records allocated */
    void *arena_;            /* internal: string storage */
} mama_manifest;

/* Load a manifest file (see above).  On failure *m is zeroed. */
MAMA_API mama_status mama_manifest_load(mama_manifest *m, const char *path, int skip_bad_rows);
/* Parse CSV text in memory: `source_name` labels messages, relative paths
 * are resolved against `base_dir` (NULL or "" = leave them as they are). */
MAMA_API mama_status mama_manifest_parse(mama_manifest *m, const char *text, size_t len,
                                         const char *source_name, const char *base_dir,
                                         int skip_bad_rows);
MAMA_API void mama_manifest_free(mama_manifest *m);  /* safe on a zeroed manifest */
/* Building in memory (the synthetic generator): init, add records (strings
 * copied, NULL -> "unknown"; split -1 = hash; path kept as given), then
 * mama_manifest_index to compute splits, studies and counts (load does all
 * of this itself; adding after indexing needs another index call). */
MAMA_API void        mama_manifest_init(mama_manifest *m);
MAMA_API mama_status mama_manifest_add(mama_manifest *m, const mama_record *r);
MAMA_API mama_status mama_manifest_index(mama_manifest *m);
/* The split a patient id hashes to (the rule above). */
MAMA_API mama_split  mama_split_of_patient(const char *patient);
MAMA_API const char *mama_split_name(int split);  /* "train" "val" "test" */
/* All images of record i's study (i included), ascending; *n gets the count. */
MAMA_API const int  *mama_manifest_study_of(const mama_manifest *m, int i, int *n);
/* A uniformly random OTHER image of record i's study, or -1 if it has none
 * (any member; the loader draws with mama_dataset_other_view instead). */
MAMA_API int         mama_manifest_other_view(const mama_manifest *m, int i, mama_rng *rng);
/* Write all columns (header first, CRLF line ends, fields quoted when they
 * hold a comma, quote, CR, LF or edge space; -1 numbers as empty fields),
 * atomically.  A record path that starts with the output file's directory
 * plus '/' is written relative to it, so load -> write -> load into the same
 * directory round-trips. */
MAMA_API mama_status mama_manifest_write(const mama_manifest *m, const char *path);

/* ---- 1.11 Model configuration (SPEC A.1-A.3, issue presets tiny/small/base) */
typedef enum mama_text_mode { MAMA_TEXT_FULL = 0, MAMA_TEXT_LORA = 1, MAMA_TEXT_FROZEN = 2 } mama_text_mode;

typedef struct mama_config {
    /* vision tower (DINOv2 ViT with registers) */
    int image_size, patch_size, vision_dim, vision_depth, vision_heads, registers;
    int in_chans;               /* 3 (grey replicated); 1 = patch embedding folded */
    /* text tower (GPT-2) */
    int text_dim, text_depth, text_heads, vocab_size, context;
    int text_attn_layer_scale;  /* BioMedLM: scores / (layer index + 1) */
    float text_dropout;         /* embedding, attention, residual dropout */
    mama_text_mode text_mode;   /* full | lora | frozen */
    int lora_rank;
    float lora_alpha, lora_dropout;
    int text_pool_real_only;    /* 0: mean over all positions (reference), 1: real tokens */
    /* heads */
    int embed_dim, local_hidden;
    /* memory: recompute each transformer block during the backward */
    int grad_checkpoint;
    /* storage of the frozen text tower's big matrices (wte and every
     * block's c_attn, attn.c_proj, c_fc, mlp.c_proj weights) in text modes
     * lora and frozen: MAMA_F32 (0, the default), MAMA_BF16 or MAMA_F16.
     * Half precision halves their memory (the 2.7B BioMedLM tower: 5.4 GB
     * instead of 10.8 GB); the GEMMs widen them to float32 while packing,
     * so all arithmetic stays float32.  Trainable tensors (LoRA, heads,
     * vision) are always float32 master weights, and frozen ones have no
     * gradient or optimiser state in any case.  Ignored in text mode full
     * and on a backend without half-precision ops (then float32).  A
     * runtime choice, not part of the architecture: not written to the
     * mama_config metadata (a saved model's tensors carry their dtype;
     * mama_model_load keeps it).  In an inference-only model (below) it
     * also applies to the image tower's block matrices (qkv, proj, fc1,
     * fc2), in any text mode. */
    mama_dtype frozen_dtype;
    /* 0 (default): the model trains and encodes.  1: inference only, for
     * programs that only encode: no gradient buffer, no gradient scratch,
     * one set of block buffers reused layer to layer and one residual
     * stream (a `base` image model needs ~10 D floats per token of
     * activations instead of ~17 D per token and layer); mama_model_step,
     * mama_model_forward and mama_adamw_init refuse such a model.  A
     * runtime choice like frozen_dtype: not written to the metadata. */
    int inference;
    /* special tokens */
    int bos_id, eos_id, pad_id, sep_id;
} mama_config;

/* Fill `c` with a preset: "tiny", "small" or "base" (the paper). */
MAMA_API mama_status mama_config_preset(mama_config *c, const char *name);
/* Check a config for consistency (dims divisible by heads, image by patch...). */
MAMA_API mama_status mama_config_validate(const mama_config *c);
/* The config as the `mama_config` JSON object of the safetensors metadata. */
MAMA_API mama_status mama_config_to_json(const mama_config *c, char *out, size_t cap);
/* Parse that JSON (unknown keys ignored; missing keys keep c's values). */
MAMA_API mama_status mama_config_from_json(mama_config *c, const char *json, const char *source);

/* ---- 1.12 Parameters.  Every tensor of the model lives in one buffer, in
 * four contiguous groups: [train | late | frozen | buffers].  `train`
 * parameters learn from step 0, `late` ones (local heads, local_scale,
 * SimCLR head) from the late-loss step, `frozen` never (e.g. the vision
 * `norm`, the text base weights in LoRA mode), `buffers` are BatchNorm
 * running statistics.  Gradients exist for [train | late] only, in a second
 * buffer with the same offsets, so data-parallel training needs one
 * all-reduce of one buffer.  The one exception to "one buffer": with
 * mama_config.frozen_dtype BF16/F16 the frozen text matrices live in a
 * third, half-precision buffer (mama_param_info.dtype says which; their
 * offsets count elements of that buffer). */
typedef enum mama_param_group { MAMA_GROUP_TRAIN = 0, MAMA_GROUP_LATE, MAMA_GROUP_FROZEN, MAMA_GROUP_BUFFER } mama_param_group;

typedef struct mama_param_info {
    char name[128];             /* SPEC A.8 name */
    int ndim;
    int64_t shape[4];           /* as stored in files (1x1 convs as [out,in,1]) */
    size_t offset, numel;       /* in elements, into the parameter buffer (float32) or,
                                   for dtype MAMA_BF16/MAMA_F16, into the model's
                                   half-precision buffer of frozen weights */
    mama_param_group group;
    mama_dtype dtype;           /* storage: MAMA_F32, or the config's frozen_dtype for
                                   the frozen text matrices kept in half precision */
} mama_param_info;

typedef struct mama_model mama_model;

/* Create a model with freshly initialised weights (SPEC A.5 initialisation)
 * on backend `be` for batches of up to `max_batch` captions/images. */
MAMA_API mama_status mama_model_create(mama_model **m, const mama_config *c, mama_backend *be,
                                       int max_batch, uint64_t seed);
/* Bytes of the activation arena a model of config c and max_batch would
 * allocate (2 max_batch images, max_batch captions; 0 on a bad config),
 * e.g. base: 50.6 GB at max_batch 16, tiny: 0.63 GB at 32. */
MAMA_API size_t mama_model_arena_bytes(const mama_config *c, int max_batch);
MAMA_API void mama_model_free(mama_model *m);
MAMA_API const mama_config *mama_model_config(const mama_model *m);
MAMA_API int mama_model_param_count(const mama_model *m);
MAMA_API const mama_param_info *mama_model_param(const mama_model *m, int i);
MAMA_API const mama_param_info *mama_model_find_param(const mama_model *m, const char *name);
/* sizes of the groups, in elements (all storage dtypes; only the frozen
 * group can hold half-precision tensors, see mama_model_half_numel) */
MAMA_API size_t mama_model_numel(const mama_model *m, mama_param_group g);
/* elements kept in half precision (0 when none) and their dtype
 * (MAMA_BF16 / MAMA_F16; MAMA_F32 when none) */
MAMA_API size_t mama_model_half_numel(const mama_model *m, mama_dtype *dtype);
/* Device pointers to the parameter buffer and the gradient buffer. */
MAMA_API float *mama_model_params(mama_model *m);
MAMA_API float *mama_model_grads(mama_model *m);

/* Load weights (names of SPEC A.8) from safetensors; every tensor of the
 * model must be present with the right shape unless allow_missing (then
 * missing tensors keep their initial values and are counted). Returns the
 * number of tensors loaded in *loaded when non-NULL. */
MAMA_API mama_status mama_model_load_weights(mama_model *m, const char *path, int allow_missing, int *loaded);
/* Create a model from a safetensors file whose metadata holds mama_config.
 * The frozen text matrices keep the file's dtype when it is BF16 or F16
 * (and the text mode is lora or frozen), else float32. */
MAMA_API mama_status mama_model_load(mama_model **m, const char *path, mama_backend *be, int max_batch);
/* The same with the storage of the frozen text matrices chosen:
 * frozen_dtype MAMA_F32, MAMA_BF16 or MAMA_F16 (values are converted on
 * load, rounding to nearest even), or -1 for the file's (as above). */
MAMA_API mama_status mama_model_load_as(mama_model **m, const char *path, mama_backend *be, int max_batch,
                                        int frozen_dtype);
/* The same for inference only (mama_config.inference = 1): frozen_dtype
 * (as for load_as) then also applies to the image tower's block matrices
 * (BF16 / F16 halve the image tower's memory; the GEMMs widen them). */
MAMA_API mama_status mama_model_load_inference(mama_model **m, const char *path, mama_backend *be, int max_batch,
                                               int frozen_dtype);
/* Save all parameters and buffers (and the config) as safetensors, atomically. */
MAMA_API mama_status mama_model_save(const mama_model *m, const char *path);

/* ---- 1.13 A batch and one training step. */
typedef struct mama_batch {
    int B;                      /* samples */
    const float *images;        /* host [B, in_chans, S, S], normalised */
    const float *ext_images;    /* host, same shape; used when late */
    const int *input_ids;       /* host [B, context] */
    const int *attention_mask;  /* host [B, context], 1 real / 0 pad */
} mama_batch;

/* Options of one step.  The options rule of section 1: zero is the
 * default (the comment says which), MAMA_OFF turns a switch off; o NULL is
 * all defaults. */
typedef struct mama_step_opts {
    int late;                   /* compute multi-view, symmetric CLIP and SLA (default off) */
    int use_mv, use_sym, use_sla; /* each late term (ablations; default on) */
    int train;                  /* BatchNorm batch statistics and dropout (default on) */
    int dropout;                /* dropout active when training (default on) */
    uint64_t seed;              /* dropout masks for this step (any value; default 0) */
} mama_step_opts;
/* Every field at its default (the resolved zero struct). */
MAMA_API void mama_step_opts_default(mama_step_opts *o);

typedef struct mama_losses {
    float loss, clip, mv, sym, sla;
} mama_losses;

/* Forward, all requested losses, and backward: gradients are written
 * (overwritten, not accumulated) into the gradient buffer, unless
 * accumulate != 0, then added.  Embeddings of the last forward can be read
 * with mama_model_embeddings. */
MAMA_API mama_status mama_model_step(mama_model *m, const mama_batch *b, const mama_step_opts *o,
                                     int accumulate, mama_losses *out);
/* Forward only in eval mode (running statistics, no dropout). */
MAMA_API mama_status mama_model_forward(mama_model *m, const mama_batch *b, mama_losses *out);
/* Copy the last forward's image / text embeddings [B, E] to host. */
MAMA_API mama_status mama_model_embeddings(mama_model *m, float *img_emb, float *txt_emb);
/* Encode images / texts only (eval mode): outputs [B, E] on host. */
MAMA_API mama_status mama_encode_images(mama_model *m, const float *images, int B, float *emb, float *pooled);
/* mama_encode_images, mama_model_step and mama_model_forward (and the
 * pretraining's validation) run each call on all threads or on one,
 * whichever was faster lately (each keeps its own timings; the
 * other choice is tried again after 16 to 256 calls): on a loaded machine
 * several threads can be far slower than one.  Results are the same bits
 * either way.  on = 0 always uses all threads (default on); either call
 * forgets the timings. */
MAMA_API void mama_model_set_thread_tuning(mama_model *m, int on);
/* One decoded image as this model's input: the evaluation pipeline (SPEC
 * A.5 steps 1-3 and 8: Otsu crop, letterbox, normalise) at the model's
 * image size and channels; out [in_chans, image_size, image_size]. */
MAMA_API mama_status mama_model_prepare_image(const mama_model *m, const mama_image *src, float *out);
MAMA_API mama_status mama_encode_texts(mama_model *m, const int *ids, const int *mask, int B, float *emb);

/* ---- 1.14 The optimiser: AdamW over the gradient buffer (SPEC A.5).
 * The `train` group steps from step 0; the `late` group only when late is
 * set, with its own step count for the bias correction, so parameters that
 * start training at the late-loss step are neither moved nor decayed
 * before it. */
typedef struct mama_adamw {
    float beta1, beta2, eps, weight_decay;
    long step_train, step_late;   /* steps taken by each group */
    float *m, *v;                 /* device buffers over [train | late] */
    mama_backend *be;
    size_t n_train, n_late;
} mama_adamw;
MAMA_API mama_status mama_adamw_init(mama_adamw *o, mama_model *m, float weight_decay);
MAMA_API void mama_adamw_free(mama_adamw *o);
MAMA_API void mama_adamw_step(mama_adamw *o, mama_model *m, float lr, int late);
/* Intermediate features of the last mama_encode_images / mama_encode_texts
 * call (for parity checks against other implementations):
 * prenorm [B, 1+R+N, D] (all tokens after the last block), patch_norm
 * [B, N, D] (patch tokens after the final norm), text hidden [B, T, Dt]
 * (after ln_f).  Any output may be NULL. */
MAMA_API mama_status mama_model_vision_tokens(mama_model *m, int B, float *prenorm, float *patch_norm);
MAMA_API mama_status mama_model_text_hidden(mama_model *m, int B, float *hidden);
/* exp(logit_scale): the temperature the global CLIP scores are multiplied by. */
MAMA_API float mama_model_logit_scale(mama_model *m);

/* ---- 1.15 Datasets: a manifest, a tokenizer and the image pipeline ------ */
typedef struct mama_dataset mama_dataset;

/* The options rule of section 1: zero is the default (the comment says
 * which), MAMA_OFF turns a switch off. */
typedef struct mama_dataset_opts {
    const char *manifest;        /* CSV (SPEC part B); required */
    const char *tokenizer;       /* directory with vocab.json + merges.txt, or tokenizer.json
                                    (default NULL: none; captions and training need one) */
    int skip_bad_rows;           /* skip (and count) malformed rows and unreadable images (default off) */
    int cache;                   /* keep the prepared (letterboxed, cropped, stretched) images in
                                    memory (default on) */
    int only_2d;                 /* keep image_type "2D" (any case, or unknown) only, SPEC A.6 (default on) */
    int keep_incomplete;         /* pretrain on incomplete records too (default off: left out, SPEC A.7) */
    mama_decode_opts decode;     /* 16-bit images to 8 bits (default: by each image's maximum) */
    int allow_split_overlap;     /* accept patients with images in more than one split (default off: an
                                    error naming the first, since evaluation would see training patients) */
    mama_augment_opts aug;       /* the augmentation of mama_dataset_image's training images (the probe's
                                    and fine-tuning's) and every image's normalisation (mean, std);
                                    pretraining's too when mama_pretrain_opts.aug is the zero struct
                                    (default: "paper", SPEC A.5; mama_augment_preset gives the others;
                                    aug.size 0 = the model's image_size, another size is an error) */
    int splits;                  /* the splits whose images are decoded and placed, bits 1 << MAMA_SPLIT_*
                                    (default 0: all; pretraining needs train, and val for its validation
                                    loss: 1024 px PNGs cost ~25 ms each to decode) */
} mama_dataset_opts;
/* Data hygiene (SPEC A.6, A.7).  Every record is placed by the first rule
 * it meets, and each rule that leaves a record out counts it:
 *   not_2d      image_type known and not "2D" (any case): in no split (only_2d);
 *   unreadable  image could not be decoded (with cache and skip_bad_rows;
 *               otherwise creation fails): in no split;
 *   incomplete  the caption lacks the procedure, the procedure's reason
 *               (it contains neither "screen" nor "diag", any case), the
 *               density or the BI-RADS letter: kept in mama_dataset_split
 *               (evaluation picks the records its task has labels for) but
 *               left out of mama_dataset_pretrain_split, which pretraining
 *               and its validation read (keep_incomplete keeps them; then
 *               the count is 0).  Counted over all three splits.
 *   duplicates  a row equal to an earlier one in every field (that one is
 *               kept): in no split (checked before decoding);
 * bad_rows are the manifest rows skip_bad_rows dropped before all this.
 * overlap_patients counts the patients whose images (duplicates included,
 * not-2D ones not) lie in more than one split: an error unless
 * allow_split_overlap (patient ids "unknown" are not compared). */
typedef struct mama_dataset_skips {
    int bad_rows, unreadable, not_2d, incomplete;
    int duplicates, overlap_patients;
} mama_dataset_skips;
/* Every field at its default (the resolved zero struct). */
MAMA_API void mama_dataset_opts_default(mama_dataset_opts *o);
/* Create a dataset for a model config (image size, channels, context). */
MAMA_API mama_status mama_dataset_create(mama_dataset **d, const mama_dataset_opts *o, const mama_config *c);
MAMA_API void mama_dataset_free(mama_dataset *d);
MAMA_API const mama_manifest *mama_dataset_manifest(const mama_dataset *d);
MAMA_API const mama_tokenizer *mama_dataset_tokenizer(const mama_dataset *d);
/* Record indices of one split (train/val/test), and their count. */
MAMA_API int mama_dataset_split(const mama_dataset *d, mama_split s, const int **indices);
/* The records of one split that pretraining uses: mama_dataset_split less
 * the incomplete ones (unless keep_incomplete), in the same order. */
/* A tokenizer fits a model when its vocabulary fits the embedding table
 * and its special tokens have the config's ids (bos, eos, pad, sep):
 * MAMA_ERR_SHAPE otherwise, the message naming both sides (t_name: the
 * tokenizer's file or folder, c_name: where the config came from; either
 * may be NULL).  mama_dataset_create checks its tokenizer this way. */
MAMA_API mama_status mama_tokenizer_check_config(const mama_tokenizer *t, const char *t_name, const mama_config *c,
                                                 const char *c_name);
MAMA_API int mama_dataset_pretrain_split(const mama_dataset *d, mama_split s, const int **indices);
/* The tokenizer a model was trained with.  A fingerprint identifies a
 * tokenizer's vocabulary and merges: "v<vocab size>-<16 hex digits>" (a
 * 64-bit hash of every token's bytes in id order, the merges and the
 * special ids), into out (at least 40 bytes).  mama_model_set_tokenizer
 * records a tokenizer's path (as given) and fingerprint in the model;
 * mama_model_save and the checkpoints write them to the metadata
 * ("tokenizer", "tokenizer_abs": a relative path made absolute against the
 * working directory, "tokenizer_fingerprint"), mama_model_load reads them
 * back, and mama_pretrain records its dataset's.  mama_model_tokenizer
 * returns the recorded path as given (NULL: none), *abs_path and
 * *fingerprint (NULL where none).
 * mama_model_check_tokenizer: mama_tokenizer_check_config against the
 * model's config, and when the model records a fingerprint, the same
 * fingerprint (MAMA_ERR_SHAPE naming both sides otherwise). */
MAMA_API mama_status mama_tokenizer_fingerprint(const mama_tokenizer *t, char *out, size_t cap);
MAMA_API mama_status mama_model_set_tokenizer(mama_model *m, const char *path, const mama_tokenizer *t);
MAMA_API const char *mama_model_tokenizer(const mama_model *m, const char **abs_path, const char **fingerprint);
MAMA_API mama_status mama_model_check_tokenizer(const mama_model *m, const mama_tokenizer *t, const char *t_name);
/* Bad manifest rows plus images that could not be decoded, skipped with
 * skip_bad_rows (bad_rows + unreadable of the reasons below). */
MAMA_API int mama_dataset_skipped(const mama_dataset *d);
/* What was left out, per reason (see mama_dataset_skips). */
MAMA_API const mama_dataset_skips *mama_dataset_skipped_reasons(const mama_dataset *d);
/* Whether record i is complete for pretraining (the rule above). */
MAMA_API int mama_record_complete(const mama_record *r);
/* The second view of record i (SPEC A.4, A.7): a uniformly random OTHER
 * record of its study among those pretraining uses in i's own split (the
 * train split for training, the val split for the validation loss; other
 * splits, non-2D, unreadable and, by default, incomplete records
 * excluded), or -1 when there is none -- then the loader takes a second
 * augmentation of the image itself, as the reference does. */
MAMA_API int mama_dataset_other_view(const mama_dataset *d, int i, mama_rng *rng);
/* A record's metadata as caption fields (strings point into the manifest). */
MAMA_API void mama_record_caption_fields(const mama_record *r, mama_caption_fields *f);
/* One image through the pipeline into out [in_chans, S, S]: train != 0
 * applies the augmentations of SPEC A.5 with `rng`. */
MAMA_API mama_status mama_dataset_image(mama_dataset *d, int record, int train, mama_rng *rng, float *out);
/* One caption as token ids and mask [context]: masked with probability
 * mask_p per field when mask_p > 0 (SPEC A.5). */
MAMA_API mama_status mama_dataset_caption(mama_dataset *d, int record, float mask_p, mama_rng *rng, int *ids,
                                          int *mask);
/* Image files read ahead (embed, predict): `threads` worker threads (0:
 * one; MAMA_OFF: none) decode (dec; NULL: the default) and prepare the
 * files as mama_model_prepare_image does for a model of config c, into
 * batches of up to `batch` images, the next batch while the caller encodes
 * the current one.  next
 * gives the batches in the order of paths (images [count, in_chans, S, S],
 * valid until the next call; first: the index of its first path) and
 * count = 0 after the last.  A batch fails when one of its files does
 * (the message names the first).  The same values whatever the threads;
 * without them (MAMA_NO_THREADS) each batch is read inside next.  paths
 * must outlive the reader. */
typedef struct mama_image_reader mama_image_reader;
MAMA_API mama_status mama_image_reader_open(mama_image_reader **out, const mama_config *c, const char *const *paths,
                                            int n, const mama_decode_opts *dec, int batch, int threads);
MAMA_API mama_status mama_image_reader_next(mama_image_reader *r, const float **images, int *first, int *count);
MAMA_API void mama_image_reader_close(mama_image_reader *r);

/* ---- 1.16 Pretraining (SPEC A.4, A.5) ----------------------------------- */
/* Pretraining options.  The options rule of section 1: a zero field takes
 * its default (MAMA_PRETRAIN_DEFAULT_*, the paper's values; the comment
 * names it), MAMA_OFF makes a number zero or turns a switch off (e.g.
 * warmup = MAMA_OFF: no warm-up, late_loss = MAMA_OFF: all four losses from
 * step 0, use_sla = MAMA_OFF: no SLA term). */
#define MAMA_PRETRAIN_DEFAULT_STEPS 40000L
#define MAMA_PRETRAIN_DEFAULT_BATCH 36
#define MAMA_PRETRAIN_DEFAULT_ACCUM 2
#define MAMA_PRETRAIN_DEFAULT_LR 4e-5f
#define MAMA_PRETRAIN_DEFAULT_LR_FLOOR 1e-8f
/* The schedule follows `steps`: warm-up and late-loss start are the paper's
 * fractions of the run (4000 and 8000 of its 40000 steps) unless given;
 * _WARMUP and _LATE_LOSS are their values at the default steps. */
#define MAMA_PRETRAIN_DEFAULT_WARMUP_PCT 10
#define MAMA_PRETRAIN_DEFAULT_LATE_LOSS_PCT 20
#define MAMA_PRETRAIN_DEFAULT_WARMUP (MAMA_PRETRAIN_DEFAULT_STEPS * MAMA_PRETRAIN_DEFAULT_WARMUP_PCT / 100)
#define MAMA_PRETRAIN_DEFAULT_WEIGHT_DECAY 0.1f
#define MAMA_PRETRAIN_DEFAULT_LATE_LOSS (MAMA_PRETRAIN_DEFAULT_STEPS * MAMA_PRETRAIN_DEFAULT_LATE_LOSS_PCT / 100)
#define MAMA_PRETRAIN_DEFAULT_EXT_OTHER_VIEW_P 0.5f
#define MAMA_PRETRAIN_DEFAULT_CAPTION_MASK_P 0.8f
#define MAMA_PRETRAIN_DEFAULT_MAX_BAD_STEPS 5
#define MAMA_PRETRAIN_DEFAULT_SEED 1
typedef struct mama_pretrain_opts {
    long steps;                  /* optimiser steps, >= 1 (_STEPS); the schedule spans them */
    long stop_at;                /* stop (and checkpoint) after this step (default: run to `steps`) */
    int batch;                   /* per micro-batch and rank (_BATCH) */
    int accum;                   /* micro-batches per optimiser step (_ACCUM) */
    float lr, lr_floor;          /* peak and floor of the cosine schedule (_LR, _LR_FLOOR) */
    long warmup;                 /* linear warm-up steps (default _WARMUP_PCT % of steps), < steps */
    float weight_decay;          /* AdamW's (_WEIGHT_DECAY) */
    long late_loss;              /* multi-view, symmetric and local losses from this step (default
                                    _LATE_LOSS_PCT % of steps), < steps */
    int use_mv, use_sym, use_sla;/* the late terms (ablations; default on) */
    float ext_other_view_p;      /* P(ext = another image of the study) (_EXT_OTHER_VIEW_P) */
    float caption_mask_p;        /* per-field caption masking (_CAPTION_MASK_P) */
    float clip_grad;             /* gradient-norm clipping (default none) */
    uint64_t seed;               /* data order, augmentation, masks (_SEED; 0: the default) */
    int max_bad_steps;           /* consecutive non-finite steps before stopping (_MAX_BAD_STEPS;
                                    MAMA_OFF: never stop, skip them all) */
    const char *checkpoint;      /* path; written every checkpoint_every steps and at the end (default none) */
    long checkpoint_every;       /* default: only at the end */
    long val_every;              /* the validation loss (below) after every val_every optimiser steps and
                                    after the last one (default: at each checkpoint_every and after the
                                    last step; MAMA_OFF, kept negative when resolved: never) */
    const char *best_checkpoint; /* where the best-validation checkpoint goes (default: `checkpoint`
                                    with ".best" before its extension, a.safetensors -> a.best.safetensors;
                                    none without a checkpoint) */
    const char *log_csv;         /* a row per step (default none) */
    int resume;                  /* continue from `checkpoint` if it exists (default off); stale temporary
                                    files of killed runs (<checkpoint>.tmp.PID.N of a PID that no longer
                                    runs) are removed at the start, and log_csv keeps the rows of the
                                    resumed steps only, so every step appears once */
    int allow_changes;           /* resume with other batch, accum, lr or late_loss than the checkpoint
                                    records: default an error naming both values; on: each change logged */
    int quiet;                   /* no progress output (default off) */
    mama_augment_opts aug;       /* image augmentation (the zero struct: the dataset's,
                                    mama_dataset_opts.aug; otherwise its own defaults); aug.size 0 = the
                                    model's image_size (another size is an error) */
    int no_overlap;              /* data parallel: one blocking gradient all-reduce after the backward
                                    instead of bucket all-reduces overlapped with it, 12.7 (default off) */
} mama_pretrain_opts;
/* Every field at its default (the resolved zero struct; aug.size 0). */
MAMA_API void mama_pretrain_opts_default(mama_pretrain_opts *o);

typedef struct mama_pretrain_result {
    long steps_done, skipped_steps;
    mama_losses last;            /* losses of the last step */
    double seconds, images_per_s;
    /* data parallel: seconds the training thread spent in the gradient sum,
     * all of it (starting and testing bucket all-reduces inside the
     * backward, the wait after it, or the blocking all-reduce) and the part
     * after the backward (the final wait, or all of the blocking one) */
    double grad_comm_seconds, grad_wait_seconds;
    long grad_buckets;           /* bucket all-reduces started (0: the blocking path) */
    /* validation: the best loss over the run, resumed runs included (NaN
     * when none), the step after which it was measured (0: none), and the
     * loss of the last validation of this call (NaN when none) */
    double best_val_loss, last_val_loss;
    long best_val_step;
} mama_pretrain_result;

/* Validation (SPEC A.7, "best and last"): the training objective on the
 * val split at the current step, averaged over its images: no
 * augmentation (the evaluation pipeline), unmasked captions, eval mode
 * (dropout off, BatchNorm with its running statistics, as every eval-mode
 * forward here), the losses the step uses (the late ones from late_loss on;
 * their ext image is chosen as in training, another image of the study
 * with probability ext_other_view_p, from a random stream fixed per record,
 * so every validation sees the same pairs; else the image itself).  The
 * split goes in batches of `batch` (per rank; the global batch of world *
 * batch in data parallel), each batch's loss weighted by its size; the last
 * batch is partial (in data parallel each rank takes floor(rest / world)
 * images of it, so at most world - 1 images are left out).  After a
 * validation, when it is the best so far (strictly lower, finite; the
 * first validation with the late losses, from late_loss on, starts the
 * comparison afresh, since the objective it measures changed there), the
 * checkpoint goes to best_checkpoint too; both files carry best_val_loss
 * and best_val_step in their metadata, and a resumed run starts from the
 * lower of the two files' best (so a worse validation after a resume never
 * replaces a better best).  Validation never changes the training
 * trajectory: a run validated or not, resumed or not, trains identically. */
MAMA_API mama_status mama_pretrain(mama_model *m, mama_dataset *d, const mama_pretrain_opts *o,
                                   mama_pretrain_result *res);
/* Checkpoints: weights + AdamW moments + step + seed + config (+ batch,
 * accum, lr, late_loss when mama_pretrain writes them), written atomically
 * (temporary file, fsync, rename); weights or moments that are not all
 * finite are never written (MAMA_ERR_NUMERIC naming the first bad tensor).
 * Loading checks every metadata value's range and the file's config
 * against the model's before any tensor (MAMA_ERR_FORMAT naming file, key
 * and value), and refuses non-finite weights or moments (MAMA_ERR_NUMERIC). */
MAMA_API mama_status mama_checkpoint_save(const char *path, const mama_model *m, const mama_adamw *opt, long step,
                                          uint64_t seed);
MAMA_API mama_status mama_checkpoint_load(const char *path, mama_model *m, mama_adamw *opt, long *step,
                                          uint64_t *seed);

/* ---- 1.17 Evaluation: metrics, zeroshot, linear probe (SPEC A.7) ------- */
#define MAMA_MAX_CLASSES 8
typedef struct mama_metrics {
    int n, K;
    double accuracy, balanced_accuracy, auc;   /* auc: macro one-vs-rest over classes with both outcomes */
    double class_auc[MAMA_MAX_CLASSES];        /* NaN where undefined */
    int confusion[MAMA_MAX_CLASSES][MAMA_MAX_CLASSES]; /* [true][predicted] */
    /* binary tasks (K == 2, class 1 positive) */
    double sensitivity, specificity, ppv, npv, f1, spec_at_80_sens, pf1;
} mama_metrics;
/* probs [n, K] (rows need not be normalised for AUC; argmax predicts). */
MAMA_API mama_status mama_metrics_compute(const float *probs, const int *labels, int n, int K, mama_metrics *out);
MAMA_API const char *mama_task_name(mama_zeroshot_task t);
/* The class of a record for a task (-1 when it has none: unknown BI-RADS,
 * density 5 or unknown, unknown cancer). */
MAMA_API int mama_task_label(mama_zeroshot_task t, const mama_record *r);

/* The class names of a task, as the prediction columns use them: density
 * "1".."4", BI-RADS "A" "N" "B" "P" "S" "M" "K" (categories 0..6), cancer
 * "0" "1"; NULL for a bad task or class. */
MAMA_API const char *mama_task_class_name(mama_zeroshot_task t, int cls);
/* A comma-separated class list ("2,3,4" for density, "N,B,P,S,M" or
 * "1,2,3,4,5" for BI-RADS: letters or category numbers) as the bit mask of
 * mama_eval_opts.classes; at least two classes.  `what` names the source
 * (e.g. "--classes") in the message of a bad list. */
MAMA_API mama_status mama_task_parse_classes(mama_zeroshot_task t, const char *list, const char *what, unsigned *mask);

/* Evaluation options (SPEC A.7, A.7b), for mama_zeroshot_ex and inside
 * mama_probe_opts.  The options rule: zero = the default. */
#define MAMA_EVAL_DEFAULT_SUBSET_SEED 1
typedef struct mama_eval_opts {
    float balanced_test;         /* evaluate on a class-balanced subset of the evaluated split, as the
                                    paper's EMBED test sets (0.1): of its n labelled images (of the chosen
                                    classes), each of the Kp classes present gives its
                                    max(1, round(balanced_test * n / Kp)) images with the smallest
                                    hash(subset_seed, image path), or all it has when fewer; kept in split
                                    order.  In (0, 1]; default off: every labelled image */
    uint64_t subset_seed;        /* the subset's hash seed (_SUBSET_SEED; 0: the default) */
    unsigned classes;            /* bit k: the task's class k takes part, the others' images are left
                                    out (training too) and the K columns are the chosen classes in
                                    order (mama_eval_result.classes); at least two; default 0: all */
    int double_softmax;          /* zeroshot: the reference's scores, the softmax applied twice (A.7b;
                                    argmax, binary AUC and spec@80 unchanged, pF1 and multi-class AUC
                                    change; default off) */
    int ref_text_feature;        /* zeroshot: the reference's text feature (A.7b; default off) */
} mama_eval_opts;

/* A linear classifier on the pooled image feature (the probe's and the
 * fine-tuning's): probs = softmax(W x + b) over K outputs, output k being
 * the task's class classes[k].  finetuned: trained with the image encoder
 * unfrozen, so it belongs with the weights fine-tuning left. */
typedef struct mama_head {
    int task, K, D, finetuned;
    int classes[MAMA_MAX_CLASSES];
    float *W, *b;                /* [K, D], [K] (mama_alloc'ed) */
} mama_head;
/* Safetensors with tensors "head.weight" [K, D], "head.bias" [K] and
 * metadata task, classes, finetuned, format "mama-head-1"; written atomically. */
MAMA_API mama_status mama_head_save(const mama_head *h, const char *path);
MAMA_API mama_status mama_head_load(mama_head *h, const char *path);
MAMA_API void mama_head_free(mama_head *h);
/* probs [n, K] of the head on pooled features x [n, D]. */
MAMA_API mama_status mama_head_apply(const mama_head *h, const float *x, int n, float *probs);

typedef struct mama_eval_result {
    int n, K;
    float *probs;                /* [n, K] (mama_alloc'ed) */
    int *labels;                 /* [n], 0..K-1 (column indices) */
    int *records;                /* [n] record indices */
    int classes[MAMA_MAX_CLASSES]; /* the task's class of each column (all: 0..K-1) */
    mama_head head;              /* probe and fine-tuning: the trained classifier (else empty) */
    mama_metrics metrics;
    /* fine-tuning's validation (val_every): the step whose weights made
     * these results (0: the last weights, no validation) and their mean
     * cross-entropy on the val split (set only when best_step > 0) */
    long best_step;
    double best_val_loss;
} mama_eval_result;
MAMA_API void mama_eval_result_free(mama_eval_result *r);

/* Zeroshot classification of every image of `split` that has a label for
 * `task`: per-image captions (the image's own metadata + each class's
 * text), scores exp(logit_scale) I.T, softmax.  ref_text_feature selects
 * the reference code's text feature (A.7b) instead of the training one. */
MAMA_API mama_status mama_zeroshot(mama_model *m, mama_dataset *d, mama_split split, mama_zeroshot_task task,
                                    int ref_text_feature, mama_eval_result *out);
/* The same with evaluation options (NULL: the defaults). */
MAMA_API mama_status mama_zeroshot_ex(mama_model *m, mama_dataset *d, mama_split split, mama_zeroshot_task task,
                                      const mama_eval_opts *o, mama_eval_result *out);

/* Linear probe and fine-tuning options (SPEC A.7).  The options rule of
 * section 1: a zero field takes its default (MAMA_PROBE_DEFAULT_*; the
 * comment names it), MAMA_OFF makes a number zero or turns a switch off. */
#define MAMA_PROBE_DEFAULT_STEPS 8000L
#define MAMA_PROBE_DEFAULT_BATCH 72 /* the paper's 36 per GPU x 2 GPUs */
#define MAMA_PROBE_DEFAULT_LR 5e-4f
#define MAMA_PROBE_DEFAULT_LR_FLOOR 1e-5f
#define MAMA_PROBE_DEFAULT_WARMUP 100L
#define MAMA_PROBE_DEFAULT_MOMENTUM 0.9f
#define MAMA_PROBE_DEFAULT_WEIGHT_DECAY 1e-3f
#define MAMA_PROBE_DEFAULT_SEED 1
typedef struct mama_probe_opts {
    long steps;                  /* SGD steps, >= 1 (_STEPS) */
    int batch;                   /* per step and rank (_BATCH) */
    float lr, lr_floor;          /* peak and floor of the cosine schedule (_LR, _LR_FLOOR) */
    long warmup;                 /* linear warm-up steps (_WARMUP) */
    float momentum, weight_decay;/* SGD's (_MOMENTUM, _WEIGHT_DECAY) */
    int augment;                 /* augmented training images each step, A.7 (default on);
                                    MAMA_OFF: features computed once (linear probe only) */
    uint64_t seed;               /* sampling and augmentation (_SEED; 0: the default) */
    int quiet;                   /* no progress output (default off) */
    long val_every;              /* fine-tuning only: the val split's cross-entropy after every val_every
                                    steps and after the last; the weights of the lowest are kept and
                                    evaluated (default: steps / 10, at least 1; MAMA_OFF, kept negative
                                    when resolved: never, the last weights) */
    mama_eval_opts eval;         /* the balanced test subset and the class subset (double_softmax and
                                    ref_text_feature do not apply) */
} mama_probe_opts;
/* Every field at its default (the resolved zero struct). */
MAMA_API void mama_probe_opts_default(mama_probe_opts *o);
/* Linear probe on the frozen image encoder's pooled feature: train on the
 * train split with class-balanced sampling, evaluate on `eval_split` (the
 * balanced subset and the classes of o->eval; the classes apply to
 * training too).  out->head is the trained classifier (mama_head_save). */
MAMA_API mama_status mama_linear_probe(mama_model *m, mama_dataset *d, mama_zeroshot_task task,
                                       const mama_probe_opts *o, mama_split eval_split, mama_eval_result *out);

/* Full fine-tuning (SPEC A.7): the same as the linear probe, but the image
 * encoder trains too (SGD with the probe's settings on the vision tower's
 * parameters; training images augmented).  The model's vision weights are
 * changed in place.  Model selection (val_every): every val_every steps and
 * after the last, the mean cross-entropy of the classifier on the val
 * split's labelled images (evaluation pipeline, eval mode); the vision
 * weights and classifier with the lowest (the earliest on ties) are kept in
 * memory, restored at the end (so the model holds them on return) and
 * evaluated on `eval_split` (out->best_step says which step).  Without
 * labelled val images there is no selection (the last weights).  A batch
 * larger than the model takes at once (2 max_batch images) goes through
 * the tower in chunks (gradients summed: the same step, up to rounding), so
 * batch 72 fits any max_batch.  out->head as for the probe (finetuned = 1;
 * it belongs with the weights the model now holds). */
MAMA_API mama_status mama_finetune(mama_model *m, mama_dataset *d, mama_zeroshot_task task, const mama_probe_opts *o,
                                   mama_split eval_split, mama_eval_result *out);

/* Prediction for users with a model and images (`mama predict`): the
 * zero-shot probabilities of the three tasks with the paper's prompts
 * (SPEC A.7; the image's metadata in the captions), one row of
 * MAMA_PREDICT_COLUMNS per image in column order density_1..density_4,
 * birads_A..birads_K, cancer_0, cancer_1 (each task's columns sum to 1).
 * head (NULL: none) replaces its task's columns by the classifier's
 * probabilities (columns of classes outside the head's are 0).  images
 * [n, in_chans, S, S] prepared as mama_model_prepare_image; meta [n] (NULL:
 * every field unknown).  The tokenizer is checked against the model
 * (mama_model_check_tokenizer). */
#define MAMA_PREDICT_COLUMNS 13
MAMA_API const char *mama_predict_column_name(int col);   /* "density_1" ...; NULL out of range */
MAMA_API mama_status mama_predict(mama_model *m, const mama_tokenizer *tok, const float *images, int n,
                                  const mama_caption_fields *meta, const mama_head *head, float *probs);
/* One image file (decoded with dec, NULL: the default) into probs [13]. */
MAMA_API mama_status mama_predict_file(mama_model *m, const mama_tokenizer *tok, const char *path,
                                       const mama_decode_opts *dec, const mama_caption_fields *meta,
                                       const mama_head *head, float *probs);

/* Retrieval over a split: image->text and text->image recall@1/5/10 with
 * each image's own (unmasked) caption as its match. */
typedef struct mama_retrieval { int n; double i2t[3], t2i[3]; } mama_retrieval;
MAMA_API mama_status mama_retrieval_eval(mama_model *m, mama_dataset *d, mama_split split, int max_items,
                                         mama_retrieval *out);
/* Metrics as a JSON object appended to `out`, and as a text table on `f`. */
MAMA_API mama_status mama_metrics_json(const mama_metrics *m, mama_buf *out);
MAMA_API void mama_metrics_print(const mama_metrics *m, const char *title, FILE *f);

/* ---- 1.18 Explaining a prediction: SLA similarity maps ------------------
 * For one image [in_chans, S, S] and its caption (ids, mask [context]),
 * maps[s * N + k] = similarity (local embeddings, eval mode) between
 * sentence s and patch k (N = (S/P)^2, row-major grid).  *nsent receives
 * the number of sentences (at most max_sent are written). */
MAMA_API mama_status mama_sla_maps(mama_model *m, const float *image, const int *ids, const int *mask, float *maps,
                                   int max_sent, int *nsent);

/* ---- 1.19 Data-parallel training across processes and GPUs (section 12) --
 * Each rank (process) holds a full replica of the model and trains on its
 * own slice of every global batch; a communicator moves the few tensors
 * that must cross ranks.  The library talks to the engines HPC clusters
 * already have through one small table of collectives (like the backend
 * table): a single-process one (always built), MPI (the companion
 * mama_mpi.h, `make MPI=1`) and NCCL for GPU memory (mama_nccl.c, built by
 * `make cuda MPI=1`, bootstrapped through MPI).
 *
 * The collectives are blocking, except the optional non-blocking all-reduce
 * at the end of the table, and all ranks call them in the same order.  The
 * host-memory ops are required; the dev_* ops act on device
 * memory of the model's backend and may be NULL (then the library stages
 * through host memory, or uses the host ops directly on the CPU backend). */
typedef struct mama_comm mama_comm;
struct mama_comm {
    const char *name;           /* "single", "mpi", "nccl" */
    int rank, size;             /* this process, number of processes */
    void *impl;
    /* buf[i] = sum over ranks of buf[i] (in place) */
    mama_status (*allreduce_sum_f32)(mama_comm *c, float *buf, size_t n);
    /* recv [size * n] = every rank's send [n], in rank order */
    mama_status (*allgather_f32)(mama_comm *c, const float *send, size_t n, float *recv);
    /* the same with counts[r] floats from rank r (n == counts[rank]),
     * packed in rank order */
    mama_status (*allgatherv_f32)(mama_comm *c, const float *send, size_t n, float *recv, const size_t *counts);
    mama_status (*broadcast_f32)(mama_comm *c, float *buf, size_t n, int root);
    mama_status (*barrier)(mama_comm *c);
    /* the same on device memory (NULL: staged through the host ops) */
    mama_status (*dev_allreduce_sum_f32)(mama_comm *c, float *buf, size_t n);
    mama_status (*dev_allgather_f32)(mama_comm *c, const float *send, size_t n, float *recv);
    mama_status (*dev_allgatherv_f32)(mama_comm *c, const float *send, size_t n, float *recv, const size_t *counts);
    mama_status (*dev_broadcast_f32)(mama_comm *c, float *buf, size_t n, int root);
    void (*destroy)(mama_comm *c); /* NULL for the static single-process comm */
    /* Optional, non-blocking (NULL: not offered, e.g. single and NCCL; the
     * gradient sum then takes one blocking all-reduce).  Host memory.
     * iallreduce_sum_f32 starts buf[i] = sum over ranks of buf[i] (in
     * place) and returns a request in *req; buf must not be read or written
     * until the request completes.  test lets the engine progress and sets
     * *done = 1 once the request completed (it is then released and must not
     * be used again); wait blocks until it completes and releases it.  As
     * for every collective, all ranks start them in the same order (they
     * may interleave with the blocking collectives, also in the same order). */
    mama_status (*iallreduce_sum_f32)(mama_comm *c, float *buf, size_t n, void **req);
    mama_status (*test)(mama_comm *c, void *req, int *done);
    mama_status (*wait)(mama_comm *c, void *req);
};
/* The trivial communicator: rank 0 of 1 (collectives are copies). */
MAMA_API mama_comm *mama_comm_single(void);
/* Free a communicator from one of the create functions (NULL and the
 * single comm are ignored). */
MAMA_API void mama_comm_free(mama_comm *c);
/* MPI over MPI_COMM_WORLD: mama_comm_mpi_create in mama_mpi.h. */
#ifdef MAMA_NCCL
/* NCCL on the current CUDA device for device memory (dev_* ops), with the
 * host ops of `mpi` (an MPI comm, which also carries the NCCL unique id
 * from rank 0).  `stream`: the CUDA backend's, be->stream(be); the dev_*
 * ops are then queued on it in order with the backend's ops and return
 * without waiting.  NULL: the legacy default stream, with a device-wide
 * wait before and after each op.  In mama_nccl.c. */
MAMA_API mama_status mama_comm_nccl_create(mama_comm **out, mama_comm *mpi, void *stream);
#endif

/* How the losses are spread over ranks. */
typedef enum mama_dp_mode {
    /* Every loss over the global batch: image and text embeddings, SimCLR
     * projections and the local (patch, sentence) embeddings are gathered,
     * each rank computes the same global loss and back-propagates the rows
     * of its own samples; batch-wide BatchNorms (image local head, SimCLR
     * head) use statistics over all ranks.  W ranks of batch B train
     * exactly as one process of batch W*B (up to fp32 rounding). */
    MAMA_DP_GLOBAL = 0,
    /* The reference code's behaviour (SPEC A.5): CLIP, symmetric CLIP and
     * SLA over each rank's local batch (the objective is their mean over
     * ranks), NT-Xent over the gathered projections, BatchNorm per rank. */
    MAMA_DP_REFERENCE = 1
} mama_dp_mode;

/* Make `m` a data-parallel replica: every rank calls this with its comm
 * (NULL or a comm of size 1 switches data parallelism off).  The weights
 * and buffers of rank 0 are broadcast to all ranks, the configs must
 * agree.  The comm is borrowed (it must outlive the model's use of it).
 * Afterwards mama_model_step computes the distributed losses, and
 * mama_pretrain / mama_finetune / mama_linear_probe / mama_zeroshot shard
 * their data over the ranks (only rank 0 writes checkpoints, logs and
 * progress). */
MAMA_API mama_status mama_model_set_comm(mama_model *m, mama_comm *comm, mama_dp_mode mode);
MAMA_API mama_comm *mama_model_comm(const mama_model *m);   /* NULL when not data parallel */
/* Sum the gradient buffer ([train | late] groups) over ranks.  After
 * mama_model_step on every rank the sum is the gradient of the (global)
 * objective.  No-op without a comm.  Without mama_model_overlap_grads: one
 * blocking all-reduce of the whole contiguous buffer; after it: waits for
 * the bucket all-reduces that the backward started (and sums any part no
 * bucket covered).  Either way every value is summed exactly once. */
MAMA_API mama_status mama_model_allreduce_grads(mama_model *m);
/* Overlap the gradient sum with the backward (section 12.7): call it on
 * every rank right before the LAST mama_model_step (micro-batch) of an
 * optimiser step, then mama_model_allreduce_grads after that step.  As the
 * backward finishes a contiguous range of the gradient buffer (the heads,
 * each transformer block, the embeddings) it starts a non-blocking sum
 * all-reduce of that bucket, and lets the communicator progress between
 * layers.  Returns 1 when armed; 0 when the next sum is the blocking one
 * (no comm, a device backend, a communicator without the non-blocking ops,
 * or mama_model_set_grad_overlap(m, 0)).  With 2 ranks the result is
 * bitwise that of the blocking sum (a sum of two floats does not depend on
 * the order); with more, up to the engine's summation order. */
MAMA_API int mama_model_overlap_grads(mama_model *m);
/* on = 0: mama_model_overlap_grads never arms (the blocking path; the
 * default is on).  No-op without a comm. */
MAMA_API void mama_model_set_grad_overlap(mama_model *m, int on);
/* MAMA_DP_REFERENCE keeps a BatchNorm per rank, so the running statistics
 * of the ranks drift apart.  This replaces every rank's running means and
 * variances by their average over the ranks (summed in double, in rank
 * order, so all ranks hold the same bits).  mama_pretrain calls it before
 * every checkpoint and at the end of training.  No-op without a comm and in
 * MAMA_DP_GLOBAL (the statistics are synchronised there already). */
MAMA_API mama_status mama_model_average_bn_stats(mama_model *m);


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
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h> /* sched_yield: a thread waiting for a shared CPU backend's slots */
#define MAMA__YIELD() sched_yield()
#else
#define MAMA__YIELD() ((void)0)
#endif

/* The three allocation hooks come as a set: replacing only some of them
 * would hand memory from one allocator to another's free. */
#if defined(MAMA_MALLOC) || defined(MAMA_REALLOC) || defined(MAMA_FREE)
#if !defined(MAMA_MALLOC) || !defined(MAMA_REALLOC) || !defined(MAMA_FREE)
#error "mama.h: define all of MAMA_MALLOC, MAMA_REALLOC and MAMA_FREE, or none of them"
#endif
#else
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
 * do not overwrite each other's reasons.
 *
 * Static state: scratch and settings belong to the backend instance
 * (section 3.5), not to static variables.  The mutable statics left are
 * thread-local, one copy per thread: this message, and the context
 * pointers qsort has no argument for (mama__st_sort_ctx, mama__st_wctx,
 * mama__mf_ctx, mama__mf_first in section 7).  tests/check_bss.sh keeps
 * the .bss of an implementation object small. */
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

/* ---------------------------------------------------------------------------
 * 3.1 GEMM: C = alpha * op(A) op(B) + beta * C, row-major float32.
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
 * No allocation per call: the packing buffers belong to the backend
 * instance (struct mama__cpu_impl, section 3.5), one A and one B buffer per
 * thread slot, allocated once by mama_cpu_backend_create for the OpenMP
 * thread count of that moment (omp_get_max_threads(), capped at
 * MAMA_GEMM_MAX_THREADS, default 32; a later larger thread count is capped
 * at the instance's slots).  That is 1.2 MB per slot (plus 1 MB of
 * attention scores, 3.3), of which only the slots that run ever get
 * touched, i.e. backed by memory.  The library has no static mutable state:
 * two backends in two threads share nothing.  A per-instance try-lock
 * protects the slots; a GEMM that finds them busy (two threads sharing one
 * backend, or a call from inside a parallel region of the caller) runs on
 * one thread with small buffers on its own stack instead (~78 KB), with the
 * same K blocking as the slots, so both paths give the same bits.  So the
 * GEMM never fails and is safe to call concurrently.
 * ------------------------------------------------------------------------- */

#ifdef MAMA_USE_CBLAS
#include <cblas.h>
#endif

#ifndef MAMA_GEMM_MAX_THREADS
#define MAMA_GEMM_MAX_THREADS 32
#endif

/* Largest block sizes of any kernel, in floats (see mama__gemm_kernels). */
#define MAMA__GEMM_ABUF (144 * 256)      /* MC x KC               */
#define MAMA__GEMM_BBUF (256 * 1024)     /* KC x NC               */
#define MAMA__GEMM_PAD 32                /* align to 64 B + spill */
/* Stack fallback blocks: KC_S x NC_S of B, one MR x KC_S sliver of A.
 * KC_S is every kernel's KC, so the fallback splits K exactly as the slots
 * do and gives the same bits (M and N blocks never change the result). */
#define MAMA__GEMM_KC_S 256
#define MAMA__GEMM_NC_S 64
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
    int pairs;      /* 1: A and B packed as bf16 k-pairs (the AVX512-BF16 kernel; B is then always bf16) */
} mama__gemm_kinfo;

/* The CPU backend instance's private state (be->impl): the kernel in use,
 * the per-slot scratch and its lock (defined after the kernel table). */
struct mama__cpu_impl;

/* The arguments of one GEMM, so helpers take one pointer. */
typedef struct mama__gemm_args {
    int ta, tb, M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    ptrdiff_t lda, ldb, ldc;
    /* half-precision B (be->gemm_half): Bh replaces B, bdt is MAMA_BF16
     * or MAMA_F16; Bh == NULL for the float GEMM */
    const uint16_t *Bh;
    int bdt;
    /* the backend instance whose slots (and CPU flags) the product uses */
    const struct mama__cpu_impl *cx;
    /* the kernel when not the instance's (the AVX512-BF16 one), else NULL */
    const mama__gemm_kinfo *ki;
    /* be->linear_fused's epilogue (C = res + gamma * act(C + bias)) on each
     * finished block of C; all NULL / 0 for a plain GEMM */
    const float *e_bias, *e_gamma, *e_res;
    int e_gelu;
} mama__gemm_args;
static void mama__gemm_epilogue(const mama__gemm_args *g, int i0, int i1, int j0, int j1);

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

/* One element of a half-precision B as float (bf16: the top 16 bits of a
 * float32, so a shift; f16: IEEE binary16).  Both conversions are exact. */
static float mama__gemm_half_get(const mama__gemm_args *g, ptrdiff_t i) {
    if (g->bdt == MAMA_BF16) {
        uint32_t u = (uint32_t)g->Bh[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    return mama_f16_to_f32(g->Bh[i]);
}

/* n half-precision values (dtype MAMA_BF16 or MAMA_F16) to float32, and
 * back (round to nearest even); used by the embedding lookup, loading,
 * saving and initialisation of weights kept in half precision. */
static void mama__half_to_f32_n(float *dst, const uint16_t *src, int dtype, size_t n) {
    size_t i;
    if (dtype == MAMA_BF16)
        for (i = 0; i < n; i++) {
            uint32_t u = (uint32_t)src[i] << 16;
            memcpy(dst + i, &u, sizeof u);
        }
    else
        for (i = 0; i < n; i++) dst[i] = mama_f16_to_f32(src[i]);
}
static void mama__f32_to_half_n(uint16_t *dst, const float *src, int dtype, size_t n) {
    size_t i;
    if (dtype == MAMA_BF16)
        for (i = 0; i < n; i++) dst[i] = mama_f32_to_bf16(src[i]);
    else
        for (i = 0; i < n; i++) dst[i] = mama_f32_to_f16(src[i]);
}

/* mama__gemm_pack_b for a half-precision B: the same panel layout, each
 * element converted to float while it is copied (packing copies anyway,
 * so the conversion costs next to nothing and the kernels are unchanged). */
static void mama__gemm_pack_b_half_scalar(const mama__gemm_args *g, int k0, int kc, int j0, int nc,
                                          int nr, float *dst) {
    int jr, j, k;
    for (jr = 0; jr < nc; jr += nr) {
        int n = nc - jr < nr ? nc - jr : nr;
        for (k = 0; k < kc; k++) {
            float *d = dst + (ptrdiff_t)k * nr;
            for (j = 0; j < n; j++)
                d[j] = mama__gemm_half_get(g, g->tb ? (ptrdiff_t)(j0 + jr + j) * g->ldb + k0 + k
                                                    : (ptrdiff_t)(k0 + k) * g->ldb + j0 + jr + j);
            for (; j < nr; j++) d[j] = 0.0f;
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

/* alpha * op(A) packing for the 12-row (AVX-512) kernel, full micro-panels
 * by vectors (the same products alpha * a, so the same bits as the
 * portable loop).  A not transposed: rows 0-7 and 8-11 (+4 zero rows) of
 * 8 k are transposed as two 8 x 8 blocks; column c goes to dst + (k+c)*12
 * as 8 + 4 floats; a last partial panel reads only its rows (the others
 * are zeros).  A transposed (K x M): each k of a panel is 12 contiguous
 * floats, copied as 8 + 4; a partial panel by the portable loop. */
__attribute__((target("avx2,fma"))) static void
mama__gemm_pack_a12_avx2(const mama__gemm_args *g, int i0, int mc, int k0, int kc, float *dst) {
    const __m256 al = _mm256_set1_ps(g->alpha), z = _mm256_setzero_ps();
    const ptrdiff_t ld = g->lda;
    int ir, k, i;
    for (ir = 0; ir < mc; ir += 12, dst += (ptrdiff_t)12 * kc) {
        const int m = mc - ir < 12 ? mc - ir : 12;
        if (g->ta && m < 12) break;
        if (g->ta) {
            for (k = 0; k < kc; k++) {
                const float *s = g->A + (ptrdiff_t)(k0 + k) * ld + i0 + ir;
                _mm256_storeu_ps(dst + (ptrdiff_t)k * 12, _mm256_mul_ps(al, _mm256_loadu_ps(s)));
                _mm_storeu_ps(dst + (ptrdiff_t)k * 12 + 8, _mm_mul_ps(_mm256_castps256_ps128(al), _mm_loadu_ps(s + 8)));
            }
            continue;
        }
        {
            /* rows past m (a last partial panel) are zeros, never read */
            const float *s = g->A + (ptrdiff_t)(i0 + ir) * ld + k0;
#define MAMA__PA_ROW(i) ((i) < m ? _mm256_mul_ps(al, _mm256_loadu_ps(s + (i) * ld + k)) : z)
            for (k = 0; k + 8 <= kc; k += 8) {
                __m256 r0 = MAMA__PA_ROW(0), r1 = MAMA__PA_ROW(1), r2 = MAMA__PA_ROW(2), r3 = MAMA__PA_ROW(3);
                __m256 r4 = MAMA__PA_ROW(4), r5 = MAMA__PA_ROW(5), r6 = MAMA__PA_ROW(6), r7 = MAMA__PA_ROW(7);
                __m256 q0 = MAMA__PA_ROW(8), q1 = MAMA__PA_ROW(9), q2 = MAMA__PA_ROW(10), q3 = MAMA__PA_ROW(11);
                __m256 q4 = z, q5 = z, q6 = z, q7 = z;
                float *d = dst + (ptrdiff_t)k * 12;
                MAMA__TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)
                MAMA__TRANSPOSE8(q0, q1, q2, q3, q4, q5, q6, q7)
                _mm256_storeu_ps(d + 0, r0); _mm_storeu_ps(d + 8, _mm256_castps256_ps128(q0));
                _mm256_storeu_ps(d + 12, r1); _mm_storeu_ps(d + 20, _mm256_castps256_ps128(q1));
                _mm256_storeu_ps(d + 24, r2); _mm_storeu_ps(d + 32, _mm256_castps256_ps128(q2));
                _mm256_storeu_ps(d + 36, r3); _mm_storeu_ps(d + 44, _mm256_castps256_ps128(q3));
                _mm256_storeu_ps(d + 48, r4); _mm_storeu_ps(d + 56, _mm256_castps256_ps128(q4));
                _mm256_storeu_ps(d + 60, r5); _mm_storeu_ps(d + 68, _mm256_castps256_ps128(q5));
                _mm256_storeu_ps(d + 72, r6); _mm_storeu_ps(d + 80, _mm256_castps256_ps128(q6));
                _mm256_storeu_ps(d + 84, r7); _mm_storeu_ps(d + 92, _mm256_castps256_ps128(q7));
            }
#undef MAMA__PA_ROW
            for (; k < kc; k++)
                for (i = 0; i < 12; i++) dst[(ptrdiff_t)k * 12 + i] = i < m ? g->alpha * s[i * ld + k] : 0.0f;
        }
    }
    if (ir < mc) mama__gemm_pack_a(g, i0 + ir, mc - ir, k0, kc, 12, dst);
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
    if (mr == 12) {
        mama__gemm_pack_a12_avx2(g, i0, mc, k0, kc, dst);
        return;
    }
    if (mr != 6) {
        mama__gemm_pack_a(g, i0, mc, k0, kc, mr, dst);
        return;
    }
    if (g->ta) {
        /* A stored K x M (the weight gradients dW = dY^T X): each k of a
         * micro-panel is 6 contiguous floats of row k0+k.  The loop runs
         * over rows: each row's mc floats are read once, left to right, and
         * dealt out to the micro-panels (walking one micro-panel down all
         * kc rows instead touches a new line, often a new page, per k).  A
         * masked load keeps every read inside the matrix; the store is a
         * full 8-float one whose 2 junk floats row k+1 overwrites, except
         * on the last row, where they would land on the next micro-panel's
         * first row: that row is stored as 4 + 2 floats (masked stores are
         * microcoded and slow on AMD cores).  Row k+2 is prefetched. */
        __m256i m6 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        __m256 al = _mm256_set1_ps(g->alpha);
        int full = mc / 6 * 6;
        for (k = 0; k < kc; k++) {
            const float *s = g->A + (ptrdiff_t)(k0 + k) * g->lda + i0;
            float *d = dst + (ptrdiff_t)k * 6;
            if (k + 2 < kc)
                for (i = 0; i < full; i += 16) _mm_prefetch((const char *)(s + 2 * g->lda + i), _MM_HINT_T0);
            if (k + 1 < kc) {
                for (ir = 0; ir < full; ir += 6)
                    _mm256_storeu_ps(d + (ptrdiff_t)ir * kc, _mm256_mul_ps(al, _mm256_maskload_ps(s + ir, m6)));
            } else {
                for (ir = 0; ir < full; ir += 6) {
                    __m256 v = _mm256_mul_ps(al, _mm256_maskload_ps(s + ir, m6));
                    _mm_storeu_ps(d + (ptrdiff_t)ir * kc, _mm256_castps256_ps128(v));
                    _mm_storel_pi((__m64 *)(d + (ptrdiff_t)ir * kc + 4), _mm256_extractf128_ps(v, 1));
                }
            }
        }
        if (full < mc) mama__gemm_pack_a(g, i0 + full, mc - full, k0, kc, mr, dst + (ptrdiff_t)full * kc);
        return;
    }
    for (ir = 0; ir + 6 <= mc; ir += 6) {
        const float *s = g->A + (ptrdiff_t)(i0 + ir) * g->lda + k0;
        ptrdiff_t ld = g->lda;
        /* the next micro-panel's rows, one line per row every 16 k: six
         * short row segments are too brief for the hardware prefetcher to
         * lock on before they end */
        int pre = ir + 12 <= mc;
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
            if (pre && k % 16 == 0)
                for (i = 6; i < 12; i++) _mm_prefetch((const char *)(s + i * ld + k), _MM_HINT_T0);
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
                /* the next 8 rows, one line each every 16 k (see pack_a) */
                int pre = j0 + jr + j + 16 <= g->N;
                for (k = 0; k + 8 <= kc; k += 8) {
                    __m256 r0 = _mm256_loadu_ps(s + k), r1 = _mm256_loadu_ps(s + ld + k);
                    __m256 r2 = _mm256_loadu_ps(s + 2 * ld + k), r3 = _mm256_loadu_ps(s + 3 * ld + k);
                    __m256 r4 = _mm256_loadu_ps(s + 4 * ld + k), r5 = _mm256_loadu_ps(s + 5 * ld + k);
                    __m256 r6 = _mm256_loadu_ps(s + 6 * ld + k), r7 = _mm256_loadu_ps(s + 7 * ld + k);
                    float *d = dst + (ptrdiff_t)k * nr + j;
                    if (pre && k % 16 == 0)
                        for (v = 8; v < 16; v++) _mm_prefetch((const char *)(s + v * ld + k), _MM_HINT_T0);
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

/* Eight half-precision values (128 bits) -> eight floats.  bf16: widen
 * to 32 bits and shift left 16; f16: F16C's vcvtph2ps (the caller checks
 * the CPU has it). */
__attribute__((target("avx2,fma"))) static inline __m256
mama__gemm_bf16x8(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
__attribute__((target("avx2,fma,f16c"))) static inline __m256
mama__gemm_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* Half-precision op(B) packing with AVX2 (+F16C for f16): full panels
 * (nr a multiple of 8) by vectors, edges by the scalar loop.  NN: each k
 * row is nr contiguous halves; NT: 8 x 8 blocks loaded along k and
 * transposed in registers, as mama__gemm_pack_b_avx2 does. */
#define MAMA__GEMM_HALF_PACK_BODY(LOAD8)                                                          \
    for (jr = 0; jr + nr <= nc; jr += nr) {                                                       \
        if (!g->tb) {                                                                             \
            const uint16_t *src = g->Bh + (ptrdiff_t)k0 * g->ldb + j0 + jr;                       \
            for (k = 0; k < kc; k++) {                                                            \
                float *d = dst + (ptrdiff_t)k * nr;                                               \
                for (v = 0; v < nr; v += 8) _mm256_storeu_ps(d + v, LOAD8(src + v));              \
                src += g->ldb;                                                                    \
            }                                                                                     \
        } else {                                                                                  \
            for (j = 0; j < nr; j += 8) {                                                         \
                const uint16_t *s = g->Bh + (ptrdiff_t)(j0 + jr + j) * g->ldb + k0;               \
                ptrdiff_t ld = g->ldb;                                                            \
                for (k = 0; k + 8 <= kc; k += 8) {                                                \
                    __m256 r0 = LOAD8(s + k), r1 = LOAD8(s + ld + k);                             \
                    __m256 r2 = LOAD8(s + 2 * ld + k), r3 = LOAD8(s + 3 * ld + k);                \
                    __m256 r4 = LOAD8(s + 4 * ld + k), r5 = LOAD8(s + 5 * ld + k);                \
                    __m256 r6 = LOAD8(s + 6 * ld + k), r7 = LOAD8(s + 7 * ld + k);                \
                    float *d = dst + (ptrdiff_t)k * nr + j;                                       \
                    MAMA__TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)                              \
                    _mm256_storeu_ps(d + 0 * nr, r0);                                             \
                    _mm256_storeu_ps(d + 1 * nr, r1);                                             \
                    _mm256_storeu_ps(d + 2 * nr, r2);                                             \
                    _mm256_storeu_ps(d + 3 * nr, r3);                                             \
                    _mm256_storeu_ps(d + 4 * nr, r4);                                             \
                    _mm256_storeu_ps(d + 5 * nr, r5);                                             \
                    _mm256_storeu_ps(d + 6 * nr, r6);                                             \
                    _mm256_storeu_ps(d + 7 * nr, r7);                                             \
                }                                                                                 \
                for (; k < kc; k++)                                                               \
                    for (v = 0; v < 8; v++)                                                       \
                        dst[(ptrdiff_t)k * nr + j + v] = mama__gemm_half_get(g, v * ld + (s - g->Bh) + k); \
            }                                                                                     \
        }                                                                                         \
        dst += (ptrdiff_t)nr * kc;                                                                \
    }                                                                                             \
    if (jr < nc) mama__gemm_pack_b_half_scalar(g, k0, kc, j0 + jr, nc - jr, nr, dst);

__attribute__((target("avx2,fma"))) static void
mama__gemm_pack_b_bf16_avx2(const mama__gemm_args *g, int k0, int kc, int j0, int nc, int nr,
                            float *dst) {
    int jr, j, k, v;
    MAMA__GEMM_HALF_PACK_BODY(mama__gemm_bf16x8)
}
__attribute__((target("avx2,fma,f16c"))) static void
mama__gemm_pack_b_f16_avx2(const mama__gemm_args *g, int k0, int kc, int j0, int nc, int nr,
                           float *dst) {
    int jr, j, k, v;
    MAMA__GEMM_HALF_PACK_BODY(mama__gemm_f16x8)
}
#undef MAMA__GEMM_HALF_PACK_BODY

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

/* ---- AVX512-BF16 kernel, 12 x 32, for bf16 weights in inference ----
 * VDPBF16PS (_mm512_dpbf16_ps(c, a, b)) reads each 32-bit lane of a and b
 * as a PAIR of bf16 values and adds, in each of the 16 float lanes l,
 *     c[l] += a.bf16[2l] * b.bf16[2l] + a.bf16[2l+1] * b.bf16[2l+1]
 * (products exact in f32, sums in f32, round to nearest even; denormal
 * inputs and outputs are flushed to zero).  So k advances two at a time
 * and both operands are packed as k-pairs, one dword per (pair, row or
 * column), the even k in the low 16 bits (what a little-endian load of
 * two consecutive bf16 gives):
 *   B micro-panel (kc x 32): b[p*32 + j] = B(2p, j) | B(2p+1, j) << 16, so
 *     one pair of k for the 32 columns is two zmm loads (b0: columns 0-15,
 *     b1: 16-31), as in the float kernel;
 *   A micro-panel (12 x kc): a[p*12 + i] = A(i, 2p) | A(i, 2p+1) << 16,
 *     broadcast to all 16 lanes, so lane l pairs row i's two k with
 *     column l's two k.
 * An odd kc ends with a half pair whose other half is 0 in A and B.  The
 * panels start where the float kernels' do (offsets ir*kc, jr*kc floats)
 * and fill half of that space.  A is float32 (the activations): it is
 * ROUNDED TO BF16 while packed (round to nearest even, VCVTNE2PS2BF16),
 * the one place this path loses precision against the widening kernel
 * (each activation moves by up to 2^-8 of itself); the weights are bf16
 * already and every sum stays float32.  24 zmm accumulators, as in the
 * AVX-512F kernel; each pair step is 24 VDPBF16PS for 768 multiply-adds. */
#if defined(MAMA_X86_SIMD) && ((defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && __GNUC__ >= 10))
#define MAMA__GEMM_BF16DOT 1
#define MAMA__BF16_DOT(i, u)                                                             \
    {                                                                                    \
        __m512bh av = (__m512bh)_mm512_set1_epi32((int)ap[(u) * 12 + (i)]);              \
        c##i##a = _mm512_dpbf16_ps(c##i##a, av, b0);                                     \
        c##i##b = _mm512_dpbf16_ps(c##i##b, av, b1);                                     \
    }
#define MAMA__BF16_STEP(u)                                                               \
    {                                                                                    \
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(bp + (u) * 32));       \
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(bp + (u) * 32 + 16));  \
        MAMA__BF16_DOT(0, u) MAMA__BF16_DOT(1, u) MAMA__BF16_DOT(2, u) MAMA__BF16_DOT(3, u)  \
        MAMA__BF16_DOT(4, u) MAMA__BF16_DOT(5, u) MAMA__BF16_DOT(6, u) MAMA__BF16_DOT(7, u)  \
        MAMA__BF16_DOT(8, u) MAMA__BF16_DOT(9, u) MAMA__BF16_DOT(10, u) MAMA__BF16_DOT(11, u)\
    }

__attribute__((target("avx512f,avx512bf16"))) static void
mama__gemm_kernel_bf16(long kc, const float *a, const float *b, float *c, long ldc, float beta) {
    const uint32_t *ap = (const uint32_t *)(const void *)a, *bp = (const uint32_t *)(const void *)b;
    long p, np = (kc + 1) / 2;
    MAMA__AVX512_DECL(0) MAMA__AVX512_DECL(1) MAMA__AVX512_DECL(2)
    MAMA__AVX512_DECL(3) MAMA__AVX512_DECL(4) MAMA__AVX512_DECL(5)
    MAMA__AVX512_DECL(6) MAMA__AVX512_DECL(7) MAMA__AVX512_DECL(8)
    MAMA__AVX512_DECL(9) MAMA__AVX512_DECL(10) MAMA__AVX512_DECL(11)
    for (p = 0; p + 2 <= np; p += 2) {
        MAMA__BF16_STEP(0) MAMA__BF16_STEP(1)
        ap += 2 * 12;
        bp += 2 * 32;
    }
    for (; p < np; p++) {
        MAMA__BF16_STEP(0)
        ap += 12;
        bp += 32;
    }
    MAMA__AVX512_STORE(0) MAMA__AVX512_STORE(1) MAMA__AVX512_STORE(2)
    MAMA__AVX512_STORE(3) MAMA__AVX512_STORE(4) MAMA__AVX512_STORE(5)
    MAMA__AVX512_STORE(6) MAMA__AVX512_STORE(7) MAMA__AVX512_STORE(8)
    MAMA__AVX512_STORE(9) MAMA__AVX512_STORE(10) MAMA__AVX512_STORE(11)
}
#undef MAMA__BF16_DOT
#undef MAMA__BF16_STEP

/* Only be->linear_fused runs this kernel, so the packers take its layout:
 * A [M, K] not transposed, alpha 1, B = W [N, K] (row j of W is column j
 * of op(B), contiguous in k).
 * A as bf16 k-pairs in micro-panels of mr rows (rows past mc are zero):
 * 32 floats of a row at a time (masked loads at the end), rounded by
 * VCVTNE2PS2BF16 into 16 pairs, dealt out to the row's slots. */
__attribute__((target("avx512f,avx512bf16"))) static void
mama__gemm_pack_a_bf16pairs(const mama__gemm_args *g, int i0, int mc, int k0, int kc, int mr, float *dst) {
    const int np = (kc + 1) / 2;
    uint32_t row[16];
    int ir, i, k, p;
    for (ir = 0; ir < mc; ir += mr, dst += (ptrdiff_t)mr * kc) {
        uint32_t *d = (uint32_t *)(void *)dst;
        for (i = 0; i < mr; i++) {
            const float *s = g->A + (ptrdiff_t)(i0 + ir + (ir + i < mc ? i : 0)) * g->lda + k0;
            if (ir + i >= mc) {
                for (p = 0; p < np; p++) d[p * mr + i] = 0;
                continue;
            }
            for (k = 0; k < kc; k += 32) {
                const int n = kc - k < 32 ? kc - k : 32;
                const __mmask16 m0 = (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1u);
                const __mmask16 m1 = (__mmask16)(n >= 32 ? 0xffffu : n > 16 ? (1u << (n - 16)) - 1u : 0u);
                __m512 x0 = _mm512_maskz_loadu_ps(m0, s + k);
                __m512 x1 = _mm512_maskz_loadu_ps(m1, n > 16 ? s + k + 16 : s + k);
                _mm512_storeu_si512((void *)row, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
                for (p = 0; p < (n + 1) / 2; p++) d[(k / 2 + p) * mr + i] = row[p];
            }
        }
    }
}

/* W's bf16 values as k-pairs in micro-panels of nr columns: the dword of
 * pair p, column j is W[j, k0+2p .. k0+2p+1], two neighbours in memory.
 * Columns past nc and the half pair past an odd kc are zero. */
static void mama__gemm_pack_b_bf16pairs(const mama__gemm_args *g, int k0, int kc, int j0, int nc, int nr,
                                        float *dst) {
    const int np = (kc + 1) / 2;
    int jr, j, p;
    for (jr = 0; jr < nc; jr += nr, dst += (ptrdiff_t)nr * kc) {
        uint32_t *d = (uint32_t *)(void *)dst;
        for (j = 0; j < nr; j++) {
            const uint16_t *s = g->Bh + (ptrdiff_t)(j0 + jr + (jr + j < nc ? j : 0)) * g->ldb + k0;
            if (jr + j >= nc) {
                for (p = 0; p < np; p++) d[p * nr + j] = 0;
                continue;
            }
            for (p = 0; p < kc / 2; p++) d[p * nr + j] = (uint32_t)s[2 * p] | (uint32_t)s[2 * p + 1] << 16;
            if (kc % 2) d[p * nr + j] = s[2 * p]; /* odd kc: the last half pair */
        }
    }
}
#endif /* AVX512-BF16 */
#endif /* MAMA_X86_SIMD */

/* The kernels and their block sizes.  Cache blocks: the A block mc x kc
 * (x4 bytes) sits in L2, the B micro-panel kc x nr in L1, the B panel
 * kc x nc in L3.  Tuned on AMD Zen 3 (32 KB L1d, 512 KB L2 per core). */
enum { MAMA__GEMM_K_SCALAR = 0, MAMA__GEMM_K_AVX2 = 1, MAMA__GEMM_K_AVX512 = 2 };
static const mama__gemm_kinfo mama__gemm_kernels[3] = {
    {"scalar", mama__gemm_kernel_scalar, mama__gemm_pack_b, mama__gemm_pack_a, 4, 8, 128, 256, 1024, 0},
#ifdef MAMA_X86_SIMD
    {"avx2", mama__gemm_kernel_avx2, mama__gemm_pack_b_avx2, mama__gemm_pack_a_avx2, 6, 16, 144, 256, 1024, 0},
    {"avx512", mama__gemm_kernel_avx512, mama__gemm_pack_b_avx2, mama__gemm_pack_a_avx2, 12, 32, 144, 256, 1024, 0},
#else
    {"avx2", NULL, NULL, NULL, 0, 0, 0, 0, 0, 0},
    {"avx512", NULL, NULL, NULL, 0, 0, 0, 0, 0, 0},
#endif
};
#ifdef MAMA__GEMM_BF16DOT
static const mama__gemm_kinfo mama__gemm_kbf16 = {"avx512bf16", mama__gemm_kernel_bf16, mama__gemm_pack_b_bf16pairs,
                                                  mama__gemm_pack_a_bf16pairs, 12, 32, 144, 256, 1024, 1};
#endif

static int mama__gemm_cpu_runs(int k) {
    if (k == MAMA__GEMM_K_SCALAR) return 1;
#ifdef MAMA_X86_SIMD
    if (k == MAMA__GEMM_K_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (k == MAMA__GEMM_K_AVX512) return __builtin_cpu_supports("avx512f") ? 1 : 0;
#endif
    return 0;
}

/* The run-time dispatch: the widest kernel this CPU runs. */
static const mama__gemm_kinfo *mama__gemm_dispatch(void) {
    if (mama__gemm_cpu_runs(MAMA__GEMM_K_AVX512)) return &mama__gemm_kernels[MAMA__GEMM_K_AVX512];
    if (mama__gemm_cpu_runs(MAMA__GEMM_K_AVX2)) return &mama__gemm_kernels[MAMA__GEMM_K_AVX2];
    return &mama__gemm_kernels[MAMA__GEMM_K_SCALAR];
}

/* F16C (vcvtph2ps) is its own CPUID bit (leaf 1, ecx bit 29); the
 * compilers' __builtin_cpu_supports does not know it everywhere.  Read
 * once per backend instance (cpuid is slow under virtualisation). */
static int mama__gemm_cpu_has_f16c(void) {
#ifdef MAMA_X86_SIMD
    unsigned int a = 0, b = 0, c = 0, d = 0;
    __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    (void)a; (void)b; (void)d;
    return (int)((c >> 29) & 1u);
#else
    return 0;
#endif
}

/* The AVX512-BF16 kernel on this CPU: 0 no (no AVX512-BF16: CPUID leaf 7
 * sub-leaf 1, eax bit 5, read directly as older compilers'
 * __builtin_cpu_supports lack it; or no AVX-512F kernel, whose check
 * covers the OS saving zmm state), 1 it runs, 2 it runs and is the default
 * for bf16 weights.  Not the default on Intel cores (CPUID vendor
 * "GenuineIntel"): there VDPBF16PS issues at half the rate of a zmm FMA,
 * and on a Xeon family 6 model 207 the kernel ran at ~0.65x the widening
 * one and `bench encode --config small` at ~0.5x (issue 18). */
static int mama__gemm_cpu_bf16dot(void) {
#ifdef MAMA__GEMM_BF16DOT
    unsigned int a = 0, b = 0, c = 0, d = 0;
    if (!mama__gemm_cpu_runs(MAMA__GEMM_K_AVX512)) return 0;
    __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
    if (!((a >> 5) & 1u)) return 0;
    __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
    return b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu ? 1 : 2; /* "Genu" "ineI" "ntel" */
#else
    return 0;
#endif
}

/* The CPU backend instance's private state (be->impl).  Everything that
 * was once static lives here, so that two backends used by two threads
 * share nothing; a backend shared by two threads is safe too (the slots'
 * try-lock, with the stack fallback for GEMMs).  The scratch is sized at
 * creation and never reallocated: the hot path does not allocate. */
typedef struct mama__cpu_impl {
    const mama__gemm_kinfo *ki; /* the GEMM kernel: dispatch, or forced by a test */
    int att_gemm;               /* 1: attention's schedule (3.2); 0: the reference loops (forced, for tests) */
    int f16c;                   /* the CPU has F16C (half-precision B packing) */
    int bf16dot;                /* 1: linear_fused runs bf16 weights on the AVX512-BF16 kernel (by default where
                                 * mama__gemm_cpu_bf16dot says 2, or forced); 0: widening */
    int nslots;                 /* thread slots, 1..MAMA_GEMM_MAX_THREADS */
    int lock;                   /* the slots' try-lock word (GCC/clang atomics) */
    /* per slot s: abuf + s*MAMA__CPU_ASTRIDE, bbuf + s*MAMA__CPU_BSTRIDE,
     * sbuf + s*MAMA__CPU_SSTRIDE floats (64-byte aligned, mama_alloc) */
    float *abuf, *bbuf, *sbuf;
} mama__cpu_impl;
#define MAMA__CPU_ASTRIDE ((size_t)MAMA__GEMM_ABUF + MAMA__GEMM_PAD)
#define MAMA__CPU_BSTRIDE ((size_t)MAMA__GEMM_BBUF + MAMA__GEMM_PAD)
/* MAMA__CPU_SSTRIDE (attention scores) is defined with the attention, 3.2 */

/* Packs a half-precision op(B) panel: vectorised when the chosen kernel is
 * a SIMD one (so the CPU has AVX2) and, for f16, the CPU has F16C. */
static void mama__gemm_pack_b_half(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int k0, int kc, int j0,
                                   int nc, int nr, float *dst) {
#ifdef MAMA_X86_SIMD
    if (ki != &mama__gemm_kernels[MAMA__GEMM_K_SCALAR] && nr % 8 == 0) {
        if (g->bdt == MAMA_BF16) {
            mama__gemm_pack_b_bf16_avx2(g, k0, kc, j0, nc, nr, dst);
            return;
        }
        if (g->cx->f16c) {
            mama__gemm_pack_b_f16_avx2(g, k0, kc, j0, nc, nr, dst);
            return;
        }
    }
#else
    (void)ki;
#endif
    mama__gemm_pack_b_half_scalar(g, k0, kc, j0, nc, nr, dst);
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
        if (pack_b) {
            if (g->Bh && !ki->pairs) mama__gemm_pack_b_half(ki, g, pc, kc, jc + jr, n, nr, b);
            else ki->pack_b(g, pc, kc, jc + jr, n, nr, b);
        }
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
                if (pc + kc >= g->K) mama__gemm_epilogue(g, ic, ic + mc, jc, jc + nc);
            }
        }
    }
}

/* Align a stack buffer to 64 bytes (they are declared MAMA__GEMM_PAD
 * floats larger). */
static float *mama__gemm_align(float *p) {
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* One thread's part of a GEMM on slot `slot` of the instance g->cx (the
 * slot buffers are 64-byte aligned, MAMA__GEMM_PAD floats of spill). */
static void mama__gemm_slot(const mama__gemm_kinfo *ki, const mama__gemm_args *g, int slot,
                            int m0, int m1, int n0, int n1) {
    mama__gemm_blocked(ki, g, m0, m1, n0, n1, g->cx->abuf + (size_t)slot * MAMA__CPU_ASTRIDE,
                       g->cx->bbuf + (size_t)slot * MAMA__CPU_BSTRIDE, ki->mc, ki->kc, ki->nc);
}

/* The fallback when the slots are busy: one thread, buffers on the stack
 * (~36 KB), A packed one mr-row sliver at a time. */
static void mama__gemm_stack(const mama__gemm_kinfo *ki, const mama__gemm_args *g) {
    float abuf[12 * MAMA__GEMM_KC_S + MAMA__GEMM_PAD];
    float bbuf[MAMA__GEMM_KC_S * MAMA__GEMM_NC_S + MAMA__GEMM_PAD];
    mama__gemm_blocked(ki, g, 0, g->M, 0, g->N, mama__gemm_align(abuf), mama__gemm_align(bbuf),
                       ki->mr, MAMA__GEMM_KC_S, MAMA__GEMM_NC_S);
}

/* The instance's slot lock: a spin-free try-lock (GCC/clang atomics).
 * Other compilers always take the stack path.  (The lock word is the one
 * member of the instance that changes after creation; the cast drops the
 * const of the GEMM arguments' instance pointer.) */
#if defined(__GNUC__) || defined(__clang__)
#define MAMA__GEMM_HAVE_LOCK 1
#else
#define MAMA__GEMM_HAVE_LOCK 0
#endif
static int mama__gemm_trylock(const mama__cpu_impl *cx) {
#if MAMA__GEMM_HAVE_LOCK
    return __atomic_exchange_n((int *)&cx->lock, 1, __ATOMIC_ACQUIRE) == 0;
#else
    (void)cx;
    return 0;
#endif
}
static void mama__gemm_unlock(const mama__cpu_impl *cx) {
#if MAMA__GEMM_HAVE_LOCK
    __atomic_store_n((int *)&cx->lock, 0, __ATOMIC_RELEASE);
#else
    (void)cx;
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
            if (g->Bh && !g->tb) {
                /* half-precision B, converted element by element, in the
                 * same order of operations as the float branches below */
                for (k = 0; k < g->K; k++) {
                    float a = g->ta ? g->A[(ptrdiff_t)k * g->lda + i] : g->A[(ptrdiff_t)i * g->lda + k];
                    ptrdiff_t b = (ptrdiff_t)k * g->ldb + j0;
                    for (j = 0; j < nb; j++) acc[j] += a * mama__gemm_half_get(g, b + j);
                }
            } else if (g->Bh) {
                for (j = 0; j < nb; j++) {
                    ptrdiff_t b = (ptrdiff_t)(j0 + j) * g->ldb;
                    float s = 0.0f;
                    for (k = 0; k < g->K; k++)
                        s += (g->ta ? g->A[(ptrdiff_t)k * g->lda + i] : g->A[(ptrdiff_t)i * g->lda + k]) *
                             mama__gemm_half_get(g, b + k);
                    acc[j] = s;
                }
            } else if (!g->tb) {
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
    if (nt > g->cx->nslots) nt = g->cx->nslots;
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
        if (team > g->cx->nslots) team = g->cx->nslots;
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

static void mama__gemm_fill(mama__gemm_args *g, const mama__cpu_impl *cx, int trans_a, int trans_b,
                            int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                            int ldb, float beta, float *C, int ldc) {
    g->cx = cx;
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
    g->Bh = NULL;
    g->bdt = MAMA_F32;
    g->ki = NULL;
    g->e_bias = g->e_gamma = g->e_res = NULL;
    g->e_gelu = 0;
}

/* The built-in kernels on one product: on the threads' slots when free,
 * else on one thread with stack buffers. */
static void mama__gemm_run(const mama__gemm_args *g) {
    const mama__gemm_kinfo *ki = g->ki ? g->ki : g->cx->ki;
    if (mama__gemm_trylock(g->cx)) {
        mama__gemm_locked(ki, g, mama__gemm_threads_for(g));
        mama__gemm_unlock(g->cx);
    } else {
        mama__gemm_stack(ki, g);
    }
}

/* Backend-table members (section 1.5 signatures): the GEMMs of the CPU
 * backend, on the instance's slots. */
static void mama__cpu_gemm(mama_backend *be, int trans_a, int trans_b, int M,
                                             int N, int K, float alpha, const float *A, int lda,
                                             const float *B, int ldb, float beta, float *C,
                                             int ldc) {
    mama__gemm_args g;
    mama__gemm_fill(&g, (const mama__cpu_impl *)be->impl, trans_a, trans_b, M, N, K, alpha, A, lda,
                    B, ldb, beta, C, ldc);
    if (mama__gemm_easy(&g)) return;
#ifdef MAMA_USE_CBLAS
    cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
#endif
    mama__gemm_run(&g);
}

static void mama__cpu_gemm_half(mama_backend *be, int trans_a, int trans_b, int M,
                                                  int N, int K, float alpha, const float *A, int lda,
                                                  const uint16_t *B, int ldb, int b_dtype, float beta,
                                                  float *C, int ldc) {
    mama__gemm_args g;
    mama__gemm_fill(&g, (const mama__cpu_impl *)be->impl, trans_a, trans_b, M, N, K, alpha, A, lda,
                    NULL, ldb, beta, C, ldc);
    g.Bh = B;
    g.bdt = b_dtype == MAMA_F16 ? MAMA_F16 : MAMA_BF16;
    if (mama__gemm_easy(&g)) return;
    /* no CBLAS route: BLAS has no mixed-precision sgemm; the built-in
     * kernels run it (MAMA_USE_CBLAS builds included) */
    mama__gemm_run(&g);
}

static void mama__cpu_gemm_batched(mama_backend *be, int trans_a, int trans_b,
                                                     int M, int N, int K, float alpha,
                                                     const float *A, int lda, long long sa,
                                                     const float *B, int ldb, long long sb,
                                                     float beta, float *C, int ldc, long long sc,
                                                     int batch) {
    const mama__cpu_impl *cx = (const mama__cpu_impl *)be->impl;
    const mama__gemm_kinfo *ki = cx->ki;
    mama__gemm_args g;
    int b, nt, nt_batch;
    if (batch <= 0 || M <= 0 || N <= 0) return;
    mama__gemm_fill(&g, cx, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    nt = mama__gemm_threads_for(&g); /* threads one matrix deserves */
    /* threads the whole batch deserves */
    g.M = (int)(M * (long long)batch > INT_MAX ? INT_MAX : M * (long long)batch);
    nt_batch = mama__gemm_threads_for(&g);
    g.M = M;
#ifdef MAMA_USE_CBLAS
    nt = nt_batch = 1;
#endif
#ifdef _OPENMP
    if (nt_batch > 1 && nt < nt_batch && batch >= 2 && mama__gemm_trylock(cx)) {
        /* Small matrices: one matrix per thread, each on its own slot. */
        if (nt_batch > batch) nt_batch = batch;
#pragma omp parallel num_threads(nt_batch)
        {
            int tid = omp_get_thread_num(), team = omp_get_num_threads(), i;
            if (team > cx->nslots) team = cx->nslots;
            if (tid < team)
                for (i = tid; i < batch; i += team) {
                    mama__gemm_args gi = g;
                    gi.A = A + i * sa;
                    gi.B = B + i * sb;
                    gi.C = C + i * sc;
                    if (!mama__gemm_easy(&gi)) mama__gemm_slot(ki, &gi, tid, 0, M, 0, N);
                }
        }
        mama__gemm_unlock(cx);
        return;
    }
#else
    (void)ki;
    (void)nt;
    (void)nt_batch;
#endif
    for (b = 0; b < batch; b++)
        mama__cpu_gemm(be, trans_a, trans_b, M, N, K, alpha, A + b * sa, lda, B + b * sb, ldb, beta,
                       C + b * sc, ldc);
}

/* ---------------------------------------------------------------------------
 * 3.2 CPU kernels: elementwise, normalisation, attention, pooling, losses
 * (3.3 optimisers and schedules, 3.4 small ops of the losses follow)
 *
 * Every function here is `mama__cpu_<member>` for one member of struct
 * mama_backend (same parameters), so the CPU table is a list of names.
 * Conventions (see section 1.5): row-major float32; every *_backward
 * ACCUMULATES (+=) into the gradients it writes.
 *
 * Threads: OpenMP on the loops that are large enough to pay for a parallel
 * region (the `if` clauses); the pragmas vanish without -fopenmp.  Loops
 * that reduce over rows into a per-column result (bias, LayerNorm weight,
 * BatchNorm statistics, embedding scatter-add) are split over chunks of
 * columns instead of rows, so no two threads ever write the same float and
 * no per-call scratch memory is needed.
 * ------------------------------------------------------------------------- */

#ifdef _OPENMP
#define MAMA__OPS_PRAGMA(x) _Pragma(#x)
#else
#define MAMA__OPS_PRAGMA(x)
#endif
/* parallel loop over independent iterations when `cond` says it is worth it */
#define MAMA__OPS_PAR_FOR(cond) MAMA__OPS_PRAGMA(omp parallel for schedule(static) if(cond))
#define MAMA__OPS_PAR_FOR_DYN(cond) MAMA__OPS_PRAGMA(omp parallel for schedule(dynamic, 1) if(cond))
/* ask for vectorisation of a short inner loop (-O2 alone often declines) */
#define MAMA__OPS_SIMD MAMA__OPS_PRAGMA(omp simd)
#define MAMA__OPS_SIMD_SUM(v) MAMA__OPS_PRAGMA(omp simd reduction(+:v))

#define MAMA__OPS_MIN_PAR 32768 /* elements below which threads cost more than they save */
#define MAMA__OPS_CCH 32        /* columns per chunk in column-split reductions (192 columns = 6 chunks: even work for 2 or 3 threads) */

static int mama__ops_min_i(int a, int b) { return a < b ? a : b; }

/* ===== elementwise ===================================================== */

static void mama__cpu_bias_add_forward(mama_backend *be, float *y, const float *b, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * cols;
        int c;
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) yr[c] += b[c];
    }
}

static int mama__ops_have_avx2(void); /* run-time CPU check (with the attention kernels) */

/* Column sums over all rows (bias, LayerScale and LayerNorm parameter
 * gradients).  The columns are cut into panels of up to MAMA__OPS_PANEL,
 * as many as a multiple of the thread count (1152 columns on 2 threads:
 * 4 panels of 288); one thread owns a panel and streams its part of every
 * row, adding into an L1-resident accumulator row (the rows are read in
 * memory order, not one 32-column strip of every row at a time).  Per
 * column the rows are added in order 0, 1, ... with the same operations in
 * the AVX2 and portable loops (no FMA), so the sums have the same bits for
 * any thread count and either path.
 *   mode 0: s1 += d;  mode 1: s1 += d x;
 *   mode 2 (LayerNorm): s1 += d (x - mean_r) rstd_r, s2 += d.
 * s1 or s2 may be NULL (not wanted). */
#define MAMA__OPS_PANEL 512

static void mama__colsum_panel_generic(int mode, float *a1, float *a2, const float *dy, const float *x,
                                       const float *mean, const float *rstd, int rows, int cols, int c0, int nc) {
    int r, c;
    for (c = 0; c < nc; c++) a1[c] = a2[c] = 0.0f;
    for (r = 0; r < rows; r++) {
        const float *d = dy + (size_t)r * cols + c0, *xr = x ? x + (size_t)r * cols + c0 : NULL;
        if (mode == 0) {
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) a1[c] += d[c];
        } else if (mode == 1) {
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) a1[c] += d[c] * xr[c];
        } else {
            float m = mean[r], rs = rstd[r];
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) {
                a1[c] += d[c] * (xr[c] - m) * rs;
                a2[c] += d[c];
            }
        }
    }
}

#if defined(MAMA_X86_SIMD)
__attribute__((target("avx2"))) static void mama__colsum_panel_avx2(int mode, float *a1, float *a2, const float *dy,
                                                                      const float *x, const float *mean,
                                                                      const float *rstd, int rows, int cols, int c0,
                                                                      int nc) {
    int r, c, n8 = nc & ~7;
    for (c = 0; c < nc; c++) a1[c] = a2[c] = 0.0f;
    for (r = 0; r < rows; r++) {
        const float *d = dy + (size_t)r * cols + c0, *xr = x ? x + (size_t)r * cols + c0 : NULL;
        if (mode == 0) {
            for (c = 0; c < n8; c += 8)
                _mm256_storeu_ps(a1 + c, _mm256_add_ps(_mm256_loadu_ps(a1 + c), _mm256_loadu_ps(d + c)));
            for (; c < nc; c++) a1[c] += d[c];
        } else if (mode == 1) {
            for (c = 0; c < n8; c += 8)
                _mm256_storeu_ps(a1 + c, _mm256_add_ps(_mm256_loadu_ps(a1 + c),
                                                       _mm256_mul_ps(_mm256_loadu_ps(d + c), _mm256_loadu_ps(xr + c))));
            for (; c < nc; c++) a1[c] += d[c] * xr[c];
        } else {
            float m = mean[r], rs = rstd[r];
            __m256 vm = _mm256_set1_ps(m), vr = _mm256_set1_ps(rs);
            for (c = 0; c < n8; c += 8) {
                __m256 dv = _mm256_loadu_ps(d + c);
                __m256 t = _mm256_mul_ps(_mm256_mul_ps(dv, _mm256_sub_ps(_mm256_loadu_ps(xr + c), vm)), vr);
                _mm256_storeu_ps(a1 + c, _mm256_add_ps(_mm256_loadu_ps(a1 + c), t));
                _mm256_storeu_ps(a2 + c, _mm256_add_ps(_mm256_loadu_ps(a2 + c), dv));
            }
            for (; c < nc; c++) {
                a1[c] += d[c] * (xr[c] - m) * rs;
                a2[c] += d[c];
            }
        }
    }
}
#endif

static void mama__column_sums(int mode, float *s1, float *s2, const float *dy, const float *x, const float *mean,
                              const float *rstd, int rows, int cols) {
    int nt = 1, np, w, p, simd = mama__ops_have_avx2();
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    np = (cols + MAMA__OPS_PANEL - 1) / MAMA__OPS_PANEL;
    np = (np + nt - 1) / nt * nt;
    w = ((cols + np - 1) / np + 7) & ~7;
    np = (cols + w - 1) / w;
    (void)simd;
    MAMA__OPS_PAR_FOR(np > 1 && (long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (p = 0; p < np; p++) {
        float a1[MAMA__OPS_PANEL], a2[MAMA__OPS_PANEL];
        int c0 = p * w, nc = mama__ops_min_i(w, cols - c0), c;
#if defined(MAMA_X86_SIMD)
        if (simd) mama__colsum_panel_avx2(mode, a1, a2, dy, x, mean, rstd, rows, cols, c0, nc);
        else
#endif
            mama__colsum_panel_generic(mode, a1, a2, dy, x, mean, rstd, rows, cols, c0, nc);
        for (c = 0; c < nc; c++) {
            if (s1) s1[c0 + c] += a1[c];
            if (s2) s2[c0 + c] += a2[c];
        }
    }
}

/* db[c] += sum_r dy[r, c] */
static void mama__cpu_bias_add_backward(mama_backend *be, float *db, const float *dy, int rows, int cols) {
    (void)be;
    mama__column_sums(0, db, NULL, dy, NULL, NULL, NULL, rows, cols);
}

static void mama__cpu_add(mama_backend *be, float *y, const float *a, const float *b, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] = a[i] + b[i];
}

static void mama__cpu_accumulate(mama_backend *be, float *y, const float *x, float alpha, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] += alpha * x[i];
}

static void mama__cpu_scale(mama_backend *be, float *y, float s, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] *= s;
}

/* GELU.  Exact: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),
 *   dy/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi).
 * Tanh form (GPT-2): u = sqrt(2/pi) (x + 0.044715 x^3), y = 0.5 x (1 + tanh u),
 *   dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715 x^2). */
#define MAMA__SQRT1_2 0.70710678118654752440f
#define MAMA__SQRT_2_OVER_PI 0.79788456080286535588f
#define MAMA__INV_SQRT_2PI 0.39894228040143267794f
#define MAMA__GELU_C 0.044715f

static int mama__ops_have_avx2(void);

/* GELU on 8 lanes at a time.  tanh(u) = 1 - 2 / (exp(2u) + 1) and the erf
 * of Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) reduce both forms to one
 * exp (mama__exp8).  libm's tanhf/erff are scalar calls and dominated the
 * text tower's time. */
#if defined(MAMA_X86_SIMD)
/* exp on 8 lanes (GELU here, the attention softmax below): range
 * reduction x = n ln2 + r, |r| <= ln2/2, exp(r) by the Cephes degree-6
 * polynomial (~1 ulp), 2^n built in the exponent bits.
 * x is clamped to [-88, 88]; below -87.3 the result is 0 (so -inf -> 0),
 * and NaN stays NaN (max/min return their second operand on NaN).  n is
 * rounded by adding and subtracting 1.5 * 2^23 (the sum's last bit is
 * then n, in the round-to-nearest mode), which also leaves n + 127 in the
 * low bits of the sum for the exponent: fewer instructions than a round
 * and a conversion, with the same values. */
#define MAMA__EXP_MAGIC 12582912.0f /* 1.5 * 2^23 */
__attribute__((target("avx2,fma"))) static inline __m256 mama__exp8(__m256 x) {
    const __m256 magic = _mm256_set1_ps(MAMA__EXP_MAGIC);
    __m256 nm, fx, r, y;
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-88.0f), x));
    nm = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), magic);
    fx = _mm256_sub_ps(nm, magic);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(
                                _mm256_add_epi32(_mm256_castps_si256(nm), _mm256_set1_epi32(127)), 23)));
}
/* tanh(k (x + c x^3)) for the tanh form */
__attribute__((target("avx2,fma"))) static __m256 mama__gelu_tanh256(__m256 v) {
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(MAMA__SQRT_2_OVER_PI),
                             _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(MAMA__GELU_C), _mm256_mul_ps(v, v)), v, v));
    __m256 e = mama__exp8(_mm256_add_ps(u, u)), one = _mm256_set1_ps(1.0f);
    return _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
}
/* Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x), from A&S 7.1.26 */
__attribute__((target("avx2,fma"))) static void mama__gelu_cdf256(__m256 v, __m256 *cdf, __m256 *pdf) {
    __m256 z = _mm256_mul_ps(_mm256_set1_ps(MAMA__SQRT1_2), v);
    __m256 az = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z), one = _mm256_set1_ps(1.0f);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), az, one));
    __m256 ez = mama__exp8(_mm256_mul_ps(_mm256_set1_ps(-1.0f), _mm256_mul_ps(z, z)));
    __m256 poly = _mm256_set1_ps(1.061405429f), erf_abs, erf;
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
    poly = _mm256_mul_ps(poly, t);
    erf_abs = _mm256_fnmadd_ps(poly, ez, one);
    erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, _mm256_set1_ps(-0.0f))); /* sign of z */
    *cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(one, erf));
    *pdf = _mm256_mul_ps(_mm256_set1_ps(MAMA__INV_SQRT_2PI), ez); /* exp(-x^2/2) = exp(-z^2) */
}
/* n/8 vectors, serially; callers split the work across threads (an OpenMP
 * region inside a target("avx2") function is outlined without the target,
 * which clang rejects for vector arguments) */
__attribute__((target("avx2,fma"))) static void mama__gelu_forward_avx2(float *y, const float *x, long long n, int tanh_approx) {
    long long i;
    for (i = 0; i < n / 8; i++) {
        __m256 v = _mm256_loadu_ps(x + 8 * i), half_v = _mm256_mul_ps(_mm256_set1_ps(0.5f), v), g;
        if (tanh_approx) {
            g = _mm256_fmadd_ps(half_v, mama__gelu_tanh256(v), half_v);
        } else {
            __m256 cdf, pdf;
            mama__gelu_cdf256(v, &cdf, &pdf);
            g = _mm256_mul_ps(v, cdf);
        }
        _mm256_storeu_ps(y + 8 * i, g);
    }
}
__attribute__((target("avx2,fma"))) static void mama__gelu_backward_avx2(float *dx, const float *dy, const float *x,
                                                                         long long n, int tanh_approx) {
    long long i;
    for (i = 0; i < n / 8; i++) {
        __m256 v = _mm256_loadu_ps(x + 8 * i), d, one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
        if (tanh_approx) {
            __m256 t = mama__gelu_tanh256(v), v2 = _mm256_mul_ps(v, v);
            __m256 du = _mm256_mul_ps(_mm256_set1_ps(MAMA__SQRT_2_OVER_PI),
                                      _mm256_fmadd_ps(_mm256_set1_ps(3.0f * MAMA__GELU_C), v2, one));
            /* 0.5 (1 + t) + 0.5 v (1 - t^2) du */
            d = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_fnmadd_ps(t, t, one)), du,
                                _mm256_mul_ps(half, _mm256_add_ps(one, t)));
        } else {
            __m256 cdf, pdf;
            mama__gelu_cdf256(v, &cdf, &pdf);
            d = _mm256_fmadd_ps(v, pdf, cdf);
        }
        _mm256_storeu_ps(dx + 8 * i, _mm256_fmadd_ps(_mm256_loadu_ps(dy + 8 * i), d, _mm256_loadu_ps(dx + 8 * i)));
    }
}
#endif

static void mama__cpu_gelu_forward(mama_backend *be, float *y, const float *x, size_t n, int tanh_approx) {
    long long i, nn = (long long)n, start = 0;
    (void)be;
#if defined(MAMA_X86_SIMD)
    if (mama__ops_have_avx2()) {
        long long c, chunks = (nn / 8 * 8 + 4095) / 4096;
        MAMA__OPS_PAR_FOR(nn > 4 * 4096)
        for (c = 0; c < chunks; c++) {
            long long lo = c * 4096, len = nn / 8 * 8 - lo < 4096 ? nn / 8 * 8 - lo : 4096;
            mama__gelu_forward_avx2(y + lo, x + lo, len, tanh_approx);
        }
        start = nn / 8 * 8;
    }
#endif
    if (tanh_approx) {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i], u = MAMA__SQRT_2_OVER_PI * (v + MAMA__GELU_C * v * v * v);
            y[i] = 0.5f * v * (1.0f + tanhf(u));
        }
    } else {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i];
            y[i] = 0.5f * v * (1.0f + erff(v * MAMA__SQRT1_2));
        }
    }
}

static void mama__cpu_gelu_backward(mama_backend *be, float *dx, const float *dy, const float *x, size_t n,
                                    int tanh_approx) {
    long long i, nn = (long long)n, start = 0;
    (void)be;
#if defined(MAMA_X86_SIMD)
    if (mama__ops_have_avx2()) {
        long long c, chunks = (nn / 8 * 8 + 4095) / 4096;
        MAMA__OPS_PAR_FOR(nn > 4 * 4096)
        for (c = 0; c < chunks; c++) {
            long long lo = c * 4096, len = nn / 8 * 8 - lo < 4096 ? nn / 8 * 8 - lo : 4096;
            mama__gelu_backward_avx2(dx + lo, dy + lo, x + lo, len, tanh_approx);
        }
        start = nn / 8 * 8;
    }
#endif
    if (tanh_approx) {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i], v2 = v * v;
            float t = tanhf(MAMA__SQRT_2_OVER_PI * (v + MAMA__GELU_C * v2 * v));
            float du = MAMA__SQRT_2_OVER_PI * (1.0f + 3.0f * MAMA__GELU_C * v2);
            dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
        }
    } else {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + erff(v * MAMA__SQRT1_2));
            float pdf = MAMA__INV_SQRT_2PI * expf(-0.5f * v * v);
            dx[i] += dy[i] * (cdf + v * pdf);
        }
    }
}

static void mama__cpu_relu_forward(mama_backend *be, float *y, const float *x, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* the output decides: y > 0 exactly where x > 0, so x need not be kept */
static void mama__cpu_relu_backward(mama_backend *be, float *dx, const float *dy, const float *y, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}

/* Inverted dropout: keep element i iff hash(seed, i) >= p and scale the
 * kept ones by 1/(1-p), so the expectation is unchanged and evaluation
 * needs no rescaling.  p <= 0 is an exact copy, p >= 1 drops everything. */
static void mama__cpu_dropout_forward(mama_backend *be, float *y, const float *x, size_t n, float p, uint64_t seed) {
    long long i, nn = (long long)n;
    (void)be;
    if (p <= 0.0f) {
        if (y != x) memmove(y, x, n * sizeof(float));
        return;
    }
    if (p >= 1.0f) {
        memset(y, 0, n * sizeof(float));
        return;
    }
    {
        float s = 1.0f / (1.0f - p);
        MAMA__OPS_PAR_FOR(nn > 4096)
        for (i = 0; i < nn; i++) y[i] = mama_hash_uniform(seed, (uint64_t)i) >= p ? x[i] * s : 0.0f;
    }
}

static void mama__cpu_dropout_backward(mama_backend *be, float *dx, const float *dy, size_t n, float p,
                                       uint64_t seed) {
    long long i, nn = (long long)n;
    (void)be;
    if (p >= 1.0f) return;
    if (p <= 0.0f) {
        MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
        for (i = 0; i < nn; i++) dx[i] += dy[i];
        return;
    }
    {
        float s = 1.0f / (1.0f - p);
        MAMA__OPS_PAR_FOR(nn > 4096)
        for (i = 0; i < nn; i++)
            if (mama_hash_uniform(seed, (uint64_t)i) >= p) dx[i] += dy[i] * s;
    }
}

/* be->linear_fused's epilogue on C[i0:i1, j0:j1] (row stride N): the
 * operations of bias_add_forward, gelu_forward, layerscale_forward and
 * accumulate in their order and arithmetic, so the bits are those of the
 * composition (GELU's vector groups of 8 start at the same columns when N
 * and j0 are multiples of 8, as every ViT width is). */
static void mama__gemm_epilogue(const mama__gemm_args *g, int i0, int i1, int j0, int j1) {
    int i, j, n = j1 - j0, nv = 0;
    if (!g->e_bias && !g->e_gelu && !g->e_gamma && !g->e_res) return;
    for (i = i0; i < i1 && i < g->M; i++) {
        float *c = g->C + (ptrdiff_t)i * g->ldc + j0;
        const float *bias = g->e_bias ? g->e_bias + j0 : NULL, *gam = g->e_gamma ? g->e_gamma + j0 : NULL;
        if (bias) {
            MAMA__OPS_SIMD
            for (j = 0; j < n; j++) c[j] += bias[j];
        }
        if (g->e_gelu) {
#if defined(MAMA_X86_SIMD)
            if (mama__ops_have_avx2()) {
                nv = n / 8 * 8;
                mama__gelu_forward_avx2(c, c, nv, 0);
            }
#endif
            for (j = nv; j < n; j++) c[j] = 0.5f * c[j] * (1.0f + erff(c[j] * MAMA__SQRT1_2));
        }
        if (gam) {
            MAMA__OPS_SIMD
            for (j = 0; j < n; j++) c[j] = c[j] * gam[j];
        }
        if (g->e_res) {
            const float *r = g->e_res + (ptrdiff_t)i * g->N + j0;
            MAMA__OPS_SIMD
            for (j = 0; j < n; j++) c[j] += 1.0f * r[j];
        }
    }
}

static void mama__cpu_linear_fused(mama_backend *be, int M, int N, int K, const float *A, const float *W,
                                   const uint16_t *Wh, int w_dtype, const float *bias, int gelu, const float *gamma,
                                   const float *res, float *C) {
    mama__gemm_args g;
    mama__gemm_fill(&g, (const mama__cpu_impl *)be->impl, 0, 1, M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
    if (Wh) {
        g.Bh = Wh;
        g.bdt = w_dtype == MAMA_F16 ? MAMA_F16 : MAMA_BF16;
    }
    g.e_bias = bias; g.e_gelu = gelu; g.e_gamma = gamma; g.e_res = res;
#ifdef MAMA__GEMM_BF16DOT
    if (Wh && g.bdt == MAMA_BF16 && g.cx->bf16dot) g.ki = &mama__gemm_kbf16; /* activations rounded to bf16 */
#endif
    if (mama__gemm_easy(&g)) {
        mama__gemm_epilogue(&g, 0, M, 0, N);
        return;
    }
#ifdef MAMA_USE_CBLAS
    if (!Wh) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
        mama__gemm_epilogue(&g, 0, M, 0, N);
        return;
    }
#endif
    mama__gemm_run(&g);
}

static void mama__cpu_layerscale_forward(mama_backend *be, float *y, const float *x, const float *gamma, int rows,
                                         int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        int c;
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) yr[c] = xr[c] * gamma[c];
    }
}

/* dx += dy * gamma;  dgamma[c] += sum_r dy[r,c] x[r,c] (column chunks). */
static void mama__cpu_layerscale_backward(mama_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                                          const float *gamma, int rows, int cols) {
    int r;
    (void)be;
    if (dx) {
        MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
        for (r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * cols;
            float *o = dx + (size_t)r * cols;
            int c;
            MAMA__OPS_SIMD
            for (c = 0; c < cols; c++) o[c] += d[c] * gamma[c];
        }
    }
    if (dgamma) mama__column_sums(1, dgamma, NULL, dy, x, NULL, NULL, rows, cols);
}

/* ===== normalisation =================================================== */

/* LayerNorm over each row: xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps)
 * with the biased variance (PyTorch), y = xhat * w + b.  Two passes (mean,
 * then squared deviations) avoid the cancellation of E[x^2] - E[x]^2.
 * w, b may be NULL (no affine); mean, rstd may be NULL (not saved). */
static void mama__cpu_layernorm_forward(mama_backend *be, float *y, float *mean, float *rstd, const float *x,
                                        const float *w, const float *b, int rows, int cols, float eps) {
    int r;
    (void)be;
    if (cols <= 0) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float m = 0.0f, v = 0.0f, rs;
        int c;
        MAMA__OPS_SIMD_SUM(m)
        for (c = 0; c < cols; c++) m += xr[c];
        m /= (float)cols;
        MAMA__OPS_SIMD_SUM(v)
        for (c = 0; c < cols; c++) {
            float d = xr[c] - m;
            v += d * d;
        }
        v /= (float)cols;
        rs = 1.0f / sqrtf(v + eps);
        if (w && b) {
            MAMA__OPS_SIMD
            for (c = 0; c < cols; c++) yr[c] = (xr[c] - m) * rs * w[c] + b[c];
        } else {
            for (c = 0; c < cols; c++) {
                float n = (xr[c] - m) * rs;
                yr[c] = n * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
            }
        }
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
    }
}

/* LayerNorm backward.  With g = dy * w (gradient at xhat):
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   dw += sum_rows dy * xhat,  db += sum_rows dy.
 * Pass 1 (rows in parallel) writes dx; pass 2 (column chunks in parallel)
 * the parameter sums, re-deriving xhat from the saved mean and rstd. */
static void mama__cpu_layernorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const float *mean, const float *rstd,
                                         int rows, int cols) {
    int r;
    (void)be;
    if (cols <= 0) return;
    if (dx) {
        MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
        for (r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * cols, *d = dy + (size_t)r * cols;
            float *o = dx + (size_t)r * cols;
            float m = mean[r], rs = rstd[r], gm = 0.0f, gxm = 0.0f;
            int c;
            if (w) {
                MAMA__OPS_SIMD_SUM(gm)
                for (c = 0; c < cols; c++) gm += d[c] * w[c];
                MAMA__OPS_SIMD_SUM(gxm)
                for (c = 0; c < cols; c++) gxm += d[c] * w[c] * (xr[c] - m) * rs;
                gm /= (float)cols;
                gxm /= (float)cols;
                MAMA__OPS_SIMD
                for (c = 0; c < cols; c++) o[c] += rs * (d[c] * w[c] - gm - (xr[c] - m) * rs * gxm);
            } else {
                MAMA__OPS_SIMD_SUM(gm)
                for (c = 0; c < cols; c++) gm += d[c];
                MAMA__OPS_SIMD_SUM(gxm)
                for (c = 0; c < cols; c++) gxm += d[c] * (xr[c] - m) * rs;
                gm /= (float)cols;
                gxm /= (float)cols;
                MAMA__OPS_SIMD
                for (c = 0; c < cols; c++) o[c] += rs * (d[c] - gm - (xr[c] - m) * rs * gxm);
            }
        }
    }
    if (dw || db) mama__column_sums(2, dw, db, dy, x, mean, rstd, rows, cols);
}

/* BatchNorm over the rows of each column (channel), PyTorch semantics.
 *   train: mean, biased var of the batch normalise; the running statistics
 *          move by `momentum` towards the batch mean and the UNBIASED
 *          variance (var * n/(n-1); with one row the biased one, 0):
 *          running = (1 - momentum) * running + momentum * batch.
 *          running_mean/var may be NULL (no tracking).
 *   eval:  the running statistics normalise (batch statistics if they are
 *          NULL); nothing is updated.
 * Saved for the backward: mean[c] and rstd[c] = 1/sqrt(var + eps).  In eval
 * mode rstd is stored NEGATED: the sign tells batchnorm_backward (whose
 * signature has no train flag) that the statistics were constants, so it
 * back-propagates dx = dy * w * |rstd| only.  Statistics are accumulated in
 * double (a channel may span ~50k rows). */
static void mama__cpu_batchnorm_forward(mama_backend *be, float *y, float *mean, float *rstd, float *running_mean,
                                        float *running_var, const float *x, const float *w, const float *b, int rows,
                                        int cols, float eps, float momentum, int train) {
    int ch, nch = (cols + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH;
    int use_batch = train || !running_mean || !running_var;
    (void)be;
    if (rows <= 0 || cols <= 0) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, cols - c0), r, c;
        float mu[MAMA__OPS_CCH], rs[MAMA__OPS_CCH], sc[MAMA__OPS_CCH], sh[MAMA__OPS_CCH];
        if (use_batch) {
            double s[MAMA__OPS_CCH], q[MAMA__OPS_CCH];
            for (c = 0; c < nc; c++) s[c] = q[c] = 0.0;
            for (r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * cols + c0;
                for (c = 0; c < nc; c++) s[c] += xr[c];
            }
            for (c = 0; c < nc; c++) s[c] /= rows; /* s is now the mean */
            for (r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * cols + c0;
                for (c = 0; c < nc; c++) {
                    double d = xr[c] - s[c];
                    q[c] += d * d;
                }
            }
            for (c = 0; c < nc; c++) {
                double var = q[c] / rows;
                mu[c] = (float)s[c];
                rs[c] = (float)(1.0 / sqrt(var + eps));
                if (train && running_mean && running_var) {
                    double unb = rows > 1 ? q[c] / (rows - 1) : var;
                    running_mean[c0 + c] = (float)((1.0 - momentum) * running_mean[c0 + c] + momentum * s[c]);
                    running_var[c0 + c] = (float)((1.0 - momentum) * running_var[c0 + c] + momentum * unb);
                }
            }
        } else {
            for (c = 0; c < nc; c++) {
                mu[c] = running_mean[c0 + c];
                rs[c] = (float)(1.0 / sqrt((double)running_var[c0 + c] + eps));
            }
        }
        /* y = (x - mu) * rs * w + b = x * sc + sh */
        for (c = 0; c < nc; c++) {
            float wc = w ? w[c0 + c] : 1.0f, bc = b ? b[c0 + c] : 0.0f;
            sc[c] = rs[c] * wc;
            sh[c] = bc - mu[c] * sc[c];
            if (mean) mean[c0 + c] = mu[c];
            if (rstd) rstd[c0 + c] = train ? rs[c] : -rs[c];
        }
        for (r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * cols + c0;
            float *yr = y + (size_t)r * cols + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) yr[c] = xr[c] * sc[c] + sh[c];
        }
    }
}

/* BatchNorm backward.  Train (rstd > 0), with xhat = (x - mean) rstd:
 *   dx = w rstd (dy - mean_rows(dy) - xhat mean_rows(dy xhat))
 * (the full gradient through the batch mean and variance).  Eval (rstd
 * stored negated, see the forward): the statistics are constants,
 *   dx = dy w |rstd|.
 * Both: dw += sum_rows dy xhat, db += sum_rows dy.  dx, dw, db may be NULL. */
static void mama__cpu_batchnorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const float *mean, const float *rstd,
                                         int rows, int cols) {
    int ch, nch = (cols + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH;
    (void)be;
    if (rows <= 0 || cols <= 0) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, cols - c0), r, c;
        double sd[MAMA__OPS_CCH], sdx[MAMA__OPS_CCH];
        float mu[MAMA__OPS_CCH], rs[MAMA__OPS_CCH], k1[MAMA__OPS_CCH], k2[MAMA__OPS_CCH], wr[MAMA__OPS_CCH];
        int ev[MAMA__OPS_CCH];
        for (c = 0; c < nc; c++) {
            sd[c] = sdx[c] = 0.0;
            mu[c] = mean[c0 + c];
            ev[c] = rstd[c0 + c] < 0.0f;
            rs[c] = ev[c] ? -rstd[c0 + c] : rstd[c0 + c];
        }
        for (r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * cols + c0, *xr = x + (size_t)r * cols + c0;
            for (c = 0; c < nc; c++) {
                sd[c] += d[c];
                sdx[c] += (double)d[c] * ((xr[c] - mu[c]) * rs[c]);
            }
        }
        for (c = 0; c < nc; c++) {
            if (dw) dw[c0 + c] += (float)sdx[c];
            if (db) db[c0 + c] += (float)sd[c];
            wr[c] = (w ? w[c0 + c] : 1.0f) * rs[c];
            /* dx = wr * (dy - k1 - xhat * k2); eval: k1 = k2 = 0 */
            k1[c] = ev[c] ? 0.0f : (float)(sd[c] / rows);
            k2[c] = ev[c] ? 0.0f : (float)(sdx[c] / rows);
        }
        if (!dx) continue;
        for (r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * cols + c0, *xr = x + (size_t)r * cols + c0;
            float *o = dx + (size_t)r * cols + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) o[c] += wr[c] * (d[c] - k1[c] - (xr[c] - mu[c]) * rs[c] * k2[c]);
        }
    }
}

/* L2 normalisation (F.normalize): y = x / max(||x||, 1e-12), norm = ||x||.
 * Backward, n = ||x|| > 1e-12:  dx = (dy - y (dy . y)) / n;
 * below the clamp the denominator is a constant: dx = dy / 1e-12. */
#define MAMA__L2_EPS 1e-12f
static void mama__cpu_l2norm_forward(mama_backend *be, float *y, float *norm, const float *x, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float s = 0.0f, n, inv;
        int c;
        MAMA__OPS_SIMD_SUM(s)
        for (c = 0; c < cols; c++) s += xr[c] * xr[c];
        n = sqrtf(s);
        inv = 1.0f / (n > MAMA__L2_EPS ? n : MAMA__L2_EPS);
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) yr[c] = xr[c] * inv;
        if (norm) norm[r] = n;
    }
}

static void mama__cpu_l2norm_backward(mama_backend *be, float *dx, const float *dy, const float *y, const float *norm,
                                      int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *d = dy + (size_t)r * cols, *yr = y + (size_t)r * cols;
        float *o = dx + (size_t)r * cols;
        float n = norm[r], dot = 0.0f, inv;
        int c;
        if (n > MAMA__L2_EPS) {
            MAMA__OPS_SIMD_SUM(dot)
            for (c = 0; c < cols; c++) dot += d[c] * yr[c];
            inv = 1.0f / n;
        } else {
            inv = 1.0f / MAMA__L2_EPS;
        }
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) o[c] += (d[c] - yr[c] * dot) * inv;
    }
}

/* ===== attention ======================================================== */
/* Multi-head attention on the CPU.  qkv is [B, T, 3, H, hd] (row stride
 * 3D, D = H hd), out is [B, T, D], lse is [B, H, T].  Per (b, h), with
 * q_i, k_j, v_j the head's rows:
 *
 *   forward:  s_ij = scale q_i . k_j               (visible keys only)
 *             m_i = max_j s_ij,  l_i = sum_j exp(s_ij - m_i)
 *             P_ij = exp(s_ij - m_i) / l_i,  lse_i = m_i + log l_i
 *             out_i = sum_j P_ij z_ij v_j
 *   backward (P recomputed as exp(s_ij - lse_i), nothing T x T saved):
 *             dPd_ij = dO_i . v_j        (gradient of the dropped weight)
 *             D_i = sum_j P_ij z_ij dPd_ij = dO_i . out_i
 *             dS_ij = P_ij (dPd_ij z_ij - D_i)
 *             dq_i += scale sum_j dS_ij k_j,  dk_j += scale sum_i dS_ij q_i,
 *             dv_j += sum_i P_ij z_ij dO_i        (all three accumulate)
 *
 * Masks: key j is visible to query i iff key_valid[b*T + j] (when given)
 * and, if causal, j <= i; invisible keys get s = -inf, so weight exactly 0.
 * A query that sees no key gets out = 0, lse = -inf and no gradient (the
 * backward gives such rows lse = +inf, so P = 0).  Dropout (inverted) is
 * z_ij = keep_ij / (1 - p), keep_ij = mama_hash_uniform(seed,
 * ((b H + h) T + i) T + j) >= p; it multiplies the normalised weights that
 * meet V, so l and lse are those of the undropped softmax.
 *
 * Schedule: per (b, h) and block of R <= 288 queries, the score rows are
 * whole (R x kend, kend = T, or the block's last query + 1 when causal:
 * only the diagonal block's upper triangle is computed and masked), so the
 * softmax is one pass per row (no online rescaling) and the products are
 * ordinary GEMMs on the packed micro-kernel (one thread each, on its slot):
 *   forward:  S = Q K^T; per row mask and max, e = exp(scale s - m) and
 *             its sum l (the scale folded into the exp pass, so the max
 *             pass only reads); with dropout e z / l; out = S V, each
 *             row divided by its l when there is no dropout (hd
 *             products instead of T);
 *   backward: S = Q K^T, dP = dO V^T; per row P = exp(scale s - lse),
 *             S := scale dS, dP := P z; dQ += S K, dK += S^T Q, dV += dP^T dO.
 * The forward's tasks are (b, h, query block); the backward's are (b, h),
 * so one thread owns a head's columns of dqkv and dK, dV accumulate over
 * its query blocks without races.  S and dP live in the backend instance's
 * per-slot score buffer (allocated at creation, like the GEMM's packing
 * buffers); the products use the GEMM's slot buffers, so the instance's
 * slot lock is held for the whole call.  A caller that finds it taken
 * (another thread sharing this backend is in a GEMM or an attention) waits
 * for it, so the bits never depend on timing; they do not depend on the
 * thread count either (each task is one thread's, in a fixed order).
 *
 * Fallback: the reference backend's loops (section 3.6: correct, no
 * scratch, and slow: O(T^2 hd) per head with every dot product twice, no
 * SIMD, no threads) run instead when not even one query row of scores fits
 * the slot buffer (T > 131072 tokens: no model config comes near; the
 * largest ViT has 1374 tokens), without GCC/clang atomics (no slot lock;
 * e.g. MSVC), and when a test forces it (mama_cpu_backend_force_attention
 * with "reference"). */
#define MAMA__ATT_SCR 131072 /* floats per score buffer (S, dP) and slot: 90 rows of T = 1374 */
#define MAMA__ATT_RMAX 288  /* query rows per block at most: T up to 288 is one block, K and V packed once */
#define MAMA__CPU_SSTRIDE ((size_t)2 * MAMA__ATT_SCR + MAMA__GEMM_PAD) /* floats per slot */

/* section 3.6, the fallback */
static void mama__ref_attention_forward(mama_backend *be, float *out, float *lse, const float *qkv,
                                        const int *key_valid, int B, int T, int H, int hd, int causal, float scale,
                                        float dropout_p, uint64_t dropout_seed);
static void mama__ref_attention_backward(mama_backend *be, float *dqkv, const float *dout, const float *out,
                                         const float *lse, const float *qkv, const int *key_valid, int B, int T,
                                         int H, int hd, int causal, float scale, float dropout_p,
                                         uint64_t dropout_seed);

/* No cached flag (no static mutable state): __builtin_cpu_supports reads
 * the CPU model word libgcc fills once; the init call returns at once
 * after the first time. */
static int mama__ops_have_avx2(void) {
#if defined(MAMA_X86_SIMD)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* s[j] = exp(scale s[j] - m) for j < n; returns the sum (exp(-inf) = 0).
 * The forward folds the softmax scale in here (m is then the scaled row
 * maximum); the backward passes scale 1 (s - m exactly, as the SIMD
 * passes' fused multiply-subtract is with a factor of 1). */
static float mama__att_exp_sum_scalar(float *s, int n, float m, float scale) {
    float sum = 0.0f;
    int j;
    for (j = 0; j < n; j++) {
        float e = expf(s[j] * scale - m);
        s[j] = e;
        sum += e;
    }
    return sum;
}

#if defined(MAMA_X86_SIMD)
/* The 8 lanes of v summed in a fixed order (the same bits every call). */
__attribute__((target("avx2,fma"))) static float mama__hsum256(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* s[j] = exp(scale s[j] - m), returning the sum.  The sum is kept as the
 * AVX-512 pass keeps it, so both give the same bits: one accumulator lane
 * per position mod 16 (acc0: 0-7, acc1: 8-15), an 8-value remainder into
 * acc0, then acc0 + acc1 summed in a fixed order, then the scalar tail. */
__attribute__((target("avx2,fma"))) static float mama__att_exp_sum_avx2(float *s, int n, float m, float scale) {
    const __m256 vm = _mm256_set1_ps(m), vsc = _mm256_set1_ps(scale);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), y;
    int j;
    for (j = 0; j + 16 <= n; j += 16) {
        y = mama__exp8(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), vsc, vm));
        _mm256_storeu_ps(s + j, y);
        acc0 = _mm256_add_ps(acc0, y);
        y = mama__exp8(_mm256_fmsub_ps(_mm256_loadu_ps(s + j + 8), vsc, vm));
        _mm256_storeu_ps(s + j + 8, y);
        acc1 = _mm256_add_ps(acc1, y);
    }
    if (j + 8 <= n) {
        y = mama__exp8(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), vsc, vm));
        _mm256_storeu_ps(s + j, y);
        acc0 = _mm256_add_ps(acc0, y);
        j += 8;
    }
    return mama__hsum256(_mm256_add_ps(acc0, acc1)) + mama__att_exp_sum_scalar(s + j, n - j, m, scale);
}

/* The forward's row passes with 16 lanes (the AVX-512 GEMM kernel's CPUs),
 * for rows without a key mask: the max (read only; exact in any order),
 * then exp and sum (mama__att_exp_sum_avx512, below). */
__attribute__((target("avx512f"))) static float mama__att_max_avx512(const float *s, int n) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    float tmp[16], mx;
    int j, k;
    for (j = 0; j + 16 <= n; j += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(s + j));
    _mm512_storeu_ps(tmp, vmax);
    mx = tmp[0];
    for (k = 1; k < 16; k++) mx = tmp[k] > mx ? tmp[k] : mx;
    for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    return mx;
}
/* mama__exp8 on 16 lanes: the same operations, lane for lane */
__attribute__((target("avx512f"))) static inline __m512 mama__exp16(__m512 x) {
    const __m512 magic = _mm512_set1_ps(MAMA__EXP_MAGIC);
    __m512 nm, fx, r, y;
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-88.0f), x));
    nm = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), magic);
    fx = _mm512_sub_ps(nm, magic);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
    y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(
                                _mm512_add_epi32(_mm512_castps_si512(nm), _mm512_set1_epi32(127)), 23)));
}
/* mama__att_exp_sum_avx2 with 16 lanes: one 16-lane accumulator (the AVX2
 * pass's acc0 | acc1), so the same bits. */
__attribute__((target("avx512f,avx2,fma"))) static float mama__att_exp_sum_avx512(float *s, int n, float m,
                                                                                  float scale) {
    const __m512 vm = _mm512_set1_ps(m), vsc = _mm512_set1_ps(scale);
    __m512 acc = _mm512_setzero_ps();
    __m256 acc0, acc1;
    int j;
    for (j = 0; j + 16 <= n; j += 16) {
        __m512 y = mama__exp16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vsc, vm));
        _mm512_storeu_ps(s + j, y);
        acc = _mm512_add_ps(acc, y);
    }
    acc0 = _mm512_castps512_ps256(acc);
    acc1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    if (j + 8 <= n) {
        __m256 y = mama__exp8(_mm256_fmsub_ps(_mm256_loadu_ps(s + j), _mm256_set1_ps(scale), _mm256_set1_ps(m)));
        _mm256_storeu_ps(s + j, y);
        acc0 = _mm256_add_ps(acc0, y);
        j += 8;
    }
    return mama__hsum256(_mm256_add_ps(acc0, acc1)) + mama__att_exp_sum_scalar(s + j, n - j, m, scale);
}
#endif

static float mama__att_exp_sum(int simd, float *s, int n, float m, float scale) {
#if defined(MAMA_X86_SIMD)
    if (simd) return mama__att_exp_sum_avx2(s, n, m, scale);
#endif
    (void)simd;
    return mama__att_exp_sum_scalar(s, n, m, scale);
}

/* One backward row without dropout: P = exp(scale s - lse) on the visible
 * keys (masked ones -> 0), Pz = P, s = scale dS = P (dp - D) scale; zero
 * from jmax to nk.  The same IEEE operations in the same order as the
 * generic loop in mama__att_backward_head (no FMA contraction), so both
 * give the same bits.  pz may be dp (the backward keeps P in dP's buffer). */
#if defined(MAMA_X86_SIMD)
__attribute__((target("avx2,fma"))) static void mama__att_bwd_row_avx2(float *s, const float *dp, float *pz,
                                                                         const int *kv, int jmax, int nk, float scale,
                                                                         float li, float di) {
    const __m256 vs = _mm256_set1_ps(scale), vl = _mm256_set1_ps(li), vd = _mm256_set1_ps(di);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    int jj;
    for (jj = 0; jj + 8 <= jmax; jj += 8) {
        __m256 x = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(s + jj), vs), vl);
        if (kv) {
            __m256i k = _mm256_loadu_si256((const __m256i *)(kv + jj));
            __m256 hidden = _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_setzero_si256()));
            x = _mm256_blendv_ps(x, ninf, hidden);
        }
        _mm256_storeu_ps(s + jj, x);
    }
    for (; jj < jmax; jj++) s[jj] = (kv && !kv[jj]) ? -INFINITY : s[jj] * scale - li;
    mama__att_exp_sum_avx2(s, jmax, 0.0f, 1.0f);
    for (jj = 0; jj + 8 <= jmax; jj += 8) {
        __m256 pij = _mm256_loadu_ps(s + jj);
        __m256 ds = _mm256_mul_ps(_mm256_mul_ps(pij, _mm256_sub_ps(_mm256_loadu_ps(dp + jj), vd)), vs);
        _mm256_storeu_ps(pz + jj, pij);
        _mm256_storeu_ps(s + jj, ds);
    }
    for (; jj < jmax; jj++) { /* dp read before pz is written: pz may be dp */
        float pij = s[jj], g = dp[jj];
        pz[jj] = pij;
        s[jj] = pij * (g - di) * scale;
    }
    for (; jj < nk; jj++) s[jj] = pz[jj] = 0.0f;
}
#endif

static void mama__att_bwd_row(float *s, const float *dp, float *pz, const int *kv, int jmax, int nk, float scale,
                              float li, float di) {
#if defined(MAMA_X86_SIMD)
    mama__att_bwd_row_avx2(s, dp, pz, kv, jmax, nk, scale, li, di);
#else
    (void)s; (void)dp; (void)pz; (void)kv; (void)jmax; (void)nk; (void)scale; (void)li; (void)di;
#endif
}

#if defined(MAMA_X86_SIMD)
/* sum_c g[c] o[c] in 8 lanes (then lanes summed in a fixed order): the
 * plain loop is one chain of dependent adds, 4 cycles each, and showed as
 * 4% of the attention's time. */
__attribute__((target("avx2,fma"))) static float mama__att_dot_avx2(const float *g, const float *o, int n) {
    __m256 acc = _mm256_setzero_ps();
    float s;
    int c = 0, k;
    for (; c + 8 <= n; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(g + c), _mm256_loadu_ps(o + c), acc);
    s = mama__hsum256(acc);
    for (k = c; k < n; k++) s += g[k] * o[k];
    return s;
}
#endif

/* Per query row of a backward block: D_i = dO_i . out_i and the row's lse
 * (rows that saw no key get +inf, so P = exp(s - inf) = 0).  Returns 0
 * when no row of the block saw a key (nothing to do). */
static int mama__att_row_stats(float *Di, float *Li, const float *dO, const float *O, const float *lse, int D, int nq,
                               int hd) {
    int r, c, any = 0;
#if defined(MAMA_X86_SIMD)
    int simd = mama__ops_have_avx2();
#endif
    for (r = 0; r < nq; r++) {
        const float *o = O + (size_t)r * D, *g = dO + (size_t)r * D;
        float s = 0.0f;
#if defined(MAMA_X86_SIMD)
        if (simd)
            s = mama__att_dot_avx2(g, o, hd);
        else
#endif
            for (c = 0; c < hd; c++) s += g[c] * o[c];
        Di[r] = s;
        Li[r] = lse[r];
        if (Li[r] > -FLT_MAX && Li[r] < FLT_MAX) any = 1;
        else Li[r] = INFINITY;
    }
    return any;
}

/* Query rows per block: R rows of ldS scores must fit the buffer, R a
 * multiple of the kernel's mr (fewer only when not even mr rows fit: T
 * beyond ~10900 tokens with AVX-512's mr = 12), and the blocks even
 * (300 tokens -> 2 blocks of 150, not 288 + 12).  A whole
 * head in one block (T <= 288: the small ViT's 261 tokens) packs its K and
 * V once instead of once per block: 5% faster forward, 2.5% faster
 * backward at T = 261 on one thread than blocks of 90, although S and dP
 * (2 x 276 KB) then leave L2.  Causal attention uses
 * shorter blocks: the masked triangle of each diagonal block is wasted
 * work.  0 when not even one row fits (T > MAMA__ATT_SCR). */
static int mama__att_rows(const mama__gemm_kinfo *ki, int T, int causal) {
    int ldS = (T + 7) & ~7, cap = MAMA__ATT_SCR / ldS, nblk, r;
    if (cap > MAMA__ATT_RMAX) cap = MAMA__ATT_RMAX;
    if (causal && cap > 48) cap = 48;
    if (cap >= ki->mr) cap -= cap % ki->mr;
    if (cap < 1) return 0;
    nblk = (T + cap - 1) / cap;
    r = (T + nblk - 1) / nblk;
    if (cap >= ki->mr) r = (r + ki->mr - 1) / ki->mr * ki->mr;
    return r < cap ? r : cap;
}

/* C = alpha op(A) op(B) + beta C on one thread with slot `slot`'s packing
 * buffers. */
static void mama__att_gemm(const mama__cpu_impl *cx, int slot, int ta, int tb, int M, int N, int K,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    mama__gemm_args g;
    if (M <= 0 || N <= 0 || K <= 0) return;
    mama__gemm_fill(&g, cx, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    mama__gemm_slot(cx->ki, &g, slot, 0, M, 0, N);
}

/* The forward without masks or causality packs a head's K^T and V once
 * (for all its query blocks) into the slot's B buffer, in the layout the
 * blocked GEMM packs them per call: per K block (kc rows, the GEMM's
 * split), panels of nr columns over all N (Npad = N rounded up to nr), so
 * a block's panel at column j sits at pc * Npad + j * kc.  The products
 * then run the blocked loops with B already packed: the same panels, the
 * same kernel calls, the same bits.  Returns 0 when K^T and V do not fit
 * (the per-call packing runs instead). */
static int mama__att_pack_kv(const mama__cpu_impl *cx, const float *K, const float *V, int ld, int T, int hd,
                             float *dst, int *npad_t, int *npad_h) {
    const mama__gemm_kinfo *ki = cx->ki;
    mama__gemm_args g;
    int nt = (T + ki->nr - 1) / ki->nr * ki->nr, nh = (hd + ki->nr - 1) / ki->nr * ki->nr, pc, kc, kb;
    if ((size_t)hd * nt + (size_t)T * nh > MAMA__GEMM_BBUF) return 0;
    *npad_t = nt;
    *npad_h = nh;
    mama__gemm_fill(&g, cx, 0, 1, 0, T, hd, 1.0f, NULL, 0, K, ld, 0.0f, NULL, 0);
    kb = mama__gemm_even(hd, ki->kc, 1);
    for (pc = 0; pc < hd; pc += kb) {
        kc = hd - pc < kb ? hd - pc : kb;
        ki->pack_b(&g, pc, kc, 0, T, ki->nr, dst + (size_t)pc * nt);
    }
    mama__gemm_fill(&g, cx, 0, 0, 0, hd, T, 1.0f, NULL, 0, V, ld, 0.0f, NULL, 0);
    kb = mama__gemm_even(T, ki->kc, 1);
    for (pc = 0; pc < T; pc += kb) {
        kc = T - pc < kb ? T - pc : kb;
        ki->pack_b(&g, pc, kc, 0, hd, ki->nr, dst + (size_t)hd * nt + (size_t)pc * nh);
    }
    return 1;
}
/* C = A B (beta 0) with B packed by mama__att_pack_kv: mama__gemm_blocked's
 * loops on slot `slot`'s A buffer. */
static void mama__att_gemm_pp(const mama__cpu_impl *cx, int slot, int M, int N, int K, const float *A, int lda,
                              const float *Bp, int npad, float *C, int ldc) {
    const mama__gemm_kinfo *ki = cx->ki;
    float *abuf = cx->abuf + (size_t)slot * MAMA__CPU_ASTRIDE;
    int nb = mama__gemm_even(N, ki->nc, ki->nr), kb = mama__gemm_even(K, ki->kc, 1);
    int mb = mama__gemm_even(M, ki->mc, ki->mr), jc, pc, ic;
    mama__gemm_args g;
    if (M <= 0 || N <= 0 || K <= 0) return;
    mama__gemm_fill(&g, cx, 0, 0, M, N, K, 1.0f, A, lda, NULL, 0, 0.0f, C, ldc);
    for (jc = 0; jc < N; jc += nb) {
        int nc = N - jc < nb ? N - jc : nb;
        for (pc = 0; pc < K; pc += kb) {
            int kc = K - pc < kb ? K - pc : kb;
            for (ic = 0; ic < M; ic += mb) {
                int mc = M - ic < mb ? M - ic : mb;
                ki->pack_a(&g, ic, mc, pc, kc, ki->mr, abuf);
                mama__gemm_macro(ki, &g, ic, mc, jc, nc, pc, kc, abuf,
                                 (float *)(uintptr_t)(Bp + (size_t)pc * npad + (size_t)jc * kc), pc == 0 ? 0.0f : 1.0f, 0);
            }
        }
    }
}

/* s[j] = -inf for the hidden keys j < jmax (kv[j] == 0, when kv is
 * given); returns the maximum of the visible ones (the scale is applied
 * by the exp pass, so the visible scores are only read). */
#if defined(MAMA_X86_SIMD)
__attribute__((target("avx2,fma"))) static float mama__att_mask_max_avx2(float *s, const int *kv, int jmax) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vmax = ninf;
    float tmp[8], mx;
    int jj, k;
    for (jj = 0; jj + 8 <= jmax; jj += 8) {
        __m256 x = _mm256_loadu_ps(s + jj);
        if (kv) {
            __m256i kk = _mm256_loadu_si256((const __m256i *)(kv + jj));
            x = _mm256_blendv_ps(x, ninf, _mm256_castsi256_ps(_mm256_cmpeq_epi32(kk, _mm256_setzero_si256())));
            _mm256_storeu_ps(s + jj, x);
        }
        vmax = _mm256_max_ps(vmax, x);
    }
    _mm256_storeu_ps(tmp, vmax);
    mx = tmp[0];
    for (k = 1; k < 8; k++) mx = tmp[k] > mx ? tmp[k] : mx;
    for (; jj < jmax; jj++) {
        if (kv && !kv[jj]) s[jj] = -INFINITY;
        mx = s[jj] > mx ? s[jj] : mx;
    }
    return mx;
}
#endif

static float mama__att_mask_max(int simd, float *s, const int *kv, int jmax) {
    float mx = -INFINITY;
    int jj;
#if defined(MAMA_X86_SIMD)
    if (simd) return mama__att_mask_max_avx2(s, kv, jmax);
#endif
    (void)simd;
    for (jj = 0; jj < jmax; jj++) {
        if (kv && !kv[jj]) s[jj] = -INFINITY;
        mx = s[jj] > mx ? s[jj] : mx;
    }
    return mx;
}

/* Forward of queries [i0, i0+nq) of head (b, h). */
static void mama__att_forward_block(const mama__cpu_impl *cx, int slot, int simd, float *out, float *lse,
                                    const float *qkv, const int *key_valid, int b, int h, int i0, int nq, int T,
                                    int H, int hd, int causal, float scale, float p, uint64_t seed,
                                    const float *kvp, int npad_t, int npad_h) {
    float *S = cx->sbuf + (size_t)slot * MAMA__CPU_SSTRIDE;
    const int D = H * hd, ld = 3 * D, ldS = (T + 7) & ~7;
    const float *Q = qkv + (size_t)(b * T + i0) * ld + h * hd;
    const float *K = qkv + (size_t)b * T * ld + D + h * hd, *V = K + D;
    const int *kv = key_valid ? key_valid + (size_t)b * T : NULL;
    const int kend = causal ? mama__ops_min_i(T, i0 + nq) : T;
    const float zscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    const uint64_t drop_base = ((uint64_t)b * H + h) * (uint64_t)T;
    /* 16-lane row passes where the AVX-512 GEMM kernel runs */
    const int wide = simd && cx->ki->mr == 12;
    float inv_l[MAMA__ATT_RMAX]; /* 1 / l per row, applied to the output rows after S V (no dropout) */
    int r, jj;
    (void)wide;
    if (kvp) mama__att_gemm_pp(cx, slot, nq, kend, hd, Q, ld, kvp, npad_t, S, ldS);
    else mama__att_gemm(cx, slot, 0, 1, nq, kend, hd, Q, ld, K, ld, 0.0f, S, ldS);
    for (r = 0; r < nq; r++) {
        float *s = S + (size_t)r * ldS, *ls = lse + ((size_t)b * H + h) * T + i0 + r;
        int i = i0 + r, jmax = causal ? mama__ops_min_i(kend, i + 1) : kend;
        float mx, inv, l, sc = scale;
        inv_l[r] = 1.0f;
        if (!(scale > 0.0f)) { /* the max below must be the scaled scores' */
            for (jj = 0; jj < jmax; jj++) s[jj] *= scale;
            sc = 1.0f;
        }
#if defined(MAMA_X86_SIMD)
        if (wide && !kv) mx = mama__att_max_avx512(s, jmax);
        else
#endif
            mx = mama__att_mask_max(simd, s, kv, jmax);
        if (mx == -INFINITY) { /* no visible key: out = 0, lse = -inf */
            memset(s, 0, sizeof(float) * (size_t)kend);
            *ls = -INFINITY;
            continue;
        }
        mx *= sc; /* the row maximum of scale * s */
#if defined(MAMA_X86_SIMD)
        if (wide) l = mama__att_exp_sum_avx512(s, jmax, mx, sc);
        else
#endif
            l = mama__att_exp_sum(simd, s, jmax, mx, sc);
        inv = 1.0f / l;
        if (p > 0.0f) {
            uint64_t base = (drop_base + (uint64_t)i) * (uint64_t)T;
            for (jj = 0; jj < jmax; jj++)
                s[jj] = mama_hash_uniform(seed, base + (uint64_t)jj) >= p ? s[jj] * inv * zscale : 0.0f;
        } else {
            inv_l[r] = inv;
        }
        for (jj = jmax; jj < kend; jj++) s[jj] = 0.0f;
        *ls = mx + logf(l);
    }
    {
        float *o = out + (size_t)(b * T + i0) * D + h * hd;
        if (kvp) mama__att_gemm_pp(cx, slot, nq, hd, kend, S, ldS, kvp + (size_t)hd * npad_t, npad_h, o, D);
        else mama__att_gemm(cx, slot, 0, 0, nq, hd, kend, S, ldS, V, ld, 0.0f, o, D);
        if (p == 0.0f) /* out_i = (sum_j e_ij v_j) / l_i: hd products a row instead of T */
            for (r = 0; r < nq; r++) {
                float *orow = o + (size_t)r * D, v = inv_l[r];
                MAMA__OPS_SIMD
                for (jj = 0; jj < hd; jj++) orow[jj] *= v;
            }
    }
}

/* Backward of head (b, h), query blocks of R rows. */
static void mama__att_backward_head(const mama__cpu_impl *cx, int slot, int simd, float *dqkv, const float *dout,
                                    const float *out, const float *lse, const float *qkv, const int *key_valid,
                                    int b, int h, int T, int H, int hd, int causal, float scale, float p,
                                    uint64_t seed, int R) {
    float *S = cx->sbuf + (size_t)slot * MAMA__CPU_SSTRIDE, *dP = S + MAMA__ATT_SCR;
    float Di[MAMA__ATT_RMAX], Li[MAMA__ATT_RMAX];
    const int D = H * hd, ld = 3 * D, ldS = (T + 7) & ~7;
    const float *Qb = qkv + (size_t)b * T * ld + h * hd, *Kb = Qb + D, *Vb = Kb + D;
    float *dQb = dqkv + (size_t)b * T * ld + h * hd, *dKb = dQb + D, *dVb = dKb + D;
    const float *dOb = dout + (size_t)b * T * D + h * hd, *Ob = out + (size_t)b * T * D + h * hd;
    const float *Lb = lse + ((size_t)b * H + h) * T;
    const int *kv = key_valid ? key_valid + (size_t)b * T : NULL;
    const float zscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    const uint64_t drop_base = ((uint64_t)b * H + h) * (uint64_t)T;
    int i0, r, jj;
    for (i0 = 0; i0 < T; i0 += R) {
        const int nq = mama__ops_min_i(R, T - i0), kend = causal ? mama__ops_min_i(T, i0 + nq) : T;
        const float *Q = Qb + (size_t)i0 * ld, *dO = dOb + (size_t)i0 * D;
        if (!mama__att_row_stats(Di, Li, dO, Ob + (size_t)i0 * D, Lb + i0, D, nq, hd)) continue;
        mama__att_gemm(cx, slot, 0, 1, nq, kend, hd, Q, ld, Kb, ld, 0.0f, S, ldS);
        mama__att_gemm(cx, slot, 0, 1, nq, kend, hd, dO, D, Vb, ld, 0.0f, dP, ldS);
        for (r = 0; r < nq; r++) {
            float *s = S + (size_t)r * ldS, *dp = dP + (size_t)r * ldS;
            int i = i0 + r, jmax = causal ? mama__ops_min_i(kend, i + 1) : kend;
            uint64_t base = (drop_base + (uint64_t)i) * (uint64_t)T;
            if (p == 0.0f && simd) { /* dS into s, P into dp */
                mama__att_bwd_row(s, dp, dp, kv, jmax, kend, scale, Li[r], Di[r]);
                continue;
            }
            for (jj = 0; jj < jmax; jj++) s[jj] = (kv && !kv[jj]) ? -INFINITY : s[jj] * scale - Li[r];
            mama__att_exp_sum(simd, s, jmax, 0.0f, 1.0f);
            for (jj = 0; jj < jmax; jj++) {
                float pij = s[jj], z = 1.0f;
                if (p > 0.0f) z = mama_hash_uniform(seed, base + (uint64_t)jj) >= p ? zscale : 0.0f;
                s[jj] = pij * (dp[jj] * z - Di[r]) * scale;
                dp[jj] = pij * z;
            }
            for (; jj < kend; jj++) s[jj] = dp[jj] = 0.0f;
        }
        /* dQ += dS K;  dK += dS^T Q;  dV += (P z)^T dO */
        mama__att_gemm(cx, slot, 0, 0, nq, hd, kend, S, ldS, Kb, ld, 1.0f, dQb + (size_t)i0 * ld, ld);
        mama__att_gemm(cx, slot, 1, 0, kend, hd, nq, S, ldS, Q, ld, 1.0f, dKb, ld);
        mama__att_gemm(cx, slot, 1, 0, kend, hd, nq, dP, ldS, dO, D, 1.0f, dVb, ld);
    }
}

/* Threads for the schedule, or 0 when the reference fallback runs (forced,
 * no atomics, or T too long for one row of scores).  Takes the instance's
 * slot lock on success, waiting for it when another thread sharing the
 * backend holds it (it does so for one GEMM or one attention call, never
 * calling out).  Threads: the OpenMP team, at most the instance's slots;
 * one inside a parallel region (the team there is a single thread with
 * number 0, so slot 0, which the lock makes ours). */
static int mama__att_begin(const mama__cpu_impl *cx, int T, int causal, int *R) {
    int nt = 1;
    if (!cx->att_gemm || !MAMA__GEMM_HAVE_LOCK) return 0;
    *R = mama__att_rows(cx->ki, T, causal);
    if (*R <= 0) return 0;
#ifdef _OPENMP
    if (!omp_in_parallel()) nt = mama__ops_min_i(omp_get_max_threads(), cx->nslots);
#endif
    while (!mama__gemm_trylock(cx)) MAMA__YIELD();
    return nt;
}

static int mama__att_slot(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static void mama__cpu_attention_forward(mama_backend *be, float *out, float *lse, const float *qkv,
                                        const int *key_valid, int B, int T, int H, int hd, int causal, float scale,
                                        float dropout_p, uint64_t dropout_seed) {
    int simd = mama__ops_have_avx2();
    const mama__cpu_impl *cx = (const mama__cpu_impl *)be->impl;
    int bq, ntile, ntask, t, nt, par, pp;
    if (B <= 0 || T <= 0 || H <= 0 || hd <= 0) return;
    nt = mama__att_begin(cx, T, causal, &bq);
    if (!nt) {
        mama__ref_attention_forward(be, out, lse, qkv, key_valid, B, T, H, hd, causal, scale, dropout_p,
                                    dropout_seed);
        return;
    }
    ntile = (T + bq - 1) / bq;
    /* one task per head (K^T and V packed once) when there is nothing to
     * mask and a head per thread at least; else per query block */
    pp = !causal && !key_valid && ntile > 1 && B * H >= nt;
    ntask = pp ? B * H : B * H * ntile;
    par = nt > 1 && ntask > 1 && (long long)T * T * H * B * hd > 200000;
    (void)par; /* read only by the OpenMP pragma */
    MAMA__OPS_PRAGMA(omp parallel for schedule(dynamic, 1) if(par) num_threads(nt))
    for (t = 0; t < ntask; t++) {
        int slot = mama__att_slot(), qt, bh = pp ? t : t / ntile, i0, nh = 0, ntp = 0;
        const float *Kh = qkv + (size_t)(bh / H) * T * 3 * H * hd + H * hd + (bh % H) * hd;
        float *kvp = cx->bbuf + (size_t)slot * MAMA__CPU_BSTRIDE;
        if (pp && !mama__att_pack_kv(cx, Kh, Kh + H * hd, 3 * H * hd, T, hd, kvp, &ntp, &nh)) kvp = NULL;
        for (qt = pp ? 0 : t % ntile; qt < (pp ? ntile : t % ntile + 1); qt++) {
            i0 = qt * bq;
            mama__att_forward_block(cx, slot, simd, out, lse, qkv, key_valid, bh / H, bh % H, i0,
                                    mama__ops_min_i(bq, T - i0), T, H, hd, causal, scale, dropout_p, dropout_seed,
                                    pp ? kvp : NULL, ntp, nh);
        }
    }
    mama__gemm_unlock(cx);
}

static void mama__cpu_attention_backward(mama_backend *be, float *dqkv, const float *dout, const float *out,
                                         const float *lse, const float *qkv, const int *key_valid, int B, int T,
                                         int H, int hd, int causal, float scale, float dropout_p,
                                         uint64_t dropout_seed) {
    int simd = mama__ops_have_avx2();
    const mama__cpu_impl *cx = (const mama__cpu_impl *)be->impl;
    int t, ntask = B * H, R, nt, par;
    if (B <= 0 || T <= 0 || H <= 0 || hd <= 0 || dropout_p >= 1.0f) return;
    nt = mama__att_begin(cx, T, causal, &R);
    if (!nt) {
        mama__ref_attention_backward(be, dqkv, dout, out, lse, qkv, key_valid, B, T, H, hd, causal, scale,
                                     dropout_p, dropout_seed);
        return;
    }
    par = nt > 1 && ntask > 1 && (long long)T * T * H * B * hd > 200000;
    (void)par; /* read only by the OpenMP pragma */
    MAMA__OPS_PRAGMA(omp parallel for schedule(dynamic, 1) if(par) num_threads(nt))
    for (t = 0; t < ntask; t++)
        mama__att_backward_head(cx, mama__att_slot(), simd, dqkv, dout, out, lse, qkv, key_valid, t / H, t % H, T,
                                H, hd, causal, scale, dropout_p, dropout_seed, R);
    mama__gemm_unlock(cx);
}
/* ===== pooling, embedding, patches ====================================== */

/* Weighted mean over tokens: y[b,c] = sum_t w[b,t] x[b,t,c] / sum_t w[b,t]
 * (w = mask, or all ones).  A sequence whose weights sum to 0 gives y = 0.
 * Parallel over (b, column chunk) so one long sequence still splits. */
#define MAMA__POOL_CCH 256
static float mama__pool_inv_weight(const float *mask, int b, int T) {
    double s = 0.0;
    int t;
    if (!mask) return T > 0 ? 1.0f / (float)T : 0.0f;
    for (t = 0; t < T; t++) s += mask[(size_t)b * T + t];
    return s != 0.0 ? (float)(1.0 / s) : 0.0f;
}

static void mama__cpu_meanpool_forward(mama_backend *be, float *y, const float *x, const float *mask, int B, int T,
                                       int C) {
    int nch = (C + MAMA__POOL_CCH - 1) / MAMA__POOL_CCH, task;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)B * T * C > MAMA__OPS_MIN_PAR)
    for (task = 0; task < B * nch; task++) {
        int b = task / nch, c0 = (task % nch) * MAMA__POOL_CCH, nc = mama__ops_min_i(MAMA__POOL_CCH, C - c0), t, c;
        float inv = mama__pool_inv_weight(mask, b, T);
        float *yr = y + (size_t)b * C + c0;
        for (c = 0; c < nc; c++) yr[c] = 0.0f;
        for (t = 0; t < T; t++) {
            float wt = mask ? mask[(size_t)b * T + t] : 1.0f;
            const float *xr = x + ((size_t)b * T + t) * C + c0;
            if (wt == 0.0f) continue;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) yr[c] += wt * xr[c];
        }
        for (c = 0; c < nc; c++) yr[c] *= inv;
    }
}

/* dx[b,t,c] += dy[b,c] w[b,t] / sum_t w[b,t] */
static void mama__cpu_meanpool_backward(mama_backend *be, float *dx, const float *dy, const float *mask, int B, int T,
                                        int C) {
    int row;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)B * T * C > MAMA__OPS_MIN_PAR)
    for (row = 0; row < B * T; row++) {
        int b = row / T, c;
        float k = (mask ? mask[row] : 1.0f) * mama__pool_inv_weight(mask, b, T);
        const float *d = dy + (size_t)b * C;
        float *o = dx + (size_t)row * C;
        if (k == 0.0f) continue;
        MAMA__OPS_SIMD
        for (c = 0; c < C; c++) o[c] += k * d[c];
    }
}

/* y[i,:] = table[ids[i],:].  The table's row count is not passed: ids must
 * index it (a negative id yields a zero row and no gradient). */
static void mama__cpu_embedding_forward(mama_backend *be, float *y, const int *ids, const float *table, int n, int C) {
    int i;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)n * C > MAMA__OPS_MIN_PAR)
    for (i = 0; i < n; i++) {
        float *yr = y + (size_t)i * C;
        if (ids[i] < 0) memset(yr, 0, sizeof(float) * (size_t)C);
        else memcpy(yr, table + (size_t)ids[i] * C, sizeof(float) * (size_t)C);
    }
}

/* The same lookup from a half-precision table (dtype MAMA_BF16 or
 * MAMA_F16), each row converted to float. */
static void mama__cpu_embedding_forward_half(mama_backend *be, float *y, const int *ids, const uint16_t *table,
                                             int dtype, int n, int C) {
    int i;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)n * C > MAMA__OPS_MIN_PAR)
    for (i = 0; i < n; i++) {
        float *yr = y + (size_t)i * C;
        if (ids[i] < 0) memset(yr, 0, sizeof(float) * (size_t)C);
        else mama__half_to_f32_n(yr, table + (size_t)ids[i] * C, dtype, (size_t)C);
    }
}

/* dtable[ids[i],:] += dy[i,:].  Repeated ids would race if rows were split
 * over threads, so the columns are split instead. */
static void mama__cpu_embedding_backward(mama_backend *be, float *dtable, const float *dy, const int *ids, int n,
                                         int C) {
    int nch = (C + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH, ch;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)n * C > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, C - c0), i, c;
        for (i = 0; i < n; i++) {
            float *o;
            const float *d = dy + (size_t)i * C + c0;
            if (ids[i] < 0) continue;
            o = dtable + (size_t)ids[i] * C + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) o[c] += d[c];
        }
    }
}

/* Patch extraction: patch (b, gy, gx) becomes row (b*GH + gy)*GW + gx with
 * column (c*P + py)*P + px = images[b, c, gy*P + py, gx*P + px], the layout
 * of a conv weight [D, Cin, P, P] flattened.  Rows/columns of pixels beyond
 * the last whole patch are ignored (as a stride-P conv does). */
static void mama__cpu_im2col_patches(mama_backend *be, float *cols, const float *images, int B, int Cin, int H, int W,
                                     int P) {
    int GH, GW, K, row;
    (void)be;
    if (P <= 0) return;
    GH = H / P;
    GW = W / P;
    K = Cin * P * P;
    MAMA__OPS_PAR_FOR((long long)B * GH * GW * K > MAMA__OPS_MIN_PAR)
    for (row = 0; row < B * GH * GW; row++) {
        int b = row / (GH * GW), g = row % (GH * GW), gy = g / GW, gx = g % GW, c, py;
        float *o = cols + (size_t)row * K;
        for (c = 0; c < Cin; c++)
            for (py = 0; py < P; py++)
                memcpy(o + (c * P + py) * P, images + (((size_t)b * Cin + c) * H + (size_t)gy * P + py) * W + (size_t)gx * P,
                       sizeof(float) * (size_t)P);
    }
}

/* ===== losses =========================================================== */

/* loss[r] = logsumexp(l[r,:]) - l[r, t[r]], probs = softmax(l[r,:]) with the
 * max subtracted first.  A target outside [0, cols) (e.g. -100, PyTorch's
 * ignore_index) gives loss 0 and no gradient; the probs are still written. */
static void mama__cpu_cross_entropy_forward(mama_backend *be, float *loss, float *probs, const float *logits,
                                            const int *targets, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * cols;
        float *pr = probs + (size_t)r * cols;
        float mx = -INFINITY, inv;
        double sum = 0.0;
        int c, t = targets[r];
        for (c = 0; c < cols; c++) mx = l[c] > mx ? l[c] : mx;
        for (c = 0; c < cols; c++) {
            float e = expf(l[c] - mx);
            pr[c] = e;
            sum += e;
        }
        inv = (float)(1.0 / sum);
        for (c = 0; c < cols; c++) pr[c] *= inv;
        if (loss) loss[r] = (t >= 0 && t < cols) ? (float)(log(sum) + mx - l[t]) : 0.0f;
    }
}

/* dlogits[r,c] += dloss[r] (p[r,c] - [c == t[r]]); dloss NULL means 1. */
static void mama__cpu_cross_entropy_backward(mama_backend *be, float *dlogits, const float *probs, const int *targets,
                                             const float *dloss, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        const float *pr = probs + (size_t)r * cols;
        float *d = dlogits + (size_t)r * cols;
        float g = dloss ? dloss[r] : 1.0f;
        int c, t = targets[r];
        if (t < 0 || t >= cols) continue;
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) d[c] += g * pr[c];
        d[t] -= g;
    }
}

/* out[r*nseg + s] = max of row r over columns [seg[s], seg[s+1]) and arg the
 * column holding it (first one on ties).  An empty segment gives out = 0 and
 * arg = -1 (callers skip it in their backward). */
static void mama__cpu_segment_max_forward(mama_backend *be, float *out, int *arg, const float *x, int rows, int cols,
                                          const int *seg, int nseg) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        int s;
        for (s = 0; s < nseg; s++) {
            int a = seg[s] < 0 ? 0 : seg[s], e = seg[s + 1] > cols ? cols : seg[s + 1], c, best = -1;
            float mx = 0.0f;
            for (c = a; c < e; c++)
                if (best < 0 || xr[c] > mx) {
                    mx = xr[c];
                    best = c;
                }
            out[(size_t)r * nseg + s] = mx;
            if (arg) arg[(size_t)r * nseg + s] = best;
        }
    }
}

/* ===== 3.3 optimisers and schedules ===================================== */

/* AdamW exactly as torch.optim.AdamW (amsgrad off):
 *   p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 * t counts this parameter's steps from 1 (t < 1 is treated as 1). */
/* One AdamW update on elements [i0, i1).  The AVX2 path performs the same
 * IEEE operations in the same order as the scalar one (no FMA contraction;
 * sqrt and division are correctly rounded in both), so the two give
 * bit-identical weights and a run's results do not depend on the CPU. */
typedef struct mama__adamw_consts {
    float beta1, beta2, omb1, omb2, decay, step_size, bc2_sqrt, eps;
} mama__adamw_consts;

static void mama__adamw_scalar(const mama__adamw_consts *k, float *p, const float *g, float *m, float *v,
                               long long i0, long long i1) {
    long long i;
    for (i = i0; i < i1; i++) {
        float gi = g[i], mi, vi;
        mi = k->beta1 * m[i] + k->omb1 * gi;
        vi = k->beta2 * v[i] + k->omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * k->decay - k->step_size * mi / (sqrtf(vi) / k->bc2_sqrt + k->eps);
    }
}

#if defined(MAMA_X86_SIMD)
__attribute__((target("avx2"))) static void mama__adamw_avx2(const mama__adamw_consts *k, float *p, const float *g,
                                                               float *m, float *v, long long i0, long long i1) {
    const __m256 b1 = _mm256_set1_ps(k->beta1), b2 = _mm256_set1_ps(k->beta2);
    const __m256 o1 = _mm256_set1_ps(k->omb1), o2 = _mm256_set1_ps(k->omb2);
    const __m256 dc = _mm256_set1_ps(k->decay), st = _mm256_set1_ps(k->step_size);
    const __m256 bs = _mm256_set1_ps(k->bc2_sqrt), ep = _mm256_set1_ps(k->eps);
    long long i = i0;
    for (; i + 8 <= i1; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(o1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(o2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bs), ep);
        __m256 upd = _mm256_div_ps(_mm256_mul_ps(st, mi), den);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), dc), upd));
    }
    mama__adamw_scalar(k, p, g, m, v, i, i1);
}
#endif

static void mama__adamw_chunk(const mama__adamw_consts *k, float *p, const float *g, float *m, float *v,
                              long long i0, long long i1) {
#if defined(MAMA_X86_SIMD)
    if (mama__ops_have_avx2()) {
        mama__adamw_avx2(k, p, g, m, v, i0, i1);
        return;
    }
#endif
    mama__adamw_scalar(k, p, g, m, v, i0, i1);
}

static void mama__cpu_adamw_step(mama_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                                 float beta1, float beta2, float eps, float weight_decay, int t) {
    long long i, nn = (long long)n;
    double bc1, bc2;
    float step_size, bc2_sqrt, decay, omb1 = 1.0f - beta1, omb2 = 1.0f - beta2;
    (void)be;
    if (t < 1) t = 1;
    bc1 = 1.0 - pow((double)beta1, (double)t);
    bc2 = 1.0 - pow((double)beta2, (double)t);
    step_size = (float)(lr / bc1);
    bc2_sqrt = (float)sqrt(bc2);
    decay = 1.0f - lr * weight_decay;
    {
        mama__adamw_consts k;
        k.beta1 = beta1; k.beta2 = beta2; k.omb1 = omb1; k.omb2 = omb2;
        k.decay = decay; k.step_size = step_size; k.bc2_sqrt = bc2_sqrt; k.eps = eps;
        if (nn <= MAMA__OPS_MIN_PAR) {
            mama__adamw_chunk(&k, p, g, m, v, 0, nn);
        } else {
            int nch = (int)((nn + 65535) / 65536), ch;
            MAMA__OPS_PAR_FOR(1)
            for (ch = 0; ch < nch; ch++) {
                long long i0 = (long long)ch * 65536, i1 = i0 + 65536 < nn ? i0 + 65536 : nn;
                mama__adamw_chunk(&k, p, g, m, v, i0, i1);
            }
        }
    }
    (void)i;
}

/* torch.optim.SGD (dampening 0, no Nesterov): d = g + wd p;
 * buf = d on the first step, else momentum buf + d;  p -= lr buf.
 * momentum == 0 (or buf NULL) is plain SGD. */
static void mama__cpu_sgd_step(mama_backend *be, float *p, const float *g, float *buf, size_t n, float lr,
                               float momentum, float weight_decay, int first) {
    long long i, nn = (long long)n;
    int use_buf = momentum != 0.0f && buf != NULL;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) {
        float d = g[i] + weight_decay * p[i];
        if (use_buf) {
            d = first ? d : momentum * buf[i] + d;
            buf[i] = d;
        }
        p[i] -= lr * d;
    }
}

/* sum of squares in double; a NaN or Inf anywhere makes the result NaN/Inf */
static double mama__cpu_sum_squares(mama_backend *be, const float *x, size_t n) {
    long long i, nn = (long long)n;
    double s = 0.0;
    if (be) be->host_syncs++;
    MAMA__OPS_PRAGMA(omp parallel for schedule(static) reduction(+:s) if(nn > MAMA__OPS_MIN_PAR))
    for (i = 0; i < nn; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* Linear warm-up then half-cosine decay (SPEC A.5):
 *   step < warmup:  floor + (peak - floor) * step / warmup
 *   else:           floor + (peak - floor) * (1 + cos(pi (step - warmup) / (total - warmup))) / 2
 *   step >= total:  floor. */
MAMA_API float mama_lr_cosine(long step, long warmup, long total, float lr_peak, float lr_floor) {
    double span = (double)lr_peak - (double)lr_floor;
    if (step < 0) step = 0;
    if (step < warmup) return (float)(lr_floor + span * (double)step / (double)warmup);
    if (step >= total) return lr_floor;
    return (float)(lr_floor +
                   span * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)(step - warmup) / (double)(total - warmup))));
}

/* torch.nn.utils.clip_grad_norm_: norm = ||grad||_2 (double sums); when it
 * exceeds max_norm, grad *= max_norm / (norm + 1e-6).  A non-finite norm is
 * returned without touching the gradient, so the caller can skip the step. */
MAMA_API double mama_clip_grad_norm(mama_backend *be, float *grad, size_t n, float max_norm) {
    double norm = sqrt(be ? be->sum_squares(be, grad, n) : mama__cpu_sum_squares(be, grad, n));
    if (max_norm > 0.0f && norm == norm && norm <= DBL_MAX) {
        double coef = (double)max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            if (be) be->scale(be, grad, (float)coef, n);
            else mama__cpu_scale(be, grad, (float)coef, n);
        }
    }
    return norm;
}

/* ---- 3.4 Small ops: the ViT token assembly.  The other small ops of the
 * losses (segment-max scatter, transpose, diagonal mask, dot product) are
 * not hot, and their plainest form is the reference backend's (3.6): the
 * CPU table points at those functions instead of a second copy. */
/* ViT token assembly: position embeddings go to cls and patches only; the
 * registers are inserted after (DINOv2 with registers). */
static void mama__cpu_vit_tokens_forward(mama_backend *be, float *x, const float *patches, const float *cls,
                                         const float *reg, const float *pos, int B, int N, int R, int D) {
    int b, t, c, T = 1 + R + N;
    (void)be;
    for (b = 0; b < B; b++) {
        float *xb = x + (size_t)b * T * D;
        for (c = 0; c < D; c++) xb[c] = cls[c] + pos[c];
        for (t = 0; t < R; t++) memcpy(xb + (size_t)(1 + t) * D, reg + (size_t)t * D, sizeof(float) * (size_t)D);
        for (t = 0; t < N; t++) {
            float *row = xb + (size_t)(1 + R + t) * D;
            const float *p = patches + ((size_t)b * N + t) * D, *pe = pos + (size_t)(1 + t) * D;
            for (c = 0; c < D; c++) row[c] = p[c] + pe[c];
        }
    }
}
static void mama__cpu_vit_tokens_backward(mama_backend *be, float *dpatches, float *dcls, float *dreg, float *dpos,
                                          const float *dx, int B, int N, int R, int D) {
    int b, t, c, T = 1 + R + N;
    (void)be;
    for (b = 0; b < B; b++) {
        const float *db = dx + (size_t)b * T * D;
        for (c = 0; c < D; c++) {
            if (dcls) dcls[c] += db[c];
            if (dpos) dpos[c] += db[c];
        }
        if (dreg)
            for (t = 0; t < R; t++)
                for (c = 0; c < D; c++) dreg[(size_t)t * D + c] += db[(size_t)(1 + t) * D + c];
        for (t = 0; t < N; t++) {
            const float *row = db + (size_t)(1 + R + t) * D;
            float *dp = dpatches + ((size_t)b * N + t) * D;
            for (c = 0; c < D; c++) dp[c] += row[c];
            if (dpos)
                for (c = 0; c < D; c++) dpos[(size_t)(1 + t) * D + c] += row[c];
        }
    }
}

/* ---- 3.5 The CPU table.  Device memory is host memory, so copies are memcpy. */
static mama_status mama__cpu_zero(mama_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes && !dst) return MAMA_FAIL(MAMA_ERR_INVALID, "cpu zero of %zu bytes at NULL", bytes);
    if (bytes >= ((size_t)1 << 20)) {
        /* large buffers (gradients, activation gradients): one memset per
         * 256 KB chunk across the threads; a single thread cannot reach the
         * memory bandwidth and would leave the others waiting */
        long long nch = (long long)((bytes + 262143) / 262144), ch;
        MAMA__OPS_PAR_FOR(1)
        for (ch = 0; ch < nch; ch++) {
            size_t o = (size_t)ch * 262144, len = bytes - o < 262144 ? bytes - o : 262144;
            memset((char *)dst + o, 0, len);
        }
    } else if (bytes) {
        memset(dst, 0, bytes);
    }
    return MAMA_OK;
}

/* The table is filled member by member (not with a positional initialiser)
 * so that it reads the same in C and C++ and survives reordering.  Each
 * instance carries its own copy (there is no static table). */
static void mama__cpu_destroy(mama_backend *be);
/* shared with the reference backend (section 3.6) */
static mama_status mama__ref_alloc(mama_backend *be, void **ptr, size_t bytes);
static mama_status mama__ref_copy(mama_backend *be, void *dst, const void *src, size_t bytes);
static void mama__ref_free(mama_backend *be, void *ptr);
static mama_status mama__ref_sync(mama_backend *be);
static void mama__ref_fill_device_slots(mama_backend *t);
static void mama__ref_segment_max_backward(mama_backend *be, float *dx, const float *dout, const int *arg, int rows,
                                           int cols, int nseg);
static void mama__ref_transpose(mama_backend *be, float *y, const float *x, int rows, int cols);
static void mama__ref_fill_diagonal(mama_backend *be, float *x, int n, int ld, float value);
static double mama__ref_dot_op(mama_backend *be, const float *a, const float *b, size_t n);
static void mama__cpu_fill_table(mama_backend *t, mama__cpu_impl *cx) {
    t->name = "cpu";
    t->impl = cx;
    t->alloc = mama__ref_alloc;
    t->free = mama__ref_free;
    t->copy = mama__ref_copy;
    t->zero = mama__cpu_zero;
    t->sync = mama__ref_sync;
    t->gemm = mama__cpu_gemm;
    t->gemm_batched = mama__cpu_gemm_batched;
    t->bias_add_forward = mama__cpu_bias_add_forward;
    t->bias_add_backward = mama__cpu_bias_add_backward;
    t->add = mama__cpu_add;
    t->accumulate = mama__cpu_accumulate;
    t->scale = mama__cpu_scale;
    t->gelu_forward = mama__cpu_gelu_forward;
    t->gelu_backward = mama__cpu_gelu_backward;
    t->relu_forward = mama__cpu_relu_forward;
    t->relu_backward = mama__cpu_relu_backward;
    t->dropout_forward = mama__cpu_dropout_forward;
    t->dropout_backward = mama__cpu_dropout_backward;
    t->layerscale_forward = mama__cpu_layerscale_forward;
    t->layerscale_backward = mama__cpu_layerscale_backward;
    t->layernorm_forward = mama__cpu_layernorm_forward;
    t->layernorm_backward = mama__cpu_layernorm_backward;
    t->batchnorm_forward = mama__cpu_batchnorm_forward;
    t->batchnorm_backward = mama__cpu_batchnorm_backward;
    t->l2norm_forward = mama__cpu_l2norm_forward;
    t->l2norm_backward = mama__cpu_l2norm_backward;
    t->attention_forward = mama__cpu_attention_forward;
    t->attention_backward = mama__cpu_attention_backward;
    t->meanpool_forward = mama__cpu_meanpool_forward;
    t->meanpool_backward = mama__cpu_meanpool_backward;
    t->embedding_forward = mama__cpu_embedding_forward;
    t->embedding_backward = mama__cpu_embedding_backward;
    t->gemm_half = mama__cpu_gemm_half;
    t->embedding_forward_half = mama__cpu_embedding_forward_half;
    t->im2col_patches = mama__cpu_im2col_patches;
    t->vit_tokens_forward = mama__cpu_vit_tokens_forward;
    t->vit_tokens_backward = mama__cpu_vit_tokens_backward;
    t->cross_entropy_forward = mama__cpu_cross_entropy_forward;
    t->cross_entropy_backward = mama__cpu_cross_entropy_backward;
    t->segment_max_forward = mama__cpu_segment_max_forward;
    t->segment_max_backward = mama__ref_segment_max_backward;
    t->transpose = mama__ref_transpose;
    t->fill_diagonal = mama__ref_fill_diagonal;
    t->dot = mama__ref_dot_op;
    t->adamw_step = mama__cpu_adamw_step;
    t->sgd_step = mama__cpu_sgd_step;
    t->sum_squares = mama__cpu_sum_squares;
    t->destroy = mama__cpu_destroy;
    mama__ref_fill_device_slots(t);
    t->linear_fused = mama__cpu_linear_fused;
}

static void mama__cpu_destroy(mama_backend *be) {
    mama__cpu_impl *cx = be ? (mama__cpu_impl *)be->impl : NULL;
    if (cx) {
        mama_free(cx->abuf);
        mama_free(cx->bbuf);
        mama_free(cx->sbuf);
        mama_free(cx);
    }
    mama_free(be);
}

/* The instance's scratch: nslots slots of packing buffers and attention
 * scores, allocated (not touched: pages are backed on first use) once. */
MAMA_API mama_status mama_cpu_backend_create(mama_backend **out) {
    mama_backend *t = NULL;
    mama__cpu_impl *cx = NULL;
    int nslots = 1;
    if (!out) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_cpu_backend_create: out is NULL");
    *out = NULL;
#ifdef _OPENMP
    nslots = omp_get_max_threads();
#endif
    if (nslots > MAMA_GEMM_MAX_THREADS) nslots = MAMA_GEMM_MAX_THREADS;
    if (nslots < 1) nslots = 1;
    MAMA_TRY(mama_calloc((void **)&t, sizeof *t, "CPU backend table"));
    if (mama_calloc((void **)&cx, sizeof *cx, "CPU backend state") != MAMA_OK ||
        mama_alloc((void **)&cx->abuf, sizeof(float) * MAMA__CPU_ASTRIDE * (size_t)nslots,
                   "CPU backend GEMM packing buffers (A)") != MAMA_OK ||
        mama_alloc((void **)&cx->bbuf, sizeof(float) * MAMA__CPU_BSTRIDE * (size_t)nslots,
                   "CPU backend GEMM packing buffers (B)") != MAMA_OK ||
        mama_alloc((void **)&cx->sbuf, sizeof(float) * MAMA__CPU_SSTRIDE * (size_t)nslots,
                   "CPU backend attention scores") != MAMA_OK) {
        t->impl = cx;
        mama__cpu_destroy(t);
        return MAMA_ERR_NOMEM;
    }
    cx->ki = mama__gemm_dispatch();
    cx->att_gemm = 1;
    cx->f16c = mama__gemm_cpu_has_f16c();
    cx->bf16dot = mama__gemm_cpu_bf16dot() == 2;
    cx->nslots = nslots;
    cx->lock = 0;
    mama__cpu_fill_table(t, cx);
    *out = t;
    return MAMA_OK;
}

/* The instance behind a CPU backend, NULL for any other backend. */
static mama__cpu_impl *mama__cpu_of(const mama_backend *be) {
    return be && be->destroy == mama__cpu_destroy ? (mama__cpu_impl *)be->impl : NULL;
}

MAMA_API const char *mama_cpu_backend_kernel_name(const mama_backend *be) {
    const mama__cpu_impl *cx = mama__cpu_of(be);
    if (!cx) return NULL;
#ifdef MAMA_USE_CBLAS
    return "cblas";
#else
    return cx->ki->name;
#endif
}

MAMA_API int mama_cpu_backend_force_kernel(mama_backend *be, const char *name) {
    mama__cpu_impl *cx = mama__cpu_of(be);
    int k;
    if (!cx) return 0;
    if (!name || !name[0] || strcmp(name, "auto") == 0) {
        cx->ki = mama__gemm_dispatch();
        return 1;
    }
    for (k = 0; k < 3; k++)
        if (strcmp(name, mama__gemm_kernels[k].name) == 0 && mama__gemm_kernels[k].kern &&
            mama__gemm_cpu_runs(k)) {
            cx->ki = &mama__gemm_kernels[k];
            return 1;
        }
    return 0;
}

MAMA_API int mama_cpu_backend_force_bf16(mama_backend *be, const char *path) {
    mama__cpu_impl *cx = mama__cpu_of(be);
    int has = mama__gemm_cpu_bf16dot();
    if (!cx) return 0;
    if (!path || !path[0] || !strcmp(path, "auto")) cx->bf16dot = has == 2;
    else if (!strcmp(path, "widen")) cx->bf16dot = 0;
    else if (!strcmp(path, "dot") && has) cx->bf16dot = 1;
    else return 0;
    return 1;
}

MAMA_API const char *mama_cpu_backend_bf16_path(const mama_backend *be) {
    const mama__cpu_impl *cx = mama__cpu_of(be);
    return !cx ? NULL : cx->bf16dot ? "dot" : "widen";
}

MAMA_API int mama_cpu_backend_force_attention(mama_backend *be, const char *schedule) {
    mama__cpu_impl *cx = mama__cpu_of(be);
    if (!cx) return 0;
    if (!schedule || !schedule[0] || !strcmp(schedule, "auto") || !strcmp(schedule, "gemm")) cx->att_gemm = 1;
    else if (!strcmp(schedule, "reference")) cx->att_gemm = 0;
    else return 0;
    return 1;
}

MAMA_API int mama_cpu_backend_threads(const mama_backend *be) {
    const mama__cpu_impl *cx = mama__cpu_of(be);
    return cx ? cx->nslots : 0;
}

MAMA_API void mama_backend_free(mama_backend *be) {
    if (be && be->destroy) be->destroy(be);
}

/* ===== 3.6 The reference backend: every op as the plainest correct C =====
 *
 * The same table as the CPU backend (sections 3.1-3.5), written a second
 * time for reading and for checking: scalar loops in the order the math is
 * written, no SIMD, no threads, no blocking, no scratch memory; sums and
 * dot products are accumulated in double wherever one local holds them.  Each forward sits directly above its
 * backward with the math in a comment (as llm.c's train_gpt2.c does), so
 * this block is the shortest complete statement of what every kernel of the
 * library computes; start reading the method here (README "A tour of the
 * method").  It is also the tests' oracle: tests/test_reference.c checks
 * the CPU backend against it op by op and on a whole training step, and a
 * CUDA run can be checked the same way.  The semantics are exactly the CPU
 * backend's (accumulating backwards, the dropout hash indices, lse layout,
 * negated BatchNorm rstd in eval mode, tie rules ...); only the rounding
 * differs.  The ops where nothing faster is worth having (alloc, free,
 * the copies, sync, segment-max backward, transpose, diagonal fill, dot)
 * are this code in the CPU table too.  It is slow (a naive triple-loop GEMM): `--device reference`
 * suits a few steps of the tiny config, not training.
 * ------------------------------------------------------------------------- */

/* ---- memory: device memory is host memory ---- */
static mama_status mama__ref_alloc(mama_backend *be, void **ptr, size_t bytes) {
    return mama_alloc(ptr, bytes ? bytes : 1, be && be->name ? be->name : "backend buffer");
}
static void mama__ref_free(mama_backend *be, void *ptr) {
    (void)be;
    mama_free(ptr);
}
/* to_device, to_host and copy: regions may overlap (memmove) */
static mama_status mama__ref_copy(mama_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src))
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s copy of %zu bytes with a NULL pointer", be ? be->name : "backend", bytes);
    if (bytes) memmove(dst, src, bytes);
    return MAMA_OK;
}
static mama_status mama__ref_zero(mama_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes && !dst) return MAMA_FAIL(MAMA_ERR_INVALID, "reference zero of %zu bytes at NULL", bytes);
    if (bytes) memset(dst, 0, bytes);
    return MAMA_OK;
}
static mama_status mama__ref_sync(mama_backend *be) {
    be->host_syncs++;
    return MAMA_OK;
}
/* the synchronous copies count as host synchronisations (1.5), copy does not */
static mama_status mama__ref_to_device(mama_backend *be, void *dst, const void *src, size_t bytes) {
    be->host_syncs++;
    return mama__ref_copy(be, dst, src, bytes);
}
static mama_status mama__ref_to_host(mama_backend *be, void *dst, const void *src, size_t bytes) {
    be->host_syncs++;
    return mama__ref_copy(be, dst, src, bytes);
}
/* ---- device scalars (1.5), also the CPU table's: each is the host
 * arithmetic section 6 did before, so the CPU step keeps its bits ---- */
static void mama__ref_reduce_acc(mama_backend *be, double *acc, const float *a, const float *b, size_t n,
                                 double div) {
    double s = 0.0;
    size_t i;
    (void)be;
    if (b) for (i = 0; i < n; i++) s += (double)a[i] * b[i];
    else for (i = 0; i < n; i++) s += a[i];
    acc[0] += s / div;
}
static void mama__ref_acc_to_scalar(mama_backend *be, float *y, const double *acc) {
    (void)be;
    y[0] += (float)acc[0];
}
static void mama__ref_scale_exp(mama_backend *be, float *y, const float *log_s, size_t n) {
    be->scale(be, y, expf(log_s[0]), n);
}
static void mama__ref_gemm_exp_alpha(mama_backend *be, int ta, int tb, int M, int N, int K, const float *log_alpha,
                                     const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    be->gemm(be, ta, tb, M, N, K, expf(log_alpha[0]), A, lda, B, ldb, beta, C, ldc);
}
/* the memory slots and those of 1.5's step on the device (both tables) */
static void mama__ref_fill_device_slots(mama_backend *t) {
    t->to_device = mama__ref_to_device;
    t->to_host = mama__ref_to_host;
    t->host_alloc = mama__ref_alloc;
    t->host_free = mama__ref_free;
    t->to_device_async = mama__ref_copy;
    t->reduce_acc = mama__ref_reduce_acc;
    t->acc_to_scalar = mama__ref_acc_to_scalar;
    t->scale_exp = mama__ref_scale_exp;
    t->gemm_exp_alpha = mama__ref_gemm_exp_alpha;
}

/* ---- matrix multiply ----
 * C[i,j] = alpha * sum_k op(A)[i,k] op(B)[k,j] + beta * C[i,j]
 *   op(A)[i,k] = trans_a ? A[k*lda + i] : A[i*lda + k]   (M x K)
 *   op(B)[k,j] = trans_b ? B[j*ldb + k] : B[k*ldb + j]   (K x N)
 * beta == 0 never reads C (BLAS: NaN there is ignored); alpha == 0 or K <= 0
 * leaves C = beta C.  B is float32 (B != NULL) or half precision (Bh, dtype
 * bdt: MAMA_F16, else bfloat16), widened exactly to float32. */
static float mama__ref_half(uint16_t h, int dtype) {
    return dtype == MAMA_F16 ? mama_f16_to_f32(h) : mama_bf16_to_f32(h);
}
static void mama__ref_gemm_any(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                               const float *B, const uint16_t *Bh, int bdt, int ldb, float beta, float *C, int ldc) {
    int i, j, k;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            float *c = C + (size_t)i * ldc + j;
            double acc = 0.0, ab;
            for (k = 0; k < K; k++) {
                size_t ia = ta ? (size_t)k * lda + i : (size_t)i * lda + k;
                size_t ib = tb ? (size_t)j * ldb + k : (size_t)k * ldb + j;
                acc += (double)A[ia] * (double)(Bh ? mama__ref_half(Bh[ib], bdt) : B[ib]);
            }
            ab = alpha == 0.0f ? 0.0 : (double)alpha * acc;
            *c = beta == 0.0f ? (float)ab : (float)(ab + (double)beta * *c);
        }
}
static void mama__ref_gemm(mama_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    (void)be;
    mama__ref_gemm_any(trans_a, trans_b, M, N, K, alpha, A, lda, B, NULL, 0, ldb, beta, C, ldc);
}
/* matrix b of the batch starts at A + b*sa, B + b*sb, C + b*sc */
static void mama__ref_gemm_batched(mama_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                                   const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                                   float beta, float *C, int ldc, long long sc, int batch) {
    int b;
    (void)be;
    for (b = 0; b < batch; b++)
        mama__ref_gemm_any(trans_a, trans_b, M, N, K, alpha, A + b * sa, lda, B + b * sb, NULL, 0, ldb, beta,
                           C + b * sc, ldc);
}
static void mama__ref_gemm_half(mama_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                                const float *A, int lda, const uint16_t *B, int ldb, int b_dtype, float beta,
                                float *C, int ldc) {
    (void)be;
    mama__ref_gemm_any(trans_a, trans_b, M, N, K, alpha, A, lda, NULL, B, b_dtype, ldb, beta, C, ldc);
}

/* ---- elementwise ---- */
/* forward: y[r,c] += b[c];  backward: db[c] += sum_r dy[r,c] */
static void mama__ref_bias_add_forward(mama_backend *be, float *y, const float *b, int rows, int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) y[(size_t)r * cols + c] += b[c];
}
static void mama__ref_bias_add_backward(mama_backend *be, float *db, const float *dy, int rows, int cols) {
    int r, c;
    (void)be;
    for (c = 0; c < cols; c++) {
        double s = 0.0;
        for (r = 0; r < rows; r++) s += dy[(size_t)r * cols + c];
        db[c] += (float)s;
    }
}
/* y = a + b;  y += alpha x;  y *= s */
static void mama__ref_add(mama_backend *be, float *y, const float *a, const float *b, size_t n) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) y[i] = a[i] + b[i];
}
static void mama__ref_accumulate(mama_backend *be, float *y, const float *x, float alpha, size_t n) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) y[i] += alpha * x[i];
}
static void mama__ref_scale(mama_backend *be, float *y, float s, size_t n) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) y[i] *= s;
}

/* GELU, in double with libm's erf and tanh.
 * exact:  y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),  dy/dx = Phi(x) + x phi(x),
 *         phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 * tanh (GPT-2):  u = sqrt(2/pi) (x + 0.044715 x^3),  y = 0.5 x (1 + tanh u),
 *         dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * backward: dx += dy * dy/dx */
static double mama__ref_gelu(double x, int tanh_approx, double *deriv) {
    const double k = 0.79788456080286535588, c = 0.044715; /* sqrt(2/pi) */
    if (tanh_approx) {
        double t = tanh(k * (x + c * x * x * x));
        *deriv = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * c * x * x);
        return 0.5 * x * (1.0 + t);
    } else {
        double cdf = 0.5 * (1.0 + erf(x * 0.70710678118654752440));
        *deriv = cdf + x * exp(-0.5 * x * x) * 0.39894228040143267794;
        return x * cdf;
    }
}
static void mama__ref_gelu_forward(mama_backend *be, float *y, const float *x, size_t n, int tanh_approx) {
    size_t i;
    double d;
    (void)be;
    for (i = 0; i < n; i++) y[i] = (float)mama__ref_gelu(x[i], tanh_approx, &d);
}
static void mama__ref_gelu_backward(mama_backend *be, float *dx, const float *dy, const float *x, size_t n,
                                    int tanh_approx) {
    size_t i;
    double d;
    (void)be;
    for (i = 0; i < n; i++) {
        mama__ref_gelu(x[i], tanh_approx, &d);
        dx[i] += (float)(dy[i] * d);
    }
}
/* ReLU: y = max(x, 0);  dx += dy where y > 0 (the output decides) */
static void mama__ref_relu_forward(mama_backend *be, float *y, const float *x, size_t n) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
static void mama__ref_relu_backward(mama_backend *be, float *dx, const float *dy, const float *y, size_t n) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++)
        if (y[i] > 0.0f) dx[i] += dy[i];
}
/* Inverted dropout: keep_i = mama_hash_uniform(seed, i) >= p,
 *   y_i = keep_i x_i / (1 - p),  dx_i += keep_i dy_i / (1 - p).
 * p <= 0: y = x (dx += dy);  p >= 1: y = 0 (no gradient). */
static float mama__ref_keep(uint64_t seed, uint64_t i, float p) {
    if (p <= 0.0f) return 1.0f;
    if (p >= 1.0f) return 0.0f;
    return mama_hash_uniform(seed, i) >= p ? 1.0f / (1.0f - p) : 0.0f;
}
static void mama__ref_dropout_forward(mama_backend *be, float *y, const float *x, size_t n, float p, uint64_t seed) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) {
        float z = mama__ref_keep(seed, i, p);
        y[i] = z != 0.0f ? x[i] * z : 0.0f;
    }
}
static void mama__ref_dropout_backward(mama_backend *be, float *dx, const float *dy, size_t n, float p,
                                       uint64_t seed) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) {
        float z = mama__ref_keep(seed, i, p);
        if (z != 0.0f) dx[i] += dy[i] * z;
    }
}
/* LayerScale: y[r,c] = x[r,c] gamma[c];
 * backward: dx += dy gamma,  dgamma[c] += sum_r dy[r,c] x[r,c]  (either may be NULL) */
static void mama__ref_layerscale_forward(mama_backend *be, float *y, const float *x, const float *gamma, int rows,
                                         int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) y[(size_t)r * cols + c] = x[(size_t)r * cols + c] * gamma[c];
}
static void mama__ref_layerscale_backward(mama_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                                          const float *gamma, int rows, int cols) {
    int r, c;
    (void)be;
    for (c = 0; c < cols; c++) {
        double s = 0.0;
        for (r = 0; r < rows; r++) {
            size_t i = (size_t)r * cols + c;
            if (dx) dx[i] += dy[i] * gamma[c];
            s += (double)dy[i] * x[i];
        }
        if (dgamma) dgamma[c] += (float)s;
    }
}

/* ---- normalisation ---- */
/* LayerNorm of each row (biased variance, as PyTorch):
 *   mean = sum_c x / C,  var = sum_c (x - mean)^2 / C,  rstd = 1 / sqrt(var + eps)
 *   xhat = (x - mean) rstd,  y = xhat w + b   (w, b may be NULL; mean, rstd saved if given)
 * backward, g = dy w (gradient at xhat):
 *   dx += rstd (g - mean_c(g) - xhat mean_c(g xhat))
 *   dw += sum_rows dy xhat,  db += sum_rows dy   (dx, dw, db may be NULL) */
static void mama__ref_layernorm_forward(mama_backend *be, float *y, float *mean, float *rstd, const float *x,
                                        const float *w, const float *b, int rows, int cols, float eps) {
    int r, c;
    (void)be;
    if (cols <= 0) return;
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        double m = 0.0, v = 0.0, rs;
        for (c = 0; c < cols; c++) m += xr[c];
        m /= cols;
        for (c = 0; c < cols; c++) v += (xr[c] - m) * (xr[c] - m);
        v /= cols;
        rs = 1.0 / sqrt(v + eps);
        for (c = 0; c < cols; c++)
            y[(size_t)r * cols + c] = (float)((xr[c] - m) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f));
        if (mean) mean[r] = (float)m;
        if (rstd) rstd[r] = (float)rs;
    }
}
static void mama__ref_layernorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const float *mean, const float *rstd,
                                         int rows, int cols) {
    int r, c;
    (void)be;
    if (cols <= 0) return;
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *d = dy + (size_t)r * cols;
        double gm = 0.0, gxm = 0.0;
        for (c = 0; c < cols; c++) {
            double xhat = (xr[c] - mean[r]) * (double)rstd[r], g = d[c] * (double)(w ? w[c] : 1.0f);
            gm += g;
            gxm += g * xhat;
        }
        gm /= cols;
        gxm /= cols;
        if (dx)
            for (c = 0; c < cols; c++) {
                double xhat = (xr[c] - mean[r]) * (double)rstd[r], g = d[c] * (double)(w ? w[c] : 1.0f);
                dx[(size_t)r * cols + c] += (float)(rstd[r] * (g - gm - xhat * gxm));
            }
    }
    for (c = 0; c < cols; c++) { /* the parameters: column sums over the rows */
        double sw = 0.0, sb = 0.0;
        for (r = 0; r < rows; r++) {
            size_t i = (size_t)r * cols + c;
            sw += dy[i] * ((x[i] - mean[r]) * (double)rstd[r]);
            sb += dy[i];
        }
        if (dw) dw[c] += (float)sw;
        if (db) db[c] += (float)sb;
    }
}
/* BatchNorm per column (channel) over all rows, PyTorch semantics.
 * train (or no running statistics given): batch statistics
 *   mean = sum_r x / n,  var = sum_r (x - mean)^2 / n  (biased: normalises)
 *   with running stats and train: running = (1 - momentum) running + momentum batch,
 *   using the UNBIASED variance var n / (n - 1) (n = 1: the biased one)
 * eval with running stats: mean = running_mean, var = running_var; nothing updated
 *   rstd = 1 / sqrt(var + eps),  y = (x - mean) rstd w + b   (w, b may be NULL)
 * saved: mean, and rstd, stored NEGATED when train == 0 (the backward's sign flag) */
static void mama__ref_batchnorm_forward(mama_backend *be, float *y, float *mean, float *rstd, float *running_mean,
                                        float *running_var, const float *x, const float *w, const float *b, int rows,
                                        int cols, float eps, float momentum, int train) {
    int r, c;
    (void)be;
    if (rows <= 0 || cols <= 0) return;
    for (c = 0; c < cols; c++) {
        double mu = 0.0, var = 0.0, rs;
        if (train || !running_mean || !running_var) {
            for (r = 0; r < rows; r++) mu += x[(size_t)r * cols + c];
            mu /= rows;
            for (r = 0; r < rows; r++) var += (x[(size_t)r * cols + c] - mu) * (x[(size_t)r * cols + c] - mu);
            if (train && running_mean && running_var) {
                double unbiased = rows > 1 ? var / (rows - 1) : var / rows;
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
                running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
            }
            var /= rows;
        } else {
            mu = running_mean[c];
            var = running_var[c];
        }
        mu = (float)mu; /* the saved mean is what the backward will see */
        rs = (float)(1.0 / sqrt(var + eps));
        for (r = 0; r < rows; r++)
            y[(size_t)r * cols + c] =
                (float)((x[(size_t)r * cols + c] - mu) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f));
        if (mean) mean[c] = (float)mu;
        if (rstd) rstd[c] = (float)(train ? rs : -rs);
    }
}
/* backward, xhat = (x - mean) |rstd|:
 *   train (rstd > 0), the full gradient through the batch statistics:
 *     dx += w rstd (dy - mean_rows(dy) - xhat mean_rows(dy xhat))
 *   eval (rstd < 0), the statistics are constants:  dx += dy w |rstd|
 *   both: dw += sum_rows dy xhat,  db += sum_rows dy   (dx, dw, db may be NULL) */
static void mama__ref_batchnorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const float *mean, const float *rstd,
                                         int rows, int cols) {
    int r, c;
    (void)be;
    if (rows <= 0 || cols <= 0) return;
    for (c = 0; c < cols; c++) {
        int eval = rstd[c] < 0.0f;
        double rs = eval ? -rstd[c] : rstd[c], sd = 0.0, sdx = 0.0, k1, k2, wr = (w ? w[c] : 1.0f) * rs;
        for (r = 0; r < rows; r++) {
            size_t i = (size_t)r * cols + c;
            sd += dy[i];
            sdx += dy[i] * ((x[i] - mean[c]) * rs);
        }
        if (dw) dw[c] += (float)sdx;
        if (db) db[c] += (float)sd;
        k1 = eval ? 0.0 : sd / rows;
        k2 = eval ? 0.0 : sdx / rows;
        if (dx)
            for (r = 0; r < rows; r++) {
                size_t i = (size_t)r * cols + c;
                dx[i] += (float)(wr * (dy[i] - k1 - (x[i] - mean[c]) * rs * k2));
            }
    }
}
/* L2 normalisation per row (F.normalize): n = ||x||, y = x / max(n, 1e-12), norm = n;
 * backward: n > 1e-12:  dx += (dy - y (dy . y)) / n;  else dx += dy / 1e-12 */
static void mama__ref_l2norm_forward(mama_backend *be, float *y, float *norm, const float *x, int rows, int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        double s = 0.0, n, den;
        for (c = 0; c < cols; c++) s += (double)xr[c] * xr[c];
        n = sqrt(s);
        den = n > 1e-12f ? n : 1e-12f;
        for (c = 0; c < cols; c++) y[(size_t)r * cols + c] = (float)(xr[c] / den);
        if (norm) norm[r] = (float)n;
    }
}
static void mama__ref_l2norm_backward(mama_backend *be, float *dx, const float *dy, const float *y, const float *norm,
                                      int rows, int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++) {
        const float *d = dy + (size_t)r * cols, *yr = y + (size_t)r * cols;
        double dot = 0.0, n = norm[r] > 1e-12f ? norm[r] : 1e-12f;
        if (norm[r] > 1e-12f)
            for (c = 0; c < cols; c++) dot += (double)d[c] * yr[c];
        for (c = 0; c < cols; c++) dx[(size_t)r * cols + c] += (float)((d[c] - yr[c] * dot) / n);
    }
}

/* ---- attention ----
 * qkv row b*T+i holds (q | k | v), each D = H*hd wide, head h at columns
 * h*hd..; out row b*T+i, columns h*hd..; lse[(b*H + h)*T + i].
 * Query i of (b, h) sees key j iff (causal ? j <= i : 1) and key_valid[b*T+j]
 * (when key_valid is given):
 *   s_j = scale q_i . k_j,  lse_i = log sum_{j visible} exp(s_j),  P_ij = exp(s_j - lse_i)
 *   z_ij = dropout keep / (1 - p) with keep = mama_hash_uniform(seed, ((b*H + h)*T + i)*T + j) >= p
 *          (z = 1 when p <= 0; the softmax itself, hence lse, is undropped)
 *   out_i = sum_j P_ij z_ij v_j
 * A query that sees no key: out_i = 0, lse_i = -inf, and no gradient. */
static float mama__ref_att_z(float p, uint64_t seed, int b, int h, int i, int j, int H, int T) {
    uint64_t idx = (((uint64_t)b * H + h) * (uint64_t)T + (uint64_t)i) * (uint64_t)T + (uint64_t)j;
    if (p <= 0.0f) return 1.0f;
    return mama_hash_uniform(seed, idx) >= p ? 1.0f / (1.0f - p) : 0.0f;
}
static int mama__ref_att_visible(const int *key_valid, int causal, int b, int T, int i, int j) {
    return (!causal || j <= i) && (!key_valid || key_valid[(size_t)b * T + j]);
}
static double mama__ref_dot(const float *a, const float *b, int n) {
    double s = 0.0;
    int k;
    for (k = 0; k < n; k++) s += (double)a[k] * b[k];
    return s;
}
static void mama__ref_attention_forward(mama_backend *be, float *out, float *lse, const float *qkv,
                                        const int *key_valid, int B, int T, int H, int hd, int causal, float scale,
                                        float dropout_p, uint64_t dropout_seed) {
    const int D = H * hd;
    int b, h, i, j, c;
    (void)be;
    for (b = 0; b < B; b++)
        for (h = 0; h < H; h++)
            for (i = 0; i < T; i++) {
                const float *q = qkv + (size_t)(b * T + i) * 3 * D + h * hd;
                float *o = out + (size_t)(b * T + i) * D + h * hd;
                double mx = -INFINITY, l = 0.0, ls;
                for (j = 0; j < T; j++) /* the max, for a safe exp */
                    if (mama__ref_att_visible(key_valid, causal, b, T, i, j)) {
                        double s = scale * mama__ref_dot(q, qkv + (size_t)(b * T + j) * 3 * D + D + h * hd, hd);
                        mx = s > mx ? s : mx;
                    }
                for (c = 0; c < hd; c++) o[c] = 0.0f;
                if (mx == -INFINITY) {
                    lse[((size_t)b * H + h) * T + i] = -INFINITY;
                    continue;
                }
                for (j = 0; j < T; j++)
                    if (mama__ref_att_visible(key_valid, causal, b, T, i, j))
                        l += exp(scale * mama__ref_dot(q, qkv + (size_t)(b * T + j) * 3 * D + D + h * hd, hd) - mx);
                ls = mx + log(l);
                for (j = 0; j < T; j++) { /* out_i = sum_j P_ij z_ij v_j, summed in float in place */
                    const float *kj = qkv + (size_t)(b * T + j) * 3 * D + D + h * hd, *vj = kj + D;
                    double pz;
                    if (!mama__ref_att_visible(key_valid, causal, b, T, i, j)) continue;
                    pz = exp(scale * mama__ref_dot(q, kj, hd) - ls) *
                         mama__ref_att_z(dropout_p, dropout_seed, b, h, i, j, H, T);
                    for (c = 0; c < hd; c++) o[c] += (float)(pz * vj[c]);
                }
                lse[((size_t)b * H + h) * T + i] = (float)ls;
            }
}
/* backward, with P recomputed from the saved lse and dO = dout:
 *   dPd_ij = dO_i . v_j  (gradient of the dropped weight P_ij z_ij)
 *   D_i = sum_j P_ij z_ij dPd_ij = dO_i . out_i
 *   dS_ij = P_ij (dPd_ij z_ij - D_i)   (softmax backward)
 *   dq_i += scale sum_j dS_ij k_j,  dk_j += scale sum_i dS_ij q_i,  dv_j += sum_i P_ij z_ij dO_i */
static void mama__ref_attention_backward(mama_backend *be, float *dqkv, const float *dout, const float *out,
                                         const float *lse, const float *qkv, const int *key_valid, int B, int T,
                                         int H, int hd, int causal, float scale, float dropout_p,
                                         uint64_t dropout_seed) {
    const int D = H * hd;
    int b, h, i, j, c;
    (void)be;
    for (b = 0; b < B; b++)
        for (h = 0; h < H; h++)
            for (i = 0; i < T; i++) {
                const size_t qi = (size_t)(b * T + i) * 3 * D + h * hd, oi = (size_t)(b * T + i) * D + h * hd;
                const float ls = lse[((size_t)b * H + h) * T + i];
                double Di;
                if (!(ls > -INFINITY && ls < INFINITY)) continue; /* saw no key */
                Di = mama__ref_dot(dout + oi, out + oi, hd);
                for (j = 0; j < T; j++) {
                    const size_t kj = (size_t)(b * T + j) * 3 * D + D + h * hd, vj = kj + D;
                    double P, z, dS;
                    if (!mama__ref_att_visible(key_valid, causal, b, T, i, j)) continue;
                    P = exp(scale * mama__ref_dot(qkv + qi, qkv + kj, hd) - ls);
                    z = mama__ref_att_z(dropout_p, dropout_seed, b, h, i, j, H, T);
                    dS = P * (mama__ref_dot(dout + oi, qkv + vj, hd) * z - Di);
                    for (c = 0; c < hd; c++) {
                        dqkv[qi + c] += (float)(scale * dS * qkv[kj + c]);
                        dqkv[kj + c] += (float)(scale * dS * qkv[qi + c]);
                        dqkv[vj + c] += (float)(P * z * dout[oi + c]);
                    }
                }
            }
}

/* ---- pooling, embedding, patches ---- */
/* Weighted mean over tokens, w = mask (or all ones), W_b = sum_t w[b,t]:
 *   y[b,c] = sum_t w[b,t] x[b,t,c] / W_b    (W_b = 0: y = 0; w = 0 tokens are skipped)
 * backward: dx[b,t,c] += dy[b,c] w[b,t] / W_b */
static double mama__ref_pool_inv(const float *mask, int b, int T) {
    double s = 0.0;
    int t;
    if (!mask) return T > 0 ? 1.0 / T : 0.0;
    for (t = 0; t < T; t++) s += mask[(size_t)b * T + t];
    return s != 0.0 ? 1.0 / s : 0.0;
}
static void mama__ref_meanpool_forward(mama_backend *be, float *y, const float *x, const float *mask, int B, int T,
                                       int C) {
    int b, t, c;
    (void)be;
    for (b = 0; b < B; b++)
        for (c = 0; c < C; c++) {
            double s = 0.0;
            for (t = 0; t < T; t++) {
                float w = mask ? mask[(size_t)b * T + t] : 1.0f;
                if (w != 0.0f) s += (double)w * x[((size_t)b * T + t) * C + c];
            }
            y[(size_t)b * C + c] = (float)(s * mama__ref_pool_inv(mask, b, T));
        }
}
static void mama__ref_meanpool_backward(mama_backend *be, float *dx, const float *dy, const float *mask, int B, int T,
                                        int C) {
    int b, t, c;
    (void)be;
    for (b = 0; b < B; b++)
        for (t = 0; t < T; t++) {
            double k = (mask ? mask[(size_t)b * T + t] : 1.0f) * mama__ref_pool_inv(mask, b, T);
            if (k == 0.0) continue;
            for (c = 0; c < C; c++) dx[((size_t)b * T + t) * C + c] += (float)(k * dy[(size_t)b * C + c]);
        }
}
/* y[i,:] = table[ids[i],:] (ids[i] < 0: zeros);  backward: dtable[ids[i],:] += dy[i,:]
 * (ids[i] < 0: nothing).  The half variant widens a BF16/F16 table. */
static void mama__ref_embedding_forward(mama_backend *be, float *y, const int *ids, const float *table, int n, int C) {
    int i, c;
    (void)be;
    for (i = 0; i < n; i++)
        for (c = 0; c < C; c++) y[(size_t)i * C + c] = ids[i] < 0 ? 0.0f : table[(size_t)ids[i] * C + c];
}
static void mama__ref_embedding_backward(mama_backend *be, float *dtable, const float *dy, const int *ids, int n,
                                         int C) {
    int i, c;
    (void)be;
    for (i = 0; i < n; i++)
        if (ids[i] >= 0)
            for (c = 0; c < C; c++) dtable[(size_t)ids[i] * C + c] += dy[(size_t)i * C + c];
}
static void mama__ref_embedding_forward_half(mama_backend *be, float *y, const int *ids, const uint16_t *table,
                                             int dtype, int n, int C) {
    int i, c;
    (void)be;
    for (i = 0; i < n; i++)
        for (c = 0; c < C; c++)
            y[(size_t)i * C + c] = ids[i] < 0 ? 0.0f : mama__ref_half(table[(size_t)ids[i] * C + c], dtype);
}
/* images [B, Cin, H, W] -> rows of patches: GH = H/P, GW = W/P (pixels past
 * the last whole patch ignored, as a stride-P conv does),
 *   cols[(b*GH + gy)*GW + gx, (c*P + py)*P + px] = images[b, c, gy*P + py, gx*P + px] */
static void mama__ref_im2col_patches(mama_backend *be, float *cols, const float *images, int B, int Cin, int H, int W,
                                     int P) {
    int b, gy, gx, c, py, px, GH, GW, K;
    (void)be;
    if (P <= 0) return;
    GH = H / P;
    GW = W / P;
    K = Cin * P * P;
    for (b = 0; b < B; b++)
        for (gy = 0; gy < GH; gy++)
            for (gx = 0; gx < GW; gx++)
                for (c = 0; c < Cin; c++)
                    for (py = 0; py < P; py++)
                        for (px = 0; px < P; px++)
                            cols[((size_t)(b * GH + gy) * GW + gx) * K + (c * P + py) * P + px] =
                                images[(((size_t)b * Cin + c) * H + gy * P + py) * W + gx * P + px];
}
/* ViT tokens of image b, T = 1 + R + N rows of D:
 *   x[b,0] = cls + pos[0],  x[b,1+r] = reg[r],  x[b,1+R+k] = patches[b,k] + pos[1+k]
 * backward: dcls += dx[b,0];  dreg[r] += dx[b,1+r];  dpatches[b,k] += dx[b,1+R+k];
 *           dpos[0] += dx[b,0],  dpos[1+k] += dx[b,1+R+k]   (dcls, dreg, dpos may be NULL) */
static void mama__ref_vit_tokens_forward(mama_backend *be, float *x, const float *patches, const float *cls,
                                         const float *reg, const float *pos, int B, int N, int R, int D) {
    int b, t, c, T = 1 + R + N;
    (void)be;
    for (b = 0; b < B; b++)
        for (c = 0; c < D; c++) {
            x[(size_t)b * T * D + c] = cls[c] + pos[c];
            for (t = 0; t < R; t++) x[((size_t)b * T + 1 + t) * D + c] = reg[(size_t)t * D + c];
            for (t = 0; t < N; t++)
                x[((size_t)b * T + 1 + R + t) * D + c] = patches[((size_t)b * N + t) * D + c] + pos[(size_t)(1 + t) * D + c];
        }
}
static void mama__ref_vit_tokens_backward(mama_backend *be, float *dpatches, float *dcls, float *dreg, float *dpos,
                                          const float *dx, int B, int N, int R, int D) {
    int b, t, c, T = 1 + R + N;
    (void)be;
    for (b = 0; b < B; b++)
        for (c = 0; c < D; c++) {
            if (dcls) dcls[c] += dx[(size_t)b * T * D + c];
            if (dpos) dpos[c] += dx[(size_t)b * T * D + c];
            for (t = 0; t < R; t++)
                if (dreg) dreg[(size_t)t * D + c] += dx[((size_t)b * T + 1 + t) * D + c];
            for (t = 0; t < N; t++) {
                float g = dx[((size_t)b * T + 1 + R + t) * D + c];
                dpatches[((size_t)b * N + t) * D + c] += g;
                if (dpos) dpos[(size_t)(1 + t) * D + c] += g;
            }
        }
}

/* ---- losses ---- */
/* Cross-entropy per row r with target t = targets[r]:
 *   probs[r,:] = softmax(logits[r,:]),  loss[r] = logsumexp(logits[r,:]) - logits[r,t]
 *   t outside [0, cols) (PyTorch's ignore_index -100): loss 0, no gradient (probs still written)
 * backward: dlogits[r,c] += dloss[r] (probs[r,c] - [c == t])   (dloss NULL: 1) */
static void mama__ref_cross_entropy_forward(mama_backend *be, float *loss, float *probs, const float *logits,
                                            const int *targets, int rows, int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * cols;
        double mx = -INFINITY, sum = 0.0;
        int t = targets[r];
        for (c = 0; c < cols; c++) mx = l[c] > mx ? l[c] : mx;
        for (c = 0; c < cols; c++) sum += exp(l[c] - mx);
        for (c = 0; c < cols; c++) probs[(size_t)r * cols + c] = (float)(exp(l[c] - mx) / sum);
        if (loss) loss[r] = (t >= 0 && t < cols) ? (float)(mx + log(sum) - l[t]) : 0.0f;
    }
}
static void mama__ref_cross_entropy_backward(mama_backend *be, float *dlogits, const float *probs, const int *targets,
                                             const float *dloss, int rows, int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++) {
        float g = dloss ? dloss[r] : 1.0f;
        int t = targets[r];
        if (t < 0 || t >= cols) continue;
        for (c = 0; c < cols; c++)
            dlogits[(size_t)r * cols + c] += g * probs[(size_t)r * cols + c] - (c == t ? g : 0.0f);
    }
}
/* Segment max: for row r and segment s = columns [seg[s], seg[s+1]) (clipped to [0, cols)):
 *   out[r*nseg + s] = max, arg[...] = its column, the FIRST on ties; an empty segment: 0 and -1
 * backward: dx[r, arg] += dout[r*nseg + s]  (arg outside [0, cols): nothing) */
static void mama__ref_segment_max_forward(mama_backend *be, float *out, int *arg, const float *x, int rows, int cols,
                                          const int *seg, int nseg) {
    int r, s, c;
    (void)be;
    for (r = 0; r < rows; r++)
        for (s = 0; s < nseg; s++) {
            int a = seg[s] < 0 ? 0 : seg[s], e = seg[s + 1] > cols ? cols : seg[s + 1], best = -1;
            for (c = a; c < e; c++)
                if (best < 0 || x[(size_t)r * cols + c] > x[(size_t)r * cols + best]) best = c;
            out[(size_t)r * nseg + s] = best < 0 ? 0.0f : x[(size_t)r * cols + best];
            if (arg) arg[(size_t)r * nseg + s] = best;
        }
}
static void mama__ref_segment_max_backward(mama_backend *be, float *dx, const float *dout, const int *arg, int rows,
                                           int cols, int nseg) {
    int r, s;
    (void)be;
    for (r = 0; r < rows; r++)
        for (s = 0; s < nseg; s++) {
            int c = arg[(size_t)r * nseg + s];
            if (c >= 0 && c < cols) dx[(size_t)r * cols + c] += dout[(size_t)r * nseg + s];
        }
}
/* y = x^T (x is rows x cols);  x[i, i] = value for i < n (row stride ld);
 * sum_i a_i b_i and sum_i x_i^2 in double (NaN/Inf propagate) */
static void mama__ref_transpose(mama_backend *be, float *y, const float *x, int rows, int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
}
static void mama__ref_fill_diagonal(mama_backend *be, float *x, int n, int ld, float value) {
    int i;
    (void)be;
    for (i = 0; i < n; i++) x[(size_t)i * ld + i] = value;
}
static double mama__ref_dot_op(mama_backend *be, const float *a, const float *b, size_t n) {
    double s = 0.0;
    size_t i;
    if (be) be->host_syncs++;
    for (i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static double mama__ref_sum_squares(mama_backend *be, const float *x, size_t n) {
    return mama__ref_dot_op(be, x, x, n);
}

/* ---- optimisers ---- */
/* AdamW as torch.optim.AdamW (t counts from 1; t < 1 is taken as 1):
 *   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) */
static void mama__ref_adamw_step(mama_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                                 float beta1, float beta2, float eps, float weight_decay, int t) {
    double bc1, bc2;
    size_t i;
    (void)be;
    if (t < 1) t = 1;
    bc1 = 1.0 - pow(beta1, t);
    bc2 = 1.0 - pow(beta2, t);
    for (i = 0; i < n; i++) {
        m[i] = (float)(beta1 * (double)m[i] + (1.0 - beta1) * g[i]);
        v[i] = (float)(beta2 * (double)v[i] + (1.0 - beta2) * (double)g[i] * g[i]);
        p[i] = (float)(p[i] * (1.0 - (double)lr * weight_decay) -
                       lr / bc1 * m[i] / (sqrt((double)v[i]) / sqrt(bc2) + eps));
    }
}
/* SGD with momentum as torch.optim.SGD (dampening 0, no Nesterov):
 *   d = g + wd p;  buf = first ? d : momentum buf + d;  p -= lr buf
 *   (momentum 0 or buf NULL: p -= lr d) */
static void mama__ref_sgd_step(mama_backend *be, float *p, const float *g, float *buf, size_t n, float lr,
                               float momentum, float weight_decay, int first) {
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) {
        float d = g[i] + weight_decay * p[i];
        if (momentum != 0.0f && buf) {
            buf[i] = first ? d : momentum * buf[i] + d;
            d = buf[i];
        }
        p[i] -= lr * d;
    }
}

/* ---- the table ---- */
/* be->linear_fused as its composition from the table's own ops (the
 * reference backend's member, and what the model does on a backend that
 * leaves the slot NULL). */
static void mama__linear_fused_compose(mama_backend *be, int M, int N, int K, const float *A, const float *W,
                                       const uint16_t *Wh, int w_dtype, const float *bias, int gelu,
                                       const float *gamma, const float *res, float *C) {
    if (Wh) be->gemm_half(be, 0, 1, M, N, K, 1.0f, A, K, Wh, K, w_dtype, 0.0f, C, N);
    else be->gemm(be, 0, 1, M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
    if (bias) be->bias_add_forward(be, C, bias, M, N);
    if (gelu) be->gelu_forward(be, C, C, (size_t)M * N, 0);
    if (gamma) be->layerscale_forward(be, C, C, gamma, M, N);
    if (res) be->accumulate(be, C, res, 1.0f, (size_t)M * N);
}

static void mama__ref_destroy(mama_backend *be) { mama_free(be); }
MAMA_API mama_status mama_reference_backend_create(mama_backend **out) {
    mama_backend *t;
    if (!out) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_reference_backend_create: out is NULL");
    *out = NULL;
    MAMA_TRY(mama_calloc((void **)&t, sizeof *t, "reference backend"));
    t->name = "reference";
    t->impl = NULL;
    t->alloc = mama__ref_alloc;
    t->free = mama__ref_free;
    t->copy = mama__ref_copy;
    t->zero = mama__ref_zero;
    t->sync = mama__ref_sync;
    t->gemm = mama__ref_gemm;
    t->gemm_batched = mama__ref_gemm_batched;
    t->bias_add_forward = mama__ref_bias_add_forward;
    t->bias_add_backward = mama__ref_bias_add_backward;
    t->add = mama__ref_add;
    t->accumulate = mama__ref_accumulate;
    t->scale = mama__ref_scale;
    t->gelu_forward = mama__ref_gelu_forward;
    t->gelu_backward = mama__ref_gelu_backward;
    t->relu_forward = mama__ref_relu_forward;
    t->relu_backward = mama__ref_relu_backward;
    t->dropout_forward = mama__ref_dropout_forward;
    t->dropout_backward = mama__ref_dropout_backward;
    t->layerscale_forward = mama__ref_layerscale_forward;
    t->layerscale_backward = mama__ref_layerscale_backward;
    t->layernorm_forward = mama__ref_layernorm_forward;
    t->layernorm_backward = mama__ref_layernorm_backward;
    t->batchnorm_forward = mama__ref_batchnorm_forward;
    t->batchnorm_backward = mama__ref_batchnorm_backward;
    t->l2norm_forward = mama__ref_l2norm_forward;
    t->l2norm_backward = mama__ref_l2norm_backward;
    t->attention_forward = mama__ref_attention_forward;
    t->attention_backward = mama__ref_attention_backward;
    t->meanpool_forward = mama__ref_meanpool_forward;
    t->meanpool_backward = mama__ref_meanpool_backward;
    t->embedding_forward = mama__ref_embedding_forward;
    t->embedding_backward = mama__ref_embedding_backward;
    t->im2col_patches = mama__ref_im2col_patches;
    t->vit_tokens_forward = mama__ref_vit_tokens_forward;
    t->vit_tokens_backward = mama__ref_vit_tokens_backward;
    t->cross_entropy_forward = mama__ref_cross_entropy_forward;
    t->cross_entropy_backward = mama__ref_cross_entropy_backward;
    t->segment_max_forward = mama__ref_segment_max_forward;
    t->segment_max_backward = mama__ref_segment_max_backward;
    t->transpose = mama__ref_transpose;
    t->fill_diagonal = mama__ref_fill_diagonal;
    t->dot = mama__ref_dot_op;
    t->adamw_step = mama__ref_adamw_step;
    t->sgd_step = mama__ref_sgd_step;
    t->sum_squares = mama__ref_sum_squares;
    t->gemm_half = mama__ref_gemm_half;
    t->embedding_forward_half = mama__ref_embedding_forward_half;
    t->destroy = mama__ref_destroy;
    mama__ref_fill_device_slots(t);
    t->linear_fused = mama__linear_fused_compose;
    *out = t;
    return MAMA_OK;
}

/* ==========================================================================
 * 4. MODEL STATE: configuration, parameters, initialisation, activation arena
 * ========================================================================== */

/* ---- 4.1 Configuration presets ---------------------------------------- */

MAMA_API mama_status mama_config_preset(mama_config *c, const char *name) {
    memset(c, 0, sizeof *c);
    c->patch_size = 14;
    c->registers = 4;
    c->in_chans = 3;
    c->lora_rank = 8;
    c->lora_alpha = 32.0f;
    c->lora_dropout = 0.0f;
    c->text_dropout = 0.0f;
    c->embed_dim = 512;
    c->local_hidden = 2048;
    if (!name) return MAMA_FAIL(MAMA_ERR_INVALID, "config preset name is NULL");
    if (!strcmp(name, "tiny")) {
        c->image_size = 112; c->vision_dim = 192; c->vision_depth = 4; c->vision_heads = 3;
        c->text_dim = 192; c->text_depth = 4; c->text_heads = 3; c->vocab_size = 2048; c->context = 128;
        c->embed_dim = 128; c->local_hidden = 512; c->text_mode = MAMA_TEXT_FULL;
        /* from-scratch text tower: pool real tokens only (SPEC A.2) */
        c->text_pool_real_only = 1;
    } else if (!strcmp(name, "small")) {
        c->image_size = 224; c->vision_dim = 384; c->vision_depth = 12; c->vision_heads = 6;
        c->text_dim = 768; c->text_depth = 12; c->text_heads = 12; c->vocab_size = 50263; c->context = 144;
        c->text_mode = MAMA_TEXT_LORA;
    } else if (!strcmp(name, "base")) {
        c->image_size = 518; c->vision_dim = 768; c->vision_depth = 12; c->vision_heads = 12;
        c->text_dim = 2560; c->text_depth = 32; c->text_heads = 20; c->vocab_size = 28902; c->context = 144;
        c->text_attn_layer_scale = 1; c->text_dropout = 0.1f; c->lora_dropout = 0.1f;
        c->text_mode = MAMA_TEXT_LORA;
    } else {
        return MAMA_FAIL(MAMA_ERR_INVALID, "unknown config preset '%s' (expected tiny, small or base)", name);
    }
    /* Special tokens follow the base vocabulary (SPEC A.2): the six added
     * tokens are the last six ids; eos is the base vocabulary's last one. */
    c->bos_id = c->vocab_size - 6;
    c->pad_id = c->vocab_size - 5;
    c->sep_id = c->vocab_size - 3;
    c->eos_id = c->vocab_size - 7;
    return MAMA_OK;
}

/* The range of every integer field (mama_config_validate checks them, and
 * mama_config_from_json before converting a number): generous bounds that
 * keep every size product of the model far inside size_t and int. */
typedef struct mama__cfg_range { const char *key; size_t off; int lo, hi; } mama__cfg_range;
#define MAMA__CR(f, lo, hi) {#f, offsetof(mama_config, f), lo, hi}
static const mama__cfg_range mama__cfg_ranges[] = {
    MAMA__CR(image_size, 1, 4096), MAMA__CR(patch_size, 1, 1024), MAMA__CR(vision_dim, 1, 16384),
    MAMA__CR(vision_depth, 1, 1024), MAMA__CR(vision_heads, 1, 1024), MAMA__CR(registers, 0, 1024),
    MAMA__CR(in_chans, 1, 3), MAMA__CR(text_dim, 1, 16384), MAMA__CR(text_depth, 1, 1024),
    MAMA__CR(text_heads, 1, 1024), MAMA__CR(vocab_size, 1, 1 << 24), MAMA__CR(context, 1, 16384),
    MAMA__CR(embed_dim, 1, 16384), MAMA__CR(local_hidden, 1, 65536), MAMA__CR(lora_rank, 0, 4096),
    MAMA__CR(text_attn_layer_scale, 0, 1), MAMA__CR(bos_id, 0, (1 << 24) - 1), MAMA__CR(eos_id, 0, (1 << 24) - 1),
    MAMA__CR(pad_id, 0, (1 << 24) - 1), MAMA__CR(sep_id, 0, (1 << 24) - 1), MAMA__CR(text_pool_real_only, 0, 1),
    MAMA__CR(grad_checkpoint, 0, 1)};
#undef MAMA__CR
#define MAMA__CFG_NRANGES (sizeof mama__cfg_ranges / sizeof mama__cfg_ranges[0])
#define MAMA__CFG_INT(c, r) (*(const int *)(const void *)((const char *)(c) + (r)->off))

MAMA_API mama_status mama_config_validate(const mama_config *c) {
#define MAMA__CHECK(cond, ...) do { if (!(cond)) return MAMA_FAIL(MAMA_ERR_INVALID, __VA_ARGS__); } while (0)
    size_t i;
    for (i = 0; i < MAMA__CFG_NRANGES; i++) {
        const mama__cfg_range *r = &mama__cfg_ranges[i];
        MAMA__CHECK(MAMA__CFG_INT(c, r) >= r->lo && MAMA__CFG_INT(c, r) <= r->hi, "config: %s %d out of range [%d, %d]",
                    r->key, MAMA__CFG_INT(c, r), r->lo, r->hi);
    }
    MAMA__CHECK(c->image_size % c->patch_size == 0,
                "config: image_size %d must be a positive multiple of patch_size %d", c->image_size, c->patch_size);
    MAMA__CHECK(1 + c->registers + (c->image_size / c->patch_size) * (c->image_size / c->patch_size) <= 16384,
                "config: %d image tokens (1 + registers %d + (image_size %d / patch_size %d)^2) exceed 16384",
                1 + c->registers + (c->image_size / c->patch_size) * (c->image_size / c->patch_size), c->registers,
                c->image_size, c->patch_size);
    MAMA__CHECK(c->vision_dim % c->vision_heads == 0,
                "config: vision_dim %d must be divisible by vision_heads %d", c->vision_dim, c->vision_heads);
    MAMA__CHECK(c->text_dim % c->text_heads == 0,
                "config: text_dim %d must be divisible by text_heads %d", c->text_dim, c->text_heads);
    MAMA__CHECK(c->vision_dim / c->vision_heads <= 256 && c->text_dim / c->text_heads <= 256,
                "config: head dimension above 256 is not supported");
    MAMA__CHECK(c->in_chans == 1 || c->in_chans == 3, "config: in_chans must be 1 or 3 (got %d)", c->in_chans);
    MAMA__CHECK(c->text_mode >= MAMA_TEXT_FULL && c->text_mode <= MAMA_TEXT_FROZEN, "config: bad text_mode %d", (int)c->text_mode);
    MAMA__CHECK(c->inference == 0 || c->inference == 1, "config: inference must be 0 or 1 (got %d)", c->inference);
    MAMA__CHECK(c->frozen_dtype == MAMA_F32 || c->frozen_dtype == MAMA_BF16 || c->frozen_dtype == MAMA_F16,
                "config: frozen_dtype must be F32, BF16 or F16 (got %d)", (int)c->frozen_dtype);
    MAMA__CHECK(c->text_mode != MAMA_TEXT_LORA || c->lora_rank > 0, "config: lora_rank must be positive in lora mode");
    MAMA__CHECK(c->lora_alpha >= 0 && c->lora_alpha <= 1e6f, "config: lora_alpha %g out of range [0, 1e6]",
                (double)c->lora_alpha);
    MAMA__CHECK(c->text_dropout >= 0 && c->text_dropout < 1 && c->lora_dropout >= 0 && c->lora_dropout < 1,
                "config: dropout probabilities must be in [0, 1) (text_dropout %g, lora_dropout %g)",
                (double)c->text_dropout, (double)c->lora_dropout);
    MAMA__CHECK(c->bos_id < c->vocab_size && c->eos_id < c->vocab_size && c->pad_id < c->vocab_size &&
                c->sep_id < c->vocab_size,
                "config: special token ids (bos %d eos %d pad %d sep %d) must lie in the vocabulary of %d",
                c->bos_id, c->eos_id, c->pad_id, c->sep_id, c->vocab_size);
#undef MAMA__CHECK
    return MAMA_OK;
}

static const char *mama__text_mode_name(mama_text_mode m) {
    return m == MAMA_TEXT_LORA ? "lora" : m == MAMA_TEXT_FROZEN ? "frozen" : "full";
}

MAMA_API mama_status mama_config_to_json(const mama_config *c, char *out, size_t cap) {
    int n = snprintf(out, cap,
        "{\"image_size\":%d,\"patch_size\":%d,\"vision_dim\":%d,\"vision_depth\":%d,\"vision_heads\":%d,"
        "\"registers\":%d,\"in_chans\":%d,\"text_dim\":%d,\"text_depth\":%d,\"text_heads\":%d,\"vocab_size\":%d,"
        "\"context\":%d,\"embed_dim\":%d,\"local_hidden\":%d,\"lora_rank\":%d,\"lora_alpha\":%.9g,"
        "\"lora_dropout\":%.9g,\"text_dropout\":%.9g,\"text_attn_layer_scale\":%d,\"text_mode\":\"%s\","
        "\"text_pool\":\"%s\",\"bos_id\":%d,\"eos_id\":%d,\"pad_id\":%d,\"sep_id\":%d}",
        c->image_size, c->patch_size, c->vision_dim, c->vision_depth, c->vision_heads, c->registers, c->in_chans,
        c->text_dim, c->text_depth, c->text_heads, c->vocab_size, c->context, c->embed_dim, c->local_hidden,
        c->lora_rank, (double)c->lora_alpha, (double)c->lora_dropout, (double)c->text_dropout,
        c->text_attn_layer_scale, mama__text_mode_name(c->text_mode),
        c->text_pool_real_only ? "real" : "all", c->bos_id, c->eos_id, c->pad_id, c->sep_id);
    if (n < 0 || (size_t)n >= cap) return MAMA_FAIL(MAMA_ERR_INVALID, "config JSON does not fit in %zu bytes", cap);
    return MAMA_OK;
}

MAMA_API mama_status mama_config_from_json(mama_config *c, const char *json, const char *source) {
    static const char *const float_keys[] = {"lora_alpha", "lora_dropout", "text_dropout"};
    float *const float_slots[] = {&c->lora_alpha, &c->lora_dropout, &c->text_dropout};
    mama_json *root = NULL;
    const mama_json *v;
    const char *src = source ? source : "config", *why;
    char msg[1024];
    size_t i;
    MAMA_TRY(mama_json_parse(json, strlen(json), source, &root));
    if (root->type != MAMA_JSON_OBJECT) {
        mama_json_free(root);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config is not a JSON object", src);
    }
    /* the integer fields, range-checked before the conversion (the last two
     * of the table are not JSON keys) */
    for (i = 0; i + 2 < MAMA__CFG_NRANGES; i++) {
        const mama__cfg_range *r = &mama__cfg_ranges[i];
        double x;
        v = mama_json_get(root, r->key);
        if (!v) continue;
        if (v->type != MAMA_JSON_NUMBER && v->type != MAMA_JSON_BOOL) {
            mama_json_free(root);
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config field '%s' is not a number", src, r->key);
        }
        x = v->number;
        if (!(x >= r->lo && x <= r->hi) || x != floor(x)) {
            mama_json_free(root);
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config field '%s' = %.17g is not an integer in [%d, %d]", src,
                             r->key, x, r->lo, r->hi);
        }
        *(int *)(void *)((char *)c + r->off) = (int)x;
    }
    for (i = 0; i < sizeof float_keys / sizeof float_keys[0]; i++) {
        v = mama_json_get(root, float_keys[i]);
        if (!v) continue;
        if (v->type != MAMA_JSON_NUMBER || !(fabs(v->number) <= 1e30)) {
            mama_json_free(root);
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config field '%s' is not a finite number", src, float_keys[i]);
        }
        *float_slots[i] = (float)v->number;
    }
    v = mama_json_get(root, "text_mode");
    if (v) {
        if (v->type == MAMA_JSON_STRING && !strcmp(v->string, "full")) c->text_mode = MAMA_TEXT_FULL;
        else if (v->type == MAMA_JSON_STRING && !strcmp(v->string, "lora")) c->text_mode = MAMA_TEXT_LORA;
        else if (v->type == MAMA_JSON_STRING && !strcmp(v->string, "frozen")) c->text_mode = MAMA_TEXT_FROZEN;
        else {
            mama_json_free(root);
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config field 'text_mode' must be \"full\", \"lora\" or \"frozen\"", src);
        }
    }
    v = mama_json_get(root, "text_pool");
    if (v && v->type == MAMA_JSON_STRING) c->text_pool_real_only = !strcmp(v->string, "real");
    mama_json_free(root);
    if (mama_config_validate(c) == MAMA_OK) return MAMA_OK;
    /* a file's config: MAMA_ERR_FORMAT naming the file ("config: <field> ...") */
    why = strstr(mama_last_error(), "config: ");
    snprintf(msg, sizeof msg, "%s", why ? why + 8 : mama_last_error());
    return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: mama_config: %s", src, msg);
}

/* ---- 4.2 Parameter pointers.  One struct of pointers for the weights and a
 * second, identical one for the gradients (NULL where a tensor does not
 * train), both carved out of single buffers.  Shapes in the config's names
 * (mama__visit_params lists them with the A.8 names): D vision_dim, Dt
 * text_dim, E embed_dim, Hd local_hidden, P patch_size, Cin in_chans,
 * R registers, N = (image_size / P)^2 patches, V vocab_size, T context,
 * r lora_rank, L vision_depth or text_depth.  Linear weights are stored as
 * the files hold them: ViT / heads [out, in], GPT-2 "Conv1D" [in, out]. */
typedef struct mama__vit_block {   /* one of vision_depth */
    float *ln1_w, *ln1_b;          /* [D], [D] norm1 */
    float *qkv_w, *qkv_b;          /* [3D, D], [3D] attn.qkv (rows q | k | v) */
    float *proj_w, *proj_b;        /* [D, D], [D] attn.proj */
    float *ls1;                    /* [D] ls1.gamma (LayerScale) */
    float *ln2_w, *ln2_b;          /* [D], [D] norm2 */
    float *fc1_w, *fc1_b;          /* [4D, D], [4D] mlp.fc1 */
    float *fc2_w, *fc2_b;          /* [D, 4D], [D] mlp.fc2 */
    float *ls2;                    /* [D] ls2.gamma */
    /* the four matrices in half precision (then the float pointers are
     * NULL): an inference-only model with frozen_dtype BF16 / F16 */
    uint16_t *qkv_wh, *proj_wh, *fc1_wh, *fc2_wh;
} mama__vit_block;

typedef struct mama__gpt_block {   /* one of text_depth */
    float *ln1_w, *ln1_b;          /* [Dt], [Dt] ln_1 */
    float *attn_w, *attn_b;        /* [Dt, 3Dt], [3Dt] attn.c_attn (columns q | k | v) */
    float *lora_a, *lora_b;        /* [r, Dt], [3Dt, r] c_attn's LoRA A and B (lora mode, else NULL) */
    float *attn_proj_w, *attn_proj_b; /* [Dt, Dt], [Dt] attn.c_proj */
    float *ln2_w, *ln2_b;          /* [Dt], [Dt] ln_2 */
    float *fc_w, *fc_b;            /* [Dt, 4Dt], [4Dt] mlp.c_fc */
    float *mlp_proj_w, *mlp_proj_b;/* [4Dt, Dt], [Dt] mlp.c_proj */
    /* the same four matrices when kept in half precision (frozen_dtype);
     * then the float pointers above are NULL, and vice versa */
    uint16_t *attn_wh;             /* [Dt, 3Dt] */
    uint16_t *attn_proj_wh;        /* [Dt, Dt] */
    uint16_t *fc_wh;               /* [Dt, 4Dt] */
    uint16_t *mlp_proj_wh;         /* [4Dt, Dt] */
} mama__gpt_block;

/* local embedding head: conv1x1 -> BN -> ReLU -> conv1x1 -> BN (no affine);
 * Cl = its input width (D for the image head, Dt for the text head) */
typedef struct mama__local_head {
    float *w1, *b1;                /* [Hd, Cl, 1], [Hd] head.0 (1x1 conv) */
    float *bn1_w, *bn1_b;          /* [Hd], [Hd] head.1 */
    float *bn1_mean, *bn1_var;     /* [Hd], [Hd] head.1 running statistics (buffers) */
    float *w2, *b2;                /* [E, Hd, 1], [E] head.3 (1x1 conv) */
    float *bn2_mean, *bn2_var;     /* [E], [E] head.4 running statistics (no affine) */
} mama__local_head;

/* SimCLR projection: linear -> BN -> ReLU -> linear -> BN */
typedef struct mama__simclr_head {
    float *w1;                     /* [D, D] layers.0 (no bias) */
    float *bn1_w, *bn1_b;          /* [D], [D] layers.1 */
    float *bn1_mean, *bn1_var;     /* [D], [D] layers.1 running statistics (buffers) */
    float *w2;                     /* [E, D] layers.3 (no bias) */
    float *bn2_w, *bn2_b;          /* [E], [E] layers.4 */
    float *bn2_mean, *bn2_var;     /* [E], [E] layers.4 running statistics (buffers) */
} mama__simclr_head;

typedef struct mama__weights {
    /* vision */
    float *cls_token;              /* [1, 1, D] */
    float *register_tokens;        /* [1, R, D] */
    float *pos_embed;              /* [1, 1 + N, D] (cls + patches; registers get none) */
    float *mask_token;             /* [1, D] (frozen: unused by MaMA, kept for the files) */
    float *patch_w, *patch_b;      /* [D, Cin, P, P], [D] patch_embed.proj */
    mama__vit_block *vit;          /* [vision_depth] */
    float *norm_w, *norm_b;        /* [D], [D] final norm (frozen; feeds the local branch) */
    float *img_global_w, *img_global_b; /* [E, D], [E] img_encoder_q.global_embed */
    mama__local_head img_local;    /* Cl = D */
    /* text */
    float *wte;                    /* [V, Dt] token embeddings (NULL when kept in wte_h) */
    float *wpe;                    /* [T, Dt] position embeddings */
    uint16_t *wte_h;               /* [V, Dt] wte in half precision (frozen_dtype), else NULL */
    mama__gpt_block *gpt;          /* [text_depth] */
    float *ln_f_w, *ln_f_b;        /* [Dt], [Dt] ln_f */
    float *txt_global_w, *txt_global_b; /* [E, Dt], [E] text_encoder_q.global_embed */
    mama__local_head txt_local;    /* Cl = Dt */
    /* joint */
    mama__simclr_head simclr;
    float *logit_scale;            /* [] scalar: global CLIP scores are multiplied by exp(logit_scale) */
    float *local_scale;            /* [] scalar: the same for the SLA scores */
} mama__weights;

/* The parameter visitor: the single place that lists every tensor, its
 * A.8 name, shape and group.  It runs three times: to count, to assign
 * offsets, and to bind pointers.  `slot` is the address of the pointer in
 * the weight struct; the gradient struct has the same layout, so its slot is
 * found by the same offset. */
/* Where the visitor binds pointers: the weight struct `w` gets
 * wbase + offset, the gradient struct `g` gets gbase + offset for tensors
 * that train (NULL otherwise; g may be NULL). */
typedef struct mama__bind {
    mama__weights *w, *g;
    float *wbase, *gbase;
    uint16_t *hbase;            /* half-precision frozen matrices */
} mama__bind;

#define MAMA_MAX_PARAMS_NAME 128
#define MAMA_MAX_SENTENCES 32 /* sentences (sep tokens) per caption */

/* Saved activations of one transformer block (both towers use it; unused
 * fields stay NULL).  With gradient checkpointing every block shares one of
 * these and the backward recomputes the block from its saved input.
 * Shapes: rows x C with rows = Bv*Tv, C = D, H = vision_heads in the ViT;
 * rows = B*T, C = Dt, H = text_heads in GPT-2 (names as in mama__acts). */
typedef struct mama__block_acts {
    float *ln1;                    /* [rows, C] LayerNorm 1 output */
    float *ln1_mean, *ln1_rstd;    /* [rows], [rows] */
    float *qkv;                    /* [rows, 3C] q | k | v */
    float *lora_in;                /* [rows, C] LoRA's input after its dropout (text, lora mode) */
    float *lora_u;                 /* [rows, r] LoRA's x A^T (text, lora mode) */
    float *att;                    /* [rows, C] attention output, heads concatenated */
    float *lse;                    /* [B(v), H, T(v)] log-sum-exp per query (for the backward) */
    float *proj;                   /* [rows, C] attention projection (ViT: LayerScale input) */
    float *xmid;                   /* [rows, C] residual stream after the attention branch */
    float *ln2;                    /* [rows, C] LayerNorm 2 output */
    float *ln2_mean, *ln2_rstd;    /* [rows], [rows] */
    float *fc;                     /* [rows, 4C] MLP hidden before GELU */
    float *gelu;                   /* [rows, 4C] after GELU */
    float *fc2;                    /* [rows, C] MLP output (ViT: LayerScale input) */
} mama__block_acts;

/* Everything one step needs, carved from one arena sized at creation
 * (mama__layout_acts).  Shapes are capacities for B = max_batch; a step
 * uses the first rows of each.  Bv = 2B images (main + ext), Tv = 1 + R + N
 * vision tokens, T = context, Smax = B * MAMA_MAX_SENTENCES sentences,
 * Rmax = max(Bv*Tv, B*T), Cmax = max(D, Dt); other names as in 4.2. */
typedef struct mama__acts {
    /* vision */
    float *images;                 /* [Bv, Cin, image_size, image_size] */
    float *cols;                   /* [Bv*N, Cin*P*P] im2col patches */
    float *patch_out;              /* [Bv*N, D] patch embeddings */
    float **vres;                  /* vision_depth + 1 residual streams, each [Bv*Tv, D] */
    mama__block_acts *vblk;        /* [vision_depth] (1 with checkpointing) */
    float *vpooled;                /* [Bv, D] pooled (cls) feature */
    float *img_g, *img_emb;        /* [Bv, E], [Bv, E] global projection, L2-normalised */
    float *img_gnorm;              /* [Bv] its norms */
    float *vnorm;                  /* [B*Tv, D] final norm (local branch, main images only) */
    float *vnorm_mean, *vnorm_rstd;/* [B*Tv], [B*Tv] */
    float *patches;                /* [B*N, D] patch tokens of vnorm */
    int *patch_idx;                /* [B*N] their rows in vnorm */
    /* image local head, on B*N patch rows */
    float *il_h1, *il_bn1;         /* [B*N, Hd], [B*N, Hd] */
    float *il_bn1_mean, *il_bn1_rstd; /* [Hd], [Hd] */
    float *il_relu;                /* [B*N, Hd] */
    float *il_h2, *il_bn2;         /* [B*N, E], [B*N, E] */
    float *il_bn2_mean, *il_bn2_rstd; /* [E], [E] */
    float *p_emb;                  /* [B*N, E] patch embeddings, L2-normalised */
    float *p_norm;                 /* [B*N] their norms */
    /* text */
    int *ids, *pos_ids, *key_valid;/* [B*T] each */
    float *pool_mask;              /* [B*T] */
    float **tres;                  /* text_depth + 1 residual streams, each [B*T, Dt] */
    mama__block_acts *tblk;        /* [text_depth] (1 with checkpointing) */
    float *hidden;                 /* [B*T, Dt] after ln_f */
    float *lnf_mean, *lnf_rstd;    /* [B*T], [B*T] */
    float *tpool;                  /* [B, Dt] pooled text feature */
    float *txt_g, *txt_emb;        /* [B, E], [B, E] global projection, L2-normalised */
    float *txt_gnorm;              /* [B] its norms */
    int *sent_idx;                 /* [Smax] row in hidden of each sentence (sep) token */
    int *sent_seg, *img_seg;       /* [B + 1], [B + 1] sentence / patch offsets per sample */
    float *sent;                   /* [Smax, Dt] sentence features */
    /* text local head, on Smax sentence rows */
    float *tl_h1, *tl_bn1;         /* [Smax, Hd], [Smax, Hd] */
    float *tl_bn1_mean, *tl_bn1_rstd; /* [B, Hd], [B, Hd] */
    float *tl_relu;                /* [Smax, Hd] */
    float *tl_h2, *tl_bn2;         /* [Smax, E], [Smax, E] */
    float *tl_bn2_mean, *tl_bn2_rstd; /* [B, E], [B, E] */
    float *s_emb;                  /* [Smax, E] sentence embeddings, L2-normalised */
    float *s_norm;                 /* [Smax] their norms */
    /* simclr on [image; ext] pooled features (each half its own BatchNorm statistics) */
    float *sc_h1, *sc_bn1;         /* [Bv, D], [Bv, D] */
    float *sc_bn1_mean, *sc_bn1_rstd; /* [2, D], [2, D] */
    float *sc_relu;                /* [Bv, D] */
    float *sc_h2, *sc_z;           /* [Bv, E], [Bv, E] */
    float *sc_bn2_mean, *sc_bn2_rstd; /* [2, E], [2, E] */
    float *sc_zn;                  /* [Bv, E] projections, L2-normalised */
    float *sc_norm;                /* [Bv] their norms */
    /* losses */
    float *logits, *logits_t;      /* [B, B], [B, B] image->text scores and their transpose */
    float *ce_loss;                /* [2Bv] per-row cross-entropies */
    float *ce_probs, *ce_probs_t;  /* [B, B], [B, B] */
    float *dlogits, *dlogits_t;    /* [B, B], [B, B] */
    float *ce_dloss;               /* [Bv] */
    int *targets_diag;             /* [B] */
    int *targets_ntx;              /* [Bv] */
    float *ntx_sim, *ntx_probs;    /* [Bv, Bv], [Bv, Bv] NT-Xent similarities and softmax */
    float *ntx_loss;               /* [Bv] */
    float *ntx_dsim;               /* [Bv, Bv] */
    float *ntx_dloss;              /* [Bv] */
    float *sla_sim, *sla_simt;     /* [B*N, Smax], [Smax, B*N] patch-sentence similarities */
    float *sla_rowmax;             /* [B*N, B] each patch's best sentence per caption */
    float *sla_colmax;             /* [Smax, B] each sentence's best patch per image */
    float *sla_avg;                /* [B, Smax] */
    float *sla_t2i, *sla_t2i_t;    /* [B, B], [B, B] */
    float *sla_i2t;                /* [B, B] */
    int *sla_rowarg, *sla_colarg;  /* [B*N, B], [Smax, B] argmax of rowmax, colmax */
    float *sla_dsim, *sla_dsimt;   /* [B*N, Smax], [Smax, B*N] */
    float *sla_drowmax;            /* [B*N, B] */
    float *sla_dcolmax;            /* [Smax, B] */
    float *sla_dt2i, *sla_dt2i_t;  /* [B, B], [B, B] */
    float *sla_di2t;               /* [B, B] */
    /* gradient scratch */
    float *d_img_emb, *d_img_g;    /* [Bv, E], [Bv, E] */
    float *d_vpooled;              /* [Bv, D] */
    float *d_vx, *d_vx2;           /* [Bv*Tv, D], [Bv*Tv, D] residual stream gradients */
    float *d_vnorm;                /* [B*Tv, D] */
    float *d_patches;              /* [B*N, D] */
    float *d_patch_out;            /* [Bv*N, D] */
    float *d_rows_d, *d_rows_d2;   /* [Rmax, Cmax], [Rmax, Cmax] shared by both towers */
    float *d_rows_3d;              /* [Rmax, 3Cmax] */
    float *d_rows_4d, *d_rows_4d2; /* [Rmax, 4Cmax], [Rmax, 4Cmax] */
    float *d_rows_r;               /* [B*T*max(r, 1) + B*T*Dt] LoRA scratch */
    float *d_txt_emb, *d_txt_g;    /* [B, E], [B, E] */
    float *d_tpool;                /* [B, Dt] */
    float *d_hidden, *d_tx, *d_tx2;/* [B*T, Dt] each */
    float *d_il_a, *d_il_b;        /* [B*N, Hd], [B*N, Hd] */
    float *d_il_e, *d_il_e2;       /* [B*N, E], [B*N, E] */
    float *d_p_emb;                /* [B*N, E] */
    float *d_tl_a, *d_tl_b;        /* [Smax, Hd], [Smax, Hd] */
    float *d_tl_e, *d_tl_e2;       /* [Smax, E], [Smax, E] */
    float *d_s_emb;                /* [Smax, E] */
    float *d_sent;                 /* [Smax, Dt] */
    float *d_sc_zn, *d_sc_z, *d_sc_e; /* [Bv, E] each */
    float *d_sc_a, *d_sc_b;        /* [Bv, D], [Bv, D] */
} mama__acts;

/* Per-call choice between all threads and one (6.3): seconds per item of
 * the last call on all threads [0] and on one [1] (0: none yet), calls
 * seen, the call that next tries the other choice and the gap to it. */
typedef struct mama__tune {
    double sec[2];
    long calls, probe_at;
    int gap;
} mama__tune;

struct mama_model {
    mama_config cfg;
    mama_backend *be;
    int max_batch;
    int n_vtok, n_patches;       /* Tv = 1 + R + N, N */
    /* parameters */
    int nparams;
    mama_param_info *info;
    size_t group_numel[4], group_offset[4]; /* float32 layout of `params` */
    float *params, *grads;
    /* frozen text matrices kept in half precision (cfg.frozen_dtype):
     * half_numel elements of dtype half_dtype (MAMA_F32: none) */
    uint16_t *params_half;
    size_t half_numel;
    mama_dtype half_dtype;
    mama__weights w, g;
    int64_t bn_batches[6];       /* num_batches_tracked of the six BatchNorms */
    char tok_path[1024], tok_abs[1024], tok_fp[48]; /* the tokenizer it was trained with ("": none), 1.15 */
    /* activations */
    float *arena;
    size_t arena_floats;
    mama__acts a;
    /* host staging for one batch's small index arrays */
    int *h_ints;
    float *h_floats;
    int *h_sent_seg;             /* [max_batch + 1] caption sentence offsets */
    unsigned char *h_stage;      /* upload staging from be->host_alloc (6.1), made by the first step */
    int stage_busy;              /* copies from h_stage were queued ... */
    unsigned long long stage_mark; /* ... when be->host_syncs was this */
    double *d_acc;               /* device: the step's loss terms and a scratch sum (6) */
    int last_B, last_S, last_late;
    struct mama__dp *dp;         /* data-parallel state (section 12), NULL when single-process */
    mama__tune tune[3];          /* 6.3: the thread choice of encoding [0], training steps [1], forward passes [2] */
    int tune_off;                /* mama_model_set_thread_tuning(m, 0) */
};

/* Hooks into section 12 (data parallelism), used by sections 5, 6 and 11. */
typedef struct mama__dp mama__dp;
static int  mama__dp_world(const mama_model *m);  /* 1 without a comm */
static int  mama__dp_rank(const mama_model *m);
static int  mama__dp_sync_bn(const mama_model *m); /* batch-wide BatchNorms over all ranks */
static void mama__dp_bn_forward(mama_model *m, float *y, float *mean, float *rstd, float *running_mean,
                                float *running_var, const float *x, const float *w, const float *b, int rows, int cols,
                                float eps, float momentum);
static void mama__dp_bn_backward(mama_model *m, float *dx, float *dw, float *db, const float *dy, const float *x,
                                 const float *w, const float *mean, const float *rstd, int rows, int cols);
static void mama__dp_free(mama_model *m);
static void mama__dp_text_bn_save(mama_model *m);
static void mama__dp_text_bn_replay(mama_model *m, int B, int S);
static mama_status mama__dp_status(mama_model *m); /* and clear the sticky failure of a void hook */
static mama_status mama__dp_encode_records(mama_model *m, struct mama_dataset *d, const int *records, int n,
                                           float *emb, float *pooled, int train_aug, uint64_t seed);
static mama_status mama__dp_allgather_host(mama_model *m, const float *send, size_t n, float *recv);
static mama_status mama__dp_allreduce_dev(mama_model *m, float *buf, size_t n);
/* rank 0 writes the checkpoint (reference mode: after averaging the
 * BatchNorm running statistics); all ranks learn whether that worked */
static mama_status mama__dp_checkpoint_save(const char *path, mama_model *m, const struct mama_adamw *opt,
                                            long step, uint64_t seed, double best_val, long best_step,
                                            const struct mama_pretrain_opts *o);
/* Overlapped gradient sum (12.7): the backward calls mama__dp_grads_ready
 * at each point where a part of the gradient buffer is final for this
 * step (the hook points below, every one on every step, whether or not its
 * branch ran); a no-op unless mama_model_overlap_grads armed this step. */
enum {
    MAMA__HOOK_LOSS,        /* logit_scale, local_scale (the losses wrote them) */
    MAMA__HOOK_SIMCLR,      /* simclr_proj.* */
    MAMA__HOOK_IMG_LOCAL,   /* img_encoder_q.local_embed.* */
    MAMA__HOOK_IMG_GLOBAL,  /* img_encoder_q.global_embed.* */
    MAMA__HOOK_VIT_BLOCK,   /* blocks.<layer>.* of the ViT */
    MAMA__HOOK_VIT_EMBED,   /* cls_token, register_tokens, pos_embed, patch_embed.* */
    MAMA__HOOK_TXT_GLOBAL,  /* text_encoder_q.global_embed.* */
    MAMA__HOOK_TXT_LOCAL,   /* text_encoder_q.local_embed.* */
    MAMA__HOOK_LN_F,        /* ln_f.* of GPT-2 */
    MAMA__HOOK_GPT_BLOCK,   /* h.<layer>.* of GPT-2 (full or LoRA) */
    MAMA__HOOK_TXT_EMBED,   /* wte, wpe */
    MAMA__HOOK_OTHER        /* anything else: summed after the backward */
};
static void mama__dp_grads_ready(mama_model *m, int hook, int layer);
/* before a backward step: an armed overlap allows one backward, then the sum */
static mama_status mama__dp_step_begin(mama_model *m);
static void mama__dp_grads_drain(mama_model *m);  /* wait for (and drop) a sum left running by a failed step */
static void mama__dp_grad_stats(const mama_model *m, double *seconds, double *wait_seconds, long *buckets);
static mama_status mama__dp_losses(mama_model *m, int B, int S, int use_mv, int use_sym, int use_sla, int backward,
                                   struct mama_losses *L);

MAMA_API const mama_config *mama_model_config(const mama_model *m) { return &m->cfg; }
MAMA_API int mama_model_param_count(const mama_model *m) { return m->nparams; }
MAMA_API const mama_param_info *mama_model_param(const mama_model *m, int i) {
    return (i >= 0 && i < m->nparams) ? &m->info[i] : NULL;
}
MAMA_API const mama_param_info *mama_model_find_param(const mama_model *m, const char *name) {
    int i;
    for (i = 0; i < m->nparams; i++)
        if (!strcmp(m->info[i].name, name)) return &m->info[i];
    return NULL;
}
MAMA_API size_t mama_model_numel(const mama_model *m, mama_param_group g) {
    return m->group_numel[g] + (g == MAMA_GROUP_FROZEN ? m->half_numel : 0);
}
MAMA_API size_t mama_model_half_numel(const mama_model *m, mama_dtype *dtype) {
    if (dtype) *dtype = m->half_numel ? m->half_dtype : MAMA_F32;
    return m->half_numel;
}
MAMA_API float *mama_model_params(mama_model *m) { return m->params; }
MAMA_API float *mama_model_grads(mama_model *m) { return m->grads; }

/* One tensor for the visitor.  Without a bind context (counting pass) it
 * adds up group sizes; with one it records the tensor's info and binds
 * the pointers. */
static void mama__param_h(mama_model *m, const mama__bind *bind, size_t *cursor, const char *name,
                          mama_param_group group, float **wslot, float **gslot, uint16_t **hslot, int ndim,
                          int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    size_t numel = 1;
    int64_t dims[4];
    int i;
    /* frozen matrices that may live in half precision do so when the model
     * keeps them that way (cursor[4] counts the half buffer) */
    int half = hslot && group == MAMA_GROUP_FROZEN && m->half_dtype != MAMA_F32;
    mama_param_info *p;
    dims[0] = d0; dims[1] = d1; dims[2] = d2; dims[3] = d3;
    for (i = 0; i < ndim; i++) numel *= (size_t)dims[i];
    if (!bind) {
        if (half) m->half_numel += numel;
        else m->group_numel[group] += numel;
        m->nparams++;
        return;
    }
    p = &m->info[m->nparams++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    for (i = 0; i < 4; i++) p->shape[i] = i < ndim ? dims[i] : 1;
    p->numel = numel;
    p->group = group;
    if (half) {
        p->dtype = m->half_dtype;
        p->offset = cursor[4];
        cursor[4] += numel;
        *wslot = NULL;
        *hslot = bind->hbase ? bind->hbase + p->offset : NULL;
        if (gslot) *gslot = NULL;
        return;
    }
    p->dtype = MAMA_F32;
    p->offset = m->group_offset[group] + cursor[group];
    cursor[group] += numel;
    *wslot = bind->wbase + p->offset;
    if (hslot) *hslot = NULL;
    if (gslot) *gslot = (bind->gbase && group <= MAMA_GROUP_LATE) ? bind->gbase + p->offset : NULL;
}
static void mama__param(mama_model *m, const mama__bind *bind, size_t *cursor, const char *name,
                        mama_param_group group, float **wslot, float **gslot, int ndim,
                        int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    mama__param_h(m, bind, cursor, name, group, wslot, gslot, NULL, ndim, d0, d1, d2, d3);
}

static void mama__visit_local_head(mama_model *m, const mama__bind *bind, size_t *cur, const char *prefix,
                                   int in, mama__local_head *w, mama__local_head *g) {
    char n[MAMA_MAX_PARAMS_NAME];
    int H = m->cfg.local_hidden, E = m->cfg.embed_dim;
#define MAMA__P(suffix, grp, field, ...) \
    (snprintf(n, sizeof n, "%s%s", prefix, suffix), \
     mama__param(m, bind, cur, n, grp, &w->field, g ? &g->field : NULL, __VA_ARGS__))
    MAMA__P("head.0.weight", MAMA_GROUP_LATE, w1, 3, H, in, 1, 1);
    MAMA__P("head.0.bias", MAMA_GROUP_LATE, b1, 1, H, 1, 1, 1);
    MAMA__P("head.1.weight", MAMA_GROUP_LATE, bn1_w, 1, H, 1, 1, 1);
    MAMA__P("head.1.bias", MAMA_GROUP_LATE, bn1_b, 1, H, 1, 1, 1);
    MAMA__P("head.1.running_mean", MAMA_GROUP_BUFFER, bn1_mean, 1, H, 1, 1, 1);
    MAMA__P("head.1.running_var", MAMA_GROUP_BUFFER, bn1_var, 1, H, 1, 1, 1);
    MAMA__P("head.3.weight", MAMA_GROUP_LATE, w2, 3, E, H, 1, 1);
    MAMA__P("head.3.bias", MAMA_GROUP_LATE, b2, 1, E, 1, 1, 1);
    MAMA__P("head.4.running_mean", MAMA_GROUP_BUFFER, bn2_mean, 1, E, 1, 1, 1);
    MAMA__P("head.4.running_var", MAMA_GROUP_BUFFER, bn2_var, 1, E, 1, 1, 1);
#undef MAMA__P
}

/* Every tensor of the model, in A.8 names.  The order inside a group is the
 * order here; the groups themselves are laid out train | late | frozen |
 * buffers. */
static void mama__visit_params(mama_model *m, const mama__bind *bind) {
    mama_config *c = &m->cfg;
    mama__weights *w = bind ? bind->w : &m->w, *g = bind ? bind->g : NULL;
    size_t cur[5] = {0, 0, 0, 0, 0};
    char n[MAMA_MAX_PARAMS_NAME];
    int D = c->vision_dim, Dt = c->text_dim, E = c->embed_dim, P = c->patch_size;
    int N = m->n_patches, l;
    mama_param_group tg = c->text_mode == MAMA_TEXT_FULL ? MAMA_GROUP_TRAIN : MAMA_GROUP_FROZEN;
    const char *vp = "img_encoder_q.model.";
    const char *tp = "text_encoder_q.model.base_model.model.transformer.";
    m->nparams = 0;
    if (!bind) m->half_numel = 0;
#define MAMA__P(grp, field, ...) mama__param(m, bind, cur, n, grp, &w->field, g ? &g->field : NULL, __VA_ARGS__)
#define MAMA__PH(grp, field, hfield, ...) \
    mama__param_h(m, bind, cur, n, grp, &w->field, g ? &g->field : NULL, &w->hfield, __VA_ARGS__)
#define MAMA__NAME(...) snprintf(n, sizeof n, __VA_ARGS__)
    MAMA__NAME("%scls_token", vp); MAMA__P(MAMA_GROUP_TRAIN, cls_token, 3, 1, 1, D, 1);
    MAMA__NAME("%sregister_tokens", vp); MAMA__P(MAMA_GROUP_TRAIN, register_tokens, 3, 1, c->registers, D, 1);
    MAMA__NAME("%spos_embed", vp); MAMA__P(MAMA_GROUP_TRAIN, pos_embed, 3, 1, 1 + N, D, 1);
    MAMA__NAME("%smask_token", vp); MAMA__P(MAMA_GROUP_FROZEN, mask_token, 2, 1, D, 1, 1);
    MAMA__NAME("%spatch_embed.proj.weight", vp); MAMA__P(MAMA_GROUP_TRAIN, patch_w, 4, D, c->in_chans, P, P);
    MAMA__NAME("%spatch_embed.proj.bias", vp); MAMA__P(MAMA_GROUP_TRAIN, patch_b, 1, D, 1, 1, 1);
    for (l = 0; l < c->vision_depth; l++) {
        mama__vit_block *wb = &w->vit[l], *gb = g ? &g->vit[l] : NULL;
        /* an inference-only model keeps the matrices in m->half_dtype (frozen: nothing trains) */
        mama_param_group vg = c->inference && m->half_dtype != MAMA_F32 ? MAMA_GROUP_FROZEN : MAMA_GROUP_TRAIN;
#define MAMA__B(suffix, field, ...) (MAMA__NAME("%sblocks.%d.%s", vp, l, suffix), \
        mama__param(m, bind, cur, n, MAMA_GROUP_TRAIN, &wb->field, gb ? &gb->field : NULL, __VA_ARGS__))
#define MAMA__BH(suffix, field, ...) (MAMA__NAME("%sblocks.%d.%s", vp, l, suffix), \
        mama__param_h(m, bind, cur, n, vg, &wb->field, gb ? &gb->field : NULL, &wb->field##h, __VA_ARGS__))
        MAMA__B("norm1.weight", ln1_w, 1, D, 1, 1, 1);
        MAMA__B("norm1.bias", ln1_b, 1, D, 1, 1, 1);
        MAMA__BH("attn.qkv.weight", qkv_w, 2, 3 * D, D, 1, 1);
        MAMA__B("attn.qkv.bias", qkv_b, 1, 3 * D, 1, 1, 1);
        MAMA__BH("attn.proj.weight", proj_w, 2, D, D, 1, 1);
        MAMA__B("attn.proj.bias", proj_b, 1, D, 1, 1, 1);
        MAMA__B("ls1.gamma", ls1, 1, D, 1, 1, 1);
        MAMA__B("norm2.weight", ln2_w, 1, D, 1, 1, 1);
        MAMA__B("norm2.bias", ln2_b, 1, D, 1, 1, 1);
        MAMA__BH("mlp.fc1.weight", fc1_w, 2, 4 * D, D, 1, 1);
        MAMA__B("mlp.fc1.bias", fc1_b, 1, 4 * D, 1, 1, 1);
        MAMA__BH("mlp.fc2.weight", fc2_w, 2, D, 4 * D, 1, 1);
        MAMA__B("mlp.fc2.bias", fc2_b, 1, D, 1, 1, 1);
        MAMA__B("ls2.gamma", ls2, 1, D, 1, 1, 1);
#undef MAMA__B
#undef MAMA__BH
    }
    /* `norm` only feeds the local branch and is frozen (SPEC A.1) */
    MAMA__NAME("%snorm.weight", vp); MAMA__P(MAMA_GROUP_FROZEN, norm_w, 1, D, 1, 1, 1);
    MAMA__NAME("%snorm.bias", vp); MAMA__P(MAMA_GROUP_FROZEN, norm_b, 1, D, 1, 1, 1);
    MAMA__NAME("img_encoder_q.global_embed.weight"); MAMA__P(MAMA_GROUP_TRAIN, img_global_w, 2, E, D, 1, 1);
    MAMA__NAME("img_encoder_q.global_embed.bias"); MAMA__P(MAMA_GROUP_TRAIN, img_global_b, 1, E, 1, 1, 1);
    mama__visit_local_head(m, bind, cur, "img_encoder_q.local_embed.", D, &w->img_local, g ? &g->img_local : NULL);
    /* text tower */
    MAMA__NAME("%swte.weight", tp); MAMA__PH(tg, wte, wte_h, 2, c->vocab_size, Dt, 1, 1);
    MAMA__NAME("%swpe.weight", tp); MAMA__P(tg, wpe, 2, c->context, Dt, 1, 1);
    for (l = 0; l < c->text_depth; l++) {
        mama__gpt_block *wb = &w->gpt[l], *gb = g ? &g->gpt[l] : NULL;
#define MAMA__B(grp, suffix, field, ...) (MAMA__NAME("%sh.%d.%s", tp, l, suffix), \
        mama__param(m, bind, cur, n, grp, &wb->field, gb ? &gb->field : NULL, __VA_ARGS__))
#define MAMA__BH(grp, suffix, field, hfield, ...) (MAMA__NAME("%sh.%d.%s", tp, l, suffix), \
        mama__param_h(m, bind, cur, n, grp, &wb->field, gb ? &gb->field : NULL, &wb->hfield, __VA_ARGS__))
        MAMA__B(tg, "ln_1.weight", ln1_w, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "ln_1.bias", ln1_b, 1, Dt, 1, 1, 1);
        MAMA__BH(tg, "attn.c_attn.weight", attn_w, attn_wh, 2, Dt, 3 * Dt, 1, 1);
        MAMA__B(tg, "attn.c_attn.bias", attn_b, 1, 3 * Dt, 1, 1, 1);
        if (c->text_mode == MAMA_TEXT_LORA) {
            MAMA__B(MAMA_GROUP_TRAIN, "attn.c_attn.lora_A.default.weight", lora_a, 2, c->lora_rank, Dt, 1, 1);
            MAMA__B(MAMA_GROUP_TRAIN, "attn.c_attn.lora_B.default.weight", lora_b, 2, 3 * Dt, c->lora_rank, 1, 1);
        }
        MAMA__BH(tg, "attn.c_proj.weight", attn_proj_w, attn_proj_wh, 2, Dt, Dt, 1, 1);
        MAMA__B(tg, "attn.c_proj.bias", attn_proj_b, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "ln_2.weight", ln2_w, 1, Dt, 1, 1, 1);
        MAMA__B(tg, "ln_2.bias", ln2_b, 1, Dt, 1, 1, 1);
        MAMA__BH(tg, "mlp.c_fc.weight", fc_w, fc_wh, 2, Dt, 4 * Dt, 1, 1);
        MAMA__B(tg, "mlp.c_fc.bias", fc_b, 1, 4 * Dt, 1, 1, 1);
        MAMA__BH(tg, "mlp.c_proj.weight", mlp_proj_w, mlp_proj_wh, 2, 4 * Dt, Dt, 1, 1);
        MAMA__B(tg, "mlp.c_proj.bias", mlp_proj_b, 1, Dt, 1, 1, 1);
#undef MAMA__B
#undef MAMA__BH
    }
    MAMA__NAME("%sln_f.weight", tp); MAMA__P(tg, ln_f_w, 1, Dt, 1, 1, 1);
    MAMA__NAME("%sln_f.bias", tp); MAMA__P(tg, ln_f_b, 1, Dt, 1, 1, 1);
    MAMA__NAME("text_encoder_q.global_embed.weight"); MAMA__P(MAMA_GROUP_TRAIN, txt_global_w, 2, E, Dt, 1, 1);
    MAMA__NAME("text_encoder_q.global_embed.bias"); MAMA__P(MAMA_GROUP_TRAIN, txt_global_b, 1, E, 1, 1, 1);
    mama__visit_local_head(m, bind, cur, "text_encoder_q.local_embed.", Dt, &w->txt_local, g ? &g->txt_local : NULL);
    /* SimCLR projection (multi-view branch) */
    MAMA__NAME("simclr_proj.layers.0.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.w1, 2, D, D, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.bn1_w, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.bias"); MAMA__P(MAMA_GROUP_LATE, simclr.bn1_b, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.running_mean"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn1_mean, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.1.running_var"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn1_var, 1, D, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.3.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.w2, 2, E, D, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.weight"); MAMA__P(MAMA_GROUP_LATE, simclr.bn2_w, 1, E, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.bias"); MAMA__P(MAMA_GROUP_LATE, simclr.bn2_b, 1, E, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.running_mean"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn2_mean, 1, E, 1, 1, 1);
    MAMA__NAME("simclr_proj.layers.4.running_var"); MAMA__P(MAMA_GROUP_BUFFER, simclr.bn2_var, 1, E, 1, 1, 1);
    MAMA__NAME("logit_scale"); MAMA__P(MAMA_GROUP_TRAIN, logit_scale, 0, 1, 1, 1, 1);
    MAMA__NAME("local_scale"); MAMA__P(MAMA_GROUP_LATE, local_scale, 0, 1, 1, 1, 1);
#undef MAMA__P
#undef MAMA__PH
#undef MAMA__NAME
}

/* ---- 4.3 Initialisation (SPEC A.5, training from scratch) -------------- */

static void mama__fill_normal_serial(float *x, size_t n, float std, mama_rng *r) {
    size_t i;
    for (i = 0; i < n; i++) {
        /* timm's trunc_normal_ cuts at the absolute values -2 and 2 */
        float v;
        do { v = std * mama_rng_normal(r); } while (v < -2.0f || v > 2.0f);
        x[i] = v;
    }
}
/* Tensors of 1M values and more (the base config's 2.7B text weights take
 * minutes on one core) are filled in 64K-value chunks across the threads,
 * chunk k from its own generator seeded with (one draw of r, k): the
 * values depend on the seed only, never on the thread count.  Smaller
 * tensors (all of the tiny preset's) use r directly. */
#define MAMA__INIT_CHUNK 65536
static void mama__fill_normal(float *x, size_t n, float std, mama_rng *r) {
    long long nch, ch;
    uint64_t base;
    if (n < ((size_t)1 << 20)) {
        mama__fill_normal_serial(x, n, std, r);
        return;
    }
    base = mama_rng_u64(r);
    nch = (long long)((n + MAMA__INIT_CHUNK - 1) / MAMA__INIT_CHUNK);
    MAMA__OPS_PAR_FOR(1)
    for (ch = 0; ch < nch; ch++) {
        mama_rng cr;
        size_t o = (size_t)ch * MAMA__INIT_CHUNK, len = n - o < MAMA__INIT_CHUNK ? n - o : MAMA__INIT_CHUNK;
        mama_rng_seed(&cr, base ^ ((uint64_t)(ch + 1) * 0x9E3779B97F4A7C15ull));
        mama__fill_normal_serial(x + o, len, std, &cr);
    }
}
static void mama__fill_uniform(float *x, size_t n, float bound, mama_rng *r) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = bound * (2.0f * mama_rng_uniform(r) - 1.0f);
}
static void mama__fill_const(float *x, size_t n, float v) {
    size_t i;
    for (i = 0; i < n; i++) x[i] = v;
}
/* N(0, std) into a tensor that may be kept in half precision (xh != NULL,
 * dtype dt): drawn in float32 from the same random stream either way, then
 * rounded, so a half-precision model is the float32 one rounded. */
static void mama__fill_normal_hx(float *x, uint16_t *xh, int dt, size_t n, float std, mama_rng *r) {
    float buf[1024];
    size_t i, k;
    int big = n >= ((size_t)1 << 20); /* mama__fill_normal's 64K chunks, each from its own generator */
    uint64_t base;
    mama_rng cr, *rr = r;
    if (!xh) {
        mama__fill_normal(x, n, std, r);
        return;
    }
    base = big ? mama_rng_u64(r) : 0;
    for (i = 0; i < n; i += k) {
        if (big && i % MAMA__INIT_CHUNK == 0) {
            mama_rng_seed(&cr, base ^ ((uint64_t)(i / MAMA__INIT_CHUNK + 1) * 0x9E3779B97F4A7C15ull));
            rr = &cr;
        }
        k = n - i < 1024 ? n - i : 1024;
        mama__fill_normal_serial(buf, k, std, rr);
        mama__f32_to_half_n(xh + i, buf, dt, k);
    }
}
/* PyTorch's default nn.Linear / nn.Conv1d init: kaiming_uniform(a=sqrt 5)
 * gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight, and the same
 * bound for the bias. */
static void mama__torch_default_linear(float *w, float *b, int out, int in, mama_rng *r) {
    float bound = 1.0f / sqrtf((float)in);
    mama__fill_uniform(w, (size_t)out * in, bound, r);
    if (b) mama__fill_uniform(b, (size_t)out, bound, r);
}
static void mama__init_local_head(const mama__local_head *h, int in, int H, int E, mama_rng *r) {
    mama__torch_default_linear(h->w1, h->b1, H, in, r);
    mama__fill_const(h->bn1_w, (size_t)H, 1.0f);
    mama__fill_const(h->bn1_b, (size_t)H, 0.0f);
    mama__fill_const(h->bn1_mean, (size_t)H, 0.0f);
    mama__fill_const(h->bn1_var, (size_t)H, 1.0f);
    mama__torch_default_linear(h->w2, h->b2, E, H, r);
    mama__fill_const(h->bn2_mean, (size_t)E, 0.0f);
    mama__fill_const(h->bn2_var, (size_t)E, 1.0f);
}

/* Initialise every tensor of `w` (host pointers; the caller uploads). */
static void mama__init_weights(const mama_config *c, const mama__weights *w, int N, uint64_t seed) {
    mama_rng r;
    int D = c->vision_dim, Dt = c->text_dim, E = c->embed_dim, H = c->local_hidden, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    float logit0 = logf(1.0f / 0.07f);
    mama_rng_seed(&r, seed);
    mama__fill_normal(w->cls_token, (size_t)D, 1e-6f, &r);
    mama__fill_normal(w->register_tokens, (size_t)c->registers * D, 1e-6f, &r);
    mama__fill_normal(w->pos_embed, (size_t)(1 + N) * D, 0.02f, &r);
    mama__fill_const(w->mask_token, (size_t)D, 0.0f);
    mama__fill_normal(w->patch_w, (size_t)D * pdim, 0.02f, &r);
    mama__fill_const(w->patch_b, (size_t)D, 0.0f);
    for (l = 0; l < c->vision_depth; l++) {
        const mama__vit_block *b = &w->vit[l];
        mama__fill_const(b->ln1_w, (size_t)D, 1.0f); mama__fill_const(b->ln1_b, (size_t)D, 0.0f);
        mama__fill_normal_hx(b->qkv_w, b->qkv_wh, c->frozen_dtype, (size_t)3 * D * D, 0.02f, &r);
        mama__fill_const(b->qkv_b, (size_t)3 * D, 0.0f);
        mama__fill_normal_hx(b->proj_w, b->proj_wh, c->frozen_dtype, (size_t)D * D, 0.02f, &r);
        mama__fill_const(b->proj_b, (size_t)D, 0.0f);
        mama__fill_const(b->ls1, (size_t)D, 1.0f);
        mama__fill_const(b->ln2_w, (size_t)D, 1.0f); mama__fill_const(b->ln2_b, (size_t)D, 0.0f);
        mama__fill_normal_hx(b->fc1_w, b->fc1_wh, c->frozen_dtype, (size_t)4 * D * D, 0.02f, &r);
        mama__fill_const(b->fc1_b, (size_t)4 * D, 0.0f);
        mama__fill_normal_hx(b->fc2_w, b->fc2_wh, c->frozen_dtype, (size_t)4 * D * D, 0.02f, &r);
        mama__fill_const(b->fc2_b, (size_t)D, 0.0f);
        mama__fill_const(b->ls2, (size_t)D, 1.0f);
    }
    mama__fill_const(w->norm_w, (size_t)D, 1.0f);
    mama__fill_const(w->norm_b, (size_t)D, 0.0f);
    mama__torch_default_linear(w->img_global_w, w->img_global_b, E, D, &r);
    mama__init_local_head(&w->img_local, D, H, E, &r);
    /* GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 depth) */
    mama__fill_normal_hx(w->wte, w->wte_h, c->frozen_dtype, (size_t)c->vocab_size * Dt, 0.02f, &r);
    mama__fill_normal(w->wpe, (size_t)c->context * Dt, 0.02f, &r);
    for (l = 0; l < c->text_depth; l++) {
        const mama__gpt_block *b = &w->gpt[l];
        float proj_std = 0.02f / sqrtf(2.0f * (float)c->text_depth);
        mama__fill_const(b->ln1_w, (size_t)Dt, 1.0f); mama__fill_const(b->ln1_b, (size_t)Dt, 0.0f);
        mama__fill_normal_hx(b->attn_w, b->attn_wh, c->frozen_dtype, (size_t)3 * Dt * Dt, 0.02f, &r);
        mama__fill_const(b->attn_b, (size_t)3 * Dt, 0.0f);
        if (b->lora_a) {
            mama__fill_uniform(b->lora_a, (size_t)c->lora_rank * Dt, 1.0f / sqrtf((float)Dt), &r);
            mama__fill_const(b->lora_b, (size_t)3 * Dt * c->lora_rank, 0.0f);
        }
        mama__fill_normal_hx(b->attn_proj_w, b->attn_proj_wh, c->frozen_dtype, (size_t)Dt * Dt, proj_std, &r);
        mama__fill_const(b->attn_proj_b, (size_t)Dt, 0.0f);
        mama__fill_const(b->ln2_w, (size_t)Dt, 1.0f); mama__fill_const(b->ln2_b, (size_t)Dt, 0.0f);
        mama__fill_normal_hx(b->fc_w, b->fc_wh, c->frozen_dtype, (size_t)4 * Dt * Dt, 0.02f, &r);
        mama__fill_const(b->fc_b, (size_t)4 * Dt, 0.0f);
        mama__fill_normal_hx(b->mlp_proj_w, b->mlp_proj_wh, c->frozen_dtype, (size_t)4 * Dt * Dt, proj_std, &r);
        mama__fill_const(b->mlp_proj_b, (size_t)Dt, 0.0f);
    }
    mama__fill_const(w->ln_f_w, (size_t)Dt, 1.0f);
    mama__fill_const(w->ln_f_b, (size_t)Dt, 0.0f);
    mama__torch_default_linear(w->txt_global_w, w->txt_global_b, E, Dt, &r);
    mama__init_local_head(&w->txt_local, Dt, H, E, &r);
    mama__torch_default_linear(w->simclr.w1, NULL, D, D, &r);
    mama__fill_const(w->simclr.bn1_w, (size_t)D, 1.0f); mama__fill_const(w->simclr.bn1_b, (size_t)D, 0.0f);
    mama__fill_const(w->simclr.bn1_mean, (size_t)D, 0.0f); mama__fill_const(w->simclr.bn1_var, (size_t)D, 1.0f);
    mama__torch_default_linear(w->simclr.w2, NULL, E, D, &r);
    mama__fill_const(w->simclr.bn2_w, (size_t)E, 1.0f); mama__fill_const(w->simclr.bn2_b, (size_t)E, 0.0f);
    mama__fill_const(w->simclr.bn2_mean, (size_t)E, 0.0f); mama__fill_const(w->simclr.bn2_var, (size_t)E, 1.0f);
    *w->logit_scale = logit0;
    *w->local_scale = logit0;
}

/* ---- 4.4 The activation arena.  One function lays it out; called with
 * base == NULL it only measures, so size and layout cannot disagree. */
static size_t mama__round16(size_t n) { return (n + 15) & ~(size_t)15; }

static size_t mama__layout_acts(mama_model *m, float *base) {
    const mama_config *c = &m->cfg;
    mama__acts *a = &m->a;
    size_t off = 0;
    int B = m->max_batch, Bv = 2 * m->max_batch, Tv = m->n_vtok, N = m->n_patches, T = c->context;
    int D = c->vision_dim, Dt = c->text_dim, E = c->embed_dim, Hd = c->local_hidden;
    int Hv = c->vision_heads, Ht = c->text_heads, r = c->lora_rank;
    int S = B * MAMA_MAX_SENTENCES, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    size_t Rv = (size_t)Bv * Tv, Rt = (size_t)B * T;
    int vblocks = c->grad_checkpoint || c->inference ? 1 : c->vision_depth;
    int tblocks = c->grad_checkpoint || c->inference ? 1 : c->text_depth;
    size_t Rmax = Rv > Rt ? Rv : Rt;
    int Dmax = D > Dt ? D : Dt;
#define MAMA__F(ptr, n) do { (ptr) = base ? base + off : NULL; off += mama__round16((size_t)(n)); } while (0)
#define MAMA__I(ptr, n) do { (ptr) = base ? (int *)(void *)(base + off) : NULL; off += mama__round16((size_t)(n)); } while (0)
    MAMA__F(a->images, (size_t)Bv * c->in_chans * c->image_size * c->image_size);
    MAMA__F(a->cols, (size_t)Bv * N * pdim);
    MAMA__F(a->patch_out, (size_t)Bv * N * D);
    for (l = 0; l <= c->vision_depth; l++) MAMA__F(a->vres[l], Rv * D);
    if (c->inference) { /* one residual stream updated in place, one set of block buffers (mama__vit_block_infer) */
        mama__block_acts *k = &a->vblk[0];
        for (l = 1; l <= c->vision_depth; l++) a->vres[l] = a->vres[0];
        off -= c->vision_depth * mama__round16(Rv * D);
        MAMA__F(k->ln1, Rv * D); MAMA__F(k->ln1_mean, Rv); MAMA__F(k->ln1_rstd, Rv);
        MAMA__F(k->qkv, Rv * 3 * D); MAMA__F(k->lse, (size_t)Bv * Hv * Tv); MAMA__F(k->xmid, Rv * D);
        MAMA__F(k->fc, Rv * 4 * D);
        k->att = k->ln1;
        vblocks = 0;
    }
    for (l = 0; l < vblocks; l++) {
        mama__block_acts *k = &a->vblk[l];
        MAMA__F(k->ln1, Rv * D); MAMA__F(k->ln1_mean, Rv); MAMA__F(k->ln1_rstd, Rv);
        MAMA__F(k->qkv, Rv * 3 * D); MAMA__F(k->att, Rv * D); MAMA__F(k->lse, (size_t)Bv * Hv * Tv);
        MAMA__F(k->proj, Rv * D); MAMA__F(k->xmid, Rv * D);
        MAMA__F(k->ln2, Rv * D); MAMA__F(k->ln2_mean, Rv); MAMA__F(k->ln2_rstd, Rv);
        MAMA__F(k->fc, Rv * 4 * D); MAMA__F(k->gelu, Rv * 4 * D); MAMA__F(k->fc2, Rv * D);
    }
    MAMA__F(a->vpooled, (size_t)Bv * D); MAMA__F(a->img_g, (size_t)Bv * E); MAMA__F(a->img_emb, (size_t)Bv * E);
    MAMA__F(a->img_gnorm, Bv);
    MAMA__F(a->vnorm, (size_t)B * Tv * D); MAMA__F(a->vnorm_mean, (size_t)B * Tv); MAMA__F(a->vnorm_rstd, (size_t)B * Tv);
    MAMA__F(a->patches, (size_t)B * N * D); MAMA__I(a->patch_idx, (size_t)B * N);
    MAMA__F(a->il_h1, (size_t)B * N * Hd); MAMA__F(a->il_bn1, (size_t)B * N * Hd);
    MAMA__F(a->il_bn1_mean, Hd); MAMA__F(a->il_bn1_rstd, Hd); MAMA__F(a->il_relu, (size_t)B * N * Hd);
    MAMA__F(a->il_h2, (size_t)B * N * E); MAMA__F(a->il_bn2, (size_t)B * N * E);
    MAMA__F(a->il_bn2_mean, E); MAMA__F(a->il_bn2_rstd, E);
    MAMA__F(a->p_emb, (size_t)B * N * E); MAMA__F(a->p_norm, (size_t)B * N);
    /* text */
    MAMA__I(a->ids, Rt); MAMA__I(a->pos_ids, Rt); MAMA__I(a->key_valid, Rt); MAMA__F(a->pool_mask, Rt);
    for (l = 0; l <= c->text_depth; l++) MAMA__F(a->tres[l], Rt * Dt);
    for (l = 0; l < tblocks; l++) {
        mama__block_acts *k = &a->tblk[l];
        MAMA__F(k->ln1, Rt * Dt); MAMA__F(k->ln1_mean, Rt); MAMA__F(k->ln1_rstd, Rt);
        MAMA__F(k->qkv, Rt * 3 * Dt);
        if (c->text_mode == MAMA_TEXT_LORA) { MAMA__F(k->lora_in, Rt * Dt); MAMA__F(k->lora_u, Rt * r); }
        MAMA__F(k->att, Rt * Dt); MAMA__F(k->lse, (size_t)B * Ht * T);
        MAMA__F(k->xmid, Rt * Dt);
        MAMA__F(k->ln2, Rt * Dt); MAMA__F(k->ln2_mean, Rt); MAMA__F(k->ln2_rstd, Rt);
        MAMA__F(k->fc, Rt * 4 * Dt); MAMA__F(k->gelu, Rt * 4 * Dt);
    }
    MAMA__F(a->hidden, Rt * Dt); MAMA__F(a->lnf_mean, Rt); MAMA__F(a->lnf_rstd, Rt);
    MAMA__F(a->tpool, (size_t)B * Dt); MAMA__F(a->txt_g, (size_t)B * E); MAMA__F(a->txt_emb, (size_t)B * E);
    MAMA__F(a->txt_gnorm, B);
    MAMA__I(a->sent_idx, S); MAMA__I(a->sent_seg, B + 1); MAMA__I(a->img_seg, B + 1);
    MAMA__F(a->sent, (size_t)S * Dt);
    MAMA__F(a->tl_h1, (size_t)S * Hd); MAMA__F(a->tl_bn1, (size_t)S * Hd);
    MAMA__F(a->tl_bn1_mean, (size_t)B * Hd); MAMA__F(a->tl_bn1_rstd, (size_t)B * Hd);
    MAMA__F(a->tl_relu, (size_t)S * Hd); MAMA__F(a->tl_h2, (size_t)S * E); MAMA__F(a->tl_bn2, (size_t)S * E);
    MAMA__F(a->tl_bn2_mean, (size_t)B * E); MAMA__F(a->tl_bn2_rstd, (size_t)B * E);
    MAMA__F(a->s_emb, (size_t)S * E); MAMA__F(a->s_norm, S);
    /* simclr */
    MAMA__F(a->sc_h1, (size_t)Bv * D); MAMA__F(a->sc_bn1, (size_t)Bv * D);
    MAMA__F(a->sc_bn1_mean, 2 * D); MAMA__F(a->sc_bn1_rstd, 2 * D); MAMA__F(a->sc_relu, (size_t)Bv * D);
    MAMA__F(a->sc_h2, (size_t)Bv * E); MAMA__F(a->sc_z, (size_t)Bv * E);
    MAMA__F(a->sc_bn2_mean, 2 * E); MAMA__F(a->sc_bn2_rstd, 2 * E);
    MAMA__F(a->sc_zn, (size_t)Bv * E); MAMA__F(a->sc_norm, Bv);
    /* losses */
    MAMA__F(a->logits, B * B); MAMA__F(a->logits_t, B * B); MAMA__F(a->ce_loss, 2 * Bv);
    MAMA__F(a->ce_probs, B * B); MAMA__F(a->ce_probs_t, B * B);
    MAMA__F(a->dlogits, B * B); MAMA__F(a->dlogits_t, B * B); MAMA__F(a->ce_dloss, Bv);
    MAMA__I(a->targets_diag, B); MAMA__I(a->targets_ntx, Bv);
    MAMA__F(a->ntx_sim, Bv * Bv); MAMA__F(a->ntx_probs, Bv * Bv); MAMA__F(a->ntx_loss, Bv);
    MAMA__F(a->ntx_dsim, Bv * Bv); MAMA__F(a->ntx_dloss, Bv);
    MAMA__F(a->sla_sim, (size_t)B * N * S); MAMA__F(a->sla_simt, (size_t)B * N * S);
    MAMA__F(a->sla_rowmax, (size_t)B * N * B); MAMA__I(a->sla_rowarg, (size_t)B * N * B);
    MAMA__F(a->sla_colmax, (size_t)S * B); MAMA__I(a->sla_colarg, (size_t)S * B);
    MAMA__F(a->sla_avg, (size_t)B * S);
    MAMA__F(a->sla_t2i, B * B); MAMA__F(a->sla_t2i_t, B * B); MAMA__F(a->sla_i2t, B * B);
    MAMA__F(a->sla_dsim, (size_t)B * N * S); MAMA__F(a->sla_dsimt, (size_t)B * N * S);
    MAMA__F(a->sla_drowmax, (size_t)B * N * B); MAMA__F(a->sla_dcolmax, (size_t)S * B);
    MAMA__F(a->sla_dt2i, B * B); MAMA__F(a->sla_dt2i_t, B * B); MAMA__F(a->sla_di2t, B * B);
    if (c->inference) return off; /* no gradient scratch */
    /* gradient scratch, shared by both towers where shapes allow */
    MAMA__F(a->d_img_emb, (size_t)Bv * E); MAMA__F(a->d_img_g, (size_t)Bv * E); MAMA__F(a->d_vpooled, (size_t)Bv * D);
    MAMA__F(a->d_vx, Rv * D); MAMA__F(a->d_vx2, Rv * D);
    MAMA__F(a->d_vnorm, (size_t)B * Tv * D); MAMA__F(a->d_patches, (size_t)B * N * D);
    MAMA__F(a->d_patch_out, (size_t)Bv * N * D);
    MAMA__F(a->d_rows_d, Rmax * Dmax); MAMA__F(a->d_rows_d2, Rmax * Dmax); MAMA__F(a->d_rows_3d, Rmax * 3 * Dmax);
    MAMA__F(a->d_rows_4d, Rmax * 4 * Dmax); MAMA__F(a->d_rows_4d2, Rmax * 4 * Dmax);
    MAMA__F(a->d_rows_r, Rt * (size_t)(r > 0 ? r : 1) + Rt * Dt);
    MAMA__F(a->d_txt_emb, (size_t)B * E); MAMA__F(a->d_txt_g, (size_t)B * E); MAMA__F(a->d_tpool, (size_t)B * Dt);
    MAMA__F(a->d_hidden, Rt * Dt); MAMA__F(a->d_tx, Rt * Dt); MAMA__F(a->d_tx2, Rt * Dt);
    MAMA__F(a->d_il_a, (size_t)B * N * Hd); MAMA__F(a->d_il_b, (size_t)B * N * Hd);
    MAMA__F(a->d_il_e, (size_t)B * N * E); MAMA__F(a->d_il_e2, (size_t)B * N * E); MAMA__F(a->d_p_emb, (size_t)B * N * E);
    MAMA__F(a->d_tl_a, (size_t)S * Hd); MAMA__F(a->d_tl_b, (size_t)S * Hd);
    MAMA__F(a->d_tl_e, (size_t)S * E); MAMA__F(a->d_tl_e2, (size_t)S * E); MAMA__F(a->d_s_emb, (size_t)S * E);
    MAMA__F(a->d_sent, (size_t)S * Dt);
    MAMA__F(a->d_sc_zn, (size_t)Bv * E); MAMA__F(a->d_sc_z, (size_t)Bv * E); MAMA__F(a->d_sc_e, (size_t)Bv * E);
    MAMA__F(a->d_sc_a, (size_t)Bv * D); MAMA__F(a->d_sc_b, (size_t)Bv * D);
#undef MAMA__F
#undef MAMA__I
    return off;
}

/* ---- 4.5 Creating and freeing a model ---------------------------------- */

MAMA_API void mama_model_free(mama_model *m) {
    if (!m) return;
    mama__dp_free(m); /* first: it waits for any gradient all-reduce still running on m->grads */
    if (m->be) {
        if (m->params) m->be->free(m->be, m->params);
        if (m->grads) m->be->free(m->be, m->grads);
        if (m->params_half) m->be->free(m->be, m->params_half);
        if (m->arena) m->be->free(m->be, m->arena);
        if (m->d_acc) m->be->free(m->be, m->d_acc);
        if (m->h_stage) { m->be->sync(m->be); m->be->host_free(m->be, m->h_stage); }
    }
    mama_free(m->info);
    mama_free(m->w.vit); mama_free(m->g.vit);
    mama_free(m->w.gpt); mama_free(m->g.gpt);
    mama_free(m->a.vres); mama_free(m->a.tres);
    mama_free(m->a.vblk); mama_free(m->a.tblk);
    mama_free(m->h_ints); mama_free(m->h_floats); mama_free(m->h_sent_seg);
    mama_free(m);
}

/* Host copies of the tiny constant index arrays (targets, positions). */
static mama_status mama__upload_constants(mama_model *m) {
    mama_backend *be = m->be;
    int B = m->max_batch, T = m->cfg.context, i;
    int *tmp;
    MAMA_TRY(mama_alloc((void **)&tmp, sizeof(int) * (size_t)(B * T > 2 * B ? B * T : 2 * B), "model constants"));
    for (i = 0; i < B * T; i++) tmp[i] = i % T;
    if (be->to_device(be, m->a.pos_ids, tmp, sizeof(int) * (size_t)B * T) != MAMA_OK) goto fail;
    mama_free(tmp);
    return MAMA_OK;
fail:
    mama_free(tmp);
    return MAMA_ERR_BACKEND;
}

/* max_numel > 0 (loading a file holding that many values): a config that
 * needs more weights is refused before the big allocations. */
static mama_status mama__model_alloc(mama_model **out, const mama_config *c, mama_backend *be, int max_batch,
                                     size_t max_numel) {
    mama_model *m;
    mama__bind bind;
    size_t total = 0;
    int g;
    *out = NULL;
    MAMA_TRY(mama_config_validate(c));
    if (!be) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_create: backend is NULL");
    if (max_batch < 1 || max_batch > 4096)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_create: max_batch %d out of range 1..4096", max_batch);
    MAMA_TRY(mama_calloc((void **)&m, sizeof *m, "model"));
    m->cfg = *c;
    m->be = be;
    /* half-precision frozen matrices: only where something is frozen and
     * the backend has the half-precision ops; the config then says what
     * the model really keeps */
    m->half_dtype = (c->frozen_dtype != MAMA_F32 && (c->text_mode != MAMA_TEXT_FULL || c->inference) && be->gemm_half &&
                     be->embedding_forward_half) ? c->frozen_dtype : MAMA_F32;
    m->cfg.frozen_dtype = m->half_dtype;
    m->max_batch = max_batch;
    m->n_patches = (c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    m->n_vtok = 1 + c->registers + m->n_patches;
#define MAMA__ALLOC(ptr, n, what) \
    if (mama_calloc((void **)&(ptr), sizeof(*(ptr)) * (size_t)(n), what) != MAMA_OK) goto fail
    MAMA__ALLOC(m->w.vit, c->vision_depth, "vision block table");
    MAMA__ALLOC(m->g.vit, c->vision_depth, "vision block table");
    MAMA__ALLOC(m->w.gpt, c->text_depth, "text block table");
    MAMA__ALLOC(m->g.gpt, c->text_depth, "text block table");
    MAMA__ALLOC(m->a.vres, c->vision_depth + 1, "vision residual table");
    MAMA__ALLOC(m->a.tres, c->text_depth + 1, "text residual table");
    MAMA__ALLOC(m->a.vblk, c->vision_depth, "vision activation table");
    MAMA__ALLOC(m->a.tblk, c->text_depth, "text activation table");
    MAMA__ALLOC(m->h_sent_seg, max_batch + 1, "sentence offsets");
    /* pass 0: count tensors and group sizes */
    mama__visit_params(m, NULL);
    MAMA__ALLOC(m->info, m->nparams, "parameter table");
    for (g = 0; g < 4; g++) { m->group_offset[g] = total; total += m->group_numel[g]; }
    if (max_numel && total + m->half_numel > max_numel) {
        size_t need = total + m->half_numel;
        mama_model_free(m);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "mama_config needs %zu weights, more than the %zu values the file holds",
                         need, max_numel);
    }
    if (be->alloc(be, (void **)&m->params, sizeof(float) * total) != MAMA_OK) goto fail;
    /* gradients for [train | late] only: frozen tensors and buffers have
     * none (nor AdamW moments, which cover the same range) */
    if (!c->inference &&
        be->alloc(be, (void **)&m->grads, sizeof(float) * (total - m->group_numel[2] - m->group_numel[3] + 1)) != MAMA_OK) goto fail;
    if (m->half_numel && be->alloc(be, (void **)&m->params_half, sizeof(uint16_t) * m->half_numel) != MAMA_OK) goto fail;
    /* defined contents before initialisation or loading fills them */
    if (be->zero(be, m->params, sizeof(float) * total) != MAMA_OK) goto fail;
    if (m->half_numel && be->zero(be, m->params_half, sizeof(uint16_t) * m->half_numel) != MAMA_OK) goto fail;
    /* pass 1: record names and offsets, bind pointers */
    bind.w = &m->w; bind.g = c->inference ? NULL : &m->g; bind.wbase = m->params; bind.gbase = m->grads;
    bind.hbase = m->params_half;
    m->nparams = 0;
    mama__visit_params(m, &bind);
    m->arena_floats = mama__layout_acts(m, NULL);
    if (be->alloc(be, (void **)&m->arena, sizeof(float) * m->arena_floats) != MAMA_OK) goto fail;
    if (be->zero(be, m->arena, sizeof(float) * m->arena_floats) != MAMA_OK) goto fail;
    mama__layout_acts(m, m->arena);
    if (c->grad_checkpoint || c->inference) {
        int l;
        for (l = 1; l < c->vision_depth; l++) m->a.vblk[l] = m->a.vblk[0];
        for (l = 1; l < c->text_depth; l++) m->a.tblk[l] = m->a.tblk[0];
    }
    MAMA__ALLOC(m->h_ints, (size_t)max_batch * c->context * 4 + 8 * (size_t)max_batch * m->n_patches, "host staging");
    MAMA__ALLOC(m->h_floats, (size_t)max_batch * c->context + (size_t)max_batch * max_batch * MAMA_MAX_SENTENCES, "host staging");
#undef MAMA__ALLOC
    if (mama__upload_constants(m) != MAMA_OK) goto fail;
    *out = m;
    return MAMA_OK;
fail:
    mama_model_free(m);
    return mama_last_error()[0] ? MAMA_ERR_NOMEM : MAMA_FAIL(MAMA_ERR_NOMEM, "mama_model_create failed");
}

/* Host-side view of the weights: the same visitor bound to a host buffer,
 * so initialisation and loading can work on host memory and upload once
 * (the backend may be a GPU). */
typedef struct mama__host_weights {
    float *data;
    size_t numel;
    uint16_t *half;             /* half-precision frozen matrices (half_numel) */
    size_t half_numel;
    int direct;                 /* data/half ARE the model's buffers (host-memory backend) */
    mama__weights w;
} mama__host_weights;

/* A backend whose device memory is host memory (the CPU and reference
 * tables): the host view can then bind the model's own buffers instead of
 * a staging copy, which for the 2.7B text tower saves a second copy of
 * every weight. */
static int mama__backend_is_host(const mama_backend *be) {
    return be->to_device == mama__ref_to_device && be->to_host == mama__ref_to_host;
}

static void mama__host_weights_free(mama__host_weights *h) {
    if (!h->direct) {
        mama_free(h->data);
        mama_free(h->half);
    }
    mama_free(h->w.vit);
    mama_free(h->w.gpt);
    memset(h, 0, sizeof *h);
}
/* A host view of the weights: the model's buffers themselves on a host
 * backend (h->direct), else zeroed staging buffers to fill and upload. */
static mama_status mama__host_weights_init(mama_model *m, mama__host_weights *h) {
    mama__bind bind;
    int saved = m->nparams;
    memset(h, 0, sizeof *h);
    h->numel = m->group_offset[3] + m->group_numel[3];
    h->half_numel = m->half_numel;
    h->direct = mama__backend_is_host(m->be);
    if (h->direct) {
        h->data = m->params;
        h->half = m->params_half;
    } else if (mama_calloc((void **)&h->data, sizeof(float) * h->numel, "host weights") != MAMA_OK ||
               (h->half_numel &&
                mama_calloc((void **)&h->half, sizeof(uint16_t) * h->half_numel, "host weights (half)") != MAMA_OK)) {
        mama__host_weights_free(h);
        return MAMA_ERR_NOMEM;
    }
    if (mama_calloc((void **)&h->w.vit, sizeof(mama__vit_block) * (size_t)m->cfg.vision_depth, "host weights") != MAMA_OK ||
        mama_calloc((void **)&h->w.gpt, sizeof(mama__gpt_block) * (size_t)m->cfg.text_depth, "host weights") != MAMA_OK) {
        mama__host_weights_free(h);
        return MAMA_ERR_NOMEM;
    }
    bind.w = &h->w; bind.g = NULL; bind.wbase = h->data; bind.gbase = NULL; bind.hbase = h->half;
    m->nparams = 0;
    mama__visit_params(m, &bind); /* rewrites the same info again */
    m->nparams = saved;
    return MAMA_OK;
}
/* model <-> host view (no-ops for a direct view) */
static mama_status mama__host_weights_download(mama_model *m, mama__host_weights *h) {
    if (h->direct) return MAMA_OK;
    MAMA_TRY(m->be->to_host(m->be, h->data, m->params, sizeof(float) * h->numel));
    if (h->half_numel) MAMA_TRY(m->be->to_host(m->be, h->half, m->params_half, sizeof(uint16_t) * h->half_numel));
    return MAMA_OK;
}
static mama_status mama__host_weights_upload(mama_model *m, mama__host_weights *h) {
    if (h->direct) return MAMA_OK;
    MAMA_TRY(m->be->to_device(m->be, m->params, h->data, sizeof(float) * h->numel));
    if (h->half_numel) MAMA_TRY(m->be->to_device(m->be, m->params_half, h->half, sizeof(uint16_t) * h->half_numel));
    return MAMA_OK;
}

/* init == 0 leaves the weights unset (mama_model_load fills every one). */
static mama_status mama__model_create(mama_model **out, const mama_config *c, mama_backend *be, int max_batch,
                                      uint64_t seed, int init, size_t max_numel) {
    mama_model *m;
    mama__host_weights h;
    mama_status s;
    *out = NULL;
    MAMA_TRY(mama__model_alloc(&m, c, be, max_batch, max_numel));
    if (!init) {
        *out = m;
        return MAMA_OK;
    }
    if (mama__host_weights_init(m, &h) != MAMA_OK) {
        mama_model_free(m);
        return MAMA_ERR_NOMEM;
    }
    mama__init_weights(&m->cfg, &h.w, m->n_patches, seed);
    s = mama__host_weights_upload(m, &h);
    mama__host_weights_free(&h);
    if (s != MAMA_OK) { mama_model_free(m); return s; }
    *out = m;
    return MAMA_OK;
}
MAMA_API mama_status mama_model_create(mama_model **out, const mama_config *c, mama_backend *be, int max_batch,
                                       uint64_t seed) {
    return mama__model_create(out, c, be, max_batch, seed, 1, 0);
}

/* ==========================================================================
 * 5. LAYERS AND TOWERS (forward beside backward): ViT (A.1), GPT-2 + LoRA
 *    (A.2), heads (A.3).  Thin compositions of backend ops.
 * ========================================================================== */

/* Linear in PyTorch's layout, W [out, in]:  y = x W^T + b.
 * Backward: dx += dy W,  dW += dy^T x,  db += sum_rows dy.  Any of dx, dW,
 * db may be NULL (frozen weights still pass gradient to their input). */
static void mama__linear_forward(mama_backend *be, float *y, const float *x, const float *W, const float *b,
                                 int M, int in, int out) {
    be->gemm(be, 0, 1, M, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    if (b) be->bias_add_forward(be, y, b, M, out);
}
static void mama__linear_backward_to(mama_backend *be, float *dx, float dx_beta, float *dW, float *db,
                                     const float *dy, const float *x, const float *W, int M, int in, int out) {
    if (dx) be->gemm(be, 0, 0, M, in, out, 1.0f, dy, out, W, in, dx_beta, dx, in);
    if (dW) be->gemm(be, 1, 0, out, in, M, 1.0f, dy, out, x, in, 1.0f, dW, in);
    if (db) be->bias_add_backward(be, db, dy, M, out);
}
/* accumulate into dx (+=), as every backward does */
static void mama__linear_backward(mama_backend *be, float *dx, float *dW, float *db, const float *dy,
                                  const float *x, const float *W, int M, int in, int out) {
    mama__linear_backward_to(be, dx, 1.0f, dW, db, dy, x, W, M, in, out);
}
/* GPT-2's Conv1D stores W as [in, out]:  y = x W + b.
 * Backward: dx += dy W^T,  dW += x^T dy. */
static void mama__conv1d_forward(mama_backend *be, float *y, const float *x, const float *W, const float *b,
                                 int M, int in, int out) {
    be->gemm(be, 0, 0, M, out, in, 1.0f, x, in, W, out, 0.0f, y, out);
    if (b) be->bias_add_forward(be, y, b, M, out);
}
static void mama__conv1d_backward_to(mama_backend *be, float *dx, float dx_beta, float *dW, float *db,
                                     const float *dy, const float *x, const float *W, int M, int in, int out) {
    if (dx) be->gemm(be, 0, 1, M, in, out, 1.0f, dy, out, W, out, dx_beta, dx, in);
    if (dW) be->gemm(be, 1, 0, in, out, M, 1.0f, x, in, dy, out, 1.0f, dW, out);
    if (db) be->bias_add_backward(be, db, dy, M, out);
}
/* The same for a weight that may be kept in half precision (Wh != NULL,
 * dtype m->half_dtype): such weights are frozen, so there is no dW/db. */
static void mama__conv1d_forward_h(mama_model *m, float *y, const float *x, const float *W, const uint16_t *Wh,
                                   const float *b, int M, int in, int out) {
    mama_backend *be = m->be;
    if (!Wh) {
        mama__conv1d_forward(be, y, x, W, b, M, in, out);
        return;
    }
    be->gemm_half(be, 0, 0, M, out, in, 1.0f, x, in, Wh, out, (int)m->half_dtype, 0.0f, y, out);
    if (b) be->bias_add_forward(be, y, b, M, out);
}
static void mama__conv1d_backward_h(mama_model *m, float *dx, float dx_beta, float *dW, float *db, const float *dy,
                                    const float *x, const float *W, const uint16_t *Wh, int M, int in, int out) {
    mama_backend *be = m->be;
    if (!Wh) {
        mama__conv1d_backward_to(be, dx, dx_beta, dW, db, dy, x, W, M, in, out);
        return;
    }
    if (dx) be->gemm_half(be, 0, 1, M, in, out, 1.0f, dy, out, Wh, out, (int)m->half_dtype, dx_beta, dx, in);
    if (db) be->bias_add_backward(be, db, dy, M, out);
}
static void mama__zero(mama_backend *be, float *x, size_t n) { be->zero(be, x, n * sizeof(float)); }

/* A distinct dropout seed per (step, layer, site), so masks never repeat
 * across sites and the backward regenerates exactly the forward's mask. */
static uint64_t mama__dropout_seed(uint64_t step_seed, int layer, int site) {
    uint64_t x = step_seed ^ ((uint64_t)(layer + 1) << 32) ^ (uint64_t)(site + 1);
    return mama__splitmix64(&x);
}

/* ---- 5.1 ViT block (pre-norm, LayerScale; SPEC A.1) -------------------
 *   xmid = x + ls1 * proj(attn(LN1(x)));   out = xmid + ls2 * fc2(gelu(fc1(LN2(xmid)))) */
static void mama__vit_block_forward(mama_model *m, const mama__vit_block *w, mama__block_acts *k,
                                    const float *x, float *out, int Bv) {
    mama_backend *be = m->be;
    int D = m->cfg.vision_dim, H = m->cfg.vision_heads, hd = D / H, T = m->n_vtok, rows = Bv * T;
    size_t n = (size_t)rows * D;
    be->layernorm_forward(be, k->ln1, k->ln1_mean, k->ln1_rstd, x, w->ln1_w, w->ln1_b, rows, D, 1e-6f);
    mama__linear_forward(be, k->qkv, k->ln1, w->qkv_w, w->qkv_b, rows, D, 3 * D);
    be->attention_forward(be, k->att, k->lse, k->qkv, NULL, Bv, T, H, hd, 0, 1.0f / sqrtf((float)hd), 0.0f, 0);
    mama__linear_forward(be, k->proj, k->att, w->proj_w, w->proj_b, rows, D, D);
    be->layerscale_forward(be, k->xmid, k->proj, w->ls1, rows, D);
    be->accumulate(be, k->xmid, x, 1.0f, n);
    be->layernorm_forward(be, k->ln2, k->ln2_mean, k->ln2_rstd, k->xmid, w->ln2_w, w->ln2_b, rows, D, 1e-6f);
    mama__linear_forward(be, k->fc, k->ln2, w->fc1_w, w->fc1_b, rows, D, 4 * D);
    be->gelu_forward(be, k->gelu, k->fc, (size_t)rows * 4 * D, 0);
    mama__linear_forward(be, k->fc2, k->gelu, w->fc2_w, w->fc2_b, rows, 4 * D, D);
    be->layerscale_forward(be, out, k->fc2, w->ls2, rows, D);
    be->accumulate(be, out, k->xmid, 1.0f, n);
}

/* y = res + gamma * act(x W^T + b) in one pass over y (be->linear_fused,
 * or its composition where the backend leaves the slot NULL). */
static void mama__linear_fused(mama_model *m, float *y, const float *x, const float *W, const uint16_t *Wh,
                               const float *b, int gelu, const float *gamma, const float *res, int M, int in, int out) {
    mama_backend *be = m->be;
    (be->linear_fused ? be->linear_fused : mama__linear_fused_compose)(be, M, out, in, x, W, Wh, (int)m->half_dtype, b,
                                                                      gelu, gamma, res, y);
}

/* The block for encoding only: mama__vit_block_forward's arithmetic with
 * the bias, GELU, LayerScale and residual in the GEMM epilogues and nothing
 * kept for a backward.  x is updated in place (k->xmid is the one other
 * stream); k->att may alias k->ln1 (the inference-only arena does). */
static void mama__vit_block_infer(mama_model *m, const mama__vit_block *w, mama__block_acts *k, float *x, int Bv) {
    mama_backend *be = m->be;
    int D = m->cfg.vision_dim, H = m->cfg.vision_heads, hd = D / H, rows = Bv * m->n_vtok;
    be->layernorm_forward(be, k->ln1, k->ln1_mean, k->ln1_rstd, x, w->ln1_w, w->ln1_b, rows, D, 1e-6f);
    mama__linear_fused(m, k->qkv, k->ln1, w->qkv_w, w->qkv_wh, w->qkv_b, 0, NULL, NULL, rows, D, 3 * D);
    be->attention_forward(be, k->att, k->lse, k->qkv, NULL, Bv, m->n_vtok, H, hd, 0, 1.0f / sqrtf((float)hd), 0.0f, 0);
    mama__linear_fused(m, k->xmid, k->att, w->proj_w, w->proj_wh, w->proj_b, 0, w->ls1, x, rows, D, D);
    be->layernorm_forward(be, k->ln1, k->ln1_mean, k->ln1_rstd, k->xmid, w->ln2_w, w->ln2_b, rows, D, 1e-6f);
    mama__linear_fused(m, k->fc, k->ln1, w->fc1_w, w->fc1_wh, w->fc1_b, 1, NULL, NULL, rows, D, 4 * D);
    mama__linear_fused(m, x, k->fc, w->fc2_w, w->fc2_wh, w->fc2_b, 0, w->ls2, k->xmid, rows, 4 * D, D);
}

/* dout -> dx (dx is overwritten); parameter gradients accumulate into gw. */
static void mama__vit_block_backward(mama_model *m, const mama__vit_block *w, const mama__vit_block *gw,
                                     const mama__block_acts *k, const float *x, const float *dout, float *dx, int Bv) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int D = m->cfg.vision_dim, H = m->cfg.vision_heads, hd = D / H, T = m->n_vtok, rows = Bv * T;
    size_t n = (size_t)rows * D, n4 = (size_t)rows * 4 * D;
    float *d_a = a->d_rows_d, *d_b = a->d_rows_d2, *d_4a = a->d_rows_4d, *d_4b = a->d_rows_4d2, *d_qkv = a->d_rows_3d;
    /* MLP branch: out = xmid + ls2 * fc2 */
    mama__zero(be, d_a, n);
    be->layerscale_backward(be, d_a, gw->ls2, dout, k->fc2, w->ls2, rows, D);
    mama__linear_backward_to(be, d_4a, 0.0f, gw->fc2_w, gw->fc2_b, d_a, k->gelu, w->fc2_w, rows, 4 * D, D);
    mama__zero(be, d_4b, n4);
    be->gelu_backward(be, d_4b, d_4a, k->fc, n4, 0);
    mama__linear_backward_to(be, d_b, 0.0f, gw->fc1_w, gw->fc1_b, d_4b, k->ln2, w->fc1_w, rows, D, 4 * D);
    be->copy(be, dx, dout, n * sizeof(float));
    be->layernorm_backward(be, dx, gw->ln2_w, gw->ln2_b, d_b, k->xmid, w->ln2_w, k->ln2_mean, k->ln2_rstd, rows, D);
    /* attention branch: xmid = x + ls1 * proj */
    mama__zero(be, d_a, n);
    be->layerscale_backward(be, d_a, gw->ls1, dx, k->proj, w->ls1, rows, D);
    mama__linear_backward_to(be, d_b, 0.0f, gw->proj_w, gw->proj_b, d_a, k->att, w->proj_w, rows, D, D);
    mama__zero(be, d_qkv, 3 * n);
    be->attention_backward(be, d_qkv, d_b, k->att, k->lse, k->qkv, NULL, Bv, T, H, hd, 0,
                           1.0f / sqrtf((float)hd), 0.0f, 0);
    mama__linear_backward_to(be, d_a, 0.0f, gw->qkv_w, gw->qkv_b, d_qkv, k->ln1, w->qkv_w, rows, D, 3 * D);
    be->layernorm_backward(be, dx, gw->ln1_w, gw->ln1_b, d_a, x, w->ln1_w, k->ln1_mean, k->ln1_rstd, rows, D);
}

/* ---- 5.2 GPT-2 block with LoRA on c_attn (SPEC A.2) -------------------
 *   qkv = LN1(x) W + b + (alpha/r) drop(LN1(x)) A^T B^T
 *   xmid = x + drop(c_proj(attn(qkv)));  out = xmid + drop(mlp(LN2(xmid))) */
typedef struct mama__text_step {
    int train_dropout;         /* dropout active this step */
    uint64_t seed;
    int pool_masked;           /* pool with pool_mask (real tokens, or a one-hot position) */
} mama__text_step;

static float mama__text_attn_scale(const mama_config *c, int layer) {
    float s = 1.0f / sqrtf((float)(c->text_dim / c->text_heads));
    return c->text_attn_layer_scale ? s / (float)(layer + 1) : s;
}

static void mama__gpt_block_forward(mama_model *m, int l, const mama__block_acts *k, const float *x, float *out,
                                    int B, const mama__text_step *ts) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    const mama__gpt_block *w = &m->w.gpt[l];
    int D = c->text_dim, H = c->text_heads, hd = D / H, T = c->context, rows = B * T, r = c->lora_rank;
    size_t n = (size_t)rows * D;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    be->layernorm_forward(be, k->ln1, k->ln1_mean, k->ln1_rstd, x, w->ln1_w, w->ln1_b, rows, D, 1e-5f);
    mama__conv1d_forward_h(m, k->qkv, k->ln1, w->attn_w, w->attn_wh, w->attn_b, rows, D, 3 * D);
    if (w->lora_a) {
        float lp = ts->train_dropout ? c->lora_dropout : 0.0f;
        be->dropout_forward(be, k->lora_in, k->ln1, n, lp, mama__dropout_seed(ts->seed, l, 0));
        be->gemm(be, 0, 1, rows, r, D, 1.0f, k->lora_in, D, w->lora_a, D, 0.0f, k->lora_u, r);
        be->gemm(be, 0, 1, rows, 3 * D, r, c->lora_alpha / (float)r, k->lora_u, r, w->lora_b, r, 1.0f, k->qkv, 3 * D);
    }
    be->attention_forward(be, k->att, k->lse, k->qkv, m->a.key_valid, B, T, H, hd, 1, mama__text_attn_scale(c, l),
                          p, mama__dropout_seed(ts->seed, l, 1));
    mama__conv1d_forward_h(m, k->xmid, k->att, w->attn_proj_w, w->attn_proj_wh, w->attn_proj_b, rows, D, D);
    if (p > 0) be->dropout_forward(be, k->xmid, k->xmid, n, p, mama__dropout_seed(ts->seed, l, 2));
    be->accumulate(be, k->xmid, x, 1.0f, n);
    be->layernorm_forward(be, k->ln2, k->ln2_mean, k->ln2_rstd, k->xmid, w->ln2_w, w->ln2_b, rows, D, 1e-5f);
    mama__conv1d_forward_h(m, k->fc, k->ln2, w->fc_w, w->fc_wh, w->fc_b, rows, D, 4 * D);
    be->gelu_forward(be, k->gelu, k->fc, (size_t)rows * 4 * D, 1);
    mama__conv1d_forward_h(m, out, k->gelu, w->mlp_proj_w, w->mlp_proj_wh, w->mlp_proj_b, rows, 4 * D, D);
    if (p > 0) be->dropout_forward(be, out, out, n, p, mama__dropout_seed(ts->seed, l, 3));
    be->accumulate(be, out, k->xmid, 1.0f, n);
}

/* The gradient before a dropout of rate p, given dy after it: written into
 * buf and returned, or dy itself when p = 0 (the identity needs no copy). */
static const float *mama__dropout_grad(mama_backend *be, float *buf, const float *dy, size_t n, float p,
                                       uint64_t seed) {
    if (p <= 0.0f) return dy;
    mama__zero(be, buf, n);
    be->dropout_backward(be, buf, dy, n, p, seed);
    return buf;
}

static void mama__gpt_block_backward(mama_model *m, int l, const mama__block_acts *k, const float *x,
                                     const float *dout, float *dx, int B, const mama__text_step *ts) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    const mama__gpt_block *w = &m->w.gpt[l], *gw = &m->g.gpt[l];
    int D = c->text_dim, H = c->text_heads, hd = D / H, T = c->context, rows = B * T, r = c->lora_rank;
    size_t n = (size_t)rows * D, n4 = (size_t)rows * 4 * D;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    float *d_a = a->d_rows_d, *d_b = a->d_rows_d2, *d_4a = a->d_rows_4d, *d_4b = a->d_rows_4d2, *d_qkv = a->d_rows_3d;
    const float *d_in;
    int need_dx;
    /* MLP branch */
    d_in = mama__dropout_grad(be, d_a, dout, n, p, mama__dropout_seed(ts->seed, l, 3));
    mama__conv1d_backward_h(m, d_4a, 0.0f, gw->mlp_proj_w, gw->mlp_proj_b, d_in, k->gelu, w->mlp_proj_w, w->mlp_proj_wh,
                            rows, 4 * D, D);
    mama__zero(be, d_4b, n4);
    be->gelu_backward(be, d_4b, d_4a, k->fc, n4, 1);
    mama__conv1d_backward_h(m, d_b, 0.0f, gw->fc_w, gw->fc_b, d_4b, k->ln2, w->fc_w, w->fc_wh, rows, D, 4 * D);
    be->copy(be, dx, dout, n * sizeof(float));
    be->layernorm_backward(be, dx, gw->ln2_w, gw->ln2_b, d_b, k->xmid, w->ln2_w, k->ln2_mean, k->ln2_rstd, rows, D);
    /* attention branch */
    d_in = mama__dropout_grad(be, d_a, dx, n, p, mama__dropout_seed(ts->seed, l, 2));
    mama__conv1d_backward_h(m, d_b, 0.0f, gw->attn_proj_w, gw->attn_proj_b, d_in, k->att, w->attn_proj_w, w->attn_proj_wh,
                            rows, D, D);
    mama__zero(be, d_qkv, 3 * n);
    be->attention_backward(be, d_qkv, d_b, k->att, k->lse, k->qkv, a->key_valid, B, T, H, hd, 1,
                           mama__text_attn_scale(c, l), p, mama__dropout_seed(ts->seed, l, 1));
    /* the first block of a LoRA tower passes no gradient down: nothing
     * below it trains (embeddings and its LayerNorm frozen), so the
     * largest product of its backward, d ln1 = dqkv W_attn^T, is skipped */
    need_dx = l > 0 || c->text_mode == MAMA_TEXT_FULL || gw->ln1_w || gw->ln1_b;
    mama__conv1d_backward_h(m, need_dx ? d_a : NULL, 0.0f, gw->attn_w, gw->attn_b, d_qkv, k->ln1, w->attn_w,
                            w->attn_wh, rows, D, 3 * D);
    if (w->lora_a) {
        /* qkv += s u B^T with u = drop(ln1) A^T:  dB += s dqkv^T u;
         * du = s dqkv B;  dA += du^T drop(ln1);  d ln1 += drop'(du A) */
        float s = c->lora_alpha / (float)r, lp = ts->train_dropout ? c->lora_dropout : 0.0f;
        float *du = a->d_rows_r, *dlin = a->d_rows_r + (size_t)rows * r;
        be->gemm(be, 1, 0, 3 * D, r, rows, s, d_qkv, 3 * D, k->lora_u, r, 1.0f, gw->lora_b, r);
        be->gemm(be, 0, 0, rows, r, 3 * D, s, d_qkv, 3 * D, w->lora_b, r, 0.0f, du, r);
        be->gemm(be, 1, 0, r, D, rows, 1.0f, du, r, k->lora_in, D, 1.0f, gw->lora_a, D);
        if (need_dx) {
            be->gemm(be, 0, 0, rows, D, r, 1.0f, du, r, w->lora_a, D, 0.0f, dlin, D);
            be->dropout_backward(be, d_a, dlin, n, lp, mama__dropout_seed(ts->seed, l, 0));
        }
    }
    if (need_dx)
        be->layernorm_backward(be, dx, gw->ln1_w, gw->ln1_b, d_a, x, w->ln1_w, k->ln1_mean, k->ln1_rstd, rows, D);
}

/* ---- 5.3 BatchNorm heads ------------------------------------------------
 * Local embedding head (A.3): per token, linear -> BN -> ReLU -> linear ->
 * BN (no affine).  `segs` (host, nseg+1 offsets) gives the row groups whose
 * BatchNorm statistics are computed together: all patches of the batch for
 * images (one segment), each caption's sentences for text. */
/* The backend's BatchNorm backward with the signature of the synchronised
 * one (section 12), so a head picks either by a flag. */
static void mama__bn_backward_local(mama_model *m, float *dx, float *dw, float *db, const float *dy, const float *x,
                                    const float *w, const float *mean, const float *rstd, int rows, int cols) {
    m->be->batchnorm_backward(m->be, dx, dw, db, dy, x, w, mean, rstd, rows, cols);
}

typedef struct mama__local_acts {
    float *h1, *bn1, *bn1_mean, *bn1_rstd, *relu, *h2, *bn2, *bn2_mean, *bn2_rstd, *emb, *norm;
} mama__local_acts;

/* sync: the BatchNorms run over the rows of every rank (data parallel,
 * section 12); only for a head whose statistics span the whole batch. */
static void mama__local_head_forward(mama_model *m, const mama__local_head *w, const mama__local_acts *k,
                                     const float *x, int rows, int in, const int *segs, int nseg, int train,
                                     int64_t *tracked, int sync) {
    mama_backend *be = m->be;
    int Hd = m->cfg.local_hidden, E = m->cfg.embed_dim, s;
    mama__linear_forward(be, k->h1, x, w->w1, w->b1, rows, in, Hd);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        if (sync && train)
            mama__dp_bn_forward(m, k->bn1 + (size_t)r0 * Hd, k->bn1_mean + (size_t)s * Hd, k->bn1_rstd + (size_t)s * Hd,
                                w->bn1_mean, w->bn1_var, k->h1 + (size_t)r0 * Hd, w->bn1_w, w->bn1_b, nr, Hd, 1e-5f, 0.1f);
        else
            be->batchnorm_forward(be, k->bn1 + (size_t)r0 * Hd, k->bn1_mean + (size_t)s * Hd,
                                  k->bn1_rstd + (size_t)s * Hd, w->bn1_mean, w->bn1_var, k->h1 + (size_t)r0 * Hd,
                                  w->bn1_w, w->bn1_b, nr, Hd, 1e-5f, 0.1f, train);
        if (train) tracked[0]++;
    }
    be->relu_forward(be, k->relu, k->bn1, (size_t)rows * Hd);
    mama__linear_forward(be, k->h2, k->relu, w->w2, w->b2, rows, Hd, E);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        if (sync && train)
            mama__dp_bn_forward(m, k->bn2 + (size_t)r0 * E, k->bn2_mean + (size_t)s * E, k->bn2_rstd + (size_t)s * E,
                                w->bn2_mean, w->bn2_var, k->h2 + (size_t)r0 * E, NULL, NULL, nr, E, 1e-5f, 0.1f);
        else
            be->batchnorm_forward(be, k->bn2 + (size_t)r0 * E, k->bn2_mean + (size_t)s * E, k->bn2_rstd + (size_t)s * E,
                                  w->bn2_mean, w->bn2_var, k->h2 + (size_t)r0 * E, NULL, NULL, nr, E, 1e-5f, 0.1f, train);
        if (train) tracked[1]++;
    }
    be->l2norm_forward(be, k->emb, k->norm, k->bn2, rows, E);
}

/* demb -> dx (accumulated); scratch: da, db (rows x Hd), de, de2 (rows x E) */
static void mama__local_head_backward(mama_model *m, const mama__local_head *w, const mama__local_head *gw,
                                      const mama__local_acts *k, const float *x, const float *demb, float *dx,
                                      int rows, int in, const int *segs, int nseg,
                                      float *da, float *db, float *de, float *de2, int sync) {
    mama_backend *be = m->be;
    int Hd = m->cfg.local_hidden, E = m->cfg.embed_dim, s;
    mama__zero(be, de, (size_t)rows * E);
    be->l2norm_backward(be, de, demb, k->emb, k->norm, rows, E);
    mama__zero(be, de2, (size_t)rows * E);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        (sync ? mama__dp_bn_backward : mama__bn_backward_local)(
            m, de2 + (size_t)r0 * E, NULL, NULL, de + (size_t)r0 * E, k->h2 + (size_t)r0 * E,
            NULL, k->bn2_mean + (size_t)s * E, k->bn2_rstd + (size_t)s * E, nr, E);
    }
    mama__linear_backward_to(be, da, 0.0f, gw->w2, gw->b2, de2, k->relu, w->w2, rows, Hd, E);
    mama__zero(be, db, (size_t)rows * Hd);
    be->relu_backward(be, db, da, k->relu, (size_t)rows * Hd);
    mama__zero(be, da, (size_t)rows * Hd);
    for (s = 0; s < nseg; s++) {
        int r0 = segs[s], nr = segs[s + 1] - segs[s];
        if (nr <= 0) continue;
        (sync ? mama__dp_bn_backward : mama__bn_backward_local)(
            m, da + (size_t)r0 * Hd, gw->bn1_w, gw->bn1_b, db + (size_t)r0 * Hd, k->h1 + (size_t)r0 * Hd, w->bn1_w,
            k->bn1_mean + (size_t)s * Hd, k->bn1_rstd + (size_t)s * Hd, nr, Hd);
    }
    mama__linear_backward(be, dx, gw->w1, gw->b1, da, x, w->w1, rows, in, Hd);
}

/* ---- 5.4 Tower forward and backward ------------------------------------ */

static mama__local_acts mama__img_local_acts(mama__acts *a) {
    mama__local_acts k;
    k.h1 = a->il_h1; k.bn1 = a->il_bn1; k.bn1_mean = a->il_bn1_mean; k.bn1_rstd = a->il_bn1_rstd;
    k.relu = a->il_relu; k.h2 = a->il_h2; k.bn2 = a->il_bn2; k.bn2_mean = a->il_bn2_mean;
    k.bn2_rstd = a->il_bn2_rstd; k.emb = a->p_emb; k.norm = a->p_norm;
    return k;
}
static mama__local_acts mama__txt_local_acts(mama__acts *a) {
    mama__local_acts k;
    k.h1 = a->tl_h1; k.bn1 = a->tl_bn1; k.bn1_mean = a->tl_bn1_mean; k.bn1_rstd = a->tl_bn1_rstd;
    k.relu = a->tl_relu; k.h2 = a->tl_h2; k.bn2 = a->tl_bn2; k.bn2_mean = a->tl_bn2_mean;
    k.bn2_rstd = a->tl_bn2_rstd; k.emb = a->s_emb; k.norm = a->s_norm;
    return k;
}

/* Vision tower over Bv images in a->images: patch embedding (as a GEMM over
 * im2col rows), tokens, blocks; then the pooled feature (mean of the
 * pre-norm tokens over ALL tokens) and the global embedding.  infer: the
 * blocks of mama__vit_block_infer on vres[0] in place (the same values,
 * nothing kept for a backward), the result copied to vres[depth]. */
static void mama__vision_forward_ex(mama_model *m, int Bv, int infer) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, E = c->embed_dim, N = m->n_patches, T = m->n_vtok, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    be->im2col_patches(be, a->cols, a->images, Bv, c->in_chans, c->image_size, c->image_size, c->patch_size);
    mama__linear_forward(be, a->patch_out, a->cols, m->w.patch_w, m->w.patch_b, Bv * N, pdim, D);
    be->vit_tokens_forward(be, a->vres[0], a->patch_out, m->w.cls_token, m->w.register_tokens, m->w.pos_embed,
                           Bv, N, c->registers, D);
    for (l = 0; l < c->vision_depth; l++) {
        if (infer) mama__vit_block_infer(m, &m->w.vit[l], &a->vblk[0], a->vres[0], Bv);
        else mama__vit_block_forward(m, &m->w.vit[l], &a->vblk[l], a->vres[l], a->vres[l + 1], Bv);
    }
    if (infer && a->vres[c->vision_depth] != a->vres[0])
        be->copy(be, a->vres[c->vision_depth], a->vres[0], sizeof(float) * (size_t)Bv * T * D);
    be->meanpool_forward(be, a->vpooled, a->vres[c->vision_depth], NULL, Bv, T, D);
    mama__linear_forward(be, a->img_g, a->vpooled, m->w.img_global_w, m->w.img_global_b, Bv, D, E);
    be->l2norm_forward(be, a->img_emb, a->img_gnorm, a->img_g, Bv, E);
}
static void mama__vision_forward(mama_model *m, int Bv) { mama__vision_forward_ex(m, Bv, 0); }

/* Patch tokens after the (frozen) final norm, for the first B images, and
 * their local embeddings. */
static void mama__vision_local_forward(mama_model *m, int B, int train) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, N = m->n_patches, T = m->n_vtok;
    int segs[2];
    mama__local_acts k = mama__img_local_acts(a);
    be->layernorm_forward(be, a->vnorm, a->vnorm_mean, a->vnorm_rstd, a->vres[c->vision_depth], m->w.norm_w,
                          m->w.norm_b, B * T, D, 1e-6f);
    be->embedding_forward(be, a->patches, a->patch_idx, a->vnorm, B * N, D);
    segs[0] = 0; segs[1] = B * N;
    mama__local_head_forward(m, &m->w.img_local, &k, a->patches, B * N, D, segs, 1, train, &m->bn_batches[0],
                             mama__dp_sync_bn(m));
}

/* Backward of the vision tower from d_img_emb (Bv rows), d_vpooled
 * (accumulated by the SimCLR branch) and d_patches (local branch, first B
 * images; may be skipped with has_local = 0). */
static void mama__vision_backward(mama_model *m, int Bv, int B, int has_local) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, E = c->embed_dim, N = m->n_patches, T = m->n_vtok, l;
    int pdim = c->in_chans * c->patch_size * c->patch_size;
    size_t rows = (size_t)Bv * T;
    float *dx = a->d_vx, *dx2 = a->d_vx2, *tmp;
    mama__zero(be, a->d_img_g, (size_t)Bv * E);
    be->l2norm_backward(be, a->d_img_g, a->d_img_emb, a->img_emb, a->img_gnorm, Bv, E);
    mama__linear_backward(be, a->d_vpooled, m->g.img_global_w, m->g.img_global_b, a->d_img_g, a->vpooled,
                          m->w.img_global_w, Bv, D, E);
    mama__dp_grads_ready(m, MAMA__HOOK_IMG_GLOBAL, 0);
    mama__zero(be, dx, rows * D);
    be->meanpool_backward(be, dx, a->d_vpooled, NULL, Bv, T, D);
    if (has_local) {
        /* norm is frozen: only the input gradient, scattered back to rows */
        mama__zero(be, a->d_vnorm, (size_t)B * T * D);
        be->embedding_backward(be, a->d_vnorm, a->d_patches, a->patch_idx, B * N, D);
        be->layernorm_backward(be, dx, NULL, NULL, a->d_vnorm, a->vres[c->vision_depth], m->w.norm_w,
                               a->vnorm_mean, a->vnorm_rstd, B * T, D);
    }
    for (l = c->vision_depth - 1; l >= 0; l--) {
        if (c->grad_checkpoint) /* recompute this block's activations */
            mama__vit_block_forward(m, &m->w.vit[l], &a->vblk[l], a->vres[l], a->vres[l + 1], Bv);
        mama__vit_block_backward(m, &m->w.vit[l], &m->g.vit[l], &a->vblk[l], a->vres[l], dx, dx2, Bv);
        mama__dp_grads_ready(m, MAMA__HOOK_VIT_BLOCK, l);
        tmp = dx; dx = dx2; dx2 = tmp;
    }
    /* tokens -> patch rows, cls, registers, pos_embed; then the patch GEMM */
    mama__zero(be, a->d_patch_out, (size_t)Bv * N * D);
    be->vit_tokens_backward(be, a->d_patch_out, m->g.cls_token, m->g.register_tokens, m->g.pos_embed, dx,
                            Bv, N, c->registers, D);
    mama__linear_backward(be, NULL, m->g.patch_w, m->g.patch_b, a->d_patch_out, a->cols, m->w.patch_w,
                          Bv * N, pdim, D);
    mama__dp_grads_ready(m, MAMA__HOOK_VIT_EMBED, 0);
}

/* Text tower over B captions (ids, key_valid, pool_mask, sentence indices
 * already uploaded). */
static void mama__text_forward(mama_model *m, int B, int S, const mama__text_step *ts, int train, int with_local) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->text_dim, E = c->embed_dim, T = c->context, rows = B * T, l;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    if (m->w.wte_h) be->embedding_forward_half(be, a->tres[0], a->ids, m->w.wte_h, (int)m->half_dtype, rows, D);
    else be->embedding_forward(be, a->tres[0], a->ids, m->w.wte, rows, D);
    be->embedding_forward(be, a->d_tx, a->pos_ids, m->w.wpe, rows, D);
    be->accumulate(be, a->tres[0], a->d_tx, 1.0f, (size_t)rows * D);
    if (p > 0) be->dropout_forward(be, a->tres[0], a->tres[0], (size_t)rows * D, p, mama__dropout_seed(ts->seed, -1, 0));
    for (l = 0; l < c->text_depth; l++) mama__gpt_block_forward(m, l, &a->tblk[l], a->tres[l], a->tres[l + 1], B, ts);
    be->layernorm_forward(be, a->hidden, a->lnf_mean, a->lnf_rstd, a->tres[c->text_depth], m->w.ln_f_w, m->w.ln_f_b,
                          rows, D, 1e-5f);
    be->meanpool_forward(be, a->tpool, a->hidden, ts->pool_masked ? a->pool_mask : NULL, B, T, D);
    mama__linear_forward(be, a->txt_g, a->tpool, m->w.txt_global_w, m->w.txt_global_b, B, D, E);
    be->l2norm_forward(be, a->txt_emb, a->txt_gnorm, a->txt_g, B, E);
    if (with_local && S > 0) {
        mama__local_acts k = mama__txt_local_acts(a);
        int replay = train && mama__dp_sync_bn(m); /* running statistics in global caption order */
        be->embedding_forward(be, a->sent, a->sent_idx, a->hidden, S, D);
        if (replay) mama__dp_text_bn_save(m);
        mama__local_head_forward(m, &m->w.txt_local, &k, a->sent, S, D, m->h_sent_seg, B, train, &m->bn_batches[2],
                                 0); /* per caption: local to its rank */
        if (replay) mama__dp_text_bn_replay(m, B, S);
    }
}

static void mama__text_backward(mama_model *m, int B, int S, const mama__text_step *ts, int has_local) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int D = c->text_dim, E = c->embed_dim, T = c->context, rows = B * T, l;
    float p = ts->train_dropout ? c->text_dropout : 0.0f;
    float *dx = a->d_tx, *dx2 = a->d_tx2, *tmp;
    mama__zero(be, a->d_txt_g, (size_t)B * E);
    be->l2norm_backward(be, a->d_txt_g, a->d_txt_emb, a->txt_emb, a->txt_gnorm, B, E);
    mama__zero(be, a->d_tpool, (size_t)B * D);
    mama__linear_backward(be, a->d_tpool, m->g.txt_global_w, m->g.txt_global_b, a->d_txt_g, a->tpool,
                          m->w.txt_global_w, B, D, E);
    mama__dp_grads_ready(m, MAMA__HOOK_TXT_GLOBAL, 0);
    mama__zero(be, a->d_hidden, (size_t)rows * D);
    be->meanpool_backward(be, a->d_hidden, a->d_tpool, ts->pool_masked ? a->pool_mask : NULL, B, T, D);
    if (has_local && S > 0) {
        mama__local_acts k = mama__txt_local_acts(a);
        mama__zero(be, a->d_sent, (size_t)S * D);
        mama__local_head_backward(m, &m->w.txt_local, &m->g.txt_local, &k, a->sent, a->d_s_emb, a->d_sent, S, D,
                                  m->h_sent_seg, B, a->d_tl_a, a->d_tl_b, a->d_tl_e, a->d_tl_e2, 0);
        be->embedding_backward(be, a->d_hidden, a->d_sent, a->sent_idx, S, D);
    }
    mama__dp_grads_ready(m, MAMA__HOOK_TXT_LOCAL, 0); /* every rank, whatever its S */
    if (c->text_mode == MAMA_TEXT_FROZEN) return; /* nothing below trains */
    mama__zero(be, dx, (size_t)rows * D);
    be->layernorm_backward(be, dx, m->g.ln_f_w, m->g.ln_f_b, a->d_hidden, a->tres[c->text_depth], m->w.ln_f_w,
                           a->lnf_mean, a->lnf_rstd, rows, D);
    mama__dp_grads_ready(m, MAMA__HOOK_LN_F, 0);
    for (l = c->text_depth - 1; l >= 0; l--) {
        if (c->grad_checkpoint)
            mama__gpt_block_forward(m, l, &a->tblk[l], a->tres[l], a->tres[l + 1], B, ts);
        mama__gpt_block_backward(m, l, &a->tblk[l], a->tres[l], dx, dx2, B, ts);
        mama__dp_grads_ready(m, MAMA__HOOK_GPT_BLOCK, l);
        tmp = dx; dx = dx2; dx2 = tmp;
    }
    if (c->text_mode == MAMA_TEXT_FULL) {
        mama__zero(be, dx2, (size_t)rows * D);
        be->dropout_backward(be, dx2, dx, (size_t)rows * D, p, mama__dropout_seed(ts->seed, -1, 0));
        be->embedding_backward(be, m->g.wte, dx2, a->ids, rows, D);
        be->embedding_backward(be, m->g.wpe, dx2, a->pos_ids, rows, D);
    }
    mama__dp_grads_ready(m, MAMA__HOOK_TXT_EMBED, 0);
}

/* SimCLR projection, called separately on the image half and the ext half
 * of the pooled features (each half its own BatchNorm statistics). */
static void mama__simclr_forward(mama_model *m, int B, int train) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama__simclr_head *w = &m->w.simclr;
    int D = m->cfg.vision_dim, E = m->cfg.embed_dim, h, sync = train && mama__dp_sync_bn(m);
    for (h = 0; h < 2; h++) {
        size_t oD = (size_t)h * B * D, oE = (size_t)h * B * E;
        mama__linear_forward(be, a->sc_h1 + oD, a->vpooled + oD, w->w1, NULL, B, D, D);
        if (sync)
            mama__dp_bn_forward(m, a->sc_bn1 + oD, a->sc_bn1_mean + h * D, a->sc_bn1_rstd + h * D, w->bn1_mean,
                                w->bn1_var, a->sc_h1 + oD, w->bn1_w, w->bn1_b, B, D, 1e-5f, 0.1f);
        else
            be->batchnorm_forward(be, a->sc_bn1 + oD, a->sc_bn1_mean + h * D, a->sc_bn1_rstd + h * D, w->bn1_mean,
                                  w->bn1_var, a->sc_h1 + oD, w->bn1_w, w->bn1_b, B, D, 1e-5f, 0.1f, train);
        be->relu_forward(be, a->sc_relu + oD, a->sc_bn1 + oD, (size_t)B * D);
        mama__linear_forward(be, a->sc_h2 + oE, a->sc_relu + oD, w->w2, NULL, B, D, E);
        if (sync)
            mama__dp_bn_forward(m, a->sc_z + oE, a->sc_bn2_mean + h * E, a->sc_bn2_rstd + h * E, w->bn2_mean,
                                w->bn2_var, a->sc_h2 + oE, w->bn2_w, w->bn2_b, B, E, 1e-5f, 0.1f);
        else
            be->batchnorm_forward(be, a->sc_z + oE, a->sc_bn2_mean + h * E, a->sc_bn2_rstd + h * E, w->bn2_mean,
                                  w->bn2_var, a->sc_h2 + oE, w->bn2_w, w->bn2_b, B, E, 1e-5f, 0.1f, train);
        if (train) { m->bn_batches[4]++; m->bn_batches[5]++; }
    }
}

/* d_sc_z (2B x E) -> d_vpooled (accumulated) */
static void mama__simclr_backward(mama_model *m, int B) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama__simclr_head *w = &m->w.simclr, *gw = &m->g.simclr;
    int D = m->cfg.vision_dim, E = m->cfg.embed_dim, h;
    void (*bn_backward)(mama_model *, float *, float *, float *, const float *, const float *, const float *,
                        const float *, const float *, int, int) =
        mama__dp_sync_bn(m) ? mama__dp_bn_backward : mama__bn_backward_local;
    mama__zero(be, a->d_sc_e, (size_t)2 * B * E);
    mama__zero(be, a->d_sc_a, (size_t)2 * B * D);
    mama__zero(be, a->d_sc_b, (size_t)2 * B * D);
    for (h = 0; h < 2; h++) {
        size_t oD = (size_t)h * B * D, oE = (size_t)h * B * E;
        bn_backward(m, a->d_sc_e + oE, gw->bn2_w, gw->bn2_b, a->d_sc_z + oE, a->sc_h2 + oE, w->bn2_w,
                    a->sc_bn2_mean + h * E, a->sc_bn2_rstd + h * E, B, E);
        mama__linear_backward(be, a->d_sc_a + oD, gw->w2, NULL, a->d_sc_e + oE, a->sc_relu + oD, w->w2, B, D, E);
        be->relu_backward(be, a->d_sc_b + oD, a->d_sc_a + oD, a->sc_relu + oD, (size_t)B * D);
        mama__zero(be, a->d_sc_a + oD, (size_t)B * D);
        bn_backward(m, a->d_sc_a + oD, gw->bn1_w, gw->bn1_b, a->d_sc_b + oD, a->sc_h1 + oD, w->bn1_w,
                    a->sc_bn1_mean + h * D, a->sc_bn1_rstd + h * D, B, D);
        mama__linear_backward(be, a->d_vpooled + oD, gw->w1, NULL, a->d_sc_a + oD, a->vpooled + oD, w->w1, B, D, D);
    }
}

/* ==========================================================================
 * 6. LOSSES AND THE TRAINING STEP (SPEC A.4)
 * ========================================================================== */

static float mama__read_scalar(mama_model *m, const float *dev) {
    float v = 0;
    m->be->to_host(m->be, &v, dev, sizeof v);
    return v;
}

/* The losses stay on the device: each adds its mean into a device double
 * (m->d_acc, zeroed per step), the temperatures are read as their logs by
 * the ops that use them, and their gradients are added in place, so a
 * step has no host round trip; 6.2 downloads the four terms once, and only
 * when the caller asks for them.  The arithmetic is the host's of before
 * (double sums in order, divided by the row count), so the CPU backend's
 * losses are the same bits. */
enum { MAMA__ACC_CLIP, MAMA__ACC_MV, MAMA__ACC_SYM, MAMA__ACC_SLA, MAMA__ACC_TMP, MAMA__ACC_N };

/* g[0] += (float)(a.b + c.d) on the device (c, d may be NULL) */
static void mama__add_dots(mama_model *m, float *g, const float *a, const float *b, const float *c, const float *d,
                           size_t n) {
    mama_backend *be = m->be;
    double *t = m->d_acc + MAMA__ACC_TMP;
    be->zero(be, t, sizeof(double));
    be->reduce_acc(be, t, a, b, n, 1.0);
    if (c) be->reduce_acc(be, t, c, d, n, 1.0);
    be->acc_to_scalar(be, g, t);
}

/* The CLIP objective on a B x B logit matrix L (rows: images, columns:
 * texts, matched pairs on the diagonal): CE over rows plus CE over columns,
 * each a mean over the batch, added to acc[0].  dL receives the whole
 * gradient (overwritten). */
static void mama__ce_both(mama_model *m, const float *L, float *dL, int B, double *acc) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    be->transpose(be, a->logits_t, L, B, B);
    be->cross_entropy_forward(be, a->ce_loss, a->ce_probs, L, a->targets_diag, B, B);
    be->cross_entropy_forward(be, a->ce_loss + B, a->ce_probs_t, a->logits_t, a->targets_diag, B, B);
    be->reduce_acc(be, acc, a->ce_loss, NULL, 2 * (size_t)B, (double)B);
    mama__zero(be, dL, (size_t)B * B);
    mama__zero(be, a->dlogits_t, (size_t)B * B);
    be->cross_entropy_backward(be, dL, a->ce_probs, a->targets_diag, a->ce_dloss, B, B);
    be->cross_entropy_backward(be, a->dlogits_t, a->ce_probs_t, a->targets_diag, a->ce_dloss, B, B);
    be->transpose(be, a->logits_t, a->dlogits_t, B, B); /* reuse as scratch */
    be->accumulate(be, dL, a->logits_t, 1.0f, (size_t)B * B);
}

/* Global CLIP loss between image embeddings Im and text embeddings Tx
 * (B x E each, L2-normalised): S = exp(logit_scale) Im Tx^T, the loss
 * added to acc[0].  Gradients accumulate into dIm, dT and the log-scale's
 * gradient (if dscale). */
static void mama__clip_loss(mama_model *m, const float *Im, const float *Tx, float *dIm, float *dT,
                            const float *log_scale, float *dscale, int B, double *acc) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int E = m->cfg.embed_dim;
    be->gemm_exp_alpha(be, 0, 1, B, B, E, log_scale, Im, E, Tx, E, 0.0f, a->logits, B);
    mama__ce_both(m, a->logits, a->dlogits, B, acc);
    if (!dIm) return;
    if (dscale) mama__add_dots(m, dscale, a->dlogits, a->logits, NULL, NULL, (size_t)B * B);
    be->gemm_exp_alpha(be, 0, 0, B, E, B, log_scale, a->dlogits, B, Tx, E, 1.0f, dIm, E);
    be->gemm_exp_alpha(be, 1, 0, B, E, B, log_scale, a->dlogits, B, Im, E, 1.0f, dT, E);
}

/* Multi-view NT-Xent (SimCLR, temperature 0.5) between the projections of
 * the image half and the ext half of sc_z; 2B-2 negatives per anchor. */
static void mama__ntxent_loss(mama_model *m, int B, int backward, double *acc) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int E = m->cfg.embed_dim, n2 = 2 * B;
    be->l2norm_forward(be, a->sc_zn, a->sc_norm, a->sc_z, n2, E);
    be->gemm(be, 0, 1, n2, n2, E, 2.0f, a->sc_zn, E, a->sc_zn, E, 0.0f, a->ntx_sim, n2);
    be->fill_diagonal(be, a->ntx_sim, n2, n2, -1e30f); /* an anchor is not its own negative */
    be->cross_entropy_forward(be, a->ntx_loss, a->ntx_probs, a->ntx_sim, a->targets_ntx, n2, n2);
    be->reduce_acc(be, acc, a->ntx_loss, NULL, (size_t)n2, (double)n2);
    if (!backward) return;
    mama__zero(be, a->ntx_dsim, (size_t)n2 * n2);
    be->cross_entropy_backward(be, a->ntx_dsim, a->ntx_probs, a->targets_ntx, a->ntx_dloss, n2, n2);
    /* sim = 2 zn zn^T  =>  dzn = 2 (dsim + dsim^T) zn */
    be->gemm(be, 0, 0, n2, E, n2, 2.0f, a->ntx_dsim, n2, a->sc_zn, E, 0.0f, a->d_sc_zn, E);
    be->gemm(be, 1, 0, n2, E, n2, 2.0f, a->ntx_dsim, n2, a->sc_zn, E, 1.0f, a->d_sc_zn, E);
    mama__zero(be, a->d_sc_z, (size_t)n2 * E);
    be->l2norm_backward(be, a->d_sc_z, a->d_sc_zn, a->sc_zn, a->sc_norm, n2, E);
}

/* Symmetric local alignment.  sim = p s^T between every patch of every
 * image and every sentence of every caption (one GEMM).  For image i and
 * caption j:  t2i = mean over j's sentences of the max over i's patches;
 * i2t = mean over i's patches of the max over j's sentences.  The maxima
 * are segment maxima (rows of sim grouped by caption, rows of sim^T grouped
 * by image); the sentence mean is a GEMM with an averaging matrix. */
static void mama__sla_loss(mama_model *m, int B, int S, int backward, double *acc) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    int E = m->cfg.embed_dim, N = m->n_patches, BN = B * N;
    const float *log_scale = m->w.local_scale;
    be->gemm(be, 0, 1, BN, S, E, 1.0f, a->p_emb, E, a->s_emb, E, 0.0f, a->sla_sim, S);
    be->transpose(be, a->sla_simt, a->sla_sim, BN, S);
    be->segment_max_forward(be, a->sla_rowmax, a->sla_rowarg, a->sla_sim, BN, S, a->sent_seg, B);
    be->meanpool_forward(be, a->sla_i2t, a->sla_rowmax, NULL, B, N, B);        /* i2t[i, j] */
    be->segment_max_forward(be, a->sla_colmax, a->sla_colarg, a->sla_simt, S, BN, a->img_seg, B);
    be->gemm(be, 0, 0, B, B, S, 1.0f, a->sla_avg, S, a->sla_colmax, B, 0.0f, a->sla_t2i_t, B); /* t2i[i,j] at [j,i] */
    be->scale_exp(be, a->sla_t2i_t, log_scale, (size_t)B * B);
    be->scale_exp(be, a->sla_i2t, log_scale, (size_t)B * B);
    /* CE in both directions is symmetric in the orientation of the matrix */
    mama__ce_both(m, a->sla_t2i_t, a->sla_dt2i_t, B, acc);
    mama__ce_both(m, a->sla_i2t, a->sla_di2t, B, acc);
    if (!backward) return;
    if (m->g.local_scale)
        mama__add_dots(m, m->g.local_scale, a->sla_dt2i_t, a->sla_t2i_t, a->sla_di2t, a->sla_i2t, (size_t)B * B);
    be->scale_exp(be, a->sla_dt2i_t, log_scale, (size_t)B * B);
    be->scale_exp(be, a->sla_di2t, log_scale, (size_t)B * B);
    /* back through the averaging and the maxima to sim and sim^T */
    be->gemm(be, 1, 0, S, B, B, 1.0f, a->sla_avg, S, a->sla_dt2i_t, B, 0.0f, a->sla_dcolmax, B);
    mama__zero(be, a->sla_dsimt, (size_t)S * BN);
    be->segment_max_backward(be, a->sla_dsimt, a->sla_dcolmax, a->sla_colarg, S, BN, B);
    mama__zero(be, a->sla_drowmax, (size_t)BN * B);
    be->meanpool_backward(be, a->sla_drowmax, a->sla_di2t, NULL, B, N, B);
    mama__zero(be, a->sla_dsim, (size_t)BN * S);
    be->segment_max_backward(be, a->sla_dsim, a->sla_drowmax, a->sla_rowarg, BN, S, B);
    /* sim = p s^T, simt = s p^T */
    be->gemm(be, 0, 0, BN, E, S, 1.0f, a->sla_dsim, S, a->s_emb, E, 1.0f, a->d_p_emb, E);
    be->gemm(be, 1, 0, BN, E, S, 1.0f, a->sla_dsimt, BN, a->s_emb, E, 1.0f, a->d_p_emb, E);
    be->gemm(be, 1, 0, S, E, BN, 1.0f, a->sla_dsim, S, a->p_emb, E, 1.0f, a->d_s_emb, E);
    be->gemm(be, 0, 0, S, E, BN, 1.0f, a->sla_dsimt, BN, a->p_emb, E, 1.0f, a->d_s_emb, E);
}

/* The loss terms of this step: one download (a host synchronisation, which
 * also frees the upload staging of 6.1). */
static mama_status mama__losses_download(mama_model *m, mama_losses *L) {
    double h[4];
    MAMA_TRY(m->be->to_host(m->be, h, m->d_acc, sizeof h));
    L->clip = (float)h[MAMA__ACC_CLIP];
    L->mv = (float)h[MAMA__ACC_MV];
    L->sym = (float)h[MAMA__ACC_SYM];
    L->sla = (float)h[MAMA__ACC_SLA];
    return MAMA_OK;
}

/* ---- 6.1 Uploading a batch ---------------------------------------------
 * Every array is written into one staging buffer from host_alloc (pinned
 * on a GPU) and queued with to_device_async: the host does not wait.  The
 * staging is written again only after the last step's copies have run: a
 * host synchronisation since then (be->host_syncs moved: the loss download,
 * the caller's sync) proves it, else one sync here. */

/* the next 64-byte aligned piece of the staging buffer */
static void *mama__stage_take(mama_model *m, size_t *off, size_t bytes) {
    void *p = m->h_stage + *off;
    *off += (bytes + 63) & ~(size_t)63;
    return p;
}

static mama_status mama__stage_begin(mama_model *m) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    size_t B = (size_t)m->max_batch, T = (size_t)c->context;
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    if (!m->h_stage) { /* the largest batch: B <= max_batch, S <= B * MAMA_MAX_SENTENCES, 11 paddings */
        size_t f = sizeof(float), cap = 2 * B * img * f + 3 * B * T * 4 + B * MAMA_MAX_SENTENCES * 4 +
                                        2 * (B + 1) * 4 + B * (size_t)m->n_patches * 4 +
                                        B * B * MAMA_MAX_SENTENCES * f + 6 * B * 4 + 16 * 64;
        MAMA_TRY(be->host_alloc(be, (void **)&m->h_stage, cap));
        MAMA_TRY(be->alloc(be, (void **)&m->d_acc, sizeof(double) * MAMA__ACC_N));
    } else if (m->stage_busy && be->host_syncs == m->stage_mark) {
        MAMA_TRY(be->sync(be)); /* no wait since the last uploads were queued */
    }
    m->stage_busy = 1;
    m->stage_mark = be->host_syncs;
    return MAMA_OK;
}

static mama_status mama__upload_batch(mama_model *m, const mama_batch *b, int late, int need_sentences, int *S_out) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int B = b->B, T = c->context, N = m->n_patches, Tv = m->n_vtok, i, t, S = 0;
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size, off = 0, bt = (size_t)B * T;
    int *hi;
    float *hf;
    if (B < 1 || B > m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "batch of %d samples; this model was created for 1..%d", B, m->max_batch);
    if (!b->images || !b->input_ids || !b->attention_mask)
        return MAMA_FAIL(MAMA_ERR_INVALID, "batch: images, input_ids and attention_mask are required");
    if (late && !b->ext_images)
        return MAMA_FAIL(MAMA_ERR_INVALID, "batch: ext_images are required for the late losses");
    for (i = 0; i < B * T; i++)
        if (b->input_ids[i] < 0 || b->input_ids[i] >= c->vocab_size)
            return MAMA_FAIL(MAMA_ERR_INVALID, "batch: input_ids[%d][%d] = %d is outside the vocabulary (0..%d)",
                             i / T, i % T, b->input_ids[i], c->vocab_size - 1);
    /* sentence rows: every sep position, caption by caption (checked before
     * anything is queued) */
    m->h_sent_seg[0] = 0;
    for (i = 0; i < B; i++) {
        int count = 0;
        for (t = 0; t < T; t++) count += b->input_ids[i * T + t] == c->sep_id;
        if (count > MAMA_MAX_SENTENCES)
            return MAMA_FAIL(MAMA_ERR_INVALID, "batch: caption %d has more than %d sentence separators", i,
                             MAMA_MAX_SENTENCES);
        if (need_sentences && count == 0)
            return MAMA_FAIL(MAMA_ERR_INVALID, "batch: caption %d has no sentence separator (id %d), which the "
                             "local alignment needs", i, c->sep_id);
        m->h_sent_seg[i + 1] = S += count;
    }
    MAMA_TRY(mama__stage_begin(m));
#define MAMA__UP(dev, host, bytes) MAMA_TRY(be->to_device_async(be, (dev), (host), (bytes)))
    hf = (float *)mama__stage_take(m, &off, sizeof(float) * img * B * (late ? 2 : 1));
    memcpy(hf, b->images, sizeof(float) * img * B);
    if (late) memcpy(hf + img * B, b->ext_images, sizeof(float) * img * B);
    MAMA__UP(a->images, hf, sizeof(float) * img * B * (late ? 2 : 1));
    hi = (int *)mama__stage_take(m, &off, sizeof(int) * bt);
    memcpy(hi, b->input_ids, sizeof(int) * bt);
    MAMA__UP(a->ids, hi, sizeof(int) * bt);
    hi = (int *)mama__stage_take(m, &off, sizeof(int) * bt);
    for (i = 0; i < B * T; i++) hi[i] = b->attention_mask[i] != 0;
    MAMA__UP(a->key_valid, hi, sizeof(int) * bt);
    hf = (float *)mama__stage_take(m, &off, sizeof(float) * bt);
    for (i = 0; i < B * T; i++) hf[i] = b->attention_mask[i] != 0 ? 1.0f : 0.0f;
    MAMA__UP(a->pool_mask, hf, sizeof(float) * bt);
    if (S > 0) {
        hi = (int *)mama__stage_take(m, &off, sizeof(int) * (size_t)S);
        for (i = 0, S = 0; i < B * T; i++)
            if (b->input_ids[i] == c->sep_id) hi[S++] = i;
        MAMA__UP(a->sent_idx, hi, sizeof(int) * (size_t)S);
    }
    hi = (int *)mama__stage_take(m, &off, sizeof(int) * (size_t)(B + 1));
    memcpy(hi, m->h_sent_seg, sizeof(int) * (size_t)(B + 1));
    MAMA__UP(a->sent_seg, hi, sizeof(int) * (size_t)(B + 1));
    hi = (int *)mama__stage_take(m, &off, sizeof(int) * (size_t)(B + 1));
    for (i = 0; i <= B; i++) hi[i] = i * N;
    MAMA__UP(a->img_seg, hi, sizeof(int) * (size_t)(B + 1));
    /* patch rows of the first B images inside the token matrix */
    hi = (int *)mama__stage_take(m, &off, sizeof(int) * (size_t)B * N);
    for (i = 0; i < B; i++)
        for (t = 0; t < N; t++) hi[i * N + t] = i * Tv + 1 + c->registers + t;
    MAMA__UP(a->patch_idx, hi, sizeof(int) * (size_t)B * N);
    /* sentence averaging matrix [B captions, S] for t2i */
    if (S > 0) {
        hf = (float *)mama__stage_take(m, &off, sizeof(float) * (size_t)B * S);
        memset(hf, 0, sizeof(float) * (size_t)B * S);
        for (i = 0; i < B; i++)
            for (t = m->h_sent_seg[i]; t < m->h_sent_seg[i + 1]; t++)
                hf[(size_t)i * S + t] = 1.0f / (float)(m->h_sent_seg[i + 1] - m->h_sent_seg[i]);
        MAMA__UP(a->sla_avg, hf, sizeof(float) * (size_t)B * S);
    }
    /* targets and per-row loss weights */
    hi = (int *)mama__stage_take(m, &off, sizeof(int) * (size_t)(3 * B));
    for (i = 0; i < B; i++) hi[i] = i;
    for (i = 0; i < 2 * B; i++) hi[B + i] = (i + B) % (2 * B);
    MAMA__UP(a->targets_diag, hi, sizeof(int) * (size_t)B);
    MAMA__UP(a->targets_ntx, hi + B, sizeof(int) * (size_t)(2 * B));
    hf = (float *)mama__stage_take(m, &off, sizeof(float) * (size_t)(3 * B));
    for (i = 0; i < B; i++) hf[i] = 1.0f / (float)B;
    for (i = 0; i < 2 * B; i++) hf[B + i] = 1.0f / (float)(2 * B);
    MAMA__UP(a->ce_dloss, hf, sizeof(float) * (size_t)B);
    MAMA__UP(a->ntx_dloss, hf + B, sizeof(float) * (size_t)(2 * B));
#undef MAMA__UP
    *S_out = S;
    return MAMA_OK;
}

/* ---- 6.1b Options: the rule of section 1 in one place.  Zero takes the
 * default, a negative value (MAMA_OFF) is zero / off, anything else is
 * kept (a switch becomes 1).  Each options struct has one resolver that
 * applies these to every field and checks the result; its consumer calls
 * it once on entry, and mama_*_opts_default is the resolver on a zero
 * struct.  NaN is kept, for the checks to reject. */
static int mama__opt_flag(int v, int def) { return v == 0 ? def : v > 0; }
static int mama__opt_int(int v, int def) { return v == 0 ? def : v < 0 ? 0 : v; }
static long mama__opt_long(long v, long def) { return v == 0 ? def : v < 0 ? 0 : v; }
static float mama__opt_float(float v, float def) { return v == 0 ? def : v < 0 ? 0.0f : v; }
/* A resolved switch handed on to another options struct: 1 or MAMA_OFF. */
static int mama__opt_pass(int on) { return on ? 1 : MAMA_OFF; }
static int mama__opt_prob_ok(float p) { return p >= 0 && p <= 1; }

static mama_status mama__step_opts_resolve(const mama_step_opts *in, mama_step_opts *out) {
    mama_step_opts z;
    if (in) z = *in; else memset(&z, 0, sizeof z); /* (in may be o) */
    in = &z;
    memset(out, 0, sizeof *out);
    out->late = mama__opt_flag(in->late, 0);
    out->use_mv = mama__opt_flag(in->use_mv, 1);
    out->use_sym = mama__opt_flag(in->use_sym, 1);
    out->use_sla = mama__opt_flag(in->use_sla, 1);
    out->train = mama__opt_flag(in->train, 1);
    out->dropout = mama__opt_flag(in->dropout, 1);
    out->seed = in->seed;
    return MAMA_OK;
}

MAMA_API void mama_step_opts_default(mama_step_opts *o) {
    mama__step_opts_resolve(NULL, o);
}

/* ---- 6.2 One step: forward, the four losses, backward ------------------
 * `o` is resolved (mama__step_opts_resolve): its switches are 0 or 1. */
static mama_status mama__step(mama_model *m, const mama_batch *b, const mama_step_opts *o, int backward,
                              int accumulate, mama_losses *out) {
    mama_backend *be = m->be;
    mama__acts *a = &m->a;
    const mama_config *c = &m->cfg;
    int B = b->B, S = 0, late = o->late, train = o->train;
    int use_mv = late && o->use_mv, use_sym = late && o->use_sym, use_sla = late && o->use_sla;
    int Bv = (use_mv || use_sym) ? 2 * B : B;
    int E = c->embed_dim, D = c->vision_dim, N = m->n_patches;
    mama__text_step ts;
    mama_losses L;
    size_t ngrad = m->group_numel[MAMA_GROUP_TRAIN] + m->group_numel[MAMA_GROUP_LATE];
    memset(&L, 0, sizeof L);
    MAMA_TRY(mama__upload_batch(m, b, Bv == 2 * B, use_sla, &S));
    ts.train_dropout = train && o->dropout;
    ts.seed = o->seed;
    ts.pool_masked = c->text_pool_real_only;
    /* forward */
    mama__vision_forward(m, Bv);
    if (use_sla) mama__vision_local_forward(m, B, train);
    mama__text_forward(m, B, S, &ts, train, use_sla);
    if (use_mv) mama__simclr_forward(m, B, train);
    if (backward) {
        if (!accumulate) MAMA_TRY(be->zero(be, m->grads, sizeof(float) * ngrad));
        mama__zero(be, a->d_img_emb, (size_t)Bv * E);
        mama__zero(be, a->d_txt_emb, (size_t)B * E);
        mama__zero(be, a->d_vpooled, (size_t)Bv * D);
    }
    /* losses (each also writes its gradients; cheap next to the towers),
     * their values in device memory until the one download below */
    MAMA_TRY(be->zero(be, m->d_acc, sizeof(double) * MAMA__ACC_N));
    if (mama__dp_world(m) > 1) { /* over the global batch (section 12) */
        MAMA_TRY(mama__dp_losses(m, B, S, use_mv, use_sym, use_sla, backward, &L));
        goto losses_done;
    }
    mama__clip_loss(m, a->img_emb, a->txt_emb, backward ? a->d_img_emb : NULL, a->d_txt_emb, m->w.logit_scale,
                    backward ? m->g.logit_scale : NULL, B, m->d_acc + MAMA__ACC_CLIP);
    if (use_sym)
        mama__clip_loss(m, a->img_emb + (size_t)B * E, a->txt_emb, backward ? a->d_img_emb + (size_t)B * E : NULL,
                        a->d_txt_emb, m->w.logit_scale, backward ? m->g.logit_scale : NULL, B,
                        m->d_acc + MAMA__ACC_SYM);
    if (use_mv) mama__ntxent_loss(m, B, backward, m->d_acc + MAMA__ACC_MV);
    if (use_sla) {
        if (backward) {
            mama__zero(be, a->d_p_emb, (size_t)B * N * E);
            mama__zero(be, a->d_s_emb, (size_t)S * E);
        }
        mama__sla_loss(m, B, S, backward, m->d_acc + MAMA__ACC_SLA);
    }
    if (out) MAMA_TRY(mama__losses_download(m, &L));
losses_done:
    L.loss = L.clip + L.mv + L.sym + L.sla;
    if (out) *out = L;
    m->last_B = B; m->last_S = S; m->last_late = late;
    if (!backward) return mama__dp_status(m);
    /* backward: heads first, then the towers (each hook point below hands a
     * finished part of the gradient buffer to an overlapped all-reduce,
     * section 12.7; called whether or not its branch ran) */
    mama__dp_grads_ready(m, MAMA__HOOK_LOSS, 0);
    if (use_mv) mama__simclr_backward(m, B);
    mama__dp_grads_ready(m, MAMA__HOOK_SIMCLR, 0);
    if (use_sla) {
        mama__local_acts k = mama__img_local_acts(a);
        int segs[2];
        segs[0] = 0; segs[1] = B * N;
        mama__zero(be, a->d_patches, (size_t)B * N * D);
        mama__local_head_backward(m, &m->w.img_local, &m->g.img_local, &k, a->patches, a->d_p_emb, a->d_patches,
                                  B * N, D, segs, 1, a->d_il_a, a->d_il_b, a->d_il_e, a->d_il_e2, mama__dp_sync_bn(m));
    }
    mama__dp_grads_ready(m, MAMA__HOOK_IMG_LOCAL, 0);
    mama__vision_backward(m, Bv, B, use_sla);
    mama__text_backward(m, B, S, &ts, use_sla);
    return mama__dp_status(m); /* a failed collective inside a BatchNorm */
}

static int mama__threads_pick(mama_model *m, int which, int *nmax); /* 6.3 */
static void mama__threads_done(mama_model *m, int which, int k, int nmax, double sec_per_item);
/* mama__step on all threads or one, whichever was faster lately (6.3;
 * training steps and forward-only passes keep their own timings; host
 * backends only, whose ops are done when they return: no sync) */
static mama_status mama__step_tuned(mama_model *m, const mama_batch *b, const mama_step_opts *o, int backward,
                                    int accumulate, mama_losses *out) {
    int nmax, which = backward ? 1 : 2, k = mama__threads_pick(m, which, &nmax);
    double t0 = mama_time_seconds();
    mama_status s = mama__step(m, b, o, backward, accumulate, out);
    mama__threads_done(m, which, k, nmax, s == MAMA_OK ? (mama_time_seconds() - t0) / b->B : 0);
    return s;
}
MAMA_API mama_status mama_model_step(mama_model *m, const mama_batch *b, const mama_step_opts *o, int accumulate,
                                     mama_losses *out) {
    mama_step_opts ro;
    if (!m || !b) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_step: model and batch are required");
    if (m->cfg.inference) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_step: the model was created for inference only");
    MAMA_TRY(mama__step_opts_resolve(o, &ro));
    MAMA_TRY(mama__dp_step_begin(m));
    return mama__step_tuned(m, b, &ro, 1, accumulate, out);
}

MAMA_API mama_status mama_model_forward(mama_model *m, const mama_batch *b, mama_losses *out) {
    mama_step_opts o;
    mama_step_opts_default(&o);
    o.train = 0;
    o.dropout = 0;
    o.late = b && b->ext_images != NULL;
    if (!m || !b) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_forward: model and batch are required");
    if (m->cfg.inference) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_forward: the model was created for inference only");
    return mama__step_tuned(m, b, &o, 0, 0, out);
}

MAMA_API mama_status mama_model_embeddings(mama_model *m, float *img_emb, float *txt_emb) {
    size_t n = (size_t)m->last_B * m->cfg.embed_dim * sizeof(float);
    if (img_emb) MAMA_TRY(m->be->to_host(m->be, img_emb, m->a.img_emb, n));
    if (txt_emb) MAMA_TRY(m->be->to_host(m->be, txt_emb, m->a.txt_emb, n));
    return MAMA_OK;
}

/* ---- 6.3 Encoding only (evaluation mode) ------------------------------- */

/* Robust under load (issue 18 item 5): with another process holding a
 * core, n OpenMP threads can be far slower than one (tiny's training step
 * on 2 cores: ~1 image/s against ~7 on one thread).  A step runs hundreds
 * of parallel regions (462 for `tiny`), and at each one's end libgomp's
 * threads spin (up to ~3 ms by default) while a descheduled team mate
 * waits for a core.  No op's bits depend on the thread count (GEMM tiles
 * and reductions are split the same way for any team), so a call may run
 * on either: mama__tune_pick returns 0 (all threads) or 1 (one thread),
 * the choice whose last measured seconds per item is lower, except that
 * every gap-th call tries the other, so a change of load is noticed both
 * ways.  The gap starts at 16 calls and doubles (to 256) each time a try
 * confirms the choice, so a settled choice spends one call in 256 on the
 * slower side; a try that wins, or a chosen side that got slower than the
 * other's last time, switches at once and resets the gap.  The gap is
 * also at least 32 (r - 1) calls, r the ratio of the two timings, so the
 * tries cost at most ~3% however slow the other side (up to 256).  The first call
 * (warm-up) runs on all threads and is not counted; then one call each.
 * The choice depends on timings only, never on values.  With
 * OMP_WAIT_POLICY=passive the threads sleep instead of spinning, n threads
 * stay faster than one under load, and the choice keeps them. */
#define MAMA__TUNE_GAP0 16
#define MAMA__TUNE_GAP_MAX 256
static int mama__tune_pick(const mama__tune *t) {
    int best = t->sec[1] < t->sec[0];
    if (t->calls < 1 || t->sec[0] == 0) return 0;
    if (t->sec[1] == 0) return 1;
    return t->calls >= t->probe_at ? !best : best;
}
static void mama__tune_record(mama__tune *t, int k, double sec_per_item) {
    int had = t->sec[0] > 0 && t->sec[1] > 0, best = t->sec[1] < t->sec[0];
    double ratio;
    if (sec_per_item <= 0 || t->calls++ < 1) return; /* a failed call, or the warm-up */
    t->sec[k] = sec_per_item;
    if (!(t->sec[0] > 0 && t->sec[1] > 0)) return;
    if (!had || (t->sec[1] < t->sec[0]) != best) t->gap = MAMA__TUNE_GAP0; /* first pair, or switched */
    else if (k != best) t->gap = t->gap * 2 < MAMA__TUNE_GAP_MAX ? t->gap * 2 : MAMA__TUNE_GAP_MAX; /* a try lost */
    else return;
    ratio = t->sec[0] > t->sec[1] ? t->sec[0] / t->sec[1] : t->sec[1] / t->sec[0];
    if ((ratio - 1.0) * 32.0 > t->gap) /* and a try's extra time at most ~1/32 of the calls' between */
        t->gap = (ratio - 1.0) * 32.0 < MAMA__TUNE_GAP_MAX ? (int)((ratio - 1.0) * 32.0) : MAMA__TUNE_GAP_MAX;
    t->probe_at = t->calls + t->gap;
}
/* which = 0 encode, 1 training step, 2 forward; *nmax: the thread count to restore
 * (0 or 1: no choice, CUDA, tuning off or one thread anyway) */
static int mama__threads_pick(mama_model *m, int which, int *nmax) {
    int k;
    *nmax = m->tune_off || !mama__backend_is_host(m->be) ? 0 : mama_num_threads();
    if (*nmax <= 1) return 0;
    k = mama__tune_pick(&m->tune[which]);
    if (k) mama_set_num_threads(1);
    return k;
}
static void mama__threads_done(mama_model *m, int which, int k, int nmax, double sec_per_item) {
    if (nmax <= 1) return;
    mama__tune_record(&m->tune[which], k, sec_per_item);
    if (k) mama_set_num_threads(nmax);
}
MAMA_API void mama_model_set_thread_tuning(mama_model *m, int on) {
    memset(m->tune, 0, sizeof m->tune);
    m->tune_off = !on;
}

MAMA_API mama_status mama_encode_images(mama_model *m, const float *images, int B, float *emb, float *pooled) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    if (B < 1 || B > 2 * m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_encode_images: %d images; at most %d per call for this model", B,
                         2 * m->max_batch);
    int nmax, k;
    double t0;
    MAMA_TRY(be->to_device(be, m->a.images, images, sizeof(float) * img * (size_t)B));
    k = mama__threads_pick(m, 0, &nmax);
    t0 = mama_time_seconds();
    mama__vision_forward_ex(m, B, 1);
    mama__threads_done(m, 0, k, nmax, be->sync(be) == MAMA_OK ? (mama_time_seconds() - t0) / B : 0);
    if (emb) MAMA_TRY(be->to_host(be, emb, m->a.img_emb, sizeof(float) * (size_t)B * c->embed_dim));
    if (pooled) MAMA_TRY(be->to_host(be, pooled, m->a.vpooled, sizeof(float) * (size_t)B * c->vision_dim));
    return MAMA_OK;
}

/* ref_feature (SPEC A.7b): the reference's zeroshot text feature, the
 * hidden state at the first padding position (position 0 when the caption
 * fills the context), instead of the training pooling.  Both go through
 * the same masked mean: a one-hot mask picks that single position. */
static mama_status mama__encode_texts_ex(mama_model *m, const int *ids, const int *mask, int B, float *emb,
                                         int ref_feature) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    int T = c->context, i, b;
    mama__text_step ts;
    if (B < 1 || B > m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_encode_texts: %d texts; at most %d per call for this model", B,
                         m->max_batch);
    for (i = 0; i < B * T; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return MAMA_FAIL(MAMA_ERR_INVALID, "mama_encode_texts: ids[%d][%d] = %d outside the vocabulary",
                             i / T, i % T, ids[i]);
        m->h_ints[i] = mask[i] != 0;
        m->h_floats[i] = mask[i] != 0 ? 1.0f : 0.0f;
    }
    if (ref_feature)
        for (b = 0; b < B; b++) {
            int first_pad = 0;
            for (i = 0; i < T; i++) if (!mask[b * T + i]) { first_pad = i; break; }
            for (i = 0; i < T; i++) m->h_floats[b * T + i] = i == first_pad ? 1.0f : 0.0f;
        }
    MAMA_TRY(be->to_device(be, m->a.ids, ids, sizeof(int) * (size_t)B * T));
    MAMA_TRY(be->to_device(be, m->a.key_valid, m->h_ints, sizeof(int) * (size_t)B * T));
    MAMA_TRY(be->to_device(be, m->a.pool_mask, m->h_floats, sizeof(float) * (size_t)B * T));
    ts.train_dropout = 0;
    ts.seed = 0;
    ts.pool_masked = ref_feature || c->text_pool_real_only;
    mama__text_forward(m, B, 0, &ts, 0, 0);
    return be->to_host(be, emb, m->a.txt_emb, sizeof(float) * (size_t)B * c->embed_dim);
}

MAMA_API mama_status mama_model_prepare_image(const mama_model *m, const mama_image *src, float *out) {
    mama_augment_opts o;
    if (!m || !src || !out) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_prepare_image: NULL argument");
    memset(&o, 0, sizeof o); /* the defaults, at the model's size */
    o.size = m->cfg.image_size;
    return mama_image_pipeline(src, &o, 0, NULL, m->cfg.in_chans, out);
}

MAMA_API mama_status mama_encode_texts(mama_model *m, const int *ids, const int *mask, int B, float *emb) {
    return mama__encode_texts_ex(m, ids, mask, B, emb, 0);
}

/* ---- 6.4 Model weights in safetensors (names of SPEC A.8) -------------- */

/* BatchNorm step counters, saved as num_batches_tracked (int64). */
static const char *const mama__bn_tracked_names[6] = {
    "img_encoder_q.local_embed.head.1.num_batches_tracked", "img_encoder_q.local_embed.head.4.num_batches_tracked",
    "text_encoder_q.local_embed.head.1.num_batches_tracked", "text_encoder_q.local_embed.head.4.num_batches_tracked",
    "simclr_proj.layers.1.num_batches_tracked", "simclr_proj.layers.4.num_batches_tracked"};

/* Find a tensor under its A.8 name or a known alias: newer PEFT stores the
 * LoRA-wrapped base weight as c_attn.base_layer.weight. */
static mama_status mama__st_read_half(const mama_safetensors *st, const char *name, uint16_t *dst, size_t count,
                                      mama_dtype dt);
static void mama__st_release(const mama_safetensors *st, const mama_st_tensor *t);

static const mama_st_tensor *mama__find_tensor(const mama_safetensors *st, const char *name, char *alias, size_t cap) {
    const mama_st_tensor *t = mama_st_find(st, name);
    const char *p;
    if (t) { snprintf(alias, cap, "%s", name); return t; }
    p = strstr(name, "c_attn.");
    if (p && (!strcmp(p, "c_attn.weight") || !strcmp(p, "c_attn.bias"))) {
        snprintf(alias, cap, "%.*sc_attn.base_layer.%s", (int)(p - name), name, p + 7);
        return mama_st_find(st, alias);
    }
    return NULL;
}

/* Shapes agree when the dims match, allowing a 1x1 conv [out,in,1] to be
 * given as [out,in] and a scalar as [] or [1]. */
static int mama__shape_matches(const mama_param_info *p, const mama_st_tensor *t) {
    int i, pd = p->ndim, td = t->ndim;
    while (pd > 0 && p->shape[pd - 1] == 1 && pd > td) pd--;
    while (td > 0 && t->shape[td - 1] == 1 && td > pd) td--;
    if (pd != td) return 0;
    for (i = 0; i < pd; i++)
        if (p->shape[i] != t->shape[i]) return 0;
    return 1;
}

static void mama__shape_string(char *out, size_t cap, int ndim, const int64_t *shape) {
    int i, n = snprintf(out, cap, "[");
    for (i = 0; i < ndim && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n > 0 && (size_t)n < cap) snprintf(out + n, cap - (size_t)n, "]");
}

/* ---- Resampling the position embedding (SPEC A.1, A.7b) ----------------
 * When the stored patch grid differs from the config's, the patch part of
 * pos_embed is resampled once, here, the way DINOv2 does on every forward:
 * PyTorch's F.interpolate(mode="bicubic", antialias=True,
 * align_corners=False) to the target size.  That filter is separable; for
 * output index i with scale = in/out, centre = scale (i + 0.5), support =
 * 2 max(scale, 1); the taps j in [centre - support, centre + support) clipped
 * to the input get weights cubic((j - centre + 0.5) / max(scale, 1)) with
 * Keys' a = -0.5, normalised to sum 1 (so borders need no padding). */
static double mama__cubic_keys(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}
/* Resample along one axis: in [outer, n_in, inner] -> out [outer, n_out, inner]. */
static void mama__resample_axis(const float *in, float *out, int outer, int n_in, int n_out, int inner) {
    double scale = (double)n_in / n_out, support = 2.0 * (scale >= 1 ? scale : 1), inv = scale >= 1 ? 1 / scale : 1;
    int i, j, o, k;
    for (i = 0; i < n_out; i++) {
        double centre = scale * (i + 0.5), w[64], total = 0;
        int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5), nw;
        if (lo < 0) lo = 0;
        if (hi > n_in) hi = n_in;
        nw = hi - lo;
        if (nw > 64) nw = 64;
        for (j = 0; j < nw; j++) { w[j] = mama__cubic_keys((j + lo - centre + 0.5) * inv); total += w[j]; }
        for (j = 0; j < nw; j++) w[j] = total != 0 ? w[j] / total : 0;
        for (o = 0; o < outer; o++)
            for (k = 0; k < inner; k++) {
                double acc = 0;
                for (j = 0; j < nw; j++) acc += w[j] * in[((size_t)o * n_in + lo + j) * inner + k];
                out[((size_t)o * n_out + i) * inner + k] = (float)acc;
            }
    }
}
/* pos [(1 + g0*g0), D] -> [(1 + g*g), D]: the cls row is kept. */
static mama_status mama__resample_pos_embed(const float *src, int g0, float *dst, int g, int D) {
    float *tmp;
    MAMA_TRY(mama_alloc((void **)&tmp, sizeof(float) * (size_t)g0 * g * D, "pos_embed resampling"));
    memcpy(dst, src, sizeof(float) * (size_t)D);
    mama__resample_axis(src + D, tmp, g0, g0, g, D);          /* width:  [g0][g0][D] -> [g0][g][D] */
    mama__resample_axis(tmp, dst + D, 1, g0, g, g * D);       /* height: [g0][g*D]  -> [g][g*D]    */
    mama_free(tmp);
    return MAMA_OK;
}

static mama_status mama__load_pos_embed(mama_model *m, const mama_safetensors *st, const mama_param_info *p,
                                        const mama_st_tensor *t, float *dst) {
    int D = m->cfg.vision_dim, g = m->cfg.image_size / m->cfg.patch_size, g0;
    size_t n0;
    float *src;
    mama_status s;
    if (t->ndim < 2 || t->shape[t->ndim - 1] != D)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' must end in the vision width %d", st->path, p->name, D);
    n0 = t->numel / (size_t)D;
    g0 = (int)(sqrt((double)(n0 - 1)) + 0.5);
    if ((size_t)g0 * g0 + 1 != n0)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: '%s' has %zu positions, not 1 + a square grid", st->path, p->name, n0);
    MAMA_TRY(mama_alloc((void **)&src, sizeof(float) * t->numel, "pos_embed"));
    s = mama_st_read_f32(st, p->name, src, t->numel);
    if (s == MAMA_OK) s = mama__resample_pos_embed(src, g0, dst, g, D);
    mama_free(src);
    return s;
}

/* The folded patch embedding (in_chans = 1): a mammogram is grey, so its
 * three input channels are identical and conv(x, W) over them equals a
 * one-channel conv with W summed over the channel axis.  A 3-channel
 * checkpoint (DINOv2) is folded here, once; the model then reads one plane
 * per image, a third of the patch-embedding work and input memory. */
static mama_status mama__load_folded_patch(const mama_safetensors *st, const mama_param_info *p, const mama_st_tensor *t,
                                           float *dst) {
    size_t D = (size_t)t->shape[0], pp = (size_t)(t->shape[2] * t->shape[3]), d, c, k;
    float *w;
    MAMA_TRY(mama_alloc((void **)&w, sizeof(float) * t->numel, "patch embedding"));
    if (mama_st_read_f32(st, p->name, w, t->numel) != MAMA_OK) { mama_free(w); return MAMA_ERR_FORMAT; }
    for (d = 0; d < D; d++)
        for (k = 0; k < pp; k++) {
            float sum = 0;
            for (c = 0; c < 3; c++) sum += w[(d * 3 + c) * pp + k];
            dst[d * pp + k] = sum;
        }
    mama_free(w);
    return MAMA_OK;
}

/* Load every tensor into the host view h (float32 tensors into h->data,
 * half-precision ones into h->half).  A first pass checks every tensor
 * (presence, shape, dtype) so that a bad file changes nothing, also when
 * the view is the model itself (host backends). */
/* The index of the first non-finite value of x[n] (float32, or BF16/F16
 * bits when dtype says so), n when all are finite. */
static size_t mama__first_nonfinite(const void *x, size_t n, mama_dtype dtype) {
    size_t i;
    if (dtype == MAMA_F32) {
        for (i = 0; i < n; i++) if (!isfinite(((const float *)x)[i])) return i;
    } else {
        uint16_t e = dtype == MAMA_BF16 ? 0x7f80 : 0x7c00; /* all-ones exponent: Inf or NaN */
        for (i = 0; i < n; i++) if ((((const uint16_t *)x)[i] & e) == e) return i;
    }
    return n;
}
/* The first tensor of the host view holding a non-finite value: a message
 * "<what>: tensor '<name>' holds a non-finite value ..." (MAMA_ERR_NUMERIC). */
static mama_status mama__check_finite(const mama_model *m, const mama__host_weights *h, const char *what) {
    int i;
    for (i = 0; i < m->nparams; i++) {
        const mama_param_info *p = &m->info[i];
        const void *x = p->dtype == MAMA_F32 ? (const void *)(h->data + p->offset) : (const void *)(h->half + p->offset);
        size_t k = mama__first_nonfinite(x, p->numel, p->dtype);
        if (k < p->numel)
            return MAMA_FAIL(MAMA_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value (%g at element %zu of %zu)", what,
                             p->name, p->dtype == MAMA_F32 ? (double)((const float *)x)[k] : (double)NAN, k, p->numel);
    }
    return MAMA_OK;
}

static mama_status mama__load_into_host(mama_model *m, const mama_safetensors *st, mama__host_weights *h,
                                        int allow_missing, int *loaded) {
    int i, pass, count = 0;
    char alias[256], s1[96], s2[96];
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < m->nparams; i++) {
            const mama_param_info *p = &m->info[i];
            const mama_st_tensor *t = mama__find_tensor(st, p->name, alias, sizeof alias);
            float *dst = h->data + p->offset;
            if (!t) {
                if (allow_missing) continue;
                return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' is missing", st->path, p->name);
            }
            if (t->dtype != MAMA_F32 && t->dtype != MAMA_F16 && t->dtype != MAMA_BF16)
                return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                                 st->path, alias, mama_dtype_name(t->dtype));
            if (p->dtype == MAMA_F32 && p->ndim == 4 && t->ndim == 4 && p->shape[1] == 1 && t->shape[1] == 3 &&
                t->shape[0] == p->shape[0] && t->shape[2] == p->shape[2] && t->shape[3] == p->shape[3]) {
                if (pass) { MAMA_TRY(mama__load_folded_patch(st, p, t, dst)); count++; } /* 3 grey channels -> 1 */
                continue;
            }
            if (p->dtype == MAMA_F32 && p->ndim == 3 && !strcmp(p->name, "img_encoder_q.model.pos_embed") &&
                !mama__shape_matches(p, t)) {
                if (pass) { MAMA_TRY(mama__load_pos_embed(m, st, p, t, dst)); count++; } /* another grid: resample once */
                continue;
            }
            if (!mama__shape_matches(p, t)) {
                mama__shape_string(s1, sizeof s1, t->ndim, t->shape);
                mama__shape_string(s2, sizeof s2, p->ndim, p->shape);
                return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' has shape %s, the config needs %s", st->path, alias, s1,
                                 s2);
            }
            if (!pass) continue;
            if (p->dtype == MAMA_F32) MAMA_TRY(mama_st_read_f32(st, alias, dst, p->numel));
            else MAMA_TRY(mama__st_read_half(st, alias, h->half + p->offset, p->numel, p->dtype));
            mama__st_release(st, t);
            if (mama__first_nonfinite(p->dtype == MAMA_F32 ? (const void *)dst : (const void *)(h->half + p->offset),
                                      p->numel, p->dtype) < p->numel)
                return MAMA_FAIL(MAMA_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value (NaN or Inf): refused",
                                 st->path, alias);
            count++;
        }
    }
    for (i = 0; i < 6; i++) {
        const mama_st_tensor *t = mama_st_find(st, mama__bn_tracked_names[i]);
        int64_t v;
        if (t && t->numel == 1 && (t->dtype == MAMA_I64 || t->dtype == MAMA_I32) &&
            mama_st_read_i64(st, mama__bn_tracked_names[i], &v, 1) == MAMA_OK) {
            if (v < 0 || v > ((int64_t)1 << 53))
                return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: '%s' = %lld is out of range [0, 2^53]", st->path,
                                 mama__bn_tracked_names[i], (long long)v);
            m->bn_batches[i] = v;
        }
    }
    if (loaded) *loaded = count;
    return MAMA_OK;
}

MAMA_API mama_status mama_model_load_weights(mama_model *m, const char *path, int allow_missing, int *loaded) {
    mama_safetensors st;
    mama__host_weights h;
    mama_status s;
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, path));
    s = mama__host_weights_init(m, &h);
    if (s == MAMA_OK) {
        /* start from the current values so that allow_missing keeps them */
        s = mama__host_weights_download(m, &h);
        if (s == MAMA_OK) s = mama__load_into_host(m, &st, &h, allow_missing, loaded);
        if (s == MAMA_OK) s = mama__host_weights_upload(m, &h);
        mama__host_weights_free(&h);
    }
    mama_st_close(&st);
    return s;
}

/* The dtype of the file's frozen text matrices (the first block's c_fc
 * weight, or wte): BF16 or F16 when stored so, else F32. */
static mama_dtype mama__file_frozen_dtype(const mama_safetensors *st) {
    static const char *const names[2] = {"text_encoder_q.model.base_model.model.transformer.h.0.mlp.c_fc.weight",
                                         "text_encoder_q.model.base_model.model.transformer.wte.weight"};
    int i;
    for (i = 0; i < 2; i++) {
        const mama_st_tensor *t = mama_st_find(st, names[i]);
        if (t) return (t->dtype == MAMA_BF16 || t->dtype == MAMA_F16) ? t->dtype : MAMA_F32;
    }
    return MAMA_F32;
}

static mama_status mama__model_load(mama_model **out, const char *path, mama_backend *be, int max_batch,
                                    int frozen_dtype, int inference) {
    mama_safetensors st;
    mama_config c;
    const char *json, *tk;
    mama_status s;
    char src[512], tok_path[1024] = "", tok_abs[1024] = "", tok_fp[48] = "";
    mama_dtype fd;
    size_t numel = 0;
    int i;
    *out = NULL;
    if (frozen_dtype != -1 && frozen_dtype != MAMA_F32 && frozen_dtype != MAMA_BF16 && frozen_dtype != MAMA_F16)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_load_as: frozen_dtype %d is not -1, F32, BF16 or F16", frozen_dtype);
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, path));
    json = mama_st_meta(&st, "mama_config");
    if (!json) {
        mama_st_close(&st);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: no 'mama_config' in the safetensors metadata (convert the weights "
                         "with weights/convert_*.py, or create the model from a preset and use load_weights)", path);
    }
    /* fields absent from the metadata take the reference's defaults */
    mama_config_preset(&c, "base");
    c.text_pool_real_only = 0;
    snprintf(src, sizeof src, "%s:__metadata__.mama_config", path);
    s = mama_config_from_json(&c, json, src);
    fd = mama__file_frozen_dtype(&st);
    for (i = 0; i < st.count; i++) numel += (size_t)st.tensors[i].numel; /* bounds the model the config may ask for */
    if ((tk = mama_st_meta(&st, "tokenizer")) != NULL) snprintf(tok_path, sizeof tok_path, "%s", tk);
    if ((tk = mama_st_meta(&st, "tokenizer_abs")) != NULL) snprintf(tok_abs, sizeof tok_abs, "%s", tk);
    if ((tk = mama_st_meta(&st, "tokenizer_fingerprint")) != NULL) snprintf(tok_fp, sizeof tok_fp, "%s", tk);
    mama_st_close(&st);
    MAMA_TRY(s);
    c.frozen_dtype = frozen_dtype == -1 ? fd : (mama_dtype)frozen_dtype;
    c.inference = inference;
    /* no random initialisation: the load sets every tensor */
    if ((s = mama__model_create(out, &c, be, max_batch, 0, 0, numel + 1)) == MAMA_ERR_FORMAT) {
        snprintf(src, sizeof src, "%s", strstr(mama_last_error(), "mama_config") ? strstr(mama_last_error(), "mama_config") : "");
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: %s", path, src);
    }
    MAMA_TRY(s);
    memcpy((*out)->tok_path, tok_path, sizeof tok_path);
    memcpy((*out)->tok_abs, tok_abs, sizeof tok_abs);
    memcpy((*out)->tok_fp, tok_fp, sizeof tok_fp);
    s = mama_model_load_weights(*out, path, 0, NULL);
    if (s != MAMA_OK) { mama_model_free(*out); *out = NULL; }
    return s;
}

MAMA_API mama_status mama_model_load_as(mama_model **out, const char *path, mama_backend *be, int max_batch,
                                        int frozen_dtype) {
    return mama__model_load(out, path, be, max_batch, frozen_dtype, 0);
}
MAMA_API mama_status mama_model_load(mama_model **out, const char *path, mama_backend *be, int max_batch) {
    return mama__model_load(out, path, be, max_batch, -1, 0);
}
MAMA_API mama_status mama_model_load_inference(mama_model **out, const char *path, mama_backend *be, int max_batch,
                                               int frozen_dtype) {
    return mama__model_load(out, path, be, max_batch, frozen_dtype, 1);
}

/* Add every tensor of the model and the config metadata to a writer.  The
 * tensors come from a host view `h` of the weights (mama__host_weights_init
 * + _download), which must stay alive until the writer is written;
 * half-precision tensors are written in their dtype. */
static mama_status mama__writer_add_model(mama_st_writer *w, const mama_model *m, const mama__host_weights *h) {
    char json[2048];
    int i;
    MAMA_TRY(mama_config_to_json(&m->cfg, json, sizeof json));
    MAMA_TRY(mama_st_writer_meta(w, "mama_config", json));
    if (m->tok_path[0]) MAMA_TRY(mama_st_writer_meta(w, "tokenizer", m->tok_path));
    if (m->tok_abs[0]) MAMA_TRY(mama_st_writer_meta(w, "tokenizer_abs", m->tok_abs));
    if (m->tok_fp[0]) MAMA_TRY(mama_st_writer_meta(w, "tokenizer_fingerprint", m->tok_fp));
    for (i = 0; i < m->nparams; i++) {
        const mama_param_info *p = &m->info[i];
        if (p->dtype == MAMA_F32) MAMA_TRY(mama_st_writer_add(w, p->name, MAMA_F32, p->ndim, p->shape, h->data + p->offset));
        else MAMA_TRY(mama_st_writer_add(w, p->name, p->dtype, p->ndim, p->shape, h->half + p->offset));
    }
    for (i = 0; i < 6; i++) MAMA_TRY(mama_st_writer_add(w, mama__bn_tracked_names[i], MAMA_I64, 0, NULL, &m->bn_batches[i]));
    return MAMA_OK;
}

/* A host view of m's current weights (a staging copy only on device backends). */
static mama_status mama__host_weights_get(const mama_model *m, mama__host_weights *h) {
    mama_model *mm = (mama_model *)(uintptr_t)m; /* the view binds pointers; the weights are not changed */
    mama_status s;
    MAMA_TRY(mama__host_weights_init(mm, h));
    s = mama__host_weights_download(mm, h);
    if (s != MAMA_OK) mama__host_weights_free(h);
    return s;
}

MAMA_API mama_status mama_model_save(const mama_model *m, const char *path) {
    mama_st_writer *w = NULL;
    mama__host_weights h;
    mama_status s;
    MAMA_TRY(mama__host_weights_get(m, &h));
    s = mama__check_finite(m, &h, path); /* never write a broken model */
    if (s == MAMA_OK) s = mama_st_writer_create(&w);
    if (s == MAMA_OK) s = mama__writer_add_model(w, m, &h);
    if (s == MAMA_OK) s = mama_st_writer_write(w, path);
    mama_st_writer_free(w);
    mama__host_weights_free(&h);
    return s;
}

/* ---- 6.5 AdamW over the parameter groups ------------------------------- */
MAMA_API mama_status mama_adamw_init(mama_adamw *o, mama_model *m, float weight_decay) {
    size_t n;
    memset(o, 0, sizeof *o);
    if (m->cfg.inference) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_adamw_init: the model was created for inference only");
    o->beta1 = 0.9f; o->beta2 = 0.999f; o->eps = 1e-8f; o->weight_decay = weight_decay;
    o->be = m->be;
    o->n_train = m->group_numel[MAMA_GROUP_TRAIN];
    o->n_late = m->group_numel[MAMA_GROUP_LATE];
    n = o->n_train + o->n_late;
    MAMA_TRY(m->be->alloc(m->be, (void **)&o->m, sizeof(float) * (n ? n : 1)));
    if (m->be->alloc(m->be, (void **)&o->v, sizeof(float) * (n ? n : 1)) != MAMA_OK) {
        m->be->free(m->be, o->m);
        o->m = NULL;
        return MAMA_ERR_NOMEM;
    }
    m->be->zero(m->be, o->m, sizeof(float) * n);
    m->be->zero(m->be, o->v, sizeof(float) * n);
    return MAMA_OK;
}
MAMA_API void mama_adamw_free(mama_adamw *o) {
    if (o->be) { o->be->free(o->be, o->m); o->be->free(o->be, o->v); }
    memset(o, 0, sizeof *o);
}
MAMA_API void mama_adamw_step(mama_adamw *o, mama_model *m, float lr, int late) {
    mama_backend *be = m->be;
    /* the [train] group is at offset 0 of params, grads and moments; [late]
     * follows it directly in all four buffers */
    o->step_train++;
    be->adamw_step(be, m->params, m->grads, o->m, o->v, o->n_train, lr, o->beta1, o->beta2, o->eps,
                   o->weight_decay, (int)o->step_train);
    if (late && o->n_late) {
        size_t off = o->n_train;
        o->step_late++;
        be->adamw_step(be, m->params + off, m->grads + off, o->m + off, o->v + off, o->n_late, lr, o->beta1,
                       o->beta2, o->eps, o->weight_decay, (int)o->step_late);
    }
}

MAMA_API mama_status mama_model_vision_tokens(mama_model *m, int B, float *prenorm, float *patch_norm) {
    mama_backend *be = m->be;
    const mama_config *c = &m->cfg;
    int D = c->vision_dim, T = m->n_vtok, N = m->n_patches, b;
    const float *x = m->a.vres[c->vision_depth];
    if (B < 1 || B > m->max_batch) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_vision_tokens: B %d out of 1..%d", B, m->max_batch);
    if (prenorm) MAMA_TRY(be->to_host(be, prenorm, x, sizeof(float) * (size_t)B * T * D));
    if (patch_norm) {
        be->layernorm_forward(be, m->a.vnorm, m->a.vnorm_mean, m->a.vnorm_rstd, x, m->w.norm_w, m->w.norm_b, B * T, D, 1e-6f);
        for (b = 0; b < B; b++)
            MAMA_TRY(be->to_host(be, patch_norm + (size_t)b * N * D, m->a.vnorm + ((size_t)b * T + 1 + c->registers) * D,
                                 sizeof(float) * (size_t)N * D));
    }
    return MAMA_OK;
}

MAMA_API mama_status mama_model_text_hidden(mama_model *m, int B, float *hidden) {
    if (B < 1 || B > m->max_batch) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_text_hidden: B %d out of 1..%d", B, m->max_batch);
    return m->be->to_host(m->be, hidden, m->a.hidden, sizeof(float) * (size_t)B * m->cfg.context * m->cfg.text_dim);
}

MAMA_API float mama_model_logit_scale(mama_model *m) { return expf(mama__read_scalar(m, m->w.logit_scale)); }

/* ==========================================================================
 * 7. FORMATS: JSON, text buffers, atomic files, half floats, safetensors,
 *    manifest CSV
 * ========================================================================== */

#include <locale.h>

#if defined(__unix__) || defined(__APPLE__)
#define MAMA__POSIX 1
#include <unistd.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/mman.h>
/* madvise(MADV_DONTNEED) hands mapped file pages back (mama__st_release).
 * Strict ISO modes (-std=c99) hide it behind _DEFAULT_SOURCE; on Linux the
 * call and the value (4) are fixed, so declare them where glibc did not. */
#if defined(MADV_DONTNEED)
#define MAMA__MADV_DONTNEED MADV_DONTNEED
#elif defined(__linux__)
extern int madvise(void *addr, size_t length, int advice);
#define MAMA__MADV_DONTNEED 4
#endif
#endif

/* ---- 7.1 Text buffer ------------------------------------------------------ */

/* Grow to hold `need` bytes plus the NUL.  Doubling keeps appends O(1)
 * amortised; mama_alloc has no realloc, so we copy. */
static mama_status mama__buf_reserve(mama_buf *b, size_t need) {
    size_t cap;
    char *p;
    if (need < b->cap) return MAMA_OK;
    if (need >= SIZE_MAX / 2 - 64) return MAMA_FAIL(MAMA_ERR_NOMEM, "text buffer of %zu bytes overflows", need);
    cap = b->cap ? b->cap : 64;
    while (cap <= need) cap *= 2;
    MAMA_TRY(mama_alloc((void **)&p, cap, "text buffer"));
    if (b->len) memcpy(p, b->data, b->len);
    p[b->len] = 0;
    mama_free(b->data);
    b->data = p;
    b->cap = cap;
    return MAMA_OK;
}

MAMA_API mama_status mama_buf_append(mama_buf *b, const void *s, size_t n) {
    if (n > SIZE_MAX / 4 || b->len > SIZE_MAX / 4)
        return MAMA_FAIL(MAMA_ERR_NOMEM, "text buffer append of %zu bytes overflows", n);
    MAMA_TRY(mama__buf_reserve(b, b->len + n));
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
    return MAMA_OK;
}

MAMA_API mama_status mama_buf_puts(mama_buf *b, const char *s) { return mama_buf_append(b, s, strlen(s)); }

MAMA_API mama_status mama_buf_printf(mama_buf *b, const char *fmt, ...) {
    va_list ap;
    int n;
    char small[256];
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return MAMA_FAIL(MAMA_ERR_INVALID, "bad format string \"%s\"", fmt);
    if ((size_t)n < sizeof small) return mama_buf_append(b, small, (size_t)n);
    MAMA_TRY(mama__buf_reserve(b, b->len + (size_t)n));
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MAMA_OK;
}

MAMA_API void mama_buf_free(mama_buf *b) {
    mama_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one.
 * Rejects overlong forms, surrogates (U+D800..DFFF) and code points above
 * U+10FFFF, as RFC 3629 requires.  `n` bytes are available. */
static int mama__utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* > U+10FFFF */
        return 4;
    }
    return 0;
}

/* Escape into `b` (if non-NULL) and return the escaped length; one pass
 * serves both the growable and the fixed-size forms. */
static size_t mama__json_escape_to(mama_buf *b, const char *str, mama_status *st) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str), i = 0, total = 2;
    *st = MAMA_OK;
    if (b) *st = mama_buf_append(b, "\"", 1);
    while (i < n && *st == MAMA_OK) {
        char esc[8];
        const char *piece = esc;
        size_t plen;
        unsigned c = s[i];
        int ul;
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; plen = 2; i++; }
        else if (c == '\n') { piece = "\\n"; plen = 2; i++; }
        else if (c == '\r') { piece = "\\r"; plen = 2; i++; }
        else if (c == '\t') { piece = "\\t"; plen = 2; i++; }
        else if (c == '\b') { piece = "\\b"; plen = 2; i++; }
        else if (c == '\f') { piece = "\\f"; plen = 2; i++; }
        else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\'; esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15]; plen = 6; i++;
        } else if ((ul = mama__utf8_len(s + i, n - i)) > 0) {
            piece = (const char *)s + i; plen = (size_t)ul; i += (size_t)ul;
        } else {
            piece = "\xEF\xBF\xBD"; plen = 3; i++; /* U+FFFD for a bad byte */
        }
        total += plen;
        if (b) *st = mama_buf_append(b, piece, plen);
    }
    if (b && *st == MAMA_OK) *st = mama_buf_append(b, "\"", 1);
    return total;
}

MAMA_API mama_status mama_buf_json_string(mama_buf *b, const char *s) {
    mama_status st;
    size_t before = b->len;
    mama__json_escape_to(b, s, &st);
    if (st != MAMA_OK && b->data) { b->len = before; b->data[before] = 0; }
    return st;
}

MAMA_API mama_status mama_json_escape(const char *s, char *out, size_t cap) {
    mama_status st;
    mama_buf b = {NULL, 0, 0};
    size_t need = mama__json_escape_to(NULL, s, &st);
    if (cap) out[0] = 0;
    if (need + 1 > cap)
        return MAMA_FAIL(MAMA_ERR_INVALID, "escaped JSON string needs %zu bytes, buffer has %zu", need + 1, cap);
    MAMA_TRY(mama_buf_json_string(&b, s));
    memcpy(out, b.data, b.len + 1);
    mama_buf_free(&b);
    return MAMA_OK;
}

/* %.17g round-trips every double; try shorter precisions first so that 0.1
 * prints as 0.1.  printf follows the locale's decimal point, so a ',' is
 * turned back into '.'. */
MAMA_API mama_status mama_buf_json_number(mama_buf *b, double x) {
    char tmp[40];
    int prec;
    char *p;
    if (x != x || x > DBL_MAX || x < -DBL_MAX) return mama_buf_append(b, "null", 4);
    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        for (p = tmp; *p; p++) if (*p == ',') *p = '.';
        if (strtod(tmp, NULL) == x) break; /* strtod also reads ',' only in such locales: see below */
    }
    /* In a ',' locale strtod stops at '.', so the loop may run to 17, which
     * is exact anyway. */
    return mama_buf_append(b, tmp, strlen(tmp));
}

/* ---- 7.2 JSON parser ------------------------------------------------------- */

typedef struct mama__json_parser {
    const char *s;      /* text */
    size_t n, i;        /* length, cursor */
    const char *name;   /* source name for messages */
    int depth;
} mama__json_parser;

/* Line and column (1-based, bytes) of offset `at`: computed only when an
 * error is reported, so parsing does not pay for it. */
static mama_status mama__json_error(const mama__json_parser *p, size_t at, const char *what) {
    size_t k, line = 1, col = 1;
    if (at > p->n) at = p->n;
    for (k = 0; k < at; k++) {
        if (p->s[k] == '\n') { line++; col = 1; } else col++;
    }
    if (at >= p->n)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu:%zu: %s (at end of input)", p->name, line, col, what);
    {
        unsigned char c = (unsigned char)p->s[at];
        if (c >= 0x20 && c < 0x7f)
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu:%zu: %s (found '%c')", p->name, line, col, what, c);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu:%zu: %s (found byte 0x%02x)", p->name, line, col, what, c);
    }
}

static void mama__json_ws(mama__json_parser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->i++;
        else break;
    }
}

/* Free what a node owns (not the node itself). */
static void mama__json_clear(mama_json *j) {
    size_t k;
    if (j->type == MAMA_JSON_STRING) mama_free(j->string);
    if (j->type == MAMA_JSON_ARRAY || j->type == MAMA_JSON_OBJECT) {
        for (k = 0; k < j->length; k++) {
            mama__json_clear(&j->children[k]);
            if (j->keys) mama_free(j->keys[k]);
        }
        mama_free(j->children);
        mama_free(j->keys);
    }
    memset(j, 0, sizeof *j);
}

MAMA_API void mama_json_free(mama_json *j) {
    if (!j) return;
    mama__json_clear(j);
    mama_free(j);
}

MAMA_API const mama_json *mama_json_get(const mama_json *object, const char *key) {
    size_t k;
    if (!object || object->type != MAMA_JSON_OBJECT || !key) return NULL;
    for (k = 0; k < object->length; k++)
        if (strcmp(object->keys[k], key) == 0) return &object->children[k];
    return NULL;
}

static int mama__hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    int k;
    for (k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t mama__utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

/* Parse a string at p->i (which is at the opening quote).  Two passes: the
 * first validates and measures, the second decodes into an exact buffer;
 * a decoded string is never longer than its source, so the measure is
 * the source span. */
static mama_status mama__json_string(mama__json_parser *p, char **out, size_t *out_len) {
    size_t start = ++p->i, k, o = 0, end;
    char *buf;
    const unsigned char *s = (const unsigned char *)p->s;
    *out = NULL;
    for (k = start;; ) {
        unsigned c;
        if (k >= p->n) return mama__json_error(p, start - 1, "unterminated string");
        c = s[k];
        if (c == '"') break;
        if (c < 0x20) return mama__json_error(p, k, "control character in string (must be escaped)");
        if (c == '\\') {
            unsigned cp;
            if (k + 1 >= p->n) return mama__json_error(p, start - 1, "unterminated string");
            c = s[k + 1];
            if (c == 'u') {
                if (k + 6 > p->n || !mama__hex4(p->s + k + 2, &cp))
                    return mama__json_error(p, k, "bad \\u escape (needs 4 hex digits)");
                if (cp >= 0xDC00 && cp <= 0xDFFF) return mama__json_error(p, k, "lone low surrogate in \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (k + 12 > p->n || s[k + 6] != '\\' || s[k + 7] != 'u' || !mama__hex4(p->s + k + 8, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return mama__json_error(p, k, "high surrogate not followed by a low surrogate \\u escape");
                    k += 12;
                } else {
                    k += 6;
                }
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
                k += 2;
            } else {
                return mama__json_error(p, k, "invalid escape in string");
            }
        } else {
            int ul = mama__utf8_len(s + k, p->n - k);
            if (!ul) return mama__json_error(p, k, "invalid UTF-8 in string");
            k += (size_t)ul;
        }
    }
    end = k;
    MAMA_TRY(mama_alloc((void **)&buf, end - start + 1, "JSON string"));
    for (k = start; k < end; ) {
        unsigned c = s[k];
        if (c != '\\') { buf[o++] = (char)c; k++; continue; }
        c = s[k + 1];
        switch (c) {
        case 'b': buf[o++] = '\b'; k += 2; break;
        case 'f': buf[o++] = '\f'; k += 2; break;
        case 'n': buf[o++] = '\n'; k += 2; break;
        case 'r': buf[o++] = '\r'; k += 2; break;
        case 't': buf[o++] = '\t'; k += 2; break;
        case 'u': {
            unsigned cp, lo;
            mama__hex4(p->s + k + 2, &cp);
            k += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                mama__hex4(p->s + k + 2, &lo);
                k += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            o += mama__utf8_put(buf + o, cp);
            break;
        }
        default: buf[o++] = (char)c; k += 2; break; /* " \ / */
        }
    }
    buf[o] = 0;
    p->i = end + 1;
    *out = buf;
    *out_len = o;
    return MAMA_OK;
}

/* Number grammar of RFC 8259: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
 * Validated by hand; the value comes from strtod on a copy with the '.'
 * replaced by the locale's decimal point (strtod is locale-dependent). */
static mama_status mama__json_number(mama__json_parser *p, double *out) {
    size_t start = p->i, k = p->i, len;
    const char *s = p->s;
    char tmp[64], *heap = NULL, *txt, *endp;
    const char *dp;
    double v;
    if (k < p->n && s[k] == '-') k++;
    if (k >= p->n || !(s[k] >= '0' && s[k] <= '9')) return mama__json_error(p, k, "expected a digit");
    if (s[k] == '0') {
        k++;
        if (k < p->n && s[k] >= '0' && s[k] <= '9') return mama__json_error(p, k, "leading zero in number");
    } else {
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    if (k < p->n && s[k] == '.') {
        k++;
        if (k >= p->n || !(s[k] >= '0' && s[k] <= '9')) return mama__json_error(p, k, "expected a digit after '.'");
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    if (k < p->n && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < p->n && (s[k] == '+' || s[k] == '-')) k++;
        if (k >= p->n || !(s[k] >= '0' && s[k] <= '9')) return mama__json_error(p, k, "expected a digit in exponent");
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    len = k - start;
    if (len < sizeof tmp) txt = tmp;
    else { MAMA_TRY(mama_alloc((void **)&heap, len + 1, "JSON number")); txt = heap; }
    memcpy(txt, s + start, len);
    txt[len] = 0;
    dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
        char *q = strchr(txt, '.');
        if (q) *q = dp[0];
    }
    errno = 0;
    v = strtod(txt, &endp);
    mama_free(heap);
    if (v > DBL_MAX || v < -DBL_MAX) return mama__json_error(p, start, "number out of range for a double");
    *out = v;
    p->i = k;
    return MAMA_OK;
}

static mama_status mama__json_value(mama__json_parser *p, mama_json *out);

/* Collect children in a doubling scratch array, then keep it (exact size is
 * not worth a second copy). */
static mama_status mama__json_grow(mama_json **ch, char ***keys, size_t *cap, size_t len, int with_keys) {
    size_t ncap;
    mama_json *nc;
    char **nk = NULL;
    if (len < *cap) return MAMA_OK;
    ncap = *cap ? *cap * 2 : 4;
    if (ncap > SIZE_MAX / sizeof(mama_json)) return MAMA_FAIL(MAMA_ERR_NOMEM, "JSON container too large");
    MAMA_TRY(mama_alloc((void **)&nc, ncap * sizeof(mama_json), "JSON children"));
    if (with_keys) {
        mama_status st = mama_alloc((void **)&nk, ncap * sizeof(char *), "JSON keys");
        if (st != MAMA_OK) { mama_free(nc); return st; }
        if (len) memcpy(nk, *keys, len * sizeof(char *));
        mama_free(*keys);
        *keys = nk;
    }
    if (len) memcpy(nc, *ch, len * sizeof(mama_json));
    mama_free(*ch);
    *ch = nc;
    *cap = ncap;
    return MAMA_OK;
}

static mama_status mama__json_container(mama__json_parser *p, mama_json *out, int is_object) {
    size_t cap = 0, open = p->i;
    mama_status st = MAMA_OK;
    char close = is_object ? '}' : ']';
    out->type = is_object ? MAMA_JSON_OBJECT : MAMA_JSON_ARRAY;
    out->length = 0;
    if (++p->depth > MAMA_JSON_MAX_DEPTH) return mama__json_error(p, open, "nesting deeper than MAMA_JSON_MAX_DEPTH (512) levels");
    p->i++;
    mama__json_ws(p);
    if (p->i < p->n && p->s[p->i] == close) { p->i++; p->depth--; return MAMA_OK; }
    for (;;) {
        char *key = NULL;
        size_t klen;
        mama__json_ws(p);
        if (is_object) {
            if (p->i >= p->n || p->s[p->i] != '"') { st = mama__json_error(p, p->i, "expected a string key"); break; }
            if ((st = mama__json_string(p, &key, &klen)) != MAMA_OK) break;
            mama__json_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { mama_free(key); st = mama__json_error(p, p->i, "expected ':' after key"); break; }
            p->i++;
            mama__json_ws(p);
        }
        if ((st = mama__json_grow(&out->children, &out->keys, &cap, out->length, is_object)) != MAMA_OK) { mama_free(key); break; }
        memset(&out->children[out->length], 0, sizeof(mama_json));
        if (is_object) out->keys[out->length] = key;
        out->length++; /* counted now so that cleanup frees the key */
        if ((st = mama__json_value(p, &out->children[out->length - 1])) != MAMA_OK) break;
        mama__json_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == close) { p->i++; break; }
        st = mama__json_error(p, p->i, is_object ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
        break;
    }
    p->depth--;
    return st;
}

static int mama__json_lit(mama__json_parser *p, const char *lit) {
    size_t l = strlen(lit);
    if (p->n - p->i >= l && memcmp(p->s + p->i, lit, l) == 0) { p->i += l; return 1; }
    return 0;
}

/* On failure `out` may be partly built; the caller clears it. */
static mama_status mama__json_value(mama__json_parser *p, mama_json *out) {
    char c;
    mama__json_ws(p);
    if (p->i >= p->n) return mama__json_error(p, p->i, "expected a value");
    c = p->s[p->i];
    switch (c) {
    case '{': return mama__json_container(p, out, 1);
    case '[': return mama__json_container(p, out, 0);
    case '"':
        out->type = MAMA_JSON_STRING;
        return mama__json_string(p, &out->string, &out->length);
    case 't':
        if (mama__json_lit(p, "true")) { out->type = MAMA_JSON_BOOL; out->number = 1; return MAMA_OK; }
        break;
    case 'f':
        if (mama__json_lit(p, "false")) { out->type = MAMA_JSON_BOOL; out->number = 0; return MAMA_OK; }
        break;
    case 'n':
        if (mama__json_lit(p, "null")) { out->type = MAMA_JSON_NULL; return MAMA_OK; }
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            out->type = MAMA_JSON_NUMBER;
            return mama__json_number(p, &out->number);
        }
    }
    return mama__json_error(p, p->i, "expected a value");
}

MAMA_API mama_status mama_json_parse(const char *text, size_t len, const char *source_name, mama_json **out) {
    mama__json_parser p;
    mama_json *root;
    mama_status st;
    *out = NULL;
    p.s = text ? text : "";
    p.n = text ? len : 0;
    p.i = 0;
    p.name = source_name ? source_name : "<json>";
    p.depth = 0;
    MAMA_TRY(mama_calloc((void **)&root, sizeof *root, "JSON root"));
    st = mama__json_value(&p, root);
    if (st == MAMA_OK) {
        mama__json_ws(&p);
        if (p.i != p.n) st = mama__json_error(&p, p.i, "unexpected text after the JSON value");
    }
    if (st != MAMA_OK) { mama_json_free(root); return st; }
    *out = root;
    return MAMA_OK;
}

/* ---- 7.3 Files ------------------------------------------------------------ */

static mama_status mama__strdup(char **out, const char *s, const char *what) {
    size_t n = strlen(s);
    MAMA_TRY(mama_alloc((void **)out, n + 1, what));
    memcpy(*out, s, n + 1);
    return MAMA_OK;
}

/* Reads in a loop rather than trusting ftell alone, so pipes and files
 * whose size is not known in advance (/proc, FIFOs) work too; the size
 * from ftell is only the first guess for the buffer. */
MAMA_API mama_status mama_read_file(const char *path, unsigned char **data, size_t *size) {
    FILE *f;
    long end;
    size_t cap = 4096, len = 0;
    unsigned char *buf;
    *data = NULL;
    *size = 0;
#ifdef MAMA__POSIX
    {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return MAMA_FAIL(MAMA_ERR_IO, "%s: is a directory, not a file", path);
    }
#endif
    f = fopen(path, "rb");
    if (!f) return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) == 0 && (end = ftell(f)) >= 0 && (unsigned long)end < ((unsigned long)1 << 30) * 64) {
        if (fseek(f, 0, SEEK_SET) != 0) { fclose(f); return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot seek", path); }
        if ((size_t)end + 1 > cap) cap = (size_t)end + 1;
    } else {
        clearerr(f);
        rewind(f);
    }
    if (mama_alloc((void **)&buf, cap, path) != MAMA_OK) { fclose(f); return MAMA_ERR_NOMEM; }
    for (;;) {
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (len < cap - 1) {
            if (ferror(f)) {
                mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: read failed after %zu bytes: %s", path, len, strerror(errno));
                fclose(f);
                mama_free(buf);
                return st;
            }
            if (feof(f)) break;
            continue;
        }
        {
            /* full: the file grew or the size was unknown; double */
            unsigned char *nb;
            if (cap > SIZE_MAX / 2) { fclose(f); mama_free(buf); return MAMA_FAIL(MAMA_ERR_NOMEM, "%s: file too large", path); }
            if (mama_alloc((void **)&nb, cap * 2, path) != MAMA_OK) { fclose(f); mama_free(buf); return MAMA_ERR_NOMEM; }
            memcpy(nb, buf, len);
            mama_free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    buf[len] = 0;
    *data = buf;
    *size = len;
    return MAMA_OK;
}

static void mama__atomic_release(mama_atomic_file *af) {
    mama_free(af->path);
    mama_free(af->tmp_path);
    memset(af, 0, sizeof *af);
    af->fd = -1;
}

/* POSIX: raw descriptors (open/write/fsync/close from <unistd.h>), which
 * needs no feature macros even under -std=c99, unlike fdopen/fileno.
 * Elsewhere: stdio, without fsync. */
MAMA_API mama_status mama_atomic_open(mama_atomic_file *af, const char *path) {
    /* The temporary name carries the pid and an attempt number; creation is
     * exclusive, so concurrent writers (threads or processes) never share
     * one: a name taken by another writer only costs a retry with the next
     * number (no shared counter, no static state). */
    unsigned long pid = 0;
    size_t n = strlen(path) + 64;
    int attempt, opened = 0;
    memset(af, 0, sizeof *af);
    af->fd = -1;
#ifdef MAMA__POSIX
    pid = (unsigned long)getpid();
#endif
    MAMA_TRY(mama__strdup(&af->path, path, "atomic file path"));
    if (mama_alloc((void **)&af->tmp_path, n, "atomic temp path") != MAMA_OK) { mama__atomic_release(af); return MAMA_ERR_NOMEM; }
    for (attempt = 0; attempt < 100 && !opened; attempt++) {
        snprintf(af->tmp_path, n, "%s.tmp.%lu.%d", path, pid, attempt);
#ifdef MAMA__POSIX
        /* O_EXCL: never clobber (or follow a symlink to) an existing file */
        af->fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (af->fd >= 0) opened = 1;
        else if (errno != EEXIST) break;
#else
        {
            FILE *probe = fopen(af->tmp_path, "rb");
            if (probe) { fclose(probe); continue; }
            af->fp = fopen(af->tmp_path, "wb");
            if (!af->fp) break;
            opened = 1;
        }
#endif
    }
    if (!opened) {
        mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: cannot create temporary file %s: %s", path, af->tmp_path, strerror(errno));
        mama__atomic_release(af);
        return st;
    }
    return MAMA_OK;
}

MAMA_API mama_status mama_atomic_write(mama_atomic_file *af, const void *data, size_t n) {
    if (!af->path) return MAMA_FAIL(MAMA_ERR_INVALID, "atomic write on a closed file");
    if (af->failed) return MAMA_FAIL(MAMA_ERR_IO, "%s: an earlier write failed", af->path);
#ifdef MAMA__POSIX
    {
        const char *p = (const char *)data;
        while (n > 0) {
            size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
            ssize_t w = write(af->fd, p, chunk);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                af->failed = 1;
                return MAMA_FAIL(MAMA_ERR_IO, "%s: write to %s failed: %s", af->path, af->tmp_path,
                                 w < 0 ? strerror(errno) : "no progress");
            }
            p += w;
            n -= (size_t)w;
        }
    }
#else
    if (n && fwrite(data, 1, n, (FILE *)af->fp) != n) {
        af->failed = 1;
        return MAMA_FAIL(MAMA_ERR_IO, "%s: write of %zu bytes to %s failed: %s", af->path, n, af->tmp_path, strerror(errno));
    }
#endif
    return MAMA_OK;
}

MAMA_API void mama_atomic_abort(mama_atomic_file *af) {
    if (af->path) {
#ifdef MAMA__POSIX
        if (af->fd >= 0) close(af->fd);
#else
        if (af->fp) fclose((FILE *)af->fp);
#endif
        remove(af->tmp_path);
    }
    mama__atomic_release(af);
}

#ifdef MAMA__POSIX
/* After rename the new directory entry must reach the disk too, or a crash
 * can bring back the old name.  Best effort: some filesystems refuse. */
static void mama__fsync_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd;
    if (!slash) { dir[0] = '.'; dir[1] = 0; }
    else if (slash == path) { dir[0] = '/'; dir[1] = 0; }
    else {
        size_t l = (size_t)(slash - path);
        if (l >= sizeof dir) return;
        memcpy(dir, path, l);
        dir[l] = 0;
    }
    fd = open(dir, O_RDONLY);
    if (fd >= 0) { (void)fsync(fd); close(fd); }
}
#endif

MAMA_API mama_status mama_atomic_commit(mama_atomic_file *af) {
    int bad;
    if (!af->path) return MAMA_FAIL(MAMA_ERR_INVALID, "atomic commit on a closed file");
    bad = af->failed;
#ifdef MAMA__POSIX
    /* fsync before rename: otherwise the rename can reach the disk before
     * the data, and a crash leaves an empty file under the final name */
    if (!bad && fsync(af->fd) != 0) bad = 1;
    if (close(af->fd) != 0) bad = 1;
    af->fd = -1;
#else
    if (fflush((FILE *)af->fp) != 0 || ferror((FILE *)af->fp)) bad = 1;
    if (fclose((FILE *)af->fp) != 0) bad = 1;
    af->fp = NULL;
#endif
    if (bad) {
        mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: writing %s failed: %s", af->path, af->tmp_path, strerror(errno));
        remove(af->tmp_path);
        mama__atomic_release(af);
        return st;
    }
#ifndef MAMA__POSIX
    remove(af->path); /* rename() does not replace on Windows */
#endif
    if (rename(af->tmp_path, af->path) != 0) {
        mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: cannot rename %s into place: %s", af->path, af->tmp_path, strerror(errno));
        remove(af->tmp_path);
        mama__atomic_release(af);
        return st;
    }
#ifdef MAMA__POSIX
    mama__fsync_dir(af->path);
#endif
    mama__atomic_release(af);
    return MAMA_OK;
}

MAMA_API mama_status mama_write_file_atomic(const char *path, const void *data, size_t n) {
    mama_atomic_file af;
    mama_status st;
    MAMA_TRY(mama_atomic_open(&af, path));
    st = mama_atomic_write(&af, data, n);
    if (st != MAMA_OK) { mama_atomic_abort(&af); return st; }
    return mama_atomic_commit(&af);
}

/* ---- 7.4 Half precision ---------------------------------------------------
 * binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.  bfloat16: the
 * top 16 bits of a float32 (8 exponent bits, 7 mantissa), so widening is a
 * shift and narrowing is rounding away the low 16 bits. */

static float mama__f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t mama__f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

MAMA_API float mama_bf16_to_f32(uint16_t h) { return mama__f32_from_bits((uint32_t)h << 16); }

MAMA_API uint16_t mama_f32_to_bf16(float f) {
    uint32_t u = mama__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN: keep it quiet */
    /* round to nearest even: add 0x7fff plus the lowest kept bit, truncate */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

MAMA_API float mama_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return mama__f32_from_bits(sign | 0x7f800000u | (man << 13)); /* Inf / NaN */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return mama__f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

MAMA_API uint16_t mama_f32_to_f16(float f) {
    uint32_t u = mama__f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to Inf */
    if (a < 0x38800000u) {
        /* below the smallest normal 2^-14: result is subnormal, value/2^-24
         * rounded to nearest even.  a < 2^-25 rounds to zero. */
        uint32_t man, shift, r, half, rem;
        if (a < 0x33000000u) return (uint16_t)sign;
        man = (a & 0x7fffffu) | 0x800000u;
        shift = 126u - (a >> 23); /* 14..24: bits to drop to reach units of 2^-24 */
        r = man >> shift;
        rem = man & ((1u << shift) - 1u);
        half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    /* normal: rebias exponent (127 -> 15), round the 13 dropped bits to even;
     * a carry into the exponent is the correct rounding up. */
    a += 0x0fffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
}

/* ---- 7.5 safetensors ------------------------------------------------------- */

static const char *const mama__dtype_names[] = {"F32", "F16", "BF16", "I32", "I64", "U8", "F64", "I8", "I16", "BOOL"};
static const size_t mama__dtype_sizes[] = {4, 2, 2, 4, 8, 1, 8, 1, 2, 1};
#define MAMA__NDTYPES 10

MAMA_API size_t mama_dtype_size(mama_dtype dt) {
    return ((unsigned)dt < MAMA__NDTYPES) ? mama__dtype_sizes[dt] : 0;
}
MAMA_API const char *mama_dtype_name(mama_dtype dt) {
    return ((unsigned)dt < MAMA__NDTYPES) ? mama__dtype_names[dt] : "?";
}
MAMA_API int mama_dtype_parse(const char *name, mama_dtype *dt) {
    int k;
    for (k = 0; k < MAMA__NDTYPES; k++)
        if (strcmp(name, mama__dtype_names[k]) == 0) { *dt = (mama_dtype)k; return 0; }
    return -1;
}

/* Little-endian loads that work on any host and any alignment; compilers
 * turn them into single moves on x86. */
static uint16_t mama__le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t mama__le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t mama__le64(const unsigned char *p) { return (uint64_t)mama__le32(p) | ((uint64_t)mama__le32(p + 4) << 32); }
static int mama__host_is_le(void) { const uint16_t one = 1; unsigned char b; memcpy(&b, &one, 1); return b == 1; }

static MAMA_THREAD_LOCAL const mama_safetensors *mama__st_sort_ctx; /* qsort has no context argument */
static int mama__st_cmp_name(const void *a, const void *b) {
    const mama_st_tensor *t = mama__st_sort_ctx->tensors;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}
static int mama__st_cmp_offset(const void *a, const void *b) {
    const mama_st_tensor *t = mama__st_sort_ctx->tensors;
    size_t x = t[*(const int *)a].offset, y = t[*(const int *)b].offset;
    size_t xe = x + t[*(const int *)a].nbytes, ye = y + t[*(const int *)b].nbytes;
    if (x != y) return x < y ? -1 : 1;
    if (xe != ye) return xe < ye ? -1 : 1;
    return 0;
}

MAMA_API void mama_st_close(mama_safetensors *st) {
    int k;
    if (!st) return;
    for (k = 0; k < st->count; k++) mama_free(st->tensors[k].name);
    for (k = 0; k < st->meta_count; k++) { mama_free(st->meta_keys[k]); mama_free(st->meta_values[k]); }
    mama_free(st->tensors);
    mama_free(st->meta_keys);
    mama_free(st->meta_values);
    mama_free(st->sorted_);
    if (st->storage_ == 1) mama_free(st->data);
#ifdef MAMA__POSIX
    if (st->storage_ == 2 && st->data) munmap(st->data, st->size);
#endif
    mama_free(st->path);
    memset(st, 0, sizeof *st);
}

/* A JSON number that is a non-negative integer exactly representable
 * (<= 2^53), as size_t; 0 on failure. */
static int mama__json_uint(const mama_json *j, uint64_t *out) {
    if (!j || j->type != MAMA_JSON_NUMBER) return 0;
    if (!(j->number >= 0) || j->number > 9007199254740992.0 || j->number != floor(j->number)) return 0;
    *out = (uint64_t)j->number;
    return 1;
}

/* Parse one tensor entry of the header into t (name already set). */
static mama_status mama__st_entry(const mama_safetensors *st, const char *name, const mama_json *e,
                                  size_t data_size, mama_st_tensor *t) {
    const mama_json *dt = mama_json_get(e, "dtype"), *shape = mama_json_get(e, "shape"),
                    *offs = mama_json_get(e, "data_offsets");
    size_t k, elem;
    uint64_t numel = 1, begin, end;
    if (e->type != MAMA_JSON_OBJECT)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": header entry is not an object", st->path, name);
    if (!dt || dt->type != MAMA_JSON_STRING)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": missing \"dtype\" string", st->path, name);
    if (mama_dtype_parse(dt->string, &t->dtype) != 0)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": unsupported dtype \"%.32s\"", st->path, name, dt->string);
    if (!shape || shape->type != MAMA_JSON_ARRAY)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": missing \"shape\" array", st->path, name);
    if (shape->length > MAMA_ST_MAX_DIMS)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": %zu dimensions (at most %d supported)", st->path, name,
                         shape->length, MAMA_ST_MAX_DIMS);
    t->ndim = (int)shape->length;
    for (k = 0; k < shape->length; k++) {
        uint64_t d;
        if (!mama__json_uint(&shape->children[k], &d))
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": shape[%zu] is not a non-negative integer", st->path, name, k);
        t->shape[k] = (int64_t)d;
        /* overflow-safe product: numel * d <= data size, else it cannot fit */
        if (d && numel > (uint64_t)data_size / d)
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": shape has more elements than the file holds bytes", st->path, name);
        numel *= d;
    }
    if (!offs || offs->type != MAMA_JSON_ARRAY || offs->length != 2 || !mama__json_uint(&offs->children[0], &begin) ||
        !mama__json_uint(&offs->children[1], &end))
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": \"data_offsets\" must be [begin, end] integers", st->path, name);
    if (begin > end)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": data_offsets begin %llu > end %llu", st->path, name,
                         (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": data_offsets end %llu is past the data section (%zu bytes; file truncated?)",
                         st->path, name, (unsigned long long)end, data_size);
    elem = mama__dtype_sizes[t->dtype];
    if (numel * elem != end - begin)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": %s shape holds %llu bytes but data_offsets span %llu", st->path,
                         name, mama__dtype_names[t->dtype], (unsigned long long)(numel * elem),
                         (unsigned long long)(end - begin));
    t->numel = (size_t)numel;
    t->offset = (size_t)begin;
    t->nbytes = (size_t)(end - begin);
    return MAMA_OK;
}

/* Parse the header of st->data[0..size) (path, data, size already set). */
static mama_status mama__st_parse(mama_safetensors *st) {
    uint64_t hlen;
    size_t data_size, k, nt = 0, expect;
    mama_json *root = NULL;
    const mama_json *meta;
    mama_status s = MAMA_OK;
    if (st->size < 8)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file (needs 8-byte header length)", st->path, st->size);
    hlen = mama__le64(st->data);
    /* the reference refuses headers over 100 MB: a garbage length would
     * otherwise make us try to parse gigabytes */
    if (hlen > 100000000u)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header length %llu exceeds the 100,000,000-byte limit (not a safetensors file?)",
                         st->path, (unsigned long long)hlen);
    if (hlen > st->size - 8)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header length %llu but the file has only %zu bytes after it (truncated?)",
                         st->path, (unsigned long long)hlen, st->size - 8);
    if (hlen < 2 || st->data[8] != '{')
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header does not start with '{' (not a safetensors file?)", st->path);
    st->data_start = 8 + (size_t)hlen;
    data_size = st->size - st->data_start;
    MAMA_TRY(mama_json_parse((const char *)st->data + 8, (size_t)hlen, st->path, &root));
    if (root->type != MAMA_JSON_OBJECT) { mama_json_free(root); return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header is not a JSON object", st->path); }
    meta = mama_json_get(root, "__metadata__");
    for (k = 0; k < root->length; k++) if (strcmp(root->keys[k], "__metadata__") != 0) nt++;
    if (meta && root->length - nt > 1) {
        mama_json_free(root);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ appears twice in the header", st->path);
    }
    if (nt > (size_t)INT_MAX / 2 || (meta && meta->length > (size_t)INT_MAX / 2)) {
        mama_json_free(root);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: too many header entries", st->path);
    }
    if ((s = mama_calloc((void **)&st->tensors, (nt ? nt : 1) * sizeof(mama_st_tensor), "safetensors tensors")) != MAMA_OK) goto done;
    if ((s = mama_calloc((void **)&st->sorted_, (nt ? nt : 1) * sizeof(int), "safetensors index")) != MAMA_OK) goto done;
    if (meta) {
        size_t m = meta->length ? meta->length : 1;
        if (meta->type != MAMA_JSON_OBJECT) { s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ is not an object", st->path); goto done; }
        if ((s = mama_calloc((void **)&st->meta_keys, m * sizeof(char *), "safetensors metadata")) != MAMA_OK) goto done;
        if ((s = mama_calloc((void **)&st->meta_values, m * sizeof(char *), "safetensors metadata")) != MAMA_OK) goto done;
        for (k = 0; k < meta->length; k++) {
            const mama_json *v = &meta->children[k];
            if (v->type != MAMA_JSON_STRING) {
                s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ \"%s\" is not a string", st->path, meta->keys[k]);
                goto done;
            }
            if ((s = mama__strdup(&st->meta_keys[k], meta->keys[k], "metadata key")) != MAMA_OK) goto done;
            st->meta_count = (int)k + 1;
            if ((s = mama__strdup(&st->meta_values[k], v->string, "metadata value")) != MAMA_OK) goto done;
        }
    }
    for (k = 0; k < root->length; k++) {
        mama_st_tensor *t;
        if (strcmp(root->keys[k], "__metadata__") == 0) continue;
        t = &st->tensors[st->count];
        if ((s = mama__strdup(&t->name, root->keys[k], "tensor name")) != MAMA_OK) goto done;
        st->sorted_[st->count] = st->count;
        st->count++;
        if ((s = mama__st_entry(st, root->keys[k], &root->children[k], data_size, t)) != MAMA_OK) goto done;
    }
    /* Tiling check: sorted by offset, each tensor starts where the previous
     * ended and the last ends at the end of the file. */
    mama__st_sort_ctx = st;
    qsort(st->sorted_, (size_t)st->count, sizeof(int), mama__st_cmp_offset);
    expect = 0;
    for (k = 0; k < (size_t)st->count; k++) {
        const mama_st_tensor *t = &st->tensors[st->sorted_[k]];
        if (t->offset != expect) {
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": data_offsets begin %zu, expected %zu (%s)", st->path, t->name,
                          t->offset, expect, t->offset < expect ? "overlaps the previous tensor" : "gap before it");
            goto done;
        }
        expect = t->offset + t->nbytes;
    }
    if (expect != data_size) {
        s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensors cover %zu bytes of a %zu-byte data section (trailing bytes)", st->path,
                      expect, data_size);
        goto done;
    }
    for (k = 0; k < (size_t)st->count; k++) st->sorted_[k] = (int)k;
    qsort(st->sorted_, (size_t)st->count, sizeof(int), mama__st_cmp_name);
    for (k = 1; k < (size_t)st->count; k++)
        if (strcmp(st->tensors[st->sorted_[k - 1]].name, st->tensors[st->sorted_[k]].name) == 0) {
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\" appears twice in the header", st->path, st->tensors[st->sorted_[k]].name);
            goto done;
        }
    for (k = 0; k < (size_t)st->meta_count; k++) {
        size_t q;
        for (q = 0; q < k; q++)
            if (strcmp(st->meta_keys[q], st->meta_keys[k]) == 0) {
                s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ key \"%s\" appears twice", st->path, st->meta_keys[k]);
                goto done;
            }
    }
done:
    mama_json_free(root);
    return s;
}

MAMA_API mama_status mama_st_open_memory(mama_safetensors *st, const void *data, size_t size, const char *name) {
    mama_status s;
    memset(st, 0, sizeof *st);
    MAMA_TRY(mama__strdup(&st->path, name ? name : "<memory>", "safetensors name"));
    st->data = (unsigned char *)data;
    st->size = size;
    st->storage_ = 0;
    s = mama__st_parse(st);
    if (s != MAMA_OK) mama_st_close(st);
    return s;
}

MAMA_API mama_status mama_st_open(mama_safetensors *st, const char *path) {
    mama_status s;
    memset(st, 0, sizeof *st);
    MAMA_TRY(mama__strdup(&st->path, path, "safetensors path"));
#ifdef MAMA__POSIX
    {
        /* mmap: weights are paged in on first touch and shared with the
         * page cache, so a 5 GB checkpoint costs no copy. */
        int fd = open(path, O_RDONLY);
        struct stat sb;
        if (fd < 0) {
            s = MAMA_FAIL(MAMA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
            mama_st_close(st);
            return s;
        }
        if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 && (uint64_t)sb.st_size <= (uint64_t)SIZE_MAX) {
            void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m != MAP_FAILED) {
                st->data = (unsigned char *)m;
                st->size = (size_t)sb.st_size;
                st->storage_ = 2;
            }
        }
        close(fd);
    }
#endif
    if (!st->data) {
        s = mama_read_file(path, &st->data, &st->size);
        if (s != MAMA_OK) { mama_st_close(st); return s; }
        st->storage_ = 1;
    }
    s = mama__st_parse(st);
    if (s != MAMA_OK) mama_st_close(st);
    return s;
}

MAMA_API const mama_st_tensor *mama_st_find(const mama_safetensors *st, const char *name) {
    int lo = 0, hi = st->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const mama_st_tensor *t = &st->tensors[st->sorted_[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

MAMA_API const char *mama_st_meta(const mama_safetensors *st, const char *key) {
    int k;
    for (k = 0; k < st->meta_count; k++)
        if (strcmp(st->meta_keys[k], key) == 0) return st->meta_values[k];
    return NULL;
}

MAMA_API const void *mama_st_data(const mama_safetensors *st, const mama_st_tensor *t) {
    return st->data + st->data_start + t->offset;
}

static mama_status mama__st_lookup(const mama_safetensors *st, const char *name, size_t count, const mama_st_tensor **out) {
    const mama_st_tensor *t = mama_st_find(st, name);
    *out = t;
    if (!t) return MAMA_FAIL(MAMA_ERR_INVALID, "%s: no tensor \"%s\"", st->path, name);
    if (t->numel != count)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has %zu elements, caller expects %zu", st->path, name, t->numel, count);
    return MAMA_OK;
}

MAMA_API mama_status mama_st_read_f32(const mama_safetensors *st, const char *name, float *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    p = (const unsigned char *)mama_st_data(st, t);
    switch (t->dtype) {
    case MAMA_F32:
        if (mama__host_is_le()) { if (count) memcpy(dst, p, count * 4); }
        else for (i = 0; i < count; i++) dst[i] = mama__f32_from_bits(mama__le32(p + 4 * i));
        return MAMA_OK;
    case MAMA_F16:
    case MAMA_BF16: {
        /* widening a multi-GB half-precision checkpoint is memory-bound but
         * still worth a few threads; small tensors stay serial */
        long long j, n = (long long)count;
        int bf = t->dtype == MAMA_BF16;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n > (1 << 20))
#endif
        for (j = 0; j < n; j++) {
            uint16_t h = mama__le16(p + 2 * j);
            dst[j] = bf ? mama_bf16_to_f32(h) : mama_f16_to_f32(h);
        }
        return MAMA_OK;
    }
    case MAMA_F64:
        for (i = 0; i < count; i++) { uint64_t u = mama__le64(p + 8 * i); double d; memcpy(&d, &u, 8); dst[i] = (float)d; }
        return MAMA_OK;
    default:
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not a float type", st->path, name, mama_dtype_name(t->dtype));
    }
}

MAMA_API mama_status mama_st_read_bf16(const mama_safetensors *st, const char *name, uint16_t *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    p = (const unsigned char *)mama_st_data(st, t);
    if (t->dtype == MAMA_BF16) {
        if (mama__host_is_le()) { if (count) memcpy(dst, p, count * 2); }
        else for (i = 0; i < count; i++) dst[i] = mama__le16(p + 2 * i);
        return MAMA_OK;
    }
    if (t->dtype != MAMA_F32 && t->dtype != MAMA_F16 && t->dtype != MAMA_F64)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not a float type", st->path, name, mama_dtype_name(t->dtype));
    for (i = 0; i < count; i++) {
        float f;
        if (t->dtype == MAMA_F32) f = mama__f32_from_bits(mama__le32(p + 4 * i));
        else if (t->dtype == MAMA_F16) f = mama_f16_to_f32(mama__le16(p + 2 * i));
        else { uint64_t u = mama__le64(p + 8 * i); double d; memcpy(&d, &u, 8); f = (float)d; }
        dst[i] = mama_f32_to_bf16(f);
    }
    return MAMA_OK;
}

/* Half-precision reads for the model's frozen matrices (section 6):
 * dt MAMA_BF16 is mama_st_read_bf16; dt MAMA_F16 copies F16 as is and
 * rounds F32/BF16/F64 (through float32) to nearest even. */
/* A tensor's bytes read() from the file straight into dst, for a file that
 * is memory-mapped: the mapping's pages are then never touched, so a 5 GB
 * checkpoint is not resident twice while it is copied.  Returns 0 (and the
 * caller copies from the mapping) where this does not apply or fails. */
static int mama__st_read_direct(const mama_safetensors *st, const mama_st_tensor *t, void *dst) {
#ifdef MAMA__POSIX
    size_t done = 0, pos = st->data_start + t->offset;
    int fd;
    if (st->storage_ != 2 || !st->path || t->nbytes < ((size_t)1 << 16) || pos > (size_t)LONG_MAX) return 0;
    fd = open(st->path, O_RDONLY);
    if (fd < 0) return 0;
    if (lseek(fd, (off_t)pos, SEEK_SET) != (off_t)pos) { close(fd); return 0; }
    while (done < t->nbytes) {
        size_t want = t->nbytes - done;
        ssize_t r = read(fd, (char *)dst + done, want > ((size_t)1 << 30) ? ((size_t)1 << 30) : want);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { close(fd); return 0; }
        done += (size_t)r;
    }
    close(fd);
    return 1;
#else
    (void)st; (void)t; (void)dst;
    return 0;
#endif
}

static mama_status mama__st_read_half(const mama_safetensors *st, const char *name, uint16_t *dst, size_t count,
                                      mama_dtype dt) {
    const mama_st_tensor *t;
    const unsigned char *p;
    float *tmp;
    size_t i;
    mama_status s;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    if (t->dtype == dt && mama__host_is_le() && mama__st_read_direct(st, t, dst)) return MAMA_OK;
    if (dt == MAMA_BF16) return mama_st_read_bf16(st, name, dst, count);
    p = (const unsigned char *)mama_st_data(st, t);
    if (t->dtype == MAMA_F16) {
        if (mama__host_is_le()) { if (count) memcpy(dst, p, count * 2); }
        else for (i = 0; i < count; i++) dst[i] = mama__le16(p + 2 * i);
        return MAMA_OK;
    }
    MAMA_TRY(mama_alloc((void **)&tmp, sizeof(float) * (count ? count : 1), name));
    s = mama_st_read_f32(st, name, tmp, count);
    if (s == MAMA_OK) mama__f32_to_half_n(dst, tmp, MAMA_F16, count);
    /* f16 tops out at 65504: a finite value beyond it would become Inf */
    for (i = 0; s == MAMA_OK && i < count; i++)
        if ((dst[i] & 0x7fffu) == 0x7c00u && fabsf(tmp[i]) <= FLT_MAX)
            s = MAMA_FAIL(MAMA_ERR_NUMERIC, "%s: tensor '%s' element %zu = %g overflows f16 (load it as bf16 or f32)",
                          st->path, name, i, (double)tmp[i]);
    mama_free(tmp);
    return s;
}

/* After a tensor has been copied out of a memory-mapped file, give its
 * pages back (they are clean file pages, re-read on demand), so that
 * loading a 5 GB checkpoint does not hold the file AND the weights in
 * resident memory at once.  Whole pages inside the tensor only; no-op for
 * files read into memory or borrowed. */
static void mama__st_release(const mama_safetensors *st, const mama_st_tensor *t) {
#if defined(MAMA__POSIX) && defined(MAMA__MADV_DONTNEED)
    uintptr_t page = 4096, b, e;
    long ps;
    if (st->storage_ != 2 || !t) return;
    ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) page = (uintptr_t)ps;
    b = ((uintptr_t)(st->data + st->data_start + t->offset) + page - 1) & ~(page - 1);
    e = ((uintptr_t)(st->data + st->data_start + t->offset + t->nbytes)) & ~(page - 1);
    if (e > b) (void)madvise((void *)b, (size_t)(e - b), MAMA__MADV_DONTNEED);
#else
    (void)st;
    (void)t;
#endif
}

/* Element i of an integer tensor as int64 (0 for non-integer dtypes). */
static int64_t mama__st_int_at(mama_dtype dt, const unsigned char *p, size_t i) {
    switch (dt) {
    case MAMA_I64: return (int64_t)mama__le64(p + 8 * i);
    case MAMA_I32: return (int32_t)mama__le32(p + 4 * i);
    case MAMA_I16: return (int16_t)mama__le16(p + 2 * i);
    case MAMA_I8: return (signed char)p[i];
    case MAMA_U8: case MAMA_BOOL: return p[i];
    default: return 0;
    }
}
static int mama__dtype_is_int(mama_dtype dt) {
    return dt == MAMA_I64 || dt == MAMA_I32 || dt == MAMA_I16 || dt == MAMA_I8 || dt == MAMA_U8 || dt == MAMA_BOOL;
}

MAMA_API mama_status mama_st_read_i64(const mama_safetensors *st, const char *name, int64_t *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    if (!mama__dtype_is_int(t->dtype))
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not an integer type", st->path, name, mama_dtype_name(t->dtype));
    p = (const unsigned char *)mama_st_data(st, t);
    for (i = 0; i < count; i++) dst[i] = mama__st_int_at(t->dtype, p, i);
    return MAMA_OK;
}

MAMA_API mama_status mama_st_read_i32(const mama_safetensors *st, const char *name, int32_t *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    if (!mama__dtype_is_int(t->dtype))
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not an integer type", st->path, name, mama_dtype_name(t->dtype));
    p = (const unsigned char *)mama_st_data(st, t);
    for (i = 0; i < count; i++) {
        int64_t v = mama__st_int_at(t->dtype, p, i);
        if (v < INT32_MIN || v > INT32_MAX)
            return MAMA_FAIL(MAMA_ERR_NUMERIC, "%s: tensor \"%s\" element %zu = %lld does not fit in int32", st->path, name, i, (long long)v);
        dst[i] = (int32_t)v;
    }
    return MAMA_OK;
}

/* ---- safetensors writer ---- */

typedef struct mama__st_wentry {
    char *name;
    mama_dtype dtype;
    int ndim;
    int64_t shape[MAMA_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
} mama__st_wentry;

struct mama_st_writer {
    mama__st_wentry *e;
    int count, cap;
    char **meta_keys, **meta_values;
    int meta_count, meta_cap;
};

MAMA_API mama_status mama_st_writer_create(mama_st_writer **w) {
    return mama_calloc((void **)w, sizeof(mama_st_writer), "safetensors writer");
}

MAMA_API void mama_st_writer_free(mama_st_writer *w) {
    int k;
    if (!w) return;
    for (k = 0; k < w->count; k++) mama_free(w->e[k].name);
    for (k = 0; k < w->meta_count; k++) { mama_free(w->meta_keys[k]); mama_free(w->meta_values[k]); }
    mama_free(w->e);
    mama_free(w->meta_keys);
    mama_free(w->meta_values);
    mama_free(w);
}

static int mama__utf8_valid(const char *s) {
    size_t n = strlen(s), i = 0;
    while (i < n) {
        int l = mama__utf8_len((const unsigned char *)s + i, n - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* Grow a pointer-sized-element array by doubling (mama_alloc + copy). */
static mama_status mama__grow(void **arr, int *cap, int len, size_t elem, const char *what) {
    void *n;
    int nc;
    if (len < *cap) return MAMA_OK;
    if (*cap > INT_MAX / 2 - 8) return MAMA_FAIL(MAMA_ERR_NOMEM, "too many %s", what);
    nc = *cap ? *cap * 2 : 16;
    MAMA_TRY(mama_alloc(&n, (size_t)nc * elem, what));
    if (len) memcpy(n, *arr, (size_t)len * elem);
    mama_free(*arr);
    *arr = n;
    *cap = nc;
    return MAMA_OK;
}

MAMA_API mama_status mama_st_writer_add(mama_st_writer *w, const char *name, mama_dtype dt, int ndim,
                                        const int64_t *shape, const void *data) {
    mama__st_wentry *e;
    uint64_t numel = 1;
    int k;
    if (!name || !name[0]) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: empty tensor name");
    if (strncmp(name, "__", 2) == 0) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor name \"%s\" starts with \"__\" (reserved)", name);
    if (!mama__utf8_valid(name)) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor name is not valid UTF-8");
    if ((unsigned)dt >= MAMA__NDTYPES) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": bad dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > MAMA_ST_MAX_DIMS || (ndim && !shape))
        return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": %d dimensions (0..%d allowed)", name, ndim, MAMA_ST_MAX_DIMS);
    for (k = 0; k < ndim; k++) {
        if (shape[k] < 0) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": negative dim %lld", name, (long long)shape[k]);
        if (shape[k] && numel > ((uint64_t)1 << 53) / (uint64_t)shape[k])
            return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": too many elements", name);
        numel *= (uint64_t)shape[k];
    }
    if (numel * mama__dtype_sizes[dt] > (uint64_t)SIZE_MAX / 2)
        return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": too large", name);
    if (numel && !data) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": NULL data", name);
    for (k = 0; k < w->count; k++)
        if (strcmp(w->e[k].name, name) == 0) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\" added twice", name);
    MAMA_TRY(mama__grow((void **)&w->e, &w->cap, w->count, sizeof(mama__st_wentry), "safetensors writer entries"));
    e = &w->e[w->count];
    memset(e, 0, sizeof *e);
    MAMA_TRY(mama__strdup(&e->name, name, "tensor name"));
    e->dtype = dt;
    e->ndim = ndim;
    for (k = 0; k < ndim; k++) e->shape[k] = shape[k];
    e->nbytes = (size_t)(numel * mama__dtype_sizes[dt]);
    e->data = data;
    w->count++;
    return MAMA_OK;
}

MAMA_API mama_status mama_st_writer_meta(mama_st_writer *w, const char *key, const char *value) {
    int k;
    char *v;
    if (!key || !value) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: NULL metadata key or value");
    if (!mama__utf8_valid(key) || !mama__utf8_valid(value))
        return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: metadata \"%s\" is not valid UTF-8", key);
    MAMA_TRY(mama__strdup(&v, value, "metadata value"));
    for (k = 0; k < w->meta_count; k++)
        if (strcmp(w->meta_keys[k], key) == 0) { mama_free(w->meta_values[k]); w->meta_values[k] = v; return MAMA_OK; }
    /* both arrays share meta_cap: grow them as a pair */
    if (w->meta_count == w->meta_cap) {
        int cap = w->meta_cap, cap2;
        mama_status s = mama__grow((void **)&w->meta_keys, &cap, w->meta_count, sizeof(char *), "metadata");
        cap2 = w->meta_cap;
        if (s == MAMA_OK) s = mama__grow((void **)&w->meta_values, &cap2, w->meta_count, sizeof(char *), "metadata");
        if (s != MAMA_OK) { mama_free(v); return s; }
        w->meta_cap = cap;
    }
    if (mama__strdup(&w->meta_keys[w->meta_count], key, "metadata key") != MAMA_OK) { mama_free(v); return MAMA_ERR_NOMEM; }
    w->meta_values[w->meta_count++] = v;
    return MAMA_OK;
}

static MAMA_THREAD_LOCAL mama_st_writer *mama__st_wctx;
static int mama__st_wcmp(const void *a, const void *b) {
    const mama__st_wentry *x = &mama__st_wctx->e[*(const int *)a], *y = &mama__st_wctx->e[*(const int *)b];
    size_t sx = mama__dtype_sizes[x->dtype], sy = mama__dtype_sizes[y->dtype];
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Build the padded header (including the 8-byte length) and the write
 * order of the entries. */
static mama_status mama__st_header(mama_st_writer *w, mama_buf *h, int **order_out) {
    int *order = NULL, k, d;
    size_t off = 0, hlen;
    uint64_t le = 0;
    unsigned char len8[8];
    mama_status s = MAMA_OK;
    *order_out = NULL;
    MAMA_TRY(mama_alloc((void **)&order, (size_t)(w->count ? w->count : 1) * sizeof(int), "safetensors order"));
    for (k = 0; k < w->count; k++) order[k] = k;
    mama__st_wctx = w;
    qsort(order, (size_t)w->count, sizeof(int), mama__st_wcmp);
#define MAMA__H(call) do { if ((s = (call)) != MAMA_OK) goto fail; } while (0)
    MAMA__H(mama_buf_append(h, "\0\0\0\0\0\0\0\0{", 9));
    if (w->meta_count) {
        MAMA__H(mama_buf_puts(h, "\"__metadata__\":{"));
        for (k = 0; k < w->meta_count; k++) {
            if (k) MAMA__H(mama_buf_puts(h, ","));
            MAMA__H(mama_buf_json_string(h, w->meta_keys[k]));
            MAMA__H(mama_buf_puts(h, ":"));
            MAMA__H(mama_buf_json_string(h, w->meta_values[k]));
        }
        MAMA__H(mama_buf_puts(h, "}"));
    }
    for (k = 0; k < w->count; k++) {
        const mama__st_wentry *e = &w->e[order[k]];
        if (k || w->meta_count) MAMA__H(mama_buf_puts(h, ","));
        MAMA__H(mama_buf_json_string(h, e->name));
        MAMA__H(mama_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", mama__dtype_names[e->dtype]));
        for (d = 0; d < e->ndim; d++) MAMA__H(mama_buf_printf(h, d ? ",%lld" : "%lld", (long long)e->shape[d]));
        MAMA__H(mama_buf_printf(h, "],\"data_offsets\":[%zu,%zu]}", off, off + e->nbytes));
        off += e->nbytes;
    }
    MAMA__H(mama_buf_puts(h, "}"));
    /* pad with spaces so the data section starts 8-byte aligned */
    while (h->len % 8) MAMA__H(mama_buf_puts(h, " "));
#undef MAMA__H
    hlen = h->len - 8;
    le = (uint64_t)hlen;
    for (k = 0; k < 8; k++) len8[k] = (unsigned char)(le >> (8 * k));
    memcpy(h->data, len8, 8);
    *order_out = order;
    return MAMA_OK;
fail:
    mama_free(order);
    mama_buf_free(h);
    return s;
}

/* Emit one tensor's bytes in little-endian order through `emit`. */
typedef mama_status (*mama__emit_fn)(void *ctx, const void *p, size_t n);
static mama_status mama__st_emit_tensor(const mama__st_wentry *e, mama__emit_fn emit, void *ctx) {
    size_t es = mama__dtype_sizes[e->dtype];
    unsigned char tmp[4096];
    const unsigned char *src = (const unsigned char *)e->data;
    size_t done = 0;
    if (es == 1 || mama__host_is_le()) return e->nbytes ? emit(ctx, e->data, e->nbytes) : MAMA_OK;
    /* big-endian host: swap each element in chunks */
    while (done < e->nbytes) {
        size_t n = e->nbytes - done, i, b;
        if (n > sizeof tmp) n = sizeof tmp;
        for (i = 0; i < n; i += es)
            for (b = 0; b < es; b++) tmp[i + b] = src[done + i + es - 1 - b];
        MAMA_TRY(emit(ctx, tmp, n));
        done += n;
    }
    return MAMA_OK;
}

static mama_status mama__emit_buf(void *ctx, const void *p, size_t n) { return mama_buf_append((mama_buf *)ctx, p, n); }
static mama_status mama__emit_file(void *ctx, const void *p, size_t n) { return mama_atomic_write((mama_atomic_file *)ctx, p, n); }

MAMA_API mama_status mama_st_writer_serialize(mama_st_writer *w, mama_buf *out) {
    int *order, k;
    mama_status s;
    mama_buf h = {NULL, 0, 0};
    MAMA_TRY(mama__st_header(w, &h, &order));
    s = mama_buf_append(out, h.data, h.len);
    for (k = 0; k < w->count && s == MAMA_OK; k++) s = mama__st_emit_tensor(&w->e[order[k]], mama__emit_buf, out);
    mama_free(order);
    mama_buf_free(&h);
    return s;
}

MAMA_API mama_status mama_st_writer_write(mama_st_writer *w, const char *path) {
    int *order, k;
    mama_status s;
    mama_buf h = {NULL, 0, 0};
    mama_atomic_file af;
    MAMA_TRY(mama__st_header(w, &h, &order));
    s = mama_atomic_open(&af, path);
    if (s != MAMA_OK) { mama_free(order); mama_buf_free(&h); return s; }
    s = mama_atomic_write(&af, h.data, h.len);
    for (k = 0; k < w->count && s == MAMA_OK; k++) s = mama__st_emit_tensor(&w->e[order[k]], mama__emit_file, &af);
    mama_free(order);
    mama_buf_free(&h);
    if (s != MAMA_OK) { mama_atomic_abort(&af); return s; }
    return mama_atomic_commit(&af);
}

/* ==========================================================================
 * 7.6 The manifest CSV, splits, studies (the data of section 10)
 * ========================================================================== */

/* String storage: records hold many short, repeated strings (side, view,
 * race ...), and a million separate allocations would cost more in
 * bookkeeping than in text.  So strings live in chunks freed together, and
 * a small direct-mapped cache returns the same copy for a repeated value. */
typedef struct mama__arena_chunk { struct mama__arena_chunk *next; size_t cap, used; } mama__arena_chunk;
#define MAMA__INTERN_SLOTS 4096
typedef struct mama__arena {
    mama__arena_chunk *head;
    char *intern[MAMA__INTERN_SLOTS];
    char *unknown;
} mama__arena;

static uint64_t mama__fnv1a(const char *s, size_t n) {
    uint64_t h = 14695981039346656037ull;
    size_t i;
    for (i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

static mama_status mama__arena_str(mama__arena *a, const char *s, size_t n, int intern, char **out) {
    mama__arena_chunk *c = a->head;
    size_t slot = 0;
    char *p;
    if (intern) {
        slot = (size_t)(mama__fnv1a(s, n) % MAMA__INTERN_SLOTS);
        p = a->intern[slot];
        if (p && strlen(p) == n && memcmp(p, s, n) == 0) { *out = p; return MAMA_OK; }
    }
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        MAMA_TRY(mama_alloc((void **)&c, sizeof(mama__arena_chunk) + cap, "manifest strings"));
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    p = (char *)(c + 1) + c->used;
    memcpy(p, s, n);
    p[n] = 0;
    c->used += n + 1;
    if (intern) a->intern[slot] = p;
    *out = p;
    return MAMA_OK;
}

static void mama__arena_free(mama__arena *a) {
    mama__arena_chunk *c, *next;
    if (!a) return;
    for (c = a->head; c; c = next) { next = c->next; mama_free(c); }
    mama_free(a);
}

MAMA_API void mama_manifest_init(mama_manifest *m) { memset(m, 0, sizeof *m); }

MAMA_API void mama_manifest_free(mama_manifest *m) {
    if (!m) return;
    mama_free(m->records);
    mama_free(m->studies);
    mama_free(m->study_members);
    mama__arena_free((mama__arena *)m->arena_);
    mama_free(m->path);
    mama_free(m->dir);
    memset(m, 0, sizeof *m);
}

static mama_status mama__manifest_arena(mama_manifest *m, mama__arena **out) {
    mama__arena *a = (mama__arena *)m->arena_;
    if (!a) {
        MAMA_TRY(mama_calloc((void **)&a, sizeof *a, "manifest arena"));
        m->arena_ = a;
    }
    if (!a->unknown) MAMA_TRY(mama__arena_str(a, "unknown", 7, 0, &a->unknown));
    *out = a;
    return MAMA_OK;
}

MAMA_API const char *mama_split_name(int split) {
    switch (split) {
    case MAMA_SPLIT_TRAIN: return "train";
    case MAMA_SPLIT_VAL: return "val";
    case MAMA_SPLIT_TEST: return "test";
    }
    return "unknown";
}

/* FNV-1a is cheap and stable across platforms, but its low bits mix poorly
 * for ids that differ only in the last character ("P0001", "P0002"), so the
 * splitmix64 finaliser spreads them before taking % 100. */
static mama_split mama__split_hash(const char *s) {
    uint64_t h = mama__fnv1a(s, strlen(s));
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    h ^= h >> 31;
    h %= 100;
    return h < 70 ? MAMA_SPLIT_TRAIN : h < 80 ? MAMA_SPLIT_VAL : MAMA_SPLIT_TEST;
}
MAMA_API mama_split mama_split_of_patient(const char *patient) { return mama__split_hash(patient ? patient : ""); }

static int mama__is_unknown(const char *s) { return !s || strcmp(s, "unknown") == 0; }

/* Copy a record's strings into the arena (NULL -> "unknown"). */
MAMA_API mama_status mama_manifest_add(mama_manifest *m, const mama_record *r) {
    mama__arena *a;
    mama_record *d;
    char **dst[14];
    char *const *src[14];
    int k;
    if (!r->path || !r->path[0]) return MAMA_FAIL(MAMA_ERR_INVALID, "manifest record without a path");
    if (r->split < -1 || r->split > 2) return MAMA_FAIL(MAMA_ERR_INVALID, "manifest record %s: split %d (use -1..2)", r->path, r->split);
    MAMA_TRY(mama__manifest_arena(m, &a));
    MAMA_TRY(mama__grow((void **)&m->records, &m->cap_, m->count, sizeof(mama_record), "manifest records"));
    d = &m->records[m->count];
    *d = *r;
    dst[0] = &d->path; dst[1] = &d->patient; dst[2] = &d->study; dst[3] = &d->side; dst[4] = &d->view;
    dst[5] = &d->procedure; dst[6] = &d->race; dst[7] = &d->ethnicity; dst[8] = &d->image_type;
    dst[9] = &d->birads; dst[10] = &d->mass_shape; dst[11] = &d->mass_density; dst[12] = &d->calc_type;
    dst[13] = &d->calc_distribution;
    src[0] = &r->path; src[1] = &r->patient; src[2] = &r->study; src[3] = &r->side; src[4] = &r->view;
    src[5] = &r->procedure; src[6] = &r->race; src[7] = &r->ethnicity; src[8] = &r->image_type;
    src[9] = &r->birads; src[10] = &r->mass_shape; src[11] = &r->mass_density; src[12] = &r->calc_type;
    src[13] = &r->calc_distribution;
    for (k = 0; k < 14; k++) {
        const char *s = *src[k];
        if (!s || !s[0] || strcmp(s, "unknown") == 0) *dst[k] = a->unknown;
        else MAMA_TRY(mama__arena_str(a, s, strlen(s), k != 0, dst[k]));
    }
    d->study_index = -1;
    m->count++;
    return MAMA_OK;
}

/* Studies: sort record indices by (patient, study, index); equal keys form
 * a study.  A record with an unknown study stands alone. */
static MAMA_THREAD_LOCAL const mama_manifest *mama__mf_ctx;
static int mama__mf_cmp(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b, c;
    const mama_record *x = &mama__mf_ctx->records[i], *y = &mama__mf_ctx->records[j];
    int xs = mama__is_unknown(x->study), ys = mama__is_unknown(y->study);
    if (xs != ys) return xs - ys;
    if (!xs) {
        if ((c = strcmp(x->patient, y->patient)) != 0) return c;
        if ((c = strcmp(x->study, y->study)) != 0) return c;
    }
    return (i > j) - (i < j);
}
static MAMA_THREAD_LOCAL const int *mama__mf_first;
static int mama__mf_cmp_first(const void *a, const void *b) {
    int x = mama__mf_first[*(const int *)a], y = mama__mf_first[*(const int *)b];
    return (x > y) - (x < y);
}

MAMA_API mama_status mama_manifest_index(mama_manifest *m) {
    int *sorted = NULL, *gstart = NULL, *gfirst = NULL, *gorder = NULL, ng = 0, i, g, n = m->count, o;
    mama_status s = MAMA_OK;
    mama_free(m->studies);
    mama_free(m->study_members);
    m->studies = NULL;
    m->study_members = NULL;
    m->study_count = 0;
    m->split_counts[0] = m->split_counts[1] = m->split_counts[2] = 0;
    for (i = 0; i < n; i++) {
        mama_record *r = &m->records[i];
        if (r->split < 0 || r->split > 2) r->split = (int)mama__split_hash(mama__is_unknown(r->patient) ? r->path : r->patient);
        m->split_counts[r->split]++;
    }
    if (n == 0) return MAMA_OK;
    if ((s = mama_alloc((void **)&sorted, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&gstart, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&gfirst, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&gorder, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&m->studies, (size_t)n * sizeof(mama_study), "studies")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&m->study_members, (size_t)n * sizeof(int), "study members")) != MAMA_OK) goto done;
    for (i = 0; i < n; i++) sorted[i] = i;
    mama__mf_ctx = m;
    qsort(sorted, (size_t)n, sizeof(int), mama__mf_cmp);
    /* groups in sorted order; each group's first member is its smallest index */
    for (i = 0; i < n; i++) {
        if (i == 0 || mama__mf_cmp(&sorted[i - 1], &sorted[i]) != 0) {
            const mama_record *x = &m->records[sorted[i]];
            int same = i > 0 && !mama__is_unknown(x->study) && !mama__is_unknown(m->records[sorted[i - 1]].study) &&
                       strcmp(x->patient, m->records[sorted[i - 1]].patient) == 0 &&
                       strcmp(x->study, m->records[sorted[i - 1]].study) == 0;
            if (!same) { gstart[ng] = i; gfirst[ng] = sorted[i]; gorder[ng] = ng; ng++; }
        }
    }
    /* number studies in order of first appearance in the file */
    mama__mf_first = gfirst;
    qsort(gorder, (size_t)ng, sizeof(int), mama__mf_cmp_first);
    o = 0;
    for (g = 0; g < ng; g++) {
        int grp = gorder[g], start = gstart[grp], end = grp + 1 < ng ? gstart[grp + 1] : n;
        m->studies[g].first = o;
        m->studies[g].count = end - start;
        for (i = start; i < end; i++) {
            m->study_members[o++] = sorted[i];
            m->records[sorted[i]].study_index = g;
        }
    }
    m->study_count = ng;
done:
    mama_free(sorted);
    mama_free(gstart);
    mama_free(gfirst);
    mama_free(gorder);
    if (s != MAMA_OK) {
        mama_free(m->studies);
        mama_free(m->study_members);
        m->studies = NULL;
        m->study_members = NULL;
    }
    return s;
}

MAMA_API const int *mama_manifest_study_of(const mama_manifest *m, int i, int *n) {
    const mama_study *s;
    *n = 0;
    if (i < 0 || i >= m->count || !m->studies || m->records[i].study_index < 0) return NULL;
    s = &m->studies[m->records[i].study_index];
    *n = s->count;
    return m->study_members + s->first;
}

MAMA_API int mama_manifest_other_view(const mama_manifest *m, int i, mama_rng *rng) {
    int n, k;
    const int *mem = mama_manifest_study_of(m, i, &n);
    if (!mem || n < 2) return -1;
    k = (int)mama_rng_below(rng, (uint32_t)(n - 1));
    /* the k-th member skipping i itself */
    return mem[k] == i || (k > 0 && mem[k - 1] >= i) ? mem[k + 1] : mem[k];
}

/* ---- CSV reading ---- */

typedef struct mama__csv {
    const char *s;
    size_t n, i;
    int line;              /* current physical line (1-based) */
    mama_buf field;        /* unquoted bytes of the current row's fields, NUL-separated */
    size_t *starts;        /* field start offsets into field.data */
    int nfields, cap;
    const char *name;
} mama__csv;

/* Read one row.  Returns MAMA_OK with nfields >= 1, or nfields == 0 at end
 * of input; MAMA_ERR_FORMAT for a malformed row (*fatal set when the rest
 * of the input cannot be resynchronised, i.e. an unterminated quote).
 * On a recoverable error the cursor is moved past the row's line. */
static mama_status mama__csv_row(mama__csv *c, int *fatal, int *row_line) {
    mama_status s;
    *fatal = 0;
    c->nfields = 0;
    c->field.len = 0;
    *row_line = c->line;
    if (c->i >= c->n) return MAMA_OK;
    for (;;) {
        int cap = c->cap;
        if (c->nfields == cap) {
            MAMA_TRY(mama__grow((void **)&c->starts, &cap, c->nfields, sizeof(size_t), "CSV fields"));
            c->cap = cap;
        }
        c->starts[c->nfields++] = c->field.len;
        if (c->i < c->n && c->s[c->i] == '"') {
            size_t open_line = (size_t)c->line;
            c->i++;
            for (;;) {
                size_t j = c->i;
                if (c->i >= c->n) {
                    *fatal = 1;
                    return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu: unterminated quoted field", c->name, open_line);
                }
                /* copy a run of ordinary bytes at once */
                while (j < c->n && c->s[j] != '"') { if (c->s[j] == '\n') c->line++; j++; }
                MAMA_TRY(mama_buf_append(&c->field, c->s + c->i, j - c->i));
                c->i = j;
                if (j >= c->n) continue;
                if (j + 1 < c->n && c->s[j + 1] == '"') { MAMA_TRY(mama_buf_append(&c->field, "\"", 1)); c->i = j + 2; continue; }
                c->i = j + 1;
                break;
            }
            if (c->i < c->n && c->s[c->i] != ',' && c->s[c->i] != '\n' && c->s[c->i] != '\r') {
                s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: text after a closing quote", c->name, c->line);
                goto skip_line;
            }
        } else {
            size_t j = c->i;
            while (j < c->n && c->s[j] != ',' && c->s[j] != '\n' && c->s[j] != '\r') {
                if (c->s[j] == '"') {
                    c->i = j;
                    s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: quote inside an unquoted field (quote the whole field)", c->name, c->line);
                    goto skip_line;
                }
                j++;
            }
            MAMA_TRY(mama_buf_append(&c->field, c->s + c->i, j - c->i));
            c->i = j;
        }
        MAMA_TRY(mama_buf_append(&c->field, "", 1)); /* NUL separator */
        if (c->i >= c->n) return MAMA_OK;
        if (c->s[c->i] == ',') { c->i++; continue; }
        /* line end: \r\n, \n or a lone \r */
        if (c->s[c->i] == '\r') c->i++;
        if (c->i < c->n && c->s[c->i] == '\n') c->i++;
        c->line++;
        return MAMA_OK;
    }
skip_line:
    while (c->i < c->n && c->s[c->i] != '\n') c->i++;
    if (c->i < c->n) c->i++;
    c->line++;
    return s;
}

static const char *mama__csv_field(const mama__csv *c, int k) { return c->field.data + c->starts[k]; }
/* The first field of the row that holds a NUL byte (its bytes run past its
 * C string), or -1. */
static int mama__csv_nul_field(const mama__csv *c) {
    int k;
    for (k = 0; k < c->nfields; k++) {
        size_t end = k + 1 < c->nfields ? c->starts[k + 1] : c->field.len;
        if (strlen(mama__csv_field(c, k)) + 1 != end - c->starts[k]) return k;
    }
    return -1;
}

/* Column names the manifest understands, in the writer's order. */
enum {
    MAMA__C_PATH, MAMA__C_PATIENT, MAMA__C_STUDY, MAMA__C_SIDE, MAMA__C_VIEW, MAMA__C_PROCEDURE, MAMA__C_AGE,
    MAMA__C_RACE, MAMA__C_ETHNICITY, MAMA__C_IMAGE_TYPE, MAMA__C_DENSITY, MAMA__C_BIRADS, MAMA__C_MASS_SHAPE,
    MAMA__C_MASS_DENSITY, MAMA__C_CALC_TYPE, MAMA__C_CALC_DISTRIBUTION, MAMA__C_CANCER, MAMA__C_SPLIT, MAMA__NCOLS
};
static const char *const mama__col_names[MAMA__NCOLS] = {
    "path", "patient", "study", "side", "view", "procedure", "age", "race", "ethnicity", "image_type",
    "density", "birads", "mass_shape", "mass_density", "calc_type", "calc_distribution", "cancer", "split"};

static int mama__lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
static int mama__ieq(const char *a, const char *b) {
    while (*a && *b && mama__lower((unsigned char)*a) == mama__lower((unsigned char)*b)) { a++; b++; }
    return *a == 0 && *b == 0;
}

/* Trim spaces/tabs into tmp[cap]; returns tmp (truncated if long). */
static const char *mama__trim(const char *s, char *tmp, size_t cap) {
    size_t n;
    while (*s == ' ' || *s == '\t') s++;
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n >= cap) n = cap - 1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    return tmp;
}

static int mama__missing(const char *t) {
    static const char *const miss[] = {"", "unknown", "nan", "na", "n/a", "none", "null"};
    size_t k;
    for (k = 0; k < sizeof miss / sizeof miss[0]; k++) if (mama__ieq(t, miss[k])) return 1;
    return 0;
}

/* Locale-free decimal: digits [. digits]; -1 on anything else. */
static int mama__decimal(const char *t, double *out) {
    double v = 0, scale = 1;
    int digits = 0;
    if (!*t) return -1;
    while (*t >= '0' && *t <= '9') { v = v * 10 + (*t++ - '0'); digits++; if (v > 1e9) return -1; }
    if (*t == '.') {
        t++;
        while (*t >= '0' && *t <= '9') { scale /= 10; v += (*t++ - '0') * scale; digits++; }
    }
    if (*t || !digits) return -1;
    *out = v;
    return 0;
}

/* Parse the numeric/enum fields of row `c` into r; NULL or message. */
static const char *mama__mf_number(const char *raw, int col, int *out) {
    char tmp[64];
    const char *t = mama__trim(raw, tmp, sizeof tmp);
    double v;
    *out = -1;
    if (mama__missing(t) || strcmp(t, "-1") == 0) return NULL;
    if (col == MAMA__C_CANCER) {
        if (mama__ieq(t, "1") || mama__ieq(t, "true") || mama__ieq(t, "yes") || mama__ieq(t, "1.0")) { *out = 1; return NULL; }
        if (mama__ieq(t, "0") || mama__ieq(t, "false") || mama__ieq(t, "no") || mama__ieq(t, "0.0")) { *out = 0; return NULL; }
        return "cancer must be 0/1/true/false/yes/no";
    }
    if (mama__decimal(t, &v) != 0) return col == MAMA__C_AGE ? "age is not a number" : "density is not a number";
    if (col == MAMA__C_AGE) {
        if (v > 200) return "age out of range (0..200)";
        *out = (int)v;
        return NULL;
    }
    if (v != floor(v) || v < 1 || v > 5) return "density must be 1..5";
    *out = (int)v;
    return NULL;
}

static mama_status mama__mf_row(mama_manifest *m, mama__arena *a, const mama__csv *c, const int *col_of, int line,
                                const char *base_dir, const char **why, char *why_buf, size_t why_cap) {
    mama_record r;
    char tmp[256];
    const char *f[MAMA__NCOLS];
    char *path = NULL;
    const char *t;
    mama_status s;
    int k;
    static const char letters[] = "ANBPSMK";
    *why = NULL;
    memset(&r, 0, sizeof r);
    for (k = 0; k < MAMA__NCOLS; k++) f[k] = col_of[k] >= 0 ? mama__csv_field(c, col_of[k]) : "";
    /* strings */
    {
        char **dst[13];
        int cols[13] = {MAMA__C_PATIENT, MAMA__C_STUDY, MAMA__C_SIDE, MAMA__C_VIEW, MAMA__C_PROCEDURE, MAMA__C_RACE,
                        MAMA__C_ETHNICITY, MAMA__C_IMAGE_TYPE, MAMA__C_BIRADS, MAMA__C_MASS_SHAPE, MAMA__C_MASS_DENSITY,
                        MAMA__C_CALC_TYPE, MAMA__C_CALC_DISTRIBUTION};
        dst[0] = &r.patient; dst[1] = &r.study; dst[2] = &r.side; dst[3] = &r.view; dst[4] = &r.procedure;
        dst[5] = &r.race; dst[6] = &r.ethnicity; dst[7] = &r.image_type; dst[8] = &r.birads; dst[9] = &r.mass_shape;
        dst[10] = &r.mass_density; dst[11] = &r.calc_type; dst[12] = &r.calc_distribution;
        for (k = 0; k < 13; k++) {
            const char *v = f[cols[k]];
            size_t n;
            while (*v == ' ' || *v == '\t') v++;
            n = strlen(v);
            while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
            if (n < sizeof tmp) { memcpy(tmp, v, n); tmp[n] = 0; if (mama__missing(tmp)) { *dst[k] = a->unknown; continue; } }
            if (cols[k] == MAMA__C_SIDE && n < sizeof tmp) {
                if (mama__ieq(tmp, "l") || mama__ieq(tmp, "left")) { v = "left"; n = 4; }
                else if (mama__ieq(tmp, "r") || mama__ieq(tmp, "right")) { v = "right"; n = 5; }
                else if (mama__ieq(tmp, "b") || mama__ieq(tmp, "bilateral") || mama__ieq(tmp, "both")) { v = "bilateral"; n = 9; }
            }
            if (cols[k] == MAMA__C_IMAGE_TYPE && n < sizeof tmp && mama__ieq(tmp, "2d")) { v = "2D"; n = 2; }
            if (cols[k] == MAMA__C_BIRADS) {
                const char *hit;
                char L[2];
                if (n != 1) { *why = "BI-RADS must be one of A N B P S M K or 0..6"; return MAMA_OK; }
                L[0] = (char)(v[0] >= 'a' && v[0] <= 'z' ? v[0] - 32 : v[0]);
                L[1] = 0;
                if (L[0] >= '0' && L[0] <= '6') L[0] = letters[L[0] - '0'];
                hit = L[0] ? strchr(letters, L[0]) : NULL;
                if (!hit) { *why = "BI-RADS must be one of A N B P S M K or 0..6"; return MAMA_OK; }
                v = hit;
                n = 1;
            }
            MAMA_TRY(mama__arena_str(a, v, n, 1, dst[k]));
        }
    }
    /* numbers */
    if ((*why = mama__mf_number(f[MAMA__C_AGE], MAMA__C_AGE, &r.age)) != NULL) return MAMA_OK;
    if ((*why = mama__mf_number(f[MAMA__C_DENSITY], MAMA__C_DENSITY, &r.density)) != NULL) return MAMA_OK;
    if ((*why = mama__mf_number(f[MAMA__C_CANCER], MAMA__C_CANCER, &r.cancer)) != NULL) return MAMA_OK;
    t = mama__trim(f[MAMA__C_SPLIT], tmp, sizeof tmp);
    if (mama__missing(t)) r.split = -1;
    else if (mama__ieq(t, "train")) r.split = MAMA_SPLIT_TRAIN;
    else if (mama__ieq(t, "val") || mama__ieq(t, "valid") || mama__ieq(t, "validation")) r.split = MAMA_SPLIT_VAL;
    else if (mama__ieq(t, "test")) r.split = MAMA_SPLIT_TEST;
    else { snprintf(why_buf, why_cap, "split \"%.40s\" is not train/val/test", t); *why = why_buf; return MAMA_OK; }
    /* path: required, resolved against the manifest's directory */
    {
        const char *p = f[MAMA__C_PATH];
        size_t n, bl = base_dir ? strlen(base_dir) : 0;
        int abs_;
        while (*p == ' ' || *p == '\t') p++;
        n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n == 0) { *why = "empty path"; return MAMA_OK; }
        abs_ = p[0] == '/' || p[0] == '\\' || (n >= 2 && p[1] == ':' && ((p[0] | 32) >= 'a' && (p[0] | 32) <= 'z'));
        if (abs_ || bl == 0) {
            MAMA_TRY(mama__arena_str(a, p, n, 0, &path));
        } else {
            mama_buf pb = {NULL, 0, 0};
            int sep = base_dir[bl - 1] == '/' || base_dir[bl - 1] == '\\';
            s = mama_buf_append(&pb, base_dir, bl);
            if (s == MAMA_OK && !sep) s = mama_buf_append(&pb, "/", 1);
            if (s == MAMA_OK) s = mama_buf_append(&pb, p, n);
            if (s == MAMA_OK) s = mama__arena_str(a, pb.data, pb.len, 0, &path);
            mama_buf_free(&pb);
            MAMA_TRY(s);
        }
    }
    r.path = path;
    r.line = line;
    r.study_index = -1;
    /* append directly: strings are already in the arena */
    MAMA_TRY(mama__grow((void **)&m->records, &m->cap_, m->count, sizeof(mama_record), "manifest records"));
    m->records[m->count++] = r;
    return MAMA_OK;
}

MAMA_API mama_status mama_manifest_parse(mama_manifest *m, const char *text, size_t len, const char *source_name,
                                         const char *base_dir, int skip_bad_rows) {
    mama__csv c;
    mama__arena *a;
    mama_status s;
    int col_of[MAMA__NCOLS], k, fatal, line, header_fields;
    const char *name = source_name ? source_name : "<manifest>";
    mama_manifest_init(m);
    memset(&c, 0, sizeof c);
    c.s = text ? text : "";
    c.n = text ? len : 0;
    c.line = 1;
    c.name = name;
    if (c.n >= 3 && memcmp(c.s, "\xEF\xBB\xBF", 3) == 0) c.i = 3; /* UTF-8 BOM */
#define MAMA__P(call) do { if ((s = (call)) != MAMA_OK) goto fail; } while (0)
    MAMA__P(mama__strdup(&m->path, name, "manifest path"));
    MAMA__P(mama__strdup(&m->dir, base_dir ? base_dir : "", "manifest dir"));
    MAMA__P(mama__manifest_arena(m, &a));
    /* header (skipping leading blank lines) */
    do {
        MAMA__P(mama__csv_row(&c, &fatal, &line));
    } while (c.nfields == 1 && mama__csv_field(&c, 0)[0] == 0 && c.i < c.n);
    if (c.nfields == 0 || (c.nfields == 1 && mama__csv_field(&c, 0)[0] == 0)) {
        s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: empty manifest (a header row with a \"path\" column is required)", name);
        goto fail;
    }
    header_fields = c.nfields;
    for (k = 0; k < MAMA__NCOLS; k++) col_of[k] = -1;
    for (k = 0; k < c.nfields; k++) {
        char norm[64];
        const char *h = mama__csv_field(&c, k);
        int q, j = 0;
        while (*h == ' ' || *h == '\t') h++;
        for (; *h && j < (int)sizeof norm - 1; h++) norm[j++] = (char)(*h == ' ' || *h == '-' ? '_' : mama__lower((unsigned char)*h));
        while (j && norm[j - 1] == '_') j--; /* trailing spaces */
        norm[j] = 0;
        for (q = 0; q < MAMA__NCOLS; q++)
            if (strcmp(norm, mama__col_names[q]) == 0) {
                if (col_of[q] >= 0) {
                    s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: column \"%s\" appears twice in the header", name, line, mama__col_names[q]);
                    goto fail;
                }
                col_of[q] = k;
            }
    }
    if (col_of[MAMA__C_PATH] < 0) {
        s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: header has no \"path\" column", name, line);
        goto fail;
    }
    for (;;) {
        const char *why = NULL;
        char why_buf[128];
        s = mama__csv_row(&c, &fatal, &line);
        if (s == MAMA_ERR_FORMAT && !fatal && skip_bad_rows) { m->skipped++; continue; }
        if (s != MAMA_OK) goto fail;
        if (c.nfields == 0) break;
        if (c.nfields == 1 && mama__csv_field(&c, 0)[0] == 0 && header_fields != 1) continue; /* blank line */
        if (c.nfields != header_fields) {
            snprintf(why_buf, sizeof why_buf, "%d fields, the header has %d", c.nfields, header_fields);
            why = why_buf;
        } else if ((k = mama__csv_nul_field(&c)) >= 0) {
            snprintf(why_buf, sizeof why_buf, "field %d holds a NUL byte", k + 1);
            why = why_buf;
        } else {
            MAMA__P(mama__mf_row(m, a, &c, col_of, line, base_dir, &why, why_buf, sizeof why_buf));
        }
        if (why) {
            if (skip_bad_rows) { m->skipped++; continue; }
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: bad row: %s", name, line, why);
            goto fail;
        }
    }
#undef MAMA__P
    mama_buf_free(&c.field);
    mama_free(c.starts);
    s = mama_manifest_index(m);
    if (s != MAMA_OK) mama_manifest_free(m);
    return s;
fail:
    mama_buf_free(&c.field);
    mama_free(c.starts);
    mama_manifest_free(m);
    return s;
}

MAMA_API mama_status mama_manifest_load(mama_manifest *m, const char *path, int skip_bad_rows) {
    unsigned char *data;
    size_t size, dl;
    char *dir;
    const char *slash = strrchr(path, '/'), *bslash = strrchr(path, '\\');
    mama_status s;
    mama_manifest_init(m);
    if (bslash && (!slash || bslash > slash)) slash = bslash;
    dl = slash ? (size_t)(slash - path) : 0;
    if (slash == path) dl = 1; /* "/m.csv": the root */
    MAMA_TRY(mama_read_file(path, &data, &size));
    if (mama_alloc((void **)&dir, dl + 1, "manifest dir") != MAMA_OK) { mama_free(data); return MAMA_ERR_NOMEM; }
    memcpy(dir, path, dl);
    dir[dl] = 0;
    s = mama_manifest_parse(m, (const char *)data, size, path, dir, skip_bad_rows);
    mama_free(data);
    mama_free(dir);
    return s;
}

/* ---- CSV writing ---- */

static mama_status mama__csv_put(mama_buf *b, const char *v) {
    size_t n = strlen(v);
    int quote = n && (v[0] == ' ' || v[n - 1] == ' ' || v[0] == '\t' || v[n - 1] == '\t');
    const char *p;
    if (!quote) quote = strpbrk(v, ",\"\r\n") != NULL;
    if (!quote) return mama_buf_append(b, v, n);
    MAMA_TRY(mama_buf_append(b, "\"", 1));
    for (p = v; *p; p++) {
        if (*p == '"') MAMA_TRY(mama_buf_append(b, "\"\"", 2));
        else MAMA_TRY(mama_buf_append(b, p, 1));
    }
    return mama_buf_append(b, "\"", 1);
}

static mama_status mama__manifest_serialize(const mama_manifest *m, const char *path, mama_buf *b) {
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 0;
    int i, k;
    for (k = 0; k < MAMA__NCOLS; k++) {
        if (k) MAMA_TRY(mama_buf_append(b, ",", 1));
        MAMA_TRY(mama_buf_puts(b, mama__col_names[k]));
    }
    MAMA_TRY(mama_buf_append(b, "\r\n", 2));
    for (i = 0; i < m->count; i++) {
        const mama_record *r = &m->records[i];
        const char *p = r->path;
        char num[3][16];
        const char *v[MAMA__NCOLS];
        int nums[3];
        if (dl && strncmp(p, path, dl) == 0 && p[dl] == '/') p += dl + 1;
        nums[0] = r->age; nums[1] = r->density; nums[2] = r->cancer;
        for (k = 0; k < 3; k++) {
            if (nums[k] < 0) num[k][0] = 0;
            else snprintf(num[k], sizeof num[k], "%d", nums[k]);
        }
        v[MAMA__C_PATH] = p; v[MAMA__C_PATIENT] = r->patient; v[MAMA__C_STUDY] = r->study; v[MAMA__C_SIDE] = r->side;
        v[MAMA__C_VIEW] = r->view; v[MAMA__C_PROCEDURE] = r->procedure; v[MAMA__C_AGE] = num[0];
        v[MAMA__C_RACE] = r->race; v[MAMA__C_ETHNICITY] = r->ethnicity; v[MAMA__C_IMAGE_TYPE] = r->image_type;
        v[MAMA__C_DENSITY] = num[1]; v[MAMA__C_BIRADS] = r->birads; v[MAMA__C_MASS_SHAPE] = r->mass_shape;
        v[MAMA__C_MASS_DENSITY] = r->mass_density; v[MAMA__C_CALC_TYPE] = r->calc_type;
        v[MAMA__C_CALC_DISTRIBUTION] = r->calc_distribution; v[MAMA__C_CANCER] = num[2];
        v[MAMA__C_SPLIT] = (r->split >= 0 && r->split <= 2) ? mama_split_name(r->split) : "";
        for (k = 0; k < MAMA__NCOLS; k++) {
            if (k) MAMA_TRY(mama_buf_append(b, ",", 1));
            MAMA_TRY(mama__csv_put(b, v[k] ? v[k] : "unknown"));
        }
        MAMA_TRY(mama_buf_append(b, "\r\n", 2));
    }
    return MAMA_OK;
}

MAMA_API mama_status mama_manifest_write(const mama_manifest *m, const char *path) {
    mama_buf b = {NULL, 0, 0};
    mama_status s = mama__manifest_serialize(m, path, &b);
    if (s == MAMA_OK) s = mama_write_file_atomic(path, b.data, b.len);
    mama_buf_free(&b);
    return s;
}

/* ==========================================================================
 * 8. TEXT: captions (A.5-A.7), GPT-2 byte-level BPE tokenizer
 * ========================================================================== */

/* ---- 8.1 Unicode classes for the GPT-2 pre-tokenizer ----------------------
 * The pattern needs three classes beyond "other": \p{L} (letters), \p{N}
 * (numbers) and \s (White_Space).  Letters and numbers come from the tables
 * below (binary search; ASCII is answered without them), at Unicode 16.0.0:
 * Hugging Face tokenizers 0.23's ByteLevel regex (Oniguruma) classifies every
 * code point as these tables and mama__tx_is_space do (the generator records
 * its classes in tests/fixtures/text/hf_classes.txt, checked against
 * unicodedata2 16.0.0, and tests/test_text.c checks them).  Regenerate with
 *   pip install unicodedata2==16.0.0
 *   python3 tests/gen_text_fixtures.py --unicode-tables */
/* Generated by tests/gen_text_fixtures.py --unicode-tables from the PyPI
 * package unicodedata2 16.0.0 (Unicode 16.0.0): code point ranges of general
 * category L* (letters) and N* (numbers), sorted, inclusive. */
static const uint32_t mama__uni_letters[677][2] = {
    {0x41,0x5a}, {0x61,0x7a}, {0xaa,0xaa}, {0xb5,0xb5}, {0xba,0xba}, {0xc0,0xd6}, {0xd8,0xf6},
    {0xf8,0x2c1}, {0x2c6,0x2d1}, {0x2e0,0x2e4}, {0x2ec,0x2ec}, {0x2ee,0x2ee}, {0x370,0x374},
    {0x376,0x377}, {0x37a,0x37d}, {0x37f,0x37f}, {0x386,0x386}, {0x388,0x38a}, {0x38c,0x38c},
    {0x38e,0x3a1}, {0x3a3,0x3f5}, {0x3f7,0x481}, {0x48a,0x52f}, {0x531,0x556}, {0x559,0x559},
    {0x560,0x588}, {0x5d0,0x5ea}, {0x5ef,0x5f2}, {0x620,0x64a}, {0x66e,0x66f}, {0x671,0x6d3},
    {0x6d5,0x6d5}, {0x6e5,0x6e6}, {0x6ee,0x6ef}, {0x6fa,0x6fc}, {0x6ff,0x6ff}, {0x710,0x710},
    {0x712,0x72f}, {0x74d,0x7a5}, {0x7b1,0x7b1}, {0x7ca,0x7ea}, {0x7f4,0x7f5}, {0x7fa,0x7fa},
    {0x800,0x815}, {0x81a,0x81a}, {0x824,0x824}, {0x828,0x828}, {0x840,0x858}, {0x860,0x86a},
    {0x870,0x887}, {0x889,0x88e}, {0x8a0,0x8c9}, {0x904,0x939}, {0x93d,0x93d}, {0x950,0x950},
    {0x958,0x961}, {0x971,0x980}, {0x985,0x98c}, {0x98f,0x990}, {0x993,0x9a8}, {0x9aa,0x9b0},
    {0x9b2,0x9b2}, {0x9b6,0x9b9}, {0x9bd,0x9bd}, {0x9ce,0x9ce}, {0x9dc,0x9dd}, {0x9df,0x9e1},
    {0x9f0,0x9f1}, {0x9fc,0x9fc}, {0xa05,0xa0a}, {0xa0f,0xa10}, {0xa13,0xa28}, {0xa2a,0xa30},
    {0xa32,0xa33}, {0xa35,0xa36}, {0xa38,0xa39}, {0xa59,0xa5c}, {0xa5e,0xa5e}, {0xa72,0xa74},
    {0xa85,0xa8d}, {0xa8f,0xa91}, {0xa93,0xaa8}, {0xaaa,0xab0}, {0xab2,0xab3}, {0xab5,0xab9},
    {0xabd,0xabd}, {0xad0,0xad0}, {0xae0,0xae1}, {0xaf9,0xaf9}, {0xb05,0xb0c}, {0xb0f,0xb10},
    {0xb13,0xb28}, {0xb2a,0xb30}, {0xb32,0xb33}, {0xb35,0xb39}, {0xb3d,0xb3d}, {0xb5c,0xb5d},
    {0xb5f,0xb61}, {0xb71,0xb71}, {0xb83,0xb83}, {0xb85,0xb8a}, {0xb8e,0xb90}, {0xb92,0xb95},
    {0xb99,0xb9a}, {0xb9c,0xb9c}, {0xb9e,0xb9f}, {0xba3,0xba4}, {0xba8,0xbaa}, {0xbae,0xbb9},
    {0xbd0,0xbd0}, {0xc05,0xc0c}, {0xc0e,0xc10}, {0xc12,0xc28}, {0xc2a,0xc39}, {0xc3d,0xc3d},
    {0xc58,0xc5a}, {0xc5d,0xc5d}, {0xc60,0xc61}, {0xc80,0xc80}, {0xc85,0xc8c}, {0xc8e,0xc90},
    {0xc92,0xca8}, {0xcaa,0xcb3}, {0xcb5,0xcb9}, {0xcbd,0xcbd}, {0xcdd,0xcde}, {0xce0,0xce1},
    {0xcf1,0xcf2}, {0xd04,0xd0c}, {0xd0e,0xd10}, {0xd12,0xd3a}, {0xd3d,0xd3d}, {0xd4e,0xd4e},
    {0xd54,0xd56}, {0xd5f,0xd61}, {0xd7a,0xd7f}, {0xd85,0xd96}, {0xd9a,0xdb1}, {0xdb3,0xdbb},
    {0xdbd,0xdbd}, {0xdc0,0xdc6}, {0xe01,0xe30}, {0xe32,0xe33}, {0xe40,0xe46}, {0xe81,0xe82},
    {0xe84,0xe84}, {0xe86,0xe8a}, {0xe8c,0xea3}, {0xea5,0xea5}, {0xea7,0xeb0}, {0xeb2,0xeb3},
    {0xebd,0xebd}, {0xec0,0xec4}, {0xec6,0xec6}, {0xedc,0xedf}, {0xf00,0xf00}, {0xf40,0xf47},
    {0xf49,0xf6c}, {0xf88,0xf8c}, {0x1000,0x102a}, {0x103f,0x103f}, {0x1050,0x1055},
    {0x105a,0x105d}, {0x1061,0x1061}, {0x1065,0x1066}, {0x106e,0x1070}, {0x1075,0x1081},
    {0x108e,0x108e}, {0x10a0,0x10c5}, {0x10c7,0x10c7}, {0x10cd,0x10cd}, {0x10d0,0x10fa},
    {0x10fc,0x1248}, {0x124a,0x124d}, {0x1250,0x1256}, {0x1258,0x1258}, {0x125a,0x125d},
    {0x1260,0x1288}, {0x128a,0x128d}, {0x1290,0x12b0}, {0x12b2,0x12b5}, {0x12b8,0x12be},
    {0x12c0,0x12c0}, {0x12c2,0x12c5}, {0x12c8,0x12d6}, {0x12d8,0x1310}, {0x1312,0x1315},
    {0x1318,0x135a}, {0x1380,0x138f}, {0x13a0,0x13f5}, {0x13f8,0x13fd}, {0x1401,0x166c},
    {0x166f,0x167f}, {0x1681,0x169a}, {0x16a0,0x16ea}, {0x16f1,0x16f8}, {0x1700,0x1711},
    {0x171f,0x1731}, {0x1740,0x1751}, {0x1760,0x176c}, {0x176e,0x1770}, {0x1780,0x17b3},
    {0x17d7,0x17d7}, {0x17dc,0x17dc}, {0x1820,0x1878}, {0x1880,0x1884}, {0x1887,0x18a8},
    {0x18aa,0x18aa}, {0x18b0,0x18f5}, {0x1900,0x191e}, {0x1950,0x196d}, {0x1970,0x1974},
    {0x1980,0x19ab}, {0x19b0,0x19c9}, {0x1a00,0x1a16}, {0x1a20,0x1a54}, {0x1aa7,0x1aa7},
    {0x1b05,0x1b33}, {0x1b45,0x1b4c}, {0x1b83,0x1ba0}, {0x1bae,0x1baf}, {0x1bba,0x1be5},
    {0x1c00,0x1c23}, {0x1c4d,0x1c4f}, {0x1c5a,0x1c7d}, {0x1c80,0x1c8a}, {0x1c90,0x1cba},
    {0x1cbd,0x1cbf}, {0x1ce9,0x1cec}, {0x1cee,0x1cf3}, {0x1cf5,0x1cf6}, {0x1cfa,0x1cfa},
    {0x1d00,0x1dbf}, {0x1e00,0x1f15}, {0x1f18,0x1f1d}, {0x1f20,0x1f45}, {0x1f48,0x1f4d},
    {0x1f50,0x1f57}, {0x1f59,0x1f59}, {0x1f5b,0x1f5b}, {0x1f5d,0x1f5d}, {0x1f5f,0x1f7d},
    {0x1f80,0x1fb4}, {0x1fb6,0x1fbc}, {0x1fbe,0x1fbe}, {0x1fc2,0x1fc4}, {0x1fc6,0x1fcc},
    {0x1fd0,0x1fd3}, {0x1fd6,0x1fdb}, {0x1fe0,0x1fec}, {0x1ff2,0x1ff4}, {0x1ff6,0x1ffc},
    {0x2071,0x2071}, {0x207f,0x207f}, {0x2090,0x209c}, {0x2102,0x2102}, {0x2107,0x2107},
    {0x210a,0x2113}, {0x2115,0x2115}, {0x2119,0x211d}, {0x2124,0x2124}, {0x2126,0x2126},
    {0x2128,0x2128}, {0x212a,0x212d}, {0x212f,0x2139}, {0x213c,0x213f}, {0x2145,0x2149},
    {0x214e,0x214e}, {0x2183,0x2184}, {0x2c00,0x2ce4}, {0x2ceb,0x2cee}, {0x2cf2,0x2cf3},
    {0x2d00,0x2d25}, {0x2d27,0x2d27}, {0x2d2d,0x2d2d}, {0x2d30,0x2d67}, {0x2d6f,0x2d6f},
    {0x2d80,0x2d96}, {0x2da0,0x2da6}, {0x2da8,0x2dae}, {0x2db0,0x2db6}, {0x2db8,0x2dbe},
    {0x2dc0,0x2dc6}, {0x2dc8,0x2dce}, {0x2dd0,0x2dd6}, {0x2dd8,0x2dde}, {0x2e2f,0x2e2f},
    {0x3005,0x3006}, {0x3031,0x3035}, {0x303b,0x303c}, {0x3041,0x3096}, {0x309d,0x309f},
    {0x30a1,0x30fa}, {0x30fc,0x30ff}, {0x3105,0x312f}, {0x3131,0x318e}, {0x31a0,0x31bf},
    {0x31f0,0x31ff}, {0x3400,0x4dbf}, {0x4e00,0xa48c}, {0xa4d0,0xa4fd}, {0xa500,0xa60c},
    {0xa610,0xa61f}, {0xa62a,0xa62b}, {0xa640,0xa66e}, {0xa67f,0xa69d}, {0xa6a0,0xa6e5},
    {0xa717,0xa71f}, {0xa722,0xa788}, {0xa78b,0xa7cd}, {0xa7d0,0xa7d1}, {0xa7d3,0xa7d3},
    {0xa7d5,0xa7dc}, {0xa7f2,0xa801}, {0xa803,0xa805}, {0xa807,0xa80a}, {0xa80c,0xa822},
    {0xa840,0xa873}, {0xa882,0xa8b3}, {0xa8f2,0xa8f7}, {0xa8fb,0xa8fb}, {0xa8fd,0xa8fe},
    {0xa90a,0xa925}, {0xa930,0xa946}, {0xa960,0xa97c}, {0xa984,0xa9b2}, {0xa9cf,0xa9cf},
    {0xa9e0,0xa9e4}, {0xa9e6,0xa9ef}, {0xa9fa,0xa9fe}, {0xaa00,0xaa28}, {0xaa40,0xaa42},
    {0xaa44,0xaa4b}, {0xaa60,0xaa76}, {0xaa7a,0xaa7a}, {0xaa7e,0xaaaf}, {0xaab1,0xaab1},
    {0xaab5,0xaab6}, {0xaab9,0xaabd}, {0xaac0,0xaac0}, {0xaac2,0xaac2}, {0xaadb,0xaadd},
    {0xaae0,0xaaea}, {0xaaf2,0xaaf4}, {0xab01,0xab06}, {0xab09,0xab0e}, {0xab11,0xab16},
    {0xab20,0xab26}, {0xab28,0xab2e}, {0xab30,0xab5a}, {0xab5c,0xab69}, {0xab70,0xabe2},
    {0xac00,0xd7a3}, {0xd7b0,0xd7c6}, {0xd7cb,0xd7fb}, {0xf900,0xfa6d}, {0xfa70,0xfad9},
    {0xfb00,0xfb06}, {0xfb13,0xfb17}, {0xfb1d,0xfb1d}, {0xfb1f,0xfb28}, {0xfb2a,0xfb36},
    {0xfb38,0xfb3c}, {0xfb3e,0xfb3e}, {0xfb40,0xfb41}, {0xfb43,0xfb44}, {0xfb46,0xfbb1},
    {0xfbd3,0xfd3d}, {0xfd50,0xfd8f}, {0xfd92,0xfdc7}, {0xfdf0,0xfdfb}, {0xfe70,0xfe74},
    {0xfe76,0xfefc}, {0xff21,0xff3a}, {0xff41,0xff5a}, {0xff66,0xffbe}, {0xffc2,0xffc7},
    {0xffca,0xffcf}, {0xffd2,0xffd7}, {0xffda,0xffdc}, {0x10000,0x1000b}, {0x1000d,0x10026},
    {0x10028,0x1003a}, {0x1003c,0x1003d}, {0x1003f,0x1004d}, {0x10050,0x1005d}, {0x10080,0x100fa},
    {0x10280,0x1029c}, {0x102a0,0x102d0}, {0x10300,0x1031f}, {0x1032d,0x10340}, {0x10342,0x10349},
    {0x10350,0x10375}, {0x10380,0x1039d}, {0x103a0,0x103c3}, {0x103c8,0x103cf}, {0x10400,0x1049d},
    {0x104b0,0x104d3}, {0x104d8,0x104fb}, {0x10500,0x10527}, {0x10530,0x10563}, {0x10570,0x1057a},
    {0x1057c,0x1058a}, {0x1058c,0x10592}, {0x10594,0x10595}, {0x10597,0x105a1}, {0x105a3,0x105b1},
    {0x105b3,0x105b9}, {0x105bb,0x105bc}, {0x105c0,0x105f3}, {0x10600,0x10736}, {0x10740,0x10755},
    {0x10760,0x10767}, {0x10780,0x10785}, {0x10787,0x107b0}, {0x107b2,0x107ba}, {0x10800,0x10805},
    {0x10808,0x10808}, {0x1080a,0x10835}, {0x10837,0x10838}, {0x1083c,0x1083c}, {0x1083f,0x10855},
    {0x10860,0x10876}, {0x10880,0x1089e}, {0x108e0,0x108f2}, {0x108f4,0x108f5}, {0x10900,0x10915},
    {0x10920,0x10939}, {0x10980,0x109b7}, {0x109be,0x109bf}, {0x10a00,0x10a00}, {0x10a10,0x10a13},
    {0x10a15,0x10a17}, {0x10a19,0x10a35}, {0x10a60,0x10a7c}, {0x10a80,0x10a9c}, {0x10ac0,0x10ac7},
    {0x10ac9,0x10ae4}, {0x10b00,0x10b35}, {0x10b40,0x10b55}, {0x10b60,0x10b72}, {0x10b80,0x10b91},
    {0x10c00,0x10c48}, {0x10c80,0x10cb2}, {0x10cc0,0x10cf2}, {0x10d00,0x10d23}, {0x10d4a,0x10d65},
    {0x10d6f,0x10d85}, {0x10e80,0x10ea9}, {0x10eb0,0x10eb1}, {0x10ec2,0x10ec4}, {0x10f00,0x10f1c},
    {0x10f27,0x10f27}, {0x10f30,0x10f45}, {0x10f70,0x10f81}, {0x10fb0,0x10fc4}, {0x10fe0,0x10ff6},
    {0x11003,0x11037}, {0x11071,0x11072}, {0x11075,0x11075}, {0x11083,0x110af}, {0x110d0,0x110e8},
    {0x11103,0x11126}, {0x11144,0x11144}, {0x11147,0x11147}, {0x11150,0x11172}, {0x11176,0x11176},
    {0x11183,0x111b2}, {0x111c1,0x111c4}, {0x111da,0x111da}, {0x111dc,0x111dc}, {0x11200,0x11211},
    {0x11213,0x1122b}, {0x1123f,0x11240}, {0x11280,0x11286}, {0x11288,0x11288}, {0x1128a,0x1128d},
    {0x1128f,0x1129d}, {0x1129f,0x112a8}, {0x112b0,0x112de}, {0x11305,0x1130c}, {0x1130f,0x11310},
    {0x11313,0x11328}, {0x1132a,0x11330}, {0x11332,0x11333}, {0x11335,0x11339}, {0x1133d,0x1133d},
    {0x11350,0x11350}, {0x1135d,0x11361}, {0x11380,0x11389}, {0x1138b,0x1138b}, {0x1138e,0x1138e},
    {0x11390,0x113b5}, {0x113b7,0x113b7}, {0x113d1,0x113d1}, {0x113d3,0x113d3}, {0x11400,0x11434},
    {0x11447,0x1144a}, {0x1145f,0x11461}, {0x11480,0x114af}, {0x114c4,0x114c5}, {0x114c7,0x114c7},
    {0x11580,0x115ae}, {0x115d8,0x115db}, {0x11600,0x1162f}, {0x11644,0x11644}, {0x11680,0x116aa},
    {0x116b8,0x116b8}, {0x11700,0x1171a}, {0x11740,0x11746}, {0x11800,0x1182b}, {0x118a0,0x118df},
    {0x118ff,0x11906}, {0x11909,0x11909}, {0x1190c,0x11913}, {0x11915,0x11916}, {0x11918,0x1192f},
    {0x1193f,0x1193f}, {0x11941,0x11941}, {0x119a0,0x119a7}, {0x119aa,0x119d0}, {0x119e1,0x119e1},
    {0x119e3,0x119e3}, {0x11a00,0x11a00}, {0x11a0b,0x11a32}, {0x11a3a,0x11a3a}, {0x11a50,0x11a50},
    {0x11a5c,0x11a89}, {0x11a9d,0x11a9d}, {0x11ab0,0x11af8}, {0x11bc0,0x11be0}, {0x11c00,0x11c08},
    {0x11c0a,0x11c2e}, {0x11c40,0x11c40}, {0x11c72,0x11c8f}, {0x11d00,0x11d06}, {0x11d08,0x11d09},
    {0x11d0b,0x11d30}, {0x11d46,0x11d46}, {0x11d60,0x11d65}, {0x11d67,0x11d68}, {0x11d6a,0x11d89},
    {0x11d98,0x11d98}, {0x11ee0,0x11ef2}, {0x11f02,0x11f02}, {0x11f04,0x11f10}, {0x11f12,0x11f33},
    {0x11fb0,0x11fb0}, {0x12000,0x12399}, {0x12480,0x12543}, {0x12f90,0x12ff0}, {0x13000,0x1342f},
    {0x13441,0x13446}, {0x13460,0x143fa}, {0x14400,0x14646}, {0x16100,0x1611d}, {0x16800,0x16a38},
    {0x16a40,0x16a5e}, {0x16a70,0x16abe}, {0x16ad0,0x16aed}, {0x16b00,0x16b2f}, {0x16b40,0x16b43},
    {0x16b63,0x16b77}, {0x16b7d,0x16b8f}, {0x16d40,0x16d6c}, {0x16e40,0x16e7f}, {0x16f00,0x16f4a},
    {0x16f50,0x16f50}, {0x16f93,0x16f9f}, {0x16fe0,0x16fe1}, {0x16fe3,0x16fe3}, {0x17000,0x187f7},
    {0x18800,0x18cd5}, {0x18cff,0x18d08}, {0x1aff0,0x1aff3}, {0x1aff5,0x1affb}, {0x1affd,0x1affe},
    {0x1b000,0x1b122}, {0x1b132,0x1b132}, {0x1b150,0x1b152}, {0x1b155,0x1b155}, {0x1b164,0x1b167},
    {0x1b170,0x1b2fb}, {0x1bc00,0x1bc6a}, {0x1bc70,0x1bc7c}, {0x1bc80,0x1bc88}, {0x1bc90,0x1bc99},
    {0x1d400,0x1d454}, {0x1d456,0x1d49c}, {0x1d49e,0x1d49f}, {0x1d4a2,0x1d4a2}, {0x1d4a5,0x1d4a6},
    {0x1d4a9,0x1d4ac}, {0x1d4ae,0x1d4b9}, {0x1d4bb,0x1d4bb}, {0x1d4bd,0x1d4c3}, {0x1d4c5,0x1d505},
    {0x1d507,0x1d50a}, {0x1d50d,0x1d514}, {0x1d516,0x1d51c}, {0x1d51e,0x1d539}, {0x1d53b,0x1d53e},
    {0x1d540,0x1d544}, {0x1d546,0x1d546}, {0x1d54a,0x1d550}, {0x1d552,0x1d6a5}, {0x1d6a8,0x1d6c0},
    {0x1d6c2,0x1d6da}, {0x1d6dc,0x1d6fa}, {0x1d6fc,0x1d714}, {0x1d716,0x1d734}, {0x1d736,0x1d74e},
    {0x1d750,0x1d76e}, {0x1d770,0x1d788}, {0x1d78a,0x1d7a8}, {0x1d7aa,0x1d7c2}, {0x1d7c4,0x1d7cb},
    {0x1df00,0x1df1e}, {0x1df25,0x1df2a}, {0x1e030,0x1e06d}, {0x1e100,0x1e12c}, {0x1e137,0x1e13d},
    {0x1e14e,0x1e14e}, {0x1e290,0x1e2ad}, {0x1e2c0,0x1e2eb}, {0x1e4d0,0x1e4eb}, {0x1e5d0,0x1e5ed},
    {0x1e5f0,0x1e5f0}, {0x1e7e0,0x1e7e6}, {0x1e7e8,0x1e7eb}, {0x1e7ed,0x1e7ee}, {0x1e7f0,0x1e7fe},
    {0x1e800,0x1e8c4}, {0x1e900,0x1e943}, {0x1e94b,0x1e94b}, {0x1ee00,0x1ee03}, {0x1ee05,0x1ee1f},
    {0x1ee21,0x1ee22}, {0x1ee24,0x1ee24}, {0x1ee27,0x1ee27}, {0x1ee29,0x1ee32}, {0x1ee34,0x1ee37},
    {0x1ee39,0x1ee39}, {0x1ee3b,0x1ee3b}, {0x1ee42,0x1ee42}, {0x1ee47,0x1ee47}, {0x1ee49,0x1ee49},
    {0x1ee4b,0x1ee4b}, {0x1ee4d,0x1ee4f}, {0x1ee51,0x1ee52}, {0x1ee54,0x1ee54}, {0x1ee57,0x1ee57},
    {0x1ee59,0x1ee59}, {0x1ee5b,0x1ee5b}, {0x1ee5d,0x1ee5d}, {0x1ee5f,0x1ee5f}, {0x1ee61,0x1ee62},
    {0x1ee64,0x1ee64}, {0x1ee67,0x1ee6a}, {0x1ee6c,0x1ee72}, {0x1ee74,0x1ee77}, {0x1ee79,0x1ee7c},
    {0x1ee7e,0x1ee7e}, {0x1ee80,0x1ee89}, {0x1ee8b,0x1ee9b}, {0x1eea1,0x1eea3}, {0x1eea5,0x1eea9},
    {0x1eeab,0x1eebb}, {0x20000,0x2a6df}, {0x2a700,0x2b739}, {0x2b740,0x2b81d}, {0x2b820,0x2cea1},
    {0x2ceb0,0x2ebe0}, {0x2ebf0,0x2ee5d}, {0x2f800,0x2fa1d}, {0x30000,0x3134a}, {0x31350,0x323af},
};
static const uint32_t mama__uni_numbers[144][2] = {
    {0x30,0x39}, {0xb2,0xb3}, {0xb9,0xb9}, {0xbc,0xbe}, {0x660,0x669}, {0x6f0,0x6f9}, {0x7c0,0x7c9},
    {0x966,0x96f}, {0x9e6,0x9ef}, {0x9f4,0x9f9}, {0xa66,0xa6f}, {0xae6,0xaef}, {0xb66,0xb6f},
    {0xb72,0xb77}, {0xbe6,0xbf2}, {0xc66,0xc6f}, {0xc78,0xc7e}, {0xce6,0xcef}, {0xd58,0xd5e},
    {0xd66,0xd78}, {0xde6,0xdef}, {0xe50,0xe59}, {0xed0,0xed9}, {0xf20,0xf33}, {0x1040,0x1049},
    {0x1090,0x1099}, {0x1369,0x137c}, {0x16ee,0x16f0}, {0x17e0,0x17e9}, {0x17f0,0x17f9},
    {0x1810,0x1819}, {0x1946,0x194f}, {0x19d0,0x19da}, {0x1a80,0x1a89}, {0x1a90,0x1a99},
    {0x1b50,0x1b59}, {0x1bb0,0x1bb9}, {0x1c40,0x1c49}, {0x1c50,0x1c59}, {0x2070,0x2070},
    {0x2074,0x2079}, {0x2080,0x2089}, {0x2150,0x2182}, {0x2185,0x2189}, {0x2460,0x249b},
    {0x24ea,0x24ff}, {0x2776,0x2793}, {0x2cfd,0x2cfd}, {0x3007,0x3007}, {0x3021,0x3029},
    {0x3038,0x303a}, {0x3192,0x3195}, {0x3220,0x3229}, {0x3248,0x324f}, {0x3251,0x325f},
    {0x3280,0x3289}, {0x32b1,0x32bf}, {0xa620,0xa629}, {0xa6e6,0xa6ef}, {0xa830,0xa835},
    {0xa8d0,0xa8d9}, {0xa900,0xa909}, {0xa9d0,0xa9d9}, {0xa9f0,0xa9f9}, {0xaa50,0xaa59},
    {0xabf0,0xabf9}, {0xff10,0xff19}, {0x10107,0x10133}, {0x10140,0x10178}, {0x1018a,0x1018b},
    {0x102e1,0x102fb}, {0x10320,0x10323}, {0x10341,0x10341}, {0x1034a,0x1034a}, {0x103d1,0x103d5},
    {0x104a0,0x104a9}, {0x10858,0x1085f}, {0x10879,0x1087f}, {0x108a7,0x108af}, {0x108fb,0x108ff},
    {0x10916,0x1091b}, {0x109bc,0x109bd}, {0x109c0,0x109cf}, {0x109d2,0x109ff}, {0x10a40,0x10a48},
    {0x10a7d,0x10a7e}, {0x10a9d,0x10a9f}, {0x10aeb,0x10aef}, {0x10b58,0x10b5f}, {0x10b78,0x10b7f},
    {0x10ba9,0x10baf}, {0x10cfa,0x10cff}, {0x10d30,0x10d39}, {0x10d40,0x10d49}, {0x10e60,0x10e7e},
    {0x10f1d,0x10f26}, {0x10f51,0x10f54}, {0x10fc5,0x10fcb}, {0x11052,0x1106f}, {0x110f0,0x110f9},
    {0x11136,0x1113f}, {0x111d0,0x111d9}, {0x111e1,0x111f4}, {0x112f0,0x112f9}, {0x11450,0x11459},
    {0x114d0,0x114d9}, {0x11650,0x11659}, {0x116c0,0x116c9}, {0x116d0,0x116e3}, {0x11730,0x1173b},
    {0x118e0,0x118f2}, {0x11950,0x11959}, {0x11bf0,0x11bf9}, {0x11c50,0x11c6c}, {0x11d50,0x11d59},
    {0x11da0,0x11da9}, {0x11f50,0x11f59}, {0x11fc0,0x11fd4}, {0x12400,0x1246e}, {0x16130,0x16139},
    {0x16a60,0x16a69}, {0x16ac0,0x16ac9}, {0x16b50,0x16b59}, {0x16b5b,0x16b61}, {0x16d70,0x16d79},
    {0x16e80,0x16e96}, {0x1ccf0,0x1ccf9}, {0x1d2c0,0x1d2d3}, {0x1d2e0,0x1d2f3}, {0x1d360,0x1d378},
    {0x1d7ce,0x1d7ff}, {0x1e140,0x1e149}, {0x1e2f0,0x1e2f9}, {0x1e4f0,0x1e4f9}, {0x1e5f1,0x1e5fa},
    {0x1e8c7,0x1e8cf}, {0x1e950,0x1e959}, {0x1ec71,0x1ecab}, {0x1ecad,0x1ecaf}, {0x1ecb1,0x1ecb4},
    {0x1ed01,0x1ed2d}, {0x1ed2f,0x1ed3d}, {0x1f100,0x1f10c}, {0x1fbf0,0x1fbf9},
};
enum { MAMA__UC_OTHER = 0, MAMA__UC_LETTER = 1, MAMA__UC_NUMBER = 2, MAMA__UC_SPACE = 3 };

static int mama__tx_in_ranges(const uint32_t (*r)[2], int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* White_Space (what Oniguruma's \s matches on Unicode text): note that
 * U+001C..U+001F, which Python's str.isspace accepts, are not in it. */
static int mama__tx_is_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return 0;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static int mama__tx_uclass(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return MAMA__UC_LETTER;
        if (cp >= '0' && cp <= '9') return MAMA__UC_NUMBER;
        return mama__tx_is_space(cp) ? MAMA__UC_SPACE : MAMA__UC_OTHER;
    }
    if (mama__tx_is_space(cp)) return MAMA__UC_SPACE;
    if (mama__tx_in_ranges(mama__uni_letters, (int)(sizeof mama__uni_letters / sizeof mama__uni_letters[0]), cp))
        return MAMA__UC_LETTER;
    if (mama__tx_in_ranges(mama__uni_numbers, (int)(sizeof mama__uni_numbers / sizeof mama__uni_numbers[0]), cp))
        return MAMA__UC_NUMBER;
    return MAMA__UC_OTHER;
}

/* Decode one UTF-8 character at s[0..n).  Returns its byte length (>= 1);
 * *cp receives the code point, or 0xFFFFFFFF for a byte that does not start
 * a valid sequence (overlong forms and surrogates are invalid too); such a
 * byte is then a one-byte "other" character. */
static size_t mama__tx_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    uint32_t c = s[0], min;
    size_t len, i;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; c &= 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; c &= 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; c &= 0x07; min = 0x10000; }
    else { *cp = 0xFFFFFFFFu; return 1; }
    if (len > n) { *cp = 0xFFFFFFFFu; return 1; }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = 0xFFFFFFFFu; return 1; }
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) { *cp = 0xFFFFFFFFu; return 1; }
    *cp = c;
    return len;
}

/* Class of the character at s[i]; *nb receives its byte length. */
static int mama__tx_class_at(const unsigned char *s, size_t len, size_t i, size_t *nb) {
    uint32_t cp;
    *nb = mama__tx_utf8_decode(s + i, len - i, &cp);
    return cp == 0xFFFFFFFFu ? MAMA__UC_OTHER : mama__tx_uclass(cp);
}

/* ---- 8.2 The GPT-2 pre-tokenizer ------------------------------------------
 * The pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * is matched by hand.  At each position the alternatives are tried in
 * order, as a backtracking regex engine would:
 *  - a contraction if the text starts with one (case-sensitive);
 *  - an optional ' ' (U+0020 only) then a maximal run of letters, or of
 *    numbers, or of "other" characters (the class of the first character
 *    after the optional space decides which);
 *  - otherwise we are on whitespace.  \s+(?!\S) takes the whole run if it
 *    reaches the end of the text, else the run minus its last character
 *    (the regex backtracks one character so that the lookahead sees
 *    whitespace); a single whitespace character before a non-space falls
 *    through to \s+ and is taken alone.  This is why "a  b" splits as
 *    "a", " ", " b": the last space of a run stays with the next word. */
static size_t mama__pretok_next(const unsigned char *s, size_t len, size_t i) {
    size_t j, k, nb, last;
    int cls;
    if (s[i] == '\'' && i + 1 < len) {
        unsigned char c1 = s[i + 1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
        if (i + 2 < len) {
            unsigned char c2 = s[i + 2];
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i + 3;
        }
    }
    j = (s[i] == ' ') ? i + 1 : i;
    if (j < len) {
        cls = mama__tx_class_at(s, len, j, &nb);
        if (cls != MAMA__UC_SPACE) {
            size_t nb2;
            k = j + nb;
            while (k < len && mama__tx_class_at(s, len, k, &nb2) == cls) k += nb2;
            return k;
        }
    }
    /* whitespace run starting at i */
    k = i;
    last = i;
    while (k < len && mama__tx_class_at(s, len, k, &nb) == MAMA__UC_SPACE) { last = k; k += nb; }
    if (k == len) return k;
    if (last > i) return last;
    return k;
}

MAMA_API void mama_pretokenize(const char *text, size_t len, void (*fn)(const char *piece, size_t len, void *user),
                               void *user) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        size_t e = mama__pretok_next(s, len, i);
        fn(text + i, e - i, user);
        i = e;
    }
}

/* ---- 8.3 Byte-level alphabet ----------------------------------------------
 * GPT-2 maps each byte to a printable code point so that vocabulary files
 * are text: the printable Latin-1 bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF map
 * to themselves; the other 68 bytes (controls, space, 0x7F..0xA0, 0xAD)
 * map, in byte order, to U+0100, U+0101, ...  (so ' ' is 'Ġ' U+0120 and
 * '\n' is 'Ċ' U+010A).  `order` lists the bytes in the order of GPT-2's
 * first 256 vocabulary ids: the printable ones first, then the others. */
typedef struct mama__bytelevel {
    uint16_t to_cp[256];
    int16_t from_cp[324]; /* -1: not a byte-level code point */
    unsigned char order[256];
} mama__bytelevel;

static int mama__byte_printable(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

static void mama__bytelevel_init(mama__bytelevel *bl) {
    int b, n = 0, k = 0;
    for (b = 0; b < 324; b++) bl->from_cp[b] = -1;
    for (b = 0; b < 256; b++)
        if (mama__byte_printable(b)) { bl->to_cp[b] = (uint16_t)b; bl->order[k++] = (unsigned char)b; }
    for (b = 0; b < 256; b++)
        if (!mama__byte_printable(b)) { bl->to_cp[b] = (uint16_t)(256 + n++); bl->order[k++] = (unsigned char)b; }
    for (b = 0; b < 256; b++) bl->from_cp[bl->to_cp[b]] = (int16_t)b;
}

/* Byte-level text (as in vocab.json / merges.txt) -> raw bytes, appended to
 * b.  A character outside the byte-level alphabet keeps its UTF-8 bytes
 * (some vocabularies hold such tokens; they can then only be matched as
 * added tokens). */
static mama_status mama__bytelevel_decode(const mama__bytelevel *bl, const char *s, size_t n, mama_buf *b) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = mama__tx_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (cp < 324 && bl->from_cp[cp] >= 0) {
            unsigned char c = (unsigned char)bl->from_cp[cp];
            MAMA_TRY(mama_buf_append(b, &c, 1));
        } else {
            MAMA_TRY(mama_buf_append(b, s + i, k));
        }
        i += k;
    }
    return MAMA_OK;
}

/* ---- 8.4 Hash maps ------------------------------------------------------------
 * Open addressing, linear probing, power-of-two capacity at most half full.
 * FNV-1a for byte strings; a 64-bit mix for id pairs. */
static uint64_t mama__tx_fnv1a(const void *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;
    for (i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ull; }
    return h;
}
static uint64_t mama__tx_mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}
static size_t mama__tx_pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Grow an array to hold `need` elements (doubling). */
static mama_status mama__tx_grow(void **p, size_t *cap, size_t need, size_t elem, const char *what) {
    void *q;
    size_t nc;
    if (need <= *cap) return MAMA_OK;
    nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    MAMA_TRY(mama_alloc(&q, nc * elem, what));
    if (*p) { memcpy(q, *p, *cap * elem); mama_free(*p); }
    *p = q;
    *cap = nc;
    return MAMA_OK;
}

/* ---- 8.5 The tokenizer ----------------------------------------------------------- */
#define MAMA__N_SPECIAL 7
static const char *const mama__special_text[MAMA__N_SPECIAL] = {
    "<|startoftext|>", "<|padtext|>", "<|masktext|>", "<|separatetext|>",
    "<|unknowntext|>", "<|keytext|>", "<|endoftext|>"};

MAMA_API const char *mama_special_token_text(mama_special_token which) {
    return ((int)which >= 0 && (int)which < MAMA__N_SPECIAL) ? mama__special_text[which] : NULL;
}

enum { MAMA__TOK_ADDED = 1, MAMA__TOK_SPECIAL = 2 };

struct mama_tokenizer {
    int n_vocab;               /* largest id + 1 */
    int n_merges;
    char *pool;                /* raw bytes of every token, back to back */
    size_t *tok_off;           /* per id: offset into pool */
    int *tok_len;              /* per id: byte length, -1 = no token with this id */
    unsigned char *tok_flags;  /* per id: MAMA__TOK_ADDED | MAMA__TOK_SPECIAL */
    int *smap;                 /* raw bytes -> id (slot holds an id or -1) */
    size_t smap_cap;
    uint64_t *pkey;            /* (left id << 32 | right id) -> merge; UINT64_MAX = empty */
    int *prank, *pnew;
    size_t pmap_cap;
    int byte_id[256];          /* raw byte -> id of its one-byte token, -1 if none */
    int *added;                /* ids of added tokens, longest text first */
    int n_added;
    unsigned char added_first[256]; /* first bytes of added tokens */
    int special[MAMA__N_SPECIAL];
    mama__bytelevel bl;
};

static int mama__smap_find(const mama_tokenizer *t, const char *s, size_t n) {
    size_t mask = t->smap_cap - 1, i = (size_t)mama__tx_fnv1a(s, n) & mask;
    for (;;) {
        int id = t->smap[i];
        if (id < 0) return -1;
        if ((size_t)t->tok_len[id] == n && memcmp(t->pool + t->tok_off[id], s, n) == 0) return id;
        i = (i + 1) & mask;
    }
}
static void mama__smap_insert(mama_tokenizer *t, int id) {
    const char *s = t->pool + t->tok_off[id];
    size_t n = (size_t)t->tok_len[id], mask = t->smap_cap - 1, i = (size_t)mama__tx_fnv1a(s, n) & mask;
    for (;;) {
        int o = t->smap[i];
        if (o < 0) { t->smap[i] = id; return; }
        if ((size_t)t->tok_len[o] == n && memcmp(t->pool + t->tok_off[o], s, n) == 0) return; /* first wins */
        i = (i + 1) & mask;
    }
}

static size_t mama__pmap_slot(const mama_tokenizer *t, uint64_t key) {
    size_t mask = t->pmap_cap - 1, i = (size_t)mama__tx_mix64(key) & mask;
    while (t->pkey[i] != UINT64_MAX && t->pkey[i] != key) i = (i + 1) & mask;
    return i;
}

MAMA_API void mama_tokenizer_free(mama_tokenizer *t) {
    if (!t) return;
    mama_free(t->pool); mama_free(t->tok_off); mama_free(t->tok_len); mama_free(t->tok_flags);
    mama_free(t->smap); mama_free(t->pkey); mama_free(t->prank); mama_free(t->pnew); mama_free(t->added);
    mama_free(t);
}

/* Loading goes through a staging list of (raw bytes, id, flags) entries:
 * the vocabulary, then added tokens, then the special tokens that are still
 * missing.  mama__tok_finish turns it into the tables above. */
typedef struct mama__tok_stage {
    mama_buf bytes;      /* raw bytes of all entries */
    size_t *off;         /* per entry */
    size_t *len;
    int *id;
    unsigned char *flags;
    size_t n, cap;
    int max_id;
} mama__tok_stage;

static void mama__stage_free(mama__tok_stage *st) {
    mama_buf_free(&st->bytes);
    mama_free(st->off); mama_free(st->len); mama_free(st->id); mama_free(st->flags);
    memset(st, 0, sizeof *st);
}

static mama_status mama__stage_reserve(mama__tok_stage *st, size_t need) {
    size_t c;
    if (need <= st->cap) return MAMA_OK;
    c = st->cap;
    MAMA_TRY(mama__tx_grow((void **)&st->off, &c, need, sizeof(size_t), "tokenizer staging"));
    c = st->cap;
    MAMA_TRY(mama__tx_grow((void **)&st->len, &c, need, sizeof(size_t), "tokenizer staging"));
    c = st->cap;
    MAMA_TRY(mama__tx_grow((void **)&st->id, &c, need, sizeof(int), "tokenizer staging"));
    c = st->cap;
    MAMA_TRY(mama__tx_grow((void **)&st->flags, &c, need, 1, "tokenizer staging"));
    st->cap = c;
    return MAMA_OK;
}

/* Add an entry whose raw bytes are already in st->bytes from `off`. */
static mama_status mama__stage_commit(mama__tok_stage *st, size_t off, int id, int flags) {
    MAMA_TRY(mama__stage_reserve(st, st->n + 1));
    st->off[st->n] = off;
    st->len[st->n] = st->bytes.len - off;
    st->id[st->n] = id;
    st->flags[st->n] = (unsigned char)flags;
    st->n++;
    if (id > st->max_id) st->max_id = id;
    return MAMA_OK;
}

/* Entry index whose raw bytes equal s, or -1 (linear: used for the seven
 * special tokens only). */
static long mama__stage_find(const mama__tok_stage *st, const char *s, size_t n) {
    size_t i;
    for (i = st->n; i-- > 0;)
        if (st->len[i] == n && memcmp(st->bytes.data + st->off[i], s, n) == 0) return (long)i;
    return -1;
}

/* Largest id we accept: the table of ids is dense, so an absurd id in a
 * file would otherwise make us allocate gigabytes. */
#define MAMA__MAX_TOKEN_ID 16777215

static int mama__added_cmp_len(const mama_tokenizer *t, int a, int b) {
    if (t->tok_len[a] != t->tok_len[b]) return t->tok_len[a] > t->tok_len[b] ? -1 : 1;
    return a < b ? -1 : (a > b);
}

static mama_status mama__tok_finish(mama__tok_stage *st, mama_tokenizer *t, size_t n_merges, const char *src) {
    size_t i, k;
    int id;
    /* the special tokens: keep the ids the files give them, else append */
    for (k = 0; k < MAMA__N_SPECIAL; k++) {
        /* eos (index 6) is appended after the six only if missing */
        const char *s = mama__special_text[k];
        long e = mama__stage_find(st, s, strlen(s));
        if (e >= 0) {
            st->flags[e] |= MAMA__TOK_ADDED | MAMA__TOK_SPECIAL;
            t->special[k] = st->id[e];
        } else {
            size_t off = st->bytes.len;
            if (st->max_id >= MAMA__MAX_TOKEN_ID)
                return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: too many tokens", src);
            t->special[k] = st->max_id + 1;
            MAMA_TRY(mama_buf_append(&st->bytes, s, strlen(s)));
            MAMA_TRY(mama__stage_commit(st, off, st->max_id + 1, MAMA__TOK_ADDED | MAMA__TOK_SPECIAL));
        }
    }
    t->n_vocab = st->max_id + 1;
    MAMA_TRY(mama_alloc((void **)&t->pool, st->bytes.len + 1, "tokenizer strings"));
    if (st->bytes.len) memcpy(t->pool, st->bytes.data, st->bytes.len);
    MAMA_TRY(mama_alloc((void **)&t->tok_off, (size_t)t->n_vocab * sizeof(size_t), "tokenizer offsets"));
    MAMA_TRY(mama_alloc((void **)&t->tok_len, (size_t)t->n_vocab * sizeof(int), "tokenizer lengths"));
    MAMA_TRY(mama_calloc((void **)&t->tok_flags, (size_t)t->n_vocab, "tokenizer flags"));
    for (id = 0; id < t->n_vocab; id++) { t->tok_len[id] = -1; t->tok_off[id] = 0; }
    /* later entries (added tokens) override the vocabulary's text of an id */
    for (i = 0; i < st->n; i++) {
        id = st->id[i];
        if (st->len[i] > (size_t)INT_MAX) return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: token %d too long", src, id);
        if (t->tok_len[id] >= 0 && !(st->flags[i] & MAMA__TOK_ADDED) && !(t->tok_flags[id] & MAMA__TOK_ADDED))
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: id %d is given to two tokens", src, id);
        if (t->tok_len[id] >= 0 && (t->tok_flags[id] & MAMA__TOK_ADDED) && !(st->flags[i] & MAMA__TOK_ADDED))
            continue;
        t->tok_off[id] = st->off[i];
        t->tok_len[id] = (int)st->len[i];
        t->tok_flags[id] = (unsigned char)(t->tok_flags[id] | st->flags[i]);
    }
    /* the string map: added tokens first so that they win a clash */
    t->smap_cap = mama__tx_pow2_at_least(2 * (size_t)t->n_vocab + 2);
    MAMA_TRY(mama_alloc((void **)&t->smap, t->smap_cap * sizeof(int), "tokenizer vocabulary map"));
    for (i = 0; i < t->smap_cap; i++) t->smap[i] = -1;
    for (id = 0; id < t->n_vocab; id++)
        if (t->tok_len[id] >= 0 && (t->tok_flags[id] & MAMA__TOK_ADDED)) mama__smap_insert(t, id);
    for (id = 0; id < t->n_vocab; id++)
        if (t->tok_len[id] >= 0 && !(t->tok_flags[id] & MAMA__TOK_ADDED)) mama__smap_insert(t, id);
    for (k = 0; k < 256; k++) {
        char c = (char)k;
        t->byte_id[k] = mama__smap_find(t, &c, 1);
    }
    /* added tokens, longest first (leftmost-longest matching) */
    t->n_added = 0;
    for (id = 0; id < t->n_vocab; id++)
        if (t->tok_len[id] > 0 && (t->tok_flags[id] & MAMA__TOK_ADDED)) t->n_added++;
    MAMA_TRY(mama_alloc((void **)&t->added, (size_t)(t->n_added ? t->n_added : 1) * sizeof(int), "added tokens"));
    t->n_added = 0;
    memset(t->added_first, 0, sizeof t->added_first);
    for (id = 0; id < t->n_vocab; id++)
        if (t->tok_len[id] > 0 && (t->tok_flags[id] & MAMA__TOK_ADDED)) {
            int j = t->n_added++;
            /* insertion sort: few added tokens */
            while (j > 0 && mama__added_cmp_len(t, id, t->added[j - 1]) < 0) { t->added[j] = t->added[j - 1]; j--; }
            t->added[j] = id;
            t->added_first[(unsigned char)t->pool[t->tok_off[id]]] = 1;
        }
    /* the merge map, filled by the caller */
    t->pmap_cap = mama__tx_pow2_at_least(2 * n_merges + 2);
    MAMA_TRY(mama_alloc((void **)&t->pkey, t->pmap_cap * sizeof(uint64_t), "merge map"));
    MAMA_TRY(mama_alloc((void **)&t->prank, t->pmap_cap * sizeof(int), "merge map"));
    MAMA_TRY(mama_alloc((void **)&t->pnew, t->pmap_cap * sizeof(int), "merge map"));
    for (i = 0; i < t->pmap_cap; i++) t->pkey[i] = UINT64_MAX;
    t->n_merges = 0;
    return MAMA_OK;
}

/* Add merge `a b` (byte-level text) with the next rank.  The merged token
 * must be in the vocabulary (Hugging Face refuses such files too).  A
 * repeated pair keeps its first rank. */
static mama_status mama__tok_add_merge(mama_tokenizer *t, const char *a, size_t na, const char *b, size_t nb,
                                       mama_buf *scratch, const char *src, size_t line) {
    int ia, ib, im;
    size_t split, slot;
    uint64_t key;
    scratch->len = 0;
    MAMA_TRY(mama__bytelevel_decode(&t->bl, a, na, scratch));
    split = scratch->len;
    MAMA_TRY(mama__bytelevel_decode(&t->bl, b, nb, scratch));
    ia = mama__smap_find(t, scratch->data, split);
    ib = mama__smap_find(t, scratch->data + split, scratch->len - split);
    im = mama__smap_find(t, scratch->data, scratch->len);
    if (ia < 0 || ib < 0 || im < 0)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: merge %zu (\"%.*s %.*s\"): %s not in the vocabulary", src, line,
                         (int)(na > 64 ? 64 : na), a, (int)(nb > 64 ? 64 : nb), b,
                         ia < 0 ? "left token" : ib < 0 ? "right token" : "merged token");
    key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    slot = mama__pmap_slot(t, key);
    if (t->pkey[slot] == key) return MAMA_OK;
    t->pkey[slot] = key;
    t->prank[slot] = t->n_merges++;
    t->pnew[slot] = im;
    return MAMA_OK;
}

/* Stage the entries of a JSON object {token: id}. */
static mama_status mama__stage_vocab(mama__tok_stage *st, const mama__bytelevel *bl, const mama_json *vocab,
                                     const char *src) {
    size_t i;
    if (!vocab || vocab->type != MAMA_JSON_OBJECT)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: the vocabulary is not a JSON object", src);
    MAMA_TRY(mama__stage_reserve(st, st->n + vocab->length));
    for (i = 0; i < vocab->length; i++) {
        const mama_json *v = &vocab->children[i];
        size_t off = st->bytes.len;
        if (v->type != MAMA_JSON_NUMBER || v->number < 0 || v->number > MAMA__MAX_TOKEN_ID ||
            v->number != (double)(int)v->number)
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: vocabulary entry \"%.64s\" has no valid id (0..%d)", src,
                             vocab->keys[i], MAMA__MAX_TOKEN_ID);
        MAMA_TRY(mama__bytelevel_decode(bl, vocab->keys[i], strlen(vocab->keys[i]), &st->bytes));
        MAMA_TRY(mama__stage_commit(st, off, (int)v->number, 0));
    }
    return MAMA_OK;
}

static mama_status mama__tok_new(mama_tokenizer **out) {
    mama_tokenizer *t;
    *out = NULL;
    MAMA_TRY(mama_calloc((void **)&t, sizeof *t, "tokenizer"));
    mama__bytelevel_init(&t->bl);
    *out = t;
    return MAMA_OK;
}

/* Count merge lines (skipping "#version" headers and blank lines). */
static int mama__merge_line_skip(const char *l, size_t n, size_t lineno) {
    if (n == 0) return 1;
    if (lineno == 1 && n >= 8 && memcmp(l, "#version", 8) == 0) return 1;
    return 0;
}

static mama_status mama__tok_load_merges_text(mama_tokenizer *t, const char *txt, size_t len, mama_buf *scratch,
                                              const char *src) {
    size_t pos = 0, lineno = 0;
    while (pos < len) {
        size_t e = pos, n, sp;
        const char *l = txt + pos;
        while (e < len && txt[e] != '\n') e++;
        n = e - pos;
        if (n && l[n - 1] == '\r') n--;
        lineno++;
        pos = e + 1;
        if (mama__merge_line_skip(l, n, lineno)) continue;
        for (sp = 0; sp < n && l[sp] != ' '; sp++) {}
        if (sp == 0 || sp >= n - 1 || memchr(l + sp + 1, ' ', n - sp - 1))
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu: a merge line must be two tokens separated by one space",
                             src, lineno);
        MAMA_TRY(mama__tok_add_merge(t, l, sp, l + sp + 1, n - sp - 1, scratch, src, lineno));
    }
    return MAMA_OK;
}

static size_t mama__count_merge_lines(const char *txt, size_t len) {
    size_t pos = 0, lineno = 0, n = 0;
    while (pos < len) {
        size_t e = pos, m;
        while (e < len && txt[e] != '\n') e++;
        m = e - pos;
        if (m && txt[e - 1] == '\r') m--;
        lineno++;
        if (!mama__merge_line_skip(txt + pos, m, lineno)) n++;
        pos = e + 1;
    }
    return n;
}

MAMA_API mama_status mama_tokenizer_load_memory(mama_tokenizer **out, const char *vocab_json, size_t vocab_len,
                                                const char *merges_txt, size_t merges_len,
                                                const char *source_name) {
    mama_tokenizer *t = NULL;
    mama_json *vj = NULL;
    mama__tok_stage st;
    mama_buf scratch;
    mama_status s;
    const char *src = source_name ? source_name : "<tokenizer>";
    memset(&st, 0, sizeof st);
    memset(&scratch, 0, sizeof scratch);
    st.max_id = -1;
    if (!out || !vocab_json || (!merges_txt && merges_len))
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_load_memory: NULL argument");
    *out = NULL;
    s = mama__tok_new(&t);
    if (s == MAMA_OK) s = mama_json_parse(vocab_json, vocab_len, src, &vj);
    if (s == MAMA_OK) s = mama__stage_vocab(&st, &t->bl, vj, src);
    if (s == MAMA_OK) s = mama__tok_finish(&st, t, mama__count_merge_lines(merges_txt, merges_len), src);
    if (s == MAMA_OK) s = mama__tok_load_merges_text(t, merges_txt, merges_len, &scratch, src);
    mama_json_free(vj);
    mama_buf_free(&scratch);
    mama__stage_free(&st);
    if (s != MAMA_OK) { mama_tokenizer_free(t); return s; }
    *out = t;
    return MAMA_OK;
}

/* tokenizer.json: {"added_tokens": [{"id", "content", "special"}...],
 * "model": {"type": "BPE", "vocab": {...}, "merges": ["a b" | ["a","b"]]}} */
static mama_status mama__tok_from_json(mama_tokenizer *t, const mama_json *root, const char *src) {
    mama__tok_stage st;
    mama_buf scratch;
    mama_status s = MAMA_OK;
    const mama_json *model = mama_json_get(root, "model"), *type, *vocab, *merges, *added;
    size_t i;
    memset(&st, 0, sizeof st);
    memset(&scratch, 0, sizeof scratch);
    st.max_id = -1;
    if (!model || model->type != MAMA_JSON_OBJECT)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: no \"model\" object", src);
    type = mama_json_get(model, "type");
    if (type && (type->type != MAMA_JSON_STRING || strcmp(type->string, "BPE") != 0))
        return MAMA_FAIL(MAMA_ERR_UNSUPPORTED, "%s: model type \"%.32s\" (only BPE is supported)", src,
                         type->type == MAMA_JSON_STRING ? type->string : "?");
    vocab = mama_json_get(model, "vocab");
    merges = mama_json_get(model, "merges");
    added = mama_json_get(root, "added_tokens");
    if (!merges || merges->type != MAMA_JSON_ARRAY)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: model.merges is not an array", src);
    if (added && added->type != MAMA_JSON_ARRAY && added->type != MAMA_JSON_NULL)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: added_tokens is not an array", src);
    s = mama__stage_vocab(&st, &t->bl, vocab, src);
    for (i = 0; s == MAMA_OK && added && added->type == MAMA_JSON_ARRAY && i < added->length; i++) {
        const mama_json *a = &added->children[i], *id = mama_json_get(a, "id"), *content = mama_json_get(a, "content");
        const mama_json *special = mama_json_get(a, "special");
        size_t off = st.bytes.len;
        if (!id || id->type != MAMA_JSON_NUMBER || id->number < 0 || id->number > MAMA__MAX_TOKEN_ID ||
            id->number != (double)(int)id->number || !content || content->type != MAMA_JSON_STRING ||
            content->length == 0) {
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: added_tokens[%zu] needs an integer id and a non-empty content",
                          src, i);
            break;
        }
        s = mama_buf_append(&st.bytes, content->string, content->length);
        if (s == MAMA_OK)
            s = mama__stage_commit(&st, off, (int)id->number,
                                   MAMA__TOK_ADDED |
                                       ((special && special->type == MAMA_JSON_BOOL && special->number != 0)
                                            ? MAMA__TOK_SPECIAL : 0));
    }
    if (s == MAMA_OK) s = mama__tok_finish(&st, t, merges->length, src);
    for (i = 0; s == MAMA_OK && i < merges->length; i++) {
        const mama_json *m = &merges->children[i];
        if (m->type == MAMA_JSON_STRING) {
            const char *sp = (const char *)memchr(m->string, ' ', m->length);
            if (!sp || sp == m->string || (size_t)(sp - m->string) + 1 >= m->length ||
                memchr(sp + 1, ' ', m->length - (size_t)(sp - m->string) - 1)) {
                s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: model.merges[%zu] is not \"a b\"", src, i);
                break;
            }
            s = mama__tok_add_merge(t, m->string, (size_t)(sp - m->string), sp + 1,
                                    m->length - (size_t)(sp - m->string) - 1, &scratch, src, i);
        } else if (m->type == MAMA_JSON_ARRAY && m->length == 2 && m->children[0].type == MAMA_JSON_STRING &&
                   m->children[1].type == MAMA_JSON_STRING) {
            s = mama__tok_add_merge(t, m->children[0].string, m->children[0].length, m->children[1].string,
                                    m->children[1].length, &scratch, src, i);
        } else {
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", src, i);
        }
    }
    mama_buf_free(&scratch);
    mama__stage_free(&st);
    return s;
}

MAMA_API mama_status mama_tokenizer_load_json_memory(mama_tokenizer **out, const char *json, size_t len,
                                                     const char *source_name) {
    mama_tokenizer *t = NULL;
    mama_json *root = NULL;
    mama_status s;
    const char *src = source_name ? source_name : "<tokenizer.json>";
    if (!out || !json) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_load_json_memory: NULL argument");
    *out = NULL;
    s = mama__tok_new(&t);
    if (s == MAMA_OK) s = mama_json_parse(json, len, src, &root);
    if (s == MAMA_OK) s = mama__tok_from_json(t, root, src);
    mama_json_free(root);
    if (s != MAMA_OK) { mama_tokenizer_free(t); return s; }
    *out = t;
    return MAMA_OK;
}

MAMA_API mama_status mama_tokenizer_load_files(mama_tokenizer **out, const char *vocab_json_path,
                                               const char *merges_txt_path) {
    unsigned char *v = NULL, *m = NULL;
    size_t nv = 0, nm = 0;
    mama_status s;
    if (!out || !vocab_json_path || !merges_txt_path)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_load_files: NULL argument");
    *out = NULL;
    s = mama_read_file(vocab_json_path, &v, &nv);
    if (s == MAMA_OK) s = mama_read_file(merges_txt_path, &m, &nm);
    if (s == MAMA_OK) s = mama_tokenizer_load_memory(out, (const char *)v, nv, (const char *)m, nm, vocab_json_path);
    mama_free(v);
    mama_free(m);
    return s;
}

static int mama__tx_file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

/* dir + "/" + name into a mama_alloc'ed string */
static mama_status mama__tx_path_join(const char *dir, const char *name, char **out) {
    size_t nd = strlen(dir), nn = strlen(name);
    int slash = nd > 0 && dir[nd - 1] != '/' && dir[nd - 1] != '\\';
    MAMA_TRY(mama_alloc((void **)out, nd + nn + 2, "path"));
    memcpy(*out, dir, nd);
    if (slash) (*out)[nd] = '/';
    memcpy(*out + nd + (size_t)slash, name, nn + 1);
    return MAMA_OK;
}

static int mama__tx_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

MAMA_API mama_status mama_tokenizer_load(mama_tokenizer **out, const char *path) {
    char *a = NULL, *b = NULL;
    mama_status s;
    if (!out || !path) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_load: NULL argument");
    *out = NULL;
    if (mama__tx_ends_with(path, "vocab.json")) {
        /* merges.txt lives in the vocabulary's directory */
        const char *slash = strrchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) + 1 : 0;
        MAMA_TRY(mama_alloc((void **)&a, n + strlen("merges.txt") + 1, "path"));
        memcpy(a, path, n);
        memcpy(a + n, "merges.txt", strlen("merges.txt") + 1);
        s = mama_tokenizer_load_files(out, path, a);
        mama_free(a);
        return s;
    }
    if (mama__tx_ends_with(path, ".json")) {
        unsigned char *j = NULL;
        size_t nj = 0;
        MAMA_TRY(mama_read_file(path, &j, &nj));
        s = mama_tokenizer_load_json_memory(out, (const char *)j, nj, path);
        mama_free(j);
        return s;
    }
    MAMA_TRY(mama__tx_path_join(path, "tokenizer.json", &a));
    if (mama__tx_file_exists(a)) {
        s = mama_tokenizer_load(out, a);
        mama_free(a);
        return s;
    }
    mama_free(a);
    a = NULL;
    s = mama__tx_path_join(path, "vocab.json", &a);
    if (s == MAMA_OK) s = mama__tx_path_join(path, "merges.txt", &b);
    if (s == MAMA_OK) {
        if (!mama__tx_file_exists(a))
            s = MAMA_FAIL(MAMA_ERR_IO, "%s: no tokenizer.json or vocab.json + merges.txt there", path);
        else
            s = mama_tokenizer_load_files(out, a, b);
    }
    mama_free(a);
    mama_free(b);
    return s;
}

MAMA_API int mama_tokenizer_vocab_size(const mama_tokenizer *t) { return t ? t->n_vocab : 0; }
MAMA_API int mama_tokenizer_num_merges(const mama_tokenizer *t) { return t ? t->n_merges : 0; }
MAMA_API int mama_tokenizer_special_id(const mama_tokenizer *t, mama_special_token which) {
    return (t && (int)which >= 0 && (int)which < MAMA__N_SPECIAL) ? t->special[which] : -1;
}
MAMA_API int mama_tokenizer_bos_id(const mama_tokenizer *t) { return mama_tokenizer_special_id(t, MAMA_TOKEN_BOS); }
MAMA_API int mama_tokenizer_eos_id(const mama_tokenizer *t) { return mama_tokenizer_special_id(t, MAMA_TOKEN_EOS); }
MAMA_API int mama_tokenizer_pad_id(const mama_tokenizer *t) { return mama_tokenizer_special_id(t, MAMA_TOKEN_PAD); }
MAMA_API int mama_tokenizer_sep_id(const mama_tokenizer *t) { return mama_tokenizer_special_id(t, MAMA_TOKEN_SEP); }
MAMA_API int mama_tokenizer_token_id(const mama_tokenizer *t, const char *token, size_t len) {
    return (t && token) ? mama__smap_find(t, token, len) : -1;
}
MAMA_API const char *mama_tokenizer_token_bytes(const mama_tokenizer *t, int id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab || t->tok_len[id] < 0) { if (len) *len = 0; return NULL; }
    if (len) *len = (size_t)t->tok_len[id];
    return t->pool + t->tok_off[id];
}

/* ---- 8.6 Encoding ------------------------------------------------------------------
 * BPE on one pre-tokenized word.  The word starts as one symbol per byte
 * (the byte's token); symbols form a doubly linked list.  A min-heap holds
 * candidate merges keyed by (rank, position): pop the best, skip it if
 * either symbol has changed since it was pushed, else join the two symbols
 * and push the pairs the new symbol forms with its neighbours.  Each merge
 * removes a symbol, so there are at most n-1 merges and 3n pushes:
 * O(n log n) per word even for a megabyte without spaces (the textbook
 * "rescan all pairs after each merge" is O(n^2)).  Same result as Hugging
 * Face's Word::merge_all (lowest rank first, leftmost first on ties). */
typedef struct mama__bpe_cand { int rank, pos, left, right, merged; } mama__bpe_cand;

typedef struct mama__bpe_work {
    int *sym, *prev, *next;
    size_t cap;
    mama__bpe_cand *heap;
    size_t heap_cap, heap_n;
} mama__bpe_work;

static void mama__bpe_work_free(mama__bpe_work *w) {
    mama_free(w->sym); mama_free(w->prev); mama_free(w->next); mama_free(w->heap);
    memset(w, 0, sizeof *w);
}

static mama_status mama__bpe_work_reserve(mama__bpe_work *w, size_t n) {
    if (n > w->cap) {
        size_t c = n < 64 ? 64 : n;
        mama_free(w->sym); mama_free(w->prev); mama_free(w->next); mama_free(w->heap);
        w->sym = w->prev = w->next = NULL;
        w->heap = NULL;
        w->cap = w->heap_cap = 0;
        MAMA_TRY(mama_alloc((void **)&w->sym, c * sizeof(int), "BPE symbols"));
        MAMA_TRY(mama_alloc((void **)&w->prev, c * sizeof(int), "BPE symbols"));
        MAMA_TRY(mama_alloc((void **)&w->next, c * sizeof(int), "BPE symbols"));
        MAMA_TRY(mama_alloc((void **)&w->heap, 3 * c * sizeof(mama__bpe_cand), "BPE heap"));
        w->cap = c;
        w->heap_cap = 3 * c;
    }
    return MAMA_OK;
}

static int mama__tx_cand_less(const mama__bpe_cand *a, const mama__bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void mama__tx_heap_push(mama__bpe_work *w, mama__bpe_cand c) {
    size_t i = w->heap_n++;
    MAMA_ASSERT(w->heap_n <= w->heap_cap);
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!mama__tx_cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static mama__bpe_cand mama__tx_heap_pop(mama__bpe_work *w) {
    mama__bpe_cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const mama__bpe_cand *best = &last;
        if (l < n && mama__tx_cand_less(&w->heap[l], best)) { m = l; best = &w->heap[l]; }
        if (r < n && mama__tx_cand_less(&w->heap[r], best)) { m = r; }
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* Push the merge of symbols at p and next[p], if the pair has one. */
static void mama__bpe_try_push(const mama_tokenizer *t, mama__bpe_work *w, int p) {
    int q = w->next[p];
    uint64_t key;
    size_t slot;
    if (q < 0) return;
    key = ((uint64_t)(uint32_t)w->sym[p] << 32) | (uint32_t)w->sym[q];
    slot = mama__pmap_slot(t, key);
    if (t->pkey[slot] == key) {
        mama__bpe_cand c;
        c.rank = t->prank[slot]; c.pos = p; c.left = w->sym[p]; c.right = w->sym[q]; c.merged = t->pnew[slot];
        mama__tx_heap_push(w, c);
    }
}

typedef struct mama__tx_emit { int *ids; long cap, n; } mama__tx_emit;
static void mama__tx_emit_id(mama__tx_emit *e, int id) {
    if (e->n < e->cap) e->ids[e->n] = id;
    e->n++;
}

static mama_status mama__bpe_word(const mama_tokenizer *t, const unsigned char *s, size_t n, mama__bpe_work *w,
                                  mama__tx_emit *e) {
    size_t i;
    int m = 0, p;
    if (n == 1) { /* the common short cut: one byte, one token */
        if (t->byte_id[s[0]] >= 0) mama__tx_emit_id(e, t->byte_id[s[0]]);
        return MAMA_OK;
    }
    MAMA_TRY(mama__bpe_work_reserve(w, n));
    /* bytes without a token are dropped, as Hugging Face's BPE does
     * without an unk token (a byte-level vocabulary has all 256) */
    for (i = 0; i < n; i++) {
        int id = t->byte_id[s[i]];
        if (id < 0) continue;
        w->sym[m] = id;
        w->prev[m] = m - 1;
        w->next[m] = m + 1;
        m++;
    }
    if (m == 0) return MAMA_OK;
    w->next[m - 1] = -1;
    w->heap_n = 0;
    for (p = 0; p + 1 < m; p++) mama__bpe_try_push(t, w, p);
    while (w->heap_n) {
        mama__bpe_cand c = mama__tx_heap_pop(w);
        int q;
        if (w->sym[c.pos] != c.left) continue;   /* left symbol merged away or changed */
        q = w->next[c.pos];
        if (q < 0 || w->sym[q] != c.right) continue;
        /* join: c.pos takes the merged token, q leaves the list */
        w->sym[c.pos] = c.merged;
        w->next[c.pos] = w->next[q];
        if (w->next[q] >= 0) w->prev[w->next[q]] = c.pos;
        w->sym[q] = -1;
        if (w->prev[c.pos] >= 0) mama__bpe_try_push(t, w, w->prev[c.pos]);
        mama__bpe_try_push(t, w, c.pos);
    }
    for (p = 0; p >= 0; p = w->next[p]) mama__tx_emit_id(e, w->sym[p]);
    return MAMA_OK;
}

typedef struct mama__enc_ctx {
    const mama_tokenizer *t;
    mama__bpe_work *w;
    mama__tx_emit *e;
    mama_status s;
} mama__enc_ctx;

static void mama__enc_piece(const char *piece, size_t len, void *user) {
    mama__enc_ctx *c = (mama__enc_ctx *)user;
    if (c->s == MAMA_OK) c->s = mama__bpe_word(c->t, (const unsigned char *)piece, len, c->w, c->e);
}

/* The added token starting at s[0] (longest), or -1; *n gets its length. */
static int mama__match_added(const mama_tokenizer *t, const char *s, size_t remain, size_t *n) {
    int k;
    if (!t->added_first[(unsigned char)s[0]]) return -1;
    for (k = 0; k < t->n_added; k++) {
        int id = t->added[k];
        size_t l = (size_t)t->tok_len[id];
        if (l <= remain && memcmp(s, t->pool + t->tok_off[id], l) == 0) { *n = l; return id; }
    }
    return -1;
}

/* Added tokens first, then pre-tokenize and BPE what lies between them. */
static mama_status mama__encode_text(const mama_tokenizer *t, const char *s, size_t n, mama__bpe_work *w,
                                     mama__tx_emit *e) {
    size_t start = 0, i = 0;
    mama__enc_ctx c;
    c.t = t; c.w = w; c.e = e; c.s = MAMA_OK;
    while (i < n) {
        size_t l = 0;
        int id = mama__match_added(t, s + i, n - i, &l);
        if (id < 0) { i++; continue; }
        mama_pretokenize(s + start, i - start, mama__enc_piece, &c);
        if (c.s != MAMA_OK) return c.s;
        mama__tx_emit_id(e, id);
        i += l;
        start = i;
    }
    mama_pretokenize(s + start, n - start, mama__enc_piece, &c);
    return c.s;
}

MAMA_API mama_status mama_tokenizer_encode(const mama_tokenizer *t, const char *text, int *ids, int max_ids,
                                           int *n_total) {
    mama__bpe_work w;
    mama__tx_emit e;
    mama_status s;
    if (n_total) *n_total = 0;
    if (!t || !text || max_ids < 0 || (!ids && max_ids > 0))
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_encode: bad argument");
    memset(&w, 0, sizeof w);
    e.ids = ids; e.cap = max_ids; e.n = 0;
    s = mama__encode_text(t, text, strlen(text), &w, &e);
    mama__bpe_work_free(&w);
    if (s != MAMA_OK) return s;
    if (e.n > INT_MAX) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_encode: more than INT_MAX tokens");
    if (n_total) *n_total = (int)e.n;
    return MAMA_OK;
}

/* Right padding and the attention mask after `n` real ids. */
static void mama__pad(const mama_tokenizer *t, long n, int context, int *ids, int *mask, int *n_real) {
    int i, real = n < context ? (int)n : context;
    for (i = real; i < context; i++) ids[i] = t->special[MAMA_TOKEN_PAD];
    if (mask)
        for (i = 0; i < context; i++) mask[i] = i < real;
    if (n_real) *n_real = real;
}

MAMA_API mama_status mama_tokenizer_encode_padded(const mama_tokenizer *t, const char *text, int context,
                                                  int *ids, int *mask, int *n_real) {
    mama__bpe_work w;
    mama__tx_emit e;
    mama_status s;
    if (n_real) *n_real = 0;
    if (!t || !text || context <= 0 || !ids)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_encode_padded: bad argument (context %d)", context);
    memset(&w, 0, sizeof w);
    e.ids = ids; e.cap = context; e.n = 0;
    s = mama__encode_text(t, text, strlen(text), &w, &e);
    mama__bpe_work_free(&w);
    if (s != MAMA_OK) return s;
    mama__pad(t, e.n, context, ids, mask, n_real);
    return MAMA_OK;
}

MAMA_API mama_status mama_tokenizer_encode_caption(const mama_tokenizer *t, const char *caption, int context,
                                                   int *ids, int *mask, int *n_real) {
    mama__bpe_work w;
    mama__tx_emit e;
    mama_status s = MAMA_OK;
    size_t i, start = 0, n;
    if (n_real) *n_real = 0;
    if (!t || !caption || context <= 0 || !ids)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_encode_caption: bad argument (context %d)", context);
    memset(&w, 0, sizeof w);
    e.ids = ids; e.cap = context; e.n = 0;
    n = strlen(caption);
    mama__tx_emit_id(&e, t->special[MAMA_TOKEN_BOS]);
    /* a sentence ends at '.' or ';', which becomes the sep token; the
     * added-token split makes each piece independent, so this equals
     * encoding the text with the sep token written in */
    for (i = 0; i <= n && s == MAMA_OK; i++) {
        if (i < n && caption[i] != '.' && caption[i] != ';') continue;
        s = mama__encode_text(t, caption + start, i - start, &w, &e);
        if (i < n) mama__tx_emit_id(&e, t->special[MAMA_TOKEN_SEP]);
        start = i + 1;
    }
    mama__tx_emit_id(&e, t->special[MAMA_TOKEN_EOS]);
    mama__bpe_work_free(&w);
    if (s != MAMA_OK) return s;
    mama__pad(t, e.n, context, ids, mask, n_real);
    return MAMA_OK;
}

/* ---- 8.7 Decoding ------------------------------------------------------------------ */
MAMA_API mama_status mama_tokenizer_decode(const mama_tokenizer *t, const int *ids, int n, int skip_special,
                                           char *out, size_t cap, size_t *len) {
    size_t total = 0, w = 0;
    int i;
    if (len) *len = 0;
    if (!t || n < 0 || (!ids && n > 0) || (!out && cap))
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_decode: bad argument");
    for (i = 0; i < n; i++) {
        int id = ids[i];
        size_t l;
        if (id < 0 || id >= t->n_vocab || t->tok_len[id] < 0) {
            if (cap) out[0] = 0;
            return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_decode: ids[%d] = %d is not a token (vocabulary %d)",
                             i, id, t->n_vocab);
        }
        if (skip_special && (t->tok_flags[id] & MAMA__TOK_SPECIAL)) continue;
        l = (size_t)t->tok_len[id];
        if (cap && w + 1 < cap) {
            size_t k = l < cap - 1 - w ? l : cap - 1 - w;
            memcpy(out + w, t->pool + t->tok_off[id], k);
            w += k;
        }
        total += l;
    }
    if (cap) out[w] = 0;
    if (len) *len = total;
    if (!out && !cap) return MAMA_OK;
    if (total + 1 > cap)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_decode: %zu bytes do not fit a buffer of %zu", total + 1, cap);
    return MAMA_OK;
}

MAMA_API mama_status mama_tokenizer_decode_alloc(const mama_tokenizer *t, const int *ids, int n, int skip_special,
                                                 char **out) {
    size_t len = 0;
    mama_status s;
    if (!out) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_decode_alloc: NULL out");
    *out = NULL;
    MAMA_TRY(mama_tokenizer_decode(t, ids, n, skip_special, NULL, 0, &len));
    MAMA_TRY(mama_alloc((void **)out, len + 1, "decoded text"));
    s = mama_tokenizer_decode(t, ids, n, skip_special, *out, len + 1, NULL);
    if (s != MAMA_OK) { mama_free(*out); *out = NULL; }
    return s;
}

/* ---- 8.8 Captions (A.6) ---------------------------------------------------------------
 * A fixed-buffer writer that keeps counting past the end, so one pass
 * both measures and writes (snprintf's contract). */
typedef struct mama__tx_sb { char *out; size_t cap, len; } mama__tx_sb;

static void mama__tx_sb_putn(mama__tx_sb *b, const char *s, size_t n) {
    if (b->cap && b->len + 1 < b->cap) {
        size_t k = n < b->cap - 1 - b->len ? n : b->cap - 1 - b->len;
        memcpy(b->out + b->len, s, k);
    }
    b->len += n;
}
static void mama__tx_sb_put(mama__tx_sb *b, const char *s) { mama__tx_sb_putn(b, s, strlen(s)); }

static mama_status mama__tx_sb_finish(mama__tx_sb *b, size_t *len, const char *what) {
    if (len) *len = b->len;
    if (b->cap) b->out[b->len < b->cap ? b->len : b->cap - 1] = 0;
    if (!b->out && !b->cap) return MAMA_OK;
    if (b->len + 1 > b->cap)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: %zu bytes do not fit a buffer of %zu", what, b->len + 1, b->cap);
    return MAMA_OK;
}

static const char mama__birads_letters[8] = "ANBPSMK";
static const char *const mama__finding[7] = {
    "an additional imaging is recommended. ",
    "no significant masses, calcification, or other abnormalities are present. ",
    "a benign finding is present. ",
    "a probably benign finding is present. ",
    "a suspicious abnormality is present. ",
    "a highly suggestive of malignancy is present, a biopsy is recommended. ",
    "a known biopsy-proven malignant mass is present. "};
static const char *const mama__birads_desc[7] = {
    "additional imaging required", "negative", "benign finding", "probably benign finding",
    "suspicious abnormality", "highly suggestive of malignancy", "known biopsy-proven malignancy"};
static const char *const mama__assessment[7] = {
    "Additional imaging is recommended. ", "Negative. ", "Benign. ", "Probably benign. ",
    "Suspicious abnormality. ", "Highly suggestive of malignancy. ", "Known biopsy-proven malignancy. "};
static const char *const mama__density_text[5] = {
    "almost entirely fat", "scattered fibroglandular densities", "heterogeneously dense", "extremely dense",
    "normal male dense"};
static const char mama__tx_unknown[] = "unknown";

MAMA_API void mama_caption_fields_init(mama_caption_fields *f) {
    memset(f, 0, sizeof *f);
    f->age = -1;
    f->density = -1;
    f->birads = 0;
}

static int mama__tx_known(const char *s) { return s && s[0]; }
static const char *mama__tx_or_unknown(const char *s) { return mama__tx_known(s) ? s : mama__tx_unknown; }

static int mama__tx_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
static int mama__tx_ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (mama__tx_lower((unsigned char)*a) != mama__tx_lower((unsigned char)*b)) return 0;
    return *a == *b;
}
static int mama__tx_icontains(const char *hay, const char *needle) {
    size_t n = strlen(needle), i, k;
    for (i = 0; hay[i]; i++) {
        for (k = 0; k < n && hay[i + k] && mama__tx_lower((unsigned char)hay[i + k]) == needle[k]; k++) {}
        if (k == n) return 1;
    }
    return 0;
}

/* BI-RADS letter -> category 0..6; -1 missing; -2 invalid. */
static int mama__birads_category(char letter) {
    const char *p;
    if (letter == 0) return -1;
    p = strchr(mama__birads_letters, (letter >= 'a' && letter <= 'z') ? letter - 32 : letter);
    return p ? (int)(p - mama__birads_letters) : -2;
}

static const char *mama__side_text(const char *side) {
    if (!mama__tx_known(side)) return mama__tx_unknown;
    if (mama__tx_ieq(side, "L") || mama__tx_ieq(side, "left")) return "left";
    if (mama__tx_ieq(side, "R") || mama__tx_ieq(side, "right")) return "right";
    if (mama__tx_ieq(side, "B") || mama__tx_ieq(side, "bilateral")) return "bilateral";
    return side;
}

static const char *mama__ethnicity_text(const char *e) {
    if (e && strcmp(e, mama__tx_unknown) == 0) return mama__tx_unknown;
    if (e && mama__tx_ieq(e, "Hispanic or Latino")) return "Hispanic or Latino";
    return "Non-Hispanic or Latino";
}

static mama_status mama__check_fields(const mama_caption_fields *f) {
    if (!f) return MAMA_FAIL(MAMA_ERR_INVALID, "caption: NULL metadata");
    if (f->density < -1 || f->density > 5)
        return MAMA_FAIL(MAMA_ERR_INVALID, "caption: density %d is not 1..5 (or -1 for missing)", f->density);
    if (mama__birads_category(f->birads) == -2)
        return MAMA_FAIL(MAMA_ERR_INVALID, "caption: BI-RADS letter '%c' is not one of A N B P S M K", f->birads);
    return MAMA_OK;
}

/* Sections "Procedure reported" .. "Image info" (shared by the caption
 * and the zeroshot captions). */
static void mama__caption_prefix(mama__tx_sb *b, const mama_caption_fields *f) {
    char age[32];
    const char *proc = f->procedure;
    mama__tx_sb_put(b, "Procedure reported: ");
    mama__tx_sb_put(b, mama__tx_or_unknown(proc));
    mama__tx_sb_put(b, "; Reason for procedure: ");
    if (mama__tx_known(proc) && mama__tx_icontains(proc, "screen")) mama__tx_sb_put(b, "screening");
    else if (mama__tx_known(proc) && mama__tx_icontains(proc, "diag")) mama__tx_sb_put(b, "diagnostic");
    mama__tx_sb_put(b, "; Patient info: This patient is ");
    mama__tx_sb_put(b, mama__tx_or_unknown(f->race));
    mama__tx_sb_put(b, ", ");
    mama__tx_sb_put(b, mama__ethnicity_text(f->ethnicity));
    mama__tx_sb_put(b, ", and ");
    if (f->age >= 0) { snprintf(age, sizeof age, "%d", f->age); mama__tx_sb_put(b, age); }
    else mama__tx_sb_put(b, mama__tx_unknown);
    mama__tx_sb_put(b, " years old.  Image info: This is a ");
    mama__tx_sb_put(b, mama__tx_or_unknown(f->image_type));
    mama__tx_sb_put(b, " full-field digital mammogram of the ");
    mama__tx_sb_put(b, mama__side_text(f->side));
    mama__tx_sb_put(b, " breast with ");
    mama__tx_sb_put(b, mama__tx_or_unknown(f->view));
    mama__tx_sb_put(b, " view.  ");
}

/* "Breast composition: The breast is X. " [+ extra sentence] */
static void mama__caption_density(mama__tx_sb *b, int density) {
    mama__tx_sb_put(b, "Breast composition: The breast is ");
    mama__tx_sb_put(b, density >= 1 && density <= 5 ? mama__density_text[density - 1] : mama__tx_unknown);
    mama__tx_sb_put(b, ". ");
    if (density == 3 || density == 4) mama__tx_sb_put(b, "This may lower the sensitivity of mammography. ");
}

/* "Impressions: BI-RADS Category c: description. Overall Assessment: ..." */
static void mama__caption_impressions(mama__tx_sb *b, int cat) {
    char num[16];
    mama__tx_sb_put(b, "Impressions: BI-RADS Category ");
    if (cat >= 0) { snprintf(num, sizeof num, "%d", cat); mama__tx_sb_put(b, num); }
    else mama__tx_sb_put(b, mama__tx_unknown);
    mama__tx_sb_put(b, ": ");
    mama__tx_sb_put(b, cat >= 0 ? mama__birads_desc[cat] : mama__tx_unknown);
    mama__tx_sb_put(b, ". Overall Assessment: ");
    mama__tx_sb_put(b, cat >= 0 ? mama__assessment[cat] : "unknown. ");
}

MAMA_API mama_status mama_caption_build(const mama_caption_fields *f, char *out, size_t cap, size_t *len) {
    mama__tx_sb b;
    int cat;
    if (len) *len = 0;
    if (!out && cap) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_caption_build: NULL buffer");
    MAMA_TRY(mama__check_fields(f));
    b.out = out; b.cap = cap; b.len = 0;
    cat = mama__birads_category(f->birads);
    mama__caption_prefix(&b, f);
    mama__caption_density(&b, f->density);
    mama__tx_sb_put(&b, " Findings: The mammogram shows that ");
    mama__tx_sb_put(&b, cat >= 0 ? mama__finding[cat] : "unknown. ");
    if (mama__tx_known(f->mass_shape) && mama__tx_known(f->mass_density)) {
        mama__tx_sb_put(&b, "The mass is ");
        mama__tx_sb_put(&b, f->mass_shape);
        mama__tx_sb_put(&b, " and ");
        mama__tx_sb_put(&b, f->mass_density);
        mama__tx_sb_put(&b, ". ");
    }
    mama__tx_sb_put(&b, " ");
    if (mama__tx_known(f->calc_type) && mama__tx_known(f->calc_distribution)) {
        mama__tx_sb_put(&b, "A ");
        mama__tx_sb_put(&b, f->calc_distribution);
        mama__tx_sb_put(&b, " ");
        mama__tx_sb_put(&b, f->calc_type);
        mama__tx_sb_put(&b, " calcification is present.  ");
    }
    mama__caption_impressions(&b, cat);
    return mama__tx_sb_finish(&b, len, "mama_caption_build");
}

MAMA_API mama_status mama_caption_build_alloc(const mama_caption_fields *f, char **out) {
    size_t len = 0;
    mama_status s;
    if (!out) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_caption_build_alloc: NULL out");
    *out = NULL;
    MAMA_TRY(mama_caption_build(f, NULL, 0, &len));
    MAMA_TRY(mama_alloc((void **)out, len + 1, "caption"));
    s = mama_caption_build(f, *out, len + 1, NULL);
    if (s != MAMA_OK) { mama_free(*out); *out = NULL; }
    return s;
}

MAMA_API void mama_caption_mask(const mama_caption_fields *in, mama_caption_fields *out, float p, mama_rng *rng) {
    float u[6];
    int k;
    for (k = 0; k < 6; k++) u[k] = mama_rng_uniform(rng); /* always six draws */
    if (out != in) *out = *in;
    if (u[0] < p) out->age = -1;
    if (u[1] < p) out->race = mama__tx_unknown;
    if (u[2] < p) out->ethnicity = mama__tx_unknown;
    if (u[3] < p) out->image_type = mama__tx_unknown;
    if (u[4] < p) out->side = mama__tx_unknown;
    if (u[5] < p) out->view = mama__tx_unknown;
}

MAMA_API int mama_caption_count_sentences(const char *caption) {
    int n = 0;
    for (; caption && *caption; caption++) n += (*caption == '.' || *caption == ';');
    return n;
}

MAMA_API mama_status mama_caption_tokenizer_input(const char *caption, char *out, size_t cap, size_t *len) {
    mama__tx_sb b;
    const char *p;
    if (len) *len = 0;
    if (!caption || (!out && cap)) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_caption_tokenizer_input: NULL argument");
    b.out = out; b.cap = cap; b.len = 0;
    mama__tx_sb_put(&b, mama__special_text[MAMA_TOKEN_BOS]);
    for (p = caption; *p; p++) {
        if (*p == '.' || *p == ';') mama__tx_sb_put(&b, mama__special_text[MAMA_TOKEN_SEP]);
        else mama__tx_sb_putn(&b, p, 1);
    }
    mama__tx_sb_put(&b, mama__special_text[MAMA_TOKEN_EOS]);
    return mama__tx_sb_finish(&b, len, "mama_caption_tokenizer_input");
}

/* ---- 8.9 Zeroshot caption sets (A.7) ------------------------------------------------ */
MAMA_API int mama_zeroshot_num_classes(mama_zeroshot_task task) {
    switch (task) {
    case MAMA_ZEROSHOT_BIRADS: return 7;
    case MAMA_ZEROSHOT_DENSITY: return 4;
    case MAMA_ZEROSHOT_CANCER: return 2;
    }
    return 0;
}

MAMA_API mama_status mama_zeroshot_caption(mama_zeroshot_task task, int cls, const mama_caption_fields *f,
                                           char *out, size_t cap, size_t *len) {
    mama__tx_sb b;
    int nc = mama_zeroshot_num_classes(task);
    if (len) *len = 0;
    if (nc == 0 || cls < 0 || cls >= nc)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_zeroshot_caption: class %d of task %d", cls, (int)task);
    if (!out && cap) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_zeroshot_caption: NULL buffer");
    if (task != MAMA_ZEROSHOT_CANCER) MAMA_TRY(mama__check_fields(f));
    b.out = out; b.cap = cap; b.len = 0;
    if (task == MAMA_ZEROSHOT_CANCER) {
        /* RSNA-Mammo: no metadata prefix; the assessment has no period */
        static const char *const fnd[2] = {
            "Cancer negative: overall healthy or just benign finding",
            "Cancer positive: screening image with known biopsy-proven malignancy or suspicious abnormality found"};
        static const char *const cat[2] = {"N or B", "A"};
        static const char *const desc[2] = {
            "Negative or Benign",
            "Additional imaging required with biopsy-proven malignancy or suspicious abnormality found"};
        mama__tx_sb_put(&b, "Findings: The mammogram shows that ");
        mama__tx_sb_put(&b, fnd[cls]);
        mama__tx_sb_put(&b, " Impressions: BI-RADS Category ");
        mama__tx_sb_put(&b, cat[cls]);
        mama__tx_sb_put(&b, ": ");
        mama__tx_sb_put(&b, desc[cls]);
        mama__tx_sb_put(&b, ". Overall Assessment: ");
        mama__tx_sb_put(&b, desc[cls]);
    } else {
        mama__caption_prefix(&b, f);
        if (task == MAMA_ZEROSHOT_DENSITY) {
            mama__caption_density(&b, cls + 1);
        } else {
            mama__tx_sb_put(&b, "Findings: The mammogram shows that ");
            mama__tx_sb_put(&b, mama__finding[cls]);
            mama__tx_sb_put(&b, " ");
            mama__caption_impressions(&b, cls);
        }
    }
    return mama__tx_sb_finish(&b, len, "mama_zeroshot_caption");
}

MAMA_API mama_status mama_zeroshot_caption_alloc(mama_zeroshot_task task, int cls, const mama_caption_fields *f,
                                                 char **out) {
    size_t len = 0;
    mama_status s;
    if (!out) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_zeroshot_caption_alloc: NULL out");
    *out = NULL;
    MAMA_TRY(mama_zeroshot_caption(task, cls, f, NULL, 0, &len));
    MAMA_TRY(mama_alloc((void **)out, len + 1, "zeroshot caption"));
    s = mama_zeroshot_caption(task, cls, f, *out, len + 1, NULL);
    if (s != MAMA_OK) { mama_free(*out); *out = NULL; }
    return s;
}

/* ==========================================================================
 * 9. IMAGES: decoding, Otsu crop, resize, augmentation
 * ==========================================================================
 *
 * stb_image decodes (PNG writing lives in the companion headers mama_plot.h
 * and mama_synth.h).  Unless MAMA_NO_STB_IMAGE is defined, this section
 * compiles the implementation as `static` functions private to this
 * translation unit (so they cannot clash with another copy of stb in the
 * program) whose allocations go through MAMA_MALLOC.  A program that
 * includes stb_image.h itself in the same translation unit, or wants to
 * link its own implementation, defines MAMA_STB_IMAGE_EXTERNAL: then only
 * the header is included here.
 * stb is third-party code that does not build warning-free under
 * -Wall -Wextra -Wpedantic, so its warnings are silenced around the include.
 */
#ifndef MAMA_NO_STB_IMAGE
#ifdef __cplusplus
} /* the stb headers carry their own extern "C" */
#endif
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunused-function"
#pragma clang diagnostic ignored "-Wunused-parameter"
#pragma clang diagnostic ignored "-Wunused-but-set-variable"
#pragma clang diagnostic ignored "-Wsign-compare"
#pragma clang diagnostic ignored "-Wmissing-field-initializers"
#pragma clang diagnostic ignored "-Wimplicit-fallthrough"
#pragma clang diagnostic ignored "-Wcast-qual"
#pragma clang diagnostic ignored "-Wdouble-promotion"
#pragma clang diagnostic ignored "-Wshadow"
#pragma clang diagnostic ignored "-Wconversion"
#pragma clang diagnostic ignored "-Wpedantic"
#pragma clang diagnostic ignored "-Wcomma"
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#elif defined(_MSC_VER)
#pragma warning(push)
#pragma warning(disable : 4996 4244 4267 4456 4457 4100)
#endif
#ifndef MAMA_STB_IMAGE_EXTERNAL
/* Every stbi_* function becomes static: none leaves this object, so a
 * program with its own stb_image links.  stb_image 2.27 (Debian's) declares
 * stbi_set_unpremultiply_on_load_thread but defines it under a misspelt
 * name, which a static declaration turns into an end-of-file warning no
 * pragma can reach; both names are mapped to one, so the misspelt
 * definition serves (and a fixed stb defines it under its own name). */
#define STB_IMAGE_STATIC
#define stbi_set_unpremultiply_on_load_thread mama__stbi_unpremultiply_thread
#define stbi__unpremultiply_on_load_thread mama__stbi_unpremultiply_thread
#define STB_IMAGE_IMPLEMENTATION
#define STBI_MALLOC(sz) MAMA_MALLOC(sz)
#define STBI_REALLOC(p, sz) MAMA_REALLOC(p, sz)
#define STBI_FREE(p) MAMA_FREE(p)
#define STB_IMAGE_WRITE_STATIC /* PNG writing (mama_png_write), static too */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBIW_MALLOC(sz) MAMA_MALLOC(sz)
#define STBIW_REALLOC(p, sz) MAMA_REALLOC(p, sz)
#define STBIW_FREE(p) MAMA_FREE(p)
#endif
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#undef stbi_set_unpremultiply_on_load_thread
#undef stbi__unpremultiply_on_load_thread
#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#elif defined(_MSC_VER)
#pragma warning(pop)
#endif
#ifdef __cplusplus
extern "C" {
#endif
#endif /* MAMA_NO_STB_IMAGE */

/* --------------------------------------------------------------------------
 * 9.1 The image type
 * ------------------------------------------------------------------------ */
MAMA_API mama_status mama_image_alloc(mama_image *im, int w, int h) {
    im->w = im->h = 0;
    im->pix = NULL;
    if (w <= 0 || h <= 0 || (size_t)w > SIZE_MAX / (size_t)h)
        return MAMA_FAIL(MAMA_ERR_INVALID, "image size %d x %d is invalid", w, h);
    MAMA_TRY(mama_calloc((void **)&im->pix, (size_t)w * (size_t)h, "image pixels"));
    im->w = w;
    im->h = h;
    return MAMA_OK;
}
MAMA_API void mama_image_free(mama_image *im) {
    if (!im) return;
    mama_free(im->pix);
    im->pix = NULL;
    im->w = im->h = 0;
}
MAMA_API mama_status mama_image_copy(const mama_image *src, mama_image *dst) {
    MAMA_TRY(mama_image_alloc(dst, src->w, src->h));
    memcpy(dst->pix, src->pix, (size_t)src->w * (size_t)src->h);
    return MAMA_OK;
}
/* Replace *dst by *src (taking ownership), freeing what dst held. */
static void mama__image_move(mama_image *dst, mama_image *src) {
    mama_image_free(dst);
    *dst = *src;
    src->pix = NULL;
    src->w = src->h = 0;
}

/* --------------------------------------------------------------------------
 * 9.2 Decoding
 * ------------------------------------------------------------------------ */

/* PIL's convert("L"): fixed-point ITU-R 601 luma, 16 fractional bits. */
static uint8_t mama__luma8(int r, int g, int b) {
    return (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
}

MAMA_API void mama_rgb_to_grey(const uint8_t *src, int w, int h, int channels, uint8_t *grey) {
    size_t i, n = (size_t)w * (size_t)h;
    for (i = 0; i < n; i++) {
        const uint8_t *p = src + i * (size_t)channels;
        grey[i] = channels >= 3 ? mama__luma8(p[0], p[1], p[2]) : p[0];
    }
}

/* The decode options' values (section 1.9); `what` names the struct in the
 * message ("mama_decode_opts", "mama_dataset_opts.decode"). */
static mama_status mama__decode_opts_check(const mama_decode_opts *o, const char *what) {
    if (!o) return MAMA_OK;
    if (o->bit_depth > 16)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s.bit_depth: %d is not 1..16 (0: the image's maximum)", what,
                         o->bit_depth);
    if (!isfinite(o->window_width) || !isfinite(o->window_center))
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s.window_center/window_width: not finite", what);
    if (o->window_width > 0 && o->window_width < 1)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s.window_width: %g is below 1 (DICOM LINEAR needs >= 1)", what,
                         (double)o->window_width);
    if (o->window_width > 0 && o->bit_depth > 0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: bit_depth (%d) and window_width (%g) are exclusive", what,
                         o->bit_depth, (double)o->window_width);
    return MAMA_OK;
}

#ifndef MAMA_NO_STB_IMAGE
/* The largest side decoded: 0 the default, MAMA_OFF (kept negative when
 * resolved) no limit of ours. */
static int mama__decode_max_side(const mama_decode_opts *o) {
    int m = o ? o->max_side : 0;
    return m == 0 ? MAMA_DECODE_DEFAULT_MAX_SIDE : m < 0 ? INT_MAX : m;
}

/* n 16-bit grey samples to 8 bits by the decode options (checked): a DICOM
 * LINEAR window, a fixed bit depth, or the image's maximum d, as
 * floor(v * 255 / d + 1/2) = (2 * 255 v + d) / (2 d) in integers (exact;
 * d = 65535 gives round(v / 257)). */
static void mama__u16_to_8(const stbi_us *v, size_t n, const mama_decode_opts *o, uint8_t *dst) {
    size_t i;
    if (o && o->window_width > 0) {
        double c = (double)o->window_center - 0.5, w = (double)o->window_width;
        double lo = c - (w - 1) / 2, hi = c + (w - 1) / 2;
        for (i = 0; i < n; i++) {
            double x = (double)v[i], y;
            if (w == 1) { dst[i] = (uint8_t)(x > c ? 255 : 0); continue; }
            if (x <= lo) { dst[i] = 0; continue; }
            if (x > hi) { dst[i] = 255; continue; }
            y = floor(((x - c) / (w - 1) + 0.5) * 255.0 + 0.5);
            dst[i] = (uint8_t)(y < 0 ? 0 : y > 255 ? 255 : y);
        }
    } else {
        unsigned long d = 0;
        if (o && o->bit_depth > 0) d = (1ul << o->bit_depth) - 1;
        else
            for (i = 0; i < n; i++) d = v[i] > d ? v[i] : d;
        for (i = 0; i < n; i++) {
            unsigned long x = v[i] < d ? v[i] : d;
            dst[i] = d ? (uint8_t)((2ul * 255ul * x + d) / (2ul * d)) : 0;
        }
    }
}

/* Binary PGM / PPM (P5 / P6) with samples of two bytes (maxval > 255):
 * the format stores each sample big-endian, but stb_image up to 2.27 (the
 * one in Debian 12) copies the bytes in the host's order, so 1000 = 03 E8
 * would come back as 59395 on x86.  These files are read here instead,
 * whatever stb version is used.  *pix stays NULL when buf is not such a
 * file (stb decodes it); otherwise it gets the w h c samples (mama_alloc). */
static int mama__pnm_space(unsigned char ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r'); }
static mama_status mama__pnm16_read(const unsigned char *buf, size_t len, const char *name, stbi_us **pix, int *w,
                                    int *h, int *c) {
    long v[3] = {0, 0, 0}; /* width, height, maxval */
    size_t pos = 2, i, n;
    int k;
    *pix = NULL;
    if (len < 3 || buf[0] != 'P' || (buf[1] != '5' && buf[1] != '6')) return MAMA_OK;
    for (k = 0; k < 3; k++) {
        for (;;) { /* whitespace and # comments before each number */
            while (pos < len && mama__pnm_space(buf[pos])) pos++;
            if (pos < len && buf[pos] == '#') { while (pos < len && buf[pos] != '\n') pos++; continue; }
            break;
        }
        if (pos >= len || buf[pos] < '0' || buf[pos] > '9') return MAMA_OK; /* stb reports it */
        while (pos < len && buf[pos] >= '0' && buf[pos] <= '9' && v[k] <= 65536) v[k] = 10 * v[k] + (buf[pos++] - '0');
    }
    if (v[2] <= 255) return MAMA_OK; /* one byte a sample: stb reads it right */
    if (v[0] < 1 || v[1] < 1 || v[2] > 65535 || pos >= len || !mama__pnm_space(buf[pos]))
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: damaged PGM/PPM header (width %ld, height %ld, maxval %ld)", name,
                         v[0], v[1], v[2]);
    pos++; /* the single whitespace byte before the samples */
    *c = buf[1] == '5' ? 1 : 3;
    n = (size_t)v[0] * (size_t)v[1] * (size_t)*c;
    if ((len - pos) / 2 < n)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: a PGM/PPM of %ld x %ld needs %zu bytes of samples, the file has %zu",
                         name, v[0], v[1], 2 * n, len - pos);
    MAMA_TRY(mama_alloc((void **)pix, n * sizeof **pix, name));
    for (i = 0; i < n; i++) (*pix)[i] = (stbi_us)((buf[pos + 2 * i] << 8) | buf[pos + 2 * i + 1]);
    *w = (int)v[0];
    *h = (int)v[1];
    return MAMA_OK;
}

/* Decode with stb into 8-bit grey.  16-bit files are read at 16 bits and
 * reduced here (stb's own 16->8 is v >> 8, its own RGB->grey uses coarser
 * weights than PIL; both would shift values by one grey level). */
static mama_status mama__decode(const stbi_uc *buf, int len, const char *name, const mama_decode_opts *o,
                                mama_image *out) {
    int w = 0, h = 0, c = 0;
    size_t i, n;
    stbi_us *p16 = NULL;
    out->w = out->h = 0;
    out->pix = NULL;
    if (stbi_info_from_memory(buf, len, &w, &h, &c) && (w > mama__decode_max_side(o) || h > mama__decode_max_side(o)))
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: the image is %d x %d pixels, larger than the decode limit of %d x %d "
                         "(mama_decode_opts.max_side)", name, w, h, mama__decode_max_side(o), mama__decode_max_side(o));
    MAMA_TRY(mama__pnm16_read(buf, (size_t)len, name, &p16, &w, &h, &c));
    if (p16 || stbi_is_16_bit_from_memory(buf, len)) {
        stbi_us *p = p16 ? p16 : stbi_load_16_from_memory(buf, len, &w, &h, &c, 0);
        if (!p) return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: cannot decode image: %s", name, stbi_failure_reason());
        if (mama_image_alloc(out, w, h) != MAMA_OK) { p16 ? mama_free(p) : stbi_image_free(p); return MAMA_ERR_NOMEM; }
        n = (size_t)w * (size_t)h;
        for (i = 0; i < n && c > 1; i++) { /* grey in place: sample i is read from i * c >= i before p[i] is written */
            const stbi_us *q = p + i * (size_t)c;
            double y = c >= 3 ? 0.299 * q[0] + 0.587 * q[1] + 0.114 * q[2] : (double)q[0];
            p[i] = (stbi_us)(y + 0.5);
        }
        mama__u16_to_8(p, n, o, out->pix);
        if (p16) mama_free(p);
        else stbi_image_free(p);
    } else {
        stbi_uc *p = stbi_load_from_memory(buf, len, &w, &h, &c, 0);
        if (!p) return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: cannot decode image: %s", name, stbi_failure_reason());
        if (mama_image_alloc(out, w, h) != MAMA_OK) { stbi_image_free(p); return MAMA_ERR_NOMEM; }
        if (c == 1) memcpy(out->pix, p, (size_t)w * (size_t)h); /* 5% of a 1024 px decode as a per-pixel loop */
        else mama_rgb_to_grey(p, w, h, c, out->pix);
        stbi_image_free(p);
    }
    return MAMA_OK;
}
#endif

MAMA_API mama_status mama_image_load_memory_opts(const void *data, size_t bytes, const char *name,
                                                 const mama_decode_opts *o, mama_image *out) {
    if (!name) name = "<memory>";
    out->w = out->h = 0;
    out->pix = NULL;
    if (!data || bytes == 0 || bytes > (size_t)INT_MAX)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: empty or oversized image buffer (%zu bytes)", name, bytes);
    MAMA_TRY(mama__decode_opts_check(o, "mama_decode_opts"));
#ifdef MAMA_NO_STB_IMAGE
    return MAMA_FAIL(MAMA_ERR_UNSUPPORTED, "%s: built with MAMA_NO_STB_IMAGE, cannot decode", name);
#else
    return mama__decode((const stbi_uc *)data, (int)bytes, name, o, out);
#endif
}
MAMA_API mama_status mama_image_load_memory(const void *data, size_t bytes, const char *name, mama_image *out) {
    return mama_image_load_memory_opts(data, bytes, name, NULL, out);
}

/* Read a whole file with mama_alloc (so the decoder sees one buffer and
 * allocation failures are reported like every other). */
static mama_status mama__read_file(const char *path, unsigned char **data, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    long n;
    *data = NULL;
    *bytes = 0;
    if (!f) return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot seek", path);
    }
    if (mama_alloc((void **)data, (size_t)n + 1, path) != MAMA_OK) { fclose(f); return MAMA_ERR_NOMEM; }
    if (fread(*data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        mama_free(*data);
        *data = NULL;
        return MAMA_FAIL(MAMA_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    *bytes = (size_t)n;
    return MAMA_OK;
}

MAMA_API mama_status mama_image_load_opts(const char *path, const mama_decode_opts *o, mama_image *out) {
    unsigned char *data;
    size_t n;
    mama_status s;
    out->w = out->h = 0;
    out->pix = NULL;
    MAMA_TRY(mama__decode_opts_check(o, "mama_decode_opts"));
    MAMA_TRY(mama__read_file(path, &data, &n));
    if (n == 0) { mama_free(data); return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: empty file", path); }
    s = mama_image_load_memory_opts(data, n, path, o, out);
    mama_free(data);
    return s;
}
MAMA_API mama_status mama_image_load(const char *path, mama_image *out) {
    return mama_image_load_opts(path, NULL, out);
}

MAMA_API mama_status mama_png_write(const char *path, const uint8_t *pix, int w, int h, int channels) {
    if (!path || !pix || w <= 0 || h <= 0 || channels < 1 || channels > 4)
        return MAMA_FAIL(MAMA_ERR_INVALID, "png write %s: bad arguments (%d x %d x %d)", path ? path : "?", w, h, channels);
#ifdef MAMA_NO_STB_IMAGE
    return MAMA_FAIL(MAMA_ERR_UNSUPPORTED, "%s: built with MAMA_NO_STB_IMAGE, cannot write PNG", path);
#else
    if (w > INT_MAX / channels)
        return MAMA_FAIL(MAMA_ERR_INVALID, "png write %s: rows of %d x %d bytes are too long", path, w, channels);
    if (!stbi_write_png(path, w, h, channels, pix, w * channels))
        return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot write PNG (directory missing, disk full, or out of memory)", path);
    return MAMA_OK;
#endif
}
MAMA_API mama_status mama_image_save_png(const mama_image *im, const char *path) {
    if (!im) return MAMA_FAIL(MAMA_ERR_INVALID, "png write %s: NULL image", path ? path : "?");
    return mama_png_write(path, im->pix, im->w, im->h, 1);
}

/* --------------------------------------------------------------------------
 * 9.3 Resampling
 *
 * Both resamplers are separable: out(x, y) = sum_j wy[y][j] sum_i wx[x][i]
 * in(i, j).  A tap table gives, per output index, the first input index and
 * `taps` weights (zero-padded).  The tables differ:
 *  area:     weight of input cell i = |[i, i+1) n [o*s, (o+1)*s)| / s,
 *            s = in/out >= 1 (the fraction of the output cell it covers);
 *  bilinear: PIL's triangle: centre c = (o + 0.5) s, support r = max(s, 1),
 *            taps i in [int(c - r + 0.5), int(c + r + 0.5)) clipped to the
 *            input, weight tri((i - c + 0.5) / max(s, 1)), renormalised.
 *            For s <= 1 this is the half-pixel bilinear interpolation at
 *            src = (o + 0.5) s - 0.5 with edge clamping.
 * ------------------------------------------------------------------------ */
typedef struct mama__taps {
    int n, taps;
    int *start;
    double *w; /* n * taps */
} mama__taps;

static void mama__taps_free(mama__taps *t) {
    mama_free(t->start);
    mama_free(t->w);
    t->start = NULL;
    t->w = NULL;
}
static mama_status mama__taps_alloc(mama__taps *t, int n, int taps) {
    t->n = n;
    t->taps = taps;
    t->start = NULL;
    t->w = NULL;
    MAMA_TRY(mama_alloc((void **)&t->start, (size_t)n * sizeof(int), "resample tap starts"));
    if (mama_calloc((void **)&t->w, (size_t)n * (size_t)taps * sizeof(double), "resample weights") != MAMA_OK) {
        mama__taps_free(t);
        return MAMA_ERR_NOMEM;
    }
    return MAMA_OK;
}

/* Area taps for in -> out with out < in. */
static mama_status mama__taps_area(mama__taps *t, int in, int out) {
    double s = (double)in / (double)out;
    int o, taps = (int)ceil(s) + 2;
    MAMA_TRY(mama__taps_alloc(t, out, taps));
    for (o = 0; o < out; o++) {
        /* exact rational borders: o*in/out */
        double f0 = (double)o * in / out, f1 = (double)(o + 1) * in / out;
        int i0 = (int)floor(f0), i, k = 0;
        t->start[o] = i0;
        for (i = i0; i < in && (double)i < f1 && k < taps; i++, k++) {
            double lo = f0 > i ? f0 : (double)i, hi = f1 < i + 1 ? f1 : (double)(i + 1);
            t->w[(size_t)o * taps + k] = hi > lo ? (hi - lo) / s : 0.0;
        }
    }
    return MAMA_OK;
}

/* PIL bilinear taps for in -> out (any ratio). */
static mama_status mama__taps_bilinear(mama__taps *t, int in, int out) {
    double s = (double)in / (double)out, fs = s > 1.0 ? s : 1.0, support = fs;
    int o, taps = (int)ceil(support) * 2 + 1;
    MAMA_TRY(mama__taps_alloc(t, out, taps));
    for (o = 0; o < out; o++) {
        double c = (o + 0.5) * s, sum = 0;
        int lo = (int)(c - support + 0.5), hi = (int)(c + support + 0.5), i, k;
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > taps) hi = lo + taps;
        t->start[o] = lo;
        for (i = lo, k = 0; i < hi; i++, k++) {
            double x = fabs((i - c + 0.5) / fs);
            double wgt = x < 1.0 ? 1.0 - x : 0.0;
            t->w[(size_t)o * taps + k] = wgt;
            sum += wgt;
        }
        if (sum > 0)
            for (k = 0; k < hi - lo; k++) t->w[(size_t)o * taps + k] /= sum;
    }
    return MAMA_OK;
}

static uint8_t mama__round_u8(double v) { /* round half up, clamp */
    if (!(v > 0.0)) return 0;
    if (v >= 255.0) return 255;
    return (uint8_t)(v + 0.5);
}

/* Apply tap tables to the box (x0, y0, bw, bh) of src.  round_between: the
 * horizontal pass is rounded to uint8 before the vertical one (PIL). */
static mama_status mama__resample(const mama_image *src, int x0, int y0, const mama__taps *tx,
                                  const mama__taps *ty, int bh, int round_between, mama_image *dst) {
    float *tmp = NULL;
    int W = tx->n, H = ty->n, x, y, k, *nx = NULL, ny;
    mama_image out;
    MAMA_TRY(mama_alloc((void **)&tmp, (size_t)W * (size_t)bh * sizeof(float), "resample rows"));
    if (mama_alloc((void **)&nx, sizeof(int) * (size_t)W, "resample taps") != MAMA_OK ||
        mama_image_alloc(&out, W, H) != MAMA_OK) { mama_free(tmp); mama_free(nx); return MAMA_ERR_NOMEM; }
    /* Taps up to the last nonzero weight: a zero weight adds +0 to a sum of
     * non-negative terms, so the sums are the same bits without the zeros
     * (and without a test per tap). */
    for (x = 0; x < W; x++)
        for (nx[x] = tx->taps; nx[x] > 0 && tx->w[(size_t)x * tx->taps + nx[x] - 1] == 0.0; nx[x]--) {}
    /* horizontal: box rows -> W columns */
    for (y = 0; y < bh; y++) {
        const uint8_t *row = src->pix + (size_t)(y0 + y) * src->w + x0;
        for (x = 0; x < W; x++) {
            const double *w = tx->w + (size_t)x * tx->taps;
            const uint8_t *p = row + tx->start[x];
            double acc = 0;
            for (k = 0; k < nx[x]; k++) acc += w[k] * p[k];
            tmp[(size_t)y * W + x] = round_between ? (float)mama__round_u8(acc) : (float)acc;
        }
    }
    /* vertical */
    for (y = 0; y < H; y++) {
        const double *w = ty->w + (size_t)y * ty->taps;
        const float *col = tmp + (size_t)ty->start[y] * W;
        for (ny = ty->taps; ny > 0 && w[ny - 1] == 0.0; ny--) {}
        for (x = 0; x < W; x++) {
            double acc = 0;
            for (k = 0; k < ny; k++) acc += w[k] * col[(size_t)k * W + x];
            out.pix[(size_t)y * W + x] = mama__round_u8(acc);
        }
    }
    mama_free(tmp);
    mama_free(nx);
    mama__image_move(dst, &out);
    return MAMA_OK;
}

static mama_status mama__check_image(const mama_image *im, const char *what) {
    if (!im || !im->pix || im->w <= 0 || im->h <= 0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: empty image", what);
    return MAMA_OK;
}

MAMA_API mama_status mama_image_resize_area(const mama_image *src, int w, int h, mama_image *dst) {
    mama__taps tx, ty;
    mama_status s;
    MAMA_TRY(mama__check_image(src, "resize_area"));
    if (w <= 0 || h <= 0) return MAMA_FAIL(MAMA_ERR_INVALID, "resize_area: output %d x %d", w, h);
    s = w < src->w ? mama__taps_area(&tx, src->w, w) : mama__taps_bilinear(&tx, src->w, w);
    if (s != MAMA_OK) return s;
    s = h < src->h ? mama__taps_area(&ty, src->h, h) : mama__taps_bilinear(&ty, src->h, h);
    if (s != MAMA_OK) { mama__taps_free(&tx); return s; }
    s = mama__resample(src, 0, 0, &tx, &ty, src->h, 0, dst);
    mama__taps_free(&tx);
    mama__taps_free(&ty);
    return s;
}

MAMA_API mama_status mama_image_resize_bilinear(const mama_image *src, int x0, int y0, int bw, int bh,
                                                int w, int h, mama_image *dst) {
    mama__taps tx, ty;
    mama_status s;
    MAMA_TRY(mama__check_image(src, "resize_bilinear"));
    if (w <= 0 || h <= 0 || bw <= 0 || bh <= 0 || x0 < 0 || y0 < 0 || x0 + bw > src->w || y0 + bh > src->h)
        return MAMA_FAIL(MAMA_ERR_INVALID, "resize_bilinear: box (%d,%d %dx%d) of %dx%d to %dx%d", x0, y0,
                         bw, bh, src->w, src->h, w, h);
    MAMA_TRY(mama__taps_bilinear(&tx, bw, w));
    s = mama__taps_bilinear(&ty, bh, h);
    if (s != MAMA_OK) { mama__taps_free(&tx); return s; }
    s = mama__resample(src, x0, y0, &tx, &ty, bh, 1, dst);
    mama__taps_free(&tx);
    mama__taps_free(&ty);
    return s;
}

/* --------------------------------------------------------------------------
 * 9.4 The deterministic steps: letterbox, Otsu crop, stretch
 * ------------------------------------------------------------------------ */
MAMA_API mama_status mama_image_letterbox(const mama_image *src, int S, mama_image *dst, int placed[4]) {
    int nw, nh, px, py, y;
    mama_image small = {0, 0, NULL}, out;
    MAMA_TRY(mama__check_image(src, "letterbox"));
    if (S <= 0) return MAMA_FAIL(MAMA_ERR_INVALID, "letterbox: size %d", S);
    /* long side -> S; short side truncated (integer arithmetic, exact) */
    if (src->w >= src->h) { nw = S; nh = (int)((long long)src->h * S / src->w); }
    else { nh = S; nw = (int)((long long)src->w * S / src->h); }
    if (nw < 1) nw = 1;
    if (nh < 1) nh = 1;
    MAMA_TRY(mama_image_resize_area(src, nw, nh, &small));
    if (mama_image_alloc(&out, S, S) != MAMA_OK) { mama_image_free(&small); return MAMA_ERR_NOMEM; }
    px = (S - nw) / 2; /* floor on the left/top, the rest (ceil) right/bottom */
    py = (S - nh) / 2;
    for (y = 0; y < nh; y++) memcpy(out.pix + (size_t)(py + y) * S + px, small.pix + (size_t)y * nw, (size_t)nw);
    mama_image_free(&small);
    if (placed) { placed[0] = px; placed[1] = py; placed[2] = nw; placed[3] = nh; }
    mama__image_move(dst, &out);
    return MAMA_OK;
}

MAMA_API int mama_otsu_threshold(const mama_image *im) {
    /* Between-class variance of split t (class 0 = values <= t):
     *   w0 w1 (mu0 - mu1)^2 = (S0 N - S n0)^2 / (N^2 n0 n1)
     * with n0, S0 the count and sum of class 0 and N, S of the image.  The
     * N^2 is common to all t and dropped.  S0*N is exact in double for
     * images below ~6 Mpixel.  "First maximiser": a later t must beat the
     * best by a relative 1e-12, so rounding cannot break exact ties. */
    size_t hist[256], i, n = (size_t)im->w * (size_t)im->h, n0 = 0;
    double S = 0, S0 = 0, best = -1.0;
    int t, thr = -1;
    memset(hist, 0, sizeof hist);
    for (i = 0; i < n; i++) hist[im->pix[i]]++;
    for (t = 0; t < 256; t++) S += (double)t * (double)hist[t];
    for (t = 0; t < 255; t++) {
        double d, v;
        size_t n1;
        n0 += hist[t];
        S0 += (double)t * (double)hist[t];
        n1 = n - n0;
        if (n0 == 0 || n1 == 0) continue;
        d = S0 * (double)n - S * (double)n0;
        v = d * d / ((double)n0 * (double)n1);
        if (v > best * (1.0 + 1e-12) || best < 0) { best = v; thr = t; }
    }
    return thr;
}

MAMA_API int mama_foreground_box(const mama_image *im, int thr, int box[4]) {
    int x, y, x0 = im->w, y0 = im->h, x1 = -1, y1 = -1;
    for (y = 0; y < im->h; y++) {
        const uint8_t *r = im->pix + (size_t)y * im->w;
        for (x = 0; x < im->w; x++)
            if ((int)r[x] > thr) {
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (y < y0) y0 = y;
                y1 = y;
            }
    }
    if (x1 < 0) return 0;
    box[0] = x0; box[1] = y0; box[2] = x1; box[3] = y1;
    return 1;
}

/* Box of step 2 (whole image when there is no threshold or no foreground). */
static void mama__otsu_box(const mama_image *im, int box[4]) {
    int thr = mama_otsu_threshold(im);
    if (thr < 0 || !mama_foreground_box(im, thr, box)) {
        box[0] = 0; box[1] = 0; box[2] = im->w - 1; box[3] = im->h - 1;
    }
}

MAMA_API mama_status mama_image_otsu_crop(const mama_image *src, mama_image *dst, int box[4]) {
    int b[4], y, cw, ch;
    mama_image out;
    MAMA_TRY(mama__check_image(src, "otsu_crop"));
    mama__otsu_box(src, b);
    cw = b[2] - b[0] + 1;
    ch = b[3] - b[1] + 1;
    MAMA_TRY(mama_image_alloc(&out, cw, ch));
    for (y = 0; y < ch; y++) memcpy(out.pix + (size_t)y * cw, src->pix + (size_t)(b[1] + y) * src->w + b[0], (size_t)cw);
    if (box) memcpy(box, b, sizeof b);
    mama__image_move(dst, &out);
    return MAMA_OK;
}

MAMA_API mama_status mama_image_prepare(const mama_image *src, int S, mama_image *dst) {
    mama_image lb = {0, 0, NULL};
    int b[4];
    mama_status s;
    MAMA_TRY(mama_image_letterbox(src, S, &lb, NULL));
    mama__otsu_box(&lb, b);
    /* crop + stretch in one resample: taps never leave the box */
    s = mama_image_resize_bilinear(&lb, b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1, S, S, dst);
    mama_image_free(&lb);
    return s;
}

/* --------------------------------------------------------------------------
 * 9.5 The random steps
 * ------------------------------------------------------------------------ */
static double mama__round_half_even(double x) { /* Python's round() */
    double f = floor(x), d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return fmod(f, 2.0) == 0.0 ? f : f + 1;
}
static float mama__uniform_in(mama_rng *r, float a, float b) { return a + (b - a) * mama_rng_uniform(r); }

MAMA_API void mama_rrc_box(mama_rng *rng, int w, int h, float scale0, float scale1, float ratio0,
                           float ratio1, int attempts, int box[4]) {
    double area = (double)w * h, lr0 = log(ratio0), lr1 = log(ratio1), in_ratio;
    int a, cw, ch;
    for (a = 0; a < attempts; a++) {
        double target = area * mama__uniform_in(rng, scale0, scale1);
        double aspect = exp(lr0 + (lr1 - lr0) * mama_rng_uniform(rng));
        cw = (int)mama__round_half_even(sqrt(target * aspect));
        ch = (int)mama__round_half_even(sqrt(target / aspect));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            box[1] = (int)mama_rng_below(rng, (uint32_t)(h - ch + 1));
            box[0] = (int)mama_rng_below(rng, (uint32_t)(w - cw + 1));
            box[2] = cw;
            box[3] = ch;
            return;
        }
    }
    /* fallback: centre crop with the aspect clamped into the ratio range */
    in_ratio = (double)w / h;
    if (in_ratio < ratio0) { cw = w; ch = (int)mama__round_half_even(cw / (double)ratio0); }
    else if (in_ratio > ratio1) { ch = h; cw = (int)mama__round_half_even(ch * (double)ratio1); }
    else { cw = w; ch = h; }
    if (cw < 1) cw = 1;
    if (ch < 1) ch = 1;
    box[0] = (w - cw) / 2;
    box[1] = (h - ch) / 2;
    box[2] = cw;
    box[3] = ch;
}

MAMA_API void mama_image_hflip(mama_image *im) {
    int x, y;
    for (y = 0; y < im->h; y++) {
        uint8_t *r = im->pix + (size_t)y * im->w;
        for (x = 0; x < im->w / 2; x++) { uint8_t t = r[x]; r[x] = r[im->w - 1 - x]; r[im->w - 1 - x] = t; }
    }
}
MAMA_API void mama_image_vflip(mama_image *im) {
    int x, y;
    for (y = 0; y < im->h / 2; y++) {
        uint8_t *a = im->pix + (size_t)y * im->w, *b = im->pix + (size_t)(im->h - 1 - y) * im->w;
        for (x = 0; x < im->w; x++) { uint8_t t = a[x]; a[x] = b[x]; b[x] = t; }
    }
}

/* PIL's ImagingBlend(in1, in2, alpha) per pixel: in1 + alpha (in2 - in1) in
 * single precision, truncated; clipped only when alpha is outside [0, 1]
 * (inside, the result cannot leave the range). */
static uint8_t mama__pil_blend(int in1, int in2, float alpha) {
    float v = (float)in1 + alpha * (float)(in2 - in1);
    if (alpha >= 0.0f && alpha <= 1.0f) return (uint8_t)v;
    if (v <= 0.0f) return 0;
    if (v >= 255.0f) return 255;
    return (uint8_t)v;
}
MAMA_API void mama_image_brightness(mama_image *im, float f) {
    size_t i, n = (size_t)im->w * (size_t)im->h;
    uint8_t lut[256];
    int v;
    for (v = 0; v < 256; v++) lut[v] = mama__pil_blend(0, v, f);
    for (i = 0; i < n; i++) im->pix[i] = lut[im->pix[i]];
}
MAMA_API void mama_image_contrast(mama_image *im, float f) {
    size_t i, n = (size_t)im->w * (size_t)im->h;
    double sum = 0;
    uint8_t lut[256];
    int v, mean;
    for (i = 0; i < n; i++) sum += im->pix[i];
    mean = (int)(sum / (double)n + 0.5); /* PIL: int(ImageStat.mean + 0.5) */
    for (v = 0; v < 256; v++) lut[v] = mama__pil_blend(mean, v, f);
    for (i = 0; i < n; i++) im->pix[i] = lut[im->pix[i]];
}

MAMA_API void mama_gaussian_kernel1d(int k, float sigma, float *w) {
    double half = (k - 1) * 0.5, sum = 0, tmp;
    int i;
    for (i = 0; i < k; i++) {
        /* torch.linspace(-half, half, k) in float32, pdf in float32 */
        double x = -half + (k > 1 ? (2.0 * half) * i / (k - 1) : 0.0);
        tmp = exp(-0.5 * (x / sigma) * (x / sigma));
        w[i] = (float)tmp;
        sum += tmp;
    }
    for (i = 0; i < k; i++) w[i] = (float)((double)w[i] / sum);
}

/* reflect index into [0, n): -1 -> 1, n -> n-2 (no edge repeat) */
static int mama__reflect(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * (n - 1) - i;
    }
    return i;
}
static uint8_t mama__round_even_u8(double v) {
    double r;
    if (!(v > 0.0)) return 0;
    if (v >= 255.0) return 255;
    r = mama__round_half_even(v);
    return (uint8_t)r;
}

MAMA_API mama_status mama_image_gaussian_blur(mama_image *im, int k, float sigma) {
    float *wk = NULL, *tmp = NULL;
    int W = im->w, H = im->h, x, y, j, half = k / 2;
    MAMA_TRY(mama__check_image(im, "gaussian_blur"));
    if (k < 1 || (k & 1) == 0 || !(sigma > 0))
        return MAMA_FAIL(MAMA_ERR_INVALID, "gaussian_blur: kernel %d must be odd and positive, sigma %g > 0", k, (double)sigma);
    MAMA_TRY(mama_alloc((void **)&wk, (size_t)k * sizeof(float), "blur kernel"));
    if (mama_alloc((void **)&tmp, (size_t)W * (size_t)H * sizeof(float), "blur rows") != MAMA_OK) {
        mama_free(wk);
        return MAMA_ERR_NOMEM;
    }
    mama_gaussian_kernel1d(k, sigma, wk);
    for (y = 0; y < H; y++) {
        const uint8_t *r = im->pix + (size_t)y * W;
        for (x = 0; x < W; x++) {
            double acc = 0;
            for (j = 0; j < k; j++) acc += (double)wk[j] * r[mama__reflect(x + j - half, W)];
            tmp[(size_t)y * W + x] = (float)acc;
        }
    }
    for (y = 0; y < H; y++)
        for (x = 0; x < W; x++) {
            double acc = 0;
            for (j = 0; j < k; j++) acc += (double)wk[j] * tmp[(size_t)mama__reflect(y + j - half, H) * W + x];
            im->pix[(size_t)y * W + x] = mama__round_even_u8(acc);
        }
    mama_free(wk);
    mama_free(tmp);
    return MAMA_OK;
}

MAMA_API void mama_image_to_tensor(const mama_image *im, float mean, float std, int channels, float *out) {
    size_t i, n = (size_t)im->w * (size_t)im->h;
    float lut[256];
    int v, c;
    for (v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean) / std;
    for (i = 0; i < n; i++) out[i] = lut[im->pix[i]];
    for (c = 1; c < channels; c++) memcpy(out + (size_t)c * n, out, n * sizeof(float));
}

/* The options rule (6.1b) on every field, then the checks. */
static mama_status mama__augment_opts_resolve(const mama_augment_opts *in, mama_augment_opts *o) {
    mama_augment_opts z;
    if (in) z = *in; else memset(&z, 0, sizeof z); /* (in may be o) */
    in = &z;
    memset(o, 0, sizeof *o);
    o->size = mama__opt_int(in->size, MAMA_AUGMENT_DEFAULT_SIZE);
    o->rrc = mama__opt_flag(in->rrc, 1);
    o->rrc_scale[0] = mama__opt_float(in->rrc_scale[0], MAMA_AUGMENT_DEFAULT_RRC_SCALE0);
    o->rrc_scale[1] = mama__opt_float(in->rrc_scale[1], MAMA_AUGMENT_DEFAULT_RRC_SCALE1);
    o->rrc_ratio[0] = mama__opt_float(in->rrc_ratio[0], MAMA_AUGMENT_DEFAULT_RRC_RATIO0);
    o->rrc_ratio[1] = mama__opt_float(in->rrc_ratio[1], MAMA_AUGMENT_DEFAULT_RRC_RATIO1);
    o->rrc_attempts = mama__opt_int(in->rrc_attempts, MAMA_AUGMENT_DEFAULT_RRC_ATTEMPTS);
    o->hflip_p = mama__opt_float(in->hflip_p, MAMA_AUGMENT_DEFAULT_FLIP_P);
    o->vflip_p = mama__opt_float(in->vflip_p, MAMA_AUGMENT_DEFAULT_FLIP_P);
    o->jitter = mama__opt_flag(in->jitter, 1);
    o->jitter_p = mama__opt_float(in->jitter_p, MAMA_AUGMENT_DEFAULT_JITTER_P);
    o->brightness[0] = mama__opt_float(in->brightness[0], MAMA_AUGMENT_DEFAULT_BRIGHTNESS0);
    o->brightness[1] = mama__opt_float(in->brightness[1], MAMA_AUGMENT_DEFAULT_BRIGHTNESS1);
    o->contrast[0] = mama__opt_float(in->contrast[0], MAMA_AUGMENT_DEFAULT_CONTRAST0);
    o->contrast[1] = mama__opt_float(in->contrast[1], MAMA_AUGMENT_DEFAULT_CONTRAST1);
    o->jitter_random_order = mama__opt_flag(in->jitter_random_order, 1);
    o->blur = mama__opt_flag(in->blur, 1);
    o->blur_p = mama__opt_float(in->blur_p, MAMA_AUGMENT_DEFAULT_BLUR_P);
    o->blur_kernel = mama__opt_int(in->blur_kernel, MAMA_AUGMENT_DEFAULT_BLUR_KERNEL);
    o->blur_sigma[0] = mama__opt_float(in->blur_sigma[0], MAMA_AUGMENT_DEFAULT_BLUR_SIGMA0);
    o->blur_sigma[1] = mama__opt_float(in->blur_sigma[1], MAMA_AUGMENT_DEFAULT_BLUR_SIGMA1);
    o->mean = mama__opt_float(in->mean, MAMA_AUGMENT_DEFAULT_MEAN);
    o->std = mama__opt_float(in->std, MAMA_AUGMENT_DEFAULT_STD);
    if (o->size < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "augment: size must be >= 1");
    if (!(o->rrc_scale[0] <= o->rrc_scale[1] && o->rrc_scale[1] > 0) ||
        !(o->rrc_ratio[0] > 0 && o->rrc_ratio[0] <= o->rrc_ratio[1]))
        return MAMA_FAIL(MAMA_ERR_INVALID, "augment: rrc_scale [%g, %g] or rrc_ratio [%g, %g] is not a range",
                         (double)o->rrc_scale[0], (double)o->rrc_scale[1], (double)o->rrc_ratio[0],
                         (double)o->rrc_ratio[1]);
    if (!mama__opt_prob_ok(o->hflip_p) || !mama__opt_prob_ok(o->vflip_p) || !mama__opt_prob_ok(o->jitter_p) ||
        !mama__opt_prob_ok(o->blur_p))
        return MAMA_FAIL(MAMA_ERR_INVALID, "augment: hflip_p, vflip_p, jitter_p and blur_p must lie in [0, 1]");
    if (!(o->brightness[0] <= o->brightness[1]) || !(o->contrast[0] <= o->contrast[1]))
        return MAMA_FAIL(MAMA_ERR_INVALID, "augment: brightness and contrast must be ranges lo <= hi");
    if (o->blur_kernel % 2 == 0 || !(o->blur_sigma[0] > 0 && o->blur_sigma[0] <= o->blur_sigma[1]))
        return MAMA_FAIL(MAMA_ERR_INVALID, "augment: blur_kernel %d must be odd and blur_sigma [%g, %g] a positive "
                         "range", o->blur_kernel, (double)o->blur_sigma[0], (double)o->blur_sigma[1]);
    if (!(o->std > 0) || !(o->mean == o->mean))
        return MAMA_FAIL(MAMA_ERR_INVALID, "augment: std must be > 0 (got %g)", (double)o->std);
    return MAMA_OK;
}

MAMA_API void mama_augment_opts_default(mama_augment_opts *o) {
    mama__augment_opts_resolve(NULL, o);
}

MAMA_API mama_status mama_augment_preset(mama_augment_opts *o, const char *name) {
    const char *n = name ? name : "";
    memset(o, 0, sizeof *o);
    if (!strcmp(n, "tiny") || !strcmp(n, "small")) n = "light";
    else if (!strcmp(n, "base")) n = "paper";
    if (!strcmp(n, "paper")) return MAMA_OK;
    if (!strcmp(n, "light")) {
        o->rrc_scale[0] = 0.5f;
        o->jitter = o->blur = MAMA_OFF;
        return MAMA_OK;
    }
    if (!strcmp(n, "none")) {
        o->rrc = o->jitter = o->blur = MAMA_OFF;
        o->hflip_p = o->vflip_p = MAMA_OFF;
        return MAMA_OK;
    }
    return MAMA_FAIL(MAMA_ERR_INVALID, "unknown augmentation set '%s' (expected paper, light, none, or a config "
                     "preset: tiny, small, base)", n);
}

/* Steps 4-7 with resolved options (switches 0/1, zeros meant). */
static mama_status mama__image_augment(const mama_image *prepared, const mama_augment_opts *o, mama_rng *rng,
                                       mama_image *dst) {
    int S = o->size, box[4];
    mama_image cur = {0, 0, NULL};
    MAMA_TRY(mama__check_image(prepared, "augment"));
    if (!rng) return MAMA_FAIL(MAMA_ERR_INVALID, "augment: rng is NULL");
    /* 4. RandomResizedCrop (or a plain copy/resize to S when disabled) */
    if (o->rrc) {
        mama_rrc_box(rng, prepared->w, prepared->h, o->rrc_scale[0], o->rrc_scale[1], o->rrc_ratio[0],
                     o->rrc_ratio[1], o->rrc_attempts, box);
        MAMA_TRY(mama_image_resize_bilinear(prepared, box[0], box[1], box[2], box[3], S, S, &cur));
    } else if (prepared->w == S && prepared->h == S) {
        MAMA_TRY(mama_image_copy(prepared, &cur));
    } else {
        MAMA_TRY(mama_image_resize_bilinear(prepared, 0, 0, prepared->w, prepared->h, S, S, &cur));
    }
    /* 5. flips */
    if (o->hflip_p > 0 && mama_rng_uniform(rng) < o->hflip_p) mama_image_hflip(&cur);
    if (o->vflip_p > 0 && mama_rng_uniform(rng) < o->vflip_p) mama_image_vflip(&cur);
    /* 6. jitter: RandomApply(ColorJitter) */
    if (o->jitter && mama_rng_uniform(rng) < o->jitter_p) {
        int contrast_first = o->jitter_random_order ? (int)mama_rng_below(rng, 2) : 0;
        float fb = mama__uniform_in(rng, o->brightness[0], o->brightness[1]);
        float fc = mama__uniform_in(rng, o->contrast[0], o->contrast[1]);
        if (contrast_first) { mama_image_contrast(&cur, fc); mama_image_brightness(&cur, fb); }
        else { mama_image_brightness(&cur, fb); mama_image_contrast(&cur, fc); }
    }
    /* 7. blur */
    if (o->blur && mama_rng_uniform(rng) < o->blur_p) {
        float sigma = mama__uniform_in(rng, o->blur_sigma[0], o->blur_sigma[1]);
        mama_status s = mama_image_gaussian_blur(&cur, o->blur_kernel, sigma);
        if (s != MAMA_OK) { mama_image_free(&cur); return s; }
    }
    mama__image_move(dst, &cur);
    return MAMA_OK;
}

MAMA_API mama_status mama_image_augment(const mama_image *prepared, const mama_augment_opts *o, mama_rng *rng,
                                        mama_image *dst) {
    mama_augment_opts ro;
    MAMA_TRY(mama__augment_opts_resolve(o, &ro));
    return mama__image_augment(prepared, &ro, rng, dst);
}

MAMA_API mama_status mama_image_pipeline(const mama_image *src, const mama_augment_opts *opts, int train,
                                         mama_rng *rng, int channels, float *out) {
    mama_image prep = {0, 0, NULL}, aug = {0, 0, NULL};
    mama_augment_opts ro;
    const mama_augment_opts *o = &ro;
    mama_status s;
    if (!out || channels < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "image_pipeline: bad arguments");
    MAMA_TRY(mama__augment_opts_resolve(opts, &ro));
    MAMA_TRY(mama_image_prepare(src, o->size, &prep));
    if (train) {
        s = mama__image_augment(&prep, o, rng, &aug);
        mama_image_free(&prep);
        if (s != MAMA_OK) return s;
        mama_image_to_tensor(&aug, o->mean, o->std, channels, out);
        mama_image_free(&aug);
    } else {
        mama_image_to_tensor(&prep, o->mean, o->std, channels, out);
        mama_image_free(&prep);
    }
    return MAMA_OK;
}

/* ==========================================================================
 * 10. DATA: datasets, batches, the loader thread
 * ========================================================================== */

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h> /* isatty: the live progress line (11.2) */
#define MAMA__HAVE_ISATTY 1
#if !defined(MAMA_NO_THREADS)
#include <pthread.h>
#define MAMA_HAVE_PTHREADS 1
#endif
#endif

struct mama_dataset {
    mama_manifest man;
    mama_tokenizer *tok;
    mama_dataset_opts opts;
    int image_size, in_chans, context;
    int *split_idx[3], split_n[3];
    int *pre_idx[3], pre_n[3];   /* what pretraining reads: split_idx less incomplete records */
    mama_image *cache;           /* prepared images, when opts.cache */
    unsigned char *bad;          /* 1: image could not be decoded, 2: not 2D, 3: duplicate, 4: split not in
                                    opts.splits (all in no split) */
    unsigned char *pre;          /* 1: record is in pre_idx of its split */
    int skipped;
    mama_dataset_skips skips;
};

/* The options rule (6.1b) on every field. */
static mama_status mama__dataset_opts_resolve(const mama_dataset_opts *in, mama_dataset_opts *o) {
    mama_dataset_opts z;
    if (in) z = *in; else memset(&z, 0, sizeof z); /* (in may be o) */
    in = &z;
    memset(o, 0, sizeof *o);
    o->manifest = in->manifest;
    o->tokenizer = in->tokenizer;
    o->skip_bad_rows = mama__opt_flag(in->skip_bad_rows, 0);
    o->cache = mama__opt_flag(in->cache, 1);
    o->only_2d = mama__opt_flag(in->only_2d, 1);
    o->keep_incomplete = mama__opt_flag(in->keep_incomplete, 0);
    o->allow_split_overlap = mama__opt_flag(in->allow_split_overlap, 0);
    o->decode = in->decode;
    if (!o->decode.max_side) o->decode.max_side = MAMA_DECODE_DEFAULT_MAX_SIDE;
    o->splits = in->splits ? in->splits : 7;
    if (o->splits & ~7) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_dataset_opts.splits: 0x%x has bits other than "
                                         "1 << MAMA_SPLIT_TRAIN/VAL/TEST", (unsigned)o->splits);
    o->aug = in->aug;
    if (o->aug.size <= 0) o->aug.size = MAMA_AUGMENT_DEFAULT_SIZE;
    MAMA_TRY(mama__augment_opts_resolve(&o->aug, &o->aug));
    if (in->aug.size <= 0) o->aug.size = 0; /* the model's, set by mama_dataset_create */
    return mama__decode_opts_check(&o->decode, "mama_dataset_opts.decode");
}

MAMA_API void mama_dataset_opts_default(mama_dataset_opts *o) {
    mama__dataset_opts_resolve(NULL, o);
}
MAMA_API const mama_manifest *mama_dataset_manifest(const mama_dataset *d) { return &d->man; }
MAMA_API const mama_tokenizer *mama_dataset_tokenizer(const mama_dataset *d) { return d->tok; }
MAMA_API int mama_dataset_skipped(const mama_dataset *d) { return d->skipped + d->man.skipped; }
MAMA_API const mama_dataset_skips *mama_dataset_skipped_reasons(const mama_dataset *d) { return &d->skips; }
MAMA_API int mama_dataset_split(const mama_dataset *d, mama_split s, const int **indices) {
    if (indices) *indices = d->split_idx[s];
    return d->split_n[s];
}
MAMA_API int mama_dataset_pretrain_split(const mama_dataset *d, mama_split s, const int **indices) {
    if (indices) *indices = d->pre_idx[s];
    return d->pre_n[s];
}

/* SPEC A.6/A.7: the reference drops from pretraining the images whose
 * caption lacks the procedure, its reason, the density or the BI-RADS
 * letter (density 5 is a valid caption). */
MAMA_API int mama_record_complete(const mama_record *r) {
    const char *p = r->procedure;
    if (mama__is_unknown(p) || !p[0]) return 0;
    if (!mama__tx_icontains(p, "screen") && !mama__tx_icontains(p, "diag")) return 0;
    if (r->density < 1 || r->density > 5) return 0;
    return r->birads && strlen(r->birads) == 1 && strchr("ANBPSMK", r->birads[0]) != NULL;
}

/* image_type passes only_2d: "2D" in any case, or unknown. */
static int mama__is_2d(const char *t) { return mama__is_unknown(t) || mama__ieq(t, "2D"); }

MAMA_API int mama_dataset_other_view(const mama_dataset *d, int i, mama_rng *rng) {
    int n, k, c = 0, split = d->man.records[i].split;
    const int *mem = mama_manifest_study_of(&d->man, i, &n);
    for (k = 0; k < n; k++) c += mem[k] != i && d->pre[mem[k]] && d->man.records[mem[k]].split == split;
    if (c == 0) return -1;
    c = (int)mama_rng_below(rng, (uint32_t)c);
    for (k = 0; k < n; k++)
        if (mem[k] != i && d->pre[mem[k]] && d->man.records[mem[k]].split == split && c-- == 0) return mem[k];
    return -1;
}

MAMA_API void mama_dataset_free(mama_dataset *d) {
    int i;
    if (!d) return;
    if (d->cache)
        for (i = 0; i < d->man.count; i++) mama_image_free(&d->cache[i]);
    mama_free(d->cache);
    mama_free(d->bad);
    mama_free(d->pre);
    for (i = 0; i < 3; i++) { mama_free(d->split_idx[i]); mama_free(d->pre_idx[i]); }
    mama_tokenizer_free(d->tok);
    mama_manifest_free(&d->man);
    mama_free(d);
}

/* Record orders by every field (so identical rows are neighbours) and by
 * patient, ties by row, for the checks below. */
static int mama__mf_cmp_fields(int i, int j) {
    int k, c;
    const mama_record *x = &mama__mf_ctx->records[i], *y = &mama__mf_ctx->records[j];
    const char *xs[14] = {x->path, x->patient, x->study, x->side, x->view, x->procedure, x->race, x->ethnicity,
                          x->image_type, x->birads, x->mass_shape, x->mass_density, x->calc_type, x->calc_distribution};
    const char *ys[14] = {y->path, y->patient, y->study, y->side, y->view, y->procedure, y->race, y->ethnicity,
                          y->image_type, y->birads, y->mass_shape, y->mass_density, y->calc_type, y->calc_distribution};
    const int xn[4] = {x->age, x->density, x->cancer, x->split}, yn[4] = {y->age, y->density, y->cancer, y->split};
    for (k = 0; k < 14; k++) if ((c = strcmp(xs[k], ys[k])) != 0) return c;
    for (k = 0; k < 4; k++) if (xn[k] != yn[k]) return xn[k] < yn[k] ? -1 : 1;
    return 0;
}
static int mama__mf_cmp_row(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b, c = mama__mf_cmp_fields(i, j);
    return c ? c : (i > j) - (i < j);
}
static int mama__mf_cmp_patient(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    int c = strcmp(mama__mf_ctx->records[i].patient, mama__mf_ctx->records[j].patient);
    return c ? c : (i > j) - (i < j);
}

/* Duplicated rows (bad[] = 3, counted) and patients in more than one split
 * (mama_dataset_skips); not-2D rows (bad[] = 2) are already out. */
static mama_status mama__dataset_check_rows(mama_dataset *d) {
    const mama_manifest *m = &d->man;
    int n = m->count, *ord = NULL, i, j, first[3] = {-1, -1, -1};
    MAMA_TRY(mama_alloc((void **)&ord, sizeof(int) * (size_t)(n + 1), "manifest checks"));
    mama__mf_ctx = m;
    for (i = 0; i < n; i++) ord[i] = i;
    qsort(ord, (size_t)n, sizeof(int), mama__mf_cmp_row);
    for (i = 1; i < n; i++)
        if (!d->bad[ord[i]] && !mama__mf_cmp_fields(ord[i], ord[i - 1])) {
            d->bad[ord[i]] = 3;
            d->skips.duplicates++;
        }
    for (i = 0; i < n; i++) ord[i] = i;
    qsort(ord, (size_t)n, sizeof(int), mama__mf_cmp_patient);
    for (i = 0; i < n; i = j) {
        int at[3] = {-1, -1, -1}, k, c = 0;
        for (j = i; j < n && !strcmp(m->records[ord[j]].patient, m->records[ord[i]].patient); j++) {
            int sp = m->records[ord[j]].split;
            if (d->bad[ord[j]] != 2 && sp >= 0 && sp < 3 && at[sp] < 0) at[sp] = ord[j];
        }
        for (k = 0; k < 3; k++) c += at[k] >= 0;
        if (c < 2 || mama__is_unknown(m->records[ord[i]].patient)) continue;
        if (d->skips.overlap_patients++ == 0) memcpy(first, at, sizeof first);
    }
    mama_free(ord);
    if (d->skips.overlap_patients && !d->opts.allow_split_overlap) {
        int a = first[0] >= 0 ? first[0] : first[1], b = first[0] >= 0 && first[1] >= 0 ? first[1] : first[2];
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: %d patient(s) have images in more than one split, so evaluation would "
                         "see training patients; first: patient \"%s\" in %s (line %d) and %s (line %d); accept it "
                         "with mama_dataset_opts.allow_split_overlap (CLI: --allow-split-overlap)", m->path,
                         d->skips.overlap_patients, m->records[a].patient, mama_split_name(m->records[a].split),
                         m->records[a].line, mama_split_name(m->records[b].split), m->records[b].line);
    }
    return MAMA_OK;
}

/* Steps 1-3 of the pipeline (decode, letterbox, Otsu crop, stretch). */
static mama_status mama__prepare_record(mama_dataset *d, int i, mama_image *out) {
    mama_image raw;
    mama_status s;
    memset(&raw, 0, sizeof raw);
    MAMA_TRY(mama_image_load_opts(d->man.records[i].path, &d->opts.decode, &raw));
    s = mama_image_prepare(&raw, d->image_size, out);
    mama_image_free(&raw);
    return s;
}

MAMA_API mama_status mama_tokenizer_check_config(const mama_tokenizer *t, const char *t_name, const mama_config *c,
                                                 const char *c_name) {
    static const struct { mama_special_token tok; const char *name; } specials[4] = {
        {MAMA_TOKEN_BOS, "bos_id"}, {MAMA_TOKEN_EOS, "eos_id"}, {MAMA_TOKEN_PAD, "pad_id"}, {MAMA_TOKEN_SEP, "sep_id"}};
    int k;
    if (!t || !c) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_check_config: NULL tokenizer or config");
    if (!t_name) t_name = "the tokenizer";
    if (!c_name) c_name = "the model's config";
    if (mama_tokenizer_vocab_size(t) > c->vocab_size)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s has %d tokens but %s has vocab_size %d: not the "
                         "tokenizer this model was made for", t_name, mama_tokenizer_vocab_size(t), c_name,
                         c->vocab_size);
    for (k = 0; k < 4; k++) {
        int want = k == 0 ? c->bos_id : k == 1 ? c->eos_id : k == 2 ? c->pad_id : c->sep_id;
        int have = mama_tokenizer_special_id(t, specials[k].tok);
        if (have != want)
            return MAMA_FAIL(MAMA_ERR_SHAPE, "%s gives %s the id %d but %s has %s %d: not the tokenizer "
                             "this model was made for", t_name, mama_special_token_text(specials[k].tok), have, c_name,
                             specials[k].name, want);
    }
    return MAMA_OK;
}

static uint64_t mama__mix2(uint64_t a, uint64_t b);
MAMA_API mama_status mama_tokenizer_fingerprint(const mama_tokenizer *t, char *out, size_t cap) {
    uint64_t h = 1469598103934665603ull, mh = 0;
    size_t i;
    int k;
    if (!t || !out || cap < 40) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_fingerprint: NULL argument or cap < 40");
    for (k = 0; k < t->n_vocab; k++) { /* tokens in id order: length, bytes */
        h = mama__mix2(h, (uint64_t)(int64_t)t->tok_len[k]);
        if (t->tok_len[k] > 0) h = mama__mix2(h, mama__tx_fnv1a(t->pool + t->tok_off[k], (size_t)t->tok_len[k]));
    }
    for (i = 0; i < t->pmap_cap; i++) /* merges, in any slot order: a sum */
        if (t->pkey[i] != UINT64_MAX) mh += mama__mix2(mama__mix2(t->pkey[i], (uint64_t)t->prank[i]), (uint64_t)t->pnew[i]);
    h = mama__mix2(h, mh);
    for (k = 0; k < MAMA__N_SPECIAL; k++) h = mama__mix2(h, (uint64_t)(int64_t)t->special[k]);
    snprintf(out, cap, "v%d-%016llx", t->n_vocab, (unsigned long long)h);
    return MAMA_OK;
}

MAMA_API mama_status mama_model_set_tokenizer(mama_model *m, const char *path, const mama_tokenizer *t) {
    if (!m || !t) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_set_tokenizer: NULL model or tokenizer");
    if (path && strlen(path) >= sizeof m->tok_path)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_set_tokenizer: path of %zu bytes (at most %zu)", strlen(path),
                         sizeof m->tok_path - 1);
    snprintf(m->tok_path, sizeof m->tok_path, "%s", path ? path : "");
    m->tok_abs[0] = 0;
#ifdef MAMA__POSIX
    if (path && path[0] && path[0] != '/' && getcwd(m->tok_abs, sizeof m->tok_abs - 1) &&
        strlen(m->tok_abs) + strlen(path) + 2 <= sizeof m->tok_abs)
        strcat(strcat(m->tok_abs, "/"), path);
    else
        m->tok_abs[0] = 0;
#endif
    return mama_tokenizer_fingerprint(t, m->tok_fp, sizeof m->tok_fp);
}

MAMA_API const char *mama_model_tokenizer(const mama_model *m, const char **abs_path, const char **fingerprint) {
    if (abs_path) *abs_path = m->tok_abs[0] ? m->tok_abs : NULL;
    if (fingerprint) *fingerprint = m->tok_fp[0] ? m->tok_fp : NULL;
    return m->tok_path[0] ? m->tok_path : NULL;
}

MAMA_API mama_status mama_model_check_tokenizer(const mama_model *m, const mama_tokenizer *t, const char *t_name) {
    char fp[48];
    MAMA_TRY(mama_tokenizer_check_config(t, t_name, &m->cfg, NULL));
    if (!m->tok_fp[0]) return MAMA_OK;
    MAMA_TRY(mama_tokenizer_fingerprint(t, fp, sizeof fp));
    if (strcmp(fp, m->tok_fp) != 0)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s (fingerprint %s) is not the tokenizer the model was trained with (%s, "
                         "fingerprint %s)", t_name ? t_name : "the tokenizer", fp, m->tok_path[0] ? m->tok_path : "?",
                         m->tok_fp);
    return MAMA_OK;
}

MAMA_API mama_status mama_dataset_create(mama_dataset **out, const mama_dataset_opts *opts, const mama_config *c) {
    mama_dataset *d;
    const mama_dataset_opts *o;
    int i, n, sp, first_bad = INT_MAX;
    mama_status s = MAMA_OK;
    char first_error[1024] = "";
    *out = NULL;
    if (!opts || !opts->manifest) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_dataset_create: no manifest given");
    if (!c) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_dataset_create: no model config given");
    MAMA_TRY(mama_calloc((void **)&d, sizeof *d, "dataset"));
    o = &d->opts;
    if ((s = mama__dataset_opts_resolve(opts, &d->opts)) != MAMA_OK) { mama_free(d); return s; }
    if (d->opts.aug.size > 0 && d->opts.aug.size != c->image_size) {
        s = MAMA_FAIL(MAMA_ERR_INVALID, "mama_dataset_opts.aug.size %d differs from the model's image_size %d "
                      "(leave it 0)", d->opts.aug.size, c->image_size);
        mama_free(d);
        return s;
    }
    d->opts.aug.size = d->image_size = c->image_size;
    d->in_chans = c->in_chans;
    d->context = c->context;
    if ((s = mama_manifest_load(&d->man, o->manifest, o->skip_bad_rows)) != MAMA_OK) goto fail;
    if (o->tokenizer && (s = mama_tokenizer_load(&d->tok, o->tokenizer)) != MAMA_OK) goto fail;
    if (d->tok && (s = mama_tokenizer_check_config(d->tok, o->tokenizer, c, NULL)) != MAMA_OK) goto fail;
    n = d->man.count;
    d->skips.bad_rows = d->man.skipped;
    if ((s = mama_calloc((void **)&d->bad, (size_t)n + 1, "dataset flags")) != MAMA_OK) goto fail;
    if ((s = mama_calloc((void **)&d->pre, (size_t)n + 1, "dataset flags")) != MAMA_OK) goto fail;
    /* not 2D first: such images are never decoded (2 marks them in bad[]) */
    for (i = 0; i < n; i++)
        if (o->only_2d && !mama__is_2d(d->man.records[i].image_type)) { d->bad[i] = 2; d->skips.not_2d++; }
    if ((s = mama__dataset_check_rows(d)) != MAMA_OK) goto fail;
    for (i = 0; i < n; i++) /* splits not asked for: neither decoded nor placed (4; not a skip) */
        if (!d->bad[i] && d->man.records[i].split >= 0 && d->man.records[i].split <= 2 &&
            !(o->splits >> d->man.records[i].split & 1)) d->bad[i] = 4;
    if (o->cache) {
        if ((s = mama_calloc((void **)&d->cache, sizeof(mama_image) * (size_t)(n + 1), "image cache")) != MAMA_OK) goto fail;
        /* Decode and prepare every image once, in parallel.  Errors are
         * collected per image so that the first failing file is reported. */
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 8)
#endif
        for (i = 0; i < n; i++) {
            if (d->bad[i]) continue;
            if (mama__prepare_record(d, i, &d->cache[i]) != MAMA_OK) {
                d->bad[i] = 1;
                /* keep the message of the lowest failing row, whatever the
                 * thread order (an unnamed critical: a named one would
                 * export a global lock symbol from this object) */
#ifdef _OPENMP
#pragma omp critical
#endif
                if (i < first_bad) {
                    first_bad = i;
                    snprintf(first_error, sizeof first_error, "%s", mama_last_error());
                }
            }
        }
        for (i = 0; i < n; i++) d->skipped += d->bad[i] == 1;
        d->skips.unreadable = d->skipped;
        if (d->skipped && !o->skip_bad_rows) {
            s = MAMA_FAIL(MAMA_ERR_IO, "%s: %d image(s) could not be read; first: %s (skip them with skip_bad_rows)",
                          o->manifest, d->skipped, first_error);
            goto fail;
        }
    }
    for (sp = 0; sp < 3; sp++) {
        if ((s = mama_alloc((void **)&d->split_idx[sp], sizeof(int) * (size_t)(n + 1), "split index")) != MAMA_OK) goto fail;
        if ((s = mama_alloc((void **)&d->pre_idx[sp], sizeof(int) * (size_t)(n + 1), "split index")) != MAMA_OK) goto fail;
    }
    for (i = 0; i < n; i++) {
        const mama_record *r = &d->man.records[i];
        if (d->bad[i] || r->split < 0 || r->split > 2) continue;
        d->split_idx[r->split][d->split_n[r->split]++] = i;
        if (!o->keep_incomplete && !mama_record_complete(r)) { d->skips.incomplete++; continue; }
        d->pre_idx[r->split][d->pre_n[r->split]++] = i;
        d->pre[i] = 1;
    }
    *out = d;
    return MAMA_OK;
fail:
    mama_dataset_free(d);
    return s;
}

/* The manifest stores a missing value as "unknown"; the caption builder
 * wants NULL for "not in the record" (so that the mass and calcification
 * sentences appear only when both of their fields are known, SPEC A.6). */
static const char *mama__known(const char *s) { return s && strcmp(s, "unknown") ? s : NULL; }

MAMA_API void mama_record_caption_fields(const mama_record *r, mama_caption_fields *f) {
    mama_caption_fields_init(f);
    f->procedure = mama__known(r->procedure);
    f->race = mama__known(r->race);
    f->ethnicity = mama__known(r->ethnicity);
    f->image_type = mama__known(r->image_type);
    f->side = mama__known(r->side);
    f->view = mama__known(r->view);
    f->mass_shape = mama__known(r->mass_shape);
    f->mass_density = mama__known(r->mass_density);
    f->calc_type = mama__known(r->calc_type);
    f->calc_distribution = mama__known(r->calc_distribution);
    f->birads = strlen(r->birads) == 1 ? r->birads[0] : 0;
    f->age = r->age;
    f->density = r->density;
}

/* One image with resolved augmentation options `o` (o->size is the
 * dataset's image size). */
static mama_status mama__dataset_image(mama_dataset *d, int record, int train, mama_rng *rng,
                                       const mama_augment_opts *o, float *out) {
    mama_image prepared, aug;
    const mama_image *src;
    mama_status s = MAMA_OK;
    if (record < 0 || record >= d->man.count)
        return MAMA_FAIL(MAMA_ERR_INVALID, "dataset image index %d out of range (0..%d)", record, d->man.count - 1);
    memset(&prepared, 0, sizeof prepared);
    memset(&aug, 0, sizeof aug);
    if (d->cache && d->cache[record].pix) {
        src = &d->cache[record];
    } else {
        MAMA_TRY(mama__prepare_record(d, record, &prepared));
        src = &prepared;
    }
    if (train) {
        s = mama__image_augment(src, o, rng, &aug);
        if (s == MAMA_OK) mama_image_to_tensor(&aug, o->mean, o->std, d->in_chans, out);
    } else {
        mama_image_to_tensor(src, o->mean, o->std, d->in_chans, out);
    }
    mama_image_free(&aug);
    mama_image_free(&prepared);
    return s;
}

MAMA_API mama_status mama_dataset_image(mama_dataset *d, int record, int train, mama_rng *rng, float *out) {
    return mama__dataset_image(d, record, train, rng, &d->opts.aug, out);
}

MAMA_API mama_status mama_dataset_caption(mama_dataset *d, int record, float mask_p, mama_rng *rng, int *ids,
                                          int *mask) {
    mama_caption_fields f;
    char *caption = NULL;
    mama_status s;
    if (!d->tok) return MAMA_FAIL(MAMA_ERR_INVALID, "dataset has no tokenizer");
    mama_record_caption_fields(&d->man.records[record], &f);
    if (mask_p > 0) mama_caption_mask(&f, &f, mask_p, rng);
    MAMA_TRY(mama_caption_build_alloc(&f, &caption));
    s = mama_tokenizer_encode_caption(d->tok, caption, d->context, ids, mask, NULL);
    mama_free(caption);
    return s;
}

/* ---- 10.1 Training batches (SPEC A.7: epochs are shuffles, the last
 * partial batch dropped).  The n training records (mama_dataset_pretrain_
 * split) make epochs of E = floor(n / G) global micro-batches of G = world
 * x B samples: epoch e is a permutation of them seeded by (seed, e), cut
 * into E batches, the n - E G left over dropped, so no batch holds one
 * image twice.  Global micro-batch k is batch k % E of epoch k / E; rank r
 * takes its samples r B .. r B + B - 1.  Each sample's randomness comes
 * from (seed, k G + r B + i).  So a batch is a pure function of (seed, k,
 * n, G): resuming and threading cannot change it. */
static uint64_t mama__mix2(uint64_t a, uint64_t b) {
    uint64_t x = a ^ (b * 0x9E3779B97F4A7C15ull);
    return mama__splitmix64(&x);
}

typedef struct mama__batch_buf {
    float *images, *ext;
    int *ids, *mask;
} mama__batch_buf;

typedef struct mama__loader {
    mama_dataset *d;
    const mama_pretrain_opts *o; /* resolved, aug.size = the dataset's image size */
    int B, n, accum;
    long per_epoch;              /* E: full global micro-batches per epoch */
    int rank, world;             /* data parallel: this rank's slice of a global batch of world * B */
    size_t img;
    int *perm;                   /* permutation of the current epoch */
    long perm_epoch;
    mama__batch_buf slot[2];
    long slot_job[2];            /* job held by a slot, -1 when empty */
    mama_status slot_status[2];
    char slot_error[2][1024];
    long next_job, last_job;     /* worker: next job to build; jobs < last_job only */
    long released;               /* jobs the trainer is done with */
#ifdef MAMA_HAVE_PTHREADS
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;
#endif
    int stop;
} mama__loader;

static void mama__loader_epoch(mama__loader *L, long epoch) {
    mama_rng r;
    const int *idx;
    int i;
    mama_dataset_pretrain_split(L->d, MAMA_SPLIT_TRAIN, &idx);
    mama_rng_seed(&r, mama__mix2(L->o->seed, (uint64_t)epoch + 0x51ull));
    for (i = 0; i < L->n; i++) L->perm[i] = idx[i];
    for (i = L->n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)mama_rng_below(&r, (uint32_t)(i + 1)), t = L->perm[i];
        L->perm[i] = L->perm[j]; L->perm[j] = t;
    }
    L->perm_epoch = epoch;
}

/* The record at sample i of this rank's part of global micro-batch `job`,
 * and the sample's randomness key. */
static int mama__loader_record(mama__loader *L, long job, int i, uint64_t *key) {
    long epoch = job / L->per_epoch, at = (job % L->per_epoch) * L->world * L->B + (long)L->rank * L->B + i;
    if (epoch != L->perm_epoch) mama__loader_epoch(L, epoch);
    *key = (uint64_t)((job * L->world + L->rank) * L->B + i);
    return L->perm[at];
}

/* Build micro-batch `job` into `b`.  The ext image (SPEC A.4, A.7): with
 * probability ext_other_view_p another usable training image of the same
 * study (mama_dataset_other_view), otherwise, or when the study has none,
 * a second augmentation of the image (the reference's fallback). */
static mama_status mama__build_batch(mama__loader *L, long job, mama__batch_buf *b) {
    const mama_pretrain_opts *o = L->o;
    mama_dataset *d = L->d;
    long step = job / L->accum;
    int late = step >= o->late_loss, i;
    for (i = 0; i < L->B; i++) {
        /* data parallel: rank r takes positions [r B, (r+1) B) of the global
         * micro-batch of world * B, so the union over ranks is the batch one
         * process of batch world * B would see, sample by sample (the image,
         * ext and caption randomness is keyed by the global position). */
        uint64_t key;
        int rec = mama__loader_record(L, job, i, &key), other = -1;
        mama_rng r;
        mama_rng_seed(&r, mama__mix2(o->seed, key));
        MAMA_TRY(mama__dataset_image(d, rec, 1, &r, &o->aug, b->images + L->img * i));
        MAMA_TRY(mama_dataset_caption(d, rec, o->caption_mask_p, &r, b->ids + (size_t)i * d->context,
                                      b->mask + (size_t)i * d->context));
        if (late) {
            if (mama_rng_uniform(&r) < o->ext_other_view_p) other = mama_dataset_other_view(d, rec, &r);
            MAMA_TRY(mama__dataset_image(d, other >= 0 ? other : rec, 1, &r, &o->aug, b->ext + L->img * i));
        }
    }
    return MAMA_OK;
}

#ifdef MAMA_HAVE_PTHREADS
/* The worker builds job k into slot k % 2 as soon as the trainer has
 * released job k - 2, so one batch is always being prepared while the
 * model trains on the other. */
static void *mama__loader_main(void *arg) {
    mama__loader *L = (mama__loader *)arg;
    for (;;) {
        long job;
        int slot;
        mama_status s;
        pthread_mutex_lock(&L->mu);
        while (!L->stop && (L->next_job >= L->last_job || L->next_job - L->released >= 2))
            pthread_cond_wait(&L->cv, &L->mu);
        if (L->stop) { pthread_mutex_unlock(&L->mu); return NULL; }
        job = L->next_job;
        slot = (int)(job % 2);
        pthread_mutex_unlock(&L->mu);
        s = mama__build_batch(L, job, &L->slot[slot]);
        pthread_mutex_lock(&L->mu);
        L->slot_status[slot] = s;
        if (s != MAMA_OK) snprintf(L->slot_error[slot], sizeof L->slot_error[slot], "%s", mama_last_error());
        L->slot_job[slot] = job;
        L->next_job++;
        pthread_cond_broadcast(&L->cv);
        pthread_mutex_unlock(&L->mu);
    }
}
#endif

static void mama__loader_free(mama__loader *L) {
    int k;
#ifdef MAMA_HAVE_PTHREADS
    if (L->started) {
        pthread_mutex_lock(&L->mu);
        L->stop = 1;
        pthread_cond_broadcast(&L->cv);
        pthread_mutex_unlock(&L->mu);
        pthread_join(L->thread, NULL);
        pthread_mutex_destroy(&L->mu);
        pthread_cond_destroy(&L->cv);
        L->started = 0;
    }
#endif
    for (k = 0; k < 2; k++) {
        mama_free(L->slot[k].images); mama_free(L->slot[k].ext);
        mama_free(L->slot[k].ids); mama_free(L->slot[k].mask);
    }
    mama_free(L->perm);
    memset(L, 0, sizeof *L);
}

static mama_status mama__loader_init(mama__loader *L, mama_dataset *d, const mama_pretrain_opts *o, long first_job,
                                     long last_job, int rank, int world) {
    int k;
    memset(L, 0, sizeof *L);
    L->d = d; L->o = o; L->B = o->batch; L->accum = o->accum;
    L->rank = rank; L->world = world;
    L->n = d->pre_n[MAMA_SPLIT_TRAIN];
    L->per_epoch = L->B > 0 && world > 0 ? L->n / ((long)L->B * world) : 0;
    L->img = (size_t)d->in_chans * d->image_size * d->image_size;
    L->perm_epoch = -1;
    L->next_job = L->released = first_job;
    L->last_job = last_job;
    L->slot_job[0] = L->slot_job[1] = -1;
    if (L->per_epoch < 1) {
        const mama_dataset_skips *k = &d->skips;
        return MAMA_FAIL(MAMA_ERR_INVALID,
                         "%s: the train split has %d usable image(s), fewer than one batch of %d (%d x %d rank(s)); "
                         "left out: %d not 2D, %d unreadable, %d incomplete (all splits), %d bad rows", d->man.path,
                         L->n, L->B * world, L->B, world, k->not_2d, k->unreadable, k->incomplete, k->bad_rows);
    }
    if (mama_alloc((void **)&L->perm, sizeof(int) * (size_t)L->n, "loader permutation") != MAMA_OK) return MAMA_ERR_NOMEM;
    for (k = 0; k < 2; k++) {
        if (mama_alloc((void **)&L->slot[k].images, sizeof(float) * L->img * L->B, "loader batch") != MAMA_OK ||
            mama_alloc((void **)&L->slot[k].ext, sizeof(float) * L->img * L->B, "loader batch") != MAMA_OK ||
            mama_alloc((void **)&L->slot[k].ids, sizeof(int) * (size_t)L->B * d->context, "loader batch") != MAMA_OK ||
            mama_alloc((void **)&L->slot[k].mask, sizeof(int) * (size_t)L->B * d->context, "loader batch") != MAMA_OK) {
            mama__loader_free(L);
            return MAMA_ERR_NOMEM;
        }
    }
#ifdef MAMA_HAVE_PTHREADS
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv, NULL);
    if (pthread_create(&L->thread, NULL, mama__loader_main, L) == 0) L->started = 1;
    else { pthread_mutex_destroy(&L->mu); pthread_cond_destroy(&L->cv); }
#endif
    return MAMA_OK;
}

/* The batch of `job`, waiting for the worker if needed (or building it here
 * when there is no worker thread). */
static mama_status mama__loader_get(mama__loader *L, long job, mama__batch_buf **b) {
    int slot = (int)(job % 2);
#ifdef MAMA_HAVE_PTHREADS
    if (L->started) {
        mama_status s;
        pthread_mutex_lock(&L->mu);
        while (L->slot_job[slot] != job) pthread_cond_wait(&L->cv, &L->mu);
        s = L->slot_status[slot];
        pthread_mutex_unlock(&L->mu);
        *b = &L->slot[slot];
        if (s != MAMA_OK) return MAMA_FAIL(s, "data loader: %s", L->slot_error[slot]);
        return MAMA_OK;
    }
#endif
    *b = &L->slot[slot];
    return mama__build_batch(L, job, *b);
}

static void mama__loader_release(mama__loader *L, long job) {
#ifdef MAMA_HAVE_PTHREADS
    if (L->started) {
        pthread_mutex_lock(&L->mu);
        L->released = job + 1;
        pthread_cond_broadcast(&L->cv);
        pthread_mutex_unlock(&L->mu);
        return;
    }
#endif
    L->released = job + 1;
}

/* ---- 10.2 Image files read ahead (mama_image_reader).  Workers claim
 * files in order and write each into its batch's slot (batch k in slot
 * k % 2); batch k may start once the caller has asked for batch k - 1
 * (so it is done with k - 2, the slot's last). */
#define MAMA__READER_MAX_THREADS 64
struct mama_image_reader {
    const char *const *paths;
    mama_decode_opts dec;
    mama_augment_opts aug;       /* the defaults at the model's size: mama_model_prepare_image */
    int n, batch, chans, given;  /* given: batches handed out */
    size_t img;
    float *slot[2];
    int done[2], bad[2];         /* files finished in a slot; the lowest failing file (n: none) */
    char error[2][1024];
    int next, limit;             /* the next file to claim; workers fill batches < limit */
#ifdef MAMA_HAVE_PTHREADS
    pthread_t thread[MAMA__READER_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
    int started, stop;
};

static mama_status mama__reader_file(mama_image_reader *r, int i, float *out) {
    mama_image im = {0, 0, NULL};
    mama_status s = mama_image_load_opts(r->paths[i], &r->dec, &im);
    if (s == MAMA_OK) s = mama_image_pipeline(&im, &r->aug, 0, NULL, r->chans, out);
    mama_image_free(&im);
    return s;
}

static void mama__reader_note(mama_image_reader *r, int sl, int i, mama_status s) {
    if (s != MAMA_OK && i < r->bad[sl]) {
        r->bad[sl] = i;
        snprintf(r->error[sl], sizeof r->error[sl], "%s", mama_last_error());
    }
    r->done[sl]++;
}

#ifdef MAMA_HAVE_PTHREADS
static void *mama__reader_main(void *arg) {
    mama_image_reader *r = (mama_image_reader *)arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        int i, sl;
        mama_status s;
        while (!r->stop && (r->next >= r->n || r->next / r->batch >= r->limit))
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stop) break;
        i = r->next++;
        sl = (i / r->batch) % 2;
        pthread_mutex_unlock(&r->mu);
        s = mama__reader_file(r, i, r->slot[sl] + r->img * (size_t)(i % r->batch));
        pthread_mutex_lock(&r->mu);
        mama__reader_note(r, sl, i, s);
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}
#endif

MAMA_API void mama_image_reader_close(mama_image_reader *r) {
    if (!r) return;
#ifdef MAMA_HAVE_PTHREADS
    if (r->started) {
        int t;
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        for (t = 0; t < r->started; t++) pthread_join(r->thread[t], NULL);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
    }
#endif
    mama_free(r->slot[0]);
    mama_free(r->slot[1]);
    mama_free(r);
}

MAMA_API mama_status mama_image_reader_open(mama_image_reader **out, const mama_config *c, const char *const *paths,
                                            int n, const mama_decode_opts *dec, int batch, int threads) {
    mama_image_reader *r;
    int k;
    *out = NULL;
    if (!c || (n > 0 && !paths) || n < 0 || batch < 1 || threads < MAMA_OFF)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_image_reader_open: NULL config or paths, n %d < 0, batch %d < 1 or "
                         "threads %d < 0 (MAMA_OFF: none)", n, batch, threads);
    MAMA_TRY(mama__decode_opts_check(dec, "mama_image_reader_open: dec"));
    MAMA_TRY(mama_calloc((void **)&r, sizeof *r, "image reader"));
    r->paths = paths; r->n = n; r->batch = batch < n ? batch : n > 0 ? n : 1;
    if (dec) r->dec = *dec;
    r->aug.size = c->image_size;
    r->chans = c->in_chans;
    r->img = (size_t)r->chans * c->image_size * c->image_size;
    r->bad[0] = r->bad[1] = n;
    r->limit = 2;
    for (k = 0; k < 2; k++)
        if (mama_alloc((void **)&r->slot[k], sizeof(float) * r->img * (size_t)r->batch, "image reader batch") != MAMA_OK) {
            mama_image_reader_close(r);
            return MAMA_ERR_NOMEM;
        }
#ifdef MAMA_HAVE_PTHREADS
    if (threads == 0) threads = 1;
    if (threads > MAMA__READER_MAX_THREADS) threads = MAMA__READER_MAX_THREADS;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    while (r->started < threads && pthread_create(&r->thread[r->started], NULL, mama__reader_main, r) == 0) r->started++;
    if (!r->started) { pthread_mutex_destroy(&r->mu); pthread_cond_destroy(&r->cv); } /* read in next */
#endif
    *out = r;
    return MAMA_OK;
}

MAMA_API mama_status mama_image_reader_next(mama_image_reader *r, const float **images, int *first, int *count) {
    int k, sl, cnt, bad, i;
    mama_status s;
    *images = NULL; *first = 0; *count = 0;
    if (!r) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_image_reader_next: NULL reader");
    k = r->given;
    if (k * r->batch >= r->n) return MAMA_OK;
    sl = k % 2;
    cnt = r->n - k * r->batch < r->batch ? r->n - k * r->batch : r->batch;
#ifdef MAMA_HAVE_PTHREADS
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->limit = k + 2; /* batch k - 1 is released: its slot may take batch k + 1 */
        pthread_cond_broadcast(&r->cv);
        while (r->done[sl] < cnt) pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
    }
#endif
    for (i = k * r->batch; !r->started && i < k * r->batch + cnt; i++)
        mama__reader_note(r, sl, i, mama__reader_file(r, i, r->slot[sl] + r->img * (size_t)(i % r->batch)));
#ifdef MAMA_HAVE_PTHREADS
    if (r->started) pthread_mutex_lock(&r->mu);
#endif
    bad = r->bad[sl];
    r->done[sl] = 0;
    r->bad[sl] = r->n;
    r->given = k + 1;
    s = bad < r->n ? MAMA_FAIL(MAMA_ERR_IO, "image reader: %s", r->error[sl]) : MAMA_OK;
#ifdef MAMA_HAVE_PTHREADS
    if (r->started) pthread_mutex_unlock(&r->mu);
#endif
    if (s != MAMA_OK) return s;
    *images = r->slot[sl]; *first = k * r->batch; *count = cnt;
    return MAMA_OK;
}

/* ==========================================================================
 * 11. LOOPS: pretraining, checkpoints
 * ========================================================================== */

#define MAMA__MAX_STEP 1000000000000L /* steps and schedule positions: at most 1e12 */

/* The options rule (6.1b) on every field, then the checks.  image_size is
 * the model's (aug.size 0 becomes it), or 0 to leave aug.size 0. */
static mama_status mama__pretrain_opts_resolve(const mama_pretrain_opts *in, mama_pretrain_opts *o, int image_size) {
    mama_pretrain_opts z;
    mama_augment_opts aug;
    if (in) z = *in; else memset(&z, 0, sizeof z); /* (in may be o) */
    in = &z;
    memset(o, 0, sizeof *o);
    o->steps = mama__opt_long(in->steps, MAMA_PRETRAIN_DEFAULT_STEPS);
    o->stop_at = mama__opt_long(in->stop_at, 0);
    o->batch = mama__opt_int(in->batch, MAMA_PRETRAIN_DEFAULT_BATCH);
    o->accum = mama__opt_int(in->accum, MAMA_PRETRAIN_DEFAULT_ACCUM);
    o->lr = mama__opt_float(in->lr, MAMA_PRETRAIN_DEFAULT_LR);
    o->lr_floor = mama__opt_float(in->lr_floor, MAMA_PRETRAIN_DEFAULT_LR_FLOOR);
    /* the schedule's defaults: fractions of steps (o->steps / 100 * pct: no overflow) */
    o->warmup = mama__opt_long(in->warmup, o->steps / 100 * MAMA_PRETRAIN_DEFAULT_WARMUP_PCT +
                                           o->steps % 100 * MAMA_PRETRAIN_DEFAULT_WARMUP_PCT / 100);
    o->weight_decay = mama__opt_float(in->weight_decay, MAMA_PRETRAIN_DEFAULT_WEIGHT_DECAY);
    o->late_loss = mama__opt_long(in->late_loss, o->steps / 100 * MAMA_PRETRAIN_DEFAULT_LATE_LOSS_PCT +
                                                 o->steps % 100 * MAMA_PRETRAIN_DEFAULT_LATE_LOSS_PCT / 100);
    o->use_mv = mama__opt_flag(in->use_mv, 1);
    o->use_sym = mama__opt_flag(in->use_sym, 1);
    o->use_sla = mama__opt_flag(in->use_sla, 1);
    o->ext_other_view_p = mama__opt_float(in->ext_other_view_p, MAMA_PRETRAIN_DEFAULT_EXT_OTHER_VIEW_P);
    o->caption_mask_p = mama__opt_float(in->caption_mask_p, MAMA_PRETRAIN_DEFAULT_CAPTION_MASK_P);
    o->clip_grad = mama__opt_float(in->clip_grad, 0.0f);
    o->seed = in->seed ? in->seed : MAMA_PRETRAIN_DEFAULT_SEED;
    o->max_bad_steps = mama__opt_int(in->max_bad_steps, MAMA_PRETRAIN_DEFAULT_MAX_BAD_STEPS);
    o->checkpoint = in->checkpoint;
    o->checkpoint_every = mama__opt_long(in->checkpoint_every, 0);
    o->val_every = in->val_every < 0 ? MAMA_OFF : in->val_every; /* 0: the default rule (at the checkpoints) */
    o->best_checkpoint = in->best_checkpoint;
    o->log_csv = in->log_csv;
    o->resume = mama__opt_flag(in->resume, 0);
    o->allow_changes = mama__opt_flag(in->allow_changes, 0);
    o->quiet = mama__opt_flag(in->quiet, 0);
    o->no_overlap = mama__opt_flag(in->no_overlap, 0);
    if (image_size > 0 && in->aug.size > 0 && in->aug.size != image_size)
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: aug.size %d differs from the model's image_size %d (leave it 0)",
                         in->aug.size, image_size);
    aug = in->aug;
    memset(&o->aug, 0, sizeof o->aug);
    if (aug.size <= 0) aug.size = image_size > 0 ? image_size : MAMA_AUGMENT_DEFAULT_SIZE;
    if (memcmp(&in->aug, &o->aug, sizeof aug)) { /* the zero struct stays: the dataset's (mama_pretrain) */
        MAMA_TRY(mama__augment_opts_resolve(&aug, &o->aug));
        if (image_size <= 0) o->aug.size = 0;
    }
    if (o->steps < 1 || o->batch < 1 || o->accum < 1)
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: steps, batch and accum must be >= 1");
    if (o->steps > MAMA__MAX_STEP || o->accum > 65536)
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: steps %ld (at most 1e12) or accum %d (at most 65536) too large",
                         o->steps, o->accum);
    if (o->warmup >= o->steps || o->late_loss >= o->steps) /* the warm-up never ends, the late losses never start */
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: %s %ld is at or past the last step (steps %ld; the default "
                         "is %d%% of steps)", o->warmup >= o->steps ? "warmup" : "late_loss",
                         o->warmup >= o->steps ? o->warmup : o->late_loss, o->steps,
                         o->warmup >= o->steps ? MAMA_PRETRAIN_DEFAULT_WARMUP_PCT : MAMA_PRETRAIN_DEFAULT_LATE_LOSS_PCT);
    if (!(o->lr >= 0) || !(o->lr_floor >= 0) || !(o->weight_decay >= 0) || !(o->clip_grad >= 0))
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: lr, lr_floor, weight_decay and clip_grad must be numbers >= 0");
    if (!mama__opt_prob_ok(o->ext_other_view_p) || !mama__opt_prob_ok(o->caption_mask_p))
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: ext_other_view_p and caption_mask_p must lie in [0, 1]");
    return MAMA_OK;
}

MAMA_API void mama_pretrain_opts_default(mama_pretrain_opts *o) {
    mama__pretrain_opts_resolve(NULL, o, 0);
}

/* ---- 11.1 Checkpoints: the model's tensors (A.8 names), the AdamW moments
 * as `optimizer.adam_m` / `optimizer.adam_v` over the [train | late]
 * groups, and metadata: mama_config, step, seed, the optimiser's step
 * counts.  Every random choice of training derives from (seed, step), so
 * these restore the run exactly. */
/* best_step > 0: the metadata also records the best validation so far
 * (best_val_loss, best_val_step; mama_pretrain); o (mama_pretrain's
 * resolved options, or NULL) adds the settings a resume must not change
 * silently: batch, accum, lr, late_loss.  Weights and moments that are not
 * all finite are never written (MAMA_ERR_NUMERIC naming the first bad
 * tensor; the file at `path` stays as it was). */
static mama_status mama__checkpoint_save_best(const char *path, const mama_model *m, const mama_adamw *opt, long step,
                                              uint64_t seed, double best_val, long best_step,
                                              const mama_pretrain_opts *o) {
    mama_st_writer *w = NULL;
    float *moments = NULL;
    mama__host_weights h;
    size_t n = opt ? opt->n_train + opt->n_late : 0, k;
    int64_t shape = (int64_t)n;
    char buf[64];
    mama_status s;
    MAMA_TRY(mama__host_weights_get(m, &h));
    if ((s = mama_alloc((void **)&moments, sizeof(float) * (2 * n + 1), "checkpoint")) != MAMA_OK) {
        mama__host_weights_free(&h);
        return s;
    }
    s = mama__check_finite(m, &h, path);
    if (s == MAMA_OK) s = mama_st_writer_create(&w);
    if (s == MAMA_OK) s = mama__writer_add_model(w, m, &h);
    if (s == MAMA_OK && opt) {
        s = m->be->to_host(m->be, moments, opt->m, sizeof(float) * n);
        if (s == MAMA_OK) s = m->be->to_host(m->be, moments + n, opt->v, sizeof(float) * n);
        if (s == MAMA_OK && (k = mama__first_nonfinite(moments, 2 * n, MAMA_F32)) < 2 * n)
            s = MAMA_FAIL(MAMA_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value (%g at element %zu of %zu)", path,
                          k < n ? "optimizer.adam_m" : "optimizer.adam_v", (double)moments[k], k % (n ? n : 1), n);
        if (s == MAMA_OK) s = mama_st_writer_add(w, "optimizer.adam_m", MAMA_F32, 1, &shape, moments);
        if (s == MAMA_OK) s = mama_st_writer_add(w, "optimizer.adam_v", MAMA_F32, 1, &shape, moments + n);
        snprintf(buf, sizeof buf, "%ld", opt->step_train);
        if (s == MAMA_OK) s = mama_st_writer_meta(w, "adam_step_train", buf);
        snprintf(buf, sizeof buf, "%ld", opt->step_late);
        if (s == MAMA_OK) s = mama_st_writer_meta(w, "adam_step_late", buf);
    }
    snprintf(buf, sizeof buf, "%ld", step);
    if (s == MAMA_OK) s = mama_st_writer_meta(w, "step", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
    if (s == MAMA_OK) s = mama_st_writer_meta(w, "seed", buf);
    if (s == MAMA_OK) s = mama_st_writer_meta(w, "format", "mama-checkpoint-1");
    if (s == MAMA_OK && best_step > 0) {
        snprintf(buf, sizeof buf, "%.17g", best_val); /* exact: resume compares it */
        s = mama_st_writer_meta(w, "best_val_loss", buf);
        snprintf(buf, sizeof buf, "%ld", best_step);
        if (s == MAMA_OK) s = mama_st_writer_meta(w, "best_val_step", buf);
    }
    if (s == MAMA_OK && o) {
        snprintf(buf, sizeof buf, "%ld", (long)o->batch * mama__dp_world(m)); /* over all ranks */
        s = mama_st_writer_meta(w, "batch", buf);
        snprintf(buf, sizeof buf, "%d", o->accum);
        if (s == MAMA_OK) s = mama_st_writer_meta(w, "accum", buf);
        snprintf(buf, sizeof buf, "%.9g", (double)o->lr); /* exact for a float */
        if (s == MAMA_OK) s = mama_st_writer_meta(w, "lr", buf);
        snprintf(buf, sizeof buf, "%ld", o->late_loss);
        if (s == MAMA_OK) s = mama_st_writer_meta(w, "late_loss", buf);
    }
    if (s == MAMA_OK) s = mama_st_writer_write(w, path); /* temporary file, fsync, rename */
    mama_st_writer_free(w);
    mama__host_weights_free(&h);
    mama_free(moments);
    return s;
}

MAMA_API mama_status mama_checkpoint_save(const char *path, const mama_model *m, const mama_adamw *opt, long step,
                                          uint64_t seed) {
    return mama__checkpoint_save_best(path, m, opt, step, seed, 0.0, 0, NULL);
}

/* Checkpoint metadata values, each with its range: absent (when required),
 * malformed or out of range is MAMA_ERR_FORMAT naming file, key and value. */
static mama_status mama__meta_bad(const mama_safetensors *st, const char *key, const char *v, const char *want) {
    return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: checkpoint metadata '%s' = \"%.40s\" is not %s", st->path, key, v, want);
}
static mama_status mama__meta_long(const mama_safetensors *st, const char *key, long lo, long hi, int required,
                                   long *v) {
    const char *s = mama_st_meta(st, key);
    char *end, want[96];
    long x;
    if (!s) return required ? MAMA_FAIL(MAMA_ERR_FORMAT, "%s: checkpoint metadata has no '%s'", st->path, key) : MAMA_OK;
    errno = 0;
    x = strtol(s, &end, 10);
    snprintf(want, sizeof want, "an integer in [%ld, %ld]", lo, hi);
    if (end == s || *end || errno == ERANGE || x < lo || x > hi || !(*s == '-' || (*s >= '0' && *s <= '9')))
        return mama__meta_bad(st, key, s, want);
    *v = x;
    return MAMA_OK;
}
static mama_status mama__meta_double(const mama_safetensors *st, const char *key, double *v) {
    const char *s = mama_st_meta(st, key);
    char *end;
    double x;
    if (!s) return MAMA_OK;
    x = strtod(s, &end);
    if (end == s || *end || !isfinite(x) || *s == ' ' || *s == '\t') return mama__meta_bad(st, key, s, "a finite number");
    *v = x;
    return MAMA_OK;
}

MAMA_API mama_status mama_checkpoint_load(const char *path, mama_model *m, mama_adamw *opt, long *step,
                                          uint64_t *seed) {
    mama_safetensors st;
    float *moments = NULL;
    long v = 0, at = 0, al = 0, bs = 0;
    size_t n = opt ? opt->n_train + opt->n_late : 0, k;
    mama_status s;
    const char *sd, *fmt, *cj;
    char *end, src[600];
    memset(&st, 0, sizeof st);
    /* the metadata first: nothing is loaded from a file whose values are out of range */
    MAMA_TRY(mama_st_open(&st, path));
    fmt = mama_st_meta(&st, "format");
    sd = mama_st_meta(&st, "seed");
    s = fmt && strcmp(fmt, "mama-checkpoint-1") ? mama__meta_bad(&st, "format", fmt, "\"mama-checkpoint-1\"") : MAMA_OK;
    if (s == MAMA_OK) s = mama__meta_long(&st, "step", 0, MAMA__MAX_STEP, 1, &v);
    if (s == MAMA_OK && sd) {
        unsigned long long x;
        errno = 0;
        x = strtoull(sd, &end, 10);
        if (!(*sd >= '0' && *sd <= '9') || *end || errno == ERANGE) s = mama__meta_bad(&st, "seed", sd, "an unsigned 64-bit integer");
        else if (seed) *seed = (uint64_t)x;
    }
    /* AdamW's step counts: at most the checkpoint's step (each optimiser
     * step counts once, the late group only from late_loss on) */
    if (s == MAMA_OK && opt) s = mama__meta_long(&st, "adam_step_train", 0, v < INT_MAX - 1 ? v : INT_MAX - 1, 1, &at);
    if (s == MAMA_OK && opt) s = mama__meta_long(&st, "adam_step_late", 0, at, 1, &al);
    if (s == MAMA_OK) s = mama__meta_long(&st, "best_val_step", 0, v, 0, &bs);
    if (s == MAMA_OK) { double b; s = mama__meta_double(&st, "best_val_loss", &b); }
    /* the file's config (validated) must be the model's, field by field */
    if (s == MAMA_OK && (cj = mama_st_meta(&st, "mama_config")) != NULL) {
        mama_config fc = m->cfg;
        size_t i;
        snprintf(src, sizeof src, "%s:__metadata__.mama_config", path);
        s = mama_config_from_json(&fc, cj, src);
        for (i = 0; s == MAMA_OK && i + 1 < MAMA__CFG_NRANGES; i++) /* all but grad_checkpoint */
            if (MAMA__CFG_INT(&fc, &mama__cfg_ranges[i]) != MAMA__CFG_INT(&m->cfg, &mama__cfg_ranges[i]))
                s = MAMA_FAIL(MAMA_ERR_INVALID, "%s: the checkpoint's mama_config has %s %d, the model %d", path,
                              mama__cfg_ranges[i].key, MAMA__CFG_INT(&fc, &mama__cfg_ranges[i]),
                              MAMA__CFG_INT(&m->cfg, &mama__cfg_ranges[i]));
        if (s == MAMA_OK && (fc.text_mode != m->cfg.text_mode || fc.lora_alpha != m->cfg.lora_alpha ||
                             fc.lora_dropout != m->cfg.lora_dropout || fc.text_dropout != m->cfg.text_dropout))
            s = MAMA_FAIL(MAMA_ERR_INVALID, "%s: the checkpoint's mama_config differs from the model's in text_mode, "
                          "lora_alpha, lora_dropout or text_dropout", path);
    }
    if (s == MAMA_OK) s = mama_model_load_weights(m, path, 0, NULL);
    if (s == MAMA_OK) *step = v;
    if (s == MAMA_OK && opt) {
        s = mama_alloc((void **)&moments, sizeof(float) * (2 * n + 1), "checkpoint moments");
        if (s == MAMA_OK) s = mama_st_read_f32(&st, "optimizer.adam_m", moments, n);
        if (s == MAMA_OK) s = mama_st_read_f32(&st, "optimizer.adam_v", moments + n, n);
        for (k = 0; s == MAMA_OK && k < 2 * n; k++)
            if (!isfinite(moments[k]) || (k >= n && moments[k] < 0))
                s = MAMA_FAIL(MAMA_ERR_NUMERIC, "%s: tensor '%s' holds %g at element %zu (AdamW moments must be finite, "
                              "the second ones >= 0): refused", path, k < n ? "optimizer.adam_m" : "optimizer.adam_v",
                              (double)moments[k], k % n);
        if (s == MAMA_OK) s = m->be->to_device(m->be, opt->m, moments, sizeof(float) * n);
        if (s == MAMA_OK) s = m->be->to_device(m->be, opt->v, moments + n, sizeof(float) * n);
        if (s == MAMA_OK) { opt->step_train = at; opt->step_late = al; }
    }
    mama_free(moments);
    mama_st_close(&st);
    return s;
}

/* ---- 11.2 Progress: a live line on a terminal, plain lines otherwise. */
static int mama__stderr_is_terminal(void) {
#ifdef MAMA__HAVE_ISATTY
    return isatty(2);
#else
    return 0;
#endif
}

static void mama__progress(const mama_pretrain_opts *o, long step, const mama_losses *L, float lr, double ips,
                           double eta, int tty) {
    long every = o->steps / 50 > 0 ? o->steps / 50 : 1;
    if (o->quiet) return;
    if (tty) {
        fprintf(stderr, "\rstep %ld/%ld  loss %.4f (clip %.3f mv %.3f sym %.3f sla %.3f)  lr %.2e  %.1f img/s  ETA %.0fs   ",
                step + 1, o->steps, L->loss, L->clip, L->mv, L->sym, L->sla, lr, ips, eta);
        if (step + 1 == o->steps) fputc('\n', stderr);
    } else if ((step + 1) % every == 0 || step + 1 == o->steps || step == 0) {
        fprintf(stderr, "step %ld/%ld loss %.4f clip %.4f mv %.4f sym %.4f sla %.4f lr %.3e %.1f img/s ETA %.0fs\n",
                step + 1, o->steps, L->loss, L->clip, L->mv, L->sym, L->sla, lr, ips, eta);
    }
    fflush(stderr);
}

static int mama__file_exists(const char *path) {
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (f) fclose(f);
    return f != NULL;
}

/* ---- 11.2b Validation and the best checkpoint (see mama_pretrain in 1.16) */

/* The best checkpoint's path: best_checkpoint, else `ckpt` with ".best"
 * before the extension of its last path component (or appended when it has
 * none).  NULL without either; else mama_alloc'ed. */
static mama_status mama__best_path(const mama_pretrain_opts *o, char **out) {
    const char *src = o->best_checkpoint ? o->best_checkpoint : o->checkpoint, *dot, *slash;
    size_t n, at;
    *out = NULL;
    if (!src) return MAMA_OK;
    n = strlen(src);
    MAMA_TRY(mama_alloc((void **)out, n + 6, "best checkpoint path"));
    if (o->best_checkpoint) { memcpy(*out, src, n + 1); return MAMA_OK; }
    dot = strrchr(src, '.');
    slash = strrchr(src, '/');
    at = dot && (!slash || dot > slash + 1) ? (size_t)(dot - src) : n;
    memcpy(*out, src, at);
    memcpy(*out + at, ".best", 5);
    memcpy(*out + at + 5, src + at, n - at + 1);
    return MAMA_OK;
}

/* A checkpoint's metadata on resume: the best validation it records (the
 * lower of it and *best), and with o (the main checkpoint, not the best
 * one) the training settings, which must equal o's unless allow_changes
 * (then each change is logged when `loud`); the batch is the global one,
 * o->batch x world, so a resume on another number of ranks keeps it.  Absent keys (older files, no
 * validation yet) are skipped; malformed ones are MAMA_ERR_FORMAT. */
static mama_status mama__checkpoint_meta(const char *path, const mama_pretrain_opts *o, int world, int loud,
                                         double *best, long *best_step) {
    static const char *const keys[4] = {"batch", "accum", "lr", "late_loss"};
    mama_safetensors st;
    double b = NAN, x;
    long k = 0;
    mama_status s;
    int i;
    if (!mama__file_exists(path)) return MAMA_OK;
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, path));
    s = mama__meta_double(&st, "best_val_loss", &b);
    if (s == MAMA_OK) s = mama__meta_long(&st, "best_val_step", 0, MAMA__MAX_STEP, 0, &k);
    if (s == MAMA_OK && k > 0 && isfinite(b) && (*best_step <= 0 || b < *best)) { *best = b; *best_step = k; }
    for (i = 0; o && s == MAMA_OK && i < 4; i++) {
        const char *v = mama_st_meta(&st, keys[i]);
        double now = i == 0 ? (double)o->batch * world : i == 1 ? o->accum : i == 2 ? (double)o->lr : (double)o->late_loss;
        if (!v || (s = mama__meta_double(&st, keys[i], &x)) != MAMA_OK) continue;
        if (i == 2) x = (float)x; /* as written: "%.9g" of a float */
        if (x == now) continue;
        if (!o->allow_changes)
            s = MAMA_FAIL(MAMA_ERR_INVALID, "resume: %s was trained with %s %.7g, this run has %s %.7g (allow_changes "
                          "accepts the change)", path, keys[i], x, keys[i], now);
        else if (loud)
            fprintf(stderr, "resume: %s changed from %.7g to %.7g (allowed)\n", keys[i], x, now);
    }
    mama_st_close(&st);
    return s;
}

/* Temporary files of a killed writer (mama_atomic_open's "<path>.tmp.PID.N")
 * whose PID no longer runs: removed (each named on stderr when `loud`).
 * Linux only (a PID is known dead when /proc/PID is absent); elsewhere a
 * no-op. */
static void mama__remove_stale_tmp(const char *path, int loud) {
#if defined(MAMA__POSIX) && defined(__linux__)
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char dir[4096], full[4096 + 256], proc[64];
    size_t bl = strlen(base);
    struct stat sb;
    DIR *dp;
    struct dirent *e;
    if (!slash || slash == path) snprintf(dir, sizeof dir, "%s", slash ? "/" : ".");
    else if ((size_t)(slash - path) < sizeof dir) { memcpy(dir, path, (size_t)(slash - path)); dir[slash - path] = 0; }
    else return;
    if (stat("/proc/self", &sb) != 0 || !(dp = opendir(dir))) return;
    while ((e = readdir(dp)) != NULL) {
        const char *t = e->d_name + bl, *q;
        unsigned long pid;
        if (strncmp(e->d_name, base, bl) || strncmp(t, ".tmp.", 5)) continue;
        pid = strtoul(t + 5, (char **)&q, 10);
        if (q == t + 5 || *q != '.' || !(q[1] >= '0' && q[1] <= '9') || strspn(q + 1, "0123456789") != strlen(q + 1) ||
            pid == (unsigned long)getpid())
            continue;
        snprintf(proc, sizeof proc, "/proc/%lu", pid);
        if (stat(proc, &sb) == 0) continue; /* still running: its write goes on */
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (remove(full) == 0 && loud) fprintf(stderr, "removed %s (left by process %lu, which no longer runs)\n", full, pid);
    }
    closedir(dp);
#else
    (void)path; (void)loud;
#endif
}

/* The log of a run: a new file with the header, or on a resume at `step`
 * the old one cut to the header and the rows of steps 1..step (a killed
 * run's rows after its last checkpoint, or a torn last row, would appear
 * twice), then appended to. */
static mama_status mama__log_open(const char *path, long step, FILE **out) {
    unsigned char *buf = NULL;
    size_t n = 0, cut = 0;
    mama_status s = MAMA_OK;
    *out = NULL;
    if (step > 0 && mama__file_exists(path)) {
        MAMA_TRY(mama_read_file(path, &buf, &n));
        while (cut < n) {
            const char *line = (const char *)buf + cut, *nl = (const char *)memchr(line, '\n', n - cut);
            char *end;
            long k = strtol(line, &end, 10);
            if (!nl || (cut == 0 ? strncmp(line, "step,", 5) != 0 : (end == line || *end != ',' || k < 1 || k > step)))
                break;
            cut = (size_t)(nl - (const char *)buf) + 1;
        }
        if (cut > 0 && cut < n) {
            mama_atomic_file af;
            s = mama_atomic_open(&af, path);
            if (s == MAMA_OK && (s = mama_atomic_write(&af, buf, cut)) != MAMA_OK) mama_atomic_abort(&af);
            else if (s == MAMA_OK) s = mama_atomic_commit(&af);
        }
        mama_free(buf);
        MAMA_TRY(s);
    }
    *out = fopen(path, cut > 0 ? "ab" : "wb");
    if (!*out) return MAMA_FAIL(MAMA_ERR_IO, "cannot open log %s: %s", path, strerror(errno));
    if (cut == 0) fprintf(*out, "step,lr,loss,clip,mv,sym,sla,grad_norm,skipped,images_per_s,seconds,val_loss\n");
    if (fflush(*out) != 0) {
        fclose(*out);
        *out = NULL;
        return MAMA_FAIL(MAMA_ERR_IO, "cannot write log %s: %s", path, strerror(errno));
    }
    return MAMA_OK;
}

/* What a stop leaves: "the last good checkpoint P (step N) is kept" when
 * this run wrote or resumed one, else what is there. */
static const char *mama__kept(char *buf, size_t n, const char *path, long kept) {
    if (!path) snprintf(buf, n, "no checkpoint was asked for");
    else if (kept >= 0) snprintf(buf, n, "the last good checkpoint %s (step %ld) is kept", path, kept);
    else if (mama__file_exists(path)) snprintf(buf, n, "%s is left as it was (not written by this run)", path);
    else snprintf(buf, n, "no checkpoint was written");
    return buf;
}

/* The validation loss (1.16) after `step` optimiser steps into *out (NaN
 * with an empty val split).  b holds one batch (batch rows). */
static mama_status mama__pretrain_val(mama_model *m, mama_dataset *d, const mama_pretrain_opts *o, long step,
                                      mama__batch_buf *b, double *out) {
    const int *idx;
    int n = mama_dataset_pretrain_split(d, MAMA_SPLIT_VAL, &idx), world = mama__dp_world(m), rank = mama__dp_rank(m);
    int G = o->batch * world, late = step >= o->late_loss, pos, i;
    size_t img = (size_t)d->in_chans * d->image_size * d->image_size;
    double sum = 0;
    long count = 0;
    mama_step_opts so;
    memset(&so, 0, sizeof so);
    so.late = mama__opt_pass(late);
    so.use_mv = mama__opt_pass(o->use_mv);
    so.use_sym = mama__opt_pass(o->use_sym);
    so.use_sla = mama__opt_pass(o->use_sla);
    so.train = MAMA_OFF;   /* BatchNorm running statistics, no dropout */
    so.dropout = MAMA_OFF;
    MAMA_TRY(mama__step_opts_resolve(&so, &so));
    for (pos = 0; pos < n; pos += G) {
        int bl = (n - pos < G ? n - pos : G) / world; /* this rank's rows of the global batch */
        mama_batch batch;
        mama_losses L;
        if (bl < 1) break;
        for (i = 0; i < bl; i++) {
            int rec = idx[pos + rank * bl + i], other = -1;
            mama_rng r;
            MAMA_TRY(mama__dataset_image(d, rec, 0, NULL, &o->aug, b->images + img * i));
            MAMA_TRY(mama_dataset_caption(d, rec, 0.0f, NULL, b->ids + (size_t)i * d->context,
                                          b->mask + (size_t)i * d->context));
            if (!late) continue;
            /* the training rule for the ext image (mama__build_batch), on a
             * stream fixed per record */
            mama_rng_seed(&r, mama__mix2(o->seed ^ 0x76616c2dull, (uint64_t)rec));
            if (mama_rng_uniform(&r) < o->ext_other_view_p) other = mama_dataset_other_view(d, rec, &r);
            MAMA_TRY(mama__dataset_image(d, other >= 0 ? other : rec, 0, NULL, &o->aug, b->ext + img * i));
        }
        batch.B = bl; batch.images = b->images; batch.ext_images = late ? b->ext : NULL;
        batch.input_ids = b->ids; batch.attention_mask = b->mask;
        MAMA_TRY(mama__step_tuned(m, &batch, &so, 0, 0, &L));
        sum += (double)L.loss * bl * world; /* the global batch's loss, weighted by its size */
        count += (long)bl * world;
    }
    *out = count > 0 ? sum / (double)count : NAN;
    return MAMA_OK;
}

MAMA_API mama_status mama_pretrain(mama_model *m, mama_dataset *d, const mama_pretrain_opts *opts,
                                   mama_pretrain_result *res) {
    mama_pretrain_opts ro;       /* the resolved options (section 1's rule) */
    const mama_pretrain_opts *o = &ro;
    mama_backend *be = m->be;
    mama_adamw opt;
    mama__loader L;
    mama_pretrain_result r;
    FILE *log = NULL;
    long step = 0, bad_run = 0;
    double vloss = NAN;
    int better = 0;
    uint64_t seed;
    size_t ngrad = m->group_numel[MAMA_GROUP_TRAIN] + m->group_numel[MAMA_GROUP_LATE];
    double t0 = mama_time_seconds(), t_step0, comm0 = 0, wait0 = 0;
    long buckets0 = 0;
    int tty = mama__stderr_is_terminal(), k;
    /* data parallel (section 12): o->batch is per rank; rank 0 alone writes
     * the log, the progress and the checkpoints; every rank resumes from
     * the same checkpoint. */
    int rank = mama__dp_rank(m), world = mama__dp_world(m), quiet;
    mama_pretrain_opts oq;
    mama_status s = MAMA_OK;
    /* validation (11.2b): every val_every steps (0: at the checkpoints) and after the last */
    mama__batch_buf vb;
    char *best_path = NULL;
    long val_every, kept = -1;   /* kept: the step of the last good checkpoint, -1: none of this run */
    int do_val;
    char note[600];
    memset(&vb, 0, sizeof vb);
    memset(&r, 0, sizeof r);
    r.best_val_loss = r.last_val_loss = NAN;
    MAMA_TRY(mama__pretrain_opts_resolve(opts, &ro, m->cfg.image_size));
    {   /* a zero aug (kept zero by the resolver) is the dataset's, resolved already: not again, since a
         * resolved 0 (off) would read as "the default" */
        mama_augment_opts zero_aug;
        memset(&zero_aug, 0, sizeof zero_aug);
        if (!memcmp(&ro.aug, &zero_aug, sizeof zero_aug)) ro.aug = d->opts.aug;
    }
    val_every = o->val_every > 0 ? o->val_every : o->checkpoint_every;
    do_val = o->val_every >= 0 && mama_dataset_pretrain_split(d, MAMA_SPLIT_VAL, NULL) > 0;
    seed = o->seed;
    quiet = o->quiet || rank != 0;
    oq = *o;
    oq.quiet = quiet;
    if (o->batch < 1 || o->batch > m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: batch %d does not fit the model's max_batch %d", o->batch, m->max_batch);
    if (d->tok) MAMA_TRY(mama_model_set_tokenizer(m, d->opts.tokenizer, d->tok)); /* into its checkpoints (1.15) */
    if (o->accum < 1 || o->steps < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: steps and accum must be >= 1");
    if (!d->tok) return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: the dataset has no tokenizer");
    if (do_val) {
        size_t img = (size_t)d->in_chans * d->image_size * d->image_size;
        if ((s = mama__best_path(o, &best_path)) != MAMA_OK ||
            (s = mama_alloc((void **)&vb.images, sizeof(float) * img * o->batch, "validation batch")) != MAMA_OK ||
            (s = mama_alloc((void **)&vb.ext, sizeof(float) * img * o->batch, "validation batch")) != MAMA_OK ||
            (s = mama_alloc((void **)&vb.ids, sizeof(int) * (size_t)o->batch * d->context, "validation batch")) != MAMA_OK ||
            (s = mama_alloc((void **)&vb.mask, sizeof(int) * (size_t)o->batch * d->context, "validation batch")) != MAMA_OK)
            goto early;
    }
    if ((s = mama_adamw_init(&opt, m, o->weight_decay)) != MAMA_OK) goto early;
    if (o->resume && o->checkpoint && mama__file_exists(o->checkpoint)) {
        if ((s = mama_checkpoint_load(o->checkpoint, m, &opt, &step, &seed)) != MAMA_OK) { mama_adamw_free(&opt); goto early; }
        if (seed != o->seed) s = MAMA_FAIL(MAMA_ERR_INVALID, "resume: %s was trained with seed %llu, not %llu",
                                           o->checkpoint, (unsigned long long)seed, (unsigned long long)o->seed);
        else if (step > o->steps)
            s = MAMA_FAIL(MAMA_ERR_INVALID, "resume: %s is at step %ld, past this run's steps %ld", o->checkpoint, step,
                          o->steps);
        /* the training settings, and the best validation so far: the lower
         * of the two files' records */
        if (s == MAMA_OK) s = mama__checkpoint_meta(o->checkpoint, o, world, !quiet, &r.best_val_loss, &r.best_val_step);
        if (s == MAMA_OK && best_path) s = mama__checkpoint_meta(best_path, NULL, world, 0, &r.best_val_loss, &r.best_val_step);
        if (s != MAMA_OK) { mama_adamw_free(&opt); goto early; }
        kept = step;
        if (!quiet) fprintf(stderr, "resuming from %s at step %ld\n", o->checkpoint, step);
    }
    /* before the first step: stale temporary files of killed runs go, and
     * the checkpoints must be writable (a probe file, removed again) */
    if (o->log_csv && rank == 0) mama__remove_stale_tmp(o->log_csv, !quiet); /* the log's cut (mama__log_open) */
    for (k = 0; k < 2 && rank == 0; k++) {
        const char *path = k ? best_path : o->checkpoint;
        mama_atomic_file af;
        if (!path) continue;
        mama__remove_stale_tmp(path, !quiet);
        if ((s = mama_atomic_open(&af, path)) != MAMA_OK) { mama_adamw_free(&opt); goto early; }
        mama_atomic_abort(&af);
    }
    if (o->log_csv && rank == 0 && (s = mama__log_open(o->log_csv, step, &log)) != MAMA_OK) {
        mama_adamw_free(&opt);
        goto early;
    }
    if ((s = mama__loader_init(&L, d, o, step * o->accum, o->steps * o->accum, rank, world)) != MAMA_OK) {
        if (log) fclose(log);
        mama_adamw_free(&opt);
        goto early;
    }
    mama__dp_grad_stats(m, &comm0, &wait0, &buckets0);
    t_step0 = mama_time_seconds();
    for (r.steps_done = 0; step < o->steps && (o->stop_at <= 0 || step < o->stop_at); step++) {
        int late = step >= o->late_loss;
        float lr = mama_lr_cosine(step, o->warmup, o->steps, o->lr, o->lr_floor);
        mama_losses sum, Lk;
        mama_step_opts so;
        double gnorm, ips, eta;
        memset(&sum, 0, sizeof sum);
        memset(&so, 0, sizeof so); /* train with dropout: the defaults */
        so.late = mama__opt_pass(late);
        so.use_mv = mama__opt_pass(o->use_mv);
        so.use_sym = mama__opt_pass(o->use_sym);
        so.use_sla = mama__opt_pass(o->use_sla);
        for (k = 0; k < o->accum; k++) {
            long job = step * o->accum + k;
            mama__batch_buf *b;
            mama_batch batch;
            if ((s = mama__loader_get(&L, job, &b)) != MAMA_OK) goto done;
            batch.B = o->batch; batch.images = b->images; batch.ext_images = late ? b->ext : NULL;
            batch.input_ids = b->ids; batch.attention_mask = b->mask;
            so.seed = mama__mix2(seed, (uint64_t)job);
            /* dropout masks are keyed by the row within a rank's batch, so
             * ranks draw their own (statistically, not bitwise, the masks
             * of one process of the global batch) */
            if (world > 1) so.seed = mama__mix2(so.seed, (uint64_t)rank + 0x7000ull);
            /* the last micro-batch's backward starts the gradient sum, bucket
             * by bucket (section 12.7; the earlier ones only accumulate) */
            if (world > 1 && k == o->accum - 1 && !o->no_overlap) mama_model_overlap_grads(m);
            s = mama_model_step(m, &batch, &so, k > 0, &Lk);
            mama__loader_release(&L, job);
            if (s != MAMA_OK) goto done;
            sum.loss += Lk.loss / o->accum; sum.clip += Lk.clip / o->accum; sum.mv += Lk.mv / o->accum;
            sum.sym += Lk.sym / o->accum; sum.sla += Lk.sla / o->accum;
        }
        /* the gradient sum over ranks, once per optimiser step: waits for the
         * overlapped buckets, or one blocking all-reduce (--no-overlap) */
        if (world > 1 && (s = mama_model_allreduce_grads(m)) != MAMA_OK) goto done;
        /* the reference averages the micro-batch losses: so do the gradients */
        if (o->accum > 1) be->scale(be, m->grads, 1.0f / (float)o->accum, ngrad);
        gnorm = mama_clip_grad_norm(be, m->grads, ngrad, o->clip_grad);
        if (!isfinite(gnorm) || !isfinite(sum.loss)) {
            r.skipped_steps++;
            if (++bad_run >= o->max_bad_steps && o->max_bad_steps > 0) {
                s = MAMA_FAIL(MAMA_ERR_NUMERIC, "pretrain: %ld non-finite steps in a row at step %ld (loss %g, gradient "
                              "norm %g); stopped, %s", bad_run, step + 1, sum.loss, gnorm,
                              mama__kept(note, sizeof note, o->checkpoint, kept));
                goto done;
            }
        } else {
            bad_run = 0;
            mama_adamw_step(&opt, m, lr, late);
        }
        r.last = sum;
        r.steps_done++;
        vloss = NAN;
        /* validation after the step (not inside a run of non-finite steps) */
        if (do_val && bad_run == 0 && ((val_every > 0 && (step + 1) % val_every == 0) || step + 1 == o->steps)) {
            if ((s = mama__pretrain_val(m, d, o, step, &vb, &vloss)) != MAMA_OK) goto done;
            r.last_val_loss = vloss;
            /* the objective gains the late losses at late_loss: a val from
             * then on is not compared with an earlier one (which would keep
             * a pre-late checkpoint forever); the best restarts there */
            better = isfinite(vloss) && (r.best_val_step <= 0 || vloss < r.best_val_loss ||
                                         (late && r.best_val_step - 1 < o->late_loss));
            if (better) { r.best_val_loss = vloss; r.best_val_step = step + 1; }
        }
        ips = (double)r.steps_done * o->batch * o->accum * world / (mama_time_seconds() - t_step0);
        eta = (double)(o->steps - step - 1) * o->batch * o->accum * world / (ips > 0 ? ips : 1);
        if (log) {
            fprintf(log, "%ld,%.6g,%.6f,%.6f,%.6f,%.6f,%.6f,%.6g,%ld,%.3f,%.3f,", step + 1, lr, sum.loss, sum.clip,
                    sum.mv, sum.sym, sum.sla, gnorm, r.skipped_steps, ips, mama_time_seconds() - t0);
            if (!isnan(vloss)) fprintf(log, "%.6f", vloss);
            fputc('\n', log);
            if (fflush(log) != 0 || ferror(log)) {
                s = MAMA_FAIL(MAMA_ERR_IO, "log %s: the row of step %ld could not be written: %s", o->log_csv, step + 1,
                              strerror(errno));
                goto done;
            }
        }
        mama__progress(&oq, step, &sum, lr, ips, eta, tty);
        if (!quiet && !isnan(vloss))
            fprintf(stderr, "%sstep %ld/%ld val_loss %.4f%s (best %.4f at step %ld)\n", tty ? "\n" : "", step + 1,
                    o->steps, vloss, better ? " *" : "", r.best_val_loss, r.best_val_step);
        /* the best checkpoint first, then the last (both record the best);
         * never inside a run of non-finite steps: the last good one stays */
        if (better && best_path && (s = mama__dp_checkpoint_save(best_path, m, &opt, step + 1, seed, r.best_val_loss,
                                                                  r.best_val_step, o)) != MAMA_OK) goto done;
        better = 0;
        if (o->checkpoint && o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && step + 1 < o->steps &&
            bad_run == 0) {
            if ((s = mama__dp_checkpoint_save(o->checkpoint, m, &opt, step + 1, seed, r.best_val_loss,
                                              r.best_val_step, o)) != MAMA_OK) goto done;
            kept = step + 1;
        }
    }
    /* reference mode: the ranks' BatchNorm statistics averaged (12.8) */
    s = mama_model_average_bn_stats(m);
    if (s == MAMA_OK && o->checkpoint && bad_run == 0)
        s = mama__dp_checkpoint_save(o->checkpoint, m, &opt, step, seed, r.best_val_loss, r.best_val_step, o);
done:
    /* weights or moments that went non-finite are never written (11.1):
     * say what is left */
    if (s == MAMA_ERR_NUMERIC && strstr(mama_last_error(), "holds a non-finite value")) {
        char why[1024];
        snprintf(why, sizeof why, "%s", mama_last_error());
        s = MAMA_FAIL(MAMA_ERR_NUMERIC, "pretrain: stopped, a checkpoint was not written (%s); %s", why,
                      mama__kept(note, sizeof note, o->checkpoint, kept));
    }
    if (world > 1) {
        double comm1, wait1;
        long buckets1;
        mama__dp_grads_drain(m); /* a failed step may have left bucket all-reduces running */
        mama__dp_grad_stats(m, &comm1, &wait1, &buckets1);
        r.grad_comm_seconds = comm1 - comm0;
        r.grad_wait_seconds = wait1 - wait0;
        r.grad_buckets = buckets1 - buckets0;
    }
    mama__loader_free(&L);
    if (log && fclose(log) != 0 && s == MAMA_OK)
        s = MAMA_FAIL(MAMA_ERR_IO, "log %s: closing failed: %s", o->log_csv, strerror(errno));
    mama_adamw_free(&opt);
early:
    mama_free(vb.images); mama_free(vb.ext); mama_free(vb.ids); mama_free(vb.mask);
    mama_free(best_path);
    r.seconds = mama_time_seconds() - t0;
    r.images_per_s = r.seconds > 0 ? (double)r.steps_done * o->batch * o->accum * world / r.seconds : 0;
    if (res) *res = r;
    return s;
}

/* ==========================================================================
 * 11.3 Metrics (SPEC A.7)
 * ========================================================================== */

/* AUC of scores s (with stride) for "label == cls" by the Mann-Whitney
 * statistic, tied scores sharing their average rank; NaN when one class is
 * absent.  `order` receives the sample indices sorted by ascending score. */
typedef struct mama__scored { float s; int i; } mama__scored;
static int mama__scored_cmp(const void *a, const void *b) {
    const mama__scored *x = (const mama__scored *)a, *y = (const mama__scored *)b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return x->i - y->i;
}
static double mama__auc(const float *s, int stride, const int *y, int cls, int n, mama__scored *order) {
    long pos = 0, neg = 0;
    double rank_sum = 0;
    int i, j;
    for (i = 0; i < n; i++) { order[i].s = s[(size_t)i * stride]; order[i].i = i; }
    qsort(order, (size_t)n, sizeof *order, mama__scored_cmp);
    for (i = 0; i < n; ) {
        int k = i;
        double avg;
        while (k + 1 < n && order[k + 1].s == order[i].s) k++;
        avg = 0.5 * (double)(i + k) + 1.0;
        for (j = i; j <= k; j++)
            if (y[order[j].i] == cls) rank_sum += avg;
        i = k + 1;
    }
    for (i = 0; i < n; i++) { if (y[i] == cls) pos++; else neg++; }
    if (!pos || !neg) return NAN;
    return (rank_sum - (double)pos * (pos + 1) / 2.0) / ((double)pos * neg);
}

MAMA_API mama_status mama_metrics_compute(const float *probs, const int *labels, int n, int K, mama_metrics *out) {
    int i, k, present = 0;
    mama__scored *order;
    double recall_sum = 0, auc_sum = 0;
    int auc_n = 0;
    memset(out, 0, sizeof *out);
    if (K < 2 || K > MAMA_MAX_CLASSES) return MAMA_FAIL(MAMA_ERR_INVALID, "metrics: %d classes (2..%d)", K, MAMA_MAX_CLASSES);
    if (n < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "metrics: no samples");
    out->n = n; out->K = K;
    for (i = 0; i < n; i++) {
        int best = 0;
        if (labels[i] < 0 || labels[i] >= K) return MAMA_FAIL(MAMA_ERR_INVALID, "metrics: label %d of sample %d outside 0..%d", labels[i], i, K - 1);
        for (k = 1; k < K; k++) if (probs[(size_t)i * K + k] > probs[(size_t)i * K + best]) best = k;
        out->confusion[labels[i]][best]++;
        if (best == labels[i]) out->accuracy += 1;
    }
    out->accuracy /= n;
    for (k = 0; k < K; k++) {
        int row = 0, j;
        for (j = 0; j < K; j++) row += out->confusion[k][j];
        if (row) { recall_sum += (double)out->confusion[k][k] / row; present++; }
    }
    out->balanced_accuracy = present ? recall_sum / present : NAN;
    MAMA_TRY(mama_alloc((void **)&order, sizeof(mama__scored) * (size_t)n, "metrics"));
    for (k = 0; k < K; k++) {
        out->class_auc[k] = mama__auc(probs + k, K, labels, k, n, order);
        if (out->class_auc[k] == out->class_auc[k]) { auc_sum += out->class_auc[k]; auc_n++; }
        if (K == 2) break; /* binary: the AUC of the positive score */
    }
    if (K == 2) {
        out->class_auc[1] = mama__auc(probs + 1, 2, labels, 1, n, order);
        out->class_auc[0] = out->class_auc[1];
        out->auc = out->class_auc[1];
    } else {
        out->auc = auc_n ? auc_sum / auc_n : NAN;
    }
    if (K == 2) {
        double tp = out->confusion[1][1], fn = out->confusion[1][0], fp = out->confusion[0][1], tn = out->confusion[0][0];
        double ptp = 0, pfp = 0, npos = tp + fn, best_gap = 1e30, prec, rec;
        out->sensitivity = npos ? tp / npos : NAN;
        out->specificity = (tn + fp) ? tn / (tn + fp) : NAN;
        out->ppv = (tp + fp) ? tp / (tp + fp) : NAN;
        out->npv = (tn + fn) ? tn / (tn + fn) : NAN;
        out->f1 = (2 * tp + fp + fn) ? 2 * tp / (2 * tp + fp + fn) : NAN;
        /* ROC points: predicting positive when score >= t, for each
         * distinct t in ascending order (order[] holds the positive-class
         * scores sorted by the AUC call above); the point whose sensitivity
         * is nearest 0.8, no interpolation. */
        out->spec_at_80_sens = NAN;
        {
            double below_pos = 0, below_neg = 0; /* samples with score < t */
            for (i = 0; i < n; i++) {
                if (i == 0 || order[i].s != order[i - 1].s) {
                    double sn = npos > 0 ? (npos - below_pos) / npos : 0;
                    /* ties in sensitivity: the ROC point is the one with the best specificity */
                    if (npos > 0 && n - npos > 0 &&
                        (fabs(sn - 0.8) < best_gap - 1e-12 ||
                         (fabs(fabs(sn - 0.8) - best_gap) <= 1e-12 && below_neg / (n - npos) > out->spec_at_80_sens))) {
                        best_gap = fabs(sn - 0.8);
                        out->spec_at_80_sens = below_neg / (n - npos);
                    }
                }
                if (labels[order[i].i] == 1) below_pos++; else below_neg++;
            }
        }
        /* probabilistic F1 (RSNA screening challenge): soft counts */
        for (i = 0; i < n; i++) {
            double p = probs[(size_t)i * 2 + 1] / (probs[(size_t)i * 2] + probs[(size_t)i * 2 + 1] + 1e-30);
            if (labels[i] == 1) ptp += p; else pfp += p;
        }
        prec = (ptp + pfp) > 0 ? ptp / (ptp + pfp) : 0;
        rec = npos > 0 ? ptp / npos : 0;
        out->pf1 = (prec + rec) > 0 ? 2 * prec * rec / (prec + rec) : 0;
    }
    mama_free(order);
    return MAMA_OK;
}

MAMA_API const char *mama_task_name(mama_zeroshot_task t) {
    return t == MAMA_ZEROSHOT_BIRADS ? "birads" : t == MAMA_ZEROSHOT_DENSITY ? "density" : "cancer";
}

MAMA_API int mama_task_label(mama_zeroshot_task t, const mama_record *r) {
    static const char letters[] = "ANBPSMK";
    if (t == MAMA_ZEROSHOT_BIRADS) {
        const char *p = strlen(r->birads) == 1 ? strchr(letters, r->birads[0]) : NULL;
        return p ? (int)(p - letters) : -1;
    }
    if (t == MAMA_ZEROSHOT_DENSITY) return r->density >= 1 && r->density <= 4 ? r->density - 1 : -1;
    return r->cancer == 0 || r->cancer == 1 ? r->cancer : -1;
}

MAMA_API const char *mama_task_class_name(mama_zeroshot_task t, int cls) {
    static const char *const names[3][7] = {{"A", "N", "B", "P", "S", "M", "K"}, {"1", "2", "3", "4"}, {"0", "1"}};
    return (int)t >= 0 && (int)t < 3 && cls >= 0 && cls < mama_zeroshot_num_classes(t) ? names[t][cls] : NULL;
}

MAMA_API mama_status mama_task_parse_classes(mama_zeroshot_task t, const char *list, const char *what, unsigned *mask) {
    const char *p = list;
    int K = mama_zeroshot_num_classes(t), n = 0, k;
    if (!what) what = "classes";
    *mask = 0;
    if (!K || !list) return MAMA_FAIL(MAMA_ERR_INVALID, "%s: no list or a bad task", what);
    while (*p) {
        size_t len = strcspn(p, ",");
        for (k = 0; k < K; k++) /* the class name, or a BI-RADS category number */
            if ((len == 1 && *p == mama_task_class_name(t, k)[0]) ||
                (t == MAMA_ZEROSHOT_BIRADS && len == 1 && *p == '0' + k))
                break;
        if (k == K)
            return MAMA_FAIL(MAMA_ERR_INVALID, "%s: '%.*s' is not a %s class (%s)", what, (int)len, p, mama_task_name(t),
                             t == MAMA_ZEROSHOT_BIRADS ? "A N B P S M K or 0..6" : t == MAMA_ZEROSHOT_DENSITY ? "1..4" : "0 1");
        if (!(*mask >> k & 1u)) n++;
        *mask |= 1u << k;
        p += len + (p[len] == ',');
    }
    if (n < 2) return MAMA_FAIL(MAMA_ERR_INVALID, "%s: '%s' names %d %s class(es); at least two", what, list, n, mama_task_name(t));
    return MAMA_OK;
}

MAMA_API void mama_head_free(mama_head *h) {
    mama_free(h->W); mama_free(h->b);
    memset(h, 0, sizeof *h);
}

MAMA_API void mama_eval_result_free(mama_eval_result *r) {
    mama_free(r->probs); mama_free(r->labels); mama_free(r->records);
    mama_head_free(&r->head);
    memset(r, 0, sizeof *r);
}

/* The options rule on mama_eval_opts for a task, then the checks. */
static mama_status mama__eval_opts_resolve(const mama_eval_opts *in, mama_zeroshot_task task, mama_eval_opts *o) {
    int K = mama_zeroshot_num_classes(task), k, n = 0;
    if (!in) memset(o, 0, sizeof *o); else if (in != o) *o = *in;
    o->balanced_test = mama__opt_float(o->balanced_test, 0.0f);
    if (!o->subset_seed) o->subset_seed = MAMA_EVAL_DEFAULT_SUBSET_SEED;
    o->double_softmax = mama__opt_flag(o->double_softmax, 0);
    o->ref_text_feature = mama__opt_flag(o->ref_text_feature, 0);
    if (!(o->balanced_test >= 0 && o->balanced_test <= 1))
        return MAMA_FAIL(MAMA_ERR_INVALID, "eval: balanced_test %g outside (0, 1]", (double)o->balanced_test);
    for (k = 0; k < K; k++) n += (int)(o->classes >> k & 1u);
    if (o->classes && (n < 2 || (o->classes >> K) != 0))
        return MAMA_FAIL(MAMA_ERR_INVALID, "eval: classes mask 0x%x: %s has classes 0..%d and at least two must be chosen",
                         o->classes, mama_task_name(task), K - 1);
    return MAMA_OK;
}

/* The class-balanced subset of the labelled items (mama_eval_opts). */
typedef struct mama__keyed { uint64_t h; int y, i; } mama__keyed;
static int mama__keyed_cmp(const void *a, const void *b) {
    const mama__keyed *x = (const mama__keyed *)a, *y = (const mama__keyed *)b;
    if (x->y != y->y) return x->y - y->y;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return x->i - y->i;
}
static mama_status mama__balanced_subset(const mama_dataset *d, const mama_eval_opts *eo, mama_eval_result *r) {
    int cnt[MAMA_MAX_CLASSES], Kp = 0, q, i, k, taken = 0, kept = 0;
    size_t dl = strlen(d->man.dir);
    mama__keyed *key;
    unsigned char *take;
    memset(cnt, 0, sizeof cnt);
    for (i = 0; i < r->n; i++) cnt[r->labels[i]]++;
    for (k = 0; k < r->K; k++) Kp += cnt[k] > 0;
    q = (int)floor((double)eo->balanced_test * r->n / Kp + 0.5);
    if (q < 1) q = 1;
    MAMA_TRY(mama_alloc((void **)&key, (sizeof *key + 1) * (size_t)r->n, "balanced subset"));
    take = (unsigned char *)(key + r->n);
    for (i = 0; i < r->n; i++) { /* the path below the manifest's folder: the same subset wherever it lies */
        const char *p = d->man.records[r->records[i]].path;
        if (dl && !strncmp(p, d->man.dir, dl)) p += dl + (p[dl] == '/');
        key[i].h = mama__mix2(eo->subset_seed, mama__tx_fnv1a(p, strlen(p)));
        key[i].y = r->labels[i];
        key[i].i = i;
        take[i] = 0;
    }
    qsort(key, (size_t)r->n, sizeof *key, mama__keyed_cmp);
    for (i = 0; i < r->n; i++) {
        taken = i > 0 && key[i].y == key[i - 1].y ? taken + 1 : 0;
        if (taken < q) take[key[i].i] = 1;
    }
    for (i = 0; i < r->n; i++)
        if (take[i]) { r->records[kept] = r->records[i]; r->labels[kept++] = r->labels[i]; }
    r->n = kept;
    mama_free(key);
    return MAMA_OK;
}

/* The labelled records of a split for a task and the chosen classes
 * (labels: column indices), the balanced subset when `subset`. */
static mama_status mama__eval_items(mama_dataset *d, mama_split split, mama_zeroshot_task task, const mama_eval_opts *eo,
                                    int subset, mama_eval_result *out) {
    const int *idx;
    int n = mama_dataset_split(d, split, &idx), i, k, col[MAMA_MAX_CLASSES], K = mama_zeroshot_num_classes(task);
    mama_status s;
    memset(out, 0, sizeof *out);
    for (k = 0; k < K; k++) col[k] = !eo->classes || (eo->classes >> k & 1u) ? out->K++ : -1;
    for (k = 0; k < K; k++) if (col[k] >= 0) out->classes[col[k]] = k;
    K = out->K;
    MAMA_TRY(mama_alloc((void **)&out->records, sizeof(int) * (size_t)(n + 1), "eval items"));
    if (mama_alloc((void **)&out->labels, sizeof(int) * (size_t)(n + 1), "eval items") != MAMA_OK ||
        mama_alloc((void **)&out->probs, sizeof(float) * (size_t)(n + 1) * K, "eval items") != MAMA_OK) {
        mama_eval_result_free(out);
        return MAMA_ERR_NOMEM;
    }
    for (i = 0; i < n; i++) {
        int y = mama_task_label(task, &d->man.records[idx[i]]);
        if (y < 0 || col[y] < 0) continue;
        out->records[out->n] = idx[i];
        out->labels[out->n++] = col[y];
    }
    if (out->n == 0) {
        mama_eval_result_free(out);
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: no %s images with a %s label%s", d->man.path, mama_split_name(split),
                         mama_task_name(task), eo->classes ? " of the chosen classes" : "");
    }
    if (subset && eo->balanced_test > 0 && (s = mama__balanced_subset(d, eo, out)) != MAMA_OK) {
        mama_eval_result_free(out);
        return s;
    }
    return MAMA_OK;
}

/* Image embeddings (and pooled features) of records lo..hi-1 into rows
 * 0..hi-lo-1 of emb / pooled, eval pipeline (or augmented, each image's
 * randomness keyed by its index in `records`), in chunks the model can take. */
static mama_status mama__encode_range(mama_model *m, mama_dataset *d, const int *records, int lo, int hi, float *emb,
                                      float *pooled, int train_aug, uint64_t seed) {
    const mama_config *c = mama_model_config(m);
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    int chunk = 2 * m->max_batch, i, j;
    float *buf;
    mama_status s = MAMA_OK;
    MAMA_TRY(mama_alloc((void **)&buf, sizeof(float) * img * (size_t)chunk, "encode buffer"));
    for (i = lo; i < hi && s == MAMA_OK; i += chunk) {
        int nb = hi - i < chunk ? hi - i : chunk;
#ifdef _OPENMP
#pragma omp parallel for
#endif
        for (j = 0; j < nb; j++) {
            mama_rng r;
            mama_rng_seed(&r, mama__mix2(seed, (uint64_t)(i + j)));
            if (mama_dataset_image(d, records[i + j], train_aug, &r, buf + img * j) != MAMA_OK) s = MAMA_ERR_IO;
        }
        if (s != MAMA_OK) break;
        s = mama_encode_images(m, buf, nb, emb ? emb + (size_t)(i - lo) * c->embed_dim : NULL,
                               pooled ? pooled + (size_t)(i - lo) * c->vision_dim : NULL);
    }
    mama_free(buf);
    if (s == MAMA_ERR_IO) return MAMA_FAIL(s, "encoding images: %s", mama_last_error());
    return s;
}

/* All records; data parallel: each rank encodes its contiguous share and
 * the features are all-gathered (section 12). */
static mama_status mama__encode_records(mama_model *m, mama_dataset *d, const int *records, int n, float *emb,
                                        float *pooled, int train_aug, uint64_t seed) {
    if (mama__dp_world(m) > 1) return mama__dp_encode_records(m, d, records, n, emb, pooled, train_aug, seed);
    return mama__encode_range(m, d, records, 0, n, emb, pooled, train_aug, seed);
}

/* ---- 11.4 Zeroshot ---------------------------------------------------- */
/* Softmax over each row of p [n, K] in place. */
static void mama__softmax_rows(float *p, int n, int K) {
    int i, k;
    for (i = 0; i < n; i++, p += K) {
        float mx = p[0], sum = 0;
        for (k = 1; k < K; k++) if (p[k] > mx) mx = p[k];
        for (k = 0; k < K; k++) { p[k] = expf(p[k] - mx); sum += p[k]; }
        for (k = 0; k < K; k++) p[k] /= sum;
    }
}

MAMA_API mama_status mama_zeroshot(mama_model *m, mama_dataset *d, mama_split split, mama_zeroshot_task task,
                                    int ref_text_feature, mama_eval_result *out) {
    mama_eval_opts o;
    memset(&o, 0, sizeof o);
    o.ref_text_feature = ref_text_feature ? 1 : 0;
    return mama_zeroshot_ex(m, d, split, task, &o, out);
}

MAMA_API mama_status mama_zeroshot_ex(mama_model *m, mama_dataset *d, mama_split split, mama_zeroshot_task task,
                                      const mama_eval_opts *eopts, mama_eval_result *out) {
    const mama_config *c = mama_model_config(m);
    int E = c->embed_dim, T = c->context, K, i, k, B = m->max_batch, queued = 0;
    float *img_emb = NULL, *txt_emb = NULL, scale;
    int *ids = NULL, *mask = NULL, *owner = NULL;
    char *caption = NULL;
    mama_eval_opts eo;
    mama_status s;
    memset(out, 0, sizeof *out);
    if (!d->tok) return MAMA_FAIL(MAMA_ERR_INVALID, "zeroshot needs a tokenizer");
    MAMA_TRY(mama__eval_opts_resolve(eopts, task, &eo));
    MAMA_TRY(mama__eval_items(d, split, task, &eo, 1, out));
    K = out->K;
    scale = expf(mama__read_scalar(m, m->w.logit_scale));
#define MAMA__A(p, n) if ((s = mama_alloc((void **)&(p), (n), "zeroshot buffers")) != MAMA_OK) goto done
    MAMA__A(img_emb, sizeof(float) * (size_t)out->n * E);
    MAMA__A(txt_emb, sizeof(float) * (size_t)B * E);
    MAMA__A(ids, sizeof(int) * (size_t)B * T);
    MAMA__A(mask, sizeof(int) * (size_t)B * T);
    MAMA__A(owner, sizeof(int) * (size_t)B * 2);
#undef MAMA__A
    if ((s = mama__encode_records(m, d, out->records, out->n, img_emb, NULL, 0, 0)) != MAMA_OK) goto done;
    /* every (image, class) caption, batched B at a time */
    for (i = 0; i < out->n; i++) {
        mama_caption_fields f;
        mama_record_caption_fields(&d->man.records[out->records[i]], &f);
        for (k = 0; k < K; k++) {
            if ((s = mama_zeroshot_caption_alloc(task, out->classes[k], &f, &caption)) != MAMA_OK) goto done;
            s = mama_tokenizer_encode_caption(d->tok, caption, T, ids + (size_t)queued * T, mask + (size_t)queued * T, NULL);
            mama_free(caption);
            caption = NULL;
            if (s != MAMA_OK) goto done;
            owner[2 * queued] = i; owner[2 * queued + 1] = k;
            if (++queued == B || (i == out->n - 1 && k == K - 1)) {
                int q, e;
                if ((s = mama__encode_texts_ex(m, ids, mask, queued, txt_emb, eo.ref_text_feature)) != MAMA_OK) goto done;
                for (q = 0; q < queued; q++) {
                    double dot = 0;
                    const float *a = img_emb + (size_t)owner[2 * q] * E, *b = txt_emb + (size_t)q * E;
                    for (e = 0; e < E; e++) dot += (double)a[e] * b[e];
                    out->probs[(size_t)owner[2 * q] * K + owner[2 * q + 1]] = (float)(scale * dot);
                }
                queued = 0;
            }
        }
    }
    mama__softmax_rows(out->probs, out->n, K); /* over the classes */
    if (eo.double_softmax) mama__softmax_rows(out->probs, out->n, K); /* the reference's second one (A.7b) */
    s = mama_metrics_compute(out->probs, out->labels, out->n, K, &out->metrics);
done:
    mama_free(img_emb); mama_free(txt_emb); mama_free(ids); mama_free(mask); mama_free(owner);
    if (s != MAMA_OK) mama_eval_result_free(out);
    return s;
}

/* ---- 11.5 Linear probe (SPEC A.7) -------------------------------------- */
/* The options rule (6.1b) on every field (all of them filled before the
 * checks), then the checks. */
static mama_status mama__eval_opts_resolve(const mama_eval_opts *in, mama_zeroshot_task task, mama_eval_opts *o);
static mama_status mama__probe_opts_resolve(const mama_probe_opts *in, mama_probe_opts *o) {
    mama_probe_opts z;
    if (in) z = *in; else memset(&z, 0, sizeof z); /* (in may be o) */
    in = &z;
    memset(o, 0, sizeof *o);
    o->steps = mama__opt_long(in->steps, MAMA_PROBE_DEFAULT_STEPS);
    o->batch = mama__opt_int(in->batch, MAMA_PROBE_DEFAULT_BATCH);
    o->lr = mama__opt_float(in->lr, MAMA_PROBE_DEFAULT_LR);
    o->lr_floor = mama__opt_float(in->lr_floor, MAMA_PROBE_DEFAULT_LR_FLOOR);
    o->warmup = mama__opt_long(in->warmup, MAMA_PROBE_DEFAULT_WARMUP);
    o->momentum = mama__opt_float(in->momentum, MAMA_PROBE_DEFAULT_MOMENTUM);
    o->weight_decay = mama__opt_float(in->weight_decay, MAMA_PROBE_DEFAULT_WEIGHT_DECAY);
    o->augment = mama__opt_flag(in->augment, 1);
    o->seed = in->seed ? in->seed : MAMA_PROBE_DEFAULT_SEED;
    o->quiet = mama__opt_flag(in->quiet, 0);
    o->val_every = in->val_every < 0 ? MAMA_OFF : in->val_every; /* 0: the default rule (steps / 10) */
    MAMA_TRY(mama__eval_opts_resolve(&in->eval, MAMA_ZEROSHOT_BIRADS, &o->eval)); /* the task's classes: below */
    if (o->steps < 1 || o->batch < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "probe: steps and batch must be >= 1");
    if (!(o->lr >= 0) || !(o->lr_floor >= 0) || !(o->momentum >= 0) || !(o->weight_decay >= 0))
        return MAMA_FAIL(MAMA_ERR_INVALID, "probe: lr, lr_floor, momentum and weight_decay must be numbers >= 0");
    return MAMA_OK;
}

MAMA_API void mama_probe_opts_default(mama_probe_opts *o) {
    mama__probe_opts_resolve(NULL, o);
}

/* One SGD step of the linear classifier (W [K, D], b [K]) on a batch of
 * features x [n, D]: softmax cross-entropy, mean over the batch. */
static double mama__probe_step(float *W, float *b, float *gW, float *gb, float *mW, float *mb, const float *x,
                               const int *y, int n, int K, int D, float lr, const mama_probe_opts *o, int first) {
    double loss = 0;
    int i, k, j;
    float logits[MAMA_MAX_CLASSES];
    memset(gW, 0, sizeof(float) * (size_t)K * D);
    memset(gb, 0, sizeof(float) * (size_t)K);
    for (i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D;
        float mx = -1e30f, sum = 0;
        for (k = 0; k < K; k++) {
            double z = b[k];
            for (j = 0; j < D; j++) z += (double)W[(size_t)k * D + j] * xi[j];
            logits[k] = (float)z;
            if (logits[k] > mx) mx = logits[k];
        }
        for (k = 0; k < K; k++) { logits[k] = expf(logits[k] - mx); sum += logits[k]; }
        loss -= log(logits[y[i]] / sum) / n;
        for (k = 0; k < K; k++) {
            float g = (logits[k] / sum - (k == y[i] ? 1.0f : 0.0f)) / (float)n;
            gb[k] += g;
            for (j = 0; j < D; j++) gW[(size_t)k * D + j] += g * xi[j];
        }
    }
    /* PyTorch SGD: g += wd p; buf = mu buf + g (buf = g at first); p -= lr buf */
    mama__cpu_sgd_step(NULL, W, gW, mW, (size_t)K * D, lr, o->momentum, o->weight_decay, first);
    mama__cpu_sgd_step(NULL, b, gb, mb, (size_t)K, lr, o->momentum, o->weight_decay, first);
    return loss;
}

/* Softmax probabilities of the linear classifier (W [K, D], b [K]) on
 * features x [n, D], into probs [n, K]. */
static void mama__classifier_probs(const float *W, const float *b, const float *x, int n, int K, int D, float *probs) {
    int i, k, j;
    for (i = 0; i < n; i++) {
        float *p = probs + (size_t)i * K, mx = -1e30f, sum = 0;
        for (k = 0; k < K; k++) {
            double z = b[k];
            for (j = 0; j < D; j++) z += (double)W[(size_t)k * D + j] * x[(size_t)i * D + j];
            p[k] = (float)z;
            if (p[k] > mx) mx = p[k];
        }
        for (k = 0; k < K; k++) { p[k] = expf(p[k] - mx); sum += p[k]; }
        for (k = 0; k < K; k++) p[k] /= sum;
    }
}

/* Hand the trained classifier (*W, *b, now owned by out) to out->head. */
static mama_status mama__head_keep(mama_eval_result *out, mama_zeroshot_task task, int D, int finetuned, float **W,
                                   float **b) {
    mama_head *h = &out->head;
    h->task = (int)task; h->K = out->K; h->D = D; h->finetuned = finetuned;
    memcpy(h->classes, out->classes, sizeof h->classes);
    h->W = *W; h->b = *b;
    *W = *b = NULL;
    return MAMA_OK;
}

MAMA_API mama_status mama_head_apply(const mama_head *h, const float *x, int n, float *probs) {
    if (!h || !h->W || !h->b || !x || !probs || n < 0 || h->K < 2 || h->K > MAMA_MAX_CLASSES)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_head_apply: NULL argument or an empty head");
    mama__classifier_probs(h->W, h->b, x, n, h->K, h->D, probs);
    return MAMA_OK;
}

MAMA_API mama_status mama_head_save(const mama_head *h, const char *path) {
    mama_st_writer *w = NULL;
    int64_t sw[2], sb;
    char cls[64] = "";
    int k;
    size_t len = 0;
    mama_status s;
    if (!h || !h->W || !h->b || h->K < 2 || h->K > MAMA_MAX_CLASSES || h->D < 1 || h->task < 0 || h->task > 2)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_head_save: %s: an empty or malformed head", path);
    sw[0] = h->K; sw[1] = h->D; sb = h->K;
    for (k = 0; k < h->K; k++)
        len += (size_t)snprintf(cls + len, sizeof cls - len, "%s%s", k ? "," : "",
                                mama_task_class_name((mama_zeroshot_task)h->task, h->classes[k]));
    MAMA_TRY(mama_st_writer_create(&w));
    s = mama_st_writer_add(w, "head.weight", MAMA_F32, 2, sw, h->W);
    if (s == MAMA_OK) s = mama_st_writer_add(w, "head.bias", MAMA_F32, 1, &sb, h->b);
    if (s == MAMA_OK) s = mama_st_writer_meta(w, "format", "mama-head-1");
    if (s == MAMA_OK) s = mama_st_writer_meta(w, "task", mama_task_name((mama_zeroshot_task)h->task));
    if (s == MAMA_OK) s = mama_st_writer_meta(w, "classes", cls);
    if (s == MAMA_OK) s = mama_st_writer_meta(w, "finetuned", h->finetuned ? "1" : "0");
    if (s == MAMA_OK) s = mama_st_writer_write(w, path);
    mama_st_writer_free(w);
    return s;
}

MAMA_API mama_status mama_head_load(mama_head *h, const char *path) {
    mama_safetensors st;
    const mama_st_tensor *tw, *tb;
    const char *task, *cls, *fmt, *ft;
    unsigned mask = 0;
    int t, k;
    mama_status s = MAMA_OK;
    memset(h, 0, sizeof *h);
    MAMA_TRY(mama_st_open(&st, path));
    fmt = mama_st_meta(&st, "format"); task = mama_st_meta(&st, "task"); cls = mama_st_meta(&st, "classes");
    ft = mama_st_meta(&st, "finetuned");
    tw = mama_st_find(&st, "head.weight"); tb = mama_st_find(&st, "head.bias");
    for (t = 0; t < 3 && task && strcmp(task, mama_task_name((mama_zeroshot_task)t)); t++) {}
    if (!fmt || strcmp(fmt, "mama-head-1") || !task || t == 3 || !cls || !tw || !tb || tw->ndim != 2 || tb->ndim != 1)
        s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: not a classifier head (format mama-head-1 with task, classes, head.weight "
                      "[K, D] and head.bias [K]; written by probe or finetune)", path);
    if (s == MAMA_OK) s = mama_task_parse_classes((mama_zeroshot_task)t, cls, path, &mask);
    if (s == MAMA_OK) {
        int n = 0;
        h->task = t; h->K = (int)tw->shape[0]; h->D = (int)tw->shape[1]; h->finetuned = ft && !strcmp(ft, "1");
        for (k = 0; k < MAMA_MAX_CLASSES; k++) if (mask >> k & 1u) h->classes[n++] = k;
        if (n != h->K || tb->shape[0] != h->K || h->D < 1)
            s = MAMA_FAIL(MAMA_ERR_SHAPE, "%s: head.weight [%lld, %lld], head.bias [%lld] and %d classes (%s) disagree",
                          path, (long long)tw->shape[0], (long long)tw->shape[1], (long long)tb->shape[0], n, cls);
    }
    if (s == MAMA_OK) s = mama_alloc((void **)&h->W, sizeof(float) * (size_t)h->K * h->D, "head");
    if (s == MAMA_OK) s = mama_alloc((void **)&h->b, sizeof(float) * (size_t)h->K, "head");
    if (s == MAMA_OK) s = mama_st_read_f32(&st, "head.weight", h->W, (size_t)h->K * h->D);
    if (s == MAMA_OK) s = mama_st_read_f32(&st, "head.bias", h->b, (size_t)h->K);
    mama_st_close(&st);
    if (s != MAMA_OK) mama_head_free(h);
    return s;
}

MAMA_API mama_status mama_linear_probe(mama_model *m, mama_dataset *d, mama_zeroshot_task task,
                                       const mama_probe_opts *opts, mama_split eval_split, mama_eval_result *out) {
    mama_probe_opts ro;          /* the resolved options (section 1's rule) */
    const mama_probe_opts *o = &ro;
    const mama_config *c = mama_model_config(m);
    mama_eval_result tr;
    int D = c->vision_dim, K, i, k, n_cls[MAMA_MAX_CLASSES], *by_class = NULL;
    int cls_start[MAMA_MAX_CLASSES + 1], present[MAMA_MAX_CLASSES], npresent = 0, *batch_rec = NULL, *batch_y = NULL;
    float *W = NULL, *b = NULL, *gW = NULL, *gb = NULL, *mW = NULL, *mb = NULL, *feat = NULL, *bx = NULL, *tf = NULL;
    long step;
    mama_rng rng;
    mama_status s;
    double t0 = mama_time_seconds();
    memset(out, 0, sizeof *out);
    MAMA_TRY(mama__probe_opts_resolve(opts, &ro));
    MAMA_TRY(mama__eval_opts_resolve(&ro.eval, task, &ro.eval));
    MAMA_TRY(mama__eval_items(d, MAMA_SPLIT_TRAIN, task, &o->eval, 0, &tr));
    K = tr.K;
#define MAMA__A(p, n) if ((s = mama_calloc((void **)&(p), (n), "linear probe")) != MAMA_OK) goto done
    MAMA__A(W, sizeof(float) * (size_t)K * D); MAMA__A(b, sizeof(float) * K);
    MAMA__A(gW, sizeof(float) * (size_t)K * D); MAMA__A(gb, sizeof(float) * K);
    MAMA__A(mW, sizeof(float) * (size_t)K * D); MAMA__A(mb, sizeof(float) * K);
    MAMA__A(by_class, sizeof(int) * (size_t)tr.n);
    MAMA__A(batch_rec, sizeof(int) * (size_t)o->batch); MAMA__A(batch_y, sizeof(int) * (size_t)o->batch);
    MAMA__A(bx, sizeof(float) * (size_t)o->batch * D);
    if (!o->augment) MAMA__A(feat, sizeof(float) * (size_t)tr.n * D);
#undef MAMA__A
    /* class-balanced sampling: each draw picks a class uniformly among the
     * present ones, then an image of it: P(image) proportional to 1/count */
    memset(n_cls, 0, sizeof n_cls);
    for (i = 0; i < tr.n; i++) n_cls[tr.labels[i]]++;
    cls_start[0] = 0;
    for (k = 0; k < K; k++) { cls_start[k + 1] = cls_start[k] + n_cls[k]; if (n_cls[k]) present[npresent++] = k; }
    {
        int fill[MAMA_MAX_CLASSES];
        for (k = 0; k < K; k++) fill[k] = cls_start[k];
        for (i = 0; i < tr.n; i++) by_class[fill[tr.labels[i]]++] = i;
    }
    mama_rng_seed(&rng, o->seed);
    {   /* PyTorch's nn.Linear initialisation */
        float bound = 1.0f / sqrtf((float)D);
        for (i = 0; i < K * D; i++) W[i] = bound * (2 * mama_rng_uniform(&rng) - 1);
        for (k = 0; k < K; k++) b[k] = bound * (2 * mama_rng_uniform(&rng) - 1);
    }
    if (!o->augment && (s = mama__encode_records(m, d, tr.records, tr.n, NULL, feat, 0, 0)) != MAMA_OK) goto done;
    for (step = 0; step < o->steps; step++) {
        float lr = mama_lr_cosine(step, o->warmup, o->steps, o->lr, o->lr_floor);
        double loss;
        for (i = 0; i < o->batch; i++) {
            int cls = present[mama_rng_below(&rng, (uint32_t)npresent)];
            int item = by_class[cls_start[cls] + (int)mama_rng_below(&rng, (uint32_t)n_cls[cls])];
            batch_rec[i] = tr.records[item];
            batch_y[i] = cls;
            if (!o->augment) memcpy(bx + (size_t)i * D, feat + (size_t)item * D, sizeof(float) * D);
        }
        if (o->augment && (s = mama__encode_records(m, d, batch_rec, o->batch, NULL, bx, 1,
                                                    mama__mix2(o->seed, (uint64_t)step))) != MAMA_OK) goto done;
        loss = mama__probe_step(W, b, gW, gb, mW, mb, bx, batch_y, o->batch, K, D, lr, o, step == 0);
        if (!o->quiet && mama__dp_rank(m) == 0 && ((step + 1) % (o->steps / 10 > 0 ? o->steps / 10 : 1) == 0))
            fprintf(stderr, "probe %s: step %ld/%ld loss %.4f lr %.2e (%.0fs)\n", mama_task_name(task), step + 1,
                    o->steps, loss, lr, mama_time_seconds() - t0);
    }
    /* evaluation on the held-out split */
    if ((s = mama__eval_items(d, eval_split, task, &o->eval, 1, out)) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&tf, sizeof(float) * (size_t)out->n * D, "linear probe")) != MAMA_OK) goto done;
    if ((s = mama__encode_records(m, d, out->records, out->n, NULL, tf, 0, 0)) != MAMA_OK) goto done;
    mama__classifier_probs(W, b, tf, out->n, K, D, out->probs);
    s = mama_metrics_compute(out->probs, out->labels, out->n, K, &out->metrics);
    if (s == MAMA_OK) s = mama__head_keep(out, task, D, 0, &W, &b);
done:
    mama_eval_result_free(&tr);
    mama_free(W); mama_free(b); mama_free(gW); mama_free(gb); mama_free(mW); mama_free(mb);
    mama_free(by_class); mama_free(batch_rec); mama_free(batch_y); mama_free(bx); mama_free(feat); mama_free(tf);
    if (s != MAMA_OK) mama_eval_result_free(out);
    return s;
}

/* ---- 11.5b Full fine-tuning -------------------------------------------- */
MAMA_API mama_status mama_finetune(mama_model *m, mama_dataset *d, mama_zeroshot_task task, const mama_probe_opts *opts,
                                   mama_split eval_split, mama_eval_result *out) {
    mama_probe_opts ro;          /* the resolved options (section 1's rule) */
    const mama_probe_opts *o = &ro;
    mama_status rs = mama__probe_opts_resolve(opts, &ro);
    mama_backend *be = m->be;
    const mama_config *c = mama_model_config(m);
    const mama_param_info *head = mama_model_find_param(m, "img_encoder_q.global_embed.weight");
    mama_eval_result tr;
    int D = c->vision_dim, K, i, k, n_cls[MAMA_MAX_CLASSES], *by_class = NULL;
    int cls_start[MAMA_MAX_CLASSES + 1], present[MAMA_MAX_CLASSES], npresent = 0, *batch_y = NULL, B = o->batch;
    /* the tower takes at most C = 2 max_batch images at a time: a larger
     * batch goes through in chunks (forward all for the pooled features,
     * then per chunk, last first, forward again where its activations are
     * gone and backward, the gradients summing up), exactly one batch */
    int C = 2 * m->max_batch, j0, nb;
    /* data parallel (section 12): o->batch per rank; every rank draws the
     * whole global batch of Bg = world * B from the same sampler, loads and
     * encodes its slice [r0, r0 + B), and the pooled features are gathered,
     * so the classifier steps identically on every rank and the tower's
     * gradient is summed over ranks: one process of batch Bg, exactly. */
    int world = mama__dp_world(m), Bg = B * world, r0 = mama__dp_rank(m) * B;
    float *W = NULL, *b = NULL, *gW = NULL, *gb = NULL, *mW = NULL, *mb = NULL, *bx = NULL, *tf = NULL, *imgs = NULL;
    float *vis_mom = NULL, *dpool = NULL, *bxl = NULL;
    size_t n_vis, img = (size_t)c->in_chans * c->image_size * c->image_size;
    long step;
    mama_rng rng;
    mama_status s;
    /* model selection on the val split: its features vf, the best weights
     * (vision tower on the host, classifier) and their step */
    mama_eval_result va;
    float *vf = NULL, *vprobs = NULL, *best_vis = NULL, *best_W = NULL, *best_b = NULL;
    double best_val = NAN;
    long best_step = 0, val_every = o->val_every > 0 ? o->val_every : o->steps / 10 > 0 ? o->steps / 10 : 1;
    memset(&va, 0, sizeof va);
    memset(out, 0, sizeof *out);
    if (rs != MAMA_OK || (rs = mama__eval_opts_resolve(&ro.eval, task, &ro.eval)) != MAMA_OK) return rs;
    /* the vision tower's trainable tensors lead the [train] group, up to the global head */
    if (!head || head->group != MAMA_GROUP_TRAIN) return MAMA_FAIL(MAMA_ERR_INVALID, "finetune: unexpected parameter layout");
    n_vis = head->offset;
    MAMA_TRY(mama__eval_items(d, MAMA_SPLIT_TRAIN, task, &o->eval, 0, &tr));
    K = tr.K;
#define MAMA__A(p, n) if ((s = mama_calloc((void **)&(p), (n), "finetune")) != MAMA_OK) goto done
    MAMA__A(W, sizeof(float) * (size_t)K * D); MAMA__A(b, sizeof(float) * K);
    MAMA__A(gW, sizeof(float) * (size_t)K * D); MAMA__A(gb, sizeof(float) * K);
    MAMA__A(mW, sizeof(float) * (size_t)K * D); MAMA__A(mb, sizeof(float) * K);
    MAMA__A(by_class, sizeof(int) * (size_t)tr.n); MAMA__A(batch_y, sizeof(int) * (size_t)Bg);
    MAMA__A(bx, sizeof(float) * (size_t)Bg * D); MAMA__A(dpool, sizeof(float) * (size_t)B * D);
    MAMA__A(bxl, sizeof(float) * (size_t)B * D);
    MAMA__A(imgs, sizeof(float) * img * B);
    if (o->val_every >= 0) {
        s = mama__eval_items(d, MAMA_SPLIT_VAL, task, &o->eval, 0, &va);
        if (s == MAMA_ERR_INVALID) { mama_clear_error(); s = MAMA_OK; } /* no labelled val image: no selection */
        if (s != MAMA_OK) goto done;
        if (va.n > 0) {
            MAMA__A(vf, sizeof(float) * (size_t)va.n * D); MAMA__A(vprobs, sizeof(float) * (size_t)va.n * K);
            MAMA__A(best_vis, sizeof(float) * n_vis);
            MAMA__A(best_W, sizeof(float) * (size_t)K * D); MAMA__A(best_b, sizeof(float) * K);
        }
    }
#undef MAMA__A
    if ((s = be->alloc(be, (void **)&vis_mom, sizeof(float) * n_vis)) != MAMA_OK) goto done;
    memset(n_cls, 0, sizeof n_cls);
    for (i = 0; i < tr.n; i++) n_cls[tr.labels[i]]++;
    cls_start[0] = 0;
    for (k = 0; k < K; k++) { cls_start[k + 1] = cls_start[k] + n_cls[k]; if (n_cls[k]) present[npresent++] = k; }
    {
        int fill[MAMA_MAX_CLASSES];
        for (k = 0; k < K; k++) fill[k] = cls_start[k];
        for (i = 0; i < tr.n; i++) by_class[fill[tr.labels[i]]++] = i;
    }
    mama_rng_seed(&rng, o->seed);
    {
        float bound = 1.0f / sqrtf((float)D);
        for (i = 0; i < K * D; i++) W[i] = bound * (2 * mama_rng_uniform(&rng) - 1);
        for (k = 0; k < K; k++) b[k] = bound * (2 * mama_rng_uniform(&rng) - 1);
    }
    for (step = 0; step < o->steps; step++) {
        float lr = mama_lr_cosine(step, o->warmup, o->steps, o->lr, o->lr_floor);
        double loss;
        for (i = 0; i < Bg; i++) { /* class-balanced, augmented */
            int cls = present[mama_rng_below(&rng, (uint32_t)npresent)];
            int item = by_class[cls_start[cls] + (int)mama_rng_below(&rng, (uint32_t)n_cls[cls])];
            mama_rng r2;
            mama_rng_seed(&r2, mama__mix2(o->seed, (uint64_t)(step * Bg + i)));
            batch_y[i] = cls;
            if (i < r0 || i >= r0 + B) continue; /* another rank's sample */
            if ((s = mama_dataset_image(d, tr.records[item], 1, &r2, imgs + img * (i - r0))) != MAMA_OK) goto done;
        }
        /* forward through the tower (in chunks), the classifier on the host */
        for (j0 = 0; j0 < B; j0 += C) {
            nb = B - j0 < C ? B - j0 : C;
            if ((s = be->to_device(be, m->a.images, imgs + img * j0, sizeof(float) * img * nb)) != MAMA_OK) goto done;
            mama__vision_forward(m, nb);
            if ((s = be->to_host(be, bxl + (size_t)j0 * D, m->a.vpooled, sizeof(float) * (size_t)nb * D)) != MAMA_OK) goto done;
        }
        if ((s = mama__dp_allgather_host(m, bxl, (size_t)B * D, bx)) != MAMA_OK) goto done;
        /* classifier gradient wrt its input: dpool = (softmax - onehot) W / B */
        {
            int j;
            for (i = r0; i < r0 + B; i++) {
                float logits[MAMA_MAX_CLASSES], mx = -1e30f, sum = 0;
                for (k = 0; k < K; k++) {
                    double z = b[k];
                    for (j = 0; j < D; j++) z += (double)W[(size_t)k * D + j] * bx[(size_t)i * D + j];
                    logits[k] = (float)z;
                    if (logits[k] > mx) mx = logits[k];
                }
                for (k = 0; k < K; k++) { logits[k] = expf(logits[k] - mx); sum += logits[k]; }
                for (j = 0; j < D; j++) {
                    double g = 0;
                    for (k = 0; k < K; k++) g += (logits[k] / sum - (k == batch_y[i])) * W[(size_t)k * D + j];
                    dpool[(size_t)(i - r0) * D + j] = (float)(g / Bg);
                }
            }
        }
        loss = mama__probe_step(W, b, gW, gb, mW, mb, bx, batch_y, Bg, K, D, lr, o, step == 0);
        /* backward through the tower: only the pooled-feature path */
        if ((s = be->zero(be, m->grads, sizeof(float) * n_vis)) != MAMA_OK) goto done;
        for (j0 = (B - 1) / C * C; j0 >= 0; j0 -= C) { /* the last chunk's activations are still there */
            nb = B - j0 < C ? B - j0 : C;
            if (j0 + C < B) {
                if ((s = be->to_device(be, m->a.images, imgs + img * j0, sizeof(float) * img * nb)) != MAMA_OK) goto done;
                mama__vision_forward(m, nb);
            }
            if ((s = be->zero(be, m->a.d_img_emb, sizeof(float) * (size_t)nb * c->embed_dim)) != MAMA_OK) goto done;
            if ((s = be->to_device(be, m->a.d_vpooled, dpool + (size_t)j0 * D, sizeof(float) * (size_t)nb * D)) != MAMA_OK)
                goto done;
            mama__vision_backward(m, nb, nb, 0);
        }
        if (world > 1 && (s = mama__dp_allreduce_dev(m, m->grads, n_vis)) != MAMA_OK) goto done;
        be->sgd_step(be, m->params, m->grads, vis_mom, n_vis, lr, o->momentum, o->weight_decay, step == 0);
        if (!o->quiet && mama__dp_rank(m) == 0 && ((step + 1) % (o->steps / 10 > 0 ? o->steps / 10 : 1) == 0))
            fprintf(stderr, "finetune %s: step %ld/%ld loss %.4f lr %.2e\n", mama_task_name(task), step + 1, o->steps,
                    loss, lr);
        if (va.n > 0 && ((step + 1) % val_every == 0 || step + 1 == o->steps)) {
            double vl = 0;
            if ((s = mama__encode_records(m, d, va.records, va.n, NULL, vf, 0, 0)) != MAMA_OK) goto done;
            mama__classifier_probs(W, b, vf, va.n, K, D, vprobs);
            for (i = 0; i < va.n; i++) vl -= log((double)vprobs[(size_t)i * K + va.labels[i]] + 1e-30) / va.n;
            if (isfinite(vl) && (best_step == 0 || vl < best_val)) {
                best_val = vl;
                best_step = step + 1;
                if ((s = be->to_host(be, best_vis, m->params, sizeof(float) * n_vis)) != MAMA_OK) goto done;
                memcpy(best_W, W, sizeof(float) * (size_t)K * D);
                memcpy(best_b, b, sizeof(float) * K);
            }
            if (!o->quiet && mama__dp_rank(m) == 0)
                fprintf(stderr, "finetune %s: step %ld/%ld val_loss %.4f (best %.4f at step %ld)\n", mama_task_name(task),
                        step + 1, o->steps, vl, best_val, best_step);
        }
    }
    if (best_step > 0) { /* the selected weights back into the model */
        if ((s = be->to_device(be, m->params, best_vis, sizeof(float) * n_vis)) != MAMA_OK) goto done;
        memcpy(W, best_W, sizeof(float) * (size_t)K * D);
        memcpy(b, best_b, sizeof(float) * K);
    }
    if ((s = mama__eval_items(d, eval_split, task, &o->eval, 1, out)) != MAMA_OK) goto done;
    out->best_step = best_step;
    out->best_val_loss = best_val;
    if ((s = mama_alloc((void **)&tf, sizeof(float) * (size_t)out->n * D, "finetune")) != MAMA_OK) goto done;
    if ((s = mama__encode_records(m, d, out->records, out->n, NULL, tf, 0, 0)) != MAMA_OK) goto done;
    mama__classifier_probs(W, b, tf, out->n, K, D, out->probs);
    s = mama_metrics_compute(out->probs, out->labels, out->n, K, &out->metrics);
    if (s == MAMA_OK) s = mama__head_keep(out, task, D, 1, &W, &b);
done:
    mama_eval_result_free(&tr);
    if (vis_mom) be->free(be, vis_mom);
    mama_free(W); mama_free(b); mama_free(gW); mama_free(gb); mama_free(mW); mama_free(mb);
    mama_free(by_class); mama_free(batch_y); mama_free(bx); mama_free(tf); mama_free(imgs); mama_free(dpool);
    mama_free(bxl);
    mama_eval_result_free(&va);
    mama_free(vf); mama_free(vprobs); mama_free(best_vis); mama_free(best_W); mama_free(best_b);
    if (s != MAMA_OK) mama_eval_result_free(out);
    return s;
}

MAMA_API size_t mama_model_arena_bytes(const mama_config *c, int max_batch) {
    mama_model m;
    size_t n = 0;
    memset(&m, 0, sizeof m);
    if (!c || max_batch < 1 || mama_config_validate(c) != MAMA_OK) { mama_clear_error(); return 0; }
    m.cfg = *c;
    m.max_batch = max_batch;
    m.n_patches = (c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    m.n_vtok = 1 + c->registers + m.n_patches;
    if (mama_calloc((void **)&m.a.vres, sizeof(float *) * (size_t)(c->vision_depth + 1), "arena size") == MAMA_OK &&
        mama_calloc((void **)&m.a.tres, sizeof(float *) * (size_t)(c->text_depth + 1), "arena size") == MAMA_OK &&
        mama_calloc((void **)&m.a.vblk, sizeof *m.a.vblk * (size_t)c->vision_depth, "arena size") == MAMA_OK &&
        mama_calloc((void **)&m.a.tblk, sizeof *m.a.tblk * (size_t)c->text_depth, "arena size") == MAMA_OK)
        n = sizeof(float) * mama__layout_acts(&m, NULL);
    mama_free(m.a.vres); mama_free(m.a.tres); mama_free(m.a.vblk); mama_free(m.a.tblk);
    return n;
}

/* ---- 11.5c Prediction (mama predict) ------------------------------------ */
MAMA_API const char *mama_predict_column_name(int col) {
    static const char *const names[MAMA_PREDICT_COLUMNS] = {
        "density_1", "density_2", "density_3", "density_4", "birads_A", "birads_N", "birads_B", "birads_P",
        "birads_S", "birads_M", "birads_K", "cancer_0", "cancer_1"};
    return col >= 0 && col < MAMA_PREDICT_COLUMNS ? names[col] : NULL;
}

MAMA_API mama_status mama_predict(mama_model *m, const mama_tokenizer *tok, const float *images, int n,
                                  const mama_caption_fields *meta, const mama_head *head, float *probs) {
    static const mama_zeroshot_task tasks[3] = {MAMA_ZEROSHOT_DENSITY, MAMA_ZEROSHOT_BIRADS, MAMA_ZEROSHOT_CANCER};
    static const int first[4] = {0, 4, 11, 13};
    const mama_config *c;
    int E, D, T, B, i, i0, t, k, q, u, e, *ids = NULL, *mask = NULL, *owner = NULL, ht = -1;
    size_t img, QB;
    uint64_t *hash = NULL;
    float *emb = NULL, *pooled = NULL, *txt = NULL, *hp = NULL, scale;
    char *caption = NULL;
    mama_caption_fields unk;
    mama_status s = MAMA_OK;
    if (!m || !tok || (!images && n > 0) || (!probs && n > 0) || n < 0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_predict: NULL argument or n < 0");
    c = &m->cfg; E = c->embed_dim; D = c->vision_dim; T = c->context; B = m->max_batch;
    img = (size_t)c->in_chans * c->image_size * c->image_size;
    if (head && (!head->W || !head->b || head->D != D || head->task < 0 || head->task > 2 || head->K < 2))
        return MAMA_FAIL(MAMA_ERR_SHAPE, "mama_predict: the head takes %d features, the model's pooled feature has %d",
                         head->D, D);
    for (t = 0; head && t < 3; t++) if ((int)tasks[t] == head->task) ht = t;
    MAMA_TRY(mama_model_check_tokenizer(m, tok, NULL));
    if (n == 0) return MAMA_OK;
#define MAMA__A(p, sz) if ((s = mama_alloc((void **)&(p), (sz), "predict")) != MAMA_OK) goto done
    /* per chunk of 2B images: each distinct caption once (without metadata
     * the 13 prompts serve every image); at most QB = 2B x 13 of them */
    QB = 2 * MAMA_PREDICT_COLUMNS * (size_t)B;
    MAMA__A(emb, sizeof(float) * (size_t)n * E); MAMA__A(txt, sizeof(float) * QB * E);
    MAMA__A(ids, sizeof(int) * QB * T); MAMA__A(mask, sizeof(int) * QB * T);
    MAMA__A(owner, sizeof(int) * QB); MAMA__A(hash, sizeof(uint64_t) * QB);
    if (head) { MAMA__A(pooled, sizeof(float) * (size_t)n * D); MAMA__A(hp, sizeof(float) * (size_t)n * head->K); }
#undef MAMA__A
    scale = expf(mama__read_scalar(m, m->w.logit_scale));
    mama_caption_fields_init(&unk);
    for (i0 = 0; i0 < n; i0 += 2 * B) {
        int nb = n - i0 < 2 * B ? n - i0 : 2 * B;
        if ((s = mama_encode_images(m, images + img * i0, nb, emb + (size_t)i0 * E, pooled ? pooled + (size_t)i0 * D : NULL)) != MAMA_OK) goto done;
        for (i = i0, u = 0; i < i0 + nb; i++)
            for (t = 0; t < 3; t++)
                for (k = 0; t != ht && k < first[t + 1] - first[t]; k++) {
                    int *qi = ids + (size_t)u * T, *qm = mask + (size_t)u * T;
                    if ((s = mama_zeroshot_caption_alloc(tasks[t], k, meta ? &meta[i] : &unk, &caption)) != MAMA_OK) goto done;
                    s = mama_tokenizer_encode_caption(tok, caption, T, qi, qm, NULL);
                    mama_free(caption);
                    caption = NULL;
                    if (s != MAMA_OK) goto done;
                    hash[u] = mama__mix2(mama__tx_fnv1a(qi, sizeof(int) * (size_t)T), mama__tx_fnv1a(qm, sizeof(int) * (size_t)T));
                    for (q = 0; q < u && (hash[q] != hash[u] || memcmp(ids + (size_t)q * T, qi, sizeof(int) * (size_t)T) ||
                                          memcmp(mask + (size_t)q * T, qm, sizeof(int) * (size_t)T)); q++) {}
                    owner[(i - i0) * MAMA_PREDICT_COLUMNS + first[t] + k] = q;
                    u += q == u;
                }
        for (q = 0; q < u; q += B)
            if ((s = mama__encode_texts_ex(m, ids + (size_t)q * T, mask + (size_t)q * T, u - q < B ? u - q : B,
                                           txt + (size_t)q * E, 0)) != MAMA_OK) goto done;
        for (i = i0; i < i0 + nb; i++)
            for (t = 0; t < 3; t++)
                for (k = 0; t != ht && k < first[t + 1] - first[t]; k++) {
                    const float *tx = txt + (size_t)owner[(i - i0) * MAMA_PREDICT_COLUMNS + first[t] + k] * E;
                    double dot = 0;
                    for (e = 0; e < E; e++) dot += (double)emb[(size_t)i * E + e] * tx[e];
                    probs[(size_t)i * MAMA_PREDICT_COLUMNS + first[t] + k] = (float)(scale * dot);
                }
    }
    if (head) mama__classifier_probs(head->W, head->b, pooled, n, head->K, D, hp);
    for (i = 0; i < n; i++)
        for (t = 0; t < 3; t++) {
            float *p = probs + (size_t)i * MAMA_PREDICT_COLUMNS + first[t];
            if (t != ht) { mama__softmax_rows(p, 1, first[t + 1] - first[t]); continue; }
            for (k = 0; k < first[t + 1] - first[t]; k++) p[k] = 0;
            for (k = 0; k < head->K; k++) p[head->classes[k]] = hp[(size_t)i * head->K + k];
        }
done:
    mama_free(emb); mama_free(pooled); mama_free(txt); mama_free(hp); mama_free(ids); mama_free(mask); mama_free(owner);
    mama_free(hash);
    return s;
}

MAMA_API mama_status mama_predict_file(mama_model *m, const mama_tokenizer *tok, const char *path,
                                       const mama_decode_opts *dec, const mama_caption_fields *meta,
                                       const mama_head *head, float *probs) {
    mama_image im = {0, 0, NULL};
    float *px = NULL;
    mama_status s;
    if (!m || !path) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_predict_file: NULL argument");
    MAMA_TRY(mama_alloc((void **)&px, sizeof(float) * m->cfg.in_chans * m->cfg.image_size * m->cfg.image_size, "predict"));
    s = dec ? mama_image_load_opts(path, dec, &im) : mama_image_load(path, &im);
    if (s == MAMA_OK) s = mama_model_prepare_image(m, &im, px);
    if (s == MAMA_OK) s = mama_predict(m, tok, px, 1, meta, head, probs);
    mama_image_free(&im);
    mama_free(px);
    return s;
}

/* ---- 11.6 Retrieval ---------------------------------------------------- */
MAMA_API mama_status mama_retrieval_eval(mama_model *m, mama_dataset *d, mama_split split, int max_items,
                                         mama_retrieval *out) {
    const mama_config *c = mama_model_config(m);
    const int *idx;
    int n = mama_dataset_split(d, split, &idx), E = c->embed_dim, T = c->context, B = m->max_batch, i, j, r;
    float *ie = NULL, *te = NULL;
    int *ids = NULL, *mask = NULL;
    static const int ks[3] = {1, 5, 10};
    mama_status s;
    memset(out, 0, sizeof *out);
    if (max_items > 0 && n > max_items) n = max_items;
    if (n < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "retrieval: the %s split is empty", mama_split_name(split));
#define MAMA__A(p, sz) if ((s = mama_alloc((void **)&(p), (sz), "retrieval")) != MAMA_OK) goto done
    MAMA__A(ie, sizeof(float) * (size_t)n * E); MAMA__A(te, sizeof(float) * (size_t)n * E);
    MAMA__A(ids, sizeof(int) * (size_t)B * T); MAMA__A(mask, sizeof(int) * (size_t)B * T);
#undef MAMA__A
    if ((s = mama__encode_records(m, d, idx, n, ie, NULL, 0, 0)) != MAMA_OK) goto done;
    for (i = 0; i < n; i += B) {
        int nb = n - i < B ? n - i : B;
        for (j = 0; j < nb; j++)
            if ((s = mama_dataset_caption(d, idx[i + j], 0.0f, NULL, ids + (size_t)j * T, mask + (size_t)j * T)) != MAMA_OK) goto done;
        if ((s = mama_encode_texts(m, ids, mask, nb, te + (size_t)i * E)) != MAMA_OK) goto done;
    }
    /* rank of the true match among all candidates, both directions */
    for (i = 0; i < n; i++) {
        for (r = 0; r < 2; r++) {
            const float *q = (r == 0 ? ie : te) + (size_t)i * E, *cands = r == 0 ? te : ie;
            double own = 0, sc;
            int rank = 0, e;
            for (e = 0; e < E; e++) own += (double)q[e] * cands[(size_t)i * E + e];
            for (j = 0; j < n; j++) {
                if (j == i) continue;
                sc = 0;
                for (e = 0; e < E; e++) sc += (double)q[e] * cands[(size_t)j * E + e];
                if (sc > own) rank++;
            }
            for (e = 0; e < 3; e++)
                if (rank < ks[e]) (r == 0 ? out->i2t : out->t2i)[e] += 1.0 / n;
        }
    }
    out->n = n;
done:
    mama_free(ie); mama_free(te); mama_free(ids); mama_free(mask);
    return s;
}

/* ---- 11.7 Reporting metrics -------------------------------------------- */
MAMA_API mama_status mama_metrics_json(const mama_metrics *m, mama_buf *out) {
    int i, j;
    MAMA_TRY(mama_buf_printf(out, "{\"n\":%d,\"classes\":%d,\"accuracy\":", m->n, m->K));
    MAMA_TRY(mama_buf_json_number(out, m->accuracy));
    MAMA_TRY(mama_buf_puts(out, ",\"balanced_accuracy\":"));
    MAMA_TRY(mama_buf_json_number(out, m->balanced_accuracy));
    MAMA_TRY(mama_buf_puts(out, ",\"auc\":"));
    MAMA_TRY(mama_buf_json_number(out, m->auc));
    if (m->K == 2) {
        const char *names[7] = {"sensitivity", "specificity", "ppv", "npv", "f1", "specificity_at_80_sensitivity", "pf1"};
        double v[7];
        v[0] = m->sensitivity; v[1] = m->specificity; v[2] = m->ppv; v[3] = m->npv; v[4] = m->f1;
        v[5] = m->spec_at_80_sens; v[6] = m->pf1;
        for (i = 0; i < 7; i++) {
            MAMA_TRY(mama_buf_printf(out, ",\"%s\":", names[i]));
            MAMA_TRY(mama_buf_json_number(out, v[i]));
        }
    }
    MAMA_TRY(mama_buf_puts(out, ",\"confusion\":["));
    for (i = 0; i < m->K; i++) {
        MAMA_TRY(mama_buf_puts(out, i ? ",[" : "["));
        for (j = 0; j < m->K; j++) MAMA_TRY(mama_buf_printf(out, "%s%d", j ? "," : "", m->confusion[i][j]));
        MAMA_TRY(mama_buf_puts(out, "]"));
    }
    return mama_buf_puts(out, "]}");
}

MAMA_API void mama_metrics_print(const mama_metrics *m, const char *title, FILE *f) {
    int i, j;
    fprintf(f, "%s (n=%d, %d classes)\n", title, m->n, m->K);
    fprintf(f, "  accuracy %.4f  balanced accuracy %.4f  AUC %.4f\n", m->accuracy, m->balanced_accuracy, m->auc);
    if (m->K == 2)
        fprintf(f, "  sensitivity %.4f  specificity %.4f  PPV %.4f  NPV %.4f  F1 %.4f  spec@80%%sens %.4f  pF1 %.4f\n",
                m->sensitivity, m->specificity, m->ppv, m->npv, m->f1, m->spec_at_80_sens, m->pf1);
    fprintf(f, "  confusion [true rows x predicted columns]:\n");
    for (i = 0; i < m->K; i++) {
        fprintf(f, "   ");
        for (j = 0; j < m->K; j++) fprintf(f, " %6d", m->confusion[i][j]);
        fprintf(f, "\n");
    }
}

/* ---- 11.8 SLA maps ------------------------------------------------------ */
MAMA_API mama_status mama_sla_maps(mama_model *m, const float *image, const int *ids, const int *mask, float *maps,
                                   int max_sent, int *nsent) {
    mama_batch b;
    mama_step_opts o;
    int N = m->n_patches, E = m->cfg.embed_dim, S, s, k, e;
    float *p = NULL, *q = NULL;
    mama_status st;
    b.B = 1; b.images = image; b.ext_images = NULL; b.input_ids = ids; b.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = 1; o.use_mv = 0; o.use_sym = 0; o.use_sla = 1; o.train = 0; o.dropout = 0;
    MAMA_TRY(mama__step(m, &b, &o, 0, 0, NULL));
    S = m->last_S;
    *nsent = S;
    if (S > max_sent) S = max_sent;
    MAMA_TRY(mama_alloc((void **)&p, sizeof(float) * (size_t)N * E, "sla maps"));
    if ((st = mama_alloc((void **)&q, sizeof(float) * (size_t)(S + 1) * E, "sla maps")) != MAMA_OK) { mama_free(p); return st; }
    st = m->be->to_host(m->be, p, m->a.p_emb, sizeof(float) * (size_t)N * E);
    if (st == MAMA_OK) st = m->be->to_host(m->be, q, m->a.s_emb, sizeof(float) * (size_t)S * E);
    for (s = 0; st == MAMA_OK && s < S; s++)
        for (k = 0; k < N; k++) {
            double dot = 0;
            for (e = 0; e < E; e++) dot += (double)q[(size_t)s * E + e] * p[(size_t)k * E + e];
            maps[(size_t)s * N + k] = (float)dot;
        }
    mama_free(p);
    mama_free(q);
    return st;
}

/* ==========================================================================
 * 12. DATA PARALLELISM: communicators, synchronised BatchNorm, the losses
 *     over the global batch, sharded encoding, rank-0 checkpoints
 * ==========================================================================
 * W ranks each hold a replica and take a slice of B samples of every
 * global batch of G = W * B (section 10.1 keys every sample's randomness by
 * its global position, so the union of the slices is the batch one process
 * of batch G would see).  What has to cross ranks, and why it is exact:
 *
 * - The towers are per sample: the forward and backward of sample i do
 *   not depend on other samples, except through the losses and the
 *   batch-wide BatchNorms.
 * - Losses (MAMA_DP_GLOBAL): every tensor a loss reads across samples is
 *   all-gathered: image and ext embeddings, text embeddings, the SimCLR
 *   projections of both views, the patch and sentence embeddings (SLA).
 *   Every rank then runs the SAME loss code (section 6) on the SAME global
 *   tensors, so it holds the global loss L and dL/d(every row); it keeps the
 *   rows of its own samples and back-propagates them through its towers.
 *   By the chain rule  dL/dtheta = sum over samples i of
 *   (dL/dz_i)(dz_i/dtheta),  and rank r's backward yields the part of the
 *   sum over its own samples, so the SUM (not the mean) of the ranks'
 *   gradients is the gradient of one process on the global batch.  The
 *   loss-side scalars (logit_scale, local_scale) get their gradient
 *   directly from the global logits; all ranks compute the same value, so
 *   only rank 0 contributes it to the sum.  The means inside the losses
 *   (CE over G rows, NT-Xent over 2G) are over the global batch by
 *   construction.  This is the usual "gather with local gradient" trick:
 *   the all-gather's backward is "take my rows" because every rank
 *   already holds the gradient of the whole (replicated) loss.
 * - BatchNorm over the batch (the image local head over all patches, the
 *   SimCLR head over the batch, SPEC A.3) uses statistics over all ranks
 *   ("synchronised BatchNorm", 12.3); the text local head normalises each
 *   caption's sentences alone, so it stays local.  Dropout masks are keyed
 *   by rows within a rank, so with dropout on ranks draw their own masks
 *   (statistically the same, not bitwise; the equality tests turn dropout
 *   off).
 * - Gradients: a sum all-reduce over the contiguous gradient buffer per
 *   optimiser step (mama_model_allreduce_grads), after the last
 *   micro-batch: on the CPU backend with MPI, in buckets started by the
 *   last micro-batch's backward as each layer's gradients are final
 *   (overlapped with the rest of the backward, 12.7); otherwise one
 *   blocking all-reduce after it.
 * - Order: device collectives (NCCL, created on the backend's stream,
 *   be->stream) are queued on the stream the ops run on, so they follow the
 *   ops that wrote their inputs without any synchronisation; host
 *   collectives read device data only through to_host, which waits.
 * MAMA_DP_REFERENCE keeps the reference's behaviour instead: CLIP,
 * symmetric CLIP and SLA over each rank's own B samples (the objective is
 * their mean over ranks, so their gradients are scaled by 1/W before the
 * sum), NT-Xent over the gathered projections, BatchNorm per rank (whose
 * running statistics are averaged over the ranks at every checkpoint and
 * at the end of training, 12.8). */

/* ---- 12.1 The single-process communicator ------------------------------ */
static mama_status mama__single_allreduce(mama_comm *c, float *buf, size_t n) {
    (void)c; (void)buf; (void)n;
    return MAMA_OK;
}
static mama_status mama__single_allgather(mama_comm *c, const float *send, size_t n, float *recv) {
    (void)c;
    if (recv != send && n) memmove(recv, send, n * sizeof(float));
    return MAMA_OK;
}
static mama_status mama__single_allgatherv(mama_comm *c, const float *send, size_t n, float *recv,
                                           const size_t *counts) {
    (void)counts;
    return mama__single_allgather(c, send, n, recv);
}
static mama_status mama__single_broadcast(mama_comm *c, float *buf, size_t n, int root) {
    (void)c; (void)buf; (void)n; (void)root;
    return MAMA_OK;
}
static mama_status mama__single_barrier(mama_comm *c) { (void)c; return MAMA_OK; }

/* A constant table (read-only memory, no lazy initialisation to race on),
 * in the member order of struct mama_comm; callers never write it. */
static const mama_comm mama__single_comm_table = {
    "single", 0, 1, NULL,
    mama__single_allreduce, mama__single_allgather, mama__single_allgatherv,
    mama__single_broadcast, mama__single_barrier,
    NULL, NULL, NULL, NULL, /* dev_*: none */
    NULL,                   /* destroy: static */
    NULL, NULL, NULL        /* iallreduce, test, wait: a size-1 comm never sums */
};
MAMA_API mama_comm *mama_comm_single(void) { return (mama_comm *)&mama__single_comm_table; }

MAMA_API void mama_comm_free(mama_comm *c) {
    if (c && c->destroy) c->destroy(c);
}

/* ---- 12.2 MPI (host memory) --------------------------------------------
 * In the companion header mama_mpi.h (mama_comm_mpi_create), which fills
 * struct mama_comm (1.19) through the public API only: mama.h has no MPI
 * dependency. */

/* ---- 12.3 The data-parallel state of a model --------------------------- */
struct mama__dp {
    mama_comm *comm;
    mama_dp_mode mode;
    int generic;               /* use the device-backend paths even on a host backend (tests) */
    mama_status status;        /* sticky failure of a void hook (a BatchNorm) */
    char error[1024];
    int G;                     /* global batch capacity: size * max_batch */
    int S_cap;                 /* global sentence capacity of the loss workspace (0: no SLA buffers yet) */
    float *arena;              /* device: the loss buffers of `ga` */
    mama__acts ga;             /* only the loss fields are used */
    int C;                     /* widest BatchNorm */
    float *bn_dev;             /* device [8 C] */
    float *bn_host;            /* host [(8 + 4 W) C + 8 W + 8] */
    double *bn_mean;           /* host [4 C] */
    float *hf; size_t hf_cap;  /* host scratch (bytes in *_cap) */
    int *hi; size_t hi_cap;
    float *stage; size_t stage_cap;
    size_t *counts;            /* [size] */
    float *tsave; size_t tsave_cap;   /* text local head running statistics before the step */
    int64_t tsave_tracked[2];
    float *tbuf; size_t tbuf_cap;
    double *tdbl; size_t tdbl_cap;
    /* the overlapped gradient sum (12.7) */
    int ov_off;                /* mama_model_set_grad_overlap(m, 0) */
    int ov_armed;              /* the next backward starts bucket all-reduces */
    int ov_stepped;            /* ... and that backward has begun */
    int ov_nseg;               /* the plan: [train | late] as hook segments (0: not built yet) */
    struct mama__dp_seg *ov_seg;
    int ov_pending;            /* outstanding requests */
    double ov_seconds;         /* time in the gradient sum on this thread: all ... */
    double ov_wait_seconds;    /* ... and the part after the backward */
    long ov_buckets;           /* bucket all-reduces started */
    size_t ov_early, ov_late;  /* floats started by the backward's hooks / after it */
};

static int mama__dp_world(const mama_model *m) { return m && m->dp ? m->dp->comm->size : 1; }
static int mama__dp_rank(const mama_model *m) { return m && m->dp ? m->dp->comm->rank : 0; }
static int mama__dp_sync_bn(const mama_model *m) {
    return m->dp && m->dp->comm->size > 1 && m->dp->mode == MAMA_DP_GLOBAL;
}
MAMA_API mama_comm *mama_model_comm(const mama_model *m) { return m && m->dp ? m->dp->comm : NULL; }

static void mama__dp_fail(mama_model *m, mama_status s) {
    if (m->dp->status != MAMA_OK) return;
    m->dp->status = s;
    snprintf(m->dp->error, sizeof m->dp->error, "%s", mama_last_error());
}
static mama_status mama__dp_status(mama_model *m) {
    mama_status s;
    if (!m->dp || m->dp->status == MAMA_OK) return MAMA_OK;
    s = m->dp->status;
    m->dp->status = MAMA_OK;
    return MAMA_FAIL(s, "data parallel: %s", m->dp->error);
}

static void mama__dp_free(mama_model *m) {
    mama__dp *dp = m->dp;
    if (!dp) return;
    if (dp->arena) m->be->free(m->be, dp->arena);
    if (dp->bn_dev) m->be->free(m->be, dp->bn_dev);
    mama_free(dp->bn_host); mama_free(dp->bn_mean);
    mama_free(dp->hf); mama_free(dp->hi); mama_free(dp->stage); mama_free(dp->counts);
    mama_free(dp->tsave); mama_free(dp->tbuf); mama_free(dp->tdbl);
    mama__dp_grads_drain(m); /* a step that failed mid-backward left requests on buffers we are about to free */
    mama_free(dp->ov_seg);
    mama_free(dp);
    m->dp = NULL;
}

static mama_status mama__dp_grow(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return MAMA_OK;
    mama_free(*p);
    *p = NULL;
    *cap = 0;
    MAMA_TRY(mama_alloc(p, bytes + 64, "data-parallel scratch"));
    *cap = bytes + 64;
    return MAMA_OK;
}

/* The CPU backend's "device" memory is host memory: host collectives act on
 * it directly, and the synchronised BatchNorm runs on the host.  (The
 * `generic` flag forces the device-backend paths on the CPU too, so the
 * tests can check them without a GPU.) */
static int mama__dp_host(const mama_model *m) {
    const mama_backend *be = m->be;
    return !m->dp->generic && be->name && !strcmp(be->name, "cpu");
}

/* Collectives on device memory: the comm's own (NCCL), or the host ones on
 * a host backend, or staged through host memory. */
static mama_status mama__dp_allreduce_dev(mama_model *m, float *buf, size_t n) {
    mama__dp *dp = m->dp;
    mama_comm *c = dp->comm;
    mama_backend *be = m->be;
    if (c->dev_allreduce_sum_f32) return c->dev_allreduce_sum_f32(c, buf, n);
    if (mama__dp_host(m)) return c->allreduce_sum_f32(c, buf, n);
    MAMA_TRY(mama__dp_grow((void **)&dp->stage, &dp->stage_cap, n * sizeof(float)));
    MAMA_TRY(be->to_host(be, dp->stage, buf, n * sizeof(float)));
    MAMA_TRY(c->allreduce_sum_f32(c, dp->stage, n));
    return be->to_device(be, buf, dp->stage, n * sizeof(float));
}
static mama_status mama__dp_allgather_dev(mama_model *m, const float *send, size_t n, float *recv) {
    mama__dp *dp = m->dp;
    mama_comm *c = dp->comm;
    mama_backend *be = m->be;
    size_t W = (size_t)c->size;
    if (c->dev_allgather_f32) return c->dev_allgather_f32(c, send, n, recv);
    if (mama__dp_host(m)) return c->allgather_f32(c, send, n, recv);
    MAMA_TRY(mama__dp_grow((void **)&dp->stage, &dp->stage_cap, (W + 1) * n * sizeof(float)));
    MAMA_TRY(be->to_host(be, dp->stage, send, n * sizeof(float)));
    MAMA_TRY(c->allgather_f32(c, dp->stage, n, dp->stage + n));
    return be->to_device(be, recv, dp->stage + n, W * n * sizeof(float));
}
static mama_status mama__dp_allgatherv_dev(mama_model *m, const float *send, size_t n, float *recv,
                                           const size_t *counts) {
    mama__dp *dp = m->dp;
    mama_comm *c = dp->comm;
    mama_backend *be = m->be;
    size_t total = 0;
    int r;
    if (c->dev_allgatherv_f32) return c->dev_allgatherv_f32(c, send, n, recv, counts);
    if (mama__dp_host(m)) return c->allgatherv_f32(c, send, n, recv, counts);
    for (r = 0; r < c->size; r++) total += counts[r];
    MAMA_TRY(mama__dp_grow((void **)&dp->stage, &dp->stage_cap, (n + total) * sizeof(float)));
    MAMA_TRY(be->to_host(be, dp->stage, send, n * sizeof(float)));
    MAMA_TRY(c->allgatherv_f32(c, dp->stage, n, dp->stage + n, counts));
    return be->to_device(be, recv, dp->stage + n, total * sizeof(float));
}
static mama_status mama__dp_broadcast_dev(mama_model *m, float *buf, size_t n, int root) {
    mama__dp *dp = m->dp;
    mama_comm *c = dp->comm;
    mama_backend *be = m->be;
    size_t off, chunk = (size_t)1 << 26;
    if (c->dev_broadcast_f32) return c->dev_broadcast_f32(c, buf, n, root);
    if (mama__dp_host(m)) return c->broadcast_f32(c, buf, n, root);
    MAMA_TRY(mama__dp_grow((void **)&dp->stage, &dp->stage_cap, (n < chunk ? n : chunk) * sizeof(float)));
    for (off = 0; off < n; off += chunk) { /* the weights can be large: staged in pieces */
        size_t k = n - off < chunk ? n - off : chunk;
        MAMA_TRY(be->to_host(be, dp->stage, buf + off, k * sizeof(float)));
        MAMA_TRY(c->broadcast_f32(c, dp->stage, k, root));
        MAMA_TRY(be->to_device(be, buf + off, dp->stage, k * sizeof(float)));
    }
    return MAMA_OK;
}
/* Host arrays (features, classifier inputs); a copy without a comm. */
static mama_status mama__dp_allgather_host(mama_model *m, const float *send, size_t n, float *recv) {
    if (mama__dp_world(m) == 1) {
        if (recv != send && n) memmove(recv, send, n * sizeof(float));
        return MAMA_OK;
    }
    return m->dp->comm->allgather_f32(m->dp->comm, send, n, recv);
}

/* ---- 12.4 Synchronised BatchNorm ---------------------------------------
 * Device backends (the generic path; the host path comes first below).
 * Each rank gets its own statistics from the backend's BatchNorm
 * (mean_r, rstd_r = 1/sqrt(var_r + eps) over its n_r rows), then the
 * pooled ones follow from two all-reduces of C floats (Chan et al.'s
 * parallel variance, as PyTorch's SyncBatchNorm does):
 *   n = sum n_r,  mean = sum n_r mean_r / n,
 *   var = sum_r [n_r var_r + n_r (mean_r - mean)^2] / n   (biased, for normalising),
 * the running statistics take the unbiased var n/(n-1) with the usual
 * momentum (identically on every rank), and the backend's eval-mode path
 * normalises with (mean, var): y = (x - mean) / sqrt(var + eps) * w + b.
 * The saved rstd is stored positive, so the backward knows the statistics
 * depended on the batch. */
/* On a host-memory backend (the CPU one) the synchronised BatchNorm runs
 * here, mirroring the CPU kernel's arithmetic (double sums, the same float
 * expressions), so that W ranks produce the bits one process would: the
 * statistics are exchanged as double-precision partial sums (each double
 * sent as a float pair hi + lo, all-gathered, and added in rank order on
 * every rank), not as float all-reduce sums. */
static void mama__dp_pack(float *out, const double *v, int n) {
    int i;
    for (i = 0; i < n; i++) {
        float hi = (float)v[i];
        out[2 * i] = hi;
        out[2 * i + 1] = (float)(v[i] - (double)hi);
    }
}
/* sum[i] = sum over ranks of the doubles packed at all + rank * stride */
static void mama__dp_unpack_sum(double *sum, const float *all, int n, int W, size_t stride) {
    int i, q;
    for (i = 0; i < n; i++) sum[i] = 0;
    for (q = 0; q < W; q++)
        for (i = 0; i < n; i++) sum[i] += (double)all[q * stride + 2 * i] + (double)all[q * stride + 2 * i + 1];
}

static mama_status mama__dp_bn_forward_host(mama_model *m, float *y, float *mean, float *rstd, float *running_mean,
                                            float *running_var, const float *x, const float *w, const float *b,
                                            int rows, int C, float eps, float momentum) {
    mama__dp *dp = m->dp;
    mama_comm *c = dp->comm;
    int W = c->size, r, i;
    double *acc = dp->bn_mean, *tot = dp->bn_mean + C, n = 0;
    float *send = dp->bn_host, *all = dp->bn_host + 2 * (size_t)C + 2;
    size_t stride = 2 * (size_t)C + 2;
    /* pass 1: sum x -> the global mean */
    for (i = 0; i < C; i++) acc[i] = 0;
    for (r = 0; r < rows; r++)
        for (i = 0; i < C; i++) acc[i] += x[(size_t)r * C + i];
    mama__dp_pack(send, acc, C);
    send[2 * C] = (float)rows;
    send[2 * C + 1] = 0;
    MAMA_TRY(c->allgather_f32(c, send, stride, all));
    mama__dp_unpack_sum(tot, all, C, W, stride);
    for (r = 0; r < W; r++) n += all[(size_t)r * stride + 2 * C];
    for (i = 0; i < C; i++) tot[i] /= n; /* tot: global mean */
    /* pass 2: sum (x - mean)^2 about the global mean (two-pass, as the kernel) */
    for (i = 0; i < C; i++) acc[i] = 0;
    for (r = 0; r < rows; r++)
        for (i = 0; i < C; i++) {
            double d = x[(size_t)r * C + i] - tot[i];
            acc[i] += d * d;
        }
    mama__dp_pack(send, acc, C);
    MAMA_TRY(c->allgather_f32(c, send, stride, all));
    mama__dp_unpack_sum(acc, all, C, W, stride); /* acc: global sum of squares */
    for (i = 0; i < C; i++) {
        double var = acc[i] / n;
        float mu = (float)tot[i], rs = (float)(1.0 / sqrt(var + eps));
        float wc = w ? w[i] : 1.0f, bc = b ? b[i] : 0.0f, sc = rs * wc, sh = bc - mu * sc;
        if (running_mean && running_var) {
            double unb = n > 1 ? acc[i] / (n - 1) : var;
            running_mean[i] = (float)((1.0 - momentum) * running_mean[i] + momentum * tot[i]);
            running_var[i] = (float)((1.0 - momentum) * running_var[i] + momentum * unb);
        }
        mean[i] = mu;
        rstd[i] = rs;
        for (r = 0; r < rows; r++) y[(size_t)r * C + i] = x[(size_t)r * C + i] * sc + sh;
    }
    return MAMA_OK;
}

static mama_status mama__dp_bn_backward_host(mama_model *m, float *dx, float *dw, float *db, const float *dy,
                                             const float *x, const float *w, const float *mean, const float *rstd,
                                             int rows, int C) {
    mama__dp *dp = m->dp;
    mama_comm *c = dp->comm;
    int W = c->size, r, i;
    double *sd = dp->bn_mean, *sdx = dp->bn_mean + C, *tot = dp->bn_mean + 2 * (size_t)C, n = 0;
    float *send = dp->bn_host, *all = dp->bn_host + 4 * (size_t)C + 2;
    size_t stride = 4 * (size_t)C + 2;
    for (i = 0; i < C; i++) sd[i] = sdx[i] = 0;
    for (r = 0; r < rows; r++)
        for (i = 0; i < C; i++) {
            float d = dy[(size_t)r * C + i], xh = (x[(size_t)r * C + i] - mean[i]) * rstd[i];
            sd[i] += d;
            sdx[i] += (double)d * xh;
        }
    for (i = 0; i < C; i++) { /* this rank's part of dw, db (the gradient all-reduce adds the rest) */
        if (dw) dw[i] += (float)sdx[i];
        if (db) db[i] += (float)sd[i];
    }
    mama__dp_pack(send, sd, 2 * C); /* sd and sdx are adjacent */
    send[4 * C] = (float)rows;
    send[4 * C + 1] = 0;
    MAMA_TRY(c->allgather_f32(c, send, stride, all));
    mama__dp_unpack_sum(tot, all, 2 * C, W, stride);
    for (r = 0; r < W; r++) n += all[(size_t)r * stride + 4 * C];
    if (!dx) return MAMA_OK;
    for (i = 0; i < C; i++) {
        float wr = (w ? w[i] : 1.0f) * rstd[i], k1 = (float)(tot[i] / n), k2 = (float)(tot[C + i] / n);
        float mu = mean[i], rs = rstd[i];
        for (r = 0; r < rows; r++) {
            size_t o = (size_t)r * C + i;
            dx[o] += wr * (dy[o] - k1 - (x[o] - mu) * rs * k2);
        }
    }
    return MAMA_OK;
}

static void mama__dp_bn_forward(mama_model *m, float *y, float *mean, float *rstd, float *running_mean,
                                float *running_var, const float *x, const float *w, const float *b, int rows, int C,
                                float eps, float momentum) {
    mama__dp *dp = m->dp;
    mama_backend *be = m->be;
    mama_comm *c = dp->comm;
    float *dv = dp->bn_dev, *h = dp->bn_host;
    double n;
    int i;
    mama_status s;
    if (dp->status != MAMA_OK || C > dp->C) { /* already failed: keep going locally, the step reports it */
        if (C > dp->C && dp->status == MAMA_OK)
            mama__dp_fail(m, MAMA_FAIL(MAMA_ERR_INVALID, "synchronised BatchNorm of %d channels (scratch %d)", C, dp->C));
        be->batchnorm_forward(be, y, mean, rstd, running_mean, running_var, x, w, b, rows, C, eps, momentum, 1);
        return;
    }
    if (mama__dp_host(m)) {
        if ((s = mama__dp_bn_forward_host(m, y, mean, rstd, running_mean, running_var, x, w, b, rows, C, eps,
                                          momentum)) != MAMA_OK) goto fail;
        return;
    }
    /* device backend: this rank's statistics from the backend's own
     * BatchNorm; y is overwritten below, the running statistics are scratch */
    be->batchnorm_forward(be, y, dv, dv + C, dv + 2 * C, dv + 3 * C, x, NULL, NULL, rows, C, eps, 0.0f, 1);
    if ((s = be->to_host(be, h, dv, sizeof(float) * 2 * (size_t)C)) != MAMA_OK) goto fail;
    for (i = 0; i < C; i++) h[2 * C + i] = (float)rows * h[i];
    h[3 * C] = (float)rows;
    if ((s = c->allreduce_sum_f32(c, h + 2 * C, (size_t)C + 1)) != MAMA_OK) goto fail;
    n = h[3 * C];
    for (i = 0; i < C; i++) {
        double r = h[C + i], var_r = 1.0 / (r * r) - eps, d;
        dp->bn_mean[i] = h[2 * C + i] / n;
        if (var_r < 0) var_r = 0;
        d = h[i] - dp->bn_mean[i];
        h[2 * C + i] = (float)(rows * var_r + rows * d * d);
    }
    if ((s = c->allreduce_sum_f32(c, h + 2 * C, (size_t)C)) != MAMA_OK) goto fail;
    /* h[0..C) pooled mean, h[C..2C) pooled (biased) variance */
    for (i = 0; i < C; i++) {
        double m2 = h[2 * C + i];
        h[i] = (float)dp->bn_mean[i];
        h[C + i] = (float)(m2 / n);
        h[2 * C + i] = (float)(n > 1 ? m2 / (n - 1) : m2 / n); /* unbiased, for the running variance */
    }
    if (running_mean && running_var) {
        float *rm = h + 3 * C, *rv = h + 4 * C;
        if ((s = be->to_host(be, rm, running_mean, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
        if ((s = be->to_host(be, rv, running_var, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
        for (i = 0; i < C; i++) {
            rm[i] = (float)((1.0 - momentum) * rm[i] + momentum * (double)h[i]);
            rv[i] = (float)((1.0 - momentum) * rv[i] + momentum * (double)h[2 * C + i]);
        }
        if ((s = be->to_device(be, running_mean, rm, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
        if ((s = be->to_device(be, running_var, rv, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
    }
    if ((s = be->to_device(be, dv, h, sizeof(float) * 2 * (size_t)C)) != MAMA_OK) goto fail;
    be->batchnorm_forward(be, y, mean, rstd, dv, dv + C, x, w, b, rows, C, eps, momentum, 0);
    for (i = 0; i < C; i++) h[2 * C + i] = (float)(1.0 / sqrt((double)h[C + i] + eps));
    if ((s = be->to_device(be, rstd, h + 2 * C, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
    return;
fail:
    mama__dp_fail(m, s);
}

/* Backward.  With xhat = (x - mean) rstd and sums over the rows of ALL ranks
 *   dx = w rstd (dy - SD/n - xhat SDX/n),  SD = sum dy,  SDX = sum dy xhat,
 *   dw += sum dy xhat,  db += sum dy (this rank's rows; the gradient
 *   all-reduce adds the other ranks' parts).
 * The backend's BatchNorm backward, handed the NEGATED rstd (its "constant
 * statistics" form), gives dx += w rstd dy and this rank's SD, SDX in its
 * dw/db outputs; after one all-reduce of 2C floats the rest is per channel
 * affine in x:  dx += g1 x + g0  with  g1 = -w rstd^2 SDX/n  and
 * g0 = -w rstd SD/n + w rstd^2 mean SDX/n, applied with the LayerScale
 * backward (dx += x g1) and a bias add (dx += g0). */
static void mama__dp_bn_backward(mama_model *m, float *dx, float *dw, float *db, const float *dy, const float *x,
                                 const float *w, const float *mean, const float *rstd, int rows, int C) {
    mama__dp *dp = m->dp;
    mama_backend *be = m->be;
    mama_comm *c = dp->comm;
    float *dv = dp->bn_dev, *h = dp->bn_host;
    float *hr = h, *hm = h + C, *hw = h + 2 * C, *hs = h + 3 * C;
    double n;
    int i;
    mama_status s;
    if (dp->status != MAMA_OK || C > dp->C) {
        be->batchnorm_backward(be, dx, dw, db, dy, x, w, mean, rstd, rows, C);
        return;
    }
    if ((s = be->to_host(be, hr, rstd, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
    if (hr[0] < 0) { /* eval-mode forward: constant statistics, nothing to share */
        be->batchnorm_backward(be, dx, dw, db, dy, x, w, mean, rstd, rows, C);
        return;
    }
    if (mama__dp_host(m)) {
        if ((s = mama__dp_bn_backward_host(m, dx, dw, db, dy, x, w, mean, rstd, rows, C)) != MAMA_OK) goto fail;
        return;
    }
    if ((s = be->to_host(be, hm, mean, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
    if (w) { if ((s = be->to_host(be, hw, w, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail; }
    else for (i = 0; i < C; i++) hw[i] = 1.0f;
    for (i = 0; i < C; i++) hs[i] = -hr[i];
    if ((s = be->to_device(be, dv, hs, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
    if ((s = be->zero(be, dv + C, sizeof(float) * 2 * (size_t)C)) != MAMA_OK) goto fail;
    be->batchnorm_backward(be, dx, dv + C, dv + 2 * C, dy, x, w, mean, dv, rows, C);
    if (dw) be->accumulate(be, dw, dv + C, 1.0f, (size_t)C);
    if (db) be->accumulate(be, db, dv + 2 * C, 1.0f, (size_t)C);
    if ((s = be->to_host(be, hs, dv + C, sizeof(float) * 2 * (size_t)C)) != MAMA_OK) goto fail;
    hs[2 * C] = (float)rows;
    if ((s = c->allreduce_sum_f32(c, hs, 2 * (size_t)C + 1)) != MAMA_OK) goto fail;
    n = hs[2 * C];
    for (i = 0; i < C; i++) {
        double wr = (double)hw[i] * hr[i], k2 = hs[i] / n, k1 = hs[C + i] / n;
        double g1 = -wr * k2 * hr[i], g0 = -wr * k1 + wr * k2 * hr[i] * hm[i];
        h[6 * C + i] = (float)g1; /* h[6C..8C): g1, g0 (past every input copy) */
        h[7 * C + i] = (float)g0;
    }
    if ((s = be->to_device(be, dv + 3 * C, h + 6 * C, sizeof(float) * 2 * (size_t)C)) != MAMA_OK) goto fail;
    if ((s = be->zero(be, dv + 5 * C, sizeof(float) * (size_t)C)) != MAMA_OK) goto fail;
    be->layerscale_backward(be, dx, dv + 5 * C, x, x, dv + 3 * C, rows, C); /* dx += x g1 (dv+5C: unused scratch) */
    be->bias_add_forward(be, dx, dv + 4 * C, rows, C);                       /* dx += g0 */
    return;
fail:
    mama__dp_fail(m, s);
}

/* The text local head normalises each caption's sentences alone (SPEC A.3),
 * so its outputs need nothing from other ranks; but one process updates the
 * running statistics once per caption, in caption order over the whole
 * batch.  To keep them identical to that, each rank sends every caption's
 * batch statistics (double mean and unbiased variance, computed as the CPU
 * kernel does), and every rank replays all G momentum updates in global
 * caption order from the values before the step. */
static void mama__dp_text_bn_save(mama_model *m) {
    mama__dp *dp = m->dp;
    mama_backend *be = m->be;
    const mama__local_head *w = &m->w.txt_local;
    int Hd = m->cfg.local_hidden, E = m->cfg.embed_dim;
    mama_status s;
    if (dp->status != MAMA_OK) return;
    if ((s = mama__dp_grow((void **)&dp->tsave, &dp->tsave_cap, sizeof(float) * 2 * (size_t)(Hd + E))) != MAMA_OK ||
        (s = be->to_host(be, dp->tsave, w->bn1_mean, sizeof(float) * (size_t)Hd)) != MAMA_OK ||
        (s = be->to_host(be, dp->tsave + Hd, w->bn1_var, sizeof(float) * (size_t)Hd)) != MAMA_OK ||
        (s = be->to_host(be, dp->tsave + 2 * Hd, w->bn2_mean, sizeof(float) * (size_t)E)) != MAMA_OK ||
        (s = be->to_host(be, dp->tsave + 2 * Hd + E, w->bn2_var, sizeof(float) * (size_t)E)) != MAMA_OK) {
        mama__dp_fail(m, s);
        return;
    }
    dp->tsave_tracked[0] = m->bn_batches[2];
    dp->tsave_tracked[1] = m->bn_batches[3];
}

/* per-channel double mean and unbiased variance of rows r0..r0+nr-1 of x [., C], packed */
static void mama__dp_caption_stats(const float *x, int r0, int nr, int C, double *tmp, float *out) {
    int r, i;
    double *mu = tmp, *uv = tmp + C;
    for (i = 0; i < C; i++) mu[i] = uv[i] = 0;
    for (r = r0; r < r0 + nr; r++)
        for (i = 0; i < C; i++) mu[i] += x[(size_t)r * C + i];
    for (i = 0; i < C; i++) mu[i] /= nr;
    for (r = r0; r < r0 + nr; r++)
        for (i = 0; i < C; i++) {
            double d = x[(size_t)r * C + i] - mu[i];
            uv[i] += d * d;
        }
    for (i = 0; i < C; i++) uv[i] = nr > 1 ? uv[i] / (nr - 1) : uv[i] / nr;
    mama__dp_pack(out, mu, 2 * C); /* mu and uv are adjacent */
}

static void mama__dp_text_bn_replay(mama_model *m, int B, int S) {
    mama__dp *dp = m->dp;
    mama_backend *be = m->be;
    mama_comm *c = dp->comm;
    const mama__local_head *w = &m->w.txt_local;
    int Hd = m->cfg.local_hidden, E = m->cfg.embed_dim, W = c->size, i, q, k;
    size_t R = 2 + 4 * (size_t)(Hd + E), need;
    float *h1, *h2, *send, *all, *rm1, *rv1, *rm2, *rv2;
    double *tmp;
    mama_status s;
    if (dp->status != MAMA_OK) return;
    need = (size_t)S * (Hd + E) + (size_t)(W + 1) * B * R;
    if ((s = mama__dp_grow((void **)&dp->tbuf, &dp->tbuf_cap, sizeof(float) * need)) != MAMA_OK ||
        (s = mama__dp_grow((void **)&dp->tdbl, &dp->tdbl_cap, sizeof(double) * 2 * (size_t)Hd)) != MAMA_OK)
        goto fail;
    h1 = dp->tbuf; h2 = h1 + (size_t)S * Hd; send = h2 + (size_t)S * E; all = send + (size_t)B * R;
    tmp = dp->tdbl;
    if (S > 0 && ((s = be->to_host(be, h1, m->a.tl_h1, sizeof(float) * (size_t)S * Hd)) != MAMA_OK ||
                  (s = be->to_host(be, h2, m->a.tl_h2, sizeof(float) * (size_t)S * E)) != MAMA_OK))
        goto fail;
    for (i = 0; i < B; i++) {
        int r0 = m->h_sent_seg[i], nr = m->h_sent_seg[i + 1] - r0;
        float *rec = send + (size_t)i * R;
        memset(rec, 0, sizeof(float) * R);
        rec[0] = (float)nr;
        if (nr <= 0) continue;
        mama__dp_caption_stats(h1, r0, nr, Hd, tmp, rec + 2);
        mama__dp_caption_stats(h2, r0, nr, E, tmp, rec + 2 + 4 * (size_t)Hd);
    }
    if ((s = c->allgather_f32(c, send, (size_t)B * R, all)) != MAMA_OK) goto fail;
    /* replay, caption by caption in global order, from the saved values */
    rm1 = dp->tsave; rv1 = rm1 + Hd; rm2 = rv1 + Hd; rv2 = rm2 + E;
    m->bn_batches[2] = dp->tsave_tracked[0];
    m->bn_batches[3] = dp->tsave_tracked[1];
    for (q = 0; q < W * B; q++) {
        const float *rec = all + (size_t)q * R, *p1 = rec + 2, *p2 = rec + 2 + 4 * (size_t)Hd;
        if (rec[0] <= 0) continue;
        for (k = 0; k < Hd; k++) {
            double mu = (double)p1[2 * k] + p1[2 * k + 1], uv = (double)p1[2 * (Hd + k)] + p1[2 * (Hd + k) + 1];
            rm1[k] = (float)((1.0 - 0.1f) * rm1[k] + 0.1f * mu);
            rv1[k] = (float)((1.0 - 0.1f) * rv1[k] + 0.1f * uv);
        }
        for (k = 0; k < E; k++) {
            double mu = (double)p2[2 * k] + p2[2 * k + 1], uv = (double)p2[2 * (E + k)] + p2[2 * (E + k) + 1];
            rm2[k] = (float)((1.0 - 0.1f) * rm2[k] + 0.1f * mu);
            rv2[k] = (float)((1.0 - 0.1f) * rv2[k] + 0.1f * uv);
        }
        m->bn_batches[2]++;
        m->bn_batches[3]++;
    }
    if ((s = be->to_device(be, w->bn1_mean, rm1, sizeof(float) * (size_t)Hd)) != MAMA_OK ||
        (s = be->to_device(be, w->bn1_var, rv1, sizeof(float) * (size_t)Hd)) != MAMA_OK ||
        (s = be->to_device(be, w->bn2_mean, rm2, sizeof(float) * (size_t)E)) != MAMA_OK ||
        (s = be->to_device(be, w->bn2_var, rv2, sizeof(float) * (size_t)E)) != MAMA_OK)
        goto fail;
    return;
fail:
    mama__dp_fail(m, s);
}

/* ---- 12.5 The losses over the global batch ------------------------------
 * The loss buffers of section 4's arena are sized for one rank's batch;
 * the global losses need them for G = W * B rows (and the SLA ones for all
 * sentences of the global batch), so the model gets a second, loss-only
 * workspace `ga`.  The section-6 loss functions read everything through
 * m->a, so for the global part their fields are pointed at `ga` and put
 * back afterwards: the very same code computes the single-process loss. */
#define MAMA__DP_LOSS_FIELDS(X) \
    X(img_emb) X(d_img_emb) X(txt_emb) X(d_txt_emb) X(sc_z) X(sc_zn) X(sc_norm) X(d_sc_zn) X(d_sc_z) \
    X(logits) X(logits_t) X(ce_loss) X(ce_probs) X(ce_probs_t) X(dlogits) X(dlogits_t) X(ce_dloss) \
    X(targets_diag) X(targets_ntx) X(ntx_sim) X(ntx_probs) X(ntx_loss) X(ntx_dsim) X(ntx_dloss) \
    X(p_emb) X(d_p_emb) X(s_emb) X(d_s_emb) X(sent_seg) X(img_seg) \
    X(sla_sim) X(sla_simt) X(sla_rowmax) X(sla_rowarg) X(sla_colmax) X(sla_colarg) X(sla_avg) X(sla_t2i_t) \
    X(sla_i2t) X(sla_dsim) X(sla_dsimt) X(sla_drowmax) X(sla_dcolmax) X(sla_dt2i_t) X(sla_di2t)

static size_t mama__dp_layout(const mama_model *m, mama__acts *a, int G, int S, float *base) {
    int N = m->n_patches, E = m->cfg.embed_dim, Gv = 2 * G;
    size_t off = 0, GN = (size_t)G * N;
#define MAMA__DPF(ptr, n) do { (ptr) = base ? base + off : NULL; off += mama__round16((size_t)(n)); } while (0)
#define MAMA__DPI(ptr, n) do { (ptr) = base ? (int *)(void *)(base + off) : NULL; off += mama__round16((size_t)(n)); } while (0)
    MAMA__DPF(a->img_emb, (size_t)Gv * E); MAMA__DPF(a->d_img_emb, (size_t)Gv * E);
    MAMA__DPF(a->txt_emb, (size_t)G * E); MAMA__DPF(a->d_txt_emb, (size_t)G * E);
    MAMA__DPF(a->sc_z, (size_t)Gv * E); MAMA__DPF(a->sc_zn, (size_t)Gv * E); MAMA__DPF(a->sc_norm, Gv);
    MAMA__DPF(a->d_sc_zn, (size_t)Gv * E); MAMA__DPF(a->d_sc_z, (size_t)Gv * E);
    MAMA__DPF(a->logits, (size_t)G * G); MAMA__DPF(a->logits_t, (size_t)G * G); MAMA__DPF(a->ce_loss, 2 * Gv);
    MAMA__DPF(a->ce_probs, (size_t)G * G); MAMA__DPF(a->ce_probs_t, (size_t)G * G);
    MAMA__DPF(a->dlogits, (size_t)G * G); MAMA__DPF(a->dlogits_t, (size_t)G * G); MAMA__DPF(a->ce_dloss, Gv);
    MAMA__DPI(a->targets_diag, G); MAMA__DPI(a->targets_ntx, Gv);
    MAMA__DPF(a->ntx_sim, (size_t)Gv * Gv); MAMA__DPF(a->ntx_probs, (size_t)Gv * Gv); MAMA__DPF(a->ntx_loss, Gv);
    MAMA__DPF(a->ntx_dsim, (size_t)Gv * Gv); MAMA__DPF(a->ntx_dloss, Gv);
    if (S > 0) { /* SLA: every patch of the global batch against every sentence */
        MAMA__DPF(a->p_emb, GN * E); MAMA__DPF(a->d_p_emb, GN * E);
        MAMA__DPF(a->s_emb, (size_t)S * E); MAMA__DPF(a->d_s_emb, (size_t)S * E);
        MAMA__DPI(a->sent_seg, G + 1); MAMA__DPI(a->img_seg, G + 1);
        MAMA__DPF(a->sla_sim, GN * S); MAMA__DPF(a->sla_simt, GN * S);
        MAMA__DPF(a->sla_rowmax, GN * G); MAMA__DPI(a->sla_rowarg, GN * G);
        MAMA__DPF(a->sla_colmax, (size_t)S * G); MAMA__DPI(a->sla_colarg, (size_t)S * G);
        MAMA__DPF(a->sla_avg, (size_t)G * S);
        MAMA__DPF(a->sla_t2i_t, (size_t)G * G); MAMA__DPF(a->sla_i2t, (size_t)G * G);
        MAMA__DPF(a->sla_dsim, GN * S); MAMA__DPF(a->sla_dsimt, GN * S);
        MAMA__DPF(a->sla_drowmax, GN * G); MAMA__DPF(a->sla_dcolmax, (size_t)S * G);
        MAMA__DPF(a->sla_dt2i_t, (size_t)G * G); MAMA__DPF(a->sla_di2t, (size_t)G * G);
    }
#undef MAMA__DPF
#undef MAMA__DPI
    return off;
}

/* (Re)allocate the loss workspace for G rows and S sentences (grows only). */
static mama_status mama__dp_workspace(mama_model *m, int S) {
    mama__dp *dp = m->dp;
    mama_backend *be = m->be;
    size_t n;
    if (dp->arena && S <= dp->S_cap) return MAMA_OK;
    if (S > dp->S_cap) S = S + S / 4; /* headroom: caption lengths vary from step to step */
    else S = dp->S_cap;
    if (dp->arena) be->free(be, dp->arena);
    dp->arena = NULL;
    n = mama__dp_layout(m, &dp->ga, dp->G, S, NULL);
    if (be->alloc(be, (void **)&dp->arena, sizeof(float) * n) != MAMA_OK)
        return MAMA_FAIL(MAMA_ERR_NOMEM, "data parallel: the global-batch loss workspace (%zu MiB for %d samples, "
                         "%d sentences) does not fit", n * sizeof(float) >> 20, dp->G, S);
    mama__dp_layout(m, &dp->ga, dp->G, S, dp->arena);
    dp->S_cap = S;
    return MAMA_OK;
}

static mama_status mama__dp_losses(mama_model *m, int B, int S, int use_mv, int use_sym, int use_sla, int backward,
                                   mama_losses *L) {
    mama__dp *dp = m->dp;
    mama_comm *c = dp->comm;
    mama_backend *be = m->be;
    mama__acts *a = &m->a, saved;
    const mama__acts *ga = &dp->ga;
    int W = c->size, r = c->rank, E = m->cfg.embed_dim, N = m->n_patches, G = W * B, Sg = 0, soff = 0, i, q, t;
    int global = dp->mode == MAMA_DP_GLOBAL, two = use_mv || use_sym;
    size_t BE = (size_t)B * E;
    float *hf, *dscale = NULL, *local_scale_grad = m->g.local_scale;
    int *hi;
    mama_status s = MAMA_OK;
    /* 1. shapes: the same B everywhere; every caption's sentence count (SLA) */
    MAMA_TRY(mama__dp_grow((void **)&dp->hf, &dp->hf_cap, sizeof(float) * ((size_t)W * (B + 2) + 2)));
    hf = dp->hf;
    hf[0] = (float)B;
    hf[1] = (float)S;
    MAMA_TRY(c->allgather_f32(c, hf, 2, hf + 2));
    for (q = 0; q < W; q++)
        if ((int)hf[2 + 2 * q] != B)
            return MAMA_FAIL(MAMA_ERR_INVALID, "data parallel: rank %d has a batch of %d, rank %d of %d (all ranks "
                             "must use the same batch)", q, (int)hf[2 + 2 * q], r, B);
    for (q = 0; q < W; q++) {
        dp->counts[q] = (size_t)hf[2 + 2 * q + 1];
        if (q < r) soff += (int)dp->counts[q];
        Sg += (int)dp->counts[q];
    }
    if (G > dp->G) return MAMA_FAIL(MAMA_ERR_INVALID, "data parallel: global batch %d > capacity %d", G, dp->G);
    MAMA_TRY(mama__dp_workspace(m, global && use_sla ? Sg : 0));
    MAMA_TRY(mama__dp_grow((void **)&dp->hi, &dp->hi_cap, sizeof(int) * (2 * (size_t)G + 2)));
    hi = dp->hi;
    /* 2. the rows every loss reads across samples, in global order
     *    (image half [G], then the ext half [G], as one process of G has them) */
    if (global) {
        MAMA_TRY(mama__dp_allgather_dev(m, a->img_emb, BE, ga->img_emb));
        if (two) MAMA_TRY(mama__dp_allgather_dev(m, a->img_emb + BE, BE, ga->img_emb + (size_t)G * E));
        MAMA_TRY(mama__dp_allgather_dev(m, a->txt_emb, BE, ga->txt_emb));
        if (use_sla) {
            MAMA_TRY(mama__dp_allgather_dev(m, a->p_emb, BE * N, ga->p_emb));
            for (q = 0; q < W; q++) dp->counts[q] *= (size_t)E;
            MAMA_TRY(mama__dp_allgatherv_dev(m, a->s_emb, (size_t)S * E, ga->s_emb, dp->counts));
        }
    }
    if (use_mv) {
        MAMA_TRY(mama__dp_allgather_dev(m, a->sc_z, BE, ga->sc_z));
        MAMA_TRY(mama__dp_allgather_dev(m, a->sc_z + BE, BE, ga->sc_z + (size_t)G * E));
    }
    /* 3. the global index arrays: targets, 1/G loss weights, sentence segments */
    for (i = 0; i < G; i++) hi[i] = i;
    MAMA_TRY(be->to_device(be, ga->targets_diag, hi, sizeof(int) * (size_t)G));
    for (i = 0; i < 2 * G; i++) hi[i] = (i + G) % (2 * G);
    MAMA_TRY(be->to_device(be, ga->targets_ntx, hi, sizeof(int) * (size_t)(2 * G)));
    MAMA_TRY(mama__dp_grow((void **)&dp->hf, &dp->hf_cap, sizeof(float) * ((size_t)2 * G + (size_t)G * Sg + 2)));
    hf = dp->hf;
    for (i = 0; i < G; i++) hf[i] = 1.0f / (float)G;
    MAMA_TRY(be->to_device(be, ga->ce_dloss, hf, sizeof(float) * (size_t)G));
    for (i = 0; i < 2 * G; i++) hf[i] = 1.0f / (float)(2 * G);
    MAMA_TRY(be->to_device(be, ga->ntx_dloss, hf, sizeof(float) * (size_t)(2 * G)));
    if (global && use_sla) {
        /* every rank's caption sentence counts -> global segments and the
         * sentence-averaging matrix [G, Sg] of the t2i score */
        hf[0] = 0;
        for (i = 0; i < B; i++) hf[i] = (float)(m->h_sent_seg[i + 1] - m->h_sent_seg[i]);
        MAMA_TRY(mama__dp_grow((void **)&dp->stage, &dp->stage_cap, sizeof(float) * (size_t)G));
        MAMA_TRY(c->allgather_f32(c, hf, (size_t)B, dp->stage));
        hi[0] = 0;
        for (i = 0; i < G; i++) hi[i + 1] = hi[i] + (int)dp->stage[i];
        if (hi[G] != Sg) return MAMA_FAIL(MAMA_ERR_INVALID, "data parallel: sentence counts disagree (%d vs %d)", hi[G], Sg);
        MAMA_TRY(be->to_device(be, ga->sent_seg, hi, sizeof(int) * (size_t)(G + 1)));
        memset(hf, 0, sizeof(float) * (size_t)G * Sg);
        for (i = 0; i < G; i++)
            for (t = hi[i]; t < hi[i + 1]; t++) hf[(size_t)i * Sg + t] = 1.0f / (float)(hi[i + 1] - hi[i]);
        MAMA_TRY(be->to_device(be, ga->sla_avg, hf, sizeof(float) * (size_t)G * Sg));
        for (i = 0; i <= G; i++) hi[i] = i * N;
        MAMA_TRY(be->to_device(be, ga->img_seg, hi, sizeof(int) * (size_t)(G + 1)));
    }
    if (!global) {
        /* reference: CLIP, symmetric CLIP and SLA over this rank's batch, as
         * section 6 computes them; the objective is their mean over ranks,
         * so the CE weights become 1/(W B) (the loss values stay per rank
         * and are averaged for the report below) */
        for (i = 0; i < B; i++) hf[i] = 1.0f / (float)G;
        MAMA_TRY(be->to_device(be, a->ce_dloss, hf, sizeof(float) * (size_t)B));
        mama__clip_loss(m, a->img_emb, a->txt_emb, backward ? a->d_img_emb : NULL, a->d_txt_emb, m->w.logit_scale,
                        backward ? m->g.logit_scale : NULL, B, m->d_acc + MAMA__ACC_CLIP);
        if (use_sym)
            mama__clip_loss(m, a->img_emb + BE, a->txt_emb, backward ? a->d_img_emb + BE : NULL, a->d_txt_emb,
                            m->w.logit_scale, backward ? m->g.logit_scale : NULL, B, m->d_acc + MAMA__ACC_SYM);
        if (use_sla) {
            if (backward) {
                mama__zero(be, a->d_p_emb, BE * N);
                mama__zero(be, a->d_s_emb, (size_t)S * E);
            }
            mama__sla_loss(m, B, S, backward, m->d_acc + MAMA__ACC_SLA);
        }
        MAMA_TRY(mama__losses_download(m, L));
        hf[0] = L->clip; hf[1] = L->sym; hf[2] = L->sla;
        MAMA_TRY(c->allreduce_sum_f32(c, hf, 3));
        L->clip = hf[0] / W; L->sym = hf[1] / W; L->sla = hf[2] / W;
    }
    /* 4. the global losses: section 6's code on the gathered tensors.  The
     * log-temperatures' gradients come from rank 0 only (every rank holds
     * the same value; the gradient all-reduce sums). */
    saved = *a;
#define MAMA__DP_SWAP(f) a->f = ga->f;
    MAMA__DP_LOSS_FIELDS(MAMA__DP_SWAP)
#undef MAMA__DP_SWAP
    if (backward && r == 0) dscale = m->g.logit_scale;
    if (r != 0) m->g.local_scale = NULL;
    if (backward) {
        mama__zero(be, a->d_img_emb, (size_t)2 * G * E);
        mama__zero(be, a->d_txt_emb, (size_t)G * E);
    }
    if (global) {
        mama__clip_loss(m, a->img_emb, a->txt_emb, backward ? a->d_img_emb : NULL, a->d_txt_emb, m->w.logit_scale,
                        dscale, G, m->d_acc + MAMA__ACC_CLIP);
        if (use_sym)
            mama__clip_loss(m, a->img_emb + (size_t)G * E, a->txt_emb, backward ? a->d_img_emb + (size_t)G * E : NULL,
                            a->d_txt_emb, m->w.logit_scale, dscale, G, m->d_acc + MAMA__ACC_SYM);
        if (use_sla) {
            if (backward) {
                mama__zero(be, a->d_p_emb, (size_t)G * N * E);
                mama__zero(be, a->d_s_emb, (size_t)Sg * E);
            }
            mama__sla_loss(m, G, Sg, backward, m->d_acc + MAMA__ACC_SLA);
        }
    }
    if (use_mv) mama__ntxent_loss(m, G, backward, m->d_acc + MAMA__ACC_MV);
    *a = saved;
    m->g.local_scale = local_scale_grad;
    { /* the terms computed here (the reference mode keeps its rank means) */
        mama_losses g;
        MAMA_TRY(mama__losses_download(m, &g));
        if (global) { L->clip = g.clip; L->sym = g.sym; L->sla = g.sla; }
        L->mv = g.mv;
    }
    if (!backward) return s;
    /* 5. keep the gradient rows of this rank's samples */
    if (global) {
        be->accumulate(be, a->d_img_emb, ga->d_img_emb + (size_t)r * BE, 1.0f, BE);
        if (two) be->accumulate(be, a->d_img_emb + BE, ga->d_img_emb + ((size_t)G * E + (size_t)r * BE), 1.0f, BE);
        be->accumulate(be, a->d_txt_emb, ga->d_txt_emb + (size_t)r * BE, 1.0f, BE);
        if (use_sla) {
            MAMA_TRY(be->copy(be, a->d_p_emb, ga->d_p_emb + (size_t)r * BE * N, sizeof(float) * BE * N));
            if (S > 0) MAMA_TRY(be->copy(be, a->d_s_emb, ga->d_s_emb + (size_t)soff * E, sizeof(float) * (size_t)S * E));
        }
    }
    if (use_mv) {
        MAMA_TRY(be->copy(be, a->d_sc_z, ga->d_sc_z + (size_t)r * BE, sizeof(float) * BE));
        MAMA_TRY(be->copy(be, a->d_sc_z + BE, ga->d_sc_z + ((size_t)G * E + (size_t)r * BE), sizeof(float) * BE));
    }
    return s;
}

/* ---- 12.6 Public entry points, sharded encoding, checkpoints ----------- */
MAMA_API mama_status mama_model_set_comm(mama_model *m, mama_comm *comm, mama_dp_mode mode) {
    mama__dp *dp;
    mama_backend *be;
    float mine[4], *all = NULL;
    size_t total;
    int C, q;
    mama_status s;
    if (!m) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_set_comm: model is NULL");
    be = m->be;
    mama__dp_free(m);
    if (!comm || comm->size <= 1) return MAMA_OK;
    if (comm->rank < 0 || comm->rank >= comm->size || !comm->allreduce_sum_f32 || !comm->allgather_f32 ||
        !comm->allgatherv_f32 || !comm->broadcast_f32 || !comm->barrier)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_set_comm: communicator '%s' is incomplete (rank %d of %d)",
                         comm->name ? comm->name : "?", comm->rank, comm->size);
    if (mode != MAMA_DP_GLOBAL && mode != MAMA_DP_REFERENCE)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_set_comm: unknown mode %d", (int)mode);
    MAMA_TRY(mama_calloc((void **)&dp, sizeof *dp, "data-parallel state"));
    m->dp = dp;
    dp->comm = comm;
    dp->mode = mode;
    dp->G = comm->size * m->max_batch;
    C = m->cfg.local_hidden;
    if (m->cfg.vision_dim > C) C = m->cfg.vision_dim;
    if (m->cfg.embed_dim > C) C = m->cfg.embed_dim;
    dp->C = C;
    if ((s = be->alloc(be, (void **)&dp->bn_dev, sizeof(float) * 8 * (size_t)C)) != MAMA_OK ||
        (s = be->zero(be, dp->bn_dev, sizeof(float) * 8 * (size_t)C)) != MAMA_OK ||
        (s = mama_alloc((void **)&dp->bn_host, sizeof(float) * ((8 + 4 * (size_t)comm->size) * C + 8 * (size_t)comm->size + 8),
                        "data-parallel scratch")) != MAMA_OK ||
        (s = mama_alloc((void **)&dp->bn_mean, sizeof(double) * 4 * (size_t)C, "data-parallel scratch")) != MAMA_OK ||
        (s = mama_calloc((void **)&dp->counts, sizeof(size_t) * (size_t)comm->size, "data-parallel scratch")) != MAMA_OK ||
        (s = mama_alloc((void **)&all, sizeof(float) * 4 * (size_t)comm->size, "data-parallel scratch")) != MAMA_OK)
        goto fail;
    /* the replicas must be the same model: compare shapes with rank 0's */
    total = m->group_offset[3] + m->group_numel[3];
    mine[0] = (float)(total % 16777216); mine[1] = (float)(total / 16777216);
    mine[2] = (float)m->nparams; mine[3] = (float)m->max_batch;
    if ((s = comm->allgather_f32(comm, mine, 4, all)) != MAMA_OK) goto fail;
    for (q = 0; q < comm->size; q++)
        if (all[4 * q] != all[0] || all[4 * q + 1] != all[1] || all[4 * q + 2] != all[2] || all[4 * q + 3] != all[3]) {
            s = MAMA_FAIL(MAMA_ERR_INVALID, "data parallel: rank %d's model (%.0f tensors, max_batch %.0f) differs from "
                          "rank 0's (%.0f tensors, max_batch %.0f)", q, all[4 * q + 2], all[4 * q + 3], all[2], all[3]);
            goto fail;
        }
    /* one set of weights: rank 0's parameters and BatchNorm buffers everywhere */
    if ((s = mama__dp_broadcast_dev(m, m->params, total, 0)) != MAMA_OK) goto fail;
    mama_free(all);
    return MAMA_OK;
fail:
    mama_free(all);
    mama__dp_free(m);
    return s;
}


/* Each rank encodes records [n r / W, n (r+1) / W) (augmentation keyed by
 * the global index, so the features equal one process's), then all ranks
 * gather every row.  A failure on any rank fails all of them (nobody is
 * left waiting in the gather). */
static mama_status mama__dp_encode_records(mama_model *m, mama_dataset *d, const int *records, int n, float *emb,
                                           float *pooled, int train_aug, uint64_t seed) {
    mama_comm *c = m->dp->comm;
    int W = c->size, r = c->rank, q, E = m->cfg.embed_dim, D = m->cfg.vision_dim;
    int lo = (int)((long long)n * r / W), hi = (int)((long long)n * (r + 1) / W);
    float *le = NULL, *lp = NULL, flag;
    mama_status s = MAMA_OK;
    char msg[1024] = "";
    if (emb) s = mama_alloc((void **)&le, sizeof(float) * ((size_t)(hi - lo) * E + 1), "sharded encoding");
    if (s == MAMA_OK && pooled) s = mama_alloc((void **)&lp, sizeof(float) * ((size_t)(hi - lo) * D + 1), "sharded encoding");
    if (s == MAMA_OK) s = mama__encode_range(m, d, records, lo, hi, le, lp, train_aug, seed);
    if (s != MAMA_OK) snprintf(msg, sizeof msg, "%s", mama_last_error());
    flag = s != MAMA_OK ? 1.0f : 0.0f;
    if (c->allreduce_sum_f32(c, &flag, 1) != MAMA_OK && s == MAMA_OK) s = MAMA_ERR_BACKEND;
    if (s == MAMA_OK && flag != 0) s = MAMA_FAIL(MAMA_ERR_IO, "sharded encoding failed on another rank");
    for (q = 0; q < W && s == MAMA_OK; q++)
        m->dp->counts[q] = (size_t)((long long)n * (q + 1) / W - (long long)n * q / W);
    if (s == MAMA_OK && emb) {
        for (q = 0; q < W; q++) m->dp->counts[q] *= (size_t)E;
        s = c->allgatherv_f32(c, le, (size_t)(hi - lo) * E, emb, m->dp->counts);
        for (q = 0; q < W; q++) m->dp->counts[q] /= (size_t)E;
    }
    if (s == MAMA_OK && pooled) {
        for (q = 0; q < W; q++) m->dp->counts[q] *= (size_t)D;
        s = c->allgatherv_f32(c, lp, (size_t)(hi - lo) * D, pooled, m->dp->counts);
    }
    mama_free(le);
    mama_free(lp);
    if (s != MAMA_OK && msg[0]) return MAMA_FAIL(s, "%s", msg);
    return s;
}

static mama_status mama__dp_checkpoint_save(const char *path, mama_model *m, const mama_adamw *opt, long step,
                                            uint64_t seed, double best_val, long best_step,
                                            const mama_pretrain_opts *o) {
    mama_status s = MAMA_OK;
    float flag;
    mama_comm *c;
    /* reference mode: the file holds the ranks' mean BatchNorm statistics (12.8) */
    MAMA_TRY(mama_model_average_bn_stats(m));
    if (mama__dp_rank(m) == 0) s = mama__checkpoint_save_best(path, m, opt, step, seed, best_val, best_step, o);
    if (mama__dp_world(m) == 1) return s;
    /* every rank learns whether rank 0 succeeded; the all-reduce also
     * orders the (atomic) rename before any rank goes on to read it */
    c = m->dp->comm;
    flag = s != MAMA_OK ? 1.0f : 0.0f;
    if (c->allreduce_sum_f32(c, &flag, 1) != MAMA_OK && s == MAMA_OK) return MAMA_ERR_BACKEND;
    if (flag != 0 && s == MAMA_OK) return MAMA_FAIL(MAMA_ERR_IO, "rank 0 could not write the checkpoint %s", path);
    return s;
}

/* ---- 12.7 The gradient sum, overlapped with the backward ----------------
 * The parameter visitor (section 5) lays the gradient buffer out as
 *   train: ViT embeddings, ViT blocks 0..L-1, image global head, [wte,
 *          wpe], GPT-2 blocks 0..L-1 (all weights, or their LoRA factors),
 *          [ln_f], text global head, logit_scale;
 *   late:  image local head, text local head, SimCLR head, local_scale;
 * the backward finishes it in another order: the log-scales (the losses),
 * SimCLR, image local head, image global head, ViT blocks L-1..0, ViT
 * embeddings, text global head, text local head, ln_f, GPT-2 blocks
 * L-1..0, wte/wpe.  The plan maps every trainable tensor, by its A.8 name,
 * to the hook point after which its gradient is final for the step, and
 * merges neighbours of one hook point into a segment; the segments tile
 * [0, train + late) in order (checked as the plan is built).  Armed for the
 * last micro-batch of an optimiser step (mama_model_overlap_grads), each
 * hook point starts a non-blocking in-place sum all-reduce of its segments
 * and then tests every outstanding request: OpenMPI runs no progress
 * thread by default, so a non-blocking collective advances only inside MPI
 * calls, and these tests between layers are where it does.  After the
 * backward, mama_model_allreduce_grads starts whatever no hook started
 * (MAMA__HOOK_OTHER: nothing in the current layout) and waits for all of
 * them, before clipping and the optimiser.  Each float is summed exactly
 * once, by one all-reduce, as on the blocking path; with 2 ranks every sum
 * is a + b on both paths, so they give the same bits.  Only the host path
 * overlaps (the CPU backend with the MPI comm); device backends and NCCL
 * keep the single blocking all-reduce. */
typedef struct mama__dp_seg {
    size_t off, n;     /* floats of the gradient buffer */
    int hook, layer;
    int started;
    void *req;         /* the outstanding request; NULL before the start and once done */
} mama__dp_seg;

static int mama__dp_starts(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }

/* the hook point after which the gradient of the tensor `name` is final */
static int mama__dp_hook_of(const char *name, int *layer) {
    const char *vp = "img_encoder_q.model.", *tp = "text_encoder_q.model.base_model.model.transformer.", *r;
    int l = 0, end = 0;
    *layer = 0;
    if (mama__dp_starts(name, vp)) {
        r = name + strlen(vp);
        if (sscanf(r, "blocks.%d.%n", &l, &end) == 1 && end > 0) { *layer = l; return MAMA__HOOK_VIT_BLOCK; }
        if (mama__dp_starts(r, "cls_token") || mama__dp_starts(r, "register_tokens") ||
            mama__dp_starts(r, "pos_embed") || mama__dp_starts(r, "patch_embed."))
            return MAMA__HOOK_VIT_EMBED;
        return MAMA__HOOK_OTHER;
    }
    if (mama__dp_starts(name, tp)) {
        r = name + strlen(tp);
        if (sscanf(r, "h.%d.%n", &l, &end) == 1 && end > 0) { *layer = l; return MAMA__HOOK_GPT_BLOCK; }
        if (mama__dp_starts(r, "ln_f.")) return MAMA__HOOK_LN_F;
        if (mama__dp_starts(r, "wte.") || mama__dp_starts(r, "wpe.")) return MAMA__HOOK_TXT_EMBED;
        return MAMA__HOOK_OTHER;
    }
    if (mama__dp_starts(name, "img_encoder_q.global_embed.")) return MAMA__HOOK_IMG_GLOBAL;
    if (mama__dp_starts(name, "img_encoder_q.local_embed.")) return MAMA__HOOK_IMG_LOCAL;
    if (mama__dp_starts(name, "text_encoder_q.global_embed.")) return MAMA__HOOK_TXT_GLOBAL;
    if (mama__dp_starts(name, "text_encoder_q.local_embed.")) return MAMA__HOOK_TXT_LOCAL;
    if (mama__dp_starts(name, "simclr_proj.")) return MAMA__HOOK_SIMCLR;
    if (!strcmp(name, "logit_scale") || !strcmp(name, "local_scale")) return MAMA__HOOK_LOSS;
    return MAMA__HOOK_OTHER;
}

/* The segments, in buffer order: two passes over the tensors of the train
 * and late groups (count, then fill). */
static mama_status mama__dp_plan(mama_model *m) {
    mama__dp *dp = m->dp;
    size_t ngrad = m->group_numel[MAMA_GROUP_TRAIN] + m->group_numel[MAMA_GROUP_LATE], next;
    int pass, g, i, ns = 0, hook, layer, prev_hook, prev_layer;
    for (pass = 0; pass < 2; pass++) {
        ns = 0;
        next = 0;
        prev_hook = prev_layer = -1;
        for (g = MAMA_GROUP_TRAIN; g <= MAMA_GROUP_LATE; g++)
            for (i = 0; i < m->nparams; i++) {
                const mama_param_info *p = &m->info[i];
                if ((int)p->group != g) continue;
                if (p->dtype != MAMA_F32 || p->offset != next)
                    return MAMA_FAIL(MAMA_ERR_INVALID, "gradient buckets: %s at offset %zu, expected %zu", p->name,
                                     p->offset, next);
                hook = mama__dp_hook_of(p->name, &layer);
                if (hook != prev_hook || layer != prev_layer) {
                    if (pass) {
                        dp->ov_seg[ns].off = next;
                        dp->ov_seg[ns].n = 0;
                        dp->ov_seg[ns].hook = hook;
                        dp->ov_seg[ns].layer = layer;
                    }
                    ns++;
                    prev_hook = hook;
                    prev_layer = layer;
                }
                if (pass) dp->ov_seg[ns - 1].n += p->numel;
                next += p->numel;
            }
        if (next != ngrad)
            return MAMA_FAIL(MAMA_ERR_INVALID, "gradient buckets cover %zu of %zu floats", next, ngrad);
        if (!pass) {
            mama_free(dp->ov_seg);
            dp->ov_seg = NULL;
            MAMA_TRY(mama_calloc((void **)&dp->ov_seg, sizeof(mama__dp_seg) * (size_t)(ns + 1), "gradient buckets"));
        }
    }
    dp->ov_nseg = ns;
    return MAMA_OK;
}

static mama_status mama__dp_seg_start(mama_model *m, mama__dp_seg *sg) {
    mama__dp *dp = m->dp;
    sg->started = 1;
    MAMA_TRY(dp->comm->iallreduce_sum_f32(dp->comm, m->grads + sg->off, sg->n, &sg->req));
    dp->ov_pending++;
    dp->ov_buckets++;
    return MAMA_OK;
}

/* test every outstanding request (this is where MPI progresses them) */
static mama_status mama__dp_progress(mama_model *m) {
    mama__dp *dp = m->dp;
    int i, done;
    for (i = 0; i < dp->ov_nseg && dp->ov_pending > 0; i++) {
        mama__dp_seg *sg = &dp->ov_seg[i];
        if (!sg->req) continue;
        MAMA_TRY(dp->comm->test(dp->comm, sg->req, &done));
        if (done) {
            sg->req = NULL;
            dp->ov_pending--;
        }
    }
    return MAMA_OK;
}

static void mama__dp_grads_ready(mama_model *m, int hook, int layer) {
    mama__dp *dp = m->dp;
    double t0;
    int i;
    mama_status s = MAMA_OK;
    if (!dp || !dp->ov_armed || dp->status != MAMA_OK) return;
    t0 = mama_time_seconds();
    for (i = 0; i < dp->ov_nseg && s == MAMA_OK; i++) {
        mama__dp_seg *sg = &dp->ov_seg[i];
        if (sg->hook != hook || sg->layer != layer || sg->started) continue;
        s = mama__dp_seg_start(m, sg);
        if (s == MAMA_OK) dp->ov_early += sg->n;
    }
    if (s == MAMA_OK) s = mama__dp_progress(m);
    if (s != MAMA_OK) mama__dp_fail(m, s);
    dp->ov_seconds += mama_time_seconds() - t0;
}

static mama_status mama__dp_step_begin(mama_model *m) {
    mama__dp *dp = m->dp;
    if (!dp || !dp->ov_armed) return MAMA_OK;
    if (dp->ov_stepped)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_step: the overlapped gradient sum of the previous step is "
                         "still running (mama_model_overlap_grads arms one step; call mama_model_allreduce_grads "
                         "after it)");
    dp->ov_stepped = 1;
    return MAMA_OK;
}

/* wait for every outstanding request (first error kept) and disarm */
static mama_status mama__dp_wait_all(mama_model *m) {
    mama__dp *dp = m->dp;
    mama_status s = MAMA_OK, e;
    int i;
    for (i = 0; i < dp->ov_nseg; i++) {
        mama__dp_seg *sg = &dp->ov_seg[i];
        if (!sg->req) continue;
        e = dp->comm->wait(dp->comm, sg->req);
        if (s == MAMA_OK) s = e;
        sg->req = NULL;
    }
    dp->ov_pending = 0;
    dp->ov_armed = 0;
    dp->ov_stepped = 0;
    return s;
}
static void mama__dp_grads_drain(mama_model *m) {
    if (m->dp && m->dp->ov_armed) (void)mama__dp_wait_all(m);
}

MAMA_API int mama_model_overlap_grads(mama_model *m) {
    mama__dp *dp = m ? m->dp : NULL;
    mama_comm *c;
    int i;
    if (!dp || dp->ov_off) return 0;
    c = dp->comm;
    if (!c->iallreduce_sum_f32 || !c->test || !c->wait || c->dev_allreduce_sum_f32 || !mama__dp_host(m)) return 0;
    if (dp->ov_armed) return 1;
    if (!dp->ov_nseg && mama__dp_plan(m) != MAMA_OK) {
        dp->ov_off = 1; /* a layout the plan does not understand: the blocking path from now on */
        return 0;
    }
    for (i = 0; i < dp->ov_nseg; i++) {
        dp->ov_seg[i].started = 0;
        dp->ov_seg[i].req = NULL;
    }
    dp->ov_armed = 1;
    dp->ov_stepped = 0;
    return 1;
}

MAMA_API void mama_model_set_grad_overlap(mama_model *m, int on) {
    if (m && m->dp) m->dp->ov_off = !on;
}

MAMA_API mama_status mama_model_allreduce_grads(mama_model *m) {
    mama__dp *dp;
    double t0, t;
    mama_status s = MAMA_OK;
    int i;
    if (!m) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_allreduce_grads: model is NULL");
    if (mama__dp_world(m) == 1) return MAMA_OK;
    dp = m->dp;
    t0 = mama_time_seconds();
    if (!dp->ov_armed) {
        s = mama__dp_allreduce_dev(m, m->grads, m->group_numel[MAMA_GROUP_TRAIN] + m->group_numel[MAMA_GROUP_LATE]);
    } else {
        /* whatever no hook point started, in buffer order (the same on every rank) */
        for (i = 0; i < dp->ov_nseg && s == MAMA_OK; i++) {
            mama__dp_seg *sg = &dp->ov_seg[i];
            if (sg->started) continue;
            s = mama__dp_seg_start(m, sg);
            if (s == MAMA_OK) dp->ov_late += sg->n;
        }
        {
            mama_status e = mama__dp_wait_all(m);
            if (s == MAMA_OK) s = e;
        }
    }
    t = mama_time_seconds() - t0;
    dp->ov_seconds += t;
    dp->ov_wait_seconds += t;
    return s;
}

/* totals since mama_model_set_comm, for mama_pretrain's report */
static void mama__dp_grad_stats(const mama_model *m, double *seconds, double *wait_seconds, long *buckets) {
    *seconds = m->dp ? m->dp->ov_seconds : 0;
    *wait_seconds = m->dp ? m->dp->ov_wait_seconds : 0;
    *buckets = m->dp ? m->dp->ov_buckets : 0;
}

/* ---- 12.8 BatchNorm running statistics in the reference mode ------------
 * With a BatchNorm per rank (MAMA_DP_REFERENCE) each rank's running
 * statistics follow its own batches.  Before a checkpoint and at the end of
 * training they are replaced, on every rank, by their mean over the ranks:
 * the running means average to the mean of the ranks' estimates, and the
 * running variances to the mean of theirs (the within-rank variance; the
 * spread of the rank means is left out, as timm's distribute_bn(reduce=True)
 * and Horovod's averaging of buffers do; PyTorch DDP instead broadcasts rank
 * 0's buffers).  The values are all-gathered and summed in double in rank
 * order, so every rank gets the same bits for any number of ranks.  The
 * buffers group holds exactly the six BatchNorms' running means and
 * variances (num_batches_tracked is the same on every rank). */
MAMA_API mama_status mama_model_average_bn_stats(mama_model *m) {
    mama__dp *dp;
    mama_comm *c;
    mama_backend *be;
    size_t n, off, i;
    int W, q;
    float *h;
    if (!m) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_model_average_bn_stats: model is NULL");
    if (mama__dp_world(m) == 1 || m->dp->mode != MAMA_DP_REFERENCE) return MAMA_OK;
    dp = m->dp;
    c = dp->comm;
    be = m->be;
    W = c->size;
    n = m->group_numel[MAMA_GROUP_BUFFER];
    off = m->group_offset[MAMA_GROUP_BUFFER];
    if (!n) return MAMA_OK;
    MAMA_TRY(mama__dp_grow((void **)&dp->hf, &dp->hf_cap, sizeof(float) * n * ((size_t)W + 1)));
    h = dp->hf;
    MAMA_TRY(be->to_host(be, h, m->params + off, sizeof(float) * n));
    MAMA_TRY(c->allgather_f32(c, h, n, h + n));
    for (i = 0; i < n; i++) {
        double sum = 0;
        for (q = 0; q < W; q++) sum += h[n + (size_t)q * n + i];
        h[i] = (float)(sum / W);
    }
    return be->to_device(be, m->params + off, h, sizeof(float) * n);
}



#ifdef __cplusplus
}
#endif
#endif /* MAMA_IMPLEMENTATION_DONE */
#endif /* MAMA_IMPLEMENTATION */
