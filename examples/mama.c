/* examples/mama.c - the `mama` command-line tool.  It parses arguments and
 * calls the public API of mama.h; nothing here is needed to use the
 * library.  Run `build/mama help` for the commands. */
#define MAMA_IMPLEMENTATION
#include "../mama.h"
#define MAMA_PLOT_IMPLEMENTATION
#include "../mama_plot.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "../mama_synth.h"
#define MAMA_TOKENIZER_TRAIN_IMPLEMENTATION
#include "../mama_tokenizer_train.h"
#define MAMA_VERIFY_IMPLEMENTATION
#include "../mama_verify.h"
#ifdef MAMA_MPI /* make MPI=1: mpicc -DMAMA_MPI */
#define MAMA_MPI_IMPLEMENTATION
#include "../mama_mpi.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.c"
#define MAMA_BENCH_BACKEND() mama_cli_backend()
#include "../bench/bench_gemm.c"
#include "../bench/bench_train.c"

/* The data options, printed after USAGE_TEXT (one literal must stay under
 * the 4095 characters C99 promises). */
#define USAGE_DATA_TEXT \
    "data options (every command that opens a dataset; each prints what it left out and why):\n" \
    "  --skip-bad          skip malformed manifest rows and unreadable images instead of failing\n" \
    "  --keep-incomplete   pretrain on records whose caption lacks the procedure, its reason, the\n" \
    "                      density or BI-RADS too (SPEC A.7; left out by default)\n"

/* The help text.  The numbers it shows come from the library's defaults
 * (mama_*_opts_default) and the demo's (demo_opts_default), never from a
 * copy here; print_usage fills them in. */
#define USAGE_TEXT \
    "usage: mama <command> [options]\n" \
    "\n" \
    "commands:\n" \
    "  forward --weights W --batch B --out O [--late 0|1]\n" \
    "        one forward + backward in train mode (dropout off); writes embeddings,\n" \
    "        losses and gradients to O (safetensors) for parity checks\n" \
    "  info W.safetensors [--frozen-dtype auto|bf16|f16|f32]\n" \
    "        config, parameter counts per tower and group, dtype and memory per group\n" \
    "  init --out W.safetensors [--config tiny|small|base] [--text-mode full|lora|frozen] [--seed S]\n" \
    "       [--frozen-dtype bf16|f16|f32]\n" \
    "        a freshly initialised model (SPEC A.5) written as safetensors (e.g. for --init / --weights)\n" \
    "  synth --out DIR [--studies 1000] [--size 256] [--seed 1] [--balanced]\n" \
    "        synthetic multi-view mammograms (PNG) and their manifest.csv\n" \
    "  pretrain --manifest M --out CKPT [--config tiny] [--tokenizer DIR] [--steps N] [--batch B]\n" \
    "           [--accum A] [--lr X] [--warmup N] [--late-loss N] [--mask P] [--seed S] [--log CSV]\n" \
    "           [--checkpoint-every N] [--resume] [--clip X] [--no-mv] [--no-sym] [--no-sla] [--init W]\n" \
    "           [--frozen-dtype auto|bf16|f16|f32]\n" \
    "        defaults (SPEC A.5): --steps %ld --batch %d --accum %d --lr %g --warmup %ld --late-loss %ld\n" \
    "        --mask %g --seed %llu; 0 means zero (--warmup 0: no warm-up, --clip 0: no clipping)\n" \
    "        data parallel (build with `make MPI=1`): mpirun -np N build/mama pretrain ... trains on N\n" \
    "        ranks, --batch per rank; [--dp-reference] keeps the reference's per-rank CLIP/SLA losses;\n" \
    "        [--no-overlap] sums the gradients in one blocking all-reduce after the backward instead of\n" \
    "        bucket by bucket during it\n" \
    "  zeroshot --weights CKPT --manifest M [--task birads|density|cancer|all] [--split test|val|train]\n" \
    "           [--tokenizer DIR] [--ref-text-feature] [--json OUT] [--png PREFIX]\n" \
    "  probe --weights CKPT --manifest M [--task ...] [--steps N] [--batch B] [--no-augment] [--json OUT]\n" \
    "        defaults (SPEC A.7): --steps %ld --batch %d\n" \
    "  demo [--out DIR] [--studies N] [--size S] [--steps N] [--batch B] [--probe-steps N] [--lr X] [--seed S]\n" \
    "       [--ablation]\n" \
    "        the main job on synthetic data: generate, pretrain, evaluate, write OUT/REPORT.md; defaults:\n" \
    "        --out %s --studies %d --size %d --steps %d --batch %d --probe-steps %d --lr %g --seed %llu\n" \
    "  caption --manifest M --row N [--mask P --seed S] [--tokens --vocab DIR --config C]\n" \
    "        the caption of data row N (0-based) exactly as the model sees it\n" \
    "  tokenizer train --manifest M --out DIR [--vocab-size 2042] [--variants 8]\n" \
    "        a byte-level BPE vocabulary from the manifest's captions (+6 special tokens)\n" \
    "  embed --weights W (--manifest M [--split test] [--texts] | --images a.png b.png ...) --out X.npy\n" \
    "  heatmap --weights W --manifest M --row N --out P.png [--tokenizer DIR]\n" \
    "        SLA similarity of each caption sentence with each patch, one panel per sentence\n" \
    "  finetune --weights CKPT --manifest M [--task ...] [--steps N] [--batch B] [--json OUT]\n" \
    "        full fine-tuning: the probe's classifier with the image encoder unfrozen (the probe's defaults)\n" \
    "  bench gemm [--reps=N] [--threads=N]     GEMM GFLOP/s (vs OpenBLAS if built with BLAS=openblas)\n" \
    "  bench train --config tiny|small|base [--batch 8] [--steps 10] [--late 0|1] [--checkpoint 0|1]\n" \
    "              [--peak-tflops X]\n" \
    "  bench encode --config base [--batch 4] [--steps 3]\n" \
    "  bench weights --weights W [--batch 1] [--steps 1] [--frozen-dtype auto|bf16|f16|f32]\n" \
    "        load W, time a text encode and a training step, print peak memory\n" \
    "  help\n" \
    "\n" \
    "every command also takes --device cpu|reference|cuda[:N] (default cpu; reference = the plain\n" \
    "scalar backend of mama.h 3.6, slow, for checking; cuda needs `make cuda`)\n" \
    "and, with --device cuda, --precision fp32|tf32|bf16 (GEMM precision, default fp32)\n" \
    "--frozen-dtype (info, pretrain, zeroshot, probe, finetune, embed, heatmap): storage of the frozen\n" \
    "text tower's big matrices (text modes lora and frozen); auto = the weights file's dtype when it is\n" \
    "BF16 or F16, else f32 (f32 for a model created from a preset).  bf16/f16 halve their memory; all\n" \
    "arithmetic stays float32.  Trainable weights are always f32.\n"
