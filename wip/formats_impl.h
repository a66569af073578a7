/* ==========================================================================
 * 7. FORMATS: JSON, text buffers, atomic files, half floats, safetensors,
 *    manifest CSV
 * ========================================================================== */

#include <locale.h>

#if defined(__unix__) || defined(__APPLE__)
#define MAMA__POSIX 1
#include <unistd.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/mman.h>
#endif

/* ---- 7.1 Text buffer ------------------------------------------------------ */

/* Grow to hold `need` bytes plus the NUL.  Doubling keeps appends O(1)
 * amortised; mama_alloc has no realloc, so we copy. */
static mama_status mama__buf_reserve(mama_buf *b, size_t need) {
    size_t cap;
    char *p;
    if (need < b->cap) return MAMA_OK;
    if (need >= SIZE_MAX / 2 - 64) return MAMA_FAIL(MAMA_ERR_NOMEM, "text buffer of %zu bytes overflows", need);
    cap = b->cap ? b->cap : 64;
    while (cap <= need) cap *= 2;
    MAMA_TRY(mama_alloc((void **)&p, cap, "text buffer"));
    if (b->len) memcpy(p, b->data, b->len);
    p[b->len] = 0;
    mama_free(b->data);
    b->data = p;
    b->cap = cap;
    return MAMA_OK;
}

MAMA_API mama_status mama_buf_append(mama_buf *b, const void *s, size_t n) {
    if (n > SIZE_MAX / 4 || b->len > SIZE_MAX / 4)
        return MAMA_FAIL(MAMA_ERR_NOMEM, "text buffer append of %zu bytes overflows", n);
    MAMA_TRY(mama__buf_reserve(b, b->len + n));
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
    return MAMA_OK;
}

MAMA_API mama_status mama_buf_puts(mama_buf *b, const char *s) { return mama_buf_append(b, s, strlen(s)); }

MAMA_API mama_status mama_buf_printf(mama_buf *b, const char *fmt, ...) {
    va_list ap;
    int n;
    char small[256];
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return MAMA_FAIL(MAMA_ERR_INVALID, "bad format string \"%s\"", fmt);
    if ((size_t)n < sizeof small) return mama_buf_append(b, small, (size_t)n);
    MAMA_TRY(mama__buf_reserve(b, b->len + (size_t)n));
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MAMA_OK;
}

MAMA_API void mama_buf_free(mama_buf *b) {
    mama_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one.
 * Rejects overlong forms, surrogates (U+D800..DFFF) and code points above
 * U+10FFFF, as RFC 3629 requires.  `n` bytes are available. */
static int mama__utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* > U+10FFFF */
        return 4;
    }
    return 0;
}

/* Escape into `b` (if non-NULL) and return the escaped length; one pass
 * serves both the growable and the fixed-size forms. */
static size_t mama__json_escape_to(mama_buf *b, const char *str, mama_status *st) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str), i = 0, total = 2;
    *st = MAMA_OK;
    if (b) *st = mama_buf_append(b, "\"", 1);
    while (i < n && *st == MAMA_OK) {
        char esc[8];
        const char *piece = esc;
        size_t plen;
        unsigned c = s[i];
        int ul;
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; plen = 2; i++; }
        else if (c == '\n') { piece = "\\n"; plen = 2; i++; }
        else if (c == '\r') { piece = "\\r"; plen = 2; i++; }
        else if (c == '\t') { piece = "\\t"; plen = 2; i++; }
        else if (c == '\b') { piece = "\\b"; plen = 2; i++; }
        else if (c == '\f') { piece = "\\f"; plen = 2; i++; }
        else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\'; esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15]; plen = 6; i++;
        } else if ((ul = mama__utf8_len(s + i, n - i)) > 0) {
            piece = (const char *)s + i; plen = (size_t)ul; i += (size_t)ul;
        } else {
            piece = "\xEF\xBF\xBD"; plen = 3; i++; /* U+FFFD for a bad byte */
        }
        total += plen;
        if (b) *st = mama_buf_append(b, piece, plen);
    }
    if (b && *st == MAMA_OK) *st = mama_buf_append(b, "\"", 1);
    return total;
}

MAMA_API mama_status mama_buf_json_string(mama_buf *b, const char *s) {
    mama_status st;
    size_t before = b->len;
    mama__json_escape_to(b, s, &st);
    if (st != MAMA_OK && b->data) { b->len = before; b->data[before] = 0; }
    return st;
}

MAMA_API mama_status mama_json_escape(const char *s, char *out, size_t cap) {
    mama_status st;
    mama_buf b = {NULL, 0, 0};
    size_t need = mama__json_escape_to(NULL, s, &st);
    if (cap) out[0] = 0;
    if (need + 1 > cap)
        return MAMA_FAIL(MAMA_ERR_INVALID, "escaped JSON string needs %zu bytes, buffer has %zu", need + 1, cap);
    MAMA_TRY(mama_buf_json_string(&b, s));
    memcpy(out, b.data, b.len + 1);
    mama_buf_free(&b);
    return MAMA_OK;
}

/* %.17g round-trips every double; try shorter precisions first so that 0.1
 * prints as 0.1.  printf follows the locale's decimal point, so a ',' is
 * turned back into '.'. */
MAMA_API mama_status mama_buf_json_number(mama_buf *b, double x) {
    char tmp[40];
    int prec;
    char *p;
    if (x != x || x > DBL_MAX || x < -DBL_MAX) return mama_buf_append(b, "null", 4);
    for (prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        for (p = tmp; *p; p++) if (*p == ',') *p = '.';
        if (strtod(tmp, NULL) == x) break; /* strtod also reads ',' only in such locales: see below */
    }
    /* In a ',' locale strtod stops at '.', so the loop may run to 17, which
     * is exact anyway. */
    return mama_buf_append(b, tmp, strlen(tmp));
}

/* ---- 7.2 JSON parser ------------------------------------------------------- */

typedef struct mama__json_parser {
    const char *s;      /* text */
    size_t n, i;        /* length, cursor */
    const char *name;   /* source name for messages */
    int depth;
} mama__json_parser;

/* Line and column (1-based, bytes) of offset `at`: computed only when an
 * error is reported, so parsing does not pay for it. */
static mama_status mama__json_error(const mama__json_parser *p, size_t at, const char *what) {
    size_t k, line = 1, col = 1;
    if (at > p->n) at = p->n;
    for (k = 0; k < at; k++) {
        if (p->s[k] == '\n') { line++; col = 1; } else col++;
    }
    if (at >= p->n)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu:%zu: %s (at end of input)", p->name, line, col, what);
    {
        unsigned char c = (unsigned char)p->s[at];
        if (c >= 0x20 && c < 0x7f)
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu:%zu: %s (found '%c')", p->name, line, col, what, c);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu:%zu: %s (found byte 0x%02x)", p->name, line, col, what, c);
    }
}

static void mama__json_ws(mama__json_parser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->i++;
        else break;
    }
}

/* Free what a node owns (not the node itself). */
static void mama__json_clear(mama_json *j) {
    size_t k;
    if (j->type == MAMA_JSON_STRING) mama_free(j->string);
    if (j->type == MAMA_JSON_ARRAY || j->type == MAMA_JSON_OBJECT) {
        for (k = 0; k < j->length; k++) {
            mama__json_clear(&j->children[k]);
            if (j->keys) mama_free(j->keys[k]);
        }
        mama_free(j->children);
        mama_free(j->keys);
    }
    memset(j, 0, sizeof *j);
}

MAMA_API void mama_json_free(mama_json *j) {
    if (!j) return;
    mama__json_clear(j);
    mama_free(j);
}

MAMA_API const mama_json *mama_json_get(const mama_json *object, const char *key) {
    size_t k;
    if (!object || object->type != MAMA_JSON_OBJECT || !key) return NULL;
    for (k = 0; k < object->length; k++)
        if (strcmp(object->keys[k], key) == 0) return &object->children[k];
    return NULL;
}

