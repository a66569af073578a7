/* tests/test_plot.c - the raster canvas, the bitmap font, nice ticks and the
 * report charts.  Truth: hand-computed pixel sets and tick lists, a brute
 * force search over every 1-2-5 step, the documented colour of each
 * confusion cell read back from the PNG, and allocation failures injected
 * one by one (no leak, no crash).  The charts are also left in OUTDIR
 * (default /tmp/mama_plot_test, or argv[1]) for a person to look at:
 * loss.png, confusion7.png, heatmaps.png, bars.png. */
#define _POSIX_C_SOURCE 200809L /* mkdir */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Allocation hooks that can fail the k-th allocation and count live blocks
 * (stb_image_write's realloc(NULL, n) counts as an allocation too). */
static long t_countdown = -1; /* -1: never fail */
static long t_live = 0;
static int t_should_fail(void) {
    if (t_countdown == 0) return 1;
    if (t_countdown > 0) t_countdown--;
    return 0;
}
static void *t_malloc(size_t n) {
    void *p;
    if (t_should_fail()) return NULL;
    p = malloc(n);
    if (p) t_live++;
    return p;
}
static void *t_realloc(void *q, size_t n) {
    void *p;
    if (t_should_fail()) return NULL;
    p = realloc(q, n);
    if (p && !q) t_live++;
    return p;
}
static void t_free(void *p) {
    if (p) t_live--;
    free(p);
}
#define MAMA_MALLOC(sz) t_malloc(sz)
#define MAMA_REALLOC(p, sz) t_realloc(p, sz)
#define MAMA_FREE(p) t_free(p)
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_PLOT_IMPLEMENTATION
#include "mama_plot.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#include "tests/test_util.h"

static char outdir[512] = "/tmp/mama_plot_test";
static void out_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", outdir, name); }

/* Number of canvas pixels not equal to bg. */
static long count_not(const mama_canvas *c, uint32_t bg) {
    long n = 0;
    int x, y;
    for (y = 0; y < c->h; y++)
        for (x = 0; x < c->w; x++) n += mama_canvas_get(c, x, y) != bg;
    return n;
}

/* ---------------------------------------------------------------- font */

static void test_font(void) {
    int ch, i, j, missing = 0, bad_bits = 0, empty = 0, dup = 0, wrong_w = 0;
    static const char *strs[4] = {"", "a", "loss 0.25", "The quick brown fox"};
    for (ch = 32; ch <= 126; ch++) {
        const uint8_t *g = mama_font_glyph(ch);
        int bits = 0;
        if (!g) { missing++; continue; }
        for (i = 0; i < MAMA_FONT_H; i++) {
            if (g[i] & ~0x1F) bad_bits++;
            bits += g[i] != 0;
        }
        if (ch != ' ' && bits == 0) empty++;
        if (ch == ' ' && bits != 0) empty++;
    }
    test_report(missing == 0 && bad_bits == 0 && empty == 0, "font_table",
                "95 printable glyphs present, 5 columns wide, non-empty except space: missing=%d badbits=%d empty=%d",
                missing, bad_bits, empty);
    /* every glyph distinct from every other (no copy-paste slips) */
    for (i = 33; i <= 126; i++)
        for (j = i + 1; j <= 126; j++)
            if (memcmp(mama_font_glyph(i), mama_font_glyph(j), MAMA_FONT_H) == 0) dup++;
    test_report(dup == 0, "font_distinct", "pairs of identical glyphs among 94 visible: %d", dup);
    test_report(!mama_font_glyph(31) && !mama_font_glyph(127) && !mama_font_glyph(-1) && !mama_font_glyph(200),
                "font_range", "no glyph outside 32..126");
    for (i = 0; i < 4; i++)
        for (j = 1; j <= 4; j++)
            if (mama_text_width(strs[i], j) != (int)strlen(strs[i]) * MAMA_FONT_ADVANCE * j) wrong_w++;
    test_report(wrong_w == 0 && mama_text_width(NULL, 1) == 0 && mama_text_width("ab", 0) == 12, "text_width",
                "width = n * %d * scale for 4 strings x scales 1..4: %d wrong", MAMA_FONT_ADVANCE, wrong_w);
}

/* Text pixels are exactly the glyph bits, scaled, and rotated for _up. */
static void test_text_pixels(void) {
    mama_canvas c;
    const uint8_t *gA = mama_font_glyph('A'), *gL = mama_font_glyph('L');
    int x, y, wrong = 0, bits = 0, scale = 3;
    if (mama_canvas_alloc(&c, 40, 40, 0xFFFFFF) != MAMA_OK) { test_report(0, "text_pixels", "alloc"); return; }
    mama_canvas_text(&c, 2, 3, "A", 0x000000, 1);
    for (y = 0; y < 40; y++)
        for (x = 0; x < 40; x++) {
            int in = x >= 2 && x < 7 && y >= 3 && y < 11;
            int want = in && (gA[y - 3] & (0x10 >> (x - 2)));
            wrong += (mama_canvas_get(&c, x, y) == 0) != (want != 0);
        }
    test_report(wrong == 0, "text_glyph_A", "pixels of 'A' at (2,3) scale 1 vs its glyph rows: %d wrong", wrong);

    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_text(&c, 1, 1, "A", 0x000000, scale);
    for (y = 0; y < MAMA_FONT_H; y++)
        for (x = 0; x < MAMA_FONT_W; x++) bits += (gA[y] >> (4 - x)) & 1;
    test_report(count_not(&c, 0xFFFFFF) == (long)bits * scale * scale, "text_scale",
                "'A' at scale 3 sets %ld pixels, glyph bits * 9 = %d", count_not(&c, 0xFFFFFF), bits * 9);

    /* "L" rotated counter-clockwise at (5, 5): box 8 wide, 6 high; glyph
     * row r, column k -> (5 + r, 5 + 6 - 1 - k) */
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_text_up(&c, 5, 5, "L", 0x000000, 1);
    wrong = 0;
    for (y = 0; y < 40; y++)
        for (x = 0; x < 40; x++) {
            int r = x - 5, k = 5 + 6 - 1 - y;
            int want = r >= 0 && r < 8 && k >= 0 && k < 5 && (gL[r] & (0x10 >> k));
            wrong += (mama_canvas_get(&c, x, y) == 0) != (want != 0);
        }
    test_report(wrong == 0, "text_up", "'L' rotated 90 degrees CCW vs transposed glyph: %d wrong", wrong);

    /* text far off the canvas and non-ASCII bytes: no crash, clipped */
    mama_canvas_text(&c, -100000, 5, "abc", 0, 50);
    mama_canvas_text(&c, 35, 35, "\x01\xff\t", 0, 2);
    mama_canvas_text_up(&c, 38, -100000, "xyz", 0, 2);
    mama_canvas_text(NULL, 0, 0, "x", 0, 1);
    test_report(1, "text_clip", "off-canvas and non-printable text drawn without touching memory outside");
    mama_canvas_free(&c);
}

/* ---------------------------------------------------------- primitives */

static void test_lines_rects(void) {
    mama_canvas c;
    int x, y, wrong = 0;
    long n;
    if (mama_canvas_alloc(&c, 20, 12, 0xFFFFFF) != MAMA_OK) { test_report(0, "line_h", "alloc"); return; }
    mama_canvas_line(&c, 0, 0, 9, 0, 0xFF0000, 1);
    for (y = 0; y < 12; y++)
        for (x = 0; x < 20; x++) wrong += (mama_canvas_get(&c, x, y) == 0xFF0000) != (y == 0 && x <= 9);
    test_report(wrong == 0, "line_h", "Bresenham (0,0)-(9,0) colours exactly x=0..9 of row 0: %d wrong", wrong);

    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_line(&c, 4, 4, 0, 0, 0x00FF00, 1); /* reversed direction */
    wrong = 0;
    for (y = 0; y < 12; y++)
        for (x = 0; x < 20; x++) wrong += (mama_canvas_get(&c, x, y) == 0x00FF00) != (x == y && x <= 4);
    test_report(wrong == 0, "line_diag", "(4,4)-(0,0) colours exactly the 5 diagonal pixels: %d wrong", wrong);

    /* a steep line has exactly one pixel per row, moving by at most one */
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_line(&c, 2, 0, 5, 11, 0x0000FF, 1);
    wrong = 0;
    {
        int prev = -1;
        for (y = 0; y < 12; y++) {
            int cnt = 0, at = -1;
            for (x = 0; x < 20; x++)
                if (mama_canvas_get(&c, x, y) == 0x0000FF) { cnt++; at = x; }
            if (cnt != 1 || (prev >= 0 && (at - prev < 0 || at - prev > 1))) wrong++;
            prev = at;
        }
        wrong += mama_canvas_get(&c, 2, 0) != 0x0000FF || mama_canvas_get(&c, 5, 11) != 0x0000FF;
    }
    test_report(wrong == 0, "line_steep", "(2,0)-(5,11): one pixel per row, monotone, ends drawn: %d bad rows", wrong);

    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_line(&c, 3, 5, 12, 5, 0x000000, 3);
    n = count_not(&c, 0xFFFFFF);
    test_report(n == 12 * 3 && mama_canvas_get(&c, 2, 4) == 0 && mama_canvas_get(&c, 13, 6) == 0 &&
                    mama_canvas_get(&c, 14, 5) == 0xFFFFFF,
                "line_thick", "thickness 3 stamps 3x3 squares on x=3..12: 12 x 3 = 36 pixels, got %ld", n);

    /* anti-aliased line along a pixel row: full coverage on the row,
     * none beside it (distance 1 >= width/2 + 1/2) */
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_line_aa(&c, 0.0f, 0.0f, 9.0f, 0.0f, 0xFF0000, 1.0f);
    wrong = 0;
    for (y = 0; y < 12; y++)
        for (x = 0; x < 20; x++) {
            uint32_t v = mama_canvas_get(&c, x, y);
            wrong += (y == 0 && x <= 9) ? v != 0xFF0000 : v != 0xFFFFFF;
        }
    test_report(wrong == 0, "line_aa_h", "AA (0,0)-(9,0) width 1 colours exactly x=0..9 of row 0: %d wrong", wrong);

    /* half-pixel offset: rows 2 and 3 each get coverage 1/2 */
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_line_aa(&c, 5.0f, 2.5f, 10.0f, 2.5f, 0x000000, 1.0f);
    {
        uint32_t a = mama_canvas_get(&c, 7, 2), b = mama_canvas_get(&c, 7, 3), d = mama_canvas_get(&c, 7, 4);
        test_report(a == 0x808080 && b == 0x808080 && d == 0xFFFFFF, "line_aa_half",
                    "line on y=2.5 blends rows 2 and 3 half way (0x808080): got %06X %06X, row 4 %06X",
                    (unsigned)a, (unsigned)b, (unsigned)d);
    }

    /* far-away coordinates: clipped walk, a full row, no hang */
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_line(&c, -1000000000, 7, 1000000000, 7, 0x000000, 1);
    mama_canvas_line(&c, -2000000000, -2000000000, -1000000000, 2000000000, 0x000000, 5);
    mama_canvas_line_aa(&c, -1e30f, 0.0f, 1e30f, 3.0f, 0x000000, 2.0f);
    n = count_not(&c, 0xFFFFFF);
    wrong = 0;
    for (x = 0; x < 20; x++) wrong += mama_canvas_get(&c, x, 7) != 0;
    test_report(n == 20 && wrong == 0, "line_far", "line across +-1e9 fills row 7 only (%ld pixels set)", n);

    /* rectangles: hand-counted pixel sets, clipped at the borders */
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_fill_rect(&c, 3, 4, 5, 6, 0x123456);
    n = count_not(&c, 0xFFFFFF);
    wrong = mama_canvas_get(&c, 3, 4) != 0x123456 || mama_canvas_get(&c, 7, 9) != 0x123456 ||
            mama_canvas_get(&c, 8, 9) != 0xFFFFFF || mama_canvas_get(&c, 7, 10) != 0xFFFFFF;
    test_report(n == 30 && !wrong, "fill_rect", "5 x 6 filled rect at (3,4): %ld pixels (want 30), corners ok=%d",
                n, !wrong);
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_fill_rect(&c, -2, -3, 5, 5, 0);     /* 3 x 2 visible */
    mama_canvas_fill_rect(&c, 18, 10, 100, 100, 0); /* 2 x 2 visible */
    mama_canvas_fill_rect(&c, 5, 5, 0, 4, 0);
    mama_canvas_fill_rect(&c, 5, 5, -3, 4, 0);
    mama_canvas_fill_rect(&c, 2147483600, 5, 2147483600, 4, 0);
    n = count_not(&c, 0xFFFFFF);
    test_report(n == 6 + 4, "fill_rect_clip", "clipped rects set 3*2 + 2*2 = 10 pixels: got %ld", n);
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_rect(&c, 2, 2, 5, 6, 0);
    n = count_not(&c, 0xFFFFFF);
    test_report(n == 2 * 5 + 2 * 6 - 4 && mama_canvas_get(&c, 4, 4) == 0xFFFFFF, "rect_outline",
                "5 x 6 outline: %ld pixels (want 18), inside untouched", n);

    /* blending: white + black at 1/2 = round(127.5) = 128 */
    mama_canvas_fill(&c, 0xFFFFFF);
    mama_canvas_blend(&c, 1, 1, 0x000000, 0.5f);
    mama_canvas_blend(&c, 2, 1, 0x000000, 7.0f);
    mama_canvas_blend(&c, 3, 1, 0x000000, -1.0f);
    mama_canvas_blend(&c, -1, 1, 0x000000, 1.0f);
    test_report(mama_canvas_get(&c, 1, 1) == 0x808080 && mama_canvas_get(&c, 2, 1) == 0 &&
                    mama_canvas_get(&c, 3, 1) == 0xFFFFFF,
                "blend", "alpha 0.5 -> 0x808080, alpha > 1 clamps, alpha < 0 leaves the pixel");
    mama_canvas_free(&c);

    test_report(mama_canvas_alloc(&c, 0, 5, 0) == MAMA_ERR_INVALID && c.pix == NULL &&
                    mama_canvas_alloc(&c, 5, 40000, 0) == MAMA_ERR_INVALID && mama_canvas_alloc(NULL, 5, 5, 0) != MAMA_OK,
                "canvas_alloc_invalid", "sizes 0 x 5, 5 x 40000 and a NULL canvas rejected");
}

/* ---------------------------------------------------------------- ticks */

static int ticks_equal(double lo, double hi, int mt, const double *want, int nwant, double *worst) {
    double got[64];
    int n = mama_nice_ticks(lo, hi, mt, got, 64), i, ok = n == nwant;
    for (i = 0; ok && i < n; i++) {
        double e = fabs(got[i] - want[i]);
        if (e > *worst) *worst = e;
        if (e > 1e-12 * (fabs(want[i]) + 1e-9)) ok = 0;
    }
    return ok;
}

/* Brute force: count multiples of a step in [lo, hi] by walking them. */
static int brute_count(double lo, double hi, double step) {
    long long k = (long long)floor(lo / step) - 2;
    double tol = step * 1e-9;
    int n = 0;
    for (;; k++) {
        double v = (double)k * step;
        if (v > hi + tol) break;
        if (v >= lo - tol) n++;
    }
    return n;
}

static void test_ticks(void) {
    double worst = 0, t[8];
    int ok = 1, bad = 0, trial;
    mama_rng rng;
    { static const double w[] = {0, 2, 4, 6};           ok &= ticks_equal(0, 7.3, 6, w, 4, &worst); }
    { static const double w[] = {0, 1, 2, 3, 4, 5, 6, 7}; ok &= ticks_equal(0, 7.3, 10, w, 8, &worst); }
    { static const double w[] = {0, 2, 4, 6};           ok &= ticks_equal(7.3, 0, 6, w, 4, &worst); }
    { static const double w[] = {0, 0.5, 1};            ok &= ticks_equal(0, 1, 5, w, 3, &worst); }
    { static const double w[] = {0, 0.2, 0.4, 0.6, 0.8, 1}; ok &= ticks_equal(0, 1, 6, w, 6, &worst); }
    { static const double w[] = {-2, 0, 2, 4};          ok &= ticks_equal(-3.2, 4.1, 5, w, 4, &worst); }
    { static const double w[] = {2000, 3000, 4000, 5000}; ok &= ticks_equal(1234, 5678, 5, w, 4, &worst); }
    { static const double w[] = {0.001, 0.002, 0.003, 0.004}; ok &= ticks_equal(0.001, 0.0047, 4, w, 4, &worst); }
    { static const double w[] = {4.6, 4.8, 5.0, 5.2, 5.4}; ok &= ticks_equal(5, 5, 5, w, 5, &worst); }
    { static const double w[] = {-1, -0.5, 0, 0.5, 1};  ok &= ticks_equal(0, 0, 6, w, 5, &worst); }
    { static const double w[] = {0, 5000, 10000};       ok &= ticks_equal(0, 14999, 3, w, 3, &worst); }
    { static const double w[] = {0, 10};                ok &= ticks_equal(0, 10, 1, w, 2, &worst); } /* max 1 -> 2 */
    test_report(ok, "nice_ticks_hand", "12 hand-computed tick lists ([0,7.3]/6 -> 0 2 4 6 ...), worst err=%g", worst);
    test_report(mama_nice_ticks(NAN, 1, 5, t, 8) == 0 && mama_nice_ticks(0, INFINITY, 5, t, 8) == 0 &&
                    mama_nice_step(0, NAN, 5) == 0.0 && mama_nice_ticks(-1e308, 1e308, 5, t, 8) == 0 &&
                    mama_nice_ticks(0, 7.3, 6, NULL, 0) == 4 && mama_nice_ticks(0, 7.3, 2147483647, NULL, 0) == 731 &&
                    mama_nice_ticks(1e300, 1e300 * (1 + 1e-15), 5, t, 8) <= 5 &&
                    mama_nice_ticks(1e17, 1e17 + 64, 5, t, 8) <= 5,
                "nice_ticks_edge", "NaN/Inf/overflowing ranges give 0 ticks; NULL output just counts; "
                "max_ticks INT_MAX -> 1000 (0.01 steps: 731 ticks); ranges far from 0 terminate");

    /* random ranges: the step is 1, 2 or 5 times a power of ten, gives at
     * most max_ticks ticks (counted by walking), and the next smaller
     * 1-2-5 step gives more (so it is the smallest that fits) */
    mama_rng_seed(&rng, 7);
    for (trial = 0; trial < 2000; trial++) {
        double scale = pow(10.0, (double)mama_rng_below(&rng, 12) - 6.0);
        double lo = (mama_rng_uniform(&rng) * 2 - 1) * scale * 10, hi = lo + mama_rng_uniform(&rng) * scale * 10 + 1e-9 * scale;
        int mt = 2 + (int)mama_rng_below(&rng, 10), n;
        double step = mama_nice_step(lo, hi, mt), e = floor(log10(step) + 1e-9), m = step / pow(10.0, e), smaller;
        int mi = fabs(m - 1) < 1e-9 ? 0 : fabs(m - 2) < 1e-9 ? 1 : fabs(m - 5) < 1e-9 ? 2 : -1;
        if (mi < 0) { bad++; continue; }
        n = brute_count(lo, hi, step);
        smaller = mi == 0 ? 0.5 * step : mi == 1 ? 0.5 * step : 0.4 * step;
        if (n > mt || n != mama_nice_ticks(lo, hi, mt, NULL, 0) || brute_count(lo, hi, smaller) <= mt) bad++;
    }
    test_report(bad == 0, "nice_step_brute", "2000 random ranges: 1-2-5 step, count <= max, next smaller step too many: %d bad", bad);

    {
        char b[64];
        int fok = 1;
        mama__plot_fmt_tick(b, sizeof b, 0.30000000000000004, 0.1); fok &= strcmp(b, "0.3") == 0;
        mama__plot_fmt_tick(b, sizeof b, -1e-17, 0.5);              fok &= strcmp(b, "0.0") == 0;
        mama__plot_fmt_tick(b, sizeof b, 5000, 1000);               fok &= strcmp(b, "5000") == 0;
        mama__plot_fmt_tick(b, sizeof b, 0.05, 0.05);               fok &= strcmp(b, "0.05") == 0;
        mama__plot_fmt_tick(b, sizeof b, 2.5, 0.5);                 fok &= strcmp(b, "2.5") == 0;
        mama__plot_fmt_tick(b, sizeof b, 2e6, 1e6);                 fok &= strcmp(b, "2e+06") == 0;
        test_report(fok, "tick_labels", "0.1-steps print 0.3, -1e-17 at step 0.5 prints 0.0 (no -0.0), 1000-steps 5000, 2e6 as 2e+06");
    }
}

static void test_wrap(void) {
    char lines[3][MAMA__PLOT_WRAP];
    int n, ok, i, over = 0;
    n = mama__plot_wrap("the quick brown fox", 10, 3, lines);
    ok = n == 2 && strcmp(lines[0], "the quick") == 0 && strcmp(lines[1], "brown fox") == 0;
    n = mama__plot_wrap("  abcdefghijklmno  pq", 6, 3, lines);
    ok &= n == 3 && strcmp(lines[0], "abcdef") == 0 && strcmp(lines[1], "ghijkl") == 0 && strcmp(lines[2], "mno pq") == 0;
    n = mama__plot_wrap("there is an irregular mass with spiculated margins in the upper outer quadrant", 20, 2, lines);
    for (i = 0; i < n; i++) over += (int)strlen(lines[i]) > 20;
    ok &= n == 2 && strcmp(lines[0], "there is an") == 0 && over == 0 &&
          strcmp(lines[1] + strlen(lines[1]) - 2, "..") == 0;
    ok &= mama__plot_wrap(NULL, 10, 3, lines) == 0 && mama__plot_wrap("   ", 10, 3, lines) == 0;
    test_report(ok, "wrap", "greedy word wrap, long words split, cut marked '..', lines <= width (%s|%s)", lines[0],
                lines[1]);
}

static void test_colormaps(void) {
    uint8_t a[3], b[3];
    int i, mono = 1;
    double prev = -1;
    for (i = 0; i <= 256; i++) {
        double l;
        mama_colormap_heat((float)i / 256.0f, a);
        l = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2];
        if (l < prev - 0.5) mono = 0;
        prev = l;
    }
    mama_colormap_heat(NAN, a);
    mama_colormap_heat(-3.0f, b);
    test_report(mono && memcmp(a, b, 3) == 0, "colormap_heat", "luma non-decreasing over [0,1]; NaN and <0 give the t=0 colour");
    mama_colormap_blues(0.0f, a);
    mama_colormap_blues(1.0f, b);
    test_report(a[0] > 240 && b[0] < 20 && mama_plot_color(0) == mama_plot_color(10) && mama_plot_color(-1) == mama_plot_color(1),
                "colormap_blues", "blues runs white -> dark; palette cycles every 10");
}

