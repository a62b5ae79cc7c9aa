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
#include "lowprec.h"      /* OPTIMC_QBLOCK: compressed state's block */
#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t dtype_size(int dtype) { return dtype == OPTIMC_FLOAT32 ? 4 : 8; }

/* ---- the plan: check, sort, allocate ---- */

typedef struct {
    uint64_t row;
    size_t pos;
} keyed;

#define RADIX_MAX_BITS 11

/* LSD radix sort of a[0..n) by row (stable: equal rows keep position order),
 * only over the bits rows below n_rows can have, in as few passes of at most
 * 11 bits as they need (a million rows: two passes of 10); tmp has room for n. */
static keyed *radix_sort(keyed *a, keyed *tmp, size_t n, size_t n_rows)
{
    int bits = 0;
    while (bits < 64 && ((uint64_t)(n_rows - 1) >> bits) != 0) bits++;
    int passes = (bits + RADIX_MAX_BITS - 1) / RADIX_MAX_BITS;
    int width = passes ? (bits + passes - 1) / passes : 0;
    size_t count[1u << RADIX_MAX_BITS];
    uint64_t mask = ((uint64_t)1 << width) - 1;
    for (int shift = 0; shift < bits; shift += width) {
        memset(count, 0, sizeof(size_t) * ((size_t)mask + 1));
        for (size_t i = 0; i < n; i++) count[(a[i].row >> shift) & mask]++;
        size_t sum = 0;
        for (size_t d = 0; d <= mask; d++) { size_t c = count[d]; count[d] = sum; sum += c; }
        for (size_t i = 0; i < n; i++) tmp[count[(a[i].row >> shift) & mask]++] = a[i];
        keyed *t = a; a = tmp; tmp = t;
    }
    return a;
}

void optimc_sparse_free(optimc_sparse *s)
{
    free(s->rows);   /* the plan's one block: rows, first, order, grad and sums */
    s->rows = NULL, s->first = NULL, s->order = NULL, s->sums = NULL, s->grad = NULL;
    s->n_unique = 0;
}

/* Room for `count` items of `size` bytes at *offset, rounded to `align`. */
static size_t carve(size_t *offset, size_t count, size_t size, size_t align)
{
    size_t at = (*offset + align - 1) / align * align;
    *offset = at + count * size;
    return at;
}

/* Index i of s as a row, or -1 when it is out of range (negative or past the last row). */
static int64_t index_at(const optimc_sparse *s, size_t i)
{
    int64_t r = s->index_bytes == 4 ? (int64_t)((const int32_t *)s->indices)[i] : ((const int64_t *)s->indices)[i];
    return r < 0 || (uint64_t)r >= (uint64_t)s->n_rows ? -1 : r;
}

