/* tests/fuzz/fuzz_checkpoint.c - libFuzzer target for whole checkpoints.
 * The input is a micro checkpoint's metadata as lines, so that the fuzzer
 * mutates the values themselves, not the JSON around them:
 *   line 1: the mama_config JSON;
 *   then one "key=value" line per metadata entry (step=2, seed=7, ...);
 *   optionally an empty line and a safetensors header JSON with @META@
 *   where the __metadata__ object goes (else the valid file's header).
 * The harness assembles the __metadata__ object (mama_config = line 1, each
 * value a JSON string) and writes the file with the valid tensor data.
 * Each input is driven through mama_model_load (config -> model) and a resumed
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
static char *tpl;             /* its header with @META@ for the metadata object */
static size_t tpl_n;
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
    { /* the valid file as an input (the seed), and its header template */
        FILE *f = fopen(seed_out ? seed_out : "/dev/null", "wb");
        mama_safetensors st;
        const char *h = (const char *)file + 8, *at = strstr(h, "\"__metadata__\":{"), *e;
        int k, depth = 0, str = 0;
        memset(&st, 0, sizeof st);
        if (!f || !at || mama_st_open(&st, path) != MAMA_OK) abort();
        for (e = at + 15; e < h + hl; e++) { /* the end of the metadata object */
            if (str) { if (*e == '\\') e++; else if (*e == '"') str = 0; continue; }
            if (*e == '"') str = 1;
            else if (*e == '{') depth++;
            else if (*e == '}' && --depth == 0) break;
        }
        fprintf(f, "%s\n", mama_st_meta(&st, "mama_config"));
        for (k = 0; k < st.meta_count; k++)
            if (strcmp(st.meta_keys[k], "mama_config")) fprintf(f, "%s=%s\n", st.meta_keys[k], st.meta_values[k]);
        fclose(f);
        tpl = (char *)malloc(hl + 8);
        tpl_n = (size_t)sprintf(tpl, "%.*s@META@%.*s", (int)(at + 15 - h), h, (int)(h + hl - e - 1), e + 1);
        mama_st_close(&st);
    }
    mama_free(file);
    fprintf(stderr, "fuzz_checkpoint: micro checkpoint of %zu bytes (header %llu)\n", n, (unsigned long long)hl);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);
/* n bytes of s as the contents of a JSON string */
static size_t esc(unsigned char *out, const uint8_t *s, size_t n) {
    size_t i, k = 0;
    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') { out[k++] = '\\'; out[k++] = s[i]; }
        else if (s[i] < 0x20) k += (size_t)sprintf((char *)out + k, "\\u%04x", s[i]);
        else out[k++] = s[i];
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size) {
    const uint8_t *end = in + size, *lines = NULL, *t, *tend, *meta = NULL, *p, *nl;
    unsigned char *hdr = (unsigned char *)malloc(size * 7 + tpl_n + 64);
    size_t k = 0, i;
    FILE *f = fopen(path, "wb");
    uint64_t hl;
    mama_model *m = NULL;
    mama_pretrain_opts o;
    if (!f || !hdr) abort();
    for (i = 0; i + 1 < size && !lines; i++) if (in[i] == '\n' && in[i + 1] == '\n') lines = in + i;
    if (lines) { t = lines + 2; tend = end; } /* a header template of its own */
    else { lines = end; t = (const uint8_t *)tpl; tend = t + tpl_n; }
    for (p = t; p + 6 <= tend && !meta; p++) if (!memcmp(p, "@META@", 6)) meta = p;
    if (!meta) meta = tend;
    memcpy(hdr, t, (size_t)(meta - t));
    k = (size_t)(meta - t);
    if (meta < tend) {
        nl = (const uint8_t *)memchr(in, '\n', (size_t)(lines - in));
        if (!nl) nl = lines;
        k += (size_t)sprintf((char *)hdr + k, "{\"mama_config\":\"");
        k += esc(hdr + k, in, (size_t)(nl - in));
        hdr[k++] = '"';
        for (p = nl + 1; p < lines; p = nl + 1) { /* key=value lines */
            const uint8_t *eq;
            nl = (const uint8_t *)memchr(p, '\n', (size_t)(lines - p));
            if (!nl) nl = lines;
            if (!(eq = (const uint8_t *)memchr(p, '=', (size_t)(nl - p)))) continue;
            hdr[k++] = ',';
            hdr[k++] = '"';
            k += esc(hdr + k, p, (size_t)(eq - p));
            memcpy(hdr + k, "\":\"", 3);
            k += 3;
            k += esc(hdr + k, eq + 1, (size_t)(nl - eq - 1));
            hdr[k++] = '"';
        }
        hdr[k++] = '}';
        memcpy(hdr + k, meta + 6, (size_t)(tend - meta - 6));
        k += (size_t)(tend - meta - 6);
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
