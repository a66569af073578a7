/* tests/test_mpi.c - data-parallel training (mama.h section 12) against one
 * process.  Run under `mpirun -np 2` (make test-mpi); only rank 0 reports.
 *
 * - one step: 2 ranks x batch B (global losses, synchronised BatchNorm,
 *   gradient all-reduce) give the losses, the gradients and the BatchNorm
 *   running statistics of one process with batch 2B, to fp32 rounding;
 * - the same with the device-backend code paths forced on the CPU (what a
 *   GPU rank runs: backend BatchNorm statistics, staged collectives);
 * - the reference mode (per-rank CLIP / symmetric CLIP / SLA): its reported
 *   losses are the mean of one process's losses on each rank's half;
 * - pretraining: N steps (late losses on, accumulation 2) of 2 x B equal
 *   one process of 2B: every logged loss and the final weights;
 * - a checkpoint written by 2 ranks resumes on 1 and vice versa, ending
 *   where the uninterrupted single-process run ends;
 * - sharded feature extraction (probe / zeroshot) and data-parallel
 *   fine-tuning equal one process;
 * - the gradient sum overlapped with the backward (bucket all-reduces
 *   started at the hook points) gives the bits of the blocking all-reduce,
 *   in one step (full / LoRA / frozen text tower, early and late losses)
 *   and over N pretraining steps (losses, weights, Adam moments), every
 *   gradient float summed by exactly one bucket;
 * - the reference mode's per-rank BatchNorm running statistics are
 *   averaged over the ranks into every checkpoint and at the end.
 * Every rank also runs the single-process references itself (each to its
 * own files), so no rank idles in a spinning MPI wait.  Dropout is off in
 * the tiny config (masks are keyed per rank; see section 12). */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#define MAMA_MPI_IMPLEMENTATION
#include "mama_mpi.h"
#include "test_util.h"
#include <stdlib.h>
#include <sys/stat.h>

static mama_backend *CPU; /* this program's CPU backend (created in main) */

#define DIR "build/test_mpi_data"
#define NB 3         /* per rank */
#define STEPS 4

static mama_comm *world;
static int rank_;

static void report(int ok, const char *name, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    float all_ok = ok ? 0.0f : 1.0f;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a check passes only when it passes on every rank */
    world->allreduce_sum_f32(world, &all_ok, 1);
    if (rank_ == 0) test_report(all_ok == 0.0f, name, "%s", msg);
}

static void config(mama_config *c) {
    mama_config_preset(c, "tiny");
    c->vision_depth = 2; c->text_depth = 2; c->image_size = 56; /* 4 x 4 patches: quick, same code paths */
    c->text_dropout = 0; c->lora_dropout = 0;
}

/* worst |a-b| and worst |a-b| / max(|b|, floor) */
static void diff(const float *a, const float *b, size_t n, double floor_, double *abs_, double *rel) {
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]), s = fabs(b[i]) > floor_ ? fabs(b[i]) : floor_;
        if (!(d <= *abs_)) *abs_ = d;
        if (!(d / s <= *rel)) *rel = d / s;
    }
}

/* how many of n floats differ in their bits */
static size_t n_differ(const float *a, const float *b, size_t n) {
    size_t i, k = 0;
    for (i = 0; i < n; i++) k += memcmp(a + i, b + i, sizeof(float)) != 0;
    return k;
}

/* a deterministic batch of n samples starting at global sample `first` */
static mama_status make_batch(mama_dataset *d, int first, int n, float *img, float *ext, int *ids, int *mask) {
    const int *idx;
    int count = mama_dataset_split(d, MAMA_SPLIT_TRAIN, &idx), i, T = 128;
    size_t px = 3 * 56 * 56;
    for (i = 0; i < n; i++) {
        mama_rng r;
        int rec = idx[(first + i) % count];
        mama_rng_seed(&r, 1000 + (uint64_t)(first + i));
        MAMA_TRY(mama_dataset_image(d, rec, 1, &r, img + px * i));
        MAMA_TRY(mama_dataset_image(d, rec, 1, &r, ext + px * i));
        MAMA_TRY(mama_dataset_caption(d, rec, 0.5f, &r, ids + (size_t)T * i, mask + (size_t)T * i));
    }
    return MAMA_OK;
}

