/* tests/test_util.h - the tiny harness every test program uses.
 *
 * Each check prints one line:  "PASS <name>: <what was compared> worst=<err>"
 * or "FAIL ...".  tests/run_tests.sh runs every build/test_* program, counts
 * the PASS/FAIL lines and ends with "N passed, M failed". */
#ifndef MAMA_TEST_UTIL_H
#define MAMA_TEST_UTIL_H
#include <stdio.h>
#include <stdarg.h>
#include <math.h>

static int test_failures = 0;  /* per program */
static int test_passes = 0;

/* Report one check: ok decides PASS/FAIL; the message says what was compared. */
static inline void test_report(int ok, const char *name, const char *fmt, ...) {
    va_list ap;
    printf("%s %s: ", ok ? "PASS" : "FAIL", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (ok) test_passes++; else test_failures++;
}

/* Worst relative error max|a-b| / max(|b|, floor) over n values. */
static inline double test_max_rel_err(const float *a, const double *b, long n, double floor_) {
    double worst = 0;
    long i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        double s = fabs(b[i]) > floor_ ? fabs(b[i]) : floor_;
        if (!(d / s <= worst)) worst = d / s; /* NaN propagates as failure */
    }
    return worst;
}

#ifdef MAMA_H_INCLUDED
/* main() of a test program whose checks share one CPU backend: creates it
 * in *cpu, runs body, frees it. */
static inline int test_with_cpu_backend(mama_backend **cpu, int (*body)(void)) {
    int rc;
    if (mama_cpu_backend_create(cpu) != MAMA_OK) {
        printf("FAIL cpu backend: %s\n", mama_last_error());
        return 1;
    }
    rc = body();
    mama_backend_free(*cpu);
    return rc;
}
#endif

static inline int test_finish(void) {
    printf("# %d checks passed, %d failed\n", test_passes, test_failures);
    return test_failures ? 1 : 0;
}
#endif
