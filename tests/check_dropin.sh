#!/usr/bin/env bash
# tests/check_dropin.sh - mama.h drops into any program (run by `make test`
# through tests/run_tests.sh, which counts the PASS/FAIL lines):
#   1. every global symbol an implementation object defines starts with
#      mama_ (gcc C99, clang C11, g++ C++11), apart from what the compiler
#      itself emits (OpenMP's lock for unnamed critical sections and
#      reductions, C++ library inline functions), which are listed;
#      and a file that includes the headers without an IMPLEMENTATION
#      macro defines nothing at all;
#   2. a program with its own STB_IMAGE_IMPLEMENTATION and
#      STB_IMAGE_WRITE_IMPLEMENTATION links with such an object, as C and
#      as C++, and decodes a PNG the same way mama does;
#   3. MAMA_NO_STB_IMAGE builds, and decoding then fails clearly;
#   4. defining only some of MAMA_MALLOC / MAMA_REALLOC / MAMA_FREE is a
#      compile-time #error;
#   5. the complete example of mama.h's doc block compiles as C99 and C++11
#      and runs on a freshly initialised tiny model and a grey PNG: four
#      density probabilities that sum to 1.
set -u
cd "$(dirname "$0")/.."
B=${BUILD:-build}/dropin
mkdir -p "$B"
D=tests/dropin
FLAGS="-O0 -fopenmp -Wall -Wextra -Werror -I."
fail=0
pass() { echo "PASS $*"; }
flunk() { echo "FAIL $*"; fail=1; }

# Compiler-emitted globals that no library can rename: OpenMP's locks for
# unnamed critical sections and reductions (clang), C++ inline functions of
# <cmath> instantiated weak, the C++ personality reference.
allowed='^(\.gomp_critical_user_\.var|\.gomp_critical_user_\.reduction\.var|DW\.ref\.__gxx_personality_v0|_ZSt[0-9].*|_ZNSt.*|_ZN9__gnu_cxx.*)$'

check_symbols() { # name compiler-command...
    local name=$1; shift
    local obj=$B/impl_$name.o
    if ! "$@" -c $D/impl.c -o "$obj" 2>"$B/impl_$name.log"; then
        flunk "dropin symbols $name: impl.c does not compile ($(head -3 "$B/impl_$name.log" | tr '\n' ' '))"
        return
    fi
    local all bad extra
    all=$(nm -g --defined-only "$obj" | awk '{print $3}')
    bad=$(printf '%s\n' "$all" | grep -v '^mama_' | grep -Ev "$allowed" | tr '\n' ' ')
    extra=$(printf '%s\n' "$all" | grep -v '^mama_' | grep -E "$allowed" | tr '\n' ' ')
    local n; n=$(printf '%s\n' "$all" | grep -c '^mama_')
    if [ -z "$bad" ]; then
        pass "dropin symbols $name: $n global symbols, all mama_*; compiler-emitted only: ${extra:-none}"
    else
        flunk "dropin symbols $name: global symbols without the mama_ prefix: $bad"
    fi
}
check_symbols gcc-c99 gcc -std=c99 -Wpedantic $FLAGS
check_symbols clang-c11 clang -std=c11 -Wpedantic $FLAGS
check_symbols gxx-c++11 g++ -x c++ -std=c++11 $FLAGS

# 1b. the headers without an IMPLEMENTATION macro define nothing
if gcc -std=c99 -Wpedantic $FLAGS -c $D/decl_only.c -o $B/decl_only.o 2>$B/decl_only.log &&
   g++ -x c++ -std=c++11 $FLAGS -c $D/decl_only.c -o $B/decl_only_cxx.o 2>>$B/decl_only.log; then
    defs=$(nm --defined-only $B/decl_only.o $B/decl_only_cxx.o | awk 'NF == 3 {print $3}' | tr '\n' ' ')
    if [ -z "$defs" ]; then
        pass "dropin declarations only: mama.h and the five companions without IMPLEMENTATION define no symbol (C and C++)"
    else
        flunk "dropin declarations only: a file that only includes the headers defines: $defs"
    fi
else
    flunk "dropin declarations only: does not compile: $(head -3 $B/decl_only.log | tr '\n' ' ')"
fi

# 2. a program with its own stb (C, then C++ for both translation units)
if gcc -std=c99 $FLAGS -DDROPIN_WITH_HELPER -c $D/impl.c -o $B/impl_helper_c.o 2>$B/own_stb_c.log &&
   gcc -std=c99 $FLAGS -c $D/own_stb.c -o $B/own_stb_c.o 2>>$B/own_stb_c.log &&
   gcc $B/impl_helper_c.o $B/own_stb_c.o -o $B/own_stb_c -fopenmp -lm 2>>$B/own_stb_c.log; then
    $B/own_stb_c | sed 's/^\(PASS\|FAIL\) dropin own stb/\1 dropin own stb (C)/' || fail=1
