/* tests/test_image.c - mama.h section 9 (decoding, the A.5 pipeline) and
 * mama_synth.h (synthetic mammograms, PNG writing).  Truth: hand-computed
 * values (worked out in the comments), a naive textbook Otsu, and
 * properties (determinism, bounds, ordering).
 * Writes a montage of one synthetic study to /tmp/mama_synth_montage.png
 * (or argv[1]) and prints the generation speed (not asserted). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

static long getpid_fallback(void) { return (long)getpid(); }

/* Allocation hooks that can fail the k-th allocation (leak/crash checks). */
static long test_alloc_countdown = -1; /* -1: never fail */
static long test_live_allocs = 0;
static void *test_malloc(size_t n) {
    void *p;
    if (test_alloc_countdown == 0) return NULL;
    if (test_alloc_countdown > 0) test_alloc_countdown--;
    p = malloc(n);
    /* atomic: the synth speed check allocates from several OpenMP threads */
    if (p) {
#ifdef _OPENMP
#pragma omp atomic
#endif
        test_live_allocs++;
    }
    return p;
}
static void *test_realloc(void *q, size_t n) {
    void *p;
    if (!q) return test_malloc(n);
    if (test_alloc_countdown == 0) return NULL;
    if (test_alloc_countdown > 0) test_alloc_countdown--;
    p = realloc(q, n);
    return p;
}
static void test_free(void *p) {
    if (p) {
#ifdef _OPENMP
#pragma omp atomic
#endif
        test_live_allocs--;
    }
    free(p);
}
#define MAMA_MALLOC(sz) test_malloc(sz)
#define MAMA_REALLOC(p, sz) test_realloc(p, sz)
#define MAMA_FREE(p) test_free(p)
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "tests/test_util.h"

/* A 16-bit PNG writer for the decoder tests (stb_image_write has none):
 * channels 1 or 3, host-order samples, filter 0 on every row, zlib
 * "stored" blocks (no compression); CRC-32 per chunk and Adler-32 over the
 * zlib payload computed bytewise. */
