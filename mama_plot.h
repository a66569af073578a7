/* mama_plot.h - report charts for mama.h: a small RGB raster canvas, a
 *               built-in bitmap font, "nice" axis ticks, colour maps, line
 *               and bar charts, confusion matrices and heatmap overlays,
 *               written as PNG.  A companion single-file header: a program
 *               that only trains or embeds with mama.h does not need it.
 *
 * ===========================================================================
 *  USAGE
 * ===========================================================================
 *  mama.h must be included first.  In exactly one C or C++ file:
 *
 *      #include "mama.h"               (MAMA_IMPLEMENTATION in one file)
 *      #define MAMA_PLOT_IMPLEMENTATION
 *      #include "mama_plot.h"
 *
 *  everywhere else just include both headers.  The implementation uses only
 *  the public API of mama.h, so it may live in a different translation unit
 *  than MAMA_IMPLEMENTATION.  Errors work as in mama.h: every function that
 *  can fail returns a mama_status and leaves a message for
 *  mama_last_error(); nothing exits or aborts.
 *
 *      float loss[100];   (filled by the caller)
 *      mama_plot_series s = {"train loss", NULL, loss, 100};
 *      if (mama_plot_lines("loss.png", "Loss", "step", "loss", &s, 1, 900, 480) != MAMA_OK)
 *          fprintf(stderr, "plot: %s\n", mama_last_error());
 *
 *      mama_canvas c;                          (or draw by hand)
 *      if (mama_canvas_alloc(&c, 200, 100, 0xFFFFFFu) == MAMA_OK) {
 *          mama_canvas_line_aa(&c, 10, 90, 190, 10, MAMA_RGB(200, 0, 0), 1.5f);
 *          mama_canvas_text(&c, 10, 10, "hello", 0x000000u, 2);
 *          mama_canvas_save_png(&c, "hello.png");
 *          mama_canvas_free(&c);
 *      }
 *
 * ===========================================================================
 *  PNG files are written by mama.h's mama_png_write (stb_image_write,
 *  compiled there); with MAMA_NO_STB_IMAGE drawing works and saving a PNG
 *  is MAMA_ERR_UNSUPPORTED.
 *
 *  LICENSE: MIT (see README.md).
 */
#ifndef MAMA_PLOT_H_INCLUDED
#define MAMA_PLOT_H_INCLUDED

#ifndef MAMA_H_INCLUDED
#error "mama_plot.h needs mama.h: include mama.h first"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * 1. PUBLIC API: a small RGB raster canvas with a built-in bitmap font, and
 *    the charts of a training report: loss curves, confusion matrices,
 *    patch-similarity heatmaps, grouped bars.  Written to PNG with
 *    mama_png_write; no other dependency.
 *
 * Colours are 0xRRGGBB integers (MAMA_RGB builds one).  Coordinates are
 * pixels, x to the right, y down; pixel (x, y) has its centre at (x, y), so
 * a 1-pixel line between integer points covers exactly the pixels of the
 * segment.  Every drawing call clips to the canvas: nothing is ever written
 * outside it, whatever the arguments.
 * ------------------------------------------------------------------------- */
#define MAMA_RGB(r, g, b) ((((uint32_t)(r) & 255u) << 16) | (((uint32_t)(g) & 255u) << 8) | ((uint32_t)(b) & 255u))

/* An RGB canvas: pixel (x, y) is pix[3 * (y * w + x) + {0, 1, 2}] = R, G, B. */
typedef struct mama_canvas {
    int w, h;
    uint8_t *pix;
} mama_canvas;

/* 1 <= w, h <= 32768; the canvas is filled with `bg`. */
MAMA_API mama_status mama_canvas_alloc(mama_canvas *c, int w, int h, uint32_t bg);
MAMA_API void mama_canvas_free(mama_canvas *c); /* a zeroed struct is empty */
MAMA_API mama_status mama_canvas_save_png(const mama_canvas *c, const char *path);

MAMA_API void mama_canvas_fill(mama_canvas *c, uint32_t rgb);
MAMA_API void mama_canvas_set(mama_canvas *c, int x, int y, uint32_t rgb);
MAMA_API uint32_t mama_canvas_get(const mama_canvas *c, int x, int y); /* 0 outside */
/* pixel = (1 - alpha) * pixel + alpha * rgb, alpha clamped to [0, 1] */
MAMA_API void mama_canvas_blend(mama_canvas *c, int x, int y, uint32_t rgb, float alpha);
/* Bresenham line between integer points, both ends included; thick > 1
 * stamps a thick x thick square centred on each point. */
MAMA_API void mama_canvas_line(mama_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb, int thick);
/* Anti-aliased line of the given width (pixels, > 0): each pixel is blended
 * with coverage clamp(width/2 + 1/2 - d, 0, 1), d = the distance from its
 * centre to the segment (a box-filter estimate of the covered area). */
MAMA_API void mama_canvas_line_aa(mama_canvas *c, float x0, float y0, float x1, float y1, uint32_t rgb,
                                  float width);
/* Outline (1 pixel) and filled rectangles of w x h pixels at (x, y). */
MAMA_API void mama_canvas_rect(mama_canvas *c, int x, int y, int w, int h, uint32_t rgb);
MAMA_API void mama_canvas_fill_rect(mama_canvas *c, int x, int y, int w, int h, uint32_t rgb);

/* --- text: a built-in 5 x 8 bitmap font (printable ASCII 32..126) --------
 * Each glyph is 8 rows of 5 bits (bit 4 = leftmost column); rows 0-6 hold
 * capitals and digits (row 6 is the baseline), row 7 the descenders of
 * g j p q y , ; _.  Characters advance by 6 columns; other bytes are drawn
 * as '?'.  Everything scales by an integer factor (scale < 1 means 1). */
#define MAMA_FONT_W 5
#define MAMA_FONT_H 8
#define MAMA_FONT_ADVANCE 6
/* The 8 row bytes of character ch, or NULL outside 32..126. */
MAMA_API const uint8_t *mama_font_glyph(int ch);
/* Width of s in pixels: strlen(s) * MAMA_FONT_ADVANCE * scale (0 for NULL). */
MAMA_API int mama_text_width(const char *s, int scale);
/* Draw s with its top-left corner at (x, y); cell height MAMA_FONT_H*scale. */
MAMA_API void mama_canvas_text(mama_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale);
/* The same rotated 90 degrees counter-clockwise (reads bottom to top, as a
 * y-axis label): its box is MAMA_FONT_H*scale wide and
 * mama_text_width(s, scale) high, with top-left corner (x, y). */
MAMA_API void mama_canvas_text_up(mama_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale);

/* --- axes ----------------------------------------------------------------
 * The smallest "nice" step (1, 2 or 5 times a power of ten) that puts at
 * most max_ticks (clamped to 2..1000) multiples of itself in [lo, hi].
 * lo > hi are swapped; lo == hi is widened to lo +- |lo|/10 (+-1 at 0).
 * Returns 0 for non-finite input. */
MAMA_API double mama_nice_step(double lo, double hi, int max_ticks);
/* The multiples of mama_nice_step(lo, hi, max_ticks) inside [lo, hi], in
 * increasing order, written to ticks[0 .. min(count, cap)); returns the
 * count (0 for non-finite input).  E.g. [0, 7.3], 6 -> 0 2 4 6. */
MAMA_API int mama_nice_ticks(double lo, double hi, int max_ticks, double *ticks, int cap);

/* --- colour maps: t in [0, 1] (clamped; NaN gives 0) to RGB --------------
 * heat: dark navy -> purple -> red -> orange -> pale yellow, lightness
 *       increasing monotonically (reads in grey too).
 * blues: white -> dark blue (counts of a confusion matrix). */
MAMA_API void mama_colormap_heat(float t, uint8_t rgb[3]);
MAMA_API void mama_colormap_blues(float t, uint8_t rgb[3]);
/* Colour k of the series palette (10 distinct colours, cycling). */
MAMA_API uint32_t mama_plot_color(int k);

/* --- charts ---------------------------------------------------------------
 * Every chart validates its arguments (MAMA_ERR_INVALID naming the bad one),
 * draws on a canvas from mama_alloc and writes `path` as an RGB PNG.  Text
 * arguments may be NULL (nothing drawn); long texts are cut with "..". */

/* One curve: y[i] over x[i] for i < n (x NULL: x = i).  Points whose x or y
 * is NaN/Inf are skipped and break the line.  name NULL: "series k". */
typedef struct mama_plot_series {
    const char *name;
    const float *x;
    const float *y;
    int n;
} mama_plot_series;

/* Line chart of nseries (1..64) curves on one pair of axes: x and y ranges
 * from the finite points, grown by 2% (x) and 4% (y) without crossing 0,
 * ticks at the multiples of a nice step inside them; light
 * grid lines at the ticks, a legend (colour swatch + name, names cut to
 * 24 characters) right of the plot, left out when the chart is too narrow
 * for it.  width x height in [160, 8192] x [120, 8192]; text scales with the
 * size (1 up to about 1000 x 600, 2 above). */
MAMA_API mama_status mama_plot_lines(const char *path, const char *title, const char *xlabel,
                                     const char *ylabel, const mama_plot_series *series, int nseries,
                                     int width, int height);

/* Confusion matrix heatmap: matrix[t * K + p] = number of samples of true
 * class t predicted as p (>= 0), K in 1..256.  Each cell is cell x cell
 * pixels (cell in 12..256, K*cell <= 8192), coloured by its fraction of the
 * true row (so rare classes read as well as common ones: the diagonal is the
 * per-class recall) and labelled with its count in black or white, whichever
 * contrasts.  Class names (NULL: "0", "1", ...) label rows (true, left) and
 * columns (predicted, below; drawn upright when they do not fit a cell). */
