/* tests/test_train.c - the training loop's promises:
 * - resume is exact: 2N steps in one run == N steps, checkpoint, resume, N
 *   steps (every logged loss and the final weights bit for bit);
 * - non-finite steps are skipped and counted, and K in a row stop training
 *   with MAMA_ERR_NUMERIC while the last checkpoint stays as it was;
 * - validation: the val loss at each checkpoint in the log, the best
 *   checkpoint's step is the argmin of the logged val losses, a resumed run
 *   keeps the best (a worse val after the resume does not replace it);
 *   fine-tuning evaluates the weights of its best val step;
 * - metrics against hand-computed values;
 * - the dataset: splits keep patients together, captions tokenise. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "test_util.h"
#include <stdlib.h>
#include <sys/stat.h>

static mama_backend *CPU; /* this program's CPU backend (created in main) */

#define DIR "build/test_train_data"

static int read_file(const char *path, unsigned char **buf, size_t *n) {
    return mama_read_file(path, buf, n) == MAMA_OK;
}

static int same_files(const char *a, const char *b) {
    unsigned char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = read_file(a, &x, &nx) && read_file(b, &y, &ny) && nx == ny && !memcmp(x, y, nx);
    mama_free(x); mama_free(y);
    return same;
}

/* the loss columns of a pretraining log, from line `from` (1-based data rows) */
static int log_losses(const char *path, double *out, int max) {
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;
    if (!f) return 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return 0; }
    while (n < max && fgets(line, sizeof line, f)) {
        double step, lr, loss;
        if (sscanf(line, "%lf,%lf,%lf", &step, &lr, &loss) == 3) out[n++] = loss;
    }
    fclose(f);
    return n;
}

static mama_status run(mama_dataset *d, const char *ckpt, const char *log, long steps, long stop_at, int resume,
                       mama_model **keep) {
    mama_config c;
    mama_model *m = NULL;
    mama_pretrain_opts o;
    mama_status s;
    mama_config_preset(&c, "tiny");
    c.vision_depth = 2; c.text_depth = 2; /* small and quick; same code paths */
    MAMA_TRY(mama_model_create(&m, &c, CPU, 4, 5));
    mama_pretrain_opts_default(&o);
    o.steps = steps; o.stop_at = stop_at; o.batch = 4; o.accum = 2; o.lr = 1e-3f; o.warmup = 2; o.late_loss = 2;
    o.seed = 11; o.checkpoint = ckpt; o.log_csv = log; o.resume = resume; o.quiet = 1;
    s = mama_pretrain(m, d, &o, NULL);
    if (keep && s == MAMA_OK) *keep = m;
    else mama_model_free(m);
    return s;
}

static void test_resume(mama_dataset *d) {
    double a[16], b[16];
    int na, nb, i, same;
    remove(DIR "/a.safetensors"); remove(DIR "/b.safetensors");
    remove(DIR "/a.best.safetensors"); remove(DIR "/b.best.safetensors"); /* a resume reads the best file too */
    if (run(d, DIR "/a.safetensors", DIR "/a.csv", 6, 0, 0, NULL) != MAMA_OK ||
        run(d, DIR "/b.safetensors", DIR "/b.csv", 6, 3, 0, NULL) != MAMA_OK ||
        run(d, DIR "/b.safetensors", DIR "/b.csv", 6, 0, 1, NULL) != MAMA_OK) {
        test_report(0, "resume_exact", "%s", mama_last_error());
        return;
    }
    na = log_losses(DIR "/a.csv", a, 16);
    nb = log_losses(DIR "/b.csv", b, 16);
    same = na == 6 && nb == 6;
    for (i = 0; same && i < 6; i++) same = a[i] == b[i];
    printf("  losses one run:  "); for (i = 0; i < na; i++) printf(" %.6f", a[i]); printf("\n");
    printf("  losses 3+resume: "); for (i = 0; i < nb; i++) printf(" %.6f", b[i]); printf("\n");
    test_report(same, "resume_exact", "6 steps (late losses from step 2, accum 2) in one run vs 3 + resume 3: %d and %d "
                "logged losses, identical=%d", na, nb, same);
    test_report(same_files(DIR "/a.safetensors", DIR "/b.safetensors"), "resume_weights",
                "final checkpoints (weights, Adam moments, step) byte-identical");
}

