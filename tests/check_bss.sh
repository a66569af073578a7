#!/usr/bin/env bash
# tests/check_bss.sh - the library keeps no big static scratch: an object
# compiled with MAMA_IMPLEMENTATION (gcc -O2 -fopenmp) must have under
# 64 KB of .bss (the GEMM / attention buffers belong to the backend
# instance).  Prints `size`'s text/data/bss and PASS or FAIL; exits 1 on
# FAIL.  Usage: bash tests/check_bss.sh [build dir]   (CC=gcc by default)
set -u
BUILD=${1:-build}
CC_BSS=${CC_BSS:-gcc}
LIMIT=65536
mkdir -p "$BUILD"
src="$BUILD/check_bss.c"
obj="$BUILD/check_bss.o"
printf '#define MAMA_IMPLEMENTATION\n#include "mama.h"\n' > "$src"
if ! "$CC_BSS" -std=c99 -O2 -fopenmp -I. -c "$src" -o "$obj"; then
  echo "FAIL check_bss: $CC_BSS could not compile an object with MAMA_IMPLEMENTATION"
  exit 1
fi
size "$obj"
bss=$(size "$obj" | awk 'NR == 2 { print $3 }')
text=$(size "$obj" | awk 'NR == 2 { print $1 }')
data=$(size "$obj" | awk 'NR == 2 { print $2 }')
if [ -n "$bss" ] && [ "$bss" -lt "$LIMIT" ]; then
  echo "PASS check_bss: MAMA_IMPLEMENTATION object: text $text, data $data, bss $bss bytes (< $LIMIT)"
  exit 0
fi
echo "FAIL check_bss: MAMA_IMPLEMENTATION object: text $text, data $data, bss ${bss:-?} bytes (limit $LIMIT)"
exit 1
