/* Adamax (Kingma & Ba 2015, §7.1), as torch.optim.Adamax computes it:
 *   m ← m + (1 − β₁)(g − m)             exp_avg
 *   u ← max(β₂u, |g| + ε)               exp_inf
 *   θ ← θ − η/(1 − β₁ᵗ) · m/u
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(adamax)
#elif !defined(T)
#define adamax_HYPER(F) F(beta1) F(beta2) F(eps)
#define adamax_STATE(S) S(exp_avg, 1, 0, param, signed) S(exp_inf, 1, 0, param, unsigned)
#define adamax_SCALARS(S) 
OPTIMC_DESCRIBE(adamax)
#else
typedef struct {
    SFX(pre_coef) pre;
    SFX(moments_coef) moments;   /* exp_avg only; β₂ decays exp_inf */
    T clr, eps;
} SFX(adamax_coef);

static void SFX(adamax_prepare)(const adamax_hyper *h, optimc_tensor *x)
{
    SFX(adamax_coef) *c = (SFX(adamax_coef) *)x->coef;
    SFX(pre_prepare)(h, x, &c->pre);
    SFX(moments_prepare)(h->beta1, h->beta2, &c->moments);
    c->clr = (T)(h->lr / (1.0 - pow(h->beta1, (double)x->step)));
    c->eps = (T)h->eps;
}

static inline void SFX(adamax_update)(const SFX(adamax_coef) *c, T *p, T g, T *exp_avg, T *exp_inf)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    *exp_avg = SFX(lerp)(*exp_avg, g, c->moments.one_minus_beta1, c->moments.beta1);
    T decayed = *exp_inf * c->moments.beta2, fresh = ABS(g) + c->eps;
    *exp_inf = fresh > decayed ? fresh : decayed;
    theta = theta - c->clr * (*exp_avg / *exp_inf);
    *p = theta;
}

static void SFX(adamax_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(adamax_coef) c = *(const SFX(adamax_coef) *)x->coef;
    OPTIMC_PTRS(x);
    OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1, SFX(adamax_update)(&c, &p[i], g[i], st0, st1));
}
#endif
