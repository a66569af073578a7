/* tests/test_text.c - section 8: captions (SPEC A.5-A.7), the GPT-2 byte-level
 * BPE tokenizer and its trainer.
 *
 * Truth sources: the SPEC's caption example and hand-written whole strings;
 * token ids produced by Hugging Face `tokenizers` 0.23.3 (tests/gen_text_fixtures.py,
 * committed in tests/fixtures/text/: cases.txt, unicode16.txt with letters
 * and digits new in Unicode 15-16, hf_classes.txt with the class tokenizers'
 * regex gives every code point); the shipped vocabulary
 * weights/tiny_vocab, which the trainer must reproduce byte for byte.
 *
 * Modes (used to regenerate the shipped files):
 *   build/test_text                          run the tests (from the repo root)
 *   build/test_text --make-vocab DIR         train the tiny vocabulary into DIR
 *   build/test_text --emit-corpus FILE       the training corpus, one caption a line
 *   build/test_text --emit-captions FILE     captions for the id fixtures */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocation hooks that can fail the k-th allocation and count live blocks,
 * so that error paths are tested for leaks. */
static long t_alloc_calls = 0, t_fail_at = -1, t_live = 0;
static void *t_malloc(size_t n) {
    void *p;
    if (t_fail_at >= 0 && t_alloc_calls++ == t_fail_at) return NULL;
    p = malloc(n);
    if (p) t_live++;
    return p;
}
static void *t_realloc(void *p, size_t n) {
    void *q;
    if (t_fail_at >= 0 && t_alloc_calls++ == t_fail_at) return NULL;
    q = realloc(p, n);
    if (q && !p) t_live++;
    return q;
}
static void t_free(void *p) {
    if (p) t_live--;
    free(p);
}
#define MAMA_MALLOC(sz) t_malloc(sz)
#define MAMA_REALLOC(p, sz) t_realloc(p, sz)
#define MAMA_FREE(p) t_free(p)

#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_TOKENIZER_TRAIN_IMPLEMENTATION
#include "mama_tokenizer_train.h"
#include "test_util.h"

/* ---------------------------------------------------------------------------
 * The deterministic caption corpus behind weights/tiny_vocab and the
 * fixtures: random EMBED-like metadata (seeded mama_rng) -> A.6 captions,
 * odd ones masked as in training (A.5, p = 0.8), plus every zeroshot
 * caption (A.7) of every 50th image.  Changing anything here changes the
 * shipped vocabulary (the test then fails until it is regenerated).
 * ------------------------------------------------------------------------- */

#define TEXT_CORPUS_SEED 20240601u
#define TEXT_CORPUS_CAPTIONS 4000
#define TINY_VOCAB_BASE_SIZE 2042 /* + 6 special tokens = 2048 */

static const char *const corpus_procedures[] = {
    "MG Screening Bilateral", "MG Screen Bilat w/Tomo/CAD Stnd Protocol", "MG Diagnostic Bilateral",
    "MG Diagnostic Left", "MG Diagnostic Right", "MG Diag Bilat w/Tomo/CAD", "MG Diagnostic Mammo Bilateral w/ Tomo",
    "MG Diag Left w/Tomo/CAD", "MG Diag Right w/Tomo/CAD", "MG Additional Views Left", "MG Additional Views Right",
    "MG Stereotactic Biopsy Left", "MG Stereotactic Biopsy Right", "MG Needle Localization Left",
    "MG Screening Bilateral w/ CAD", "MG Specimen Radiography", "MG Diagnostic Bilateral Implants"};
static const char *const corpus_races[] = {
    "Caucasian or White", "African American or Black", "Asian", "Native Hawaiian or Other Pacific Islander",
    "American Indian or Alaskan Native", "Multiple", "Unknown, Unavailable or Unreported", "Not Recorded",
    "Patient Declines"};
static const char *const corpus_ethnicities[] = {"Hispanic or Latino", "Non-Hispanic or Latino", "Unknown"};
static const char *const corpus_image_types[] = {"2D", "2D", "2D", "2D", "C-View", "Tomosynthesis"};
static const char *const corpus_sides[] = {"L", "R", "B"};
static const char *const corpus_views[] = {"CC", "MLO", "CC", "MLO", "ML", "XCCL", "LM", "AT", "SIO", "FB", "LMO"};
static const char *const corpus_mass_shapes[] = {
    "oval", "round", "irregular", "lobulated", "spiculated", "architectural distortion", "asymmetric",
    "focal asymmetry", "developing asymmetry", "global asymmetry", "lymph node", "generic", "tubular"};
static const char *const corpus_mass_densities[] = {"high density", "equal density", "low density",
                                                    "fat containing", "isodense"};
static const char *const corpus_calc_types[] = {
    "amorphous", "coarse heterogeneous", "fine linear branching", "pleomorphic", "fine pleomorphic", "punctate",
    "dystrophic", "milk of calcium", "eggshell", "rim", "skin", "vascular", "coarse", "large rod-like", "round",
    "lucent centered", "suture", "benign", "fine linear", "popcorn-like"};
static const char *const corpus_calc_distributions[] = {"grouped", "clustered", "linear", "segmental",
                                                        "regional", "diffuse", "scattered"};

#define CORPUS_PICK(rng, arr) ((arr)[mama_rng_below((rng), (uint32_t)(sizeof(arr) / sizeof((arr)[0])))])

/* Metadata of one random image: each field missing with probability 0.08,
 * a mass with probability 0.3, calcifications with probability 0.25. */
static void corpus_random_fields(mama_rng *r, mama_caption_fields *f) {
    mama_caption_fields_init(f);
    f->procedure = mama_rng_uniform(r) < 0.08f ? NULL : CORPUS_PICK(r, corpus_procedures);
    f->race = mama_rng_uniform(r) < 0.08f ? NULL : CORPUS_PICK(r, corpus_races);
    f->ethnicity = mama_rng_uniform(r) < 0.08f ? NULL : CORPUS_PICK(r, corpus_ethnicities);
    f->image_type = mama_rng_uniform(r) < 0.08f ? NULL : CORPUS_PICK(r, corpus_image_types);
    f->side = mama_rng_uniform(r) < 0.08f ? NULL : CORPUS_PICK(r, corpus_sides);
    f->view = mama_rng_uniform(r) < 0.08f ? NULL : CORPUS_PICK(r, corpus_views);
    f->age = mama_rng_uniform(r) < 0.08f ? -1 : 18 + (int)mama_rng_below(r, 83);
    f->density = mama_rng_uniform(r) < 0.08f ? -1 : 1 + (int)mama_rng_below(r, 5);
    f->birads = mama_rng_uniform(r) < 0.05f ? 0 : "ANBPSMK"[mama_rng_below(r, 7)];
    if (mama_rng_uniform(r) < 0.3f) {
        f->mass_shape = CORPUS_PICK(r, corpus_mass_shapes);
        f->mass_density = mama_rng_uniform(r) < 0.15f ? NULL : CORPUS_PICK(r, corpus_mass_densities);
    }
    if (mama_rng_uniform(r) < 0.25f) {
        f->calc_type = CORPUS_PICK(r, corpus_calc_types);
        f->calc_distribution = mama_rng_uniform(r) < 0.15f ? NULL : CORPUS_PICK(r, corpus_calc_distributions);
    }
}

/* The corpus: n_captions captions (odd ones masked with p = 0.8), then the
 * 13 zeroshot captions of every 50th image.  Returns an array of
 * mama_alloc'ed strings (free with corpus_free), NULL on failure. */