static void test_nonfinite(mama_dataset *d) {
    mama_model *m = NULL;
    mama_pretrain_opts o;
    mama_pretrain_result r;
    mama_status s;
    unsigned char *before = NULL;
    size_t nbefore = 0;
    /* a good checkpoint first, then a run whose weights hold a NaN */
    if (run(d, DIR "/nan.safetensors", NULL, 3, 0, 0, &m) != MAMA_OK) { test_report(0, "nonfinite_stop", "%s", mama_last_error()); return; }
    read_file(DIR "/nan.safetensors", &before, &nbefore);
    mama_model_params(m)[mama_model_find_param(m, "img_encoder_q.model.pos_embed")->offset] = NAN;
    mama_pretrain_opts_default(&o);
    o.steps = 10; o.batch = 4; o.accum = 1; o.warmup = 1; o.late_loss = 9; o.seed = 12; o.quiet = 1;
    o.checkpoint = DIR "/nan.safetensors"; o.checkpoint_every = 1; o.max_bad_steps = 3;
    s = mama_pretrain(m, d, &o, &r);
    printf("  message: %s\n", mama_last_error());
    test_report(s == MAMA_ERR_NUMERIC && r.skipped_steps == 3 && strstr(mama_last_error(), "non-finite") != NULL,
                "nonfinite_stop", "NaN weights: status %s after %ld skipped steps (K=3), message names the cause",
                mama_status_name(s), r.skipped_steps);
    {
        unsigned char *after = NULL;
        size_t nafter = 0;
        int same = read_file(DIR "/nan.safetensors", &after, &nafter) && nafter == nbefore && !memcmp(before, after, nafter);
        test_report(same, "nonfinite_checkpoint_kept", "the last good checkpoint is unchanged (%zu bytes)", nafter);
        mama_free(after);
    }
    mama_free(before);
    mama_model_free(m);
}

/* the val_loss column (the 12th) of a log: steps and values of the rows that have one */
static int log_vals(const char *path, long *steps, double *vals, int max) {
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;
    if (!f) return 0;
    if (!fgets(line, sizeof line, f) || !strstr(line, ",val_loss")) { fclose(f); return -1; }
    while (n < max && fgets(line, sizeof line, f)) {
        char *p = line;
        int comma = 0;
        long step = atol(line);
        while (*p && comma < 11) comma += *p++ == ',';
        if (comma == 11 && *p && *p != '\n') { steps[n] = step; vals[n++] = atof(p); }
    }
    fclose(f);
    return n;
}

/* a checkpoint's integer / number metadata (-1 / NaN when missing) */
static double ckpt_meta(const char *path, const char *key) {
    mama_safetensors st;
    const char *v;
    double x = NAN;
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, path) != MAMA_OK) return NAN;
    v = mama_st_meta(&st, key);
    if (v) x = atof(v);
    mama_st_close(&st);
    return x;
}

static mama_status run_val(mama_dataset *d, const char *ckpt, const char *log, long stop_at, int resume, float lr,
                           long late_loss, mama_pretrain_result *r) {
    mama_config c;
    mama_model *m = NULL;
    mama_pretrain_opts o;
    mama_status s;
    mama_config_preset(&c, "tiny");
    c.vision_depth = 1; c.text_depth = 1;
    MAMA_TRY(mama_model_create(&m, &c, CPU, 4, 5));
    memset(&o, 0, sizeof o); /* defaults: val at each checkpoint and at the end */
    o.steps = 6; o.stop_at = stop_at; o.batch = 4; o.accum = 1; o.lr = lr; o.warmup = 1; o.late_loss = late_loss;
    o.seed = 13; o.checkpoint = ckpt; o.checkpoint_every = 2; o.log_csv = log; o.resume = resume; o.quiet = 1;
    s = mama_pretrain(m, d, &o, r);
    mama_model_free(m);
    return s;
}

