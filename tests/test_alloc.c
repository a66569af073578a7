/* tests/test_alloc.c - a failed allocation is an error, never a crash or a
 * leak.  Every allocation of the library goes through MAMA_MALLOC; here it
 * counts, and fails on demand.  The workload (load weights and a batch,
 * build the model, one forward + backward with all four losses, write the
 * results) is run once to count its N allocations, then N more times with
 * allocation k failing: each run must return MAMA_ERR_NOMEM (or the status
 * of the call that reports it) with a message, and leave no block behind. */
#include <stdlib.h>
#include <stddef.h>

static long alloc_count = 0, alloc_live = 0, alloc_fail_at = -1;
static void *test_malloc(size_t n) {
    void *p;
    if (++alloc_count == alloc_fail_at) return NULL;
    p = malloc(n);
    if (p) alloc_live++;
    return p;
}
static void *test_realloc(void *q, size_t n) {
    void *p;
    if (++alloc_count == alloc_fail_at) return NULL;
    p = realloc(q, n);
    if (p && !q) alloc_live++;
    return p;
}
static void test_free(void *p) {
    if (p) alloc_live--;
    free(p);
}
#define MAMA_MALLOC(n) test_malloc(n)
#define MAMA_REALLOC(p, n) test_realloc(p, n)
#define MAMA_FREE(p) test_free(p)
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_VERIFY_IMPLEMENTATION
#include "mama_verify.h"
#include "test_util.h"

#define FIX "tests/ref/fixtures/"

static mama_status workload(void) {
    return mama_verify_forward(FIX "weights_lora_late1.safetensors", FIX "batch_lora_late1.safetensors",
                               "build/test_alloc_out.safetensors", 1, NULL);
}

int main(void) {
    long total, k, reported = 0, leaks = 0, crashes_avoided = 0, bad_messages = 0;
    mama_status s;
    alloc_count = 0; alloc_fail_at = -1;
    s = workload();
    total = alloc_count;
    test_report(s == MAMA_OK && alloc_live == 0, "alloc_baseline",
                "workload without failures: status %s, %ld allocations, %ld live after", mama_status_name(s), total,
                alloc_live);
    for (k = 1; k <= total; k++) {
        alloc_count = 0; alloc_live = 0; alloc_fail_at = k;
        mama_clear_error();
        s = workload();
        if (s != MAMA_OK) reported++;
        else crashes_avoided++; /* the failure was absorbed (e.g. an optional buffer) */
        if (s != MAMA_OK && !mama_last_error()[0]) bad_messages++;
        if (alloc_live != 0) {
            leaks++;
            if (leaks < 5) printf("  leak: failing allocation %ld left %ld blocks (%s)\n", k, alloc_live, mama_last_error());
        }
    }
    test_report(reported == total && leaks == 0 && bad_messages == 0, "alloc_failures",
                "failed each of %ld allocations in turn: %ld reported an error with a message, %ld absorbed, %ld leaked",
                total, reported, crashes_avoided, leaks);
    return test_finish();
}