static char **corpus_make(int n_captions, int *count) {
    mama_rng r;
    char **texts = NULL;
    int i, n = 0, cap = n_captions + (n_captions / 50 + 1) * 13;
    *count = 0;
    if (mama_alloc((void **)&texts, (size_t)cap * sizeof(char *), "corpus") != MAMA_OK) return NULL;
    mama_rng_seed(&r, TEXT_CORPUS_SEED);
    for (i = 0; i < n_captions; i++) {
        mama_caption_fields f;
        corpus_random_fields(&r, &f);
        if (i % 2) mama_caption_mask(&f, &f, 0.8f, &r);
        if (mama_caption_build_alloc(&f, &texts[n]) != MAMA_OK) goto fail;
        n++;
        if (i % 50 == 0) {
            int task, c;
            corpus_random_fields(&r, &f);
            for (task = 0; task < 3; task++)
                for (c = 0; c < mama_zeroshot_num_classes((mama_zeroshot_task)task); c++) {
                    if (mama_zeroshot_caption_alloc((mama_zeroshot_task)task, c, &f, &texts[n]) != MAMA_OK) goto fail;
                    n++;
                }
        }
    }
    *count = n;
    return texts;
fail:
    while (n > 0) mama_free(texts[--n]);
    mama_free(texts);
    return NULL;
}

static void corpus_free(char **texts, int n) {
    int i;
    for (i = 0; i < n; i++) mama_free(texts[i]);
    mama_free(texts);
}

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */
static char g_root[256] = ""; /* "" or "../" so that paths work from build/ too */

static void find_root(void) {
    FILE *f = fopen("tests/fixtures/text/cases.txt", "rb");
    if (f) { fclose(f); return; }
    f = fopen("../tests/fixtures/text/cases.txt", "rb");
    if (f) { fclose(f); strcpy(g_root, "../"); }
}
static const char *path_of(const char *rel) {
    static char buf[4][512];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s%s", g_root, rel);
    return buf[k];
}

static int read_all(const char *path, char **data, size_t *n) {
    unsigned char *d = NULL;
    if (mama_read_file(path, &d, n) != MAMA_OK) return 0;
    *data = (char *)d;
    return 1;
}

static void example_fields(mama_caption_fields *f) {
    mama_caption_fields_init(f);
    f->procedure = "MG Screening Bilateral";
    f->race = "Caucasian or White";
    f->ethnicity = "Non-Hispanic or Latino";
    f->age = 57;
    f->image_type = "2D";
    f->side = "L";
    f->view = "MLO";
    f->density = 3;
    f->birads = 'S';
    f->mass_shape = "irregular";
    f->mass_density = "high density";
    f->calc_type = "pleomorphic";
    f->calc_distribution = "grouped";
}

static const char *const SPEC_EXAMPLE =
    "Procedure reported: MG Screening Bilateral; Reason for procedure: screening; Patient info: This patient is "
    "Caucasian or White, Non-Hispanic or Latino, and 57 years old.  Image info: This is a 2D full-field digital "
    "mammogram of the left breast with MLO view.  Breast composition: The breast is heterogeneously dense. This "
    "may lower the sensitivity of mammography.  Findings: The mammogram shows that a suspicious abnormality is "
    "present. The mass is irregular and high density.  A grouped pleomorphic calcification is present.  "
    "Impressions: BI-RADS Category 4: suspicious abnormality. Overall Assessment: Suspicious abnormality. ";

/* The prefix ("Procedure reported" .. "Image info") of the example. */
static const char *const EXAMPLE_PREFIX =
    "Procedure reported: MG Screening Bilateral; Reason for procedure: screening; Patient info: This patient is "
    "Caucasian or White, Non-Hispanic or Latino, and 57 years old.  Image info: This is a 2D full-field digital "
    "mammogram of the left breast with MLO view.  ";

static int caption_is(const mama_caption_fields *f, const char *want, const char *name) {
    char buf[4096];
    size_t len = 0;
    mama_status s = mama_caption_build(f, buf, sizeof buf, &len);
    int ok = s == MAMA_OK && strcmp(buf, want) == 0 && len == strlen(want);
    if (!ok) printf("  got : [%s]\n  want: [%s]\n", s == MAMA_OK ? buf : mama_last_error(), want);
    test_report(ok, name, "whole caption string, %zu bytes", len);
    return ok;
}

/* ---------------------------------------------------------------------------
 * Captions
 * ------------------------------------------------------------------------- */
static void test_captions(void) {
    mama_caption_fields f;
    char buf[4096], *a = NULL;
    size_t len = 0;
    mama_status s;

    example_fields(&f);
    caption_is(&f, SPEC_EXAMPLE, "caption_spec_example");
    test_report(mama_caption_count_sentences(SPEC_EXAMPLE) == 11, "caption_example_sentences",
                "'.' and ';' count of the SPEC example = %d (want 11)", mama_caption_count_sentences(SPEC_EXAMPLE));
    s = mama_caption_build_alloc(&f, &a);
    test_report(s == MAMA_OK && a && strcmp(a, SPEC_EXAMPLE) == 0, "caption_build_alloc", "allocating variant");
    mama_free(a);
    /* measuring, and a buffer one byte short */
    s = mama_caption_build(&f, NULL, 0, &len);
    test_report(s == MAMA_OK && len == strlen(SPEC_EXAMPLE), "caption_measure", "len %zu", len);
    s = mama_caption_build(&f, buf, strlen(SPEC_EXAMPLE), &len);
    test_report(s == MAMA_ERR_INVALID && len == strlen(SPEC_EXAMPLE) && strlen(buf) == strlen(SPEC_EXAMPLE) - 1 &&
                    strncmp(buf, SPEC_EXAMPLE, strlen(buf)) == 0,
                "caption_small_buffer", "INVALID, NUL-terminated prefix, full length reported");

    /* density 1 and 2: no extra sentence; no mass / calcification */
    example_fields(&f);
    f.density = 1; f.birads = 'N';
    f.mass_shape = f.mass_density = f.calc_type = f.calc_distribution = NULL;
    caption_is(&f,
               "Procedure reported: MG Screening Bilateral; Reason for procedure: screening; Patient info: This "
               "patient is Caucasian or White, Non-Hispanic or Latino, and 57 years old.  Image info: This is a 2D "
               "full-field digital mammogram of the left breast with MLO view.  Breast composition: The breast is "
               "almost entirely fat.  Findings: The mammogram shows that no significant masses, calcification, or "
               "other abnormalities are present.  Impressions: BI-RADS Category 1: negative. Overall Assessment: "
               "Negative. ",
               "caption_density1_negative");
    f.density = 2; f.birads = 'B'; f.side = "right"; f.view = "CC";
    caption_is(&f,
               "Procedure reported: MG Screening Bilateral; Reason for procedure: screening; Patient info: This "
               "patient is Caucasian or White, Non-Hispanic or Latino, and 57 years old.  Image info: This is a 2D "
               "full-field digital mammogram of the right breast with CC view.  Breast composition: The breast is "
               "scattered fibroglandular densities.  Findings: The mammogram shows that a benign finding is "
               "present.  Impressions: BI-RADS Category 2: benign finding. Overall Assessment: Benign. ",
               "caption_density2_benign");
    /* density 4 extra sentence, mass only, missing age, diagnostic, Hispanic */
    example_fields(&f);
    f.procedure = "MG Diagnostic Left"; f.age = -1; f.ethnicity = "hispanic or latino"; f.density = 4;
    f.birads = 'M'; f.calc_type = NULL; f.race = NULL;
    caption_is(&f,
               "Procedure reported: MG Diagnostic Left; Reason for procedure: diagnostic; Patient info: This "
               "patient is unknown, Hispanic or Latino, and unknown years old.  Image info: This is a 2D "
               "full-field digital mammogram of the left breast with MLO view.  Breast composition: The breast is "
               "extremely dense. This may lower the sensitivity of mammography.  Findings: The mammogram shows "
               "that a highly suggestive of malignancy is present, a biopsy is recommended. The mass is irregular "
               "and high density.  Impressions: BI-RADS Category 5: highly suggestive of malignancy. Overall "
               "Assessment: Highly suggestive of malignancy. ",
               "caption_mass_only_missing_age_diagnostic");
    /* calcification only (mass density missing), reason empty, bilateral, K */
    example_fields(&f);
    f.procedure = "MG Stereotactic Biopsy"; f.mass_density = ""; f.side = "B"; f.birads = 'K'; f.density = 5;
    f.ethnicity = NULL;
    caption_is(&f,
               "Procedure reported: MG Stereotactic Biopsy; Reason for procedure: ; Patient info: This patient is "
               "Caucasian or White, Non-Hispanic or Latino, and 57 years old.  Image info: This is a 2D full-field "
               "digital mammogram of the bilateral breast with MLO view.  Breast composition: The breast is normal "
               "male dense.  Findings: The mammogram shows that a known biopsy-proven malignant mass is present.  "
               "A grouped pleomorphic calcification is present.  Impressions: BI-RADS Category 6: known "
               "biopsy-proven malignancy. Overall Assessment: Known biopsy-proven malignancy. ",
               "caption_calc_only_reason_empty");
    /* "screen" in any case wins over "diag"; letters A and P */
    example_fields(&f);
    f.procedure = "mg SCREENING diag"; f.birads = 'A';
    f.mass_shape = NULL; f.calc_distribution = NULL;
    caption_is(&f,
               "Procedure reported: mg SCREENING diag; Reason for procedure: screening; Patient info: This patient "
               "is Caucasian or White, Non-Hispanic or Latino, and 57 years old.  Image info: This is a 2D "
               "full-field digital mammogram of the left breast with MLO view.  Breast composition: The breast is "
               "heterogeneously dense. This may lower the sensitivity of mammography.  Findings: The mammogram "
               "shows that an additional imaging is recommended.  Impressions: BI-RADS Category 0: additional "
               "imaging required. Overall Assessment: Additional imaging is recommended. ",
               "caption_screen_any_case_letter_A");
    f.birads = 'p';
    s = mama_caption_build(&f, buf, sizeof buf, NULL);
    test_report(s == MAMA_OK && strstr(buf, "shows that a probably benign finding is present.  Impressions: BI-RADS "
                                            "Category 3: probably benign finding. Overall Assessment: Probably benign. ") != NULL,
                "caption_letter_P_lowercase", "lower-case letter accepted, category 3 texts");
    /* everything missing */
    mama_caption_fields_init(&f);
    caption_is(&f,
               "Procedure reported: unknown; Reason for procedure: ; Patient info: This patient is unknown, "
               "Non-Hispanic or Latino, and unknown years old.  Image info: This is a unknown full-field digital "
               "mammogram of the unknown breast with unknown view.  Breast composition: The breast is unknown.  "
               "Findings: The mammogram shows that unknown.  Impressions: BI-RADS Category unknown: unknown. "
               "Overall Assessment: unknown. ",
               "caption_all_missing");
    /* invalid inputs */
    example_fields(&f);
    f.density = 6;
    s = mama_caption_build(&f, buf, sizeof buf, NULL);
    test_report(s == MAMA_ERR_INVALID && strstr(mama_last_error(), "density") != NULL, "caption_bad_density",
                "density 6 -> %s (%s)", mama_status_name(s), mama_last_error());
    example_fields(&f);
    f.birads = 'X';
    s = mama_caption_build(&f, buf, sizeof buf, NULL);
    test_report(s == MAMA_ERR_INVALID, "caption_bad_letter", "letter X -> %s", mama_status_name(s));
}

