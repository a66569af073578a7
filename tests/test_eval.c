/* tests/test_eval.c - the evaluation protocol's options and prediction
 * (issue 15 items 3, 6, 7):
 * - class lists parse by name or category number;
 * - the class-balanced test subset takes, per class, the number the rule
 *   says (counted here by hand), is deterministic and follows its seed;
 * - a class subset's zero-shot probabilities are the full ones
 *   renormalised over the chosen classes; the double softmax is the
 *   softmax of the single one (argmax unchanged);
 * - a probe head saved and loaded gives the probe's own probabilities;
 * - fine-tuning a batch larger than the model takes at once (chunks)
 *   matches one model that takes it whole;
 * - mama_predict: each task sums to 1, equals zero-shot on the same image
 *   and metadata, and with a head equals the probe;
 * - the tokenizer record: fingerprint, saved and loaded with the weights,
 *   a tokenizer with other merges refused. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "test_util.h"
#include <stdlib.h>
#include <sys/stat.h>

static mama_backend *CPU;
#define DIR "build/test_eval_data"

static void test_classes(void) {
    unsigned m1 = 0, m2 = 0, m3 = 0, bad = 0;
    mama_status a = mama_task_parse_classes(MAMA_ZEROSHOT_DENSITY, "2,3,4", "--classes", &m1);
    mama_status b = mama_task_parse_classes(MAMA_ZEROSHOT_BIRADS, "N,B,P,S,M", "--classes", &m2);
    mama_status c = mama_task_parse_classes(MAMA_ZEROSHOT_BIRADS, "1,2,3,4,5", "--classes", &m3);
    mama_status e1 = mama_task_parse_classes(MAMA_ZEROSHOT_DENSITY, "3", "--classes", &bad);
    mama_status e2 = mama_task_parse_classes(MAMA_ZEROSHOT_DENSITY, "1,5", "--classes", &bad);
    test_report(a == MAMA_OK && m1 == 0xEu && b == MAMA_OK && m2 == 0x3Eu && c == MAMA_OK && m3 == m2 &&
                e1 == MAMA_ERR_INVALID && e2 == MAMA_ERR_INVALID,
                "parse_classes", "density 2,3,4 -> 0x%x (0xe), BI-RADS N..M -> 0x%x and 1..5 -> 0x%x (0x3e); one class "
                "and class 5 refused (%s, %s)", m1, m2, m3, mama_status_name(e1), mama_status_name(e2));
    test_report(!strcmp(mama_task_class_name(MAMA_ZEROSHOT_BIRADS, 6), "K") &&
                !strcmp(mama_predict_column_name(0), "density_1") && !strcmp(mama_predict_column_name(4), "birads_A") &&
                !strcmp(mama_predict_column_name(12), "cancer_1") && !mama_predict_column_name(13),
                "column_names", "density_1 .. birads_A .. cancer_1, 13 columns");
}

/* The balanced subset counted by hand: n labelled test images, Kp classes,
 * quota max(1, round(f n / Kp)). */
static void test_balanced(mama_model *m, mama_dataset *d) {
    mama_eval_opts eo;
    mama_eval_result all, sub, again, other;
    int cnt[4] = {0, 0, 0, 0}, got[4] = {0, 0, 0, 0}, Kp = 0, q, k, i, ok = 1, same = 1, differs = 0;
    memset(&eo, 0, sizeof eo);
    if (mama_zeroshot_ex(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &eo, &all) != MAMA_OK) {
        test_report(0, "balanced_subset", "%s", mama_last_error());
        return;
    }
    for (i = 0; i < all.n; i++) cnt[all.labels[i]]++;
    for (k = 0; k < 4; k++) Kp += cnt[k] > 0;
    eo.balanced_test = 0.5f;
    q = (int)floor(0.5 * all.n / Kp + 0.5);
    if (q < 1) q = 1;
    mama_zeroshot_ex(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &eo, &sub);
    mama_zeroshot_ex(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &eo, &again);
    eo.subset_seed = 7;
    mama_zeroshot_ex(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &eo, &other);
    for (i = 0; i < sub.n; i++) {
        got[sub.labels[i]]++;
        if (mama_task_label(MAMA_ZEROSHOT_DENSITY, &mama_dataset_manifest(d)->records[sub.records[i]]) != sub.labels[i]) ok = 0;
        if (i > 0 && sub.records[i] <= sub.records[i - 1]) ok = 0; /* split order */
    }
    for (k = 0; k < 4; k++) if (got[k] != (cnt[k] < q ? cnt[k] : q)) ok = 0;
    same = again.n == sub.n && !memcmp(again.records, sub.records, sizeof(int) * (size_t)sub.n);
    for (i = 0; i < sub.n && i < other.n; i++) differs |= other.records[i] != sub.records[i];
    test_report(ok && same && differs && other.n == sub.n, "balanced_subset",
                "%d test images, per class %d/%d/%d/%d -> quota %d: took %d/%d/%d/%d; the same again, another seed "
                "another subset of the same size", all.n, cnt[0], cnt[1], cnt[2], cnt[3], q, got[0], got[1], got[2],
                got[3]);
    mama_eval_result_free(&all); mama_eval_result_free(&sub); mama_eval_result_free(&again);
    mama_eval_result_free(&other);
}