/* (a second string: USAGE_TEXT is at C99's 4095-character limit) */
#define USAGE_DECODE_TEXT \
    "--bit-depth N | --window C,W (pretrain, zeroshot, probe, finetune, embed, heatmap): how 16-bit\n" \
    "images become 8-bit grey; default v*255/max(v) per image (SPEC A.5 step 1); --bit-depth N:\n" \
    "v*255/(2^N-1), N 1..16; --window C,W: DICOM linear window, centre C, width W >= 1.  8-bit\n" \
    "images are read as they are.\n"

/* Validation (kept apart: one string literal may not pass 4095 characters). */
#define USAGE_VAL_TEXT \
    "\n" \
    "validation: pretrain [--val-every N] [--best PATH], finetune [--val-every N]\n" \
    "  pretrain computes the val loss (the objective on the val split: eval mode, no augmentation,\n" \
    "  unmasked captions) at each checkpoint and at the end, or every N steps (--val-every 0: never),\n" \
    "  logged as the val_loss column; the best checkpoint goes to PATH (default: the --out path with\n" \
    "  .best before its extension).  finetune evaluates the weights with the lowest val cross-entropy,\n" \
    "  checked every N steps (default steps/10) and at the end (--val-every 0: the last weights).\n"

static void print_usage(FILE *f);

static const char *arg_value(int argc, char **argv, const char *key, const char *def) {
    int i;
    for (i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], key)) return argv[i + 1];
    return def;
}

/* Numeric options.  Each leaves *v untouched when `key` is absent and
 * returns 0 (after a message) when its value is not a number >= 0 (whole
 * for the integer forms), so that the caller can start from the library's
 * defaults and reject what it does not understand. */
static int arg_number(int argc, char **argv, const char *key, int whole, double *v) {
    const char *s = arg_value(argc, argv, key, NULL);
    char *end;
    double x;
    if (!s) return 1;
    x = strtod(s, &end);
    if (end == s || *end || !(x >= 0) || x > 9e15 || (whole && x != (double)(long long)x)) {
        fprintf(stderr, "mama: %s wants a%s number >= 0 (got '%s')\n", key, whole ? " whole" : "", s);
        return 0;
    }
    *v = x;
    return 1;
}
static int arg_u64(int argc, char **argv, const char *key, uint64_t *v) {
    const char *s = arg_value(argc, argv, key, NULL);
    char *end;
    if (!s) return 1;
    *v = strtoull(s, &end, 10);
    if (end == s || *end || s[0] == '-') {
        fprintf(stderr, "mama: %s wants a whole number >= 0 (got '%s')\n", key, s);
        return 0;
    }
    return 1;
}
/* An options-struct field (mama.h section 1): there a zero means "the
 * default", so a 0 given on the command line becomes MAMA_OFF (zero). */
static long or_off(long v) { return v ? v : MAMA_OFF; }
static int opt_long(int argc, char **argv, const char *key, long *v) {
    double x = (double)*v;
    if (!arg_number(argc, argv, key, 1, &x)) return 0;
    if (x != (double)*v) *v = or_off((long)x);
    return 1;
}
static int opt_int(int argc, char **argv, const char *key, int *v) {
    double x = (double)*v;
    if (!arg_number(argc, argv, key, 1, &x)) return 0;
    if (x > 2147483647.0) { fprintf(stderr, "mama: %s is too large\n", key); return 0; }
    if (x != (double)*v) *v = (int)or_off((long)x);
    return 1;
}
static int opt_float(int argc, char **argv, const char *key, float *v) {
    double x = (double)*v;
    if (!arg_number(argc, argv, key, 0, &x)) return 0;
    if (x != (double)*v) *v = x == 0 ? (float)MAMA_OFF : (float)x;
    return 1;
}

/* --bit-depth N and --window C,W (pretrain, zeroshot, probe, finetune, embed,
 * heatmap): how 16-bit images become 8 bits (mama_decode_opts; default: by
 * each image's maximum).  Returns 0 after a message naming the flag when a
 * value is malformed. */
static int decode_args(int argc, char **argv, mama_decode_opts *o) {
    const char *bd = arg_value(argc, argv, "--bit-depth", NULL), *win = arg_value(argc, argv, "--window", NULL);
    char *end;
    memset(o, 0, sizeof *o);
    if (bd) {
        long n = strtol(bd, &end, 10);
        if (end == bd || *end || n < 1 || n > 16) {
            fprintf(stderr, "mama: --bit-depth wants a whole number 1..16 (got '%s')\n", bd);
            return 0;
        }
        o->bit_depth = (int)n;
    }
    if (win) {
        double c = strtod(win, &end), w = 0;
        const char *p = end;
        int good = end != win && *p == ',';
        if (good) {
            w = strtod(p + 1, &end);
            good = end != p + 1 && !*end && isfinite(c) && isfinite(w) && w >= 1 && fabs(c) < 1e30 && w < 1e30;
        }
        if (!good) {
            fprintf(stderr, "mama: --window wants CENTER,WIDTH (numbers, WIDTH >= 1; got '%s')\n", win);
            return 0;
        }
        o->window_center = (float)c;
        o->window_width = (float)w;
    }
    if (bd && win) {
        fprintf(stderr, "mama: --bit-depth and --window are exclusive\n");
        return 0;
    }
    return 1;
}

