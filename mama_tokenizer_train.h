/* mama_tokenizer_train.h - a byte-level BPE tokenizer trainer for mama.h:
 *                          learns GPT-2-style vocab.json and merges.txt
 *                          from a text corpus (e.g. the report captions),
 *                          which mama_tokenizer_load then reads.  A
 *                          companion single-file header: a program that
 *                          only encodes text with an existing vocabulary
 *                          does not need it.
 *
 * ===========================================================================
 *  USAGE
 * ===========================================================================
 *  mama.h must be included first.  In exactly one C or C++ file:
 *
 *      #include "mama.h"               (MAMA_IMPLEMENTATION in one file)
 *      #define MAMA_TOKENIZER_TRAIN_IMPLEMENTATION
 *      #include "mama_tokenizer_train.h"
 *
 *  everywhere else just include both headers.  The implementation uses only
 *  the public API of mama.h, so it may live in a different translation unit
 *  than MAMA_IMPLEMENTATION.  Errors work as in mama.h: every function that
 *  can fail returns a mama_status and leaves a message for
 *  mama_last_error(); nothing exits or aborts.
 *
 *      const char *texts[2] = {"Findings: a round mass.", "Findings: no mass."};
 *      mama_tokenizer *tok = NULL;
 *      int merges = 0;
 *      if (mama_tokenizer_train(texts, 2, 300, "vocab_dir", &merges) != MAMA_OK ||
 *          mama_tokenizer_load(&tok, "vocab_dir") != MAMA_OK)
 *          fprintf(stderr, "tokenizer: %s\n", mama_last_error());
 *
 *  LICENSE: MIT (see README.md).
 */
#ifndef MAMA_TOKENIZER_TRAIN_H_INCLUDED
#define MAMA_TOKENIZER_TRAIN_H_INCLUDED

#ifndef MAMA_H_INCLUDED
#error "mama_tokenizer_train.h needs mama.h: include mama.h first"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * 1. PUBLIC API
 * ------------------------------------------------------------------------- */

/* ---- The BPE trainer -----------------------------------------------------------
 * Train a byte-level BPE on `n` texts and write out_dir/vocab.json and
 * out_dir/merges.txt (directory must exist; files replaced atomically).
 * The special-token strings are cut out of the texts first; the rest is
 * pre-tokenized as in encoding, and words are counted.  The vocabulary:
 * ids 0..255 the 256 bytes in GPT-2's byte-to-unicode order, then one token
 * per merge, then <|endoftext|> last, `vocab_size` entries in all (the
 * loader then appends the six special tokens, so the model's table has
 * vocab_size + 6 rows).  Each merge joins the adjacent pair with the largest
 * count over all words (weighted by word frequency); ties go to the pair
 * with the smaller (left id, right id).  Pairs seen fewer than 2 times are
 * never merged; when a small corpus runs out of pairs first, the ids left
 * before <|endoftext|> are filled with placeholder tokens "<|reserved_K|>"
 * that encoding never produces, so vocab.json always has exactly
 * vocab_size entries (a templated caption corpus supports only a few
 * hundred merges).  *n_merges (may be NULL) receives the number of merges.
 * Deterministic; cost O(merges x symbols of the distinct words). */
MAMA_API mama_status mama_tokenizer_train(const char *const *texts, int n, int vocab_size, const char *out_dir,
                                          int *n_merges);
/* The same, returning the two files' contents (mama_alloc'ed, free with
 * mama_free). */
MAMA_API mama_status mama_tokenizer_train_memory(const char *const *texts, int n, int vocab_size,
                                                 char **vocab_json, size_t *vocab_len, char **merges_txt,
                                                 size_t *merges_len, int *n_merges);

#ifdef __cplusplus
}
#endif
#endif /* MAMA_TOKENIZER_TRAIN_H_INCLUDED */

/* ==========================================================================
 * IMPLEMENTATION
 * ========================================================================== */
#ifdef MAMA_TOKENIZER_TRAIN_IMPLEMENTATION
#ifndef MAMA_TOKENIZER_TRAIN_IMPLEMENTATION_DONE
#define MAMA_TOKENIZER_TRAIN_IMPLEMENTATION_DONE

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- 2. Helpers: private copies of the ones mama.h's tokenizer uses, so
 * that this file needs only mama.h's public API.
 * The byte-level alphabet: GPT-2 maps each byte to a printable code point
 * so that vocabulary files are text: the printable Latin-1 bytes '!'..'~',
 * 0xA1..0xAC, 0xAE..0xFF map to themselves; the other 68 bytes map, in
 * byte order, to U+0100, U+0101, ...  `order` lists the bytes in the order
 * of GPT-2's first 256 vocabulary ids: the printable ones first. */
