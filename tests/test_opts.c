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
    ok = d.steps == 8000 && d.batch == 32 && d.lr == 5e-4f && d.lr_floor == 1e-5f && d.warmup == 100 &&
         d.momentum == 0.9f && d.weight_decay == 1e-3f;
    test_report(ok, "probe_defaults_are_spec", "SPEC A.7: 8000 steps, batch 32, lr 5e-4 -> 1e-5, warm-up 100, "
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
    mama_augment_opts_default(&a);
    a.size = 0;
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
    test_report(ok, "pretrain_zero_is_default", "zero struct -> every MAMA_PRETRAIN_DEFAULT_*, the augment defaults "
                "(aug.size 0 = the model's); == mama_pretrain_opts_default");
    ok = d.steps == 40000 && d.batch == 36 && d.accum == 2 && d.lr == 4e-5f && d.lr_floor == 1e-8f &&
         d.warmup == 4000 && d.weight_decay == 0.1f && d.late_loss == 8000 && d.ext_other_view_p == 0.5f &&
         d.caption_mask_p == 0.8f;
    test_report(ok, "pretrain_defaults_are_spec", "SPEC A.5: 40000 steps, 36 x 2, lr 4e-5 -> 1e-8, warm-up 4000, "
                "wd 0.1, late 8000, ext .5, mask .8");
    ok = mama__pretrain_opts_resolve(&d, &r, 0) == MAMA_OK && !memcmp(&r, &d, sizeof r);
    test_report(ok, "pretrain_resolve_idempotent", "resolve(default) == default");
    ok = mama__pretrain_opts_resolve(&z, &o, 112) == MAMA_OK && o.aug.size == 112;
    test_report(ok, "pretrain_aug_size_from_model", "aug.size 0 -> the model's image_size (112)");
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
    mama_backend_free(g_cpu);
    return test_finish();
}