static int mama__hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    int k;
    for (k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t mama__utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

/* Parse a string at p->i (which is at the opening quote).  Two passes: the
 * first validates and measures, the second decodes into an exact buffer;
 * a decoded string is never longer than its source, so the measure is
 * the source span. */
static mama_status mama__json_string(mama__json_parser *p, char **out, size_t *out_len) {
    size_t start = ++p->i, k, o = 0, end;
    char *buf;
    const unsigned char *s = (const unsigned char *)p->s;
    *out = NULL;
    for (k = start;; ) {
        unsigned c;
        if (k >= p->n) return mama__json_error(p, start - 1, "unterminated string");
        c = s[k];
        if (c == '"') break;
        if (c < 0x20) return mama__json_error(p, k, "control character in string (must be escaped)");
        if (c == '\\') {
            unsigned cp;
            if (k + 1 >= p->n) return mama__json_error(p, start - 1, "unterminated string");
            c = s[k + 1];
            if (c == 'u') {
                if (k + 6 > p->n || !mama__hex4(p->s + k + 2, &cp))
                    return mama__json_error(p, k, "bad \\u escape (needs 4 hex digits)");
                if (cp >= 0xDC00 && cp <= 0xDFFF) return mama__json_error(p, k, "lone low surrogate in \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (k + 12 > p->n || s[k + 6] != '\\' || s[k + 7] != 'u' || !mama__hex4(p->s + k + 8, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return mama__json_error(p, k, "high surrogate not followed by a low surrogate \\u escape");
                    k += 12;
                } else {
                    k += 6;
                }
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
                k += 2;
            } else {
                return mama__json_error(p, k, "invalid escape in string");
            }
        } else {
            int ul = mama__utf8_len(s + k, p->n - k);
            if (!ul) return mama__json_error(p, k, "invalid UTF-8 in string");
            k += (size_t)ul;
        }
    }
    end = k;
    MAMA_TRY(mama_alloc((void **)&buf, end - start + 1, "JSON string"));
    for (k = start; k < end; ) {
        unsigned c = s[k];
        if (c != '\\') { buf[o++] = (char)c; k++; continue; }
        c = s[k + 1];
        switch (c) {
        case 'b': buf[o++] = '\b'; k += 2; break;
        case 'f': buf[o++] = '\f'; k += 2; break;
        case 'n': buf[o++] = '\n'; k += 2; break;
        case 'r': buf[o++] = '\r'; k += 2; break;
        case 't': buf[o++] = '\t'; k += 2; break;
        case 'u': {
            unsigned cp, lo;
            mama__hex4(p->s + k + 2, &cp);
            k += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                mama__hex4(p->s + k + 2, &lo);
                k += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            o += mama__utf8_put(buf + o, cp);
            break;
        }
        default: buf[o++] = (char)c; k += 2; break; /* " \ / */
        }
    }
    buf[o] = 0;
    p->i = end + 1;
    *out = buf;
    *out_len = o;
    return MAMA_OK;
}

/* Number grammar of RFC 8259: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
 * Validated by hand; the value comes from strtod on a copy with the '.'
 * replaced by the locale's decimal point (strtod is locale-dependent). */
static mama_status mama__json_number(mama__json_parser *p, double *out) {
    size_t start = p->i, k = p->i, len;
    const char *s = p->s;
    char tmp[64], *heap = NULL, *txt, *endp;
    const char *dp;
    double v;
    if (k < p->n && s[k] == '-') k++;
    if (k >= p->n || !(s[k] >= '0' && s[k] <= '9')) return mama__json_error(p, k, "expected a digit");
    if (s[k] == '0') {
        k++;
        if (k < p->n && s[k] >= '0' && s[k] <= '9') return mama__json_error(p, k, "leading zero in number");
    } else {
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    if (k < p->n && s[k] == '.') {
        k++;
        if (k >= p->n || !(s[k] >= '0' && s[k] <= '9')) return mama__json_error(p, k, "expected a digit after '.'");
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    if (k < p->n && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < p->n && (s[k] == '+' || s[k] == '-')) k++;
        if (k >= p->n || !(s[k] >= '0' && s[k] <= '9')) return mama__json_error(p, k, "expected a digit in exponent");
        while (k < p->n && s[k] >= '0' && s[k] <= '9') k++;
    }
    len = k - start;
    if (len < sizeof tmp) txt = tmp;
    else { MAMA_TRY(mama_alloc((void **)&heap, len + 1, "JSON number")); txt = heap; }
    memcpy(txt, s + start, len);
    txt[len] = 0;
    dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
        char *q = strchr(txt, '.');
        if (q) *q = dp[0];
    }
    errno = 0;
    v = strtod(txt, &endp);
    mama_free(heap);
    if (v > DBL_MAX || v < -DBL_MAX) return mama__json_error(p, start, "number out of range for a double");
    *out = v;
    p->i = k;
    return MAMA_OK;
}

static mama_status mama__json_value(mama__json_parser *p, mama_json *out);

/* Collect children in a doubling scratch array, then keep it (exact size is
 * not worth a second copy). */
static mama_status mama__json_grow(mama_json **ch, char ***keys, size_t *cap, size_t len, int with_keys) {
    size_t ncap;
    mama_json *nc;
    char **nk = NULL;
    if (len < *cap) return MAMA_OK;
    ncap = *cap ? *cap * 2 : 4;
    if (ncap > SIZE_MAX / sizeof(mama_json)) return MAMA_FAIL(MAMA_ERR_NOMEM, "JSON container too large");
    MAMA_TRY(mama_alloc((void **)&nc, ncap * sizeof(mama_json), "JSON children"));
    if (with_keys) {
        mama_status st = mama_alloc((void **)&nk, ncap * sizeof(char *), "JSON keys");
        if (st != MAMA_OK) { mama_free(nc); return st; }
        if (len) memcpy(nk, *keys, len * sizeof(char *));
        mama_free(*keys);
        *keys = nk;
    }
    if (len) memcpy(nc, *ch, len * sizeof(mama_json));
    mama_free(*ch);
    *ch = nc;
    *cap = ncap;
    return MAMA_OK;
}

static mama_status mama__json_container(mama__json_parser *p, mama_json *out, int is_object) {
    size_t cap = 0, open = p->i;
    mama_status st = MAMA_OK;
    char close = is_object ? '}' : ']';
    out->type = is_object ? MAMA_JSON_OBJECT : MAMA_JSON_ARRAY;
    out->length = 0;
    if (++p->depth > MAMA_JSON_MAX_DEPTH) return mama__json_error(p, open, "nesting deeper than MAMA_JSON_MAX_DEPTH (512) levels");
    p->i++;
    mama__json_ws(p);
    if (p->i < p->n && p->s[p->i] == close) { p->i++; p->depth--; return MAMA_OK; }
    for (;;) {
        char *key = NULL;
        size_t klen;
        mama__json_ws(p);
        if (is_object) {
            if (p->i >= p->n || p->s[p->i] != '"') { st = mama__json_error(p, p->i, "expected a string key"); break; }
            if ((st = mama__json_string(p, &key, &klen)) != MAMA_OK) break;
            mama__json_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { mama_free(key); st = mama__json_error(p, p->i, "expected ':' after key"); break; }
            p->i++;
            mama__json_ws(p);
        }
        if ((st = mama__json_grow(&out->children, &out->keys, &cap, out->length, is_object)) != MAMA_OK) { mama_free(key); break; }
        memset(&out->children[out->length], 0, sizeof(mama_json));
        if (is_object) out->keys[out->length] = key;
        out->length++; /* counted now so that cleanup frees the key */
        if ((st = mama__json_value(p, &out->children[out->length - 1])) != MAMA_OK) break;
        mama__json_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == close) { p->i++; break; }
        st = mama__json_error(p, p->i, is_object ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
        break;
    }
    p->depth--;
    return st;
}

static int mama__json_lit(mama__json_parser *p, const char *lit) {
    size_t l = strlen(lit);
    if (p->n - p->i >= l && memcmp(p->s + p->i, lit, l) == 0) { p->i += l; return 1; }
    return 0;
}

/* On failure `out` may be partly built; the caller clears it. */
static mama_status mama__json_value(mama__json_parser *p, mama_json *out) {
    char c;
    mama__json_ws(p);
    if (p->i >= p->n) return mama__json_error(p, p->i, "expected a value");
    c = p->s[p->i];
    switch (c) {
    case '{': return mama__json_container(p, out, 1);
    case '[': return mama__json_container(p, out, 0);
    case '"':
        out->type = MAMA_JSON_STRING;
        return mama__json_string(p, &out->string, &out->length);
    case 't':
        if (mama__json_lit(p, "true")) { out->type = MAMA_JSON_BOOL; out->number = 1; return MAMA_OK; }
        break;
    case 'f':
        if (mama__json_lit(p, "false")) { out->type = MAMA_JSON_BOOL; out->number = 0; return MAMA_OK; }
        break;
    case 'n':
        if (mama__json_lit(p, "null")) { out->type = MAMA_JSON_NULL; return MAMA_OK; }
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            out->type = MAMA_JSON_NUMBER;
            return mama__json_number(p, &out->number);
        }
    }
    return mama__json_error(p, p->i, "expected a value");
}

MAMA_API mama_status mama_json_parse(const char *text, size_t len, const char *source_name, mama_json **out) {
    mama__json_parser p;
    mama_json *root;
    mama_status st;
    *out = NULL;
    p.s = text ? text : "";
    p.n = text ? len : 0;
    p.i = 0;
    p.name = source_name ? source_name : "<json>";
    p.depth = 0;
    MAMA_TRY(mama_calloc((void **)&root, sizeof *root, "JSON root"));
    st = mama__json_value(&p, root);
    if (st == MAMA_OK) {
        mama__json_ws(&p);
        if (p.i != p.n) st = mama__json_error(&p, p.i, "unexpected text after the JSON value");
    }
    if (st != MAMA_OK) { mama_json_free(root); return st; }
    *out = root;
    return MAMA_OK;
}

/* ---- 7.3 Files ------------------------------------------------------------ */

static mama_status mama__strdup(char **out, const char *s, const char *what) {
    size_t n = strlen(s);
    MAMA_TRY(mama_alloc((void **)out, n + 1, what));
    memcpy(*out, s, n + 1);
    return MAMA_OK;
}

/* Reads in a loop rather than trusting ftell alone, so pipes and files
 * whose size is not known in advance (/proc, FIFOs) work too; the size
 * from ftell is only the first guess for the buffer. */
MAMA_API mama_status mama_read_file(const char *path, unsigned char **data, size_t *size) {
    FILE *f;
    long end;
    size_t cap = 4096, len = 0;
    unsigned char *buf;
    *data = NULL;
    *size = 0;
#ifdef MAMA__POSIX
    {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return MAMA_FAIL(MAMA_ERR_IO, "%s: is a directory, not a file", path);
    }
#endif
    f = fopen(path, "rb");
    if (!f) return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) == 0 && (end = ftell(f)) >= 0 && (unsigned long)end < ((unsigned long)1 << 30) * 64) {
        if (fseek(f, 0, SEEK_SET) != 0) { fclose(f); return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot seek", path); }
        if ((size_t)end + 1 > cap) cap = (size_t)end + 1;
    } else {
        clearerr(f);
        rewind(f);
    }
    if (mama_alloc((void **)&buf, cap, path) != MAMA_OK) { fclose(f); return MAMA_ERR_NOMEM; }
    for (;;) {
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (len < cap - 1) {
            if (ferror(f)) {
                mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: read failed after %zu bytes: %s", path, len, strerror(errno));
                fclose(f);
                mama_free(buf);
                return st;
            }
            if (feof(f)) break;
            continue;
        }
        {
            /* full: the file grew or the size was unknown; double */
            unsigned char *nb;
            if (cap > SIZE_MAX / 2) { fclose(f); mama_free(buf); return MAMA_FAIL(MAMA_ERR_NOMEM, "%s: file too large", path); }
            if (mama_alloc((void **)&nb, cap * 2, path) != MAMA_OK) { fclose(f); mama_free(buf); return MAMA_ERR_NOMEM; }
            memcpy(nb, buf, len);
            mama_free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    buf[len] = 0;
    *data = buf;
    *size = len;
    return MAMA_OK;
}

static void mama__atomic_release(mama_atomic_file *af) {
    mama_free(af->path);
    mama_free(af->tmp_path);
    memset(af, 0, sizeof *af);
    af->fd = -1;
}

/* POSIX: raw descriptors (open/write/fsync/close from <unistd.h>), which
 * needs no feature macros even under -std=c99, unlike fdopen/fileno.
 * Elsewhere: stdio, without fsync. */
MAMA_API mama_status mama_atomic_open(mama_atomic_file *af, const char *path) {
    /* The temporary name carries the pid and a per-process counter so that
     * concurrent writers (threads or processes) never share one; creation
     * is exclusive, so a clash only costs a retry. */
    static unsigned long counter = 0;
    unsigned long pid = 0, k;
    size_t n = strlen(path) + 64;
    int attempt, opened = 0;
    memset(af, 0, sizeof *af);
    af->fd = -1;
#ifdef MAMA__POSIX
    pid = (unsigned long)getpid();
#endif
    MAMA_TRY(mama__strdup(&af->path, path, "atomic file path"));
    if (mama_alloc((void **)&af->tmp_path, n, "atomic temp path") != MAMA_OK) { mama__atomic_release(af); return MAMA_ERR_NOMEM; }
    for (attempt = 0; attempt < 100 && !opened; attempt++) {
#ifdef _OPENMP
#pragma omp atomic capture
#endif
        k = counter++;
        snprintf(af->tmp_path, n, "%s.tmp.%lu.%lu", path, pid, k);
#ifdef MAMA__POSIX
        /* O_EXCL: never clobber (or follow a symlink to) an existing file */
        af->fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (af->fd >= 0) opened = 1;
        else if (errno != EEXIST) break;
#else
        {
            FILE *probe = fopen(af->tmp_path, "rb");
            if (probe) { fclose(probe); continue; }
            af->fp = fopen(af->tmp_path, "wb");
            if (!af->fp) break;
            opened = 1;
        }
#endif
    }
    if (!opened) {
        mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: cannot create temporary file %s: %s", path, af->tmp_path, strerror(errno));
        mama__atomic_release(af);
        return st;
    }
    return MAMA_OK;
}

MAMA_API mama_status mama_atomic_write(mama_atomic_file *af, const void *data, size_t n) {
    if (!af->path) return MAMA_FAIL(MAMA_ERR_INVALID, "atomic write on a closed file");
    if (af->failed) return MAMA_FAIL(MAMA_ERR_IO, "%s: an earlier write failed", af->path);
#ifdef MAMA__POSIX
    {
        const char *p = (const char *)data;
        while (n > 0) {
            size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
            ssize_t w = write(af->fd, p, chunk);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                af->failed = 1;
                return MAMA_FAIL(MAMA_ERR_IO, "%s: write to %s failed: %s", af->path, af->tmp_path,
                                 w < 0 ? strerror(errno) : "no progress");
            }
            p += w;
            n -= (size_t)w;
        }
    }
#else
    if (n && fwrite(data, 1, n, (FILE *)af->fp) != n) {
        af->failed = 1;
        return MAMA_FAIL(MAMA_ERR_IO, "%s: write of %zu bytes to %s failed: %s", af->path, n, af->tmp_path, strerror(errno));
    }
#endif
    return MAMA_OK;
}

MAMA_API void mama_atomic_abort(mama_atomic_file *af) {
    if (af->path) {
#ifdef MAMA__POSIX
        if (af->fd >= 0) close(af->fd);
#else
        if (af->fp) fclose((FILE *)af->fp);
#endif
        remove(af->tmp_path);
    }
    mama__atomic_release(af);
}

#ifdef MAMA__POSIX
/* After rename the new directory entry must reach the disk too, or a crash
 * can bring back the old name.  Best effort: some filesystems refuse. */
static void mama__fsync_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd;
    if (!slash) { dir[0] = '.'; dir[1] = 0; }
    else if (slash == path) { dir[0] = '/'; dir[1] = 0; }
    else {
        size_t l = (size_t)(slash - path);
        if (l >= sizeof dir) return;
        memcpy(dir, path, l);
        dir[l] = 0;
    }
    fd = open(dir, O_RDONLY);
    if (fd >= 0) { (void)fsync(fd); close(fd); }
}
#endif

