/* ---------------------------------------------------------------------------
 * 3.3 CPU kernels: elementwise, normalisation, attention, pooling, losses
 * 3.4 optimisers and schedules
 *
 * Every function here is `mama__cpu_<member>` for one member of struct
 * mama_backend (same parameters), so the CPU table is a list of names.
 * Conventions (see section 1.5): row-major float32; every *_backward
 * ACCUMULATES (+=) into the gradients it writes.
 *
 * Threads: OpenMP on the loops that are large enough to pay for a parallel
 * region (the `if` clauses); the pragmas vanish without -fopenmp.  Loops
 * that reduce over rows into a per-column result (bias, LayerNorm weight,
 * BatchNorm statistics, embedding scatter-add) are split over chunks of
 * columns instead of rows, so no two threads ever write the same float and
 * no per-call scratch memory is needed.
 * ------------------------------------------------------------------------- */

#ifdef _OPENMP
#define MAMA__OPS_PRAGMA(x) _Pragma(#x)
#else
#define MAMA__OPS_PRAGMA(x)
#endif
/* parallel loop over independent iterations when `cond` says it is worth it */
#define MAMA__OPS_PAR_FOR(cond) MAMA__OPS_PRAGMA(omp parallel for schedule(static) if(cond))
#define MAMA__OPS_PAR_FOR_DYN(cond) MAMA__OPS_PRAGMA(omp parallel for schedule(dynamic, 1) if(cond))
/* ask for vectorisation of a short inner loop (-O2 alone often declines) */
#define MAMA__OPS_SIMD MAMA__OPS_PRAGMA(omp simd)
#define MAMA__OPS_SIMD_SUM(v) MAMA__OPS_PRAGMA(omp simd reduction(+:v))

#define MAMA__OPS_MIN_PAR 32768 /* elements below which threads cost more than they save */
#define MAMA__OPS_CCH 64        /* columns per chunk in column-split reductions */

static int mama__ops_min_i(int a, int b) { return a < b ? a : b; }

/* ===== elementwise ===================================================== */

static void mama__cpu_bias_add_forward(mama_backend *be, float *y, const float *b, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * cols;
        int c;
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) yr[c] += b[c];
    }
}

/* db[c] += sum_r dy[r, c]: each thread owns a chunk of columns and walks
 * all rows, summing into a small stack array. */
static void mama__cpu_bias_add_backward(mama_backend *be, float *db, const float *dy, int rows, int cols) {
    int nch = (cols + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH, ch;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, cols - c0), r, c;
        float acc[MAMA__OPS_CCH];
        for (c = 0; c < nc; c++) acc[c] = 0.0f;
        for (r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * cols + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) acc[c] += d[c];
        }
        for (c = 0; c < nc; c++) db[c0 + c] += acc[c];
    }
}

static void mama__cpu_add(mama_backend *be, float *y, const float *a, const float *b, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] = a[i] + b[i];
}

static void mama__cpu_accumulate(mama_backend *be, float *y, const float *x, float alpha, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] += alpha * x[i];
}

static void mama__cpu_scale(mama_backend *be, float *y, float s, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] *= s;
}

/* GELU.  Exact: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),
 *   dy/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi).
 * Tanh form (GPT-2): u = sqrt(2/pi) (x + 0.044715 x^3), y = 0.5 x (1 + tanh u),
 *   dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715 x^2). */
#define MAMA__SQRT1_2 0.70710678118654752440f
#define MAMA__SQRT_2_OVER_PI 0.79788456080286535588f
#define MAMA__INV_SQRT_2PI 0.39894228040143267794f
#define MAMA__GELU_C 0.044715f

static int mama__ops_have_avx2(void);

/* GELU on 8 lanes at a time.  tanh(u) = 1 - 2 / (exp(2u) + 1) and the erf
 * of Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) reduce both forms to one
 * exp, computed by range reduction x = n ln2 + r and a degree-6 polynomial
 * (Cephes' expf coefficients), with 2^n built in the exponent bits.  libm's
 * tanhf/erff are scalar calls and dominated the text tower's time. */
#if defined(MAMA_X86_SIMD)
__attribute__((target("avx2,fma"))) static __m256 mama__exp256(__m256 x) {
    __m256 n, r, p;
    __m256i e;
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
/* tanh(k (x + c x^3)) for the tanh form */
__attribute__((target("avx2,fma"))) static __m256 mama__gelu_tanh256(__m256 v) {
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(MAMA__SQRT_2_OVER_PI),
                             _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(MAMA__GELU_C), _mm256_mul_ps(v, v)), v, v));
    __m256 e = mama__exp256(_mm256_add_ps(u, u)), one = _mm256_set1_ps(1.0f);
    return _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
}
/* Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x), from A&S 7.1.26 */
__attribute__((target("avx2,fma"))) static void mama__gelu_cdf256(__m256 v, __m256 *cdf, __m256 *pdf) {
    __m256 z = _mm256_mul_ps(_mm256_set1_ps(MAMA__SQRT1_2), v);
    __m256 az = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z), one = _mm256_set1_ps(1.0f);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), az, one));
    __m256 ez = mama__exp256(_mm256_mul_ps(_mm256_set1_ps(-1.0f), _mm256_mul_ps(z, z)));
    __m256 poly = _mm256_set1_ps(1.061405429f), erf_abs, erf;
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
    poly = _mm256_mul_ps(poly, t);
    erf_abs = _mm256_fnmadd_ps(poly, ez, one);
    erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, _mm256_set1_ps(-0.0f))); /* sign of z */
    *cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(one, erf));
    *pdf = _mm256_mul_ps(_mm256_set1_ps(MAMA__INV_SQRT_2PI), ez); /* exp(-x^2/2) = exp(-z^2) */
}
/* n/8 vectors, serially; callers split the work across threads (an OpenMP
 * region inside a target("avx2") function is outlined without the target,
 * which clang rejects for vector arguments) */
__attribute__((target("avx2,fma"))) static void mama__gelu_forward_avx2(float *y, const float *x, long long n, int tanh_approx) {
    long long i;
    for (i = 0; i < n / 8; i++) {
        __m256 v = _mm256_loadu_ps(x + 8 * i), half_v = _mm256_mul_ps(_mm256_set1_ps(0.5f), v), g;
        if (tanh_approx) {
            g = _mm256_fmadd_ps(half_v, mama__gelu_tanh256(v), half_v);
        } else {
            __m256 cdf, pdf;
            mama__gelu_cdf256(v, &cdf, &pdf);
            g = _mm256_mul_ps(v, cdf);
        }
        _mm256_storeu_ps(y + 8 * i, g);
    }
}
__attribute__((target("avx2,fma"))) static void mama__gelu_backward_avx2(float *dx, const float *dy, const float *x,
                                                                         long long n, int tanh_approx) {
    long long i;
    for (i = 0; i < n / 8; i++) {
        __m256 v = _mm256_loadu_ps(x + 8 * i), d, one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
        if (tanh_approx) {
            __m256 t = mama__gelu_tanh256(v), v2 = _mm256_mul_ps(v, v);
            __m256 du = _mm256_mul_ps(_mm256_set1_ps(MAMA__SQRT_2_OVER_PI),
                                      _mm256_fmadd_ps(_mm256_set1_ps(3.0f * MAMA__GELU_C), v2, one));
            /* 0.5 (1 + t) + 0.5 v (1 - t^2) du */
            d = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_fnmadd_ps(t, t, one)), du,
                                _mm256_mul_ps(half, _mm256_add_ps(one, t)));
        } else {
            __m256 cdf, pdf;
            mama__gelu_cdf256(v, &cdf, &pdf);
            d = _mm256_fmadd_ps(v, pdf, cdf);
        }
        _mm256_storeu_ps(dx + 8 * i, _mm256_fmadd_ps(_mm256_loadu_ps(dy + 8 * i), d, _mm256_loadu_ps(dx + 8 * i)));
    }
}
#endif

