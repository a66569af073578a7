/* tests/test_opts.c - the options convention of mama.h section 1:
 * - a zero options struct (and a NULL pointer) resolves to the documented
 *   defaults, the MAMA_<STRUCT>_DEFAULT_* macros, for every options struct,
 *   and mama_*_opts_default returns exactly that;
 * - MAMA_OFF (any negative value) means zero / off, a given value is kept,
 *   and resolving a resolved struct changes nothing;
 * - bad values are MAMA_ERR_INVALID, never a crash;
 * - a zero mama_pretrain_opts trains: two steps of a small `tiny` model with
 *   all four losses on (only steps, batch and late_loss = MAMA_OFF set);
 * - every field of every options struct reaches the code it names (issue 15
 *   item 5): changed alone from a base setting, its documented effect is
 *   seen (mama_augment_opts: the pipeline's output; mama_decode_opts: hand
 *   values; mama_dataset_opts: splits, skips, errors, images; mama_step_opts:
 *   losses and gradients; mama_eval_opts: zero-shot items and probabilities;
 *   mama_probe_opts: the trained classifier, the evaluated set, the selected
 *   step, stderr, for the probe and fine-tuning; mama_pretrain_opts: the
 *   weights after the run, steps done, files written, stderr, errors).
 * Everything runs on one thread (the same bits as on several) to stay
 * short on a shared machine. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "test_util.h"

static mama_backend *g_cpu; /* the CPU backend of every test here */
#include <stdlib.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#define DIR "build/test_opts_data"

static void test_augment(void) {
    mama_augment_opts z, o, d, r;
    int ok;
    memset(&z, 0, sizeof z);
    ok = mama__augment_opts_resolve(&z, &o) == MAMA_OK;
    mama_augment_opts_default(&d);
    ok = ok && o.size == MAMA_AUGMENT_DEFAULT_SIZE && o.rrc == 1 &&
         o.rrc_scale[0] == MAMA_AUGMENT_DEFAULT_RRC_SCALE0 && o.rrc_scale[1] == MAMA_AUGMENT_DEFAULT_RRC_SCALE1 &&
         o.rrc_ratio[0] == MAMA_AUGMENT_DEFAULT_RRC_RATIO0 && o.rrc_ratio[1] == MAMA_AUGMENT_DEFAULT_RRC_RATIO1 &&
         o.rrc_attempts == MAMA_AUGMENT_DEFAULT_RRC_ATTEMPTS && o.hflip_p == MAMA_AUGMENT_DEFAULT_FLIP_P &&
         o.vflip_p == MAMA_AUGMENT_DEFAULT_FLIP_P && o.jitter == 1 && o.jitter_p == MAMA_AUGMENT_DEFAULT_JITTER_P &&
         o.brightness[0] == MAMA_AUGMENT_DEFAULT_BRIGHTNESS0 && o.brightness[1] == MAMA_AUGMENT_DEFAULT_BRIGHTNESS1 &&
         o.contrast[0] == MAMA_AUGMENT_DEFAULT_CONTRAST0 && o.contrast[1] == MAMA_AUGMENT_DEFAULT_CONTRAST1 &&
         o.jitter_random_order == 1 && o.blur == 1 && o.blur_p == MAMA_AUGMENT_DEFAULT_BLUR_P &&
         o.blur_kernel == MAMA_AUGMENT_DEFAULT_BLUR_KERNEL && o.blur_sigma[0] == MAMA_AUGMENT_DEFAULT_BLUR_SIGMA0 &&
         o.blur_sigma[1] == MAMA_AUGMENT_DEFAULT_BLUR_SIGMA1 && o.mean == MAMA_AUGMENT_DEFAULT_MEAN &&
         o.std == MAMA_AUGMENT_DEFAULT_STD && !memcmp(&o, &d, sizeof o);
    test_report(ok, "augment_zero_is_default", "zero struct -> every MAMA_AUGMENT_DEFAULT_*; == mama_augment_opts_default");
    /* the A.5 values themselves (one check of the macros against the paper) */
    ok = d.size == 518 && d.rrc_scale[0] == 0.1f && d.rrc_ratio[1] == 4.0f / 3.0f && d.hflip_p == 0.5f &&
         d.jitter_p == 0.8f && d.brightness[0] == 0.2f && d.contrast[1] == 1.8f && d.blur_p == 0.4f &&
         d.blur_kernel == 7 && d.blur_sigma[1] == 2.0f && d.mean == 0.5f && d.std == 0.5f && d.rrc_attempts == 10;
    test_report(ok, "augment_defaults_are_spec", "SPEC A.5: 518, (0.1,1), (3/4,4/3), .5, .8 [.2,1.8], .4 k7 [.1,2]");
    ok = mama__augment_opts_resolve(&d, &r) == MAMA_OK && !memcmp(&r, &d, sizeof r);
    test_report(ok, "augment_resolve_idempotent", "resolve(default) == default");
    z.rrc = MAMA_OFF; z.hflip_p = MAMA_OFF; z.vflip_p = -0.5f; z.jitter = MAMA_OFF; z.blur = MAMA_OFF;
    z.jitter_random_order = MAMA_OFF; z.rrc_attempts = MAMA_OFF; z.mean = MAMA_OFF; z.size = 64; z.blur_p = 0.25f;
    ok = mama__augment_opts_resolve(&z, &o) == MAMA_OK && o.rrc == 0 && o.hflip_p == 0 && o.vflip_p == 0 &&
         o.jitter == 0 && o.blur == 0 && o.jitter_random_order == 0 && o.rrc_attempts == 0 && o.mean == 0 &&
         o.size == 64 && o.blur_p == 0.25f && o.jitter_p == MAMA_AUGMENT_DEFAULT_JITTER_P;
    test_report(ok, "augment_off_and_values", "MAMA_OFF / negative -> 0, given values kept, the rest defaults");
    memset(&z, 0, sizeof z); z.blur_kernel = 4;
    ok = mama__augment_opts_resolve(&z, &o) == MAMA_ERR_INVALID;
    memset(&z, 0, sizeof z); z.hflip_p = 1.5f;
    ok = ok && mama__augment_opts_resolve(&z, &o) == MAMA_ERR_INVALID;
    memset(&z, 0, sizeof z); z.std = MAMA_OFF;
    ok = ok && mama__augment_opts_resolve(&z, &o) == MAMA_ERR_INVALID;
    memset(&z, 0, sizeof z); z.rrc_scale[0] = 0.9f; z.rrc_scale[1] = 0.5f;
    ok = ok && mama__augment_opts_resolve(&z, &o) == MAMA_ERR_INVALID;
    test_report(ok, "augment_bad_values", "even kernel, p > 1, std 0, scale lo > hi: MAMA_ERR_INVALID");
    {   /* NULL options: the defaults (here at S = 518 on a small image) */
        mama_image im = {0, 0, NULL};
        float *px = (float *)malloc(sizeof(float) * 518 * 518);
        mama_rng rng;
        int i;
        mama_rng_seed(&rng, 3);
        ok = px && mama_image_alloc(&im, 40, 30) == MAMA_OK;
        for (i = 0; ok && i < 40 * 30; i++) im.pix[i] = (uint8_t)(i % 40 > 8 ? 140 : 2);
        ok = ok && mama_image_pipeline(&im, NULL, 1, &rng, 1, px) == MAMA_OK;
        test_report(ok, "augment_null_opts", "mama_image_pipeline(train) with o = NULL");
        mama_image_free(&im);
        free(px);
    }
}

static void test_step(void) {
    mama_step_opts z, o, d, r;
    int ok;
    memset(&z, 0, sizeof z);
    ok = mama__step_opts_resolve(&z, &o) == MAMA_OK;
    mama_step_opts_default(&d);
    ok = ok && o.late == 0 && o.use_mv == 1 && o.use_sym == 1 && o.use_sla == 1 && o.train == 1 && o.dropout == 1 &&
         o.seed == 0 && !memcmp(&o, &d, sizeof o);
    test_report(ok, "step_zero_is_default", "late off, use_mv/sym/sla on, train on, dropout on, seed 0");
    ok = mama__step_opts_resolve(NULL, &r) == MAMA_OK && !memcmp(&r, &d, sizeof r) &&
         mama__step_opts_resolve(&d, &r) == MAMA_OK && !memcmp(&r, &d, sizeof r);
    test_report(ok, "step_null_and_idempotent", "NULL -> defaults; resolve(default) == default");
    z.late = 1; z.use_mv = MAMA_OFF; z.use_sym = 7; z.use_sla = MAMA_OFF; z.train = MAMA_OFF; z.dropout = MAMA_OFF;
    z.seed = 99;
    ok = mama__step_opts_resolve(&z, &o) == MAMA_OK && o.late == 1 && o.use_mv == 0 && o.use_sym == 1 &&
         o.use_sla == 0 && o.train == 0 && o.dropout == 0 && o.seed == 99;
    test_report(ok, "step_off_and_values", "MAMA_OFF -> 0, positive -> 1, seed kept");
}

static void test_dataset_opts(void) {
    mama_dataset_opts z, o, d;
    int ok;
    memset(&z, 0, sizeof z);
    ok = mama__dataset_opts_resolve(&z, &o) == MAMA_OK;
    mama_dataset_opts_default(&d);
    ok = ok && o.manifest == NULL && o.tokenizer == NULL && o.skip_bad_rows == 0 && o.cache == 1 && o.only_2d == 1 &&
         !memcmp(&o, &d, sizeof o);
    test_report(ok, "dataset_zero_is_default", "no manifest/tokenizer, skip_bad_rows off, cache on, only_2d on");
    z.manifest = "m.csv"; z.skip_bad_rows = 1; z.cache = MAMA_OFF; z.only_2d = MAMA_OFF;
    ok = mama__dataset_opts_resolve(&z, &o) == MAMA_OK && !strcmp(o.manifest, "m.csv") && o.skip_bad_rows == 1 &&
         o.cache == 0 && o.only_2d == 0;
    test_report(ok, "dataset_off_and_values", "MAMA_OFF turns cache and only_2d off");
}