MAMA_API mama_status mama_atomic_commit(mama_atomic_file *af) {
    int bad;
    if (!af->path) return MAMA_FAIL(MAMA_ERR_INVALID, "atomic commit on a closed file");
    bad = af->failed;
#ifdef MAMA__POSIX
    /* fsync before rename: otherwise the rename can reach the disk before
     * the data, and a crash leaves an empty file under the final name */
    if (!bad && fsync(af->fd) != 0) bad = 1;
    if (close(af->fd) != 0) bad = 1;
    af->fd = -1;
#else
    if (fflush((FILE *)af->fp) != 0 || ferror((FILE *)af->fp)) bad = 1;
    if (fclose((FILE *)af->fp) != 0) bad = 1;
    af->fp = NULL;
#endif
    if (bad) {
        mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: writing %s failed: %s", af->path, af->tmp_path, strerror(errno));
        remove(af->tmp_path);
        mama__atomic_release(af);
        return st;
    }
#ifndef MAMA__POSIX
    remove(af->path); /* rename() does not replace on Windows */
#endif
    if (rename(af->tmp_path, af->path) != 0) {
        mama_status st = MAMA_FAIL(MAMA_ERR_IO, "%s: cannot rename %s into place: %s", af->path, af->tmp_path, strerror(errno));
        remove(af->tmp_path);
        mama__atomic_release(af);
        return st;
    }
#ifdef MAMA__POSIX
    mama__fsync_dir(af->path);
#endif
    mama__atomic_release(af);
    return MAMA_OK;
}

MAMA_API mama_status mama_write_file_atomic(const char *path, const void *data, size_t n) {
    mama_atomic_file af;
    mama_status st;
    MAMA_TRY(mama_atomic_open(&af, path));
    st = mama_atomic_write(&af, data, n);
    if (st != MAMA_OK) { mama_atomic_abort(&af); return st; }
    return mama_atomic_commit(&af);
}

/* ---- 7.4 Half precision ---------------------------------------------------
 * binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.  bfloat16: the
 * top 16 bits of a float32 (8 exponent bits, 7 mantissa), so widening is a
 * shift and narrowing is rounding away the low 16 bits. */

static float mama__f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t mama__f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

MAMA_API float mama_bf16_to_f32(uint16_t h) { return mama__f32_from_bits((uint32_t)h << 16); }

MAMA_API uint16_t mama_f32_to_bf16(float f) {
    uint32_t u = mama__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN: keep it quiet */
    /* round to nearest even: add 0x7fff plus the lowest kept bit, truncate */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

MAMA_API float mama_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return mama__f32_from_bits(sign | 0x7f800000u | (man << 13)); /* Inf / NaN */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return mama__f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

MAMA_API uint16_t mama_f32_to_f16(float f) {
    uint32_t u = mama__f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to Inf */
    if (a < 0x38800000u) {
        /* below the smallest normal 2^-14: result is subnormal, value/2^-24
         * rounded to nearest even.  a < 2^-25 rounds to zero. */
        uint32_t man, shift, r, half, rem;
        if (a < 0x33000000u) return (uint16_t)sign;
        man = (a & 0x7fffffu) | 0x800000u;
        shift = 126u - (a >> 23); /* 14..24: bits to drop to reach units of 2^-24 */
        r = man >> shift;
        rem = man & ((1u << shift) - 1u);
        half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    /* normal: rebias exponent (127 -> 15), round the 13 dropped bits to even;
     * a carry into the exponent is the correct rounding up. */
    a += 0x0fffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
}

/* ---- 7.5 safetensors ------------------------------------------------------- */

static const char *const mama__dtype_names[] = {"F32", "F16", "BF16", "I32", "I64", "U8", "F64", "I8", "I16", "BOOL"};
static const size_t mama__dtype_sizes[] = {4, 2, 2, 4, 8, 1, 8, 1, 2, 1};
#define MAMA__NDTYPES 10

MAMA_API size_t mama_dtype_size(mama_dtype dt) {
    return ((unsigned)dt < MAMA__NDTYPES) ? mama__dtype_sizes[dt] : 0;
}
MAMA_API const char *mama_dtype_name(mama_dtype dt) {
    return ((unsigned)dt < MAMA__NDTYPES) ? mama__dtype_names[dt] : "?";
}
MAMA_API int mama_dtype_parse(const char *name, mama_dtype *dt) {
    int k;
    for (k = 0; k < MAMA__NDTYPES; k++)
        if (strcmp(name, mama__dtype_names[k]) == 0) { *dt = (mama_dtype)k; return 0; }
    return -1;
}

/* Little-endian loads that work on any host and any alignment; compilers
 * turn them into single moves on x86. */
static uint16_t mama__le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t mama__le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t mama__le64(const unsigned char *p) { return (uint64_t)mama__le32(p) | ((uint64_t)mama__le32(p + 4) << 32); }
static int mama__host_is_le(void) { const uint16_t one = 1; unsigned char b; memcpy(&b, &one, 1); return b == 1; }

static MAMA_THREAD_LOCAL const mama_safetensors *mama__st_sort_ctx; /* qsort has no context argument */
static int mama__st_cmp_name(const void *a, const void *b) {
    const mama_st_tensor *t = mama__st_sort_ctx->tensors;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}
static int mama__st_cmp_offset(const void *a, const void *b) {
    const mama_st_tensor *t = mama__st_sort_ctx->tensors;
    size_t x = t[*(const int *)a].offset, y = t[*(const int *)b].offset;
    size_t xe = x + t[*(const int *)a].nbytes, ye = y + t[*(const int *)b].nbytes;
    if (x != y) return x < y ? -1 : 1;
    if (xe != ye) return xe < ye ? -1 : 1;
    return 0;
}

MAMA_API void mama_st_close(mama_safetensors *st) {
    int k;
    if (!st) return;
    for (k = 0; k < st->count; k++) mama_free(st->tensors[k].name);
    for (k = 0; k < st->meta_count; k++) { mama_free(st->meta_keys[k]); mama_free(st->meta_values[k]); }
    mama_free(st->tensors);
    mama_free(st->meta_keys);
    mama_free(st->meta_values);
    mama_free(st->sorted_);
    if (st->storage_ == 1) mama_free(st->data);
#ifdef MAMA__POSIX
    if (st->storage_ == 2 && st->data) munmap(st->data, st->size);
#endif
    mama_free(st->path);
    memset(st, 0, sizeof *st);
}

/* A JSON number that is a non-negative integer exactly representable
 * (<= 2^53), as size_t; 0 on failure. */
static int mama__json_uint(const mama_json *j, uint64_t *out) {
    if (!j || j->type != MAMA_JSON_NUMBER) return 0;
    if (!(j->number >= 0) || j->number > 9007199254740992.0 || j->number != floor(j->number)) return 0;
    *out = (uint64_t)j->number;
    return 1;
}

/* Parse one tensor entry of the header into t (name already set). */
static mama_status mama__st_entry(const mama_safetensors *st, const char *name, const mama_json *e,
                                  size_t data_size, mama_st_tensor *t) {
    const mama_json *dt = mama_json_get(e, "dtype"), *shape = mama_json_get(e, "shape"),
                    *offs = mama_json_get(e, "data_offsets");
    size_t k, elem;
    uint64_t numel = 1, begin, end;
    if (e->type != MAMA_JSON_OBJECT)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": header entry is not an object", st->path, name);
    if (!dt || dt->type != MAMA_JSON_STRING)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": missing \"dtype\" string", st->path, name);
    if (mama_dtype_parse(dt->string, &t->dtype) != 0)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": unsupported dtype \"%.32s\"", st->path, name, dt->string);
    if (!shape || shape->type != MAMA_JSON_ARRAY)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": missing \"shape\" array", st->path, name);
    if (shape->length > MAMA_ST_MAX_DIMS)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": %zu dimensions (at most %d supported)", st->path, name,
                         shape->length, MAMA_ST_MAX_DIMS);
    t->ndim = (int)shape->length;
    for (k = 0; k < shape->length; k++) {
        uint64_t d;
        if (!mama__json_uint(&shape->children[k], &d))
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": shape[%zu] is not a non-negative integer", st->path, name, k);
        t->shape[k] = (int64_t)d;
        /* overflow-safe product: numel * d <= data size, else it cannot fit */
        if (d && numel > (uint64_t)data_size / d)
            return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": shape has more elements than the file holds bytes", st->path, name);
        numel *= d;
    }
    if (!offs || offs->type != MAMA_JSON_ARRAY || offs->length != 2 || !mama__json_uint(&offs->children[0], &begin) ||
        !mama__json_uint(&offs->children[1], &end))
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": \"data_offsets\" must be [begin, end] integers", st->path, name);
    if (begin > end)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": data_offsets begin %llu > end %llu", st->path, name,
                         (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": data_offsets end %llu is past the data section (%zu bytes; file truncated?)",
                         st->path, name, (unsigned long long)end, data_size);
    elem = mama__dtype_sizes[t->dtype];
    if (numel * elem != end - begin)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": %s shape holds %llu bytes but data_offsets span %llu", st->path,
                         name, mama__dtype_names[t->dtype], (unsigned long long)(numel * elem),
                         (unsigned long long)(end - begin));
    t->numel = (size_t)numel;
    t->offset = (size_t)begin;
    t->nbytes = (size_t)(end - begin);
    return MAMA_OK;
}