MAMA_API mama_status mama_plot_confusion(const char *path, const char *title,
                                         const char *const *class_names, int K, const int *matrix,
                                         int cell);

/* Overlay panels: for each of nmaps maps (maps + m*gh*gw, a row-major
 * gh x gw grid, e.g. patch similarities), the w x h grey image with the map
 * min-max normalised (over its finite values; constant -> 0), upsampled
 * bilinearly with half-pixel centres (as F.interpolate, align_corners=False)
 * and blended over the image through the heat colour map at alpha 0.5
 * (pixels whose 4 taps touch a non-finite cell keep the bare image).  Panels sit in a grid of
 * `cols` columns (clamped to 1..nmaps), each under its title (titles or
 * titles[m] may be NULL), word-wrapped to the panel width on up to 3 lines.
 * w, h in 16..4096, gh, gw in 1..1024, nmaps in 1..256; the sheet must stay
 * under 2^26 pixels. */
MAMA_API mama_status mama_plot_heatmaps(const char *path, const uint8_t *grey, int w, int h,
                                        const float *maps, int gh, int gw, int nmaps,
                                        const char *const *titles, int cols);

/* Grouped bars: values[g * nseries + s] is the bar of series s in group g
 * (NaN/Inf: no bar), ngroups in 1..256, nseries in 1..16.  The y axis spans
 * 0 and every finite value plus 8% headroom, with nice ticks; each
 * bar carries its
 * value (3 significant digits) when it fits; groups are named below,
 * series in a legend (when nseries > 1 or a series name is given). */
MAMA_API mama_status mama_plot_bars(const char *path, const char *title, const char *ylabel,
                                    const char *const *group_names, int ngroups,
                                    const char *const *series_names, int nseries, const float *values,
                                    int width, int height);

#ifdef __cplusplus
}
#endif
#endif /* MAMA_PLOT_H_INCLUDED */

/* ==========================================================================
 * IMPLEMENTATION
 * ========================================================================== */
#ifdef MAMA_PLOT_IMPLEMENTATION
#ifndef MAMA_PLOT_IMPLEMENTATION_DONE
#define MAMA_PLOT_IMPLEMENTATION_DONE

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * 2. THE IMPLEMENTATION: a raster canvas, a bitmap font, the report charts.
 *
 * Everything is drawn in 8-bit RGB on a canvas from mama_alloc and written
 * with stb_image_write.  The charts are deliberately plain: white background,
 * light grid at "nice" tick values (1-2-5 steps), thin anti-aliased curves,
 * text in one built-in 5x8 font scaled by integers (crisp at any size).
 * ------------------------------------------------------------------------- */
/* 2.1 The font.  95 glyphs (ASCII 32..126), 8 rows each, bit 4 = the
 * leftmost of 5 columns.  Row 6 is the baseline; row 7 holds descenders.
 * Drawn by hand for this file: capitals and digits are 7 rows high,
 * lower case has a 5-row x-height (rows 2-6). */
static const uint8_t mama__plot_font[95][8] = {
    {0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x00}, /* ' ' */
    {0x04,0x04,0x04,0x04,0x04,0x00,0x04,0x00}, /* '!' */
    {0x0A,0x0A,0x0A,0x00,0x00,0x00,0x00,0x00}, /* '"' */
    {0x0A,0x0A,0x1F,0x0A,0x1F,0x0A,0x0A,0x00}, /* '#' */
    {0x04,0x0F,0x14,0x0E,0x05,0x1E,0x04,0x00}, /* '$' */
    {0x18,0x19,0x02,0x04,0x08,0x13,0x03,0x00}, /* '%' */
    {0x0C,0x12,0x14,0x08,0x15,0x12,0x0D,0x00}, /* '&' */
    {0x04,0x04,0x08,0x00,0x00,0x00,0x00,0x00}, /* '\'' */
    {0x02,0x04,0x08,0x08,0x08,0x04,0x02,0x00}, /* '(' */
    {0x08,0x04,0x02,0x02,0x02,0x04,0x08,0x00}, /* ')' */
    {0x00,0x04,0x15,0x0E,0x15,0x04,0x00,0x00}, /* '*' */
    {0x00,0x04,0x04,0x1F,0x04,0x04,0x00,0x00}, /* '+' */
    {0x00,0x00,0x00,0x00,0x00,0x0C,0x04,0x08}, /* ',' */
    {0x00,0x00,0x00,0x1F,0x00,0x00,0x00,0x00}, /* '-' */
    {0x00,0x00,0x00,0x00,0x00,0x0C,0x0C,0x00}, /* '.' */
    {0x00,0x01,0x02,0x04,0x08,0x10,0x00,0x00}, /* '/' */
    {0x0E,0x11,0x13,0x15,0x19,0x11,0x0E,0x00}, /* '0' */
    {0x04,0x0C,0x04,0x04,0x04,0x04,0x0E,0x00}, /* '1' */
    {0x0E,0x11,0x01,0x02,0x04,0x08,0x1F,0x00}, /* '2' */
    {0x1F,0x02,0x04,0x02,0x01,0x11,0x0E,0x00}, /* '3' */
    {0x02,0x06,0x0A,0x12,0x1F,0x02,0x02,0x00}, /* '4' */
    {0x1F,0x10,0x1E,0x01,0x01,0x11,0x0E,0x00}, /* '5' */
    {0x06,0x08,0x10,0x1E,0x11,0x11,0x0E,0x00}, /* '6' */
    {0x1F,0x01,0x02,0x04,0x08,0x08,0x08,0x00}, /* '7' */
    {0x0E,0x11,0x11,0x0E,0x11,0x11,0x0E,0x00}, /* '8' */
    {0x0E,0x11,0x11,0x0F,0x01,0x02,0x0C,0x00}, /* '9' */
    {0x00,0x0C,0x0C,0x00,0x0C,0x0C,0x00,0x00}, /* ':' */
    {0x00,0x0C,0x0C,0x00,0x0C,0x0C,0x04,0x08}, /* ';' */
    {0x01,0x02,0x04,0x08,0x04,0x02,0x01,0x00}, /* '<' */
    {0x00,0x00,0x1F,0x00,0x1F,0x00,0x00,0x00}, /* '=' */
    {0x10,0x08,0x04,0x02,0x04,0x08,0x10,0x00}, /* '>' */
    {0x0E,0x11,0x01,0x02,0x04,0x00,0x04,0x00}, /* '?' */
    {0x0E,0x11,0x17,0x15,0x17,0x10,0x0F,0x00}, /* '@' */
    {0x0E,0x11,0x11,0x1F,0x11,0x11,0x11,0x00}, /* 'A' */
    {0x1E,0x11,0x11,0x1E,0x11,0x11,0x1E,0x00}, /* 'B' */
    {0x0E,0x11,0x10,0x10,0x10,0x11,0x0E,0x00}, /* 'C' */
    {0x1E,0x11,0x11,0x11,0x11,0x11,0x1E,0x00}, /* 'D' */
    {0x1F,0x10,0x10,0x1E,0x10,0x10,0x1F,0x00}, /* 'E' */
    {0x1F,0x10,0x10,0x1E,0x10,0x10,0x10,0x00}, /* 'F' */
    {0x0E,0x11,0x10,0x17,0x11,0x11,0x0F,0x00}, /* 'G' */
    {0x11,0x11,0x11,0x1F,0x11,0x11,0x11,0x00}, /* 'H' */
    {0x0E,0x04,0x04,0x04,0x04,0x04,0x0E,0x00}, /* 'I' */
    {0x07,0x02,0x02,0x02,0x02,0x12,0x0C,0x00}, /* 'J' */
    {0x11,0x12,0x14,0x18,0x14,0x12,0x11,0x00}, /* 'K' */
    {0x10,0x10,0x10,0x10,0x10,0x10,0x1F,0x00}, /* 'L' */
    {0x11,0x1B,0x15,0x15,0x11,0x11,0x11,0x00}, /* 'M' */
    {0x11,0x11,0x19,0x15,0x13,0x11,0x11,0x00}, /* 'N' */
    {0x0E,0x11,0x11,0x11,0x11,0x11,0x0E,0x00}, /* 'O' */
    {0x1E,0x11,0x11,0x1E,0x10,0x10,0x10,0x00}, /* 'P' */
    {0x0E,0x11,0x11,0x11,0x15,0x12,0x0D,0x00}, /* 'Q' */
    {0x1E,0x11,0x11,0x1E,0x14,0x12,0x11,0x00}, /* 'R' */
    {0x0F,0x10,0x10,0x0E,0x01,0x01,0x1E,0x00}, /* 'S' */
    {0x1F,0x04,0x04,0x04,0x04,0x04,0x04,0x00}, /* 'T' */
    {0x11,0x11,0x11,0x11,0x11,0x11,0x0E,0x00}, /* 'U' */
    {0x11,0x11,0x11,0x11,0x11,0x0A,0x04,0x00}, /* 'V' */
    {0x11,0x11,0x11,0x15,0x15,0x15,0x0A,0x00}, /* 'W' */
    {0x11,0x11,0x0A,0x04,0x0A,0x11,0x11,0x00}, /* 'X' */
    {0x11,0x11,0x0A,0x04,0x04,0x04,0x04,0x00}, /* 'Y' */
    {0x1F,0x01,0x02,0x04,0x08,0x10,0x1F,0x00}, /* 'Z' */
    {0x0E,0x08,0x08,0x08,0x08,0x08,0x0E,0x00}, /* '[' */
    {0x00,0x10,0x08,0x04,0x02,0x01,0x00,0x00}, /* '\\' */
    {0x0E,0x02,0x02,0x02,0x02,0x02,0x0E,0x00}, /* ']' */
    {0x04,0x0A,0x11,0x00,0x00,0x00,0x00,0x00}, /* '^' */
    {0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x1F}, /* '_' */
    {0x08,0x04,0x02,0x00,0x00,0x00,0x00,0x00}, /* '`' */
    {0x00,0x00,0x0E,0x01,0x0F,0x11,0x0F,0x00}, /* 'a' */
    {0x10,0x10,0x1E,0x11,0x11,0x11,0x1E,0x00}, /* 'b' */
    {0x00,0x00,0x0E,0x10,0x10,0x11,0x0E,0x00}, /* 'c' */
    {0x01,0x01,0x0F,0x11,0x11,0x11,0x0F,0x00}, /* 'd' */
    {0x00,0x00,0x0E,0x11,0x1F,0x10,0x0E,0x00}, /* 'e' */
    {0x06,0x09,0x08,0x1C,0x08,0x08,0x08,0x00}, /* 'f' */
    {0x00,0x00,0x0F,0x11,0x11,0x0F,0x01,0x0E}, /* 'g' */
    {0x10,0x10,0x16,0x19,0x11,0x11,0x11,0x00}, /* 'h' */
    {0x04,0x00,0x0C,0x04,0x04,0x04,0x0E,0x00}, /* 'i' */
    {0x02,0x00,0x06,0x02,0x02,0x02,0x12,0x0C}, /* 'j' */
    {0x10,0x10,0x12,0x14,0x18,0x14,0x12,0x00}, /* 'k' */
    {0x0C,0x04,0x04,0x04,0x04,0x04,0x0E,0x00}, /* 'l' */
    {0x00,0x00,0x1A,0x15,0x15,0x15,0x15,0x00}, /* 'm' */
    {0x00,0x00,0x16,0x19,0x11,0x11,0x11,0x00}, /* 'n' */
    {0x00,0x00,0x0E,0x11,0x11,0x11,0x0E,0x00}, /* 'o' */
    {0x00,0x00,0x1E,0x11,0x11,0x1E,0x10,0x10}, /* 'p' */
    {0x00,0x00,0x0F,0x11,0x11,0x0F,0x01,0x01}, /* 'q' */
    {0x00,0x00,0x16,0x19,0x10,0x10,0x10,0x00}, /* 'r' */
    {0x00,0x00,0x0F,0x10,0x0E,0x01,0x1E,0x00}, /* 's' */
    {0x08,0x08,0x1C,0x08,0x08,0x09,0x06,0x00}, /* 't' */
    {0x00,0x00,0x11,0x11,0x11,0x13,0x0D,0x00}, /* 'u' */
    {0x00,0x00,0x11,0x11,0x11,0x0A,0x04,0x00}, /* 'v' */
    {0x00,0x00,0x11,0x11,0x15,0x15,0x0A,0x00}, /* 'w' */
    {0x00,0x00,0x11,0x0A,0x04,0x0A,0x11,0x00}, /* 'x' */
    {0x00,0x00,0x11,0x11,0x11,0x0F,0x01,0x0E}, /* 'y' */
    {0x00,0x00,0x1F,0x02,0x04,0x08,0x1F,0x00}, /* 'z' */
    {0x03,0x04,0x04,0x08,0x04,0x04,0x03,0x00}, /* '{' */
    {0x04,0x04,0x04,0x04,0x04,0x04,0x04,0x00}, /* '|' */
    {0x18,0x04,0x04,0x02,0x04,0x04,0x18,0x00}, /* '}' */
    {0x00,0x00,0x08,0x15,0x02,0x00,0x00,0x00}, /* '~' */
};