typedef struct mama__tt_bytelevel {
    uint16_t to_cp[256];
    unsigned char order[256];
} mama__tt_bytelevel;

static int mama__tt_byte_printable(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

static void mama__tt_bytelevel_init(mama__tt_bytelevel *bl) {
    int b, n = 0, k = 0;
    for (b = 0; b < 256; b++)
        if (mama__tt_byte_printable(b)) { bl->to_cp[b] = (uint16_t)b; bl->order[k++] = (unsigned char)b; }
    for (b = 0; b < 256; b++)
        if (!mama__tt_byte_printable(b)) { bl->to_cp[b] = (uint16_t)(256 + n++); bl->order[k++] = (unsigned char)b; }
}

/* Raw bytes -> byte-level text (UTF-8), appended to b. */
static mama_status mama__tt_bytelevel_encode(const mama__tt_bytelevel *bl, const char *s, size_t n, mama_buf *b) {
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned cp = bl->to_cp[(unsigned char)s[i]]; /* < 0x800: one or two UTF-8 bytes */
        unsigned char u[2];
        size_t k = 1;
        if (cp < 0x80) u[0] = (unsigned char)cp;
        else { u[0] = (unsigned char)(0xC0 | (cp >> 6)); u[1] = (unsigned char)(0x80 | (cp & 0x3F)); k = 2; }
        MAMA_TRY(mama_buf_append(b, u, k));
    }
    return MAMA_OK;
}

/* Open addressing, linear probing, power-of-two capacity at most half full:
 * FNV-1a for byte strings, a 64-bit mix for id pairs. */
static uint64_t mama__tt_fnv1a(const void *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;
    for (i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ull; }
    return h;
}
static uint64_t mama__tt_mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}
static size_t mama__tt_pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* Grow an array to hold `need` elements (doubling). */
static mama_status mama__tt_grow(void **p, size_t *cap, size_t need, size_t elem, const char *what) {
    void *q;
    size_t nc;
    if (need <= *cap) return MAMA_OK;
    nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    MAMA_TRY(mama_alloc(&q, nc * elem, what));
    if (*p) { memcpy(q, *p, *cap * elem); mama_free(*p); }
    *p = q;
    *cap = nc;
    return MAMA_OK;
}

/* dir + "/" + name into a mama_alloc'ed string */
static mama_status mama__tt_path_join(const char *dir, const char *name, char **out) {
    size_t nd = strlen(dir), nn = strlen(name);
    int slash = nd > 0 && dir[nd - 1] != '/' && dir[nd - 1] != '\\';
    MAMA_TRY(mama_alloc((void **)out, nd + nn + 2, "path"));
    memcpy(*out, dir, nd);
    if (slash) (*out)[nd] = '/';
    memcpy(*out + nd + (size_t)slash, name, nn + 1);
    return MAMA_OK;
}

/* ---- 3. The BPE trainer ---------------------------------------------------------------
 * 1. Count the distinct pre-tokenized words of the corpus (special-token
 *    strings cut out first, as in encoding).
 * 2. Every word starts as its bytes' tokens.  Repeat: count every adjacent
 *    pair over the distinct words, weighted by word count; merge the most
 *    frequent pair everywhere (ties: smallest (left id, right id)); the
 *    joined bytes become a new token unless an earlier merge already made
 *    the same bytes (("ab","c") and ("a","bc") both give "abc": one token,
 *    two merges, as Hugging Face's trainer does).
 * Recounting all pairs per merge costs O(symbols of the distinct words),
 * which is what a caption vocabulary needs; a large-corpus trainer would
 * update pair counts incrementally instead. */
typedef struct mama__trainer {
    /* distinct words */
    mama_buf wbytes;
    size_t *woff, *wlen;
    long long *wcount;
    size_t nw, wcap;
    long *wslot;
    size_t wslot_cap;
    /* tokens */
    mama_buf tbytes;
    size_t *toff, *tlen;
    size_t ntok, tcap;
    long *tslot;
    size_t tslot_cap;
    int byte_id[256];
    /* merges */
    int *mleft, *mright;
    size_t nmerge, mcap;
    mama_status s;
} mama__trainer;

