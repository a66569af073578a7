/* ---- 1.7 Model configuration (SPEC A.1-A.3, issue presets tiny/small/base) */
typedef enum mama_text_mode { MAMA_TEXT_FULL = 0, MAMA_TEXT_LORA = 1, MAMA_TEXT_FROZEN = 2 } mama_text_mode;

typedef struct mama_config {
    /* vision tower (DINOv2 ViT with registers) */
    int image_size, patch_size, vision_dim, vision_depth, vision_heads, registers;
    int in_chans;               /* 3 (grey replicated); 1 = patch embedding folded */
    /* text tower (GPT-2) */
    int text_dim, text_depth, text_heads, vocab_size, context;
    int text_attn_layer_scale;  /* BioMedLM: scores / (layer index + 1) */
    float text_dropout;         /* embedding, attention, residual dropout */
    mama_text_mode text_mode;   /* full | lora | frozen */
    int lora_rank;
    float lora_alpha, lora_dropout;
    int text_pool_real_only;    /* 0: mean over all positions (reference), 1: real tokens */
    /* heads */
    int embed_dim, local_hidden;
    /* memory: recompute each transformer block during the backward */
    int grad_checkpoint;
    /* special tokens */
    int bos_id, eos_id, pad_id, sep_id;
} mama_config;

/* Fill `c` with a preset: "tiny", "small" or "base" (the paper). */
MAMA_API mama_status mama_config_preset(mama_config *c, const char *name);
/* Check a config for consistency (dims divisible by heads, image by patch...). */
MAMA_API mama_status mama_config_validate(const mama_config *c);
/* The config as the `mama_config` JSON object of the safetensors metadata. */
MAMA_API mama_status mama_config_to_json(const mama_config *c, char *out, size_t cap);
/* Parse that JSON (unknown keys ignored; missing keys keep c's values). */
MAMA_API mama_status mama_config_from_json(mama_config *c, const char *json, const char *source);

/* ---- 1.8 Parameters.  Every tensor of the model lives in one buffer, in
 * four contiguous groups: [train | late | frozen | buffers].  `train`
 * parameters learn from step 0, `late` ones (local heads, local_scale,
 * SimCLR head) from the late-loss step, `frozen` never (e.g. the vision
 * `norm`, the text base weights in LoRA mode), `buffers` are BatchNorm
 * running statistics.  Gradients exist for [train | late] only, in a second
 * buffer with the same offsets, so data-parallel training needs one
 * all-reduce of one buffer. */
typedef enum mama_param_group { MAMA_GROUP_TRAIN = 0, MAMA_GROUP_LATE, MAMA_GROUP_FROZEN, MAMA_GROUP_BUFFER } mama_param_group;

typedef struct mama_param_info {
    char name[128];             /* SPEC A.8 name */
    int ndim;
    int64_t shape[4];           /* as stored in files (1x1 convs as [out,in,1]) */
    size_t offset, numel;       /* in floats, into the parameter buffer */
    mama_param_group group;
} mama_param_info;

typedef struct mama_model mama_model;

/* Create a model with freshly initialised weights (SPEC A.5 initialisation)
 * on backend `be` for batches of up to `max_batch` captions/images. */
MAMA_API mama_status mama_model_create(mama_model **m, const mama_config *c, mama_backend *be,
                                       int max_batch, uint64_t seed);
MAMA_API void mama_model_free(mama_model *m);
MAMA_API const mama_config *mama_model_config(const mama_model *m);
MAMA_API int mama_model_param_count(const mama_model *m);
MAMA_API const mama_param_info *mama_model_param(const mama_model *m, int i);
MAMA_API const mama_param_info *mama_model_find_param(const mama_model *m, const char *name);
/* sizes of the groups, in floats */
MAMA_API size_t mama_model_numel(const mama_model *m, mama_param_group g);
/* Device pointers to the parameter buffer and the gradient buffer. */
MAMA_API float *mama_model_params(mama_model *m);
MAMA_API float *mama_model_grads(mama_model *m);

/* Load weights (names of SPEC A.8) from safetensors; every tensor of the
 * model must be present with the right shape unless allow_missing (then
 * missing tensors keep their initial values and are counted). Returns the
 * number of tensors loaded in *loaded when non-NULL. */