MAMA_API const uint8_t *mama_font_glyph(int ch) {
    return (ch >= 32 && ch <= 126) ? mama__plot_font[ch - 32] : NULL;
}

static int mama__plot_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
static int mama__plot_maxi(int a, int b) { return a > b ? a : b; }

/* 2.2 The canvas. */
MAMA_API mama_status mama_canvas_alloc(mama_canvas *c, int w, int h, uint32_t bg) {
    if (!c) return MAMA_FAIL(MAMA_ERR_INVALID, "canvas alloc: NULL canvas");
    c->w = c->h = 0;
    c->pix = NULL;
    if (w < 1 || h < 1 || w > 32768 || h > 32768)
        return MAMA_FAIL(MAMA_ERR_INVALID, "canvas alloc: size %d x %d outside 1..32768", w, h);
    MAMA_TRY(mama_alloc((void **)&c->pix, (size_t)w * (size_t)h * 3, "plot canvas"));
    c->w = w;
    c->h = h;
    mama_canvas_fill(c, bg);
    return MAMA_OK;
}
MAMA_API void mama_canvas_free(mama_canvas *c) {
    if (!c) return;
    mama_free(c->pix);
    c->pix = NULL;
    c->w = c->h = 0;
}
MAMA_API mama_status mama_canvas_save_png(const mama_canvas *c, const char *path) {
    if (!c || !c->pix || !path)
        return MAMA_FAIL(MAMA_ERR_INVALID, "canvas save %s: empty canvas or NULL path", path ? path : "?");
    return mama_png_write(path, c->pix, c->w, c->h, 3);
}
/* Inside test shared by every pixel write: one unsigned compare per axis. */
static int mama__plot_inside(const mama_canvas *c, int x, int y) {
    return c && c->pix && (unsigned)x < (unsigned)c->w && (unsigned)y < (unsigned)c->h;
}
MAMA_API void mama_canvas_fill(mama_canvas *c, uint32_t rgb) {
    size_t i, n;
    if (!c || !c->pix) return;
    n = (size_t)c->w * (size_t)c->h;
    for (i = 0; i < n; i++) {
        c->pix[3 * i] = (uint8_t)(rgb >> 16);
        c->pix[3 * i + 1] = (uint8_t)(rgb >> 8);
        c->pix[3 * i + 2] = (uint8_t)rgb;
    }
}
MAMA_API void mama_canvas_set(mama_canvas *c, int x, int y, uint32_t rgb) {
    uint8_t *p;
    if (!mama__plot_inside(c, x, y)) return;
    p = c->pix + 3 * ((size_t)y * (size_t)c->w + (size_t)x);
    p[0] = (uint8_t)(rgb >> 16);
    p[1] = (uint8_t)(rgb >> 8);
    p[2] = (uint8_t)rgb;
}
MAMA_API uint32_t mama_canvas_get(const mama_canvas *c, int x, int y) {
    const uint8_t *p;
    if (!mama__plot_inside(c, x, y)) return 0;
    p = c->pix + 3 * ((size_t)y * (size_t)c->w + (size_t)x);
    return MAMA_RGB(p[0], p[1], p[2]);
}
MAMA_API void mama_canvas_blend(mama_canvas *c, int x, int y, uint32_t rgb, float alpha) {
    uint8_t *p;
    int k;
    if (!mama__plot_inside(c, x, y) || !(alpha > 0.0f)) return; /* NaN alpha: nothing */
    if (alpha > 1.0f) alpha = 1.0f;
    p = c->pix + 3 * ((size_t)y * (size_t)c->w + (size_t)x);
    for (k = 0; k < 3; k++) {
        float q = (float)((rgb >> (16 - 8 * k)) & 255u);
        p[k] = (uint8_t)(p[k] + alpha * (q - p[k]) + 0.5f); /* stays in [0, 255.5) */
    }
}
MAMA_API void mama_canvas_fill_rect(mama_canvas *c, int x, int y, int w, int h, uint32_t rgb) {
    int x0, y0, x1, y1, i, j;
    if (!c || !c->pix || w <= 0 || h <= 0) return;
    /* clip in 64-bit so that x + w cannot overflow */
    x0 = mama__plot_maxi(x, 0);
    y0 = mama__plot_maxi(y, 0);
    x1 = (int)((long long)x + w > c->w ? c->w : (long long)x + w);
    y1 = (int)((long long)y + h > c->h ? c->h : (long long)y + h);
    for (j = y0; j < y1; j++)
        for (i = x0; i < x1; i++) mama_canvas_set(c, i, j, rgb);
}
MAMA_API void mama_canvas_rect(mama_canvas *c, int x, int y, int w, int h, uint32_t rgb) {
    if (w <= 0 || h <= 0) return;
    mama_canvas_fill_rect(c, x, y, w, 1, rgb);
    mama_canvas_fill_rect(c, x, (int)((long long)y + h - 1 > INT_MAX ? INT_MAX : y + (long long)h - 1), w, 1, rgb);
    mama_canvas_fill_rect(c, x, y, 1, h, rgb);
    mama_canvas_fill_rect(c, (int)((long long)x + w - 1 > INT_MAX ? INT_MAX : x + (long long)w - 1), y, 1, h, rgb);
}

/* A segment much longer than the canvas (coordinates far outside it) is
 * first clipped (Liang-Barsky, in double) to the canvas grown by the line
 * thickness, so the walk below stays O(canvas size).  Ordinary segments are
 * left alone so their pixels stay exactly Bresenham's.  Returns 1 when
 * nothing is visible. */
static int mama__plot_clip_long(const mama_canvas *c, int *x0, int *y0, int *x1, int *y1, int thick) {
    double ax = *x0, ay = *y0, dx = (double)*x1 - *x0, dy = (double)*y1 - *y0;
    double lo = -thick, hix = c->w - 1.0 + thick, hiy = c->h - 1.0 + thick, t0 = 0.0, t1 = 1.0;
    double p[4], q[4];
    int k;
    if (fabs(dx) + fabs(dy) <= 4.0 * ((double)c->w + c->h + thick)) return 0;
    p[0] = -dx; q[0] = ax - lo;
    p[1] = dx;  q[1] = hix - ax;
    p[2] = -dy; q[2] = ay - lo;
    p[3] = dy;  q[3] = hiy - ay;
    for (k = 0; k < 4; k++) {
        if (p[k] == 0.0) { if (q[k] < 0.0) return 1; continue; }
        if (p[k] < 0.0) { double r = q[k] / p[k]; if (r > t1) return 1; if (r > t0) t0 = r; }
        else { double r = q[k] / p[k]; if (r < t0) return 1; if (r < t1) t1 = r; }
    }
    *x0 = (int)floor(ax + t0 * dx + 0.5);
    *y0 = (int)floor(ay + t0 * dy + 0.5);
    *x1 = (int)floor(ax + t1 * dx + 0.5);
    *y1 = (int)floor(ay + t1 * dy + 0.5);
    return 0;
}