static void mama__cpu_gelu_forward(mama_backend *be, float *y, const float *x, size_t n, int tanh_approx) {
    long long i, nn = (long long)n, start = 0;
    (void)be;
#if defined(MAMA_X86_SIMD)
    if (mama__ops_have_avx2()) {
        long long c, chunks = (nn / 8 * 8 + 4095) / 4096;
        MAMA__OPS_PAR_FOR(nn > 4 * 4096)
        for (c = 0; c < chunks; c++) {
            long long lo = c * 4096, len = nn / 8 * 8 - lo < 4096 ? nn / 8 * 8 - lo : 4096;
            mama__gelu_forward_avx2(y + lo, x + lo, len, tanh_approx);
        }
        start = nn / 8 * 8;
    }
#endif
    if (tanh_approx) {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i], u = MAMA__SQRT_2_OVER_PI * (v + MAMA__GELU_C * v * v * v);
            y[i] = 0.5f * v * (1.0f + tanhf(u));
        }
    } else {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i];
            y[i] = 0.5f * v * (1.0f + erff(v * MAMA__SQRT1_2));
        }
    }
}

static void mama__cpu_gelu_backward(mama_backend *be, float *dx, const float *dy, const float *x, size_t n,
                                    int tanh_approx) {
    long long i, nn = (long long)n, start = 0;
    (void)be;
#if defined(MAMA_X86_SIMD)
    if (mama__ops_have_avx2()) {
        long long c, chunks = (nn / 8 * 8 + 4095) / 4096;
        MAMA__OPS_PAR_FOR(nn > 4 * 4096)
        for (c = 0; c < chunks; c++) {
            long long lo = c * 4096, len = nn / 8 * 8 - lo < 4096 ? nn / 8 * 8 - lo : 4096;
            mama__gelu_backward_avx2(dx + lo, dy + lo, x + lo, len, tanh_approx);
        }
        start = nn / 8 * 8;
    }
#endif
    if (tanh_approx) {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i], v2 = v * v;
            float t = tanhf(MAMA__SQRT_2_OVER_PI * (v + MAMA__GELU_C * v2 * v));
            float du = MAMA__SQRT_2_OVER_PI * (1.0f + 3.0f * MAMA__GELU_C * v2);
            dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
        }
    } else {
        MAMA__OPS_PAR_FOR(nn - start > 4096)
        for (i = start; i < nn; i++) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + erff(v * MAMA__SQRT1_2));
            float pdf = MAMA__INV_SQRT_2PI * expf(-0.5f * v * v);
            dx[i] += dy[i] * (cdf + v * pdf);
        }
    }
}

static void mama__cpu_relu_forward(mama_backend *be, float *y, const float *x, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* the output decides: y > 0 exactly where x > 0, so x need not be kept */
static void mama__cpu_relu_backward(mama_backend *be, float *dx, const float *dy, const float *y, size_t n) {
    long long i, nn = (long long)n;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}

/* Inverted dropout: keep element i iff hash(seed, i) >= p and scale the
 * kept ones by 1/(1-p), so the expectation is unchanged and evaluation
 * needs no rescaling.  p <= 0 is an exact copy, p >= 1 drops everything. */
static void mama__cpu_dropout_forward(mama_backend *be, float *y, const float *x, size_t n, float p, uint64_t seed) {
    long long i, nn = (long long)n;
    (void)be;
    if (p <= 0.0f) {
        if (y != x) memmove(y, x, n * sizeof(float));
        return;
    }
    if (p >= 1.0f) {
        memset(y, 0, n * sizeof(float));
        return;
    }
    {
        float s = 1.0f / (1.0f - p);
        MAMA__OPS_PAR_FOR(nn > 4096)
        for (i = 0; i < nn; i++) y[i] = mama_hash_uniform(seed, (uint64_t)i) >= p ? x[i] * s : 0.0f;
    }
}

static void mama__cpu_dropout_backward(mama_backend *be, float *dx, const float *dy, size_t n, float p,
                                       uint64_t seed) {
    long long i, nn = (long long)n;
    (void)be;
    if (p >= 1.0f) return;
    if (p <= 0.0f) {
        MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
        for (i = 0; i < nn; i++) dx[i] += dy[i];
        return;
    }
    {
        float s = 1.0f / (1.0f - p);
        MAMA__OPS_PAR_FOR(nn > 4096)
        for (i = 0; i < nn; i++)
            if (mama_hash_uniform(seed, (uint64_t)i) >= p) dx[i] += dy[i] * s;
    }
}

static void mama__cpu_layerscale_forward(mama_backend *be, float *y, const float *x, const float *gamma, int rows,
                                         int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        int c;
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) yr[c] = xr[c] * gamma[c];
    }
}

/* dx += dy * gamma;  dgamma[c] += sum_r dy[r,c] x[r,c] (column chunks). */
static void mama__cpu_layerscale_backward(mama_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                                          const float *gamma, int rows, int cols) {
    int r, ch, nch = (cols + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH;
    (void)be;
    if (dx) {
        MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
        for (r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * cols;
            float *o = dx + (size_t)r * cols;
            int c;
            MAMA__OPS_SIMD
            for (c = 0; c < cols; c++) o[c] += d[c] * gamma[c];
        }
    }
    if (!dgamma) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, cols - c0), rr, c;
        float acc[MAMA__OPS_CCH];
        for (c = 0; c < nc; c++) acc[c] = 0.0f;
        for (rr = 0; rr < rows; rr++) {
            const float *d = dy + (size_t)rr * cols + c0, *xr = x + (size_t)rr * cols + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) acc[c] += d[c] * xr[c];
        }
        for (c = 0; c < nc; c++) dgamma[c0 + c] += acc[c];
    }
}

/* ===== normalisation =================================================== */

/* LayerNorm over each row: xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps)
 * with the biased variance (PyTorch), y = xhat * w + b.  Two passes (mean,
 * then squared deviations) avoid the cancellation of E[x^2] - E[x]^2.
 * w, b may be NULL (no affine); mean, rstd may be NULL (not saved). */
static void mama__cpu_layernorm_forward(mama_backend *be, float *y, float *mean, float *rstd, const float *x,
                                        const float *w, const float *b, int rows, int cols, float eps) {
    int r;
    (void)be;
    if (cols <= 0) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float m = 0.0f, v = 0.0f, rs;
        int c;
        MAMA__OPS_SIMD_SUM(m)
        for (c = 0; c < cols; c++) m += xr[c];
        m /= (float)cols;
        MAMA__OPS_SIMD_SUM(v)
        for (c = 0; c < cols; c++) {
            float d = xr[c] - m;
            v += d * d;
        }
        v /= (float)cols;
        rs = 1.0f / sqrtf(v + eps);
        if (w && b) {
            MAMA__OPS_SIMD
            for (c = 0; c < cols; c++) yr[c] = (xr[c] - m) * rs * w[c] + b[c];
        } else {
            for (c = 0; c < cols; c++) {
                float n = (xr[c] - m) * rs;
                yr[c] = n * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
            }
        }
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
    }
}

/* LayerNorm backward.  With g = dy * w (gradient at xhat):
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   dw += sum_rows dy * xhat,  db += sum_rows dy.
 * Pass 1 (rows in parallel) writes dx; pass 2 (column chunks in parallel)
 * the parameter sums, re-deriving xhat from the saved mean and rstd. */
