/* muon.h — Muon's element-wise parts (plain C11, no Python); the
 * Newton–Schulz orthogonalisation between them is matrix products, done with
 * a BLAS by the caller (optimc/optimizers/muon.py, NumPy's matmul).
 *
 * Both follow torch.optim.Muon's operations in the param's dtype, with
 * torch's lerp (s + w(e − s) for |w| < 0.5, else e − (e − s)(1 − w)).
 */
#ifndef OPTIMC_MUON_H
#define OPTIMC_MUON_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* buf ← lerp(buf, grad, 1 − momentum); then update ← lerp(grad, buf, momentum)
 * with nesterov, else update ← buf. */
void optimc_muon_momentum(int dtype, size_t n, const void *grad, void *buf, void *update, double momentum,
                          int nesterov);

/* param ← param·decay, then param ← param + alpha·update (decay = 1 − lr·λ,
 * alpha = −adjusted lr; both rounded to the dtype). */
void optimc_muon_apply(int dtype, size_t n, void *param, const void *update, double decay, double alpha);

#ifdef __cplusplus
}
#endif
#endif
