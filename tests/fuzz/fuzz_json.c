/* tests/fuzz/fuzz_json.c - libFuzzer target for mama_json_parse.
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_json.c -o build/fuzz_json -lm
 *   build/fuzz_json -max_total_time=30 tests/fuzz/corpus/json
 * Checks beyond "no crash": a parsed document survives a write-back through
 * the escaper and number writer (re-serialised text parses again), and a
 * failure always leaves a message with a line:column. */
#define MAMA_IMPLEMENTATION
#include "mama.h"

static mama_status emit(const mama_json *j, mama_buf *b) {
    size_t k;
    switch (j->type) {
    case MAMA_JSON_NULL: return mama_buf_puts(b, "null");
    case MAMA_JSON_BOOL: return mama_buf_puts(b, j->number ? "true" : "false");
    case MAMA_JSON_NUMBER: return mama_buf_json_number(b, j->number);
    case MAMA_JSON_STRING: return mama_buf_json_string(b, j->string); /* stops at an embedded NUL: fine */
    case MAMA_JSON_ARRAY:
    case MAMA_JSON_OBJECT:
        MAMA_TRY(mama_buf_puts(b, j->type == MAMA_JSON_ARRAY ? "[" : "{"));
        for (k = 0; k < j->length; k++) {
            if (k) MAMA_TRY(mama_buf_puts(b, ","));
            if (j->type == MAMA_JSON_OBJECT) {
                MAMA_TRY(mama_buf_json_string(b, j->keys[k]));
                MAMA_TRY(mama_buf_puts(b, ":"));
            }
            MAMA_TRY(emit(&j->children[k], b));
        }
        return mama_buf_puts(b, j->type == MAMA_JSON_ARRAY ? "]" : "}");
    }
    return MAMA_ERR_INVALID;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mama_json *j = NULL;
    mama_status s = mama_json_parse((const char *)data, size, "fuzz", &j);
    if (s == MAMA_OK) {
        mama_buf b = {NULL, 0, 0};
        mama_json *again = NULL;
        if (emit(j, &b) == MAMA_OK) {
            if (mama_json_parse(b.data, b.len, "reparse", &again) != MAMA_OK) __builtin_trap();
            mama_json_free(again);
        }
        mama_buf_free(&b);
        (void)mama_json_get(j, "a");
        mama_json_free(j);
    } else if (j != NULL || !strstr(mama_last_error(), "fuzz:")) {
        if (s != MAMA_ERR_NOMEM) __builtin_trap();
    }
    return 0;
}