static void test_probe(void) {
    mama_probe_opts z, o, d, r;
    int ok;
    memset(&z, 0, sizeof z);
    ok = mama__probe_opts_resolve(&z, &o) == MAMA_OK;
    mama_probe_opts_default(&d);
    ok = ok && o.steps == MAMA_PROBE_DEFAULT_STEPS && o.batch == MAMA_PROBE_DEFAULT_BATCH &&
         o.lr == MAMA_PROBE_DEFAULT_LR && o.lr_floor == MAMA_PROBE_DEFAULT_LR_FLOOR &&
         o.warmup == MAMA_PROBE_DEFAULT_WARMUP && o.momentum == MAMA_PROBE_DEFAULT_MOMENTUM &&
         o.weight_decay == MAMA_PROBE_DEFAULT_WEIGHT_DECAY && o.augment == 1 && o.seed == MAMA_PROBE_DEFAULT_SEED && o.quiet == 0 &&
         !memcmp(&o, &d, sizeof o);
    test_report(ok, "probe_zero_is_default", "zero struct -> every MAMA_PROBE_DEFAULT_*; == mama_probe_opts_default");
    ok = d.steps == 8000 && d.batch == 72 && d.lr == 5e-4f && d.lr_floor == 1e-5f && d.warmup == 100 &&
         d.momentum == 0.9f && d.weight_decay == 1e-3f;
    test_report(ok, "probe_defaults_are_spec", "SPEC A.7: 8000 steps, batch 72 (36 x 2 GPUs), lr 5e-4 -> 1e-5, warm-up 100, "
                "momentum 0.9, wd 1e-3");
    ok = mama__probe_opts_resolve(&d, &r) == MAMA_OK && !memcmp(&r, &d, sizeof r);
    test_report(ok, "probe_resolve_idempotent", "resolve(default) == default");
    z.warmup = MAMA_OFF; z.momentum = MAMA_OFF; z.weight_decay = MAMA_OFF; z.lr_floor = MAMA_OFF;
    z.augment = MAMA_OFF; z.steps = 5; z.seed = 4;
    ok = mama__probe_opts_resolve(&z, &o) == MAMA_OK && o.warmup == 0 && o.momentum == 0 && o.weight_decay == 0 &&
         o.lr_floor == 0 && o.augment == 0 && o.steps == 5 && o.seed == 4 && o.batch == MAMA_PROBE_DEFAULT_BATCH;
    test_report(ok, "probe_off_and_values", "MAMA_OFF -> 0 for warmup, momentum, weight_decay, lr_floor, augment");
    memset(&z, 0, sizeof z); z.steps = MAMA_OFF;
    test_report(mama__probe_opts_resolve(&z, &o) == MAMA_ERR_INVALID, "probe_bad_values", "steps MAMA_OFF (0 steps) "
                "is MAMA_ERR_INVALID");
}

static int pretrain_is_default(const mama_pretrain_opts *o) {
    mama_augment_opts a;
    memset(&a, 0, sizeof a); /* the zero aug stays: the dataset's (mama_dataset_opts.aug) */
    return o->steps == MAMA_PRETRAIN_DEFAULT_STEPS && o->stop_at == 0 && o->batch == MAMA_PRETRAIN_DEFAULT_BATCH &&
           o->accum == MAMA_PRETRAIN_DEFAULT_ACCUM && o->lr == MAMA_PRETRAIN_DEFAULT_LR &&
           o->lr_floor == MAMA_PRETRAIN_DEFAULT_LR_FLOOR && o->warmup == MAMA_PRETRAIN_DEFAULT_WARMUP &&
           o->weight_decay == MAMA_PRETRAIN_DEFAULT_WEIGHT_DECAY && o->late_loss == MAMA_PRETRAIN_DEFAULT_LATE_LOSS &&
           o->use_mv == 1 && o->use_sym == 1 && o->use_sla == 1 &&
           o->ext_other_view_p == MAMA_PRETRAIN_DEFAULT_EXT_OTHER_VIEW_P &&
           o->caption_mask_p == MAMA_PRETRAIN_DEFAULT_CAPTION_MASK_P && o->clip_grad == 0 && o->seed == MAMA_PRETRAIN_DEFAULT_SEED &&
           o->max_bad_steps == MAMA_PRETRAIN_DEFAULT_MAX_BAD_STEPS && o->checkpoint == NULL &&
           o->checkpoint_every == 0 && o->log_csv == NULL && o->resume == 0 && o->quiet == 0 && o->no_overlap == 0 &&
           !memcmp(&o->aug, &a, sizeof a);
}

static void test_pretrain_opts(void) {
    mama_pretrain_opts z, o, d, r;
    int ok;
    memset(&z, 0, sizeof z);
    ok = mama__pretrain_opts_resolve(&z, &o, 0) == MAMA_OK && pretrain_is_default(&o);
    mama_pretrain_opts_default(&d);
    ok = ok && pretrain_is_default(&d) && !memcmp(&o, &d, sizeof o);
    test_report(ok, "pretrain_zero_is_default", "zero struct -> every MAMA_PRETRAIN_DEFAULT_*, aug the zero struct "
                "(the dataset's); == mama_pretrain_opts_default");
    ok = d.steps == 40000 && d.batch == 36 && d.accum == 2 && d.lr == 4e-5f && d.lr_floor == 1e-8f &&
         d.warmup == 4000 && d.weight_decay == 0.1f && d.late_loss == 8000 && d.ext_other_view_p == 0.5f &&
         d.caption_mask_p == 0.8f;
    test_report(ok, "pretrain_defaults_are_spec", "SPEC A.5: 40000 steps, 36 x 2, lr 4e-5 -> 1e-8, warm-up 4000, "
                "wd 0.1, late 8000, ext .5, mask .8");
    ok = mama__pretrain_opts_resolve(&d, &r, 0) == MAMA_OK && !memcmp(&r, &d, sizeof r);
    test_report(ok, "pretrain_resolve_idempotent", "resolve(default) == default");
    z.aug.blur_p = 0.5f;
    ok = mama__pretrain_opts_resolve(&z, &o, 112) == MAMA_OK && o.aug.size == 112 && o.aug.blur_p == 0.5f &&
         o.aug.jitter_p == MAMA_AUGMENT_DEFAULT_JITTER_P;
    test_report(ok, "pretrain_aug_size_from_model", "a non-zero aug is resolved: aug.size 0 -> the model's image_size "
                "(112), the rest the defaults");
    memset(&z.aug, 0, sizeof z.aug);
    z.warmup = MAMA_OFF; z.late_loss = MAMA_OFF; z.lr_floor = MAMA_OFF; z.weight_decay = MAMA_OFF;
    z.caption_mask_p = MAMA_OFF; z.ext_other_view_p = MAMA_OFF; z.use_sym = MAMA_OFF; z.max_bad_steps = MAMA_OFF;
    z.clip_grad = MAMA_OFF; z.steps = 3; z.seed = 8; z.aug.hflip_p = MAMA_OFF;
    ok = mama__pretrain_opts_resolve(&z, &o, 112) == MAMA_OK && o.warmup == 0 && o.late_loss == 0 &&
         o.lr_floor == 0 && o.weight_decay == 0 && o.caption_mask_p == 0 && o.ext_other_view_p == 0 &&
         o.use_sym == 0 && o.use_mv == 1 && o.max_bad_steps == 0 && o.clip_grad == 0 && o.steps == 3 &&
         o.seed == 8 && o.aug.hflip_p == 0 && o.aug.vflip_p == MAMA_AUGMENT_DEFAULT_FLIP_P &&
         o.batch == MAMA_PRETRAIN_DEFAULT_BATCH;
    test_report(ok, "pretrain_off_and_values", "MAMA_OFF -> 0 / off (warmup, late_loss, lr_floor, wd, mask, ext, "
                "use_sym, max_bad_steps, clip, aug.hflip_p); given values kept");
    memset(&z, 0, sizeof z); z.caption_mask_p = 2;
    ok = mama__pretrain_opts_resolve(&z, &o, 112) == MAMA_ERR_INVALID;
    memset(&z, 0, sizeof z); z.aug.size = 224;
    ok = ok && mama__pretrain_opts_resolve(&z, &o, 112) == MAMA_ERR_INVALID;
    memset(&z, 0, sizeof z); z.accum = MAMA_OFF;
    ok = ok && mama__pretrain_opts_resolve(&z, &o, 112) == MAMA_ERR_INVALID;
    test_report(ok, "pretrain_bad_values", "mask p 2, aug.size != the model's, accum 0: MAMA_ERR_INVALID");
}

/* A zero mama_pretrain_opts trains: only what a test must change (a short
 * run of a small batch, the late losses from step 0). */
static void test_pretrain_zero_trains(void) {
    mama_dataset *d = NULL;
    mama_dataset_opts dopt = {0};
    mama_pretrain_opts o = {0};
    mama_pretrain_opts ro;
    mama_pretrain_result res;
    mama_config c;
    mama_model *m = NULL;
    mama_status s;
    int ok;
    mkdir("build", 0755);
    if (mama_synth_write(DIR, 6, 96, 5, 1) != MAMA_OK) {
        test_report(0, "pretrain_zero_trains", "synth: %s", mama_last_error());
        return;
    }
    mama_config_preset(&c, "tiny");
    c.vision_depth = 1; c.text_depth = 1; /* quick; the same code paths */
    dopt.manifest = DIR "/manifest.csv";
    dopt.tokenizer = "weights/tiny_vocab";
    o.steps = 2;
    o.batch = 2;
    o.late_loss = MAMA_OFF; /* all four losses from step 0 */
    o.quiet = 1;
    ok = mama__pretrain_opts_resolve(&o, &ro, c.image_size) == MAMA_OK && ro.use_mv == 1 && ro.use_sym == 1 &&
         ro.use_sla == 1 && ro.late_loss == 0 && ro.accum == MAMA_PRETRAIN_DEFAULT_ACCUM &&
         ro.lr == MAMA_PRETRAIN_DEFAULT_LR && ro.caption_mask_p == MAMA_PRETRAIN_DEFAULT_CAPTION_MASK_P;
    test_report(ok, "pretrain_zero_resolved", "use_mv/sym/sla 1, late_loss 0, accum/lr/mask the defaults");
    if ((s = mama_model_create(&m, &c, g_cpu, o.batch, 1)) != MAMA_OK ||
        (s = mama_dataset_create(&d, &dopt, &c)) != MAMA_OK) {
        test_report(0, "pretrain_zero_trains", "setup: %s", mama_last_error());
        mama_model_free(m);
        return;
    }
    memset(&res, 0, sizeof res);
    s = mama_pretrain(m, d, &o, &res);
    ok = s == MAMA_OK && res.steps_done == 2 && res.skipped_steps == 0 && res.last.clip > 0 && res.last.mv > 0 &&
         res.last.sym > 0 && res.last.sla > 0 && isfinite(res.last.loss);
    test_report(ok, "pretrain_zero_trains", "%s; 2 steps, last losses clip %.4f mv %.4f sym %.4f sla %.4f (all > 0)",
                s == MAMA_OK ? "ok" : mama_last_error(), res.last.clip, res.last.mv, res.last.sym, res.last.sla);
    /* NULL options are the zero struct: 40000 steps of 36, which must not fit a max_batch 2 model */
    s = mama_pretrain(m, d, NULL, NULL);
    test_report(s == MAMA_ERR_INVALID, "pretrain_null_opts_resolved", "NULL -> default batch 36 > max_batch 2: "
                "MAMA_ERR_INVALID (%s)", mama_last_error());
    mama_dataset_free(d);
    mama_model_free(m);
}

