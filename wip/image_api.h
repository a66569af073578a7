/* ---------------------------------------------------------------------------
 * 9. IMAGES (public part): grey images, decoding, the A.5 pipeline,
 *    synthetic mammograms.
 *
 * The pipeline works on 8-bit grey images (A.5: "decode to 8-bit grey") and
 * keeps uint8 between steps, as torchvision does on PIL images; only the
 * last step turns pixels into floats.  Every step is a function of its own,
 * so a data loader can cache the deterministic part (steps 1-3,
 * mama_image_prepare) and run only the random part (4-8) per sample.
 * ------------------------------------------------------------------------- */

/* A row-major 8-bit grey image: pixel (x, y) is pix[y * w + x].  pix comes
 * from mama_alloc; mama_image_free releases it (a zeroed struct is empty). */
typedef struct mama_image {
    int w, h;
    uint8_t *pix;
} mama_image;

MAMA_API mama_status mama_image_alloc(mama_image *im, int w, int h); /* zero-filled */
MAMA_API void mama_image_free(mama_image *im);
MAMA_API mama_status mama_image_copy(const mama_image *src, mama_image *dst);

/* --- decoding and encoding (stb_image) ----------------------------------
 * Loads PNG (8 or 16 bit, grey/grey+alpha/RGB/RGBA/palette), JPEG, PGM/PPM,
 * BMP, TGA.  Colour becomes grey with PIL's convert('L') ITU-R 601 luma,
 * L = (19595 R + 38470 G + 7471 B + 32768) >> 16 (= R*299/1000 + G*587/1000
 * + B*114/1000, rounded); alpha is ignored.  16-bit samples v become
 * round(v / 257) (0 -> 0, 65535 -> 255, exact on 257*k), not v >> 8.
 * Errors name the file and stb_image's reason.  `name` only labels errors. */
MAMA_API mama_status mama_image_load(const char *path, mama_image *out);
MAMA_API mama_status mama_image_load_memory(const void *data, size_t bytes, const char *name,
                                            mama_image *out);
/* Colour to grey as above: `channels` 1..4 interleaved 8-bit samples. */
MAMA_API void mama_rgb_to_grey(const uint8_t *src, int w, int h, int channels, uint8_t *grey);
/* Write a PNG: channels 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA),
 * rows of w*channels bytes, zlib-compressed by stb_image_write (stored,
 * uncompressed, when built with MAMA_NO_STB_IMAGE). */
MAMA_API mama_status mama_png_write(const char *path, const uint8_t *pix, int w, int h, int channels);
MAMA_API mama_status mama_image_save_png(const mama_image *im, const char *path);
/* Write a 16-bit PNG (channels 1 or 3, host-order samples) with stored
 * (uncompressed) deflate blocks: no stb needed, files are big.  Used for
 * tests and for 16-bit synthetic data. */
MAMA_API mama_status mama_png_write16(const char *path, const uint16_t *pix, int w, int h, int channels);

/* --- resampling -----------------------------------------------------------
 * Area: each output pixel is the mean of the input area it covers, with
 * fractional weights at the cell borders (OpenCV INTER_AREA = PIL BOX on
 * downscale).  Float intermediate between the two separable passes, one
 * rounding at the end (round half up).  An axis that grows uses bilinear
 * (below) instead: area averaging has nothing to average there.
 * Bilinear: PIL's / torchvision's BILINEAR: half-pixel centres
 * (align_corners=False), src = (dst + 0.5) * in/out - 0.5, taps clipped to
 * the box and renormalised at its borders; on downscale the triangle is
 * widened by the factor (PIL's antialias).  Horizontal pass first, rounded
 * to uint8 in between (as PIL), round half up.
 * mama_image_resize_bilinear resamples the box x0,y0,bw,bh of src (pixels
 * outside it never contribute, as crop-then-resize) to w x h. */
MAMA_API mama_status mama_image_resize_area(const mama_image *src, int w, int h, mama_image *dst);
MAMA_API mama_status mama_image_resize_bilinear(const mama_image *src, int x0, int y0, int bw, int bh,
                                                int w, int h, mama_image *dst);

