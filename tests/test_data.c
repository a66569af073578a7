/* tests/test_data.c - data hygiene as the reference (SPEC A.6, A.7):
 * - image_type "2D" in any case is kept, "FFDM"/"ffdm" left out and
 *   counted; split names and sides read in any case;
 * - incomplete records (caption without procedure, reason, density or
 *   BI-RADS) stay in the split but leave the pretraining split, unless
 *   keep_incomplete; every reason is counted;
 * - epochs are shuffles cut into full batches (no batch holds an image
 *   twice, each epoch covers floor(n / G) G distinct images), and a batch
 *   does not depend on where the loader started (resume);
 * - the second view comes from the usable training images of the exam;
 * - data checks (issue 16 item 6): a NUL byte in a field is a bad row named by
 *   file and line; a row equal to an earlier one is left out and counted; a
 *   patient in two splits is an error naming both rows, unless
 *   allow_split_overlap (then counted); hashed splits never overlap;
 * - the dataset's cache (decoded in parallel) and mama_image_reader (worker
 *   threads) give the bits of a serial pass, in order, whatever the threads;
 *   mama_dataset_opts.splits leaves the other splits' images undecoded. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "test_util.h"
#include <stdlib.h>
#include <sys/stat.h>

#define DIR "build/test_data_data"

static mama_config CFG;

static int write_text(const char *path, const char *text) {
    return mama_write_file_atomic(path, text, strlen(text)) == MAMA_OK;
}

static mama_status open_ds(mama_dataset **d, const char *csv, int keep_incomplete, int skip_bad) {
    mama_dataset_opts o;
    memset(&o, 0, sizeof o); /* every default */
    o.manifest = csv;
    o.tokenizer = "weights/tiny_vocab";
    o.keep_incomplete = keep_incomplete;
    o.skip_bad_rows = skip_bad;
    o.allow_split_overlap = 1; /* these manifests put one patient in several splits on purpose */
    return mama_dataset_create(d, &o, &CFG);
}

static int contains(const int *a, int n, int v) {
    int i;
    for (i = 0; i < n; i++) if (a[i] == v) return 1;
    return 0;
}

static void test_opts(void) {
    mama_dataset_opts z, o;
    memset(&z, 0, sizeof z);
    mama__dataset_opts_resolve(&z, &o);
    test_report(o.keep_incomplete == 0 && o.only_2d == 1, "opts_keep_incomplete_default", "zero: off (%d)", o.keep_incomplete);
    z.keep_incomplete = MAMA_OFF;
    mama__dataset_opts_resolve(&z, &o);
    test_report(o.keep_incomplete == 0, "opts_keep_incomplete_off", "MAMA_OFF: off (%d)", o.keep_incomplete);
    z.keep_incomplete = 1;
    mama__dataset_opts_resolve(&z, &o);
    test_report(o.keep_incomplete == 1, "opts_keep_incomplete_on", "1: on (%d)", o.keep_incomplete);
}

/* Rows 0..: the image type, split and side in many cases; incomplete ones. */
static const char *const HDR = "path,patient,study,side,view,procedure,age,race,ethnicity,image_type,density,birads,split\n";
#define IMG "images/p00001_L_CC.png"
#define FULL "MG Screening Bilateral,57,White,Non-Hispanic,"