static void mama__cpu_layernorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const float *mean, const float *rstd,
                                         int rows, int cols) {
    int r, ch, nch = (cols + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH;
    (void)be;
    if (cols <= 0) return;
    if (dx) {
        MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
        for (r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * cols, *d = dy + (size_t)r * cols;
            float *o = dx + (size_t)r * cols;
            float m = mean[r], rs = rstd[r], gm = 0.0f, gxm = 0.0f;
            int c;
            if (w) {
                MAMA__OPS_SIMD_SUM(gm)
                for (c = 0; c < cols; c++) gm += d[c] * w[c];
                MAMA__OPS_SIMD_SUM(gxm)
                for (c = 0; c < cols; c++) gxm += d[c] * w[c] * (xr[c] - m) * rs;
                gm /= (float)cols;
                gxm /= (float)cols;
                MAMA__OPS_SIMD
                for (c = 0; c < cols; c++) o[c] += rs * (d[c] * w[c] - gm - (xr[c] - m) * rs * gxm);
            } else {
                MAMA__OPS_SIMD_SUM(gm)
                for (c = 0; c < cols; c++) gm += d[c];
                MAMA__OPS_SIMD_SUM(gxm)
                for (c = 0; c < cols; c++) gxm += d[c] * (xr[c] - m) * rs;
                gm /= (float)cols;
                gxm /= (float)cols;
                MAMA__OPS_SIMD
                for (c = 0; c < cols; c++) o[c] += rs * (d[c] - gm - (xr[c] - m) * rs * gxm);
            }
        }
    }
    if (!dw && !db) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, cols - c0), rr, c;
        float aw[MAMA__OPS_CCH], ab[MAMA__OPS_CCH];
        for (c = 0; c < nc; c++) aw[c] = ab[c] = 0.0f;
        for (rr = 0; rr < rows; rr++) {
            const float *d = dy + (size_t)rr * cols + c0, *xr = x + (size_t)rr * cols + c0;
            float m = mean[rr], rs = rstd[rr];
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) {
                aw[c] += d[c] * (xr[c] - m) * rs;
                ab[c] += d[c];
            }
        }
        for (c = 0; c < nc; c++) {
            if (dw) dw[c0 + c] += aw[c];
            if (db) db[c0 + c] += ab[c];
        }
    }
}

/* BatchNorm over the rows of each column (channel), PyTorch semantics.
 *   train: mean, biased var of the batch normalise; the running statistics
 *          move by `momentum` towards the batch mean and the UNBIASED
 *          variance (var * n/(n-1); with one row the biased one, 0):
 *          running = (1 - momentum) * running + momentum * batch.
 *          running_mean/var may be NULL (no tracking).
 *   eval:  the running statistics normalise (batch statistics if they are
 *          NULL); nothing is updated.
 * Saved for the backward: mean[c] and rstd[c] = 1/sqrt(var + eps).  In eval
 * mode rstd is stored NEGATED: the sign tells batchnorm_backward (whose
 * signature has no train flag) that the statistics were constants, so it
 * back-propagates dx = dy * w * |rstd| only.  Statistics are accumulated in
 * double (a channel may span ~50k rows). */
static void mama__cpu_batchnorm_forward(mama_backend *be, float *y, float *mean, float *rstd, float *running_mean,
                                        float *running_var, const float *x, const float *w, const float *b, int rows,
                                        int cols, float eps, float momentum, int train) {
    int ch, nch = (cols + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH;
    int use_batch = train || !running_mean || !running_var;
    (void)be;
    if (rows <= 0 || cols <= 0) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, cols - c0), r, c;
        float mu[MAMA__OPS_CCH], rs[MAMA__OPS_CCH], sc[MAMA__OPS_CCH], sh[MAMA__OPS_CCH];
        if (use_batch) {
            double s[MAMA__OPS_CCH], q[MAMA__OPS_CCH];
            for (c = 0; c < nc; c++) s[c] = q[c] = 0.0;
            for (r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * cols + c0;
                for (c = 0; c < nc; c++) s[c] += xr[c];
            }
            for (c = 0; c < nc; c++) s[c] /= rows; /* s is now the mean */
            for (r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * cols + c0;
                for (c = 0; c < nc; c++) {
                    double d = xr[c] - s[c];
                    q[c] += d * d;
                }
            }
            for (c = 0; c < nc; c++) {
                double var = q[c] / rows;
                mu[c] = (float)s[c];
                rs[c] = (float)(1.0 / sqrt(var + eps));
                if (train && running_mean && running_var) {
                    double unb = rows > 1 ? q[c] / (rows - 1) : var;
                    running_mean[c0 + c] = (float)((1.0 - momentum) * running_mean[c0 + c] + momentum * s[c]);
                    running_var[c0 + c] = (float)((1.0 - momentum) * running_var[c0 + c] + momentum * unb);
                }
            }
        } else {
            for (c = 0; c < nc; c++) {
                mu[c] = running_mean[c0 + c];
                rs[c] = (float)(1.0 / sqrt((double)running_var[c0 + c] + eps));
            }
        }
        /* y = (x - mu) * rs * w + b = x * sc + sh */
        for (c = 0; c < nc; c++) {
            float wc = w ? w[c0 + c] : 1.0f, bc = b ? b[c0 + c] : 0.0f;
            sc[c] = rs[c] * wc;
            sh[c] = bc - mu[c] * sc[c];
            if (mean) mean[c0 + c] = mu[c];
            if (rstd) rstd[c0 + c] = train ? rs[c] : -rs[c];
        }
        for (r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * cols + c0;
            float *yr = y + (size_t)r * cols + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) yr[c] = xr[c] * sc[c] + sh[c];
        }
    }
}

/* BatchNorm backward.  Train (rstd > 0), with xhat = (x - mean) rstd:
 *   dx = w rstd (dy - mean_rows(dy) - xhat mean_rows(dy xhat))
 * (the full gradient through the batch mean and variance).  Eval (rstd
 * stored negated, see the forward): the statistics are constants,
 *   dx = dy w |rstd|.
 * Both: dw += sum_rows dy xhat, db += sum_rows dy.  dx, dw, db may be NULL. */
static void mama__cpu_batchnorm_backward(mama_backend *be, float *dx, float *dw, float *db, const float *dy,
                                         const float *x, const float *w, const float *mean, const float *rstd,
                                         int rows, int cols) {
    int ch, nch = (cols + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH;
    (void)be;
    if (rows <= 0 || cols <= 0) return;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, cols - c0), r, c;
        double sd[MAMA__OPS_CCH], sdx[MAMA__OPS_CCH];
        float mu[MAMA__OPS_CCH], rs[MAMA__OPS_CCH], k1[MAMA__OPS_CCH], k2[MAMA__OPS_CCH], wr[MAMA__OPS_CCH];
        int ev[MAMA__OPS_CCH];
        for (c = 0; c < nc; c++) {
            sd[c] = sdx[c] = 0.0;
            mu[c] = mean[c0 + c];
            ev[c] = rstd[c0 + c] < 0.0f;
            rs[c] = ev[c] ? -rstd[c0 + c] : rstd[c0 + c];
        }
        for (r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * cols + c0, *xr = x + (size_t)r * cols + c0;
            for (c = 0; c < nc; c++) {
                sd[c] += d[c];
                sdx[c] += (double)d[c] * ((xr[c] - mu[c]) * rs[c]);
            }
        }
        for (c = 0; c < nc; c++) {
            if (dw) dw[c0 + c] += (float)sdx[c];
            if (db) db[c0 + c] += (float)sd[c];
            wr[c] = (w ? w[c0 + c] : 1.0f) * rs[c];
            /* dx = wr * (dy - k1 - xhat * k2); eval: k1 = k2 = 0 */
            k1[c] = ev[c] ? 0.0f : (float)(sd[c] / rows);
            k2[c] = ev[c] ? 0.0f : (float)(sdx[c] / rows);
        }
        if (!dx) continue;
        for (r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * cols + c0, *xr = x + (size_t)r * cols + c0;
            float *o = dx + (size_t)r * cols + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) o[c] += wr[c] * (d[c] - k1[c] - (xr[c] - mu[c]) * rs[c] * k2[c]);
        }
    }
}

/* L2 normalisation (F.normalize): y = x / max(||x||, 1e-12), norm = ||x||.
 * Backward, n = ||x|| > 1e-12:  dx = (dy - y (dy . y)) / n;
 * below the clamp the denominator is a constant: dx = dy / 1e-12. */
#define MAMA__L2_EPS 1e-12f
static void mama__cpu_l2norm_forward(mama_backend *be, float *y, float *norm, const float *x, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float s = 0.0f, n, inv;
        int c;
        MAMA__OPS_SIMD_SUM(s)
        for (c = 0; c < cols; c++) s += xr[c] * xr[c];
        n = sqrtf(s);
        inv = 1.0f / (n > MAMA__L2_EPS ? n : MAMA__L2_EPS);
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) yr[c] = xr[c] * inv;
        if (norm) norm[r] = n;
    }
}

