/* mama_verify.h - the PyTorch parity harness of mama.h (`mama forward`):
 *                 one forward and backward of a saved model on a saved
 *                 batch, with every embedding, loss, gradient and BatchNorm
 *                 buffer written to safetensors, so that tests and tools can
 *                 compare them with the reference implementation's.  A
 *                 companion single-file header: a program that trains or
 *                 embeds with mama.h does not need it.
 *
 * ===========================================================================
 *  USAGE
 * ===========================================================================
 *  mama.h must be included first.  In exactly one C or C++ file:
 *
 *      #include "mama.h"               (MAMA_IMPLEMENTATION in one file)
 *      #define MAMA_VERIFY_IMPLEMENTATION
 *      #include "mama_verify.h"
 *
 *  everywhere else just include both headers.  The implementation uses only
 *  the public API of mama.h, so it may live in a different translation unit
 *  than MAMA_IMPLEMENTATION.  Errors work as in mama.h: the function returns
 *  a mama_status and leaves a message for mama_last_error(); nothing exits
 *  or aborts.
 *
 *      // tests/ref/ writes W and B from PyTorch and compares O with its own
 *      if (mama_verify_forward("w.safetensors", "batch.safetensors", "out.safetensors",
 *                              1, NULL) != MAMA_OK)
 *          fprintf(stderr, "verify: %s\n", mama_last_error());
 *
 *  LICENSE: MIT (see README.md).
 */
#ifndef MAMA_VERIFY_H_INCLUDED
#define MAMA_VERIFY_H_INCLUDED

#ifndef MAMA_H_INCLUDED
#error "mama_verify.h needs mama.h: include mama.h first"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Load weights W (with mama_config metadata) and a batch B (images,
 * ext_images, input_ids, attention_mask) on backend `be` (NULL: the CPU),
 * run one forward and backward in train mode with every dropout off (late:
 * with the multi-view, symmetric and SLA losses), and write O with img_emb,
 * txt_emb, loss, loss_clip, loss_mv, loss_sym, loss_sla (shape [1]),
 * grad.<name> for every trainable parameter and buf.<name> for the
 * BatchNorm running statistics after the step. */
MAMA_API mama_status mama_verify_forward(const char *weights, const char *batch, const char *out, int late,
                                         mama_backend *be);

#ifdef __cplusplus
}
#endif
#endif /* MAMA_VERIFY_H_INCLUDED */

/* ==========================================================================
 * IMPLEMENTATION
 * ========================================================================== */
#ifdef MAMA_VERIFY_IMPLEMENTATION
#ifndef MAMA_VERIFY_IMPLEMENTATION_DONE
#define MAMA_VERIFY_IMPLEMENTATION_DONE

#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

static mama_status mama__verify_read_ints(const mama_safetensors *st, const char *name, int *dst, size_t count) {
    const mama_st_tensor *t = mama_st_find(st, name);
    if (!t) return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' is missing", st->path, name);
    if (t->numel != count)
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: tensor '%s' has %zu elements, expected %zu", st->path, name, t->numel, count);
    return mama_st_read_i32(st, name, (int32_t *)dst, count);
}

