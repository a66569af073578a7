/* tests/test_harden.c - hostile checkpoints and configs, and recovery
 * (issue 16).  Every hostile file is made here from a valid micro
 * checkpoint (a pretraining run of 2 steps on synthetic data):
 * - checkpoint metadata out of range (step "-5", malformed seeds, AdamW step
 *   counts past the step, ...) and configs out of range (vision_depth 1e8,
 *   image_size 2e9, context 1e300, a config needing more weights than the
 *   file holds) are MAMA_ERR_FORMAT naming file, field and value, refused
 *   before any large allocation (the largest single allocation is measured
 *   through the MAMA_MALLOC hook);
 * - non-finite weights or AdamW moments are refused at load
 *   (MAMA_ERR_NUMERIC naming the tensor) and never written: a run whose
 *   weights hold a NaN ends with MAMA_ERR_NUMERIC and leaves the previous
 *   checkpoint byte for byte;
 * - a resume with another batch, accum, lr or late_loss is an error naming
 *   both values unless allow_changes; a resume past the run's steps too;
 * - a run killed (SIGKILL) while writing a checkpoint: its temporary file is
 *   removed at the resume (one of a process that still runs is kept) and the
 *   log holds every step once;
 * - an unwritable checkpoint directory or log fails before the first step. */
#define _POSIX_C_SOURCE 200809L /* fork, kill, waitpid */
#include <stdlib.h>
#include <string.h>
static size_t test_biggest; /* the largest single allocation since the last reset */
static void *test_malloc(size_t n) {
    if (n > test_biggest) test_biggest = n;
    return malloc(n);
}
#define MAMA_MALLOC(sz) test_malloc(sz)
#define MAMA_REALLOC(p, sz) realloc(p, sz)
#define MAMA_FREE(p) free(p)
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "test_util.h"
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#define HDIR "build/test_harden_data"
#define GOOD HDIR "/good.safetensors"
#define BAD HDIR "/bad.safetensors"

static mama_backend *CPU;
static mama_dataset *D;

static void micro_config(mama_config *c) {
    mama_config_preset(c, "tiny");
    c->image_size = 28; c->patch_size = 14; c->vision_dim = 16; c->vision_depth = 1; c->vision_heads = 2;
    c->registers = 1; c->text_dim = 16; c->text_depth = 1; c->text_heads = 2; c->context = 24;
    c->embed_dim = 8; c->local_hidden = 16;
}
static void opts(mama_pretrain_opts *o, const char *ckpt, const char *log, long steps) {
    mama_pretrain_opts_default(o);
    o->steps = steps; o->batch = 2; o->accum = 1; o->lr = 1e-3f; o->warmup = 1; o->late_loss = 1; o->seed = 7;
    o->quiet = 1; o->checkpoint = ckpt; o->log_csv = log; o->val_every = MAMA_OFF;
}
static mama_status train(const char *ckpt, const char *log, long steps, long stop_at, int resume) {
    mama_config c;
    mama_model *m = NULL;
    mama_pretrain_opts o;
    mama_status s;
    micro_config(&c);
    MAMA_TRY(mama_model_create(&m, &c, CPU, 2, 5));
    opts(&o, ckpt, log, steps);
    o.stop_at = stop_at; o.resume = resume;
    s = mama_pretrain(m, D, &o, NULL);
    mama_model_free(m);
    return s;
}
static int has(const char *needle) { return strstr(mama_last_error(), needle) != NULL; }
static int same_file(const char *a, const char *b) {
    unsigned char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = mama_read_file(a, &x, &nx) == MAMA_OK && mama_read_file(b, &y, &ny) == MAMA_OK && nx == ny &&
               !memcmp(x, y, nx);
    mama_free(x); mama_free(y);
    return same;
}

/* GOOD rewritten to BAD with one change: metadata `key` set to `value`
 * (key "cfg.F": the mama_config field F's JSON value replaced textually),
 * or element 0 of tensor `key` ("t.NAME") set to the float `value`. */