int optimc_sparse_plan(optimc_sparse *s, int dtype, size_t *bad)
{
    size_t n = s->nnz, isz = dtype_size(dtype), row_bytes = s->row_len * isz;
    s->n_unique = 0;
    s->rows = NULL, s->first = NULL, s->order = NULL, s->sums = NULL, s->grad = NULL;
    if (n == 0) return 0;
    keyed *a = malloc(sizeof(keyed) * 2 * n);
    if (!a) return OPTIMC_SPARSE_NO_MEMORY;
    /* the indices are read once, here: later changes to the caller's array
     * cannot send the step out of bounds */
    for (size_t i = 0; i < n; i++) {
        int64_t r = index_at(s, i);
        if (r < 0) {
            free(a);
            *bad = i;
            return OPTIMC_SPARSE_BAD_INDEX;
        }
        a[i].row = (uint64_t)r;
        a[i].pos = i;
    }
    keyed *sorted = radix_sort(a, a + n, n, s->n_rows);
    size_t n_unique = 0, n_repeated = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || sorted[i].row != sorted[i - 1].row) {
            n_unique++;
        } else if (i == 1 || sorted[i - 1].row != sorted[i - 2].row) {
            n_repeated++;   /* the second position of a row: one more row to sum */
        }
    }
    /* one block for everything the step reads: fewer allocations (and page
     * faults) per step; the sums start on a 64-byte line */
    size_t size = 0;
    size_t at_rows = carve(&size, n_unique, sizeof(int64_t), 8);
    size_t at_first = carve(&size, n_unique + 1, sizeof(size_t), 8);
    size_t at_order = carve(&size, n, sizeof(size_t), 8);
    size_t at_grad = carve(&size, n_unique, sizeof(void *), 8);
    size_t at_sums = carve(&size, n_repeated, row_bytes, 64);
    char *block = NULL;
    if (posix_memalign((void **)&block, 64, size) != 0) {
        free(a);
        return OPTIMC_SPARSE_NO_MEMORY;
    }
    s->rows = (int64_t *)(block + at_rows);
    s->first = (size_t *)(block + at_first);
    s->order = (size_t *)(block + at_order);
    s->grad = (const void **)(block + at_grad);
    s->sums = n_repeated ? block + at_sums : NULL;
    /* each row's grad: the given row when it occurs once, else its slot of
     * the sums (filled by optimc_sparse_coalesce or by the step) */
    const char *values = s->values;
    size_t u = 0, slot = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || sorted[i].row != sorted[i - 1].row) {
            s->rows[u] = (int64_t)sorted[i].row;
            s->first[u] = i;
            int repeated = i + 1 < n && sorted[i + 1].row == sorted[i].row;
            s->grad[u++] = repeated ? block + at_sums + slot++ * row_bytes : values + sorted[i].pos * row_bytes;
        }
        s->order[i] = sorted[i].pos;
    }
    s->first[n_unique] = n;
    s->n_unique = n_unique;
    free(a);
    return 0;
}

/* ---- coalescing: each row's grad, repeats summed in position order ---- */

/* How far ahead (rows, or positions of repeated rows) loops ask for lines,
 * and how much of a row. 4 rows (of 64 floats: 12 lines of param, state and
 * grad each) were the fastest of 2 to 32 on a million-row table here: more
 * asks only queue behind the misses in flight. */
#define PREFETCH_AHEAD 4
#define PREFETCH_BYTES 1024
#define PREFETCH_POSITIONS 4

/* Ask for the first `bytes` (at most PREFETCH_BYTES) of p's lines. */
static inline void prefetch_lines(const void *p, size_t bytes, int write)
{
    if (bytes > PREFETCH_BYTES) bytes = PREFETCH_BYTES;
    for (size_t o = 0; o < bytes; o += 64) {
        if (write) __builtin_prefetch((const char *)p + o, 1, 3);
        else __builtin_prefetch((const char *)p + o, 0, 3);
    }
}

/* out = the sum of values' rows pos[0], pos[1], ... pos[n_pos-1], added in
 * that order; while adding one, the row PREFETCH_AHEAD positions later (of
 * this or the next rows: pos[k] exists for k < n_ahead) is asked for. */
#define DEFINE_SUM(T, name) \
    static void name(T *restrict out, const T *restrict values, const size_t *pos, size_t n_pos, \
                     size_t n_ahead, size_t len) \
    { \
        for (size_t k = 0; k < n_pos; k++) { \
            if (k + PREFETCH_AHEAD < n_ahead) \
                prefetch_lines(values + pos[k + PREFETCH_AHEAD] * len, len * sizeof(T), 0); \
            const T *restrict v = values + pos[k] * len; \
            if (k == 0) { \
                for (size_t j = 0; j < len; j++) out[j] = v[j]; \
            } else { \
                for (size_t j = 0; j < len; j++) out[j] = out[j] + v[j]; \
            } \
        } \
    }
DEFINE_SUM(float, sum_rows_f32)
DEFINE_SUM(double, sum_rows_f64)

/* Planned row r's grad, when it occurs more than once: its values summed
 * into its slot. */
static void sum_row(const optimc_sparse *s, size_t r, int dtype)
{
    size_t a = s->first[r], b = s->first[r + 1];
    if (b - a < 2) return;
    void *out = (void *)s->grad[r];
    if (dtype == OPTIMC_FLOAT32) sum_rows_f32(out, s->values, &s->order[a], b - a, s->nnz - a, s->row_len);
    else sum_rows_f64(out, s->values, &s->order[a], b - a, s->nnz - a, s->row_len);
}

/* The given rows a planned row's grad is read from (its values' first few
 * positions when repeats are not summed yet). */
