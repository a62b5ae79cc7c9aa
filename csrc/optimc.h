/* optimc.h — the kernel library's public face (plain C11, no Python).
 *
 * A step takes a list of tensors (param, grad, state buffers, element count,
 * dtype, group index), the hyperparameters of every group, and updates each
 * tensor in place with one algorithm. Kernels never allocate and never fail.
 *
 * Algorithms are described once, in csrc/rules/<name>.h, and listed once, in
 * csrc/rules/all.h; this header knows none of them by name. A caller finds an
 * algorithm with optimc_find_algorithm and learns its hyperparameter fields
 * and state buffers from its optimc_algorithm entry.
 */
#ifndef OPTIMC_H
#define OPTIMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { OPTIMC_FLOAT32 = 0, OPTIMC_FLOAT64 = 1 } optimc_dtype;

/* SIMD levels, lowest first; the kernels are compiled once per level. */
typedef enum {
    OPTIMC_BASELINE = 0, OPTIMC_AVX2 = 1, OPTIMC_AVX512 = 2, OPTIMC_N_LEVELS
} optimc_level;

/* Bounds of the registry's tables (checked at compile time per algorithm). */
#define OPTIMC_MAX_HYPER 16     /* hyperparameter fields, the 4 common ones included */
#define OPTIMC_MAX_STATE 4      /* state buffers per tensor */
#define OPTIMC_MAX_SCALARS 4    /* per-tensor scalar state (NAdam's mu_product, ...) */
#define OPTIMC_COEF_BYTES 192   /* per-tensor scratch for a step's constants */
/* Per-tensor reductions (rules that need norms before their update, such as
 * LAMB's trust ratio): at most OPTIMC_MAX_SUMS sums per tensor, each summed
 * over at most OPTIMC_REDUCE_CHUNKS chunks of at least OPTIMC_REDUCE_MIN_CHUNK
 * elements. A tensor's chunk boundaries depend only on its size, so the sums
 * are the same for any thread split. */
#define OPTIMC_MAX_SUMS 4
#define OPTIMC_REDUCE_CHUNKS 16
#define OPTIMC_REDUCE_MIN_CHUNK 4096
#define OPTIMC_MAX_DIMS 64      /* dimensions of a param (NumPy's own limit) */
/* Factored chunks (rules with two reduce passes, such as Adafactor's, whose
 * sums run along rows and columns of a param's last two dims): a param of
 * ndim >= 2 is `matrices` matrices (the leading dims) of `rows` x `cols`
 * (its last two dims). Its reduce chunks (still at most
 * OPTIMC_REDUCE_CHUNKS, their count from its size alone) hold whole matrices
 * when there are at least as many matrices as chunks (chunk c: matrices
 * [matrices*c/chunks, matrices*(c+1)/chunks)), otherwise `pieces` non-empty
 * runs of whole rows of each matrix (chunk c: matrix c / pieces, rows
 * [rows*p/pieces, rows*(p+1)/pieces) for p = c % pieces). An empty param has
 * one empty chunk. Below 2-D the chunks are the ordinary ones. */
typedef struct {
    size_t matrices, rows, cols;
    size_t chunks;      /* chunks of this tensor */
    size_t pieces;      /* chunks per matrix; 0 when chunks hold whole matrices */
} optimc_factored;

/* A step counter never exceeds this: the rules compute with t as a double,
 * exact up to 2^53, and a step that would pass it is refused. */
#define OPTIMC_MAX_STEP (INT64_C(1) << 53)

/* One group's hyperparameters: field k is the algorithm's hyper_names[k].
 * Every algorithm starts with lr, weight_decay, maximize and
 * decoupled_weight_decay (flags are 0 or 1). */
typedef struct {
    double v[OPTIMC_MAX_HYPER];
} optimc_hyper;

/* One tensor: where its param, grad and state buffers are, and its scalar
 * state. `coef` is scratch the kernels fill once per step with that step's
 * constants (bias corrections, ...), in the tensor's own dtype. */
