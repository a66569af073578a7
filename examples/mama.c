/* examples/mama.c - the `mama` command-line tool.  It parses arguments and
 * calls the public API of mama.h; nothing here is needed to use the
 * library.  Run `build/mama help` for the commands and `build/mama CMD
 * --help` for one command's flags and their defaults. */
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

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "device.c"
#define MAMA_BENCH_BACKEND() mama_cli_backend()
#include "../bench/bench_gemm.c"
#include "../bench/bench_train.c"

/* ==========================================================================
 * Flags.  Each command declares its flags in static const tables (near the
 * end of this file: cli_commands[] and the *_flags[] tables it names); one
 * parser, cli_parse, walks argv once against them.  An unknown flag is an
 * error that suggests the closest valid one, a flag without its value is an
 * error, numbers are parsed whole and checked against the row's range (NaN
 * and infinities refused), choices list the valid values, and `mama CMD
 * --help` prints the table.  To add a flag: add a row to the command's
 * table, then read it in the command with the cli_* getters below.
 * ========================================================================== */
typedef enum cli_kind {
    CLI_SWITCH,   /* no value */
    CLI_INT,      /* whole number, fits an int */
    CLI_LONG,     /* whole number, fits a long */
    CLI_U64,      /* whole number >= lo (0 or 1), fits a uint64_t (seeds) */
    CLI_FLOAT,    /* finite number */
    CLI_STRING,   /* any text (a path, C,W) */
    CLI_CHOICE,   /* one of the row's `choices` */
    CLI_FILES     /* one or more words up to the next flag (embed --images a.png b.png) */
} cli_kind;

#define CLI_LO_OPEN 1   /* range: lo itself is refused (x > lo) */
#define CLI_HI_OPEN 2   /* range: hi itself is refused (x < hi) */
#define CLI_REQUIRED 4  /* the command needs it */
#define CLI_INF 1e300   /* no bound */
#define CLI_NODEF (-1e300) /* no numeric default (see deftext) */

typedef struct cli_flag {
    const char *name;     /* "--steps" */
    cli_kind kind;
    double lo, hi;        /* numbers: the valid range (CLI_INF: none) */
    int bits;             /* CLI_LO_OPEN, CLI_HI_OPEN, CLI_REQUIRED */
    const char *choices;  /* CLI_CHOICE: the valid values, "a|b|c" */
    double def;           /* numeric default (from the library's MAMA_*_DEFAULT_* macros), or CLI_NODEF */
    const char *deftext;  /* the default as text; for strings and choices also the value the getters return */
    const char *help;     /* one line */
    const char *meta;     /* the value's name in --help (NULL: from the kind) */
} cli_flag;

/* Row makers: a switch, a number with its range and default, a string, a
 * choice, a list of files; CLI_END closes a table. */
#define CLI_SW(name, help) {name, CLI_SWITCH, 0, 0, 0, NULL, CLI_NODEF, NULL, help, NULL}
#define CLI_NUM(name, kind, lo, hi, bits, def, help) {name, kind, lo, hi, bits, NULL, def, NULL, help, NULL}
#define CLI_NUMT(name, kind, lo, hi, bits, deftext, help) {name, kind, lo, hi, bits, NULL, CLI_NODEF, deftext, help, NULL}
#define CLI_STR(name, meta, bits, deftext, help) {name, CLI_STRING, 0, 0, bits, NULL, CLI_NODEF, deftext, help, meta}
#define CLI_CH(name, choices, deftext, help) {name, CLI_CHOICE, 0, 0, 0, choices, CLI_NODEF, deftext, help, NULL}
#define CLI_LIST(name, help) {name, CLI_FILES, 0, 0, 0, NULL, CLI_NODEF, NULL, help, NULL}
#define CLI_END {NULL, CLI_SWITCH, 0, 0, 0, NULL, CLI_NODEF, NULL, NULL, NULL}

#define CLI_MAX_FLAGS 80
#define CLI_MAX_TABLES 8
#define CLI_MAX_POS 4

typedef struct cli_args cli_args;
typedef struct cli_command {
    const char *name;        /* "pretrain", "bench train" */
    const char *synopsis;    /* what follows the name in the usage line */
    int positionals;         /* bare words it takes (info: the weights file; -1: any number, into files) */
    const char *about;       /* what it does (may be several lines) */
    int (*run)(const cli_args *a);
    const cli_flag *tables[CLI_MAX_TABLES]; /* its own flags, then shared groups; NULL ends */
} cli_command;

struct cli_args {
    const cli_command *cmd;
    const cli_flag *flag[CLI_MAX_FLAGS]; /* every flag of the command, its tables together */
    const char *value[CLI_MAX_FLAGS];    /* as given (a switch: "1"); NULL: not given */
    double num[CLI_MAX_FLAGS];           /* numbers, parsed */
    uint64_t u64[CLI_MAX_FLAGS];         /* CLI_U64, parsed */
    int nflags;
    const char *pos[CLI_MAX_POS];        /* bare words */
    int npos;
    char **files;                        /* the CLI_FILES flag's words */
    int nfiles;
};

static int cli_gather(const cli_command *c, cli_args *a) {
    int t, k;
    memset(a, 0, sizeof *a);
    a->cmd = c;
    for (t = 0; t < CLI_MAX_TABLES && c->tables[t]; t++)
        for (k = 0; c->tables[t][k].name; k++) {
            if (a->nflags == CLI_MAX_FLAGS) { fprintf(stderr, "mama: internal error: too many flags\n"); return 0; }
            a->flag[a->nflags++] = &c->tables[t][k];
        }
    return 1;
}

/* The index of `name` in the command's flags; a name missing from its
 * tables is a mistake in this file, caught by the CLI test. */
static int cli_index(const cli_args *a, const char *name) {
    int k;
    for (k = 0; k < a->nflags; k++)
        if (!strcmp(a->flag[k]->name, name)) return k;
    fprintf(stderr, "mama: internal error: %s reads %s, which its flag table lacks\n", a->cmd->name, name);
    abort();
}
static int cli_given(const cli_args *a, const char *name) { return a->value[cli_index(a, name)] != NULL; }
/* A string or choice: as given, else the row's default text (NULL: none). */
static const char *cli_str(const cli_args *a, const char *name) {
    int k = cli_index(a, name);
    return a->value[k] ? a->value[k] : a->flag[k]->deftext;
}
/* A number: as given, else the row's default. */
static double cli_num(const cli_args *a, const char *name) {
    int k = cli_index(a, name);
    return a->value[k] ? a->num[k] : a->flag[k]->def;
}
static uint64_t cli_seed(const cli_args *a, const char *name) {
    int k = cli_index(a, name);
    return a->value[k] ? a->u64[k] : a->flag[k]->def != CLI_NODEF ? (uint64_t)a->flag[k]->def : 0;
}
/* Options-struct fields (mama.h section 1): there a zero means "the
 * default", so a 0 given on the command line becomes MAMA_OFF (zero).  The
 * field is left as it is when the flag is absent. */
static long or_off(long v) { return v ? v : MAMA_OFF; }
static void cli_opt_long(const cli_args *a, const char *name, long *v) {
    if (cli_given(a, name)) *v = or_off((long)cli_num(a, name));
}
static void cli_opt_int(const cli_args *a, const char *name, int *v) {
    if (cli_given(a, name)) *v = (int)or_off((long)cli_num(a, name));
}
static void cli_opt_float(const cli_args *a, const char *name, float *v) {
    if (cli_given(a, name)) *v = cli_num(a, name) == 0 ? (float)MAMA_OFF : (float)cli_num(a, name);
}
static void cli_opt_u64(const cli_args *a, const char *name, uint64_t *v) {
    if (cli_given(a, name)) *v = cli_seed(a, name);
}

/* Edit distance with transpositions (optimal string alignment): --stpes is
 * one edit from --steps. */