static void test_masking(void) {
    mama_caption_fields f, m;
    mama_rng r, r2;
    char want[4096];
    int k, counts[6] = {0, 0, 0, 0, 0, 0}, same = 1;
    const int N = 20000;
    example_fields(&f);
    mama_rng_seed(&r, 7);
    mama_caption_mask(&f, &m, 1.0f, &r);
    caption_is(&m,
               "Procedure reported: MG Screening Bilateral; Reason for procedure: screening; Patient info: This "
               "patient is unknown, unknown, and unknown years old.  Image info: This is a unknown full-field "
               "digital mammogram of the unknown breast with unknown view.  Breast composition: The breast is "
               "heterogeneously dense. This may lower the sensitivity of mammography.  Findings: The mammogram "
               "shows that a suspicious abnormality is present. The mass is irregular and high density.  A grouped "
               "pleomorphic calcification is present.  Impressions: BI-RADS Category 4: suspicious abnormality. "
               "Overall Assessment: Suspicious abnormality. ",
               "mask_p1_all_six");
    mama_caption_mask(&f, &m, 0.0f, &r);
    caption_is(&m, SPEC_EXAMPLE, "mask_p0_none");
    /* p = 0.8: each field masked independently with frequency 0.8 */
    mama_rng_seed(&r, 11);
    mama_rng_seed(&r2, 11);
    for (k = 0; k < N; k++) {
        mama_caption_fields m2;
        mama_caption_mask(&f, &m, 0.8f, &r);
        mama_caption_mask(&f, &m2, 0.8f, &r2);
        same &= memcmp(&m, &m2, sizeof m) == 0;
        counts[0] += m.age < 0;
        counts[1] += strcmp(m.race, "unknown") == 0;
        counts[2] += strcmp(m.ethnicity, "unknown") == 0;
        counts[3] += strcmp(m.image_type, "unknown") == 0;
        counts[4] += strcmp(m.side, "unknown") == 0;
        counts[5] += strcmp(m.view, "unknown") == 0;
    }
    {
        double worst = 0;
        for (k = 0; k < 6; k++) {
            double d = fabs((double)counts[k] / N - 0.8);
            if (d > worst) worst = d;
        }
        /* binomial std sqrt(.8*.2/20000) = 0.0028; 0.015 is > 5 sigma */
        test_report(worst < 0.015, "mask_p08_frequency", "masked fraction of each field vs 0.8, worst err=%g", worst);
    }
    test_report(same, "mask_deterministic", "same seed -> same masks over %d draws", N);
    /* masking leaves the other fields alone */
    snprintf(want, sizeof want, "%s", SPEC_EXAMPLE);
    mama_rng_seed(&r, 3);
    mama_caption_mask(&f, &m, 1.0f, &r);
    test_report(strcmp(m.procedure, f.procedure) == 0 && m.density == 3 && m.birads == 'S' &&
                    strcmp(m.calc_type, "pleomorphic") == 0,
                "mask_keeps_other_fields", "procedure, density, BI-RADS, findings untouched");
}

static int zs_is(mama_zeroshot_task task, int c, const mama_caption_fields *f, const char *want, const char *name) {
    char buf[4096];
    size_t len = 0;
    mama_status s = mama_zeroshot_caption(task, c, f, buf, sizeof buf, &len);
    int ok = s == MAMA_OK && strcmp(buf, want) == 0;
    if (!ok) printf("  got : [%s]\n  want: [%s]\n", s == MAMA_OK ? buf : mama_last_error(), want);
    test_report(ok, name, "task %d class %d whole string", (int)task, c);
    return ok;
}