static void test_val(mama_dataset *d) {
    long st[16], st2[16];
    double v[16], v2[16], best_before;
    int n, n2, i, arg = 0, ok;
    mama_pretrain_result r, r1, r2;
    unsigned char *bytes1 = NULL;
    size_t nb1 = 0;
    remove(DIR "/v.safetensors"); remove(DIR "/v.best.safetensors");
    remove(DIR "/w.safetensors"); remove(DIR "/w.best.safetensors");
    if (run_val(d, DIR "/v.safetensors", DIR "/v.csv", 0, 0, 1e-3f, 3, &r) != MAMA_OK) {
        test_report(0, "val_log", "%s", mama_last_error());
        return;
    }
    n = log_vals(DIR "/v.csv", st, v, 16);
    printf("  %d val images; val losses:", mama_dataset_split(d, MAMA_SPLIT_VAL, NULL));
    for (i = 0; i < n; i++) printf(" step %ld %.6f", st[i], v[i]);
    printf("\n");
    test_report(n == 3 && st[0] == 2 && st[1] == 4 && st[2] == 6, "val_log",
                "val_loss logged on the checkpoint steps 2, 4 and the end 6 only (%d rows)", n);
    /* the best restarts at the first val with the late losses (step - 1 >=
     * late_loss 3): the argmin is over those rows when there are any */
    for (i = 0; i < n; i++) if (st[i] - 1 >= 3) { arg = i; break; }
    for (i = arg + 1; i < n; i++) if (v[i] < v[arg]) arg = i;
    ok = n == 3 && mama_read_file(DIR "/v.best.safetensors", &bytes1, &nb1) == MAMA_OK;
    mama_free(bytes1); bytes1 = NULL;
    test_report(ok && ckpt_meta(DIR "/v.best.safetensors", "best_val_step") == st[arg] &&
                ckpt_meta(DIR "/v.best.safetensors", "step") == st[arg] && r.best_val_step == st[arg] &&
                fabs(r.best_val_loss - v[arg]) < 1e-5 && ckpt_meta(DIR "/v.safetensors", "best_val_step") == st[arg],
                "val_best_file", "v.best.safetensors at step %g = argmin step %ld of the logged val (result: %.6f at %ld; "
                "last file records step %g)", ckpt_meta(DIR "/v.best.safetensors", "step"), n ? st[arg] : -1L,
                r.best_val_loss, r.best_val_step, ckpt_meta(DIR "/v.safetensors", "best_val_step"));
    /* resume from the middle checkpoint (step 4), the rest with a huge
     * learning rate: its vals are worse, the best stays (all four losses
     * from step 0, late_loss MAMA_OFF, so every val measures one objective) */
    if (run_val(d, DIR "/w.safetensors", DIR "/w.csv", 4, 0, 1e-3f, MAMA_OFF, &r1) != MAMA_OK ||
        mama_read_file(DIR "/w.best.safetensors", &bytes1, &nb1) != MAMA_OK ||
        run_val(d, DIR "/w.safetensors", DIR "/w.csv", 0, 1, 50.0f, MAMA_OFF, &r2) != MAMA_OK) {
        test_report(0, "val_resume_keeps_best", "%s", mama_last_error());
        mama_free(bytes1);
        return;
    }
    n2 = log_vals(DIR "/w.csv", st2, v2, 16);
    best_before = r1.best_val_loss;
    printf("  resumed log val losses:");
    for (i = 0; i < n2; i++) printf(" step %ld %.6g", st2[i], v2[i]);
    printf("\n");
    {   /* the same run without the stop (late_loss MAMA_OFF as well) */
        long stu[16];
        double vu[16];
        mama_pretrain_result ru;
        int nu;
        remove(DIR "/u.safetensors"); remove(DIR "/u.best.safetensors");
        nu = run_val(d, DIR "/u.safetensors", DIR "/u.csv", 0, 0, 1e-3f, MAMA_OFF, &ru) == MAMA_OK
                 ? log_vals(DIR "/u.csv", stu, vu, 16) : 0;
        ok = n2 == 3 && nu == 3 && st2[0] == 2 && st2[1] == 4 && st2[2] == 6 && v2[0] == vu[0] && v2[1] == vu[1];
        test_report(ok, "val_resume_log", "stop at 4 + resume: val rows at 2, 4, 6; the first two equal the "
                    "uninterrupted run's (%d rows)", nu);
    }
    {
        unsigned char *bytes2 = NULL;
        size_t nb2 = 0;
        int same = mama_read_file(DIR "/w.best.safetensors", &bytes2, &nb2) == MAMA_OK && nb2 == nb1 &&
                   !memcmp(bytes1, bytes2, nb1);
        int worse = n2 == 3 && !(v2[2] < best_before);
        test_report(worse && same && r2.best_val_step == r1.best_val_step && r2.best_val_loss == best_before &&
                    ckpt_meta(DIR "/w.safetensors", "best_val_step") == r1.best_val_step &&
                    fabs(ckpt_meta(DIR "/w.safetensors", "best_val_loss") - best_before) < 1e-6,
                    "val_resume_keeps_best", "best %.6f at step %ld before the resume; after it val %.6g (worse=%d), "
                    "best %.6f at step %ld, best file unchanged=%d, last file records step %g", best_before,
                    r1.best_val_step, n2 == 3 ? v2[2] : NAN, worse, r2.best_val_loss, r2.best_val_step, same,
                    ckpt_meta(DIR "/w.safetensors", "best_val_step"));
        mama_free(bytes2);
    }
    mama_free(bytes1);
}

