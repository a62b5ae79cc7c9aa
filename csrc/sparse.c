/* sparse.c — row-sparse grads: coalescing (a stable sort of the indices and
 * the sums of repeated rows) and a step that applies a rule to the touched
 * rows only. Plain C11, no Python.
 *
 * A rule's kernel updates a contiguous range of one tensor; a touched row is
 * such a range (param, grad and state offset to the row, n = the row's
 * length), so the rules whose sparse semantics are "the dense rule at the
 * touched rows" (torch's sparse SGD and Adagrad, SparseAdam) reuse their
 * dense kernel unchanged, row by row. Rows are independent once coalesced,
 * so they are split over the pool in contiguous blocks: the same bits for
 * any thread count. */
#define _GNU_SOURCE
#include "optimc.h"
#include "kernels.h"
#include "pool.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t dtype_size(int dtype) { return dtype == OPTIMC_FLOAT32 ? 4 : 8; }

/* ---- the plan: check, sort, allocate ---- */

typedef struct {
    uint64_t row;
    size_t pos;
} keyed;

#define RADIX_BITS 11
#define RADIX (1u << RADIX_BITS)

/* LSD radix sort of a[0..n) by row (stable: equal rows keep position order),
 * only over the bits rows below n_rows can have; tmp has room for n. */
static keyed *radix_sort(keyed *a, keyed *tmp, size_t n, size_t n_rows)
{
    int bits = 0;
    while (bits < 64 && ((uint64_t)(n_rows - 1) >> bits) != 0) bits++;
    static const size_t zero[RADIX];
    size_t *count = malloc(sizeof(size_t) * RADIX);
    if (!count) return NULL;
    for (int shift = 0; shift < bits; shift += RADIX_BITS) {
        memcpy(count, zero, sizeof zero);
        for (size_t i = 0; i < n; i++) count[(a[i].row >> shift) & (RADIX - 1)]++;
        size_t sum = 0;
        for (size_t d = 0; d < RADIX; d++) { size_t c = count[d]; count[d] = sum; sum += c; }
        for (size_t i = 0; i < n; i++) tmp[count[(a[i].row >> shift) & (RADIX - 1)]++] = a[i];
        keyed *t = a; a = tmp; tmp = t;
    }
    free(count);
    return a;
}

void optimc_sparse_free(optimc_sparse *s)
{
    free(s->rows);
    free(s->first);
    free(s->order);
    free(s->sums);
    free((void *)s->grad);
    s->rows = NULL, s->first = NULL, s->order = NULL, s->sums = NULL, s->grad = NULL;
    s->n_unique = 0;
}

int optimc_sparse_plan(optimc_sparse *s, int dtype, size_t *bad)
{
    size_t n = s->nnz;
    s->n_unique = 0;
    s->rows = NULL, s->first = NULL, s->order = NULL, s->sums = NULL, s->grad = NULL;
    if (n == 0) return 0;
    keyed *a = malloc(sizeof(keyed) * n), *tmp = malloc(sizeof(keyed) * n);
    if (!a || !tmp) { free(a); free(tmp); return OPTIMC_SPARSE_NO_MEMORY; }
    /* the indices are read once, here: later changes to the caller's array
     * cannot send the step out of bounds */
    for (size_t i = 0; i < n; i++) {
        int64_t r = s->index_bytes == 4 ? (int64_t)((const int32_t *)s->indices)[i]
                                        : ((const int64_t *)s->indices)[i];
        if (r < 0 || (uint64_t)r >= (uint64_t)s->n_rows) {
            free(a); free(tmp);
            *bad = i;
            return OPTIMC_SPARSE_BAD_INDEX;
        }
        a[i].row = (uint64_t)r;
        a[i].pos = i;
    }
    keyed *sorted = radix_sort(a, tmp, n, s->n_rows);
    if (!sorted) { free(a); free(tmp); return OPTIMC_SPARSE_NO_MEMORY; }
    size_t n_unique = 0, n_repeated = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || sorted[i].row != sorted[i - 1].row) {
            n_unique++;
        } else if (i == 1 || sorted[i - 1].row != sorted[i - 2].row) {
            n_repeated++;   /* the second position of a row: one more row to sum */
        }
    }
    s->rows = malloc(sizeof(int64_t) * n_unique);
    s->first = malloc(sizeof(size_t) * (n_unique + 1));
    s->order = malloc(sizeof(size_t) * n);
    s->grad = malloc(sizeof(void *) * n_unique);
    if (n_repeated) s->sums = malloc(n_repeated * s->row_len * dtype_size(dtype) + 1);
    if (!s->rows || !s->first || !s->order || !s->grad || (n_repeated && !s->sums)) {
        free(a); free(tmp);
        optimc_sparse_free(s);
        return OPTIMC_SPARSE_NO_MEMORY;
    }
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || sorted[i].row != sorted[i - 1].row) {
            s->rows[u] = (int64_t)sorted[i].row;
            s->first[u++] = i;
        }
        s->order[i] = sorted[i].pos;
    }
    s->first[n_unique] = n;
    s->n_unique = n_unique;
    free(a); free(tmp);
    return 0;
}