static void mama__cpu_l2norm_backward(mama_backend *be, float *dx, const float *dy, const float *y, const float *norm,
                                      int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *d = dy + (size_t)r * cols, *yr = y + (size_t)r * cols;
        float *o = dx + (size_t)r * cols;
        float n = norm[r], dot = 0.0f, inv;
        int c;
        if (n > MAMA__L2_EPS) {
            MAMA__OPS_SIMD_SUM(dot)
            for (c = 0; c < cols; c++) dot += d[c] * yr[c];
            inv = 1.0f / n;
        } else {
            inv = 1.0f / MAMA__L2_EPS;
        }
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) o[c] += (d[c] - yr[c] * dot) * inv;
    }
}

/* ===== attention ======================================================== */
/* Fused multi-head attention, FlashAttention-2 style, on the CPU.
 *
 * Forward, per (batch b, head h, tile of up to 64 queries), all in stack
 * tiles: walk the keys in blocks of BK = 64; S = scale * Q K^T for the
 * block; keep for each query a running max m and running sum l of
 * exp(s - m) ("online softmax"); when the max grows by d, rescale l and the
 * output accumulator O by exp(-d).  At the end O /= l and lse = m + log l.
 * Dropout multiplies the normalised weights that meet V (inverted:
 * keep / (1-p)), so l and lse are those of the undropped softmax.
 *
 * Backward, per (b, h) (one thread owns that head's columns of dqkv, so
 * dQ, dK and dV accumulate in place without races), per key block (its K
 * and V are transposed once), per query tile, recomputing P = exp(S - lse):
 *   dPd = dO V^T (gradient of the dropped weights), dP = dPd * z (z = keep/(1-p))
 *   D_i = sum_j P_ij dP_ij = dO_i . out_i,  dS = P (dP - D_i)
 *   dQ += scale dS K,  dK += scale dS^T Q,  dV += (P z)^T dO.
 * Nothing of size T x T is ever stored; no heap is used.
 *
 * Masks: key j is visible to query i iff key_valid[b*T+j] (when given) and,
 * if causal, j <= i.  A query that sees no key gets out = 0, lse = -inf, and
 * no gradient (the backward skips rows whose lse is not finite).
 *
 * The matrix pieces are two micro-kernels: qk (rows of A times a transposed
 * block, 64 outputs per row) and pv (C += A B, B read row by row), plus a
 * vectorised exp; AVX2/FMA versions are chosen at run time, with portable
 * fallbacks. */
#define MAMA__ATT_BK 64      /* keys per block (fixed: the kernels unroll it) */
#define MAMA__ATT_BQF 64     /* queries per forward tile */
#define MAMA__ATT_BQB 32     /* queries per backward tile */
#define MAMA__ATT_DC 256     /* head-dim columns transposed at a time */
#define MAMA__ATT_OBUF 16384 /* floats in the forward's [rows][hd] accumulator */

static int mama__ops_have_avx2(void) {
#if defined(MAMA_X86_SIMD)
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
#else
    return 0;
#endif
}

/* S[r][j] (+)= sum_{d<dc} A[r*lda + d] * Kt[d*BK + j] for r < nr, j < BK. */
static void mama__att_qk_scalar(float *S, const float *A, int lda, const float *Kt, int nr, int dc, int acc) {
    int r, d, j;
    for (r = 0; r < nr; r++) {
        float *s = S + r * MAMA__ATT_BK;
        const float *q = A + (size_t)r * lda;
        if (!acc)
            for (j = 0; j < MAMA__ATT_BK; j++) s[j] = 0.0f;
        for (d = 0; d < dc; d++) {
            float qd = q[d];
            const float *kt = Kt + d * MAMA__ATT_BK;
            MAMA__OPS_SIMD
            for (j = 0; j < MAMA__ATT_BK; j++) s[j] += qd * kt[j];
        }
    }
}

/* C[r*ldc + c] += sum_{s<ns} A[r*lda + s] * B[s*ldb + c] for r < nr, c < n. */
static void mama__att_pv_scalar(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int nr, int ns,
                                int n) {
    int r, s, c;
    for (r = 0; r < nr; r++) {
        float *cr = C + (size_t)r * ldc;
        for (s = 0; s < ns; s++) {
            float a = A[(size_t)r * lda + s];
            const float *br = B + (size_t)s * ldb;
            if (a == 0.0f) continue; /* masked / causal / dropped weights */
            MAMA__OPS_SIMD
            for (c = 0; c < n; c++) cr[c] += a * br[c];
        }
    }
}

/* s[j] = exp(s[j] - m) for j < n; returns the sum (exp(-inf) = 0). */
static float mama__att_exp_sum_scalar(float *s, int n, float m) {
    float sum = 0.0f;
    int j;
    for (j = 0; j < n; j++) {
        float e = expf(s[j] - m);
        s[j] = e;
        sum += e;
    }
    return sum;
}

#if defined(MAMA_X86_SIMD)
/* two rows x 32 outputs per pass: 8 accumulators, 6 loads per 8 FMAs */
__attribute__((target("avx2,fma"))) static void mama__att_qk_avx2(float *S, const float *A, int lda, const float *Kt,
                                                                    int nr, int dc, int acc) {
    int r, d, h;
    for (r = 0; r + 2 <= nr; r += 2) {
        const float *q0 = A + (size_t)r * lda, *q1 = q0 + lda;
        for (h = 0; h < MAMA__ATT_BK; h += 32) {
            float *s0 = S + r * MAMA__ATT_BK + h, *s1 = s0 + MAMA__ATT_BK;
            __m256 x0, x1, x2, x3, y0, y1, y2, y3;
            if (acc) {
                x0 = _mm256_loadu_ps(s0); x1 = _mm256_loadu_ps(s0 + 8);
                x2 = _mm256_loadu_ps(s0 + 16); x3 = _mm256_loadu_ps(s0 + 24);
                y0 = _mm256_loadu_ps(s1); y1 = _mm256_loadu_ps(s1 + 8);
                y2 = _mm256_loadu_ps(s1 + 16); y3 = _mm256_loadu_ps(s1 + 24);
            } else {
                x0 = x1 = x2 = x3 = y0 = y1 = y2 = y3 = _mm256_setzero_ps();
            }
            for (d = 0; d < dc; d++) {
                const float *kt = Kt + d * MAMA__ATT_BK + h;
                __m256 k0 = _mm256_loadu_ps(kt), k1 = _mm256_loadu_ps(kt + 8);
                __m256 k2 = _mm256_loadu_ps(kt + 16), k3 = _mm256_loadu_ps(kt + 24);
                __m256 a = _mm256_set1_ps(q0[d]), b = _mm256_set1_ps(q1[d]);
                x0 = _mm256_fmadd_ps(a, k0, x0); x1 = _mm256_fmadd_ps(a, k1, x1);
                x2 = _mm256_fmadd_ps(a, k2, x2); x3 = _mm256_fmadd_ps(a, k3, x3);
                y0 = _mm256_fmadd_ps(b, k0, y0); y1 = _mm256_fmadd_ps(b, k1, y1);
                y2 = _mm256_fmadd_ps(b, k2, y2); y3 = _mm256_fmadd_ps(b, k3, y3);
            }
            _mm256_storeu_ps(s0, x0); _mm256_storeu_ps(s0 + 8, x1);
            _mm256_storeu_ps(s0 + 16, x2); _mm256_storeu_ps(s0 + 24, x3);
            _mm256_storeu_ps(s1, y0); _mm256_storeu_ps(s1 + 8, y1);
            _mm256_storeu_ps(s1 + 16, y2); _mm256_storeu_ps(s1 + 24, y3);
        }
    }
    if (r < nr) mama__att_qk_scalar(S + r * MAMA__ATT_BK, A + (size_t)r * lda, lda, Kt, nr - r, dc, acc);
}

