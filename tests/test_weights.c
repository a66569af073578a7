/* tests/test_weights.c - the C side of the converter tests (tests/test_convert.py).
 *
 * Without arguments (as `make test` runs it) it checks the committed fixtures in
 * tests/fixtures/convert/, made by `python3 tests/test_convert.py --write-fixtures` from
 * transformers / PEFT / tokenizers models converted with weights/convert.py:
 *   - model.safetensors (Hugging Face Dinov2WithRegisters + GPT-2 with layer-index
 *     scaling + a PEFT LoRA adapter + default heads), input.safetensors (images, ids,
 *     mask) and expected.safetensors (the transformers/PEFT forward in float64):
 *     prenorm tokens, normed patch tokens, text hidden states after ln_f at real-token
 *     positions; relative error max|c - ref| / max|ref| < 1e-4;
 *   - tokenizer/ (the converted tokenizer) with lines.txt (hex UTF-8 texts) and
 *     ids.txt (the Hugging Face tokenizer's ids of each line, the special ids first).
 *
 * With arguments it is the tool tests/test_convert.py drives:
 *   test_weights encode   MODEL INPUT OUTPUT   images/ids -> features (safetensors)
 *   test_weights tokenize TOKDIR LINES OUTPUT  hex lines -> ids (text)
 *   test_weights manifest CSV OUTPUT           manifest -> one TSV line per record
 *   test_weights image    PNG OUTPUT           decoded 8-bit grey pixels (raw, "w h" printed)
 */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include "tests/test_util.h"

#include <stdlib.h>
#include <string.h>

static mama_backend *CPU; /* this program's CPU backend (created in main) */

#define FIX "tests/fixtures/convert/"

static int fail_msg(const char *what) {
    fprintf(stderr, "test_weights: %s: %s\n", what, mama_last_error());
    return 1;
}

/* ---- encode -------------------------------------------------------------- */

typedef struct features {
    int B, T, D, N, Tt, Dt, E, has_img, has_txt;
    float *prenorm, *patch_norm, *pooled, *img_emb, *hidden, *txt_emb;
    int *ids, *mask;
} features;

static void features_free(features *f) {
    mama_free(f->prenorm); mama_free(f->patch_norm); mama_free(f->pooled); mama_free(f->img_emb);
    mama_free(f->hidden); mama_free(f->txt_emb); mama_free(f->ids); mama_free(f->mask);
    memset(f, 0, sizeof *f);
}

/* Run the model on the inputs of `input` (images [B,3,S,S] and/or input_ids +
 * attention_mask [B,T]). */
