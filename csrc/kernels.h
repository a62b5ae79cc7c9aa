/* kernels.h — the per-level tables kernels_<level>.c export (internal). */
#ifndef OPTIMC_KERNELS_H
#define OPTIMC_KERNELS_H
#include "optimc.h"

typedef void (*optimc_prepare_fn)(const optimc_hyper *h, optimc_tensor *x);
typedef void (*optimc_kernel_fn)(const optimc_tensor *x, size_t lo, size_t hi);

/* A reduce pass over chunk `chunk` of x, elements [lo, hi) (see rules/describe.h). */
typedef void (*optimc_reduce_fn)(const optimc_tensor *x, size_t chunk, size_t lo, size_t hi, double *sums);
typedef void (*optimc_finish_fn)(const optimc_hyper *h, optimc_tensor *x, const double *sums);

typedef struct {
    optimc_prepare_fn prepare;   /* this step's constants into x->coef */
    optimc_kernel_fn kernel;     /* the update of elements [lo, hi) */
    /* rules with per-tensor reductions only (NULL otherwise), per pass: */
    optimc_reduce_fn reduce[2];  /* adds a chunk's sums to sums[] */
    optimc_finish_fn finish[2];  /* the tensor's totals into x->coef */
} optimc_impl;

typedef struct {
    void (*stream[2])(void *const *arrays, int n_read, int n_write, size_t lo, size_t hi);
    void (*grad_norm_acc[2])(const void *grad, size_t lo, size_t hi, double norm_type, double *acc);
    int (*all_finite[2])(const void *grad, size_t lo, size_t hi);
    void (*scale_clip[2])(void *grad, size_t lo, size_t hi, int mode, double value);
    void (*ema[2])(void *avg, const void *param, size_t lo, size_t hi, double weight);
    /* a rule's kernel over [lo, hi) of a tensor with compressed state */
    void (*lowprec[2])(optimc_kernel_fn kernel, const optimc_tensor *x, size_t lo, size_t hi);
    /* bfloat16/float16 params (halfparam_impl.h): a rule's float32 kernel over
     * [lo, hi); the guard's sum of squares and finiteness of a 16-bit grad */
    void (*halfparam)(optimc_kernel_fn kernel, const optimc_tensor *x, size_t lo, size_t hi);
    void (*half_grad_norm_acc)(const optimc_tensor *x, double *acc);
    int (*half_all_finite)(const optimc_tensor *x);
    /* the 16-bit conversions on whole arrays (the module functions tests use):
     * decode; encode to nearest even, or stochastically with the stream
     * step_key (element i takes optimc_sr_bits(step_key, i)) */
    void (*half_decode)(int format, const uint16_t *h, size_t n, float *out);
    void (*half_encode)(int format, int stochastic, uint64_t step_key, const float *v, size_t n, uint16_t *out);
} optimc_aux;

/* Indexed like optimc_algorithms (the order of rules/all.h), then by dtype. */
/* The kernel tables and helpers of the SIMD level in use (engine.c). */
const optimc_impl (*optimc_level_table(void))[2];
const optimc_aux *optimc_level_aux(void);

/* The guard's verdict (engine.c), shared by the dense and the row-sparse step:
 * from the grads' sum of squares and finiteness (when `measured`), fill the
 * report and every tensor's grad scale and clip; 1 if the step must be skipped. */
int optimc_guard_verdict(const optimc_guard *guard, int measured, double sumsq, int finite,
                         optimc_tensor *tensors, size_t n_tensors, optimc_step_report *report);

extern const optimc_impl optimc_table_baseline[][2];
extern const optimc_aux optimc_aux_baseline;
#if defined(__x86_64__) && defined(__GNUC__)
#define OPTIMC_HAVE_X86_LEVELS 1
extern const optimc_impl optimc_table_avx2[][2];
extern const optimc_aux optimc_aux_avx2;
extern const optimc_impl optimc_table_avx512[][2];
extern const optimc_aux optimc_aux_avx512;
#endif
#endif