static uint32_t png16_crc32(uint32_t crc, const unsigned char *p, size_t n) {
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}
static void png16_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static int png16_chunk(FILE *f, const char *type, const unsigned char *data, size_t n) {
    unsigned char hdr[8], crcb[4];
    uint32_t crc;
    png16_be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    crc = png16_crc32(0, hdr + 4, 4);
    crc = png16_crc32(crc, data, n);
    png16_be32(crcb, crc);
    return fwrite(hdr, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(crcb, 1, 4, f) == 4;
}
static mama_status png_write16(const char *path, const uint16_t *pix, int w, int h, int channels) {
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    unsigned char ihdr[13], *raw = NULL, *z = NULL;
    size_t row, rawn, nblocks, zn, i, pos;
    uint32_t a = 1, b = 0;
    FILE *f;
    int x, y, ok;
    if (!path || !pix || w <= 0 || h <= 0 || (channels != 1 && channels != 3))
        return MAMA_FAIL(MAMA_ERR_INVALID, "png16 write %s: bad arguments", path ? path : "?");
    row = 1 + (size_t)w * (size_t)channels * 2;
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
            uint16_t v = pix[base + (size_t)x];
            r[1 + 2 * x] = (unsigned char)(v >> 8); /* PNG is big-endian */
            r[2 + 2 * x] = (unsigned char)v;
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
    png16_be32(z + pos, (b << 16) | a);
    pos += 4;
    png16_be32(ihdr, (uint32_t)w);
    png16_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 16;
    ihdr[9] = channels == 3 ? 2 : 0;       /* RGB or grey */
    ihdr[10] = ihdr[11] = ihdr[12] = 0;    /* deflate, adaptive filter, no interlace */
    f = fopen(path, "wb");
    ok = f != NULL;
    if (f) {
        ok = fwrite(sig, 1, 8, f) == 8 && png16_chunk(f, "IHDR", ihdr, 13) && png16_chunk(f, "IDAT", z, pos) &&
             png16_chunk(f, "IEND", NULL, 0);
        ok = (fclose(f) == 0) && ok;
    }
    mama_free(raw);
    mama_free(z);
    if (!ok) return MAMA_FAIL(MAMA_ERR_IO, "%s: cannot write 16-bit PNG", path);
    return MAMA_OK;
}

static const char *montage_path = "/tmp/mama_synth_montage.png";

/* Make an image from a literal array. */
static mama_image mk(int w, int h, const int *v) {
    mama_image im = {0, 0, NULL};
    int i;
    if (mama_image_alloc(&im, w, h) != MAMA_OK) { printf("alloc failed\n"); exit(1); }
    if (v)
        for (i = 0; i < w * h; i++) im.pix[i] = (uint8_t)v[i];
    return im;
}
/* worst |a - b| over n pixels */
static int worst_diff(const uint8_t *a, const int *b, int n) {
    int i, w = 0;
    for (i = 0; i < n; i++) {
        int d = abs((int)a[i] - b[i]);
        if (d > w) w = d;
    }
    return w;
}

/* ------------------------------------------------------------------ Otsu */

/* Textbook Otsu, independent formula: for each t, w0 w1 (mu0 - mu1)^2 with
 * weights and means; the first maximum wins. */
static int naive_otsu(const mama_image *im) {
    long hist[256] = {0}, n = (long)im->w * im->h, i;
    int t, best = -1;
    double bestv = -1;
    for (i = 0; i < n; i++) hist[im->pix[i]]++;
    for (t = 0; t < 255; t++) {
        double n0 = 0, s0 = 0, n1 = 0, s1 = 0, v;
        int k;
        for (k = 0; k <= t; k++) { n0 += hist[k]; s0 += (double)k * hist[k]; }
        for (k = t + 1; k < 256; k++) { n1 += hist[k]; s1 += (double)k * hist[k]; }
        if (n0 == 0 || n1 == 0) continue;
        v = (n0 / n) * (n1 / n) * (s0 / n0 - s1 / n1) * (s0 / n0 - s1 / n1);
        if (v > bestv) { bestv = v; best = t; }
    }
    return best;
}

static void test_otsu(void) {
    mama_image im, crop = {0, 0, NULL};
    int v[16], i, t, box[4], ok, worst, trial;
    mama_rng r;
    /* Two values: every t in 20..199 gives the same split; the first wins. */
    for (i = 0; i < 16; i++) v[i] = i < 10 ? 20 : 200;
    im = mk(4, 4, v);
    t = mama_otsu_threshold(&im);
    test_report(t == 20, "otsu_two_values", "10 x 20 + 6 x 200: threshold %d (want 20, the first maximiser)", t);
    mama_image_free(&im);
    /* Three values: 4 x 10, 4 x 50, 8 x 200.
     *   t in 10..49: w0=.25 mu0=10, w1=.75 mu1=150 -> .1875*140^2 = 3675
     *   t in 50..199: w0=.5 mu0=30, w1=.5 mu1=200 -> .25*170^2 = 7225  => t = 50 */
    for (i = 0; i < 16; i++) v[i] = i < 4 ? 10 : i < 8 ? 50 : 200;
    im = mk(4, 4, v);
    t = mama_otsu_threshold(&im);
    test_report(t == 50, "otsu_three_values", "hand-computed variances 3675 vs 7225: threshold %d (want 50)", t);
    mama_image_free(&im);
    /* Constant image: no split, crop keeps it. */
    for (i = 0; i < 16; i++) v[i] = 77;
    im = mk(4, 4, v);
    t = mama_otsu_threshold(&im);
    ok = mama_image_otsu_crop(&im, &crop, box) == MAMA_OK && crop.w == 4 && crop.h == 4 && box[0] == 0 &&
         box[3] == 3;
    test_report(t == -1 && ok, "otsu_constant", "threshold %d (want -1), crop %dx%d (want 4x4 copy)", t, crop.w, crop.h);
    mama_image_free(&im);
    mama_image_free(&crop);
    /* Crop box: 10 x 8 zeros, a 200 block at x 5..7, y 2..3 and one 200
     * pixel at (1, 6): threshold 0, inclusive box x 1..7, y 2..6. */
    im = mk(10, 8, NULL);
    for (i = 5; i <= 7; i++) { im.pix[2 * 10 + i] = 200; im.pix[3 * 10 + i] = 200; }
    im.pix[6 * 10 + 1] = 200;
    ok = mama_image_otsu_crop(&im, &crop, box) == MAMA_OK;
    ok = ok && box[0] == 1 && box[1] == 2 && box[2] == 7 && box[3] == 6 && crop.w == 7 && crop.h == 5 &&
         crop.pix[0 * 7 + 4] == 200 && crop.pix[4 * 7 + 0] == 200 && crop.pix[0] == 0;
    test_report(ok, "otsu_crop_box", "box %d,%d..%d,%d (want 1,2..7,6), crop %dx%d (want 7x5), corners", box[0], box[1],
                box[2], box[3], crop.w, crop.h);
    mama_image_free(&im);
    mama_image_free(&crop);
    /* Random bimodal images against the textbook formula. */
    mama_rng_seed(&r, 5);
    worst = 0;
    for (trial = 0; trial < 50; trial++) {
        int mine, ref;
        im = mk(23, 17, NULL);
        for (i = 0; i < 23 * 17; i++) {
            float g = mama_rng_normal(&r);
            float c = mama_rng_uniform(&r) < 0.4f ? 60.0f + 15.0f * g : 170.0f + 25.0f * g;
            im.pix[i] = (uint8_t)(c < 0 ? 0 : c > 255 ? 255 : c);
        }
        mine = mama_otsu_threshold(&im);
        ref = naive_otsu(&im);
        if (abs(mine - ref) > worst) worst = abs(mine - ref);
        mama_image_free(&im);
    }
    test_report(worst == 0, "otsu_vs_textbook", "50 random bimodal 23x17 images, worst threshold diff=%d", worst);
}

/* ------------------------------------------------------------- resampling */

static void test_area(void) {
    mama_image im, out = {0, 0, NULL};
    int v[36], want[16], x, y, ok, w;
    /* 4x4 -> 2x2: 2x2 block means, half up: block (0,0,1,1) = 0.5 -> 1. */
    static const int a4[16] = {0, 10, 40, 50, 20, 30, 60, 70, 0, 0, 200, 201, 1, 1, 201, 201};
    /* blocks: (0+10+20+30)/4 = 15, (40+50+60+70)/4 = 55, (0+0+1+1)/4 = 0.5 -> 1,
     *         (200+201+201+201)/4 = 200.75 -> 201 */
    static const int a4w[4] = {15, 55, 1, 201};
    im = mk(4, 4, a4);
    ok = mama_image_resize_area(&im, 2, 2, &out) == MAMA_OK;
    w = ok ? worst_diff(out.pix, a4w, 4) : 99;
    test_report(ok && w == 0, "area_4x4_to_2x2", "block means incl. a .5 rounding up, worst=%d", w);
    mama_image_free(&im);
    mama_image_free(&out);
    /* 6x6 -> 4x4 (factor 1.5): output o covers [1.5 o, 1.5 o + 1.5), so
     *   o0 = (p0 + .5 p1)/1.5, o1 = (.5 p1 + p2)/1.5, o2 = (p3 + .5 p4)/1.5,
     *   o3 = (.5 p4 + p5)/1.5.  in(x, y) = p[x] + q[y] with
     *   p = 0 30 60 90 120 150 -> 10 50 100 140,  q = 0 3 6 9 12 15 -> 1 5 10 14
     * and area averaging is linear, so out(x, y) = Ap[x] + Aq[y] exactly. */
    {
        static const int p[6] = {0, 30, 60, 90, 120, 150}, q[6] = {0, 3, 6, 9, 12, 15};
        static const int ap[4] = {10, 50, 100, 140}, aq[4] = {1, 5, 10, 14};
        for (y = 0; y < 6; y++)
            for (x = 0; x < 6; x++) v[y * 6 + x] = p[x] + q[y];
        for (y = 0; y < 4; y++)
            for (x = 0; x < 4; x++) want[y * 4 + x] = ap[x] + aq[y];
        im = mk(6, 6, v);
        ok = mama_image_resize_area(&im, 4, 4, &out) == MAMA_OK;
        w = ok ? worst_diff(out.pix, want, 16) : 99;
        test_report(ok && w == 0, "area_6_to_4", "non-integer factor 1.5, hand-computed weights, worst=%d", w);
        mama_image_free(&im);
        mama_image_free(&out);
    }
    /* Upscale falls back to bilinear: 2 -> 4 of {0, 100}: src = -.25 .25 .75
     * 1.25 -> 0, 25, 75, 100. */
    {
        static const int in2[2] = {0, 100}, w4[4] = {0, 25, 75, 100};
        im = mk(2, 1, in2);
        ok = mama_image_resize_area(&im, 4, 1, &out) == MAMA_OK;
        w = ok ? worst_diff(out.pix, w4, 4) : 99;
        test_report(ok && w == 0, "area_upscale_bilinear", "2->4 gives 0 25 75 100, worst=%d", w);
        mama_image_free(&im);
        mama_image_free(&out);
    }
}

static void test_bilinear(void) {
    mama_image im, out = {0, 0, NULL};
    int ok, w;
    /* 2x2 [[0,100],[200,40]] -> 4x4.  Taps for 2->4: (1,0) (.75,.25) (.25,.75)
     * (0,1).  Horizontal (rounded): row0 0 25 75 100, row1 200 160 80 40.
     * Vertical: r1 = .75 row0 + .25 row1 = 50, 58.75, 76.25, 85;
     *           r2 = .25 row0 + .75 row1 = 150, 126.25, 78.75, 55. */
    static const int in[4] = {0, 100, 200, 40};
    static const int want[16] = {0, 25, 75, 100, 50, 59, 76, 85, 150, 126, 79, 55, 200, 160, 80, 40};
    im = mk(2, 2, in);
    ok = mama_image_resize_bilinear(&im, 0, 0, 2, 2, 4, 4, &out) == MAMA_OK;
    w = ok ? worst_diff(out.pix, want, 16) : 99;
    test_report(ok && w == 0, "bilinear_2x2_to_4x4", "half-pixel bilinear, hand-computed, worst=%d", w);
    mama_image_free(&im);
    mama_image_free(&out);
    /* Rounding between passes: [0, 2] -> 4: .5 rounds up to 1 after the
     * horizontal pass (PIL keeps uint8 between passes). */
    {
        static const int r2[2] = {0, 2}, w4[4] = {0, 1, 2, 2};
        /* taps: o1 = .75*0 + .25*2 = .5 -> 1; o2 = .25*0 + .75*2 = 1.5 -> 2 */
        im = mk(2, 1, r2);
        ok = mama_image_resize_bilinear(&im, 0, 0, 2, 1, 4, 1, &out) == MAMA_OK;
        w = ok ? worst_diff(out.pix, w4, 4) : 99;
        test_report(ok && w == 0, "bilinear_round_half_up", "[0,2]->4 = 0 1 2 2, worst=%d", w);
        mama_image_free(&im);
        mama_image_free(&out);
    }
    /* Downscale widens the triangle (PIL antialias): 4 -> 2, support 2:
     *   o0: centre 1, taps 0..2, tri((i-1+.5)/2) = .75 .75 .25 -> 3/7 3/7 1/7
     *   o1: centre 3, taps 1..3 -> 1/7 3/7 3/7.
     * {0,70,140,210}: o0 = (0 + 210 + 140)/7 = 50, o1 = (70 + 420 + 630)/7 = 160. */
    {
        static const int r4[4] = {0, 70, 140, 210}, w2[2] = {50, 160};
        im = mk(4, 1, r4);
        ok = mama_image_resize_bilinear(&im, 0, 0, 4, 1, 2, 1, &out) == MAMA_OK;
        w = ok ? worst_diff(out.pix, w2, 2) : 99;
        test_report(ok && w == 0, "bilinear_downscale_antialias", "4->2 = 50 160, worst=%d", w);
        mama_image_free(&im);
        mama_image_free(&out);
    }
    /* A box never reads outside itself: [10 | 50 90 | 200], box 1..2 -> 4
     * = stretching [50, 90]: 50, 60, 80, 90. */
    {
        static const int r4[4] = {10, 50, 90, 200}, w4[4] = {50, 60, 80, 90};
        im = mk(4, 1, r4);
        ok = mama_image_resize_bilinear(&im, 1, 0, 2, 1, 4, 1, &out) == MAMA_OK;
        w = ok ? worst_diff(out.pix, w4, 4) : 99;
        test_report(ok && w == 0, "bilinear_box_isolated", "box [50,90] -> 50 60 80 90, worst=%d", w);
        mama_image_free(&im);
        ok = mama_image_resize_bilinear(&out, 2, 0, 3, 1, 4, 1, &im) != MAMA_OK;
        test_report(ok, "bilinear_box_bounds", "a box past the edge is refused: %s", mama_last_error());
        mama_image_free(&out);
    }
}

static void test_letterbox(void) {
    mama_image im, out = {0, 0, NULL};
    int v[80], x, y, placed[4], ok, bad = 0;
    /* Landscape 10x4 -> S = 5: 5 x floor(4*5/10) = 5x2, area means of 2x2
     * blocks, padding 3 rows: 1 on top (floor), 2 at the bottom (ceil). */
    for (y = 0; y < 4; y++)
        for (x = 0; x < 10; x++) v[y * 10 + x] = 10 + 4 * x + 40 * y;
    /* block (bx, by) mean = 10 + 4 (2bx + .5) + 40 (2by + .5) = 32 + 8 bx + 80 by */
    im = mk(10, 4, v);
    ok = mama_image_letterbox(&im, 5, &out, placed) == MAMA_OK;
    ok = ok && out.w == 5 && out.h == 5 && placed[0] == 0 && placed[1] == 1 && placed[2] == 5 && placed[3] == 2;
    for (y = 0; ok && y < 5; y++)
        for (x = 0; x < 5; x++) {
            int want = (y == 1 || y == 2) ? 32 + 8 * x + 80 * (y - 1) : 0;
            if (out.pix[y * 5 + x] != want) bad++;
        }
    test_report(ok && bad == 0, "letterbox_landscape", "10x4 -> 5x5: rows 1-2 hold block means, top 1/bottom 2 zero, bad=%d", bad);
    mama_image_free(&im);
    mama_image_free(&out);
    /* Portrait 3x8 -> S = 7: width floor(3*7/8) = 2 (2.625 truncated),
     * padding 5 columns: 2 left, 3 right. */
    for (x = 0; x < 24; x++) v[x] = 200;
    im = mk(3, 8, v);
    ok = mama_image_letterbox(&im, 7, &out, placed) == MAMA_OK;
    ok = ok && placed[0] == 2 && placed[1] == 0 && placed[2] == 2 && placed[3] == 7;
    bad = 0;
    for (y = 0; ok && y < 7; y++)
        for (x = 0; x < 7; x++)
            if (out.pix[y * 7 + x] != ((x == 2 || x == 3) ? 200 : 0)) bad++;
    test_report(ok && bad == 0, "letterbox_portrait_odd_pad", "3x8 -> 7: placed x0=%d w=%d (want 2, 2), bad=%d", placed[0], placed[2], bad);
    mama_image_free(&im);
    mama_image_free(&out);
}

/* ------------------------------------------------------------ random steps */

static void test_flips_jitter(void) {
    static const int in[6] = {1, 2, 3, 4, 5, 6};
    static const int hw[6] = {3, 2, 1, 6, 5, 4}, vw[6] = {4, 5, 6, 1, 2, 3};
    mama_image im = mk(3, 2, in);
    int w1, w2;
    mama_image_hflip(&im);
    w1 = worst_diff(im.pix, hw, 6);
    mama_image_hflip(&im);
    mama_image_vflip(&im);
    w2 = worst_diff(im.pix, vw, 6);
    test_report(w1 == 0 && w2 == 0, "flips", "3x2 hflip and vflip, worst=%d,%d", w1, w2);
    mama_image_free(&im);
    {
        /* brightness = trunc(f x) clipped: f 1.5: 0 15 150 256.5->255 300->255;
         * f .5: 0 5 50 85.5->85 100 */
        static const int b[5] = {0, 10, 100, 171, 200}, b15[5] = {0, 15, 150, 255, 255}, b05[5] = {0, 5, 50, 85, 100};
        im = mk(5, 1, b);
        mama_image_brightness(&im, 1.5f);
        w1 = worst_diff(im.pix, b15, 5);
        mama_image_free(&im);
        im = mk(5, 1, b);
        mama_image_brightness(&im, 0.5f);
        w2 = worst_diff(im.pix, b05, 5);
        mama_image_free(&im);
        test_report(w1 == 0 && w2 == 0, "brightness", "PIL blend with black, truncation, worst=%d,%d", w1, w2);
    }
    {
        /* contrast: mean of {0,100,200,51} = 87.75 -> int(88.25) = 88;
         * f 1.5: 88 + 1.5 (x - 88) = -44->0, 106, 256->255, 32.5->32;
         * f .5: 44, 94, 144, 69.5->69 */
        static const int c[4] = {0, 100, 200, 51}, c15[4] = {0, 106, 255, 32}, c05[4] = {44, 94, 144, 69};
        im = mk(4, 1, c);
        mama_image_contrast(&im, 1.5f);
        w1 = worst_diff(im.pix, c15, 4);
        mama_image_free(&im);
        im = mk(4, 1, c);
        mama_image_contrast(&im, 0.5f);
        w2 = worst_diff(im.pix, c05, 4);
        mama_image_free(&im);
        test_report(w1 == 0 && w2 == 0, "contrast", "PIL blend with the rounded mean 88, worst=%d,%d", w1, w2);
    }
}

static void test_blur(void) {
    float k[7];
    double sum = 0, worst = 0, e, wd[7];
    int i, ok;
    mama_image im;
    /* kernel: exp(-(i-3)^2 / (2 sigma^2)) / sum */
    mama_gaussian_kernel1d(7, 1.3f, k);
    for (i = 0; i < 7; i++) { wd[i] = exp(-(i - 3.0) * (i - 3.0) / (2.0 * 1.3 * 1.3)); sum += wd[i]; }
    for (i = 0; i < 7; i++) {
        e = fabs(k[i] - wd[i] / sum);
        if (e > worst) worst = e;
    }
    test_report(worst < 1e-7 && k[0] == k[6], "gauss_kernel", "k=7 sigma=1.3 vs formula, worst abs err=%g", worst);
    /* Reflect padding: 5x1 [0 255 0 0 0], k 3, sigma 1: w = (e, 1, e)/(1+2e),
     * e = exp(-1/2).  out0 = 255 (w0 + w2) (index -1 reflects to 1),
     * out1 = 255 w1, out2 = 255 w2, out3 = out4 = 0. */
    {
        static const int in[5] = {0, 255, 0, 0, 0};
        double ee = exp(-0.5), s3 = 1 + 2 * ee;
        int want[5];
        want[0] = (int)floor(255 * 2 * ee / s3 + 0.5);
        want[1] = (int)floor(255 / s3 + 0.5);
        want[2] = (int)floor(255 * ee / s3 + 0.5);
        want[3] = want[4] = 0;
        im = mk(5, 1, in);
        ok = mama_image_gaussian_blur(&im, 3, 1.0f) == MAMA_OK;
        i = worst_diff(im.pix, want, 5);
        test_report(ok && i == 0, "blur_reflect", "impulse next to the edge: %d %d %d (want %d %d %d), worst=%d", im.pix[0],
                    im.pix[1], im.pix[2], want[0], want[1], want[2], i);
        mama_image_free(&im);
    }
    /* 2-D impulse in a 9x9 image: out(4+dx, 4+dy) = round(255 w[dx] w[dy]). */
    {
        int x, y, bad = 0;
        float k7[7];
        im = mk(9, 9, NULL);
        im.pix[4 * 9 + 4] = 255;
        ok = mama_image_gaussian_blur(&im, 7, 1.0f) == MAMA_OK;
        mama_gaussian_kernel1d(7, 1.0f, k7);
        for (y = 1; y < 8; y++)
            for (x = 1; x < 8; x++) {
                double want = 255.0 * k7[x - 1] * k7[y - 1];
                if (fabs(im.pix[y * 9 + x] - want) > 0.5 + 1e-6) bad++;
            }
        test_report(ok && bad == 0, "blur_impulse_2d", "separable = outer product of the 1-D kernel, %d off", bad);
        mama_image_free(&im);
    }
    /* constant image stays constant */
    {
        int v[64], j, bad = 0;
        for (j = 0; j < 64; j++) v[j] = 123;
        im = mk(8, 8, v);
        mama_image_gaussian_blur(&im, 7, 2.0f);
        for (j = 0; j < 64; j++) bad += im.pix[j] != 123;
        test_report(bad == 0, "blur_constant", "8x8 of 123 with k=7 sigma=2 (reflect), %d changed", bad);
        mama_image_free(&im);
    }
}

static void test_tensor_and_rrc(void) {
    static const int in[3] = {0, 255, 51};
    mama_image im = mk(3, 1, in);
    float out[9];
    double worst = 0;
    int c, i, ok = 1, box[4], trial;
    mama_rng r;
    /* (x/255 - .5)/.5: 0 -> -1, 255 -> 1, 51 -> 0.2*2 - 1 = -0.6 */
    static const double want[3] = {-1.0, 1.0, -0.6};
    mama_image_to_tensor(&im, 0.5f, 0.5f, 3, out);
    for (c = 0; c < 3; c++)
        for (i = 0; i < 3; i++)
            if (fabs(out[c * 3 + i] - want[i]) > worst) worst = fabs(out[c * 3 + i] - want[i]);
    test_report(worst < 1e-6, "to_tensor", "normalised and replicated to 3 planes, worst=%g", worst);
    mama_image_free(&im);
    /* Python round: half to even */
    ok = mama__round_half_even(2.5) == 2 && mama__round_half_even(3.5) == 4 && mama__round_half_even(-0.5) == 0 &&
         mama__round_half_even(2.4999) == 2;
    test_report(ok, "round_half_even", "2.5->2, 3.5->4, -0.5->0");
    /* RRC boxes lie inside, have area ~[0.1,1] and aspect ~[3/4,4/3]. */
    mama_rng_seed(&r, 11);
    ok = 1;
    for (trial = 0; trial < 2000; trial++) {
        double area, asp;
        mama_rrc_box(&r, 518, 518, 0.1f, 1.0f, 0.75f, 4.0f / 3.0f, 10, box);
        area = (double)box[2] * box[3] / (518.0 * 518.0);
        asp = (double)box[2] / box[3];
        if (box[0] < 0 || box[1] < 0 || box[0] + box[2] > 518 || box[1] + box[3] > 518) ok = 0;
        if (area < 0.095 || area > 1.0 || asp < 0.74 || asp > 1.35) ok = 0;
    }
    test_report(ok, "rrc_bounds", "2000 boxes inside 518x518, area in [0.1,1], aspect in [3/4,4/3] (rounding slack)");
    /* Fallback: scale (2,3) can never fit -> centre crop; 10x4 has ratio
     * 2.5 > 4/3 so h = 4, w = round(4 * 4/3 = 5.33) = 5, x0 = 2, y0 = 0. */
    mama_rrc_box(&r, 10, 4, 2.0f, 3.0f, 0.75f, 4.0f / 3.0f, 10, box);
    test_report(box[0] == 2 && box[1] == 0 && box[2] == 5 && box[3] == 4, "rrc_fallback",
                "centre crop %d,%d %dx%d (want 2,0 5x4)", box[0], box[1], box[2], box[3]);
}

static void test_pipeline(void) {
    mama_image im, lb = {0, 0, NULL}, crop = {0, 0, NULL}, st = {0, 0, NULL};
    mama_augment_opts o;
    float *a, *b;
    int x, y, box[4], ok, S = 32, i;
    double worst = 0;
    mama_rng r1, r2;
    /* defaults are A.5's */
    mama_augment_opts_default(&o);
    ok = o.size == 518 && o.rrc_scale[0] == 0.1f && o.rrc_ratio[1] == 4.0f / 3.0f && o.hflip_p == 0.5f &&
         o.jitter_p == 0.8f && o.brightness[0] == 0.2f && o.contrast[1] == 1.8f && o.blur_p == 0.4f &&
         o.blur_kernel == 7 && o.blur_sigma[1] == 2.0f && o.mean == 0.5f && o.rrc_attempts == 10;
    test_report(ok, "augment_defaults", "size 518, rrc (0.1,1) (3/4,4/3), flips .5, jitter .8 [.2,1.8], blur .4 k7 [.1,2]");
    /* eval pipeline = letterbox -> Otsu crop -> bilinear stretch -> tensor */
    im = mk(60, 40, NULL);
    for (y = 0; y < 40; y++)
        for (x = 0; x < 60; x++)
            im.pix[y * 60 + x] = (uint8_t)((x > 10 && x < 45 && y > 5 && y < 35) ? 120 + x + y : 3);
    o.size = S;
    a = (float *)malloc(sizeof(float) * 3 * S * S);
    b = (float *)malloc(sizeof(float) * 3 * S * S);
    ok = mama_image_pipeline(&im, &o, 0, NULL, 3, a) == MAMA_OK;
    ok = ok && mama_image_letterbox(&im, S, &lb, NULL) == MAMA_OK && mama_image_otsu_crop(&lb, &crop, box) == MAMA_OK &&
         mama_image_resize_bilinear(&crop, 0, 0, crop.w, crop.h, S, S, &st) == MAMA_OK;
    if (ok) {
        mama_image_to_tensor(&st, 0.5f, 0.5f, 3, b);
        for (i = 0; i < 3 * S * S; i++)
            if (fabs(a[i] - b[i]) > worst) worst = fabs(a[i] - b[i]);
    }
    test_report(ok && worst == 0, "pipeline_eval_composition", "eval pipeline == steps composed by hand, worst=%g", worst);
    /* The crop removed the dark frame: the stretched image has no 3s left
     * near its borders' middles. */
    test_report(ok && st.pix[S / 2] > 60 && st.pix[(S / 2) * S] > 60, "pipeline_otsu_removes_frame",
                "border middle pixels %d %d are tissue, not frame (3)", st.pix[S / 2], st.pix[(S / 2) * S]);
    /* train pipeline: deterministic per rng state */
    mama_rng_seed(&r1, 99);
    mama_rng_seed(&r2, 99);
    ok = mama_image_pipeline(&im, &o, 1, &r1, 1, a) == MAMA_OK && mama_image_pipeline(&im, &o, 1, &r2, 1, b) == MAMA_OK &&
         memcmp(a, b, sizeof(float) * S * S) == 0;
    test_report(ok, "pipeline_train_deterministic", "same seed, same tensor (1 channel)");
    /* with every random step off, train == eval */
    o.rrc = MAMA_OFF; o.hflip_p = MAMA_OFF; o.vflip_p = MAMA_OFF; o.jitter = MAMA_OFF; o.blur = MAMA_OFF;
    ok = mama_image_pipeline(&im, &o, 1, &r1, 3, a) == MAMA_OK && mama_image_pipeline(&im, &o, 0, NULL, 3, b) == MAMA_OK &&
         memcmp(a, b, sizeof(float) * 3 * S * S) == 0;
    test_report(ok, "pipeline_train_no_aug_equals_eval", "all random steps disabled");
    /* train at full defaults runs and stays in [-1, 1] */
    mama_augment_opts_default(&o);
    {
        float *c = (float *)malloc(sizeof(float) * 518 * 518);
        float lo = 9, hi = -9;
        double t0 = mama_time_seconds();
        int n;
        ok = 1;
        for (n = 0; n < 10 && ok; n++) ok = mama_image_pipeline(&im, &o, 1, &r1, 1, c) == MAMA_OK;
        for (i = 0; i < 518 * 518; i++) { if (c[i] < lo) lo = c[i]; if (c[i] > hi) hi = c[i]; }
        test_report(ok && lo >= -1 && hi <= 1, "pipeline_train_518", "range [%g, %g], %.1f ms per image (not asserted)", lo, hi,
                    1000 * (mama_time_seconds() - t0) / 10);
        free(c);
    }
    free(a);
    free(b);
    mama_image_free(&im);
    mama_image_free(&lb);
    mama_image_free(&crop);
    mama_image_free(&st);
}

/* -------------------------------------------------------------- file I/O */

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void test_io(void) {
    mama_image im, back = {0, 0, NULL};
    int i, ok;
    char path[256];
    /* 8-bit grey round trip */
    im = mk(7, 5, NULL);
    for (i = 0; i < 35; i++) im.pix[i] = (uint8_t)(i * 7);
    snprintf(path, sizeof path, "/tmp/mama_test_img_%ld.png", (long)getpid_fallback());
    ok = mama_image_save_png(&im, path) == MAMA_OK && mama_image_load(path, &back) == MAMA_OK && back.w == 7 &&
         back.h == 5 && memcmp(back.pix, im.pix, 35) == 0;
    test_report(ok, "png8_roundtrip", "7x5 grey written by stb_image_write, read back identical");
    mama_image_free(&im);
    mama_image_free(&back);
    /* RGB -> grey with PIL's L: red (255*19595 + 32768) >> 16 = 76, green 150, blue 29, (10,20,30) -> 18 */
    {
        static const uint8_t rgb[12] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
        static const int want[4] = {76, 150, 29, 18};
        /* (10*19595 + 20*38470 + 30*7471 + 32768) >> 16 = (195950+769400+224130+32768)>>16 = 1222248>>16 = 18 */
        ok = mama_png_write(path, rgb, 2, 2, 3) == MAMA_OK && mama_image_load(path, &back) == MAMA_OK;
        i = ok ? worst_diff(back.pix, want, 4) : 99;
        test_report(ok && i == 0, "png_rgb_to_grey", "ITU-R 601 luma as PIL convert('L'), worst=%d", i);
        mama_image_free(&back);
    }
    /* 16-bit PNG (png_write16 above, stored deflate), full range (max 65535):
     * v * 255 / 65535 = v / 257 rounded half up:
     * 0->0, 25700->100, 25828 (100*257+128)->100, 25829->101, 65535->255, 1000->4 (3.89) */
    {
        static const uint16_t v16[6] = {0, 25700, 25828, 25829, 65535, 1000};
        static const int want[6] = {0, 100, 100, 101, 255, 4};
        ok = png_write16(path, v16, 3, 2, 1) == MAMA_OK && mama_image_load(path, &back) == MAMA_OK && back.w == 3;
        i = ok ? worst_diff(back.pix, want, 6) : 99;
        test_report(ok && i == 0, "png16_to_8", "full-range 16-bit grey PNG (max 65535): round(v/257), worst=%d (%s)", i, ok ? "" : mama_last_error());
        mama_image_free(&back);
    }
    {
        /* 16-bit RGB: red 65535 -> luma 0.299*65535 = 19594.97 -> 19595, blue 0.114*65535 -> 7471;
         * then by the image's maximum 19595: red 255, blue 7471*255/19595 = 1905105/19595 = 97.22 -> 97 */
        static const uint16_t c16[6] = {65535, 0, 0, 0, 0, 65535};
        static const int want[2] = {255, 97};
        ok = png_write16(path, c16, 2, 1, 3) == MAMA_OK && mama_image_load(path, &back) == MAMA_OK;
        i = ok ? worst_diff(back.pix, want, 2) : 99;
        test_report(ok && i == 0, "png16_rgb", "16-bit RGB -> 16-bit luma -> 8 bit by the maximum, worst=%d", i);
        mama_image_free(&back);
    }
    /* PGM (binary P5) and 16-bit PGM */
    {
        static const unsigned char pgm[] = "P5\n3 2\n255\n\x00\x10\x20\x80\xff\x01";
        static const int want[6] = {0, 16, 32, 128, 255, 1};
        ok = write_bytes(path, pgm, sizeof pgm - 1) && mama_image_load(path, &back) == MAMA_OK && back.w == 3 && back.h == 2;
        i = ok ? worst_diff(back.pix, want, 6) : 99;
        test_report(ok && i == 0, "pgm_load", "P5 3x2, worst=%d", i);
        mama_image_free(&back);
    }
    {
        /* P5 maxval 65535, big-endian: 0x6464 = 25700 -> 100, 0xffff -> 255 */
        static const unsigned char pgm16[] = "P5\n2 1\n65535\n\x64\x64\xff\xff";
        static const int want[2] = {100, 255};
        ok = write_bytes(path, pgm16, sizeof pgm16 - 1) && mama_image_load(path, &back) == MAMA_OK;
        i = ok ? worst_diff(back.pix, want, 2) : 99;
        test_report(ok && i == 0, "pgm16_load", "16-bit P5, worst=%d (%s)", i, ok ? "" : mama_last_error());
        mama_image_free(&back);
    }
    {
        /* Byte order: 16-bit PNM samples are big-endian.  A 12-bit P5 (maxval
         * 4095, a comment in the header) with 1000 = 03 E8, 4095 = 0F FF,
         * 0 and 2048 = 08 00: by the image's maximum, hand values
         * floor(v 255 / 4095 + 1/2) = 62, 255, 0, 128 (host order, as
         * stb_image 2.27 reads it, would give 59395 -> 232 and other values). */
        static const unsigned char pgm12[] = "P5\n# 12-bit\n2 2\n4095\n\x03\xe8\x0f\xff\x00\x00\x08\x00";
        static const int want12[4] = {62, 255, 0, 128};
        /* P6 (RGB), maxval 1023: grey = round(.299 r + .587 g + .114 b) on the
         * 16-bit values: (1023, 0, 0) -> 306, (0, 1023, 0) -> 601, (0, 0, 1023)
         * -> 117; then by the max 601: 306 -> 130, 601 -> 255, 117 -> 50 */
        static const unsigned char ppm10[] = "P6 3 1 1023\n\x03\xff\x00\x00\x00\x00"
                                             "\x00\x00\x03\xff\x00\x00\x00\x00\x00\x00\x03\xff";
        static const int want10[3] = {130, 255, 50};
        static const unsigned char cut[] = "P5\n2 2\n4095\n\x03\xe8\x0f";
        int i2;
        ok = write_bytes(path, pgm12, sizeof pgm12 - 1) && mama_image_load(path, &back) == MAMA_OK && back.w == 2 &&
             back.h == 2;
        i = ok ? worst_diff(back.pix, want12, 4) : 99;
        test_report(ok && i == 0, "pgm12_byte_order", "12-bit P5 1000 4095 0 2048 -> %d %d %d %d (hand 62 255 0 128) (%s)",
                    ok ? back.pix[0] : -1, ok ? back.pix[1] : -1, ok ? back.pix[2] : -1, ok ? back.pix[3] : -1,
                    ok ? "" : mama_last_error());
        mama_image_free(&back);
        ok = write_bytes(path, ppm10, sizeof ppm10 - 1) && mama_image_load(path, &back) == MAMA_OK && back.w == 3;
        i2 = ok ? worst_diff(back.pix, want10, 3) : 99;
        test_report(ok && i2 == 0, "ppm10_byte_order", "10-bit P6 red green blue -> %d %d %d (hand 130 255 50) (%s)",
                    ok ? back.pix[0] : -1, ok ? back.pix[1] : -1, ok ? back.pix[2] : -1, ok ? "" : mama_last_error());
        mama_image_free(&back);
        ok = write_bytes(path, cut, sizeof cut - 1) && mama_image_load(path, &back) == MAMA_ERR_FORMAT &&
             strstr(mama_last_error(), "needs 8 bytes") != NULL;
        test_report(ok, "pgm16_truncated", "%s", mama_last_error());
        mama_image_free(&back);
    }
    /* errors name the file and the reason */
    ok = mama_image_load("/nonexistent/dir/x.png", &back) == MAMA_ERR_IO && strstr(mama_last_error(), "/nonexistent/dir/x.png");
    test_report(ok, "load_missing_file", "%s", mama_last_error());
    ok = write_bytes(path, "this is not an image at all", 27) && mama_image_load(path, &back) == MAMA_ERR_FORMAT &&
         strstr(mama_last_error(), path) != NULL;
    test_report(ok, "load_garbage", "%s", mama_last_error());
    remove(path);
}

/* ------------------------------------------------- 16-bit intensity (A.5 step 1) */

/* Write v (w x h grey 16-bit) as a PNG, decode it with o, compare with want. */
static int decode16_case(const char *path, const uint16_t *v, int w, int h, const mama_decode_opts *o,
                         const int *want, int *worst) {
    mama_image back = {0, 0, NULL};
    int ok = png_write16(path, v, w, h, 1) == MAMA_OK && mama_image_load_opts(path, o, &back) == MAMA_OK &&
             back.w == w && back.h == h;
    *worst = ok ? worst_diff(back.pix, want, w * h) : 99;
    mama_image_free(&back);
    return ok && *worst == 0;
}

static void test_decode16(void) {
    char path[256];
    mama_decode_opts o;
    int ok, worst;
    snprintf(path, sizeof path, "/tmp/mama_test_dec16_%ld.png", (long)getpid_fallback());
    {
        /* 12-bit, max 4095, default (per-image max), floor(v*255/4095 + 1/2):
         * 1 -> 0.06 -> 0; 1000 -> 255000/4095 = 62.27 -> 62; 2048 -> 522240/4095 = 127.53 -> 128;
         * 3000 -> 765000/4095 = 186.81 -> 187; 4095 -> 255.  (v/257 would give 0 4 8 12 16.) */
        static const uint16_t v[6] = {0, 1, 1000, 2048, 3000, 4095};
        static const int want[6] = {0, 0, 62, 128, 187, 255};
        ok = decode16_case(path, v, 3, 2, NULL, want, &worst);
        test_report(ok, "decode16_12bit_max", "max 4095: 2048 -> 128, 1000 -> 62, 3000 -> 187, worst=%d (%s)", worst,
                    ok ? "" : mama_last_error());
        /* the same image with bit_depth 12: 2^12 - 1 = 4095 = its max, so the same values */
        memset(&o, 0, sizeof o);
        o.bit_depth = 12;
        ok = decode16_case(path, v, 3, 2, &o, want, &worst);
        test_report(ok, "decode16_12bit_depth12", "bit_depth 12 on a max-4095 image = the per-image result, worst=%d",
                    worst);
    }
    {
        /* 14-bit, max 16383: 100 -> 25500/16383 = 1.56 -> 2; 8192 -> 2088960/16383 = 127.508 -> 128;
         * 16383 -> 255 */
        static const uint16_t v[4] = {0, 100, 8192, 16383};
        static const int want[4] = {0, 2, 128, 255};
        ok = decode16_case(path, v, 2, 2, NULL, want, &worst);
        test_report(ok, "decode16_14bit_max", "max 16383: 8192 -> 128, 100 -> 2, worst=%d", worst);
    }
    {
        /* full range, max 65535 = v/257 rounded: 25700 -> 100, 25828 = 100*257+128 -> 100.498 -> 100,
         * 25829 -> 100.502 -> 101, 1000 -> 3.89 -> 4; bit_depth 16 gives the same */
        static const uint16_t v[6] = {0, 25700, 25828, 25829, 65535, 1000};
        static const int want[6] = {0, 100, 100, 101, 255, 4};
        int ok2;
        ok = decode16_case(path, v, 3, 2, NULL, want, &worst);
        memset(&o, 0, sizeof o);
        o.bit_depth = 16;
        ok2 = decode16_case(path, v, 3, 2, &o, want, &worst);
        test_report(ok && ok2, "decode16_full_range", "max 65535 and bit_depth 16: v/257 rounded half up, worst=%d",
                    worst);
    }
    {
        /* max 1000 below the 12-bit depth.  Per-image max: 250 -> 63.75 -> 64, 500 -> 127.5 -> 128 (the
         * half rounds up), 1000 -> 255.  bit_depth 12: 250 -> 63750/4095 = 15.57 -> 16,
         * 500 -> 127500/4095 = 31.14 -> 31, 1000 -> 255000/4095 = 62.27 -> 62; 5000 is above 4095 -> 255. */
        static const uint16_t v[4] = {0, 250, 500, 1000}, v5[4] = {0, 250, 500, 5000};
        static const int want_max[4] = {0, 64, 128, 255}, want_d12[4] = {0, 16, 31, 62}, want_clip[4] = {0, 16, 31, 255};
        int w1, w2, w3, ok1, ok2, ok3;
        ok1 = decode16_case(path, v, 2, 2, NULL, want_max, &w1);
        memset(&o, 0, sizeof o);
        o.bit_depth = 12;
        ok2 = decode16_case(path, v, 2, 2, &o, want_d12, &w2);
        ok3 = decode16_case(path, v5, 2, 2, &o, want_clip, &w3);
        test_report(ok1, "decode16_below_depth_max", "max 1000, per-image: 250 500 1000 -> 64 128 255, worst=%d", w1);
        test_report(ok2, "decode16_below_depth_12", "max 1000, bit_depth 12: 250 500 1000 -> 16 31 62, worst=%d", w2);
        test_report(ok3, "decode16_depth_clips", "bit_depth 12: 5000 > 4095 -> 255, worst=%d", w3);
    }
    {
        /* DICOM LINEAR window C 1000.5, W 1001: c - 0.5 = 1000, (W-1)/2 = 500, so v <= 500 -> 0,
         * v > 1500 -> 255, else ((v - 1000)/1000 + 0.5) * 255: 501 -> 0.255 -> 0, 750 -> 63.75 -> 64,
         * 1000 -> 127.5 -> 128, 1250 -> 191.25 -> 191, 1500 -> 255 */
        static const uint16_t v[9] = {400, 500, 501, 750, 1000, 1250, 1500, 1501, 4000};
        static const int want[9] = {0, 0, 0, 64, 128, 191, 255, 255, 255};
        memset(&o, 0, sizeof o);
        o.window_center = 1000.5f;
        o.window_width = 1001.0f;
        ok = decode16_case(path, v, 3, 3, &o, want, &worst);
        test_report(ok, "decode16_window", "C 1000.5 W 1001: 750 1000 1250 -> 64 128 191, clipped outside, worst=%d",
                    worst);
        /* W = 1: v > C - 0.5 -> 255 */
        {
            static const uint16_t v1[2] = {999, 1000};
            static const int want1[2] = {0, 255};
            o.window_center = 1000.0f;
            o.window_width = 1.0f;
            ok = decode16_case(path, v1, 2, 1, &o, want1, &worst);
            test_report(ok, "decode16_window_w1", "C 1000 W 1: 999 -> 0, 1000 -> 255, worst=%d", worst);
        }
    }
    {
        /* all zero: max 0 gives 0, not a division by zero */
        static const uint16_t v[4] = {0, 0, 0, 0};
        static const int want[4] = {0, 0, 0, 0};
        ok = decode16_case(path, v, 2, 2, NULL, want, &worst);
        test_report(ok, "decode16_all_zero", "max 0 -> all 0, worst=%d", worst);
    }
    {
        /* 8-bit images are not touched by the options */
        mama_image im = mk(4, 1, NULL), back = {0, 0, NULL};
        im.pix[0] = 0; im.pix[1] = 10; im.pix[2] = 100; im.pix[3] = 200;
        memset(&o, 0, sizeof o);
        o.bit_depth = 12;
        ok = mama_image_save_png(&im, path) == MAMA_OK && mama_image_load_opts(path, &o, &back) == MAMA_OK &&
             back.w == 4 && memcmp(back.pix, im.pix, 4) == 0;
        test_report(ok, "decode8_unchanged", "8-bit PNG with bit_depth 12: identical pixels");
        mama_image_free(&im);
        mama_image_free(&back);
    }
    {
        /* bad options name the field */
        mama_image back = {0, 0, NULL};
        mama_status s1, s2, s3;
        int m1, m2, m3;
        memset(&o, 0, sizeof o);
        o.bit_depth = 17;
        s1 = mama_image_load_opts(path, &o, &back);
        m1 = strstr(mama_last_error(), "bit_depth") != NULL;
        memset(&o, 0, sizeof o);
        o.window_width = 0.5f;
        s2 = mama_image_load_opts(path, &o, &back);
        m2 = strstr(mama_last_error(), "window_width") != NULL;
        o.window_width = 100.0f;
        o.bit_depth = 12;
        s3 = mama_image_load_opts(path, &o, &back);
        m3 = strstr(mama_last_error(), "exclusive") != NULL;
        test_report(s1 == MAMA_ERR_INVALID && s2 == MAMA_ERR_INVALID && s3 == MAMA_ERR_INVALID && m1 && m2 && m3,
                    "decode_opts_invalid", "bit_depth 17, window_width 0.5, both set: MAMA_ERR_INVALID (%s)",
                    mama_last_error());
    }
    {
        /* the dataset decodes with mama_dataset_opts.decode: an 8x8 image of 2048 (max 2048) is 255 by
         * default -> (255/255 - 0.5)/0.5 = 1; with bit_depth 12 it is 2048*255/4095 -> 128 ->
         * (128/255 - 0.5)/0.5 = 1/255 = 0.00392 */
        char dir[256], man[300], img[300];
        uint16_t v[64];
        mama_config c;
        mama_dataset_opts dopt;
        mama_dataset *d = NULL;
        float *px = NULL, got[2] = {-9, -9};
        int i, k, uniform = 1;
        FILE *f;
        snprintf(dir, sizeof dir, "/tmp/mama_test_ds16_%ld", (long)getpid_fallback());
        snprintf(man, sizeof man, "%s/manifest.csv", dir);
        snprintf(img, sizeof img, "%s/a.png", dir);
        for (i = 0; i < 64; i++) v[i] = 2048;
        mkdir(dir, 0755);
        ok = png_write16(img, v, 8, 8, 1) == MAMA_OK && (f = fopen(man, "wb")) != NULL;
        if (ok) { fputs("path,split\na.png,train\n", f); fclose(f); }
        ok = ok && mama_config_preset(&c, "tiny") == MAMA_OK;
        if (ok) px = (float *)malloc(sizeof(float) * (size_t)c.in_chans * c.image_size * c.image_size);
        for (k = 0; ok && k < 2; k++) {
            memset(&dopt, 0, sizeof dopt);
            dopt.manifest = man;
            dopt.decode.bit_depth = k ? 12 : 0;
            ok = px && mama_dataset_create(&d, &dopt, &c) == MAMA_OK && mama_dataset_image(d, 0, 0, NULL, px) == MAMA_OK;
            if (ok) {
                got[k] = px[0];
                for (i = 0; i < c.in_chans * c.image_size * c.image_size; i++) uniform &= px[i] == px[0];
            }
            mama_dataset_free(d);
            d = NULL;
        }
        test_report(ok && uniform && fabsf(got[0] - 1.0f) < 1e-6f && fabsf(got[1] - 1.0f / 255.0f) < 1e-6f,
                    "decode16_dataset", "dataset pixels %.6f (default, want 1) and %.6f (bit_depth 12, want 0.003922) "
                    "(%s)", got[0], got[1], ok ? "" : mama_last_error());
        memset(&dopt, 0, sizeof dopt);
        dopt.manifest = man;
        dopt.decode.bit_depth = 17;
        ok = mama_dataset_create(&d, &dopt, &c) == MAMA_ERR_INVALID &&
             strstr(mama_last_error(), "mama_dataset_opts.decode.bit_depth") != NULL;
        test_report(ok, "decode16_dataset_invalid", "%s", mama_last_error());
        mama_dataset_free(d);
        free(px);
        remove(img);
        remove(man);
        rmdir(dir);
    }
    remove(path);
}

/* ------------------------------------------------------------- synthetic */

/* fraction of breast pixels (above the Otsu threshold) brighter than 150 */
static double dense_fraction(const mama_image *im) {
    int t = mama_otsu_threshold(im);
    long n = 0, d = 0, i;
    for (i = 0; i < (long)im->w * im->h; i++)
        if (im->pix[i] > t) { n++; d += im->pix[i] > 150; }
    return n ? (double)d / n : 0;
}

static void test_synth(void) {
    mama_synth_image a[4], b[4], c[4];
    int k, ok, same = 1, diff = 0, i;
    double t0, dt;
    long live0 = test_live_allocs;
    ok = mama_synth_study(1234, 17, 128, 0, a) == MAMA_OK && mama_synth_study(1234, 17, 128, 0, b) == MAMA_OK &&
         mama_synth_study(1235, 17, 128, 0, c) == MAMA_OK;
    for (k = 0; ok && k < 4; k++) {
        same &= memcmp(a[k].img.pix, b[k].img.pix, (size_t)a[k].img.w * a[k].img.h) == 0 &&
                memcmp(&a[k].box, &b[k].box, sizeof a[k].box) == 0 && strcmp(a[k].birads, b[k].birads) == 0;
        diff |= memcmp(a[k].img.pix, c[k].img.pix, (size_t)a[k].img.w * a[k].img.h) != 0;
    }
    test_report(ok && same && diff, "synth_deterministic", "same (seed, index) -> same bytes; another seed differs");
    ok = ok && a[0].img.h == 128 && a[0].img.w == 104 && !strcmp(a[0].side, "left") && !strcmp(a[0].view, "CC") &&
         !strcmp(a[1].view, "MLO") && !strcmp(a[2].side, "right") && !strcmp(a[3].view, "MLO") &&
         !strcmp(a[0].patient, a[3].patient) && a[0].age == a[3].age && !strcmp(a[0].race, a[2].race) &&
         a[0].density == a[3].density && !strcmp(a[0].birads, a[1].birads) && !strcmp(a[2].birads, a[3].birads) &&
         !strcmp(a[0].split, a[3].split) && !strcmp(a[3].path, "images/p00018_R_MLO.png");
    test_report(ok, "synth_four_views", "L-CC L-MLO R-CC R-MLO of one patient, 104x128, shared metadata, path %s", a[3].path);
    for (k = 0; k < 4; k++) { mama_image_free(&a[k].img); mama_image_free(&b[k].img); mama_image_free(&c[k].img); }

    /* Anatomy, findings and density over many balanced studies at 192 px. */
    {
        double dsum[5] = {0}, brighter = 0;
        int dn[5] = {0}, n_find = 0, n_box_ok = 0, n_none_ok = 0, n_none = 0, n_side_ok = 0, n_pect = 0, n_pect_ok = 0;
        int n_consistent = 0, n_pairs = 0, n_bright = 0, s;
        for (s = 0; s < 60; s++) {
            if (mama_synth_study(77, s, 192, 1, a) != MAMA_OK) { ok = 0; break; }
            for (k = 0; k < 4; k++) {
                mama_synth_image *v = &a[k];
                int W = v->img.w, H = v->img.h, right = !strcmp(v->side, "right");
                int cw = right ? W - 1 : 0, far = right ? 0 : W - 1;
                dsum[v->density] += dense_fraction(&v->img);
                dn[v->density]++;
                /* chest wall on the left edge for left breasts, right for right */
                n_side_ok += v->img.pix[(H / 2) * W + cw] > 40 && v->img.pix[(H / 2) * W + far] < 10;
                if (!strcmp(v->view, "MLO")) {
                    /* pectoral: the upper chest-wall corner is bright */
                    int px = right ? W - 1 - W / 20 : W / 20;
                    n_pect++;
                    n_pect_ok += v->img.pix[(H / 20) * W + px] > 120;
                }
                if (!strcmp(v->birads, "N")) {
                    n_none++;
                    n_none_ok += v->box[0] == -1 && !v->mass_shape[0] && !v->calc_type[0];
                } else {
                    int x, y, x0 = v->box[0], y0 = v->box[1], x1 = v->box[2], y1 = v->box[3], mx = 0;
                    double ring = 0;
                    long nin = 0, nring = 0;
                    n_find++;
                    n_box_ok += x0 >= 0 && y0 >= 0 && x1 < W && y1 < H && x1 >= x0 && y1 >= y0;
                    /* the finding is brighter than a ring around its box */
                    for (y = y0 - 6; y <= y1 + 6; y++)
                        for (x = x0 - 6; x <= x1 + 6; x++) {
                            int p, inside = x >= x0 && x <= x1 && y >= y0 && y <= y1;
                            if (x < 0 || y < 0 || x >= W || y >= H) continue;
                            p = v->img.pix[y * W + x];
                            if (inside) { nin++; if (p > mx) mx = p; }
                            else if (p > 20) { ring += p; nring++; }
                        }
                    if (nin && nring && (mx > ring / nring + 30)) n_bright++;
                    if (nin && nring) brighter += mx - ring / nring;
                }
            }
            /* both views of a breast: the finding sits at a similar depth
             * from the chest wall (the MLO outline is 6% deeper) */
            for (k = 0; k < 4; k += 2)
                if (a[k].box[0] >= 0 && a[k + 1].box[0] >= 0) {
                    int W = a[k].img.w, right = k == 2;
                    double u0 = 0.5 * (a[k].box[0] + a[k].box[2]), u1 = 0.5 * (a[k + 1].box[0] + a[k + 1].box[2]);
                    if (right) { u0 = W - 1 - u0; u1 = W - 1 - u1; }
                    n_pairs++;
                    n_consistent += fabs(u1 - u0) < 0.12 * W + 6;
                }
            for (k = 0; k < 4; k++) mama_image_free(&a[k].img);
        }
        for (i = 1; i <= 4; i++) dsum[i] /= dn[i] ? dn[i] : 1;
        test_report(ok && dsum[1] < dsum[2] && dsum[2] < dsum[3] && dsum[3] < dsum[4] && dsum[4] - dsum[1] > 0.4,
                    "synth_density_order", "dense fraction by class 1..4: %.3f %.3f %.3f %.3f", dsum[1], dsum[2], dsum[3],
                    dsum[4]);
        test_report(n_none_ok == n_none && n_box_ok == n_find && n_find > 0, "synth_findings_boxes",
                    "%d N images without box/fields, %d/%d findings with a box inside the image", n_none_ok, n_box_ok, n_find);
        test_report(n_bright >= n_find * 9 / 10, "synth_findings_visible",
                    "%d/%d finding boxes hold a pixel >30 above their surround (mean excess %.1f)", n_bright, n_find,
                    n_find ? brighter / n_find : 0.0);
        test_report(n_consistent == n_pairs && n_pairs > 0, "synth_views_consistent",
                    "%d/%d CC/MLO pairs place the finding at a similar depth", n_consistent, n_pairs);
        test_report(n_side_ok == 240, "synth_chest_wall_side", "%d/240 images have breast at the chest-wall edge only", n_side_ok);
        test_report(n_pect_ok >= n_pect * 95 / 100, "synth_pectoral", "%d/%d MLO views with a bright upper chest-wall corner",
                    n_pect_ok, n_pect);
    }
    /* letters, cancer and fields follow each other (screening frequencies) */
    {
        int cnt[7] = {0}, s, bad = 0, split_bad = 0;
        for (s = 0; s < 300; s++) {
            if (mama_synth_study(5, s, 48, 0, a) != MAMA_OK) { bad++; break; }
            for (k = 0; k < 4; k++) {
                const char *L = strchr("ANBPSMK", a[k].birads[0]);
                if (!L) { bad++; continue; }
                if (k % 2 == 0) cnt[L - "ANBPSMK"]++;
                if ((a[k].birads[0] == 'M' || a[k].birads[0] == 'K') && !a[k].cancer) bad++;
                if (strchr("ANBP", a[k].birads[0]) && a[k].cancer) bad++;
                if (a[k].birads[0] == 'M' && strcmp(a[k].mass_shape, "spiculated")) bad++;
                if (a[k].birads[0] == 'P' && !a[k].mass_shape[0] && !a[k].calc_type[0]) bad++;
                if (!!a[k].mass_shape[0] != !!a[k].mass_density[0] || !!a[k].calc_type[0] != !!a[k].calc_distribution[0]) bad++;
                if (a[k].age < 40 || a[k].age > 80) bad++;
                if (strcmp(a[k].split, a[0].split)) split_bad++;
                mama_image_free(&a[k].img);
            }
        }
        test_report(bad == 0 && split_bad == 0 && cnt[1] > cnt[2] && cnt[2] > cnt[0] && cnt[0] > cnt[5] && cnt[6] > 0,
                    "synth_labels", "600 breasts A%d N%d B%d P%d S%d M%d K%d, %d label errors, %d split mismatches", cnt[0],
                    cnt[1], cnt[2], cnt[3], cnt[4], cnt[5], cnt[6], bad, split_bad);
    }
    /* montage of one study: R-MLO L-MLO R-CC L-CC (back to back hanging) */
    if (mama_synth_study(42, 2, 512, 1, a) == MAMA_OK) {
        int order[4] = {3, 1, 2, 0}, W = a[0].img.w, H = a[0].img.h, gap = 4, MW = 4 * W + 3 * gap, y;
        uint8_t *m = (uint8_t *)calloc((size_t)MW * H, 1);
        for (k = 0; k < 4; k++)
            for (y = 0; y < H; y++) memcpy(m + (size_t)y * MW + k * (W + gap), a[order[k]].img.pix + (size_t)y * W, (size_t)W);
        ok = mama_png_write(montage_path, m, MW, H, 1) == MAMA_OK;
        test_report(ok, "synth_montage", "wrote %s (L %s, R %s, density %d)", montage_path, a[0].birads, a[2].birads, a[0].density);
        free(m);
        for (k = 0; k < 4; k++) mama_image_free(&a[k].img);
    }
    /* speed (printed, not asserted): studies at 256 px, OpenMP over studies */
    {
        int n = 100, s;
        t0 = mama_time_seconds();
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 2)
#endif
        for (s = 0; s < n; s++) {
            mama_synth_image v[4];
            int q;
            if (mama_synth_study(9, s, 256, 0, v) == MAMA_OK)
                for (q = 0; q < 4; q++) mama_image_free(&v[q].img);
        }
        dt = mama_time_seconds() - t0;
        test_report(1, "synth_speed", "%d studies (%d images) at 256 px in %.2f s on %d threads -> 1000 studies ~%.1f s (no PNG)",
                    n, 4 * n, dt, mama_num_threads(), dt * 1000 / n);
    }
    test_report(test_live_allocs == live0, "synth_no_leaks", "live allocations %ld -> %ld", live0, test_live_allocs);
}