/* The schedule follows steps (issue 16 item 5): warm-up 10% and late-loss
 * start 20% of the steps unless given (by hand: 600 -> 60 and 120, 7 -> 0
 * and 1, 40000 -> 4000 and 8000); a warm-up or late-loss start at or past
 * the last step is refused, naming the field. */
static void test_pretrain_schedule(void) {
    mama_pretrain_opts z, o;
    mama_status s1, s2;
    int ok;
    memset(&z, 0, sizeof z); z.steps = 600;
    ok = mama__pretrain_opts_resolve(&z, &o, 0) == MAMA_OK && o.warmup == 60 && o.late_loss == 120;
    printf("  steps 600 -> warmup %ld, late_loss %ld\n", o.warmup, o.late_loss);
    z.steps = 7;
    ok = ok && mama__pretrain_opts_resolve(&z, &o, 0) == MAMA_OK && o.warmup == 0 && o.late_loss == 1;
    printf("  steps 7 -> warmup %ld, late_loss %ld\n", o.warmup, o.late_loss);
    memset(&z, 0, sizeof z);
    ok = ok && mama__pretrain_opts_resolve(&z, &o, 0) == MAMA_OK && o.warmup == 4000 && o.late_loss == 8000;
    z.steps = 600; z.warmup = 5; z.late_loss = MAMA_OFF;
    ok = ok && mama__pretrain_opts_resolve(&z, &o, 0) == MAMA_OK && o.warmup == 5 && o.late_loss == 0;
    test_report(ok, "pretrain_schedule_follows_steps", "warm-up 10%% and late-loss 20%% of steps (600: 60/120, 7: 0/1, "
                "default: 4000/8000); given values kept");
    memset(&z, 0, sizeof z); z.steps = 600; z.warmup = 600;
    s1 = mama__pretrain_opts_resolve(&z, &o, 0);
    ok = s1 == MAMA_ERR_INVALID && strstr(mama_last_error(), "warmup 600") != NULL;
    printf("  %s\n", mama_last_error());
    z.warmup = 0; z.late_loss = 8000;
    s2 = mama__pretrain_opts_resolve(&z, &o, 0);
    ok = ok && s2 == MAMA_ERR_INVALID && strstr(mama_last_error(), "late_loss 8000") != NULL;
    printf("  %s\n", mama_last_error());
    z.late_loss = 599;
    ok = ok && mama__pretrain_opts_resolve(&z, &o, 0) == MAMA_OK;
    test_report(ok, "pretrain_schedule_past_end", "warmup 600 / late_loss 8000 of 600 steps: MAMA_ERR_INVALID naming "
                "the field; late_loss 599 accepted");
}

/* Every field of mama_augment_opts reaches the augmentation: the same
 * image and random stream, the field changed, another output. */
static void test_augment_fields(void) {
    static const char *const names[] = {"size", "rrc", "rrc_scale", "rrc_ratio", "rrc_attempts", "hflip_p",
                                        "vflip_p", "jitter", "jitter_p", "brightness", "contrast",
                                        "jitter_random_order", "blur", "blur_p", "blur_kernel", "blur_sigma",
                                        "mean", "std"};
    const int nf = (int)(sizeof names / sizeof names[0]), S = 48;
    mama_image src = {0, 0, NULL};
    float *t0 = (float *)malloc(sizeof(float) * 64 * 64), *t1 = (float *)malloc(sizeof(float) * 64 * 64);
    int k, i, seen = 0, ok = t0 && t1 && mama_image_alloc(&src, 60, 80) == MAMA_OK;
    char missed[256] = "";
    for (i = 0; ok && i < 60 * 80; i++) src.pix[i] = (uint8_t)((i % 60) * 3 + (i / 60) + (i * 7919 % 23) * 2);
    for (k = 0; ok && k < nf; k++) {
        /* a base where every step is possible and deterministic enough to show a change */
        mama_augment_opts b, c;
        mama_rng r0, r1;
        int diff = 0;
        memset(&b, 0, sizeof b);
        b.size = S; b.hflip_p = 0.5f; b.vflip_p = 0.5f; b.jitter_p = 1; b.blur_p = 1;
        b.jitter_random_order = MAMA_OFF;
        c = b;
        switch (k) {
        case 0: c.size = S - 8; break;
        case 1: c.rrc = MAMA_OFF; break;
        case 2: c.rrc_scale[0] = 0.9f; break;
        case 3: c.rrc_ratio[0] = 0.3f; c.rrc_ratio[1] = 0.31f; break;
        case 4: b.rrc_scale[0] = c.rrc_scale[0] = 1; b.rrc_scale[1] = c.rrc_scale[1] = 1; c.rrc_attempts = MAMA_OFF;
                b.rrc_ratio[0] = c.rrc_ratio[0] = 0.5f; b.rrc_ratio[1] = c.rrc_ratio[1] = 0.9f; break;
        case 5: c.hflip_p = 1; b.hflip_p = MAMA_OFF; break;
        case 6: c.vflip_p = 1; b.vflip_p = MAMA_OFF; break;
        case 7: c.jitter = MAMA_OFF; break;
        case 8: c.jitter_p = MAMA_OFF; break;
        case 9: c.brightness[0] = c.brightness[1] = 0.5f; break;
        case 10: c.contrast[0] = c.contrast[1] = 0.3f; break;
        case 11: c.jitter_random_order = 1; b.brightness[0] = b.brightness[1] = c.brightness[0] = c.brightness[1] = 1.7f;
                 b.contrast[0] = b.contrast[1] = c.contrast[0] = c.contrast[1] = 0.4f; break;
        case 12: c.blur = MAMA_OFF; break;
        case 13: c.blur_p = MAMA_OFF; break;
        case 14: c.blur_kernel = 3; break;
        case 15: c.blur_sigma[0] = c.blur_sigma[1] = 0.2f; break;
        case 16: c.mean = 0.25f; break;
        case 17: c.std = 0.25f; break;
        }
        /* jitter_random_order is a coin: try a few streams */
        for (i = 0; i < 8 && !diff; i++) {
            int j, n;
            mama_rng_seed(&r0, 11 + (uint64_t)i);
            mama_rng_seed(&r1, 11 + (uint64_t)i);
            ok = mama_image_pipeline(&src, &b, 1, &r0, 1, t0) == MAMA_OK && mama_image_pipeline(&src, &c, 1, &r1, 1, t1) == MAMA_OK;
            n = (k == 0 ? S - 8 : S) * (k == 0 ? S - 8 : S);
            for (j = 0; ok && j < n; j++) diff += t0[j] != t1[j];
            if (k == 0) diff = ok; /* another size is another output by construction; pipeline accepted it */
        }
        if (diff) seen++;
        else if (strlen(missed) < 200) { strcat(missed, " "); strcat(missed, names[k]); }
    }
    test_report(ok && seen == nf, "augment_every_field_used", "%d of %d fields of mama_augment_opts change the "
                "pipeline's output%s%s", seen, nf, missed[0] ? "; no effect:" : "", missed);
    mama_image_free(&src);
    free(t0);
    free(t1);
}

/* The named sets: light = crop scale (0.5, 1) + flips, none = no random
 * step (the training pipeline equals the evaluation one), config names map
 * to their set, another name is an error. */
static void test_augment_presets(void) {
    mama_augment_opts a, r, t, d;
    mama_image src = {0, 0, NULL};
    float *e = (float *)malloc(sizeof(float) * 40 * 40), *x = (float *)malloc(sizeof(float) * 40 * 40);
    mama_rng rng;
    int ok, i, same = 1;
    ok = mama_augment_preset(&a, "light") == MAMA_OK && mama__augment_opts_resolve(&a, &r) == MAMA_OK &&
         r.rrc == 1 && r.rrc_scale[0] == 0.5f && r.rrc_scale[1] == 1 && r.hflip_p == 0.5f && r.vflip_p == 0.5f &&
         r.jitter == 0 && r.blur == 0;
    ok = ok && mama_augment_preset(&t, "tiny") == MAMA_OK && !memcmp(&t, &a, sizeof a) &&
         mama_augment_preset(&t, "small") == MAMA_OK && !memcmp(&t, &a, sizeof a);
    memset(&d, 0, sizeof d);
    ok = ok && mama_augment_preset(&t, "paper") == MAMA_OK && !memcmp(&t, &d, sizeof d) &&
         mama_augment_preset(&t, "base") == MAMA_OK && !memcmp(&t, &d, sizeof d);
    ok = ok && mama_augment_preset(&t, "heavy") == MAMA_ERR_INVALID && strstr(mama_last_error(), "paper, light, none");
    test_report(ok, "augment_presets", "light: scale (0.5, 1), flips .5, no jitter/blur; tiny, small -> light; base, "
                "paper -> the zero struct (SPEC A.5); 'heavy' refused: %s", mama_last_error());
    ok = e && x && mama_augment_preset(&t, "none") == MAMA_OK && mama_image_alloc(&src, 30, 50) == MAMA_OK;
    t.size = 40;
    for (i = 0; ok && i < 30 * 50; i++) src.pix[i] = (uint8_t)(i * 37 % 251);
    mama_rng_seed(&rng, 2);
    ok = ok && mama_image_pipeline(&src, &t, 0, NULL, 1, e) == MAMA_OK && mama_image_pipeline(&src, &t, 1, &rng, 1, x) == MAMA_OK;
    for (i = 0; ok && i < 40 * 40; i++) same &= e[i] == x[i];
    test_report(ok && same, "augment_preset_none", "none: the training pipeline gives the evaluation image exactly");
    mama_image_free(&src);
    free(e);
    free(x);
}