/* four rows x 16 columns per pass: 8 accumulators, 6 loads per 8 FMAs */
__attribute__((target("avx2,fma"))) static void mama__att_pv_avx2(float *C, int ldc, const float *A, int lda,
                                                                    const float *B, int ldb, int nr, int ns, int n) {
    int r, s, c0;
    for (r = 0; r + 4 <= nr; r += 4) {
        float *c_0 = C + (size_t)r * ldc, *c_1 = c_0 + ldc, *c_2 = c_1 + ldc, *c_3 = c_2 + ldc;
        const float *a0 = A + (size_t)r * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        for (c0 = 0; c0 + 16 <= n; c0 += 16) {
            __m256 x00 = _mm256_loadu_ps(c_0 + c0), x01 = _mm256_loadu_ps(c_0 + c0 + 8);
            __m256 x10 = _mm256_loadu_ps(c_1 + c0), x11 = _mm256_loadu_ps(c_1 + c0 + 8);
            __m256 x20 = _mm256_loadu_ps(c_2 + c0), x21 = _mm256_loadu_ps(c_2 + c0 + 8);
            __m256 x30 = _mm256_loadu_ps(c_3 + c0), x31 = _mm256_loadu_ps(c_3 + c0 + 8);
            for (s = 0; s < ns; s++) {
                const float *br = B + (size_t)s * ldb + c0;
                __m256 b0 = _mm256_loadu_ps(br), b1 = _mm256_loadu_ps(br + 8), a;
                a = _mm256_set1_ps(a0[s]);
                x00 = _mm256_fmadd_ps(a, b0, x00); x01 = _mm256_fmadd_ps(a, b1, x01);
                a = _mm256_set1_ps(a1[s]);
                x10 = _mm256_fmadd_ps(a, b0, x10); x11 = _mm256_fmadd_ps(a, b1, x11);
                a = _mm256_set1_ps(a2[s]);
                x20 = _mm256_fmadd_ps(a, b0, x20); x21 = _mm256_fmadd_ps(a, b1, x21);
                a = _mm256_set1_ps(a3[s]);
                x30 = _mm256_fmadd_ps(a, b0, x30); x31 = _mm256_fmadd_ps(a, b1, x31);
            }
            _mm256_storeu_ps(c_0 + c0, x00); _mm256_storeu_ps(c_0 + c0 + 8, x01);
            _mm256_storeu_ps(c_1 + c0, x10); _mm256_storeu_ps(c_1 + c0 + 8, x11);
            _mm256_storeu_ps(c_2 + c0, x20); _mm256_storeu_ps(c_2 + c0 + 8, x21);
            _mm256_storeu_ps(c_3 + c0, x30); _mm256_storeu_ps(c_3 + c0 + 8, x31);
        }
        for (; c0 + 8 <= n; c0 += 8) {
            __m256 x0 = _mm256_loadu_ps(c_0 + c0), x1 = _mm256_loadu_ps(c_1 + c0);
            __m256 x2 = _mm256_loadu_ps(c_2 + c0), x3 = _mm256_loadu_ps(c_3 + c0);
            for (s = 0; s < ns; s++) {
                __m256 b0 = _mm256_loadu_ps(B + (size_t)s * ldb + c0);
                x0 = _mm256_fmadd_ps(_mm256_set1_ps(a0[s]), b0, x0);
                x1 = _mm256_fmadd_ps(_mm256_set1_ps(a1[s]), b0, x1);
                x2 = _mm256_fmadd_ps(_mm256_set1_ps(a2[s]), b0, x2);
                x3 = _mm256_fmadd_ps(_mm256_set1_ps(a3[s]), b0, x3);
            }
            _mm256_storeu_ps(c_0 + c0, x0); _mm256_storeu_ps(c_1 + c0, x1);
            _mm256_storeu_ps(c_2 + c0, x2); _mm256_storeu_ps(c_3 + c0, x3);
        }
        if (c0 < n) mama__att_pv_scalar(C + (size_t)r * ldc + c0, ldc, A + (size_t)r * lda, lda, B + c0, ldb, 4, ns,
                                        n - c0);
    }
    if (r < nr) mama__att_pv_scalar(C + (size_t)r * ldc, ldc, A + (size_t)r * lda, lda, B, ldb, nr - r, ns, n);
}

/* exp by range reduction: x = n ln2 + r, |r| <= ln2/2, exp(r) by the
 * Cephes degree-6 polynomial (~1 ulp), 2^n built in the exponent bits.
 * x is clamped to [-88, 88]; below -87.3 the result is 0 (so -inf -> 0),
 * and NaN stays NaN (max/min return their second operand on NaN). */
__attribute__((target("avx2,fma"))) static float mama__att_exp_sum_avx2(float *s, int n, float m) {
    const __m256 vm = _mm256_set1_ps(m), lo = _mm256_set1_ps(-88.0f), hi = _mm256_set1_ps(88.0f);
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2hi = _mm256_set1_ps(0.693359375f), ln2lo = _mm256_set1_ps(-2.12194440e-4f);
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 acc = _mm256_setzero_ps();
    float tmp[8], sum;
    int j;
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 x = _mm256_sub_ps(_mm256_loadu_ps(s + j), vm), fx, r, y;
        __m256i e;
        x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
        fx = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_fnmadd_ps(fx, ln2hi, x);
        r = _mm256_fnmadd_ps(fx, ln2lo, r);
        y = _mm256_set1_ps(1.9875691500e-4f);
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
        y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
        e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
        y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
        _mm256_storeu_ps(s + j, y);
        acc = _mm256_add_ps(acc, y);
    }
    _mm256_storeu_ps(tmp, acc);
    sum = ((tmp[0] + tmp[1]) + (tmp[2] + tmp[3])) + ((tmp[4] + tmp[5]) + (tmp[6] + tmp[7]));
    return sum + mama__att_exp_sum_scalar(s + j, n - j, m);
}
#endif

static void mama__att_qk(int simd, float *S, const float *A, int lda, const float *Kt, int nr, int dc, int acc) {
#if defined(MAMA_X86_SIMD)
    if (simd) {
        mama__att_qk_avx2(S, A, lda, Kt, nr, dc, acc);
        return;
    }
#endif
    (void)simd;
    mama__att_qk_scalar(S, A, lda, Kt, nr, dc, acc);
}

static void mama__att_pv(int simd, float *C, int ldc, const float *A, int lda, const float *B, int ldb, int nr, int ns,
                         int n) {
#if defined(MAMA_X86_SIMD)
    if (simd) {
        mama__att_pv_avx2(C, ldc, A, lda, B, ldb, nr, ns, n);
        return;
    }
#endif
    (void)simd;
    mama__att_pv_scalar(C, ldc, A, lda, B, ldb, nr, ns, n);
}

static float mama__att_exp_sum(int simd, float *s, int n, float m) {
#if defined(MAMA_X86_SIMD)
    if (simd) return mama__att_exp_sum_avx2(s, n, m);
#endif
    (void)simd;
    return mama__att_exp_sum_scalar(s, n, m);
}

/* Kt[d][j] = K[j*ldk + d0 + d] for d < dc, j < nk; zero for nk <= j < BK.
 * Walks 8 keys at a time so each Kt row gets 8 consecutive stores. */
static void mama__att_transpose(float *Kt, const float *K, int ldk, int nk, int d0, int dc) {
    int j, d, jj;
    for (j = 0; j + 8 <= nk; j += 8) {
        const float *k = K + (size_t)j * ldk + d0;
        for (d = 0; d < dc; d++) {
            float *o = Kt + d * MAMA__ATT_BK + j;
            for (jj = 0; jj < 8; jj++) o[jj] = k[(size_t)jj * ldk + d];
        }
    }
    for (; j < nk; j++)
        for (d = 0; d < dc; d++) Kt[d * MAMA__ATT_BK + j] = K[(size_t)j * ldk + d0 + d];
    for (; j < MAMA__ATT_BK; j++)
        for (d = 0; d < dc; d++) Kt[d * MAMA__ATT_BK + j] = 0.0f;
}

/* S = A K^T for rows of A and one key block, head-dim chunk by chunk
 * (the K rows, stride ldk, are transposed into the Kt scratch). */
static void mama__att_scores(int simd, float *S, float *Kt, const float *A, int lda, const float *K, int ldk, int nr,
                             int nk, int hd) {
    int d0;
    for (d0 = 0; d0 < hd; d0 += MAMA__ATT_DC) {
        int dc = mama__ops_min_i(MAMA__ATT_DC, hd - d0);
        mama__att_transpose(Kt, K, ldk, nk, d0, dc);
        mama__att_qk(simd, S, A + d0, lda, Kt, nr, dc, d0 > 0);
    }
}