/* Parse the header of st->data[0..size) (path, data, size already set). */
static mama_status mama__st_parse(mama_safetensors *st) {
    uint64_t hlen;
    size_t data_size, k, nt = 0, expect;
    mama_json *root = NULL;
    const mama_json *meta;
    mama_status s = MAMA_OK;
    if (st->size < 8)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file (needs 8-byte header length)", st->path, st->size);
    hlen = mama__le64(st->data);
    /* the reference refuses headers over 100 MB: a garbage length would
     * otherwise make us try to parse gigabytes */
    if (hlen > 100000000u)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header length %llu exceeds the 100,000,000-byte limit (not a safetensors file?)",
                         st->path, (unsigned long long)hlen);
    if (hlen > st->size - 8)
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header length %llu but the file has only %zu bytes after it (truncated?)",
                         st->path, (unsigned long long)hlen, st->size - 8);
    if (hlen < 2 || st->data[8] != '{')
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header does not start with '{' (not a safetensors file?)", st->path);
    st->data_start = 8 + (size_t)hlen;
    data_size = st->size - st->data_start;
    MAMA_TRY(mama_json_parse((const char *)st->data + 8, (size_t)hlen, st->path, &root));
    if (root->type != MAMA_JSON_OBJECT) { mama_json_free(root); return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: header is not a JSON object", st->path); }
    meta = mama_json_get(root, "__metadata__");
    for (k = 0; k < root->length; k++) if (strcmp(root->keys[k], "__metadata__") != 0) nt++;
    if (meta && root->length - nt > 1) {
        mama_json_free(root);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ appears twice in the header", st->path);
    }
    if (nt > (size_t)INT_MAX / 2 || (meta && meta->length > (size_t)INT_MAX / 2)) {
        mama_json_free(root);
        return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: too many header entries", st->path);
    }
    if ((s = mama_calloc((void **)&st->tensors, (nt ? nt : 1) * sizeof(mama_st_tensor), "safetensors tensors")) != MAMA_OK) goto done;
    if ((s = mama_calloc((void **)&st->sorted_, (nt ? nt : 1) * sizeof(int), "safetensors index")) != MAMA_OK) goto done;
    if (meta) {
        size_t m = meta->length ? meta->length : 1;
        if (meta->type != MAMA_JSON_OBJECT) { s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ is not an object", st->path); goto done; }
        if ((s = mama_calloc((void **)&st->meta_keys, m * sizeof(char *), "safetensors metadata")) != MAMA_OK) goto done;
        if ((s = mama_calloc((void **)&st->meta_values, m * sizeof(char *), "safetensors metadata")) != MAMA_OK) goto done;
        for (k = 0; k < meta->length; k++) {
            const mama_json *v = &meta->children[k];
            if (v->type != MAMA_JSON_STRING) {
                s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ \"%s\" is not a string", st->path, meta->keys[k]);
                goto done;
            }
            if ((s = mama__strdup(&st->meta_keys[k], meta->keys[k], "metadata key")) != MAMA_OK) goto done;
            st->meta_count = (int)k + 1;
            if ((s = mama__strdup(&st->meta_values[k], v->string, "metadata value")) != MAMA_OK) goto done;
        }
    }
    for (k = 0; k < root->length; k++) {
        mama_st_tensor *t;
        if (strcmp(root->keys[k], "__metadata__") == 0) continue;
        t = &st->tensors[st->count];
        if ((s = mama__strdup(&t->name, root->keys[k], "tensor name")) != MAMA_OK) goto done;
        st->sorted_[st->count] = st->count;
        st->count++;
        if ((s = mama__st_entry(st, root->keys[k], &root->children[k], data_size, t)) != MAMA_OK) goto done;
    }
    /* Tiling check: sorted by offset, each tensor starts where the previous
     * ended and the last ends at the end of the file. */
    mama__st_sort_ctx = st;
    qsort(st->sorted_, (size_t)st->count, sizeof(int), mama__st_cmp_offset);
    expect = 0;
    for (k = 0; k < (size_t)st->count; k++) {
        const mama_st_tensor *t = &st->tensors[st->sorted_[k]];
        if (t->offset != expect) {
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\": data_offsets begin %zu, expected %zu (%s)", st->path, t->name,
                          t->offset, expect, t->offset < expect ? "overlaps the previous tensor" : "gap before it");
            goto done;
        }
        expect = t->offset + t->nbytes;
    }
    if (expect != data_size) {
        s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensors cover %zu bytes of a %zu-byte data section (trailing bytes)", st->path,
                      expect, data_size);
        goto done;
    }
    for (k = 0; k < (size_t)st->count; k++) st->sorted_[k] = (int)k;
    qsort(st->sorted_, (size_t)st->count, sizeof(int), mama__st_cmp_name);
    for (k = 1; k < (size_t)st->count; k++)
        if (strcmp(st->tensors[st->sorted_[k - 1]].name, st->tensors[st->sorted_[k]].name) == 0) {
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: tensor \"%s\" appears twice in the header", st->path, st->tensors[st->sorted_[k]].name);
            goto done;
        }
    for (k = 0; k < (size_t)st->meta_count; k++) {
        size_t q;
        for (q = 0; q < k; q++)
            if (strcmp(st->meta_keys[q], st->meta_keys[k]) == 0) {
                s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: __metadata__ key \"%s\" appears twice", st->path, st->meta_keys[k]);
                goto done;
            }
    }
done:
    mama_json_free(root);
    return s;
}

MAMA_API mama_status mama_st_open_memory(mama_safetensors *st, const void *data, size_t size, const char *name) {
    mama_status s;
    memset(st, 0, sizeof *st);
    MAMA_TRY(mama__strdup(&st->path, name ? name : "<memory>", "safetensors name"));
    st->data = (unsigned char *)data;
    st->size = size;
    st->storage_ = 0;
    s = mama__st_parse(st);
    if (s != MAMA_OK) mama_st_close(st);
    return s;
}

MAMA_API mama_status mama_st_open(mama_safetensors *st, const char *path) {
    mama_status s;
    memset(st, 0, sizeof *st);
    MAMA_TRY(mama__strdup(&st->path, path, "safetensors path"));
#ifdef MAMA__POSIX
    {
        /* mmap: weights are paged in on first touch and shared with the
         * page cache, so a 5 GB checkpoint costs no copy. */
        int fd = open(path, O_RDONLY);
        struct stat sb;
        if (fd < 0) {
            s = MAMA_FAIL(MAMA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
            mama_st_close(st);
            return s;
        }
        if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 && (uint64_t)sb.st_size <= (uint64_t)SIZE_MAX) {
            void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (m != MAP_FAILED) {
                st->data = (unsigned char *)m;
                st->size = (size_t)sb.st_size;
                st->storage_ = 2;
            }
        }
        close(fd);
    }
#endif
    if (!st->data) {
        s = mama_read_file(path, &st->data, &st->size);
        if (s != MAMA_OK) { mama_st_close(st); return s; }
        st->storage_ = 1;
    }
    s = mama__st_parse(st);
    if (s != MAMA_OK) mama_st_close(st);
    return s;
}

