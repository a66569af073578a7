/* examples/device.c - the `--device` and `--precision` options of the mama
 * tool (included by examples/mama.c; every command accepts them):
 *
 *   --device cpu          the CPU backend (default)
 *   --device reference    the reference backend (mama.h section 3.6): plain
 *                         scalar loops, slow; for checking a result or
 *                         stepping through the math in a debugger
 *   --device cuda[:N]     the CUDA backend on GPU N (build with `make cuda`)
 *   --precision fp32|tf32|bf16
 *                         GEMM precision of the CUDA backend (default fp32;
 *                         tf32/bf16 use tensor cores with FP32 accumulation)
 *
 * Both options are removed from argv before the command parses it.  The
 * CUDA backend exists only when the tool is compiled with -DMAMA_CUDA and
 * linked with mama_cuda.o; otherwise `--device cuda` is a clear error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mama_backend *mama_cli_be = NULL;   /* created by mama_cli_select_device, freed at exit */

static mama_backend *mama_cli_backend(void) { return mama_cli_be; }

static void mama_cli_release(void) {
    mama_backend_free(mama_cli_be); /* CPU or CUDA: the table's destroy */
    mama_cli_be = NULL;
}

/* Remove argv[i] and argv[i+1]. */
static void mama_cli_drop2(int *argc, char **argv, int i) {
    int k;
    for (k = i; k + 2 < *argc; k++) argv[k] = argv[k + 2];
    *argc -= 2;
}

/* Parse and strip --device / --precision; returns 0, or an exit code after
 * printing why. */
static int mama_cli_select_device(int *argc, char **argv) {
    const char *device = "cpu", *precision = NULL;
    int i = 1;
    while (i < *argc) {
        if ((!strcmp(argv[i], "--device") || !strcmp(argv[i], "--precision")) && i + 1 < *argc) {
            if (argv[i][2] == 'd') device = argv[i + 1];
            else precision = argv[i + 1];
            mama_cli_drop2(argc, argv, i);
        } else {
            i++;
        }
    }
    if (!strcmp(device, "cpu")) {
        if (precision && strcmp(precision, "fp32")) {
            fprintf(stderr, "mama: --precision %s needs --device cuda (the CPU backend is FP32)\n", precision);
            return 2;
        }
        /* its scratch has one slot per thread of the moment (OMP_NUM_THREADS) */
        if (mama_cpu_backend_create(&mama_cli_be) != MAMA_OK) {
            fprintf(stderr, "mama: error: %s\n", mama_last_error());
            return 1;
        }
        return 0;
    }
    if (!strcmp(device, "reference")) {
        if (precision && strcmp(precision, "fp32")) {
            fprintf(stderr, "mama: --precision %s needs --device cuda (the reference backend is FP32)\n", precision);
            return 2;
        }
        if (mama_reference_backend_create(&mama_cli_be) != MAMA_OK) {
            fprintf(stderr, "mama: error: --device reference: %s\n", mama_last_error());
            mama_cli_be = NULL;
            return 1;
        }
        return 0;
    }
    if (!strncmp(device, "cuda", 4) && (device[4] == 0 || device[4] == ':')) {
#ifdef MAMA_CUDA
        int ordinal = device[4] == ':' ? atoi(device + 5) : 0, prec = MAMA_CUDA_FP32;
        if (precision) {
            if (!strcmp(precision, "fp32")) prec = MAMA_CUDA_FP32;
            else if (!strcmp(precision, "tf32")) prec = MAMA_CUDA_TF32;
            else if (!strcmp(precision, "bf16")) prec = MAMA_CUDA_BF16;
            else {
                fprintf(stderr, "mama: unknown --precision '%s' (fp32, tf32 or bf16)\n", precision);
                return 2;
            }
        }
        if (mama_cuda_backend_create(&mama_cli_be, ordinal) != MAMA_OK) {
            fprintf(stderr, "mama: error: --device %s: %s\n", device, mama_last_error());
            mama_cli_be = NULL;
            return 1;
        }
        if (mama_cuda_set_precision(mama_cli_be, prec) != MAMA_OK) {
            fprintf(stderr, "mama: error: %s\n", mama_last_error());
            mama_cli_release();
            return 1;
        }
        return 0;
#else
        (void)precision;
        fprintf(stderr, "mama: --device %s: this build has no CUDA backend (build it with `make cuda`, which "
                        "needs nvcc)\n", device);
        return 2;
#endif
    }
    fprintf(stderr, "mama: unknown --device '%s' (cpu, reference or cuda[:N])\n", device);
    return 2;
}
