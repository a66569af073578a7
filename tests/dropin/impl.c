/* tests/dropin/impl.c - a translation unit with the implementation of
 * mama.h and of its four companion headers, as a program that embeds the
 * library has it.
 * tests/check_dropin.sh compiles it and checks the symbols it exports. */
#define MAMA_IMPLEMENTATION
#include "mama.h"
#define MAMA_PLOT_IMPLEMENTATION
#include "mama_plot.h"
#define MAMA_SYNTH_IMPLEMENTATION
#include "mama_synth.h"
#define MAMA_TOKENIZER_TRAIN_IMPLEMENTATION
#include "mama_tokenizer_train.h"
#define MAMA_VERIFY_IMPLEMENTATION
#include "mama_verify.h"

#ifdef DROPIN_WITH_HELPER
/* For the link test (not in the symbol check): decode an in-memory PNG
 * with the library; returns the pixel sum or -1. */
#ifdef __cplusplus
extern "C"
#endif
long dropin_mama_decode(const unsigned char *png, int bytes, int *w, int *h) {
    mama_image im = {0, 0, NULL};
    long sum = 0;
    int i;
    if (mama_image_load_memory(png, (size_t)bytes, "dropin.png", &im) != MAMA_OK) return -1;
    for (i = 0; i < im.w * im.h; i++) sum += im.pix[i];
    *w = im.w;
    *h = im.h;
    mama_image_free(&im);
    return sum;
}
#endif