/* Class subsets renormalise, the double softmax is softmax(p). */
static void test_zeroshot_opts(mama_model *m, mama_dataset *d) {
    mama_eval_opts eo;
    mama_eval_result full, sub, dbl;
    int i, k, j, argmax_same = 1;
    double worst = 0, worst2 = 0;
    memset(&eo, 0, sizeof eo);
    mama_zeroshot_ex(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &eo, &full);
    eo.classes = 0xEu; /* density 2, 3, 4 */
    if (mama_zeroshot_ex(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &eo, &sub) != MAMA_OK) {
        test_report(0, "zeroshot_classes", "%s", mama_last_error());
        mama_eval_result_free(&full);
        return;
    }
    for (i = 0, j = 0; i < full.n; i++) {
        double z = 0;
        if (full.labels[i] == 0) continue; /* density 1: not in the subset */
        if (j >= sub.n || sub.records[j] != full.records[i] || sub.labels[j] != full.labels[i] - 1) { worst = 1e9; break; }
        for (k = 1; k < 4; k++) z += full.probs[i * 4 + k];
        for (k = 1; k < 4; k++) {
            double e = fabs(sub.probs[j * 3 + k - 1] - full.probs[i * 4 + k] / z);
            if (e > worst) worst = e;
        }
        j++;
    }
    test_report(sub.K == 3 && sub.classes[0] == 1 && sub.classes[2] == 3 && j == sub.n && worst < 1e-5,
                "zeroshot_classes", "density 2,3,4: %d images (K %d), probabilities = full ones renormalised, worst %.2e",
                sub.n, sub.K, worst);
    memset(&eo, 0, sizeof eo);
    eo.double_softmax = 1;
    mama_zeroshot_ex(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_DENSITY, &eo, &dbl);
    for (i = 0; i < full.n; i++) {
        double z = 0, e;
        int a = 0, b = 0;
        for (k = 0; k < 4; k++) z += exp(full.probs[i * 4 + k]);
        for (k = 0; k < 4; k++) {
            e = fabs(dbl.probs[i * 4 + k] - exp(full.probs[i * 4 + k]) / z);
            if (e > worst2) worst2 = e;
            if (full.probs[i * 4 + k] > full.probs[i * 4 + a]) a = k;
            if (dbl.probs[i * 4 + k] > dbl.probs[i * 4 + b]) b = k;
        }
        argmax_same &= a == b;
    }
    test_report(dbl.n == full.n && worst2 < 1e-6 && argmax_same && dbl.metrics.accuracy == full.metrics.accuracy,
                "zeroshot_double_softmax", "softmax of the single-softmax scores, worst %.2e; argmax and accuracy "
                "unchanged (%.4f); AUC %.4f -> %.4f", worst2, dbl.metrics.accuracy, full.metrics.auc, dbl.metrics.auc);
    mama_eval_result_free(&full); mama_eval_result_free(&sub); mama_eval_result_free(&dbl);
}

/* Probe head: save, load, apply == the probe's probabilities; predict with
 * the head == the same; predict without == zero-shot. */
