/* ---- 3.3b Small ops used by the losses: transposes, segment-max scatter,
 * diagonal masks, dot products.  None is hot; they are kept simple. */
static void mama__cpu_segment_max_backward(mama_backend *be, float *dx, const float *dout, const int *arg,
                                           int rows, int cols, int nseg) {
    int r, s;
    (void)be;
    /* The max picks one element per (row, segment); only it gets gradient
     * (subgradient of max, matching PyTorch's max() which routes to the
     * first maximal index). */
    for (r = 0; r < rows; r++)
        for (s = 0; s < nseg; s++) {
            int c = arg[(size_t)r * nseg + s];
            if (c >= 0 && c < cols) dx[(size_t)r * cols + c] += dout[(size_t)r * nseg + s];
        }
}
static void mama__cpu_transpose(mama_backend *be, float *y, const float *x, int rows, int cols) {
    int r, c;
    (void)be;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
}
static void mama__cpu_fill_diagonal(mama_backend *be, float *x, int n, int ld, float value) {
    int i;
    (void)be;
    for (i = 0; i < n; i++) x[(size_t)i * ld + i] = value;
}
static double mama__cpu_dot(mama_backend *be, const float *a, const float *b, size_t n) {
    double s = 0;
    size_t i;
    (void)be;
    for (i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* ViT token assembly: position embeddings go to cls and patches only; the
 * registers are inserted after (DINOv2 with registers). */
static void mama__cpu_vit_tokens_forward(mama_backend *be, float *x, const float *patches, const float *cls,
                                         const float *reg, const float *pos, int B, int N, int R, int D) {
    int b, t, c, T = 1 + R + N;
    (void)be;
    for (b = 0; b < B; b++) {
        float *xb = x + (size_t)b * T * D;
        for (c = 0; c < D; c++) xb[c] = cls[c] + pos[c];
        for (t = 0; t < R; t++) memcpy(xb + (size_t)(1 + t) * D, reg + (size_t)t * D, sizeof(float) * (size_t)D);
        for (t = 0; t < N; t++) {
            float *row = xb + (size_t)(1 + R + t) * D;
            const float *p = patches + ((size_t)b * N + t) * D, *pe = pos + (size_t)(1 + t) * D;
            for (c = 0; c < D; c++) row[c] = p[c] + pe[c];
        }
    }
}
static void mama__cpu_vit_tokens_backward(mama_backend *be, float *dpatches, float *dcls, float *dreg, float *dpos,
                                          const float *dx, int B, int N, int R, int D) {
    int b, t, c, T = 1 + R + N;
    (void)be;
    for (b = 0; b < B; b++) {
        const float *db = dx + (size_t)b * T * D;
        for (c = 0; c < D; c++) {
            if (dcls) dcls[c] += db[c];
            if (dpos) dpos[c] += db[c];
        }
        if (dreg)
            for (t = 0; t < R; t++)
                for (c = 0; c < D; c++) dreg[(size_t)t * D + c] += db[(size_t)(1 + t) * D + c];
        for (t = 0; t < N; t++) {
            const float *row = db + (size_t)(1 + R + t) * D;
            float *dp = dpatches + ((size_t)b * N + t) * D;
            for (c = 0; c < D; c++) dp[c] += row[c];
            if (dpos)
                for (c = 0; c < D; c++) dpos[(size_t)(1 + t) * D + c] += row[c];
        }
    }
}
