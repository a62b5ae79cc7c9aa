/* lbfgs.c — L-BFGS's vector work, written once over a scalar type T and
 * instantiated for float and double (see lbfgs.h for the contract). */
#include "lbfgs.h"

#include <math.h>

#include "optimc.h"

#define DEFINE_LBFGS(T, SUFFIX)                                                                        \
    static double dot_##SUFFIX(const T *a, const T *b, size_t n)                                       \
    {                                                                                                  \
        double acc = 0.0;                                                                              \
        for (size_t i = 0; i < n; i++) acc += (double)a[i] * (double)b[i];                             \
        return acc;                                                                                    \
    }                                                                                                  \
    static void axpy_##SUFFIX(T alpha, const T *x, T *y, size_t n)                                     \
    {                                                                                                  \
        for (size_t i = 0; i < n; i++) y[i] = y[i] + alpha * x[i];                                     \
    }                                                                                                  \
    static void abs_max_sum_##SUFFIX(const T *x, size_t n, double *abs_max, double *abs_sum)           \
    {                                                                                                  \
        double mx = 0.0, sum = 0.0;                                                                    \
        for (size_t i = 0; i < n; i++) {                                                               \
            double a = fabs((double)x[i]);                                                             \
            if (a > mx || a != a) mx = a; /* a NaN, once seen, stays (a > NaN is false) */             \
            sum += a;                                                                                  \
        }                                                                                              \
        *abs_max = mx;                                                                                 \
        *abs_sum = sum;                                                                                \
    }                                                                                                  \
    static void pair_##SUFFIX(size_t n, const T *g, const T *g_prev, const T *d, T t, T *y, T *s,      \
                              double *ys, double *yy)                                                  \
    {                                                                                                  \
        for (size_t i = 0; i < n; i++) {                                                               \
            y[i] = g[i] - g_prev[i];                                                                   \
            s[i] = d[i] * t;                                                                           \
        }                                                                                              \
        *ys = (double)(T)dot_##SUFFIX(y, s, n);                                                        \
        *yy = (double)(T)dot_##SUFFIX(y, y, n);                                                        \
    }                                                                                                  \
    static void direction_##SUFFIX(size_t n, const T *g, const T *const *dirs, const T *const *stps,   \
                                   const double *ro, double *al, int m, T h_diag, T *d)                \
    {                                                                                                  \
        for (size_t i = 0; i < n; i++) d[i] = -g[i];                                                   \
        for (int k = m - 1; k >= 0; k--) {                                                             \
            T a = (T)dot_##SUFFIX(stps[k], d, n) * (T)ro[k];                                           \
            al[k] = (double)a;                                                                         \
            axpy_##SUFFIX(-a, dirs[k], d, n);                                                          \
        }                                                                                              \
        for (size_t i = 0; i < n; i++) d[i] = d[i] * h_diag;                                           \
        for (int k = 0; k < m; k++) {                                                                  \
            T be = (T)dot_##SUFFIX(dirs[k], d, n) * (T)ro[k];                                          \
            axpy_##SUFFIX((T)al[k] - be, stps[k], d, n);                                               \
        }                                                                                              \
    }

DEFINE_LBFGS(float, f32)
DEFINE_LBFGS(double, f64)

double optimc_vec_dot(int dtype, const void *a, const void *b, size_t n)
{
    if (dtype == OPTIMC_FLOAT32) return dot_f32(a, b, n);
    return dot_f64(a, b, n);
}

void optimc_vec_axpy(int dtype, double alpha, const void *x, void *y, size_t n)
{
    if (dtype == OPTIMC_FLOAT32) axpy_f32((float)alpha, x, y, n);
    else axpy_f64(alpha, x, y, n);
}

void optimc_vec_abs_max_sum(int dtype, const void *x, size_t n, double *abs_max, double *abs_sum)
{
    if (dtype == OPTIMC_FLOAT32) abs_max_sum_f32(x, n, abs_max, abs_sum);
    else abs_max_sum_f64(x, n, abs_max, abs_sum);
}

void optimc_lbfgs_pair(int dtype, size_t n, const void *g, const void *g_prev, const void *d, double t,
                       void *y, void *s, double *ys, double *yy)
{
    if (dtype == OPTIMC_FLOAT32) pair_f32(n, g, g_prev, d, (float)t, y, s, ys, yy);
    else pair_f64(n, g, g_prev, d, t, y, s, ys, yy);
}

void optimc_lbfgs_direction(int dtype, size_t n, const void *g, const void *const *dirs,
                            const void *const *stps, const double *ro, double *al, int m, double h_diag,
                            void *d)
{
    if (dtype == OPTIMC_FLOAT32)
        direction_f32(n, g, (const float *const *)dirs, (const float *const *)stps, ro, al, m,
                      (float)h_diag, d);
    else
        direction_f64(n, g, (const double *const *)dirs, (const double *const *)stps, ro, al, m, h_diag, d);
}