static void test_hygiene(void) {
    mama_buf b = {NULL, 0, 0};
    mama_dataset *d = NULL;
    const mama_dataset_skips *k;
    const mama_record *r;
    const int *idx, *pidx;
    int n, pn, ok;
    mama_status s;
    mama_buf_puts(&b, HDR);
    mama_buf_puts(&b, IMG ",a,s1,L,CC," FULL "2D,3,N,train\n");               /* 0 kept */
    mama_buf_puts(&b, IMG ",a,s1,left,MLO," FULL "2d,3,N,TRAIN\n");           /* 1 kept, 2d -> 2D */
    mama_buf_puts(&b, IMG ",a,s1,LEFT,CC," FULL "FFDM,3,N,Train\n");          /* 2 not 2D */
    mama_buf_puts(&b, IMG ",a,s1,R,CC," FULL "ffdm,3,N,train\n");             /* 3 not 2D */
    mama_buf_puts(&b, IMG ",a,s1,r,CC," FULL ",3,N,Val\n");                   /* 4 unknown type: kept */
    mama_buf_puts(&b, IMG ",b,s2,L,CC,,57,White,Non-Hispanic,2D,3,N,train\n");              /* 5 no procedure */
    mama_buf_puts(&b, IMG ",b,s2,L,CC,MG Bilateral,57,White,Non-Hispanic,2D,3,N,train\n");  /* 6 no reason */
    mama_buf_puts(&b, IMG ",b,s2,L,CC,MG DIAGNOSTIC Left,57,White,,2D,3,N,test\n");          /* 7 ok (diag, any case) */
    mama_buf_puts(&b, IMG ",b,s2,L,CC," FULL "2D,,N,train\n");                 /* 8 no density */
    mama_buf_puts(&b, IMG ",b,s2,L,CC," FULL "2D,5,,train\n");                 /* 9 no BI-RADS */
    mama_buf_puts(&b, IMG ",b,s2,L,CC," FULL "2D,5,k,TEST\n");                 /* 10 ok: density 5, letter k */
    mama_buf_puts(&b, "images/missing.png,c,s3,L,CC," FULL "2D,3,N,train\n");  /* 11 unreadable */
    mama_buf_puts(&b, "images/missing2.png,c,s3,L,CC," FULL "FFDM,3,N,train\n"); /* 12 not 2D, never decoded */
    mama_buf_puts(&b, "bad row\n");                                            /* 13 bad row */
    ok = write_text(DIR "/hyg.csv", b.data);
    mama_buf_free(&b);
    if (!ok) { test_report(0, "hygiene", "cannot write the manifest"); return; }
    s = open_ds(&d, DIR "/hyg.csv", 0, 0);
    test_report(s != MAMA_OK, "hygiene_bad_row_fails", "without --skip-bad a bad row fails: %s", mama_last_error());
    mama_dataset_free(d);
    d = NULL;
    if (open_ds(&d, DIR "/hyg.csv", 0, 1) != MAMA_OK) { test_report(0, "hygiene", "%s", mama_last_error()); return; }
    k = mama_dataset_skipped_reasons(d);
    r = mama_dataset_manifest(d)->records;
    test_report(strcmp(r[1].image_type, "2D") == 0 && strcmp(r[2].image_type, "FFDM") == 0 &&
                strcmp(r[3].image_type, "ffdm") == 0,
                "hygiene_image_type_case", "\"2d\" stored as \"2D\", other types kept as written (%s %s %s)",
                r[1].image_type, r[2].image_type, r[3].image_type);
    test_report(!strcmp(r[0].side, "left") && !strcmp(r[1].side, "left") && !strcmp(r[2].side, "left") &&
                !strcmp(r[3].side, "right") && !strcmp(r[4].side, "right") && r[1].split == MAMA_SPLIT_TRAIN &&
                r[2].split == MAMA_SPLIT_TRAIN && r[4].split == MAMA_SPLIT_VAL && r[10].split == MAMA_SPLIT_TEST &&
                !strcmp(r[10].birads, "K"),
                "hygiene_categorical_case", "side L/left/LEFT/R/r, split train/TRAIN/Train/Val/TEST, BI-RADS k: any case");
    test_report(k->bad_rows == 1 && k->unreadable == 1 && k->not_2d == 3 && k->incomplete == 4 &&
                mama_dataset_skipped(d) == 2,
                "hygiene_counts", "bad rows %d (1), unreadable %d (1), not 2D %d (3: FFDM, ffdm, an unreadable FFDM "
                "never decoded), incomplete %d (4), mama_dataset_skipped %d (2)", k->bad_rows, k->unreadable,
                k->not_2d, k->incomplete, mama_dataset_skipped(d));
    n = mama_dataset_split(d, MAMA_SPLIT_TRAIN, &idx);
    pn = mama_dataset_pretrain_split(d, MAMA_SPLIT_TRAIN, &pidx);
    test_report(n == 6 && contains(idx, n, 0) && contains(idx, n, 1) && !contains(idx, n, 2) && !contains(idx, n, 3) &&
                contains(idx, n, 5) && contains(idx, n, 9) && !contains(idx, n, 11),
                "hygiene_train_split", "train split: 0 1 5 6 8 9 (2D any case, incomplete kept for evaluation): %d", n);
    test_report(pn == 2 && pidx[0] == 0 && pidx[1] == 1, "hygiene_pretrain_split",
                "pretraining reads the complete ones only: %d (2: rows 0, 1)", pn);
    test_report(mama_dataset_pretrain_split(d, MAMA_SPLIT_TEST, NULL) == 2 && mama_dataset_split(d, MAMA_SPLIT_VAL, NULL) == 1,
                "hygiene_other_splits", "test: rows 7 (\"MG DIAGNOSTIC\") and 10 (density 5) complete; val: row 4 "
                "(unknown image type kept)");
    mama_dataset_free(d);
    d = NULL;
    if (open_ds(&d, DIR "/hyg.csv", 1, 1) != MAMA_OK) { test_report(0, "hygiene_keep", "%s", mama_last_error()); return; }
    k = mama_dataset_skipped_reasons(d);
    test_report(k->incomplete == 0 && mama_dataset_pretrain_split(d, MAMA_SPLIT_TRAIN, NULL) == 6, "hygiene_keep_incomplete",
                "keep_incomplete: pretraining reads all 6 train rows, nothing counted incomplete (%d)", k->incomplete);
    mama_dataset_free(d);
}

