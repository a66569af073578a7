/* bench/bench_train.c - the training step and image encoding benchmarks of
 * the `mama` tool:
 *
 *   build/mama bench train  --config tiny|small|base [--batch 8] [--steps 10] [--late 0|1]
 *                           [--checkpoint 0|1] [--peak-tflops X] [--device cuda] [--precision bf16]
 *                           [--log 0|1] [--tune 0|1]
 *   build/mama bench encode --config base [--batch 4] [--steps 3] [--save W] [--weights W]
 *                           [--images F] [--emb-out F] [--inference 0|1] [--kernels REPS]
 *                           [--dtype f32|bf16|f16] [--tune 0|1]
 *   build/mama bench weights --weights W [--batch 1] [--steps 1] [--frozen-dtype auto|bf16|f16|f32]
 *
 * `train` times whole steps: forward through both towers, all four losses
 * (late on by default), backward, AdamW; it prints the median step time and
 * the process's peak resident memory, images/s and the model FLOPs of a step
 * (formula at bench_step_flops; model FLOPs utilisation when --peak-tflops
 * gives the device's peak); last line train_step_ms=<median>.  The backend
 * is the tool's --device (each timed step ends with be->sync, so GPU work
 * is inside the timing).  Each step also reports its host synchronisations
 * (be->host_syncs, mama.h 1.5: the loss download with --log 1, the
 * default, and the timing's own sync; target at most 2), and the run
 * host_syncs_per_step=<max over the timed steps>.
 * `encode` times the vision tower alone in eval mode and prints images/s;
 * the text tower is irrelevant to it, so the model is built with a one-layer
 * text tower to keep memory small (the vision tower is the preset's), and
 * created for inference only (mama_config.inference; --inference 0: a
 * model that could train, the old behaviour; --dtype bf16 keeps the
 * image tower's block matrices in bfloat16, widened while packing);
 * --save W writes that model (bench/bench_onnx.py exports the same weights
 * to ONNX), --weights W loads a model file instead, --images F reads the
 * batch as raw float32 [B, C, S, S] and --emb-out F writes the last pass's
 * embeddings [B, E] as raw float32 (the comparison with ONNX Runtime);
 * --tune 0 (here and for `train`) turns off the per-call choice between
 * all threads and one (mama_model_set_thread_tuning); --kernels REPS first times the attention against the fc1 GEMM at the
 * tower's shapes (issue 18: attention at >= 80% of the GEMM rate).
 * `weights` loads a real weights file (e.g. the `base` config with a bf16
 * text tower) and times a zeroshot-style text encode (eval mode) and one
 * training step (train mode, late losses on, dropout off: the gradient
 * flows through the frozen text weights into LoRA), with load time and
 * the process's peak resident memory after each phase.
 * Inputs are random (images uniform in [-1, 1], captions of random tokens
 * with a separator every 11 tokens); timings do not depend on values.
 * bench/bench_train_torch.py runs the same step in PyTorch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#endif

/* The backend: the tool's --device (examples/mama.c defines it). */
#ifndef MAMA_BENCH_BACKEND
#error "define MAMA_BENCH_BACKEND() (a mama_backend *) before including bench/bench_train.c"
#endif

/* Peak resident memory of this process image: VmHWM where /proc has it
 * (ru_maxrss would inherit the peak of the process that forked this one). */
static double bench_peak_rss_mb(void) {
#if defined(__unix__) || defined(__APPLE__)
    struct rusage ru;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    if (kb > 0) return kb / 1024.0;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return (double)ru.ru_maxrss / 1024.0; /* KB on Linux */
#endif
    return -1;
}

/* CPU seconds of this process (all threads), for rates on a shared machine */
static double bench_cpu_seconds(void) {
#if defined(__unix__) || defined(__APPLE__)
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
#endif
    return 0;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *bench_opt(int argc, char **argv, const char *key, const char *def) {
    int i;
    for (i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], key)) return argv[i + 1];
    return def;
}