static void test_head_predict(mama_model *m, mama_dataset *d) {
    mama_probe_opts po;
    mama_eval_result r, zs;
    mama_head h;
    const mama_config *c = mama_model_config(m);
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    int n, i, k, D = c->vision_dim, ok_sum = 1;
    float *px = NULL, *feat = NULL, *hp = NULL, *pr = NULL;
    double w1 = 0, w2 = 0, w3 = 0;
    mama_caption_fields *meta = NULL;
    mama_probe_opts_default(&po);
    po.steps = 20; po.augment = MAMA_OFF; po.quiet = 1;
    po.eval.classes = 0xEu;
    if (mama_linear_probe(m, d, MAMA_ZEROSHOT_DENSITY, &po, MAMA_SPLIT_TEST, &r) != MAMA_OK ||
        mama_head_save(&r.head, "build/test_eval_head.safetensors") != MAMA_OK ||
        mama_head_load(&h, "build/test_eval_head.safetensors") != MAMA_OK) {
        test_report(0, "head_roundtrip", "%s", mama_last_error());
        return;
    }
    test_report(po.batch == 72 && h.K == 3 && h.D == D && h.task == MAMA_ZEROSHOT_DENSITY && !h.finetuned &&
                h.classes[0] == 1 && h.classes[2] == 3 && !memcmp(h.W, r.head.W, sizeof(float) * 3 * (size_t)D) &&
                !memcmp(h.b, r.head.b, sizeof(float) * 3),
                "head_roundtrip", "probe batch %d (72), head [%d, %d] of density 2,3,4 saved and loaded bit for bit",
                po.batch, h.K, h.D);
    n = r.n;
    px = (float *)malloc(sizeof(float) * img * n);
    feat = (float *)malloc(sizeof(float) * (size_t)D * n);
    hp = (float *)malloc(sizeof(float) * 3 * n);
    pr = (float *)malloc(sizeof(float) * MAMA_PREDICT_COLUMNS * n);
    meta = (mama_caption_fields *)malloc(sizeof *meta * n);
    for (i = 0; i < n; i++) {
        mama_dataset_image(d, r.records[i], 0, NULL, px + img * i);
        mama_record_caption_fields(&mama_dataset_manifest(d)->records[r.records[i]], &meta[i]);
    }
    mama_encode_images(m, px, n < 8 ? n : 8, NULL, feat); /* first chunk */
    for (i = 8; i < n; i += 8) mama_encode_images(m, px + img * i, n - i < 8 ? n - i : 8, NULL, feat + (size_t)i * D);
    mama_head_apply(&h, feat, n, hp);
    for (i = 0; i < 3 * n; i++) if (fabs(hp[i] - r.probs[i]) > w1) w1 = fabs(hp[i] - r.probs[i]);
    test_report(w1 < 1e-6, "head_apply", "the loaded head on %d test images == the probe's probabilities, worst %.2e",
                n, w1);
    /* predict with the head: density columns from it, density_1 = 0 */
    if (mama_predict(m, mama_dataset_tokenizer(d), px, n, meta, &h, pr) != MAMA_OK) {
        test_report(0, "predict_head", "%s", mama_last_error());
    } else {
        for (i = 0; i < n; i++) {
            double s1 = 0, s2 = 0, s3 = 0;
            for (k = 0; k < 4; k++) s1 += pr[i * 13 + k];
            for (k = 4; k < 11; k++) s2 += pr[i * 13 + k];
            for (k = 11; k < 13; k++) s3 += pr[i * 13 + k];
            ok_sum &= fabs(s1 - 1) < 1e-5 && fabs(s2 - 1) < 1e-5 && fabs(s3 - 1) < 1e-5 && pr[i * 13] == 0;
            for (k = 0; k < 3; k++)
                if (fabs(pr[i * 13 + 1 + k] - r.probs[i * 3 + k]) > w2) w2 = fabs(pr[i * 13 + 1 + k] - r.probs[i * 3 + k]);
        }
        test_report(ok_sum && w2 < 1e-5, "predict_head", "%d images: every task sums to 1, density_1 = 0, "
                    "density_2..4 == the probe's, worst %.2e", n, w2);
    }
    /* predict without a head: BI-RADS columns == zero-shot BI-RADS of the same images */
    mama_zeroshot(m, d, MAMA_SPLIT_TEST, MAMA_ZEROSHOT_BIRADS, 0, &zs);
    if (mama_predict(m, mama_dataset_tokenizer(d), px, n, meta, NULL, pr) == MAMA_OK) {
        int matched = 0, j = 0;
        for (i = 0; i < n; i++) {
            while (j < zs.n && zs.records[j] < r.records[i]) j++;
            if (j == zs.n || zs.records[j] != r.records[i]) continue;
            matched++;
            for (k = 0; k < 7; k++)
                if (fabs(pr[i * 13 + 4 + k] - zs.probs[j * 7 + k]) > w3) w3 = fabs(pr[i * 13 + 4 + k] - zs.probs[j * 7 + k]);
        }
        test_report(matched > 0 && w3 < 1e-5, "predict_zeroshot", "%d images with a BI-RADS label: predict's birads_* "
                    "== mama_zeroshot's, worst %.2e", matched, w3);
    } else {
        test_report(0, "predict_zeroshot", "%s", mama_last_error());
    }
    mama_eval_result_free(&zs);
    free(px); free(feat); free(hp); free(pr); free(meta);
    mama_head_free(&h);
    mama_eval_result_free(&r);
}

