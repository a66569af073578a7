/* bench/bench_loader.c - where the data loader's time goes (issue 15 item 9).
 *
 *   build/bench_loader MANIFEST [N]
 *
 * 1. per image, one thread, over the first N images of the manifest (default
 *    64): read the file, decode (stb_image), letterbox (area resize to the
 *    tiny model's 112 px), Otsu box, stretch (bilinear) -- the deterministic
 *    steps 1-3 of SPEC A.5 that the dataset caches;
 * 2. mama_dataset_create with the cache (every image, all threads);
 * 3. training samples per second from the cache (augmentation + tensor,
 *    mama_dataset_image with train = 1, the default "paper" set).
 * Times are wall-clock seconds on whatever else the machine runs. */
#define MAMA_IMPLEMENTATION
#include "../mama.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    mama_manifest man;
    mama_config c;
    mama_dataset *d = NULL;
    mama_dataset_opts o;
    double t[6] = {0, 0, 0, 0, 0, 0}, t0, t1;
    int n, i, w = 0, h = 0, S;
    float *px;
    mama_rng rng;
    if (argc < 2) { fprintf(stderr, "usage: bench_loader MANIFEST [N]\n"); return 2; }
    n = argc > 2 ? atoi(argv[2]) : 64;
    mama_config_preset(&c, "tiny");
    S = c.image_size;
    if (mama_manifest_load(&man, argv[1], 0) != MAMA_OK) { fprintf(stderr, "%s\n", mama_last_error()); return 1; }
    if (n > man.count) n = man.count;
    for (i = 0; i < n; i++) {
        unsigned char *data = NULL;
        size_t bytes = 0;
        mama_image raw = {0, 0, NULL}, lb = {0, 0, NULL}, out = {0, 0, NULL};
        int box[4];
        t0 = mama_time_seconds();
        if (mama_read_file(man.records[i].path, &data, &bytes) != MAMA_OK) { fprintf(stderr, "%s\n", mama_last_error()); return 1; }
        t1 = mama_time_seconds(); t[0] += t1 - t0; t0 = t1;
        if (mama_image_load_memory(data, bytes, man.records[i].path, &raw) != MAMA_OK) { fprintf(stderr, "%s\n", mama_last_error()); return 1; }
        t1 = mama_time_seconds(); t[1] += t1 - t0; t0 = t1;
        w = raw.w; h = raw.h;
        mama_image_letterbox(&raw, S, &lb, NULL);
        t1 = mama_time_seconds(); t[2] += t1 - t0; t0 = t1;
        if (mama_otsu_threshold(&lb) < 0 || !mama_foreground_box(&lb, mama_otsu_threshold(&lb), box)) {
            box[0] = box[1] = 0; box[2] = lb.w - 1; box[3] = lb.h - 1;
        }
        t1 = mama_time_seconds(); t[3] += t1 - t0; t0 = t1;
        mama_image_resize_bilinear(&lb, box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1, S, S, &out);
        t1 = mama_time_seconds(); t[4] += t1 - t0;
        mama_free(data);
        mama_image_free(&raw); mama_image_free(&lb); mama_image_free(&out);
    }
    printf("images %d (last %d x %d) -> %d px, one thread, ms per image:\n", n, w, h, S);
    printf("  read %.2f  decode %.2f  letterbox %.2f  otsu %.2f  stretch %.2f  total %.2f\n", 1e3 * t[0] / n,
           1e3 * t[1] / n, 1e3 * t[2] / n, 1e3 * t[3] / n, 1e3 * t[4] / n, 1e3 * (t[0] + t[1] + t[2] + t[3] + t[4]) / n);
    mama_dataset_opts_default(&o);
    o.manifest = argv[1];
    t0 = mama_time_seconds();
    if (mama_dataset_create(&d, &o, &c) != MAMA_OK) { fprintf(stderr, "%s\n", mama_last_error()); return 1; }
    t1 = mama_time_seconds();
    printf("dataset create (cache, %d threads): %d images in %.2f s (%.1f images/s)\n", mama_num_threads(), man.count,
           t1 - t0, man.count / (t1 - t0));
    px = (float *)malloc(sizeof(float) * 3 * S * S);
    mama_rng_seed(&rng, 1);
    t0 = mama_time_seconds();
    for (i = 0; i < 2000; i++)
        if (mama_dataset_image(d, i % man.count, 1, &rng, px) != MAMA_OK) { fprintf(stderr, "%s\n", mama_last_error()); return 1; }
    t1 = mama_time_seconds();
    printf("augmented samples from the cache: %.0f /s (one thread)\n", 2000 / (t1 - t0));
    free(px);
    mama_dataset_free(d);
    mama_manifest_free(&man);
    return 0;
}