static int fail(void) {
    fprintf(stderr, "mama: error: %s\n", mama_last_error());
    return 1;
}

/* Data parallel (mama.h section 12): under `mpirun -np N` a build with
 * MPI=1 runs pretrain, finetune, probe and zeroshot on N ranks; rank 0
 * alone prints and writes files.  Without MPI this is one process. */
static mama_comm *g_comm = NULL;
static mama_dp_mode g_dp_mode = MAMA_DP_GLOBAL;
static int g_rank = 0;

static int attach_comm(mama_model *m) {
    if (!g_comm || g_comm->size < 2) return 0;
    if (mama_model_set_comm(m, g_comm, g_dp_mode) != MAMA_OK) return fail();
    if (g_rank == 0)
        fprintf(stderr, "data parallel: %d ranks over %s, %s losses\n", g_comm->size, g_comm->name,
                g_dp_mode == MAMA_DP_GLOBAL ? "global-batch" : "reference (per-rank CLIP/SLA)");
    return 0;
}

/* What the dataset left out and why: one line per non-zero reason (rank 0),
 * printed by every command that opens a dataset. */
static void print_skips(const mama_dataset *d) {
    const mama_dataset_skips *k = mama_dataset_skipped_reasons(d);
    if (g_rank != 0) return;
    if (k->bad_rows) fprintf(stderr, "data: %d malformed manifest row(s) skipped (--skip-bad)\n", k->bad_rows);
    if (k->unreadable) fprintf(stderr, "data: %d unreadable image(s) skipped (--skip-bad)\n", k->unreadable);
    if (k->not_2d) fprintf(stderr, "data: %d image(s) left out: image_type is not 2D (SPEC A.6)\n", k->not_2d);
    if (k->incomplete)
        fprintf(stderr, "data: %d incomplete record(s) left out of pretraining: the caption lacks the procedure, its "
                "reason, the density or BI-RADS (SPEC A.7; --keep-incomplete keeps them)\n", k->incomplete);
}

/* --frozen-dtype auto|bf16|f16|f32 -> -1 (the file's) or a mama_dtype;
 * returns 0 (with a message) on a bad value. */
static int frozen_dtype_arg(int argc, char **argv, int *dt) {
    const char *v = arg_value(argc, argv, "--frozen-dtype", "auto");
    if (!strcmp(v, "auto")) *dt = -1;
    else if (!strcmp(v, "bf16")) *dt = MAMA_BF16;
    else if (!strcmp(v, "f16")) *dt = MAMA_F16;
    else if (!strcmp(v, "f32")) *dt = MAMA_F32;
    else {
        fprintf(stderr, "mama: --frozen-dtype must be auto, bf16, f16 or f32 (got '%s')\n", v);
        return 0;
    }
    return 1;
}

/* mama_model_load with the --frozen-dtype option */
static mama_status load_model(int argc, char **argv, mama_model **m, const char *path, int max_batch) {
    int dt;
    if (!frozen_dtype_arg(argc, argv, &dt)) return MAMA_FAIL(MAMA_ERR_INVALID, "bad --frozen-dtype");
    return mama_model_load_as(m, path, mama_cli_backend(), max_batch, dt);
}

static int cmd_forward(int argc, char **argv) {
    const char *w = arg_value(argc, argv, "--weights", NULL), *b = arg_value(argc, argv, "--batch", NULL);
    const char *o = arg_value(argc, argv, "--out", NULL);
    int late = atoi(arg_value(argc, argv, "--late", "0"));
    if (!w || !b || !o) {
        fprintf(stderr, "mama forward: --weights, --batch and --out are required\n");
        return 2;
    }
    if (mama_verify_forward(w, b, o, late, mama_cli_backend()) != MAMA_OK) return fail();
    printf("wrote %s\n", o);
    return 0;
}

static int cmd_info(int argc, char **argv) {
    mama_model *m = NULL;
    mama_safetensors st;
    const mama_config *c;
    char json[2048];
    size_t tower[3] = {0, 0, 0}, group[4], by_dtype[4][3], file_by_dtype[3] = {0, 0, 0};
    double mem[4], total = 0, grad_mb;
    int i, g, k;
    static const char *const gname[4] = {"train", "late", "frozen", "buffers"};
    static const mama_dtype kinds[3] = {MAMA_F32, MAMA_BF16, MAMA_F16};
    if (argc < 1 || argv[0][0] == '-') { fprintf(stderr, "mama info: give a .safetensors file\n"); return 2; }
    if (load_model(argc, argv, &m, argv[0], 1) != MAMA_OK) return fail();
    c = mama_model_config(m);
    mama_config_to_json(c, json, sizeof json);
    printf("file: %s\nconfig: %s\n", argv[0], json);
    /* the file's own dtypes */
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, argv[0]) == MAMA_OK) {
        for (i = 0; i < st.count; i++)
            for (k = 0; k < 3; k++)
                if (st.tensors[i].dtype == kinds[k]) file_by_dtype[k] += st.tensors[i].numel;
        printf("file tensors: %zu F32, %zu BF16, %zu F16 values (%.1f MB on disk)\n", file_by_dtype[0],
               file_by_dtype[1], file_by_dtype[2], st.size / 1e6);
        mama_st_close(&st);
    }
    memset(by_dtype, 0, sizeof by_dtype);
    for (i = 0; i < mama_model_param_count(m); i++) {
        const mama_param_info *p = mama_model_param(m, i);
        int t = !strncmp(p->name, "img_encoder_q.", 14) ? 0 : !strncmp(p->name, "text_encoder_q.", 15) ? 1 : 2;
        if (p->group != MAMA_GROUP_BUFFER) tower[t] += p->numel;
        for (k = 0; k < 3; k++)
            if (p->dtype == kinds[k]) by_dtype[p->group][k] += p->numel;
    }
    printf("parameters: vision %zu, text %zu, joint heads %zu\n", tower[0], tower[1], tower[2]);
    printf("weights in memory (dtype as kept by the model; --frozen-dtype changes the frozen group's):\n");
    for (g = 0; g < 4; g++) {
        char kinds_s[128] = "";
        size_t len = 0;
        group[g] = mama_model_numel(m, (mama_param_group)g);
        mem[g] = 0;
        for (k = 0; k < 3; k++) {
            if (!by_dtype[g][k]) continue;
            mem[g] += by_dtype[g][k] * (double)mama_dtype_size(kinds[k]);
            len += (size_t)snprintf(kinds_s + len, sizeof kinds_s - len, "%s%s %zu", len ? ", " : "",
                                    mama_dtype_name(kinds[k]), by_dtype[g][k]);
        }
        total += mem[g];
        printf("  group %-8s %12zu values  %10.1f MB  (%s)\n", gname[g], group[g], mem[g] / 1e6,
               kinds_s[0] ? kinds_s : "empty");
    }
    grad_mb = (group[0] + group[1]) * 4.0 / 1e6;
    printf("  weights total %.1f MB; training adds gradients %.1f MB and AdamW moments %.1f MB (train and late "
           "groups only; frozen tensors have neither)\n", total / 1e6, grad_mb, 2 * grad_mb);
    printf("text mode %s: trainable now %zu, from the late-loss step %zu more\n",
           c->text_mode == MAMA_TEXT_LORA ? "lora" : c->text_mode == MAMA_TEXT_FROZEN ? "frozen" : "full",
           group[0], group[1]);
    mama_model_free(m);
    return 0;
}

