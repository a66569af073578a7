/* examples/zeroshot_image.c - classify one image against given texts.
 *
 *   ./zeroshot_image model.safetensors tokenizer_dir image.png "text 1" "text 2" ...
 *
 * Each text is encoded like a training caption (bos + text with '.'/';'
 * as separators + eos); the scores are exp(logit_scale) * cosine, turned
 * into probabilities with a softmax (SPEC A.7). */
#define MAMA_IMPLEMENTATION
#include "../mama.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    mama_backend *cpu = NULL; /* freed at the end (error exits leave it to the OS) */
    mama_model *model = NULL;
    mama_tokenizer *tok = NULL;
    mama_image img = {0, 0, NULL};
    mama_augment_opts aug = {0}; /* zero: every default (size set below) */
    const mama_config *c;
    float *pixels, *img_emb, *txt_emb, best = -1e30f, sum = 0, scores[16], scale;
    int *ids, *mask, n = argc - 4, i, e;
    if (argc < 5 || n > 16) { fprintf(stderr, "usage: %s model tokenizer image text1 [text2 ... text16]\n", argv[0]); return 2; }
    if (mama_cpu_backend_create(&cpu) != MAMA_OK) { fprintf(stderr, "error: %s\n", mama_last_error()); return 1; }
    if (mama_model_load(&model, argv[1], cpu, n) != MAMA_OK || mama_tokenizer_load(&tok, argv[2]) != MAMA_OK ||
        mama_image_load(argv[3], &img) != MAMA_OK) {
        fprintf(stderr, "error: %s\n", mama_last_error());
        return 1;
    }
    c = mama_model_config(model);
    aug.size = c->image_size;
    pixels = (float *)malloc(sizeof(float) * c->in_chans * c->image_size * c->image_size);
    img_emb = (float *)malloc(sizeof(float) * c->embed_dim);
    txt_emb = (float *)malloc(sizeof(float) * c->embed_dim * n);
    ids = (int *)malloc(sizeof(int) * c->context * n);
    mask = (int *)malloc(sizeof(int) * c->context * n);
    for (i = 0; i < n; i++)
        if (mama_tokenizer_encode_caption(tok, argv[4 + i], c->context, ids + i * c->context, mask + i * c->context, NULL) != MAMA_OK)
            return fprintf(stderr, "error: %s\n", mama_last_error()), 1;
    if (mama_image_pipeline(&img, &aug, 0, NULL, c->in_chans, pixels) != MAMA_OK ||
        mama_encode_images(model, pixels, 1, img_emb, NULL) != MAMA_OK ||
        mama_encode_texts(model, ids, mask, n, txt_emb) != MAMA_OK) {
        fprintf(stderr, "error: %s\n", mama_last_error());
        return 1;
    }
    for (i = 0; i < n; i++) { /* cosine similarity of unit vectors */
        scores[i] = 0;
        for (e = 0; e < c->embed_dim; e++) scores[i] += img_emb[e] * txt_emb[i * c->embed_dim + e];
        if (scores[i] > best) best = scores[i];
    }
    scale = mama_model_logit_scale(model); /* the learnt temperature */
    for (i = 0; i < n; i++) sum += expf(scale * (scores[i] - best));
    for (i = 0; i < n; i++) printf("%.4f  cos %+.4f  %s\n", expf(scale * (scores[i] - best)) / sum, scores[i], argv[4 + i]);
    free(pixels); free(img_emb); free(txt_emb); free(ids); free(mask);
    mama_image_free(&img);
    mama_tokenizer_free(tok);
    mama_model_free(model);
    mama_backend_free(cpu);
    return 0;
}
