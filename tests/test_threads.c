/* tests/test_threads.c - no static mutable state: two models train in two
 * threads at once and get the very bits they get one after the other.
 *
 * Two `tiny` models (2 vision + 2 text blocks, different seeds and data)
 * each take STEPS training steps (forward, the four losses, backward,
 * AdamW).  Reference: run A, then run B, on one CPU backend.  Then:
 *   - own backends: A and B in two threads at once, each on its own CPU
 *     backend (scratch per instance: they share nothing);
 *   - shared backend: A and B in two threads at once on ONE CPU backend
 *     (the slots' try-lock: one thread's GEMMs take the stack fallback,
 *     its attention waits for the slots).
 * Every loss of every step and every parameter (all groups, BatchNorm
 * buffers included) must equal the reference's bit for bit.  Each thread
 * runs its own OpenMP teams (omp_get_max_threads() threads each).
 *
 * Build: gcc -std=c99 -O2 -fopenmp -I. tests/test_threads.c -o build/test_threads -lm -pthread */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include "test_util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 2
#define NB 4

typedef struct {
    mama_backend *be;      /* in */
    uint64_t seed;         /* in: model init and data */
    float losses[STEPS][5];/* out: loss, clip, mv, sym, sla per step */
    float *params;         /* out: malloc'd copy of every parameter and buffer */
    size_t nparams;
    mama_status status;
    char error[1024];
} run_ctx;

static mama_status train(run_ctx *r) {
    mama_config c;
    mama_model *m = NULL;
    mama_adamw opt;
    mama_step_opts o;
    mama_batch b;
    mama_losses L;
    mama_rng rng;
    float *images = NULL, *ext = NULL;
    int *ids = NULL, *mask = NULL, step, i, t;
    size_t img, n;
    mama_status s = MAMA_OK;
    memset(&opt, 0, sizeof opt);
    mama_config_preset(&c, "tiny");
    c.vision_depth = 2; c.text_depth = 2; /* small and quick; same code paths */
    MAMA_TRY(mama_model_create(&m, &c, r->be, NB, r->seed));
    if ((s = mama_adamw_init(&opt, m, 0.05f)) != MAMA_OK) { mama_model_free(m); return s; }
    img = (size_t)c.in_chans * c.image_size * c.image_size;
    images = (float *)malloc(sizeof(float) * img * NB);
    ext = (float *)malloc(sizeof(float) * img * NB);
    ids = (int *)malloc(sizeof(int) * (size_t)c.context * NB);
    mask = (int *)malloc(sizeof(int) * (size_t)c.context * NB);
    if (!images || !ext || !ids || !mask) { s = MAMA_FAIL(MAMA_ERR_NOMEM, "test buffers"); goto done; }
    mama_rng_seed(&rng, r->seed * 7919u + 1u);
    mama_step_opts_default(&o);
    o.late = 1; /* all four losses, BatchNorm heads included */
    for (step = 0; step < STEPS; step++) {
        for (n = 0; n < img * NB; n++) images[n] = 2.0f * mama_rng_uniform(&rng) - 1.0f;
        for (n = 0; n < img * NB; n++) ext[n] = 2.0f * mama_rng_uniform(&rng) - 1.0f;
        for (i = 0; i < NB; i++) {
            int len = 20 + (int)mama_rng_below(&rng, (uint32_t)(c.context - 20));
            for (t = 0; t < c.context; t++) { /* as bench/bench_train.c: bos, sentences, eos, padding */
                int id;
                if (t == 0) id = c.bos_id;
                else if (t == len - 1) id = c.eos_id;
                else if (t >= len) id = c.pad_id;
                else if (t % 11 == 10 || t == len - 2) id = c.sep_id;
                else id = (int)mama_rng_below(&rng, (uint32_t)(c.vocab_size - 7));
                ids[i * c.context + t] = id;
                mask[i * c.context + t] = t < len;
            }
        }
        b.B = NB; b.images = images; b.ext_images = ext; b.input_ids = ids; b.attention_mask = mask;
        o.seed = r->seed * 1000u + (uint64_t)step; /* dropout masks */
        if ((s = mama_model_step(m, &b, &o, 0, &L)) != MAMA_OK) goto done;
        mama_adamw_step(&opt, m, 1e-3f, 1);
        r->losses[step][0] = L.loss; r->losses[step][1] = L.clip; r->losses[step][2] = L.mv;
        r->losses[step][3] = L.sym; r->losses[step][4] = L.sla;
    }
    /* the whole float buffer [train | late | frozen | buffers] (tiny: no half-precision part) */
    r->nparams = mama_model_numel(m, MAMA_GROUP_TRAIN) + mama_model_numel(m, MAMA_GROUP_LATE) +
                 mama_model_numel(m, MAMA_GROUP_FROZEN) + mama_model_numel(m, MAMA_GROUP_BUFFER) -
                 mama_model_half_numel(m, NULL);
    r->params = (float *)malloc(sizeof(float) * r->nparams);
    if (!r->params) { s = MAMA_FAIL(MAMA_ERR_NOMEM, "parameter copy"); goto done; }
    s = r->be->to_host(r->be, r->params, mama_model_params(m), sizeof(float) * r->nparams);
done:
    free(images); free(ext); free(ids); free(mask);
    mama_adamw_free(&opt);
    mama_model_free(m);
    return s;
}