/* 2.3 Lines.  Bresenham walks the major axis one pixel at a time and
 * carries the error of the minor axis, so both end points are drawn and the
 * pixels are exactly those nearest the ideal segment. */
MAMA_API void mama_canvas_line(mama_canvas *c, int x0, int y0, int x1, int y1, uint32_t rgb, int thick) {
    long long dx, dy, err, e2;
    int sx, sy, o;
    if (!c || !c->pix) return;
    if (thick < 1) thick = 1;
    if (thick > 64) thick = 64;
    o = (thick - 1) / 2;
    if (mama__plot_clip_long(c, &x0, &y0, &x1, &y1, thick)) return;
    dx = x1 > x0 ? (long long)x1 - x0 : (long long)x0 - x1;
    dy = y1 > y0 ? (long long)y0 - y1 : (long long)y1 - y0; /* -|dy| */
    sx = x0 < x1 ? 1 : -1;
    sy = y0 < y1 ? 1 : -1;
    err = dx + dy;
    for (;;) {
        if (thick == 1) mama_canvas_set(c, x0, y0, rgb);
        else mama_canvas_fill_rect(c, x0 - o, y0 - o, thick, thick, rgb);
        if (x0 == x1 && y0 == y1) break;
        e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

/* Coverage of pixel (px, py) by a segment of half-width r - 1/2: the
 * distance d from the pixel centre to the nearest point of the segment
 * gives coverage r - d, clamped to [0, 1]. */
static float mama__plot_cover(float px, float py, float x0, float y0, float dx, float dy, float len2, float r) {
    float t = len2 > 0.0f ? ((px - x0) * dx + (py - y0) * dy) / len2 : 0.0f;
    float ex, ey, cov;
    if (t < 0.0f) t = 0.0f;
    if (t > 1.0f) t = 1.0f;
    ex = px - (x0 + t * dx);
    ey = py - (y0 + t * dy);
    cov = r - sqrtf(ex * ex + ey * ey);
    return cov < 0.0f ? 0.0f : (cov > 1.0f ? 1.0f : cov);
}

/* Anti-aliased segment clipped to the box [cx0, cx1] x [cy0, cy1].  Walk
 * the major axis; across it, only a band of half-height r*sqrt(2) + 1
 * around the centre line can be covered, so the cost is O(length * width)
 * rather than the area of the bounding box. */
static void mama__plot_line_aa(mama_canvas *c, float x0, float y0, float x1, float y1, uint32_t rgb,
                               float width, int cx0, int cy0, int cx1, int cy1) {
    float dx = x1 - x0, dy = y1 - y0, len2, r, band;
    int steep, a, a0, a1, b, b0, b1;
    if (!c || !c->pix || !(width > 0.0f)) return;
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1) || !isfinite(width)) return;
    /* keep coordinates where float -> int is defined */
    if (fabsf(x0) > 1e6f || fabsf(y0) > 1e6f || fabsf(x1) > 1e6f || fabsf(y1) > 1e6f || width > 1e3f) return;
    cx0 = mama__plot_maxi(cx0, 0);
    cy0 = mama__plot_maxi(cy0, 0);
    if (cx1 > c->w - 1) cx1 = c->w - 1;
    if (cy1 > c->h - 1) cy1 = c->h - 1;
    len2 = dx * dx + dy * dy;
    r = 0.5f * width + 0.5f;
    band = r * 1.4143f + 1.0f;
    steep = fabsf(dy) > fabsf(dx);
    {
        float lo = steep ? (y0 < y1 ? y0 : y1) : (x0 < x1 ? x0 : x1);
        float hi = steep ? (y0 < y1 ? y1 : y0) : (x0 < x1 ? x1 : x0);
        a0 = (int)floorf(lo - r);
        a1 = (int)ceilf(hi + r);
    }
    if (steep) { a0 = mama__plot_maxi(a0, cy0); if (a1 > cy1) a1 = cy1; }
    else       { a0 = mama__plot_maxi(a0, cx0); if (a1 > cx1) a1 = cx1; }
    for (a = a0; a <= a1; a++) {
        /* centre line position across the major axis at a (clamped to the
         * segment so that the round caps are inside the band) */
        float t, m;
        if (steep) t = dy != 0.0f ? ((float)a - y0) / dy : 0.0f;
        else t = dx != 0.0f ? ((float)a - x0) / dx : 0.0f;
        if (t < 0.0f) t = 0.0f;
        if (t > 1.0f) t = 1.0f;
        m = steep ? x0 + t * dx : y0 + t * dy;
        b0 = (int)floorf(m - band);
        b1 = (int)ceilf(m + band);
        if (steep) { b0 = mama__plot_maxi(b0, cx0); if (b1 > cx1) b1 = cx1; }
        else       { b0 = mama__plot_maxi(b0, cy0); if (b1 > cy1) b1 = cy1; }
        for (b = b0; b <= b1; b++) {
            int px = steep ? b : a, py = steep ? a : b;
            float cov = mama__plot_cover((float)px, (float)py, x0, y0, dx, dy, len2, r);
            if (cov > 0.0f) mama_canvas_blend(c, px, py, rgb, cov);
        }
    }
}
MAMA_API void mama_canvas_line_aa(mama_canvas *c, float x0, float y0, float x1, float y1, uint32_t rgb,
                                  float width) {
    if (!c || !c->pix) return;
    mama__plot_line_aa(c, x0, y0, x1, y1, rgb, width, 0, 0, c->w - 1, c->h - 1);
}

/* 2.4 Text.  Each set bit of a glyph becomes a scale x scale block. */
MAMA_API int mama_text_width(const char *s, int scale) {
    size_t n;
    if (!s) return 0;
    if (scale < 1) scale = 1;
    n = strlen(s);
    if (n > (size_t)(INT_MAX / (MAMA_FONT_ADVANCE * scale))) return INT_MAX;
    return (int)n * MAMA_FONT_ADVANCE * scale;
}
static const uint8_t *mama__plot_glyph_or_q(unsigned char ch) {
    const uint8_t *g = mama_font_glyph(ch);
    return g ? g : mama_font_glyph('?');
}
MAMA_API void mama_canvas_text(mama_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale) {
    long long cx = x;
    int r, k;
    if (!c || !c->pix || !s) return;
    if (scale < 1) scale = 1;
    if (scale > 64) scale = 64;
    for (; *s && cx < c->w; s++, cx += MAMA_FONT_ADVANCE * scale) {
        const uint8_t *g = mama__plot_glyph_or_q((unsigned char)*s);
        if (cx + MAMA_FONT_W * scale <= 0) continue;
        for (r = 0; r < MAMA_FONT_H; r++)
            for (k = 0; k < MAMA_FONT_W; k++)
                if (g[r] & (0x10 >> k))
                    mama_canvas_fill_rect(c, (int)cx + k * scale, y + r * scale, scale, scale, rgb);
    }
}
/* Rotated counter-clockwise: glyph column k of character i lands on row
 * (bottom - i*advance - k), glyph row r on column x + r. */
MAMA_API void mama_canvas_text_up(mama_canvas *c, int x, int y, const char *s, uint32_t rgb, int scale) {
    long long bottom, cy;
    int r, k;
    if (!c || !c->pix || !s) return;
    if (scale < 1) scale = 1;
    if (scale > 64) scale = 64;
    bottom = (long long)y + mama_text_width(s, scale); /* one past the last row */
    for (cy = bottom; *s && cy > 0; s++, cy -= MAMA_FONT_ADVANCE * scale) {
        const uint8_t *g = mama__plot_glyph_or_q((unsigned char)*s);
        if (cy - MAMA_FONT_W * scale >= c->h) continue;
        for (r = 0; r < MAMA_FONT_H; r++)
            for (k = 0; k < MAMA_FONT_W; k++)
                if (g[r] & (0x10 >> k))
                    mama_canvas_fill_rect(c, x + r * scale, (int)(cy - (long long)(k + 1) * scale), scale, scale, rgb);
    }
}
/* Copy s into dst (cap bytes) keeping at most maxc characters; a cut text
 * ends in "..".  NULL s gives "". */
static void mama__plot_fit(char *dst, size_t cap, const char *s, int maxc) {
    size_t n;
    dst[0] = 0;
    if (!s || cap < 1) return;
    if (maxc < 0) maxc = 0;
    if ((size_t)maxc > cap - 1) maxc = (int)(cap - 1);
    n = strlen(s);
    if (n <= (size_t)maxc) { memcpy(dst, s, n + 1); return; }
    if (maxc >= 3) {
        memcpy(dst, s, (size_t)maxc - 2);
        dst[maxc - 2] = '.';
        dst[maxc - 1] = '.';
    } else {
        memcpy(dst, s, (size_t)maxc);
    }
    dst[maxc] = 0;
}
/* Characters of scale `scale` that fit in `px` pixels (the last one needs
 * only its 5 columns, not the full advance). */