/* ---------------------------------------------------------------- charts */

/* ITU-R 601 luma as mama_image_load's colour -> grey conversion. */
static int luma(const uint8_t *rgb) { return (19595 * rgb[0] + 38470 * rgb[1] + 7471 * rgb[2] + 32768) >> 16; }

static void test_confusion(void) {
    static const char *names[7] = {"N", "A", "B", "P", "S", "M", "K"};
    int m[49], t, p, wrong = 0;
    char path[600];
    mama_image im;
    mama_rng rng;
    mama_status st;
    mama_rng_seed(&rng, 3);
    for (t = 0; t < 7; t++)
        for (p = 0; p < 7; p++)
            m[t * 7 + p] = t == p ? 20 + (int)mama_rng_below(&rng, 200) : (int)mama_rng_below(&rng, 3) * (int)mama_rng_below(&rng, 12);
    m[0] = 1234; /* common class N */
    out_path(path, sizeof path, "confusion7.png");
    mama_clear_error();
    st = mama_plot_confusion(path, "BI-RADS, zeroshot (split: test)", names, 7, m, 40);
    test_report(st == MAMA_OK, "confusion_write", "7-class plot written to %s (%s)", path, mama_last_error());
    if (st != MAMA_OK || mama_image_load(path, &im) != MAMA_OK) {
        test_report(0, "confusion_read", "cannot read back: %s", mama_last_error());
        return;
    }
    /* Hand layout for K=7, cell=40, one-letter names: label scale 2
     * (font height 16), pad 10, gap 6, name width 10:
     * grid x0 = 10+16+10+10+6 = 52, y0 = 10+16+10 = 36, grid 280,
     * block width 52+280+10 = 342, H = 36+280+6+16+6+16+10 = 370.  The
     * 31-character title at scale 2 is 31*12-2 = 370 wide, so W = 390 and
     * the block moves right by (390-342)/2 = 24: grid x0 = 76. */
    test_report(im.w == 390 && im.h == 370, "confusion_size", "read back %d x %d, hand layout 390 x 370", im.w, im.h);
    /* each cell's corner has the blues colour of its row fraction */
    if (im.w == 390 && im.h == 370)
        for (t = 0; t < 7; t++) {
            long sum = 0;
            for (p = 0; p < 7; p++) sum += m[t * 7 + p];
            for (p = 0; p < 7; p++) {
                uint8_t rgb[3];
                int want, got = im.pix[(36 + t * 40 + 3) * im.w + 76 + p * 40 + 3];
                mama_colormap_blues((float)((double)m[t * 7 + p] / (double)sum), rgb);
                want = luma(rgb);
                wrong += abs(got - want) > 1;
            }
        }
    test_report(wrong == 0, "confusion_cells", "49 cell colours = blues(count / row sum) read back as grey: %d wrong", wrong);
    mama_image_free(&im);

    /* upright column names when they do not fit a cell; default names */
    {
        static const char *longn[3] = {"fatty", "scattered fibroglandular", "dense"};
        int m3[9] = {5, 1, 0, 2, 7, 1, 0, 0, 0};
        out_path(path, sizeof path, "confusion_long.png");
        mama_clear_error();
        st = mama_plot_confusion(path, NULL, longn, 3, m3, 24);
        test_report(st == MAMA_OK, "confusion_long_names", "long names, empty row, no title: %s", mama_last_error());
        out_path(path, sizeof path, "confusion_default.png");
        mama_clear_error();
        st = mama_plot_confusion(path, "K=1", NULL, 1, m3, 12);
        test_report(st == MAMA_OK, "confusion_k1", "K=1, NULL names: %s", mama_last_error());
    }
}

