/* --------------------------------------------------------------------------
 * 1.x Text: structured captions (SPEC A.6, A.5 masking, A.7 zero-shot sets),
 * the GPT-2 byte-level BPE tokenizer and its trainer
 * (public declarations; implementation in section 8)
 * --------------------------------------------------------------------------
 * Strings are UTF-8 bytes.  Functions that write text into a caller's buffer
 * follow one rule: `out` receives at most `cap` bytes including the NUL;
 * `*len` (when not NULL) receives the full length the text needs, without
 * the NUL; `out == NULL && cap == 0` only measures (MAMA_OK); a buffer that
 * is too small is MAMA_ERR_INVALID (out then holds a NUL-terminated prefix). */

/* ---- Captions (A.6) -------------------------------------------------------
 * The metadata of one image.  A NULL or "" string, age < 0, density <= 0
 * or birads == 0 means "missing" and prints as "unknown" (but see
 * ethnicity).  The caption builder copies nothing: the strings only need to
 * live for the call.
 *   procedure        e.g. "MG Screening Bilateral"; the reason is derived:
 *                    "screening" if it contains "screen" (any case), else
 *                    "diagnostic" if it contains "diag", else "".
 *   race             printed as given, e.g. "Caucasian or White".
 *   ethnicity        "Hispanic or Latino" (any case) prints as such; the
 *                    literal "unknown" (what masking writes) stays
 *                    "unknown"; anything else, missing included, prints
 *                    "Non-Hispanic or Latino" (A.6: "otherwise").
 *   image_type       e.g. "2D".
 *   side             "L"/"R"/"B" or left/right/bilateral (any case) print
 *                    as left/right/bilateral; other text is printed as is.
 *   view             e.g. "MLO", "CC".
 *   mass_shape, mass_density      the mass sentence needs both.
 *   calc_type, calc_distribution  the calcification sentence needs both.
 *   birads           BI-RADS letter A N B P S M K (categories 0..6; lower
 *                    case accepted); 0 = missing.
 *   age              years, printed as an integer; -1 = missing.
 *   density          1..4 (A.6 texts) or 5 ("normal male dense"); -1 or 0
 *                    = missing. */
typedef struct mama_caption_fields {
    const char *procedure;
    const char *race;
    const char *ethnicity;
    const char *image_type;
    const char *side;
    const char *view;
    const char *mass_shape;
    const char *mass_density;
    const char *calc_type;
    const char *calc_distribution;
    char birads;
    int age;
    int density;
} mama_caption_fields;

/* All fields missing (NULL strings, birads 0, age -1, density -1). */
MAMA_API void mama_caption_fields_init(mama_caption_fields *f);

/* The A.6 caption, byte for byte (double spaces and the final space
 * included).  MAMA_ERR_INVALID for a density outside {-1, 0..5} or a
 * BI-RADS letter outside A N B P S M K. */
MAMA_API mama_status mama_caption_build(const mama_caption_fields *f, char *out, size_t cap, size_t *len);
/* The same into a mama_alloc'ed string (free with mama_free). */
MAMA_API mama_status mama_caption_build_alloc(const mama_caption_fields *f, char **out);

/* A.5 masking: *out = *in with each of the six fields age, race,
 * ethnicity, image type, side and view replaced by "unknown" (age by -1)
 * independently with probability p.  Exactly six uniforms are drawn from
 * `rng`, in that order, whatever p is (so streams stay aligned); field k is
 * masked when its uniform is < p, hence p >= 1 masks all and p <= 0 none.
 * `out` may equal `in`.  Strings point to static "unknown" or to in's. */
MAMA_API void mama_caption_mask(const mama_caption_fields *in, mama_caption_fields *out, float p, mama_rng *rng);

/* Number of '.' and ';' in a caption = its number of sentences = the
 * number of sep tokens it gets (the SPEC example has 11). */
MAMA_API int mama_caption_count_sentences(const char *caption);

/* The tokenizer input of A.2 as text: "<|startoftext|>" + caption with every
 * '.' and ';' replaced by "<|separatetext|>" + "<|endoftext|>".  Encoding it
 * with mama_tokenizer_encode gives the same ids as
 * mama_tokenizer_encode_caption on the raw caption. */
MAMA_API mama_status mama_caption_tokenizer_input(const char *caption, char *out, size_t cap, size_t *len);

