/* tests/test_opts.c - the options convention of mama.h section 1:
 * - a zero options struct (and a NULL pointer) resolves to the documented
 *   defaults, the MAMA_<STRUCT>_DEFAULT_* macros, for every options struct,
 *   and mama_*_opts_default returns exactly that;
 * - MAMA_OFF (any negative value) means zero / off, a given value is kept,
 *   and resolving a resolved struct changes nothing;
 * - bad values are MAMA_ERR_INVALID, never a crash;
 * - a zero mama_pretrain_opts trains: two steps of a small `tiny` model with
 *   all four losses on (only steps, batch and late_loss = MAMA_OFF set). */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "test_util.h"

static mama_backend *g_cpu; /* the CPU backend of every test here */
#include <stdlib.h>
#include <sys/stat.h>

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

int main(void) {
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
    mama_backend_free(g_cpu);
    return test_finish();
}