/* ---- coalescing: each row's grad, repeats summed in position order ---- */

#define DEFINE_SUM(T, name) \
    static void name(T *restrict out, const T *values, const size_t *pos, size_t n_pos, size_t len) \
    { \
        const T *v0 = values + pos[0] * len; \
        for (size_t j = 0; j < len; j++) out[j] = v0[j]; \
        for (size_t k = 1; k < n_pos; k++) { \
            const T *v = values + pos[k] * len; \
            for (size_t j = 0; j < len; j++) out[j] = out[j] + v[j]; \
        } \
    }
DEFINE_SUM(float, sum_rows_f32)
DEFINE_SUM(double, sum_rows_f64)

void optimc_sparse_coalesce(optimc_sparse *s, int dtype)
{
    size_t isz = dtype_size(dtype), len = s->row_len, slot = 0;
    const char *values = s->values;
    for (size_t r = 0; r < s->n_unique; r++) {
        size_t a = s->first[r], b = s->first[r + 1];
        if (b - a == 1) {
            s->grad[r] = values + s->order[a] * len * isz;
            continue;
        }
        char *out = (char *)s->sums + slot++ * len * isz;
        if (dtype == OPTIMC_FLOAT32) sum_rows_f32((float *)out, (const float *)values, &s->order[a], b - a, len);
        else sum_rows_f64((double *)out, (const double *)values, &s->order[a], b - a, len);
        s->grad[r] = out;
    }
}

/* ---- which algorithms take row-sparse grads ---- */

static double field(int algorithm, const optimc_hyper *h, const char *name)
{
    int k = optimc_hyper_index(algorithm, name);
    return k < 0 ? 0.0 : h->v[k];
}

int optimc_sparse_accepts(int algorithm, const optimc_hyper *h, const char **option)
{
    const char *name = optimc_algorithms[algorithm].name;
    *option = NULL;
    if (strcmp(name, "sparse_adam") == 0 || strcmp(name, "rowwise_adagrad") == 0) return 1;
    /* torch's sparse SGD has no momentum buffer to update lazily */
    if (strcmp(name, "sgd") == 0) {
        if (field(algorithm, h, "momentum") == 0) return 1;
        *option = "momentum";
        return 0;
    }
    /* as torch.optim.Adagrad: weight decay would touch every row */
    if (strcmp(name, "adagrad") == 0) {
        if (field(algorithm, h, "weight_decay") == 0) return 1;
        *option = "weight_decay";
        return 0;
    }
    return 0;
}

/* ---- the step ---- */

/* How far apart consecutive rows of state buffer k are, in elements. */
static size_t state_row_stride(const optimc_algorithm *alg, int k, size_t row_len)
{
    return alg->state_layout[k] == optimc_layout_rows ? 1 : row_len;
}

/* A rule with per-row state (layout rows) updates whole rows, so it runs
 * row by row for dense grads too (each row given once, in order). */
static int is_rowwise(const optimc_algorithm *alg)
{
    for (int k = 0; k < alg->n_state; k++)
        if (alg->state_layout[k] == optimc_layout_rows) return 1;
    return 0;
}

int optimc_sparse_rowwise(int algorithm) { return is_rowwise(&optimc_algorithms[algorithm]); }

/* How many rows ahead the row loop prefetches, and how much of each row. */
#define PREFETCH_AHEAD 4
#define PREFETCH_BYTES 1024

typedef struct {
    const optimc_impl *impl;
    const optimc_algorithm *alg;
    const optimc_tensor *x;
    const optimc_sparse *s;
} apply_job;

/* The rows a tensor's step updates: its plan's, or (a dense grad to a
 * row-wise rule) every row in order. */
static size_t n_rows_of(const optimc_tensor *x, const optimc_sparse *s)
{
    return s ? s->n_unique : x->ndim ? x->dims[0] : 1;
}

static size_t row_len_of(const optimc_tensor *x, const optimc_sparse *s)
{
    size_t n = n_rows_of(x, NULL);
    return s ? s->row_len : n ? x->n / n : 0;
}

/* Rows [n·k/W, n·(k+1)/W) of the n updated: each a range of the rule's kernel
 * over a one-row view of the tensor. */
