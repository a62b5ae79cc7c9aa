/* lbfgs.h — the vector work of L-BFGS (plain C11, no Python): the two-loop
 * recursion that turns a gradient and the stored curvature pairs into a
 * search direction, the new pair (y, s) after a move, and the flat-vector
 * helpers (dot, axpy, |x| max and sum) its line search uses.
 *
 * Every function takes an optimc_dtype and works in that type, as
 * torch.optim.LBFGS works in the params' dtype: scalars that torch keeps as
 * tensors of the params' dtype (ro, al, the step t, H_diag) are rounded to it
 * before use. Dot products accumulate in double, in index order, so a result
 * never depends on SIMD level or threads (these loops run on one thread).
 */
#ifndef OPTIMC_LBFGS_H
#define OPTIMC_LBFGS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Σ a[i]·b[i] */
double optimc_vec_dot(int dtype, const void *a, const void *b, size_t n);

/* y[i] ← y[i] + alpha·x[i] (alpha rounded to the dtype first) */
void optimc_vec_axpy(int dtype, double alpha, const void *x, void *y, size_t n);

/* max |x[i]| and Σ |x[i]| (0 for n = 0; NaN propagates to both) */
void optimc_vec_abs_max_sum(int dtype, const void *x, size_t n, double *abs_max, double *abs_sum);

/* The curvature pair of the last move: y ← g − g_prev, s ← t·d; returns y·s
 * in *ys and y·y in *yy, each rounded to the dtype. */
void optimc_lbfgs_pair(int dtype, size_t n, const void *g, const void *g_prev, const void *d, double t,
                       void *y, void *s, double *ys, double *yy);

/* The L-BFGS direction d = −H·g by the two-loop recursion over the m stored
 * pairs, oldest first: dirs[k] = y_k, stps[k] = s_k, ro[k] = 1/(y_k·s_k).
 *   q ← −g;  for k = m−1..0: al_k = ro_k (s_k·q), q ← q − al_k y_k
 *   d ← H_diag·q;  for k = 0..m−1: be_k = ro_k (y_k·d), d ← d + (al_k − be_k) s_k
 * al (m values) receives the al_k, rounded to the dtype as torch stores them.
 * d must not overlap g or the pairs. */
void optimc_lbfgs_direction(int dtype, size_t n, const void *g, const void *const *dirs,
                            const void *const *stps, const double *ro, double *al, int m, double h_diag,
                            void *d);

#ifdef __cplusplus
}
#endif
#endif