static void test_step(mama_dataset *d) {
    mama_config c;
    mama_model *ref = NULL, *dp = NULL;
    size_t px = 3 * 56 * 56, ng = 0, nbuf = 0;
    float *img = NULL, *ext = NULL, *gref = NULL, *pref = NULL;
    int *ids = NULL, *mask = NULL, T = 128;
    mama_batch bt;
    mama_step_opts so;
    mama_losses Lr, Ld, Lh[2];
    double ga = 0, gr = 0, ba = 0, br = 0, la = 0, lr = 0;
    config(&c);
    img = (float *)malloc(sizeof(float) * px * 2 * NB); ext = (float *)malloc(sizeof(float) * px * 2 * NB);
    ids = (int *)malloc(sizeof(int) * T * 2 * NB); mask = (int *)malloc(sizeof(int) * T * 2 * NB);
    if (make_batch(d, 0, 2 * NB, img, ext, ids, mask) != MAMA_OK ||
        mama_model_create(&ref, &c, CPU, 2 * NB, 7) != MAMA_OK ||
        mama_model_create(&dp, &c, CPU, NB, 7) != MAMA_OK) {
        report(0, "dp_step", "setup: %s", mama_last_error());
        goto done;
    }
    ng = mama_model_numel(ref, MAMA_GROUP_TRAIN) + mama_model_numel(ref, MAMA_GROUP_LATE);
    nbuf = mama_model_numel(ref, MAMA_GROUP_BUFFER);
    mama_step_opts_default(&so);
    so.late = 1; so.dropout = MAMA_OFF;
    /* one process, batch 2B */
    bt.B = 2 * NB; bt.images = img; bt.ext_images = ext; bt.input_ids = ids; bt.attention_mask = mask;
    if (mama_model_step(ref, &bt, &so, 0, &Lr) != MAMA_OK) { report(0, "dp_step", "reference: %s", mama_last_error()); goto done; }
    gref = (float *)malloc(sizeof(float) * ng);
    pref = (float *)malloc(sizeof(float) * nbuf);
    memcpy(gref, mama_model_grads(ref), sizeof(float) * ng);
    memcpy(pref, mama_model_params(ref) + mama_model_numel(ref, MAMA_GROUP_TRAIN) + mama_model_numel(ref, MAMA_GROUP_LATE) +
                     mama_model_numel(ref, MAMA_GROUP_FROZEN), sizeof(float) * nbuf);
    /* 2 ranks x NB: rank r takes samples [r NB, r NB + NB) */
    if (mama_model_set_comm(dp, world, MAMA_DP_GLOBAL) != MAMA_OK) { report(0, "dp_step", "set_comm: %s", mama_last_error()); goto done; }
    bt.B = NB; bt.images = img + px * NB * rank_; bt.ext_images = ext + px * NB * rank_;
    bt.input_ids = ids + (size_t)T * NB * rank_; bt.attention_mask = mask + (size_t)T * NB * rank_;
    if (mama_model_step(dp, &bt, &so, 0, &Ld) != MAMA_OK || mama_model_allreduce_grads(dp) != MAMA_OK) {
        report(0, "dp_step", "data parallel: %s", mama_last_error());
        goto done;
    }
    {
        float a[5] = {Ld.loss, Ld.clip, Ld.mv, Ld.sym, Ld.sla}, b[5] = {Lr.loss, Lr.clip, Lr.mv, Lr.sym, Lr.sla};
        diff(a, b, 5, 1e-3, &la, &lr);
    }
    diff(mama_model_grads(dp), gref, ng, 1e-3, &ga, &gr);
    if (getenv("MAMA_TEST_VERBOSE")) {
        int E = c.embed_dim, N = dp->n_patches;
        double a1 = 0, r1 = 0;
        size_t BE = (size_t)NB * E;
        diff(dp->a.d_txt_emb, ref->a.d_txt_emb + rank_ * BE, BE, 1e-6, &a1, &r1);
        printf("  [r%d] d_txt_emb abs %.2e rel %.2e\n", rank_, a1, r1); a1 = r1 = 0;
        diff(dp->a.d_img_emb, ref->a.d_img_emb + rank_ * BE, BE, 1e-6, &a1, &r1);
        printf("  [r%d] d_img_emb abs %.2e rel %.2e\n", rank_, a1, r1); a1 = r1 = 0;
        diff(dp->a.d_sc_z, ref->a.d_sc_z + rank_ * BE, BE, 1e-6, &a1, &r1);
        printf("  [r%d] d_sc_z abs %.2e rel %.2e\n", rank_, a1, r1); a1 = r1 = 0;
        diff(dp->a.d_p_emb, ref->a.d_p_emb + rank_ * BE * N, BE * N, 1e-6, &a1, &r1);
        printf("  [r%d] d_p_emb abs %.2e rel %.2e\n", rank_, a1, r1); a1 = r1 = 0;
        diff(dp->a.d_vpooled, ref->a.d_vpooled + rank_ * NB * c.vision_dim, NB * c.vision_dim, 1e-6, &a1, &r1);
        printf("  [r%d] d_vpooled abs %.2e rel %.2e\n", rank_, a1, r1); a1 = r1 = 0;
        diff(dp->a.d_patches, ref->a.d_patches + rank_ * NB * N * c.vision_dim, NB * N * c.vision_dim, 1e-6, &a1, &r1);
        printf("  [r%d] d_patches abs %.2e rel %.2e\n", rank_, a1, r1); a1 = r1 = 0;
        diff(dp->a.txt_emb, ref->a.txt_emb + rank_ * BE, BE, 1e-6, &a1, &r1);
        printf("  [r%d] txt_emb abs %.2e rel %.2e\n", rank_, a1, r1); a1 = r1 = 0;
    }
    if (getenv("MAMA_TEST_VERBOSE") && rank_ == 0) {
        int k;
        for (k = 0; k < mama_model_param_count(dp); k++) {
            const mama_param_info *pi = mama_model_param(dp, k);
            double a1 = 0, r1 = 0;
            if (pi->group > MAMA_GROUP_LATE) continue;
            diff(mama_model_grads(dp) + pi->offset, gref + pi->offset, pi->numel, 1e-3, &a1, &r1);
            if (r1 > 1e-5) printf("    grad %s: abs %.2e rel %.2e\n", pi->name, a1, r1);
        }
    }
    diff(mama_model_params(dp) + mama_model_numel(dp, MAMA_GROUP_TRAIN) + mama_model_numel(dp, MAMA_GROUP_LATE) +
             mama_model_numel(dp, MAMA_GROUP_FROZEN), pref, nbuf, 1e-3, &ba, &br);
    if (rank_ == 0)
        printf("  one process (B=%d): loss %.6f clip %.6f mv %.6f sym %.6f sla %.6f\n"
               "  2 ranks (B=%d each): loss %.6f clip %.6f mv %.6f sym %.6f sla %.6f\n", 2 * NB, Lr.loss, Lr.clip, Lr.mv,
               Lr.sym, Lr.sla, NB, Ld.loss, Ld.clip, Ld.mv, Ld.sym, Ld.sla);
    report(lr < 1e-5, "dp_step_losses", "5 losses (clip, NT-Xent, symmetric, SLA, total), 2x%d vs 1x%d: worst abs %.2e rel %.2e",
           NB, 2 * NB, la, lr);
    {   /* fp32 sums in another order (two ranks' partial GEMMs + the all-reduce
         * vs one GEMM): errors at the rounding of the largest terms, so
         * measured against the largest gradient (an entry whose true value
         * is 0, e.g. a bias feeding a BatchNorm, has no relative error) */
        size_t j;
        double mx = 0;
        for (j = 0; j < ng; j++) mx = fabs(gref[j]) > mx ? fabs(gref[j]) : mx;
        report(ga / mx < 1e-4, "dp_step_grads", "%zu gradients after the sum all-reduce: worst abs %.2e = %.2e of the "
               "largest gradient %.2e", ng, ga, ga / mx, mx);
    }
    report(br < 1e-5, "dp_step_bn_running", "%zu BatchNorm running statistics (synchronised): worst abs %.2e rel %.2e",
           nbuf, ba, br);
    /* reference mode: CLIP / symmetric / SLA per rank = one process on each half */
    {
        mama_model *h = NULL, *rm = NULL;
        double ra = 0, rr = 0;
        int k;
        if (mama_model_create(&h, &c, CPU, NB, 7) != MAMA_OK ||
            mama_model_create(&rm, &c, CPU, NB, 7) != MAMA_OK) {
            report(0, "dp_reference_mode", "%s", mama_last_error());
        } else {
            for (k = 0; k < 2; k++) {
                mama_batch hb;
                hb.B = NB; hb.images = img + px * NB * k; hb.ext_images = ext + px * NB * k;
                hb.input_ids = ids + (size_t)T * NB * k; hb.attention_mask = mask + (size_t)T * NB * k;
                mama_model_step(h, &hb, &so, 0, &Lh[k]);
            }
            if (mama_model_set_comm(rm, world, MAMA_DP_REFERENCE) != MAMA_OK || mama_model_step(rm, &bt, &so, 0, &Ld) != MAMA_OK) {
                report(0, "dp_reference_mode", "%s", mama_last_error());
            } else {
                float a[3] = {Ld.clip, Ld.sym, Ld.sla};
                float b[3] = {(Lh[0].clip + Lh[1].clip) / 2, (Lh[0].sym + Lh[1].sym) / 2, (Lh[0].sla + Lh[1].sla) / 2};
                diff(a, b, 3, 1e-3, &ra, &rr);
                report(rr < 1e-5 && isfinite(Ld.mv), "dp_reference_mode",
                       "per-rank CLIP %.5f / sym %.5f / SLA %.5f = mean of one process on each half (worst rel %.2e); "
                       "NT-Xent gathered %.5f", Ld.clip, Ld.sym, Ld.sla, rr, Ld.mv);
            }
        }
        mama_model_free(h);
        mama_model_free(rm);
    }
    /* the device-backend paths (statistics from the backend's own BatchNorm
     * as float mean / rstd, float all-reduces, the affine backward
     * correction, collectives staged through host copies), forced on the
     * CPU: the arithmetic a GPU rank would run, checked without a GPU.
     * Equal to fp32 rounding, not bitwise. */
    {
        mama_model *dg = NULL;
        mama_losses Lg;
        double a1 = 0, r1 = 0, g1 = 0, gr1 = 0, b1 = 0, br1 = 0, mx = 0;
        size_t j;
        if (mama_model_create(&dg, &c, CPU, NB, 7) != MAMA_OK ||
            mama_model_set_comm(dg, world, MAMA_DP_GLOBAL) != MAMA_OK) {
            report(0, "dp_step_generic", "%s", mama_last_error());
        } else {
            dg->dp->generic = 1;
            if (mama_model_step(dg, &bt, &so, 0, &Lg) != MAMA_OK || mama_model_allreduce_grads(dg) != MAMA_OK) {
                report(0, "dp_step_generic", "%s", mama_last_error());
            } else {
                float a[5] = {Lg.loss, Lg.clip, Lg.mv, Lg.sym, Lg.sla}, b[5] = {Lr.loss, Lr.clip, Lr.mv, Lr.sym, Lr.sla};
                diff(a, b, 5, 1e-3, &a1, &r1);
                diff(mama_model_grads(dg), gref, ng, 1e30, &g1, &gr1);
                for (j = 0; j < ng; j++) mx = fabs(gref[j]) > mx ? fabs(gref[j]) : mx;
                diff(mama_model_params(dg) + mama_model_numel(dg, MAMA_GROUP_TRAIN) + mama_model_numel(dg, MAMA_GROUP_LATE) +
                         mama_model_numel(dg, MAMA_GROUP_FROZEN), pref, nbuf, 1e-2, &b1, &br1);
                report(r1 < 1e-5 && g1 / mx < 1e-4 && br1 < 1e-4, "dp_step_generic",
                       "device-backend paths forced on the CPU (backend BatchNorm statistics, float all-reduces, "
                       "staged collectives): losses rel %.2e, gradients %.2e of the largest, BatchNorm running "
                       "statistics rel %.2e (floor 1e-2)", r1, g1 / mx, br1);
            }
        }
        mama_model_free(dg);
    }
done:
    free(img); free(ext); free(ids); free(mask); free(gref); free(pref);
    mama_model_free(ref);
    mama_model_free(dp);
}

