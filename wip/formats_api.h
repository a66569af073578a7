/* --------------------------------------------------------------------------
 * 1.x Formats: JSON, string building, atomic files, safetensors, manifest CSV
 * (public declarations; implementation in section 7 / 10)
 * --------------------------------------------------------------------------
 * Every parser here treats its input as hostile: malformed, truncated or
 * absurd input is a MAMA_ERR_FORMAT (or _IO, _NOMEM) whose message names the
 * file and the place (line/column, tensor, CSV line), never a crash.  All
 * memory goes through mama_alloc, so a failed allocation is MAMA_ERR_NOMEM
 * with nothing leaked. */

/* ---- JSON (RFC 8259, strict) -------------------------------------------
 * A parsed document is a tree of mama_json nodes.  Strictness: one value
 * with optional surrounding whitespace; no comments, trailing commas,
 * single quotes, NaN/Infinity, leading zeros, "+1", ".5" or "1."; strings
 * must be valid UTF-8 without raw control characters (< 0x20); escapes
 * \" \\ \/ \b \f \n \r \t \uXXXX are decoded, surrogate pairs are joined and
 * a lone surrogate is an error; \u0000 is kept (so `length` may exceed
 * strlen).  Numbers are parsed in the "C" locale whatever the process
 * locale; a number too large for a double (1e400) is an error, a tiny one
 * becomes 0.  Nesting deeper than MAMA_JSON_MAX_DEPTH is an error (the
 * parser is recursive; this bounds its stack).  Duplicate object keys are
 * kept in document order; mama_json_get returns the first.
 * Error messages read "<source_name>:<line>:<column>: <what>", where line and
 * column are 1-based and the column counts bytes. */
#define MAMA_JSON_MAX_DEPTH 512

typedef enum mama_json_type {
    MAMA_JSON_NULL, MAMA_JSON_BOOL, MAMA_JSON_NUMBER, MAMA_JSON_STRING, MAMA_JSON_ARRAY, MAMA_JSON_OBJECT
} mama_json_type;

typedef struct mama_json mama_json;
struct mama_json {
    mama_json_type type;
    double number;          /* NUMBER; BOOL as 0/1 */
    char *string;           /* STRING: UTF-8, NUL-terminated (escapes incl. \uXXXX and surrogate pairs decoded) */
    size_t length;          /* STRING: byte length (may contain NUL); ARRAY/OBJECT: number of children */
    mama_json *children;    /* ARRAY elements / OBJECT values, `length` of them */
    char **keys;            /* OBJECT keys (decoded, NUL-terminated), `length` of them */
};

/* Parse `len` bytes of `text` (need not be NUL-terminated).  On success *out
 * is a tree owned by the caller (free with mama_json_free); on failure *out
 * is NULL.  source_name (may be NULL: "<json>") only labels messages. */
MAMA_API mama_status mama_json_parse(const char *text, size_t len, const char *source_name, mama_json **out);
MAMA_API void mama_json_free(mama_json *j);
/* The value of `key` in an object; NULL if absent or not an object. */
MAMA_API const mama_json *mama_json_get(const mama_json *object, const char *key);

/* ---- Building text (JSON, CSV, reports) ---------------------------------
 * A growable NUL-terminated byte buffer.  Zero-initialise it
 * (mama_buf b = {0}); each append returns MAMA_OK or MAMA_ERR_NOMEM (the
 * buffer is left unchanged and still valid on failure).  Free with
 * mama_buf_free (which re-zeroes it). */