typedef struct {
    void *param;
    const void *grad;
    void *state[OPTIMC_MAX_STATE];  /* NULL where the options need no buffer */
    size_t n;                       /* number of elements */
    int ndim;                       /* the param's shape: dims[0 .. ndim) */
    size_t dims[OPTIMC_MAX_DIMS];
    int dtype;                      /* optimc_dtype */
    int group;                      /* index into the hyperparameter array */
    int64_t step;                   /* steps taken so far */
    double scalars[OPTIMC_MAX_SCALARS];  /* named by the algorithm's scalar_names */
    double grad_scale;              /* multiplies the grad (clipping); 1 normally */
    double grad_clip;               /* clamps the grad to ±grad_clip when > 0 */
    _Alignas(16) unsigned char coef[OPTIMC_COEF_BYTES];
    /* Compressed state (csrc/lowprec.c): how the buffers are stored, which
     * of them take the signed 8-bit map, and each 8-bit buffer's block
     * scales (one float per OPTIMC_QBLOCK elements). */
    int state_format;                       /* optimc_state_format */
    unsigned state_signed;                  /* bit k: state[k] uses the signed map */
    float *state_absmax[OPTIMC_MAX_STATE];  /* 8-bit only */
    /* scratch of rules with per-tensor reductions: chunk c's partial sums */
    double partial[OPTIMC_REDUCE_CHUNKS][OPTIMC_MAX_SUMS];
    /* scratch of rules with factored chunks (optimc_scratch_elements
     * doubles, allocated by the caller beside the state; NULL if none) */
    double *scratch;
    /* A bfloat16 or float16 param (csrc/halfparam_impl.h): dtype is then
     * OPTIMC_FLOAT32, the type its rule computes in and its state is kept in;
     * param (and grad, when grad_half) hold 16-bit values. */
    int param_format;                       /* optimc_param_format */
    int grad_half;                          /* the grad has the param's 16-bit format (else float32) */
    int rounding;                           /* optimc_rounding */
    float *master;                          /* OPTIMC_ROUND_MASTER: the float32 copy the rule updates */
    uint64_t sr_key;                        /* OPTIMC_ROUND_STOCHASTIC: optimc_sr_param_key(seed, index) */
} optimc_tensor;

/* How a param is stored: in its dtype, or in 16 bits (bfloat16: the top half
 * of a float32; float16: IEEE binary16). */
typedef enum {
    OPTIMC_PARAM_NATIVE = 0, OPTIMC_PARAM_BF16 = 1, OPTIMC_PARAM_F16 = 2
} optimc_param_format;

/* How a 16-bit param is written after the float32 update: rounded to nearest
 * even from the decoded param (NEAREST) or from a float32 master copy kept
 * in the state (MASTER), or rounded stochastically (STOCHASTIC, no copy). */
typedef enum {
    OPTIMC_ROUND_NEAREST = 0, OPTIMC_ROUND_MASTER = 1, OPTIMC_ROUND_STOCHASTIC = 2
} optimc_rounding;

/* How a tensor's state buffers are stored. Native: the param's dtype.
 * bfloat16: uint16 bits, round to nearest even. 8-bit: uint8 codes of
 * bitsandbytes' dynamic maps with a float32 absmax per 256-element block
 * (csrc/quantize.h). Compressed buffers are decoded per block into the
 * param's dtype around the rule's own kernel, and encoded again after it. */
typedef enum {
    OPTIMC_STATE_NATIVE = 0, OPTIMC_STATE_BF16 = 1, OPTIMC_STATE_8BIT = 2
} optimc_state_format;

/* What a state buffer holds, for compression: a signed moment (8-bit:
 * the signed map), a non-negative one (the unsigned map), or a value that
 * must stay exact (it cannot be compressed). */
typedef enum {
    optimc_moment_exact = 0, optimc_moment_signed = 1, optimc_moment_unsigned = 2
} optimc_moment_kind;

/* The shape of a state buffer, from its param's shape (x->ndim, x->dims);
 * every buffer has the param's dtype. A rule asks for the factored layouts
 * only for params with ndim >= 2 (its `needed` expression sees `ndim`). */
