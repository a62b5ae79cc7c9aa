/* engine.c — the registry, the multi-tensor step and the kernels around it. */
#define _GNU_SOURCE
#include "optimc.h"
#include "kernels.h"
#include "pool.h"
#include "runtime.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* ---- registry: names, state buffers and which options need them ---- */

static unsigned mask_first(const optimc_hyper *h) { (void)h; return 1u; }
static unsigned mask_first_two(const optimc_hyper *h) { (void)h; return 3u; }
static unsigned mask_sgd(const optimc_hyper *h) { return h->momentum != 0 ? 1u : 0u; }
static unsigned mask_rmsprop(const optimc_hyper *h)
{
    return 1u | (h->momentum > 0 ? 2u : 0u) | (h->centered ? 4u : 0u);
}
static unsigned mask_adam(const optimc_hyper *h) { return 3u | (h->amsgrad ? 4u : 0u); }

const optimc_algorithm optimc_algorithms[OPTIMC_N_ALGORITHMS] = {
    [OPTIMC_SGD] = {"sgd", 1, {"momentum_buffer"}, mask_sgd},
    [OPTIMC_ADAGRAD] = {"adagrad", 1, {"sum"}, mask_first},
    [OPTIMC_RMSPROP] = {"rmsprop", 3, {"square_avg", "momentum_buffer", "grad_avg"}, mask_rmsprop},
    [OPTIMC_ADADELTA] = {"adadelta", 2, {"square_avg", "acc_delta"}, mask_first_two},
    [OPTIMC_ADAM] = {"adam", 3, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, mask_adam},
    [OPTIMC_ADAMAX] = {"adamax", 2, {"exp_avg", "exp_inf"}, mask_first_two},
    [OPTIMC_NADAM] = {"nadam", 2, {"exp_avg", "exp_avg_sq"}, mask_first_two},
    [OPTIMC_RADAM] = {"radam", 2, {"exp_avg", "exp_avg_sq"}, mask_first_two},
    [OPTIMC_LION] = {"lion", 1, {"exp_avg"}, mask_first},
};

int optimc_find_algorithm(const char *name)
{
    for (int a = 0; a < OPTIMC_N_ALGORITHMS; a++)
        if (strcmp(optimc_algorithms[a].name, name) == 0) return a;
    return -1;
}

static size_t dtype_size(int dtype) { return dtype == OPTIMC_FLOAT32 ? 4 : 8; }

void optimc_init_state(int algorithm, const optimc_hyper *h, optimc_tensor *x)
{
    for (int k = 0; k < OPTIMC_MAX_STATE; k++)
        if (x->state[k]) memset(x->state[k], 0, x->n * dtype_size(x->dtype));
    x->step = 0;
    x->mu_product = 1.0;
    if (algorithm == OPTIMC_ADAGRAD && h->initial_accumulator_value != 0) {
        for (size_t i = 0; i < x->n; i++) {
            if (x->dtype == OPTIMC_FLOAT32) ((float *)x->state[0])[i] = (float)h->initial_accumulator_value;
            else ((double *)x->state[0])[i] = h->initial_accumulator_value;
        }
    }
}

/* ---- SIMD dispatch: the kernel tables of the level in use ---- */

static const optimc_impl (*level_table(void))[2]
{
#ifdef OPTIMC_HAVE_X86_LEVELS
    switch (optimc_get_level()) {
    case OPTIMC_AVX512: return optimc_table_avx512;
    case OPTIMC_AVX2: return optimc_table_avx2;
    }
#endif
    return optimc_table_baseline;
}

static const optimc_aux *level_aux(void)
{
#ifdef OPTIMC_HAVE_X86_LEVELS
    switch (optimc_get_level()) {
    case OPTIMC_AVX512: return &optimc_aux_avx512;
    case OPTIMC_AVX2: return &optimc_aux_avx2;
    }
#endif
    return &optimc_aux_baseline;
}

/* Work is split over the concatenation of all tensors; each boundary is
 * rounded up to a multiple of 16 elements of its tensor (a whole number of
 * 64-byte lines). */
#define SPLIT_ALIGN 16

typedef struct {
    const optimc_impl *impl;
    optimc_tensor *tensors;
    size_t n_tensors, total;
} step_job;

static size_t boundary(const step_job *job, int k, int n_workers)
{
    if (k >= n_workers) return job->total;
    size_t target = (size_t)((double)job->total * k / n_workers), off = 0;
    for (size_t t = 0; t < job->n_tensors; t++) {
        size_t n = job->tensors[t].n;
        if (target < off + n) {
            size_t local = (target - off + SPLIT_ALIGN - 1) / SPLIT_ALIGN * SPLIT_ALIGN;
            return off + (local < n ? local : n);
        }
        off += n;
    }
    return job->total;
}