static void mama__trainer_free(mama__trainer *tr) {
    mama_buf_free(&tr->wbytes); mama_buf_free(&tr->tbytes);
    mama_free(tr->woff); mama_free(tr->wlen); mama_free(tr->wcount); mama_free(tr->wslot);
    mama_free(tr->toff); mama_free(tr->tlen); mama_free(tr->tslot);
    mama_free(tr->mleft); mama_free(tr->mright);
    memset(tr, 0, sizeof *tr);
}

static mama_status mama__tx_slots_new(long **slots, size_t cap) {
    size_t i;
    MAMA_TRY(mama_alloc((void **)slots, cap * sizeof(long), "trainer hash table"));
    for (i = 0; i < cap; i++) (*slots)[i] = -1;
    return MAMA_OK;
}

/* Find bytes s in a table whose entries live in (bytes, off, len). */
static size_t mama__tx_slots_probe(const long *slots, size_t cap, const mama_buf *bytes, const size_t *off,
                                const size_t *len, const char *s, size_t n) {
    size_t mask = cap - 1, i = (size_t)mama__tt_fnv1a(s, n) & mask;
    while (slots[i] >= 0 && !(len[slots[i]] == n && memcmp(bytes->data + off[slots[i]], s, n) == 0))
        i = (i + 1) & mask;
    return i;
}

static mama_status mama__tx_slots_rehash(long **slots, size_t *cap, const mama_buf *bytes, const size_t *off,
                                      const size_t *len, size_t n) {
    long *ns;
    size_t nc = *cap * 2, i;
    MAMA_TRY(mama__tx_slots_new(&ns, nc));
    for (i = 0; i < n; i++) {
        size_t k = mama__tx_slots_probe(ns, nc, bytes, off, len, bytes->data + off[i], len[i]);
        ns[k] = (long)i;
    }
    mama_free(*slots);
    *slots = ns;
    *cap = nc;
    return MAMA_OK;
}

static mama_status mama__trainer_count_word(mama__trainer *tr, const char *s, size_t n) {
    size_t k;
    if (2 * (tr->nw + 1) > tr->wslot_cap)
        MAMA_TRY(mama__tx_slots_rehash(&tr->wslot, &tr->wslot_cap, &tr->wbytes, tr->woff, tr->wlen, tr->nw));
    k = mama__tx_slots_probe(tr->wslot, tr->wslot_cap, &tr->wbytes, tr->woff, tr->wlen, s, n);
    if (tr->wslot[k] >= 0) { tr->wcount[tr->wslot[k]]++; return MAMA_OK; }
    if (tr->nw + 1 > tr->wcap) {
        size_t c = tr->wcap;
        MAMA_TRY(mama__tt_grow((void **)&tr->woff, &c, tr->nw + 1, sizeof(size_t), "trainer words"));
        c = tr->wcap;
        MAMA_TRY(mama__tt_grow((void **)&tr->wlen, &c, tr->nw + 1, sizeof(size_t), "trainer words"));
        c = tr->wcap;
        MAMA_TRY(mama__tt_grow((void **)&tr->wcount, &c, tr->nw + 1, sizeof(long long), "trainer words"));
        tr->wcap = c;
    }
    tr->woff[tr->nw] = tr->wbytes.len;
    tr->wlen[tr->nw] = n;
    tr->wcount[tr->nw] = 1;
    MAMA_TRY(mama_buf_append(&tr->wbytes, s, n));
    tr->wslot[k] = (long)tr->nw++;
    return MAMA_OK;
}

static void mama__trainer_piece(const char *piece, size_t len, void *user) {
    mama__trainer *tr = (mama__trainer *)user;
    if (tr->s == MAMA_OK) tr->s = mama__trainer_count_word(tr, piece, len);
}