static int has_flag(int argc, char **argv, const char *key) {
    int i;
    for (i = 0; i < argc; i++)
        if (!strcmp(argv[i], key)) return 1;
    return 0;
}

static int cmd_init(int argc, char **argv) {
    mama_config cfg;
    mama_model *m = NULL;
    mama_backend *cpu = NULL;
    const char *out = arg_value(argc, argv, "--out", NULL), *mode = arg_value(argc, argv, "--text-mode", NULL);
    int fdt, rc = 0;
    double t0 = mama_time_seconds(), t1;
    if (!out) { fprintf(stderr, "mama init: --out W.safetensors is required\n"); return 2; }
    if (!frozen_dtype_arg(argc, argv, &fdt)) return 2;
    if (mama_config_preset(&cfg, arg_value(argc, argv, "--config", "tiny")) != MAMA_OK) return fail();
    if (mode) {
        if (!strcmp(mode, "full")) cfg.text_mode = MAMA_TEXT_FULL;
        else if (!strcmp(mode, "lora")) cfg.text_mode = MAMA_TEXT_LORA;
        else if (!strcmp(mode, "frozen")) cfg.text_mode = MAMA_TEXT_FROZEN;
        else { fprintf(stderr, "mama init: --text-mode must be full, lora or frozen\n"); return 2; }
    }
    cfg.frozen_dtype = fdt < 0 ? MAMA_F32 : (mama_dtype)fdt;
    /* initialised on the host whatever --device says: a CPU backend of its own */
    if (mama_cpu_backend_create(&cpu) != MAMA_OK) return fail();
    if (mama_model_create(&m, &cfg, cpu, 1, strtoull(arg_value(argc, argv, "--seed", "1"), NULL, 10)) != MAMA_OK) {
        rc = fail();
        mama_backend_free(cpu);
        return rc;
    }
    t1 = mama_time_seconds();
    if (mama_model_save(m, out) != MAMA_OK) rc = fail();
    else printf("wrote %s (initialised in %.1f s, written in %.1f s)\n", out, t1 - t0, mama_time_seconds() - t1);
    mama_model_free(m);
    mama_backend_free(cpu);
    return rc;
}

static int cmd_synth(int argc, char **argv) {
    const char *out = arg_value(argc, argv, "--out", NULL);
    int studies = atoi(arg_value(argc, argv, "--studies", "1000"));
    int size = atoi(arg_value(argc, argv, "--size", "256"));
    uint64_t seed = strtoull(arg_value(argc, argv, "--seed", "1"), NULL, 10);
    double t0 = mama_time_seconds();
    if (!out) { fprintf(stderr, "mama synth: --out DIR is required\n"); return 2; }
    if (mama_synth_write(out, studies, size, seed, has_flag(argc, argv, "--balanced")) != MAMA_OK) return fail();
    printf("wrote %d studies (%d images, %d px) and %s/manifest.csv in %.1f s\n", studies, 4 * studies, size, out,
           mama_time_seconds() - t0);
    return 0;
}

