/* ==========================================================================
 * 10. DATA: datasets, batches, the loader thread
 * ========================================================================== */

#if !defined(MAMA_NO_THREADS) && (defined(__unix__) || defined(__APPLE__))
#include <pthread.h>
#include <unistd.h>
#define MAMA_HAVE_PTHREADS 1
#endif

struct mama_dataset {
    mama_manifest man;
    mama_tokenizer *tok;
    mama_dataset_opts opts;
    int image_size, in_chans, context;
    int *split_idx[3], split_n[3];
    mama_image *cache;           /* prepared images, when opts.cache */
    unsigned char *bad;          /* 1: image could not be decoded (skipped) */
    int skipped;
};

MAMA_API void mama_dataset_opts_default(mama_dataset_opts *o) {
    memset(o, 0, sizeof *o);
    o->cache = 1;
    o->only_2d = 1;
}
MAMA_API const mama_manifest *mama_dataset_manifest(const mama_dataset *d) { return &d->man; }
MAMA_API const mama_tokenizer *mama_dataset_tokenizer(const mama_dataset *d) { return d->tok; }
MAMA_API int mama_dataset_skipped(const mama_dataset *d) { return d->skipped + d->man.skipped; }
MAMA_API int mama_dataset_split(const mama_dataset *d, mama_split s, const int **indices) {
    if (indices) *indices = d->split_idx[s];
    return d->split_n[s];
}

MAMA_API void mama_dataset_free(mama_dataset *d) {
    int i;
    if (!d) return;
    if (d->cache)
        for (i = 0; i < d->man.count; i++) mama_image_free(&d->cache[i]);
    mama_free(d->cache);
    mama_free(d->bad);
    for (i = 0; i < 3; i++) mama_free(d->split_idx[i]);
    mama_tokenizer_free(d->tok);
    mama_manifest_free(&d->man);
    mama_free(d);
}

/* Steps 1-3 of the pipeline (decode, letterbox, Otsu crop, stretch). */
static mama_status mama__prepare_record(mama_dataset *d, int i, mama_image *out) {
    mama_image raw;
    mama_status s;
    memset(&raw, 0, sizeof raw);
    MAMA_TRY(mama_image_load(d->man.records[i].path, &raw));
    s = mama_image_prepare(&raw, d->image_size, out);
    mama_image_free(&raw);
    return s;
}

