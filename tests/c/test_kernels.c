/* test_kernels.c — exercises the kernel library from C, without Python.
 * Build and run (tests/test_c_kernels.py does this):
 *   cc -std=c11 -O2 -ffp-contract=off -fno-math-errno -I../../csrc test_kernels.c \
 *      ../../csrc/{engine,pool,runtime,kernels_baseline,kernels_avx2,kernels_avx512}.c -lm -lpthread
 * Prints "N passed, M failed" and exits non-zero on a failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "optimc.h"

static int passed, failed;
#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

static optimc_hyper adam_hyper(void)
{
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    h.lr = 1e-3; h.beta1 = 0.9; h.beta2 = 0.999; h.eps = 1e-8;
    return h;
}

/* One Adam step on one element, written out in double. */
static void test_adam_first_step(void)
{
    optimc_hyper h = adam_hyper();
    double p = 1.0, g = 0.5, m = 0, v = 0;
    optimc_tensor x;
    memset(&x, 0, sizeof x);
    x.param = &p; x.grad = &g; x.state[0] = &m; x.state[1] = &v; x.n = 1;
    x.dtype = OPTIMC_FLOAT64; x.grad_scale = 1.0; x.mu_product = 1.0;
    optimc_step(OPTIMC_ADAM, &h, &x, 1);
    /* t = 1: m = 0.05, v = 0.00025, m̂ = 0.5, √v̂ = 0.5, θ = 1 − 1e-3·0.5/(0.5 + 1e-8) */
    double want = 1.0 - (1e-3 / (1 - 0.9)) * (0.05 / (sqrt(0.00025) / sqrt(1 - 0.999) + 1e-8));
    CHECK(fabs(p - want) < 1e-15, "adam first step: got %.17g want %.17g", p, want);
    CHECK(x.step == 1, "step count %lld", (long long)x.step);
    CHECK(fabs(m - 0.05) < 1e-16 && fabs(v - 0.00025) < 1e-18, "adam moments %g %g", m, v);
}

/* SGD without momentum: θ ← θ − ηg exactly. */
static void test_sgd_plain(void)
{
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    h.lr = 0.25;
    float p[5] = {1, 2, 3, 4, 5}, g[5] = {4, 4, 4, 4, -4};
    optimc_tensor x;
    memset(&x, 0, sizeof x);
    x.param = p; x.grad = g; x.n = 5; x.dtype = OPTIMC_FLOAT32; x.grad_scale = 1.0;
    optimc_step(OPTIMC_SGD, &h, &x, 1);
    CHECK(p[0] == 0 && p[3] == 3 && p[4] == 6, "sgd: %g %g %g", p[0], p[3], p[4]);
}

/* Run `algorithm` for a few steps on several tensors; returns the params. */
static double *run(int algorithm, int level, int threads, size_t threshold)
{
    enum { NT = 3 };
    static const size_t sizes[NT] = {1, 1000, 70001};
    size_t total = 0;
    for (int t = 0; t < NT; t++) total += sizes[t];
    double *p = malloc(total * sizeof(double)), *g = malloc(total * sizeof(double));
    double *s = calloc(3 * total, sizeof(double));
    for (size_t i = 0; i < total; i++) { p[i] = sin((double)i); g[i] = cos(0.37 * (double)i); }
    optimc_hyper h = adam_hyper();
    h.momentum = 0.9; h.alpha = 0.9; h.rho = 0.9; h.momentum_decay = 4e-3; h.weight_decay = 0.01;
    h.amsgrad = 1; h.centered = 1; h.lr_decay = 0.01;
    optimc_tensor x[NT];
    memset(x, 0, sizeof x);
    size_t off = 0;
    for (int t = 0; t < NT; t++) {
        x[t].param = p + off; x[t].grad = g + off; x[t].n = sizes[t]; x[t].dtype = OPTIMC_FLOAT64;
        for (int k = 0; k < 3; k++) x[t].state[k] = s + k * total + off;
        x[t].grad_scale = 1.0;
        optimc_init_state(algorithm, &h, &x[t]);
        off += sizes[t];
    }
    optimc_set_level(level);
    optimc_set_num_threads(threads);
    optimc_set_thread_threshold(threshold);
    for (int k = 0; k < 5; k++) optimc_step(algorithm, &h, x, NT);
    free(g);
    free(s);
    return p;
}

/* Every SIMD level and thread count gives the same bits. */
static void test_identical_everywhere(void)
{
    for (int a = 0; a < OPTIMC_N_ALGORITHMS; a++) {
        double *ref = run(a, OPTIMC_BASELINE, 1, (size_t)-1);
        for (int level = 0; level <= optimc_cpu_level(); level++) {
            for (int threads = 1; threads <= 3; threads++) {
                double *q = run(a, level, threads, 0);
                CHECK(memcmp(ref, q, 71002 * sizeof(double)) == 0, "%s differs at level %s with %d threads",
                      optimc_algorithms[a].name, optimc_level_name(level), threads);
                free(q);
            }
        }
        free(ref);
    }
}

static void test_registry(void)
{
    CHECK(optimc_find_algorithm("adam") == OPTIMC_ADAM, "find adam");
    CHECK(optimc_find_algorithm("nope") == -1, "find unknown");
    optimc_hyper h = adam_hyper();
    CHECK(optimc_algorithms[OPTIMC_ADAM].state_mask(&h) == 3u, "adam mask");
    h.amsgrad = 1;
    CHECK(optimc_algorithms[OPTIMC_ADAM].state_mask(&h) == 7u, "amsgrad mask");
}

static void test_grad_stats(void)
{
    float a[3] = {3, 0, 4};
    double b[2] = {0, 0};
    optimc_buffer bufs[2] = {{a, 3, OPTIMC_FLOAT32}, {b, 2, OPTIMC_FLOAT64}};
    double total;
    int finite;
    optimc_grad_stats(bufs, 2, 2.0, &total, &finite);
    CHECK(total == 25.0 && finite, "norm² %g finite %d", total, finite);
    b[1] = NAN;
    optimc_grad_stats(bufs, 2, INFINITY, &total, &finite);
    CHECK(isnan(total) && !finite, "nan max %g finite %d", total, finite);
}

int main(void)
{
    test_registry();
    test_adam_first_step();
    test_sgd_plain();
    test_grad_stats();
    test_identical_everywhere();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
