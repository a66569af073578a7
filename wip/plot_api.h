/* ---------------------------------------------------------------------------
 * 12. PLOTS (public part): a small RGB raster canvas with a built-in bitmap
 *     font, and the charts of a training report: loss curves, confusion
 *     matrices, patch-similarity heatmaps, grouped bars.  Written to PNG
 *     with mama_png_write; no other dependency.
 *
 * Colours are 0xRRGGBB integers (MAMA_RGB builds one).  Coordinates are
 * pixels, x to the right, y down; pixel (x, y) has its centre at (x, y), so
 * a 1-pixel line between integer points covers exactly the pixels of the
 * segment.  Every drawing call clips to the canvas: nothing is ever written
 * outside it, whatever the arguments.
 * ------------------------------------------------------------------------- */
#ifndef MAMA_PLOT_API_INCLUDED
#define MAMA_PLOT_API_INCLUDED

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

#endif /* MAMA_PLOT_API_INCLUDED */
