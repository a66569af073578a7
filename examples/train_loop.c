/* examples/train_loop.c - a minimal pretraining loop written against the
 * step-level API (mama_pretrain does all of this and more: a loader thread,
 * checkpoints, logging, non-finite guards).
 *
 *   ./train_loop data/manifest.csv weights/tiny_vocab
 */
#define MAMA_IMPLEMENTATION
#include "../mama.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    mama_backend *cpu = NULL; /* freed at the end (error exits leave it to the OS) */
    mama_config cfg;
    mama_model *model = NULL;
    mama_dataset *data = NULL;
    mama_dataset_opts dopt = {0}; /* options structs: zero = every default */
    mama_adamw opt;
    mama_step_opts so = {0};
    mama_losses L;
    mama_batch batch;
    mama_rng rng;
    const int *train;
    int B = 8, steps = 20, n_train, step, i;
    size_t img;
    float *images, *ext;
    int *ids, *mask;
    if (argc != 3) { fprintf(stderr, "usage: %s manifest.csv tokenizer_dir\n", argv[0]); return 2; }
    mama_config_preset(&cfg, "tiny");
    dopt.manifest = argv[1];
    dopt.tokenizer = argv[2];
    if (mama_cpu_backend_create(&cpu) != MAMA_OK) { fprintf(stderr, "error: %s\n", mama_last_error()); return 1; }
    if (mama_model_create(&model, &cfg, cpu, B, 1) != MAMA_OK ||
        mama_dataset_create(&data, &dopt, &cfg) != MAMA_OK || mama_adamw_init(&opt, model, 0.1f) != MAMA_OK) {
        fprintf(stderr, "error: %s\n", mama_last_error());
        return 1;
    }
    n_train = mama_dataset_pretrain_split(data, MAMA_SPLIT_TRAIN, &train); /* complete records only (SPEC A.7) */
    img = (size_t)cfg.in_chans * cfg.image_size * cfg.image_size;
    images = (float *)malloc(sizeof(float) * img * B);
    ext = (float *)malloc(sizeof(float) * img * B);
    ids = (int *)malloc(sizeof(int) * cfg.context * B);
    mask = (int *)malloc(sizeof(int) * cfg.context * B);
    mama_rng_seed(&rng, 1);
    so.late = 1; /* all four losses from the start; ext = a second augmentation */
    for (step = 0; step < steps; step++) {
        for (i = 0; i < B; i++) {
            int r = train[mama_rng_below(&rng, (uint32_t)n_train)];
            if (mama_dataset_image(data, r, 1, &rng, images + img * i) != MAMA_OK ||
                mama_dataset_image(data, r, 1, &rng, ext + img * i) != MAMA_OK ||
                mama_dataset_caption(data, r, 0.8f, &rng, ids + cfg.context * i, mask + cfg.context * i) != MAMA_OK)
                return fprintf(stderr, "error: %s\n", mama_last_error()), 1;
        }
        batch.B = B; batch.images = images; batch.ext_images = ext; batch.input_ids = ids; batch.attention_mask = mask;
        so.seed = (uint64_t)step;
        if (mama_model_step(model, &batch, &so, 0, &L) != MAMA_OK) return fprintf(stderr, "error: %s\n", mama_last_error()), 1;
        mama_adamw_step(&opt, model, mama_lr_cosine(step, 5, steps, 5e-4f, 1e-6f), 1);
        printf("step %2d  loss %.4f  (clip %.3f  mv %.3f  sym %.3f  sla %.3f)\n", step, L.loss, L.clip, L.mv, L.sym, L.sla);
    }
    free(images); free(ext); free(ids); free(mask);
    mama_adamw_free(&opt);
    mama_dataset_free(data);
    mama_model_free(model);
    mama_backend_free(cpu);
    return 0;
}