/* ---- Zero-shot caption sets (A.7) ------------------------------------------
 * BIRADS: 7 classes in the letter order A N B P S M K (categories 0 1 2 3 4
 *   5 6); caption = the image's unmasked sections "Procedure reported" ..
 *   "Image info" (with their trailing double space) + "Findings: The
 *   mammogram shows that " + finding(c) + " Impressions: BI-RADS Category c:
 *   description. Overall Assessment: " + assessment(c).
 * DENSITY: 4 classes, densities 1..4; the same prefix + "Breast composition:
 *   The breast is {text}. " (+ "This may lower the sensitivity of
 *   mammography. " for 3 and 4).
 * CANCER (RSNA-Mammo): 2 classes, no (0) and yes (1); no prefix (f may be
 *   NULL); the exact strings of A.7, the assessment without a final period. */
typedef enum mama_zeroshot_task {
    MAMA_ZEROSHOT_BIRADS = 0,
    MAMA_ZEROSHOT_DENSITY = 1,
    MAMA_ZEROSHOT_CANCER = 2
} mama_zeroshot_task;
/* 7, 4, 2 (0 for an unknown task). */
MAMA_API int mama_zeroshot_num_classes(mama_zeroshot_task task);
/* Caption of class `cls` (0-based, in the order above) for an image with
 * metadata f.  MAMA_ERR_INVALID for a bad task or class. */
MAMA_API mama_status mama_zeroshot_caption(mama_zeroshot_task task, int cls, const mama_caption_fields *f,
                                           char *out, size_t cap, size_t *len);
MAMA_API mama_status mama_zeroshot_caption_alloc(mama_zeroshot_task task, int cls, const mama_caption_fields *f,
                                                 char **out);

/* ---- GPT-2 byte-level BPE tokenizer ------------------------------------------
 * Compatible with Hugging Face `tokenizers` (ByteLevel pre-tokenizer without
 * prefix space, BPE model, byte-level decoder), which the tests compare
 * against id for id:
 *  1. added tokens are cut out of the text first (leftmost, then longest
 *     match; special or not, no lstrip/rstrip/single_word handling);
 *  2. each remaining piece is split by the GPT-2 pattern
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     with Unicode 14 letter/number classes and White_Space as \s (bytes
 *     that are not valid UTF-8 count as "other" characters);
 *  3. each word's bytes are merged by rank (lowest rank first, leftmost
 *     first among equal ranks) with a heap, O(n log n) in the word length.
 * Special tokens: the six of A.2 (<|startoftext|> bos, <|padtext|> pad,
 * <|masktext|> mask, <|separatetext|> sep, <|unknowntext|> unk, <|keytext|>
 * key) keep the ids a tokenizer.json gives them, else take the ids after the
 * largest id in that order; eos is <|endoftext|> of the base vocabulary (if
 * the vocabulary lacks it, it is appended after the six).  All seven are
 * matched as added tokens.  A loaded tokenizer is immutable: encoding and
 * decoding from several threads at once is safe. */
typedef struct mama_tokenizer mama_tokenizer;

typedef enum mama_special_token {
    MAMA_TOKEN_BOS = 0,  /* <|startoftext|>  */
    MAMA_TOKEN_PAD = 1,  /* <|padtext|>      */
    MAMA_TOKEN_MASK = 2, /* <|masktext|>     */
    MAMA_TOKEN_SEP = 3,  /* <|separatetext|> */
    MAMA_TOKEN_UNK = 4,  /* <|unknowntext|>  */
    MAMA_TOKEN_KEY = 5,  /* <|keytext|>      */
    MAMA_TOKEN_EOS = 6   /* <|endoftext|>    */
} mama_special_token;
/* The text of a special token, e.g. "<|separatetext|>" (NULL if out of range). */
MAMA_API const char *mama_special_token_text(mama_special_token which);

/* Load from `path`: a directory holding tokenizer.json (preferred) or
 * vocab.json + merges.txt, or a path to a tokenizer.json or a vocab.json
 * (merges.txt then read from the same directory). */
MAMA_API mama_status mama_tokenizer_load(mama_tokenizer **out, const char *path);
/* Load Hugging Face vocab.json + merges.txt files. */
MAMA_API mama_status mama_tokenizer_load_files(mama_tokenizer **out, const char *vocab_json_path,
                                               const char *merges_txt_path);
/* The same from memory.  merges: "#version" first line optional; one
 * "a b" pair per line.  Names only label error messages (may be NULL). */
MAMA_API mama_status mama_tokenizer_load_memory(mama_tokenizer **out, const char *vocab_json, size_t vocab_len,
                                                const char *merges_txt, size_t merges_len,
                                                const char *source_name);
/* A tokenizer.json (model.vocab, model.merges as "a b" strings or [a, b]
 * pairs, added_tokens) from memory. */
MAMA_API mama_status mama_tokenizer_load_json_memory(mama_tokenizer **out, const char *json, size_t len,
                                                     const char *source_name);
MAMA_API void mama_tokenizer_free(mama_tokenizer *t);

/* Number of ids (largest id + 1, special tokens included): the embedding
 * table's rows. */