/* Model FLOPs of one training step, 2 per multiply-add of the towers'
 * matrix products (forward F, backward 2F when the weights train: dX and
 * dW; F when they are frozen: dX only; attention's backward is always 2F):
 *   vision, Bv = B (2B with the late losses) images of T = 1+R+N tokens:
 *     F = Bv (L (24 T D^2 + 4 T^2 D) + 2 N P^2 C D),  counted 3F (all train)
 *   text, B captions of T = context tokens (causal attention counted full):
 *     F_lin = B L 24 T D^2,  F_att = B L 4 T^2 D
 *     full: 3 (F_lin + F_att);  lora: 2 F_lin + 3 F_att (base frozen);
 *     frozen: F_lin + F_att (no backward through the tower)
 * Not counted: heads, losses, the rank-r LoRA products, the recomputation
 * of gradient checkpointing. */
static double bench_step_flops(const mama_config *c, int B, int late) {
    double Bv = late ? 2.0 * B : B, N = (double)(c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    double Tv = 1 + c->registers + N, D = c->vision_dim, L = c->vision_depth;
    double Tt = c->context, Dt = c->text_dim, Lt = c->text_depth;
    double fv = Bv * (L * (24 * Tv * D * D + 4 * Tv * Tv * D) + 2 * N * c->patch_size * c->patch_size * c->in_chans * D);
    double flin = B * Lt * 24 * Tt * Dt * Dt, fatt = B * Lt * 4 * Tt * Tt * Dt, ft;
    if (c->text_mode == MAMA_TEXT_FULL) ft = 3 * (flin + fatt);
    else if (c->text_mode == MAMA_TEXT_LORA) ft = 2 * flin + 3 * fatt;
    else ft = flin + fatt;
    return 3 * fv + ft;
}

/* A random batch shaped for config c. */
static int bench_make_batch(const mama_config *c, int B, float **images, float **ext, int **ids, int **mask) {
    size_t img = (size_t)c->in_chans * c->image_size * c->image_size;
    int T = c->context, b, t;
    mama_rng r;
    size_t i;
    *images = (float *)malloc(sizeof(float) * img * B);
    *ext = (float *)malloc(sizeof(float) * img * B);
    *ids = (int *)malloc(sizeof(int) * (size_t)B * T);
    *mask = (int *)malloc(sizeof(int) * (size_t)B * T);
    if (!*images || !*ext || !*ids || !*mask) return 1;
    mama_rng_seed(&r, 1234);
    for (i = 0; i < img * B; i++) { (*images)[i] = 2 * mama_rng_uniform(&r) - 1; (*ext)[i] = 2 * mama_rng_uniform(&r) - 1; }
    for (b = 0; b < B; b++) {
        int len = T - 8 * b % (T / 2); /* captions of varied length */
        for (t = 0; t < T; t++) {
            int id;
            if (t == 0) id = c->bos_id;
            else if (t == len - 1) id = c->eos_id;
            else if (t >= len) id = c->pad_id;
            else if (t % 11 == 10 || t == len - 2) id = c->sep_id;
            else id = (int)mama_rng_below(&r, (uint32_t)(c->vocab_size - 7));
            (*ids)[b * T + t] = id;
            (*mask)[b * T + t] = t < len;
        }
    }
    return 0;
}

static int mama_bench_train_main(int argc, char **argv) {
    const char *preset = bench_opt(argc, argv, "--config", "tiny");
    int B = atoi(bench_opt(argc, argv, "--batch", "8"));
    int steps = atoi(bench_opt(argc, argv, "--steps", "10"));
    int late = atoi(bench_opt(argc, argv, "--late", "1"));
    int log_losses = atoi(bench_opt(argc, argv, "--log", "1"));
    unsigned long long syncs, max_syncs = 0;
    int ckpt = atoi(bench_opt(argc, argv, "--checkpoint", "0")), tune = atoi(bench_opt(argc, argv, "--tune", "1"));
    double peak = atof(bench_opt(argc, argv, "--peak-tflops", "0")), flops, med, t_create;
    mama_backend *be = MAMA_BENCH_BACKEND();
    mama_config c;
    mama_model *m = NULL;
    mama_adamw opt;
    mama_batch batch;
    mama_step_opts o;
    mama_losses L;
    float *images, *ext;
    int *ids, *mask, s;
    double *ms;
    if (steps < 1) steps = 1;
    if (mama_config_preset(&c, preset) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
    c.grad_checkpoint = ckpt;
    t_create = mama_time_seconds();
    if (mama_model_create(&m, &c, be, B, 1) != MAMA_OK ||
        mama_adamw_init(&opt, m, 0.1f) != MAMA_OK) {
        fprintf(stderr, "mama: %s\n", mama_last_error());
        mama_model_free(m);
        return 1;
    }
    mama_model_set_thread_tuning(m, tune);
    if (bench_make_batch(&c, B, &images, &ext, &ids, &mask)) { fprintf(stderr, "mama: out of memory\n"); return 1; }
    batch.B = B; batch.images = images; batch.ext_images = ext; batch.input_ids = ids; batch.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = late;
    ms = (double *)malloc(sizeof(double) * (size_t)steps);
    printf("model created and initialised in %.1f s (host initialisation, then one upload)\n",
           mama_time_seconds() - t_create);
    flops = bench_step_flops(&c, B, late);
    printf("bench train: config %s, batch %d, late %d, checkpointing %d, backend %s, %d threads (tune %d), gemm kernel %s, "
           "%zu trainable params, %.3f TFLOP model FLOPs per step\n", preset, B, late, ckpt, be->name,
           mama_num_threads(), tune, mama_cpu_backend_kernel_name(be) ? mama_cpu_backend_kernel_name(be) : "-",
           mama_model_numel(m, MAMA_GROUP_TRAIN) + mama_model_numel(m, MAMA_GROUP_LATE), flops / 1e12);
    for (s = -1; s < steps; s++) { /* step -1 is the warm-up */
        double t0 = mama_time_seconds();
        unsigned long long h0 = be->host_syncs;
        o.seed = (uint64_t)(s + 2);
        memset(&L, 0, sizeof L);
        if (mama_model_step(m, &batch, &o, 0, log_losses ? &L : NULL) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
        mama_adamw_step(&opt, m, 1e-5f, late);
        if (be->sync(be) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
        syncs = be->host_syncs - h0;
        if (s >= 0) {
            ms[s] = 1e3 * (mama_time_seconds() - t0);
            if (syncs > max_syncs) max_syncs = syncs;
            printf("step %d: %.1f ms, %llu host syncs, loss %.4f (clip %.4f mv %.4f sym %.4f sla %.4f)%s\n", s, ms[s],
                   syncs, L.loss, L.clip, L.mv, L.sym, L.sla, log_losses ? "" : " (--log 0: not downloaded)");
        }
    }
    qsort(ms, (size_t)steps, sizeof(double), bench_cmp_double);
    med = ms[steps / 2];
    printf("median step %.1f ms, peak host memory %.0f MB\n", med, bench_peak_rss_mb());
    printf("images_per_s=%.2f (batch %d per step)\n", 1e3 * B / med, B);
    printf("model_tflops_per_s=%.2f\n", flops / (med * 1e-3) / 1e12);
    if (peak > 0) printf("mfu=%.4f (of %.1f TFLOP/s peak)\n", flops / (med * 1e-3) / (peak * 1e12), peak);
    printf("host_syncs_per_step=%llu (max over the timed steps; the step's loss download with --log 1, and the "
           "timing's be->sync)\n", max_syncs);
    printf("train_step_ms=%.3f\n", med);
    free(ms); free(images); free(ext); free(ids); free(mask);
    mama_adamw_free(&opt);
    mama_model_free(m);
    return 0;
}

/* raw float32 file <-> buffer (bench encode's --images / --emb-out) */
static int bench_raw_io(const char *path, float *x, size_t n, int write) {
    FILE *f = fopen(path, write ? "wb" : "rb");
    size_t got;
    if (!f) { fprintf(stderr, "mama bench: cannot open %s\n", path); return 1; }
    got = write ? fwrite(x, sizeof(float), n, f) : fread(x, sizeof(float), n, f);
    fclose(f);
    if (got != n) { fprintf(stderr, "mama bench: %s: %zu of %zu floats\n", path, got, n); return 1; }
    return 0;
}

/* The vision tower's attention against its GEMMs at the config's shapes
 * (B images of T tokens): attention_forward on [B*T, 3D] and the fc1 GEMM
 * [B*T, D] x [D, 4D], alternately, `reps` times each, best of each;
 * attention FLOPs 4 B H T^2 hd (QK^T and PV), GEMM 2 M N K. */
static void bench_kernels(const mama_config *c, int B, int reps) {
    mama_backend *be = MAMA_BENCH_BACKEND();
    int N = (c->image_size / c->patch_size) * (c->image_size / c->patch_size), T = 1 + c->registers + N;
    int D = c->vision_dim, H = c->vision_heads, hd = D / H, M = B * T, r;
    size_t nq = (size_t)M * 3 * D, nw = (size_t)4 * D * D, no = (size_t)M * 4 * D, i;
    float *h = (float *)malloc(sizeof(float) * (nq > nw ? nq : nw)), *qkv, *w, *x, *out, *lse;
    double ta = 1e30, tg = 1e30, fa = 4.0 * B * H * (double)T * T * hd, fg = 2.0 * M * 4.0 * D * D;
    mama_rng rng;
    if (!h || be->alloc(be, (void **)&qkv, sizeof(float) * nq) || be->alloc(be, (void **)&w, sizeof(float) * nw) ||
        be->alloc(be, (void **)&x, sizeof(float) * (size_t)M * D) || be->alloc(be, (void **)&out, sizeof(float) * no) ||
        be->alloc(be, (void **)&lse, sizeof(float) * (size_t)B * H * T)) { fprintf(stderr, "mama: out of memory\n"); return; }
    mama_rng_seed(&rng, 7);
    for (i = 0; i < nq; i++) h[i] = 2 * mama_rng_uniform(&rng) - 1;
    be->to_device(be, qkv, h, sizeof(float) * nq);
    be->to_device(be, w, h, sizeof(float) * nw);
    be->to_device(be, x, h, sizeof(float) * (size_t)M * D);
    for (r = 0; r <= reps; r++) { /* rep 0 warms up */
        double t0 = mama_time_seconds(), t1, t2;
        be->attention_forward(be, out, lse, qkv, NULL, B, T, H, hd, 0, 1.0f / sqrtf((float)hd), 0.0f, 0);
        be->sync(be);
        t1 = mama_time_seconds();
        be->gemm(be, 0, 1, M, 4 * D, D, 1.0f, x, D, w, D, 0.0f, out, 4 * D);
        be->sync(be);
        t2 = mama_time_seconds();
        if (r > 0 && t1 - t0 < ta) ta = t1 - t0;
        if (r > 0 && t2 - t1 < tg) tg = t2 - t1;
    }
    printf("kernels: attention (B=%d T=%d H=%d hd=%d) %.1f GFLOP/s, GEMM fc1 (%d x %d x %d) %.1f GFLOP/s, "
           "attention at %.0f%% of the GEMM rate (best of %d alternating)\n", B, T, H, hd, fa / ta / 1e9, M, 4 * D, D,
           fg / tg / 1e9, 100.0 * (fa / ta) / (fg / tg), reps);
    printf("attention_vs_gemm=%.3f\n", (fa / ta) / (fg / tg));
    be->free(be, qkv); be->free(be, w); be->free(be, x); be->free(be, out); be->free(be, lse);
    free(h);
}

static int mama_bench_encode_main(int argc, char **argv) {
    const char *preset = bench_opt(argc, argv, "--config", "base"), *wpath = bench_opt(argc, argv, "--weights", NULL);
    const char *save = bench_opt(argc, argv, "--save", NULL), *inp = bench_opt(argc, argv, "--images", NULL);
    const char *eout = bench_opt(argc, argv, "--emb-out", NULL), *bpath;
    int B = atoi(bench_opt(argc, argv, "--batch", "4"));
    int steps = atoi(bench_opt(argc, argv, "--steps", "3"));
    int inference = atoi(bench_opt(argc, argv, "--inference", "1"));
    int kernels = atoi(bench_opt(argc, argv, "--kernels", "0"));
    const char *dts = bench_opt(argc, argv, "--dtype", "f32");
    int dt = !strncmp(dts, "bf16", 4) ? MAMA_BF16 : !strcmp(dts, "f16") ? MAMA_F16 : MAMA_F32;
    mama_config c;
    const mama_config *mc;
    mama_model *m = NULL;
    mama_status st;
    float *images, *ext, *emb;
    int *ids, *mask, s;
    double best = 1e30, best_cpu = 1e30, t0 = mama_time_seconds();
    if (B < 1) B = 1;
    /* bf16-dot / bf16-widen: force the CPU backend's path for bf16 weights (bf16: its default) */
    if (!strncmp(dts, "bf16-", 5) && !mama_cpu_backend_force_bf16(MAMA_BENCH_BACKEND(), dts + 5)) {
        fprintf(stderr, "mama bench encode: --dtype %s: not on this backend or CPU\n", dts);
        return 1;
    }
    if (wpath) {
        st = inference ? mama_model_load_inference(&m, wpath, MAMA_BENCH_BACKEND(), (B + 1) / 2, dt)
                       : mama_model_load(&m, wpath, MAMA_BENCH_BACKEND(), (B + 1) / 2);
    } else {
        if (mama_config_preset(&c, preset) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
        c.text_depth = 1;           /* encode touches only the vision tower */
        c.text_dim = 64; c.text_heads = 1;
        c.vocab_size = 64; c.bos_id = 58; c.eos_id = 57; c.pad_id = 59; c.sep_id = 61;
        c.inference = inference && !save;
        if (c.inference) c.frozen_dtype = (mama_dtype)dt;
        st = mama_model_create(&m, &c, MAMA_BENCH_BACKEND(), (B + 1) / 2, 1);
    }
    if (st != MAMA_OK || (save && mama_model_save(m, save) != MAMA_OK)) {
        fprintf(stderr, "mama: %s\n", mama_last_error());
        mama_model_free(m);
        return 1;
    }
    mc = mama_model_config(m);
    mama_model_set_thread_tuning(m, atoi(bench_opt(argc, argv, "--tune", "1")));
    if (kernels > 0) bench_kernels(mc, B, kernels);
    if (bench_make_batch(mc, B, &images, &ext, &ids, &mask)) { fprintf(stderr, "mama: out of memory\n"); return 1; }
    if (inp && bench_raw_io(inp, images, (size_t)B * mc->in_chans * mc->image_size * mc->image_size, 0)) return 1;
    emb = (float *)malloc(sizeof(float) * (size_t)B * mc->embed_dim);
    bpath = mc->inference && mc->frozen_dtype == MAMA_BF16 ? mama_cpu_backend_bf16_path(MAMA_BENCH_BACKEND()) : NULL;
    printf("bench encode: %s %s (vision %dpx, D=%d, depth %d), batch %d, %d threads, %s model, block weights %s%s%s, "
           "ready in %.1f s, peak host memory %.0f MB\n", wpath ? "weights" : "config", wpath ? wpath : preset,
           mc->image_size, mc->vision_dim, mc->vision_depth, B, mama_num_threads(),
           mc->inference ? "inference-only" : "training", mc->inference ? mama_dtype_name(mc->frozen_dtype) : "F32",
           bpath ? " path " : "", bpath ? bpath : "",
           mama_time_seconds() - t0, bench_peak_rss_mb());
    for (s = 0; s < steps; s++) {
        double dt, c0 = bench_cpu_seconds();
        t0 = mama_time_seconds();
        if (mama_encode_images(m, images, B, emb, NULL) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
        dt = mama_time_seconds() - t0;
        c0 = bench_cpu_seconds() - c0;
        printf("pass %d: %.2f s (%.2f images/s), %.2f CPU s\n", s, dt, B / dt, c0);
        if (dt < best) best = dt;
        if (c0 > 0 && c0 < best_cpu) best_cpu = c0;
    }
    if (steps > 0 && eout && bench_raw_io(eout, emb, (size_t)B * mc->embed_dim, 1)) return 1;
    printf("peak host memory %.0f MB\n", bench_peak_rss_mb());
    if (steps > 0) printf("encode_images_per_cpu_s=%.3f\nencode_images_per_s=%.3f\n", B / best_cpu, B / best);
    free(images); free(ext); free(ids); free(mask); free(emb);
    mama_model_free(m);
    return 0;
}

/* `bench weights` runs on the backend --device selects. */
static int mama_bench_weights_main(int argc, char **argv) {
    const char *w = bench_opt(argc, argv, "--weights", NULL), *fd = bench_opt(argc, argv, "--frozen-dtype", "auto");
    int B = atoi(bench_opt(argc, argv, "--batch", "1"));
    int steps = atoi(bench_opt(argc, argv, "--steps", "1"));
    int dt = -1, s;
    const mama_config *c;
    mama_model *m = NULL;
    mama_dtype hd;
    size_t hn;
    float *images, *ext, *emb;
    int *ids, *mask;
    double t0;
    mama_batch b;
    mama_step_opts o;
    mama_losses L;
    if (!w) { fprintf(stderr, "mama bench weights: --weights W is required\n"); return 2; }
    if (!strcmp(fd, "bf16")) dt = MAMA_BF16;
    else if (!strcmp(fd, "f16")) dt = MAMA_F16;
    else if (!strcmp(fd, "f32")) dt = MAMA_F32;
    else if (strcmp(fd, "auto")) { fprintf(stderr, "mama bench weights: bad --frozen-dtype '%s'\n", fd); return 2; }
    if (B < 1) B = 1;
    t0 = mama_time_seconds();
    if (mama_model_load_as(&m, w, MAMA_BENCH_BACKEND(), B, dt) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
    c = mama_model_config(m);
    hn = mama_model_half_numel(m, &hd);
    printf("bench weights: %s: text D=%d depth %d vocab %d, vision %dpx D=%d depth %d, text mode %s, %zu frozen values "
           "in %s; batch %d, %d threads\n", w, c->text_dim, c->text_depth, c->vocab_size, c->image_size, c->vision_dim,
           c->vision_depth, c->text_mode == MAMA_TEXT_LORA ? "lora" : c->text_mode == MAMA_TEXT_FROZEN ? "frozen" : "full",
           hn, hn ? mama_dtype_name(hd) : "-", B, mama_num_threads());
    printf("load: %.1f s, peak RSS %.0f MB\n", mama_time_seconds() - t0, bench_peak_rss_mb());
    if (bench_make_batch(c, B, &images, &ext, &ids, &mask)) { fprintf(stderr, "mama: out of memory\n"); return 1; }
    emb = (float *)malloc(sizeof(float) * (size_t)B * c->embed_dim);
    for (s = 0; s < steps; s++) {
        t0 = mama_time_seconds();
        if (mama_encode_texts(m, ids, mask, B, emb) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
        printf("text encode %d (eval, %d captions x %d tokens): %.2f s, peak RSS %.0f MB, emb[0][0..2] = %.5f %.5f %.5f\n",
               s, B, c->context, mama_time_seconds() - t0, bench_peak_rss_mb(), emb[0], emb[1], emb[2]);
    }
    b.B = B; b.images = images; b.ext_images = ext; b.input_ids = ids; b.attention_mask = mask;
    mama_step_opts_default(&o);
    o.late = 1;
    o.dropout = MAMA_OFF;
    for (s = 0; s < steps; s++) {
        t0 = mama_time_seconds();
        if (mama_model_step(m, &b, &o, 0, &L) != MAMA_OK) { fprintf(stderr, "mama: %s\n", mama_last_error()); return 1; }
        printf("train step %d (forward + backward, both towers, late losses, %d images + %d ext + %d captions): %.2f s, "
               "loss %.4f (clip %.4f mv %.4f sym %.4f sla %.4f), peak RSS %.0f MB\n", s, B, B, B,
               mama_time_seconds() - t0, L.loss, L.clip, L.mv, L.sym, L.sla, bench_peak_rss_mb());
    }
    {
        /* the gradient that reached the LoRA matrices through the frozen tower */
        double lora2 = 0, all2 = 0;
        const float *g = mama_model_grads(m);
        int i;
        size_t k;
        for (i = 0; i < mama_model_param_count(m); i++) {
            const mama_param_info *p = mama_model_param(m, i);
            double s2 = 0;
            if (p->group != MAMA_GROUP_TRAIN && p->group != MAMA_GROUP_LATE) continue;
            for (k = 0; k < p->numel; k++) s2 += (double)g[p->offset + k] * g[p->offset + k];
            all2 += s2;
            if (strstr(p->name, "lora_")) lora2 += s2;
        }
        printf("gradient norms after the last step: all trainable %.4g, LoRA %.4g\n", sqrt(all2), sqrt(lora2));
    }
    free(images); free(ext); free(ids); free(mask); free(emb);
    mama_model_free(m);
    return 0;
}