/* Fine-tuning in chunks (max_batch 2: 4 images a pass, batch 6) == whole
 * (max_batch 3: 6 images a pass). */
static void test_finetune_chunks(mama_dataset *d) {
    mama_config cfg;
    mama_model *a = NULL, *b = NULL;
    mama_probe_opts po;
    mama_eval_result ra, rb;
    const mama_param_info *head;
    size_t n, i;
    float *wa, *wb;
    double worst = 0, scale = 0, pw = 0;
    mama_config_preset(&cfg, "tiny");
    mama_model_create(&a, &cfg, CPU, 2, 5);
    mama_model_create(&b, &cfg, CPU, 3, 5);
    mama_probe_opts_default(&po);
    po.steps = 2; po.batch = 6; po.quiet = 1; po.val_every = MAMA_OFF; po.warmup = MAMA_OFF; po.lr = 1e-2f;
    if (mama_finetune(a, d, MAMA_ZEROSHOT_DENSITY, &po, MAMA_SPLIT_TEST, &ra) != MAMA_OK ||
        mama_finetune(b, d, MAMA_ZEROSHOT_DENSITY, &po, MAMA_SPLIT_TEST, &rb) != MAMA_OK) {
        test_report(0, "finetune_chunks", "%s", mama_last_error());
        mama_model_free(a); mama_model_free(b);
        return;
    }
    head = mama_model_find_param(a, "img_encoder_q.global_embed.weight");
    n = head->offset;
    wa = (float *)malloc(sizeof(float) * n); wb = (float *)malloc(sizeof(float) * n);
    CPU->to_host(CPU, wa, mama_model_params(a), sizeof(float) * n);
    CPU->to_host(CPU, wb, mama_model_params(b), sizeof(float) * n);
    for (i = 0; i < n; i++) {
        if (fabs(wa[i] - wb[i]) > worst) worst = fabs(wa[i] - wb[i]);
        if (fabs(wb[i]) > scale) scale = fabs(wb[i]);
    }
    for (i = 0; i < (size_t)ra.n * ra.K; i++) if (fabs(ra.probs[i] - rb.probs[i]) > pw) pw = fabs(ra.probs[i] - rb.probs[i]);
    test_report(ra.head.finetuned && worst <= 1e-5 * scale && pw < 1e-4, "finetune_chunks",
                "batch 6 through 4-image chunks vs whole: vision weights (%zu) worst abs diff %.2e (max |w| %.3f), "
                "test probabilities worst %.2e", n, worst, scale, pw);
    free(wa); free(wb);
    mama_eval_result_free(&ra); mama_eval_result_free(&rb);
    mama_model_free(a); mama_model_free(b);
}