MAMA_API const mama_st_tensor *mama_st_find(const mama_safetensors *st, const char *name) {
    int lo = 0, hi = st->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const mama_st_tensor *t = &st->tensors[st->sorted_[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

MAMA_API const char *mama_st_meta(const mama_safetensors *st, const char *key) {
    int k;
    for (k = 0; k < st->meta_count; k++)
        if (strcmp(st->meta_keys[k], key) == 0) return st->meta_values[k];
    return NULL;
}

MAMA_API const void *mama_st_data(const mama_safetensors *st, const mama_st_tensor *t) {
    return st->data + st->data_start + t->offset;
}

static mama_status mama__st_lookup(const mama_safetensors *st, const char *name, size_t count, const mama_st_tensor **out) {
    const mama_st_tensor *t = mama_st_find(st, name);
    *out = t;
    if (!t) return MAMA_FAIL(MAMA_ERR_INVALID, "%s: no tensor \"%s\"", st->path, name);
    if (t->numel != count)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has %zu elements, caller expects %zu", st->path, name, t->numel, count);
    return MAMA_OK;
}

MAMA_API mama_status mama_st_read_f32(const mama_safetensors *st, const char *name, float *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    p = (const unsigned char *)mama_st_data(st, t);
    switch (t->dtype) {
    case MAMA_F32:
        if (mama__host_is_le()) { if (count) memcpy(dst, p, count * 4); }
        else for (i = 0; i < count; i++) dst[i] = mama__f32_from_bits(mama__le32(p + 4 * i));
        return MAMA_OK;
    case MAMA_F16:
    case MAMA_BF16: {
        /* widening a multi-GB half-precision checkpoint is memory-bound but
         * still worth a few threads; small tensors stay serial */
        long long j, n = (long long)count;
        int bf = t->dtype == MAMA_BF16;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n > (1 << 20))
#endif
        for (j = 0; j < n; j++) {
            uint16_t h = mama__le16(p + 2 * j);
            dst[j] = bf ? mama_bf16_to_f32(h) : mama_f16_to_f32(h);
        }
        return MAMA_OK;
    }
    case MAMA_F64:
        for (i = 0; i < count; i++) { uint64_t u = mama__le64(p + 8 * i); double d; memcpy(&d, &u, 8); dst[i] = (float)d; }
        return MAMA_OK;
    default:
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not a float type", st->path, name, mama_dtype_name(t->dtype));
    }
}

MAMA_API mama_status mama_st_read_bf16(const mama_safetensors *st, const char *name, uint16_t *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    p = (const unsigned char *)mama_st_data(st, t);
    if (t->dtype == MAMA_BF16) {
        for (i = 0; i < count; i++) dst[i] = mama__le16(p + 2 * i);
        return MAMA_OK;
    }
    if (t->dtype != MAMA_F32 && t->dtype != MAMA_F16 && t->dtype != MAMA_F64)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not a float type", st->path, name, mama_dtype_name(t->dtype));
    for (i = 0; i < count; i++) {
        float f;
        if (t->dtype == MAMA_F32) f = mama__f32_from_bits(mama__le32(p + 4 * i));
        else if (t->dtype == MAMA_F16) f = mama_f16_to_f32(mama__le16(p + 2 * i));
        else { uint64_t u = mama__le64(p + 8 * i); double d; memcpy(&d, &u, 8); f = (float)d; }
        dst[i] = mama_f32_to_bf16(f);
    }
    return MAMA_OK;
}

/* Element i of an integer tensor as int64 (0 for non-integer dtypes). */
static int64_t mama__st_int_at(mama_dtype dt, const unsigned char *p, size_t i) {
    switch (dt) {
    case MAMA_I64: return (int64_t)mama__le64(p + 8 * i);
    case MAMA_I32: return (int32_t)mama__le32(p + 4 * i);
    case MAMA_I16: return (int16_t)mama__le16(p + 2 * i);
    case MAMA_I8: return (signed char)p[i];
    case MAMA_U8: case MAMA_BOOL: return p[i];
    default: return 0;
    }
}
static int mama__dtype_is_int(mama_dtype dt) {
    return dt == MAMA_I64 || dt == MAMA_I32 || dt == MAMA_I16 || dt == MAMA_I8 || dt == MAMA_U8 || dt == MAMA_BOOL;
}

MAMA_API mama_status mama_st_read_i64(const mama_safetensors *st, const char *name, int64_t *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    if (!mama__dtype_is_int(t->dtype))
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not an integer type", st->path, name, mama_dtype_name(t->dtype));
    p = (const unsigned char *)mama_st_data(st, t);
    for (i = 0; i < count; i++) dst[i] = mama__st_int_at(t->dtype, p, i);
    return MAMA_OK;
}

MAMA_API mama_status mama_st_read_i32(const mama_safetensors *st, const char *name, int32_t *dst, size_t count) {
    const mama_st_tensor *t;
    const unsigned char *p;
    size_t i;
    MAMA_TRY(mama__st_lookup(st, name, count, &t));
    if (!mama__dtype_is_int(t->dtype))
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor \"%s\" has dtype %s, not an integer type", st->path, name, mama_dtype_name(t->dtype));
    p = (const unsigned char *)mama_st_data(st, t);
    for (i = 0; i < count; i++) {
        int64_t v = mama__st_int_at(t->dtype, p, i);
        if (v < INT32_MIN || v > INT32_MAX)
            return MAMA_FAIL(MAMA_ERR_NUMERIC, "%s: tensor \"%s\" element %zu = %lld does not fit in int32", st->path, name, i, (long long)v);
        dst[i] = (int32_t)v;
    }
    return MAMA_OK;
}

/* ---- safetensors writer ---- */

typedef struct mama__st_wentry {
    char *name;
    mama_dtype dtype;
    int ndim;
    int64_t shape[MAMA_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
} mama__st_wentry;

struct mama_st_writer {
    mama__st_wentry *e;
    int count, cap;
    char **meta_keys, **meta_values;
    int meta_count, meta_cap;
};

MAMA_API mama_status mama_st_writer_init(mama_st_writer **w) {
    return mama_calloc((void **)w, sizeof(mama_st_writer), "safetensors writer");
}

MAMA_API void mama_st_writer_free(mama_st_writer *w) {
    int k;
    if (!w) return;
    for (k = 0; k < w->count; k++) mama_free(w->e[k].name);
    for (k = 0; k < w->meta_count; k++) { mama_free(w->meta_keys[k]); mama_free(w->meta_values[k]); }
    mama_free(w->e);
    mama_free(w->meta_keys);
    mama_free(w->meta_values);
    mama_free(w);
}

static int mama__utf8_valid(const char *s) {
    size_t n = strlen(s), i = 0;
    while (i < n) {
        int l = mama__utf8_len((const unsigned char *)s + i, n - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* Grow a pointer-sized-element array by doubling (mama_alloc + copy). */
static mama_status mama__grow(void **arr, int *cap, int len, size_t elem, const char *what) {
    void *n;
    int nc;
    if (len < *cap) return MAMA_OK;
    if (*cap > INT_MAX / 2 - 8) return MAMA_FAIL(MAMA_ERR_NOMEM, "too many %s", what);
    nc = *cap ? *cap * 2 : 16;
    MAMA_TRY(mama_alloc(&n, (size_t)nc * elem, what));
    if (len) memcpy(n, *arr, (size_t)len * elem);
    mama_free(*arr);
    *arr = n;
    *cap = nc;
    return MAMA_OK;
}

MAMA_API mama_status mama_st_writer_add(mama_st_writer *w, const char *name, mama_dtype dt, int ndim,
                                        const int64_t *shape, const void *data) {
    mama__st_wentry *e;
    uint64_t numel = 1;
    int k;
    if (!name || !name[0]) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: empty tensor name");
    if (strncmp(name, "__", 2) == 0) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor name \"%s\" starts with \"__\" (reserved)", name);
    if (!mama__utf8_valid(name)) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor name is not valid UTF-8");
    if ((unsigned)dt >= MAMA__NDTYPES) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": bad dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > MAMA_ST_MAX_DIMS || (ndim && !shape))
        return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": %d dimensions (0..%d allowed)", name, ndim, MAMA_ST_MAX_DIMS);
    for (k = 0; k < ndim; k++) {
        if (shape[k] < 0) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": negative dim %lld", name, (long long)shape[k]);
        if (shape[k] && numel > ((uint64_t)1 << 53) / (uint64_t)shape[k])
            return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": too many elements", name);
        numel *= (uint64_t)shape[k];
    }
    if (numel * mama__dtype_sizes[dt] > (uint64_t)SIZE_MAX / 2)
        return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": too large", name);
    if (numel && !data) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\": NULL data", name);
    for (k = 0; k < w->count; k++)
        if (strcmp(w->e[k].name, name) == 0) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: tensor \"%s\" added twice", name);
    MAMA_TRY(mama__grow((void **)&w->e, &w->cap, w->count, sizeof(mama__st_wentry), "safetensors writer entries"));
    e = &w->e[w->count];
    memset(e, 0, sizeof *e);
    MAMA_TRY(mama__strdup(&e->name, name, "tensor name"));
    e->dtype = dt;
    e->ndim = ndim;
    for (k = 0; k < ndim; k++) e->shape[k] = shape[k];
    e->nbytes = (size_t)(numel * mama__dtype_sizes[dt]);
    e->data = data;
    w->count++;
    return MAMA_OK;
}

MAMA_API mama_status mama_st_writer_meta(mama_st_writer *w, const char *key, const char *value) {
    int k;
    char *v;
    if (!key || !value) return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: NULL metadata key or value");
    if (!mama__utf8_valid(key) || !mama__utf8_valid(value))
        return MAMA_FAIL(MAMA_ERR_INVALID, "safetensors writer: metadata \"%s\" is not valid UTF-8", key);
    MAMA_TRY(mama__strdup(&v, value, "metadata value"));
    for (k = 0; k < w->meta_count; k++)
        if (strcmp(w->meta_keys[k], key) == 0) { mama_free(w->meta_values[k]); w->meta_values[k] = v; return MAMA_OK; }
    /* both arrays share meta_cap: grow them as a pair */
    if (w->meta_count == w->meta_cap) {
        int cap = w->meta_cap, cap2;
        mama_status s = mama__grow((void **)&w->meta_keys, &cap, w->meta_count, sizeof(char *), "metadata");
        cap2 = w->meta_cap;
        if (s == MAMA_OK) s = mama__grow((void **)&w->meta_values, &cap2, w->meta_count, sizeof(char *), "metadata");
        if (s != MAMA_OK) { mama_free(v); return s; }
        w->meta_cap = cap;
    }
    if (mama__strdup(&w->meta_keys[w->meta_count], key, "metadata key") != MAMA_OK) { mama_free(v); return MAMA_ERR_NOMEM; }
    w->meta_values[w->meta_count++] = v;
    return MAMA_OK;
}