static int cmd_pretrain(int argc, char **argv) {
    mama_config cfg;
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    mama_dataset_opts dopt;
    mama_pretrain_opts o;
    mama_pretrain_result r;
    const char *init = arg_value(argc, argv, "--init", NULL);
    int rc = 0, fdt;
    mama_pretrain_opts_default(&o); /* the library's defaults, then the options given */
    mama_dataset_opts_default(&dopt);
    dopt.manifest = arg_value(argc, argv, "--manifest", NULL);
    dopt.tokenizer = arg_value(argc, argv, "--tokenizer", "weights/tiny_vocab");
    dopt.skip_bad_rows = has_flag(argc, argv, "--skip-bad");
    dopt.keep_incomplete = has_flag(argc, argv, "--keep-incomplete");
    if (!decode_args(argc, argv, &dopt.decode)) return 2;
    o.checkpoint = arg_value(argc, argv, "--out", NULL);
    if (!dopt.manifest || !o.checkpoint) { fprintf(stderr, "mama pretrain: --manifest and --out are required\n"); return 2; }
    if (mama_config_preset(&cfg, arg_value(argc, argv, "--config", "tiny")) != MAMA_OK) return fail();
    if (!opt_long(argc, argv, "--steps", &o.steps) || !opt_int(argc, argv, "--batch", &o.batch) ||
        !opt_int(argc, argv, "--accum", &o.accum) || !opt_float(argc, argv, "--lr", &o.lr) ||
        !opt_long(argc, argv, "--warmup", &o.warmup) || !opt_long(argc, argv, "--late-loss", &o.late_loss) ||
        !arg_u64(argc, argv, "--seed", &o.seed) || !opt_long(argc, argv, "--checkpoint-every", &o.checkpoint_every) ||
        !opt_float(argc, argv, "--clip", &o.clip_grad) || !opt_float(argc, argv, "--mask", &o.caption_mask_p) ||
        !opt_long(argc, argv, "--val-every", &o.val_every))
        return 2;
    if (arg_value(argc, argv, "--val-every", NULL) && atol(arg_value(argc, argv, "--val-every", NULL)) == 0)
        o.val_every = MAMA_OFF; /* 0: never (the default struct's 0 is the default rule) */
    o.best_checkpoint = arg_value(argc, argv, "--best", NULL);
    if (o.steps < 1 || o.batch < 1 || o.accum < 1) {
        fprintf(stderr, "mama pretrain: --steps, --batch and --accum must be >= 1\n");
        return 2;
    }
    o.log_csv = arg_value(argc, argv, "--log", NULL);
    o.resume = has_flag(argc, argv, "--resume");
    if (has_flag(argc, argv, "--no-mv")) o.use_mv = MAMA_OFF;
    if (has_flag(argc, argv, "--no-sym")) o.use_sym = MAMA_OFF;
    if (has_flag(argc, argv, "--no-sla")) o.use_sla = MAMA_OFF;
    o.no_overlap = has_flag(argc, argv, "--no-overlap");
    if (!frozen_dtype_arg(argc, argv, &fdt)) return 2;
    if (init) {
        if (mama_model_load_as(&m, init, mama_cli_backend(), o.batch, fdt) != MAMA_OK) return fail();
    } else {
        cfg.frozen_dtype = fdt < 0 ? MAMA_F32 : (mama_dtype)fdt;
        if (mama_model_create(&m, &cfg, mama_cli_backend(), o.batch, o.seed) != MAMA_OK) return fail();
    }
    if (attach_comm(m) != 0) { mama_model_free(m); return 1; }
    if (mama_dataset_create(&d, &dopt, mama_model_config(m)) != MAMA_OK) { mama_model_free(m); return fail(); }
    print_skips(d);
    if (g_rank == 0)
        fprintf(stderr, "pretrain: %d train images (%d skipped), %ld steps of %d x %d x %d ranks, %d threads\n",
                mama_dataset_pretrain_split(d, MAMA_SPLIT_TRAIN, NULL), mama_dataset_skipped(d), o.steps, o.batch, o.accum,
                g_comm ? g_comm->size : 1, mama_num_threads());
    if (mama_pretrain(m, d, &o, &r) != MAMA_OK) rc = fail();
    else if (g_rank == 0) {
        printf("pretrained %ld steps in %.1f s (%.1f images/s), final loss %.4f; checkpoint %s\n", r.steps_done,
               r.seconds, r.images_per_s, r.last.loss, o.checkpoint);
        if (r.best_val_step > 0)
            printf("best validation loss %.4f after step %ld (last %.4f)\n", r.best_val_loss, r.best_val_step,
                   r.last_val_loss);
        if (g_comm && g_comm->size > 1)
            printf("gradient all-reduce (rank 0, %s): %.2f s in the training thread (%.1f%% of %.1f s), %.2f s of it "
                   "after the backward\n", r.grad_buckets ? "overlapped with the backward" : "blocking",
                   r.grad_comm_seconds, r.seconds > 0 ? 100.0 * r.grad_comm_seconds / r.seconds : 0.0, r.seconds,
                   r.grad_wait_seconds);
    }
    mama_dataset_free(d);
    mama_model_free(m);
    return rc;
}

#include "mama_demo.c"

static void print_usage(FILE *f) {
    mama_pretrain_opts po;
    mama_probe_opts pr;
    demo_opts dm;
    mama_pretrain_opts_default(&po);
    mama_probe_opts_default(&pr);
    demo_opts_default(&dm);
    fprintf(f, USAGE_TEXT, po.steps, po.batch, po.accum, (double)po.lr, po.warmup, po.late_loss,
            (double)po.caption_mask_p, (unsigned long long)po.seed, pr.steps, pr.batch, dm.out, dm.studies, dm.size,
            dm.steps, dm.batch, dm.probe_steps, (double)dm.lr, (unsigned long long)dm.seed);
    fputs(USAGE_DATA_TEXT, f);
    fputs(USAGE_DECODE_TEXT, f);
    fputs(USAGE_VAL_TEXT, f);
}

static int parse_tasks(const char *name, mama_zeroshot_task *tasks) {
    if (!strcmp(name, "all")) { tasks[0] = MAMA_ZEROSHOT_BIRADS; tasks[1] = MAMA_ZEROSHOT_DENSITY; tasks[2] = MAMA_ZEROSHOT_CANCER; return 3; }
    if (!strcmp(name, "birads")) { tasks[0] = MAMA_ZEROSHOT_BIRADS; return 1; }
    if (!strcmp(name, "density")) { tasks[0] = MAMA_ZEROSHOT_DENSITY; return 1; }
    if (!strcmp(name, "cancer")) { tasks[0] = MAMA_ZEROSHOT_CANCER; return 1; }
    return 0;
}
static int parse_split(const char *name, mama_split *s) {
    if (!strcmp(name, "train")) *s = MAMA_SPLIT_TRAIN;
    else if (!strcmp(name, "val")) *s = MAMA_SPLIT_VAL;
    else if (!strcmp(name, "test")) *s = MAMA_SPLIT_TEST;
    else return 0;
    return 1;
}