static int cli_distance(const char *s, const char *t) {
    int d[48][48], i, j, n = (int)strlen(s), m = (int)strlen(t);
    if (n >= 48 || m >= 48) return 99;
    for (i = 0; i <= n; i++) d[i][0] = i;
    for (j = 0; j <= m; j++) d[0][j] = j;
    for (i = 1; i <= n; i++)
        for (j = 1; j <= m; j++) {
            int c = s[i - 1] != t[j - 1], best = d[i - 1][j - 1] + c;
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && s[i - 1] == t[j - 2] && s[i - 2] == t[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

/* "a whole number >= 1", "a number in [0, 1)": what a numeric flag wants. */
static void cli_describe(const cli_flag *f, char *buf, size_t cap) {
    const char *what = f->kind == CLI_FLOAT ? "a number" : "a whole number";
    int has_lo = f->lo > -CLI_INF, has_hi = f->hi < CLI_INF && !(f->kind == CLI_INT && f->hi >= 2147483647.0);
    if (f->kind == CLI_U64) /* a seed: >= 1 where the options field takes 0 as "the default" */
        snprintf(buf, cap, "a whole number >= %.0f%s", f->lo, f->lo > 0 ? " (0 would mean the default seed)" : "");
    else if (has_lo && has_hi) /* (%.15g: whole bounds such as 1e12 written out) */
        snprintf(buf, cap, "%s in %c%.15g, %.15g%c", what, f->bits & CLI_LO_OPEN ? '(' : '[', f->lo, f->hi,
                 f->bits & CLI_HI_OPEN ? ')' : ']');
    else if (has_lo) snprintf(buf, cap, "%s %s %.15g", what, f->bits & CLI_LO_OPEN ? ">" : ">=", f->lo);
    else if (has_hi) snprintf(buf, cap, "%s %s %.15g", what, f->bits & CLI_HI_OPEN ? "<" : "<=", f->hi);
    else snprintf(buf, cap, "%s", what);
}

/* "train, val or test" from "train|val|test" */
static void cli_choice_list(const char *choices, char *buf, size_t cap) {
    size_t n = 0, len = strlen(choices), i;
    const char *last = strrchr(choices, '|');
    for (i = 0; i < len && n + 6 < cap; i++) {
        if (choices[i] != '|') { buf[n++] = choices[i]; continue; }
        if (choices + i == last) { memcpy(buf + n, " or ", 4); n += 4; }
        else { memcpy(buf + n, ", ", 2); n += 2; }
    }
    buf[n] = 0;
}
static int cli_choice_ok(const char *choices, const char *v) {
    size_t n = strlen(v);
    const char *p = choices;
    while (n && p) {
        if (!strncmp(p, v, n) && (p[n] == '|' || p[n] == 0)) return 1;
        p = strchr(p, '|');
        if (p) p++;
    }
    return 0;
}

/* One value against its row; 0 after a message naming the flag. */
static int cli_value(cli_args *a, int k, const char *s) {
    const cli_flag *f = a->flag[k];
    char *end = NULL, want[96];
    double x = 0;
    int ok = 1;
    if (f->kind == CLI_CHOICE) {
        if (cli_choice_ok(f->choices, s)) return 1;
        cli_choice_list(f->choices, want, sizeof want);
        fprintf(stderr, "mama %s: %s must be %s (got '%s')\n", a->cmd->name, f->name, want, s);
        return 0;
    }
    if (f->kind == CLI_STRING) return 1;
    errno = 0;
    if (!s[0] || isspace((unsigned char)s[0])) ok = 0;
    else if (f->kind == CLI_U64) {
        unsigned long long u = strtoull(s, &end, 10);
        ok = isdigit((unsigned char)s[0]) && !*end && errno == 0 && (double)u >= f->lo;
        a->u64[k] = (uint64_t)u;
        x = (double)u;
    } else if (f->kind == CLI_FLOAT) {
        x = strtod(s, &end);
        ok = end != s && !*end && errno == 0 && isfinite(x);
    } else {
        long long v = strtoll(s, &end, 10);
        ok = end != s && !*end && errno == 0 && (f->kind != CLI_INT || (v >= INT_MIN && v <= INT_MAX));
        x = (double)v;
    }
    if (ok && f->kind != CLI_U64)
        ok = (f->bits & CLI_LO_OPEN ? x > f->lo : x >= f->lo) && (f->bits & CLI_HI_OPEN ? x < f->hi : x <= f->hi);
    if (!ok) {
        cli_describe(f, want, sizeof want);
        fprintf(stderr, "mama %s: %s wants %s (got '%s')\n", a->cmd->name, f->name, want, s);
        return 0;
    }
    a->num[k] = x;
    return 1;
}

static void cli_unknown(const cli_args *a, const char *word) {
    int k, best = -1, bd = 99;
    for (k = 0; k < a->nflags; k++) {
        int dd = cli_distance(word, a->flag[k]->name);
        if (dd < bd) { bd = dd; best = k; }
    }
    if (best >= 0 && bd <= 3 && bd * 3 <= (int)strlen(word))
        fprintf(stderr, "mama %s: unknown flag %s (did you mean %s?); `mama %s --help` lists its flags\n",
                a->cmd->name, word, a->flag[best]->name, a->cmd->name);
    else
        fprintf(stderr, "mama %s: unknown flag %s; `mama %s --help` lists its flags\n", a->cmd->name, word,
                a->cmd->name);
}

/* Walk argv (what follows the command's name) once against the command's
 * tables.  Returns 0, or 2 after a message. */
static int cli_parse(const cli_command *c, int argc, char **argv, cli_args *a) {
    int i, k;
    if (!cli_gather(c, a)) return 2;
    for (i = 0; i < argc; i++) {
        const char *s = argv[i], *eq, *val = NULL;
        char name[64];
        size_t len;
        if (s[0] != '-' || (s[1] != '-' && (isdigit((unsigned char)s[1]) || s[1] == '.')) || !s[1]) {
            if (c->positionals < 0 && !a->files) { /* any number of words (predict IMAGE...), as CLI_FILES */
                int n = 1;
                while (i + n < argc && strncmp(argv[i + n], "--", 2)) n++;
                a->files = argv + i;
                a->nfiles = n;
                i += n - 1;
                continue;
            }
            if (a->npos >= c->positionals || a->npos >= CLI_MAX_POS) {
                fprintf(stderr, "mama %s: unexpected argument '%s'%s; `mama %s --help` lists its flags\n", c->name, s,
                        i > 0 && argv[i - 1][0] == '-' ? " (a flag that takes no value before it?)" : "", c->name);
                return 2;
            }
            a->pos[a->npos++] = s;
            continue;
        }
        eq = strchr(s, '=');
        len = eq ? (size_t)(eq - s) : strlen(s);
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, s, len);
        name[len] = 0;
        for (k = 0; k < a->nflags && strcmp(a->flag[k]->name, name); k++) {}
        if (k == a->nflags) { cli_unknown(a, name); return 2; }
        if (a->value[k]) {
            fprintf(stderr, "mama %s: %s is given twice\n", c->name, name);
            return 2;
        }
        if (a->flag[k]->kind == CLI_SWITCH) {
            if (eq) { fprintf(stderr, "mama %s: %s takes no value (got '%s')\n", c->name, name, s); return 2; }
            a->value[k] = "1";
            continue;
        }
        if (a->flag[k]->kind == CLI_FILES) {
            int n = 0;
            while (i + 1 + n < argc && strncmp(argv[i + 1 + n], "--", 2)) n++;
            if (eq || n == 0) {
                fprintf(stderr, "mama %s: %s wants one or more files after it\n", c->name, name);
                return 2;
            }
            a->value[k] = argv[i + 1];
            a->files = argv + i + 1;
            a->nfiles = n;
            i += n;
            continue;
        }
        if (eq) val = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) val = argv[++i];
        if (!val) {
            if (a->flag[k]->kind == CLI_CHOICE) {
                char want[96];
                cli_choice_list(a->flag[k]->choices, want, sizeof want);
                fprintf(stderr, "mama %s: %s needs a value: %s\n", c->name, name, want);
            } else {
                fprintf(stderr, "mama %s: %s needs a value\n", c->name, name);
            }
            return 2;
        }
        if (!cli_value(a, k, val)) return 2;
        a->value[k] = val;
    }
    for (k = 0; k < a->nflags; k++)
        if ((a->flag[k]->bits & CLI_REQUIRED) && !a->value[k]) {
            fprintf(stderr, "mama %s: %s is required; `mama %s --help` lists its flags\n", c->name, a->flag[k]->name,
                    c->name);
            return 2;
        }
    return 0;
}

/* `mama CMD --help`: the usage line, what it does, and every flag of its
 * tables with its range and default. */
static void cli_print_help(const cli_command *c, FILE *f) {
    cli_args a;
    int k;
    cli_gather(c, &a);
    fprintf(f, "usage: mama %s %s\n\n%s\n\nflags:\n", c->name, c->synopsis, c->about);
    for (k = 0; k < a.nflags; k++) {
        const cli_flag *x = a.flag[k];
        char head[96], want[96] = "";
        const char *meta = x->meta ? x->meta : x->kind == CLI_SWITCH ? "" : x->kind == CLI_FILES ? "FILE..." :
                           x->kind == CLI_FLOAT ? "X" : "N";
        if (x->kind == CLI_CHOICE) snprintf(head, sizeof head, "%s %s", x->name, x->choices);
        else snprintf(head, sizeof head, "%s%s%s", x->name, meta[0] ? " " : "", meta);
        if (x->kind != CLI_SWITCH && x->kind != CLI_STRING && x->kind != CLI_CHOICE && x->kind != CLI_FILES) {
            cli_describe(x, want, sizeof want);
            strcat(want, "; ");
        }
        fprintf(f, "  %-26s %s", head, x->help);
        if (x->bits & CLI_REQUIRED) fprintf(f, " (required)");
        else if (x->deftext) fprintf(f, " (%sdefault %s)", want, x->deftext);
        else if (x->def != CLI_NODEF) fprintf(f, " (%sdefault %g)", want, x->def);
        else if (want[0]) { want[strlen(want) - 2] = 0; fprintf(f, " (%s)", want); }
        fputc('\n', f);
        if (strlen(head) > 26) {} /* long heads just push the text right */
    }
}

/* ==========================================================================
 * The help text of `mama help` (the commands come from cli_commands[]).
 * One literal stays under the 4095 characters C99 promises.
 * ========================================================================== */
#define USAGE_NOTES_TEXT \
    "every command takes --device cpu|reference|cuda[:N] (default cpu; reference = the plain\n" \
    "scalar backend of mama.h 3.6, slow, for checking; cuda needs `make cuda`)\n" \
    "and, with --device cuda, --precision fp32|tf32|bf16 (GEMM precision, default fp32)\n" \
    "--frozen-dtype (info, init, pretrain, zeroshot, probe, finetune, embed, heatmap): storage of the\n" \
    "frozen text tower's big matrices (text modes lora and frozen); auto = the weights file's dtype when\n" \
    "it is BF16 or F16, else f32 (f32 for a model created from a preset).  bf16/f16 halve their memory;\n" \
    "all arithmetic stays float32.  Trainable weights are always f32.  An inference-only model (bench encode\n" \
    "--dtype, the same values) keeps its image tower's matrices so too: bf16-widen widens them to f32 in the\n" \
    "GEMM (bf16 on an Intel CPU); bf16-dot rounds the activations to bf16 as well and multiplies bf16 pairs\n" \
    "(AVX512-BF16 kernel, f32 sums; bf16 on other CPUs that have it).\n"
#define USAGE_DATA_TEXT \
    "data flags (every command that opens a dataset; each prints what it left out and why):\n" \
    "  --skip-bad          skip malformed manifest rows and unreadable images instead of failing\n" \
    "  --keep-incomplete   pretrain on records whose caption lacks the procedure, its reason, the\n" \
    "                      density or BI-RADS too (SPEC A.7; left out by default)\n"
#define USAGE_DECODE_TEXT \
    "--bit-depth N | --window C,W (pretrain, zeroshot, probe, finetune, embed, heatmap): how 16-bit\n" \
    "images become 8-bit grey; default v*255/max(v) per image (SPEC A.5 step 1); --bit-depth N:\n" \
    "v*255/(2^N-1), N 1..16; --window C,W: DICOM linear window, centre C, width W >= 1.  8-bit\n" \
    "images are read as they are.\n"
#define USAGE_VAL_TEXT \
    "validation: pretrain [--val-every N] [--best PATH], finetune [--val-every N]\n" \
    "  pretrain computes the val loss (the objective on the val split: eval mode, no augmentation,\n" \
    "  unmasked captions) at each checkpoint and at the end, or every N steps (--val-every 0: never),\n" \
    "  logged as the val_loss column; the best checkpoint goes to PATH (default: the --out path with\n" \
    "  .best before its extension).  finetune evaluates the weights with the lowest val cross-entropy,\n" \
    "  checked every N steps (default steps/10) and at the end (--val-every 0: the last weights).\n"

static void print_usage(FILE *f);

/* Library messages name options-struct fields; the tool's user knows the
 * flags.  fail() prints the message with these words replaced (a word
 * matches whole: not inside a longer identifier). */
static const char *const cli_api_words[][2] = {
    {"skip_bad_rows", "--skip-bad"},   {"keep_incomplete", "--keep-incomplete"},
    {"allow_changes", "--allow-changes"}, {"checkpoint_every", "--checkpoint-every"},
    {"late_loss", "--late-loss"},      {"caption_mask_p", "--mask"},
    {"clip_grad", "--clip"},           {"val_every", "--val-every"},
    {"best_checkpoint", "--best"},     {"log_csv", "--log"},
    {"warmup", "--warmup"},            {"(steps ", "(--steps "},
    {"of steps)", "of --steps)"},      {NULL, NULL}};

static void cli_print_error(const char *msg) {
    const char *p = msg;
    while (*p) {
        int w, hit = 0;
        int boundary = p == msg || !(isalnum((unsigned char)p[-1]) || strchr("_-./", p[-1]));
        for (w = 0; boundary && cli_api_words[w][0]; w++) {
            size_t n = strlen(cli_api_words[w][0]);
            char last = cli_api_words[w][0][n - 1];
            if (!strncmp(p, cli_api_words[w][0], n) &&
                (!(isalnum((unsigned char)last) || last == '_') || (!isalnum((unsigned char)p[n]) && p[n] != '_'))) {
                fputs(cli_api_words[w][1], stderr);
                p += n;
                hit = 1;
                break;
            }
        }
        if (!hit) fputc(*p++, stderr);
    }
    fputc('\n', stderr);
}

static int fail(void) {
    fputs("mama: error: ", stderr);
    cli_print_error(mama_last_error());
    return 1;
}

/* --bit-depth N and --window C,W (pretrain, zeroshot, probe, finetune, embed,
 * heatmap): how 16-bit images become 8 bits (mama_decode_opts; default: by
 * each image's maximum).  Returns 0 after a message naming the flag when a
 * value is malformed. */
static int decode_args(const cli_args *a, mama_decode_opts *o) {
    const char *win = cli_str(a, "--window");
    char *end;
    memset(o, 0, sizeof *o);
    if (cli_given(a, "--bit-depth")) o->bit_depth = (int)cli_num(a, "--bit-depth");
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
    if (o->bit_depth && win) {
        fprintf(stderr, "mama: --bit-depth and --window are exclusive\n");
        return 0;
    }
    return 1;
}

/* Data parallel (mama.h section 12): under `mpirun -np N` a build with
 * MPI=1 runs pretrain, finetune, probe and zeroshot on N ranks; rank 0
 * alone prints and writes files.  Without MPI this is one process. */
static mama_comm *g_comm = NULL;
static mama_dp_mode g_dp_mode = MAMA_DP_GLOBAL;
static int g_rank = 0;
static const char *g_argv0 = NULL; /* where the default tokenizer may be found (weights/ beside build/) */

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
    if (k->duplicates) fprintf(stderr, "data: %d duplicated row(s) left out (equal to an earlier row)\n", k->duplicates);
    if (k->overlap_patients)
        fprintf(stderr, "data: warning: %d patient(s) have images in more than one split (--allow-split-overlap)\n",
                k->overlap_patients);
}

/* The summary's last part: a split with images but fewer than one batch
 * (pretraining's train split, which cannot fill one, is an error later). */
static void warn_small_splits(const mama_dataset *d, int batch, int pretraining) {
    int sp, n;
    if (g_rank != 0) return;
    for (sp = 0; sp < 3; sp++) {
        n = pretraining ? mama_dataset_pretrain_split(d, (mama_split)sp, NULL) : mama_dataset_split(d, (mama_split)sp, NULL);
        if (n > 0 && n < batch)
            fprintf(stderr, "data: warning: the %s split has %d image(s), fewer than a batch of %d\n",
                    mama_split_name(sp), n, batch);
    }
}

/* --frozen-dtype auto|bf16|bf16-dot|bf16-widen|f16|f32 (checked by the
 * parser) -> -1 (the file's) or a mama_dtype; bf16-dot / bf16-widen also
 * force the CPU backend's GEMM path for bf16 weights (section 1.7) */
static int frozen_dtype_arg(const cli_args *a) {
    const char *v = cli_str(a, "--frozen-dtype");
    if (!strncmp(v, "bf16-", 5) && !mama_cpu_backend_force_bf16(mama_cli_backend(), v + 5))
        fprintf(stderr, "mama: warning: --frozen-dtype %s: not on this device or CPU; the default bf16 path runs\n", v);
    return !strncmp(v, "bf16", 4) ? (int)MAMA_BF16 : !strcmp(v, "f16") ? (int)MAMA_F16 : !strcmp(v, "f32") ? (int)MAMA_F32 : -1;
}

/* mama_model_load with the --frozen-dtype option */
static mama_status load_model(const cli_args *a, mama_model **m, const char *path, int max_batch) {
    return mama_model_load_as(m, path, mama_cli_backend(), max_batch, frozen_dtype_arg(a));
}