static int mama__plot_chars_fit(int px, int scale) {
    int n = (px + (MAMA_FONT_ADVANCE - MAMA_FONT_W) * scale) / (MAMA_FONT_ADVANCE * scale);
    return n < 0 ? 0 : n;
}
/* Centred text, cut to fit [x0, x0 + wmax). */
static void mama__plot_text_centred(mama_canvas *c, int xmid, int y, const char *s, uint32_t rgb, int scale,
                                    int wmax) {
    char buf[256];
    int tw;
    if (!s || !*s) return;
    mama__plot_fit(buf, sizeof buf, s, mama__plot_chars_fit(wmax, scale));
    tw = mama_text_width(buf, scale) - (MAMA_FONT_ADVANCE - MAMA_FONT_W) * scale;
    mama_canvas_text(c, xmid - tw / 2, y, buf, rgb, scale);
}

/* Greedy word wrap of s into at most maxlines lines of at most maxc
 * characters; a word longer than a line is split; text left over after the
 * last line marks the cut with "..".  Returns the number of lines. */
#define MAMA__PLOT_WRAP 128
static int mama__plot_is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; }
static int mama__plot_wrap(const char *s, int maxc, int maxlines, char (*lines)[MAMA__PLOT_WRAP]) {
    int n = 0, len = 0;
    if (!s) return 0;
    if (maxc > MAMA__PLOT_WRAP - 1) maxc = MAMA__PLOT_WRAP - 1;
    if (maxc < 1) return 0;
    while (mama__plot_is_space(*s)) s++;
    while (*s && n < maxlines) {
        char *L = lines[n];
        len = 0;
        while (*s) {
            const char *e = s;
            int wl, sep = len > 0;
            while (*e && !mama__plot_is_space(*e)) e++;
            wl = (int)(e - s);
            if (len + sep + wl <= maxc) {
                if (sep) L[len++] = ' ';
                memcpy(L + len, s, (size_t)wl);
                len += wl;
                s = e;
                while (mama__plot_is_space(*s)) s++;
            } else {
                if (len == 0) { /* a word longer than the line */
                    memcpy(L, s, (size_t)maxc);
                    len = maxc;
                    s += maxc;
                }
                break;
            }
        }
        L[len] = 0;
        n++;
    }
    if (*s && n > 0 && maxc >= 3) {
        char *L = lines[n - 1];
        if (len + 2 > maxc) len = maxc - 2;
        L[len] = '.';
        L[len + 1] = '.';
        L[len + 2] = 0;
    }
    return n;
}

/* 2.5 Nice ticks.  A tick step is m * 10^k with m in {1, 2, 5}.  Steps
 * below span/(max_ticks+1) always give more than max_ticks multiples in
 * [lo, hi], so the search starts at the power of ten under that and walks
 * up: the first step that fits is the smallest. */
static int mama__plot_range(double *lo, double *hi) {
    if (!isfinite(*lo) || !isfinite(*hi)) return 0;
    if (*lo > *hi) { double t = *lo; *lo = *hi; *hi = t; }
    if (*hi == *lo) {
        double d = *lo != 0.0 ? fabs(*lo) / 10.0 : 1.0;
        *lo -= d;
        *hi += d;
    }
    return isfinite(*hi - *lo);
}
/* Number of multiples of step in [lo, hi]; the 1e-9 slack absorbs the
 * rounding of lo/step (0.3/0.1 = 2.9999999999999996). */
static double mama__plot_first(double lo, double step) { return ceil(lo / step - 1e-9); }
static double mama__plot_last(double hi, double step) { return floor(hi / step + 1e-9); }
/* The ticks as (first + k) * step for k < count, count capped at 1000: an
 * integer loop, so that a range far from zero (where first + 1 == first in
 * double) cannot spin forever. */
static int mama__plot_nticks(double lo, double hi, double step, double *first) {
    double n;
    *first = 0.0;
    if (!(step > 0.0)) return 0;
    *first = mama__plot_first(lo, step);
    n = mama__plot_last(hi, step) - *first + 1.0;
    if (!(n >= 1.0)) return 0;
    return n > 1000.0 ? 1000 : (int)n;
}
MAMA_API double mama_nice_step(double lo, double hi, int max_ticks) {
    static const double mult[3] = {1.0, 2.0, 5.0};
    double p;
    int k, m;
    if (!mama__plot_range(&lo, &hi)) return 0.0;
    if (max_ticks < 2) max_ticks = 2;
    if (max_ticks > 1000) max_ticks = 1000;
    p = pow(10.0, floor(log10((hi - lo) / (max_ticks + 1.0))));
    for (k = 0; k < 40; k++, p *= 10.0)
        for (m = 0; m < 3; m++) {
            double step = mult[m] * p;
            if (mama__plot_last(hi, step) - mama__plot_first(lo, step) + 1.0 <= (double)max_ticks) return step;
        }
    return hi - lo; /* not reached for finite input */
}
MAMA_API int mama_nice_ticks(double lo, double hi, int max_ticks, double *ticks, int cap) {
    double step, first;
    int n, k;
    step = mama_nice_step(lo, hi, max_ticks);
    if (!(step > 0.0) || !mama__plot_range(&lo, &hi)) return 0;
    n = mama__plot_nticks(lo, hi, step, &first);
    for (k = 0; ticks && k < n && k < cap; k++) ticks[k] = (first + k) * step;
    return n;
}
/* Tick label with as many decimals as the step needs: 0.5 -> 1, 0.05 -> 2;
 * %g for very large or very small values. */
static void mama__plot_fmt_tick(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0.0; /* no "-0" */
    if (fabs(v) >= 1e6 || step < 1e-4) snprintf(buf, cap, "%.4g", v);
    else {
        int dec = step >= 1.0 ? 0 : (int)ceil(-log10(step) - 1e-9);
        snprintf(buf, cap, "%.*f", dec, v);
    }
}

/* 2.6 Colour maps: piecewise linear through anchor colours. */
static void mama__plot_ramp(const uint8_t (*anchors)[3], int n, float t, uint8_t rgb[3]) {
    float f;
    int i, k;
    if (!(t > 0.0f)) t = 0.0f; /* NaN too */
    if (t > 1.0f) t = 1.0f;
    f = t * (float)(n - 1);
    i = (int)f;
    if (i >= n - 1) i = n - 2;
    f -= (float)i;
    for (k = 0; k < 3; k++)
        rgb[k] = (uint8_t)(anchors[i][k] + f * ((float)anchors[i + 1][k] - anchors[i][k]) + 0.5f);
}
MAMA_API void mama_colormap_heat(float t, uint8_t rgb[3]) {
    static const uint8_t a[6][3] = {
        {12, 8, 52}, {80, 18, 124}, {160, 36, 116}, {224, 76, 64}, {250, 160, 36}, {252, 244, 150}};
    mama__plot_ramp(a, 6, t, rgb);
}
MAMA_API void mama_colormap_blues(float t, uint8_t rgb[3]) {
    static const uint8_t a[4][3] = {{248, 251, 255}, {182, 210, 234}, {70, 136, 196}, {10, 50, 112}};
    mama__plot_ramp(a, 4, t, rgb);
}
MAMA_API uint32_t mama_plot_color(int k) {
    static const uint32_t pal[10] = {0x1F5FB4, 0xE8731A, 0x2A9D3A, 0xD0303A, 0x8A5CC0,
                                     0x8C564B, 0xD86FB8, 0x6E6E6E, 0xA6A620, 0x17B0C8};
    if (k < 0) k = -k;
    return pal[k % 10];
}

/* 2.7 Chart frame shared by line and bar charts: text sizes, margins, the
 * plot rectangle and the y axis. */
#define MAMA__PLOT_INK 0x222222u
#define MAMA__PLOT_AXIS 0x444444u
#define MAMA__PLOT_GRID 0xE4E4E4u
#define MAMA__PLOT_MAXNAME 24
typedef struct mama__plot_frame {
    int s, fh, adv, pad, tick;  /* text scale; font height; advance; spacing; tick length */
    int left, top, pw, ph;      /* plot rectangle */
    double ylo, yhi, ystep;     /* y axis limits and tick step */
    double xlo, xhi, xstep;     /* numeric x axis (line charts) */
    int legend_w;               /* 0: no legend */
} mama__plot_frame;

/* Text scale, vertical margins and the plot height. */
static void mama__plot_frame_v(mama__plot_frame *f, int width, int height, const char *title, int has_xlabel) {
    f->s = (width >= 1200 && height >= 700) ? 2 : 1;
    f->fh = MAMA_FONT_H * f->s;
    f->adv = MAMA_FONT_ADVANCE * f->s;
    f->pad = 10 * f->s;
    f->tick = 4 * f->s;
    f->top = f->pad + ((title && *title) ? 2 * f->fh + f->pad : 0);
    f->ph = height - f->top - (f->tick + 4 * f->s + f->fh + f->pad + (has_xlabel ? f->fh + f->pad : 0));
}
/* An axis spans [lo, hi] exactly (the caller adds margins); its ticks are
 * the multiples of a nice step inside, at most max_ticks of them.  (Limits
 * rounded out to whole steps would waste up to a step of the plot.) */
static void mama__plot_axis(double lo, double hi, int max_ticks, double *alo, double *ahi, double *astep) {
    if (!mama__plot_range(&lo, &hi)) { lo = 0.0; hi = 1.0; }
    *alo = lo;
    *ahi = hi;
    *astep = mama_nice_step(lo, hi, max_ticks);
}
/* Grow [lo, hi] by frac of its span on each side, so that extreme points
 * do not sit on the frame, without crossing zero: data starting at 0 (steps,
 * accuracies) keeps its axis at 0. */