/* The id of token bytes s (adding it if new). */
static mama_status mama__trainer_token(mama__trainer *tr, const char *s, size_t n, int *id) {
    size_t k;
    if (2 * (tr->ntok + 1) > tr->tslot_cap)
        MAMA_TRY(mama__tx_slots_rehash(&tr->tslot, &tr->tslot_cap, &tr->tbytes, tr->toff, tr->tlen, tr->ntok));
    k = mama__tx_slots_probe(tr->tslot, tr->tslot_cap, &tr->tbytes, tr->toff, tr->tlen, s, n);
    if (tr->tslot[k] >= 0) { *id = (int)tr->tslot[k]; return MAMA_OK; }
    if (tr->ntok + 1 > tr->tcap) {
        size_t c = tr->tcap;
        MAMA_TRY(mama__tt_grow((void **)&tr->toff, &c, tr->ntok + 1, sizeof(size_t), "trainer tokens"));
        c = tr->tcap;
        MAMA_TRY(mama__tt_grow((void **)&tr->tlen, &c, tr->ntok + 1, sizeof(size_t), "trainer tokens"));
        tr->tcap = c;
    }
    tr->toff[tr->ntok] = tr->tbytes.len;
    tr->tlen[tr->ntok] = n;
    /* s must not point into tbytes: the append may move it */
    MAMA_TRY(mama_buf_append(&tr->tbytes, s, n));
    tr->tslot[k] = (long)tr->ntok;
    *id = (int)tr->ntok++;
    return MAMA_OK;
}

/* Cut the seven special-token strings out of a text and count its words. */
static void mama__trainer_text(mama__trainer *tr, const char *text) {
    size_t n = strlen(text), i = 0, start = 0;
    while (i < n && tr->s == MAMA_OK) {
        size_t l = 0;
        int k;
        for (k = 0; k <= (int)MAMA_TOKEN_EOS; k++) {
            const char *sp = mama_special_token_text((mama_special_token)k);
            size_t m = strlen(sp);
            if (m <= n - i && memcmp(text + i, sp, m) == 0) { l = m; break; }
        }
        if (!l) { i++; continue; }
        mama_pretokenize(text + start, i - start, mama__trainer_piece, tr);
        i += l;
        start = i;
    }
    if (tr->s == MAMA_OK) mama_pretokenize(text + start, n - start, mama__trainer_piece, tr);
}

/* The merge loop over distinct words: sym holds each word's current token
 * ids at woff-like offsets soff[w], slen[w] of them. */
static mama_status mama__trainer_merge(mama__trainer *tr, size_t target_tokens, int *sym, const size_t *soff,
                                       size_t *slen, size_t total) {
    size_t cap = mama__tt_pow2_at_least(2 * total + 2), mask = cap - 1, i, w;
    uint64_t *key = NULL;
    long long *cnt = NULL;
    mama_status s = mama_alloc((void **)&key, cap * sizeof(uint64_t), "trainer pair counts");
    if (s == MAMA_OK) s = mama_alloc((void **)&cnt, cap * sizeof(long long), "trainer pair counts");
    while (s == MAMA_OK && tr->ntok < target_tokens) {
        uint64_t best = UINT64_MAX;
        long long best_count = 0;
        int a, b, id;
        for (i = 0; i < cap; i++) key[i] = UINT64_MAX;
        for (w = 0; w < tr->nw; w++) {
            const int *p = sym + soff[w];
            size_t j;
            for (j = 0; j + 1 < slen[w]; j++) {
                uint64_t k = ((uint64_t)(uint32_t)p[j] << 32) | (uint32_t)p[j + 1];
                size_t h = (size_t)mama__tt_mix64(k) & mask;
                while (key[h] != UINT64_MAX && key[h] != k) h = (h + 1) & mask;
                if (key[h] == UINT64_MAX) { key[h] = k; cnt[h] = 0; }
                cnt[h] += tr->wcount[w];
            }
        }
        for (i = 0; i < cap; i++)
            if (key[i] != UINT64_MAX && (cnt[i] > best_count || (cnt[i] == best_count && key[i] < best))) {
                best = key[i];
                best_count = cnt[i];
            }
        if (best_count < 2) break; /* nothing repeats: no merge can help */
        a = (int)(best >> 32);
        b = (int)(best & 0xFFFFFFFFu);
        {
            /* joined bytes: copy out first, tbytes may move while appending */
            size_t la = tr->tlen[a], lb = tr->tlen[b];
            char *tmp = NULL;
            s = mama_alloc((void **)&tmp, la + lb + 1, "trainer token");
            if (s != MAMA_OK) break;
            memcpy(tmp, tr->tbytes.data + tr->toff[a], la);
            memcpy(tmp + la, tr->tbytes.data + tr->toff[b], lb);
            s = mama__trainer_token(tr, tmp, la + lb, &id);
            mama_free(tmp);
            if (s != MAMA_OK) break;
        }
        if (tr->nmerge + 1 > tr->mcap) {
            size_t c = tr->mcap;
            s = mama__tt_grow((void **)&tr->mleft, &c, tr->nmerge + 1, sizeof(int), "trainer merges");
            if (s != MAMA_OK) break;
            c = tr->mcap;
            s = mama__tt_grow((void **)&tr->mright, &c, tr->nmerge + 1, sizeof(int), "trainer merges");
            if (s != MAMA_OK) break;
            tr->mcap = c;
        }
        tr->mleft[tr->nmerge] = a;
        tr->mright[tr->nmerge] = b;
        tr->nmerge++;
        /* apply it, left to right, in place */
        for (w = 0; w < tr->nw; w++) {
            int *p = sym + soff[w];
            size_t j, o = 0, n = slen[w];
            for (j = 0; j < n; j++) {
                if (j + 1 < n && p[j] == a && p[j + 1] == b) { p[o++] = id; j++; }
                else p[o++] = p[j];
            }
            slen[w] = o;
        }
    }
    mama_free(key);
    mama_free(cnt);
    return s;
}