MAMA_API int mama_tokenizer_vocab_size(const mama_tokenizer *t);
/* Number of merges (ranks 0 .. n-1). */
MAMA_API int mama_tokenizer_num_merges(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_special_id(const mama_tokenizer *t, mama_special_token which);
MAMA_API int mama_tokenizer_bos_id(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_eos_id(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_pad_id(const mama_tokenizer *t);
MAMA_API int mama_tokenizer_sep_id(const mama_tokenizer *t);
/* Id of a token given by its raw bytes ("<|padtext|>", " the"), or -1. */
MAMA_API int mama_tokenizer_token_id(const mama_tokenizer *t, const char *token, size_t len);
/* Raw bytes of token `id` (not NUL-terminated; *len set), NULL if none. */
MAMA_API const char *mama_tokenizer_token_bytes(const mama_tokenizer *t, int id, size_t *len);

/* Encode NUL-terminated text.  Writes min(n, max_ids) ids to `ids` (may be
 * NULL when max_ids is 0) and sets *n_total to the full count n, so a caller
 * can detect truncation (n > max_ids) or measure. */
MAMA_API mama_status mama_tokenizer_encode(const mama_tokenizer *t, const char *text, int *ids, int max_ids,
                                           int *n_total);
/* Encode, keep the first `context` ids (as Hugging Face's truncation does:
 * a final <|endoftext|> may be cut) and right-pad with the pad id.
 * mask[i] = 1 for real tokens, 0 for padding (mask may be NULL).
 * *n_real (may be NULL) = number of real tokens, <= context. */
MAMA_API mama_status mama_tokenizer_encode_padded(const mama_tokenizer *t, const char *text, int context,
                                                  int *ids, int *mask, int *n_real);
/* A.2's caption encoding, straight to ids: bos + caption with each '.'
 * and ';' replaced by sep + eos, truncated to `context` and right-padded
 * (identical to encoding mama_caption_tokenizer_input's text). */
MAMA_API mama_status mama_tokenizer_encode_caption(const mama_tokenizer *t, const char *caption, int context,
                                                   int *ids, int *mask, int *n_real);
/* Decode ids to bytes (the tokens' raw bytes concatenated; with
 * skip_special non-zero the seven special tokens are left out).  The result
 * is NUL-terminated but may be invalid UTF-8 if the ids cut a character.
 * An id out of range or without a token is MAMA_ERR_INVALID. */
MAMA_API mama_status mama_tokenizer_decode(const mama_tokenizer *t, const int *ids, int n, int skip_special,
                                           char *out, size_t cap, size_t *len);
MAMA_API mama_status mama_tokenizer_decode_alloc(const mama_tokenizer *t, const int *ids, int n, int skip_special,
                                                 char **out);

/* Split text with the GPT-2 pattern (step 2 above; no added-token
 * handling): calls fn(piece, len, user) for each piece in order.  Exposed
 * for tests and tools. */
MAMA_API void mama_pretokenize(const char *text, size_t len,
                               void (*fn)(const char *piece, size_t len, void *user), void *user);

/* ---- BPE trainer ---------------------------------------------------------------
 * Train a byte-level BPE on `n` texts and write out_dir/vocab.json and
 * out_dir/merges.txt (directory must exist; files replaced atomically).
 * The special-token strings are cut out of the texts first; the rest is
 * pre-tokenized as in encoding, and words are counted.  The vocabulary:
 * ids 0..255 the 256 bytes in GPT-2's byte-to-unicode order, then one token
 * per merge, then <|endoftext|> last, `vocab_size` entries in all (the
 * loader then appends the six special tokens, so the model's table has
 * vocab_size + 6 rows).  Each merge joins the adjacent pair with the largest
 * count over all words (weighted by word frequency); ties go to the pair
 * with the smaller (left id, right id).  Pairs seen fewer than 2 times are
 * never merged; when a small corpus runs out of pairs first, the ids left
 * before <|endoftext|> are filled with placeholder tokens "<|reserved_K|>"
 * that encoding never produces, so vocab.json always has exactly
 * vocab_size entries (a templated caption corpus supports only a few
 * hundred merges).  *n_merges (may be NULL) receives the number of merges.
 * Deterministic; cost O(merges x symbols of the distinct words). */
MAMA_API mama_status mama_tokenizer_train(const char *const *texts, int n, int vocab_size, const char *out_dir,
                                          int *n_merges);
/* The same, returning the two files' contents (mama_alloc'ed, free with
 * mama_free). */
MAMA_API mama_status mama_tokenizer_train_memory(const char *const *texts, int n, int vocab_size,
                                                 char **vocab_json, size_t *vocab_len, char **merges_txt,
                                                 size_t *merges_len, int *n_merges);