static void test_synth_write(void) {
    char dir[256], path[300], line[1024];
    FILE *f;
    int rows = 0, ok, cols_ok = 1;
    double t0;
    mama_image im = {0, 0, NULL};
    snprintf(dir, sizeof dir, "/tmp/mama_test_synth_%ld", (long)getpid_fallback());
    t0 = mama_time_seconds();
    ok = mama_synth_write(dir, 12, 128, 3, 0) == MAMA_OK;
    test_report(ok, "synth_write", "12 studies at 128 px into %s in %.2f s %s", dir, mama_time_seconds() - t0, ok ? "" : mama_last_error());
    snprintf(path, sizeof path, "%s/manifest.csv", dir);
    f = fopen(path, "r");
    ok = ok && f && fgets(line, sizeof line, f) &&
         !strcmp(line, "path,patient,study,side,view,procedure,age,race,ethnicity,image_type,density,birads,mass_shape,"
                       "mass_density,calc_type,calc_distribution,cancer,split\n");
    while (f && fgets(line, sizeof line, f)) {
        int commas = 0;
        char *p;
        for (p = line; *p; p++) commas += *p == ',';
        if (commas != 17) cols_ok = 0;
        rows++;
    }
    if (f) fclose(f);
    test_report(ok && rows == 48 && cols_ok, "synth_manifest", "header exact, %d rows (want 48) of 18 fields", rows);
    snprintf(path, sizeof path, "%s/images/p00012_R_MLO.png", dir);
    ok = mama_image_load(path, &im) == MAMA_OK && im.w == 104 && im.h == 128;
    test_report(ok, "synth_png_readable", "%s is %dx%d", path, im.w, im.h);
    mama_image_free(&im);
    {
        /* CSV quoting of a field with a comma and a quote */
        FILE *g;
        snprintf(path, sizeof path, "%s/q.csv", dir);
        g = fopen(path, "wb");
        if (g) {
            mama__synth_csv_field(g, "a,\"b\"", 1);
            fclose(g);
        }
        g = fopen(path, "rb");
        ok = g && fgets(line, sizeof line, g) && !strcmp(line, "\"a,\"\"b\"\"\"\n");
        if (g) fclose(g);
        test_report(ok, "csv_quoting", "a,\"b\" -> \"a,\"\"b\"\"\"");
        remove(path);
    }
    {
        /* clean up what synth_write made */
        static const char *const views[4] = {"L_CC", "L_MLO", "R_CC", "R_MLO"};
        int s, v;
        for (s = 1; s <= 12; s++)
            for (v = 0; v < 4; v++) {
                snprintf(path, sizeof path, "%s/images/p%05d_%s.png", dir, s, views[v]);
                remove(path);
            }
        snprintf(path, sizeof path, "%s/manifest.csv", dir);
        remove(path);
        snprintf(path, sizeof path, "%s/images", dir);
        rmdir(path);
        rmdir(dir);
    }
}

