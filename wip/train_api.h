/* ---- 1.11 Datasets: a manifest, a tokenizer and the image pipeline ------ */
typedef struct mama_dataset mama_dataset;

typedef struct mama_dataset_opts {
    const char *manifest;        /* CSV (SPEC part B) */
    const char *tokenizer;       /* directory with vocab.json + merges.txt, or tokenizer.json */
    int skip_bad_rows;           /* skip (and count) malformed rows and unreadable images */
    int cache;                   /* keep the prepared (letterboxed, cropped, stretched) images in memory */
    int only_2d;                 /* keep image_type "2D" (or unknown) only (SPEC A.6) */
} mama_dataset_opts;
MAMA_API void mama_dataset_opts_default(mama_dataset_opts *o);
/* Open a dataset for a model config (image size, channels, context). */
MAMA_API mama_status mama_dataset_open(mama_dataset **d, const mama_dataset_opts *o, const mama_config *c);
MAMA_API void mama_dataset_free(mama_dataset *d);
MAMA_API const mama_manifest *mama_dataset_manifest(const mama_dataset *d);
MAMA_API const mama_tokenizer *mama_dataset_tokenizer(const mama_dataset *d);
/* Record indices of one split (train/val/test), and their count. */
MAMA_API int mama_dataset_split(const mama_dataset *d, mama_split s, const int **indices);
/* Images that could not be decoded and were skipped (skip_bad_rows). */
MAMA_API int mama_dataset_skipped(const mama_dataset *d);
/* A record's metadata as caption fields (strings point into the manifest). */
MAMA_API void mama_record_caption_fields(const mama_record *r, mama_caption_fields *f);
/* One image through the pipeline into out [in_chans, S, S]: train != 0
 * applies the augmentations of SPEC A.5 with `rng`. */
MAMA_API mama_status mama_dataset_image(mama_dataset *d, int record, int train, mama_rng *rng, float *out);
/* One caption as token ids and mask [context]: masked with probability
 * mask_p per field when mask_p > 0 (SPEC A.5). */
MAMA_API mama_status mama_dataset_caption(mama_dataset *d, int record, float mask_p, mama_rng *rng, int *ids,
                                          int *mask);

/* ---- 1.12 Pretraining (SPEC A.4, A.5) ----------------------------------- */
typedef struct mama_pretrain_opts {
    long steps;                  /* optimiser steps (40000); the schedule spans them */
    long stop_at;                /* stop (and checkpoint) after this step; 0 = run to `steps` */
    int batch;                   /* per step and micro-batch (36) */
    int accum;                   /* micro-batches per optimiser step (2) */
    float lr, lr_floor;          /* 4e-5, 1e-8 */
    long warmup;                 /* 4000 */
    float weight_decay;          /* 0.1 */
    long late_loss;              /* 8000: multi-view, symmetric and local losses from here */
    int use_mv, use_sym, use_sla;/* the late terms (ablations) */
    float ext_other_view_p;      /* 0.5: ext = another image of the study */
    float caption_mask_p;        /* 0.8 */
    float clip_grad;             /* 0 = none */
    uint64_t seed;
    int max_bad_steps;           /* consecutive non-finite steps before stopping (5) */
    const char *checkpoint;      /* path; written every checkpoint_every steps and at the end */
    long checkpoint_every;       /* 0: only at the end */
    const char *log_csv;         /* a row per step, or NULL */
    int resume;                  /* continue from `checkpoint` if it exists */
    int quiet;                   /* no progress output */
    mama_augment_opts aug;       /* image augmentation (size set from the model) */
} mama_pretrain_opts;
MAMA_API void mama_pretrain_opts_default(mama_pretrain_opts *o);

typedef struct mama_pretrain_result {
    long steps_done, skipped_steps;
    mama_losses last;            /* losses of the last step */
    double seconds, images_per_s;
} mama_pretrain_result;

MAMA_API mama_status mama_pretrain(mama_model *m, mama_dataset *d, const mama_pretrain_opts *o,
                                   mama_pretrain_result *res);
/* Checkpoints: weights + AdamW moments + step + seed + config, written
 * atomically (temporary file, fsync, rename). */
MAMA_API mama_status mama_checkpoint_save(const char *path, const mama_model *m, const mama_adamw *opt, long step,
                                          uint64_t seed);