typedef enum {
    optimc_layout_param = 0,    /* the param's shape */
    optimc_layout_rows,         /* one element per index on axis 0: (shape[0],); () for a 0-d param */
    optimc_layout_row_factor,   /* the last dim reduced: shape[:-1] + (1,) */
    optimc_layout_col_factor,   /* the second-to-last dim reduced: shape[:-2] + (1, shape[-1]) */
} optimc_layout;

/* What the registry knows of one algorithm (from its rule file). */
typedef struct {
    const char *name;
    int n_hyper;
    const char *hyper_names[OPTIMC_MAX_HYPER];
    int n_state;
    const char *state_names[OPTIMC_MAX_STATE];   /* as PyTorch names them */
    optimc_layout state_layout[OPTIMC_MAX_STATE];
    optimc_moment_kind state_kind[OPTIMC_MAX_STATE];
    int n_scalars;
    const char *scalar_names[OPTIMC_MAX_SCALARS];
    double scalar_init[OPTIMC_MAX_SCALARS];
    /* The state buffers (bit k = state_names[k]) that options `h` need for
     * a param of `ndim` dimensions. */
    unsigned (*state_mask)(const optimc_hyper *h, int ndim);
    /* The initial value of state buffer k under options `h`. */
    double (*state_init)(const optimc_hyper *h, int k);
    /* Per-tensor sums its step computes before the update (0: none; see
     * rules/describe.h): the step then reads params, grads and state once
     * more than other rules do. */
    int n_sums;
    /* Reduce passes before the update (0, 1, or 2 for a rule listed with
     * OPTIMC_LIST_TWO_PASS, whose chunks are factored, see optimc_factored). */
    int n_passes;
    /* Row-sparse grads (rules/describe.h, <name>_SPARSE): whether the rule
     * takes them, and the fields that must then be 0. */
    int sparse;
    int n_sparse_zero;
    const char *sparse_zero[OPTIMC_MAX_HYPER];
} optimc_algorithm;

/* The registry: optimc_algorithms[0 .. optimc_n_algorithms). */
extern const optimc_algorithm optimc_algorithms[];
extern const int optimc_n_algorithms;

/* optimc_find_algorithm: the index of algorithm `name`, or -1. */
int optimc_find_algorithm(const char *name);
/* optimc_hyper_index: the field index of hyperparameter `name`, or -1. */
int optimc_hyper_index(int algorithm, const char *name);

/* optimc_layout_shape: the shape of a buffer of layout `layout` for tensor x
 * (from x->ndim, x->dims; x->n for `param`): writes its dims to `dims` (room
 * for OPTIMC_MAX_DIMS), its element count to *elements, and returns its ndim,
 * or -1 when the layout does not apply (a factored layout below 2-D). */
int optimc_layout_shape(optimc_layout layout, const optimc_tensor *x, size_t *dims, size_t *elements);
/* optimc_state_elements: the element count of state buffer k of tensor x. */
size_t optimc_state_elements(int algorithm, const optimc_tensor *x, int k);

/* optimc_factored_chunks: the factored chunk geometry of tensor x (ndim >= 2). */
void optimc_factored_chunks(const optimc_tensor *x, optimc_factored *f);
/* optimc_scratch_elements: the doubles of scratch tensor x needs under
 * `algorithm` (0 for most): chunks * (cols + 1) for a factored tensor of a
 * two-pass rule, room for one row of column sums per chunk and one value per
 * matrix when chunks hold pieces of matrices. */
size_t optimc_scratch_elements(int algorithm, const optimc_tensor *x);

/* optimc_init_state: a tensor that has not stepped: step 0, scalars and the
 * state buffers present (state[k] != NULL) at their initial values. */
void optimc_init_state(int algorithm, const optimc_hyper *h, optimc_tensor *x);