/* ------------------------------------------------ allocation failures */

static void test_alloc_failures(void) {
    mama_image im = mk(50, 30, NULL), out = {0, 0, NULL};
    mama_augment_opts o;
    float *buf = (float *)malloc(sizeof(float) * 3 * 40 * 40);
    mama_rng r;
    long k, live0;
    int crashes = 0, fails = 0;
    int i;
    for (i = 0; i < 50 * 30; i++) im.pix[i] = (uint8_t)((i % 50 > 10 && i % 50 < 40) ? 150 : 5);
    mama_augment_opts_default(&o);
    o.size = 40;
    live0 = test_live_allocs;
    for (k = 0; k < 40; k++) {
        mama_status s;
        mama_synth_image v[4];
        int q;
        mama_rng_seed(&r, 1);
        test_alloc_countdown = k;
        s = mama_image_pipeline(&im, &o, 1, &r, 3, buf);
        if (s != MAMA_OK) fails++;
        test_alloc_countdown = k;
        s = mama_synth_study(1, 0, 64, 0, v);
        test_alloc_countdown = -1;
        if (s == MAMA_OK)
            for (q = 0; q < 4; q++) mama_image_free(&v[q].img);
        if (test_live_allocs != live0) crashes++;
    }
    test_alloc_countdown = -1;
    test_report(crashes == 0 && fails > 0, "alloc_failures", "failing the k-th allocation, k<40: %d failed cleanly, %d leaks", fails,
                crashes);
    mama_image_free(&im);
    mama_image_free(&out);
    free(buf);
}