static void craft(const char *key, const char *value) {
    mama_safetensors st;
    mama_st_writer *w = NULL;
    int k;
    float *edit = NULL;
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, GOOD) != MAMA_OK || mama_st_writer_create(&w) != MAMA_OK) { printf("craft: %s\n", mama_last_error()); exit(1); }
    for (k = 0; k < st.count; k++) {
        const mama_st_tensor *t = &st.tensors[k];
        const void *data = mama_st_data(&st, t);
        if (!strncmp(key, "t.", 2) && !strcmp(t->name, key + 2)) {
            edit = (float *)malloc(t->nbytes ? t->nbytes : 4);
            memcpy(edit, data, t->nbytes);
            edit[0] = strtof(value, NULL);
            data = edit;
        }
        mama_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data);
    }
    for (k = 0; k < st.meta_count; k++) {
        const char *v = st.meta_values[k];
        char cfg[4096];
        if (!strcmp(st.meta_keys[k], key)) v = value;
        if (!strncmp(key, "cfg.", 4) && !strcmp(st.meta_keys[k], "mama_config")) {
            char pat[64];
            const char *at, *end;
            snprintf(pat, sizeof pat, "\"%s\":", key + 4);
            at = strstr(v, pat);
            end = at ? at + strlen(pat) + strcspn(at + strlen(pat), ",}") : NULL;
            if (!at) { printf("craft: no %s\n", pat); exit(1); }
            snprintf(cfg, sizeof cfg, "%.*s%s%s%s", (int)(at - v), v, pat, value, end);
            v = cfg;
        }
        mama_st_writer_meta(w, st.meta_keys[k], v);
    }
    if (!mama_st_meta(&st, key) && strncmp(key, "cfg.", 4) && strncmp(key, "t.", 2)) mama_st_writer_meta(w, key, value);
    if (mama_st_writer_write(w, BAD) != MAMA_OK) { printf("craft: %s\n", mama_last_error()); exit(1); }
    mama_st_writer_free(w);
    mama_st_close(&st);
    free(edit);
}

/* a resume from BAD (copied to a fresh name, so no log or best file) */
static mama_status resume_bad(void) {
    unsigned char *b = NULL;
    size_t n = 0;
    FILE *f;
    remove(HDIR "/r.safetensors");
    if (mama_read_file(BAD, &b, &n) != MAMA_OK || !(f = fopen(HDIR "/r.safetensors", "wb"))) return MAMA_ERR_IO;
    fwrite(b, 1, n, f);
    fclose(f);
    mama_free(b);
    return train(HDIR "/r.safetensors", NULL, 4, 0, 1);
}