/* ---- pretraining, resume across world sizes ---------------------------- */
/* ex: data-parallel mode and the blocking switch; the result, and the
 * model itself when keep is given (the caller frees it) */
typedef struct pretrain_ex {
    mama_dp_mode mode;
    int no_overlap;
    mama_pretrain_result r;
    mama_model **keep;
    size_t early, late, ngrad;   /* gradient floats summed by the hooks' buckets / after the backward */
    int nseg;
} pretrain_ex;
static mama_status pretrain2(mama_dataset *d, int dp, int batch, const char *ckpt, const char *log, long stop_at,
                             int resume, double *seconds, pretrain_ex *ex) {
    mama_config c;
    mama_model *m = NULL;
    mama_pretrain_opts o;
    mama_pretrain_result r;
    mama_status s;
    config(&c);
    MAMA_TRY(mama_model_create(&m, &c, CPU, batch, 5));
    if (dp && (s = mama_model_set_comm(m, world, ex ? ex->mode : MAMA_DP_GLOBAL)) != MAMA_OK) { mama_model_free(m); return s; }
    mama_pretrain_opts_default(&o);
    o.steps = STEPS; o.stop_at = stop_at; o.batch = batch; o.accum = 2; o.lr = 1e-3f; o.warmup = 2; o.late_loss = 2;
    o.seed = 11; o.checkpoint = ckpt; o.log_csv = log; o.resume = resume; o.quiet = 1;
    o.no_overlap = ex ? ex->no_overlap : 0;
    s = mama_pretrain(m, d, &o, &r);
    if (seconds) *seconds = r.seconds;
    if (ex) {
        ex->r = r;
        ex->ngrad = mama_model_numel(m, MAMA_GROUP_TRAIN) + mama_model_numel(m, MAMA_GROUP_LATE);
        ex->early = m->dp ? m->dp->ov_early : 0;
        ex->late = m->dp ? m->dp->ov_late : 0;
        ex->nseg = m->dp ? m->dp->ov_nseg : 0;
        if (ex->keep) { *ex->keep = m; m = NULL; }
    }
    mama_model_free(m);
    return s;
}
static mama_status pretrain(mama_dataset *d, int dp, int batch, const char *ckpt, const char *log, long stop_at,
                            int resume, double *seconds) {
    return pretrain2(d, dp, batch, ckpt, log, stop_at, resume, seconds, NULL);
}