/* The tokenizer record and its check. */
static void test_tokenizer_record(mama_model *m, mama_dataset *d) {
    const mama_tokenizer *t = mama_dataset_tokenizer(d);
    mama_tokenizer *other = NULL;
    mama_model *back = NULL;
    char fp[48], fp2[48];
    const char *path, *abs_path = NULL, *rfp = NULL;
    unsigned char *v = NULL, *mg = NULL;
    size_t nv = 0, nm = 0;
    mama_status s1, s2;
    mama_config base;
    mama_tokenizer_fingerprint(t, fp, sizeof fp);
    mama_model_set_tokenizer(m, "weights/tiny_vocab", t);
    mama_model_save(m, "build/test_eval_model.safetensors");
    if (mama_model_load(&back, "build/test_eval_model.safetensors", CPU, 2) != MAMA_OK) {
        test_report(0, "tokenizer_record", "%s", mama_last_error());
        return;
    }
    path = mama_model_tokenizer(back, &abs_path, &rfp);
    test_report(fp[0] == 'v' && strlen(fp) > 17 && path && !strcmp(path, "weights/tiny_vocab") && rfp && !strcmp(rfp, fp) &&
                abs_path && abs_path[0] == '/' && mama_model_check_tokenizer(back, t, "weights/tiny_vocab") == MAMA_OK,
                "tokenizer_record", "fingerprint %s and path '%s' (absolute %s) saved with the weights and read back; "
                "the same tokenizer passes", fp, path ? path : "(none)", abs_path ? abs_path : "(none)");
    /* the same vocabulary with the last merge dropped */
    mama_read_file("weights/tiny_vocab/vocab.json", &v, &nv);
    mama_read_file("weights/tiny_vocab/merges.txt", &mg, &nm);
    while (nm > 1 && mg[nm - 2] != '\n') nm--;
    mama_tokenizer_load_memory(&other, (const char *)v, nv, (const char *)mg, nm - 1, "other");
    fp2[0] = 0;
    if (other) mama_tokenizer_fingerprint(other, fp2, sizeof fp2);
    s1 = other ? mama_model_check_tokenizer(back, other, "other") : MAMA_ERR_INVALID;
    test_report(other && strcmp(fp, fp2) && s1 == MAMA_ERR_SHAPE && strstr(mama_last_error(), fp),
                "tokenizer_mismatch", "one merge fewer: fingerprint %s, refused naming both (%s)", fp2, mama_last_error());
    mama_config_preset(&base, "base");
    s2 = mama_tokenizer_check_config(t, "weights/tiny_vocab", &base, "--config base");
    test_report(s2 == MAMA_ERR_SHAPE, "tokenizer_vs_base", "tiny vocabulary vs base config: %s", mama_last_error());
    mama_free(v); mama_free(mg);
    mama_tokenizer_free(other);
    mama_model_free(back);
}

static int test_main(void) {
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    mama_config c;
    mama_model *m = NULL;
    mkdir("build", 0755);
    test_classes();
    if (mama_synth_write(DIR, 16, 96, 5, 1) != MAMA_OK) { printf("FAIL synth: %s\n", mama_last_error()); return 1; }
    mama_config_preset(&c, "tiny");
    mama_dataset_opts_default(&o);
    o.manifest = DIR "/manifest.csv";
    o.tokenizer = "weights/tiny_vocab";
    if (mama_dataset_create(&d, &o, &c) != MAMA_OK || mama_model_create(&m, &c, CPU, 4, 3) != MAMA_OK) {
        printf("FAIL setup: %s\n", mama_last_error());
        return 1;
    }
    {   /* the arena a model allocates, measured without one */
        mama_config b;
        mama_config_preset(&b, "base");
        test_report(mama_model_arena_bytes(&c, 4) == sizeof(float) * m->arena_floats &&
                    mama_model_arena_bytes(&b, 16) > 50000000000.0 && mama_model_arena_bytes(&b, 1) < 4000000000.0,
                    "arena_bytes", "tiny at max_batch 4: %zu bytes == the model's arena; base: %.1f GB at 16, %.2f GB at 1",
                    mama_model_arena_bytes(&c, 4), mama_model_arena_bytes(&b, 16) / 1e9, mama_model_arena_bytes(&b, 1) / 1e9);
    }
    test_balanced(m, d);
    test_zeroshot_opts(m, d);
    test_head_predict(m, d);
    test_finetune_chunks(d);
    test_tokenizer_record(m, d);
    mama_model_free(m);
    mama_dataset_free(d);
    return test_finish();
}

int main(void) { return test_with_cpu_backend(&CPU, test_main); }