static MAMA_THREAD_LOCAL mama_st_writer *mama__st_wctx;
static int mama__st_wcmp(const void *a, const void *b) {
    const mama__st_wentry *x = &mama__st_wctx->e[*(const int *)a], *y = &mama__st_wctx->e[*(const int *)b];
    size_t sx = mama__dtype_sizes[x->dtype], sy = mama__dtype_sizes[y->dtype];
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Build the padded header (including the 8-byte length) and the write
 * order of the entries. */
static mama_status mama__st_header(mama_st_writer *w, mama_buf *h, int **order_out) {
    int *order = NULL, k, d;
    size_t off = 0, hlen;
    uint64_t le = 0;
    unsigned char len8[8];
    mama_status s = MAMA_OK;
    *order_out = NULL;
    MAMA_TRY(mama_alloc((void **)&order, (size_t)(w->count ? w->count : 1) * sizeof(int), "safetensors order"));
    for (k = 0; k < w->count; k++) order[k] = k;
    mama__st_wctx = w;
    qsort(order, (size_t)w->count, sizeof(int), mama__st_wcmp);
#define MAMA__H(call) do { if ((s = (call)) != MAMA_OK) goto fail; } while (0)
    MAMA__H(mama_buf_append(h, "\0\0\0\0\0\0\0\0{", 9));
    if (w->meta_count) {
        MAMA__H(mama_buf_puts(h, "\"__metadata__\":{"));
        for (k = 0; k < w->meta_count; k++) {
            if (k) MAMA__H(mama_buf_puts(h, ","));
            MAMA__H(mama_buf_json_string(h, w->meta_keys[k]));
            MAMA__H(mama_buf_puts(h, ":"));
            MAMA__H(mama_buf_json_string(h, w->meta_values[k]));
        }
        MAMA__H(mama_buf_puts(h, "}"));
    }
    for (k = 0; k < w->count; k++) {
        const mama__st_wentry *e = &w->e[order[k]];
        if (k || w->meta_count) MAMA__H(mama_buf_puts(h, ","));
        MAMA__H(mama_buf_json_string(h, e->name));
        MAMA__H(mama_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", mama__dtype_names[e->dtype]));
        for (d = 0; d < e->ndim; d++) MAMA__H(mama_buf_printf(h, d ? ",%lld" : "%lld", (long long)e->shape[d]));
        MAMA__H(mama_buf_printf(h, "],\"data_offsets\":[%zu,%zu]}", off, off + e->nbytes));
        off += e->nbytes;
    }
    MAMA__H(mama_buf_puts(h, "}"));
    /* pad with spaces so the data section starts 8-byte aligned */
    while (h->len % 8) MAMA__H(mama_buf_puts(h, " "));
#undef MAMA__H
    hlen = h->len - 8;
    le = (uint64_t)hlen;
    for (k = 0; k < 8; k++) len8[k] = (unsigned char)(le >> (8 * k));
    memcpy(h->data, len8, 8);
    *order_out = order;
    return MAMA_OK;
fail:
    mama_free(order);
    mama_buf_free(h);
    return s;
}

/* Emit one tensor's bytes in little-endian order through `emit`. */
typedef mama_status (*mama__emit_fn)(void *ctx, const void *p, size_t n);
static mama_status mama__st_emit_tensor(const mama__st_wentry *e, mama__emit_fn emit, void *ctx) {
    size_t es = mama__dtype_sizes[e->dtype];
    unsigned char tmp[4096];
    const unsigned char *src = (const unsigned char *)e->data;
    size_t done = 0;
    if (es == 1 || mama__host_is_le()) return e->nbytes ? emit(ctx, e->data, e->nbytes) : MAMA_OK;
    /* big-endian host: swap each element in chunks */
    while (done < e->nbytes) {
        size_t n = e->nbytes - done, i, b;
        if (n > sizeof tmp) n = sizeof tmp;
        for (i = 0; i < n; i += es)
            for (b = 0; b < es; b++) tmp[i + b] = src[done + i + es - 1 - b];
        MAMA_TRY(emit(ctx, tmp, n));
        done += n;
    }
    return MAMA_OK;
}

static mama_status mama__emit_buf(void *ctx, const void *p, size_t n) { return mama_buf_append((mama_buf *)ctx, p, n); }
static mama_status mama__emit_file(void *ctx, const void *p, size_t n) { return mama_atomic_write((mama_atomic_file *)ctx, p, n); }

MAMA_API mama_status mama_st_writer_serialize(mama_st_writer *w, mama_buf *out) {
    int *order, k;
    mama_status s;
    mama_buf h = {NULL, 0, 0};
    MAMA_TRY(mama__st_header(w, &h, &order));
    s = mama_buf_append(out, h.data, h.len);
    for (k = 0; k < w->count && s == MAMA_OK; k++) s = mama__st_emit_tensor(&w->e[order[k]], mama__emit_buf, out);
    mama_free(order);
    mama_buf_free(&h);
    return s;
}

MAMA_API mama_status mama_st_writer_write(mama_st_writer *w, const char *path) {
    int *order, k;
    mama_status s;
    mama_buf h = {NULL, 0, 0};
    mama_atomic_file af;
    MAMA_TRY(mama__st_header(w, &h, &order));
    s = mama_atomic_open(&af, path);
    if (s != MAMA_OK) { mama_free(order); mama_buf_free(&h); return s; }
    s = mama_atomic_write(&af, h.data, h.len);
    for (k = 0; k < w->count && s == MAMA_OK; k++) s = mama__st_emit_tensor(&w->e[order[k]], mama__emit_file, &af);
    mama_free(order);
    mama_buf_free(&h);
    if (s != MAMA_OK) { mama_atomic_abort(&af); return s; }
    return mama_atomic_commit(&af);
}

/* ==========================================================================
 * 10.1 Data: the manifest CSV, splits, studies
 * ========================================================================== */

/* String storage: records hold many short, repeated strings (side, view,
 * race ...), and a million separate allocations would cost more in
 * bookkeeping than in text.  So strings live in chunks freed together, and
 * a small direct-mapped cache returns the same copy for a repeated value. */
typedef struct mama__arena_chunk { struct mama__arena_chunk *next; size_t cap, used; } mama__arena_chunk;
#define MAMA__INTERN_SLOTS 4096
typedef struct mama__arena {
    mama__arena_chunk *head;
    char *intern[MAMA__INTERN_SLOTS];
    char *unknown;
} mama__arena;

static uint64_t mama__fnv1a(const char *s, size_t n) {
    uint64_t h = 14695981039346656037ull;
    size_t i;
    for (i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

static mama_status mama__arena_str(mama__arena *a, const char *s, size_t n, int intern, char **out) {
    mama__arena_chunk *c = a->head;
    size_t slot = 0;
    char *p;
    if (intern) {
        slot = (size_t)(mama__fnv1a(s, n) % MAMA__INTERN_SLOTS);
        p = a->intern[slot];
        if (p && strlen(p) == n && memcmp(p, s, n) == 0) { *out = p; return MAMA_OK; }
    }
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        MAMA_TRY(mama_alloc((void **)&c, sizeof(mama__arena_chunk) + cap, "manifest strings"));
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    p = (char *)(c + 1) + c->used;
    memcpy(p, s, n);
    p[n] = 0;
    c->used += n + 1;
    if (intern) a->intern[slot] = p;
    *out = p;
    return MAMA_OK;
}

static void mama__arena_free(mama__arena *a) {
    mama__arena_chunk *c, *next;
    if (!a) return;
    for (c = a->head; c; c = next) { next = c->next; mama_free(c); }
    mama_free(a);
}

MAMA_API void mama_manifest_init(mama_manifest *m) { memset(m, 0, sizeof *m); }

MAMA_API void mama_manifest_free(mama_manifest *m) {
    if (!m) return;
    mama_free(m->records);
    mama_free(m->studies);
    mama_free(m->study_members);
    mama__arena_free((mama__arena *)m->arena_);
    mama_free(m->path);
    mama_free(m->dir);
    memset(m, 0, sizeof *m);
}

static mama_status mama__manifest_arena(mama_manifest *m, mama__arena **out) {
    mama__arena *a = (mama__arena *)m->arena_;
    if (!a) {
        MAMA_TRY(mama_calloc((void **)&a, sizeof *a, "manifest arena"));
        m->arena_ = a;
    }
    if (!a->unknown) MAMA_TRY(mama__arena_str(a, "unknown", 7, 0, &a->unknown));
    *out = a;
    return MAMA_OK;
}

MAMA_API const char *mama_split_name(int split) {
    switch (split) {
    case MAMA_SPLIT_TRAIN: return "train";
    case MAMA_SPLIT_VAL: return "val";
    case MAMA_SPLIT_TEST: return "test";
    }
    return "unknown";
}

/* FNV-1a is cheap and stable across platforms, but its low bits mix poorly
 * for ids that differ only in the last character ("P0001", "P0002"), so the
 * splitmix64 finaliser spreads them before taking % 100. */
static mama_split mama__split_hash(const char *s) {
    uint64_t h = mama__fnv1a(s, strlen(s));
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    h ^= h >> 31;
    h %= 100;
    return h < 70 ? MAMA_SPLIT_TRAIN : h < 80 ? MAMA_SPLIT_VAL : MAMA_SPLIT_TEST;
}
MAMA_API mama_split mama_split_of_patient(const char *patient) { return mama__split_hash(patient ? patient : ""); }

static int mama__is_unknown(const char *s) { return !s || strcmp(s, "unknown") == 0; }

/* Copy a record's strings into the arena (NULL -> "unknown"). */
MAMA_API mama_status mama_manifest_add(mama_manifest *m, const mama_record *r) {
    mama__arena *a;
    mama_record *d;
    char **dst[14];
    char *const *src[14];
    int k;
    if (!r->path || !r->path[0]) return MAMA_FAIL(MAMA_ERR_INVALID, "manifest record without a path");
    if (r->split < -1 || r->split > 2) return MAMA_FAIL(MAMA_ERR_INVALID, "manifest record %s: split %d (use -1..2)", r->path, r->split);
    MAMA_TRY(mama__manifest_arena(m, &a));
    MAMA_TRY(mama__grow((void **)&m->records, &m->cap_, m->count, sizeof(mama_record), "manifest records"));
    d = &m->records[m->count];
    *d = *r;
    dst[0] = &d->path; dst[1] = &d->patient; dst[2] = &d->study; dst[3] = &d->side; dst[4] = &d->view;
    dst[5] = &d->procedure; dst[6] = &d->race; dst[7] = &d->ethnicity; dst[8] = &d->image_type;
    dst[9] = &d->birads; dst[10] = &d->mass_shape; dst[11] = &d->mass_density; dst[12] = &d->calc_type;
    dst[13] = &d->calc_distribution;
    src[0] = &r->path; src[1] = &r->patient; src[2] = &r->study; src[3] = &r->side; src[4] = &r->view;
    src[5] = &r->procedure; src[6] = &r->race; src[7] = &r->ethnicity; src[8] = &r->image_type;
    src[9] = &r->birads; src[10] = &r->mass_shape; src[11] = &r->mass_density; src[12] = &r->calc_type;
    src[13] = &r->calc_distribution;
    for (k = 0; k < 14; k++) {
        const char *s = *src[k];
        if (!s || !s[0] || strcmp(s, "unknown") == 0) *dst[k] = a->unknown;
        else MAMA_TRY(mama__arena_str(a, s, strlen(s), k != 0, dst[k]));
    }
    d->study_index = -1;
    m->count++;
    return MAMA_OK;
}

/* Studies: sort record indices by (patient, study, index); equal keys form
 * a study.  A record with an unknown study stands alone. */
static MAMA_THREAD_LOCAL const mama_manifest *mama__mf_ctx;
static int mama__mf_cmp(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b, c;
    const mama_record *x = &mama__mf_ctx->records[i], *y = &mama__mf_ctx->records[j];
    int xs = mama__is_unknown(x->study), ys = mama__is_unknown(y->study);
    if (xs != ys) return xs - ys;
    if (!xs) {
        if ((c = strcmp(x->patient, y->patient)) != 0) return c;
        if ((c = strcmp(x->study, y->study)) != 0) return c;
    }
    return (i > j) - (i < j);
}
static MAMA_THREAD_LOCAL const int *mama__mf_first;
static int mama__mf_cmp_first(const void *a, const void *b) {
    int x = mama__mf_first[*(const int *)a], y = mama__mf_first[*(const int *)b];
    return (x > y) - (x < y);
}

MAMA_API mama_status mama_manifest_index(mama_manifest *m) {
    int *sorted = NULL, *gstart = NULL, *gfirst = NULL, *gorder = NULL, ng = 0, i, g, n = m->count, o;
    mama_status s = MAMA_OK;
    mama_free(m->studies);
    mama_free(m->study_members);
    m->studies = NULL;
    m->study_members = NULL;
    m->study_count = 0;
    m->split_counts[0] = m->split_counts[1] = m->split_counts[2] = 0;
    for (i = 0; i < n; i++) {
        mama_record *r = &m->records[i];
        if (r->split < 0 || r->split > 2) r->split = (int)mama__split_hash(mama__is_unknown(r->patient) ? r->path : r->patient);
        m->split_counts[r->split]++;
    }
    if (n == 0) return MAMA_OK;
    if ((s = mama_alloc((void **)&sorted, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&gstart, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&gfirst, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&gorder, (size_t)n * sizeof(int), "study index")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&m->studies, (size_t)n * sizeof(mama_study), "studies")) != MAMA_OK) goto done;
    if ((s = mama_alloc((void **)&m->study_members, (size_t)n * sizeof(int), "study members")) != MAMA_OK) goto done;
    for (i = 0; i < n; i++) sorted[i] = i;
    mama__mf_ctx = m;
    qsort(sorted, (size_t)n, sizeof(int), mama__mf_cmp);
    /* groups in sorted order; each group's first member is its smallest index */
    for (i = 0; i < n; i++) {
        if (i == 0 || mama__mf_cmp(&sorted[i - 1], &sorted[i]) != 0) {
            const mama_record *x = &m->records[sorted[i]];
            int same = i > 0 && !mama__is_unknown(x->study) && !mama__is_unknown(m->records[sorted[i - 1]].study) &&
                       strcmp(x->patient, m->records[sorted[i - 1]].patient) == 0 &&
                       strcmp(x->study, m->records[sorted[i - 1]].study) == 0;
            if (!same) { gstart[ng] = i; gfirst[ng] = sorted[i]; gorder[ng] = ng; ng++; }
        }
    }
    /* number studies in order of first appearance in the file */
    mama__mf_first = gfirst;
    qsort(gorder, (size_t)ng, sizeof(int), mama__mf_cmp_first);
    o = 0;
    for (g = 0; g < ng; g++) {
        int grp = gorder[g], start = gstart[grp], end = grp + 1 < ng ? gstart[grp + 1] : n;
        m->studies[g].first = o;
        m->studies[g].count = end - start;
        for (i = start; i < end; i++) {
            m->study_members[o++] = sorted[i];
            m->records[sorted[i]].study_index = g;
        }
    }
    m->study_count = ng;
done:
    mama_free(sorted);
    mama_free(gstart);
    mama_free(gfirst);
    mama_free(gorder);
    if (s != MAMA_OK) {
        mama_free(m->studies);
        mama_free(m->study_members);
        m->studies = NULL;
        m->study_members = NULL;
    }
    return s;
}

MAMA_API const int *mama_manifest_study_of(const mama_manifest *m, int i, int *n) {
    const mama_study *s;
    *n = 0;
    if (i < 0 || i >= m->count || !m->studies || m->records[i].study_index < 0) return NULL;
    s = &m->studies[m->records[i].study_index];
    *n = s->count;
    return m->study_members + s->first;
}

MAMA_API int mama_manifest_other_view(const mama_manifest *m, int i, mama_rng *rng) {
    int n, k;
    const int *mem = mama_manifest_study_of(m, i, &n);
    if (!mem || n < 2) return -1;
    k = (int)mama_rng_below(rng, (uint32_t)(n - 1));
    /* the k-th member skipping i itself */
    return mem[k] == i || (k > 0 && mem[k - 1] >= i) ? mem[k + 1] : mem[k];
}

/* ---- CSV reading ---- */

typedef struct mama__csv {
    const char *s;
    size_t n, i;
    int line;              /* current physical line (1-based) */
    mama_buf field;        /* unquoted bytes of the current row's fields, NUL-separated */
    size_t *starts;        /* field start offsets into field.data */
    int nfields, cap;
    const char *name;
} mama__csv;

/* Read one row.  Returns MAMA_OK with nfields >= 1, or nfields == 0 at end
 * of input; MAMA_ERR_FORMAT for a malformed row (*fatal set when the rest
 * of the input cannot be resynchronised, i.e. an unterminated quote).
 * On a recoverable error the cursor is moved past the row's line. */
static mama_status mama__csv_row(mama__csv *c, int *fatal, int *row_line) {
    mama_status s;
    *fatal = 0;
    c->nfields = 0;
    c->field.len = 0;
    *row_line = c->line;
    if (c->i >= c->n) return MAMA_OK;
    for (;;) {
        int cap = c->cap;
        if (c->nfields == cap) {
            MAMA_TRY(mama__grow((void **)&c->starts, &cap, c->nfields, sizeof(size_t), "CSV fields"));
            c->cap = cap;
        }
        c->starts[c->nfields++] = c->field.len;
        if (c->i < c->n && c->s[c->i] == '"') {
            size_t open_line = (size_t)c->line;
            c->i++;
            for (;;) {
                size_t j = c->i;
                if (c->i >= c->n) {
                    *fatal = 1;
                    return MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%zu: unterminated quoted field", c->name, open_line);
                }
                /* copy a run of ordinary bytes at once */
                while (j < c->n && c->s[j] != '"') { if (c->s[j] == '\n') c->line++; j++; }
                MAMA_TRY(mama_buf_append(&c->field, c->s + c->i, j - c->i));
                c->i = j;
                if (j >= c->n) continue;
                if (j + 1 < c->n && c->s[j + 1] == '"') { MAMA_TRY(mama_buf_append(&c->field, "\"", 1)); c->i = j + 2; continue; }
                c->i = j + 1;
                break;
            }
            if (c->i < c->n && c->s[c->i] != ',' && c->s[c->i] != '\n' && c->s[c->i] != '\r') {
                s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: text after a closing quote", c->name, c->line);
                goto skip_line;
            }
        } else {
            size_t j = c->i;
            while (j < c->n && c->s[j] != ',' && c->s[j] != '\n' && c->s[j] != '\r') {
                if (c->s[j] == '"') {
                    c->i = j;
                    s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: quote inside an unquoted field (quote the whole field)", c->name, c->line);
                    goto skip_line;
                }
                j++;
            }
            MAMA_TRY(mama_buf_append(&c->field, c->s + c->i, j - c->i));
            c->i = j;
        }
        MAMA_TRY(mama_buf_append(&c->field, "", 1)); /* NUL separator */
        if (c->i >= c->n) return MAMA_OK;
        if (c->s[c->i] == ',') { c->i++; continue; }
        /* line end: \r\n, \n or a lone \r */
        if (c->s[c->i] == '\r') c->i++;
        if (c->i < c->n && c->s[c->i] == '\n') c->i++;
        c->line++;
        return MAMA_OK;
    }
skip_line:
    while (c->i < c->n && c->s[c->i] != '\n') c->i++;
    if (c->i < c->n) c->i++;
    c->line++;
    return s;
}

static const char *mama__csv_field(const mama__csv *c, int k) { return c->field.data + c->starts[k]; }

/* Column names the manifest understands, in the writer's order. */
enum {
    MAMA__C_PATH, MAMA__C_PATIENT, MAMA__C_STUDY, MAMA__C_SIDE, MAMA__C_VIEW, MAMA__C_PROCEDURE, MAMA__C_AGE,
    MAMA__C_RACE, MAMA__C_ETHNICITY, MAMA__C_IMAGE_TYPE, MAMA__C_DENSITY, MAMA__C_BIRADS, MAMA__C_MASS_SHAPE,
    MAMA__C_MASS_DENSITY, MAMA__C_CALC_TYPE, MAMA__C_CALC_DISTRIBUTION, MAMA__C_CANCER, MAMA__C_SPLIT, MAMA__NCOLS
};
static const char *const mama__col_names[MAMA__NCOLS] = {
    "path", "patient", "study", "side", "view", "procedure", "age", "race", "ethnicity", "image_type",
    "density", "birads", "mass_shape", "mass_density", "calc_type", "calc_distribution", "cancer", "split"};

static int mama__lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
static int mama__ieq(const char *a, const char *b) {
    while (*a && *b && mama__lower((unsigned char)*a) == mama__lower((unsigned char)*b)) { a++; b++; }
    return *a == 0 && *b == 0;
}

/* Trim spaces/tabs into tmp[cap]; returns tmp (truncated if long). */
static const char *mama__trim(const char *s, char *tmp, size_t cap) {
    size_t n;
    while (*s == ' ' || *s == '\t') s++;
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n >= cap) n = cap - 1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    return tmp;
}

static int mama__missing(const char *t) {
    static const char *const miss[] = {"", "unknown", "nan", "na", "n/a", "none", "null"};
    size_t k;
    for (k = 0; k < sizeof miss / sizeof miss[0]; k++) if (mama__ieq(t, miss[k])) return 1;
    return 0;
}

/* Locale-free decimal: digits [. digits]; -1 on anything else. */
static int mama__decimal(const char *t, double *out) {
    double v = 0, scale = 1;
    int digits = 0;
    if (!*t) return -1;
    while (*t >= '0' && *t <= '9') { v = v * 10 + (*t++ - '0'); digits++; if (v > 1e9) return -1; }
    if (*t == '.') {
        t++;
        while (*t >= '0' && *t <= '9') { scale /= 10; v += (*t++ - '0') * scale; digits++; }
    }
    if (*t || !digits) return -1;
    *out = v;
    return 0;
}

/* Parse the numeric/enum fields of row `c` into r; NULL or message. */
static const char *mama__mf_number(const char *raw, int col, int *out) {
    char tmp[64];
    const char *t = mama__trim(raw, tmp, sizeof tmp);
    double v;
    *out = -1;
    if (mama__missing(t) || strcmp(t, "-1") == 0) return NULL;
    if (col == MAMA__C_CANCER) {
        if (mama__ieq(t, "1") || mama__ieq(t, "true") || mama__ieq(t, "yes") || mama__ieq(t, "1.0")) { *out = 1; return NULL; }
        if (mama__ieq(t, "0") || mama__ieq(t, "false") || mama__ieq(t, "no") || mama__ieq(t, "0.0")) { *out = 0; return NULL; }
        return "cancer must be 0/1/true/false/yes/no";
    }
    if (mama__decimal(t, &v) != 0) return col == MAMA__C_AGE ? "age is not a number" : "density is not a number";
    if (col == MAMA__C_AGE) {
        if (v > 200) return "age out of range (0..200)";
        *out = (int)v;
        return NULL;
    }
    if (v != floor(v) || v < 1 || v > 5) return "density must be 1..5";
    *out = (int)v;
    return NULL;
}

static mama_status mama__mf_row(mama_manifest *m, mama__arena *a, const mama__csv *c, const int *col_of, int line,
                                const char *base_dir, const char **why, char *why_buf, size_t why_cap) {
    mama_record r;
    char tmp[256];
    const char *f[MAMA__NCOLS];
    char *path = NULL;
    const char *t;
    mama_status s;
    int k;
    static const char letters[] = "ANBPSMK";
    *why = NULL;
    memset(&r, 0, sizeof r);
    for (k = 0; k < MAMA__NCOLS; k++) f[k] = col_of[k] >= 0 ? mama__csv_field(c, col_of[k]) : "";
    /* strings */
    {
        char **dst[13];
        int cols[13] = {MAMA__C_PATIENT, MAMA__C_STUDY, MAMA__C_SIDE, MAMA__C_VIEW, MAMA__C_PROCEDURE, MAMA__C_RACE,
                        MAMA__C_ETHNICITY, MAMA__C_IMAGE_TYPE, MAMA__C_BIRADS, MAMA__C_MASS_SHAPE, MAMA__C_MASS_DENSITY,
                        MAMA__C_CALC_TYPE, MAMA__C_CALC_DISTRIBUTION};
        dst[0] = &r.patient; dst[1] = &r.study; dst[2] = &r.side; dst[3] = &r.view; dst[4] = &r.procedure;
        dst[5] = &r.race; dst[6] = &r.ethnicity; dst[7] = &r.image_type; dst[8] = &r.birads; dst[9] = &r.mass_shape;
        dst[10] = &r.mass_density; dst[11] = &r.calc_type; dst[12] = &r.calc_distribution;
        for (k = 0; k < 13; k++) {
            const char *v = f[cols[k]];
            size_t n;
            while (*v == ' ' || *v == '\t') v++;
            n = strlen(v);
            while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
            if (n < sizeof tmp) { memcpy(tmp, v, n); tmp[n] = 0; if (mama__missing(tmp)) { *dst[k] = a->unknown; continue; } }
            if (cols[k] == MAMA__C_SIDE && n < sizeof tmp) {
                if (mama__ieq(tmp, "l") || mama__ieq(tmp, "left")) { v = "left"; n = 4; }
                else if (mama__ieq(tmp, "r") || mama__ieq(tmp, "right")) { v = "right"; n = 5; }
                else if (mama__ieq(tmp, "b") || mama__ieq(tmp, "bilateral") || mama__ieq(tmp, "both")) { v = "bilateral"; n = 9; }
            }
            if (cols[k] == MAMA__C_BIRADS) {
                const char *hit;
                char L[2];
                if (n != 1) { *why = "BI-RADS must be one of A N B P S M K or 0..6"; return MAMA_OK; }
                L[0] = (char)(v[0] >= 'a' && v[0] <= 'z' ? v[0] - 32 : v[0]);
                L[1] = 0;
                if (L[0] >= '0' && L[0] <= '6') L[0] = letters[L[0] - '0'];
                hit = L[0] ? strchr(letters, L[0]) : NULL;
                if (!hit) { *why = "BI-RADS must be one of A N B P S M K or 0..6"; return MAMA_OK; }
                v = hit;
                n = 1;
            }
            MAMA_TRY(mama__arena_str(a, v, n, 1, dst[k]));
        }
    }
    /* numbers */
    if ((*why = mama__mf_number(f[MAMA__C_AGE], MAMA__C_AGE, &r.age)) != NULL) return MAMA_OK;
    if ((*why = mama__mf_number(f[MAMA__C_DENSITY], MAMA__C_DENSITY, &r.density)) != NULL) return MAMA_OK;
    if ((*why = mama__mf_number(f[MAMA__C_CANCER], MAMA__C_CANCER, &r.cancer)) != NULL) return MAMA_OK;
    t = mama__trim(f[MAMA__C_SPLIT], tmp, sizeof tmp);
    if (mama__missing(t)) r.split = -1;
    else if (mama__ieq(t, "train")) r.split = MAMA_SPLIT_TRAIN;
    else if (mama__ieq(t, "val") || mama__ieq(t, "valid") || mama__ieq(t, "validation")) r.split = MAMA_SPLIT_VAL;
    else if (mama__ieq(t, "test")) r.split = MAMA_SPLIT_TEST;
    else { snprintf(why_buf, why_cap, "split \"%.40s\" is not train/val/test", t); *why = why_buf; return MAMA_OK; }
    /* path: required, resolved against the manifest's directory */
    {
        const char *p = f[MAMA__C_PATH];
        size_t n, bl = base_dir ? strlen(base_dir) : 0;
        int abs_;
        while (*p == ' ' || *p == '\t') p++;
        n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n == 0) { *why = "empty path"; return MAMA_OK; }
        abs_ = p[0] == '/' || p[0] == '\\' || (n >= 2 && p[1] == ':' && ((p[0] | 32) >= 'a' && (p[0] | 32) <= 'z'));
        if (abs_ || bl == 0) {
            MAMA_TRY(mama__arena_str(a, p, n, 0, &path));
        } else {
            mama_buf pb = {NULL, 0, 0};
            int sep = base_dir[bl - 1] == '/' || base_dir[bl - 1] == '\\';
            s = mama_buf_append(&pb, base_dir, bl);
            if (s == MAMA_OK && !sep) s = mama_buf_append(&pb, "/", 1);
            if (s == MAMA_OK) s = mama_buf_append(&pb, p, n);
            if (s == MAMA_OK) s = mama__arena_str(a, pb.data, pb.len, 0, &path);
            mama_buf_free(&pb);
            MAMA_TRY(s);
        }
    }
    r.path = path;
    r.line = line;
    r.study_index = -1;
    /* append directly: strings are already in the arena */
    MAMA_TRY(mama__grow((void **)&m->records, &m->cap_, m->count, sizeof(mama_record), "manifest records"));
    m->records[m->count++] = r;
    return MAMA_OK;
}

MAMA_API mama_status mama_manifest_parse(mama_manifest *m, const char *text, size_t len, const char *source_name,
                                         const char *base_dir, int skip_bad_rows) {
    mama__csv c;
    mama__arena *a;
    mama_status s;
    int col_of[MAMA__NCOLS], k, fatal, line, header_fields;
    const char *name = source_name ? source_name : "<manifest>";
    mama_manifest_init(m);
    memset(&c, 0, sizeof c);
    c.s = text ? text : "";
    c.n = text ? len : 0;
    c.line = 1;
    c.name = name;
    if (c.n >= 3 && memcmp(c.s, "\xEF\xBB\xBF", 3) == 0) c.i = 3; /* UTF-8 BOM */
#define MAMA__P(call) do { if ((s = (call)) != MAMA_OK) goto fail; } while (0)
    MAMA__P(mama__strdup(&m->path, name, "manifest path"));
    MAMA__P(mama__strdup(&m->dir, base_dir ? base_dir : "", "manifest dir"));
    MAMA__P(mama__manifest_arena(m, &a));
    /* header (skipping leading blank lines) */
    do {
        MAMA__P(mama__csv_row(&c, &fatal, &line));
    } while (c.nfields == 1 && mama__csv_field(&c, 0)[0] == 0 && c.i < c.n);
    if (c.nfields == 0 || (c.nfields == 1 && mama__csv_field(&c, 0)[0] == 0)) {
        s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: empty manifest (a header row with a \"path\" column is required)", name);
        goto fail;
    }
    header_fields = c.nfields;
    for (k = 0; k < MAMA__NCOLS; k++) col_of[k] = -1;
    for (k = 0; k < c.nfields; k++) {
        char norm[64];
        const char *h = mama__csv_field(&c, k);
        int q, j = 0;
        while (*h == ' ' || *h == '\t') h++;
        for (; *h && j < (int)sizeof norm - 1; h++) norm[j++] = (char)(*h == ' ' || *h == '-' ? '_' : mama__lower((unsigned char)*h));
        while (j && norm[j - 1] == '_') j--; /* trailing spaces */
        norm[j] = 0;
        for (q = 0; q < MAMA__NCOLS; q++)
            if (strcmp(norm, mama__col_names[q]) == 0) {
                if (col_of[q] >= 0) {
                    s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: column \"%s\" appears twice in the header", name, line, mama__col_names[q]);
                    goto fail;
                }
                col_of[q] = k;
            }
    }
    if (col_of[MAMA__C_PATH] < 0) {
        s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: header has no \"path\" column", name, line);
        goto fail;
    }
    for (;;) {
        const char *why = NULL;
        char why_buf[128];
        s = mama__csv_row(&c, &fatal, &line);
        if (s == MAMA_ERR_FORMAT && !fatal && skip_bad_rows) { m->skipped++; continue; }
        if (s != MAMA_OK) goto fail;
        if (c.nfields == 0) break;
        if (c.nfields == 1 && mama__csv_field(&c, 0)[0] == 0 && header_fields != 1) continue; /* blank line */
        if (c.nfields != header_fields) {
            snprintf(why_buf, sizeof why_buf, "%d fields, the header has %d", c.nfields, header_fields);
            why = why_buf;
        } else {
            MAMA__P(mama__mf_row(m, a, &c, col_of, line, base_dir, &why, why_buf, sizeof why_buf));
        }
        if (why) {
            if (skip_bad_rows) { m->skipped++; continue; }
            s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s:%d: bad row: %s", name, line, why);
            goto fail;
        }
    }