static mama_status mama__verify_run(const char *weights, const char *batch, const char *out, int late,
                                    mama_backend *be) {
    mama_safetensors st;
    const mama_st_tensor *ti;
    const mama_config *cfg;
    mama_model *m = NULL;
    mama_batch b;
    mama_step_opts o;
    mama_losses L;
    mama_st_writer *w = NULL;
    float *images = NULL, *ext = NULL, *host = NULL, *emb = NULL;
    int *ids = NULL, *mask = NULL, B, i, T, E, np;
    int64_t shp[2], one = 1;
    float lv[5];
    static const char *const loss_names[5] = {"loss", "loss_clip", "loss_mv", "loss_sym", "loss_sla"};
    char name[256];
    size_t img, total = 0;
    mama_status s;
    memset(&st, 0, sizeof st);
    MAMA_TRY(mama_st_open(&st, batch));
    ti = mama_st_find(&st, "images");
    if (!ti || ti->ndim != 4 || ti->shape[0] < 1) {
        mama_st_close(&st);
        return MAMA_FAIL(MAMA_ERR_SHAPE, "%s: 'images' must be a [B, C, H, W] tensor", batch);
    }
    B = (int)ti->shape[0];
    img = ti->numel / (size_t)B;
    s = mama_model_load(&m, weights, be, B);
    if (s != MAMA_OK) { mama_st_close(&st); return s; }
    cfg = mama_model_config(m);
    T = cfg->context;
    E = cfg->embed_dim;
    if ((int)ti->shape[1] != cfg->in_chans || (int)ti->shape[2] != cfg->image_size || (int)ti->shape[3] != cfg->image_size) {
        s = MAMA_FAIL(MAMA_ERR_SHAPE, "%s: 'images' is [%lld, %lld, %lld, %lld]; the model needs [B, %d, %d, %d]", batch,
                      (long long)ti->shape[0], (long long)ti->shape[1], (long long)ti->shape[2], (long long)ti->shape[3],
                      cfg->in_chans, cfg->image_size, cfg->image_size);
        goto done;
    }
    /* host staging for the float32 tensors written out: gradients of the
     * [train | late] groups and the BatchNorm buffers, at their offsets */
    np = mama_model_param_count(m);
    for (i = 0; i < np; i++) {
        const mama_param_info *p = mama_model_param(m, i);
        if (p->dtype == MAMA_F32 && p->offset + p->numel > total) total = p->offset + p->numel;
    }
#define MAMA__VERIFY_ALLOC(p, n) if ((s = mama_alloc((void **)&(p), (n), "verify buffers")) != MAMA_OK) goto done
    MAMA__VERIFY_ALLOC(images, sizeof(float) * img * B);
    MAMA__VERIFY_ALLOC(ext, sizeof(float) * img * B);
    MAMA__VERIFY_ALLOC(ids, sizeof(int) * (size_t)B * T);
    MAMA__VERIFY_ALLOC(mask, sizeof(int) * (size_t)B * T);
    MAMA__VERIFY_ALLOC(emb, sizeof(float) * (size_t)2 * B * E);
    MAMA__VERIFY_ALLOC(host, sizeof(float) * (total ? total : 1));
#undef MAMA__VERIFY_ALLOC
    if ((s = mama_st_read_f32(&st, "images", images, img * B)) != MAMA_OK) goto done;
    if (late && (s = mama_st_read_f32(&st, "ext_images", ext, img * B)) != MAMA_OK) goto done;
    if ((s = mama__verify_read_ints(&st, "input_ids", ids, (size_t)B * T)) != MAMA_OK) goto done;
    if ((s = mama__verify_read_ints(&st, "attention_mask", mask, (size_t)B * T)) != MAMA_OK) goto done;
    b.B = B; b.images = images; b.ext_images = late ? ext : NULL; b.input_ids = ids; b.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = late;
    o.dropout = MAMA_OFF;
    if ((s = mama_model_step(m, &b, &o, 0, &L)) != MAMA_OK) goto done;
    if ((s = mama_st_writer_create(&w)) != MAMA_OK) goto done;
    if ((s = mama_model_embeddings(m, emb, emb + (size_t)B * E)) != MAMA_OK) goto done;
    shp[0] = B; shp[1] = E;
    if ((s = mama_st_writer_add(w, "img_emb", MAMA_F32, 2, shp, emb)) != MAMA_OK) goto done;
    if ((s = mama_st_writer_add(w, "txt_emb", MAMA_F32, 2, shp, emb + (size_t)B * E)) != MAMA_OK) goto done;
    lv[0] = L.loss; lv[1] = L.clip; lv[2] = L.mv; lv[3] = L.sym; lv[4] = L.sla;
    for (i = 0; i < 5; i++)
        if ((s = mama_st_writer_add(w, loss_names[i], MAMA_F32, 1, &one, &lv[i])) != MAMA_OK) goto done;
    /* gradients share the parameters' offsets; the writer keeps pointers
     * into `host` until it is written */
    for (i = 0; i < np && s == MAMA_OK; i++) {
        const mama_param_info *p = mama_model_param(m, i);
        float *h = host + p->offset;
        if (p->group == MAMA_GROUP_TRAIN || p->group == MAMA_GROUP_LATE) {
            s = be->to_host(be, h, mama_model_grads(m) + p->offset, sizeof(float) * p->numel);
            snprintf(name, sizeof name, "grad.%s", p->name);
        } else if (p->group == MAMA_GROUP_BUFFER) {
            s = be->to_host(be, h, mama_model_params(m) + p->offset, sizeof(float) * p->numel);
            snprintf(name, sizeof name, "buf.%s", p->name);
        } else {
            continue;
        }
        if (s == MAMA_OK) s = mama_st_writer_add(w, name, MAMA_F32, p->ndim, p->shape, h);
    }
    if (s == MAMA_OK) s = mama_st_writer_write(w, out);
done:
    mama_st_writer_free(w);
    mama_st_close(&st);
    mama_model_free(m);
    mama_free(images); mama_free(ext); mama_free(ids); mama_free(mask); mama_free(emb); mama_free(host);
    return s;
}

/* be == NULL: a CPU backend of this call's own. */
MAMA_API mama_status mama_verify_forward(const char *weights, const char *batch, const char *out, int late,
                                         mama_backend *be) {
    mama_backend *own = NULL;
    mama_status s;
    if (!weights || !batch || !out) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_verify_forward: NULL path");
    if (!be) {
        MAMA_TRY(mama_cpu_backend_create(&own));
        be = own;
    }
    s = mama__verify_run(weights, batch, out, late, be);
    mama_backend_free(own);
    return s;
}

#ifdef __cplusplus
}
#endif
#endif /* MAMA_VERIFY_IMPLEMENTATION_DONE */
#endif /* MAMA_VERIFY_IMPLEMENTATION */
