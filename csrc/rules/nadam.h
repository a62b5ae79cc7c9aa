/* NAdam (Dozat 2016), as torch.optim.NAdam (PyTorch 2.x) computes it:
 *   μ_t = β₁(1 − ½·0.96^(tψ)),  μ_{t+1} likewise,  Π ← Π·μ_t   mu_product
 *   m ← m + (1 − β₁)(g − m);  v ← β₂v + (1 − β₂)g²             exp_avg, exp_avg_sq
 *   r = √(v/(1 − β₂ᵗ)) + ε
 *   θ ← θ − η(1 − μ_t)/(1 − Π) · g/r − η μ_{t+1}/(1 − Π μ_{t+1}) · m/r
 */
#if defined(OPTIMC_LIST)
OPTIMC_LIST(nadam)
#elif !defined(T)
#define nadam_HYPER(F) F(beta1) F(beta2) F(eps) F(momentum_decay)
#define nadam_STATE(S) S(exp_avg, 1, 0, param, signed) S(exp_avg_sq, 1, 0, param, unsigned)
#define nadam_SCALARS(S) S(mu_product, 1.0)
OPTIMC_DESCRIBE(nadam)
#else
typedef struct {
    SFX(pre_coef) pre;
    SFX(moments_coef) moments;
    T bias_correction2, eps, grad_step, avg_step;
} SFX(nadam_coef);

static void SFX(nadam_prepare)(const nadam_hyper *h, optimc_tensor *x)
{
    SFX(nadam_coef) *c = (SFX(nadam_coef) *)x->coef;
    double t = (double)x->step;
    double mu = h->beta1 * (1.0 - 0.5 * pow(0.96, t * h->momentum_decay));
    double mu_next = h->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * h->momentum_decay));
    double *mu_product = &x->scalars[0];   /* nadam_SCALARS */
    *mu_product *= mu;
    SFX(pre_prepare)(h, x, &c->pre);
    SFX(moments_prepare)(h->beta1, h->beta2, &c->moments);
    c->bias_correction2 = (T)(1.0 - pow(h->beta2, t));
    c->eps = (T)h->eps;
    c->grad_step = (T)(h->lr * (1.0 - mu) / (1.0 - *mu_product));
    c->avg_step = (T)(h->lr * mu_next / (1.0 - *mu_product * mu_next));
}

static inline void SFX(nadam_update)(const SFX(nadam_coef) *c, T *p, T g, T *exp_avg, T *exp_avg_sq)
{
    T theta = *p;   /* read once, written once */
    g = SFX(grad_in)(&c->pre, g, &theta);
    SFX(moments_update)(&c->moments, g, exp_avg, exp_avg_sq);
    T denom = SQRT(*exp_avg_sq / c->bias_correction2) + c->eps;
    theta = theta - c->grad_step * (g / denom);
    theta = theta - c->avg_step * (*exp_avg / denom);
    *p = theta;
}

static void SFX(nadam_kernel)(const optimc_tensor *x, size_t lo, size_t hi)
{
    SFX(nadam_coef) c = *(const SFX(nadam_coef) *)x->coef;
    OPTIMC_PTRS(x);
    OPTIMC_WITH_FIXED_PRE(c, OPTIMC_EACH(OPTIMC_S0 | OPTIMC_S1, SFX(nadam_update)(&c, &p[i], g[i], st0, st1)));
}
#endif