static void test_zeroshot(void) {
    static const char *const birads_part[7] = {
        "Findings: The mammogram shows that an additional imaging is recommended.  Impressions: BI-RADS Category 0: "
        "additional imaging required. Overall Assessment: Additional imaging is recommended. ",
        "Findings: The mammogram shows that no significant masses, calcification, or other abnormalities are "
        "present.  Impressions: BI-RADS Category 1: negative. Overall Assessment: Negative. ",
        "Findings: The mammogram shows that a benign finding is present.  Impressions: BI-RADS Category 2: benign "
        "finding. Overall Assessment: Benign. ",
        "Findings: The mammogram shows that a probably benign finding is present.  Impressions: BI-RADS Category "
        "3: probably benign finding. Overall Assessment: Probably benign. ",
        "Findings: The mammogram shows that a suspicious abnormality is present.  Impressions: BI-RADS Category 4: "
        "suspicious abnormality. Overall Assessment: Suspicious abnormality. ",
        "Findings: The mammogram shows that a highly suggestive of malignancy is present, a biopsy is "
        "recommended.  Impressions: BI-RADS Category 5: highly suggestive of malignancy. Overall Assessment: "
        "Highly suggestive of malignancy. ",
        "Findings: The mammogram shows that a known biopsy-proven malignant mass is present.  Impressions: "
        "BI-RADS Category 6: known biopsy-proven malignancy. Overall Assessment: Known biopsy-proven malignancy. "};
    static const char *const density_part[4] = {
        "Breast composition: The breast is almost entirely fat. ",
        "Breast composition: The breast is scattered fibroglandular densities. ",
        "Breast composition: The breast is heterogeneously dense. This may lower the sensitivity of mammography. ",
        "Breast composition: The breast is extremely dense. This may lower the sensitivity of mammography. "};
    mama_caption_fields f;
    char want[4096], buf[64];
    int c;
    mama_status s;
    example_fields(&f);
    test_report(mama_zeroshot_num_classes(MAMA_ZEROSHOT_BIRADS) == 7 && mama_zeroshot_num_classes(MAMA_ZEROSHOT_DENSITY) == 4 &&
                    mama_zeroshot_num_classes(MAMA_ZEROSHOT_CANCER) == 2,
                "zeroshot_num_classes", "7, 4, 2");
    for (c = 0; c < 7; c++) {
        char name[64];
        snprintf(want, sizeof want, "%s%s", EXAMPLE_PREFIX, birads_part[c]);
        snprintf(name, sizeof name, "zeroshot_birads_%c", "ANBPSMK"[c]);
        zs_is(MAMA_ZEROSHOT_BIRADS, c, &f, want, name);
    }
    for (c = 0; c < 4; c++) {
        char name[64];
        snprintf(want, sizeof want, "%s%s", EXAMPLE_PREFIX, density_part[c]);
        snprintf(name, sizeof name, "zeroshot_density_%d", c + 1);
        zs_is(MAMA_ZEROSHOT_DENSITY, c, &f, want, name);
    }
    /* the prefix is never masked: it comes from f as given (no age -> unknown) */
    zs_is(MAMA_ZEROSHOT_CANCER, 0, NULL,
          "Findings: The mammogram shows that Cancer negative: overall healthy or just benign finding Impressions: "
          "BI-RADS Category N or B: Negative or Benign. Overall Assessment: Negative or Benign",
          "zeroshot_cancer_no");
    zs_is(MAMA_ZEROSHOT_CANCER, 1, &f,
          "Findings: The mammogram shows that Cancer positive: screening image with known biopsy-proven malignancy "
          "or suspicious abnormality found Impressions: BI-RADS Category A: Additional imaging required with "
          "biopsy-proven malignancy or suspicious abnormality found. Overall Assessment: Additional imaging "
          "required with biopsy-proven malignancy or suspicious abnormality found",
          "zeroshot_cancer_yes");
    s = mama_zeroshot_caption(MAMA_ZEROSHOT_DENSITY, 4, &f, buf, sizeof buf, NULL);
    test_report(s == MAMA_ERR_INVALID, "zeroshot_bad_class", "density class 4 -> %s", mama_status_name(s));
    s = mama_zeroshot_caption(MAMA_ZEROSHOT_BIRADS, 0, &f, buf, sizeof buf, NULL);
    test_report(s == MAMA_ERR_INVALID, "zeroshot_small_buffer", "64-byte buffer -> %s", mama_status_name(s));
}

static void test_tokenizer_input(void) {
    char buf[512];
    size_t len;
    mama_status s = mama_caption_tokenizer_input("Age: 57. Side; left.", buf, sizeof buf, &len);
    const char *want = "<|startoftext|>Age: 57<|separatetext|> Side<|separatetext|> left<|separatetext|><|endoftext|>";
    test_report(s == MAMA_OK && strcmp(buf, want) == 0 && len == strlen(want), "tokenizer_input_string",
                "bos + '.'/';' -> sep + eos: [%s]", buf);
}

/* ---------------------------------------------------------------------------
 * Tokenizer against the fixtures
 * ------------------------------------------------------------------------- */
typedef struct tcase {
    char *text;
    size_t text_len;
    char *pieces; /* hex pieces separated by spaces, as in the file */
    int *ids[2];
    int n_ids[2];
} tcase;

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}
static char *unhex(const char *s, size_t n, size_t *out_len) {
    char *o = (char *)malloc(n / 2 + 1);
    size_t i;
    for (i = 0; i + 1 < n + 1 && 2 * i + 1 < n + 1 && 2 * i < n; i++) o[i] = (char)(hexval(s[2 * i]) * 16 + hexval(s[2 * i + 1]));
    o[n / 2] = 0;
    *out_len = n / 2;
    return o;
}
static int *parse_ids(const char *s, int *n) {
    int cap = 16, *v = (int *)malloc(sizeof(int) * 16);
    char *end;
    *n = 0;
    for (;;) {
        long x;
        while (*s == ' ') s++;
        if (!*s || *s == '\n') break;
        x = strtol(s, &end, 10);
        if (end == s) break;
        if (*n == cap) { cap *= 2; v = (int *)realloc(v, sizeof(int) * (size_t)cap); }
        v[(*n)++] = (int)x;
        s = end;
    }
    return v;
}

static tcase *load_cases(const char *path, int *n_cases) {
    FILE *f = fopen(path, "rb");
    static char line[1 << 20];
    tcase *cs = NULL;
    int n = 0, cap = 0;
    *n_cases = 0;
    if (!f) return NULL;
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
        if (l == 0 || line[0] == '#') continue;
        if (line[0] == 'T') {
            if (n == cap) { cap = cap ? 2 * cap : 64; cs = (tcase *)realloc(cs, sizeof(tcase) * (size_t)cap); }
            memset(&cs[n], 0, sizeof cs[n]);
            cs[n].text = unhex(line + (l > 1 ? 2 : 1), l > 1 ? l - 2 : 0, &cs[n].text_len);
            n++;
        } else if (n > 0 && line[0] == 'P') {
            cs[n - 1].pieces = (char *)malloc(l + 1);
            strcpy(cs[n - 1].pieces, l > 1 ? line + 2 : "");
        } else if (n > 0 && (line[0] == 'A' || line[0] == 'B')) {
            int k = line[0] - 'A';
            cs[n - 1].ids[k] = parse_ids(line + 1, &cs[n - 1].n_ids[k]);
        }
    }
    fclose(f);
    *n_cases = n;
    return cs;
}
static void free_cases(tcase *cs, int n) {
    int i;
    for (i = 0; i < n; i++) { free(cs[i].text); free(cs[i].pieces); free(cs[i].ids[0]); free(cs[i].ids[1]); }
    free(cs);
}

typedef struct piece_acc { char buf[1 << 16]; size_t len; } piece_acc;
static void acc_piece(const char *p, size_t n, void *user) {
    piece_acc *a = (piece_acc *)user;
    size_t i;
    if (a->len) a->buf[a->len++] = ' ';
    for (i = 0; i < n && a->len + 3 < sizeof a->buf; i++) {
        static const char hx[] = "0123456789abcdef";
        a->buf[a->len++] = hx[(unsigned char)p[i] >> 4];
        a->buf[a->len++] = hx[(unsigned char)p[i] & 15];
    }
    a->buf[a->len] = 0;
}

static int ids_equal(const int *a, int na, const int *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int) * (size_t)na) == 0);
}

/* Encode every case with tokenizer t, compare with column k. */
static void check_cases(const mama_tokenizer *t, const tcase *cs, int n, int k, const char *name) {
    int i, bad = 0, total = 0, first_bad = -1, roundtrip_bad = 0;
    static int ids[1 << 16];
    for (i = 0; i < n; i++) {
        int got = 0;
        char *dec = NULL;
        if (!cs[i].ids[k]) continue;
        if (strlen(cs[i].text) != cs[i].text_len) continue; /* embedded NUL: not a C string */
        if (mama_tokenizer_encode(t, cs[i].text, ids, 1 << 16, &got) != MAMA_OK ||
            !ids_equal(ids, got, cs[i].ids[k], cs[i].n_ids[k])) {
            if (first_bad < 0) first_bad = i;
            bad++;
        }
        total += got;
        if (mama_tokenizer_decode_alloc(t, ids, got, 0, &dec) != MAMA_OK || strcmp(dec, cs[i].text) != 0) roundtrip_bad++;
        mama_free(dec);
    }
    if (first_bad >= 0) {
        int j, got = 0;
        mama_tokenizer_encode(t, cs[first_bad].text, ids, 1 << 16, &got);
        printf("  case %d [%s]\n  got :", first_bad, cs[first_bad].text);
        for (j = 0; j < got && j < 40; j++) printf(" %d", ids[j]);
        printf("\n  want:");
        for (j = 0; j < cs[first_bad].n_ids[k] && j < 40; j++) printf(" %d", cs[first_bad].ids[k][j]);
        printf("\n");
    }
    test_report(bad == 0, name, "ids vs Hugging Face tokenizers on %d texts (%d tokens), %d differ", n, total, bad);
    {
        char rt[128];
        snprintf(rt, sizeof rt, "%s_roundtrip", name);
        test_report(roundtrip_bad == 0, rt, "decode(encode(text)) == text, %d differ", roundtrip_bad);
    }
}