/* "FFDM" on every row: the loader says why the train split is empty. */
static void test_all_ffdm(void) {
    mama_buf b = {NULL, 0, 0};
    mama_dataset *d = NULL;
    mama__loader L;
    mama_pretrain_opts o;
    mama_status s;
    int i;
    mama_buf_puts(&b, HDR);
    for (i = 0; i < 4; i++) mama_buf_puts(&b, IMG ",a,s1,L,CC," FULL "FFDM,3,N,train\n");
    write_text(DIR "/ffdm.csv", b.data);
    mama_buf_free(&b);
    if (open_ds(&d, DIR "/ffdm.csv", 0, 0) != MAMA_OK) { test_report(0, "ffdm_message", "%s", mama_last_error()); return; }
    mama_pretrain_opts_default(&o);
    o.batch = 2;
    s = mama__loader_init(&L, d, &o, 0, 0, 0, 1);
    test_report(s == MAMA_ERR_INVALID && strstr(mama_last_error(), "4 not 2D") != NULL, "ffdm_message",
                "all FFDM: %s", mama_last_error());
    if (s == MAMA_OK) mama__loader_free(&L);
    mama_dataset_free(d);
}

/* n = 11 training images, batch 3: 3 batches an epoch, 2 dropped. */
static void test_sampler(void) {
    mama_buf b = {NULL, 0, 0};
    mama_dataset *d = NULL;
    mama__loader L, R;
    mama_pretrain_opts o;
    const int n = 11, epochs = 6;
    int i, e, j, w, dup = 0, cover_ok = 1, resume_ok = 1, fresh = 0, G;
    int seen[11], first[3][11];
    mama_buf_puts(&b, HDR);
    for (i = 0; i < n; i++) mama_buf_printf(&b, IMG ",p%d,s%d,L,CC," FULL "2D,3,N,train\n", i, i);
    write_text(DIR "/sampler.csv", b.data);
    mama_buf_free(&b);
    if (open_ds(&d, DIR "/sampler.csv", 0, 0) != MAMA_OK) { test_report(0, "sampler", "%s", mama_last_error()); return; }
    mama_pretrain_opts_default(&o);
    for (w = 1; w <= 2; w++) { /* one rank of batch 3, then two ranks of batch 2 (G = 4, 2 batches an epoch) */
        mama__loader ranks[2];
        int B = w == 1 ? 3 : 2, r, per;
        o.batch = B;
        G = B * w;
        per = n / G;
        for (r = 0; r < w; r++)
            if (mama__loader_init(&ranks[r], d, &o, 0, 0, r, w) != MAMA_OK) { test_report(0, "sampler", "%s", mama_last_error()); return; }
        for (e = 0; e < epochs; e++) {
            memset(seen, 0, sizeof seen);
            for (j = 0; j < per; j++) {
                int batch[11], m = 0, x, y;
                for (r = 0; r < w; r++)
                    for (i = 0; i < B; i++) {
                        uint64_t key;
                        batch[m++] = mama__loader_record(&ranks[r], (long)e * per + j, i, &key);
                    }
                for (x = 0; x < m; x++)
                    for (y = x + 1; y < m; y++) dup += batch[x] == batch[y];
                for (x = 0; x < m; x++) seen[batch[x]]++;
                if (w == 1 && e < 3) for (x = 0; x < m; x++) first[e][j * B + x] = batch[x];
            }
            for (i = 0, j = 0; i < n; i++) { j += seen[i] > 0; if (seen[i] > 1) cover_ok = 0; }
            if (j != per * G) cover_ok = 0;
        }
        for (r = 0; r < w; r++) mama__loader_free(&ranks[r]);
    }
    test_report(dup == 0, "sampler_no_duplicates", "6 epochs of 11 images, batch 3 (1 rank) and 2 x 2 ranks: %d duplicate "
                "pairs in a batch (0)", dup);
    test_report(cover_ok, "sampler_epoch_cover", "every epoch covers floor(n/G) G distinct images (9 for G 3, 8 for G 4), "
                "none twice");
    for (i = 0; i < 9; i++) fresh += first[0][i] != first[1][i] || first[1][i] != first[2][i];
    test_report(fresh > 0, "sampler_fresh_shuffle", "epochs 0, 1, 2 are different permutations");
    /* resume: a loader that starts at job 7 (epoch 2) and one that ran from 0 agree, job by job */
    o.batch = 3;
    if (mama__loader_init(&L, d, &o, 0, 0, 0, 1) != MAMA_OK || mama__loader_init(&R, d, &o, 7, 7, 0, 1) != MAMA_OK) {
        test_report(0, "sampler_resume", "%s", mama_last_error());
        mama_dataset_free(d);
        return;
    }
    for (j = 0; j < 12; j++) { /* L runs through every job first */
        uint64_t k1;
        for (i = 0; i < 3; i++) (void)mama__loader_record(&L, j, i, &k1);
    }
    for (j = 7; j < 12; j++)
        for (i = 0; i < 3; i++) {
            uint64_t k1, k2;
            int b2 = mama__loader_record(&R, j, i, &k2), a = mama__loader_record(&L, j, i, &k1);
            if (a != b2 || k1 != k2) resume_ok = 0;
        }
    for (j = 0; j < 3; j++) { /* and going back to the first epoch */
        uint64_t k1;
        if (mama__loader_record(&R, j, 0, &k1) != first[0][j * 3]) resume_ok = 0;
    }
    test_report(resume_ok, "sampler_resume", "jobs 7..11 from a loader started at 7 == from one started at 0 (records "
                "and randomness keys)");
    mama__loader_free(&L);
    mama__loader_free(&R);
    mama_dataset_free(d);
}

