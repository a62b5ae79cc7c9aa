/* engine.c — the registry, the multi-tensor step and the kernels around it. */
#define _GNU_SOURCE
#include "optimc.h"
#include "kernels.h"
#include "pool.h"
#include "runtime.h"
#include "lowprec.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* ---- the registry, generated from rules/all.h ---- */

#include "rules/describe.h"
#include "rules/all.h"          /* the descriptions: <name>_HYPER, _STATE, _SCALARS */

#define OPTIMC_NAME(f) #f,
#define OPTIMC_STATE_NAME(s, needed, initial, layout, kind) #s,
#define OPTIMC_STATE_LAYOUT(s, needed, initial, layout, kind) optimc_layout_##layout,
#define OPTIMC_STATE_KIND(s, needed, initial, layout, kind) optimc_moment_##kind,
#define OPTIMC_STATE_NEED(s, needed, initial, layout, kind) if (needed) mask |= 1u << k; k++;
#define OPTIMC_STATE_INIT(s, needed, initial, layout, kind) if (k == i++) return (double)(initial);
#define OPTIMC_SCALAR_NAME(s, initial) #s,
#define OPTIMC_SCALAR_INIT(s, initial) (initial),

/* Per algorithm: which buffers options need, and their initial values. */
#define OPTIMC_LIST(name) \
    _Static_assert((0 name##_STATE(OPTIMC_ONE)) <= OPTIMC_MAX_STATE, #name ": too many state buffers"); \
    _Static_assert((0 name##_SCALARS(OPTIMC_ONE)) <= OPTIMC_MAX_SCALARS, #name ": too many scalars"); \
    static unsigned name##_state_mask(const optimc_hyper *hyper, int ndim) \
    { \
        const name##_hyper *h = (const name##_hyper *)(const void *)hyper; \
        unsigned mask = 0; int k = 0; \
        (void)h; (void)ndim; name##_STATE(OPTIMC_STATE_NEED) (void)k; \
        return mask; \
    } \
    static double name##_state_init(const optimc_hyper *hyper, int k) \
    { \
        const name##_hyper *h = (const name##_hyper *)(const void *)hyper; \
        int i = 0; \
        (void)h; name##_STATE(OPTIMC_STATE_INIT) (void)i; \
        return 0.0; \
    }
#include "rules/all.h"
#undef OPTIMC_LIST

/* One registry entry; a rule with per-tensor reductions adds its number of sums. */
#define OPTIMC_ENTRY(name) \
    #name, \
    4 + (0 name##_HYPER(OPTIMC_ONE)), \
    { "lr", "weight_decay", "maximize", "decoupled_weight_decay", name##_HYPER(OPTIMC_NAME) }, \
    (0 name##_STATE(OPTIMC_ONE)), { name##_STATE(OPTIMC_STATE_NAME) }, \
    { name##_STATE(OPTIMC_STATE_LAYOUT) }, \
    { name##_STATE(OPTIMC_STATE_KIND) }, \
    (0 name##_SCALARS(OPTIMC_ONE)), { name##_SCALARS(OPTIMC_SCALAR_NAME) }, \
    { name##_SCALARS(OPTIMC_SCALAR_INIT) }, \
    name##_state_mask, name##_state_init
#define OPTIMC_LIST(name) { OPTIMC_ENTRY(name), 0 },
#define OPTIMC_LIST_REDUCING(name) { OPTIMC_ENTRY(name), (0 name##_SUMS(OPTIMC_ONE)), 1 },
#define OPTIMC_LIST_TWO_PASS(name) { OPTIMC_ENTRY(name), (0 name##_SUMS(OPTIMC_ONE)), 2 },
/* a rule that takes row-sparse grads adds its mark */
#define OPTIMC_LIST_SPARSE(name) \
    { OPTIMC_ENTRY(name), 0, 0, 1, (0 name##_SPARSE(OPTIMC_ONE)), { name##_SPARSE(OPTIMC_NAME) } },
const optimc_algorithm optimc_algorithms[] = {
#include "rules/all.h"
};
#undef OPTIMC_LIST
#undef OPTIMC_LIST_REDUCING
#undef OPTIMC_LIST_TWO_PASS
#undef OPTIMC_LIST_SPARSE
#undef OPTIMC_ENTRY
const int optimc_n_algorithms = (int)(sizeof optimc_algorithms / sizeof optimc_algorithms[0]);

int optimc_find_algorithm(const char *name)
{
    for (int a = 0; a < optimc_n_algorithms; a++)
        if (strcmp(optimc_algorithms[a].name, name) == 0) return a;
    return -1;
}

int optimc_hyper_index(int algorithm, const char *name)
{
    const optimc_algorithm *alg = &optimc_algorithms[algorithm];
    for (int k = 0; k < alg->n_hyper; k++)
        if (strcmp(alg->hyper_names[k], name) == 0) return k;
    return -1;
}

static size_t dtype_size(int dtype) { return dtype == OPTIMC_FLOAT32 ? 4 : 8; }

int optimc_layout_shape(optimc_layout layout, const optimc_tensor *x, size_t *dims, size_t *elements)
{
    int nd = x->ndim;
    switch (layout) {
    case optimc_layout_param:
        for (int d = 0; d < nd; d++) dims[d] = x->dims[d];
        *elements = x->n;
        return nd;
    case optimc_layout_rows:
        *elements = nd ? x->dims[0] : 1;
        dims[0] = *elements;
        return nd ? 1 : 0;
    case optimc_layout_row_factor:
    case optimc_layout_col_factor:
        if (nd < 2) return -1;
        *elements = 1;
        for (int d = 0; d < nd; d++) {
            int reduced = d == (layout == optimc_layout_row_factor ? nd - 1 : nd - 2);
            dims[d] = reduced ? 1 : x->dims[d];
            *elements *= dims[d];
        }
        return nd;
    }
    return -1;
}

/* ---- per-tensor reductions: chunks fixed by the tensor's size ---- */

static size_t reduce_chunks(size_t n)
{
    size_t c = (n + OPTIMC_REDUCE_MIN_CHUNK - 1) / OPTIMC_REDUCE_MIN_CHUNK;
    return c < 1 ? 1 : (c > OPTIMC_REDUCE_CHUNKS ? OPTIMC_REDUCE_CHUNKS : c);
}

void optimc_factored_chunks(const optimc_tensor *x, optimc_factored *f)
{
    f->rows = x->ndim >= 2 ? x->dims[x->ndim - 2] : 1;
    f->cols = x->ndim >= 2 ? x->dims[x->ndim - 1] : x->n;
    f->matrices = 1;
    for (int d = 0; d + 2 < x->ndim; d++) f->matrices *= x->dims[d];
    size_t chunks = reduce_chunks(x->n);
    if (x->n == 0 || f->matrices >= chunks) {   /* whole matrices per chunk */
        f->chunks = chunks;
        f->pieces = 0;
    } else {                                     /* each matrix cut into runs of rows, none empty */
        f->pieces = chunks / f->matrices < f->rows ? chunks / f->matrices : f->rows;
        f->chunks = f->pieces * f->matrices;
    }
}

/* A two-pass rule's tensors of ndim >= 2 take factored chunks. */
static int factored(int algorithm, const optimc_tensor *x)
{
    return optimc_algorithms[algorithm].n_passes == 2 && x->ndim >= 2;
}

size_t optimc_scratch_elements(int algorithm, const optimc_tensor *x)
{
    if (!factored(algorithm, x) || x->n == 0) return 0;
    optimc_factored f;
    optimc_factored_chunks(x, &f);
    return f.chunks * (f.cols + 1);
}

size_t optimc_state_elements(int algorithm, const optimc_tensor *x, int k)
{
    size_t dims[OPTIMC_MAX_DIMS], elements = 0;
    if (optimc_layout_shape(optimc_algorithms[algorithm].state_layout[k], x, dims, &elements) < 0) return 0;
    return elements;
}

void optimc_init_state(int algorithm, const optimc_hyper *h, optimc_tensor *x)
{
    const optimc_algorithm *alg = &optimc_algorithms[algorithm];
    for (int k = 0; k < OPTIMC_MAX_STATE; k++) {
        if (!x->state[k]) continue;
        double v = alg->state_init(h, k);
        size_t n = optimc_state_elements(algorithm, x, k);
        if (x->state_format != OPTIMC_STATE_NATIVE) {
            optimc_lowprec_fill(x, k, v);   /* lowprec.c: v in the buffer's storage */
        } else if (v == 0.0) {
            memset(x->state[k], 0, n * dtype_size(x->dtype));
        } else if (x->dtype == OPTIMC_FLOAT32) {
            for (size_t i = 0; i < n; i++) ((float *)x->state[k])[i] = (float)v;
        } else {
            for (size_t i = 0; i < n; i++) ((double *)x->state[k])[i] = v;
        }
    }
    x->step = 0;
    for (int s = 0; s < OPTIMC_MAX_SCALARS; s++) x->scalars[s] = s < alg->n_scalars ? alg->scalar_init[s] : 0.0;
}

/* ---- SIMD dispatch: the kernel tables of the level in use ---- */

const optimc_impl (*optimc_level_table(void))[2]
{
#ifdef OPTIMC_HAVE_X86_LEVELS
    switch (optimc_get_level()) {
    case OPTIMC_AVX512: return optimc_table_avx512;
    case OPTIMC_AVX2: return optimc_table_avx2;
    }
#endif
    return optimc_table_baseline;
}

const optimc_aux *optimc_level_aux(void)
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
    const optimc_aux *aux;
    optimc_tensor *tensors;
    size_t n_tensors, total;
} step_job;

static size_t boundary(const step_job *job, int k, int n_workers)
{
    if (k >= n_workers) return job->total;
    size_t target = (size_t)((double)job->total * k / n_workers), off = 0;
    for (size_t t = 0; t < job->n_tensors; t++) {
        size_t n = job->tensors[t].n;
        /* compressed state is coded per block: splits fall on block edges */
        size_t align = job->tensors[t].state_format != OPTIMC_STATE_NATIVE
                       || job->tensors[t].param_format != OPTIMC_PARAM_NATIVE ? OPTIMC_QBLOCK : SPLIT_ALIGN;
        if (target < off + n) {
            size_t local = (target - off + align - 1) / align * align;
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
        if (a < b && x->param_format != OPTIMC_PARAM_NATIVE)
            job->aux->halfparam(job->impl[x->dtype].kernel, x, a, b);   /* halfparam_impl.h */
        else if (a < b && x->state_format != OPTIMC_STATE_NATIVE)
            job->aux->lowprec[x->dtype](job->impl[x->dtype].kernel, x, a, b);   /* lowprec_impl.h */
        else if (a < b)
            job->impl[x->dtype].kernel(x, a, b);
        off += x->n;
    }
}

/* The first element of chunk c of n elements (c = chunks: n), on a
 * multiple of SPLIT_ALIGN. */
static size_t chunk_start(size_t n, size_t c, size_t chunks)
{
    if (c >= chunks) return n;
    size_t at = (n / chunks * c + n % chunks * c / chunks + SPLIT_ALIGN - 1) / SPLIT_ALIGN * SPLIT_ALIGN;
    return at < n ? at : n;
}

/* The chunks of tensor x in a reduce pass: their number, and chunk c's
 * range [*lo, *hi) (factored chunks for two-pass rules, see optimc.h). */
static size_t chunk_count(int two_pass, const optimc_tensor *x)
{
    if (!two_pass || x->ndim < 2) return reduce_chunks(x->n);
    optimc_factored f;
    optimc_factored_chunks(x, &f);
    return f.chunks;
}

static void chunk_range(int two_pass, const optimc_tensor *x, size_t c, size_t chunks, size_t *lo, size_t *hi)
{
    if (!two_pass || x->ndim < 2) {
        *lo = chunk_start(x->n, c, chunks);
        *hi = chunk_start(x->n, c + 1, chunks);
        return;
    }
    optimc_factored f;
    optimc_factored_chunks(x, &f);
    size_t matrix = f.rows * f.cols;
    if (f.pieces == 0) {
        *lo = f.matrices * c / chunks * matrix;
        *hi = f.matrices * (c + 1) / chunks * matrix;
    } else {
        size_t m = c / f.pieces, piece = c % f.pieces;
        *lo = m * matrix + f.rows * piece / f.pieces * f.cols;
        *hi = m * matrix + f.rows * (piece + 1) / f.pieces * f.cols;
    }
}

/* A reduce pass: worker k of n_workers reduces the chunks whose first
 * element (counted over all tensors) falls in its share, each into its own
 * x->partial[c] — so every chunk is reduced whole, by one thread. */
typedef struct {
    const step_job *job;
    int pass, two_pass;
} reduce_job;

static void reduce_task(void *arg, int k, int n_workers)
{
    const reduce_job *rj = arg;
    const step_job *job = rj->job;
    size_t lo = k == 0 ? 0 : (size_t)((double)job->total * k / n_workers);
    size_t hi = k + 1 == n_workers ? SIZE_MAX : (size_t)((double)job->total * (k + 1) / n_workers);
    size_t off = 0;
    for (size_t t = 0; t < job->n_tensors; t++) {
        optimc_tensor *x = &job->tensors[t];
        size_t chunks = chunk_count(rj->two_pass, x);
        for (size_t c = 0; c < chunks; c++) {
            size_t a, b;
            chunk_range(rj->two_pass, x, c, chunks, &a, &b);
            if (off + a < lo || off + a >= hi) continue;
            for (int j = 0; j < OPTIMC_MAX_SUMS; j++) x->partial[c][j] = 0.0;
            if (a < b) job->impl[x->dtype].reduce[rj->pass](x, c, a, b, x->partial[c]);
        }
        off += x->n;
    }
}

/* Each tensor's totals, added in chunk order, into its step's constants. */
static void finish_reductions(const reduce_job *rj, const optimc_hyper *groups)
{
    const step_job *job = rj->job;
    for (size_t t = 0; t < job->n_tensors; t++) {
        optimc_tensor *x = &job->tensors[t];
        double sums[OPTIMC_MAX_SUMS] = {0};
        size_t chunks = chunk_count(rj->two_pass, x);
        for (size_t c = 0; c < chunks; c++)
            for (int j = 0; j < OPTIMC_MAX_SUMS; j++) sums[j] += x->partial[c][j];
        job->impl[x->dtype].finish[rj->pass](&groups[x->group], x, sums);
    }
}

int optimc_guard_verdict(const optimc_guard *guard, int measured, double sumsq, int finite,
                         optimc_tensor *tensors, size_t n_tensors, optimc_step_report *report)
{
    double scale = 1.0, clip = guard ? guard->clip_value : 0.0;
    if (measured) {
        double norm = sqrt(sumsq);
        report->norm_measured = 1;
        report->grad_norm = norm;
        /* an overflowing norm of finite grads would clip them to zero: skip that too */
        if (guard->skip_nonfinite && (!finite || !isfinite(norm))) return 1;
        if (guard->max_grad_norm > 0) {
            double coef = guard->max_grad_norm / (norm + 1e-6);
            if (coef < 1.0) scale = coef;
        }
    }
    for (size_t t = 0; t < n_tensors; t++) {
        tensors[t].grad_scale = scale;
        tensors[t].grad_clip = clip > 0 ? clip : 0.0;
    }
    return 0;
}

/* The guard: the grads' global L2 norm and finiteness in one pass (in a
 * fixed order, so every thread count sees the same norm), then the factor
 * the grads are read with. Returns 1 if the step must be skipped. */
static int apply_guard(const optimc_guard *guard, optimc_tensor *tensors, size_t n_tensors,
                       optimc_step_report *report)
{
    int measured = guard && (guard->max_grad_norm > 0 || guard->skip_nonfinite), finite = 1;
    double sumsq = 0.0;
    if (measured) {
        const optimc_aux *aux = optimc_level_aux();
        for (size_t t = 0; t < n_tensors; t++)
            if (tensors[t].grad_half) aux->half_grad_norm_acc(&tensors[t], &sumsq);   /* 16-bit grads */
            else aux->grad_norm_acc[tensors[t].dtype](tensors[t].grad, 0, tensors[t].n, 2.0, &sumsq);
        if (!isfinite(sumsq))
            for (size_t t = 0; t < n_tensors && finite; t++)
                finite = tensors[t].grad_half ? aux->half_all_finite(&tensors[t])
                                              : aux->all_finite[tensors[t].dtype](tensors[t].grad, 0, tensors[t].n);
    }
    return optimc_guard_verdict(guard, measured, sumsq, finite, tensors, n_tensors, report);
}

void optimc_step(int algorithm, const optimc_hyper *groups, optimc_tensor *tensors, size_t n_tensors,
                 const optimc_guard *guard, optimc_step_report *report)
{
    optimc_step_report local;
    if (!report) report = &local;
    memset(report, 0, sizeof *report);
    if (apply_guard(guard, tensors, n_tensors, report)) {
        report->skipped = 1;
        return;
    }
    step_job job = {optimc_level_table()[algorithm], optimc_level_aux(), tensors, n_tensors, 0};
    size_t bytes = 0;
    double prev_scalars[OPTIMC_MAX_SCALARS] = {0};   /* the previous tensor's, before its prepare */
    for (size_t t = 0; t < n_tensors; t++) {
        optimc_tensor *x = &tensors[t], *prev = t ? x - 1 : NULL;
        /* prepare depends only on (group, dtype, step, scalars, grad scale and
         * clip): a tensor that shares them with the one before copies its
         * constants, and its scalars as they were after that prepare */
        int same = prev && prev->group == x->group && prev->dtype == x->dtype && prev->step == x->step + 1
                   && prev->grad_scale == x->grad_scale && prev->grad_clip == x->grad_clip
                   && memcmp(prev_scalars, x->scalars, sizeof x->scalars) == 0;
        memcpy(prev_scalars, x->scalars, sizeof x->scalars);
        x->step++;
        if (same) {
            memcpy(x->coef, prev->coef, sizeof x->coef);
            memcpy(x->scalars, prev->scalars, sizeof x->scalars);
        } else {
            job.impl[x->dtype].prepare(&groups[x->group], x);
        }
        job.total += x->n;
        /* param read+write, grad read, each state buffer read+write */
        size_t elements = 3 * x->n;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++)
            if (x->state[k]) elements += 2 * optimc_state_elements(algorithm, x, k);
        bytes += elements * dtype_size(x->dtype);
    }
    int threads = optimc_get_num_threads();
    int split = threads > 1 && bytes >= optimc_get_thread_threshold();
    int passes = optimc_algorithms[algorithm].n_passes;
    for (int pass = 0; pass < passes; pass++) {   /* then each tensor's sums, in chunk order */
        reduce_job rj = {&job, pass, passes == 2};
        if (split) optimc_pool_run(reduce_task, &rj, threads);
        else reduce_task(&rj, 0, 1);
        finish_reductions(&rj, groups);
    }
    if (split) optimc_pool_run(step_task, &job, threads);
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
    stream_job job = {optimc_level_aux(), dtype, n_read, n_write, arrays, n};
    int threads = optimc_get_num_threads();
    size_t bytes = n * (dtype == OPTIMC_FLOAT32 ? 4 : 8) * (size_t)(n_read + n_write);
    if (threads > 1 && bytes >= optimc_get_thread_threshold()) optimc_pool_run(stream_task, &job, threads);
    else stream_task(&job, 0, 1);
}

void optimc_grad_stats(const optimc_buffer *bufs, size_t n_bufs, double norm_type,
                       double *total, int *all_finite)
{
    const optimc_aux *aux = optimc_level_aux();
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
    const optimc_aux *aux = optimc_level_aux();
    for (size_t b = 0; b < n_bufs; b++)
        aux->scale_clip[bufs[b].dtype](bufs[b].data, 0, bufs[b].n, mode, value);
}

void optimc_ema(optimc_buffer *avg, const optimc_buffer *params, size_t n_bufs, double weight)
{
    const optimc_aux *aux = optimc_level_aux();
    for (size_t b = 0; b < n_bufs; b++)
        aux->ema[avg[b].dtype](avg[b].data, params[b].data, 0, avg[b].n, weight);
}