static int log_losses(const char *path, float *out, int max) {
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;
    if (!f) return 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return 0; }
    while (n < max && fgets(line, sizeof line, f)) {
        double step, lr, loss, clip, mv, sym, sla;
        if (sscanf(line, "%lf,%lf,%lf,%lf,%lf,%lf,%lf", &step, &lr, &loss, &clip, &mv, &sym, &sla) == 7) {
            out[n++] = (float)loss; out[n++] = (float)clip; out[n++] = (float)mv; out[n++] = (float)sym; out[n++] = (float)sla;
        }
    }
    fclose(f);
    return n;
}

/* Every F32 tensor of two checkpoints (weights, buffers, Adam moments):
 * the worst abs / rel difference, and how many values differ by more than
 * 1e-5 (*n_big of *n_all).  Why not all of them to 1e-7: AdamW divides
 * each gradient by its own running RMS, so an entry whose true gradient is
 * zero (a bias feeding a BatchNorm, the key part of an attention bias) or
 * far below the rounding of its sums moves by +-lr per step with the sign
 * of the rounding noise, in one process as in another; fp32 sums taken in
 * another order (2 ranks' partial GEMMs + all-reduce vs one GEMM) flip some
 * of those signs.  Those entries are few and bounded by lr x steps. */
static long n_big, n_all;

/* Calls fn on every F32 tensor the two checkpoints share (read into
 * memory); 0 when one does not open or a tensor is missing, mis-sized or
 * unreadable in the second. */
typedef void (*ckpt_pair_fn)(const char *name, const float *p, const float *q, size_t n, void *ctx);
static int ckpt_pairs(const char *a, const char *b, ckpt_pair_fn fn, void *ctx, long *step_a, long *step_b) {
    mama_safetensors x, y;
    int i, ok = 1;
    memset(&x, 0, sizeof x); memset(&y, 0, sizeof y);
    if (mama_st_open(&x, a) != MAMA_OK || mama_st_open(&y, b) != MAMA_OK) { mama_st_close(&x); return 0; }
    if (step_a) *step_a = atol(mama_st_meta(&x, "step") ? mama_st_meta(&x, "step") : "-1");
    if (step_b) *step_b = atol(mama_st_meta(&y, "step") ? mama_st_meta(&y, "step") : "-1");
    for (i = 0; i < x.count && ok; i++) {
        const mama_st_tensor *t = &x.tensors[i], *u = mama_st_find(&y, t->name);
        float *p, *q;
        if (t->dtype != MAMA_F32) continue;
        if (!u || u->numel != t->numel) { ok = 0; break; }
        p = (float *)malloc(sizeof(float) * t->numel + 4); q = (float *)malloc(sizeof(float) * t->numel + 4);
        ok = mama_st_read_f32(&x, t->name, p, t->numel) == MAMA_OK && mama_st_read_f32(&y, t->name, q, t->numel) == MAMA_OK;
        if (ok) fn(t->name, p, q, t->numel, ctx);
        free(p); free(q);
    }
    mama_st_close(&x); mama_st_close(&y);
    return ok;
}

typedef struct { double *abs_, *rel; } tol_ctx;
static void tol_pair(const char *name, const float *p, const float *q, size_t n, void *ctx) {
    tol_ctx *c = (tol_ctx *)ctx;
    double a1 = 0, r1 = 0;
    size_t k, big = 0;
    diff(p, q, n, 1e-2, &a1, &r1);
    for (k = 0; k < n; k++) big += fabsf(p[k] - q[k]) > 1e-5f;
    if (getenv("MAMA_TEST_VERBOSE") && rank_ == 0 && a1 > 1e-6)
        printf("    %s: abs %.2e rel %.2e, %zu of %zu over 1e-5\n", name, a1, r1, big, n);
    diff(p, q, n, 1e-2, c->abs_, c->rel);
    n_big += (long)big;
    n_all += (long)n;
}
static int compare_ckpt(const char *a, const char *b, double *abs_, double *rel, long *step_a, long *step_b) {
    tol_ctx c;
    c.abs_ = abs_;
    c.rel = rel;
    n_big = n_all = 0;
    return ckpt_pairs(a, b, tol_pair, &c, step_a, step_b);
}

/* every F32 tensor of two checkpoints: how many values differ in their
 * bits (*n_diff of *n_cmp); 0 when a tensor is missing or mis-sized */
typedef struct { long *n_diff, *n_cmp; } bits_ctx;
static void bits_pair(const char *name, const float *p, const float *q, size_t n, void *ctx) {
    bits_ctx *c = (bits_ctx *)ctx;
    (void)name;
    *c->n_diff += (long)n_differ(p, q, n);
    *c->n_cmp += (long)n;
}
static int compare_ckpt_bits(const char *a, const char *b, long *n_diff, long *n_cmp) {
    bits_ctx c;
    c.n_diff = n_diff;
    c.n_cmp = n_cmp;
    *n_diff = *n_cmp = 0;
    return ckpt_pairs(a, b, bits_pair, &c, NULL, NULL);
}

/* at most 0.1% of the values beyond 1e-5, none beyond the Adam bound lr x steps */
#define WEIGHTS_OK(worst) ((worst) <= 1e-3 * STEPS && n_big * 1000 <= n_all)

static void copy_file(const char *from, const char *to) {
    unsigned char *data = NULL;
    size_t n = 0;
    if (mama_read_file(from, &data, &n) == MAMA_OK) mama_write_file_atomic(to, data, n);
    mama_free(data);
}