/* Shared by zeroshot and probe: model + dataset from the common options. */
static int open_eval(int argc, char **argv, mama_model **m, mama_dataset **d) {
    mama_dataset_opts dopt;
    const char *w = arg_value(argc, argv, "--weights", NULL);
    mama_dataset_opts_default(&dopt);
    dopt.manifest = arg_value(argc, argv, "--manifest", NULL);
    dopt.tokenizer = arg_value(argc, argv, "--tokenizer", "weights/tiny_vocab");
    dopt.skip_bad_rows = has_flag(argc, argv, "--skip-bad");
    dopt.keep_incomplete = has_flag(argc, argv, "--keep-incomplete");
    if (!decode_args(argc, argv, &dopt.decode)) return 2;
    if (!w || !dopt.manifest) { fprintf(stderr, "mama: --weights and --manifest are required\n"); return 2; }
    if (load_model(argc, argv, m, w, atoi(arg_value(argc, argv, "--max-batch", "32"))) != MAMA_OK) return fail();
    if (mama_dataset_create(d, &dopt, mama_model_config(*m)) != MAMA_OK) { mama_model_free(*m); return fail(); }
    print_skips(*d);
    return 0;
}

static int write_json(const char *path, mama_buf *b) {
    if (!path) return 0;
    if (mama_write_file_atomic(path, b->data, b->len) != MAMA_OK) return fail();
    printf("wrote %s\n", path);
    return 0;
}

/* probe: 0 zeroshot, 1 linear probe, 2 full fine-tuning */
static int cmd_eval(int argc, char **argv, int probe) {
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    mama_zeroshot_task tasks[3];
    mama_split split = MAMA_SPLIT_TEST;
    mama_buf json = {0, 0, 0};
    int nt = parse_tasks(arg_value(argc, argv, "--task", "all"), tasks), i, rc;
    if (!nt || !parse_split(arg_value(argc, argv, "--split", "test"), &split)) {
        fprintf(stderr, "mama: bad --task or --split\n");
        return 2;
    }
    if ((rc = open_eval(argc, argv, &m, &d)) != 0) return rc;
    if (attach_comm(m) != 0) { mama_dataset_free(d); mama_model_free(m); return 1; }
    mama_buf_puts(&json, "{");
    for (i = 0; i < nt && rc == 0; i++) {
        mama_eval_result r;
        mama_status s;
        char title[128];
        if (probe) {
            mama_probe_opts po;
            mama_probe_opts_default(&po); /* the library's defaults, then the options given */
            if (!opt_long(argc, argv, "--steps", &po.steps) || !opt_int(argc, argv, "--batch", &po.batch) ||
                !opt_long(argc, argv, "--val-every", &po.val_every)) {
                rc = 2;
                break;
            }
            if (arg_value(argc, argv, "--val-every", NULL) && atol(arg_value(argc, argv, "--val-every", NULL)) == 0)
                po.val_every = MAMA_OFF; /* 0: never, the last weights */
            if (has_flag(argc, argv, "--no-augment")) po.augment = MAMA_OFF;
            s = probe == 2 ? mama_finetune(m, d, tasks[i], &po, split, &r) : mama_linear_probe(m, d, tasks[i], &po, split, &r);
        } else {
            s = mama_zeroshot(m, d, split, tasks[i], has_flag(argc, argv, "--ref-text-feature"), &r);
        }
        if (s != MAMA_OK) { rc = fail(); break; }
        snprintf(title, sizeof title, "%s %s on %s", probe == 2 ? "fine-tuning" : probe ? "linear probe" : "zeroshot",
                 mama_task_name(tasks[i]),
                 mama_split_name(split));
        if (g_rank == 0) mama_metrics_print(&r.metrics, title, stdout);
        if (g_rank == 0 && arg_value(argc, argv, "--png", NULL)) { /* the confusion matrix as a picture */
            static const char *const names[3][7] = {{"0 (A)", "1 (N)", "2 (B)", "3 (P)", "4 (S)", "5 (M)", "6 (K)"},
                                                    {"fatty", "scattered", "heterog.", "dense"}, {"no cancer", "cancer"}};
            char png[512];
            snprintf(png, sizeof png, "%s_%s.png", arg_value(argc, argv, "--png", NULL), mama_task_name(tasks[i]));
            if (demo_plot_confusion(png, title, names[tasks[i]], &r.metrics) != MAMA_OK) rc = fail();
            else printf("wrote %s\n", png);
        }
        mama_buf_printf(&json, "%s\"%s\":", i ? "," : "", mama_task_name(tasks[i]));
        mama_metrics_json(&r.metrics, &json);
        mama_eval_result_free(&r);
    }
    mama_buf_puts(&json, "}\n");
    if (rc == 0 && g_rank == 0) rc = write_json(arg_value(argc, argv, "--json", NULL), &json);
    mama_buf_free(&json);
    mama_dataset_free(d);
    mama_model_free(m);
    return rc;
}