static void *thread_main(void *arg) {
    run_ctx *r = (run_ctx *)arg;
    r->status = train(r);
    /* the error message is per thread: copy it out for the main thread */
    if (r->status != MAMA_OK) snprintf(r->error, sizeof r->error, "%s", mama_last_error());
    return NULL;
}

static void run_init(run_ctx *r, mama_backend *be, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->be = be;
    r->seed = seed;
}

/* Bits of run `got` against the reference `want`. */
static int same_bits(const run_ctx *got, const run_ctx *want, size_t *ndiff) {
    size_t k;
    *ndiff = 0;
    if (got->status != MAMA_OK || !got->params || got->nparams != want->nparams) return 0;
    if (memcmp(got->losses, want->losses, sizeof got->losses)) return 0;
    for (k = 0; k < got->nparams; k++) *ndiff += memcmp(&got->params[k], &want->params[k], sizeof(float)) != 0;
    return *ndiff == 0;
}

/* Run A and B in two threads at once on backends bea, beb; check both. */
static void concurrent(const char *name, mama_backend *bea, mama_backend *beb, const run_ctx *ra, const run_ctx *rb) {
    run_ctx a, b;
    pthread_t ta, tb;
    size_t da = 0, db = 0;
    int ok, started_a, started_b;
    double t0 = mama_time_seconds();
    run_init(&a, bea, ra->seed);
    run_init(&b, beb, rb->seed);
    started_a = pthread_create(&ta, NULL, thread_main, &a) == 0;
    started_b = pthread_create(&tb, NULL, thread_main, &b) == 0;
    if (started_a) pthread_join(ta, NULL);
    if (started_b) pthread_join(tb, NULL);
    ok = started_a && started_b && same_bits(&a, ra, &da) && same_bits(&b, rb, &db);
    test_report(ok, name,
                "2 tiny models x %d steps in 2 threads at once (%.1f s): losses A %.6f %.6f, B %.6f %.6f; "
                "%zu + %zu params; differing from the serial runs: A %zu, B %zu (A status %s%s%s, B status %s%s%s)",
                STEPS, mama_time_seconds() - t0, a.losses[0][0], a.losses[STEPS - 1][0], b.losses[0][0],
                b.losses[STEPS - 1][0], a.nparams, b.nparams, da, db, mama_status_name(a.status),
                a.error[0] ? ": " : "", a.error, mama_status_name(b.status), b.error[0] ? ": " : "", b.error);
    free(a.params);
    free(b.params);
}

int main(void) {
    mama_backend *be0 = NULL, *be1 = NULL, *be2 = NULL;
    run_ctx ra, rb;
    double t0;
    if (mama_cpu_backend_create(&be0) != MAMA_OK || mama_cpu_backend_create(&be1) != MAMA_OK ||
        mama_cpu_backend_create(&be2) != MAMA_OK) {
        test_report(0, "threads_backends", "%s", mama_last_error());
        return test_finish();
    }
    printf("# %d OpenMP threads per team, %d slots per backend, gemm kernel %s\n", mama_num_threads(),
           mama_cpu_backend_threads(be0), mama_cpu_backend_kernel_name(be0));
    /* the reference: one after the other */
    t0 = mama_time_seconds();
    run_init(&ra, be0, 5);
    run_init(&rb, be0, 6);
    ra.status = train(&ra);
    rb.status = train(&rb);
    test_report(ra.status == MAMA_OK && rb.status == MAMA_OK && ra.params && rb.params, "threads_serial_reference",
                "run A then run B on one backend (%.1f s): losses A %.6f -> %.6f, B %.6f -> %.6f (%s)",
                mama_time_seconds() - t0, ra.losses[0][0], ra.losses[STEPS - 1][0], rb.losses[0][0],
                rb.losses[STEPS - 1][0], ra.status == MAMA_OK && rb.status == MAMA_OK ? "ok" : mama_last_error());
    if (ra.status == MAMA_OK && rb.status == MAMA_OK) {
        concurrent("threads_own_backends", be1, be2, &ra, &rb);
        concurrent("threads_shared_backend", be0, be0, &ra, &rb);
    }
    free(ra.params);
    free(rb.params);
    mama_backend_free(be0);
    mama_backend_free(be1);
    mama_backend_free(be2);
    return test_finish();
}
