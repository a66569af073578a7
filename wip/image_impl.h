/* ==========================================================================
 * 9. IMAGES: decoding, Otsu crop, resize, augmentation, synthetic phantoms
 * ==========================================================================
 *
 * stb_image decodes and stb_image_write encodes.  Unless MAMA_NO_STB_IMAGE
 * is defined, this section compiles both implementations as `static`
 * functions private to this translation unit (so they cannot clash with
 * another copy of stb in the program) whose allocations go through
 * MAMA_MALLOC.  A program that includes stb_image.h itself in the same
 * translation unit, or wants to link its own implementation, defines
 * MAMA_STB_IMAGE_EXTERNAL: then only the headers are included here.
 * stb is third-party code that does not build warning-free under
 * -Wall -Wextra -Wpedantic, so its warnings are silenced around the include.
 */
#ifndef MAMA_NO_STB_IMAGE
#ifdef __cplusplus
} /* the stb headers carry their own extern "C" */
#endif
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunused-function"
#pragma clang diagnostic ignored "-Wunused-parameter"
#pragma clang diagnostic ignored "-Wunused-but-set-variable"
#pragma clang diagnostic ignored "-Wsign-compare"
#pragma clang diagnostic ignored "-Wmissing-field-initializers"
#pragma clang diagnostic ignored "-Wimplicit-fallthrough"
#pragma clang diagnostic ignored "-Wcast-qual"
#pragma clang diagnostic ignored "-Wdouble-promotion"
#pragma clang diagnostic ignored "-Wshadow"
#pragma clang diagnostic ignored "-Wconversion"
#pragma clang diagnostic ignored "-Wpedantic"
#pragma clang diagnostic ignored "-Wcomma"
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#elif defined(_MSC_VER)
#pragma warning(push)
#pragma warning(disable : 4996 4244 4267 4456 4457 4100)
#endif
#ifndef MAMA_STB_IMAGE_EXTERNAL
#define STB_IMAGE_IMPLEMENTATION
#define STBI_MALLOC(sz) MAMA_MALLOC(sz)
#define STBI_REALLOC(p, sz) MAMA_REALLOC(p, sz)
#define STBI_FREE(p) MAMA_FREE(p)
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBIW_MALLOC(sz) MAMA_MALLOC(sz)
#define STBIW_REALLOC(p, sz) MAMA_REALLOC(p, sz)
#define STBIW_FREE(p) MAMA_FREE(p)
#endif
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#elif defined(_MSC_VER)
#pragma warning(pop)
#endif
#ifdef __cplusplus
extern "C" {
#endif
#endif /* MAMA_NO_STB_IMAGE */

#ifdef __cplusplus
}
#endif
#include <sys/types.h>
#include <sys/stat.h>
#ifdef _WIN32
#include <direct.h>
#define mama__mkdir(p) _mkdir(p)
#ifndef S_ISDIR
#define S_ISDIR(m) (((m) & _S_IFMT) == _S_IFDIR)
#endif
#else
#define mama__mkdir(p) mkdir(p, 0755)
#endif
#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------------------
 * 9.1 The image type
 * ------------------------------------------------------------------------ */
MAMA_API mama_status mama_image_alloc(mama_image *im, int w, int h) {
    im->w = im->h = 0;
    im->pix = NULL;
    if (w <= 0 || h <= 0 || (size_t)w > SIZE_MAX / (size_t)h)
        return MAMA_FAIL(MAMA_ERR_INVALID, "image size %d x %d is invalid", w, h);
    MAMA_TRY(mama_calloc((void **)&im->pix, (size_t)w * (size_t)h, "image pixels"));
    im->w = w;
    im->h = h;
    return MAMA_OK;
}
MAMA_API void mama_image_free(mama_image *im) {
    if (!im) return;
    mama_free(im->pix);
    im->pix = NULL;
    im->w = im->h = 0;
}
MAMA_API mama_status mama_image_copy(const mama_image *src, mama_image *dst) {
    MAMA_TRY(mama_image_alloc(dst, src->w, src->h));
    memcpy(dst->pix, src->pix, (size_t)src->w * (size_t)src->h);
    return MAMA_OK;
}
/* Replace *dst by *src (taking ownership), freeing what dst held. */
static void mama__image_move(mama_image *dst, mama_image *src) {
    mama_image_free(dst);
    *dst = *src;
    src->pix = NULL;
    src->w = src->h = 0;
}

/* --------------------------------------------------------------------------
 * 9.2 Decoding and encoding
 * ------------------------------------------------------------------------ */