static int cmd_caption(int argc, char **argv) {
    mama_manifest man;
    mama_caption_fields f;
    mama_rng rng;
    char *caption = NULL;
    const char *path = arg_value(argc, argv, "--manifest", NULL);
    int row = atoi(arg_value(argc, argv, "--row", "0"));
    float p = (float)atof(arg_value(argc, argv, "--mask", "0"));
    int rc = 0;
    if (!path) { fprintf(stderr, "mama caption: --manifest is required\n"); return 2; }
    if (mama_manifest_load(&man, path, 0) != MAMA_OK) return fail();
    if (row < 0 || row >= man.count) {
        fprintf(stderr, "mama caption: row %d out of range (the manifest has %d rows)\n", row, man.count);
        mama_manifest_free(&man);
        return 2;
    }
    mama_record_caption_fields(&man.records[row], &f);
    mama_rng_seed(&rng, strtoull(arg_value(argc, argv, "--seed", "1"), NULL, 10));
    if (p > 0) mama_caption_mask(&f, &f, p, &rng);
    if (mama_caption_build_alloc(&f, &caption) != MAMA_OK) { mama_manifest_free(&man); return fail(); }
    printf("%s\n", caption);
    if (has_flag(argc, argv, "--tokens")) {
        mama_tokenizer *tok = NULL;
        int ids[1024], mask[1024], n = 0, i, context;
        const char *vocab = arg_value(argc, argv, "--vocab", "weights/tiny_vocab");
        mama_config cc;
        char cname[80];
        /* the context and the special ids of the model the ids are for
         * (--config, default tiny; --context overrides the length) */
        snprintf(cname, sizeof cname, "--config %s", arg_value(argc, argv, "--config", "tiny"));
        if (mama_config_preset(&cc, arg_value(argc, argv, "--config", "tiny")) != MAMA_OK) {
            mama_free(caption);
            mama_manifest_free(&man);
            return fail();
        }
        context = atoi(arg_value(argc, argv, "--context", "0"));
        if (context <= 0) context = cc.context;
        if (context > 1024) context = 1024;
        if (mama_tokenizer_load(&tok, vocab) != MAMA_OK ||
            mama_tokenizer_check_config(tok, vocab, &cc, cname) != MAMA_OK ||
            mama_tokenizer_encode_caption(tok, caption, context, ids, mask, &n) != MAMA_OK) {
            rc = fail();
        } else {
            printf("%d tokens (context %d):", n, context);
            for (i = 0; i < n; i++) printf(" %d", ids[i]);
            printf("\n");
        }
        mama_tokenizer_free(tok);
    }
    mama_free(caption);
    mama_manifest_free(&man);
    return rc;
}

static int cmd_tokenizer(int argc, char **argv) {
    mama_manifest man;
    const char *path = arg_value(argc, argv, "--manifest", NULL), *out = arg_value(argc, argv, "--out", NULL);
    int vocab = atoi(arg_value(argc, argv, "--vocab-size", "2042")), variants = atoi(arg_value(argc, argv, "--variants", "8"));
    int i, v, n = 0, merges = 0, rc = 0;
    char **texts;
    mama_rng rng;
    if (argc < 1 || strcmp(argv[0], "train") || !path || !out) {
        fprintf(stderr, "usage: mama tokenizer train --manifest M --out DIR [--vocab-size N] [--variants K]\n");
        return 2;
    }
    if (mama_manifest_load(&man, path, 0) != MAMA_OK) return fail();
    texts = (char **)calloc((size_t)man.count * variants + 1, sizeof(char *));
    mama_rng_seed(&rng, 1);
    /* the captions as training sees them: each row unmasked and masked a few times */
    for (i = 0; i < man.count; i++)
        for (v = 0; v < variants; v++) {
            mama_caption_fields f;
            mama_record_caption_fields(&man.records[i], &f);
            if (v > 0) mama_caption_mask(&f, &f, 0.8f, &rng);
            if (mama_caption_build_alloc(&f, &texts[n]) == MAMA_OK) n++;
        }
    if (mama_tokenizer_train((const char *const *)texts, n, vocab, out, &merges) != MAMA_OK) rc = fail();
    else printf("wrote %s/vocab.json and merges.txt: %d merges from %d captions (+6 special tokens on load)\n", out, merges, n);
    for (i = 0; i < n; i++) mama_free(texts[i]);
    free(texts);
    mama_manifest_free(&man);
    return rc;
}

/* A float32 matrix [rows, cols] as a NumPy .npy file (format 1.0, little
 * endian, C order), written atomically (only `embed` writes .npy). */
static mama_status mama_cli_npy_write(const char *path, const float *data, int rows, int cols) {
    mama_atomic_file af;
    char header[128];
    int n, pad;
    if (rows < 0 || cols < 0 || (!data && rows * cols > 0))
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: bad .npy shape [%d, %d]", path, rows, cols);
    /* magic, version 1.0, header length (uint16 LE), then a Python dict
     * padded with spaces so that magic + length + dict + '\n' is a multiple of 64 */
    n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
    pad = 64 - (10 + n + 1) % 64;
    if (pad == 64) pad = 0;
    memset(header + n, ' ', (size_t)pad);
    header[n + pad] = '\n';
    n += pad + 1;
    MAMA_TRY(mama_atomic_open(&af, path));
    {
        unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
        pre[8] = (unsigned char)(n & 0xff);
        pre[9] = (unsigned char)(n >> 8);
        if (mama_atomic_write(&af, pre, 10) != MAMA_OK || mama_atomic_write(&af, header, (size_t)n) != MAMA_OK ||
            mama_atomic_write(&af, data, sizeof(float) * (size_t)rows * cols) != MAMA_OK) {
            mama_atomic_abort(&af);
            return MAMA_ERR_IO;
        }
    }
    return mama_atomic_commit(&af);
}