/* Pre-tokenizer: pieces equal to tokenizers' ByteLevel pre_tokenize_str. */
static void check_pieces(const tcase *cs, int n, const char *name) {
    int i, bad = 0, first_bad = -1;
    for (i = 0; i < n; i++) {
        static piece_acc acc;
        acc.len = 0;
        acc.buf[0] = 0;
        if (!cs[i].pieces) continue;
        mama_pretokenize(cs[i].text, cs[i].text_len, acc_piece, &acc);
        if (strcmp(acc.buf, cs[i].pieces) != 0) {
            bad++;
            if (first_bad < 0) { first_bad = i; printf("  case %d\n  got : %s\n  want: %s\n", i, acc.buf, cs[i].pieces); }
        }
    }
    test_report(bad == 0, name, "GPT-2 regex pieces vs tokenizers.pre_tokenizers.ByteLevel on %d texts, %d differ", n, bad);
}

static void test_tokenizer_fixtures(void) {
    tcase *cs;
    int n;
    mama_tokenizer *tiny = NULL, *hf = NULL, *hf_json = NULL, *hf_json_str = NULL;
    mama_status s;
    cs = load_cases(path_of("tests/fixtures/text/cases.txt"), &n);
    test_report(cs != NULL && n > 50, "fixture_cases_loaded", "%d cases from tests/fixtures/text/cases.txt", n);
    if (!cs) return;
    check_pieces(cs, n, "pretokenize_vs_hf");

    s = mama_tokenizer_load(&tiny, path_of("weights/tiny_vocab"));
    test_report(s == MAMA_OK, "tiny_vocab_load", "weights/tiny_vocab: %s", s == MAMA_OK ? "ok" : mama_last_error());
    if (tiny) {
        int sp[7], k, ok = 1;
        for (k = 0; k < 7; k++) sp[k] = mama_tokenizer_special_id(tiny, (mama_special_token)k);
        for (k = 0; k < 6; k++) ok &= sp[k] == 2042 + k;
        ok &= sp[6] == 2041 && mama_tokenizer_vocab_size(tiny) == 2048;
        test_report(ok, "tiny_vocab_specials", "vocab %d; bos..key = %d..%d (want 2042..2047), eos %d (want 2041)",
                    mama_tokenizer_vocab_size(tiny), sp[0], sp[5], sp[6]);
        check_cases(tiny, cs, n, 0, "tiny_vocab_ids");
    }
    s = mama_tokenizer_load_files(&hf, path_of("tests/fixtures/text/hf_bpe/vocab.json"),
                                  path_of("tests/fixtures/text/hf_bpe/merges.txt"));
    test_report(s == MAMA_OK, "hf_vocab_load", "vocab.json + merges.txt trained by tokenizers: %s",
                s == MAMA_OK ? "ok" : mama_last_error());
    if (hf) check_cases(hf, cs, n, 1, "hf_vocab_ids");
    s = mama_tokenizer_load(&hf_json, path_of("tests/fixtures/text/hf_bpe/tokenizer.json"));
    test_report(s == MAMA_OK, "hf_tokenizer_json_load", "tokenizer.json, merges as [a, b] pairs: %s",
                s == MAMA_OK ? "ok" : mama_last_error());
    if (hf_json) check_cases(hf_json, cs, n, 1, "hf_tokenizer_json_ids");
    s = mama_tokenizer_load(&hf_json_str, path_of("tests/fixtures/text/hf_bpe/tokenizer_string_merges.json"));
    test_report(s == MAMA_OK, "hf_tokenizer_json_str_load", "tokenizer.json, merges as \"a b\" strings: %s",
                s == MAMA_OK ? "ok" : mama_last_error());
    if (hf_json_str) check_cases(hf_json_str, cs, n, 1, "hf_tokenizer_json_str_ids");
    if (hf && hf_json) {
        int k, ok = mama_tokenizer_vocab_size(hf) == mama_tokenizer_vocab_size(hf_json);
        for (k = 0; k < 7; k++)
            ok &= mama_tokenizer_special_id(hf, (mama_special_token)k) == mama_tokenizer_special_id(hf_json, (mama_special_token)k);
        test_report(ok, "hf_specials_agree", "vocab.json path appends the six as tokenizer.json's added_tokens say (vocab %d, bos %d, eos %d)",
                    mama_tokenizer_vocab_size(hf), mama_tokenizer_bos_id(hf), mama_tokenizer_eos_id(hf));
    }
    mama_tokenizer_free(tiny);
    mama_tokenizer_free(hf);
    mama_tokenizer_free(hf_json);
    mama_tokenizer_free(hf_json_str);
    free_cases(cs, n);
}

/* Texts with letters and digits new in Unicode 15.0-16.0 (unicode16.txt):
 * pieces and ids identical to tokenizers 0.23. */
static void test_unicode16_fixtures(void) {
    tcase *cs;
    int n;
    mama_tokenizer *tiny = NULL, *hf = NULL;
    cs = load_cases(path_of("tests/fixtures/text/unicode16.txt"), &n);
    test_report(cs != NULL && n >= 30, "unicode16_cases_loaded", "%d cases from tests/fixtures/text/unicode16.txt", n);
    if (!cs) return;
    check_pieces(cs, n, "unicode16_pretokenize_vs_hf");
    if (mama_tokenizer_load(&tiny, path_of("weights/tiny_vocab")) == MAMA_OK) check_cases(tiny, cs, n, 0, "unicode16_tiny_vocab_ids");
    else test_report(0, "unicode16_tiny_vocab_ids", "load: %s", mama_last_error());
    if (mama_tokenizer_load(&hf, path_of("tests/fixtures/text/hf_bpe/tokenizer.json")) == MAMA_OK)
        check_cases(hf, cs, n, 1, "unicode16_hf_tokenizer_json_ids");
    else test_report(0, "unicode16_hf_tokenizer_json_ids", "load: %s", mama_last_error());
    mama_tokenizer_free(tiny);
    mama_tokenizer_free(hf);
    free_cases(cs, n);
}

/* Class of code point cp as the pre-tokenizer sees it: 'L' if "a"+c is one
 * piece, 'N' if "1"+c is, 'O' if "!"+c is, else 'S' (how the generator asks
 * tokenizers for hf_classes.txt). */