static void test_pretrain(mama_dataset *d) {
    char ref_ckpt[256], ref_log[256], half[256], res[256];
    float lref[5 * STEPS], ldp[5 * STEPS], lbl[5 * STEPS];
    pretrain_ex ov, bl;
    double t1 = 0, t2 = 0, la = 0, lrel = 0, wa = 0, wr = 0;
    long sa = 0, sb = 0;
    int nref, ndp, ok;
    snprintf(ref_ckpt, sizeof ref_ckpt, DIR "/ref_r%d.safetensors", rank_);
    snprintf(ref_log, sizeof ref_log, DIR "/ref_r%d.csv", rank_);
    remove(ref_ckpt); remove(ref_log);
    if (rank_ == 0) { remove(DIR "/dp.safetensors"); remove(DIR "/dp.csv"); remove(DIR "/dp_half.safetensors"); }
    world->barrier(world);
    /* one process, batch 2B (each rank its own copy) */
    if (pretrain(d, 0, 2 * NB, ref_ckpt, ref_log, 0, 0, &t1) != MAMA_OK) { report(0, "dp_pretrain", "reference: %s", mama_last_error()); return; }
    /* 2 ranks, batch NB each (the gradient sum overlapped with the backward, the default) */
    memset(&ov, 0, sizeof ov);
    ov.mode = MAMA_DP_GLOBAL;
    if (pretrain2(d, 1, NB, DIR "/dp.safetensors", DIR "/dp.csv", 0, 0, &t2, &ov) != MAMA_OK) { report(0, "dp_pretrain", "dp: %s", mama_last_error()); return; }
    nref = log_losses(ref_log, lref, 5 * STEPS);
    ndp = log_losses(DIR "/dp.csv", ldp, 5 * STEPS);
    ok = nref == 5 * STEPS && ndp == 5 * STEPS;
    if (ok) diff(ldp, lref, (size_t)nref, 1e-3, &la, &lrel);
    if (rank_ == 0) {
        int k;
        printf("  losses 1 x %d: ", 2 * NB); for (k = 0; k < nref; k += 5) printf(" %.6f", lref[k]); printf("\n");
        printf("  losses 2 x %d: ", NB); for (k = 0; k < ndp; k += 5) printf(" %.6f", ldp[k]); printf("\n");
        printf("  wall time: one process %.2f s, 2 ranks %.2f s (OMP_NUM_THREADS=%s, shared machine)\n", t1, t2,
               getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "unset");
    }
    report(ok && lrel < 1e-4, "dp_pretrain_losses",
           "%d steps (late losses from step 2, accum 2), every logged loss term of 2x%d vs 1x%d: worst abs %.2e rel %.2e",
           STEPS, NB, 2 * NB, la, lrel);
    ok = compare_ckpt(DIR "/dp.safetensors", ref_ckpt, &wa, &wr, &sa, &sb);
    report(ok && WEIGHTS_OK(wa) && sa == STEPS && sb == STEPS, "dp_pretrain_weights",
           "final checkpoints (weights, BatchNorm buffers, Adam moments; written by rank 0): %ld of %ld values differ by "
           "more than 1e-5, worst abs %.2e (bound lr x steps = %.0e)", n_big, n_all, wa, 1e-3 * STEPS);
    /* the same 2 ranks with one blocking all-reduce after the backward
     * (--no-overlap): with 2 ranks every sum is a + b on both paths, so the
     * runs must agree bit for bit */
    if (rank_ == 0) { remove(DIR "/dp_blocking.safetensors"); remove(DIR "/dp_blocking.csv"); }
    world->barrier(world);
    memset(&bl, 0, sizeof bl);
    bl.mode = MAMA_DP_GLOBAL;
    bl.no_overlap = 1;
    if (pretrain2(d, 1, NB, DIR "/dp_blocking.safetensors", DIR "/dp_blocking.csv", 0, 0, NULL, &bl) != MAMA_OK) {
        report(0, "dp_overlap_pretrain", "blocking run: %s", mama_last_error());
    } else {
        long nd = 0, nc = 0;
        int nbl = log_losses(DIR "/dp_blocking.csv", lbl, 5 * STEPS);
        float a[5], b[5];
        size_t ld;
        a[0] = ov.r.last.loss; a[1] = ov.r.last.clip; a[2] = ov.r.last.mv; a[3] = ov.r.last.sym; a[4] = ov.r.last.sla;
        b[0] = bl.r.last.loss; b[1] = bl.r.last.clip; b[2] = bl.r.last.mv; b[3] = bl.r.last.sym; b[4] = bl.r.last.sla;
        ld = n_differ(a, b, 5) + (nbl == ndp ? n_differ(ldp, lbl, (size_t)ndp) : 1);
        ok = compare_ckpt_bits(DIR "/dp.safetensors", DIR "/dp_blocking.safetensors", &nd, &nc);
        if (rank_ == 0)
            printf("  overlapped: %ld bucket all-reduces (%d segments x %d steps), %zu floats started by the backward's "
                   "hooks, %zu after it (%zu gradients x %d steps); gradient sum %.3f s in the training thread, %.3f s "
                   "after the backward\n  blocking:   %ld bucket all-reduces, gradient sum %.3f s (all after the backward)\n",
                   ov.r.grad_buckets, ov.nseg, STEPS, ov.early, ov.late, ov.ngrad, STEPS, ov.r.grad_comm_seconds,
                   ov.r.grad_wait_seconds, bl.r.grad_buckets, bl.r.grad_comm_seconds);
        report(ok && nc > 0 && nd == 0 && ld == 0, "dp_overlap_pretrain_bits",
               "%d steps (accum 2), 2 ranks, overlapped vs blocking gradient sum: final checkpoints %ld of %ld values "
               "(weights, BatchNorm buffers, Adam moments) differ in their bits; the 5 final losses and %d logged loss "
               "terms: %zu differ", STEPS, nd, nc, ndp, ld);
        report(ov.r.grad_buckets == (long)ov.nseg * STEPS && ov.nseg > 1 && ov.early == ov.ngrad * STEPS &&
                   ov.late == 0 && bl.r.grad_buckets == 0 && bl.early == 0,
               "dp_overlap_buckets",
               "overlapped run: %ld bucket all-reduces = %d segments x %d steps (only the last of the 2 micro-batches "
               "starts them), %zu floats = %zu gradients x %d steps started by the backward's hooks, %zu after it; "
               "blocking run: %ld buckets", ov.r.grad_buckets, ov.nseg, STEPS, ov.early, ov.ngrad, STEPS, ov.late,
               bl.r.grad_buckets);
    }
    /* 2 ranks -> 1: 2 ranks stop at step 2; each rank resumes alone from a copy */
    wa = wr = 0;
    snprintf(res, sizeof res, DIR "/res21_r%d.safetensors", rank_);
    if (pretrain(d, 1, NB, DIR "/dp_half.safetensors", NULL, STEPS / 2, 0, NULL) != MAMA_OK) {
        report(0, "dp_resume_2to1", "%s", mama_last_error());
    } else {
        copy_file(DIR "/dp_half.safetensors", res);
        ok = pretrain(d, 0, 2 * NB, res, NULL, 0, 1, NULL) == MAMA_OK &&
             compare_ckpt(res, ref_ckpt, &wa, &wr, &sa, &sb);
        report(ok && WEIGHTS_OK(wa) && sa == STEPS, "dp_resume_2to1",
               "%d steps on 2 ranks, checkpoint, %d more on 1 process (batch %d) vs %d on 1: %ld of %ld values over "
               "1e-5, worst abs %.2e", STEPS / 2, STEPS - STEPS / 2, 2 * NB, STEPS, n_big, n_all, wa);
    }
    /* 1 -> 2 ranks: one process stops at step 2 (rank 0's file), both ranks resume from it */
    wa = wr = 0;
    snprintf(half, sizeof half, DIR "/res12_r%d.safetensors", rank_);
    remove(half);
    ok = pretrain(d, 0, 2 * NB, half, NULL, STEPS / 2, 0, NULL) == MAMA_OK;
    world->barrier(world);
    ok = ok && pretrain(d, 1, NB, DIR "/res12_r0.safetensors", NULL, 0, 1, NULL) == MAMA_OK &&
         compare_ckpt(DIR "/res12_r0.safetensors", ref_ckpt, &wa, &wr, &sa, &sb);
    report(ok && WEIGHTS_OK(wa) && sa == STEPS, "dp_resume_1to2",
           "%d steps on 1 process, checkpoint, %d more on 2 ranks vs %d on 1: %ld of %ld values over 1e-5, worst abs "
           "%.2e", STEPS / 2, STEPS - STEPS / 2, STEPS, n_big, n_all, wa);
}