static void test_finetune_val(mama_dataset *d) {
    mama_config c;
    mama_model *m = NULL;
    mama_probe_opts o;
    mama_eval_result a, b;
    mama_status s1, s2;
    mama_config_preset(&c, "tiny");
    c.vision_depth = 1; c.text_depth = 1;
    memset(&a, 0, sizeof a); memset(&b, 0, sizeof b);
    if (mama_model_create(&m, &c, CPU, 4, 5) != MAMA_OK) { test_report(0, "finetune_val", "%s", mama_last_error()); return; }
    memset(&o, 0, sizeof o);
    o.steps = 4; o.batch = 4; o.warmup = 1; o.lr = 0.05f; o.quiet = 1; o.val_every = 2;
    s1 = mama_finetune(m, d, MAMA_ZEROSHOT_DENSITY, &o, MAMA_SPLIT_TEST, &a);
    o.val_every = MAMA_OFF;
    s2 = mama_finetune(m, d, MAMA_ZEROSHOT_DENSITY, &o, MAMA_SPLIT_TEST, &b);
    test_report(s1 == MAMA_OK && s2 == MAMA_OK && (a.best_step == 2 || a.best_step == 4) && isfinite(a.best_val_loss) &&
                b.best_step == 0 && a.n > 0, "finetune_val",
                "val every 2 of 4 steps: evaluated the weights of step %ld (val loss %.4f); MAMA_OFF: step %ld (last)",
                a.best_step, a.best_val_loss, b.best_step);
    mama_eval_result_free(&a); mama_eval_result_free(&b);
    mama_model_free(m);
}