/* mama_decode_opts.max_side reaches the decoder (bit_depth and the window
 * are checked with hand values in test_image.c); runs after the synthetic
 * set of test_pretrain_zero_trains exists. */
static void test_decode_fields(void) {
    const char *png = DIR "/images/p00001_L_CC.png";
    mama_decode_opts o;
    mama_image a = {0, 0, NULL}, b = {0, 0, NULL}, c = {0, 0, NULL};
    int ok;
    memset(&o, 0, sizeof o);
    ok = mama_image_load_opts(png, &o, &a) == MAMA_OK;
    o.max_side = 8;
    ok = ok && mama_image_load_opts(png, &o, &b) == MAMA_ERR_FORMAT && strstr(mama_last_error(), "decode limit of 8 x 8");
    test_report(ok, "decode_max_side_used", "max_side 8 refuses a %d x %d image: %s", a.w, a.h, mama_last_error());
    o.max_side = MAMA_OFF;
    ok = mama_image_load_opts(png, &o, &c) == MAMA_OK && c.w == a.w && c.h == a.h;
    test_report(ok, "decode_max_side_off", "MAMA_OFF: no limit of ours (%d x %d decoded)", c.w, c.h);
    mama_image_free(&a); mama_image_free(&b); mama_image_free(&c);
}

/* mama_dataset_opts and mama_pretrain_opts.aug reach the images: the
 * dataset's aug "none" makes a training image the evaluation image, the
 * default ("paper") does not; the pretraining loader uses the aug it is
 * given; cache on keeps an image whose file is gone, cache off reads it
 * again; only_2d off keeps an FFDM row; no tokenizer, no caption.
 * (skip_bad_rows, keep_incomplete, allow_split_overlap: test_data.c;
 * decode: test_image.c and above.) */
static void test_dataset_fields(void) {
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    mama_pretrain_opts po;
    mama__loader L;
    mama_config c;
    mama_rng rng;
    unsigned char *png = NULL;
    size_t bytes = 0;
    float *e, *x;
    const char *csv = "path,patient,study,image_type,split\ncopy.png,a,s1,2D,train\ncopy.png,b,s2,FFDM,train\n"
                      "copy.png,c,s3,2D,train\n";
    int ok, n, i, same_none = 1, same_paper = 1, same_loader = 1, k;
    size_t px;
    mama_config_preset(&c, "tiny");
    px = (size_t)3 * c.image_size * c.image_size;
    e = (float *)malloc(sizeof(float) * px);
    x = (float *)malloc(sizeof(float) * px);
    ok = e && x && mama_read_file(DIR "/images/p00001_L_CC.png", &png, &bytes) == MAMA_OK &&
         mama_write_file_atomic(DIR "/copy.png", png, bytes) == MAMA_OK &&
         mama_write_file_atomic(DIR "/fields.csv", csv, strlen(csv)) == MAMA_OK;
    memset(&o, 0, sizeof o);
    ok = ok && mama_augment_preset(&o.aug, "none") == MAMA_OK;
    o.manifest = DIR "/fields.csv";
    o.keep_incomplete = 1; /* the rows have no captions: pretrain on them anyway */
    o.tokenizer = "weights/tiny_vocab";
    ok = ok && mama_dataset_create(&d, &o, &c) == MAMA_OK;
    mama_rng_seed(&rng, 4);
    ok = ok && mama_dataset_image(d, 0, 0, NULL, e) == MAMA_OK && mama_dataset_image(d, 0, 1, &rng, x) == MAMA_OK;
    for (i = 0; ok && (size_t)i < px; i++) same_none &= e[i] == x[i];
    n = ok ? mama_dataset_split(d, MAMA_SPLIT_TRAIN, NULL) : -1;
    /* the pretraining loader with its own aug: none -> the evaluation images; paper -> others */
    mama_pretrain_opts_default(&po);
    po.batch = 2;
    for (k = 0; ok && k < 2; k++) {
        ok = mama__pretrain_opts_resolve(&po, &po, c.image_size) == MAMA_OK;
        if (k == 0) ok = ok && mama_augment_preset(&po.aug, "none") == MAMA_OK;
        else memset(&po.aug, 0, sizeof po.aug), po.aug.blur_p = 0.4f; /* the paper's set, non-zero */
        po.aug.size = c.image_size;
        ok = ok && mama__pretrain_opts_resolve(&po, &po, c.image_size) == MAMA_OK &&
             mama__loader_init(&L, d, &po, 0, 0, 0, 1) == MAMA_OK;
        if (!ok) break;
        ok = mama__build_batch(&L, 0, &L.slot[0]) == MAMA_OK;
        for (i = 0; ok && i < 2; i++) {
            uint64_t key;
            int j, rec = mama__loader_record(&L, 0, i, &key), same = 1;
            ok = mama_dataset_image(d, rec, 0, NULL, e) == MAMA_OK;
            for (j = 0; ok && (size_t)j < px; j++) same &= e[j] == L.slot[0].images[px * (size_t)i + (size_t)j];
            if (k == 0) same_loader &= same;
            else same_loader &= !same;
        }
        mama__loader_free(&L);
    }
    mama_dataset_free(d);
    d = NULL;
    /* paper (the zero aug): a training image is not the evaluation image; cache off rereads the file */
    memset(&o, 0, sizeof o);
    o.manifest = DIR "/fields.csv";
    o.only_2d = MAMA_OFF;
    ok = ok && mama_dataset_create(&d, &o, &c) == MAMA_OK;
    ok = ok && mama_dataset_image(d, 0, 0, NULL, e) == MAMA_OK && mama_dataset_image(d, 0, 1, &rng, x) == MAMA_OK;
    for (i = 0; ok && (size_t)i < px; i++) same_paper &= e[i] == x[i];
    test_report(ok && same_none && !same_paper && same_loader, "dataset_aug_used", "%s; dataset aug none: train image "
                "== eval image (%d); paper: differs (%d); loader with pretrain aug none: == eval images, paper: differ "
                "(%d)", ok ? "ok" : mama_last_error(), same_none, !same_paper, same_loader);
    test_report(ok && n == 2 && mama_dataset_split(d, MAMA_SPLIT_TRAIN, NULL) == 3, "dataset_only_2d_used",
                "only_2d: 2 train rows (FFDM out); MAMA_OFF: 3");
    {
        mama_dataset *nc = NULL;
        int ids[256], mask[256], cached, uncached;
        o.cache = MAMA_OFF;
        ok = ok && mama_dataset_create(&nc, &o, &c) == MAMA_OK;
        remove(DIR "/copy.png");
        cached = mama_dataset_image(d, 0, 0, NULL, e) == MAMA_OK;
        uncached = nc ? mama_dataset_image(nc, 0, 0, NULL, e) : MAMA_OK;
        test_report(ok && cached && uncached == MAMA_ERR_IO, "dataset_cache_used", "file removed after creation: "
                    "cache on still gives the image (%d), cache off reads the file again and fails (%s)", cached,
                    mama_status_name((mama_status)uncached));
        test_report(mama_dataset_caption(d, 0, 0, NULL, ids, mask) == MAMA_ERR_INVALID, "dataset_tokenizer_used",
                    "no tokenizer: no caption (%s)", mama_last_error());
        mama_dataset_free(nc);
    }
    mama_dataset_free(d);
    mama_free(png);
    free(e);
    free(x);
}

/* mama_pretrain with a zero aug trains with the dataset's augmentation,
 * resolved once: dataset "none" + zero pretrain aug gives the losses of
 * an explicit pretrain aug "none", and not those of "paper" (a resolved
 * "off" read again as "the default" once made every set the paper's). */
static double pretrain_clip(const char *dataset_set, const char *pretrain_set) {
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    mama_config c;
    mama_pretrain_opts po;
    mama_pretrain_result r;
    mama_model *m = NULL;
    double clip = -1;
    mama_config_preset(&c, "tiny");
    c.vision_depth = 1; c.text_depth = 1;
    memset(&o, 0, sizeof o);
    o.manifest = DIR "/manifest.csv";
    o.tokenizer = "weights/tiny_vocab";
    memset(&po, 0, sizeof po);
    po.steps = 2; po.batch = 4; po.accum = 1; po.quiet = 1; po.val_every = MAMA_OFF; po.late_loss = 1;
    if (mama_augment_preset(&o.aug, dataset_set) == MAMA_OK &&
        (!pretrain_set || mama_augment_preset(&po.aug, pretrain_set) == MAMA_OK) &&
        mama_dataset_create(&d, &o, &c) == MAMA_OK && mama_model_create(&m, &c, g_cpu, 4, 1) == MAMA_OK &&
        mama_pretrain(m, d, &po, &r) == MAMA_OK)
        clip = r.last.clip;
    mama_model_free(m);
    mama_dataset_free(d);
    return clip;
}
static void test_pretrain_dataset_aug(void) {
    double none_ds = pretrain_clip("none", NULL), none_own = pretrain_clip("paper", "none");
    double paper_ds = pretrain_clip("paper", NULL), light_ds = pretrain_clip("light", NULL);
    test_report(none_ds > 0 && none_ds == none_own && none_ds != paper_ds && light_ds != paper_ds && light_ds != none_ds,
                "pretrain_uses_dataset_aug", "last CLIP loss after 2 steps: dataset none %.6f == pretrain aug none "
                "%.6f; dataset paper %.6f, light %.6f (all different)", none_ds, none_own, paper_ds, light_ds);
}

/* ---- Every field of the remaining options structs reaches its code ------
 * (issue 15 item 5).  One small `tiny` model (depth 1), a 16-study
 * synthetic set with a val split, each field changed alone from a base
 * configuration and its documented effect compared. */
#define VDIR "build/test_opts_val"

