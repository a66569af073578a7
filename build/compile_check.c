#define MAMA_IMPLEMENTATION
#include "mama.h"
int main(void){return 0;}
