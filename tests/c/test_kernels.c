/* test_kernels.c — exercises the kernel library from C, without Python.
 * Build and run (tests/test_c_kernels.py does this):
 *   cc -std=c11 -O2 -ffp-contract=off -fno-math-errno -I../../csrc test_kernels.c \
 *      <the KERNEL_SOURCES of setup.py> -lm -lpthread
 * Prints "N passed, M failed" and exits non-zero on a failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "optimc.h"

static int passed, failed;
#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

/* Set hyperparameter `name` of algorithm `a` in h, if the algorithm has it. */
static int set(int a, optimc_hyper *h, const char *name, double v)
{
    int k = optimc_hyper_index(a, name);
    if (k >= 0) h->v[k] = v;
    return k >= 0;
}

static optimc_hyper adam_hyper(void)
{
    int a = optimc_find_algorithm("adam");
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    set(a, &h, "lr", 1e-3); set(a, &h, "beta1", 0.9); set(a, &h, "beta2", 0.999); set(a, &h, "eps", 1e-8);
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
    x.dtype = OPTIMC_FLOAT64; x.grad_scale = 1.0;
    optimc_step(optimc_find_algorithm("adam"), &h, &x, 1, NULL, NULL);
    /* t = 1: m = 0.05, v = 0.00025, m̂ = 0.5, √v̂ = 0.5, θ = 1 − 1e-3·0.5/(0.5 + 1e-8) */
    double want = 1.0 - (1e-3 / (1 - 0.9)) * (0.05 / (sqrt(0.00025) / sqrt(1 - 0.999) + 1e-8));
    CHECK(fabs(p - want) < 1e-15, "adam first step: got %.17g want %.17g", p, want);
    CHECK(x.step == 1, "step count %lld", (long long)x.step);
    CHECK(fabs(m - 0.05) < 1e-16 && fabs(v - 0.00025) < 1e-18, "adam moments %g %g", m, v);
}

/* SGD without momentum: θ ← θ − ηg exactly. */
static void test_sgd_plain(void)
{
    int sgd = optimc_find_algorithm("sgd");
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    set(sgd, &h, "lr", 0.25);
    float p[5] = {1, 2, 3, 4, 5}, g[5] = {4, 4, 4, 4, -4};
    optimc_tensor x;
    memset(&x, 0, sizeof x);
    x.param = p; x.grad = g; x.n = 5; x.dtype = OPTIMC_FLOAT32; x.grad_scale = 1.0;
    optimc_step(sgd, &h, &x, 1, NULL, NULL);
    CHECK(p[0] == 0 && p[3] == 3 && p[4] == 6, "sgd: %g %g %g", p[0], p[3], p[4]);
}

/* The guard below the binding: norm clipping, value clipping, skipping. */
static void test_guard(void)
{
    int sgd = optimc_find_algorithm("sgd");
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    set(sgd, &h, "lr", 1.0);
    double p[2] = {0, 0}, g[2] = {3, 4};
    optimc_tensor x;
    memset(&x, 0, sizeof x);
    x.param = p; x.grad = g; x.n = 2; x.dtype = OPTIMC_FLOAT64;
    optimc_guard guard = {1.0, 0.0, 0};
    optimc_step_report report;
    optimc_step(sgd, &h, &x, 1, &guard, &report);
    /* ‖g‖ = 5: read as g·1/(5 + 1e-6) */
    double f = 1.0 / (5.0 + 1e-6);
    CHECK(report.norm_measured && report.grad_norm == 5.0 && !report.skipped, "norm %g", report.grad_norm);
    CHECK(p[0] == -(3 * f) && p[1] == -(4 * f), "clipped step %.17g %.17g", p[0], p[1]);
    guard = (optimc_guard){0.0, 2.0, 0};
    p[0] = p[1] = 0;
    optimc_step(sgd, &h, &x, 1, &guard, &report);
    CHECK(p[0] == -2 && p[1] == -2 && !report.norm_measured, "value clip %g %g", p[0], p[1]);
    guard = (optimc_guard){0.0, 0.0, 1};
    g[1] = INFINITY;
    int64_t step = x.step;
    optimc_step(sgd, &h, &x, 1, &guard, &report);
    CHECK(report.skipped && p[0] == -2 && x.step == step, "non-finite skipped %d", report.skipped);
}