/* Loss curves as a training report has them: 5 series over 3000 steps,
 * noisy, one with a NaN gap and a spike. */
static void test_lines(void) {
    enum { N = 3000 };
    static float x[N], y[5][N];
    static const char *names[5] = {"total", "clip", "mv", "sym", "sla"};
    mama_plot_series s[5];
    mama_rng rng;
    char path[600];
    int i, k;
    double t0;
    mama_status st;
    mama_rng_seed(&rng, 11);
    for (i = 0; i < N; i++) {
        float e = expf(-(float)i / 700.0f);
        x[i] = (float)(i * 10);
        y[1][i] = 0.9f + 3.2f * e + 0.15f * mama_rng_normal(&rng);
        y[2][i] = 0.6f + 2.4f * e + 0.12f * mama_rng_normal(&rng);
        y[3][i] = 0.3f + 1.1f * expf(-(float)i / 300.0f) + 0.05f * mama_rng_normal(&rng);
        y[4][i] = 0.4f + 0.5f * e + 0.05f * mama_rng_normal(&rng);
        y[0][i] = y[1][i] + y[2][i] + 0.5f * y[3][i] + 0.5f * y[4][i];
    }
    for (i = 1200; i < 1220; i++) y[0][i] = NAN; /* a diverged stretch: gap */
    y[4][2000] = INFINITY;
    for (k = 0; k < 5; k++) { s[k].name = names[k]; s[k].x = x; s[k].y = y[k]; s[k].n = N; }
    out_path(path, sizeof path, "loss.png");
    t0 = mama_time_seconds();
    mama_clear_error();
    st = mama_plot_lines(path, "MaMA pretraining loss", "step", "loss", s, 5, 900, 520);
    test_report(st == MAMA_OK, "lines_write", "5 series x %d points -> %s in %.3f s (%s)", N, path,
                mama_time_seconds() - t0, mama_last_error());
    {
        mama_image im;
        st = mama_image_load(path, &im);
        test_report(st == MAMA_OK && im.w == 900 && im.h == 520, "lines_size", "read back %d x %d (want 900 x 520)",
                    im.w, im.h);
        mama_image_free(&im);
    }
    /* degenerate inputs still plot: no finite point, one point, constant,
     * x NULL, no title/labels, big canvas (text scale 2) */
    {
        float nanv[3] = {NAN, INFINITY, -INFINITY}, one = 2.5f, cst[4] = {1, 1, 1, 1}, huge[3] = {-3e38f, 3e38f, 0};
        mama_plot_series d[3], e;
        d[0].name = NULL; d[0].x = NULL; d[0].y = nanv; d[0].n = 3;
        d[1].name = "one point"; d[1].x = NULL; d[1].y = &one; d[1].n = 1;
        d[2].name = "a rather long series name that must be cut"; d[2].x = NULL; d[2].y = cst; d[2].n = 4;
        out_path(path, sizeof path, "lines_degenerate.png");
        mama_clear_error();
        st = mama_plot_lines(path, NULL, NULL, NULL, d, 3, 400, 300);
        test_report(st == MAMA_OK, "lines_degenerate", "all-NaN, single point, constant series: %s", mama_last_error());
        out_path(path, sizeof path, "lines_empty.png");
        mama_clear_error();
        st = mama_plot_lines(path, "empty", "x", "y", d, 1, 160, 120);
        test_report(st == MAMA_OK, "lines_empty", "no finite point at the minimum size: %s", mama_last_error());
        e.name = "extreme"; e.x = huge; e.y = huge; e.n = 3;
        out_path(path, sizeof path, "lines_extreme.png");
        mama_clear_error();
        st = mama_plot_lines(path, "extreme", "x", "y", &e, 1, 400, 300);
        test_report(st == MAMA_OK, "lines_extreme", "x and y spanning +-3e38: %s", mama_last_error());
        out_path(path, sizeof path, "loss_big.png");
        mama_clear_error();
        st = mama_plot_lines(path, "MaMA pretraining loss (large)", "step", "loss", s, 5, 1600, 900);
        test_report(st == MAMA_OK, "lines_big", "1600 x 900 with text scale 2: %s", mama_last_error());
    }
}