/* --- A.5 steps ------------------------------------------------------------
 * 1. Letterbox to S x S: long side -> S, short side -> floor(short*S/long)
 *    (at least 1), area resampling, zero padding floor left/top and ceil
 *    right/bottom.  `placed` (may be NULL) receives x0, y0, w, h of the
 *    image inside the square. */
MAMA_API mama_status mama_image_letterbox(const mama_image *src, int S, mama_image *dst, int placed[4]);
/* 2. Otsu threshold of the 256-bin histogram: the first t in 0..254 that
 *    maximises the between-class variance w0 w1 (mu0 - mu1)^2 with class 0 =
 *    pixels <= t.  Returns -1 when no t splits the pixels (constant image).
 *    mama_foreground_box: inclusive box x0,y0,x1,y1 of pixels > thr;
 *    returns 0 (box untouched) when there are none. */
MAMA_API int mama_otsu_threshold(const mama_image *im);
MAMA_API int mama_foreground_box(const mama_image *im, int thr, int box[4]);
/*    Crop to that box (a copy of src when nothing is foreground); `box`
 *    (may be NULL) receives the inclusive box used. */
MAMA_API mama_status mama_image_otsu_crop(const mama_image *src, mama_image *dst, int box[4]);
/* 1-3: letterbox, Otsu crop, bilinear stretch to S x S.  Deterministic, so
 *    a loader may cache its result per image. */
MAMA_API mama_status mama_image_prepare(const mama_image *src, int S, mama_image *dst);

/* 4. RandomResizedCrop box as torchvision's get_params: up to `attempts`
 *    tries of area = w*h*U(scale) and aspect = exp(U(log ratio)),
 *    cw = round(sqrt(area*aspect)), ch = round(sqrt(area/aspect)) (Python's
 *    round, half to even), accepted when 0 < cw <= w and 0 < ch <= h, then
 *    y0 = below(h-ch+1), x0 = below(w-cw+1); else the centre crop with the
 *    ratio clamped into [ratio0, ratio1].  box = x0, y0, cw, ch. */
MAMA_API void mama_rrc_box(mama_rng *rng, int w, int h, float scale0, float scale1, float ratio0,
                           float ratio1, int attempts, int box[4]);
/* 5. flips, in place */
MAMA_API void mama_image_hflip(mama_image *im);
MAMA_API void mama_image_vflip(mama_image *im);
/* 6. PIL ImageEnhance, in place.  brightness: blend(black, x, f) = f*x;
 *    contrast: blend(m, x, f) = m + f*(x - m) with m = the image mean
 *    rounded to an integer (PIL's ImageStat); both clipped to 0..255 and
 *    TRUNCATED to integer, as PIL's blend does. */
MAMA_API void mama_image_brightness(mama_image *im, float f);
MAMA_API void mama_image_contrast(mama_image *im, float f);
/* 7. Gaussian blur as torchvision: kernel w[i] ~ exp(-x_i^2 / (2 sigma^2)),
 *    x_i = i - (k-1)/2, normalised to sum 1; reflect padding (d c b|a b c d|
 *    c b a); the 2-D kernel is the outer product (applied separably in
 *    float); result rounded half to even (torch.round). */
MAMA_API void mama_gaussian_kernel1d(int k, float sigma, float *w);
MAMA_API mama_status mama_image_gaussian_blur(mama_image *im, int k, float sigma);
/* 8. out[c][y][x] = (pix/255 - mean) / std for each of `channels` planes
 *    (3 replicated planes, or 1 for a folded patch embedding). */
MAMA_API void mama_image_to_tensor(const mama_image *im, float mean, float std, int channels, float *out);