static mama_status mama__trainer_write(const mama__trainer *tr, int eos_id, mama_buf *vj, mama_buf *mt) {
    mama__tt_bytelevel bl;
    mama_buf tmp;
    size_t i;
    mama_status s = MAMA_OK;
    mama__tt_bytelevel_init(&bl);
    memset(&tmp, 0, sizeof tmp);
    s = mama_buf_puts(vj, "{\n");
    for (i = 0; s == MAMA_OK && i <= tr->ntok; i++) {
        tmp.len = 0;
        if (i < tr->ntok) s = mama__tt_bytelevel_encode(&bl, tr->tbytes.data + tr->toff[i], tr->tlen[i], &tmp);
        else s = mama_buf_puts(&tmp, mama_special_token_text(MAMA_TOKEN_EOS));
        if (s == MAMA_OK) s = mama_buf_puts(vj, "  ");
        if (s == MAMA_OK) s = mama_buf_json_string(vj, tmp.data);
        if (s == MAMA_OK) s = mama_buf_printf(vj, ": %d%s\n", i < tr->ntok ? (int)i : eos_id, i < tr->ntok ? "," : "");
    }
    if (s == MAMA_OK) s = mama_buf_puts(vj, "}\n");
    if (s == MAMA_OK) s = mama_buf_puts(mt, "#version: 0.2\n");
    for (i = 0; s == MAMA_OK && i < tr->nmerge; i++) {
        int a = tr->mleft[i], b = tr->mright[i];
        s = mama__tt_bytelevel_encode(&bl, tr->tbytes.data + tr->toff[a], tr->tlen[a], mt);
        if (s == MAMA_OK) s = mama_buf_append(mt, " ", 1);
        if (s == MAMA_OK) s = mama__tt_bytelevel_encode(&bl, tr->tbytes.data + tr->toff[b], tr->tlen[b], mt);
        if (s == MAMA_OK) s = mama_buf_append(mt, "\n", 1);
    }
    mama_buf_free(&tmp);
    return s;
}