/* Run `algorithm` for a few steps on several tensors; returns the params. */
static double *run(int algorithm, int level, int threads, size_t threshold)
{
    enum { NT = 3 };
    static const size_t sizes[NT] = {1, 1000, 70001};
    size_t total = 0;
    for (int t = 0; t < NT; t++) total += sizes[t];
    double *p = malloc(total * sizeof(double)), *g = malloc(total * sizeof(double));
    double *s = calloc(OPTIMC_MAX_STATE * total, sizeof(double));
    for (size_t i = 0; i < total; i++) { p[i] = sin((double)i); g[i] = cos(0.37 * (double)i); }
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    /* every option of every algorithm on, where the algorithm has it */
    static const char *names[] = {"lr", "beta1", "beta2", "eps", "momentum", "alpha", "rho", "momentum_decay",
                                  "weight_decay", "amsgrad", "centered", "lr_decay",
                                  "b1", "b2", "mask", "weight_decay_mask", "trust_ratio_mask", "trust_coefficient",
                                  "beta2_decay", "eps1", "eps2", "d"};
    static const double values[] = {1e-3, 0.9, 0.999, 1e-8, 0.9, 0.9, 0.9, 4e-3, 0.01, 1, 1, 0.01,
                                    0.9, 0.999, 1, 1, 1, 0.01,
                                    -0.8, -1, 1e-3, 1};
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) set(algorithm, &h, names[k], values[k]);
    optimc_tensor x[NT];
    memset(x, 0, sizeof x);
    size_t off = 0;
    for (int t = 0; t < NT; t++) {
        x[t].param = p + off; x[t].grad = g + off; x[t].n = sizes[t]; x[t].dtype = OPTIMC_FLOAT64;
        x[t].ndim = 1; x[t].dims[0] = sizes[t];
        unsigned mask = optimc_algorithms[algorithm].state_mask(&h, 1);
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) x[t].state[k] = (mask >> k & 1) ? s + k * total + off : NULL;
        x[t].grad_scale = 1.0;
        optimc_init_state(algorithm, &h, &x[t]);
        off += sizes[t];
    }
    optimc_set_level(level);
    optimc_set_num_threads(threads);
    optimc_set_thread_threshold(threshold);
    for (int k = 0; k < 5; k++) optimc_step(algorithm, &h, x, NT, NULL, NULL);
    free(g);
    free(s);
    return p;
}

/* Every SIMD level and thread count gives the same bits. */
static void test_identical_everywhere(void)
{
    for (int a = 0; a < optimc_n_algorithms; a++) {
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
    int adam = optimc_find_algorithm("adam");
    CHECK(adam >= 0 && strcmp(optimc_algorithms[adam].name, "adam") == 0, "find adam");
    CHECK(optimc_find_algorithm("nope") == -1, "find unknown");
    CHECK(optimc_hyper_index(adam, "beta1") >= 4 && optimc_hyper_index(adam, "betas") == -1, "adam fields");
    optimc_hyper h = adam_hyper();
    CHECK(optimc_algorithms[adam].state_mask(&h, 1) == 3u, "adam mask");
    set(adam, &h, "amsgrad", 1);
    CHECK(optimc_algorithms[adam].state_mask(&h, 1) == 7u, "amsgrad mask");
    /* every algorithm starts with the common fields, and names its state */
    static const char *common[] = {"lr", "weight_decay", "maximize", "decoupled_weight_decay"};
    for (int a = 0; a < optimc_n_algorithms; a++) {
        const optimc_algorithm *alg = &optimc_algorithms[a];
        for (int k = 0; k < 4; k++)
            CHECK(strcmp(alg->hyper_names[k], common[k]) == 0, "%s field %d is %s", alg->name, k, alg->hyper_names[k]);
        for (int k = 0; k < alg->n_state; k++) CHECK(alg->state_names[k] != NULL, "%s state %d named", alg->name, k);
    }
    int adagrad = optimc_find_algorithm("adagrad");
    memset(&h, 0, sizeof h);
    set(adagrad, &h, "initial_accumulator_value", 0.5);
    float p = 0, sum = -1;
    optimc_tensor x;
    memset(&x, 0, sizeof x);
    x.param = &p; x.n = 1; x.dtype = OPTIMC_FLOAT32; x.state[0] = &sum; x.step = 7;
    optimc_init_state(adagrad, &h, &x);
    CHECK(sum == 0.5f && x.step == 0, "adagrad initial accumulator %g", sum);
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

/* Per-tensor reductions (LARS's trust ratio), on tensors of one element and
 * of many chunks, with the pool splitting the chunks. */
static void test_reductions(void)
{
    int lars = optimc_find_algorithm("lars");
    CHECK(lars >= 0 && optimc_algorithms[lars].n_sums == 2, "lars has 2 sums");
    CHECK(optimc_algorithms[optimc_find_algorithm("adam")].n_sums == 0, "adam has none");
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    set(lars, &h, "lr", 1.0); set(lars, &h, "trust_coefficient", 1.0); set(lars, &h, "trust_ratio_mask", 1);
    /* θ = (3, 4), g = (0, 10): ratio ‖θ‖/‖g‖ = 1/2, so θ ← (3, 4 − 5) */
    double p2[2] = {3, 4}, g2[2] = {0, 10}, b2[2] = {0, 0};
    enum { N = 70001 };   /* 16 chunks */
    float *p = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float)), *b = calloc(N, sizeof(float));
    for (size_t i = 0; i < N; i++) { p[i] = 1.0f; g[i] = 2.0f; }
    optimc_tensor x[2];
    memset(x, 0, sizeof x);
    x[0].param = p2; x[0].grad = g2; x[0].state[0] = b2; x[0].n = 2; x[0].dtype = OPTIMC_FLOAT64;
    x[1].param = p; x[1].grad = g; x[1].state[0] = b; x[1].n = N; x[1].dtype = OPTIMC_FLOAT32;
    x[0].grad_scale = x[1].grad_scale = 1.0;
    optimc_set_num_threads(3);
    optimc_set_thread_threshold(0);
    optimc_step(lars, &h, x, 2, NULL, NULL);
    CHECK(p2[0] == 3 && p2[1] == -1 && b2[1] == -5, "lars small tensor: %g %g", p2[0], p2[1]);
    /* ‖θ‖ = √N, ‖g‖ = 2√N: ratio exactly 1/2, θ ← 1 − 1 = 0 everywhere */
    int all_zero = 1;
    for (size_t i = 0; i < N; i++) all_zero &= p[i] == 0.0f && b[i] == -1.0f;
    CHECK(all_zero, "lars chunked tensor: %g %g", p[0], p[N - 1]);
    optimc_set_num_threads(1);
    free(p); free(g); free(b);
}