static mama_status encode(const char *model_path, const char *input_path, features *f) {
    mama_safetensors in;
    mama_model *m = NULL;
    const mama_st_tensor *ti, *tt;
    const mama_config *c;
    float *images = NULL;
    mama_status s;
    int B = 0;
    memset(f, 0, sizeof *f);
    memset(&in, 0, sizeof in);
    MAMA_TRY(mama_st_open(&in, input_path));
    ti = mama_st_find(&in, "images");
    tt = mama_st_find(&in, "input_ids");
    if (ti) B = (int)ti->shape[0];
    if (tt && (int)tt->shape[0] > B) B = (int)tt->shape[0];
    if (B < 1) { mama_st_close(&in); return MAMA_FAIL(MAMA_ERR_INVALID, "%s: no images or input_ids", input_path); }
    s = mama_model_load(&m, model_path, CPU, B);
    if (s != MAMA_OK) { mama_st_close(&in); return s; }
    c = mama_model_config(m);
    f->B = B;
    f->D = c->vision_dim;
    f->N = (c->image_size / c->patch_size) * (c->image_size / c->patch_size);
    f->T = 1 + c->registers + f->N;
    f->Tt = c->context;
    f->Dt = c->text_dim;
    f->E = c->embed_dim;
    if (ti) {
        size_t n = (size_t)ti->numel;
        f->has_img = 1;
        s = mama_alloc((void **)&images, n * sizeof(float), "images");
        if (s == MAMA_OK) s = mama_st_read_f32(&in, "images", images, n);
        if (s == MAMA_OK && n != (size_t)B * c->in_chans * c->image_size * c->image_size)
            s = MAMA_FAIL(MAMA_ERR_SHAPE, "%s: images do not match the model's %dx%d input", input_path,
                          c->image_size, c->image_size);
        if (s == MAMA_OK) s = mama_alloc((void **)&f->prenorm, sizeof(float) * (size_t)B * f->T * f->D, "prenorm");
        if (s == MAMA_OK) s = mama_alloc((void **)&f->patch_norm, sizeof(float) * (size_t)B * f->N * f->D, "patch_norm");
        if (s == MAMA_OK) s = mama_alloc((void **)&f->pooled, sizeof(float) * (size_t)B * f->D, "pooled");
        if (s == MAMA_OK) s = mama_alloc((void **)&f->img_emb, sizeof(float) * (size_t)B * f->E, "img_emb");
        if (s == MAMA_OK) s = mama_encode_images(m, images, B, f->img_emb, f->pooled);
        if (s == MAMA_OK) s = mama_model_vision_tokens(m, B, f->prenorm, f->patch_norm);
    }
    if (s == MAMA_OK && tt) {
        size_t n = (size_t)tt->numel;
        f->has_txt = 1;
        if (n != (size_t)B * f->Tt)
            s = MAMA_FAIL(MAMA_ERR_SHAPE, "%s: input_ids must be [%d, %d]", input_path, B, f->Tt);
        if (s == MAMA_OK) s = mama_alloc((void **)&f->ids, sizeof(int) * n, "ids");
        if (s == MAMA_OK) s = mama_alloc((void **)&f->mask, sizeof(int) * n, "mask");
        if (s == MAMA_OK) s = mama_st_read_i32(&in, "input_ids", (int32_t *)f->ids, n);
        if (s == MAMA_OK) s = mama_st_read_i32(&in, "attention_mask", (int32_t *)f->mask, n);
        if (s == MAMA_OK) s = mama_alloc((void **)&f->hidden, sizeof(float) * n * f->Dt, "hidden");
        if (s == MAMA_OK) s = mama_alloc((void **)&f->txt_emb, sizeof(float) * (size_t)B * f->E, "txt_emb");
        if (s == MAMA_OK) s = mama_encode_texts(m, f->ids, f->mask, B, f->txt_emb);
        if (s == MAMA_OK) s = mama_model_text_hidden(m, B, f->hidden);
    }
    mama_free(images);
    mama_model_free(m);
    mama_st_close(&in);
    if (s != MAMA_OK) features_free(f);
    return s;
}

static mama_status write_features(const features *f, const char *out) {
    mama_st_writer *w = NULL;
    mama_status s;
    int64_t sh[3];
    MAMA_TRY(mama_st_writer_create(&w));
    s = MAMA_OK;
    if (f->has_img) {
        sh[0] = f->B; sh[1] = f->T; sh[2] = f->D;
        s = mama_st_writer_add(w, "prenorm", MAMA_F32, 3, sh, f->prenorm);
        sh[1] = f->N;
        if (s == MAMA_OK) s = mama_st_writer_add(w, "patch_norm", MAMA_F32, 3, sh, f->patch_norm);
        sh[1] = f->D;
        if (s == MAMA_OK) s = mama_st_writer_add(w, "pooled", MAMA_F32, 2, sh, f->pooled);
        sh[1] = f->E;
        if (s == MAMA_OK) s = mama_st_writer_add(w, "img_emb", MAMA_F32, 2, sh, f->img_emb);
    }
    if (s == MAMA_OK && f->has_txt) {
        sh[0] = f->B; sh[1] = f->Tt; sh[2] = f->Dt;
        s = mama_st_writer_add(w, "text_hidden", MAMA_F32, 3, sh, f->hidden);
        sh[1] = f->E;
        if (s == MAMA_OK) s = mama_st_writer_add(w, "txt_emb", MAMA_F32, 2, sh, f->txt_emb);
    }
    if (s == MAMA_OK) s = mama_st_writer_write(w, out);
    mama_st_writer_free(w);
    return s;
}

/* ---- tokenize ------------------------------------------------------------ */

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode one hex line in place; returns its byte length or -1. */
static long unhex(char *s, long n) {
    long i;
    for (i = 0; i + 1 < n; i += 2) {
        int a = hexval((unsigned char)s[i]), b = hexval((unsigned char)s[i + 1]);
        if (a < 0 || b < 0) return -1;
        s[i / 2] = (char)(a * 16 + b);
    }
    if (n % 2) return -1;
    s[n / 2] = 0;
    return n / 2;
}

/* ids of every hex line of `lines` into a mama_buf (one line of ids per text, the
 * special ids and the vocabulary size first). */
