/* tests/dropin/no_stb.c - MAMA_NO_STB_IMAGE builds, and decoding an image
 * then fails with MAMA_ERR_UNSUPPORTED and a message that says why. */
#define MAMA_NO_STB_IMAGE
#define MAMA_IMPLEMENTATION
#include "mama.h"
#include <string.h>

int main(void) {
    static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    mama_image im = {0, 0, NULL};
    mama_status s = mama_image_load_memory(png_magic, sizeof png_magic, "x.png", &im);
    int ok = s == MAMA_ERR_UNSUPPORTED && strstr(mama_last_error(), "MAMA_NO_STB_IMAGE") != NULL;
    printf("%s dropin MAMA_NO_STB_IMAGE: decoding gives %s, \"%s\"\n", ok ? "PASS" : "FAIL",
           mama_status_name(s), mama_last_error());
    return ok ? 0 : 1;
}