/* Two-pass reductions over factored chunks (Adafactor): params of 2-D to
 * 4-D, in both chunk modes (whole matrices per chunk; runs of rows of one
 * matrix, fewer runs than chunks when a matrix has few rows), the factored
 * state, the reduction scratch: every SIMD level and thread count gives the
 * same bits. Returns the params followed by the state (malloc'd). */
enum { FACTORED_NT = 5 };
static const int factored_ndim[FACTORED_NT] = {2, 3, 2, 3, 4};
static const size_t factored_dims[FACTORED_NT][4] = {
    {300, 250}, {40, 3, 1100}, {2, 40000}, {3, 9000, 2}, {2, 3, 5, 7}};

static double *run_factored(int level, int threads, size_t threshold, size_t *out_len)
{
    int a = optimc_find_algorithm("adafactor");
    optimc_hyper h;
    memset(&h, 0, sizeof h);
    set(a, &h, "lr", 0.05); set(a, &h, "weight_decay", 0.1); set(a, &h, "beta2_decay", -0.8);
    set(a, &h, "eps1", -1); set(a, &h, "eps2", 1e-3); set(a, &h, "d", 1.0);
    optimc_tensor x[FACTORED_NT];
    memset(x, 0, sizeof x);
    size_t n_param = 0, n_state = 0, n_scratch = 0;
    for (int t = 0; t < FACTORED_NT; t++) {
        x[t].ndim = factored_ndim[t];
        x[t].n = 1;
        for (int d = 0; d < x[t].ndim; d++) x[t].n *= (x[t].dims[d] = factored_dims[t][d]);
        x[t].dtype = OPTIMC_FLOAT64;
        n_param += x[t].n;
        n_state += optimc_state_elements(a, &x[t], 0) + optimc_state_elements(a, &x[t], 1);
        n_scratch += optimc_scratch_elements(a, &x[t]);
    }
    double *out = malloc((n_param + n_state) * sizeof(double)), *g = malloc(n_param * sizeof(double));
    double *scratch = malloc(n_scratch * sizeof(double));
    for (size_t i = 0; i < n_param; i++) { out[i] = sin(0.1 * (double)i); g[i] = cos(0.37 * (double)i) * (1 + (i % 7)); }
    size_t po = 0, so = n_param, xo = 0;
    for (int t = 0; t < FACTORED_NT; t++) {
        x[t].param = out + po; x[t].grad = g + po; po += x[t].n;
        for (int k = 0; k < 2; k++) {
            x[t].state[k] = out + so;
            so += optimc_state_elements(a, &x[t], k);
        }
        x[t].scratch = scratch + xo;
        xo += optimc_scratch_elements(a, &x[t]);
        x[t].grad_scale = 1.0;
        optimc_init_state(a, &h, &x[t]);
    }
    optimc_set_level(level);
    optimc_set_num_threads(threads);
    optimc_set_thread_threshold(threshold);
    for (int k = 0; k < 4; k++) optimc_step(a, &h, x, FACTORED_NT, NULL, NULL);
    optimc_set_num_threads(1);
    free(g);
    free(scratch);
    *out_len = n_param + n_state;
    return out;
}