typedef struct mama_buf { char *data; size_t len, cap; } mama_buf;
MAMA_API mama_status mama_buf_append(mama_buf *b, const void *s, size_t n);
MAMA_API mama_status mama_buf_puts(mama_buf *b, const char *s);
MAMA_API mama_status mama_buf_printf(mama_buf *b, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Append `s` as a quoted JSON string: " and \ escaped, \b \f \n \r \t short
 * forms, other bytes < 0x20 and 0x7f as \u00XX, valid UTF-8 copied as is,
 * and each byte of an invalid UTF-8 sequence replaced by U+FFFD (so the
 * output is always valid JSON). */
MAMA_API mama_status mama_buf_json_string(mama_buf *b, const char *s);
/* Append a JSON number: shortest "%.17g"-exact form in the C locale;
 * NaN and +-Inf (not representable in JSON) are written as null. */
MAMA_API mama_status mama_buf_json_number(mama_buf *b, double x);
MAMA_API void mama_buf_free(mama_buf *b);
/* Fixed-buffer form of mama_buf_json_string: writes the quoted, escaped
 * string and a NUL into out[cap]; MAMA_ERR_INVALID if it does not fit
 * (out then holds ""). */
MAMA_API mama_status mama_json_escape(const char *s, char *out, size_t cap);

/* ---- Files ----------------------------------------------------------------
 * Atomic replacement: the data goes to a temporary file in the same
 * directory ("<path>.tmp.<pid>.<n>", created exclusively), which is flushed,
 * fsync'ed (POSIX) and renamed over `path`; on POSIX the directory is then
 * fsync'ed too.  Readers therefore see the old file or the complete new one,
 * never a torn one, even if the process dies mid-write.  On non-POSIX
 * systems the rename is replaced by remove + rename (not atomic there).
 * On any failure the temporary file is removed and `path` is untouched. */
MAMA_API mama_status mama_write_file_atomic(const char *path, const void *data, size_t n);

/* Streaming form: open, write any number of times, then commit or abort.
 * On POSIX each write is one unbuffered write(2) loop, so write in large
 * pieces.  After a failed write the file is poisoned: commit fails (and
 * cleans up).  commit and abort both free the handle's resources; abort on
 * a committed or failed-to-open handle is a no-op (so `abort` in a
 * cleanup path is always safe); a zeroed handle is also fine. */
typedef struct mama_atomic_file {
    int fd;            /* POSIX descriptor of the temporary file (-1 if none) */
    void *fp;          /* non-POSIX: FILE * of the temporary file */
    char *path;        /* final path     */
    char *tmp_path;    /* temporary path */
    int failed;        /* a write failed */
} mama_atomic_file;
MAMA_API mama_status mama_atomic_open(mama_atomic_file *af, const char *path);
MAMA_API mama_status mama_atomic_write(mama_atomic_file *af, const void *data, size_t n);
MAMA_API mama_status mama_atomic_commit(mama_atomic_file *af);
MAMA_API void mama_atomic_abort(mama_atomic_file *af);

/* Read a whole file into a mama_alloc'ed buffer (plus a NUL byte after the
 * data, not counted in *size); free with mama_free.  Works on pipes and
 * files of unknown size; a directory is MAMA_ERR_IO. */
MAMA_API mama_status mama_read_file(const char *path, unsigned char **data, size_t *size);

/* ---- Half precision --------------------------------------------------------
 * IEEE binary16 and bfloat16 (the top half of a float32) as raw uint16_t.
 * Conversions to f32 are exact (subnormals, Inf, NaN included).  f32->bf16
 * and f32->f16 round to nearest, ties to even; NaN stays a (quiet) NaN, and
 * f32->f16 overflows to +-Inf. */
MAMA_API float    mama_f16_to_f32(uint16_t h);
MAMA_API float    mama_bf16_to_f32(uint16_t h);
MAMA_API uint16_t mama_f32_to_bf16(float f);
MAMA_API uint16_t mama_f32_to_f16(float f);

/* ---- safetensors ------------------------------------------------------------
 * File layout: u64 little-endian N, N bytes of JSON header, then the data
 * section.  The header maps tensor names to {"dtype", "shape",
 * "data_offsets": [begin, end]} (offsets relative to the data section) and
 * may hold "__metadata__": {string: string}.  Validation follows the
 * reference implementation: N <= 100,000,000 and 8 + N <= file size; header
 * is a JSON object; each entry has a known dtype, a shape of non-negative
 * integers (at most MAMA_ST_MAX_DIMS; [] is a scalar), begin <= end,
 * end - begin == numel * dtype size; and the tensors, in offset order, tile
 * the data section exactly (no gap, overlap or trailing bytes).  Duplicate
 * tensor names are an error.  Every error names the file and, where it
 * applies, the tensor.  All multi-byte values are little-endian on disk;
 * the typed readers convert on any host. */
#define MAMA_ST_MAX_DIMS 8
typedef enum mama_dtype {
    MAMA_F32, MAMA_F16, MAMA_BF16, MAMA_I32, MAMA_I64, MAMA_U8,
    MAMA_F64, MAMA_I8, MAMA_I16, MAMA_BOOL
} mama_dtype;
/* Bytes per element (F32 4, BF16 2, ...), and the safetensors spelling
 * ("F32", "BF16", ...); mama_dtype_parse returns 0 and sets *dt, or -1. */
MAMA_API size_t      mama_dtype_size(mama_dtype dt);
MAMA_API const char *mama_dtype_name(mama_dtype dt);
MAMA_API int         mama_dtype_parse(const char *name, mama_dtype *dt);

typedef struct mama_st_tensor {
    char *name;
    mama_dtype dtype;
    int ndim;                          /* 0 for a scalar */
    int64_t shape[MAMA_ST_MAX_DIMS];
    size_t numel;                      /* product of shape (1 for a scalar) */
    size_t offset, nbytes;             /* within the data section (data + data_start) */
} mama_st_tensor;

typedef struct mama_safetensors {
    char *path;              /* file name (or the name given to _open_memory) */
    unsigned char *data;     /* the whole file: mmap'ed, read, or borrowed */
    size_t size;             /* bytes in data */
    size_t data_start;       /* 8 + N: where the data section starts */
    int count;               /* tensors, in header order */
    mama_st_tensor *tensors;
    int meta_count;          /* __metadata__ entries, in header order */
    char **meta_keys;
    char **meta_values;
    int *sorted_;            /* internal: tensor indices sorted by name */
    int storage_;            /* internal: 0 borrowed, 1 mama_alloc, 2 mmap */
} mama_safetensors;

/* Open a file: mmap'ed read-only on POSIX (falls back to reading it whole).
 * On failure *st is zeroed and nothing needs closing. */
MAMA_API mama_status mama_st_open(mama_safetensors *st, const char *path);
/* Parse a file image in memory.  The bytes are borrowed (not copied): they
 * must outlive the handle.  `name` labels messages. */
MAMA_API mama_status mama_st_open_memory(mama_safetensors *st, const void *data, size_t size, const char *name);
MAMA_API void mama_st_close(mama_safetensors *st);  /* safe on a zeroed handle */
/* Lookup by exact name (binary search); NULL if absent. */
MAMA_API const mama_st_tensor *mama_st_find(const mama_safetensors *st, const char *name);
MAMA_API const char *mama_st_meta(const mama_safetensors *st, const char *key);
/* Raw bytes of a tensor (little-endian, NO alignment guarantee: copy with
 * memcpy, or use the readers below).  `t` must come from this handle. */
MAMA_API const void *mama_st_data(const mama_safetensors *st, const mama_st_tensor *t);
/* Typed reads by name.  `count` must equal the tensor's numel (a mismatch is
 * MAMA_ERR_SHAPE naming both); an absent name is MAMA_ERR_INVALID.
 * read_f32: from F32, F16, BF16, F64.  read_bf16: from BF16 (copied), or
 * F32/F16/F64 (rounded).  read_i32: from I32, I64 (each value range-checked),
 * I16, I8, U8, BOOL.  read_i64: from any integer dtype. */
MAMA_API mama_status mama_st_read_f32(const mama_safetensors *st, const char *name, float *dst, size_t count);
MAMA_API mama_status mama_st_read_bf16(const mama_safetensors *st, const char *name, uint16_t *dst, size_t count);
MAMA_API mama_status mama_st_read_i32(const mama_safetensors *st, const char *name, int32_t *dst, size_t count);
MAMA_API mama_status mama_st_read_i64(const mama_safetensors *st, const char *name, int64_t *dst, size_t count);

/* Writer: collect entries, then write the file atomically.  The writer
 * copies names, shapes and metadata but NOT the tensor data: each `data`
 * pointer (host memory, numel * dtype size bytes, native byte order) must
 * stay valid until mama_st_writer_write returns.  Layout as the reference
 * writer: tensors ordered by dtype size (largest first) then name, so every
 * tensor is aligned to its element size; header padded with spaces so the
 * data section starts at a multiple of 8.  Keys are emitted as
 * "__metadata__" (if any) then the tensors in that order.  Duplicate names,
 * names starting "__", invalid UTF-8, negative dims or more than
 * MAMA_ST_MAX_DIMS dims are MAMA_ERR_INVALID at add time.  A writer can be
 * written more than once. */
typedef struct mama_st_writer mama_st_writer;
MAMA_API mama_status mama_st_writer_init(mama_st_writer **w);
MAMA_API mama_status mama_st_writer_add(mama_st_writer *w, const char *name, mama_dtype dt, int ndim,
                                        const int64_t *shape, const void *data);
/* Metadata value for `key` (a later call with the same key replaces it). */
MAMA_API mama_status mama_st_writer_meta(mama_st_writer *w, const char *key, const char *value);
MAMA_API mama_status mama_st_writer_write(mama_st_writer *w, const char *path);
/* The whole file image in memory (mama_buf; free with mama_buf_free). */
MAMA_API mama_status mama_st_writer_serialize(mama_st_writer *w, mama_buf *out);
MAMA_API void mama_st_writer_free(mama_st_writer *w);

/* ---- Manifest CSV (one row per image) -----------------------------------------
 * Columns (header row required, any order, names matched case-insensitively
 * with spaces/hyphens read as underscores, unknown columns ignored):
 *   path (required), patient, study, side, view, procedure, age, race,
 *   ethnicity, image_type, density, birads, mass_shape, mass_density,
 *   calc_type, calc_distribution, cancer, split
 * CSV: RFC 4180 -- fields separated by commas, optionally quoted with ""
 * inside quotes standing for one quote; quoted fields may hold commas and
 * newlines; lines end with LF or CRLF; a UTF-8 BOM is skipped; blank lines
 * are ignored.  Every row must have as many fields as the header.
 * Values (each field is read with surrounding spaces trimmed):
 *   strings: empty, "unknown", "nan", "NaN", "NA", "N/A", "none", "null"
 *            (any case) become the string "unknown";
 *   side:    L/left -> "left", R/right -> "right", B/bilateral/both ->
 *            "bilateral" (any case); other text kept;
 *   birads:  a letter A N B P S M K (any case, stored upper case) or the
 *            category digit 0..6 (mapped to that letter); else "unknown"
 *            if missing, else a bad row;
 *   age:     a number >= 0 (truncated to whole years; "57.9" -> 57), -1 if missing;
 *   density: 1..5 (integral; "3.0" ok), -1 if missing;
 *   cancer:  0/1/true/false/yes/no, -1 if missing;
 *   split:   train / val / validation / test (any case); missing -> hashed.
 * A value that is present but invalid makes the row bad.  A bad row is
 * MAMA_ERR_FORMAT naming the file and the (1-based, physical) line where
 * the row starts, or with skip_bad_rows it is skipped and counted in
 * `skipped` (an unterminated quote still fails: the rest of the file is
 * unreadable).
 * Paths: a relative path is resolved against the manifest's directory
 * (absolute paths, "/..." or "X:\..." or "\\...", are kept).
 * Splits: rows without a split take it from the patient id: h = FNV-1a-64
 * of the id's bytes (offset 14695981039346656037, prime 1099511628211),
 * mixed with the splitmix64 finaliser; h % 100 < 70 train, < 80 val, else
 * test -- so no patient spans two hashed splits (a row without a patient
 * id hashes its path instead).
 * Studies: rows with the same (patient, study) form a study; a row whose
 * study is unknown is a study of its own. */
typedef enum mama_split { MAMA_SPLIT_TRAIN = 0, MAMA_SPLIT_VAL = 1, MAMA_SPLIT_TEST = 2 } mama_split;

typedef struct mama_record {
    /* strings: never NULL after load/add; "unknown" when missing */
    char *path;              /* resolved image path */
    char *patient, *study;
    char *side;              /* "left", "right", "bilateral", other, "unknown" */
    char *view;              /* e.g. "CC", "MLO" */
    char *procedure;         /* e.g. "MG Screening Bilateral" */
    char *race, *ethnicity;
    char *image_type;        /* e.g. "2D" */
    char *birads;            /* "A" "N" "B" "P" "S" "M" "K" or "unknown" */
    char *mass_shape, *mass_density;
    char *calc_type, *calc_distribution;
    int age;                 /* years, -1 unknown */
    int density;             /* 1..5, -1 unknown */
    int cancer;              /* 0/1, -1 unknown */
    int split;               /* mama_split; -1 (in mama_manifest_add) = hash it */
    int study_index;         /* index into mama_manifest.studies (set by indexing) */
    int line;                /* CSV line of the row (0 if added in memory) */
} mama_record;

typedef struct mama_study {
    int first;               /* into mama_manifest.study_members */
    int count;               /* images in the study (>= 1) */
} mama_study;

typedef struct mama_manifest {
    char *path;              /* manifest file ("" for one built in memory) */
    char *dir;               /* its directory, "" if none */
    int count;               /* records */
    mama_record *records;
    int study_count;
    mama_study *studies;
    int *study_members;      /* record indices, grouped by study, ascending within one */
    int skipped;             /* bad rows skipped (skip_bad_rows) */
    int split_counts[3];     /* records per split */
    int cap_;                /* internal: records allocated */
    void *arena_;            /* internal: string storage */
} mama_manifest;

/* Load a manifest file (see above).  On failure *m is zeroed. */
MAMA_API mama_status mama_manifest_load(mama_manifest *m, const char *path, int skip_bad_rows);
/* Parse CSV text in memory: `source_name` labels messages, relative paths
 * are resolved against `base_dir` (NULL or "" = leave them as they are). */
MAMA_API mama_status mama_manifest_parse(mama_manifest *m, const char *text, size_t len,
                                         const char *source_name, const char *base_dir,
                                         int skip_bad_rows);
MAMA_API void mama_manifest_free(mama_manifest *m);  /* safe on a zeroed manifest */
/* Building in memory (the synthetic generator): init, add records (strings
 * copied, NULL -> "unknown"; split -1 = hash; path kept as given), then
 * mama_manifest_index to compute splits, studies and counts (load does all
 * of this itself; adding after indexing needs another index call). */
MAMA_API void        mama_manifest_init(mama_manifest *m);
MAMA_API mama_status mama_manifest_add(mama_manifest *m, const mama_record *r);
MAMA_API mama_status mama_manifest_index(mama_manifest *m);
/* The split a patient id hashes to (the rule above). */
MAMA_API mama_split  mama_split_of_patient(const char *patient);
MAMA_API const char *mama_split_name(int split);  /* "train" "val" "test" */
/* All images of record i's study (i included), ascending; *n gets the count. */
MAMA_API const int  *mama_manifest_study_of(const mama_manifest *m, int i, int *n);
/* A uniformly random OTHER image of record i's study, or -1 if it has none. */
MAMA_API int         mama_manifest_other_view(const mama_manifest *m, int i, mama_rng *rng);
/* Write all columns (header first, CRLF line ends, fields quoted when they
 * hold a comma, quote, CR, LF or edge space; -1 numbers as empty fields),
 * atomically.  A record path that starts with the output file's directory
 * plus '/' is written relative to it, so load -> write -> load into the same
 * directory round-trips. */
MAMA_API mama_status mama_manifest_write(const mama_manifest *m, const char *path);
