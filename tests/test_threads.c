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
 * Robust under load (issue 18 item 5): the per-call choice between all
 * threads and one (mama__tune_pick / _record, fed made-up timings: the
 * calls that try the other choice, how soon a change of load is followed),
 * and the bits: the same runs on one thread, and with the choice on (its
 * third step on one thread whatever the timings), equal the all-threads
 * runs (tuning off) bit for bit.
 *
 * Build: gcc -std=c99 -O2 -fopenmp -I. tests/test_threads.c -o build/test_threads -lm -pthread */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include "test_util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 3
#define NB 4

typedef struct {
    mama_backend *be;      /* in */
    uint64_t seed;         /* in: model init and data */
    int tune;              /* in: mama_model_set_thread_tuning (the runs in threads: 1, the default) */
    int nthreads;          /* in: > 0: run on this many threads (mama_set_num_threads), restored after */
    int threads_changed;   /* out: steps after which mama_num_threads() differed from before the first */
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
    int *ids = NULL, *mask = NULL, step, i, t, nt_in = mama_num_threads();
    size_t img, n;
    mama_status s = MAMA_OK;
    memset(&opt, 0, sizeof opt);
    mama_config_preset(&c, "tiny");
    c.vision_depth = 2; c.text_depth = 2; /* small and quick; same code paths */
    MAMA_TRY(mama_model_create(&m, &c, r->be, NB, r->seed));
    if ((s = mama_adamw_init(&opt, m, 0.05f)) != MAMA_OK) { mama_model_free(m); return s; }
    mama_model_set_thread_tuning(m, r->tune);
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
        r->threads_changed += mama_num_threads() != nt_in;
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

/* train on r->nthreads threads (> 0) */
static mama_status train_on(run_ctx *r) {
    int nt0 = mama_num_threads();
    mama_status s;
    if (r->nthreads > 0) mama_set_num_threads(r->nthreads);
    s = train(r);
    mama_set_num_threads(nt0);
    return s;
}

static void *thread_main(void *arg) {
    run_ctx *r = (run_ctx *)arg;
    r->status = train_on(r);
    /* the error message is per thread: copy it out for the main thread */
    if (r->status != MAMA_OK) snprintf(r->error, sizeof r->error, "%s", mama_last_error());
    return NULL;
}

static void run_init(run_ctx *r, mama_backend *be, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->be = be;
    r->seed = seed;
    r->tune = 1;
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

/* The choice fed made-up seconds per item (all threads, one thread):
 * quiet 1.0 / 2.0 for calls 0-599, loaded 8.0 / 3.0 (another process
 * holds a core) for 600-999, quiet again from 1000 to 1999.  Hand values:
 * the warm-up and call 1 on all threads, call 2 on one; then the tries of
 * one thread at calls 35, 100, 229, 486 (gaps 32 = 32 (2 - 1), then
 * doubling: 64, 128, 256); the load is followed at once (call 601 on one
 * thread), the quiet again at the next try of all threads (within 256
 * calls). */
static void test_tune_decisions(void) {
    static const long want_tries[] = {2, 35, 100, 229, 486};
    mama__tune t;
    long i, tries[64], ntries = 0, first_one = -1, back = -1, slow_q = 0, slow_l = 0;
    int ok = 1;
    memset(&t, 0, sizeof t);
    for (i = 0; i < 2000; i++) {
        int loaded = i >= 600 && i < 1000, k = mama__tune_pick(&t);
        double sec = loaded ? (k ? 3.0 : 8.0) : (k ? 2.0 : 1.0);
        if (i < 600 && k == 1 && ntries < 64) tries[ntries++] = i;
        if (loaded && k == 1 && first_one < 0) first_one = i;
        if (i >= 1000 && k == 0 && back < 0) back = i;
        if (k != (loaded ? 1 : 0)) { if (loaded) slow_l++; else slow_q++; }
        mama__tune_record(&t, k, sec);
    }
    ok = ntries == 5;
    for (i = 0; ok && i < 5; i++) ok = tries[i] == want_tries[i];
    ok = ok && first_one == 601 && back > 1000 && back <= 1000 + 256;
    test_report(ok, "threads_tune_decisions",
                "quiet: one-thread calls %ld (want 5) at %ld %ld %ld %ld %ld (want 2 35 100 229 486); load at "
                "600: first one-thread call %ld (want 601); quiet at 1000: all threads again at %ld (want 1001-1256); "
                "calls on the slower choice: quiet %ld of 1600, loaded %ld of 400",
                ntries, ntries > 0 ? tries[0] : -1, ntries > 1 ? tries[1] : -1, ntries > 2 ? tries[2] : -1,
                ntries > 3 ? tries[3] : -1, ntries > 4 ? tries[4] : -1, first_one, back,
                slow_q, slow_l);
}

/* One run (serial) against the all-threads reference */
static void serial_vs(const char *name, const char *what, run_ctx *r, const run_ctx *want) {
    size_t d = 0;
    int ok;
    r->status = train_on(r);
    ok = same_bits(r, want, &d) && r->threads_changed == 0;
    test_report(ok, name, "%s: losses %.6f -> %.6f, %zu params; differing from the all-threads run: %zu; thread count "
                "changed after %d of %d steps (%s)", what, r->losses[0][0], r->losses[STEPS - 1][0], r->nparams, d,
                r->threads_changed, STEPS, r->status == MAMA_OK ? "ok" : mama_last_error());
    free(r->params);
}

int main(void) {
    mama_backend *be0 = NULL, *be1 = NULL, *be2 = NULL;
    run_ctx ra, rb, r;
    double t0;
    test_tune_decisions();
    if (mama_num_threads() < 2) mama_set_num_threads(2); /* the thread-count checks need two */
    if (mama_cpu_backend_create(&be0) != MAMA_OK || mama_cpu_backend_create(&be1) != MAMA_OK ||
        mama_cpu_backend_create(&be2) != MAMA_OK) {
        test_report(0, "threads_backends", "%s", mama_last_error());
        return test_finish();
    }
    printf("# %d OpenMP threads per team, %d slots per backend, gemm kernel %s\n", mama_num_threads(),
           mama_cpu_backend_threads(be0), mama_cpu_backend_kernel_name(be0));
    /* the reference: one after the other, on all threads (the choice off) */
    t0 = mama_time_seconds();
    run_init(&ra, be0, 5);
    run_init(&rb, be0, 6);
    ra.tune = rb.tune = 0;
    ra.status = train(&ra);
    rb.status = train(&rb);
    test_report(ra.status == MAMA_OK && rb.status == MAMA_OK && ra.params && rb.params, "threads_serial_reference",
                "run A then run B on one backend (%.1f s): losses A %.6f -> %.6f, B %.6f -> %.6f (%s)",
                mama_time_seconds() - t0, ra.losses[0][0], ra.losses[STEPS - 1][0], rb.losses[0][0],
                rb.losses[STEPS - 1][0], ra.status == MAMA_OK && rb.status == MAMA_OK ? "ok" : mama_last_error());
    if (ra.status == MAMA_OK && rb.status == MAMA_OK) {
        run_init(&r, be0, 5);
        r.tune = 0;
        r.nthreads = 1;
        serial_vs("threads_one_vs_all", "run A on one thread", &r, &ra);
        run_init(&r, be0, 5);
        serial_vs("threads_step_tuning", "run A with the per-step choice (steps 0, 1 on all threads, 2 on one)", &r,
                  &ra);
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