static void test_factored_reductions(void)
{
    int a = optimc_find_algorithm("adafactor");
    CHECK(a >= 0 && optimc_algorithms[a].n_passes == 2 && optimc_algorithms[a].n_sums == 2, "adafactor: 2 passes");
    CHECK(optimc_algorithms[optimc_find_algorithm("lars")].n_passes == 1, "lars: 1 pass");
    /* the chunk modes this test covers */
    optimc_tensor x;
    memset(&x, 0, sizeof x);
    optimc_factored f;
    x.ndim = 2; x.dims[0] = 300; x.dims[1] = 250; x.n = 75000;
    optimc_factored_chunks(&x, &f);
    CHECK(f.matrices == 1 && f.pieces == 16 && f.chunks == 16, "300x250: %zu pieces", f.pieces);
    x.ndim = 3; x.dims[0] = 40; x.dims[1] = 3; x.dims[2] = 1100; x.n = 132000;
    optimc_factored_chunks(&x, &f);
    CHECK(f.matrices == 40 && f.pieces == 0 && f.chunks == 16, "40x3x1100: whole matrices");
    x.ndim = 2; x.dims[0] = 2; x.dims[1] = 40000; x.n = 80000;
    optimc_factored_chunks(&x, &f);
    CHECK(f.pieces == 2 && f.chunks == 2, "2x40000: one piece per row");
    CHECK(optimc_scratch_elements(a, &x) == 2 * 40001, "scratch %zu", optimc_scratch_elements(a, &x));
    size_t len, len2;
    double *ref = run_factored(OPTIMC_BASELINE, 1, (size_t)-1, &len);
    int finite = 1, moved = 0;
    for (size_t i = 0; i < len; i++) finite &= isfinite(ref[i]) != 0;
    for (size_t i = 0; i < 1000; i++) moved |= ref[i] != sin(0.1 * (double)i);
    CHECK(finite && moved, "adafactor factored run: finite %d, params moved %d", finite, moved);
    for (int level = 0; level <= optimc_cpu_level(); level++)
        for (int threads = 1; threads <= 3; threads++) {
            double *q = run_factored(level, threads, 0, &len2);
            CHECK(len == len2 && memcmp(ref, q, len * sizeof(double)) == 0,
                  "adafactor factored differs at level %s with %d threads", optimc_level_name(level), threads);
            free(q);
        }
    free(ref);
}

/* State-buffer layouts: the shapes a buffer takes from its param's shape. */
static void test_layouts(void)
{
    optimc_tensor x;
    memset(&x, 0, sizeof x);
    x.ndim = 3; x.dims[0] = 2; x.dims[1] = 3; x.dims[2] = 5; x.n = 30;
    size_t dims[OPTIMC_MAX_DIMS], n;
    CHECK(optimc_layout_shape(optimc_layout_param, &x, dims, &n) == 3 && n == 30 && dims[2] == 5, "param layout");
    CHECK(optimc_layout_shape(optimc_layout_rows, &x, dims, &n) == 1 && n == 2 && dims[0] == 2, "rows layout");
    CHECK(optimc_layout_shape(optimc_layout_row_factor, &x, dims, &n) == 3 && n == 6
          && dims[0] == 2 && dims[1] == 3 && dims[2] == 1, "row_factor layout");
    CHECK(optimc_layout_shape(optimc_layout_col_factor, &x, dims, &n) == 3 && n == 10
          && dims[0] == 2 && dims[1] == 1 && dims[2] == 5, "col_factor layout");
    x.ndim = 1; x.dims[0] = 7; x.n = 7;
    CHECK(optimc_layout_shape(optimc_layout_row_factor, &x, dims, &n) == -1, "no row factor below 2-D");
    CHECK(optimc_layout_shape(optimc_layout_rows, &x, dims, &n) == 1 && n == 7, "rows of a vector");
    x.ndim = 0; x.n = 1;
    CHECK(optimc_layout_shape(optimc_layout_rows, &x, dims, &n) == 0 && n == 1, "rows of a 0-d param");
}

int main(void)
{
    test_layouts();
    test_registry();
    test_adam_first_step();
    test_sgd_plain();
    test_guard();
    test_grad_stats();
    test_reductions();
    test_factored_reductions();
    test_identical_everywhere();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