/* The tokenizer: --tokenizer; else the one the model was trained with
 * (recorded in its weights, mama_model_tokenizer: a relative path against
 * the weights' folder first, then the recorded absolute path, then the path
 * as recorded); else the default.  NULL after a message when the record
 * points nowhere.  buf holds a path built here. */
#define CLI_DEFAULT_TOKENIZER "weights/tiny_vocab"
static const char *tokenizer_path(const cli_args *a, const mama_model *m, const char *weights, char *buf, size_t cap) {
    const char *abs_p = NULL, *fp = NULL, *rec = m ? mama_model_tokenizer(m, &abs_p, &fp) : NULL, *slash;
    struct stat sb;
    if (cli_given(a, "--tokenizer")) return cli_str(a, "--tokenizer");
    if (!rec) { /* the default, from here or beside the executable (build/mama -> build/../weights/) */
        slash = g_argv0 ? strrchr(g_argv0, '/') : NULL;
        if (stat(CLI_DEFAULT_TOKENIZER, &sb) != 0 && slash) {
            snprintf(buf, cap, "%.*s/../%s", (int)(slash - g_argv0), g_argv0, CLI_DEFAULT_TOKENIZER);
            if (stat(buf, &sb) == 0) return buf;
        }
        return CLI_DEFAULT_TOKENIZER;
    }
    slash = weights ? strrchr(weights, '/') : NULL;
    snprintf(buf, cap, "%.*s%s", slash ? (int)(slash - weights + 1) : 0, weights ? weights : "", rec);
    if (rec[0] != '/' && stat(buf, &sb) == 0) {}
    else if (abs_p && stat(abs_p, &sb) == 0) snprintf(buf, cap, "%s", abs_p);
    else if (stat(rec, &sb) == 0) snprintf(buf, cap, "%s", rec);
    else {
        fprintf(stderr, "mama: %s was trained with the tokenizer '%s' (fingerprint %s), not found next to it (%s), at "
                "%s or from here; give --tokenizer\n", weights, rec, fp ? fp : "?", buf, abs_p ? abs_p : "(none)");
        return NULL;
    }
    if (g_rank == 0) fprintf(stderr, "tokenizer: %s (recorded in %s)\n", buf, weights);
    return buf;
}

/* mama_dataset_create; a tokenizer that does not fit the model when none
 * was given says that --tokenizer is needed. */
static int dataset_open(const cli_args *a, mama_dataset **d, const mama_dataset_opts *dopt, const mama_model *m) {
    if (mama_dataset_create(d, dopt, mama_model_config(m)) == MAMA_OK) return 0;
    fail();
    if (!cli_given(a, "--tokenizer") && !strcmp(dopt->tokenizer, CLI_DEFAULT_TOKENIZER))
        fprintf(stderr, "mama: give --tokenizer: the default %s fits --config tiny only\n", CLI_DEFAULT_TOKENIZER);
    return 1;
}

/* The dataset options every dataset command shares (cli_data_flags). */
static int data_opts(const cli_args *a, mama_dataset_opts *dopt) {
    mama_dataset_opts_default(dopt);
    dopt->manifest = cli_str(a, "--manifest");
    dopt->tokenizer = cli_given(a, "--tokenizer") ? cli_str(a, "--tokenizer") : CLI_DEFAULT_TOKENIZER;
    dopt->skip_bad_rows = cli_given(a, "--skip-bad");
    dopt->keep_incomplete = cli_given(a, "--keep-incomplete");
    dopt->allow_split_overlap = cli_given(a, "--allow-split-overlap");
    if (!decode_args(a, &dopt->decode)) return 0;
    if (cli_given(a, "--max-side")) dopt->decode.max_side = (int)cli_num(a, "--max-side");
    return 1;
}

/* The preset a config was made from ("paper" when none matches): its
 * augmentation set is --aug's default. */
static const char *preset_of(const mama_config *c) {
    static const char *const names[3] = {"tiny", "small", "base"};
    int k;
    for (k = 0; k < 3; k++) {
        mama_config p;
        mama_config_preset(&p, names[k]);
        if (p.image_size == c->image_size && p.vision_dim == c->vision_dim && p.vision_depth == c->vision_depth)
            return names[k];
    }
    return "paper";
}

/* "LO,HI" of flag f into v[2] (unchanged when not given); 0 after a message
 * naming the flag when malformed or lo > hi. */
static int pair_arg(const cli_args *a, const char *f, float v[2]) {
    const char *t = cli_str(a, f);
    char *e1, *e2;
    double lo, hi;
    if (!t || !cli_given(a, f)) return 1;
    lo = strtod(t, &e1);
    if (e1 == t || *e1 != ',' || (hi = strtod(e1 + 1, &e2), e2 == e1 + 1 || *e2) || !isfinite(lo) || !isfinite(hi) ||
        !(lo > 0) || lo > hi || hi > 1e6) {
        fprintf(stderr, "mama: %s wants LO,HI (numbers, 0 < LO <= HI; got '%s')\n", f, t);
        return 0;
    }
    v[0] = (float)lo;
    v[1] = (float)hi;
    return 1;
}

/* cli_aug_flags into the dataset's augmentation (which pretraining takes
 * too): the --aug set (default: the model's preset's), then each field
 * given; a probability 0 turns that step off. */
static int aug_opts(const cli_args *a, const mama_config *c, mama_augment_opts *o) {
    const char *set = cli_given(a, "--aug") ? cli_str(a, "--aug") : preset_of(c);
    static const char *const p_flags[4] = {"--hflip", "--vflip", "--jitter", "--blur"};
    float *p_fields[4];
    int k;
    if (mama_augment_preset(o, set) != MAMA_OK) return fail(), 0;
    p_fields[0] = &o->hflip_p; p_fields[1] = &o->vflip_p; p_fields[2] = &o->jitter_p; p_fields[3] = &o->blur_p;
    for (k = 0; k < 4; k++)
        if (cli_given(a, p_flags[k])) {
            float p = (float)cli_num(a, p_flags[k]);
            *p_fields[k] = p > 0 ? p : MAMA_OFF;
            if (k == 2) o->jitter = p > 0 ? 1 : MAMA_OFF;
            if (k == 3) o->blur = p > 0 ? 1 : MAMA_OFF;
        }
    if (cli_given(a, "--crop-scale")) o->rrc = 1;
    if (cli_given(a, "--no-crop")) o->rrc = MAMA_OFF;
    if (!pair_arg(a, "--crop-scale", o->rrc_scale) || !pair_arg(a, "--brightness", o->brightness) ||
        !pair_arg(a, "--contrast", o->contrast) || !pair_arg(a, "--blur-sigma", o->blur_sigma))
        return 0;
    if (o->rrc_scale[1] > 1) { fprintf(stderr, "mama: --crop-scale: HI must be <= 1\n"); return 0; }
    if (g_rank == 0)
        fprintf(stderr, "augmentation: %s%s\n", cli_given(a, "--aug") ? set : !strcmp(set, "base") ? "paper" : "light",
                cli_given(a, "--aug") ? "" : " (the model preset's set; --aug chooses another)");
    return 1;
}

static int cmd_forward(const cli_args *a) {
    const char *o = cli_str(a, "--out");
    if (mama_verify_forward(cli_str(a, "--weights"), cli_str(a, "--batch"), o, atoi(cli_str(a, "--late")),
                            mama_cli_backend()) != MAMA_OK) return fail();
    printf("wrote %s\n", o);
    return 0;
}

