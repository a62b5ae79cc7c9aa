/* muon.c — Muon's element-wise parts, written once over a scalar type T and
 * instantiated for float and double (see muon.h). */
#include "muon.h"

#include <math.h>

#include "optimc.h"

/* torch's lerp: the formula depends on the weight so that w = 1 gives e exactly */
#define LERP(T, s, e, w) (fabs((double)(w)) < 0.5 ? (s) + (w) * ((e) - (s)) : (e) - ((e) - (s)) * ((T)1 - (w)))

#define DEFINE_MUON(T, SUFFIX)                                                                         \
    static void momentum_##SUFFIX(size_t n, const T *g, T *buf, T *update, T w, T momentum,            \
                                  int nesterov)                                                        \
    {                                                                                                  \
        for (size_t i = 0; i < n; i++) {                                                               \
            T b = LERP(T, buf[i], g[i], w);                                                            \
            buf[i] = b;                                                                                \
            update[i] = nesterov ? LERP(T, g[i], b, momentum) : b;                                     \
        }                                                                                              \
    }                                                                                                  \
    static void apply_##SUFFIX(size_t n, T *p, const T *u, T decay, T alpha)                           \
    {                                                                                                  \
        for (size_t i = 0; i < n; i++) {                                                               \
            T x = p[i] * decay;                                                                        \
            p[i] = x + alpha * u[i];                                                                   \
        }                                                                                              \
    }

DEFINE_MUON(float, f32)
DEFINE_MUON(double, f64)

void optimc_muon_momentum(int dtype, size_t n, const void *grad, void *buf, void *update, double momentum,
                          int nesterov)
{
    if (dtype == OPTIMC_FLOAT32) momentum_f32(n, grad, buf, update, (float)(1.0 - momentum), (float)momentum, nesterov);
    else momentum_f64(n, grad, buf, update, 1.0 - momentum, momentum, nesterov);
}

void optimc_muon_apply(int dtype, size_t n, void *param, const void *update, double decay, double alpha)
{
    if (dtype == OPTIMC_FLOAT32) apply_f32(n, param, update, (float)decay, (float)alpha);
    else apply_f64(n, param, update, decay, alpha);
}