/* A synthetic mammogram with 8x8 similarity maps for four sentences. */
static void test_heatmaps(void) {
    static const char *titles[4] = {
        "Left breast, craniocaudal view.",
        "There is an irregular mass with spiculated margins in the upper outer quadrant, highly suggestive of malignancy.",
        "Scattered areas of fibroglandular density.",
        NULL};
    mama_synth_image v[4];
    mama_image prep;
    float maps[4 * 64];
    char path[600];
    int i, k, gx, gy;
    mama_status st;
    memset(&prep, 0, sizeof prep);
    st = mama_synth_study(5, 3, 320, 1, v);
    if (st == MAMA_OK) {
        st = mama_image_prepare(&v[0].img, 256, &prep);
        for (k = 0; k < 4; k++) mama_image_free(&v[k].img);
    }
    if (st != MAMA_OK) { test_report(0, "heatmaps_image", "synthetic image: %s", mama_last_error()); return; }
    /* map 0: a blob near the finding box centre; 1: a left-right ramp;
     * 2: checkerboard; 3: constant with a NaN cell */
    for (gy = 0; gy < 8; gy++)
        for (gx = 0; gx < 8; gx++) {
            float dx = (float)gx - 4.5f, dy = (float)gy - 3.0f;
            maps[0 * 64 + gy * 8 + gx] = expf(-(dx * dx + dy * dy) / 4.0f);
            maps[1 * 64 + gy * 8 + gx] = (float)gx * 0.1f - 0.3f;
            maps[2 * 64 + gy * 8 + gx] = (float)((gx + gy) & 1);
            maps[3 * 64 + gy * 8 + gx] = 0.25f;
        }
    maps[3 * 64 + 9] = NAN;
    out_path(path, sizeof path, "heatmaps.png");
    mama_clear_error();
    st = mama_plot_heatmaps(path, prep.pix, prep.w, prep.h, maps, 8, 8, 4, titles, 2);
    test_report(st == MAMA_OK, "heatmaps_write", "4 panels of 256 x 256 in 2 columns -> %s (%s)", path, mama_last_error());

    /* bilinear taps against hand values: 8 -> 256 upsampling, output x=0
     * clamps to cell 0; x = 16 samples (16.5)/32 - 0.5 = 0.015625 */
    {
        int ix[256];
        float fx[256];
        mama__plot_taps(256, 8, ix, fx);
        test_report(ix[0] == 0 && fx[0] == 0.0f && ix[16] == 0 && fabsf(fx[16] - 0.015625f) < 1e-6f && ix[255] == 7 &&
                        fx[255] == 0.0f && ix[47] == 0 && fabsf(fx[47] - 0.984375f) < 1e-6f,
                    "heatmap_taps", "half-pixel bilinear taps at x=0,16,47,255 match hand values");
    }
    /* a one-cell grid overlays a constant colour: pixel = (g + heat(0))/2 */
    {
        uint8_t grey[16 * 16], rgb[3];
        float one = 3.0f;
        mama_image im;
        for (i = 0; i < 256; i++) grey[i] = (uint8_t)i;
        out_path(path, sizeof path, "heatmap_1x1.png");
        mama_clear_error();
        st = mama_plot_heatmaps(path, grey, 16, 16, &one, 1, 1, 1, NULL, 1);
        mama_colormap_heat(0.0f, rgb);
        if (st == MAMA_OK && mama_image_load(path, &im) == MAMA_OK) {
            int wrong = 0, x, y;
            test_report(im.w == 32 && im.h == 32, "heatmap_1x1_size", "16 x 16 image, pad 8, no title: %d x %d (want 32)",
                        im.w, im.h);
            for (y = 0; y < 16 && im.w == 32; y++)
                for (x = 0; x < 16; x++) {
                    uint8_t want[3];
                    int g = grey[y * 16 + x];
                    for (k = 0; k < 3; k++) want[k] = (uint8_t)(0.5f * g + 0.5f * rgb[k] + 0.5f);
                    wrong += abs(im.pix[(8 + y) * 32 + 8 + x] - luma(want)) > 1;
                }
            test_report(wrong == 0, "heatmap_blend", "256 pixels = (grey + heat(0)) / 2 read back: %d wrong", wrong);
            mama_image_free(&im);
        } else {
            test_report(0, "heatmap_1x1", "write/read failed: %s", mama_last_error());
        }
    }
    mama_image_free(&prep);
}