/* ---- the gradient sum overlapped with the backward (12.7) -------------- */
/* One step of two replicas (same weights, same slice of the batch): one
 * with the bucket all-reduces started by the backward, one with the
 * blocking all-reduce after it.  Each text-tower mode lays the gradient
 * buffer out differently (full: every GPT-2 tensor; LoRA: the adapters
 * only; frozen: none); with the early losses only, the SimCLR and local
 * heads do not run but their (zero) buckets still go. */
static void test_overlap_step(mama_dataset *d) {
    static const struct { mama_text_mode mode; int late; const char *name; } cases[] = {
        {MAMA_TEXT_FULL, 1, "full text tower, late losses"},
        {MAMA_TEXT_FULL, 0, "full text tower, early losses"},
        {MAMA_TEXT_LORA, 1, "LoRA text tower, late losses"},
        {MAMA_TEXT_FROZEN, 1, "frozen text tower, late losses"}};
    size_t px = 3 * 56 * 56;
    float *img = NULL, *ext = NULL;
    int *ids = NULL, *mask = NULL, T = 128, k;
    img = (float *)malloc(sizeof(float) * px * 2 * NB); ext = (float *)malloc(sizeof(float) * px * 2 * NB);
    ids = (int *)malloc(sizeof(int) * T * 2 * NB); mask = (int *)malloc(sizeof(int) * T * 2 * NB);
    if (make_batch(d, 0, 2 * NB, img, ext, ids, mask) != MAMA_OK) { report(0, "dp_overlap_step", "%s", mama_last_error()); goto done; }
    for (k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
        mama_config c;
        mama_model *ov = NULL, *bl = NULL;
        mama_batch bt;
        mama_step_opts so;
        mama_losses La, Lb;
        size_t ng, nd = 1, tiled = 0;
        int armed = 0, i, gaps = 0, s1, s2;
        config(&c);
        c.text_mode = cases[k].mode;
        mama_step_opts_default(&so);
        so.late = cases[k].late; so.dropout = MAMA_OFF;
        bt.B = NB; bt.images = img + px * NB * rank_; bt.ext_images = ext + px * NB * rank_;
        bt.input_ids = ids + (size_t)T * NB * rank_; bt.attention_mask = mask + (size_t)T * NB * rank_;
        if (mama_model_create(&ov, &c, CPU, NB, 7) != MAMA_OK ||
            mama_model_create(&bl, &c, CPU, NB, 7) != MAMA_OK ||
            mama_model_set_comm(ov, world, MAMA_DP_GLOBAL) != MAMA_OK ||
            mama_model_set_comm(bl, world, MAMA_DP_GLOBAL) != MAMA_OK) {
            report(0, "dp_overlap_step", "%s: setup: %s", cases[k].name, mama_last_error());
            mama_model_free(ov); mama_model_free(bl);
            continue;
        }
        ng = mama_model_numel(ov, MAMA_GROUP_TRAIN) + mama_model_numel(ov, MAMA_GROUP_LATE);
        armed = mama_model_overlap_grads(ov);
        s1 = mama_model_step(ov, &bt, &so, 0, &La) == MAMA_OK && mama_model_allreduce_grads(ov) == MAMA_OK;
        s2 = mama_model_step(bl, &bt, &so, 0, &Lb) == MAMA_OK && mama_model_allreduce_grads(bl) == MAMA_OK;
        if (s1 && s2) nd = n_differ(mama_model_grads(ov), mama_model_grads(bl), ng);
        /* the plan's segments tile [0, ng) in order */
        for (i = 0; i < ov->dp->ov_nseg; i++) {
            if (ov->dp->ov_seg[i].off != tiled || ov->dp->ov_seg[i].n == 0) gaps++;
            tiled = ov->dp->ov_seg[i].off + ov->dp->ov_seg[i].n;
        }
        report(armed && s1 && s2 && nd == 0 && gaps == 0 && tiled == ng && ov->dp->ov_early == ng &&
                   ov->dp->ov_late == 0 && ov->dp->ov_buckets == ov->dp->ov_nseg,
               "dp_overlap_step", "%s: %zu summed gradients, overlapped vs blocking: %zu differ in their bits; %d "
               "buckets tile the buffer (%d gaps or overlaps), %zu floats started by the backward's hooks, %zu after it",
               cases[k].name, ng, nd, ov->dp->ov_nseg, gaps, (size_t)ov->dp->ov_early, (size_t)ov->dp->ov_late);
        /* misuse: an armed overlap covers one backward; a second step before
         * the sum is refused (on every rank alike), and the sum then completes */
        if (k == 0) {
            mama_status e;
            armed = mama_model_overlap_grads(ov);
            s1 = mama_model_step(ov, &bt, &so, 0, &La) == MAMA_OK;
            e = mama_model_step(ov, &bt, &so, 1, &La);
            s2 = mama_model_allreduce_grads(ov) == MAMA_OK;
            report(armed && s1 && e == MAMA_ERR_INVALID && s2 && !ov->dp->ov_armed, "dp_overlap_second_step",
                   "a second mama_model_step while the overlapped sum runs: %s (\"%.60s...\"); the sum then completes",
                   mama_status_name(e), mama_last_error());
        }
        mama_model_free(ov);
        mama_model_free(bl);
    }
done:
    free(img); free(ext); free(ids); free(mask);
}