static void mama__plot_margin(double *lo, double *hi, double frac) {
    double m = (*hi - *lo) * frac;
    if (!(m > 0.0) || !isfinite(m)) return;
    *lo = (*lo >= 0.0 && *lo - m < 0.0) ? 0.0 : *lo - m;
    *hi = (*hi <= 0.0 && *hi + m > 0.0) ? 0.0 : *hi + m;
}
/* Widest tick label of an axis. */
static int mama__plot_labels_w(double lo, double hi, double step, int s) {
    char buf[64];
    double first;
    int w = 0, k, n = mama__plot_nticks(lo, hi, step, &first);
    for (k = 0; k < n; k++) {
        mama__plot_fmt_tick(buf, sizeof buf, (first + k) * step, step);
        w = mama__plot_maxi(w, mama_text_width(buf, s));
    }
    return w;
}
/* y axis from the data range, then the left margin from its labels and the
 * plot width from what the legend leaves. */
static mama_status mama__plot_frame_h(mama__plot_frame *f, int width, double ylo, double yhi,
                                      int has_ylabel, int legend_w) {
    int ymax = mama__plot_clampi(f->ph / (5 * f->fh), 2, 10);
    if (f->ph < 32) return MAMA_FAIL(MAMA_ERR_INVALID, "plot: height too small for title and labels");
    mama__plot_axis(ylo, yhi, ymax, &f->ylo, &f->yhi, &f->ystep);
    f->left = f->pad + (has_ylabel ? f->fh + f->pad : 0) +
              mama__plot_labels_w(f->ylo, f->yhi, f->ystep, f->s) + f->tick + 3 * f->s;
    f->legend_w = legend_w;
    f->pw = width - f->left - f->pad - (legend_w > 0 ? legend_w + f->pad : 0);
    if (f->pw < 32 && legend_w > 0) { /* a tiny chart: drop the legend */
        f->legend_w = 0;
        f->pw = width - f->left - f->pad;
    }
    if (f->pw < 32) return MAMA_FAIL(MAMA_ERR_INVALID, "plot: width %d too small for labels and legend", width);
    return MAMA_OK;
}
static float mama__plot_px(const mama__plot_frame *f, double x) {
    return (float)(f->left + (x - f->xlo) / (f->xhi - f->xlo) * (f->pw - 1));
}
static float mama__plot_py(const mama__plot_frame *f, double y) {
    return (float)(f->top + f->ph - 1 - (y - f->ylo) / (f->yhi - f->ylo) * (f->ph - 1));
}
/* Horizontal grid lines at the y ticks (drawn under the data). */
static void mama__plot_ygrid(mama_canvas *c, const mama__plot_frame *f) {
    double first;
    int k, n = mama__plot_nticks(f->ylo, f->yhi, f->ystep, &first);
    for (k = 0; k < n; k++) {
        int y = (int)floorf(mama__plot_py(f, (first + k) * f->ystep) + 0.5f);
        mama_canvas_fill_rect(c, f->left, y, f->pw, 1, MAMA__PLOT_GRID);
    }
}
/* Frame, y ticks and labels, axis titles and the chart title. */
static void mama__plot_decorate(mama_canvas *c, const mama__plot_frame *f, const char *title, const char *xlabel,
                                const char *ylabel) {
    char buf[64];
    double first;
    int k, n = mama__plot_nticks(f->ylo, f->yhi, f->ystep, &first);
    mama_canvas_rect(c, f->left - 1, f->top - 1, f->pw + 2, f->ph + 2, MAMA__PLOT_AXIS);
    for (k = 0; k < n; k++) {
        int y = (int)floorf(mama__plot_py(f, (first + k) * f->ystep) + 0.5f);
        mama__plot_fmt_tick(buf, sizeof buf, (first + k) * f->ystep, f->ystep);
        mama_canvas_fill_rect(c, f->left - 1 - f->tick, y, f->tick, 1, MAMA__PLOT_AXIS);
        mama_canvas_text(c, f->left - 1 - f->tick - 2 * f->s - mama_text_width(buf, f->s) + f->s,
                         y - (7 * f->s) / 2, buf, MAMA__PLOT_INK, f->s);
    }
    if (title && *title)
        mama__plot_text_centred(c, c->w / 2, f->pad, title, MAMA__PLOT_INK, 2 * f->s, c->w - 2 * f->pad);
    if (xlabel && *xlabel)
        mama__plot_text_centred(c, f->left + f->pw / 2, c->h - f->pad - f->fh, xlabel, MAMA__PLOT_INK, f->s,
                                c->w - 2 * f->pad);
    if (ylabel && *ylabel) {
        char yb[256];
        int tw;
        mama__plot_fit(yb, sizeof yb, ylabel, mama__plot_chars_fit(f->ph, f->s));
        tw = mama_text_width(yb, f->s);
        mama_canvas_text_up(c, f->pad, f->top + f->ph / 2 - tw / 2, yb, MAMA__PLOT_INK, f->s);
    }
}
/* Legend: a box right of the plot, one row per entry: swatch then name.
 * line_swatch: a short thick line (curves); else a filled square (bars). */
static int mama__plot_legend_w(char (*names)[MAMA__PLOT_MAXNAME + 1], int n, int s) {
    int i, w = 0;
    for (i = 0; i < n; i++) w = mama__plot_maxi(w, mama_text_width(names[i], s));
    return 8 * s + 16 * s + 6 * s + w + 6 * s;
}
static void mama__plot_legend(mama_canvas *c, const mama__plot_frame *f, char (*names)[MAMA__PLOT_MAXNAME + 1],
                              int n, int line_swatch) {
    int s = f->s, x = f->left + f->pw + f->pad, y = f->top, row = f->fh + 6 * s, i;
    int h = n * row + 6 * s;
    mama_canvas_fill_rect(c, x, y, f->legend_w, h, 0xFFFFFFu);
    mama_canvas_rect(c, x, y, f->legend_w, h, 0xBBBBBBu);
    for (i = 0; i < n; i++) {
        int ty = y + 6 * s + i * row, cy = ty + (7 * s) / 2;
        uint32_t col = mama_plot_color(i);
        if (line_swatch)
            mama_canvas_fill_rect(c, x + 8 * s, cy - s, 16 * s, 2 * s + 1, col);
        else
            mama_canvas_fill_rect(c, x + 8 * s + 3 * s, ty, 10 * s, 7 * s, col);
        mama_canvas_text(c, x + 30 * s, ty, names[i], MAMA__PLOT_INK, s);
    }
}
/* Save as PNG, then free the canvas either way. */
static mama_status mama__plot_finish(mama_canvas *c, const char *path) {
    mama_status st = mama_canvas_save_png(c, path);
    mama_canvas_free(c);
    return st;
}
static mama_status mama__plot_check_size(const char *what, int width, int height) {
    if (width < 160 || width > 8192 || height < 120 || height > 8192)
        return MAMA_FAIL(MAMA_ERR_INVALID, "%s: size %d x %d outside [160, 8192] x [120, 8192]", what, width, height);
    return MAMA_OK;
}

/* 2.8 Line chart. */
static void mama__plot_point(const mama_plot_series *sr, int i, double *x, double *y) {
    *x = sr->x ? (double)sr->x[i] : (double)i;
    *y = (double)sr->y[i];
}
static int mama__plot_point_ok(const mama_plot_series *sr, int i) {
    double x, y;
    if (i < 0 || i >= sr->n) return 0;
    mama__plot_point(sr, i, &x, &y);
    return isfinite(x) && isfinite(y);
}
MAMA_API mama_status mama_plot_lines(const char *path, const char *title, const char *xlabel, const char *ylabel,
                                     const mama_plot_series *series, int nseries, int width, int height) {
    char names[64][MAMA__PLOT_MAXNAME + 1];
    char buf[64];
    mama__plot_frame f;
    mama_canvas c;
    double xlo = HUGE_VAL, xhi = -HUGE_VAL, ylo = HUGE_VAL, yhi = -HUGE_VAL, xfirst;
    int k, i, xmax, x0, x1, y0, y1, nx;
    if (!path) return MAMA_FAIL(MAMA_ERR_INVALID, "plot lines: NULL path");
    if (!series || nseries < 1 || nseries > 64)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot lines %s: %d series (need 1..64, non-NULL)", path, nseries);
    MAMA_TRY(mama__plot_check_size("plot lines", width, height));
    for (k = 0; k < nseries; k++) {
        const mama_plot_series *sr = &series[k];
        if (sr->n < 0 || (sr->n > 0 && !sr->y))
            return MAMA_FAIL(MAMA_ERR_INVALID, "plot lines %s: series %d has n = %d and y %s", path, k, sr->n,
                             sr->y ? "set" : "NULL");
        if (sr->name) mama__plot_fit(names[k], sizeof names[k], sr->name, MAMA__PLOT_MAXNAME);
        else snprintf(names[k], sizeof names[k], "series %d", k);
        for (i = 0; i < sr->n; i++) {
            double x, y;
            mama__plot_point(sr, i, &x, &y);
            if (!isfinite(x) || !isfinite(y)) continue;
            if (x < xlo) xlo = x;
            if (x > xhi) xhi = x;
            if (y < ylo) ylo = y;
            if (y > yhi) yhi = y;
        }
    }
    if (xlo > xhi) { xlo = 0.0; xhi = 1.0; ylo = 0.0; yhi = 1.0; } /* no finite point: empty axes */
    mama__plot_margin(&xlo, &xhi, 0.02);
    mama__plot_margin(&ylo, &yhi, 0.04);

    mama__plot_frame_v(&f, width, height, title, xlabel && *xlabel);
    MAMA_TRY(mama__plot_frame_h(&f, width, ylo, yhi, ylabel && *ylabel, mama__plot_legend_w(names, nseries, f.s)));
    /* x ticks: as many as fit with two characters of air between labels */
    for (xmax = mama__plot_clampi(f.pw / (12 * f.adv), 2, 8);; xmax--) {
        int n, lw;
        mama__plot_axis(xlo, xhi, xmax, &f.xlo, &f.xhi, &f.xstep);
        n = mama__plot_nticks(f.xlo, f.xhi, f.xstep, &xfirst);
        lw = mama__plot_labels_w(f.xlo, f.xhi, f.xstep, f.s);
        if (xmax <= 2 || (double)n * (lw + 2 * f.adv) <= (double)f.pw) break;
    }

    MAMA_TRY(mama_canvas_alloc(&c, width, height, 0xFFFFFFu));
    mama__plot_ygrid(&c, &f);
    nx = mama__plot_nticks(f.xlo, f.xhi, f.xstep, &xfirst);
    for (k = 0; k < nx; k++)
        mama_canvas_fill_rect(&c, (int)floorf(mama__plot_px(&f, (xfirst + k) * f.xstep) + 0.5f), f.top, 1, f.ph,
                              MAMA__PLOT_GRID);

    /* curves, clipped to the plot rectangle; a non-finite point breaks the
     * line, an isolated finite point becomes a dot */
    x0 = f.left; y0 = f.top; x1 = f.left + f.pw - 1; y1 = f.top + f.ph - 1;
    for (k = 0; k < nseries; k++) {
        const mama_plot_series *sr = &series[k];
        uint32_t col = mama_plot_color(k);
        float w = 1.5f * (float)f.s, px = 0.0f, py = 0.0f;
        int prev = 0;
        for (i = 0; i < sr->n; i++) {
            double x, y;
            float qx, qy;
            if (!mama__plot_point_ok(sr, i)) { prev = 0; continue; }
            mama__plot_point(sr, i, &x, &y);
            qx = mama__plot_px(&f, x);
            qy = mama__plot_py(&f, y);
            if (prev) mama__plot_line_aa(&c, px, py, qx, qy, col, w, x0, y0, x1, y1);
            else if (!mama__plot_point_ok(sr, i + 1))
                mama__plot_line_aa(&c, qx, qy, qx, qy, col, 3.0f * (float)f.s, x0, y0, x1, y1);
            px = qx; py = qy; prev = 1;
        }
    }

    mama__plot_decorate(&c, &f, title, xlabel, ylabel);
    for (k = 0; k < nx; k++) {
        double t = (xfirst + k) * f.xstep;
        int x = (int)floorf(mama__plot_px(&f, t) + 0.5f), tw;
        mama__plot_fmt_tick(buf, sizeof buf, t, f.xstep);
        tw = mama_text_width(buf, f.s) - f.s;
        mama_canvas_fill_rect(&c, x, f.top + f.ph, 1, f.tick, MAMA__PLOT_AXIS);
        mama_canvas_text(&c, mama__plot_clampi(x - tw / 2, 0, width - tw), f.top + f.ph + f.tick + 3 * f.s, buf,
                         MAMA__PLOT_INK, f.s);
    }
    if (f.legend_w > 0) mama__plot_legend(&c, &f, names, nseries, 1);
    return mama__plot_finish(&c, path);
}