static void test_metadata(void) {
    static const char *const cases[][3] = {
        /* key, value, what the message must name */
        {"step", "-5", "'step' = \"-5\""},
        {"step", "99999999999999999999", "'step'"},
        {"step", "2x", "'step' = \"2x\""},
        {"step", "", "'step'"},
        {"seed", "-1", "'seed' = \"-1\""},
        {"seed", "7 ", "'seed'"},
        {"adam_step_train", "3", "'adam_step_train' = \"3\""},   /* past the step (2) */
        {"adam_step_train", "-1", "'adam_step_train'"},
        {"adam_step_late", "5", "'adam_step_late' = \"5\""},
        {"best_val_step", "-2", "'best_val_step'"},
        {"best_val_loss", "nan", "'best_val_loss'"},
        {"format", "mama-checkpoint-9", "'format'"},
        {"cfg.vision_depth", "100000000", "'vision_depth' = 100000000"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mama_status s;
        craft(cases[i][0], cases[i][1]);
        test_biggest = 0;
        s = resume_bad();
        printf("  %s = \"%s\": %s\n", cases[i][0], cases[i][1], mama_last_error());
        test_report(s == MAMA_ERR_FORMAT && has("r.safetensors") && has(cases[i][2]), "metadata_range",
                    "resume from metadata %s = \"%s\": %s naming file, key and value", cases[i][0], cases[i][1],
                    mama_status_name(s));
    }
    {   /* a valid config that is not the model's */
        mama_status s;
        craft("cfg.text_pool", "\"all\"");
        s = resume_bad();
        printf("  %s\n", mama_last_error());
        test_report(s == MAMA_ERR_INVALID && has("text_pool_real_only 0, the model 1"), "metadata_config_differs",
                    "resume from a checkpoint whose mama_config pools all tokens: %s naming the field and both values",
                    mama_status_name(s));
    }
}

static void test_configs(void) {
    static const char *const cases[][3] = {
        {"vision_depth", "100000000", "'vision_depth' = 100000000"},
        {"image_size", "2000000000", "'image_size' = 2000000000"},
        {"vision_dim", "1000000000", "'vision_dim'"},
        {"vocab_size", "2000000000", "'vocab_size'"},
        {"context", "1e300", "'context'"},
        {"text_dim", "-16", "'text_dim' = -16"},
        {"lora_alpha", "1e40", "'lora_alpha'"},
        {"text_dropout", "1.5", "text_dropout 1.5"},
        {"text_mode", "\"sideways\"", "'text_mode'"},
        {"vision_heads", "3", "vision_dim 16 must be divisible by vision_heads 3"},
        {"vision_depth", "40", "needs"},        /* in range, but 40 blocks are not in the file */
        {"vocab_size", "16000000", "needs"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[64];
        mama_model *m = NULL;
        mama_status s;
        snprintf(key, sizeof key, "cfg.%s", cases[i][0]);
        craft(key, cases[i][1]);
        test_biggest = 0;
        s = mama_model_load(&m, BAD, CPU, 2);
        printf("  %s = %s: %s (largest allocation %zu bytes)\n", cases[i][0], cases[i][1], mama_last_error(), test_biggest);
        test_report(s == MAMA_ERR_FORMAT && has(BAD) && has(cases[i][2]) && test_biggest < ((size_t)64 << 20),
                    "config_range", "load with mama_config %s = %s: %s naming file, field and value; largest allocation "
                    "%zu bytes (< 64 MB)", cases[i][0], cases[i][1], mama_status_name(s), test_biggest);
        mama_model_free(m);
    }
}

static void test_nonfinite(void) {
    mama_config c;
    mama_model *m = NULL;
    mama_status s;
    mama_pretrain_opts o;
    long step;
    uint64_t seed;
    mama_adamw opt;
    craft("t.img_encoder_q.model.pos_embed", "nan");
    s = mama_model_load(&m, BAD, CPU, 2);
    printf("  %s\n", mama_last_error());
    test_report(s == MAMA_ERR_NUMERIC && has("img_encoder_q.model.pos_embed") && has(BAD), "nonfinite_load",
                "a NaN in pos_embed: load %s naming file and tensor", mama_status_name(s));
    mama_model_free(m); m = NULL;
    micro_config(&c);
    mama_model_create(&m, &c, CPU, 2, 5);
    mama_adamw_init(&opt, m, 0.1f);
    craft("t.optimizer.adam_v", "-1");
    s = mama_checkpoint_load(BAD, m, &opt, &step, &seed);
    printf("  %s\n", mama_last_error());
    test_report(s == MAMA_ERR_NUMERIC && has("optimizer.adam_v"), "nonfinite_moments",
                "adam_v[0] = -1: checkpoint load %s naming the tensor", mama_status_name(s));
    craft("t.optimizer.adam_m", "inf");
    s = mama_checkpoint_load(BAD, m, &opt, &step, &seed);
    test_report(s == MAMA_ERR_NUMERIC && has("optimizer.adam_m"), "nonfinite_moments", "adam_m[0] = inf: %s",
                mama_status_name(s));
    mama_adamw_free(&opt);
    mama_model_free(m); m = NULL;
    /* a run whose weights hold a NaN the loss never sees (the frozen
     * mask_token): the steps are finite, the checkpoint must not be written */
    mama_model_create(&m, &c, CPU, 2, 5);
    mama_model_params(m)[mama_model_find_param(m, "img_encoder_q.model.mask_token")->offset] = NAN;
    s = mama_model_save(m, HDIR "/nan_model.safetensors");
    test_report(s == MAMA_ERR_NUMERIC && has("mask_token") && !mama__file_exists(HDIR "/nan_model.safetensors"),
                "nonfinite_save", "mama_model_save of NaN weights: %s, nothing written", mama_status_name(s));
    remove(HDIR "/k.safetensors"); remove(HDIR "/k.best.safetensors");
    if (train(HDIR "/k.safetensors", NULL, 2, 0, 0) != MAMA_OK) printf("  train: %s\n", mama_last_error());
    rename(HDIR "/k.safetensors", HDIR "/k0.safetensors");
    if (train(HDIR "/k.safetensors", NULL, 2, 0, 0) != MAMA_OK) printf("  train: %s\n", mama_last_error());
    opts(&o, HDIR "/k.safetensors", NULL, 4);
    o.checkpoint_every = 1;
    s = mama_pretrain(m, D, &o, NULL);
    printf("  %s\n", mama_last_error());
    test_report(s == MAMA_ERR_NUMERIC && has("mask_token") && has("left as it was") &&
                same_file(HDIR "/k.safetensors", HDIR "/k0.safetensors"), "nonfinite_checkpoint",
                "NaN weights with finite losses: pretrain %s naming mask_token, the existing checkpoint is unchanged "
                "and the message says so", mama_status_name(s));
    mama_model_free(m);
}

static void test_changes(void) {
    static const char *const names[4] = {"batch", "accum", "lr", "late_loss"};
    int i;
    remove(HDIR "/c.safetensors");
    if (train(HDIR "/c.safetensors", NULL, 4, 2, 0) != MAMA_OK) { test_report(0, "resume_changes", "%s", mama_last_error()); return; }
    for (i = 0; i < 4; i++) {
        mama_config c;
        mama_model *m = NULL;
        mama_pretrain_opts o;
        mama_status s1, s2;
        unsigned char *keep = NULL;
        size_t nkeep = 0;
        char want[64];
        micro_config(&c);
        mama_model_create(&m, &c, CPU, 2, 5);
        opts(&o, HDIR "/c.safetensors", NULL, 4);
        o.resume = 1; o.stop_at = 3;
        if (i == 0) o.batch = 1;
        if (i == 1) o.accum = 2;
        if (i == 2) o.lr = 2e-3f;
        if (i == 3) o.late_loss = 3;
        mama_read_file(HDIR "/c.safetensors", &keep, &nkeep);
        s1 = mama_pretrain(m, D, &o, NULL);
        printf("  %s\n", mama_last_error());
        snprintf(want, sizeof want, "%s %s", names[i], i == 0 ? "2" : i == 1 ? "1" : i == 2 ? "0.001" : "1");
        test_report(s1 == MAMA_ERR_INVALID && has(want) && has("allow_changes"), "resume_changes",
                    "resume with another %s: %s naming the old value (\"%s\") and the option", names[i],
                    mama_status_name(s1), want);
        o.allow_changes = 1;
        s2 = mama_pretrain(m, D, &o, NULL);
        test_report(s2 == MAMA_OK, "resume_changes_allowed", "the same with allow_changes: %s", mama_status_name(s2));
        {   /* put the step-2 checkpoint back for the next setting */
            FILE *f = fopen(HDIR "/c.safetensors", "wb");
            if (f) { fwrite(keep, 1, nkeep, f); fclose(f); }
        }
        mama_free(keep);
        mama_model_free(m);
    }
    {
        mama_config c;
        mama_model *m = NULL;
        mama_pretrain_opts o;
        mama_status s;
        micro_config(&c);
        mama_model_create(&m, &c, CPU, 2, 5);
        opts(&o, HDIR "/c.safetensors", NULL, 1);
        o.resume = 1; o.warmup = o.late_loss = MAMA_OFF; /* a valid 1-step schedule (warm-up, late losses < steps) */
        s = mama_pretrain(m, D, &o, NULL);
        mama_model_free(m);
        test_report(s == MAMA_ERR_INVALID && has("past this run's steps"), "resume_past_steps",
                    "a step-2 checkpoint resumed with steps 1: %s (%s)", mama_status_name(s), mama_last_error());
    }
}

/* the step column of a log: every step 1..n once, in order */
static int log_steps_once(const char *path, long n, long *rows) {
    FILE *f = fopen(path, "r");
    char line[512];
    long expect = 1;
    int ok = 1, header = 0;
    *rows = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "step,", 5)) { header++; continue; }
        if (atol(line) != expect++) ok = 0;
        (*rows)++;
    }
    fclose(f);
    return ok && header == 1 && *rows == n;
}
static int count_tmp(const char *prefix, char *first, size_t n) {
    DIR *d = opendir(HDIR);
    struct dirent *e;
    int count = 0;
    if (!d) return 0;
    while ((e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, prefix, strlen(prefix)) && strstr(e->d_name, ".tmp.")) {
            if (!count && first) snprintf(first, n, "%s", e->d_name);
            count++;
        }
    closedir(d);
    return count;
}