#undef MAMA__P
    mama_buf_free(&c.field);
    mama_free(c.starts);
    s = mama_manifest_index(m);
    if (s != MAMA_OK) mama_manifest_free(m);
    return s;
fail:
    mama_buf_free(&c.field);
    mama_free(c.starts);
    mama_manifest_free(m);
    return s;
}

MAMA_API mama_status mama_manifest_load(mama_manifest *m, const char *path, int skip_bad_rows) {
    unsigned char *data;
    size_t size, dl;
    char *dir;
    const char *slash = strrchr(path, '/'), *bslash = strrchr(path, '\\');
    mama_status s;
    mama_manifest_init(m);
    if (bslash && (!slash || bslash > slash)) slash = bslash;
    dl = slash ? (size_t)(slash - path) : 0;
    if (slash == path) dl = 1; /* "/m.csv": the root */
    MAMA_TRY(mama_read_file(path, &data, &size));
    if (mama_alloc((void **)&dir, dl + 1, "manifest dir") != MAMA_OK) { mama_free(data); return MAMA_ERR_NOMEM; }
    memcpy(dir, path, dl);
    dir[dl] = 0;
    s = mama_manifest_parse(m, (const char *)data, size, path, dir, skip_bad_rows);
    mama_free(data);
    mama_free(dir);
    return s;
}