/* forward query-tile rows: at most BQF, and rows*hd must fit the accumulator */
static int mama__att_tile_rows(int hd) {
    int bq = MAMA__ATT_OBUF / (hd > 0 ? hd : 1);
    return bq < MAMA__ATT_BQF ? bq : MAMA__ATT_BQF;
}

static void mama__att_forward_tile(int simd, float *out, float *lse, const float *qkv, const int *key_valid, int b,
                                   int h, int i0, int nq, int T, int H, int hd, int causal, float scale, float p,
                                   uint64_t seed) {
    float Kt[MAMA__ATT_DC * MAMA__ATT_BK];
    float S[MAMA__ATT_BQF * MAMA__ATT_BK];
    float O[MAMA__ATT_OBUF];
    float m[MAMA__ATT_BQF], l[MAMA__ATT_BQF];
    const int D = H * hd, ld = 3 * D;
    const float *Q = qkv + (size_t)(b * T + i0) * ld + h * hd;
    const float *K = qkv + (size_t)b * T * ld + D + h * hd;
    const float *V = K + D;
    const int *kv = key_valid ? key_valid + (size_t)b * T : NULL;
    int kend = causal ? mama__ops_min_i(T, i0 + nq) : T;
    float zscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    uint64_t drop_base = ((uint64_t)b * H + h) * (uint64_t)T;
    int r, j0, jj, c;
    for (r = 0; r < nq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(O, 0, sizeof(float) * (size_t)nq * hd);
    for (j0 = 0; j0 < kend; j0 += MAMA__ATT_BK) {
        int nk = mama__ops_min_i(MAMA__ATT_BK, kend - j0);
        mama__att_scores(simd, S, Kt, Q, ld, K + (size_t)j0 * ld, ld, nq, nk, hd);
        for (r = 0; r < nq; r++) {
            float *s = S + r * MAMA__ATT_BK;
            int i = i0 + r, jmax = causal ? mama__ops_min_i(nk, i - j0 + 1) : nk;
            float bmax = -INFINITY, mnew, alpha;
            if (jmax < 0) jmax = 0;
            /* scale and mask: invisible keys get -inf (weight exactly 0) */
            for (jj = 0; jj < jmax; jj++) {
                float v = (kv && !kv[j0 + jj]) ? -INFINITY : s[jj] * scale;
                s[jj] = v;
                bmax = v > bmax ? v : bmax;
            }
            if (bmax == -INFINITY) { /* nothing visible in this block */
                memset(s, 0, sizeof(float) * MAMA__ATT_BK);
                continue;
            }
            mnew = m[r] > bmax ? m[r] : bmax;
            alpha = expf(m[r] - mnew); /* 0 on the first visible block */
            if (alpha != 1.0f) {
                float *o = O + (size_t)r * hd;
                l[r] *= alpha;
                MAMA__OPS_SIMD
                for (c = 0; c < hd; c++) o[c] *= alpha;
            }
            l[r] += mama__att_exp_sum(simd, s, jmax, mnew);
            for (jj = jmax; jj < MAMA__ATT_BK; jj++) s[jj] = 0.0f;
            m[r] = mnew;
            if (p > 0.0f) {
                uint64_t base = (drop_base + (uint64_t)i) * (uint64_t)T + (uint64_t)j0;
                for (jj = 0; jj < jmax; jj++)
                    s[jj] = mama_hash_uniform(seed, base + (uint64_t)jj) >= p ? s[jj] * zscale : 0.0f;
            }
        }
        mama__att_pv(simd, O, hd, S, MAMA__ATT_BK, V + (size_t)j0 * ld, ld, nq, nk, hd);
    }
    for (r = 0; r < nq; r++) {
        float *o = out + (size_t)(b * T + i0 + r) * D + h * hd;
        const float *acc = O + (size_t)r * hd;
        float *ls = lse + ((size_t)b * H + h) * T + i0 + r;
        if (l[r] > 0.0f) {
            float inv = 1.0f / l[r];
            for (c = 0; c < hd; c++) o[c] = acc[c] * inv;
            *ls = m[r] + logf(l[r]);
        } else {
            for (c = 0; c < hd; c++) o[c] = 0.0f;
            *ls = -INFINITY;
        }
    }
}

static void mama__cpu_attention_forward(mama_backend *be, float *out, float *lse, const float *qkv,
                                        const int *key_valid, int B, int T, int H, int hd, int causal, float scale,
                                        float dropout_p, uint64_t dropout_seed) {
    int simd = mama__ops_have_avx2();
    int bq, ntile, ntask, t;
    (void)be;
    if (B <= 0 || T <= 0 || H <= 0 || hd <= 0) return;
    if (hd > MAMA__ATT_OBUF) { /* not representable in the fixed tiles */
        MAMA_FAIL(MAMA_ERR_UNSUPPORTED, "attention_forward: head dim %d > %d", hd, MAMA__ATT_OBUF);
        return;
    }
    bq = mama__att_tile_rows(hd);
    ntile = (T + bq - 1) / bq;
    ntask = B * H * ntile;
    MAMA__OPS_PAR_FOR_DYN(ntask > 1 && (long long)T * T * H * B * hd > 200000)
    for (t = 0; t < ntask; t++) {
        int qt = t % ntile, bh = t / ntile, i0 = qt * bq;
        mama__att_forward_tile(simd, out, lse, qkv, key_valid, bh / H, bh % H, i0, mama__ops_min_i(bq, T - i0), T, H,
                               hd, causal, scale, dropout_p, dropout_seed);
    }
}

/* One (b, h): for each key block (K, V transposed once when hd <= DC), for
 * each query tile that can see it, recompute P and accumulate dQ, dK, dV
 * straight into dqkv (this thread owns those columns of batch b). */
static void mama__att_backward_head(int simd, float *dqkv, const float *dout, const float *out, const float *lse,
                                    const float *qkv, const int *key_valid, int b, int h, int T, int H, int hd,
                                    int causal, float scale, float p, uint64_t seed) {
    float Kt[MAMA__ATT_DC * MAMA__ATT_BK], Vt[MAMA__ATT_DC * MAMA__ATT_BK];
    float S[MAMA__ATT_BQB * MAMA__ATT_BK], dP[MAMA__ATT_BQB * MAMA__ATT_BK];
    float dSt[MAMA__ATT_BK * MAMA__ATT_BQB], Pzt[MAMA__ATT_BK * MAMA__ATT_BQB];
    float Di[MAMA__ATT_BQB], Li[MAMA__ATT_BQB];
    const int D = H * hd, ld = 3 * D, bq = MAMA__ATT_BQB, whole = hd <= MAMA__ATT_DC;
    const float *Qb = qkv + (size_t)b * T * ld + h * hd, *Kb = Qb + D, *Vb = Kb + D;
    float *dQb = dqkv + (size_t)b * T * ld + h * hd, *dKb = dQb + D, *dVb = dKb + D;
    const float *dOb = dout + (size_t)b * T * D + h * hd, *Ob = out + (size_t)b * T * D + h * hd;
    const float *Lb = lse + ((size_t)b * H + h) * T;
    const int *kv = key_valid ? key_valid + (size_t)b * T : NULL;
    float zscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    uint64_t drop_base = ((uint64_t)b * H + h) * (uint64_t)T;
    int i0, r, c, j0, jj;
    for (j0 = 0; j0 < T; j0 += MAMA__ATT_BK) {
        int nk = mama__ops_min_i(MAMA__ATT_BK, T - j0), any_key = 0;
        const float *Kj = Kb + (size_t)j0 * ld, *Vj = Vb + (size_t)j0 * ld;
        for (jj = 0; jj < nk && !any_key; jj++) any_key = !kv || kv[j0 + jj];
        if (!any_key) continue; /* a block of padding keys: P = 0 throughout */
        if (whole) {
            mama__att_transpose(Kt, Kj, ld, nk, 0, hd);
            mama__att_transpose(Vt, Vj, ld, nk, 0, hd);
        }
        /* under the causal mask, queries before j0 see none of these keys */
        for (i0 = causal ? j0 : 0; i0 < T; i0 += bq) {
            int nq = mama__ops_min_i(bq, T - i0), any = 0;
            const float *Q = Qb + (size_t)i0 * ld, *dO = dOb + (size_t)i0 * D;
            for (r = 0; r < nq; r++) {
                const float *o = Ob + (size_t)(i0 + r) * D, *g = dO + (size_t)r * D;
                float s = 0.0f;
                for (c = 0; c < hd; c++) s += g[c] * o[c];
                Di[r] = s;
                Li[r] = Lb[i0 + r];
                if (Li[r] > -FLT_MAX && Li[r] < FLT_MAX) any = 1;
                else Li[r] = INFINITY; /* no visible key: P = exp(s - inf) = 0 */
            }
            if (!any) continue;
            if (whole) {
                mama__att_qk(simd, S, Q, ld, Kt, nq, hd, 0);
                mama__att_qk(simd, dP, dO, D, Vt, nq, hd, 0);
            } else {
                mama__att_scores(simd, S, Kt, Q, ld, Kj, ld, nq, nk, hd);
                mama__att_scores(simd, dP, Vt, dO, D, Vj, ld, nq, nk, hd);
            }
            for (r = 0; r < nq; r++) {
                float *s = S + r * MAMA__ATT_BK, *dp = dP + r * MAMA__ATT_BK;
                int i = i0 + r, jmax = causal ? mama__ops_min_i(nk, i - j0 + 1) : nk;
                uint64_t base = (drop_base + (uint64_t)i) * (uint64_t)T + (uint64_t)j0;
                if (jmax < 0) jmax = 0;
                /* P = exp(scale * s - lse) on the visible keys */
                for (jj = 0; jj < jmax; jj++) s[jj] = (kv && !kv[j0 + jj]) ? -INFINITY : s[jj] * scale - Li[r];
                mama__att_exp_sum(simd, s, jmax, 0.0f);
                for (jj = 0; jj < jmax; jj++) {
                    float pij = s[jj], z = 1.0f, ds;
                    if (p > 0.0f) z = mama_hash_uniform(seed, base + (uint64_t)jj) >= p ? zscale : 0.0f;
                    ds = pij * (dp[jj] * z - Di[r]) * scale;
                    s[jj] = ds; /* S now holds scale * dS */
                    dSt[jj * MAMA__ATT_BQB + r] = ds;
                    Pzt[jj * MAMA__ATT_BQB + r] = pij * z;
                }
                for (; jj < nk; jj++) {
                    s[jj] = 0.0f;
                    dSt[jj * MAMA__ATT_BQB + r] = 0.0f;
                    Pzt[jj * MAMA__ATT_BQB + r] = 0.0f;
                }
            }
            /* dQ += dS K;  dK += dS^T Q;  dV += (P z)^T dO */
            mama__att_pv(simd, dQb + (size_t)i0 * ld, ld, S, MAMA__ATT_BK, Kj, ld, nq, nk, hd);
            mama__att_pv(simd, dKb + (size_t)j0 * ld, ld, dSt, MAMA__ATT_BQB, Q, ld, nk, nq, hd);
            mama__att_pv(simd, dVb + (size_t)j0 * ld, ld, Pzt, MAMA__ATT_BQB, dO, D, nk, nq, hd);
        }
    }
}

static void mama__cpu_attention_backward(mama_backend *be, float *dqkv, const float *dout, const float *out,
                                         const float *lse, const float *qkv, const int *key_valid, int B, int T,
                                         int H, int hd, int causal, float scale, float dropout_p,
                                         uint64_t dropout_seed) {
    int simd = mama__ops_have_avx2();
    int t, ntask = B * H;
    (void)be;
    if (B <= 0 || T <= 0 || H <= 0 || hd <= 0 || dropout_p >= 1.0f) return;
    MAMA__OPS_PAR_FOR_DYN(ntask > 1 && (long long)T * T * H * B * hd > 200000)
    for (t = 0; t < ntask; t++)
        mama__att_backward_head(simd, dqkv, dout, out, lse, qkv, key_valid, t / H, t % H, T, H, hd, causal, scale,
                                dropout_p, dropout_seed);
}

/* ===== pooling, embedding, patches ====================================== */

/* Weighted mean over tokens: y[b,c] = sum_t w[b,t] x[b,t,c] / sum_t w[b,t]
 * (w = mask, or all ones).  A sequence whose weights sum to 0 gives y = 0.
 * Parallel over (b, column chunk) so one long sequence still splits. */
#define MAMA__POOL_CCH 256
static float mama__pool_inv_weight(const float *mask, int b, int T) {
    double s = 0.0;
    int t;
    if (!mask) return T > 0 ? 1.0f / (float)T : 0.0f;
    for (t = 0; t < T; t++) s += mask[(size_t)b * T + t];
    return s != 0.0 ? (float)(1.0 / s) : 0.0f;
}

static void mama__cpu_meanpool_forward(mama_backend *be, float *y, const float *x, const float *mask, int B, int T,
                                       int C) {
    int nch = (C + MAMA__POOL_CCH - 1) / MAMA__POOL_CCH, task;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)B * T * C > MAMA__OPS_MIN_PAR)
    for (task = 0; task < B * nch; task++) {
        int b = task / nch, c0 = (task % nch) * MAMA__POOL_CCH, nc = mama__ops_min_i(MAMA__POOL_CCH, C - c0), t, c;
        float inv = mama__pool_inv_weight(mask, b, T);
        float *yr = y + (size_t)b * C + c0;
        for (c = 0; c < nc; c++) yr[c] = 0.0f;
        for (t = 0; t < T; t++) {
            float wt = mask ? mask[(size_t)b * T + t] : 1.0f;
            const float *xr = x + ((size_t)b * T + t) * C + c0;
            if (wt == 0.0f) continue;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) yr[c] += wt * xr[c];
        }
        for (c = 0; c < nc; c++) yr[c] *= inv;
    }
}