static void test_kill(void) {
    const char *ck = HDIR "/kill.safetensors", *log = HDIR "/kill.csv";
    char name[256], live[300];
    pid_t pid;
    int caught = 0, st, polls = 0, n;
    long ckstep = -1;
    double t0;
    remove(ck); remove(log); remove(HDIR "/kill.best.safetensors");
    fflush(stdout);
    /* the child runs this program again (an OpenMP runtime does not survive fork) */
    pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", "test_harden", "--kill-child", (char *)NULL);
        _exit(127);
    }
    /* wait for a checkpoint write in progress (its temporary file), then SIGKILL */
    t0 = mama_time_seconds();
    while (!caught && mama_time_seconds() - t0 < 20) {
        polls++;
        if (mama__file_exists(ck) && count_tmp("kill.safetensors", name, sizeof name) > 0) caught = 1;
        else if (waitpid(pid, &st, WNOHANG) == pid) break;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    if (!count_tmp("kill.safetensors", name, sizeof name)) {
        /* the write was not caught in flight: leave what a kill would have */
        FILE *f;
        snprintf(name, sizeof name, "kill.safetensors.tmp.%ld.0", (long)pid);
        snprintf(live, sizeof live, HDIR "/%s", name);
        if ((f = fopen(live, "wb")) != NULL) { fputs("torn", f); fclose(f); }
    }
    /* a temporary file of a process that still runs (the parent of this test) must stay */
    snprintf(live, sizeof live, "%s.tmp.%ld.0", ck, (long)getppid());
    { FILE *f = fopen(live, "wb"); if (f) { fputs("busy", f); fclose(f); } }
    {
        mama_safetensors sf;
        memset(&sf, 0, sizeof sf);
        if (mama_st_open(&sf, ck) == MAMA_OK) { ckstep = atol(mama_st_meta(&sf, "step")); mama_st_close(&sf); }
    }
    printf("  killed during a checkpoint write: %s (after %d polls); checkpoint at step %ld; stale %s\n",
           caught ? "yes" : "no (stale file made by the test)", polls, ckstep, name);
    n = count_tmp("kill.safetensors", NULL, 0);
    if (ckstep < 1) { test_report(0, "kill_resume", "no checkpoint after the kill"); return; }
    {
        long before = 0;
        log_steps_once(log, 0, &before);
        printf("  the killed run's log has %ld rows, its checkpoint %ld steps\n", before, ckstep);
    }
    {
        mama_status s = train(ck, log, 400, ckstep + 2, 1);
        char stale[300];
        long rows = 0;
        snprintf(stale, sizeof stale, HDIR "/%s", name);
        test_report(s == MAMA_OK && n == 2 && !mama__file_exists(stale) && mama__file_exists(live), "kill_stale_tmp",
                    "resume after SIGKILL: %s; the dead writer's %s removed, the live process's kept (%d tmp files before)",
                    mama_status_name(s), name, n);
        int once = log_steps_once(log, ckstep + 2, &rows);
        test_report(once, "kill_log_once",
                    "the log holds steps 1..%ld once each and one header (%ld rows)", ckstep + 2, rows);
    }
    remove(live);
}

