/* tests/dropin/partial_malloc.c - must NOT compile: only one of the three
 * allocation hooks is defined (tests/check_dropin.sh expects the #error). */
#include <stdlib.h>
#define MAMA_MALLOC(sz) malloc(sz)
#define MAMA_IMPLEMENTATION
#include "mama.h"
int main(void) { return 0; }