/* ---- reference mode: BatchNorm running statistics averaged (12.8) ------ */
static void test_reference_bn(mama_dataset *d) {
    mama_config c;
    mama_model *m = NULL, *kept = NULL;
    size_t px = 3 * 56 * 56, nbuf = 0, off = 0, i, before = 0, after = 0, file_diff = 0, file_n = 0, j;
    float *img = NULL, *ext = NULL, *mine = NULL, *both = NULL, *expect = NULL, *t = NULL;
    int *ids = NULL, *mask = NULL, T = 128, p, ok = 1;
    mama_batch bt;
    mama_step_opts so;
    mama_losses L;
    mama_safetensors st;
    pretrain_ex ex;
    config(&c);
    memset(&st, 0, sizeof st);
    img = (float *)malloc(sizeof(float) * px * 2 * NB); ext = (float *)malloc(sizeof(float) * px * 2 * NB);
    ids = (int *)malloc(sizeof(int) * T * 2 * NB); mask = (int *)malloc(sizeof(int) * T * 2 * NB);
    if (make_batch(d, 0, 2 * NB, img, ext, ids, mask) != MAMA_OK ||
        mama_model_create(&m, &c, CPU, NB, 7) != MAMA_OK ||
        mama_model_set_comm(m, world, MAMA_DP_REFERENCE) != MAMA_OK) {
        report(0, "dp_reference_bn_average", "setup: %s", mama_last_error());
        goto done;
    }
    nbuf = mama_model_numel(m, MAMA_GROUP_BUFFER);
    off = mama_model_numel(m, MAMA_GROUP_TRAIN) + mama_model_numel(m, MAMA_GROUP_LATE) + mama_model_numel(m, MAMA_GROUP_FROZEN);
    mine = (float *)malloc(sizeof(float) * nbuf); both = (float *)malloc(sizeof(float) * 2 * nbuf);
    expect = (float *)malloc(sizeof(float) * nbuf); t = (float *)malloc(sizeof(float) * nbuf);
    /* one step on each rank's own half: per-rank BatchNorm statistics drift apart */
    mama_step_opts_default(&so);
    so.late = 1; so.dropout = MAMA_OFF;
    bt.B = NB; bt.images = img + px * NB * rank_; bt.ext_images = ext + px * NB * rank_;
    bt.input_ids = ids + (size_t)T * NB * rank_; bt.attention_mask = mask + (size_t)T * NB * rank_;
    if (mama_model_step(m, &bt, &so, 0, &L) != MAMA_OK || mama_model_allreduce_grads(m) != MAMA_OK) {
        report(0, "dp_reference_bn_average", "step: %s", mama_last_error());
        goto done;
    }
    /* the truth: both ranks' statistics, averaged here in double */
    memcpy(mine, mama_model_params(m) + off, sizeof(float) * nbuf);
    world->allgather_f32(world, mine, nbuf, both);
    before = n_differ(both, both + nbuf, nbuf);
    for (i = 0; i < nbuf; i++) expect[i] = (float)(((double)both[i] + (double)both[nbuf + i]) / 2.0);
    /* a checkpoint (rank 0 writes) must hold the average, and every rank too */
    if (rank_ == 0) remove(DIR "/ref_bn.safetensors");
    if (mama__dp_checkpoint_save(DIR "/ref_bn.safetensors", m, NULL, 1, 11, NAN, 0, NULL) != MAMA_OK) {
        report(0, "dp_reference_bn_average", "checkpoint: %s", mama_last_error());
        goto done;
    }
    after = n_differ(mama_model_params(m) + off, expect, nbuf);
    if (mama_st_open(&st, DIR "/ref_bn.safetensors") != MAMA_OK) ok = 0;
    for (p = 0; ok && p < mama_model_param_count(m); p++) {
        const mama_param_info *pi = mama_model_param(m, p);
        if (pi->group != MAMA_GROUP_BUFFER) continue;
        if (mama_st_read_f32(&st, pi->name, t, pi->numel) != MAMA_OK) { ok = 0; break; }
        file_diff += n_differ(t, expect + (pi->offset - off), pi->numel);
        file_n += pi->numel;
    }
    mama_st_close(&st);
    report(ok && before > 0 && after == 0 && file_n == nbuf && file_diff == 0, "dp_reference_bn_average",
           "reference mode, one step per rank on its own half: the ranks' %zu BatchNorm running statistics differ in "
           "%zu values; after the checkpoint save %zu of them differ from the mean over the ranks (computed here) on "
           "this rank, %zu of %zu in the checkpoint file", nbuf, before, after, file_diff, file_n);
    /* pretraining in the reference mode ends with the same statistics on
     * every rank, the ones in the final checkpoint */
    memset(&ex, 0, sizeof ex);
    ex.mode = MAMA_DP_REFERENCE;
    ex.keep = &kept;
    if (rank_ == 0) remove(DIR "/ref_mode.safetensors");
    world->barrier(world);
    if (pretrain2(d, 1, NB, DIR "/ref_mode.safetensors", NULL, 0, 0, NULL, &ex) != MAMA_OK || !kept) {
        report(0, "dp_reference_bn_pretrain", "%s", mama_last_error());
        goto done;
    }
    memcpy(mine, mama_model_params(kept) + off, sizeof(float) * nbuf);
    world->allgather_f32(world, mine, nbuf, both);
    before = n_differ(both, both + nbuf, nbuf);
    file_diff = file_n = 0;
    ok = mama_st_open(&st, DIR "/ref_mode.safetensors") == MAMA_OK;
    for (p = 0; ok && p < mama_model_param_count(kept); p++) {
        const mama_param_info *pi = mama_model_param(kept, p);
        if (pi->group != MAMA_GROUP_BUFFER) continue;
        if (mama_st_read_f32(&st, pi->name, t, pi->numel) != MAMA_OK) { ok = 0; break; }
        for (j = 0; j < pi->numel; j++) file_diff += memcmp(t + j, mine + (pi->offset - off) + j, sizeof(float)) != 0;
        file_n += pi->numel;
    }
    mama_st_close(&st);
    report(ok && before == 0 && file_n == nbuf && file_diff == 0, "dp_reference_bn_pretrain",
           "%d pretraining steps in the reference mode: the ranks' %zu BatchNorm running statistics differ in %zu "
           "values at the end; the final checkpoint differs from them in %zu of %zu", STEPS, nbuf, before, file_diff,
           file_n);
done:
    free(img); free(ext); free(ids); free(mask); free(mine); free(both); free(expect); free(t);
    mama_model_free(m);
    mama_model_free(kept);
}