static void test_unwritable(void) {
    mama_config c;
    mama_model *m = NULL;
    mama_pretrain_opts o;
    mama_pretrain_result r;
    mama_status s;
    micro_config(&c);
    mama_model_create(&m, &c, CPU, 2, 5);
    opts(&o, HDIR "/no/such/dir/x.safetensors", NULL, 3);
    s = mama_pretrain(m, D, &o, &r);
    test_report(s == MAMA_ERR_IO && r.steps_done == 0 && has("no/such/dir/x.safetensors"), "unwritable_checkpoint",
                "checkpoint in a missing directory: %s before the first step (%ld steps done): %s", mama_status_name(s),
                r.steps_done, mama_last_error());
    opts(&o, NULL, "/dev/full", 3);
    s = mama_pretrain(m, D, &o, &r);
    test_report(s == MAMA_ERR_IO && r.steps_done == 0 && has("/dev/full"), "log_full_disk",
                "log on a full device: %s, %ld steps done: %s", mama_status_name(s), r.steps_done, mama_last_error());
    mama_model_free(m);
}

static int kill_child; /* this process is test_kill's child: train until killed */

static int test_main(void) {
    mama_config c;
    mama_dataset_opts dopt;
    mkdir("build", 0755);
    mkdir(HDIR, 0755);
    micro_config(&c);
    mama_dataset_opts_default(&dopt);
    dopt.manifest = HDIR "/manifest.csv";
    dopt.tokenizer = "weights/tiny_vocab";
    if (mama_synth_write(HDIR, 6, 32, 3, 1) != MAMA_OK || mama_dataset_create(&D, &dopt, &c) != MAMA_OK) {
        printf("FAIL setup: %s\n", mama_last_error());
        return 1;
    }
    if (kill_child) {
        mama_model *m = NULL;
        mama_pretrain_opts o;
        mama_model_create(&m, &c, CPU, 2, 5);
        opts(&o, HDIR "/kill.safetensors", HDIR "/kill.csv", 400);
        o.checkpoint_every = 1;
        mama_pretrain(m, D, &o, NULL);
        return 0;
    }
    remove(GOOD);
    if (train(GOOD, NULL, 4, 2, 0) != MAMA_OK) { printf("FAIL setup: %s\n", mama_last_error()); return 1; }
    test_metadata();
    test_configs();
    test_nonfinite();
    test_changes();
    test_kill();
    test_unwritable();
    mama_dataset_free(D);
    return test_finish();
}

int main(int argc, char **argv) {
    kill_child = argc > 1 && !strcmp(argv[1], "--kill-child");
    return test_with_cpu_backend(&CPU, test_main);
}