static void prefetch_grad(const optimc_sparse *s, size_t r, size_t row_bytes, int summed)
{
    size_t a = s->first[r], b = s->first[r + 1];
    if (b - a == 1 || summed) {
        prefetch_lines(s->grad[r], row_bytes, 0);
        return;
    }
    if (b - a > PREFETCH_POSITIONS) b = a + PREFETCH_POSITIONS;
    for (size_t k = a; k < b; k++) prefetch_lines((const char *)s->values + s->order[k] * row_bytes, row_bytes, 0);
}

void optimc_sparse_coalesce(optimc_sparse *s, int dtype)
{
    size_t row_bytes = s->row_len * dtype_size(dtype);
    for (size_t r = 0; r < s->n_unique; r++) {
        if (r + PREFETCH_AHEAD < s->n_unique) prefetch_grad(s, r + PREFETCH_AHEAD, row_bytes, 0);
        sum_row(s, r, dtype);
    }
}

/* ---- which algorithms take row-sparse grads: their rule's mark ---- */

int optimc_sparse_accepts(int algorithm, const optimc_hyper *h, const char **option)
{
    const optimc_algorithm *alg = &optimc_algorithms[algorithm];
    *option = NULL;
    if (!alg->sparse) return 0;
    for (int z = 0; z < alg->n_sparse_zero; z++) {
        int k = optimc_hyper_index(algorithm, alg->sparse_zero[z]);
        if (k >= 0 && h->v[k] != 0) {
            *option = alg->sparse_zero[z];
            return 0;
        }
    }
    return 1;
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

typedef struct {
    const optimc_impl *impl;
    const optimc_algorithm *alg;
    const optimc_tensor *x;
    const optimc_sparse *s;
    int summed;   /* the plan's repeated rows are summed already (for the guard) */
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
 * over a one-row view of the tensor, its repeats summed first (a row's sum
 * is the same whichever worker makes it). */
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
    size_t row_bytes = len * isz;
    const char *dense = x->grad;
    optimc_kernel_fn kernel = job->impl[x->dtype].kernel;
    for (size_t r = lo; r < hi; r++) {
        if (s && r + PREFETCH_AHEAD < hi) {
            /* rows are scattered over the table: ask for a later row's lines now,
             * so that their latency overlaps this row's work */
            size_t ahead = (size_t)s->rows[r + PREFETCH_AHEAD];
            prefetch_lines((const char *)x->param + ahead * row_bytes, row_bytes, 1);
            prefetch_grad(s, r + PREFETCH_AHEAD, row_bytes, job->summed);
            for (int b = 0; b < OPTIMC_MAX_STATE; b++)
                if (x->state[b]) prefetch_lines((const char *)x->state[b] + ahead * stride[b], stride[b], 1);
        }
        size_t row = s ? (size_t)s->rows[r] : r;
        if (s && !job->summed) sum_row(s, r, x->dtype);
        y.param = (char *)x->param + row * row_bytes;
        y.grad = s ? s->grad[r] : dense + row * row_bytes;
        for (int b = 0; b < OPTIMC_MAX_STATE; b++)
            y.state[b] = x->state[b] ? (char *)x->state[b] + row * stride[b] : NULL;
        kernel(&y, 0, len);
    }
}

/* The bytes a row-sparse step moves, as the pool's threshold counts them.
 * The threshold is set for dense steps, which stream memory: one thread
 * nearly saturates the bandwidth, so splitting pays only on long steps. Rows
 * scattered over a large table wait on memory latency instead, and two
 * threads keep twice as many misses in flight: on a 1,000,000 x 64 float32
 * table here (python -m optimc bench --sections sparse, --threads 1 against
 * --threads 2; docs/performance.md), Adagrad's step at 1,000 indices (1.2 MB
 * moved) took 193 us on one thread and 69 us on two, where a dense step
 * needs about 12 MiB to gain. So a row-sparse step's bytes count
 * SPARSE_SPLIT_WEIGHT times (1,000 rows of 64 floats then split). */
#define SPARSE_SPLIT_WEIGHT 16
static size_t sparse_split_bytes(size_t bytes)
{
    return bytes > SIZE_MAX / SPARSE_SPLIT_WEIGHT ? SIZE_MAX : bytes * SPARSE_SPLIT_WEIGHT;
}

/* Elements of a dense tensor, split on 64-byte multiples; a tensor with
 * compressed state (state_dtype, kept by params of min_8bit_size and more
 * beside native ones) goes through its block wrapper, split on block edges,
 * as in optimc_step. (16-bit params never get here: the binding refuses
 * SparseGrads in an optimizer that has one.) */
static void dense_task(void *arg, int k, int n_workers)
{
    const apply_job *job = arg;
    const optimc_tensor *x = job->x;
    size_t n = x->n, align = x->state_format != OPTIMC_STATE_NATIVE ? OPTIMC_QBLOCK : 16;
    size_t lo = k == 0 ? 0 : (size_t)((double)n * k / n_workers) / align * align;
    size_t hi = k + 1 == n_workers ? n : (size_t)((double)n * (k + 1) / n_workers) / align * align;
    if (lo >= hi) return;
    if (x->state_format != OPTIMC_STATE_NATIVE)
        optimc_level_aux()->lowprec[x->dtype](job->impl[x->dtype].kernel, x, lo, hi);
    else
        job->impl[x->dtype].kernel(x, lo, hi);
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
    /* the guard measures the coalesced rows, so they are summed first; else
     * each row is summed just before its update, in the same pass */
    int summed = guard && (guard->max_grad_norm > 0 || guard->skip_nonfinite);
    for (size_t t = 0; summed && t < n_tensors; t++)
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
        if (s) bytes = sparse_split_bytes(bytes);
        apply_job job = {impl, alg, x, s, summed};
        optimc_task task = s || rowwise ? rows_task : dense_task;
        if (threads > 1 && bytes >= threshold) optimc_pool_run(task, &job, threads);
        else task(&job, 0, 1);
    }
}