MAMA_API mama_status mama_tokenizer_train_memory(const char *const *texts, int n, int vocab_size,
                                                 char **vocab_json, size_t *vocab_len, char **merges_txt,
                                                 size_t *merges_len, int *n_merges) {
    mama__trainer tr;
    mama__tt_bytelevel bl;
    mama_buf vj, mt;
    int *sym = NULL, i;
    size_t *soff = NULL, *slen = NULL, total = 0, w;
    mama_status s = MAMA_OK;
    if (n_merges) *n_merges = 0;
    if (!vocab_json || !merges_txt || (!texts && n > 0) || n < 0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_train: NULL argument");
    *vocab_json = *merges_txt = NULL;
    if (vocab_size < 257)
        return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_train: vocab_size %d < 257 (256 bytes + <|endoftext|>)",
                         vocab_size);
    memset(&tr, 0, sizeof tr);
    memset(&vj, 0, sizeof vj);
    memset(&mt, 0, sizeof mt);
    mama__tt_bytelevel_init(&bl);
    s = mama__tx_slots_new(&tr.wslot, 1024);
    tr.wslot_cap = 1024;
    if (s == MAMA_OK) { s = mama__tx_slots_new(&tr.tslot, 1024); tr.tslot_cap = 1024; }
    /* ids 0..255: the bytes in GPT-2's order */
    for (i = 0; s == MAMA_OK && i < 256; i++) {
        char c = (char)bl.order[i];
        s = mama__trainer_token(&tr, &c, 1, &tr.byte_id[bl.order[i]]);
    }
    for (i = 0; s == MAMA_OK && i < n; i++) {
        if (!texts[i]) { s = MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_train: texts[%d] is NULL", i); break; }
        tr.s = MAMA_OK;
        mama__trainer_text(&tr, texts[i]);
        s = tr.s;
    }
    for (w = 0; w < tr.nw; w++) total += tr.wlen[w];
    if (s == MAMA_OK) s = mama_alloc((void **)&sym, (total ? total : 1) * sizeof(int), "trainer symbols");
    if (s == MAMA_OK) s = mama_alloc((void **)&soff, (tr.nw ? tr.nw : 1) * sizeof(size_t), "trainer symbols");
    if (s == MAMA_OK) s = mama_alloc((void **)&slen, (tr.nw ? tr.nw : 1) * sizeof(size_t), "trainer symbols");
    if (s == MAMA_OK) {
        size_t o = 0, j;
        for (w = 0; w < tr.nw; w++) {
            soff[w] = o;
            slen[w] = tr.wlen[w];
            for (j = 0; j < tr.wlen[w]; j++) sym[o++] = tr.byte_id[(unsigned char)tr.wbytes.data[tr.woff[w] + j]];
        }
        s = mama__trainer_merge(&tr, (size_t)vocab_size - 1, sym, soff, slen, total);
    }
    /* out of repeated pairs before the size is reached: fill the remaining
     * ids with placeholders that no merge produces, so that the vocabulary
     * (and so the model's embedding table) has exactly vocab_size rows */
    for (i = 0; s == MAMA_OK && tr.ntok < (size_t)vocab_size - 1; i++) {
        char name[48];
        int id;
        snprintf(name, sizeof name, "<|reserved_%d|>", i);
        s = mama__trainer_token(&tr, name, strlen(name), &id);
    }
    if (s == MAMA_OK) s = mama__trainer_write(&tr, (int)tr.ntok, &vj, &mt);
    if (s == MAMA_OK) {
        if (n_merges) *n_merges = (int)tr.nmerge;
        *vocab_json = vj.data; *vocab_len = vj.len;
        *merges_txt = mt.data; *merges_len = mt.len;
        memset(&vj, 0, sizeof vj);
        memset(&mt, 0, sizeof mt);
    }
    mama_buf_free(&vj);
    mama_buf_free(&mt);
    mama_free(sym); mama_free(soff); mama_free(slen);
    mama__trainer_free(&tr);
    return s;
}

MAMA_API mama_status mama_tokenizer_train(const char *const *texts, int n, int vocab_size, const char *out_dir,
                                          int *n_merges) {
    char *vj = NULL, *mt = NULL, *pv = NULL, *pm = NULL;
    size_t nv = 0, nm = 0;
    mama_status s;
    if (!out_dir) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_tokenizer_train: NULL out_dir");
    s = mama_tokenizer_train_memory(texts, n, vocab_size, &vj, &nv, &mt, &nm, n_merges);
    if (s == MAMA_OK) s = mama__tt_path_join(out_dir, "vocab.json", &pv);
    if (s == MAMA_OK) s = mama__tt_path_join(out_dir, "merges.txt", &pm);
    if (s == MAMA_OK) s = mama_write_file_atomic(pv, vj, nv);
    if (s == MAMA_OK) s = mama_write_file_atomic(pm, mt, nm);
    mama_free(vj); mama_free(mt); mama_free(pv); mama_free(pm);
    return s;
}

#ifdef __cplusplus
}
#endif
#endif /* MAMA_TOKENIZER_TRAIN_IMPLEMENTATION_DONE */
#endif /* MAMA_TOKENIZER_TRAIN_IMPLEMENTATION */
