/* examples/mama.c - the `mama` command-line tool.  It parses arguments and
 * calls the public API of mama.h; nothing here is needed to use the
 * library.  Run `build/mama help` for the commands. */
#define MAMA_IMPLEMENTATION
#include "../mama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/bench_gemm.c"
#include "../bench/bench_train.c"

static const char *usage =
    "usage: mama <command> [options]\n"
    "\n"
    "commands:\n"
    "  forward --weights W --batch B --out O [--late 0|1]\n"
    "        one forward + backward in train mode (dropout off); writes embeddings,\n"
    "        losses and gradients to O (safetensors) for parity checks\n"
    "  info W.safetensors\n"
    "        config, parameter counts per tower and group, memory per group\n"
    "  bench gemm [--reps=N] [--threads=N]     GEMM GFLOP/s (vs OpenBLAS if built with BLAS=openblas)\n"
    "  bench train --config tiny|small [--batch 8] [--steps 10] [--late 0|1] [--checkpoint 0|1]\n"
    "  bench encode --config base [--batch 4] [--steps 3]\n"
    "  help\n";

static const char *arg_value(int argc, char **argv, const char *key, const char *def) {
    int i;
    for (i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], key)) return argv[i + 1];
    return def;
}

static int fail(void) {
    fprintf(stderr, "mama: error: %s\n", mama_last_error());
    return 1;
}

static int cmd_forward(int argc, char **argv) {
    const char *w = arg_value(argc, argv, "--weights", NULL), *b = arg_value(argc, argv, "--batch", NULL);
    const char *o = arg_value(argc, argv, "--out", NULL);
    int late = atoi(arg_value(argc, argv, "--late", "0"));
    if (!w || !b || !o) {
        fprintf(stderr, "mama forward: --weights, --batch and --out are required\n");
        return 2;
    }
    if (mama_verify_forward(w, b, o, late, mama_cpu_backend()) != MAMA_OK) return fail();
    printf("wrote %s\n", o);
    return 0;
}

static int cmd_info(int argc, char **argv) {
    mama_model *m = NULL;
    const mama_config *c;
    char json[2048];
    size_t tower[3] = {0, 0, 0}, group[4];
    int i;
    static const char *const gname[4] = {"train", "late", "frozen", "buffers"};
    if (argc < 1) { fprintf(stderr, "mama info: give a .safetensors file\n"); return 2; }
    if (mama_model_load(&m, argv[0], mama_cpu_backend(), 1) != MAMA_OK) return fail();
    c = mama_model_config(m);
    mama_config_to_json(c, json, sizeof json);
    printf("file: %s\nconfig: %s\n", argv[0], json);
    for (i = 0; i < mama_model_param_count(m); i++) {
        const mama_param_info *p = mama_model_param(m, i);
        int t = !strncmp(p->name, "img_encoder_q.", 14) ? 0 : !strncmp(p->name, "text_encoder_q.", 15) ? 1 : 2;
        if (p->group != MAMA_GROUP_BUFFER) tower[t] += p->numel;
    }
    printf("parameters: vision %zu, text %zu, joint heads %zu\n", tower[0], tower[1], tower[2]);
    for (i = 0; i < 4; i++) {
        group[i] = mama_model_numel(m, (mama_param_group)i);
        printf("group %-8s %12zu values  %9.1f MB (f32 in memory)\n", gname[i], group[i], group[i] * 4.0 / 1e6);
    }
    printf("text mode %s: trainable now %zu, from the late-loss step %zu more\n",
           c->text_mode == MAMA_TEXT_LORA ? "lora" : c->text_mode == MAMA_TEXT_FROZEN ? "frozen" : "full",
           group[0], group[1]);
    mama_model_free(m);
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "gemm")) return mama_bench_gemm_main(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "train")) return mama_bench_train_main(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "encode")) return mama_bench_encode_main(argc - 1, argv + 1);
    fprintf(stderr, "mama bench: expected gemm, train or encode\n%s", usage);
    return 2;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "help";
    if (!strcmp(cmd, "forward")) return cmd_forward(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) { fputs(usage, stdout); return 0; }
    fprintf(stderr, "mama: unknown command '%s'\n%s", cmd, usage);
    return 2;
}