else
    flunk "dropin own stb (C): does not link: $(grep -c 'multiple definition' $B/own_stb_c.log) multiple definitions; $(head -3 $B/own_stb_c.log | tr '\n' ' ')"
fi
if g++ -x c++ -std=c++11 $FLAGS -DDROPIN_WITH_HELPER -c $D/impl.c -o $B/impl_helper_cxx.o 2>$B/own_stb_cxx.log &&
   g++ -x c++ -std=c++11 $FLAGS -c $D/own_stb.c -o $B/own_stb_cxx.o 2>>$B/own_stb_cxx.log &&
   g++ $B/impl_helper_cxx.o $B/own_stb_cxx.o -o $B/own_stb_cxx -fopenmp -lm 2>>$B/own_stb_cxx.log; then
    $B/own_stb_cxx | sed 's/^\(PASS\|FAIL\) dropin own stb/\1 dropin own stb (C++)/' || fail=1
else
    flunk "dropin own stb (C++): does not link: $(grep -c 'multiple definition' $B/own_stb_cxx.log) multiple definitions; $(head -3 $B/own_stb_cxx.log | tr '\n' ' ')"
fi

# 3. MAMA_NO_STB_IMAGE
if gcc -std=c99 -Wpedantic $FLAGS $D/no_stb.c -o $B/no_stb -lm 2>$B/no_stb.log; then
    $B/no_stb || fail=1
else
    flunk "dropin MAMA_NO_STB_IMAGE: does not build: $(head -3 $B/no_stb.log | tr '\n' ' ')"
fi

# 4. a partial set of allocation hooks
if gcc -std=c99 $FLAGS -fsyntax-only $D/partial_malloc.c 2>$B/partial.log; then
    flunk "dropin allocation hooks: only MAMA_MALLOC defined, and it compiled"
elif grep -q 'define all of MAMA_MALLOC, MAMA_REALLOC and MAMA_FREE' $B/partial.log; then
    pass "dropin allocation hooks: only MAMA_MALLOC defined stops the build with the #error naming all three"
else
    flunk "dropin allocation hooks: failed to compile, but not with the expected #error: $(head -2 $B/partial.log | tr '\n' ' ')"
fi

# 5. the doc block's example, cut out of mama.h as a user would copy it
sed -n '/A complete program: zero-shot breast density/,/tests\/check_dropin.sh compiles this example/p' mama.h |
    sed -n 's/^ \*      //p' > $B/doc_example.c
if [ "$(wc -l < $B/doc_example.c)" -lt 20 ]; then
    flunk "dropin doc example: could not cut the example out of mama.h's doc block"
elif ! gcc -std=c99 -Wpedantic $FLAGS $B/doc_example.c -o $B/doc_example_c -lm 2>$B/doc_example.log ||
     ! g++ -x c++ -std=c++11 $FLAGS -fsyntax-only $B/doc_example.c 2>>$B/doc_example.log; then
    flunk "dropin doc example: does not compile: $(head -3 $B/doc_example.log | tr '\n' ' ')"
elif [ ! -x ${BUILD:-build}/mama ]; then
    flunk "dropin doc example: ${BUILD:-build}/mama is needed to make a model"
else
    ${BUILD:-build}/mama init --config tiny --out $B/doc_tiny.safetensors --seed 3 >/dev/null 2>&1
    python3 - $B/doc_image.png <<'PY'
import struct, sys, zlib
w = h = 160  # a bright ellipse on black: a breast-like foreground for the Otsu crop
rows = b"".join(b"\0" + bytes(200 if ((x - 60) / 60.0) ** 2 + ((y - 80) / 70.0) ** 2 < 1 else 0 for x in range(w)) for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
                             chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY
    out=$($B/doc_example_c $B/doc_tiny.safetensors weights/tiny_vocab $B/doc_image.png 2>&1)
    sum=$(printf '%s\n' "$out" | awk '/^density [1-4]: /{s += $3; n++} END{if (n == 4) printf "%.3f", s; else print "none"}')
    if [ "$sum" = "1.000" ] || [ "$sum" = "0.999" ] || [ "$sum" = "1.001" ]; then
        pass "dropin doc example: compiles as C99 and C++11; on a fresh tiny model: $(printf '%s' "$out" | tr '\n' ' ')(sum $sum)"
    else
        flunk "dropin doc example: printed '$out' (probabilities summing to $sum)"
    fi
fi
exit $fail
