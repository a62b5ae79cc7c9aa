/* optimc.h — the kernel library's public face (plain C11, no Python).
 *
 * A step takes a list of tensors (param, grad, state buffers, element count,
 * dtype, group index), the hyperparameters of every group, and updates each
 * tensor in place with one algorithm. Kernels never allocate and never fail.
 */
#ifndef OPTIMC_H
#define OPTIMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Algorithms with a kernel of their own. Momentum and NAG are SGD with
 * options; AdamW is Adam with decoupled decay. */
typedef enum {
    OPTIMC_SGD, OPTIMC_ADAGRAD, OPTIMC_RMSPROP, OPTIMC_ADADELTA, OPTIMC_ADAM,
    OPTIMC_ADAMAX, OPTIMC_NADAM, OPTIMC_RADAM, OPTIMC_LION,
    OPTIMC_N_ALGORITHMS
} optimc_algorithm_id;

typedef enum { OPTIMC_FLOAT32 = 0, OPTIMC_FLOAT64 = 1 } optimc_dtype;

/* SIMD levels, lowest first; the kernels are compiled once per level. */
typedef enum {
    OPTIMC_BASELINE = 0, OPTIMC_AVX2 = 1, OPTIMC_AVX512 = 2, OPTIMC_N_LEVELS
} optimc_level;

/* The hyperparameters of one parameter group. Fields an algorithm does not
 * use are ignored. */
typedef struct {
    double lr, weight_decay, momentum, dampening, eps, beta1, beta2, alpha, rho,
           lr_decay, momentum_decay, initial_accumulator_value;
    int nesterov, maximize, centered, amsgrad, decoupled;
} optimc_hyper;

#define OPTIMC_MAX_STATE 3
#define OPTIMC_COEF_BYTES 192

/* One tensor: where its param, grad and state buffers are, and its scalar
 * state. `coef` is scratch the kernels fill once per step with that step's
 * constants (bias corrections, ...), in the tensor's own dtype. */
typedef struct {
    void *param;
    const void *grad;
    void *state[OPTIMC_MAX_STATE];  /* NULL where the options need no buffer */
    size_t n;                       /* number of elements */
    int dtype;                      /* optimc_dtype */
    int group;                      /* index into the hyperparameter array */
    int64_t step;                   /* steps taken so far */
    double mu_product;              /* NAdam's running product of μ_t; 1 at start */
    double grad_scale;              /* multiplies the grad (clipping); 1 normally */
    _Alignas(16) unsigned char coef[OPTIMC_COEF_BYTES];
} optimc_tensor;

/* What the registry knows of one algorithm. */
typedef struct {
    const char *name;
    int n_state;
    const char *state_names[OPTIMC_MAX_STATE];
    /* The state buffers (bit k = state_names[k]) that options `h` need. */
    unsigned (*state_mask)(const optimc_hyper *h);
} optimc_algorithm;

extern const optimc_algorithm optimc_algorithms[OPTIMC_N_ALGORITHMS];

/* optimc_find_algorithm: the id of algorithm `name`, or -1. */
int optimc_find_algorithm(const char *name);

/* optimc_init_state: fill the state buffers of a tensor that has not stepped
 * yet (zeros, or Adagrad's initial_accumulator_value). */
void optimc_init_state(int algorithm, const optimc_hyper *h, optimc_tensor *x);

/* optimc_step: one optimizer step of `algorithm` over tensors[0..n_tensors).
 * Takes the group hyperparameters `groups` (indexed by tensor.group).
 * Increments every tensor's step, updates params and state in place.
 * Splits the work over the thread pool when the step is large enough; the
 * result is bit-identical for any thread count and any SIMD level. */
void optimc_step(int algorithm, const optimc_hyper *groups,
                 optimc_tensor *tensors, size_t n_tensors);

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

#ifdef __cplusplus
}
#endif
#endif