static void test_metrics(void) {
    /* binary: scores of the positive class and labels, AUC by hand:
     * positives {0.9, 0.4}, negatives {0.8, 0.3, 0.1}: pairs won = (0.9>all 3)
     * + (0.4 > 0.3, 0.1) = 5 of 6 -> AUC 5/6. */
    float p[10] = {0.1f, 0.9f, 0.2f, 0.8f, 0.6f, 0.4f, 0.7f, 0.3f, 0.9f, 0.1f};
    int y[5] = {1, 0, 1, 0, 0};
    mama_metrics mt;
    float q[12] = {0.7f, 0.2f, 0.1f, 0.2f, 0.5f, 0.3f, 0.1f, 0.3f, 0.6f, 0.5f, 0.4f, 0.1f};
    int z[4] = {0, 1, 2, 2};
    mama_metrics_compute(p, y, 5, 2, &mt);
    /* predictions argmax: [1,1,0,0,0] vs labels [1,0,1,0,0]: TP 1 FP 1 FN 1 TN 2 */
    test_report(fabs(mt.auc - 5.0 / 6.0) < 1e-12 && fabs(mt.accuracy - 0.6) < 1e-12 &&
                fabs(mt.sensitivity - 0.5) < 1e-12 && fabs(mt.specificity - 2.0 / 3.0) < 1e-12 &&
                fabs(mt.ppv - 0.5) < 1e-12 && fabs(mt.f1 - 0.5) < 1e-12 && fabs(mt.balanced_accuracy - (0.5 + 2.0 / 3.0) / 2) < 1e-12,
                "metrics_binary", "AUC %.4f (5/6), acc %.2f, sens %.2f, spec %.4f, PPV %.2f, F1 %.2f vs hand values",
                mt.auc, mt.accuracy, mt.sensitivity, mt.specificity, mt.ppv, mt.f1);
    /* spec@80%sens: thresholds on positive scores; at t = 0.4 both positives
     * are caught (sens 1.0), at t = 0.9 one (0.5): nearest 0.8 is 1.0 ->
     * specificity there = negatives below 0.4 = {0.3, 0.1} = 2/3.
     * pF1: p(pos) = {0.9, 0.8, 0.4, 0.3, 0.1}; pTP = 0.9+0.4 = 1.3, pFP = 1.2;
     * precision 0.52, recall 0.65, pF1 = 2*0.52*0.65/1.17 */
    test_report(fabs(mt.spec_at_80_sens - 2.0 / 3.0) < 1e-12 && fabs(mt.pf1 - 2 * 0.52 * 0.65 / 1.17) < 1e-6,
                "metrics_spec80_pf1", "spec@80%%sens %.4f (2/3), pF1 %.6f (%.6f)", mt.spec_at_80_sens, mt.pf1,
                2 * 0.52 * 0.65 / 1.17);
    /* 3 classes: predictions [0,1,2,0] vs [0,1,2,2] -> acc 0.75, recalls 1,1,0.5 */
    mama_metrics_compute(q, z, 4, 3, &mt);
    test_report(fabs(mt.accuracy - 0.75) < 1e-12 && fabs(mt.balanced_accuracy - 2.5 / 3) < 1e-12 && mt.confusion[2][0] == 1,
                "metrics_multiclass", "accuracy %.3f (0.75), balanced %.4f (0.8333), confusion[2][0]=%d (1)", mt.accuracy,
                mt.balanced_accuracy, mt.confusion[2][0]);
}

static int test_main(void) {
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    mama_config c;
    mkdir("build", 0755);
    if (mama_synth_write(DIR, 12, 96, 3, 1) != MAMA_OK) { printf("FAIL synth: %s\n", mama_last_error()); return 1; }
    mama_config_preset(&c, "tiny");
    mama_dataset_opts_default(&o);
    o.manifest = DIR "/manifest.csv";
    o.tokenizer = "weights/tiny_vocab";
    if (mama_dataset_create(&d, &o, &c) != MAMA_OK) { printf("FAIL dataset: %s\n", mama_last_error()); return 1; }
    test_metrics();
    test_resume(d);
    test_nonfinite(d);
    test_val(d);
    test_finetune_val(d);
    mama_dataset_free(d);
    return test_finish();
}

int main(void) { return test_with_cpu_backend(&CPU, test_main); }
