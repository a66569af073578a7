/* tests/fuzz/fuzz_manifest.c - libFuzzer target for the manifest CSV
 * parser (mama_manifest_parse), in strict and skip_bad_rows modes.
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_manifest.c -o build/fuzz_manifest -lm
 *   build/fuzz_manifest -max_total_time=30 tests/fuzz/corpus/manifest
 * An accepted manifest must have consistent studies (every record in the
 * study it points at) and re-serialise to CSV that parses to the same
 * number of records. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include <stdlib.h>

static void check(const mama_manifest *m) {
    int i, n, k, found, total = 0;
    mama_rng rng;
    mama_rng_seed(&rng, 1);
    for (i = 0; i < m->count; i++) {
        const int *mem = mama_manifest_study_of(m, i, &n);
        int o;
        if (!mem || n < 1) __builtin_trap();
        for (k = 0, found = 0; k < n; k++) found |= mem[k] == i;
        if (!found) __builtin_trap();
        o = mama_manifest_other_view(m, i, &rng);
        if ((n == 1) != (o == -1) || o == i || o >= m->count) __builtin_trap();
        if (m->records[i].split < 0 || m->records[i].split > 2) __builtin_trap();
    }
    for (i = 0; i < m->study_count; i++) total += m->studies[i].count;
    if (total != m->count) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int skip;
    char *copy = (char *)malloc(size ? size : 1); /* exact size: ASan sees over-reads */
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    for (skip = 0; skip < 2; skip++) {
        mama_manifest m;
        if (mama_manifest_parse(&m, copy, size, "fuzz.csv", skip ? "" : "base", skip) == MAMA_OK) {
            mama_buf b = {NULL, 0, 0};
            mama_manifest again;
            check(&m);
            if (mama__manifest_serialize(&m, "out.csv", &b) == MAMA_OK) {
                if (mama_manifest_parse(&again, b.data, b.len, "again.csv", "", 0) != MAMA_OK || again.count != m.count)
                    __builtin_trap();
                mama_manifest_free(&again);
            }
            mama_buf_free(&b);
            mama_manifest_free(&m);
        }
    }
    free(copy);
    return 0;
}