/* Exam s1 of patient a: rows 0, 1 usable train; 2 val; 3 incomplete; 4 not 2D;
 * 5 unreadable.  Exam s2: row 6 alone among the usable. */
static void test_other_view(void) {
    mama_buf b = {NULL, 0, 0};
    mama_dataset *d = NULL;
    mama_rng rng;
    int i, hits[8] = {0}, bad = 0, alone, keep_hit = 0;
    mama_buf_puts(&b, HDR);
    mama_buf_puts(&b, IMG ",a,s1,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",a,s1,L,MLO," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",a,s1,R,CC," FULL "2D,3,N,val\n");
    mama_buf_puts(&b, IMG ",a,s1,R,MLO," FULL "2D,,N,train\n");
    mama_buf_puts(&b, IMG ",a,s1,R,MLO," FULL "FFDM,3,N,train\n");
    mama_buf_puts(&b, "images/missing.png,a,s1,R,MLO," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",a,s2,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",a,s2,L,MLO," FULL "2D,3,N,test\n");
    write_text(DIR "/views.csv", b.data);
    mama_buf_free(&b);
    if (open_ds(&d, DIR "/views.csv", 0, 1) != MAMA_OK) { test_report(0, "other_view", "%s", mama_last_error()); return; }
    mama_rng_seed(&rng, 5);
    for (i = 0; i < 400; i++) {
        int a = mama_dataset_other_view(d, 0, &rng), c = mama_dataset_other_view(d, 1, &rng);
        if (a != 1 || c != 0) bad++;
    }
    alone = mama_dataset_other_view(d, 6, &rng);
    test_report(bad == 0, "other_view_usable_train", "exam of 6: rows 0 and 1 only ever draw each other (val, "
                "incomplete, FFDM, unreadable excluded): %d wrong of 800", bad);
    test_report(alone == -1, "other_view_none", "a row whose exam has no other usable training image: -1 (%d) -> the "
                "loader augments the image itself twice", alone);
    mama_dataset_free(d);
    d = NULL;
    if (open_ds(&d, DIR "/views.csv", 1, 1) != MAMA_OK) { test_report(0, "other_view_keep", "%s", mama_last_error()); return; }
    for (i = 0; i < 400; i++) {
        int a = mama_dataset_other_view(d, 0, &rng);
        if (a >= 0 && a < 8) hits[a]++;
    }
    keep_hit = hits[1] > 100 && hits[3] > 100 && hits[1] + hits[3] == 400;
    test_report(keep_hit, "other_view_keep_incomplete", "keep_incomplete: row 0 draws rows 1 and 3 evenly (%d, %d of 400)",
                hits[1], hits[3]);
    mama_dataset_free(d);
}

/* The tokenizer and the model's config agree or the dataset fails early,
 * naming both sides: tiny_vocab fits tiny; with the small preset (GPT-2's
 * 50,263 ids) its special ids are wrong; a tiny config with another sep_id
 * is refused by name. */
static void test_tokenizer_fit(void) {
    mama_tokenizer *t = NULL;
    mama_config c;
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    int ok_tiny, small_refused, sep_refused, ds_refused;
    if (mama_tokenizer_load(&t, "weights/tiny_vocab") != MAMA_OK) {
        test_report(0, "tokenizer_fit", "%s", mama_last_error());
        return;
    }
    mama_config_preset(&c, "tiny");
    ok_tiny = mama_tokenizer_check_config(t, "weights/tiny_vocab", &c, "tiny") == MAMA_OK;
    mama_config_preset(&c, "small");
    small_refused = mama_tokenizer_check_config(t, "weights/tiny_vocab", &c, "the small preset") == MAMA_ERR_SHAPE &&
                    strstr(mama_last_error(), "weights/tiny_vocab") && strstr(mama_last_error(), "bos_id 50257");
    printf("  small: %s\n", mama_last_error());
    mama_config_preset(&c, "tiny");
    c.sep_id = c.pad_id + 1;
    sep_refused = mama_tokenizer_check_config(t, "weights/tiny_vocab", &c, NULL) == MAMA_ERR_SHAPE &&
                  strstr(mama_last_error(), "sep_id") != NULL;
    printf("  sep: %s\n", mama_last_error());
    memset(&o, 0, sizeof o);
    o.manifest = DIR "/manifest.csv";
    o.tokenizer = "weights/tiny_vocab";
    ds_refused = mama_dataset_create(&d, &o, &c) == MAMA_ERR_SHAPE && !d && strstr(mama_last_error(), "sep_id") != NULL;
    test_report(ok_tiny && small_refused && sep_refused && ds_refused, "tokenizer_fit",
                "tiny_vocab fits tiny=%d; refused, both sides named: small preset=%d, another sep_id=%d, and by "
                "mama_dataset_create=%d", ok_tiny, small_refused, sep_refused, ds_refused);
    mama_dataset_free(d);
    mama_tokenizer_free(t);
}

/* The data checks of issue 16 item 6, on generated manifests. */
static void test_checks(void) {
    static const char nul_csv[] = "path,patient,split\n" IMG ",a,train\n" IMG ",b\0x,train\n" IMG ",c,train\n";
    mama_buf b = {NULL, 0, 0};
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    const mama_dataset_skips *k;
    const int *idx;
    mama_status s;
    int n, ok;
    /* NUL byte: bad row with file and line; with skip_bad_rows skipped and counted */
    ok = mama_write_file_atomic(DIR "/nul.csv", nul_csv, sizeof nul_csv - 1) == MAMA_OK;
    memset(&o, 0, sizeof o);
    o.manifest = DIR "/nul.csv";
    s = mama_dataset_create(&d, &o, &CFG);
    ok = ok && s == MAMA_ERR_FORMAT && strstr(mama_last_error(), "nul.csv:3: bad row: field 2 holds a NUL byte");
    test_report(ok, "check_nul_byte", "\"b\\0x\" on line 3: %s", mama_last_error());
    o.skip_bad_rows = 1;
    s = mama_dataset_create(&d, &o, &CFG);
    ok = s == MAMA_OK && mama_dataset_skipped_reasons(d)->bad_rows == 1 && mama_dataset_manifest(d)->count == 2;
    test_report(ok, "check_nul_byte_skipped", "skip_bad_rows: 1 bad row, 2 records");
    mama_dataset_free(d);
    d = NULL;
    /* duplicates: rows 0 and 2 identical (2 left out), row 3 the same image with another view (kept) */
    mama_buf_puts(&b, HDR);
    mama_buf_puts(&b, IMG ",a,s1,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",b,s2,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",a,s1,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",a,s1,L,MLO," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ", a ,s1,left,CC," FULL "2d,3,n,Train\n"); /* row 0 again, written differently */
    write_text(DIR "/dup.csv", b.data);
    b.len = 0;
    memset(&o, 0, sizeof o);
    o.manifest = DIR "/dup.csv";
    s = mama_dataset_create(&d, &o, &CFG);
    k = s == MAMA_OK ? mama_dataset_skipped_reasons(d) : NULL;
    n = s == MAMA_OK ? mama_dataset_split(d, MAMA_SPLIT_TRAIN, &idx) : 0;
    ok = k && k->duplicates == 2 && n == 3 && idx[0] == 0 && idx[1] == 1 && idx[2] == 3 && k->overlap_patients == 0;
    test_report(ok, "check_duplicates", "%s; rows 2 and 4 repeat row 0 (4 after normalising case, spaces, L): "
                "duplicates %d (2), train rows %d (3: 0, 1, 3)", s == MAMA_OK ? "ok" : mama_last_error(),
                k ? k->duplicates : -1, n);
    mama_dataset_free(d);
    d = NULL;
    /* a patient in two explicit splits: an error naming the patient and both rows; allowed: counted */
    mama_buf_puts(&b, HDR);
    mama_buf_puts(&b, IMG ",a,s1,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",b,s2,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",b,s3,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",a,s4,L,CC," FULL "2D,3,N,test\n");
    mama_buf_puts(&b, IMG ",c,s5,L,CC," FULL "FFDM,3,N,test\n"); /* c: not 2D, not compared */
    mama_buf_puts(&b, IMG ",c,s6,L,CC," FULL "2D,3,N,train\n");
    mama_buf_puts(&b, IMG ",,s7,L,CC," FULL "2D,3,N,test\n");   /* unknown patients: not compared */
    mama_buf_puts(&b, IMG ",,s8,L,CC," FULL "2D,3,N,train\n");
    write_text(DIR "/leak.csv", b.data);
    b.len = 0;
    o.manifest = DIR "/leak.csv";
    s = mama_dataset_create(&d, &o, &CFG);
    ok = s == MAMA_ERR_FORMAT && !d && strstr(mama_last_error(), "1 patient(s)") &&
         strstr(mama_last_error(), "patient \"a\" in train (line 2) and test (line 5)") &&
         strstr(mama_last_error(), "allow_split_overlap");
    test_report(ok, "check_split_overlap", "%s", mama_last_error());
    o.allow_split_overlap = 1;
    s = mama_dataset_create(&d, &o, &CFG);
    ok = s == MAMA_OK && mama_dataset_skipped_reasons(d)->overlap_patients == 1;
    test_report(ok, "check_split_overlap_allowed", "allow_split_overlap: created, overlap_patients %d (1)",
                s == MAMA_OK ? mama_dataset_skipped_reasons(d)->overlap_patients : -1);
    mama_dataset_free(d);
    d = NULL;
    /* hashed splits (no split column) keep a patient together */
    mama_buf_puts(&b, "path,patient,study\n");
    for (n = 0; n < 40; n++) mama_buf_printf(&b, IMG ",p%d,s%d\n", n % 10, n);
    write_text(DIR "/hashed.csv", b.data);
    memset(&o, 0, sizeof o);
    o.manifest = DIR "/hashed.csv";
    s = mama_dataset_create(&d, &o, &CFG);
    test_report(s == MAMA_OK && mama_dataset_skipped_reasons(d)->overlap_patients == 0, "check_hashed_no_overlap",
                "40 rows of 10 patients, hashed splits: %s, no overlap", s == MAMA_OK ? "ok" : mama_last_error());
    mama_dataset_free(d);
    mama_buf_free(&b);
}

/* Issue 15 item 9, issue 18 item 4: the dataset's cache decodes in parallel
 * (OpenMP) and mama_image_reader in worker threads; both must give the bits
 * of one plain serial pass (load, mama_image_pipeline without augmentation)
 * whatever the number of threads, the reader in the order of its paths
 * and batches, and a file that cannot be read must fail its batch by name. */
static void test_parallel_decode(void) {
    const char *dir = DIR "_par";
    mama_manifest man;
    mama_dataset *d;
    mama_dataset_opts o;
    mama_augment_opts aug;
    size_t img = (size_t)CFG.in_chans * CFG.image_size * CFG.image_size;
    float *ref = NULL, *px;
    const char **paths = NULL;
    int n = 0, i, t, b, k, nt = mama_num_threads(), worst = 0, bad_ok = 0;
    static const int threads[3] = {1, 2, 3}, batches[3] = {1, 3, 5}, rthreads[3] = {MAMA_OFF, 1, 3};
    if (mama_synth_write(dir, 3, 96, 5, 0) != MAMA_OK || mama_manifest_load(&man, DIR "_par/manifest.csv", 0) != MAMA_OK) {
        test_report(0, "parallel_decode", "synth: %s", mama_last_error());
        return;
    }
    n = man.count;
    ref = (float *)malloc(sizeof(float) * img * (size_t)n);
    px = (float *)malloc(sizeof(float) * img);
    paths = (const char **)malloc(sizeof(char *) * (size_t)(n + 1));
    memset(&aug, 0, sizeof aug);
    aug.size = CFG.image_size;
    for (i = 0; i < n; i++) { /* the serial truth */
        mama_image im = {0, 0, NULL};
        paths[i] = man.records[i].path;
        if (mama_image_load(paths[i], &im) != MAMA_OK ||
            mama_image_pipeline(&im, &aug, 0, NULL, CFG.in_chans, ref + img * (size_t)i) != MAMA_OK) worst = -1;
        mama_image_free(&im);
    }
    for (t = 0; t < 3; t++) { /* the dataset's cache on 1, 2, 3 threads */
        int diff = 0;
        mama_set_num_threads(threads[t]);
        memset(&o, 0, sizeof o);
        o.manifest = DIR "_par/manifest.csv";
        if (mama_dataset_create(&d, &o, &CFG) != MAMA_OK) { diff = -1; } else {
            for (i = 0; i < n; i++)
                diff += mama_dataset_image(d, i, 0, NULL, px) != MAMA_OK || memcmp(px, ref + img * (size_t)i, img * sizeof(float)) != 0;
            mama_dataset_free(d);
        }
        test_report(diff == 0 && worst == 0, "dataset_cache_threads", "%d images of %s cached on %d thread(s): %d differ "
                    "from a serial load + mama_image_pipeline (bitwise)", n, dir, threads[t], diff);
    }
    mama_set_num_threads(nt);
    for (t = 0; t < 3; t++)
        for (b = 0; b < 3; b++) { /* the reader: no worker, 1 and 3 workers; batches of 1, 3, 5 */
            mama_image_reader *r = NULL;
            const float *x;
            int first, cnt = 1, seen = 0, diff = 0, order = 1;
            if (mama_image_reader_open(&r, &CFG, paths, n, NULL, batches[b], rthreads[t]) != MAMA_OK) diff = -1;
            while (diff >= 0 && cnt > 0) {
                if (mama_image_reader_next(r, &x, &first, &cnt) != MAMA_OK) { diff = -1; break; }
                order &= cnt == 0 || (first == seen && cnt <= batches[b]);
                for (k = 0; k < cnt; k++) diff += memcmp(x + img * (size_t)k, ref + img * (size_t)(first + k), img * sizeof(float)) != 0;
                seen += cnt;
            }
            mama_image_reader_close(r);
            test_report(diff == 0 && order && seen == n, "image_reader", "%d files, %d worker(s) (-1: none), batch %d: "
                        "%d images differ from the serial pipeline (bitwise), in order %d, all %d", n, rthreads[t],
                        batches[b], diff, order, seen == n);
        }
    /* a missing file in the second batch: the first batch comes, the second fails naming it */
    paths[4] = DIR "_par/missing.png";
    for (t = 0; t < 3; t++) {
        mama_image_reader *r = NULL;
        const float *x;
        int first, cnt;
        mama_status s1 = MAMA_ERR_INVALID, s2 = MAMA_OK;
        if (mama_image_reader_open(&r, &CFG, paths, n, NULL, 3, rthreads[t]) == MAMA_OK) {
            s1 = mama_image_reader_next(r, &x, &first, &cnt);
            s2 = mama_image_reader_next(r, &x, &first, &cnt);
        }
        bad_ok = s1 == MAMA_OK && s2 == MAMA_ERR_IO && strstr(mama_last_error(), "missing.png") != NULL;
        test_report(bad_ok, "image_reader_missing", "%d worker(s): batch 1 %s, batch 2 (file 4 missing): %s", rthreads[t],
                    mama_status_name(s1), mama_last_error());
        mama_image_reader_close(r);
    }
    free(ref); free(px); free(paths);
    mama_manifest_free(&man);
}

/* mama_dataset_opts.splits: the records of other splits are neither decoded
 * nor placed (a missing test image does not fail a train-only dataset) and
 * the train split is the one of the full dataset. */
static void test_splits_opt(void) {
    mama_dataset *d = NULL, *full = NULL;
    mama_dataset_opts o;
    mama_buf b = {0, 0, 0};
    mama_manifest man;
    const int *ia, *ib;
    int i, na, nb, same = 1, test_row = -1;
    mama_status s1, s2, s3;
    if (mama_manifest_load(&man, DIR "_par/manifest.csv", 0) != MAMA_OK) { test_report(0, "splits_opt", "%s", mama_last_error()); return; }
    mama_buf_puts(&b, "path,patient,study,side,view,procedure,age,race,ethnicity,image_type,density,birads,mass_shape,"
                      "mass_density,calc_type,calc_distribution,cancer,split\n");
    for (i = 0; i < man.count; i++) {
        const mama_record *r = &man.records[i];
        if (r->split == MAMA_SPLIT_TEST && test_row < 0) test_row = i;
        mama_buf_printf(&b, "%s,%s,%s,%s,%s,%s,%d,,,2D,%d,%s,,,,,%d,%s\n", i == test_row ? "missing.png" : r->path + strlen(DIR "_par/"),
                        r->patient, r->study, r->side, r->view, r->procedure, r->age, r->density, r->birads, r->cancer,
                        mama_split_name(r->split));
    }
    write_text(DIR "_par/splits.csv", b.data);
    memset(&o, 0, sizeof o);
    o.manifest = DIR "_par/manifest.csv";
    s1 = mama_dataset_create(&full, &o, &CFG);
    o.manifest = DIR "_par/splits.csv";
    s2 = mama_dataset_create(&d, &o, &CFG); /* every split: the missing test image fails */
    mama_dataset_free(d);
    d = NULL;
    o.splits = 1 << MAMA_SPLIT_TRAIN;
    s3 = mama_dataset_create(&d, &o, &CFG);
    if (s1 == MAMA_OK && s3 == MAMA_OK) {
        na = mama_dataset_pretrain_split(full, MAMA_SPLIT_TRAIN, &ia);
        nb = mama_dataset_pretrain_split(d, MAMA_SPLIT_TRAIN, &ib);
        same = na == nb && na > 0 && !memcmp(ia, ib, sizeof(int) * (size_t)na);
    }
    test_report(test_row >= 0 && s1 == MAMA_OK && s2 == MAMA_ERR_IO && s3 == MAMA_OK && same &&
                mama_dataset_split(d, MAMA_SPLIT_TEST, NULL) == 0 && mama_dataset_split(d, MAMA_SPLIT_VAL, NULL) == 0 &&
                mama_dataset_skipped(d) == 0, "splits_opt",
                "test row %d missing: all splits %s, splits = train %s (val %d, test %d images, %d skipped), train "
                "split as the full dataset's %d", test_row, mama_status_name(s2), mama_status_name(s3),
                d ? mama_dataset_split(d, MAMA_SPLIT_VAL, NULL) : -1, d ? mama_dataset_split(d, MAMA_SPLIT_TEST, NULL) : -1,
                d ? mama_dataset_skipped(d) : -1, same);
    o.splits = 8;
    mama_dataset_free(d);
    d = NULL;
    s1 = mama_dataset_create(&d, &o, &CFG);
    test_report(s1 == MAMA_ERR_INVALID && strstr(mama_last_error(), "splits"), "splits_opt_invalid", "splits 8: %s",
                mama_last_error());
    mama_dataset_free(d);
    mama_dataset_free(full);
    mama_buf_free(&b);
    mama_manifest_free(&man);
}

int main(void) {
    mkdir("build", 0755);
    if (mama_synth_write(DIR, 1, 64, 3, 0) != MAMA_OK) { printf("FAIL synth: %s\n", mama_last_error()); return 1; }
    mama_config_preset(&CFG, "tiny");
    test_opts();
    test_hygiene();
    test_all_ffdm();
    test_sampler();
    test_other_view();
    test_tokenizer_fit();
    test_checks();
    test_parallel_decode();
    test_splits_opt();
    return test_finish();
}