/* ---- the floor: the least work of a row-sparse step ---- */

/* The benchmark's floor of a row-sparse step (as optimc_stream is the dense
 * step's roofline): every byte a step must move, with the least arithmetic.
 * Each touched row of param and of every state buffer is read once, the
 * row's grad added, and written back; the indices and values are read once. */

typedef struct {
    int dtype, n_state;
    char *param;
    char *const *state;
    const optimc_sparse *s;   /* coalescing: the plan */
    const int64_t *rows;      /* else: the checked indices, in position order */
} floor_job;

/* Row `row` of param and of every state buffer += g: one pass over the row
 * for up to two state buffers (Adagrad's one, SparseAdam's two), as the
 * rules' kernels make one. */
#define DEFINE_FLOOR_ROW(T, name) \
    static void name(const floor_job *job, size_t row, const void *grad, size_t len) \
    { \
        T *restrict p = (T *)job->param + row * len; \
        const T *restrict g = grad; \
        int n_state = job->n_state; \
        T *restrict s0 = n_state > 0 ? (T *)job->state[0] + row * len : NULL; \
        T *restrict s1 = n_state > 1 ? (T *)job->state[1] + row * len : NULL; \
        if (n_state == 0) { \
            for (size_t j = 0; j < len; j++) p[j] = p[j] + g[j]; \
        } else if (n_state == 1) { \
            for (size_t j = 0; j < len; j++) { T v = g[j]; p[j] = p[j] + v; s0[j] = s0[j] + v; } \
        } else { \
            for (size_t j = 0; j < len; j++) { \
                T v = g[j]; p[j] = p[j] + v; s0[j] = s0[j] + v; s1[j] = s1[j] + v; \
            } \
            for (int b = 2; b < n_state; b++) { \
                T *restrict sb = (T *)job->state[b] + row * len; \
                for (size_t j = 0; j < len; j++) sb[j] = sb[j] + g[j]; \
            } \
        } \
    }
DEFINE_FLOOR_ROW(float, floor_row_f32)
DEFINE_FLOOR_ROW(double, floor_row_f64)

static void floor_row(const floor_job *job, size_t row, const void *g, size_t len, size_t row_bytes)
{
    (void)row_bytes;
    if (job->dtype == OPTIMC_FLOAT32) floor_row_f32(job, row, g, len);
    else floor_row_f64(job, row, g, len);
}