MAMA_API mama_status mama_dataset_open(mama_dataset **out, const mama_dataset_opts *o, const mama_config *c) {
    mama_dataset *d;
    int i, n, sp;
    mama_status s = MAMA_OK;
    char first_error[1024] = "";
    *out = NULL;
    if (!o || !o->manifest) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_dataset_open: no manifest given");
    MAMA_TRY(mama_calloc((void **)&d, sizeof *d, "dataset"));
    d->opts = *o;
    d->image_size = c->image_size;
    d->in_chans = c->in_chans;
    d->context = c->context;
    if ((s = mama_manifest_load(&d->man, o->manifest, o->skip_bad_rows)) != MAMA_OK) goto fail;
    if (o->tokenizer && (s = mama_tokenizer_load(&d->tok, o->tokenizer)) != MAMA_OK) goto fail;
    if (d->tok && mama_tokenizer_vocab_size(d->tok) > c->vocab_size) {
        s = MAMA_FAIL(MAMA_ERR_SHAPE, "tokenizer %s has %d tokens but the model's vocabulary has %d", o->tokenizer,
                      mama_tokenizer_vocab_size(d->tok), c->vocab_size);
        goto fail;
    }
    n = d->man.count;
    if ((s = mama_calloc((void **)&d->bad, (size_t)n + 1, "dataset flags")) != MAMA_OK) goto fail;
    if (o->cache) {
        if ((s = mama_calloc((void **)&d->cache, sizeof(mama_image) * (size_t)(n + 1), "image cache")) != MAMA_OK) goto fail;
        /* Decode and prepare every image once, in parallel.  Errors are
         * collected per image so that the first failing file is reported. */
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 8)
#endif
        for (i = 0; i < n; i++) {
            if (mama__prepare_record(d, i, &d->cache[i]) != MAMA_OK) {
                d->bad[i] = 1;
#ifdef _OPENMP
#pragma omp critical(mama_dataset_error)
#endif
                if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", mama_last_error());
            }
        }
        for (i = 0; i < n; i++) d->skipped += d->bad[i];
        if (d->skipped && !o->skip_bad_rows) {
            s = MAMA_FAIL(MAMA_ERR_IO, "%s: %d image(s) could not be read; first: %s (skip them with skip_bad_rows)",
                          o->manifest, d->skipped, first_error);
            goto fail;
        }
    }
    for (sp = 0; sp < 3; sp++) {
        if ((s = mama_alloc((void **)&d->split_idx[sp], sizeof(int) * (size_t)(n + 1), "split index")) != MAMA_OK) goto fail;
    }
    for (i = 0; i < n; i++) {
        const mama_record *r = &d->man.records[i];
        if (d->bad[i]) continue;
        if (o->only_2d && strcmp(r->image_type, "2D") && strcmp(r->image_type, "unknown")) continue;
        if (r->split >= 0 && r->split < 3) d->split_idx[r->split][d->split_n[r->split]++] = i;
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

MAMA_API mama_status mama_dataset_image(mama_dataset *d, int record, int train, mama_rng *rng, float *out) {
    mama_image prepared, aug;
    const mama_image *src;
    mama_augment_opts o = mama_augment_defaults();
    mama_status s = MAMA_OK;
    if (record < 0 || record >= d->man.count)
        return MAMA_FAIL(MAMA_ERR_INVALID, "dataset image index %d out of range (0..%d)", record, d->man.count - 1);
    memset(&prepared, 0, sizeof prepared);
    memset(&aug, 0, sizeof aug);
    o.size = d->image_size;
    if (d->cache && d->cache[record].pix) {
        src = &d->cache[record];
    } else {
        MAMA_TRY(mama__prepare_record(d, record, &prepared));
        src = &prepared;
    }
    if (train) {
        s = mama_image_augment(src, &o, rng, &aug);
        if (s == MAMA_OK) mama_image_to_tensor(&aug, o.mean, o.std, d->in_chans, out);
    } else {
        mama_image_to_tensor(src, o.mean, o.std, d->in_chans, out);
    }
    mama_image_free(&aug);
    mama_image_free(&prepared);
    return s;
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

/* ---- 10.1 Training batches.  Micro-batch k holds the samples at positions
 * k*B .. k*B+B-1 of an endless sequence of epochs, each a permutation of
 * the train split seeded by (seed, epoch); each sample's randomness comes
 * from (seed, position).  So a batch is a pure function of (seed, k):
 * resuming and threading cannot change it. */
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
    const mama_pretrain_opts *o;
    int B, n, accum;
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
    mama_dataset_split(L->d, MAMA_SPLIT_TRAIN, &idx);
    mama_rng_seed(&r, mama__mix2(L->o->seed, (uint64_t)epoch + 0x51ull));
    for (i = 0; i < L->n; i++) L->perm[i] = idx[i];
    for (i = L->n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)mama_rng_below(&r, (uint32_t)(i + 1)), t = L->perm[i];
        L->perm[i] = L->perm[j]; L->perm[j] = t;
    }
    L->perm_epoch = epoch;
}

/* Build micro-batch `job` into `b`.  The ext image (SPEC A.4): with
 * probability ext_other_view_p another image of the same study, otherwise
 * (or when the study has one image) a second augmentation of the image. */