/* The training augmentation, every knob with its A.5 default. */
typedef struct mama_augment_opts {
    int size;              /* S: 518                                        */
    int rrc;               /* 1: RandomResizedCrop (step 4)                 */
    float rrc_scale[2];    /* (0.1, 1)                                      */
    float rrc_ratio[2];    /* (3/4, 4/3)                                    */
    int rrc_attempts;      /* 10                                            */
    float hflip_p, vflip_p;/* 0.5, 0.5 (0 disables)                         */
    int jitter;            /* 1: colour jitter (step 6)                     */
    float jitter_p;        /* 0.8                                           */
    float brightness[2];   /* [0.2, 1.8]                                    */
    float contrast[2];     /* [0.2, 1.8]                                    */
    int jitter_random_order; /* 1: torchvision's random order of the two
                                (a fair coin); 0: brightness then contrast   */
    int blur;              /* 1: Gaussian blur (step 7)                     */
    float blur_p;          /* 0.4                                           */
    int blur_kernel;       /* 7                                             */
    float blur_sigma[2];   /* [0.1, 2]                                      */
    float mean, std;       /* 0.5, 0.5: (x/255 - 0.5) / 0.5                 */
} mama_augment_opts;
MAMA_API mama_augment_opts mama_augment_defaults(void);

/* Steps 4-7 on a prepared S x S image (dst becomes S x S). */
MAMA_API mama_status mama_image_augment(const mama_image *prepared, const mama_augment_opts *o,
                                        mama_rng *rng, mama_image *dst);
/* The whole pipeline from a decoded image into out [channels, S, S]:
 * train != 0: steps 1-8 (rng required); train == 0: steps 1-3 and 8. */
MAMA_API mama_status mama_image_pipeline(const mama_image *src, const mama_augment_opts *o, int train,
                                         mama_rng *rng, int channels, float *out);

/* --- synthetic mammograms (SPEC part B) -----------------------------------
 * One study = one patient, four views.  Each breast has a BI-RADS letter
 * drawn independently (the other breast is not forced to N), and its
 * finding is drawn at one 3-D place (distance from the nipple, clock
 * position) projected into both of its views.  Images are `size` high and
 * size*13/16 wide (the 4096 x 3328 aspect of FFDM detectors); the chest
 * wall is the left edge for left breasts and the right edge for right
 * breasts (standard hanging); MLO views show the pectoral muscle in the
 * upper chest-wall corner.  Empty strings mean "not applicable". */
typedef struct mama_synth_image {
    mama_image img;
    char path[48];              /* images/p00001_L_CC.png (relative)        */
    char patient[16], study[16];
    char side[8];               /* "left" / "right"                         */
    char view[4];               /* "CC" / "MLO"                             */
    char procedure[32];
    int age;
    char race[48], ethnicity[32], image_type[4];
    int density;                /* 1..4                                     */
    char birads[2];             /* A N B P S M K                            */
    char mass_shape[12], mass_density[16], calc_type[24], calc_distribution[12];
    int cancer;                 /* 1 for M, K and the high-risk S findings  */
    char split[8];              /* train / val / test (by patient 70/10/20) */
    int box[4];                 /* finding's inclusive box x0,y0,x1,y1 in this
                                   image, or all -1 when there is none       */
} mama_synth_image;

/* Study `index` (0-based) of the data set `seed`: views[0..3] = L-CC, L-MLO,
 * R-CC, R-MLO, pixels allocated (free each with mama_image_free(&v.img)).
 * Deterministic in (seed, index) alone.  balanced: letters and densities
 * uniform instead of screening-like frequencies. */
MAMA_API mama_status mama_synth_study(uint64_t seed, int index, int size, int balanced,
                                      mama_synth_image views[4]);
/* Generate `studies` studies (OpenMP over studies) into out_dir/images/ (PNG)
 * and out_dir/manifest.csv (header path,patient,study,side,view,procedure,
 * age,race,ethnicity,image_type,density,birads,mass_shape,mass_density,
 * calc_type,calc_distribution,cancer,split; paths relative to out_dir).
 * Creates out_dir and out_dir/images when missing. */
MAMA_API mama_status mama_synth_write(const char *out_dir, int studies, int size, uint64_t seed,
                                      int balanced);