/* Clipping and the non-finite guard, applied inside optimc_step.
 *   max_grad_norm > 0: grads are read scaled by min(1, max/(‖g‖₂ + 1e-6))
 *   clip_value > 0:    grads are read clamped to [−clip_value, clip_value]
 *                      (after the norm scaling, as Keras orders them)
 *   skip_nonfinite:    a step whose grads hold NaN/±Inf (or whose norm
 *                      overflows) changes nothing. */
typedef struct {
    double max_grad_norm, clip_value;
    int skip_nonfinite;
} optimc_guard;

/* What a step did: whether it was skipped, and the grads' global L2 norm
 * (measured only when max_grad_norm or skip_nonfinite is on). */
typedef struct {
    int skipped, norm_measured;
    double grad_norm;
} optimc_step_report;

/* optimc_step: one optimizer step of `algorithm` over tensors[0..n_tensors),
 * with the group hyperparameters `groups` (indexed by tensor.group) and an
 * optional guard (NULL: none). Increments every tensor's step and updates
 * params and state in place, unless the guard skips the step. Splits the work
 * over the thread pool when the step is large enough; the result is
 * bit-identical for any thread count and any SIMD level. The caller ensures
 * no tensor's step is at OPTIMC_MAX_STEP. `report` may be NULL.
 * A rule with per-tensor reductions runs two passes in this one call, each
 * split over the pool: the first accumulates each tensor's sums chunk by
 * chunk (whole chunks per thread), then each tensor's sums are added in chunk
 * order and turned into its step's constants, then the update pass runs. */
void optimc_step(int algorithm, const optimc_hyper *groups, optimc_tensor *tensors,
                 size_t n_tensors, const optimc_guard *guard, optimc_step_report *report);

/* SIMD level: the best the CPU supports, and the one in use. */
int optimc_cpu_level(void);
int optimc_get_level(void);
/* optimc_set_level: use `level` (at most the CPU's); returns the level set. */
int optimc_set_level(int level);
const char *optimc_level_name(int level);

/* Threads: the number used for large steps, and the bytes a step moves
 * (reads + writes of params, grads and state) from which it is split over
 * threads. */
int optimc_get_num_threads(void);
void optimc_set_num_threads(int n);   /* n >= 1 */
size_t optimc_get_thread_threshold(void);
void optimc_set_thread_threshold(size_t bytes);

/* optimc_stream: the roofline kernel. Reads n elements from each of the
 * n_read arrays and writes n elements to each of the first n_write of them
 * (in place), doing as little arithmetic as possible, at the given dtype. */
void optimc_stream(int dtype, void *const *arrays, int n_read, int n_write, size_t n);

/* A plain buffer (for the helpers below). */
typedef struct {
    void *data;
    size_t n;
    int dtype;
} optimc_buffer;

/* optimc_grad_stats: over all buffers, in double and in a fixed order (one
 * thread, 8 lanes per buffer, lanes summed in order):
 *   *total = Σ|g|^norm_type (norm_type 1, 2 or any p > 0), or max|g| for
 *            norm_type = +inf (NaN if any g is NaN);
 *   *all_finite = 1 if no element is NaN or ±Inf. */
void optimc_grad_stats(const optimc_buffer *bufs, size_t n_bufs, double norm_type,
                       double *total, int *all_finite);

/* optimc_scale_clip: mode 0: g ← g·value; mode 1: g ← clamp(g, −value, value). */
void optimc_scale_clip(optimc_buffer *bufs, size_t n_bufs, int mode, double value);

/* optimc_ema: avg ← avg + weight·(param − avg), buffer by buffer. */
void optimc_ema(optimc_buffer *avg, const optimc_buffer *params, size_t n_bufs, double weight);


/* ---- row-sparse grads (csrc/sparse.c) ----
 * A param with ndim >= 1 is a table of rows along axis 0 (n_rows rows of
 * row_len elements). A row-sparse grad gives `nnz` rows: indices[k] (int32 or
 * int64) and values[k*row_len .. (k+1)*row_len) in the param's dtype. Repeated
 * indices are summed (coalesced) in the order they appear; the step then
 * applies the algorithm's rule to each distinct row only. Work and memory
 * grow with nnz, never with n_rows. */