static void tiny1(mama_config *c) {
    mama_config_preset(c, "tiny");
    c->vision_depth = 1; c->text_depth = 1;
}

/* FNV-1a over the trainable parameters (and the BatchNorm buffers): equal
 * hashes, equal weights. */
static uint64_t params_hash(const mama_model *m) {
    const unsigned char *p = (const unsigned char *)m->params;
    size_t n = sizeof(float) * (m->group_numel[0] + m->group_numel[1] + m->group_numel[2] + m->group_numel[3]), i;
    uint64_t h = 1469598103934665603ull;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
static uint64_t floats_hash(const float *x, size_t n, uint64_t h) {
    const unsigned char *p = (const unsigned char *)x;
    size_t i;
    for (i = 0; i < n * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* stderr of a call into a file: its size after the call (-1: could not redirect) */
static int g_saved_fd = -1;
static void stderr_to(const char *path) {
    int fd;
    fflush(stderr);
    g_saved_fd = dup(2);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { dup2(fd, 2); close(fd); }
}
static long stderr_back(const char *path) {
    struct stat st;
    fflush(stderr);
    if (g_saved_fd >= 0) { dup2(g_saved_fd, 2); close(g_saved_fd); g_saved_fd = -1; }
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static mama_dataset *g_vd; /* the 16-study set (VDIR), tokenizer weights/tiny_vocab */

static int open_val_set(void) {
    mama_dataset_opts o;
    mama_config c;
    int ntr, nva, nte;
    tiny1(&c);
    memset(&o, 0, sizeof o);
    o.manifest = VDIR "/manifest.csv";
    o.tokenizer = "weights/tiny_vocab";
    if (mama_synth_write(VDIR, 16, 96, 3, 1) != MAMA_OK || mama_dataset_create(&g_vd, &o, &c) != MAMA_OK) {
        test_report(0, "opts_val_set", "%s", mama_last_error());
        return 0;
    }
    ntr = mama_dataset_pretrain_split(g_vd, MAMA_SPLIT_TRAIN, NULL);
    nva = mama_dataset_pretrain_split(g_vd, MAMA_SPLIT_VAL, NULL);
    nte = mama_dataset_split(g_vd, MAMA_SPLIT_TEST, NULL);
    test_report(ntr > 8 && nva > 0 && nte > 0, "opts_val_set", "16 synthetic studies: %d train, %d val, %d test "
                "images", ntr, nva, nte);
    return ntr > 8 && nva > 0 && nte > 0;
}

/* ---- mama_step_opts: 7 fields --------------------------------------------
 * One batch of 4 (images, other views, captions) of the set; a fresh model
 * (seed 1, text_dropout 0.1 so that dropout and seed have something to do)
 * per call, since train mode moves the BatchNorm statistics. */
typedef struct { mama_losses L; uint64_t grads; } step_out;
static int step_run(const mama_batch *b, const mama_step_opts *o, step_out *r) {
    mama_config c;
    mama_model *m = NULL;
    int ok;
    tiny1(&c);
    c.text_dropout = 0.1f;
    ok = mama_model_create(&m, &c, g_cpu, 4, 1) == MAMA_OK && mama_model_step(m, b, o, 0, &r->L) == MAMA_OK;
    r->grads = ok ? floats_hash(m->grads, m->group_numel[0] + m->group_numel[1], 1469598103934665603ull) : 0;
    if (!ok) printf("  step: %s\n", mama_last_error());
    mama_model_free(m);
    return ok;
}
static void test_step_fields(void) {
    const int B = 4;
    mama_config c;
    size_t img;
    float *im, *ext;
    int ids[4 * 128], mask[4 * 128], i, ok;
    const int *tr;
    mama_batch b;
    mama_step_opts o;
    step_out base, late, x, y;
    tiny1(&c);
    memset(&base, 0, sizeof base); memset(&late, 0, sizeof late); memset(&x, 0, sizeof x); memset(&y, 0, sizeof y);
    img = (size_t)3 * c.image_size * c.image_size;
    im = (float *)malloc(sizeof(float) * img * B);
    ext = (float *)malloc(sizeof(float) * img * B);
    ok = im && ext && mama_dataset_split(g_vd, MAMA_SPLIT_TRAIN, &tr) >= 2 * B;
    for (i = 0; ok && i < B; i++)
        ok = mama_dataset_image(g_vd, tr[i], 0, NULL, im + img * i) == MAMA_OK &&
             mama_dataset_image(g_vd, tr[B + i], 0, NULL, ext + img * i) == MAMA_OK &&
             mama_dataset_caption(g_vd, tr[i], 0, NULL, ids + 128 * i, mask + 128 * i) == MAMA_OK;
    b.B = B; b.images = im; b.ext_images = ext; b.input_ids = ids; b.attention_mask = mask;
    memset(&o, 0, sizeof o);
    ok = ok && step_run(&b, &o, &base);
    o.late = 1;
    ok = ok && step_run(&b, &o, &late);
    test_report(ok && base.L.clip > 0 && base.L.mv == 0 && base.L.sym == 0 && base.L.sla == 0 && late.L.mv > 0 &&
                late.L.sym > 0 && late.L.sla > 0 && late.grads != base.grads, "step_late_used",
                "late 0: clip %.4f only (mv %g sym %g sla %g); late 1: mv %.4f sym %.4f sla %.4f, other gradients",
                base.L.clip, base.L.mv, base.L.sym, base.L.sla, late.L.mv, late.L.sym, late.L.sla);
    o.use_mv = MAMA_OFF;
    ok = ok && step_run(&b, &o, &x);
    test_report(ok && x.L.mv == 0 && x.L.sym == late.L.sym && x.L.sla == late.L.sla && x.grads != late.grads,
                "step_use_mv_used", "late, use_mv off: mv %g (on: %.4f), sym and sla unchanged, other gradients",
                x.L.mv, late.L.mv);
    o.use_mv = 0; o.use_sym = MAMA_OFF;
    ok = ok && step_run(&b, &o, &x);
    test_report(ok && x.L.sym == 0 && x.L.mv == late.L.mv && x.L.sla == late.L.sla && x.grads != late.grads,
                "step_use_sym_used", "late, use_sym off: sym %g (on: %.4f), mv and sla unchanged, other gradients",
                x.L.sym, late.L.sym);
    o.use_sym = 0; o.use_sla = MAMA_OFF;
    ok = ok && step_run(&b, &o, &x);
    test_report(ok && x.L.sla == 0 && x.L.mv == late.L.mv && x.L.sym == late.L.sym && x.grads != late.grads,
                "step_use_sla_used", "late, use_sla off: sla %g (on: %.4f), mv and sym unchanged, other gradients",
                x.L.sla, late.L.sla);
    /* train: BatchNorm batch statistics (SimCLR and local heads) vs running ones; dropout off in both */
    o.use_sla = 0; o.dropout = MAMA_OFF;
    ok = ok && step_run(&b, &o, &x);
    o.train = MAMA_OFF;
    ok = ok && step_run(&b, &o, &y);
    test_report(ok && x.L.clip == y.L.clip && x.L.mv != y.L.mv && x.L.sla != y.L.sla, "step_train_used",
                "late, no dropout: train on / off: clip %.6f / %.6f (no BatchNorm on its path), mv %.6f / %.6f, "
                "sla %.6f / %.6f (BatchNorm statistics)", x.L.clip, y.L.clip, x.L.mv, y.L.mv, x.L.sla, y.L.sla);
    /* dropout and seed (text_dropout 0.1): the late-free step */
    memset(&o, 0, sizeof o);
    o.dropout = MAMA_OFF;
    ok = ok && step_run(&b, &o, &x);
    test_report(ok && x.L.clip != base.L.clip && x.grads != base.grads, "step_dropout_used",
                "text_dropout 0.1: clip %.6f with dropout, %.6f without", base.L.clip, x.L.clip);
    memset(&o, 0, sizeof o);
    o.train = MAMA_OFF;
    ok = ok && step_run(&b, &o, &y);
    test_report(ok && y.L.clip == x.L.clip && y.grads == x.grads, "step_train_gates_dropout",
                "train off (dropout left on): the step without dropout exactly (clip %.6f)", y.L.clip);
    memset(&o, 0, sizeof o);
    o.seed = 5;
    ok = ok && step_run(&b, &o, &x);
    test_report(ok && x.L.clip != base.L.clip && x.grads != base.grads, "step_seed_used",
                "dropout masks: clip %.6f with seed 0, %.6f with seed 5", base.L.clip, x.L.clip);
    free(im);
    free(ext);
}

/* ---- mama_eval_opts: 5 fields, through mama_zeroshot_ex ---------------- */
static void test_eval_fields(void) {
    mama_config c;
    mama_model *m = NULL;
    mama_eval_opts o;
    mama_eval_result base, x, y;
    uint64_t seed;
    int ok, i, same, diff = 0;
    tiny1(&c);
    memset(&base, 0, sizeof base); memset(&x, 0, sizeof x); memset(&y, 0, sizeof y);
    ok = mama__eval_opts_resolve(NULL, MAMA_ZEROSHOT_DENSITY, &o) == MAMA_OK && o.balanced_test == 0 &&
         o.subset_seed == MAMA_EVAL_DEFAULT_SUBSET_SEED && o.classes == 0 && o.double_softmax == 0 &&
         o.ref_text_feature == 0;
    test_report(ok, "eval_zero_is_default", "NULL / zero mama_eval_opts: every image, subset_seed "
                "MAMA_EVAL_DEFAULT_SUBSET_SEED (%d), all classes, one softmax, the training text feature",
                MAMA_EVAL_DEFAULT_SUBSET_SEED);
    memset(&o, 0, sizeof o);
    ok = mama_model_create(&m, &c, g_cpu, 4, 1) == MAMA_OK &&
         mama_zeroshot_ex(m, g_vd, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &o, &base) == MAMA_OK;
    o.balanced_test = 0.5f;
    ok = ok && mama_zeroshot_ex(m, g_vd, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &o, &x) == MAMA_OK;
    test_report(ok && x.n < base.n && x.K == base.K, "eval_balanced_test_used", "density zero-shot on test: %d "
                "images; balanced_test 0.5: %d", base.n, x.n);
    /* subset_seed: another seed, another subset (the first seed that differs of 2..9) */
    for (seed = 2; ok && seed < 10 && !diff; seed++) {
        mama_eval_result_free(&y);
        o.subset_seed = seed;
        ok = mama_zeroshot_ex(m, g_vd, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &o, &y) == MAMA_OK;
        for (i = 0; ok && i < x.n && i < y.n; i++) diff |= x.records[i] != y.records[i];
        diff |= ok && x.n != y.n;
    }
    test_report(ok && diff, "eval_subset_seed_used", "balanced_test 0.5, subset_seed %llu: another subset than "
                "seed 1 (the default)", (unsigned long long)(seed - 1));
    mama_eval_result_free(&x);
    mama_eval_result_free(&y);
    memset(&o, 0, sizeof o);
    o.classes = 0x6; /* densities 2, 3 */
    ok = ok && mama_zeroshot_ex(m, g_vd, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &o, &x) == MAMA_OK;
    test_report(ok && x.K == 2 && x.classes[0] == 1 && x.classes[1] == 2 && x.n < base.n, "eval_classes_used",
                "classes 0x6: K %d (of %d), columns %d,%d, %d images", x.K, base.K, x.classes[0], x.classes[1], x.n);
    mama_eval_result_free(&x);
    memset(&o, 0, sizeof o);
    o.double_softmax = 1;
    ok = ok && mama_zeroshot_ex(m, g_vd, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &o, &x) == MAMA_OK && x.n == base.n;
    same = 1;
    for (i = 0; ok && i < base.n * base.K; i++) same &= x.probs[i] == base.probs[i];
    test_report(ok && !same && x.metrics.accuracy == base.metrics.accuracy, "eval_double_softmax_used",
                "double_softmax: other probabilities (row 0 col 0: %.6f vs %.6f), the same accuracy %.4f",
                ok ? x.probs[0] : 0, ok ? base.probs[0] : 0, base.metrics.accuracy);
    mama_eval_result_free(&x);
    memset(&o, 0, sizeof o);
    o.ref_text_feature = 1;
    ok = ok && mama_zeroshot_ex(m, g_vd, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &o, &x) == MAMA_OK && x.n == base.n;
    same = 1;
    for (i = 0; ok && i < base.n * base.K; i++) same &= x.probs[i] == base.probs[i];
    test_report(ok && !same, "eval_ref_text_feature_used", "ref_text_feature: other probabilities (row 0 col 0: "
                "%.6f vs %.6f)", ok ? x.probs[0] : 0, ok ? base.probs[0] : 0);
    if (!ok) printf("  eval: %s\n", mama_last_error());
    mama_eval_result_free(&x);
    mama_eval_result_free(&base);
    mama_model_free(m);
}

/* ---- mama_probe_opts: 11 fields (+ eval), linear probe and fine-tuning --
 * A fresh model (seed 1) per run; the result compared: the trained
 * classifier's bits (head W and b), the evaluated images and classes, and
 * fine-tuning's selected step. */
typedef struct { uint64_t head, recs; int n, K, ok; long best_step; long err_bytes; } probe_out;
static probe_out probe_run(int finetune, const mama_probe_opts *o) {
    mama_config c;
    mama_model *m = NULL;
    mama_eval_result r;
    probe_out p;
    memset(&p, 0, sizeof p);
    memset(&r, 0, sizeof r);
    tiny1(&c);
    if (mama_model_create(&m, &c, g_cpu, 4, 1) == MAMA_OK) {
        stderr_to(DIR "/probe_stderr.txt");
        p.ok = (finetune ? mama_finetune(m, g_vd, MAMA_ZEROSHOT_BIRADS, o, MAMA_SPLIT_TEST, &r)
                         : mama_linear_probe(m, g_vd, MAMA_ZEROSHOT_BIRADS, o, MAMA_SPLIT_TEST, &r)) == MAMA_OK;
        p.err_bytes = stderr_back(DIR "/probe_stderr.txt");
    }
    if (p.ok) {
        p.head = floats_hash(r.head.b, (size_t)r.head.K, floats_hash(r.head.W, (size_t)r.head.K * r.head.D, 1));
        p.n = r.n; p.K = r.K; p.best_step = r.best_step;
        p.recs = floats_hash((const float *)r.records, (size_t)r.n, 1); /* (bytes) */
    } else {
        printf("  %s: %s\n", finetune ? "finetune" : "probe", mama_last_error());
    }
    mama_eval_result_free(&r);
    mama_model_free(m);
    return p;
}
static void test_probe_fields(void) {
    static const char *const names[] = {"steps", "batch", "lr", "lr_floor", "warmup", "momentum", "weight_decay",
                                        "seed", "augment", "eval.balanced_test", "eval.subset_seed", "eval.classes"};
    const int nf = (int)(sizeof names / sizeof names[0]);
    int f, k, seen[2] = {0, 0};
    char missed[2][200];
    mama_probe_opts base, o;
    probe_out b[2], x;
    memset(&base, 0, sizeof base);
    base.steps = 3; base.batch = 4; base.warmup = MAMA_OFF; base.quiet = 1;
    base.augment = MAMA_OFF; /* the probe's features once (fine-tuning always augments) */
    base.eval.balanced_test = 0.1f; /* one image per class: subset_seed picks which */
    base.val_every = MAMA_OFF;      /* fine-tuning: the last weights, not those of the best val step */
    missed[0][0] = missed[1][0] = 0;
    for (f = 0; f < 2; f++) {
        b[f] = probe_run(f, &base);
        for (k = 0; k < nf; k++) {
            int changed;
            o = base;
            switch (k) {
            case 0: o.steps = 4; break;
            case 1: o.batch = 3; break;
            case 2: o.lr = 1e-2f; break;
            case 3: o.lr_floor = 1e-3f; break;
            case 4: o.warmup = 2; break;
            case 5: o.momentum = MAMA_OFF; break;
            case 6: o.weight_decay = 0.5f; break;
            case 7: o.seed = 7; break;
            case 8: o.augment = 1; break;
            case 9: o.eval.balanced_test = 0; break;
            case 10: o.eval.subset_seed = 3; break;
            case 11: o.eval.classes = 0x6; break;
            }
            if (f == 1 && k == 8) continue; /* augment: the linear probe's only (below) */
            x = probe_run(f, &o);
            changed = k >= 9 ? x.n != b[f].n || x.K != b[f].K || x.recs != b[f].recs : x.head != b[f].head;
            if (x.ok && b[f].ok && changed) seen[f]++;
            else if (strlen(missed[f]) < 150) { strcat(missed[f], " "); strcat(missed[f], names[k]); }
        }
    }
    test_report(seen[0] == nf, "probe_every_field_used", "linear probe: %d of %d fields change the trained classifier "
                "or the evaluated set (base: 3 steps of 4, %d test images, K %d)%s%s", seen[0], nf, b[0].n, b[0].K,
                missed[0][0] ? "; no effect:" : "", missed[0]);
    test_report(seen[1] == nf - 1, "finetune_every_field_used", "fine-tuning: %d of %d fields (all but augment) "
                "change the classifier or the evaluated set%s%s", seen[1], nf - 1, missed[1][0] ? "; no effect:" : "",
                missed[1]);
    /* fine-tuning always augments; the probe's double_softmax / ref_text_feature do not apply (documented) */
    o = base; o.augment = 1;
    x = probe_run(1, &o);
    test_report(x.ok && x.head == b[1].head, "finetune_augment_not_used", "augment applies to the linear probe only "
                "(fine-tuning always augments): the same classifier");
    o = base; o.eval.double_softmax = 1; o.eval.ref_text_feature = 1;
    x = probe_run(0, &o);
    test_report(x.ok && x.head == b[0].head && x.n == b[0].n, "probe_zeroshot_fields_not_used",
                "eval.double_softmax and eval.ref_text_feature (zero-shot only): the same probe");
    /* val_every (fine-tuning): default steps / 10 -> every step; 100 -> only after the last; MAMA_OFF -> none */
    o = base; o.val_every = 100;
    x = probe_run(1, &o);
    {
        probe_out def;
        o.val_every = 0;
        def = probe_run(1, &o);
        test_report(x.ok && def.ok && def.best_step >= 1 && def.best_step <= 3 && x.best_step == 3 &&
                    b[1].best_step == 0, "finetune_val_every_used", "best_step: default (every step) %ld, val_every "
                    "100 (after the last only) %ld, MAMA_OFF (no selection) %ld", def.best_step, x.best_step,
                    b[1].best_step);
        o = base; o.val_every = 1;
        x = probe_run(0, &o);
        test_report(x.ok && x.head == b[0].head, "probe_val_every_not_used", "val_every is fine-tuning's: the same "
                    "linear probe");
    }
    /* quiet: the progress lines on stderr */
    for (f = 0; f < 2; f++) {
        o = base; o.quiet = 0;
        x = probe_run(f, &o);
        test_report(x.ok && b[f].err_bytes == 0 && x.err_bytes > 0 && x.head == b[f].head,
                    f ? "finetune_quiet_used" : "probe_quiet_used", "%s: stderr %ld bytes quiet, %ld bytes not "
                    "(the same classifier)", f ? "fine-tuning" : "linear probe", b[f].err_bytes, x.err_bytes);
    }
}

/* ---- mama_pretrain_opts: 27 fields -----------------------------------------
 * A fresh model (seed 1, max_batch 4) per run on the 16-study set; the
 * base: 2 steps of 2, accum 1, late losses from step 1, no validation,
 * quiet.  Compared: the weights after the run (hash), the last losses, the
 * steps done, files written, stderr, the status. */
typedef struct { mama_status s; mama_pretrain_result r; uint64_t w; long err_bytes; } pt_out;
static pt_out pt_run(const mama_pretrain_opts *o) {
    mama_config c;
    mama_model *m = NULL;
    pt_out p;
    memset(&p, 0, sizeof p);
    tiny1(&c);
    p.s = mama_model_create(&m, &c, g_cpu, 4, 1);
    if (p.s == MAMA_OK) {
        stderr_to(DIR "/pt_stderr.txt");
        p.s = mama_pretrain(m, g_vd, o, &p.r);
        p.err_bytes = stderr_back(DIR "/pt_stderr.txt");
        p.w = params_hash(m);
    }
    mama_model_free(m);
    return p;
}
static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
/* rows of a pretraining log, and how many have a validation loss */
static int log_rows(const char *path, int *with_val) {
    unsigned char *t = NULL;
    size_t n = 0, i;
    int rows = -1, last_comma = 0;
    *with_val = 0;
    if (mama_read_file(path, &t, &n) != MAMA_OK) return -1;
    for (i = 0; i < n; i++) {
        if (t[i] == '\n') { rows++; *with_val += rows > 0 && !last_comma; }
        last_comma = t[i] == ',';
    }
    mama_free(t);
    return rows;
}
static void test_pretrain_fields(void) {
    static const char *const names[] = {"steps", "batch", "accum", "lr", "lr_floor", "warmup", "weight_decay",
                                        "late_loss", "ext_other_view_p", "caption_mask_p", "clip_grad", "seed", "aug"};
    const int nf = (int)(sizeof names / sizeof names[0]);
    const char *ck = DIR "/pt.safetensors", *ckb = DIR "/pt.best.safetensors", *bq = DIR "/q.safetensors";
    const char *lg = DIR "/pt_log.csv";
    mama_pretrain_opts base, o;
    pt_out b, x, y;
    int k, seen = 0, rows, vrows, rows1, vrows1;
    char missed[200] = "";
    memset(&base, 0, sizeof base);
    base.steps = 2; base.batch = 2; base.accum = 1; base.late_loss = 1; base.val_every = MAMA_OFF; base.quiet = 1;
    b = pt_run(&base);
    test_report(b.s == MAMA_OK && b.r.steps_done == 2 && b.r.last.mv > 0 && b.r.last.sym > 0 && b.r.last.sla > 0,
                "pretrain_fields_base", "%s; 2 steps, last clip %.4f mv %.4f sym %.4f sla %.4f",
                b.s == MAMA_OK ? "ok" : mama_last_error(), b.r.last.clip, b.r.last.mv, b.r.last.sym, b.r.last.sla);
    for (k = 0; k < nf; k++) {
        o = base;
        switch (k) {
        case 0: o.steps = 3; break;
        case 1: o.batch = 3; break;
        case 2: o.accum = 2; break;
        case 3: o.lr = 1e-3f; break;
        case 4: o.lr_floor = 1e-5f; break;
        case 5: o.warmup = 1; break;
        case 6: o.weight_decay = 0.5f; break;
        case 7: o.late_loss = MAMA_OFF; break;
        case 8: o.ext_other_view_p = 1; break;
        case 9: o.caption_mask_p = MAMA_OFF; break;
        case 10: o.clip_grad = 1e-3f; break;
        case 11: o.seed = 9; break;
        case 12: mama_augment_preset(&o.aug, "none"); break;
        }
        x = pt_run(&o);
        if (x.s == MAMA_OK && x.w != b.w && (k != 0 || x.r.steps_done == 3)) seen++;
        else if (strlen(missed) < 150) { strcat(missed, " "); strcat(missed, names[k]); }
    }
    test_report(b.s == MAMA_OK && seen == nf, "pretrain_every_field_used", "%d of %d fields change the weights after "
                "the run (steps: 3 done)%s%s", seen, nf, missed[0] ? "; no effect:" : "", missed);
    /* the late terms */
    {
        int ok = 1;
        o = base; o.use_mv = MAMA_OFF; x = pt_run(&o);
        ok &= x.s == MAMA_OK && x.r.last.mv == 0 && x.r.last.sym > 0 && x.w != b.w;
        o = base; o.use_sym = MAMA_OFF; y = pt_run(&o);
        ok &= y.s == MAMA_OK && y.r.last.sym == 0 && y.r.last.mv > 0 && y.w != b.w;
        test_report(ok, "pretrain_use_mv_sym_used", "use_mv off: last mv %g; use_sym off: last sym %g (other "
                    "weights)", x.r.last.mv, y.r.last.sym);
        o = base; o.use_sla = MAMA_OFF; x = pt_run(&o);
        test_report(x.s == MAMA_OK && x.r.last.sla == 0 && x.r.last.mv > 0 && x.w != b.w, "pretrain_use_sla_used",
                    "use_sla off: last sla %g (on: %.4f)", x.r.last.sla, b.r.last.sla);
    }
    /* stop_at: stops after step 1 of the 2-step schedule */
    o = base; o.stop_at = 1; x = pt_run(&o);
    test_report(x.s == MAMA_OK && x.r.steps_done == 1 && x.w != b.w, "pretrain_stop_at_used", "stop_at 1: %ld "
                "step done (of 2)", x.r.steps_done);
    /* checkpoint and resume: a run stopped at 1 with a checkpoint, resumed: 1 step more, the 2-step run's weights */
    remove(ck); remove(ckb);
    o = base; o.stop_at = 1; o.checkpoint = ck; x = pt_run(&o);
    {
        int written = x.s == MAMA_OK && file_exists(ck), none = 1;
        test_report(written && !file_exists(ckb), "pretrain_checkpoint_used", "checkpoint: %s written (no .best "
                    "without validation)", ck);
        o.stop_at = 0; o.resume = 1; y = pt_run(&o);
        test_report(written && y.s == MAMA_OK && y.r.steps_done == 1 && y.w == b.w, "pretrain_resume_used",
                    "resume: %ld step done after the checkpoint of step 1, weights == the uninterrupted run's: %d",
                    y.r.steps_done, y.w == b.w);
        /* allow_changes: resuming with another batch */
        o = base; o.stop_at = 1; o.checkpoint = ck; x = pt_run(&o);
        o.stop_at = 0; o.resume = 1; o.batch = 3; y = pt_run(&o);
        none = y.s == MAMA_ERR_INVALID && strstr(mama_last_error(), "batch") != NULL;
        printf("  %s\n", mama_last_error());
        o.allow_changes = 1; y = pt_run(&o);
        test_report(x.s == MAMA_OK && none && y.s == MAMA_OK && y.r.steps_done == 1, "pretrain_allow_changes_used",
                    "resume with batch 3 (the checkpoint's: 2): refused; allow_changes: resumed, %ld step", y.r.steps_done);
    }
    /* checkpoint_every and max_bad_steps: lr 1e30 makes every step after the first non-finite */
    remove(ck);
    o = base; o.lr = 1e30f; o.checkpoint = ck; o.max_bad_steps = MAMA_OFF; x = pt_run(&o);
    {
        int none_written = x.s == MAMA_OK && !file_exists(ck), step1 = 0;
        mama_safetensors st;
        o.checkpoint_every = 1; y = pt_run(&o);
        if (y.s == MAMA_OK && mama_st_open(&st, ck) == MAMA_OK) {
            const char *v = mama_st_meta(&st, "step");
            step1 = v && !strcmp(v, "1");
            mama_st_close(&st);
        }
        test_report(none_written && step1 && x.r.skipped_steps == 1, "pretrain_checkpoint_every_used",
                    "lr 1e30, step 2 non-finite (skipped %ld): no checkpoint at the end; checkpoint_every 1: the "
                    "one of step 1 is there (%d)", x.r.skipped_steps, step1);
        o.checkpoint_every = 0; o.checkpoint = NULL; o.max_bad_steps = 0; y = pt_run(&o);
        o.max_bad_steps = 1; x = pt_run(&o);
        test_report(y.s == MAMA_OK && y.r.skipped_steps == 1 && x.s == MAMA_ERR_NUMERIC && x.r.steps_done == 1,
                    "pretrain_max_bad_steps_used", "a bad step: default 5 goes on (skipped %ld); 1 stops there: %s",
                    y.r.skipped_steps, x.s == MAMA_OK ? "ok" : mama_last_error());
    }
    /* log_csv, val_every, best_checkpoint */
    remove(lg); remove(bq); remove(ck);
    o = base; o.log_csv = lg; x = pt_run(&o);
    rows = log_rows(lg, &vrows);
    o.val_every = 0; x = pt_run(&o);
    rows1 = log_rows(lg, &vrows1);
    test_report(x.s == MAMA_OK && rows == 2 && vrows == 0,
                "pretrain_log_csv_used", "log_csv: %d rows written, %d with a validation loss (val_every off)",
                rows, vrows);
    o.val_every = 1; o.best_checkpoint = bq; y = pt_run(&o);
    rows = log_rows(lg, &vrows);
    test_report(x.s == MAMA_OK && y.s == MAMA_OK && rows1 == 2 && vrows1 == 1 && rows == 2 && vrows == 2 &&
                isnan(b.r.last_val_loss) && x.r.best_val_step >= 1 && isfinite(y.r.last_val_loss) && x.w == b.w &&
                y.w == b.w, "pretrain_val_every_used", "rows with a validation loss: off %d, default (the last "
                "step) %d of %d, 1: %d of %d; the weights unchanged", 0, vrows1, rows1, vrows, rows);
    test_report(y.s == MAMA_OK && file_exists(bq) && !file_exists(ck), "pretrain_best_checkpoint_used",
                "best_checkpoint without checkpoint: %s written (best step %ld)", bq, y.r.best_val_step);
    /* quiet */
    o = base; o.quiet = 0; x = pt_run(&o);
    test_report(x.s == MAMA_OK && b.err_bytes == 0 && x.err_bytes > 0 && x.w == b.w, "pretrain_quiet_used",
                "stderr: %ld bytes quiet, %ld not (the same weights)", b.err_bytes, x.err_bytes);
    /* no_overlap: data parallel only (tests/test_mpi.c); one process: no effect */
    o = base; o.no_overlap = 1; x = pt_run(&o);
    test_report(x.s == MAMA_OK && x.w == b.w && x.r.grad_buckets == 0, "pretrain_no_overlap_single",
                "no_overlap in one process: the same weights (its effect, buckets vs one all-reduce: test_mpi.c)");
}

/* ---- mama_decode_opts: bit_depth, window_center, window_width (max_side
 * above): a 16-bit PGM in memory, samples 0, 771 (0x0303), 3855 (0x0F0F),
 * hand values of the rules in 1.9 (16-bit PNM samples are big-endian;
 * test_image.c checks the byte order with samples whose bytes differ). */
static void test_decode_depth_fields(void) {
    static const unsigned char pgm[] = {'P', '5', '\n', '3', ' ', '1', '\n', '6', '5', '5', '3', '5', '\n',
                                        0x00, 0x00, 0x03, 0x03, 0x0F, 0x0F};
    mama_decode_opts o;
    mama_image a = {0, 0, NULL}, b = {0, 0, NULL}, c = {0, 0, NULL}, d = {0, 0, NULL};
    int ok;
    memset(&o, 0, sizeof o);
    ok = mama_image_load_memory_opts(pgm, sizeof pgm, "16bit.pgm", &o, &a) == MAMA_OK;
    o.bit_depth = 16;
    ok = ok && mama_image_load_memory_opts(pgm, sizeof pgm, "16bit.pgm", &o, &b) == MAMA_OK;
    o.bit_depth = 0; o.window_width = 1001; o.window_center = 771.5f;
    ok = ok && mama_image_load_memory_opts(pgm, sizeof pgm, "16bit.pgm", &o, &c) == MAMA_OK;
    o.window_center = 1271.5f;
    ok = ok && mama_image_load_memory_opts(pgm, sizeof pgm, "16bit.pgm", &o, &d) == MAMA_OK;
    if (!ok) printf("  decode: %s\n", mama_last_error());
    /* by the maximum: v*255/3855 -> 51, 255; bit_depth 16: v*255/65535 -> 3, 15;
     * window W 1001 (rows v <= C-500.5 -> 0, v > C+499.5 -> 255, else ((v-C+.5)/1000+.5)*255):
     * C 771.5: 0, 128, 255; C 1271.5: 0, 0, 255 */
    test_report(ok && a.pix[1] == 51 && a.pix[2] == 255 && b.pix[1] == 3 && b.pix[2] == 15, "decode_bit_depth_used",
                "771 and 3855: by the image's maximum %d %d (hand 51 255), bit_depth 16: %d %d (3 15)",
                ok ? a.pix[1] : -1, ok ? a.pix[2] : -1, ok ? b.pix[1] : -1, ok ? b.pix[2] : -1);
    test_report(ok && c.pix[0] == 0 && c.pix[1] == 128 && c.pix[2] == 255 && d.pix[1] == 0 && d.pix[2] == 255,
                "decode_window_used", "window width 1001: centre 771.5: 0 771 3855 -> %d %d %d (hand 0 128 255); "
                "centre 1271.5: 771 -> %d (0), 3855 -> %d (255)", ok ? c.pix[0] : -1, ok ? c.pix[1] : -1,
                ok ? c.pix[2] : -1, ok ? d.pix[1] : -1, ok ? d.pix[2] : -1);
    mama_image_free(&a); mama_image_free(&b); mama_image_free(&c); mama_image_free(&d);
    memset(&o, 0, sizeof o); o.bit_depth = 17;
    ok = mama_image_load_memory_opts(pgm, sizeof pgm, "16bit.pgm", &o, &a) == MAMA_ERR_INVALID &&
         strstr(mama_last_error(), "bit_depth") != NULL;
    printf("  %s\n", mama_last_error());
    o.bit_depth = 12; o.window_width = 100;
    ok = ok && mama_image_load_memory_opts(pgm, sizeof pgm, "16bit.pgm", &o, &a) == MAMA_ERR_INVALID &&
         strstr(mama_last_error(), "exclusive") != NULL;
    printf("  %s\n", mama_last_error());
    o.bit_depth = 0; o.window_width = 0.5f;
    ok = ok && mama_image_load_memory_opts(pgm, sizeof pgm, "16bit.pgm", &o, &a) == MAMA_ERR_INVALID;
    test_report(ok, "decode_bad_values", "bit_depth 17, bit_depth with a window, window_width 0.5: "
                "MAMA_ERR_INVALID naming the field");
}

/* The zero mama_decode_opts.max_side is MAMA_DECODE_DEFAULT_MAX_SIDE: a PNG
 * header (IHDR only) of 16385 x 1 is refused from its header by default,
 * 16384 x 1 and MAMA_OFF go on to decode (and fail later: no pixel data). */
static void test_decode_max_side_default(void) {
    unsigned char png[33] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                             0, 0, 0x40, 0x01, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0};
    mama_decode_opts o;
    mama_image im = {0, 0, NULL};
    int refused, edge, off;
    memset(&o, 0, sizeof o);
    refused = mama_image_load_memory_opts(png, sizeof png, "wide.png", &o, &im) == MAMA_ERR_FORMAT &&
              strstr(mama_last_error(), "decode limit of 16384 x 16384") != NULL;
    printf("  %s\n", mama_last_error());
    o.max_side = MAMA_OFF;
    off = mama_image_load_memory_opts(png, sizeof png, "wide.png", &o, &im) != MAMA_OK &&
          strstr(mama_last_error(), "decode limit") == NULL;
    memset(&o, 0, sizeof o);
    png[19] = 0x00; /* 16384 */
    edge = mama_image_load_memory_opts(png, sizeof png, "wide.png", &o, &im) != MAMA_OK &&
           strstr(mama_last_error(), "decode limit") == NULL;
    mama_image_free(&im);
    test_report(refused && off && edge && MAMA_DECODE_DEFAULT_MAX_SIDE == 16384, "decode_max_side_default",
                "zero max_side: 16385 px refused from the header, 16384 px decoded (%s); MAMA_OFF: 16385 decoded",
                edge ? "then no pixel data" : "?");
}

/* The mama_dataset_opts fields test_dataset_fields leaves to test_data.c,
 * here too: manifest required, skip_bad_rows, allow_split_overlap,
 * keep_incomplete, decode (max_side) */
static void test_dataset_more_fields(void) {
    const char *bad = "path,patient,study,image_type,split\nimages/p00001_L_CC.png,a,s1,2D,train\n"
                      "missing.png,b,s2,2D,train\n";
    const char *ovl = "path,patient,study,image_type,split\nimages/p00001_L_CC.png,a,s1,2D,train\n"
                      "images/p00001_L_MLO.png,a,s1,2D,test\n";
    mama_dataset_opts o;
    mama_dataset *d = NULL;
    mama_config c;
    mama_status s;
    int ok, n0 = -1, n1 = -1;
    tiny1(&c);
    memset(&o, 0, sizeof o);
    ok = mama_dataset_create(&d, &o, &c) == MAMA_ERR_INVALID;
    test_report(ok, "dataset_manifest_required", "no manifest: %s", mama_last_error());
    ok = mama_write_file_atomic(DIR "/bad.csv", bad, strlen(bad)) == MAMA_OK &&
         mama_write_file_atomic(DIR "/ovl.csv", ovl, strlen(ovl)) == MAMA_OK;
    o.manifest = DIR "/bad.csv";
    s = mama_dataset_create(&d, &o, &c);
    printf("  %s\n", mama_last_error());
    o.skip_bad_rows = 1;
    ok = ok && s != MAMA_OK && mama_dataset_create(&d, &o, &c) == MAMA_OK && mama_dataset_skipped(d) == 1 &&
         mama_dataset_split(d, MAMA_SPLIT_TRAIN, NULL) == 1;
    test_report(ok, "dataset_skip_bad_rows_used", "a row whose image is missing: creation fails (%s); "
                "skip_bad_rows: 1 skipped, 1 train image", mama_status_name(s));
    mama_dataset_free(d);
    d = NULL;
    memset(&o, 0, sizeof o);
    o.manifest = DIR "/ovl.csv";
    s = mama_dataset_create(&d, &o, &c);
    ok = s != MAMA_OK && strstr(mama_last_error(), "patient \"a\"") != NULL;
    printf("  %s\n", mama_last_error());
    o.allow_split_overlap = 1;
    ok = ok && mama_dataset_create(&d, &o, &c) == MAMA_OK && mama_dataset_skipped_reasons(d)->overlap_patients == 1;
    test_report(ok, "dataset_allow_split_overlap_used", "patient a in train and test: refused by default (%s); "
                "allow_split_overlap: created, 1 overlapping patient", mama_status_name(s));
    if (d) n0 = mama_dataset_pretrain_split(d, MAMA_SPLIT_TRAIN, NULL);
    mama_dataset_free(d);
    d = NULL;
    o.keep_incomplete = 1;
    if (mama_dataset_create(&d, &o, &c) == MAMA_OK) n1 = mama_dataset_pretrain_split(d, MAMA_SPLIT_TRAIN, NULL);
    mama_dataset_free(d);
    d = NULL;
    test_report(n0 == 0 && n1 == 1, "dataset_keep_incomplete_used", "a row without caption fields: pretrained on "
                "%d times by default, %d with keep_incomplete", n0, n1);
    o.aug.size = 64; /* not the model's 112 */
    s = mama_dataset_create(&d, &o, &c);
    test_report(s == MAMA_ERR_INVALID && d == NULL, "dataset_aug_size_checked", "aug.size 64 for a 112 px model: %s",
                mama_last_error());
    o.aug.size = 0;
    o.decode.max_side = 8;
    s = mama_dataset_create(&d, &o, &c);
    test_report(s != MAMA_OK && strstr(mama_last_error(), "decode limit of 8 x 8") != NULL, "dataset_decode_used",
                "decode.max_side 8: %s", mama_last_error());
    mama_dataset_free(d);
}

int main(void) {
    /* one thread: the results are the same bits on any number of threads
     * (test_threads.c), and the ~150 small runs here take a fraction of the
     * time on a loaded machine (a 2-core machine shared by several jobs:
     * 26 s instead of 230 s for the field checks below) */
    mama_set_num_threads(1);
    if (mama_cpu_backend_create(&g_cpu) != MAMA_OK) {
        printf("FAIL opts_backend: %s\n", mama_last_error());
        return 1;
    }
    test_augment();
    test_step();
    test_dataset_opts();
    test_probe();
    test_pretrain_opts();
    test_pretrain_schedule();
    test_pretrain_zero_trains();
    test_decode_fields();
    test_augment_fields();
    test_augment_presets();
    test_dataset_fields();
    test_pretrain_dataset_aug();
    test_decode_depth_fields();
    test_decode_max_side_default();
    test_dataset_more_fields();
    if (open_val_set()) {
        test_step_fields();
        test_eval_fields();
        test_probe_fields();
        test_pretrain_fields();
    }
    mama_dataset_free(g_vd);
    mama_backend_free(g_cpu);
    return test_finish();
}
