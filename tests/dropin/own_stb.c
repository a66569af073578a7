/* tests/dropin/own_stb.c - a program that compiles its own stb_image and
 * stb_image_write (the usual way a C program uses stb) and also links an
 * object with MAMA_IMPLEMENTATION (impl.c).  It must link without
 * "multiple definition" errors, and both decoders must agree. */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C"
#endif
long dropin_mama_decode(const unsigned char *png, int bytes, int *w, int *h);

int main(void) {
    unsigned char pix[16 * 9];
    int i, len = 0, w = 0, h = 0, c = 0, mw = 0, mh = 0;
    long sum = 0, msum;
    unsigned char *png, *back;
    for (i = 0; i < 16 * 9; i++) pix[i] = (unsigned char)(i * 7 + 3);
    png = stbi_write_png_to_mem(pix, 16, 16, 9, 1, &len);
    if (!png) { printf("FAIL dropin own stb: stbi_write_png_to_mem failed\n"); return 1; }
    back = stbi_load_from_memory(png, len, &w, &h, &c, 1);
    if (!back) { printf("FAIL dropin own stb: stbi_load_from_memory failed\n"); return 1; }
    for (i = 0; i < w * h; i++) sum += back[i];
    msum = dropin_mama_decode(png, len, &mw, &mh);
    printf("%s dropin own stb: the program's stbi and mama_image_load_memory decode one 16x9 PNG: "
           "%dx%d sum %ld vs %dx%d sum %ld\n", (msum == sum && mw == w && mh == h) ? "PASS" : "FAIL",
           w, h, sum, mw, mh, msum);
    stbi_image_free(back);
    STBIW_FREE(png);
    return msum == sum ? 0 : 1;
}