typedef struct {
    /* the grad, as given */
    const void *indices;
    int index_bytes;            /* 4 or 8 */
    size_t nnz;
    const void *values;
    size_t row_len, n_rows;
    /* made by optimc_sparse_plan (GIL-free callers may run it anywhere) */
    size_t n_unique;            /* distinct rows */
    int64_t *rows;              /* [n_unique] ascending */
    size_t *first;              /* [n_unique + 1]: row r's positions are order[first[r] .. first[r+1]) */
    size_t *order;              /* [nnz] positions sorted by row, then by position */
    void *sums;                 /* room for the sums of the repeated rows */
    const void **grad;          /* [n_unique] each row's grad: its given row, or its slot of the sums */
} optimc_sparse;

/* optimc_sparse_plan: copy and check the indices (every one in [0, n_rows)),
 * sort them (stably, so repeats are summed in position order), allocate the
 * O(nnz) buffers the step needs (one block) and point each row's grad at its
 * given row, or at its slot of the sums when it repeats. Returns 0;
 * OPTIMC_SPARSE_BAD_INDEX with *bad = the first offending position;
 * OPTIMC_SPARSE_NO_MEMORY. On error nothing is left allocated. */
#define OPTIMC_SPARSE_BAD_INDEX 1
#define OPTIMC_SPARSE_NO_MEMORY 2
int optimc_sparse_plan(optimc_sparse *s, int dtype, size_t *bad);
/* optimc_sparse_free: release what optimc_sparse_plan allocated. */
void optimc_sparse_free(optimc_sparse *s);
/* optimc_sparse_coalesce: fill s->sums: each repeated row's grad, the
 * values of its positions summed in position order (optimc_sparse_step sums
 * them itself, row by row, unless its guard measures the grads first). */
void optimc_sparse_coalesce(optimc_sparse *s, int dtype);

/* optimc_sparse_accepts: 1 if `algorithm` with options `h` takes row-sparse
 * grads (its rule's mark, and the mark's fields 0); otherwise 0, with *option
 * the option that prevents it (NULL when the algorithm never takes them). */
int optimc_sparse_accepts(int algorithm, const optimc_hyper *h, const char **option);

/* optimc_sparse_rowwise: 1 if `algorithm` keeps per-row state (a buffer of
 * layout rows): its kernel takes whole rows, so every step of it, dense
 * grads included, goes through optimc_sparse_step (every row, in order). */
int optimc_sparse_rowwise(int algorithm);

/* optimc_sparse_step: optimc_step where tensors[i] with sparse[i] != NULL
 * takes its planned row-sparse grad (tensors[i].grad is ignored) and the
 * others their dense grad. The guard's norm and finiteness are measured over
 * the dense grads and the coalesced rows; every tensor's step is incremented
 * (an empty sparse grad included); rows not given are not read or written.
 * Bit-identical for any thread count. The caller checked
 * optimc_sparse_accepts. */
void optimc_sparse_step(int algorithm, const optimc_hyper *groups, optimc_tensor *tensors,
                        optimc_sparse *const *sparse, size_t n_tensors, const optimc_guard *guard,
                        optimc_step_report *report);

/* optimc_sparse_floor: the least work of a row-sparse step on a table with
 * n_state state buffers of its shape (the benchmark's floor, as optimc_stream
 * is the dense roofline): reads the grad s (as given: indices, nnz, values,
 * row_len, n_rows) once and adds each given row's values to that row of param
 * and of every state buffer, so that exactly the given rows are read and
 * written. coalesce = 1: planned as a step plans (stable sort, repeats summed
 * in position order), then each distinct row once; 0: position by position,
 * a row's positions added in order. Split over the pool as the step is, the
 * same bits for any thread count. Returns 0, OPTIMC_SPARSE_BAD_INDEX (with
 * *bad) before anything is written, or OPTIMC_SPARSE_NO_MEMORY. */
int optimc_sparse_floor(int dtype, void *param, void *const *state, int n_state, optimc_sparse *s,
                        int coalesce, size_t *bad);

#ifdef __cplusplus
}
#endif
#endif
