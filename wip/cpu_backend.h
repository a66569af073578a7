/* ---- 3.1 CPU memory: device memory is host memory, so copies are memcpy. */
static mama_status mama__cpu_alloc(mama_backend *be, void **ptr, size_t bytes) {
    (void)be;
    return mama_alloc(ptr, bytes ? bytes : 1, "cpu backend buffer");
}
static void mama__cpu_free(mama_backend *be, void *ptr) { (void)be; mama_free(ptr); }
static mama_status mama__cpu_memcpy(mama_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes && (!dst || !src)) return MAMA_FAIL(MAMA_ERR_INVALID, "cpu copy of %zu bytes with a NULL pointer", bytes);
    if (bytes) memmove(dst, src, bytes);
    return MAMA_OK;
}
static mama_status mama__cpu_zero(mama_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes && !dst) return MAMA_FAIL(MAMA_ERR_INVALID, "cpu zero of %zu bytes at NULL", bytes);
    if (bytes) memset(dst, 0, bytes);
    return MAMA_OK;
}
static mama_status mama__cpu_sync(mama_backend *be) { (void)be; return MAMA_OK; }

/* The table is filled member by member (not with a positional initialiser)
 * so that it reads the same in C and C++ and survives reordering. */
static mama_backend mama__cpu_table;
static int mama__cpu_table_ready = 0;

MAMA_API mama_backend *mama_cpu_backend(void) {
    mama_backend *t = &mama__cpu_table;
    if (mama__cpu_table_ready) return t;
    t->name = "cpu";
    t->impl = NULL;
    t->alloc = mama__cpu_alloc;
    t->free = mama__cpu_free;
    t->to_device = mama__cpu_memcpy;
    t->to_host = mama__cpu_memcpy;
    t->copy = mama__cpu_memcpy;
    t->zero = mama__cpu_zero;
    t->sync = mama__cpu_sync;
    t->gemm = mama__cpu_gemm;
    t->gemm_batched = mama__cpu_gemm_batched;
    t->bias_add_forward = mama__cpu_bias_add_forward;
    t->bias_add_backward = mama__cpu_bias_add_backward;
    t->add = mama__cpu_add;
    t->accumulate = mama__cpu_accumulate;
    t->scale = mama__cpu_scale;
    t->gelu_forward = mama__cpu_gelu_forward;
    t->gelu_backward = mama__cpu_gelu_backward;
    t->relu_forward = mama__cpu_relu_forward;
    t->relu_backward = mama__cpu_relu_backward;
    t->dropout_forward = mama__cpu_dropout_forward;
    t->dropout_backward = mama__cpu_dropout_backward;
    t->layerscale_forward = mama__cpu_layerscale_forward;
    t->layerscale_backward = mama__cpu_layerscale_backward;
    t->layernorm_forward = mama__cpu_layernorm_forward;
    t->layernorm_backward = mama__cpu_layernorm_backward;
    t->batchnorm_forward = mama__cpu_batchnorm_forward;
    t->batchnorm_backward = mama__cpu_batchnorm_backward;
    t->l2norm_forward = mama__cpu_l2norm_forward;
    t->l2norm_backward = mama__cpu_l2norm_backward;
    t->attention_forward = mama__cpu_attention_forward;
    t->attention_backward = mama__cpu_attention_backward;
    t->meanpool_forward = mama__cpu_meanpool_forward;
    t->meanpool_backward = mama__cpu_meanpool_backward;
    t->embedding_forward = mama__cpu_embedding_forward;
    t->embedding_backward = mama__cpu_embedding_backward;
    t->im2col_patches = mama__cpu_im2col_patches;
    t->vit_tokens_forward = mama__cpu_vit_tokens_forward;
    t->vit_tokens_backward = mama__cpu_vit_tokens_backward;
    t->cross_entropy_forward = mama__cpu_cross_entropy_forward;
    t->cross_entropy_backward = mama__cpu_cross_entropy_backward;
    t->segment_max_forward = mama__cpu_segment_max_forward;
    t->segment_max_backward = mama__cpu_segment_max_backward;
    t->transpose = mama__cpu_transpose;
    t->fill_diagonal = mama__cpu_fill_diagonal;
    t->dot = mama__cpu_dot;
    t->adamw_step = mama__cpu_adamw_step;
    t->sgd_step = mama__cpu_sgd_step;
    t->sum_squares = mama__cpu_sum_squares;
    mama__cpu_table_ready = 1;
    return t;
}
