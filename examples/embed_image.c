/* examples/embed_image.c - embed one mammogram with a trained model.
 *
 *   cc -std=c99 -O2 -fopenmp -I.. embed_image.c -o embed_image -lm
 *   ./embed_image model.safetensors image.png
 *
 * Loads the model (its config travels in the file), runs the evaluation
 * image pipeline of SPEC A.5 (letterbox, Otsu crop, stretch, normalise) and
 * prints the L2-normalised image embedding. */
#define MAMA_IMPLEMENTATION
#include "../mama.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    mama_backend *cpu = NULL; /* freed at the end (error exits leave it to the OS) */
    mama_model *model = NULL;
    mama_image img = {0, 0, NULL};
    mama_augment_opts aug = {0}; /* zero: every default (size set below) */
    const mama_config *c;
    float *pixels, *emb;
    int i;
    if (argc != 3) { fprintf(stderr, "usage: %s model.safetensors image.png\n", argv[0]); return 2; }
    if (mama_cpu_backend_create(&cpu) != MAMA_OK) { fprintf(stderr, "error: %s\n", mama_last_error()); return 1; }
    if (mama_model_load(&model, argv[1], cpu, 1) != MAMA_OK ||
        mama_image_load(argv[2], &img) != MAMA_OK) {
        fprintf(stderr, "error: %s\n", mama_last_error());
        return 1;
    }
    c = mama_model_config(model);
    aug.size = c->image_size;
    pixels = (float *)malloc(sizeof(float) * c->in_chans * c->image_size * c->image_size);
    emb = (float *)malloc(sizeof(float) * c->embed_dim);
    if (mama_image_pipeline(&img, &aug, 0, NULL, c->in_chans, pixels) != MAMA_OK ||
        mama_encode_images(model, pixels, 1, emb, NULL) != MAMA_OK) {
        fprintf(stderr, "error: %s\n", mama_last_error());
        return 1;
    }
    for (i = 0; i < c->embed_dim; i++) printf("%s%.6f", i ? " " : "", emb[i]);
    printf("\n");
    free(pixels); free(emb);
    mama_image_free(&img);
    mama_model_free(model);
    mama_backend_free(cpu);
    return 0;
}
