/* mama_synth.h - synthetic mammograms for mama.h: four-view studies with
 *                BI-RADS findings, breast density and metadata, written as
 *                8-bit PNG files and a manifest.csv that mama_manifest_load
 *                reads (SPEC part B).  A companion single-file header: a program that trains or embeds real
 *                images with mama.h does not need it.
 *
 * ===========================================================================
 *  USAGE
 * ===========================================================================
 *  mama.h must be included first.  In exactly one C or C++ file:
 *
 *      #include "mama.h"               (MAMA_IMPLEMENTATION in one file)
 *      #define MAMA_SYNTH_IMPLEMENTATION
 *      #include "mama_synth.h"
 *
 *  everywhere else just include both headers.  The implementation uses only
 *  the public API of mama.h, so it may live in a different translation unit
 *  than MAMA_IMPLEMENTATION.  Build with -fopenmp to generate studies in
 *  parallel (the output does not depend on it).  Errors work as in mama.h:
 *  every function that can fail returns a mama_status and leaves a message
 *  for mama_last_error(); nothing exits or aborts.
 *
 *      // 200 studies (800 images of 256 x 208) into data/synth/
 *      if (mama_synth_write("data/synth", 200, 256, 1, 0) != MAMA_OK)
 *          fprintf(stderr, "synth: %s\n", mama_last_error());
 *
 *      mama_synth_image v[4];                  // or one study in memory
 *      if (mama_synth_study(1, 0, 256, 0, v) == MAMA_OK) {
 *          mama_image_save_png(&v[0].img, "l_cc.png");   // BI-RADS: v[0].birads
 *          for (int k = 0; k < 4; k++) mama_image_free(&v[k].img);
 *      }
 *
 * ===========================================================================
 *  PNG files are written by mama.h's mama_png_write; with MAMA_NO_STB_IMAGE
 *  mama_synth_write fails with MAMA_ERR_UNSUPPORTED.
 *
 *  LICENSE: MIT (see README.md).
 */
#ifndef MAMA_SYNTH_H_INCLUDED
#define MAMA_SYNTH_H_INCLUDED

#ifndef MAMA_H_INCLUDED
#error "mama_synth.h needs mama.h: include mama.h first"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * 1. PUBLIC API
 * ------------------------------------------------------------------------- */


/* --- synthetic mammograms (SPEC part B) -----------------------------------
 * One study = one patient, four views.  Each breast has a BI-RADS letter
 * drawn independently (the other breast is not forced to N), and its
 * finding is drawn at one 3-D place (distance from the nipple, clock
 * position) projected into both of its views.  Images are `size` high and
 * size*13/16 wide (the 4096 x 3328 aspect of FFDM detectors); the chest
 * wall is the left edge for left breasts and the right edge for right
 * breasts (standard hanging); MLO views show the pectoral muscle in the
 * upper chest-wall corner.  Empty strings mean "not applicable". */
typedef struct mama_synth_image {
    mama_image img;
    char path[48];              /* images/p00001_L_CC.png (relative)        */
    char patient[16], study[16];
    char side[8];               /* "left" / "right"                         */
    char view[4];               /* "CC" / "MLO"                             */
    char procedure[32];
    int age;
    char race[48], ethnicity[32], image_type[4];
    int density;                /* 1..4                                     */
    char birads[2];             /* A N B P S M K                            */
    char mass_shape[12], mass_density[16], calc_type[24], calc_distribution[12];
    int cancer;                 /* 1 for M, K and the high-risk S findings  */
    char split[8];              /* train / val / test (by patient 70/10/20) */
    int box[4];                 /* finding's inclusive box x0,y0,x1,y1 in this
                                   image, or all -1 when there is none       */
} mama_synth_image;

/* Study `index` (0-based) of the data set `seed`: views[0..3] = L-CC, L-MLO,
 * R-CC, R-MLO, pixels allocated (free each with mama_image_free(&v.img)).
 * Deterministic in (seed, index) alone.  balanced: letters and densities
 * uniform instead of screening-like frequencies. */
MAMA_API mama_status mama_synth_study(uint64_t seed, int index, int size, int balanced,
                                      mama_synth_image views[4]);
/* Generate `studies` studies (OpenMP over studies) into out_dir/images/ (PNG)
 * and out_dir/manifest.csv (header path,patient,study,side,view,procedure,
 * age,race,ethnicity,image_type,density,birads,mass_shape,mass_density,
 * calc_type,calc_distribution,cancer,split; paths relative to out_dir).
 * Creates out_dir and out_dir/images when missing. */
MAMA_API mama_status mama_synth_write(const char *out_dir, int studies, int size, uint64_t seed,
                                      int balanced);

#ifdef __cplusplus
}
#endif
#endif /* MAMA_SYNTH_H_INCLUDED */

/* ==========================================================================
 * IMPLEMENTATION
 * ========================================================================== */
#ifdef MAMA_SYNTH_IMPLEMENTATION
#ifndef MAMA_SYNTH_IMPLEMENTATION_DONE
#define MAMA_SYNTH_IMPLEMENTATION_DONE

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/stat.h>
#ifdef _WIN32
#include <direct.h>
#define mama__synth_mkdir(p) _mkdir(p)
#ifndef S_ISDIR
#define S_ISDIR(m) (((m) & _S_IFMT) == _S_IFDIR)
#endif
#else
#define mama__synth_mkdir(p) mkdir(p, 0755)
#endif

#ifdef __cplusplus
extern "C" {
#endif


/* The helpers of mama.h that the generator shares, as private copies so
 * that this file needs only mama.h's public API. */
static uint64_t mama__synth_splitmix64(uint64_t *x) { /* as mama_rng_seed's */
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint8_t mama__synth_round_u8(double v) { /* round half up, clamp */
    if (!(v > 0.0)) return 0;
    if (v >= 255.0) return 255;
    return (uint8_t)(v + 0.5);
}

/* --------------------------------------------------------------------------
 * 3. Synthetic mammograms
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
        img->pix[i] = mama__synth_round_u8(val);
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
    return mama__synth_splitmix64(&x);
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
    if (mama__synth_mkdir(path) != 0 && errno != EEXIST)
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
#pragma omp critical /* unnamed: a named one exports a lock symbol */
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

#ifdef __cplusplus
}
#endif
#endif /* MAMA_SYNTH_IMPLEMENTATION_DONE */
#endif /* MAMA_SYNTH_IMPLEMENTATION */