static int cmd_embed(int argc, char **argv) {
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    const char *out = arg_value(argc, argv, "--out", NULL), *w = arg_value(argc, argv, "--weights", NULL);
    const mama_config *c;
    float *emb = NULL;
    int rows = 0, i, rc = 0, first_image = -1;
    for (i = 0; i < argc; i++) if (!strcmp(argv[i], "--images")) first_image = i + 1;
    if (!out || !w) { fprintf(stderr, "mama embed: --weights and --out are required\n"); return 2; }
    if (first_image > 0) {
        mama_augment_opts aug = {0}; /* every default; the model's size below */
        mama_decode_opts dec;
        float *px;
        int n = 0;
        if (!decode_args(argc, argv, &dec)) return 2;
        while (first_image + n < argc && strncmp(argv[first_image + n], "--", 2)) n++;
        if (load_model(argc, argv, &m, w, 1) != MAMA_OK) return fail();
        c = mama_model_config(m);
        aug.size = c->image_size;
        emb = (float *)malloc(sizeof(float) * (size_t)(n + 1) * c->embed_dim);
        px = (float *)malloc(sizeof(float) * c->in_chans * c->image_size * c->image_size);
        for (i = 0; i < n && rc == 0; i++) {
            mama_image img = {0, 0, NULL};
            if (mama_image_load_opts(argv[first_image + i], &dec, &img) != MAMA_OK ||
                mama_image_pipeline(&img, &aug, 0, NULL, c->in_chans, px) != MAMA_OK ||
                mama_encode_images(m, px, 1, emb + (size_t)i * c->embed_dim, NULL) != MAMA_OK) rc = fail();
            mama_image_free(&img);
        }
        rows = n;
        free(px);
    } else {
        mama_split split = MAMA_SPLIT_TEST;
        const int *idx;
        int n;
        if ((rc = open_eval(argc, argv, &m, &d)) != 0) return rc;
        c = mama_model_config(m);
        parse_split(arg_value(argc, argv, "--split", "test"), &split);
        n = mama_dataset_split(d, split, &idx);
        emb = (float *)malloc(sizeof(float) * (size_t)(n + 1) * c->embed_dim);
        if (has_flag(argc, argv, "--texts")) {
            int T = c->context, B = 32, j;
            int *ids = (int *)malloc(sizeof(int) * B * T), *mask = (int *)malloc(sizeof(int) * B * T);
            for (i = 0; i < n && rc == 0; i += B) {
                int nb = n - i < B ? n - i : B;
                for (j = 0; j < nb && rc == 0; j++)
                    if (mama_dataset_caption(d, idx[i + j], 0.0f, NULL, ids + j * T, mask + j * T) != MAMA_OK) rc = fail();
                if (rc == 0 && mama_encode_texts(m, ids, mask, nb, emb + (size_t)i * c->embed_dim) != MAMA_OK) rc = fail();
            }
            free(ids); free(mask);
        } else {
            size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
            float *px = (float *)malloc(sizeof(float) * img);
            for (i = 0; i < n && rc == 0; i++)
                if (mama_dataset_image(d, idx[i], 0, NULL, px) != MAMA_OK ||
                    mama_encode_images(m, px, 1, emb + (size_t)i * c->embed_dim, NULL) != MAMA_OK) rc = fail();
            free(px);
        }
        rows = n;
    }
    if (rc == 0 && mama_cli_npy_write(out, emb, rows, mama_model_config(m)->embed_dim) != MAMA_OK) rc = fail();
    if (rc == 0) printf("wrote %s: %d x %d embeddings\n", out, rows, mama_model_config(m)->embed_dim);
    free(emb);
    mama_dataset_free(d);
    mama_model_free(m);
    return rc;
}

static int cmd_heatmap(int argc, char **argv) {
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    const char *out = arg_value(argc, argv, "--out", NULL);
    char caption[4096];
    int rc;
    if (!out) { fprintf(stderr, "mama heatmap: --out is required\n"); return 2; }
    if ((rc = open_eval(argc, argv, &m, &d)) != 0) return rc;
    rc = demo_heatmap_record(m, d, atoi(arg_value(argc, argv, "--row", "0")), out, caption, sizeof caption);
    if (rc == 0) printf("wrote %s for: %s\n", out, caption);
    mama_dataset_free(d);
    mama_model_free(m);
    return rc;
}

static int cmd_bench(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "gemm")) return mama_bench_gemm_main(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "train")) return mama_bench_train_main(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "encode")) return mama_bench_encode_main(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "weights")) return mama_bench_weights_main(argc - 1, argv + 1);
    fprintf(stderr, "mama bench: expected gemm, train, encode or weights\n");
    print_usage(stderr);
    return 2;
}

static int run_command(int argc, char **argv);

/* Runs one command; under MPI (make MPI=1) the distributed commands first
 * join the communicator of the launcher's ranks. */
static int mama_cli_dispatch(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "help";
    int distributed = !strcmp(cmd, "pretrain") || !strcmp(cmd, "zeroshot") || !strcmp(cmd, "probe") ||
                      !strcmp(cmd, "finetune"), rc, i;
    for (i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--dp-reference")) g_dp_mode = MAMA_DP_REFERENCE;
#ifdef MAMA_MPI
    if (distributed) {
        if (mama_comm_mpi_create(&g_comm) != MAMA_OK) return fail();
        g_rank = g_comm->rank;
    }
    rc = run_command(argc, argv);
    mama_comm_free(g_comm); /* MPI_Finalize */
    return rc;
#else
    if (distributed && ((getenv("OMPI_COMM_WORLD_SIZE") && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1) ||
                        (getenv("PMI_SIZE") && atoi(getenv("PMI_SIZE")) > 1)))
        fprintf(stderr, "mama: warning: started by an MPI launcher, but this build has no MPI (build with `make "
                        "MPI=1`): every rank trains alone\n");
    rc = run_command(argc, argv);
    return rc;
#endif
}

static int run_command(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "help";
    if (!strcmp(cmd, "forward")) return cmd_forward(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "init")) return cmd_init(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "synth")) return cmd_synth(argc - 2, argv + 2);
    if (!strcmp(cmd, "pretrain")) return cmd_pretrain(argc - 2, argv + 2);
    if (!strcmp(cmd, "demo")) return mama_demo_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "caption")) return cmd_caption(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenizer")) return cmd_tokenizer(argc - 2, argv + 2);
    if (!strcmp(cmd, "embed")) return cmd_embed(argc - 2, argv + 2);
    if (!strcmp(cmd, "heatmap")) return cmd_heatmap(argc - 2, argv + 2);
    if (!strcmp(cmd, "zeroshot")) return cmd_eval(argc - 2, argv + 2, 0);
    if (!strcmp(cmd, "probe")) return cmd_eval(argc - 2, argv + 2, 1);
    if (!strcmp(cmd, "finetune")) return cmd_eval(argc - 2, argv + 2, 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) { print_usage(stdout); return 0; }
    fprintf(stderr, "mama: unknown command '%s'\n", cmd);
    print_usage(stderr);
    return 2;
}

int main(int argc, char **argv) {
    int rc = mama_cli_select_device(&argc, argv);
    if (rc) return rc;
    rc = mama_cli_dispatch(argc, argv);
    mama_cli_release();
    return rc;
}
