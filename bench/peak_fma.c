/* bench/peak_fma.c: the float32 multiply-add peak of one core of this
 * machine, measured (not read off a datasheet), as the ceiling against which
 * the encoders of bench/bench_onnx.py are compared.
 *
 *   cc -O2 -march=native bench/peak_fma.c -o build/peak_fma && build/peak_fma
 *
 * Each iteration issues ACC independent fused multiply-adds on full vectors
 * (24 zmm chains with AVX-512, 12 ymm chains with AVX2 + FMA: enough to cover
 * the FMA latency times the number of FMA ports), so the loop runs at the
 * core's FMA throughput.  One FMA on a vector of W floats is 2 W flops.  The
 * best of 5 timed passes is printed as `peak_gflops=<value>` together with
 * the instruction set used.  Single-threaded on purpose: the encoders are
 * compared per thread. */
#include <stdio.h>
#include <time.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if defined(__AVX512F__)
#define ISA "AVX-512F"
#define W 16
#define ACC 24
typedef __m512 vec;
#define VSET(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
static float vsum(vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define ISA "AVX2+FMA"
#define W 8
#define ACC 12
typedef __m256 vec;
#define VSET(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float vsum(vec v) {
    float t[8];
    int i;
    float s = 0;
    _mm256_storeu_ps(t, v);
    for (i = 0; i < 8; i++) s += t[i];
    return s;
}
#else
#define ISA "scalar"
#define W 1
#define ACC 8
typedef float vec;
#define VSET(x) (x)
#define VFMA(a, b, c) ((a) * (b) + (c))
static float vsum(vec v) { return v; }
#endif

int main(void) {
    const long iters = 20000000L;
    double best = 0;
    float sink = 0;
    int pass, j;
    for (pass = 0; pass < 5; pass++) {
        vec acc[ACC], a = VSET(0.999999f), b = VSET(1e-7f);
        long i;
        double t0, dt, gflops;
        for (j = 0; j < ACC; j++) acc[j] = VSET((float)j);
        t0 = now();
        for (i = 0; i < iters; i++) {
            /* fully unrolled so that the chains live in registers */
#if defined(__GNUC__)
#pragma GCC unroll 32
#endif
            for (j = 0; j < ACC; j++) acc[j] = VFMA(acc[j], a, b);
        }
        dt = now() - t0;
        for (j = 0; j < ACC; j++) sink += vsum(acc[j]);
        gflops = 2.0 * W * ACC * (double)iters / dt * 1e-9;
        if (gflops > best) best = gflops;
    }
    printf("isa=%s vector_floats=%d chains=%d checksum=%g\n", ISA, W, ACC, (double)sink);
    printf("peak_gflops=%.1f\n", best);
    return 0;
}