/* 2.9 Confusion matrix. */
MAMA_API mama_status mama_plot_confusion(const char *path, const char *title, const char *const *class_names, int K,
                                         const int *matrix, int cell) {
    char *names = NULL, buf[32];
    const int nl = MAMA__PLOT_MAXNAME + 1;
    mama_canvas c;
    mama_status st;
    int t, p, s, fh, pad = 10, gap = 6, namew = 0, upright, lab_h, gx, gy, grid, W, H, cs, has_title;
    if (!path) return MAMA_FAIL(MAMA_ERR_INVALID, "plot confusion: NULL path");
    if (!matrix || K < 1 || K > 256)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot confusion %s: K = %d (need 1..256) and a matrix", path, K);
    if (cell < 12 || cell > 256 || K * cell > 8192)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot confusion %s: cell %d (need 12..256, K*cell <= 8192)", path, cell);
    for (t = 0; t < K * K; t++)
        if (matrix[t] < 0)
            return MAMA_FAIL(MAMA_ERR_INVALID, "plot confusion %s: matrix[%d][%d] = %d is negative", path, t / K,
                             t % K, matrix[t]);
    MAMA_TRY(mama_alloc((void **)&names, (size_t)K * (size_t)nl, "confusion class names"));
    s = cell >= 40 ? 2 : 1;
    fh = MAMA_FONT_H * s;
    for (t = 0; t < K; t++) {
        if (class_names && class_names[t]) mama__plot_fit(names + t * nl, (size_t)nl, class_names[t], MAMA__PLOT_MAXNAME);
        else snprintf(names + t * nl, (size_t)nl, "%d", t);
        namew = mama__plot_maxi(namew, mama_text_width(names + t * nl, s) - s);
    }
    /* column names upright when the widest does not fit a cell */
    upright = namew > cell - 4;
    lab_h = upright ? namew : fh;
    has_title = title && *title;
    grid = K * cell;
    gx = pad + fh + pad + namew + gap;
    gy = pad + (has_title ? 2 * MAMA_FONT_H + pad : 0);
    /* the canvas is as wide as the grid block or the title, whichever is
     * wider; the block is centred in it */
    W = mama__plot_maxi(gx + grid + pad, 160);
    if (has_title) W = mama__plot_maxi(W, mama__plot_clampi(mama_text_width(title, 2) - 2 + 2 * pad, 0, 4096));
    gx += (W - (gx + grid + pad)) / 2;
    H = gy + grid + gap + lab_h + gap + fh + pad;
    /* counts at scale 2 when the widest fits comfortably */
    cs = 1;
    if (cell >= 28) {
        int mx = 0;
        for (t = 0; t < K * K; t++) mx = mama__plot_maxi(mx, matrix[t]);
        snprintf(buf, sizeof buf, "%d", mx);
        if (mama_text_width(buf, 2) <= cell - 6) cs = 2;
    }
    st = mama_canvas_alloc(&c, W, H, 0xFFFFFFu);
    if (st != MAMA_OK) { mama_free(names); return st; }

    for (t = 0; t < K; t++) {
        long long rowsum = 0;
        for (p = 0; p < K; p++) rowsum += matrix[t * K + p];
        for (p = 0; p < K; p++) {
            int v = matrix[t * K + p], x = gx + p * cell, y = gy + t * cell, tw;
            uint8_t rgb[3];
            float frac = rowsum > 0 ? (float)((double)v / (double)rowsum) : 0.0f;
            uint32_t ink;
            mama_colormap_blues(frac, rgb);
            mama_canvas_fill_rect(&c, x, y, cell, cell, MAMA_RGB(rgb[0], rgb[1], rgb[2]));
            /* text black on light cells, white on dark: ITU-R 601 luma */
            ink = (299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000 < 140 ? 0xFFFFFFu : 0x111111u;
            snprintf(buf, sizeof buf, "%d", v);
            if (mama_text_width(buf, cs) - cs > cell - 2) {
                if (v >= 1000000) snprintf(buf, sizeof buf, "%dM", v / 1000000);
                else snprintf(buf, sizeof buf, "%dk", v / 1000);
            }
            tw = mama_text_width(buf, cs) - cs;
            if (tw <= cell - 2)
                mama_canvas_text(&c, x + (cell - tw) / 2, y + (cell - 7 * cs) / 2, buf, ink, cs);
        }
    }
    /* cell separators and the frame */
    for (t = 1; t < K; t++) {
        mama_canvas_fill_rect(&c, gx + t * cell, gy, 1, grid, 0xD8D8D8u);
        mama_canvas_fill_rect(&c, gx, gy + t * cell, grid, 1, 0xD8D8D8u);
    }
    mama_canvas_rect(&c, gx - 1, gy - 1, grid + 2, grid + 2, MAMA__PLOT_AXIS);
    /* row names (true) right-aligned, column names (predicted) below */
    for (t = 0; t < K; t++) {
        const char *nm = names + t * nl;
        int tw = mama_text_width(nm, s) - s, mid = gx + t * cell + cell / 2;
        mama_canvas_text(&c, gx - gap - tw, gy + t * cell + (cell - 7 * s) / 2, nm, MAMA__PLOT_INK, s);
        if (upright)
            mama_canvas_text_up(&c, mid - (7 * s) / 2, gy + grid + gap - s, nm, MAMA__PLOT_INK, s);
        else
            mama_canvas_text(&c, mid - tw / 2, gy + grid + gap, nm, MAMA__PLOT_INK, s);
    }
    mama__plot_text_centred(&c, mama__plot_clampi(gx + grid / 2, 0, W), H - pad - fh, "predicted", MAMA__PLOT_INK,
                            s, W);
    mama_canvas_text_up(&c, gx - gap - namew - pad - fh, mama__plot_maxi(gy + grid / 2 - mama_text_width("true", s) / 2, 0), "true",
                        MAMA__PLOT_INK, s);
    if (has_title) mama__plot_text_centred(&c, W / 2, pad, title, MAMA__PLOT_INK, 2, W - 2 * pad);
    mama_free(names);
    return mama__plot_finish(&c, path);
}

/* 2.10 Heatmap panels.  Bilinear taps with half-pixel centres, as
 * F.interpolate(mode="bilinear", align_corners=False): output pixel x
 * samples the grid at (x + 1/2) * g/w - 1/2, clamped to [0, g-1]. */
static void mama__plot_taps(int out, int g, int *i0, float *fr) {
    int x;
    for (x = 0; x < out; x++) {
        float src = ((float)x + 0.5f) * (float)g / (float)out - 0.5f;
        int i;
        if (src < 0.0f) src = 0.0f;
        i = (int)src;
        if (i >= g - 1) { i = g - 1; src = (float)i; }
        i0[x] = i;
        fr[x] = src - (float)i;
    }
}
MAMA_API mama_status mama_plot_heatmaps(const char *path, const uint8_t *grey, int w, int h, const float *maps,
                                        int gh, int gw, int nmaps, const char *const *titles, int cols) {
    char lines[3][MAMA__PLOT_WRAP];
    mama_canvas c;
    mama_status st;
    float *norm = NULL, *fx, *fy;
    int *ix, *iy;
    void *taps = NULL;
    int s, fh, lh, pad = 8, maxc, maxlines = 0, title_h, rows, W, H, m, x, y;
    if (!path) return MAMA_FAIL(MAMA_ERR_INVALID, "plot heatmaps: NULL path");
    if (!grey || !maps) return MAMA_FAIL(MAMA_ERR_INVALID, "plot heatmaps %s: NULL image or maps", path);
    if (w < 16 || h < 16 || w > 4096 || h > 4096)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot heatmaps %s: image %d x %d outside 16..4096", path, w, h);
    if (gh < 1 || gw < 1 || gh > 1024 || gw > 1024)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot heatmaps %s: grid %d x %d outside 1..1024", path, gh, gw);
    if (nmaps < 1 || nmaps > 256 || cols < 1)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot heatmaps %s: %d maps in %d columns (need 1..256, cols >= 1)", path,
                         nmaps, cols);
    if (cols > nmaps) cols = nmaps;
    s = w >= 384 ? 2 : 1;
    fh = MAMA_FONT_H * s;
    lh = fh + 3 * s;
    maxc = mama__plot_chars_fit(w, s);
    for (m = 0; titles && m < nmaps; m++)
        maxlines = mama__plot_maxi(maxlines, mama__plot_wrap(titles[m], maxc, 3, lines));
    title_h = maxlines ? maxlines * lh + 3 * s : 0;
    rows = (nmaps + cols - 1) / cols;
    W = cols * w + (cols + 1) * pad;
    H = rows * (title_h + h + pad) + pad;
    if ((double)W * (double)H > 67108864.0)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot heatmaps %s: sheet %d x %d over 2^26 pixels", path, W, H);

    MAMA_TRY(mama_alloc((void **)&norm, (size_t)gh * (size_t)gw * sizeof(float), "heatmap grid"));
    st = mama_alloc(&taps, (size_t)(w + h) * (sizeof(int) + sizeof(float)), "heatmap taps");
    if (st != MAMA_OK) { mama_free(norm); return st; }
    ix = (int *)taps;
    iy = ix + w;
    fx = (float *)(iy + h);
    fy = fx + w;
    mama__plot_taps(w, gw, ix, fx);
    mama__plot_taps(h, gh, iy, fy);
    st = mama_canvas_alloc(&c, W, H, 0xFFFFFFu);
    if (st != MAMA_OK) { mama_free(norm); mama_free(taps); return st; }

    for (m = 0; m < nmaps; m++) {
        const float *mp = maps + (size_t)m * (size_t)gh * (size_t)gw;
        int ox = pad + (m % cols) * (w + pad), oy = pad + (m / cols) * (title_h + h + pad), i, n = gh * gw, nl;
        float mn = HUGE_VALF, mx = -HUGE_VALF;
        /* min-max over the finite cells; -1 marks a cell with no value */
        for (i = 0; i < n; i++)
            if (isfinite(mp[i])) { if (mp[i] < mn) mn = mp[i]; if (mp[i] > mx) mx = mp[i]; }
        for (i = 0; i < n; i++)
            norm[i] = !isfinite(mp[i]) ? -1.0f : (mx > mn ? (float)(((double)mp[i] - mn) / ((double)mx - mn)) : 0.0f);
        for (y = 0; y < h; y++) {
            const float *r0 = norm + (size_t)iy[y] * gw, *r1 = norm + (size_t)(iy[y] + (iy[y] < gh - 1)) * gw;
            uint8_t *dst = c.pix + 3 * ((size_t)(oy + title_h + y) * (size_t)W + (size_t)ox);
            for (x = 0; x < w; x++) {
                int a = ix[x], b = a + (a < gw - 1);
                float g = (float)grey[(size_t)y * w + x], v;
                uint8_t rgb[3];
                if (r0[a] < 0.0f || r0[b] < 0.0f || r1[a] < 0.0f || r1[b] < 0.0f) {
                    dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = (uint8_t)g;
                    continue;
                }
                v = (1.0f - fy[y]) * ((1.0f - fx[x]) * r0[a] + fx[x] * r0[b]) +
                    fy[y] * ((1.0f - fx[x]) * r1[a] + fx[x] * r1[b]);
                mama_colormap_heat(v, rgb);
                dst[3 * x] = (uint8_t)(0.5f * g + 0.5f * rgb[0] + 0.5f);
                dst[3 * x + 1] = (uint8_t)(0.5f * g + 0.5f * rgb[1] + 0.5f);
                dst[3 * x + 2] = (uint8_t)(0.5f * g + 0.5f * rgb[2] + 0.5f);
            }
        }
        nl = titles ? mama__plot_wrap(titles[m], maxc, 3, lines) : 0;
        for (i = 0; i < nl; i++) /* bottom-aligned: the last line sits on its image */
            mama__plot_text_centred(&c, ox + w / 2, oy + (maxlines - nl + i) * lh, lines[i], MAMA__PLOT_INK, s, w);
    }
    mama_free(norm);
    mama_free(taps);
    return mama__plot_finish(&c, path);
}

