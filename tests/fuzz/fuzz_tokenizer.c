/* tests/fuzz/fuzz_tokenizer.c - libFuzzer target for the tokenizer file
 * loaders (vocab.json + merges.txt, and tokenizer.json), then encoding and
 * decoding with whatever loaded.
 * Input: byte 0 picks the format; for vocab+merges the rest is split at the
 * first NUL byte (vocab.json before it, merges.txt after).
 * Checks beyond "no crash": a failed load leaves a message; a loaded
 * tokenizer encodes a fixed text and its own input prefix and decodes the
 * ids again without error. */
#define MAMA_IMPLEMENTATION
#include "mama.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mama_tokenizer *t = NULL;
    mama_status s;
    const char *text = (const char *)data + 1;
    size_t n = size ? size - 1 : 0;
    int ids[256], count = 0;
    char *back = NULL;
    if (size < 1) return 0;
    if (data[0] & 1) {
        const char *nul = (const char *)memchr(text, 0, n);
        size_t vlen = nul ? (size_t)(nul - text) : n;
        s = mama_tokenizer_load_memory(&t, text, vlen, nul ? nul + 1 : "", nul ? n - vlen - 1 : 0, "fuzz");
    } else {
        s = mama_tokenizer_load_json_memory(&t, text, n, "fuzz");
    }
    if (s != MAMA_OK) {
        if (!mama_last_error()[0]) __builtin_trap();
        return 0;
    }
    if (mama_tokenizer_encode(t, "Findings: The mammogram shows; a <|separatetext|> mass.", ids, 256, &count) != MAMA_OK)
        __builtin_trap();
    if (count > 256) count = 256;
    if (mama_tokenizer_decode_alloc(t, ids, count, 0, &back) != MAMA_OK) __builtin_trap();
    mama_free(back);
    back = NULL;
    {
        char prefix[128];
        size_t k = n < 127 ? n : 127;
        memcpy(prefix, text, k);
        prefix[k] = 0;
        if (mama_tokenizer_encode(t, prefix, ids, 256, &count) != MAMA_OK) __builtin_trap();
    }
    mama_tokenizer_free(t);
    return 0;
}
