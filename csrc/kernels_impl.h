/* kernels_impl.h — instantiates every rule for float and double at one SIMD
 * level. Included by kernels_<level>.c, which sets the target and defines
 * OPTIMC_TABLE (the name of the table this level exports).
 *
 * Floating-point contraction is off (-ffp-contract=off), and each element is
 * computed by the same IEEE operations whether it falls in the vector body or
 * a scalar tail, so every level and every thread split give the same bits.
 */
#include <math.h>
#include "optimc.h"
#include "kernels.h"
#include "rules/describe.h"
#include "rules/all.h"          /* the descriptions: each <name>_hyper */
#include "quantize.h"
#include "runtime.h"     /* optimc_use: the CPU features of the bfloat16 and 8-bit codecs */

/* Per rule and type: its coefficients fit the tensor's scratch, and a
 * prepare with the generic signature the table holds. */
#define OPTIMC_WRAP(name) \
    _Static_assert(sizeof(SFX(name##_coef)) <= OPTIMC_COEF_BYTES, \
                   #name "_coef does not fit OPTIMC_COEF_BYTES"); \
    static void SFX(name##_prepare_any)(const optimc_hyper *h, optimc_tensor *x) \
    { SFX(name##_prepare)((const name##_hyper *)(const void *)h, x); }

/* A rule with per-tensor reductions: the same, and its finish likewise; its
 * reduce takes the chunk's range (the chunk's index is for two-pass rules). */
#define OPTIMC_WRAP_REDUCING(name) \
    OPTIMC_WRAP(name) \
    _Static_assert((0 name##_SUMS(OPTIMC_ONE)) <= OPTIMC_MAX_SUMS, #name ": too many sums"); \
    static void SFX(name##_finish_any)(const optimc_hyper *h, optimc_tensor *x, const double *sums) \
    { SFX(name##_finish)((const name##_hyper *)(const void *)h, x, sums); } \
    static void SFX(name##_reduce_any)(const optimc_tensor *x, size_t chunk, size_t lo, size_t hi, double *sums) \
    { (void)chunk; SFX(name##_reduce)(x, lo, hi, sums); }

/* A rule with two reduce passes: both finishes with the generic signature. */
#define OPTIMC_WRAP_TWO_PASS(name) \
    OPTIMC_WRAP(name) \
    _Static_assert((0 name##_SUMS(OPTIMC_ONE)) <= OPTIMC_MAX_SUMS, #name ": too many sums"); \
    static void SFX(name##_finish_any)(const optimc_hyper *h, optimc_tensor *x, const double *sums) \
    { SFX(name##_finish)((const name##_hyper *)(const void *)h, x, sums); } \
    static void SFX(name##_finish2_any)(const optimc_hyper *h, optimc_tensor *x, const double *sums) \
    { SFX(name##_finish2)((const name##_hyper *)(const void *)h, x, sums); }

/* ---- float ---- */
#define T float
#define SFX(name) name##_f32
#define SQRT sqrtf
#define ABS fabsf
#include "rules/common.h"
#include "rules/around.h"
#include "lowprec_impl.h"
#include "rules/reduce.h"
#include "rules/all.h"
#define OPTIMC_LIST OPTIMC_WRAP
#define OPTIMC_LIST_REDUCING OPTIMC_WRAP_REDUCING
#define OPTIMC_LIST_TWO_PASS OPTIMC_WRAP_TWO_PASS
#include "rules/all.h"   /* a second time, in OPTIMC_LIST mode: the wrappers */
#undef OPTIMC_LIST
#undef OPTIMC_LIST_REDUCING
#undef OPTIMC_LIST_TWO_PASS
#include "halfparam_impl.h"   /* bfloat16/float16 params: around the float kernels */
#undef T
#undef SFX
#undef SQRT
#undef ABS

/* ---- double ---- */
#define T double
#define SFX(name) name##_f64
#define SQRT sqrt
#define ABS fabs
#include "rules/common.h"
#include "rules/around.h"
#include "lowprec_impl.h"
#include "rules/reduce.h"
#include "rules/all.h"
#define OPTIMC_LIST OPTIMC_WRAP
#define OPTIMC_LIST_REDUCING OPTIMC_WRAP_REDUCING
#define OPTIMC_LIST_TWO_PASS OPTIMC_WRAP_TWO_PASS
#include "rules/all.h"
#undef OPTIMC_LIST
#undef OPTIMC_LIST_REDUCING
#undef OPTIMC_LIST_TWO_PASS
#undef T
#undef SFX
#undef SQRT
#undef ABS

#define OPTIMC_LIST(name) { { name##_prepare_any_f32, name##_kernel_f32 }, \
                            { name##_prepare_any_f64, name##_kernel_f64 } },
#define OPTIMC_LIST_REDUCING(name) \
    { { name##_prepare_any_f32, name##_kernel_f32, { name##_reduce_any_f32 }, { name##_finish_any_f32 } }, \
      { name##_prepare_any_f64, name##_kernel_f64, { name##_reduce_any_f64 }, { name##_finish_any_f64 } } },
#define OPTIMC_LIST_TWO_PASS(name) \
    { { name##_prepare_any_f32, name##_kernel_f32, { name##_reduce_f32, name##_reduce2_f32 }, \
        { name##_finish_any_f32, name##_finish2_any_f32 } }, \
      { name##_prepare_any_f64, name##_kernel_f64, { name##_reduce_f64, name##_reduce2_f64 }, \
        { name##_finish_any_f64, name##_finish2_any_f64 } } },
const optimc_impl OPTIMC_TABLE[][2] = {
#include "rules/all.h"
};
#undef OPTIMC_LIST
#undef OPTIMC_LIST_REDUCING
#undef OPTIMC_LIST_TWO_PASS

const optimc_aux OPTIMC_AUX = {
    { stream_f32, stream_f64 },
    { grad_norm_acc_f32, grad_norm_acc_f64 },
    { all_finite_f32, all_finite_f64 },
    { scale_clip_f32, scale_clip_f64 },
    { ema_f32, ema_f64 },
    { lowprec_run_f32, lowprec_run_f64 },
    halfparam_run, halfparam_grad_norm_acc, halfparam_all_finite,
    halfparam_decode_array, halfparam_encode_array,
};