/* 2.11 Grouped bars. */
MAMA_API mama_status mama_plot_bars(const char *path, const char *title, const char *ylabel,
                                    const char *const *group_names, int ngroups, const char *const *series_names,
                                    int nseries, const float *values, int width, int height) {
    char names[16][MAMA__PLOT_MAXNAME + 1];
    char buf[64];
    mama__plot_frame f;
    mama_canvas c;
    double lo = 0.0, hi = 0.0, slot;
    int g, k, barw, zero, legend;
    if (!path) return MAMA_FAIL(MAMA_ERR_INVALID, "plot bars: NULL path");
    if (!values || ngroups < 1 || ngroups > 256 || nseries < 1 || nseries > 16)
        return MAMA_FAIL(MAMA_ERR_INVALID, "plot bars %s: %d groups x %d series (need 1..256 x 1..16) and values",
                         path, ngroups, nseries);
    MAMA_TRY(mama__plot_check_size("plot bars", width, height));
    legend = nseries > 1 || (series_names && series_names[0]);
    for (k = 0; k < nseries; k++) {
        if (series_names && series_names[k]) mama__plot_fit(names[k], sizeof names[k], series_names[k], MAMA__PLOT_MAXNAME);
        else snprintf(names[k], sizeof names[k], "series %d", k);
    }
    for (g = 0; g < ngroups * nseries; g++)
        if (isfinite(values[g])) {
            if (values[g] < lo) lo = values[g];
            if (values[g] > hi) hi = values[g];
        }
    if (lo == hi) hi = 1.0; /* all zero or none finite */
    mama__plot_margin(&lo, &hi, 0.08); /* room for the value labels */

    mama__plot_frame_v(&f, width, height, title, 0);
    MAMA_TRY(mama__plot_frame_h(&f, width, lo, hi, ylabel && *ylabel,
                                legend ? mama__plot_legend_w(names, nseries, f.s) : 0));
    f.xlo = 0.0;
    f.xhi = 1.0;
    MAMA_TRY(mama_canvas_alloc(&c, width, height, 0xFFFFFFu));
    mama__plot_ygrid(&c, &f);
    slot = (double)f.pw / ngroups;
    barw = mama__plot_maxi(1, (int)(slot * 0.8 / nseries));
    zero = (int)floorf(mama__plot_py(&f, 0.0) + 0.5f);
    for (g = 0; g < ngroups; g++) {
        int x0 = f.left + (int)(g * slot + (slot - (double)barw * nseries) / 2.0);
        char gname[256];
        for (k = 0; k < nseries; k++) {
            float v = values[g * nseries + k];
            int x = x0 + k * barw, y, top, tw;
            if (!isfinite(v)) continue;
            y = (int)floorf(mama__plot_py(&f, v) + 0.5f);
            top = y < zero ? y : zero;
            mama_canvas_fill_rect(&c, x, top, barw - (barw > 3), (y < zero ? zero - y : y - zero) + 1,
                                  mama_plot_color(k));
            /* the value above a positive bar (below a negative one), or
             * inside its end in white when there is no room outside */
            snprintf(buf, sizeof buf, "%.3g", v);
            tw = mama_text_width(buf, f.s) - f.s;
            if (tw <= barw) {
                int ty = v >= 0 ? y - 3 * f.s - 7 * f.s : y + 3 * f.s;
                uint32_t ink = MAMA__PLOT_INK;
                if (ty < f.top || ty + 7 * f.s > f.top + f.ph) {
                    ty = v >= 0 ? y + 3 * f.s : y - 3 * f.s - 7 * f.s;
                    ink = 0xFFFFFFu;
                }
                mama_canvas_text(&c, x + (barw - tw) / 2, ty, buf, ink, f.s);
            }
        }
        if (group_names && group_names[g]) {
            mama__plot_fit(gname, sizeof gname, group_names[g], 255);
            mama__plot_text_centred(&c, f.left + (int)((g + 0.5) * slot), f.top + f.ph + f.tick + 3 * f.s, gname,
                                    MAMA__PLOT_INK, f.s, (int)slot - 2 * f.s);
        }
    }
    if (f.ylo < 0.0) mama_canvas_fill_rect(&c, f.left, zero, f.pw, 1, MAMA__PLOT_AXIS);
    mama__plot_decorate(&c, &f, title, NULL, ylabel);
    if (f.legend_w > 0) mama__plot_legend(&c, &f, names, nseries, 0);
    return mama__plot_finish(&c, path);
}

#ifdef __cplusplus
}
#endif
#endif /* MAMA_PLOT_IMPLEMENTATION_DONE */
#endif /* MAMA_PLOT_IMPLEMENTATION */