MAMA_API mama_status mama_checkpoint_load(const char *path, mama_model *m, mama_adamw *opt, long *step,
                                          uint64_t *seed);

/* ---- 1.13 Evaluation: metrics, zero-shot, linear probe (SPEC A.7) ------- */
#define MAMA_MAX_CLASSES 8
typedef struct mama_metrics {
    int n, K;
    double accuracy, balanced_accuracy, auc;   /* auc: macro one-vs-rest over classes with both outcomes */
    double class_auc[MAMA_MAX_CLASSES];        /* NaN where undefined */
    int confusion[MAMA_MAX_CLASSES][MAMA_MAX_CLASSES]; /* [true][predicted] */
    /* binary tasks (K == 2, class 1 positive) */
    double sensitivity, specificity, ppv, npv, f1, spec_at_80_sens, pf1;
} mama_metrics;
/* probs [n, K] (rows need not be normalised for AUC; argmax predicts). */
MAMA_API mama_status mama_metrics_compute(const float *probs, const int *labels, int n, int K, mama_metrics *out);
MAMA_API const char *mama_task_name(mama_zeroshot_task t);
/* The class of a record for a task (-1 when it has none: unknown BI-RADS,
 * density 5 or unknown, unknown cancer). */
MAMA_API int mama_task_label(mama_zeroshot_task t, const mama_record *r);

typedef struct mama_eval_result {
    int n, K;
    float *probs;                /* [n, K] (mama_alloc'ed) */
    int *labels;                 /* [n] */
    int *records;                /* [n] record indices */
    mama_metrics metrics;
} mama_eval_result;
MAMA_API void mama_eval_result_free(mama_eval_result *r);

/* Zero-shot classification of every image of `split` that has a label for
 * `task`: per-image captions (the image's own metadata + each class's
 * text), scores exp(logit_scale) I.T, softmax.  ref_text_feature selects
 * the reference code's text feature (A.7b) instead of the training one. */
MAMA_API mama_status mama_zero_shot(mama_model *m, mama_dataset *d, mama_split split, mama_zeroshot_task task,
                                    int ref_text_feature, mama_eval_result *out);

typedef struct mama_probe_opts {
    long steps;                  /* 8000 */
    int batch;                   /* 32 */
    float lr, lr_floor;          /* 5e-4, 1e-5 */
    long warmup;                 /* 100 */
    float momentum, weight_decay;/* 0.9, 1e-3 */
    int augment;                 /* 1: augmented training images each step (A.7); 0: precomputed features */
    uint64_t seed;
    int quiet;
} mama_probe_opts;
MAMA_API void mama_probe_opts_default(mama_probe_opts *o);
/* Linear probe on the frozen image encoder's pooled feature: train on the
 * train split with class-balanced sampling, evaluate on `eval_split`. */
MAMA_API mama_status mama_linear_probe(mama_model *m, mama_dataset *d, mama_zeroshot_task task,
                                       const mama_probe_opts *o, mama_split eval_split, mama_eval_result *out);

/* Retrieval over a split: image->text and text->image recall@1/5/10 with
 * each image's own (unmasked) caption as its match. */
typedef struct mama_retrieval { int n; double i2t[3], t2i[3]; } mama_retrieval;
MAMA_API mama_status mama_retrieval_eval(mama_model *m, mama_dataset *d, mama_split split, int max_items,
                                         mama_retrieval *out);
/* Metrics as a JSON object appended to `out`, and as a text table on `f`. */
MAMA_API mama_status mama_metrics_json(const mama_metrics *m, mama_buf *out);
MAMA_API void mama_metrics_print(const mama_metrics *m, const char *title, FILE *f);

/* ---- 1.14 Explaining a prediction: SLA similarity maps ------------------
 * For one image [in_chans, S, S] and its caption (ids, mask [context]),
 * maps[s * N + k] = similarity (local embeddings, eval mode) between
 * sentence s and patch k (N = (S/P)^2, row-major grid).  *nsent receives
 * the number of sentences (at most max_sent are written). */
MAMA_API mama_status mama_sla_maps(mama_model *m, const float *image, const int *ids, const int *mask, float *maps,
                                   int max_sent, int *nsent);
