/* tests/fuzz/fuzz_safetensors.c - libFuzzer target for the safetensors
 * header parser and typed readers (mama_st_open_memory).
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_safetensors.c -o build/fuzz_safetensors -lm
 *   build/fuzz_safetensors -max_total_time=30 tests/fuzz/corpus/safetensors
 * The input is copied into an exactly-sized heap buffer so ASan catches
 * any read past the file; every tensor of an accepted file is read with
 * every reader, and an accepted file is re-written and re-parsed. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mama_safetensors st;
    unsigned char *copy = (unsigned char *)malloc(size ? size : 1);
    int k;
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    if (mama_st_open_memory(&st, copy, size, "fuzz.safetensors") == MAMA_OK) {
        mama_st_writer *w = NULL;
        mama_st_writer_create(&w);
        for (k = 0; k < st.count; k++) {
            const mama_st_tensor *t = &st.tensors[k];
            size_t n = t->numel ? t->numel : 1;
            void *buf = malloc(n * 8);
            if (!buf) continue;
            (void)mama_st_read_f32(&st, t->name, (float *)buf, t->numel);
            (void)mama_st_read_bf16(&st, t->name, (uint16_t *)buf, t->numel);
            (void)mama_st_read_i32(&st, t->name, (int32_t *)buf, t->numel);
            (void)mama_st_read_i64(&st, t->name, (int64_t *)buf, t->numel);
            if (mama_st_find(&st, t->name) == NULL) __builtin_trap();
            free(buf);
            if (w && mama_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, mama_st_data(&st, t)) != MAMA_OK) {
                /* names like "__x" are legal to read but refused by the writer */
                mama_st_writer_free(w);
                w = NULL;
            }
        }
        for (k = 0; w && k < st.meta_count; k++) mama_st_writer_meta(w, st.meta_keys[k], st.meta_values[k]);
        if (w) {
            mama_buf b = {NULL, 0, 0};
            if (mama_st_writer_serialize(w, &b) == MAMA_OK) {
                mama_safetensors again;
                if (mama_st_open_memory(&again, b.data, b.len, "rewrite") != MAMA_OK || again.count != st.count)
                    __builtin_trap();
                mama_st_close(&again);
            }
            mama_buf_free(&b);
            mama_st_writer_free(w);
        }
        for (k = 0; k < st.meta_count; k++) (void)mama_st_meta(&st, st.meta_keys[k]);
        mama_st_close(&st);
    }
    free(copy);
    return 0;
}