static void count_piece(const char *p, size_t n, void *user) {
    (void)p;
    (void)n;
    (*(int *)user)++;
}
static char pretok_class(uint32_t cp) {
    static const char lead[3] = {'a', '1', '!'};
    static const char cls[3] = {'L', 'N', 'O'};
    char s[5];
    int k, len = 1;
    if (cp < 0x80) s[len++] = (char)cp;
    else if (cp < 0x800) { s[len++] = (char)(0xC0 | (cp >> 6)); s[len++] = (char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) {
        s[len++] = (char)(0xE0 | (cp >> 12));
        s[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[len++] = (char)(0x80 | (cp & 0x3F));
    } else {
        s[len++] = (char)(0xF0 | (cp >> 18));
        s[len++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[len++] = (char)(0x80 | (cp & 0x3F));
    }
    for (k = 0; k < 3; k++) {
        int pieces = 0;
        s[0] = lead[k];
        mama_pretokenize(s, (size_t)len, count_piece, &pieces);
        if (pieces == 1) return cls[k];
    }
    return 'S';
}

/* Every code point (surrogates aside) gets the class that tokenizers 0.23's
 * ByteLevel regex gives it (hf_classes.txt), and the texts new in Unicode
 * 15-16 are letters / numbers. */
static void test_hf_classes(void) {
    FILE *f = fopen(path_of("tests/fixtures/text/hf_classes.txt"), "rb");
    char line[256], *want;
    uint32_t cp;
    int ranges = 0, bad = 0, n_l = 0, n_n = 0, n_s = 0, parse_ok = 1;
    if (!f) { test_report(0, "hf_classes_loaded", "tests/fixtures/text/hf_classes.txt missing"); return; }
    want = (char *)malloc(0x110000);
    memset(want, 'O', 0x110000);
    while (fgets(line, sizeof line, f)) {
        char k;
        unsigned long a, b;
        if (line[0] == '#' || line[0] == '\n') continue;
        if (sscanf(line, "%c %lx %lx", &k, &a, &b) != 3 || (k != 'L' && k != 'N' && k != 'S') || a > b || b > 0x10FFFF) {
            parse_ok = 0;
            continue;
        }
        memset(want + a, k, b - a + 1);
        ranges++;
    }
    fclose(f);
    for (cp = 0; cp < 0x110000; cp++) {
        char got;
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        got = pretok_class(cp);
        n_l += want[cp] == 'L';
        n_n += want[cp] == 'N';
        n_s += want[cp] == 'S';
        if (got != want[cp]) {
            if (bad < 5) printf("  U+%04lX: got %c, tokenizers %c\n", (unsigned long)cp, got, want[cp]);
            bad++;
        }
    }
    free(want);
    test_report(parse_ok && ranges > 800, "hf_classes_loaded", "%d ranges: %d letters, %d numbers, %d whitespace", ranges,
                n_l, n_n, n_s);
    test_report(bad == 0, "pretokenize_classes_vs_hf", "class of all %d code points vs tokenizers 0.23 (Unicode 16.0), %d differ",
                0x110000 - 0x800, bad);
}

/* ---------------------------------------------------------------------------
 * Tokenizer behaviour
 * ------------------------------------------------------------------------- */
static void test_tokenizer_behaviour(void) {
    mama_tokenizer *t = NULL;
    int ids[512], ids2[512], mask[512], n = 0, n2 = 0, nr = 0, i, ok;
    char *caption = NULL, input[4096];
    mama_caption_fields f;
    mama_status s = mama_tokenizer_load(&t, path_of("weights/tiny_vocab"));
    if (s != MAMA_OK) { test_report(0, "tokenizer_behaviour", "load: %s", mama_last_error()); return; }
    example_fields(&f);
    mama_caption_build_alloc(&f, &caption);

    /* caption encoding: 11 seps, bos first, eos last, same ids as the text form */
    s = mama_tokenizer_encode_caption(t, caption, 144, ids, mask, &nr);
    {
        int seps = 0, pads = 0, ones = 0;
        for (i = 0; i < 144; i++) {
            seps += ids[i] == mama_tokenizer_sep_id(t);
            pads += ids[i] == mama_tokenizer_pad_id(t);
            ones += mask[i];
        }
        test_report(s == MAMA_OK && seps == 11 && ids[0] == mama_tokenizer_bos_id(t) && ids[nr - 1] == mama_tokenizer_eos_id(t) &&
                        pads == 144 - nr && ones == nr && nr < 144,
                    "encode_caption_example", "%d real tokens, %d sep (want 11), bos first, eos last, pad+mask after", nr, seps);
    }
    mama_caption_tokenizer_input(caption, input, sizeof input, NULL);
    s = mama_tokenizer_encode(t, input, ids2, 512, &n2);
    test_report(s == MAMA_OK && ids_equal(ids, nr, ids2, n2), "encode_caption_equals_text_form",
                "ids of bos+caption(sep)+eos text == encode_caption (%d vs %d tokens)", nr, n2);
    /* the same over the corpus-like captions */
    {
        mama_rng r;
        int k, bad = 0;
        mama_rng_seed(&r, 99);
        for (k = 0; k < 200; k++) {
            char *c = NULL;
            int a = 0, b = 0;
            corpus_random_fields(&r, &f);
            mama_caption_build_alloc(&f, &c);
            mama_caption_tokenizer_input(c, input, sizeof input, NULL);
            mama_tokenizer_encode_caption(t, c, 512, ids, NULL, &a);
            mama_tokenizer_encode(t, input, ids2, 512, &b);
            bad += !ids_equal(ids, a, ids2, b);
            mama_free(c);
        }
        test_report(bad == 0, "encode_caption_equals_text_form_200", "200 random captions, %d differ", bad);
    }
    /* truncation keeps the first context ids; eos may be cut */
    s = mama_tokenizer_encode(t, input, ids2, 512, &n2);
    s = mama_tokenizer_encode_padded(t, input, 10, ids, mask, &nr);
    ok = s == MAMA_OK && nr == 10 && ids_equal(ids, 10, ids2, 10);
    for (i = 0; i < 10; i++) ok &= mask[i] == 1;
    test_report(ok && ids[9] != mama_tokenizer_eos_id(t), "encode_truncation", "context 10 of %d: first 10 ids, mask all 1, eos cut", n2);
    s = mama_tokenizer_encode(t, input, ids, 7, &n);
    test_report(s == MAMA_OK && n == n2 && ids_equal(ids, 7, ids2, 7), "encode_reports_total",
                "max_ids 7: writes 7, reports %d (want %d)", n, n2);
    s = mama_tokenizer_encode_padded(t, "Hello world", 16, ids, mask, &nr);
    mama_tokenizer_encode(t, "Hello world", ids2, 512, &n2);
    ok = s == MAMA_OK && nr == n2 && ids_equal(ids, nr, ids2, n2);
    for (i = 0; i < 16; i++) ok &= (i < nr) ? mask[i] == 1 : (mask[i] == 0 && ids[i] == mama_tokenizer_pad_id(t));
    test_report(ok, "encode_padding", "%d real + %d pad ids, mask 1/0", nr, 16 - nr);
    s = mama_tokenizer_encode_padded(t, "", 4, ids, mask, &nr);
    test_report(s == MAMA_OK && nr == 0 && ids[0] == mama_tokenizer_pad_id(t) && mask[3] == 0, "encode_empty", "all padding");
    s = mama_tokenizer_encode_caption(t, caption, 5, ids, mask, &nr);
    test_report(s == MAMA_OK && nr == 5 && ids[0] == mama_tokenizer_bos_id(t) && mask[4] == 1, "encode_caption_truncated",
                "context 5: bos + first 4 caption ids");
    /* decode with and without specials */
    {
        char *d1 = NULL, *d2 = NULL;
        mama_caption_tokenizer_input(caption, input, sizeof input, NULL);
        mama_tokenizer_encode(t, input, ids, 512, &n);
        mama_tokenizer_decode_alloc(t, ids, n, 0, &d1);
        mama_tokenizer_decode_alloc(t, ids, n, 1, &d2);
        {
            /* caption with '.' and ';' removed */
            char want[4096];
            size_t w = 0;
            const char *p;
            for (p = caption; *p; p++)
                if (*p != '.' && *p != ';') want[w++] = *p;
            want[w] = 0;
            test_report(d1 && d2 && strcmp(d1, input) == 0 && strcmp(d2, want) == 0, "decode_skip_special",
                        "with specials == text form; skipping them == caption without '.'/';'");
        }
        mama_free(d1);
        mama_free(d2);
        ids[0] = 5000;
        s = mama_tokenizer_decode(t, ids, 1, 0, input, sizeof input, NULL);
        test_report(s == MAMA_ERR_INVALID, "decode_bad_id", "id 5000 -> %s", mama_status_name(s));
    }
    /* token lookups */
    {
        size_t l = 0;
        const char *b = mama_tokenizer_token_bytes(t, mama_tokenizer_sep_id(t), &l);
        test_report(b && l == 16 && memcmp(b, "<|separatetext|>", 16) == 0 &&
                        mama_tokenizer_token_id(t, "<|padtext|>", 11) == mama_tokenizer_pad_id(t) &&
                        mama_tokenizer_token_id(t, " mammogram", 10) >= 256 && mama_tokenizer_token_id(t, "zzzzq", 5) == -1,
                    "token_lookup", "token_bytes / token_id for specials and a merged word");
    }
    /* invalid UTF-8 does not break anything: bytes survive the round trip */
    {
        const char bad_utf8[] = "ab\xff\xfe c\xc3 \xe2\x82 d\xed\xa0\x80x \xf0\x9f\x98\x80";
        char *d = NULL;
        s = mama_tokenizer_encode(t, bad_utf8, ids, 512, &n);
        mama_tokenizer_decode_alloc(t, ids, n, 0, &d);
        test_report(s == MAMA_OK && d && strcmp(d, bad_utf8) == 0, "invalid_utf8_roundtrip", "%d ids, bytes preserved", n);
        mama_free(d);
    }
    /* loading through the vocab.json path finds merges.txt beside it */
    {
        mama_tokenizer *t2 = NULL;
        int a = 0, b = 0;
        s = mama_tokenizer_load(&t2, path_of("weights/tiny_vocab/vocab.json"));
        if (s == MAMA_OK) {
            mama_tokenizer_encode(t2, caption, ids, 512, &a);
            mama_tokenizer_encode(t, caption, ids2, 512, &b);
        }
        test_report(s == MAMA_OK && a > 0 && ids_equal(ids, a, ids2, b) && mama_tokenizer_num_merges(t2) == mama_tokenizer_num_merges(t),
                    "load_via_vocab_json_path", "same ids as the directory load");
        mama_tokenizer_free(t2);
    }
    /* a long word without spaces: the heap merge is O(n log n) */
    {
        size_t L = 1 << 20, k;
        char *big = (char *)malloc(L + 1);
        int *out = (int *)malloc(sizeof(int) * L);
        double t0;
        char *d = NULL;
        for (k = 0; k < L; k++) big[k] = "mammography"[k % 11];
        big[L] = 0;
        t0 = mama_time_seconds();
        s = mama_tokenizer_encode(t, big, out, (int)L, &n);
        t0 = mama_time_seconds() - t0;
        mama_tokenizer_decode_alloc(t, out, n < (int)L ? n : (int)L, 0, &d);
        test_report(s == MAMA_OK && t0 < 3.0 && d && strcmp(d, big) == 0, "long_word_fast",
                    "1 MiB word -> %d ids in %.3f s, round trip exact", n, t0);
        mama_free(d);
        free(big);
        free(out);
    }
    mama_free(caption);
    mama_tokenizer_free(t);
}

/* ---------------------------------------------------------------------------
 * Malformed files and failed allocations
 * ------------------------------------------------------------------------- */
static void test_tokenizer_errors(void) {
    mama_tokenizer *t = NULL;
    mama_status s;
    const char *vocab = "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3}";
    s = mama_tokenizer_load_memory(&t, vocab, strlen(vocab), "a b\n", 4, "mem");
    test_report(s == MAMA_OK && mama_tokenizer_vocab_size(t) == 10 && mama_tokenizer_num_merges(t) == 1 &&
                    mama_tokenizer_bos_id(t) == 4 && mama_tokenizer_eos_id(t) == 3,
                "load_memory_small", "4 tokens + 6 specials, 1 merge");
    if (t) {
        int ids[8], n = 0;
        mama_tokenizer_encode(t, "abab<|keytext|>a", ids, 8, &n);
        test_report(n == 4 && ids[0] == 2 && ids[1] == 2 && ids[2] == 9 && ids[3] == 0, "encode_small",
                    "\"abab<|keytext|>a\" -> 2 2 9 0 (got %d ids)", n);
        /* bytes without a token are dropped (tokenizers does the same without unk) */
        mama_tokenizer_encode(t, "xaz", ids, 8, &n);
        test_report(n == 1 && ids[0] == 0, "encode_unknown_bytes_dropped", "\"xaz\" -> [0]");
    }
    mama_tokenizer_free(t);
    t = NULL;
    s = mama_tokenizer_load_memory(&t, vocab, strlen(vocab), "#version: 0.2\na c\n", 18, "mem");
    test_report(s == MAMA_ERR_FORMAT && t == NULL && strstr(mama_last_error(), "mem") != NULL, "merge_unknown_token",
                "-> %s: %s", mama_status_name(s), mama_last_error());
    s = mama_tokenizer_load_memory(&t, vocab, strlen(vocab), "a b c\n", 6, "mem");
    test_report(s == MAMA_ERR_FORMAT, "merge_three_parts", "-> %s", mama_status_name(s));
    s = mama_tokenizer_load_memory(&t, "[1,2]", 5, "", 0, "mem");
    test_report(s == MAMA_ERR_FORMAT, "vocab_not_object", "-> %s", mama_status_name(s));
    s = mama_tokenizer_load_memory(&t, "{\"a\": -1}", 9, "", 0, "mem");
    test_report(s == MAMA_ERR_FORMAT, "vocab_negative_id", "-> %s", mama_status_name(s));
    s = mama_tokenizer_load_memory(&t, "{\"a\": 0, \"b\": 0}", 16, "", 0, "mem");
    test_report(s == MAMA_ERR_FORMAT, "vocab_duplicate_id", "-> %s", mama_status_name(s));
    {
        const char *j = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}";
        s = mama_tokenizer_load_json_memory(&t, j, strlen(j), "tj");
        test_report(s == MAMA_ERR_UNSUPPORTED, "tokenizer_json_wordpiece", "-> %s", mama_status_name(s));
    }
    s = mama_tokenizer_load(&t, "/nonexistent/dir");
    test_report(s == MAMA_ERR_IO, "load_missing_dir", "-> %s", mama_status_name(s));

    /* fail each allocation of a load + encode in turn: NOMEM, nothing leaked */
    {
        long k, leaks = 0, wrong = 0, calls;
        char *v = NULL, *m = NULL;
        size_t nv = 0, nm = 0;
        int ok_load = read_all(path_of("weights/tiny_vocab/vocab.json"), &v, &nv) &&
                      read_all(path_of("weights/tiny_vocab/merges.txt"), &m, &nm);
        t_fail_at = -1;
        t_alloc_calls = 0;
        {
            long live0 = t_live;
            int ids[64], n;
            t_fail_at = 1L << 40;
            s = mama_tokenizer_load_memory(&t, v, nv, m, nm, "tiny");
            mama_tokenizer_encode(t, "Findings: The mammogram shows that a benign finding is present.", ids, 64, &n);
            mama_tokenizer_free(t);
            t = NULL;
            calls = t_alloc_calls;
            if (t_live != live0) leaks++;
        }
        for (k = 0; ok_load && k < calls; k++) {
            long live0 = t_live;
            int ids[64], n;
            t_alloc_calls = 0;
            t_fail_at = k;
            s = mama_tokenizer_load_memory(&t, v, nv, m, nm, "tiny");
            if (s == MAMA_OK) {
                s = mama_tokenizer_encode(t, "Findings: The mammogram shows that a benign finding is present.", ids, 64, &n);
                mama_tokenizer_free(t);
            }
            t = NULL;
            if (s != MAMA_ERR_NOMEM) wrong++;
            if (t_live != live0) leaks++;
        }
        t_fail_at = -1;
        test_report(ok_load && wrong == 0 && leaks == 0, "alloc_failures_load_encode",
                    "failing each of %ld allocations: %ld not NOMEM, %ld leaked", calls, wrong, leaks);
        mama_free(v);
        mama_free(m);
    }
}

/* ---------------------------------------------------------------------------
 * Trainer
 * ------------------------------------------------------------------------- */
static void test_trainer(void) {
    int n = 0, nm1 = 0, nm2 = 0;
    char **corpus = corpus_make(TEXT_CORPUS_CAPTIONS, &n);
    char *v1 = NULL, *m1 = NULL, *v2 = NULL, *m2 = NULL, *fv = NULL, *fm = NULL;
    size_t nv1 = 0, nmm1 = 0, nv2 = 0, nmm2 = 0, nfv = 0, nfm = 0;
    double t0 = mama_time_seconds(), dt;
    mama_status s = mama_tokenizer_train_memory((const char *const *)corpus, n, TINY_VOCAB_BASE_SIZE, &v1, &nv1, &m1,
                                                &nmm1, &nm1);
    dt = mama_time_seconds() - t0;
    test_report(s == MAMA_OK && nm1 > 500, "train_tiny", "%d texts -> %d merges in %.2f s", n, nm1, dt);
    s = mama_tokenizer_train_memory((const char *const *)corpus, n, TINY_VOCAB_BASE_SIZE, &v2, &nv2, &m2, &nmm2, &nm2);
    test_report(s == MAMA_OK && nv1 == nv2 && nmm1 == nmm2 && memcmp(v1, v2, nv1) == 0 && memcmp(m1, m2, nmm1) == 0,
                "train_deterministic", "two runs give identical files");
    if (read_all(path_of("weights/tiny_vocab/vocab.json"), &fv, &nfv) &&
        read_all(path_of("weights/tiny_vocab/merges.txt"), &fm, &nfm))
        test_report(nfv == nv1 && nfm == nmm1 && memcmp(fv, v1, nv1) == 0 && memcmp(fm, m1, nmm1) == 0,
                    "train_reproduces_shipped_vocab", "weights/tiny_vocab == trainer output byte for byte");
    else
        test_report(0, "train_reproduces_shipped_vocab", "cannot read weights/tiny_vocab");
    /* the trained files load, and every corpus caption survives a round trip */
    {
        mama_tokenizer *t = NULL;
        int k, bad = 0, total = 0;
        static int ids[4096];
        s = mama_tokenizer_load_memory(&t, v1, nv1, m1, nmm1, "trained");
        test_report(s == MAMA_OK && mama_tokenizer_vocab_size(t) == TINY_VOCAB_BASE_SIZE + 6 &&
                        mama_tokenizer_num_merges(t) == nm1,
                    "train_loads", "vocab %d, %d merges", t ? mama_tokenizer_vocab_size(t) : 0, nm1);
        for (k = 0; t && k < n; k += 7) {
            int got = 0;
            char *d = NULL;
            mama_tokenizer_encode(t, corpus[k], ids, 4096, &got);
            total += got;
            mama_tokenizer_decode_alloc(t, ids, got, 0, &d);
            bad += !d || strcmp(d, corpus[k]) != 0;
            mama_free(d);
        }
        test_report(bad == 0, "train_roundtrip", "%d captions, %.1f tokens per caption", (n + 6) / 7,
                    (double)total / ((n + 6) / 7));
        mama_tokenizer_free(t);
    }
    /* small corpus: hand-checkable merges */
    {
        const char *texts[3] = {"aaa aaa", "ab ab ab", "<|endoftext|>aaa"};
        char *v = NULL, *m = NULL;
        size_t nv = 0, nmm = 0;
        int nmerge = 0;
        s = mama_tokenizer_train_memory(texts, 3, 262, &v, &nv, &m, &nmm, &nmerge);
        /* words: "aaa" x2 (the special token is cut out), " aaa" x1, "ab" x1,
         * " ab" x2.  Counts: (a,a) 6 -> "a a"; then (a,b) 3 ties (aa,a) 3 and
         * wins on the smaller ids (64,65) < (256,64) -> "a b"; then "aa a"
         * (3); then (Ġ,ab) 2 -> "Ġ ab"; then every pair is seen once: stop.
         * ids 256..259 are the merges, 260 a placeholder, 261 <|endoftext|>. */
        test_report(s == MAMA_OK && nmerge == 4 &&
                        strcmp(m, "#version: 0.2\na a\na b\naa a\n\xc4\xa0 ab\n") == 0 &&
                        strstr(v, "\"aaa\": 258,") != NULL && strstr(v, "\"<|reserved_0|>\": 260,") != NULL &&
                        strstr(v, "\"<|endoftext|>\": 261\n}") != NULL,
                    "train_small", "hand-derived merges a a / a b / aa a / \xc4\xa0 ab, placeholder, eos 261 (%d merges)", nmerge);
        mama_free(v);
        mama_free(m);
    }
    mama_free(v1); mama_free(m1); mama_free(v2); mama_free(m2); mama_free(fv); mama_free(fm);
    corpus_free(corpus, n);
}

/* ---------------------------------------------------------------------------
 * Modes that write the shipped files
 * ------------------------------------------------------------------------- */
static int make_vocab(const char *dir) {
    int n = 0, nm = 0;
    char **corpus = corpus_make(TEXT_CORPUS_CAPTIONS, &n);
    mama_status s = corpus ? mama_tokenizer_train((const char *const *)corpus, n, TINY_VOCAB_BASE_SIZE, dir, &nm)
                           : MAMA_ERR_NOMEM;
    if (s != MAMA_OK) { fprintf(stderr, "train: %s\n", mama_last_error()); return 1; }
    printf("trained %d merges on %d texts into %s (vocab %d + 6 specials)\n", nm, n, dir, TINY_VOCAB_BASE_SIZE);
    corpus_free(corpus, n);
    return 0;
}

static int emit_corpus(const char *path) {
    int n = 0, i;
    char **corpus = corpus_make(TEXT_CORPUS_CAPTIONS, &n);
    FILE *f = fopen(path, "wb");
    if (!f || !corpus) return 1;
    for (i = 0; i < n; i++) fprintf(f, "%s\n", corpus[i]);
    fclose(f);
    corpus_free(corpus, n);
    return 0;
}

/* Captions for the id fixtures: the SPEC example (as is, masked, in
 * tokenizer-input form), the zeroshot sets of it and random captions. */
static int emit_captions(const char *path) {
    FILE *f = fopen(path, "wb");
    mama_caption_fields fe, m;
    mama_rng r;
    char buf[4096], in[8192];
    int k, c;
    if (!f) return 1;
    example_fields(&fe);
    mama_caption_build(&fe, buf, sizeof buf, NULL);
    fprintf(f, "%s\n", buf);
    mama_caption_tokenizer_input(buf, in, sizeof in, NULL);
    fprintf(f, "%s\n", in);
    mama_rng_seed(&r, 5);
    mama_caption_mask(&fe, &m, 1.0f, &r);
    mama_caption_build(&m, buf, sizeof buf, NULL);
    fprintf(f, "%s\n", buf);
    for (k = 0; k < 3; k++)
        for (c = 0; c < mama_zeroshot_num_classes((mama_zeroshot_task)k); c++) {
            mama_zeroshot_caption((mama_zeroshot_task)k, c, &fe, buf, sizeof buf, NULL);
            fprintf(f, "%s\n", buf);
        }
    mama_rng_seed(&r, 12345);
    for (k = 0; k < 16; k++) {
        corpus_random_fields(&r, &m);
        if (k % 3 == 0) mama_caption_mask(&m, &m, 0.5f, &r);
        mama_caption_build(&m, buf, sizeof buf, NULL);
        if (k % 4 == 1) {
            mama_caption_tokenizer_input(buf, in, sizeof in, NULL);
            fprintf(f, "%s\n", in);
        } else {
            fprintf(f, "%s\n", buf);
        }
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    double t0 = mama_time_seconds();
    (void)t_realloc; /* the hook exists for code paths that realloc */
    if (argc == 3 && strcmp(argv[1], "--make-vocab") == 0) return make_vocab(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--emit-corpus") == 0) return emit_corpus(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--emit-captions") == 0) return emit_captions(argv[2]);
    find_root();
    test_captions();
    test_masking();
    test_zeroshot();
    test_tokenizer_input();
    test_tokenizer_fixtures();
    test_unicode16_fixtures();
    test_hf_classes();
    test_tokenizer_behaviour();
    test_tokenizer_errors();
    test_trainer();
    printf("# test_text: %.2f s\n", mama_time_seconds() - t0);
    return test_finish();
}