static mama_status tokenize(const char *tokdir, const char *lines, mama_buf *out) {
    mama_tokenizer *t = NULL;
    unsigned char *data = NULL;
    size_t size, pos = 0;
    int *ids = NULL, k, cap = 1 << 16;
    mama_status s;
    MAMA_TRY(mama_tokenizer_load(&t, tokdir));
    s = mama_read_file(lines, &data, &size);
    if (s == MAMA_OK) s = mama_alloc((void **)&ids, sizeof(int) * (size_t)cap, "ids");
    if (s == MAMA_OK) {
        s = mama_buf_printf(out, "special");
        for (k = 0; k <= MAMA_TOKEN_EOS && s == MAMA_OK; k++)
            s = mama_buf_printf(out, " %d", mama_tokenizer_special_id(t, (mama_special_token)k));
        if (s == MAMA_OK) s = mama_buf_printf(out, " vocab %d\n", mama_tokenizer_vocab_size(t));
    }
    while (s == MAMA_OK && pos < size) {
        char *line = (char *)data + pos;
        size_t e = pos;
        long len;
        int n = 0, i;
        while (e < size && data[e] != '\n') e++;
        data[e] = 0;
        len = (long)(e - pos);
        if (len > 0 && line[len - 1] == '\r') line[--len] = 0;
        pos = e + 1;
        if (unhex(line, len) < 0) { s = MAMA_FAIL(MAMA_ERR_FORMAT, "%s: a line is not hex", lines); break; }
        s = mama_tokenizer_encode(t, line, ids, cap, &n);
        if (s == MAMA_OK && n > cap) s = MAMA_FAIL(MAMA_ERR_INVALID, "a line has more than %d tokens", cap);
        for (i = 0; s == MAMA_OK && i < n; i++) s = mama_buf_printf(out, i ? " %d" : "%d", ids[i]);
        if (s == MAMA_OK) s = mama_buf_puts(out, "\n");
    }
    mama_free(ids);
    mama_free(data);
    mama_tokenizer_free(t);
    return s;
}

/* ---- manifest -------------------------------------------------------------- */

static mama_status dump_manifest(const char *csv, mama_buf *out) {
    mama_manifest m;
    int i;
    mama_status s;
    MAMA_TRY(mama_manifest_load(&m, csv, 0));
    s = mama_buf_printf(out, "count %d skipped %d studies %d\n", m.count, m.skipped, m.study_count);
    for (i = 0; s == MAMA_OK && i < m.count; i++) {
        const mama_record *r = &m.records[i];
        s = mama_buf_printf(out, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
                            r->path, r->patient, r->study, r->side, r->view, r->procedure, r->age, r->race,
                            r->ethnicity, r->image_type, r->density, r->birads, r->mass_shape, r->mass_density,
                            r->calc_type, r->calc_distribution, r->cancer, mama_split_name(r->split));
    }
    mama_manifest_free(&m);
    return s;
}

static mama_status write_buf(const mama_buf *b, const char *path) {
    return mama_write_file_atomic(path, b->data ? b->data : "", b->len);
}

/* ---- the self-check on committed fixtures ---------------------------------------- */

/* max |a - ref| / max |ref| over the elements where keep (NULL = all) is non-zero */
static double rel_err(const float *a, const float *ref, size_t n, const int *keep, size_t per_keep) {
    double worst = 0, scale = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d;
        if (keep && !keep[i / per_keep]) continue;
        d = fabs((double)a[i] - (double)ref[i]);
        if (!(d <= worst)) worst = d;
        if (fabs((double)ref[i]) > scale) scale = fabs((double)ref[i]);
    }
    return scale > 0 ? worst / scale : worst;
}

static void check_tensor(const mama_safetensors *exp, const char *test, const char *name, const float *got, size_t n,
                         const int *keep, size_t per_keep, const char *what) {
    float *ref = NULL;
    double e;
    const mama_st_tensor *t = mama_st_find(exp, name);
    if (!t || t->numel != n || mama_alloc((void **)&ref, n * sizeof(float), "ref") != MAMA_OK) {
        test_report(0, test, "expected tensor '%s' missing or of the wrong size in %s", name, exp->path);
        return;
    }
    if (mama_st_read_f32(exp, name, ref, n) != MAMA_OK) {
        test_report(0, test, "%s", mama_last_error());
        mama_free(ref);
        return;
    }
    e = rel_err(got, ref, n, keep, per_keep);
    test_report(e < 1e-4, test, "%s, worst rel err=%.3g", what, e);
    mama_free(ref);
}

