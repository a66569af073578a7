/* tests/test_ops.c - the CPU backend's non-GEMM ops (mama.h sections 3.2-3.4).
 *
 * Truths used:
 *  - forwards: independent double-precision reference implementations
 *    written here (naive loops, no tiling, no online softmax);
 *  - every backward: central finite differences of a double-precision
 *    reference forward, L = sum(g * f(x)) with a random g that is also the
 *    float `dy` handed to the backward.  The backward ACCUMULATES, so each
 *    gradient buffer starts with random "prior" values that are subtracted
 *    afterwards (this also checks the += contract);
 *  - optimisers, schedule, BatchNorm running statistics, clipping: values
 *    worked out by hand (and written out in the comments).
 *
 * Build: gcc -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror -fopenmp -I. \
 *        -I/usr/include/stb tests/test_ops.c -o build/test_ops -lm */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <math.h>

/* ---------------------------------------------------------------------
 * harness helpers
 * ------------------------------------------------------------------- */
static mama_backend *BE;
static mama_rng R;


static float urand(float a, float b) { return a + (b - a) * mama_rng_uniform(&R); }
static float *fvec(long n, float a, float b) {
    float *x = (float *)malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    long i;
    for (i = 0; i < n; i++) x[i] = urand(a, b);
    return x;
}
static float *fzeros(long n) { return (float *)calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static double *dvec(const float *x, long n) {
    double *d = (double *)malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    long i;
    for (i = 0; i < n; i++) d[i] = x[i];
    return d;
}
static float *fdup(const float *x, long n) {
    float *y = (float *)malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(y, x, sizeof(float) * (size_t)n);
    return y;
}
static double maxabs(const double *x, long n) {
    double m = 0;
    long i;
    for (i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}
/* worst |a - b| / max(|b|, floor) where floor = 1e-2 * max|b| (+1e-9):
 * relative where the truth is large, absolute (at 1% of the scale) where
 * it is near zero. */
static double rel_err(const float *a, const double *b, long n) {
    return test_max_rel_err(a, b, n, 1e-2 * maxabs(b, n) + 1e-9);
}
/* analytic gradient = after - prior (the backward accumulates) */
static double grad_err(const float *after, const float *prior, const double *fd, long n) {
    double fl = 1e-2 * maxabs(fd, n) + 1e-9, worst = 0;
    long i;
    for (i = 0; i < n; i++) {
        double a = (double)after[i] - (double)prior[i];
        double d = fabs(a - fd[i]), s = fabs(fd[i]) > fl ? fabs(fd[i]) : fl;
        if (!(d / s <= worst)) worst = d / s;
    }
    return worst;
}

#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

/* central difference of loss(ctx) in x[i], in double */
typedef double (*loss_fn)(void *ctx);
static double fd_at(loss_fn f, void *ctx, double *x, long i) {
    double old = x[i], h = 1e-5 * (fabs(old) > 1 ? fabs(old) : 1), xp = old + h, xm = old - h, lp, lm;
    x[i] = xp;
    lp = f(ctx);
    x[i] = xm;
    lm = f(ctx);
    x[i] = old;
    return (lp - lm) / (xp - xm);
}
static double *fd_all(loss_fn f, void *ctx, double *x, long n) {
    double *g = (double *)malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    long i;
    for (i = 0; i < n; i++) g[i] = fd_at(f, ctx, x, i);
    return g;
}
static void report_grad(const char *name, const char *what, const float *after, const float *prior, const double *fd,
                        long n) {
    double e = grad_err(after, prior, fd, n);
    test_report(e < GRAD_TOL, name, "%s vs central FD (double), %ld values, worst rel err=%.3g", what, n, e);
}
static void report_fwd(const char *name, const char *what, const float *y, const double *ref, long n, double tol) {
    double e = rel_err(y, ref, n);
    test_report(e < tol, name, "%s vs double reference, %ld values, worst rel err=%.3g", what, n, e);
}

/* ---------------------------------------------------------------------
 * elementwise
 * ------------------------------------------------------------------- */
typedef struct { double *x, *b, *g; int rows, cols; } bias_ctx;
static double bias_loss(void *p) {
    bias_ctx *c = (bias_ctx *)p;
    double L = 0;
    int r, k;
    for (r = 0; r < c->rows; r++)
        for (k = 0; k < c->cols; k++) L += c->g[r * c->cols + k] * (c->x[r * c->cols + k] + c->b[k]);
    return L;
}
static void test_bias(void) {
    int rows = 300, cols = 70, n = rows * cols, i;
    float *x = fvec(n, -1, 1), *b = fvec(cols, -1, 1), *y = fdup(x, n), *dy = fvec(n, -1, 1);
    float *prior = fvec(cols, -0.1f, 0.1f), *db = fdup(prior, cols);
    double *ref = dvec(x, n), *fd;
    bias_ctx c;
    for (i = 0; i < n; i++) ref[i] += b[i % cols];
    BE->bias_add_forward(BE, y, b, rows, cols);
    report_fwd("bias_add_forward", "y += b", y, ref, n, 1e-6);
    c.x = dvec(x, n);
    c.b = dvec(b, cols);
    c.g = dvec(dy, n);
    c.rows = rows;
    c.cols = cols;
    fd = fd_all(bias_loss, &c, c.b, cols);
    BE->bias_add_backward(BE, db, dy, rows, cols);
    report_grad("bias_add_backward", "db", db, prior, fd, cols);
    free(x); free(b); free(y); free(dy); free(prior); free(db); free(ref); free(fd);
    free(c.x); free(c.b); free(c.g);
}

static void test_add_accumulate_scale(void) {
    long n = 100003, i;
    float *a = fvec(n, -1, 1), *b = fvec(n, -1, 1), *y = fzeros(n);
    double worst = 0, w2 = 0, w3 = 0;
    BE->add(BE, y, a, b, (size_t)n);
    for (i = 0; i < n; i++) worst = fmax(worst, fabs((double)y[i] - ((double)a[i] + b[i])));
    test_report(worst < 1e-6, "add", "y = a + b (n=%ld, threaded), worst abs err=%.3g", n, worst);
    memcpy(y, a, sizeof(float) * (size_t)n);
    BE->accumulate(BE, y, b, -0.5f, (size_t)n);
    for (i = 0; i < n; i++) w2 = fmax(w2, fabs((double)y[i] - ((double)a[i] - 0.5 * b[i])));
    test_report(w2 < 1e-6, "accumulate", "y += -0.5 x (the backward of add), worst abs err=%.3g", w2);
    memcpy(y, a, sizeof(float) * (size_t)n);
    BE->scale(BE, y, 3.0f, (size_t)n);
    for (i = 0; i < n; i++) w3 = fmax(w3, fabs((double)y[i] - 3.0 * a[i]));
    test_report(w3 < 1e-6, "scale", "y *= 3, worst abs err=%.3g", w3);
    free(a); free(b); free(y);
}

static double ref_gelu(double x, int t) {
    if (t) return 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}
typedef struct { double *x, *g; long n; int mode; } unary_ctx; /* mode: 0 erf gelu, 1 tanh gelu, 2 relu */
static double unary_loss(void *p) {
    unary_ctx *c = (unary_ctx *)p;
    double L = 0;
    long i;
    for (i = 0; i < c->n; i++) L += c->g[i] * (c->mode == 2 ? (c->x[i] > 0 ? c->x[i] : 0) : ref_gelu(c->x[i], c->mode));
    return L;
}
static void test_gelu_relu(void) {
    int mode;
    long n = 3000, i;
    for (mode = 0; mode < 3; mode++) {
        const char *fw = mode == 0 ? "gelu_forward(erf)" : mode == 1 ? "gelu_forward(tanh)" : "relu_forward";
        const char *bw = mode == 0 ? "gelu_backward(erf)" : mode == 1 ? "gelu_backward(tanh)" : "relu_backward";
        float *x = fvec(n, -6, 6), *y = fzeros(n), *dy = fvec(n, -1, 1), *prior = fvec(n, -0.1f, 0.1f);
        float *dx = fdup(prior, n);
        double *ref = (double *)malloc(sizeof(double) * (size_t)n), *fd;
        unary_ctx c;
        if (mode == 2)
            for (i = 0; i < n; i++)
                if (fabsf(x[i]) < 1e-2f) x[i] = 0.5f; /* keep FD away from the kink */
        for (i = 0; i < n; i++) ref[i] = mode == 2 ? (x[i] > 0 ? x[i] : 0) : ref_gelu(x[i], mode);
        if (mode == 2) BE->relu_forward(BE, y, x, (size_t)n);
        else BE->gelu_forward(BE, y, x, (size_t)n, mode);
        report_fwd(fw, "y", y, ref, n, 1e-5);
        c.x = dvec(x, n);
        c.g = dvec(dy, n);
        c.n = n;
        c.mode = mode;
        fd = fd_all(unary_loss, &c, c.x, n);
        if (mode == 2) BE->relu_backward(BE, dx, dy, y, (size_t)n);
        else BE->gelu_backward(BE, dx, dy, x, (size_t)n, mode);
        report_grad(bw, "dx", dx, prior, fd, n);
        free(x); free(y); free(dy); free(prior); free(dx); free(ref); free(fd); free(c.x); free(c.g);
    }
}

typedef struct { double *x, *g; long n; float p; uint64_t seed; } drop_ctx;
static double drop_loss(void *q) {
    drop_ctx *c = (drop_ctx *)q;
    double L = 0;
    long i;
    for (i = 0; i < c->n; i++)
        if (mama_hash_uniform(c->seed, (uint64_t)i) >= c->p) L += c->g[i] * c->x[i] / (1.0 - c->p);
    return L;
}
static void test_dropout(void) {
    long n = 20000, i, kept = 0, bad = 0;
    float p = 0.3f;
    uint64_t seed = 1234;
    float *x = fvec(n, 0.5f, 1.5f), *y = fzeros(n), *dy = fvec(n, -1, 1), *prior = fvec(n, -0.1f, 0.1f);
    float *dx = fdup(prior, n);
    double *fd, frac;
    drop_ctx c;
    BE->dropout_forward(BE, y, x, (size_t)n, p, seed);
    for (i = 0; i < n; i++) {
        int keep = mama_hash_uniform(seed, (uint64_t)i) >= p;
        double want = keep ? x[i] / (1.0 - p) : 0.0;
        kept += y[i] != 0.0f;
        if (fabs(y[i] - want) > 1e-6 * fabs(want) + 1e-30) bad++;
    }
    frac = (double)kept / n;
    test_report(bad == 0 && fabs(frac - 0.7) < 0.02, "dropout_forward",
                "mask = hash(seed,i) >= p, kept scaled 1/(1-p); mismatches=%ld, kept fraction %.4f (want 0.7)", bad,
                frac);
    BE->dropout_forward(BE, y, x, (size_t)n, 0.0f, seed);
    test_report(memcmp(y, x, sizeof(float) * (size_t)n) == 0, "dropout_forward(p=0)", "exact copy of x");
    /* the loss is a sum over elements, so the FD of its first nfd terms
     * gives the gradient of those elements (O(nfd^2), not O(n^2)) */
    c.x = dvec(x, n);
    c.g = dvec(dy, n);
    c.n = 3000;
    c.p = p;
    c.seed = seed;
    fd = fd_all(drop_loss, &c, c.x, c.n);
    BE->dropout_backward(BE, dx, dy, (size_t)n, p, seed);
    report_grad("dropout_backward", "dx (same seed)", dx, prior, fd, c.n);
    free(x); free(y); free(dy); free(prior); free(dx); free(fd); free(c.x); free(c.g);
}

typedef struct { double *x, *gm, *g; int rows, cols; } ls_ctx;
static double ls_loss(void *p) {
    ls_ctx *c = (ls_ctx *)p;
    double L = 0;
    int r, k;
    for (r = 0; r < c->rows; r++)
        for (k = 0; k < c->cols; k++) L += c->g[r * c->cols + k] * c->x[r * c->cols + k] * c->gm[k];
    return L;
}
static void test_layerscale(void) {
    int rows = 60, cols = 75, n = rows * cols, i;
    float *x = fvec(n, -1, 1), *gm = fvec(cols, -1, 1), *y = fzeros(n), *dy = fvec(n, -1, 1);
    float *px = fvec(n, -0.1f, 0.1f), *pg = fvec(cols, -0.1f, 0.1f), *dx = fdup(px, n), *dg = fdup(pg, cols);
    double *ref = (double *)malloc(sizeof(double) * (size_t)n), *fdx, *fdg;
    ls_ctx c;
    for (i = 0; i < n; i++) ref[i] = (double)x[i] * gm[i % cols];
    BE->layerscale_forward(BE, y, x, gm, rows, cols);
    report_fwd("layerscale_forward", "y = x * gamma", y, ref, n, 1e-6);
    c.x = dvec(x, n);
    c.gm = dvec(gm, cols);
    c.g = dvec(dy, n);
    c.rows = rows;
    c.cols = cols;
    fdx = fd_all(ls_loss, &c, c.x, n);
    fdg = fd_all(ls_loss, &c, c.gm, cols);
    BE->layerscale_backward(BE, dx, dg, dy, x, gm, rows, cols);
    report_grad("layerscale_backward", "dx", dx, px, fdx, n);
    report_grad("layerscale_backward", "dgamma", dg, pg, fdg, cols);
    free(x); free(gm); free(y); free(dy); free(px); free(pg); free(dx); free(dg); free(ref); free(fdx); free(fdg);
    free(c.x); free(c.gm); free(c.g);
}

/* ---------------------------------------------------------------------
 * normalisation
 * ------------------------------------------------------------------- */
typedef struct { double *x, *w, *b, *g; int rows, cols, affine; double eps; } ln_ctx;
static void ref_layernorm(const ln_ctx *c, double *y, double *mean, double *rstd) {
    int r, k;
    for (r = 0; r < c->rows; r++) {
        const double *xr = c->x + (size_t)r * c->cols;
        double m = 0, v = 0, rs;
        for (k = 0; k < c->cols; k++) m += xr[k];
        m /= c->cols;
        for (k = 0; k < c->cols; k++) v += (xr[k] - m) * (xr[k] - m);
        v /= c->cols;
        rs = 1 / sqrt(v + c->eps);
        for (k = 0; k < c->cols; k++)
            y[(size_t)r * c->cols + k] = (xr[k] - m) * rs * (c->affine ? c->w[k] : 1) + (c->affine ? c->b[k] : 0);
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
    }
}
static double ln_loss(void *p) {
    ln_ctx *c = (ln_ctx *)p;
    long n = (long)c->rows * c->cols, i;
    double *y = (double *)malloc(sizeof(double) * (size_t)n), L = 0;
    ref_layernorm(c, y, NULL, NULL);
    for (i = 0; i < n; i++) L += c->g[i] * y[i];
    free(y);
    return L;
}
/* The column reductions (bias, LayerScale, LayerNorm parameter gradients)
 * promise the same bits for any thread count and for the AVX2 and portable
 * loops: compare all of them with a plain loop that adds the rows of each
 * column in order, in float, with the same operations (1000 columns: two
 * panels per thread and a tail of columns that is not a multiple of 8). */
static void test_column_sums_bits(void) {
    int rows = 333, cols = 1000, mode, nt, r, c, bad = 0, runs = 0;
    float *dy = fvec((long)rows * cols, -1, 1), *x = fvec((long)rows * cols, -2, 2);
    float *mean = fvec(rows, -0.5f, 0.5f), *rstd = fvec(rows, 0.5f, 2.0f);
    float *s1 = fzeros(cols), *s2 = fzeros(cols), *r1 = fzeros(cols), *r2 = fzeros(cols);
    int threads0 = mama_num_threads();
    for (mode = 0; mode < 3; mode++) {
        for (c = 0; c < cols; c++) {
            float a = 0.0f, b = 0.0f;
            for (r = 0; r < rows; r++) {
                float d = dy[(size_t)r * cols + c], xv = x[(size_t)r * cols + c];
                if (mode == 0) a += d;
                else if (mode == 1) a += d * xv;
                else {
                    a += d * (xv - mean[r]) * rstd[r];
                    b += d;
                }
            }
            r1[c] = a;
            r2[c] = b;
        }
        for (nt = 1; nt <= 3; nt++) {
            int path;
            for (path = 0; path < 2; path++) {
                mama_set_num_threads(nt);
                memset(s1, 0, sizeof(float) * cols);
                memset(s2, 0, sizeof(float) * cols);
                if (path == 0) {
                    mama__column_sums(mode, s1, mode == 2 ? s2 : NULL, dy, x, mean, rstd, rows, cols);
                } else {
                    for (c = 0; c < cols; c += 300) {
                        int nc = cols - c < 300 ? cols - c : 300;
                        float a1[300], a2[300];
                        int k;
                        mama__colsum_panel_generic(mode, a1, a2, dy, x, mean, rstd, rows, cols, c, nc);
                        for (k = 0; k < nc; k++) { s1[c + k] = a1[k]; s2[c + k] = a2[k]; }
                    }
                }
                for (c = 0; c < cols; c++)
                    bad += memcmp(&s1[c], &r1[c], sizeof(float)) != 0 || (mode == 2 && memcmp(&s2[c], &r2[c], sizeof(float)) != 0);
                runs++;
            }
        }
    }
    mama_set_num_threads(threads0);
    test_report(bad == 0, "column_sums(bits)",
                "bias / LayerScale / LayerNorm column sums, %d x %d, 1-3 threads, AVX2 and portable panels, %d runs "
                "vs an in-order float loop: %d columns differ in any bit", rows, cols, runs, bad);
    free(dy); free(x); free(mean); free(rstd); free(s1); free(s2); free(r1); free(r2);
}

static void test_layernorm(void) {
    int affine;
    for (affine = 1; affine >= 0; affine--) {
        int rows = 24, cols = 70, n = rows * cols;
        float *x = fvec(n, -2, 3), *w = fvec(cols, 0.5f, 1.5f), *b = fvec(cols, -1, 1), *y = fzeros(n);
        float *mean = fzeros(rows), *rstd = fzeros(rows), *dy = fvec(n, -1, 1);
        float *px = fvec(n, -0.1f, 0.1f), *pw = fvec(cols, -0.1f, 0.1f), *pb = fvec(cols, -0.1f, 0.1f);
        float *dx = fdup(px, n), *dw = fdup(pw, cols), *db = fdup(pb, cols);
        double *ry = (double *)malloc(sizeof(double) * (size_t)n), rm[24], rr[24], *fdx, *fdw = NULL, *fdb = NULL;
        char name[64];
        ln_ctx c;
        c.x = dvec(x, n);
        c.w = dvec(w, cols);
        c.b = dvec(b, cols);
        c.g = dvec(dy, n);
        c.rows = rows;
        c.cols = cols;
        c.affine = affine;
        c.eps = 1e-5f;
        ref_layernorm(&c, ry, rm, rr);
        BE->layernorm_forward(BE, y, mean, rstd, x, affine ? w : NULL, affine ? b : NULL, rows, cols, 1e-5f);
        sprintf(name, "layernorm_forward%s", affine ? "" : "(no affine)");
        report_fwd(name, "y", y, ry, n, FWD_TOL);
        report_fwd(name, "saved mean", mean, rm, rows, FWD_TOL);
        report_fwd(name, "saved rstd", rstd, rr, rows, FWD_TOL);
        fdx = fd_all(ln_loss, &c, c.x, n);
        if (affine) {
            fdw = fd_all(ln_loss, &c, c.w, cols);
            fdb = fd_all(ln_loss, &c, c.b, cols);
        }
        BE->layernorm_backward(BE, dx, affine ? dw : NULL, affine ? db : NULL, dy, x, affine ? w : NULL, mean, rstd,
                               rows, cols);
        sprintf(name, "layernorm_backward%s", affine ? "" : "(no affine)");
        report_grad(name, "dx", dx, px, fdx, n);
        if (affine) {
            report_grad(name, "dw", dw, pw, fdw, cols);
            report_grad(name, "db", db, pb, fdb, cols);
        }
        free(x); free(w); free(b); free(y); free(mean); free(rstd); free(dy); free(px); free(pw); free(pb);
        free(dx); free(dw); free(db); free(ry); free(fdx); free(fdw); free(fdb);
        free(c.x); free(c.w); free(c.b); free(c.g);
    }
}

/* BatchNorm reference: train = batch statistics, else given running stats */
typedef struct { double *x, *w, *b, *g, *rm, *rv; int rows, cols, affine, train; double eps; } bn_ctx;
static void ref_batchnorm(const bn_ctx *c, double *y) {
    int r, k;
    for (k = 0; k < c->cols; k++) {
        double m = 0, v = 0, rs;
        if (c->train) {
            for (r = 0; r < c->rows; r++) m += c->x[(size_t)r * c->cols + k];
            m /= c->rows;
            for (r = 0; r < c->rows; r++) {
                double d = c->x[(size_t)r * c->cols + k] - m;
                v += d * d;
            }
            v /= c->rows;
        } else {
            m = c->rm[k];
            v = c->rv[k];
        }
        rs = 1 / sqrt(v + c->eps);
        for (r = 0; r < c->rows; r++)
            y[(size_t)r * c->cols + k] =
                (c->x[(size_t)r * c->cols + k] - m) * rs * (c->affine ? c->w[k] : 1) + (c->affine ? c->b[k] : 0);
    }
}
static double bn_loss(void *p) {
    bn_ctx *c = (bn_ctx *)p;
    long n = (long)c->rows * c->cols, i;
    double *y = (double *)malloc(sizeof(double) * (size_t)n), L = 0;
    ref_batchnorm(c, y);
    for (i = 0; i < n; i++) L += c->g[i] * y[i];
    free(y);
    return L;
}
static void test_batchnorm_hand(void) {
    /* x = [[1,2],[3,4],[5,9]]:  channel 0 mean 3, biased var 8/3, unbiased 4;
     * channel 1 mean 5, biased var 26/3, unbiased 13.  Running stats start
     * at mean 0, var 1, momentum 0.1:
     *   running_mean = 0.9*0 + 0.1*[3, 5]        = [0.3, 0.5]
     *   running_var  = 0.9*1 + 0.1*[4, 13]       = [1.3, 2.2]
     * y[0][0] = (1-3)/sqrt(8/3 + 1e-5) = -1.2247333...; eval afterwards
     * uses the running stats: y(x=1, ch 0) = (1-0.3)/sqrt(1.3+1e-5). */
    float x[6] = {1, 2, 3, 4, 5, 9}, y[6], mean[2], rstd[2], rm[2] = {0, 0}, rv[2] = {1, 1};
    double e, ye;
    BE->batchnorm_forward(BE, y, mean, rstd, rm, rv, x, NULL, NULL, 3, 2, 1e-5f, 0.1f, 1);
    e = fabs(rm[0] - 0.3) + fabs(rm[1] - 0.5) + fabs(rv[0] - 1.3) + fabs(rv[1] - 2.2);
    e += fabs(mean[0] - 3.0) + fabs(mean[1] - 5.0) + fabs(y[0] - (1 - 3) / sqrt(8.0 / 3 + 1e-5));
    test_report(e < 1e-5, "batchnorm_forward(train) running stats",
                "hand values rm=[0.3,0.5] rv=[1.3,2.2] (unbiased var, momentum 0.1), sum abs err=%.3g", e);
    BE->batchnorm_forward(BE, y, mean, rstd, rm, rv, x, NULL, NULL, 3, 2, 1e-5f, 0.1f, 0);
    ye = (1 - 0.3) / sqrt(1.3 + 1e-5);
    e = fabs(y[0] - ye) + fabs(rm[0] - 0.3) + fabs(rv[1] - 2.2) + fabs(fabs(rstd[0]) - 1 / sqrt(1.3 + 1e-5));
    test_report(e < 1e-5, "batchnorm_forward(eval) running stats",
                "uses running stats, leaves them unchanged, saves |rstd| = 1/sqrt(rv+eps); sum abs err=%.3g", e);
}
static void test_batchnorm(void) {
    int train, affine;
    test_batchnorm_hand();
    for (train = 1; train >= 0; train--)
        for (affine = 1; affine >= 0; affine--) {
            int rows = 50, cols = 70, n = rows * cols, k;
            float *x = fvec(n, -2, 3), *w = fvec(cols, 0.5f, 1.5f), *b = fvec(cols, -1, 1), *y = fzeros(n);
            float *mean = fzeros(cols), *rstd = fzeros(cols), *dy = fvec(n, -1, 1);
            float *rm = fvec(cols, -0.5f, 0.5f), *rv = fvec(cols, 0.5f, 2.0f), *rm0 = fdup(rm, cols), *rv0 = fdup(rv, cols);
            float *px = fvec(n, -0.1f, 0.1f), *pw = fvec(cols, -0.1f, 0.1f), *pb = fvec(cols, -0.1f, 0.1f);
            float *dx = fdup(px, n), *dw = fdup(pw, cols), *db = fdup(pb, cols);
            double *ry = (double *)malloc(sizeof(double) * (size_t)n), *fdx, *fdw = NULL, *fdb = NULL;
            double *wrm = (double *)malloc(sizeof(double) * cols), *wrv = (double *)malloc(sizeof(double) * cols);
            char name[80];
            bn_ctx c;
            c.x = dvec(x, n);
            c.w = dvec(w, cols);
            c.b = dvec(b, cols);
            c.g = dvec(dy, n);
            c.rm = dvec(rm, cols);
            c.rv = dvec(rv, cols);
            c.rows = rows;
            c.cols = cols;
            c.affine = affine;
            c.train = train;
            c.eps = 1e-5f;
            ref_batchnorm(&c, ry);
            /* expected running stats after a train step */
            for (k = 0; k < cols; k++) {
                double m = 0, v = 0;
                int r;
                for (r = 0; r < rows; r++) m += c.x[r * cols + k];
                m /= rows;
                for (r = 0; r < rows; r++) v += (c.x[r * cols + k] - m) * (c.x[r * cols + k] - m);
                wrm[k] = train ? 0.9 * rm[k] + 0.1 * m : rm[k];
                wrv[k] = train ? 0.9 * rv[k] + 0.1 * v / (rows - 1) : rv[k];
            }
            BE->batchnorm_forward(BE, y, mean, rstd, rm, rv, x, affine ? w : NULL, affine ? b : NULL, rows, cols,
                                  1e-5f, 0.1f, train);
            sprintf(name, "batchnorm_forward(%s%s)", train ? "train" : "eval", affine ? "" : ", no affine");
            report_fwd(name, "y", y, ry, n, FWD_TOL);
            report_fwd(name, "running_mean", rm, wrm, cols, 1e-5);
            report_fwd(name, "running_var", rv, wrv, cols, 1e-5);
            fdx = fd_all(bn_loss, &c, c.x, n);
            if (affine) {
                fdw = fd_all(bn_loss, &c, c.w, cols);
                fdb = fd_all(bn_loss, &c, c.b, cols);
            }
            BE->batchnorm_backward(BE, dx, affine ? dw : NULL, affine ? db : NULL, dy, x, affine ? w : NULL, mean,
                                   rstd, rows, cols);
            sprintf(name, "batchnorm_backward(%s%s)", train ? "train: batch stats" : "eval: stats constant",
                    affine ? "" : ", no affine");
            report_grad(name, "dx", dx, px, fdx, n);
            if (affine) {
                report_grad(name, "dw", dw, pw, fdw, cols);
                report_grad(name, "db", db, pb, fdb, cols);
            }
            free(x); free(w); free(b); free(y); free(mean); free(rstd); free(dy); free(rm); free(rv); free(rm0);
            free(rv0); free(px); free(pw); free(pb); free(dx); free(dw); free(db); free(ry); free(fdx); free(fdw);
            free(fdb); free(wrm); free(wrv); free(c.x); free(c.w); free(c.b); free(c.g); free(c.rm); free(c.rv);
        }
}

typedef struct { double *x, *g; int rows, cols; } l2_ctx;
static void ref_l2(const l2_ctx *c, double *y) {
    int r, k;
    for (r = 0; r < c->rows; r++) {
        double s = 0, d;
        for (k = 0; k < c->cols; k++) s += c->x[r * c->cols + k] * c->x[r * c->cols + k];
        d = sqrt(s) > 1e-12 ? sqrt(s) : 1e-12;
        for (k = 0; k < c->cols; k++) y[r * c->cols + k] = c->x[r * c->cols + k] / d;
    }
}
static double l2_loss(void *p) {
    l2_ctx *c = (l2_ctx *)p;
    long n = (long)c->rows * c->cols, i;
    double *y = (double *)malloc(sizeof(double) * (size_t)n), L = 0;
    ref_l2(c, y);
    for (i = 0; i < n; i++) L += c->g[i] * y[i];
    free(y);
    return L;
}
static void test_l2norm(void) {
    int rows = 20, cols = 37, n = rows * cols, k;
    float *x = fvec(n, -1, 1), *y = fzeros(n), *norm = fzeros(rows), *dy = fvec(n, -1, 1);
    float *px = fvec(n, -0.1f, 0.1f), *dx = fdup(px, n);
    double *ry = (double *)malloc(sizeof(double) * (size_t)n), *fd;
    float tx[3] = {1e-14f, -2e-14f, 0}, ty[3], tn[1], tdy[3] = {1, 2, 3}, tdx[3] = {0, 0, 0};
    double e;
    l2_ctx c;
    c.x = dvec(x, n);
    c.g = dvec(dy, n);
    c.rows = rows;
    c.cols = cols;
    ref_l2(&c, ry);
    BE->l2norm_forward(BE, y, norm, x, rows, cols);
    report_fwd("l2norm_forward", "y = x/max(||x||,1e-12)", y, ry, n, FWD_TOL);
    fd = fd_all(l2_loss, &c, c.x, n);
    BE->l2norm_backward(BE, dx, dy, y, norm, rows, cols);
    report_grad("l2norm_backward", "dx", dx, px, fd, n);
    /* below the clamp: y = x * 1e12 and dx = dy * 1e12 */
    BE->l2norm_forward(BE, ty, tn, tx, 1, 3);
    BE->l2norm_backward(BE, tdx, tdy, ty, tn, 1, 3);
    e = 0;
    for (k = 0; k < 3; k++) e += fabs(ty[k] - tx[k] * 1e12) + fabs(tdx[k] - tdy[k] * 1e12) / 1e12;
    test_report(e < 1e-5, "l2norm(clamped)", "||x|| < 1e-12: y = x*1e12, dx = dy*1e12; err=%.3g", e);
    free(x); free(y); free(norm); free(dy); free(px); free(dx); free(ry); free(fd); free(c.x); free(c.g);
}

/* ---------------------------------------------------------------------
 * attention
 * ------------------------------------------------------------------- */
typedef struct {
    double *qkv, *g;
    const int *kv;
    int B, T, H, hd, causal;
    double scale;
    float p;
    uint64_t seed;
} att_ctx;

/* naive: per query, softmax(scale q.k over visible keys), dropout on the
 * probabilities, weighted sum of v.  out [B*T, D], lse [B*H*T]. */
static void ref_attention(const att_ctx *c, double *out, double *lse) {
    int D = c->H * c->hd, b, h, i, j, d;
    double *s = (double *)malloc(sizeof(double) * (size_t)c->T);
    for (b = 0; b < c->B; b++)
        for (h = 0; h < c->H; h++)
            for (i = 0; i < c->T; i++) {
                const double *q = c->qkv + (size_t)(b * c->T + i) * 3 * D + h * c->hd;
                double mx = -INFINITY, sum = 0;
                double *o = out + (size_t)(b * c->T + i) * D + h * c->hd;
                for (j = 0; j < c->T; j++) {
                    const double *k = c->qkv + (size_t)(b * c->T + j) * 3 * D + D + h * c->hd;
                    int vis = (!c->kv || c->kv[b * c->T + j]) && (!c->causal || j <= i);
                    double dot = 0;
                    for (d = 0; d < c->hd; d++) dot += q[d] * k[d];
                    s[j] = vis ? c->scale * dot : -INFINITY;
                    if (s[j] > mx) mx = s[j];
                }
                for (d = 0; d < c->hd; d++) o[d] = 0;
                if (mx == -INFINITY) {
                    if (lse) lse[((size_t)b * c->H + h) * c->T + i] = -INFINITY;
                    continue;
                }
                for (j = 0; j < c->T; j++) sum += s[j] == -INFINITY ? 0 : exp(s[j] - mx);
                if (lse) lse[((size_t)b * c->H + h) * c->T + i] = mx + log(sum);
                for (j = 0; j < c->T; j++) {
                    const double *v = c->qkv + (size_t)(b * c->T + j) * 3 * D + 2 * D + h * c->hd;
                    double pw = s[j] == -INFINITY ? 0 : exp(s[j] - mx) / sum;
                    if (c->p > 0) {
                        uint64_t idx = (((uint64_t)b * c->H + h) * c->T + i) * c->T + j;
                        pw = mama_hash_uniform(c->seed, idx) >= c->p ? pw / (1.0 - c->p) : 0;
                    }
                    for (d = 0; d < c->hd; d++) o[d] += pw * v[d];
                }
            }
    free(s);
}
static double att_loss(void *p) {
    att_ctx *c = (att_ctx *)p;
    long n = (long)c->B * c->T * c->H * c->hd, i;
    double *out = (double *)malloc(sizeof(double) * (size_t)n), L = 0;
    ref_attention(c, out, NULL);
    for (i = 0; i < n; i++) L += c->g[i] * out[i];
    free(out);
    return L;
}

/* mask_mode: 0 none; 1 padding (batch b keeps T - 7b keys);
 * 2 padding + key 0 of batch 1 invalid (with causal: query 0 sees nothing)
 *   + last batch element with no valid key at all. */
static void test_attention_config(const char *label, int B, int T, int H, int hd, int causal, int mask_mode, float p,
                                  int nfd) {
    int D = H * hd, b, j, i;
    long nqkv = (long)B * T * 3 * D, nout = (long)B * T * D, nlse = (long)B * H * T;
    float *qkv = fvec(nqkv, -1, 1), *out = fzeros(nout), *lse = fzeros(nlse), *dout = fvec(nout, -1, 1);
    float *prior = fvec(nqkv, -0.1f, 0.1f), *dqkv = fdup(prior, nqkv);
    int *kv = NULL;
    double *rout = (double *)malloc(sizeof(double) * (size_t)nout), *rlse = (double *)malloc(sizeof(double) * (size_t)nlse);
    double e_out, e_lse = 0, worst = 0, fl;
    double *fdv = (double *)calloc((size_t)nfd, sizeof(double));
    float *an = (float *)malloc(sizeof(float) * (size_t)nfd), *zero = fzeros(nfd);
    long *idx = (long *)malloc(sizeof(long) * (size_t)nfd);
    int nonfinite = 0, lse_inf_ok = 1;
    char name[160];
    att_ctx c;
    float scale = 1.0f / sqrtf((float)hd);
    if (mask_mode) {
        kv = (int *)malloc(sizeof(int) * (size_t)(B * T));
        for (b = 0; b < B; b++)
            for (j = 0; j < T; j++) kv[b * T + j] = j < T - 7 * b;
        if (mask_mode == 2) {
            if (B > 1) kv[1 * T + 0] = 0;
            for (j = 0; j < T; j++) kv[(B - 1) * T + j] = 0;
        }
    }
    c.qkv = dvec(qkv, nqkv);
    c.g = dvec(dout, nout);
    c.kv = kv;
    c.B = B; c.T = T; c.H = H; c.hd = hd; c.causal = causal;
    c.scale = scale;
    c.p = p;
    c.seed = 777;
    ref_attention(&c, rout, rlse);
    BE->attention_forward(BE, out, lse, qkv, kv, B, T, H, hd, causal, scale, p, 777);
    e_out = rel_err(out, rout, nout);
    for (i = 0; i < nout; i++) nonfinite += !(out[i] == out[i]) || fabsf(out[i]) > 1e30f;
    for (i = 0; i < nlse; i++) {
        if (rlse[i] == -INFINITY) lse_inf_ok &= lse[i] == -INFINITY;
        else e_lse = fmax(e_lse, fabs(lse[i] - rlse[i]) / fmax(1.0, fabs(rlse[i])));
    }
    sprintf(name, "attention_forward[%s B=%d T=%d H=%d hd=%d%s%s p=%.1f]", label, B, T, H, hd,
            causal ? " causal" : "", mask_mode == 0 ? "" : mask_mode == 1 ? " pad" : " pad+fully-masked", p);
    test_report(e_out < FWD_TOL && e_lse < FWD_TOL && nonfinite == 0 && lse_inf_ok, name,
                "out vs naive softmax(qk^T*scale)v in double: worst rel err=%.3g; lse err=%.3g; non-finite outputs=%d; "
                "masked-row lse=-inf %s",
                e_out, e_lse, nonfinite, lse_inf_ok ? "ok" : "WRONG");
    /* backward vs FD at nfd random coordinates (q, k and v columns all hit) */
    BE->attention_backward(BE, dqkv, dout, out, lse, qkv, kv, B, T, H, hd, causal, scale, p, 777);
    for (i = 0; i < nqkv; i++) nonfinite += !(dqkv[i] == dqkv[i]) || fabsf(dqkv[i]) > 1e30f;
    for (i = 0; i < nfd; i++) {
        long k = (long)mama_rng_below(&R, (uint32_t)nqkv);
        if (i < 3) { /* make sure each of q, k, v is sampled */
            long row = (long)mama_rng_below(&R, (uint32_t)(B * T));
            k = row * 3 * D + (long)i * D + (long)mama_rng_below(&R, (uint32_t)D);
        }
        idx[i] = k;
        fdv[i] = fd_at(att_loss, &c, c.qkv, k);
        an[i] = (float)((double)dqkv[k] - prior[k]);
    }
    fl = 1e-2 * maxabs(fdv, nfd) + 1e-9;
    for (i = 0; i < nfd; i++) {
        double d = fabs(an[i] - fdv[i]), s = fabs(fdv[i]) > fl ? fabs(fdv[i]) : fl;
        if (!(d / s <= worst)) worst = d / s;
    }
    sprintf(name, "attention_backward[%s B=%d T=%d H=%d hd=%d%s%s p=%.1f]", label, B, T, H, hd,
            causal ? " causal" : "", mask_mode == 0 ? "" : mask_mode == 1 ? " pad" : " pad+fully-masked", p);
    test_report(worst < GRAD_TOL && nonfinite == 0, name,
                "dqkv vs central FD (double, same dropout seed) at %d sampled coords: worst rel err=%.3g, non-finite=%d",
                nfd, worst, nonfinite);
    if (mask_mode == 2) {
        /* the fully masked batch element: no output, no gradient at all */
        double g = 0, o = 0;
        long base = (long)(B - 1) * T;
        for (i = 0; i < T * 3 * D; i++) g = fmax(g, fabs((double)dqkv[base * 3 * D + i] - prior[base * 3 * D + i]));
        for (i = 0; i < T * D; i++) o = fmax(o, fabs(out[base * D + i]));
        test_report(g == 0 && o == 0, "attention(fully masked sequence)",
                    "all keys masked: out == 0 and dqkv untouched (max |out|=%g, max |dgrad|=%g)", o, g);
    }
    free(qkv); free(out); free(lse); free(dout); free(prior); free(dqkv); free(kv); free(rout); free(rlse);
    free(fdv); free(an); free(zero); free(idx); free(c.qkv); free(c.g);
}

static void bench_attention(void) {
    /* DINOv2 ViT-B/14 at 518 px: T = 1 + 4 + 37*37 = 1374, 12 heads of 64 */
    int B = 1, T = 1374, H = 12, hd = 64, D = H * hd;
    long nqkv = (long)B * T * 3 * D, nout = (long)B * T * D;
    float *qkv = fvec(nqkv, -1, 1), *out = fzeros(nout), *lse = fzeros((long)B * H * T), *dout = fvec(nout, -1, 1);
    float *dqkv = fzeros(nqkv);
    double t0 = mama_time_seconds(), t1, t2, gf = 4.0 * B * H * (double)T * T * hd * 1e-9;
    BE->attention_forward(BE, out, lse, qkv, NULL, B, T, H, hd, 0, 0.125f, 0.0f, 0);
    t1 = mama_time_seconds();
    BE->attention_backward(BE, dqkv, dout, out, lse, qkv, NULL, B, T, H, hd, 0, 0.125f, 0.0f, 0);
    t2 = mama_time_seconds();
    printf("# bench attention B=%d T=%d H=%d hd=%d threads=%d: forward %.3f s (%.1f GFLOP/s), backward %.3f s "
           "(%.1f GFLOP/s)\n",
           B, T, H, hd, mama_num_threads(), t1 - t0, gf / (t1 - t0), t2 - t1, 2.5 * gf / (t2 - t1));
    free(qkv); free(out); free(lse); free(dout); free(dqkv);
}

/* Both CPU paths against the same references: the GEMM schedule (the
 * default) and the fallback it hands over to when not even one row of
 * scores fits its buffer (the reference backend's loops; forced here). */
static void test_attention(void) {
    static const struct { const char *name; int B, T, H, hd, causal, mask_mode; float p; int samples; } cfg[] = {
        {"a", 2, 70, 2, 8, 0, 0, 0.0f, 300},
        {"b", 2, 70, 2, 8, 1, 1, 0.0f, 300},
        {"c", 3, 45, 3, 8, 1, 2, 0.0f, 300},
        {"d", 3, 45, 2, 8, 0, 2, 0.0f, 200},
        {"e", 2, 70, 2, 8, 1, 1, 0.2f, 300},
        {"f", 2, 33, 3, 12, 0, 1, 0.3f, 200},
        {"g", 1, 300, 2, 64, 0, 1, 0.0f, 60},  /* two query blocks of 150 in the GEMM schedule */
        {"h", 1, 97, 1, 40, 1, 0, 0.0f, 80},   /* three causal query blocks */
        {"i", 1, 70, 1, 300, 0, 0, 0.0f, 40},  /* a wide head */
        {"j", 2, 50, 2, 128, 1, 1, 0.1f, 40},  /* GPT-2-like head dim, dropout */
    };
    static const char *const sched[2] = {"gemm", "reference"};
    char label[32];
    int s, k;
    for (s = 0; s < 2; s++) {
        mama_cpu_backend_force_attention(BE, sched[s]);
        for (k = 0; k < (int)(sizeof cfg / sizeof cfg[0]); k++) {
            sprintf(label, "%s %s", cfg[k].name, sched[s]);
            test_attention_config(label, cfg[k].B, cfg[k].T, cfg[k].H, cfg[k].hd, cfg[k].causal, cfg[k].mask_mode,
                                  cfg[k].p, cfg[k].samples);
        }
    }
    mama_cpu_backend_force_attention(BE, "auto");
    bench_attention();
}

/* ---------------------------------------------------------------------
 * pooling, embedding, patches
 * ------------------------------------------------------------------- */
typedef struct { double *x, *g; const float *mask; int B, T, C; } mp_ctx;
static void ref_meanpool(const mp_ctx *c, double *y) {
    int b, t, k;
    for (b = 0; b < c->B; b++) {
        double W = 0;
        for (t = 0; t < c->T; t++) W += c->mask ? c->mask[b * c->T + t] : 1;
        for (k = 0; k < c->C; k++) {
            double s = 0;
            for (t = 0; t < c->T; t++) s += (c->mask ? c->mask[b * c->T + t] : 1) * c->x[((size_t)b * c->T + t) * c->C + k];
            y[b * c->C + k] = W != 0 ? s / W : 0;
        }
    }
}
static double mp_loss(void *p) {
    mp_ctx *c = (mp_ctx *)p;
    double *y = (double *)malloc(sizeof(double) * (size_t)(c->B * c->C)), L = 0;
    int i;
    ref_meanpool(c, y);
    for (i = 0; i < c->B * c->C; i++) L += c->g[i] * y[i];
    free(y);
    return L;
}
static void test_meanpool(void) {
    int masked;
    for (masked = 0; masked < 2; masked++) {
        int B = 3, T = 11, C = 100, n = B * T * C, t;
        float *x = fvec(n, -1, 1), *y = fzeros(B * C), *dy = fvec(B * C, -1, 1), *px = fvec(n, -0.1f, 0.1f);
        float *dx = fdup(px, n), mask[33];
        double *ry = (double *)malloc(sizeof(double) * (size_t)(B * C)), *fd;
        char name[64];
        mp_ctx c;
        for (t = 0; t < B * T; t++) mask[t] = t % T < 7 ? 1.0f : 0.0f; /* 7 real tokens, 4 padding */
        mask[3] = 0.5f;                                                   /* a fractional weight */
        for (t = 2 * T; t < 3 * T; t++) mask[t] = 0.0f;                   /* empty sequence -> y = 0 */
        c.x = dvec(x, n);
        c.g = dvec(dy, B * C);
        c.mask = masked ? mask : NULL;
        c.B = B; c.T = T; c.C = C;
        ref_meanpool(&c, ry);
        BE->meanpool_forward(BE, y, x, c.mask, B, T, C);
        sprintf(name, "meanpool_forward%s", masked ? "(mask)" : "");
        report_fwd(name, "y", y, ry, B * C, FWD_TOL);
        fd = fd_all(mp_loss, &c, c.x, n);
        BE->meanpool_backward(BE, dx, dy, c.mask, B, T, C);
        sprintf(name, "meanpool_backward%s", masked ? "(mask)" : "");
        report_grad(name, "dx", dx, px, fd, n);
        free(x); free(y); free(dy); free(px); free(dx); free(ry); free(fd); free(c.x); free(c.g);
    }
}

typedef struct { double *table, *g; const int *ids; int n, C; } emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = (emb_ctx *)p;
    double L = 0;
    int i, k;
    for (i = 0; i < c->n; i++)
        for (k = 0; k < c->C; k++) L += c->g[i * c->C + k] * c->table[(size_t)c->ids[i] * c->C + k];
    return L;
}
static void test_embedding(void) {
    int V = 13, C = 150, n = 40, i, k, bad = 0;
    float *table = fvec(V * C, -1, 1), *y = fzeros(n * C), *dy = fvec(n * C, -1, 1), *pt = fvec(V * C, -0.1f, 0.1f);
    float *dt = fdup(pt, V * C);
    int ids[40];
    double *fd;
    emb_ctx c;
    for (i = 0; i < n; i++) ids[i] = (int)mama_rng_below(&R, (uint32_t)V); /* plenty of repeats */
    ids[5] = ids[6] = ids[7] = 3;
    BE->embedding_forward(BE, y, ids, table, n, C);
    for (i = 0; i < n; i++)
        for (k = 0; k < C; k++) bad += y[i * C + k] != table[ids[i] * C + k];
    test_report(bad == 0, "embedding_forward", "y[i] == table[ids[i]] exactly; mismatches=%d", bad);
    c.table = dvec(table, V * C);
    c.g = dvec(dy, n * C);
    c.ids = ids;
    c.n = n;
    c.C = C;
    fd = fd_all(emb_loss, &c, c.table, V * C);
    BE->embedding_backward(BE, dt, dy, ids, n, C);
    report_grad("embedding_backward", "dtable (scatter-add, repeated ids)", dt, pt, fd, V * C);
    free(table); free(y); free(dy); free(pt); free(dt); free(fd); free(c.table); free(c.g);
}

static void test_im2col(void) {
    int B = 2, Cin = 3, H = 30, W = 45, P = 7, GH = H / P, GW = W / P, K = Cin * P * P;
    long n = (long)B * Cin * H * W, i;
    float *img = fzeros(n), *cols = fzeros((long)B * GH * GW * K);
    int b, gy, gx, c, py, px, bad = 0;
    for (i = 0; i < n; i++) img[i] = (float)i; /* value = flat index: misplacement shows */
    BE->im2col_patches(BE, cols, img, B, Cin, H, W, P);
    for (b = 0; b < B; b++)
        for (gy = 0; gy < GH; gy++)
            for (gx = 0; gx < GW; gx++)
                for (c = 0; c < Cin; c++)
                    for (py = 0; py < P; py++)
                        for (px = 0; px < P; px++) {
                            long row = ((long)b * GH + gy) * GW + gx, col = ((long)c * P + py) * P + px;
                            float want = img[(((long)b * Cin + c) * H + gy * P + py) * W + gx * P + px];
                            bad += cols[row * K + col] != want;
                        }
    /* hand check: patch (b=1, gy=2, gx=3), channel 2, py=1, px=4 */
    {
        long row = (1L * GH + 2) * GW + 3, col = (2L * P + 1) * P + 4;
        float want = (float)(((1L * Cin + 2) * H + 2 * 7 + 1) * W + 3 * 7 + 4);
        bad += cols[row * K + col] != want;
    }
    test_report(bad == 0, "im2col_patches",
                "[B,Cin,H,W] -> rows (b,gy,gx), cols (c,py,px), H/W not multiples of P; mismatches=%d", bad);
    free(img); free(cols);
}

/* ---------------------------------------------------------------------
 * losses
 * ------------------------------------------------------------------- */
typedef struct { double *l, *dl; const int *t; int rows, cols; } ce_ctx;
static double ce_row(const double *l, int t, int cols) {
    double mx = -INFINITY, s = 0;
    int k;
    for (k = 0; k < cols; k++) mx = l[k] > mx ? l[k] : mx;
    for (k = 0; k < cols; k++) s += exp(l[k] - mx);
    return (t >= 0 && t < cols) ? mx + log(s) - l[t] : 0;
}
static double ce_loss(void *p) {
    ce_ctx *c = (ce_ctx *)p;
    double L = 0;
    int r;
    for (r = 0; r < c->rows; r++) L += c->dl[r] * ce_row(c->l + (size_t)r * c->cols, c->t[r], c->cols);
    return L;
}
static void test_cross_entropy(void) {
    int rows = 9, cols = 37, n = rows * cols, r, k;
    float *l = fvec(n, -5, 5), *probs = fzeros(n), loss[9], *dl = fvec(rows, 0.2f, 1.5f), *pl = fvec(n, -0.1f, 0.1f);
    float *dlog = fdup(pl, n);
    int t[9];
    double rl[9], *rp = (double *)malloc(sizeof(double) * (size_t)n), *fd;
    ce_ctx c;
    for (r = 0; r < rows; r++) t[r] = (int)mama_rng_below(&R, (uint32_t)cols);
    t[4] = -100; /* ignored row */
    for (k = 0; k < cols; k++) l[2 * cols + k] += 80.0f; /* large logits: needs the max shift */
    c.l = dvec(l, n);
    c.dl = dvec(dl, rows);
    c.t = t;
    c.rows = rows;
    c.cols = cols;
    for (r = 0; r < rows; r++) {
        double mx = -INFINITY, s = 0;
        rl[r] = ce_row(c.l + r * cols, t[r], cols);
        for (k = 0; k < cols; k++) mx = c.l[r * cols + k] > mx ? c.l[r * cols + k] : mx;
        for (k = 0; k < cols; k++) s += exp(c.l[r * cols + k] - mx);
        for (k = 0; k < cols; k++) rp[r * cols + k] = exp(c.l[r * cols + k] - mx) / s;
    }
    BE->cross_entropy_forward(BE, loss, probs, l, t, rows, cols);
    report_fwd("cross_entropy_forward", "loss (one row +80 shifted, one ignored target)", loss, rl, rows, FWD_TOL);
    report_fwd("cross_entropy_forward", "probs", probs, rp, n, FWD_TOL);
    fd = fd_all(ce_loss, &c, c.l, n);
    BE->cross_entropy_backward(BE, dlog, probs, t, dl, rows, cols);
    report_grad("cross_entropy_backward", "dlogits", dlog, pl, fd, n);
    free(l); free(probs); free(dl); free(pl); free(dlog); free(rp); free(fd); free(c.l); free(c.dl);
}

static void test_segment_max(void) {
    int rows = 7, cols = 50, seg[5] = {0, 10, 11, 11, 50}, nseg = 4, r, s, bad = 0;
    float *x = fvec(rows * cols, -1, 1), out[28];
    int arg[28];
    BE->segment_max_forward(BE, out, arg, x, rows, cols, seg, nseg);
    for (r = 0; r < rows; r++)
        for (s = 0; s < nseg; s++) {
            int k, best = -1;
            float mx = 0;
            for (k = seg[s]; k < seg[s + 1]; k++)
                if (best < 0 || x[r * cols + k] > mx) mx = x[r * cols + k], best = k;
            bad += out[r * nseg + s] != mx || arg[r * nseg + s] != best;
        }
    test_report(bad == 0, "segment_max_forward",
                "max and argmax per [seg[s], seg[s+1]) vs naive (incl. 1-wide and empty segment -> 0/-1); mismatches=%d",
                bad);
    free(x);
}

/* ---------------------------------------------------------------------
 * optimisers, schedule, clipping
 * ------------------------------------------------------------------- */
static void test_adamw(void) {
    /* p0 = [1, -2]; lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.01.
     * step 1, g = [0.5, -1]:
     *   p *= 0.999 -> [0.999, -1.998]; m = [0.05, -0.1]; v = [2.5e-4, 1e-3]
     *   m_hat = m/0.1 = [0.5, -1]; sqrt(v_hat) = sqrt(v/0.001) = [0.5, 1]
     *   p -= 0.1 * m_hat/(sqrt(v_hat)+1e-8) -> [0.899000002, -1.898000001]
     * step 2, g = [-0.25, 0.5]:
     *   p *= 0.999 -> [0.898101002, -1.896101999]; m = [0.02, -0.04];
     *   v = [3.1225e-4, 1.249e-3]; bc1 = 0.19, bc2 = 0.001999
     *   p -= (0.1/0.19) m / (sqrt(v)/sqrt(0.001999) + 1e-8)
     *     -> [0.8714672987, -1.8694682974]
     * step 3, g = [0.1, 0.2]: m = [0.028, -0.016], v = [3.2193775e-4, 1.287751e-3],
     *   bc1 = 0.271, bc2 = 0.002997001 -> [0.8390714757, -1.8585918702]
     * (the same numbers come out of torch.optim.AdamW in float64). */
    float p[2] = {1, -2}, m[2] = {0, 0}, v[2] = {0, 0};
    float g[3][2] = {{0.5f, -1.0f}, {-0.25f, 0.5f}, {0.1f, 0.2f}};
    double want[3][2] = {{0.899000002, -1.898000001}, {0.8714672987, -1.8694682974}, {0.8390714757, -1.8585918702}};
    double e = 0;
    int t, i;
    for (t = 0; t < 3; t++) {
        BE->adamw_step(BE, p, g[t], m, v, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, t + 1);
        for (i = 0; i < 2; i++) e = fmax(e, fabs(p[i] - want[t][i]));
    }
    e = fmax(e, fabs(m[0] - 0.028) + fabs(v[1] - 1.287751e-3));
    test_report(e < 2e-6, "adamw_step", "3 hand-computed AdamW steps (decoupled decay, bias correction), worst abs err=%.3g",
                e);
    {
        /* The vector path (AVX2, chunked over threads) against the update
         * written out in scalar C with the same operation order: every
         * weight, moment and variance must match bit for bit. */
        enum { N = 100003 };
        static float P[N], G[N], M[N], V[N], Pr[N], Mr[N], Vr[N];
        long long mism = 0;
        int k;
        mama_rng r;
        mama_rng_seed(&r, 77);
        for (i = 0; i < N; i++) {
            P[i] = Pr[i] = 2 * mama_rng_uniform(&r) - 1;
            M[i] = Mr[i] = 0.1f * (2 * mama_rng_uniform(&r) - 1);
            V[i] = Vr[i] = 0.01f * mama_rng_uniform(&r);
            G[i] = 2 * mama_rng_uniform(&r) - 1;
        }
        for (k = 1; k <= 3; k++) {
            double bc1 = 1.0 - pow((double)0.9f, k), bc2 = 1.0 - pow((double)0.999f, k);
            float st = (float)((double)1e-3f / bc1), bs = (float)sqrt(bc2), dc = 1.0f - 1e-3f * 0.1f;
            BE->adamw_step(BE, P, G, M, V, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, k);
            for (i = 0; i < N; i++) {
                float gi = G[i], mi = 0.9f * Mr[i] + (1.0f - 0.9f) * gi;
                float vi = 0.999f * Vr[i] + (1.0f - 0.999f) * gi * gi;
                Mr[i] = mi;
                Vr[i] = vi;
                Pr[i] = Pr[i] * dc - st * mi / (sqrtf(vi) / bs + 1e-8f);
            }
        }
        for (i = 0; i < N; i++) mism += memcmp(&P[i], &Pr[i], 4) != 0 || memcmp(&M[i], &Mr[i], 4) != 0 ||
                                        memcmp(&V[i], &Vr[i], 4) != 0;
        test_report(mism == 0, "adamw_step_vector",
                    "%d elements x 3 steps, table op (%s) vs scalar C: %lld elements differ in any bit", N,
                    mama_cpu_backend_kernel_name(BE), mism);
    }
}

static void test_sgd(void) {
    /* p0 = [1, -2], lr 0.1, momentum 0.9, wd 0.1:
     * step 1, g = [0.5, -1]:  d = g + 0.1 p = [0.6, -1.2]; buf = d;
     *         p = [1 - 0.06, -2 + 0.12] = [0.94, -1.88]
     * step 2, g = [-0.25, 0.5]: d = [-0.156, 0.312]; buf = 0.9*[0.6,-1.2] + d = [0.384, -0.768]
     *         p = [0.9016, -1.8032]
     * step 3, g = [0.1, 0.2]: d = [0.19016, 0.01968]; buf = [0.53576, -0.67152]
     *         p = [0.848024, -1.736048] */
    float p[2] = {1, -2}, buf[2] = {123, 456}; /* first step must ignore the old buffer */
    float g[3][2] = {{0.5f, -1.0f}, {-0.25f, 0.5f}, {0.1f, 0.2f}};
    double want[3][2] = {{0.94, -1.88}, {0.9016, -1.8032}, {0.848024, -1.736048}};
    double e = 0;
    float q[2] = {1, -2};
    int t, i;
    for (t = 0; t < 3; t++) {
        BE->sgd_step(BE, p, g[t], buf, 2, 0.1f, 0.9f, 0.1f, t == 0);
        for (i = 0; i < 2; i++) e = fmax(e, fabs(p[i] - want[t][i]));
    }
    e = fmax(e, fabs(buf[0] - 0.53576) + fabs(buf[1] + 0.67152));
    /* no momentum, no decay: p -= lr g = [1 - 0.05, -2 + 0.1] */
    BE->sgd_step(BE, q, g[0], NULL, 2, 0.1f, 0.0f, 0.0f, 1);
    e = fmax(e, fabs(q[0] - 0.95) + fabs(q[1] + 1.9));
    test_report(e < 1e-6, "sgd_step", "3 hand-computed momentum steps + a plain step, worst abs err=%.3g", e);
}

static void test_sum_squares_clip(void) {
    long n = 200001, i;
    float *x = fvec(n, -1, 1), g3[3] = {3, 4, 0}, g4[2] = {3, 4}, gn[2] = {1, NAN};
    double ref = 0, s, norm, e;
    for (i = 0; i < n; i++) ref += (double)x[i] * x[i];
    s = BE->sum_squares(BE, x, (size_t)n);
    test_report(fabs(s - ref) / ref < 1e-12, "sum_squares", "vs double loop (n=%ld, threaded), rel err=%.3g", n,
                fabs(s - ref) / ref);
    x[77] = INFINITY;
    s = BE->sum_squares(BE, x, (size_t)n);
    test_report(isinf(s), "sum_squares(inf)", "an Inf element gives Inf (%g)", s);
    x[78] = NAN;
    s = BE->sum_squares(BE, x, (size_t)n);
    test_report(s != s, "sum_squares(nan)", "a NaN element gives NaN (%g)", s);
    /* ||[3,4,0]|| = 5; max_norm 1: grad *= 1/(5 + 1e-6) -> [0.59999988, 0.79999984, 0] */
    norm = mama_clip_grad_norm(BE, g3, 3, 1.0f);
    e = fabs(norm - 5) + fabs(g3[0] - 3 / (5 + 1e-6)) + fabs(g3[1] - 4 / (5 + 1e-6)) + fabs(g3[2]);
    /* max_norm 10 (> norm) and max_norm 0: untouched */
    norm = mama_clip_grad_norm(BE, g4, 2, 10.0f);
    e += fabs(norm - 5) + fabs(g4[0] - 3) + fabs(g4[1] - 4);
    norm = mama_clip_grad_norm(BE, g4, 2, 0.0f);
    e += fabs(norm - 5) + fabs(g4[0] - 3);
    test_report(e < 1e-6, "mama_clip_grad_norm", "norm 5 clipped to 1 (coef 1/(5+1e-6)); no-op when below / max<=0; err=%.3g",
                e);
    norm = mama_clip_grad_norm(BE, gn, 2, 1.0f);
    test_report(norm != norm && gn[0] == 1.0f, "mama_clip_grad_norm(nan)", "returns NaN, leaves the gradient alone");
    free(x);
}

static void test_lr_cosine(void) {
    /* warmup 10, total 110, peak 1e-3, floor 1e-5 (span 9.9e-4):
     *  step 0 -> 1e-5; step 5 -> 1e-5 + 9.9e-4*0.5 = 5.05e-4; step 10 -> 1e-3;
     *  step 35 (quarter of the cosine) -> 1e-5 + 9.9e-4*(1+cos(pi/4))/2 = 8.5501786e-4;
     *  step 60 (midpoint) -> 5.05e-4; step 110 and beyond -> 1e-5.
     * SPEC A.5: warmup 4000, total 40000, peak 4e-5, floor 1e-8: step 0 -> 1e-8,
     *  step 22000 (midpoint) -> 1e-8 + (4e-5-1e-8)/2 = 2.0005e-5. */
    long steps[7] = {0, 5, 10, 35, 60, 110, 500};
    double want[7] = {1e-5, 5.05e-4, 1e-3, 8.5501786e-4, 5.05e-4, 1e-5, 1e-5};
    double e = 0;
    int i;
    for (i = 0; i < 7; i++) e = fmax(e, fabs(mama_lr_cosine(steps[i], 10, 110, 1e-3f, 1e-5f) - want[i]) / want[i]);
    e = fmax(e, fabs(mama_lr_cosine(0, 4000, 40000, 4e-5f, 1e-8f) - 1e-8) / 1e-8);
    e = fmax(e, fabs(mama_lr_cosine(22000, 4000, 40000, 4e-5f, 1e-8f) - 2.0005e-5) / 2.0005e-5);
    test_report(e < 1e-6, "mama_lr_cosine", "hand values at warm-up start/middle/end, cosine quarter/mid/end, after end; "
                "worst rel err=%.3g", e);
}

int main(void) {
    double t0 = mama_time_seconds();
    if (mama_cpu_backend_create(&BE) != MAMA_OK) {
        fprintf(stderr, "mama_cpu_backend_create: %s\n", mama_last_error());
        return 1;
    }
    mama_rng_seed(&R, 42);
    test_bias();
    test_add_accumulate_scale();
    test_gelu_relu();
    test_dropout();
    test_layerscale();
    test_layernorm();
    test_column_sums_bits();
    test_batchnorm();
    test_l2norm();
    test_attention();
    test_meanpool();
    test_embedding();
    test_im2col();
    test_cross_entropy();
    test_segment_max();
    test_adamw();
    test_sgd();
    test_sum_squares_clip();
    test_lr_cosine();
    printf("# test_ops: %.2f s\n", mama_time_seconds() - t0);
    mama_backend_free(BE);
    return test_finish();
}