/* dx[b,t,c] += dy[b,c] w[b,t] / sum_t w[b,t] */
static void mama__cpu_meanpool_backward(mama_backend *be, float *dx, const float *dy, const float *mask, int B, int T,
                                        int C) {
    int row;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)B * T * C > MAMA__OPS_MIN_PAR)
    for (row = 0; row < B * T; row++) {
        int b = row / T, c;
        float k = (mask ? mask[row] : 1.0f) * mama__pool_inv_weight(mask, b, T);
        const float *d = dy + (size_t)b * C;
        float *o = dx + (size_t)row * C;
        if (k == 0.0f) continue;
        MAMA__OPS_SIMD
        for (c = 0; c < C; c++) o[c] += k * d[c];
    }
}

/* y[i,:] = table[ids[i],:].  The table's row count is not passed: ids must
 * index it (a negative id yields a zero row and no gradient). */
static void mama__cpu_embedding_forward(mama_backend *be, float *y, const int *ids, const float *table, int n, int C) {
    int i;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)n * C > MAMA__OPS_MIN_PAR)
    for (i = 0; i < n; i++) {
        float *yr = y + (size_t)i * C;
        if (ids[i] < 0) memset(yr, 0, sizeof(float) * (size_t)C);
        else memcpy(yr, table + (size_t)ids[i] * C, sizeof(float) * (size_t)C);
    }
}

/* dtable[ids[i],:] += dy[i,:].  Repeated ids would race if rows were split
 * over threads, so the columns are split instead. */
static void mama__cpu_embedding_backward(mama_backend *be, float *dtable, const float *dy, const int *ids, int n,
                                         int C) {
    int nch = (C + MAMA__OPS_CCH - 1) / MAMA__OPS_CCH, ch;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)n * C > MAMA__OPS_MIN_PAR)
    for (ch = 0; ch < nch; ch++) {
        int c0 = ch * MAMA__OPS_CCH, nc = mama__ops_min_i(MAMA__OPS_CCH, C - c0), i, c;
        for (i = 0; i < n; i++) {
            float *o;
            const float *d = dy + (size_t)i * C + c0;
            if (ids[i] < 0) continue;
            o = dtable + (size_t)ids[i] * C + c0;
            MAMA__OPS_SIMD
            for (c = 0; c < nc; c++) o[c] += d[c];
        }
    }
}

