/* tests/fuzz/fuzz_checkpoint.c - libFuzzer target for whole checkpoints.
 * The input is the mama_config JSON of a valid micro checkpoint, a newline,
 * and the rest of its safetensors header (metadata, tensor entries), where
 * the mama_config value is the placeholder "@CFG@": the harness puts the
 * first line there as a JSON string, so the fuzzer mutates the config's
 * numbers directly as well as the metadata around it; the tensor data
 * stays the valid file's.  Each input is written as a file and
 * driven through mama_model_load (config -> model) and a resumed
 * mama_pretrain (metadata, AdamW moments, log truncation) of one step.
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_checkpoint.c -o build/fuzz/fuzz_checkpoint -lm
 *   MAMA_FUZZ_SEED_OUT=DIR build/fuzz/fuzz_checkpoint -rss_limit_mb=2048 DIR
 * (tests/fuzz/run_fuzz.sh does both).  The first call builds the synthetic
 * data and the valid checkpoint under build/fuzz/ckpt/ and, with
 * MAMA_FUZZ_SEED_OUT set, writes its header there as the seed input.  A
 * file that loads must resume or fail with a message; never crash, leak or
 * allocate past the memory limit. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define FDIR "build/fuzz/ckpt"
static mama_backend *cpu;
static mama_dataset *data;
static unsigned char *blob;   /* the valid file's tensor data */
static size_t blob_n;
static char path[256], logp[256];

static void micro_config(mama_config *c) {
    mama_config_preset(c, "tiny");
    c->image_size = 28; c->patch_size = 14; c->vision_dim = 16; c->vision_depth = 1; c->vision_heads = 2;
    c->registers = 1; c->text_dim = 16; c->text_depth = 1; c->text_heads = 2; c->context = 24;
    c->embed_dim = 8; c->local_hidden = 16;
}

static void opts(mama_pretrain_opts *o, long steps) {
    mama_pretrain_opts_default(o);
    o->steps = steps; o->batch = 2; o->accum = 1; o->lr = 1e-3f; o->warmup = 1; o->late_loss = 1; o->seed = 7;
    o->quiet = 1; o->checkpoint = path; o->log_csv = logp; o->val_every = MAMA_OFF;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    mama_config c;
    mama_dataset_opts dopt;
    mama_pretrain_opts o;
    mama_model *m = NULL;
    unsigned char *file = NULL;
    size_t n = 0;
    uint64_t hl;
    const char *seed_out = getenv("MAMA_FUZZ_SEED_OUT");
    (void)argc; (void)argv;
    mkdir("build", 0755); mkdir("build/fuzz", 0755);
    snprintf(path, sizeof path, FDIR "/ck%ld.safetensors", (long)getpid());
    snprintf(logp, sizeof logp, FDIR "/log%ld.csv", (long)getpid());
    micro_config(&c);
    mama_dataset_opts_default(&dopt);
    dopt.manifest = FDIR "/manifest.csv";
    dopt.tokenizer = "weights/tiny_vocab";
    if (mama_cpu_backend_create(&cpu) != MAMA_OK || mama_synth_write(FDIR, 6, 32, 3, 1) != MAMA_OK ||
        mama_dataset_create(&data, &dopt, &c) != MAMA_OK || mama_model_create(&m, &c, cpu, 2, 5) != MAMA_OK) {
        fprintf(stderr, "fuzz_checkpoint: setup failed: %s\n", mama_last_error());
        abort();
    }
    opts(&o, 2);
    remove(path);
    if (mama_pretrain(m, data, &o, NULL) != MAMA_OK || mama_read_file(path, &file, &n) != MAMA_OK || n < 8) {
        fprintf(stderr, "fuzz_checkpoint: seed checkpoint failed: %s\n", mama_last_error());
        abort();
    }
    mama_model_free(m);
    memcpy(&hl, file, 8);
    blob_n = n - 8 - (size_t)hl;
    blob = (unsigned char *)malloc(blob_n);
    memcpy(blob, file + 8 + hl, blob_n);
    if (seed_out) {
        FILE *f = fopen(seed_out, "wb");
        char cfg[2048];
        const char *at = strstr((const char *)file + 8, "\"mama_config\":\"");
        const char *end = at ? strstr(at, "}\"") : NULL; /* the config string ends with '}' */
        mama_config_to_json(&c, cfg, sizeof cfg);
        if (f && at && end && end < (const char *)file + 8 + hl) {
            fprintf(f, "%s\n", cfg);
            fwrite(file + 8, 1, (size_t)(at - (const char *)file - 8) + 15, f);
            fputs("@CFG@", f);
            fwrite(end + 1, 1, (size_t)((const char *)file + 8 + hl - end - 1), f);
        }
        if (f) fclose(f);
    }
    mama_free(file);
    fprintf(stderr, "fuzz_checkpoint: micro checkpoint of %zu bytes (header %llu)\n", n, (unsigned long long)hl);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size) {
    const uint8_t *nl = (const uint8_t *)memchr(in, '\n', size), *rest = nl ? nl + 1 : in, *at = NULL;
    size_t nrest = size - (size_t)(rest - in), ncfg = nl ? (size_t)(nl - in) : 0, i, k = 0;
    unsigned char *hdr = (unsigned char *)malloc(size * 6 + 8);
    FILE *f = fopen(path, "wb");
    uint64_t hl;
    mama_model *m = NULL;
    mama_pretrain_opts o;
    if (!f || !hdr) abort();
    for (i = 0; i + 5 <= nrest && !at; i++) if (!memcmp(rest + i, "@CFG@", 5)) at = rest + i;
    if (!at) { memcpy(hdr, rest, nrest); k = nrest; }
    else { /* the first line as a JSON string's contents (quotes, backslashes, controls escaped) */
        memcpy(hdr, rest, (size_t)(at - rest));
        k = (size_t)(at - rest);
        for (i = 0; i < ncfg; i++) {
            unsigned char ch = in[i];
            if (ch == '"' || ch == '\\') { hdr[k++] = '\\'; hdr[k++] = ch; }
            else if (ch < 0x20) k += (size_t)sprintf((char *)hdr + k, "\\u%04x", ch);
            else hdr[k++] = ch;
        }
        memcpy(hdr + k, at + 5, nrest - (size_t)(at + 5 - rest));
        k += nrest - (size_t)(at + 5 - rest);
    }
    hl = k;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, k, f);
    fwrite(blob, 1, blob_n, f);
    fclose(f);
    free(hdr);
    f = fopen(logp, "wb"); /* a log with a row past the checkpoint's step and a torn one: resume cuts them */
    if (f) { fputs("step,lr,loss\n1,0.1,2\n2,0.1,2\n3,0.1,2\n4,0.", f); fclose(f); }
    if (mama_model_load(&m, path, cpu, 2) == MAMA_OK) {
        opts(&o, 3);
        o.resume = 1;
        o.allow_changes = size & 1; /* both ways */
        if (mama_pretrain(m, data, &o, NULL) != MAMA_OK && !mama_last_error()[0]) __builtin_trap();
        if (getenv("MAMA_FUZZ_VERBOSE")) fprintf(stderr, "resume: %s\n", mama_last_error());
        mama_model_free(m);
    } else if (getenv("MAMA_FUZZ_VERBOSE")) fprintf(stderr, "load: %s\n", mama_last_error());
    mama_clear_error();
    return 0;
}