static void floor_prefetch(const floor_job *job, size_t row, size_t row_bytes)
{
    prefetch_lines(job->param + row * row_bytes, row_bytes, 1);
    for (int b = 0; b < job->n_state; b++) prefetch_lines(job->state[b] + row * row_bytes, row_bytes, 1);
}

/* Coalesced: the planned rows [n·k/W, n·(k+1)/W), each summed (in position
 * order) and then added, as rows_task walks them. */
static void floor_sorted_task(void *arg, int k, int n_workers)
{
    const floor_job *job = arg;
    const optimc_sparse *s = job->s;
    size_t n = s->n_unique, len = s->row_len, row_bytes = len * dtype_size(job->dtype);
    size_t lo = n * (size_t)k / (size_t)n_workers, hi = n * (size_t)(k + 1) / (size_t)n_workers;
    for (size_t r = lo; r < hi; r++) {
        if (r + PREFETCH_AHEAD < hi) {
            floor_prefetch(job, (size_t)s->rows[r + PREFETCH_AHEAD], row_bytes);
            prefetch_grad(s, r + PREFETCH_AHEAD, row_bytes, 0);
        }
        sum_row(s, r, job->dtype);
        floor_row(job, (size_t)s->rows[r], s->grad[r], len, row_bytes);
    }
}

/* Not coalesced: every position in order, each added to its row; worker k of
 * W owns the rows [n_rows·k/W, n_rows·(k+1)/W), so that a row's positions
 * are added by one worker, in order. */
static void floor_unsorted_task(void *arg, int k, int n_workers)
{
    const floor_job *job = arg;
    const optimc_sparse *s = job->s;
    size_t len = s->row_len, row_bytes = len * dtype_size(job->dtype), n = s->nnz;
    uint64_t lo = (uint64_t)s->n_rows * (uint64_t)k / (uint64_t)n_workers;
    uint64_t hi = (uint64_t)s->n_rows * (uint64_t)(k + 1) / (uint64_t)n_workers;
    const char *values = s->values;
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) {
            uint64_t ahead = (uint64_t)job->rows[i + PREFETCH_AHEAD];
            if (ahead >= lo && ahead < hi) {
                floor_prefetch(job, (size_t)ahead, row_bytes);
                prefetch_lines(values + (i + PREFETCH_AHEAD) * row_bytes, row_bytes, 0);
            }
        }
        uint64_t row = (uint64_t)job->rows[i];
        if (row >= lo && row < hi) floor_row(job, (size_t)row, values + i * row_bytes, len, row_bytes);
    }
}

int optimc_sparse_floor(int dtype, void *param, void *const *state, int n_state, optimc_sparse *s,
                        int coalesce, size_t *bad)
{
    size_t n = s->nnz, isz = dtype_size(dtype);
    floor_job job = {dtype, n_state, param, (char *const *)state, s, NULL};
    int64_t *rows = NULL;
    size_t touched = n;
    if (coalesce) {
        int rc = optimc_sparse_plan(s, dtype, bad);
        if (rc) return rc;
        touched = s->n_unique;
    } else if (n) {
        /* the indices read once and checked, as a plan reads them */
        rows = malloc(sizeof(int64_t) * n);
        if (!rows) return OPTIMC_SPARSE_NO_MEMORY;
        for (size_t i = 0; i < n; i++) {
            int64_t r = index_at(s, i);
            if (r < 0) {
                free(rows);
                *bad = i;
                return OPTIMC_SPARSE_BAD_INDEX;
            }
            rows[i] = r;
        }
        job.rows = rows;
    }
    if (touched) {
        /* the step's rule for splitting over the pool: its bytes against the threshold */
        int threads = optimc_get_num_threads();
        size_t bytes = sparse_split_bytes(touched * s->row_len * isz * (size_t)(3 + 2 * n_state));
        optimc_task task = coalesce ? floor_sorted_task : floor_unsorted_task;
        if (threads > 1 && bytes >= optimc_get_thread_threshold()) optimc_pool_run(task, &job, threads);
        else task(&job, 0, 1);
    }
    if (coalesce) optimc_sparse_free(s);
    free(rows);
    return 0;
}
