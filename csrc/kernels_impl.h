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

#define RULES \
    RULE(OPTIMC_SGD, sgd) RULE(OPTIMC_ADAGRAD, adagrad) RULE(OPTIMC_RMSPROP, rmsprop) \
    RULE(OPTIMC_ADADELTA, adadelta) RULE(OPTIMC_ADAM, adam) RULE(OPTIMC_ADAMAX, adamax) \
    RULE(OPTIMC_NADAM, nadam) RULE(OPTIMC_RADAM, radam) RULE(OPTIMC_LION, lion)

/* ---- float ---- */
#define T float
#define SFX(name) name##_f32
#define SQRT sqrtf
#define ABS fabsf
#include "rules/all.h"
#undef T
#undef SFX
#undef SQRT
#undef ABS

/* ---- double ---- */
#define T double
#define SFX(name) name##_f64
#define SQRT sqrt
#define ABS fabs
#include "rules/all.h"
#undef T
#undef SFX
#undef SQRT
#undef ABS

#define RULE(id, name) [id] = { { name##_prepare_f32, name##_kernel_f32 }, \
                                { name##_prepare_f64, name##_kernel_f64 } },
const optimc_impl OPTIMC_TABLE[OPTIMC_N_ALGORITHMS][2] = { RULES };
#undef RULE

const optimc_aux OPTIMC_AUX = {
    { stream_f32, stream_f64 },
    { grad_norm_acc_f32, grad_norm_acc_f64 },
    { all_finite_f32, all_finite_f64 },
    { scale_clip_f32, scale_clip_f64 },
    { ema_f32, ema_f64 },
};