static mama_status mama__build_batch(mama__loader *L, long job, mama__batch_buf *b) {
    const mama_pretrain_opts *o = L->o;
    mama_dataset *d = L->d;
    long step = job / L->accum;
    int late = step >= o->late_loss, i;
    for (i = 0; i < L->B; i++) {
        long pos = job * L->B + i, epoch = pos / L->n;
        int rec, other = -1;
        mama_rng r;
        if (epoch != L->perm_epoch) mama__loader_epoch(L, epoch);
        rec = L->perm[pos % L->n];
        mama_rng_seed(&r, mama__mix2(o->seed, (uint64_t)pos));
        MAMA_TRY(mama_dataset_image(d, rec, 1, &r, b->images + L->img * i));
        MAMA_TRY(mama_dataset_caption(d, rec, o->caption_mask_p, &r, b->ids + (size_t)i * d->context,
                                      b->mask + (size_t)i * d->context));
        if (late) {
            const mama_study *st = &d->man.studies[d->man.records[rec].study_index];
            if (st->count > 1 && mama_rng_uniform(&r) < o->ext_other_view_p) {
                int k = (int)mama_rng_below(&r, (uint32_t)(st->count - 1));
                other = d->man.study_members[st->first + k];
                if (other == rec) other = d->man.study_members[st->first + st->count - 1];
                if (d->bad[other]) other = -1;
            }
            MAMA_TRY(mama_dataset_image(d, other >= 0 ? other : rec, 1, &r, b->ext + L->img * i));
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
                                     long last_job) {
    int k;
    memset(L, 0, sizeof *L);
    L->d = d; L->o = o; L->B = o->batch; L->accum = o->accum;
    L->n = d->split_n[MAMA_SPLIT_TRAIN];
    L->img = (size_t)d->in_chans * d->image_size * d->image_size;
    L->perm_epoch = -1;
    L->next_job = L->released = first_job;
    L->last_job = last_job;
    L->slot_job[0] = L->slot_job[1] = -1;
    if (L->n < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "%s: the train split is empty", d->man.path);
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

/* ==========================================================================
 * 11. LOOPS: pretraining, checkpoints
 * ========================================================================== */

MAMA_API void mama_pretrain_opts_default(mama_pretrain_opts *o) {
    memset(o, 0, sizeof *o);
    o->steps = 40000; o->batch = 36; o->accum = 2;
    o->lr = 4e-5f; o->lr_floor = 1e-8f; o->warmup = 4000; o->weight_decay = 0.1f;
    o->late_loss = 8000; o->use_mv = o->use_sym = o->use_sla = 1;
    o->ext_other_view_p = 0.5f; o->caption_mask_p = 0.8f;
    o->seed = 1; o->max_bad_steps = 5;
    o->aug = mama_augment_defaults();
}

/* ---- 11.1 Checkpoints: the model's tensors (A.8 names), the AdamW moments
 * as `optimizer.adam_m` / `optimizer.adam_v` over the [train | late]
 * groups, and metadata: mama_config, step, seed, the optimiser's step
 * counts.  Every random choice of training derives from (seed, step), so
 * these restore the run exactly. */
MAMA_API mama_status mama_checkpoint_save(const char *path, const mama_model *m, const mama_adamw *opt, long step,
                                          uint64_t seed) {
    mama_st_writer *w = NULL;
    float *host = NULL, *moments = NULL;
    size_t total = m->group_offset[3] + m->group_numel[3], n = opt ? opt->n_train + opt->n_late : 0;
    int64_t shape = (int64_t)n;
    char buf[64];
    mama_status s;
    MAMA_TRY(mama_alloc((void **)&host, sizeof(float) * (total + 1), "checkpoint"));
    if ((s = mama_alloc((void **)&moments, sizeof(float) * (2 * n + 1), "checkpoint")) != MAMA_OK) { mama_free(host); return s; }
    s = mama_st_writer_init(&w);
    if (s == MAMA_OK) s = mama__writer_add_model(w, m, host);
    if (s == MAMA_OK && opt) {
        s = m->be->to_host(m->be, moments, opt->m, sizeof(float) * n);
        if (s == MAMA_OK) s = m->be->to_host(m->be, moments + n, opt->v, sizeof(float) * n);
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
    if (s == MAMA_OK) s = mama_st_writer_write(w, path); /* temporary file, fsync, rename */
    mama_st_writer_free(w);
    mama_free(host);
    mama_free(moments);
    return s;
}

static mama_status mama__meta_long(const mama_safetensors *st, const char *key, long *v) {
    const char *s = mama_st_meta(st, key);
    char *end;
    if (!s) return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: checkpoint metadata has no '%s'", st->path, key);
    *v = strtol(s, &end, 10);
    if (end == s || *end) return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: checkpoint metadata '%s' is not an integer", st->path, key);
    return MAMA_OK;
}

MAMA_API mama_status mama_checkpoint_load(const char *path, mama_model *m, mama_adamw *opt, long *step,
                                          uint64_t *seed) {
    mama_safetensors st;
    float *moments = NULL;
    long v;
    size_t n = opt ? opt->n_train + opt->n_late : 0;
    mama_status s;
    const char *sd;
    MAMA_TRY(mama_model_load_weights(m, path, 0, NULL));
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, path));
    s = mama__meta_long(&st, "step", &v);
    if (s == MAMA_OK) *step = v;
    sd = mama_st_meta(&st, "seed");
    if (s == MAMA_OK && seed && sd) *seed = (uint64_t)strtoull(sd, NULL, 10);
    if (s == MAMA_OK && opt) {
        s = mama_alloc((void **)&moments, sizeof(float) * (2 * n + 1), "checkpoint moments");
        if (s == MAMA_OK) s = mama_st_read_f32(&st, "optimizer.adam_m", moments, n);
        if (s == MAMA_OK) s = mama_st_read_f32(&st, "optimizer.adam_v", moments + n, n);
        if (s == MAMA_OK) s = m->be->to_device(m->be, opt->m, moments, sizeof(float) * n);
        if (s == MAMA_OK) s = m->be->to_device(m->be, opt->v, moments + n, sizeof(float) * n);
        if (s == MAMA_OK) s = mama__meta_long(&st, "adam_step_train", &opt->step_train);
        if (s == MAMA_OK) s = mama__meta_long(&st, "adam_step_late", &opt->step_late);
    }
    mama_free(moments);
    mama_st_close(&st);
    return s;
}

/* ---- 11.2 Progress: a live line on a terminal, plain lines otherwise. */
static int mama__stderr_is_terminal(void) {
#ifdef MAMA_HAVE_PTHREADS
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

MAMA_API mama_status mama_pretrain(mama_model *m, mama_dataset *d, const mama_pretrain_opts *o,
                                   mama_pretrain_result *res) {
    mama_backend *be = m->be;
    mama_adamw opt;
    mama__loader L;
    mama_pretrain_result r;
    FILE *log = NULL;
    long step = 0, bad_run = 0;
    uint64_t seed = o->seed;
    size_t ngrad = m->group_numel[MAMA_GROUP_TRAIN] + m->group_numel[MAMA_GROUP_LATE];
    double t0 = mama_time_seconds(), t_step0;
    int tty = mama__stderr_is_terminal(), k;
    mama_status s = MAMA_OK;
    memset(&r, 0, sizeof r);
    if (o->batch < 1 || o->batch > m->max_batch)
        return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: batch %d does not fit the model's max_batch %d", o->batch, m->max_batch);
    if (o->accum < 1 || o->steps < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: steps and accum must be >= 1");
    if (!d->tok) return MAMA_FAIL(MAMA_ERR_INVALID, "pretrain: the dataset has no tokenizer");
    MAMA_TRY(mama_adamw_init(&opt, m, o->weight_decay));
    if (o->resume && o->checkpoint && mama__file_exists(o->checkpoint)) {
        if ((s = mama_checkpoint_load(o->checkpoint, m, &opt, &step, &seed)) != MAMA_OK) { mama_adamw_free(&opt); return s; }
        if (seed != o->seed) {
            mama_adamw_free(&opt);
            return MAMA_FAIL(MAMA_ERR_INVALID, "resume: %s was trained with seed %llu, not %llu", o->checkpoint,
                             (unsigned long long)seed, (unsigned long long)o->seed);
        }
        if (!o->quiet) fprintf(stderr, "resuming from %s at step %ld\n", o->checkpoint, step);
    }
    if (o->log_csv) {
        log = fopen(o->log_csv, step > 0 ? "ab" : "wb");
        if (!log) { mama_adamw_free(&opt); return MAMA_FAIL(MAMA_ERR_IO, "cannot open log %s: %s", o->log_csv, strerror(errno)); }
        if (step == 0) fprintf(log, "step,lr,loss,clip,mv,sym,sla,grad_norm,skipped,images_per_s,seconds\n");
    }
    if ((s = mama__loader_init(&L, d, o, step * o->accum, o->steps * o->accum)) != MAMA_OK) {
        if (log) fclose(log);
        mama_adamw_free(&opt);
        return s;
    }
    t_step0 = mama_time_seconds();
    for (r.steps_done = 0; step < o->steps && (o->stop_at <= 0 || step < o->stop_at); step++) {
        int late = step >= o->late_loss;
        float lr = mama_lr_cosine(step, o->warmup, o->steps, o->lr, o->lr_floor);
        mama_losses sum, Lk;
        mama_step_opts so;
        double gnorm, ips, eta;
        memset(&sum, 0, sizeof sum);
        mama_step_opts_default(&so);
        so.late = late; so.use_mv = o->use_mv; so.use_sym = o->use_sym; so.use_sla = o->use_sla;
        for (k = 0; k < o->accum; k++) {
            long job = step * o->accum + k;
            mama__batch_buf *b;
            mama_batch batch;
            if ((s = mama__loader_get(&L, job, &b)) != MAMA_OK) goto done;
            batch.B = o->batch; batch.images = b->images; batch.ext_images = late ? b->ext : NULL;
            batch.input_ids = b->ids; batch.attention_mask = b->mask;
            so.seed = mama__mix2(seed, (uint64_t)job);
            s = mama_model_step(m, &batch, &so, k > 0, &Lk);
            mama__loader_release(&L, job);
            if (s != MAMA_OK) goto done;
            sum.loss += Lk.loss / o->accum; sum.clip += Lk.clip / o->accum; sum.mv += Lk.mv / o->accum;
            sum.sym += Lk.sym / o->accum; sum.sla += Lk.sla / o->accum;
        }
        /* the reference averages the micro-batch losses: so do the gradients */
        if (o->accum > 1) be->scale(be, m->grads, 1.0f / (float)o->accum, ngrad);
        gnorm = mama_clip_grad_norm(be, m->grads, ngrad, o->clip_grad);
        if (!isfinite(gnorm) || !isfinite(sum.loss)) {
            r.skipped_steps++;
            if (++bad_run >= o->max_bad_steps) {
                s = MAMA_FAIL(MAMA_ERR_NUMERIC, "pretrain: %ld non-finite steps in a row at step %ld (loss %g, gradient "
                              "norm %g); stopped, the last checkpoint (%s) is kept", bad_run, step, sum.loss, gnorm,
                              o->checkpoint ? o->checkpoint : "none");
                goto done;
            }
        } else {
            bad_run = 0;
            mama_adamw_step(&opt, m, lr, late);
        }
        r.last = sum;
        r.steps_done++;
        ips = (double)r.steps_done * o->batch * o->accum / (mama_time_seconds() - t_step0);
        eta = (double)(o->steps - step - 1) * o->batch * o->accum / (ips > 0 ? ips : 1);
        if (log) {
            fprintf(log, "%ld,%.6g,%.6f,%.6f,%.6f,%.6f,%.6f,%.6g,%ld,%.3f,%.3f\n", step + 1, lr, sum.loss, sum.clip,
                    sum.mv, sum.sym, sum.sla, gnorm, r.skipped_steps, ips, mama_time_seconds() - t0);
            fflush(log);
        }
        mama__progress(o, step, &sum, lr, ips, eta, tty);
        if (o->checkpoint && o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0 && step + 1 < o->steps)
            if ((s = mama_checkpoint_save(o->checkpoint, m, &opt, step + 1, seed)) != MAMA_OK) goto done;
    }
    if (o->checkpoint) s = mama_checkpoint_save(o->checkpoint, m, &opt, step, seed);
done:
    mama__loader_free(&L);
    if (log) fclose(log);
    mama_adamw_free(&opt);
    r.seconds = mama_time_seconds() - t0;
    r.images_per_s = r.seconds > 0 ? (double)r.steps_done * o->batch * o->accum / r.seconds : 0;
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
                    if (npos > 0 && n - npos > 0 && fabs(sn - 0.8) < best_gap) {
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

MAMA_API void mama_eval_result_free(mama_eval_result *r) {
    mama_free(r->probs); mama_free(r->labels); mama_free(r->records);
    memset(r, 0, sizeof *r);
}

/* The labelled records of a split for a task. */
static mama_status mama__eval_items(mama_dataset *d, mama_split split, mama_zeroshot_task task, mama_eval_result *out) {
    const int *idx;
    int n = mama_dataset_split(d, split, &idx), i, K = mama_zeroshot_num_classes(task);
    memset(out, 0, sizeof *out);
    out->K = K;
    MAMA_TRY(mama_alloc((void **)&out->records, sizeof(int) * (size_t)(n + 1), "eval items"));
    if (mama_alloc((void **)&out->labels, sizeof(int) * (size_t)(n + 1), "eval items") != MAMA_OK ||
        mama_alloc((void **)&out->probs, sizeof(float) * (size_t)(n + 1) * K, "eval items") != MAMA_OK) {
        mama_eval_result_free(out);
        return MAMA_ERR_NOMEM;
    }
    for (i = 0; i < n; i++) {
        int y = mama_task_label(task, &d->man.records[idx[i]]);
        if (y < 0) continue;
        out->records[out->n] = idx[i];
        out->labels[out->n++] = y;
    }
    if (out->n == 0) {
        mama_eval_result_free(out);
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: no %s images with a %s label", d->man.path, mama_split_name(split),
                         mama_task_name(task));
    }
    return MAMA_OK;
}

/* Image embeddings (and pooled features) of records, eval pipeline, in
 * chunks the model can take. */
static mama_status mama__encode_records(mama_model *m, mama_dataset *d, const int *records, int n, float *emb,
                                        float *pooled, int train_aug, uint64_t seed) {
    const mama_config *c = mama_model_config(m);
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    int chunk = 2 * m->max_batch, i, j;
    float *buf;
    mama_status s = MAMA_OK;
    MAMA_TRY(mama_alloc((void **)&buf, sizeof(float) * img * (size_t)chunk, "encode buffer"));
    for (i = 0; i < n && s == MAMA_OK; i += chunk) {
        int nb = n - i < chunk ? n - i : chunk;
#ifdef _OPENMP
#pragma omp parallel for
#endif
        for (j = 0; j < nb; j++) {
            mama_rng r;
            mama_rng_seed(&r, mama__mix2(seed, (uint64_t)(i + j)));
            if (mama_dataset_image(d, records[i + j], train_aug, &r, buf + img * j) != MAMA_OK) s = MAMA_ERR_IO;
        }
        if (s != MAMA_OK) break;
        s = mama_encode_images(m, buf, nb, emb ? emb + (size_t)i * c->embed_dim : NULL,
                               pooled ? pooled + (size_t)i * c->vision_dim : NULL);
    }
    mama_free(buf);
    if (s == MAMA_ERR_IO) return MAMA_FAIL(s, "encoding images: %s", mama_last_error());
    return s;
}

/* ---- 11.4 Zero-shot ---------------------------------------------------- */
MAMA_API mama_status mama_zero_shot(mama_model *m, mama_dataset *d, mama_split split, mama_zeroshot_task task,
                                    int ref_text_feature, mama_eval_result *out) {
    const mama_config *c = mama_model_config(m);
    int E = c->embed_dim, T = c->context, K, i, k, B = m->max_batch, queued = 0;
    float *img_emb = NULL, *txt_emb = NULL, scale;
    int *ids = NULL, *mask = NULL, *owner = NULL;
    char *caption = NULL;
    mama_status s;
    if (!d->tok) return MAMA_FAIL(MAMA_ERR_INVALID, "zero-shot needs a tokenizer");
    MAMA_TRY(mama__eval_items(d, split, task, out));
    K = out->K;
    scale = expf(mama__read_scalar(m, m->w.logit_scale));
#define MAMA__A(p, n) if ((s = mama_alloc((void **)&(p), (n), "zero-shot buffers")) != MAMA_OK) goto done
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
            if ((s = mama_zeroshot_caption_alloc(task, k, &f, &caption)) != MAMA_OK) goto done;
            s = mama_tokenizer_encode_caption(d->tok, caption, T, ids + (size_t)queued * T, mask + (size_t)queued * T, NULL);
            mama_free(caption);
            caption = NULL;
            if (s != MAMA_OK) goto done;
            owner[2 * queued] = i; owner[2 * queued + 1] = k;
            if (++queued == B || (i == out->n - 1 && k == K - 1)) {
                int q, e;
                if ((s = mama__encode_texts_ex(m, ids, mask, queued, txt_emb, ref_text_feature)) != MAMA_OK) goto done;
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
    for (i = 0; i < out->n; i++) { /* softmax over the classes */
        float *p = out->probs + (size_t)i * K, mx = p[0], sum = 0;
        for (k = 1; k < K; k++) if (p[k] > mx) mx = p[k];
        for (k = 0; k < K; k++) { p[k] = expf(p[k] - mx); sum += p[k]; }
        for (k = 0; k < K; k++) p[k] /= sum;
    }
    s = mama_metrics_compute(out->probs, out->labels, out->n, K, &out->metrics);
done:
    mama_free(img_emb); mama_free(txt_emb); mama_free(ids); mama_free(mask); mama_free(owner);
    if (s != MAMA_OK) mama_eval_result_free(out);
    return s;
}

/* ---- 11.5 Linear probe (SPEC A.7) -------------------------------------- */
MAMA_API void mama_probe_opts_default(mama_probe_opts *o) {
    memset(o, 0, sizeof *o);
    o->steps = 8000; o->batch = 32; o->lr = 5e-4f; o->lr_floor = 1e-5f; o->warmup = 100;
    o->momentum = 0.9f; o->weight_decay = 1e-3f; o->augment = 1; o->seed = 1;
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
    mama_cpu_backend()->sgd_step(mama_cpu_backend(), W, gW, mW, (size_t)K * D, lr, o->momentum, o->weight_decay, first);
    mama_cpu_backend()->sgd_step(mama_cpu_backend(), b, gb, mb, (size_t)K, lr, o->momentum, o->weight_decay, first);
    return loss;
}

MAMA_API mama_status mama_linear_probe(mama_model *m, mama_dataset *d, mama_zeroshot_task task,
                                       const mama_probe_opts *o, mama_split eval_split, mama_eval_result *out) {
    const mama_config *c = mama_model_config(m);
    mama_eval_result tr;
    int D = c->vision_dim, K = mama_zeroshot_num_classes(task), i, k, n_cls[MAMA_MAX_CLASSES], *by_class = NULL;
    int cls_start[MAMA_MAX_CLASSES + 1], present[MAMA_MAX_CLASSES], npresent = 0, *batch_rec = NULL, *batch_y = NULL;
    float *W = NULL, *b = NULL, *gW = NULL, *gb = NULL, *mW = NULL, *mb = NULL, *feat = NULL, *bx = NULL, *tf = NULL;
    long step;
    mama_rng rng;
    mama_status s;
    double t0 = mama_time_seconds();
    memset(out, 0, sizeof *out);
    MAMA_TRY(mama__eval_items(d, MAMA_SPLIT_TRAIN, task, &tr));
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
        if (!o->quiet && ((step + 1) % (o->steps / 10 > 0 ? o->steps / 10 : 1) == 0))
            fprintf(stderr, "probe %s: step %ld/%ld loss %.4f lr %.2e (%.0fs)\n", mama_task_name(task), step + 1,
                    o->steps, loss, lr, mama_time_seconds() - t0);
    }
    /* evaluation on the held-out split */
    if ((s = mama__eval_items(d, eval_split, task, out)) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&tf, sizeof(float) * (size_t)out->n * D, "linear probe")) != MAMA_OK) goto done;
    if ((s = mama__encode_records(m, d, out->records, out->n, NULL, tf, 0, 0)) != MAMA_OK) goto done;
    for (i = 0; i < out->n; i++) {
        float *p = out->probs + (size_t)i * K, mx = -1e30f, sum = 0;
        int j;
        for (k = 0; k < K; k++) {
            double z = b[k];
            for (j = 0; j < D; j++) z += (double)W[(size_t)k * D + j] * tf[(size_t)i * D + j];
            p[k] = (float)z;
            if (p[k] > mx) mx = p[k];
        }
        for (k = 0; k < K; k++) { p[k] = expf(p[k] - mx); sum += p[k]; }
        for (k = 0; k < K; k++) p[k] /= sum;
    }
    s = mama_metrics_compute(out->probs, out->labels, out->n, K, &out->metrics);
done:
    mama_eval_result_free(&tr);
    mama_free(W); mama_free(b); mama_free(gW); mama_free(gb); mama_free(mW); mama_free(mb);
    mama_free(by_class); mama_free(batch_rec); mama_free(batch_y); mama_free(bx); mama_free(feat); mama_free(tf);
    if (s != MAMA_OK) mama_eval_result_free(out);
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