static void rows_task(void *arg, int k, int n_workers)
{
    const apply_job *job = arg;
    const optimc_tensor *x = job->x;
    const optimc_sparse *s = job->s;
    size_t n = n_rows_of(x, s);
    size_t lo = n * (size_t)k / (size_t)n_workers;
    size_t hi = n * (size_t)(k + 1) / (size_t)n_workers;
    size_t isz = dtype_size(x->dtype), len = row_len_of(x, s), stride[OPTIMC_MAX_STATE];
    for (int b = 0; b < OPTIMC_MAX_STATE; b++) stride[b] = state_row_stride(job->alg, b, len) * isz;
    optimc_tensor y = *x;
    y.n = len;
    if (y.ndim) y.dims[0] = 1;   /* the view is one row */
    size_t row_bytes = len * isz, lines = row_bytes < PREFETCH_BYTES ? row_bytes : PREFETCH_BYTES;
    const char *dense = x->grad;
    for (size_t r = lo; r < hi; r++) {
        if (s && r + PREFETCH_AHEAD < hi) {
            /* rows are scattered over the table: ask for a later row's lines now,
             * so that their latency overlaps this row's work */
            size_t ahead = (size_t)s->rows[r + PREFETCH_AHEAD];
            const char *pa = (const char *)x->param + ahead * row_bytes, *ga = s->grad[r + PREFETCH_AHEAD];
            for (size_t o = 0; o < lines; o += 64) {
                __builtin_prefetch(pa + o, 1, 3);
                __builtin_prefetch(ga + o, 0, 3);
            }
            for (int b = 0; b < OPTIMC_MAX_STATE; b++) {
                if (!x->state[b]) continue;
                const char *sa = (const char *)x->state[b] + ahead * stride[b];
                size_t n_b = stride[b] < lines ? stride[b] : lines;
                for (size_t o = 0; o < n_b; o += 64) __builtin_prefetch(sa + o, 1, 3);
            }
        }
        size_t row = s ? (size_t)s->rows[r] : r;
        y.param = (char *)x->param + row * len * isz;
        y.grad = s ? s->grad[r] : dense + row * len * isz;
        for (int b = 0; b < OPTIMC_MAX_STATE; b++)
            y.state[b] = x->state[b] ? (char *)x->state[b] + row * stride[b] : NULL;
        job->impl[x->dtype].kernel(&y, 0, len);
    }
}

/* Elements of a dense tensor, split on 64-byte multiples. */
static void dense_task(void *arg, int k, int n_workers)
{
    const apply_job *job = arg;
    size_t n = job->x->n;
    size_t lo = k == 0 ? 0 : (size_t)((double)n * k / n_workers) / 16 * 16;
    size_t hi = k + 1 == n_workers ? n : (size_t)((double)n * (k + 1) / n_workers) / 16 * 16;
    if (lo < hi) job->impl[job->x->dtype].kernel(job->x, lo, hi);
}

/* The guard over dense grads and coalesced rows, in tensor then row order.
 * Returns 1 when the step must be skipped. */
static int guard_step(const optimc_guard *guard, optimc_tensor *tensors, optimc_sparse *const *sparse,
                      size_t n_tensors, optimc_step_report *report)
{
    int measured = guard && (guard->max_grad_norm > 0 || guard->skip_nonfinite), finite = 1;
    double sumsq = 0.0;
    if (measured) {
        const optimc_aux *aux = optimc_level_aux();
        for (size_t t = 0; t < n_tensors; t++) {
            const optimc_tensor *x = &tensors[t];
            const optimc_sparse *s = sparse[t];
            if (!s) {
                aux->grad_norm_acc[x->dtype](x->grad, 0, x->n, 2.0, &sumsq);
                if (finite) finite = aux->all_finite[x->dtype](x->grad, 0, x->n);
                continue;
            }
            for (size_t r = 0; r < s->n_unique; r++) {
                aux->grad_norm_acc[x->dtype](s->grad[r], 0, s->row_len, 2.0, &sumsq);
                if (finite) finite = aux->all_finite[x->dtype](s->grad[r], 0, s->row_len);
            }
        }
    }
    return optimc_guard_verdict(guard, measured, sumsq, finite, tensors, n_tensors, report);
}

void optimc_sparse_step(int algorithm, const optimc_hyper *groups, optimc_tensor *tensors,
                        optimc_sparse *const *sparse, size_t n_tensors, const optimc_guard *guard,
                        optimc_step_report *report)
{
    optimc_step_report local;
    if (!report) report = &local;
    memset(report, 0, sizeof *report);
    for (size_t t = 0; t < n_tensors; t++)
        if (sparse[t]) optimc_sparse_coalesce(sparse[t], tensors[t].dtype);
    if (guard_step(guard, tensors, sparse, n_tensors, report)) {
        report->skipped = 1;
        return;
    }
    const optimc_algorithm *alg = &optimc_algorithms[algorithm];
    const optimc_impl *impl = optimc_level_table()[algorithm];
    int threads = optimc_get_num_threads(), rowwise = is_rowwise(alg);
    size_t threshold = optimc_get_thread_threshold();
    for (size_t t = 0; t < n_tensors; t++) {
        optimc_tensor *x = &tensors[t];
        optimc_sparse *s = sparse[t];
        x->step++;
        impl[x->dtype].prepare(&groups[x->group], x);
        int n_state = 0;
        for (int k = 0; k < OPTIMC_MAX_STATE; k++) n_state += x->state[k] != NULL;
        size_t elements = s ? s->n_unique * s->row_len : x->n;
        size_t bytes = elements * dtype_size(x->dtype) * (size_t)(3 + 2 * n_state);
        apply_job job = {impl, alg, x, s};
        optimc_task task = s || rowwise ? rows_task : dense_task;
        if (threads > 1 && bytes >= threshold) optimc_pool_run(task, &job, threads);
        else task(&job, 0, 1);
    }
}