static int cmd_info(const cli_args *a) {
    mama_model *m = NULL;
    mama_safetensors st;
    const mama_config *c;
    char json[2048];
    size_t tower[3] = {0, 0, 0}, group[4], by_dtype[4][3], file_by_dtype[3] = {0, 0, 0};
    double mem[4], total = 0, grad_mb;
    int i, g, k;
    const char *path = a->npos ? a->pos[0] : NULL;
    static const char *const gname[4] = {"train", "late", "frozen", "buffers"};
    static const mama_dtype kinds[3] = {MAMA_F32, MAMA_BF16, MAMA_F16};
    if (!path) { fprintf(stderr, "mama info: give a .safetensors file (mama info W.safetensors)\n"); return 2; }
    if (load_model(a, &m, path, 1) != MAMA_OK) return fail();
    c = mama_model_config(m);
    mama_config_to_json(c, json, sizeof json);
    printf("file: %s\nconfig: %s\n", path, json);
    /* the file's own dtypes */
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, path) == MAMA_OK) {
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

static int cmd_init(const cli_args *a) {
    mama_config cfg;
    mama_model *m = NULL;
    mama_backend *cpu = NULL;
    const char *out = cli_str(a, "--out"), *mode = cli_str(a, "--text-mode");
    int fdt = frozen_dtype_arg(a), rc = 0;
    double t0 = mama_time_seconds(), t1;
    if (mama_config_preset(&cfg, cli_str(a, "--config")) != MAMA_OK) return fail();
    if (mode) cfg.text_mode = !strcmp(mode, "lora") ? MAMA_TEXT_LORA : !strcmp(mode, "frozen") ? MAMA_TEXT_FROZEN : MAMA_TEXT_FULL;
    cfg.frozen_dtype = fdt < 0 ? MAMA_F32 : (mama_dtype)fdt;
    /* initialised on the host whatever --device says: a CPU backend of its own */
    if (mama_cpu_backend_create(&cpu) != MAMA_OK) return fail();
    if (mama_model_create(&m, &cfg, cpu, 1, cli_seed(a, "--seed")) != MAMA_OK) {
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

static int cmd_synth(const cli_args *a) {
    const char *out = cli_str(a, "--out");
    int studies = (int)cli_num(a, "--studies"), size = (int)cli_num(a, "--size");
    double t0 = mama_time_seconds();
    if (mama_synth_write(out, studies, size, cli_seed(a, "--seed"), cli_given(a, "--balanced")) != MAMA_OK) return fail();
    printf("wrote %d studies (%d images, %d px) and %s/manifest.csv in %.1f s\n", studies, 4 * studies, size, out,
           mama_time_seconds() - t0);
    return 0;
}

/* Before the first step, so that nothing is lost and nothing fails late
 * (issue 16 item 3): an existing --out is replaced only with --overwrite
 * (--resume continues it, and wants it to exist); --out, --best and --log
 * must be writable (a temporary file is created beside each and removed;
 * an existing file must open for writing without being changed). */
static int cli_file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL || errno == EACCES; /* (ENOENT, ENOTDIR: not there) */
}
static int cli_writable(const char *flag, const char *path) {
    mama_atomic_file af;
    FILE *f;
    if (mama_atomic_open(&af, path) != MAMA_OK) {
        fprintf(stderr, "mama pretrain: %s %s cannot be written: ", flag, path);
        cli_print_error(mama_last_error());
        return 0;
    }
    mama_atomic_abort(&af);
    if (cli_file_exists(path)) {
        if (!(f = fopen(path, "r+b"))) {
            fprintf(stderr, "mama pretrain: %s %s cannot be written: %s\n", flag, path, strerror(errno));
            return 0;
        }
        fclose(f);
    }
    return 1;
}
static int pretrain_preflight(const cli_args *a, const mama_pretrain_opts *o) {
    int exists = cli_file_exists(o->checkpoint), resume = cli_given(a, "--resume");
    if (resume && cli_given(a, "--overwrite")) {
        fprintf(stderr, "mama pretrain: --resume continues %s, --overwrite replaces it: give one\n", o->checkpoint);
        return 0;
    }
    if (resume && !exists) {
        fprintf(stderr, "mama pretrain: --resume: %s does not exist (%s); without --resume a new run starts there\n",
                o->checkpoint, strerror(errno));
        return 0;
    }
    if (exists && !resume && !cli_given(a, "--overwrite")) {
        fprintf(stderr, "mama pretrain: --out %s exists: --resume continues that run, --overwrite replaces it\n",
                o->checkpoint);
        return 0;
    }
    return cli_writable("--out", o->checkpoint) && (!o->best_checkpoint || cli_writable("--best", o->best_checkpoint)) &&
           (!o->log_csv || cli_writable("--log", o->log_csv));
}

static int cmd_pretrain(const cli_args *a) {
    mama_config cfg;
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    mama_dataset_opts dopt;
    mama_pretrain_opts o;
    mama_pretrain_result r;
    const char *init = cli_str(a, "--init");
    char tokbuf[2048];
    int rc = 0, fdt = frozen_dtype_arg(a);
    mama_pretrain_opts_default(&o); /* the library's defaults, then the flags given */
    if (!data_opts(a, &dopt)) return 2;
    o.checkpoint = cli_str(a, "--out");
    if (mama_config_preset(&cfg, cli_str(a, "--config")) != MAMA_OK) return fail();
    cli_opt_long(a, "--steps", &o.steps);
    cli_opt_int(a, "--batch", &o.batch);
    cli_opt_int(a, "--accum", &o.accum);
    cli_opt_float(a, "--lr", &o.lr);
    o.warmup = o.late_loss = 0; /* unless given: fractions of --steps (the library's rule) */
    cli_opt_long(a, "--warmup", &o.warmup);
    cli_opt_long(a, "--late-loss", &o.late_loss);
    cli_opt_u64(a, "--seed", &o.seed);
    cli_opt_long(a, "--checkpoint-every", &o.checkpoint_every);
    cli_opt_float(a, "--clip", &o.clip_grad);
    cli_opt_float(a, "--mask", &o.caption_mask_p);
    cli_opt_long(a, "--val-every", &o.val_every); /* 0: never (MAMA_OFF; the struct's 0 is the default rule) */
    dopt.splits = 1 << MAMA_SPLIT_TRAIN | (o.val_every == MAMA_OFF ? 0 : 1 << MAMA_SPLIT_VAL); /* test: not decoded */
    o.best_checkpoint = cli_given(a, "--best") ? cli_str(a, "--best") : NULL; /* NULL: the library's default path */
    o.log_csv = cli_str(a, "--log");
    o.resume = cli_given(a, "--resume");
    o.allow_changes = cli_given(a, "--allow-changes");
    if (cli_given(a, "--no-mv")) o.use_mv = MAMA_OFF;
    if (cli_given(a, "--no-sym")) o.use_sym = MAMA_OFF;
    if (cli_given(a, "--no-sla")) o.use_sla = MAMA_OFF;
    o.no_overlap = cli_given(a, "--no-overlap");
    if (!pretrain_preflight(a, &o)) return 2;
    if (!init && !cli_given(a, "--tokenizer")) { /* the default must fit --config, checked before the model exists */
        mama_tokenizer *t = NULL;
        const char *tp = tokenizer_path(a, NULL, NULL, tokbuf, sizeof tokbuf);
        char cname[64];
        snprintf(cname, sizeof cname, "--config %s", cli_str(a, "--config"));
        if (mama_tokenizer_load(&t, tp) != MAMA_OK || mama_tokenizer_check_config(t, tp, &cfg, cname) != MAMA_OK) {
            fail();
            fprintf(stderr, "mama pretrain: --tokenizer is required: the default %s does not fit %s\n", tp, cname);
            mama_tokenizer_free(t);
            return 2;
        }
        mama_tokenizer_free(t);
    }
    if (init) {
        if (mama_model_load_as(&m, init, mama_cli_backend(), o.batch, fdt) != MAMA_OK) return fail();
    } else {
        cfg.frozen_dtype = fdt < 0 ? MAMA_F32 : (mama_dtype)fdt;
        if (mama_model_create(&m, &cfg, mama_cli_backend(), o.batch, o.seed) != MAMA_OK) return fail();
    }
    if (attach_comm(m) != 0) { mama_model_free(m); return 1; }
    if (!aug_opts(a, mama_model_config(m), &dopt.aug)) { mama_model_free(m); return 2; } /* pretraining's too */
    if (!(dopt.tokenizer = tokenizer_path(a, m, init, tokbuf, sizeof tokbuf)) || dataset_open(a, &d, &dopt, m) != 0) {
        mama_model_free(m);
        return 1;
    }
    if (mama_model_check_tokenizer(m, mama_dataset_tokenizer(d), dopt.tokenizer) != MAMA_OK) rc = fail();
    print_skips(d);
    warn_small_splits(d, o.batch, 1);
    if (rc == 0 && g_rank == 0)
        fprintf(stderr, "pretrain: %d train images (%d skipped), %ld steps of %d x %d x %d ranks, %d threads\n",
                mama_dataset_pretrain_split(d, MAMA_SPLIT_TRAIN, NULL), mama_dataset_skipped(d), o.steps, o.batch, o.accum,
                g_comm ? g_comm->size : 1, mama_num_threads());
    if (rc == 0 && mama_pretrain(m, d, &o, &r) != MAMA_OK) rc = fail();
    else if (rc == 0 && g_rank == 0) {
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

static int parse_tasks(const char *name, mama_zeroshot_task *tasks) {
    if (!strcmp(name, "all")) { tasks[0] = MAMA_ZEROSHOT_BIRADS; tasks[1] = MAMA_ZEROSHOT_DENSITY; tasks[2] = MAMA_ZEROSHOT_CANCER; return 3; }
    if (!strcmp(name, "birads")) { tasks[0] = MAMA_ZEROSHOT_BIRADS; return 1; }
    if (!strcmp(name, "density")) { tasks[0] = MAMA_ZEROSHOT_DENSITY; return 1; }
    if (!strcmp(name, "cancer")) { tasks[0] = MAMA_ZEROSHOT_CANCER; return 1; }
    return 0;
}
/* --split (a choice the parser checked) */
static mama_split parse_split(const char *name) {
    return !strcmp(name, "train") ? MAMA_SPLIT_TRAIN : !strcmp(name, "val") ? MAMA_SPLIT_VAL : MAMA_SPLIT_TEST;
}

/* --max-batch, or the largest of 32 (finetune: enough for its --batch in
 * one pass, 36 for 72), 31, .. whose activation arena fits CLI_ARENA_BUDGET
 * (base: 2), said when lowered; 0 after a message.  embed: CLI_EMBED_BUDGET
 * (tiny 12, small 1: larger batches encode no faster on a CPU); predict:
 * CLI_PREDICT_BUDGET (small 6: its captions are encoded once per 2 batches). */
#define CLI_ARENA_BUDGET 8e9
#define CLI_EMBED_BUDGET 2.5e8
#define CLI_PREDICT_BUDGET 2e9
static int eval_max_batch(const cli_args *a, const char *weights) {
    mama_safetensors st;
    mama_config c;
    const char *json;
    double budget;
    int mb = 32, want;
    if (!strcmp(a->cmd->name, "finetune") && (want = ((int)cli_num(a, "--batch") + 1) / 2) > mb) mb = want;
    if (cli_given(a, "--max-batch")) return (int)cli_num(a, "--max-batch");
    memset(&st, 0, sizeof st);
    if (mama_st_open(&st, weights) != MAMA_OK) return fail(), 0;
    mama_config_preset(&c, "base"); /* as mama_model_load: fields absent from the file are the reference's */
    c.text_pool_real_only = 0;
    json = mama_st_meta(&st, "mama_config");
    if (json && mama_config_from_json(&c, json, weights) != MAMA_OK) { mama_st_close(&st); return fail(), 0; }
    mama_st_close(&st);
    want = mb;
    budget = !strcmp(a->cmd->name, "embed") ? CLI_EMBED_BUDGET : !strcmp(a->cmd->name, "predict") ? CLI_PREDICT_BUDGET
                                                                                                  : CLI_ARENA_BUDGET;
    while (mb > 1 && (double)mama_model_arena_bytes(&c, mb) > budget) mb--;
    if (mb < want && g_rank == 0 && strcmp(a->cmd->name, "embed") != 0) /* embed: for speed, not memory */
        fprintf(stderr, "mama: --max-batch %d (an activation arena of %.1f GB; %d would take %.1f GB); give --max-batch "
                "to change it\n", mb, mama_model_arena_bytes(&c, mb) / 1e9, want, mama_model_arena_bytes(&c, want) / 1e9);
    return mb;
}

/* Shared by zeroshot, probe, finetune, embed and heatmap: model + dataset
 * from the common flags; *max_batch (when not NULL): the model's. */
static int open_eval(const cli_args *a, mama_model **m, mama_dataset **d, int *max_batch) {
    mama_dataset_opts dopt;
    char tokbuf[2048];
    const char *w = cli_str(a, "--weights");
    int mb = eval_max_batch(a, w);
    if (!data_opts(a, &dopt) || mb < 1) return 2;
    if (load_model(a, m, w, mb) != MAMA_OK) return fail();
    if (max_batch) *max_batch = mb;
    if (!strcmp(a->cmd->name, "probe") || !strcmp(a->cmd->name, "finetune")) /* training images: cli_aug_flags */
        if (!aug_opts(a, mama_model_config(*m), &dopt.aug)) { mama_model_free(*m); return 2; }
    if (!(dopt.tokenizer = tokenizer_path(a, *m, w, tokbuf, sizeof tokbuf)) || dataset_open(a, d, &dopt, *m) != 0) {
        mama_model_free(*m);
        return 1;
    }
    if (mama_model_check_tokenizer(*m, mama_dataset_tokenizer(*d), dopt.tokenizer) != MAMA_OK) {
        mama_dataset_free(*d);
        mama_model_free(*m);
        return fail();
    }
    print_skips(*d);
    return 0;
}

static int write_json(const char *path, mama_buf *b) {
    if (!path) return 0;
    if (mama_write_file_atomic(path, b->data, b->len) != MAMA_OK) return fail();
    printf("wrote %s\n", path);
    return 0;
}

/* --balanced-test, --subset-seed, --classes (for one task), --double-softmax,
 * --ref-text-feature: mama_eval_opts.  0 after a message. */
static int eval_opts(const cli_args *a, mama_zeroshot_task t, int zeroshot, mama_eval_opts *o) {
    memset(o, 0, sizeof *o);
    if (cli_given(a, "--balanced-test")) o->balanced_test = (float)cli_num(a, "--balanced-test");
    o->subset_seed = cli_seed(a, "--subset-seed");
    if (cli_given(a, "--classes") && mama_task_parse_classes(t, cli_str(a, "--classes"), "--classes", &o->classes) != MAMA_OK)
        return fail(), 0;
    if (zeroshot) {
        o->double_softmax = cli_given(a, "--double-softmax");
        o->ref_text_feature = cli_given(a, "--ref-text-feature");
    }
    return 1;
}

/* PREFIX_TASK.EXT */
static const char *task_file(char *buf, size_t cap, const char *prefix, mama_zeroshot_task t, const char *ext) {
    snprintf(buf, cap, "%s_%s.%s", prefix, mama_task_name(t), ext);
    return buf;
}

/* Per-image probabilities: image, record (the manifest's data row), true
 * label, then a column per class (TASK_CLASS), written atomically. */
static int write_probs_csv(const char *path, const mama_dataset *d, mama_zeroshot_task t, const mama_eval_result *r) {
    const mama_manifest *man = mama_dataset_manifest(d);
    mama_buf b = {0, 0, 0};
    int i, k, rc = 0;
    mama_buf_puts(&b, "image,record,label");
    for (k = 0; k < r->K; k++) mama_buf_printf(&b, ",%s_%s", mama_task_name(t), mama_task_class_name(t, r->classes[k]));
    for (i = 0; i < r->n; i++) {
        mama_buf_printf(&b, "\n\"%s\",%d,%s", man->records[r->records[i]].path, r->records[i],
                        mama_task_class_name(t, r->classes[r->labels[i]]));
        for (k = 0; k < r->K; k++) mama_buf_printf(&b, ",%.6g", r->probs[(size_t)i * r->K + k]);
    }
    if (mama_buf_puts(&b, "\n") != MAMA_OK || mama_write_file_atomic(path, b.data, b.len) != MAMA_OK) rc = fail();
    else printf("wrote %s (%d images)\n", path, r->n);
    mama_buf_free(&b);
    return rc;
}

/* probe: 0 zeroshot, 1 linear probe, 2 full fine-tuning */
static int cmd_eval(const cli_args *a, int probe) {
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    mama_zeroshot_task tasks[3];
    mama_split split = parse_split(cli_str(a, "--split"));
    mama_buf json = {0, 0, 0};
    int nt = parse_tasks(cli_str(a, "--task"), tasks), i, rc;
    if ((rc = open_eval(a, &m, &d, NULL)) != 0) return rc;
    if (attach_comm(m) != 0) { mama_dataset_free(d); mama_model_free(m); return 1; }
    mama_buf_puts(&json, "{");
    for (i = 0; i < nt && rc == 0; i++) {
        mama_eval_result r;
        mama_eval_opts eo;
        mama_status s;
        char title[160], path[1024];
        if (!eval_opts(a, tasks[i], !probe, &eo)) { rc = 2; break; }
        if (probe == 2 && i > 0) { /* every task fine-tunes the weights given, not the last task's */
            mama_model_free(m);
            m = NULL;
            if (load_model(a, &m, cli_str(a, "--weights"), eval_max_batch(a, cli_str(a, "--weights"))) != MAMA_OK ||
                attach_comm(m) != 0) { rc = fail(); break; }
        }
        if (probe) {
            mama_probe_opts po;
            mama_probe_opts_default(&po); /* the library's defaults, then the flags given */
            cli_opt_long(a, "--steps", &po.steps);
            cli_opt_int(a, "--batch", &po.batch);
            if (probe == 2) cli_opt_long(a, "--val-every", &po.val_every); /* 0: never, the last weights */
            if (cli_given(a, "--no-augment")) po.augment = MAMA_OFF;
            po.eval = eo;
            s = probe == 2 ? mama_finetune(m, d, tasks[i], &po, split, &r) : mama_linear_probe(m, d, tasks[i], &po, split, &r);
        } else {
            s = mama_zeroshot_ex(m, d, split, tasks[i], &eo, &r);
        }
        if (s != MAMA_OK) { rc = fail(); break; }
        snprintf(title, sizeof title, "%s %s on %s%s%s%s", probe == 2 ? "fine-tuning" : probe ? "linear probe" : "zeroshot",
                 mama_task_name(tasks[i]), mama_split_name(split), eo.balanced_test > 0 ? " (balanced subset)" : "",
                 eo.classes ? " (classes " : "", eo.classes ? cli_str(a, "--classes") : "");
        if (eo.classes) strcat(title, ")");
        if (g_rank == 0) mama_metrics_print(&r.metrics, title, stdout);
        if (g_rank == 0 && cli_str(a, "--probs") &&
            write_probs_csv(task_file(path, sizeof path, cli_str(a, "--probs"), tasks[i], "csv"), d, tasks[i], &r) != 0)
            rc = 1;
        if (g_rank == 0 && probe && cli_str(a, "--save-head")) {
            if (mama_head_save(&r.head, task_file(path, sizeof path, cli_str(a, "--save-head"), tasks[i], "safetensors")) != MAMA_OK)
                rc = fail();
            else printf("wrote %s (the %s classifier; `mama predict --head %s`)\n", path, mama_task_name(tasks[i]), path);
        }
        if (g_rank == 0 && probe == 2 && cli_str(a, "--save-weights")) {
            if (mama_model_save(m, task_file(path, sizeof path, cli_str(a, "--save-weights"), tasks[i], "safetensors")) != MAMA_OK)
                rc = fail();
            else printf("wrote %s (the fine-tuned model, for its head)\n", path);
        }
        if (g_rank == 0 && cli_str(a, "--png")) { /* the confusion matrix as a picture */
            static const char *const names[3][7] = {{"0 (A)", "1 (N)", "2 (B)", "3 (P)", "4 (S)", "5 (M)", "6 (K)"},
                                                    {"fatty", "scattered", "heterog.", "dense"}, {"no cancer", "cancer"}};
            char png[512];
            snprintf(png, sizeof png, "%s_%s.png", cli_str(a, "--png"), mama_task_name(tasks[i]));
            if (demo_plot_confusion(png, title, names[tasks[i]], &r.metrics) != MAMA_OK) rc = fail();
            else printf("wrote %s\n", png);
        }
        mama_buf_printf(&json, "%s\"%s\":", i ? "," : "", mama_task_name(tasks[i]));
        mama_metrics_json(&r.metrics, &json);
        mama_eval_result_free(&r);
    }
    mama_buf_puts(&json, "}\n");
    if (rc == 0 && g_rank == 0) rc = write_json(cli_str(a, "--json"), &json);
    mama_buf_free(&json);
    mama_dataset_free(d);
    mama_model_free(m);
    return rc;
}
static int cmd_zeroshot(const cli_args *a) { return cmd_eval(a, 0); }
static int cmd_probe(const cli_args *a) { return cmd_eval(a, 1); }
static int cmd_finetune(const cli_args *a) { return cmd_eval(a, 2); }

static int cmd_caption(const cli_args *a) {
    mama_manifest man;
    mama_caption_fields f;
    mama_rng rng;
    char *caption = NULL;
    int row = (int)cli_num(a, "--row");
    float p = (float)cli_num(a, "--mask");
    int rc = 0;
    if (mama_manifest_load(&man, cli_str(a, "--manifest"), 0) != MAMA_OK) return fail();
    if (row >= man.count) {
        fprintf(stderr, "mama caption: --row %d out of range (the manifest has %d rows)\n", row, man.count);
        mama_manifest_free(&man);
        return 2;
    }
    mama_record_caption_fields(&man.records[row], &f);
    mama_rng_seed(&rng, cli_seed(a, "--seed"));
    if (p > 0) mama_caption_mask(&f, &f, p, &rng);
    if (mama_caption_build_alloc(&f, &caption) != MAMA_OK) { mama_manifest_free(&man); return fail(); }
    printf("%s\n", caption);
    if (cli_given(a, "--tokens")) {
        mama_tokenizer *tok = NULL;
        int ids[1024], mask[1024], n = 0, i, context;
        const char *vocab = cli_str(a, "--vocab");
        mama_config cc;
        char cname[80];
        /* the context and the special ids of the model the ids are for
         * (--config, default tiny; --context overrides the length) */
        snprintf(cname, sizeof cname, "--config %s", cli_str(a, "--config"));
        if (mama_config_preset(&cc, cli_str(a, "--config")) != MAMA_OK) {
            mama_free(caption);
            mama_manifest_free(&man);
            return fail();
        }
        context = (int)cli_num(a, "--context");
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

static int cmd_tokenizer_train(const cli_args *a) {
    mama_manifest man;
    const char *out = cli_str(a, "--out");
    int vocab = (int)cli_num(a, "--vocab-size"), variants = (int)cli_num(a, "--variants");
    int i, v, n = 0, merges = 0, rc = 0;
    char **texts;
    mama_rng rng;
    if (mama_manifest_load(&man, cli_str(a, "--manifest"), 0) != MAMA_OK) return fail();
    texts = (char **)calloc((size_t)man.count * variants + 1, sizeof(char *));
    mama_rng_seed(&rng, 1);
    /* the captions as training sees them: each row unmasked and masked a few times */
    for (i = 0; i < man.count; i++)
        for (v = 0; v < variants; v++) {
            mama_caption_fields f;
            mama_record_caption_fields(&man.records[i], &f);
            if (v > 0) mama_caption_mask(&f, &f, MAMA_PRETRAIN_DEFAULT_CAPTION_MASK_P, &rng);
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

/* Decoding threads of embed --images and predict (mama_image_reader): one
 * per four of the encoder's, at least one. */
static int cli_reader_threads(void) { return (mama_num_threads() + 3) / 4; }

static int cmd_embed(const cli_args *a) {
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    const char *out = cli_str(a, "--out"), *w = cli_str(a, "--weights"), *pout = cli_str(a, "--pooled");
    const mama_config *c;
    float *emb = NULL, *pool = NULL; /* the projected embeddings, the pooled features (--pooled) */
    int rows = 0, i, rc = 0;
    if (!a->nfiles == !cli_given(a, "--manifest")) {
        fprintf(stderr, "mama embed: give either --manifest M (a split's images or, with --texts, captions) or "
                        "--images a.png ...\n");
        return 2;
    }
    if (pout && cli_given(a, "--texts")) {
        fprintf(stderr, "mama embed: --pooled is the image feature; it does not go with --texts\n");
        return 2;
    }
    if (a->nfiles && (cli_given(a, "--split") || cli_given(a, "--texts"))) {
        fprintf(stderr, "mama embed: --split and --texts go with --manifest, not --images\n");
        return 2;
    }
    if (a->nfiles) { /* batches of --max-batch, the next one decoded while this one encodes */
        mama_decode_opts dec;
        mama_image_reader *r = NULL;
        const float *px;
        int n = a->nfiles, mb = eval_max_batch(a, w), b0, bn = 1;
        if (!decode_args(a, &dec) || mb < 1) return 2;
        if (load_model(a, &m, w, mb) != MAMA_OK) return fail();
        c = mama_model_config(m);
        emb = (float *)malloc(sizeof(float) * (size_t)(n + 1) * c->embed_dim);
        pool = (float *)malloc(sizeof(float) * (size_t)(n + 1) * c->vision_dim);
        if (mama_image_reader_open(&r, c, (const char *const *)a->files, n, &dec, mb, cli_reader_threads()) != MAMA_OK)
            rc = fail();
        while (rc == 0 && bn > 0)
            if (mama_image_reader_next(r, &px, &b0, &bn) != MAMA_OK ||
                (bn > 0 && mama_encode_images(m, px, bn, emb + (size_t)b0 * c->embed_dim,
                                              pool + (size_t)b0 * c->vision_dim) != MAMA_OK))
                rc = fail();
        mama_image_reader_close(r);
        rows = n;
    } else {
        mama_split split = parse_split(cli_str(a, "--split"));
        const int *idx;
        int n, B;
        if ((rc = open_eval(a, &m, &d, &B)) != 0) return rc;
        c = mama_model_config(m);
        n = mama_dataset_split(d, split, &idx);
        emb = (float *)malloc(sizeof(float) * (size_t)(n + 1) * c->embed_dim);
        if (cli_given(a, "--texts")) {
            int T = c->context, j;
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
            int j;
            float *px = (float *)malloc(sizeof(float) * img * (size_t)B);
            pool = (float *)malloc(sizeof(float) * (size_t)(n + 1) * c->vision_dim);
            for (i = 0; i < n && rc == 0; i += B) { /* the dataset holds the prepared images: batches of --max-batch */
                int nb = n - i < B ? n - i : B;
                for (j = 0; j < nb && rc == 0; j++)
                    if (mama_dataset_image(d, idx[i + j], 0, NULL, px + img * (size_t)j) != MAMA_OK) rc = fail();
                if (rc == 0 && mama_encode_images(m, px, nb, emb + (size_t)i * c->embed_dim,
                                                  pool + (size_t)i * c->vision_dim) != MAMA_OK)
                    rc = fail();
            }
            free(px);
        }
        rows = n;
    }
    if (rc == 0 && mama_cli_npy_write(out, emb, rows, mama_model_config(m)->embed_dim) != MAMA_OK) rc = fail();
    if (rc == 0) printf("wrote %s: %d x %d embeddings\n", out, rows, mama_model_config(m)->embed_dim);
    if (rc == 0 && pout && mama_cli_npy_write(pout, pool, rows, mama_model_config(m)->vision_dim) != MAMA_OK) rc = fail();
    if (rc == 0 && pout)
        printf("wrote %s: %d x %d pooled image features (the probe's input)\n", pout, rows, mama_model_config(m)->vision_dim);
    free(emb);
    free(pool);
    mama_dataset_free(d);
    mama_model_free(m);
    return rc;
}

/* ---- predict ---------------------------------------------------------- */
/* The manifest row of an image file: the same path, or one ending in "/" +
 * the other; -1 when none. */
static int predict_row(const mama_manifest *man, const char *file) {
    size_t lf = strlen(file);
    int i;
    for (i = 0; i < man->count; i++) {
        const char *p = man->records[i].path;
        size_t lp = strlen(p);
        if (!strcmp(p, file) || (lp > lf && p[lp - lf - 1] == '/' && !strcmp(p + lp - lf, file)) ||
            (lf > lp && file[lf - lp - 1] == '/' && !strcmp(file + lf - lp, p)))
            return i;
    }
    return -1;
}

/* One output row: level (image, breast_mean, breast_max, exam_mean,
 * exam_max), its name, study, side and the 13 probabilities. */
typedef struct predict_row_out { const char *level, *id, *study, *side; float p[MAMA_PREDICT_COLUMNS]; } predict_row_out;

static void predict_print(const predict_row_out *r, int n, FILE *f) {
    int i, k;
    fprintf(f, "%-11s %-28s density: 1    2    3    4  | BI-RADS: A    N    B    P    S    M    K  | cancer: 0    1\n",
            "level", "image / study side");
    for (i = 0; i < n; i++) {
        char name[29];
        const char *id = r[i].id;
        size_t l = strlen(id);
        snprintf(name, sizeof name, "%s%s", l > 28 ? "..." : "", l > 28 ? id + l - 25 : id);
        if (r[i].level[0] == 'b') snprintf(name, sizeof name, "%.20s %s", r[i].study, r[i].side);
        fprintf(f, "%-11s %-28s        ", r[i].level, name);
        for (k = 0; k < MAMA_PREDICT_COLUMNS; k++)
            fprintf(f, "%s%.2f", k == 4 ? " |          " : k == 11 ? " |         " : k ? " " : "", (double)r[i].p[k]);
        fputc('\n', f);
    }
}

static int predict_write(const char *csv, const char *json, const predict_row_out *r, int n) {
    mama_buf b = {0, 0, 0};
    int i, k, rc = 0;
    if (csv) {
        mama_buf_puts(&b, "level,id,study,side");
        for (k = 0; k < MAMA_PREDICT_COLUMNS; k++) mama_buf_printf(&b, ",%s", mama_predict_column_name(k));
        for (i = 0; i < n; i++) {
            mama_buf_printf(&b, "\n%s,\"%s\",\"%s\",%s", r[i].level, r[i].id, r[i].study, r[i].side);
            for (k = 0; k < MAMA_PREDICT_COLUMNS; k++) mama_buf_printf(&b, ",%.6g", (double)r[i].p[k]);
        }
        if (mama_buf_puts(&b, "\n") != MAMA_OK || mama_write_file_atomic(csv, b.data, b.len) != MAMA_OK) rc = fail();
        else printf("wrote %s\n", csv);
        mama_buf_free(&b);
    }
    if (json && rc == 0) {
        mama_buf_puts(&b, "[");
        for (i = 0; i < n; i++) {
            mama_buf_printf(&b, "%s\n{\"level\":\"%s\",\"id\":", i ? "," : "", r[i].level);
            mama_buf_json_string(&b, r[i].id);
            mama_buf_puts(&b, ",\"study\":");
            mama_buf_json_string(&b, r[i].study);
            mama_buf_printf(&b, ",\"side\":\"%s\"", r[i].side);
            for (k = 0; k < MAMA_PREDICT_COLUMNS; k++) {
                mama_buf_printf(&b, ",\"%s\":", mama_predict_column_name(k));
                mama_buf_json_number(&b, r[i].p[k]);
            }
            mama_buf_puts(&b, "}");
        }
        if (mama_buf_puts(&b, "\n]\n") != MAMA_OK || mama_write_file_atomic(json, b.data, b.len) != MAMA_OK) rc = fail();
        else printf("wrote %s\n", json);
        mama_buf_free(&b);
    }
    return rc;
}

/* Per image the probabilities of mama_predict_file (zero-shot, or the
 * head's for its task), then per breast (study, side) and per exam (study)
 * the mean and the max over its images (a max row need not sum to 1).
 * Without --manifest the images are one exam, metadata unknown. */
static int cmd_predict(const cli_args *a) {
    mama_model *m = NULL;
    mama_tokenizer *tok = NULL;
    mama_manifest man;
    mama_head head;
    mama_decode_opts dec;
    predict_row_out *rows = NULL;
    mama_caption_fields *meta = NULL;
    mama_image_reader *reader = NULL;
    float *probs = NULL;
    const char *w = cli_str(a, "--weights"), *tp;
    char tokbuf[2048];
    int n = a->nfiles, i, j, k, g, nrows, rc = 0, mb, have_head = cli_str(a, "--head") != NULL, b0, bn = 1;
    memset(&man, 0, sizeof man);
    memset(&head, 0, sizeof head);
    if (n < 1) { fprintf(stderr, "mama predict: give one or more images: mama predict --weights W IMAGE...\n"); return 2; }
    if (!decode_args(a, &dec) || (mb = eval_max_batch(a, w)) < 1) return 2;
    if (load_model(a, &m, w, mb) != MAMA_OK) return fail();
    if (!(tp = tokenizer_path(a, m, w, tokbuf, sizeof tokbuf))) { mama_model_free(m); return 1; }
    if (mama_tokenizer_load(&tok, tp) != MAMA_OK || mama_model_check_tokenizer(m, tok, tp) != MAMA_OK ||
        (have_head && mama_head_load(&head, cli_str(a, "--head")) != MAMA_OK) ||
        (cli_str(a, "--manifest") && mama_manifest_load(&man, cli_str(a, "--manifest"), 0) != MAMA_OK)) {
        rc = fail();
        goto done;
    }
    if (have_head)
        fprintf(stderr, "predict: %s from the head %s (%d classes%s), the other tasks zero-shot\n",
                mama_task_name((mama_zeroshot_task)head.task), cli_str(a, "--head"), head.K,
                head.finetuned ? "; fine-tuned: use it with the weights fine-tuning saved" : "");
    /* images, then at most one breast and one exam row pair per image */
    rows = (predict_row_out *)calloc((size_t)5 * n, sizeof *rows);
    meta = (mama_caption_fields *)calloc((size_t)n, sizeof *meta);
    probs = (float *)malloc(sizeof(float) * MAMA_PREDICT_COLUMNS * (size_t)mb);
    for (i = 0; i < n; i++) {
        int r = man.count ? predict_row(&man, a->files[i]) : -1;
        rows[i].level = "image";
        rows[i].id = a->files[i];
        rows[i].study = r >= 0 ? man.records[r].study : "images";
        rows[i].side = r >= 0 ? man.records[r].side : "unknown";
        if (r >= 0) mama_record_caption_fields(&man.records[r], &meta[i]);
        else mama_caption_fields_init(&meta[i]); /* as mama_predict's meta NULL */
        if (r < 0 && man.count) fprintf(stderr, "predict: %s is not in %s: metadata unknown\n", a->files[i], cli_str(a, "--manifest"));
    }
    /* batches of --max-batch, the next one decoded while this one is scored */
    if (mama_image_reader_open(&reader, mama_model_config(m), (const char *const *)a->files, n, &dec, mb, cli_reader_threads()) != MAMA_OK)
        rc = fail();
    while (rc == 0 && bn > 0) {
        const float *px;
        if (mama_image_reader_next(reader, &px, &b0, &bn) != MAMA_OK ||
            (bn > 0 && mama_predict(m, tok, px, bn, meta + b0, have_head ? &head : NULL, probs) != MAMA_OK))
            rc = fail();
        for (i = 0; rc == 0 && i < bn; i++)
            memcpy(rows[b0 + i].p, probs + (size_t)i * MAMA_PREDICT_COLUMNS, sizeof rows[i].p);
    }
    mama_image_reader_close(reader);
    nrows = n;
    for (g = 0; g < 2 && rc == 0; g++) /* 0: breasts (study, side), 1: exams (study) */
        for (i = 0; i < n; i++) {
            int first = 1, cnt = 0;
            predict_row_out *mean = &rows[nrows], *mx = &rows[nrows + 1];
            for (j = 0; j < i && first; j++) /* grouped at its first image */
                if (!strcmp(rows[j].study, rows[i].study) && (g || !strcmp(rows[j].side, rows[i].side))) first = 0;
            if (!first) continue;
            mean->level = g ? "exam_mean" : "breast_mean";
            mx->level = g ? "exam_max" : "breast_max";
            mean->id = mx->id = mean->study = mx->study = rows[i].study;
            mean->side = mx->side = g ? "all" : rows[i].side;
            for (j = i; j < n; j++) {
                if (strcmp(rows[j].study, rows[i].study) || (!g && strcmp(rows[j].side, rows[i].side))) continue;
                for (k = 0; k < MAMA_PREDICT_COLUMNS; k++) {
                    mean->p[k] += rows[j].p[k];
                    if (!cnt || rows[j].p[k] > mx->p[k]) mx->p[k] = rows[j].p[k];
                }
                cnt++;
            }
            for (k = 0; k < MAMA_PREDICT_COLUMNS; k++) mean->p[k] /= (float)cnt;
            nrows += 2;
        }
    if (rc == 0) {
        predict_print(rows, nrows, stdout);
        rc = predict_write(cli_str(a, "--csv"), cli_str(a, "--json"), rows, nrows);
    }
done:
    free(rows);
    free(meta);
    free(probs);
    mama_head_free(&head);
    mama_manifest_free(&man);
    mama_tokenizer_free(tok);
    mama_model_free(m);
    return rc;
}

static int cmd_heatmap(const cli_args *a) {
    mama_model *m = NULL;
    mama_dataset *d = NULL;
    const char *out = cli_str(a, "--out");
    char caption[4096];
    int rc;
    if ((rc = open_eval(a, &m, &d, NULL)) != 0) return rc;
    rc = demo_heatmap_record(m, d, (int)cli_num(a, "--row"), out, caption, sizeof caption);
    if (rc == 0) printf("wrote %s for: %s\n", out, caption);
    mama_dataset_free(d);
    mama_model_free(m);
    return rc;
}

/* bench: the flags checked against the table, then handed to the bench's
 * own main in the form it reads (bench gemm: --name=value; the others:
 * --name value), each flag with its value as given or the table's default. */
static int cmd_bench_run(const cli_args *a, int (*main_fn)(int, char **), int eq) {
    char *args[2 * CLI_MAX_FLAGS + 1], bufs[CLI_MAX_FLAGS][128];
    int n = 0, k, nb = 0;
    for (k = 0; k < a->nflags; k++) {
        const cli_flag *f = a->flag[k];
        const char *v = a->value[k];
        if (!strcmp(f->name, "--device") || !strcmp(f->name, "--precision")) continue;
        if (!v) continue; /* the bench's own default (printed by --help from the table) */
        if (f->kind == CLI_SWITCH) { args[n++] = (char *)f->name; continue; }
        if (eq) {
            snprintf(bufs[nb], sizeof bufs[nb], "%s=%s", f->name, v);
            args[n++] = bufs[nb++];
        } else {
            args[n++] = (char *)f->name;
            args[n++] = (char *)v;
        }
    }
    args[n] = NULL;
    return main_fn(n, args);
}

static int cmd_bench_gemm(const cli_args *a) { return cmd_bench_run(a, mama_bench_gemm_main, 1); }
static int cmd_bench_train(const cli_args *a) { return cmd_bench_run(a, mama_bench_train_main, 0); }
static int cmd_bench_encode(const cli_args *a) { return cmd_bench_run(a, mama_bench_encode_main, 0); }
static int cmd_bench_weights(const cli_args *a) { return cmd_bench_run(a, mama_bench_weights_main, 0); }

/* ==========================================================================
 * The flag tables.  Numeric defaults come from the library's
 * MAMA_*_DEFAULT_* macros (and the demo's DEMO_DEFAULT_*); a number's
 * range is the one the parser enforces.  Shared groups first.
 * ========================================================================== */
#define CLI_INT_MAX 2147483647.0
#define CLI_MAX_BATCH 4096 /* mama_model_create's max_batch range */
#define CLI_STRINGIFY(x) #x
#define CLI_XSTR(x) CLI_STRINGIFY(x)
#define CLI_SPLITS "test|val|train"
#define CLI_TASKS "all|birads|density|cancer"
#define CLI_CONFIGS "tiny|small|base"

/* every command (device.c takes them out of argv first; listed here for
 * --help and so that a dangling --device is an error) */
static const cli_flag cli_common_flags[] = {
    CLI_STR("--device", "DEV", 0, "cpu", "cpu, reference (the plain scalar backend, slow) or cuda[:N] (`make cuda`)"),
    CLI_CH("--precision", "fp32|tf32|bf16", "fp32", "GEMM precision of the CUDA backend"),
    CLI_END};
static const cli_flag cli_frozen_flags[] = {
    CLI_CH("--frozen-dtype", "auto|bf16|bf16-dot|bf16-widen|f16|f32", "auto", "storage of the frozen text tower's big matrices"),
    CLI_END};
/* every command that opens a dataset */
static const cli_flag cli_data_flags[] = {
    CLI_STR("--tokenizer", "PATH", 0, "the one the weights record, else " CLI_DEFAULT_TOKENIZER,
            "tokenizer directory (vocab.json, merges.txt) or tokenizer.json"),
    CLI_SW("--skip-bad", "skip malformed manifest rows and unreadable images instead of failing"),
    CLI_SW("--keep-incomplete", "keep records whose caption lacks procedure, reason, density or BI-RADS"),
    CLI_NUMT("--bit-depth", CLI_INT, 1, 16, 0, "v*255/max(v) per image", "16-bit images: v*255/(2^N-1)"),
    CLI_STR("--window", "C,W", 0, NULL, "16-bit images: DICOM window C,W (centre, width >= 1)"),
    CLI_NUM("--max-side", CLI_INT, 1, 16777216, 0, MAMA_DECODE_DEFAULT_MAX_SIDE,
            "refuse images wider or taller than this (checked from the header, before decoding)"),
    CLI_SW("--allow-split-overlap", "accept patients with images in more than one split (default: an error)"),
    CLI_END};
/* the training augmentation (pretrain, probe, finetune): a named set, then
 * the fields given override it */
static const cli_flag cli_aug_flags[] = {
    CLI_CH("--aug", "paper|light|none", "the model preset's: tiny, small light; base paper",
           "augmentation set (paper: SPEC A.5; light: crop scale 0.5-1 + flips; none)"),
    CLI_STR("--crop-scale", "LO,HI", 0, "the set's", "RandomResizedCrop area range in (0, 1]"),
    CLI_SW("--no-crop", "no RandomResizedCrop"),
    CLI_NUMT("--hflip", CLI_FLOAT, 0, 1, 0, "the set's", "horizontal flip probability"),
    CLI_NUMT("--vflip", CLI_FLOAT, 0, 1, 0, "the set's", "vertical flip probability"),
    CLI_NUMT("--jitter", CLI_FLOAT, 0, 1, 0, "the set's", "brightness/contrast jitter probability (0: none)"),
    CLI_STR("--brightness", "LO,HI", 0, "the set's", "jitter brightness factor range"),
    CLI_STR("--contrast", "LO,HI", 0, "the set's", "jitter contrast factor range"),
    CLI_NUMT("--blur", CLI_FLOAT, 0, 1, 0, "the set's", "Gaussian blur probability (0: none)"),
    CLI_STR("--blur-sigma", "LO,HI", 0, "the set's", "blur sigma range (> 0)"),
    CLI_END};
/* data parallel (make MPI=1) */
static const cli_flag cli_dp_flags[] = {
    CLI_SW("--dp-reference", "data parallel: the reference's per-rank CLIP/SLA losses"),
    CLI_END};

static const cli_flag forward_flags[] = {
    CLI_STR("--weights", "PATH", CLI_REQUIRED, NULL, "weights (safetensors)"),
    CLI_STR("--batch", "B", CLI_REQUIRED, NULL, "the input batch (safetensors)"),
    CLI_STR("--out", "PATH", CLI_REQUIRED, NULL, "output (safetensors)"),
    CLI_CH("--late", "0|1", "0", "1: the late losses too"),
    CLI_END};

static const cli_flag info_flags[] = {CLI_END};

static const cli_flag init_flags[] = {
    CLI_STR("--out", "PATH", CLI_REQUIRED, NULL, "output weights (safetensors)"),
    CLI_CH("--config", CLI_CONFIGS, "tiny", "model preset"),
    CLI_CH("--text-mode", "full|lora|frozen", "the preset's", "how the text tower trains"),
    CLI_NUM("--seed", CLI_U64, 0, CLI_INF, 0, 1, "initialisation seed"),
    CLI_END};

static const cli_flag synth_flags[] = {
    CLI_STR("--out", "PATH", CLI_REQUIRED, NULL, "output directory"),
    CLI_NUM("--studies", CLI_INT, 1, 1000000, 0, 1000, "studies (4 images each)"),
    CLI_NUM("--size", CLI_INT, 32, 16384, 0, 256, "image side in pixels"),
    CLI_NUM("--seed", CLI_U64, 0, CLI_INF, 0, 1, "generator seed"),
    CLI_SW("--balanced", "balanced classes"),
    CLI_END};

static const cli_flag pretrain_flags[] = {
    CLI_STR("--manifest", "PATH", CLI_REQUIRED, NULL, "the manifest CSV"),
    CLI_STR("--out", "PATH", CLI_REQUIRED, NULL, "the checkpoint (safetensors), written at the end and every --checkpoint-every"),
    CLI_CH("--config", CLI_CONFIGS, "tiny", "model preset (without --init)"),
    CLI_STR("--init", "PATH", 0, NULL, "start from these weights instead of a fresh --config model"),
    CLI_NUM("--steps", CLI_LONG, 1, 1e12, 0, MAMA_PRETRAIN_DEFAULT_STEPS, "optimiser steps"),
    CLI_NUM("--batch", CLI_INT, 1, CLI_MAX_BATCH, 0, MAMA_PRETRAIN_DEFAULT_BATCH, "images per micro-batch (per rank)"),
    CLI_NUM("--accum", CLI_INT, 1, 65536, 0, MAMA_PRETRAIN_DEFAULT_ACCUM, "micro-batches per optimiser step"),
    CLI_NUM("--lr", CLI_FLOAT, 0, CLI_INF, CLI_LO_OPEN, MAMA_PRETRAIN_DEFAULT_LR, "peak learning rate"),
    CLI_NUMT("--warmup", CLI_LONG, 0, CLI_INF, 0, CLI_XSTR(MAMA_PRETRAIN_DEFAULT_WARMUP_PCT) "% of --steps",
             "linear warm-up steps, < --steps (0: none)"),
    CLI_NUMT("--late-loss", CLI_LONG, 0, CLI_INF, 0, CLI_XSTR(MAMA_PRETRAIN_DEFAULT_LATE_LOSS_PCT) "% of --steps",
             "step from which the multi-view, symmetric and SLA losses join, < --steps (0: from the start)"),
    CLI_NUM("--mask", CLI_FLOAT, 0, 1, CLI_HI_OPEN, MAMA_PRETRAIN_DEFAULT_CAPTION_MASK_P,
            "per-field caption masking probability"),
    CLI_NUM("--clip", CLI_FLOAT, 0, CLI_INF, 0, 0, "gradient-norm clipping (0: none)"),
    CLI_NUM("--seed", CLI_U64, 1, CLI_INF, 0, MAMA_PRETRAIN_DEFAULT_SEED, "data order, augmentation, masks"),
    CLI_STR("--log", "PATH", 0, NULL, "CSV log, a row per step"),
    CLI_NUM("--checkpoint-every", CLI_LONG, 0, CLI_INF, 0, 0, "also write --out every N steps (0: only at the end)"),
    CLI_SW("--resume", "continue the run of --out (which must exist)"),
    CLI_SW("--overwrite", "replace an existing --out (a new run; without it an existing --out is an error)"),
    CLI_SW("--allow-changes", "with --resume: accept another --batch, --accum, --lr or --late-loss (each logged)"),
    CLI_NUMT("--val-every", CLI_LONG, 0, CLI_INF, 0, "at each checkpoint and the end",
             "validation loss every N steps (0: never)"),
    CLI_STR("--best", "PATH", 0, "--out with .best before the extension", "where the best-validation checkpoint goes"),
    CLI_SW("--no-mv", "ablation: no multi-view loss"),
    CLI_SW("--no-sym", "ablation: no symmetric loss"),
    CLI_SW("--no-sla", "ablation: no SLA loss"),
    CLI_SW("--no-overlap", "data parallel: one blocking gradient all-reduce after the backward"),
    CLI_END};

/* zeroshot, probe, finetune */
static const cli_flag eval_flags[] = {
    CLI_STR("--weights", "PATH", CLI_REQUIRED, NULL, "the model (safetensors)"),
    CLI_STR("--manifest", "PATH", CLI_REQUIRED, NULL, "the manifest CSV"),
    CLI_CH("--task", CLI_TASKS, "all", "what to classify"),
    CLI_CH("--split", CLI_SPLITS, "test", "the split evaluated"),
    CLI_STR("--json", "OUT", 0, NULL, "write the metrics as JSON"),
    CLI_STR("--png", "PREFIX", 0, NULL, "confusion matrices to PREFIX_TASK.png"),
    CLI_NUMT("--max-batch", CLI_INT, 1, CLI_MAX_BATCH, 0, "32 (finetune: --batch/2), less where the activations pass 8 GB",
             "the model's largest batch"),
    CLI_NUMT("--balanced-test", CLI_FLOAT, 0, 1, CLI_LO_OPEN, "off: every image",
             "evaluate a class-balanced subset of this fraction (the paper's EMBED test sets: 0.1)"),
    CLI_NUM("--subset-seed", CLI_U64, 1, CLI_INF, 0, MAMA_EVAL_DEFAULT_SUBSET_SEED, "which images the subset takes"),
    CLI_STR("--classes", "LIST", 0, NULL, "only these classes, e.g. 2,3,4 (density) or N,B,P,S,M (BI-RADS)"),
    CLI_STR("--probs", "PREFIX", 0, NULL, "per-image probabilities to PREFIX_TASK.csv"),
    CLI_END};
static const cli_flag zeroshot_flags[] = {
    CLI_SW("--ref-text-feature", "the reference code's text feature"),
    CLI_SW("--double-softmax", "the reference's scores: the softmax twice (changes pF1 and multi-class AUC)"),
    CLI_END};
static const cli_flag probe_flags[] = {
    CLI_NUM("--steps", CLI_LONG, 1, CLI_INF, 0, MAMA_PROBE_DEFAULT_STEPS, "training steps"),
    CLI_NUM("--batch", CLI_INT, 1, CLI_MAX_BATCH, 0, MAMA_PROBE_DEFAULT_BATCH, "batch"),
    CLI_SW("--no-augment", "no augmentation (the linear probe computes features once)"),
    CLI_STR("--save-head", "PREFIX", 0, NULL, "the classifier to PREFIX_TASK.safetensors (for predict --head)"),
    CLI_END};
static const cli_flag finetune_flags[] = {
    CLI_NUMT("--val-every", CLI_LONG, 0, CLI_INF, 0, "steps/10", "val cross-entropy every N steps (0: the last weights)"),
    CLI_STR("--save-weights", "PREFIX", 0, NULL, "the fine-tuned model to PREFIX_TASK.safetensors (its head's weights)"),
    CLI_END};

static const cli_flag caption_flags[] = {
    CLI_STR("--manifest", "PATH", CLI_REQUIRED, NULL, "the manifest CSV"),
    CLI_NUM("--row", CLI_INT, 0, CLI_INT_MAX, 0, 0, "data row (0-based)"),
    CLI_NUM("--mask", CLI_FLOAT, 0, 1, CLI_HI_OPEN, 0, "per-field masking probability"),
    CLI_NUM("--seed", CLI_U64, 0, CLI_INF, 0, 1, "masking seed"),
    CLI_SW("--tokens", "also the token ids"),
    CLI_STR("--vocab", "PATH", 0, "weights/tiny_vocab", "tokenizer directory (with --tokens)"),
    CLI_CH("--config", CLI_CONFIGS, "tiny", "the model the ids are for (context, special ids)"),
    CLI_NUMT("--context", CLI_INT, 0, 1024, 0, "the config's", "token context (0: the config's)"),
    CLI_END};

static const cli_flag tokenizer_flags[] = {
    CLI_STR("--manifest", "PATH", CLI_REQUIRED, NULL, "the manifest CSV"),
    CLI_STR("--out", "PATH", CLI_REQUIRED, NULL, "output directory"),
    CLI_NUM("--vocab-size", CLI_INT, 1, 1000000, 0, 2042, "vocabulary size before the 6 special tokens"),
    CLI_NUM("--variants", CLI_INT, 1, 1000, 0, 8, "captions per row (unmasked, then masked)"),
    CLI_END};

static const cli_flag embed_flags[] = {
    CLI_STR("--weights", "PATH", CLI_REQUIRED, NULL, "the model (safetensors)"),
    CLI_STR("--out", "PATH", CLI_REQUIRED, NULL, "output .npy (float32, rows x embed_dim)"),
    CLI_STR("--manifest", "PATH", 0, NULL, "embed a split of this manifest"),
    CLI_CH("--split", CLI_SPLITS, "test", "the split (with --manifest)"),
    CLI_SW("--texts", "the captions instead of the images (with --manifest)"),
    CLI_LIST("--images", "embed these image files instead"),
    CLI_STR("--pooled", "PATH", 0, NULL, "also the pooled image features (the probe's input) as .npy, rows x vision_dim"),
    CLI_NUMT("--max-batch", CLI_INT, 1, CLI_MAX_BATCH, 0, "32, less where the activations pass 0.25 GB (tiny 12, small 1)",
             "images encoded at once (the next batch is decoded meanwhile)"),
    CLI_END};

static const cli_flag predict_flags[] = {
    CLI_STR("--weights", "PATH", CLI_REQUIRED, NULL, "the model (safetensors)"),
    CLI_STR("--manifest", "PATH", 0, NULL, "each image's metadata (captions) and its study and side, from its row"),
    CLI_STR("--head", "PATH", 0, NULL, "a classifier saved by probe/finetune --save-head, instead of zero-shot for its task"),
    CLI_STR("--csv", "PATH", 0, NULL, "write the rows as CSV (level,id,study,side,density_1..cancer_1)"),
    CLI_STR("--json", "PATH", 0, NULL, "write the rows as JSON"),
    CLI_STR("--tokenizer", "PATH", 0, "the one the weights record, else " CLI_DEFAULT_TOKENIZER, "tokenizer"),
    CLI_NUMT("--bit-depth", CLI_INT, 1, 16, 0, "v*255/max(v) per image", "16-bit images: v*255/(2^N-1)"),
    CLI_STR("--window", "C,W", 0, NULL, "16-bit images: DICOM window C,W (centre, width >= 1)"),
    CLI_NUMT("--max-batch", CLI_INT, 1, CLI_MAX_BATCH, 0, "32, less where the activations pass 2 GB (small 6)",
             "the model's largest batch (images scored at once; the next batch is decoded meanwhile)"),
    CLI_END};

static const cli_flag heatmap_flags[] = {
    CLI_STR("--weights", "PATH", CLI_REQUIRED, NULL, "the model (safetensors)"),
    CLI_STR("--manifest", "PATH", CLI_REQUIRED, NULL, "the manifest CSV"),
    CLI_NUM("--row", CLI_INT, 0, CLI_INT_MAX, 0, 0, "data row (0-based)"),
    CLI_STR("--out", "PATH", CLI_REQUIRED, NULL, "output PNG"),
    CLI_NUM("--max-batch", CLI_INT, 1, CLI_MAX_BATCH, 0, 32, "the model's largest batch"),
    CLI_END};

static const cli_flag demo_flags[] = {
    CLI_STR("--out", "PATH", 0, DEMO_DEFAULT_OUT, "output directory (data, checkpoints, plots, REPORT.md)"),
    CLI_NUM("--studies", CLI_INT, 1, 1000000, 0, DEMO_DEFAULT_STUDIES, "synthetic studies"),
    CLI_NUM("--size", CLI_INT, 32, 16384, 0, DEMO_DEFAULT_SIZE, "image side in pixels"),
    CLI_NUM("--steps", CLI_INT, 1, CLI_INT_MAX, 0, DEMO_DEFAULT_STEPS, "pretraining steps"),
    CLI_NUM("--batch", CLI_INT, 1, CLI_MAX_BATCH, 0, DEMO_DEFAULT_BATCH, "pretraining batch"),
    CLI_NUM("--probe-steps", CLI_INT, 1, CLI_INT_MAX, 0, DEMO_DEFAULT_PROBE_STEPS, "linear-probe steps"),
    CLI_NUM("--lr", CLI_FLOAT, 0, CLI_INF, CLI_LO_OPEN, DEMO_DEFAULT_LR, "peak learning rate"),
    CLI_NUM("--seed", CLI_U64, 1, CLI_INF, 0, DEMO_DEFAULT_SEED, "seed"),
    CLI_CH("--aug", "paper|light|none", DEMO_DEFAULT_AUG, "augmentation set (mama_augment_preset; light is the tiny preset's)"),
    CLI_SW("--ablation", "also the paper's ablation (four variants, same budget)"),
    CLI_END};

static const cli_flag bench_gemm_flags[] = {
    CLI_NUM("--reps", CLI_INT, 1, 1000000, 0, 7, "repetitions"),
    CLI_NUMT("--threads", CLI_INT, 1, 4096, 0, "all", "threads"),
    CLI_CH("--kernel", "scalar|avx2|avx512", "the best available", "force a GEMM kernel"),
    CLI_END};
static const cli_flag bench_train_flags[] = {
    CLI_CH("--config", CLI_CONFIGS, "tiny", "model preset"),
    CLI_NUM("--batch", CLI_INT, 1, CLI_MAX_BATCH, 0, 8, "batch"),
    CLI_NUM("--steps", CLI_INT, 1, 1000000, 0, 10, "timed steps"),
    CLI_CH("--late", "0|1", "1", "1: all four losses"),
    CLI_CH("--checkpoint", "0|1", "0", "1: activation checkpointing"),
    CLI_NUM("--peak-tflops", CLI_FLOAT, 0, CLI_INF, 0, 0, "the machine's peak, for the utilisation (0: not shown)"),
    CLI_CH("--log", "0|1", "1", "1: download the losses each step (0: none, the host syncs of a step that logs nothing)"),
    CLI_CH("--tune", "0|1", "1", "1: pick all threads or one per step, whichever was faster lately"),
    CLI_END};
static const cli_flag bench_encode_flags[] = {
    CLI_CH("--config", CLI_CONFIGS, "base", "model preset"),
    CLI_NUM("--batch", CLI_INT, 1, CLI_MAX_BATCH, 0, 4, "batch"),
    CLI_NUM("--steps", CLI_INT, 1, 1000000, 0, 3, "timed steps"),
    CLI_STR("--weights", "PATH", 0, NULL, "encode with these weights (default: a random model of --config)"),
    CLI_STR("--save", "PATH", 0, NULL, "save the random model first (for bench/bench_onnx.py)"),
    CLI_STR("--images", "PATH", 0, NULL, "the input batch as raw float32 [B, 3, S, S] (default: random)"),
    CLI_STR("--emb-out", "PATH", 0, NULL, "write the embeddings as raw float32"),
    CLI_CH("--inference", "0|1", "1", "1: an inference-only model (no backward state, fused epilogues)"),
    CLI_CH("--dtype", "f32|bf16|bf16-dot|bf16-widen|f16", "f32",
           "inference-only: the image tower's weights in memory; bf16-dot / bf16-widen force the bf16 GEMM path"),
    CLI_NUM("--kernels", CLI_INT, 0, 1000000, 0, 0, "also time attention vs the fc1 GEMM, this many repetitions"),
    CLI_CH("--tune", "0|1", "1", "1: pick all threads or one, whichever was faster lately"),
    CLI_END};
static const cli_flag bench_weights_flags[] = {
    CLI_STR("--weights", "PATH", CLI_REQUIRED, NULL, "the weights file"),
    CLI_NUM("--batch", CLI_INT, 1, CLI_MAX_BATCH, 0, 1, "batch"),
    CLI_NUM("--steps", CLI_INT, 1, 1000000, 0, 1, "timed steps"),
    CLI_END};

/* The commands: name, usage, bare words, what it does, its function and
 * tables (its own first). */
static const cli_command cli_commands[] = {
    {"forward", "--weights W --batch B --out O [flags]", 0,
     "one forward + backward in train mode (dropout off); writes embeddings, losses and gradients to O\n"
     "(safetensors) for parity checks", cmd_forward, {forward_flags, cli_common_flags, NULL}},
    {"info", "W.safetensors [flags]", 1,
     "config, parameter counts per tower and group, dtype and memory per group", cmd_info,
     {info_flags, cli_frozen_flags, cli_common_flags, NULL}},
    {"init", "--out W.safetensors [flags]", 0,
     "a freshly initialised model (SPEC A.5) written as safetensors (e.g. for --init / --weights)", cmd_init,
     {init_flags, cli_frozen_flags, cli_common_flags, NULL}},
    {"synth", "--out DIR [flags]", 0, "synthetic multi-view mammograms (PNG) and their manifest.csv", cmd_synth,
     {synth_flags, cli_common_flags, NULL}},
    {"pretrain", "--manifest M --out CKPT [flags]", 0,
     "pretraining (SPEC A.4, A.5; the defaults are the paper's).  A number's 0 means zero (--warmup 0: no\n"
     "warm-up, --clip 0: no clipping).  Data parallel (build with `make MPI=1`): mpirun -np N build/mama\n"
     "pretrain ... trains on N ranks, --batch per rank.", cmd_pretrain,
     {pretrain_flags, cli_data_flags, cli_aug_flags, cli_frozen_flags, cli_dp_flags, cli_common_flags, NULL}},
    {"zeroshot", "--weights CKPT --manifest M [flags]", 0, "zeroshot classification (SPEC A.7)", cmd_zeroshot,
     {eval_flags, zeroshot_flags, cli_data_flags, cli_frozen_flags, cli_dp_flags, cli_common_flags}},
    {"probe", "--weights CKPT --manifest M [flags]", 0,
     "linear probe on the frozen image encoder (SPEC A.7)", cmd_probe,
     {eval_flags, probe_flags, cli_data_flags, cli_aug_flags, cli_frozen_flags, cli_dp_flags, cli_common_flags}},
    {"finetune", "--weights CKPT --manifest M [flags]", 0,
     "full fine-tuning: the probe's classifier with the image encoder unfrozen (the probe's defaults)",
     cmd_finetune, {eval_flags, probe_flags, finetune_flags, cli_data_flags, cli_aug_flags, cli_frozen_flags,
                    cli_common_flags}},
    {"demo", "[flags]", 0,
     "the main job on synthetic data: generate, pretrain, evaluate, write OUT/REPORT.md", cmd_demo,
     {demo_flags, cli_common_flags, NULL}},
    {"caption", "--manifest M [flags]", 0, "the caption of data row N (0-based) exactly as the model sees it",
     cmd_caption, {caption_flags, cli_common_flags, NULL}},
    {"tokenizer train", "--manifest M --out DIR [flags]", 0,
     "a byte-level BPE vocabulary from the manifest's captions (+6 special tokens)", cmd_tokenizer_train,
     {tokenizer_flags, cli_common_flags, NULL}},
    {"embed", "--weights W (--manifest M [--split S] [--texts] | --images a.png ...) --out X.npy", 0,
     "image (or caption) embeddings as a float32 .npy", cmd_embed,
     {embed_flags, cli_data_flags, cli_frozen_flags, cli_common_flags, NULL}},
    {"predict", "--weights W IMAGE... [--manifest M] [--head H] [--csv F] [--json F] [flags]", -1,
     "per image the zero-shot probabilities of density (4), BI-RADS (7) and cancer (2) with the paper's\n"
     "prompts (metadata from the --manifest row, else unknown), or a saved classifier's (--head) for its\n"
     "task; then per breast (study, side) and per exam the mean and the max over its images.  Without\n"
     "--manifest the images are one exam.", cmd_predict, {predict_flags, cli_frozen_flags, cli_common_flags, NULL}},
    {"heatmap", "--weights W --manifest M --row N --out P.png [flags]", 0,
     "SLA similarity of each caption sentence with each patch, one panel per sentence", cmd_heatmap,
     {heatmap_flags, cli_data_flags, cli_frozen_flags, cli_common_flags, NULL}},
    {"bench gemm", "[flags]", 0, "GEMM GFLOP/s (vs OpenBLAS if built with BLAS=openblas)", cmd_bench_gemm,
     {bench_gemm_flags, cli_common_flags, NULL}},
    {"bench train", "[flags]", 0, "training-step time of a preset", cmd_bench_train,
     {bench_train_flags, cli_common_flags, NULL}},
    {"bench encode", "[flags]", 0, "the vision tower alone in eval mode, images/s", cmd_bench_encode,
     {bench_encode_flags, cli_common_flags, NULL}},
    {"bench weights", "--weights W [flags]", 0,
     "load W, time a text encode and a training step, print peak memory", cmd_bench_weights,
     {bench_weights_flags, cli_frozen_flags, cli_common_flags, NULL}},
    {NULL, NULL, 0, NULL, NULL, {NULL}}};

static void print_usage(FILE *f) {
    int i;
    fprintf(f, "usage: mama <command> [flags]   (`mama <command> --help`: its flags, their ranges and defaults)\n\n"
               "commands:\n");
    for (i = 0; cli_commands[i].name; i++)
        fprintf(f, "  %s %s\n        %.*s\n", cli_commands[i].name, cli_commands[i].synopsis,
                (int)strcspn(cli_commands[i].about, "\n"), cli_commands[i].about);
    fprintf(f, "  help [COMMAND]\n\n");
    fputs(USAGE_NOTES_TEXT, f);
    fputs(USAGE_DATA_TEXT, f);
    fputs(USAGE_DECODE_TEXT, f);
    fputs(USAGE_VAL_TEXT, f);
}

/* The command argv names: "pretrain", or "bench train" from two words;
 * *used is how many words the name took. */
static const cli_command *cli_find_command(int argc, char **argv, int *used) {
    int i;
    for (i = 0; cli_commands[i].name; i++) {
        const char *n = cli_commands[i].name, *sp = strchr(n, ' ');
        if (!sp && !strcmp(argv[0], n)) { *used = 1; return &cli_commands[i]; }
        if (sp && argc > 1 && !strncmp(argv[0], n, (size_t)(sp - n)) && !argv[0][sp - n] && !strcmp(argv[1], sp + 1)) {
            *used = 2;
            return &cli_commands[i];
        }
    }
    return NULL;
}

/* "bench" or "tokenizer" without (or with an unknown) second word */
static int cli_group_error(const char *group, const char *got) {
    int i;
    size_t n = strlen(group);
    fprintf(stderr, "mama %s: %s%s%s; one of:", group, got ? "unknown subcommand '" : "expected a subcommand",
            got ? got : "", got ? "'" : "");
    for (i = 0; cli_commands[i].name; i++)
        if (!strncmp(cli_commands[i].name, group, n) && cli_commands[i].name[n] == ' ')
            fprintf(stderr, " %s", cli_commands[i].name);
    fputc('\n', stderr);
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
    const cli_command *c;
    cli_args a;
    int used = 0, i, rc;
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc > 2) { /* mama help pretrain, mama help bench train */
            c = cli_find_command(argc - 2, argv + 2, &used);
            if (!c) {
                if (!strcmp(argv[2], "bench") || !strcmp(argv[2], "tokenizer"))
                    return cli_group_error(argv[2], argc > 3 ? argv[3] : NULL);
                fprintf(stderr, "mama help: unknown command '%s'\n", argv[2]);
                return 2;
            }
            cli_print_help(c, stdout);
            return 0;
        }
        print_usage(stdout);
        return 0;
    }
    c = cli_find_command(argc - 1, argv + 1, &used);
    if (!c) {
        if (!strcmp(cmd, "bench") || !strcmp(cmd, "tokenizer"))
            return cli_group_error(cmd, argc > 2 && strcmp(argv[2], "--help") && strcmp(argv[2], "-h") ? argv[2] : NULL);
        fprintf(stderr, "mama: unknown command '%s'\n", cmd);
        print_usage(stderr);
        return 2;
    }
    argc -= 1 + used;
    argv += 1 + used;
    for (i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_print_help(c, stdout);
            return 0;
        }
    if ((rc = cli_parse(c, argc, argv, &a)) != 0) return rc;
    if (a.npos < c->positionals) {
        fprintf(stderr, "mama %s: usage: mama %s %s\n", c->name, c->name, c->synopsis);
        return 2;
    }
    return c->run(&a);
}

int main(int argc, char **argv) {
    int rc;
    g_argv0 = argv[0];
    rc = mama_cli_select_device(&argc, argv);
    if (rc) return rc;
    rc = mama_cli_dispatch(argc, argv);
    mama_cli_release();
    return rc;
}