/* ---- probe features and fine-tuning ------------------------------------ */
static void test_eval(mama_dataset *d) {
    mama_config c;
    mama_model *one = NULL, *dp = NULL;
    mama_eval_result r1, r2;
    mama_probe_opts po;
    double pa = 0, pr = 0, wa = 0, wr = 0;
    size_t nv;
    config(&c);
    memset(&r1, 0, sizeof r1); memset(&r2, 0, sizeof r2);
    if (mama_model_create(&one, &c, CPU, 2 * NB, 9) != MAMA_OK ||
        mama_model_create(&dp, &c, CPU, NB, 9) != MAMA_OK ||
        mama_model_set_comm(dp, world, MAMA_DP_GLOBAL) != MAMA_OK) {
        report(0, "dp_finetune", "%s", mama_last_error());
        goto done;
    }
    mama_probe_opts_default(&po);
    po.steps = 3; po.warmup = 1; po.lr = 1e-2f; po.quiet = 1;
    /* linear probe: augmented features extracted sharded, classifier on every rank */
    po.batch = 2 * NB;
    if (mama_linear_probe(one, d, MAMA_ZEROSHOT_DENSITY, &po, MAMA_SPLIT_TEST, &r1) != MAMA_OK ||
        mama_linear_probe(dp, d, MAMA_ZEROSHOT_DENSITY, &po, MAMA_SPLIT_TEST, &r2) != MAMA_OK) {
        report(0, "dp_probe", "%s", mama_last_error());
        goto done;
    }
    diff(r2.probs, r1.probs, (size_t)r1.n * r1.K, 1e-3, &pa, &pr);
    report(r1.n == r2.n && pr < 1e-4, "dp_probe", "linear probe (features of %d test images sharded over 2 ranks): "
           "class probabilities worst abs %.2e rel %.2e", r1.n, pa, pr);
    mama_eval_result_free(&r1); mama_eval_result_free(&r2);
    /* fine-tuning: global batch 2B as 2 ranks x NB, gradient all-reduce */
    po.batch = 2 * NB;
    if (mama_finetune(one, d, MAMA_ZEROSHOT_DENSITY, &po, MAMA_SPLIT_TEST, &r1) != MAMA_OK) { report(0, "dp_finetune", "%s", mama_last_error()); goto done; }
    po.batch = NB;
    if (mama_finetune(dp, d, MAMA_ZEROSHOT_DENSITY, &po, MAMA_SPLIT_TEST, &r2) != MAMA_OK) { report(0, "dp_finetune", "%s", mama_last_error()); goto done; }
    pa = pr = 0;
    diff(r2.probs, r1.probs, (size_t)r1.n * r1.K, 1e-3, &pa, &pr);
    nv = mama_model_find_param(one, "img_encoder_q.global_embed.weight")->offset;
    diff(mama_model_params(dp), mama_model_params(one), nv, 1e-2, &wa, &wr);
    report(pr < 1e-3 && wa < 1e-4, "dp_finetune", "%ld SGD steps, 2 ranks x %d vs 1 x %d: vision weights (%zu) worst abs "
           "%.2e rel %.2e; test probabilities worst abs %.2e", po.steps, NB, 2 * NB, nv, wa, wr, pa);
done:
    mama_eval_result_free(&r1); mama_eval_result_free(&r2);
    mama_model_free(one);
    mama_model_free(dp);
}

static int test_main(void) {
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    mama_config c;
    float ok = 1;
    if (mama_comm_mpi_create(&world) != MAMA_OK) { printf("FAIL mpi: %s\n", mama_last_error()); return 1; }
    rank_ = world->rank;
    if (world->size != 2) {
        if (rank_ == 0) printf("FAIL test_mpi: needs exactly 2 ranks (mpirun -np 2), got %d\n", world->size);
        mama_comm_free(world);
        return 1;
    }
    if (rank_ == 0) {
        mkdir("build", 0755);
        if (mama_synth_write(DIR, 12, 64, 3, 1) != MAMA_OK) { printf("FAIL synth: %s\n", mama_last_error()); ok = 0; }
    }
    world->broadcast_f32(world, &ok, 1, 0);
    if (!ok) { mama_comm_free(world); return 1; }
    config(&c);
    mama_dataset_opts_default(&o);
    o.manifest = DIR "/manifest.csv";
    o.tokenizer = "weights/tiny_vocab";
    if (mama_dataset_create(&d, &o, &c) != MAMA_OK) { printf("FAIL dataset: %s\n", mama_last_error()); mama_comm_free(world); return 1; }
    test_step(d);
    test_overlap_step(d);
    test_pretrain(d);
    test_reference_bn(d);
    test_eval(d);
    mama_dataset_free(d);
    mama_comm_free(world);
    return rank_ == 0 ? test_finish() : 0;
}

int main(void) { return test_with_cpu_backend(&CPU, test_main); }