/* PIL's convert("L"): fixed-point ITU-R 601 luma, 16 fractional bits. */
static uint8_t mama__luma8(int r, int g, int b) {
    return (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
}

MAMA_API void mama_rgb_to_grey(const uint8_t *src, int w, int h, int channels, uint8_t *grey) {
    size_t i, n = (size_t)w * (size_t)h;
    for (i = 0; i < n; i++) {
        const uint8_t *p = src + i * (size_t)channels;
        grey[i] = channels >= 3 ? mama__luma8(p[0], p[1], p[2]) : p[0];
    }
}

#ifndef MAMA_NO_STB_IMAGE
/* 16-bit to 8-bit: round(v / 257).  v = 257 k + r (0 <= r <= 256) rounds to
 * k for r <= 128 and to k + 1 above, which (v + 128) / 257 computes. */
static uint8_t mama__to8(unsigned v) { return (uint8_t)((v + 128u) / 257u); }

/* Decode with stb into 8-bit grey.  16-bit files are read at 16 bits and
 * reduced here (stb's own 16->8 is v >> 8, its own RGB->grey uses coarser
 * weights than PIL; both would shift values by one grey level). */
static mama_status mama__decode(const stbi_uc *buf, int len, const char *name, mama_image *out) {
    int w = 0, h = 0, c = 0;
    size_t i, n;
    out->w = out->h = 0;
    out->pix = NULL;
    if (stbi_is_16_bit_from_memory(buf, len)) {
        stbi_us *p = stbi_load_16_from_memory(buf, len, &w, &h, &c, 0);
        if (!p) return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: cannot decode image: %s", name, stbi_failure_reason());
        if (mama_image_alloc(out, w, h) != MAMA_OK) { stbi_image_free(p); return MAMA_ERR_NOMEM; }
        n = (size_t)w * (size_t)h;
        for (i = 0; i < n; i++) {
            const stbi_us *q = p + i * (size_t)c;
            double y = c >= 3 ? 0.299 * q[0] + 0.587 * q[1] + 0.114 * q[2] : (double)q[0];
            out->pix[i] = mama__to8((unsigned)(y + 0.5));
        }
        stbi_image_free(p);
    } else {
        stbi_uc *p = stbi_load_from_memory(buf, len, &w, &h, &c, 0);
        if (!p) return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: cannot decode image: %s", name, stbi_failure_reason());
        if (mama_image_alloc(out, w, h) != MAMA_OK) { stbi_image_free(p); return MAMA_ERR_NOMEM; }
        mama_rgb_to_grey(p, w, h, c, out->pix);
        stbi_image_free(p);
    }
    return MAMA_OK;
}
#endif

MAMA_API mama_status mama_image_load_memory(const void *data, size_t bytes, const char *name, mama_image *out) {
    if (!name) name = "<memory>";
    out->w = out->h = 0;
    out->pix = NULL;
    if (!data || bytes == 0 || bytes > (size_t)INT_MAX)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: empty or oversized image buffer (%zu bytes)", name, bytes);
#ifdef MAMA_NO_STB_IMAGE
    return MAMA_FAIL(MAMA_ERR_UNSUPPORTED, "%s: built with MAMA_NO_STB_IMAGE, cannot decode", name);
#else
    return mama__decode((const stbi_uc *)data, (int)bytes, name, out);
#endif
}

/* Read a whole file with mama_alloc (so the decoder sees one buffer and
 * allocation failures are reported like every other). */
static mama_status mama__read_file(const char *path, unsigned char **data, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    long n;
    *data = NULL;
    *bytes = 0;
    if (!f) return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot seek", path);
    }
    if (mama_alloc((void **)data, (size_t)n + 1, path) != MAMA_OK) { fclose(f); return MAMA_ERR_NOMEM; }
    if (fread(*data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        mama_free(*data);
        *data = NULL;
        return MAMA_FAIL(MAMA_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    *bytes = (size_t)n;
    return MAMA_OK;
}

MAMA_API mama_status mama_image_load(const char *path, mama_image *out) {
    unsigned char *data;
    size_t n;
    mama_status s;
    out->w = out->h = 0;
    out->pix = NULL;
    MAMA_TRY(mama__read_file(path, &data, &n));
    if (n == 0) { mama_free(data); return MAMA_FAIL(MAMA_ERR_FORMAT, "%s: empty file", path); }
    s = mama_image_load_memory(data, n, path, out);
    mama_free(data);
    return s;
}

/* A minimal PNG encoder (8 or 16 bit): zlib "stored" blocks (no
 * compression), filter 0 on every row.  Used for 16-bit files and when stb
 * is compiled out.  PNG wants CRC-32 per chunk and
 * Adler-32 over the zlib payload; both are computed bytewise. */
static uint32_t mama__crc32(uint32_t crc, const unsigned char *p, size_t n) {
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}
static void mama__be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static int mama__png_chunk(FILE *f, const char *type, const unsigned char *data, size_t n) {
    unsigned char hdr[8], crcb[4];
    uint32_t crc;
    mama__be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    crc = mama__crc32(0, hdr + 4, 4);
    crc = mama__crc32(crc, data, n);
    mama__be32(crcb, crc);
    return fwrite(hdr, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(crcb, 1, 4, f) == 4;
}
/* Write `channels` (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) samples of `depth`
 * bits (8: bytes; 16: host-order uint16) per pixel. */
static mama_status mama__png_write_stored(const char *path, const void *pix, int w, int h, int channels, int depth) {
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    static const unsigned char ctype[5] = {0, 0, 4, 2, 6};
    unsigned char ihdr[13], *raw = NULL, *z = NULL;
    size_t row, rawn, nblocks, zn, i, pos, bps = (size_t)depth / 8;
    uint32_t a = 1, b = 0;
    FILE *f;
    int x, y, ok;
    row = 1 + (size_t)w * (size_t)channels * bps;
    rawn = row * (size_t)h;
    nblocks = rawn / 65535 + 1;
    zn = 2 + rawn + 5 * nblocks + 4;
    MAMA_TRY(mama_alloc((void **)&raw, rawn, "png rows"));
    if (mama_alloc((void **)&z, zn, "png zlib stream") != MAMA_OK) { mama_free(raw); return MAMA_ERR_NOMEM; }
    for (y = 0; y < h; y++) {
        unsigned char *r = raw + (size_t)y * row;
        size_t base = (size_t)y * (size_t)w * (size_t)channels;
        r[0] = 0; /* filter: none */
        for (x = 0; x < w * channels; x++) {
            if (depth == 16) {
                uint16_t v = ((const uint16_t *)pix)[base + (size_t)x];
                r[1 + 2 * x] = (unsigned char)(v >> 8); /* PNG is big-endian */
                r[2 + 2 * x] = (unsigned char)v;
            } else {
                r[1 + x] = ((const uint8_t *)pix)[base + (size_t)x];
            }
        }
    }
    /* zlib header 0x78 0x01, then stored blocks of at most 65535 bytes. */
    pos = 0;
    z[pos++] = 0x78; z[pos++] = 0x01;
    i = 0;
    do {
        size_t len = rawn - i < 65535 ? rawn - i : 65535;
        z[pos++] = (unsigned char)(i + len >= rawn ? 1 : 0); /* BFINAL, BTYPE=00 */
        z[pos++] = (unsigned char)len; z[pos++] = (unsigned char)(len >> 8);
        z[pos++] = (unsigned char)~len; z[pos++] = (unsigned char)(~len >> 8);
        memcpy(z + pos, raw + i, len);
        pos += len;
        i += len;
    } while (i < rawn);
    for (i = 0; i < rawn; i++) { a = (a + raw[i]) % 65521u; b = (b + a) % 65521u; }
    mama__be32(z + pos, (b << 16) | a);
    pos += 4;
    mama__be32(ihdr, (uint32_t)w);
    mama__be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = (unsigned char)depth;
    ihdr[9] = ctype[channels];
    ihdr[10] = ihdr[11] = ihdr[12] = 0;    /* deflate, adaptive filter, no interlace */
    f = fopen(path, "wb");
    if (!f) { mama_free(raw); mama_free(z); return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot create: %s", path, strerror(errno)); }
    ok = fwrite(sig, 1, 8, f) == 8 && mama__png_chunk(f, "IHDR", ihdr, 13) &&
         mama__png_chunk(f, "IDAT", z, pos) && mama__png_chunk(f, "IEND", NULL, 0);
    ok = (fclose(f) == 0) && ok;
    mama_free(raw);
    mama_free(z);
    if (!ok) return MAMA_FAIL(MAMA_ERR_IO, "%s: write failed", path);
    return MAMA_OK;
}
MAMA_API mama_status mama_png_write(const char *path, const uint8_t *pix, int w, int h, int channels) {
    if (!path || !pix || w <= 0 || h <= 0 || channels < 1 || channels > 4)
        return MAMA_FAIL(MAMA_ERR_INVALID, "png write %s: bad arguments (%d x %d x %d)", path ? path : "?", w, h, channels);
#ifdef MAMA_NO_STB_IMAGE
    return mama__png_write_stored(path, pix, w, h, channels, 8); /* uncompressed */
#else
    if (!stbi_write_png(path, w, h, channels, pix, w * channels))
        return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot write PNG (directory missing, disk full, or out of memory)", path);
    return MAMA_OK;
#endif
}
MAMA_API mama_status mama_image_save_png(const mama_image *im, const char *path) {
    return mama_png_write(path, im->pix, im->w, im->h, 1);
}

MAMA_API mama_status mama_png_write16(const char *path, const uint16_t *pix, int w, int h, int channels) {
    if (!path || !pix || w <= 0 || h <= 0 || (channels != 1 && channels != 3))
        return MAMA_FAIL(MAMA_ERR_INVALID, "png16 write %s: bad arguments", path ? path : "?");
    return mama__png_write_stored(path, pix, w, h, channels, 16);
}

/* --------------------------------------------------------------------------
 * 9.3 Resampling
 *
 * Both resamplers are separable: out(x, y) = sum_j wy[y][j] sum_i wx[x][i]
 * in(i, j).  A tap table gives, per output index, the first input index and
 * `taps` weights (zero-padded).  The tables differ:
 *  area:     weight of input cell i = |[i, i+1) n [o*s, (o+1)*s)| / s,
 *            s = in/out >= 1 (the fraction of the output cell it covers);
 *  bilinear: PIL's triangle: centre c = (o + 0.5) s, support r = max(s, 1),
 *            taps i in [int(c - r + 0.5), int(c + r + 0.5)) clipped to the
 *            input, weight tri((i - c + 0.5) / max(s, 1)), renormalised.
 *            For s <= 1 this is the half-pixel bilinear interpolation at
 *            src = (o + 0.5) s - 0.5 with edge clamping.
 * ------------------------------------------------------------------------ */
typedef struct mama__taps {
    int n, taps;
    int *start;
    double *w; /* n * taps */
} mama__taps;

static void mama__taps_free(mama__taps *t) {
    mama_free(t->start);
    mama_free(t->w);
    t->start = NULL;
    t->w = NULL;
}
static mama_status mama__taps_alloc(mama__taps *t, int n, int taps) {
    t->n = n;
    t->taps = taps;
    t->start = NULL;
    t->w = NULL;
    MAMA_TRY(mama_alloc((void **)&t->start, (size_t)n * sizeof(int), "resample tap starts"));
    if (mama_calloc((void **)&t->w, (size_t)n * (size_t)taps * sizeof(double), "resample weights") != MAMA_OK) {
        mama__taps_free(t);
        return MAMA_ERR_NOMEM;
    }
    return MAMA_OK;
}

/* Area taps for in -> out with out < in. */
static mama_status mama__taps_area(mama__taps *t, int in, int out) {
    double s = (double)in / (double)out;
    int o, taps = (int)ceil(s) + 2;
    MAMA_TRY(mama__taps_alloc(t, out, taps));
    for (o = 0; o < out; o++) {
        /* exact rational borders: o*in/out */
        double f0 = (double)o * in / out, f1 = (double)(o + 1) * in / out;
        int i0 = (int)floor(f0), i, k = 0;
        t->start[o] = i0;
        for (i = i0; i < in && (double)i < f1 && k < taps; i++, k++) {
            double lo = f0 > i ? f0 : (double)i, hi = f1 < i + 1 ? f1 : (double)(i + 1);
            t->w[(size_t)o * taps + k] = hi > lo ? (hi - lo) / s : 0.0;
        }
    }
    return MAMA_OK;
}

/* PIL bilinear taps for in -> out (any ratio). */
static mama_status mama__taps_bilinear(mama__taps *t, int in, int out) {
    double s = (double)in / (double)out, fs = s > 1.0 ? s : 1.0, support = fs;
    int o, taps = (int)ceil(support) * 2 + 1;
    MAMA_TRY(mama__taps_alloc(t, out, taps));
    for (o = 0; o < out; o++) {
        double c = (o + 0.5) * s, sum = 0;
        int lo = (int)(c - support + 0.5), hi = (int)(c + support + 0.5), i, k;
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > taps) hi = lo + taps;
        t->start[o] = lo;
        for (i = lo, k = 0; i < hi; i++, k++) {
            double x = fabs((i - c + 0.5) / fs);
            double wgt = x < 1.0 ? 1.0 - x : 0.0;
            t->w[(size_t)o * taps + k] = wgt;
            sum += wgt;
        }
        if (sum > 0)
            for (k = 0; k < hi - lo; k++) t->w[(size_t)o * taps + k] /= sum;
    }
    return MAMA_OK;
}

static uint8_t mama__round_u8(double v) { /* round half up, clamp */
    if (!(v > 0.0)) return 0;
    if (v >= 255.0) return 255;
    return (uint8_t)(v + 0.5);
}

/* Apply tap tables to the box (x0, y0, bw, bh) of src.  round_between: the
 * horizontal pass is rounded to uint8 before the vertical one (PIL). */
static mama_status mama__resample(const mama_image *src, int x0, int y0, const mama__taps *tx,
                                  const mama__taps *ty, int bh, int round_between, mama_image *dst) {
    float *tmp = NULL;
    int W = tx->n, H = ty->n, x, y, k;
    mama_image out;
    MAMA_TRY(mama_alloc((void **)&tmp, (size_t)W * (size_t)bh * sizeof(float), "resample rows"));
    if (mama_image_alloc(&out, W, H) != MAMA_OK) { mama_free(tmp); return MAMA_ERR_NOMEM; }
    /* horizontal: box rows -> W columns */
    for (y = 0; y < bh; y++) {
        const uint8_t *row = src->pix + (size_t)(y0 + y) * src->w + x0;
        for (x = 0; x < W; x++) {
            const double *w = tx->w + (size_t)x * tx->taps;
            const uint8_t *p = row + tx->start[x];
            double acc = 0;
            for (k = 0; k < tx->taps; k++)
                if (w[k] != 0.0) acc += w[k] * p[k];
            tmp[(size_t)y * W + x] = round_between ? (float)mama__round_u8(acc) : (float)acc;
        }
    }
    /* vertical */
    for (y = 0; y < H; y++) {
        const double *w = ty->w + (size_t)y * ty->taps;
        const float *col = tmp + (size_t)ty->start[y] * W;
        for (x = 0; x < W; x++) {
            double acc = 0;
            for (k = 0; k < ty->taps; k++)
                if (w[k] != 0.0) acc += w[k] * col[(size_t)k * W + x];
            out.pix[(size_t)y * W + x] = mama__round_u8(acc);
        }
    }
    mama_free(tmp);
    mama__image_move(dst, &out);
    return MAMA_OK;
}

static mama_status mama__check_image(const mama_image *im, const char *what) {
    if (!im || !im->pix || im->w <= 0 || im->h <= 0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: empty image", what);
    return MAMA_OK;
}

MAMA_API mama_status mama_image_resize_area(const mama_image *src, int w, int h, mama_image *dst) {
    mama__taps tx, ty;
    mama_status s;
    MAMA_TRY(mama__check_image(src, "resize_area"));
    if (w <= 0 || h <= 0) return MAMA_FAIL(MAMA_ERR_INVALID, "resize_area: output %d x %d", w, h);
    s = w < src->w ? mama__taps_area(&tx, src->w, w) : mama__taps_bilinear(&tx, src->w, w);
    if (s != MAMA_OK) return s;
    s = h < src->h ? mama__taps_area(&ty, src->h, h) : mama__taps_bilinear(&ty, src->h, h);
    if (s != MAMA_OK) { mama__taps_free(&tx); return s; }
    s = mama__resample(src, 0, 0, &tx, &ty, src->h, 0, dst);
    mama__taps_free(&tx);
    mama__taps_free(&ty);
    return s;
}

MAMA_API mama_status mama_image_resize_bilinear(const mama_image *src, int x0, int y0, int bw, int bh,
                                                int w, int h, mama_image *dst) {
    mama__taps tx, ty;
    mama_status s;
    MAMA_TRY(mama__check_image(src, "resize_bilinear"));
    if (w <= 0 || h <= 0 || bw <= 0 || bh <= 0 || x0 < 0 || y0 < 0 || x0 + bw > src->w || y0 + bh > src->h)
        return MAMA_FAIL(MAMA_ERR_INVALID, "resize_bilinear: box (%d,%d %dx%d) of %dx%d to %dx%d", x0, y0,
                         bw, bh, src->w, src->h, w, h);
    MAMA_TRY(mama__taps_bilinear(&tx, bw, w));
    s = mama__taps_bilinear(&ty, bh, h);
    if (s != MAMA_OK) { mama__taps_free(&tx); return s; }
    s = mama__resample(src, x0, y0, &tx, &ty, bh, 1, dst);
    mama__taps_free(&tx);
    mama__taps_free(&ty);
    return s;
}

/* --------------------------------------------------------------------------
 * 9.4 The deterministic steps: letterbox, Otsu crop, stretch
 * ------------------------------------------------------------------------ */
MAMA_API mama_status mama_image_letterbox(const mama_image *src, int S, mama_image *dst, int placed[4]) {
    int nw, nh, px, py, y;
    mama_image small = {0, 0, NULL}, out;
    MAMA_TRY(mama__check_image(src, "letterbox"));
    if (S <= 0) return MAMA_FAIL(MAMA_ERR_INVALID, "letterbox: size %d", S);
    /* long side -> S; short side truncated (integer arithmetic, exact) */
    if (src->w >= src->h) { nw = S; nh = (int)((long long)src->h * S / src->w); }
    else { nh = S; nw = (int)((long long)src->w * S / src->h); }
    if (nw < 1) nw = 1;
    if (nh < 1) nh = 1;
    MAMA_TRY(mama_image_resize_area(src, nw, nh, &small));
    if (mama_image_alloc(&out, S, S) != MAMA_OK) { mama_image_free(&small); return MAMA_ERR_NOMEM; }
    px = (S - nw) / 2; /* floor on the left/top, the rest (ceil) right/bottom */
    py = (S - nh) / 2;
    for (y = 0; y < nh; y++) memcpy(out.pix + (size_t)(py + y) * S + px, small.pix + (size_t)y * nw, (size_t)nw);
    mama_image_free(&small);
    if (placed) { placed[0] = px; placed[1] = py; placed[2] = nw; placed[3] = nh; }
    mama__image_move(dst, &out);
    return MAMA_OK;
}

MAMA_API int mama_otsu_threshold(const mama_image *im) {
    /* Between-class variance of split t (class 0 = values <= t):
     *   w0 w1 (mu0 - mu1)^2 = (S0 N - S n0)^2 / (N^2 n0 n1)
     * with n0, S0 the count and sum of class 0 and N, S of the image.  The
     * N^2 is common to all t and dropped.  S0*N is exact in double for
     * images below ~6 Mpixel.  "First maximiser": a later t must beat the
     * best by a relative 1e-12, so rounding cannot break exact ties. */
    size_t hist[256], i, n = (size_t)im->w * (size_t)im->h, n0 = 0;
    double S = 0, S0 = 0, best = -1.0;
    int t, thr = -1;
    memset(hist, 0, sizeof hist);
    for (i = 0; i < n; i++) hist[im->pix[i]]++;
    for (t = 0; t < 256; t++) S += (double)t * (double)hist[t];
    for (t = 0; t < 255; t++) {
        double d, v;
        size_t n1;
        n0 += hist[t];
        S0 += (double)t * (double)hist[t];
        n1 = n - n0;
        if (n0 == 0 || n1 == 0) continue;
        d = S0 * (double)n - S * (double)n0;
        v = d * d / ((double)n0 * (double)n1);
        if (v > best * (1.0 + 1e-12) || best < 0) { best = v; thr = t; }
    }
    return thr;
}

MAMA_API int mama_foreground_box(const mama_image *im, int thr, int box[4]) {
    int x, y, x0 = im->w, y0 = im->h, x1 = -1, y1 = -1;
    for (y = 0; y < im->h; y++) {
        const uint8_t *r = im->pix + (size_t)y * im->w;
        for (x = 0; x < im->w; x++)
            if ((int)r[x] > thr) {
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (y < y0) y0 = y;
                y1 = y;
            }
    }
    if (x1 < 0) return 0;
    box[0] = x0; box[1] = y0; box[2] = x1; box[3] = y1;
    return 1;
}

/* Box of step 2 (whole image when there is no threshold or no foreground). */
static void mama__otsu_box(const mama_image *im, int box[4]) {
    int thr = mama_otsu_threshold(im);
    if (thr < 0 || !mama_foreground_box(im, thr, box)) {
        box[0] = 0; box[1] = 0; box[2] = im->w - 1; box[3] = im->h - 1;
    }
}

MAMA_API mama_status mama_image_otsu_crop(const mama_image *src, mama_image *dst, int box[4]) {
    int b[4], y, cw, ch;
    mama_image out;
    MAMA_TRY(mama__check_image(src, "otsu_crop"));
    mama__otsu_box(src, b);
    cw = b[2] - b[0] + 1;
    ch = b[3] - b[1] + 1;
    MAMA_TRY(mama_image_alloc(&out, cw, ch));
    for (y = 0; y < ch; y++) memcpy(out.pix + (size_t)y * cw, src->pix + (size_t)(b[1] + y) * src->w + b[0], (size_t)cw);
    if (box) memcpy(box, b, sizeof b);
    mama__image_move(dst, &out);
    return MAMA_OK;
}

MAMA_API mama_status mama_image_prepare(const mama_image *src, int S, mama_image *dst) {
    mama_image lb = {0, 0, NULL};
    int b[4];
    mama_status s;
    MAMA_TRY(mama_image_letterbox(src, S, &lb, NULL));
    mama__otsu_box(&lb, b);
    /* crop + stretch in one resample: taps never leave the box */
    s = mama_image_resize_bilinear(&lb, b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1, S, S, dst);
    mama_image_free(&lb);
    return s;
}

/* --------------------------------------------------------------------------
 * 9.5 The random steps
 * ------------------------------------------------------------------------ */
static double mama__round_half_even(double x) { /* Python's round() */
    double f = floor(x), d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return fmod(f, 2.0) == 0.0 ? f : f + 1;
}
static float mama__uniform_in(mama_rng *r, float a, float b) { return a + (b - a) * mama_rng_uniform(r); }

MAMA_API void mama_rrc_box(mama_rng *rng, int w, int h, float scale0, float scale1, float ratio0,
                           float ratio1, int attempts, int box[4]) {
    double area = (double)w * h, lr0 = log(ratio0), lr1 = log(ratio1), in_ratio;
    int a, cw, ch;
    for (a = 0; a < attempts; a++) {
        double target = area * mama__uniform_in(rng, scale0, scale1);
        double aspect = exp(lr0 + (lr1 - lr0) * mama_rng_uniform(rng));
        cw = (int)mama__round_half_even(sqrt(target * aspect));
        ch = (int)mama__round_half_even(sqrt(target / aspect));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            box[1] = (int)mama_rng_below(rng, (uint32_t)(h - ch + 1));
            box[0] = (int)mama_rng_below(rng, (uint32_t)(w - cw + 1));
            box[2] = cw;
            box[3] = ch;
            return;
        }
    }
    /* fallback: centre crop with the aspect clamped into the ratio range */
    in_ratio = (double)w / h;
    if (in_ratio < ratio0) { cw = w; ch = (int)mama__round_half_even(cw / (double)ratio0); }
    else if (in_ratio > ratio1) { ch = h; cw = (int)mama__round_half_even(ch * (double)ratio1); }
    else { cw = w; ch = h; }
    if (cw < 1) cw = 1;
    if (ch < 1) ch = 1;
    box[0] = (w - cw) / 2;
    box[1] = (h - ch) / 2;
    box[2] = cw;
    box[3] = ch;
}

MAMA_API void mama_image_hflip(mama_image *im) {
    int x, y;
    for (y = 0; y < im->h; y++) {
        uint8_t *r = im->pix + (size_t)y * im->w;
        for (x = 0; x < im->w / 2; x++) { uint8_t t = r[x]; r[x] = r[im->w - 1 - x]; r[im->w - 1 - x] = t; }
    }
}
MAMA_API void mama_image_vflip(mama_image *im) {
    int x, y;
    for (y = 0; y < im->h / 2; y++) {
        uint8_t *a = im->pix + (size_t)y * im->w, *b = im->pix + (size_t)(im->h - 1 - y) * im->w;
        for (x = 0; x < im->w; x++) { uint8_t t = a[x]; a[x] = b[x]; b[x] = t; }
    }
}

/* PIL's ImagingBlend(in1, in2, alpha) per pixel: in1 + alpha (in2 - in1) in
 * single precision, truncated; clipped only when alpha is outside [0, 1]
 * (inside, the result cannot leave the range). */
static uint8_t mama__pil_blend(int in1, int in2, float alpha) {
    float v = (float)in1 + alpha * (float)(in2 - in1);
    if (alpha >= 0.0f && alpha <= 1.0f) return (uint8_t)v;
    if (v <= 0.0f) return 0;
    if (v >= 255.0f) return 255;
    return (uint8_t)v;
}
MAMA_API void mama_image_brightness(mama_image *im, float f) {
    size_t i, n = (size_t)im->w * (size_t)im->h;
    uint8_t lut[256];
    int v;
    for (v = 0; v < 256; v++) lut[v] = mama__pil_blend(0, v, f);
    for (i = 0; i < n; i++) im->pix[i] = lut[im->pix[i]];
}
MAMA_API void mama_image_contrast(mama_image *im, float f) {
    size_t i, n = (size_t)im->w * (size_t)im->h;
    double sum = 0;
    uint8_t lut[256];
    int v, mean;
    for (i = 0; i < n; i++) sum += im->pix[i];
    mean = (int)(sum / (double)n + 0.5); /* PIL: int(ImageStat.mean + 0.5) */
    for (v = 0; v < 256; v++) lut[v] = mama__pil_blend(mean, v, f);
    for (i = 0; i < n; i++) im->pix[i] = lut[im->pix[i]];
}

MAMA_API void mama_gaussian_kernel1d(int k, float sigma, float *w) {
    double half = (k - 1) * 0.5, sum = 0, tmp;
    int i;
    for (i = 0; i < k; i++) {
        /* torch.linspace(-half, half, k) in float32, pdf in float32 */
        double x = -half + (k > 1 ? (2.0 * half) * i / (k - 1) : 0.0);
        tmp = exp(-0.5 * (x / sigma) * (x / sigma));
        w[i] = (float)tmp;
        sum += tmp;
    }
    for (i = 0; i < k; i++) w[i] = (float)((double)w[i] / sum);
}

/* reflect index into [0, n): -1 -> 1, n -> n-2 (no edge repeat) */
static int mama__reflect(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * (n - 1) - i;
    }
    return i;
}
static uint8_t mama__round_even_u8(double v) {
    double r;
    if (!(v > 0.0)) return 0;
    if (v >= 255.0) return 255;
    r = mama__round_half_even(v);
    return (uint8_t)r;
}

MAMA_API mama_status mama_image_gaussian_blur(mama_image *im, int k, float sigma) {
    float *wk = NULL, *tmp = NULL;
    int W = im->w, H = im->h, x, y, j, half = k / 2;
    MAMA_TRY(mama__check_image(im, "gaussian_blur"));
    if (k < 1 || (k & 1) == 0 || !(sigma > 0))
        return MAMA_FAIL(MAMA_ERR_INVALID, "gaussian_blur: kernel %d must be odd and positive, sigma %g > 0", k, (double)sigma);
    MAMA_TRY(mama_alloc((void **)&wk, (size_t)k * sizeof(float), "blur kernel"));
    if (mama_alloc((void **)&tmp, (size_t)W * (size_t)H * sizeof(float), "blur rows") != MAMA_OK) {
        mama_free(wk);
        return MAMA_ERR_NOMEM;
    }
    mama_gaussian_kernel1d(k, sigma, wk);
    for (y = 0; y < H; y++) {
        const uint8_t *r = im->pix + (size_t)y * W;
        for (x = 0; x < W; x++) {
            double acc = 0;
            for (j = 0; j < k; j++) acc += (double)wk[j] * r[mama__reflect(x + j - half, W)];
            tmp[(size_t)y * W + x] = (float)acc;
        }
    }
    for (y = 0; y < H; y++)
        for (x = 0; x < W; x++) {
            double acc = 0;
            for (j = 0; j < k; j++) acc += (double)wk[j] * tmp[(size_t)mama__reflect(y + j - half, H) * W + x];
            im->pix[(size_t)y * W + x] = mama__round_even_u8(acc);
        }
    mama_free(wk);
    mama_free(tmp);
    return MAMA_OK;
}

MAMA_API void mama_image_to_tensor(const mama_image *im, float mean, float std, int channels, float *out) {
    size_t i, n = (size_t)im->w * (size_t)im->h;
    float lut[256];
    int v, c;
    for (v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean) / std;
    for (i = 0; i < n; i++) out[i] = lut[im->pix[i]];
    for (c = 1; c < channels; c++) memcpy(out + (size_t)c * n, out, n * sizeof(float));
}

MAMA_API mama_augment_opts mama_augment_defaults(void) {
    mama_augment_opts o;
    memset(&o, 0, sizeof o);
    o.size = 518;
    o.rrc = 1;
    o.rrc_scale[0] = 0.1f; o.rrc_scale[1] = 1.0f;
    o.rrc_ratio[0] = 3.0f / 4.0f; o.rrc_ratio[1] = 4.0f / 3.0f;
    o.rrc_attempts = 10;
    o.hflip_p = 0.5f; o.vflip_p = 0.5f;
    o.jitter = 1; o.jitter_p = 0.8f;
    o.brightness[0] = 0.2f; o.brightness[1] = 1.8f;
    o.contrast[0] = 0.2f; o.contrast[1] = 1.8f;
    o.jitter_random_order = 1;
    o.blur = 1; o.blur_p = 0.4f; o.blur_kernel = 7;
    o.blur_sigma[0] = 0.1f; o.blur_sigma[1] = 2.0f;
    o.mean = 0.5f; o.std = 0.5f;
    return o;
}

MAMA_API mama_status mama_image_augment(const mama_image *prepared, const mama_augment_opts *o,
                                        mama_rng *rng, mama_image *dst) {
    int S = o->size, box[4];
    mama_image cur = {0, 0, NULL};
    MAMA_TRY(mama__check_image(prepared, "augment"));
    if (!rng) return MAMA_FAIL(MAMA_ERR_INVALID, "augment: rng is NULL");
    /* 4. RandomResizedCrop (or a plain copy/resize to S when disabled) */
    if (o->rrc) {
        mama_rrc_box(rng, prepared->w, prepared->h, o->rrc_scale[0], o->rrc_scale[1], o->rrc_ratio[0],
                     o->rrc_ratio[1], o->rrc_attempts, box);
        MAMA_TRY(mama_image_resize_bilinear(prepared, box[0], box[1], box[2], box[3], S, S, &cur));
    } else if (prepared->w == S && prepared->h == S) {
        MAMA_TRY(mama_image_copy(prepared, &cur));
    } else {
        MAMA_TRY(mama_image_resize_bilinear(prepared, 0, 0, prepared->w, prepared->h, S, S, &cur));
    }
    /* 5. flips */
    if (o->hflip_p > 0 && mama_rng_uniform(rng) < o->hflip_p) mama_image_hflip(&cur);
    if (o->vflip_p > 0 && mama_rng_uniform(rng) < o->vflip_p) mama_image_vflip(&cur);
    /* 6. jitter: RandomApply(ColorJitter) */
    if (o->jitter && mama_rng_uniform(rng) < o->jitter_p) {
        int contrast_first = o->jitter_random_order ? (int)mama_rng_below(rng, 2) : 0;
        float fb = mama__uniform_in(rng, o->brightness[0], o->brightness[1]);
        float fc = mama__uniform_in(rng, o->contrast[0], o->contrast[1]);
        if (contrast_first) { mama_image_contrast(&cur, fc); mama_image_brightness(&cur, fb); }
        else { mama_image_brightness(&cur, fb); mama_image_contrast(&cur, fc); }
    }
    /* 7. blur */
    if (o->blur && mama_rng_uniform(rng) < o->blur_p) {
        float sigma = mama__uniform_in(rng, o->blur_sigma[0], o->blur_sigma[1]);
        mama_status s = mama_image_gaussian_blur(&cur, o->blur_kernel, sigma);
        if (s != MAMA_OK) { mama_image_free(&cur); return s; }
    }
    mama__image_move(dst, &cur);
    return MAMA_OK;
}

MAMA_API mama_status mama_image_pipeline(const mama_image *src, const mama_augment_opts *o, int train,
                                         mama_rng *rng, int channels, float *out) {
    mama_image prep = {0, 0, NULL}, aug = {0, 0, NULL};
    mama_status s;
    if (!o || !out || channels < 1) return MAMA_FAIL(MAMA_ERR_INVALID, "image_pipeline: bad arguments");
    MAMA_TRY(mama_image_prepare(src, o->size, &prep));
    if (train) {
        s = mama_image_augment(&prep, o, rng, &aug);
        mama_image_free(&prep);
        if (s != MAMA_OK) return s;
        mama_image_to_tensor(&aug, o->mean, o->std, channels, out);
        mama_image_free(&aug);
    } else {
        mama_image_to_tensor(&prep, o->mean, o->std, channels, out);
        mama_image_free(&prep);
    }
    return MAMA_OK;
}

/* --------------------------------------------------------------------------
 * 9.6 Synthetic mammograms
 *
 * A breast is drawn in "chest-wall coordinates": u = depth from the chest
 * wall (image x for left breasts, W-1-x for right ones), y = image row.
 * Outline: (u/a)^2 + ((y - c(u))/b)^2 < 1, a half ellipse whose centre line
 * c(u) runs from c0 at the chest wall to c1 at the nipple (CC: straight;
 * MLO: starts high, the axillary tail leaves the top of the image, and
 * droops to the nipple).  rho = sqrt(that form) is 0 on the centre line at
 * the chest wall and 1 on the skin.
 * Tissue: a smooth score field (isotropic value noise plus noise in polar
 * coordinates around the nipple, which makes ducts streak towards it, plus a
 * central prior) is thresholded at the quantile that makes the breast's
 * dense fraction match its density class (1: ~5%, 2: ~25%, 3: ~55%,
 * 4: ~85%), with a soft edge; dense tissue is bright, fat is grey.
 * A finding lives at one 3-D place of the breast (distance q from the
 * nipple as a fraction of the depth, lateral-medial m, superior-inferior s)
 * and is projected into both views: CC rows follow m, MLO rows the oblique
 * mix (0.8 s + 0.45 m)/0.92; the depth is shared.
 * ------------------------------------------------------------------------ */

static const char *const mama__letters = "ANBPSMK";
static const char *const mama__shape_names[4] = {"round", "oval", "irregular", "spiculated"};
static const char *const mama__mdens_names[3] = {"low density", "equal density", "high density"};
static const char *const mama__calc_names[5] = {"punctate", "amorphous", "coarse heterogeneous",
                                                "pleomorphic", "fine linear branching"};
static const char *const mama__dist_names[4] = {"grouped", "segmental", "regional", "linear"};

#define MAMA__MAXCALC 48
#define MAMA__MAXSPIC 16
typedef struct mama__breast {
    int letter;                 /* index into "ANBPSMK"                   */
    int density;                /* 1..4                                   */
    float depth, halfh;         /* a / W, b / H of the CC outline          */
    float fat, dense;           /* grey levels of fat and dense tissue     */
    float dense_frac;
    uint64_t tex_seed;
    /* finding */
    int mass, calc, asym, clip; /* what is present                         */
    int shape, mdens;           /* mass shape 0..3, density 0..2           */
    int ctype, cdist;           /* calcification type 0..4, distribution   */
    int cancer;
    float q, m, s;              /* place: distance from nipple, clock      */
    float r0;                   /* mass radius / image height              */
    float harm[5], phase[5];    /* radial harmonics of irregular outlines  */
    float oval, angle;          /* oval axis ratio and orientation         */
    int nspic;
    float spic_ang[MAMA__MAXSPIC], spic_len[MAMA__MAXSPIC];
    int ncalc;                  /* calcification offsets (image heights)   */
    float cdu[MAMA__MAXCALC], cdm[MAMA__MAXCALC], cds[MAMA__MAXCALC];
    float crad[MAMA__MAXCALC], camp[MAMA__MAXCALC], celong[MAMA__MAXCALC], cang[MAMA__MAXCALC];
    float clip_du, clip_dm, clip_ds, clip_ang;
} mama__breast;

typedef struct mama__view {
    int W, H, mlo, right;
    float a, b, c0, c1;   /* outline */
    float pw, ph;         /* pectoral muscle extent (MLO) */
    float pect_level;
} mama__view;

static float mama__smooth(float t) { /* smoothstep on [0,1] */
    if (t <= 0) return 0;
    if (t >= 1) return 1;
    return t * t * (3 - 2 * t);
}

/* Value noise on a lattice of random values, smooth (C1) interpolation. */
typedef struct mama__grid { int gw, gh; float *v; } mama__grid;
static mama_status mama__grid_make(mama__grid *g, int gw, int gh, mama_rng *r) {
    int i;
    g->gw = gw;
    g->gh = gh;
    MAMA_TRY(mama_alloc((void **)&g->v, (size_t)gw * (size_t)gh * sizeof(float), "noise lattice"));
    /* uniform values with unit variance: as smooth as Gaussian ones once
     * interpolated, and far cheaper to draw */
    for (i = 0; i < gw * gh; i++) g->v[i] = 3.4641016f * (mama_rng_uniform(r) - 0.5f);
    return MAMA_OK;
}
/* sample at lattice coordinates (gx, gy); wrap_x makes x periodic (angles) */
static float mama__grid_at(const mama__grid *g, float gx, float gy, int wrap_x) {
    int x0, y0, x1, y1;
    float fx, fy, a, b, c, d, top, bot;
    if (gy < 0) gy = 0;
    if (gy > (float)(g->gh - 1)) gy = (float)(g->gh - 1);
    if (wrap_x) {
        if (gx < 0) gx += (float)g->gw * (float)(1 + (int)(-gx / (float)g->gw));
    } else {
        if (gx < 0) gx = 0;
        if (gx > (float)(g->gw - 1)) gx = (float)(g->gw - 1);
    }
    x0 = (int)gx; /* gx, gy >= 0 here: truncation is floor */
    y0 = (int)gy;
    fx = gx - (float)x0;
    fy = gy - (float)y0;
    fx = fx * fx * (3 - 2 * fx);
    fy = fy * fy * (3 - 2 * fy);
    if (wrap_x) {
        x0 %= g->gw;
        x1 = x0 + 1 == g->gw ? 0 : x0 + 1;
    } else {
        x1 = x0 + 1 < g->gw ? x0 + 1 : x0;
    }
    y1 = y0 + 1 < g->gh ? y0 + 1 : y0;
    a = g->v[y0 * g->gw + x0]; b = g->v[y0 * g->gw + x1];
    c = g->v[y1 * g->gw + x0]; d = g->v[y1 * g->gw + x1];
    top = a + (b - a) * fx;
    bot = c + (d - c) * fx;
    return top + (bot - top) * fy;
}

static float mama__view_center(const mama__view *v, float u) { return v->c0 + (v->c1 - v->c0) * (u / v->a); }
/* rho^2 of the outline form at (u, y) */
static float mama__view_rho2(const mama__view *v, float u, float y) {
    float du = u / v->a, dy = (y - mama__view_center(v, u)) / v->b;
    return du * du + dy * dy;
}
static float mama__view_xf(const mama__view *v, float u) { return v->right ? (float)(v->W - 1) - u : u; }
/* Pectoral: inside when (u/pw)^1.25 + (y/ph)^1.25 < 1 (slightly convex);
 * x^1.25 = x sqrt(sqrt(x)).  Values >= 1.3 are reported as 2 (outside). */
static float mama__pect_form(const mama__view *v, float u, float y) {
    float a, b;
    if (!v->mlo || u < 0 || y < 0 || u > 1.3f * v->pw || y > 1.3f * v->ph) return 2.0f;
    a = u / v->pw;
    b = y / v->ph;
    return a * sqrtf(sqrtf(a)) + b * sqrtf(sqrtf(b));
}

/* Image position (x, y) of a 3-D breast place in a view. */
static void mama__project(const mama__view *v, float q, float m, float s, float *x, float *y) {
    float u = v->a * (1.0f - q), t = u / v->a, hw = v->b * sqrtf(1.0f - t * t > 0 ? 1.0f - t * t : 0.0f);
    float across = v->mlo ? (0.8f * s + 0.45f * m) / 0.92f : m;
    if (across > 1) across = 1;
    if (across < -1) across = -1;
    *x = mama__view_xf(v, u);
    *y = mama__view_center(v, u) - across * hw * 0.75f;
}

static void mama__view_setup(mama__view *v, const mama__breast *br, int W, int H, int mlo, int right, mama_rng *r) {
    v->W = W; v->H = H; v->mlo = mlo; v->right = right;
    if (!mlo) {
        v->a = br->depth * (float)W;
        v->b = br->halfh * (float)H;
        v->c0 = v->c1 = (0.5f + 0.04f * (mama_rng_uniform(r) - 0.5f)) * (float)H;
        v->pw = v->ph = 0;
    } else {
        v->a = br->depth * (float)W * 1.06f;
        v->b = br->halfh * (float)H * 1.25f;
        v->c0 = (0.36f + 0.06f * mama_rng_uniform(r)) * (float)H;
        v->c1 = (0.56f + 0.06f * mama_rng_uniform(r)) * (float)H;
        v->pw = (0.22f + 0.12f * mama_rng_uniform(r)) * (float)W;
        v->ph = (0.36f + 0.18f * mama_rng_uniform(r)) * (float)H;
    }
    v->pect_level = 150.0f + 25.0f * mama_rng_uniform(r);
}

static int mama__pick(mama_rng *r, const float *p, int n) {
    float u = mama_rng_uniform(r), c = 0;
    int i;
    for (i = 0; i < n; i++) { c += p[i]; if (u < c) return i; }
    return n - 1;
}

/* Draw one breast: tissue parameters and its finding from the letter. */
static void mama__breast_draw(mama__breast *br, int letter, int density, mama_rng *r) {
    static const float dfrac[5] = {0, 0.05f, 0.25f, 0.55f, 0.85f};
    int i;
    memset(br, 0, sizeof *br);
    br->letter = letter;
    br->density = density;
    br->depth = 0.62f + 0.22f * mama_rng_uniform(r);
    br->halfh = 0.33f + 0.09f * mama_rng_uniform(r);
    br->fat = 78.0f + 16.0f * mama_rng_uniform(r);
    br->dense = 168.0f + 18.0f * mama_rng_uniform(r);
    br->dense_frac = dfrac[density] * (0.85f + 0.3f * mama_rng_uniform(r));
    if (br->dense_frac > 0.95f) br->dense_frac = 0.95f;
    br->tex_seed = mama_rng_u64(r);
    /* place of the finding: 15-70% of the way from the nipple, inside a
     * disc of the cross-section */
    br->q = 0.15f + 0.5f * mama_rng_uniform(r);
    {
        float ang = 6.2831853f * mama_rng_uniform(r), rad = 0.65f * sqrtf(mama_rng_uniform(r));
        br->m = rad * cosf(ang);
        br->s = rad * sinf(ang);
    }
    br->r0 = 0.018f + 0.016f * mama_rng_uniform(r);
    br->oval = 1.0f;
    br->angle = 3.14159265f * mama_rng_uniform(r);
    switch (mama__letters[letter]) {
    case 'N': break;
    case 'A': br->asym = 1; br->r0 = 0.05f + 0.03f * mama_rng_uniform(r); break;
    case 'B':
        if (mama_rng_uniform(r) < 0.45f) {
            br->mass = 1; br->shape = mama_rng_uniform(r) < 0.5f ? 0 : 1;
            br->mdens = mama_rng_uniform(r) < 0.5f ? 0 : 1;
        } else {
            br->calc = 1; br->ctype = mama_rng_uniform(r) < 0.6f ? 0 : 2; br->cdist = 2;
        }
        break;
    case 'P':
        if (mama_rng_uniform(r) < 0.7f) { br->mass = 1; br->shape = 1; br->mdens = 1; }
        else { br->calc = 1; br->ctype = 0; br->cdist = 0; }
        break;
    case 'S': {
        float u = mama_rng_uniform(r);
        if (u < 0.6f) { br->mass = 1; br->shape = 2; br->mdens = mama_rng_uniform(r) < 0.5f ? 1 : 2; }
        if (u >= 0.4f) {
            br->calc = 1;
            br->ctype = mama_rng_uniform(r) < 0.6f ? 3 : 1;
            br->cdist = mama_rng_uniform(r) < 0.7f ? 0 : 3;
        }
        /* the visible high-risk patterns are the cancers among S */
        br->cancer = (br->mass && br->mdens == 2) || (br->calc && br->ctype == 3 && br->cdist == 3);
        break;
    }
    case 'M': case 'K':
        br->mass = 1; br->shape = 3; br->mdens = 2; br->cancer = 1;
        if (mama_rng_uniform(r) < 0.35f) { br->calc = 1; br->ctype = 4; br->cdist = mama_rng_uniform(r) < 0.5f ? 3 : 1; }
        br->clip = mama__letters[letter] == 'K';
        break;
    }
    if (br->mass && br->shape == 1) { br->oval = 1.4f + 0.4f * mama_rng_uniform(r); }
    for (i = 0; i < 5; i++) {
        br->harm[i] = br->mass && br->shape >= 2 ? (0.08f + 0.10f * mama_rng_uniform(r)) / (1.0f + 0.4f * i) : 0.0f;
        br->phase[i] = 6.2831853f * mama_rng_uniform(r);
    }
    if (br->mass && br->shape == 3) {
        br->nspic = 8 + (int)mama_rng_below(r, 8);
        for (i = 0; i < br->nspic; i++) {
            br->spic_ang[i] = 6.2831853f * ((float)i + 0.6f * mama_rng_uniform(r)) / (float)br->nspic;
            br->spic_len[i] = 1.6f + 1.4f * mama_rng_uniform(r);
        }
    }
    if (br->calc) {
        /* offsets in units of the image height */
        int n = br->cdist == 2 ? 14 + (int)mama_rng_below(r, 14) : 6 + (int)mama_rng_below(r, 10);
        float spread = br->cdist == 2 ? 0.09f : 0.018f;
        float dir = 6.2831853f * mama_rng_uniform(r);
        br->ncalc = n;
        for (i = 0; i < n; i++) {
            float t = mama_rng_uniform(r) - 0.5f;
            switch (br->cdist) {
            case 0: case 2: /* grouped / regional: a blob */
                br->cdu[i] = spread * mama_rng_normal(r) * 0.6f;
                br->cdm[i] = spread * mama_rng_normal(r) * 0.6f;
                br->cds[i] = spread * mama_rng_normal(r) * 0.6f;
                break;
            case 3: /* linear: along a line through the place */
                br->cdu[i] = 0.07f * t * cosf(dir) + 0.002f * mama_rng_normal(r);
                br->cdm[i] = 0.07f * t * sinf(dir) + 0.002f * mama_rng_normal(r);
                br->cds[i] = 0.07f * t * sinf(dir) + 0.002f * mama_rng_normal(r);
                break;
            default: /* segmental: a wedge opening away from the nipple */
                br->cdu[i] = -0.06f * (t + 0.5f);
                br->cdm[i] = (0.01f + 0.3f * (t + 0.5f) * 0.08f) * mama_rng_normal(r);
                br->cds[i] = (0.01f + 0.3f * (t + 0.5f) * 0.08f) * mama_rng_normal(r);
                break;
            }
            switch (br->ctype) {
            case 0: br->crad[i] = 0.7f; br->camp[i] = 80; br->celong[i] = 1; break;        /* punctate */
            case 1: br->crad[i] = 0.9f; br->camp[i] = 40; br->celong[i] = 1; break;        /* amorphous: faint */
            case 2: br->crad[i] = 1.6f; br->camp[i] = 90; br->celong[i] = 1.3f; break;     /* coarse */
            case 3: br->crad[i] = 0.6f + 0.8f * mama_rng_uniform(r); br->camp[i] = 70 + 30 * mama_rng_uniform(r);
                    br->celong[i] = 1.0f + 1.5f * mama_rng_uniform(r); break;              /* pleomorphic */
            default: br->crad[i] = 0.6f; br->camp[i] = 80; br->celong[i] = 3.0f; break;   /* fine linear */
            }
            br->cang[i] = br->ctype == 4 ? dir : 3.14159265f * mama_rng_uniform(r);
        }
    }
    if (br->clip) {
        br->clip_du = 0.02f * mama_rng_normal(r);
        br->clip_dm = 0.02f * mama_rng_normal(r);
        br->clip_ds = 0.02f * mama_rng_normal(r);
        br->clip_ang = 3.14159265f * mama_rng_uniform(r);
    }
}

static void mama__box_add(int box[4], int x, int y) {
    if (box[0] < 0 || x < box[0]) box[0] = x;
    if (box[1] < 0 || y < box[1]) box[1] = y;
    if (x > box[2]) box[2] = x;
    if (y > box[3]) box[3] = y;
}

/* Mass outline radius (pixels) in direction th: harmonics make irregular
 * outlines; an oval stretches along `angle`. */
static float mama__mass_radius(const mama__breast *br, float r0, float th) {
    float rr = 1.0f, c, s;
    int i;
    for (i = 0; i < 5; i++) rr += br->harm[i] * cosf((float)(i + 2) * th + br->phase[i]);
    c = cosf(th - br->angle);
    s = sinf(th - br->angle);
    if (br->oval != 1.0f) rr *= 1.0f / sqrtf(c * c / (br->oval * br->oval) + s * s) / sqrtf(br->oval);
    return r0 * rr;
}

/* Add the breast's finding to image f (float grey levels) of view v. */
static void mama__draw_finding(float *f, const mama__view *v, const mama__breast *br, float view_rot, int box[4]) {
    int W = v->W, H = v->H, x, y, i;
    float cx, cy, scale = (float)H / 256.0f;
    mama__project(v, br->q, br->m, br->s, &cx, &cy);
    if (br->asym) {
        float R = br->r0 * (float)H, amp = (br->dense - br->fat) * 0.55f;
        int x0 = (int)(cx - 2 * R), x1 = (int)(cx + 2 * R), y0 = (int)(cy - 2 * R), y1 = (int)(cy + 2 * R);
        for (y = y0 < 0 ? 0 : y0; y <= y1 && y < H; y++)
            for (x = x0 < 0 ? 0 : x0; x <= x1 && x < W; x++) {
                float dx = ((float)x - cx) / R, dy = ((float)y - cy) / (R * 0.8f), d2 = dx * dx + dy * dy;
                float g = expf(-1.5f * d2 * d2);
                if (g > 0.05f) {
                    /* adds tissue, most where there was fat: no saturation */
                    float room = (br->dense + 15.0f - f[(size_t)y * W + x]) / (br->dense - br->fat);
                    f[(size_t)y * W + x] += amp * g * (room < 0 ? 0 : room > 1 ? 1 : room);
                    if (g > 0.3f) mama__box_add(box, x, y);
                }
            }
    }
    if (br->mass) {
        static const float amp_of[3] = {28, 48, 72};
        float R = br->r0 * (float)H, amp = amp_of[br->mdens], reach = R * (br->nspic ? 3.2f : 1.6f);
        float edge = br->shape <= 1 ? 0.9f : 2.2f; /* circumscribed: sharp edge */
        int x0 = (int)(cx - reach) - 1, x1 = (int)(cx + reach) + 1, y0 = (int)(cy - reach) - 1, y1 = (int)(cy + reach) + 1;
        for (y = y0 < 0 ? 0 : y0; y <= y1 && y < H; y++)
            for (x = x0 < 0 ? 0 : x0; x <= x1 && x < W; x++) {
                float dx = (float)x - cx, dy = (float)y - cy, d = sqrtf(dx * dx + dy * dy);
                float th = atan2f(dy, dx) + view_rot, rad = mama__mass_radius(br, R, th);
                float g = mama__smooth((rad - d) / edge + 0.5f), add;
                add = amp * g * (0.85f + 0.15f * (1.0f - (d * d) / (rad * rad + 1e-6f)));
                for (i = 0; i < br->nspic; i++) {
                    /* a spicule: a thin line tapering from the outline */
                    float ca = cosf(br->spic_ang[i] - view_rot), sa = sinf(br->spic_ang[i] - view_rot);
                    float along = dx * ca + dy * sa, perp = fabsf(-dx * sa + dy * ca), len = br->spic_len[i] * R;
                    if (along > 0 && along < len) {
                        float wdt = 0.9f * scale * (1.2f - along / len), s;
                        s = mama__smooth(1.0f - perp / (wdt > 0.35f ? wdt : 0.35f)) * (1.0f - 0.7f * along / len);
                        if (amp * 0.75f * s > add) add = amp * 0.75f * s;
                    }
                }
                if (add > 0.5f) {
                    f[(size_t)y * W + x] += add;
                    if (add > amp * 0.3f) mama__box_add(box, x, y);
                }
            }
    }
    if (br->calc) {
        for (i = 0; i < br->ncalc; i++) {
            float px, py, rr = br->crad[i] * (scale > 1 ? scale : 1.0f), reach, ca = cosf(br->cang[i]), sa = sinf(br->cang[i]);
            float across = v->mlo ? (0.8f * br->cds[i] + 0.45f * br->cdm[i]) / 0.92f : br->cdm[i];
            px = cx + (v->right ? -1.0f : 1.0f) * br->cdu[i] * (float)H;
            py = cy - across * (float)H;
            reach = rr * br->celong[i] + 1.5f;
            for (y = (int)(py - reach); y <= (int)(py + reach) + 1; y++)
                for (x = (int)(px - reach); x <= (int)(px + reach) + 1; x++) {
                    float dx, dy, a1, a2, d, cov;
                    if (x < 0 || y < 0 || x >= W || y >= H) continue;
                    dx = (float)x - px; dy = (float)y - py;
                    a1 = (dx * ca + dy * sa) / br->celong[i];
                    a2 = -dx * sa + dy * ca;
                    d = sqrtf(a1 * a1 + a2 * a2);
                    cov = br->ctype == 1 ? expf(-d * d / (2 * rr * rr)) : mama__smooth(rr + 0.5f - d);
                    if (cov > 0.02f) {
                        f[(size_t)y * W + x] += br->camp[i] * cov;
                        if (cov > 0.3f && mama__view_rho2(v, v->right ? (float)(W - 1 - x) : (float)x, (float)y) < 1)
                            mama__box_add(box, x, y);
                    }
                }
        }
    }
    if (br->clip) {
        /* a metal biopsy marker: a short bright bar with a hook, saturating */
        float px = cx + (v->right ? -1.0f : 1.0f) * br->clip_du * (float)H, py, len = 3.0f * scale + 1.5f;
        float across = v->mlo ? (0.8f * br->clip_ds + 0.45f * br->clip_dm) / 0.92f : br->clip_dm;
        float ca = cosf(br->clip_ang + view_rot), sa = sinf(br->clip_ang + view_rot);
        py = cy - across * (float)H;
        for (y = (int)(py - len) - 2; y <= (int)(py + len) + 2; y++)
            for (x = (int)(px - len) - 2; x <= (int)(px + len) + 2; x++) {
                float dx, dy, along, perp, cov;
                if (x < 0 || y < 0 || x >= W || y >= H) continue;
                dx = (float)x - px; dy = (float)y - py;
                along = dx * ca + dy * sa;
                perp = -dx * sa + dy * ca;
                cov = mama__smooth(len - fabsf(along) + 0.5f) * mama__smooth(0.6f * scale + 0.5f - fabsf(perp));
                if (along > len * 0.4f && perp > 0) /* the hook */
                    cov = fmaxf(cov, mama__smooth(1.6f * scale + 0.5f - perp) * mama__smooth(0.6f * scale + 0.5f - fabsf(along - len)));
                if (cov > 0.05f) {
                    f[(size_t)y * W + x] = f[(size_t)y * W + x] * (1 - cov) + 255.0f * cov + 40.0f * cov;
                    mama__box_add(box, x, y);
                }
            }
    }
}

/* Fractal (fBm) value noise: octaves of lattice noise, each rotated by its
 * own angle about the image centre so that no lattice axis shows. */
#define MAMA__OCT 5
typedef struct mama__fbm {
    mama__grid g[MAMA__OCT];
    float cell[MAMA__OCT], c[MAMA__OCT], s[MAMA__OCT], cx, cy, half;
} mama__fbm;
static void mama__fbm_free(mama__fbm *f) {
    int o;
    for (o = 0; o < MAMA__OCT; o++) { mama_free(f->g[o].v); f->g[o].v = NULL; }
}
static mama_status mama__fbm_make(mama__fbm *f, int W, int H, float coarse, mama_rng *r) {
    int o;
    float diag = sqrtf((float)W * W + (float)H * H);
    memset(f, 0, sizeof *f);
    f->cx = 0.5f * (float)W;
    f->cy = 0.5f * (float)H;
    f->half = 0.5f * diag;
    for (o = 0; o < MAMA__OCT; o++) {
        float ang = 6.2831853f * mama_rng_uniform(r);
        int n;
        f->cell[o] = coarse / (float)(1 << o);
        if (f->cell[o] < 1.5f) f->cell[o] = 1.5f;
        f->c[o] = cosf(ang);
        f->s[o] = sinf(ang);
        n = (int)(diag / f->cell[o]) + 3;
        if (mama__grid_make(&f->g[o], n, n, r) != MAMA_OK) { mama__fbm_free(f); return MAMA_ERR_NOMEM; }
    }
    return MAMA_OK;
}
/* octave o of the noise at pixel (x, y) */
static float mama__fbm_oct(const mama__fbm *f, int o, float x, float y) {
    float dx = x - f->cx, dy = y - f->cy;
    float xr = f->c[o] * dx - f->s[o] * dy + f->half, yr = f->s[o] * dx + f->c[o] * dy + f->half;
    return mama__grid_at(&f->g[o], xr / f->cell[o], yr / f->cell[o], 0);
}

/* Render one view into img (allocated here).  mlo: 0 CC, 1 MLO. */
static mama_status mama__render_view(const mama__breast *br, int W, int H, int mlo, int right,
                                     uint64_t view_seed, mama_image *img, int box[4]) {
    mama_rng r;
    mama__view v;
    mama__fbm fb;
    mama__grid g_pol = {0, 0, NULL}, g_pol2 = {0, 0, NULL};
    float *f = NULL, *score = NULL, nx, ny, smin = 1e30f, smax = -1e30f, thr, soft;
    double ssum = 0, ssq = 0;
    int x, y, nb = 0, bins[1024], i, umax;
    size_t npix = (size_t)W * (size_t)H;
    mama_status st = MAMA_OK;
    box[0] = box[1] = box[2] = box[3] = -1;
    img->pix = NULL;
    memset(&fb, 0, sizeof fb);
    mama_rng_seed(&r, view_seed);
    mama__view_setup(&v, br, W, H, mlo, right, &r);
    /* nipple position in image coordinates */
    nx = mama__view_xf(&v, v.a);
    ny = v.c1;
    if ((st = mama_image_alloc(img, W, H)) != MAMA_OK) goto done;
    if ((st = mama_alloc((void **)&f, npix * sizeof(float), "synthetic image")) != MAMA_OK) goto done;
    if ((st = mama_alloc((void **)&score, npix * sizeof(float), "synthetic tissue score")) != MAMA_OK) goto done;
    {
        mama_rng tr;
        mama_rng_seed(&tr, br->tex_seed ^ (view_seed * 0x9E3779B97F4A7C15ull));
        if ((st = mama__fbm_make(&fb, W, H, (float)H / 5.0f, &tr)) != MAMA_OK) goto done;
        if ((st = mama__grid_make(&g_pol, 40, 10, &tr)) != MAMA_OK) goto done;   /* angle x radius */
        if ((st = mama__grid_make(&g_pol2, 150, 30, &tr)) != MAMA_OK) goto done;
    }
    /* pass 1: outline and tissue score */
    umax = (int)v.a + 2;
    for (y = 0; y < H; y++)
        for (x = 0; x < W; x++) {
            size_t k = (size_t)y * W + x;
            float u = right ? (float)(W - 1 - x) : (float)x, rho2, sc, dx, dy, rad, ang, fx = (float)x, fy = (float)y;
            score[k] = -1e30f;
            if ((int)u > umax) continue;
            rho2 = mama__view_rho2(&v, u, fy);
            if (rho2 >= 1.0f) continue;
            dx = (fx - nx) / v.a;
            dy = (fy - ny) / v.a;
            rad = sqrtf(dx * dx + dy * dy);
            ang = atan2f(dy, right ? dx : -dx); /* mirror so both sides streak alike */
            /* ducts streak towards the nipple, fading out right at it */
            sc = 0.60f * mama__fbm_oct(&fb, 0, fx, fy) + 0.38f * mama__fbm_oct(&fb, 1, fx, fy) +
                 0.22f * mama__fbm_oct(&fb, 2, fx, fy) +
                 mama__smooth((rad - 0.08f) / 0.45f) * (0.40f * mama__grid_at(&g_pol, ang / 6.2831853f * 40.0f, rad * 9.0f, 1) +
                                            0.20f * mama__grid_at(&g_pol2, ang / 6.2831853f * 90.0f, rad * 29.0f, 1));
            /* glandular tissue sits centrally, behind the nipple */
            sc -= 1.2f * rho2;
            score[k] = sc;
            /* the pectoral muscle is not breast: it stays out of the quantile */
            if (mlo && mama__pect_form(&v, u, fy) < 1.0f) continue;
            img->pix[k] = 1;
            if (sc < smin) smin = sc;
            if (sc > smax) smax = sc;
            ssum += sc;
            ssq += (double)sc * sc;
            nb++;
        }
    /* threshold at the (1 - dense_frac) quantile of the breast's scores */
    thr = smax;
    soft = 0.1f;
    if (nb > 0 && smax > smin) {
        long need = (long)((double)br->dense_frac * nb), acc = 0;
        double mean = ssum / nb, var = ssq / nb - mean * mean;
        memset(bins, 0, sizeof bins);
        for (i = 0; i < (int)npix; i++)
            if (img->pix[i]) {
                int b = (int)((score[i] - smin) / (smax - smin) * 1023.0f);
                bins[b < 0 ? 0 : b > 1023 ? 1023 : b]++;
            }
        for (i = 1023; i >= 0; i--) {
            acc += bins[i];
            if (acc >= need) break;
        }
        thr = smin + (smax - smin) * ((float)(i < 0 ? 0 : i) + 0.5f) / 1023.0f;
        soft = 0.9f * (float)sqrt(var > 0 ? var : 0);
    }
    /* pass 2: grey levels */
    for (y = 0; y < H; y++)
        for (x = 0; x < W; x++) {
            size_t k = (size_t)y * W + x;
            float u = right ? (float)(W - 1 - x) : (float)x, rho2, val, g, fine, fine2, edge_px, rho, pf, fx = (float)x, fy = (float)y;
            f[k] = 0.0f;
            if ((int)u > umax) continue;
            rho2 = mama__view_rho2(&v, u, fy);
            if (rho2 >= 1.0f) continue;
            rho = sqrtf(rho2);
            fine = mama__fbm_oct(&fb, 3, fx, fy);
            fine2 = mama__fbm_oct(&fb, 4, fx, fy);
            pf = mama__pect_form(&v, u, fy);
            if (score[k] > -1e29f) {
                /* dense where the score passes the threshold; the finer
                 * octaves leave fat lobules inside and strands outside */
                float z = score[k] - thr + 0.30f * soft * (0.8f * fine + 0.6f * fine2), cloud;
                g = mama__smooth(z / soft + 0.5f);
                cloud = mama__smooth(z / (4.0f * soft) + 0.5f); /* wide, cloudy transition */
                val = br->fat + 7.0f * fine + 4.0f * fine2 + (br->dense - br->fat) * (0.6f * g + 0.4f * cloud);
            } else {
                val = br->fat;
            }
            if (mlo && pf < 1.25f) {
                /* pectoral muscle: bright, brighter towards the corner, soft edge, faint striation */
                float m = mama__smooth((1.0f - pf) / 0.06f + 0.5f);
                float pv = v.pect_level + 20.0f * (1.0f - pf) + 5.0f * fine + 3.0f * fine2;
                val = val * (1 - m) + pv * m;
            }
            /* thinner tissue towards the skin: darker periphery */
            edge_px = (1.0f - rho) * (v.a < v.b ? v.a : v.b);
            val *= 0.60f + 0.40f * mama__smooth(edge_px / (0.10f * (float)H));
            /* skin line: a thin brighter band */
            if (edge_px < 0.006f * (float)H + 0.8f) val += 26.0f;
            f[k] = val;
        }
    mama__draw_finding(f, &v, br, mlo ? 0.6f : 0.0f, box);
    /* acquisition noise, nearly Gaussian: the sum of four 16-bit uniforms
     * (Irwin-Hall, variance 4/12) from one 64-bit draw; the background keeps
     * a faint noise floor */
    for (i = 0; i < (int)npix; i++) {
        uint64_t z = mama_rng_u64(&r);
        float val = f[i], nz = ((float)((z & 0xFFFF) + ((z >> 16) & 0xFFFF) + ((z >> 32) & 0xFFFF) + (z >> 48)) *
                                    (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
        if (val > 0) val += 2.5f * nz;
        else val = fabsf(1.2f * nz);
        img->pix[i] = mama__round_u8(val);
    }
done:
    mama_free(f);
    mama_free(score);
    mama__fbm_free(&fb);
    mama_free(g_pol.v);
    mama_free(g_pol2.v);
    if (st != MAMA_OK) mama_image_free(img);
    return st;
}

static uint64_t mama__study_seed(uint64_t seed, uint64_t index) {
    uint64_t x = seed ^ ((index + 1) * 0xD1B54A32D192ED03ull);
    return mama__splitmix64(&x);
}

MAMA_API mama_status mama_synth_study(uint64_t seed, int index, int size, int balanced, mama_synth_image views[4]) {
    static const float p_letter[7] = {0.10f, 0.50f, 0.22f, 0.06f, 0.06f, 0.035f, 0.025f}; /* A N B P S M K */
    static const float p_density[4] = {0.10f, 0.40f, 0.40f, 0.10f};
    static const char *const races[6] = {"Caucasian or White", "African American or Black", "Asian",
                                         "Native Hawaiian or Other Pacific Islander",
                                         "American Indian or Alaskan Native", "Unknown"};
    static const float p_race[6] = {0.45f, 0.38f, 0.07f, 0.01f, 0.01f, 0.08f};
    mama_rng r;
    mama__breast br[2];
    int side, view, i, age, race, hisp, density, W, H;
    const char *proc, *split;
    uint64_t sseed = mama__study_seed(seed, (uint64_t)index);
    float u;
    for (i = 0; i < 4; i++) memset(&views[i], 0, sizeof views[i]);
    if (size < 32 || size > 16384 || index < 0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "synth_study: size %d (32..16384) or index %d invalid", size, index);
    H = size;
    W = (size * 13 + 8) / 16;
    mama_rng_seed(&r, sseed);
    age = 40 + (int)mama_rng_below(&r, 41);
    race = mama__pick(&r, p_race, 6);
    hisp = mama_rng_uniform(&r) < 0.06f;
    density = balanced ? 1 + (int)mama_rng_below(&r, 4) : 1 + mama__pick(&r, p_density, 4);
    for (side = 0; side < 2; side++) {
        int letter = balanced ? (int)mama_rng_below(&r, 7) : mama__pick(&r, p_letter, 7);
        mama__breast_draw(&br[side], letter, density, &r);
        /* both breasts of a patient look alike */
        if (side == 1) {
            br[1].depth = br[0].depth * (0.96f + 0.08f * mama_rng_uniform(&r));
            br[1].halfh = br[0].halfh * (0.96f + 0.08f * mama_rng_uniform(&r));
            br[1].fat = br[0].fat;
            br[1].dense = br[0].dense;
            br[1].dense_frac = br[0].dense_frac;
        }
    }
    u = mama_rng_uniform(&r);
    if (u < 0.85f) proc = "MG Screening Bilateral";
    else {
        int fl = br[0].letter != 1, fr = br[1].letter != 1;
        proc = fl && !fr ? "MG Diagnostic Left" : fr && !fl ? "MG Diagnostic Right" : "MG Diagnostic Bilateral";
    }
    u = mama_hash_uniform(seed ^ 0x5EEDull, (uint64_t)index);
    split = u < 0.7f ? "train" : u < 0.8f ? "val" : "test";
    for (side = 0; side < 2; side++)
        for (view = 0; view < 2; view++) {
            mama_synth_image *o = &views[side * 2 + view];
            const mama__breast *b = &br[side];
            mama_status st = mama__render_view(b, W, H, view, side, mama__study_seed(sseed, (uint64_t)(side * 2 + view)),
                                               &o->img, o->box);
            if (st != MAMA_OK) {
                for (i = 0; i < 4; i++) mama_image_free(&views[i].img);
                return st;
            }
            snprintf(o->path, sizeof o->path, "images/p%05d_%c_%s.png", index + 1, side ? 'R' : 'L', view ? "MLO" : "CC");
            snprintf(o->patient, sizeof o->patient, "p%05d", index + 1);
            snprintf(o->study, sizeof o->study, "s%05d", index + 1);
            snprintf(o->side, sizeof o->side, "%s", side ? "right" : "left");
            snprintf(o->view, sizeof o->view, "%s", view ? "MLO" : "CC");
            snprintf(o->procedure, sizeof o->procedure, "%s", proc);
            o->age = age;
            snprintf(o->race, sizeof o->race, "%s", races[race]);
            snprintf(o->ethnicity, sizeof o->ethnicity, "%s", hisp ? "Hispanic or Latino" : "Non-Hispanic or Latino");
            snprintf(o->image_type, sizeof o->image_type, "2D");
            o->density = density;
            o->birads[0] = mama__letters[b->letter];
            o->birads[1] = 0;
            if (b->mass) {
                snprintf(o->mass_shape, sizeof o->mass_shape, "%s", mama__shape_names[b->shape]);
                snprintf(o->mass_density, sizeof o->mass_density, "%s", mama__mdens_names[b->mdens]);
            }
            if (b->calc) {
                snprintf(o->calc_type, sizeof o->calc_type, "%s", mama__calc_names[b->ctype]);
                snprintf(o->calc_distribution, sizeof o->calc_distribution, "%s", mama__dist_names[b->cdist]);
            }
            o->cancer = b->cancer;
            snprintf(o->split, sizeof o->split, "%s", split);
        }
    return MAMA_OK;
}

/* One CSV field, quoted (RFC 4180) when it holds a comma, quote or newline. */
static void mama__synth_csv_field(FILE *f, const char *s, int last) {
    if (strpbrk(s, ",\"\r\n")) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"') fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputc(last ? '\n' : ',', f);
}

static mama_status mama__write_manifest(const char *path, const mama_synth_image *m, long n) {
    FILE *f = fopen(path, "wb");
    long i;
    char num[32];
    int ok;
    if (!f) return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    fputs("path,patient,study,side,view,procedure,age,race,ethnicity,image_type,density,birads,"
          "mass_shape,mass_density,calc_type,calc_distribution,cancer,split\n", f);
    for (i = 0; i < n; i++) {
        const mama_synth_image *o = &m[i];
        mama__synth_csv_field(f, o->path, 0);
        mama__synth_csv_field(f, o->patient, 0);
        mama__synth_csv_field(f, o->study, 0);
        mama__synth_csv_field(f, o->side, 0);
        mama__synth_csv_field(f, o->view, 0);
        mama__synth_csv_field(f, o->procedure, 0);
        snprintf(num, sizeof num, "%d", o->age);
        mama__synth_csv_field(f, num, 0);
        mama__synth_csv_field(f, o->race, 0);
        mama__synth_csv_field(f, o->ethnicity, 0);
        mama__synth_csv_field(f, o->image_type, 0);
        snprintf(num, sizeof num, "%d", o->density);
        mama__synth_csv_field(f, num, 0);
        mama__synth_csv_field(f, o->birads, 0);
        mama__synth_csv_field(f, o->mass_shape, 0);
        mama__synth_csv_field(f, o->mass_density, 0);
        mama__synth_csv_field(f, o->calc_type, 0);
        mama__synth_csv_field(f, o->calc_distribution, 0);
        snprintf(num, sizeof num, "%d", o->cancer);
        mama__synth_csv_field(f, num, 0);
        mama__synth_csv_field(f, o->split, 1);
    }
    ok = !ferror(f);
    ok = (fclose(f) == 0) && ok;
    if (!ok) return MAMA_FAIL(MAMA_ERR_IO, "%s: write failed", path);
    return MAMA_OK;
}

static mama_status mama__ensure_dir(const char *path) {
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return MAMA_OK;
        return MAMA_FAIL(MAMA_ERR_IO, "%s exists and is not a directory", path);
    }
    if (mama__mkdir(path) != 0 && errno != EEXIST)
        return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
    return MAMA_OK;
}

MAMA_API mama_status mama_synth_write(const char *out_dir, int studies, int size, uint64_t seed, int balanced) {
    mama_synth_image *meta = NULL;
    char dir[1024], err[1024];
    mama_status first = MAMA_OK;
    int i;
    err[0] = 0;
    if (!out_dir || studies <= 0 || strlen(out_dir) > 900)
        return MAMA_FAIL(MAMA_ERR_INVALID, "synth_write: bad out_dir or study count %d", studies);
    MAMA_TRY(mama__ensure_dir(out_dir));
    snprintf(dir, sizeof dir, "%s/images", out_dir);
    MAMA_TRY(mama__ensure_dir(dir));
    MAMA_TRY(mama_calloc((void **)&meta, (size_t)studies * 4 * sizeof *meta, "synthetic manifest rows"));
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4)
#endif
    for (i = 0; i < studies; i++) {
        mama_synth_image v[4];
        char path[1024];
        int k;
        mama_status st;
        if (first != MAMA_OK) continue; /* racy read is fine: only skips work */
        st = mama_synth_study(seed, i, size, balanced, v);
        for (k = 0; k < 4 && st == MAMA_OK; k++) {
            snprintf(path, sizeof path, "%s/%s", out_dir, v[k].path);
            st = mama_image_save_png(&v[k].img, path);
        }
        for (k = 0; k < 4; k++) {
            mama_image_free(&v[k].img);
            meta[(size_t)i * 4 + k] = v[k];
        }
        if (st != MAMA_OK) {
#ifdef _OPENMP
#pragma omp critical(mama_synth_error)
#endif
            {
                if (first == MAMA_OK) {
                    first = st;
                    snprintf(err, sizeof err, "%s", mama_last_error());
                }
            }
        }
    }
    if (first != MAMA_OK) {
        mama_free(meta);
        return MAMA_FAIL(first, "synth_write: %s", err);
    }
    snprintf(dir, sizeof dir, "%s/manifest.csv", out_dir);
    first = mama__write_manifest(dir, meta, (long)studies * 4);
    mama_free(meta);
    return first;
}