/* The decoded-size limit (issue 16 item 6): a PNG whose header says 20000 x
 * 20000 (no pixel data follows) is refused from the header with the file
 * and its size named, before any decoding; max_side raises or lowers the
 * limit; a normal image passes. */
static void test_decode_limit(void) {
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    unsigned char ihdr[13] = {0}, buf[64];
    size_t n = 0;
    FILE *f = fopen("build/test_image_huge.png", "wb");
    mama_image im = {0, 0, NULL};
    mama_decode_opts o;
    uint16_t px[6] = {0, 100, 200, 300, 400, 500};
    int ok, big, off;
    png16_be32(ihdr, 20000);
    png16_be32(ihdr + 4, 20000);
    ihdr[8] = 8; /* 8-bit grey */
    ok = f && fwrite(sig, 1, 8, f) == 8 && png16_chunk(f, "IHDR", ihdr, 13) && png16_chunk(f, "IEND", buf, 0);
    if (f) fclose(f);
    big = mama_image_load("build/test_image_huge.png", &im) == MAMA_ERR_FORMAT &&
          strstr(mama_last_error(), "build/test_image_huge.png: the image is 20000 x 20000 pixels, larger than the "
                 "decode limit of 16384 x 16384") != NULL;
    test_report(ok && big && !im.pix, "decode_limit_header", "%s", mama_last_error());
    memset(&o, 0, sizeof o);
    o.max_side = MAMA_OFF; /* past our check: stb then fails on the missing pixel data, not on our limit */
    off = mama_image_load_opts("build/test_image_huge.png", &o, &im) != MAMA_OK && !strstr(mama_last_error(), "limit");
    test_report(off, "decode_limit_off", "max_side MAMA_OFF: our check passes, stb refuses the empty file: %s",
                mama_last_error());
    ok = png_write16("build/test_image_small16.png", px, 3, 2, 1) == MAMA_OK;
    o.max_side = 2;
    ok = ok && mama_image_load_opts("build/test_image_small16.png", &o, &im) == MAMA_ERR_FORMAT &&
         strstr(mama_last_error(), "3 x 2 pixels") != NULL;
    o.max_side = 3;
    ok = ok && mama_image_load_opts("build/test_image_small16.png", &o, &im) == MAMA_OK && im.w == 3 && im.h == 2;
    test_report(ok, "decode_limit_max_side", "a 3 x 2 16-bit PNG: max_side 2 refuses it, 3 decodes it");
    mama_image_free(&im);
    (void)n;
}

int main(int argc, char **argv) {
    if (argc > 1) montage_path = argv[1];
    test_otsu();
    test_area();
    test_bilinear();
    test_letterbox();
    test_flips_jitter();
    test_blur();
    test_tensor_and_rrc();
    test_pipeline();
    test_io();
    test_decode16();
    test_decode_limit();
    test_synth();
    test_synth_write();
    test_alloc_failures();
    return test_finish();
}