static int self_check(void) {
    features f;
    mama_safetensors exp;
    mama_buf got;
    unsigned char *want = NULL;
    size_t want_n = 0;
    FILE *probe = fopen(FIX "model.safetensors", "rb");
    memset(&got, 0, sizeof got);
    if (!probe) {
        printf("# %smodel.safetensors not found (run from the repository root); nothing to check\n", FIX);
        return 0;
    }
    fclose(probe);
    if (encode(FIX "model.safetensors", FIX "input.safetensors", &f) != MAMA_OK) {
        test_report(0, "hf_model_load_encode", "%s", mama_last_error());
        return test_finish();
    }
    test_report(1, "hf_model_load_encode", "converted Dinov2WithRegisters + GPT-2 + PEFT LoRA loads (B %d)", f.B);
    memset(&exp, 0, sizeof exp);
    if (mama_st_open(&exp, FIX "expected.safetensors") != MAMA_OK) {
        test_report(0, "hf_expected", "%s", mama_last_error());
    } else {
        check_tensor(&exp, "hf_fixture_prenorm", "prenorm", f.prenorm, (size_t)f.B * f.T * f.D, NULL, 1,
                     "vision tokens before the final norm vs transformers hidden_states[-1]");
        check_tensor(&exp, "hf_fixture_patch_norm", "patch_norm", f.patch_norm, (size_t)f.B * f.N * f.D, NULL, 1,
                     "normed patch tokens vs transformers last_hidden_state[:, 1+R:]");
        check_tensor(&exp, "hf_fixture_text_hidden", "text_hidden", f.hidden, (size_t)f.B * f.Tt * f.Dt, f.mask, (size_t)f.Dt,
                     "GPT-2 + LoRA hidden states after ln_f at real tokens vs PEFT/transformers");
        mama_st_close(&exp);
    }
    features_free(&f);
    if (tokenize(FIX "tokenizer", FIX "lines.txt", &got) != MAMA_OK) {
        test_report(0, "hf_tokenizer_ids", "%s", mama_last_error());
    } else if (mama_read_file(FIX "ids.txt", &want, &want_n) != MAMA_OK) {
        test_report(0, "hf_tokenizer_ids", "%s", mama_last_error());
    } else {
        size_t i, line = 1, bad = 0;
        for (i = 0; i < want_n && i < got.len; i++) {
            if (want[i] != (unsigned char)got.data[i]) { bad = line; break; }
            if (want[i] == '\n') line++;
        }
        if (!bad && want_n != got.len) bad = line;
        test_report(bad == 0, "hf_tokenizer_ids",
                    "converted tokenizer: special ids and ids of %zu texts equal Hugging Face tokenizers'%s",
                    line - 2, bad ? " (first differing line below)" : "");
        if (bad) printf("# first differing line: %zu\n", bad);
    }
    mama_free(want);
    mama_buf_free(&got);
    return test_finish();
}

static int test_main(int argc, char **argv) {
    if (argc == 1) return self_check();
    if (argc == 5 && !strcmp(argv[1], "encode")) {
        features f;
        if (encode(argv[2], argv[3], &f) != MAMA_OK) return fail_msg("encode");
        if (write_features(&f, argv[4]) != MAMA_OK) { features_free(&f); return fail_msg("write"); }
        features_free(&f);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "tokenize")) {
        mama_buf b;
        memset(&b, 0, sizeof b);
        if (tokenize(argv[2], argv[3], &b) != MAMA_OK || write_buf(&b, argv[4]) != MAMA_OK) {
            mama_buf_free(&b);
            return fail_msg("tokenize");
        }
        mama_buf_free(&b);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "manifest")) {
        mama_buf b;
        memset(&b, 0, sizeof b);
        if (dump_manifest(argv[2], &b) != MAMA_OK || write_buf(&b, argv[3]) != MAMA_OK) {
            mama_buf_free(&b);
            return fail_msg("manifest");
        }
        mama_buf_free(&b);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "image")) {
        mama_image im;
        memset(&im, 0, sizeof im);
        if (mama_image_load(argv[2], &im) != MAMA_OK) return fail_msg("image");
        if (mama_write_file_atomic(argv[3], im.pix, (size_t)im.w * im.h) != MAMA_OK) {
            mama_image_free(&im);
            return fail_msg("image write");
        }
        printf("%d %d\n", im.w, im.h);
        mama_image_free(&im);
        return 0;
    }
    fprintf(stderr, "usage: test_weights [encode MODEL INPUT OUT | tokenize TOKDIR LINES OUT | manifest CSV OUT | "
                    "image PNG OUT]\n");
    return 2;
}

int main(int argc, char **argv) {
    int rc;
    if (mama_cpu_backend_create(&CPU) != MAMA_OK) {
        printf("FAIL cpu backend: %s\n", mama_last_error());
        return 1;
    }
    rc = test_main(argc, argv);
    mama_backend_free(CPU);
    return rc;
}