static void test_bars(void) {
    static const char *methods[5] = {"MaMA", "CLIP", "no MV", "no SLA", "ViT-B scratch"};
    static const char *metrics[3] = {"BI-RADS", "density", "cancer"};
    float v[15] = {0.52f, 0.71f, 0.78f, 0.44f, 0.63f, 0.70f, 0.47f, 0.66f, 0.74f,
                   0.49f, 0.69f, NAN, 0.31f, 0.52f, 0.55f};
    float neg[3] = {-0.2f, 0.4f, 1.0f};
    char path[600];
    mama_status st;
    out_path(path, sizeof path, "bars.png");
    mama_clear_error();
    st = mama_plot_bars(path, "Ablation: balanced accuracy", "balanced accuracy", methods, 5, metrics, 3, v, 900, 480);
    test_report(st == MAMA_OK, "bars_write", "5 groups x 3 series -> %s (%s)", path, mama_last_error());
    out_path(path, sizeof path, "bars_neg.png");
    mama_clear_error();
    st = mama_plot_bars(path, NULL, NULL, NULL, 3, NULL, 1, neg, 320, 200);
    test_report(st == MAMA_OK, "bars_negative", "negative value, no names, one series: %s", mama_last_error());
}

/* ---------------------------------------------------------------- errors */