/* ---- CSV writing ---- */

static mama_status mama__csv_put(mama_buf *b, const char *v) {
    size_t n = strlen(v);
    int quote = n && (v[0] == ' ' || v[n - 1] == ' ' || v[0] == '\t' || v[n - 1] == '\t');
    const char *p;
    if (!quote) quote = strpbrk(v, ",\"\r\n") != NULL;
    if (!quote) return mama_buf_append(b, v, n);
    MAMA_TRY(mama_buf_append(b, "\"", 1));
    for (p = v; *p; p++) {
        if (*p == '"') MAMA_TRY(mama_buf_append(b, "\"\"", 2));
        else MAMA_TRY(mama_buf_append(b, p, 1));
    }
    return mama_buf_append(b, "\"", 1);
}

static mama_status mama__manifest_serialize(const mama_manifest *m, const char *path, mama_buf *b) {
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 0;
    int i, k;
    for (k = 0; k < MAMA__NCOLS; k++) {
        if (k) MAMA_TRY(mama_buf_append(b, ",", 1));
        MAMA_TRY(mama_buf_puts(b, mama__col_names[k]));
    }
    MAMA_TRY(mama_buf_append(b, "\r\n", 2));
    for (i = 0; i < m->count; i++) {
        const mama_record *r = &m->records[i];
        const char *p = r->path;
        char num[3][16];
        const char *v[MAMA__NCOLS];
        int nums[3];
        if (dl && strncmp(p, path, dl) == 0 && p[dl] == '/') p += dl + 1;
        nums[0] = r->age; nums[1] = r->density; nums[2] = r->cancer;
        for (k = 0; k < 3; k++) {
            if (nums[k] < 0) num[k][0] = 0;
            else snprintf(num[k], sizeof num[k], "%d", nums[k]);
        }
        v[MAMA__C_PATH] = p; v[MAMA__C_PATIENT] = r->patient; v[MAMA__C_STUDY] = r->study; v[MAMA__C_SIDE] = r->side;
        v[MAMA__C_VIEW] = r->view; v[MAMA__C_PROCEDURE] = r->procedure; v[MAMA__C_AGE] = num[0];
        v[MAMA__C_RACE] = r->race; v[MAMA__C_ETHNICITY] = r->ethnicity; v[MAMA__C_IMAGE_TYPE] = r->image_type;
        v[MAMA__C_DENSITY] = num[1]; v[MAMA__C_BIRADS] = r->birads; v[MAMA__C_MASS_SHAPE] = r->mass_shape;
        v[MAMA__C_MASS_DENSITY] = r->mass_density; v[MAMA__C_CALC_TYPE] = r->calc_type;
        v[MAMA__C_CALC_DISTRIBUTION] = r->calc_distribution; v[MAMA__C_CANCER] = num[2];
        v[MAMA__C_SPLIT] = (r->split >= 0 && r->split <= 2) ? mama_split_name(r->split) : "";
        for (k = 0; k < MAMA__NCOLS; k++) {
            if (k) MAMA_TRY(mama_buf_append(b, ",", 1));
            MAMA_TRY(mama__csv_put(b, v[k] ? v[k] : "unknown"));
        }
        MAMA_TRY(mama_buf_append(b, "\r\n", 2));
    }
    return MAMA_OK;
}

MAMA_API mama_status mama_manifest_write(const mama_manifest *m, const char *path) {
    mama_buf b = {NULL, 0, 0};
    mama_status s = mama__manifest_serialize(m, path, &b);
    if (s == MAMA_OK) s = mama_write_file_atomic(path, b.data, b.len);
    mama_buf_free(&b);
    return s;
}
