/* RAdam (Liu et al. 2020), as torch.optim.RAdam computes it:
 *   m ← m + (1 − β₁)(g − m);  v ← β₂v + (1 − β₂)g²             exp_avg, exp_avg_sq
 *   ρ∞ = 2/(1 − β₂) − 1,  ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ)
 *   m̂ = m/(1 − β₁ᵗ)
 *   ρ_t > 5:  r = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t))
 *             θ ← θ − m̂·η·(√(1 − β₂ᵗ)/(√v + ε))·r
 *   else:     θ ← θ − m̂·η            (an un-adapted momentum step)
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(radam)
#elif !defined(T)
#define radam_HYPER(F) F(beta1) F(beta2) F(eps)
#define radam_STATE(S) S(exp_avg, 1, 0, param, signed) S(exp_avg_sq, 1, 0, param, unsigned)
#define radam_SCALARS(S) 
OPTIMC_DESCRIBE(radam)
#else
typedef struct {
    SFX(pre_coef) pre;
    SFX(moments_coef) moments;
    T bias_correction1,
      bias_correction2_sqrt, lr, rect, eps;
    int rectified;
} SFX(radam_coef);

static void SFX(radam_prepare)(const radam_hyper *h, optimc_tensor *x)
{
    SFX(radam_coef) *c = (SFX(radam_coef) *)x->coef;
    double t = (double)x->step;
    double bias_correction2 = 1.0 - pow(h->beta2, t);
    double rho_inf = 2.0 / (1.0 - h->beta2) - 1.0;
    double rho_t = rho_inf - 2.0 * t * pow(h->beta2, t) / bias_correction2;
    SFX(pre_prepare)(h, x, &c->pre);
    SFX(moments_prepare)(h->beta1, h->beta2, &c->moments);
    c->bias_correction1 = (T)(1.0 - pow(h->beta1, t));
    c->bias_correction2_sqrt = (T)sqrt(bias_correction2);
    c->lr = (T)h->lr;
    c->eps = (T)h->eps;
    c->rectified = rho_t > 5.0;
    c->rect = c->rectified ? (T)sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) : (T)0;
}

static inline void SFX(radam_update)(const SFX(radam_coef) *c, T *p, T g, T *exp_avg, T *exp_avg_sq)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    SFX(moments_update)(&c->moments, g, exp_avg, exp_avg_sq);
    T step = *exp_avg / c->bias_correction1 * c->lr;
    if (c->rectified)
        step = step * (c->bias_correction2_sqrt / (SQRT(*exp_avg_sq) + c->eps)) * c->rect;
    theta = theta - step;
    *p = theta;
}

static void SFX(radam_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(radam_coef) c = *(const SFX(radam_coef) *)x->coef;
    OPTIMC_PTRS(x);
    if (c.rectified) {
        c.rectified = 1;   /* a constant in the loop, which then vectorizes */
        OPTIMC_WITH_FIXED_PRE(c, OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1, SFX(radam_update)(&c, &p[i], g[i], st0, st1)));
    } else {
        OPTIMC_WITH_FIXED_PRE(c, OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1, SFX(radam_update)(&c, &p[i], g[i], st0, st1)));
    }
}
#endif