static void test_errors(void) {
    char path[600];
    float y[3] = {1, 2, 3};
    int m[4] = {1, 2, 3, 4}, mneg[4] = {1, -2, 3, 4}, bad = 0;
    uint8_t grey[32 * 32];
    float maps[4] = {0, 1, 2, 3};
    mama_plot_series s;
    const char *tmp;
    s.name = "s"; s.x = NULL; s.y = y; s.n = 3;
    memset(grey, 100, sizeof grey);
    out_path(path, sizeof path, "err.png");
#define EXPECT_INVALID(call)                                                                  \
    do {                                                                                      \
        mama_clear_error();                                                                   \
        if ((call) != MAMA_ERR_INVALID || !mama_last_error()[0]) {                            \
            bad++;                                                                            \
            printf("  not rejected: %s\n", #call);                                            \
        }                                                                                     \
    } while (0)
    EXPECT_INVALID(mama_plot_lines(NULL, "t", "x", "y", &s, 1, 400, 300));
    EXPECT_INVALID(mama_plot_lines(path, "t", "x", "y", NULL, 1, 400, 300));
    EXPECT_INVALID(mama_plot_lines(path, "t", "x", "y", &s, 0, 400, 300));
    EXPECT_INVALID(mama_plot_lines(path, "t", "x", "y", &s, 65, 400, 300));
    EXPECT_INVALID(mama_plot_lines(path, "t", "x", "y", &s, 1, 100, 300));
    EXPECT_INVALID(mama_plot_lines(path, "t", "x", "y", &s, 1, 400, 9000));
    s.n = -1;
    EXPECT_INVALID(mama_plot_lines(path, "t", "x", "y", &s, 1, 400, 300));
    s.n = 3; s.y = NULL;
    EXPECT_INVALID(mama_plot_lines(path, "t", "x", "y", &s, 1, 400, 300));
    s.y = y;
    EXPECT_INVALID(mama_plot_confusion(NULL, "t", NULL, 2, m, 40));
    EXPECT_INVALID(mama_plot_confusion(path, "t", NULL, 2, NULL, 40));
    EXPECT_INVALID(mama_plot_confusion(path, "t", NULL, 0, m, 40));
    EXPECT_INVALID(mama_plot_confusion(path, "t", NULL, 257, m, 40));
    EXPECT_INVALID(mama_plot_confusion(path, "t", NULL, 2, m, 5));
    EXPECT_INVALID(mama_plot_confusion(path, "t", NULL, 200, m, 50));
    EXPECT_INVALID(mama_plot_confusion(path, "t", NULL, 2, mneg, 40));
    EXPECT_INVALID(mama_plot_heatmaps(NULL, grey, 32, 32, maps, 2, 2, 1, NULL, 1));
    EXPECT_INVALID(mama_plot_heatmaps(path, NULL, 32, 32, maps, 2, 2, 1, NULL, 1));
    EXPECT_INVALID(mama_plot_heatmaps(path, grey, 32, 32, NULL, 2, 2, 1, NULL, 1));
    EXPECT_INVALID(mama_plot_heatmaps(path, grey, 8, 32, maps, 2, 2, 1, NULL, 1));
    EXPECT_INVALID(mama_plot_heatmaps(path, grey, 32, 32, maps, 0, 2, 1, NULL, 1));
    EXPECT_INVALID(mama_plot_heatmaps(path, grey, 32, 32, maps, 2, 2, 0, NULL, 1));
    EXPECT_INVALID(mama_plot_heatmaps(path, grey, 32, 32, maps, 2, 2, 1, NULL, 0));
    EXPECT_INVALID(mama_plot_heatmaps(path, grey, 4096, 4096, maps, 1, 1, 4, NULL, 2)); /* sheet > 2^26 */
    EXPECT_INVALID(mama_plot_bars(NULL, "t", "y", NULL, 2, NULL, 2, maps, 400, 300));
    EXPECT_INVALID(mama_plot_bars(path, "t", "y", NULL, 2, NULL, 17, maps, 400, 300));
    EXPECT_INVALID(mama_plot_bars(path, "t", "y", NULL, 0, NULL, 2, maps, 400, 300));
    EXPECT_INVALID(mama_plot_bars(path, "t", "y", NULL, 2, NULL, 2, NULL, 400, 300));
    EXPECT_INVALID(mama_plot_bars(path, "t", "y", NULL, 2, NULL, 2, maps, 400, 50));
    test_report(bad == 0, "errors_invalid", "28 bad calls rejected with MAMA_ERR_INVALID and a message: %d not", bad);

    tmp = "/nonexistent_dir_mama/x.png";
    {
        mama_status st = mama_plot_confusion(tmp, "t", NULL, 2, m, 40);
        test_report(st == MAMA_ERR_IO && strstr(mama_last_error(), "nonexistent_dir_mama") != NULL, "errors_io",
                    "unwritable path -> %s: %s", mama_status_name(st), mama_last_error());
    }
}

/* Fail every allocation of the chart code in turn, and the first one of
 * the PNG writer: each call must return an error (never crash) and free
 * what it took.  (Later failures inside stb_image_write's zlib stream hit
 * its own assert, so they are not injected here.) */
static void test_alloc_failures(void) {
    static const char *names[3] = {"a", "b", "c"};
    static const char *titles[2] = {"one", "two words"};
    char path[600];
    float y[50], maps[2 * 16];
    uint8_t grey[20 * 20];
    static const int mine[4] = {1, 2, 3, 1}; /* allocations before the PNG writer */
    int m[9] = {3, 1, 0, 0, 4, 1, 2, 0, 5}, k, leaks = 0, oks = 0, fails = 0, which;
    mama_plot_series s;
    for (k = 0; k < 50; k++) y[k] = (float)(k % 7);
    for (k = 0; k < 32; k++) maps[k] = (float)k;
    memset(grey, 90, sizeof grey);
    s.name = "s"; s.x = NULL; s.y = y; s.n = 50;
    out_path(path, sizeof path, "allocfail.png");
    for (which = 0; which < 4; which++)
        for (k = 0; k <= mine[which]; k++) {
            mama_status st;
            long before = t_live;
            float bv[3] = {1, 2, 3};
            t_countdown = k;
            if (which == 0) st = mama_plot_lines(path, "t", "x", "y", &s, 1, 300, 200);
            else if (which == 1) st = mama_plot_confusion(path, "t", names, 3, m, 20);
            else if (which == 2) st = mama_plot_heatmaps(path, grey, 20, 20, maps, 4, 4, 2, titles, 2);
            else st = mama_plot_bars(path, "t", "y", names, 3, NULL, 1, bv, 300, 200);
            t_countdown = -1;
            if (t_live != before) leaks++;
            if (st == MAMA_OK) oks++; else fails++;
        }
    test_report(leaks == 0 && fails == 1 + 2 + 3 + 1 + 4 && oks == 0, "alloc_failures",
                "each allocation of 4 charts (and the PNG writer's first) failed in turn: %d errors (want 11), "
                "%d unexpected successes, %d leaks", fails, oks, leaks);
    /* and with no failure the same calls succeed without leaking */
    {
        long before = t_live;
        float bv[3] = {1, 2, 3};
        int ok = mama_plot_lines(path, "t", "x", "y", &s, 1, 300, 200) == MAMA_OK &&
                 mama_plot_confusion(path, "t", names, 3, m, 20) == MAMA_OK &&
                 mama_plot_heatmaps(path, grey, 20, 20, maps, 4, 4, 2, titles, 2) == MAMA_OK &&
                 mama_plot_bars(path, "t", "y", names, 3, NULL, 1, bv, 300, 200) == MAMA_OK;
        test_report(ok && t_live == before, "alloc_balance", "4 charts succeed, live blocks %ld -> %ld", before, t_live);
    }
}

int main(int argc, char **argv) {
    double t0 = mama_time_seconds();
    if (argc > 1) snprintf(outdir, sizeof outdir, "%s", argv[1]);
    mkdir(outdir, 0755);
    test_font();
    test_text_pixels();
    test_lines_rects();
    test_ticks();
    test_wrap();
    test_colormaps();
    test_confusion();
    test_lines();
    test_heatmaps();
    test_bars();
    test_errors();
    test_alloc_failures();
    printf("# charts in %s (%.2f s)\n", outdir, mama_time_seconds() - t0);
    return test_finish();
}
