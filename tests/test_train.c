/* tests/test_train.c - the training loop's promises:
 * - resume is exact: 2N steps in one run == N steps, checkpoint, resume, N
 *   steps (every logged loss and the final weights bit for bit);
 * - non-finite steps are skipped and counted, and K in a row stop training
 *   with MAMA_ERR_NUMERIC while the last checkpoint stays as it was;
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
    if (run(d, DIR "/nan.safetensors", NULL, 2, 0, 0, &m) != MAMA_OK) { test_report(0, "nonfinite_stop", "%s", mama_last_error()); return; }
    read_file(DIR "/nan.safetensors", &before, &nbefore);
    mama_model_params(m)[mama_model_find_param(m, "img_encoder_q.model.pos_embed")->offset] = NAN;
    mama_pretrain_opts_default(&o);
    o.steps = 10; o.batch = 4; o.accum = 1; o.warmup = 1; o.late_loss = 100; o.seed = 12; o.quiet = 1;
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
    mama_dataset_free(d);
    return test_finish();
}

int main(void) { return test_with_cpu_backend(&CPU, test_main); }