MAMA_API mama_status mama_model_load_weights(mama_model *m, const char *path, int allow_missing, int *loaded);
/* Create a model from a safetensors file whose metadata holds mama_config. */
MAMA_API mama_status mama_model_load(mama_model **m, const char *path, mama_backend *be, int max_batch);
/* Save all parameters and buffers (and the config) as safetensors, atomically. */
MAMA_API mama_status mama_model_save(const mama_model *m, const char *path);

/* ---- 1.9 A batch and one training step. */
typedef struct mama_batch {
    int B;                      /* samples */
    const float *images;        /* host [B, in_chans, S, S], normalised */
    const float *ext_images;    /* host, same shape; used when late */
    const int *input_ids;       /* host [B, context] */
    const int *attention_mask;  /* host [B, context], 1 real / 0 pad */
} mama_batch;

typedef struct mama_step_opts {
    int late;                   /* compute multi-view, symmetric CLIP and SLA */
    int use_mv, use_sym, use_sla; /* each late term on/off (ablations); default 1 */
    int train;                  /* BatchNorm batch statistics and dropout */
    int dropout;                /* dropout active (train must be set too) */
    uint64_t seed;              /* dropout masks for this step */
} mama_step_opts;
MAMA_API void mama_step_opts_default(mama_step_opts *o);

typedef struct mama_losses {
    float loss, clip, mv, sym, sla;
} mama_losses;

/* Forward, all requested losses, and backward: gradients are written
 * (overwritten, not accumulated) into the gradient buffer, unless
 * accumulate != 0, then added.  Embeddings of the last forward can be read
 * with mama_model_embeddings. */
MAMA_API mama_status mama_model_step(mama_model *m, const mama_batch *b, const mama_step_opts *o,
                                     int accumulate, mama_losses *out);
/* Forward only in eval mode (running statistics, no dropout). */
MAMA_API mama_status mama_model_forward(mama_model *m, const mama_batch *b, mama_losses *out);
/* Copy the last forward's image / text embeddings [B, E] to host. */
MAMA_API mama_status mama_model_embeddings(mama_model *m, float *img_emb, float *txt_emb);
/* Encode images / texts only (eval mode): outputs [B, E] on host. */
MAMA_API mama_status mama_encode_images(mama_model *m, const float *images, int B, float *emb, float *pooled);
MAMA_API mama_status mama_encode_texts(mama_model *m, const int *ids, const int *mask, int B, float *emb);

/* Verification (`mama forward`): load weights W (with mama_config metadata)
 * and a batch B (images, ext_images, input_ids, attention_mask), run one
 * forward and backward in train mode with every dropout off, and write O
 * with img_emb, txt_emb, loss, loss_clip, loss_mv, loss_sym, loss_sla
 * (shape [1]), grad.<name> for every trainable parameter and buf.<name>
 * for the BatchNorm running statistics after the step. */
MAMA_API mama_status mama_verify_forward(const char *weights, const char *batch, const char *out, int late,
                                         mama_backend *be);

/* ---- 1.10 The optimiser: AdamW over the gradient buffer (SPEC A.5).
 * The `train` group steps from step 0; the `late` group only when late is
 * set, with its own step count for the bias correction, so parameters that
 * start training at the late-loss step are neither moved nor decayed
 * before it. */
typedef struct mama_adamw {
    float beta1, beta2, eps, weight_decay;
    long step_train, step_late;   /* steps taken by each group */
    float *m, *v;                 /* device buffers over [train | late] */
    mama_backend *be;
    size_t n_train, n_late;
} mama_adamw;
MAMA_API mama_status mama_adamw_init(mama_adamw *o, mama_model *m, float weight_decay);
MAMA_API void mama_adamw_free(mama_adamw *o);
MAMA_API void mama_adamw_step(mama_adamw *o, mama_model *m, float lr, int late);
/* Intermediate features of the last mama_encode_images / mama_encode_texts
 * call (for parity checks against other implementations):
 * prenorm [B, 1+R+N, D] (all tokens after the last block), patch_norm
 * [B, N, D] (patch tokens after the final norm), text hidden [B, T, Dt]
 * (after ln_f).  Any output may be NULL. */
MAMA_API mama_status mama_model_vision_tokens(mama_model *m, int B, float *prenorm, float *patch_norm);
MAMA_API mama_status mama_model_text_hidden(mama_model *m, int B, float *hidden);
/* exp(logit_scale): the temperature the global CLIP scores are multiplied by. */
MAMA_API float mama_model_logit_scale(mama_model *m);