static void step_task(void *arg, int k, int n_workers)
{
    const step_job *job = arg;
    size_t lo = boundary(job, k, n_workers), hi = boundary(job, k + 1, n_workers), off = 0;
    for (size_t t = 0; t < job->n_tensors && off < hi; t++) {
        optimc_tensor *x = &job->tensors[t];
        size_t a = lo > off ? lo - off : 0, b = hi - off < x->n ? hi - off : x->n;
        if (a < b) job->impl[x->dtype].kernel(x, a, b);
        off += x->n;
    }
}

void optimc_step(int algorithm, const optimc_hyper *groups, optimc_tensor *tensors, size_t n_tensors)
{
    step_job job = {level_table()[algorithm], tensors, n_tensors, 0};
    size_t bytes = 0;
    int64_t prev_step = -1;
    double prev_mu = 0;
    for (size_t t = 0; t < n_tensors; t++) {
        optimc_tensor *x = &tensors[t], *prev = t ? x - 1 : NULL;
        /* prepare depends only on (group, dtype, step, mu_product, grad_scale):
         * a tensor that shares them with the one before copies its constants */
        int same = prev && prev->group == x->group && prev->dtype == x->dtype && prev_step == x->step
                   && prev_mu == x->mu_product && prev->grad_scale == x->grad_scale;
        prev_step = x->step;
        prev_mu = x->mu_product;
        x->step++;
        if (same) {
            memcpy(x->coef, prev->coef, sizeof x->coef);
            x->mu_product = prev->mu_product;
        } else {
            job.impl[x->dtype].prepare(&groups[x->group], x);
        }
        job.total += x->n;
        /* param read+write, grad read, each state buffer read+write */
        int n_state = (x->state[0] != NULL) + (x->state[1] != NULL) + (x->state[2] != NULL);
        bytes += x->n * (x->dtype == OPTIMC_FLOAT32 ? 4 : 8) * (size_t)(3 + 2 * n_state);
    }
    int threads = optimc_get_num_threads();
    if (threads > 1 && bytes >= optimc_get_thread_threshold()) optimc_pool_run(step_task, &job, threads);
    else step_task(&job, 0, 1);
}

/* ---- kernels around the step ---- */

typedef struct {
    const optimc_aux *aux;
    int dtype, n_read, n_write;
    void *const *arrays;
    size_t n;
} stream_job;

static void stream_task(void *arg, int k, int n_workers)
{
    const stream_job *job = arg;
    size_t lo = job->n * k / n_workers / SPLIT_ALIGN * SPLIT_ALIGN;
    size_t hi = k + 1 == n_workers ? job->n : job->n * (k + 1) / n_workers / SPLIT_ALIGN * SPLIT_ALIGN;
    job->aux->stream[job->dtype](job->arrays, job->n_read, job->n_write, lo, hi);
}

void optimc_stream(int dtype, void *const *arrays, int n_read, int n_write, size_t n)
{
    stream_job job = {level_aux(), dtype, n_read, n_write, arrays, n};
    int threads = optimc_get_num_threads();
    size_t bytes = n * (dtype == OPTIMC_FLOAT32 ? 4 : 8) * (size_t)(n_read + n_write);
    if (threads > 1 && bytes >= optimc_get_thread_threshold()) optimc_pool_run(stream_task, &job, threads);
    else stream_task(&job, 0, 1);
}

void optimc_grad_stats(const optimc_buffer *bufs, size_t n_bufs, double norm_type,
                       double *total, int *all_finite)
{
    const optimc_aux *aux = level_aux();
    double acc = 0.0;
    for (size_t b = 0; b < n_bufs; b++)
        aux->grad_norm_acc[bufs[b].dtype](bufs[b].data, 0, bufs[b].n, norm_type, &acc);
    *total = acc;
    /* one pass: a finite total means finite grads; only an overflowing or
     * non-finite total needs the element scan to tell which */
    *all_finite = 1;
    if (!isfinite(acc))
        for (size_t b = 0; b < n_bufs && *all_finite; b++)
            *all_finite = aux->all_finite[bufs[b].dtype](bufs[b].data, 0, bufs[b].n);
}

void optimc_scale_clip(optimc_buffer *bufs, size_t n_bufs, int mode, double value)
{
    const optimc_aux *aux = level_aux();
    for (size_t b = 0; b < n_bufs; b++)
        aux->scale_clip[bufs[b].dtype](bufs[b].data, 0, bufs[b].n, mode, value);
}

void optimc_ema(optimc_buffer *avg, const optimc_buffer *params, size_t n_bufs, double weight)
{
    const optimc_aux *aux = level_aux();
    for (size_t b = 0; b < n_bufs; b++)
        aux->ema[avg[b].dtype](avg[b].data, params[b].data, 0, avg[b].n, weight);
}