/* Patch extraction: patch (b, gy, gx) becomes row (b*GH + gy)*GW + gx with
 * column (c*P + py)*P + px = images[b, c, gy*P + py, gx*P + px], the layout
 * of a conv weight [D, Cin, P, P] flattened.  Rows/columns of pixels beyond
 * the last whole patch are ignored (as a stride-P conv does). */
static void mama__cpu_im2col_patches(mama_backend *be, float *cols, const float *images, int B, int Cin, int H, int W,
                                     int P) {
    int GH, GW, K, row;
    (void)be;
    if (P <= 0) return;
    GH = H / P;
    GW = W / P;
    K = Cin * P * P;
    MAMA__OPS_PAR_FOR((long long)B * GH * GW * K > MAMA__OPS_MIN_PAR)
    for (row = 0; row < B * GH * GW; row++) {
        int b = row / (GH * GW), g = row % (GH * GW), gy = g / GW, gx = g % GW, c, py;
        float *o = cols + (size_t)row * K;
        for (c = 0; c < Cin; c++)
            for (py = 0; py < P; py++)
                memcpy(o + (c * P + py) * P, images + (((size_t)b * Cin + c) * H + (size_t)gy * P + py) * W + (size_t)gx * P,
                       sizeof(float) * (size_t)P);
    }
}

/* ===== losses =========================================================== */

/* loss[r] = logsumexp(l[r,:]) - l[r, t[r]], probs = softmax(l[r,:]) with the
 * max subtracted first.  A target outside [0, cols) (e.g. -100, PyTorch's
 * ignore_index) gives loss 0 and no gradient; the probs are still written. */
static void mama__cpu_cross_entropy_forward(mama_backend *be, float *loss, float *probs, const float *logits,
                                            const int *targets, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > 8192)
    for (r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * cols;
        float *pr = probs + (size_t)r * cols;
        float mx = -INFINITY, inv;
        double sum = 0.0;
        int c, t = targets[r];
        for (c = 0; c < cols; c++) mx = l[c] > mx ? l[c] : mx;
        for (c = 0; c < cols; c++) {
            float e = expf(l[c] - mx);
            pr[c] = e;
            sum += e;
        }
        inv = (float)(1.0 / sum);
        for (c = 0; c < cols; c++) pr[c] *= inv;
        if (loss) loss[r] = (t >= 0 && t < cols) ? (float)(log(sum) + mx - l[t]) : 0.0f;
    }
}

/* dlogits[r,c] += dloss[r] (p[r,c] - [c == t[r]]); dloss NULL means 1. */
static void mama__cpu_cross_entropy_backward(mama_backend *be, float *dlogits, const float *probs, const int *targets,
                                             const float *dloss, int rows, int cols) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        const float *pr = probs + (size_t)r * cols;
        float *d = dlogits + (size_t)r * cols;
        float g = dloss ? dloss[r] : 1.0f;
        int c, t = targets[r];
        if (t < 0 || t >= cols) continue;
        MAMA__OPS_SIMD
        for (c = 0; c < cols; c++) d[c] += g * pr[c];
        d[t] -= g;
    }
}

/* out[r*nseg + s] = max of row r over columns [seg[s], seg[s+1]) and arg the
 * column holding it (first one on ties).  An empty segment gives out = 0 and
 * arg = -1 (callers skip it in their backward). */
static void mama__cpu_segment_max_forward(mama_backend *be, float *out, int *arg, const float *x, int rows, int cols,
                                          const int *seg, int nseg) {
    int r;
    (void)be;
    MAMA__OPS_PAR_FOR((long long)rows * cols > MAMA__OPS_MIN_PAR)
    for (r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        int s;
        for (s = 0; s < nseg; s++) {
            int a = seg[s] < 0 ? 0 : seg[s], e = seg[s + 1] > cols ? cols : seg[s + 1], c, best = -1;
            float mx = 0.0f;
            for (c = a; c < e; c++)
                if (best < 0 || xr[c] > mx) {
                    mx = xr[c];
                    best = c;
                }
            out[(size_t)r * nseg + s] = mx;
            if (arg) arg[(size_t)r * nseg + s] = best;
        }
    }
}

/* ===== 3.4 optimisers and schedules ===================================== */

/* AdamW exactly as torch.optim.AdamW (amsgrad off):
 *   p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 * t counts this parameter's steps from 1 (t < 1 is treated as 1). */
static void mama__cpu_adamw_step(mama_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                                 float beta1, float beta2, float eps, float weight_decay, int t) {
    long long i, nn = (long long)n;
    double bc1, bc2;
    float step_size, bc2_sqrt, decay, omb1 = 1.0f - beta1, omb2 = 1.0f - beta2;
    (void)be;
    if (t < 1) t = 1;
    bc1 = 1.0 - pow((double)beta1, (double)t);
    bc2 = 1.0 - pow((double)beta2, (double)t);
    step_size = (float)(lr / bc1);
    bc2_sqrt = (float)sqrt(bc2);
    decay = 1.0f - lr * weight_decay;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) {
        float gi = g[i], mi, vi;
        mi = beta1 * m[i] + omb1 * gi;
        vi = beta2 * v[i] + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

/* torch.optim.SGD (dampening 0, no Nesterov): d = g + wd p;
 * buf = d on the first step, else momentum buf + d;  p -= lr buf.
 * momentum == 0 (or buf NULL) is plain SGD. */
static void mama__cpu_sgd_step(mama_backend *be, float *p, const float *g, float *buf, size_t n, float lr,
                               float momentum, float weight_decay, int first) {
    long long i, nn = (long long)n;
    int use_buf = momentum != 0.0f && buf != NULL;
    (void)be;
    MAMA__OPS_PAR_FOR(nn > MAMA__OPS_MIN_PAR)
    for (i = 0; i < nn; i++) {
        float d = g[i] + weight_decay * p[i];
        if (use_buf) {
            d = first ? d : momentum * buf[i] + d;
            buf[i] = d;
        }
        p[i] -= lr * d;
    }
}

/* sum of squares in double; a NaN or Inf anywhere makes the result NaN/Inf */
static double mama__cpu_sum_squares(mama_backend *be, const float *x, size_t n) {
    long long i, nn = (long long)n;
    double s = 0.0;
    (void)be;
    MAMA__OPS_PRAGMA(omp parallel for schedule(static) reduction(+:s) if(nn > MAMA__OPS_MIN_PAR))
    for (i = 0; i < nn; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* Linear warm-up then half-cosine decay (SPEC A.5):
 *   step < warmup:  floor + (peak - floor) * step / warmup
 *   else:           floor + (peak - floor) * (1 + cos(pi (step - warmup) / (total - warmup))) / 2
 *   step >= total:  floor. */
MAMA_API float mama_lr_cosine(long step, long warmup, long total, float lr_peak, float lr_floor) {
    double span = (double)lr_peak - (double)lr_floor;
    if (step < 0) step = 0;
    if (step < warmup) return (float)(lr_floor + span * (double)step / (double)warmup);
    if (step >= total) return lr_floor;
    return (float)(lr_floor +
                   span * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)(step - warmup) / (double)(total - warmup))));
}

/* torch.nn.utils.clip_grad_norm_: norm = ||grad||_2 (double sums); when it
 * exceeds max_norm, grad *= max_norm / (norm + 1e-6).  A non-finite norm is
 * returned without touching the gradient, so the caller can skip the step. */
MAMA_API double mama_clip_grad_norm(mama_backend *be, float *grad, size_t n, float max_norm) {
    double norm = sqrt(be ? be->sum_squares(be, grad, n) : mama__cpu_sum_squares(be, grad, n));
    if (max_norm > 0.0f && norm == norm && norm <= DBL_MAX) {
        double coef = (double)max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            if (be) be->scale(be, grad, (float)coef, n);
            else mama__cpu_scale(be, grad, (float)coef, n);
        }
    }
    return norm;
}
